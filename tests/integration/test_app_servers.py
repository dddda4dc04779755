"""App server kinds on one server: an upgrade from the Gunicorn-only names, then uWSGI, Apache + mod_wsgi and Uvicorn.

One booted test host is first deployed by salt-django as it was before
app server kinds (the commit ``LEGACY_COMMIT`` of this repository, programs
``demo-gunicorn-a/b``), then, under load each time:

1. upgraded in place to this tree (programs ``demo-app-a/b``);
2. switched to uWSGI by pillar (``app_server: {kind: uwsgi}``), released,
   rolled back, refused a broken release;
3. switched to Apache + mod_wsgi (behind Nginx, on loopback ports),
   released, and rolled back while a 20-s request runs; a change of its
   port while it serves is refused;
4. switched to Uvicorn workers (ASGI): an async view, and a websocket open
   during a release, which the old slot keeps echoing until
   ``drain_timeout``, then closes with 1001; then a rollback.

Every switch is a release: the load (new HTTPS connections one after
another, through Nginx) sees no failed request, and a second apply changes
nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import DOMAIN, REPO_IN_HOST, Load, edit_in_host, fetch, make, repo_host, run_make
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The last commit before app server kinds: Gunicorn's names everywhere.
LEGACY_COMMIT = "d91b089e6e46e53f13f583f41a3cddc0d8c7d15c"
LEGACY_IN_HOST = "/root/salt-django-legacy"
#: The demo's secrets in the host's local pillar (under projects:demo).
SECRETS = """\
    secrets:
      DB_PASSWORD: appServersDbPassword0123
      REDIS_PASSWORD: appServersRedisPassword0123
"""


def _pillar(host: Host, app_server: str = "") -> None:
    """The host's local pillar: the secrets, and ``app_server`` if given (YAML flow mapping)."""
    text = "projects:\n  demo:\n" + SECRETS
    if app_server:
        text += f"    app_server: {app_server}\n"
    host.run(["sh", "-c", "umask 077 && cat > /etc/salt-django/pillar/local.sls"], input=text)


def _legacy_tree(workdir: Path) -> Path:
    """This repository at ``LEGACY_COMMIT``, unpacked on this machine."""
    tree = workdir / "legacy-tree"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", LEGACY_COMMIT], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _programs(host: Host) -> dict[str, str]:
    """supervisord's demo programs and their states."""
    out = host.run("supervisorctl status", check=False).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("demo-")}


def _link(host: Host, name: str) -> str | None:
    result = host.run(f"readlink /srv/demo/shared/run/{name}", check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _serves_the_site(host: Host) -> None:
    """The demo page, the admin, a static file and /healthz answer through Nginx."""
    page = fetch(host, f"https://{DOMAIN}/")
    assert page.status == 200 and "salt-django demo" in page.body
    assert fetch(host, f"https://{DOMAIN}/admin/login/").status == 200
    css = re.search(r'href="(/static/visits/site\.[0-9a-f]{12}\.css)"', page.body)
    assert css and fetch(host, f"https://{DOMAIN}{css.group(1)}").status == 200
    assert json.loads(fetch(host, f"http://{DOMAIN}/healthz").body)["status"] == "ok"


TEMPLATE = "example/visits/templates/visits/index.html"
V1, V2 = "<h1>salt-django demo</h1>", "<h1>salt-django demo v2</h1>"
#: A request that outlasts a rollback's switch: the old slot must let it finish.
SLOW = f"curl -sk --resolve {DOMAIN}:443:127.0.0.1 -w ' %{{http_code}}' 'https://{DOMAIN}/slow/?seconds=20'"


def _curl_answer(host: Host, path: str, timeout: float) -> str:
    """What a background ``curl -w ' %{http_code}'`` wrote to ``path``, once it ends with the status."""
    deadline = time.monotonic() + timeout
    while not re.search(r" \d{3}$", text := host.run(f"cat {path}", check=False).stdout):
        assert time.monotonic() < deadline, f"no answer in {timeout} s: {text!r}"
        time.sleep(0.5)
    return text


def _release_and_roll_back_under_load(host: Host, slow: bool = False) -> None:
    """Release the demo's v2, then roll back, each under load with no failed request.
    With ``slow``, a 20-s request that began before the rollback ends with 200."""
    edit_in_host(host, TEMPLATE, V1, V2)
    with Load(host) as load:
        make(host)
    assert load.result["failed"] == 0 and "salt-django demo v2" in fetch(host, f"https://{DOMAIN}/").body, load.result
    if slow:
        host.run(f"rm -f /tmp/slow.out && nohup {SLOW} > /tmp/slow.out 2>&1 &")
        time.sleep(2)
    with Load(host) as load:
        code, output = run_make(host, "rollback")
    assert code == 0, output[-2000:]
    assert load.result["failed"] == 0 and "demo v2" not in fetch(host, f"https://{DOMAIN}/").body, load.result
    if slow:
        answer = _curl_answer(host, "/tmp/slow.out", 40)
        assert answer.startswith("slept 20 s") and answer.endswith(" 200"), answer
    edit_in_host(host, TEMPLATE, V2, V1)


def _switch_under_load(host: Host, app_server: str) -> dict:
    """Set ``app_server`` in pillar and ``make deploy`` under load, which must see no failed request: the load's result."""
    _pillar(host, app_server)
    with Load(host) as load:
        make(host)
    assert load.result["sent"] > 30 and load.result["failed"] == 0, load.result
    return load.result


@pytest.fixture(scope="module")
def host(lab_base: Path, lab_workdir: Path) -> Iterator[Host]:
    with repo_host("appservers", lab_base, lab_workdir) as server:
        server.run(["install", "-d", "-m", "0700", "/etc/salt-django/pillar"])
        _pillar(server)
        server.copy_in(_legacy_tree(lab_workdir / "appservers-legacy"), LEGACY_IN_HOST)
        result = server.run(f"cd {LEGACY_IN_HOST} && make deploy", check=False, timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        yield server


def test_a_server_with_gunicorns_names_upgrades_in_place_with_no_failed_request(host: Host) -> None:
    before = _programs(host)
    assert before.get("demo-gunicorn-a") == "RUNNING" and _link(host, "gunicorn.sock") == "gunicorn-a.sock", before
    with Load(host) as load:
        deploy = make(host)
    assert load.result["sent"] > 30 and load.result["failed"] == 0, load.result
    programs = _programs(host)
    assert programs.get("demo-app-b") == "RUNNING", programs
    assert not any("gunicorn" in name for name in programs), "the older programs are gone"
    assert _link(host, "http.sock") == "app-b.sock"
    assert not host.path("/srv/demo/bin/gunicorn-run").exists()
    assert "switch" in deploy.output or deploy.changed > 0
    _serves_the_site(host)
    assert make(host).changed == 0, "a second apply changes nothing"


def test_switching_to_uwsgi_is_a_release_with_no_failed_request(host: Host) -> None:
    result = _switch_under_load(host, "{kind: uwsgi, workers: 2, max_requests: 500}")
    assert len(result["releases"]) == 2, "the release was built again, for uWSGI"
    assert _link(host, "uwsgi.sock") == "app-a.sock" and _link(host, "http.sock") is None
    processes = host.run("ps -eo args=").stdout
    uwsgi = re.findall(r"/venv/bin/uwsgi .*--socket /srv/demo/shared/run/app-a\.sock .*--processes 2 .*--max-requests 500 ", processes)
    assert len(uwsgi) == 3, processes  # the master and its two workers
    assert "gunicorn" not in processes
    _serves_the_site(host)
    assert make(host).changed == 0, "a second apply changes nothing"


def test_under_uwsgi_a_release_and_a_rollback_drop_no_request_and_a_broken_one_never_serves(host: Host) -> None:
    _release_and_roll_back_under_load(host)
    edit_in_host(host, "example/visits/views.py", "import ", "import broken(\nimport ")
    with Load(host) as load:
        broken = make(host, check=False)
    assert broken.returncode != 0 and "did not become healthy" not in broken.output, broken.output[-3000:]
    assert load.result["failed"] == 0 and len(load.result["releases"]) == 1, load.result
    edit_in_host(host, "example/visits/views.py", "import broken(\nimport ", "import ")


def test_switching_to_mod_wsgi_is_a_release_apache_serves_without_the_secrets_in_its_environment(host: Host) -> None:
    _switch_under_load(host, "{kind: mod_wsgi, workers: 2, port: 24100}")
    assert _link(host, "uwsgi.sock") is None and _link(host, "http.sock") is None
    ports = sorted(p.name for p in host.path("/srv/demo/shared/run").glob("app-*.port"))
    assert ports == ["app-b.port"], ports
    processes = host.run("ps -eo pid=,user=,args=").stdout
    apache = [line.split() for line in processes.splitlines() if "/usr/sbin/apache2 -DFOREGROUND" in line]
    assert apache and all(fields[1] == "demo" for fields in apache), processes
    assert len(re.findall(r"^\s*\d+ demo +\(wsgi:demo-b\)", processes, re.M)) == 2, processes  # daemon processes = workers
    assert "/bin/uwsgi" not in processes and "gunicorn" not in processes, processes
    listening = host.run("ss -tlnH").stdout
    assert "127.0.0.1:24101 " in listening and "0.0.0.0:24101" not in listening, listening
    # The database password reaches Django (/healthz checks the database),
    # through the WSGI script, never through Apache's environment.
    _serves_the_site(host)
    password = re.search(r"DB_PASSWORD: (\S+)", SECRETS).group(1)
    for pid in [fields[0] for fields in apache]:
        environ = host.run(["cat", f"/proc/{pid}/environ"]).stdout
        assert "SALT_DJANGO_ENV_FILE=/etc/demo/env" in environ, environ
        assert password not in environ and "DJANGO_SECRET_KEY" not in environ, environ
    assert make(host).changed == 0, "a second apply changes nothing"


def test_under_mod_wsgi_a_release_and_a_rollback_drop_no_request_and_a_long_one_ends(host: Host) -> None:
    _release_and_roll_back_under_load(host, slow=True)
    assert sorted(p.name for p in host.path("/srv/demo/shared/run").glob("app-*.port")) == ["app-b.port"]


def test_a_port_change_while_mod_wsgi_serves_is_refused_and_changes_nothing(host: Host) -> None:
    _pillar(host, "{kind: uvicorn, workers: 2, port: 24200}")
    refused = make(host, check=False)
    assert refused.returncode != 0 and refused.changed == 0, refused.output[-3000:]
    assert "projects:demo:app_server:port: 24200 would cut demo off: it serves on 127.0.0.1:24101 (slot b)" in refused.output
    assert sorted(p.name for p in host.path("/srv/demo/shared/run").glob("app-*.port")) == ["app-b.port"]
    _serves_the_site(host)


def test_uvicorn_answers_async_and_a_websocket_open_during_a_release_goes_away_with_1001(host: Host) -> None:
    _switch_under_load(host, "{kind: uvicorn, workers: 2, drain_timeout: 3, port: 24100}")
    processes = host.run("ps -eo args=").stdout
    assert "--worker-class uvicorn_worker.UvicornWorker" in processes, processes
    pulse = fetch(host, f"https://{DOMAIN}/pulse/")
    assert pulse.status == 200 and json.loads(pulse.body)["async"] is True, pulse.body
    _serves_the_site(host)
    assert make(host).changed == 0, "a second apply changes nothing"

    host.run("rm -f /tmp/ws.stop /tmp/ws.json")
    host.run(
        f"nohup /srv/demo/current/venv/bin/python {REPO_IN_HOST}/tests/integration/wsclient.py --host {DOMAIN}"
        " --stop-file /tmp/ws.stop --max-seconds 300 > /tmp/ws.json 2>/tmp/ws.err &"
    )
    time.sleep(2)
    edit_in_host(host, TEMPLATE, V1, "<h1>salt-django demo v3</h1>")
    with Load(host) as load:
        make(host)
    assert load.result["failed"] == 0 and len(load.result["releases"]) == 2, load.result
    host.run("touch /tmp/ws.stop")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not host.run("cat /tmp/ws.json", check=False).stdout:
        time.sleep(0.5)
    ws = json.loads(host.run("cat /tmp/ws.json").stdout or "{}")
    assert ws.get("error") is None and ws.get("code") == 1001, (ws, host.run("cat /tmp/ws.err", check=False).stdout)
    assert ws["switched"] is not None and ws["closed"] - ws["switched"] <= 3 + 5, ws
    assert any(seconds > ws["switched"] for seconds, _ in ws["echoes"]), "the old slot echoes after the switch"
    with Load(host) as load:
        code, output = run_make(host, "rollback")
    assert code == 0 and load.result["failed"] == 0, (load.result, output[-2000:])
    assert "demo v3" not in fetch(host, f"https://{DOMAIN}/").body
