#!/bin/busybox sh
# The initramfs's /init of the kernel-matrix VM (tests/vm/run.sh): loads the
# virtio and overlay modules, mounts the ext4 disk and makes it the root
# (pivot_root, which containers need, cannot leave the initramfs), then runs
# its /vm-init (tests/vm/init.sh).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do
    [ -e "$m" ] && { /bin/busybox insmod "$m" || echo "insmod $m failed"; }
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
/bin/busybox mkdir -p /newroot
if ! /bin/busybox mount -t ext4 /dev/vda /newroot; then
    echo "@@END status=1 (no disk)"
    /bin/busybox poweroff -f
fi
/bin/busybox umount /proc /dev
exec /bin/busybox switch_root /newroot /vm-init
