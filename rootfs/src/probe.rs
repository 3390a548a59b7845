//! A one-time probe of what the running kernel's mount API accepts, deciding
//! which strategy `auto` means. Decided by trying, not by the kernel version.

use crate::error::RootfsError;
use crate::strategy::Strategy;
use crate::sys::{KernelSys, MountSys};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountAttrFlags, MountFlags};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// What the kernel supports, as found by trying.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFeatures {
    /// `uname -r`, for the record only.
    pub kernel: String,
    /// fsopen/fsconfig/fsmount/move_mount/open_tree (5.2+).
    pub mount_api: bool,
    /// overlayfs is available.
    pub overlay: bool,
    /// `mount_setattr(MOUNT_ATTR_IDMAP)` on a clone of the probe directory's filesystem (5.12+).
    pub idmapped_mounts: bool,
    /// legacy `mount(2)` of an overlay with relative `lowerdir=` (any kernel
    /// with overlayfs; the fallback tier).
    #[serde(default)]
    pub legacy_lowerdir: bool,
    /// overlay `lowerdir+` as a path string (6.7+).
    pub lowerdir_plus: bool,
    /// overlay `lowerdir+` as an fd of a directory in our mount namespace (6.13+).
    pub layer_fds: bool,
    /// overlay `lowerdir+` fds from a detached idmapped tree (6.15+).
    pub detached_layer_fds: bool,
    /// overlay `upperdir`/`workdir` as fds (6.13+).
    pub upper_fds: bool,
    /// What failed, for `--features`.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl KernelFeatures {
    /// Features of a kernel where everything works (for unit tests and
    /// simulations; a real build should use [`probe`]).
    pub fn all() -> Self {
        KernelFeatures {
            kernel: "assumed".into(),
            mount_api: true,
            overlay: true,
            idmapped_mounts: true,
            legacy_lowerdir: true,
            lowerdir_plus: true,
            layer_fds: true,
            detached_layer_fds: true,
            upper_fds: true,
            notes: Vec::new(),
        }
    }

    /// The strategy `requested` means on this kernel, or why it cannot run.
    pub fn resolve(&self, requested: Strategy) -> Result<Strategy, RootfsError> {
        let unsupported = |strategy, reason: &str| {
            Err(RootfsError::Unsupported {
                strategy,
                reason: reason.to_string(),
            })
        };
        if !self.mount_api {
            return unsupported(requested, "the new mount API (Linux 5.2+) is missing");
        }
        if !self.overlay {
            return unsupported(requested, "overlayfs is not available");
        }
        let paths = self.lowerdir_plus || self.legacy_lowerdir;
        match requested {
            Strategy::Auto if self.idmapped_mounts && self.layer_fds => Ok(Strategy::Fd),
            Strategy::Auto if self.idmapped_mounts && paths => Ok(Strategy::Path),
            Strategy::Auto if self.idmapped_mounts => unsupported(
                requested,
                "overlayfs refused every construction over idmapped layers (see --features)",
            ),
            Strategy::Auto => unsupported(
                requested,
                "idmapped mounts are not supported here, so containers cannot get a private ID range (configure strategy = \"plain\" to run without one)",
            ),
            Strategy::Plain if paths || self.layer_fds => Ok(Strategy::Plain),
            Strategy::Plain => unsupported(
                requested,
                "overlayfs refused every construction (see --features)",
            ),
            s if !self.idmapped_mounts => {
                unsupported(s, "idmapped mounts (Linux 5.12+, on a supporting filesystem) are missing")
            }
            Strategy::Fd if !self.layer_fds => unsupported(
                Strategy::Fd,
                "overlay does not take layers as file descriptors (Linux 6.13+); use \"path\" or \"auto\"",
            ),
            s if !paths && s != Strategy::Fd => unsupported(
                s,
                "overlayfs refused both lowerdir+ path strings and legacy lowerdir= over idmapped layers (see --features)",
            ),
            s => Ok(s),
        }
    }

    /// A one-line description of the mount-API tier.
    pub fn tier(&self) -> &'static str {
        if !self.mount_api || !self.overlay {
            "no usable mount API / overlayfs"
        } else if !self.idmapped_mounts {
            "no idmapped mounts (plain only)"
        } else if self.detached_layer_fds {
            "6.15+: layer fds from a detached idmapped tree"
        } else if self.layer_fds {
            "6.13+: layer fds from an idmapped tree attached once"
        } else if self.lowerdir_plus {
            "6.7+: lowerdir+ path strings through an idmapped tree attached once"
        } else if self.legacy_lowerdir {
            "5.19+: legacy lowerdir= with relative paths through an idmapped tree attached once"
        } else {
            "no overlay construction works over idmapped layers"
        }
    }
}

/// Probes the kernel in a temporary directory under `scratch_dir` (which
/// should be on the filesystem that holds the image layers). Each capability
/// is decided by doing what the strategy that needs it does, to the end: a
/// real overlay created and mounted (detached) over two layers with an upper
/// dir, through an idmapped clone of the probe directory, and its merged view
/// read. A parameter that `fsconfig` merely accepts proves nothing: before
/// overlayfs moved to the new mount API (6.5) its legacy parser collects any
/// key and refuses it only at `FSCONFIG_CMD_CREATE`. The constructions that
/// attach the idmapped clone attach it here too, briefly, below the probe
/// directory, inside a private mount namespace of the probing thread: the
/// host's mount table never sees them, and nothing stays mounted.
pub fn probe(scratch_dir: &Path) -> Result<KernelFeatures, RootfsError> {
    let dir = tempdir_in(scratch_dir, "probe")?;
    // In a thread of its own with a private mount namespace: the probe's
    // brief mounts are in no mount table another process reads.
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let private = crate::sys::private_mount_ns_for_this_thread();
            let mut f = probe_in(&dir)?;
            if let Err(e) = private {
                f.notes.push(note("a private mount namespace for the probe (its mounts were briefly in the caller's)", e));
            }
            Ok(f)
        })
        .join()
        .unwrap_or_else(|_| Err(RootfsError::Probe("the probe thread panicked".into())))
    });
    if let Err(e) = fs::remove_dir_all(&dir) {
        log::warn!("removing probe directory {}: {e}", dir.display());
    }
    result
}

/// A mount attached by the probe, detached on drop.
struct Attached<'a> {
    sys: &'a KernelSys,
    path: std::path::PathBuf,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.sys.detach(&self.path) {
            log::error!("detaching probe mount {}: {e}", self.path.display());
        }
    }
}

/// The host IDs the probe's throwaway user namespace maps to.
const PROBE_RANGE: userns::IdRange = userns::IdRange {
    base: 0x7000_0000,
    size: 65536,
};

/// Layers `l1` (top) and `l2`, each with a file of its own, and one
/// upper/work pair per construction tried (overlay may refuse a work dir
/// another overlay still holds).
const PROBE_PAIRS: [&str; 5] = ["legacy", "plus", "fds", "upperfds", "detached"];

fn probe_in(dir: &Path) -> Result<KernelFeatures, RootfsError> {
    let mkdir = |p: &Path| {
        fs::create_dir(p).map_err(RootfsError::syscall("mkdir", p.display().to_string()))
    };
    for l in ["l1", "l2", "m"] {
        mkdir(&dir.join(l))?;
    }
    for (l, file) in [("l1", "top"), ("l2", "bottom")] {
        let p = dir.join(l).join(file);
        fs::write(&p, l).map_err(RootfsError::syscall("write", p.display().to_string()))?;
    }
    for pair in PROBE_PAIRS {
        for d in ["u", "w"] {
            let p = dir.join(format!("{d}-{pair}"));
            mkdir(&p)?;
            // As the strategies do: the top upper/work dirs are the container root's.
            std::os::unix::fs::chown(&p, Some(PROBE_RANGE.base), Some(PROBE_RANGE.base))
                .map_err(RootfsError::syscall("chown", p.display().to_string()))?;
        }
    }
    let sys = KernelSys::new();
    let mut f = KernelFeatures {
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        ..Default::default()
    };
    let mut notes = Vec::new();

    match sys.fsopen("overlay") {
        Ok(_) => {
            f.mount_api = true;
            f.overlay = true;
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            f.mount_api = true;
            notes.push(note("fsopen(overlay)", e));
        }
        Err(e) => notes.push(note("fsopen(overlay)", e)),
    }
    if !f.overlay {
        f.notes = notes;
        return Ok(f);
    }
    let open_dir = |at: BorrowedFd<'_>, p: &Path| -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            at,
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };
    let pair = |name: &str| (dir.join(format!("u-{name}")), dir.join(format!("w-{name}")));

    // Idmapped mounts: a clone of the probe dir idmapped to a throwaway namespace.
    let ns = userns::UserNamespace::for_range(PROBE_RANGE)
        .map_err(|e| RootfsError::Probe(format!("creating a user namespace: {e}")))?;
    let idmapped = || {
        sys.clone_tree(dir, false).and_then(|t| {
            sys.setattr(
                t.as_fd(),
                MountAttrFlags::MOUNT_ATTR_RDONLY,
                Some(ns.fd()),
                false,
            )
            .map(|_| t)
        })
    };
    let detached = match idmapped() {
        Ok(t) => {
            f.idmapped_mounts = true;
            Some(t)
        }
        Err(e) => {
            notes.push(note("idmapped open_tree+mount_setattr", e));
            None
        }
    };
    // The layers as the path constructions see them: through the idmapped
    // clone attached once (at `m`), or the probe directory itself when
    // idmapped mounts are missing (what `plain` uses).
    let attached = match &detached {
        Some(_) => match idmapped().and_then(|t| sys.attach(t.as_fd(), &dir.join("m"))) {
            Ok(()) => Some(Attached {
                sys: &sys,
                path: dir.join("m"),
            }),
            Err(e) => {
                notes.push(note("attaching the idmapped clone", e));
                None
            }
        },
        None => None,
    };
    let layers_at = match (&detached, &attached) {
        (Some(_), Some(a)) => a.path.clone(),
        (Some(_), None) => {
            f.notes = notes;
            return Ok(f);
        }
        (None, _) => dir.to_path_buf(),
    };

    // Legacy mount(2) with lowerdir= relative to the layers' directory.
    let (u, w) = pair("legacy");
    let target = dir.join("merged");
    mkdir(&target)?;
    let data = format!(
        "lowerdir=l1:l2,upperdir={},workdir={}",
        u.display(),
        w.display()
    );
    match sys.mount_overlay_in(&layers_at, &target, &data, MountFlags::empty()) {
        Ok(()) => {
            let mounted = Attached {
                sys: &sys,
                path: target.clone(),
            };
            let view = open_dir(rustix::fs::CWD, &target).and_then(|m| merged_view(m.as_fd()));
            drop(mounted);
            match view {
                Ok(()) => f.legacy_lowerdir = true,
                Err(e) => notes.push(note("legacy lowerdir= overlay view", e)),
            }
        }
        Err(e) => notes.push(note("legacy mount overlay lowerdir=", e)),
    }

    // lowerdir+ as path strings.
    let (u, w) = pair("plus");
    let r = overlay_to_the_end(&sys, |fs| {
        for l in ["l1", "l2"] {
            sys.fsconfig_string(fs, "lowerdir+", layers_at.join(l).as_os_str())?;
        }
        sys.fsconfig_string(fs, "upperdir", u.as_os_str())?;
        sys.fsconfig_string(fs, "workdir", w.as_os_str())
    });
    match r {
        Ok(()) => f.lowerdir_plus = true,
        Err(e) => notes.push(note("overlay with lowerdir+ path strings", e)),
    }

    // lowerdir+ as fds of directories in our mount namespace (the layers
    // through the attached clone).
    let layer_fds = |at: BorrowedFd<'_>| -> std::io::Result<Vec<OwnedFd>> {
        ["l1", "l2"]
            .iter()
            .map(|l| open_dir(at, Path::new(l)))
            .collect()
    };
    let (u, w) = pair("fds");
    let r = open_dir(rustix::fs::CWD, &layers_at).and_then(|at| {
        let fds = layer_fds(at.as_fd())?;
        overlay_to_the_end(&sys, |fs| {
            for fd in &fds {
                sys.fsconfig_fd(fs, "lowerdir+", fd.as_fd())?;
            }
            sys.fsconfig_string(fs, "upperdir", u.as_os_str())?;
            sys.fsconfig_string(fs, "workdir", w.as_os_str())
        })
    });
    match r {
        Ok(()) => f.layer_fds = true,
        Err(e) => notes.push(note("overlay with lowerdir+ fds", e)),
    }

    // upperdir/workdir as fds too.
    if f.layer_fds {
        let (u, w) = pair("upperfds");
        let r = open_dir(rustix::fs::CWD, &layers_at).and_then(|at| {
            let fds = layer_fds(at.as_fd())?;
            let u = open_dir(rustix::fs::CWD, &u)?;
            let w = open_dir(rustix::fs::CWD, &w)?;
            overlay_to_the_end(&sys, |fs| {
                for fd in &fds {
                    sys.fsconfig_fd(fs, "lowerdir+", fd.as_fd())?;
                }
                sys.fsconfig_fd(fs, "upperdir", u.as_fd())?;
                sys.fsconfig_fd(fs, "workdir", w.as_fd())
            })
        });
        match r {
            Ok(()) => f.upper_fds = true,
            Err(e) => notes.push(note("overlay with upperdir/workdir fds", e)),
        }
    }
    drop(attached);

    // Layers as fds of the detached idmapped tree (never attached).
    if let (Some(tree), true) = (&detached, f.layer_fds) {
        let (u, w) = pair("detached");
        let r = layer_fds(tree.as_fd()).and_then(|fds| {
            let upper = match f.upper_fds {
                true => Some((
                    open_dir(rustix::fs::CWD, &u)?,
                    open_dir(rustix::fs::CWD, &w)?,
                )),
                false => None,
            };
            overlay_to_the_end(&sys, |fs| {
                for fd in &fds {
                    sys.fsconfig_fd(fs, "lowerdir+", fd.as_fd())?;
                }
                match &upper {
                    Some((u, w)) => {
                        sys.fsconfig_fd(fs, "upperdir", u.as_fd())?;
                        sys.fsconfig_fd(fs, "workdir", w.as_fd())
                    }
                    None => {
                        sys.fsconfig_string(fs, "upperdir", u.as_os_str())?;
                        sys.fsconfig_string(fs, "workdir", w.as_os_str())
                    }
                }
            })
        });
        match r {
            Ok(()) => f.detached_layer_fds = true,
            Err(e) => notes.push(note("overlay from a detached idmapped tree", e)),
        }
    }
    f.notes = notes;
    Ok(f)
}

/// An overlay configured by `configure`, created, mounted (detached, gone
/// when this returns) and its merged view read: the whole construction.
fn overlay_to_the_end(
    sys: &KernelSys,
    configure: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let fs = sys.fsopen("overlay")?;
    let with_log = |e: std::io::Error| {
        let log = kernel_log(fs.as_fd());
        if log.is_empty() {
            e
        } else {
            std::io::Error::new(e.kind(), format!("{e} (kernel: {log})"))
        }
    };
    configure(fs.as_fd()).map_err(with_log)?;
    sys.fsconfig_create(fs.as_fd()).map_err(with_log)?;
    let mnt = sys.fsmount(fs.as_fd(), MountAttrFlags::empty())?;
    merged_view(mnt.as_fd())
}

/// The overlay shows both layers' files.
fn merged_view(mnt: BorrowedFd<'_>) -> std::io::Result<()> {
    for file in ["top", "bottom"] {
        rustix::fs::statat(mnt, file, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("the merged view lacks the layer file {file:?}: {e}"),
            )
        })?;
    }
    Ok(())
}

/// What the filesystem logged into its context.
fn kernel_log(fs: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
    }
    out.join("; ")
}

fn note(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// Bumped whenever the probe decides differently, so that a cached result of
/// an older probe is not reused.
const PROBE_VERSION: u32 = 2;

/// Probes once per boot: the result is cached in `cache` (JSON, keyed by
/// the boot id) and reused while the machine has not rebooted.
pub fn probe_cached(scratch_dir: &Path, cache: &Path) -> Result<KernelFeatures, RootfsError> {
    #[derive(Serialize, Deserialize)]
    struct Cached {
        boot_id: String,
        /// Results of another probe (an older shim's) are not reused.
        #[serde(default)]
        probe_version: u32,
        features: KernelFeatures,
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if let Ok(text) = fs::read_to_string(cache) {
        match serde_json::from_str::<Cached>(&text) {
            Ok(c)
                if c.boot_id == boot_id
                    && !boot_id.is_empty()
                    && c.probe_version == PROBE_VERSION =>
            {
                return Ok(c.features)
            }
            Ok(_) => {}
            Err(e) => log::warn!("ignoring unreadable probe cache {}: {e}", cache.display()),
        }
    }
    let features = probe(scratch_dir)?;
    let text = serde_json::to_string_pretty(&Cached {
        boot_id,
        probe_version: PROBE_VERSION,
        features: features.clone(),
    })
    .map_err(|e| RootfsError::Probe(format!("serialising the probe result: {e}")))?;
    let tmp = cache.with_extension(format!("tmp.{}", std::process::id()));
    let written = cache
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|_| {
            // Root's only, like the shim's other state files.
            use std::io::Write;
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())
        })
        .and_then(|_| fs::rename(&tmp, cache));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        log::warn!(
            "could not cache the kernel probe in {}: {e}",
            cache.display()
        );
    }
    Ok(features)
}

/// Creates a fresh private directory `<parent>/idshift-<tag>-<random>`.
pub(crate) fn tempdir_in(parent: &Path, tag: &str) -> Result<std::path::PathBuf, RootfsError> {
    fs::create_dir_all(parent)
        .map_err(RootfsError::syscall("mkdir", parent.display().to_string()))?;
    let mut last = None;
    for _ in 0..16 {
        let name = format!("idshift-{tag}-{:016x}", random_u64());
        let path = parent.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(RootfsError::syscall("chmod", path.display().to_string()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(RootfsError::syscall("mkdir", path.display().to_string())(e)),
        }
    }
    Err(RootfsError::syscall("mkdir", parent.display().to_string())(
        last.unwrap_or_else(|| std::io::Error::other("no unique name")),
    ))
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Fall back to time and pid; uniqueness is still checked by mkdir.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(buf)
}
