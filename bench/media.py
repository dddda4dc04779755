"""Benchmark: a 10 MB upload and its download through the whole stack, with
media on the storage server (S3) against local media, in one cluster.

Starts the cluster of pillar/topology.yaml (tests/lab, configured from
conf/ as the README says) with the demo's ``media: {backend: s3}``
(tests/cluster/helpers.py: write_secrets), converges it, then, from this
machine through HAProxy (TLS), uploads a 10 MB file to the demo's
/upload/ page and downloads it from /media/, REPS times each: HAProxy ->
app Nginx -> Django -> SeaweedFS's S3 gateway (through the storage
server's Nginx) and back. Then switches the project to ``media: {backend:
local}`` (a state.apply of the app servers, as an operator would) and
measures the same on local media (HAProxy -> app Nginx -> Django -> disk;
Nginx serves the download from disk). HAProxy sends everything to app1
(the other app servers in maintenance): local media are on the disk of the
server that took the upload. Prints the medians and spreads and
writes bench/reports/media.md. Run as root: `.venv/bin/python bench/media.py`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from tests.cluster import media  # noqa: E402
from tests.cluster.helpers import (  # noqa: E402
    APPS,
    DOMAIN,
    HOSTS,
    Releases,
    apply_all,
    cluster_args,
    failed,
    lb_ip,
    pillar_changed,
    write_secrets,
)
from tests.lab import hosts  # noqa: E402
from tests.lab.cluster import Cluster, ensure_minion_layer  # noqa: E402

SIZE = 10 << 20
REPS = 5


def measure(cluster: Cluster, work: Path, source: Path) -> dict[str, list[float]]:
    """REPS uploads of ``source`` and downloads of what was stored, through HAProxy (TLS)."""
    times: dict[str, list[float]] = {"upload": [], "download": []}
    for _ in range(REPS):
        stored = media.upload(lb_ip(cluster), 443, True, DOMAIN, source)
        assert stored["status"] == 200, stored
        read = media.download(lb_ip(cluster), 443, True, DOMAIN, stored["url"], work / "download.bin")
        assert read["status"] == 200 and read["size"] == SIZE, read
        times["upload"].append(stored["seconds"])
        times["download"].append(read["seconds"])
    return times


def add(figures: dict[str, float | int | str], backend: str, times: dict[str, list[float]]) -> None:
    for way, seconds in times.items():
        figures[f"{backend}: 10 MB {way}, median seconds"] = round(statistics.median(seconds), 3)
        figures[f"{backend}: 10 MB {way}, min-max seconds"] = f"{min(seconds):.3f}-{max(seconds):.3f}"
        figures[f"{backend}: 10 MB {way}, median MB/s"] = round(SIZE / (1 << 20) / statistics.median(seconds), 1)


def main() -> int:
    figures: dict[str, float | int | str] = {}
    base = hosts.ensure_base()
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-", dir="/var/tmp"))
    source = work / "upload.bin"
    source.write_bytes(os.urandom(SIZE))
    releases = Releases(work / "git")
    cluster = Cluster(work / "cluster", base=base, layer=ensure_minion_layer(base), **cluster_args(work / "op"))
    try:
        cluster.up()
        write_secrets(cluster, releases.serve(cluster.master_ip))
        cluster.run_runner("rollout.init_secrets", check=True)
        ret, seconds = apply_all(cluster, HOSTS)
        assert not failed(ret), failed(ret)
        figures["first state.apply (media s3), seconds"] = round(seconds, 1)
        time.sleep(3)  # HAProxy's checks see every app server up
        # One app server serves, for both backends alike: local media live on
        # the disk of the server that took the upload (what s3 media fix).
        for other in APPS[1:]:
            cluster.salt("lb", "haproxy_runtime.set_state", ["demo_app", other, "maint"])
        add(figures, "s3 (storage server)", measure(cluster, work, source))

        def local(data: dict) -> None:
            data["projects"]["demo"]["media"] = {"backend": "local"}

        with pillar_changed(cluster, local):
            started = time.monotonic()
            ret = cluster.salt(APPS, "state.apply", tgt_type="list", timeout=1200)
            assert not failed(ret), failed(ret)
            figures["switch to local media (state.apply of the app servers), seconds"] = round(time.monotonic() - started, 1)
            time.sleep(3)
            add(figures, "local", measure(cluster, work, source))
        figures["repetitions"] = REPS
    finally:
        cluster.down()
        releases.stop()
        shutil.rmtree(work, ignore_errors=True)
    setting = f": a salt-master and {len(HOSTS)} booted systemd-nspawn hosts on one machine; HAProxy TLS -> {APPS[0]}'s Nginx -> Django"
    report("media", "Uploads: S3 on the storage server against local media", setting, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
