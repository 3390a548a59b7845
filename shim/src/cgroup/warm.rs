//! The grace period a cgroup move waits for, started early.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`, on any
//! hierarchy, v1 or v2) takes the kernel's one `cgroup_threadgroup_rwsem`
//! for writing. The first writer after a quiet spell waits for an RCU grace
//! period there (`rcu_sync_enter`): 9 to 13 ms on this machine, more than any
//! other step of a Create. Writers that come within about one grace period
//! of the last one do not wait. (`favordynmods`, a cgroup mount option of
//! the host's, removes the wait; CLONE_INTO_CGROUP avoids the lock on v2.)
//!
//! On v1 the container's process moves itself (`Cgroup::self_join_files`),
//! which takes no such lock. On v2 the shim moves it; so there, as the
//! serving shim starts and as a Create starts, that wait is started at once,
//! on a thread of its own, with a move that changes nothing (the shim's own
//! pid written into the cgroup it is already in), while the user namespace
//! and the rootfs are built. The shim's move of the process then finds the
//! grace period passed, or waits only for what is left of it. (The waiting
//! move holds `cgroup_mutex`, so on v1 it would hold up the creation of
//! the container's cgroup instead.)

use super::{Hierarchy, Version};
use std::path::{Path, PathBuf};

/// The `cgroup.procs` of the shim's own cgroup in the v2 hierarchy, from
/// the shim's `/proc/self/cgroup` text (its `0::PATH` line).
fn own_procs_file(h: &Hierarchy, proc_self_cgroup: &str) -> Option<PathBuf> {
    let root = h.v2.as_ref()?;
    let rel = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_start_matches('/');
    Some(root.join(rel).join("cgroup.procs"))
}

/// On v2, starts the grace period, on a thread that ends with it. Best
/// effort: a failure only loses the head start, and is logged at debug
/// level.
pub fn start_grace_period(h: &Hierarchy) {
    if h.version == Version::V1 {
        return;
    }
    let text = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(t) => t,
        Err(e) => {
            log::debug!("no head start for the cgroup move: reading /proc/self/cgroup: {e}");
            return;
        }
    };
    let Some(file) = own_procs_file(h, &text) else {
        log::debug!("no head start for the cgroup move: the shim's own cgroup is not found");
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("cgroup-grace".into())
        .spawn(move || move_self(&file));
    if let Err(e) = spawned {
        log::debug!("no head start for the cgroup move: starting a thread: {e}");
    }
}

fn move_self(file: &Path) {
    let pid = std::process::id().to_string();
    if let Err(e) = std::fs::write(file, pid) {
        log::debug!(
            "head start for the cgroup move: writing {}: {e}",
            file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_shims_own_cgroup_is_found() {
        let v2 = |root: &str| Hierarchy {
            version: Version::V2,
            v1: BTreeMap::new(),
            v2: Some(PathBuf::from(root)),
        };
        let text = "9:name=systemd:/\n4:memory:/a/b\n0::/d/e\n";
        assert_eq!(
            own_procs_file(&v2("/sys/fs/cgroup"), text),
            Some(PathBuf::from("/sys/fs/cgroup/d/e/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file(&v2("/sys/fs/cgroup"), "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cgroup.procs"))
        );
        assert_eq!(own_procs_file(&v2("/x"), "4:memory:/a\n"), None);
        let legacy = Hierarchy {
            version: Version::V1,
            v1: BTreeMap::new(),
            v2: None,
        };
        assert_eq!(own_procs_file(&legacy, text), None);
    }
}
