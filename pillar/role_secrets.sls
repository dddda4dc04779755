#!py
"""The secrets (generated.sls, then local.sls, from the other pillar roots),
cut to what this minion's roles need, by _utils/saltdjango_topology.py
(role_view): app and worker servers get their projects' secrets, db the
database passwords, cache the Redis passwords, and whatever ends TLS (the
load balancer, or the web server where there is none) the TLS material.
The roles come from topology.yaml as pillar/topology.sls reads them, so the
targeting cannot drift from the topology.

(Not named secrets.sls: Salt's py renderer registers the file as a module
under its name, which would shadow Python's own ``secrets``.)
"""

import importlib.util
import os


def _rules():
    """_utils/saltdjango_topology.py of this repository: roles and the secrets each may see."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils", "saltdjango_topology.py")
    spec = importlib.util.spec_from_file_location("salt_django_pillar_topology", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run():
    here = os.path.dirname(os.path.realpath(__file__))
    rules = _rules()
    topology = rules.read_topology(here, __opts__["id"], __opts__.get("__role") == "minion")
    has_lb = any("lb" in ((spec or {}).get("roles") or []) for spec in topology["hosts"].values())
    roots = [root for root in __opts__["pillar_roots"].get(saltenv, []) if os.path.realpath(root) != here]
    return rules.role_view(rules.read_secret_files(roots), topology["roles"], has_lb)
