//! The shim's few raw operations that Rust cannot do safely: all its `unsafe`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of an fd the kernel just installed in this process (from
/// SCM_RIGHTS).
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the fd was created for this process by recvmsg and nothing else
    // refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `fork()` in a single-threaded process (the container's init helper, never
/// the multi-threaded shim). Returns the child's pid in the parent and 0 in
/// the child.
pub fn fork_single_threaded() -> io::Result<libc::pid_t> {
    // SAFETY: only called from the init helper, a freshly exec'd process that
    // has started no thread, so the child inherits a consistent address space.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Registers `hook` to run in the child between fork and exec.
pub fn pre_exec<F>(cmd: &mut std::process::Command, hook: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: every hook the shim installs only issues async-signal-safe raw
    // syscalls (dup2, close, setsid) on integers and fds it owns.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// `dup2(old, new)` without CLOEXEC, for a `pre_exec` hook.
pub fn dup2_raw(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: a raw syscall on integers.
    if unsafe { libc::dup2(old, new) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(fd, TIOCSCTTY, 0)`: makes the terminal the controlling one.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument and only acts on `fd`.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `setdomainname(name)` (in the container's own UTS namespace).
pub fn set_domainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s live bytes, which the
    // kernel only reads.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `personality(persona)`.
pub fn set_personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: personality takes an integer and only changes this process's
    // execution domain; -1 signals an error.
    if unsafe { libc::personality(persona) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level)`: this process.
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_SHIFT: u32 = 13;
    let prio = libc::c_long::from((class << IOPRIO_CLASS_SHIFT) | level);
    // SAFETY: a raw syscall on integers acting on the calling process.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel's clock ticks per second (`/proc/<pid>/stat` times), 100 if
/// sysconf does not say.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the one clock the shim and the processes
/// it starts share (outside a new time namespace), for the create path's
/// per-phase timings.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Makes every thread allocate from glibc's main arena: by default each
/// thread that allocates gets an arena of its own (up to 8 per core), whose
/// touched pages stay resident for the shim's life.
pub fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; called at start-up,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
