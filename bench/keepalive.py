"""Benchmark: keep-alive clients of one server's Nginx while releases switch, against Nginx reloads.

Starts a booted test host (tests/lab), runs `make deploy`, then, side by
side in one run, three rounds of `wrk` (64 keep-alive connections, 2
threads, the demo page over HTTPS) of equal length:

- quiet: nothing happens (the baseline throughput);
- switches: the live release is switched to the other Gunicorn slot again
  and again (``django_release.restart``: the same blue/green switch as a
  release, without a build), which repoints the socket link;
- reloads: ``nginx -s reload`` as often as the switches ran, which is what
  a switch did before it repointed a link.

Prints socket errors, non-2xx answers and requests per second of each, and
writes bench/reports/keepalive.md. Run as root: `.venv/bin/python bench/keepalive.py`.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from tests.integration.helpers import DOMAIN, make, quick_start  # noqa: E402
from tests.lab import hosts  # noqa: E402

SECONDS = 40
EVENTS = 6


def wrk_round(host: hosts.Host, action: str | None) -> dict[str, float]:
    """One wrk round; ``action`` (a command in the host) runs EVENTS times, evenly spread."""
    wrk = host.spawn_in_network(["wrk", "-t2", "-c64", f"-d{SECONDS}s", "-H", f"Host: {DOMAIN}", "https://127.0.0.1/"])
    try:
        time.sleep(3)
        for _ in range(EVENTS if action else 0):
            host.run(action)
            time.sleep((SECONDS - 8) / EVENTS)
        output = wrk.communicate(timeout=SECONDS + 60)[0]
    finally:
        if wrk.poll() is None:
            wrk.kill()
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "requests/s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "socket errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "non-2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main() -> int:
    figures: dict[str, float | int | str] = {}
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-", dir="/var/tmp"))
    host = hosts.Host("benchka", hosts.ensure_base(), work / "host", boot=True)
    try:
        host.start()
        quick_start(host)
        make(host)
        rounds = {
            "quiet": None,
            "release switches": "/opt/salt-django/venv/bin/salt-call -c /etc/salt-django --local --out=quiet django_release.restart demo",
            "nginx reloads": "nginx -s reload",
        }
        for name, action in rounds.items():
            for key, value in wrk_round(host, action).items():
                figures[f"{name}: {key}"] = value
        figures[f"events per round ({SECONDS} s, wrk -t2 -c64)"] = EVENTS
        quiet = figures["quiet: requests/s"]
        figures["release switches / quiet requests/s ratio"] = round(float(figures["release switches: requests/s"]) / float(quiet), 2)
    finally:
        host.stop(hard=True)
        host.destroy()
        shutil.rmtree(work, ignore_errors=True)
    report("keepalive", "Keep-alive clients during switches", ", in a booted systemd-nspawn test host (Debian 12)", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
