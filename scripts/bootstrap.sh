#!/bin/bash
# Install the pinned Salt of requirements/salt.txt from PyPI into its own
# virtualenv, idempotently, for one of two callers:
#
#   scripts/bootstrap.sh          `make deploy`: OS packages, Salt, a masterless
#                                 minion config pointing at this repository and
#                                 its local pillar directory (`salt_django.py
#                                 apply` generates the service passwords there)
#   bootstrap.sh [options] stable <version>
#                                 Vagrant's Salt provisioner (`bootstrap_script`
#                                 in the Vagrantfile), with bootstrap-salt.sh's
#                                 arguments: salt-minion and/or salt-master as
#                                 systemd services, configured as the README's
#                                 cluster section says, with the files and keys
#                                 the provisioner uploaded (-h lists them)
set -euo pipefail

# Vagrant uploads this script alone (to /tmp): the Vagrantfile syncs the
# repository to the README's /srv/salt-django.
REPO=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$REPO/requirements/salt.txt" ] || REPO=${SALT_DJANGO_REPO:-/srv/salt-django}
PREFIX=${SALT_DJANGO_PREFIX:-/opt/salt-django}
CONF=${SALT_DJANGO_CONF:-/etc/salt-django}
VENV=$PREFIX/venv
say() { echo "salt-django: $*"; }
refuse() { echo "salt-django: $*" >&2; exit 2; }

PIN=$(sed -n 's/^salt==\([^ ;]*\).*/\1/p' "$REPO/requirements/salt.txt")

usage() {
    cat <<USAGE
Usage: $0                                 prepare this host for make deploy
       $0 [options] [stable [$PIN]]   what Vagrant's Salt provisioner runs
Options (those of bootstrap-salt.sh that Vagrant passes):
  -c DIR   install DIR's minion, master, grains (to /etc/salt/) and
           minion.pem/.pub, master.pem/.pub (to /etc/salt/pki/<who>/)
  -k DIR   pre-accept every public key in DIR on the master, named by its file
  -j JSON  /etc/salt/minion is JSON (e.g. id, master)   -J JSON  /etc/salt/master is JSON
  -M       a salt-master too                            -N       no salt-minion
  -C       configure only (Salt is installed)           -X       do not (re)start the daemons
  -F -P -D -n -x python3   accepted: configs are always replaced, Salt always
           comes from PyPI, output is always plain, Salt runs on the OS's python3
Salt is salt==$PIN from $REPO/requirements/salt.txt, whatever else is asked.
USAGE
}

vagrant_mode=0
config_dir="" seed_dir="" minion_json="" master_json=""
with_master=0 with_minion=1 install=1 start=1
if (($#)); then
    vagrant_mode=1
    while getopts ':hvnDPFc:k:j:J:x:MNCXS' opt; do
        case $opt in
            c) config_dir=$OPTARG ;;
            k) seed_dir=$OPTARG ;;
            j) minion_json=$OPTARG ;;
            J) master_json=$OPTARG ;;
            M) with_master=1 ;;
            N) with_minion=0 ;;
            C) install=0 ;;
            X) start=0 ;;
            x) [ "$OPTARG" = python3 ] || refuse "-x $OPTARG: Salt runs on the OS's python3" ;;
            n | D | P | F) ;;
            h) usage; exit 0 ;;
            v) echo "salt-django bootstrap: salt==$PIN"; exit 0 ;;
            S) refuse "-S: salt-django runs no salt-syndic" ;;
            :) refuse "option -$OPTARG needs a value" ;;
            *) refuse "option -$OPTARG of bootstrap-salt.sh is not supported here (-h lists those that are)" ;;
        esac
    done
    shift $((OPTIND - 1))
    (($# <= 2)) || refuse "unexpected arguments after the version: ${*:3}"
    [ "${1:-stable}" = stable ] ||
        refuse "install type '$1' is not supported: only 'stable', the Salt that requirements/salt.txt pins (salt==$PIN) from PyPI"
    version=${2:-$PIN}
    [ "${version#v}" = "$PIN" ] ||
        refuse "Salt $version was asked for, requirements/salt.txt pins salt==$PIN: change both together"
fi

[ "$(id -u)" = 0 ] || { echo "salt-django: run as root (it configures this server)" >&2; exit 1; }

missing=()
for pkg in python3-venv ca-certificates; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OS interpreter, never a pyenv shim or whatever else `python3` finds first.
want=$(sha256sum "$REPO/requirements/salt.txt" | cut -c1-64)
if ((install)) && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing Salt $PIN into $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements/salt.txt"
    echo "$want" > "$VENV/.requirements.sha256"
fi

if ((vagrant_mode)); then
    daemons=()
    ((with_minion)) && daemons+=(salt-minion)
    ((with_master)) && daemons+=(salt-master)
    if ((install)); then
        # Vagrant asks `which` for these to decide between installing and configuring only.
        ((with_minion)) && ln -sf "$VENV/bin/salt-minion" "$VENV/bin/salt-call" /usr/local/bin/
        ((with_master)) && ln -sf "$VENV/bin/salt-master" "$VENV/bin/salt" "$VENV/bin/salt-key" "$VENV/bin/salt-run" /usr/local/bin/
        for daemon in "${daemons[@]}"; do
            cat > "/etc/systemd/system/$daemon.service" <<UNIT
# Written by salt-django's scripts/bootstrap.sh (Salt $PIN in $VENV).
[Unit]
Description=$daemon (salt-django)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
ExecStart=$VENV/bin/$daemon
KillMode=mixed
Restart=on-failure
RestartSec=2
LimitNOFILE=100000

[Install]
WantedBy=multi-user.target
UNIT
        done
    fi
    install -d -m 0755 /etc/salt /etc/salt/minion.d /etc/salt/master.d
    if [ -n "$config_dir" ]; then
        for name in minion master grains; do
            [ ! -f "$config_dir/$name" ] || install -m 0644 "$config_dir/$name" "/etc/salt/$name"
        done
        for who in minion master; do
            [ -f "$config_dir/$who.pem" ] || continue
            install -d -m 0700 /etc/salt/pki "/etc/salt/pki/$who"
            install -m 0400 "$config_dir/$who.pem" "/etc/salt/pki/$who/$who.pem"
            install -m 0644 "$config_dir/$who.pub" "/etc/salt/pki/$who/$who.pub"
        done
    fi
    # JSON is YAML; like bootstrap-salt.sh, it replaces the whole file.
    [ -z "$minion_json" ] || printf '%s\n' "$minion_json" > /etc/salt/minion
    [ -z "$master_json" ] || printf '%s\n' "$master_json" > /etc/salt/master
    if [ -n "$seed_dir" ]; then
        install -d -m 0700 /etc/salt/pki /etc/salt/pki/master /etc/salt/pki/master/minions
        for key in "$seed_dir"/*; do
            install -m 0644 "$key" /etc/salt/pki/master/minions/
        done
    fi
    # The README's cluster section: conf/ as an operator installs it.
    ((!with_minion)) || install -m 0644 "$REPO/conf/minion.d/salt-django.conf" /etc/salt/minion.d/salt-django.conf
    if ((with_master)); then
        ln -sfn "$REPO/conf/master.d/salt-django.conf" /etc/salt/master.d/salt-django.conf
        install -d -m 0700 "$CONF" "$CONF/pillar"
    fi
    if ((start)) && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        for daemon in "${daemons[@]}"; do
            systemctl enable -q "$daemon"
            systemctl restart "$daemon"
            say "$daemon (Salt $PIN) started"
        done
    elif ((start)); then
        say "PID 1 is not systemd: start ${daemons[*]} yourself"
    fi
    exit 0
fi

install -d -m 0755 "$CONF" "$CONF/minion.d"
install -d -m 0700 "$CONF/pillar"
cat > "$CONF/minion.new" <<CONFIG
# Written by salt-django's scripts/bootstrap.sh; rerun \`make deploy\` to refresh.
file_client: local
pki_dir: $CONF/pki
cachedir: /var/cache/salt-django
sock_dir: /run/salt-django
log_file: /var/log/salt-django/minion.log
log_level_logfile: warning
file_roots:
  base:
    - $REPO/salt
pillar_roots:
  base:
    - $REPO/pillar
    - $CONF/pillar
features:
  x509_v2: true
CONFIG
mv "$CONF/minion.new" "$CONF/minion"

# Without systemd as PID 1, Salt's systemd module runs "offline" and reports
# services as started without starting them: use the init.d scripts instead.
if [ -d /run/systemd/system ]; then
    rm -f "$CONF/minion.d/50-no-systemd.conf"
else
    printf '# Written by salt-django: PID 1 is not systemd here.\ndisable_modules:\n  - systemd_service\n' \
        > "$CONF/minion.d/50-no-systemd.conf"
fi

# The passwords pillar lacks are generated by `salt_django.py apply`, in the
# same Salt process as the state run (one Salt start per deploy).
