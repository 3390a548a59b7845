//! The shim is linked as a position-dependent executable (`-no-pie`), as
//! Debian builds containerd, runc and containerd-shim-runc-v2 (Go's
//! default). A PIE of this size carries about 27,000 relative relocations:
//! the loader writes them into .data.rel.ro (vtables, string and panic
//! location tables) at every start, about 450 KiB made private to each
//! running shim and to each container's init as it starts. Position
//! dependent, those pages stay the file's, shared by every shim (issue 16,
//! docs/DESIGN.md "The shim's memory").
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
