"""What the single-server tests do inside a host: deploy, fetch pages, query."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.hosts import REPO_ROOT, Host

DOMAIN = "demo.localhost"
REPO_IN_HOST = "/root/salt-django"
_SUMMARY = re.compile(r"salt-django: (\d+) states, (\d+) (?:changed|would change), (\d+) failed, ([\d.]+) s")


@dataclass
class Deploy:
    returncode: int
    output: str
    states: int
    changed: int
    failed: int
    seconds: float

    @property
    def changed_ids(self) -> set[str]:
        """IDs of the states the summary lists as changed (or predicted to change)."""
        return {m.group(1) for m in re.finditer(r"^  changed  (\S+): ", self.output, re.MULTILINE)}


def make(host: Host, target: str = "deploy", check: bool = True) -> Deploy:
    """Run ``make <target>`` in the repo copy inside the host, as a user would."""
    result = host.run(f"cd {REPO_IN_HOST} && make {target}", check=False, timeout=900)
    output = result.stdout + result.stderr
    match = _SUMMARY.search(output)
    if check:
        assert result.returncode == 0, output[-4000:]
        assert match, output[-4000:]
    states, changed, failed, seconds = match.groups() if match else (0, 0, 0, 0)
    return Deploy(result.returncode, output, int(states), int(changed), int(failed), float(seconds))


def run_make(host: Host, target: str) -> tuple[int, str]:
    """``make <target>`` (e.g. ``release``) in the host: exit code and output, whatever they are."""
    result = host.run(f"cd {REPO_IN_HOST} && make {target}", check=False, timeout=900)
    return result.returncode, result.stdout + result.stderr


def quick_start_prerequisite() -> str:
    """The one line the README's quick start runs on a fresh server before
    ``make deploy`` (Debian's cloud images lack git and make), read from the
    README so that the tests run what it says."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    code = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    deploy = next(i for i, line in enumerate(code) if line.startswith("make deploy"))
    if len(code[:deploy]) != 1:
        raise ValueError(f"README.md, Quick start: one command before make deploy expected, found {code[:deploy]}")
    return code[0]


def quick_start(host: Host) -> None:
    """What the README's quick start has a user do before ``make``: its
    prerequisite line, then the repository (a copy of this one, at ``REPO_IN_HOST``)."""
    host.run(quick_start_prerequisite(), timeout=300)
    host.copy_in(REPO_ROOT, REPO_IN_HOST)


@contextmanager
def repo_host(name: str, base: Path, workdir: Path, boot: bool = True, local_pillar: str | None = None) -> Iterator[Host]:
    """A started test host set up as the README's quick start says, up to ``make``
    (:func:`quick_start`), with a local pillar if given."""
    host = Host(name, base, workdir / name, boot=boot)
    host.start()
    try:
        quick_start(host)
        if local_pillar is not None:
            host.run(["install", "-d", "-m", "0700", "/etc/salt-django/pillar"])
            host.run(["sh", "-c", "umask 077 && cat > /etc/salt-django/pillar/local.sls"], input=local_pillar)
        yield host
    finally:
        host.stop(hard=True)
        host.destroy()


def recorder(path: str) -> str:
    """A management command line (``manage.py shell -c``) that appends "<unix time> <uid>" to ``path``."""
    return f"shell -c \"import os, time; print(time.time(), os.getuid(), file=open('{path}', 'a'))\""


def records(host: Host, path: str) -> list[tuple[float, int]]:
    """What a :func:`recorder` wrote on ``host``: (time, uid) per run."""
    file = host.path(path)
    if not file.exists():
        return []
    return [(float(when), int(uid)) for when, uid in (line.split() for line in file.read_text().splitlines())]


#: Where :data:`TICK_JOB` records its runs.
TICKS = "/var/tmp/salt-django-ticks"
#: A per-minute schedule item (pillar ``projects:<p>:schedule:tick``).
TICK_JOB = {"manage": recorder(TICKS), "when": "* * * * *"}


#: Whole minutes a per-minute job is watched for: it runs exactly once in each.
TICK_MINUTES = 1


def minutes_of_ticks(hosts: list[Host], since: float) -> dict[str, list[tuple[float, int]]]:
    """The runs on each host in the ``TICK_MINUTES`` minutes from the first
    minute boundary after ``since`` (a per-minute job runs exactly once in
    each), once those minutes are over."""
    start = (since // 60 + 1) * 60
    end = start + 60 * TICK_MINUTES
    time.sleep(max(0.0, end - time.time()))
    return {host.name: [t for t in records(host, TICKS) if start <= t[0] < end] for host in hosts}


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower(), [])
        assert len(values) == 1, f"{name}: {values}"
        return values[0]


def fetch(host: Host, url: str, domain: str = DOMAIN) -> Response:
    """GET ``url`` from inside the host, with the domain resolved to 127.0.0.1."""
    port = 443 if url.startswith("https://") else 80
    cmd = f"curl -sk --max-time 20 -D - --resolve {domain}:{port}:127.0.0.1 {shlex.quote(url)}"
    raw = host.run(cmd).stdout.replace("\r\n", "\n")
    head, _, body = raw.partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(status, headers, body)


def env_value(host: Host, key: str, project: str = "demo") -> str:
    """A value of the app's env file, read from outside the host."""
    for line in host.path(f"/etc/{project}/env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return shlex.split(line.split("=", 1)[1])[0]
    raise KeyError(key)


def psql(host: Host, sql: str, database: str = "demo") -> str:
    return host.run(["runuser", "-u", "postgres", "--", "psql", "-d", database, "-tAc", sql]).stdout.strip()


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base``; a None value deletes the key."""
    for key, value in overlay.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged(base[key], value)
        else:
            base[key] = value
    return base


class Load:
    """tests/integration/load.py running inside the host while something happens."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def __enter__(self) -> Load:
        self.host.run("rm -f /tmp/load.stop /tmp/load.json")
        self.host.run(
            f"nohup /usr/bin/python3 {REPO_IN_HOST}/tests/integration/load.py --host {DOMAIN} "
            "--stop-file /tmp/load.stop --max-seconds 300 > /tmp/load.json 2>/tmp/load.err &"
        )
        time.sleep(1)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)
        self.host.run("touch /tmp/load.stop")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not self.host.run("cat /tmp/load.json", check=False).stdout:
            time.sleep(0.2)
        self.result = json.loads(self.host.run("cat /tmp/load.json").stdout)
        print(f"\n[load] {self.result}")


def edit_in_host(server: Host, relpath: str, old: str, new: str) -> None:
    path = server.path(f"{REPO_IN_HOST}/{relpath}")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def enqueue(host: Host, seconds: float = 0, domain: str = DOMAIN, address: str = "127.0.0.1") -> str:
    """Enqueue a demo job through the web from inside ``host``, as a browser does
    (the form's CSRF token, then a POST) to ``domain`` at ``address``: its token."""
    curl = f"curl -sk --max-time 20 -c $jar -b $jar --resolve {domain}:443:{address}"
    script = f"""set -eu; jar=$(mktemp); trap 'rm -f $jar' EXIT
        token=$({curl} https://{domain}/jobs/ | sed -n 's/.*name="csrfmiddlewaretoken" value="\\([^"]*\\)".*/\\1/p' | head -n1)
        {curl} -H 'Referer: https://{domain}/jobs/' --data-urlencode "csrfmiddlewaretoken=$token" \\
            --data-urlencode seconds={seconds} https://{domain}/jobs/"""
    out = host.run(["bash", "-c", script]).stdout
    found = re.match(r"enqueued ([0-9a-f]{32}) on ", out)
    assert found, out[-2000:]
    return found.group(1)


def job(host: Host, token: str, domain: str = DOMAIN, address: str = "127.0.0.1") -> dict:
    """A demo job as its page shows it (JSON): where and on which release it was enqueued and ran."""
    out = host.run(f"curl -sk --max-time 20 --resolve {domain}:443:{address} https://{domain}/jobs/{token}/").stdout
    return json.loads(out)


def finished_job(host: Host, token: str, timeout: float = 90, **where: str) -> dict:
    """``job`` once it has finished; fails naming the job as it stands after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    found = job(host, token, **where)
    while found["finished"] is None and time.monotonic() < deadline:
        time.sleep(1)
        found = job(host, token, **where)
    assert found["finished"] is not None, f"job not finished after {timeout:.0f} s: {found}"
    return found


#: What a client offers (OpenSSL's s_client options; ``@SECLEVEL=0`` lets it
#: offer what the server must refuse) and whether the server must accept it:
#: Mozilla's "intermediate" profile.
TLS_OFFERS = {
    "tls1.0": ("-tls1 -cipher DEFAULT@SECLEVEL=0", False),
    "tls1.1": ("-tls1_1 -cipher DEFAULT@SECLEVEL=0", False),
    "tls1.2-cbc": ("-tls1_2 -cipher 'ALL:!AESGCM:!CHACHA20:!AESCCM:!ARIA@SECLEVEL=0'", False),
    "tls1.2-gcm": ("-tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256@SECLEVEL=0'", True),
    "tls1.3": ("-tls1_3", True),
}


def handshake(host: Host, address: str, domain: str, options: str) -> str:
    """What OpenSSL's client on ``host`` says of a handshake with ``address``:443."""
    command = f"openssl s_client -connect {address}:443 -servername {domain} {options} </dev/null 2>&1"
    return host.run(["sh", "-c", command], check=False, timeout=30).stdout


def assert_handshake(said: str, accepted: bool) -> None:
    """A completed handshake, or a refusal that the server sent (an alert), not
    a client that never offered what was asked."""
    cipher = re.search(r"^New, (TLSv[\d.]+), Cipher is (\S+)", said, re.MULTILINE)
    if accepted:
        assert cipher, said[-1500:]
    else:
        assert not cipher, said[-1500:]
        assert re.search(r"alert (protocol version|handshake failure)", said), said[-1500:]


#: Pebble's configuration: a test-only ACME CA on the host's loopback, which
#: validates HTTP-01 challenges on port 80 of whatever the domain resolves to.
PEBBLE_CONFIG = {
    "pebble": {
        "listenAddress": "127.0.0.1:14000",
        "managementListenAddress": "127.0.0.1:15000",
        "certificate": "/root/pebble/server.crt",
        "privateKey": "/root/pebble/server.key",
        "httpPort": 80,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
}
PEBBLE_DIRECTORY = "https://127.0.0.1:14000/dir"


def start_pebble(host: Host, domain: str, address: str = "127.0.0.1") -> str:
    """Debian's pebble running on ``host`` (from the lab's offline repo), with
    ``domain`` resolving to ``address`` there; returns its directory URL.

    Its own HTTPS certificate comes from a throwaway CA that the host's trust
    store gets, as a private ACME CA's would."""
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble >/dev/null")
    host.run(
        "set -e; mkdir -p /root/pebble; cd /root/pebble;"
        " openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pebble-test-ca"
        " -keyout ca.key -out ca.crt 2>/dev/null;"
        " openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost"
        " -keyout server.key -out server.csr 2>/dev/null;"
        " printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext;"
        " openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt 2>/dev/null;"
        " cp ca.crt /usr/local/share/ca-certificates/pebble-test-ca.crt; update-ca-certificates >/dev/null"
    )
    host.path("/root/pebble/config.json").write_text(json.dumps(PEBBLE_CONFIG))
    host.run(["sh", "-c", f"grep -q ' {domain}$' /etc/hosts || echo '{address} {domain}' >> /etc/hosts"])
    host.run(
        "systemd-run --unit pebble --setenv PEBBLE_VA_NOSLEEP=1 --setenv PEBBLE_WFE_NONCEREJECT=0"
        " /usr/bin/pebble -config /root/pebble/config.json"
    )
    for _ in range(50):
        if host.run(f"curl -s -o /dev/null {PEBBLE_DIRECTORY}", check=False).returncode == 0:
            return PEBBLE_DIRECTORY
        time.sleep(0.2)
    raise AssertionError(f"pebble does not answer: {host.run('journalctl -u pebble --no-pager | tail -20', check=False).stdout}")


@dataclass
class Served:
    """The certificate a TLS server sends: its SHA-256 fingerprint, names, and
    whether it chains to the given root."""

    fingerprint: str
    names: str
    chains: str


def served_certificate(host: Host, address: str, domain: str, root_url: str = "https://127.0.0.1:15000/roots/0") -> Served:
    """What ``address``:443 serves for ``domain``, checked from ``host`` against pebble's root (``root_url``)."""
    script = (
        "set -e; d=$(mktemp -d); cd $d;"
        f" openssl s_client -connect {address}:443 -servername {domain} -showcerts </dev/null 2>/dev/null"
        ' | awk \'/BEGIN CERT/{n++; inside=1} inside{print >> ("c" n ".pem")} /END CERT/{inside=0}\';'
        " cat c[2-9].pem > chain.pem 2>/dev/null || : > chain.pem;"
        f" curl -s {root_url} > root.pem;"
        " openssl x509 -in c1.pem -noout -fingerprint -sha256 | cut -d= -f2;"
        " openssl x509 -in c1.pem -noout -ext subjectAltName | tail -n +2;"
        " openssl verify -CAfile root.pem -untrusted chain.pem c1.pem 2>&1 || true; rm -rf $d"
    )
    lines = host.run(["sh", "-c", script]).stdout.splitlines()
    return Served(fingerprint=lines[0].strip(), names=lines[1].strip() if len(lines) > 1 else "", chains=lines[-1].strip())
