"""Releases on one server: from git, under load, refused, rolled back, backed up, restored.

One booted test host is deployed with `make deploy`, then driven with the
README's commands (`make release REPO=... REF=...`, `make rollback`,
`make backup`, `make restore`, `make audit`) against a git repository of
the demo project whose tags each hold one kind of release.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import DOMAIN, REPO_IN_HOST, Load, fetch, make, psql, repo_host, run_make
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GIT = "/root/demo-git"
COMMIT = "git -c user.email=ci@example.org -c user.name=CI commit -qm"
FAILING_MIGRATION = textwrap.dedent(
    """\
    from django.db import migrations


    def fail(apps, schema_editor):
        raise RuntimeError("migration under test fails")


    class Migration(migrations.Migration):
        dependencies = [("visits", "0002_jobs_and_ticks")]
        operations = [migrations.RunPython(fail)]
    """
)
CHECK_WARNING = textwrap.dedent(
    """

    from django.core import checks


    @checks.register(deploy=True)
    def _warn(**kwargs):
        return [checks.Warning("release under test", id="demo.W001")]
    """
)


LOCAL_PILLAR = textwrap.dedent(
    """\
    projects:
      demo:
        keep_releases: 2
        static:
          keep: {releases: 1, days: 0}
        secrets:
          DB_PASSWORD: releasesDbPassword0123
          REDIS_PASSWORD: releasesRedisPassword0123
    """
)


def _tag(host: Host, tag: str, script: str) -> None:
    """Commit what ``script`` changes on top of v1 as tag ``tag``."""
    host.run(f"cd {GIT} && git checkout -q v1 && git checkout -q -b {tag} && {script} && git add -A && {COMMIT} {tag} && git tag {tag}")


@pytest.fixture(scope="module")
def host(lab_base: Path, lab_workdir: Path) -> Iterator[Host]:
    with repo_host("releases", lab_base, lab_workdir, local_pillar=LOCAL_PILLAR) as server:
        make(server)
        server.run(f"cp -r {REPO_IN_HOST}/example {GIT} && cd {GIT} && git init -q && git add -A && {COMMIT} v1 && git tag v1")
        _tag(server, "v2", "sed -i 's|<h1>salt-django demo</h1>|<h1>salt-django demo v2</h1>|' visits/templates/visits/index.html")
        v3 = "sed -i 's|<h1>salt-django demo</h1>|<h1>salt-django demo v3</h1>|' visits/templates/visits/index.html"
        _tag(server, "v3", f"{v3} && echo distro==1.9.0 >> requirements.txt")
        _tag(server, "bad-syntax", "sed -i 's|^HITS_KEY = |import broken(\\nHITS_KEY = |' visits/views.py")
        server.path(f"{GIT}/.failing-migration.py").write_text(FAILING_MIGRATION)
        _tag(server, "bad-migration", "mv .failing-migration.py visits/migrations/0003_fail.py")
        server.path(f"{GIT}/.check-warning.py").write_text(CHECK_WARNING)
        _tag(server, "bad-check", "cat .check-warning.py >> visits/apps.py && rm .check-warning.py")
        yield server


def _live(host: Host) -> str:
    return host.run("readlink /srv/demo/current").stdout.strip().rsplit("/", 1)[1]


def _backups(host: Host) -> list[dict]:
    """``make backups``: one JSON document per backup."""
    return [json.loads(line) for line in run_make(host, "backups")[1].splitlines() if line.startswith("{")]


def _releases(host: Host) -> list[str]:
    return json.loads(run_make(host, "releases")[1].splitlines()[-1])["releases"]


def test_release_from_git_under_load_drops_no_request(host: Host) -> None:
    first = _live(host)
    with Load(host) as load:
        code, output = run_make(host, f"release REPO={GIT} REF=v2")
    assert code == 0, output[-2000:]
    # each step as it starts, counted, before the outcome
    steps = re.findall(r"^  \[ ?(\d+)\] (\S+)", output, re.M)
    assert [name for _, name in steps][:3] == ["resolve", "build", "check"], output[-2000:]
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)) and ("switch" in dict(steps).values()), output[-2000:]
    live = _live(host)
    assert live != first and live.endswith("-" + host.run(f"git -C {GIT} rev-parse --short=7 v2").stdout.strip())
    assert load.result["sent"] > 50 and load.result["failed"] == 0, load.result
    assert load.result["last"] == live
    assert "salt-django demo v2" in fetch(host, f"https://{DOMAIN}/").body
    assert host.path(f"/srv/demo/releases/{first}/venv").is_dir(), "the previous release stays for a rollback"


def test_rollback_under_load_drops_no_request(host: Host) -> None:
    before = _releases(host)
    with Load(host) as load:
        code, output = run_make(host, "rollback")
    assert code == 0, output[-2000:]
    assert _live(host) == before[0]
    assert load.result["failed"] == 0 and load.result["last"] == before[0], load.result
    assert "salt-django demo v2" not in fetch(host, f"https://{DOMAIN}/").body


def test_rollback_refuses_without_an_earlier_release(host: Host) -> None:
    live = _live(host)
    code, output = run_make(host, "rollback")
    assert code != 0
    assert f"no release of demo before {live} to roll back to" in output
    assert _live(host) == live


@pytest.mark.parametrize(
    ("call", "cause"),
    [
        (f"django_release.release demo repo={GIT} ref=bad-syntax", "not built"),
        ("django_release.rollback demo", "to roll back to"),
        ("django_db.restore demo file=20260101T000000000000Z-none.dump confirm=True", "none.dump"),
    ],
)
def test_a_failed_operation_fails_salt_calls_exit_code(host: Host, call: str, cause: str) -> None:
    """Scripts and CI that call Salt directly, not through make, see the failure."""
    live = _live(host)
    salt_call = "/opt/salt-django/venv/bin/salt-call -c /etc/salt-django --local --out=json"
    result = host.run(f"{salt_call} {call}", check=False, timeout=600)
    assert result.returncode != 0, (call, result.stdout[-1500:])
    assert cause in result.stdout, result.stdout[-1500:]
    assert _live(host) == live


def test_releasing_a_built_commit_again_only_switches(host: Host) -> None:
    code, output = run_make(host, f"release REPO={GIT} REF=v2")
    assert code == 0, output[-2000:]
    assert "built:" not in output and "release:" in output
    assert "salt-django demo v2" in fetch(host, f"https://{DOMAIN}/").body


NGINX_THAT_FAILS_RELOADS = """#!/bin/sh
# test fault: Nginx cannot be reloaded (a broken config elsewhere, a full disk...)
for arg in "$@"; do [ "$arg" = -s ] && echo "nginx: reload refused by the test" >&2 && exit 1; done
exec /usr/sbin/nginx.real "$@"
"""


def test_a_switch_needs_no_nginx_reload_so_a_failing_one_drops_nothing(host: Host) -> None:
    host.run("mv /usr/sbin/nginx /usr/sbin/nginx.real")
    try:
        host.path("/usr/sbin/nginx").write_text(NGINX_THAT_FAILS_RELOADS)
        host.run("chmod 755 /usr/sbin/nginx")
        assert host.run("nginx -s reload", check=False).returncode != 0, "the fault is in place"
        with Load(host) as load:
            code, output = run_make(host, f"release REPO={GIT} REF=v1")
        assert code == 0, output[-2000:]
        assert load.result["failed"] == 0 and load.result["last"] == _live(host), load.result
        assert "salt-django demo v2" not in fetch(host, f"https://{DOMAIN}/").body
    finally:
        host.run("mv -f /usr/sbin/nginx.real /usr/sbin/nginx")
    code, output = run_make(host, f"release REPO={GIT} REF=v2")
    assert code == 0, output[-2000:]
    assert "salt-django demo v2" in fetch(host, f"https://{DOMAIN}/").body


@pytest.mark.parametrize(
    ("ref", "causes"),
    [
        ("bad-syntax", ["compileall failed", "visits/views.py", "SyntaxError"]),
        ("bad-migration", ["migration visits.0003_fail failed", "migration under test fails"]),
        ("bad-check", ["refused by check --deploy: demo.W001 (WARNING): release under test"]),
    ],
)
def test_broken_release_is_refused_and_the_site_keeps_serving(host: Host, ref: str, causes: list[str]) -> None:
    live = _live(host)
    with Load(host) as load:
        code, output = run_make(host, f"release REPO={GIT} REF={ref}")
    assert code != 0
    for cause in causes:
        assert cause in output, output[-2000:]
    assert load.result["failed"] == 0 and set(load.result["releases"]) == {live}, load.result
    assert _live(host) == live
    assert psql(host, "SELECT count(*) FROM django_migrations WHERE name = '0003_fail'") == "0"


def test_backup_then_restore_brings_back_exactly_the_backed_up_rows(host: Host) -> None:
    fetch(host, f"https://{DOMAIN}/?note=before-backup")
    code, output = run_make(host, "backup")
    assert code == 0, output
    backup = json.loads(output.splitlines()[-1])["file"]
    assert host.run(["stat", "-c", "%a %U", backup]).stdout.strip() == "600 root"
    fetch(host, f"https://{DOMAIN}/?note=after-backup")
    assert psql(host, "SELECT count(*) FROM visits_visit WHERE note = 'after-backup'") == "1"

    code, output = run_make(host, f"restore FILE={backup}")
    assert code != 0 and "confirm" in output
    assert psql(host, "SELECT count(*) FROM visits_visit WHERE note = 'after-backup'") == "1"

    # A dump the app user could write (its media) is never restored, nor is one reached by a link.
    host.run(f"install -o demo -m 0644 {backup} /srv/demo/shared/media/planted.dump")
    host.run(f"ln -s /srv/demo/shared/media/planted.dump {backup.rsplit('/', 1)[0]}/linked.dump")
    for planted in ("/srv/demo/shared/media/planted.dump", "linked.dump", "../../../../srv/demo/shared/media/planted.dump"):
        code, output = run_make(host, f"restore FILE={planted} CONFIRM=yes")
        assert code != 0 and "is not a backup of demo" in output, output[-1000:]
    host.run(f"rm {backup.rsplit('/', 1)[0]}/linked.dump")
    assert psql(host, "SELECT count(*) FROM visits_visit WHERE note = 'after-backup'") == "1"

    code, output = run_make(host, f"restore FILE={backup} CONFIRM=yes")
    assert code == 0, output[-2000:]
    assert psql(host, "SELECT count(*) FROM visits_visit WHERE note = 'after-backup'") == "0"
    assert psql(host, "SELECT count(*) FROM visits_visit WHERE note = 'before-backup'") == "1"
    assert fetch(host, f"https://{DOMAIN}/").status == 200
    # what the restore replaced was backed up first, and the restored tables belong to the project's role
    replaced = [b["file"] for b in _backups(host) if b["file"].endswith("-before-restore.dump")]
    assert len(replaced) == 1, replaced
    assert psql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'visits_visit'") == "demo"


def test_a_backup_whose_job_is_killed_leaves_no_file_that_lists_as_a_backup(host: Host) -> None:
    psql(host, "CREATE TABLE IF NOT EXISTS bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1000000) g")
    before = {b["file"] for b in _backups(host)}
    # Polled inside the host (every 10 ms): the whole job (its own session: make, salt-call,
    # pg_dump) is killed once its dump has grown.
    killer = f"""
        cd {REPO_IN_HOST}
        setsid make backup > /dev/null 2>&1 &
        job=$!
        for i in $(seq 1 6000); do
            if [ -n "$(find /var/backups/salt-django/demo -name '*.partial' -size +64k)" ]; then
                kill -KILL -- -$job; echo killed; exit 0
            fi
            sleep 0.01
        done
        echo "the dump never grew"; exit 1
    """
    assert host.run(killer, check=False).stdout.strip() == "killed"
    time.sleep(3)
    listed = _backups(host)
    assert {b["file"] for b in listed} == before, "the killed job's dump is not a backup"
    for entry in listed:
        assert host.run(["pg_restore", "--list", entry["file"]], check=False).returncode == 0, entry
    psql(host, "DROP TABLE bulk")


def test_a_second_release_at_once_is_refused_naming_the_holder(host: Host) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(run_make, host, f"release REPO={GIT} REF=v3")
        deadline = time.monotonic() + 60
        while "release by" not in (holder := host.run("cat /run/salt-django/demo.deploy.lock").stdout) and time.monotonic() < deadline:
            time.sleep(0.1)
        code, output = run_make(host, f"release REPO={GIT} REF=v2")
        first_code, first_output = first.result(timeout=600)
    context = f"holder: {holder!r}\nsecond: {output[-1500:]}\nfirst: {first_output[-1500:]}"
    assert code != 0, context
    assert "another deploy operation of demo is running: release by root (pid" in output, context
    assert first_code == 0 and "salt-django: done" in first_output, context
    assert "salt-django demo v3" in fetch(host, f"https://{DOMAIN}/").body


def test_old_releases_are_pruned_but_never_the_live_or_previous_one(host: Host) -> None:
    releases = _releases(host)
    assert len(releases) == 2, releases
    assert releases[-1] == _live(host)
    assert sorted(p.name for p in host.path("/srv/demo/releases").iterdir()) == sorted(releases)


def test_audit_log_lists_every_operation_with_its_result(host: Host) -> None:
    code, output = run_make(host, "audit")
    assert code == 0
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    summary = [(e["operation"], e["result"], e["trigger"]) for e in entries]
    assert summary == [
        ("backup", "ok", "make deploy"),
        ("release", "ok", "make deploy"),
        ("release", "ok", "make release"),
        ("rollback", "ok", "make rollback"),
        ("rollback", "failed", "make rollback"),
        # salt-call directly: the exit-code test
        ("release", "failed", "salt"),
        ("rollback", "failed", "salt"),
        ("release", "ok", "make release"),
        # while Nginx could not be reloaded, and after
        ("release", "ok", "make release"),
        ("release", "ok", "make release"),
        ("release", "failed", "make release"),
        ("backup", "ok", "make release"),
        ("release", "failed", "make release"),
        ("release", "failed", "make release"),
        ("backup", "ok", "make backup"),
        ("backup", "ok", "make restore"),
        ("restore", "ok", "make restore"),
        ("release", "failed", "make release"),
        ("release", "ok", "make release"),
    ], summary
    for entry in entries:
        assert entry["by"] == "root" and entry["time"] and entry["seconds"] >= 0
    v2 = entries[2]
    assert v2["source"] == f"{GIT}@v2" and v2["ref"] == "v2" and v2["from"] == entries[1]["to"]
    assert entries[4]["error"].startswith("no release of demo before")


VISITOR = f"/usr/bin/python3 {REPO_IN_HOST}/tests/integration/visitor.py --host {DOMAIN} --state /root/visitor.json"
ADMIN_PASSWORD = "visitorPassword0123"
NEW_ASSETS = (
    "sed -i 's/color: #0c4b33/color: #8b0000/' visits/static/visits/site.css"
    " && sed -i 's/Scripts ran./Scripts ran, v2./' visits/static/visits/site.js"
)
SLOW = f"curl -sk --resolve {DOMAIN}:443:127.0.0.1 -o /tmp/slow.body -w '%{{http_code}}' 'https://{DOMAIN}/slow/?seconds=20'"
#: wrk's longest run: it is stopped (SIGINT: it then reports) once the release has ended.
WRK_SECONDS = 300


def _visitor(host: Host, command: str) -> dict:
    return json.loads(host.run(f"{VISITOR} {command}").stdout)


def _written(host: Host, path: str, timeout: float) -> str:
    """The content of ``path`` in the host once it is not empty (a background command's output)."""
    deadline = time.monotonic() + timeout
    while not (text := host.run(f"cat {path}", check=False).stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    return text


def test_assets_long_requests_forms_sessions_and_keep_alive_survive_a_release(host: Host) -> None:
    _tag(host, "assets", NEW_ASSETS)
    before_release = _live(host)
    host.run(
        "/srv/demo/bin/manage createsuperuser --noinput --username admin --email a@example.org",
        env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
    )
    old = _visitor(host, f"login --user admin --password {ADMIN_PASSWORD}")["assets"]
    assert len(old) == 2 and set(old.values()) == {200}, old
    host.run("rm -f /tmp/posts.stop /tmp/slow.code")
    host.run(f"nohup {VISITOR} post --stop-file /tmp/posts.stop --prefix release > /tmp/posts.json 2>&1 &")
    host.run(f"nohup {SLOW} > /tmp/slow.code 2>&1 &")
    # --timeout: a request answered late (two cores shared with the build) is not a dropped one
    argv = ["wrk", "-t2", "-c64", f"-d{WRK_SECONDS}s", "--timeout", "10s", "-H", f"Host: {DOMAIN}", "https://127.0.0.1/"]
    wrk = host.spawn_in_network(argv)
    try:
        time.sleep(2)
        started = time.monotonic()
        code, output = run_make(host, f"release REPO={GIT} REF=assets")
        seconds = time.monotonic() - started
        slow = _written(host, "/tmp/slow.code", 40)
        host.run("touch /tmp/posts.stop")
        posts = json.loads(_written(host, "/tmp/posts.json", 40))
        wrk.send_signal(signal.SIGINT)
        wrk_output = wrk.communicate(timeout=30)[0]
    finally:
        if wrk.poll() is None:
            wrk.kill()
    assert code == 0, output[-2000:]
    live = _live(host)
    assert seconds + 2 < WRK_SECONDS, f"the release ({seconds:.0f} s) outlasted wrk's longest run, {WRK_SECONDS} s"
    print(f"\n[lab figures] release under wrk ({seconds:.1f} s): {wrk_output}")
    print(f"[lab figures] form posts during the release: {posts['sent']} sent, {posts['failed']} failed, by release {posts['releases']}")
    requests = re.search(r"(\d+) requests in", wrk_output)
    assert requests and int(requests.group(1)) > 500, wrk_output
    assert "Socket errors" not in wrk_output and "Non-2xx" not in wrk_output, wrk_output

    assert slow == "200", slow
    assert host.run("cat /tmp/slow.body").stdout.strip().endswith(f"release {before_release}"), "the slow request began on the old release"

    assert posts["failed"] == 0, posts["failures"]
    assert set(posts["releases"]) == {before_release, live}, posts["releases"]
    rows = psql(host, "SELECT count(*), count(DISTINCT note) FROM visits_visit WHERE note LIKE 'release-%'")
    assert rows == f"{posts['sent']}|{posts['sent']}", f"each form post writes exactly one row: {rows} for {posts['sent']} posts"

    after = _visitor(host, "check")
    assert after["logged_in"], after
    assert after["assets"] == {url: {"status": 200, "same": True} for url in old}, after["assets"]
    new = after["page_assets"]
    assert len(new) == 2 and not set(new) & set(old), "the release changed both the CSS and the JS"
    assert all(fetch(host, f"https://{DOMAIN}{url}").status == 200 for url in new)


def test_a_rollback_keeps_the_session_and_both_releases_assets(host: Host) -> None:
    code, output = run_make(host, "rollback")
    assert code == 0, output[-2000:]
    after = _visitor(host, "check")
    assert after["logged_in"], after
    assert set(after["page_assets"]) == set(after["assets"]), "the page names the old assets again"
    assert all(a == {"status": 200, "same": True} for a in after["assets"].values()), after["assets"]


def test_old_assets_are_gone_once_their_release_leaves_the_window(host: Host) -> None:
    old = list(_visitor(host, "check")["assets"])
    template = "sed -i 's|<h1>salt-django demo</h1>|<h1>salt-django demo, new assets</h1>|' visits/templates/visits/index.html"
    _tag(host, "assets-2", f"{NEW_ASSETS} && {template}")
    for ref in ("assets", "assets-2"):
        code, output = run_make(host, f"release REPO={GIT} REF={ref}")
        assert code == 0, output[-2000:]
    assert all(fetch(host, f"https://{DOMAIN}{url}").status == 404 for url in old), "pillar static:keep: {releases: 1, days: 0}"
    assert all(fetch(host, f"https://{DOMAIN}{url}").status == 200 for url in _visitor(host, "check")["page_assets"])
    sizes = host.run("du -sk /srv/demo/static-kept; du -sk /srv/demo/releases /srv/demo/static-kept | tail -1").stdout.split()
    print(f"\n[lab figures] kept static files: {sizes[0]} KiB, of which beyond the releases on disk: {sizes[2]} KiB")
