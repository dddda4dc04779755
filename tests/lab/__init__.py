"""Lab test hosts (systemd-nspawn over a cached Debian base image): see hosts.py and README.md."""

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
    "CommandError",
    "Host",
    "LabError",
    "Network",
    "cleanup_stale",
    "ensure_base",
    "missing_requirements",
    "session_resources",
]
