#!/usr/bin/env bash
# Installs other containerd versions beside the system's (Debian bookworm's
# 1.6) for the end-to-end tests, without touching the system's apt state or
# its containerd: Debian's own packages, fetched with a private apt config
# (sources list, lists, archives) and unpacked with dpkg-deb into a private
# prefix per version:
#
#   $IDSHIFT_CONTAINERD_CACHE/<version>/usr/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $IDSHIFT_CONTAINERD_CACHE/<flavour> -> <version>      (flavour: 2.x, 1.7)
#
# (IDSHIFT_CONTAINERD_CACHE defaults to /var/cache/idshift-containerd; the
# tests' harness reads the same variable.) Flavours: `2.x` from Debian sid
# (2.1.9 today; its binaries need libc >= 2.34, bookworm has 2.36), `1.7`
# from Debian trixie (1.7.24). runc stays the system's: sid's needs
# libc >= 2.38 and containerd 2.x runs with bookworm's 1.1.
#
# Idempotent: a flavour whose link resolves to an unpacked version is left
# as it is (no network); --refresh looks the suite up again and unpacks a
# newer version beside the old one.
#
# Usage: tests/install-containerd.sh [--refresh] [FLAVOUR...]   (default: 2.x 1.7)
set -euo pipefail

CACHE=${IDSHIFT_CONTAINERD_CACHE:-/var/cache/idshift-containerd}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MIRROR=${IDSHIFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}

refresh=0
flavours=()
work=
for a in "$@"; do
    case "$a" in
        --refresh) refresh=1 ;;
        2.x | 1.7) flavours+=("$a") ;;
        *)
            echo "install-containerd: unknown argument '$a' (flavours: 2.x, 1.7; --refresh)" >&2
            exit 2
            ;;
    esac
done
[ ${#flavours[@]} -gt 0 ] || flavours=(2.x 1.7)

suite_of() {
    case "$1" in
        2.x) echo sid ;;
        1.7) echo trixie ;;
    esac
}

# The version a flavour must have (its major.minor), so that a suite moving
# on (trixie to 2.x one day) is caught rather than silently tested.
version_ok() {
    case "$1" in
        2.x) [[ "$2" == 2.* ]] ;;
        1.7) [[ "$2" == 1.7.* ]] ;;
    esac
}

command -v dpkg-deb >/dev/null || { echo "install-containerd: dpkg-deb not found" >&2; exit 1; }
[ -r "$KEYRING" ] || { echo "install-containerd: $KEYRING missing (package debian-archive-keyring)" >&2; exit 1; }
mkdir -p "$CACHE"

# One private apt per suite, kept in the cache (its lists make a refresh
# cheap); nothing of the system's apt config, lists or archives is used.
apt_private() {
    local tool=$1 suite=$2
    shift 2
    local dir=$CACHE/apt/$suite
    "$tool" -q \
        -o Dir::Etc::sourcelist="$dir/sources.list" \
        -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$dir/lists" \
        -o Dir::State::status=/dev/null \
        -o Dir::Cache="$dir/cache" \
        -o Dir::Cache::archives="$dir/archives" \
        -o Acquire::Languages=none \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
        -o APT::Get::List-Cleanup=false \
        -o APT::Sandbox::User=root \
        "$@"
}

install_flavour() {
    local flavour=$1 suite
    suite=$(suite_of "$flavour")
    local link=$CACHE/$flavour
    if [ "$refresh" = 0 ] && [ -x "$link/usr/bin/containerd" ] && [ -x "$link/usr/bin/ctr" ]; then
        echo "install-containerd: $flavour: $(readlink "$link") (cached in $CACHE)"
        return
    fi
    local dir=$CACHE/apt/$suite
    mkdir -p "$dir/lists/partial" "$dir/cache" "$dir/archives/partial"
    echo "deb [signed-by=$KEYRING] $MIRROR $suite main" >"$dir/sources.list"
    apt_private apt-get "$suite" update >/dev/null
    local version
    version=$(apt_private apt-cache "$suite" policy containerd 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [ -n "$version" ] || { echo "install-containerd: no containerd in Debian $suite" >&2; exit 1; }
    # Upstream version: 2.1.9+ds1-5 -> 2.1.9
    local upstream=${version%%[+~-]*}
    version_ok "$flavour" "$upstream" || {
        echo "install-containerd: Debian $suite has containerd $version, not a $flavour" >&2
        exit 1
    }
    local prefix=$CACHE/$upstream
    if ! [ -x "$prefix/usr/bin/containerd" ]; then
        work=$(mktemp -d "$CACHE/.unpack-$upstream.XXXXXX")
        # A failure below (download, unpack) leaves no half-unpacked dir.
        trap 'rm -rf "$work"' EXIT
        (cd "$dir/archives" && apt_private apt-get "$suite" download "containerd=$version" >/dev/null)
        local deb
        deb=$(ls "$dir/archives"/containerd_*.deb | grep -F "_$(printf %s "$version" | sed 's/:/%3a/')_" | head -1)
        [ -n "$deb" ] || { echo "install-containerd: apt-get download left no containerd $version" >&2; rm -rf "$work"; exit 1; }
        dpkg-deb -x "$deb" "$work"
        rm -f "$deb"
        "$work/usr/bin/containerd" --version >/dev/null || {
            echo "install-containerd: the unpacked containerd $version does not run here" >&2
            rm -rf "$work"
            exit 1
        }
        echo "$version" >"$work/debian-version"
        rm -rf "$prefix"
        mv "$work" "$prefix"
        trap - EXIT
    fi
    ln -sfn "$upstream" "$link.tmp"
    mv -T "$link.tmp" "$link"
    echo "install-containerd: $flavour: $upstream (Debian $suite $version) in $prefix"
}

for f in "${flavours[@]}"; do
    install_flavour "$f"
done
