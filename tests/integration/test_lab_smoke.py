"""Smoke test of the lab fixture library (tests/lab): the hosts behave as promised.

A booted host runs systemd as PID 1 and installs packages offline from the
image's local apt repo, with their services really started; a host without
systemd builds a Salt venv offline from the wheelhouse; neither can reach
the internet. Timings are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import hosts as lab
from tests.lab.hosts import REPO_ROOT

pytestmark = pytest.mark.lab

SALT_VERSION = "3007.16"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def _timing(what: str, seconds: float) -> None:
    print(f"\n[lab timing] {what}: {seconds:.1f}s", flush=True)


@pytest.fixture(scope="module", autouse=True)
def no_leftovers() -> Iterator[None]:
    """Torn down last: every mount, cgroup, netns and link of the module is gone."""
    yield
    left = lab.session_resources()
    assert not left, f"lab teardown left behind: {left}"


def _teardown(host: lab.Host, hard: bool) -> None:
    t0 = time.monotonic()
    host.stop(hard=hard)
    _timing(f"host {host.name} {'power cut' if hard else 'clean shutdown'}", time.monotonic() - t0)
    host.destroy()


@pytest.fixture(scope="module")
def net(lab_base: Path) -> Iterator[lab.Network]:
    network = lab.Network()
    yield network
    network.destroy()


@pytest.fixture(scope="module")
def booted(lab_base: Path, lab_workdir: Path, net: lab.Network) -> Iterator[lab.Host]:
    """A server: systemd as PID 1, on a private network."""
    host = lab.Host("web", lab_base, lab_workdir / "smoke-web", boot=True, net=net)
    try:
        host.start()
        _timing("booted host start (warm)", host.start_seconds or 0)
        yield host
    finally:
        _teardown(host, hard=False)


@pytest.fixture(scope="module")
def plain(lab_base: Path, lab_workdir: Path) -> Iterator[lab.Host]:
    """A container/CI job: no systemd, loopback only."""
    host = lab.Host("ci", lab_base, lab_workdir / "smoke-ci", boot=False)
    try:
        host.start()
        _timing("no-systemd host start (warm)", host.start_seconds or 0)
        yield host
    finally:
        _teardown(host, hard=True)


def test_booted_host_runs_systemd(booted: lab.Host) -> None:
    assert booted.run("test -d /run/systemd/system", check=False).returncode == 0
    assert booted.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert booted.run("hostname").stdout.strip() == "web"
    assert booted.run("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")


def test_apt_install_starts_service(booted: lab.Host) -> None:
    t0 = time.monotonic()
    booted.run("apt-get install -y redis-server", env=APT_ENV)
    _timing("apt-get install redis-server (offline, local repo)", time.monotonic() - t0)
    assert booted.run("systemctl is-active redis-server").stdout.strip() == "active"
    assert booted.run("redis-cli ping").stdout.strip() == "PONG"


def test_plain_host_has_no_systemd(plain: lab.Host) -> None:
    assert plain.run("test -d /run/systemd/system", check=False).returncode == 1
    assert plain.run(["cat", "/proc/1/comm"]).stdout.strip() != "systemd"
    assert plain.run("hostname").stdout.strip() == "ci"


def test_offline_salt_venv(plain: lab.Host) -> None:
    t0 = time.monotonic()
    # as scripts/bootstrap.sh does first: the image, like Debian's cloud images, has no python3-venv
    plain.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null")
    plain.run(f"python3 -m venv /tmp/v && /tmp/v/bin/pip install -q salt=={SALT_VERSION}")
    _timing(f"venv + pip install salt=={SALT_VERSION} (offline wheelhouse)", time.monotonic() - t0)
    out = plain.run("/tmp/v/bin/salt-call --version").stdout
    assert SALT_VERSION in out


@pytest.mark.parametrize("which", ["booted", "plain"])
def test_no_internet(which: str, request: pytest.FixtureRequest) -> None:
    host: lab.Host = request.getfixturevalue(which)
    by_name = host.run("curl -sS --max-time 3 http://deb.debian.org/", check=False)
    by_ip = host.run("curl -sS --max-time 3 http://1.1.1.1/", check=False)
    assert by_name.returncode != 0, by_name.stdout
    assert by_ip.returncode != 0, by_ip.stdout
    assert "default" not in host.run("ip route").stdout


def test_network_address_and_cut(booted: lab.Host, net: lab.Network) -> None:
    assert booted.ip and booted.ip in booted.run("ip -4 -br addr show eth0").stdout
    ping = f"ping -c1 -W1 {net.gateway}"
    assert booted.run(ping, check=False).returncode == 0
    net.cut(booted)
    try:
        assert booted.run(ping, check=False).returncode != 0
    finally:
        net.heal(booted)
    # the re-plugged veth may take a moment to carry packets on a busy machine
    assert booted.run(f"ping -c1 -w5 {net.gateway}", check=False).returncode == 0


def test_copy_in_and_path(plain: lab.Host) -> None:
    plain.copy_in(REPO_ROOT, "/root/salt-django")
    assert plain.run("test -f /root/salt-django/tests/lab/hosts.py").returncode == 0
    assert plain.run("test -e /root/salt-django/.git", check=False).returncode == 1
    plain.run("echo hello > /root/from-inside")
    assert plain.path("/root/from-inside").read_text() == "hello\n"


def test_power_cut_keeps_disk(plain: lab.Host) -> None:
    plain.run("echo kept > /var/tmp/disk")
    plain.stop(hard=True)
    assert not plain.running
    plain.start()
    _timing("no-systemd host restart after power cut", plain.start_seconds or 0)
    assert plain.run("cat /var/tmp/disk").stdout.strip() == "kept"
