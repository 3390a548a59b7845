#!/bin/sh
# Extracts Debian binary packages of another suite into a private prefix,
# without touching the host's apt state: a private sources list, lists and
# archives dir under the cache, `apt-get download`, `dpkg-deb -x`.
#
#   scripts/debian-debs.sh SUITE CACHE_DIR PACKAGE...
#
# The packages land in CACHE_DIR/<package>-<version>/ (one tree per package
# version, reused when present); the script prints each tree's path. Used by
# the Docker end-to-end suite (tests/tests/docker.rs) for docker.io and
# containerd from sid.
set -eu
suite=$1
cache=$2
shift 2
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${IDSHIFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg --print-architecture)
apt=$cache/apt-$suite
mkdir -p "$apt/lists/partial" "$apt/archives/partial"
echo "deb [signed-by=$keyring arch=$arch] $mirror $suite main" > "$apt/sources.list"
opts() {
    echo -o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache::archives="$apt/archives" \
        -o Dir::Cache="$apt" -o Dir::State::status=/var/lib/dpkg/status \
        -o APT::Architecture="$arch"
}
aptget() {
    apt-get -q -o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache::archives="$apt/archives" \
        -o Dir::Cache="$apt" -o Dir::State::status=/var/lib/dpkg/status \
        -o APT::Architecture="$arch" "$@"
}
# Lists older than a day are refreshed.
if [ -z "$(find "$apt/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    aptget update >&2
fi
for pkg in "$@"; do
    version=$(apt-cache $(opts) show "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
    [ -n "$version" ] || { echo "no package $pkg in $suite" >&2; exit 1; }
    tree=$cache/$pkg-$(echo "$version" | tr ':~' '__')
    if [ ! -f "$tree/.done" ]; then
        rm -rf "$tree.tmp"
        mkdir -p "$tree.tmp"
        (cd "$apt/archives" && aptget download "$pkg=$version" >&2)
        deb=$(ls "$apt/archives/${pkg}_"*"$(echo "$version" | sed 's/^[0-9]*://')"*.deb | head -1)
        dpkg-deb -x "$deb" "$tree.tmp"
        echo "$version" > "$tree.tmp/.done"
        rm -rf "$tree"
        mv "$tree.tmp" "$tree"
    fi
    echo "$tree"
done
