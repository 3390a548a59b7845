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

/// idshift's config for the policy giving every pod a range of its own.
const OWN_RANGE: &str = "pod_userns = \"own-range\"";

/// [`OWN_RANGE`] with a pool of 16 ranges from `start` of its own: tests
/// that look for processes in their pod's range run in parallel, each with
/// its own containerd and allocator, and must not see each other's.
fn own_range_at(start: u32) -> String {
    format!("{OWN_RANGE}\n[pool]\nstart = {start}\nsize = 1048576\n")
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
    let env = setup_with(false, &[(IMG, 1), (IMG60, 60)], OWN_RANGE);
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
    let env = setup_with(true, &[(IMG, 1)], OWN_RANGE);
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
    let env = setup_with(false, &[(IMG, 1)], &own_range_at(0x7100_0000));
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

on_containerd!(pods_without_mappings_run_on_the_hosts_ids_by_default: V1_6, V2);
/// The default `pod_userns = "as-requested"`: a pod containerd asks no user
/// namespace for runs on the host's IDs, as under runc, with no range
/// allocated.
fn pods_without_mappings_run_on_the_hosts_ids_by_default() {
    let env = setup(false, &[(IMG, 1)]);
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
    let env = setup_with(false, &[(IMG, 1)], &own_range_at(0x7200_0000));
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

/// The sysctls containerd 2.x adds to every sandbox with its own network
/// (`enable_unprivileged_ports`, `enable_unprivileged_icmp`): sent here by
/// the client, so that containerd 1.6 passes them too.
const DEFAULT_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// Files as kubelet writes them for a pod and binds into its containers
/// (root-owned 0644 hosts, hostname, resolv.conf), and a hostPath volume
/// that is a root-owned 0700 directory holding a 0600 file.
fn kubelet_files(env: &Env, pod: &str) -> Vec<k8s_cri::v1::Mount> {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.c.base().join("kubelet-pods").join(pod);
    let vol = dir.join("volumes/data");
    std::fs::create_dir_all(&vol).expect("pod dir");
    let mut mounts = Vec::new();
    for (file, text, path) in [
        (
            "etc-hosts",
            "127.0.0.1 localhost\n10.9.9.9 kubelet-hosts\n",
            "/etc/hosts",
        ),
        ("hostname", "kubelet-hostname\n", "/etc/hostname"),
        ("resolv.conf", "nameserver 10.9.9.10\n", "/etc/resolv.conf"),
    ] {
        let p = dir.join(file);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        mounts.push(k8s_cri::v1::Mount {
            container_path: path.into(),
            host_path: p.display().to_string(),
            ..Default::default()
        });
    }
    std::fs::write(vol.join("secret"), "only-root\n").expect("secret");
    std::fs::set_permissions(vol.join("secret"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    mounts.push(k8s_cri::v1::Mount {
        container_path: "/data".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    });
    mounts
}

/// A pod as kubelet sends it on containerd 2.x: its own network namespace
/// with CNI, the default sysctls, a BestEffort container (oom_score_adj
/// 1000) with kubelet's bind mounts. It runs, and sees what it sees under
/// runc: the sysctls set, oom_score_adj 1000, kubelet's files owned by
/// root, the root-only volume readable. Returns what the checks read, for
/// the policy-specific ones.
fn kubelet_style_pod(env: &Env) -> (String, String) {
    let cri = &env.cri;
    let name = idshift_tests::unique("kubelet");
    let mut pc = pod_config(&name, &env.log_dir(&name), false, false);
    if let Some(l) = pc.linux.as_mut() {
        for (k, v) in DEFAULT_SYSCTLS {
            l.sysctls.insert(k.into(), v.into());
        }
    }
    let pod = cri
        .run_pod(&pc, &env.handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.c.log_tail(100)));
    let mut cc = container_config("app", IMG, &SLEEPER, &pc);
    cc.mounts = kubelet_files(env, &name);
    if let Some(l) = cc.linux.as_mut() {
        l.resources = Some(k8s_cri::v1::LinuxContainerResources {
            oom_score_adj: 1000,
            ..Default::default()
        });
    }
    let id = cri
        .create_container(&pod, &pc, &cc)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.c.log_tail(100)));
    let sh = |script: &str| env.exec_out(&id, &["/bin/sh", "-c", script]);
    assert_eq!(sh("cat /proc/self/oom_score_adj"), "1000\n");
    assert_eq!(
        sh("cat /proc/sys/net/ipv4/ip_unprivileged_port_start"),
        "0\n"
    );
    let ping = sh("cat /proc/sys/net/ipv4/ping_group_range");
    assert_eq!(
        sh("stat -c '%u:%g %a %n' /etc/hosts /etc/hostname /etc/resolv.conf /data"),
        "0:0 644 /etc/hosts\n0:0 644 /etc/hostname\n0:0 644 /etc/resolv.conf\n0:0 700 /data\n"
    );
    assert_eq!(
        sh("cat /etc/hosts"),
        "127.0.0.1 localhost\n10.9.9.9 kubelet-hosts\n"
    );
    assert_eq!(sh("cat /etc/resolv.conf"), "nameserver 10.9.9.10\n");
    assert_eq!(sh("cat /data/secret"), "only-root\n");
    let uid_map = sh("cat /proc/self/uid_map");
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    (ping, uid_map)
}

on_containerd!(a_kubelet_style_pod_runs_under_the_default_config: V1_6, V2);
/// The default config: kubelet's pod runs on the host's IDs, as under runc.
fn a_kubelet_style_pod_runs_under_the_default_config() {
    let env = setup(true, &[(IMG, 1)]);
    let (ping, map) = kubelet_style_pod(&env);
    assert_eq!(ping, "0\t2147483647\n");
    assert_eq!(uid_map(&map), (0, 0, 4294967295), "the host's IDs: {map}");
    env.assert_no_leaks();
}

on_containerd!(a_kubelet_style_pod_runs_in_its_own_range: V1_6, V2);
/// `pod_userns = "own-range"`: the same pod in a range of its own; the
/// sysctls written into containerd's network namespace (the host's user
/// namespace owns it) with ping_group_range translated to the range, and
/// kubelet's files idmapped so that they look as under runc.
fn a_kubelet_style_pod_runs_in_its_own_range() {
    let env = setup_with(true, &[(IMG, 1)], OWN_RANGE);
    let (ping, map) = kubelet_style_pod(&env);
    let (inside, host, size) = uid_map(&map);
    assert_eq!((inside, size), (0, 65536), "{map}");
    assert!(host >= 0x7000_0000, "{map}");
    // Seen from inside: every group of the container, which on the host is
    // exactly the range.
    assert_eq!(ping, "0\t65535\n");
    env.assert_no_leaks();
}

on_containerd!(host_pid_and_ipc_pods_run_as_under_runc: V1_6, V2);
/// A pod sharing the host's PID and IPC namespaces: with the default config
/// and with the own-range policy (the pod runs on the host's IDs: a new user
/// namespace cannot mount proc for the host's PID namespace), its container
/// sees the host's processes and IPC namespace; with `pod_host_access =
/// "refuse"` RunPodSandbox fails saying why, and nothing is left.
fn host_pid_and_ipc_pods_run_as_under_runc() {
    use std::os::unix::fs::MetadataExt;
    let host_ipc = std::fs::metadata("/proc/self/ns/ipc").expect("ipc").ino();
    let host_init = std::fs::read_to_string("/proc/1/comm").expect("comm");
    for (toml, refused) in [
        ("", false),
        (OWN_RANGE, false),
        (
            "pod_userns = \"own-range\"\npod_host_access = \"refuse\"",
            true,
        ),
    ] {
        let env = setup_with(false, &[(IMG, 1)], toml);
        let cri = &env.cri;
        let name = idshift_tests::unique("hostpid");
        let mut pc = pod_config(&name, &env.log_dir(&name), true, false);
        if let Some(ns) = pc
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.pid = k8s_cri::v1::NamespaceMode::Node as i32;
            ns.ipc = k8s_cri::v1::NamespaceMode::Node as i32;
        }
        let r = cri.run_pod(&pc, &env.handler);
        if refused {
            let e = r.expect_err("refused").to_string();
            assert!(
                e.contains("shares the host's PID namespace") && e.contains("pod_host_access"),
                "{e}"
            );
            env.assert_no_leaks();
            continue;
        }
        let pod =
            r.unwrap_or_else(|e| panic!("{toml}: RunPodSandbox: {e}\n{}", env.c.log_tail(100)));
        let id = cri
            .create_container(&pod, &pc, &container_config("a", IMG, &SLEEPER, &pc))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
        cri.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.c.log_tail(100)));
        assert_eq!(
            env.exec_out(&id, &["cat", "/proc/1/comm"]),
            host_init,
            "{toml}"
        );
        let ipc = env.exec_out(&id, &["readlink", "/proc/self/ns/ipc"]);
        assert_eq!(ipc.trim(), format!("ipc:[{host_ipc}]"), "{toml}");
        let m = env.exec_out(&id, &["cat", "/proc/self/uid_map"]);
        assert_eq!(
            uid_map(&m),
            (0, 0, 4294967295),
            "{toml}: the host's IDs: {m}"
        );
        assert_eq!(env.c.live_ranges(), 0, "{toml}");
        cri.stop_pod(&pod).expect("StopPodSandbox");
        cri.remove_pod(&pod).expect("RemovePodSandbox");
        env.assert_no_leaks();
    }
}

/// Whether this containerd passes kubelet's user namespace mappings
/// (`userns_options`) to the runtime: containerd 2.x does, 1.6 ignores them.
fn passes_userns_options(cri: &Cri) -> bool {
    let v = cri.version().expect("Version").runtime_version;
    let major: u32 = v
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    major >= 2
}

on_containerd!(a_pod_with_kubelet_mappings_gets_exactly_them: V1_6, V2);
/// A `hostUsers: false` pod as kubelet sends it (user namespace mode POD,
/// host base 262144, 65536 IDs): both of its containers' uid_map and gid_map
/// are exactly those mappings (under the default policy, as under runc).
/// Needs containerd 2.x, which passes the mappings; on 1.6 it says so and
/// checks nothing.
fn a_pod_with_kubelet_mappings_gets_exactly_them() {
    let env = setup(true, &[(IMG, 1)]);
    let cri = &env.cri;
    if !passes_userns_options(cri) {
        eprintln!(
            "skipped: containerd {} does not pass userns_options",
            cri.version().map(|v| v.runtime_version).unwrap_or_default()
        );
        return;
    }
    let name = idshift_tests::unique("userns");
    let mut pc = pod_config(&name, &env.log_dir(&name), false, false);
    let ids = vec![k8s_cri::v1::IdMapping {
        host_id: 262144,
        container_id: 0,
        length: 65536,
    }];
    if let Some(ns) = pc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.userns_options = Some(k8s_cri::v1::UserNamespace {
            mode: k8s_cri::v1::NamespaceMode::Pod as i32,
            uids: ids.clone(),
            gids: ids,
        });
    }
    let pod = cri
        .run_pod(&pc, &env.handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.c.log_tail(100)));
    for c in ["a", "b"] {
        let id = cri
            .create_container(&pod, &pc, &container_config(c, IMG, &SLEEPER, &pc))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
        cri.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", env.c.log_tail(100)));
        for f in ["uid_map", "gid_map"] {
            let m = env.exec_out(&id, &["cat", &format!("/proc/self/{f}")]);
            assert_eq!(uid_map(&m), (0, 262144, 65536), "{c} {f}: {m}");
            assert_eq!(m.lines().count(), 1, "{c} {f}: {m}");
        }
        assert_eq!(
            env.exec_out(&id, &["stat", "-c", "%u:%g", "/bin/busybox"]),
            "0:0\n"
        );
        // What the container writes lands on the host as kubelet's base.
        let name = format!("written-by-{c}");
        env.exec_out(&id, &["sh", "-c", &format!("echo x > /{name}")]);
        let snapshots = env
            .c
            .root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
        let written = std::fs::read_dir(&snapshots)
            .expect("the overlay snapshotter's snapshots")
            .flatten()
            .map(|e| e.path().join("fs").join(&name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} in no snapshot under {}", snapshots.display()));
        let meta = std::fs::metadata(&written).expect("stat the written file");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.uid(), meta.gid()),
            (262144, 262144),
            "{}",
            written.display()
        );
        // The rootfs: the fd construction (4 mount syscalls in the shim,
        // 1 move_mount inside), nothing of the snapshots in the host's
        // mount table.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let line = loop {
            let log = env.c.log();
            if let Some(l) = log.lines().find(|l| l.contains(&format!("created {id} "))) {
                break l.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no create line for {id}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if line.contains("(fd strategy,") {
            assert!(
                line.contains("4 mount syscalls")
                    && line
                        .contains("then 1 move_mount inside the container's own mount namespace"),
                "{line}"
            );
        }
        let snaps = snapshots.to_string_lossy().into_owned();
        assert!(
            !idshift_tests::host_mountinfo()
                .iter()
                .any(|l| l.contains(&snaps)),
            "a snapshot is mounted on the host"
        );
    }
    assert_eq!(
        env.c.live_ranges(),
        0,
        "kubelet's mappings, no idshift range"
    );
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
}

on_containerd!(a_dead_containers_exec_says_not_running_and_it_is_removed_at_once: V1_6, V2);
/// A container's init dies while a process it started (in the pod's shared
/// PID namespace, so the kernel does not kill it) holds its output: exec
/// into it says it is not running (never a missing `/proc/<pid>/ns` file),
/// the rest of the container is killed at once rather than when the output
/// would have drained, and as soon as CRI reports it exited it can be
/// removed.
fn a_dead_containers_exec_says_not_running_and_it_is_removed_at_once() {
    let env = setup(false, &[(IMG, 1)]);
    let cri = &env.cri;
    let (pc, pod) = env.run_pod("pod", true, true);
    let cc = container_config(
        "a",
        IMG,
        &["/bin/sh", "-c", "sleep 3600 & exec sleep 3600"],
        &pc,
    );
    let id = cri
        .create_container(&pod, &pc, &cc)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", env.c.log_tail(100)));
    cri.start_container(&id).expect("StartContainer");
    env.exec_out(&id, &["true"]);
    let r = cri
        .block_on(
            cri.runtime()
                .container_status(k8s_cri::v1::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                }),
        )
        .expect("verbose status");
    let info: serde_json::Value =
        serde_json::from_str(r.info.get("info").expect("info")).expect("info JSON");
    let pid = info["pid"].as_u64().expect("pid") as i32;
    let init = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(init, rustix::process::Signal::KILL).expect("kill init");
    // Until CRI sees the exit, an exec reaches the shim: it must be refused
    // as not running.
    let mut refusals = 0;
    loop {
        match cri.exec_sync(&id, &["true"], 10) {
            Ok(r) if r.exit_code == 0 => {
                panic!("exec ran in a container whose init was killed")
            }
            Ok(r) => panic!("exec: {r:?}"),
            Err(e) => {
                let m = e.message().to_string();
                // The shim's answer, or containerd's once it deleted the task
                // (2.x deletes it on the exit, racing CRI's view: the shim
                // then no longer has the container).
                assert!(
                    !m.contains("No such file")
                        && (m.contains("not running")
                            || m.contains("EXITED")
                            || m.contains("no running task")
                            || m.contains(&format!("container {id} not found"))),
                    "{m}"
                );
                refusals += 1;
            }
        }
        let s = cri.container_status(&id).expect("status");
        if s.state == ContainerState::ContainerExited as i32 {
            assert_eq!(s.exit_code, 137, "{s:?}");
            break;
        }
        assert!(refusals < 600, "the exit never reached CRI");
        std::thread::sleep(Duration::from_millis(50));
    }
    cri.remove_container(&id)
        .unwrap_or_else(|e| panic!("RemoveContainer right after the exit: {e}"));
    cri.stop_pod(&pod).expect("StopPodSandbox");
    cri.remove_pod(&pod).expect("RemovePodSandbox");
    env.assert_no_leaks();
}
