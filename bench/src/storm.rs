//! `idshift-bench storm`: N containers launched at once from an image of L
//! layers, under every configuration (idshift's rootfs strategies, and
//! containerd's runc shim with runc and with crun), interleaved round-robin
//! within each (L, N) cell so that machine noise hits all alike.
//!
//! Every container is launched as `ctr run -d` does it, in two `ctr`
//! commands: `ctr containers create` (the container record and its
//! snapshot) and `ctr tasks start -d --null-io` (task create, then task
//! start). "task" latency is the second command's wall time (task create to
//! task start returned, as the client sees it, `ctr`'s own start-up
//! included); "e2e" is both (what `ctr run -d` costs).

use crate::host::{self, Memory, Topology};
use crate::report;
use idshift_harness::{shim_dir, Containerd, ContainerdOptions, CtrOutput};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error>;

/// Set by the SIGINT/SIGTERM handler: stop after the current round (whose
/// containers are still cleaned up), then clean up everything.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) const NAMESPACE: &str = "idshift-bench";
/// How long one `ctr` of a launch or of the clean-up may run.
pub(crate) const CTR_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a round's clean-up has to leave nothing behind.
const LEAK_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const IDSHIFT_RUNTIME: &str = "io.containerd.idshift.v2";
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub(crate) const IDSHIFT_SHIM: &str = "containerd-shim-idshift-v2";
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// One configuration of the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    Fd,
    Path,
    PerLayer,
    Plain,
    Runc,
    Crun,
    /// `fd`, every container of a round in one shim (the runc shim's group
    /// annotation, which idshift honours as runc's shim does).
    FdGroup,
    /// The runc shim with runc, every container of a round in one shim.
    RuncGroup,
}

/// The OCI annotation that puts containers in one shim.
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

impl Config {
    /// The six configurations: the default sweep.
    pub const DEFAULT: [Config; 6] = [
        Config::Fd,
        Config::Path,
        Config::PerLayer,
        Config::Plain,
        Config::Runc,
        Config::Crun,
    ];
    /// Every configuration (the grouped ones only when asked for).
    pub const ALL: [Config; 8] = [
        Config::Fd,
        Config::Path,
        Config::PerLayer,
        Config::Plain,
        Config::Runc,
        Config::Crun,
        Config::FdGroup,
        Config::RuncGroup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::Fd => "fd",
            Config::Path => "path",
            Config::PerLayer => "per-layer",
            Config::Plain => "plain",
            Config::Runc => "runc",
            Config::Crun => "crun",
            Config::FdGroup => "fd-group",
            Config::RuncGroup => "runc-group",
        }
    }

    /// A longer label (table legend, SVG legend).
    pub fn label(self) -> &'static str {
        match self {
            Config::Fd => "idshift fd",
            Config::Path => "idshift path",
            Config::PerLayer => "idshift per-layer (containerd 2.0's)",
            Config::Plain => "idshift plain (no userns)",
            Config::Runc => "runc shim + runc (no userns)",
            Config::Crun => "runc shim + crun (no userns)",
            Config::FdGroup => "idshift fd, one shim per round (group)",
            Config::RuncGroup => "runc shim + runc, one shim per round (group)",
        }
    }

    fn parse(s: &str) -> Result<Config, Error> {
        Config::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown configuration {s:?} (known: {})",
                    Config::ALL.map(Config::name).join(", ")
                )
                .into()
            })
    }

    /// The idshift `strategy` of an idshift configuration.
    fn strategy(self) -> Option<&'static str> {
        match self {
            Config::Fd | Config::FdGroup => Some("fd"),
            Config::Path => Some("path"),
            Config::PerLayer => Some("per-layer"),
            Config::Plain => Some("plain"),
            Config::Runc | Config::Crun | Config::RuncGroup => None,
        }
    }

    fn grouped(self) -> bool {
        matches!(self, Config::FdGroup | Config::RuncGroup)
    }

    fn shim_binary(self) -> &'static str {
        if self.strategy().is_some() {
            IDSHIFT_SHIM
        } else {
            RUNC_SHIM
        }
    }
}

/// The storm's options (`idshift-bench storm --help`).
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub layers: Vec<usize>,
    pub containers: Vec<usize>,
    pub configs: Vec<Config>,
    /// A cell of N containers is launched ceil(min_samples / N) times (at
    /// least once), so that small N still gives several samples.
    pub min_samples: usize,
    pub cpus: Option<String>,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub address: Option<PathBuf>,
    /// Exit non-zero when an idshift launch failed or anything leaked
    /// (failures of the host's runc and crun are reported, not fatal).
    pub strict: bool,
    pub quick: bool,
    /// Whether `--configs` was given (else crun is left out, with a note,
    /// when it is not installed or the containerd is the user's).
    pub configs_given: bool,
}

pub fn usage() -> &'static str {
    "idshift-bench storm [--quick] [--layers 1,10,50,100] [--containers 1,10,50,100,200]\n    \
     [--configs fd,path,per-layer,plain,runc,crun] [--min-samples 10] [--cpus LIST]\n    \
     [--json FILE] [--svg FILE] [--markdown FILE] [--address SOCK] [--strict]\n  \
     --quick: layers 1,10, containers 1,5, min-samples 3 (a CI smoke run, < 3 min)\n  \
     --configs also takes fd-group and runc-group: every container of a round in one shim\n  \
     --address: use that containerd (the idshift shim must be on its PATH; crun is then skipped)\n  \
     --strict: exit 1 if an idshift launch failed or anything leaked (a CI smoke check; never timings)"
}

fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(f)
        .collect()
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, Error> {
        let mut o = Options {
            layers: vec![1, 10, 50, 100],
            containers: vec![1, 10, 50, 100, 200],
            configs: Config::DEFAULT.to_vec(),
            min_samples: 10,
            cpus: None,
            json: None,
            svg: None,
            markdown: None,
            address: None,
            strict: false,
            quick: false,
            configs_given: false,
        };
        let (mut layers, mut containers, mut min_samples) = (None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            let num = |s: &str| -> Result<usize, Error> {
                s.parse::<usize>()
                    .map_err(|e| format!("{a} {s:?}: {e}").into())
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--strict" => o.strict = true,
                "--layers" => layers = Some(list(&value()?, num)?),
                "--containers" => containers = Some(list(&value()?, num)?),
                "--configs" => {
                    o.configs = list(&value()?, Config::parse)?;
                    o.configs_given = true;
                }
                "--min-samples" => min_samples = Some(num(&value()?)?),
                "--cpus" => o.cpus = Some(value()?),
                "--json" => o.json = Some(value()?.into()),
                "--svg" => o.svg = Some(value()?.into()),
                "--markdown" => o.markdown = Some(value()?.into()),
                "--address" => o.address = Some(value()?.into()),
                "-h" | "--help" => return Err(usage().into()),
                other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
            }
        }
        if o.quick {
            o.layers = vec![1, 10];
            o.containers = vec![1, 5];
            o.min_samples = 3;
        }
        o.layers = layers.unwrap_or(o.layers);
        o.containers = containers.unwrap_or(o.containers);
        o.min_samples = min_samples.unwrap_or(o.min_samples);
        if o.layers.is_empty() || o.layers.iter().any(|&l| l == 0 || l > rootfs::MAX_LAYERS) {
            return Err("--layers: between 1 and 500 each".into());
        }
        if o.containers.is_empty() || o.containers.contains(&0) {
            return Err("--containers: at least 1 each".into());
        }
        if o.configs.is_empty() {
            return Err("--configs: at least one".into());
        }
        let mut seen = BTreeSet::new();
        o.configs.retain(|c| seen.insert(*c));
        Ok(o)
    }

    fn rounds(&self, n: usize) -> usize {
        self.min_samples.div_ceil(n).max(1)
    }
}

/// A containerd the storm launches into.
pub(crate) struct Daemon {
    /// Ours (stopped and cleaned up on drop), or `None` for the user's.
    pub(crate) private: Option<Containerd>,
    pub(crate) address: PathBuf,
    /// Where its log is (ours only), and how far the storm has read it.
    log: Option<PathBuf>,
    log_offset: u64,
    /// What the host mountinfo lines of its mounts hold (ours: its
    /// directory); `None`: the user's, every line counts.
    pub(crate) mount_needle: Option<String>,
}

impl Daemon {
    pub(crate) fn private(opts: ContainerdOptions) -> Result<Daemon, Error> {
        let c = Containerd::start(opts).map_err(|e| format!("starting containerd: {e}"))?;
        Ok(Daemon {
            address: c.address().to_path_buf(),
            log: Some(c.base().join("containerd.log")),
            log_offset: 0,
            mount_needle: Some(format!("{}/", c.base().display())),
            private: Some(c),
        })
    }

    /// Runs `ctr` and waits for it (blocked in wait(2), not polling, so
    /// that its wall time is measured to the microsecond); ctr's own
    /// `--timeout` bounds it.
    pub(crate) fn ctr(&self, args: &[&str]) -> CtrOutput {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(NAMESPACE)
            .arg("--connect-timeout")
            .arg("30s")
            .arg("--timeout")
            .arg(format!("{}s", CTR_TIMEOUT.as_secs()))
            .args(args)
            .stdin(Stdio::null());
        match cmd.output() {
            Ok(out) => CtrOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => CtrOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("spawning ctr: {e}"),
            },
        }
    }

    /// What containerd logged since the last call.
    fn new_log(&mut self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return String::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.log_offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return String::new();
        }
        // Whole lines only: a line being written is read next time.
        let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(whole);
        self.log_offset += whole as u64;
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub(crate) fn import(&self, dir: &Path, name: &str, layers: usize) -> Result<(), Error> {
        let archive = idshift_harness::build_image(dir, name, layers)
            .map_err(|e| format!("building the {layers}-layer image: {e}"))?;
        let path = archive.to_string_lossy().into_owned();
        let platform = format!("linux/{}", idshift_harness::oci_arch());
        let out = self.ctr(&["images", "import", "--platform", &platform, &path]);
        let _ = std::fs::remove_file(&archive);
        if !out.success() {
            return Err(format!("ctr images import ({layers} layers): {out:?}").into());
        }
        Ok(())
    }

    pub(crate) fn leaks(&self) -> Vec<String> {
        self.private.as_ref().map(|c| c.leaks()).unwrap_or_default()
    }
}

/// Where the storm runs: the daemon(s), the idshift config file of each
/// strategy, the images.
struct Target {
    main: Daemon,
    /// A second private containerd whose `runc` is crun (the runc shim runs
    /// the `runc` on its PATH; `ctr containers create` cannot name another).
    crun: Option<Daemon>,
    config_files: BTreeMap<Config, PathBuf>,
    /// Holds the config files (external containerd) and the crun PATH dir.
    _dir: tempfile::TempDir,
}

impl Target {
    fn daemon(&self, c: Config) -> &Daemon {
        match (c, &self.crun) {
            (Config::Crun, Some(d)) => d,
            _ => &self.main,
        }
    }

    fn daemon_mut(&mut self, c: Config) -> &mut Daemon {
        match (c, &mut self.crun) {
            (Config::Crun, Some(d)) => d,
            _ => &mut self.main,
        }
    }
}

fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file());
    found
}

fn setup(opts: &Options) -> Result<Target, Error> {
    let dir = tempfile::Builder::new()
        .prefix("idshift-bench-")
        .tempdir_in("/var/tmp")?;
    let main = match &opts.address {
        Some(a) => Daemon {
            private: None,
            address: a.clone(),
            log: None,
            log_offset: 0,
            mount_needle: None,
        },
        None => Daemon::private(ContainerdOptions::idshift(""))?,
    };
    // The idshift config file of each strategy: the instance's own (private
    // state and run dirs) or the host's, with `strategy` set.
    let base_config: toml::Table = match &main.private {
        Some(c) => toml::from_str(&std::fs::read_to_string(&c.idshift_config)?)?,
        None => {
            let host = std::env::var_os("IDSHIFT_CONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/idshift/config.toml"));
            match std::fs::read_to_string(&host) {
                Ok(t) => toml::from_str(&t).map_err(|e| format!("{}: {e}", host.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
                Err(e) => return Err(format!("{}: {e}", host.display()).into()),
            }
        }
    };
    let mut config_files = BTreeMap::new();
    for c in &opts.configs {
        if let Some(s) = c.strategy() {
            let mut t = base_config.clone();
            t.insert("strategy".into(), toml::Value::String(s.into()));
            let file = match &main.private {
                Some(cd) => cd.base().join(format!("idshift-{s}.toml")),
                None => dir.path().join(format!("idshift-{s}.toml")),
            };
            std::fs::write(&file, toml::to_string(&t)?)?;
            config_files.insert(*c, file);
        }
    }
    let crun = if opts.configs.contains(&Config::Crun) {
        let Some(crun_bin) = which("crun") else {
            return Err("crun is not installed: leave it out of --configs".into());
        };
        if opts.address.is_some() {
            return Err("--address: the crun configuration needs a private containerd; leave it out of --configs".into());
        }
        // A PATH dir where `runc` is crun (and the idshift shim, which the
        // harness insists on).
        let path_dir = dir.path().join("crun-path");
        std::fs::create_dir(&path_dir)?;
        std::os::unix::fs::symlink(&crun_bin, path_dir.join("runc"))?;
        std::os::unix::fs::symlink(shim_dir().join(IDSHIFT_SHIM), path_dir.join(IDSHIFT_SHIM))?;
        Some(Daemon::private(ContainerdOptions {
            shim_dir: Some(path_dir),
            ..Default::default()
        })?)
    } else {
        None
    };
    Ok(Target {
        main,
        crun,
        config_files,
        _dir: dir,
    })
}

/// One container's launch.
#[derive(Debug, Clone)]
struct Launch {
    id: String,
    /// (task create to start returned, end to end), or what failed.
    result: Result<(Duration, Duration), String>,
}

pub(crate) fn ctr_error(what: &str, out: &CtrOutput) -> String {
    let msg = out.stderr.trim();
    let msg = msg.strip_prefix("ctr: ").unwrap_or(msg);
    format!(
        "{what}: {} (exit {:?})",
        msg.lines().last().unwrap_or(""),
        out.code
    )
}

fn launch(
    t: &Target,
    cfg: Config,
    image: &str,
    id: &str,
    group: &str,
) -> Result<(Duration, Duration), String> {
    let d = t.daemon(cfg);
    let mut create: Vec<&str> = vec!["containers", "create"];
    let config_file;
    match cfg.strategy() {
        Some(_) => {
            config_file = t
                .config_files
                .get(&cfg)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            create.extend([
                "--runtime",
                IDSHIFT_RUNTIME,
                "--runtime-config-path",
                &config_file,
            ]);
        }
        None => create.extend(["--runtime", RUNC_RUNTIME]),
    }
    let annotation = format!("{GROUP_ANNOTATION}={group}");
    if cfg.grouped() {
        create.extend(["--annotation", &annotation]);
    }
    create.extend([image, id, "sleep", "100000"]);
    let t0 = Instant::now();
    let out = d.ctr(&create);
    if !out.success() {
        return Err(ctr_error("containers create", &out));
    }
    let t1 = Instant::now();
    let out = d.ctr(&["tasks", "start", "-d", "--null-io", id]);
    let t2 = Instant::now();
    if !out.success() {
        return Err(ctr_error("tasks start", &out));
    }
    Ok((t2 - t1, t2 - t0))
}

/// What one round (N containers at once, one configuration) measured.
#[derive(Debug, Clone, Default)]
struct Round {
    launches: Vec<Launch>,
    /// Host mountinfo lines of this containerd before the storm and with
    /// all running; the most lines of the whole host and of this
    /// containerd during the storm.
    mountinfo_before: usize,
    mountinfo_running: usize,
    mountinfo_peak: usize,
    mountinfo_peak_ours: usize,
    /// Reads of the host mountinfo during the storm.
    mountinfo_reads: Vec<Duration>,
    memory: Memory,
    /// Mount syscalls of each container's rootfs (shim + container), from
    /// the shim's log line.
    mount_syscalls: Vec<u32>,
    /// The rootfs construction time of each container, in the shim (its
    /// log line).
    rootfs: Vec<Duration>,
    leaks: Vec<String>,
}

/// Parses the shim's `created <id> (pid ..): userns .. ms, rootfs <r> ms
/// (<s> strategy, <k> mount syscalls (...) in the shim, then 1 move_mount
/// inside ...` log line into (k + 1, r).
fn shim_report_of(log: &str, id: &str) -> Option<(u32, f64)> {
    let needle = format!("created {id} (pid");
    let line = log.lines().find(|l| l.contains(&needle))?;
    let rest = &line[line.find(&needle)?..];
    let after = &rest[rest.find(" strategy, ")? + " strategy, ".len()..];
    let k: u32 = after.split_whitespace().next()?.parse().ok()?;
    if !rest.contains(" in the shim") {
        return None;
    }
    let inside = u32::from(rest.contains("then 1 move_mount inside"));
    let r = rest.split(", rootfs ").nth(1)?;
    let rootfs_ms: f64 = r.split_whitespace().next()?.parse().ok()?;
    Some((k + inside, rootfs_ms))
}

/// Kills and deletes the round's tasks and containers (also on unwind).
pub(crate) struct RoundGuard<'a> {
    pub(crate) d: &'a Daemon,
    pub(crate) ids: Vec<String>,
    pub(crate) done: bool,
}

impl RoundGuard<'_> {
    /// Deletes everything; returns what could not be.
    pub(crate) fn clean(&mut self) -> Vec<String> {
        self.done = true;
        let d = self.d;
        let mut problems = Vec::new();
        let chunks: Vec<Vec<String>> = self.ids.chunks(20).map(<[String]>::to_vec).collect();
        // Batches in parallel (4 at a time), then whatever is left one by one.
        let run_batches = |verb: &[&str]| {
            for group in chunks.chunks(4) {
                std::thread::scope(|s| {
                    for chunk in group {
                        s.spawn(|| {
                            let mut args: Vec<&str> = verb.to_vec();
                            args.extend(chunk.iter().map(String::as_str));
                            d.ctr(&args)
                        });
                    }
                });
            }
        };
        let ours: BTreeSet<&str> = self.ids.iter().map(String::as_str).collect();
        let listed = |what: &str| -> Vec<String> {
            d.ctr(&[what, "ls", "-q"])
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| ours.contains(l))
                .map(str::to_string)
                .collect()
        };
        run_batches(&["tasks", "delete", "--force"]);
        for id in listed("tasks") {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let out = d.ctr(&["tasks", "delete", "--force", &id]);
                if out.success() || out.stderr.contains("not found") {
                    break;
                }
                if Instant::now() > deadline {
                    problems.push(ctr_error(&format!("tasks delete --force {id}"), &out));
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        run_batches(&["containers", "delete"]);
        for id in listed("containers") {
            let out = d.ctr(&["containers", "delete", &id]);
            if !out.success() {
                problems.push(ctr_error(&format!("containers delete {id}"), &out));
            }
        }
        problems
    }
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            for p in self.clean() {
                eprintln!("idshift-bench: cleaning up: {p}");
            }
        }
    }
}

/// Launches `n` containers of `cfg` at once and measures; cleans up.
fn storm(t: &mut Target, cfg: Config, image: &str, n: usize, tag: &str) -> Result<Round, Error> {
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let id_set: BTreeSet<String> = ids.iter().cloned().collect();
    // Nothing before this round's storm is of interest in the log.
    let _ = t.daemon_mut(cfg).new_log();
    let mut round = Round::default();
    let needle = t.daemon(cfg).mount_needle.clone();
    let needle = needle.as_deref();
    let first = host::read_mountinfo(needle)?;
    let before = first.ours;
    round.mountinfo_before = before;
    round.mountinfo_peak = first.lines;
    round.mountinfo_peak_ours = before;
    let t_ref: &Target = t;
    let mut guard = RoundGuard {
        d: t_ref.daemon(cfg),
        ids: ids.clone(),
        done: false,
    };
    let barrier = Barrier::new(n + 1);
    let finished = AtomicUsize::new(0);
    let launches: Vec<Launch> = std::thread::scope(|s| -> Result<Vec<Launch>, Error> {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let (barrier, finished) = (&barrier, &finished);
                s.spawn(move || {
                    barrier.wait();
                    let result = launch(t_ref, cfg, image, id, tag);
                    finished.fetch_add(1, Ordering::SeqCst);
                    Launch {
                        id: id.clone(),
                        result,
                    }
                })
            })
            .collect();
        barrier.wait();
        // Sample the host mount table while the storm runs.
        while finished.load(Ordering::SeqCst) < n {
            let m = host::read_mountinfo(needle)?;
            round.mountinfo_peak = round.mountinfo_peak.max(m.lines);
            round.mountinfo_peak_ours = round.mountinfo_peak_ours.max(m.ours);
            round.mountinfo_reads.push(m.took);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(handles
            .into_iter()
            .zip(&ids)
            .map(|(h, id)| {
                h.join().unwrap_or_else(|_| Launch {
                    id: id.clone(),
                    result: Err("the launching thread panicked".into()),
                })
            })
            .collect())
    })?;
    let running = host::read_mountinfo(needle)?;
    round.mountinfo_running = running.ours;
    round.mountinfo_peak = round.mountinfo_peak.max(running.lines);
    round.mountinfo_peak_ours = round.mountinfo_peak_ours.max(running.ours);
    round.memory = host::shim_memory(cfg.shim_binary(), &id_set);
    round.launches = launches;
    let mut problems = guard.clean();
    drop(guard);
    // Nothing may stay: shims, mounts, ranges, run dirs.
    let deadline = Instant::now() + LEAK_TIMEOUT;
    loop {
        let mut leaks = t.daemon(cfg).leaks();
        let shims = host::shim_memory(cfg.shim_binary(), &id_set).processes;
        if shims > 0 {
            leaks.push(format!("{shims} shim processes of this round still run"));
        }
        let now = host::read_mountinfo(needle)?.ours;
        if now > before {
            leaks.push(format!(
                "host mountinfo has {} lines of this containerd more than before the round",
                now - before
            ));
        }
        if leaks.is_empty() || Instant::now() > deadline {
            problems.extend(leaks);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    round.leaks = problems;
    if cfg.strategy().is_some() && t.daemon(cfg).log.is_some() {
        let log = t.daemon_mut(cfg).new_log();
        for (k, r) in round
            .launches
            .iter()
            .filter(|l| l.result.is_ok())
            .filter_map(|l| shim_report_of(&log, &l.id))
        {
            round.mount_syscalls.push(k);
            round.rootfs.push(Duration::from_secs_f64(r / 1e3));
        }
    }
    Ok(round)
}

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub(crate) fn of(d: &[Duration]) -> Stats {
        if d.is_empty() {
            return Stats::default();
        }
        let mut v: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        // Nearest rank.
        let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            samples: v.len(),
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            p99_ms: pct(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

/// Everything measured for one configuration in one (L, N) cell, over its
/// rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub config: Config,
    pub layers: usize,
    pub containers: usize,
    pub rounds: usize,
    pub launched: usize,
    pub succeeded: usize,
    /// Distinct errors and how many launches hit each.
    pub errors: BTreeMap<String, usize>,
    /// Task create to task start returned.
    pub task: Stats,
    /// Container create + task create + task start (`ctr run -d`).
    pub e2e: Stats,
    /// Mount syscalls per container (idshift configurations; none for runc
    /// and crun, whose mounts are not counted), min and max over containers.
    pub mount_syscalls_min: Option<u32>,
    pub mount_syscalls_max: Option<u32>,
    /// How many containers' counts were found in the log.
    pub mount_syscalls_logged: usize,
    /// The rootfs construction in the shim (idshift only; from its log):
    /// where the mount-lock contention shows without `ctr`'s and
    /// containerd's share of the launch.
    pub rootfs: Stats,
    /// Host mountinfo lines of the bench's containerd before the storms
    /// (every host line with `--address`).
    pub mountinfo_before: usize,
    /// The most host mountinfo lines seen during the storms: all of the
    /// host's, and those of the bench's containerd.
    pub mountinfo_peak: usize,
    pub mountinfo_peak_ours: usize,
    /// Lines added per running container (all N running), worst round.
    pub mountinfo_added_per_container: f64,
    /// How long reading the host mountinfo took during the storms.
    pub mountinfo_read: Stats,
    /// Shim processes while all N ran (mean over rounds).
    pub shim_processes: f64,
    /// Summed over the shim processes, per running container (mean over
    /// rounds), KiB.
    pub shim_rss_kib_per_container: f64,
    pub shim_pss_kib_per_container: f64,
    pub leaks: Vec<String>,
    pub wall_s: f64,
}

fn summarize(cfg: Config, layers: usize, n: usize, rounds: &[Round], wall: Duration) -> Cell {
    let mut errors = BTreeMap::new();
    let (mut task, mut e2e, mut reads, mut syscalls) = (vec![], vec![], vec![], vec![]);
    let mut rootfs = vec![];
    let (mut added, mut peak, mut peak_ours, mut before) = (0f64, 0, 0, usize::MAX);
    let (mut procs, mut rss, mut pss, mut mem_rounds) = (0f64, 0f64, 0f64, 0usize);
    let mut leaks = Vec::new();
    let mut launched = 0;
    for r in rounds {
        launched += r.launches.len();
        let ok = r.launches.iter().filter(|l| l.result.is_ok()).count();
        for l in &r.launches {
            match &l.result {
                Ok((t, e)) => {
                    task.push(*t);
                    e2e.push(*e);
                }
                Err(e) => *errors.entry(e.clone()).or_insert(0) += 1,
            }
        }
        reads.extend(r.mountinfo_reads.iter().copied());
        syscalls.extend(r.mount_syscalls.iter().copied());
        rootfs.extend(r.rootfs.iter().copied());
        peak = peak.max(r.mountinfo_peak);
        peak_ours = peak_ours.max(r.mountinfo_peak_ours);
        before = before.min(r.mountinfo_before);
        if ok > 0 {
            let a = (r.mountinfo_running as f64 - r.mountinfo_before as f64) / ok as f64;
            added = added.max(a);
            procs += r.memory.processes as f64;
            rss += r.memory.rss_kib as f64 / ok as f64;
            pss += r.memory.pss_kib as f64 / ok as f64;
            mem_rounds += 1;
        }
        leaks.extend(r.leaks.iter().cloned());
    }
    let m = mem_rounds.max(1) as f64;
    Cell {
        config: cfg,
        layers,
        containers: n,
        rounds: rounds.len(),
        launched,
        succeeded: task.len(),
        errors,
        task: Stats::of(&task),
        e2e: Stats::of(&e2e),
        mount_syscalls_min: syscalls.iter().min().copied(),
        mount_syscalls_max: syscalls.iter().max().copied(),
        mount_syscalls_logged: syscalls.len(),
        rootfs: Stats::of(&rootfs),
        mountinfo_before: if before == usize::MAX { 0 } else { before },
        mountinfo_peak: peak,
        mountinfo_peak_ours: peak_ours,
        mountinfo_added_per_container: added,
        mountinfo_read: Stats::of(&reads),
        shim_processes: procs / m,
        shim_rss_kib_per_container: rss / m,
        shim_pss_kib_per_container: pss / m,
        leaks,
        wall_s: wall.as_secs_f64(),
    }
}

/// The whole run, as written to `--json`.
#[derive(Debug, Serialize)]
pub struct Run {
    pub command: String,
    pub started_unix: u64,
    pub duration_s: f64,
    pub complete: bool,
    pub topology: Topology,
    /// `ctr version` against the main containerd, median of 9 before the
    /// sweep: the client's start-up and connection, included in every
    /// latency (task and e2e: once and twice).
    pub ctr_overhead_ms: f64,
    /// /proc/loadavg when the sweep started and when it ended (how busy the
    /// machine was, the storm included).
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub options: Options,
    pub cells: Vec<Cell>,
    pub goals: Vec<report::Goal>,
}

struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    fn show(&self, what: &str) {
        let frac = self.done as f64 / self.total.max(1) as f64;
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        let elapsed = self.start.elapsed().as_secs();
        let eta = if self.done > 0 {
            format!(
                ", ~{}s left",
                (self.start.elapsed().as_secs_f64() / frac * (1.0 - frac)).round()
            )
        } else {
            String::new()
        };
        let line = format!(
            "[{}{}] {:>3}% launches {}/{} {}s{} {what}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            (frac * 100.0).round(),
            self.done,
            self.total,
            elapsed,
            eta
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn end(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn write_outputs(run: &Run, opts: &Options) -> Result<(), Error> {
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(run)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &opts.svg {
        std::fs::write(path, report::svg(run)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &opts.markdown {
        std::fs::write(path, report::markdown(run))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs the storm sweep; returns whether it was clean (every launch
/// succeeded, nothing leaked).
pub fn run(mut opts: Options, command: String) -> Result<bool, Error> {
    if !opts.configs_given
        && opts.configs.contains(&Config::Crun)
        && (which("crun").is_none() || opts.address.is_some())
    {
        println!("note: crun is not installed or the containerd is not ours: the crun configuration is left out");
        opts.configs.retain(|c| *c != Config::Crun);
    }
    let pinned = match &opts.cpus {
        Some(list) => {
            let cpus = host::parse_cpu_list(list)?;
            host::pin_to(&cpus)?;
            Some(list.clone())
        }
        None => None,
    };
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut t = setup(&opts)?;
    let scratch = tempfile::Builder::new()
        .prefix("idshift-bench-probe-")
        .tempdir_in("/var/tmp")?;
    let topology = Topology::read(scratch.path(), pinned)?;
    drop(scratch);
    for l in topology.header() {
        println!("{l}");
    }
    let mut ctr_times: Vec<Duration> = (0..9)
        .map(|_| {
            let t0 = Instant::now();
            let _ = t.main.ctr(&["version"]);
            t0.elapsed()
        })
        .collect();
    ctr_times.sort();
    let ctr_overhead_ms = ctr_times[ctr_times.len() / 2].as_secs_f64() * 1e3;
    println!(
        "ctr start-up + connect (`ctr version`, median of 9): {ctr_overhead_ms:.1} ms, included in every latency below"
    );
    println!(
        "storm: layers {:?}, containers {:?}, configurations {}, at least {} samples per cell (rounds interleaved round-robin)",
        opts.layers,
        opts.containers,
        opts.configs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        opts.min_samples
    );
    let total: usize = opts.layers.len()
        * opts.configs.len()
        * opts
            .containers
            .iter()
            .map(|&n| n * opts.rounds(n))
            .sum::<usize>();
    let mut progress = Progress {
        total,
        done: 0,
        start: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    let mut run = Run {
        command,
        started_unix,
        duration_s: 0.0,
        complete: false,
        topology,
        ctr_overhead_ms,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        options: opts.clone(),
        cells: Vec::new(),
        goals: Vec::new(),
    };
    let images_dir = tempfile::Builder::new()
        .prefix("idshift-bench-images-")
        .tempdir_in("/var/tmp")?;
    let mut round_no = 0usize;
    'sweep: for &layers in &opts.layers {
        let image = format!("docker.io/library/idshift-bench:{layers}");
        progress.show(&format!("importing the {layers}-layer image"));
        t.main.import(images_dir.path(), &image, layers)?;
        if let Some(d) = &t.crun {
            d.import(images_dir.path(), &image, layers)?;
        }
        for &n in &opts.containers {
            let rounds = opts.rounds(n);
            let mut per_cfg: BTreeMap<Config, (Vec<Round>, Duration)> = BTreeMap::new();
            for r in 0..rounds {
                // Rotate the order so no configuration always goes first.
                let k = opts.configs.len();
                for j in 0..k {
                    let cfg = opts.configs[(j + r + round_no) % k];
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        break 'sweep;
                    }
                    progress.show(&format!(
                        "L={layers} N={n} {} round {}/{rounds}",
                        cfg.name(),
                        r + 1
                    ));
                    let tag = format!("b{round_no}-{}", cfg.name());
                    let t0 = Instant::now();
                    let round = storm(&mut t, cfg, &image, n, &tag)?;
                    let e = per_cfg.entry(cfg).or_default();
                    e.0.push(round);
                    e.1 += t0.elapsed();
                    progress.done += n;
                }
                round_no += 1;
            }
            for cfg in &opts.configs {
                if let Some((rounds, wall)) = per_cfg.get(cfg) {
                    run.cells.push(summarize(*cfg, layers, n, rounds, *wall));
                }
            }
            run.duration_s = progress.start.elapsed().as_secs_f64();
            run.goals = report::goals(&run.cells);
            write_outputs(&run, &opts)?;
        }
        let out = t.main.ctr(&["images", "rm", &image]);
        if !out.success() {
            eprintln!("idshift-bench: ctr images rm {image}: {out:?}");
        }
        if let Some(d) = &t.crun {
            let _ = d.ctr(&["images", "rm", &image]);
        }
    }
    progress.end();
    run.loadavg_end = loadavg();
    run.complete = !INTERRUPTED.load(Ordering::SeqCst);
    run.duration_s = progress.start.elapsed().as_secs_f64();
    run.goals = report::goals(&run.cells);
    report::print(&run);
    write_outputs(&run, &opts)?;
    if let Some(p) = &opts.json {
        println!("wrote {}", p.display());
    }
    for p in [&opts.svg, &opts.markdown].into_iter().flatten() {
        println!("wrote {}", p.display());
    }
    drop(t);
    if !run.complete {
        return Err("interrupted: stopped after the round that was running, cleaned up".into());
    }
    let clean = run.cells.iter().all(|c| {
        c.leaks.is_empty() && (c.config.strategy().is_none() || c.succeeded == c.launched)
    });
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_syscalls_from_the_shim_log() {
        let log = "time=x level=info msg=\"created b3-fd-1 (pid 4242): userns 1.8 ms, rootfs 2.2 ms (fd strategy, 4 mount syscalls (open_tree 1, mount_setattr 1, fsopen 1, fsmount 1, move_mount 0, mount 0, umount 0; fsconfig 53) in the shim, then 1 move_mount inside the container's own mount namespace), namespaces and init 21.8 ms\"\n\
                   msg=\"created b3-fd-10 (pid 4243): userns 1.8 ms, rootfs 9 ms (per-layer strategy, 202 mount syscalls (...) in the shim, then 1 move_mount inside\"";
        assert_eq!(shim_report_of(log, "b3-fd-1"), Some((5, 2.2)));
        assert_eq!(shim_report_of(log, "b3-fd-10"), Some((203, 9.0)));
        assert_eq!(shim_report_of(log, "b3-fd-2"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Stats::of(&d);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        let one = Stats::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn options() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = Options::parse(&args("--quick --configs fd,runc")).expect("parse");
        assert_eq!(
            (o.layers.clone(), o.containers.clone()),
            (vec![1, 10], vec![1, 5])
        );
        assert_eq!(o.configs, vec![Config::Fd, Config::Runc]);
        assert_eq!(o.rounds(1), 3);
        assert_eq!(o.rounds(5), 1);
        let o = Options::parse(&args("--layers 2,3 --containers 4")).expect("parse");
        assert_eq!(
            (o.layers, o.containers, o.configs.len()),
            (vec![2, 3], vec![4], 6)
        );
        assert!(Options::parse(&args("--configs nope")).is_err());
        assert!(Options::parse(&args("--layers 0")).is_err());
    }
}
