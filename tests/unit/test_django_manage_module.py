"""Parsing of ``manage.py`` output in ``_modules/django_manage.py``."""

from __future__ import annotations

from tests.unit.conftest import load

django_manage = load("_modules/django_manage.py")

CHECK_OUTPUT = """System check identified some issues:

WARNINGS:
?: (security.W004) You have not set a value for the SECURE_HSTS_SECONDS setting.
?: (security.W008) Your SECURE_SSL_REDIRECT setting is not set to True.

System check identified 2 issues (0 silenced).
"""


def test_check_output_becomes_check_ids() -> None:
    issues = django_manage._parse_check_output(CHECK_OUTPUT)
    assert [(i["id"], i["level"]) for i in issues] == [("security.W004", "WARNING"), ("security.W008", "WARNING")]
    assert issues[0]["message"].startswith("You have not set a value for the SECURE_HSTS_SECONDS")


def test_errors_and_object_names_are_kept() -> None:
    text = "ERRORS:\nvisits.Visit: (models.E001) something broke\n"
    assert django_manage._parse_check_output(text) == [
        {"id": "models.E001", "level": "ERROR", "object": "visits.Visit", "message": "something broke"}
    ]


def test_clean_check_has_no_issues() -> None:
    assert django_manage._parse_check_output("System check identified no issues (0 silenced).\n") == []
