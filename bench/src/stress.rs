//! `idshift-bench stress`: rounds of N containers of an L-layer image
//! launched at once under idshift (the instance's default strategy, `auto`)
//! against a private containerd, all removed again, with a leak audit after
//! every round and a host-ID-range audit while each round's containers run.
//!
//! After every round (and so at the end) nothing may be left: host mounts
//! under the containerd's directory, mounts under it in the mount table of
//! any other process, processes of the run (shims, container processes),
//! live ID ranges (and the allocator state must load and pass its
//! invariants), the containers' cgroups, per-container run dirs and task
//! bundles; containerd's open file descriptors must be back to their count
//! before the first round. A launch may fail, but cleanly: reported with its
//! error, and nothing of it (run dir, ID range, rootfs mount) left while the
//! others still run.
//!
//! While a round's containers run, every container's `uid_map` and
//! `gid_map` are read from its init process: each container's host range
//! must be the allocator's range of that container, disjoint from every
//! other container's and every other live range, and from the host's own
//! users and groups (/etc/passwd, /etc/group) and subordinate ranges
//! (/etc/subuid, /etc/subgid).

use crate::storm::{self, ctr_error, Daemon, RoundGuard, Stats};
use idshift_harness::{ContainerdOptions, CtrOutput};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use userns::{Allocator, AllocatorConfig, IdRange};

type Error = Box<dyn std::error::Error>;

/// How long a round's clean-up has to leave nothing behind (shims exit and
/// containerd closes their connections asynchronously after the deletes).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn usage() -> &'static str {
    "idshift-bench stress [--quick] [--rounds 5] [--containers 200] [--layers 50] [--json FILE]\n    \
     [--budget SECONDS] [--inject-failures K]\n  \
     --inject-failures: every K-th container runs a missing command (its start fails: must be clean)\n  \
     --budget: no round starts after this many seconds (default 1200); an incomplete run fails\n  \
     --quick: 2 rounds of 20 containers of a 10-layer image (a CI smoke run, ~30 s)\n  \
     exits 1 on any leak, any launch that failed uncleanly, any overlapping ID range,\n  \
     or a round where no launch succeeded"
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub rounds: usize,
    pub containers: usize,
    pub layers: usize,
    pub json: Option<PathBuf>,
    pub quick: bool,
    /// Every K-th container of a round runs a command that does not exist
    /// (its task start fails): the clean-failure audit's exercise.
    pub inject_failures: Option<usize>,
    /// No round starts once this much time has passed since the start (the
    /// run then counts as incomplete, not clean).
    pub budget_s: u64,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, Error> {
        let mut o = Options {
            rounds: 5,
            containers: 200,
            layers: 50,
            json: None,
            quick: false,
            budget_s: 1200,
            inject_failures: None,
        };
        let (mut rounds, mut containers, mut layers) = (None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            let num = |s: String| -> Result<usize, Error> {
                s.parse::<usize>()
                    .map_err(|e| format!("{a} {s:?}: {e}").into())
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--rounds" => rounds = Some(num(value()?)?),
                "--containers" => containers = Some(num(value()?)?),
                "--layers" => layers = Some(num(value()?)?),
                "--json" => o.json = Some(value()?.into()),
                "--budget" => o.budget_s = num(value()?)? as u64,
                "--inject-failures" => {
                    let k = num(value()?)?;
                    if k == 0 {
                        return Err("--inject-failures: at least 1".into());
                    }
                    o.inject_failures = Some(k);
                }
                other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
            }
        }
        if o.quick {
            (o.rounds, o.containers, o.layers) = (2, 20, 10);
        }
        o.rounds = rounds.unwrap_or(o.rounds);
        o.containers = containers.unwrap_or(o.containers);
        o.layers = layers.unwrap_or(o.layers);
        if o.rounds == 0 || o.containers == 0 {
            return Err("--rounds and --containers must be at least 1".into());
        }
        if o.layers == 0 || o.layers > rootfs::MAX_LAYERS {
            return Err(format!("--layers: between 1 and {}", rootfs::MAX_LAYERS).into());
        }
        Ok(o)
    }
}

/// One round's figures and findings.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub launched: usize,
    pub succeeded: usize,
    /// Distinct launch errors and how many launches hit each.
    pub errors: BTreeMap<String, usize>,
    /// What a failed launch left behind while the others ran.
    pub unclean_failures: Vec<String>,
    pub wall_s: f64,
    /// `ctr containers create` + `ctr tasks start` (what `ctr run -d` does).
    pub start: Stats,
    /// Containers whose uid_map and gid_map were read while all ran.
    pub maps_checked: usize,
    /// Overlaps and mismatches the range audit found.
    pub range_violations: Vec<String>,
    /// Container cgroup directories seen while all ran (the audit's
    /// evidence that it looks in the right place).
    pub cgroups_seen: usize,
    /// Everything left after the clean-up (empty: clean).
    pub leaks: Vec<String>,
    /// containerd's open fds and the round's idshift shim processes with
    /// all launched (the audit's evidence that it counts the right thing).
    pub containerd_fds_running: usize,
    pub shims_running: usize,
    /// With all launched: host mount table lines under the containerd's
    /// directory, and mount namespaces (other than the host's) whose table
    /// names it (the containers').
    pub host_mounts_running: usize,
    pub mount_namespaces_running: usize,
    /// containerd's open fds and the round's idshift shim processes after
    /// this round's clean-up settled.
    pub containerd_fds_after: usize,
    pub shims_after: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub options: Options,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub containerd_fds_before: usize,
    pub rounds: Vec<RoundReport>,
    pub launched: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub start: Stats,
    pub leaks: usize,
    pub unclean_failures: usize,
    pub range_violations: usize,
    pub duration_s: f64,
    pub clean: bool,
}

/// One host ID mapping line: inside, outside, count.
fn parse_map(text: &str) -> Result<Vec<(u32, u32, u32)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(|x| x.parse::<u32>().map_err(|e| format!("{l:?}: {e}")))
                .collect::<Result<_, _>>()?;
            match f[..] {
                [a, b, c] => Ok((a, b, c)),
                _ => Err(format!("{l:?}: not 3 numbers")),
            }
        })
        .collect()
}

/// The host IDs and ranges a container's range must not touch.
#[derive(Debug, Default)]
struct HostIds {
    /// (what, range): users of /etc/passwd (uids), subordinate uid ranges.
    uids: Vec<(String, IdRange)>,
    /// Groups of /etc/group and users' primary groups, subordinate gids.
    gids: Vec<(String, IdRange)>,
}

impl HostIds {
    fn read() -> HostIds {
        let mut h = HostIds::default();
        let one = |id: u32| IdRange { base: id, size: 1 };
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        for l in read("/etc/passwd").lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let (Some(name), Some(Ok(uid)), Some(Ok(gid))) = (
                f.first(),
                f.get(2).map(|s| s.parse::<u32>()),
                f.get(3).map(|s| s.parse::<u32>()),
            ) {
                h.uids.push((format!("user {name}"), one(uid)));
                h.gids.push((format!("primary group of {name}"), one(gid)));
            }
        }
        for l in read("/etc/group").lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|s| s.parse::<u32>())) {
                h.gids.push((format!("group {name}"), one(gid)));
            }
        }
        for (file, into) in [("/etc/subuid", &mut h.uids), ("/etc/subgid", &mut h.gids)] {
            for l in read(file).lines() {
                let f: Vec<&str> = l.trim().split(':').collect();
                if let [name, start, count] = f[..] {
                    if let (Ok(base), Ok(size)) = (start.parse(), count.parse()) {
                        into.push((format!("{file} range of {name}"), IdRange { base, size }));
                    }
                }
            }
        }
        h
    }
}

/// The range audit of the running containers `maps` (id -> (uid_map,
/// gid_map) host ranges) against each other, the allocator's live ranges
/// (`live`: owner -> range) and the host's IDs; returns the violations.
fn audit_ranges(
    maps: &BTreeMap<String, (Vec<IdRange>, Vec<IdRange>)>,
    live: &BTreeMap<String, IdRange>,
    host: &HostIds,
) -> Vec<String> {
    let mut v = Vec::new();
    let owner_of = |id: &str| format!("{}:{id}", storm::NAMESPACE);
    for (id, (uids, gids)) in maps {
        let Some(own) = live.get(&owner_of(id)) else {
            v.push(format!("{id}: runs but the allocator has no range for it"));
            continue;
        };
        for (kind, ranges, host_ids) in [("uid", uids, &host.uids), ("gid", gids, &host.gids)] {
            if ranges.is_empty() {
                v.push(format!("{id}: empty {kind}_map"));
            }
            for r in ranges {
                if !(own.contains(r.base) && r.end() <= own.end()) {
                    v.push(format!(
                        "{id}: {kind} host range {}..{} is not inside its allocated range {}..{}",
                        r.base,
                        r.end(),
                        own.base,
                        own.end()
                    ));
                }
                for (other, o) in live.iter().filter(|(o, _)| **o != owner_of(id)) {
                    if r.overlaps(o) {
                        v.push(format!(
                            "{id}: {kind} host range {}..{} overlaps {other}'s live range {}..{}",
                            r.base,
                            r.end(),
                            o.base,
                            o.end()
                        ));
                    }
                }
                for (what, h) in host_ids {
                    if r.overlaps(h) {
                        v.push(format!(
                            "{id}: {kind} host range {}..{} holds the host's {what} ({}..{})",
                            r.base,
                            r.end(),
                            h.base,
                            h.end()
                        ));
                    }
                }
            }
        }
    }
    // Pairwise between the containers' maps (sorted sweep, uids and gids
    // apart).
    for kind in ["uid", "gid"] {
        let mut all: Vec<(IdRange, &str)> = maps
            .iter()
            .flat_map(|(id, (u, g))| {
                let rs = if kind == "uid" { u } else { g };
                rs.iter().map(move |r| (*r, id.as_str()))
            })
            .collect();
        all.sort_by_key(|(r, _)| r.base);
        for w in all.windows(2) {
            if w[0].0.overlaps(&w[1].0) {
                v.push(format!(
                    "{kind} host ranges of {} ({}..{}) and {} ({}..{}) overlap",
                    w[0].1,
                    w[0].0.base,
                    w[0].0.end(),
                    w[1].1,
                    w[1].0.base,
                    w[1].0.end()
                ));
            }
        }
    }
    v
}

/// The cgroup hierarchies' mount points (v1 controllers and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    idshift_harness::host_mountinfo()
        .iter()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|t| t == "cgroup" || t == "cgroup2")
        })
        .filter_map(|l| idshift_harness::mount_point(l).map(PathBuf::from))
        .collect()
}

/// The `linux.cgroupsPath` of a running task's bundle.
fn cgroups_path(state: &Path, id: &str) -> Option<String> {
    let bundle = state
        .join("io.containerd.runtime.v2.task")
        .join(storm::NAMESPACE)
        .join(id);
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&text).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// The idshift shim's default cgroup of a container without a cgroupsPath.
fn default_cgroup(id: &str) -> String {
    format!("/idshift/{}/{id}", storm::NAMESPACE)
}

/// Where `path` (a cgroupsPath) exists in the hierarchies `mounts`.
fn cgroup_dirs(mounts: &[PathBuf], path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    mounts
        .iter()
        .map(|m| m.join(rel))
        .filter(|p| !rel.is_empty() && p.is_dir())
        .collect()
}

fn fd_count(pid: u32) -> Result<usize, Error> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count())
}

/// Processes of the run other than containerd: a command line naming the
/// containerd's directory (shims), or a cgroup of one of the run's
/// containers (container processes; `tag` is in every container id).
fn run_processes(needle: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (pid, cmd) in idshift_harness::processes_matching(needle) {
        if !cmd.starts_with("containerd --config") {
            out.push(format!("process {pid}: {cmd}"));
        }
    }
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cg.contains(tag) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            out.push(format!(
                "process {pid} ({}) in a cgroup of the run",
                comm.trim()
            ));
        }
    }
    out
}

/// The mount namespaces other than this one whose mount table names
/// `needle` (a container's, or one kept alive after it), one line each.
fn foreign_mountinfo_lines(needle: &str) -> Vec<String> {
    let mine = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let ns = std::fs::read_link(e.path().join("ns/mnt")).ok();
        if ns.is_none() || ns == mine || !seen.insert(ns) {
            continue;
        }
        let text = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        let n = text.lines().filter(|l| l.contains(needle)).count();
        if n > 0 {
            out.push(format!(
                "{n} mounts under {needle} in the mount namespace of process {}",
                e.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// What `base` holds besides `keep`, one level down (a run dir's
/// namespace dir, a task state namespace dir).
fn entries(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !keep.iter().any(|k| e.file_name() == *k))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Where the audits look.
struct Ctx {
    base: PathBuf,
    state_dir: PathBuf,
    run_dir: PathBuf,
    containerd_state: PathBuf,
    containerd_pid: u32,
    /// In every container id of this run.
    tag: String,
    host: HostIds,
    cgroup_mounts: Vec<PathBuf>,
}

impl Ctx {
    fn allocator(&self) -> Result<Allocator, String> {
        Allocator::open(AllocatorConfig {
            state_dir: self.state_dir.clone(),
            ..AllocatorConfig::default()
        })
        .map_err(|e| format!("opening the allocator state: {e}"))
    }

    /// The allocator's live ranges, loaded and validated.
    fn live(&self) -> Result<BTreeMap<String, IdRange>, String> {
        Ok(self
            .allocator()?
            .live()
            .map_err(|e| format!("the allocator state does not load: {e}"))?
            .into_iter()
            .collect())
    }

    fn host_mounts(&self) -> Vec<String> {
        let needle = format!("{}/", self.base.display());
        idshift_harness::host_mountinfo()
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect()
    }

    /// Everything left behind now (the round's cgroups: `cgroups`).
    fn leaks(&self, cgroups: &[String], fds_before: usize) -> (Vec<String>, usize) {
        let mut leaks = Vec::new();
        for l in self.host_mounts() {
            leaks.push(format!("host mount: {l}"));
        }
        leaks.extend(foreign_mountinfo_lines(&format!(
            "{}/",
            self.base.display()
        )));
        leaks.extend(run_processes(
            &format!("{}/", self.base.display()),
            &self.tag,
        ));
        match self.live() {
            Ok(live) if live.is_empty() => {}
            Ok(live) => leaks.push(format!(
                "{} ID ranges still allocated: {:?}",
                live.len(),
                live.keys().take(5).collect::<Vec<_>>()
            )),
            Err(e) => leaks.push(e),
        }
        // The state file itself: owners empty.
        if let Ok(text) = std::fs::read_to_string(self.state_dir.join("ranges.json")) {
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    let n = v["owners"].as_object().map_or(usize::MAX, |o| o.len());
                    if n != 0 {
                        leaks.push(format!("ranges.json: owners not empty ({n})"));
                    }
                }
                Err(e) => leaks.push(format!("ranges.json does not parse: {e}")),
            }
        }
        for cg in cgroups {
            for dir in cgroup_dirs(&self.cgroup_mounts, cg) {
                leaks.push(format!("cgroup {}", dir.display()));
            }
        }
        for e in entries(&self.run_dir.join(storm::NAMESPACE), &[]) {
            leaks.push(format!("run dir entry {e}"));
        }
        // probe.json: the shims' cache of the kernel probe (one per boot).
        for e in entries(&self.run_dir, &["tmp", "probe.json", storm::NAMESPACE]) {
            leaks.push(format!("run dir entry {e}"));
        }
        for e in entries(&self.run_dir.join("tmp"), &[]) {
            leaks.push(format!("scratch entry {e}"));
        }
        for e in entries(
            &self
                .containerd_state
                .join("io.containerd.runtime.v2.task")
                .join(storm::NAMESPACE),
            &[],
        ) {
            leaks.push(format!("task bundle {e}"));
        }
        let fds = match fd_count(self.containerd_pid) {
            Ok(n) => n,
            Err(e) => {
                leaks.push(format!("containerd: {e}"));
                0
            }
        };
        if fds > fds_before {
            leaks.push(format!(
                "containerd has {fds} open fds, {} more than before the first round",
                fds - fds_before
            ));
        }
        (leaks, fds)
    }

    /// What a failed launch left while the others run.
    fn failure_leftovers(&self, id: &str, live: &BTreeMap<String, IdRange>) -> Vec<String> {
        let mut v = Vec::new();
        let dir = self.run_dir.join(storm::NAMESPACE).join(id);
        if dir.exists() {
            v.push(format!(
                "{id} failed but its run dir {} exists",
                dir.display()
            ));
        }
        let owner = format!("{}:{id}", storm::NAMESPACE);
        if let Some(r) = live.get(&owner) {
            v.push(format!(
                "{id} failed but holds the ID range {}..{}",
                r.base,
                r.end()
            ));
        }
        let needle = format!("{}/", dir.display());
        let n = self
            .host_mounts()
            .iter()
            .filter(|l| l.contains(&needle))
            .count();
        if n > 0 {
            v.push(format!(
                "{id} failed but {n} mounts under its run dir remain"
            ));
        }
        v
    }
}

/// `ctr tasks ls` of the namespace: id -> pid of the running tasks.
fn task_pids(d: &Daemon) -> BTreeMap<String, u32> {
    d.ctr(&["tasks", "ls"])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.to_string();
            let pid = f.next()?.parse().ok()?;
            (f.next()? == "RUNNING").then_some((id, pid))
        })
        .collect()
}

fn launch(d: &Daemon, image: &str, id: &str, fail: bool) -> Result<Duration, String> {
    let t0 = Instant::now();
    let cmd: &[&str] = if fail {
        &["/no/such/command"]
    } else {
        &["sleep", "100000"]
    };
    let mut args = vec![
        "containers",
        "create",
        "--runtime",
        storm::IDSHIFT_RUNTIME,
        image,
        id,
    ];
    args.extend_from_slice(cmd);
    let out: CtrOutput = d.ctr(&args);
    if !out.success() {
        return Err(ctr_error("containers create", &out));
    }
    let out = d.ctr(&["tasks", "start", "-d", "--null-io", id]);
    if !out.success() {
        return Err(ctr_error("tasks start", &out));
    }
    Ok(t0.elapsed())
}

/// One round; its report and its launches' start latencies.
fn round(
    d: &Daemon,
    ctx: &Ctx,
    image: &str,
    k: usize,
    n: usize,
    inject: Option<usize>,
    fds_before: usize,
) -> (RoundReport, Vec<Duration>) {
    let t0 = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("{}-r{k}-{i}", ctx.tag)).collect();
    let mut guard = RoundGuard {
        d,
        ids: ids.clone(),
        done: false,
    };
    let barrier = Barrier::new(n);
    let results: Vec<(String, Result<Duration, String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let barrier = &barrier;
                let fail = inject.is_some_and(|k| (i + 1) % k == 0);
                s.spawn(move || {
                    barrier.wait();
                    launch(d, image, id, fail)
                })
            })
            .collect();
        hs.into_iter()
            .zip(&ids)
            .map(|(h, id)| {
                (
                    id.clone(),
                    h.join()
                        .unwrap_or_else(|_| Err("the launching thread panicked".into())),
                )
            })
            .collect()
    });
    let mut errors = BTreeMap::new();
    let mut times = Vec::new();
    let mut failed = Vec::new();
    for (id, r) in &results {
        match r {
            Ok(t) => times.push(*t),
            Err(e) => {
                *errors.entry(e.replace(id.as_str(), "<id>")).or_insert(0) += 1;
                failed.push(id.clone());
            }
        }
    }
    // All launched: the range audit, the failed launches' leftovers, the
    // containers' cgroups.
    let mut violations = Vec::new();
    let mut unclean = Vec::new();
    let live = match ctx.live() {
        Ok(l) => l,
        Err(e) => {
            violations.push(e);
            BTreeMap::new()
        }
    };
    let pids = task_pids(d);
    let id_set: BTreeSet<String> = ids.iter().cloned().collect();
    let shims_running = crate::host::shim_memory(&[storm::IDSHIFT_SHIM], &id_set).processes;
    let fds_running = fd_count(ctx.containerd_pid).unwrap_or(0);
    let host_mounts_running = ctx.host_mounts().len();
    let mount_namespaces_running =
        foreign_mountinfo_lines(&format!("{}/", ctx.base.display())).len();
    let mut maps = BTreeMap::new();
    for (id, r) in &results {
        if r.is_err() {
            continue;
        }
        let Some(pid) = pids.get(id) else {
            violations.push(format!("{id} started but is not a running task"));
            continue;
        };
        let read = |m: &str| -> Result<Vec<IdRange>, String> {
            let p = format!("/proc/{pid}/{m}");
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
            Ok(parse_map(&text)
                .map_err(|e| format!("{p}: {e}"))?
                .into_iter()
                .map(|(_, base, size)| IdRange { base, size })
                .collect())
        };
        match (read("uid_map"), read("gid_map")) {
            (Ok(u), Ok(g)) => {
                // A map that is the identity (the host's own IDs) is the
                // worst overlap of all.
                if u.iter().chain(&g).any(|r| r.base == 0) {
                    violations.push(format!("{id}: its ID map reaches host ID 0"));
                }
                maps.insert(id.clone(), (u, g));
            }
            (Err(e), _) | (_, Err(e)) => violations.push(format!("{id}: {e}")),
        }
    }
    violations.extend(audit_ranges(&maps, &live, &ctx.host));
    for id in &failed {
        unclean.extend(ctx.failure_leftovers(id, &live));
    }
    let mut cgroups = BTreeSet::new();
    let mut cgroups_seen = 0;
    for id in ids.iter().filter(|id| !failed.contains(id)) {
        let cg = cgroups_path(&ctx.containerd_state, id).unwrap_or_else(|| default_cgroup(id));
        cgroups_seen += usize::from(!cgroup_dirs(&ctx.cgroup_mounts, &cg).is_empty());
        cgroups.insert(cg);
    }
    // Every id's possible cgroups (a failed one's included).
    for id in &ids {
        cgroups.insert(default_cgroup(id));
        cgroups.insert(format!("/{}/{id}", storm::NAMESPACE));
    }
    let cgroups: Vec<String> = cgroups.into_iter().collect();
    let mut leaks = guard.clean();
    drop(guard);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let (rest, fds) = loop {
        let (l, fds) = ctx.leaks(&cgroups, fds_before);
        if l.is_empty() || Instant::now() > deadline {
            break (l, fds);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    leaks.extend(rest);
    let shims_after = crate::host::shim_memory(&[storm::IDSHIFT_SHIM], &id_set).processes;
    if shims_after > 0 {
        leaks.push(format!(
            "{shims_after} idshift shims of the round still run"
        ));
    }
    let report = RoundReport {
        round: k,
        launched: n,
        succeeded: times.len(),
        errors,
        unclean_failures: unclean,
        wall_s: t0.elapsed().as_secs_f64(),
        start: Stats::of(&times),
        maps_checked: maps.len(),
        range_violations: violations,
        cgroups_seen,
        leaks,
        containerd_fds_running: fds_running,
        shims_running,
        host_mounts_running,
        mount_namespaces_running,
        containerd_fds_after: fds,
        shims_after,
    };
    (report, times)
}

fn print_round(r: &RoundReport, fds_before: usize) {
    println!(
        "round {}: {}/{} launched ok, {:.1} s, start p50 {:.0} ms p99 {:.0} ms max {:.0} ms; \
         maps checked {}, range violations {}; cgroups seen {}; leaks {}; unclean failures {}; \
         shims {} running, {} after; mounts running: {} host lines, {} container mount tables; containerd fds {} running, {} after (before round 1: {})",
        r.round,
        r.succeeded,
        r.launched,
        r.wall_s,
        r.start.p50_ms,
        r.start.p99_ms,
        r.start.max_ms,
        r.maps_checked,
        r.range_violations.len(),
        r.cgroups_seen,
        r.leaks.len(),
        r.unclean_failures.len(),
        r.shims_running,
        r.shims_after,
        r.host_mounts_running,
        r.mount_namespaces_running,
        r.containerd_fds_running,
        r.containerd_fds_after,
        fds_before
    );
    for (e, n) in &r.errors {
        println!("  failed launch x{n}: {e}");
    }
    for l in r
        .range_violations
        .iter()
        .chain(&r.unclean_failures)
        .chain(&r.leaks)
        .take(40)
    {
        println!("  ! {l}");
    }
}

/// Runs the stress; returns whether it was clean.
pub fn run(opts: Options, command: String) -> Result<bool, Error> {
    let started = Instant::now();
    let loadavg_start = storm::loadavg();
    let d = Daemon::private(ContainerdOptions::idshift(""))?;
    let Some(c) = d.private.as_ref() else {
        return Err("the stress needs a private containerd".into());
    };
    let containerd_pid = c.pid().ok_or("containerd is not running")?;
    let ctx = Ctx {
        base: c.base().to_path_buf(),
        state_dir: c.state_dir(),
        run_dir: c.run_dir(),
        containerd_state: c.containerd_state().to_path_buf(),
        containerd_pid,
        tag: format!("stress{}", std::process::id()),
        host: HostIds::read(),
        cgroup_mounts: cgroup_mounts(),
    };
    let images = tempfile::Builder::new()
        .prefix("idshift-stress-images-")
        .tempdir_in("/var/tmp")?;
    let image = format!("docker.io/library/idshift-stress:{}", opts.layers);
    d.import(images.path(), &image, opts.layers)?;
    drop(images);
    // containerd's fds with the image imported and nothing running.
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = fd_count(containerd_pid)?;
    println!(
        "stress: {} rounds of {} containers of a {}-layer image at once (idshift, default strategy); \
         containerd pid {containerd_pid}, {fds_before} open fds; load average {loadavg_start}",
        opts.rounds, opts.containers, opts.layers
    );
    let mut rounds = Vec::new();
    let mut times = Vec::new();
    for k in 1..=opts.rounds {
        if storm::INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        if started.elapsed() > Duration::from_secs(opts.budget_s) {
            println!(
                "stress: the {} s budget is spent: round {k} and later not started",
                opts.budget_s
            );
            break;
        }
        let (r, t) = round(
            &d,
            &ctx,
            &image,
            k,
            opts.containers,
            opts.inject_failures,
            fds_before,
        );
        print_round(&r, fds_before);
        times.extend(t);
        rounds.push(r);
    }
    let out = d.ctr(&["images", "rm", &image]);
    if !out.success() {
        eprintln!("idshift-bench: ctr images rm {image}: {out:?}");
    }
    let launched: usize = rounds.iter().map(|r| r.launched).sum();
    let succeeded: usize = rounds.iter().map(|r| r.succeeded).sum();
    let leaks: usize = rounds.iter().map(|r| r.leaks.len()).sum();
    let unclean: usize = rounds.iter().map(|r| r.unclean_failures.len()).sum();
    let violations: usize = rounds.iter().map(|r| r.range_violations.len()).sum();
    let complete = rounds.len() == opts.rounds;
    let clean = complete
        && leaks == 0
        && unclean == 0
        && violations == 0
        && rounds.iter().all(|r| r.succeeded > 0);
    let report = Report {
        command,
        options: opts.clone(),
        loadavg_start,
        loadavg_end: storm::loadavg(),
        containerd_fds_before: fds_before,
        launched,
        succeeded,
        failed: launched - succeeded,
        start: Stats::of(&times),
        leaks,
        unclean_failures: unclean,
        range_violations: violations,
        duration_s: started.elapsed().as_secs_f64(),
        clean,
        rounds,
    };
    finish(report, &opts)
}

fn finish(report: Report, opts: &Options) -> Result<bool, Error> {
    println!(
        "stress: {} launches, {} ok, {} failed; start p50 {:.0} ms p99 {:.0} ms; leaks {}, unclean failures {}, range violations {}; \
         containerd fds before {} after {}; {:.1} s; load average {} -> {}: {}",
        report.launched,
        report.succeeded,
        report.failed,
        report.start.p50_ms,
        report.start.p99_ms,
        report.leaks,
        report.unclean_failures,
        report.range_violations,
        report.containerd_fds_before,
        report
            .rounds
            .last()
            .map_or(report.containerd_fds_before, |r| r.containerd_fds_after),
        report.duration_s,
        report.loadavg_start,
        report.loadavg_end,
        if report.clean { "CLEAN" } else { "NOT CLEAN" }
    );
    if let Some(p) = &opts.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(report.clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u32, size: u32) -> IdRange {
        IdRange { base, size }
    }

    #[test]
    fn options() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = Options::parse(&args("--quick")).expect("parse");
        assert_eq!((o.rounds, o.containers, o.layers), (2, 20, 10));
        let o = Options::parse(&args("--quick --containers 3")).expect("parse");
        assert_eq!((o.rounds, o.containers, o.layers), (2, 3, 10));
        let o = Options::parse(&args("--inject-failures 5")).expect("parse");
        assert_eq!(o.inject_failures, Some(5));
        assert!(Options::parse(&args("--inject-failures 0")).is_err());
        let o = Options::parse(&args("")).expect("parse");
        assert_eq!((o.rounds, o.containers, o.layers), (5, 200, 50));
        assert!(Options::parse(&args("--rounds 0")).is_err());
        assert!(Options::parse(&args("--layers 0")).is_err());
        assert!(Options::parse(&args("--bogus")).is_err());
    }

    #[test]
    fn maps_parse() {
        assert_eq!(
            parse_map("         0 1879048192      65536\n"),
            Ok(vec![(0, 1879048192, 65536)])
        );
        assert!(parse_map("0 1\n").is_err());
    }

    /// The leak audit over a fake instance directory: clean when empty,
    /// and each kind of leftover is named.
    #[test]
    fn the_leak_audit_finds_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        let ctx = Ctx {
            state_dir: base.join("state"),
            run_dir: base.join("run"),
            containerd_state: base.join("cstate"),
            containerd_pid: std::process::id(),
            tag: format!("stresstest{}", std::process::id()),
            host: HostIds::default(),
            cgroup_mounts: vec![base.join("cg")],
            base,
        };
        let me = fd_count(std::process::id()).expect("fds");
        // Nothing there: clean (fds as they are now, with room for the
        // read_dir's own).
        let (l, _) = ctx.leaks(&["/x/c1".into()], me + 4);
        assert_eq!(l, Vec::<String>::new());
        std::fs::create_dir_all(ctx.run_dir.join(storm::NAMESPACE).join("c1")).expect("mkdir");
        std::fs::create_dir_all(ctx.run_dir.join("tmp").join("scratch")).expect("mkdir");
        std::fs::write(ctx.run_dir.join("probe.json"), "{}").expect("write");
        std::fs::create_dir_all(ctx.base.join("cg/x/c1")).expect("mkdir");
        std::fs::create_dir_all(
            ctx.containerd_state
                .join("io.containerd.runtime.v2.task")
                .join(storm::NAMESPACE)
                .join("c1"),
        )
        .expect("mkdir");
        std::fs::create_dir_all(&ctx.state_dir).expect("mkdir");
        let alloc = ctx.allocator().expect("allocator");
        alloc
            .allocate(&format!("{}:c1", storm::NAMESPACE))
            .expect("allocate");
        let (l, fds) = ctx.leaks(&["/x/c1".into()], 0);
        let has = |s: &str| l.iter().filter(|x| x.contains(s)).count();
        assert_eq!(has("run dir entry"), 1, "{l:#?}");
        assert_eq!(has("scratch entry"), 1, "{l:#?}");
        assert_eq!(has("cgroup "), 1, "{l:#?}");
        assert_eq!(has("task bundle"), 1, "{l:#?}");
        assert_eq!(has("ID ranges still allocated"), 1, "{l:#?}");
        assert_eq!(has("owners not empty (1)"), 1, "{l:#?}");
        assert_eq!(has("more than before"), 1, "{l:#?}");
        assert!(fds > 0);
        // A corrupt allocator state is a finding too.
        std::fs::write(ctx.state_dir.join("ranges.json"), "{").expect("write");
        let (l, _) = ctx.leaks(&[], fds + 4);
        assert!(l.iter().any(|x| x.contains("does not load")), "{l:#?}");
    }

    #[test]
    fn the_audit_finds_overlaps() {
        let owner = |id: &str| format!("{}:{id}", storm::NAMESPACE);
        let mut live = BTreeMap::new();
        live.insert(owner("a"), r(1_000_000, 65536));
        live.insert(owner("b"), r(1_065_536, 65536));
        let mut maps = BTreeMap::new();
        maps.insert(
            "a".to_string(),
            (vec![r(1_000_000, 65536)], vec![r(1_000_000, 65536)]),
        );
        maps.insert(
            "b".to_string(),
            (vec![r(1_065_536, 65536)], vec![r(1_065_536, 65536)]),
        );
        let host = HostIds {
            uids: vec![("user root".into(), r(0, 1))],
            gids: vec![("group root".into(), r(0, 1))],
        };
        assert_eq!(audit_ranges(&maps, &live, &host), Vec::<String>::new());
        // b's maps reach into a's range: overlap with a's live range and
        // with a's maps, and outside its own.
        maps.insert(
            "b".to_string(),
            (vec![r(1_065_000, 65536)], vec![r(1_065_536, 65536)]),
        );
        let v = audit_ranges(&maps, &live, &host);
        assert!(v.iter().any(|s| s.contains("overlaps")), "{v:?}");
        assert!(v.iter().any(|s| s.contains("not inside")), "{v:?}");
        // A host subordinate range inside a's.
        let host = HostIds {
            uids: vec![("/etc/subuid range of u".into(), r(1_000_100, 10))],
            gids: vec![],
        };
        maps.remove("b");
        let v = audit_ranges(&maps, &live, &host);
        assert!(v.iter().any(|s| s.contains("subuid")), "{v:?}");
        // A running container the allocator does not know.
        live.remove(&owner("a"));
        let v = audit_ranges(&maps, &live, &host);
        assert!(v.iter().any(|s| s.contains("no range")), "{v:?}");
    }
}
