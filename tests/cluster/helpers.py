"""What the cluster tests and bench/cluster.py share: the cluster of
pillar/topology.yaml configured from conf/, releases of the demo project in
a git repository, and the questions an operator asks the cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.helpers import TICK_JOB, recorder
from tests.lab.cluster import Cluster, LabError
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
        return self.head()

    def head(self) -> str:
        """The short commit of the last release made."""
        return _git(self.work, "rev-parse", "--short=7", "HEAD")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(10)


def cluster_args(root: Path) -> dict[str, Any]:
    """``Cluster``/``make_cluster`` arguments: the topology's hosts but the
    spare, a master set up from conf/master.d/salt-django.conf and minions
    from conf/minion.d/ (the README's /etc and /var/lib paths under ``root``)."""
    (root / "etc" / "pillar").mkdir(parents=True, mode=0o700)
    (root / "var").mkdir(exist_ok=True)
    conf = master_conf("salt-django.conf", etc=root / "etc", var=root / "var")
    minion = REPO_ROOT / "conf" / "minion.d" / "salt-django.conf"
    return {
        "hosts": HOSTS,
        "file_roots": [Path(p) for p in conf.pop("file_roots")["base"]],
        "pillar_roots": [Path(p) for p in conf.pop("pillar_roots")["base"]],
        "master_opts": conf,
        "minion_files": {f"/etc/salt/minion.d/{minion.name}": minion.read_text()},
    }


#: Where the demo's after_switch hook records its runs, on the server that ran it.
HOOK_RUNS = "/var/tmp/salt-django-hook-runs"


def write_secrets(cluster: Cluster, repo: str) -> None:
    """The operator's local.sls: secrets, the git repository, lab tuning."""
    local = {
        "projects": {
            "demo": {
                "repo": repo,
                "health_timeout": 15,
                "gunicorn": {"workers": 2},
                "secrets": {**PASSWORDS, "SECRET_KEY": SECRET_KEY},
                "schedule": {"tick": TICK_JOB},
                "hooks": {"after_switch": [recorder(HOOK_RUNS)]},
            }
        },
        "rollout": {"drain_timeout": 10},
    }
    [secrets] = [p for p in cluster.pillar_roots if p.name == "pillar" and p.parent.name == "etc"]
    (secrets / "local.sls").write_text(yaml.safe_dump(local))


def rollout_lock(cluster: Cluster) -> Path:
    return Path(cluster.master_opts["salt_django_state_dir"]) / "rollout.lock"


def lock_free(cluster: Cluster) -> bool:
    lock = rollout_lock(cluster)
    return not lock.exists() or not lock.read_text().strip()


def settled(cluster: Cluster, quiet: float = 5, timeout: float = 600) -> float:
    """Wait until no rollout or join held the lock for ``quiet`` seconds in a
    row (joins queue one after another); return seconds waited."""
    t0 = time.monotonic()
    free_since = None
    while True:
        now = time.monotonic()
        if lock_free(cluster):
            free_since = free_since or now
            if now - free_since >= quiet:
                return now - t0
        else:
            free_since = None
        if now - t0 > timeout:
            raise LabError(f"the rollout lock is still taken after {timeout:.0f}s")
        time.sleep(0.2)


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
            raise LabError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - t0
