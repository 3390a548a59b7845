//! `idshift-bench storm`: N containers launched at once from an image of L
//! layers, under every configuration (idshift's rootfs strategies, and
//! containerd's runc shim with runc and with crun), interleaved round-robin
//! within each (L, N) cell so that machine noise hits all alike.
//!
//! Every container of every configuration is launched with the same one
//! command, `ctr run -d --null-io` (container record and snapshot, task
//! create, task start), so that every configuration pays the same client
//! work. "e2e" latency is that command's wall time; "task" is the part
//! after containerd made the container's record: from its
//! `/containers/create` event (containerd's timestamp, `events.rs`) to the
//! command's exit (task create to task start returned, as the client sees
//! it).

use crate::events::{self, ContainerCreates};
use crate::host::{self, Memory, Topology};
use crate::report;
use idshift_harness::{shim_dir, Containerd, ContainerdOptions, CtrOutput, Flavour};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime};

pub type Error = Box<dyn std::error::Error>;

/// Set by the SIGINT/SIGTERM handler: stop after the current round (whose
/// containers are still cleaned up), then clean up everything.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) const NAMESPACE: &str = "idshift-bench";
/// How long one `ctr` of a launch or of the clean-up may run.
pub(crate) const CTR_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a round's `/containers/create` events may lag its launches.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a round's clean-up has to leave nothing behind.
const LEAK_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const IDSHIFT_RUNTIME: &str = "io.containerd.idshift.v2";
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub(crate) const IDSHIFT_SHIM: &str = "containerd-shim-idshift-v2";
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// Which containerd a configuration runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Cd {
    /// The bench's private containerd of the system (Debian's 1.6), or the
    /// user's (`--address`).
    #[serde(rename = "main")]
    Main,
    /// A private containerd 2.x (`tests/install-containerd.sh 2.x`).
    #[serde(rename = "2.x")]
    V2,
}

impl Cd {
    /// The suffix of a configuration's name on it (`fd@2.x`).
    fn suffix(self) -> &'static str {
        match self {
            Cd::Main => "",
            Cd::V2 => "@2.x",
        }
    }
}

/// What a configuration launches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Fd,
    Path,
    PerLayer,
    Plain,
    Runc,
    /// The runc shim with crun as its runtime (1.6: a containerd whose
    /// `runc` is crun; 2.x: `--runc-binary`).
    Crun,
    /// `fd`, every container of a round in one shim (the runc shim's group
    /// annotation, which idshift honours as runc's shim does).
    FdGroup,
    /// The runc shim with runc, every container of a round in one shim.
    RuncGroup,
    /// Anything `ctr run` can start: each container launched with `ctr run
    /// -d --null-io <flags> <image> <id> sleep 100000`, `{H}` in the flags
    /// replaced by a host ID base of its own (see [`peer_host_ids`]).
    Peer(Vec<String>),
}

/// One configuration of the storm: what it launches, on which containerd,
/// under which name (`fd`, `fd@2.x`, `runc-userns@2.x`, a `--peer`'s).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Config {
    pub kind: Kind,
    pub cd: Cd,
    pub name: String,
}

/// Written to JSON as its name.
impl Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The OCI annotation that puts containers in one shim.
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// The built-in configurations' names.
const BUILTIN: [&str; 9] = [
    "fd",
    "path",
    "per-layer",
    "plain",
    "runc",
    "crun",
    "fd-group",
    "runc-group",
    "runc-userns",
];

/// The flags of the built-in `runc-userns` peer: the runc shim and runc
/// with a user namespace over a host ID range of each container's own, the
/// snapshot idmapped by containerd (2.x's overlay snapshotter: idmapped
/// layers when the kernel has them).
const RUNC_USERNS_FLAGS: &str =
    "--runtime io.containerd.runc.v2 --uidmap 0:{H}:65536 --gidmap 0:{H}:65536 --remap-labels";

/// The first host ID of the ranges `{H}` stands for: container i of a round
/// gets `PEER_ID_BASE + i * 65536`, below idshift's pool (0x70000000) and
/// far above the host's users and the usual `/etc/subuid` ranges.
const PEER_ID_BASE: u64 = 0x1000_0000;

/// The host ID base `{H}` of a peer's container `i` within its round.
pub fn peer_host_ids(i: usize) -> u64 {
    PEER_ID_BASE + i as u64 * 65536
}

impl Config {
    /// The default sweep: the six configurations on the main containerd,
    /// and idshift `fd`, the runc shim, and the runc shim with user
    /// namespaces on containerd 2.x (left out, with a note, when 2.x is not
    /// installed or the containerd is the user's).
    pub fn defaults() -> Vec<Config> {
        [
            "fd",
            "path",
            "per-layer",
            "plain",
            "runc",
            "crun",
            "fd@2.x",
            "runc@2.x",
            "runc-userns@2.x",
        ]
        .iter()
        .filter_map(|n| Config::builtin(n))
        .collect()
    }

    /// A built-in configuration by name (`NAME` or `NAME@2.x`).
    fn builtin(spec: &str) -> Option<Config> {
        let (base, cd) = split_cd(spec).ok()?;
        let kind = match base {
            "fd" => Kind::Fd,
            "path" => Kind::Path,
            "per-layer" => Kind::PerLayer,
            "plain" => Kind::Plain,
            "runc" => Kind::Runc,
            "crun" => Kind::Crun,
            "fd-group" => Kind::FdGroup,
            "runc-group" => Kind::RuncGroup,
            "runc-userns" => Kind::Peer(
                RUNC_USERNS_FLAGS
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
            ),
            _ => return None,
        };
        Some(Config {
            kind,
            cd,
            name: spec.to_string(),
        })
    }

    fn parse(s: &str) -> Result<Config, Error> {
        Config::builtin(s).ok_or_else(|| {
            format!(
                "unknown configuration {s:?} (known: {}, each also as NAME@2.x; or --peer NAME='ctr run flags')",
                BUILTIN.join(", ")
            )
            .into()
        })
    }

    /// `--peer NAME[@2.x]='ctr run flags'`.
    fn parse_peer(s: &str) -> Result<Config, Error> {
        let (name, flags) = s
            .split_once('=')
            .ok_or_else(|| format!("--peer {s:?}: NAME='ctr run flags' expected"))?;
        let (base, cd) = split_cd(name.trim())?;
        if base.is_empty()
            || !base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "--peer {s:?}: the name must be letters, digits, '.', '_', '-' (then @2.x for containerd 2.x)"
            )
            .into());
        }
        if BUILTIN.contains(&base) {
            return Err(format!(
                "--peer {s:?}: {base} is a built-in configuration's name; pick another"
            )
            .into());
        }
        let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
        for f in &flags {
            if matches!(
                f.as_str(),
                "-d" | "--detach" | "--rm" | "--null-io" | "-t" | "--tty"
            ) {
                return Err(format!(
                    "--peer {s:?}: {f} is the bench's to set (it runs `ctr run -d --null-io`)"
                )
                .into());
            }
        }
        Ok(Config {
            kind: Kind::Peer(flags),
            cd,
            name: name.trim().to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A longer label (table legend, SVG legend).
    pub fn label(&self) -> String {
        let what = match &self.kind {
            Kind::Fd => "idshift fd".to_string(),
            Kind::Path => "idshift path".to_string(),
            Kind::PerLayer => "idshift per-layer (containerd 2.0's)".to_string(),
            Kind::Plain => "idshift plain (no userns)".to_string(),
            Kind::Runc => "runc shim + runc (no userns)".to_string(),
            Kind::Crun => "runc shim + crun (no userns)".to_string(),
            Kind::FdGroup => "idshift fd, one shim per round (group)".to_string(),
            Kind::RuncGroup => "runc shim + runc, one shim per round (group)".to_string(),
            Kind::Peer(f) if self.name.starts_with("runc-userns") => format!(
                "runc shim + runc with user namespaces, a range per container (ctr run {})",
                f.join(" ")
            ),
            Kind::Peer(f) => format!("{}: ctr run {}", self.name, f.join(" ")),
        };
        match self.cd {
            Cd::Main => what,
            Cd::V2 => format!("{what}, containerd 2.x"),
        }
    }

    /// The idshift `strategy` of an idshift configuration.
    fn strategy(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Fd | Kind::FdGroup => Some("fd"),
            Kind::Path => Some("path"),
            Kind::PerLayer => Some("per-layer"),
            Kind::Plain => Some("plain"),
            Kind::Runc | Kind::Crun | Kind::RuncGroup | Kind::Peer(_) => None,
        }
    }

    /// Whether idshift runs it: a strategy of ours, or a peer naming our
    /// runtime.
    pub fn is_idshift(&self) -> bool {
        match &self.kind {
            Kind::Peer(f) => f.iter().any(|a| a.contains(IDSHIFT_RUNTIME)),
            _ => self.strategy().is_some(),
        }
    }

    fn grouped(&self) -> bool {
        matches!(self.kind, Kind::FdGroup | Kind::RuncGroup)
    }

    /// The shim binaries whose processes are this configuration's.
    fn shim_binaries(&self) -> &'static [&'static str] {
        match &self.kind {
            Kind::Peer(_) => &[IDSHIFT_SHIM, RUNC_SHIM],
            _ if self.strategy().is_some() => &[IDSHIFT_SHIM],
            _ => &[RUNC_SHIM],
        }
    }

    /// Whether the runc shim runs crun through a containerd of its own on
    /// 1.6, whose PATH's `runc` is crun (from when launches were 1.6's
    /// `ctr containers create`, which cannot name the runtime binary; its
    /// `ctr run --runc-binary` could now).
    fn needs_crun_daemon(&self) -> bool {
        self.kind == Kind::Crun && self.cd == Cd::Main
    }
}

/// `NAME` or `NAME@2.x`.
fn split_cd(spec: &str) -> Result<(&str, Cd), Error> {
    match spec.split_once('@') {
        None => Ok((spec, Cd::Main)),
        Some((base, "2.x")) => Ok((base, Cd::V2)),
        Some((_, other)) => Err(format!(
            "{spec:?}: @{other} is not a containerd the bench runs (NAME for the main one, NAME@2.x)"
        )
        .into()),
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
    /// `ctr run --rm` of one container, this many times per configuration
    /// at the L closest to 60 (0: not measured).
    pub run_rm: usize,
    pub cpus: Option<String>,
    pub json: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub address: Option<PathBuf>,
    /// Exit non-zero when an idshift launch failed or anything leaked
    /// (failures of the host's runc and crun are reported, not fatal).
    pub strict: bool,
    pub quick: bool,
    /// Whether `--configs` was given (else crun and the 2.x configurations
    /// are left out, with a note, when they cannot run here).
    pub configs_given: bool,
}

pub fn usage() -> &'static str {
    "idshift-bench storm [--quick] [--layers 1,10,50,100] [--containers 1,10,50,100,200]\n    \
     [--configs fd,path,per-layer,plain,runc,crun,fd@2.x,runc@2.x,runc-userns@2.x]\n    \
     [--peer NAME[@2.x]='ctr run flags']... [--run-rm 10] [--min-samples 10] [--cpus LIST]\n    \
     [--json FILE] [--svg FILE] [--markdown FILE] [--address SOCK] [--strict]\n  \
     --quick: layers 1,10, containers 1,5, min-samples 3, run-rm 3, configurations\n    \
     fd,path,per-layer,plain,runc,crun,fd@2.x (a CI smoke run, < 3 min)\n  \
     --configs: NAME runs on the main containerd (the system's 1.6, or --address's), NAME@2.x on a\n    \
     private containerd 2.x (tests/install-containerd.sh 2.x); also fd-group and runc-group (every\n    \
     container of a round in one shim) and runc-userns (the runc shim with\n    \
     `--uidmap 0:{H}:65536 --gidmap 0:{H}:65536 --remap-labels`, a range per container)\n  \
     --peer NAME='ctr run flags': one more configuration (repeatable), each container launched with\n    \
     `ctr run -d --null-io FLAGS IMAGE ID sleep 100000` (flags split at spaces, no quoting);\n    \
     `{H}` in FLAGS becomes a host ID base of each container's own (268435456 + i*65536). E.g.\n    \
     --peer runc-userns2@2.x='--uidmap 0:{H}:65536 --gidmap 0:{H}:65536 --remap-labels'\n    \
     --peer runc2@2.x='--runc-binary /usr/sbin/runc'   --peer mine='--runtime io.containerd.foo.v2'\n    \
     --run-rm K: `ctr run --rm` of one container K times per configuration at the L closest to 60\n  \
     --address: use that containerd (the idshift shim must be on its PATH; crun and @2.x are then skipped)\n  \
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
            configs: Config::defaults(),
            min_samples: 10,
            run_rm: 10,
            cpus: None,
            json: None,
            svg: None,
            markdown: None,
            address: None,
            strict: false,
            quick: false,
            configs_given: false,
        };
        let (mut layers, mut containers, mut min_samples, mut run_rm) = (None, None, None, None);
        let mut peers = Vec::new();
        let mut configs = None;
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
                "--configs" => configs = Some(list(&value()?, Config::parse)?),
                "--peer" => peers.push(Config::parse_peer(&value()?)?),
                "--min-samples" => min_samples = Some(num(&value()?)?),
                "--run-rm" => run_rm = Some(num(&value()?)?),
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
            o.run_rm = 3;
            o.configs = ["fd", "path", "per-layer", "plain", "runc", "crun", "fd@2.x"]
                .iter()
                .filter_map(|n| Config::builtin(n))
                .collect();
        }
        o.layers = layers.unwrap_or(o.layers);
        o.containers = containers.unwrap_or(o.containers);
        o.min_samples = min_samples.unwrap_or(o.min_samples);
        o.run_rm = run_rm.unwrap_or(o.run_rm);
        if let Some(c) = configs {
            o.configs = c;
            o.configs_given = true;
        } else if !peers.is_empty() {
            // Peers alone: beside idshift fd and the runc shim on the
            // containerds the peers run on.
            o.configs.clear();
            for cd in peers.iter().map(|p| p.cd) {
                for n in ["fd", "runc"] {
                    if let Some(c) = Config::builtin(&format!("{n}{}", cd.suffix())) {
                        o.configs.push(c);
                    }
                }
            }
            o.configs_given = true;
        }
        o.configs.extend(peers);
        if o.layers.is_empty() || o.layers.iter().any(|&l| l == 0 || l > rootfs::MAX_LAYERS) {
            return Err("--layers: between 1 and 500 each".into());
        }
        if o.containers.is_empty() || o.containers.contains(&0) {
            return Err("--containers: at least 1 each".into());
        }
        // {H} ranges stay below idshift's pool.
        if o.containers.iter().any(|&n| peer_host_ids(n) > 0x7000_0000) {
            return Err("--containers: at most 24576 (the peers' host ID ranges)".into());
        }
        if o.configs.is_empty() {
            return Err("--configs: at least one".into());
        }
        let mut seen = BTreeSet::new();
        for c in &o.configs {
            if !seen.insert(c.name.clone()) {
                return Err(format!("configuration {} given twice", c.name).into());
            }
        }
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
    /// Its `ctr` (the flavour's own for ours; the PATH's for the user's).
    ctr_bin: PathBuf,
    /// `ctr version`'s server line (which containerd it is).
    pub(crate) version: String,
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
        let mut d = Daemon {
            address: c.address().to_path_buf(),
            ctr_bin: c.ctr_path().to_path_buf(),
            version: String::new(),
            log: Some(c.base().join("containerd.log")),
            log_offset: 0,
            mount_needle: Some(format!("{}/", c.base().display())),
            private: Some(c),
        };
        d.version = d.server_version();
        Ok(d)
    }

    /// The user's containerd at `address`, driven with the PATH's `ctr`.
    fn external(address: &Path) -> Daemon {
        let mut d = Daemon {
            private: None,
            address: address.to_path_buf(),
            ctr_bin: PathBuf::from("ctr"),
            version: String::new(),
            log: None,
            log_offset: 0,
            mount_needle: None,
        };
        d.version = d.server_version();
        d
    }

    /// `containerd <version>` from `ctr version`'s Server section.
    fn server_version(&self) -> String {
        let out = self.ctr(&["version"]);
        let server = out.stdout.split("Server:").nth(1).unwrap_or("");
        let field = |name: &str| {
            server.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        match field("Version") {
            Some(v) => format!("containerd {v}"),
            None => format!(
                "containerd (version unknown: {})",
                ctr_error("ctr version", &out)
            ),
        }
    }

    /// Runs `ctr` and waits for it (blocked in wait(2), not polling, so
    /// that its wall time is measured to the microsecond); ctr's own
    /// `--timeout` bounds it.
    pub(crate) fn ctr(&self, args: &[&str]) -> CtrOutput {
        let mut cmd = self.ctr_command();
        cmd.arg("--timeout")
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
                stderr: format!("spawning {}: {e}", self.ctr_bin.display()),
            },
        }
    }

    /// `ctr` with this containerd's address and the bench's namespace.
    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(NAMESPACE)
            .arg("--connect-timeout")
            .arg("30s");
        cmd
    }

    /// Subscribes to this containerd's `/containers/create` events.
    fn container_creates(&self) -> Result<ContainerCreates, String> {
        let mut events = self.ctr_command();
        events.arg("events");
        ContainerCreates::subscribe(events, NAMESPACE, |value| {
            let label = format!("{}={value}", events::PROBE_LABEL);
            let out = self.ctr(&["namespaces", "label", NAMESPACE, &label]);
            if out.success() {
                Ok(())
            } else {
                Err(ctr_error("namespaces label", &out))
            }
        })
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

/// Which daemon serves a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DaemonKey {
    Main,
    /// The 1.6 containerd whose `runc` is crun.
    Crun,
    V2,
}

impl DaemonKey {
    fn of(c: &Config) -> DaemonKey {
        match c.cd {
            Cd::V2 => DaemonKey::V2,
            Cd::Main if c.needs_crun_daemon() => DaemonKey::Crun,
            Cd::Main => DaemonKey::Main,
        }
    }
}

/// Where the storm runs: the daemons, the idshift config file of each
/// strategy on each, the images.
struct Target {
    /// The main containerd (always there: `ctr`'s start-up is measured
    /// against it).
    main: Daemon,
    /// The others (crun's 1.6, 2.x), those the configurations need.
    others: BTreeMap<DaemonKey, Daemon>,
    /// The idshift config file of a strategy on a daemon.
    config_files: BTreeMap<(DaemonKey, &'static str), PathBuf>,
    /// crun's path (the `crun` configurations).
    crun: Option<PathBuf>,
    /// Holds the config files (external containerd) and the crun PATH dir.
    _dir: tempfile::TempDir,
}

impl Target {
    fn daemon(&self, c: &Config) -> &Daemon {
        self.others.get(&DaemonKey::of(c)).unwrap_or(&self.main)
    }

    fn daemon_mut(&mut self, c: &Config) -> &mut Daemon {
        match self.others.get_mut(&DaemonKey::of(c)) {
            Some(d) => d,
            None => &mut self.main,
        }
    }

    fn daemon_of(&self, k: DaemonKey) -> &Daemon {
        self.others.get(&k).unwrap_or(&self.main)
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
    let keys: BTreeSet<DaemonKey> = opts.configs.iter().map(DaemonKey::of).collect();
    let crun = if opts.configs.iter().any(|c| c.kind == Kind::Crun) {
        Some(which("crun").ok_or("crun is not installed: leave it out of --configs")?)
    } else {
        None
    };
    if opts.address.is_some() && keys.iter().any(|k| *k != DaemonKey::Main) {
        return Err("--address: crun and the @2.x configurations need private containerds; leave them out of --configs".into());
    }
    let main = match &opts.address {
        Some(a) => Daemon::external(a),
        None => Daemon::private(ContainerdOptions::idshift(""))?,
    };
    let mut others = BTreeMap::new();
    for k in &keys {
        let d = match k {
            DaemonKey::Main => continue,
            DaemonKey::V2 => Daemon::private(ContainerdOptions::idshift("").on(Flavour::V2))?,
            DaemonKey::Crun => {
                // A PATH dir where `runc` is crun (and the idshift shim,
                // which the harness insists on).
                let crun_bin = crun.as_ref().ok_or("crun is not installed")?;
                let path_dir = dir.path().join("crun-path");
                std::fs::create_dir(&path_dir)?;
                std::os::unix::fs::symlink(crun_bin, path_dir.join("runc"))?;
                std::os::unix::fs::symlink(
                    shim_dir().join(IDSHIFT_SHIM),
                    path_dir.join(IDSHIFT_SHIM),
                )?;
                Daemon::private(ContainerdOptions {
                    shim_dir: Some(path_dir),
                    ..Default::default()
                })?
            }
        };
        others.insert(*k, d);
    }
    // The idshift config file of each strategy on each daemon: the
    // instance's own (private state and run dirs) or the host's, with
    // `strategy` set.
    let mut config_files = BTreeMap::new();
    for c in &opts.configs {
        let Some(s) = c.strategy() else { continue };
        let k = DaemonKey::of(c);
        if config_files.contains_key(&(k, s)) {
            continue;
        }
        let d = others.get(&k).unwrap_or(&main);
        let base_config: toml::Table = match &d.private {
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
        let mut t = base_config;
        t.insert("strategy".into(), toml::Value::String(s.into()));
        let file = match &d.private {
            Some(cd) => cd.base().join(format!("idshift-{s}.toml")),
            None => dir.path().join(format!("idshift-{s}.toml")),
        };
        std::fs::write(&file, toml::to_string(&t)?)?;
        config_files.insert((k, s), file);
    }
    Ok(Target {
        main,
        others,
        config_files,
        crun,
        _dir: dir,
    })
}

/// One container's launch.
#[derive(Debug, Clone)]
struct Launch {
    id: String,
    /// What it took, or what failed.
    result: Result<Launched, String>,
}

#[derive(Debug, Clone, Copy)]
struct Launched {
    /// The `ctr run -d`'s wall time.
    e2e: Duration,
    /// When it returned.
    ended: SystemTime,
    /// From the container's `/containers/create` event to `ended`.
    task: Option<Duration>,
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

/// The `ctr run` flags of a configuration for container `i` of its round
/// (in `group`).
fn create_flags(t: &Target, cfg: &Config, i: usize, group: &str) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    match (&cfg.kind, cfg.strategy()) {
        (Kind::Peer(flags), _) => {
            let h = peer_host_ids(i).to_string();
            f.extend(flags.iter().map(|a| a.replace("{H}", &h)));
        }
        (_, Some(s)) => {
            let file = t
                .config_files
                .get(&(DaemonKey::of(cfg), s))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            f.extend([
                "--runtime".into(),
                IDSHIFT_RUNTIME.into(),
                "--runtime-config-path".into(),
                file,
            ]);
        }
        (_, None) => {
            f.extend(["--runtime".into(), RUNC_RUNTIME.into()]);
            if cfg.kind == Kind::Crun && cfg.cd == Cd::V2 {
                if let Some(crun) = &t.crun {
                    f.extend(["--runc-binary".into(), crun.to_string_lossy().into_owned()]);
                }
            }
        }
    }
    if cfg.grouped() {
        f.extend(["--annotation".into(), format!("{GROUP_ANNOTATION}={group}")]);
    }
    f
}

/// `ctr run -d` of container `i` of a round; its task latency is filled in
/// from containerd's events afterwards.
fn launch(
    t: &Target,
    cfg: &Config,
    image: &str,
    id: &str,
    i: usize,
    group: &str,
) -> Result<Launched, String> {
    let flags = create_flags(t, cfg, i, group);
    let mut run: Vec<&str> = vec!["run", "-d", "--null-io"];
    run.extend(flags.iter().map(String::as_str));
    run.extend([image, id, "sleep", "100000"]);
    let t0 = Instant::now();
    let out = t.daemon(cfg).ctr(&run);
    let e2e = t0.elapsed();
    let ended = SystemTime::now();
    if !out.success() {
        return Err(ctr_error("run -d", &out));
    }
    Ok(Launched {
        e2e,
        ended,
        task: None,
    })
}

/// `ctr run --rm` of one container (it runs `true`): its wall time.
fn run_rm(t: &Target, cfg: &Config, image: &str, id: &str) -> Result<Duration, String> {
    let d = t.daemon(cfg);
    let flags = create_flags(t, cfg, 0, id);
    let mut run: Vec<&str> = vec!["run", "--rm", "--null-io"];
    run.extend(flags.iter().map(String::as_str));
    run.extend([image, id, "true"]);
    let t0 = Instant::now();
    let out = d.ctr(&run);
    let took = t0.elapsed();
    if !out.success() {
        return Err(ctr_error("run --rm", &out));
    }
    Ok(took)
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
    /// What the idshift shim logged of each container's create.
    shim: Vec<ShimReport>,
    leaks: Vec<String>,
}

/// The shim-side phases of one create, in ms, as the idshift shim logs
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    pub userns: f64,
    pub rootfs: f64,
    /// Logged by shims that time the cgroup apart (else in init).
    pub cgroup: Option<f64>,
    pub init: f64,
    /// The whole shim-side create (`total N ms`), where the shim logs it.
    pub total: Option<f64>,
}

/// One create's line of the shim's log.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ShimReport {
    /// Mount syscalls of its rootfs: the shim's and the container's.
    mount_syscalls: u32,
    phases: Phases,
}

/// The number before " ms" after `key` in `text`.
fn ms_after(text: &str, key: &str) -> Option<f64> {
    let r = &text[text.find(key)? + key.len()..];
    let (v, rest) = r.split_once(' ')?;
    if !rest.starts_with("ms") {
        return None;
    }
    v.parse().ok()
}

/// Parses the shim's `created <id> (pid ..): userns <u> ms, rootfs <r> ms
/// (<s> strategy, <k> mount syscalls (...) in the shim, then 1 move_mount
/// inside ...)[, cgroup <c> ms], namespaces and init <i> ms[, host IDs
/// ..][, total <t> ms]` log line.
fn shim_report_of(log: &str, id: &str) -> Option<ShimReport> {
    let needle = format!("created {id} (pid");
    let line = log.lines().find(|l| l.contains(&needle))?;
    let rest = &line[line.find(&needle)?..];
    let after = &rest[rest.find(" strategy, ")? + " strategy, ".len()..];
    let k: u32 = after.split_whitespace().next()?.parse().ok()?;
    if !rest.contains(" in the shim") {
        return None;
    }
    let inside = u32::from(rest.contains("then 1 move_mount inside"));
    Some(ShimReport {
        mount_syscalls: k + inside,
        phases: Phases {
            userns: ms_after(rest, "): userns ")?,
            rootfs: ms_after(rest, ", rootfs ")?,
            cgroup: ms_after(rest, ", cgroup "),
            init: ms_after(rest, ", namespaces and init ")?,
            total: ms_after(rest, ", total "),
        },
    })
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
/// `settle` runs right before the launches (after the event subscription,
/// whose `ctr` processes must not run into them).
fn storm(
    t: &mut Target,
    cfg: &Config,
    image: &str,
    n: usize,
    tag: &str,
    settle: &mut dyn FnMut(),
) -> Result<Round, Error> {
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
    // Every launch's container record, as containerd stamps it.
    let creates = t_ref.daemon(cfg).container_creates()?;
    settle();
    let barrier = Barrier::new(n + 1);
    let finished = AtomicUsize::new(0);
    let mut launches: Vec<Launch> = std::thread::scope(|s| -> Result<Vec<Launch>, Error> {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (barrier, finished) = (&barrier, &finished);
                s.spawn(move || {
                    barrier.wait();
                    let result = launch(t_ref, cfg, image, id, i, tag);
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
    let ok: Vec<&str> = launches
        .iter()
        .filter(|l| l.result.is_ok())
        .map(|l| l.id.as_str())
        .collect();
    let created = creates.of(&ok, EVENT_TIMEOUT);
    drop(creates);
    for l in &mut launches {
        let Ok(done) = &mut l.result else { continue };
        match created.get(&l.id) {
            Some(at) => done.task = Some(done.ended.duration_since(*at).unwrap_or_default()),
            None => {
                l.result = Err(format!(
                    "containerd's /containers/create event of the container did not arrive within {} s of the launches' end",
                    EVENT_TIMEOUT.as_secs()
                ))
            }
        }
    }
    let running = host::read_mountinfo(needle)?;
    round.mountinfo_running = running.ours;
    round.mountinfo_peak = round.mountinfo_peak.max(running.lines);
    round.mountinfo_peak_ours = round.mountinfo_peak_ours.max(running.ours);
    round.memory = host::shim_memory(cfg.shim_binaries(), &id_set);
    round.launches = launches;
    let mut problems = guard.clean();
    drop(guard);
    // Nothing may stay: shims, mounts, ranges, run dirs.
    let deadline = Instant::now() + LEAK_TIMEOUT;
    loop {
        let mut leaks = t.daemon(cfg).leaks();
        let shims = host::shim_memory(cfg.shim_binaries(), &id_set).processes;
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
    if cfg.is_idshift() && t.daemon(cfg).log.is_some() {
        let log = t.daemon_mut(cfg).new_log();
        round.shim = round
            .launches
            .iter()
            .filter(|l| l.result.is_ok())
            .filter_map(|l| shim_report_of(&log, &l.id))
            .collect();
    }
    Ok(round)
}

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
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

/// Percentiles of each logged phase over a cell's creates.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub samples: usize,
    pub userns: Stats,
    pub rootfs: Stats,
    /// Where the shim logs the cgroup apart.
    pub cgroup: Option<Stats>,
    pub init: Stats,
    /// The shim's `total` (where logged), else `None`.
    pub total: Option<Stats>,
    /// userns + rootfs + cgroup + init per create: the logged phases'
    /// sum (what `total` adds to it is the rest of the create).
    pub sum: Stats,
}

impl PhaseStats {
    fn of(p: &[Phases]) -> Option<PhaseStats> {
        if p.is_empty() {
            return None;
        }
        let ms = |v: &dyn Fn(&Phases) -> Option<f64>| -> Option<Stats> {
            let d: Vec<Duration> = p
                .iter()
                .filter_map(v)
                .map(|x| Duration::from_secs_f64(x.max(0.0) / 1e3))
                .collect();
            (d.len() == p.len()).then(|| Stats::of(&d))
        };
        Some(PhaseStats {
            samples: p.len(),
            userns: ms(&|x| Some(x.userns))?,
            rootfs: ms(&|x| Some(x.rootfs))?,
            cgroup: ms(&|x| x.cgroup),
            init: ms(&|x| Some(x.init))?,
            total: ms(&|x| x.total),
            sum: ms(&|x| Some(x.userns + x.rootfs + x.cgroup.unwrap_or(0.0) + x.init))?,
        })
    }

    /// The whole shim-side create: `total` where logged, else the sum of
    /// the phases; and whether it is the logged total.
    pub fn create(&self) -> (&Stats, bool) {
        match &self.total {
            Some(t) => (t, true),
            None => (&self.sum, false),
        }
    }
}

/// Everything measured for one configuration in one (L, N) cell, over its
/// rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub config: Config,
    /// The containerd it ran on (`ctr version`'s server version).
    pub containerd: String,
    pub layers: usize,
    pub containers: usize,
    pub rounds: usize,
    pub launched: usize,
    pub succeeded: usize,
    /// Distinct errors and how many launches hit each.
    pub errors: BTreeMap<String, usize>,
    /// Task create to task start returned (no samples for a peer: one
    /// `ctr run`).
    pub task: Stats,
    /// Container create + task create + task start (`ctr run -d`).
    pub e2e: Stats,
    /// Mount syscalls per container (idshift configurations; none for runc
    /// and crun, whose mounts are not counted), min and max over containers.
    pub mount_syscalls_min: Option<u32>,
    pub mount_syscalls_max: Option<u32>,
    /// How many containers' counts were found in the log.
    pub mount_syscalls_logged: usize,
    /// The shim-side create phases the idshift shim logged (None: no
    /// line logged, e.g. the runc shim's).
    pub phases: Option<PhaseStats>,
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

fn summarize(
    cfg: &Config,
    containerd: &str,
    layers: usize,
    n: usize,
    rounds: &[Round],
    wall: Duration,
) -> Cell {
    let mut errors = BTreeMap::new();
    let (mut task, mut e2e, mut reads, mut shim) = (vec![], vec![], vec![], vec![]);
    let (mut added, mut peak, mut peak_ours, mut before) = (0f64, 0, 0, usize::MAX);
    let (mut procs, mut rss, mut pss, mut mem_rounds) = (0f64, 0f64, 0f64, 0usize);
    let mut leaks = Vec::new();
    let mut launched = 0;
    for r in rounds {
        launched += r.launches.len();
        let ok = r.launches.iter().filter(|l| l.result.is_ok()).count();
        for l in &r.launches {
            match &l.result {
                Ok(done) => {
                    task.extend(done.task);
                    e2e.push(done.e2e);
                }
                Err(e) => *errors.entry(e.clone()).or_insert(0) += 1,
            }
        }
        reads.extend(r.mountinfo_reads.iter().copied());
        shim.extend(r.shim.iter().copied());
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
    let syscalls: Vec<u32> = shim.iter().map(|r| r.mount_syscalls).collect();
    let phases: Vec<Phases> = shim.iter().map(|r| r.phases).collect();
    let rootfs: Vec<Duration> = phases
        .iter()
        .map(|p| Duration::from_secs_f64(p.rootfs / 1e3))
        .collect();
    Cell {
        config: cfg.clone(),
        containerd: containerd.to_string(),
        layers,
        containers: n,
        rounds: rounds.len(),
        launched,
        succeeded: e2e.len(),
        errors,
        task: Stats::of(&task),
        e2e: Stats::of(&e2e),
        mount_syscalls_min: syscalls.iter().min().copied(),
        mount_syscalls_max: syscalls.iter().max().copied(),
        mount_syscalls_logged: syscalls.len(),
        phases: PhaseStats::of(&phases),
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
    /// /proc/loadavg with the time (s since the start), sampled after a
    /// round when a minute or more passed since the last sample.
    pub loadavg_samples: Vec<(u64, String)>,
    /// Time spent, before each round and each `ctr run --rm`, waiting for
    /// the CPUs to be quiet ([`SETTLE_BUSY`] over [`SETTLE_WINDOW`], at
    /// most [`SETTLE_MAX`]): in all, and the longest single wait.
    #[serde(default)]
    pub settled_s: f64,
    #[serde(default)]
    pub settled_max_s: f64,
    pub options: Options,
    /// Each configuration: its name, what it launches, its containerd.
    pub configs: Vec<ConfigInfo>,
    pub cells: Vec<Cell>,
    /// `ctr run --rm` of one container (`--run-rm`).
    pub run_rm: Vec<RunRm>,
    pub goals: Vec<report::Goal>,
}

/// A configuration as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub name: String,
    pub label: String,
    pub containerd: String,
    /// How each container is launched.
    pub launch: String,
}

/// `ctr run --rm` of one container, `--run-rm` times, for one
/// configuration at one L.
#[derive(Debug, Clone, Serialize)]
pub struct RunRm {
    pub config: Config,
    pub layers: usize,
    pub launched: usize,
    pub wall: Stats,
    /// What the shim logged of these creates (idshift only).
    pub phases: Option<PhaseStats>,
    pub errors: BTreeMap<String, usize>,
    pub leaks: Vec<String>,
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

/// A round starts once the CPUs were at most this busy (0..1) over
/// [`SETTLE_WINDOW`], or after [`SETTLE_MAX`].
pub const SETTLE_BUSY: f64 = 0.15;
pub const SETTLE_WINDOW: Duration = Duration::from_millis(250);
pub const SETTLE_MAX: Duration = Duration::from_secs(30);

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `ctr run --rm` of one container of `cfg`, `k` times in turn with
/// the others (the caller rotates), at L = `layers`: one sample.
fn run_rm_once(
    t: &mut Target,
    cfg: &Config,
    image: &str,
    id: &str,
) -> (Result<Duration, String>, Option<ShimReport>, Vec<String>) {
    let _ = t.daemon_mut(cfg).new_log();
    let t_ref: &Target = t;
    let mut guard = RoundGuard {
        d: t_ref.daemon(cfg),
        ids: vec![id.to_string()],
        done: false,
    };
    let result = run_rm(t_ref, cfg, image, id);
    // A failed run may leave its container: removed (and reported) here.
    let leftover = t_ref
        .daemon(cfg)
        .ctr(&["containers", "ls", "-q"])
        .stdout
        .lines()
        .any(|l| l.trim() == id);
    let mut problems = Vec::new();
    if leftover {
        problems.extend(guard.clean());
        if result.is_ok() {
            problems.push(format!("ctr run --rm left container {id}"));
        }
    }
    guard.done = true;
    drop(guard);
    let shim = if result.is_ok() && cfg.is_idshift() && t.daemon(cfg).log.is_some() {
        shim_report_of(&t.daemon_mut(cfg).new_log(), id)
    } else {
        None
    };
    (result, shim, problems)
}

/// The L the `--run-rm` samples are taken at: the one closest to 60.
fn run_rm_layers(layers: &[usize]) -> Option<usize> {
    layers
        .iter()
        .copied()
        .min_by_key(|&l| ((l as i64 - 60).unsigned_abs(), l))
}

/// Runs the storm sweep; returns whether it was clean (every launch
/// succeeded, nothing leaked).
pub fn run(mut opts: Options, command: String) -> Result<bool, Error> {
    if !opts.configs_given {
        if opts.configs.iter().any(|c| c.kind == Kind::Crun)
            && (which("crun").is_none() || opts.address.is_some())
        {
            println!("note: crun is not installed or the containerd is not ours: the crun configurations are left out");
            opts.configs.retain(|c| c.kind != Kind::Crun);
        }
        if opts.configs.iter().any(|c| c.cd == Cd::V2) {
            if let Err(e) = Flavour::V2.bin_dir() {
                println!("note: the @2.x configurations are left out: {e}");
                opts.configs.retain(|c| c.cd != Cd::V2);
            } else if opts.address.is_some() {
                println!("note: --address: the @2.x configurations (a private containerd 2.x) are left out");
                opts.configs.retain(|c| c.cd != Cd::V2);
            }
        }
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
    let configs: Vec<ConfigInfo> = opts
        .configs
        .iter()
        .map(|c| ConfigInfo {
            name: c.name.clone(),
            label: c.label(),
            containerd: t.daemon(c).version.clone(),
            launch: format!(
                "ctr run -d --null-io {} IMAGE ID sleep 100000",
                create_flags(&t, c, 0, "GROUP").join(" ")
            ),
        })
        .collect();
    for c in &configs {
        println!("config {}: {} on {}", c.name, c.label, c.containerd);
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
        "ctr start-up + connect (`ctr version`, median of 9): {ctr_overhead_ms:.1} ms, included in every e2e and `ctr run --rm` time below"
    );
    println!(
        "storm: layers {:?}, containers {:?}, configurations {}, at least {} samples per cell (rounds interleaved round-robin); ctr run --rm x{} at L={:?}",
        opts.layers,
        opts.containers,
        opts.configs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        opts.min_samples,
        opts.run_rm,
        run_rm_layers(&opts.layers)
    );
    let rm_at = run_rm_layers(&opts.layers).filter(|_| opts.run_rm > 0);
    let total: usize = opts.layers.len()
        * opts.configs.len()
        * opts
            .containers
            .iter()
            .map(|&n| n * opts.rounds(n))
            .sum::<usize>()
        + rm_at.map_or(0, |_| opts.run_rm * opts.configs.len());
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
        loadavg_samples: vec![(0, loadavg())],
        settled_s: 0.0,
        settled_max_s: 0.0,
        options: opts.clone(),
        configs,
        cells: Vec::new(),
        run_rm: Vec::new(),
        goals: Vec::new(),
    };
    // Every round and every `ctr run --rm` starts on quiet CPUs: the clean-up
    // of the round before (containerd removing 100 snapshots, its GC) is not
    // measured as the next round's.
    let settle = |run: &mut Run| {
        let waited = host::settle(SETTLE_BUSY, SETTLE_WINDOW, SETTLE_MAX).as_secs_f64();
        run.settled_s += waited;
        run.settled_max_s = run.settled_max_s.max(waited);
    };
    let sample_load = |run: &mut Run, start: Instant| {
        let now = start.elapsed().as_secs();
        if run
            .loadavg_samples
            .last()
            .is_none_or(|(t, _)| now >= t + 60)
        {
            run.loadavg_samples.push((now, loadavg()));
        }
    };
    let images_dir = tempfile::Builder::new()
        .prefix("idshift-bench-images-")
        .tempdir_in("/var/tmp")?;
    let keys: BTreeSet<DaemonKey> = opts.configs.iter().map(DaemonKey::of).collect();
    let mut round_no = 0usize;
    'sweep: for &layers in &opts.layers {
        let image = format!("docker.io/library/idshift-bench:{layers}");
        progress.show(&format!("importing the {layers}-layer image"));
        for k in &keys {
            t.daemon_of(*k).import(images_dir.path(), &image, layers)?;
        }
        for &n in &opts.containers {
            let rounds = opts.rounds(n);
            let mut per_cfg: BTreeMap<Config, (Vec<Round>, Duration)> = BTreeMap::new();
            for r in 0..rounds {
                // Rotate the order so no configuration always goes first.
                let k = opts.configs.len();
                for j in 0..k {
                    let cfg = &opts.configs[(j + r + round_no) % k];
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        break 'sweep;
                    }
                    progress.show(&format!(
                        "L={layers} N={n} {} round {}/{rounds}",
                        cfg.name(),
                        r + 1
                    ));
                    let tag = format!("b{round_no}-{}", cfg.name().replace('@', "-"));
                    let t0 = Instant::now();
                    let mut settled = Duration::ZERO;
                    let round = storm(&mut t, cfg, &image, n, &tag, &mut || {
                        let s = Instant::now();
                        settle(&mut run);
                        settled += s.elapsed();
                    })?;
                    let e = per_cfg.entry(cfg.clone()).or_default();
                    e.0.push(round);
                    e.1 += t0.elapsed().saturating_sub(settled);
                    progress.done += n;
                    sample_load(&mut run, progress.start);
                }
                round_no += 1;
            }
            for cfg in &opts.configs {
                if let Some((rounds, wall)) = per_cfg.get(cfg) {
                    let version = t.daemon(cfg).version.clone();
                    run.cells
                        .push(summarize(cfg, &version, layers, n, rounds, *wall));
                }
            }
            run.duration_s = progress.start.elapsed().as_secs_f64();
            run.goals = report::goals(&run.cells, &run.run_rm);
            write_outputs(&run, &opts)?;
        }
        if rm_at == Some(layers) {
            let mut samples: BTreeMap<Config, (Vec<Duration>, Vec<Phases>, RunRm)> =
                BTreeMap::new();
            for r in 0..opts.run_rm {
                let k = opts.configs.len();
                for j in 0..k {
                    let cfg = &opts.configs[(j + r) % k];
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        break 'sweep;
                    }
                    progress.show(&format!(
                        "L={layers} ctr run --rm {} {}/{}",
                        cfg.name(),
                        r + 1,
                        opts.run_rm
                    ));
                    let id = format!("rm{r}-{}", cfg.name().replace('@', "-"));
                    settle(&mut run);
                    let (result, shim, problems) = run_rm_once(&mut t, cfg, &image, &id);
                    let e = samples.entry(cfg.clone()).or_insert_with(|| {
                        (
                            Vec::new(),
                            Vec::new(),
                            RunRm {
                                config: cfg.clone(),
                                layers,
                                launched: 0,
                                wall: Stats::default(),
                                phases: None,
                                errors: BTreeMap::new(),
                                leaks: Vec::new(),
                            },
                        )
                    });
                    e.2.launched += 1;
                    match result {
                        Ok(d) => e.0.push(d),
                        Err(err) => *e.2.errors.entry(err).or_insert(0) += 1,
                    }
                    e.1.extend(shim.map(|s| s.phases));
                    e.2.leaks.extend(problems);
                    progress.done += 1;
                }
            }
            for cfg in &opts.configs {
                if let Some((walls, phases, mut rr)) = samples.remove(cfg) {
                    rr.wall = Stats::of(&walls);
                    rr.phases = PhaseStats::of(&phases);
                    rr.leaks.extend(t.daemon(cfg).leaks());
                    run.run_rm.push(rr);
                }
            }
            sample_load(&mut run, progress.start);
            run.goals = report::goals(&run.cells, &run.run_rm);
            write_outputs(&run, &opts)?;
        }
        for k in &keys {
            let out = t.daemon_of(*k).ctr(&["images", "rm", &image]);
            if !out.success() {
                eprintln!("idshift-bench: ctr images rm {image}: {out:?}");
            }
        }
    }
    progress.end();
    run.loadavg_end = loadavg();
    run.loadavg_samples
        .push((progress.start.elapsed().as_secs(), loadavg()));
    run.complete = !INTERRUPTED.load(Ordering::SeqCst);
    run.duration_s = progress.start.elapsed().as_secs_f64();
    run.goals = report::goals(&run.cells, &run.run_rm);
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
    let clean = run
        .cells
        .iter()
        .all(|c| c.leaks.is_empty() && (!c.config.is_idshift() || c.succeeded == c.launched))
        && run
            .run_rm
            .iter()
            .all(|r| r.leaks.is_empty() && (!r.config.is_idshift() || r.errors.is_empty()));
    Ok(clean)
}

/// A cell of `name` at (L, N) whose launches took `e2e_ms` (and half of
/// that in their task), each create logged with `phases`.
#[cfg(test)]
pub(crate) fn test_cell(
    name: &str,
    layers: usize,
    n: usize,
    e2e_ms: &[u64],
    phases: Option<Phases>,
) -> Cell {
    let cfg = Config::builtin(name).expect("a built-in configuration");
    let launches = e2e_ms
        .iter()
        .enumerate()
        .map(|(i, &ms)| Launch {
            id: format!("c{i}"),
            result: Ok(Launched {
                e2e: Duration::from_millis(ms),
                ended: SystemTime::UNIX_EPOCH,
                task: Some(Duration::from_millis(ms / 2)),
            }),
        })
        .collect();
    let shim = phases
        .map(|p| {
            e2e_ms
                .iter()
                .map(|_| ShimReport {
                    mount_syscalls: 5,
                    phases: p,
                })
                .collect()
        })
        .unwrap_or_default();
    let round = Round {
        launches,
        shim,
        ..Round::default()
    };
    summarize(&cfg, "containerd test", layers, n, &[round], Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_syscalls_and_phases_from_the_shim_log() {
        let log = "time=x level=info msg=\"created b3-fd-1 (pid 4242): userns 1.8 ms, rootfs 2.2 ms (fd strategy, 4 mount syscalls (open_tree 1, mount_setattr 1, fsopen 1, fsmount 1, move_mount 0, mount 0, umount 0; fsconfig 53) in the shim, then 1 move_mount inside the container's own mount namespace), namespaces and init 21.8 ms\"\n\
                   msg=\"created b3-fd-10 (pid 4243): userns 1.8 ms, rootfs 9 ms (per-layer strategy, 202 mount syscalls (...) in the shim, then 1 move_mount inside the container's own mount namespace), cgroup 0.4 ms, namespaces and init 5.5 ms, host IDs 1-2, total 17.25 ms\"\n\
                   msg=\"created b3-fd-11 (pid 4244): userns 1.8 ms, rootfs 9 ms (per-layer strategy, 202 mount syscalls (...) in the shim, then 1 move_mount inside\"";
        let r = shim_report_of(log, "b3-fd-1").expect("b3-fd-1");
        assert_eq!(r.mount_syscalls, 5);
        assert_eq!(
            r.phases,
            Phases {
                userns: 1.8,
                rootfs: 2.2,
                cgroup: None,
                init: 21.8,
                total: None
            }
        );
        let r = shim_report_of(log, "b3-fd-10").expect("b3-fd-10");
        assert_eq!(r.mount_syscalls, 203);
        assert_eq!(
            r.phases,
            Phases {
                userns: 1.8,
                rootfs: 9.0,
                cgroup: Some(0.4),
                init: 5.5,
                total: Some(17.25)
            }
        );
        // A line without the init phase is not a create report.
        assert_eq!(shim_report_of(log, "b3-fd-11"), None);
        assert_eq!(shim_report_of(log, "b3-fd-2"), None);
        let p = PhaseStats::of(&[r.phases]).expect("phases");
        assert_eq!(
            p.create(),
            (&Stats::of(&[Duration::from_micros(17250)]), true)
        );
        assert!((p.sum.p50_ms - 16.7).abs() < 1e-9, "{p:?}");
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
        let names: Vec<&str> = o.configs.iter().map(Config::name).collect();
        assert_eq!(names, ["fd", "runc"]);
        assert_eq!(o.rounds(1), 3);
        assert_eq!(o.rounds(5), 1);
        let o = Options::parse(&args("--layers 2,3 --containers 4")).expect("parse");
        assert_eq!(
            (o.layers, o.containers, o.configs.len()),
            (vec![2, 3], vec![4], 9)
        );
        assert!(Options::parse(&args("--configs nope")).is_err());
        assert!(Options::parse(&args("--configs fd@1.7")).is_err());
        assert!(Options::parse(&args("--configs fd,fd")).is_err());
        assert!(Options::parse(&args("--layers 0")).is_err());
        // 2.x variants and the runc-userns peer.
        let o = Options::parse(&args("--configs fd@2.x,runc-userns@2.x")).expect("parse");
        assert_eq!(
            (o.configs[0].kind.clone(), o.configs[0].cd),
            (Kind::Fd, Cd::V2)
        );
        assert!(matches!(o.configs[1].kind, Kind::Peer(_)) && o.configs[1].cd == Cd::V2);
        assert!(!o.configs[1].is_idshift());
        // Peers: alone, they come with fd and runc on their containerd.
        let o = Options::parse(&[
            "--peer".to_string(),
            "mine@2.x=--runtime io.containerd.idshift.v2 --uidmap 0:{H}:65536".to_string(),
        ])
        .expect("parse");
        let names: Vec<&str> = o.configs.iter().map(Config::name).collect();
        assert_eq!(names, ["fd@2.x", "runc@2.x", "mine@2.x"]);
        let mine = &o.configs[2];
        assert!(matches!(mine.kind, Kind::Peer(_)) && mine.is_idshift());
        let Kind::Peer(flags) = &mine.kind else {
            panic!("{mine:?}")
        };
        assert_eq!(flags.len(), 4);
        for bad in ["x", "fd=--rm", "a b=--runtime x", "p=-d", "p@3=--runtime x"] {
            assert!(
                Options::parse(&["--peer".to_string(), bad.to_string()]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(peer_host_ids(0), 268435456);
        assert_eq!(peer_host_ids(2), 268435456 + 131072);
        assert_eq!(run_rm_layers(&[1, 10, 50, 100]), Some(50));
        assert_eq!(run_rm_layers(&[60, 100]), Some(60));
    }
}
