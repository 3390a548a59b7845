#!/usr/bin/env bash
# Installs other containerd versions beside the system's (Debian bookworm's
# 1.6) for the end-to-end tests, without touching the system's apt state or
# its containerd: Debian's own packages, fetched and unpacked into a private
# prefix per version by scripts/debian-debs.sh (private apt configuration,
# keyring check):
#
#   $IDSHIFT_CONTAINERD_CACHE/containerd-<version>/usr/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $IDSHIFT_CONTAINERD_CACHE/<flavour> -> containerd-<version>   (flavour: 2.x, 1.7)
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
DEBS=$(dirname "$0")/../scripts/debian-debs.sh

refresh=0
flavours=()
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

mkdir -p "$CACHE"

install_flavour() {
    local flavour=$1 suite
    suite=$(suite_of "$flavour")
    local link=$CACHE/$flavour
    if [ "$refresh" = 0 ] && [ -x "$link/usr/bin/containerd" ] && [ -x "$link/usr/bin/ctr" ]; then
        echo "install-containerd: $flavour: $(readlink "$link") (cached in $CACHE)"
        return
    fi
    local args=() tree version
    [ "$refresh" = 0 ] || args=(--refresh)
    tree=$(sh "$DEBS" "${args[@]}" "$suite" "$CACHE" containerd)
    version=$(cat "$tree/.debian-version")
    # Upstream version: 2.1.9+ds1-5 -> 2.1.9
    local upstream=${version%%[+~-]*}
    version_ok "$flavour" "$upstream" || {
        echo "install-containerd: Debian $suite has containerd $version, not a $flavour" >&2
        exit 1
    }
    "$tree/usr/bin/containerd" --version >/dev/null || {
        echo "install-containerd: the unpacked containerd $version does not run here" >&2
        exit 1
    }
    ln -sfn "$(basename "$tree")" "$link.tmp"
    mv -T "$link.tmp" "$link"
    echo "install-containerd: $flavour: $upstream (Debian $suite $version) in $tree"
}

for f in "${flavours[@]}"; do
    install_flavour "$f"
done
