#!/bin/busybox sh
# /init of the kernel-matrix VM (tests/vm/run.sh): loads the virtio and
# overlay modules, mounts the ext4 disk (binaries in /mnt/bin, their
# libraries in /mnt/lib, the tests' layers in /mnt/tmp: idmapped mounts need
# a filesystem like ext4, not the initramfs), runs the checks and powers off.
# Everything between @@BEGIN and @@END is the report run.sh reads.
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/mnt/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
for m in /modules/*.ko; do
    [ -e "$m" ] && { insmod "$m" || echo "insmod $m failed"; }
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 /dev/vda /mnt || { echo "@@END status=1 (no disk)"; poweroff -f; }
mkdir -p /lib64 /var/lib/idshift /run
ln -sf /mnt/lib/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
export LD_LIBRARY_PATH=/mnt/lib TMPDIR=/mnt/tmp HOME=/mnt/tmp RUST_BACKTRACE=1
status=0
step() {
    echo "--- $*"
    "$@" || { echo "--- FAILED ($?): $*"; status=1; }
}
echo "@@BEGIN"
echo "kernel $(uname -r), $(nproc) CPUs, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
step containerd-shim-idshift-v2 --features --scratch /mnt/tmp
step rootfs-kernel-tests --test-threads=2 --nocapture
step idshift-bench rootfs --layers 2,10,60 --iterations 3
leftover=$(grep -c . /proc/self/mountinfo)
echo "mountinfo lines at the end: $leftover"
ls /mnt/tmp | grep . && { echo "--- FAILED: files left in the scratch dir"; status=1; }
echo "@@END status=$status"
sync
poweroff -f
