"""The repository stands alone: no file names a path outside it."""

from __future__ import annotations

import re
import subprocess

from tests.unit.conftest import ROOT

#: What a file outside the repository looks like from inside it.
OUTSIDE = re.compile(
    r"\.\./shared\b|\bDESIGN\.md\b|/work/(main|shared)\b" + ("" if (ROOT / "Vagrantfile").exists() else r"|\bVagrantfile\b")
)


def test_no_file_names_a_path_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    names = [name for name in listed.stdout.splitlines() if name != "tests/unit/test_repository.py"]
    found = []
    for name in names:
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{number}: {line.strip()}" for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert names and not found, "\n".join(found)
