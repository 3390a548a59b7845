//! The raw syscalls of this crate: the only `unsafe` in it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `ioctl(NS_GET_NSTYPE)`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The `CLONE_NEW*` type of the namespace behind `fd`.
pub(crate) fn ns_type(fd: &OwnedFd) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which is
    // open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `ioctl(NS_GET_OWNER_UID)`: `_IO(0xb7, 0x4)`.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The owner of the user namespace behind `fd`, in the caller's IDs.
pub(crate) fn ns_owner_uid(fd: &OwnedFd) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer, which points
    // to a live local of that type; the fd is open for the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NS_GET_OWNER_UID as _,
            &mut uid as *mut libc::uid_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(uid)
    }
}

/// `setns(fd, CLONE_NEWUSER)`, then, with `ids`, `setgroups(0)`,
/// `setresgid` and `setresuid` to those IDs of the namespace. For a
/// `pre_exec` hook: raw, async-signal-safe syscalls only.
pub(crate) fn setns_user(fd: &OwnedFd, ids: Option<(u32, u32)>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: raw syscalls on an fd the caller keeps open and on plain
    // integers; setgroups gets a null list of length 0.
    unsafe {
        check(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER))?;
        if let Some((uid, gid)) = ids {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
    }
    Ok(())
}

/// Makes `cmd` call `hook` in the child between fork and exec.
pub(crate) fn pre_exec<F>(cmd: &mut std::process::Command, hook: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: every hook this crate installs only issues raw, async-signal-safe
    // syscalls (setns) on fds it owns; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A child process that sits in a new user namespace until dropped. Dropping
/// it kills and reaps it (by its pid only: never another child).
pub(crate) struct NsChild {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
}

impl NsChild {
    /// Forks a child that unshares a user namespace and then blocks. Returns
    /// once the namespace exists. With `owner` (uid, gid), the child takes
    /// those as its effective IDs first: the namespace's owner is its
    /// creator's euid, and per-user kernel limits are counted against it.
    pub(crate) fn spawn(owner: Option<(u32, u32)>) -> io::Result<NsChild> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let (ready_rd, ready_wr) = pipe_with(PipeFlags::CLOEXEC)?;
        let (release_rd, release_wr) = pipe_with(PipeFlags::CLOEXEC)?;
        let release_wr_raw = release_wr.as_raw_fd();
        // SAFETY: the child only issues async-signal-safe raw syscalls
        // (close, setresgid, setresuid, unshare, write, read, _exit) on fds it inherited, so it cannot
        // block on a lock held by another thread of the parent at fork time.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; the buffers are on this (copied) stack.
            unsafe {
                libc::close(release_wr_raw);
                let mut err: i32 = 0;
                if let Some((uid, gid)) = owner {
                    // Raw syscalls: this process's own credentials only
                    // (glibc's wrappers would synchronise threads).
                    let keep = libc::c_long::from(-1i32);
                    if libc::syscall(libc::SYS_setresgid, keep, libc::c_long::from(gid), keep) != 0
                        || libc::syscall(libc::SYS_setresuid, keep, libc::c_long::from(uid), keep)
                            != 0
                    {
                        err = *libc::__errno_location();
                    }
                }
                if err == 0 && libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    err = *libc::__errno_location();
                }
                let bytes = err.to_ne_bytes();
                libc::write(ready_wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                let mut b = [0u8; 1];
                // Blocks until the parent closes (or dies with) the write end.
                while libc::read(release_rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::_exit(0);
            }
        }
        drop(ready_wr);
        drop(release_rd);
        let child = NsChild {
            pid,
            release: Some(release_wr),
        };
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            match rustix::io::read(&ready_rd, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if got != buf.len() {
            return Err(io::Error::other(
                "the user namespace helper process died before reporting",
            ));
        }
        match i32::from_ne_bytes(buf) {
            0 => Ok(child),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        // Closing the write end lets the child exit; SIGKILL covers a child
        // that is not yet reading.
        self.release.take();
        // SAFETY: signals and reaps our own child by its pid; a null status
        // pointer is allowed. ECHILD (reaped elsewhere) is harmless.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            while libc::waitpid(self.pid, std::ptr::null_mut(), libc::__WALL) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
    }
}
