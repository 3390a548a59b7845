//! Errors of rootfs construction. Each names the step, the path and the cause.

use crate::plan::PlanError;
use crate::Strategy;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("invalid rootfs mounts: {0}")]
    Plan(#[from] PlanError),
    #[error("rootfs strategy {strategy} is not supported by this kernel: {reason}")]
    Unsupported { strategy: Strategy, reason: String },
    #[error("rootfs strategy {strategy} needs a user namespace to idmap the layers to")]
    NeedsUserns { strategy: Strategy },
    #[error("rootfs strategy plain builds no idmapped mounts, but a user namespace was given")]
    PlainWithUserns,
    #[error("layer {index} ({path}) cannot be used: {source}")]
    Layer {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} cannot be used: {source}")]
    Dir {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("upperdir {upper} and workdir {work} are on different mounts; overlayfs needs both on the same one")]
    UpperWorkApart { upper: PathBuf, work: PathBuf },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("the filesystem of {path} ({fstype}) does not support idmapped mounts: {source}; idmapped mounts need e.g. ext4, xfs, btrfs, or tmpfs on Linux 6.3+, and at most 340 mapping extents")]
    IdmapUnsupported {
        path: PathBuf,
        fstype: String,
        source: io::Error,
    },
    #[error("{what} {path} is {len} bytes, over the kernel's limit of {limit} bytes for this construction")]
    PathTooLong {
        what: &'static str,
        path: PathBuf,
        len: usize,
        limit: usize,
    },
    #[error("overlay options are {len} bytes, over the one-page limit of legacy mount(2); use a kernel with lowerdir+ (6.7+)")]
    OptionsTooLong { len: usize },
    #[error("{op} {detail}: {source}")]
    Syscall {
        op: &'static str,
        detail: String,
        source: io::Error,
    },
    #[error("kernel probe: {0}")]
    Probe(String),
}

impl RootfsError {
    /// A closure for `map_err` that names the syscall and what it acted on.
    pub(crate) fn syscall(
        op: &'static str,
        detail: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> Self {
        let detail = detail.into();
        move |source| RootfsError::Syscall { op, detail, source }
    }
}
