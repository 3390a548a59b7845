//! A container's host-side mechanism: its ID range and user namespace, its
//! rootfs, its cgroup, its first process, and undoing all of it. State that
//! `shim delete` needs after a crash is kept in `<run_dir>/<ns>/<id>/state.json`.

use crate::cgroup::{Cgroup, Hierarchy, ManagerAhead};
use crate::channel::{ContainerInit, ToInit};
use crate::config::{Config, HostAccess, PodUsernsMode, UsernsMode};
use crate::process::{self, Process};
use crate::stdio::{ProcessIo, StdioUris};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use userns::{Allocator, IdMap, UserNamespace};

/// What `shim delete` needs to clean up after a dead shim.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub pid: i32,
    pub range_owner: Option<String>,
    pub state_dir: PathBuf,
    pub pool_start: u32,
    pub pool_size: u32,
    pub range_size: u32,
    pub cgroup: Option<String>,
    /// The CRI pod (sandbox id) the container belongs to, sandbox included.
    #[serde(default)]
    pub pod: Option<String>,
    /// The serving shim's pid (0 in a state.json of an older idshift):
    /// `gc` tells a live shim's containers from a dead one's by it.
    #[serde(default)]
    pub shim_pid: i32,
    /// The task's bundle (containerd's): gone means containerd forgot it.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The serving shim's ttrpc socket (`unix://...`), for `gc` to remove
    /// once the shim is dead.
    #[serde(default)]
    pub socket: Option<String>,
}

/// A container's place in a CRI pod (containerd's CRI annotations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodRole {
    /// Not a CRI container.
    None,
    /// The pod's sandbox (`io.kubernetes.cri.container-type=sandbox`): it
    /// makes the pod's user namespace (and allocates the pod's range).
    Sandbox(String),
    /// A container of the pod whose sandbox id is given: it joins the
    /// pod's user namespace.
    Member(String),
}

const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

pub fn pod_role(id: &str, spec: &Spec) -> PodRole {
    let ann = spec.annotations().clone().unwrap_or_default();
    let sandbox = ann.get(CRI_SANDBOX_ID).filter(|s| !s.is_empty()).cloned();
    match ann.get(CRI_CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => PodRole::Sandbox(sandbox.unwrap_or_else(|| id.to_string())),
        Some("container") => sandbox.map_or(PodRole::None, PodRole::Member),
        _ => PodRole::None,
    }
}

/// A pod's user namespace, kept by the shim while the pod's sandbox lives,
/// for the pod's containers to join.
pub struct PodUserns {
    pub userns: UserNamespace,
    /// The host IDs of the pod's root (uid, gid).
    pub root: (u32, u32),
    /// The range idshift allocated for the pod (none when containerd passed
    /// the mappings).
    pub range: Option<userns::IdRange>,
}

impl PodUserns {
    pub fn try_clone(&self) -> Result<PodUserns, String> {
        Ok(PodUserns {
            userns: self.userns.try_clone().map_err(|e| e.to_string())?,
            root: self.root,
            range: self.range,
        })
    }
}

/// The IDs a CRI pod runs on, decided when its sandbox is created.
pub enum PodUsers {
    /// A user namespace, for the pod's containers to join.
    Userns(PodUserns),
    /// The host's IDs (no user namespace): the pod's containers too, unless
    /// their own spec asks for one.
    Host,
}

impl PodUsers {
    pub fn try_clone(&self) -> Result<PodUsers, String> {
        Ok(match self {
            PodUsers::Userns(u) => PodUsers::Userns(u.try_clone()?),
            PodUsers::Host => PodUsers::Host,
        })
    }
}

/// Why a pod's container cannot live in a user namespace of its own (over
/// an idshift range): it shares the host's PID namespace (a new user
/// namespace cannot mount proc for it) or IPC namespace, or is privileged
/// (holds `CAP_SYS_ADMIN`: e.g. it configures the pod's network, which
/// belongs to the host's user namespace).
pub fn host_access(spec: &Spec) -> Option<&'static str> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    if !has(LinuxNamespaceType::Pid) {
        return Some("it shares the host's PID namespace");
    }
    if !has(LinuxNamespaceType::Ipc) {
        return Some("it shares the host's IPC namespace");
    }
    let privileged = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .and_then(|c| c.bounding().clone())
        .is_some_and(|b| b.contains(&oci_spec::runtime::Capability::SysAdmin));
    privileged.then_some("it is privileged (CAP_SYS_ADMIN)")
}

/// A container's host side (its processes are the task service's).
pub struct Container {
    pub id: String,
    pub namespace: String,
    /// The init's pid (for its execs to join).
    pub init_pid: i32,
    pub cgroup: Option<Cgroup>,
    pub run_dir: PathBuf,
    pub persisted: Persisted,
    /// A sandbox's IDs, for the service to keep for the pod.
    pub pod_users: Option<PodUsers>,
    /// The bundle directory's identity at create: containerd removing it
    /// (or replacing it) means it forgot the container.
    pub bundle_id: Option<BundleId>,
    /// The spec's hooks (poststart and poststop run from the shim).
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The container's state for its hooks.
    pub state: crate::hooks::State,
    /// The spec's seccomp profile, which its execs run under too (as in
    /// runc): kept from the spec parsed at create.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// A directory's (device, inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleId(u64, u64);

impl BundleId {
    pub fn of(dir: &Path) -> std::io::Result<BundleId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir)?;
        Ok(BundleId(m.dev(), m.ino()))
    }
}

/// What Create was asked.
pub struct CreateRequest {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    /// The bundle's `config.json`, parsed once (by the task service).
    pub spec: Spec,
    pub rootfs: Vec<rootfs::MountSpec>,
    pub uris: StdioUris,
    pub config: Config,
    /// A pod member: the IDs of its pod (a user namespace to join).
    pub pod: Option<PodUsers>,
    /// The serving shim's socket.
    pub shim_socket: String,
    /// When the task service received the Create request (the log's total).
    pub received: Instant,
    /// The cgroup's v1 manager, if the shim made it ahead ([`ahead_of`]).
    pub cgroup_ahead: ManagerAhead,
}

/// The cgroup a container's spec asks for: `linux.cgroupsPath`, else (or
/// without a spec) `/idshift/NAMESPACE/ID`.
pub fn cgroup_path(spec: Option<&Spec>, namespace: &str, id: &str) -> String {
    spec.and_then(|s| s.linux().as_ref())
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("/idshift/{namespace}/{id}"))
}

/// What a serving shim makes for its first Create before the request
/// arrives, from the bundle it was started in (containerd writes it first):
/// the cgroup's libcgroups v1 manager ([`ManagerAhead`]), and the job that
/// makes it (for a thread of its own). The Create uses it only if its own
/// spec names the same cgroup.
pub fn ahead_of(
    bundle: PathBuf,
    namespace: String,
    id: String,
) -> (ManagerAhead, impl FnOnce() + Send + 'static) {
    ManagerAhead::new(move || {
        let spec = read_spec(&bundle).ok()?;
        let h = Hierarchy::detect().ok()?;
        let resources = spec.linux().as_ref()?.resources().clone()?;
        Some((h, cgroup_path(Some(&spec), &namespace, &id), resources))
    })
}

/// Per-phase timings and counts of a create, for the log.
#[derive(Debug, Default)]
pub struct CreateReport {
    pub userns_ms: f64,
    pub rootfs_ms: f64,
    pub init_ms: f64,
    /// The cgroup's creation and resources.
    pub cgroup_ms: f64,
    pub strategy: String,
    pub ops: rootfs::MountOps,
    pub range: Option<userns::IdRange>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The OCI annotation that chooses, for one container, between the host's
/// user namespace (`host`: no user namespace, the `plain` strategy, as runc
/// runs it) and one of its own over an idshift range (`private`, also under
/// `userns = "when-requested"`). Docker: `docker run --annotation
/// io.idshift.userns=host`.
pub const USERNS_ANNOTATION: &str = "io.idshift.userns";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsernsChoice {
    Host,
    Private,
}

/// The container's [`USERNS_ANNOTATION`], if any; an unknown value is
/// refused, naming it.
pub fn userns_annotation(spec: &Spec) -> Result<Option<UsernsChoice>, String> {
    let Some(v) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(USERNS_ANNOTATION))
    else {
        return Ok(None);
    };
    match v.as_str() {
        "host" => Ok(Some(UsernsChoice::Host)),
        "private" => Ok(Some(UsernsChoice::Private)),
        other => Err(format!(
            "annotation {USERNS_ANNOTATION}={other:?} is not understood (expected \"host\": the host's user namespace, or \"private\": one of the container's own)"
        )),
    }
}

pub fn run_dir(config: &Config, namespace: &str, id: &str) -> PathBuf {
    config.run_dir.join(namespace).join(id)
}

/// Undoes a partial create unless disarmed.
struct Undo {
    alloc: Option<(Allocator, String)>,
    cgroup: Option<Cgroup>,
    run_dir: Option<PathBuf>,
    pid: Option<i32>,
}

impl Undo {
    fn run(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(libc::SIGKILL);
            if let Err(e) = cg.delete() {
                log::error!("removing cgroup {} after a failed create: {e}", cg.path());
            }
        }
        if let Some((a, owner)) = self.alloc.take() {
            if let Err(e) = a.release(&owner) {
                log::error!("releasing the ID range of {owner} after a failed create: {e}");
            }
        }
        if let Some(d) = self.run_dir.take() {
            remove_run_dir(&d);
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.run();
    }
}

pub fn remove_run_dir(d: &Path) {
    remove_scratch(&d.join(SCRATCH));
    let _ = std::fs::remove_dir(d.join("rootfs"));
    let _ = std::fs::remove_file(d.join(STATE_TMP));
    let _ = std::fs::remove_file(d.join(STATE));
    if let Err(e) = std::fs::remove_dir(d) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::error!("removing run dir {}: {e}", d.display());
        }
    }
}

/// A container's scratch dir for temporary mounts, in its run dir.
const SCRATCH: &str = "tmp";
const STATE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";

/// Temporary mounts a rootfs build left in `scratch` (a shim killed while
/// building: `<scratch>/mnt-*/<mount point>`) detached, and the directories
/// removed.
fn remove_scratch(scratch: &Path) {
    let Ok(builds) = std::fs::read_dir(scratch) else {
        return;
    };
    for build in builds.flatten().map(|e| e.path()) {
        for point in std::fs::read_dir(&build).into_iter().flatten().flatten() {
            let point = point.path();
            // EINVAL: not a mount point (any more).
            match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => log::error!("detaching {}: {e}", point.display()),
            }
            if let Err(e) = std::fs::remove_dir(&point) {
                log::error!("removing {}: {e}", point.display());
            }
        }
        if let Err(e) = std::fs::remove_dir(&build) {
            log::error!("removing {}: {e}", build.display());
        }
    }
    if let Err(e) = std::fs::remove_dir(scratch) {
        log::error!("removing {}: {e}", scratch.display());
    }
}

/// The allocator's owner name of a container's range.
pub fn range_owner(namespace: &str, id: &str) -> String {
    format!("{namespace}/{id}").replace('/', ":")
}

/// Writes `<run_dir>/state.json` atomically (a temporary file renamed over
/// it): `shim delete` finds the old record or the new one, never a torn one.
pub fn write_persisted(run_dir: &Path, p: &Persisted) -> Result<(), String> {
    let state = serde_json::to_vec(p).map_err(|e| format!("serialising the state: {e}"))?;
    let tmp = run_dir.join(STATE_TMP);
    let path = run_dir.join(STATE);
    write_private(&tmp, &state)
        .and_then(|_| {
            std::fs::rename(&tmp, &path).map_err(|e| format!("writing {}: {e}", path.display()))
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Writes a state file readable by root only (0600 whatever the umask):
/// it names the container's host ID range, cgroup and pid.
fn write_private(p: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| format!("writing {}: {e}", p.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map_err(err)?;
    // An existing file keeps its mode: make it 0600 too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

fn mkdir_mode(p: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn to_maps(m: &[LinuxIdMapping]) -> Vec<IdMap> {
    m.iter()
        .map(|x| IdMap {
            container_id: x.container_id(),
            host_id: x.host_id(),
            size: x.size(),
        })
        .collect()
}

/// The host ID that container ID 0 maps to.
fn host_root(maps: &[IdMap], what: &str) -> Result<u32, String> {
    maps.iter()
        .find(|m| m.container_id == 0)
        .map(|m| m.host_id)
        .ok_or_else(|| format!("the spec's {what} mappings do not map container ID 0"))
}

/// Security settings idshift cannot apply yet are refused, never ignored.
pub fn refuse_unsupported(spec: &Spec) -> Result<(), String> {
    if let Some(p) = spec.process() {
        if p.apparmor_profile().as_ref().is_some_and(|a| !a.is_empty()) {
            return Err("the spec sets an AppArmor profile (process.apparmorProfile), which idshift does not apply".into());
        }
        if p.selinux_label().as_ref().is_some_and(|a| !a.is_empty()) {
            return Err("the spec sets an SELinux label (process.selinuxLabel), which idshift does not apply".into());
        }
        if let Some(s) = p.scheduler() {
            crate::init::scheduler_attr(s)?;
        }
        if let Some(io) = p.io_priority() {
            crate::init::io_priority_value(io)?;
        }
        if p.exec_cpu_affinity().is_some() {
            return Err(
                "process.execCPUAffinity is not supported by idshift (it is refused, not ignored)"
                    .into(),
            );
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(
            "the spec sets an SELinux mount label (linux.mountLabel), which idshift does not apply"
                .into(),
        );
    }
    if linux.intel_rdt().is_some() {
        return Err(
            "linux.intelRdt is not supported by idshift (it is refused, not ignored)".into(),
        );
    }
    if linux.memory_policy().is_some() {
        return Err(
            "linux.memoryPolicy is not supported by idshift (it is refused, not ignored)".into(),
        );
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(
            "linux.netDevices is not supported by idshift (it is refused, not ignored)".into(),
        );
    }
    if linux
        .personality()
        .as_ref()
        .is_some_and(|p| p.flags().as_ref().is_some_and(|f| !f.is_empty()))
    {
        return Err(
            "linux.personality.flags are not supported (no flag is defined by the runtime spec)"
                .into(),
        );
    }
    let own = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    // As runc: the names are set in a UTS namespace of the container's (new,
    // or joined by path as a CRI pod's containers join their sandbox's).
    let uts = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Uts);
    for (field, set) in [
        (
            "hostname",
            spec.hostname().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        (
            "domainname",
            spec.domainname().as_ref().is_some_and(|h| !h.is_empty()),
        ),
    ] {
        if set && !uts {
            return Err(format!(
                "the spec sets {field} but has no UTS namespace of its own (linux.namespaces has no \"uts\")"
            ));
        }
    }
    let offsets = linux.time_offsets().clone().unwrap_or_default();
    if !offsets.is_empty() {
        if !own(LinuxNamespaceType::Time) {
            return Err("linux.timeOffsets needs a time namespace of the container's own (linux.namespaces has no \"time\" without a path)".into());
        }
        for clock in offsets.keys() {
            if clock != "monotonic" && clock != "boottime" {
                return Err(format!(
                    "linux.timeOffsets: clock {clock:?} is not monotonic or boottime"
                ));
            }
        }
    }
    Ok(())
}

/// The bundle's `config.json`. Parsed here rather than by `Spec::load`,
/// whose error is only "serde failed": serde's says what is wrong and where
/// (`unknown variant `bogus``, `EOF while parsing ... at line 1 column 80`).
pub fn read_spec(bundle: &Path) -> Result<Spec, String> {
    let p = bundle.join("config.json");
    let text =
        std::fs::read(&p).map_err(|e| format!("reading the OCI spec {}: {e}", p.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("the OCI spec {} is invalid: {e}", p.display()))
}

/// `CLONE_NEW*` of an OCI namespace type.
fn clone_flag(t: LinuxNamespaceType) -> i32 {
    match t {
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The OCI name of an rlimit type (`RLIMIT_NOFILE`).
pub fn rlimit_name(t: &oci_spec::runtime::PosixRlimitType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}"))
}

/// Values of a process spec the kernel would refuse, refused with the
/// field named before anything is made: an rlimit whose soft limit is above
/// its hard one, an `oomScoreAdj` outside -1000..1000, a relative `cwd`.
pub fn validate_process(process: &oci_spec::runtime::Process) -> Result<(), String> {
    if !process.cwd().is_absolute() {
        return Err(format!(
            "process.cwd {:?} is not an absolute path",
            process.cwd()
        ));
    }
    for r in process.rlimits().iter().flatten() {
        if r.soft() > r.hard() {
            return Err(format!(
                "process.rlimits {}: the soft limit {} is above the hard limit {}",
                rlimit_name(&r.typ()),
                r.soft(),
                r.hard()
            ));
        }
    }
    crate::init::check_capabilities(process)?;
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(format!(
                "process.oomScoreAdj {adj} is outside the kernel's range -1000..1000"
            ));
        }
    }
    Ok(())
}

/// What can be checked in the spec before anything is made: the process
/// ([`validate_process`]) and that every namespace given by path is a
/// namespace of its type (the user namespace is checked where it is
/// opened).
pub fn validate_spec(spec: &Spec) -> Result<(), String> {
    if let Some(p) = spec.process() {
        validate_process(p)?;
    }
    crate::hooks::validate(spec.hooks().as_ref())?;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::User)
    {
        if let Some(path) = ns.path() {
            let flag = clone_flag(ns.typ());
            userns::open_namespace(path, flag).map_err(|e| {
                format!(
                    "linux.namespaces: the {} namespace's path: {e}",
                    userns::namespace_name(flag)
                )
            })?;
        }
    }
    Ok(())
}

impl Container {
    /// Creates the container and its first process, waiting for Start.
    /// Blocking: run it on a blocking thread (within the runtime).
    pub fn create(mut req: CreateRequest) -> Result<(Container, Process, CreateReport), String> {
        let mut report = CreateReport::default();
        let cfg = &req.config;
        let mut spec = std::mem::take(&mut req.spec);
        refuse_unsupported(&spec)?;
        validate_spec(&spec)?;
        // The container's cgroup is joined last, but the kernel's wait for
        // it can start now (cgroup/warm.rs).
        let h = Hierarchy::detect().map_err(|e| e.to_string())?;
        crate::cgroup::start_grace_period(&h);
        // linux.resources as given: the cgroup checks and applies them
        // (a systemd scope exists only once the init is in it).
        let resources = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        let cg_path = cgroup_path(Some(&spec), &req.namespace, &req.id);
        let features = rootfs::probe_cached(&cfg.state_dir, &cfg.run_dir.join("probe.json"))
            .map_err(|e| format!("probing the kernel: {e}"))?;
        let mut strategy = features.resolve(cfg.strategy).map_err(|e| e.to_string())?;
        let role = pod_role(&req.id, &spec);
        report.strategy = strategy.to_string();
        let mut undo = Undo {
            alloc: None,
            cgroup: None,
            run_dir: None,
            pid: None,
        };
        let mut persisted = Persisted {
            state_dir: cfg.state_dir.clone(),
            pool_start: cfg.pool.start,
            pool_size: cfg.pool.size,
            range_size: cfg.pool.range_size,
            pod: match &role {
                PodRole::Sandbox(p) | PodRole::Member(p) => Some(p.clone()),
                PodRole::None => None,
            },
            shim_pid: std::process::id() as i32,
            bundle: Some(req.bundle.clone()),
            socket: Some(req.shim_socket.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        };
        let bundle_id = BundleId::of(&req.bundle).ok();

        // 0. The run dir and state.json first: from here on, whatever create
        // acquires is recorded (before it is acquired) so that `shim delete`
        // can undo it if the shim dies part-way.
        let run_dir = run_dir(cfg, &req.namespace, &req.id);
        for d in [&cfg.run_dir, &cfg.run_dir.join(&req.namespace)] {
            mkdir_mode(d, 0o711)?;
        }
        if run_dir.exists() {
            return Err(format!(
                "container {} already has a run dir {}",
                req.id,
                run_dir.display()
            ));
        }
        mkdir_mode(&run_dir, 0o711)?;
        undo.run_dir = Some(run_dir.clone());
        write_persisted(&run_dir, &persisted)?;

        // The first process starts now: its exec and loading overlap the
        // user namespace, cgroup and rootfs steps below. Until it is sent
        // its set-up it does nothing; dropped (a failure), it is killed.
        let t = Instant::now();
        let (stdio, io) = ProcessIo::prepare(&req.uris, &req.id, &req.namespace)
            .map_err(|e| format!("setting up stdio: {e}"))?;
        let mut helper = process::Helper::spawn(stdio)?;
        let mut init_ms = ms(t);

        // 1. The user namespace and the host root it maps.
        let t = Instant::now();
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        let user = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::User)
            .cloned();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::User);
        let uid_maps = to_maps(&linux.uid_mappings().clone().unwrap_or_default());
        let gid_maps = to_maps(&linux.gid_mappings().clone().unwrap_or_default());
        let requested = user.is_some() || !uid_maps.is_empty() || !gid_maps.is_empty();
        let choice = userns_annotation(&spec)?;
        if choice.is_some() && (req.pod.is_some() || role != PodRole::None) {
            return Err(format!(
                "annotation {USERNS_ANNOTATION} is per container, but {} belongs to a pod, whose containers share the pod's user namespace",
                req.id
            ));
        }
        match choice {
            Some(UsernsChoice::Host) if requested => {
                return Err(format!(
                    "annotation {USERNS_ANNOTATION}=host asks for the host's user namespace, but the spec asks for a user namespace (linux.namespaces or linux.uidMappings/gidMappings)"
                ))
            }
            Some(UsernsChoice::Private) if strategy == rootfs::Strategy::Plain => {
                return Err(format!(
                    "annotation {USERNS_ANNOTATION}=private asks for a user namespace, but idshift's configured strategy is \"plain\" (no user namespaces)"
                ))
            }
            Some(UsernsChoice::Host) => {
                strategy = rootfs::Strategy::Plain;
                report.strategy = strategy.to_string();
            }
            Some(UsernsChoice::Private) => {}
            None => {
                let host_ids = !requested
                    && match (&role, &req.pod) {
                        (PodRole::None, _) => cfg.userns == UsernsMode::WhenRequested,
                        (_, Some(PodUsers::Host)) => true,
                        // The sandbox asked for none: as runc, the host's IDs.
                        (_, None) if cfg.pod_userns == PodUsernsMode::AsRequested => true,
                        // A container of a pod with a user namespace joins it.
                        (_, Some(PodUsers::Userns(_))) if cfg.pod_userns == PodUsernsMode::AsRequested => {
                            false
                        }
                        _ => match (host_access(&spec), cfg.pod_host_access) {
                            (None, _) => false,
                            (Some(_), HostAccess::HostIds) => true,
                            (Some(why), HostAccess::Refuse) => {
                                return Err(format!(
                                    "container {} runs in its pod's own ID range (pod_userns = \"own-range\"), but {why}, and pod_host_access = \"refuse\"",
                                    req.id
                                ))
                            }
                        },
                    };
                if host_ids {
                    strategy = rootfs::Strategy::Plain;
                    report.strategy = strategy.to_string();
                }
            }
        }
        let ns = if strategy == rootfs::Strategy::Plain {
            if user.is_some() {
                return Err("rootfs strategy \"plain\" runs containers without a user namespace, but the spec asks for one".into());
            }
            None
        } else if let Some(path) = user.as_ref().and_then(|u| u.path().clone()) {
            let ns = UserNamespace::open(&path).map_err(|e| e.to_string())?;
            let root = (host_root(&uid_maps, "uid")?, host_root(&gid_maps, "gid")?);
            Some((ns, root))
        } else if !uid_maps.is_empty() || !gid_maps.is_empty() {
            let ns =
                UserNamespace::create_owned(&uid_maps, &gid_maps).map_err(|e| e.to_string())?;
            let root = (host_root(&uid_maps, "uid")?, host_root(&gid_maps, "gid")?);
            Some((ns, root))
        } else if let Some(PodUsers::Userns(pod)) = &req.pod {
            // A container of a pod: the pod's user namespace and range.
            let ns = pod.userns.try_clone().map_err(|e| e.to_string())?;
            if let Some(range) = pod.range {
                let map = range.to_map();
                linux.set_uid_mappings(Some(vec![id_mapping(&map)?]));
                linux.set_gid_mappings(Some(vec![id_mapping(&map)?]));
                report.range = Some(range);
            }
            Some((ns, pod.root))
        } else if let PodRole::Member(pod) = &role {
            return Err(format!(
                "container {} of pod {pod}: this shim does not serve the pod's sandbox, whose user namespace it must join",
                req.id
            ));
        } else {
            cfg.check_kubelet_subids()?;
            let alloc = Allocator::open(cfg.allocator()).map_err(|e| e.to_string())?;
            let owner = range_owner(&req.namespace, &req.id);
            // Recorded before it is allocated: releasing an owner that holds
            // nothing is harmless, a range allocated and not recorded leaks.
            persisted.range_owner = Some(owner.clone());
            write_persisted(&run_dir, &persisted)?;
            let range = alloc.allocate(&owner).map_err(|e| {
                format!(
                    "allocating a host ID range (pool {}+{} in {}): {e}",
                    cfg.pool.start,
                    cfg.pool.size,
                    cfg.state_dir.display()
                )
            })?;
            undo.alloc = Some((alloc, owner.clone()));
            report.range = Some(range);
            let ns = UserNamespace::for_range(range).map_err(|e| e.to_string())?;
            let map = range.to_map();
            linux.set_uid_mappings(Some(vec![id_mapping(&map)?]));
            linux.set_gid_mappings(Some(vec![id_mapping(&map)?]));
            Some((ns, (range.base, range.base)))
        };
        crate::faultpoint::pause("userns", &cfg.run_dir, &req.id);
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        report.userns_ms = ms(t);
        helper.mark("user namespace");

        // 2. The rootfs: planned (and checked) now, built once the first
        // process has its set-up and makes its namespaces.
        let t = Instant::now();
        let plan = if req.rootfs.is_empty() {
            let root = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_else(|| "rootfs".into());
            let source = if root.is_absolute() {
                root
            } else {
                req.bundle.join(root)
            };
            if strategy == rootfs::Strategy::Plain {
                rootfs::RootfsPlan::Bind(rootfs::BindPlan {
                    source,
                    recursive: true,
                    attrs: rootfs::MountAttrFlags::empty(),
                    idmap: None,
                })
            } else {
                // A rootfs the caller mounted (Docker, `ctr run --rootfs`):
                // an overlay is rebuilt from its layers, idmapped; a
                // directory is cloned and idmapped.
                let plan = rootfs::premounted_plan(&source).map_err(|e| e.to_string())?;
                if let rootfs::RootfsPlan::Overlay(o) = &plan {
                    log::info!(
                        "{}: root.path {} is an overlay the caller mounted: building idshift's own overlay of its {} layers (the caller's mount is left as it is)",
                        req.id,
                        source.display(),
                        o.lowers.len()
                    );
                }
                plan
            }
        } else {
            rootfs::plan(&req.rootfs, &req.bundle)
                .map_err(|e| format!("invalid rootfs mounts: {e}"))?
        };
        if let Some(want) = plan.idmap() {
            check_mount_idmap(want, &spec, ns.is_some())?;
        }
        let target = run_dir.join("rootfs");
        mkdir_mode(&target, 0o755)?;
        // The container's own scratch dir: temporary mounts a dead shim
        // left there are detached by its cleanup (`remove_run_dir`).
        let scratch = run_dir.join(SCRATCH);
        mkdir_mode(&scratch, 0o700)?;
        let rootfs_plan_ms = ms(t);
        let hooks = spec.hooks().clone();
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let oom_score_adj = spec.process().as_ref().and_then(|p| p.oom_score_adj());
        let state = crate::hooks::State::of(&spec, &req.id, &req.bundle);

        // From here the rootfs is built on a thread of its own, while this
        // one makes the cgroup and sends the first process its set-up; the
        // process joins the cgroup and makes its namespaces meanwhile, then
        // waits for the rootfs. (On an early return the scope waits for the
        // build, and the built mount is dropped: unmounted.)
        let (cgroup, mut setting_up, (built, build_ms), binds_ms) =
            std::thread::scope(|scope| -> Result<_, String> {
                let building = scope.spawn(|| {
                    let t = Instant::now();
                    rootfs::build_with(
                        &crate::faultpoint::PausingSys::new(&cfg.run_dir, &req.id),
                        &plan,
                        &rootfs::BuildOptions {
                            strategy,
                            features: &features,
                            idmap: ns.as_ref().map(|(ns, (u, g))| rootfs::Idmap {
                                userns: ns.fd(),
                                root_uid: *u,
                                root_gid: *g,
                            }),
                            scratch_dir: &scratch,
                        },
                    )
                    .map(|built| (built, ms(t)))
                    .map_err(|e| format!("building the rootfs: {e}"))
                });

                // 3. The cgroup (recorded before it is made).
                let t = Instant::now();
                persisted.cgroup = Some(cg_path.clone());
                write_persisted(&run_dir, &persisted)?;
                undo.cgroup = Some(Cgroup::open(&h, &cg_path));
                let cgroup = Cgroup::create(&h, &cg_path).map_err(|e| e.to_string())?;
                // What the spec asks that is refused is refused now, before
                // any process is in the cgroup.
                cgroup.check_for(&resources).map_err(|e| e.to_string())?;
                report.cgroup_ms = ms(t);
                helper.mark("cgroup made");

                // 2, continued. The idmapped bind mounts, which the set-up
                // message carries. A container (or pod) in a range of
                // idshift's own sees the files bound in (kubelet's hosts and
                // resolv.conf, volumes, `docker -v`) as under runc: every
                // bind mount is idmapped into its user namespace, unless the
                // config says `binds = "shifted"`.
                let t = Instant::now();
                absolute_bind_sources(&mut spec, &req.bundle);
                let idmap_binds =
                    report.range.is_some() && cfg.binds == crate::config::BindsMode::Idmapped;
                let (idmapped_mounts, idmapped_fds) =
                    idmapped_mounts(&spec, ns.as_ref().map(|(ns, _)| ns), idmap_binds)?;
                let binds_ms = ms(t);

                // 4. The first process: in its cgroup (the device rules
                // first) and sent its set-up.
                let t = Instant::now();
                let msg = ToInit::Container(Box::new(ContainerInit {
                    state: state.clone(),
                    spec,
                    rootfs_target: target,
                    userns: ns.is_some(),
                    idmapped_mounts,
                    cgroups: cgroup.view().map_err(|e| e.to_string())?,
                    fail_after_mounts: crate::faultpoint::fail_wanted("mounts"),
                }));
                let mut fds = Vec::new();
                if let Some((ns, _)) = &ns {
                    fds.push(ns.fd().as_raw_fd());
                }
                fds.extend(idmapped_fds.iter().map(|f| f.as_raw_fd()));
                let apply_devices = || cgroup.apply_devices(&resources).map_err(|e| e.to_string());
                let setting_up =
                    helper.send_setup(&msg, &fds, Some(&cgroup), Some(&apply_devices))?;
                init_ms += ms(t);
                let built = building
                    .join()
                    .unwrap_or_else(|_| Err("building the rootfs: the thread panicked".into()))?;
                Ok((cgroup, setting_up, built, binds_ms))
            })?;

        // 2, continued. The rootfs handed to the init.
        report.ops = built.ops;
        setting_up.send_rootfs(built.mount.as_fd())?;
        drop(built);
        report.rootfs_ms = rootfs_plan_ms + build_ms + binds_ms;
        setting_up.mark("rootfs sent");
        crate::faultpoint::pause("rootfs", &cfg.run_dir, &req.id);

        // 3, continued. The other resources, while the init sets itself up.
        let t = Instant::now();
        cgroup
            .apply_except_devices(&resources, std::mem::take(&mut req.cgroup_ahead))
            .map_err(|e| e.to_string())?;
        report.cgroup_ms += ms(t);
        setting_up.mark("resources applied");

        // 4, continued. The init ready and waiting for Start.
        let t = Instant::now();
        let runtime_hooks = |pid: i32| {
            let s = state.with("creating", pid);
            for p in [
                crate::hooks::Point::Prestart,
                crate::hooks::Point::CreateRuntime,
            ] {
                crate::hooks::run_from_shim(p, &p.of(hooks.as_ref()), &s)?;
            }
            Ok(())
        };
        let (mut init, pty) = setting_up.wait_ready(io, &runtime_hooks, oom_score_adj)?;
        undo.pid = Some(init.pid);
        // The init is in the cgroup already (killed with it); its pid too.
        persisted.pid = init.pid;
        write_persisted(&run_dir, &persisted)?;
        // A sandbox's user namespace (or the host's IDs) is kept for the
        // pod's containers.
        let pod_users = match (&role, ns) {
            (PodRole::Sandbox(_), Some((userns, root))) => Some(PodUsers::Userns(PodUserns {
                userns,
                root,
                range: report.range,
            })),
            (PodRole::Sandbox(_), None) => Some(PodUsers::Host),
            _ => None,
        };
        if let Some(master) = pty {
            init.io
                .attach_pty(&req.uris, master)
                .map_err(|e| format!("connecting the terminal: {e}"))?;
        }
        report.init_ms = init_ms + ms(t);
        crate::faultpoint::pause("init", &cfg.run_dir, &req.id);
        // Success: nothing to undo.
        undo.alloc = None;
        undo.cgroup = None;
        undo.run_dir = None;
        undo.pid = None;
        Ok((
            Container {
                id: req.id,
                namespace: req.namespace,
                init_pid: init.pid,
                cgroup: Some(cgroup),
                run_dir,
                persisted,
                pod_users,
                bundle_id,
                hooks,
                state,
                seccomp,
            },
            init,
            report,
        ))
    }

    /// Releases what the container holds on the host (after its processes
    /// are gone): cgroup, ID range, run dir. Idempotent.
    pub fn cleanup(&mut self) {
        cleanup_persisted(&self.persisted, &self.run_dir);
    }
}

/// Bind mount sources relative to the bundle (as OCI allows) made
/// absolute: the container's process does not run in the bundle.
fn absolute_bind_sources(spec: &mut Spec, bundle: &Path) {
    let Some(mut mounts) = spec.mounts().clone() else {
        return;
    };
    for m in &mut mounts {
        let bind = m.typ().as_deref() == Some("bind")
            || crate::mounts::parse_options(&m.options().clone().unwrap_or_default()).is_bind();
        if let (true, Some(src)) = (bind, m.source().clone()) {
            if src.is_relative() {
                m.set_source(Some(bundle.join(src)));
            }
        }
    }
    spec.set_mounts(Some(mounts));
}

/// Detached, idmapped clones of the spec's idmapped bind mounts (those
/// with `idmap`/`ridmap` or mappings of their own), built here on the host
/// like the rootfs and attached by the container's process inside its own
/// mount namespace: their indices in `spec.mounts`, and the mounts.
fn idmapped_mounts(
    spec: &Spec,
    container_ns: Option<&UserNamespace>,
    idmap_binds: bool,
) -> Result<(Vec<usize>, Vec<OwnedFd>), String> {
    let mut indices = Vec::new();
    let mut trees = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let o = crate::mounts::parse_options(&m.options().clone().unwrap_or_default());
        let asked = crate::mounts::idmap_request(m)?;
        let implied =
            (asked.is_none() && idmap_binds && (o.is_bind() || m.typ().as_deref() == Some("bind")))
                .then(|| {
                    let rec = o.flags.contains(nix::mount::MsFlags::MS_REC);
                    // `attrs`: the idmap reaches every submount.
                    rootfs::BindRecursion {
                        clone: rec,
                        attrs: rec,
                    }
                });
        let Some(recursion) = asked.or(implied) else {
            continue;
        };
        let dest = m.destination().display();
        let source = m
            .source()
            .clone()
            .ok_or_else(|| format!("idmapped mount {dest} has no source"))?;
        let own;
        let userns = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => {
                own = UserNamespace::create(&to_maps(u), &to_maps(g))
                    .map_err(|e| format!("idmapped mount {dest}: its mappings: {e}"))?;
                own.fd()
            }
            _ => container_ns
                .ok_or_else(|| {
                    format!(
                        "idmapped mount {dest} (no mappings of its own) needs the container's user namespace, and it has none (strategy plain)"
                    )
                })?
                .fd(),
        };
        // An idmap the policy implies covers the whole tree, but the mount's
        // own flags (`ro`, `nosuid`, ...) stay on its top mount, as mount(2)
        // sets them on a bind without idmap.
        let flags = crate::mounts::mount_attrs(o.flags);
        let attrs = if implied.is_some() {
            rootfs::MountAttrFlags::empty()
        } else {
            flags
        };
        let built = rootfs::detached_bind(&source, recursion, attrs, Some(userns)).and_then(|t| {
            if implied.is_some() && !flags.is_empty() {
                rootfs::set_top_attrs(t.as_fd(), flags, &source)?;
            }
            Ok(t)
        });
        let tree = match built {
            Ok(t) => t,
            Err(e) if implied.is_some() => {
                // Not every filesystem can be idmapped (e.g. devtmpfs): such
                // a mount is bound as it is, its files seen with their host
                // owners, as without the policy.
                log::warn!(
                    "bind mount {dest} of {} is not idmapped ({e}): bound with its host owners",
                    source.display()
                );
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "idmapped mount {dest} of {}: {e}",
                    source.display()
                ))
            }
        };
        indices.push(i);
        trees.push(tree);
    }
    if trees.len() + 2 > crate::channel::MAX_FDS {
        return Err(format!(
            "the spec has {} idmapped mounts; idshift supports at most {}",
            trees.len(),
            crate::channel::MAX_FDS - 2
        ));
    }
    Ok((indices, trees))
}

fn id_mapping(m: &IdMap) -> Result<LinuxIdMapping, String> {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(m.container_id)
        .host_id(m.host_id)
        .size(m.size)
        .build()
        .map_err(|e| format!("building an ID mapping: {e}"))
}

/// Cleanup shared by Delete and `shim delete`: kill what is left, remove the
/// cgroup, release the range, remove the run dir.
pub fn cleanup_persisted(p: &Persisted, run_dir: &Path) {
    if let Some(path) = &p.cgroup {
        match Hierarchy::detect() {
            Ok(h) => {
                let cg = Cgroup::open(&h, path);
                let _ = cg.kill_all(libc::SIGKILL);
                if let Err(e) = cg.delete() {
                    log::error!("removing cgroup {path}: {e}");
                }
            }
            Err(e) => log::error!("finding the cgroup hierarchy: {e}"),
        }
    }
    if let (Some(pod), Some(_)) = (&p.pod, &p.range_owner) {
        kill_pod_members(pod, run_dir);
    }
    if let Some(owner) = &p.range_owner {
        let cfg = userns::AllocatorConfig {
            state_dir: p.state_dir.clone(),
            pool_start: p.pool_start,
            pool_size: p.pool_size,
            range_size: p.range_size,
        };
        match Allocator::open(cfg).and_then(|a| a.release(owner)) {
            Ok(_) => {}
            Err(e) => log::error!("releasing the ID range of {owner}: {e}"),
        }
    }
    remove_run_dir(run_dir);
}

pub fn read_persisted(run_dir: &Path) -> Option<Persisted> {
    let text = std::fs::read(run_dir.join("state.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Before a pod's range is released (its sandbox deleted, or cleaned up
/// after a dead shim), every process of the pod's other containers is
/// killed: none may run on in a range that can be handed to another pod.
/// Their own delete removes the rest.
fn kill_pod_members(pod: &str, sandbox_run_dir: &Path) {
    let Some(ns_dir) = sandbox_run_dir.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(ns_dir) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        if dir == sandbox_run_dir {
            continue;
        }
        let Some(m) = read_persisted(&dir).filter(|m| m.pod.as_deref() == Some(pod)) else {
            continue;
        };
        if let Some(path) = &m.cgroup {
            if let Ok(h) = Hierarchy::detect() {
                let _ = Cgroup::open(&h, path).kill_all(libc::SIGKILL);
            }
        } else if m.pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(m.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// containerd 2.x's `uidmap=`/`gidmap=` rootfs options ask for the layers
/// idmapped with those mappings; idshift's single idmapped clone uses the
/// container's user namespace, whose mappings are the spec's: they must be
/// the same (extent for extent), or the create is refused naming both.
fn check_mount_idmap(
    want: &rootfs::MountIdmap,
    spec: &Spec,
    has_userns: bool,
) -> Result<(), String> {
    let asked = format!(
        "uidmap={} gidmap={}",
        rootfs::format_extents(&want.uid),
        rootfs::format_extents(&want.gid)
    );
    if !has_userns {
        return Err(format!(
            "the rootfs mount options ask for the layers idmapped ({asked}), but the container runs without a user namespace"
        ));
    }
    let of = |maps: &Option<Vec<LinuxIdMapping>>| -> Vec<rootfs::IdExtent> {
        maps.iter()
            .flatten()
            .map(|m| rootfs::IdExtent {
                container: m.container_id(),
                host: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    let linux = spec.linux().clone().unwrap_or_default();
    let (uid, gid) = (of(linux.uid_mappings()), of(linux.gid_mappings()));
    if uid != want.uid || gid != want.gid {
        let show = |e: &[rootfs::IdExtent]| {
            if e.is_empty() {
                "none".to_string()
            } else {
                rootfs::format_extents(e)
            }
        };
        return Err(format!(
            "the rootfs mount options' idmapping ({asked}) differs from the spec's user namespace mappings (linux.uidMappings {}, linux.gidMappings {}): the layers are idmapped into the container's user namespace, so they must be the same",
            show(&uid),
            show(&gid)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userns_annotation_values() {
        let with = |v: Option<&str>| {
            let mut j = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
            if let Some(v) = v {
                j["annotations"] = serde_json::json!({ USERNS_ANNOTATION: v });
            }
            userns_annotation(&spec_from(j).expect("spec"))
        };
        assert_eq!(with(None), Ok(None));
        assert_eq!(with(Some("host")), Ok(Some(UsernsChoice::Host)));
        assert_eq!(with(Some("private")), Ok(Some(UsernsChoice::Private)));
        let err = with(Some("Host")).expect_err("case matters");
        assert!(
            err.contains("annotation io.idshift.userns=\"Host\" is not understood"),
            "{err}"
        );
    }

    #[test]
    fn mount_idmap_must_be_the_specs_mappings() {
        let spec = spec_from(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 262144, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 262144, "size": 65536}]
            }
        }))
        .expect("spec");
        let e = |host, size| rootfs::IdExtent {
            container: 0,
            host,
            size,
        };
        let same = rootfs::MountIdmap {
            uid: vec![e(262144, 65536)],
            gid: vec![e(262144, 65536)],
        };
        assert_eq!(check_mount_idmap(&same, &spec, true), Ok(()));
        let other = rootfs::MountIdmap {
            uid: vec![e(262144, 65536)],
            gid: vec![e(327680, 65536)],
        };
        let err = check_mount_idmap(&other, &spec, true).expect_err("differs");
        assert!(
            err.contains("(uidmap=0:262144:65536 gidmap=0:327680:65536)")
                && err.contains(
                    "(linux.uidMappings 0:262144:65536, linux.gidMappings 0:262144:65536)"
                ),
            "{err}"
        );
        let err = check_mount_idmap(&same, &spec, false).expect_err("no userns");
        assert!(err.contains("without a user namespace"), "{err}");
        let bare = spec_from(serde_json::json!({"ociVersion": "1.0.2"})).expect("spec");
        let err = check_mount_idmap(&same, &bare, true).expect_err("none");
        assert!(
            err.contains("linux.uidMappings none, linux.gidMappings none"),
            "{err}"
        );
    }

    fn spec_from(json: serde_json::Value) -> Result<Spec, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("config.json"), json.to_string())
            .map_err(|e| e.to_string())?;
        read_spec(dir.path())
    }

    #[test]
    fn fields_idshift_cannot_apply_are_refused_by_name() {
        let base = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"]},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}]},
        });
        assert_eq!(
            refuse_unsupported(&spec_from(base.clone()).expect("spec")),
            Ok(())
        );
        let cases = [
            (
                "/process/scheduler",
                serde_json::json!({"policy": "SCHED_OTHER", "nice": 20}),
                "process.scheduler.nice 20 is not between -20 and 19",
            ),
            (
                "/process/scheduler",
                serde_json::json!({"policy": "SCHED_BATCH", "priority": 5}),
                "process.scheduler.priority 5 is only for SCHED_FIFO or SCHED_RR, not SCHED_BATCH",
            ),
            (
                "/process/scheduler",
                serde_json::json!({"policy": "SCHED_FIFO", "priority": 100}),
                "process.scheduler.priority 100 is not between 1 and 99",
            ),
            (
                "/process/scheduler",
                serde_json::json!({"policy": "SCHED_OTHER", "runtime": 1000}),
                "only for SCHED_DEADLINE",
            ),
            (
                "/process/ioPriority",
                serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 8}),
                "process.ioPriority.priority 8 is not between 0 and 7",
            ),
            (
                "/linux/intelRdt",
                serde_json::json!({"closID": "x"}),
                "linux.intelRdt",
            ),
            (
                "/linux/mountLabel",
                serde_json::json!("x"),
                "linux.mountLabel",
            ),
            (
                "/linux/netDevices",
                serde_json::json!({"eth1": {}}),
                "linux.netDevices",
            ),
            (
                "/linux/memoryPolicy",
                serde_json::json!({"mode": "MPOL_BIND", "nodes": "0"}),
                "linux.memoryPolicy",
            ),
            (
                "/linux/timeOffsets",
                serde_json::json!({"monotonic": {"secs": 1}}),
                "linux.timeOffsets needs a time namespace",
            ),
        ];
        for (path, value, want) in cases {
            let mut j = base.clone();
            let (parent, key) = path.rsplit_once('/').expect("path");
            j.pointer_mut(parent).expect("parent")[key] = value;
            let e = refuse_unsupported(&spec_from(j).expect("spec")).expect_err(path);
            assert!(e.contains(want), "{path}: {e}");
        }
        // A valid scheduler (with flags) and ioPriority are accepted.
        let mut sch = base.clone();
        sch["process"]["scheduler"] = serde_json::json!({
            "policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_RESET_ON_FORK"],
        });
        sch["process"]["ioPriority"] =
            serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 7});
        assert_eq!(refuse_unsupported(&spec_from(sch).expect("spec")), Ok(()));
        // timeOffsets with a time namespace: accepted for monotonic and
        // boottime only.
        let mut t = base.clone();
        t["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(serde_json::json!({"type": "time"}));
        t["linux"]["timeOffsets"] = serde_json::json!({"monotonic": {"secs": 1}});
        assert_eq!(
            refuse_unsupported(&spec_from(t.clone()).expect("spec")),
            Ok(())
        );
        t["linux"]["timeOffsets"] = serde_json::json!({"realtime": {"secs": 1}});
        let e = refuse_unsupported(&spec_from(t).expect("spec")).expect_err("realtime");
        assert!(e.contains("realtime"), "{e}");
        // hostname without a UTS namespace of its own.
        let mut h = base;
        h["hostname"] = serde_json::json!("h");
        assert_eq!(
            refuse_unsupported(&spec_from(h.clone()).expect("spec")),
            Ok(())
        );
        // A joined UTS namespace (a CRI pod's container) is one, as in runc.
        h["linux"]["namespaces"] =
            serde_json::json!([{"type": "mount"}, {"type": "uts", "path": "/proc/1/ns/uts"}]);
        assert_eq!(
            refuse_unsupported(&spec_from(h.clone()).expect("spec")),
            Ok(())
        );
        h["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
        let e = refuse_unsupported(&spec_from(h).expect("spec")).expect_err("no uts");
        assert!(e.contains("hostname but has no UTS namespace"), "{e}");
    }

    #[test]
    fn a_bad_config_json_is_named_with_serdes_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_spec(dir.path()).expect_err("missing");
        assert!(
            e.starts_with("reading the OCI spec ")
                && e.ends_with("No such file or directory (os error 2)"),
            "{e}"
        );
        for (text, want) in [
            ("{not json", "key must be a string at line 1 column 2"),
            (
                r#"{"ociVersion":"1.0.2","process":{"cwd":"/","us"#,
                "EOF while parsing a string at line 1 column 46",
            ),
        ] {
            std::fs::write(dir.path().join("config.json"), text).expect("write");
            let e = read_spec(dir.path()).expect_err(text);
            let p = dir.path().join("config.json");
            assert_eq!(
                e,
                format!("the OCI spec {} is invalid: {want}", p.display())
            );
        }
        let e = spec_from(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "bogus"}]}
        }))
        .expect_err("bogus namespace");
        assert!(
            e.contains("unknown variant `bogus`, expected one of"),
            "{e}"
        );
    }

    #[test]
    fn process_values_out_of_range_are_named() {
        let base = serde_json::json!({"ociVersion": "1.0.2", "process": {
            "cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}}});
        let with = |key: &str, v: serde_json::Value| {
            let mut s = base.clone();
            s["process"][key] = v;
            spec_from(s).and_then(|s| validate_spec(&s))
        };
        with(
            "rlimits",
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 5, "hard": 5}]),
        )
        .expect("soft = hard");
        with(
            "rlimits",
            serde_json::json!([{"type": "RLIMIT_CORE", "soft": 1, "hard": u64::MAX}]),
        )
        .expect("hard infinity is the kernel's to judge");
        assert_eq!(
            with(
                "rlimits",
                serde_json::json!([{"type": "RLIMIT_NPROC", "soft": 6, "hard": 5}])
            ),
            Err("process.rlimits RLIMIT_NPROC: the soft limit 6 is above the hard limit 5".into())
        );
        for ok in [-1000, 0, 1000] {
            with("oomScoreAdj", serde_json::json!(ok)).expect("in range");
        }
        for bad in [-1001, 1001, i32::MIN] {
            assert_eq!(
                with("oomScoreAdj", serde_json::json!(bad)),
                Err(format!(
                    "process.oomScoreAdj {bad} is outside the kernel's range -1000..1000"
                ))
            );
        }
    }

    #[test]
    fn host_namespaces_and_privilege_are_named() {
        let spec = |namespaces: serde_json::Value, bounding: serde_json::Value| {
            spec_from(serde_json::json!({"ociVersion": "1.0.2",
                "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                    "capabilities": {"bounding": bounding}},
                "linux": {"namespaces": namespaces}}))
            .expect("spec")
        };
        let own = serde_json::json!([{"type": "mount"}, {"type": "pid"}, {"type": "ipc"},
            {"type": "network", "path": "/proc/self/ns/net"}]);
        let plain = serde_json::json!(["CAP_CHOWN", "CAP_NET_RAW"]);
        assert_eq!(host_access(&spec(own.clone(), plain.clone())), None);
        assert_eq!(
            host_access(&spec(
                serde_json::json!([{"type": "mount"}, {"type": "ipc"}]),
                plain.clone()
            )),
            Some("it shares the host's PID namespace")
        );
        assert_eq!(
            host_access(&spec(
                serde_json::json!([{"type": "mount"}, {"type": "pid", "path": "/proc/1/ns/pid"}]),
                plain
            )),
            Some("it shares the host's IPC namespace")
        );
        assert_eq!(
            host_access(&spec(own, serde_json::json!(["CAP_SYS_ADMIN"]))),
            Some("it is privileged (CAP_SYS_ADMIN)")
        );
    }

    #[test]
    fn namespace_paths_must_be_namespaces_of_their_type() {
        let ns = |typ: &str, path: &str| {
            spec_from(serde_json::json!({"ociVersion": "1.0.2", "linux": {
                "namespaces": [{"type": "mount"}, {"type": typ, "path": path}]}}))
            .and_then(|s| validate_spec(&s))
        };
        ns("network", "/proc/self/ns/net").expect("a netns for network");
        assert_eq!(
            ns("pid", "/proc/self/ns/net"),
            Err("linux.namespaces: the pid namespace's path: /proc/self/ns/net is a network namespace, not a pid namespace".into())
        );
        let e = ns("ipc", "/dev/null").expect_err("/dev/null");
        assert!(
            e.starts_with(
                "linux.namespaces: the ipc namespace's path: /dev/null is not a namespace file"
            ),
            "{e}"
        );
        let e = ns("uts", "/nonexistent").expect_err("missing");
        assert_eq!(
            e,
            "linux.namespaces: the uts namespace's path: opening /nonexistent: No such file or directory (os error 2)"
        );
    }
}
