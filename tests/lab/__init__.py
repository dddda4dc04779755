"""Lab test hosts (systemd-nspawn over a cached Debian base image): see hosts.py and README.md.

cluster.py adds a salt-master plus minion hosts (Cluster); it imports Salt only when used.
"""

from .cluster import Cluster, Events, ensure_minion_layer, minion_layer_key
from .hosts import (
    CommandError,
    Host,
    LabError,
    Network,
    cleanup_stale,
    ensure_base,
    missing_requirements,
    session_resources,
)

__all__ = [
    "Cluster",
    "CommandError",
    "Events",
    "Host",
    "LabError",
    "Network",
    "cleanup_stale",
    "ensure_base",
    "ensure_minion_layer",
    "minion_layer_key",
    "missing_requirements",
    "session_resources",
]
