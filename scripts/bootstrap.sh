#!/bin/bash
# Prepare this host for `make deploy`, idempotently: OS packages, Salt in its
# own virtualenv, a masterless minion config pointing at this repository,
# and on first run a local pillar with generated service passwords.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${SALT_DJANGO_PREFIX:-/opt/salt-django}
CONF=${SALT_DJANGO_CONF:-/etc/salt-django}
VENV=$PREFIX/venv
say() { echo "salt-django: $*"; }

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
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing Salt into $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements/salt.txt"
    echo "$want" > "$VENV/.requirements.sha256"
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

"$VENV/bin/python" "$REPO/scripts/salt_django.py" --conf "$CONF" init-secrets
