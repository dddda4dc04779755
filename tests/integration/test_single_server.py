"""One server, every role: `make deploy` in a booted test host (systemd as PID 1).

The test host is a throwaway systemd-nspawn container (tests/lab); nothing
is applied on the machine that runs the tests. The module deploys once and
then checks what a user of the site and an operator of the server see.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import PLATFORMS
from tests.integration.helpers import (
    DOMAIN,
    REPO_IN_HOST,
    TLS_OFFERS,
    Deploy,
    Load,
    assert_handshake,
    edit_in_host,
    enqueue,
    env_value,
    fetch,
    finished_job,
    handshake,
    job,
    make,
    merged,
    psql,
    repo_host,
    served_certificate,
    start_pebble,
)
from tests.lab.browser import Chromium
from tests.lab.hosts import REPO_ROOT, Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# Known values, so that the tests can search for them everywhere.
DB_PASSWORD = "dbPw" + uuid.uuid4().hex
REDIS_PASSWORD = "redisPw" + uuid.uuid4().hex
LOCAL_PILLAR = textwrap.dedent(
    f"""\
    salt_django:
      pip:
        no_index: true
        find_links:
          - /opt/wheelhouse
    projects:
      demo:
        secrets:
          DB_PASSWORD: {DB_PASSWORD}
          REDIS_PASSWORD: {REDIS_PASSWORD}
    """
)


@pytest.fixture(scope="module", params=sorted(PLATFORMS))
def server(request: pytest.FixtureRequest, lab_image: Callable[[str], Path], lab_workdir: Path) -> Iterator[Host]:
    """A booted host, deployed once with `make deploy` from a copy of the repo.

    The image's pip.conf (which points every pip at the wheelhouse) is
    removed, so the release build only works if the states honour the
    pillar's pip settings, as an air-gapped user needs.
    """
    with repo_host(f"single{request.param[-2:]}", lab_image(request.param), lab_workdir, local_pillar=LOCAL_PILLAR) as host:
        host.run("rm -f /etc/pip.conf /etc/xdg/pip/pip.conf")
        host.plan = make(host, "plan")  # type: ignore[attr-defined]
        first = make(host)
        print(f"\n[single {request.param}] first make deploy: {first.states} states, {first.changed} changed, {first.seconds:.1f} s")
        host.first_deploy = first  # type: ignore[attr-defined]
        yield host


def test_first_deploy_succeeds_and_reports(server: Host) -> None:
    first = server.first_deploy  # type: ignore[attr-defined]
    assert first.failed == 0 and first.changed > 0
    assert f"demo is served at https://{DOMAIN}/" in first.output
    assert not server.path("/etc/salt-django/minion.d/50-no-systemd.conf").exists()
    for unit in ("postgresql", "redis-server", "nginx", "supervisor"):
        assert server.run(["systemctl", "is-active", unit]).stdout.strip() == "active", unit


def test_plan_on_a_new_server_predicts_the_first_deploy(server: Host) -> None:
    plan, first = server.plan, server.first_deploy  # type: ignore[attr-defined]
    assert plan.failed == 0, plan.output[-3000:]
    assert plan.states == first.states
    unpredicted = first.changed_ids - plan.changed_ids
    # Debian's nginx package creates its default site during the run: a plan
    # cannot see a file that no package has installed yet.
    assert unpredicted <= {"nginx-default-site-absent"}, unpredicted


def test_page_is_rendered_by_django_with_database_and_cache(server: Host) -> None:
    note = uuid.uuid4().hex
    page = fetch(server, f"https://{DOMAIN}/?note={note}")
    assert page.status == 200
    assert "Rendered by Django on" in page.body
    assert page.header("X-Served-By") == server.run("hostname").stdout.strip()
    assert psql(server, f"SELECT count(*) FROM visits_visit WHERE note = '{note}'") == "1"
    keys = server.run(
        ["redis-cli", "--user", "demo", "--pass", REDIS_PASSWORD, "--no-auth-warning", "--scan", "--pattern", "demo:*:demo:hits"]
    ).stdout.split()
    assert keys == ["demo:1:demo:hits"]


def test_redis_requires_auth_and_persists(server: Host) -> None:
    anonymous = server.run(["redis-cli", "ping"], check=False)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    wrong = server.run(["redis-cli", "--user", "demo", "--pass", "wrong-password", "--no-auth-warning", "ping"], check=False)
    assert "PONG" not in wrong.stdout
    assert server.path("/var/lib/redis/appendonlydir").is_dir(), "persistence: the append-only file"
    assert REDIS_PASSWORD not in server.path("/etc/redis/redis.conf").read_text(), "stored as its SHA-256"


def test_the_project_redis_user_reaches_only_its_own_keys(server: Host) -> None:
    as_demo = ["redis-cli", "--user", "demo", "--pass", REDIS_PASSWORD, "--no-auth-warning"]
    assert server.run([*as_demo, "set", "demo:own", "1"]).stdout.strip() == "OK"
    refused = (["get", "other:1:key"], ["flushall"], ["flushdb"], ["acl", "setuser", "default", "on", "nopass"], ["config", "get", "*"])
    for command in refused:
        answer = server.run([*as_demo, *command], check=False)
        assert "NOPERM" in answer.stdout + answer.stderr, (command, answer.stdout, answer.stderr)
    assert server.run([*as_demo, "exists", "demo:own"]).stdout.strip() == "1"


def test_services_listen_on_loopback_only(server: Host) -> None:
    listening = server.run(["ss", "-Hltn"]).stdout
    for port in (5432, 6379):
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")}
        assert addresses and addresses <= {"127.0.0.1", "[::1]"}, (port, addresses)


def test_the_firewall_opens_ssh_and_the_web_only(server: Host) -> None:
    ruleset = server.run("nft list table inet salt_django").stdout
    assert "policy drop" in ruleset, ruleset
    assert sorted({int(port) for port in re.findall(r"tcp dport (\d+) accept", ruleset)}) == [22, 80, 443], ruleset
    assert 'include "/etc/nftables.d/salt-django.nft"' in server.run("cat /etc/nftables.conf").stdout, "loaded at boot too"
    assert server.run("systemctl is-enabled nftables").stdout.strip() == "enabled"


def test_the_host_updates_itself_keeps_time_and_rotates_the_logs_nothing_else_does(server: Host) -> None:
    periodic = server.run("apt-config dump APT::Periodic").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic, periodic
    assert server.run("systemctl is-enabled systemd-timesyncd").stdout.strip() == "enabled"
    assert "[Time]" in server.path("/etc/systemd/timesyncd.conf.d/salt-django.conf").read_text()
    server.run("logrotate -f /etc/logrotate.d/salt-django")
    rotated = server.run("ls /var/log/salt-django").stdout.split()
    assert "minion.log.1" in rotated and "minion.log" in rotated, rotated
    assert server.run("ls /var/log/salt-django/demo").stdout.split() == ["deploys.log.1.gz"], "the audit log, compressed"


def test_ssh_hardening_is_opt_in_and_turns_passwords_off(server: Host) -> None:
    def effective(option: str) -> str:
        return server.run(f"/usr/sbin/sshd -T | grep -i '^{option} '").stdout.split()[1]

    assert effective("passwordauthentication") == "yes", "Debian's default until pillar opts in"
    hardened = _deploy_with(server, {"host": {"ssh_hardening": True}})
    assert "host-sshd-hardened" in hardened.changed_ids, hardened.output[-2000:]
    assert effective("passwordauthentication") == "no" and effective("permitrootlogin") == "without-password"


def test_http_redirects_to_https(server: Host) -> None:
    page = fetch(server, f"http://{DOMAIN}/some/path?x=1")
    assert page.status == 301
    assert page.header("Location") == f"https://{DOMAIN}/some/path?x=1"


def test_security_headers_and_secure_cookies(server: Host) -> None:
    page = fetch(server, f"https://{DOMAIN}/")
    assert page.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains; preload"
    assert page.header("X-Frame-Options") == "DENY"
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("Cross-Origin-Opener-Policy") == "same-origin"
    assert "camera=()" in page.header("Permissions-Policy")
    assert "script-src 'self'" in page.header("Content-Security-Policy").split("; ")
    assert page.header("Server") == "nginx", "no version"
    missing = fetch(server, f"https://{DOMAIN}/static/no-such-file.css")
    assert missing.status == 404 and "nginx/" not in missing.body and missing.header("Server") == "nginx"
    cookies = {c.split("=", 1)[0]: c for c in page.headers["set-cookie"]}
    assert set(cookies) >= {"sessionid", "csrftoken"}
    for name in ("sessionid", "csrftoken"):
        assert "; Secure" in cookies[name], cookies[name]
    assert "HttpOnly" in cookies["sessionid"]


@pytest.mark.parametrize(("options", "accepted"), TLS_OFFERS.values(), ids=TLS_OFFERS.keys())
def test_tls_offers_only_the_intermediate_profile(server: Host, options: str, accepted: bool) -> None:
    said = handshake(server, "127.0.0.1", DOMAIN, options)
    assert_handshake(said, accepted)


def test_pages_with_a_csrf_token_are_not_compressed_and_static_files_are(server: Host) -> None:
    def head(path: str) -> dict[str, str]:
        command = f"curl -sk -o /dev/null -D - -H 'Accept-Encoding: gzip' --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}{path}"
        lines = server.run(command).stdout.replace("\r", "").splitlines()[1:]
        return {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}

    login = fetch(server, f"https://{DOMAIN}/admin/login/")
    assert "csrfmiddlewaretoken" in login.body
    assert "content-encoding" not in head("/admin/login/"), "BREACH: a page with a CSRF token must go uncompressed"
    css = re.search(r'href="(/static/visits/site\.[0-9a-f]{12}\.css)"', fetch(server, f"https://{DOMAIN}/").body)
    assert css
    assert head(css.group(1)).get("content-encoding") == "gzip"
    assert head("/static/admin/css/base.css").get("content-encoding") == "gzip"


def test_login_posts_are_limited_per_client_address(server: Host) -> None:
    def posts(source: str, count: int) -> list[str]:
        post = (
            f"curl -sk -o /dev/null -w '%{{http_code}}\\n' --interface {source} -X POST -d username=x -d password=y"
            f" --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/admin/login/"
        )
        return server.run(["sh", "-c", f"for i in $(seq {count}); do {post}; done"]).stdout.split()

    first = posts("127.0.0.5", 11)
    assert "429" not in first[:10] and first[10] == "429", first
    said = server.run(f"curl -sk --interface 127.0.0.5 -X POST --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/admin/login/").stdout
    assert "Too many login attempts" in said, said
    assert "429" not in posts("127.0.0.6", 3), "another address is not limited"
    page = server.run(
        f"curl -sk -o /dev/null -w '%{{http_code}}' --interface 127.0.0.5 --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/admin/login/"
    )
    assert page.stdout == "200", "the login page itself (GET) stays open"


def test_static_file_is_served_by_nginx_with_cache_headers(server: Host) -> None:
    page = fetch(server, f"https://{DOMAIN}/")
    match = re.search(r'href="(/static/visits/site\.[0-9a-f]{12}\.css)"', page.body)
    assert match, "the page links a hashed static file"
    css = fetch(server, f"https://{DOMAIN}{match.group(1)}")
    assert css.status == 200 and "font-family" in css.body
    assert css.header("Cache-Control") == "public, max-age=31536000, immutable"
    assert css.header("X-Content-Type-Options") == "nosniff"
    app_log = server.path("/var/log/demo/app.log").read_text()
    assert "/static/" not in app_log, "Django must not serve static files"
    assert "GET /?note=" in app_log, "the access log records what Django served"


def test_uploads_are_served_sandboxed_and_as_downloads(server: Host) -> None:
    """Local media (the default backend): an upload through the demo's page is
    served by Nginx from /media/, never as active content on our origin."""
    server.path("/root/media.py").write_text((REPO_ROOT / "tests" / "cluster" / "media.py").read_text())

    def client(*args: str) -> dict:
        return json.loads(server.run(["python3", "/root/media.py", *args], timeout=300).stdout)

    server.run(f"head -c {10 << 20} /dev/urandom > /root/upload.bin && printf '<script>alert(1)</script>' > /root/page.html")
    digest = server.run("sha256sum /root/upload.bin").stdout.split()[0]
    stored = client("upload", "127.0.0.1", "443", "1", DOMAIN, "/root/upload.bin")
    assert stored["status"] == 200 and stored["url"] == f"/media/{stored['name']}", stored
    assert server.path(f"/srv/demo/shared/media/{stored['name']}").stat().st_size == 10 << 20
    read = client("download", "127.0.0.1", "443", "1", DOMAIN, stored["url"], "/root/download.bin")
    assert read["status"] == 200 and read["sha256"] == digest, read
    print(f"\n[lab figures] media local, 10 MB via Nginx TLS: upload {stored['seconds']:.2f}s, download {read['seconds']:.2f}s", flush=True)
    page = client("upload", "127.0.0.1", "443", "1", DOMAIN, "/root/page.html")
    served = fetch(server, f"https://{DOMAIN}{page['url']}")
    assert served.status == 200 and "<script>" in served.body
    for answer in (read["headers"], {k: v[0] for k, v in served.headers.items()}):
        assert "sandbox" in answer.get("content-security-policy", "").split("; "), answer
        assert answer.get("x-content-type-options") == "nosniff", answer
        assert answer.get("content-disposition") == "attachment", answer
    # A plain image may show inline (still sandboxed); only GET and HEAD.
    server.run("printf 'not really a png' > /srv/demo/shared/media/probe.png")
    image = fetch(server, f"https://{DOMAIN}/media/probe.png")
    assert image.status == 200 and "content-disposition" not in image.headers
    assert image.header("Content-Security-Policy").endswith("; sandbox")
    put = server.run(f"curl -sk -o /dev/null -w '%{{http_code}}' -X PUT --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/media/probe.png")
    assert put.stdout == "405"


def test_healthz_answers_by_ip_over_plain_http(server: Host) -> None:
    out = server.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/healthz").stdout
    assert out == "200"


#: Where the demo's pages and Django's admin must run under the default policy.
CSP_PAGES = ("/", "/jobs/", "/upload/", "/admin/login/")
CSP_ADMIN_PAGES = ("/admin/", "/admin/auth/user/", "/admin/auth/user/add/", "/admin/auth/user/{id}/change/", "/admin/visits/visit/")
#: Logs a user in through the configured session store and prints "<user id> <session key>".
FORCE_LOGIN = (
    "from django.contrib.auth import get_user_model; from django.test import Client;"
    " user, _ = get_user_model().objects.get_or_create(username='csp', defaults={'is_staff': True, 'is_superuser': True});"
    " client = Client(); client.force_login(user); print(user.pk, client.cookies['sessionid'].value)"
)


def test_pages_and_the_admin_log_no_csp_violation_in_chromium(server: Host) -> None:
    if server.name.endswith("13"):
        pytest.skip("the browser runs on this machine and the policy is the same: Debian 12 covers it")
    user_id, session = server.run(["/srv/demo/bin/manage", "shell", "-c", FORCE_LOGIN]).stdout.split()[-2:]
    browser = Chromium({DOMAIN: "127.0.0.1"}, netns_of=server.network_pid())
    try:
        visits = {path: browser.visit(f"https://{DOMAIN}{path}") for path in CSP_PAGES}
        cookie = {"name": "sessionid", "value": session, "domain": DOMAIN, "path": "/", "secure": True, "httpOnly": True}
        browser.call("Network.setCookie", cookie, session=True)
        for path in (p.format(id=user_id) for p in CSP_ADMIN_PAGES):
            visits[path] = browser.visit(f"https://{DOMAIN}{path}")
            assert "log out" in (browser.evaluate("document.body.innerText") or "").lower(), f"{path}: not logged in"
        probe = browser.visit(f"https://{DOMAIN}/csp-probe/")
        probe_text = browser.evaluate("document.getElementById('probe').textContent")
    finally:
        browser.close()
    # The admin's pages name no icon: Chromium's own /favicon.ico guess is not the site's request.
    failed = {path: [f for f in v.failed if not f.startswith(f"https://{DOMAIN}/favicon.ico:")] for path, v in visits.items()}
    assert {path: f for path, f in failed.items() if f} == {}
    assert {path: v.csp_violations for path, v in visits.items() if v.csp_violations} == {}
    assert visits["/"].script == "Scripts ran.", "the demo's own script runs under the policy"
    assert probe_text == "The policy blocked the inline script."
    blocked = " ".join(probe.csp_violations)
    assert "script-src" in blocked and "style-src" in blocked, probe.csp_violations


def test_check_deploy_is_clean_on_the_live_release(server: Host) -> None:
    result = server.run("/srv/demo/bin/manage check --deploy --fail-level WARNING")
    assert "System check identified no issues" in result.stdout


def test_a_job_enqueued_through_the_web_runs_on_the_celery_worker(server: Host) -> None:
    """The demo declares Celery workers: they run beside Gunicorn. The broker is
    Redis as the project's ACL user, whose keys must all start with `demo:`:
    a worker that used any other key would be refused by Redis and run nothing."""
    token = enqueue(server, seconds=0.5)
    done = finished_job(server, token)
    assert done["runs"] == 1 and done["ran_release"] == done["enqueued_release"], done
    assert token[:9] in fetch(server, f"https://{DOMAIN}/jobs/").body, "the page lists the job"
    status = server.run("supervisorctl status demo-worker:* demo-beat").stdout
    assert status.count("RUNNING") == 2, status
    worker = server.run("ps -o user=,args= -C celery").stdout
    assert "demo " in worker and " worker " in worker and "root " not in worker, worker


def test_second_deploy_changes_nothing_and_test_mode_agrees(server: Host) -> None:
    second = make(server)
    assert (second.changed, second.failed) == (0, 0), second.output[-3000:]
    plan = make(server, "plan")
    assert (plan.changed, plan.failed) == (0, 0), plan.output[-3000:]
    assert plan.states == second.states
    print(f"\n[single] no-op make deploy: {second.states} states in {second.seconds:.1f} s")


def test_secrets_stay_out_of_output_logs_cache_and_world_readable_files(server: Host) -> None:
    secret_key = env_value(server, "DJANGO_SECRET_KEY")
    secrets = {"DB_PASSWORD": DB_PASSWORD, "REDIS_PASSWORD": REDIS_PASSWORD, "SECRET_KEY": secret_key}
    outputs = server.first_deploy.output + make(server).output  # type: ignore[attr-defined]
    for name, value in secrets.items():
        assert value not in outputs, f"{name} in make deploy output"
        hits = server.run(
            ["grep", "-rlF", "--", value, "/etc", "/srv", "/var", "/opt", "/root", "/run", "/tmp", "/home"], check=False
        ).stdout.split()
        expected = {"/etc/demo/env", "/etc/salt-django/pillar/local.sls"}
        assert set(hits) <= expected, f"{name} found in {sorted(set(hits) - expected)}"
        for path in hits:
            mode = int(server.run(["stat", "-c", "%a", path]).stdout, 8)
            assert not mode & 0o007, f"{path} is readable by others ({mode:o})"
    env_owner = server.run(["stat", "-c", "%U:%G %a", "/etc/demo/env"]).stdout.strip()
    assert env_owner == "root:demo 640"


def test_fileserver_never_serves_pillar(server: Host) -> None:
    listed = server.run(["/opt/salt-django/venv/bin/salt-call", "-c", "/etc/salt-django", "--local", "--out=txt", "cp.list_master"]).stdout
    pillar_files = {p.name for p in (REPO_ROOT / "pillar").iterdir()} - {"top.sls"} | {"local.sls"}
    for name in pillar_files:
        assert f"'{name}'" not in listed and f"/{name}'" not in listed, name
    served_top = server.run(
        ["/opt/salt-django/venv/bin/salt-call", "-c", "/etc/salt-django", "--local", "--out=txt", "cp.get_file_str", "salt://top.sls"]
    ).stdout
    assert "I@salt_django:roles:db" in served_top, "salt://top.sls is the state tree's top file, not pillar's"


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"projects": {"demo": {"secrets": {"SECRET_KEY": "tooweak"}}}}, "projects:demo:secrets:SECRET_KEY"),
        ({"projects": {"demo": {"secrets": {"DB_PASSWORD": None}}}}, "projects:demo:secrets:DB_PASSWORD is missing"),
        ({"projects": {"demo": {"domains": []}}}, "projects:demo:domains"),
        ({"projects": {"demo": {"domains": ["https://bad domain"]}}}, "projects:demo:domains:0"),
        ({"salt_django": {"roles": ["db", "cache", "app", "web", "databse"]}}, "salt_django:roles: unknown role(s) databse"),
        ({"firewall": {"ssh_sources": ["office"]}}, "firewall:ssh_sources:0: 'office' is not an address"),
    ],
    ids=["weak-secret-key", "missing-db-password", "no-domains", "bad-domain", "unknown-role", "bad-ssh-source"],
)
def test_bad_input_fails_early_and_leaves_the_site_serving(server: Host, overlay: dict, key: str) -> None:
    local = server.path("/etc/salt-django/pillar/local.sls")
    original = local.read_text()
    env_before = server.path("/etc/demo/env").read_text()
    try:
        local.write_text(yaml.safe_dump(merged(yaml.safe_load(original), overlay)))
        result = make(server, check=False)
    finally:
        local.write_text(original)
    assert result.returncode != 0
    assert key in result.output, result.output[-2000:]
    assert (result.states, result.changed, result.failed) == (1, 0, 1), result.output[-2000:]
    assert server.path("/etc/demo/env").read_text() == env_before
    assert fetch(server, f"https://{DOMAIN}/").status == 200


def test_new_release_switches_without_dropping_a_request(server: Host) -> None:
    before = server.run("readlink /srv/demo/current").stdout.strip()
    edit_in_host(server, "example/visits/templates/visits/index.html", "<h1>salt-django demo</h1>", "<h1>salt-django demo v2</h1>")
    running = enqueue(server, seconds=8)
    with Load(server) as load:
        deploy = make(server)
    assert deploy.changed == 1, deploy.output[-2000:]
    # The old worker finished its job before the new one started; none ran it twice.
    old_job = finished_job(server, running)
    new_job = finished_job(server, enqueue(server))
    assert old_job["runs"] == 1 and old_job["ran_release"] == before.rsplit("/", 1)[1], old_job
    assert new_job["runs"] == 1 and new_job["ran_release"] == server.run("readlink /srv/demo/current").stdout.strip().rsplit("/", 1)[1]
    assert old_job["finished"] < new_job["started"]
    after = server.run("readlink /srv/demo/current").stdout.strip()
    assert after != before
    assert load.result["sent"] > 50 and load.result["failed"] == 0, load.result
    assert set(load.result["releases"]) == {before.rsplit("/", 1)[1], after.rsplit("/", 1)[1]}
    assert load.result["last"] == after.rsplit("/", 1)[1]
    assert "salt-django demo v2" in fetch(server, f"https://{DOMAIN}/").body
    assert server.path(f"/srv/demo/{before}/venv").is_dir(), "the previous release stays for a rollback"


def test_config_change_restarts_without_dropping_a_request(server: Host) -> None:
    local = server.path("/etc/salt-django/pillar/local.sls")
    original = local.read_text()
    try:
        local.write_text(yaml.safe_dump(merged(yaml.safe_load(original), {"projects": {"demo": {"log_level": "WARNING"}}})))
        with Load(server) as load:
            deploy = make(server)
    finally:
        local.write_text(original)
    assert "restarted in slot" in deploy.output, deploy.output[-2000:]
    assert load.result["failed"] == 0, load.result
    assert env_value(server, "DJANGO_LOG_LEVEL") == "WARNING"
    make(server)


SALT_CALL = "/opt/salt-django/venv/bin/salt-call -c /etc/salt-django --local"


def _requeued_past_the_deadline(server: Host, seconds: float, timeout: float) -> dict:
    """A job of ``seconds`` is running when the workers restart: they wait
    max_task_seconds, then it is stopped, requeued and runs again from the start."""
    token = enqueue(server, seconds=seconds)
    deadline = time.monotonic() + 30
    while job(server, token)["started"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
    restart = server.run(f"{SALT_CALL} --out=json django_release.restart demo")
    assert '"ok": true' in restart.stdout, restart.stdout[-2000:]
    return finished_job(server, token, timeout=timeout)


def _deploy_with(server: Host, overlay: dict) -> Deploy:
    """``make deploy`` with ``overlay`` merged into the local pillar (kept there)."""
    local = server.path("/etc/salt-django/pillar/local.sls")
    local.write_text(yaml.safe_dump(merged(yaml.safe_load(local.read_text()), overlay)))
    deploy = make(server)
    assert deploy.failed == 0, deploy.output[-2000:]
    return deploy


def _workers_pillar(server: Host, workers: dict) -> None:
    _deploy_with(server, {"projects": {"demo": {"workers": workers}}})


def test_a_celery_job_running_past_the_stop_deadline_runs_again(server: Host) -> None:
    if server.name.endswith("13"):
        pytest.skip("Celery's redelivery does not depend on the platform: Debian 12 covers it")
    _workers_pillar(server, {"max_task_seconds": 3})
    # killed 3 + 5 s after TERM; back once its visibility timeout (3 + 30 s) passed
    done = _requeued_past_the_deadline(server, seconds=12, timeout=120)
    assert done["runs"] == 2, done


def test_rq_workers_and_cron_by_pillar_replace_celery(server: Host) -> None:
    """Switching a running project to RQ (and RQ's cron for its periodic job) is a pillar change."""
    if server.name.endswith("13"):
        pytest.skip("the queue libraries do not depend on the platform: Debian 12 covers RQ")
    # the repository's pillar names the Celery app: RQ gets its queues by name
    _workers_pillar(server, {"kind": "rq", "queues": ["default"], "cron": "visits.rq_cron", "concurrency": 2, "max_task_seconds": 3})
    assert env_value(server, "RQ_KEY_PREFIX") == "demo:rq"
    status = server.run("supervisorctl status demo-worker:* demo-beat").stdout
    assert status.count("RUNNING") == 3, status
    assert "salt_django_worker worker" in server.run("ps -o args= -u demo").stdout
    since = float(server.run("date +%s").stdout)
    done = finished_job(server, enqueue(server, seconds=0.5))
    assert done["runs"] == 1, done
    # RQ's cron enqueues the tick at the next minute; a worker runs it.
    ticks = f"SELECT count(*) FROM visits_tick WHERE created > to_timestamp({since})"
    deadline = since + 100
    while float(server.run("date +%s").stdout) < deadline and psql(server, ticks) == "0":
        server.run("sleep 2")
    assert psql(server, ticks) == "1"
    assert make(server).changed == 0
    # RQ's warm shutdown has the same deadline (max_task_seconds, 3 here): the job goes back to the front of its queue at once.
    done = _requeued_past_the_deadline(server, seconds=8, timeout=60)
    assert done["runs"] == 2, done


def test_a_certificate_from_an_acme_ca_is_served_and_renewed_only_when_due(server: Host) -> None:
    """Pillar tls:acme against pebble (a test-only ACME CA, on the host): Nginx
    answers the HTTP-01 challenge on port 80 and then serves the certificate;
    a renewal that is not due, a second deploy and a failed issuance all keep it."""
    if server.name.endswith("13"):
        pytest.skip("certbot and the ACME flow do not depend on the platform: Debian 12 covers them")
    directory = start_pebble(server, DOMAIN)
    local = server.path("/etc/salt-django/pillar/local.sls")
    issued = _deploy_with(server, {"projects": {"demo": {"tls": {"acme": {"directory": directory, "email": "ops@example.org"}}}}})
    assert "tls-demo-acme-certificate-issued" in issued.changed_ids, issued.output[-2000:]
    served = served_certificate(server, "127.0.0.1", DOMAIN)
    assert served.chains.endswith(": OK") and served.names == f"DNS:{DOMAIN}", served
    assert server.run("systemctl is-enabled certbot.timer").stdout.strip() == "enabled", "renewed by Debian's timer"
    renewal = server.run("certbot renew --no-random-sleep-on-renew 2>&1").stdout
    assert "not yet due for renewal" in renewal, renewal[-1500:]
    again = make(server)
    assert (again.changed, again.failed) == (0, 0), again.output[-2000:]
    assert served_certificate(server, "127.0.0.1", DOMAIN).fingerprint == served.fingerprint
    kept = local.read_text()
    try:
        local.write_text(
            yaml.safe_dump(
                merged(yaml.safe_load(kept), {"projects": {"demo": {"tls": {"acme": {"directory": "https://127.0.0.1:14001/dir"}}}}})
            )
        )
        refused = make(server, check=False)
    finally:
        local.write_text(kept)
    assert refused.returncode != 0 and "certbot could not get a certificate" in refused.output, refused.output[-2000:]
    assert served_certificate(server, "127.0.0.1", DOMAIN).fingerprint == served.fingerprint, "a failed issuance keeps the served one"
    assert fetch(server, f"https://{DOMAIN}/").status == 200


#: A Django 6.1 ``startproject`` (tests/projects/sixsite: what it wrote, plus a
#: requirements.txt), deployed by pillar only beside the demo: no Gunicorn, no
#: /healthz, its own settings (DEBUG on, SQLite). Django 6 needs Python 3.12.
SIXSITE = {"projects": {"sixsite": {"domains": ["sixsite.localhost"], "source": f"{REPO_IN_HOST}/tests/projects/sixsite"}}}


def _python_version(server: Host) -> str:
    return server.run(["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"]).stdout.strip()


def test_a_django6_project_deploys_on_trixie_and_is_refused_on_bookworm_naming_both_pythons(server: Host) -> None:
    """Today's Django on today's Debian, added to a running server by pillar;
    the demo beside it keeps being served whatever happens to it."""
    local = server.path("/etc/salt-django/pillar/local.sls")
    kept = local.read_text()
    local.write_text(yaml.safe_dump(merged(yaml.safe_load(kept), SIXSITE)))
    try:
        added = make(server, check=False)
        assert fetch(server, f"https://{DOMAIN}/").status == 200, "the demo is served whatever happens to the other project"
        if server.name.endswith("12"):
            assert added.returncode != 0
            assert _python_version(server) in added.output and ">=3.12" in added.output, added.output[-3000:]
            assert not server.path("/srv/sixsite/current").exists(), "nothing of the refused project is live"
            return
        assert added.returncode == 0 and added.failed == 0, added.output[-4000:]
        assert _python_version(server).startswith("3.13")
        assert fetch(server, "https://sixsite.localhost/admin/login/", domain="sixsite.localhost").status == 200
        health = fetch(server, "http://sixsite.localhost/healthz", domain="sixsite.localhost")
        assert health.status == 200 and json.loads(health.body)["checks"] == {"database": "ok", "cache": "ok"}
        assert "django-6.1.3.dist-info" in server.run("ls /srv/sixsite/current/venv/lib/python3.13/site-packages").stdout
        second = make(server)
        assert (second.changed, second.failed) == (0, 0), second.output[-3000:]
    finally:
        local.write_text(kept)
