"""The serving slot of ``_modules/gunicorn_slots.py``: a socket link, adopted from an older upstream file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.unit.conftest import Utils, load

gunicorn_slots = load("_modules/gunicorn_slots.py")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "srv" / "demo" / "shared" / "run").mkdir(parents=True)
    return tmp_path / "srv" / "demo"


@pytest.fixture
def configure_loader_modules(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(gunicorn_slots, "LEGACY_UPSTREAM_DIR", str(tmp_path / "nginx"))
    return {gunicorn_slots: {"__salt__": {"django_manage.project_root": lambda project: str(root)}, "__utils__": Utils()}}


def test_the_serving_slot_is_the_one_the_socket_link_names(root: Path) -> None:
    assert gunicorn_slots._serving("demo") is None
    (root / "shared" / "run" / "gunicorn.sock").symlink_to("gunicorn-b.sock")
    assert gunicorn_slots._serving("demo") == "b"


def test_a_slot_named_by_an_older_upstream_file_is_adopted_once(root: Path, tmp_path: Path) -> None:
    (tmp_path / "nginx").mkdir()
    legacy = tmp_path / "nginx" / "demo-upstream.conf"
    legacy.write_text(f"upstream demo_gunicorn {{\n    server unix:{root}/shared/run/gunicorn-b.sock fail_timeout=0;\n}}\n")
    assert gunicorn_slots.adopt("demo", test=True) == "b"
    assert gunicorn_slots._serving("demo") is None, "test=True changes nothing"
    assert gunicorn_slots.adopt("demo") == "b"
    assert gunicorn_slots._serving("demo") == "b"
    assert gunicorn_slots.adopt("demo") is None


def test_nothing_is_adopted_on_a_new_server() -> None:
    assert gunicorn_slots.adopt("demo") is None
    assert gunicorn_slots._serving("demo") is None


def test_listen_queue_counts_connections_not_yet_accepted(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    assert gunicorn_slots._listen_queue(path) is None
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(8)
        assert gunicorn_slots._listen_queue(path) == 0
        clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        for client in clients:
            client.connect(path)
        assert gunicorn_slots._listen_queue(path) == 3
        server.accept()[0].close()
        assert gunicorn_slots._listen_queue(path) == 2
        for client in clients:
            client.close()
