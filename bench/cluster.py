"""Benchmark: the cluster of pillar/topology.yaml, from nothing to rolling releases.

Starts a salt-master and the hosts db, cache, app1, app2, lb (tests/lab),
configured from conf/ as the README says, and measures as an operator
would see it: the cluster start (warm: minion layer cached; cold: the
minion layer built first, into a scratch cache), the first `salt '*'
state.apply` and a second one (no-op), `orch.deploy` of a release to the
two app servers while a client sends HTTPS requests through the load
balancer without pause, a second code-only `orch.deploy`, and
`orch.rollback`. Prints the figures and writes bench/reports/cluster.md.
Run as root: `.venv/bin/python bench/cluster.py`.
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
from tests.cluster.helpers import (  # noqa: E402
    APPS,
    DOMAIN,
    HOSTS,
    TEMPLATE,
    Releases,
    apply_all,
    cluster_args,
    failed,
    lb_ip,
    orchestrate,
    write_secrets,
)
from tests.cluster.traffic import Traffic  # noqa: E402
from tests.lab import hosts  # noqa: E402
from tests.lab.cluster import Cluster, ensure_minion_layer  # noqa: E402


def main() -> int:
    figures: dict[str, float | int | str] = {}
    base = hosts.ensure_base()
    work = Path(tempfile.mkdtemp(prefix="salt-django-bench-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        (work / "scratch-cache").mkdir()
        layer = ensure_minion_layer(base, work / "scratch-cache")
        built = time.monotonic() - started
        figures["minion layer, cold build seconds"] = round(built, 1)
        cold = Cluster(work / "cold", base=base, layer=layer, **cluster_args(work / "cold-op"))
        cold.up()
        cold.down()
        figures["cluster start, cold (layer build + up) seconds"] = round(built + cold.timings["up"], 1)
        shutil.rmtree(work / "scratch-cache", ignore_errors=True)
        releases = Releases(work / "git")
        cluster = Cluster(work / "warm", base=base, layer=ensure_minion_layer(base), **cluster_args(work / "warm-op"))
        try:
            cluster.up()
            figures[f"cluster start, warm (master + {len(HOSTS)} hosts) seconds"] = round(cluster.timings["up"], 1)
            write_secrets(cluster, releases.serve(cluster.master_ip))
            cluster.run_runner("rollout.init_secrets", check=True)
            ret, seconds = apply_all(cluster, HOSTS)
            assert not failed(ret), failed(ret)
            figures["first state.apply, all hosts, seconds"] = round(seconds, 1)
            figures["states (all hosts)"] = sum(len(states) for states in ret.values())
            ret, seconds = apply_all(cluster, HOSTS)
            figures["second state.apply (no-op), seconds"] = round(seconds, 1)
            figures["states changed by the second apply"] = sum(1 for states in ret.values() for s in states.values() if s["changes"])
            releases.commit("v2", {TEMPLATE: lambda t: t.replace("demo</h1>", "demo v2</h1>")})
            time.sleep(5)  # let HAProxy's checks see every server up
            with Traffic(lb_ip(cluster), DOMAIN) as traffic:
                result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v2"})
            assert result["result"] is True, json.dumps(result)[:2000]
            figures[f"orch.deploy to {len(APPS)} app servers, seconds"] = round(seconds, 1)
            figures["requests through the LB during it: sent"] = traffic.sent
            figures["requests through the LB during it: failed"] = len(traffic.failures)
            releases.commit("v3", {TEMPLATE: lambda t: t.replace("demo v2</h1>", "demo v3</h1>")})
            result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v3"})
            assert result["result"] is True, json.dumps(result)[:2000]
            figures["second orch.deploy (code only), seconds"] = round(seconds, 1)
            result, seconds = orchestrate(cluster, "orch.rollback")
            assert result["result"] is True, json.dumps(result)[:2000]
            figures["orch.rollback, seconds"] = round(seconds, 1)
        finally:
            cluster.down()
            releases.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report("cluster", "Cluster timings", f": a salt-master and {len(HOSTS)} booted systemd-nspawn hosts on one machine", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
