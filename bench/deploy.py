"""Benchmark: `make deploy` from nothing and as a no-op, on Debian 12 and 13;
releases and a rollback (Debian 12).

Starts throwaway booted test hosts (tests/lab), copies the repo in and runs
the README's commands as a user would: `make deploy` once from nothing, then
twice more (no-op), `make plan`; then from a git repository of the demo
project a code-only `make release`, a release that adds a requirement, and
`make rollback`, with the seconds the audit log records for each (the first
release's figure is the one `make deploy` recorded). Prints the figures and
writes a report to bench/reports/deploy.md.
Run as root: `.venv/bin/python bench/deploy.py`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from tests.integration.helpers import REPO_IN_HOST, make, quick_start  # noqa: E402
from tests.lab import hosts  # noqa: E402


def release_figures(host: hosts.Host) -> dict[str, float]:
    """Seconds of releases and a rollback, as the audit log records them."""
    git = "/root/demo-git"
    commit = "git -c user.email=b@example.org -c user.name=bench commit -qam"
    host.run(f"cp -r {REPO_IN_HOST}/example {git} && cd {git} && git init -q && git add -A && {commit} v1")
    host.run(f"cd {git} && sed -i 's|demo</h1>|demo v2</h1>|' visits/templates/visits/index.html && {commit} v2 && git tag v2")
    host.run(f"cd {git} && echo distro==1.9.0 >> requirements.txt && {commit} v3 && git tag v3")
    for target in (f"release REPO={git} REF=v2", f"release REPO={git} REF=v3", "rollback"):
        host.run(f"cd {REPO_IN_HOST} && make {target}")
    entries = [json.loads(line) for line in host.run(f"cd {REPO_IN_HOST} && make audit").stdout.splitlines() if line.startswith("{")]
    releases = [e for e in entries if e["operation"] == "release" and e["result"] == "ok"]
    rollback = [e for e in entries if e["operation"] == "rollback" and e["result"] == "ok"]
    first, code_only, new_requirements = (e["seconds"] for e in releases[:3])
    return {
        "first release (in fresh make deploy), seconds": first,
        "code-only release, seconds": code_only,
        "release adding a requirement, seconds": new_requirements,
        "rollback, seconds": rollback[0]["seconds"],
        "code-only / first release ratio": round(code_only / first, 2),
    }


def deploy_figures(host: hosts.Host, platform: str) -> dict[str, float | int | str]:
    """A fresh `make deploy` and two no-op ones in ``host``, labelled with ``platform``."""
    figures: dict[str, float | int | str] = {}
    started = time.monotonic()
    fresh = make(host)
    fresh_wall = time.monotonic() - started
    figures[f"{platform}: fresh make deploy, wall seconds"] = round(fresh_wall, 1)
    figures[f"{platform}: fresh make deploy, state run seconds"] = fresh.seconds
    figures[f"{platform}: states"] = fresh.states
    figures[f"{platform}: states changed on fresh deploy"] = fresh.changed
    noop_walls = []
    for _ in range(2):
        started = time.monotonic()
        noop = make(host)
        noop_walls.append(time.monotonic() - started)
        assert noop.changed == 0, noop.output[-2000:]
    figures[f"{platform}: no-op make deploy, wall seconds (best of 2)"] = round(min(noop_walls), 1)
    figures[f"{platform}: no-op make deploy, state run seconds"] = noop.seconds
    figures[f"{platform}: fresh / no-op wall ratio"] = round(fresh_wall / min(noop_walls), 1)
    return figures


def main() -> int:
    """Debian 12 (deploy, plan, releases, rollback), then Debian 13 (deploy) in the same run."""
    figures: dict[str, float | int | str] = {}
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-", dir="/var/tmp"))
    try:
        for platform, suite in (("debian12", "bookworm"), ("debian13", "trixie")):
            started = time.monotonic()
            cold = not (hosts.DEFAULT_CACHE / f"rootfs-{hosts.base_key(suite)}").exists()
            base = hosts.ensure_base(suite=suite)
            how = "cold build" if cold else "warm cache"
            figures[f"{platform}: base image seconds ({how})"] = round(time.monotonic() - started, 1)
            host = hosts.Host(f"bench{platform[-2:]}", base, work / platform, boot=True)
            try:
                started = time.monotonic()
                host.start()
                figures[f"{platform}: host start seconds (warm)"] = round(time.monotonic() - started, 2)
                quick_start(host)
                figures.update(deploy_figures(host, platform))
                if platform == "debian12":
                    started = time.monotonic()
                    plan = make(host, "plan")
                    figures["make plan (test=True), wall seconds"] = round(time.monotonic() - started, 1)
                    figures["states predicted to change by make plan"] = plan.changed
                    figures.update(release_figures(host))
            finally:
                host.stop(hard=True)
                host.destroy()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report("deploy", "make deploy timings", ", in booted systemd-nspawn test hosts (Debian 12, then Debian 13)", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
