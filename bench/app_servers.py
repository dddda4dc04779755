"""Benchmark: the demo page under each app server kind, side by side in one run.

Starts a booted test host (tests/lab), deploys the demo, then, round after
round, switches it to each kind in turn by pillar (``app_server: {kind,
workers}``, the same worker count for all), with a load running through the
switch (tests/integration/load.py: new HTTPS connections one after another,
counting every failed request), and measures the demo page through Nginx
TLS with wrk (2 threads, 16 connections): requests/s, p99 and CPU
milliseconds per request (the host's and wrk's, which other work on this
machine hardly moves). Kinds alternate within each round, so that drift of
the machine hits them alike.

Prints the figures and writes bench/reports/app_servers.md. Run as root:
`.venv/bin/python bench/app_servers.py [--rounds 2] [--seconds 10]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import CONNECTIONS, spread, wrk  # noqa: E402
from bench.report import report  # noqa: E402
from tests.integration.helpers import DOMAIN, Load, make, repo_host  # noqa: E402
from tests.lab import hosts  # noqa: E402

KINDS = ("gunicorn", "uwsgi", "mod_wsgi", "uvicorn")
WORKERS = 3


def switch_to(host: hosts.Host, kind: str) -> dict[str, Any]:
    """Deploy the demo with ``kind`` under load: seconds, and the load's failed requests."""
    pillar = {"projects": {"demo": {"app_server": {"kind": kind, "workers": WORKERS}}}}
    host.run(["sh", "-c", "umask 077 && cat > /etc/salt-django/pillar/local.sls"], input=yaml.safe_dump(pillar))
    started = time.monotonic()
    with Load(host) as load:
        make(host)
    return {"seconds": round(time.monotonic() - started, 1), "sent": load.result["sent"], "failed": load.result["failed"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-app-servers-"))
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    switches: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        with repo_host("benchapp", hosts.ensure_base(), work, local_pillar="{}\n") as host:
            make(host)
            for _ in range(args.rounds):
                for kind in KINDS:
                    switches[kind].append(switch_to(host, kind))
                    url, headers = "https://127.0.0.1/", [f"Host: {DOMAIN}"]
                    wrk(host, url, 2, headers)
                    samples[kind].append(wrk(host, url, args.seconds, headers))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures: dict[str, float | int | str] = {}
    for kind in KINDS:
        for key in ("requests/s", "p99 ms", "CPU ms per request", "errors"):
            figures[f"{kind}: {key}"] = str(spread([s[key] for s in samples[kind]]))
        figures[f"{kind}: failed requests while switching to it"] = sum(s["failed"] for s in switches[kind])
        figures[f"{kind}: requests sent while switching to it"] = sum(s["sent"] for s in switches[kind])
        figures[f"{kind}: seconds of a switch to it (make deploy)"] = str(spread([s["seconds"] for s in switches[kind]]))
    for kind in KINDS[1:]:
        ratios = [a["requests/s"] / b["requests/s"] for a, b in zip(samples[kind], samples[KINDS[0]], strict=True)]
        figures[f"{kind} / gunicorn, requests/s"] = str(spread(ratios))
    setting = f", one test host, {WORKERS} workers each, wrk -t2 -c{CONNECTIONS} -d{args.seconds}s, {args.rounds} rounds"
    report("app_servers", "The demo page under each app server kind", setting, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
