//! A private containerd per test: its own directory (root, state,
//! sockets, config, log), started as a child of the test, and everything it
//! made (tasks, shims, mounts, files) gone when it is dropped. The system's
//! containerd (Debian bookworm's 1.6) by default; 1.7 and 2.x from the
//! private prefixes `tests/install-containerd.sh` unpacks ([`Flavour`]).

use crate::process::{
    kill_if_matching, kill_processes_matching, remove_cgroups, run_with_timeout, unmount_under,
    CtrOutput,
};
use crate::{shim_dir, unique, Error, SHIM_BINARY};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the per-instance directories are made: a disk file system (ext4
/// here), as containerd's overlayfs snapshotter needs for its root.
const BASE_PARENT: &str = "/var/tmp";
/// How long `containerd` may take to answer `ctr version`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `ctr` of a test may run before it is killed.
const CTR_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `ctr` of the clean-up may run.
const CLEANUP_CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd has to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The CRI plugin, disabled unless asked for.
const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// containerd 2.x's CRI runtime half (config version 3): the runtimes,
/// CNI and `restrict_oom_score_adj`.
const CRI_RUNTIME_PLUGIN: &str = "io.containerd.cri.v1.runtime";
/// containerd 2.x's CRI image half: the pinned sandbox image.
const CRI_IMAGES_PLUGIN: &str = "io.containerd.cri.v1.images";
/// containerd 1.7's and 2.x's NRI plugin (its socket, `/var/run/nri`, would
/// be shared by every private containerd): always disabled.
const NRI_PLUGIN: &str = "io.containerd.nri.v1.nri";
/// Where `tests/install-containerd.sh` unpacks other containerd versions
/// (`<cache>/<flavour>/usr/bin`), unless `IDSHIFT_CONTAINERD_CACHE` says.
const CONTAINERD_CACHE: &str = "/var/cache/idshift-containerd";

/// In [`ContainerdOptions::extra_config`]: the instance's idshift config.
pub const IDSHIFT_CONFIG_TOKEN: &str = "@IDSHIFT_CONFIG@";

/// Which containerd a [`Containerd`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// The system's (`containerd` and `ctr` on the PATH: Debian bookworm's
    /// 1.6), config version 2.
    #[default]
    V1_6,
    /// Debian trixie's 1.7 from the private prefix, config version 2.
    V1_7,
    /// Debian sid's 2.x from the private prefix, config version 3 (CRI
    /// split into `io.containerd.cri.v1.runtime`/`.images` and
    /// `io.containerd.grpc.v1.cri`).
    V2,
}

thread_local! {
    /// The flavour a test thread runs on ([`Flavour::run`]).
    static CURRENT: std::cell::Cell<Flavour> = const { std::cell::Cell::new(Flavour::V1_6) };
}

impl Flavour {
    /// Every flavour the tests know.
    pub const ALL: [Flavour; 3] = [Flavour::V1_6, Flavour::V1_7, Flavour::V2];

    /// The flavour of this thread's test: what [`Containerd::start`] runs
    /// unless its options name one (1.6 outside [`Flavour::run`]).
    pub fn current() -> Flavour {
        CURRENT.with(std::cell::Cell::get)
    }

    /// Runs `test` with this flavour as [`Flavour::current`] (restored
    /// after, also when `test` panics): every [`Containerd`] it starts
    /// without naming a flavour is this one.
    pub fn run<R>(self, test: impl FnOnce() -> R) -> R {
        struct Restore(Flavour);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self)));
        test()
    }

    /// `1.6`, `1.7`, `2.x` (the install script's names).
    pub fn name(self) -> &'static str {
        match self {
            Flavour::V1_6 => "1.6",
            Flavour::V1_7 => "1.7",
            Flavour::V2 => "2.x",
        }
    }

    /// containerd's config version for it.
    pub fn config_version(self) -> u32 {
        match self {
            Flavour::V1_6 | Flavour::V1_7 => 2,
            Flavour::V2 => 3,
        }
    }

    /// Whether it is a 2.x (config version 3, bootstrap on the shim's
    /// stdin, rootfs mounts with `uidmap=`/`gidmap=`).
    pub fn is_v2(self) -> bool {
        self == Flavour::V2
    }

    /// The directory holding its `containerd`, `ctr` and
    /// `containerd-shim-runc-v2`: `None` for the system's (on the PATH).
    /// An error naming the install script when it is not installed.
    pub fn bin_dir(self) -> Result<Option<PathBuf>, Error> {
        if self == Flavour::V1_6 {
            return Ok(None);
        }
        let cache = std::env::var_os("IDSHIFT_CONTAINERD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CONTAINERD_CACHE));
        let dir = cache.join(self.name()).join("usr/bin");
        if !dir.join("containerd").is_file() || !dir.join("ctr").is_file() {
            return Err(format!(
                "containerd {} is not installed in {} (run `tests/install-containerd.sh {}`, \
                 which `make test` runs)",
                self.name(),
                dir.display(),
                self.name()
            )
            .into());
        }
        Ok(Some(dir))
    }
}

/// How to start a [`Containerd`].
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// A directory put first on containerd's `PATH`, so that it finds the
    /// `containerd-shim-idshift-v2` in it (which must be there).
    pub shim_dir: Option<PathBuf>,
    /// Keep the CRI plugin (disabled by default), with
    /// `restrict_oom_score_adj = true`.
    pub cri: bool,
    /// TOML appended verbatim to containerd's config. It must not repeat a
    /// table the harness writes (`[grpc]`, `[ttrpc]`, `[debug]`,
    /// `[plugins."io.containerd.internal.v1.opt"]` and, with `cri`,
    /// `[plugins."io.containerd.grpc.v1.cri"]`, its `.cni` and its runc
    /// runtime, the default, which a config naming any runtime must
    /// repeat; on 2.x `[plugins."io.containerd.cri.v1.runtime"]`, its
    /// `.cni` and runc runtime and
    /// `[plugins."io.containerd.cri.v1.images".pinned_images]`); other
    /// sub-tables of them are fine, e.g. a CRI runtime. `@IDSHIFT_CONFIG@`
    /// in it becomes the path of this instance's idshift config file (e.g.
    /// for a runtime's `ConfigPath`).
    pub extra_config: String,
    /// TOML appended to this instance's idshift config file (whose path the
    /// shims get in `IDSHIFT_CONFIG`; it always sets a private `state_dir`
    /// and `run_dir`).
    pub idshift_toml: String,
    /// With `cri`: the CRI plugin's `sandbox_image` (the pause image; import
    /// it into the `k8s.io` namespace under this name).
    pub sandbox_image: Option<String>,
    /// With `cri`: a CNI conflist written to [`Containerd::cni_conf_dir`]
    /// before containerd starts (the plugins are the host's,
    /// [`crate::cni_bin_dir`]).
    pub cni_conflist: Option<String>,
    /// Extra environment of the containerd process (and so of the shims it
    /// starts), e.g. the shim's test-only `IDSHIFT_TEST_PAUSE`.
    pub env: Vec<(String, String)>,
    /// Which containerd: `None` for [`Flavour::current`] (the system's 1.6
    /// unless the test runs in [`Flavour::run`]).
    pub flavour: Option<Flavour>,
    /// A process whose pid and mount namespaces containerd runs in
    /// (through `nsenter -t <pid> --pid --mount`, whose child it is), e.g.
    /// the init of a pid namespace with its own `/proc`: the shims and their
    /// containers get pids of that namespace, whose `ns_last_pid` a test
    /// can set to force pid reuse.
    pub namespaces_of: Option<u32>,
}

impl ContainerdOptions {
    /// The options of an idshift test: the built shim first on the PATH and
    /// `idshift_toml` added to its config.
    pub fn idshift(idshift_toml: &str) -> Self {
        ContainerdOptions {
            shim_dir: Some(shim_dir()),
            idshift_toml: idshift_toml.to_string(),
            ..Default::default()
        }
    }

    /// These options on containerd `flavour`.
    pub fn on(self, flavour: Flavour) -> Self {
        ContainerdOptions {
            flavour: Some(flavour),
            ..self
        }
    }
}

/// `Containerd::start("...")`: [`ContainerdOptions::idshift`].
impl From<&str> for ContainerdOptions {
    fn from(idshift_toml: &str) -> Self {
        ContainerdOptions::idshift(idshift_toml)
    }
}

/// A TOML basic string holding `s` (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A private containerd, stopped and cleaned up on drop (also when the test
/// panics): its tasks killed and deleted, its containers deleted, the daemon
/// stopped, every process mentioning its directory killed, every mount under
/// it detached and the directory removed.
#[derive(Debug)]
pub struct Containerd {
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    address: PathBuf,
    ttrpc_address: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The environment containerd is started with (again on a restart).
    daemon_env: Vec<(String, String)>,
    /// [`ContainerdOptions::namespaces_of`].
    namespaces_of: Option<u32>,
    flavour: Flavour,
    /// Its `containerd` and `ctr` binaries.
    containerd_bin: PathBuf,
    ctr_bin: PathBuf,
    /// The idshift config file the shims of this containerd read.
    pub idshift_config: PathBuf,
}

impl Containerd {
    /// Starts `containerd --config <base>/config.toml` in a fresh directory
    /// `/var/tmp/idshift-e2e-<unique>` and waits (30 s at most) until `ctr
    /// version` gets an answer from it.
    ///
    /// Takes a [`ContainerdOptions`], or a `&str` for the options of an
    /// idshift test ([`ContainerdOptions::idshift`]).
    pub fn start(opts: impl Into<ContainerdOptions>) -> Result<Containerd, Error> {
        let mut opts = opts.into();
        let flavour = *opts.flavour.get_or_insert_with(Flavour::current);
        let bin_dir = flavour.bin_dir()?;
        if let Some(dir) = &opts.shim_dir {
            if !dir.join(SHIM_BINARY).exists() {
                return Err(format!(
                    "{SHIM_BINARY} is not built in {} (run `cargo build --workspace --bins`)",
                    dir.display()
                )
                .into());
            }
        }
        let base = PathBuf::from(BASE_PARENT).join(unique("idshift-e2e"));
        std::fs::create_dir(&base)?;
        let mut c = Containerd {
            root: base.join("root"),
            state: base.join("state"),
            address: base.join("containerd.sock"),
            ttrpc_address: base.join("containerd.sock.ttrpc"),
            config: base.join("config.toml"),
            log_path: base.join("containerd.log"),
            idshift_config: base.join("idshift.toml"),
            base,
            child: None,
            daemon_env: Vec::new(),
            namespaces_of: opts.namespaces_of,
            flavour,
            containerd_bin: bin_dir
                .as_ref()
                .map_or_else(|| "containerd".into(), |d| d.join("containerd")),
            ctr_bin: bin_dir
                .as_ref()
                .map_or_else(|| "ctr".into(), |d| d.join("ctr")),
        };
        // From here on, a failure is cleaned up by Drop.
        std::fs::write(&c.config, c.containerd_toml(&opts))?;
        if let Some(conflist) = &opts.cni_conflist {
            std::fs::create_dir_all(c.cni_conf_dir())?;
            std::fs::write(c.cni_conf_dir().join("10-idshift-test.conflist"), conflist)?;
        }
        std::fs::write(
            &c.idshift_config,
            format!(
                "state_dir = {}\nrun_dir = {}\n{}\n",
                toml_str(&c.base.join("idshift-state").to_string_lossy()),
                toml_str(&c.base.join("idshift-run").to_string_lossy()),
                opts.idshift_toml
            ),
        )?;
        // The caller's PATH, and the usual directories it may lack (runc is
        // in /usr/sbin).
        let mut system_path = std::env::var("PATH").unwrap_or_default();
        for dir in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            if !system_path.split(':').any(|d| d == dir) {
                if !system_path.is_empty() {
                    system_path.push(':');
                }
                system_path.push_str(dir);
            }
        }
        // The flavour's own directory before the system's (its runc shim);
        // the idshift shim before both.
        if let Some(dir) = &bin_dir {
            system_path = format!("{}:{system_path}", dir.display());
        }
        let path = match &opts.shim_dir {
            Some(dir) => format!("{}:{system_path}", dir.display()),
            None => system_path,
        };
        c.daemon_env = vec![
            ("PATH".into(), path),
            (
                "IDSHIFT_CONFIG".into(),
                c.idshift_config.display().to_string(),
            ),
        ];
        c.daemon_env.extend(opts.env.iter().cloned());
        c.spawn_daemon()?;
        Ok(c)
    }

    /// Starts the containerd process (its log appended to) and waits until
    /// `ctr version` gets an answer.
    fn spawn_daemon(&mut self) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let c = self;
        let mut cmd = match c.namespaces_of {
            None => Command::new(&c.containerd_bin),
            Some(pid) => {
                let mut cmd = Command::new("nsenter");
                cmd.args(["-t", &pid.to_string(), "--pid", "--mount", "--"])
                    .arg(&c.containerd_bin);
                cmd
            }
        };
        c.child = Some(
            cmd.arg("--config")
                .arg(&c.config)
                .envs(c.daemon_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("spawning containerd: {e}"))?,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                c.child = None;
                return Err(format!(
                    "containerd exited ({st}) while starting; its log ends with:\n{}",
                    c.log_tail(60)
                )
                .into());
            }
            // ctr waits 10 s for a socket that is not there yet.
            let probe = if c.address.exists() {
                c.ctr_timeout(
                    "default",
                    &["--connect-timeout", "2s", "version"],
                    Duration::from_secs(10),
                )
            } else {
                CtrOutput {
                    code: None,
                    stdout: String::new(),
                    stderr: format!("{} does not exist yet", c.address.display()),
                }
            };
            if probe.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer within {} s (last ctr version: {probe:?}); \
                     its log ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    c.log_tail(60)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the containerd process with `signal` (e.g. `SIGTERM` for a
    /// graceful stop, `SIGKILL`) and waits (10 s at most) for it to exit; the
    /// shims and their tasks are left running. [`Containerd::start_again`]
    /// starts it again; until then `ctr` cannot reach it.
    pub fn stop_with(&mut self, signal: rustix::process::Signal) -> Result<(), Error> {
        let pid = self.daemon_pid();
        let mut child = self.child.take().ok_or("containerd is not running")?;
        let pid = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
            .ok_or("containerd's pid")?;
        rustix::process::kill_process(pid, signal)
            .map_err(|e| format!("signalling containerd: {e}"))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                // Its sockets are in the base dir; a killed one leaves them.
                for sock in [&self.address, &self.ttrpc_address] {
                    let _ = std::fs::remove_file(sock);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("containerd did not exit within {STOP_TIMEOUT:?} of {signal:?}").into())
    }

    /// Starts containerd again after [`Containerd::stop_with`]: same config,
    /// root, state, sockets and environment (it finds the running shims in
    /// its state dir).
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.daemon_running() {
            return Err("containerd is still running".into());
        }
        self.spawn_daemon()
    }

    /// [`Containerd::stop_with`] then [`Containerd::start_again`].
    pub fn restart(&mut self, signal: rustix::process::Signal) -> Result<(), Error> {
        self.stop_with(signal)?;
        self.start_again()
    }

    /// A containerd namespace of this instance alone (its base dir's name):
    /// [`Containerd::leaks`] also looks for cgroups left in it.
    pub fn namespace(&self) -> String {
        self.base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "idshift-e2e".into())
    }

    /// Cgroups left in [`Containerd::namespace`]: sub-directories of
    /// `<controller root>/<ns>` and `<controller root>/idshift/<ns>` (ctr's
    /// default `cgroupsPath` is `/<ns>/<id>`, idshift's `/idshift/<ns>/<id>`;
    /// the namespace directory itself is left, as runc leaves it).
    pub fn cgroup_leaks(&self) -> Vec<String> {
        let ns = self.namespace();
        let roots = crate::process::cgroup_roots();
        let mut leaks = Vec::new();
        for root in roots {
            for dir in [root.join(&ns), root.join("idshift").join(&ns)] {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        leaks.push(format!("cgroup {}", e.path().display()));
                    }
                }
            }
        }
        leaks
    }

    fn containerd_toml(&self, opts: &ContainerdOptions) -> String {
        let p = |p: &Path| toml_str(&p.to_string_lossy());
        let flavour = self.flavour;
        let v2 = flavour.is_v2();
        let mut disabled = Vec::new();
        if flavour != Flavour::V1_6 {
            disabled.push(NRI_PLUGIN);
        }
        if !opts.cri {
            disabled.push(CRI_PLUGIN);
            if v2 {
                disabled.extend([CRI_RUNTIME_PLUGIN, CRI_IMAGES_PLUGIN]);
            }
        }
        let disabled: Vec<String> = disabled.into_iter().map(toml_str).collect();
        let mut t = format!(
            "# Written by idshift-tests for one test's private containerd {flavour}.\n\
             version = {version}\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [{disabled}]\n\
             \n\
             [grpc]\n  address = {grpc}\n\
             \n\
             [ttrpc]\n  address = {ttrpc}\n\
             \n\
             [debug]\n  level = \"debug\"\n",
            flavour = flavour.name(),
            version = flavour.config_version(),
            disabled = disabled.join(", "),
            root = p(&self.root),
            state = p(&self.state),
            grpc = p(&self.address),
            ttrpc = p(&self.ttrpc_address),
        );
        // The opt plugin (and CRI's CNI config watcher) would make their
        // directories on the host: private ones instead.
        t.push_str(&format!(
            "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
            p(&self.base.join("opt"))
        ));
        if opts.cri {
            let conf = p(&self.cni_conf_dir());
            let bin = p(&crate::cni_bin_dir());
            if v2 {
                // containerd 2.x's default CRI config otherwise (README's
                // snippet adds the idshift runtime to the same tables).
                let sandbox_image = opts
                    .sandbox_image
                    .as_deref()
                    .map(|i| {
                        format!(
                            "[plugins.{}.pinned_images]\n  sandbox = {}\n",
                            toml_str(CRI_IMAGES_PLUGIN),
                            toml_str(i)
                        )
                    })
                    .unwrap_or_default();
                t.push_str(&format!(
                    "\n{sandbox_image}\
                     [plugins.{rt}]\n  restrict_oom_score_adj = true\n\
                     [plugins.{rt}.cni]\n  conf_dir = {conf}\n  bin_dirs = [{bin}]\n\
                     [plugins.{rt}.containerd.runtimes.runc]\n  \
                     runtime_type = \"io.containerd.runc.v2\"\n",
                    rt = toml_str(CRI_RUNTIME_PLUGIN),
                ));
            } else {
                let sandbox_image = opts
                    .sandbox_image
                    .as_deref()
                    .map(|i| format!("  sandbox_image = {}\n", toml_str(i)))
                    .unwrap_or_default();
                t.push_str(&format!(
                    "\n[plugins.{cri}]\n  restrict_oom_score_adj = true\n{sandbox_image}\
                     [plugins.{cri}.cni]\n  conf_dir = {conf}\n  bin_dir = {bin}\n\
                     [plugins.{cri}.containerd.runtimes.runc]\n  \
                     runtime_type = \"io.containerd.runc.v2\"\n",
                    cri = toml_str(CRI_PLUGIN),
                ));
            }
        }
        if !opts.extra_config.is_empty() {
            t.push('\n');
            t.push_str(
                &opts
                    .extra_config
                    .replace(IDSHIFT_CONFIG_TOKEN, &self.idshift_config.to_string_lossy()),
            );
            t.push('\n');
        }
        t
    }

    /// Which containerd this is.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Its `ctr` (the flavour's).
    pub fn ctr_path(&self) -> &Path {
        &self.ctr_bin
    }

    /// This instance's directory (everything it makes is inside).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// containerd's ttrpc socket (the shims' `TTRPC_ADDRESS`).
    pub fn ttrpc_address(&self) -> &Path {
        &self.ttrpc_address
    }

    /// containerd's `root` (content, metadata, snapshots).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's `state` (bundles of the tasks, sockets).
    pub fn containerd_state(&self) -> &Path {
        &self.state
    }

    /// The CNI config dir of the CRI plugin (`[plugins."io.containerd.grpc.v1.cri".cni]
    /// conf_dir`, watched: a conflist written there is taken); the CNI
    /// plugins are the host's ([`crate::cni_bin_dir`]).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni").join("net.d")
    }

    /// containerd's config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The pid of the containerd process (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.daemon_pid()
    }

    /// The containerd process: our child, or nsenter's
    /// ([`ContainerdOptions::namespaces_of`]), which exits with it.
    fn daemon_pid(&self) -> Option<u32> {
        let child = self.child.as_ref().map(Child::id)?;
        if self.namespaces_of.is_none() {
            return Some(child);
        }
        std::fs::read_to_string(format!("/proc/{child}/task/{child}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The idshift shims' state dir (their ID range allocations).
    pub fn state_dir(&self) -> PathBuf {
        self.base.join("idshift-state")
    }

    /// The idshift shims' run dir.
    pub fn run_dir(&self) -> PathBuf {
        self.base.join("idshift-run")
    }

    /// Everything containerd (and the shims, whose logs containerd relays)
    /// wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`Containerd::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `ctr --address <sock> --namespace <namespace> <args>`, not started
    /// (for a caller that spawns it and talks to it).
    pub fn ctr_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// Runs `ctr` against this containerd (killed after 120 s); `ctr run`'s
    /// code is the task's exit code.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> CtrOutput {
        self.ctr_timeout(namespace, args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr`] with a timeout of the caller's.
    pub fn ctr_timeout(&self, namespace: &str, args: &[&str], timeout: Duration) -> CtrOutput {
        run_with_timeout(self.ctr_command(namespace, args), timeout)
    }

    /// SIGKILLs the tasks `ids`, then deletes each task (once it has stopped)
    /// and its container.
    pub fn kill_and_remove(&self, namespace: &str, ids: &[&str]) -> Result<(), Error> {
        for id in ids {
            let out = self.ctr(namespace, &["task", "kill", "-s", "SIGKILL", id]);
            if !out.success() {
                return Err(format!("killing {id}: {out:?}").into());
            }
        }
        for id in ids {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.ctr(namespace, &["task", "delete", id]).success() {
                if Instant::now() > deadline {
                    return Err(format!("task {id} could not be deleted within 10 s").into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let out = self.ctr(namespace, &["containers", "rm", id]);
            if !out.success() {
                return Err(format!("removing container {id}: {out:?}").into());
            }
        }
        Ok(())
    }

    /// Builds (in [`Containerd::base`]) and imports an image of `layers`
    /// layers named `name` ([`crate::build_image`], [`crate::import_image`]).
    pub fn import_image(&self, namespace: &str, name: &str, layers: usize) -> Result<(), Error> {
        let archive = crate::build_image(&self.base, name, layers)?;
        let res = crate::import_image(self, namespace, &archive, name);
        let _ = std::fs::remove_file(&archive);
        res
    }

    /// Host ID ranges still allocated by this containerd's idshift shims.
    pub fn live_ranges(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(self.state_dir().join("ranges.json")) else {
            return 0;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("owners").and_then(|o| o.as_object()).map(|o| o.len()))
            .unwrap_or(0)
    }

    /// Everything this containerd's idshift shims may have left behind
    /// while it runs: mounts, processes, ID ranges, per-container run dirs.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let me = self.base.display().to_string();
        for l in crate::host_mountinfo()
            .iter()
            .filter(|l| l.contains(&me) && !l.contains("/root/io.containerd"))
        {
            leaks.push(format!("mount: {l}"));
        }
        for (pid, cmd) in crate::processes_matching(&self.needle()) {
            // containerd, and the nsenter it runs under in a pid namespace.
            let daemon = format!("{} --config", self.containerd_bin.display());
            let is_daemon = cmd.starts_with(&daemon)
                || (cmd.starts_with("nsenter -t ") && cmd.contains(&daemon));
            if !is_daemon {
                leaks.push(format!("process {pid}: {cmd}"));
            }
        }
        if self.live_ranges() > 0 {
            leaks.push(format!("{} ID ranges still allocated", self.live_ranges()));
        }
        if let Ok(nss) = std::fs::read_dir(self.run_dir()) {
            for ns in nss.flatten().filter(|e| e.path().is_dir()) {
                for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    if c.path().is_dir() && c.file_name() != "tmp" {
                        leaks.push(format!("run dir {}", c.path().display()));
                    }
                }
            }
        }
        leaks.extend(self.cgroup_leaks());
        leaks
    }

    /// ctr's default spec (`ctr oci spec`) for the bundle-less root `rootfs`,
    /// running `/bin/sh -c script` with `PATH=/bin` and no terminal.
    pub fn oci_spec(&self, namespace: &str, rootfs: &Path, script: &str) -> serde_json::Value {
        let out = self.ctr(namespace, &["oci", "spec"]);
        let mut spec: serde_json::Value =
            serde_json::from_str(&out.ok().stdout).expect("ctr oci spec is JSON");
        spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
        spec
    }

    /// `ctr run --rm --config <spec>` under `runtime` (a `--runtime=` flag),
    /// as a new container whose id (returned) starts with `prefix` and whose
    /// cgroup is `/<namespace>/<id>`.
    pub fn run_spec(
        &self,
        namespace: &str,
        runtime: &str,
        prefix: &str,
        spec: &serde_json::Value,
    ) -> (String, CtrOutput) {
        let id = crate::unique(prefix);
        let mut spec = spec.clone();
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{namespace}/{id}"));
        let path = self.base().join(format!("{id}.json"));
        std::fs::write(&path, spec.to_string()).expect("write spec");
        let p = path.display().to_string();
        let out = self.ctr(namespace, &["run", "--rm", "--config", &p, runtime, &id]);
        (id, out)
    }

    /// Runs `run` with idshift's `ctr --runtime` flag, then with the runc
    /// shim's ([`crate::IDSHIFT_RUNTIME`], [`crate::RUNC_RUNTIME`]); both
    /// must give the same exit code and output. Returns idshift's.
    pub fn same_under_idshift_and_runc(&self, run: impl Fn(&str) -> CtrOutput) -> CtrOutput {
        let ours = run(crate::IDSHIFT_RUNTIME);
        let runc = run(crate::RUNC_RUNTIME);
        assert_eq!(
            (ours.code, &ours.stdout, &ours.stderr),
            (runc.code, &runc.stdout, &runc.stderr),
            "idshift (left) and runc (right) differ\n{}",
            self.log_tail(40)
        );
        ours
    }

    /// Panics, with the leaks and containerd's log, unless [`Containerd::leaks`]
    /// finds nothing within `within` (shims exit asynchronously after the
    /// last delete).
    pub fn assert_no_leaks(&self, within: Duration) {
        let leaks = self.leaks_within(within);
        assert!(
            leaks.is_empty(),
            "leaks: {leaks:#?}\n{}",
            self.log_tail(200)
        );
    }

    /// [`Containerd::leaks`] once nothing is left, or what is still left
    /// after `within` (a shim exits asynchronously after containerd's last
    /// delete or shutdown).
    pub fn leaks_within(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() || Instant::now() >= deadline {
                return leaks;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes those of `sockets` that nobody serves any more: the ttrpc
    /// sockets of shims a test SIGKILLed whose `delete` does not remove them
    /// (containerd's runc shim leaves its socket in /run/containerd/s after
    /// a crash; take them with [`Containerd::shim_sockets`] before the kill).
    /// Returns what could not be removed.
    pub fn remove_dead_sockets(&self, sockets: &[PathBuf]) -> Vec<String> {
        sockets
            .iter()
            .filter_map(|s| {
                remove_dead_socket(s)
                    .err()
                    .map(|e| format!("{}: {e}", s.display()))
            })
            .collect()
    }

    /// What the command line of a process of this instance contains: the
    /// base directory and a slash (containerd's `--config`, the shims'
    /// `-address`).
    /// The ttrpc sockets of this instance's shims, from the `address` file
    /// containerd keeps in each task bundle.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let tasks = self.state.join("io.containerd.runtime.v2.task");
        let mut sockets = Vec::new();
        for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if let Ok(a) = std::fs::read_to_string(task.path().join("address")) {
                    let path = PathBuf::from(a.trim().trim_start_matches("unix://"));
                    if path.is_absolute() && !sockets.contains(&path) {
                        sockets.push(path);
                    }
                }
            }
        }
        sockets
    }

    fn needle(&self) -> String {
        format!("{}/", self.base.display())
    }

    fn daemon_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn cleanup_ctr(&self, namespace: &str, args: &[&str]) -> CtrOutput {
        let mut full = vec!["--connect-timeout", "5s"];
        full.extend_from_slice(args);
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .args(&full);
        run_with_timeout(cmd, CLEANUP_CTR_TIMEOUT)
    }

    /// Kills and deletes every task and deletes every container in every
    /// namespace; returns pidfds of the tasks' processes (to SIGKILL any
    /// that survive) and what went wrong.
    fn remove_tasks_and_containers(&self, problems: &mut Vec<String>) -> Vec<OwnedFd> {
        let mut pidfds = Vec::new();
        let nss = self.cleanup_ctr("default", &["namespaces", "ls", "-q"]);
        if !nss.success() {
            problems.push(format!("ctr namespaces ls: {nss:?}"));
        }
        for ns in nss.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // TASK PID STATUS
            let tasks: Vec<(String, i32)> = self
                .cleanup_ctr(ns, &["tasks", "ls"])
                .stdout
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let id = f.next()?.to_string();
                    let pid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    Some((id, pid))
                })
                .collect();
            for (_, pid) in &tasks {
                if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                    if let Ok(fd) =
                        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    {
                        pidfds.push(fd);
                    }
                }
            }
            for (id, _) in &tasks {
                // Fails for a task that is not running: delete -f copes.
                let _ = self.cleanup_ctr(ns, &["tasks", "kill", "--all", "-s", "SIGKILL", id]);
            }
            for (id, _) in &tasks {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let out = self.cleanup_ctr(ns, &["tasks", "delete", "--force", id]);
                    if out.success() || out.stderr.contains("not found") {
                        break;
                    }
                    if Instant::now() > deadline {
                        problems.push(format!("ctr -n {ns} tasks delete --force {id}: {out:?}"));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let containers = self.cleanup_ctr(ns, &["containers", "ls", "-q"]);
            for id in containers
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                let out = self.cleanup_ctr(ns, &["containers", "delete", id]);
                if !out.success() {
                    problems.push(format!("ctr -n {ns} containers delete {id}: {out:?}"));
                }
            }
        }
        pidfds
    }

    /// The `linux.cgroupsPath` of every task bundle still in the state dir
    /// (a task that was never deleted: containerd died, or its delete
    /// failed).
    fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        let tasks = self.state.join("io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let Ok(text) = std::fs::read(bundle.path().join("config.json")) else {
                    continue;
                };
                let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
                    continue;
                };
                if let Some(cg) = spec["linux"]["cgroupsPath"].as_str() {
                    // A systemd slice:prefix:name is systemd's to remove.
                    let rel = cg.trim_start_matches('/');
                    if !rel.is_empty() && !cg.contains(':') && !rel.split('/').any(|c| c == "..") {
                        paths.push(PathBuf::from(rel));
                    }
                }
            }
        }
        paths
    }

    /// SIGTERM, then (after 10 s) SIGKILL, and reap.
    fn stop_daemon(&mut self, problems: &mut Vec<String>) {
        let daemon = self.daemon_pid();
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(st)) = child.try_wait() {
            problems.push(format!("containerd had exited by itself ({st})"));
            return;
        }
        if let Some(pid) = daemon
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        problems.push(format!(
            "containerd ignored SIGTERM for {} s: SIGKILLed",
            STOP_TIMEOUT.as_secs()
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The default root of the runc shim's runc (`<root>/<namespace>/<id>`),
/// shared by every containerd.
const RUNC_ROOT: &str = "/run/containerd/runc";

/// Removes runc's state of this instance's containers that were never
/// deleted (their state.json names a bundle in the base dir: `needle`).
fn remove_runc_state(needle: &str, problems: &mut Vec<String>) {
    for ns in std::fs::read_dir(RUNC_ROOT).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let Ok(state) = std::fs::read(c.path().join("state.json")) else {
                continue;
            };
            if String::from_utf8_lossy(&state).contains(needle) {
                if let Err(e) = std::fs::remove_dir_all(c.path()) {
                    problems.push(format!("removing {}: {e}", c.path().display()));
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        let sockets = self.shim_sockets();
        let pidfds = if self.daemon_running() {
            self.remove_tasks_and_containers(&mut problems)
        } else {
            Vec::new()
        };
        self.stop_daemon(&mut problems);
        let mut cgroups = self.leftover_cgroups();
        // Anything left in this instance's own namespace, then the
        // namespace's directories themselves.
        let ns = PathBuf::from(self.namespace());
        for root in crate::process::cgroup_roots() {
            for dir in [ns.clone(), Path::new("idshift").join(&ns)] {
                for e in std::fs::read_dir(root.join(&dir))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if e.path().is_dir() {
                        cgroups.push(dir.join(e.file_name()));
                    }
                }
            }
        }
        cgroups.sort();
        cgroups.dedup();
        // Processes left in them (a shim killed and never cleaned up after).
        for root in crate::process::cgroup_roots() {
            for cg in &cgroups {
                let procs = std::fs::read_to_string(root.join(cg).join("cgroup.procs"));
                for pid in procs.iter().flat_map(|p| p.lines()) {
                    if let Some(pid) = pid
                        .trim()
                        .parse()
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
        }
        cgroups.push(ns.clone());
        cgroups.push(Path::new("idshift").join(&ns));
        // Shims (their -address is in the base dir) and anything else of ours;
        // the sockets they listen on are removed below too (a shim whose
        // bundle containerd removed is in no `address` file).
        let needle = self.needle();
        let pids: Vec<u32> = crate::process::processes_matching(&needle)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let mut sockets = sockets;
        sockets.extend(crate::process::listening_sockets_of(&pids));
        sockets.sort();
        sockets.dedup();
        let left = kill_processes_matching(&needle, Duration::from_secs(5));
        if !left.is_empty() {
            problems.push(format!("processes survived SIGKILL: {left:?}"));
        }
        // The sockets of shims killed here (containerd was not there to
        // have them cleaned up), if nobody serves them any more.
        for socket in sockets {
            if let Err(e) = remove_dead_socket(&socket) {
                problems.push(format!("removing {}: {e}", socket.display()));
            }
        }
        // Task processes that survived their task's deletion.
        for fd in &pidfds {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        drop(pidfds);
        let left = remove_cgroups(&cgroups, Duration::from_secs(3));
        if !left.is_empty() {
            problems.push(format!("cgroups could not be removed: {left:?}"));
        }
        remove_runc_state(&needle, &mut problems);
        let mounts = unmount_under(&self.base);
        if !mounts.is_empty() {
            problems.push(format!("mounts could not be detached: {mounts:?}"));
        }
        // A last look: nothing may have started since.
        for (pid, _) in crate::processes_matching(&needle) {
            let _ = kill_if_matching(pid, &needle);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("removing {}: {e}", self.base.display()));
            }
        }
        if !problems.is_empty() {
            eprintln!(
                "idshift-tests: cleaning up the containerd in {}:\n  {}",
                self.base.display(),
                problems.join("\n  ")
            );
        }
    }
}

/// Removes the unix socket at `path` unless something still accepts
/// connections on it (a gone socket is fine).
fn remove_dead_socket(path: &Path) -> std::io::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(_) => Ok(()),
    }
}
