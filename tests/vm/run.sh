#!/bin/sh
# The kernel matrix (`make test-vm`): boots Debian's cloud kernels 6.1
# (bookworm), 6.12 (trixie) and 7.2 (sid) in qemu (KVM when /dev/kvm works,
# TCG otherwise; cgroup v2 only) over a small busybox initramfs and an ext4
# disk holding the host-built binaries, and per kernel checks:
#   - `containerd-shim-idshift-v2 --features` reports the tier the design
#     says (6.1: legacy relative lowerdir=; 6.12: lowerdir+ path strings;
#     7.2: layer fds from a detached idmapped tree) and what `auto` means;
#   - the rootfs kernel tests (rootfs/tests/kernel.rs) pass there, including
#     the check that the probe claims exactly what real constructions do;
#   - `idshift-bench rootfs` with 2, 10 and 60 layers (only the strategies
#     the kernel has; the others reported unsupported);
#   - a ctr end-to-end under the host's containerd 1.6 (VM_E2E=0 skips it):
#     two containers of a 60-layer image in disjoint ID ranges, the mount
#     syscalls of each create and the host mount table while they run
#     logged, nothing added under the test's directory, nothing left after;
#     and each strategy forced in the config runs or is refused clearly.
# Prints a table per kernel at the end. A VM that does not finish within
# VM_TIMEOUT seconds is killed and the run fails with its console log.
#
# Kernels and per-kernel images are cached under $IDSHIFT_VM_CACHE
# (default /var/cache/idshift-vm), keyed by kernel version.
#
# usage: tests/vm/run.sh [6.1] [6.12] [7.2]     (default: all three)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
VM_TIMEOUT=${VM_TIMEOUT:-900}
CARGO=${CARGO:-cargo}
export IDSHIFT_VM_CACHE=$CACHE

kernels=${*:-6.1 6.12 7.2}
for k in $kernels; do
    case $k in 6.1|6.12|7.2) ;; *) echo "run.sh: unknown kernel $k (6.1, 6.12 or 7.2)" >&2; exit 2 ;; esac
done

for tool in qemu-system-x86_64 mke2fs busybox strip xz zstd; do
    command -v $tool >/dev/null || { echo "run.sh: $tool missing (make deps-vm)" >&2; exit 1; }
done
[ -x /bin/busybox ] && file_static=$(ldd /bin/busybox 2>&1 || true)
case "${file_static:-}" in *"not a dynamic"*|*"statically"*) ;; *) echo "run.sh: /bin/busybox must be static (busybox-static)" >&2; exit 1 ;; esac

# Host-built binaries: the shim, the benchmark and the rootfs kernel tests.
echo "== building the binaries (debug)"
(cd "$repo" && $CARGO build -q -p shim -p idshift-bench --bins)
kernel_test=$(cd "$repo" && $CARGO test -q -p rootfs --test kernel --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$kernel_test" ] || { echo "run.sh: could not find the rootfs kernel test binary" >&2; exit 1; }
# The ctr end-to-end (VM_E2E=0 skips it): the e2e test binary, with the
# host's containerd 1.6 and ctr (Debian's package) copied into the VM.
ctr_test=""
if [ "${VM_E2E:-1}" = 1 ]; then
    ctr_test=$(cd "$repo" && $CARGO test -q -p idshift-tests --test ctr --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -x "$ctr_test" ] || { echo "run.sh: could not find the ctr e2e test binary" >&2; exit 1; }
    for b in containerd ctr; do
        command -v $b >/dev/null || { echo "run.sh: $b missing (make deps-test)" >&2; exit 1; }
    done
fi

accel="-accel tcg -cpu max"
if [ -w /dev/kvm ] && timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 64 -nographic -no-reboot \
        -kernel /dev/null >/dev/null 2>&1; then
    accel="-accel kvm -cpu host"
fi
echo "== qemu: $accel"

work=$(mktemp -d "${TMPDIR:-/tmp}/idshift-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# The disk's payload (the VM's root, shared by all kernels): busybox, the
# stripped binaries and their libraries where the loader looks, /vm-init.
payload=$work/payload
libdir=$payload/lib/x86_64-linux-gnu
mkdir -p "$payload/bin" "$libdir" "$payload/lib64" "$payload/tmp" "$payload/var/tmp" "$payload/dev"
chmod 755 "$payload" # the root directory: mktemp made it 0700
chmod 1777 "$payload/tmp" "$payload/var/tmp"
cp /bin/busybox "$payload/bin/busybox"
cp "$here/init.sh" "$payload/vm-init"
chmod 755 "$payload/vm-init"
for b in "$repo/target/debug/containerd-shim-idshift-v2" "$repo/target/debug/idshift-bench" "$kernel_test" \
        ${ctr_test:+"$ctr_test" "$(command -v containerd)" "$(command -v ctr)"}; do
    name=$(basename "$b")
    case $b in "$kernel_test") name=rootfs-kernel-tests ;; "$ctr_test") name=ctr-tests ;; esac
    strip -o "$payload/bin/$name" "$b"
    ldd "$b" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p' | while read -r lib; do
        cp -L "$lib" "$libdir/"
    done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$payload/lib64/"

summary=$work/summary
: > "$summary"
failed=""

for k in $kernels; do
    case $k in
        6.1) suite=bookworm; pkg='linux-image-6.1.0-*-cloud-amd64'; want_tier='legacy lowerdir='; want_auto=path ;;
        6.12) suite=trixie; pkg=linux-image-cloud-amd64; want_tier='lowerdir+ path strings'; want_auto=path ;;
        7.2) suite=sid; pkg=linux-image-cloud-amd64; want_tier='layer fds from a detached idmapped tree'; want_auto=fd ;;
    esac
    echo "== kernel $k ($suite)"
    kdir=$("$here/fetch-kernel.sh" "$suite" "$pkg")
    ver=$(basename "$kdir")

    # The initramfs (cached per kernel version): busybox, the loader, the
    # modules for virtio disks and overlayfs, and /init.
    initrd=$CACHE/initrd/$ver.cpio.gz
    if [ ! -f "$initrd" ] || [ "$here/initramfs-init.sh" -nt "$initrd" ]; then
        root=$work/initrd-$ver
        mkdir -p "$root/bin" "$root/modules" "$root/dev" "$root/proc"
        cp /bin/busybox "$root/bin/busybox"
        cp "$here/initramfs-init.sh" "$root/init"
        chmod 755 "$root/init"
        i=0
        for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk overlay; do
            f=$(find "$kdir/modules" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)
            [ -n "$f" ] || continue # built in
            i=$((i + 1))
            out=$root/modules/$i-$m.ko
            case $f in
                *.xz) xz -dc "$f" > "$out" ;;
                *.zst) zstd -qdc "$f" > "$out" ;;
                *) cp "$f" "$out" ;;
            esac
        done
        mkdir -p "$CACHE/initrd"
        (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd.tmp"
        mv "$initrd.tmp" "$initrd"
    fi

    # A fresh ext4 disk per run: the binaries, and the scratch for the tests' layers.
    disk=$work/disk-$ver.img
    rm -f "$disk"
    mke2fs -q -t ext4 -d "$payload" -L idshift "$disk" 2G >/dev/null

    log=$work/console-$ver.log
    start=$(date +%s)
    rc=0
    timeout --foreground -k 10 "$VM_TIMEOUT" qemu-system-x86_64 $accel -m 1024 -smp 2 -nographic -no-reboot \
        -kernel "$kdir/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
        -drive "file=$disk,if=virtio,format=raw,cache=unsafe" \
        -serial mon:stdio -monitor none > "$log" 2>&1 </dev/null || rc=$?
    secs=$(( $(date +%s) - start ))
    tr -d '\r' < "$log" > "$log.txt"
    mkdir -p "$CACHE/logs"
    cp "$log.txt" "$CACHE/logs/console-$ver.log"
    awk '/@@END/ { exit } on { print } /@@BEGIN/ { on = 1 }' "$log.txt"
    echo "(console log: $CACHE/logs/console-$ver.log)"

    problems=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && problems="$problems; timed out after ${VM_TIMEOUT}s"
    grep -aq '^@@END status=0' "$log.txt" || problems="$problems; the checks in the VM failed or did not finish"
    tier=$(sed -n 's/^tier: *//p' "$log.txt" | head -1)
    auto=$(sed -n 's/^rootfs strategy (auto): *//p' "$log.txt" | head -1)
    case $tier in *"$want_tier"*) ;; *) problems="$problems; tier \"$tier\", expected \"$want_tier\"" ;; esac
    [ "$auto" = "$want_auto" ] || problems="$problems; auto = \"$auto\", expected \"$want_auto\""
    # The 60-layer row of the auto strategy: syscalls (3rd column) and mountinfo lines added (last).
    row=$(awk -v s="$auto" '$1 == 60 && $2 == s && $3 ~ /^[0-9]+$/ { print $3, $NF; exit }' "$log.txt")
    syscalls=${row% *}
    delta=${row#* }
    [ -n "$row" ] || { syscalls="?"; delta="?"; problems="$problems; no 60-layer row for $auto"; }
    # The design's numbers for auto at 60 layers: fd 4 (6.15+), path 6 (lowerdir+) or 7 (legacy); nothing left attached.
    case "$k:$syscalls:$delta" in
        6.1:7:0|6.12:6:0|7.2:4:0) ;;
        *) problems="$problems; 60-layer $auto rootfs: $syscalls mount syscalls, mountinfo +$delta (design: 6.1 7, 6.12 6, 7.2 4; +0)" ;;
    esac
    printf '%s|%s|%s|%s|%s|%s|%s\n' "$k" "$ver" "$tier" "$auto" "$syscalls" "$delta" "${secs}s" >> "$summary"
    if [ -n "$problems" ]; then
        echo "== kernel $k FAILED:${problems#;}"
        echo "== console log of kernel $k (last 80 lines):"
        tail -n 80 "$log.txt"
        failed="$failed $k"
    else
        echo "== kernel $k passed (${secs}s)"
    fi
done

echo
echo "== kernel matrix"
echo "| kernel | Debian package | tier (probed) | auto | mount syscalls, 60-layer rootfs | host mountinfo delta | VM time |"
echo "|---|---|---|---|---|---|---|"
while IFS='|' read -r k ver tier auto syscalls delta secs; do
    echo "| $k | $ver | $tier | $auto | $syscalls | +$delta | $secs |"
done < "$summary"
if [ -n "$failed" ]; then
    echo "FAILED on:$failed"
    exit 1
fi
echo "all kernels passed"
