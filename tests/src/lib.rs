//! Harness of the end-to-end tests: a private containerd 1.6 with the built
//! shim first on its PATH, locally built OCI images, and leak checks.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A name no other test (or test process) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// The directory holding the built `containerd-shim-idshift-v2`: beside
/// this executable (a binary in target/<profile>) or one level up (a test in
/// target/<profile>/deps).
pub fn shim_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if !dir.join("containerd-shim-idshift-v2").exists() {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    dir
}

pub fn host_mountinfo() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// (pid, cmdline) of every process whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

#[derive(Debug)]
pub struct CtrOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOutput {
    /// Panics with everything ctr said unless it exited 0.
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "ctr failed: {self:?}");
        self
    }
}

/// Runs `cmd` with a timeout, killing it when it is exceeded.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> CtrOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CtrOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("spawning {cmd:?}: {e}"),
            }
        }
    };
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    CtrOutput {
        code,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// A private containerd, stopped and cleaned up on drop.
pub struct Containerd {
    base: PathBuf,
    child: Option<Child>,
    /// The idshift config file the shims of this containerd read.
    pub idshift_config: PathBuf,
}

impl Containerd {
    /// Starts containerd with the shim dir first on PATH and an idshift
    /// config of its own (`idshift_toml` is its content; the state and run
    /// dirs are private to this instance).
    pub fn start(idshift_toml: &str) -> Result<Containerd, Error> {
        let base = PathBuf::from("/var/tmp").join(unique("idshift-e2e"));
        std::fs::create_dir_all(&base)?;
        // Keep the socket path short (unix sockets: 108 bytes).
        let config = base.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{b}/root\"\nstate = \"{b}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{b}/c.sock\"\n[ttrpc]\n  address = \"{b}/c.sock.ttrpc\"\n\
                 [debug]\n  level = \"debug\"\n",
                b = base.display()
            ),
        )?;
        let idshift_config = base.join("idshift.toml");
        std::fs::write(
            &idshift_config,
            format!(
                "state_dir = \"{b}/idshift-state\"\nrun_dir = \"{b}/idshift-run\"\n{idshift_toml}\n",
                b = base.display()
            ),
        )?;
        if !shim_dir().join("containerd-shim-idshift-v2").exists() {
            return Err(format!(
                "containerd-shim-idshift-v2 is not built in {} (run `cargo build --workspace --bins`)",
                shim_dir().display()
            )
            .into());
        }
        let log = std::fs::File::create(base.join("containerd.log"))?;
        let path = format!(
            "{}:{}",
            shim_dir().display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("IDSHIFT_CONFIG", &idshift_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let c = Containerd {
            base,
            child: Some(child),
            idshift_config,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.ctr("default", &["version"]).code == Some(0) {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(format!("containerd did not start: {}", c.log()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn address(&self) -> PathBuf {
        self.base.join("c.sock")
    }

    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.base.join("idshift-state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.base.join("idshift-run")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, not started (for a caller that
    /// spawns it and talks to it).
    pub fn ctr_command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// Runs `ctr` against this containerd (killed after 120 s).
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> CtrOutput {
        run_with_timeout(self.ctr_command(namespace, args), Duration::from_secs(120))
    }

    /// SIGKILLs the tasks `ids`, then deletes each task (once it has stopped)
    /// and its container.
    pub fn kill_and_remove(&self, namespace: &str, ids: &[&str]) -> Result<(), Error> {
        for id in ids {
            let out = self.ctr(namespace, &["task", "kill", "-s", "SIGKILL", id]);
            if out.code != Some(0) {
                return Err(format!("killing {id}: {out:?}").into());
            }
        }
        for id in ids {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.ctr(namespace, &["task", "delete", id]).code != Some(0) {
                if Instant::now() > deadline {
                    return Err(format!("task {id} could not be deleted within 10 s").into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let out = self.ctr(namespace, &["containers", "rm", id]);
            if out.code != Some(0) {
                return Err(format!("removing container {id}: {out:?}").into());
            }
        }
        Ok(())
    }

    /// Builds and imports an image of `layers` layers named `name`.
    pub fn import_image(&self, namespace: &str, name: &str, layers: usize) -> Result<(), Error> {
        let archive = build_image(&self.base, name, layers)?;
        let path = archive.display().to_string();
        let out = self.ctr(namespace, &["image", "import", &path]);
        if out.code != Some(0) {
            return Err(format!("importing {name}: {out:?}").into());
        }
        Ok(())
    }

    /// Host ID ranges still allocated by this containerd's shims.
    pub fn live_ranges(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(self.state_dir().join("ranges.json")) else {
            return 0;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("owners").and_then(|o| o.as_object()).map(|o| o.len()))
            .unwrap_or(0)
    }

    /// Everything this containerd may have left behind: mounts, processes,
    /// ID ranges, per-container run dirs.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let me = self.base.display().to_string();
        for l in host_mountinfo()
            .iter()
            .filter(|l| l.contains(&me) && !l.contains("/root/io.containerd"))
        {
            leaks.push(format!("mount: {l}"));
        }
        for (pid, cmd) in processes_matching(&me) {
            if !cmd.starts_with("containerd --config") {
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
        leaks
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let nss = self.ctr("default", &["namespaces", "ls", "-q"]).stdout;
        for ns in nss.lines().filter(|l| !l.is_empty()) {
            for t in self.ctr(ns, &["task", "ls", "-q"]).stdout.lines() {
                let _ = self.ctr(ns, &["task", "kill", "-a", "-s", "SIGKILL", t]);
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.ctr(ns, &["task", "rm", "-f", t]);
            }
            for c in self.ctr(ns, &["containers", "ls", "-q"]).stdout.lines() {
                let _ = self.ctr(ns, &["containers", "rm", c]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(child.id() as i32).expect("pid > 0"),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let me = self.base.display().to_string();
        for (pid, _) in processes_matching(&me) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let mut mounts: Vec<String> = host_mountinfo()
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&me))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("removing {}: {e}", self.base.display());
        }
    }
}

fn sha256(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn add_file<W: Write>(
    t: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    t.append(
        &header(path, tar::EntryType::Regular, mode, data.len() as u64),
        data,
    )
}

fn add_dir<W: Write>(t: &mut tar::Builder<W>, path: &str, mode: u32) -> std::io::Result<()> {
    t.append(
        &header(path, tar::EntryType::Directory, mode, 0),
        std::io::empty(),
    )
}

/// The busybox-static base layer: /bin/busybox with every applet linked.
fn base_layer() -> Result<Vec<u8>, Error> {
    let bb_path = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox-static is not installed (apt-get install busybox-static)")?;
    let bb = std::fs::read(bb_path)?;
    let list = Command::new(bb_path).arg("--list").output()?;
    let mut t = tar::Builder::new(Vec::new());
    for d in [
        "bin", "etc", "root", "proc", "sys", "dev", "run", "var", "layers",
    ] {
        add_dir(&mut t, d, 0o755)?;
    }
    add_dir(&mut t, "tmp", 0o1777)?;
    add_file(&mut t, "bin/busybox", 0o755, &bb)?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" {
            continue;
        }
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        t.append(&h, std::io::empty())?;
    }
    add_file(
        &mut t,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    add_file(&mut t, "etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
    Ok(t.into_inner()?)
}

/// Writes an OCI image-layout archive of a busybox image with `layers`
/// layers (layer i > 1 adds /layers/i = "layer i") and returns its path.
pub fn build_image(dir: &Path, name: &str, layers: usize) -> Result<PathBuf, Error> {
    if layers == 0 {
        return Err("an image needs at least one layer".into());
    }
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layer_descs = Vec::new();
    for i in 1..=layers {
        let data = if i == 1 {
            base_layer()?
        } else {
            let mut t = tar::Builder::new(Vec::new());
            add_dir(&mut t, "layers", 0o755)?;
            add_file(
                &mut t,
                &format!("layers/{i}"),
                0o644,
                format!("layer {i}\n").as_bytes(),
            )?;
            t.into_inner()?
        };
        let digest = sha256(&data);
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{digest}"),
            "size": data.len(),
        }));
        blobs.push((digest, data));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layer_descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>(),
        },
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": layer_descs,
    }))?;
    let manifest_digest = sha256(&manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    blobs.push((config_digest, config));
    blobs.push((manifest_digest, manifest));
    let path = dir.join(format!("{}.tar", unique("image")));
    let mut t = tar::Builder::new(std::fs::File::create(&path)?);
    add_file(
        &mut t,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_file(&mut t, "index.json", 0o644, &index)?;
    add_dir(&mut t, "blobs", 0o755)?;
    add_dir(&mut t, "blobs/sha256", 0o755)?;
    for (digest, data) in &blobs {
        add_file(&mut t, &format!("blobs/sha256/{digest}"), 0o644, data)?;
    }
    t.into_inner()?.sync_all()?;
    Ok(path)
}
