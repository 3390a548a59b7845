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
# Then cgroup v2 with controllers under systemd as PID 1 (VM_SYSTEMD=0
# skips it; VM_SYSTEMD_KERNELS picks its kernels, default the last above): per
# kernel a VM booting Debian bookworm's systemd (tests/vm/boot-systemd.sh,
# its root built once by tests/vm/build-rootfs.sh) runs every check of
# tests/tests/cgroup2.rs through ctr on containerd 1.6 (memory limit and
# TaskOOM, pids, cpu weight/quota, freeze/thaw, metrics, Update, the v2
# device allow-list, the systemd cgroup driver), each reading the cgroup
# files; a per-check table at the end. VM_MATRIX=0 skips the matrix above;
# VM_SYSTEMD_TIMEOUT (s, default 1800) per systemd VM.
# Prints a table per kernel at the end. A VM that does not finish within
# VM_TIMEOUT seconds is killed and the run fails with its console log.
#
# Kernels and per-kernel images are cached under $IDSHIFT_VM_CACHE
# (default /var/cache/idshift-vm), keyed by kernel version; the systemd
# VM's Debian root under rootfs/, keyed by its suite and packages.
#
# usage: tests/vm/run.sh [6.1] [6.12] [7.2]     (default: all three)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IDSHIFT_VM_CACHE:-/var/cache/idshift-vm}
VM_TIMEOUT=${VM_TIMEOUT:-900}
CARGO=${CARGO:-cargo}
export IDSHIFT_VM_CACHE=$CACHE
. "$here/common.sh"

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
# The matrix's binaries (VM_MATRIX=0 skips the matrix).
kernel_test=""
ctr_test=""
if [ "${VM_MATRIX:-1}" = 1 ]; then
    kernel_test=$(cd "$repo" && $CARGO test -q -p rootfs --test kernel --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -x "$kernel_test" ] || { echo "run.sh: could not find the rootfs kernel test binary" >&2; exit 1; }
    # The ctr end-to-end (VM_E2E=0 skips it): the e2e test binary, with the
    # host's containerd 1.6 and ctr (Debian's package) copied into the VM.
    if [ "${VM_E2E:-1}" = 1 ]; then
        ctr_test=$(cd "$repo" && $CARGO test -q -p idshift-tests --test ctr --no-run --message-format=json 2>/dev/null \
            | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
        [ -x "$ctr_test" ] || { echo "run.sh: could not find the ctr e2e test binary" >&2; exit 1; }
        for b in containerd ctr; do
            command -v $b >/dev/null || { echo "run.sh: $b missing (make deps-test)" >&2; exit 1; }
        done
    fi
fi

# The cgroup v2 checks under systemd (VM_SYSTEMD=0 skips them): the
# cgroup2 e2e test binary (its tests are ignored outside that VM) with the
# host's containerd 1.6 and ctr, on the kernels VM_SYSTEMD_KERNELS (default:
# the last of those given, 7.2 for the whole matrix: one systemd VM takes
# 6 to 15 min under TCG on 2 shared cores, CI's budget has room for one).
sysd_kernels=""
if [ "${VM_SYSTEMD:-1}" = 1 ]; then
    sysd_kernels=${VM_SYSTEMD_KERNELS:-$(echo $kernels | awk '{ print $NF }')}
    for k in $sysd_kernels; do
        vm_kernel_package "$k" >/dev/null || exit 2
    done
    cg_test=$(cd "$repo" && $CARGO test -q -p idshift-tests --test cgroup2 --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -x "$cg_test" ] || { echo "run.sh: could not find the cgroup2 e2e test binary" >&2; exit 1; }
    for b in containerd ctr; do
        command -v $b >/dev/null || { echo "run.sh: $b missing (make deps-test)" >&2; exit 1; }
    done
fi

vm_accel
echo "== qemu: $accel"

work=$(mktemp -d "${TMPDIR:-/tmp}/idshift-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# The disk's payload (the VM's root, shared by all kernels): busybox, the
# stripped binaries and their libraries where the loader looks, /vm-init.
payload=$work/payload
if [ "${VM_MATRIX:-1}" = 1 ]; then
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
fi

summary=$work/summary
: > "$summary"
failed=""

# VM_MATRIX=0 skips the matrix (only the systemd VMs run).
matrix_kernels=$kernels
[ "${VM_MATRIX:-1}" = 1 ] || matrix_kernels=""
for k in $matrix_kernels; do
    case $k in
        6.1) want_tier='legacy lowerdir='; want_auto=path ;;
        6.12) want_tier='lowerdir+ path strings'; want_auto=path ;;
        7.2) want_tier='layer fds from a detached idmapped tree'; want_auto=fd ;;
    esac
    vm_kernel_package "$k"
    echo "== kernel $k ($suite)"
    vm_kernel "$k"

    # A fresh ext4 disk per run: the binaries, and the scratch for the tests' layers.
    disk=$work/disk-$ver.img
    rm -f "$disk"
    mke2fs -q -t ext4 -d "$payload" -L idshift "$disk" 2G >/dev/null
    log=$work/console-$ver.log
    vm_boot "$disk" "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" 1024 2 "$log"
    mkdir -p "$CACHE/logs"
    cp "$log" "$CACHE/logs/console-$ver.log"
    [ -f "$log.crashed" ] && cp "$log.crashed" "$CACHE/logs/console-$ver-crashed.log"
    awk '/@@END/ { exit } on { print } /@@BEGIN/ { on = 1 }' "$log"
    echo "(console log: $CACHE/logs/console-$ver.log)"

    problems=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && problems="$problems; timed out after ${VM_TIMEOUT}s"
    grep -aq '^@@END status=0' "$log" || problems="$problems; the checks in the VM failed or did not finish"
    tier=$(sed -n 's/^tier: *//p' "$log" | head -1)
    auto=$(sed -n 's/^rootfs strategy (auto): *//p' "$log" | head -1)
    case $tier in *"$want_tier"*) ;; *) problems="$problems; tier \"$tier\", expected \"$want_tier\"" ;; esac
    [ "$auto" = "$want_auto" ] || problems="$problems; auto = \"$auto\", expected \"$want_auto\""
    # The 60-layer row of the auto strategy: syscalls (3rd column) and mountinfo lines added (last).
    row=$(awk -v s="$auto" '$1 == 60 && $2 == s && $3 ~ /^[0-9]+$/ { print $3, $NF; exit }' "$log")
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
        tail -n 80 "$log"
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

# cgroup v2 with controllers under systemd as PID 1: the checks of
# tests/tests/cgroup2.rs, one VM per kernel (tests/vm/boot-systemd.sh).
if [ -n "$sysd_kernels" ]; then
    spayload=$work/systemd-payload
    mkdir -p "$spayload/idshift/bin" "$spayload/usr/bin"
    cp /bin/busybox "$spayload/usr/bin/busybox"
    cp "$here/systemd-checks.sh" "$spayload/idshift/vm-checks"
    chmod 755 "$spayload/idshift/vm-checks"
    if [ -n "${IDSHIFT_CGROUP2_CHECKS:-}" ]; then
        echo "export IDSHIFT_CGROUP2_CHECKS=$IDSHIFT_CGROUP2_CHECKS" > "$spayload/idshift/env"
    fi
    strip -o "$spayload/idshift/bin/containerd-shim-idshift-v2" "$repo/target/debug/containerd-shim-idshift-v2"
    strip -o "$spayload/idshift/bin/cgroup2-tests" "$cg_test"
    for b in containerd ctr; do strip -o "$spayload/idshift/bin/$b" "$(command -v $b)"; done
    all_checks=""
    sysd_summary=$work/systemd-summary
    : > "$sysd_summary"
    mkdir -p "$CACHE/logs"
    for k in $sysd_kernels; do
        echo
        echo "== cgroup v2 under systemd, kernel $k"
        vm_kernel_package "$k"
        slog=$CACHE/logs/systemd-$k.log
        start=$(date +%s)
        VM_TIMEOUT=${VM_SYSTEMD_TIMEOUT:-1800} "$here/boot-systemd.sh" "$k" "$spayload" "$slog" \
            || failed="$failed systemd-$k"
        secs=$(( $(date +%s) - start ))
        boot=$(sed -n 's/^boot: \([0-9.]*\) s.*/\1/p' "$slog" | head -1)
        # The checks the test ran (it names them first), each passed.
        checks=$(sed -n 's/^.*\bchecks: //p' "$slog" | head -1)
        [ -n "$checks" ] || failed="$failed systemd-$k:no-checks-ran"
        all_checks="$all_checks $(for n in $checks; do case " $all_checks " in *" $n "*) ;; *) echo "$n" ;; esac; done)"
        for name in $checks; do
            r=$(sed -n "s/^check $name: \(.*\)\$/\1/p" "$slog" | head -1)
            case $r in pass*) ;; *) failed="$failed systemd-$k:$name" ;; esac
            printf '%s|%s|%s\n' "$k" "$name" "${r:-not run}" >> "$sysd_summary"
        done
        printf '%s|%s|%s\n' "$k" "(boot to the checks; whole VM)" "${boot:-?} s; ${secs} s" >> "$sysd_summary"
    done
    echo
    echo "== cgroup v2 under systemd (systemd as PID 1, cgroup2 only, containerd 1.6)"
    header="| check |"
    rule="|---|"
    for k in $sysd_kernels; do header="$header $k |"; rule="$rule---|"; done
    echo "$header"
    echo "$rule"
    for name in $all_checks "(boot to the checks; whole VM)"; do
        row="| $name |"
        for k in $sysd_kernels; do
            r=$(awk -F'|' -v k="$k" -v n="$name" '$1 == k && $2 == n { print $3 }' "$sysd_summary")
            row="$row ${r:-not run} |"
        done
        echo "$row"
    done
fi

if [ -n "$failed" ]; then
    echo "FAILED on:$failed"
    exit 1
fi
echo "all kernels passed"
