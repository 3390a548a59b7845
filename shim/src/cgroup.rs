//! cgroups v1 and v2: a container's cgroup — creation, resource limits,
//! freezing, statistics, OOM events, signalling and removal.
//!
//! The hierarchies are found in /proc/self/mountinfo. `linux.cgroupsPath`
//! is a cgroupfs path such as `/default/ctr1`, relative to the hierarchy
//! roots, or systemd's `slice:prefix:name` (a transient scope, `systemd`).
//! Resource limits are written by youki's libcgroups (its v1 and v2
//! managers take the spec's `LinuxResources`); on v2 the device rules are
//! our eBPF program (`devices`). Statistics are read with cgroups-rs'
//! controllers. What the crates leave out or do otherwise than runc stays
//! here (docs/DESIGN.md, "Cgroups: what is ours, what is a crate's").

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;

mod devices;
mod systemd;
mod warm;

pub use warm::start_grace_period;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid cgroup request: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("systemd cgroup driver: {0}")]
    Systemd(String),
    /// A field of `linux.resources` idshift does not apply (the message
    /// names it).
    #[error("{0}")]
    Refused(String),
    /// libcgroups failed to apply resources (its error names the file).
    #[error("applying resources to cgroup {path}: {source}")]
    Apply {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the cgroup filesystems are mounted.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub version: Version,
    /// v1: controller name -> mount point; co-mounted controllers
    /// ("cpu,cpuacct") map every name to the same mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount (on a v1 host, the "unified" one if any).
    pub v2: Option<PathBuf>,
}

/// The v1 controllers a container gets a directory in (those mounted).
const V1_CONTROLLERS: [&str; 11] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "perf_event",
];

/// The v2 controllers enabled for containers (those available).
const V2_CONTROLLERS: [&str; 5] = ["cpu", "memory", "pids", "io", "cpuset"];

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The cgroup mounts listed in a mountinfo text.
#[derive(Debug, Default)]
struct Mounts {
    v1: BTreeMap<String, PathBuf>,
    v2: Vec<PathBuf>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(rootfs::unescape_octal_bytes(
        s,
    )))
}

fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        match fstype {
            "cgroup" => {
                for opt in super_opts.split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        // The first mount of a controller is the host's one.
                        m.v1.entry(opt.to_string())
                            .or_insert_with(|| unescape_mountinfo(mount_point));
                    }
                }
            }
            "cgroup2" => {
                let p = unescape_mountinfo(mount_point);
                if !m.v2.contains(&p) {
                    m.v2.push(p);
                }
            }
            _ => {}
        }
    }
    m
}

impl Hierarchy {
    /// Detects the hierarchies from /proc/self/mountinfo: V1 if any v1
    /// controller is mounted, else V2 on the first cgroup2 mount whose
    /// cgroup.controllers is non-empty (or, failing that, the first cgroup2
    /// mount: processes can still be grouped, frozen and killed there, and
    /// limits are refused as unsupported).
    pub fn detect() -> Result<Self> {
        let text = fs::read_to_string(MOUNTINFO)
            .map_err(|e| io_err("reading", Path::new(MOUNTINFO), e))?;
        Self::choose(parse_mountinfo(&text), |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    fn choose(m: Mounts, controllers_of: impl Fn(&Path) -> String) -> Result<Self> {
        let with_controllers =
            m.v2.iter()
                .find(|p| !controllers_of(p).trim().is_empty())
                .cloned();
        let v2 = with_controllers.or_else(|| m.v2.first().cloned());
        if !m.v1.is_empty() {
            return Ok(Hierarchy {
                version: Version::V1,
                v1: m.v1,
                v2,
            });
        }
        match v2 {
            Some(root) => Ok(Hierarchy {
                version: Version::V2,
                v1: BTreeMap::new(),
                v2: Some(root),
            }),
            None => Err(CgroupError::Unsupported(format!(
                "no cgroup v1 controller and no cgroup2 filesystem is mounted (per {MOUNTINFO})"
            ))),
        }
    }

    /// A v2 hierarchy rooted at `root` (a cgroup2 mount made by the test).
    #[cfg(test)]
    pub fn v2_at(root: PathBuf) -> Self {
        Hierarchy {
            version: Version::V2,
            v1: BTreeMap::new(),
            v2: Some(root),
        }
    }
}

/// A `unified` key must name a file of the container's own cgroup
/// directory (`memory.high`), never a path (libcgroups joins it to the
/// cgroup's directory as given).
fn check_unified_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.contains('/')
        && !key.starts_with('.')
        && key.contains('.')
        && key != "cgroup.procs"
        && key != "cgroup.threads"
        && key != "cgroup.subtree_control";
    if ok {
        Ok(())
    } else {
        Err(CgroupError::Refused(format!(
            "linux.resources.unified key {key:?} is not a cgroup file the container may set"
        )))
    }
}

/// One device rule of the v2 eBPF program (`devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a` (all), `c` or `b`.
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Some of `r`, `w`, `m`.
    pub access: String,
}

/// runc's AllowedDevices, appended after a spec's own device rules so that
/// the devices every container has (bound on its /dev, the pty ones, tun)
/// stay usable and any node can be made. libcgroups' v1 devices controller
/// appends the same list on every apply; this copy is for v2, whose eBPF
/// program is ours.
const ALLOWED_DEVICES: [(char, Option<i64>, Option<i64>, &str); 12] = [
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"),
    ('c', Some(1), Some(5), "rwm"),
    ('c', Some(1), Some(7), "rwm"),
    ('c', Some(5), Some(0), "rwm"),
    ('c', Some(1), Some(9), "rwm"),
    ('c', Some(1), Some(8), "rwm"),
    ('c', Some(5), Some(1), "rwm"),
    ('c', Some(136), None, "rwm"),
    ('c', Some(5), Some(2), "rwm"),
    ('c', Some(10), Some(200), "rwm"),
];

/// The spec's device rules (a missing type is `a`, missing access `rwm`,
/// as in runc), then `ALLOWED_DEVICES`; none if the spec has none.
fn device_rules(res: &LinuxResources) -> Vec<DeviceRule> {
    let spec = res.devices().as_deref().unwrap_or_default();
    if spec.is_empty() {
        return Vec::new();
    }
    let mut rules: Vec<DeviceRule> = spec
        .iter()
        .map(|d| DeviceRule {
            allow: d.allow(),
            kind: d
                .typ()
                .map(|t| t.as_str().chars().next().unwrap_or('a'))
                .unwrap_or('a'),
            major: d.major(),
            minor: d.minor(),
            access: d.access().clone().unwrap_or_else(|| "rwm".into()),
        })
        .collect();
    rules.extend(
        ALLOWED_DEVICES
            .iter()
            .map(|&(kind, major, minor, access)| DeviceRule {
                allow: true,
                kind,
                major,
                minor,
                access: access.into(),
            }),
    );
    rules
}

/// `res` without its device rules, which are ours (`devices.rs`), not
/// libcgroups': its v1 devices controller writes a spec's rules one by one
/// (devices.rs says why not), and runc's always-allowed ones after them,
/// which the rules applied already allow.
fn without_devices(res: &LinuxResources) -> std::borrow::Cow<'_, LinuxResources> {
    if res.devices().is_none() {
        return std::borrow::Cow::Borrowed(res);
    }
    let mut r = res.clone();
    r.set_devices(None);
    std::borrow::Cow::Owned(r)
}

/// Whether applying `res` takes libcgroups: resources besides the device
/// rules.
fn needs_crate(res: &LinuxResources) -> bool {
    *without_devices(res) != LinuxResources::default()
}

type V1Manager =
    std::result::Result<libcgroups::v1::Manager, libcgroups::v1::manager::V1ManagerError>;

/// The libcgroups v1 manager of a cgroup, made on another thread ahead of
/// the Create that applies resources with it (or none: made when needed).
/// Its `Manager::new` reads the mount table and /proc/self/cgroup through
/// a checked procfs handle once per controller: about 170 syscalls and
/// 1.2 ms of CPU here, which a serving shim spends while it waits for its
/// first Create rather than inside it.
#[derive(Default)]
pub struct ManagerAhead(Option<std::sync::mpsc::Receiver<Option<(PathBuf, V1Manager)>>>);

impl ManagerAhead {
    /// The manager to come, and the job that makes it, for the caller to
    /// run on a thread (the shim: one that ends with the job). `what`
    /// gives the hierarchy, the cgroup path and the resources a Create is
    /// expected to apply; the manager is made if applying them will take
    /// one (v1, resources besides device rules). The job only reads:
    /// unused, its manager is dropped.
    pub fn new(
        what: impl FnOnce() -> Option<(Hierarchy, String, LinuxResources)> + Send + 'static,
    ) -> (ManagerAhead, impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = move || {
            let made = what().and_then(|(h, path, res)| {
                if h.version != Version::V1 || !needs_crate(&res) {
                    return None;
                }
                let rel = parse_path(&path).ok()?;
                let manager = libcgroups::v1::Manager::new(&rel);
                Some((rel, manager))
            });
            // The Create may have come and gone: nobody to tell.
            let _ = tx.send(made);
        };
        (ManagerAhead(Some(rx)), job)
    }

    /// The manager, if it was made for the cgroup at `rel` (waiting for
    /// its job to end; a job dropped unrun gives none).
    fn take_for(self, rel: &Path) -> Option<V1Manager> {
        let (made_for, manager) = self.0?.recv().ok()??;
        (made_for == rel).then_some(manager)
    }
}

/// Checks `linux.resources` before anything is applied, whatever the cgroup
/// version: refuses, naming the field, what idshift does not apply (kernel
/// memory, leaf weights, ...) and what libcgroups would write unchecked
/// (file names made from page sizes, rdma devices and unified keys; device
/// rules the kernel would take differently).
pub fn check(res: &LinuxResources) -> Result<()> {
    let refuse = |field: &str, why: &str| {
        Err(CgroupError::Refused(format!(
            "linux.resources.{field} is not supported: {why}"
        )))
    };
    if let Some(m) = res.memory() {
        if m.kernel().is_some() {
            return refuse(
                "memory.kernel",
                "kernel memory limits are deprecated and gone from recent kernels",
            );
        }
        if m.kernel_tcp().is_some() {
            return refuse(
                "memory.kernelTCP",
                "kernel TCP memory limits are not applied by idshift",
            );
        }
        if m.use_hierarchy() == Some(false) {
            return refuse(
                "memory.useHierarchy",
                "memory accounting is always hierarchical",
            );
        }
        if m.check_before_update() == Some(true) {
            return refuse("memory.checkBeforeUpdate", "not implemented by idshift");
        }
        if let Some(v) = m.swappiness().filter(|v| *v > 100) {
            return Err(CgroupError::Refused(format!(
                "linux.resources.memory.swappiness {v} is not between 0 and 100"
            )));
        }
    }
    if let Some(b) = res.block_io() {
        let leaf = b.leaf_weight().is_some()
            || b.weight_device()
                .iter()
                .flatten()
                .any(|d| d.leaf_weight().is_some());
        if leaf {
            return refuse(
                "blockIO.leafWeight",
                "leaf weights are gone from the kernel (CFQ)",
            );
        }
    }
    for h in res.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CgroupError::Refused(format!(
                "linux.resources.hugepageLimits: page size {size:?} is not a size such as 2MB"
            )));
        }
    }
    for dev in res.rdma().iter().flatten().map(|(d, _)| d) {
        if dev.is_empty() || dev.contains(char::is_whitespace) {
            return Err(CgroupError::Refused(format!(
                "linux.resources.rdma device {dev:?} is not a device name"
            )));
        }
    }
    for key in res.unified().iter().flatten().map(|(k, _)| k) {
        check_unified_key(key)?;
    }
    for (i, d) in res.devices().iter().flatten().enumerate() {
        let kind = d.typ().map(|t| t.as_str().to_string());
        let kind = kind.as_deref().unwrap_or("a");
        if !matches!(kind, "a" | "c" | "b") {
            return Err(CgroupError::Refused(format!(
                "linux.resources.devices[{i}]: type {kind:?} is not a, c or b"
            )));
        }
        if let Some(a) = d.access() {
            if a.is_empty() || !a.chars().all(|c| "rwm".contains(c)) {
                return Err(CgroupError::Refused(format!(
                    "linux.resources.devices[{i}]: access {a:?} is not made of r, w and m"
                )));
            }
        }
        for n in [d.major(), d.minor()].into_iter().flatten() {
            if n < -1 || n > i64::from(u32::MAX) {
                return Err(CgroupError::Refused(format!(
                    "linux.resources.devices[{i}]: {n} is not a device number"
                )));
            }
        }
    }
    Ok(())
}

/// The fields of one cgroup version only, set in `res` for the other.
fn check_version(res: &LinuxResources, version: Version) -> Result<()> {
    match version {
        Version::V1 => {
            if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(CgroupError::Unsupported(
                    "linux.resources.unified needs a cgroup v2 host (this one is v1)".into(),
                ));
            }
        }
        Version::V2 => {
            let m = res.memory().as_ref();
            let c = res.cpu().as_ref();
            let n = res.network().as_ref();
            let v1_only = [
                (
                    "memory.swappiness",
                    m.and_then(|m| m.swappiness()).is_some(),
                ),
                (
                    "memory.disableOOMKiller",
                    m.and_then(|m| m.disable_oom_killer()) == Some(true),
                ),
                (
                    "cpu.realtimeRuntime",
                    c.and_then(|c| c.realtime_runtime()).is_some_and(|v| v != 0),
                ),
                (
                    "cpu.realtimePeriod",
                    c.and_then(|c| c.realtime_period()).is_some_and(|v| v != 0),
                ),
                ("network.classID", n.and_then(|n| n.class_id()).is_some()),
                (
                    "network.priorities",
                    n.and_then(|n| n.priorities().as_ref())
                        .is_some_and(|p| !p.is_empty()),
                ),
            ];
            if let Some((field, _)) = v1_only.iter().find(|(_, set)| *set) {
                return Err(CgroupError::Unsupported(format!(
                    "linux.resources.{field} has no cgroup v2 equivalent (set it through linux.resources.unified)"
                )));
            }
            // runc's refusals that libcgroups lacks (it writes a swap limit
            // without a memory limit as given).
            swap_v2(m.and_then(|m| m.limit()), m.and_then(|m| m.swap()))?;
        }
    }
    Ok(())
}

/// Statistics of a cgroup; missing files count as 0, "max" as `u64::MAX`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub memory_cache: u64,
    pub memory_rss: u64,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub oom_kills: u64,
}

// ---------------------------------------------------------------------------
// Conversions and parsing (pure).

/// runc's conversion of cpu shares (2..=262144) to cgroup v2 cpu.weight
/// (1..=10000): `1 + ((shares - 2) * 9999) / 262142`.
fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The value for memory.swap.max from OCI's memory limit and memory+swap
/// total, as runc converts it (`None`: leave memory.swap.max alone).
fn swap_v2(memory: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    let (m, s) = (memory.unwrap_or(0), swap.unwrap_or(0));
    // Memory unlimited and swap unset: swap unlimited too (as v1 behaves).
    if m == -1 && s == 0 {
        return Ok(Some("max".into()));
    }
    match s {
        -1 => return Ok(Some("max".into())),
        0 => return Ok(None),
        _ => {}
    }
    if m == 0 || m == -1 {
        return Err(CgroupError::Invalid(format!(
            "a memory+swap limit ({s}) needs a memory limit"
        )));
    }
    if m < 0 || s < -1 {
        return Err(CgroupError::Invalid(format!(
            "invalid memory ({m}) or memory+swap ({s}) limit"
        )));
    }
    if s < m {
        return Err(CgroupError::Invalid(format!(
            "the memory+swap limit ({s}) is below the memory limit ({m})"
        )));
    }
    Ok(Some((s - m).to_string()))
}

/// One number; "max" is `u64::MAX`, anything unparsable 0.
fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    if s == "max" {
        u64::MAX
    } else {
        s.parse().unwrap_or(0)
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...).
fn parse_kv(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, parse_u64(w.next()?)))
        })
        .collect()
}

/// Nanoseconds per USER_HZ tick (USER_HZ is 100 in Linux's ABI).
const NS_PER_TICK: u64 = 1_000_000_000 / 100;

/// The directories the statistics are read from (`None`: a v1 controller
/// that is not mounted). On v2 all are the cgroup's one directory.
struct StatDirs {
    v2: bool,
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
}

/// Reads the statistics with cgroups-rs' controllers (each counts a missing
/// or unreadable file as 0); the `key value` texts the crate hands back raw
/// (cpu.stat, cpuacct.stat, v2 memory.events) are parsed here.
fn read_stats(d: &StatDirs) -> Stats {
    use cgroups_rs::fs::{
        cpu::CpuController, cpuacct::CpuAcctController, memory::MemController, pid::PidController,
        MaxValue,
    };
    let kv = |m: &BTreeMap<&str, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut s = Stats::default();
    if let Some(dir) = &d.memory {
        let m = MemController::new(dir.clone(), dir.clone(), d.v2).memory_stat();
        s.memory_usage = m.usage_in_bytes;
        s.memory_max_usage = m.max_usage_in_bytes;
        // v1: the kernel's value; v2: "max" is -1 (u64::MAX here). The
        // crate also reads a v2 memory.max that does not exist as "max":
        // keep 0 for it, as for every missing file (containerd does too).
        s.memory_limit = if !d.v2 || dir.join("memory.max").exists() {
            u64::try_from(m.limit_in_bytes).unwrap_or(u64::MAX)
        } else {
            0
        };
        let raw = &m.stat.raw;
        let get = |k: &str| raw.get(k).copied();
        if d.v2 {
            s.memory_cache = get("file").unwrap_or(0);
            s.memory_rss = get("anon").unwrap_or(0);
            // memory.events: cgroups-rs has no reader for it.
            let events = fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
            s.oom_kills = kv(&parse_kv(&events), "oom_kill");
        } else {
            // The hierarchical totals where the kernel has them.
            s.memory_cache = get("total_cache").or(get("cache")).unwrap_or(0);
            s.memory_rss = get("total_rss").or(get("rss")).unwrap_or(0);
            s.oom_kills = m.oom_control.oom_kill;
        }
    }
    if let Some(dir) = &d.cpu {
        let text = CpuController::new(dir.clone(), dir.clone(), d.v2)
            .cpu()
            .stat;
        let cpu = parse_kv(&text);
        s.cpu_throttled_periods = kv(&cpu, "nr_throttled");
        if d.v2 {
            let us = |k: &str| kv(&cpu, k).saturating_mul(1000);
            s.cpu_usage_ns = us("usage_usec");
            s.cpu_user_ns = us("user_usec");
            s.cpu_system_ns = us("system_usec");
            s.cpu_throttled_ns = us("throttled_usec");
        } else {
            s.cpu_throttled_ns = kv(&cpu, "throttled_time");
        }
    }
    if let (false, Some(dir)) = (d.v2, &d.cpuacct) {
        let a = CpuAcctController::new(dir.clone(), dir.clone()).cpuacct();
        let ticks = parse_kv(&a.stat);
        s.cpu_usage_ns = a.usage;
        s.cpu_user_ns = kv(&ticks, "user").saturating_mul(NS_PER_TICK);
        s.cpu_system_ns = kv(&ticks, "system").saturating_mul(NS_PER_TICK);
    }
    if let Some(dir) = &d.pids {
        let p = PidController::new(dir.clone(), dir.clone(), d.v2);
        s.pids_current = p.get_pid_current().unwrap_or(0);
        s.pids_limit = match p.get_pid_max() {
            Ok(MaxValue::Max) => u64::MAX,
            Ok(MaxValue::Value(v)) => u64::try_from(v).unwrap_or(0),
            Err(_) => 0,
        };
    }
    s
}

// ---------------------------------------------------------------------------
// File access.

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| io_err("reading", path, e))
}

/// A file's text, `None` if it does not exist (or the kernel declines to
/// produce it).
fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e)
            if e.kind() == ErrorKind::NotFound
                || matches!(
                    e.raw_os_error(),
                    Some(libc::ENODEV | libc::EOPNOTSUPP | libc::EINVAL)
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_err("reading", path, e)),
    }
}

/// Writes a cgroup file (never creating it). A missing file in an existing
/// directory is `Unsupported`, naming the file.
fn write(path: &Path, value: &str) -> Result<()> {
    let mut f = match fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound && path.parent().is_some_and(Path::is_dir) => {
            return Err(CgroupError::Unsupported(missing_file_message(path)));
        }
        Err(e) => return Err(io_err("opening for writing", path, e)),
    };
    f.write_all(value.as_bytes())
        .map_err(|e| io_err("writing", path, e))
}

fn missing_file_message(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = name.split('.').next().unwrap_or_default();
    if prefix == "cgroup" {
        format!("{} does not exist (this kernel is too old)", path.display())
    } else {
        format!(
            "{} does not exist: the {prefix} controller does not offer it to this cgroup \
             (on cgroup v2: is {prefix} in the parent's cgroup.subtree_control?)",
            path.display()
        )
    }
}

fn sleep_backoff(delay: &mut Duration, max: Duration) {
    std::thread::sleep(*delay);
    *delay = (*delay * 2).min(max);
}

/// Removes a cgroup directory and its descendants, children first,
/// retrying on EBUSY while processes exit. A missing directory is fine.
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing cgroup directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing cgroup directory", dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| io_err("inspecting", &entry.path(), e))?;
        if ft.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    let mut delay = Duration::from_millis(5);
    let mut attempts = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 10 => {
                attempts += 1;
                sleep_backoff(&mut delay, Duration::from_millis(200));
            }
            Err(e) => return Err(io_err("removing cgroup directory", dir, e)),
        }
    }
}

/// Appends the pids in `dir`'s cgroup.procs and its descendants'.
fn procs_recursive(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    if let Some(text) = read_opt(&procs)? {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing cgroup directory", dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            procs_recursive(&entry.path(), out)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// OOM events.

/// Waits for OOM kills in one cgroup (`next`, on the async runtime).
pub enum OomWatch {
    /// v1: an eventfd registered through cgroup.event_control for
    /// memory.oom_control (as runc does); it becomes readable on every OOM
    /// condition and when the cgroup is removed.
    EventFd {
        efd: OwnedFd,
        dir: PathBuf,
        seen: u64,
    },
    /// v2: memory.events, whose oom_kill count is watched with inotify.
    EventsFile {
        inotify: OwnedFd,
        events: PathBuf,
        seen: u64,
    },
}

/// How often a waiting watcher checks that its cgroup still exists.
const OOM_RECHECK: Duration = Duration::from_secs(2);

fn oom_kills(file: &Path) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    Some(parse_kv(&text).get("oom_kill").copied().unwrap_or(0))
}

impl OomWatch {
    /// Waits until the cgroup's count of OOM kills grows, returning the new
    /// total, or until the cgroup is gone (`None`). On the async runtime:
    /// a running container costs no thread of its own.
    pub async fn next(&mut self) -> Option<u64> {
        match self {
            OomWatch::EventFd { efd, dir, seen } => {
                let control = dir.join("memory.oom_control");
                // Registered with the reactor once for this wait, however
                // many rechecks it takes.
                let afd = crate::sys::reactor_readable(std::os::fd::AsFd::as_fd(&*efd)).ok()?;
                loop {
                    match readable_within(&afd, OOM_RECHECK).await {
                        Err(_) => return None,
                        Ok(false) => {
                            if !dir.is_dir() {
                                return None;
                            }
                            continue;
                        }
                        Ok(true) => {}
                    }
                    let mut buf = [0u8; 8];
                    match rustix::io::read(&*efd, &mut buf) {
                        Ok(_) => {}
                        Err(rustix::io::Errno::AGAIN) => continue,
                        Err(_) => return None,
                    }
                    // The notification precedes the kill: give the count a
                    // moment to grow.
                    let deadline = Instant::now() + Duration::from_secs(1);
                    let mut delay = Duration::from_millis(2);
                    loop {
                        let n = oom_kills(&control)?;
                        if n > *seen {
                            *seen = n;
                            return Some(n);
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(50));
                    }
                }
            }
            OomWatch::EventsFile {
                inotify,
                events,
                seen,
            } => {
                let afd = crate::sys::reactor_readable(std::os::fd::AsFd::as_fd(&*inotify)).ok()?;
                loop {
                    let n = oom_kills(events)?;
                    if n > *seen {
                        *seen = n;
                        return Some(n);
                    }
                    match readable_within(&afd, OOM_RECHECK).await {
                        Err(_) => return None,
                        Ok(false) => {}
                        Ok(true) => {
                            let mut buf = [0u8; 4096];
                            match rustix::io::read(&*inotify, &mut buf) {
                                Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                                Err(_) => return None,
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `afd` (non-blocking, registered with the runtime's reactor by the
/// caller, once per wait) becomes readable within `limit`; its readiness is
/// cleared for the next call.
async fn readable_within(
    afd: &tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'_>>,
    limit: Duration,
) -> std::io::Result<bool> {
    match tokio::time::timeout(limit, afd.readable()).await {
        Ok(Ok(mut ready)) => {
            ready.clear_ready();
            Ok(true)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(false),
    }
}

// ---------------------------------------------------------------------------
// The cgroup.

/// Why a cgroup path was refused (kept by `open`, reported by every use).
#[derive(Clone, Debug)]
enum BadPath {
    Invalid(String),
}

impl BadPath {
    fn error(&self) -> CgroupError {
        match self {
            BadPath::Invalid(m) => CgroupError::Invalid(m.clone()),
        }
    }
}

/// An OCI cgroupsPath as a path relative to the roots (a systemd one:
/// its scope's).
fn parse_path(path: &str) -> std::result::Result<PathBuf, BadPath> {
    if path.contains(':') {
        return systemd::parse(path)
            .map(|u| u.rel)
            .map_err(BadPath::Invalid);
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BadPath::Invalid(format!(
                    "cgroupsPath {path:?} contains \"..\""
                )))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(BadPath::Invalid(format!(
            "cgroupsPath {path:?} names the root cgroup"
        )));
    }
    Ok(rel)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freezer {
    Thawed,
    Freezing,
    Frozen,
}

/// A container's cgroup: its hierarchy and its path below the roots.
#[derive(Clone, Debug)]
pub struct Cgroup {
    h: Hierarchy,
    rel: std::result::Result<PathBuf, BadPath>,
    path: String,
    /// The systemd driver's scope (cgroupsPath `slice:prefix:name`).
    unit: Option<systemd::Unit>,
}

impl Cgroup {
    fn rel(&self) -> Result<&Path> {
        self.rel.as_deref().map_err(BadPath::error)
    }

    fn v2_root(&self) -> Result<&Path> {
        self.h
            .v2
            .as_deref()
            .ok_or_else(|| CgroupError::Unsupported("no cgroup2 filesystem is mounted".into()))
    }

    /// The directories of this cgroup: one per mounted v1 hierarchy, or one.
    fn dirs(&self) -> Result<Vec<PathBuf>> {
        let rel = self.rel()?;
        Ok(match self.h.version {
            Version::V1 => {
                let mut roots: Vec<&PathBuf> = self.h.v1.values().collect();
                roots.sort();
                roots.dedup();
                roots.into_iter().map(|r| r.join(rel)).collect()
            }
            Version::V2 => vec![self.v2_root()?.join(rel)],
        })
    }

    /// The directory holding a controller's files (`None`: v1, not mounted).
    fn controller_dir(&self, controller: &str) -> Result<Option<PathBuf>> {
        let rel = self.rel()?;
        Ok(match self.h.version {
            Version::V1 => self.h.v1.get(controller).map(|r| r.join(rel)),
            Version::V2 => Some(self.v2_root()?.join(rel)),
        })
    }

    /// The path of a controller's file; an unmounted v1 controller is
    /// `Unsupported`, naming the file.
    fn file(&self, controller: &str, name: &str) -> Result<PathBuf> {
        self.controller_dir(controller)?
            .map(|d| d.join(name))
            .ok_or_else(|| {
                CgroupError::Unsupported(format!(
                    "{name}: the cgroup v1 {controller} controller is not mounted"
                ))
            })
    }

    fn set(&self, controller: &str, name: &str, value: &str) -> Result<()> {
        write(&self.file(controller, name)?, value)
    }

    /// The directory whose cgroup.procs lists the processes.
    fn procs_dir(&self) -> Result<PathBuf> {
        match self.h.version {
            Version::V1 => {
                for c in ["pids", "freezer", "memory"] {
                    if let Some(d) = self.controller_dir(c)? {
                        return Ok(d);
                    }
                }
                self.dirs()?.into_iter().next().ok_or_else(|| {
                    CgroupError::Unsupported("no cgroup v1 controller is mounted".into())
                })
            }
            Version::V2 => Ok(self.v2_root()?.join(self.rel()?)),
        }
    }

    /// Opens an existing cgroup (nothing is created). An invalid path is
    /// reported by every operation.
    pub fn open(h: &Hierarchy, path: &str) -> Self {
        Cgroup {
            h: h.clone(),
            rel: parse_path(path),
            path: path.to_string(),
            unit: systemd::parse(path).ok().filter(|_| path.contains(':')),
        }
    }

    /// Creates the cgroup (existing directories are joined). v1: a directory
    /// in every mounted controller, cpuset.cpus/mems inherited where empty;
    /// v2: the controllers needed enabled in every ancestor, then the
    /// directories.
    ///
    /// A systemd cgroupsPath makes nothing yet: its scope is started with
    /// the first process (`add_process`); here systemd must be the init.
    pub fn create(h: &Hierarchy, path: &str) -> Result<Self> {
        let cg = Cgroup::open(h, path);
        let rel = cg.rel()?.to_path_buf();
        if cg.unit.is_some() {
            if !systemd::booted() {
                return Err(CgroupError::Systemd(format!(
                    "cgroupsPath {path:?} asks for the systemd cgroup driver, but systemd is not \
                     the init system here (/run/systemd/system does not exist); use a cgroupfs \
                     path such as /default/ctr1"
                )));
            }
            if h.version == Version::V1 && h.v1.is_empty() {
                return Err(CgroupError::Unsupported(
                    "no cgroup v1 controller is mounted".into(),
                ));
            }
            return Ok(cg);
        }
        match h.version {
            Version::V1 => {
                if h.v1.is_empty() {
                    return Err(CgroupError::Unsupported(
                        "no cgroup v1 controller is mounted".into(),
                    ));
                }
                for d in cg.dirs()? {
                    fs::create_dir_all(&d)
                        .map_err(|e| io_err("creating cgroup directory", &d, e))?;
                }
                if let Some(root) = h.v1.get("cpuset") {
                    inherit_cpuset(root, &rel)?;
                }
            }
            Version::V2 => {
                let mut dir = cg.v2_root()?.to_path_buf();
                for c in rel.components() {
                    enable_controllers(&dir)?;
                    dir.push(c);
                    match fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("creating cgroup directory", &dir, e)),
                    }
                }
            }
        }
        Ok(cg)
    }

    /// The container's directories as its `cgroup` mounts show them: each
    /// mounted v1 hierarchy (named as its mount point, with the controllers
    /// it holds), and the cgroup2 one (on a v1 host, the unified hierarchy
    /// holds no container directory, so none).
    pub fn view(&self) -> Result<crate::mounts::CgroupView> {
        let rel = self.rel()?;
        let mut view = crate::mounts::CgroupView::default();
        match self.h.version {
            Version::V1 => {
                let mut by_mount: BTreeMap<&PathBuf, Vec<String>> = BTreeMap::new();
                for (controller, root) in &self.h.v1 {
                    by_mount.entry(root).or_default().push(controller.clone());
                }
                for (root, controllers) in by_mount {
                    let Some(name) = root.file_name() else {
                        continue;
                    };
                    view.v1.push(crate::mounts::V1Hierarchy {
                        name: name.to_string_lossy().into_owned(),
                        dir: root.join(rel),
                        controllers,
                    });
                }
            }
            Version::V2 => view.v2 = Some(self.v2_root()?.join(rel)),
        }
        Ok(view)
    }

    /// The cgroup version of its hierarchy.
    pub fn version(&self) -> Version {
        self.h.version
    }

    /// The cgroupsPath this cgroup was made or opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Moves a process into the cgroup (cgroup.procs of every directory).
    /// A systemd scope not started yet is started with it (then, on v1, the
    /// directories systemd did not make are made).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        if let Some(unit) = &self.unit {
            if !systemd::exists(unit)? {
                systemd::start(unit, pid, &self.path)?;
                if self.h.version == Version::V1 {
                    for d in self.dirs()? {
                        fs::create_dir_all(&d)
                            .map_err(|e| io_err("creating cgroup directory", &d, e))?;
                    }
                    if let Some(root) = self.h.v1.get("cpuset") {
                        inherit_cpuset(root, self.rel()?)?;
                    }
                }
            }
        }
        for d in self.dirs()? {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// On v1 cgroupfs, the `tasks` files through which a single-threaded
    /// process moves itself into the cgroup (writing "0" to each): the
    /// kernel moves the writer itself without its global lock and the RCU
    /// grace period that lock waits for (`warm.rs`), about 0.1 ms a
    /// hierarchy instead of 9-13 ms for the first. `None` on v2 (a thread
    /// cannot leave its domain that way) and for a systemd scope (systemd
    /// moves it): there the shim moves it ([`add_process`](Self::add_process)).
    pub fn self_join_files(&self) -> Result<Option<Vec<PathBuf>>> {
        if self.unit.is_some() || self.h.version != Version::V1 {
            return Ok(None);
        }
        Ok(Some(
            self.dirs()?.into_iter().map(|d| d.join("tasks")).collect(),
        ))
    }

    /// The processes in the cgroup (not its descendants), sorted; none if the
    /// cgroup does not exist.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let f = self.procs_dir()?.join("cgroup.procs");
        let text = read_opt(&f)?.unwrap_or_default();
        let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Applies `linux.resources` (an Update's): checks them
    /// ([`check_for`](Self::check_for)), applies the device rules
    /// ([`apply_devices`](Self::apply_devices)), then the rest
    /// ([`apply_except_devices`](Self::apply_except_devices)).
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        self.check_for(res)?;
        self.apply_devices(res)?;
        self.apply_except_devices(res, ManagerAhead::default())
    }

    /// [`check`]s `linux.resources` and refuses the fields of the other
    /// cgroup version: what [`apply_devices`](Self::apply_devices) and
    /// [`apply_except_devices`](Self::apply_except_devices) expect done (a
    /// Create does it before its first process exists).
    pub fn check_for(&self, res: &LinuxResources) -> Result<()> {
        self.named(check(res).and_then(|()| check_version(res, self.h.version)))
    }

    /// Applies the device rules alone, with the fewest writes on v1 (an
    /// unchanged rule set writes nothing; `devices.rs`): at create before
    /// any process runs in the cgroup, so that none sees the moment a v1
    /// cgroup going from allowing every device to allowing some refuses
    /// them all. A cgroup with processes is frozen over that moment (as
    /// runc's systemd driver does).
    pub fn apply_devices(&self, res: &LinuxResources) -> Result<()> {
        self.named(self.apply_devices_unnamed(res))
    }

    /// Applies everything but the device rules: has libcgroups write the
    /// files (a systemd scope gets its properties first), and applies what
    /// it leaves out or does differently from runc 1.1 (docs/DESIGN.md,
    /// "Cgroups: what is ours, what is a crate's"). At create, while the
    /// init sets itself up, with the v1 manager made `ahead` if it was
    /// ([`ManagerAhead`]).
    pub fn apply_except_devices(&self, res: &LinuxResources, ahead: ManagerAhead) -> Result<()> {
        self.named(self.apply_except_devices_unnamed(res, ahead))
    }

    /// An invalid value's error, naming this cgroup.
    fn named(&self, r: Result<()>) -> Result<()> {
        r.map_err(|e| match e {
            CgroupError::Invalid(m) => {
                CgroupError::Invalid(format!("applying resources to cgroup {}: {m}", self.path))
            }
            e => e,
        })
    }

    fn apply_devices_unnamed(&self, res: &LinuxResources) -> Result<()> {
        let rules = device_rules(res);
        if rules.is_empty() {
            return Ok(());
        }
        let dir = self.controller_dir("devices")?.ok_or_else(|| {
            CgroupError::Unsupported(
                "linux.resources.devices: the cgroup v1 devices controller is not mounted".into(),
            )
        })?;
        if self.h.version == Version::V2 {
            return devices::apply(&dir, &rules);
        }
        let writes = devices::v1_writes(&read(&dir.join("devices.list"))?, &rules)?;
        let freeze = writes.first().is_some_and(devices::V1Write::denies_all)
            && !self.pids()?.is_empty()
            && !self.is_frozen()?;
        if freeze {
            self.freeze()?;
        }
        let written = writes
            .iter()
            .try_for_each(|w| write(&dir.join(w.file()), &w.line));
        let thawed = if freeze { self.thaw() } else { Ok(()) };
        written.and(thawed)
    }

    fn apply_except_devices_unnamed(
        &self,
        res: &LinuxResources,
        ahead: ManagerAhead,
    ) -> Result<()> {
        // Nothing but device rules asked: not even libcgroups' managers,
        // whose v1 one reads the mount table.
        let res = &*without_devices(res);
        if *res == LinuxResources::default() {
            return Ok(());
        }
        let rel = self.rel()?;
        if let Some(unit) = &self.unit {
            // systemd's own record of the limits first (else a daemon-reload
            // would put back its own), then the files, as runc does.
            systemd::set(unit, res, self.h.version == Version::V2)?;
        }
        let cpu = res.cpu().as_ref();
        let disable_oom_killer =
            res.memory().as_ref().and_then(|m| m.disable_oom_killer()) == Some(true);
        match self.h.version {
            Version::V1 => {
                // libcgroups writes the realtime runtime before the period:
                // the period first, so that the runtime fits in it (runc).
                if let Some(p) = cpu.and_then(|c| c.realtime_period()).filter(|p| *p != 0) {
                    self.set("cpu", "cpu.rt_period_us", &p.to_string())?;
                }
                let manager = ahead
                    .take_for(rel)
                    .unwrap_or_else(|| libcgroups::v1::Manager::new(rel))
                    .map_err(|e| self.crate_err(e))?;
                manager
                    .apply(&ControllerOpt {
                        resources: res,
                        disable_oom_killer,
                        oom_score_adj: None,
                        freezer_state: None,
                    })
                    .map_err(|e| self.crate_err(e))?;
                // Left out by libcgroups' v1 controllers: per-device weights,
                // and a burst without another cpu field.
                for d in res
                    .block_io()
                    .iter()
                    .flat_map(|b| b.weight_device().iter().flatten())
                {
                    if let Some(w) = d.weight() {
                        let f = self.file("blkio", "blkio.weight_device")?;
                        let f = if f.exists() {
                            f
                        } else {
                            f.with_file_name("blkio.bfq.weight_device")
                        };
                        write(&f, &format!("{}:{} {w}", d.major(), d.minor()))?;
                    }
                }
                if let Some(c) = cpu {
                    let others = c.shares().is_some()
                        || c.period().is_some()
                        || c.quota().is_some()
                        || c.realtime_period().is_some()
                        || c.realtime_runtime().is_some()
                        || c.idle().is_some();
                    if let (Some(b), false) = (c.burst(), others) {
                        self.set("cpu", "cpu.cfs_burst_us", &b.to_string())?;
                    }
                }
            }
            Version::V2 => {
                let root = self.v2_root()?.to_path_buf();
                // cpu.weight with runc 1.1's linear conversion of the shares
                // (libcgroups has crun's newer curve; systemd's CPUWeight is
                // the linear one too): the shares are not handed to it.
                let shares = cpu.and_then(|c| c.shares()).filter(|s| *s != 0);
                let mut without_shares;
                let mut resources = res;
                if let (Some(c), Some(_)) = (cpu, shares) {
                    without_shares = res.clone();
                    without_shares.set_cpu(Some(c.clone().set_shares(None).clone()));
                    resources = &without_shares;
                }
                let manager = libcgroups::v2::manager::Manager::new(root, rel.to_path_buf())
                    .map_err(|e| self.crate_err(e))?;
                manager
                    .apply(&ControllerOpt {
                        resources,
                        disable_oom_killer,
                        oom_score_adj: None,
                        freezer_state: None,
                    })
                    .map_err(|e| self.crate_err(e))?;
                if let Some(s) = shares {
                    self.set("cpu", "cpu.weight", &shares_to_weight(s).to_string())?;
                }
            }
        }
        // No rdma controller in libcgroups.
        let mut rdma: Vec<_> = res.rdma().iter().flatten().collect();
        rdma.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, limit) in rdma {
            let mut line = dev.clone();
            for (k, v) in [
                ("hca_handle", limit.hca_handles()),
                ("hca_object", limit.hca_objects()),
            ] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            self.set("rdma", "rdma.max", &line)?;
        }
        Ok(())
    }

    /// A libcgroups error, with this cgroup's path.
    fn crate_err(&self, e: impl std::error::Error + Send + Sync + 'static) -> CgroupError {
        CgroupError::Apply {
            path: self.path.clone(),
            source: Box::new(e),
        }
    }

    fn freezer_state(&self) -> Result<Freezer> {
        match self.h.version {
            Version::V1 => {
                let f = self.file("freezer", "freezer.state")?;
                Ok(match read(&f)?.trim() {
                    "FROZEN" => Freezer::Frozen,
                    "FREEZING" => Freezer::Freezing,
                    _ => Freezer::Thawed,
                })
            }
            Version::V2 => {
                let events = self.file("freezer", "cgroup.events")?;
                if parse_kv(&read(&events)?).get("frozen") == Some(&1) {
                    return Ok(Freezer::Frozen);
                }
                let freeze = events.with_file_name("cgroup.freeze");
                Ok(match read_opt(&freeze)?.as_deref().map(str::trim) {
                    Some("1") => Freezer::Freezing,
                    _ => Freezer::Thawed,
                })
            }
        }
    }

    /// Freezes or thaws and waits (at most `timeout`) until it took effect;
    /// a freeze that does not complete is undone.
    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let (file, on, off, state_file) = match self.h.version {
            Version::V1 => {
                let f = self.file("freezer", "freezer.state")?;
                (f.clone(), "FROZEN", "THAWED", f)
            }
            Version::V2 => {
                let f = self.file("freezer", "cgroup.freeze")?;
                let events = f.with_file_name("cgroup.events");
                (f, "1", "0", events)
            }
        };
        let (value, want) = if frozen {
            (on, Freezer::Frozen)
        } else {
            (off, Freezer::Thawed)
        };
        write(&file, value)?;
        let start = Instant::now();
        let mut last_write = start;
        let mut delay = Duration::from_millis(1);
        loop {
            if self.freezer_state()? == want {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                if frozen {
                    let _ = write(&file, off);
                }
                return Err(io_err(
                    if frozen {
                        "waiting for the cgroup to freeze:"
                    } else {
                        "waiting for the cgroup to thaw:"
                    },
                    &state_file,
                    std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "not {} after {timeout:?}",
                            if frozen { "frozen" } else { "thawed" }
                        ),
                    ),
                ));
            }
            sleep_backoff(&mut delay, Duration::from_millis(20));
            // v1 can stay FREEZING; writing FROZEN again retries (as runc does).
            if self.h.version == Version::V1 && last_write.elapsed() >= Duration::from_millis(100) {
                write(&file, value)?;
                last_write = Instant::now();
            }
        }
    }

    /// Freezes every process (v1 freezer.state, v2 cgroup.freeze) and waits
    /// up to 5 s until they are.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true, Duration::from_secs(5))
    }

    /// Thaws the cgroup and waits up to 5 s until it is.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false, Duration::from_secs(5))
    }

    /// Whether every process is frozen (v1 FROZEN, v2 "frozen 1").
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(self.freezer_state()? == Freezer::Frozen)
    }

    /// Statistics; missing files count as 0. A cgroup that does not exist
    /// is an error.
    pub fn stats(&self) -> Result<Stats> {
        let dir = self.procs_dir()?;
        if !dir.is_dir() {
            return Err(io_err(
                "reading statistics of",
                &dir,
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        let dirs = StatDirs {
            v2: self.h.version == Version::V2,
            memory: self.controller_dir("memory")?,
            cpu: self.controller_dir("cpu")?,
            cpuacct: self.controller_dir("cpuacct")?,
            pids: self.controller_dir("pids")?,
        };
        Ok(read_stats(&dirs))
    }

    /// A watcher of OOM kills; `None` without a memory controller.
    pub fn oom_watch(&self) -> Result<Option<OomWatch>> {
        let Some(dir) = self.controller_dir("memory")? else {
            return Ok(None);
        };
        match self.h.version {
            Version::V1 => {
                let control = dir.join("memory.oom_control");
                let file = fs::File::open(&control).map_err(|e| io_err("opening", &control, e))?;
                let efd = rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )
                .map_err(|e| io_err("creating an eventfd for", &control, e.into()))?;
                write(
                    &dir.join("cgroup.event_control"),
                    &format!("{} {}", efd.as_raw_fd(), file.as_raw_fd()),
                )?;
                // The registration holds what it needs; the file can go.
                drop(file);
                let seen = oom_kills(&control).unwrap_or(0);
                Ok(Some(OomWatch::EventFd { efd, dir, seen }))
            }
            Version::V2 => {
                use rustix::fs::inotify;
                let events = dir.join("memory.events");
                if !events.exists() {
                    return Ok(None);
                }
                let ino = inotify::init(
                    inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK,
                )
                .map_err(|e| io_err("creating an inotify instance for", &events, e.into()))?;
                inotify::add_watch(&ino, &events, inotify::WatchFlags::MODIFY)
                    .map_err(|e| io_err("watching", &events, e.into()))?;
                let seen = oom_kills(&events).unwrap_or(0);
                Ok(Some(OomWatch::EventsFile {
                    inotify: ino,
                    events,
                    seen,
                }))
            }
        }
    }

    /// Sends `signal` to every process in the cgroup and its descendants
    /// (processes already gone are fine). SIGKILL uses cgroup.kill where
    /// there is one, else freezes the cgroup around the signalling so that
    /// nothing escapes by forking.
    pub fn kill_all(&self, signal: i32) -> Result<()> {
        use nix::sys::signal::Signal;
        let sig = Signal::try_from(signal).map_err(|_| {
            CgroupError::Invalid(format!(
                "signal {signal} cannot be sent to the processes of cgroup {} (unknown or real-time)",
                self.path
            ))
        })?;
        if sig != Signal::SIGKILL {
            return self.signal_all(sig);
        }
        if self.h.version == Version::V2 {
            let kill = self.v2_root()?.join(self.rel()?).join("cgroup.kill");
            if write(&kill, "1").is_ok() {
                return Ok(());
            }
        }
        let has_freezer = self.h.version == Version::V2 || self.h.v1.contains_key("freezer");
        let dir_exists = self.procs_dir()?.is_dir();
        let froze =
            has_freezer && dir_exists && self.set_frozen(true, Duration::from_secs(1)).is_ok();
        let result = self.signal_all(sig);
        if froze {
            // The killed processes die as they thaw.
            self.set_frozen(false, Duration::from_secs(5))?;
        }
        result
    }

    fn signal_all(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let mut pids = Vec::new();
        procs_recursive(&self.procs_dir()?, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        let mut first_error = None;
        for pid in pids {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    first_error.get_or_insert(io_err(
                        "signalling",
                        &PathBuf::from(format!("/proc/{pid}")),
                        e.into(),
                    ));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the cgroup's directories, descendants first, waiting briefly
    /// for exiting processes. Missing directories are fine (idempotent).
    pub fn delete(&self) -> Result<()> {
        let dirs = self.dirs()?;
        // Killed processes in a frozen cgroup never exit.
        if self.is_frozen().unwrap_or(false) {
            let _ = self.set_frozen(false, Duration::from_secs(1));
        }
        let mut first_error = None;
        // Without systemd as init no scope was started (Create refused it).
        if let Some(unit) = self.unit.as_ref().filter(|_| systemd::booted()) {
            if let Err(e) = systemd::stop(unit) {
                first_error = Some(e);
            }
        }
        for d in dirs {
            if let Err(e) = remove_tree(&d) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// v1 cpuset: a new cgroup starts with empty cpus and mems, which lets no
/// process in; inherit them down the path where empty.
fn inherit_cpuset(root: &Path, rel: &Path) -> Result<()> {
    let mut dir = root.to_path_buf();
    for c in rel.components() {
        let parent = dir.clone();
        dir.push(c);
        for name in ["cpuset.cpus", "cpuset.mems"] {
            let f = dir.join(name);
            if read(&f)?.trim().is_empty() {
                let v = read(&parent.join(name))?;
                write(&f, v.trim())?;
            }
        }
    }
    Ok(())
}

/// v2: enables in `dir`'s cgroup.subtree_control the wanted controllers
/// that are available and not enabled yet; one by one (errors logged) if
/// the kernel refuses them together.
fn enable_controllers(dir: &Path) -> Result<()> {
    let available = read(&dir.join("cgroup.controllers"))?;
    let control = dir.join("cgroup.subtree_control");
    let enabled = read(&control)?;
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if write(&control, &all.join(" ")).is_err() {
        for c in &missing {
            if let Err(e) = write(&control, &format!("+{c}")) {
                log::warn!("enabling the {c} controller: {e}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    fn unique(tag: &str) -> String {
        format!(
            "/idshift-test-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    /// Removes a test's cgroup even if the test fails (declare it before
    /// the children, so that they are reaped first).
    struct Remove(Cgroup);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = self.0.kill_all(libc::SIGKILL);
            let _ = self.0.delete();
        }
    }

    /// Kills and reaps a child if a test fails before it does.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn paths_are_validated() {
        let bad = |p: &str| parse_path(p).map_err(|e| e.error());
        assert_eq!(
            parse_path("system.slice:containerd:ctr1").expect("systemd"),
            PathBuf::from("system.slice/containerd-ctr1.scope")
        );
        assert!(matches!(bad("a:b"), Err(CgroupError::Invalid(m)) if m.contains("\"a:b\"")));
        assert!(matches!(bad("/a/../b"), Err(CgroupError::Invalid(_))));
        assert!(matches!(bad(".."), Err(CgroupError::Invalid(_))));
        assert!(matches!(bad("/"), Err(CgroupError::Invalid(_))));
        assert!(matches!(bad(""), Err(CgroupError::Invalid(_))));
        for p in ["/default/c1", "default/c1", "//default/./c1/"] {
            assert_eq!(parse_path(p).expect(p), PathBuf::from("default/c1"));
        }
        // open() keeps the problem and every use reports it.
        let h = Hierarchy::v2_at(PathBuf::from("/nonexistent"));
        let cg = Cgroup::open(&h, "/x/../../etc");
        assert!(matches!(cg.delete(), Err(CgroupError::Invalid(_))));
        assert!(matches!(cg.add_process(1), Err(CgroupError::Invalid(_))));
        assert!(matches!(cg.pids(), Err(CgroupError::Invalid(_))));
        assert!(matches!(
            Cgroup::create(&h, "a:b:c"),
            Err(CgroupError::Invalid(m)) if m.contains("not a systemd slice name")
        ));
        // The systemd driver needs systemd as init (this test host has none).
        if !systemd::booted() {
            let e = Cgroup::create(&h, "system.slice:idshift:c1").expect_err("no systemd");
            assert!(matches!(e, CgroupError::Systemd(_)), "{e}");
            let m = e.to_string();
            assert!(m.contains("\"system.slice:idshift:c1\""), "{m}");
            assert!(m.contains("systemd is not the init system"), "{m}");
            // Undoing such a refused Create finds nothing to remove.
            let cg = Cgroup::open(&h, "system.slice:idshift:c1");
            assert!(cg.unit.is_some());
            cg.delete().expect("nothing to remove");
        }
        let cg = Cgroup::open(&h, "/default/c1");
        assert_eq!(cg.path(), "/default/c1");
        assert_eq!(
            cg.pids().expect("missing cgroup: no pids"),
            Vec::<i32>::new()
        );
        assert!(cg.delete().is_ok());
    }

    #[test]
    fn mountinfo_is_parsed() {
        let text = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/my\\040memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
50 23 0:40 / /tmp rw - tmpfs tmpfs rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["memory"], PathBuf::from("/sys/fs/cgroup/my memory"));
        assert!(!m.v1.contains_key("name=systemd") && !m.v1.contains_key("systemd"));
        let h = Hierarchy::choose(m, |_| String::new()).expect("v1");
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));

        let text = "\
30 1 0:26 / /mnt/empty rw - cgroup2 cgroup2 rw
31 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        let controllers = |p: &Path| {
            if p == Path::new("/sys/fs/cgroup") {
                "cpu io memory pids\n".to_string()
            } else {
                "\n".to_string()
            }
        };
        let h = Hierarchy::choose(parse_mountinfo(text), controllers).expect("v2");
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(h.v1.is_empty());
        // Only an empty cgroup2: still V2 there.
        let h = Hierarchy::choose(parse_mountinfo(text), |_| String::new()).expect("v2");
        assert_eq!(h.v2, Some(PathBuf::from("/mnt/empty")));
        assert!(matches!(
            Hierarchy::choose(
                parse_mountinfo("50 23 0:40 / /tmp rw - tmpfs tmpfs rw\n"),
                |_| { String::new() }
            ),
            Err(CgroupError::Unsupported(_))
        ));
        // This machine's.
        Hierarchy::detect().expect("detect");
    }

    /// `linux.resources` from JSON, as the spec and Update give them.
    fn res(j: serde_json::Value) -> LinuxResources {
        serde_json::from_value(j).expect("resources")
    }

    #[test]
    fn a_manager_made_ahead_serves_only_its_own_cgroup() {
        let v1 = Hierarchy {
            version: Version::V1,
            v1: BTreeMap::new(),
            v2: None,
        };
        let shares = res(serde_json::json!({"cpu": {"shares": 512}}));
        let ahead = |h: &Hierarchy, path: &str, r: &LinuxResources| {
            let what = (h.clone(), path.to_string(), r.clone());
            let (ahead, job) = ManagerAhead::new(move || Some(what));
            std::thread::spawn(job);
            ahead
        };
        // Made for /a/b: taken by that cgroup (libcgroups reads this host's
        // mounts, whatever they are), not by another.
        let made = ahead(&v1, "/a/b", &shares).take_for(Path::new("a/b"));
        assert!(made.is_some_and(|m| m.is_ok()));
        assert!(ahead(&v1, "/a/b", &shares)
            .take_for(Path::new("a/c"))
            .is_none());
        // None made: device rules alone, v2, a bad path, nothing known.
        let devices = res(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}));
        assert!(ahead(&v1, "/a/b", &devices)
            .take_for(Path::new("a/b"))
            .is_none());
        let v2 = Hierarchy::v2_at(PathBuf::from("/sys/fs/cgroup"));
        assert!(ahead(&v2, "/a/b", &shares)
            .take_for(Path::new("a/b"))
            .is_none());
        assert!(ahead(&v1, "/a/../b", &shares)
            .take_for(Path::new("b"))
            .is_none());
        let (nothing, job) = ManagerAhead::new(|| None);
        job();
        assert!(nothing.take_for(Path::new("a/b")).is_none());
        // The job dropped unrun: none, without waiting.
        let what = (v1.clone(), "/a/b".to_string(), shares.clone());
        let (unrun, job) = ManagerAhead::new(move || Some(what));
        drop(job);
        assert!(unrun.take_for(Path::new("a/b")).is_none());
        assert!(ManagerAhead::default().take_for(Path::new("a/b")).is_none());
    }

    #[test]
    fn check_names_what_it_refuses() {
        check(&res(serde_json::json!({
            "memory": {"swappiness": 10, "disableOOMKiller": true},
            "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 5}],
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 100}]},
            "rdma": {"mlx5_0": {"hcaHandles": 3}},
            "unified": {"memory.high": "1000000"},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3}],
        })))
        .expect("accepted");
        for (j, want) in [
            (
                serde_json::json!({"memory": {"kernel": 1}}),
                "memory.kernel",
            ),
            (
                serde_json::json!({"memory": {"kernelTCP": 1}}),
                "memory.kernelTCP",
            ),
            (
                serde_json::json!({"memory": {"swappiness": 101}}),
                "swappiness 101",
            ),
            (
                serde_json::json!({"blockIO": {"leafWeight": 10}}),
                "blockIO.leafWeight",
            ),
            (
                serde_json::json!({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 10}]}}),
                "blockIO.leafWeight",
            ),
            (
                serde_json::json!({"hugepageLimits": [{"pageSize": "2MB/../x", "limit": 1}]}),
                "page size \"2MB/../x\"",
            ),
            (
                serde_json::json!({"rdma": {"mlx5 0": {"hcaHandles": 3}}}),
                "rdma device",
            ),
            (
                serde_json::json!({"unified": {"../memory.max": "1"}}),
                "not a cgroup file",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "u", "access": "r"}]}),
                "devices[0]: type \"u\"",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "c", "access": "rwx"}]}),
                "devices[0]: access \"rwx\"",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "c", "major": -5, "access": "r"}]}),
                "devices[0]: -5",
            ),
        ] {
            let e = check(&res(j)).expect_err(want);
            assert!(matches!(e, CgroupError::Refused(_)), "{e:?}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn version_only_fields_are_refused_on_the_other() {
        let unified = res(serde_json::json!({"unified": {"memory.high": "1"}}));
        check_version(&unified, Version::V2).expect("unified on v2");
        let e = check_version(&unified, Version::V1).expect_err("unified on v1");
        assert!(e.to_string().contains("linux.resources.unified"), "{e}");
        for (j, want) in [
            (
                serde_json::json!({"memory": {"swappiness": 1}}),
                "memory.swappiness",
            ),
            (
                serde_json::json!({"memory": {"disableOOMKiller": true}}),
                "memory.disableOOMKiller",
            ),
            (
                serde_json::json!({"cpu": {"realtimeRuntime": 5}}),
                "cpu.realtimeRuntime",
            ),
            (
                serde_json::json!({"network": {"classID": 5}}),
                "network.classID",
            ),
            (
                serde_json::json!({"memory": {"swap": 300}}),
                "needs a memory limit",
            ),
            (
                serde_json::json!({"memory": {"limit": -1, "swap": 300}}),
                "needs a memory limit",
            ),
        ] {
            let r = res(j);
            check_version(&r, Version::V1).expect("v1 has it");
            let e = check_version(&r, Version::V2).expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn v2_device_rules_end_with_runcs_allowed_devices() {
        assert!(device_rules(&res(serde_json::json!({}))).is_empty());
        let rules = device_rules(&res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "minor": 0},
        ]})));
        assert_eq!(rules.len(), 2 + ALLOWED_DEVICES.len());
        assert_eq!(
            (rules[0].kind, rules[0].allow, rules[0].access.as_str()),
            ('a', false, "rwm")
        );
        assert_eq!(
            (rules[1].kind, rules[1].major, rules[1].access.as_str()),
            ('b', Some(8), "rwm")
        );
        assert!(rules[2..].iter().all(|r| r.allow));
    }

    #[test]
    fn conversions_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 20), 10_000);
        let swap = |m, s| swap_v2(m, s).expect("valid");
        assert_eq!(swap(Some(100), Some(300)).as_deref(), Some("200"));
        assert_eq!(swap(Some(100), Some(100)).as_deref(), Some("0"));
        assert_eq!(swap(Some(100), Some(-1)).as_deref(), Some("max"));
        assert_eq!(swap(Some(-1), None).as_deref(), Some("max"));
        assert_eq!(swap(Some(100), None), None);
        assert_eq!(swap(None, None), None);
        assert!(matches!(
            swap_v2(None, Some(300)),
            Err(CgroupError::Invalid(_))
        ));
        assert!(matches!(
            swap_v2(Some(100), Some(50)),
            Err(CgroupError::Invalid(_))
        ));
    }

    /// A directory holding `files`, read as every controller's (cgroups-rs
    /// reads plain files: a temporary directory stands for a cgroup).
    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write fixture");
        }
        dir
    }

    fn stats_in(dir: &tempfile::TempDir, v2: bool) -> Stats {
        let d = Some(dir.path().to_path_buf());
        read_stats(&StatDirs {
            v2,
            memory: d.clone(),
            cpu: d.clone(),
            cpuacct: d.clone(),
            pids: d,
        })
    }

    #[test]
    fn v1_stats_are_parsed() {
        let files = fixture(&[
            ("memory.usage_in_bytes", "1048576\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.max_usage_in_bytes", "2097152\n"),
            (
                "memory.stat",
                "cache 100\nrss 200\nmapped_file 0\ntotal_cache 4096\ntotal_rss 8192\n",
            ),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.stat", "user 25\nsystem 7\n"),
            (
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\nnr_bursts 0\n",
            ),
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
        ]);
        let s = stats_in(&files, false);
        assert_eq!(
            s,
            Stats {
                memory_usage: 1 << 20,
                memory_limit: 64 << 20,
                memory_max_usage: 2 << 20,
                memory_cache: 4096,
                memory_rss: 8192,
                cpu_usage_ns: 123_456_789,
                cpu_user_ns: 250_000_000,
                cpu_system_ns: 70_000_000,
                cpu_throttled_periods: 4,
                cpu_throttled_ns: 5000,
                pids_current: 2,
                pids_limit: u64::MAX,
                oom_kills: 3,
            }
        );
        // Without total_*, the local values; missing files are 0.
        let s = stats_in(&fixture(&[("memory.stat", "cache 100\nrss 200\n")]), false);
        assert_eq!(
            (s.memory_cache, s.memory_rss, s.pids_current),
            (100, 200, 0)
        );
    }

    #[test]
    fn v2_stats_are_parsed() {
        let files = fixture(&[
            ("memory.current", "1048576\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "3145728\n"),
            ("memory.stat", "anon 8192\nfile 4096\nkernel 512\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\n\
                 nr_throttled 3\nthrottled_usec 250\n",
            ),
            ("pids.current", "4\n"),
            ("pids.max", "10\n"),
        ]);
        assert_eq!(
            stats_in(&files, true),
            Stats {
                memory_usage: 1 << 20,
                memory_limit: u64::MAX,
                memory_max_usage: 3 << 20,
                memory_cache: 4096,
                memory_rss: 8192,
                cpu_usage_ns: 1_500_000,
                cpu_user_ns: 1_000_000,
                cpu_system_ns: 500_000,
                cpu_throttled_periods: 3,
                cpu_throttled_ns: 250_000,
                pids_current: 4,
                pids_limit: 10,
                oom_kills: 1,
            }
        );
        assert_eq!(stats_in(&fixture(&[]), true), Stats::default());
        assert_eq!(stats_in(&fixture(&[]), false), Stats::default());
    }

    fn v1_host() -> Option<Hierarchy> {
        let h = Hierarchy::detect().expect("detect");
        if h.version == Version::V2 {
            eprintln!("cgroup v2 host: skipping the cgroup v1 test");
            return None;
        }
        Some(h)
    }

    fn v1_file(h: &Hierarchy, controller: &str, cg: &str, name: &str) -> PathBuf {
        h.v1[controller].join(cg.trim_start_matches('/')).join(name)
    }

    fn read_trim(p: &Path) -> String {
        fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// The real v1 hierarchy of this machine (skipped on v2 hosts).
    #[test]
    fn v1_lifecycle_on_this_host() {
        let Some(h) = v1_host() else { return };
        let path = unique("v1");
        let cg = Cgroup::create(&h, &path).expect("create");
        let _remove = Remove(cg.clone());
        for d in cg.dirs().expect("dirs") {
            assert!(d.is_dir(), "{} not created", d.display());
        }
        if h.v1.contains_key("cpuset") {
            assert!(!read_trim(&v1_file(&h, "cpuset", &path, "cpuset.cpus")).is_empty());
            assert!(!read_trim(&v1_file(&h, "cpuset", &path, "cpuset.mems")).is_empty());
        }
        let mut child = Reap(sleeper());
        let pid = child.0.id() as i32;
        cg.add_process(pid).expect("add");
        assert_eq!(cg.pids().expect("pids"), vec![pid]);
        let self_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        assert!(
            self_cgroup.contains(&format!(":memory:{path}\n")),
            "{self_cgroup}"
        );

        let r = res(serde_json::json!({
            "memory": {"limit": 64 << 20},
            "pids": {"limit": 10},
            "cpu": {"shares": 512, "quota": 50_000, "period": 100_000, "cpus": "0"},
            "blockIO": {"weight": 500},
        }));
        cg.apply(&r).expect("apply");
        let file = |c: &str, n: &str| read_trim(&v1_file(&h, c, &path, n));
        assert_eq!(
            file("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(file("pids", "pids.max"), "10");
        assert_eq!(file("cpu", "cpu.shares"), "512");
        assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(file("cpuset", "cpuset.cpus"), "0");
        // memsw >= limit must hold whichever way the limits move.
        if v1_file(&h, "memory", &path, "memory.memsw.limit_in_bytes").exists() {
            for (l, s) in [
                (64 << 20, 128 << 20),
                (256 << 20, 512 << 20),
                (32 << 20, 32 << 20),
            ] {
                cg.apply(&res(serde_json::json!({"memory": {"limit": l, "swap": s}})))
                    .unwrap_or_else(|e| panic!("limit {l} swap {s}: {e}"));
                assert_eq!(file("memory", "memory.limit_in_bytes"), l.to_string());
                assert_eq!(file("memory", "memory.memsw.limit_in_bytes"), s.to_string());
            }
        }
        // Unlimited quota; then only the period changes.
        cg.apply(&res(serde_json::json!({"cpu": {"quota": -1}})))
            .expect("quota -1");
        assert_eq!(file("cpu", "cpu.cfs_quota_us"), "-1");
        cg.apply(&res(serde_json::json!({"pids": {"limit": 0}})))
            .expect("pids 0");
        assert_eq!(file("pids", "pids.max"), "max");
        // A limit above the current memory+swap one needs a swap limit too
        // (the kernel refuses memory > memory+swap, as with runc).
        let grow = |swap: Option<i64>| {
            let mut memory = serde_json::json!({"limit": 64 << 20});
            if let Some(s) = swap {
                memory["swap"] = s.into();
            }
            cg.apply(&res(
                serde_json::json!({"pids": {"limit": 10}, "memory": memory}),
            ))
        };
        if v1_file(&h, "memory", &path, "memory.memsw.limit_in_bytes").exists() {
            let e = grow(None).expect_err("memory above memory+swap");
            assert!(matches!(e, CgroupError::Apply { .. }), "{e:?}");
            assert!(e.to_string().contains("memory.limit_in_bytes"), "{e}");
        }
        grow(Some(-1)).expect("apply again");
        // What libcgroups' v1 cpu controller leaves out: a burst alone.
        if v1_file(&h, "cpu", &path, "cpu.cfs_burst_us").exists() {
            cg.apply(&res(serde_json::json!({"cpu": {"burst": 1000}})))
                .expect("burst");
            assert_eq!(file("cpu", "cpu.cfs_burst_us"), "1000");
        }
        // The devices every container has (runc's list) are allowed after
        // a spec's deny-all.
        cg.apply(&res(
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}),
        ))
        .expect("devices");
        let list = file("devices", "devices.list");
        for rule in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
        ] {
            assert!(list.lines().any(|l| l == rule), "{rule} not in {list}");
        }
        assert!(!list.lines().any(|l| l.starts_with("a ")), "{list}");

        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("state"));
        assert_eq!(file("freezer", "freezer.state"), "FROZEN");
        cg.thaw().expect("thaw");
        assert!(!cg.is_frozen().expect("state"));
        assert_eq!(file("freezer", "freezer.state"), "THAWED");

        let s = cg.stats().expect("stats");
        assert_eq!(s.memory_limit, 64 << 20);
        assert_eq!(s.pids_limit, 10);
        assert!(s.pids_current >= 1, "{s:?}");

        // A child cgroup (a container may make its own): deleted first.
        for c in ["memory", "pids"] {
            fs::create_dir(h.v1[c].join(path.trim_start_matches('/')).join("sub")).expect("sub");
        }
        cg.freeze().expect("freeze before the kill");
        cg.kill_all(libc::SIGKILL).expect("kill");
        let status = child.0.wait().expect("reap");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!cg.is_frozen().expect("state"), "kill_all(SIGKILL) thaws");
        cg.delete().expect("delete");
        for d in cg.dirs().expect("dirs") {
            assert!(!d.exists(), "{} left", d.display());
        }
        cg.delete().expect("idempotent");
        assert!(cg.stats().is_err(), "stats of a deleted cgroup");
        cg.kill_all(libc::SIGKILL)
            .expect("kill_all of a deleted cgroup");
    }

    /// v1 device rules change without a moment refusing what both rule sets
    /// allow: a process in the cgroup opening /dev/null without a stop sees
    /// no EPERM, whether the default changes (the cgroup is frozen over it)
    /// or not (only what differs is written; the same rules, nothing). The
    /// kernel's devices.list then says what `devices::v1_writes` expects.
    #[test]
    fn v1_device_rules_change_without_refusing_what_stays() {
        let Some(h) = v1_host() else { return };
        if !h.v1.contains_key("devices") || !h.v1.contains_key("freezer") {
            return;
        }
        let path = unique("v1dev");
        let cg = Cgroup::create(&h, &path).expect("create");
        let _remove = Remove(cg.clone());
        // Exits 3 at the first open of /dev/null that fails.
        let mut opener = Reap(
            Command::new("sh")
                .args([
                    "-c",
                    "while true </dev/null; do :; done 2>/dev/null; exit 3",
                ])
                .spawn()
                .expect("spawn sh"),
        );
        cg.add_process(opener.0.id() as i32).expect("add");
        let list = || read_trim(&v1_file(&h, "devices", &path, "devices.list"));
        let alive = |opener: &mut Reap, what: &str| {
            assert_eq!(
                opener.0.try_wait().expect("try_wait"),
                None,
                "{what}: the process opening /dev/null saw it refused"
            );
        };
        let a = res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rw"},
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"},
        ]}));
        let b = res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "minor": 16, "access": "rw"},
        ]}));
        let rules_of = |r: &LinuxResources| device_rules(r);
        // Allowing every device to allowing some: frozen over the change.
        cg.apply_devices(&a).expect("apply a");
        assert!(!cg.is_frozen().expect("state"), "thawed after the change");
        let got = list();
        assert!(!got.lines().any(|l| l.starts_with("a ")), "{got}");
        assert!(got.lines().any(|l| l == "b 8:0 r"), "{got}");
        assert!(got.lines().any(|l| l == "c 1:3 rwm"), "{got}");
        assert_eq!(devices::v1_writes(&got, &rules_of(&a)).expect("writes"), []);
        // An Update with the same rules, again and again.
        for _ in 0..50 {
            cg.apply(&a).expect("apply a again");
        }
        assert_eq!(list(), got);
        alive(&mut opener, "the same rules");
        // Other rules allowing some devices: only what differs.
        for _ in 0..20 {
            cg.apply_devices(&b).expect("apply b");
            cg.apply_devices(&a).expect("apply a");
        }
        cg.apply_devices(&b).expect("apply b");
        let got = list();
        assert!(got.lines().any(|l| l == "b 8:16 rw"), "{got}");
        assert!(!got.lines().any(|l| l == "b 8:0 r"), "{got}");
        assert_eq!(devices::v1_writes(&got, &rules_of(&b)).expect("writes"), []);
        alive(&mut opener, "other rules");
        // The opener does see a refusal.
        fs::write(v1_file(&h, "devices", &path, "devices.deny"), "c 1:3 r").expect("deny");
        let status = opener.0.wait().expect("wait");
        assert_eq!(status.code(), Some(3), "{status:?}");
    }

    /// OOM kills are seen through cgroup.event_control (skipped on v2 hosts).
    #[test]
    fn v1_oom_watch_sees_a_kill() {
        let Some(h) = v1_host() else { return };
        if !h.v1.contains_key("memory") {
            eprintln!("no v1 memory controller: skipping");
            return;
        }
        let path = unique("oom");
        let cg = Cgroup::create(&h, &path).expect("create");
        let _remove = Remove(cg.clone());
        cg.apply(&res(
            serde_json::json!({"memory": {"limit": 16 << 20, "swap": 16 << 20}}),
        ))
        .expect("apply");
        let mut watch = cg
            .oom_watch()
            .expect("oom_watch")
            .expect("memory controller");
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let first = watch.next().await;
                let _ = tx.send(first);
                // Then: the cgroup's removal ends the watch.
                watch.next().await
            })
        });
        // The shell waits for a line, so that it is in the cgroup before dd
        // allocates 64 MiB.
        let mut child = Reap(
            Command::new("sh")
                .args([
                    "-c",
                    "read x; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                ])
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sh"),
        );
        cg.add_process(child.0.id() as i32).expect("add");
        {
            let mut stdin = child.0.stdin.take().expect("stdin");
            stdin.write_all(b"go\n").expect("write");
        }
        let status = child.0.wait().expect("reap");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "dd was OOM-killed");
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the watcher reports within 5 s");
        assert_eq!(first, Some(1));
        assert_eq!(cg.stats().expect("stats").oom_kills, 1);
        cg.delete().expect("delete");
        assert_eq!(watcher.join().expect("watcher"), None);
    }

    /// Unmounts the test's cgroup2 mount, even on panic.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// A cgroup `<unique>/ctr` in a cgroup2 mount of the test's own (in a
    /// temp dir). Dropped in field order: the cgroups removed, the mount
    /// detached, the temp dir deleted.
    struct OwnV2 {
        _remove: Remove,
        _remove_top: Remove,
        _unmount: Unmount,
        tmp: tempfile::TempDir,
        root: PathBuf,
        h: Hierarchy,
        top: String,
        path: String,
        cg: Cgroup,
        dir: PathBuf,
    }

    impl OwnV2 {
        fn new(prefix: &str) -> Self {
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path().join("cg2");
            fs::create_dir(&root).expect("mkdir");
            nix::mount::mount(
                Some("none"),
                &root,
                Some("cgroup2"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount cgroup2");
            let unmount = Unmount(root.clone());
            let h = Hierarchy::v2_at(root.clone());
            let top = unique(prefix);
            let path = format!("{top}/ctr");
            let remove_top = Remove(Cgroup::open(&h, &top));
            let cg = Cgroup::create(&h, &path).expect("create");
            let dir = root.join(path.trim_start_matches('/'));
            OwnV2 {
                _remove: Remove(cg.clone()),
                _remove_top: remove_top,
                _unmount: unmount,
                tmp,
                root,
                h,
                top,
                path,
                cg,
                dir,
            }
        }
    }

    /// cgroup v2 in a cgroup2 mount of the test's own. On this v1 host all
    /// controllers are bound to v1, so only the core files are there.
    #[test]
    fn v2_lifecycle_in_own_mount() {
        let v2 = OwnV2::new("v2");
        let (root, h, top, path, cg, dir) = (&v2.root, &v2.h, &v2.top, &v2.path, &v2.cg, &v2.dir);
        assert!(dir.is_dir());
        let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();

        let mut a = Reap(sleeper());
        let mut b = Reap(sleeper());
        let (pa, pb) = (a.0.id() as i32, b.0.id() as i32);
        cg.add_process(pa).expect("add");
        cg.add_process(pb).expect("add");
        let mut want = vec![pa, pb];
        want.sort_unstable();
        assert_eq!(cg.pids().expect("pids"), want);
        assert_eq!(Cgroup::open(h, path).pids().expect("pids"), want);

        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("frozen"));
        assert!(read_trim(&dir.join("cgroup.events")).contains("frozen 1"));
        cg.thaw().expect("thaw");
        assert!(!cg.is_frozen().expect("thawed"));

        if !available.split_whitespace().any(|c| c == "memory") {
            let e = cg
                .apply(&res(serde_json::json!({"memory": {"limit": 64 << 20}})))
                .expect_err("no memory controller in this v2 hierarchy");
            assert!(matches!(e, CgroupError::Apply { .. }), "{e:?}");
            assert!(e.to_string().contains("memory.max"), "{e}");
        }
        if !available.split_whitespace().any(|c| c == "pids") {
            let e = cg
                .apply(&res(serde_json::json!({"pids": {"limit": 10}})))
                .expect_err("no pids controller in this v2 hierarchy");
            assert!(e.to_string().contains("pids.max"), "{e}");
        }
        cg.apply(&LinuxResources::default())
            .expect("nothing to apply");
        // unified: a file of the container's own cgroup, written as given.
        cg.apply(&res(
            serde_json::json!({"unified": {"cgroup.max.descendants": "5"}}),
        ))
        .expect("unified");
        assert_eq!(read_trim(&dir.join("cgroup.max.descendants")), "5");
        for (key, want) in [
            ("../cgroup.max.descendants", "not a cgroup file"),
            ("cgroup.procs", "not a cgroup file"),
            ("nosuch.file", "nosuch.file"),
        ] {
            let e = cg
                .apply(&res(serde_json::json!({"unified": {key: "1"}})))
                .expect_err(key);
            assert!(e.to_string().contains(want), "{key}: {e}");
        }
        // v1-only fields are refused on v2, naming the field.
        let e = cg
            .apply(&res(serde_json::json!({"memory": {"swappiness": 10}})))
            .expect_err("swappiness on v2");
        assert!(e.to_string().contains("memory.swappiness"), "{e}");
        let s = cg.stats().expect("stats");
        if !available.split_whitespace().any(|c| c == "memory") {
            assert_eq!(s.memory_usage, 0);
        }
        assert!(cg.oom_watch().is_ok());

        // A process in a child cgroup: signalled too, and the child removed
        // first.
        fs::create_dir(dir.join("sub")).expect("sub");
        fs::write(dir.join("sub/cgroup.procs"), pb.to_string()).expect("move");
        assert_eq!(cg.pids().expect("pids"), vec![pa]);
        cg.kill_all(libc::SIGTERM).expect("SIGTERM");
        assert_eq!(a.0.wait().expect("reap").signal(), Some(libc::SIGTERM));
        assert_eq!(b.0.wait().expect("reap").signal(), Some(libc::SIGTERM));

        let mut c = Reap(sleeper());
        cg.add_process(c.0.id() as i32).expect("add");
        cg.kill_all(libc::SIGKILL).expect("SIGKILL");
        assert_eq!(c.0.wait().expect("reap").signal(), Some(libc::SIGKILL));
        assert!(matches!(
            cg.kill_all(libc::SIGRTMIN() + 1),
            Err(CgroupError::Invalid(_))
        ));

        cg.delete().expect("delete");
        assert!(!dir.exists());
        cg.delete().expect("idempotent");
        Cgroup::open(h, top).delete().expect("delete the parent");
        assert!(!root.join(top.trim_start_matches('/')).exists());
    }

    /// Runs `sh` in the cgroup: for each (node, mode) it opens the node for
    /// reading ("r") or writing ("w") and prints "ok" or "denied" with the
    /// shell's error.
    fn opens_in(cg: &Cgroup, tries: &[(&Path, &str)]) -> String {
        use std::io::Read;
        let mut script = String::from("read go; ");
        for (node, mode) in tries {
            let redirect = if *mode == "w" { ">" } else { "<" };
            script.push_str(&format!(
                "if true {redirect} '{n}' 2>&1; then echo '{n} {mode} ok'; else echo '{n} {mode} denied'; fi; ",
                n = node.display()
            ));
        }
        let mut child = Reap(
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1; {script}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn sh"),
        );
        cg.add_process(child.0.id() as i32).expect("add sh");
        child
            .0
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("go");
        let mut out = String::new();
        child
            .0
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        assert!(child.0.wait().expect("wait").success(), "{out}");
        out
    }

    #[test]
    fn v2_device_rules_are_enforced_by_ebpf() {
        let v2 = OwnV2::new("dev");
        let (tmp, h, top, cg, dir) = (&v2.tmp, &v2.h, &v2.top, &v2.cg, &v2.dir);

        // Copies of /dev/kmsg (1:11) and /dev/fuse (10:229) made here:
        // devices outside runc's always-allowed list.
        let nodes = tmp.path().join("dev");
        fs::create_dir(&nodes).expect("mkdir dev");
        let (null, zero) = (nodes.join("kmsg"), nodes.join("fuse"));
        for (node, major, minor) in [(&null, 1, 11), (&zero, 10, 229)] {
            nix::sys::stat::mknod(
                node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major, minor),
            )
            .expect("mknod");
        }
        let tries = [
            (null.as_path(), "r"),
            (null.as_path(), "w"),
            (zero.as_path(), "r"),
        ];
        let before = opens_in(cg, &tries);
        assert_eq!(before.matches(" ok").count(), 3, "{before}");
        assert!(devices::attached(dir).expect("query").is_empty());

        // Default deny, the fuse copy allowed.
        cg.apply(&res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        ]})))
        .expect("device rules");
        assert_eq!(devices::attached(dir).expect("query").len(), 1);
        let out = opens_in(cg, &tries);
        let n = null.display();
        assert!(out.contains(&format!("{n} r denied")), "{out}");
        assert!(out.contains(&format!("{n} w denied")), "{out}");
        assert!(out.contains("Operation not permitted"), "{out}");
        assert!(out.contains(&format!("{} r ok", zero.display())), "{out}");
        // Outside the cgroup nothing changed.
        let outside = Command::new("sh")
            .arg("-c")
            .arg(format!("true < '{n}'"))
            .status()
            .expect("sh");
        assert!(outside.success());

        // An Update replaces the program: now the kmsg copy for reading only.
        let first = devices::attached(dir).expect("query");
        cg.apply(&res(serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"},
        ]})))
        .expect("new device rules");
        let second = devices::attached(dir).expect("query");
        assert_eq!(second.len(), 1);
        assert_ne!(first, second);
        let out = opens_in(cg, &tries);
        assert!(out.contains(&format!("{n} r ok")), "{out}");
        assert!(out.contains(&format!("{n} w denied")), "{out}");
        assert!(
            out.contains(&format!("{} r denied", zero.display())),
            "{out}"
        );

        // A bad rule is refused before anything is replaced.
        let e = cg
            .apply(&res(serde_json::json!({"devices": [
                {"allow": true, "type": "c", "access": "rx"},
            ]})))
            .expect_err("bad rule");
        assert!(matches!(e, CgroupError::Refused(_)), "{e}");
        assert_eq!(devices::attached(dir).expect("query"), second);

        cg.delete().expect("delete");
        Cgroup::open(h, top).delete().expect("delete the parent");
    }
}
