"""Benchmark: building the app's virtualenv with pip versus with uv.

A release that changes dependencies builds a virtualenv, with uv by
default (pillar `salt_django:installer: pip` for pip); this measures that
step with each, side by side in one run, so that both see the same
machine. In a throwaway booted test host (tests/lab, offline: pip and
uv install from /opt/wheelhouse), each repetition builds a fresh virtualenv
from nothing with the OS interpreter /usr/bin/python3, once with `python3 -m
venv` + pip and once with `uv venv` + `uv pip install`, both with their
cache disabled (cold); the order alternates (pip, uv, uv, pip, ...) so that
machine noise hits both. Then each installer's cache is primed by one
install with the cache enabled and the same is measured warm (pip caches no
wheel it installs from a local find-links directory, so its "warm" runs are
cold ones: compare the cold figures). Every time is
the wall time of the whole command around `host.run`. Prints the figures
and writes a report to bench/reports/venv.md.
Run as root: `.venv/bin/python bench/venv.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from tests.lab import hosts  # noqa: E402

PYTHON = "/usr/bin/python3"
UV = "/opt/uvtool/bin/uv"
#: The uv that builds release virtualenvs (salt/app/defaults.yaml), not a copy of its pin.
UV_VERSION = yaml.safe_load((ROOT / "salt" / "app" / "defaults.yaml").read_text())["app"]["uv_version"]
REQUIREMENTS = "/root/requirements.txt"
VENVS = "/root/bench-venvs"
INSTALLERS = ("pip", "uv")
IMPORTS = "import django, gunicorn, psycopg2, redis"


def build_command(installer: str, venv: str, cache: bool) -> str:
    """The shell command that builds ``venv`` from nothing with ``installer``."""
    if installer == "pip":
        no_cache = "" if cache else " --no-cache-dir"
        return f"{PYTHON} -m venv {venv} && {venv}/bin/pip install{no_cache} -q -r {REQUIREMENTS}"
    no_cache = "" if cache else " --no-cache"
    return f"{UV} venv -q --python {PYTHON} {venv} && {UV} pip install{no_cache} -q --python {venv}/bin/python -r {REQUIREMENTS}"


def timed_build(host: hosts.Host, installer: str, cache: bool, check_imports: bool = False) -> float:
    """Wall seconds of one virtualenv build from nothing (removal not counted)."""
    venv = f"{VENVS}/{installer}"
    host.run(f"rm -rf {venv} && mkdir -p {VENVS}")
    started = time.monotonic()
    host.run(build_command(installer, venv, cache))
    seconds = time.monotonic() - started
    if check_imports:
        host.run(f"{venv}/bin/python -c '{IMPORTS}'")
    host.run(f"rm -rf {venv}")
    return seconds


def interleaved(host: hosts.Host, repeat: int, cache: bool) -> dict[str, list[float]]:
    """``repeat`` builds per installer, alternating pip, uv, uv, pip, ..."""
    times: dict[str, list[float]] = {name: [] for name in INSTALLERS}
    for rep in range(repeat):
        order = INSTALLERS if rep % 2 == 0 else INSTALLERS[::-1]
        for installer in order:
            seconds = timed_build(host, installer, cache, check_imports=rep == 0)
            times[installer].append(seconds)
            print(f"  {'warm' if cache else 'cold'} {installer} #{rep + 1}: {seconds:.2f} s", flush=True)
    return times


def summarize(variant: str, times: dict[str, list[float]]) -> dict[str, float | int | str]:
    """Median, min/max and all runs per installer, and the pip/uv median ratio."""
    figures: dict[str, float | int | str] = {}
    for installer in INSTALLERS:
        runs = times[installer]
        figures[f"{variant} {installer}, median seconds"] = round(statistics.median(runs), 2)
        figures[f"{variant} {installer}, min / max seconds"] = f"{min(runs):.2f} / {max(runs):.2f}"
        figures[f"{variant} {installer}, all runs seconds"] = " ".join(f"{s:.2f}" for s in runs)
    ratio = statistics.median(times["pip"]) / statistics.median(times["uv"])
    figures[f"{variant} pip median / uv median ratio"] = round(ratio, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="builds per installer and variant (default 5)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    figures: dict[str, float | int | str] = {}
    base = hosts.ensure_base()
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-venv-", dir="/var/tmp"))
    host = hosts.Host("bench-venv", base, work / "bench-venv", boot=True)
    try:
        host.start()
        host.path(REQUIREMENTS).write_text((ROOT / "example" / "requirements.txt").read_text())
        # as scripts/bootstrap.sh does first: the lab image, like Debian's cloud images, has no python3-venv
        host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null")
        host.run(f"{PYTHON} -m venv /opt/uvtool && /opt/uvtool/bin/pip install -q uv=={UV_VERSION}")
        host.run(f"{PYTHON} -m venv /root/pip-probe")
        figures["host nproc"] = int(host.run("nproc").stdout.strip())
        figures["host python"] = host.run(f"{PYTHON} --version").stdout.strip()
        figures["pip (of python3 -m venv)"] = host.run("/root/pip-probe/bin/pip --version").stdout.split(" from ")[0]
        figures["uv"] = host.run(f"{UV} --version").stdout.strip()
        lines = (ROOT / "example" / "requirements.txt").read_text().splitlines()
        figures["requirements"] = ", ".join(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        figures["repetitions per installer and variant"] = args.repeat
        host.run("rm -rf /root/pip-probe /root/.cache/pip /root/.cache/uv")
        cold = interleaved(host, args.repeat, cache=False)
        figures.update(summarize("cold", cold))
        for installer in INSTALLERS:  # prime the cache: first install with the cache enabled
            seconds = timed_build(host, installer, cache=True)
            figures[f"priming {installer} (cache on, empty), seconds"] = round(seconds, 2)
            print(f"  priming {installer}: {seconds:.2f} s", flush=True)
        figures["cache size after priming (pip, uv)"] = host.run(
            'for d in pip uv; do s=$(du -sh /root/.cache/$d 2>/dev/null | cut -f1); echo "${s:-none}"; done | paste -sd" "'
        ).stdout.strip()
        warm = interleaved(host, args.repeat, cache=True)
        figures.update(summarize("warm", warm))
    finally:
        host.stop(hard=True)
        host.destroy()
        shutil.rmtree(work, ignore_errors=True)
    setting = ", in a booted systemd-nspawn test host (offline, wheels from /opt/wheelhouse)"
    report("venv", "virtualenv build: pip versus uv", setting, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
