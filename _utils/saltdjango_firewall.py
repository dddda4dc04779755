"""Which ports a server opens, and to whom: what its roles serve, to the
servers that use it, and nothing else. Pure rules, no Salt calls.

The addresses are the Salt mine's trusted ones (``saltdjango.addresses``),
the same source as HAProxy's backends and PostgreSQL's pg_hba: a server that
published no address, or one that is refused, is admitted nowhere.
``saltdjango`` reaches these functions as ``__utils__["saltdjango_firewall.<function>"]``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

#: Who uses what each role serves: the role's port (a key of ``ports``) and
#: the roles of the servers that connect to it; None: anyone (the public).
SERVED: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    "lb": (("http", None), ("https", None)),
    "db": (("db", ("app", "worker")),),
    "cache": (("cache", ("app", "worker")),),
    "storage": (("storage", ("app", "worker")),),
}


def _network(source: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(str(source), strict=False)


def _text(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """An address as itself, a network with its prefix."""
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else network.with_prefixlen


def _families(sources: list[str]) -> dict[str, list[str]]:
    networks = sorted({_network(s) for s in sources}, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return {
        "v4": [_text(n) for n in networks if n.version == 4],
        "v6": [_text(n) for n in networks if n.version == 6],
    }


def _opening(port: int, sources: list[str] | None, why: str) -> dict[str, Any]:
    """One rule: ``port`` from ``sources`` (None: anyone), split by address family for nftables."""
    return {"port": int(port), "why": why, "anyone": sources is None, **_families(sources or [])}


def openings(
    roles: list[str],
    cluster: bool,
    ports: dict[str, int],
    peers: dict[str, list[str]],
    ssh_ports: list[int],
    ssh_sources: list[str] | None,
) -> list[dict[str, Any]]:
    """The ports this server opens: ``[{port, why, anyone, v4, v6}]``, by port.

    ``ports``: ``http``, ``https``, ``web`` (an app server's Nginx behind the
    load balancers), ``db``, ``cache``, ``storage``. ``peers``: the trusted
    addresses of the servers holding each role. ``ssh_ports``: SSH's, always
    open (to ``ssh_sources``, None: anyone), so that no ruleset locks out the
    operator. A port whose users have no trusted address yet is opened to nobody.
    """
    found = [_opening(port, ssh_sources, "SSH") for port in sorted(set(ssh_ports))]

    def add(port_name: str, users: tuple[str, ...] | None, why: str) -> None:
        sources = None if users is None else sorted({a for role in users for a in peers.get(role, [])})
        if sources is None or sources:
            found.append(_opening(ports[port_name], sources, why))

    if not cluster:
        add("http", None, "a single server's Nginx")
        add("https", None, "a single server's Nginx")
        return _merged(found)
    for role in roles:
        for port_name, users in SERVED.get(role, ()):
            add(port_name, users, f"{role}: {port_name} for {'anyone' if users is None else ', '.join(users)}")
    if "web" in roles:
        if peers.get("lb"):
            add("web", ("lb",), "web: the load balancers' requests")
        else:
            # A cluster without load balancers: each web server faces the public itself.
            add("http", None, "web: the public (no load balancer)")
            add("https", None, "web: the public (no load balancer)")
    return _merged(found)


def _merged(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One rule per port (two roles on one server may serve the same one)."""
    merged: dict[int, dict[str, Any]] = {}
    for rule in found:
        held = merged.setdefault(rule["port"], {**rule, "v4": [], "v6": [], "why": []})
        held["anyone"] = held["anyone"] or rule["anyone"]
        held["why"].append(rule["why"])
        held.update(_families([*held["v4"], *held["v6"], *rule["v4"], *rule["v6"]]))
    return [{**rule, "why": "; ".join(dict.fromkeys(rule["why"]))} for _, rule in sorted(merged.items())]


def problems(firewall: Any) -> list[str]:
    """Errors in pillar ``firewall``, each naming its key."""
    if firewall is None:
        return []
    if not isinstance(firewall, dict):
        return ["firewall: must be a mapping (enabled, ssh_sources)"]
    errors = [f"firewall:{k}: unknown key (enabled, ssh_sources)" for k in firewall if k not in ("enabled", "ssh_sources")]
    if "enabled" in firewall and not isinstance(firewall["enabled"], bool):
        errors.append("firewall:enabled: must be true or false")
    sources = firewall.get("ssh_sources", [])
    if not isinstance(sources, list):
        return [*errors, "firewall:ssh_sources: must be a list of addresses or networks (empty: anyone)"]
    for index, source in enumerate(sources):
        try:
            _network(source)
        except ValueError:
            errors.append(f"firewall:ssh_sources:{index}: {source!r} is not an address or network (e.g. 192.0.2.0/24)")
    return errors
