#!py
"""Roles by minion id, from topology.yaml (beside this file).

A minion cannot choose its roles: grains are set by the minion itself,
pillar by the master (or, masterless, by this repository). Masterless
(`make deploy`, salt-call --local): one server, every role but lb. Every
server of a cluster publishes its private address through the mine; the
others find it with mine.get (_modules/saltdjango.py: addresses); the rules
are _utils/saltdjango_topology.py.
"""

import importlib.util
import os


def _rules():
    """_utils/saltdjango_topology.py of this repository: the one rule for roles."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils", "saltdjango_topology.py")
    spec = importlib.util.spec_from_file_location("salt_django_pillar_topology", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run():
    here = os.path.dirname(os.path.realpath(__file__))
    rules = _rules()
    topology = rules.read_topology(here, __opts__["id"], __opts__.get("__role") == "minion")
    # A master whose servers all share another private address (VMs behind
    # one NAT) names their network in its config instead: the Vagrantfile does.
    hosts, network = topology["hosts"], __opts__.get("salt_django_private_network") or topology["private_network"]
    pillar = {
        "topology": {"hosts": hosts, "private_network": network},
        "salt_django": {"roles": topology["roles"]},
    }
    if hosts:
        pillar["mine_functions"] = rules.mine_functions(network)
    return pillar
