"""Returns of a job that the master published, read so that a lost one
costs seconds, not the job's whole timeout.

Salt's event bus can drop a return that the master wrote to its job cache
(saltstack/salt#57954, "the CLI waits for a return already received"):
waiting for its event then lasts until the timeout. So the minions are
asked every ``interval`` seconds whether the job still runs (a long build
keeps the wait going), and a return the events missed is read from the
job cache. Used by the rollout runner and by the test lab's master.
"""

from __future__ import annotations

from typing import Any


def collect(client: Any, pub: dict[str, Any], tgt: Any, tgt_type: str, interval: float, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """``{minion: {"ret", "retcode"}}`` of the job ``pub`` (``LocalClient.run_job``'s
    answer) for every targeted minion that returned; a silent one is absent."""
    ret: dict[str, dict[str, Any]] = {}
    for chunk in client.get_cli_event_returns(pub["jid"], pub["minions"], interval, tgt, tgt_type, **kwargs):
        for minion, data in (chunk or {}).items():
            if isinstance(data, dict) and not data.get("failed"):
                ret[minion] = data
    missing = set(pub["minions"]) - set(ret)
    if missing:
        cached = client.returners[f"{client.opts['master_job_cache']}.get_jid"](pub["jid"]) or {}
        for minion in missing & set(cached):
            ret[minion] = {"ret": cached[minion].get("return"), "retcode": cached[minion].get("retcode", 0)}
    return ret
