"""A websocket client run INSIDE a test host, with a release's Python (the
demo's requirements bring ``websockets``), against the demo's echo at
``wss://<host>/ws/echo/`` through Nginx.

Sends a numbered message every 0.3 s and reads its echo until the server
closes, a stop file appears or the time limit passes, and watches
``/srv/demo/current``: prints a JSON summary of the seconds (from the
start) each echo came back with its text, when ``current`` changed (the
switch), when the connection was closed and with which code, and any
other error.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    live = os.readlink("/srv/demo/current")
    started = time.monotonic()
    result: dict = {"echoes": [], "switched": None, "closed": None, "code": None, "error": None}

    def now() -> float:
        return round(time.monotonic() - started, 2)

    try:
        raw = socket.create_connection(("127.0.0.1", 443), timeout=10)
        with connect(f"wss://{args.host}/ws/echo/", sock=raw, ssl=context, server_hostname=args.host, open_timeout=10) as ws:
            sent = 0
            while not os.path.exists(args.stop_file) and now() < args.max_seconds:
                if result["switched"] is None and os.readlink("/srv/demo/current") != live:
                    result["switched"] = now()
                sent += 1
                ws.send(str(sent))
                result["echoes"].append([now(), ws.recv(timeout=10)])
                time.sleep(0.3)
    except ConnectionClosed as exc:
        result["closed"], result["code"] = now(), exc.rcvd.code if exc.rcvd else None
    except Exception as exc:  # noqa: BLE001 - anything else is reported, the test judges it
        result["error"] = f"{type(exc).__name__}: {exc}"
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
