"""The off-host backup copies of ``_modules/django_db.py``: sealed so that
only the project's key and the backup's own name open them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.conftest import load

django_db = load("_modules/django_db.py")
KEY, OTHER = b"k" * 32, b"o" * 32
NAME = "20261129T003405123456Z-scheduled.dump"


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    path = tmp_path / NAME
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))  # more than one chunk, not a whole number of them
    return path


def test_a_copy_opens_with_its_key_and_name_only(tmp_path: Path, dump: Path) -> None:
    sealed, opened = tmp_path / "copy.sdbk", tmp_path / "opened.dump"
    django_db._encrypt_file(KEY, str(dump), str(sealed), NAME)
    assert oct(sealed.stat().st_mode & 0o777) == "0o600"
    assert dump.read_bytes()[:4096] not in sealed.read_bytes()
    django_db._decrypt_file(KEY, str(sealed), str(opened), NAME)
    assert opened.read_bytes() == dump.read_bytes()
    for key, name in ((OTHER, NAME), (KEY, "20261129T003405123456Z-other.dump")):
        opened.unlink(missing_ok=True)
        with pytest.raises(ValueError, match="does not decrypt"):
            django_db._decrypt_file(key, str(sealed), str(opened), name)
        assert not opened.exists(), "nothing half-decrypted is left"


def test_an_altered_copy_is_refused(tmp_path: Path, dump: Path) -> None:
    sealed, opened = tmp_path / "copy.sdbk", tmp_path / "opened.dump"
    django_db._encrypt_file(KEY, str(dump), str(sealed), NAME)
    data = bytearray(sealed.read_bytes())
    data[2 * (1 << 20)] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="altered"):
        django_db._decrypt_file(KEY, str(sealed), str(opened), NAME)
    sealed.write_bytes(b"not a copy")
    with pytest.raises(ValueError, match="not a salt-django backup copy"):
        django_db._decrypt_file(KEY, str(sealed), str(opened), NAME)


@pytest.mark.parametrize("copy", ["../../etc/passwd.sdbk", f"{NAME}", "x.dump.sdbk", f"{NAME}.sdbk/.."])
def test_only_copy_names_are_fetched(copy: str) -> None:
    assert django_db.fetch_copy("demo", copy, 1, "0" * 32)["ok"] is False


def test_a_refused_restore_fails_salt_calls_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    context: dict = {}
    monkeypatch.setattr(django_db, "__context__", context, raising=False)
    outcome = django_db.restore("demo", "/etc/passwd", confirm=True)
    assert outcome["ok"] is False and "is not a backup of demo" in outcome["comment"]
    assert context["retcode"] == 1
