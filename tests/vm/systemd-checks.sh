#!/bin/bash
# /idshift/vm-checks of make test-vm's systemd VM (tests/vm/run.sh boots it
# with tests/vm/boot-systemd.sh): run by a systemd service, under cgroup v2
# with controllers. Runs every check of tests/tests/cgroup2.rs (the test
# binary /idshift/bin/cgroup2-tests, its tests ignored outside this VM, on
# the containerd 1.6 in /idshift/bin) and reports between @@BEGIN and @@END
# (run.sh makes its per-check table from the "check NAME: RESULT" lines).
export PATH=/idshift/bin:$PATH TMPDIR=/var/tmp
mkdir -p /var/lib/idshift
echo "@@BEGIN"
echo "boot: $(cut -d' ' -f1 /proc/uptime) s to the checks; kernel $(uname -r), $(nproc) CPUs, PID 1 $(cat /proc/1/comm) ($(systemctl --version | head -1))"
echo "cgroup: $(stat -f -c %T /sys/fs/cgroup) at /sys/fs/cgroup, controllers: $(cat /sys/fs/cgroup/cgroup.controllers); root subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control); the checks' cgroup: $(cut -d: -f3 /proc/self/cgroup)"
echo "containerd: $(containerd --version)"
status=0
start=$(date +%s)
# One test at a time (each starts its own containerd), so that each gets a
# line "check NAME: pass|FAIL (N s)" of its own.
checks=$(cgroup2-tests --list --ignored 2>/dev/null | sed -n 's/: test$//p')
[ -n "$checks" ] || { echo "no checks listed by cgroup2-tests"; status=1; }
for name in $checks; do
    echo "--- $name"
    t0=$(date +%s)
    if cgroup2-tests --ignored --exact "$name" --nocapture --test-threads=1 >/run/check.out 2>&1 \
            && grep -q "test result: ok. 1 passed" /run/check.out; then
        result=pass
    else
        result=FAIL
        status=1
    fi
    cat /run/check.out
    echo "check $name: $result ($(( $(date +%s) - t0 )) s)"
done
echo "checks took $(( $(date +%s) - start )) s"
echo "@@END status=$status"
