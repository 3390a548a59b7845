//! Counters of the mount-related syscalls a rootfs construction issued.
//!
//! Every one of these (but `fsconfig`) takes the kernel's mount locks or builds
//! mount-table state; the whole point of idshift is to keep their number per
//! container constant in the number of image layers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which syscall a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountOp {
    OpenTree,
    MountSetattr,
    Fsopen,
    Fsconfig,
    Fsmount,
    MoveMount,
    Mount,
    Umount,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOps {
    pub open_tree: u32,
    pub mount_setattr: u32,
    pub fsopen: u32,
    /// Configuration calls on a filesystem context: they touch no mount table
    /// and are not part of [`MountOps::total`].
    pub fsconfig: u32,
    pub fsmount: u32,
    pub move_mount: u32,
    pub mount: u32,
    pub umount: u32,
}

impl MountOps {
    /// All mount syscalls but `fsconfig`.
    pub fn total(&self) -> u32 {
        self.open_tree
            + self.mount_setattr
            + self.fsopen
            + self.fsmount
            + self.move_mount
            + self.mount
            + self.umount
    }

    /// Adds another snapshot to this one (e.g. the attach done by the
    /// container's first process).
    pub fn add(&mut self, other: &MountOps) {
        self.open_tree += other.open_tree;
        self.mount_setattr += other.mount_setattr;
        self.fsopen += other.fsopen;
        self.fsconfig += other.fsconfig;
        self.fsmount += other.fsmount;
        self.move_mount += other.move_mount;
        self.mount += other.mount;
        self.umount += other.umount;
    }
}

impl fmt::Display for MountOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mount syscalls (open_tree {}, mount_setattr {}, fsopen {}, fsmount {}, move_mount {}, mount {}, umount {}; fsconfig {})",
            self.total(),
            self.open_tree,
            self.mount_setattr,
            self.fsopen,
            self.fsmount,
            self.move_mount,
            self.mount,
            self.umount,
            self.fsconfig
        )
    }
}

/// Thread-safe counters, one per [`MountOp`].
#[derive(Debug, Default)]
pub struct Counters {
    counts: [AtomicU32; 8],
}

impl Counters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self, op: MountOp) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MountOps {
        let get = |op: MountOp| self.counts[op as usize].load(Ordering::Relaxed);
        MountOps {
            open_tree: get(MountOp::OpenTree),
            mount_setattr: get(MountOp::MountSetattr),
            fsopen: get(MountOp::Fsopen),
            fsconfig: get(MountOp::Fsconfig),
            fsmount: get(MountOp::Fsmount),
            move_mount: get(MountOp::MoveMount),
            mount: get(MountOp::Mount),
            umount: get(MountOp::Umount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_excludes_fsconfig_and_counts_each_op() {
        let c = Counters::new();
        for op in [
            MountOp::OpenTree,
            MountOp::MountSetattr,
            MountOp::Fsopen,
            MountOp::Fsconfig,
            MountOp::Fsconfig,
            MountOp::Fsmount,
            MountOp::MoveMount,
            MountOp::Mount,
            MountOp::Umount,
        ] {
            c.count(op);
        }
        let s = c.snapshot();
        assert_eq!(s.fsconfig, 2);
        assert_eq!(s.total(), 7);
        let mut sum = s;
        sum.add(&s);
        assert_eq!(sum.total(), 14);
        assert_eq!(sum.fsconfig, 4);
        assert!(s.to_string().starts_with("7 mount syscalls"));
    }
}
