//! Creating, opening and joining user namespaces.

use crate::idmap::{map_text, validate_mappings, IdKind, IdMap, IdRange, MappingError};
use crate::sys;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("invalid ID mappings: {0}")]
    Mapping(#[from] MappingError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating a user namespace: {0}")]
    Create(std::io::Error),
    #[error("{path} is not a user namespace")]
    NotUserNamespace { path: PathBuf },
    #[error("{path} is not a namespace file (e.g. /proc/PID/ns/net or a bind mount of one)")]
    NotANamespace { path: PathBuf },
    #[error("{path} is a {found} namespace, not a {wanted} namespace")]
    WrongNamespaceType {
        path: PathBuf,
        found: &'static str,
        wanted: &'static str,
    },
}

/// The name of a `CLONE_NEW*` namespace type, as in `/proc/PID/ns/` and
/// OCI's `linux.namespaces[].type`.
pub fn namespace_name(clone_flag: i32) -> &'static str {
    match clone_flag {
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "network",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}

/// Opens the namespace file at `path` and checks that it is a namespace of
/// type `clone_flag` (`CLONE_NEWNET`...), as `setns` would need.
pub fn open_namespace(path: &Path, clone_flag: i32) -> Result<OwnedFd, NsError> {
    let fd = open_cloexec(path)?;
    match sys::ns_type(&fd) {
        Ok(t) if t == clone_flag => Ok(fd),
        Ok(t) => Err(NsError::WrongNamespaceType {
            path: path.to_path_buf(),
            found: namespace_name(t),
            wanted: namespace_name(clone_flag),
        }),
        Err(_) => Err(NsError::NotANamespace {
            path: path.to_path_buf(),
        }),
    }
}

/// An owned fd of a user namespace.
#[derive(Debug)]
pub struct UserNamespace {
    fd: OwnedFd,
}

impl UserNamespace {
    /// Creates a user namespace with these uid and gid maps (validated first).
    /// A child process unshares it and exits; we write its maps and keep an
    /// fd of it, then reap the child, on every path (`sys::NsChild`).
    pub fn create(uid_maps: &[IdMap], gid_maps: &[IdMap]) -> Result<Self, NsError> {
        Self::create_as(uid_maps, gid_maps, None)
    }

    /// [`create`](Self::create), the namespace owned by the host IDs its
    /// container ID 0 maps to (as containerd 2.3 does for pods): per-user
    /// kernel limits (inotify instances, user namespaces, ...) of the
    /// processes inside count against that host user, not against host
    /// root. Host root keeps every capability over it. Without a mapping
    /// of container ID 0, as [`create`](Self::create).
    pub fn create_owned(uid_maps: &[IdMap], gid_maps: &[IdMap]) -> Result<Self, NsError> {
        let root = |maps: &[IdMap]| maps.iter().find(|m| m.container_id == 0).map(|m| m.host_id);
        let owner = root(uid_maps).zip(root(gid_maps));
        Self::create_as(uid_maps, gid_maps, owner)
    }

    fn create_as(
        uid_maps: &[IdMap],
        gid_maps: &[IdMap],
        owner: Option<(u32, u32)>,
    ) -> Result<Self, NsError> {
        validate_mappings(IdKind::Uid, uid_maps)?;
        validate_mappings(IdKind::Gid, gid_maps)?;
        let child = sys::NsChild::spawn(owner).map_err(NsError::Create)?;
        let proc_dir = PathBuf::from(format!("/proc/{}", child.pid()));
        for (file, maps) in [("uid_map", uid_maps), ("gid_map", gid_maps)] {
            let path = proc_dir.join(file);
            let text = map_text(maps);
            let io = |source| NsError::Io {
                op: "writing",
                path: path.clone(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io)?;
            // The kernel takes the whole map in exactly one write.
            let n = f.write(text.as_bytes()).map_err(io)?;
            if n != text.len() {
                return Err(io(std::io::Error::other(format!(
                    "short write ({n} of {} bytes)",
                    text.len()
                ))));
            }
        }
        let ns_path = proc_dir.join("ns/user");
        let fd = open_cloexec(&ns_path)?;
        drop(child);
        Ok(UserNamespace { fd })
    }

    /// The whole range mapped at container ID 0, for uids and gids alike,
    /// owned by the range's first ID ([`create_owned`](Self::create_owned)).
    pub fn for_range(range: IdRange) -> Result<Self, NsError> {
        let map = [range.to_map()];
        Self::create_owned(&map, &map)
    }

    /// The namespace's owner (the euid of its creator), as a host uid.
    pub fn owner_uid(&self) -> Result<u32, NsError> {
        sys::ns_owner_uid(&self.fd).map_err(|source| NsError::Io {
            op: "reading the owner of",
            path: PathBuf::from("a user namespace"),
            source,
        })
    }

    /// Opens an existing user namespace by path (`/proc/PID/ns/user`, or a
    /// bind-mounted nsfs file) and checks that it is one.
    pub fn open(path: &Path) -> Result<Self, NsError> {
        let fd = open_cloexec(path)?;
        match sys::ns_type(&fd) {
            Ok(t) if t == libc::CLONE_NEWUSER => Ok(UserNamespace { fd }),
            _ => Err(NsError::NotUserNamespace {
                path: path.to_path_buf(),
            }),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn try_clone(&self) -> Result<Self, NsError> {
        Ok(UserNamespace {
            fd: self.fd.try_clone().map_err(|source| NsError::Io {
                op: "duplicating the fd of",
                path: "a user namespace".into(),
                source,
            })?,
        })
    }
}

impl AsFd for UserNamespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_cloexec(path: &Path) -> Result<OwnedFd, NsError> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| NsError::Io {
        op: "opening",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Makes `cmd` join `ns` between fork and exec and, with `ids`, become that
/// (uid, gid) of the namespace, with no supplementary groups.
///
/// Without `ids` the child keeps its host IDs, which `ns` does not map: the
/// capabilities that joining gives are then lost at `execve`. To run a
/// program as the namespace's root, pass `Some((0, 0))`.
pub fn join_before_exec(
    cmd: &mut std::process::Command,
    ns: &UserNamespace,
    ids: Option<(u32, u32)>,
) -> Result<(), NsError> {
    let fd = ns.try_clone()?.into_fd();
    sys::pre_exec(cmd, move || sys::setns_user(&fd, ids));
    Ok(())
}
