//! The container's mounts, in the order of the spec: OCI mount options,
//! destinations resolved inside the rootfs as if it were `/` (a symlink in
//! the image can never lead a mount out of it), idmapped bind mounts
//! (attached from detached clones the shim built), cgroup views, the default
//! devices of a `/dev` tmpfs, masked and read-only paths.
//!
//! Everything before `pivot_root` goes through a file descriptor of the
//! rootfs: a destination is opened with `openat2(RESOLVE_IN_ROOT)`, missing
//! directories are made relative to an already resolved parent, and the
//! mount targets the resolved fd (`/proc/self/fd/N`), never a path string
//! the kernel would walk again.

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

type Result<T> = std::result::Result<T, String>;

/// The parsed `options` of an OCI mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// mount(2) flags (`ro`, `nosuid`, ..., `bind`, `rbind`).
    pub flags: MsFlags,
    /// Propagation (`rprivate`, `shared`, ...), applied after the mount.
    pub propagation: MsFlags,
    /// Filesystem data (`mode=755`, `size=65536k`, ...).
    pub data: Vec<String>,
    /// `idmap` (the mount itself) or `ridmap` (it and its submounts).
    pub idmap: Option<IdmapDepth>,
    /// Recursive attributes (`rro`, `rnosuid`, `ratime`, ...): set and
    /// cleared on the mount and every submount with
    /// `mount_setattr(AT_RECURSIVE)` once it is made.
    pub rec_set: rootfs::MountAttrFlags,
    pub rec_clear: rootfs::MountAttrFlags,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdmapDepth {
    Top,
    Recursive,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
            idmap: None,
            rec_set: rootfs::MountAttrFlags::empty(),
            rec_clear: rootfs::MountAttrFlags::empty(),
        }
    }
}

impl Options {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// `MS_NOSYMFOLLOW` (5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// The recursive attribute options runc knows (`rro`, ...): the attributes
/// to set and to clear on the mount and its submounts. An atime mode
/// (`rnoatime`, `rstrictatime`, `rrelatime` and their negations) replaces
/// the whole atime field, as mount_setattr requires.
pub fn recursive_attr(opt: &str) -> Option<(rootfs::MountAttrFlags, rootfs::MountAttrFlags)> {
    use rootfs::MountAttrFlags as A;
    let none = A::empty();
    let atime = A::MOUNT_ATTR__ATIME;
    Some(match opt {
        "rro" => (A::MOUNT_ATTR_RDONLY, none),
        "rrw" => (none, A::MOUNT_ATTR_RDONLY),
        "rnosuid" => (A::MOUNT_ATTR_NOSUID, none),
        "rsuid" => (none, A::MOUNT_ATTR_NOSUID),
        "rnodev" => (A::MOUNT_ATTR_NODEV, none),
        "rdev" => (none, A::MOUNT_ATTR_NODEV),
        "rnoexec" => (A::MOUNT_ATTR_NOEXEC, none),
        "rexec" => (none, A::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (A::MOUNT_ATTR_NODIRATIME, none),
        "rdiratime" => (none, A::MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (A::MOUNT_ATTR_NOSYMFOLLOW, none),
        "rsymfollow" => (none, A::MOUNT_ATTR_NOSYMFOLLOW),
        // MOUNT_ATTR_RELATIME is 0: clearing the field selects it.
        "rrelatime" | "ratime" | "rnostrictatime" => (none, atime),
        "rnoatime" => (A::MOUNT_ATTR_NOATIME, atime),
        "rstrictatime" | "rnorelatime" => (A::MOUNT_ATTR_STRICTATIME, atime),
        _ => return None,
    })
}

/// Every mount option idshift understands (beyond a filesystem's own data,
/// which non-bind mounts pass to the kernel): what `-info` advertises.
pub const KNOWN_OPTIONS: [&str; 58] = [
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
    "iversion",
    "lazytime",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "rexec",
    "ridmap",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
];

pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "iversion" => (MsFlags::MS_I_VERSION, MsFlags::empty()),
            "noiversion" => (MsFlags::empty(), MsFlags::MS_I_VERSION),
            "nosymfollow" => (MS_NOSYMFOLLOW, MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), MS_NOSYMFOLLOW),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "idmap" => {
                o.idmap.get_or_insert(IdmapDepth::Top);
                continue;
            }
            "ridmap" => {
                o.idmap = Some(IdmapDepth::Recursive);
                continue;
            }
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                o.propagation = propagation_flags(p).unwrap_or(MsFlags::empty());
                continue;
            }
            other => {
                if let Some((set, clear)) = recursive_attr(other) {
                    o.rec_set.remove(clear);
                    o.rec_clear.remove(set);
                    o.rec_set.insert(set);
                    o.rec_clear.insert(clear);
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        o.flags.remove(clear);
        o.flags.insert(set);
    }
    o
}

/// `rprivate`, `shared`, ... as mount(2) flags (`None`: not a propagation).
pub fn propagation_flags(p: &str) -> Option<MsFlags> {
    let base = match p.strip_prefix('r').unwrap_or(p) {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if p.starts_with('r') {
        base | MsFlags::MS_REC
    } else {
        base
    })
}

/// How a spec mount asks to be idmapped: `None` for an ordinary mount.
/// Per-mount `uidMappings`/`gidMappings` or an `idmap`/`ridmap` option make
/// an idmapped bind mount (only bind mounts can be idmapped).
pub fn idmap_request(m: &Mount) -> Result<Option<rootfs::BindRecursion>> {
    let o = parse_options(&m.options().clone().unwrap_or_default());
    let has_maps = m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
        || m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty());
    if o.idmap.is_none() && !has_maps {
        return Ok(None);
    }
    if !(o.is_bind() || m.typ().as_deref() == Some("bind")) {
        return Err(format!(
            "mount {}: idmapped mounts (idmap, ridmap, uidMappings, gidMappings) are only supported for bind mounts, not type {:?}",
            m.destination().display(),
            m.typ().clone().unwrap_or_default()
        ));
    }
    if m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
        != m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(format!(
            "mount {}: uidMappings and gidMappings must be given together",
            m.destination().display()
        ));
    }
    Ok(Some(rootfs::BindRecursion {
        clone: o.flags.contains(MsFlags::MS_REC),
        attrs: o.idmap == Some(IdmapDepth::Recursive),
    }))
}

/// The mount attributes (for `mount_setattr`) of `ro`, `nosuid`, ... options.
pub fn mount_attrs(flags: MsFlags) -> rootfs::MountAttrFlags {
    use rootfs::MountAttrFlags as A;
    let mut a = A::empty();
    for (f, attr) in [
        (MsFlags::MS_RDONLY, A::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, A::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, A::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, A::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NOATIME, A::MOUNT_ATTR_NOATIME),
        (MsFlags::MS_STRICTATIME, A::MOUNT_ATTR_STRICTATIME),
        (MsFlags::MS_NODIRATIME, A::MOUNT_ATTR_NODIRATIME),
        (MS_NOSYMFOLLOW, A::MOUNT_ATTR_NOSYMFOLLOW),
    ] {
        if flags.contains(f) {
            a |= attr;
        }
    }
    a
}

/// The container's cgroup as the host sees it, for its `cgroup` mounts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CgroupView {
    /// v1: each mounted hierarchy (its directory name under /sys/fs/cgroup,
    /// e.g. `cpu,cpuacct`), the container's directory in it, and the
    /// controllers it holds (each gets a symlink when it differs from the
    /// name, as on the host).
    pub v1: Vec<V1Hierarchy>,
    /// The container's directory in the cgroup2 hierarchy, if any.
    pub v2: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct V1Hierarchy {
    pub name: String,
    pub dir: PathBuf,
    pub controllers: Vec<String>,
}

/// What kind of inode a missing destination is created as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The directory of the rootfs being set up, by fd and (for messages) path.
pub struct Root<'a> {
    pub fd: BorrowedFd<'a>,
    pub path: &'a Path,
}

fn relative(dest: &Path) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in dest.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "mount destination {} contains \"..\"",
                    dest.display()
                ))
            }
        }
    }
    Ok(rel)
}

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

fn open_in(root: BorrowedFd<'_>, rel: &Path, dir: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    loop {
        match rustix::fs::openat2(root, rel, flags, Mode::empty(), IN_ROOT) {
            // openat2 asks to be retried when a rename raced the lookup.
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

impl Root<'_> {
    /// Opens `dest` (O_PATH) inside the root as if the root were `/`:
    /// symlinks resolve inside it, `..` stops at it, magic links are
    /// refused. With `create`, missing components are made: directories,
    /// and the last one as `create` says.
    pub fn open(&self, dest: &Path, create: Option<Kind>) -> Result<OwnedFd> {
        let rel = relative(dest)?;
        let fail = |what: &str, e: rustix::io::Errno| {
            format!(
                "{what} mount destination {} inside the rootfs {}: {e}",
                dest.display(),
                self.path.display()
            )
        };
        match open_in(self.fd, &rel, create == Some(Kind::Dir)) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) if create.is_some() => {}
            Err(e) => return Err(fail("resolving", e)),
        }
        let comps: Vec<&OsStr> = rel.iter().collect();
        let mut prefix = PathBuf::new();
        let mut parent = open_in(self.fd, Path::new(""), true).map_err(|e| fail("opening", e))?;
        for (i, c) in comps.iter().enumerate() {
            prefix.push(c);
            let file = i + 1 == comps.len() && create == Some(Kind::File);
            match open_in(self.fd, &prefix, !file) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(fail("resolving", e)),
            }
            // `parent` is a directory inside the root and `c` one plain
            // name: what is made lands inside. A name that appeared meanwhile
            // (EEXIST) is resolved again below.
            let made = if file {
                rustix::fs::openat(
                    &parent,
                    *c,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&parent, *c, Mode::from_raw_mode(0o755))
            };
            match made {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(fail("creating", e)),
            }
            parent = open_in(self.fd, &prefix, !file).map_err(|e| {
                fail(
                    "resolving (a dangling symlink in the image?) the newly made",
                    e,
                )
            })?;
        }
        Ok(parent)
    }
}

/// The path by which mount(2) reaches an fd's inode without a new lookup.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A bind remount with `flags`; if the kernel refuses because the mount has
/// locked flags (a mount from a more privileged user namespace keeps its
/// nosuid/nodev/noexec/ro), they are kept and it is tried again.
fn remount_bind(target: &Path, flags: MsFlags, what: &Path) -> Result<()> {
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(
        None::<&str>,
        target,
        None::<&str>,
        base | flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let locked = rustix::fs::statvfs(target)
                .map(|s| {
                    use rustix::fs::StatVfsMountFlags as F;
                    let mut l = MsFlags::empty();
                    for (f, m) in [
                        (F::RDONLY, MsFlags::MS_RDONLY),
                        (F::NOSUID, MsFlags::MS_NOSUID),
                        (F::NODEV, MsFlags::MS_NODEV),
                        (F::NOEXEC, MsFlags::MS_NOEXEC),
                        (F::NOATIME, MsFlags::MS_NOATIME),
                        (F::NODIRATIME, MsFlags::MS_NODIRATIME),
                        (F::RELATIME, MsFlags::MS_RELATIME),
                    ] {
                        if s.f_flag.contains(f) {
                            l |= m;
                        }
                    }
                    l
                })
                .map_err(|e| format!("statvfs {}: {e}", what.display()))?;
            mount(
                None::<&str>,
                target,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .map_err(|e| format!("remounting {} with {flags:?}: {e}", what.display()))
        }
        Err(e) => Err(format!("remounting {} with {flags:?}: {e}", what.display())),
    }
}

/// A bind mount of the host's `source` on `target` (an fd inside the root),
/// then its flags.
fn bind(root: &Root<'_>, source: &Path, dest: &Path, flags: MsFlags, kind: Kind) -> Result<()> {
    let target = root.open(dest, Some(kind))?;
    mount(
        Some(source),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
        None::<&str>,
    )
    .map_err(|e| format!("bind mount {} on {}: {e}", source.display(), dest.display()))?;
    let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        let mounted = root.open(dest, None)?;
        remount_bind(&fd_path(&mounted), extra, dest)?;
    }
    Ok(())
}

fn set_propagation(root: &Root<'_>, dest: &Path, propagation: MsFlags) -> Result<()> {
    if propagation.is_empty() {
        return Ok(());
    }
    let mounted = root.open(dest, None)?;
    mount(
        None::<&str>,
        &fd_path(&mounted),
        None::<&str>,
        propagation,
        None::<&str>,
    )
    .map_err(|e| format!("setting the propagation of {}: {e}", dest.display()))
}

fn kind_of(md: &fs::Metadata) -> Kind {
    if md.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

/// A spec mount made before the container's process entered its user
/// namespace, detached, to be attached at its destination.
pub enum Premade {
    /// The idmapped clone the shim built (its attributes already set).
    Idmapped(OwnedFd),
    /// A clone of a bind mount's source taken with the host's privileges:
    /// the container's root may not reach the source itself (containerd's
    /// own directories, e.g. CRI's /etc/hosts and /dev/shm, are mode 0700).
    Bind(OwnedFd),
}

/// Detached clones (`open_tree(OPEN_TREE_CLONE)`, recursive for `rbind`)
/// of the sources of the spec's bind mounts, by mount index; none for the
/// mounts in `skip` (the idmapped ones, built by the shim) and for other
/// types.
pub fn clone_bind_sources(mounts: &[Mount], skip: &[usize]) -> Result<Vec<Option<Premade>>> {
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let o = parse_options(&m.options().clone().unwrap_or_default());
            let source = m.source().clone().unwrap_or_default();
            if skip.contains(&i)
                || !(o.is_bind() || m.typ().as_deref() == Some("bind"))
                || !source.is_absolute()
            {
                return Ok(None);
            }
            let mut of = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if o.flags.contains(MsFlags::MS_REC) {
                of |= rustix::mount::OpenTreeFlags::AT_RECURSIVE;
            }
            rustix::mount::open_tree(rustix::fs::CWD, &source, of)
                .map(|fd| Some(Premade::Bind(fd)))
                .map_err(|e| format!("opening bind mount source {}: {e}", source.display()))
        })
        .collect()
}

/// Mounts one spec mount inside `root`, attaching `premade` where the
/// mount was made beforehand.
pub fn mount_one(
    root: &Root<'_>,
    m: &Mount,
    premade: Option<Premade>,
    cgroups: &CgroupView,
) -> Result<()> {
    let o = parse_options(&m.options().clone().unwrap_or_default());
    check_options(m, &o)?;
    make_mount(root, m, &o, premade, cgroups)?;
    let dest = m.destination();
    if !(o.rec_set.is_empty() && o.rec_clear.is_empty()) {
        let mounted = root.open(dest, None)?;
        rootfs::mount_setattr(mounted.as_fd(), o.rec_set, o.rec_clear, None, true).map_err(
            |e| {
                format!(
                    "setting the recursive attributes of {} (set {:?}, clear {:?}): {e}",
                    dest.display(),
                    o.rec_set,
                    o.rec_clear
                )
            },
        )?;
    }
    set_propagation(root, dest, o.propagation)
}

/// A bind mount has no filesystem data: an option that is neither a mount
/// flag nor a recursive attribute would be dropped, so it is refused,
/// naming it and the mount (as is runc's `tmpcopyup`, not implemented).
pub fn check_options(m: &Mount, o: &Options) -> Result<()> {
    let typ = m.typ().clone().unwrap_or_default();
    if let Some(bad) = o.data.iter().find(|d| d.as_str() == "tmpcopyup") {
        return Err(format!(
            "mount {}: option {bad:?} is not supported by idshift",
            m.destination().display()
        ));
    }
    if (o.is_bind() || typ == "bind") && !o.data.is_empty() {
        return Err(format!(
            "mount {}: unknown bind mount option(s) {:?} (a bind mount takes no filesystem data)",
            m.destination().display(),
            o.data
        ));
    }
    Ok(())
}

/// The mount itself, before its recursive attributes and propagation.
fn make_mount(
    root: &Root<'_>,
    m: &Mount,
    o: &Options,
    premade: Option<Premade>,
    cgroups: &CgroupView,
) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().clone().unwrap_or_default();
    let source = m.source().clone().unwrap_or_default();
    if let Some(premade) = premade {
        let (tree, set_flags) = match premade {
            Premade::Idmapped(t) => (t, false),
            Premade::Bind(t) => (t, true),
        };
        let st = rustix::fs::fstat(&tree)
            .map_err(|e| format!("stat of the mount for {}: {e}", dest.display()))?;
        let kind =
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                Kind::Dir
            } else {
                Kind::File
            };
        let target = root.open(dest, Some(kind))?;
        rustix::mount::move_mount(
            tree.as_fd(),
            "",
            target.as_fd(),
            "",
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| {
            format!(
                "attaching the mount of {} on {}: {e}",
                source.display(),
                dest.display()
            )
        })?;
        // A clone of a shared host mount is the host mount's peer: unless
        // the mount asks for a propagation of its own, it is made private
        // at once, so that nothing mounted under it reaches the host.
        let propagation = if o.propagation.is_empty() {
            MsFlags::MS_REC | MsFlags::MS_PRIVATE
        } else {
            o.propagation
        };
        set_propagation(root, dest, propagation)?;
        let extra = o.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if set_flags && !extra.is_empty() {
            let mounted = root.open(dest, None)?;
            remount_bind(&fd_path(&mounted), extra, dest)?;
        }
        return Ok(());
    }
    if o.is_bind() || typ == "bind" {
        let md = fs::metadata(&source)
            .map_err(|e| format!("bind mount source {}: {e}", source.display()))?;
        return bind(
            root,
            &source,
            dest,
            o.flags | MsFlags::MS_BIND,
            kind_of(&md),
        );
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, m, o, cgroups);
    }
    let target = root.open(dest, Some(Kind::Dir))?;
    let data = o.data.join(",");
    let data_opt = (!data.is_empty()).then_some(data.as_str());
    let r = mount(
        Some(&source),
        &fd_path(&target),
        Some(typ.as_str()),
        o.flags,
        data_opt,
    );
    match (r, typ.as_str()) {
        (Ok(()), _) => {}
        // Without a network (or ipc) namespace of our own the kernel refuses
        // a new sysfs (mqueue) instance: the host's, read-only, as runc does.
        (Err(nix::errno::Errno::EPERM), "sysfs" | "mqueue") => {
            drop(target);
            let host = if typ == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            let ro = MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC;
            bind(root, Path::new(host), dest, ro, Kind::Dir)?;
        }
        (Err(e), _) => {
            return Err(format!(
                "mount {typ} {} on {} ({data}): {e}",
                source.display(),
                dest.display()
            ))
        }
    }
    Ok(())
}

/// A `cgroup` mount. cgroup v1 host: a tmpfs with each hierarchy's
/// container directory bound in it (and symlinks for co-mounted
/// controllers), as runc does; cgroup2: a new cgroup2 instance where the
/// container's cgroup namespace allows it, else its own directory bound.
fn mount_cgroup(root: &Root<'_>, m: &Mount, o: &Options, view: &CgroupView) -> Result<()> {
    let dest = m.destination();
    let flags = o.flags & !MsFlags::MS_BIND;
    let ro = flags.contains(MsFlags::MS_RDONLY);
    if !view.v1.is_empty() {
        let target = root.open(dest, Some(Kind::Dir))?;
        let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            &fd_path(&target),
            Some("tmpfs"),
            tmpfs_flags,
            Some("mode=755"),
        )
        .map_err(|e| format!("mount tmpfs on {}: {e}", dest.display()))?;
        for h in &view.v1 {
            let sub = dest.join(&h.name);
            bind(
                root,
                &h.dir,
                &sub,
                flags | MsFlags::MS_BIND | tmpfs_flags,
                Kind::Dir,
            )?;
            let dir = root.open(dest, None)?;
            for c in h.controllers.iter().filter(|c| **c != h.name) {
                match rustix::fs::symlinkat(h.name.as_str(), &dir, c.as_str()) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(format!(
                            "symlink {} -> {} in {}: {e}",
                            c,
                            h.name,
                            dest.display()
                        ))
                    }
                }
            }
        }
        if ro {
            let mounted = root.open(dest, None)?;
            remount_bind(&fd_path(&mounted), tmpfs_flags | MsFlags::MS_RDONLY, dest)?;
        }
        return Ok(());
    }
    let target = root.open(dest, Some(Kind::Dir))?;
    match mount(
        Some("cgroup2"),
        &fd_path(&target),
        Some("cgroup2"),
        flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            drop(target);
            let own = view.v2.as_ref().ok_or_else(|| {
                format!(
                    "mount cgroup2 on {}: not permitted, and the container has no cgroup2 directory to bind",
                    dest.display()
                )
            })?;
            bind(
                root,
                own,
                dest,
                flags | MsFlags::MS_BIND | MsFlags::MS_REC,
                Kind::Dir,
            )
        }
        Err(e) => Err(format!("mount cgroup2 on {}: {e}", dest.display())),
    }
}

/// The device nodes a container gets on a `/dev` tmpfs. A user namespace
/// cannot mknod: the host's are bound.
pub const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Binds the default devices and makes /dev's usual symlinks.
pub fn default_devices(root: &Root<'_>) -> Result<()> {
    for d in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(d);
        bind(
            root,
            &host,
            &Path::new("/dev").join(d),
            MsFlags::MS_BIND,
            Kind::File,
        )?;
    }
    let dev = root.open(Path::new("/dev"), Some(Kind::Dir))?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match rustix::fs::symlinkat(to, &dev, link) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(format!("symlink /dev/{link} -> {to}: {e}")),
        }
    }
    Ok(())
}

/// `linux.devices`: a detached clone of each character or block device's
/// host node (a user namespace cannot mknod: the host's node is bound, as
/// runc binds it in a user namespace), taken with the host's privileges
/// before the user namespace is joined; `None` for a fifo (made inside).
/// The host node must be the device the spec names.
pub fn clone_devices(devices: &[oci_spec::runtime::LinuxDevice]) -> Result<Vec<Option<OwnedFd>>> {
    use oci_spec::runtime::LinuxDeviceType as T;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let path = d.path();
            let field = format!("linux.devices[{i}] {}", path.display());
            if !path.is_absolute() {
                return Err(format!("{field}: the path is not absolute"));
            }
            let want_block = match d.typ() {
                T::C | T::U => false,
                T::B => true,
                T::P => return Ok(None),
                T::A => return Err(format!("{field}: type \"a\" is not a device type")),
            };
            let is_it = |p: &Path| {
                fs::symlink_metadata(p).is_ok_and(|md| {
                    let ft = md.file_type();
                    let kind = if want_block {
                        ft.is_block_device()
                    } else {
                        ft.is_char_device()
                    };
                    let rdev = md.rdev();
                    kind && (
                        i64::from(rustix::fs::major(rdev)),
                        i64::from(rustix::fs::minor(rdev)),
                    ) == (d.major(), d.minor())
                })
            };
            // The host's node at the same path, else the host's node of that
            // device anywhere in /dev (one level down).
            let host = if is_it(path) {
                path.to_path_buf()
            } else {
                find_host_node(&is_it).ok_or_else(|| {
                    format!(
                        "{field}: the host has no {} device {}:{} node to bind (a user namespace cannot mknod)",
                        if want_block { "block" } else { "character" },
                        d.major(),
                        d.minor()
                    )
                })?
            };
            rustix::mount::open_tree(
                rustix::fs::CWD,
                &host,
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map(Some)
            .map_err(|e| format!("{field}: cloning the host's node: {e}"))
        })
        .collect()
}

/// A node of the host's /dev (or a directory right under it) `is_it` accepts.
fn find_host_node(is_it: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let top = entries(Path::new("/dev"));
    if let Some(p) = top.iter().find(|p| is_it(p)) {
        return Some(p.clone());
    }
    top.iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .flat_map(|d| entries(d))
        .find(|p| is_it(p))
}

/// Puts each `linux.devices` node at its path in the rootfs: the host's
/// node bound (its mode and owner are the host's), or a fifo made with the
/// spec's mode.
pub fn make_devices(
    root: &Root<'_>,
    devices: &[oci_spec::runtime::LinuxDevice],
    trees: Vec<Option<OwnedFd>>,
) -> Result<()> {
    for (d, tree) in devices.iter().zip(trees) {
        let dest = d.path();
        match tree {
            Some(tree) => {
                let target = root.open(dest, Some(Kind::File))?;
                rustix::mount::move_mount(
                    tree.as_fd(),
                    "",
                    target.as_fd(),
                    "",
                    rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                        | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                )
                .map_err(|e| format!("binding the device {}: {e}", dest.display()))?;
            }
            None => {
                let name = dest
                    .file_name()
                    .ok_or_else(|| format!("linux.devices {}: no file name", dest.display()))?;
                let parent = root.open(dest.parent().unwrap_or(Path::new("/")), Some(Kind::Dir))?;
                let mode = Mode::from_raw_mode(d.file_mode().unwrap_or(0o666) & 0o7777);
                match rustix::fs::mknodat(&parent, name, rustix::fs::FileType::Fifo, mode, 0) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(format!("making the fifo {}: {e}", dest.display())),
                }
                // The mode as given, whatever the umask.
                let fifo = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| format!("opening the fifo {}: {e}", dest.display()))?;
                rustix::fs::chmod(fd_path(&fifo), mode)
                    .map_err(|e| format!("chmod of the fifo {}: {e}", dest.display()))?;
                if d.uid().is_some() || d.gid().is_some() {
                    rustix::fs::chown(
                        fd_path(&fifo),
                        d.uid().map(rustix::fs::Uid::from_raw),
                        d.gid().map(rustix::fs::Gid::from_raw),
                    )
                    .map_err(|e| format!("chown of the fifo {}: {e}", dest.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Masks `p` (after pivot_root): an empty read-only tmpfs over a
/// directory, /dev/null over anything else. A missing path is fine.
pub fn mask_path(p: &Path) -> Result<()> {
    let md = match fs::metadata(p) {
        Ok(md) => md,
        Err(_) => return Ok(()),
    };
    let r = if md.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| format!("masking {}: {e}", p.display()))
}

/// Makes `p` read-only (after pivot_root). A missing path is fine.
pub fn readonly_path(p: &Path) -> Result<()> {
    if fs::metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {}: {e}", p.display()))?;
    remount_bind(p, MsFlags::MS_RDONLY | MsFlags::MS_REC, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed() {
        let o = parse_options(&[
            "rbind".into(),
            "ro".into(),
            "nosuid".into(),
            "rslave".into(),
            "size=1m".into(),
            "rw".into(),
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID
        );
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, ["size=1m"]);
        assert_eq!(o.idmap, None);
        let o = parse_options(&["bind".into(), "ridmap".into(), "idmap".into()]);
        assert_eq!(o.idmap, Some(IdmapDepth::Recursive));
        assert_eq!(propagation_flags("shared"), Some(MsFlags::MS_SHARED));
        assert_eq!(propagation_flags("sideways"), None);
    }

    #[test]
    fn recursive_attributes_are_parsed_and_known() {
        use rootfs::MountAttrFlags as A;
        let opts = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = opts(&["rbind", "rro", "rnosuid", "rnoatime"]);
        assert_eq!(
            o.rec_set,
            A::MOUNT_ATTR_RDONLY | A::MOUNT_ATTR_NOSUID | A::MOUNT_ATTR_NOATIME
        );
        assert_eq!(o.rec_clear, A::MOUNT_ATTR__ATIME);
        assert!(o.data.is_empty());
        // The later option wins.
        let o = opts(&["rro", "rrw"]);
        assert_eq!((o.rec_set, o.rec_clear), (A::empty(), A::MOUNT_ATTR_RDONLY));
        // Plain flags clear as mount(8) does.
        let o = opts(&["noatime", "atime", "sync", "async"]);
        assert_eq!(o.flags, MsFlags::empty());
        // Every option idshift lists is one it applies (none is data).
        for k in KNOWN_OPTIONS {
            let o = opts(&[k]);
            assert!(o.data.is_empty(), "{k} is dropped into data");
        }
        let m: Mount = serde_json::from_str(
            r#"{"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind", "bogus"]}"#,
        )
        .expect("mount");
        let e = check_options(
            &m,
            &parse_options(m.options().as_deref().unwrap_or_default()),
        )
        .expect_err("bogus");
        assert!(e.contains("bogus") && e.contains("/x"), "{e}");
    }

    fn mount_of(json: &str) -> Mount {
        serde_json::from_str(json).expect("mount json")
    }

    #[test]
    fn idmap_requests() {
        let plain =
            mount_of(r#"{"destination":"/a","type":"bind","source":"/x","options":["rbind"]}"#);
        assert_eq!(idmap_request(&plain), Ok(None));
        let top = mount_of(
            r#"{"destination":"/a","type":"bind","source":"/x","options":["rbind","idmap"]}"#,
        );
        assert_eq!(
            idmap_request(&top),
            Ok(Some(rootfs::BindRecursion {
                clone: true,
                attrs: false
            }))
        );
        let rec = mount_of(r#"{"destination":"/a","source":"/x","options":["rbind","ridmap"]}"#);
        assert_eq!(
            idmap_request(&rec),
            Ok(Some(rootfs::BindRecursion {
                clone: true,
                attrs: true
            }))
        );
        let maps = mount_of(
            r#"{"destination":"/a","type":"bind","source":"/x","options":["bind"],
                "uidMappings":[{"containerID":0,"hostID":1000,"size":1}],
                "gidMappings":[{"containerID":0,"hostID":1000,"size":1}]}"#,
        );
        assert!(matches!(idmap_request(&maps), Ok(Some(_))));
        let tmpfs =
            mount_of(r#"{"destination":"/a","type":"tmpfs","source":"tmpfs","options":["idmap"]}"#);
        let e = idmap_request(&tmpfs).expect_err("tmpfs");
        assert!(
            e.contains("only supported for bind") && e.contains("/a"),
            "{e}"
        );
        let half = mount_of(
            r#"{"destination":"/b","type":"bind","source":"/x","options":["bind"],
                "uidMappings":[{"containerID":0,"hostID":1000,"size":1}]}"#,
        );
        let e = idmap_request(&half).expect_err("uid only");
        assert!(e.contains("together"), "{e}");
    }

    #[test]
    fn destinations_stay_inside_the_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let root_path = d.path().join("root");
        fs::create_dir_all(root_path.join("etc")).expect("mkdir");
        // An absolute symlink and a relative one climbing out: both must
        // land in the root's /etc, never the host's.
        std::os::unix::fs::symlink("/etc", root_path.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../../etc", root_path.join("rel"))
            .expect("symlink");
        std::os::unix::fs::symlink("/nowhere/at/all", root_path.join("etc/dangling"))
            .expect("symlink");
        let name = format!("idshift-mounts-test-{}", std::process::id());
        let fd = fs::File::open(&root_path).expect("open root");
        let root = Root {
            fd: fd.as_fd(),
            path: &root_path,
        };
        root.open(&Path::new("/abs").join(&name).join("y"), Some(Kind::Dir))
            .expect("abs");
        assert!(root_path.join("etc").join(&name).join("y").is_dir());
        root.open(&Path::new("/rel").join(&name).join("f"), Some(Kind::File))
            .expect("rel");
        assert!(root_path.join("etc").join(&name).join("f").is_file());
        assert!(
            !Path::new("/etc").join(&name).exists(),
            "nothing made in the host's /etc"
        );
        // A dangling link is an error, not followed by a mkdir.
        let e = root
            .open(Path::new("/etc/dangling/f"), Some(Kind::Dir))
            .expect_err("dangling");
        assert!(
            e.contains("dangling") && e.contains("/etc/dangling/f"),
            "{e}"
        );
        assert!(!root_path.join("nowhere").exists());
        let e = root
            .open(Path::new("/a/../b"), Some(Kind::Dir))
            .expect_err("dotdot");
        assert!(e.contains(".."), "{e}");
        let e = root.open(Path::new("/missing"), None).expect_err("missing");
        assert!(e.contains("/missing"), "{e}");
    }
}
