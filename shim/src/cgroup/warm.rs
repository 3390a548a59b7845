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
//! So a Create starts that wait at once, on a thread of its own, with a move
//! that changes nothing (the shim's own pid written into the cgroup it is
//! already in), while the user namespace and the rootfs are built. The
//! init's moves into the container's cgroups then find the grace period
//! passed, or wait only for what is left of it.

use super::{Hierarchy, Version};
use std::path::{Path, PathBuf};

/// The `cgroup.procs` of the shim's own cgroup in one hierarchy of `h`
/// (the v2 one if there is one, else the first v1 one), read from the
/// shim's `/proc/self/cgroup` text.
fn own_procs_file(h: &Hierarchy, proc_self_cgroup: &str) -> Option<PathBuf> {
    let line_of = |want: &dyn Fn(&str) -> bool| {
        proc_self_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(controllers).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let (mount, rel) = match (&h.v2, h.version) {
        (Some(root), _) => (root.clone(), line_of(&|c| c.is_empty())?),
        (None, Version::V1) => {
            let (name, mount) = h.v1.iter().next()?;
            let rel = line_of(&|c| c.split(',').any(|x| x == name))?;
            (mount.clone(), rel)
        }
        (None, Version::V2) => return None,
    };
    Some(mount.join(rel).join("cgroup.procs"))
}

/// Starts the grace period, on a thread that ends with it. Best effort:
/// a failure only loses the head start, and is logged at debug level.
pub fn start_grace_period(h: &Hierarchy) {
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
        let text = "9:name=systemd:/\n4:memory:/a/b\n1:cpu,cpuacct:/c\n0::/d/e\n";
        let mut v1 = BTreeMap::new();
        v1.insert("cpu".to_string(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        v1.insert("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory"));
        let hybrid = Hierarchy {
            version: Version::V1,
            v1: v1.clone(),
            v2: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        };
        assert_eq!(
            own_procs_file(&hybrid, text),
            Some(PathBuf::from("/sys/fs/cgroup/unified/d/e/cgroup.procs"))
        );
        let legacy = Hierarchy {
            version: Version::V1,
            v1,
            v2: None,
        };
        assert_eq!(
            own_procs_file(&legacy, text),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c/cgroup.procs"))
        );
        let v2 = Hierarchy {
            version: Version::V2,
            v1: BTreeMap::new(),
            v2: Some(PathBuf::from("/sys/fs/cgroup")),
        };
        assert_eq!(
            own_procs_file(&v2, "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cgroup.procs"))
        );
        assert_eq!(own_procs_file(&legacy, "0::/x\n"), None);
    }
}
