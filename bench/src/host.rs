//! What the storm reads from the host: its topology (the header of every
//! report), the memory of the shim processes, the host mount table, and the
//! CPU set the storm is pinned to.

use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub cpu_model: String,
    pub sockets: usize,
    pub numa_nodes: usize,
    /// Logical CPUs online.
    pub cpus: usize,
    /// `on`, `off`, or `unknown` (no /sys/devices/system/cpu/smt).
    pub smt: String,
    pub kernel: String,
    /// The mount-API tier `rootfs::probe` found.
    pub mount_api_tier: String,
    /// What `auto` resolves to on this kernel.
    pub auto_strategy: String,
    /// The CPU set the storm is pinned to (`--cpus`), if any.
    pub pinned_cpus: Option<String>,
    pub containerd: String,
    pub runc: String,
    pub crun: Option<String>,
}

fn first_line_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

impl Topology {
    /// Reads /proc/cpuinfo, /sys/devices/system/{node,cpu}, uname, and
    /// probes the kernel's mount API in `scratch` (a directory on the disk
    /// file system the layers live on).
    pub fn read(scratch: &Path, pinned_cpus: Option<String>) -> Result<Topology, Error> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
        let field = |line: &str, name: &str| -> Option<String> {
            let (k, v) = line.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        };
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| field(l, "model name").or_else(|| field(l, "Model")))
            .unwrap_or_else(|| "unknown".into());
        let sockets: BTreeSet<String> = cpuinfo
            .lines()
            .filter_map(|l| field(l, "physical id"))
            .collect();
        let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_prefix("node")
                            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count()
            })
            .unwrap_or(0)
            .max(1);
        let smt = match std::fs::read_to_string("/sys/devices/system/cpu/smt/active") {
            Ok(s) if s.trim() == "1" => "on".to_string(),
            Ok(s) if s.trim() == "0" => "off".to_string(),
            _ => "unknown".to_string(),
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| parse_cpu_list(s.trim()).ok())
            .map(|l| l.len())
            .unwrap_or(cpus);
        let uname = rustix::system::uname();
        let kernel = uname.release().to_string_lossy().into_owned();
        let features = rootfs::probe(scratch)?;
        let auto_strategy = features
            .resolve(rootfs::Strategy::Auto)
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("none ({e})"));
        Ok(Topology {
            cpu_model,
            sockets: sockets.len().max(1),
            numa_nodes,
            cpus,
            smt,
            kernel,
            mount_api_tier: features.tier().to_string(),
            auto_strategy,
            pinned_cpus,
            containerd: first_line_of("containerd", &["--version"])
                .unwrap_or_else(|| "not found".into()),
            runc: first_line_of("runc", &["--version"]).unwrap_or_else(|| "not found".into()),
            crun: first_line_of("crun", &["--version"]),
        })
    }

    /// The header lines of the terminal report and of RESULTS.md.
    pub fn header(&self) -> Vec<String> {
        vec![
            format!(
                "CPU: {} | {} logical CPUs, {} socket(s), {} NUMA node(s), SMT {}{}",
                self.cpu_model,
                self.cpus,
                self.sockets,
                self.numa_nodes,
                self.smt,
                self.pinned_cpus
                    .as_ref()
                    .map(|c| format!(", storm pinned to CPUs {c}"))
                    .unwrap_or_default()
            ),
            format!(
                "kernel {} | mount API tier: {} | auto = {}",
                self.kernel, self.mount_api_tier, self.auto_strategy
            ),
            format!(
                "{} | {} | crun: {}",
                self.containerd,
                self.runc,
                self.crun.as_deref().unwrap_or("not installed")
            ),
        ]
    }
}

/// Parses a CPU list like `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, Error> {
    let mut cpus = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| -> Result<usize, Error> {
            x.trim()
                .parse::<usize>()
                .map_err(|e| format!("CPU list {s:?}: {x:?}: {e}").into())
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("CPU list {s:?}: {part:?} is a reversed range").into());
                }
                cpus.extend(a..=b);
            }
            None => {
                cpus.insert(num(part)?);
            }
        }
    }
    if cpus.is_empty() {
        return Err(format!("CPU list {s:?} is empty").into());
    }
    Ok(cpus.into_iter().collect())
}

/// Pins this process (and so everything it starts from now on: containerd,
/// the shims, the containers, `ctr`) to `cpus`.
pub fn pin_to(cpus: &[usize]) -> Result<(), Error> {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        if c >= rustix::thread::CpuSet::MAX_CPU {
            return Err(format!("CPU {c} is beyond the largest CPU set").into());
        }
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| format!("sched_setaffinity({cpus:?}): {e}"))?;
    Ok(())
}

/// Memory of a set of processes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// Rss and Pss (KiB) of process `pid` from /proc/<pid>/smaps_rollup.
fn rss_pss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some((kib("Rss")?, kib("Pss")?))
}

/// The summed memory of every process whose executable name is one of
/// `binaries` and whose command line has `-id <id>` for an id in `ids` (a shim of one
/// of these containers).
pub fn shim_memory(binaries: &[&str], ids: &BTreeSet<String>) -> Memory {
    let mut m = Memory::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(arg0) = args.first() else { continue };
        let name = Path::new(arg0).file_name().and_then(|f| f.to_str());
        if !name.is_some_and(|n| binaries.contains(&n)) {
            continue;
        }
        let ours = args
            .windows(2)
            .any(|w| w[0] == "-id" && ids.contains(&w[1]));
        if !ours {
            continue;
        }
        if let Some((rss, pss)) = rss_pss(pid) {
            m.processes += 1;
            m.rss_kib += rss;
            m.pss_kib += pss;
        }
    }
    m
}

/// A read of the host's `/proc/self/mountinfo` (the bench's mount
/// namespace is the host's).
#[derive(Debug, Clone, Copy)]
pub struct MountinfoRead {
    /// Every line.
    pub lines: usize,
    /// The lines holding the needle (the bench's containerd's directory):
    /// the mounts of the storm, not those of whatever else runs on the
    /// host; every line when there is no needle.
    pub ours: usize,
    /// How long the read took.
    pub took: Duration,
}

/// Reads the host's mountinfo, timing the read (the count is not timed).
pub fn read_mountinfo(needle: Option<&str>) -> Result<MountinfoRead, Error> {
    let t = Instant::now();
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let took = t.elapsed();
    let lines = text.lines().count();
    let ours = match needle {
        Some(n) => text.lines().filter(|l| l.contains(n)).count(),
        None => lines,
    };
    Ok(MountinfoRead { lines, ours, took })
}

/// The CPUs' busy and total jiffies so far (the `cpu` line of /proc/stat:
/// idle and iowait are not busy).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Waits until the machine is quiet: the CPUs at most `busy` busy (0..1)
/// over a `window`, or `max` has passed (what the last round's clean-up,
/// e.g. containerd removing snapshots, still does would otherwise fall on
/// the next round). Returns how long it waited.
pub fn settle(busy: f64, window: Duration, max: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < max {
        let Some((b0, t0)) = cpu_jiffies() else {
            break;
        };
        std::thread::sleep(window);
        let Some((b1, t1)) = cpu_jiffies() else {
            break;
        };
        if t1 <= t0 || (b1 - b0) as f64 / (t1 - t0) as f64 <= busy {
            break;
        }
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").ok(),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("1").ok(), Some(vec![1]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a").is_err());
    }
}
