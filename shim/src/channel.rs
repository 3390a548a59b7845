//! The channel between the shim and a container's first process (or an exec
//! helper): length-prefixed JSON frames over a unix stream socket, with file
//! descriptors passed alongside (SCM_RIGHTS).

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use oci_spec::runtime::{LinuxSeccomp, Process, Spec};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The largest frame accepted (a spec is a few KiB; this bounds a broken peer).
const MAX_FRAME: u32 = 16 << 20;

/// The most file descriptors one message carries (user namespace, rootfs
/// and the idmapped mounts of a container).
pub const MAX_FDS: usize = 64;

/// What the shim tells the first process of a container, or an exec helper.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// Set up a new container (fds: the user namespace, the idmapped bind
    /// mounts). Its rootfs follows in `Rootfs`.
    Container(Box<ContainerInit>),
    /// A container's detached rootfs (fd), sent once the shim has built it,
    /// while the init makes its namespaces: stage 2 waits for it before it
    /// mounts anything.
    Rootfs,
    /// Join the container of `pid` and run `process` in it, under the
    /// container's seccomp profile.
    Exec {
        pid: i32,
        process: Box<Process>,
        #[serde(default)]
        seccomp: Option<Box<LinuxSeccomp>>,
    },
    /// Before the set-up: move yourself into the cgroup by writing "0" to
    /// each of these v1 `tasks` files (`Cgroup::self_join_files`).
    JoinCgroup { tasks: Vec<std::path::PathBuf> },
    /// Exec the workload now.
    Start,
    /// The shim ran the prestart and createRuntime hooks.
    HooksDone,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerInit {
    pub spec: Spec,
    /// Where the rootfs is attached inside the container's mount namespace.
    pub rootfs_target: PathBuf,
    /// Whether fds[0] is a user namespace to join (false: the `plain`
    /// strategy, no user namespace).
    pub userns: bool,
    /// The indices (in `spec.mounts`) of the idmapped bind mounts; their
    /// detached mounts follow the user namespace's fd, in this order.
    pub idmapped_mounts: Vec<usize>,
    /// The container's cgroup directories, for its `cgroup` mounts.
    pub cgroups: crate::mounts::CgroupView,
    /// TEST-ONLY (`IDSHIFT_TEST_FAIL=mounts`, see `faultpoint`): fail after
    /// the spec's mounts, before `pivot_root`.
    #[serde(default)]
    pub fail_after_mounts: bool,
    /// The container's state (status and pid filled in by each hook point).
    #[serde(default)]
    pub state: crate::hooks::State,
}

/// What the container's process reports.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// The host pid of the process that will exec the workload.
    Pid(i32),
    /// Mounts made, before pivot_root: the shim runs the prestart and
    /// createRuntime hooks, then answers `HooksDone`.
    RunHooks,
    /// Set up and waiting for `Start` (fd: the pty master with a terminal),
    /// with the monotonic clock (ns) at each step of the set-up, for the
    /// shim's debug log (empty where the clock is not the shim's: a new time
    /// namespace).
    Ready {
        #[serde(default)]
        marks: Vec<(String, u64)>,
    },
    /// Set-up or exec failed.
    Error(String),
}

pub struct Channel {
    sock: UnixStream,
}

impl Channel {
    pub fn pair() -> io::Result<(Channel, UnixStream)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel { sock: a }, b))
    }

    pub fn from_stream(sock: UnixStream) -> Channel {
        Channel { sock }
    }

    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| l <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("message too large"))?;
        let header = len.to_le_bytes();
        let iov = [IoSlice::new(&header), IoSlice::new(&body)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        let mut sent = sendmsg::<()>(self.sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
            .map_err(io::Error::from)?;
        // A stream socket may take part of it; the fds went with the first byte.
        let total = header.len() + body.len();
        let all: Vec<u8> = header.iter().chain(body.iter()).copied().collect();
        while sent < total {
            let n = nix::unistd::write(&self.sock, &all[sent..]).map_err(io::Error::from)?;
            sent += n;
        }
        Ok(())
    }

    /// Receives one frame; `Ok(None)` when the peer closed the channel.
    pub fn recv<T: DeserializeOwned>(&mut self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut header = [0u8; 4];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < header.len() {
            let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut header[got..])];
            let msg = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        fds.push(owned(fd));
                    }
                }
            }
            if msg.bytes == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated frame",
                    ))
                };
            }
            got += msg.bytes;
        }
        let len = u32::from_le_bytes(header);
        if len > MAX_FRAME {
            return Err(io::Error::other(format!(
                "frame of {len} bytes is too large"
            )));
        }
        let mut body = vec![0u8; len as usize];
        self.sock.read_exact(&mut body)?;
        let msg = serde_json::from_slice(&body).map_err(io::Error::other)?;
        Ok(Some((msg, fds)))
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    crate::sys::own_received_fd(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fds_round_trip() {
        let (a, b) = Channel::pair().expect("pair");
        let mut b = Channel::from_stream(b);
        let f = std::fs::File::open("/etc/hostname").expect("open");
        a.send(&FromInit::Pid(42), &[f.as_raw_fd()]).expect("send");
        a.send(&FromInit::Error("x".repeat(100_000)), &[])
            .expect("send big");
        let (m, fds) = b.recv::<FromInit>().expect("recv").expect("frame");
        assert!(matches!(m, FromInit::Pid(42)));
        assert_eq!(fds.len(), 1);
        let (m, fds) = b.recv::<FromInit>().expect("recv").expect("frame");
        assert!(matches!(m, FromInit::Error(s) if s.len() == 100_000));
        assert!(fds.is_empty());
        drop(a);
        assert!(b.recv::<FromInit>().expect("eof").is_none());
    }
}
