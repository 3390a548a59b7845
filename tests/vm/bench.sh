#!/bin/sh
# The launch storm inside a VM whose only cgroup hierarchy is v2 (`make
# bench-vm`): crun refuses this host's hybrid cgroup layout ("cgroups in
# hybrid mode not supported"), so crun, runc and idshift are compared here,
# under the host's containerd 1.6 in a qemu VM (Debian sid's 7.2 cloud kernel,
# fetched and cached by fetch-kernel.sh; KVM when /dev/kvm works, else TCG;
# 2 vCPUs, 2 GiB) over the kernel matrix's busybox initramfs and an ext4
# disk holding the host-built release binaries, containerd, ctr, the runc
# shim, runc and crun with their libraries.
#
# Under TCG everything runs ~10-30x slower than on the host: the storm is
# kept small (the arguments below), and its absolute latencies measure the
# emulator; only ratios between configurations of the same run mean
# something.
#
# usage: tests/vm/bench.sh [idshift-bench storm arguments]
#   default: --configs fd,runc,crun --layers 10 --containers 1,3
#            --min-samples 2 --run-rm 2 (about 11 min under TCG)
# The storm's report (--markdown) is written to $IDSHIFT_VM_CACHE/logs/bench-<kernel>.md
# and printed; VM_TIMEOUT (s, default 1800) bounds the VM.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
VM_TIMEOUT=${VM_TIMEOUT:-1800}
CARGO=${CARGO:-cargo}
export IDSHIFT_VM_CACHE=$CACHE
args=${*:---configs fd,runc,crun --layers 10 --containers 1,3 --min-samples 2 --run-rm 2}

for tool in qemu-system-x86_64 mke2fs busybox strip xz zstd containerd ctr runc crun containerd-shim-runc-v2; do
    command -v $tool >/dev/null || { echo "bench.sh: $tool missing (make deps-vm deps-bench)" >&2; exit 1; }
done

echo "== building the binaries (release)"
(cd "$repo" && $CARGO build -q --release -p shim -p idshift-bench --bins)

. "$here/common.sh"
vm_accel
echo "== qemu: $accel"

work=$(mktemp -d "${TMPDIR:-/tmp}/idshift-vm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# The disk's payload: busybox, the binaries and their libraries, /vm-init
# and the storm's arguments.
payload=$work/payload
libdir=$payload/lib/x86_64-linux-gnu
mkdir -p "$payload/bin" "$libdir" "$payload/lib64" "$payload/tmp" "$payload/var/tmp" "$payload/dev"
chmod 755 "$payload"
chmod 1777 "$payload/tmp" "$payload/var/tmp"
cp /bin/busybox "$payload/bin/busybox"
cp "$here/bench-init.sh" "$payload/vm-init"
chmod 755 "$payload/vm-init"
printf '%s\n' "$args" > "$payload/vm-bench-args"
for b in "$repo/target/release/containerd-shim-idshift-v2" "$repo/target/release/idshift-bench" \
        "$(command -v containerd)" "$(command -v ctr)" "$(command -v containerd-shim-runc-v2)" \
        "$(command -v runc)" "$(command -v crun)"; do
    strip -o "$payload/bin/$(basename "$b")" "$b"
    ldd "$b" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p' | while read -r lib; do
        cp -L "$lib" "$libdir/"
    done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$payload/lib64/"

# Debian sid's kernel and the kernel matrix's initramfs (common.sh, cached).
vm_kernel 7.2

disk=$work/disk.img
mke2fs -q -t ext4 -d "$payload" -L idshift "$disk" 3G >/dev/null
log=$work/console.log
echo "== kernel $ver: idshift-bench storm $args (in the VM)"
vm_boot "$disk" "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" 2048 2 "$log"
mkdir -p "$CACHE/logs"
cp "$log" "$CACHE/logs/bench-console-$ver.log"
awk '/@@END/ { exit } on { print } /@@BEGIN/ { on = 1 }' "$log"
md=$CACHE/logs/bench-$ver.md
awk '/@@MD-END/ { exit } on { print } /@@MD-BEGIN/ { on = 1 }' "$log" > "$md"
echo "(console log: $CACHE/logs/bench-console-$ver.log; report: $md; VM time ${secs}s, $accel)"
[ $rc -eq 124 ] || [ $rc -eq 137 ] && { echo "bench.sh: the VM timed out after ${VM_TIMEOUT}s" >&2; exit 1; }
grep -aq '^@@END status=0' "$log" || { echo "bench.sh: the storm in the VM failed or did not finish" >&2; exit 1; }
echo "bench in the VM done"
