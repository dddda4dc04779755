#!/bin/bash
# build-base.sh OUT CACHEDIR
#
# Builds the root filesystem that every lab test host boots from (read-only
# overlay lower layer, see tests/lab/hosts.py):
#   - Debian $LAB_SUITE (bookworm, the default, or trixie) via debootstrap
#     (minbase + the "base:" packages of packages.txt), systemd as init;
#   - /srv/lab-repo: a local flat apt repo with the "repo:" packages of
#     packages.txt and all their dependencies, downloaded but not installed,
#     and the ONLY apt source of the image (hosts have no route out);
#   - /opt/wheelhouse: wheels for requirements/salt.txt,
#     example/requirements.txt and wheelhouse.txt, built by the image's own
#     CPython (in the chroot, with this machine's index access and CA bundle);
#     pip and uv in the image are configured to install only from there.
# Nothing host-specific stays in the image (empty machine-id, no hostname).
#
# OUT must not exist or be empty. CACHEDIR keeps downloaded .debs between
# builds. Env: LAB_SUITE, LAB_MIRROR.
# Needs root, debootstrap, dpkg-scanpackages (dpkg-dev), util-linux.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:?usage: build-base.sh OUT CACHEDIR}
CACHE=${2:?usage: build-base.sh OUT CACHEDIR}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
SUITE=${LAB_SUITE:-bookworm}
PKGLIST=$HERE/packages.txt
REQS=("$REPO_ROOT/requirements/salt.txt" "$REPO_ROOT/example/requirements.txt" "$HERE/wheelhouse.txt")
NEWEST=$HERE/wheelhouse-newest.txt

T0=$SECONDS
t() { echo "[build-base +$((SECONDS - T0))s] $*" >&2; }
die() { echo "build-base: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for tool in debootstrap dpkg-scanpackages unshare chroot sha256sum; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
for f in "$PKGLIST" "${REQS[@]}" "$NEWEST"; do [ -f "$f" ] || die "missing $f"; done
case $SUITE in bookworm | trixie) ;; *) die "LAB_SUITE=$SUITE: the lab builds bookworm or trixie" ;; esac

pkgs() {  # pkgs SECTION -> package names of that section of packages.txt
    sed -e 's/#.*//' "$PKGLIST" | awk -F: -v s="$1" '$1 == s { gsub(/[ \t]/, "", $2); if ($2 != "") print $2 }'
}
BASE_PKGS=$(pkgs base | paste -sd, -)
REPO_PKGS=$(pkgs repo | paste -sd' ' -)
[ -n "$BASE_PKGS" ] && [ -n "$REPO_PKGS" ] || die "no base:/repo: packages in $PKGLIST"

mkdir -p "$OUT" "$CACHE/debootstrap" "$CACHE/archives/partial"
[ -z "$(ls -A "$OUT")" ] || die "$OUT is not empty"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE" && pwd)
LOG=$OUT.build.log
: > "$LOG"

# Every mount of the build lives in a private mount namespace: whatever a
# failing step leaves mounted disappears with it.
inns() { unshare --mount --propagation private "$@"; }

t "debootstrap $SUITE (log: $LOG)"
inns debootstrap --variant=minbase --include="$BASE_PKGS" --cache-dir="$CACHE/debootstrap" \
    "$SUITE" "$OUT" "$MIRROR" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "debootstrap failed"; }

t "apt configuration"
cat > "$OUT/etc/apt/apt.conf.d/90salt-django-lab" <<'EOF'
// salt-django lab: behave like a lean server; wait for the dpkg lock
// instead of failing when two installs race (salt's pkg has no -o option).
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Lock::Timeout "600";
Acquire::Languages "none";
EOF
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$OUT/etc/apt/sources.list"
rm -f "$OUT"/etc/apt/sources.list.d/*

t "local apt repo download: $REPO_PKGS"
mkdir -p "$OUT/srv/lab-repo" "$OUT/var/cache/apt/archives"
# In the chroot: resolve each repo package alone and all of them together
# (with the image's own apt config: no recommends), download into the
# host-cached archives dir, copy exactly the resolved .debs into the repo.
inns bash -ec 'set -o pipefail
    out=$1; cache=$2; shift 2
    mount -t proc proc "$out/proc"
    mount --bind "$cache/archives" "$out/var/cache/apt/archives"
    cp /etc/resolv.conf "$out/etc/resolv.conf"
    echo "LANG=C.UTF-8" > "$out/etc/default/locale"
    export DEBIAN_FRONTEND=noninteractive
    chroot "$out" apt-get -q update
    for p in "$@" "$*"; do
        chroot "$out" apt-get -q install -y --download-only $p >/dev/null
        chroot "$out" apt-get -q -s install $p | sed -n "s/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p"
    done | sort -u | while read -r name ver; do
        set -- "$cache/archives/${name}_${ver/:/%3a}_"*.deb
        [ -f "$1" ] || { echo "no .deb for $name $ver" >&2; exit 1; }
        cp "$1" "$out/srv/lab-repo/"
    done
' build "$OUT" "$CACHE" $REPO_PKGS >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "repo download failed"; }
ndebs=$(find "$OUT/srv/lab-repo" -name '*.deb' | wc -l)
[ "$ndebs" -gt 0 ] || die "local repo is empty"

t "index local repo ($ndebs debs), make it the only apt source"
(
    cd "$OUT/srv/lab-repo"
    dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages
    {
        echo "Origin: salt-django-lab"
        echo "Label: salt-django-lab"
        echo "Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
        echo "SHA256:"
        echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"
    } > Release
)
echo 'deb [trusted=yes] file:/srv/lab-repo ./' > "$OUT/etc/apt/sources.list"
rm -rf "$OUT"/var/lib/apt/lists/* "$OUT"/var/cache/apt/archives/*.deb "$OUT"/var/cache/apt/*.bin
mkdir -p "$OUT/var/lib/apt/lists/partial"
chroot "$OUT" apt-get -q update >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "apt-get update (local repo) failed"; }
for p in $REPO_PKGS; do   # every repo package must be installable offline on its own
    chroot "$OUT" apt-get -qq -s install "$p" >/dev/null 2>>"$LOG" || die "$p not installable from the local repo"
done

t "wheelhouse, built by the image's own Python"
# Wheels must match the image's interpreter, so its own pip builds them, with
# this machine's index settings and CA bundle (the chroot shares its network).
# Each requirements file is resolved on its own, as the virtualenv it is for
# (Salt's, a project's) is: Salt pins a python-dateutil that Celery refuses.
# wheelhouse-newest.txt is fetched as for the newest Python, without resolving:
# an image of an older Python then holds the wheels it must refuse by name
# (Django 6 on Debian 12), not "no such package".
# The image has no python3-venv (a cloud image has none): it is installed from
# the local repo for this build only, then purged with what it pulled in.
mkdir -p "$OUT/opt/wheelhouse" "$OUT/tmp/reqs"
cp "${REQS[@]}" "$NEWEST" "$OUT/tmp/reqs/"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$OUT/tmp/reqs/ca.crt"
inns bash -ec 'out=$1; shift
    mount -t proc proc "$out/proc"
    installed() { chroot "$out" dpkg-query -W -f="\${Status} \${Package}\n" | sed -n "s/^install ok installed //p" | sort; }
    before=$(installed)
    DEBIAN_FRONTEND=noninteractive chroot "$out" apt-get -q install -y python3-venv
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT=/tmp/reqs/ca.crt \
        PIP_DISABLE_PIP_VERSION_CHECK=1 ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} \
        ${https_proxy:+https_proxy=$https_proxy} ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} \
        chroot "$out" bash -ec "
            python3 -m venv /tmp/wheel-venv
            for req in $*; do
                /tmp/wheel-venv/bin/pip wheel -q --use-pep517 --no-cache-dir -w /opt/wheelhouse -r \$req
            done
            /tmp/wheel-venv/bin/pip download -q --no-cache-dir --no-deps --only-binary=:all: \
                --python-version 3.13 -d /opt/wheelhouse -r /tmp/reqs/wheelhouse-newest.txt"
    # Every package the install added, not only python3-venv: autoremove would
    # keep python3.X-venv, which python3.X suggests.
    added=$(comm -13 <(echo "$before") <(installed))
    DEBIAN_FRONTEND=noninteractive chroot "$out" apt-get -q purge -y $added
    chroot "$out" apt-get clean
    [ -z "$(comm -13 <(echo "$before") <(installed))" ]
' build "$OUT" "${REQS[@]/#*\///tmp/reqs/}" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "building the wheelhouse failed"; }
rm -rf "$OUT/tmp/reqs" "$OUT/tmp/wheel-venv"
# Any pip on a host installs only from the wheelhouse (no route out anyway).
cat > "$OUT/etc/pip.conf" <<'EOF'
[global]
no-index = true
find-links = /opt/wheelhouse
EOF
cat >> "$OUT/etc/environment" <<'EOF'
PIP_NO_INDEX=1
PIP_FIND_LINKS=/opt/wheelhouse
EOF
# The same for uv (its system-wide configuration), whoever runs it.
mkdir -p "$OUT/etc/uv"
cat > "$OUT/etc/uv/uv.toml" <<'EOF'
no-index = true
find-links = ["/opt/wheelhouse"]

[pip]
no-index = true
find-links = ["/opt/wheelhouse"]
EOF

t "systemd units, identity"
# Periodic jobs that would compete for the apt lock or burn CPU during tests,
# and gettys (nobody logs in; the console is read-only).
systemctl --root="$OUT" mask --quiet \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer fstrim.service \
    dpkg-db-backup.timer man-db.timer \
    console-getty.service container-getty@.service getty@.service serial-getty@.service
# Real-server behaviour: package installs start their services.
rm -f "$OUT/usr/sbin/policy-rc.d"
# Nothing host-specific: systemd makes a machine-id at boot, hosts.py writes
# /etc/hostname and /etc/hosts per host.
: > "$OUT/etc/machine-id"
rm -f "$OUT/var/lib/dbus/machine-id" "$OUT/etc/hostname"
: > "$OUT/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$OUT/etc/hosts"
rm -rf "$OUT"/var/log/*.log "$OUT"/var/log/apt/* "$OUT"/tmp/* "$OUT"/root/.cache

t "done: $(du -sh "$OUT" | cut -f1), $ndebs debs, $(find "$OUT/opt/wheelhouse" -name '*.whl' | wc -l) wheels"
