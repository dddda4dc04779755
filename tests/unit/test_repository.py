"""The repository stands alone and keeps its own rules: no file names a path
outside it, each default is defined once, every command says how to call it."""

from __future__ import annotations

import ast
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


#: Code reading a setting straight from pillar with a default of its own (an
#: empty one, for a key that has none, such as a secret, is no default).
OWN_DEFAULT = re.compile(r"""(pillar\.get["']?\]?|_pillar)\(\s*f?["'][\w:{}]+["']\s*,(?!\s*(?:None\b|\{\}|\[\]|""|''))""")


def test_modules_take_each_project_default_from_defaults_yaml() -> None:
    """Every setting has its default once, in a defaults.yaml of the state tree:
    modules, states, the runner and SLS files read merged configs
    (saltdjango.project, app_settings, map.jinja), never pillar with a default
    of their own."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for pattern in ("_modules/*.py", "_states/*.py", "_runners/*.py", "salt/**/*.sls", "salt/**/*.jinja")
        for path in sorted(ROOT.glob(pattern))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OWN_DEFAULT.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_public_function_has_a_cli_example() -> None:
    """What ``salt`` or ``salt-run`` can call says how, the way Salt's own modules do;
    helpers that only their module calls are private."""
    missing = [
        f"{path.relative_to(ROOT)}: {node.name}"
        for folder in ("_modules", "_runners")
        for path in sorted((ROOT / folder).glob("*.py"))
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and "CLI Example:\n\n.. code-block::" not in (ast.get_docstring(node) or "")
    ]
    assert not missing, "no CLI Example:\n" + "\n".join(missing)


def test_the_quick_start_prerequisites_are_in_the_lab_image_repo() -> None:
    """The tests run the README's prerequisite line in lab hosts, offline: what
    it installs must be a ``repo:`` package of the lab image, not a ``base:`` one
    (a fresh cloud server does not have it)."""
    from tests.integration.helpers import quick_start_prerequisite

    line = quick_start_prerequisite()
    installed = line.split("apt-get install -y", 1)[1].split("#", 1)[0].split()
    sections: dict[str, set[str]] = {}
    for entry in (ROOT / "tests" / "lab" / "packages.txt").read_text().splitlines():
        section, _, package = entry.split("#", 1)[0].partition(":")
        if package.strip():
            sections.setdefault(section.strip(), set()).add(package.strip())
    assert installed, line
    assert set(installed) <= sections["repo"] and not set(installed) & sections["base"], line
