//! The harness itself, proven with the stock runc shim
//! (`io.containerd.runc.v2`), so that these tests do not depend on idshift:
//! a private containerd starts, imports locally built images of 1 and 60
//! layers, runs containers, and leaves no mount, process or file behind
//! when dropped (also when the test panics); two run side by side.
//!
//! Container ids are unique per test: runc keeps its state in
//! /run/containerd/runc/<namespace>/<id>, shared by every containerd.

use idshift_tests::{
    build_image, host_mountinfo, import_image, processes_matching, unique, Containerd,
    ContainerdOptions, Flavour,
};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const NS: &str = "harness";
const RUNC: &str = "--runtime=io.containerd.runc.v2";
const IMG1: &str = "docker.io/library/idshift-busybox:1";
const IMG60: &str = "docker.io/library/idshift-busybox:60";
const SCRIPT: &str = "echo hello; cat /layers/60 2>/dev/null; exit 3";

fn start() -> Containerd {
    Containerd::start(ContainerdOptions::default()).expect("start a private containerd")
}

fn import(c: &Containerd, name: &str, layers: usize) {
    let archive = build_image(c.base(), name, layers).expect("build image");
    import_image(c, NS, &archive, name).expect("import image");
}

/// Mount-table lines and processes that mention `base`.
fn traces_of(base: &Path) -> (Vec<String>, Vec<(u32, String)>) {
    let needle = base.display().to_string();
    let mounts = host_mountinfo()
        .into_iter()
        .filter(|l| l.contains(&needle))
        .collect();
    (mounts, processes_matching(&needle))
}

/// After a drop: nothing of `base` is left, at once (the drop waits until
/// the processes it killed are gone).
fn assert_gone(base: &Path) {
    let (mounts, procs) = traces_of(base);
    assert!(
        mounts.is_empty() && procs.is_empty() && !base.exists(),
        "left behind by the containerd in {}: mounts {mounts:#?}, processes {procs:#?}, \
         dir exists: {}",
        base.display(),
        base.exists()
    );
}

/// Starts a task that runs until killed and waits until it runs.
fn run_detached(c: &Containerd, image: &str, id: &str) {
    c.ctr(NS, &["run", "-d", RUNC, image, id, "sleep", "1000"])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = c.ctr(NS, &["tasks", "ls"]).ok().stdout.clone();
        if ls
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never ran: {ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runc_runs_1_and_60_layer_images_and_drop_cleans_up() {
    let c = start();
    let base = c.base().to_path_buf();
    assert!(c.address().exists(), "the gRPC socket");
    assert!(c.root().is_dir(), "containerd's root");
    assert!(
        c.log().contains("containerd successfully booted"),
        "{}",
        c.log()
    );

    import(&c, IMG1, 1);
    import(&c, IMG60, 60);
    let images = c.ctr(NS, &["images", "ls", "-q"]).ok().stdout.clone();
    assert_eq!(
        images.lines().collect::<Vec<_>>(),
        [IMG1, IMG60],
        "ctr images ls"
    );
    // Every layer of the 60-layer image is an unpacked overlayfs snapshot.
    let snaps = c.ctr(NS, &["snapshots", "ls"]).ok().stdout.clone();
    assert_eq!(snaps.lines().skip(1).count(), 60, "{snaps}");

    // ctr run returns the task's exit code.
    let id = unique("one");
    let out = c.ctr(
        NS,
        &["run", "--rm", RUNC, IMG1, &id, "/bin/sh", "-c", SCRIPT],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(3), "hello\n"),
        "{out:?}"
    );
    let id = unique("sixty");
    let out = c.ctr(
        NS,
        &["run", "--rm", RUNC, IMG60, &id, "/bin/sh", "-c", SCRIPT],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(3), "hello\nlayer 60\n"),
        "{out:?}"
    );
    let id = unique("cat");
    let out = c.ctr(NS, &["run", "--rm", RUNC, IMG60, &id, "cat", "/layers/60"]);
    assert_eq!(out.ok().stdout, "layer 60\n");
    // The image's files are root's, and /etc/passwd is the image's.
    let id = unique("who");
    let out = c.ctr(
        NS,
        &[
            "run",
            "--rm",
            RUNC,
            IMG1,
            &id,
            "/bin/sh",
            "-c",
            "stat -c %u:%g /bin/busybox /etc/passwd; id -un; stat -c %a /tmp",
        ],
    );
    assert_eq!(out.ok().stdout, "0:0\n0:0\nroot\n1777\n");

    // Leave a running task behind, with its shim and rootfs mount: the drop
    // has to clean them up.
    let id = unique("left");
    run_detached(&c, IMG60, &id);
    let (mounts, procs) = traces_of(&base);
    assert!(
        mounts.iter().any(|m| m.contains(&id)),
        "the running task's rootfs: {mounts:#?}"
    );
    assert!(
        procs
            .iter()
            .any(|(_, cmd)| cmd.contains("containerd-shim-runc-v2")),
        "its shim: {procs:#?}"
    );
    drop(c);
    assert_gone(&base);
}

#[test]
fn drop_cleans_up_after_a_panic() {
    let base: Mutex<Option<PathBuf>> = Mutex::new(None);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = start();
        if let Ok(mut b) = base.lock() {
            *b = Some(c.base().to_path_buf());
        }
        import(&c, IMG1, 1);
        run_detached(&c, IMG1, &unique("doomed"));
        panic!("a deliberate panic with a task running");
    }));
    assert!(res.is_err(), "the closure panicked");
    let base = base
        .lock()
        .expect("lock")
        .clone()
        .expect("containerd started");
    assert_gone(&base);
}

#[test]
fn drop_cleans_up_after_containerd_died() {
    let c = start();
    let base = c.base().to_path_buf();
    import(&c, IMG1, 1);
    let id = unique("orphan");
    run_detached(&c, IMG1, &id);
    let ls = c.ctr(NS, &["tasks", "ls"]).ok().stdout.clone();
    let task_pid: u32 = ls
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("the task's pid");
    let containerd = c.pid().expect("containerd's pid");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &containerd.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The shim, its container and the rootfs mount outlive containerd: the
    // drop finds them by the base dir, and removes the dead shim's socket.
    let sockets = c.shim_sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    drop(c);
    assert_gone(&base);
    assert!(!sockets[0].exists(), "{} is left", sockets[0].display());
    let stat = std::fs::read_to_string(format!("/proc/{task_pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the container's process survived: {stat}"
    );
    // Nor its cgroup (ctr's default path: /<namespace>/<id>) or runc state.
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroupfs")
        .flatten()
    {
        let cg = hierarchy.path().join(NS).join(&id);
        assert!(!cg.exists(), "{} is left", cg.display());
    }
    let runc_state = Path::new("/run/containerd/runc").join(NS).join(&id);
    assert!(!runc_state.exists(), "{} is left", runc_state.display());
}

/// Two tests meet here, each with a containerd running a task, so that both
/// instances demonstrably run at the same time (when the tests run in
/// parallel, as `cargo test` does by default; a test alone goes on after a
/// while). Returns the bases of the instances that met.
fn rendezvous(base: &Path) -> Vec<PathBuf> {
    static MET: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static CV: Condvar = Condvar::new();
    let mut met = MET.lock().expect("rendezvous lock");
    met.push(base.to_path_buf());
    CV.notify_all();
    let deadline = Instant::now() + Duration::from_secs(20);
    while met.len() < 2 && Instant::now() < deadline {
        met = CV
            .wait_timeout(met, Duration::from_millis(100))
            .expect("rendezvous wait")
            .0;
    }
    met.clone()
}

/// One of the two parallel instances: the same namespace and image names as
/// the other's, a container of its own, a task running while the other's
/// runs too.
fn parallel_instance() {
    let c = start();
    let base = c.base().to_path_buf();
    import(&c, IMG1, 1);
    let id = unique("par");
    run_detached(&c, IMG1, &id);
    let met = rendezvous(&base);
    if met.len() == 2 {
        assert_ne!(met[0], met[1], "each instance has a directory of its own");
    } else {
        eprintln!("the other parallel test did not come (tests run one at a time?)");
    }
    // Each containerd sees its own container only, while both run.
    let ls = c.ctr(NS, &["containers", "ls", "-q"]).ok().stdout.clone();
    assert_eq!(ls.lines().collect::<Vec<_>>(), [id.as_str()]);
    let out = c.ctr(
        NS,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "cat",
            "/etc/passwd",
        ],
    );
    assert!(out.ok().stdout.starts_with("root:x:0:0:"), "{out:?}");
    let id2 = unique("par-rm");
    let out = c.ctr(
        NS,
        &["run", "--rm", RUNC, IMG1, &id2, "/bin/sh", "-c", SCRIPT],
    );
    assert_eq!((out.code, out.stdout.as_str()), (Some(3), "hello\n"));
    drop(c);
    assert_gone(&base);
}

#[test]
fn parallel_instance_a() {
    parallel_instance();
}

#[test]
fn parallel_instance_b() {
    parallel_instance();
}

#[test]
fn cri_plugin_stays_enabled_when_asked() {
    let c = Containerd::start(ContainerdOptions {
        cri: true,
        ..Default::default()
    })
    .expect("containerd with CRI");
    let base = c.base().to_path_buf();
    let plugins = c.ctr(NS, &["plugins", "ls"]).ok().stdout.clone();
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .unwrap_or_default();
    assert!(cri.trim_end().ends_with("ok"), "cri plugin: {plugins}");
    let config = std::fs::read_to_string(c.config_path()).expect("config");
    assert!(config.contains("restrict_oom_score_adj = true"), "{config}");
    // CRI watches a CNI config dir of this instance's, not the host's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.cni_conf_dir().is_dir() {
        assert!(Instant::now() < deadline, "{}", c.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    assert_gone(&base);

    let c = start();
    let plugins = c.ctr(NS, &["plugins", "ls"]).ok().stdout.clone();
    assert!(
        !plugins.lines().any(|l| l.contains(" cri ")),
        "cri is disabled by default: {plugins}"
    );
}

#[test]
fn a_bad_config_fails_fast_with_the_log() {
    let t = Instant::now();
    let err = Containerd::start(ContainerdOptions {
        extra_config: "this is = = not toml".into(),
        ..Default::default()
    })
    .expect_err("containerd cannot start");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(err.to_string().contains("exited"), "{err}");
}

/// Each flavour runs its own containerd (the daemon and `ctr` of its
/// prefix, not the system's), with the config version it needs, and runs a
/// runc container; a test in `Flavour::run` gets it without naming it.
#[test]
fn each_flavour_runs_its_own_containerd() {
    for (flavour, want) in [
        (Flavour::V1_6, "1.6."),
        (Flavour::V1_7, "1.7."),
        (Flavour::V2, "2."),
    ] {
        let c = flavour.run(start);
        assert_eq!(c.flavour(), flavour);
        let v = c.ctr(NS, &["version"]);
        v.ok();
        // Client and server sections each have a "Version:" line.
        let versions: Vec<&str> = v
            .stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Version:"))
            .map(|s| s.trim().trim_start_matches('v'))
            .collect();
        assert_eq!(versions.len(), 2, "{v:?}");
        assert!(
            versions.iter().all(|s| s.starts_with(want)),
            "containerd {}: ctr version says {versions:?}",
            flavour.name()
        );
        let config = std::fs::read_to_string(c.config_path()).expect("config");
        assert!(
            config.contains(&format!("version = {}\n", flavour.config_version())),
            "{config}"
        );
        import(&c, IMG1, 1);
        let out = c.ctr(
            NS,
            &[
                "run",
                "--rm",
                RUNC,
                IMG1,
                &unique("fl"),
                "/bin/sh",
                "-c",
                SCRIPT,
            ],
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(3), "hello\n"),
            "{out:?}"
        );
        let base = c.base().to_path_buf();
        drop(c);
        assert_gone(&base);
    }
    assert_eq!(Flavour::current(), Flavour::V1_6, "restored after run");
}
