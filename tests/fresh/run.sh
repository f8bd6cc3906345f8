#!/usr/bin/env bash
# The pristine-Debian check (`make fresh`, run by .ci/run after `make test`).
#
# It does what a newcomer does on a fresh Debian 12 server, in a throwaway root:
#   1. a Debian 12 (bookworm) root made by debootstrap from the archive this machine's apt
#      uses (the first `deb` entry of /etc/apt/sources.list{,.d/*.list,.d/*.sources});
#      the installed root is cached as a tarball in $HAVIP_FRESH_CACHE
#      (/var/cache/havip-fresh), so a rerun unpacks it in seconds;
#   2. the lines of the README's quick start that come before `make`, run verbatim (the
#      apt-get line), then `git clone` of the current commit into /root/havip (root's home,
#      mode 0700, as a newcomer would);
#   3. `make demo`, then `make test` with CI=true and PYTEST_ARGS=$HAVIP_FRESH_PYTEST_ARGS
#      (default: the unit tests, one Docker + Milvus test, and the havipctl refusal test
#      that must work from a clone under /root), all with Debian's own python3.
#
# Isolation: everything runs in a private mount namespace (unshare --mount --propagation
# private) and a chroot with its own /proc, /sys (with /sys/fs/cgroup), /dev, /dev/pts and
# a tmpfs /run, so dockerd, `ip netns` and nsenter work inside and every mount disappears
# with the namespace. The network namespaces made inside are named in that private /run.
# A policy-rc.d in the root stops package scripts from starting the Docker service (it
# would run in this machine's network namespace); the lab starts its own dockerds. On any
# exit the script kills, by pid, only processes whose root is inside its own root, then
# checks that no process, mount or network namespace of its own remains.
#
# This machine's own settings are honoured the way its tools read them, no host is
# written here:
#   - apt: the same sources (and the keyrings they name), the apt.conf.d files that set a
#     proxy, CA or validity checks, and the packages already in /var/cache/apt/archives
#     (hard-linked into our own cache, so apt in the root never deletes the machine's); the
#     package lists of the last run are kept in the cache, so `apt-get update` revalidates;
#   - pip: PIP_* variables pass through; /etc/pip.conf, /etc/xdg/pip/, ~/.config/pip/pip.conf,
#     ~/.pip/pip.conf and $PIP_CONFIG_FILE are copied in; local paths they or PIP_* name
#     (find-links folders, file:// indexes, constraint files) are bind-mounted read-only at
#     the same path (for an index ending in /simple, its parent, where the files usually
#     are); the pip cache lives in $HAVIP_FRESH_CACHE/pip;
#   - CA: the bundle named by PIP_CERT, SSL_CERT_FILE or REQUESTS_CA_BUNDLE (default
#     /etc/ssl/certs/ca-certificates.crt) is copied to the same path, and the local CAs in
#     /usr/local/share/ca-certificates are copied too, so the bundle that ca-certificates
#     regenerates inside still trusts what this machine trusts; proxy variables pass through.
#
# Environment: HAVIP_FRESH_CACHE, HAVIP_FRESH_PYTEST_ARGS, HAVIP_FRESH_SKIP_DEMO=1 (only
# to iterate on the script), HAVIP_FRESH_TIMEOUT (seconds for the run inside, default 2400).
# Needs root, debootstrap, unshare, git and zstd. Exits non-zero naming the failed phase.
set -euo pipefail
{   # the whole script is read before it runs: editing it meanwhile cannot change a run

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF="$REPO/tests/fresh/run.sh"
SUITE=bookworm
CACHE=${HAVIP_FRESH_CACHE:-/var/cache/havip-fresh}
PYTEST_SELECTION=${HAVIP_FRESH_PYTEST_ARGS:-"tests/unit tests/integration/test_docker_milvus.py::test_shared_storage_one_milvus_at_a_time tests/integration/test_ctl_live.py::test_refusals_are_clear"}
RUN_TIMEOUT=${HAVIP_FRESH_TIMEOUT:-2400}
BASE_VERSION=1            # bump to rebuild every cached base

T0=$(date +%s%N)
PHASE=start
phase() {
    PHASE=$1
    printf '\n==> [%5ss] %s\n' "$(( ($(date +%s%N) - T0) / 1000000000 ))" "$1"
}

# ------------------------------------------------------------------ inside the mount namespace
# `run.sh --in-namespace ROOT`: set up the mounts, then run the newcomer's steps in the chroot.
if [ "${1:-}" = "--in-namespace" ]; then
    ROOT=$2
    mount --bind "$ROOT" "$ROOT"                 # runc's pivot_root needs the root to be a mount
    mount -t proc proc "$ROOT/proc"
    mount --rbind /sys "$ROOT/sys"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
    mkdir -p "$ROOT/run/lock"
    mount --bind "$CACHE/archives" "$ROOT/var/cache/apt/archives"
    mount --bind "$CACHE/lists" "$ROOT/var/lib/apt/lists"     # `apt-get update` only revalidates
    mkdir -p "$ROOT/root/.cache/pip"
    mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip"
    while IFS= read -r p; do
        [ -n "$p" ] || continue
        mkdir -p "$ROOT$p"
        mount -o bind,ro "$p" "$ROOT$p"
    done < "$ROOT/srv/fresh/ro-paths"
    exec chroot "$ROOT" /usr/bin/env -i $(cat "$ROOT/srv/fresh/env") /bin/bash /srv/fresh/newcomer.sh
fi

# ------------------------------------------------------------------ on this machine
[ "$(id -u)" = 0 ] || { echo "tests/fresh/run.sh needs root (debootstrap, chroot, namespaces)" >&2; exit 1; }
for tool in debootstrap unshare git zstd; do
    command -v "$tool" >/dev/null || { echo "tests/fresh/run.sh needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /var/tmp/havip-fresh.XXXXXX)
ROOT=$WORK/root
NSPID=""

# pids of processes whose root directory is our root or below it (containers of the lab's
# dockerds have their rootfs under it): ours by construction, whatever their name.
own_pids() {
    local d pid r
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        r=$(readlink "$d/root" 2>/dev/null) || continue
        case "$r" in "$ROOT"|"$ROOT"/*) echo "$pid";; esac
    done
}

cleanup() {
    local rc=$? left
    trap - EXIT INT TERM
    set +e
    case "$PHASE" in inside:*) PHASE="inside: $(cat "$ROOT/srv/fresh/phase" 2>/dev/null || echo "mount setup")";; esac
    if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then kill -TERM "$NSPID" 2>/dev/null; fi
    left=$(own_pids)
    if [ -n "$left" ]; then
        echo "killing what is left in the root: $(echo $left)" >&2
        kill -KILL $left 2>/dev/null
        for _ in $(seq 50); do [ -z "$(own_pids)" ] && break; sleep 0.1; done
    fi
    if [ -z "$(own_pids)" ] && ! grep -q " $WORK" /proc/self/mountinfo; then
        rm -rf "$WORK"
    else
        echo "NOT removing $WORK: something still runs or is mounted there" >&2
        rc=1
    fi
    if [ "$rc" != 0 ]; then
        echo "FRESH FAILED in phase '$PHASE' (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- phase: mirror
phase "mirror: the Debian archive this machine's apt uses"
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
host_sources() {
    { [ -f /etc/apt/sources.list ] && echo /etc/apt/sources.list
      ls /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null; } || true
}
# Prints "URI" of the first deb entry for the host's own codename (or bookworm).
find_mirror() {
    local f
    for f in $(host_sources); do
        case "$f" in
        *.sources)
            awk -v want="$1" '
                function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ "(^| )" want "( |$)" && enabled != "no" && uri != "") { print uri; found=1; exit } types=suites=uri=enabled="" }
                /^[ \t]*$/ { flush(); next }
                /^Types:/ { sub(/^Types:[ \t]*/, ""); types=$0 }
                /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, " "); uri=u[1] }
                /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites=$0 }
                /^Enabled:/ { sub(/^Enabled:[ \t]*/, ""); enabled=tolower($0) }
                END { if (!found) flush() }' "$f";;
        *)
            awk -v want="$1" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == want) { print $i; exit } }' "$f";;
        esac
    done | head -n1
}
MIRROR=$(find_mirror "${CODENAME:-$SUITE}")
[ -n "$MIRROR" ] || MIRROR=$(find_mirror "$SUITE")
[ -n "$MIRROR" ] || { echo "no deb entry for ${CODENAME:-$SUITE} in this machine's apt sources" >&2; exit 1; }
echo "mirror: $MIRROR (host release: ${CODENAME:-unknown})"

# ---- phase: base
phase "base: a Debian 12 root (debootstrap, cached as a tarball)"
mkdir -p "$CACHE/archives/partial" "$CACHE/lists/partial" "$CACHE/pip"
# apt's packages already on this machine, hard-linked (when on the same file system): apt
# in the root has its own cache and lock, and never deletes the machine's.
if [ -d /var/cache/apt/archives ]; then
    cp -n -l /var/cache/apt/archives/*.deb "$CACHE/archives/" 2>/dev/null || true
fi
ARCH=$(dpkg --print-architecture)
KEY=$(echo "$BASE_VERSION $SUITE $ARCH $MIRROR" | sha256sum | cut -c1-12)
BASE="$CACHE/debian-$SUITE-$ARCH-$KEY.tar.zst"
(
    flock 9
    if [ ! -s "$BASE" ]; then
        build=$(mktemp -d "$CACHE/build.XXXXXX")
        echo "no cached base: debootstrap $SUITE from $MIRROR (a few minutes, once)"
        if ! debootstrap --arch="$ARCH" --cache-dir="$CACHE/archives" "$SUITE" "$build/root" "$MIRROR" \
                > "$CACHE/debootstrap.log" 2>&1; then
            tail -n 30 "$CACHE/debootstrap.log" >&2
            rm -rf "$build"
            exit 1
        fi
        rm -f "$build/root/var/cache/apt/archives/"*.deb
        tar -C "$build/root" --numeric-owner --xattrs -I 'zstd -T0 -3' -cf "$BASE.tmp" .
        mv "$BASE.tmp" "$BASE"
        rm -rf "$build"
    fi
) 9>"$CACHE/lock"
ls -l "$BASE"

# ---- phase: unpack
phase "unpack: a throwaway copy of the base in $WORK"
mkdir -p "$ROOT"
tar -C "$ROOT" --numeric-owner --xattrs -I zstd -xf "$BASE"
chmod 0700 "$ROOT/root"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"      # same network namespace, same resolver
python_version=$(chroot "$ROOT" /bin/sh -c 'ls /usr/bin/python3 2>/dev/null || echo none')
echo "root unpacked; python3 in the pristine root: $python_version"

# ---- phase: host settings
phase "settings: this machine's apt, pip and CA settings, and the commit to clone"
mkdir -p "$ROOT/srv/fresh"
# apt: the same sources, with the keyrings they name.
rm -f "$ROOT/etc/apt/sources.list"
for f in $(host_sources); do
    dest="$ROOT$f"
    mkdir -p "$(dirname "$dest")"
    cp "$f" "$dest"
    if [ -n "$CODENAME" ] && [ "$CODENAME" != "$SUITE" ]; then
        sed -i -E "s/(^|[[:space:]])$CODENAME(-[a-z]+)?([[:space:]]|$)/\1$SUITE\2\3/g" "$dest"
    fi
    for key in $(grep -ohiE 'signed-by[:=][[:space:]]*[^] ]+' "$f" | sed -E 's/^[^:=]+[:=][[:space:]]*//'); do
        [ -f "$key" ] && [ ! -e "$ROOT$key" ] && { mkdir -p "$(dirname "$ROOT$key")"; cp "$key" "$ROOT$key"; }
    done
done
[ -d /etc/apt/trusted.gpg.d ] && cp -n /etc/apt/trusted.gpg.d/* "$ROOT/etc/apt/trusted.gpg.d/" 2>/dev/null || true
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    if grep -qiE 'proxy|cainfo|sslcert|sslkey|verify-(peer|host)|check-valid-until|check-date' "$f"; then
        mkdir -p "$ROOT$(dirname "$f")"
        cp "$f" "$ROOT$f"
    fi
done
# Package scripts must not start the Docker service here: it would run in this machine's
# network namespace (the standard Debian way for a chroot, see invoke-rc.d(8)).
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# CA: the bundle at the same path, and the local CAs ca-certificates adds to its bundle.
CA_BUNDLE=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
for f in "$CA_BUNDLE" ${SSL_CERT_FILE:-} ${REQUESTS_CA_BUNDLE:-}; do
    [ -f "$f" ] && { mkdir -p "$ROOT$(dirname "$f")"; cp -L "$f" "$ROOT$f"; }
done
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -rL /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi

# pip: the config files, and the local paths they name (read-only, same path).
pip_confs=()
for f in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf" ${PIP_CONFIG_FILE:-}; do
    [ -f "$f" ] && pip_confs+=("$f")
done
[ -d /etc/xdg/pip ] && { mkdir -p "$ROOT/etc/xdg"; cp -rL /etc/xdg/pip "$ROOT/etc/xdg/"; }
for f in "${pip_confs[@]}"; do
    case "$f" in "$HOME"/*) dest="$ROOT/root${f#"$HOME"}";; *) dest="$ROOT$f";; esac
    mkdir -p "$(dirname "$dest")"
    cp -L "$f" "$dest"
done
: > "$ROOT/srv/fresh/ro-paths"
{ cat "${pip_confs[@]}" 2>/dev/null | sed -n 's/^[^#;=]*=//p'; env | sed -n 's/^PIP_[A-Z_]*=//p'; } \
    | tr ' \t,' '\n\n\n' | sed -e 's#^file://##' -e 's#/*$##' -e 's#/simple$##' | grep '^/' | sort -u \
    | while IFS= read -r p; do
        # A local path the settings name, not one the root has a copy of already.
        if [ -e "$p" ] && [ ! -e "$ROOT$p" ]; then echo "$p" >> "$ROOT/srv/fresh/ro-paths"; fi
    done
echo "read-only from this machine: $(tr '\n' ' ' < "$ROOT/srv/fresh/ro-paths")"

# The environment inside: PIP_*, CA and proxy variables pass through, nothing else.
LAB_PREFIX="hvf$(head -c2 /dev/urandom | od -An -tx1 | tr -d ' \n')"
{
    echo "HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8"
    echo "DEBIAN_FRONTEND=noninteractive CI=true HAVIP_LAB_PREFIX=$LAB_PREFIX"
    env | grep -E '^(PIP_[A-Z_]+|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|GIT_SSL_CAINFO|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)=' \
        | grep -v '[[:space:]]' || true
} > "$ROOT/srv/fresh/env"

# The commit: a bare clone that the newcomer's `git clone` reads inside the root.
COMMIT=$(git -C "$REPO" rev-parse HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    echo "note: uncommitted changes in $REPO are not part of the check (it clones $COMMIT)"
fi
git clone -q --bare --no-local "$REPO" "$ROOT/srv/havip.git"
git -C "$ROOT/srv/havip.git" fetch -q "$REPO" "$COMMIT"

# The README's quick start (its ```sh blocks): the lines before the first `make` are what a
# newcomer runs first, verbatim; its clone becomes a clone of the current commit.
git -C "$REPO" show "$COMMIT:README.md" \
    | awk '/^## / {q = ($0 ~ /^## Quick start/)} q && /^```sh/ {b=1; next} b && /^```/ {b=0; next} q && b' \
    | sed -e 's/[[:space:]]#.*$//' -e '/^[[:space:]]*$/d' > "$WORK/quickstart"
awk '/^make( |$)/ {exit} !/^(git clone|cd) / {print}' "$WORK/quickstart" > "$ROOT/srv/fresh/prereqs.sh"
grep -qE '^make demo' "$WORK/quickstart" && grep -qE '^make test' "$WORK/quickstart" \
    || { echo "README.md's quick start lacks its 'make demo' or 'make test' line" >&2; exit 1; }
echo "README quick start, run verbatim before make:"; sed 's/^/    /' "$ROOT/srv/fresh/prereqs.sh"

cat > "$ROOT/srv/fresh/newcomer.sh" <<EOF
set -euo pipefail
t0=\$(date +%s)
step() { echo "\$1" > /srv/fresh/phase; printf '\n==> [inside +%ss] %s\n' "\$((\$(date +%s) - t0))" "\$1"; }
cd /root
step "readme-prerequisites: the README's lines before make"
bash -euxo pipefail /srv/fresh/prereqs.sh < /dev/null
step "clone: git clone of $COMMIT into /root/havip"
git clone -q /srv/havip.git /root/havip
cd /root/havip
git checkout -q $COMMIT
ls -ld /root /root/havip
if [ "${HAVIP_FRESH_SKIP_DEMO:-}" != 1 ]; then
    step "make-demo: make demo"
    make demo < /dev/null
fi
step "make-test: make test PYTEST_ARGS='$PYTEST_SELECTION'"
make test PYTEST_ARGS="-p no:cacheprovider $PYTEST_SELECTION" < /dev/null
step "python: which python3 ran the venv"
.venv/bin/python -c 'import sys; print(sys.version.split()[0], sys.base_prefix, sys.prefix)'
step "leftovers-inside: no network namespace, no lab state"
left=\$(ip netns list)
[ -z "\$left" ] || { echo "network namespaces left inside: \$left"; exit 1; }
[ ! -e /var/tmp/havip-lab/lab.json ] || { echo "a lab is still recorded in /var/tmp/havip-lab"; exit 1; }
step done
EOF

# ---- phase: inside
phase "inside: README steps, git clone, make demo, make test in a private mount namespace + chroot"
# One run at a time on this machine: the runs share the apt archive cache (and its lock).
exec 8>"$CACHE/run.lock"
flock -w "$RUN_TIMEOUT" 8 || { echo "another fresh run holds $CACHE/run.lock" >&2; exit 1; }
set +e
timeout --kill-after=30 "$RUN_TIMEOUT" unshare --mount --propagation private --fork --kill-child -- \
    env CACHE="$CACHE" bash "$SELF" --in-namespace "$ROOT" &
NSPID=$!
wait "$NSPID"
rc=$?
set -e
NSPID=""
inner=$(cat "$ROOT/srv/fresh/phase" 2>/dev/null || echo "mount setup")
if [ "$rc" != 0 ] || [ "$inner" != done ]; then
    echo "the run inside failed (exit $rc) in its phase '$inner'" >&2
    exit 1
fi

# ---- phase: leftovers
phase "leftovers: nothing of ours runs, is mounted or has a namespace"
for _ in $(seq 100); do [ -z "$(own_pids)" ] && break; sleep 0.1; done
left=$(own_pids)
[ -z "$left" ] || { echo "processes left in the root: $(echo $left)"; ps -o pid,args -p "$(echo $left | tr ' ' ,)"; exit 1; }
! grep " $WORK" /proc/self/mountinfo || { echo "mounts left under $WORK"; exit 1; }
if [ -d /var/run/netns ] && ls /var/run/netns | grep -q "^$LAB_PREFIX"; then
    echo "network namespaces of ours in this machine's /var/run/netns"; exit 1
fi
phase "fresh: ok in $(( ($(date +%s%N) - T0) / 1000000000 ))s (the README's steps work on a pristine Debian 12 with its own python3)"
exit 0
}
