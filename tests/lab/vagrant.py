"""The Vagrantfile without a hypervisor: what Vagrant reads from it and what
its provisioners would run, through Vagrant's own code (``vagrant_replay.rb``
beside this file, on Debian's vagrant package).

* :func:`machines`: every machine with its private address and provisioners;
* :func:`provision`: a machine's provisioners, replayed. Each guest command
  (upload, sudo, test) goes to ``answer``: :func:`in_host` runs it in a lab
  host, :class:`Recorder` only records it. Returns the commands in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .hosts import REPO_ROOT, Host, LabError

REPLAY = Path(__file__).with_name("vagrant_replay.rb")
#: (ok, output) for one guest command.
Answer = Callable[[dict[str, Any]], tuple[bool, str]]


def vagrant_env(state: Path, **extra: str) -> dict[str, str]:
    """Vagrant's environment with its state (and the minion keys the
    Vagrantfile makes) under ``state``, not in ~/.vagrant.d or the repository."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state),
        "VAGRANT_HOME": str(state / "home"),
        "VAGRANT_DOTFILE_PATH": str(state / "dot"),
        **extra,
    }


def machines(env: Mapping[str, str], root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{machine: {"ip", "hostname", "provisioners": [...]}}`` in the Vagrantfile's order."""
    proc = subprocess.run(
        ["ruby", str(REPLAY), "machines"], cwd=root, env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode:
        raise LabError(f"the Vagrantfile in {root} does not load:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def provision(
    machine: str, answer: Answer, env: Mapping[str, str], only: Sequence[str] = (), root: Path = REPO_ROOT, timeout: float = 1200
) -> list[dict[str, Any]]:
    """Replay ``machine``'s provisioners (``only`` those named), each guest
    command answered by ``answer``; return the commands in order. Raises
    LabError with Vagrant's output when a provisioner fails."""
    # Vagrant's own output goes to a file: a pipe nobody reads would stall it.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            ["ruby", str(REPLAY), "provision", machine, *only],
            cwd=root,
            env=dict(env),
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdin and proc.stdout
        asked = []
        for line in proc.stdout:
            request = json.loads(line)
            asked.append(request)
            ok, output = answer(request)
            proc.stdin.write(json.dumps({"ok": ok, "output": output}) + "\n")
            proc.stdin.flush()
        proc.stdin.close()
        proc.wait(timeout)
        if proc.returncode:
            log.seek(0)
            raise LabError(f"vagrant provision {machine} failed:\n{log.read()[-4000:]}")
    return asked


def in_host(host: Host) -> Answer:
    """Answer guest commands in ``host``, as Vagrant's SSH communicator would in a VM."""

    def answer(request: dict[str, Any]) -> tuple[bool, str]:
        if request["op"] == "upload":
            host.run(["sh", "-c", 'cat > "$1"', "sh", request["dst"]], input=Path(request["src"]).read_text())
            return True, ""
        done = host.run(request["cmd"], check=False, timeout=900)
        return done.returncode == 0, done.stdout + done.stderr if request["op"] == "sudo" else ""

    return answer


class Recorder:
    """Answer guest commands as a fresh VM would, running none: nothing is
    installed until the bootstrap script has run, and every command succeeds."""

    def __init__(self) -> None:
        self.bootstrapped = False

    def __call__(self, request: dict[str, Any]) -> tuple[bool, str]:
        if request["op"] == "test":
            return request["cmd"].startswith("which ") and self.bootstrapped, ""
        if request["op"] == "sudo" and "/bootstrap_salt.sh " in request["cmd"]:
            self.bootstrapped = True
        return True, ""
