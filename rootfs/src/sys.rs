//! The kernel's mount API behind one narrow interface.
//!
//! Everything the rootfs strategies do to the mount table goes through
//! [`MountSys`], so that each call is counted, and so that tests can inject a
//! failure at any step and check that nothing is left behind. [`KernelSys`] is
//! the real kernel; this module holds all of the crate's `unsafe`.

use crate::ops::{Counters, MountOp, MountOps};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, OpenTreeFlags,
    UnmountFlags,
};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The mount syscalls the strategies use. Paths are absolute.
pub trait MountSys {
    /// A snapshot of the calls issued so far.
    fn ops(&self) -> MountOps;
    /// `open_tree(path, OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC [|AT_RECURSIVE])`: a
    /// detached copy of the mount at `path`, never in any mount table.
    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd>;
    /// `mount_setattr(tree, "", AT_EMPTY_PATH [|AT_RECURSIVE], {attrs [|MOUNT_ATTR_IDMAP], userns})`:
    /// sets `attrs` and, with a user namespace, idmaps the (never attached) tree.
    fn setattr(
        &self,
        tree: BorrowedFd<'_>,
        attrs: MountAttrFlags,
        userns: Option<BorrowedFd<'_>>,
        recursive: bool,
    ) -> io::Result<()>;
    /// `fsopen(fstype, FSOPEN_CLOEXEC)`.
    fn fsopen(&self, fstype: &str) -> io::Result<OwnedFd>;
    /// `fsconfig(fs, FSCONFIG_SET_STRING, key, value)`.
    fn fsconfig_string(&self, fs: BorrowedFd<'_>, key: &str, value: &OsStr) -> io::Result<()>;
    /// `fsconfig(fs, FSCONFIG_SET_FLAG, key)`.
    fn fsconfig_flag(&self, fs: BorrowedFd<'_>, key: &str) -> io::Result<()>;
    /// `fsconfig(fs, FSCONFIG_SET_FD, key, fd)`.
    fn fsconfig_fd(&self, fs: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// `fsconfig(fs, FSCONFIG_CMD_CREATE)`.
    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> io::Result<()>;
    /// `fsmount(fs, FSMOUNT_CLOEXEC, attrs)`: a detached mount of the new superblock.
    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: MountAttrFlags) -> io::Result<OwnedFd>;
    /// `move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached mount.
    fn attach(&self, mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn detach(&self, target: &Path) -> io::Result<()>;
    /// Legacy `mount("overlay", target, "overlay", 0, data)` issued with the
    /// working directory set to `cwd`, so that `data` can name the layers by
    /// short relative paths (the whole string must fit in one page).
    fn mount_overlay_in(
        &self,
        cwd: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> io::Result<()>;
}

/// The real kernel, counting every call.
#[derive(Debug, Default)]
pub struct KernelSys {
    counters: Counters,
}

impl KernelSys {
    pub fn new() -> Self {
        Self::default()
    }
}

impl MountSys for KernelSys {
    fn ops(&self) -> MountOps {
        self.counters.snapshot()
    }

    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        self.counters.count(MountOp::OpenTree);
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        Ok(rustix::mount::open_tree(rustix::fs::CWD, path, flags)?)
    }

    fn setattr(
        &self,
        tree: BorrowedFd<'_>,
        attrs: MountAttrFlags,
        userns: Option<BorrowedFd<'_>>,
        recursive: bool,
    ) -> io::Result<()> {
        self.counters.count(MountOp::MountSetattr);
        let mut attr_clr = MountAttrFlags::empty();
        if attrs.intersects(MountAttrFlags::MOUNT_ATTR__ATIME) {
            // Setting an atime mode needs the whole atime field cleared first.
            attr_clr |= MountAttrFlags::MOUNT_ATTR__ATIME;
        }
        mount_setattr(tree, attrs, attr_clr, userns, recursive)
    }

    fn fsopen(&self, fstype: &str) -> io::Result<OwnedFd> {
        self.counters.count(MountOp::Fsopen);
        Ok(rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?)
    }

    fn fsconfig_string(&self, fs: BorrowedFd<'_>, key: &str, value: &OsStr) -> io::Result<()> {
        self.counters.count(MountOp::Fsconfig);
        Ok(rustix::mount::fsconfig_set_string(fs, key, value)?)
    }

    fn fsconfig_flag(&self, fs: BorrowedFd<'_>, key: &str) -> io::Result<()> {
        self.counters.count(MountOp::Fsconfig);
        Ok(rustix::mount::fsconfig_set_flag(fs, key)?)
    }

    fn fsconfig_fd(&self, fs: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.counters.count(MountOp::Fsconfig);
        Ok(rustix::mount::fsconfig_set_fd(fs, key, fd)?)
    }

    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> io::Result<()> {
        self.counters.count(MountOp::Fsconfig);
        Ok(rustix::mount::fsconfig_create(fs)?)
    }

    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: MountAttrFlags) -> io::Result<OwnedFd> {
        self.counters.count(MountOp::Fsmount);
        Ok(rustix::mount::fsmount(
            fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            attrs,
        )?)
    }

    fn attach(&self, mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        self.counters.count(MountOp::MoveMount);
        attach_mount(mnt, target)
    }

    fn detach(&self, target: &Path) -> io::Result<()> {
        self.counters.count(MountOp::Umount);
        Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?)
    }

    fn mount_overlay_in(
        &self,
        cwd: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        self.counters.count(MountOp::Mount);
        mount_overlay_with_cwd(cwd, target, data, flags)
    }
}

/// Attaches a detached mount at `target` (`move_mount` with
/// `MOVE_MOUNT_F_EMPTY_PATH`). Used by whoever finally places the rootfs, e.g.
/// the container's first process inside its own mount namespace.
pub fn attach_mount(mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    Ok(rustix::mount::move_mount(
        mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?)
}

fn cstring(what: &str, s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Runs the legacy overlay mount in a forked child that first changes its
/// working directory, so that the calling (possibly multi-threaded) process
/// never changes its own. The child issues only raw syscalls and reports its
/// errno through a pipe (not its exit status, which a process-wide reaper may
/// collect first).
fn mount_overlay_with_cwd(
    cwd: &Path,
    target: &Path,
    data: &str,
    flags: MountFlags,
) -> io::Result<()> {
    let cwd = cstring("working directory", cwd.as_os_str().as_bytes())?;
    let target = cstring("mount target", target.as_os_str().as_bytes())?;
    let data = cstring("overlay options", data.as_bytes())?;
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // SAFETY: the child only calls async-signal-safe raw syscalls (chdir, mount,
    // write, _exit) on memory allocated before the fork, so it cannot deadlock
    // on a lock another thread of the parent held at fork time.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; every pointer is a live NUL-terminated buffer
        // owned by the parent's (copied) stack frame.
        unsafe {
            let failed = libc::chdir(cwd.as_ptr()) != 0
                || libc::mount(
                    c"overlay".as_ptr(),
                    target.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::c_ulong::from(flags.bits()),
                    data.as_ptr().cast(),
                ) != 0;
            let err: i32 = if failed { *libc::__errno_location() } else { 0 };
            let bytes = err.to_ne_bytes();
            libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut buf = [0u8; 4];
    let n = read_full(&rd, &mut buf);
    // SAFETY: waitpid on the exact pid of our own child; a null status pointer
    // is allowed. ECHILD (already reaped by someone else) is harmless here.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
    }
    match n? {
        4 => match i32::from_ne_bytes(buf) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        },
        _ => Err(io::Error::other(
            "the helper process for the legacy overlay mount died without reporting",
        )),
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::read(fd, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Moves the calling thread (only) into a mount namespace of its own, a copy
/// of the current one made private, so that what it attaches is seen by no
/// other thread or process and disappears with the thread.
pub(crate) fn private_mount_ns_for_this_thread() -> io::Result<()> {
    // SAFETY: only NEWNS (which implies FS: the thread gets its own cwd and
    // root) is unshared, never FILES, so every thread keeps seeing the same
    // file descriptors.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH [| AT_RECURSIVE], {set, clear,
/// idmap into userns})`: the one wrapper of the syscall (rustix has none),
/// for the strategies (through [`MountSys::setattr`]) and for the shim's
/// recursive mount options (`rro`, `rnosuid`, ...), which clear as well as
/// set. Not counted: callers that count mount syscalls go through
/// [`KernelSys`].
pub fn mount_setattr(
    tree: BorrowedFd<'_>,
    set: MountAttrFlags,
    clear: MountAttrFlags,
    userns: Option<BorrowedFd<'_>>,
    recursive: bool,
) -> io::Result<()> {
    let mut attr_set = u64::from(set.bits());
    let mut userns_fd = 0;
    if let Some(ns) = userns {
        attr_set |= libc::MOUNT_ATTR_IDMAP;
        userns_fd = ns.as_raw_fd() as u64;
    }
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: u64::from(clear.bits()),
        propagation: 0,
        userns_fd,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from `attr`, a
    // live, initialised local; the path is a NUL-terminated empty string and
    // `tree` is a valid fd borrowed for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
