//! Links the shim binary as a position-dependent executable (`-no-pie`).
//!
//! A PIE's pointer tables (`.data.rel.ro`, the GOT: ~400 KiB in this
//! binary) are relocated at every start, so every shim, and every
//! container's first process (the shim re-executed), holds its own dirty
//! copy of them and spends the start-up's time applying the relocations. A
//! non-PIE executable has them resolved at link time: clean pages of the
//! file, shared by every running shim. The libraries, heap and stacks stay
//! randomised; only the shim's own image is at a fixed address, as Go's
//! default (non-PIE) containerd-shim-runc-v2 is.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
