"""``saltdjango.validated``: fails naming each bad key, and passes with a Salt
warning for each key the pillar still uses the older way."""

from __future__ import annotations

import pytest

from tests.unit.conftest import load

state = load("_states/saltdjango.py")
cli = load("scripts/salt_django.py")
DEPRECATED = "projects:demo:gunicorn is deprecated: move its keys (graceful_timeout, timeout, workers) under projects:demo:app_server"


@pytest.fixture
def configure_loader_modules() -> dict:
    return {state: {"__salt__": {}}}


def _validated(errors: list[str], deprecated: list[str]) -> dict:
    state.__salt__ = {"saltdjango.validate": lambda: errors, "saltdjango.deprecations": lambda: deprecated}
    return state.validated("salt-django-pillar-validated")


def test_an_invalid_pillar_fails_naming_each_key() -> None:
    ret = _validated(["projects:demo:app_server:workers: must be a whole number from 1 to 256"], [DEPRECATED])
    assert (
        ret["result"] is False
        and ret["comment"] == "invalid pillar: projects:demo:app_server:workers: must be a whole number from 1 to 256"
    )
    assert "warnings" not in ret


def test_a_deprecated_key_passes_with_a_warning_that_make_deploy_prints() -> None:
    ret = _validated([], [DEPRECATED])
    assert ret["result"] is True and ret["changes"] == {} and ret["warnings"] == [DEPRECATED]
    highstate = {
        "saltdjango_|-salt-django-pillar-validated_|-salt-django-pillar-validated_|-validated": {**ret, "__run_num__": 0},
        "file_|-other_|-/etc/x_|-managed": {"result": True, "changes": {}, "comment": "", "__id__": "other", "__run_num__": 1},
    }
    assert cli.warned(highstate) == [("salt-django-pillar-validated", DEPRECATED)]


def test_a_current_pillar_passes_without_warnings() -> None:
    assert _validated([], []) == {"name": "salt-django-pillar-validated", "result": True, "changes": {}, "comment": "pillar is valid"}
