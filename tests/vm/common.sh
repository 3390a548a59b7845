# Sourced by tests/vm/run.sh, tests/vm/boot-systemd.sh and tests/vm/bench.sh (POSIX sh): what
# every VM of the kernel matrix needs.
#   vm_accel            sets $accel: qemu's KVM flags when /dev/kvm works, TCG's otherwise
#   vm_kernel K [WORK]  sets $kdir, $ver, $initrd for kernel K (6.1, 6.12 or 7.2):
#                       fetched (tests/vm/fetch-kernel.sh) and its initramfs built, both cached
#   vm_crashed_before_checks LOG   whether the guest kernel crashed before the checks began
#   vm_boot DISK CMDLINE MEM CPUS LOG   boots kernel and initramfs with DISK under qemu
# Expects $here (tests/vm) and $CACHE (the cache dir).

vm_accel() {
    accel="-accel tcg -cpu max"
    if [ -w /dev/kvm ] && timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 64 -nographic -no-reboot \
            -kernel /dev/null >/dev/null 2>&1; then
        accel="-accel kvm -cpu host"
    fi
}

# Whether console log $1 shows the guest kernel crashing (Oops, panic) before
# the checks began (no @@BEGIN): a boot that ran nothing of ours. Seen once
# in CI with sid's 7.2 under TCG (an int3 Oops in sched_clock_cpu, 1.7 s into
# the boot, in swapper); vm_boot boots such a VM once more.
vm_crashed_before_checks() {
    ! grep -aq '@@BEGIN' "$1" && grep -aqE 'Kernel panic|Oops:' "$1"
}

# Boots $kdir/vmlinuz with $initrd (vm_kernel) and disk $1 under qemu
# ($accel, at most $VM_TIMEOUT s), kernel command line $2, $3 MiB of memory
# and $4 CPUs; the console, \r removed, goes to $5. Sets $rc (qemu's status:
# 124 or 137 on a timeout) and $secs. A guest kernel that crashes while
# booting, before the checks begin, is booted once more, saying so; the
# crash's console log is kept as $5.crashed.
vm_boot() {
    for _attempt in 1 2; do
        _start=$(date +%s)
        rc=0
        timeout --foreground -k 10 "$VM_TIMEOUT" qemu-system-x86_64 $accel -m "$3" -smp "$4" -nographic -no-reboot \
            -kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$2" \
            -drive "file=$1,if=virtio,format=raw,cache=unsafe" \
            -serial mon:stdio -monitor none > "$5.raw" 2>&1 </dev/null || rc=$?
        secs=$(( $(date +%s) - _start ))
        tr -d '\r' < "$5.raw" > "$5"
        rm -f "$5.raw"
        if [ "$_attempt" = 1 ] && vm_crashed_before_checks "$5"; then
            cp "$5" "$5.crashed"
            echo "== the guest kernel crashed while booting, before the checks (console log: $5.crashed): booting it again"
            continue
        fi
        return 0
    done
}

# The Debian suite and package of kernel $1.
vm_kernel_package() {
    case $1 in
        6.1) suite=bookworm; pkg='linux-image-6.1.0-*-cloud-amd64' ;;
        6.12) suite=trixie; pkg=linux-image-cloud-amd64 ;;
        7.2) suite=sid; pkg=linux-image-cloud-amd64 ;;
        *) echo "unknown kernel $1 (6.1, 6.12 or 7.2)" >&2; return 2 ;;
    esac
}

vm_kernel() {
    vm_kernel_package "$1" || return 2
    kdir=$("$here/fetch-kernel.sh" "$suite" "$pkg") || return 1
    ver=$(basename "$kdir")
    # The initramfs (cached per kernel version): busybox, the modules for
    # virtio disks and overlayfs, and /init (tests/vm/initramfs-init.sh).
    initrd=$CACHE/initrd/$ver.cpio.gz
    if [ ! -f "$initrd" ] || [ "$here/initramfs-init.sh" -nt "$initrd" ]; then
        _root=$(mktemp -d "${TMPDIR:-/tmp}/idshift-initrd.XXXXXX")
        mkdir -p "$_root/bin" "$_root/modules" "$_root/dev" "$_root/proc"
        cp /bin/busybox "$_root/bin/busybox"
        cp "$here/initramfs-init.sh" "$_root/init"
        chmod 755 "$_root/init"
        _i=0
        for _m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk overlay; do
            _f=$(find "$kdir/modules" -name "$_m.ko" -o -name "$_m.ko.xz" -o -name "$_m.ko.zst" | head -1)
            [ -n "$_f" ] || continue # built in
            _i=$((_i + 1))
            _out=$_root/modules/$_i-$_m.ko
            case $_f in
                *.xz) xz -dc "$_f" > "$_out" ;;
                *.zst) zstd -qdc "$_f" > "$_out" ;;
                *) cp "$_f" "$_out" ;;
            esac
        done
        mkdir -p "$CACHE/initrd"
        (cd "$_root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd.tmp.$$"
        mv "$initrd.tmp.$$" "$initrd"
        rm -rf "$_root"
    fi
}
