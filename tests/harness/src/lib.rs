//! Harness of the end-to-end tests, the benchmark and the demo: a private containerd 1.6 per test (with
//! the built shim first on its PATH when asked), OCI images built offline
//! from the host's busybox-static, and leak checks (mounts, processes).
//!
//! Everything here needs root.

mod cni;
mod containerd;
mod docker;
mod image;
mod process;

pub use cni::{cni_bin_dir, CniNetwork};
pub use containerd::{Containerd, ContainerdOptions, Flavour, IDSHIFT_CONFIG_TOKEN};
pub use docker::{docker_install, Docker, DockerInstall, DockerOptions, DOCKER_TIMEOUT};
pub use image::{
    build_image, build_image_with_cmd, busybox_path, busybox_rootfs, import_image, oci_arch,
    IMAGE_PATH,
};
pub use process::{
    descendants_of, host_mountinfo, kill_processes_matching, mount_point, mounts_under,
    processes_matching, run_with_stdin, run_with_timeout, shim_log_fifo, unmount_under, CtrOutput,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `ctr run`'s flag for idshift.
pub const IDSHIFT_RUNTIME: &str = "--runtime=io.containerd.idshift.v2";
/// `ctr run`'s flag for containerd's own runc shim.
pub const RUNC_RUNTIME: &str = "--runtime=io.containerd.runc.v2";

/// The shim's binary name (containerd finds it on its PATH).
pub const SHIM_BINARY: &str = "containerd-shim-idshift-v2";

/// A name no other test (or test process) uses: `prefix` (lower-cased, any
/// character but `[a-z0-9._-]` made `-`), this process's pid, a counter and
/// 32 random bits, e.g. `c-4242-0-9f3a0c1e`. Valid as a containerd
/// container id or namespace (for a prefix of at most ~50 characters that
/// starts with a letter or digit).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    let mut r = [0u8; 4];
    if rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty()).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        r = nanos.to_le_bytes();
    }
    format!(
        "{prefix}-{}-{}-{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        u32::from_le_bytes(r)
    )
}

/// The directory holding the built `containerd-shim-idshift-v2`: beside
/// this executable (a binary in target/<profile>) or one level up (a test in
/// target/<profile>/deps).
pub fn shim_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if !dir.join(SHIM_BINARY).exists() {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_valid_ids() {
        let a = unique("My Test");
        let b = unique("My Test");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)));
    }
}
