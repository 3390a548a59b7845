# idshift: build, install, test, demo, bench, lint.
# Everything that needs the kernel runs as root.

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

SHIM := containerd-shim-idshift-v2
RELEASE := target/release

.PHONY: all build install test demo bench lint clean

all: build

build:
	$(CARGO) build --release --workspace --bins

install: build
	install -D -m 0755 $(RELEASE)/$(SHIM) $(DESTDIR)$(PREFIX)/bin/$(SHIM)

# The test command (README, .ci/run): every crate's unit and kernel tests.
test:
	$(CARGO) test --workspace --all-targets --no-fail-fast

demo: build
	$(RELEASE)/idshift-bench demo

bench: build
	$(RELEASE)/idshift-bench rootfs

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
