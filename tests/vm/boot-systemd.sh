#!/bin/sh
# Boots one of the kernel matrix's kernels in qemu with systemd as PID 1
# over a Debian bookworm root (tests/vm/build-rootfs.sh, cached), cgroup v2
# only (systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all), with PAYLOAD
# copied over the root, and runs the payload's /idshift/vm-checks from a
# systemd service (idshift-checks.service, in system.slice, Delegate=yes,
# PATH starting with /idshift/bin, TMPDIR=/var/tmp on the ext4 disk); the
# VM powers off when it ends. Whatever it writes to its standard output goes
# to the console, saved in LOG; it reports with the lines
#   @@BEGIN ... @@END status=N
# and this script prints what lies between them and exits 0 when N is 0.
# Libraries that the payload's programs need and the image lacks are copied
# from the host. A VM that does not power off within VM_TIMEOUT seconds is
# killed and its console log printed.
#
# Reusable: tests/vm/run.sh runs idshift's cgroup v2 checks with it; any
# payload works (e.g. another runtime's binaries and a script driving them).
#
# usage: boot-systemd.sh KERNEL PAYLOAD LOG      (KERNEL: 6.1, 6.12 or 7.2)
# env: VM_TIMEOUT (s, 1800), VM_MEMORY (MiB, 1536), VM_CPUS (2), VM_DISK (3G),
#      IDSHIFT_VM_CACHE (/var/cache/idshift-vm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
export IDSHIFT_VM_CACHE=$CACHE
VM_TIMEOUT=${VM_TIMEOUT:-1800}
VM_MEMORY=${VM_MEMORY:-1536}
VM_CPUS=${VM_CPUS:-2}
VM_DISK=${VM_DISK:-3G}
. "$here/common.sh"
[ $# -eq 3 ] || { echo "usage: boot-systemd.sh KERNEL PAYLOAD LOG" >&2; exit 2; }
k=$1
payload=$2
log=$3
[ -x "$payload/idshift/vm-checks" ] || { echo "boot-systemd: $payload/idshift/vm-checks is not an executable" >&2; exit 2; }
for tool in qemu-system-x86_64 mke2fs busybox; do
    command -v $tool >/dev/null || { echo "boot-systemd: $tool missing (make deps-vm)" >&2; exit 1; }
done

base=$("$here/build-rootfs.sh")
vm_accel
vm_kernel "$k"

work=$(mktemp -d "${TMPDIR:-/tmp}/idshift-sysvm.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/root
mkdir "$root"
cp -a "$base/." "$root/"
rm -f "$root/.complete"

# The initramfs (tests/vm/initramfs-init.sh) mounts the disk read-write and
# switch_roots to its /vm-init: here, systemd.
printf '#!/bin/sh\nexec /lib/systemd/systemd "$@"\n' > "$root/vm-init"
chmod 755 "$root/vm-init"
echo idshift-vm > "$root/etc/hostname"
# A machine id of this boot (no first-boot setup).
tr -d '-' < /proc/sys/kernel/random/uuid > "$root/etc/machine-id"
sysd=$root/etc/systemd/system
# No login prompt on the console the checks write to; nothing that waits
# for a network or a clock, checks or trims disks.
for u in serial-getty@ttyS0.service getty@tty1.service console-getty.service getty.target \
        systemd-networkd-wait-online.service systemd-timesyncd.service apt-daily.timer \
        apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
        systemd-fsck-root.service; do
    ln -sf /dev/null "$sysd/$u"
done
cat > "$sysd/idshift-checks.service" <<'UNIT'
[Unit]
Description=the VM's checks (/idshift/vm-checks, tests/vm/boot-systemd.sh)
Requires=dbus.socket
After=dbus.socket dbus.service basic.target systemd-logind.service

[Service]
Type=oneshot
ExecStart=/idshift/vm-checks
# Whatever happens to the checks, the VM powers off (no clean shutdown:
# the disk is thrown away).
ExecStopPost=/bin/sh -c 'sync; exec systemctl poweroff --force --force'
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
Environment=TMPDIR=/var/tmp HOME=/root RUST_BACKTRACE=1 PATH=/idshift/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WorkingDirectory=/
TimeoutStartSec=infinity
# What runs containers is delegated its cgroup subtree, as containerd's
# own unit is.
Delegate=yes
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$sysd/multi-user.target.wants"
ln -sf ../idshift-checks.service "$sysd/multi-user.target.wants/idshift-checks.service"
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nShowStatus=no\nDefaultTimeoutStopSec=20s\n' > "$root/etc/systemd/system.conf.d/idshift.conf"

cp -a "$payload/." "$root/"
# The libraries of the payload's programs that the image lacks.
find "$root/idshift" -type f -perm -u+x | while read -r f; do
    ldd "$f" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p' | while read -r lib; do
        if [ ! -e "$root$lib" ]; then
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        fi
    done
done

disk=$work/disk.img
mke2fs -q -t ext4 -d "$root" -L idshift "$disk" "$VM_DISK" >/dev/null
rm -rf "$root"

vm_boot "$disk" "console=ttyS0 panic=-1 quiet loglevel=3 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all systemd.show_status=0" \
    "$VM_MEMORY" "$VM_CPUS" "$log"
awk '/^@@END/ { exit } on { print } /^@@BEGIN/ { on = 1 }' "$log"
echo "(systemd VM, kernel $ver: ${secs}s; console log: $log)"
problem=""
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    problem="timed out after ${VM_TIMEOUT}s"
elif ! grep -q '^@@END status=0' "$log"; then
    problem="the checks failed or did not finish ($(grep '^@@END' "$log" || echo 'no @@END'))"
fi
if [ -n "$problem" ]; then
    echo "== systemd VM, kernel $k: $problem; console log (last 60 lines):"
    tail -n 60 "$log"
    exit 1
fi
