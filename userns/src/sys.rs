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

/// A child that made a user namespace and exited, not yet reaped: its
/// credentials, and so the namespace, live until then, so the parent can
/// still write the maps through its `/proc` entries and open its `ns/user`.
/// Dropping it reaps it (by its pid only: never another child).
///
/// It is cloned with `CLONE_VM | CLONE_VFORK`: it runs on a small stack of
/// its own in the parent's memory (no page tables copied, no copy-on-write
/// afterwards) while the parent waits, and it exits before the parent goes
/// on. It exits with no signal to the parent (a "clone" child), so a
/// reaper's `waitpid(-1)` (without `__WALL`) never takes it first.
pub(crate) struct NsChild {
    pid: libc::pid_t,
}

/// What the child reads and writes, in the parent's memory.
struct ChildArgs {
    owner: Option<(u32, u32)>,
    errno: i32,
}

/// The child: only raw syscalls, on its own stack, touching nothing of the
/// parent's but its `ChildArgs`.
extern "C" fn ns_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent passed to `clone`, alive
    // and untouched by the parent until this child has exited (CLONE_VFORK).
    let args = unsafe { &mut *arg.cast::<ChildArgs>() };
    // Raw syscalls: this process's own credentials only (glibc's wrappers
    // would synchronise the threads of the parent, whose memory this is).
    let keep = libc::c_long::from(-1i32);
    let fail = |args: &mut ChildArgs| {
        args.errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        1
    };
    if let Some((uid, gid)) = args.owner {
        // SAFETY: setresgid/setresuid change only this task's credentials.
        let set = unsafe {
            libc::syscall(libc::SYS_setresgid, keep, libc::c_long::from(gid), keep) == 0
                && libc::syscall(libc::SYS_setresuid, keep, libc::c_long::from(uid), keep) == 0
        };
        if !set {
            return fail(args);
        }
    }
    // SAFETY: unshare affects only this task.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return fail(args);
    }
    0
}

impl NsChild {
    /// Clones a child that takes `owner` (uid, gid) as its effective IDs
    /// (the namespace's owner is its creator's euid, and per-user kernel
    /// limits are counted against it), unshares a user namespace and
    /// exits. Returns once it has exited.
    pub(crate) fn spawn(owner: Option<(u32, u32)>) -> io::Result<NsChild> {
        const STACK: usize = 64 * 1024;
        let mut stack = vec![0u8; STACK];
        // The stack grows down from its 16-byte aligned top.
        let top = stack.as_mut_ptr().wrapping_add(STACK);
        let top = top.wrapping_sub(top as usize % 16);
        let mut args = ChildArgs { owner, errno: 0 };
        // SAFETY: the child runs `ns_child` on `stack`, which outlives it
        // (CLONE_VFORK: this call returns once the child has exited), and
        // touches only `args`. No exit signal: see the type's comment.
        let pid = unsafe {
            libc::clone(
                ns_child,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK,
                std::ptr::addr_of_mut!(args).cast(),
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        let child = NsChild { pid };
        drop(stack);
        match args.errno {
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
        // SAFETY: reaps our own (exited) child by its pid; a null status
        // pointer is allowed. ECHILD (reaped elsewhere) is harmless.
        unsafe {
            while libc::waitpid(self.pid, std::ptr::null_mut(), libc::__WALL) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
    }
}
