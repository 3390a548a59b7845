//! The container's side: `containerd-shim-idshift-v2 init`, started by the
//! shim with the channel at fd 3. A fresh single-threaded process, so it may
//! fork. Stage 1 joins or creates the namespaces and forks; stage 2 (pid 1
//! of a new pid namespace) attaches the rootfs inside its own mount
//! namespace, mounts, pivots, reports Ready, waits for Start and execs. Exec
//! processes take the same path into an existing container.

use crate::channel::{Channel, ContainerInit, FromInit, ToInit};
use crate::sys;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Process};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

type Result<T> = std::result::Result<T, String>;

/// The fd the shim hands the channel on.
pub const CHANNEL_FD: i32 = 3;

/// Entry point; never returns.
pub fn main() -> ! {
    let sock = std::os::unix::net::UnixStream::from(sys::own_received_fd(CHANNEL_FD));
    // The channel must close when the workload execs: that is how the shim
    // learns the exec succeeded.
    let _ = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC);
    let mut ch = Channel::from_stream(sock);
    let result = match ch.recv::<ToInit>() {
        Ok(Some((ToInit::Container(c), fds))) => container(&mut ch, *c, fds),
        Ok(Some((ToInit::Exec { pid, process }, _))) => exec(&mut ch, pid, *process),
        Ok(Some((ToInit::Start, _))) => Err("Start before set-up".into()),
        Ok(None) => std::process::exit(1),
        Err(e) => Err(format!("reading the set-up message: {e}")),
    };
    if let Err(e) = result {
        let _ = ch.send(&FromInit::Error(e), &[]);
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Becomes root of the user namespace just joined, keeping capabilities.
fn become_ns_root() -> Result<()> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid(0): {e}"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid(0): {e}"))
}

fn container(ch: &mut Channel, c: ContainerInit, mut fds: Vec<OwnedFd>) -> Result<()> {
    let linux = c.spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
    {
        return Err("idshift needs a new mount namespace (linux.namespaces has no \"mount\" without a path)".into());
    }
    let want = if c.userns { 2 } else { 1 };
    if fds.len() != want {
        return Err(format!(
            "expected {want} fds from the shim, got {}",
            fds.len()
        ));
    }
    let rootfs_fd = fds.pop().ok_or("no rootfs fd")?;
    let userns_fd = fds.pop();
    // Bind sources are taken with the host's privileges, before the user
    // namespace: its root may not be able to reach them (containerd's own
    // directories, e.g. CRI's /etc/hosts and /dev/shm, are mode 0700).
    let binds = clone_bind_sources(&c.spec.mounts().clone().unwrap_or_default())?;
    // Join namespaces given by path first, with the host's privileges.
    for ns in namespaces
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::User)
    {
        if let Some(p) = ns.path() {
            let f =
                fs::File::open(p).map_err(|e| format!("opening namespace {}: {e}", p.display()))?;
            setns(f.as_fd(), ns_flag(ns.typ()))
                .map_err(|e| format!("joining {:?} namespace {}: {e}", ns.typ(), p.display()))?;
        }
    }
    if let Some(u) = &userns_fd {
        setns(u.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace: {e}"))?;
        become_ns_root()?;
    }
    let mut flags = CloneFlags::empty();
    for ns in namespaces
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::User && n.path().is_none())
    {
        flags |= ns_flag(ns.typ());
    }
    unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    fork_and_report(ch, |ch| stage2(ch, &c, rootfs_fd, binds))
}

/// Detached clones (`open_tree(OPEN_TREE_CLONE)`, recursive for `rbind`) of
/// the sources of the spec's bind mounts, by mount index.
fn clone_bind_sources(mounts: &[Mount]) -> Result<Vec<Option<OwnedFd>>> {
    mounts
        .iter()
        .map(|m| {
            let (flags, _, _) = parse_options(&m.options().clone().unwrap_or_default());
            let is_bind = flags.contains(MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind");
            let source = m.source().clone().unwrap_or_default();
            if !is_bind || !source.is_absolute() {
                return Ok(None);
            }
            let mut of = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if flags.contains(MsFlags::MS_REC) {
                of |= rustix::mount::OpenTreeFlags::AT_RECURSIVE;
            }
            rustix::mount::open_tree(rustix::fs::CWD, &source, of)
                .map(Some)
                .map_err(|e| format!("opening bind mount source {}: {e}", source.display()))
        })
        .collect()
}

/// Forks (the child enters a new pid namespace, if one was unshared, as its
/// pid 1): the parent reports the child's host pid to the shim; the child
/// waits until that report is sent (both write to the one channel, and the
/// shim expects the pid first), then runs `child` and never returns.
fn fork_and_report(ch: &mut Channel, child: impl FnOnce(&mut Channel) -> Result<()>) -> Result<()> {
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        0 => {
            drop(go_w);
            let mut b = [0u8; 1];
            // One byte, or end of file if the parent died: either way go on
            // (a dead parent means the shim gets an error or EOF anyway).
            let _ = rustix::io::read(&go_r, &mut b);
            drop(go_r);
            if let Err(e) = child(ch) {
                let _ = ch.send(&FromInit::Error(e), &[]);
                std::process::exit(127);
            }
            std::process::exit(0)
        }
        pid => {
            drop(go_r);
            let sent = ch
                .send(&FromInit::Pid(pid), &[])
                .map_err(|e| format!("reporting the pid: {e}"));
            let _ = rustix::io::write(&go_w, b"g");
            sent
        }
    }
}

fn stage2(
    ch: &mut Channel,
    c: &ContainerInit,
    rootfs_fd: OwnedFd,
    mut binds: Vec<Option<OwnedFd>>,
) -> Result<()> {
    let spec = &c.spec;
    let target = &c.rootfs_target;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    rootfs::attach_mount(rootfs_fd.as_fd(), target)
        .map_err(|e| format!("attaching the rootfs at {}: {e}", target.display()))?;
    drop(rootfs_fd);
    let mut dev_tmpfs = false;
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_tmpfs = true;
        }
        mount_one(target, m, binds.get_mut(i).and_then(Option::take))?;
    }
    if dev_tmpfs {
        default_devices(target)?;
    }
    chdir(target).map_err(|e| format!("chdir {}: {e}", target.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.masked_paths().clone().unwrap_or_default() {
        mask_path(Path::new(&p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        readonly_path(Path::new(&p))?;
    }
    let new_uts = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none());
    if let (Some(h), true) = (spec.hostname(), new_uts) {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the rootfs read-only: {e}"))?;
    }
    let process = spec.process().clone().ok_or("the spec has no process")?;
    run(ch, &process)
}

/// Ready, wait for Start, then exec `process` (common to containers and execs).
fn run(ch: &mut Channel, process: &Process) -> Result<()> {
    let path = lookup(process)?;
    let master = if process.terminal() == Some(true) {
        Some(setup_terminal()?)
    } else {
        None
    };
    let fds: Vec<i32> = master.iter().map(|m| m.as_raw_fd()).collect();
    ch.send(&FromInit::Ready, &fds)
        .map_err(|e| format!("reporting ready: {e}"))?;
    drop(master);
    match ch.recv::<ToInit>() {
        Ok(Some((ToInit::Start, _))) => {}
        // The shim deleted us before Start.
        Ok(None) => std::process::exit(1),
        Ok(Some(_)) => return Err("unexpected message while waiting for Start".into()),
        Err(e) => return Err(format!("waiting for Start: {e}")),
    }
    finalize(process)?;
    let args: Vec<CString> = process
        .args()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| CString::new(a).map_err(|_| "an argument contains a NUL byte".to_string()))
        .collect::<Result<_>>()?;
    let env: Vec<CString> = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect();
    let path = CString::new(path.into_os_string().into_encoded_bytes())
        .map_err(|_| "the executable path contains a NUL byte".to_string())?;
    let err = nix::unistd::execve(&path, &args, &env).err();
    Err(format!(
        "exec {:?}: {}",
        process
            .args()
            .clone()
            .unwrap_or_default()
            .first()
            .cloned()
            .unwrap_or_default(),
        err.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Finds the executable as execvp would, with the process's PATH.
fn lookup(process: &Process) -> Result<PathBuf> {
    let args = process.args().clone().unwrap_or_default();
    let name = args.first().ok_or("process.args is empty")?;
    let cwd = process.cwd();
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            cwd.join(name)
        };
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("exec: {name:?}: no such executable file"))
        };
    }
    let path_var = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path_var
        .split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| format!("exec: {name:?}: executable file not found in $PATH"))
}

/// Opens a pty in the container's devpts; the slave becomes our controlling
/// terminal and stdio, the master goes to the shim.
fn setup_terminal() -> Result<OwnedFd> {
    use rustix::pty::{openpt, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx for the terminal: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(|e| format!("ptsname: {e}"))?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("opening the pty slave {name:?}: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    sys::set_controlling_tty(slave.as_raw_fd()).map_err(|e| format!("TIOCSCTTY: {e}"))?;
    for fd in 0..3 {
        sys::dup2_raw(slave.as_raw_fd(), fd).map_err(|e| format!("dup2 pty: {e}"))?;
    }
    Ok(master)
}

/// Credentials, capabilities and the rest of the process's own settings.
fn finalize(process: &Process) -> Result<()> {
    for r in process.rlimits().clone().unwrap_or_default() {
        let res = rlimit_resource(&format!("{:?}", r.typ()))
            .ok_or_else(|| format!("unknown rlimit {:?}", r.typ()))?;
        rustix::process::setrlimit(
            res,
            rustix::process::Rlimit {
                current: Some(r.soft()),
                maximum: Some(r.hard()),
            },
        )
        .map_err(|e| format!("setrlimit {:?}: {e}", r.typ()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        // Raising is allowed; lowering needs CAP_SYS_RESOURCE on the host, so a
        // lower value is skipped, as containerd's restrict_oom_score_adj does.
        let current: i32 = fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if adj > current {
            fs::write("/proc/self/oom_score_adj", adj.to_string())
                .map_err(|e| format!("setting oom_score_adj {adj}: {e}"))?;
        }
    }
    let user = process.user();
    let caps = process.capabilities().clone().unwrap_or_default();
    // Bounding set first, while we still hold CAP_SETPCAP.
    if let Some(b) = caps.bounding() {
        for c in caps::all() {
            if !b.iter().any(|x| x.to_string() == c.to_string()) {
                caps::drop(None, caps::CapSet::Bounding, c)
                    .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
            }
        }
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {groups:?}: {e}"))?;
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))?;
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))?;
    let to_set = |set: &Option<oci_spec::runtime::Capabilities>| -> caps::CapsHashSet {
        set.as_ref()
            .map(|s| {
                s.iter()
                    .filter_map(|c| c.to_string().parse::<caps::Capability>().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Each capset must keep effective within permitted, and raising
    // inheritable needs CAP_SETPCAP, so: inheritable, effective, permitted.
    caps::set(None, caps::CapSet::Inheritable, &to_set(caps.inheritable()))
        .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Effective, &to_set(caps.effective()))
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Permitted, &to_set(caps.permitted()))
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    for c in to_set(caps.ambient()) {
        caps::raise(None, caps::CapSet::Ambient, c)
            .map_err(|e| format!("raising ambient {c}: {e}"))?;
    }
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    }
    chdir(process.cwd()).map_err(|e| format!("chdir to cwd {}: {e}", process.cwd().display()))?;
    if let Some(mask) = user.umask() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask & 0o777));
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    // Accepts "RLIMIT_NOFILE" and oci-spec's Debug form "RlimitNofile".
    let upper = name.to_ascii_uppercase().replace('_', "");
    Some(match upper.trim_start_matches("RLIMIT") {
        "CPU" => R::Cpu,
        "FSIZE" => R::Fsize,
        "DATA" => R::Data,
        "STACK" => R::Stack,
        "CORE" => R::Core,
        "RSS" => R::Rss,
        "NPROC" => R::Nproc,
        "NOFILE" => R::Nofile,
        "MEMLOCK" => R::Memlock,
        "AS" => R::As,
        "LOCKS" => R::Locks,
        "SIGPENDING" => R::Sigpending,
        "MSGQUEUE" => R::Msgqueue,
        "NICE" => R::Nice,
        "RTPRIO" => R::Rtprio,
        "RTTIME" => R::Rttime,
        _ => return None,
    })
}

/// `dest` inside `root`, refusing `..` and symlinks that lead outside.
fn inside(root: &Path, dest: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(format!(
                    "mount destination {} contains '..'",
                    dest.display()
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn check_inside(root: &Path, path: &Path, dest: &Path) -> Result<()> {
    let real = fs::canonicalize(path).map_err(|e| format!("resolving {}: {e}", path.display()))?;
    if real.starts_with(root) {
        Ok(())
    } else {
        Err(format!(
            "mount destination {} resolves to {} outside the rootfs",
            dest.display(),
            real.display()
        ))
    }
}

fn parse_options(opts: &[String]) -> (MsFlags, MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
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
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "async" | "atime" | "diratime" | "norelatime" | "defaults" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                let base = match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                propagation = base
                    | if p.starts_with('r') {
                        MsFlags::MS_REC
                    } else {
                        MsFlags::empty()
                    };
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.remove(clear);
        flags.insert(set);
    }
    (flags, propagation, data)
}

/// Does mount `m` under `root`; a bind mount attaches `bind_src` (its
/// source's detached clone) when given.
fn mount_one(root: &Path, m: &Mount, bind_src: Option<OwnedFd>) -> Result<()> {
    let dest = inside(root, m.destination())?;
    let typ = m.typ().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&m.options().clone().unwrap_or_default());
    let data = data.join(",");
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let source = m.source().clone().unwrap_or_default();
    // Create the mount point: a file for a bind of a non-directory.
    let file_target = is_bind
        && match &bind_src {
            Some(fd) => rustix::fs::fstat(fd).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory
            }),
            None => fs::metadata(&source).is_ok_and(|md| !md.is_dir()),
        };
    if file_target {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        if !dest.exists() {
            fs::write(&dest, b"").map_err(|e| format!("creating {}: {e}", dest.display()))?;
        }
    } else {
        fs::create_dir_all(&dest).map_err(|e| format!("mkdir {}: {e}", dest.display()))?;
    }
    check_inside(root, &dest, m.destination())?;
    let data_opt = (!data.is_empty()).then_some(data.as_str());
    if is_bind {
        let rec = flags & MsFlags::MS_REC;
        match bind_src {
            Some(fd) => rootfs::attach_mount(fd.as_fd(), &dest)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            None => mount(
                Some(&source),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            ),
        }
        .map_err(|e| {
            format!(
                "bind mount {} on {}: {e}",
                source.display(),
                m.destination().display()
            )
        })?;
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
                None::<&str>,
            )
            .map_err(|e| {
                format!(
                    "remounting {} with {extra:?}: {e}",
                    m.destination().display()
                )
            })?;
        }
    } else {
        let r = mount(Some(&source), &dest, Some(typ.as_str()), flags, data_opt);
        match (r, typ.as_str()) {
            (Ok(()), _) => {}
            // Without a network (or cgroup, ipc) namespace of our own the
            // kernel refuses a new instance: bind the host's, read-only.
            // A v1 "cgroup" of every controller is busy on a v1 host (runc
            // mounts each hierarchy): the host's, read-only, too.
            (Err(nix::errno::Errno::EPERM), "sysfs" | "cgroup" | "cgroup2" | "mqueue")
            | (Err(nix::errno::Errno::EBUSY), "cgroup") => {
                let host = match typ.as_str() {
                    "sysfs" => "/sys",
                    "mqueue" => "/dev/mqueue",
                    _ => "/sys/fs/cgroup",
                };
                mount(
                    Some(host),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| format!("bind mount {host} on {}: {e}", m.destination().display()))?;
                mount(
                    None::<&str>,
                    &dest,
                    None::<&str>,
                    MsFlags::MS_REMOUNT
                        | MsFlags::MS_BIND
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )
                .map_err(|e| format!("remounting {} read-only: {e}", m.destination().display()))?;
            }
            (Err(e), _) => {
                return Err(format!(
                    "mount {typ} {} on {} ({data}): {e}",
                    source.display(),
                    m.destination().display()
                ))
            }
        }
    }
    if !propagation.is_empty() {
        mount(None::<&str>, &dest, None::<&str>, propagation, None::<&str>)
            .map_err(|e| format!("setting propagation of {}: {e}", m.destination().display()))?;
    }
    Ok(())
}

/// A user namespace cannot mknod: bind the host's device nodes.
fn default_devices(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(d);
        if !target.exists() {
            fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
        }
        mount(
            Some(&Path::new("/dev").join(d)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount /dev/{d}: {e}"))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let l = dev.join(link);
        if fs::symlink_metadata(&l).is_err() {
            std::os::unix::fs::symlink(to, &l)
                .map_err(|e| format!("symlink {}: {e}", l.display()))?;
        }
    }
    Ok(())
}

fn mask_path(p: &Path) -> Result<()> {
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

fn readonly_path(p: &Path) -> Result<()> {
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
    mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making {} read-only: {e}", p.display()))
}

/// An exec process: join every namespace of the container's init `pid`.
fn exec(ch: &mut Channel, pid: i32, process: Process) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}/ns"));
    let open = |n: &str| {
        fs::File::open(proc.join(n)).map_err(|e| format!("opening {}/{n}: {e}", proc.display()))
    };
    let user = open("user")?;
    // Namespaces the container shares with us (e.g. the host's cgroup or
    // network namespace) are not joined: that needs host privileges we give
    // up on entering the user namespace, and changes nothing.
    let same = |n: &str, f: &fs::File| {
        let own = fs::metadata(format!("/proc/self/ns/{n}")).map(|m| (m.dev(), m.ino()));
        let theirs = f.metadata().map(|m| (m.dev(), m.ino()));
        matches!((own, theirs), (Ok(a), Ok(b)) if a == b)
    };
    let join_user = !same("user", &user);
    let mut others = Vec::new();
    for (n, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = open(n)?;
        if !same(n, &f) {
            others.push((f, flag));
        }
    }
    // The others first, with the host's privileges: some may be owned by
    // the host's user namespace rather than the container's (a CRI pod's
    // network namespace, which containerd made), and could not be joined
    // from inside the container's. (Every comparison with our own is made
    // before: /proc/self is not ours inside the container's mounts.)
    for (f, flag) in &others {
        setns(f.as_fd(), *flag).map_err(|e| format!("joining {flag:?}: {e}"))?;
    }
    if join_user {
        setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace: {e}"))?;
        become_ns_root()?;
    }
    fork_and_report(ch, |ch| run(ch, &process))
}
