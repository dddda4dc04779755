"""Which projects ``_modules/django_removed.py`` finds gone from pillar."""

from __future__ import annotations

from pathlib import Path

from tests.unit.conftest import load

django_removed = load("_modules/django_removed.py")


def test_only_files_salt_django_wrote_for_projects_pillar_lacks(tmp_path: Path) -> None:
    (tmp_path / "demo.conf").write_text("# Managed by salt-django: demo.\nserver {}\n")
    (tmp_path / "gone.conf").write_text("# Managed by salt-django: gone.\nserver {}\n")
    (tmp_path / "old.conf").write_text("; Managed by salt-django: old: two Gunicorn slots\n[program:old-gunicorn-a]\n")
    (tmp_path / "handmade.conf").write_text("server { listen 8000; }\n")
    (tmp_path / "Bad-Name.conf").write_text("# Managed by salt-django: x.\n")
    (tmp_path / "gone.conf.bak").write_text("# Managed by salt-django: gone.\n")
    found = django_removed.leftovers(["demo"], str(tmp_path))
    assert found == {"gone": str(tmp_path / "gone.conf"), "old": str(tmp_path / "old.conf")}
    assert django_removed.leftovers(["demo"], str(tmp_path / "missing")) == {}
