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

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER0, 48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// `sched_setattr(0, attr, 0)`: this thread (the init is single-threaded).
pub fn sched_setattr(attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: `attr` is a live, initialised sched_attr whose `size` field
    // names its length; the kernel only reads it.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) } < 0 {
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

// ---------------------------------------------------------------------------
// bpf(2), for cgroup v2 device programs (`cgroup::devices`).

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`'s BPF_CGROUP_DEVICE.
pub const BPF_CGROUP_DEVICE: u32 = 6;

/// `union bpf_attr`, as large as the kernel's of 6.x and zero-filled: the
/// kernel refuses non-zero bytes past the fields it knows.
#[repr(C, align(8))]
struct BpfAttr([u8; 144]);

impl BpfAttr {
    fn new() -> Self {
        BpfAttr([0; 144])
    }
    fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable, zero-initialised buffer of the size
    // passed; every pointer stored in it (by the callers below) points to
    // memory that outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<BpfAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes a new fd the kernel returned.
fn own_new_fd(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("bpf returned no fd"))?;
    // SAFETY: the kernel just installed `fd` for this process; nothing else
    // refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program (`insns`: raw
/// 8-byte instructions). On a verifier refusal the error carries its log.
pub fn bpf_load_device_program(insns: &[u64], name: &str) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = BpfAttr::new();
    attr.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32_at(4, u32::try_from(insns.len()).map_err(io::Error::other)?)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(24, 1)
        .u32_at(28, log.len() as u32)
        .u64_at(32, log.as_mut_ptr() as u64)
        .u32_at(68, BPF_CGROUP_DEVICE);
    for (i, b) in name.bytes().take(15).enumerate() {
        attr.0[48 + i] = b;
    }
    // The verifier gives up with EAGAIN when a signal is pending for the
    // thread (a SIGCHLD of the shim's children, say): tried again, as
    // libbpf does.
    let mut result = bpf(BPF_PROG_LOAD, &mut attr);
    for _ in 1..5 {
        match &result {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                result = bpf(BPF_PROG_LOAD, &mut attr);
            }
            _ => break,
        }
    }
    match result {
        Ok(fd) => own_new_fd(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            if text.trim().is_empty() {
                Err(e)
            } else {
                Err(io::Error::new(
                    e.kind(),
                    format!("{e}; verifier: {}", text.trim()),
                ))
            }
        }
    }
}

/// BPF_PROG_ATTACH of `prog` to the cgroup `cgroup` with `flags`
/// (BPF_F_ALLOW_MULTI = 2, BPF_F_REPLACE = 4 with `replace`).
pub fn bpf_attach(
    cgroup: RawFd,
    prog: RawFd,
    flags: u32,
    replace: Option<RawFd>,
) -> io::Result<()> {
    let mut attr = BpfAttr::new();
    attr.u32_at(0, cgroup as u32)
        .u32_at(4, prog as u32)
        .u32_at(8, BPF_CGROUP_DEVICE)
        .u32_at(12, flags)
        .u32_at(16, replace.map_or(0, |f| f as u32));
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// BPF_PROG_DETACH of `prog` from the cgroup `cgroup`.
pub fn bpf_detach(cgroup: RawFd, prog: RawFd) -> io::Result<()> {
    let mut attr = BpfAttr::new();
    attr.u32_at(0, cgroup as u32)
        .u32_at(4, prog as u32)
        .u32_at(8, BPF_CGROUP_DEVICE);
    bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}

/// BPF_PROG_QUERY: the ids of the device programs attached to the cgroup
/// itself (not inherited), at most 64.
pub fn bpf_query_device_programs(cgroup: RawFd) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = BpfAttr::new();
    attr.u32_at(0, cgroup as u32)
        .u32_at(4, BPF_CGROUP_DEVICE)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let count = (attr.get_u32(24) as usize).min(ids.len());
    ids.truncate(count);
    Ok(ids)
}

/// BPF_PROG_GET_FD_BY_ID.
pub fn bpf_prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = BpfAttr::new();
    attr.u32_at(0, id);
    own_new_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?)
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

/// Gives the heap's free pages back to the kernel (malloc_trim). A Create's
/// temporary buffers (mountinfo, the spec, the set-up message) leave free
/// but touched pages below what stays allocated, resident for the shim's
/// life otherwise (about 90 KiB of a ~260 KiB heap).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the kernel back the main thread's stack pages below the caller's
/// frame. The deepest call chains of a shim run once (start-up, a Create's
/// request and its answer): their pages would stay resident, and private,
/// for the shim's life (about 40 of the 72 KiB touched). Everything below
/// the stack pointer is dead by the ABI; the pages are zero-filled again if
/// a later call goes that deep. Does nothing off the main thread (whose
/// stack is the `[stack]` mapping).
pub fn trim_main_stack() {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some((low, high)) = maps
        .lines()
        .filter(|l| l.ends_with("[stack]"))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        })
        .next()
    else {
        return;
    };
    if !(low..high).contains(&here) {
        return;
    }
    // A page of margin for this function's own calls below its frame
    // (madvise's).
    const PAGE: usize = 4096;
    let end = here.saturating_sub(PAGE) & !(PAGE - 1);
    if end <= low {
        return;
    }
    // SAFETY: [low, end) is the main thread's own stack below the live
    // frames (a page under this one); MADV_DONTNEED on private anonymous
    // memory only drops pages, which read as zero if touched again.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// `fd`, registered with the async runtime's reactor for readability for
/// as long as it is borrowed (must run inside the runtime).
pub fn reactor_readable(
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'_>>> {
    // SAFETY: the borrow keeps the fd open, and the same open file, for
    // the AsyncFd's whole life (it cannot outlive the borrow), as
    // `register_with_interest` requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
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
