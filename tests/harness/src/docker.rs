//! A private Docker Engine per test: Debian's docker.io and docker-cli (sid)
//! extracted into private prefixes by `scripts/debian-debs.sh` (cached by
//! version under `/var/cache/idshift-docker`) and the containerd 2.x of
//! [`Flavour::V2`] (sid's, `tests/install-containerd.sh`),
//! a containerd of its own and a dockerd on a private data-root, exec-root,
//! pidfile, socket and cgroup parent, with iptables, the bridge and IP
//! forwarding off, and the built idshift shim first on containerd's PATH.
//! Everything it made (containers, shims, mounts, cgroups, files) is gone
//! when it is dropped.

use crate::process::{
    cgroup_roots, kill_processes_matching, processes_matching, remove_cgroups, run_with_stdin,
    run_with_timeout, unmount_under, CtrOutput,
};
use crate::{shim_dir, unique, Error, Flavour, SHIM_BINARY};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Debian suite the packages come from.
const SUITE: &str = "sid";
const DOCKER_CACHE: &str = "/var/cache/idshift-docker";
/// How long one `docker` command of a test may run.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The extracted packages.
#[derive(Clone, Debug)]
pub struct DockerInstall {
    /// `dockerd` (and `docker-proxy`).
    pub dockerd: PathBuf,
    /// The `docker` CLI.
    pub cli: PathBuf,
    /// The directory of `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub containerd_bin: PathBuf,
    /// Versions, for messages (`28.5.2+dfsg4-5`, ...).
    pub versions: String,
}

fn repo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/debian-debs.sh")
}

fn extract(cache: &str, packages: &[&str]) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("sh")
        .arg(repo_script())
        .arg(SUITE)
        .arg(cache)
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", repo_script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {SUITE} {cache} {packages:?} failed: {}",
            repo_script().display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect())
}

/// Extracts (once per process; cached on disk by version) docker.io,
/// docker-cli and containerd from Debian sid.
pub fn docker_install() -> Result<DockerInstall, Error> {
    static INSTALL: OnceLock<Result<DockerInstall, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| {
            let d =
                extract(DOCKER_CACHE, &["docker.io", "docker-cli"]).map_err(|e| e.to_string())?;
            // The same suite's containerd, as the 2.x end-to-end suites run it.
            let ctd = Flavour::V2
                .bin_dir()
                .map_err(|e| e.to_string())?
                .ok_or("containerd 2.x has no directory of its own")?;
            let ctd_version = std::fs::canonicalize(ctd.join("containerd"))
                .ok()
                .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
                .unwrap_or_else(|| ctd.clone());
            let (Some(engine), Some(cli)) = (d.first(), d.get(1)) else {
                return Err(format!("unexpected trees: {d:?}"));
            };
            let name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            Ok(DockerInstall {
                dockerd: engine.join("usr/sbin/dockerd"),
                cli: cli.join("usr/bin/docker"),
                containerd_bin: ctd,
                versions: format!(
                    "{}, {}, containerd {}",
                    name(engine),
                    name(cli),
                    name(&ctd_version)
                ),
            })
        })
        .clone()
        .map_err(Into::into)
}

/// How to start a [`Docker`].
#[derive(Clone, Debug, Default)]
pub struct DockerOptions {
    /// dockerd's containerd-snapshotter image store (feature
    /// `containerd-snapshotter`) instead of the overlay2 graph driver.
    pub containerd_snapshotter: bool,
    /// TOML appended to the idshift config file of this instance.
    pub idshift_toml: String,
}

/// The OCI archive `oci` ([`crate::build_image`]) with Docker's
/// `manifest.json` added (what `docker save` writes beside the OCI layout):
/// dockerd's graph-driver image store loads only archives that have it.
fn with_docker_manifest(oci: &Path, name: &str) -> Result<PathBuf, Error> {
    let mut entries: Vec<(tar::Header, Vec<u8>)> = Vec::new();
    let mut blobs = std::collections::HashMap::new();
    let mut index = Vec::new();
    for e in tar::Archive::new(std::fs::File::open(oci)?).entries()? {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data)?;
        if path == "index.json" {
            index = data.clone();
        }
        if let Some(d) = path.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{d}"), data.clone());
        }
        entries.push((e.header().clone(), data));
    }
    let index: serde_json::Value = serde_json::from_slice(&index)?;
    let digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
    let manifest: serde_json::Value =
        serde_json::from_slice(blobs.get(digest).ok_or("the index's manifest is missing")?)?;
    let blob_path = |d: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            d.as_str().unwrap_or_default().trim_start_matches("sha256:")
        )
    };
    let short = name.strip_prefix("docker.io/library/").unwrap_or(name);
    let docker_manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": blob_path(&manifest["config"]["digest"]),
        "RepoTags": [short],
        "Layers": manifest["layers"].as_array().map(|ls| ls.iter().map(|l| blob_path(&l["digest"])).collect::<Vec<_>>()).unwrap_or_default(),
    }]))?;
    let out = oci.with_extension("docker.tar");
    let mut t = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&out)?));
    for (h, data) in &entries {
        t.append(h, &data[..])?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(docker_manifest.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, "manifest.json", &docker_manifest[..])?;
    t.into_inner()?
        .into_inner()
        .map_err(|e| format!("writing {}: {}", out.display(), e.error()))?;
    Ok(out)
}

/// A private containerd + dockerd, torn down on drop.
#[derive(Debug)]
pub struct Docker {
    base: PathBuf,
    install: DockerInstall,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    socket: PathBuf,
    /// dockerd's `cgroup-parent` (relative to each hierarchy's root).
    pub cgroup_parent: String,
    /// The idshift config the shims read (`IDSHIFT_CONFIG`).
    pub idshift_config: PathBuf,
}

fn json_str(s: &Path) -> String {
    serde_json::to_string(&s.to_string_lossy()).unwrap_or_default()
}

impl Docker {
    /// Starts containerd and dockerd in a fresh `/var/tmp/idshift-docker-<unique>`
    /// and waits until `docker version` answers.
    pub fn start(opts: DockerOptions) -> Result<Docker, Error> {
        let install = docker_install()?;
        if !shim_dir().join(SHIM_BINARY).exists() {
            return Err(format!(
                "{SHIM_BINARY} is not built in {} (run `cargo build --workspace --bins`)",
                shim_dir().display()
            )
            .into());
        }
        let name = unique("idshift-docker");
        let base = PathBuf::from("/var/tmp").join(&name);
        std::fs::create_dir(&base)?;
        let mut d = Docker {
            socket: base.join("docker.sock"),
            idshift_config: base.join("idshift.toml"),
            cgroup_parent: format!("/{name}"),
            base,
            install,
            containerd: None,
            dockerd: None,
        };
        // From here on Drop cleans up.
        let b = d.base.clone();
        std::fs::write(
            b.join("containerd.toml"),
            format!(
                "version = 3\nroot = {}\nstate = {}\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.images\", \"io.containerd.cri.v1.runtime\", \"io.containerd.podsandbox.controller.v1.podsandbox\", \"io.containerd.sandbox.controller.v1.shim\", \"io.containerd.nri.v1.nri\"]\n\
                 [grpc]\n  address = {}\n[ttrpc]\n  address = {}\n",
                json_str(&b.join("containerd-root")),
                json_str(&b.join("containerd-state")),
                json_str(&b.join("containerd.sock")),
                json_str(&b.join("containerd.sock.ttrpc")),
            ),
        )?;
        std::fs::write(
            &d.idshift_config,
            format!(
                "state_dir = {}\nrun_dir = {}\n{}\n",
                json_str(&b.join("idshift-state")),
                json_str(&b.join("idshift-run")),
                opts.idshift_toml
            ),
        )?;
        // README's snippet: the runtime by its shim name.
        let mut daemon = serde_json::json!({
            "runtimes": {"idshift": {"runtimeType": "io.containerd.idshift.v2"}},
        });
        if opts.containerd_snapshotter {
            daemon["features"] = serde_json::json!({"containerd-snapshotter": true});
        }
        std::fs::write(b.join("daemon.json"), daemon.to_string())?;
        let sys_path = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        // containerd 2.x's own runc shim before the host's; runc from the host.
        let path = format!(
            "{}:{}:{}:/usr/sbin:/usr/bin:/sbin:/bin",
            shim_dir().display(),
            d.install.containerd_bin.display(),
            sys_path
        );
        let (ctd_log, dockerd_log) = (
            std::fs::File::create(b.join("containerd.log"))?,
            std::fs::File::create(b.join("dockerd.log"))?,
        );
        let log = |n: &str| -> std::io::Result<std::fs::File> {
            if n == "containerd.log" {
                ctd_log.try_clone()
            } else {
                dockerd_log.try_clone()
            }
        };
        d.containerd = Some(
            Command::new(d.install.containerd_bin.join("containerd"))
                .arg("--config")
                .arg(b.join("containerd.toml"))
                .env("PATH", &path)
                .env("IDSHIFT_CONFIG", &d.idshift_config)
                .stdin(Stdio::null())
                .stdout(log("containerd.log")?.try_clone()?)
                .stderr(log("containerd.log")?)
                .spawn()
                .map_err(|e| format!("spawning containerd: {e}"))?,
        );
        d.wait_for(&b.join("containerd.sock"), "containerd")?;
        let dockerd_dir = d
            .install
            .dockerd
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        d.dockerd = Some(
            Command::new(&d.install.dockerd)
                .arg("--config-file")
                .arg(b.join("daemon.json"))
                .arg("--containerd")
                .arg(b.join("containerd.sock"))
                .arg("--data-root")
                .arg(b.join("data"))
                .arg("--exec-root")
                .arg(b.join("exec"))
                .arg("--pidfile")
                .arg(b.join("docker.pid"))
                .arg("-H")
                .arg(format!("unix://{}", d.socket.display()))
                .args([
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--bridge=none",
                    "--userland-proxy=false",
                    "--storage-driver",
                    if opts.containerd_snapshotter {
                        "overlayfs"
                    } else {
                        "overlay2"
                    },
                    "--cgroup-parent",
                    &d.cgroup_parent,
                ])
                .env("PATH", format!("{}:{path}", dockerd_dir.display()))
                .stdin(Stdio::null())
                .stdout(log("dockerd.log")?)
                .stderr(log("dockerd.log")?.try_clone()?)
                .spawn()
                .map_err(|e| format!("spawning dockerd: {e}"))?,
        );
        d.wait_for(&d.socket.clone(), "dockerd")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let v = d.docker(&["version", "--format", "{{.Server.Version}}"]);
            if v.success() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd did not answer: {v:?}\n{}",
                    d.log_tail("dockerd.log", 40)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(d)
    }

    fn wait_for(&mut self, sock: &Path, what: &str) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !sock.exists() {
            let exited = [&mut self.containerd, &mut self.dockerd]
                .into_iter()
                .flatten()
                .find_map(|child| child.try_wait().ok().flatten());
            if let Some(st) = exited {
                {
                    return Err(format!(
                        "{what} exited ({st}) while starting:\n{}\n{}",
                        self.log_tail("containerd.log", 30),
                        self.log_tail("dockerd.log", 30)
                    )
                    .into());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{what} did not make {}", sock.display()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn install(&self) -> &DockerInstall {
        &self.install
    }

    /// The last `lines` lines of `containerd.log` or `dockerd.log`.
    pub fn log_tail(&self, file: &str, lines: usize) -> String {
        let text =
            String::from_utf8_lossy(&std::fs::read(self.base.join(file)).unwrap_or_default())
                .into_owned();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// containerd's log (where the shims log).
    pub fn containerd_log(&self) -> String {
        // Lossy: a log line may quote bytes that are not UTF-8.
        String::from_utf8_lossy(
            &std::fs::read(self.base.join("containerd.log")).unwrap_or_default(),
        )
        .into_owned()
    }

    /// `docker -H <socket> args...`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.install.cli);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.base.join("cli"));
        cmd
    }

    /// Runs `docker args...` (stdin empty).
    pub fn docker(&self, args: &[&str]) -> CtrOutput {
        run_with_timeout(self.command(args), DOCKER_TIMEOUT)
    }

    /// Runs `docker args...` with `input` on its standard input.
    pub fn docker_stdin(&self, args: &[&str], input: &str) -> CtrOutput {
        run_with_stdin(self.command(args), input.as_bytes(), DOCKER_TIMEOUT)
    }

    /// Runs `docker args...` on a pseudo-terminal (`script(1)`), for `-t`
    /// and `exec -it`; the output is the terminal's.
    pub fn docker_tty(&self, args: &[&str]) -> CtrOutput {
        let mut line = format!(
            "{} -H unix://{}",
            self.install.cli.display(),
            self.socket.display()
        );
        for a in args {
            line.push(' ');
            line.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        }
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("DOCKER_CONFIG", self.base.join("cli"));
        let mut out = run_with_timeout(cmd, DOCKER_TIMEOUT);
        // The terminal echoes what script(1) writes on its end of file (a
        // NUL, shown as ^@, or ^D and backspaces) at a moment that depends
        // on timing: not the container's output.
        out.stdout = out
            .stdout
            .replace("^@", "")
            .replace("^D", "")
            .replace('\u{8}', "");
        out
    }

    /// Builds an image of `layers` layers ([`crate::build_image`]) named
    /// `name` and loads it with `docker load` (an OCI layout archive).
    pub fn load_image(&self, name: &str, layers: usize) -> Result<(), Error> {
        let oci = crate::build_image(&self.base.join("images"), name, layers)?;
        let tar = with_docker_manifest(&oci, name);
        let _ = std::fs::remove_file(&oci);
        let tar = tar?;
        let out = self.docker(&["load", "-i", &tar.to_string_lossy()]);
        let _ = std::fs::remove_file(&tar);
        if !out.success() {
            return Err(format!("docker load of {name}: {out:?}").into());
        }
        let ls = self.docker(&[
            "image",
            "inspect",
            "--format",
            "{{len .RootFS.Layers}}",
            name,
        ]);
        if ls.stdout.trim() != layers.to_string() {
            return Err(format!("{name} after docker load: {ls:?} ({out:?})").into());
        }
        Ok(())
    }

    /// What idshift's shims may have left while dockerd runs, with no
    /// container left: shim processes, ID ranges, per-container run dirs,
    /// mounts under the instance but dockerd's own (its data-root bound on
    /// itself, network namespace files), container cgroups.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let me = self.base.display().to_string();
        for l in crate::host_mountinfo().iter().filter(|l| l.contains(&me)) {
            let mp = crate::mount_point(l).unwrap_or_default();
            if mp == self.base.join("data").display().to_string()
                || mp.starts_with(&self.base.join("exec/netns").display().to_string())
                || mp.starts_with(&self.base.join("containerd-root").display().to_string())
            {
                continue;
            }
            leaks.push(format!("mount: {l}"));
        }
        for (pid, cmd) in processes_matching(&format!("{me}/")) {
            if cmd.contains("containerd-shim") {
                leaks.push(format!("shim {pid}: {cmd}"));
            }
        }
        let ranges = std::fs::read_to_string(self.base.join("idshift-state/ranges.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("owners").and_then(|o| o.as_object()).map(|o| o.len()))
            .unwrap_or(0);
        if ranges > 0 {
            leaks.push(format!("{ranges} ID ranges still allocated"));
        }
        let run = self.base.join("idshift-run");
        for ns in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            if ns.path().is_dir() {
                for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    if c.path().is_dir() && c.file_name() != "tmp" {
                        leaks.push(format!("run dir {}", c.path().display()));
                    }
                }
            }
        }
        let parent = self.cgroup_parent.trim_start_matches('/');
        for root in cgroup_roots() {
            for c in std::fs::read_dir(root.join(parent))
                .into_iter()
                .flatten()
                .flatten()
            {
                if c.path().is_dir() {
                    leaks.push(format!("cgroup {}", c.path().display()));
                }
            }
        }
        leaks
    }

    /// Panics with the leaks unless [`Docker::leaks`] finds nothing within
    /// `within`.
    pub fn assert_no_leaks(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leaks: {leaks:#?}\n{}",
                self.log_tail("containerd.log", 60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(child: &mut Option<Child>, timeout: Duration) {
        let Some(mut c) = child.take() else { return };
        if let Ok(pid) = i32::try_from(c.id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        Docker::stop(&mut self.dockerd, Duration::from_secs(20));
        Docker::stop(&mut self.containerd, Duration::from_secs(10));
        let me = format!("{}/", self.base.display());
        kill_processes_matching(&me, Duration::from_secs(10));
        unmount_under(&self.base);
        // Container cgroups under the parent, then the parent.
        let parent = PathBuf::from(self.cgroup_parent.trim_start_matches('/'));
        let mut cgroups: Vec<PathBuf> = Vec::new();
        for root in cgroup_roots() {
            for c in std::fs::read_dir(root.join(&parent))
                .into_iter()
                .flatten()
                .flatten()
            {
                if c.path().is_dir() {
                    cgroups.push(parent.join(c.file_name()));
                }
            }
        }
        cgroups.sort();
        cgroups.dedup();
        remove_cgroups(&cgroups, Duration::from_secs(5));
        remove_cgroups(&[parent], Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
