"""The serving slot of ``_modules/app_slots.py``: socket links per protocol, adopted from an older salt-django's names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.conftest import Utils, load

app_slots = load("_modules/app_slots.py")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "srv" / "demo" / "shared" / "run").mkdir(parents=True)
    return tmp_path / "srv" / "demo"


@pytest.fixture
def configure_loader_modules(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(app_slots, "LEGACY_UPSTREAM_DIR", str(tmp_path / "nginx"))
    return {app_slots: {"__salt__": {"django_manage.project_root": lambda project: str(root)}, "__utils__": Utils()}}


def _serving(project: str = "demo") -> tuple[str, str, bool] | None:
    found = app_slots._serving(project)
    return (found[0].program, found[1], found[0].legacy) if found else None


def test_the_serving_slot_is_the_one_the_link_of_its_protocol_names(root: Path) -> None:
    run = root / "shared" / "run"
    assert _serving() is None
    (run / "http.sock").symlink_to("app-b.sock")
    assert _serving() == ("demo-app-b", "http", False)
    (run / "uwsgi.sock").symlink_to("app-a.sock")
    assert _serving() == ("demo-app-b", "http", False), "uwsgi.sock is not used before uwsgi.active exists"
    (run / "uwsgi.active").write_text("")
    assert _serving() == ("demo-app-a", "uwsgi", False)


def test_an_older_salt_djangos_link_is_adopted_once_and_keeps_its_program(root: Path) -> None:
    run = root / "shared" / "run"
    (run / "gunicorn.sock").symlink_to("gunicorn-b.sock")
    assert _serving() == ("demo-gunicorn-b", "http", True)
    assert app_slots.adopt("demo", test=True) == "b"
    assert not (run / "http.sock").is_symlink(), "test=True changes nothing"
    assert app_slots.adopt("demo") == "b"
    assert (run / "http.sock").readlink() == Path("gunicorn-b.sock")
    assert _serving() == ("demo-gunicorn-b", "http", True)
    assert app_slots.adopt("demo") is None


def test_a_slot_named_by_an_even_older_upstream_file_is_adopted(root: Path, tmp_path: Path) -> None:
    (tmp_path / "nginx").mkdir()
    legacy = tmp_path / "nginx" / "demo-upstream.conf"
    legacy.write_text(f"upstream demo_gunicorn {{\n    server unix:{root}/shared/run/gunicorn-b.sock fail_timeout=0;\n}}\n")
    assert app_slots.adopt("demo") == "b"
    assert _serving() == ("demo-gunicorn-b", "http", True)


def test_nothing_is_adopted_on_a_new_server() -> None:
    assert app_slots.adopt("demo") is None
    assert _serving() is None


def test_slot_releases_holds_what_both_namings_link(root: Path) -> None:
    (root / "slots").mkdir()
    (root / "slots" / "a").symlink_to("../releases/r1")
    (root / "slots" / "app-b").symlink_to("../releases/r2")
    assert app_slots.slot_releases("demo") == ["r1", "r2"]
    assert app_slots.slot_release("demo", "b") == "r2"
    assert app_slots.slot_release("demo", "a") is None, "slots/a is an older salt-django's slot, not app-a"


def test_a_switch_off_an_older_slot_moves_its_link_and_the_next_removes_it(root: Path) -> None:
    run = root / "shared" / "run"
    (run / "gunicorn.sock").symlink_to("gunicorn-a.sock")
    app_slots.adopt("demo")
    legacy, new = app_slots.Slot("demo", "a", True), app_slots.Slot("demo", "b")
    app_slots._point("demo", new, "http", legacy)
    assert (run / "http.sock").readlink() == (run / "gunicorn.sock").readlink() == Path("app-b.sock")
    app_slots._point("demo", app_slots.Slot("demo", "a"), "uwsgi", new)
    assert (run / "uwsgi.sock").readlink() == Path("app-a.sock") and (run / "uwsgi.active").is_file()
    assert not (run / "gunicorn.sock").is_symlink()
    app_slots._point("demo", new, "http", app_slots.Slot("demo", "a"))
    assert not (run / "uwsgi.active").exists(), "back to http: Nginx leaves uwsgi.sock once http.sock is set"
    assert (run / "http.sock").readlink() == Path("app-b.sock")


def test_an_update_names_the_projects_groups_and_those_gone_but_never_an_older_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "demo.conf"
    conf.write_text("[program:demo-app-a]\ncommand=x\n\n[program:demo-app-b]\ncommand=x\n")
    status = "demo-gunicorn-a RUNNING pid 1\ndemo-worker:demo-worker-0 RUNNING pid 2\nshop-worker RUNNING pid 3\n"
    monkeypatch.setattr(app_slots, "_ctl", lambda *args: subprocess.CompletedProcess(args, 0, status, ""))
    assert app_slots.program_groups("demo", str(conf)) == ["demo-app-a", "demo-app-b", "demo-worker"]


def test_a_project_that_left_pillar_unloads_all_its_programs_and_no_other_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = "demo-gunicorn-a RUNNING pid 1\ndemo-beat RUNNING pid 2\nshop-gunicorn-b RUNNING pid 3\nshop-app-a RUNNING pid 4\n"
    monkeypatch.setattr(app_slots, "_ctl", lambda *args: subprocess.CompletedProcess(args, 0, status, ""))
    assert app_slots.program_groups("demo", str(tmp_path / "gone.conf")) == ["demo-beat", "demo-gunicorn-a"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (("a", "http"), ("b", "http-port")),
        (("b", "http-port"), ("a", "http-port")),
        (("a", "http-port"), ("b", "http-port")),
        (("b", "http-port"), ("a", "uwsgi")),
        (("a", "uwsgi"), ("b", "http-port")),
        (("a", "http-port"), ("b", "http")),
    ],
)
def test_every_step_of_a_switch_leaves_nginx_on_the_old_slot_or_the_new_one(
    old: tuple[str, str], new: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Nginx would pick (``_serving``, in proxy.conf's order) after each file operation of ``_point``."""
    start = app_slots.Slot("demo", old[0])
    app_slots._point("demo", start, old[1], None, 24100)
    assert _serving() == (start.program, old[1], False)
    seen = []
    for name in ("replace", "unlink"):
        real = getattr(app_slots.os, name)

        def spy(*args: str, _real=real) -> None:
            _real(*args)
            seen.append(_serving())

        monkeypatch.setattr(app_slots.os, name, spy)
    app_slots._point("demo", app_slots.Slot("demo", new[0]), new[1], start, 24100)
    monkeypatch.undo()
    port = {"slot": new[0], "port": 24100 + "ab".index(new[0])} if new[1] == "http-port" else None
    assert app_slots.served_port("demo") == port
    changes = [state for index, state in enumerate(seen) if index == 0 or seen[index - 1] != state]
    assert [s for s in changes if s != (start.program, old[1], False)] == [(f"demo-app-{new[0]}", new[1], False)], seen
    assert seen[-1] == (f"demo-app-{new[0]}", new[1], False)


def test_mod_wsgi_refuses_a_virtualenv_of_another_python_than_the_one_it_embeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "mod_wsgi.so"
    module.write_bytes(b"\x7fELF...libpython3.11.so.1.0\x00...")
    monkeypatch.setattr(app_slots, "MOD_WSGI", str(module))
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nimplementation = CPython\nversion_info = 3.12.7\n")
    problem = app_slots._runtime_problem({"kind": "mod_wsgi"}, str(venv))
    assert problem and "virtualenv is Python 3.12 and Debian's mod_wsgi runs Python 3.11" in problem
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n")
    assert app_slots._runtime_problem({"kind": "mod_wsgi"}, str(venv)) is None
    assert app_slots._runtime_problem({"kind": "gunicorn"}, str(tmp_path / "none")) is None
    monkeypatch.setattr(app_slots, "MOD_WSGI", str(tmp_path / "missing.so"))
    assert "is libapache2-mod-wsgi-py3 installed?" in app_slots._runtime_problem({"kind": "mod_wsgi"}, str(venv))
