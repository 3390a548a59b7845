//! OCI runtime completeness under a real containerd 1.6: whole specs
//! (`ctr run --config`) run by idshift and, where runc can run the same
//! spec, by containerd's own runc shim side by side. Root needed.

use idshift_tests::{
    busybox_rootfs, on_containerd, unique, Containerd, CtrOutput, IDSHIFT_RUNTIME as IDSHIFT,
    RUNC_RUNTIME as RUNC,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NS: &str = "oci";

const APPLETS: [&str; 19] = [
    "sh", "cat", "grep", "stat", "touch", "hostname", "ping", "sleep", "ls", "sort", "cut", "wc",
    "echo", "mkdir", "id", "head", "awk", "seq", "ionice",
];

/// ctr's default spec for `rootfs`, running `script`.
fn spec(c: &Containerd, rootfs: &Path, script: &str) -> serde_json::Value {
    c.oci_spec(NS, rootfs, script)
}

/// `ctr run --rm --config <spec>` under `runtime`.
fn run(c: &Containerd, runtime: &str, spec: &serde_json::Value) -> CtrOutput {
    c.run_spec(NS, runtime, "o", spec).1
}

/// The same spec under idshift and runc: the same exit code and output.
fn same_under_both(c: &Containerd, spec: &serde_json::Value) -> CtrOutput {
    c.same_under_idshift_and_runc(|runtime| run(c, runtime, spec))
}

/// Capabilities, no_new_privs, hostname and domainname, a namespaced
/// sysctl, rlimits, umask, a read-only rootfs, masked and read-only paths,
/// a raw socket refused without CAP_NET_RAW, and the mount points (modulo
/// the cgroup hierarchies, see README): the same under idshift and runc.
#[test]
fn process_and_security_settings_match_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let script = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status; \
        hostname; cat /proc/sys/kernel/shmmni; \
        ulimit -n; umask; \
        touch /x 2>&1; echo touch=$?; \
        wc -c < /proc/version; ls /proc/acpi | wc -l; \
        echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; echo sysrw=$?; \
        ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; echo ping=$?; \
        cut -d' ' -f5 /proc/self/mountinfo | grep -v '^/sys/fs/cgroup/' \
        | grep -vE '^/dev/(null|zero|full|random|urandom|tty)$' | sort";
    let mut s = spec(&c, &rootfs, script);
    s["hostname"] = serde_json::json!("oci-host");
    s["domainname"] = serde_json::json!("oci.example");
    s["linux"]["sysctl"] = serde_json::json!({"kernel.shmmni": "1234"});
    s["root"]["readonly"] = serde_json::json!(true);
    s["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]);
    s["process"]["user"]["umask"] = serde_json::json!(0o027);
    s["linux"]["maskedPaths"] = serde_json::json!(["/proc/version", "/proc/acpi"]);
    s["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys"]);
    // Drop CAP_NET_RAW everywhere.
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = s["process"]["capabilities"][set].as_array_mut() {
            caps.retain(|c| c != "CAP_NET_RAW");
        }
    }
    let ns = s["linux"]["namespaces"].as_array_mut().expect("namespaces");
    if !ns.iter().any(|n| n["type"] == "uts") {
        ns.push(serde_json::json!({"type": "uts"}));
    }
    let out = same_under_both(&c, &s);
    let text = out.ok().stdout.clone();
    for want in [
        "CapBnd:\t00000000a80405fb",
        "oci-host",
        "1234",
        "321",
        "0027",
        "touch=1",
        "sysrw=1",
        "ping=1",
        "/proc/version",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    // The masked /proc/version reads empty, /proc/acpi lists nothing.
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| *l == "touch=1")
        .expect("touch line");
    assert_eq!(&lines[i + 1..i + 3], ["0", "0"], "{text}");
    // domainname: runc 1.1 leaves it unset; idshift sets it.
    let mut d = spec(&c, &rootfs, "cat /proc/sys/kernel/domainname");
    d["domainname"] = serde_json::json!("oci.example");
    let ns = d["linux"]["namespaces"].as_array_mut().expect("namespaces");
    if !ns.iter().any(|n| n["type"] == "uts") {
        ns.push(serde_json::json!({"type": "uts"}));
    }
    assert_eq!(run(&c, IDSHIFT, &d).ok().stdout, "oci.example\n");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A symlink in the image that points outside the rootfs (absolute, and
/// relative climbing out) cannot take a mount out of it: the mount lands
/// inside the container's own /etc, the host's /etc is untouched. runc
/// does the same.
#[test]
fn a_symlink_in_the_image_does_not_let_a_mount_escape() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    std::os::unix::fs::symlink("/etc", rootfs.join("abs")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../../../etc", rootfs.join("rel")).expect("symlink");
    let name = unique("idshift-escape");
    let script = format!(
        "grep -c ' /etc/{name}-[ab] ' /proc/self/mountinfo; ls -d /etc/{name}-a /etc/{name}-b"
    );
    let mut s = spec(&c, &rootfs, &script);
    let mounts = s["mounts"].as_array_mut().expect("mounts");
    for (link, suffix) in [("abs", "a"), ("rel", "b")] {
        mounts.push(serde_json::json!({
            "destination": format!("/{link}/{name}-{suffix}"),
            "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"],
        }));
    }
    let out = same_under_both(&c, &s);
    assert_eq!(
        out.ok().stdout,
        format!("2\n/etc/{name}-a\n/etc/{name}-b\n"),
        "both mounts inside the container's /etc"
    );
    for suffix in ["a", "b"] {
        let host = Path::new("/etc").join(format!("{name}-{suffix}"));
        assert!(!host.exists(), "{} was made on the host", host.display());
        assert!(rootfs.join("etc").join(format!("{name}-{suffix}")).is_dir());
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A bind mount with `idmap` shows the host's root-owned files as owned by
/// the container's root (and readable by it at mode 0600), what the
/// container writes there lands as host root on disk; the same directory
/// bound without idmap (under `binds = "shifted"`) shows them as the
/// overflow ID, unreadable. Not
/// compared with runc 1.1, which has no idmapped mounts.
#[test]
fn an_idmap_bind_mount_shows_host_files_as_the_containers_root() {
    // Bind mounts idmapped only where they ask for it.
    let c = Containerd::start("binds = \"shifted\"\n").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let data = c.base().join(unique("data"));
    std::fs::create_dir(&data).expect("mkdir data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(data.join("secret"), "host root's\n").expect("write");
    std::fs::set_permissions(data.join("secret"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let script = "stat -c %u:%g /data/secret; cat /data/secret; echo hi > /data/new; \
        stat -c %u:%g /plain/secret; cat /plain/secret 2>/dev/null; echo cat=$?; \
        stat -c %u /proc/self/uid_map >/dev/null; cat /proc/self/uid_map";
    let mut s = spec(&c, &rootfs, script);
    let mounts = s["mounts"].as_array_mut().expect("mounts");
    mounts.push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": data,
        "options": ["rbind", "rw", "idmap"],
    }));
    mounts.push(serde_json::json!({
        "destination": "/plain", "type": "bind", "source": data, "options": ["rbind", "ro"],
    }));
    let out = run(&c, IDSHIFT, &s);
    let text = out.ok().stdout.clone();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..5],
        ["0:0", "host root's", "65534:65534", "cat=1", lines[4]],
        "{text}"
    );
    assert!(lines[4].trim_start().starts_with('0'), "uid_map: {text}");
    let md = std::fs::metadata(data.join("new")).expect("written through idmap");
    assert_eq!((md.uid(), md.gid()), (0, 0), "on disk as host root");
    // Mappings of the mount's own are honoured too.
    let mut s2 = spec(&c, &rootfs, "stat -c %u:%g /data/secret");
    s2["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": data, "options": ["rbind"],
            "uidMappings": [{"containerID": 0, "hostID": 1879048192u32, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 1879048192u32, "size": 65536}],
        }));
    let out = run(&c, IDSHIFT, &s2);
    let stat = out.ok().stdout.trim().to_string();
    assert!(
        stat == "0:0" || stat == "65534:65534",
        "a mount idmapped with its own mappings: {stat}"
    );
    // A non-bind mount cannot be idmapped: a clear error, nothing left.
    let mut bad = spec(&c, &rootfs, "true");
    bad["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
        }));
    let out = run(&c, IDSHIFT, &bad);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("only supported for bind mounts"),
        "{out:?}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A pids limit stops a fork bomb (bounded by the test); `ctr task update`
/// changes the memory limit live; the cgroup is v1's here.
#[test]
fn pids_limit_and_live_memory_update() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let mut s = spec(
        &c,
        &rootfs,
        "for i in $(seq 1 40); do sleep 3 & done; wait; exit 0",
    );
    s["linux"]["resources"]["pids"] = serde_json::json!({"limit": 10});
    let out = run(&c, IDSHIFT, &s);
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "the fork bomb hit the pids limit: {out:?}"
    );
    // Live update of the memory limit.
    let id = unique("upd");
    let mut s = spec(&c, &rootfs, "sleep 1000");
    s["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
    s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
    let path = c.base().join(format!("{id}.json"));
    std::fs::write(&path, s.to_string()).expect("write spec");
    let p = path.display().to_string();
    c.ctr(NS, &["run", "-d", "--config", &p, IDSHIFT, &id]).ok();
    let limit_file = PathBuf::from("/sys/fs/cgroup/memory")
        .join(NS)
        .join(&id)
        .join("memory.limit_in_bytes");
    let read = || {
        std::fs::read_to_string(&limit_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(read(), (64u64 << 20).to_string());
    }
    // ctr 1.6 has no `task update`: containerd's Update request, sent to
    // the task's shim as containerd sends it.
    let address = std::fs::read_to_string(
        c.containerd_state()
            .join("io.containerd.runtime.v2.task")
            .join(NS)
            .join(&id)
            .join("address"),
    )
    .expect("the task's shim address");
    let client = containerd_shim_protos::ttrpc::Client::connect(address.trim()).expect("connect");
    let task = containerd_shim_protos::shim::shim_ttrpc::TaskClient::new(client);
    let mut req = containerd_shim_protos::api::UpdateTaskRequest::new();
    req.id = id.clone();
    let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = serde_json::json!({"memory": {"limit": 96u64 << 20}})
        .to_string()
        .into_bytes();
    req.resources = containerd_shim_protos::protobuf::MessageField::some(any);
    task.update(
        containerd_shim_protos::ttrpc::context::with_timeout(5_000_000_000),
        &req,
    )
    .expect("Update");
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(read(), (96u64 << 20).to_string());
    }
    c.kill_and_remove(NS, &[&id]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Every capability set missing or empty, alone and all at once (CRI's
/// "drop ALL" is `"capabilities": {}`): CapBnd/CapEff/CapPrm/CapInh/CapAmb
/// of the container's root shell are runc's. A missing set is an empty one,
/// so with no bounding set root does not regain every capability at exec.
#[test]
fn missing_or_empty_capability_sets_match_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let script = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status";
    let base = spec(&c, &rootfs, script);
    let sets = [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ];
    let mut cases: Vec<(String, serde_json::Value)> = Vec::new();
    let mut none = base.clone();
    none["process"]
        .as_object_mut()
        .expect("process")
        .remove("capabilities");
    cases.push(("no capabilities".into(), none));
    let mut drop_all = base.clone();
    drop_all["process"]["capabilities"] = serde_json::json!({});
    cases.push(("capabilities {}".into(), drop_all));
    // Every set given (ambient within inheritable and permitted), then each
    // one missing and each one empty.
    let mut full = base.clone();
    let list = serde_json::json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    for set in sets {
        full["process"]["capabilities"][set] = list.clone();
    }
    cases.push(("every set".into(), full.clone()));
    for set in sets {
        let mut missing = full.clone();
        missing["process"]["capabilities"]
            .as_object_mut()
            .expect("capabilities")
            .remove(set);
        if set == "inheritable" || set == "permitted" {
            // Ambient capabilities must be in both.
            missing["process"]["capabilities"]
                .as_object_mut()
                .expect("capabilities")
                .remove("ambient");
        }
        cases.push((format!("{set} missing"), missing));
        let mut empty = full.clone();
        empty["process"]["capabilities"][set] = serde_json::json!([]);
        if set == "inheritable" || set == "permitted" {
            empty["process"]["capabilities"]["ambient"] = serde_json::json!([]);
        }
        cases.push((format!("{set} empty"), empty));
    }
    for (what, s) in &cases {
        let ours = run(&c, IDSHIFT, s);
        let runc = run(&c, RUNC, s);
        if !runc.success() {
            // runc refuses (e.g. inheritable outside an empty bounding
            // set): idshift refuses at create too, naming the set.
            assert!(
                runc.stderr.contains("failed to create shim task"),
                "{what}: runc: {runc:?}"
            );
            assert!(
                !ours.success()
                    && ours.stderr.contains("failed to create shim task")
                    && ours.stderr.contains("process.capabilities."),
                "{what}: idshift: {ours:?}"
            );
            eprintln!("{what}: refused by both");
            continue;
        }
        assert_eq!(
            (ours.code, &ours.stdout, &ours.stderr),
            (runc.code, &runc.stdout, &runc.stderr),
            "{what}: idshift (left) and runc (right) differ"
        );
        let text = &ours.stdout;
        assert_eq!(text.lines().count(), 5, "{what}: {text}");
        if what.starts_with("no capabilities") || what.starts_with("capabilities {}") {
            assert!(
                text.lines().all(|l| l.ends_with("0000000000000000")),
                "{what}: every set empty: {text}"
            );
        }
        if what.starts_with("bounding") {
            assert!(text.contains("CapBnd:\t0000000000000000"), "{what}: {text}");
        }
        eprintln!("{what}: {}", text.replace('\n', " "));
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Unmounts a mount the test made on the host, even on failure.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `major:minor` of a real block device of this host (for blkio throttles).
fn a_block_device() -> String {
    let mut devs: Vec<(String, String)> = std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let dev = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default();
            (name, dev.trim().to_string())
        })
        .filter(|(_, d)| !d.is_empty())
        .collect();
    devs.sort_by_key(|(n, _)| (n.starts_with("loop") || n.starts_with("zram"), n.clone()));
    devs.first().expect("a block device").1.clone()
}

/// Bind mount options: `rro` makes the mount and its submounts read-only
/// (mount_setattr AT_RECURSIVE), `ro` only the mount, `rnoatime`/`ratime`
/// set the atime mode of every submount: the same as runc. An option a bind
/// mount cannot take is refused, naming it (runc passes it on as data the
/// kernel ignores for binds).
#[test]
fn recursive_bind_options_match_runc() {
    // Without the policy's idmap, so that mountinfo compares line for line
    // (an idmapped bind adds `idmapped`; its flags are the same).
    let c = Containerd::start("binds = \"shifted\"\n").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let data = c.base().join(unique("rro"));
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    // Writable by the container's root under idshift too (an unmapped
    // owner there).
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=1777", "rro-sub"])
        .arg(data.join("sub"))
        .status()
        .expect("mount");
    assert!(st.success());
    let _guard = HostMount(data.join("sub"));
    let script = "for d in /r /r/sub /p /p/sub /a /a/sub; do touch $d/f 2>/dev/null; \
        echo $d=$?; done; \
        awk '$5 ~ /^\\/(r|p|a|n)(\\/sub)?$/ {print $5, $6}' /proc/self/mountinfo | sort";
    let mut s = spec(&c, &rootfs, script);
    let mounts = s["mounts"].as_array_mut().expect("mounts");
    for (dest, opts) in [
        ("/r", serde_json::json!(["rbind", "rro"])),
        ("/p", serde_json::json!(["rbind", "ro"])),
        ("/a", serde_json::json!(["rbind", "rnoatime", "rnodev"])),
        (
            "/n",
            serde_json::json!(["rbind", "noatime", "rrelatime", "rnosuid"]),
        ),
    ] {
        mounts.push(serde_json::json!({
            "destination": dest, "type": "bind", "source": data, "options": opts,
        }));
    }
    let out = same_under_both(&c, &s);
    let text = out.ok().stdout.clone();
    for want in ["/r=1", "/r/sub=1", "/p=1", "/p/sub=0", "/a=0", "/a/sub=0"] {
        assert!(text.lines().any(|l| l == want), "{want}: {text}");
    }
    assert!(text.contains("/a/sub rw,nodev,noatime"), "{text}");
    assert!(text.contains("/n/sub rw,nosuid,relatime"), "{text}");
    // An unknown option on a bind mount: refused, named.
    let mut bad = spec(&c, &rootfs, "true");
    bad["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/b", "type": "bind", "source": data, "options": ["rbind", "bogus"],
        }));
    let out = run(&c, IDSHIFT, &bad);
    assert!(
        !out.success()
            && out.stderr.contains("unknown bind mount option")
            && out.stderr.contains("bogus"),
        "{out:?}"
    );
    drop(_guard);
    c.assert_no_leaks(Duration::from_secs(10));
}

/// cgroup v1 resources beyond the basics (memory swappiness and
/// disableOOMKiller, blkio throttles and per-device weight, cpu idle and
/// burst) are applied as runc applies them; `unified` on a v1 host, and a
/// hostname without a UTS namespace, are refused by both. Fields idshift
/// refuses (intelRdt, kernel memory) name themselves. (containerd 1.6's
/// spec types drop `process.scheduler` and `linux.timeOffsets` before the
/// shim sees them: `scheduler_io_priority_and_time_offsets` runs them on
/// containerd 2.x.)
#[test]
fn resources_and_refusals_match_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("not a cgroup v1 host: the v1 resources are not compared here");
        return;
    }
    let dev = a_block_device();
    let script = "cd /sys/fs/cgroup; cat memory/memory.swappiness; \
        grep oom_kill_disable memory/memory.oom_control; \
        cat blkio/blkio.throttle.read_bps_device blkio/blkio.throttle.write_iops_device";
    let mut s = spec(&c, &rootfs, script);
    s["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        }));
    s["linux"]["resources"]["memory"] =
        serde_json::json!({"swappiness": 30, "disableOOMKiller": true});
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let (major, minor): (i64, i64) = (major.parse().expect("major"), minor.parse().expect("minor"));
    s["linux"]["resources"]["blockIO"] = serde_json::json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    });
    let out = same_under_both(&c, &s);
    let text = out.ok().stdout.clone();
    assert_eq!(
        text,
        format!("30\noom_kill_disable 1\n{dev} 1048576\n{dev} 100\n"),
        "{text}"
    );
    // cpu idle and burst: runc 1.1 leaves them alone, idshift applies them.
    let mut cpu = spec(
        &c,
        &rootfs,
        "cat /sys/fs/cgroup/cpu/cpu.idle /sys/fs/cgroup/cpu/cpu.cfs_burst_us",
    );
    cpu["mounts"] = s["mounts"].clone();
    cpu["linux"]["resources"]["cpu"] = serde_json::json!({"idle": 1, "burst": 1000});
    assert_eq!(run(&c, IDSHIFT, &cpu).ok().stdout, "1\n1000\n");
    // unified on v1: refused by both.
    let mut u = spec(&c, &rootfs, "true");
    u["linux"]["resources"]["unified"] = serde_json::json!({"memory.high": "100000000"});
    let ours = run(&c, IDSHIFT, &u);
    let runc = run(&c, RUNC, &u);
    assert!(!runc.success(), "{runc:?}");
    assert!(
        !ours.success() && ours.stderr.contains("linux.resources.unified"),
        "{ours:?}"
    );
    // A hostname without a UTS namespace: refused by both.
    let mut h = spec(&c, &rootfs, "hostname");
    h["hostname"] = serde_json::json!("no-uts");
    h["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "uts");
    let ours = run(&c, IDSHIFT, &h);
    let runc = run(&c, RUNC, &h);
    assert!(!runc.success(), "{runc:?}");
    assert!(
        !ours.success() && ours.stderr.contains("hostname but has no UTS namespace"),
        "{ours:?}"
    );
    // Refused by idshift, naming the field.
    for (field, path, value) in [
        (
            "linux.intelRdt",
            "/linux/intelRdt",
            serde_json::json!({"closID": "x"}),
        ),
        (
            "swappiness",
            "/linux/resources/memory",
            serde_json::json!({"swappiness": 101}),
        ),
        (
            "memory.kernel",
            "/linux/resources/memory",
            serde_json::json!({"kernel": 1}),
        ),
    ] {
        let mut r = spec(&c, &rootfs, "true");
        let (parent, key) = path.rsplit_once('/').expect("path");
        r.pointer_mut(parent).expect("parent")[key] = value;
        let out = run(&c, IDSHIFT, &r);
        assert!(
            !out.success() && out.stderr.contains(field),
            "{field}: {out:?}"
        );
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Every hook point, each hook writing the state it received (and its
/// argv[0] and env) to a marker file: the same hooks run, in the same
/// order, with the same statuses and state keys, under idshift and runc.
/// createContainer runs before pivot_root (host paths), startContainer
/// after it (the container's paths, through a bind mount). A failing
/// createRuntime hook fails create with its stderr and leaves nothing; a
/// failing poststart kills the container.
#[test]
fn hooks_run_as_under_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let host = "/bin/sh";
    let mut markers = std::collections::BTreeMap::new();
    for runtime in [IDSHIFT, RUNC] {
        let out_dir = c.base().join(unique("hooks"));
        std::fs::create_dir(&out_dir).expect("mkdir");
        std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let hook = |point: &str, dir: &Path, path: &str| {
            serde_json::json!({
                "path": path,
                "args": ["sh", "-c",
                    format!("n=$(ls {d} | wc -l); cat > {d}/$n-{point}; echo \" $0 $HOOK_ENV\" >> {d}/$n-{point}",
                        d = dir.display())],
                "env": [format!("HOOK_ENV={point}-env")],
                "timeout": 20,
            })
        };
        let mut s = spec(&c, &rootfs, "echo ran");
        s["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
            "destination": "/hookout", "type": "bind", "source": out_dir, "options": ["rbind", "rw"],
        }));
        s["annotations"] = serde_json::json!({"test.hooks": "yes"});
        s["hooks"] = serde_json::json!({
            "prestart": [hook("prestart", &out_dir, host)],
            "createRuntime": [hook("createRuntime", &out_dir, host)],
            "createContainer": [hook("createContainer", &out_dir, host)],
            "startContainer": [hook("startContainer", Path::new("/hookout"), "/bin/sh")],
            "poststart": [hook("poststart", &out_dir, host)],
            "poststop": [hook("poststop", &out_dir, host)],
        });
        let out = run(&c, runtime, &s);
        assert_eq!(out.ok().stdout, "ran\n", "{runtime}");
        // poststop ran before delete returned; read what each hook saw.
        let mut files: Vec<_> = std::fs::read_dir(&out_dir)
            .expect("markers")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        files.sort_by_key(|f| f.split('-').next().and_then(|n| n.parse::<u32>().ok()));
        let mut seen = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(out_dir.join(&f)).expect("marker");
            let (json, tail) =
                text.rsplit_once(' ')
                    .map(|(a, _)| a)
                    .map_or((text.as_str(), ""), |j| {
                        let i = j.rfind('}').map_or(j.len(), |i| i + 1);
                        (&text[..i], &text[i..])
                    });
            let state: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{runtime} {f}: {e}: {text}"));
            let mut keys: Vec<&String> = state.as_object().expect("object").keys().collect();
            keys.sort();
            seen.push(format!(
                "{f} status={} keys={keys:?} annotations={} pid>0={} tail={}",
                state["status"],
                state["annotations"],
                state["pid"].as_i64().is_some_and(|p| p > 0),
                tail.trim()
            ));
        }
        markers.insert(runtime, seen);
    }
    let (ours, runc) = (&markers[IDSHIFT], &markers[RUNC]);
    eprintln!("idshift: {ours:#?}\nrunc: {runc:#?}");
    // The order and statuses the runtime spec defines: runc 1.1 runs
    // poststart while the init runs startContainer (either may come first)
    // and shows it the status "created"; idshift runs it once the workload
    // runs, with "running" (README).
    let order: Vec<&str> = ours
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        order,
        [
            "0-prestart",
            "1-createRuntime",
            "2-createContainer",
            "3-startContainer",
            "4-poststart",
            "5-poststop"
        ]
    );
    assert!(ours[4].contains("status=\"running\""), "{}", ours[4]);
    let normal = |v: &Vec<String>| {
        let mut v: Vec<String> = v
            .iter()
            .map(|l| {
                l.split_once('-').map_or(l.as_str(), |(_, r)| r).replace(
                    "poststart status=\"running\"",
                    "poststart status=\"created\"",
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        normal(ours),
        normal(runc),
        "hooks under idshift (left) and runc (right)"
    );
    // A failing createRuntime hook: create fails with its stderr, nothing
    // is left.
    let mut bad = spec(&c, &rootfs, "true");
    bad["hooks"] = serde_json::json!({"createRuntime": [{
        "path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"],
    }]});
    let out = run(&c, IDSHIFT, &bad);
    assert!(
        !out.success()
            && out.stderr.contains("hook-says-no")
            && out.stderr.contains("createRuntime"),
        "{out:?}"
    );
    // A failing poststart hook kills the container.
    let mut ps = spec(&c, &rootfs, "sleep 987654");
    ps["hooks"] = serde_json::json!({"poststart": [{
        "path": "/bin/sh", "args": ["sh", "-c", "echo poststart-fails >&2; exit 1"],
    }]});
    let (id, out) = c.run_spec(NS, IDSHIFT, "o", &ps);
    assert!(
        !out.success() && out.stderr.contains("poststart-fails"),
        "{out:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !idshift_tests::processes_matching("sleep 987654").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container was not killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ctr may leave the failed task behind (or have removed it): delete it.
    let _ = c.ctr(NS, &["task", "delete", &id]);
    let _ = c.ctr(NS, &["container", "delete", &id]);
    c.assert_no_leaks(Duration::from_secs(10));
}

/// `linux.devices` as `ctr run --device` gives them (the node and its
/// cgroup rule): the host's node appears at its path with its type, numbers
/// and mode (bound from the host: a user namespace cannot mknod), and is
/// usable as under runc. A device the host lacks fails create, naming it.
#[test]
fn devices_match_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let script = "stat -c '%F %t:%T %a' /dev/fuse /dev/extra/full; \
        echo x > /dev/extra/full; echo full=$?; head -c 3 /dev/extra/full | wc -c";
    let mut s = spec(&c, &rootfs, script);
    s["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 0, "gid": 0},
        {"path": "/dev/extra/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o666, "uid": 0, "gid": 0},
    ]);
    let rules = s["linux"]["resources"]["devices"]
        .as_array_mut()
        .expect("ctr's device rules");
    for (major, minor) in [(10, 229), (1, 7)] {
        rules.push(serde_json::json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"}));
    }
    let host_fuse = std::fs::metadata("/dev/fuse").map(|m| m.permissions().mode() & 0o777);
    let out = same_under_both(&c, &s);
    let text = out.ok().stdout.clone();
    assert!(
        text.starts_with(&format!(
            "character special file a:e5 {:o}\ncharacter special file 1:7 666\n",
            host_fuse.expect("/dev/fuse on the host")
        )),
        "{text}"
    );
    assert!(text.contains("full=1\n3\n"), "{text}");
    let mut bad = spec(&c, &rootfs, "true");
    bad["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/no-such-device-here", "type": "c", "major": 10, "minor": 4242},
    ]);
    let out = run(&c, IDSHIFT, &bad);
    assert!(
        !out.success() && out.stderr.contains("linux.devices[0] /dev/no-such-device-here: the host has no character device 10:4242"),
        "{out:?}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(scheduler_io_priority_and_time_offsets: V2);
/// runtime-spec 1.2's `process.scheduler`, `process.ioPriority` and
/// `linux.timeOffsets`, which only containerd 2.x's ctr passes on (1.6's
/// and 1.7's drop fields their runtime-spec does not know): the workload
/// runs with the policy and nice value (`/proc/self/stat`), the I/O
/// priority (`ionice`) and the clock offsets (`/proc/self/timens_offsets`)
/// of its spec. A real-time policy, which needs CAP_SYS_NICE on the host,
/// fails create naming the field; a nice value out of range is refused.
fn scheduler_io_priority_and_time_offsets() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let script = "cat /proc/self/timens_offsets; \
        awk '{print \"nice=\" $19, \"policy=\" $41}' /proc/self/stat; ionice";
    let mut s = spec(&c, &rootfs, script);
    s["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "time"}));
    s["linux"]["timeOffsets"] = serde_json::json!({
        "monotonic": {"secs": 86400, "nanosecs": 5},
        "boottime": {"secs": 3600},
    });
    s["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_BATCH", "nice": 7});
    s["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    let out = run(&c, IDSHIFT, &s);
    let text = &out.ok().stdout;
    let mut offsets: Vec<String> = text
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    offsets.sort();
    // SCHED_BATCH is policy 3.
    assert_eq!(
        (offsets, text.lines().skip(2).collect::<Vec<_>>()),
        (
            vec!["boottime 3600 0".to_string(), "monotonic 86400 5".into()],
            vec!["nice=7 policy=3", "best-effort: prio 6"]
        ),
        "{text}"
    );
    let mut rt = spec(&c, &rootfs, "true");
    rt["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_FIFO", "priority": 10});
    let out = run(&c, IDSHIFT, &rt);
    assert!(
        !out.success()
            && out
                .stderr
                .contains("process.scheduler: sched_setattr(policy SCHED_FIFO"),
        "{out:?}"
    );
    let mut bad = spec(&c, &rootfs, "true");
    bad["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_OTHER", "nice": -21});
    let out = run(&c, IDSHIFT, &bad);
    assert!(
        !out.success()
            && out
                .stderr
                .contains("process.scheduler.nice -21 is not between -20 and 19"),
        "{out:?}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// What a field group gives under idshift, compared with containerd's runc
/// shim on the same containerd and spec.
enum Parity {
    /// The same exit code, stdout and stderr.
    Same,
    /// idshift refuses the spec at create with an error containing this
    /// (README: "Known limits"); runc's result is not compared.
    Refused(&'static str),
    /// A difference README documents: idshift's stdout, then runc's.
    Differs(&'static str, &'static str),
}

/// The parity suite: one spec per field group not compared by a test of its
/// own above (hooks, `--device`, bind options, resources, capabilities,
/// security settings each have one), run by idshift and by runc. Each row:
/// the group, the spec change, the script that shows its effect, and the
/// expected parity.
#[test]
fn field_groups_match_runc() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(c.base(), &APPLETS).expect("busybox rootfs");
    let cgroup_mount = serde_json::json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    });
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    type Patch = fn(&mut serde_json::Value, &serde_json::Value);
    let rows: Vec<(&str, Patch, &str, Parity)> = vec![
        (
            "process.args, env, cwd",
            |s, _| {
                s["process"]["cwd"] = serde_json::json!("/tmp");
                s["process"]["env"] = serde_json::json!(["PATH=/bin", "GREETING=hello world"]);
            },
            "pwd; echo \"$GREETING\"; echo \"$0\"",
            Parity::Same,
        ),
        (
            "process.user uid, gid, additionalGids, umask",
            |s, _| {
                s["process"]["user"] = serde_json::json!({
                    "uid": 1000, "gid": 1001, "additionalGids": [10, 20], "umask": 63,
                });
                s["mounts"]
                    .as_array_mut()
                    .expect("mounts")
                    .push(serde_json::json!({
                        "destination": "/w", "type": "tmpfs", "source": "tmpfs",
                        "options": ["mode=1777"],
                    }));
            },
            "id; umask",
            Parity::Same,
        ),
        (
            "process.rlimits",
            |s, _| {
                s["process"]["rlimits"] = serde_json::json!([
                    {"type": "RLIMIT_NPROC", "soft": 77, "hard": 88},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                ]);
            },
            "ulimit -u; ulimit -Hu; ulimit -c",
            Parity::Same,
        ),
        (
            "process.oomScoreAdj",
            |s, _| s["process"]["oomScoreAdj"] = serde_json::json!(500),
            "cat /proc/self/oom_score_adj",
            Parity::Same,
        ),
        (
            "process.noNewPrivileges",
            |s, _| s["process"]["noNewPrivileges"] = serde_json::json!(true),
            "grep NoNewPrivs /proc/self/status",
            Parity::Same,
        ),
        (
            "linux.sysctl (net.*, with the container's network namespace)",
            |s, _| {
                s["linux"]["sysctl"] =
                    serde_json::json!({"net.ipv4.ip_unprivileged_port_start": "100"});
            },
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
            Parity::Same,
        ),
        (
            "mounts: tmpfs with options",
            |s, _| {
                s["mounts"]
                    .as_array_mut()
                    .expect("mounts")
                    .push(serde_json::json!({
                        "destination": "/t", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1700"],
                    }));
            },
            "stat -c %a /t; awk '$5 == \"/t\" {print $6}' /proc/self/mountinfo",
            // runc gives a tmpfs's root the mode of the directory it covers
            // (here the 0755 it made), whatever its `mode=`.
            Parity::Differs(
                "1700\nrw,nosuid,nodev,noexec,relatime\n",
                "755\nrw,nosuid,nodev,noexec,relatime\n",
            ),
        ),
        (
            "linux.namespaces: no ipc entry (the host's)",
            |s, _| {
                s["linux"]["namespaces"]
                    .as_array_mut()
                    .expect("namespaces")
                    .retain(|n| n["type"] != "ipc");
                // Without the mqueue mount: a user namespace cannot mount
                // the host IPC namespace's mqueue, and idshift then binds the
                // host's /dev/mqueue, which a host may lack (create fails,
                // naming the mount).
                s["mounts"]
                    .as_array_mut()
                    .expect("mounts")
                    .retain(|m| m["type"] != "mqueue");
            },
            "ls -l /proc/self/ns/ipc | awk '{print $NF}'",
            Parity::Same,
        ),
        (
            "linux.resources memory limit, cpu shares and quota, pids (cgroup v1)",
            |s, m| {
                s["mounts"].as_array_mut().expect("mounts").push(m.clone());
                s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 67108864});
                s["linux"]["resources"]["cpu"] =
                    serde_json::json!({"shares": 512, "quota": 50000, "period": 100000});
                s["linux"]["resources"]["pids"] = serde_json::json!({"limit": 42});
            },
            "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes cpu/cpu.shares \
             cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us pids/pids.max",
            Parity::Same,
        ),
        (
            "process.apparmorProfile",
            |s, _| s["process"]["apparmorProfile"] = serde_json::json!("unconfined"),
            "true",
            Parity::Refused("process.apparmorProfile"),
        ),
        (
            "process.selinuxLabel",
            |s, _| {
                s["process"]["selinuxLabel"] = serde_json::json!("system_u:system_r:container_t:s0")
            },
            "true",
            Parity::Refused("process.selinuxLabel"),
        ),
        (
            "linux.mountLabel",
            |s, _| {
                s["linux"]["mountLabel"] =
                    serde_json::json!("system_u:object_r:container_file_t:s0")
            },
            "true",
            Parity::Refused("linux.mountLabel"),
        ),
    ];
    let mut seen = Vec::new();
    for (group, patch, script, parity) in rows {
        if group.contains("cgroup v1") && !v1 {
            eprintln!("{group}: not a cgroup v1 host, skipped");
            continue;
        }
        let mut s = spec(&c, &rootfs, script);
        patch(&mut s, &cgroup_mount);
        match parity {
            Parity::Same => {
                let ours = run(&c, IDSHIFT, &s);
                let runc = run(&c, RUNC, &s);
                assert_eq!(
                    (ours.code, &ours.stdout, &ours.stderr),
                    (runc.code, &runc.stdout, &runc.stderr),
                    "{group}: idshift (left) and runc (right) differ\n{}",
                    c.log_tail(40)
                );
                assert!(ours.success(), "{group}: {ours:?}");
                seen.push(format!("{group}: {:?}", ours.stdout));
            }
            Parity::Differs(want_ours, want_runc) => {
                let ours = run(&c, IDSHIFT, &s);
                let runc = run(&c, RUNC, &s);
                assert_eq!(
                    (
                        ours.code,
                        ours.stdout.as_str(),
                        runc.code,
                        runc.stdout.as_str()
                    ),
                    (Some(0), want_ours, Some(0), want_runc),
                    "{group}: idshift, then runc"
                );
                seen.push(format!(
                    "{group}: differs as documented: {want_ours:?} (runc {want_runc:?})"
                ));
            }
            Parity::Refused(want) => {
                let ours = run(&c, IDSHIFT, &s);
                assert!(
                    !ours.success() && ours.stderr.contains(want),
                    "{group}: {ours:?}"
                );
                seen.push(format!("{group}: refused ({want})"));
            }
        }
    }
    eprintln!("{seen:#?}");
    c.assert_no_leaks(Duration::from_secs(10));
}
