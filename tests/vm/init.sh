#!/bin/busybox sh
# /vm-init of the kernel-matrix VM (tests/vm/run.sh), run as PID 1 once the
# ext4 disk is the root (binaries in /bin, their libraries where the loader
# looks, the tests' layers in /tmp: idmapped mounts need a filesystem like
# ext4, not the initramfs): runs the checks and powers off.
# Everything between @@BEGIN and @@END is the report run.sh reads.
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin /proc
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /sys /dev /run /tmp /var/tmp /var/lib/idshift /etc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
export TMPDIR=/tmp HOME=/tmp RUST_BACKTRACE=1
status=0
step() {
    echo "--- $*"
    "$@" || { echo "--- FAILED ($?): $*"; status=1; }
}
echo "@@BEGIN"
echo "kernel $(uname -r), $(nproc) CPUs, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
step containerd-shim-idshift-v2 --features --scratch /tmp
step rootfs-kernel-tests --test-threads=2 --nocapture
step idshift-bench rootfs --layers 2,10,60 --iterations 3
# The named tests, on the containerd inside the VM (the system's 1.6):
# passes only when every one of them ran and passed (a name that matches
# nothing must not pass silently).
ctr_e2e() {
    ctr-tests --exact "$@" --nocapture --test-threads=1 >/run/ctr-tests.out 2>&1
    rc=$?
    cat /run/ctr-tests.out
    [ $rc = 0 ] && grep -q "test result: ok. $# passed" /run/ctr-tests.out
}
if [ -x /bin/ctr-tests ]; then
    step ctr_e2e concurrent_containers_get_disjoint_ranges_and_no_host_mounts::containerd_1_6 \
        a_forced_strategy_runs_or_is_refused_clearly::containerd_1_6
fi
leftover=$(grep -c . /proc/self/mountinfo)
echo "mountinfo lines at the end: $leftover"
ls /tmp /var/tmp | grep -v ':$' | grep . && { echo "--- FAILED: files left in the scratch dir"; status=1; }
echo "@@END status=$status"
sync
poweroff -f
