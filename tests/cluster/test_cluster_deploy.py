"""The cluster of pillar/topology.yaml, for real: db, cache, app1, app2 and lb
(app3 joins later), driven by a salt-master configured from conf/master.d/
(minions from conf/minion.d/).

One cluster serves the whole module, and the tests build on each other in
file order, as an operator's day would: converge from nothing, converge
again, check which secrets each pillar holds and who may reach the database
and cache, roll out a release under load (a browser, long requests, form
posts), roll it back and out again, roll out broken ones (unhealthy, not
importing, HAProxy refused after the switch) and roll back, reload HAProxy
with a server in maintenance, restore a scheduled backup's off-host copy,
lose an app server, let one forge its mine address, add one while another
forges start events, fail a batch of two, forge deploy events, and try two
rollouts at once. Releases come from a git repository served to the cluster
by ``git daemon`` on this machine's bridge address.

Timings are printed (run with -s) as ``[lab timing]`` lines.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import media
from tests.cluster.conftest import timing
from tests.cluster.helpers import (
    APPS,
    DOMAIN,
    HOOK_RUNS,
    HOSTS,
    SECRET_KEY,
    SPARE,
    TEMPLATE,
    WORKERS,
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
    pillar_changed,
    rollout_lock,
    settled,
    state_dir,
    until,
    up_in_haproxy,
    write_secrets,
)
from tests.cluster.traffic import SlowRequests, Traffic, Visitor, get
from tests.integration.helpers import (
    TICK_MINUTES,
    TICKS,
    TLS_OFFERS,
    assert_handshake,
    enqueue,
    finished_job,
    handshake,
    minutes_of_ticks,
    records,
    served_certificate,
    start_pebble,
)
from tests.lab.browser import PageLoads
from tests.lab.cluster import SALT_BIN, Cluster
from tests.lab.hosts import Host, LabError

pytestmark = pytest.mark.slow

MEDIA_CLIENT = Path(media.__file__)
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
    keys = ("DB_PASSWORD", "REDIS_PASSWORD", "BACKUP_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    assert first["added"] == [f"projects:demo:secrets:{key}" for key in keys], first
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
    """Each server's pillar holds only the secrets its roles need; only the
    app's env file holds a secret on the hosts (Redis' config holds the
    password's SHA-256), and on the storage server SeaweedFS's identities
    (the S3 keys, not world-readable); the master's job cache (every state
    run's return) holds none."""
    secrets = [*passwords(cluster).values(), SECRET_KEY]
    patterns = " ".join(f"-e '{value}'" for value in secrets)
    expected = {name: {"/etc/demo/env"} if name in APPS + WORKERS else set() for name in HOSTS}
    expected["cache"] = {"/etc/seaweedfs/identities.json"}
    mode = cluster.hosts["cache"].run("stat -c '%a %U %G' /etc/seaweedfs/identities.json").stdout.strip()
    assert mode == "640 root seaweedfs", mode
    found = {
        name: set(cluster.hosts[name].run(f"grep -rlsF {patterns} /etc /srv /var /opt /root /tmp /run /home", check=False).stdout.split())
        for name in HOSTS
    }
    assert found == expected
    jobs = cluster.master_dir / "var" / "cache" / "salt" / "master" / "jobs"
    leaks = [str(path) for path in jobs.rglob("*") if path.is_file() and any(v.encode() in path.read_bytes() for v in secrets)]
    assert list(jobs.rglob("*")) and not leaks, leaks
    # Last: pillar.items' returns land in the job cache too.
    named = {"SECRET_KEY": SECRET_KEY, **passwords(cluster)}
    pillars = cluster.salt(HOSTS, "pillar.items", tgt_type="list", timeout=60)
    held = {name: sorted(key for key, value in named.items() if value in json.dumps(pillars[name])) for name in HOSTS}
    need = {"db": ["BACKUP_KEY", "DB_PASSWORD"], "cache": ["REDIS_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY"], "lb": []}
    assert held == {name: need.get(name, sorted(set(named) - {"BACKUP_KEY"})) for name in HOSTS}, held


#: Each server's open ports and who may connect (salt/firewall): every other
#: source must find the port closed (dropped, not refused, by the firewall).
FIREWALL = {
    ("lb", 80): set(HOSTS),
    ("lb", 443): set(HOSTS),
    ("app1", 8080): {"lb"},
    ("app1", 443): set(),
    ("app2", 8080): {"lb"},
    ("db", 5432): {*APPS, *WORKERS},
    ("cache", 6379): {*APPS, *WORKERS},
    ("cache", 8333): {*APPS, *WORKERS},
    ("worker", 8080): set(),
    ("db", 6379): set(),
}
#: Run on each source host: connects to every target at once, prints what each did.
PROBE = """
import concurrent.futures, json, socket, sys
def probe(target):
    try:
        socket.create_connection(tuple(target), 1).close()  # on one bridge: a SYN-ACK takes well under 1 s
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "dropped"
with concurrent.futures.ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(probe, json.loads(sys.argv[1])))))
"""


def test_each_server_opens_only_what_its_roles_serve_to_whom_uses_it(cluster: Cluster) -> None:
    targets = [[cluster.hosts[name].ip, port] for name, port in FIREWALL]
    ssh = [[cluster.hosts[name].ip, 22] for name in HOSTS]
    rows, wrong = [], []
    for source in HOSTS:
        seen = json.loads(cluster.hosts[source].run(["python3", "-c", PROBE, json.dumps(targets + ssh)]).stdout)
        for ((name, port), allowed), observed in zip(FIREWALL.items(), seen, strict=False):
            if name == source:
                continue  # its own address: loopback, never filtered
            expected = "open" if source in allowed else "dropped"
            rows.append(f"| {source} | {name}:{port} | {expected} | {observed} |")
            if observed != expected:
                wrong.append(rows[-1])
        closed = [f"{name}:22 {observed}" for name, observed in zip(HOSTS, seen[len(targets) :], strict=True) if observed == "dropped"]
        assert not closed, f"SSH must stay reachable from {source}: {closed}"
    print("\n[lab figures] firewall matrix\n| source | destination | expected | observed |\n|---|---|---|---|\n" + "\n".join(rows))
    assert not wrong, "\n".join(wrong)
    ruleset = cluster.hosts["db"].run("nft list table inet salt_django").stdout
    assert "policy drop" in ruleset and "tcp dport 5432" in ruleset, ruleset
    assert 'include "/etc/nftables.d/salt-django.nft"' in cluster.hosts["db"].run("cat /etc/nftables.conf").stdout


def test_db_and_cache_refuse_strangers(cluster: Cluster) -> None:
    db, cache = cluster.hosts["db"].ip, cluster.hosts["cache"].ip
    # Behind the firewall, pg_hba refuses whatever is not an app or worker
    # server: the db server's own private address, for one.
    startup = (
        "import socket, struct; p = b'user\\0demo\\0database\\0demo\\0\\0';"
        f" s = socket.create_connection(('{db}', 5432), 5); s.sendall(struct.pack('!ii', 8 + len(p), 196608) + p);"
        " print(s.recv(500).decode(errors='replace'))"
    )
    refused = cluster.hosts["db"].run(f'python3 -c "{startup}"').stdout
    assert "no pg_hba.conf entry" in refused, refused
    admitted = cluster.hosts["app1"].run(
        f"PGPASSWORD={passwords(cluster)['DB_PASSWORD']} psql 'host={db} dbname=demo user=demo connect_timeout=5' -Atc 'select 1'"
    )
    assert admitted.stdout.strip() == "1"
    ping = f"import socket; s = socket.create_connection(('{cache}', 6379), 5); s.sendall(b'PING\\r\\n'); print(s.recv(200).decode())"
    for name in [*APPS, *WORKERS, "cache"]:
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


@pytest.mark.parametrize(("options", "accepted"), TLS_OFFERS.values(), ids=TLS_OFFERS.keys())
def test_the_lb_offers_only_the_intermediate_profile(cluster: Cluster, options: str, accepted: bool) -> None:
    assert_handshake(handshake(cluster.hosts["db"], lb_ip(cluster), DOMAIN, options), accepted)


def test_the_lb_sends_each_header_once_compresses_static_files_only_and_limits_logins(cluster: Cluster) -> None:
    db, worker, lb = cluster.hosts["db"], cluster.hosts["worker"], lb_ip(cluster)
    curl = f"curl -sk --resolve {DOMAIN}:443:{lb} -H 'Accept-Encoding: gzip'"
    page = db.run(f"{curl} -o /dev/null -D - https://{DOMAIN}/admin/login/").stdout.lower()
    for header in ("strict-transport-security", "content-security-policy", "permissions-policy", "cross-origin-opener-policy"):
        assert page.count(f"\n{header}:") == 1, (header, page)
    assert "\nserver: nginx\n" in page and "content-encoding" not in page, page
    css = db.run(f"{curl} -o /dev/null -D - https://{DOMAIN}/static/admin/css/base.css").stdout.lower()
    assert "content-encoding: gzip" in css, css
    post = f"{curl} -o /dev/null -w '%{{http_code}}\\n' -X POST -d username=x https://{DOMAIN}/admin/login/"
    first = db.run(["sh", "-c", f"for i in $(seq 11); do {post}; done"]).stdout.split()
    assert "429" not in first[:10] and first[10] == "429", first
    said = db.run(f"{curl} -X POST https://{DOMAIN}/admin/login/").stdout
    assert "Too many login attempts" in said, said
    other = worker.run(["sh", "-c", f"for i in $(seq 3); do {post}; done"]).stdout.split()
    assert "429" not in other, f"another address is not limited: {other}"


def test_the_lb_gets_its_certificate_from_an_acme_ca_and_keeps_it(cluster: Cluster) -> None:
    """HAProxy routes the HTTP-01 challenge to certbot's listener and then
    serves the certificate; a renewal not due, an apply and a failed
    issuance keep it. Back to the self-signed one without tls:acme."""
    lb = cluster.hosts["lb"]
    directory = start_pebble(lb, DOMAIN, lb.ip)

    def acme(where: str) -> Callable[[dict], None]:
        return lambda data: data["projects"]["demo"].setdefault("tls", {}).update(acme={"directory": where, "email": "ops@example.org"})

    with pillar_changed(cluster, acme(directory)):
        ret = cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)["lb"]
        assert not failed({"lb": ret}), failed({"lb": ret})
        # A reload signals HAProxy and returns: its new workers take over the
        # listener a moment later.
        until(lambda: served_certificate(lb, lb.ip, DOMAIN).chains.endswith(": OK"), 15, "the issued certificate served")
        served = served_certificate(lb, lb.ip, DOMAIN)
        assert served.names == f"DNS:{DOMAIN}", served
        renewal = lb.run("certbot renew --no-random-sleep-on-renew 2>&1").stdout
        assert "not yet due for renewal" in renewal, renewal[-1500:]
        again = cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)["lb"]
        assert not [sid for sid, state in again.items() if state["changes"]], "nothing to do"
        assert get(lb_ip(cluster), DOMAIN).status == 200
    with pillar_changed(cluster, acme("https://127.0.0.1:14001/dir")):
        refused = cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)["lb"]
    assert "certbot could not get a certificate" in json.dumps(failed({"lb": refused})), failed({"lb": refused})
    assert served_certificate(lb, lb.ip, DOMAIN).fingerprint == served.fingerprint
    back = cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)
    assert not failed(back), failed(back)
    until(lambda: served_certificate(lb, lb.ip, DOMAIN).fingerprint != served.fingerprint, 15, "self-signed again")
    assert get(lb_ip(cluster), DOMAIN).status == 200


def test_an_upload_through_one_app_server_is_served_by_the_other(cluster: Cluster) -> None:
    """Media on the storage server (projects:demo:media: {backend: s3}): a file
    uploaded through app1 reads back, the same bytes, through app2 and through
    HAProxy, sandboxed; the S3 port admits the app servers and refuses the lb."""
    lb, storage = cluster.hosts["lb"], cluster.hosts["cache"]
    lb.path("/root/media.py").write_text(MEDIA_CLIENT.read_text())
    lb.run(f"head -c {10 << 20} /dev/urandom > /root/upload.bin")
    digest = lb.run("sha256sum /root/upload.bin").stdout.split()[0]

    def on_lb(*args: str) -> dict:
        return json.loads(lb.run(["python3", "/root/media.py", *args], timeout=300).stdout)

    # Straight to app1's Nginx on its private port, as HAProxy sends it.
    app1, app2 = (cluster.hosts[name].ip for name in APPS[:2])
    stored = on_lb("upload", app1, "8080", "0", DOMAIN, "/root/upload.bin")
    assert stored["status"] == 200 and stored["server"] == APPS[0], stored
    assert stored["url"] == f"/media/{stored['name']}" and stored["name"].startswith("uploads/upload"), stored
    timing("10 MB upload to app1 (plain HTTP, app Nginx -> Django -> S3)", stored["seconds"])
    # Nothing of it on the app server's disk: it is in the bucket.
    assert not cluster.hosts[APPS[0]].run(f"find /srv/demo/shared/media -type f -name '{Path(stored['name']).name}'").stdout
    read = on_lb("download", app2, "8080", "0", DOMAIN, stored["url"], "/root/download.bin")
    assert read["status"] == 200 and read["sha256"] == digest, read
    headers = read["headers"]
    assert "sandbox" in headers.get("content-security-policy", "").split("; "), headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("content-disposition") == "attachment", headers
    timing("10 MB download from app2 (plain HTTP, app Nginx -> S3)", read["seconds"])

    # Through HAProxy (TLS) from this machine, both ways: the figures of the whole stack.
    local = cluster.master_dir / "media-upload.bin"
    local.write_bytes(lb.path("/root/upload.bin").read_bytes())
    through = media.upload(lb_ip(cluster), 443, True, DOMAIN, local)
    assert through["status"] == 200, through
    back = media.download(lb_ip(cluster), 443, True, DOMAIN, through["url"], cluster.master_dir / "media-download.bin")
    assert back["status"] == 200 and back["sha256"] == digest, back
    print(f"\n[lab figures] media s3, 10 MB via HAProxy TLS: upload {through['seconds']:.2f}s, download {back['seconds']:.2f}s", flush=True)
    # Only GET and HEAD; a name that is not there is a plain 404; no listing, no query tricks.
    for method in ("PUT", "DELETE"):
        verdict = lb.run(
            f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} -H 'Host: {DOMAIN}' http://{app2}:8080{stored['url']}"
        ).stdout
        assert verdict == "405", (method, verdict)
    for path in ("/media/uploads/missing.bin", "/media/", "/media/?list-type=2"):
        verdict = lb.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {DOMAIN}' http://{app2}:8080{path}").stdout
        assert verdict == "404", (path, verdict)

    # The S3 port: app servers get the object (anonymous GET), the lb a 403 from Nginx;
    # SeaweedFS's own ports answer on loopback only.
    bucket = f"http://{storage.ip}:8333/demo-media/{stored['name']}"
    for name in APPS + WORKERS:
        got = cluster.hosts[name].run(f"curl -s {bucket} | sha256sum").stdout.split()[0]
        assert got == digest, name
    assert lb.run(f"curl -s -m 3 {bucket}", check=False).returncode == 28, "the firewall drops the lb's connection"
    refused = storage.run(f"curl -s -w '\n%{{http_code}}' {bucket}").stdout
    assert refused.endswith("\n403") and "nginx" in refused, f"Nginx admits the app and worker servers only: {refused}"
    listening = storage.run("ss -Hltn").stdout.splitlines()
    for port in (18333, 19333, 18888, 18080):
        bound = {line.split()[3].rsplit(":", 1)[0] for line in listening if line.split()[3].endswith(f":{port}")}
        assert bound == {"127.0.0.1"}, (port, bound)
    # The project's keys reach its own bucket only: listing it yes, making another no.
    keys = passwords(cluster)
    sign = f"--aws-sigv4 aws:amz:us-east-1:s3 --user {keys['S3_ACCESS_KEY']}:{keys['S3_SECRET_KEY']}"
    listed = cluster.hosts[APPS[0]].run(f"curl -s -w '%{{http_code}}' {sign} 'http://{storage.ip}:8333/demo-media?list-type=2'").stdout
    assert listed.endswith("200") and stored["name"] in listed, listed[-300:]
    made = cluster.hosts[APPS[0]].run(f"curl -s -o /dev/null -w '%{{http_code}}' {sign} -X PUT http://{storage.ip}:8333/other-media").stdout
    assert made == "403", made
    owners = storage.run("ps -o uid= -C weed").stdout.split()
    assert owners and set(owners) == {storage.run("id -u seaweedfs").stdout.strip()}, owners


def test_a_job_enqueued_through_the_lb_runs_on_the_worker_server(cluster: Cluster) -> None:
    lb = cluster.hosts["lb"]
    done = finished_job(lb, enqueue(lb, seconds=0.5))
    assert done["ran_on"] in WORKERS and done["enqueued_on"] in APPS and done["runs"] == 1, done
    for name in APPS:
        programs = cluster.hosts[name].run("supervisorctl status", check=False).stdout
        assert "demo-worker" not in programs and "demo-beat" not in programs, (name, programs)
    status = cluster.hosts[WORKERS[0]].run("supervisorctl status", check=False).stdout
    assert "demo-app-" not in status and status.count("RUNNING") == 2 and "demo-beat" in status, status


class _Jobs:
    """Jobs enqueued through the load balancer, one every half second, while something happens."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.tokens: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Jobs:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tokens.append(enqueue(self.host, seconds=0.2))
            except (AssertionError, LabError) as exc:
                self.failures.append(str(exc)[-300:])
            self._stop.wait(0.5)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_rolling_deploy_under_load_drops_nothing(cluster: Cluster, releases: Releases, visitor: Visitor) -> None:
    v2 = {
        TEMPLATE: lambda t: t.replace("salt-django demo</h1>", "salt-django demo v2</h1>"),
        CSS: lambda t: t.replace("#0c4b33", "#8b0000"),
        JS: lambda t: t.replace("Scripts ran.", "Scripts ran, v2."),
    }
    short = releases.commit("v2", v2)
    # each server (worker included) built the converge's release itself: ids may differ in their second
    olds = set(live(cluster, APPS + WORKERS).values())
    hooks_before = {name: len(records(cluster.hosts[name], HOOK_RUNS)) for name in APPS}
    superuser = "/srv/demo/bin/manage createsuperuser --noinput --username admin --email a@example.org"
    cluster.hosts[APPS[0]].run(superuser, env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
    old_assets = visitor.run("login", "--user", "admin", "--password", ADMIN_PASSWORD)["assets"]
    lb = cluster.hosts["lb"]
    long_job = enqueue(lb, seconds=10)
    started = time.time()
    with (
        Traffic(lb_ip(cluster), DOMAIN) as traffic,
        PageLoads(f"https://{DOMAIN}/", {DOMAIN: lb_ip(cluster)}) as browser,
        SlowRequests(lb_ip(cluster), DOMAIN) as slow,
        visitor.posting("rollout"),
        _Jobs(lb) as jobs,
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
    # a page whose own request this machine's interface change aborted rendered nothing to check
    rendered = [v for v in browser.visits if v.release or not v.network_changed]
    scripts = {(v.release in olds, v.release == rid, v.script) for v in rendered}
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

    # Background jobs: the 10-s job running when the rollout started finished on the old
    # worker, which only then restarted; every job enqueued meanwhile ran exactly once, on
    # the release that enqueued it or a newer one (release ids sort by time).
    running = finished_job(lb, long_job, timeout=120)
    ran = [finished_job(lb, token, timeout=120) for token in jobs.tokens]
    counts = {
        "enqueued": len(jobs.tokens),
        "completed": sum(1 for job in ran if job["runs"] >= 1),
        "lost": sum(1 for job in ran if job["runs"] == 0),
        "duplicated": sum(1 for job in ran if job["runs"] > 1),
        "on the new release": sum(1 for job in ran if job["ran_release"] == rid),
    }
    print(f"[lab figures] jobs during the rollout: {counts}; enqueue failures: {len(jobs.failures)}", flush=True)
    assert not jobs.failures, jobs.failures[:3]
    assert running["runs"] == 1 and running["ran_release"] in olds and running["started"] < started < running["finished"], running
    assert counts["enqueued"] > 10 and counts["lost"] == counts["duplicated"] == 0, counts
    # a job of the new release ran on it; one of the old release (whichever server's build) on either
    assert all(job["ran_release"] == rid or {job["enqueued_release"], job["ran_release"]} <= olds for job in ran), ran
    assert all(job["ran_on"] in WORKERS for job in ran), ran
    assert counts["on the new release"] > 0
    assert running["finished"] <= min(job["started"] for job in ran if job["ran_release"] == rid), "the worker restarted after its job"


def test_the_first_rollout_rolls_back_to_the_release_the_converge_put_live(cluster: Cluster) -> None:
    listed = cluster.salt(APPS, "django_store.list_releases", ["demo"], tgt_type="list")
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
    built = cluster.salt(APPS, "django_store.list_releases", ["demo"], tgt_type="list")
    assert not any(r.endswith(releases.head()) for listing in built.values() for r in listing["releases"]), built


REFUSE_FLAG = "/etc/salt-django-lab-refuse-cache"
REFUSED_WHERE_FLAGGED = f"""

import os

if os.path.exists({REFUSE_FLAG!r}):
    RedisCache.set = _refuse
"""


def _healthy(changes: dict[str, Callable[[str], str]]) -> dict[str, Callable[[str], str]]:
    """A commit without the faults earlier tests put in the demo, plus ``changes``."""

    def apps(text: str) -> str:
        return text.replace(REFUSED_WHERE_FLAGGED, "").replace(BROKEN_CACHE, "")

    def models(text: str) -> str:
        return text.replace("import a_module_that_does_not_exist  # noqa\n", "")

    fixes = {"visits/apps.py": apps, "visits/models.py": models}

    def then(fix: Callable[[str], str], change: Callable[[str], str]) -> Callable[[str], str]:
        return lambda text: change(fix(text))

    return {**fixes, **{path: then(fixes.get(path, str), change) for path, change in changes.items()}}


def test_a_failure_after_the_switch_is_recorded_and_rolled_back_one_release(cluster: Cluster, releases: Releases) -> None:
    before = live(cluster, APPS)
    short = releases.commit("v3-lb-fails", _healthy({CSS: lambda t: t.replace("#8b0000", "#00008b")}))

    def break_haproxy(data: dict) -> None:
        data["haproxy"] = {"timeout_connect": "not-a-time"}

    # every server switches; then HAProxy's new configuration is refused
    with pillar_changed(cluster, break_haproxy):
        result, _ = orchestrate(cluster, "orch.deploy", {"release": "v3-lb-fails"})
    assert result["retcode"] != 0 and result["step"] == "refresh load balancer", json.dumps(result, indent=1)[:3000]
    switched = live(cluster, APPS)
    assert all(rid.endswith(short) for rid in switched.values()), switched
    back, _ = orchestrate(cluster, "orch.rollback")
    assert back["retcode"] == 0 and back["release"] == before[APPS[0]], json.dumps(back, indent=1)[:3000]
    assert live(cluster, APPS) == before


def test_a_haproxy_reload_keeps_a_server_in_maintenance(cluster: Cluster) -> None:
    resting = APPS[1]
    cluster.salt("lb", "haproxy_runtime.set_state", ["demo_app", resting, "maint"])
    try:
        with pillar_changed(cluster, lambda data: data.setdefault("haproxy", {}).update(timeout_client="31s")):
            ret = cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)["lb"]
        assert not failed({"lb": ret}), failed({"lb": ret})
        changed = sorted(sid.split("_|-")[1] for sid, state in ret.items() if state["changes"])
        assert changed == ["haproxy-config-managed", "haproxy-server-state-saved", "haproxy-service-running"], changed
        assert haproxy(cluster)[resting]["status"] == "MAINT", haproxy(cluster)
        assert {get(lb_ip(cluster), DOMAIN).server for _ in range(6)} == {APPS[0]}
        cluster.salt("lb", "state.sls", ["haproxy"], timeout=300)
        assert haproxy(cluster)[resting]["status"] == "MAINT", "and again, back to the pillar as it was"
    finally:
        cluster.salt("lb", "haproxy_runtime.set_state", ["demo_app", resting, "ready"])
    until(lambda: up_in_haproxy(cluster) >= set(APPS), 30, f"{resting} back UP")


def _rows(cluster: Cluster) -> int:
    return int(cluster.hosts["db"].run("runuser -u postgres -- psql -At demo -c 'SELECT count(*) FROM visits_visit'").stdout)


def test_the_scheduled_backup_is_copied_off_the_db_server_and_restores(cluster: Cluster) -> None:
    def copies() -> list[dict]:
        return cluster.run_runner("rollout.backups", check=True)["copies"]

    def every_minute(data: dict) -> None:
        data["projects"]["demo"]["backups"] = {"schedule": "* * * * *"}

    def converge_db() -> None:
        ret = cluster.salt("db", "state.apply", timeout=600)
        assert set(ret) == {"db"} and not failed(ret), failed(ret) or ret

    with pillar_changed(cluster, every_minute):
        converge_db()
        seen = {c["copy"] for c in copies()}
        waited = until(
            lambda: any(c["copy"].endswith("-scheduled.dump.sdbk") and c["copy"] not in seen for c in copies()),
            150,
            "a scheduled backup's copy",
        )
    converge_db()
    timing("scheduled backup -> encrypted copy on the master", waited)
    # every minute until db converged again: one more may have run meanwhile; the newest holds what is there now
    copy = max((c for c in copies() if c["copy"] not in seen), key=lambda c: c["copy"])
    rows = _rows(cluster)
    # the copy is ciphertext: not a pg_dump archive (PGDMP), not a row of it
    assert not Path(copy["path"]).read_bytes().startswith(b"PGDMP") and b"visits_visit" not in Path(copy["path"]).read_bytes()
    for _ in range(3):
        assert get(lb_ip(cluster), DOMAIN).status == 200  # each page view is a row
    assert _rows(cluster) == rows + 3
    # while a rollout holds the master's lock, nobody restores
    with rollout_lock(cluster).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = cluster.run_runner("rollout.restore", copy=copy["copy"], confirm=True)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert refused["result"] is False and "another rollout is running" in refused["comment"], refused
    outside = cluster.run_runner("rollout.restore", file="/etc/passwd", confirm=True)
    assert outside["result"] is False and "is not a backup of demo" in outside["comment"], outside
    t0 = time.monotonic()
    restored = cluster.run_runner("rollout.restore", copy=copy["copy"], confirm=True)
    timing("restore from the off-host copy", time.monotonic() - t0)
    assert restored["result"] is True, json.dumps(restored, indent=1)[:3000]
    assert _rows(cluster) == rows, "the rows of the backup, not the three written since"
    replaced = restored["backup"]
    assert replaced.endswith("-before-restore.dump"), replaced
    listing = cluster.salt("db", "django_db.list_backups", ["demo"])["db"]
    assert replaced in {b["file"] for b in listing}, listing
    until(lambda: up_in_haproxy(cluster) >= set(APPS), 30, "the app servers back in rotation")
    assert get(lb_ip(cluster), DOMAIN).status == 200


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
            during = str(traffic)
            refused, _ = orchestrate(cluster, "orch.deploy")
        finally:
            cluster.heal(victim)
    print(f"\n[lab figures] while {victim} was cut, before DOWN: {before_down}; after DOWN: {during}", flush=True)
    # a rollout would leave it behind on the old release while migrating the database
    assert refused["retcode"] != 0 and refused["step"] == "plan" and refused["server"] == victim, refused
    assert "allow_partial" in refused["comment"], refused["comment"]
    # A request that was on the victim when its network went is lost with it (no LB can
    # answer it); every request sent once HAProxy knows must be answered.
    assert not traffic.failures and traffic.sent > 10, during
    assert victim not in traffic.servers, during
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


def _highstates(cluster: Cluster) -> dict[str, list[str]]:
    """Every highstate job in the master's job cache: jid -> its targets."""
    jobs = cluster.run_runner("jobs.list_jobs", search_function="state.apply", check=True)
    return {jid: job["Target"] if isinstance(job["Target"], list) else [job["Target"]] for jid, job in jobs.items()}


def _fire_from(cluster: Cluster, name: str, events: list[dict]) -> None:
    """Root on ``name`` puts ``events`` on the master's bus: the ``events`` list
    form of a minion event, which carries no sender id."""
    preload = json.dumps({"events": events})
    cluster.hosts[name].run(["salt-call", "event.fire_master", "{}", "salt-django/unused", f"preload={preload}"])


def test_new_app_server_joins_by_itself(cluster: Cluster) -> None:
    """A new server joins once, even while a compromised app server forges a
    storm of start events for every server; the converged ones get no highstate."""
    timing("master restarted with the reactor", cluster.restart_master(master_conf("salt-django-reactor.conf")))
    timing("the joins of the master's restart (every minion reconnects) settled", settled(cluster))
    before = set(_highstates(cluster))
    rid = live(cluster, APPS[:1])[APPS[0]]
    t0 = time.monotonic()
    cluster.add_host(SPARE)
    storm = [{"tag": f"salt/minion/{name}/start", "data": {"id": name, "data": "Minion started"}} for name in [*HOSTS, SPARE]]
    _fire_from(cluster, APPS[0], storm * 20)

    def served_by_spare() -> bool:
        return any(get(lb_ip(cluster), DOMAIN).server == SPARE for _ in range(3))

    until(served_by_spare, 600, f"HAProxy routes to {SPARE}", interval=3)
    timing(f"{SPARE} started -> served through the LB (reactor)", time.monotonic() - t0)
    # it serves what the cluster serves (the last rollout's release), not the pillar's source
    assert live(cluster, [SPARE]) == {SPARE: rid}
    pages = [get(lb_ip(cluster), DOMAIN) for _ in range(9)]
    assert {p.release for p in pages} == {rid} and SPARE in {p.server for p in pages}
    timing("the storm's joins settled", settled(cluster))
    converged = Counter(name for jid, targets in _highstates(cluster).items() if jid not in before for name in targets)
    assert converged == {SPARE: 1}, converged


def test_a_batch_whose_second_server_fails_goes_back_whole(cluster: Cluster, releases: Releases) -> None:
    apps = [*APPS, SPARE]
    before = live(cluster, apps)
    # batches [app1, app2], [app3]: healthy on app1; on app2 its cache writes fail, so it never becomes healthy there
    releases.commit(
        "v3-fails-on-one",
        _healthy({"visits/apps.py": lambda t: t + BROKEN_CACHE.replace("RedisCache.set = _refuse\n", "") + REFUSED_WHERE_FLAGGED}),
    )
    cluster.hosts[APPS[1]].path(REFUSE_FLAG).write_text("")
    try:
        with pillar_changed(cluster, lambda data: data["rollout"].update(batch=2)), Traffic(lb_ip(cluster), DOMAIN) as traffic:
            result, seconds = orchestrate(cluster, "orch.deploy", {"release": "v3-fails-on-one"})
    finally:
        cluster.hosts[APPS[1]].path(REFUSE_FLAG).unlink()
    timing("orch.deploy, batch 2, second server fails (the batch goes back)", seconds)
    print(f"\n[lab figures] batch of 2 failing on its second server, under load: {traffic}", flush=True)
    assert result["retcode"] != 0 and result["step"] == "switch" and result["server"] == APPS[1], result
    steps = [step["step"] for step in result["steps"]]
    assert f"switch {APPS[0]}" in steps and f"restore {APPS[0]}" in steps, steps
    assert live(cluster, apps) == before
    statuses = {name: server["status"] for name, server in haproxy(cluster).items()}
    assert all(statuses[name].startswith("UP") for name in apps), statuses
    assert not traffic.failures, str(traffic)


def _requests(cluster: Cluster) -> list[str]:
    log = state_dir(cluster) / "requests.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_minion_cannot_start_a_rollout(cluster: Cluster) -> None:
    records = (state_dir(cluster) / "releases.json").read_text()
    seen = len(_requests(cluster))
    # the plain form (the master adds the sender's id) and the list form (no id at all)
    cluster.hosts[APPS[0]].run(["salt-call", "event.fire_master", json.dumps({"release": "v2"}), "salt-django/deploy"])
    forged = {"release": "v2", "project": None, "at": time.time(), "nonce": "forged", "sig": "0" * 64}
    _fire_from(cluster, APPS[0], [{"tag": "salt-django/deploy", "data": forged}])
    t0 = time.monotonic()
    while len(_requests(cluster)) < seen + 2:
        assert lock_free(cluster), rollout_lock(cluster).read_text()
        assert time.monotonic() - t0 < 60, _requests(cluster)
        time.sleep(0.2)
    verdicts = _requests(cluster)[seen:]
    assert sorted(v.split(" deploy request ")[1] for v in verdicts) == ["refused: bad signature", "refused: not signed"], verdicts
    # peer publishing (conf/master.d: peer, peer_run): no other minion's functions, no runner
    attacker = cluster.hosts[APPS[0]]
    other = json.loads(attacker.run(["salt-call", "--out=json", "publish.publish", "db", "cmd.run", "id"], check=False).stdout or "{}")
    assert other.get("local") in ({}, None, False), other
    runner = attacker.run(["salt-call", "--out=json", "publish.runner", "rollout.deploy"], check=False).stdout
    assert '"result": true' not in runner.lower(), runner
    time.sleep(2)
    assert lock_free(cluster) and (state_dir(cluster) / "releases.json").read_text() == records


NOOP_MIGRATION = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("visits", "0002_jobs_and_ticks")]
    operations = [migrations.RunSQL("SELECT 1", "SELECT 1")]
"""


def _serving(cluster: Cluster, apps: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """What serves: each app server's live release, each server's state in HAProxy."""
    return live(cluster, apps), {name: server["status"] for name, server in haproxy(cluster).items()}


def test_a_plan_lists_each_step_and_changes_nothing(cluster: Cluster, releases: Releases) -> None:
    apps = [*APPS, SPARE]
    changes = {TEMPLATE: lambda t: t.replace("demo v2</h1>", "demo v4</h1>"), "visits/migrations/0003_plan.py": lambda _: NOOP_MIGRATION}
    releases.commit("v4", _healthy(changes))
    before = _serving(cluster, apps)
    planned = cluster.run_runner("rollout.plan", release="v4", check=True)
    assert planned["result"] is True, planned
    steps = [(step["step"], step["servers"]) for step in planned["plan"]]
    assert steps == [
        ("build", apps + WORKERS),
        ("backup", ["db"]),
        ("migrate", [APPS[0]]),
        ("switch workers", WORKERS),
        *(("switch", [server]) for server in apps),
        ("refresh load balancer", ["lb"]),
        ("smoke test", ["lb"]),
    ], steps
    assert planned["plan"][2]["migrations"] == ["visits.0003_plan"], planned["plan"][2]
    assert _serving(cluster, apps) == before
    pending = cluster.salt(APPS[0], "django_manage.unapplied_migrations", ["demo"])[APPS[0]]
    assert pending["migrations"] == [], "the plan migrated nothing (the live release knows no 0003)"
    status = cluster.run_runner("rollout.status", check=True)
    assert {name: server["live"] for name, server in status["servers"].items()} == before[0], status


def test_second_rollout_is_refused_while_one_runs(cluster: Cluster, releases: Releases) -> None:
    short = releases.head()
    lock = rollout_lock(cluster)
    # what an operator watching the master sees: one progress event per batch
    watch = [str(SALT_BIN / "salt-run"), "-c", str(cluster.conf_dir), "state.event", "salt/run/*/progress", "count=-1", "pretty=False"]
    watcher = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(2)
    # the authorised path: a request the master signs, run by the reactor
    cluster.run_runner("rollout.request", release="v4", check=True)
    until(lambda: "orch.deploy of v4" in lock.read_text(), 60, "the rollout started by the deploy event holds the lock", interval=0.2)
    second, _ = orchestrate(cluster, "orch.deploy", {"release": "v4"})
    assert second["retcode"] != 0 and "another rollout is running: orch.deploy of v4" in second["comment"], second
    until(lambda: lock_free(cluster), 600, "the rollout started by the event ends", interval=2)
    watcher.terminate()
    shown = [json.loads(line.split("\t", 1)[1]) for line in watcher.communicate(timeout=30)[0].splitlines() if "\t" in line]
    batches = [event["message"] for event in shown if event.get("step") == "batch"]
    assert batches == [f"batch: switch {n}/3: {server}" for n, server in enumerate([*APPS, SPARE], 1)], shown
    assert _requests(cluster)[-1].endswith("accepted: release v4 of the project"), _requests(cluster)[-1]
    apps = [*APPS, SPARE]
    served = live(cluster, apps)
    assert len(set(served.values())) == 1 and served[SPARE].endswith(short), served


def test_the_periodic_task_runs_once_a_minute_on_one_server_only(cluster: Cluster) -> None:
    """Celery beat, on the worker server only; its schedule outlived the rollouts
    and the restore above. A window of 3 minutes, its edges half-way between two
    ticks, holds exactly 3 runs."""
    query = "SELECT extract(epoch FROM created), server FROM visits_tick ORDER BY created"
    rows = cluster.hosts["db"].run(f"runuser -u postgres -- psql -At -F ' ' demo -c '{query}'").stdout.split("\n")
    ticks = [(float(row.split()[0]), row.split()[1]) for row in rows if row.strip()]
    assert ticks and {server for _, server in ticks} == set(WORKERS[:1]), ticks
    end = ticks[-1][0] + 30
    assert ticks[0][0] < end - 180, f"fewer than 3 minutes of ticks: {ticks}"
    assert len([t for t, _ in ticks if end - 180 <= t < end]) == 3, ticks[-6:]


def test_schedule_runs_on_exactly_one_app_server(cluster: Cluster) -> None:
    apps = [cluster.hosts[name] for name in sorted([*APPS, SPARE])]
    runs = minutes_of_ticks(apps, cluster.applied_at)  # type: ignore[attr-defined]
    uid = int(apps[0].run(["id", "-u", "demo"]).stdout)
    assert [u for _, u in runs[apps[0].name]] == [uid] * TICK_MINUTES, runs
    for other in apps[1:]:
        assert records(other, TICKS) == [], f"{other.name} ran the schedule too"
        assert other.run("ls /etc/systemd/system | grep -c salt-django-job-", check=False).stdout.strip() == "0"
