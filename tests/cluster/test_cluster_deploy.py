"""The cluster of pillar/topology.yaml, for real: db, cache, app1, app2 and lb
(app3 joins later), driven by a salt-master configured from conf/master.d/
(minions from conf/minion.d/).

One cluster serves the whole module, and the tests build on each other in
file order, as an operator's day would: converge from nothing, converge
again, check who may reach the database and cache, roll out a release under
load (a browser, long requests, form posts), roll it back and out again,
roll out a broken one and roll back, lose an app server, let one forge its
mine address, add one, and try two rollouts at once. Releases come from a git repository served
to the cluster by ``git daemon`` on this machine's bridge address.

Timings are printed (run with -s) as ``[lab timing]`` lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.browser import PageLoads
from tests.cluster.conftest import timing
from tests.cluster.helpers import (
    APPS,
    DOMAIN,
    HOOK_RUNS,
    HOSTS,
    SECRET_KEY,
    SPARE,
    TEMPLATE,
    Releases,
    apply_all,
    cluster_args,
    failed,
    generated_secrets,
    haproxy,
    lb_ip,
    live,
    lock_free,
    master_conf,
    orchestrate,
    passwords,
    rollout_lock,
    settled,
    until,
    up_in_haproxy,
    write_secrets,
)
from tests.cluster.traffic import SlowRequests, Traffic, Visitor, get
from tests.integration.helpers import TICKS, records, three_minutes_of_ticks
from tests.lab.cluster import Cluster

pytestmark = pytest.mark.slow

CSS = "visits/static/visits/site.css"
JS = "visits/static/visits/site.js"
ADMIN_PASSWORD = "visitorPassword0123"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    made = Releases(tmp_path_factory.mktemp("git"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster], releases: Releases, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    made = make_cluster(**cluster_args(tmp_path_factory.mktemp("operator")))
    timing(f"cluster up (master + {len(HOSTS)} hosts)", made.timings["up"])
    write_secrets(made, releases.serve(made.master_ip))
    return made


@pytest.fixture(scope="module")
def visitor(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Visitor:
    """A visitor of the site through the load balancer; the rolling deploy logs it in."""
    return Visitor(lb_ip(cluster), DOMAIN, tmp_path_factory.mktemp("visitor") / "state.json")


def test_the_master_generates_the_passwords_a_new_project_lacks(cluster: Cluster) -> None:
    first = cluster.run_runner("rollout.init_secrets", check=True)
    assert first["result"] is True, first
    assert first["added"] == [f"projects:demo:secrets:{key}" for key in ("DB_PASSWORD", "REDIS_PASSWORD")], first
    path = generated_secrets(cluster)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    values = passwords(cluster)
    assert all(len(v) == 40 for v in values.values()) and not any(v in json.dumps(first) for v in values.values())
    again = cluster.run_runner("rollout.init_secrets", check=True)
    assert again["added"] == [] and passwords(cluster) == values, "a generated value is never rewritten"


def test_one_apply_converges_the_cluster_from_nothing(cluster: Cluster) -> None:
    ret, seconds = apply_all(cluster, HOSTS)
    cluster.applied_at = time.time()  # type: ignore[attr-defined]
    timing(f"first state.apply on {len(HOSTS)} hosts", seconds)
    assert set(ret) == set(HOSTS), ret.keys()
    assert not failed(ret), json.dumps(failed(ret), indent=1)[:4000]
    # lb converged beside the app servers: its health checks find them up within a few checks
    waited = until(lambda: up_in_haproxy(cluster) == set(APPS), 30, "HAProxy sees the app servers UP")
    timing("apply done -> HAProxy routes to every app server", waited)
    seen: dict[str, str] = {}
    for _ in range(20):
        answer = get(lb_ip(cluster), DOMAIN)
        assert answer.status == 200, answer
        seen[answer.server] = answer.release
        if set(seen) == set(APPS):
            break
    assert set(seen) == set(APPS), seen
    # rows written by both app servers are in PostgreSQL on db, the hit counter in Redis on cache
    query = "select distinct server from visits_visit order by 1"
    rows = cluster.hosts["db"].run(f"runuser -u postgres -- psql -At demo -c '{query}'").stdout.split()
    assert rows == APPS
    env = cluster.hosts["app1"].run("cat /etc/demo/env").stdout
    assert f"DATABASE_HOST={cluster.hosts['db'].ip}\n" in env and f"REDIS_HOST={cluster.hosts['cache'].ip}\n" in env
    keys = (
        cluster.hosts["cache"]
        .run(f"REDISCLI_AUTH={passwords(cluster)['REDIS_PASSWORD']} redis-cli --no-auth-warning --user demo --raw keys '*demo:hits'")
        .stdout.split()
    )
    assert keys, "no hit counter in the cache server's Redis"
    # the runtime API (drain, ready) is root's only
    modes = cluster.hosts["lb"].run("stat -c '%a %U %F' /var/lib/haproxy-admin /var/lib/haproxy-admin/admin.sock").stdout.splitlines()
    assert modes == ["700 root directory", "600 root socket"], modes
    headers = cluster.hosts["lb"].run(f"curl -skI --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/").stdout.lower()
    assert headers.count("strict-transport-security: max-age=31536000; includesubdomains; preload") == 1, headers
    assert headers.count("x-frame-options: deny") == 1, headers
    redirect = cluster.hosts["lb"].run(f"curl -sI -H 'Host: {DOMAIN}' http://127.0.0.1/").stdout.lower()
    assert redirect.startswith("http/1.1 301") and f"location: https://{DOMAIN}/" in redirect, redirect


def test_second_apply_changes_nothing(cluster: Cluster) -> None:
    ret, seconds = apply_all(cluster, HOSTS)
    timing(f"second state.apply on {len(HOSTS)} hosts", seconds)
    assert not failed(ret), failed(ret)
    changed = {name: sorted(sid.split("_|-")[1] for sid, s in states.items() if s["changes"]) for name, states in ret.items()}
    assert not any(changed.values()), changed
    plan = cluster.salt(HOSTS, "state.apply", kwarg={"test": True}, tgt_type="list", timeout=600)
    predicted = {name: sorted(sid.split("_|-")[1] for sid, s in states.items() if s["result"] is not True) for name, states in plan.items()}
    assert set(plan) == set(HOSTS) and not any(predicted.values()), predicted


def test_secrets_stay_where_they_belong(cluster: Cluster) -> None:
    """Only the app's env file holds a secret on the hosts (Redis' config holds
    the password's SHA-256); the master's job cache (every state run's return) holds none."""
    secrets = [*passwords(cluster).values(), SECRET_KEY]
    patterns = " ".join(f"-e '{value}'" for value in secrets)
    expected = {name: {"/etc/demo/env"} if name in APPS else set() for name in HOSTS}
    found = {
        name: set(cluster.hosts[name].run(f"grep -rlsF {patterns} /etc /srv /var /opt /root /tmp /run /home", check=False).stdout.split())
        for name in HOSTS
    }
    assert found == expected
    jobs = cluster.master_dir / "var" / "cache" / "salt" / "master" / "jobs"
    leaks = [str(path) for path in jobs.rglob("*") if path.is_file() and any(v.encode() in path.read_bytes() for v in secrets)]
    assert list(jobs.rglob("*")) and not leaks, leaks


def test_db_and_cache_refuse_strangers(cluster: Cluster) -> None:
    db, cache = cluster.hosts["db"].ip, cluster.hosts["cache"].ip
    # from the load balancer: PostgreSQL answers the startup message with its pg_hba verdict
    startup = (
        "import socket, struct; p = b'user\\0demo\\0database\\0demo\\0\\0';"
        f" s = socket.create_connection(('{db}', 5432), 5); s.sendall(struct.pack('!ii', 8 + len(p), 196608) + p);"
        " print(s.recv(500).decode(errors='replace'))"
    )
    refused = cluster.hosts["lb"].run(f'python3 -c "{startup}"').stdout
    assert "no pg_hba.conf entry" in refused, refused
    admitted = cluster.hosts["app1"].run(
        f"PGPASSWORD={passwords(cluster)['DB_PASSWORD']} psql 'host={db} dbname=demo user=demo connect_timeout=5' -Atc 'select 1'"
    )
    assert admitted.stdout.strip() == "1"
    ping = f"import socket; s = socket.create_connection(('{cache}', 6379), 5); s.sendall(b'PING\\r\\n'); print(s.recv(200).decode())"
    for name in HOSTS:
        answer = cluster.hosts[name].run(f'python3 -c "{ping}"').stdout.strip()
        assert answer.startswith("-NOAUTH"), (name, answer)
    # from an app server, as the project's own Redis user: its keys only, nothing dangerous
    auth = f"AUTH demo {passwords(cluster)['REDIS_PASSWORD']}"
    commands = [auth, "SET demo:probe 1", "GET other:1:key", "FLUSHALL", "ACL SETUSER default on nopass", "GET demo:probe"]
    payload = ("\r\n".join(commands) + "\r\n").encode()
    session = f"import socket, time; s = socket.create_connection(('{cache}', 6379), 5); s.sendall({payload!r}); time.sleep(1)"
    session += "; print(s.recv(2000).decode())"
    answers = cluster.hosts["app1"].run(["python3", "-c", session]).stdout.splitlines()
    assert answers[:2] == ["+OK", "+OK"], answers
    assert all(a.startswith("-NOPERM") for a in answers[2:5]), answers
    assert answers[5:7] == ["$1", "1"], answers


def test_rolling_deploy_under_load_drops_nothing(cluster: Cluster, releases: Releases, visitor: Visitor) -> None:
    v2 = {
        TEMPLATE: lambda t: t.replace("salt-django demo</h1>", "salt-django demo v2</h1>"),
        CSS: lambda t: t.replace("#0c4b33", "#8b0000"),
        JS: lambda t: t.replace("Scripts ran.", "Scripts ran, v2."),
    }
    short = releases.commit("v2", v2)
    # each server built the converge's release itself: ids may differ in their second
    olds = set(live(cluster, APPS).values())
    hooks_before = {name: len(records(cluster.hosts[name], HOOK_RUNS)) for name in APPS}
    superuser = "/srv/demo/bin/manage createsuperuser --noinput --username admin --email a@example.org"
    cluster.hosts[APPS[0]].run(superuser, env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
    old_assets = visitor.run("login", "--user", "admin", "--password", ADMIN_PASSWORD)["assets"]
    with (
        Traffic(lb_ip(cluster), DOMAIN) as traffic,
        PageLoads(f"https://{DOMAIN}/", {DOMAIN: lb_ip(cluster)}) as browser,
        SlowRequests(lb_ip(cluster), DOMAIN) as slow,
        visitor.posting("rollout"),
    ):
        result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v2"})
        time.sleep(2)  # requests after the last switch too
    hook_runs = {name: len(records(cluster.hosts[name], HOOK_RUNS)) - hooks_before[name] for name in APPS}
    timing(f"orch.deploy v2 on {len(APPS)} app servers", seconds)
    posts = visitor.posts
    print(f"\n[lab figures] rolling deploy under load: {traffic}", flush=True)
    print(f"[lab figures] chromium during the rollout: {browser}", flush=True)
    print(f"[lab figures] form posts: {posts.get('sent')} sent, {posts.get('failed')} failed, by release {posts.get('releases')}")
    print(f"[lab figures] long requests: {slow}", flush=True)
    assert result["retcode"] == 0 and result["result"] is True, json.dumps(result, indent=1)[:4000]
    assert not traffic.failures, str(traffic)
    assert traffic.sent > 50 and set(traffic.servers) == set(APPS), str(traffic)
    rid = result["release"]
    assert rid.endswith(short)
    assert live(cluster, APPS) == dict.fromkeys(APPS, rid)
    pages = [get(lb_ip(cluster), DOMAIN) for _ in range(6)]
    assert {(p.server, p.release) for p in pages} == {(a, rid) for a in APPS}
    assert sum(hook_runs.values()) == 1, f"the after_switch hook runs once per rollout: {hook_runs}"

    # A browser: every page of either release got its CSS and JS, wherever they came from.
    assert not browser.error and not browser.failed, str(browser)
    assert rid in browser.releases and olds & set(browser.releases), f"pages of both releases were loaded: {browser}"
    scripts = {(v.release in olds, v.release == rid, v.script) for v in browser.visits}
    assert scripts == {(True, False, "Scripts ran."), (False, True, "Scripts ran, v2.")}, str(browser)
    # Long requests end; forms posted with a token of the old release are accepted, each exactly once.
    assert len(slow.answers) >= 2 and not slow.failures, str(slow)
    assert posts["failed"] == 0 and posts["sent"] > 20, posts.get("failures")
    assert rid in posts["releases"] and olds & set(posts["releases"]), posts["releases"]
    query = "SELECT count(*), count(DISTINCT note) FROM visits_visit WHERE note LIKE $$rollout-%$$"
    rows = cluster.hosts["db"].run(f"runuser -u postgres -- psql -At demo -c '{query}'").stdout.strip()
    assert rows == f"{posts['sent']}|{posts['sent']}", f"each post writes exactly one row: {rows} for {posts['sent']} posts"
    # The visitor is still logged in, and the old release's assets still answer.
    after = visitor.run("check")
    assert after["logged_in"], after
    assert after["assets"] == {url: {"status": 200, "same": True} for url in old_assets}, after["assets"]


def test_the_first_rollout_rolls_back_to_the_release_the_converge_put_live(cluster: Cluster) -> None:
    listed = cluster.salt(APPS, "django_release.list_releases", ["demo"], tgt_type="list")
    converged, rolled_out = {a: listed[a]["releases"][0] for a in APPS}, listed[APPS[0]]["current"]
    back, seconds = orchestrate(cluster, "orch.rollback")
    timing("orch.rollback to the converge's release", seconds)
    assert back["retcode"] == 0 and back["release"] == converged[APPS[0]], json.dumps(back, indent=1)[:3000]
    assert live(cluster, APPS) == converged
    again, seconds = orchestrate(cluster, "orch.deploy", {"release": "v2"})
    timing("orch.deploy v2 again (built: switches only)", seconds)
    assert again["retcode"] == 0 and again["release"] == rolled_out, json.dumps(again, indent=1)[:3000]


BROKEN_CACHE = """

from django.core.cache.backends.redis import RedisCache


def _refuse(*args, **kwargs):
    raise ConnectionError("cache writes refused by this release")


RedisCache.set = _refuse
"""


def test_unhealthy_release_stops_after_first_batch_and_rolls_back(cluster: Cluster, releases: Releases, visitor: Visitor) -> None:
    before = live(cluster, APPS)
    # it imports, passes check --deploy and collectstatic, but its cache writes fail, so /healthz says "fail"
    broken = {"visits/apps.py": lambda t: t + BROKEN_CACHE}
    releases.commit("v3-unhealthy", broken)
    with Traffic(lb_ip(cluster), DOMAIN) as traffic:
        result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v3-unhealthy"})
    timing("orch.deploy of an unhealthy release (stops)", seconds)
    print(f"\n[lab figures] unhealthy release under load: {traffic}", flush=True)
    assert result["retcode"] != 0 and result["result"] is False, result
    assert result["server"] == APPS[0] and "did not become healthy" in result["comment"], result["comment"]
    steps = [s["step"] for s in result["steps"]]
    assert f"switch {APPS[1]}" not in " ".join(steps), steps
    assert not traffic.failures, str(traffic)
    assert live(cluster, APPS) == before
    back, seconds = orchestrate(cluster, "orch.rollback")
    timing("orch.rollback", seconds)
    assert back["retcode"] == 0 and back["release"] == before[APPS[0]], json.dumps(back, indent=1)[:3000]
    assert live(cluster, APPS) == before
    assert up_in_haproxy(cluster) == set(APPS), haproxy(cluster)
    assert visitor.run("check")["logged_in"], "a logged-in visitor stays logged in across a rollback"


def test_release_that_does_not_import_stops_before_any_switch(cluster: Cluster, releases: Releases) -> None:
    before = live(cluster, APPS)
    releases.commit("v3-no-import", {"visits/models.py": lambda t: "import a_module_that_does_not_exist  # noqa\n" + t})
    result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v3-no-import"})
    timing("orch.deploy of a release that does not import (stops)", seconds)
    assert result["retcode"] != 0 and result["step"] == "build" and result["server"] == APPS[0], result
    assert "a_module_that_does_not_exist" in result["comment"], result["comment"]
    assert live(cluster, APPS) == before
    assert up_in_haproxy(cluster) == set(APPS), haproxy(cluster)
    # the refused build is gone: nothing half-built is left to roll back to
    built = cluster.salt(APPS, "django_release.list_releases", ["demo"], tgt_type="list")
    assert not any(r.endswith(releases.head()) for listing in built.values() for r in listing["releases"]), built


def test_cut_app_server_is_routed_around(cluster: Cluster) -> None:
    victim = APPS[1]
    with Traffic(lb_ip(cluster), DOMAIN) as traffic:
        time.sleep(1)
        cluster.cut(victim)
        try:
            marked = until(lambda: haproxy(cluster)[victim]["status"].startswith("DOWN"), 30, f"HAProxy marks {victim} down")
            timing(f"cut {victim} -> HAProxy marks it DOWN", marked)
            before_down = str(traffic)
            traffic.reset()
            time.sleep(5)
        finally:
            cluster.heal(victim)
    print(f"\n[lab figures] while {victim} was cut, before DOWN: {before_down}; after DOWN: {traffic}", flush=True)
    # A request that was on the victim when its network went is lost with it (no LB can
    # answer it); every request sent once HAProxy knows must be answered.
    assert not traffic.failures and traffic.sent > 10, str(traffic)
    assert victim not in traffic.servers, str(traffic)
    until(lambda: haproxy(cluster)[victim]["status"].startswith("UP"), 60, f"{victim} back UP after heal")


FORGED = "10.0.0.5/32 scram-sha-256\nhost all all 0.0.0.0/0 trust\n#"
FORGING_CONF = "/etc/salt/minion.d/zz-forged.conf"


def _minion_back(cluster: Cluster, name: str) -> None:
    """Restart ``name``'s salt-minion (it reads its config again) and republish its mine."""
    cluster.hosts[name].run("systemctl restart salt-minion")
    until(lambda: cluster.salt([name], "test.ping", tgt_type="list", timeout=5).get(name) is True, 60, f"{name}'s minion answers again")
    assert cluster.salt([name], "mine.update", tgt_type="list", timeout=30).get(name) is not False


def test_a_forged_mine_address_reaches_no_config_and_names_its_server(cluster: Cluster) -> None:
    attacker, others = APPS[0], ["db", "lb", APPS[1]]
    # Root on an app server: its minion's own config wins over pillar's mine_functions,
    # so every mine.update (the rollout's too) publishes what the attacker wrote.
    forging = {"mine_functions": {"salt_django_address": [{"mine_function": "test.echo"}, [FORGED]]}}
    cluster.hosts[attacker].path(FORGING_CONF).write_text(json.dumps(forging))
    try:
        _minion_back(cluster, attacker)
        published = cluster.run_runner("mine.get", attacker, "salt_django_address")
        assert published == {attacker: [FORGED]}, f"the forged value is what the master hands out: {published}"
        converged, seconds = apply_all(cluster, others)
        timing("converge of db, lb and app2 with a forged mine address", seconds)
        for name in others:
            bad = failed({name: converged[name]}).get(name, {})
            assert list(bad) == ["saltdjango_|-salt-django-peers-trusted_|-salt-django-peers-trusted_|-peers_trusted"], bad
            assert attacker in next(iter(bad.values())) and "not an IP address" in next(iter(bad.values())), bad
        pg_hba = cluster.hosts["db"].run("cat /etc/postgresql/*/main/pg_hba.conf").stdout
        assert FORGED.splitlines()[1] not in pg_hba and "trust" not in pg_hba and attacker not in pg_hba, pg_hba
        assert f"server {attacker} " not in cluster.hosts["lb"].path("/etc/haproxy/haproxy.cfg").read_text()
        assert "10.0.0.5" not in cluster.hosts[APPS[1]].path("/etc/nginx/sites-available/demo.conf").read_text()
        result, _ = orchestrate(cluster, "orch.deploy")
        assert result["retcode"] != 0 and result["step"] == "trust" and result["server"] == attacker, result
        assert "not an IP address" in result["comment"], result["comment"]
    finally:
        cluster.hosts[attacker].path(FORGING_CONF).unlink(missing_ok=True)
        _minion_back(cluster, attacker)
        apply_all(cluster, others)
    until(lambda: up_in_haproxy(cluster) >= set(APPS), 30, f"{attacker} back in HAProxy once it publishes its real address")


def test_new_app_server_joins_by_itself(cluster: Cluster) -> None:
    timing("master restarted with the reactor", cluster.restart_master(master_conf("salt-django-reactor.conf")))
    rid = live(cluster, APPS[:1])[APPS[0]]
    t0 = time.monotonic()
    cluster.add_host(SPARE)

    def served_by_spare() -> bool:
        return any(get(lb_ip(cluster), DOMAIN).server == SPARE for _ in range(3))

    until(served_by_spare, 600, f"HAProxy routes to {SPARE}", interval=3)
    timing(f"{SPARE} started -> served through the LB (reactor)", time.monotonic() - t0)
    # it serves what the cluster serves (the last rollout's release), not the pillar's source
    assert live(cluster, [SPARE]) == {SPARE: rid}
    pages = [get(lb_ip(cluster), DOMAIN) for _ in range(9)]
    assert {p.release for p in pages} == {rid} and SPARE in {p.server for p in pages}
    # the master's restart made every minion reconnect (a start event each): those joins end too
    timing("the reactor's other joins settled", settled(cluster))


def test_second_rollout_is_refused_while_one_runs(cluster: Cluster, releases: Releases) -> None:
    healthy_again = {
        "visits/apps.py": lambda t: t.replace(BROKEN_CACHE, ""),
        "visits/models.py": lambda t: t.replace("import a_module_that_does_not_exist  # noqa\n", ""),
        TEMPLATE: lambda t: t.replace("demo v2</h1>", "demo v4</h1>"),
    }
    short = releases.commit("v4", healthy_again)
    lock = rollout_lock(cluster)
    cluster.run_runner("event.send", "salt-django/deploy", data={"release": "v4"}, check=True)
    until(lambda: "orch.deploy of v4" in lock.read_text(), 60, "the rollout started by the deploy event holds the lock", interval=0.2)
    second, _ = orchestrate(cluster, "orch.deploy", {"release": "v4"})
    assert second["retcode"] != 0 and "another rollout is running: orch.deploy of v4" in second["comment"], second
    until(lambda: lock_free(cluster), 600, "the rollout started by the event ends", interval=2)
    apps = [*APPS, SPARE]
    served = live(cluster, apps)
    assert len(set(served.values())) == 1 and served[SPARE].endswith(short), served


def test_schedule_runs_on_exactly_one_app_server(cluster: Cluster) -> None:
    apps = [cluster.hosts[name] for name in sorted([*APPS, SPARE])]
    runs = three_minutes_of_ticks(apps, cluster.applied_at)  # type: ignore[attr-defined]
    uid = int(apps[0].run(["id", "-u", "demo"]).stdout)
    assert [u for _, u in runs[apps[0].name]] == [uid] * 3, runs
    for other in apps[1:]:
        assert records(other, TICKS) == [], f"{other.name} ran the schedule too"
        assert other.run("ls /etc/systemd/system | grep -c salt-django-job-", check=False).stdout.strip() == "0"
