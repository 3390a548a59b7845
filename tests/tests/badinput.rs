//! Bad input end to end, under a real containerd 1.6: specs whose values
//! the kernel or idshift refuses fail Create with an error naming the
//! field, the path or the extent (as `ctr` reports it), and leave nothing
//! behind (mounts, ID ranges, processes, run dirs); values runc accepts
//! behave as under runc. What containerd itself sends the shim (a bundle's
//! config.json, the rootfs mounts) is sent straight to an idshift shim
//! over ttrpc. Root needed.

use containerd_shim_protos::api::{ConnectRequest, CreateTaskRequest, ShutdownRequest};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::mount::Mount;
use idshift_tests::{
    busybox_rootfs, processes_matching, shim_dir, shim_log_fifo, unique, Containerd, CtrOutput,
    IDSHIFT_RUNTIME as IDSHIFT, RUNC_RUNTIME as RUNC,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "bad";
const APPLETS: [&str; 6] = ["sh", "cat", "sleep", "true", "echo", "grep"];
const LEAK_WAIT: Duration = Duration::from_secs(10);

/// ctr's default spec for `rootfs`, running `script`.
fn spec(c: &Containerd, rootfs: &Path, script: &str) -> serde_json::Value {
    c.oci_spec(NS, rootfs, script)
}

/// `ctr run --rm --config <spec>` under `runtime`.
fn run(c: &Containerd, runtime: &str, spec: &serde_json::Value) -> CtrOutput {
    run_id(c, runtime, spec).1
}

/// [`run`], with the container's id (and cgroup `/<NS>/<id>`).
fn run_id(c: &Containerd, runtime: &str, spec: &serde_json::Value) -> (String, CtrOutput) {
    c.run_spec(NS, runtime, "b", spec)
}

/// The cgroup directories of `id` (`/<NS>/<id>`) left in any hierarchy.
fn cgroups_left(id: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let v2 = root.join(NS).join(id);
    if v2.exists() {
        left.push(v2);
    }
    for h in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let d = h.path().join(NS).join(id);
        if d.exists() {
            left.push(d);
        }
    }
    left
}

fn namespaces(s: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    s["linux"]["namespaces"]
        .as_array_mut()
        .expect("linux.namespaces")
}

/// Every value below fails `ctr run` at Create (not at Start, which would
/// leave the task behind under `ctr run --rm`) with an error naming the
/// field and value, and nothing is left behind.
#[test]
fn bad_specs_fail_create_naming_the_problem() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let base = spec(&c, &rootfs, "echo hi");
    let regular = c.base().join("regular-file");
    std::fs::write(&regular, "not a namespace").expect("write");
    let mut cases: Vec<(&str, serde_json::Value, String)> = Vec::new();

    let mut s = base.clone();
    namespaces(&mut s).push(serde_json::json!({"type": "bogus"}));
    cases.push((
        "unknown namespace type",
        s,
        "is invalid: unknown variant `bogus`, expected one of `mount`".into(),
    ));
    // The test's own network namespace, given for pid.
    let netns = format!("/proc/{}/ns/net", std::process::id());
    for (what, path, want) in [
        (
            "regular file as a namespace",
            regular.display().to_string(),
            format!("{} is not a namespace file", regular.display()),
        ),
        (
            "/dev/null as a namespace",
            "/dev/null".into(),
            "/dev/null is not a namespace file".into(),
        ),
        (
            "missing namespace path",
            "/nonexistent/ns".into(),
            "opening /nonexistent/ns: No such file or directory".into(),
        ),
        (
            "netns given for pid",
            netns.clone(),
            format!("{netns} is a network namespace, not a pid namespace"),
        ),
    ] {
        let mut s = base.clone();
        for n in namespaces(&mut s) {
            if n["type"] == "pid" {
                n["path"] = serde_json::json!(path);
            }
        }
        cases.push((
            what,
            s,
            format!("linux.namespaces: the pid namespace's path: {want}"),
        ));
    }

    let mut s = base.clone();
    namespaces(&mut s).push(serde_json::json!({"type": "user", "path": "/dev/null"}));
    cases.push((
        "/dev/null as the user namespace",
        s,
        "/dev/null is not a user namespace".into(),
    ));
    let host = 1_879_048_192u32;
    let with_maps = |uid: serde_json::Value| {
        let mut s = base.clone();
        namespaces(&mut s).push(serde_json::json!({"type": "user"}));
        s["linux"]["uidMappings"] = uid;
        s["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": host, "size": 65536}]);
        s
    };
    cases.push((
        "overlapping uid mappings",
        with_maps(serde_json::json!([
            {"containerID": 0, "hostID": host, "size": 65536},
            {"containerID": 100, "hostID": host + 100_000, "size": 10},
        ])),
        "invalid ID mappings: uid mappings 0 and 1 overlap on the container side".into(),
    ));
    cases.push((
        "uid mapping past 2^32",
        with_maps(serde_json::json!([
            {"containerID": 0, "hostID": u32::MAX, "size": 2},
        ])),
        "invalid ID mappings: uid mapping 0 (host ID 4294967295 + size 2) goes past 4294967294"
            .into(),
    ));
    cases.push((
        "uid mapping of size 0",
        with_maps(serde_json::json!([{"containerID": 0, "hostID": host, "size": 0}])),
        "invalid ID mappings: uid mapping 0 has size 0".into(),
    ));
    let many: Vec<serde_json::Value> = (0..341u32)
        .map(|i| serde_json::json!({"containerID": i, "hostID": host + i, "size": 1}))
        .collect();
    cases.push((
        "341 uid mapping extents",
        with_maps(serde_json::json!(many)),
        "invalid ID mappings: 341 uid mapping extents exceed the kernel's limit of 340".into(),
    ));

    // An idmapped bind mount with mappings of its own that overlap.
    let mut s = base.clone();
    s["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": c.base(), "options": ["rbind"],
            "uidMappings": [
                {"containerID": 0, "hostID": host, "size": 65536},
                {"containerID": 65536, "hostID": host + 1000, "size": 10},
            ],
            "gidMappings": [{"containerID": 0, "hostID": host, "size": 65536}],
        }));
    cases.push((
        "overlapping mappings of an idmapped mount",
        s,
        "idmapped mount /data: its mappings: invalid ID mappings: uid mappings 0 and 1 overlap on the host side".into(),
    ));
    let mut s = base.clone();
    s["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/../../etc/idshift-bad", "type": "tmpfs", "source": "tmpfs"}));
    cases.push((
        "mount destination with ..",
        s,
        "mount destination /../../etc/idshift-bad contains \"..\"".into(),
    ));

    let mut s = base.clone();
    s["process"]["cwd"] = serde_json::json!("relative");
    cases.push((
        "relative cwd",
        s,
        "process.cwd \"relative\" is not an absolute path".into(),
    ));
    // A mount destination that is a symlink, in the image, to a host
    // directory: refused (runc mounts on the symlink's target resolved in
    // the rootfs); the host directory is untouched either way.
    let host_dir = c.base().join(unique("host-dir"));
    std::fs::create_dir(&host_dir).expect("host dir");
    std::os::unix::fs::symlink(&host_dir, rootfs.join("dlink")).expect("symlink");
    let mut s = base.clone();
    s["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/dlink", "type": "tmpfs", "source": "tmpfs"}));
    cases.push((
        "destination a symlink to a host dir",
        s,
        "resolving (a dangling symlink in the image?) the newly made mount destination /dlink inside the rootfs".into(),
    ));
    for (what, args, want) in [
        (
            "binary is a directory",
            serde_json::json!(["/etc"]),
            "exec: \"/etc\": no such executable file",
        ),
        (
            "missing binary",
            serde_json::json!(["/bin/nosuchbinary"]),
            "exec: \"/bin/nosuchbinary\": no such executable file",
        ),
        (
            "binary not on PATH",
            serde_json::json!(["nosuchbinary"]),
            "exec: \"nosuchbinary\": executable file not found in $PATH",
        ),
    ] {
        let mut s = base.clone();
        s["process"]["args"] = args;
        cases.push((what, s, want.into()));
    }
    for (field, value, want) in [
        (
            "uid",
            99_999_999u32,
            "process.user.uid 99999999 is not mapped in the container's user namespace (uid_map: 0 ",
        ),
        (
            "gid",
            4_000_000_000,
            "process.user.gid 4000000000 is not mapped in the container's user namespace (gid_map: 0 ",
        ),
    ] {
        let mut s = base.clone();
        s["process"]["user"][field] = serde_json::json!(value);
        cases.push(("unmapped user", s, want.into()));
    }
    let mut s = base.clone();
    s["process"]["user"]["additionalGids"] = serde_json::json!([0, 70_000]);
    cases.push((
        "unmapped additional gid",
        s,
        "process.user.additionalGids 70000 is not mapped".into(),
    ));
    for (what, rlimits, want) in [
        (
            "rlimit soft above hard",
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}]),
            "process.rlimits RLIMIT_NOFILE: the soft limit 100 is above the hard limit 10",
        ),
        (
            "unknown rlimit",
            serde_json::json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
            "is invalid: unknown variant `RLIMIT_BOGUS`",
        ),
    ] {
        let mut s = base.clone();
        s["process"]["rlimits"] = rlimits;
        cases.push((what, s, want.into()));
    }
    for adj in [-1001, 1001] {
        let mut s = base.clone();
        s["process"]["oomScoreAdj"] = serde_json::json!(adj);
        cases.push((
            "oomScoreAdj out of range",
            s,
            format!("process.oomScoreAdj {adj} is outside the kernel's range -1000..1000"),
        ));
    }
    let mut s = base.clone();
    s["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .expect("bounding")
        .push(serde_json::json!("CAP_BOGUS"));
    cases.push((
        "unknown capability",
        s,
        "is invalid: no variant for CAP_BOGUS".into(),
    ));

    for (what, s, want) in cases {
        let (id, out) = run_id(&c, IDSHIFT, &s);
        assert_eq!(out.code, Some(1), "{what}: {out:?}");
        assert!(
            out.stderr
                .starts_with("ctr: failed to create shim task: idshift create "),
            "{what}: not a Create failure: {out:?}"
        );
        assert!(
            out.stderr.contains(&want),
            "{what}: {want:?} missing in {:?}",
            out.stderr
        );
        let leaks = c.leaks_within(LEAK_WAIT);
        assert!(leaks.is_empty(), "{what}: leaks {leaks:#?}");
        assert_eq!(
            cgroups_left(&id),
            Vec::<PathBuf>::new(),
            "{what}: cgroup left"
        );
    }
    // The host's /etc was not touched by the `..` destination, nor the
    // host dir by the symlinked one.
    assert!(!Path::new("/etc/idshift-bad").exists());
    assert_eq!(
        std::fs::read_dir(&host_dir).expect("host dir").count(),
        0,
        "something was made in the host dir"
    );
    let hd = host_dir.display().to_string();
    assert!(
        !idshift_tests::host_mountinfo()
            .iter()
            .any(|l| l.contains(&hd)),
        "mounted on the host dir"
    );
    c.assert_no_leaks(LEAK_WAIT);
}

/// A systemd cgroupsPath (`slice:prefix:name`, what `ctr run --cgroup
/// system.slice:idshift:NAME` and kubeadm's SystemdCgroup set) where
/// systemd is not the init system (this host): Create fails naming the
/// cgroupsPath and why, and leaves nothing behind. Under systemd,
/// tests/tests/cgroup2.rs (make test-vm) checks the scope itself.
#[test]
fn systemd_cgroups_path_without_systemd_fails_create() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("skipped: systemd is the init system here (make test-vm checks the driver)");
        return;
    }
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let id = unique("sd");
    let cgroups_path = format!("system.slice:idshift:{id}");
    let mut s = spec(&c, &rootfs, "echo hi");
    s["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path);
    let path = c.base().join(format!("{id}.json"));
    std::fs::write(&path, s.to_string()).expect("write spec");
    let p = path.display().to_string();
    let out = c.ctr(NS, &["run", "--rm", "--config", &p, IDSHIFT, &id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("ctr: failed to create shim task: idshift create "),
        "not a Create failure: {out:?}"
    );
    for want in [
        format!("cgroupsPath \"{cgroups_path}\" asks for the systemd cgroup driver"),
        "systemd is not the init system here (/run/systemd/system does not exist)".into(),
    ] {
        assert!(out.stderr.contains(&want), "{want:?} missing in {out:?}");
    }
    c.assert_no_leaks(LEAK_WAIT);
}

/// Values runc takes (or refuses) as they are: the same outcome under
/// idshift. A relative mount destination (taken as under /), a missing
/// working directory (made), rlimits of
/// infinity where the host allows them, a CPU quota of 0 or -5 and a
/// period of 0 (unset, unlimited), a memory limit of i64::MAX (the
/// kernel's maximum): the same output. A NOFILE hard limit of u64::MAX
/// (above the kernel's nr_open): both fail Create, idshift naming the
/// rlimit. A negative CPU period or rlimit: ctr refuses the spec for both.
#[test]
fn values_runc_takes_behave_as_under_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let base = spec(&c, &rootfs, "echo hi; ulimit -c");
    let mut same: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut s = base.clone();
    s["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "tmp/rel", "type": "tmpfs", "source": "tmpfs"}));
    s["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "cat /proc/self/mountinfo | grep -c ' /tmp/rel '"
    ]);
    same.push(("relative destination", s));
    let mut s = base.clone();
    s["process"]["cwd"] = serde_json::json!("/no/such/dir");
    s["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "pwd"]);
    same.push(("missing cwd", s));
    let mut s = base.clone();
    s["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX}]);
    same.push(("RLIMIT_CORE infinity", s));
    for (what, cpu) in [
        ("cpu quota 0", serde_json::json!({"quota": 0})),
        ("cpu quota -5", serde_json::json!({"quota": -5})),
        (
            "cpu period 0",
            serde_json::json!({"quota": 50000, "period": 0}),
        ),
    ] {
        let mut s = base.clone();
        s["linux"]["resources"]["cpu"] = cpu;
        same.push((what, s));
    }
    let mut s = base.clone();
    s["linux"]["resources"]["memory"] = serde_json::json!({"limit": i64::MAX});
    same.push(("memory limit i64::MAX", s));
    let mut s = base.clone();
    s["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 50000, "period": -1});
    same.push(("negative cpu period", s));
    let mut s = base.clone();
    s["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 10}]);
    same.push(("negative rlimit", s));
    for (what, s) in &same {
        let out = c.same_under_idshift_and_runc(|runtime| run(&c, runtime, s));
        match *what {
            "relative destination" => assert_eq!(out.ok().stdout, "1\n", "{what}"),
            "missing cwd" => assert_eq!(out.ok().stdout, "/no/such/dir\n", "{what}"),
            "RLIMIT_CORE infinity" => assert_eq!(out.ok().stdout, "hi\nunlimited\n", "{what}"),
            "negative cpu period" | "negative rlimit" => {
                assert_ne!(out.code, Some(0), "{what}: {out:?}");
                assert!(out.stderr.contains("cannot unmarshal"), "{what}: {out:?}");
            }
            _ => assert!(out.ok().stdout.starts_with("hi\n"), "{what}: {out:?}"),
        }
        let leaks = c.leaks_within(LEAK_WAIT);
        assert!(leaks.is_empty(), "{what}: leaks {leaks:#?}");
    }
    let mut s = base.clone();
    s["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": u64::MAX}]);
    let ours = run(&c, IDSHIFT, &s);
    let runc = run(&c, RUNC, &s);
    assert_eq!(ours.code, Some(1), "{ours:?}");
    assert_eq!(runc.code, Some(1), "{runc:?}");
    assert!(runc.stderr.contains("operation not permitted"), "{runc:?}");
    assert!(
        ours.stderr.contains(
            "process.rlimits RLIMIT_NOFILE (soft 1024, hard 18446744073709551615): Operation not permitted"
        ),
        "{ours:?}"
    );
    c.assert_no_leaks(LEAK_WAIT);
}

/// Exec with a binary that does not exist, or as a user or group the
/// container's user namespace does not map, fails the Exec naming it; a
/// user name missing from the image's /etc/passwd is ctr's own error, the
/// same as under runc. The container runs on and a good exec works after.
#[test]
fn bad_execs_fail_naming_the_problem() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
    let id = unique("x");
    let mut s = spec(&c, &rootfs, "sleep 1000");
    s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
    let path = c.base().join(format!("{id}.json"));
    std::fs::write(&path, s.to_string()).expect("write spec");
    let p = path.display().to_string();
    c.ctr(NS, &["run", "-d", "--config", &p, IDSHIFT, &id]).ok();
    // `ctr task exec [flags] <id> <args>`.
    let exec = |flags: &[&str], args: &[&str]| {
        let exec_id = unique("e");
        let mut a = vec!["task", "exec", "--exec-id", &exec_id];
        a.extend_from_slice(flags);
        a.push(&id);
        a.extend_from_slice(args);
        c.ctr(NS, &a)
    };
    for (flags, args, want) in [
        (
            vec![],
            "/bin/nosuch",
            "exec: \"/bin/nosuch\": no such executable file",
        ),
        (
            vec![],
            "nosuch",
            "exec: \"nosuch\": executable file not found in $PATH",
        ),
        (
            vec!["--user", "99999999"],
            "/bin/true",
            "process.user.uid 99999999 is not mapped in the container's user namespace",
        ),
        (
            vec!["--user", "0:99999999"],
            "/bin/true",
            "process.user.gid 99999999 is not mapped in the container's user namespace",
        ),
        (vec!["--user", "nosuchuser"], "/bin/true", "no users found"),
        (
            vec!["--cwd", "/no/such/dir"],
            "/bin/true",
            "process.cwd /no/such/dir: No such file or directory",
        ),
    ] {
        let out = exec(&flags, &[args]);
        assert_eq!(out.code, Some(1), "{flags:?} {args}: {out:?}");
        assert!(
            out.stderr.contains(want),
            "{flags:?} {args}: {want:?} in {out:?}"
        );
    }
    assert_eq!(
        exec(&[], &["/bin/sh", "-c", "echo still here"]).ok().stdout,
        "still here\n"
    );
    // Only the container's init is left in its cgroup: every failed
    // exec's process is gone.
    let procs = PathBuf::from("/sys/fs/cgroup/pids")
        .join(NS)
        .join(&id)
        .join("cgroup.procs");
    if procs.exists() {
        let deadline = Instant::now() + LEAK_WAIT;
        loop {
            let n = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .count();
            if n == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{n} processes in {procs:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    c.kill_and_remove(NS, &[&id]).expect("remove");
    c.assert_no_leaks(LEAK_WAIT);
}

/// A shim started as containerd starts one (`start`), for sending it
/// requests containerd would send; shut down and killed on drop.
struct Shim {
    id: String,
    task: TaskClient,
}

impl Shim {
    fn start(c: &Containerd, dir: &Path) -> Shim {
        let id = unique("shim");
        let bundle = dir.join(&id);
        std::fs::create_dir_all(&bundle).expect("bundle");
        // containerd makes the shim's log fifo in the bundle and reads it.
        shim_log_fifo(&bundle);
        let out = Command::new(shim_dir().join("containerd-shim-idshift-v2"))
            .args(["-namespace", NS, "-id", &id, "-address"])
            .arg(c.address())
            .arg("start")
            .current_dir(&bundle)
            .env("TTRPC_ADDRESS", c.ttrpc_address())
            .env("GRPC_ADDRESS", c.address())
            .env("NAMESPACE", NS)
            .env("IDSHIFT_CONFIG", &c.idshift_config)
            .stdin(Stdio::null())
            .output()
            .expect("shim start");
        assert!(out.status.success(), "shim start: {out:?}");
        let address = String::from_utf8(out.stdout).expect("utf8");
        let client =
            containerd_shim_protos::ttrpc::Client::connect(address.trim()).expect("connect");
        let task = TaskClient::new(client);
        let mut req = ConnectRequest::new();
        req.id = id.clone();
        task.connect(ctx(), &req).expect("Connect");
        Shim { id, task }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let mut req = ShutdownRequest::new();
        req.id = self.id.clone();
        let _ = self.task.shutdown(ctx(), &req);
        let needle = format!("-id {} ", self.id);
        let deadline = Instant::now() + LEAK_WAIT;
        while !processes_matching(&needle).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        idshift_tests::kill_processes_matching(&needle, Duration::from_secs(5));
    }
}

fn ctx() -> containerd_shim_protos::ttrpc::context::Context {
    containerd_shim_protos::ttrpc::context::with_timeout(20_000_000_000)
}

/// The message of a ttrpc error status (what containerd logs and ctr
/// prints), else the error's description.
fn message(e: containerd_shim_protos::ttrpc::Error) -> String {
    match e {
        containerd_shim_protos::ttrpc::Error::RpcStatus(s) => s.message,
        other => format!("{other:?}"),
    }
}

fn overlay(options: &[String]) -> Vec<Mount> {
    let mut m = Mount::new();
    m.type_ = "overlay".into();
    m.source = "overlay".into();
    m.options = options.to_vec();
    vec![m]
}

/// Unmounts on drop (a test's tmpfs).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// What containerd sends and ctr cannot: a bundle whose config.json is not
/// JSON or is cut short, and rootfs mounts (containerd's snapshotter
/// overlay) with no lowerdir, a lowerdir that does not exist, one climbing
/// out of the bundle, 501 layers, an upperdir on another mount than its
/// workdir. Each Create fails naming the problem; nothing is left (the
/// upper dir is not even chowned), and the shim still creates a good one.
#[test]
fn bad_bundles_and_rootfs_mounts_fail_create() {
    let c = Containerd::start("").expect("start containerd");
    let dir = c.base().join("bundles");
    let shim = Shim::start(&c, &dir);
    let layer = busybox_rootfs(c.base(), &APPLETS).expect("busybox layer");
    let good = {
        let mut s = spec(&c, Path::new("rootfs"), "true");
        s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{}", unique("cg")));
        s.to_string()
    };
    let create = |config: &str, rootfs: Vec<Mount>| {
        let id = unique("t");
        let bundle = dir.join(&id);
        std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
        std::fs::write(bundle.join("config.json"), config).expect("config.json");
        let mut req = CreateTaskRequest::new();
        req.id = id.clone();
        req.bundle = bundle.display().to_string();
        req.rootfs = rootfs;
        (id, shim.task.create(ctx(), &req))
    };
    let snap = |name: &str| {
        let d = c.base().join(unique(name));
        std::fs::create_dir_all(&d).expect("snapshot dir");
        d
    };
    let (upper, work) = (snap("upper"), snap("work"));
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&upper).expect("upper"));
    let uw = format!("upperdir={}", upper.display());
    let ww = format!("workdir={}", work.display());
    let missing = c.base().join("no-such-layer");
    let many: Vec<String> = (0..501).map(|_| layer.display().to_string()).collect();
    let cut = &good[..good.len() / 2];
    let cases: Vec<(&str, String, Vec<Mount>, String)> = vec![
        (
            "config.json not JSON",
            "{not json".into(),
            vec![],
            "is invalid: key must be a string at line 1 column 2".into(),
        ),
        (
            "config.json cut short",
            cut.into(),
            vec![],
            "is invalid: EOF while parsing".into(),
        ),
        (
            "no lowerdir",
            good.clone(),
            overlay(&[uw.clone(), ww.clone()]),
            "invalid rootfs mounts: overlay rootfs mount has no lowerdir= option".into(),
        ),
        (
            "missing lowerdir",
            good.clone(),
            overlay(&[
                format!("lowerdir={}", missing.display()),
                uw.clone(),
                ww.clone(),
            ]),
            format!(
                "building the rootfs: layer 0 ({}) cannot be used: No such file or directory",
                missing.display()
            ),
        ),
        (
            "lowerdir climbing out of the bundle",
            good.clone(),
            overlay(&["lowerdir=../../..".into(), uw.clone(), ww.clone()]),
            "invalid rootfs mounts: lowerdir entry \"../../..\" contains a '..' component".into(),
        ),
        (
            "501 layers",
            good.clone(),
            overlay(&[
                format!("lowerdir={}", many.join(":")),
                uw.clone(),
                ww.clone(),
            ]),
            "invalid rootfs mounts: 501 layers exceed overlayfs's limit of 500 lower layers".into(),
        ),
    ];
    // Everything left behind but the serving shim itself.
    let shim_needle = format!("-id {} ", shim.id);
    let leaks_but_the_shim = || -> Vec<String> {
        c.leaks()
            .into_iter()
            .filter(|l| !l.contains(&shim_needle))
            .collect()
    };
    let check =
        |what: &str, id: &str, res: containerd_shim_protos::ttrpc::Result<_>, want: &str| {
            let err = match res {
                Ok(r) => panic!("{what}: Create succeeded: {r:?}"),
                Err(e) => message(e),
            };
            assert!(
                err.contains(&format!("idshift create {id}: ")) && err.contains(want),
                "{what}: {want:?} missing in {err}"
            );
            let leaks = leaks_but_the_shim();
            assert!(leaks.is_empty(), "{what}: leaks {leaks:#?}");
        };
    for (what, config, rootfs, want) in cases {
        let (id, res) = create(&config, rootfs);
        check(what, &id, res, &want);
    }
    {
        // A tmpfs over the work dir: upper and work on different mounts.
        rustix::mount::mount(
            "idshift-test",
            &work,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount tmpfs");
        let _unmount = Unmount(work.clone());
        let (id, res) = create(
            &good,
            overlay(&[
                format!("lowerdir={}", layer.display()),
                uw.clone(),
                ww.clone(),
            ]),
        );
        let want = format!(
            "building the rootfs: upperdir {} and workdir {} are on different mounts; overlayfs needs both on the same one",
            upper.display(),
            work.display()
        );
        let err = message(res.expect_err("upper and work apart"));
        assert!(
            err.contains(&id) && err.contains(&want),
            "{want:?} missing in {err}"
        );
    }
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&upper).expect("upper")),
        owner,
        "a refused Create chowned the upper dir"
    );
    assert!(leaks_but_the_shim().is_empty(), "{:#?}", c.leaks());
    // The same shim still creates a container from good mounts.
    let (id, res) = create(
        &good,
        overlay(&[format!("lowerdir={}", layer.display()), uw, ww]),
    );
    res.expect("a good Create after the bad ones");
    let mut del = containerd_shim_protos::api::DeleteRequest::new();
    del.id = id.clone();
    shim.task.delete(ctx(), &del).expect("Delete");
    drop(shim);
    c.assert_no_leaks(LEAK_WAIT);
}

/// A binary the kernel cannot execute (not ELF, no #!) fails at Start, as
/// under runc (the exec is the last step): ctr reports the exec error, and
/// removing the task and container leaves nothing behind.
#[test]
fn an_unexecutable_binary_fails_start_and_cleans_up() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    std::fs::write(rootfs.join("not-elf"), "garbage\n").expect("write");
    std::fs::set_permissions(
        rootfs.join("not-elf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let id = unique("noexec");
    let mut s = spec(&c, &rootfs, "true");
    s["process"]["args"] = serde_json::json!(["/not-elf"]);
    s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
    let path = c.base().join(format!("{id}.json"));
    std::fs::write(&path, s.to_string()).expect("write spec");
    let p = path.display().to_string();
    let out = c.ctr(NS, &["run", "--rm", "--config", &p, IDSHIFT, &id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("exec \"/not-elf\": ENOEXEC: Exec format error"),
        "{out:?}"
    );
    // `ctr run --rm` may leave the task whose Start failed (and so its
    // container): removing them through containerd removes the rest.
    let tasks = c.ctr(NS, &["tasks", "ls", "-q"]);
    if tasks.ok().stdout.lines().any(|l| l.trim() == id) {
        c.ctr(NS, &["task", "rm", "-f", &id]).ok();
    }
    let containers = c.ctr(NS, &["containers", "ls", "-q"]);
    if containers.ok().stdout.lines().any(|l| l.trim() == id) {
        c.ctr(NS, &["containers", "rm", &id]).ok();
    }
    c.assert_no_leaks(LEAK_WAIT);
}
