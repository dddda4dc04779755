"""No public function of our execution modules or runner returns a secret.

Whatever a function returns when called through ``salt`` lands in the
master's job cache. So every public function is called here, with
sentinel secrets in pillar, in the app's env file and in the master's
secret files, and its return is searched for them. The calls run in a
sandbox: paths point into a temporary directory, and subprocesses,
network connections and the Salt client are refused. A function that
needs what the sandbox refuses raises, which is fine: it returned nothing.
"""

from __future__ import annotations

import inspect
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.conftest import ROOT, Utils, load

SECRETS = {
    "DJANGO_SECRET_KEY": "sentinel-secret-key-7b1e0c9a4d2f8e6b3a5c7d9e1f0a2b4c6d8e0f1a3b5c7d9e",
    "DB_PASSWORD": "sentinel-db-password-51c3a8e2",
    "REDIS_PASSWORD": "sentinel-redis-password-9d4b7f60",
    "BACKUP_KEY": "sentinel-backup-key-2e8c1a7f3b9d",
}
ENV = {
    "DJANGO_SECRET_KEY": SECRETS["DJANGO_SECRET_KEY"],
    "DATABASE_PASSWORD": SECRETS["DB_PASSWORD"],
    "REDIS_PASSWORD": SECRETS["REDIS_PASSWORD"],
    "DATABASE_URL": f"postgres://demo:{SECRETS['DB_PASSWORD']}@127.0.0.1:5432/demo",
}
RID = "20261129T040000Z-1a2b3c4"


class Refused(RuntimeError):
    """What the sandbox answers to a subprocess, a connection or an unknown Salt function."""


def refuse(*args: Any, **kwargs: Any) -> Any:
    raise Refused(f"refused in the sandbox: {args[:1]}")


class NoConnect(socket.socket):
    def connect(self, *args: Any) -> None:
        refuse(*args)

    def connect_ex(self, *args: Any) -> int:
        refuse(*args)
        return 1


class Salt(dict):
    def __missing__(self, key: str) -> Any:
        return refuse(f"__salt__[{key!r}]")


def lookup(data: dict, key: str, default: Any = None, delimiter: str = ":") -> Any:
    node: Any = data
    for part in key.split(delimiter):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def public_functions(module: Any) -> dict[str, Any]:
    source = Path(inspect.getfile(module)).read_text()
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value) and not name.startswith("_") and f"\ndef {name}(" in source
    }


MODULES = {path.stem: f"_modules/{path.name}" for path in sorted((ROOT / "_modules").glob("*.py"))}
MODULES["rollout"] = "_runners/rollout.py"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name in ("run", "Popen", "check_output", "check_call", "call"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(socket, "socket", NoConnect)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(shutil, "chown", refuse)
    import salt.client
    import salt.pillar

    monkeypatch.setattr(salt.client, "get_local_client", refuse)
    monkeypatch.setattr(salt.client, "LocalClient", refuse)
    monkeypatch.setattr(salt.pillar, "get_pillar", refuse)

    pillar = {
        "projects": {"demo": {"domains": ["demo.example.org"], "secrets": dict(SECRETS)}},
        "topology": {"hosts": {}},
    }
    roots = tmp_path / "pillar"
    roots.mkdir()
    (roots / "local.sls").write_text(yaml.safe_dump(pillar))
    (tmp_path / "etc" / "demo").mkdir(parents=True)
    (tmp_path / "etc" / "demo" / "env").write_text("".join(f"{k}='{v}'\n" for k, v in ENV.items()))
    release = tmp_path / "srv" / "demo" / "releases" / RID
    release.mkdir(parents=True)
    (tmp_path / "srv" / "demo" / "current").symlink_to(release)

    modules = {name: load(path) for name, path in MODULES.items()}
    utils = Utils()
    monkeypatch.setattr(utils.module("saltdjango_files"), "LOCK_DIR", str(tmp_path / "run"))
    salt = Salt(
        {
            "pillar.get": lambda key, default=None, **kw: lookup(pillar, key, default, kw.get("delimiter", ":")),
            "config.get": lambda key, default=None, **kw: lookup(pillar, key, default),
            "mine.get": lambda *args, **kwargs: {},
            "cp.get_file_str": lambda url, **kwargs: (ROOT / "salt" / url.removeprefix("salt://")).read_text(),
        }
    )
    for name, module in modules.items():
        if name != "rollout":
            salt.update({f"{name}.{fn}": value for fn, value in public_functions(module).items()})
    opts = {
        "id": "single",
        "test": False,
        "cachedir": str(tmp_path / "cache"),
        "pillar_roots": {"base": [str(roots)]},
        "salt_django_state_dir": str(tmp_path / "state"),
        "conf_file": str(tmp_path / "master"),
        "sock_dir": str(tmp_path / "sock"),
    }
    grains = {"id": "single", "num_cpus": 2, "os_family": "Debian", "ipv4": ["127.0.0.1", "10.0.0.9"]}
    for module in modules.values():
        for dunder, value in (("__salt__", salt), ("__pillar__", pillar), ("__opts__", opts), ("__grains__", grains), ("__context__", {})):
            monkeypatch.setattr(module, dunder, value, raising=False)
        module.__utils__ = utils

    # The paths of a project (its config derives them too), and the modules' fixed roots, under tmp_path.
    real_paths = modules["saltdjango"].paths

    def paths(name: str) -> dict[str, str]:
        return {key: str(tmp_path) + path for key, path in real_paths(name).items()}

    monkeypatch.setattr(modules["saltdjango"], "paths", paths)
    salt["saltdjango.paths"] = paths
    for module, constant in (
        ("django_db", "BACKUP_ROOT"),
        ("django_store", "GIT_CACHE"),
        ("django_audit", "AUDIT_ROOT"),
        ("django_schedule", "SYSTEMD_DIR"),
        ("django_schedule", "CRON_DIR"),
        ("django_schedule", "SCRIPT_DIR"),
        ("app_slots", "LEGACY_UPSTREAM_DIR"),
        ("haproxy_runtime", "DEFAULT_SOCKET"),
    ):
        monkeypatch.setattr(modules[module], constant, str(tmp_path) + getattr(modules[module], constant))
    yield {"modules": modules, "tmp": tmp_path, "release": str(release), "pillar_roots": str(roots)}


def arguments(function: Any, box: dict[str, Any]) -> dict[str, Any]:
    """A value for every parameter, by its name: paths inside the sandbox, and
    the sentinel secrets wherever a function is handed text to clean."""
    tmp = box["tmp"]
    by_name = {
        "project": "demo",
        "name": "demo",
        "release": RID,
        "rid": None,
        "to": None,
        "text": "log: " + " ".join(ENV.values()),
        "path": str(tmp / "scratch"),
        "directory": str(tmp),
        "release_dir": box["release"],
        "venv": str(tmp / "venv"),
        "dirs": (str(tmp),),
        "socket_path": str(tmp / "haproxy.sock"),
        "timeout": 0.2,
        "interval": 0.05,
        "file": "20261129T040000000000Z-manual.dump",
        "copy": "demo/20261129T040000000000Z-manual.dump.sdbk",
        "confirm": True,
        "minion": "single",
        "masterless": True,
        "url": "http://127.0.0.1:9/healthz",
    }
    values = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name in by_name:
            values[param.name] = by_name[param.name]
        elif param.default is param.empty:
            values[param.name] = {} if "dict" in str(param.annotation) else [] if "list" in str(param.annotation) else "demo"
    return values


def test_no_public_function_returns_a_secret(sandbox: dict[str, Any]) -> None:
    # The sandbox holds the secrets where the modules look for them.
    manage = sandbox["modules"]["django_manage"]
    assert manage._command_env("demo", sandbox["release"])["DJANGO_SECRET_KEY"] == SECRETS["DJANGO_SECRET_KEY"]

    leaks, returned, raised = [], [], []
    for module_name, module in sandbox["modules"].items():
        for name, function in sorted(public_functions(module).items()):
            try:
                ret = function(**arguments(function, sandbox))
                if inspect.isgenerator(ret) or hasattr(ret, "__enter__"):
                    continue
            except Exception as exc:  # noqa: BLE001 - raising returns nothing
                raised.append(f"{module_name}.{name}: {type(exc).__name__}")
                ret = str(exc)
            else:
                returned.append(f"{module_name}.{name}")
            found = [key for key, value in {**SECRETS, **ENV}.items() if value in repr(ret)]
            if found:
                leaks.append(f"{module_name}.{name} returns {', '.join(sorted(set(found)))}")
    assert not leaks, "\n".join(leaks)
    # A sandbox where nothing runs would prove nothing.
    assert len(returned) >= 40, f"only {len(returned)} functions returned: {returned}\nraised: {raised}"
