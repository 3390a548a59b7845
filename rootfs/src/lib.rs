//! idshift's rootfs construction: an overlay over *idmapped* image layers at a
//! cost that does not grow with the number of layers.
//!
//! 1. [`plan`] turns the mounts containerd passes into a [`RootfsPlan`]
//!    ([`premounted_plan`]: from the mount table, for a rootfs the caller
//!    mounted itself).
//! 2. [`probe`] finds what the kernel's mount API accepts ([`KernelFeatures`]).
//! 3. [`build`] makes the rootfs with a [`Strategy`] and returns it as a
//!    detached mount (an fd in no mount table), with counts of the mount
//!    syscalls it took ([`MountOps`]).
//! 4. Whoever places it (the container's first process, inside its own mount
//!    namespace) calls [`attach_mount`].

mod error;
mod ops;
mod plan;
mod premounted;
mod probe;
mod strategy;
pub mod synthetic;
mod sys;

pub use error::RootfsError;
pub use ops::{Counters, MountOp, MountOps};
pub use plan::{
    format_extents, plan, BindPlan, FsParam, IdExtent, MountIdmap, MountSpec, OverlayPlan,
    PlanError, RootfsPlan, MAX_LAYERS,
};
pub use premounted::{
    parse_mountinfo_line, plan_from_mountinfo, premounted_plan, unescape_octal,
    unescape_octal_bytes, MountInfo, PremountError,
};
pub use probe::{probe, probe_cached, KernelFeatures};
pub use rustix::mount::{MountAttrFlags, MountFlags};
pub use strategy::{
    build, build_with, detached_bind, fstype_name, set_top_attrs, BindRecursion, BuildOptions,
    Idmap, Rootfs, Strategy, FSCONFIG_STRING_MAX, MOUNT_DATA_MAX,
};
pub use sys::{attach_mount, mount_setattr, KernelSys, MountSys};
