# idshift: build, install, test, demo, bench, lint.
# Everything that needs the kernel runs as root.

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

SHIM := containerd-shim-idshift-v2
RELEASE := target/release

.PHONY: all deps-build deps-demo deps-bench deps-test deps-vm containerd-versions build install test test-vm demo bench bench-vm stress lint fuzz clean

all: build

# What each target needs from Debian/Ubuntu, each package named once; a
# target installs (apt) those of its list that the machine lacks. The shim
# links libseccomp (seccomp profiles). The demo, the benchmark and the
# stress run a private containerd (with runc, its dependency, as the
# benchmark's peer) on images built from busybox-static, and use setpriv
# and nsenter (util-linux). The tests also build the CRI client (its
# protobufs need protoc) and give CRI pods a network (CNI plugins, ip).
# The tests fetch containerd 1.7 and 2.x from Debian (its archive
# keyring; tests/install-containerd.sh). The benchmark also measures crun
# as a peer. The Docker suite fetches
# Debian sid's docker.io and docker-cli itself (scripts/debian-debs.sh, the
# fetcher install-containerd.sh and tests/vm/fetch-kernel.sh use too, with
# Debian's archive keyring), runs them on containerd 2.x, and drives
# `docker -t` through script(1) (bsdutils).
DEPS_BUILD := libseccomp-dev
DEPS_DEMO := $(DEPS_BUILD) containerd busybox-static util-linux
# containerd 1.7 and 2.x (tests and benchmark) are fetched from Debian.
DEPS_C2X := debian-archive-keyring
DEPS_BENCH := $(DEPS_DEMO) $(DEPS_C2X) crun
DEPS_TEST := $(DEPS_DEMO) $(DEPS_C2X) protobuf-compiler containernetworking-plugins iproute2 bsdutils
# The kernel matrix (make test-vm) boots Debian's kernels in qemu over a
# busybox initramfs and an ext4 disk (mke2fs -d), the kernels fetched with a
# private apt configuration (signed by Debian's archive keyring) and their
# modules decompressed (xz, zstd).
# The ctr end-to-end inside the VMs uses the test suite's packages (containerd).
# The systemd VM's root (Debian bookworm with systemd) is made by debootstrap.
DEPS_VM := $(DEPS_TEST) qemu-system-x86 e2fsprogs xz-utils zstd debootstrap

define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f '$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps-build:
	$(call apt_install,$(DEPS_BUILD))
deps-demo:
	$(call apt_install,$(DEPS_DEMO))
deps-bench:
	$(call apt_install,$(DEPS_BENCH))
deps-test:
	$(call apt_install,$(DEPS_TEST))
deps-vm:
	$(call apt_install,$(DEPS_VM))

# The binaries a user runs: the shim, the benchmark and the demo (never the
# tests crate).
build: deps-build
	$(CARGO) build --release -p shim -p idshift-bench --bins

install: build
	install -D -m 0755 $(RELEASE)/$(SHIM) $(DESTDIR)$(PREFIX)/bin/$(SHIM)

# The test command (README, .ci/run): every crate's unit and kernel tests and
# the end-to-end tests against private containerds (which find the shim
# binary built here first on their PATH): the system's 1.6 and, unpacked
# beside it by tests/install-containerd.sh (Debian's packages, cached by
# version in /var/cache/idshift-containerd, the system's apt state and
# containerd untouched), 1.7 and 2.x.
# Then the launch-storm benchmark's smoke run (--quick: every configuration,
# small N and L; --strict fails on a failed launch or a leak, never on timings)
# and the stress's (2 rounds of 20 containers of a 10-layer image, every 5th
# made to fail: it must fail cleanly).
test: deps-test containerd-versions
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets --no-fail-fast
	target/debug/idshift-bench storm --quick --strict --json $${TMPDIR:-/tmp}/idshift-bench-quick.json
	target/debug/idshift-bench stress --quick --inject-failures 5 --json $${TMPDIR:-/tmp}/idshift-stress-quick.json

# containerd 1.7 (Debian trixie) and 2.x (Debian sid) for the end-to-end
# tests, in private prefixes (idempotent: cached by version; needs dpkg-deb
# and debian-archive-keyring).
containerd-versions:
	tests/install-containerd.sh 2.x 1.7

# The kernel matrix: Debian's 6.1, 6.12 and 7.2 cloud kernels booted in qemu
# (TCG unless /dev/kvm works), each running the probe (--features, checked
# against the tier the design gives that kernel), the rootfs kernel tests and
# `idshift-bench rootfs`; a table per kernel at the end. Kernels and
# initramfs images are cached under /var/cache/idshift-vm (IDSHIFT_VM_CACHE).
# Then the cgroup v2 checks (tests/tests/cgroup2.rs) in a VM with systemd as
# PID 1 on one kernel (the last of VM_KERNELS, 7.2 by default; its Debian
# root made once by debootstrap, cached there too), with a per-check table.
# VM_KERNELS picks a subset (e.g. VM_KERNELS=6.1); VM_TIMEOUT (s) per VM;
# VM_SYSTEMD=0 skips the systemd VMs, VM_MATRIX=0 all but them,
# VM_SYSTEMD_KERNELS picks their kernels (e.g. "6.1 6.12 7.2").
VM_KERNELS ?=
test-vm: deps-vm
	tests/vm/run.sh $(VM_KERNELS)

# Builds and installs the shim, then runs the demo on a private containerd.
demo: deps-demo install
	$(RELEASE)/idshift-bench demo
	$(RELEASE)/idshift-demo

# The full launch-storm sweep (N in 1,10,50,100,200; L in 1,10,50,100; every
# configuration, containerd 2.x's included: it unpacks 2.x like the tests),
# then the rootfs construction micro-benchmark.
BENCH_OUT ?= bench-results
bench: deps-bench build containerd-versions
	mkdir -p $(BENCH_OUT)
	$(RELEASE)/idshift-bench storm --json $(BENCH_OUT)/storm.json --svg $(BENCH_OUT)/storm.svg
	$(RELEASE)/idshift-bench rootfs --json $(BENCH_OUT)/rootfs.json

# A small storm of idshift, runc and crun inside a VM with cgroup v2 alone
# (crun refuses this host's hybrid layout): Debian sid's kernel in qemu (TCG
# unless /dev/kvm works), the host's containerd 1.6, runc and crun copied in.
# VM_BENCH_ARGS replaces the storm's arguments (tests/vm/bench.sh).
VM_BENCH_ARGS ?=
bench-vm: deps-vm deps-bench
	tests/vm/bench.sh $(VM_BENCH_ARGS)

# The stress: 5 rounds of 200 containers of a 50-layer image launched at
# once and removed, against a private containerd, with a leak audit after
# every round (mounts, processes, ID ranges, cgroups, run dirs, containerd's
# fds) and an ID-range overlap audit while each round runs; exits non-zero on
# any leak, unclean failure or overlap. Then `make fuzz` (FUZZ_SECONDS per
# fuzz target).
STRESS_OUT ?= bench-results
stress: deps-demo build
	mkdir -p $(STRESS_OUT)
	$(RELEASE)/idshift-bench stress --rounds 5 --containers 200 --layers 50 --json $(STRESS_OUT)/stress.json
	$(MAKE) fuzz

lint: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what parses untrusted
# input without the kernel: containerd's rootfs mount options
# (rootfs::plan) and OCI ID mappings (userns::validate_mappings). Every
# target in fuzz/ runs for FUZZ_SECONDS; a crash or a broken invariant
# fails the target (the input is kept in fuzz/artifacts/). Installs
# cargo-fuzz when missing. cargo-fuzz passes -Z flags: RUSTC_BOOTSTRAP=1
# lets a stable toolchain take them.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
	    echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	    RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done

clean:
	$(CARGO) clean
