"""Who holds which role in a cluster, which secrets each role may see, and
which published addresses can be trusted: pure rules, no Salt calls.

In ``_utils`` because three kinds of code need the same rules and two of
them cannot call an execution module: the pillar files
(pillar/topology.sls, pillar/role_secrets.sls) and the rollout runner load
this file by path, and ``saltdjango`` reaches it as
``__utils__["saltdjango_topology.<function>"]``. Functions here may return
secrets (``role_view``, ``read_secret_files``): no ``salt`` command can
call them.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections import Counter
from typing import Any

import yaml

KNOWN_ROLES = frozenset({"db", "cache", "app", "worker", "web", "lb", "storage"})
#: The roles of a single server (masterless ``make deploy``): all but ``lb``.
SINGLE_SERVER_ROLES = ("db", "cache", "app", "worker", "web")
#: Secrets of a project that no app process needs: the key of the off-host
#: backup copies (_modules/django_db.py). They never reach the app's env file.
SERVER_SECRETS = frozenset({"BACKUP_KEY"})
#: The secrets of a project (``projects:<p>:secrets``) that a role needs; None: every
#: one but ``SERVER_SECRETS``. A role not listed needs none. TLS material goes to
#: whatever ends TLS (``role_view``).
ROLE_SECRETS: dict[str, frozenset[str] | None] = {
    "app": None,
    "worker": None,
    "db": frozenset({"DB_PASSWORD", "BACKUP_KEY"}),
    "cache": frozenset({"REDIS_PASSWORD"}),
    # The S3 keys of the projects whose uploads live in the cluster's own
    # object store (salt/storage writes them into its identities file).
    "storage": frozenset({"S3_ACCESS_KEY", "S3_SECRET_KEY"}),
}
#: A project's keys to its S3 bucket (``projects:<p>:secrets``), generated for a
#: bucket on the cluster's storage server, the operator's for an external endpoint.
MEDIA_SECRETS = ("S3_ACCESS_KEY", "S3_SECRET_KEY")
#: The pillar files, in pillar_roots, that hold secrets: salt-django's generated
#: passwords, then the operator's local.sls, which wins (pillar/role_secrets.sls).
SECRET_FILES = ("generated.sls", "local.sls")
#: Mine function (pillar/topology.sls) through which each server publishes its private address.
MINE_ADDRESS = "salt_django_address"
#: Where a server's private address must lie when topology:private_network is null (RFC 1918, ULA).
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins, ``None`` in it keeps the base value."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif value is not None or key not in base:
            base[key] = copy.deepcopy(value)
    return base


def roles_of(hosts: Any, minion: str, masterless: bool) -> list[str]:
    """The roles of ``minion`` by ``topology:hosts`` (pillar/topology.yaml): what
    pillar/topology.sls and pillar/role_secrets.sls give it. A single server
    (masterless, or no topology) holds every role but ``lb``; a minion the
    topology does not list, none.
    """
    if masterless or not hosts:
        return list(SINGLE_SERVER_ROLES)
    spec = hosts.get(minion) if isinstance(hosts, dict) else None
    roles = spec.get("roles") if isinstance(spec, dict) else None
    return [str(role) for role in roles] if isinstance(roles, list) else []


def read_topology(directory: str, minion: str, masterless: bool) -> dict[str, Any]:
    """``topology.yaml`` in ``directory`` as ``minion`` sees it: ``hosts`` (none
    masterless), ``private_network`` and its ``roles`` (``roles_of``). What
    pillar/topology.sls and pillar/role_secrets.sls both build on.
    """
    with open(os.path.join(directory, "topology.yaml"), encoding="utf-8") as handle:
        topology = yaml.safe_load(handle) or {}
    hosts = {} if masterless else topology.get("hosts") or {}
    return {"hosts": hosts, "private_network": topology.get("private_network"), "roles": roles_of(hosts, minion, masterless)}


def needs_secret(roles: list[str], secret: str) -> bool:
    """Whether a server holding ``roles`` gets the project secret named ``secret``."""
    for role in roles:
        named = ROLE_SECRETS.get(role, frozenset())
        if (named is None and secret not in SERVER_SECRETS) or (named is not None and secret in named):
            return True
    return False


def ends_tls(roles: list[str], has_lb: bool) -> bool:
    """Whether a server holding ``roles`` serves the projects' certificates:
    a load balancer, or the web server of a deployment that has none."""
    return "lb" in roles or ("web" in roles and not has_lb)


def role_view(data: Any, roles: list[str], has_lb: bool) -> dict[str, Any]:
    """The secrets pillar ``data`` as a server holding ``roles`` may see it.

    Only ``projects:<p>:secrets`` (filtered by ``needs_secret``) and
    ``projects:<p>:tls`` (kept where ``ends_tls``) are cut; every other key
    the operator wrote beside them passes, whatever the role.
    """
    if not isinstance(data, dict):
        return {}
    view = copy.deepcopy(data)
    projects = view.get("projects") if isinstance(view.get("projects"), dict) else {}
    for project in (p for p in projects.values() if isinstance(p, dict)):
        kept = project.get("secrets")
        if isinstance(kept, dict):
            project["secrets"] = {k: v for k, v in kept.items() if needs_secret(roles, str(k))}
        elif kept is not None and not needs_secret(roles, "SECRET_KEY"):
            # Not a mapping: validation names it where it is needed; elsewhere it goes.
            project["secrets"] = {}
        if project.get("secrets") == {}:
            del project["secrets"]
        if "tls" in project and not ends_tls(roles, has_lb):
            del project["tls"]
    return view


def read_secret_files(roots: list[str]) -> dict[str, Any]:
    """``SECRET_FILES`` merged, each the first found in ``roots`` (as Salt finds
    an SLS), the later winning. They are plain YAML: no renderer runs them."""
    merged: dict[str, Any] = {}
    for name in SECRET_FILES:
        found = next((os.path.join(root, name) for root in roots if os.path.isfile(os.path.join(root, name))), None)
        if not found:
            continue
        with open(found, encoding="utf-8") as handle:
            try:
                data = yaml.safe_load(handle) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{found}: not plain YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{found}: must hold a mapping")
        merge(merged, data)
    return merged


def trusted_addresses(published: dict[str, Any], network: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Split what servers published in the mine into addresses fit for a config file, and refusals.

    A minion controls what it publishes, so its value is input from a
    stranger: it goes into pg_hba.conf, haproxy.cfg and Nginx only when it
    is an IP address (the first of the list ``network.ip_addrs`` returns) inside ``network`` (``topology:private_network``), or,
    when that is null, a private (RFC 1918 or ULA) address. An address that
    two servers published is refused for both: which one owns it is unknown.
    Returns ``(accepted, refused)``: minion -> address, minion -> reason.
    """
    subnet = ipaddress.ip_network(network, strict=False) if network else None
    accepted, refused = {}, {}
    for minion, value in sorted(published.items()):
        first = value[0] if isinstance(value, list) and value else value
        try:
            address = ipaddress.ip_address(first) if isinstance(first, str) else None
        except ValueError:
            address = None
        if address is None:
            refused[minion] = f"published {str(first)[:80]!r}, which is not an IP address"
        elif subnet and address not in subnet:
            refused[minion] = f"published {address}, outside topology:private_network {subnet}"
        elif not subnet and not any(address in net for net in PRIVATE_NETWORKS):
            refused[minion] = f"published {address}, which is not a private (RFC 1918 or ULA) address"
        else:
            accepted[minion] = str(address)
    owners = Counter(accepted.values())
    for minion, address in sorted(accepted.items()):
        if owners[address] > 1:
            others = sorted(m for m, a in accepted.items() if a == address and m != minion)
            refused[minion] = f"published {address}, which {', '.join(others)} published too"
    return {m: a for m, a in accepted.items() if m not in refused}, refused


def known_roles() -> list[str]:
    """Every role a server may hold, sorted."""
    return sorted(KNOWN_ROLES)


def mine_functions(network: str | None) -> dict[str, Any]:
    """Pillar ``mine_functions`` through which each server of a cluster
    publishes its private address: in ``network``, else a private one."""
    scope = {"cidr": network} if network else {"type": "private"}
    return {MINE_ADDRESS: [{"mine_function": "network.ip_addrs"}, scope]}


def media_secrets() -> tuple[str, ...]:
    """The names of a project's S3 keys (``MEDIA_SECRETS``), for ``saltdjango``."""
    return MEDIA_SECRETS


def mine_address() -> str:
    """The mine function's name, for ``mine.get``."""
    return MINE_ADDRESS
