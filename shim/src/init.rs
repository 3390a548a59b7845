//! The container's side: `containerd-shim-idshift-v2 init`, started by the
//! shim with the channel at fd 3. A fresh single-threaded process, so it may
//! fork. Stage 1 joins or creates the namespaces and forks; stage 2 (pid 1
//! of a new pid namespace) attaches the rootfs inside its own mount
//! namespace, mounts, pivots, reports Ready, waits for Start and execs. Exec
//! processes take the same path into an existing container.

use crate::channel::{Channel, ContainerInit, FromInit, ToInit};
use crate::{hooks, mounts, seccomp, sys};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, String>;

/// The fd the shim hands the channel on.
pub const CHANNEL_FD: i32 = 3;

/// The set-up's steps and when each ended (CLOCK_MONOTONIC, ns), sent with
/// Ready for the shim's debug log. The init is single-threaded; stage 2
/// inherits stage 1's marks through fork.
static MARKS: std::sync::Mutex<Vec<(&'static str, u64)>> = std::sync::Mutex::new(Vec::new());
/// Set once the process is in a new time namespace: its monotonic clock is
/// no longer the shim's, so no more marks are taken.
static MARKS_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn mark(step: &'static str) {
    if MARKS_OFF.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Ok(mut m) = MARKS.lock() {
        m.push((step, sys::monotonic_ns()));
    }
}

fn take_marks() -> Vec<(String, u64)> {
    MARKS
        .lock()
        .map(|mut m| m.drain(..).map(|(s, t)| (s.to_string(), t)).collect())
        .unwrap_or_default()
}

/// Entry point; never returns.
pub fn main() -> ! {
    mark("init's main entered");
    let sock = std::os::unix::net::UnixStream::from(sys::own_received_fd(CHANNEL_FD));
    // The channel must close when the workload execs: that is how the shim
    // learns the exec succeeded.
    let _ = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC);
    let mut ch = Channel::from_stream(sock);
    let mut msg = ch.recv::<ToInit>();
    if let Ok(Some((ToInit::JoinCgroup { tasks }, _))) = &msg {
        if let Err(e) = join_cgroup(tasks) {
            let _ = ch.send(&FromInit::Error(e), &[]);
            std::process::exit(1);
        }
        mark("cgroup joined (moved itself)");
        msg = ch.recv::<ToInit>();
    }
    mark("set-up message read");
    let result = match msg {
        Ok(Some((ToInit::Container(c), fds))) => container(&mut ch, *c, fds),
        Ok(Some((
            ToInit::Exec {
                pid,
                process,
                seccomp,
            },
            _,
        ))) => exec(&mut ch, pid, *process, seccomp.as_deref()),
        Ok(Some((ToInit::Start | ToInit::HooksDone | ToInit::Rootfs, _))) => {
            Err("Start before set-up".into())
        }
        Ok(Some((ToInit::JoinCgroup { .. }, _))) => Err("a second cgroup to join".into()),
        Ok(None) => std::process::exit(1),
        Err(e) => Err(format!("reading the set-up message: {e}")),
    };
    if let Err(e) = result {
        let _ = ch.send(&FromInit::Error(e), &[]);
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// Moves this (single-threaded) process into a v1 cgroup: "0" written to
/// each hierarchy's `tasks` file moves the writer itself (`cgroup.rs`,
/// `Cgroup::self_join_files`).
fn join_cgroup(tasks: &[std::path::PathBuf]) -> Result<()> {
    for f in tasks {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .and_then(|mut file| std::io::Write::write_all(&mut file, b"0"))
            .map_err(|e| {
                format!(
                    "moving the container's process into its cgroup: writing 0 to {}: {e}",
                    f.display()
                )
            })?;
    }
    Ok(())
}

/// This process's pid (in the host's pid namespace: the init sets its
/// limits before it forks into the container's).
fn own_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
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
    let want = usize::from(c.userns) + c.idmapped_mounts.len();
    if fds.len() != want {
        return Err(format!(
            "expected {want} fds from the shim, got {}",
            fds.len()
        ));
    }
    // [user namespace], one per idmapped mount; the rootfs comes later.
    let idmapped = fds.split_off(want - c.idmapped_mounts.len());
    let userns_fd = fds.pop();
    // Bind sources are taken with the host's privileges, before the user
    // namespace: its root may not be able to reach them (containerd's own
    // directories, e.g. CRI's /etc/hosts and /dev/shm, are mode 0700).
    let spec_mounts = c.spec.mounts().clone().unwrap_or_default();
    let mut premade = mounts::clone_bind_sources(&spec_mounts, &c.idmapped_mounts)?;
    let devices = mounts::clone_devices(linux.devices().as_deref().unwrap_or_default())?;
    mark("bind sources and devices opened");
    for (i, tree) in c.idmapped_mounts.iter().zip(idmapped) {
        if let Some(slot) = premade.get_mut(*i) {
            *slot = Some(mounts::Premade::Idmapped(tree));
        }
    }
    // Join namespaces given by path first, with the host's privileges. One
    // that is not the host's own (the shim's) is the container's: a CRI
    // pod's network namespace, which containerd made and passes by path.
    let mut joined = Vec::new();
    for ns in namespaces
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::User)
    {
        if let Some(p) = ns.path() {
            let f =
                fs::File::open(p).map_err(|e| format!("opening namespace {}: {e}", p.display()))?;
            if !is_own_namespace(ns.typ(), &f) {
                joined.push(ns.typ());
            }
            setns(f.as_fd(), ns_flag(ns.typ()))
                .map_err(|e| format!("joining {:?} namespace {}: {e}", ns.typ(), p.display()))?;
        }
    }
    let new = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let (host_side, inside) = split_sysctls(&linux, &new, &|t| joined.contains(&t))?;
    // The sysctls of namespaces joined by path are written now, as host root
    // (the namespace may belong to the host's user namespace, where the
    // container's root has no privilege), through the host's /proc, which
    // shows the namespaces just joined. Group IDs are the host's here.
    let gid_maps = spec_gid_maps(&linux);
    write_sysctls(
        &host_side,
        GidView::Host(userns_fd.is_some().then_some(&gid_maps)),
    )?;
    if let Some(p) = c.spec.process() {
        crate::process::apply_rlimits(own_pid(), p)?;
    }
    // Opened as host root, before the user namespace: once the init's
    // credentials change it is no longer dumpable and its /proc files are
    // the host root's; the kernel checks CAP_SYS_TIME of the opener.
    let new_timens = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
    let timens_offsets = if new_timens && linux.time_offsets().is_some() {
        Some(
            fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/timens_offsets")
                .map_err(|e| format!("opening /proc/self/timens_offsets: {e}"))?,
        )
    } else {
        None
    };
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
    mark("user namespace joined, sysctls and rlimits set");
    unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    mark("namespaces unshared");
    if let Some(f) = timens_offsets {
        set_time_offsets(&linux, f)?;
        MARKS_OFF.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = MARKS.lock() {
            m.clear();
        }
    }
    fork_and_report(ch, |ch| stage2(ch, &c, premade, devices, &inside))
}

/// `linux.timeOffsets`, written for the new time namespace before its
/// first process (the child about to be forked) enters it.
fn set_time_offsets(linux: &oci_spec::runtime::Linux, mut file: fs::File) -> Result<()> {
    let mut offsets: Vec<_> = linux.time_offsets().iter().flatten().collect();
    offsets.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    for (clock, o) in offsets {
        text.push_str(&format!(
            "{clock} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    if text.is_empty() {
        return Ok(());
    }
    // One write: the kernel takes every clock's offset at once.
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("writing linux.timeOffsets ({}): {e}", text.trim()))
}

/// Whether the namespace file `f` is the one of type `t` this process is in
/// (the shim's, the host's): joining it gives the container nothing of its own.
fn is_own_namespace(t: LinuxNamespaceType, f: &fs::File) -> bool {
    let name = match t {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
        LinuxNamespaceType::User => "user",
    };
    let own = fs::metadata(format!("/proc/self/ns/{name}")).map(|m| (m.dev(), m.ino()));
    let theirs = f.metadata().map(|m| (m.dev(), m.ino()));
    matches!((own, theirs), (Ok(a), Ok(b)) if a == b)
}

fn spec_gid_maps(linux: &oci_spec::runtime::Linux) -> Vec<(u32, u32, u32)> {
    linux
        .gid_mappings()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|m| (m.container_id(), m.host_id(), m.size()))
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
    mut premade: Vec<Option<mounts::Premade>>,
    devices: Vec<Option<OwnedFd>>,
    sysctls: &[(String, String)],
) -> Result<()> {
    let spec = &c.spec;
    let target = &c.rootfs_target;
    let linux = spec.linux().clone().unwrap_or_default();
    mark("forked into the new pid namespace");
    // Nothing mounted here propagates back to the host, and (rslave) the
    // host's later mounts can reach the container where asked.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    // The shim builds the rootfs while this process made its namespaces.
    let rootfs_fd = match ch.recv::<ToInit>() {
        Ok(Some((ToInit::Rootfs, mut fds))) if fds.len() == 1 => fds.pop().ok_or("no rootfs fd")?,
        Ok(Some((ToInit::Rootfs, fds))) => {
            return Err(format!("expected the rootfs fd, got {} fds", fds.len()))
        }
        // The shim failed to build it and gave up on this process.
        Ok(None) => std::process::exit(1),
        Ok(Some((m, _))) => return Err(format!("expected the rootfs, got {m:?}")),
        Err(e) => return Err(format!("waiting for the rootfs: {e}")),
    };
    mark("rootfs received");
    rootfs::attach_mount(rootfs_fd.as_fd(), target)
        .map_err(|e| format!("attaching the rootfs at {}: {e}", target.display()))?;
    drop(rootfs_fd);
    // A clone of a shared mount (a rootfs directory under a shared mount,
    // e.g. Docker's data-root, which dockerd binds onto itself as shared)
    // is a peer of the host's mount: made private before anything is
    // mounted under it, or the container's mounts would propagate to the
    // host (and pivot_root refuses a shared new root).
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making the rootfs {} private: {e}", target.display()))?;
    let root_dir = fs::File::open(target)
        .map_err(|e| format!("opening the rootfs {}: {e}", target.display()))?;
    mark("rootfs attached");
    let root = mounts::Root {
        fd: root_dir.as_fd(),
        path: target,
    };
    let mut dev_tmpfs = false;
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_tmpfs = true;
        }
        mounts::mount_one(
            &root,
            m,
            premade.get_mut(i).and_then(Option::take),
            &c.cgroups,
        )?;
    }
    if dev_tmpfs {
        mounts::default_devices(&root)?;
    }
    mounts::make_devices(
        &root,
        linux.devices().as_deref().unwrap_or_default(),
        devices,
    )?;
    drop(root_dir);
    mark("spec mounts and devices");
    if c.fail_after_mounts {
        return Err("IDSHIFT_TEST_FAIL=mounts: failing after the spec's mounts, as asked".into());
    }
    // Hooks before pivot_root: the shim's (prestart, createRuntime, in the
    // host's namespaces), then createContainer here, in the container's
    // mount namespace.
    let hooks = spec.hooks().as_ref();
    let runtime_hooks = [hooks::Point::Prestart, hooks::Point::CreateRuntime]
        .iter()
        .any(|p| !p.of(hooks).is_empty());
    if runtime_hooks {
        ch.send(&FromInit::RunHooks, &[])
            .map_err(|e| format!("asking for the createRuntime hooks: {e}"))?;
        match ch.recv::<ToInit>() {
            Ok(Some((ToInit::HooksDone, _))) => {}
            // The shim reported the hook's failure and gave up on us.
            Ok(None) => std::process::exit(1),
            Ok(Some(_)) => return Err("unexpected message while hooks ran".into()),
            Err(e) => return Err(format!("waiting for the createRuntime hooks: {e}")),
        }
    }
    let state = c.state.with("creating", std::process::id() as i32);
    hooks::run_here(
        hooks::Point::CreateContainer,
        &hooks::Point::CreateContainer.of(hooks),
        &state,
    )?;
    chdir(target).map_err(|e| format!("chdir {}: {e}", target.display()))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mark("hooks and pivot_root");
    // A missing working directory is made, as runc makes it (before the
    // rootfs is made read-only).
    if let Some(cwd) = spec.process().as_ref().map(|p| p.cwd()) {
        fs::create_dir_all(cwd)
            .map_err(|e| format!("creating process.cwd {}: {e}", cwd.display()))?;
    }
    if let Some(p) = linux.rootfs_propagation() {
        let flags = mounts::propagation_flags(p)
            .ok_or_else(|| format!("linux.rootfsPropagation {p:?} is not a propagation type"))?;
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("setting the rootfs propagation {p}: {e}"))?;
    }
    // The sysctls of the container's new namespaces (made inside its user
    // namespace, where its group IDs are the container's own; without one,
    // they are the host's).
    let gid_maps = spec_gid_maps(&linux);
    let view = if c.userns {
        GidView::Container(&gid_maps)
    } else {
        GidView::Host(None)
    };
    write_sysctls(sysctls, view)?;
    for p in linux.masked_paths().clone().unwrap_or_default() {
        mounts::mask_path(Path::new(&p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        mounts::readonly_path(Path::new(&p))?;
    }
    // In the container's UTS namespace, new or joined (as runc).
    if linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Uts)
    {
        // An empty name leaves the namespace's (a pod's, when joined) alone.
        if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
        }
        if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
            sys::set_domainname(d).map_err(|e| format!("setdomainname {d:?}: {e}"))?;
        }
    }
    mark("sysctls, masked and read-only paths, hostname");
    if let Some(p) = linux.personality() {
        set_personality(p)?;
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
    let start_hooks = hooks::Point::StartContainer.of(spec.hooks().as_ref());
    run(
        ch,
        &process,
        linux.seccomp().as_ref(),
        Some((&start_hooks, &c.state)),
    )
}

/// The namespace a sysctl belongs to, if it is one a container may set
/// (as runc allows): IPC sysctls with an IPC namespace of its own, network
/// ones with its own network namespace, UTS names with its own UTS one.
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 7] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
    ];
    if IPC.contains(&key) || key == "kernel.shm_rmid_forced" || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// `linux.sysctl` split by where each is written: those of namespaces
/// joined by path (written by the container's process before it enters its
/// user namespace), and those of the namespaces it makes (written inside).
/// A sysctl of a namespace the container does not have (the host's) is
/// refused, naming it, as runc refuses it.
type Sysctls = Vec<(String, String)>;
fn split_sysctls(
    linux: &oci_spec::runtime::Linux,
    new: &dyn Fn(LinuxNamespaceType) -> bool,
    joined: &dyn Fn(LinuxNamespaceType) -> bool,
) -> Result<(Sysctls, Sysctls)> {
    let mut sysctls: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctls.sort();
    let (mut host_side, mut inside) = (Vec::new(), Vec::new());
    for (key, value) in sysctls {
        if key.contains("..") || key.contains('/') {
            return Err(format!("sysctl {key:?} is not a valid name"));
        }
        match sysctl_namespace(&key) {
            Some(ns) if new(ns) => inside.push((key, value)),
            Some(ns) if joined(ns) => host_side.push((key, value)),
            Some(ns) => {
                return Err(format!(
                    "sysctl {key} belongs to the {ns:?} namespace, and the container has the host's"
                ))
            }
            None => {
                return Err(format!(
                    "sysctl {key} is not namespaced (or not allowed in a container): it would change the host"
                ))
            }
        }
    }
    Ok((host_side, inside))
}

/// In whose IDs a writer of `net.ipv4.ping_group_range` names groups.
enum GidView<'a> {
    /// The host's, translating through the container's mappings (none: the
    /// container has no user namespace, its IDs are the host's).
    Host(Option<&'a [(u32, u32, u32)]>),
    /// The container's own, limited to those its mappings hold.
    Container(&'a [(u32, u32, u32)]),
}

/// `net.ipv4.ping_group_range` (`low high`, the container's group IDs) as
/// its writer must name it: translated to host IDs when written from the
/// host, and limited to the groups the container's user namespace maps
/// (containerd 2.x asks for `0 2147483647`: every group of the container).
/// A range the mappings cannot express as one range is refused, naming it.
fn ping_group_range(value: &str, view: &GidView) -> Result<String> {
    let bad = || format!("sysctl net.ipv4.ping_group_range {value:?} is not two group IDs");
    let mut it = value.split_whitespace().map(str::parse::<u32>);
    let (lo, hi) = match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) => (lo, hi),
        _ => return Err(bad()),
    };
    let maps = match view {
        GidView::Host(None) => return Ok(value.to_string()),
        GidView::Host(Some(m)) | GidView::Container(m) => *m,
    };
    if maps.is_empty() {
        return Err(format!(
            "sysctl net.ipv4.ping_group_range {value:?}: the spec has no linux.gidMappings to translate it through"
        ));
    }
    if lo > hi {
        // No group may ping: the same in any IDs.
        return Ok(value.to_string());
    }
    let mut pieces: Vec<(u64, u64, u64)> = maps
        .iter()
        .filter_map(|&(c, h, n)| {
            let (c, h, n) = (u64::from(c), u64::from(h), u64::from(n));
            let start = c.max(u64::from(lo));
            let end = (c + n).min(u64::from(hi) + 1);
            (start < end).then(|| (start, h + (start - c), end - start))
        })
        .collect();
    pieces.sort();
    let Some(&(c0, h0, n0)) = pieces.first() else {
        return Err(format!(
            "sysctl net.ipv4.ping_group_range {value:?} names no group the container's user namespace maps"
        ));
    };
    let use_host = matches!(view, GidView::Host(_));
    let (first, mut last) = if use_host {
        (h0, h0 + n0 - 1)
    } else {
        (c0, c0 + n0 - 1)
    };
    for &(c, h, n) in &pieces[1..] {
        let start = if use_host { h } else { c };
        if start != last + 1 {
            return Err(format!(
                "sysctl net.ipv4.ping_group_range {value:?}: the groups it names that the container maps are not one range {}, so it cannot be expressed",
                if use_host { "of host IDs" } else { "of its IDs" }
            ));
        }
        last = start + n - 1;
    }
    Ok(format!("{first}\t{last}"))
}

/// Writes sysctls under /proc/sys, whose network and IPC entries are those
/// of the writer's namespaces.
fn write_sysctls(sysctls: &[(String, String)], view: GidView) -> Result<()> {
    for (key, value) in sysctls {
        let value = if key == "net.ipv4.ping_group_range" {
            ping_group_range(value, &view)?
        } else {
            value.clone()
        };
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value.as_bytes())
            .map_err(|e| format!("setting sysctl {key}={value} ({}): {e}", path.display()))?;
    }
    Ok(())
}

/// `linux.personality`: LINUX or LINUX32 (flags are not defined by OCI).
fn set_personality(p: &oci_spec::runtime::LinuxPersonality) -> Result<()> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let persona = match p.domain() {
        D::PerLinux => 0x0000,
        D::PerLinux32 => 0x0008,
    };
    sys::set_personality(persona).map_err(|e| format!("personality({:?}): {e}", p.domain()))
}

/// Ready, wait for Start, then exec `process` (common to containers and
/// execs); a container's startContainer hooks run right before the exec,
/// as its user (as runc runs them).
fn run(
    ch: &mut Channel,
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    start_hooks: Option<(&[oci_spec::runtime::Hook], &hooks::State)>,
) -> Result<()> {
    let path = lookup(process)?;
    check_ids_mapped(process)?;
    // Checked before Ready: chdir happens at Start, whose failure would
    // leave the task behind.
    let cwd = process.cwd();
    match fs::metadata(cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("process.cwd {} is not a directory", cwd.display())),
        Err(e) => return Err(format!("process.cwd {}: {e}", cwd.display())),
    }
    // Compiled before Ready, so that a bad profile fails create; loaded at
    // Start, as late as the spec allows.
    let filter = seccomp
        .map(seccomp::Filter::from_spec)
        .transpose()
        .map_err(|e| e.to_string())?;
    let load_at = seccomp::LoadAt::for_no_new_privileges(process.no_new_privileges() == Some(true));
    // The scheduler and I/O priority are set before Ready, so that what
    // the kernel refuses (e.g. a real-time policy in a user namespace,
    // which needs CAP_SYS_NICE on the host) fails create or exec.
    if let Some(s) = process.scheduler() {
        set_scheduler(s)?;
    }
    if let Some(io) = process.io_priority() {
        set_io_priority(io)?;
    }
    let master = if process.terminal() == Some(true) {
        Some(setup_terminal(process.console_size().as_ref())?)
    } else {
        None
    };
    let fds: Vec<i32> = master.iter().map(|m| m.as_raw_fd()).collect();
    mark("process checks, seccomp compiled, terminal");
    ch.send(
        &FromInit::Ready {
            marks: take_marks(),
        },
        &fds,
    )
    .map_err(|e| format!("reporting ready: {e}"))?;
    drop(master);
    match ch.recv::<ToInit>() {
        Ok(Some((ToInit::Start, _))) => {}
        // The shim deleted us before Start.
        Ok(None) => std::process::exit(1),
        Ok(Some(_)) => return Err("unexpected message while waiting for Start".into()),
        Err(e) => return Err(format!("waiting for Start: {e}")),
    }
    finalize(
        process,
        filter
            .as_ref()
            .filter(|_| load_at == seccomp::LoadAt::BeforeCapabilities),
    )?;
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
    if let Some((list, state)) = start_hooks {
        let state = state.with("created", std::process::id() as i32);
        hooks::run_here(hooks::Point::StartContainer, list, &state)?;
    }
    if let (Some(f), seccomp::LoadAt::BeforeExec) = (&filter, load_at) {
        f.load().map_err(|e| e.to_string())?;
    }
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

/// Whether `id` is in a `/proc/PID/{uid,gid}_map` text (lines of
/// `first lower count`).
fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        matches!(f[..], [first, _, count] if u64::from(id) >= first && u64::from(id) < first + count)
    })
}

/// The process's user and groups must be mapped in the user namespace it
/// runs in, or setresuid/setgroups fail at Start with a bare EINVAL: checked
/// before Ready, so that Create (or Exec) fails naming the field. Skipped
/// when the container has no /proc to read the maps from.
fn check_ids_mapped(process: &Process) -> Result<()> {
    let user = process.user();
    let groups = user.additional_gids().clone().unwrap_or_default();
    let checks = [
        ("uid_map", "process.user.uid", vec![user.uid()]),
        ("gid_map", "process.user.gid", vec![user.gid()]),
        ("gid_map", "process.user.additionalGids", groups),
    ];
    for (file, field, ids) in checks {
        let Ok(map) = fs::read_to_string(format!("/proc/self/{file}")) else {
            continue;
        };
        if let Some(id) = ids.into_iter().find(|id| !id_mapped(&map, *id)) {
            let extents: Vec<&str> = map.lines().map(str::trim).collect();
            return Err(format!(
                "{field} {id} is not mapped in the container's user namespace ({file}: {})",
                extents.join(", ")
            ));
        }
    }
    Ok(())
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
fn setup_terminal(size: Option<&oci_spec::runtime::Box>) -> Result<OwnedFd> {
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
    // process.consoleSize: the terminal's size until containerd resizes it.
    if let Some(b) = size {
        let (rows, cols) = (u16::try_from(b.height()), u16::try_from(b.width()));
        let (Ok(ws_row), Ok(ws_col)) = (rows, cols) else {
            return Err(format!(
                "process.consoleSize {}x{} is larger than a terminal can be",
                b.width(),
                b.height()
            ));
        };
        let ws = rustix::termios::Winsize {
            ws_row,
            ws_col,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, ws)
            .map_err(|e| format!("setting process.consoleSize: {e}"))?;
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    sys::set_controlling_tty(slave.as_raw_fd()).map_err(|e| format!("TIOCSCTTY: {e}"))?;
    for fd in 0..3 {
        sys::dup2_raw(slave.as_raw_fd(), fd).map_err(|e| format!("dup2 pty: {e}"))?;
    }
    Ok(master)
}

/// Credentials, capabilities and the rest of the process's own settings;
/// `filter` is a seccomp filter to load before capabilities and credentials
/// change (without no_new_privs, loading needs CAP_SYS_ADMIN).
fn finalize(process: &Process, filter: Option<&seccomp::Filter>) -> Result<()> {
    // process.rlimits were set before the user namespace, oomScoreAdj by
    // the shim (process.rs), scheduler and ioPriority before Ready (run).
    if let Some(f) = filter {
        f.load().map_err(|e| e.to_string())?;
    }
    let user = process.user();
    let caps = CapSets::of(process);
    // Bounding set first, while we still hold CAP_SETPCAP. A missing set
    // (or no `capabilities` at all, or CRI's `{}` for "drop ALL") is an
    // empty one, as runc reads it: were the bounding set kept, a root
    // process would regain every capability at its execve.
    for c in caps::all() {
        if !caps.bounding.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c)
                .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
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
    // Each capset must keep effective within permitted, and raising
    // inheritable needs CAP_SETPCAP, so: inheritable, effective, permitted.
    caps::set(None, caps::CapSet::Inheritable, &caps.inheritable)
        .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Effective, &caps.effective)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, caps::CapSet::Permitted, &caps.permitted)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    for c in caps.ambient.iter().copied() {
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

/// `process.capabilities`, each set as the `caps` crate takes it. A missing
/// set, or no `capabilities` at all, is an empty set, as runc reads the
/// spec (not oci-spec's `LinuxCapabilities::default()`, which grants three).
#[derive(Debug, Default, PartialEq)]
struct CapSets {
    bounding: caps::CapsHashSet,
    effective: caps::CapsHashSet,
    inheritable: caps::CapsHashSet,
    permitted: caps::CapsHashSet,
    ambient: caps::CapsHashSet,
}

impl CapSets {
    fn of(process: &Process) -> CapSets {
        let Some(c) = process.capabilities() else {
            return CapSets::default();
        };
        let set = |s: &Option<oci_spec::runtime::Capabilities>| {
            s.as_ref().map(cap_set).unwrap_or_default()
        };
        CapSets {
            bounding: set(c.bounding()),
            effective: set(c.effective()),
            inheritable: set(c.inheritable()),
            permitted: set(c.permitted()),
            ambient: set(c.ambient()),
        }
    }
}

/// The kernel lets a process raise an inheritable capability only within
/// its bounding set, an effective one only within its permitted set, and an
/// ambient one only within both its permitted and inheritable sets: a spec asking otherwise is refused before anything is
/// made (runc fails its create too), naming the capability.
pub fn check_capabilities(process: &Process) -> Result<()> {
    let c = CapSets::of(process);
    let outside = |set: &caps::CapsHashSet, within: &[&caps::CapsHashSet]| {
        let mut v: Vec<String> = set
            .iter()
            .filter(|x| !within.iter().all(|w| w.contains(x)))
            .map(ToString::to_string)
            .collect();
        v.sort();
        v
    };
    let inh = outside(&c.inheritable, &[&c.bounding]);
    if !inh.is_empty() {
        return Err(format!(
            "process.capabilities.inheritable has {} outside the bounding set",
            inh.join(", ")
        ));
    }
    let eff = outside(&c.effective, &[&c.permitted]);
    if !eff.is_empty() {
        return Err(format!(
            "process.capabilities.effective has {} outside the permitted set",
            eff.join(", ")
        ));
    }
    let amb = outside(&c.ambient, &[&c.permitted, &c.inheritable]);
    if !amb.is_empty() {
        return Err(format!(
            "process.capabilities.ambient has {} outside the permitted and inheritable sets",
            amb.join(", ")
        ));
    }
    Ok(())
}

/// The capabilities of an OCI set as the `caps` crate names them
/// (oci-spec prints `CHOWN`, caps parses `CAP_CHOWN`). Capabilities this
/// build does not know are left out, as runc does with ones the kernel
/// lacks.
fn cap_set(set: &oci_spec::runtime::Capabilities) -> caps::CapsHashSet {
    set.iter()
        .filter_map(|c| {
            let name = c.to_string();
            let name = if name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            };
            name.parse::<caps::Capability>().ok()
        })
        .collect()
}

/// `process.ioPriority`: the class and level (0-7) for ioprio_set.
fn set_io_priority(io: &oci_spec::runtime::LinuxIOPriority) -> Result<()> {
    let (class, level) = io_priority_value(io)?;
    sys::set_io_priority(class, level).map_err(|e| {
        format!(
            "process.ioPriority: ioprio_set({:?}, {level}): {e}",
            io.class()
        )
    })
}

/// The class and level of `process.ioPriority`, or an error naming the
/// field when the level is not 0-7.
pub fn io_priority_value(io: &oci_spec::runtime::LinuxIOPriority) -> Result<(u32, u32)> {
    use oci_spec::runtime::IOPriorityClass as C;
    let class = match io.class() {
        C::IoprioClassRt => 1,
        C::IoprioClassBe => 2,
        C::IoprioClassIdle => 3,
    };
    let level = u32::try_from(io.priority())
        .ok()
        .filter(|l| *l <= 7)
        .ok_or_else(|| {
            format!(
                "process.ioPriority.priority {} is not between 0 and 7",
                io.priority()
            )
        })?;
    Ok((class, level))
}

/// `process.scheduler`: sched_setattr on this process, as runc 1.2 sets
/// it (the values were checked at create: [`scheduler_attr`]).
fn set_scheduler(s: &oci_spec::runtime::Scheduler) -> Result<()> {
    let attr = scheduler_attr(s)?;
    sys::sched_setattr(&attr).map_err(|e| {
        format!(
            "process.scheduler: sched_setattr(policy {}, nice {}, priority {}): {e}",
            s.policy(),
            attr.nice,
            attr.priority
        )
    })
}

/// The kernel's `sched_attr` for `process.scheduler`, or an error naming
/// the field the spec got wrong (runc's rules: nice in -20..=19, priority
/// only for SCHED_FIFO/SCHED_RR, runtime/deadline/period only for
/// SCHED_DEADLINE).
pub fn scheduler_attr(s: &oci_spec::runtime::Scheduler) -> Result<sys::SchedAttr> {
    use oci_spec::runtime::LinuxSchedulerFlag as F;
    use oci_spec::runtime::LinuxSchedulerPolicy as P;
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(format!(
            "process.scheduler.nice {nice} is not between -20 and 19"
        ));
    }
    let priority = s.priority().unwrap_or(0);
    let realtime = matches!(s.policy(), P::SchedFifo | P::SchedRr);
    if priority != 0 && !realtime {
        return Err(format!(
            "process.scheduler.priority {priority} is only for SCHED_FIFO or SCHED_RR, not {}",
            s.policy()
        ));
    }
    if realtime && !(1..=99).contains(&priority) {
        return Err(format!(
            "process.scheduler.priority {priority} is not between 1 and 99 (policy {})",
            s.policy()
        ));
    }
    let (runtime, deadline, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if s.policy() != &P::SchedDeadline && (runtime, deadline, period) != (0, 0, 0) {
        return Err(format!(
            "process.scheduler.runtime/deadline/period are only for SCHED_DEADLINE, not {}",
            s.policy()
        ));
    }
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    Ok(sys::SchedAttr {
        size: std::mem::size_of::<sys::SchedAttr>() as u32,
        policy,
        flags,
        nice,
        priority: priority as u32,
        runtime,
        deadline,
        period,
    })
}

/// An exec process: join every namespace of the container's init `pid`.
fn exec(
    ch: &mut Channel,
    pid: i32,
    process: Process,
    seccomp: Option<&LinuxSeccomp>,
) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}/ns"));
    // A process that died (or is a zombie not yet reaped) has no
    // namespaces left to join: the container is not running.
    let open = |n: &str| {
        fs::File::open(proc.join(n)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("the container is not running (its process {pid} has exited)")
            } else {
                format!("opening {}/{n}: {e}", proc.display())
            }
        })
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
        ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
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
    crate::process::apply_rlimits(own_pid(), &process)?;
    if join_user {
        setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace: {e}"))?;
        become_ns_root()?;
    }
    fork_and_report(ch, |ch| run(ch, &process, seccomp, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_group_range_is_translated_or_refused() {
        let one = [(0, 262144, 65536)];
        let host = |v: &str, m: &[(u32, u32, u32)]| ping_group_range(v, &GidView::Host(Some(m)));
        let inside = |v: &str, m: &[(u32, u32, u32)]| ping_group_range(v, &GidView::Container(m));
        // containerd 2.x's default: every group of the container.
        assert_eq!(host("0 2147483647", &one), Ok("262144\t327679".into()));
        assert_eq!(inside("0 2147483647", &one), Ok("0\t65535".into()));
        assert_eq!(host("5\t10", &one), Ok("262149\t262154".into()));
        assert_eq!(inside("5 10", &one), Ok("5\t10".into()));
        // Disabled stays disabled; no user namespace: as given.
        assert_eq!(host("1 0", &one), Ok("1 0".into()));
        assert_eq!(
            ping_group_range("0 2147483647", &GidView::Host(None)),
            Ok("0 2147483647".into())
        );
        // Two extents contiguous on the host are one range; apart, not.
        let two = [(0, 1000, 10), (10, 1010, 10)];
        assert_eq!(host("0 100", &two), Ok("1000\t1019".into()));
        let apart = [(0, 1000, 10), (10, 5000, 10)];
        let e = host("0 100", &apart).expect_err("apart");
        assert!(e.contains("cannot be expressed"), "{e}");
        assert_eq!(inside("0 100", &apart), Ok("0\t19".into()));
        let e = host("70000 80000", &one).expect_err("unmapped");
        assert!(e.contains("names no group"), "{e}");
        let e = host("0", &one).expect_err("one number");
        assert!(e.contains("is not two group IDs"), "{e}");
        let e = host("0 1", &[]).expect_err("no maps");
        assert!(e.contains("linux.gidMappings"), "{e}");
    }

    #[test]
    fn ids_in_a_map() {
        let map = "         0 1879048192      65536\n     65536          5          1\n";
        assert!(id_mapped(map, 0) && id_mapped(map, 65535) && id_mapped(map, 65536));
        assert!(!id_mapped(map, 65537) && !id_mapped(map, 99_999_999));
        assert!(id_mapped("0 0 4294967295\n", u32::MAX - 1));
        assert!(!id_mapped("", 0));
    }

    #[test]
    fn missing_capability_sets_are_empty() {
        let process = |caps: serde_json::Value| -> Process {
            let mut p = serde_json::json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"});
            if !caps.is_null() {
                p["capabilities"] = caps;
            }
            serde_json::from_value(p).expect("a process")
        };
        assert_eq!(
            CapSets::of(&process(serde_json::Value::Null)),
            CapSets::default()
        );
        assert_eq!(
            CapSets::of(&process(serde_json::json!({}))),
            CapSets::default()
        );
        let only_eff = CapSets::of(&process(serde_json::json!({"effective": ["CAP_KILL"]})));
        assert_eq!(
            only_eff,
            CapSets {
                effective: [caps::Capability::CAP_KILL].into_iter().collect(),
                ..CapSets::default()
            }
        );
    }

    #[test]
    fn oci_capability_names_map_to_caps() {
        let set: oci_spec::runtime::Capabilities = [
            oci_spec::runtime::Capability::Chown,
            oci_spec::runtime::Capability::NetRaw,
        ]
        .into_iter()
        .collect();
        let got = cap_set(&set);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&caps::Capability::CAP_CHOWN));
        assert!(got.contains(&caps::Capability::CAP_NET_RAW));
    }
}
