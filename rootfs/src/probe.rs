//! A one-time probe of what the running kernel's mount API accepts, deciding
//! which strategy `auto` means. Decided by trying, not by the kernel version.

use crate::error::RootfsError;
use crate::strategy::Strategy;
use crate::sys::{KernelSys, MountSys};
use rustix::fs::{Mode, OFlags};
use rustix::mount::MountAttrFlags;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
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
        match requested {
            Strategy::Auto if self.idmapped_mounts && self.layer_fds => Ok(Strategy::Fd),
            Strategy::Auto if self.idmapped_mounts => Ok(Strategy::Path),
            Strategy::Auto => unsupported(
                requested,
                "idmapped mounts are not supported here, so containers cannot get a private ID range (configure strategy = \"plain\" to run without one)",
            ),
            Strategy::Plain => Ok(Strategy::Plain),
            s if !self.idmapped_mounts => {
                unsupported(s, "idmapped mounts (Linux 5.12+, on a supporting filesystem) are missing")
            }
            Strategy::Fd if !self.layer_fds => unsupported(
                Strategy::Fd,
                "overlay does not take layers as file descriptors (Linux 6.13+); use \"path\"",
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
        } else {
            "5.19+: legacy lowerdir= with relative paths through an idmapped tree attached once"
        }
    }
}

/// Probes the kernel in a temporary directory under `scratch_dir` (which
/// should be on the filesystem that holds the image layers). Mounts nothing:
/// every mount it makes is detached and gone when its fd closes.
pub fn probe(scratch_dir: &Path) -> Result<KernelFeatures, RootfsError> {
    let dir = tempdir_in(scratch_dir, "probe")?;
    let result = probe_in(&dir);
    if let Err(e) = fs::remove_dir_all(&dir) {
        log::warn!("removing probe directory {}: {e}", dir.display());
    }
    result
}

fn probe_in(dir: &Path) -> Result<KernelFeatures, RootfsError> {
    for sub in ["l1", "l2", "u", "w"] {
        fs::create_dir(dir.join(sub)).map_err(RootfsError::syscall(
            "mkdir",
            dir.join(sub).display().to_string(),
        ))?;
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
    let open_dir = |p: &Path| -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };

    // Idmapped mounts: a clone of the probe dir idmapped to a throwaway namespace.
    let ns = userns::UserNamespace::for_range(userns::IdRange {
        base: 0x7000_0000,
        size: 65536,
    })
    .map_err(|e| RootfsError::Probe(format!("creating a user namespace: {e}")))?;
    let tree = match sys.clone_tree(dir, false).and_then(|t| {
        sys.setattr(
            t.as_fd(),
            MountAttrFlags::MOUNT_ATTR_RDONLY,
            Some(ns.fd()),
            false,
        )
        .map(|_| t)
    }) {
        Ok(t) => {
            f.idmapped_mounts = true;
            Some(t)
        }
        Err(e) => {
            notes.push(note("idmapped open_tree+mount_setattr", e));
            None
        }
    };

    // lowerdir+ as a string.
    let r = sys
        .fsopen("overlay")
        .and_then(|fs| sys.fsconfig_string(fs.as_fd(), "lowerdir+", dir.join("l1").as_os_str()));
    match r {
        Ok(()) => f.lowerdir_plus = true,
        Err(e) => notes.push(note("fsconfig lowerdir+ (string)", e)),
    }

    // lowerdir+ as an fd of a directory in our mount namespace.
    let r = sys.fsopen("overlay").and_then(|fs| {
        let l1 = open_dir(&dir.join("l1"))?;
        sys.fsconfig_fd(fs.as_fd(), "lowerdir+", l1.as_fd())
    });
    match r {
        Ok(()) => f.layer_fds = true,
        Err(e) => notes.push(note("fsconfig lowerdir+ (fd)", e)),
    }

    // upperdir/workdir as fds, with a writable overlay created.
    if f.layer_fds {
        let r = sys.fsopen("overlay").and_then(|fs| {
            let l1 = open_dir(&dir.join("l1"))?;
            let u = open_dir(&dir.join("u"))?;
            let w = open_dir(&dir.join("w"))?;
            sys.fsconfig_fd(fs.as_fd(), "lowerdir+", l1.as_fd())?;
            sys.fsconfig_fd(fs.as_fd(), "upperdir", u.as_fd())?;
            sys.fsconfig_fd(fs.as_fd(), "workdir", w.as_fd())?;
            sys.fsconfig_create(fs.as_fd())
        });
        match r {
            Ok(()) => f.upper_fds = true,
            Err(e) => notes.push(note("fsconfig upperdir/workdir (fd)", e)),
        }
    }

    // Layers as fds of the detached idmapped tree.
    if let (Some(tree), true) = (&tree, f.layer_fds) {
        let r = sys.fsopen("overlay").and_then(|fs| {
            for l in ["l1", "l2"] {
                let fd = rustix::fs::openat(
                    tree,
                    l,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                sys.fsconfig_fd(fs.as_fd(), "lowerdir+", fd.as_fd())?;
            }
            sys.fsconfig_create(fs.as_fd())?;
            sys.fsmount(fs.as_fd(), MountAttrFlags::empty()).map(drop)
        });
        match r {
            Ok(()) => f.detached_layer_fds = true,
            Err(e) => notes.push(note("overlay from a detached idmapped tree", e)),
        }
    }
    f.notes = notes;
    Ok(f)
}

fn note(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// Probes once per boot: the result is cached in `cache` (JSON, keyed by
/// the boot id) and reused while the machine has not rebooted.
pub fn probe_cached(scratch_dir: &Path, cache: &Path) -> Result<KernelFeatures, RootfsError> {
    #[derive(Serialize, Deserialize)]
    struct Cached {
        boot_id: String,
        features: KernelFeatures,
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if let Ok(text) = fs::read_to_string(cache) {
        match serde_json::from_str::<Cached>(&text) {
            Ok(c) if c.boot_id == boot_id && !boot_id.is_empty() => return Ok(c.features),
            Ok(_) => {}
            Err(e) => log::warn!("ignoring unreadable probe cache {}: {e}", cache.display()),
        }
    }
    let features = probe(scratch_dir)?;
    let text = serde_json::to_string_pretty(&Cached {
        boot_id,
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
