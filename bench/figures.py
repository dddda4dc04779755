"""Benchmark: issue 14's four figures, each measured side by side in one run.

- no-op: a no-op `make deploy` (the demo and a second project, uvsite)
  against `salt-call --local test.ping` in the same booted test host;
- serving: the demo page through Nginx (TLS) against Gunicorn direct (the
  same slot's command line, the same workers, on a TCP port), and a static
  file through Nginx, each with wrk (2 threads, 16 connections);
- rollout: clusters of 2, 4 and 8 app servers (batch = a quarter of them):
  a whole rollout of a new commit, then rollouts of a release already built
  everywhere, whose switch phase (from the first batch's drain to the smoke
  test, read from the runner's progress events) is compared with 2 servers'.

Every figure is the median of ``--reps`` repetitions (min and max beside
it), as a ratio to its baseline, met / not met against its goal. Each part
writes its data to bench/reports/figures/<part>.json as soon as it is
measured; the report (bench/reports/figures.md, with PNG plots beside it) is
built from whatever parts are there, so a part can be rerun alone:
`.venv/bin/python bench/figures.py --parts serving`. Run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import REPORTS  # noqa: E402
from tests.integration.helpers import DOMAIN, REPO_IN_HOST, repo_host  # noqa: E402
from tests.lab import hosts  # noqa: E402

DATA = REPORTS / "figures"
SALT_CALL = "/opt/salt-django/venv/bin/salt-call -c /etc/salt-django --local"
PARTS = ("noop", "serving", "rollout")
#: The second project of the no-op figure: in the repository, built offline.
SECOND = {"uvsite": {"domains": ["uvsite.localhost"], "source": f"{REPO_IN_HOST}/tests/projects/uvsite"}}
WORKERS = 5
CONNECTIONS = 16
DIRECT_PORT = 8001
#: The demo's page, which each release of the rollout benchmark edits.
TEMPLATE = "visits/templates/visits/index.html"
_SUMMARY = re.compile(r"salt-django: (\d+) states, (\d+) changed, (\d+) failed, ([\d.]+) s")


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max (and every value) of one measurement's repetitions."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3), "runs": values}


def machine() -> dict[str, Any]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    return {
        "cores": os.cpu_count(),
        "memory GiB": round(int(meminfo["MemTotal"].split()[0]) / 2**20, 1),
        "kernel": platform.release(),
        "Debian": debian,
        "python (bench)": platform.python_version(),
    }


def timed(host: hosts.Host, command: str) -> tuple[float, str]:
    """Wall seconds of ``command`` measured inside the host (no nsenter overhead), and its output."""
    script = f"s=$EPOCHREALTIME; {{ {command} ; }} > /tmp/bench-out 2>&1; rc=$?; e=$EPOCHREALTIME; echo $s $e $rc"
    start, end, rc = host.run(["bash", "-c", script], timeout=900).stdout.split()
    output = host.run("cat /tmp/bench-out").stdout
    if rc != "0":
        raise RuntimeError(f"{command} exited {rc}: {output[-3000:]}")
    return round(float(end) - float(start), 3), output


def host_versions(host: hosts.Host) -> dict[str, str]:
    def first(cmd: str) -> str:
        result = host.run(["bash", "-c", cmd], check=False)
        return (result.stdout + result.stderr).strip().splitlines()[0] if (result.stdout + result.stderr).strip() else "?"

    return {
        "salt": first("/opt/salt-django/venv/bin/salt-call --version"),
        "nginx": first("nginx -v"),
        "gunicorn": first("/srv/demo/current/venv/bin/gunicorn --version"),
        "python (host)": first("/usr/bin/python3 --version"),
        "Debian (host)": first("cat /etc/debian_version"),
        "wrk (on this machine)": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
    }


def single_host(work: Path, run: Callable[[hosts.Host], dict[str, Any]]) -> dict[str, Any]:
    """A booted Debian 12 host, set up as the README's quick start says and
    deployed with the demo and ``SECOND``, given to ``run``."""
    local = {"projects": {"demo": {"app_server": {"workers": WORKERS}}, **SECOND}}
    with repo_host("benchfig", hosts.ensure_base(), work, local_pillar=yaml.safe_dump(local)) as host:
        timed(host, f"cd {REPO_IN_HOST} && make deploy")
        return run(host)


# ------------------------------------------------------------------ no-op


def baseline_deploy(host: hosts.Host, rev: str) -> str:
    """The command a no-op `make deploy` ran at commit ``rev`` (its scripts/:
    bootstrap.sh, with the salt_django.py calls it made), in this host's repository copy."""
    old = "/root/baseline"
    host.run(["mkdir", "-p", f"{old}/scripts"])
    for name in ("bootstrap.sh", "salt_django.py"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:scripts/{name}"], capture_output=True, text=True, check=True).stdout
        # bootstrap.sh finds the repository from its own path: the host's copy.
        host.path(f"{old}/scripts/{name}").write_text(text.replace('REPO=$(cd "$(dirname "$0")/.." && pwd)', f"REPO={REPO_IN_HOST}"))
    host.run(["sed", "-i", f's|"$REPO/scripts/salt_django.py"|{old}/scripts/salt_django.py|', f"{old}/scripts/bootstrap.sh"])
    python = "/opt/salt-django/venv/bin/python"
    return f"cd {REPO_IN_HOST} && bash {old}/scripts/bootstrap.sh && {python} {old}/scripts/salt_django.py --conf /etc/salt-django apply"


def noop(host: hosts.Host, reps: int, baseline: str | None = None) -> dict[str, Any]:
    """No-op `make deploy` against `salt-call test.ping`, and against the same
    deploy as commit ``baseline`` ran it, each repetition side by side."""
    pings, deploys, state_runs, states, before, deploy_output = [], [], [], 0, [], ""
    old = baseline_deploy(host, baseline) if baseline else None
    for _ in range(reps):
        pings.append(timed(host, f"{SALT_CALL} test.ping")[0])
        seconds, deploy_output = timed(host, f"cd {REPO_IN_HOST} && make deploy")
        found = _SUMMARY.search(deploy_output)
        assert found and found.group(2) == "0" and found.group(3) == "0", deploy_output[-3000:]
        deploys.append(seconds)
        state_runs.append(float(found.group(4)))
        states = int(found.group(1))
        if old:
            seconds, output = timed(host, old)
            found = _SUMMARY.search(output)
            assert found and found.group(2) == "0" and found.group(3) == "0", output[-3000:]
            before.append(seconds)
    # Where a no-op spends its time: Salt's own duration of each state.
    ret = json.loads(host.run(f"{SALT_CALL} --out=json state.apply", timeout=600).stdout)["local"]
    slowest = sorted(((s.get("duration", 0.0), s.get("__id__", k)) for k, s in ret.items()), reverse=True)[:10]
    return {
        "states": states,
        "what the last no-op make deploy printed (without the per-state lines)": [
            line for line in deploy_output.splitlines() if not re.match(r"\s+\[\s*\d+\]", line)
        ],
        "make deploy, seconds": spread(deploys),
        "state run (make deploy's summary), seconds": spread(state_runs),
        "salt-call test.ping, seconds": spread(pings),
        "ratio": spread([d / p for d, p in zip(deploys, pings, strict=True)]),
        "sum of state durations, ms": round(sum(s.get("duration", 0.0) for s in ret.values())),
        "slowest states, ms": [[round(ms), sid] for ms, sid in slowest],
        "versions": host_versions(host),
        **(
            {
                f"make deploy as at {baseline}, seconds": spread(before),
                f"make deploy / as at {baseline}": spread([d / b for d, b in zip(deploys, before, strict=True)]),
            }
            if baseline
            else {}
        ),
    }


# ------------------------------------------------------------------ serving


def host_cpu_seconds(host: hosts.Host) -> float:
    """CPU time every process of the host used so far (its cgroup's cpu.stat)."""
    # The lab keeps its cgroup paths private; only read here.
    for cgroup in host._cgroups():
        stat = cgroup / "cpu.stat"
        if stat.exists():
            return int(stat.read_text().split("usage_usec ")[1].split()[0]) / 1e6
    return float("nan")


def wrk(host: hosts.Host, url: str, seconds: int, headers: list[str]) -> dict[str, Any]:
    """One wrk run: requests/s, p99, errors, and the CPU milliseconds each
    request cost (the host's processes and wrk's own), which, unlike
    requests/s, other work on this machine hardly moves."""
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    cpu0, wrk0 = host_cpu_seconds(host), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = host.spawn_in_network([*argv, url])
    output = proc.communicate(timeout=seconds + 60)[0]
    cpu1, wrk1 = host_cpu_seconds(host), resource.getrusage(resource.RUSAGE_CHILDREN)
    used = cpu1 - cpu0 + (wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests/s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p99 ms": round(float(p99.group(1)) * scale[p99.group(2)], 2) if p99 else None,
        "errors": (sum(int(n) for n in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0),
        "CPU ms per request": round(used * 1000 / max(requests, 1), 3),
    }


def start_direct(host: hosts.Host) -> None:
    """The live slot's Gunicorn command line, bound to 127.0.0.1:DIRECT_PORT
    instead of its socket, under supervisord as the slots run: its access log
    goes the same way (supervisord copies it into a log file, which costs CPU too)."""
    slot = host.run("readlink /srv/demo/shared/run/http.sock").stdout.strip().rsplit("-", 1)[1].split(".")[0]
    user = host.run("stat -c %U /srv/demo/shared/run").stdout.strip()
    host.run(
        f'sed \'s|--bind "unix:[^"]*"|--bind 127.0.0.1:{DIRECT_PORT}|\' /srv/demo/bin/app-run > /srv/demo/bin/bench-direct-run'
        " && chmod 755 /srv/demo/bin/bench-direct-run"
    )
    program = "\n".join(
        [
            "[program:bench-direct]",
            f"command=/srv/demo/bin/bench-direct-run {slot}",
            f"user={user}",
            "directory=/srv/demo",
            'environment=HOME="/srv/demo"',
            "autostart=true",
            "stopasgroup=true",
            "killasgroup=true",
            "stdout_logfile=/var/log/demo/bench-direct.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=5",
            "redirect_stderr=true",
            "",
        ]
    )
    host.path("/etc/supervisor/conf.d/bench-direct.conf").write_text(program)
    host.run("supervisorctl update")
    for _ in range(120):
        url = f"http://127.0.0.1:{DIRECT_PORT}/healthz"
        probe = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {DOMAIN}' {url}", check=False)
        if probe.stdout.strip() == "200":
            return
        time.sleep(0.5)
    raise RuntimeError(f"direct Gunicorn did not start: {host.run('tail -20 /var/log/demo/bench-direct.log').stdout}")


def serving(host: hosts.Host, reps: int, seconds: int) -> dict[str, Any]:
    start_direct(host)
    static = host.run("cd /srv/demo/current/static && find . -name base.css -path '*admin/css*' | head -1").stdout.strip()[2:]
    https = [f"Host: {DOMAIN}"]
    configs = {
        "page via Nginx TLS": ("https://127.0.0.1/", https),
        "page via Gunicorn direct": (f"http://127.0.0.1:{DIRECT_PORT}/", [f"Host: {DOMAIN}", "X-Forwarded-Proto: https"]),
        "static file via Nginx TLS": (f"https://127.0.0.1/static/{static}", https),
    }
    for url, headers in configs.values():  # warm up, and every answer is a 200
        flags = [arg for header in headers for arg in ("-H", header)]
        code = host.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", *flags, url]).stdout
        assert code == "200", (url, code)
        wrk(host, url, 2, headers)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for _ in range(reps):
        for name, (url, headers) in configs.items():
            runs[name].append(wrk(host, url, seconds, headers))
    out: dict[str, Any] = {"static path": static, "seconds per run": seconds, "connections": CONNECTIONS, "workers": WORKERS}
    for name, samples in runs.items():
        out[name] = {key: spread([s[key] for s in samples]) for key in ("requests/s", "p99 ms", "errors", "CPU ms per request")}
    tls, direct, file = (runs[n] for n in configs)
    out["TLS / direct"] = spread([a["requests/s"] / b["requests/s"] for a, b in zip(tls, direct, strict=True)])
    # What the ratio of requests/s is on a machine whose cores the benchmark has to itself.
    out["TLS / direct, by CPU per request"] = spread(
        [b["CPU ms per request"] / a["CPU ms per request"] for a, b in zip(tls, direct, strict=True)]
    )
    out["static / page"] = spread([a["requests/s"] / b["requests/s"] for a, b in zip(file, tls, strict=True)])
    out["versions"] = host_versions(host)
    out["nginx -T (upstream, proxy)"] = [
        line.strip()
        for line in host.run(
            "nginx -T 2>/dev/null | grep -E 'keepalive|proxy_http_version|proxy_buffer|ssl_session|upstream'"
        ).stdout.split("\n")
        if line.strip()
    ]
    out["gunicorn command"] = host.run("ps -o args= -C gunicorn | sort | uniq -c | head -3", check=False).stdout.strip()
    return out


# ------------------------------------------------------------------ rollout


class Series:
    """Requests through the load balancer from ``threads`` threads (a new TLS
    connection each), every answer kept with its time: requests/s and errors over time."""

    def __init__(self, address: str, threads: int = 2) -> None:
        from tests.cluster.traffic import get

        self._get, self.address = get, address
        self.points: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + 1800
        while not self._stop.is_set() and time.monotonic() < deadline:
            answer = self._get(self.address, DOMAIN)
            self.points.append((time.monotonic(), answer.status == 200))

    def __enter__(self) -> Series:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


class Progress:
    """The runner's progress events (``salt/run/<jid>/progress``) with their arrival times."""

    def __init__(self, cluster: Any) -> None:
        self.events = cluster.events()
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            event = self.events.wait("salt/run/*/progress", timeout=0.5)
            if event is not None:
                self.seen.append((time.monotonic(), event["data"]))

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)
        self._stop.set()
        self._thread.join(10)


def topology_pillar(work: Path, apps: list[str]) -> Path:
    """A copy of pillar/ whose topology.yaml lists db, cache, ``apps`` and lb
    (its .sls files find _utils/ beside it: a link to the repository's)."""
    pillar = work / "pillar"
    shutil.copytree(ROOT / "pillar", pillar)
    (work / "_utils").symlink_to(ROOT / "_utils")
    topology = yaml.safe_load((ROOT / "pillar" / "topology.yaml").read_text())
    topology["hosts"] = {"db": {"roles": ["db"]}, "cache": {"roles": ["cache"]}}
    topology["hosts"].update({name: {"roles": ["app", "web"]} for name in apps})
    topology["hosts"]["lb"] = {"roles": ["lb"]}
    (pillar / "topology.yaml").write_text(yaml.safe_dump(topology))
    return pillar


def rollout_run(cluster: Any, release: str) -> dict[str, Any]:
    """One orch.deploy with traffic and progress events: its phases in seconds, relative times."""
    from tests.cluster.helpers import lb_ip, orchestrate

    with Series(lb_ip(cluster)) as series, Progress(cluster) as progress:
        time.sleep(2)
        t0 = time.monotonic()
        result, seconds = orchestrate(cluster, "orch.deploy", {"release": release})
        time.sleep(2)
    assert result["result"] is True, json.dumps(result)[:3000]
    events = [(round(t - t0, 2), data.get("step"), data.get("message")) for t, data in progress.seen]
    batches = [t for t, step, _ in events if step == "batch"]
    smoke = [t for t, step, _ in events if step == "smoke test"]
    built = [t for t, step, _ in events if step == "build"]
    points = [(round(t - t0, 3), ok) for t, ok in series.points]
    return {
        "release": result.get("release"),
        "whole rollout, seconds": round(seconds, 2),
        "build, seconds": built[0] if built else None,
        "switch phase, seconds": round(smoke[-1] - batches[0], 2),
        "requests": len(points),
        "failed requests": sum(1 for _, ok in points if not ok),
        "events": events,
        "traffic": points,
    }


def rollout_setup(work: Path, apps_count: int) -> tuple[Any, Any, dict[str, Any]]:
    """A cluster of db, cache, ``apps_count`` app servers (batch: a quarter of them) and lb,
    converged with release v1 of the demo; v2 committed, not deployed."""
    from tests.cluster.helpers import Releases, cluster_args
    from tests.lab.cluster import Cluster, ensure_minion_layer

    # Every host shares this machine's cores: 8 app servers booting at once,
    # beside other clusters, take longer than the lab's defaults allow.
    hosts.Host.BOOT_TIMEOUT = max(hosts.Host.BOOT_TIMEOUT, 600.0)
    Cluster.MINION_TIMEOUT = max(Cluster.MINION_TIMEOUT, 600.0)
    apps = [f"app{i}" for i in range(1, apps_count + 1)]
    pillar = topology_pillar(work / "topology", apps)
    args = cluster_args(work / "op")
    args["hosts"] = ["db", "cache", *apps, "lb"]
    args["pillar_roots"] = [pillar if p == ROOT / "pillar" else p for p in args["pillar_roots"]]
    base = hosts.ensure_base()
    releases = Releases(work / "git")
    cluster = Cluster(work / "c", base=base, layer=ensure_minion_layer(base), **args)
    try:
        return cluster, releases, converged(cluster, releases, args["hosts"], apps)
    except BaseException:
        cluster.down()
        releases.stop()
        raise


def converged(cluster: Any, releases: Any, names: list[str], apps: list[str]) -> dict[str, Any]:
    from tests.cluster.helpers import apply_all, failed, live, write_secrets

    out: dict[str, Any] = {"app servers": len(apps), "batch": max(1, len(apps) // 4)}
    cluster.up()
    out["cluster up, seconds"] = round(cluster.timings["up"], 1)
    write_secrets(cluster, releases.serve(cluster.master_ip))
    local_path = next(p for p in cluster.pillar_roots if p.name == "pillar" and p.parent.name == "etc") / "local.sls"
    local = yaml.safe_load(local_path.read_text())
    # The lab's test schedule and hook are the cluster tests' own; not part of a rollout's cost.
    local["projects"]["demo"].pop("schedule", None)
    local["projects"]["demo"].pop("hooks", None)
    # A slot starting beside a dozen hosts on two cores takes longer than the tests' 15 s.
    local["projects"]["demo"]["health_timeout"] = 180
    local["rollout"]["batch"] = out["batch"]
    local_path.write_text(yaml.safe_dump(local))
    cluster.run_runner("rollout.init_secrets", check=True)
    ret, seconds = apply_all(cluster, names)
    assert not failed(ret), failed(ret)
    out["first state.apply, seconds"] = round(seconds, 1)
    # Each server built v1 itself (its own id); the releases of the runner share one.
    out["v1"] = live(cluster, apps)
    return out


def build_seconds(run: dict[str, Any]) -> float | None:
    """The build step of a rollout: from the event before it to its own."""
    times = [(t, step) for t, step, _ in run["events"]]
    for k, (t, step) in enumerate(times):
        if step == "build":
            return round(t - (times[k - 1][0] if k else 0.0), 2)
    return None


def save_rollouts(clusters: dict[int, tuple[Any, Any, dict[str, Any]]]) -> None:
    """Each cluster's figures so far (written after every round: a late failure keeps them)."""
    for n, (_, _, out) in clusters.items():
        wholes = out.get("whole rollouts (new commit)", [])
        switches = out.get("switch-only rollouts", [])
        out["whole rollout, seconds"] = spread([w["whole rollout, seconds"] for w in wholes])
        out["build step, seconds"] = spread([w["build, seconds"] for w in wholes])
        # The switch phase (first drain to smoke test) is the same in both kinds of rollout.
        out["switch phase, seconds"] = spread([r["switch phase, seconds"] for r in [*wholes, *switches]])
        if switches:
            out["switch-only rollout, seconds"] = spread([r["whole rollout, seconds"] for r in switches])
        out["failed requests"] = sum(r["failed requests"] for r in [*wholes, *switches])
        save(f"rollout-{n}", out)


def rollout_clusters(work: Path, counts: list[int], reps: int) -> None:
    """Every cluster up at once, then each rollout in turn, round-robin over the
    clusters, so that noise on the machine falls on all of them alike."""
    clusters: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
    try:
        for n in counts:
            clusters[n] = rollout_setup(work / f"r{n}", n)
        time.sleep(5)  # HAProxy's checks see every server up
        # Two whole rollouts of new commits: v2 and v3 are then built everywhere, each with one id.
        for tag in ("v2", "v3"):
            for cluster, releases, out in clusters.values():
                releases.commit(tag, {TEMPLATE: lambda t, tag=tag: re.sub(r"demo( v\d)?</h1>", f"demo {tag}</h1>", t)})
                whole = rollout_run(cluster, tag)
                whole["build, seconds"] = build_seconds(whole)
                out.setdefault("whole rollouts (new commit)", []).append(whole)
                out[tag] = whole["release"]
        save_rollouts(clusters)
        for rep in range(reps):
            for cluster, _, out in clusters.values():
                out.setdefault("switch-only rollouts", []).append(rollout_run(cluster, out["v2"] if rep % 2 == 0 else out["v3"]))
            save_rollouts(clusters)
    finally:
        for cluster, releases, _ in clusters.values():
            cluster.down()
            releases.stop()


# ------------------------------------------------------------------ report


def save(part: str, data: dict[str, Any]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    data = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), **data}
    (DATA / f"{part}.json").write_text(json.dumps(data, indent=1))


def load(part: str) -> dict[str, Any] | None:
    path = DATA / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(s: dict[str, Any], unit: str = "") -> str:
    return f"{s['median']:g}{unit} ({s['min']:g}-{s['max']:g})"


def summary_rows() -> list[list[str]]:
    rows = []
    noop_data = load("noop")
    if noop_data:
        deploy, ratio = noop_data["make deploy, seconds"], noop_data["ratio"]
        met = deploy["median"] <= 2.5 and ratio["median"] <= 3
        against = [key for key in noop_data if key.startswith("make deploy / as at ")]
        baseline = (
            f"; before (as at {against[0][len('make deploy / as at ') :]}, side by side): "
            f"{fmt(noop_data[against[0].replace(' / ', ' ') + ', seconds'], ' s')}, now {fmt(noop_data[against[0]], 'x')} of it"
            if against
            else ""
        )
        rows.append(
            [
                f"no-op `make deploy` ({noop_data['states']} states) vs `salt-call --local test.ping`",
                "≤ 2.5 s and ≤ 3x",
                f"{fmt(deploy, ' s')}; {fmt(ratio, 'x')} (test.ping {fmt(noop_data['salt-call test.ping, seconds'], ' s')}){baseline}",
                "met" if met else "not met",
            ]
        )
    serve = load("serving")
    if serve:
        ratio = serve["TLS / direct"]
        by_cpu = serve.get("TLS / direct, by CPU per request")
        cpu_ratio = f"by CPU per request: {fmt(by_cpu, 'x')}" if by_cpu else ""
        rows.append(
            [
                f"demo page via Nginx TLS vs Gunicorn direct ({serve['workers']} workers, wrk -c{serve['connections']})",
                "≥ 0.95x",
                f"{fmt(ratio, 'x')} ({serve['page via Nginx TLS']['requests/s']['median']:g} vs "
                f"{serve['page via Gunicorn direct']['requests/s']['median']:g} req/s); {cpu_ratio}",
                "met" if ratio["median"] >= 0.95 else "not met",
            ]
        )
        ratio = serve["static / page"]
        rows.append(
            [
                "static file via Nginx vs the demo page",
                "about 100x: keep (≥ 50x)",
                f"{fmt(ratio, 'x')} ({serve['static file via Nginx TLS']['requests/s']['median']:g} req/s)",
                "met" if ratio["median"] >= 50 else "not met",
            ]
        )
    roll = {n: load(f"rollout-{n}") for n in (2, 4, 8)}
    if roll[2] and roll[8]:
        base, big = roll[2]["switch phase, seconds"], roll[8]["switch phase, seconds"]
        rows.append(
            [
                "rollout switch phase (first drain to smoke test), 8 app servers vs 2, batch = a quarter",
                "≤ 1.3x",
                f"{big['median'] / base['median']:.2f}x ({fmt(big, ' s')} vs {fmt(base, ' s')}); whole rollout of a new commit: "
                f"{fmt(roll[8]['whole rollout, seconds'], ' s')} vs {fmt(roll[2]['whole rollout, seconds'], ' s')}, "
                f"on separate machines ≈ {separate_machines(roll[2], roll[8]):.0f} s for 8 (see below)",
                "met" if big["median"] / base["median"] <= 1.3 else "not met",
            ]
        )
    return rows


def separate_machines(two: dict[str, Any], many: dict[str, Any]) -> float:
    """A whole rollout of ``many`` app servers as separate machines would take
    it: what is not the switch phase (validate, converge db and cache, the
    build: on the first server, then on the others in parallel) as long as
    with 2 servers, where the cores are least shared, plus its own switch phase."""
    return two["whole rollout, seconds"]["median"] - two["switch phase, seconds"]["median"] + many["switch phase, seconds"]["median"]


def rollout_table() -> list[str]:
    roll = {n: load(f"rollout-{n}") for n in (2, 4, 8)}
    if not roll[2]:
        return []
    lines = [
        "| app servers | batch | batches | switch phase s | vs 2 servers | whole rollout s | build step s | "
        "whole, separate machines ≈ s | failed requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, data in roll.items():
        if not data:
            continue
        switch = data["switch phase, seconds"]
        lines.append(
            f"| {n} | {data['batch']} | {-(-n // data['batch']) if n > 1 else 1} | {fmt(switch)} | "
            f"{switch['median'] / roll[2]['switch phase, seconds']['median']:.2f}x | {fmt(data['whole rollout, seconds'])} | "
            f"{fmt(data['build step, seconds'])} | {separate_machines(roll[2], data):.0f} | {data['failed requests']} |"
        )
    return lines


def plots() -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    serve = load("serving")
    if serve:
        names = ["page via Nginx TLS", "page via Gunicorn direct", "static file via Nginx TLS"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key in zip(axes, ("requests/s", "p99 ms"), strict=True):
            med = [serve[n][key]["median"] for n in names]
            err = [
                [m - serve[n][key]["min"] for n, m in zip(names, med, strict=True)],
                [serve[n][key]["max"] - m for n, m in zip(names, med, strict=True)],
            ]
            ax.bar(range(len(names)), med, yerr=err, capsize=4, color=["tab:blue", "tab:orange", "tab:green"])
            ax.set_xticks(range(len(names)), [n.replace(" via ", "\nvia ") for n in names], fontsize=8)
            ax.set_yscale("log")
            ax.set_title(f"{key} (median, min-max)")
        fig.suptitle(f"Serving: wrk -t2 -c{serve['connections']}, {serve['seconds per run']} s per run")
        fig.tight_layout()
        fig.savefig(REPORTS / "figures-serving.png", dpi=90)
        plt.close(fig)
        made.append("figures-serving.png")
    for n in (2, 4, 8):
        data = load(f"rollout-{n}")
        if not data:
            continue
        runs = [("whole rollout (new commit)", data["whole rollouts (new commit)"][-1])]
        runs += [("switch-only rollout", run) for run in data.get("switch-only rollouts", [])[:1]]
        fig, axes = plt.subplots(len(runs), 1, figsize=(11, 3.2 * len(runs)), squeeze=False)
        axes = axes[:, 0]
        for ax, (title, run) in zip(axes, runs, strict=True):
            end = max((t for t, _ in run["traffic"]), default=1)
            bins = [b for b in range(int(end) + 1)]
            ok = [0] * len(bins)
            bad = [0] * len(bins)
            for t, good in run["traffic"]:
                if 0 <= t <= end:
                    (ok if good else bad)[min(int(t), len(bins) - 1)] += 1
            ax.plot(bins, ok, label="200 answers/s", color="tab:blue")
            ax.bar(bins, bad, label="errors/s", color="tab:red")
            for t, step, _ in run["events"]:
                if step == "batch":
                    ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
                elif step in ("build", "smoke test"):
                    ax.axvline(t, color="black", linewidth=0.8)
                    ax.text(t, ax.get_ylim()[1] * 0.9, step, fontsize=7, rotation=90)
            ax.set_title(f"{title}: {run['whole rollout, seconds']} s, switch phase {run['switch phase, seconds']} s")
            ax.set_xlabel("seconds since orch.deploy started (dashed: batch boundaries)")
            ax.legend(loc="lower right", fontsize=7)
        fig.suptitle(f"Rollout through the lb, {n} app servers, batch {data['batch']}")
        fig.tight_layout()
        fig.savefig(REPORTS / f"figures-rollout-{n}.png", dpi=90)
        plt.close(fig)
        made.append(f"figures-rollout-{n}.png")
    return made


def write_report(notes: str) -> Path:
    rows = summary_rows()
    lines = ["# Issue 14's figures", ""]
    lines += ["| figure | goal | measured: median (min-max) | |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    parts = {p: load(p) for p in ("noop", "serving", "rollout-2", "rollout-4", "rollout-8")}
    first = next((d for d in parts.values() if d), None)
    if first:
        lines += ["", "## Machine and versions", ""]
        for key, value in first["machine"].items():
            lines.append(f"- {key}: {value}")
        versions = (parts.get("serving") or parts.get("noop") or {}).get("versions") or {}
        for key, value in versions.items():
            lines.append(f"- {key}: {value}")
    table = rollout_table()
    if table:
        lines += ["", "## Rollouts by cluster size", "", *table]
    lines += ["", "## Notes", "", notes.strip(), ""]
    for image in plots():
        lines += [f"![{image}]({image})", ""]
    for name, data in parts.items():
        if not data:
            continue
        trimmed = json.loads(json.dumps(data))
        for run in [*(trimmed.get("whole rollouts (new commit)") or []), *(trimmed.get("switch-only rollouts") or [])]:
            if run:
                run["traffic"] = f"{len(run['traffic'])} points (bench/reports/figures/{name}.json)"
        lines += [f"## {name} (measured {data['measured']})", "", "```json", json.dumps(trimmed, indent=1)[:20000], "```", ""]
    path = REPORTS / "figures.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines[: 4 + len(rows)]))
    print(f"report: {path}")
    return path


NOTES = Path(__file__).resolve().parent / "figures-notes.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="noop,serving,rollout", help=f"comma-separated, of {', '.join(PARTS)}, or 'report'")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--apps", default="2,4,8", help="app servers of the rollout clusters")
    parser.add_argument("--baseline", help="a commit whose make deploy the no-op figure is also measured against, side by side")
    parser.add_argument("--rollout-reps", type=int, default=3, help="switch-only rollouts per cluster")
    opts = parser.parse_args()
    parts = opts.parts.split(",")
    hosts.cleanup_stale()
    work = Path(tempfile.mkdtemp(prefix="sdb-", dir="/var/tmp"))
    try:
        if "noop" in parts or "serving" in parts:

            def both(host: hosts.Host) -> dict[str, Any]:
                if "noop" in parts:
                    save("noop", noop(host, opts.reps, opts.baseline))
                if "serving" in parts:
                    save("serving", serving(host, opts.reps, opts.seconds))
                return {}

            single_host(work, both)
        if "rollout" in parts:
            rollout_clusters(work, [int(a) for a in opts.apps.split(",")], opts.rollout_reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(NOTES.read_text() if NOTES.exists() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
