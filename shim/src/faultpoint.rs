//! TEST-ONLY fault injection, for the end-to-end fault suite
//! (`tests/tests/faults.rs`): nothing here does anything unless the serving
//! shim's environment has `IDSHIFT_TEST_PAUSE` (containerd passes its own
//! environment to the shims it starts; only the test harness's private
//! containerds set it).
//!
//! `IDSHIFT_TEST_PAUSE=<phase>[,<phase>...]` makes the shim, on reaching a
//! listed phase for a container, create the marker file
//! `<run_dir>/pause-<phase>-<container id>` (the configured idshift
//! `run_dir`) and then sleep until it is killed, so that a test can SIGKILL
//! it at exactly that point. Each pause is one-shot: if the marker already
//! exists the shim goes on (so that the same container id can be created
//! again after the fault, and `shim delete` never pauses).
//!
//! Phases (see where [`pause`] is called):
//! - `userns`: Create has recorded and allocated the ID range (and made the
//!   user namespace), before the rootfs;
//! - `rootfs-mount`: Create is building the rootfs and the first temporary
//!   mount is attached under the container's `<run dir>/tmp` (strategies
//!   `path` and `per-layer` only);
//! - `rootfs`: the rootfs is built, before the cgroup;
//! - `init`: the container's init process exists (waiting for Start) and is
//!   recorded in `state.json`, before Create answers;
//! - `delete`: Delete has killed and reaped the init, before releasing the
//!   cgroup, the range and the run dir.

use rootfs::{KernelSys, MountAttrFlags, MountFlags, MountOps, MountSys};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const PAUSE_ENV: &str = "IDSHIFT_TEST_PAUSE";
/// `IDSHIFT_TEST_FAIL=<phase>[,<phase>...]` makes Create fail at a listed
/// phase (see [`fail_wanted`]), so that a test can check what a failed
/// Create leaves. Phases: `mounts`: the container's first process fails
/// after it has made every spec mount, before `pivot_root`.
pub const FAIL_ENV: &str = "IDSHIFT_TEST_FAIL";

/// Whether `IDSHIFT_TEST_FAIL` lists `phase`.
pub fn fail_wanted(phase: &str) -> bool {
    std::env::var(FAIL_ENV)
        .map(|v| v.split(',').any(|p| p.trim() == phase))
        .unwrap_or(false)
}

fn wanted(phase: &str) -> bool {
    std::env::var(PAUSE_ENV)
        .map(|v| v.split(',').any(|p| p.trim() == phase))
        .unwrap_or(false)
}

/// Pauses forever at `phase` of container `id` if `IDSHIFT_TEST_PAUSE` asks
/// for it and the marker `<run_root>/pause-<phase>-<id>` does not exist yet.
/// Blocking: call it on a blocking thread.
pub fn pause(phase: &str, run_root: &Path, id: &str) {
    if !wanted(phase) {
        return;
    }
    let marker = run_root.join(format!("pause-{phase}-{id}"));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker);
    if let Err(e) = created {
        if e.kind() != io::ErrorKind::AlreadyExists {
            log::error!("{PAUSE_ENV}: creating {}: {e}", marker.display());
        }
        return;
    }
    log::warn!(
        "{PAUSE_ENV}: pausing at {phase} of {id} until killed ({})",
        marker.display()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The kernel, pausing (phase `rootfs-mount`) after the first temporary
/// mount is attached.
pub struct PausingSys {
    inner: KernelSys,
    run_root: PathBuf,
    id: String,
}

impl PausingSys {
    pub fn new(run_root: &Path, id: &str) -> Self {
        PausingSys {
            inner: KernelSys::new(),
            run_root: run_root.to_path_buf(),
            id: id.to_string(),
        }
    }
}

impl MountSys for PausingSys {
    fn ops(&self) -> MountOps {
        self.inner.ops()
    }
    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        self.inner.clone_tree(path, recursive)
    }
    fn setattr(
        &self,
        tree: BorrowedFd<'_>,
        attrs: MountAttrFlags,
        userns: Option<BorrowedFd<'_>>,
        recursive: bool,
    ) -> io::Result<()> {
        self.inner.setattr(tree, attrs, userns, recursive)
    }
    fn fsopen(&self, fstype: &str) -> io::Result<OwnedFd> {
        self.inner.fsopen(fstype)
    }
    fn fsconfig_string(&self, fs: BorrowedFd<'_>, key: &str, value: &OsStr) -> io::Result<()> {
        self.inner.fsconfig_string(fs, key, value)
    }
    fn fsconfig_flag(&self, fs: BorrowedFd<'_>, key: &str) -> io::Result<()> {
        self.inner.fsconfig_flag(fs, key)
    }
    fn fsconfig_fd(&self, fs: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.inner.fsconfig_fd(fs, key, fd)
    }
    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> io::Result<()> {
        self.inner.fsconfig_create(fs)
    }
    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: MountAttrFlags) -> io::Result<OwnedFd> {
        self.inner.fsmount(fs, attrs)
    }
    fn attach(&self, mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        self.inner.attach(mnt, target)?;
        pause("rootfs-mount", &self.run_root, &self.id);
        Ok(())
    }
    fn detach(&self, target: &Path) -> io::Result<()> {
        self.inner.detach(target)
    }
    fn mount_overlay_in(
        &self,
        cwd: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        self.inner.mount_overlay_in(cwd, target, data, flags)
    }
}
