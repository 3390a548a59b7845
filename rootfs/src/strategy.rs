//! The rootfs strategies: each turns a [`RootfsPlan`] into one detached mount
//! (an fd, in no mount table) holding the container's root filesystem, with
//! the image layers idmapped into the container's user namespace.
//!
//! | strategy    | construction                                               | mount syscalls |
//! |-------------|------------------------------------------------------------|----------------|
//! | `fd`        | one idmapped clone of the layers' parent, layers as fds     | 4 (6 on 6.13-6.14) |
//! | `path`      | the idmapped clone attached once, layers as paths below it  | 6 (+2 legacy)  |
//! | `per-layer` | containerd 2.0's: one idmapped bind per layer, then overlay | 4 x layers + 2 |
//! | `plain`     | no user namespace: overlay as containerd asks              | 2              |

use crate::error::RootfsError;
use crate::ops::MountOps;
use crate::plan::{BindPlan, FsParam, OverlayPlan, RootfsPlan, MAX_LAYERS};
use crate::probe::{tempdir_in, KernelFeatures};
use crate::sys::{KernelSys, MountSys};
use rustix::fs::{Mode, OFlags, StatxFlags};
use rustix::mount::{MountAttrFlags, MountFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The longest string value `fsconfig(FSCONFIG_SET_STRING)` accepts.
pub const FSCONFIG_STRING_MAX: usize = 255;
/// The longest option string legacy `mount(2)` accepts (one page, with its NUL).
pub const MOUNT_DATA_MAX: usize = 4095;

/// How to build the rootfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The best the kernel supports: `fd`, else `path`.
    Auto,
    Fd,
    Path,
    PerLayer,
    Plain,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Auto,
        Strategy::Fd,
        Strategy::Path,
        Strategy::PerLayer,
        Strategy::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Fd => "fd",
            Strategy::Path => "path",
            Strategy::PerLayer => "per-layer",
            Strategy::Plain => "plain",
        }
    }

    /// Whether the strategy idmaps the layers into a user namespace.
    pub fn uses_userns(self) -> bool {
        !matches!(self, Strategy::Plain)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                format!("unknown rootfs strategy {s:?} (expected one of: auto, fd, path, per-layer, plain)")
            })
    }
}

/// The user namespace the layers are idmapped into, and the host IDs of its
/// root (who gets the top upper and work directories).
#[derive(Clone, Copy, Debug)]
pub struct Idmap<'a> {
    pub userns: BorrowedFd<'a>,
    pub root_uid: u32,
    pub root_gid: u32,
}

/// What to build and how.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions<'a> {
    pub strategy: Strategy,
    pub features: &'a KernelFeatures,
    /// Required for every strategy but `plain`, refused with `plain`.
    pub idmap: Option<Idmap<'a>>,
    /// Where temporary mount points go when a construction needs any. They are
    /// removed before `build` returns. Should be on a private mount.
    pub scratch_dir: &'a Path,
}

/// A built rootfs: a detached mount in no mount table, until attached
/// (see [`crate::attach_mount`]). Closing the fd unmounts it.
#[derive(Debug)]
pub struct Rootfs {
    pub mount: OwnedFd,
    /// The strategy that was used (`auto` resolved).
    pub strategy: Strategy,
    /// The mount syscalls the construction issued.
    pub ops: MountOps,
    pub layers: usize,
    pub elapsed: Duration,
}

/// Builds `plan` with the real kernel.
pub fn build(plan: &RootfsPlan, opts: &BuildOptions<'_>) -> Result<Rootfs, RootfsError> {
    build_with(&KernelSys::new(), plan, opts)
}

/// Builds `plan` through `sys` (a counting kernel, or a fault-injecting one in
/// tests). On error nothing stays mounted and no temporary directory remains.
pub fn build_with(
    sys: &dyn MountSys,
    plan: &RootfsPlan,
    opts: &BuildOptions<'_>,
) -> Result<Rootfs, RootfsError> {
    let start = Instant::now();
    let before = sys.ops();
    let strategy = opts.features.resolve(opts.strategy)?;
    let idmap = match (strategy, opts.idmap) {
        (Strategy::Plain, Some(_)) => return Err(RootfsError::PlainWithUserns),
        (Strategy::Plain, None) => None,
        (s, None) => return Err(RootfsError::NeedsUserns { strategy: s }),
        (_, Some(idmap)) => Some(idmap),
    };
    if let RootfsPlan::Overlay(o) = plan {
        check_upper_work(o)?;
    }
    let mount = {
        let mut scratch = Scratch::new(sys, opts.scratch_dir);
        let built = match (plan, idmap) {
            (RootfsPlan::Bind(b), idmap) => bind(sys, b, idmap),
            (RootfsPlan::Overlay(o), None) => overlay_plain(sys, o, opts.features, &mut scratch),
            (RootfsPlan::Overlay(o), Some(idmap)) => {
                if o.lowers.len() > MAX_LAYERS {
                    return Err(crate::plan::PlanError::TooManyLayers {
                        count: o.lowers.len(),
                    }
                    .into());
                }
                match strategy {
                    Strategy::Fd => overlay_fd(sys, o, opts.features, idmap, &mut scratch),
                    Strategy::Path => overlay_path(sys, o, opts.features, idmap, &mut scratch),
                    _ => overlay_per_layer(sys, o, opts.features, idmap, &mut scratch),
                }
            }
        };
        // Temporary mounts are detached and directories removed here, before
        // the counters are read.
        scratch.cleanup();
        built?
    };
    let after = sys.ops();
    Ok(Rootfs {
        mount,
        strategy,
        ops: diff(&after, &before),
        layers: plan.layer_count(),
        elapsed: start.elapsed(),
    })
}

fn diff(a: &MountOps, b: &MountOps) -> MountOps {
    MountOps {
        open_tree: a.open_tree - b.open_tree,
        mount_setattr: a.mount_setattr - b.mount_setattr,
        fsopen: a.fsopen - b.fsopen,
        fsconfig: a.fsconfig - b.fsconfig,
        fsmount: a.fsmount - b.fsmount,
        move_mount: a.move_mount - b.move_mount,
        mount: a.mount - b.mount,
        umount: a.umount - b.umount,
    }
}

/// The upper and work directories exist, are directories, and are on one
/// mount, as overlayfs requires: checked before anything is changed or
/// mounted, so that the error names them (the kernel's is a bare EINVAL).
fn check_upper_work(o: &OverlayPlan) -> Result<(), RootfsError> {
    let (Some(upper), Some(work)) = (&o.upper, &o.work) else {
        return Ok(());
    };
    let mount_of = |what: &'static str, path: &Path| {
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            path,
            rustix::fs::AtFlags::empty(),
            StatxFlags::TYPE | StatxFlags::MNT_ID,
        )
        .map_err(|e| RootfsError::Dir {
            what,
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR {
            return Err(RootfsError::NotADirectory {
                what,
                path: path.to_path_buf(),
            });
        }
        Ok(st.stx_mnt_id)
    };
    if mount_of("upperdir", upper)? != mount_of("workdir", work)? {
        return Err(RootfsError::UpperWorkApart {
            upper: upper.clone(),
            work: work.clone(),
        });
    }
    Ok(())
}

/// Gives the top upper and work directories to the container's root, once
/// every layer has been found (a refused build changes nothing): overlay
/// creates what the container writes in the upper dir with the container's
/// (shifted) IDs, and the container's `/` is its root's.
fn prepare_upper(o: &OverlayPlan, idmap: &Idmap<'_>) -> Result<(), RootfsError> {
    for dir in [&o.upper, &o.work].into_iter().flatten() {
        std::os::unix::fs::chown(dir, Some(idmap.root_uid), Some(idmap.root_gid)).map_err(
            RootfsError::syscall(
                "chown",
                format!("{} to {}:{}", dir.display(), idmap.root_uid, idmap.root_gid),
            ),
        )?;
    }
    Ok(())
}

/// Temporary mount points of one construction, all removed on drop.
struct Scratch<'a> {
    sys: &'a dyn MountSys,
    parent: &'a Path,
    dir: Option<PathBuf>,
    subdirs: Vec<PathBuf>,
    mounted: Vec<PathBuf>,
}

impl<'a> Scratch<'a> {
    fn new(sys: &'a dyn MountSys, parent: &'a Path) -> Self {
        Scratch {
            sys,
            parent,
            dir: None,
            subdirs: Vec::new(),
            mounted: Vec::new(),
        }
    }

    fn dir(&mut self) -> Result<PathBuf, RootfsError> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let d = tempdir_in(self.parent, "mnt")?;
        self.dir = Some(d.clone());
        Ok(d)
    }

    fn subdir(&mut self, name: &str) -> Result<PathBuf, RootfsError> {
        let path = self.dir()?.join(name);
        std::fs::create_dir(&path)
            .map_err(RootfsError::syscall("mkdir", path.display().to_string()))?;
        self.subdirs.push(path.clone());
        Ok(path)
    }

    /// Attaches `mnt` at a new subdirectory `name`.
    fn attach(&mut self, mnt: BorrowedFd<'_>, name: &str) -> Result<PathBuf, RootfsError> {
        let path = self.subdir(name)?;
        self.sys.attach(mnt, &path).map_err(RootfsError::syscall(
            "move_mount",
            format!("to {}", path.display()),
        ))?;
        self.mounted.push(path.clone());
        Ok(path)
    }

    fn cleanup(&mut self) {
        for m in self.mounted.drain(..).rev() {
            if let Err(e) = self.sys.detach(&m) {
                log::error!("detaching temporary mount {}: {e}", m.display());
            }
        }
        for d in self.subdirs.drain(..).rev() {
            if let Err(e) = std::fs::remove_dir(&d) {
                log::error!("removing temporary mount point {}: {e}", d.display());
            }
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir(&d) {
                log::error!("removing temporary directory {}: {e}", d.display());
            }
        }
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Layers that share a mount, cloned (and idmapped) once together.
struct Group {
    ancestor: PathBuf,
    mnt_id: u64,
}

/// Where a layer is: its group and its path relative to the group's ancestor.
struct LayerLoc {
    group: usize,
    rel: PathBuf,
}

fn open_path_dir(dirfd: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let path: &Path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    Ok(rustix::fs::openat(
        dirfd,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Resolves every layer and groups them by the mount they are on: the
/// deepest common ancestor of each group is inside that mount, so one
/// non-recursive clone of it reaches all of the group's layers. The common
/// case (containerd's snapshotters) is one group.
fn locate_layers(lowers: &[PathBuf]) -> Result<(Vec<Group>, Vec<LayerLoc>), RootfsError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut canon = Vec::with_capacity(lowers.len());
    for (index, lower) in lowers.iter().enumerate() {
        let layer_err = |source| RootfsError::Layer {
            index,
            path: lower.clone(),
            source,
        };
        let (path, st) = resolve_layer(lower).map_err(layer_err)?;
        if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR {
            return Err(RootfsError::NotADirectory {
                what: "layer",
                path: lower.clone(),
            });
        }
        let group = match groups.iter().position(|g| g.mnt_id == st.stx_mnt_id) {
            Some(g) => {
                groups[g].ancestor = common_ancestor(&groups[g].ancestor, &path);
                g
            }
            None => {
                groups.push(Group {
                    ancestor: path.clone(),
                    mnt_id: st.stx_mnt_id,
                });
                groups.len() - 1
            }
        };
        canon.push((group, path));
    }
    let locs = canon
        .into_iter()
        .map(|(group, path)| LayerLoc {
            rel: path
                .strip_prefix(&groups[group].ancestor)
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            group,
        })
        .collect();
    Ok((groups, locs))
}

/// A layer's path with no symlink, `.` or `..` left, and its type and
/// mount. containerd's layer paths are already so: one `openat2` that
/// refuses symlinks shows it (3 syscalls, where `realpath` takes one per
/// path component: 0.7 of locate_layers' 0.9 ms for 60 layers 8 deep);
/// any other path is canonicalized first.
fn resolve_layer(lower: &Path) -> io::Result<(PathBuf, rustix::fs::Statx)> {
    use rustix::fs::{AtFlags, ResolveFlags};
    let plain = lower.is_absolute()
        && lower
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        let opened = rustix::fs::openat2(
            rustix::fs::CWD,
            lower,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        );
        // ELOOP: a symlink on the way; ENOSYS/EINVAL: no openat2 here.
        if let Ok(fd) = opened {
            let st = rustix::fs::statx(
                &fd,
                "",
                AtFlags::EMPTY_PATH,
                StatxFlags::TYPE | StatxFlags::MNT_ID,
            )?;
            return Ok((lower.components().collect(), st));
        }
    }
    let path = std::fs::canonicalize(lower)?;
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        &path,
        AtFlags::empty(),
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )?;
    Ok((path, st))
}

fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// Clones the mount at `path` and idmaps the clone read-only.
fn idmapped_clone(
    sys: &dyn MountSys,
    path: &Path,
    idmap: Idmap<'_>,
) -> Result<OwnedFd, RootfsError> {
    let tree = sys.clone_tree(path, false).map_err(RootfsError::syscall(
        "open_tree",
        path.display().to_string(),
    ))?;
    sys.setattr(
        tree.as_fd(),
        MountAttrFlags::MOUNT_ATTR_RDONLY,
        Some(idmap.userns),
        false,
    )
    .map_err(|source| idmap_error(path, source))?;
    Ok(tree)
}

fn idmap_error(path: &Path, source: io::Error) -> RootfsError {
    match source.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::EPERM) => {
            RootfsError::IdmapUnsupported {
                path: path.to_path_buf(),
                fstype: fstype_name(path),
                source,
            }
        }
        _ => RootfsError::syscall(
            "mount_setattr(MOUNT_ATTR_IDMAP)",
            path.display().to_string(),
        )(source),
    }
}

/// The name of the filesystem type at `path`, for error messages.
pub fn fstype_name(path: &Path) -> String {
    let Ok(st) = rustix::fs::statfs(path) else {
        return "unknown filesystem".into();
    };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0x6573_5546 => "fuse".into(),
        0x7371_7368 => "squashfs".into(),
        0xE0F5_E1E2 => "erofs".into(),
        0x9fa0 => "proc".into(),
        0x6265_6572 => "sysfs".into(),
        other => format!("filesystem magic {other:#x}"),
    }
}

/// The lower layers as the overlay will receive them.
enum Lowers {
    /// `lowerdir+` fds (6.13+).
    Fds(Vec<OwnedFd>),
    /// `lowerdir+` path strings (6.7+).
    Paths(Vec<PathBuf>),
    /// Legacy `lowerdir=` of paths relative to `cwd`.
    Relative { cwd: PathBuf, rels: Vec<PathBuf> },
}

/// Creates the overlay and returns it as a detached mount.
fn assemble(
    sys: &dyn MountSys,
    lowers: Lowers,
    o: &OverlayPlan,
    features: &KernelFeatures,
    scratch: &mut Scratch<'_>,
) -> Result<OwnedFd, RootfsError> {
    let (cwd, rels) = match lowers {
        Lowers::Relative { cwd, rels } => (cwd, rels),
        lowers => return assemble_fscontext(sys, lowers, o, features),
    };
    let mut data = String::from("lowerdir=");
    for (i, rel) in rels.iter().enumerate() {
        let s = legacy_option_path("layer", rel)?;
        if i > 0 {
            data.push(':');
        }
        data.push_str(s);
    }
    if let (Some(upper), Some(work)) = (&o.upper, &o.work) {
        data.push_str(",upperdir=");
        data.push_str(legacy_option_path("upperdir", upper)?);
        data.push_str(",workdir=");
        data.push_str(legacy_option_path("workdir", work)?);
    }
    for p in &o.params {
        data.push(',');
        match p {
            FsParam::Flag(k) => data.push_str(k),
            FsParam::Value(k, v) => {
                data.push_str(k);
                data.push('=');
                data.push_str(v);
            }
        }
    }
    if data.len() > MOUNT_DATA_MAX {
        return Err(RootfsError::OptionsTooLong { len: data.len() });
    }
    let target = scratch.subdir("merged")?;
    sys.mount_overlay_in(&cwd, &target, &data, legacy_flags(o.attrs))
        .map_err(RootfsError::syscall(
            "mount overlay",
            format!(
                "at {} with {} layers relative to {}",
                target.display(),
                rels.len(),
                cwd.display()
            ),
        ))?;
    scratch.mounted.push(target.clone());
    sys.clone_tree(&target, false).map_err(RootfsError::syscall(
        "open_tree",
        target.display().to_string(),
    ))
}

fn legacy_option_path<'p>(what: &'static str, p: &'p Path) -> Result<&'p str, RootfsError> {
    match p.to_str() {
        Some(s) if !s.contains([':', ',', '\\']) => Ok(s),
        _ => Err(RootfsError::Syscall {
            op: "mount overlay",
            detail: format!("{what} path {}", p.display()),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "legacy lowerdir= cannot carry paths with ':', ',', '\\' or invalid UTF-8",
            ),
        }),
    }
}

fn legacy_flags(attrs: MountAttrFlags) -> MountFlags {
    let mut flags = MountFlags::empty();
    for (a, f) in [
        (MountAttrFlags::MOUNT_ATTR_RDONLY, MountFlags::RDONLY),
        (MountAttrFlags::MOUNT_ATTR_NOSUID, MountFlags::NOSUID),
        (MountAttrFlags::MOUNT_ATTR_NODEV, MountFlags::NODEV),
        (MountAttrFlags::MOUNT_ATTR_NOEXEC, MountFlags::NOEXEC),
        (MountAttrFlags::MOUNT_ATTR_NOATIME, MountFlags::NOATIME),
        (
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            MountFlags::NODIRATIME,
        ),
        (
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
            MountFlags::STRICTATIME,
        ),
    ] {
        if attrs.contains(a) {
            flags |= f;
        }
    }
    flags
}

/// Reads what the filesystem logged into its context (e.g. overlayfs's
/// reason for refusing a layer), for the error message.
fn fs_log(fs: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", out.join("; "))
    }
}

fn string_param<'p>(what: &'static str, p: &'p Path) -> Result<&'p OsStr, RootfsError> {
    let len = p.as_os_str().len();
    if len > FSCONFIG_STRING_MAX {
        return Err(RootfsError::PathTooLong {
            what,
            path: p.to_path_buf(),
            len,
            limit: FSCONFIG_STRING_MAX,
        });
    }
    Ok(p.as_os_str())
}

fn assemble_fscontext(
    sys: &dyn MountSys,
    lowers: Lowers,
    o: &OverlayPlan,
    features: &KernelFeatures,
) -> Result<OwnedFd, RootfsError> {
    let fs = sys
        .fsopen("overlay")
        .map_err(RootfsError::syscall("fsopen", "overlay"))?;
    let fs = fs.as_fd();
    let with_log = |op: &'static str, detail: String| {
        move |source: io::Error| RootfsError::Syscall {
            op,
            detail: format!("{detail}{}", fs_log(fs)),
            source,
        }
    };
    match lowers {
        Lowers::Fds(fds) => {
            for (i, fd) in fds.iter().enumerate() {
                sys.fsconfig_fd(fs, "lowerdir+", fd.as_fd())
                    .map_err(with_log(
                        "fsconfig lowerdir+",
                        format!("fd of layer {i} ({})", o.lowers[i].display()),
                    ))?;
            }
        }
        Lowers::Paths(paths) => {
            for p in &paths {
                sys.fsconfig_string(fs, "lowerdir+", string_param("layer path", p)?)
                    .map_err(with_log("fsconfig lowerdir+", p.display().to_string()))?;
            }
        }
        Lowers::Relative { .. } => unreachable!("legacy layers are mounted by assemble"),
    }
    if let (Some(upper), Some(work)) = (&o.upper, &o.work) {
        for (key, dir) in [("upperdir", upper), ("workdir", work)] {
            if features.upper_fds {
                let fd = open_path_dir(rustix::fs::CWD, dir).map_err(RootfsError::syscall(
                    "open",
                    format!("{key} {}", dir.display()),
                ))?;
                sys.fsconfig_fd(fs, key, fd.as_fd())
                    .map_err(with_log("fsconfig", format!("{key} {}", dir.display())))?;
            } else {
                sys.fsconfig_string(fs, key, string_param(key, dir)?)
                    .map_err(with_log("fsconfig", format!("{key} {}", dir.display())))?;
            }
        }
    }
    for p in &o.params {
        match p {
            FsParam::Flag(k) => sys
                .fsconfig_flag(fs, k)
                .map_err(with_log("fsconfig", format!("overlay option {k}")))?,
            FsParam::Value(k, v) => sys
                .fsconfig_string(fs, k, OsStr::new(v))
                .map_err(with_log("fsconfig", format!("overlay option {k}={v}")))?,
        }
    }
    sys.fsconfig_create(fs).map_err(with_log(
        "fsconfig create",
        format!("overlay of {} layers", o.lowers.len()),
    ))?;
    sys.fsmount(fs, o.attrs)
        .map_err(RootfsError::syscall("fsmount", "overlay"))
}

/// `fd`: one idmapped clone per layer group (one in the common case), the
/// layers opened below it and handed to overlayfs as fds. On 6.15+ nothing is
/// ever attached; on 6.13-6.14 each clone is attached once, briefly.
fn overlay_fd(
    sys: &dyn MountSys,
    o: &OverlayPlan,
    features: &KernelFeatures,
    idmap: Idmap<'_>,
    scratch: &mut Scratch<'_>,
) -> Result<OwnedFd, RootfsError> {
    let (groups, locs) = locate_layers(&o.lowers)?;
    let mut trees = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let tree = idmapped_clone(sys, &g.ancestor, idmap)?;
        if !features.detached_layer_fds {
            scratch.attach(tree.as_fd(), &format!("g{i}"))?;
        }
        trees.push(tree);
    }
    let fds = locs
        .iter()
        .enumerate()
        .map(|(index, l)| {
            open_path_dir(trees[l.group].as_fd(), &l.rel).map_err(|source| RootfsError::Layer {
                index,
                path: o.lowers[index].clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    prepare_upper(o, &idmap)?;
    assemble(sys, Lowers::Fds(fds), o, features, scratch)
}

/// `path`: each group's idmapped clone attached once at a temporary
/// directory, the layers named by paths below it (`lowerdir+`, or legacy
/// relative `lowerdir=`), the temporary mounts detached right after.
fn overlay_path(
    sys: &dyn MountSys,
    o: &OverlayPlan,
    features: &KernelFeatures,
    idmap: Idmap<'_>,
    scratch: &mut Scratch<'_>,
) -> Result<OwnedFd, RootfsError> {
    let (groups, locs) = locate_layers(&o.lowers)?;
    let mut at = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let tree = idmapped_clone(sys, &g.ancestor, idmap)?;
        let name = format!("g{i}");
        scratch.attach(tree.as_fd(), &name)?;
        at.push(PathBuf::from(name));
    }
    prepare_upper(o, &idmap)?;
    let rels: Vec<PathBuf> = locs.iter().map(|l| at[l.group].join(&l.rel)).collect();
    let lowers = if features.lowerdir_plus {
        let dir = scratch.dir()?;
        Lowers::Paths(rels.iter().map(|r| dir.join(r)).collect())
    } else {
        Lowers::Relative {
            cwd: scratch.dir()?,
            rels,
        }
    };
    assemble(sys, lowers, o, features, scratch)
}

/// `per-layer`: containerd 2.0's construction, kept as the measured
/// baseline: every layer cloned, idmapped and attached on its own, the
/// overlay made over those mounts, then every layer mount detached.
fn overlay_per_layer(
    sys: &dyn MountSys,
    o: &OverlayPlan,
    features: &KernelFeatures,
    idmap: Idmap<'_>,
    scratch: &mut Scratch<'_>,
) -> Result<OwnedFd, RootfsError> {
    let mut rels = Vec::with_capacity(o.lowers.len());
    for (index, lower) in o.lowers.iter().enumerate() {
        let path = std::fs::canonicalize(lower).map_err(|source| RootfsError::Layer {
            index,
            path: lower.clone(),
            source,
        })?;
        let tree = idmapped_clone(sys, &path, idmap)?;
        let name = index.to_string();
        scratch.attach(tree.as_fd(), &name)?;
        rels.push(PathBuf::from(name));
    }
    prepare_upper(o, &idmap)?;
    let lowers = if features.lowerdir_plus {
        let dir = scratch.dir()?;
        Lowers::Paths(rels.iter().map(|r| dir.join(r)).collect())
    } else {
        Lowers::Relative {
            cwd: scratch.dir()?,
            rels,
        }
    };
    assemble(sys, lowers, o, features, scratch)
}

/// `plain`: no user namespace, the overlay exactly as containerd asks.
fn overlay_plain(
    sys: &dyn MountSys,
    o: &OverlayPlan,
    features: &KernelFeatures,
    scratch: &mut Scratch<'_>,
) -> Result<OwnedFd, RootfsError> {
    let lowers = if features.layer_fds {
        let fds = o
            .lowers
            .iter()
            .enumerate()
            .map(|(index, l)| {
                open_path_dir(rustix::fs::CWD, l).map_err(|source| RootfsError::Layer {
                    index,
                    path: l.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Lowers::Fds(fds)
    } else if features.lowerdir_plus {
        Lowers::Paths(o.lowers.clone())
    } else {
        // Legacy lowerdir= relative to the layers' common ancestor: each layer
        // is checked first so that a missing one is named (mount(2) would only
        // say ENOENT), and the ancestor is taken above every layer (a layer
        // cannot be named by an empty relative path).
        let mut canon = Vec::with_capacity(o.lowers.len());
        for (index, l) in o.lowers.iter().enumerate() {
            let path = std::fs::canonicalize(l).map_err(|source| RootfsError::Layer {
                index,
                path: l.clone(),
                source,
            })?;
            canon.push(path);
        }
        let mut cwd = canon
            .iter()
            .skip(1)
            .fold(canon.first().cloned().unwrap_or_default(), |a, b| {
                common_ancestor(&a, b)
            });
        if canon.contains(&cwd) {
            if let Some(parent) = cwd.parent() {
                cwd = parent.to_path_buf();
            }
        }
        let rels = canon
            .iter()
            .map(|l| {
                l.strip_prefix(&cwd)
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            })
            .collect();
        Lowers::Relative { cwd, rels }
    };
    assemble(sys, lowers, o, features, scratch)
}

/// A bind rootfs: one clone of the directory, idmapped when a user namespace
/// is given.
fn bind(
    sys: &dyn MountSys,
    b: &BindPlan,
    idmap: Option<Idmap<'_>>,
) -> Result<OwnedFd, RootfsError> {
    let meta = std::fs::metadata(&b.source).map_err(RootfsError::syscall(
        "stat",
        format!("bind source {}", b.source.display()),
    ))?;
    if !meta.is_dir() {
        return Err(RootfsError::NotADirectory {
            what: "bind source",
            path: b.source.clone(),
        });
    }
    let recursive = BindRecursion {
        clone: b.recursive,
        attrs: b.recursive,
    };
    clone_with_attrs(sys, &b.source, recursive, b.attrs, idmap.map(|i| i.userns))
}

/// Which parts of a bind are recursive: the clone of the tree (`rbind`) and
/// the attributes and idmapping set on it (`ridmap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindRecursion {
    pub clone: bool,
    pub attrs: bool,
}

/// A detached bind mount of `source` (a directory or a file) with `attrs`,
/// idmapped into `userns` when one is given: `open_tree(OPEN_TREE_CLONE)`
/// and at most one `mount_setattr`, nothing attached anywhere. The caller
/// attaches it (e.g. inside a container's own mount namespace).
pub fn detached_bind(
    source: &Path,
    recursive: BindRecursion,
    attrs: MountAttrFlags,
    userns: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, RootfsError> {
    clone_with_attrs(&KernelSys::new(), source, recursive, attrs, userns)
}

/// Sets `attrs` on the top mount of a detached tree only, not on its
/// submounts (`ro` of an `rbind`, as mount(2) applies it), e.g. after
/// [`detached_bind`] idmapped the whole tree.
pub fn set_top_attrs(
    tree: BorrowedFd<'_>,
    attrs: MountAttrFlags,
    what: &Path,
) -> Result<(), RootfsError> {
    KernelSys::new()
        .setattr(tree, attrs, None, false)
        .map_err(RootfsError::syscall(
            "mount_setattr",
            what.display().to_string(),
        ))
}

fn clone_with_attrs(
    sys: &dyn MountSys,
    source: &Path,
    recursive: BindRecursion,
    attrs: MountAttrFlags,
    userns: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, RootfsError> {
    let tree = sys
        .clone_tree(source, recursive.clone)
        .map_err(RootfsError::syscall(
            "open_tree",
            source.display().to_string(),
        ))?;
    if userns.is_some() || !attrs.is_empty() {
        sys.setattr(
            tree.as_fd(),
            attrs,
            userns,
            recursive.attrs && recursive.clone,
        )
        .map_err(|e| match userns {
            Some(_) => idmap_error(source, e),
            None => RootfsError::syscall("mount_setattr", source.display().to_string())(e),
        })?;
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        }
        let err = "fast".parse::<Strategy>().expect_err("unknown");
        assert!(err.contains("\"fast\""), "{err}");
    }

    #[test]
    fn ancestor_of_paths() {
        assert_eq!(
            common_ancestor(Path::new("/a/b/c/fs"), Path::new("/a/b/d/fs")),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            common_ancestor(Path::new("/x"), Path::new("/y")),
            PathBuf::from("/")
        );
    }

    #[test]
    fn layers_resolve_to_their_real_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().canonicalize().expect("canonical");
        let layer = real.join("snapshots/1/fs");
        std::fs::create_dir_all(&layer).expect("layer");
        std::os::unix::fs::symlink(real.join("snapshots"), real.join("link")).expect("symlink");
        let mnt = |p: &Path| {
            rustix::fs::statx(
                rustix::fs::CWD,
                p,
                rustix::fs::AtFlags::empty(),
                StatxFlags::MNT_ID,
            )
            .expect("statx")
            .stx_mnt_id
        };
        // A plain path (containerd's), a symlink on the way, `..`, a
        // doubled slash: the same directory, on the same mount.
        for given in [
            layer.clone(),
            real.join("link/1/fs"),
            real.join("snapshots/1/../1/fs"),
            PathBuf::from(format!("{}//snapshots/1/fs", real.display())),
        ] {
            let (path, st) = resolve_layer(&given).expect("resolves");
            assert_eq!(path, layer, "{}", given.display());
            assert_eq!(u32::from(st.stx_mode) & libc::S_IFMT, libc::S_IFDIR);
            assert_eq!(st.stx_mnt_id, mnt(&layer));
        }
        // A file is found (the caller refuses it), a missing path is not.
        std::fs::write(real.join("file"), "").expect("file");
        let (_, st) = resolve_layer(&real.join("file")).expect("file resolves");
        assert_eq!(u32::from(st.stx_mode) & libc::S_IFMT, libc::S_IFREG);
        let err = resolve_layer(&real.join("missing")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn auto_resolution_follows_the_kernel() {
        let all = KernelFeatures::all();
        assert_eq!(all.resolve(Strategy::Auto).ok(), Some(Strategy::Fd));
        let old = KernelFeatures {
            layer_fds: false,
            detached_layer_fds: false,
            upper_fds: false,
            ..KernelFeatures::all()
        };
        assert_eq!(old.resolve(Strategy::Auto).ok(), Some(Strategy::Path));
        assert!(old.resolve(Strategy::Fd).is_err());
        let none = KernelFeatures {
            idmapped_mounts: false,
            ..old.clone()
        };
        let err = none.resolve(Strategy::Auto).expect_err("no idmap");
        assert!(err.to_string().contains("idmapped mounts"), "{err}");
        assert_eq!(none.resolve(Strategy::Plain).ok(), Some(Strategy::Plain));
        // Debian 12's 6.1: only legacy lowerdir= works; forcing fd is refused.
        let debian12 = KernelFeatures {
            lowerdir_plus: false,
            ..old.clone()
        };
        assert_eq!(debian12.resolve(Strategy::Auto).ok(), Some(Strategy::Path));
        assert!(debian12.tier().contains("legacy lowerdir="));
        let err = debian12.resolve(Strategy::Fd).expect_err("fd on 6.1");
        assert!(
            err.to_string().contains("not supported by this kernel"),
            "{err}"
        );
        let broken = KernelFeatures {
            legacy_lowerdir: false,
            ..debian12
        };
        assert!(broken.resolve(Strategy::Auto).is_err());
        assert!(broken.resolve(Strategy::Path).is_err());
        assert!(broken.resolve(Strategy::PerLayer).is_err());
    }
}
