#!/bin/sh
# Fetches a Debian cloud kernel (vmlinuz + modules) for the VM matrix into
# $CACHE/kernels/<version>/ with scripts/debian-debs.sh (a private apt
# configuration under $CACHE/apt, keyring checked: the system's apt state is
# never touched). Prints the kernel's directory.
#
# usage: fetch-kernel.sh SUITE PACKAGE-PATTERN
#   fetch-kernel.sh bookworm 'linux-image-6.1.0-*-cloud-amd64'
#   fetch-kernel.sh trixie linux-image-cloud-amd64
set -eu
suite=$1
pattern=$2
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
debs=$(dirname "$0")/../../scripts/debian-debs.sh
mkdir -p "$CACHE/kernels"
aptcache() { sh "$debs" "$suite" "$CACHE" --apt-cache "$@" 2>/dev/null; }
# The package: for a meta package (linux-image-cloud-amd64), the image it depends on.
pkg=$(aptcache pkgnames "$(echo "$pattern" | sed 's/\*.*//')" \
      | grep -x "$(echo "$pattern" | sed 's/\./\\./g; s/\*/.*/g')" | grep -v -- '-unsigned$' | grep -v -- '-dbg$' | sort -V | tail -1) || true
[ -n "$pkg" ] || { echo "fetch-kernel: no package matches $pattern in $suite" >&2; exit 1; }
dep=$(aptcache depends "$pkg" | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
[ -n "$dep" ] && pkg=$dep
ver=${pkg#linux-image-}
out=$CACHE/kernels/$ver
if [ ! -f "$out/vmlinuz" ]; then
    # Newer kernels (sid) split the image into linux-binary-* and linux-modules-*.
    parts="$pkg $(aptcache depends "$pkg" \
        | sed -n "s/^ *Depends: \(linux-\(binary\|modules\)-$ver\)\$/\1/p" | sort -u | tr '\n' ' ')"
    trees=$(sh "$debs" "$suite" "$CACHE" $parts)
    tmp=$(mktemp -d "$CACHE/kernels/.fetch.XXXXXX")
    # The parts are one tree (the modules of a split kernel are in two).
    mkdir "$tmp/root"
    for t in $trees; do cp -a "$t/." "$tmp/root/"; done
    vmlinuz=$(find "$tmp/root" -path "*/boot/vmlinuz-$ver" -o -path "*/modules/$ver/vmlinuz" | head -1)
    modules=$(find "$tmp/root" -type d -path "*/modules/$ver" | head -1)
    [ -n "$vmlinuz" ] && [ -n "$modules" ] || { echo "fetch-kernel: no vmlinuz or modules in $parts" >&2; rm -rf "$tmp"; exit 1; }
    mkdir "$tmp/k"
    cp "$vmlinuz" "$tmp/k/vmlinuz"
    mv "$modules" "$tmp/k/modules"
    rm -f "$tmp/k/modules/vmlinuz"
    rm -rf "$out"
    mv "$tmp/k" "$out"
    rm -rf "$tmp"
    # The unpacked packages are not kept: the kernel's directory is the cache.
    for t in $trees; do rm -rf "$t"; done
fi
echo "$out"
