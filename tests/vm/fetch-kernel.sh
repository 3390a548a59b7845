#!/bin/sh
# Fetches a Debian cloud kernel (vmlinuz + modules) for the VM matrix into
# $CACHE/kernels/<version>/ through a PRIVATE apt configuration (its own
# sources list, lists and archives dirs under $CACHE/apt): the system's apt
# state is never touched. Prints the kernel's directory.
#
# usage: fetch-kernel.sh SUITE PACKAGE-PATTERN
#   fetch-kernel.sh bookworm 'linux-image-6.1.0-*-cloud-amd64'
#   fetch-kernel.sh trixie linux-image-cloud-amd64
set -eu
suite=$1
pattern=$2
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
apt_dir=$CACHE/apt/$suite
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$CACHE/kernels"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "fetch-kernel: $keyring missing (apt install debian-archive-keyring)" >&2; exit 1; }
echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" > "$apt_dir/sources.list"
apt_opts="-o Dir::Etc::sourcelist=$apt_dir/sources.list -o Dir::Etc::sourceparts=- \
 -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache::archives=$apt_dir/archives \
 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Architecture=amd64 \
 -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
# Lists are refreshed once a day.
if [ -z "$(find "$apt_dir/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null)" ]; then
    apt-get -qq $apt_opts update >&2
fi
# The package: for a meta package (linux-image-cloud-amd64), the image it depends on.
pkg=$(apt-cache $apt_opts pkgnames "$(echo "$pattern" | sed 's/\*.*//')" 2>/dev/null \
      | grep -x "$(echo "$pattern" | sed 's/\./\\./g; s/\*/.*/g')" | grep -v -- '-unsigned$' | grep -v -- '-dbg$' | sort -V | tail -1)
[ -n "$pkg" ] || { echo "fetch-kernel: no package matches $pattern in $suite" >&2; exit 1; }
dep=$(apt-cache $apt_opts depends "$pkg" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
[ -n "$dep" ] && pkg=$dep
ver=${pkg#linux-image-}
out=$CACHE/kernels/$ver
if [ ! -f "$out/vmlinuz" ]; then
    tmp=$(mktemp -d "$CACHE/kernels/.fetch.XXXXXX")
    # Newer kernels (sid) split the image into linux-binary-* and linux-modules-*.
    parts="$pkg $(apt-cache $apt_opts depends "$pkg" 2>/dev/null \
        | sed -n "s/^ *Depends: \(linux-\(binary\|modules\)-$ver\)\$/\1/p" | sort -u | tr '\n' ' ')"
    ( cd "$tmp" && apt-get -qq $apt_opts download $parts >&2 )
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
    mkdir -p "$tmp/k"
    vmlinuz=$(find "$tmp/root" -path "*/boot/vmlinuz-$ver" -o -path "*/modules/$ver/vmlinuz" | head -1)
    modules=$(find "$tmp/root" -type d -path "*/modules/$ver" | head -1)
    [ -n "$vmlinuz" ] && [ -n "$modules" ] || { echo "fetch-kernel: no vmlinuz or modules in $parts" >&2; exit 1; }
    cp "$vmlinuz" "$tmp/k/vmlinuz"
    mv "$modules" "$tmp/k/modules"
    rm -f "$tmp/k/modules/vmlinuz"
    rm -rf "$out"
    mv "$tmp/k" "$out"
    rm -rf "$tmp"
fi
echo "$out"
