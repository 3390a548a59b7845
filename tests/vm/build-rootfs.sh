#!/bin/sh
# Builds (once) the base root filesystem of the systemd VM of `make test-vm`:
# Debian bookworm (minbase) with systemd as PID 1, dbus (the systemd cgroup
# driver talks to systemd over the system bus) and the shim's libseccomp.
# tests/vm/run.sh copies it per run and adds the configuration
# (tests/vm/systemd/), the host-built binaries and the checks.
# Cached under $IDSHIFT_VM_CACHE/rootfs/<suite>-<key>, the key a hash of the
# suite, the package list and FORMAT (bump it when the build changes);
# prints the directory.
#
# usage: build-rootfs.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=systemd,systemd-sysv,dbus,libseccomp2,procps
FORMAT=1
key=$(echo "$SUITE $MIRROR $PACKAGES $FORMAT" | sha256sum | cut -c1-16)
out=$CACHE/rootfs/$SUITE-$key
if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "build-rootfs: debootstrap missing (make deps-vm)" >&2; exit 1; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "build-rootfs: $keyring missing (apt install debian-archive-keyring)" >&2; exit 1; }
mkdir -p "$CACHE/rootfs"
tmp=$(mktemp -d "$CACHE/rootfs/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
root=$tmp/root
echo "build-rootfs: debootstrap $SUITE (minbase + $PACKAGES) into $out" >&2
debootstrap --variant=minbase --keyring="$keyring" --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2 \
    || { echo "build-rootfs: debootstrap failed" >&2; tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }
# Space: no apt archives, docs or locales in the image.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* \
    "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale"

touch "$root/.complete"
rm -rf "$out"
mv "$root" "$out"
echo "$out"
