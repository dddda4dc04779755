"""Benchmark: how long `make deploy` takes on a fresh server and when nothing changed.

Starts a throwaway booted test host (tests/lab), copies the repo in and runs
the README's `make deploy` as a user would: once from nothing, then twice
more (no-op), then `make plan`. Prints the figures and writes a report to
bench/reports/deploy.md. Run as root: `.venv/bin/python bench/deploy.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.helpers import REPO_IN_HOST, make  # noqa: E402
from tests.lab import hosts  # noqa: E402


def main() -> int:
    figures: dict[str, float | int | str] = {}
    started = time.monotonic()
    cold = not (hosts.DEFAULT_CACHE / f"rootfs-{hosts.base_key()}").exists()
    base = hosts.ensure_base()
    figures["base image seconds (" + ("cold build" if cold else "warm cache") + ")"] = round(time.monotonic() - started, 1)
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-", dir="/var/tmp"))
    host = hosts.Host("bench", base, work / "bench", boot=True)
    try:
        started = time.monotonic()
        host.start()
        figures["host start seconds (warm)"] = round(time.monotonic() - started, 2)
        host.copy_in(ROOT, REPO_IN_HOST)
        started = time.monotonic()
        fresh = make(host)
        figures["fresh make deploy, wall seconds"] = round(time.monotonic() - started, 1)
        figures["fresh make deploy, state run seconds"] = fresh.seconds
        figures["states"] = fresh.states
        figures["states changed on fresh deploy"] = fresh.changed
        noop_walls = []
        for _ in range(2):
            started = time.monotonic()
            noop = make(host)
            noop_walls.append(time.monotonic() - started)
            assert noop.changed == 0, noop.output[-2000:]
        figures["no-op make deploy, wall seconds (best of 2)"] = round(min(noop_walls), 1)
        figures["no-op make deploy, state run seconds"] = noop.seconds
        started = time.monotonic()
        plan = make(host, "plan")
        figures["make plan (test=True), wall seconds"] = round(time.monotonic() - started, 1)
        figures["states predicted to change by make plan"] = plan.changed
        figures["fresh / no-op wall ratio"] = round(float(figures["fresh make deploy, wall seconds"]) / min(noop_walls), 1)
    finally:
        host.stop(hard=True)
        host.destroy()
        shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, figures))
    lines = [f"{name.ljust(width)}  {value}" for name, value in figures.items()]
    print("\n".join(lines))
    report = ROOT / "bench" / "reports" / "deploy.md"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        "# make deploy timings\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, "
        "in a booted systemd-nspawn test host.\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        "```json\n" + json.dumps(figures, indent=2) + "\n```\n"
    )
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
