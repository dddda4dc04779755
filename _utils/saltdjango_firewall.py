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


def _families(sources: set[str]) -> dict[str, list[str]]:
    """``sources`` split by address family for nftables, sorted."""
    networks = sorted({_network(s) for s in sources}, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return {
        "v4": [_text(n) for n in networks if n.version == 4],
        "v6": [_text(n) for n in networks if n.version == 6],
    }


def openings(
    roles: list[str],
    cluster: bool,
    ports: dict[str, int],
    peers: dict[str, list[str]],
    ssh_ports: list[int],
    ssh_sources: list[str] | None,
) -> list[dict[str, Any]]:
    """The ports this server opens: ``[{port, why, anyone, v4, v6}]``, one rule
    per port (two roles on one server may serve the same one), by port.

    ``ports``: ``http``, ``https``, ``web`` (an app server's Nginx behind the
    load balancers), ``db``, ``cache``, ``storage``. ``peers``: the trusted
    addresses of the servers holding each role. ``ssh_ports``: SSH's, always
    open (to ``ssh_sources``, None: anyone), so that no ruleset locks out the
    operator. A port whose users have no trusted address yet is opened to nobody.
    """
    wanted: dict[int, dict[str, Any]] = {}

    def add(port: int, sources: list[str] | None, why: str) -> None:
        rule = wanted.setdefault(int(port), {"anyone": False, "sources": set(), "why": []})
        rule["anyone"] = rule["anyone"] or sources is None
        rule["sources"].update(sources or [])
        if why not in rule["why"]:
            rule["why"].append(why)

    def serve(port_name: str, users: tuple[str, ...] | None, why: str) -> None:
        sources = None if users is None else sorted({a for role in users for a in peers.get(role, [])})
        if sources is None or sources:
            add(ports[port_name], sources, why)

    for port in ssh_ports:
        add(port, ssh_sources, "SSH")
    if not cluster:
        serve("http", None, "a single server's Nginx")
        serve("https", None, "a single server's Nginx")
    else:
        for role in roles:
            for port_name, users in SERVED.get(role, ()):
                serve(port_name, users, f"{role}: {port_name} for {'anyone' if users is None else ', '.join(users)}")
        if "web" in roles and peers.get("lb"):
            serve("web", ("lb",), "web: the load balancers' requests")
        elif "web" in roles:
            # A cluster without load balancers: each web server faces the public itself.
            serve("http", None, "web: the public (no load balancer)")
            serve("https", None, "web: the public (no load balancer)")
    return [
        {"port": port, "why": "; ".join(rule["why"]), "anyone": rule["anyone"], **_families(rule["sources"])}
        for port, rule in sorted(wanted.items())
    ]


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
