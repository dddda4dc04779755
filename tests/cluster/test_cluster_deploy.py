"""The cluster of pillar/topology.yaml, for real: db, cache, app1, app2 and lb
(app3 joins later), driven by a salt-master configured from conf/master.d/
(minions from conf/minion.d/).

One cluster serves the whole module, and the tests build on each other in
file order, as an operator's day would: converge from nothing, converge
again, check who may reach the database and cache, roll out a release under
load, roll out a broken one and roll back, lose an app server, add one,
and try two rollouts at once. Releases come from a git repository served
to the cluster by ``git daemon`` on this machine's bridge address.

Timings are printed (run with -s) as ``[lab timing]`` lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import timing
from tests.cluster.traffic import Traffic, get
from tests.lab.cluster import Cluster
from tests.lab.hosts import REPO_ROOT

TOPOLOGY = yaml.safe_load((REPO_ROOT / "pillar" / "topology.yaml").read_text())["hosts"]
SPARE = "app3"
HOSTS = [name for name in TOPOLOGY if name != SPARE]
APPS = sorted(name for name in HOSTS if "app" in TOPOLOGY[name]["roles"])
DOMAIN = "demo.localhost"
PASSWORDS = {"DB_PASSWORD": "Db-lab-password-0123456789", "REDIS_PASSWORD": "Redis-lab-password-0123456789"}
TEMPLATE = "visits/templates/visits/index.html"
SECRET_KEY = "lab-secret-key-x7Kq9mP2vR4tW6yZ8bN1cD3fG5hJ0lA-a1b2c3d4e5f6g7h8"


def master_conf(name: str, **paths: Path) -> dict[str, Any]:
    """One of conf/master.d/ as an operator links it, with the repository where
    it is here and the other paths of the README moved as ``paths`` say
    (``etc=`` for /etc/salt-django, ``var=`` for /var/lib/salt-django)."""
    text = (REPO_ROOT / "conf" / "master.d" / name).read_text().replace("/srv/salt-django", str(REPO_ROOT))
    for key, where in (("etc", "/etc/salt-django"), ("var", "/var/lib/salt-django")):
        if key in paths:
            text = text.replace(where, str(paths[key]))
    return yaml.safe_load(text)


def _git(repo: Path, *args: str) -> str:
    env = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in (("NAME", "lab"), ("EMAIL", "lab@example.org"))}
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **env})
    return proc.stdout.strip()


class Releases:
    """The demo project in a git repository, served by ``git daemon`` on the bridge."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "demo.git"
        self.work = root / "work"
        shutil.copytree(REPO_ROOT / "example", self.work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _git(self.work, "init", "-q", "-b", "main")
        self.commit("v1", {})
        _git(root, "clone", "-q", "--bare", str(self.work), str(self.bare))
        self.daemon: subprocess.Popen[bytes] | None = None

    def serve(self, address: str) -> str:
        self.daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={self.bare.parent}", f"--listen={address}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return f"git://{address}/demo.git"

    def commit(self, tag: str, changes: dict[str, Callable[[str], str]]) -> str:
        """Commit ``changes`` (path -> edit of its text), tag it, push it; return the short commit."""
        for rel, edit in changes.items():
            path = self.work / rel
            path.write_text(edit(path.read_text()))
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-q", "--allow-empty", "-m", tag)
        _git(self.work, "tag", tag)
        if self.bare.exists():
            _git(self.work, "push", "-q", str(self.bare), "main", tag)
        return _git(self.work, "rev-parse", "--short=7", "HEAD")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(10)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    made = Releases(tmp_path_factory.mktemp("git"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster], releases: Releases, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    etc, var = tmp_path_factory.mktemp("etc"), tmp_path_factory.mktemp("var")
    secrets_dir = etc / "pillar"
    secrets_dir.mkdir(mode=0o700)
    conf = master_conf("salt-django.conf", etc=etc, var=var)
    file_roots = conf.pop("file_roots")["base"]
    pillar_roots = conf.pop("pillar_roots")["base"]
    minion_conf = {"/etc/salt/minion.d/salt-django.conf": (REPO_ROOT / "conf" / "minion.d" / "salt-django.conf").read_text()}
    made = make_cluster(HOSTS, [Path(p) for p in file_roots], [Path(p) for p in pillar_roots], conf, minion_conf)
    timing(f"cluster up (master + {len(HOSTS)} hosts)", made.timings["up"])
    local = {
        "projects": {
            "demo": {
                "repo": releases.serve(made.master_ip),
                "health_timeout": 15,
                "gunicorn": {"workers": 2},
                "secrets": {**PASSWORDS, "SECRET_KEY": SECRET_KEY},
            }
        },
        "rollout": {"drain_timeout": 10},
    }
    (secrets_dir / "local.sls").write_text(yaml.safe_dump(local))
    return made


def rollout_lock(cluster: Cluster) -> Path:
    return Path(cluster.master_opts["salt_django_state_dir"]) / "rollout.lock"


def lock_free(cluster: Cluster) -> bool:
    lock = rollout_lock(cluster)
    return not lock.exists() or not lock.read_text().strip()


def lb_ip(cluster: Cluster) -> str:
    return cluster.hosts["lb"].ip


def apply_all(cluster: Cluster, names: list[str]) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    ret = cluster.salt(names, "state.apply", tgt_type="list", timeout=1200)
    return ret, time.monotonic() - t0


def failed(ret: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, states in ret.items():
        if not isinstance(states, dict):
            out[name] = states
            continue
        bad = {sid: s.get("comment") for sid, s in states.items() if s.get("result") is not True}
        if bad:
            out[name] = bad
    return out


def live(cluster: Cluster, names: list[str]) -> dict[str, str]:
    """The live release id on each app server."""
    return cluster.salt(names, "django_release.current", ["demo"], tgt_type="list")


def orchestrate(cluster: Cluster, sls: str, pillar: dict[str, Any] | None = None) -> tuple[dict[str, Any], float]:
    """``salt-run state.orchestrate <sls>``: (the runner's return, seconds)."""
    t0 = time.monotonic()
    out = cluster.run_runner("state.orchestrate", sls, **({"pillar": pillar} if pillar else {}), timeout=1200)
    seconds = time.monotonic() - t0
    [step] = out["data"]["master"].values()
    return {"retcode": out["retcode"], "result": step["result"], **(step["changes"].get("return") or {})}, seconds


def haproxy(cluster: Cluster) -> dict[str, Any]:
    return cluster.salt("lb", "haproxy_runtime.servers", ["demo_app"])["lb"]


def up_in_haproxy(cluster: Cluster) -> set[str]:
    return {name for name, server in haproxy(cluster).items() if server["status"].startswith("UP")}


def until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - t0


def test_one_apply_converges_the_cluster_from_nothing(cluster: Cluster) -> None:
    ret, seconds = apply_all(cluster, HOSTS)
    timing(f"first state.apply on {len(HOSTS)} hosts", seconds)
    assert set(ret) == set(HOSTS), ret.keys()
    assert not failed(ret), json.dumps(failed(ret), indent=1)[:4000]
    # lb converged beside the app servers: its health checks find them up within a few checks
    waited = until(lambda: up_in_haproxy(cluster) == set(APPS), 30, "HAProxy sees the app servers UP")
    timing("apply done -> HAProxy routes to every app server", waited)
    seen: dict[str, str] = {}
    for _ in range(20):
        answer = get(lb_ip(cluster), DOMAIN)
        assert answer.status == 200, answer
        seen[answer.server] = answer.release
        if set(seen) == set(APPS):
            break
    assert set(seen) == set(APPS), seen
    # rows written by both app servers are in PostgreSQL on db, the hit counter in Redis on cache
    query = "select distinct server from visits_visit order by 1"
    rows = cluster.hosts["db"].run(f"runuser -u postgres -- psql -At demo -c '{query}'").stdout.split()
    assert rows == APPS
    env = cluster.hosts["app1"].run("cat /etc/demo/env").stdout
    assert f"DATABASE_HOST={cluster.hosts['db'].ip}\n" in env and f"REDIS_HOST={cluster.hosts['cache'].ip}\n" in env
    keys = (
        cluster.hosts["cache"]
        .run(f"REDISCLI_AUTH={PASSWORDS['REDIS_PASSWORD']} redis-cli --no-auth-warning --user demo --raw keys '*demo:hits'")
        .stdout.split()
    )
    assert keys, "no hit counter in the cache server's Redis"
    headers = cluster.hosts["lb"].run(f"curl -skI --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/").stdout.lower()
    assert headers.count("strict-transport-security: max-age=31536000; includesubdomains; preload") == 1, headers
    assert headers.count("x-frame-options: deny") == 1, headers
    redirect = cluster.hosts["lb"].run(f"curl -sI -H 'Host: {DOMAIN}' http://127.0.0.1/").stdout.lower()
    assert redirect.startswith("http/1.1 301") and f"location: https://{DOMAIN}/" in redirect, redirect


def test_second_apply_changes_nothing(cluster: Cluster) -> None:
    ret, seconds = apply_all(cluster, HOSTS)
    timing(f"second state.apply on {len(HOSTS)} hosts", seconds)
    assert not failed(ret), failed(ret)
    changed = {name: sorted(sid.split("_|-")[1] for sid, s in states.items() if s["changes"]) for name, states in ret.items()}
    assert not any(changed.values()), changed


def test_db_and_cache_refuse_strangers(cluster: Cluster) -> None:
    db, cache = cluster.hosts["db"].ip, cluster.hosts["cache"].ip
    # from the load balancer: PostgreSQL answers the startup message with its pg_hba verdict
    startup = (
        "import socket, struct; p = b'user\\0demo\\0database\\0demo\\0\\0';"
        f" s = socket.create_connection(('{db}', 5432), 5); s.sendall(struct.pack('!ii', 8 + len(p), 196608) + p);"
        " print(s.recv(500).decode(errors='replace'))"
    )
    refused = cluster.hosts["lb"].run(f'python3 -c "{startup}"').stdout
    assert "no pg_hba.conf entry" in refused, refused
    admitted = cluster.hosts["app1"].run(
        f"PGPASSWORD={PASSWORDS['DB_PASSWORD']} psql 'host={db} dbname=demo user=demo connect_timeout=5' -Atc 'select 1'"
    )
    assert admitted.stdout.strip() == "1"
    ping = f"import socket; s = socket.create_connection(('{cache}', 6379), 5); s.sendall(b'PING\\r\\n'); print(s.recv(200).decode())"
    for name in HOSTS:
        answer = cluster.hosts[name].run(f'python3 -c "{ping}"').stdout.strip()
        assert answer.startswith("-NOAUTH"), (name, answer)


def test_rolling_deploy_under_load_drops_nothing(cluster: Cluster, releases: Releases) -> None:
    short = releases.commit("v2", {TEMPLATE: lambda t: t.replace("salt-django demo</h1>", "salt-django demo v2</h1>")})
    with Traffic(lb_ip(cluster), DOMAIN) as traffic:
        result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v2"})
        time.sleep(2)  # requests after the last switch too
    timing(f"orch.deploy v2 on {len(APPS)} app servers", seconds)
    print(f"\n[lab figures] rolling deploy under load: {traffic}", flush=True)
    assert result["retcode"] == 0 and result["result"] is True, json.dumps(result, indent=1)[:4000]
    assert not traffic.failures, str(traffic)
    assert traffic.sent > 50 and set(traffic.servers) == set(APPS), str(traffic)
    rid = result["release"]
    assert rid.endswith(short)
    assert live(cluster, APPS) == dict.fromkeys(APPS, rid)
    pages = [get(lb_ip(cluster), DOMAIN) for _ in range(6)]
    assert {(p.server, p.release) for p in pages} == {(a, rid) for a in APPS}


def test_unhealthy_release_stops_after_first_batch_and_rolls_back(cluster: Cluster, releases: Releases) -> None:
    before = live(cluster, APPS)
    # it imports, passes check --deploy and collectstatic, but /healthz always says "fail"
    broken = {"visits/middleware.py": lambda t: t.replace("healthy = all(", "healthy = False and all(")}
    releases.commit("v3-unhealthy", broken)
    with Traffic(lb_ip(cluster), DOMAIN) as traffic:
        result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v3-unhealthy"})
    timing("orch.deploy of an unhealthy release (stops)", seconds)
    print(f"\n[lab figures] unhealthy release under load: {traffic}", flush=True)
    assert result["retcode"] != 0 and result["result"] is False, result
    assert result["server"] == APPS[0] and "did not become healthy" in result["comment"], result["comment"]
    steps = [s["step"] for s in result["steps"]]
    assert f"switch {APPS[1]}" not in " ".join(steps), steps
    assert not traffic.failures, str(traffic)
    assert live(cluster, APPS) == before
    back, seconds = orchestrate(cluster, "orch.rollback")
    timing("orch.rollback", seconds)
    assert back["retcode"] == 0 and back["release"] == before[APPS[0]], json.dumps(back, indent=1)[:3000]
    assert live(cluster, APPS) == before
    assert up_in_haproxy(cluster) == set(APPS), haproxy(cluster)


def test_cut_app_server_is_routed_around(cluster: Cluster) -> None:
    victim = APPS[1]
    with Traffic(lb_ip(cluster), DOMAIN) as traffic:
        time.sleep(1)
        cluster.cut(victim)
        try:
            marked = until(lambda: haproxy(cluster)[victim]["status"].startswith("DOWN"), 30, f"HAProxy marks {victim} down")
            timing(f"cut {victim} -> HAProxy marks it DOWN", marked)
            before_down = str(traffic)
            traffic.reset()
            time.sleep(5)
        finally:
            cluster.heal(victim)
    print(f"\n[lab figures] while {victim} was cut, before DOWN: {before_down}; after DOWN: {traffic}", flush=True)
    assert not traffic.failures and traffic.sent > 10, str(traffic)
    assert victim not in traffic.servers, str(traffic)
    until(lambda: haproxy(cluster)[victim]["status"].startswith("UP"), 60, f"{victim} back UP after heal")


def test_new_app_server_joins_by_itself(cluster: Cluster) -> None:
    timing("master restarted with the reactor", cluster.restart_master(master_conf("salt-django-reactor.conf")))
    rid = live(cluster, APPS[:1])[APPS[0]]
    t0 = time.monotonic()
    cluster.add_host(SPARE)

    def served_by_spare() -> bool:
        return any(get(lb_ip(cluster), DOMAIN).server == SPARE for _ in range(3))

    until(served_by_spare, 600, f"HAProxy routes to {SPARE}", interval=3)
    timing(f"{SPARE} started -> served through the LB (reactor)", time.monotonic() - t0)
    # it serves what the cluster serves (the last rollout's release), not the pillar's source
    assert live(cluster, [SPARE]) == {SPARE: rid}
    pages = [get(lb_ip(cluster), DOMAIN) for _ in range(9)]
    assert {p.release for p in pages} == {rid} and SPARE in {p.server for p in pages}
    # the master's restart made every minion reconnect (a start event each): those joins end too
    until(lambda: lock_free(cluster), 600, "the reactor's joins are done")


def test_second_rollout_is_refused_while_one_runs(cluster: Cluster, releases: Releases) -> None:
    short = releases.commit("v4", {TEMPLATE: lambda t: t.replace("demo v2</h1>", "demo v4</h1>")})
    lock = rollout_lock(cluster)
    cluster.run_runner("event.send", "salt-django/deploy", data={"release": "v4"}, check=True)
    until(lambda: lock.exists() and lock.read_text().strip(), 60, "the rollout started by the deploy event holds the lock", interval=0.2)
    second, _ = orchestrate(cluster, "orch.deploy", {"release": "v4"})
    assert second["retcode"] != 0 and "another rollout is running: orch.deploy of v4" in second["comment"], second
    apps = [*APPS, SPARE]
    until(lambda: all(r.endswith(short) for r in live(cluster, apps).values()), 600, "the event's rollout serves v4 everywhere", interval=2)
    until(lambda: lock_free(cluster), 120, "the lock is released")
