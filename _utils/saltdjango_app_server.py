"""The app server of a project: pillar ``projects:<p>:app_server``, the kind
that runs a release behind the web server and its workers and timeouts.
Pure rules, no Salt calls; ``saltdjango`` reaches these functions as
``__utils__["saltdjango_app_server.<function>"]``, with the kinds that
``app/defaults.yaml`` declares under ``app_servers`` (package, pinned
version, the module that shows it installed, the protocol Nginx speaks).

``projects:<p>:gunicorn`` is where these settings were before ``app_server``
held them all. It is still read, below ``app_server`` (a key set in both with
different values is an error), and each apply names it as deprecated.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

#: The numbers of every kind, each with its lowest and highest value
#: (max_requests 0: a worker is never recycled).
LIMITS = {
    "workers": (1, 256),
    "timeout": (1, 3600),
    "graceful_timeout": (1, 3600),
    "max_requests": (0, 10_000_000),
    "drain_timeout": (0, 3600),
    # Kind mod_wsgi: slot a's loopback port; slot b's is the next one.
    "port": (1024, 65534),
}
KEYS = frozenset({"kind", "version", *LIMITS})
#: The older pillar key of the same settings, and what it may hold.
LEGACY = "gunicorn"
LEGACY_KEYS = frozenset({"workers", "timeout", "graceful_timeout"})
#: What a kind's entry in ``app_servers`` must say.
KIND_FIELDS = ("package", "version", "module", "protocol", "websockets")
PROTOCOLS = frozenset({"http", "uwsgi", "http-port"})
#: Where a port derived from a project's name falls: 2 ports each, below 30000.
_PORT_BASE, _PORT_PAIRS = 20000, 5000
_VERSION = re.compile(r"^[0-9][0-9a-z.+-]*$")


def _in_range(field: str, value: Any) -> bool:
    low, high = LIMITS[field]
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def default_port(name: str) -> int:
    """Slot a's port for project ``name`` when pillar sets none: stable, even, 20000-29998."""
    return _PORT_BASE + 2 * (zlib.crc32(name.encode()) % _PORT_PAIRS)


def settings(
    project: dict[str, Any], defaults: dict[str, Any], kinds: dict[str, dict[str, Any]], cpus: int = 1, name: str = ""
) -> dict[str, Any]:
    """The app server of ``project`` (its pillar): ``defaults`` under the
    legacy key's values under ``app_server``'s own, with its kind's entry of
    ``kinds`` (``package``, ``module``, ``protocol``; ``version`` unless the
    project pins one). No worker count: two per CPU plus one, as Gunicorn's
    documentation advises. No port: ``default_port(name)``. A value out of
    range or an unknown kind gives way to the default (validation names it;
    templates never trip on it). ``version`` is None for a kind that has no
    PyPI package (it comes from Debian)."""
    legacy = project.get(LEGACY) if isinstance(project.get(LEGACY), dict) else {}
    own = project.get("app_server") if isinstance(project.get("app_server"), dict) else {}
    merged = {**defaults, **{k: v for k, v in legacy.items() if k in LEGACY_KEYS}, **own}
    for field in LIMITS:
        if merged.get(field) is not None and not _in_range(field, merged[field]):
            merged[field] = defaults.get(field)
    if merged.get("kind") not in kinds:
        merged["kind"] = defaults.get("kind") if defaults.get("kind") in kinds else next(iter(kinds))
    kind = kinds[merged["kind"]]
    merged.update({field: kind[field] for field in KIND_FIELDS if field != "version"})
    version = merged.get("version") or kind["version"]
    merged["version"] = str(version) if kind["package"] and version else None
    merged["workers"] = merged.get("workers") or 2 * max(int(cpus), 1) + 1
    merged["port"] = merged.get("port") or default_port(name)
    merged["debian"] = list(kind.get("debian") or [])
    return merged


def kind_problems(kinds: Any) -> list[str]:
    """Errors in ``app_servers`` (defaults.yaml): each kind names its package,
    version, module and a protocol Nginx speaks."""
    if not isinstance(kinds, dict) or not kinds:
        return ["app_servers: must map each kind to its package, version, module and protocol"]
    errors = [f"app_servers:{name}:{field}: missing" for name, kind in kinds.items() for field in KIND_FIELDS if field not in (kind or {})]
    errors += [
        f"app_servers:{name}:protocol: {kind['protocol']!r} is not one of {', '.join(sorted(PROTOCOLS))}"
        for name, kind in kinds.items()
        if (kind or {}).get("protocol") and kind["protocol"] not in PROTOCOLS
    ]
    return errors


def _number_problems(key: str, values: dict[str, Any]) -> list[str]:
    return [
        f"{key}:{field}: must be a whole number from {low} to {high}"
        for field, (low, high) in LIMITS.items()
        if values.get(field) is not None and not _in_range(field, values[field])
    ]


def problems(key: str, project: dict[str, Any], kinds: dict[str, Any]) -> list[str]:
    """Errors in ``project``'s ``app_server`` and legacy ``gunicorn`` keys, each naming its pillar key."""
    errors = []
    server = project.get("app_server")
    if server is not None and not isinstance(server, dict):
        errors.append(f"{key}:app_server: must be a mapping")
        server = {}
    server = server or {}
    errors += [f"{key}:app_server:{k}: unknown key; known: {', '.join(sorted(KEYS))}" for k in sorted(map(str, set(server) - KEYS))]
    if "kind" in server and server["kind"] not in kinds:
        errors.append(f"{key}:app_server:kind: {server['kind']!r} is not supported; supported: {', '.join(sorted(kinds))}")
    if server.get("version") is not None and not _VERSION.match(str(server["version"])):
        errors.append(f"{key}:app_server:version: {server['version']!r} is not a version")
    kind = kinds.get(server.get("kind")) or {}
    if server.get("version") is not None and "package" in kind and not kind["package"]:
        packages = ", ".join(kind.get("debian") or [])
        errors.append(f"{key}:app_server:version: kind {server['kind']} comes from Debian ({packages}), not PyPI: remove the version")
    errors += _number_problems(f"{key}:app_server", server)
    if LEGACY not in project:
        return errors
    legacy = project[LEGACY]
    if not isinstance(legacy, dict):
        return [*errors, f"{key}:{LEGACY}: must be a mapping (better: move its keys under {key}:app_server)"]
    known = ", ".join(sorted(LEGACY_KEYS))
    errors += [f"{key}:{LEGACY}:{k}: unknown key; known: {known}" for k in sorted(map(str, set(legacy) - LEGACY_KEYS))]
    errors += _number_problems(f"{key}:{LEGACY}", legacy)
    for field in sorted(LEGACY_KEYS & set(legacy) & set(server)):
        if legacy[field] != server[field]:
            contradicted = f"{key}:app_server:{field}: {server[field]!r}"
            errors.append(f"{key}:{LEGACY}:{field}: {legacy[field]!r} contradicts {contradicted}; keep only app_server's")
    return errors


def deprecations(key: str, project: Any) -> list[str]:
    """What ``project`` (its pillar) still says the older way, and where it goes now."""
    if not isinstance(project, dict) or LEGACY not in project:
        return []
    return [f"{key}:{LEGACY} is deprecated: move its keys ({', '.join(sorted(LEGACY_KEYS))}) under {key}:app_server"]


def port_problems(servers: dict[str, dict[str, Any]]) -> list[str]:
    """Projects of one server whose kind listens on TCP ports (``servers``:
    name -> ``settings``) and would share one: each needs ``port`` and
    ``port + 1`` for itself."""
    taken: dict[int, str] = {}
    errors = []
    for name, server in sorted(servers.items()):
        if server.get("protocol") != "http-port":
            continue
        port = int(server["port"])
        clash = sorted({taken[p] for p in (port, port + 1) if p in taken})
        if clash:
            errors.append(
                f"projects:{name}:app_server:port: {port} and {port + 1} overlap the ports of {', '.join(clash)}:"
                " set a free port (each project takes two)"
            )
        taken.update({port: name, port + 1: name})
    return errors
