//! cgroups v1 and v2: a container's cgroup, its resources, freezing,
//! statistics and removal. The hierarchy is found in /proc/self/mountinfo.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid cgroup: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
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
    /// v1: controller name -> mount point (co-mounted controllers share one).
    pub v1: BTreeMap<String, PathBuf>,
    pub v2: Option<PathBuf>,
}

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

impl Hierarchy {
    pub fn detect() -> Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("reading", Path::new("/proc/self/mountinfo")))?;
        Ok(Self::from_mountinfo(&text))
    }

    fn from_mountinfo(text: &str) -> Self {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let super_opts = r.nth(1).unwrap_or_default();
            match fstype {
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.insert(opt.to_string(), PathBuf::from(mount_point));
                        }
                    }
                }
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(mount_point)),
                _ => {}
            }
        }
        let version = if v1.is_empty() {
            Version::V2
        } else {
            Version::V1
        };
        Hierarchy { version, v1, v2 }
    }

    /// A v2 hierarchy rooted at `root` (tests mount their own).
    #[cfg(test)]
    pub fn v2_at(root: PathBuf) -> Self {
        Hierarchy {
            version: Version::V2,
            v1: BTreeMap::new(),
            v2: Some(root),
        }
    }
}

/// Resources to apply; `None` leaves a value alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub memory_limit: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
}

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

/// Waits for OOM kills in one cgroup (blocking).
pub enum OomWatch {
    EventFd {
        efd: std::os::fd::OwnedFd,
        _control: fs::File,
        dir: PathBuf,
        seen: u64,
    },
    Events {
        ino: std::os::fd::OwnedFd,
        events: PathBuf,
        seen: u64,
    },
}

impl OomWatch {
    /// Blocks until OOM kills happened (the cgroup's total count of them),
    /// or until the cgroup is gone (`None`).
    pub fn wait(&mut self) -> Option<u64> {
        loop {
            match self {
                OomWatch::EventFd { efd, dir, seen, .. } => {
                    let mut buf = [0u8; 8];
                    if rustix::io::read(&*efd, &mut buf).is_err() {
                        return None;
                    }
                    // The eventfd also fires when the cgroup is removed, and
                    // on every OOM condition: report kills, once each.
                    if !dir.exists() {
                        return None;
                    }
                    let n = oom_kills_v1(dir);
                    if n > *seen {
                        *seen = n;
                        return Some(n);
                    }
                }
                OomWatch::Events { ino, events, seen } => {
                    let mut buf = [0u8; 1024];
                    if rustix::io::read(&*ino, &mut buf).is_err() {
                        return None;
                    }
                    let Ok(text) = fs::read_to_string(&*events) else {
                        return None;
                    };
                    let n = parse_kv(&text).get("oom_kill").copied().unwrap_or(0);
                    if n > *seen {
                        *seen = n;
                        return Some(n);
                    }
                }
            }
        }
    }
}

fn oom_kills_v1(dir: &Path) -> u64 {
    parse_kv(&fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default())
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

/// A container's cgroup.
#[derive(Clone, Debug)]
pub struct Cgroup {
    h: Hierarchy,
    rel: PathBuf,
    path: String,
}

/// runc's conversion of cpu shares (2..262144) to cgroup v2 cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

/// runc's conversion of blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

/// cgroup v2 swap limit from OCI's memory+swap total.
pub fn swap_v2(limit: i64, swap: i64) -> String {
    if swap == -1 {
        "max".into()
    } else {
        (swap - limit).max(0).to_string()
    }
}

fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    if s == "max" {
        u64::MAX
    } else {
        s.parse().unwrap_or(0)
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events...).
pub fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), parse_u64(v)))
        })
        .collect()
}

impl Cgroup {
    fn parse_path(path: &str) -> Result<PathBuf> {
        if path.contains(':') {
            return Err(CgroupError::Unsupported(format!(
                "cgroupsPath {path:?} is systemd style; the systemd cgroup driver is not supported (use a cgroupfs path like /default/ctr1)"
            )));
        }
        let mut rel = PathBuf::new();
        for c in Path::new(path).components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::RootDir | Component::CurDir => {}
                _ => {
                    return Err(CgroupError::Invalid(format!(
                        "cgroupsPath {path:?} contains '..'"
                    )))
                }
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(CgroupError::Invalid(format!(
                "cgroupsPath {path:?} names the root cgroup"
            )));
        }
        Ok(rel)
    }

    /// The directories of this cgroup, one per mounted controller (v1) or one (v2).
    fn dirs(&self) -> Vec<PathBuf> {
        match self.h.version {
            Version::V1 => {
                let mut roots: Vec<&PathBuf> = self.h.v1.values().collect();
                roots.sort();
                roots.dedup();
                roots.into_iter().map(|r| r.join(&self.rel)).collect()
            }
            Version::V2 => self.h.v2.iter().map(|r| r.join(&self.rel)).collect(),
        }
    }

    fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        match self.h.version {
            Version::V1 => self.h.v1.get(controller).map(|r| r.join(&self.rel)),
            Version::V2 => self.h.v2.as_ref().map(|r| r.join(&self.rel)),
        }
    }

    pub fn open(h: &Hierarchy, path: &str) -> Self {
        Cgroup {
            h: h.clone(),
            rel: Self::parse_path(path)
                .unwrap_or_else(|_| PathBuf::from(path.trim_start_matches('/'))),
            path: path.to_string(),
        }
    }

    pub fn create(h: &Hierarchy, path: &str) -> Result<Self> {
        let rel = Self::parse_path(path)?;
        let cg = Cgroup {
            h: h.clone(),
            rel,
            path: path.to_string(),
        };
        match h.version {
            Version::V1 => {
                if h.v1.is_empty() {
                    return Err(CgroupError::Unsupported(
                        "no cgroup v1 controller is mounted".into(),
                    ));
                }
                for d in cg.dirs() {
                    fs::create_dir_all(&d).map_err(io("creating cgroup", &d))?;
                }
                if let Some(cpuset) = h.v1.get("cpuset") {
                    // A new cpuset cgroup starts empty: inherit cpus and mems down the path.
                    let mut dir = cpuset.clone();
                    for c in cg.rel.components() {
                        let parent = dir.clone();
                        dir.push(c);
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            let cur = fs::read_to_string(dir.join(f)).unwrap_or_default();
                            if cur.trim().is_empty() {
                                let v = fs::read_to_string(parent.join(f))
                                    .map_err(io("reading", &parent.join(f)))?;
                                fs::write(dir.join(f), v.trim())
                                    .map_err(io("writing", &dir.join(f)))?;
                            }
                        }
                    }
                }
            }
            Version::V2 => {
                let root = h.v2.clone().ok_or_else(|| {
                    CgroupError::Unsupported("no cgroup2 filesystem is mounted".into())
                })?;
                let available =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = ["cpu", "memory", "pids", "io", "cpuset"]
                    .iter()
                    .filter(|c| available.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                let mut dir = root;
                for c in cg.rel.components() {
                    if !enable.is_empty() {
                        let f = dir.join("cgroup.subtree_control");
                        fs::write(&f, enable.join(" "))
                            .map_err(io("enabling controllers in", &f))?;
                    }
                    dir.push(c);
                    match fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io("creating cgroup", &dir)(e)),
                    }
                }
            }
        }
        Ok(cg)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn add_process(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            let f = d.join("cgroup.procs");
            fs::write(&f, pid.to_string()).map_err(io("adding a process to", &f))?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "memory"]
            .iter()
            .find_map(|c| self.controller_dir(c))
            .or_else(|| self.dirs().into_iter().next())
            .ok_or_else(|| CgroupError::Unsupported("no cgroup directory".into()))?;
        let f = dir.join("cgroup.procs");
        let text = match fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("reading", &f)(e)),
        };
        let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<()> {
        let dir = self.controller_dir(controller).ok_or_else(|| {
            CgroupError::Unsupported(format!(
                "the {controller} controller is not mounted (for {file})"
            ))
        })?;
        let f = dir.join(file);
        if !f.exists() {
            return Err(CgroupError::Unsupported(format!(
                "{} does not exist",
                f.display()
            )));
        }
        fs::write(&f, value).map_err(io("writing", &f))
    }

    pub fn apply(&self, r: &Resources) -> Result<()> {
        match self.h.version {
            Version::V1 => {
                // memsw must stay >= limit: raise memsw first when growing.
                let memsw_exists = self
                    .controller_dir("memory")
                    .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists());
                if let Some(l) = r.memory_limit {
                    let swap = r.memory_swap.filter(|_| memsw_exists);
                    if let Some(s) = swap {
                        let _ = self.write("memory", "memory.memsw.limit_in_bytes", &s.to_string());
                    }
                    self.write("memory", "memory.limit_in_bytes", &l.to_string())?;
                    if let Some(s) = swap {
                        self.write("memory", "memory.memsw.limit_in_bytes", &s.to_string())?;
                    }
                }
                if let Some(v) = r.memory_reservation {
                    self.write("memory", "memory.soft_limit_in_bytes", &v.to_string())?;
                }
                if let Some(v) = r.cpu_shares {
                    self.write("cpu", "cpu.shares", &v.to_string())?;
                }
                if let Some(v) = r.cpu_period {
                    self.write("cpu", "cpu.cfs_period_us", &v.to_string())?;
                }
                if let Some(v) = r.cpu_quota {
                    self.write("cpu", "cpu.cfs_quota_us", &v.to_string())?;
                }
                if let Some(v) = r.blkio_weight {
                    self.write("blkio", "blkio.weight", &v.to_string())?;
                }
            }
            Version::V2 => {
                if let Some(l) = r.memory_limit {
                    self.write(
                        "memory",
                        "memory.max",
                        &if l < 0 { "max".into() } else { l.to_string() },
                    )?;
                    if let Some(s) = r.memory_swap {
                        self.write("memory", "memory.swap.max", &swap_v2(l, s))?;
                    }
                }
                if let Some(v) = r.memory_reservation {
                    self.write("memory", "memory.low", &v.to_string())?;
                }
                if let Some(v) = r.cpu_shares {
                    self.write("cpu", "cpu.weight", &shares_to_weight(v).to_string())?;
                }
                if r.cpu_quota.is_some() || r.cpu_period.is_some() {
                    let quota = match r.cpu_quota {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".into(),
                    };
                    let period = r.cpu_period.unwrap_or(100_000);
                    self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
                }
                if let Some(v) = r.blkio_weight {
                    self.write(
                        "io",
                        "io.weight",
                        &format!("default {}", blkio_to_io_weight(v)),
                    )?;
                }
            }
        }
        // The same files in both versions.
        if let Some(v) = &r.cpuset_cpus {
            self.write("cpuset", "cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            self.write("cpuset", "cpuset.mems", v)?;
        }
        if let Some(v) = r.pids_limit {
            let max = if v <= 0 { "max".into() } else { v.to_string() };
            self.write("pids", "pids.max", &max)?;
        }
        Ok(())
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (file, value) = match self.h.version {
            Version::V1 => ("freezer.state", if frozen { "FROZEN" } else { "THAWED" }),
            Version::V2 => ("cgroup.freeze", if frozen { "1" } else { "0" }),
        };
        self.write("freezer", file, value)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.is_frozen()? == frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Invalid(format!(
                    "cgroup {} did not become {} within 5 s",
                    self.path,
                    if frozen { "frozen" } else { "thawed" }
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    pub fn is_frozen(&self) -> Result<bool> {
        let dir = self.controller_dir("freezer").ok_or_else(|| {
            CgroupError::Unsupported("the freezer controller is not mounted".into())
        })?;
        Ok(match self.h.version {
            Version::V1 => {
                let f = dir.join("freezer.state");
                fs::read_to_string(&f).map_err(io("reading", &f))?.trim() == "FROZEN"
            }
            Version::V2 => {
                let f = dir.join("cgroup.events");
                parse_kv(&fs::read_to_string(&f).map_err(io("reading", &f))?)
                    .get("frozen")
                    .copied()
                    == Some(1)
            }
        })
    }

    fn read(&self, controller: &str, file: &str) -> String {
        self.controller_dir(controller)
            .and_then(|d| fs::read_to_string(d.join(file)).ok())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats {
            pids_current: parse_u64(&self.read("pids", "pids.current")),
            pids_limit: parse_u64(&self.read("pids", "pids.max")),
            ..Default::default()
        };
        match self.h.version {
            Version::V1 => {
                s.memory_usage = parse_u64(&self.read("memory", "memory.usage_in_bytes"));
                s.memory_limit = parse_u64(&self.read("memory", "memory.limit_in_bytes"));
                s.memory_max_usage = parse_u64(&self.read("memory", "memory.max_usage_in_bytes"));
                let m = parse_kv(&self.read("memory", "memory.stat"));
                s.memory_cache = m
                    .get("total_cache")
                    .or(m.get("cache"))
                    .copied()
                    .unwrap_or(0);
                s.memory_rss = m.get("total_rss").or(m.get("rss")).copied().unwrap_or(0);
                s.oom_kills = parse_kv(&self.read("memory", "memory.oom_control"))
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                s.cpu_usage_ns = parse_u64(&self.read("cpuacct", "cpuacct.usage"));
                // USER_HZ is 100 on Linux: one tick is 10 ms.
                let t = parse_kv(&self.read("cpuacct", "cpuacct.stat"));
                s.cpu_user_ns = t.get("user").copied().unwrap_or(0) * 10_000_000;
                s.cpu_system_ns = t.get("system").copied().unwrap_or(0) * 10_000_000;
                let c = parse_kv(&self.read("cpu", "cpu.stat"));
                s.cpu_throttled_periods = c.get("nr_throttled").copied().unwrap_or(0);
                s.cpu_throttled_ns = c.get("throttled_time").copied().unwrap_or(0);
            }
            Version::V2 => {
                s.memory_usage = parse_u64(&self.read("memory", "memory.current"));
                s.memory_limit = parse_u64(&self.read("memory", "memory.max"));
                s.memory_max_usage = parse_u64(&self.read("memory", "memory.peak"));
                let m = parse_kv(&self.read("memory", "memory.stat"));
                s.memory_cache = m.get("file").copied().unwrap_or(0);
                s.memory_rss = m.get("anon").copied().unwrap_or(0);
                s.oom_kills = parse_kv(&self.read("memory", "memory.events"))
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                let c = parse_kv(&self.read("cpu", "cpu.stat"));
                let us = |k: &str| c.get(k).copied().unwrap_or(0) * 1000;
                s.cpu_usage_ns = us("usage_usec");
                s.cpu_user_ns = us("user_usec");
                s.cpu_system_ns = us("system_usec");
                s.cpu_throttled_periods = c.get("nr_throttled").copied().unwrap_or(0);
                s.cpu_throttled_ns = us("throttled_usec");
            }
        }
        Ok(s)
    }

    pub fn kill_all(&self, signal: i32) -> Result<()> {
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| CgroupError::Invalid(format!("invalid signal {signal}")))?;
        for pid in self.pids()? {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(CgroupError::Io {
                        op: "signalling",
                        path: PathBuf::from(format!("/proc/{pid}")),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// A watcher of OOM kills in this cgroup; `None` without a memory controller.
    pub fn oom_watch(&self) -> Result<Option<OomWatch>> {
        let Some(dir) = self.controller_dir("memory") else {
            return Ok(None);
        };
        match self.h.version {
            Version::V1 => {
                let control = dir.join("memory.oom_control");
                let file = fs::File::open(&control).map_err(io("opening", &control))?;
                let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
                    .map_err(|e| io("creating an eventfd for", &control)(e.into()))?;
                use std::os::fd::AsRawFd;
                let reg = dir.join("cgroup.event_control");
                fs::write(&reg, format!("{} {}", efd.as_raw_fd(), file.as_raw_fd()))
                    .map_err(io("registering an OOM eventfd in", &reg))?;
                let seen = oom_kills_v1(&dir);
                Ok(Some(OomWatch::EventFd {
                    efd,
                    _control: file,
                    dir,
                    seen,
                }))
            }
            Version::V2 => {
                let events = dir.join("memory.events");
                if !events.exists() {
                    return Ok(None);
                }
                use rustix::fs::inotify;
                let ino = inotify::init(inotify::CreateFlags::CLOEXEC)
                    .map_err(|e| io("inotify for", &events)(e.into()))?;
                inotify::add_watch(&ino, &events, inotify::WatchFlags::MODIFY)
                    .map_err(|e| io("watching", &events)(e.into()))?;
                let seen = parse_kv(&fs::read_to_string(&events).unwrap_or_default())
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                Ok(Some(OomWatch::Events { ino, events, seen }))
            }
        }
    }

    /// Removes the cgroup (waiting briefly for exiting processes). Idempotent.
    pub fn delete(&self) -> Result<()> {
        let _ = self.thaw();
        for d in self.dirs() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(io("removing cgroup", &d)(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated() {
        assert!(matches!(
            Cgroup::parse_path("system.slice:ctr:1"),
            Err(CgroupError::Unsupported(_))
        ));
        assert!(matches!(
            Cgroup::parse_path("/a/../b"),
            Err(CgroupError::Invalid(_))
        ));
        assert!(matches!(
            Cgroup::parse_path("/"),
            Err(CgroupError::Invalid(_))
        ));
        assert_eq!(
            Cgroup::parse_path("/default/c1").expect("ok"),
            PathBuf::from("default/c1")
        );
        assert_eq!(
            Cgroup::parse_path("default/c1").expect("ok"),
            PathBuf::from("default/c1")
        );
    }

    #[test]
    fn conversions_and_parsing() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10000);
        assert_eq!(swap_v2(100, 300), "200");
        assert_eq!(swap_v2(100, -1), "max");
        let kv = parse_kv("anon 4096\nfile 8192\noom_kill 2\nlimit max\n");
        assert_eq!(kv["anon"], 4096);
        assert_eq!(kv["oom_kill"], 2);
        assert_eq!(kv["limit"], u64::MAX);
    }

    #[test]
    fn mountinfo_detection() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_mountinfo(text);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let h = Hierarchy::from_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(h.version, Version::V2);
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    /// The real hierarchy of this machine (v1 here, v2 elsewhere).
    #[test]
    fn lifecycle_on_the_host_hierarchy() {
        let h = Hierarchy::detect().expect("detect");
        let path = format!("/idshift-test/{}-host", std::process::id());
        let cg = Cgroup::create(&h, &path).expect("create");
        let mut child = sleeper();
        let pid = child.id() as i32;
        cg.add_process(pid).expect("add");
        assert_eq!(cg.pids().expect("pids"), vec![pid]);
        let r = Resources {
            memory_limit: Some(64 << 20),
            pids_limit: Some(10),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        let applied = cg.apply(&r);
        if h.version == Version::V1
            || h.v2.as_ref().is_some_and(|r| {
                fs::read_to_string(r.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .contains("memory")
            })
        {
            applied.expect("apply");
            let s = cg.stats().expect("stats");
            assert_eq!(s.memory_limit, 64 << 20);
            assert_eq!(s.pids_limit, 10);
            assert!(s.pids_current >= 1);
        }
        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("state"));
        cg.thaw().expect("thaw");
        assert!(!cg.is_frozen().expect("state"));
        cg.kill_all(libc::SIGKILL).expect("kill");
        let _ = child.wait();
        cg.delete().expect("delete");
        cg.delete().expect("idempotent");
        for d in cg.dirs() {
            assert!(!d.exists(), "{} left", d.display());
        }
        let _ = Cgroup::open(&h, "/idshift-test").delete();
    }

    /// cgroup v2, in a cgroup2 mount of the test's own.
    #[test]
    fn lifecycle_on_cgroup2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cg2");
        fs::create_dir(&root).expect("mkdir");
        nix::mount::mount(
            Some("none"),
            &root,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount cgroup2");
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _u = Unmount(root.clone());
        let h = Hierarchy::v2_at(root.clone());
        let path = format!("/idshift-test-{}/c2", std::process::id());
        let cg = Cgroup::create(&h, &path).expect("create");
        let mut child = sleeper();
        let pid = child.id() as i32;
        cg.add_process(pid).expect("add");
        assert_eq!(cg.pids().expect("pids"), vec![pid]);
        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("frozen"));
        cg.thaw().expect("thaw");
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.contains("memory") {
            let e = cg
                .apply(&Resources {
                    memory_limit: Some(1 << 20),
                    ..Default::default()
                })
                .expect_err("no memory controller in v2 here");
            assert!(e.to_string().contains("memory.max"), "{e}");
        }
        cg.kill_all(libc::SIGKILL).expect("kill");
        let _ = child.wait();
        cg.delete().expect("delete");
        let _ = fs::remove_dir(root.join(format!("idshift-test-{}", std::process::id())));
    }
}
