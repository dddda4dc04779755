"""A bounded HTTPS client loop, run INSIDE a test host against its own Nginx.

Sends requests one after another to https://127.0.0.1 with a given Host/SNI
until a stop file appears or the time limit passes, and prints a JSON
summary: requests sent, failures (non-200 or connection errors, with their
kinds), and which releases answered (from the page's release marker).
Stdlib only, so that the host's OS Python runs it.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import ssl
import sys
import time

RELEASE = re.compile(rb'id="release">([^<]+)<')


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--path", default="/")
    args = parser.parse_args()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sent, failures, releases = 0, collections.Counter(), collections.Counter()
    last_release = None
    deadline = time.monotonic() + args.max_seconds
    while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
        sent += 1
        conn = http.client.HTTPSConnection("127.0.0.1", 443, timeout=30, context=context)
        try:
            conn.request("GET", args.path, headers={"Host": args.host})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                failures[f"HTTP {response.status}"] += 1
            match = RELEASE.search(body)
            if match:
                last_release = match.group(1).decode()
                releases[last_release] += 1
        except OSError as exc:
            failures[type(exc).__name__] += 1
        finally:
            conn.close()
    json.dump(
        {"sent": sent, "failed": sum(failures.values()), "failures": failures, "releases": releases, "last": last_release}, sys.stdout
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
