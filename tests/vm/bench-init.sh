#!/bin/busybox sh
# /vm-init of the benchmark VM (tests/vm/bench.sh), run as PID 1 once the
# ext4 disk is the root: mounts cgroup2 alone (the hierarchy crun wants),
# runs `idshift-bench storm` with /vm-bench-args under the containerd 1.6 on
# the disk, prints its Markdown report between @@MD-BEGIN and @@MD-END, and
# powers off. Everything between @@BEGIN and @@END is what bench.sh prints.
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
echo "@@BEGIN"
echo "kernel $(uname -r), $(nproc) CPUs, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
status=0
# shellcheck disable=SC2046 # the arguments are words
idshift-bench storm $(cat /vm-bench-args) --markdown /run/bench.md || status=$?
echo "@@MD-BEGIN"
cat /run/bench.md 2>/dev/null
echo "@@MD-END"
echo "@@END status=$status"
sync
poweroff -f
