#!/bin/bash
# /idshift/vm-checks of make test-vm's systemd VM (tests/vm/run.sh boots it
# with tests/vm/boot-systemd.sh): run by a systemd service, under cgroup v2
# with controllers. Runs the checks of tests/tests/cgroup2.rs (the test
# binary /idshift/bin/cgroup2-tests, its test ignored outside this VM, on
# the containerd 1.6 in /idshift/bin) and reports between @@BEGIN and @@END
# (run.sh makes its per-check table from its "checks: ..." and
# "check NAME: RESULT" lines).
export PATH=/idshift/bin:$PATH TMPDIR=/var/tmp
mkdir -p /var/lib/idshift
echo "@@BEGIN"
echo "boot: $(cut -d' ' -f1 /proc/uptime) s to the checks; kernel $(uname -r), $(nproc) CPUs, PID 1 $(cat /proc/1/comm) ($(systemctl --version | head -1))"
echo "cgroup: $(stat -f -c %T /sys/fs/cgroup) at /sys/fs/cgroup, controllers: $(cat /sys/fs/cgroup/cgroup.controllers); root subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control); the checks' cgroup: $(cut -d: -f3 /proc/self/cgroup)"
echo "containerd: $(containerd --version)"
status=0
start=$(date +%s)
# run.sh may pass IDSHIFT_CGROUP2_CHECKS (a subset of the checks).
[ -f /idshift/env ] && . /idshift/env
cgroup2-tests --ignored --exact cgroup_v2_under_systemd --nocapture --test-threads=1 2>&1 | tee /run/cgroup2.out
[ "${PIPESTATUS[0]}" = 0 ] && grep -q "test result: ok. 1 passed" /run/cgroup2.out || status=1
echo "checks took $(( $(date +%s) - start )) s"
echo "@@END status=$status"
