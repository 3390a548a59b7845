#!/bin/sh
# Debian packages of another suite, without touching the host's apt state:
# one private apt per suite and cache (its own sources list, lists and
# archives under CACHE/apt/SUITE; dpkg status /dev/null), signed by
# Debian's archive keyring (checked), lists refreshed once a day (or with
# --refresh). The one fetcher of the repo: tests/install-containerd.sh
# (containerd 1.7 and 2.x), tests/vm/fetch-kernel.sh (the VM matrix's
# kernels) and the Docker suite (tests/harness/src/docker.rs: docker.io,
# docker-cli) call it.
#
#   scripts/debian-debs.sh [--refresh] SUITE CACHE PACKAGE...
#       unpacks each package's candidate version (dpkg-deb -x) into
#       CACHE/<package>-<version> (':' and '~' as '_'), reused when there
#       (no download), and prints each tree's path; the tree's
#       `.debian-version` holds the version.
#   scripts/debian-debs.sh [--refresh] SUITE CACHE --apt-cache ARGS...
#       runs apt-cache ARGS with the private configuration (e.g. `policy
#       PKG`, `depends PKG`, `pkgnames PREFIX`), for callers that pick
#       packages by pattern or dependency.
#
# IDSHIFT_DEBIAN_MIRROR overrides http://deb.debian.org/debian.
set -eu
refresh=0
if [ "${1:-}" = --refresh ]; then
    refresh=1
    shift
fi
[ $# -ge 3 ] || { echo "usage: $0 [--refresh] SUITE CACHE PACKAGE... | SUITE CACHE --apt-cache ARGS..." >&2; exit 2; }
suite=$1
cache=$2
shift 2
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${IDSHIFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v dpkg-deb >/dev/null || { echo "debian-debs: dpkg-deb not found" >&2; exit 1; }
[ -r "$keyring" ] || { echo "debian-debs: $keyring missing (package debian-archive-keyring)" >&2; exit 1; }
arch=$(dpkg --print-architecture)
apt=$cache/apt/$suite
mkdir -p "$apt/lists/partial" "$apt/cache" "$apt/archives/partial"
echo "deb [signed-by=$keyring arch=$arch] $mirror $suite main" >"$apt/sources.list"

# apt-get or apt-cache with the private configuration only.
private() {
    tool=$1
    shift
    "$tool" -q \
        -o Dir::Etc::sourcelist="$apt/sources.list" \
        -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$apt/lists" \
        -o Dir::State::status=/dev/null \
        -o Dir::Cache="$apt/cache" \
        -o Dir::Cache::archives="$apt/archives" \
        -o APT::Architecture="$arch" \
        -o Acquire::Languages=none \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
        -o APT::Get::List-Cleanup=false \
        -o APT::Sandbox::User=root \
        "$@"
}

# Lists older than a day (or none) are fetched; apt checks their signature
# against the keyring named in the sources list.
if [ "$refresh" = 1 ] || [ -z "$(find "$apt/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    private apt-get update >&2
fi

if [ "$1" = --apt-cache ]; then
    shift
    private apt-cache "$@"
    exit 0
fi

for pkg in "$@"; do
    version=$(private apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [ -n "$version" ] && [ "$version" != "(none)" ] || { echo "debian-debs: no package $pkg in Debian $suite" >&2; exit 1; }
    tree=$cache/$pkg-$(echo "$version" | tr ':~' '__')
    if [ ! -f "$tree/.debian-version" ]; then
        tmp=$(mktemp -d "$cache/.unpack-$pkg.XXXXXX")
        # A failure below (download, unpack) leaves no half-unpacked tree.
        trap 'rm -rf "$tmp"' EXIT
        (cd "$tmp" && private apt-get download "$pkg=$version" >&2)
        deb=$(ls "$tmp"/*.deb | head -1)
        [ -n "$deb" ] || { echo "debian-debs: apt-get download left no $pkg $version" >&2; exit 1; }
        mkdir "$tmp/root"
        dpkg-deb -x "$deb" "$tmp/root"
        echo "$version" >"$tmp/root/.debian-version"
        rm -rf "$tree"
        mv "$tmp/root" "$tree"
        rm -rf "$tmp"
        trap - EXIT
    fi
    echo "$tree"
done
