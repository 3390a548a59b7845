//! idshift under containerd 1.6's and 2.x's CRI plugins (every test on
//! both), driven with a Rust CRI client
//! (the `k8s-cri` crate, CRI v1) as kubelet or crictl would: pod sandboxes
//! with the runtime handler README's containerd snippet defines, their
//! containers, exec, logs, stop and removal; host network and CNI pods
//! (bridge + host-local + loopback on a private bridge). Root needed.
//!
//! The streaming Exec is driven as `crictl exec` does, over a websocket to
//! containerd's streaming server (Kubernetes' `v4.channel.k8s.io`); Attach
//! and PortForward are not tested.

use idshift_tests::cri::{
    container_config, import_pause_image, pod_config, Cri, K8S_NAMESPACE, PAUSE_IMAGE,
};
use idshift_tests::{
    on_containerd, processes_matching, shim_dir, CniNetwork, Containerd, ContainerdOptions,
    Flavour, IDSHIFT_CONFIG_TOKEN,
};
use k8s_cri::v1::{ContainerState, PodSandboxState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const IMG: &str = "docker.io/library/idshift-busybox:1";
const IMG60: &str = "docker.io/library/idshift-busybox:60";
/// A long-running container command (sleeps in short steps, so that a
/// SIGTERM to the shell is handled within a second).
const SLEEPER: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 1; done",
];

/// README's CRI section: its containerd snippet for `flavour` (the ```toml
/// block that adds the runtime to containerd 1.6's CRI plugin, config
/// version 2, or to 2.x's `io.containerd.cri.v1.runtime`, config version 3)
/// and the handler of its RuntimeClass (`handler:` of the ```yaml block).
/// The suite runs on exactly that snippet.
fn readme_cri(flavour: Flavour) -> (String, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Using idshift with Kubernetes (CRI)")
        .nth(1)
        .expect("README has a section \"Using idshift with Kubernetes (CRI)\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let blocks = |lang: &str| -> Vec<String> {
        section
            .split(&format!("```{lang}\n"))
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .map(str::to_string)
            .collect()
    };
    let block = |lang: &str| {
        blocks(lang)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("a ```{lang} block in README's CRI section"))
    };
    let plugin = if flavour.is_v2() {
        "\"io.containerd.cri.v1.runtime\".containerd.runtimes."
    } else {
        "\"io.containerd.grpc.v1.cri\".containerd.runtimes."
    };
    let toml = blocks("toml")
        .into_iter()
        .find(|b| b.contains(plugin))
        .unwrap_or_else(|| {
            panic!(
                "a ```toml block in README's CRI section for containerd {} ({plugin})",
                flavour.name()
            )
        });
    // The harness writes the config's `version`; a `ConfigPath` names the
    // test's own idshift config.
    let toml = toml
        .lines()
        .filter(|l| !l.trim_start().starts_with("version ="))
        .map(|l| match l.split_once("ConfigPath =") {
            Some((indent, _)) => format!("{indent}ConfigPath = \"{IDSHIFT_CONFIG_TOKEN}\""),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let handler = block("yaml")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("handler:")
                .map(|h| h.trim().to_string())
        })
        .expect("a handler: in README's RuntimeClass");
    assert!(
        toml.contains(&format!("containerd.runtimes.{handler}]"))
            && toml.contains("runtime_type = \"io.containerd.idshift.v2\""),
        "README's snippet defines the RuntimeClass's handler {handler}: {toml}"
    );
    (toml, handler)
}

/// One test's world, dropped in this order: the CRI client (removing the
/// pods it made), containerd, the CNI network.
struct Env {
    cri: Cri,
    c: Containerd,
    net: Option<CniNetwork>,
    handler: String,
}

fn setup(cni: bool, images: &[(&str, usize)]) -> Env {
    setup_with(cni, images, "")
}

/// [`setup`] with `idshift_toml` added to idshift's config.
fn setup_with(cni: bool, images: &[(&str, usize)], idshift_toml: &str) -> Env {
    let flavour = Flavour::current();
    let (toml, handler) = readme_cri(flavour);
    let net = cni.then(|| CniNetwork::new().expect("a CNI network"));
    let c = Containerd::start(ContainerdOptions {
        shim_dir: Some(shim_dir()),
        cri: true,
        extra_config: toml,
        sandbox_image: Some(PAUSE_IMAGE.into()),
        cni_conflist: net.as_ref().map(CniNetwork::conflist),
        idshift_toml: idshift_toml.to_string(),
        ..Default::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "start containerd {} with the CRI plugin: {e}",
            flavour.name()
        )
    });
    import_pause_image(&c).expect("import the pause image");
    for (name, layers) in images {
        c.import_image(K8S_NAMESPACE, name, *layers)
            .expect("import image");
    }
    let cri = Cri::connect(c.address()).expect("connect to CRI");
    // The CRI plugin answers once it is up (and CNI, when asked, is ready).
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = cri.version() {
        assert!(
            Instant::now() < deadline,
            "CRI never answered: {e}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Env {
        cri,
        c,
        net,
        handler,
    }
}

impl Env {
    /// A pod named after `prefix` (unique), its sandbox running: its
    /// config and id.
    fn run_pod(
        &self,
        prefix: &str,
        host_network: bool,
        share_pid: bool,
    ) -> (k8s_cri::v1::PodSandboxConfig, String) {
        let name = idshift_tests::unique(prefix);
        let pc = pod_config(&name, &self.log_dir(&name), host_network, share_pid);
        let pod = self
            .cri
            .run_pod(&pc, &self.handler)
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.c.log_tail(100)));
        (pc, pod)
    }

    fn log_dir(&self, pod: &str) -> PathBuf {
        let d = self.c.base().join("pod-logs").join(pod);
        std::fs::create_dir_all(&d).expect("log dir");
        d
    }

    /// The serving shims of this containerd.
    fn shims(&self) -> Vec<(u32, String)> {
        processes_matching(&format!("{}/", self.c.base().display()))
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim-idshift-v2"))
            .collect()
    }

    fn exec_out(&self, id: &str, cmd: &[&str]) -> String {
        let r = self
            .cri
            .exec_sync(id, cmd, 30)
            .unwrap_or_else(|e| panic!("exec {cmd:?} in {id}: {e}\n{}", self.c.log_tail(80)));
        assert_eq!(
            r.exit_code,
            0,
            "exec {cmd:?} in {id}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    fn assert_no_leaks(&self) {
        self.c.assert_no_leaks(Duration::from_secs(15));
    }
}

/// (inside, host, size) of the first line of a uid_map.
fn uid_map(text: &str) -> (u64, u64, u64) {
    let f: Vec<u64> = text
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().expect("uid_map number"))
        .collect();
    assert_eq!(f.len(), 3, "a uid_map line: {text:?}");
    (f[0], f[1], f[2])
}

/// The `info` containerd's verbose PodSandboxStatus gives, as JSON.
fn sandbox_info(cri: &Cri, pod: &str) -> serde_json::Value {
    let r = cri
        .block_on(
            cri.runtime()
                .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
                    pod_sandbox_id: pod.to_string(),
                    verbose: true,
                }),
        )
        .expect("verbose pod status");
    let info: serde_json::Value =
        serde_json::from_str(r.info.get("info").expect("info")).expect("info JSON");
    info
}

/// The pid of a pod's sandbox (from the verbose status containerd gives).
fn sandbox_pid(cri: &Cri, pod: &str) -> u32 {
    let info = sandbox_info(cri, pod);
    info["pid"].as_u64().expect("pid in the pod's info") as u32
}

/// The network namespace path of a CNI pod (from its sandbox's spec in the
/// verbose status).
fn sandbox_netns(cri: &Cri, pod: &str) -> String {
    let info = sandbox_info(cri, pod);
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|nss| nss.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .expect("a CNI pod's network namespace path")
        .to_string()
}

/// The CRI log lines of a container: `<RFC 3339 time> <stream> <P|F> <text>`.
fn cri_log(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let (t, stream, tag, text) = (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            );
            assert!(
                t.len() >= 20 && t.contains('T') && t.ends_with('Z') || t.contains('+'),
                "a CRI log time: {l:?}"
            );
            assert!(matches!(stream, "stdout" | "stderr"), "{l:?}");
            assert!(matches!(tag, "P" | "F"), "{l:?}");
            (stream.to_string(), tag.to_string(), text.to_string())
        })
        .collect()
}

/// Polls `f` until it gives `Ok` (at most `timeout`; then panics with its
/// last `Err`).
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(x) => return x,
            Err(e) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ExecSync of `cmd` in `id` that succeeded: its stdout.
fn exec_ok(cri: &Cri, id: &str, cmd: &[&str]) -> Result<String, String> {
    let r = cri.exec_sync(id, cmd, 10).map_err(|e| e.to_string())?;
    if r.exit_code == 0 {
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    } else {
        Err(format!(
            "exit {}: {}{}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ))
    }
}

on_containerd!(host_network_pod_of_three_containers_one_shim_one_range: V1_6, V2);
/// A host-network pod of three containers (one of a 60-layer image): one
/// shim, one ID range, the whole CRI container lifecycle, then nothing left.
fn host_network_pod_of_three_containers_one_shim_one_range() {
    let env = setup(false, &[(IMG, 1), (IMG60, 60)]);
    let cri = &env.cri;
    let name = idshift_tests::unique("pod");
    let log_dir = env.log_dir(&name);
    let pc = pod_config(&name, &log_dir, true, false);
    let pod = cri
        .run_pod(&pc, &env.handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.c.log_tail(100)));
    let st = cri.pod_status(&pod).expect("PodSandboxStatus");
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "{st:?}");

    // 1: answers SIGTERM (exit 7) and logs to both streams.
    let app = container_config(
        "app",
        IMG,
        &[
            "/bin/sh",
            "-c",
            "echo hello-out; echo hello-err >&2; trap 'echo got-term; exit 7' TERM; \
             while :; do sleep 1; done",
        ],
        &pc,
    );
    // 2: the 60-layer image; ignores SIGTERM.
    let stubborn = container_config(
        "stubborn",
        IMG60,
        &["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
        &pc,
    );
    // 3: exits 3 at once.
    let short = container_config("short", IMG, &["/bin/sh", "-c", "echo done; exit 3"], &pc);
    let mut ids = Vec::new();
    for cc in [&app, &stubborn, &short] {
        let id = cri
            .create_container(&pod, &pc, cc)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
        let s = cri.container_status(&id).expect("status");
        assert_eq!(s.state, ContainerState::ContainerCreated as i32, "{s:?}");
        cri.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.c.log_tail(100)));
        ids.push(id);
    }
    let (app_id, stubborn_id, short_id) = (&ids[0], &ids[1], &ids[2]);

    // The exited one: exit code and reason.
    let s = cri
        .wait_exited(short_id, Duration::from_secs(30))
        .expect("short exits");
    assert_eq!(s.exit_code, 3, "{s:?}");
    assert_eq!(s.reason, "Error", "{s:?}");
    let s = cri.container_status(app_id).expect("status");
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");

    // One shim for the pod, one range, the same user namespace mapping.
    let shims = env.shims();
    assert_eq!(shims.len(), 1, "one shim serves the pod: {shims:#?}");
    assert_eq!(env.c.live_ranges(), 1, "one ID range for the pod");
    let pod_map = std::fs::read_to_string(format!("/proc/{}/uid_map", sandbox_pid(cri, &pod)))
        .expect("the sandbox's uid_map");
    let (inside, host, size) = uid_map(&pod_map);
    assert_eq!((inside, size), (0, 65536), "{pod_map}");
    assert!(host >= 0x7000_0000, "the default pool: {host}");
    for id in [app_id, stubborn_id] {
        let m = env.exec_out(id, &["cat", "/proc/self/uid_map"]);
        assert_eq!(
            uid_map(&m),
            (inside, host, size),
            "{id} is in the pod's range"
        );
        assert_eq!(env.exec_out(id, &["id", "-u"]).trim(), "0");
        // The rootfs is the image's, idmapped: files owned by root inside.
        assert_eq!(
            env.exec_out(id, &["stat", "-c", "%u:%g", "/bin/busybox"])
                .trim(),
            "0:0"
        );
    }
    assert_eq!(
        env.exec_out(stubborn_id, &["cat", "/layers/60"]),
        "layer 60\n"
    );

    // The 60-layer rootfs cost the mount syscalls the 1-layer one did
    // (the idmapped construction is constant in layers).
    let log = env.c.log();
    let cost = |id: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("created {id} ")))
            .unwrap_or_else(|| panic!("the shim logs the create of {id}"));
        let from = line.find("strategy, ").expect("strategy in the create log") + 10;
        // fsconfig (one per layer) is no mount-table operation.
        let to = line[from..].find("; fsconfig").expect("mount syscalls") + from;
        line[from..to].to_string()
    };
    assert_eq!(cost(stubborn_id), cost(app_id), "constant in layers");

    // ExecSync: output, exit code, timeout.
    let r = cri
        .exec_sync(
            app_id,
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 5"],
            30,
        )
        .expect("ExecSync");
    assert_eq!(
        (
            String::from_utf8_lossy(&r.stdout).as_ref(),
            String::from_utf8_lossy(&r.stderr).as_ref(),
            r.exit_code
        ),
        ("out\n", "err\n", 5)
    );
    let t = Instant::now();
    let r = cri.exec_sync(app_id, &["sleep", "30"], 1);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "ExecSync's timeout was not honoured: {:?}",
        t.elapsed()
    );
    let e = r.expect_err("ExecSync past its timeout fails");
    assert!(e.message().contains("timeout"), "{e:?}");

    // The streaming Exec (crictl exec): output, exit code, stdin.
    let r = cri
        .exec_stream(
            app_id,
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 6"],
            None,
        )
        .unwrap_or_else(|e| panic!("streaming Exec: {e}\n{}", env.c.log_tail(60)));
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 6),
        "{r:?}"
    );
    let r = cri
        .exec_stream(app_id, &["head", "-n", "1"], Some(b"via-stdin\n"))
        .expect("streaming Exec with stdin");
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"via-stdin\n"[..], 0));

    // Logs, in the CRI format, at the CRI log path.
    let app_log = log_dir.join("app.log");
    let lines = wait_for("app's log", Duration::from_secs(10), || {
        let l = cri_log(&app_log);
        if l.len() >= 2 {
            Ok(l)
        } else {
            Err(format!("{l:?}"))
        }
    });
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello-out".into()))
            && lines.contains(&("stderr".into(), "F".into(), "hello-err".into())),
        "{lines:?}"
    );
    assert!(cri_log(&log_dir.join("short.log")).contains(&(
        "stdout".into(),
        "F".into(),
        "done".into()
    )));

    // StopContainer honours the grace period: SIGTERM first...
    let t = Instant::now();
    cri.stop_container(app_id, 10).expect("StopContainer app");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let s = cri.container_status(app_id).expect("status");
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 7),
        "{s:?}"
    );
    wait_for("got-term in the log", Duration::from_secs(10), || {
        let l = cri_log(&app_log);
        if l.iter().any(|(_, _, t)| t == "got-term") {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    // ...then SIGKILL when it runs out.
    let t = Instant::now();
    cri.stop_container(stubborn_id, 2)
        .expect("StopContainer stubborn");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let s = cri.container_status(stubborn_id).expect("status");
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{s:?}"
    );

    for id in &ids {
        cri.remove_container(id).expect("RemoveContainer");
    }
    assert_eq!(env.shims().len(), 1, "the sandbox still has its shim");
    assert_eq!(env.c.live_ranges(), 1, "the pod keeps its range");
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
    assert!(env.shims().is_empty());
}

on_containerd!(cni_pods_share_localhost_reach_each_other_and_have_disjoint_ranges: V1_6, V2);
/// Two CNI pods on a private bridge: a pod's containers share localhost
/// (and, with shareProcessNamespace, their processes) and one range; the
/// pods reach each other over the bridge; their ranges are disjoint.
fn cni_pods_share_localhost_reach_each_other_and_have_disjoint_ranges() {
    let env = setup(true, &[(IMG, 1)]);
    let cri = &env.cri;
    let bridge = env.net.as_ref().map(|n| n.bridge.clone()).expect("net");
    let server_cmd = |text: &str| {
        format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www")
    };
    let mut pods = Vec::new();
    let mut netnses = Vec::new();
    for (i, share_pid) in [(0, false), (1, true)] {
        let (pc, pod) = env.run_pod(&format!("pod{i}"), false, share_pid);
        let cmd = server_cmd(&format!("pong-{i}"));
        let server = container_config("server", IMG, &["/bin/sh", "-c", &cmd], &pc);
        let client = container_config("client", IMG, &SLEEPER, &pc);
        let mut cs = Vec::new();
        for cc in [&server, &client] {
            let id = cri
                .create_container(&pod, &pc, cc)
                .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
            cri.start_container(&id)
                .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.c.log_tail(100)));
            cs.push(id);
        }
        let st = cri.pod_status(&pod).expect("status");
        let ip = st
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .expect("a CNI pod has an IP");
        assert!(ip.starts_with("10.234."), "{ip} is on the test subnet");
        let netns = sandbox_netns(cri, &pod);
        assert!(Path::new(&netns).exists(), "{netns}");
        netnses.push(netns);
        pods.push((pod, cs, ip, share_pid));
    }
    assert_eq!(env.shims().len(), 2, "one shim per pod");
    assert_eq!(env.c.live_ranges(), 2, "one range per pod");

    let mut maps = Vec::new();
    for (i, (_, cs, _, share_pid)) in pods.iter().enumerate() {
        let (server, client) = (&cs[0], &cs[1]);
        // localhost is the pod's.
        let got = wait_for("the pod's server", Duration::from_secs(20), || {
            exec_ok(
                cri,
                client,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
            )
        });
        assert_eq!(got, format!("pong-{i}\n"));
        // One range for the pod.
        let m0 = uid_map(&env.exec_out(server, &["cat", "/proc/self/uid_map"]));
        let m1 = uid_map(&env.exec_out(client, &["cat", "/proc/self/uid_map"]));
        assert_eq!(m0, m1, "the pod's containers share its range");
        maps.push(m0);
        // The pod's pid namespace when shared, else the container's own.
        let ps = env.exec_out(client, &["ps", "-o", "args"]);
        assert_eq!(ps.contains("httpd"), *share_pid, "{ps}");
        // The pod's hostname (its UTS namespace).
        let h = env.exec_out(client, &["hostname"]);
        assert!(h.trim().starts_with(&format!("pod{i}-")), "{h}");
    }
    let (a, b) = (maps[0], maps[1]);
    assert!(
        a.1 + a.2 <= b.1 || b.1 + b.2 <= a.1,
        "the pods' ranges are disjoint: {a:?} {b:?}"
    );
    // Pod to pod over the bridge, both ways.
    for (from, to) in [(0, 1), (1, 0)] {
        let url = format!("http://{}:8080/", pods[to].2);
        let client = &pods[from].1[1];
        let got = wait_for("the other pod", Duration::from_secs(20), || {
            exec_ok(cri, client, &["wget", "-q", "-O", "-", &url])
        });
        assert_eq!(got, format!("pong-{to}\n"));
    }
    // Pod removal as kubelet does it: stop the pod (its containers first),
    // remove it (its containers with it).
    for (pod, _, _, _) in &pods {
        cri.stop_pod(pod).expect("StopPodSandbox");
        cri.remove_pod(pod).expect("RemovePodSandbox");
    }
    env.assert_no_leaks();
    assert!(env.shims().is_empty());
    for netns in &netnses {
        assert!(!Path::new(netns).exists(), "{netns} is removed");
    }
    drop(env);
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "the test bridge {bridge} is removed"
    );
}

/// Processes whose real uid is in `[base, base + size)` (host IDs of a range).
fn processes_in_range(base: u64, size: u64) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u64>().ok());
        if uid.is_some_and(|u| u >= base && u < base + size) {
            found.push(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                status.lines().next().unwrap_or_default()
            ));
        }
    }
    found
}

on_containerd!(a_killed_pod_shim_is_cleaned_up: V1_6, V2);
/// The pod's shim is SIGKILLed: containerd runs `shim delete` for each of
/// the pod's tasks, which kills the pod's processes and releases its range
/// (the sandbox's first killing the other containers); CRI then stops and
/// removes the pod and nothing is left.
fn a_killed_pod_shim_is_cleaned_up() {
    let env = setup(false, &[(IMG, 1)]);
    let cri = &env.cri;
    let (pc, pod) = env.run_pod("pod", true, false);
    let mut ids = Vec::new();
    for n in ["a", "b"] {
        let id = cri
            .create_container(&pod, &pc, &container_config(n, IMG, &SLEEPER, &pc))
            .expect("CreateContainer");
        cri.start_container(&id).expect("StartContainer");
        ids.push(id);
    }
    let (_, host, size) = uid_map(&env.exec_out(&ids[0], &["cat", "/proc/self/uid_map"]));
    assert!(!processes_in_range(host, size).is_empty());
    let shims = env.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let pid = rustix::process::Pid::from_raw(shims[0].0 as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the shim");
    for id in &ids {
        cri.wait_exited(id, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", env.c.log_tail(100)));
    }
    wait_for("the pod's range released", Duration::from_secs(30), || {
        let left = processes_in_range(host, size);
        if env.c.live_ranges() == 0 && left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} ranges, processes {left:?}",
                env.c.live_ranges()
            ))
        }
    });
    for id in &ids {
        cri.remove_container(id).expect("RemoveContainer");
    }
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
}

on_containerd!(when_requested_pods_without_mappings_run_without_a_user_namespace: V1_6, V2);
/// `userns = "when-requested"`: a pod containerd asks no user namespace for
/// runs on the host's IDs, with no range allocated.
fn when_requested_pods_without_mappings_run_without_a_user_namespace() {
    let env = setup_with(false, &[(IMG, 1)], "userns = \"when-requested\"");
    let cri = &env.cri;
    let (pc, pod) = env.run_pod("pod", true, false);
    let id = cri
        .create_container(&pod, &pc, &container_config("a", IMG, &SLEEPER, &pc))
        .expect("CreateContainer");
    cri.start_container(&id).expect("StartContainer");
    let m = env.exec_out(&id, &["cat", "/proc/self/uid_map"]);
    assert_eq!(uid_map(&m), (0, 0, 4294967295), "the host's IDs: {m}");
    assert_eq!(env.c.live_ranges(), 0);
    cri.stop_container(&id, 10).expect("StopContainer");
    cri.remove_container(&id).expect("RemoveContainer");
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
}

on_containerd!(a_dead_sandbox_takes_its_containers_before_its_range_goes: V1_6, V2);
/// The pod's pause process dies: CRI deletes the sandbox's task at once,
/// while the pod's containers run. Their processes are killed before the
/// pod's range is released (none may run on in a range another pod can
/// get); the shim serves their tasks until they are deleted, then exits.
fn a_dead_sandbox_takes_its_containers_before_its_range_goes() {
    let env = setup(false, &[(IMG, 1)]);
    let cri = &env.cri;
    let (pc, pod) = env.run_pod("pod", true, false);
    let id = cri
        .create_container(&pod, &pc, &container_config("a", IMG, &SLEEPER, &pc))
        .expect("CreateContainer");
    cri.start_container(&id).expect("StartContainer");
    let (_, host, size) = uid_map(&env.exec_out(&id, &["cat", "/proc/self/uid_map"]));
    let pause = rustix::process::Pid::from_raw(sandbox_pid(cri, &pod) as i32).expect("pid");
    rustix::process::kill_process(pause, rustix::process::Signal::KILL).expect("kill pause");
    let s = cri
        .wait_exited(&id, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", env.c.log_tail(100)));
    assert_eq!(s.exit_code, 137, "{s:?}");
    wait_for("the pod's range released", Duration::from_secs(30), || {
        let left = processes_in_range(host, size);
        if env.c.live_ranges() == 0 && left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} ranges, processes {left:?}",
                env.c.live_ranges()
            ))
        }
    });
    cri.remove_container(&id).expect("RemoveContainer");
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
    assert!(env.shims().is_empty());
}
