//! Security properties of idshift containers under a real containerd 1.6
//! (root needed): one container's files are out of reach of another's (in
//! the container and on the host, by owner), a root-only host file bound in
//! without an idmap stays unreadable, setgroups is denied where the mapping
//! requires it, the container's root has no capability over the host even
//! with every capability in its spec, and the shim's socket and state are
//! root's only.

use idshift_tests::{busybox_rootfs, unique, Containerd, CtrOutput, IDSHIFT_RUNTIME as RT};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "security";
const IMG: &str = "docker.io/library/idshift-busybox:1";

fn setup() -> Containerd {
    let c = Containerd::start("").expect("start containerd");
    c.import_image(NS, IMG, 1).expect("import image");
    c
}

/// The pid of the running task `id` (waits 30 s at most).
fn task_pid(c: &Containerd, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = c.ctr(NS, &["task", "ls"]).stdout;
        let pid = ls.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == id && f[2] == "RUNNING").then(|| f[1].parse::<u32>().ok())?
        });
        if let Some(p) = pid {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never ran: {}",
            c.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host ID container ID 0 maps to (`/proc/<pid>/{uid,gid}_map`), and
/// the size of the mapping; a single line is expected.
fn map_of(pid: u32, which: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{which}")).expect("read map");
    let lines: Vec<Vec<u32>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse().expect("map number"))
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 1, "{which} of {pid}: {text}");
    assert_eq!(lines[0][0], 0, "{which} of {pid}: {text}");
    (lines[0][1], lines[0][2])
}

/// `ctr task exec` of a shell script in `id`.
fn exec(c: &Containerd, id: &str, script: &str) -> CtrOutput {
    let e = unique("e");
    c.ctr(
        NS,
        &["task", "exec", "--exec-id", &e, id, "/bin/sh", "-c", script],
    )
}

/// The upper dir of the snapshot of container `id` (its writable layer),
/// from `ctr snapshots mounts`.
fn upper_dir(c: &Containerd, id: &str) -> PathBuf {
    let out = c.ctr(NS, &["snapshots", "mounts", "/mnt", id]);
    let text = out.ok().stdout.clone();
    let opt = text
        .split(|ch: char| ch == ',' || ch.is_whitespace())
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {text:?}"));
    PathBuf::from(opt)
}

/// `cat <file>` on the host as uid:gid `id` (no supplementary groups), in
/// directory `dir`.
fn cat_as(id: u32, dir: &Path, file: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
            "cat",
            file,
        ])
        .current_dir(dir)
        .output()
        .expect("run setpriv")
}

/// Root in container A writes a 0600 file; container B cannot reach it,
/// and on the host the file in A's upper dir belongs to A's range base, so
/// that a process with B's range base as its uid and gid is refused
/// (EACCES) while one with A's reads it.
#[test]
fn a_containers_file_is_out_of_reach_of_another_container() {
    let c = setup();
    for (id, script) in [
        (
            "a",
            "mkdir /pub && chmod 755 /pub && echo secret > /pub/secret && chmod 600 /pub/secret && sleep 1000",
        ),
        ("b", "sleep 1000"),
    ] {
        c.ctr(NS, &["run", "-d", RT, IMG, id, "/bin/sh", "-c", script])
            .ok();
    }
    let (pa, pb) = (task_pid(&c, "a"), task_pid(&c, "b"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec(&c, "a", "cat /pub/secret").stdout != "secret\n" {
        assert!(Instant::now() < deadline, "a never wrote /pub/secret");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a_uid, a_size) = map_of(pa, "uid_map");
    let (b_uid, b_size) = map_of(pb, "uid_map");
    assert_eq!(map_of(pa, "gid_map").0, a_uid);
    assert_eq!(map_of(pb, "gid_map").0, b_uid);
    assert!(
        u64::from(a_uid) + u64::from(a_size) <= u64::from(b_uid)
            || u64::from(b_uid) + u64::from(b_size) <= u64::from(a_uid),
        "ranges overlap: a {a_uid}+{a_size}, b {b_uid}+{b_size}"
    );
    // In B: not in its rootfs, and A's upper dir's host path is not in its
    // mount namespace.
    let upper = upper_dir(&c, "a");
    let host_path = upper.join("pub/secret");
    let out = exec(
        &c,
        "b",
        &format!(
            "cat /pub/secret 2>&1; echo rc=$?; cat {} 2>&1; echo rc=$?",
            host_path.display()
        ),
    );
    assert_eq!(
        out.stdout.matches("No such file or directory").count(),
        2,
        "{out:?}"
    );
    assert_eq!(out.stdout.matches("rc=1").count(), 2, "{out:?}");
    // On the host: A's root's file belongs to A's range base, mode 0600.
    let md = std::fs::metadata(&host_path).expect("the file is in a's upper dir");
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (a_uid, a_uid, 0o600)
    );
    // The snapshots dir is 0700 root's (which alone refuses both): the
    // reads start in the file's own directory (A's 0755 /pub), so that
    // only the file's owner and mode decide.
    let dir = upper.join("pub");
    let b = cat_as(b_uid, &dir, "secret");
    assert!(!b.status.success(), "B's range base read A's file: {b:?}");
    assert!(
        String::from_utf8_lossy(&b.stderr).contains("Permission denied"),
        "{b:?}"
    );
    let a = cat_as(a_uid, &dir, "secret");
    assert_eq!(String::from_utf8_lossy(&a.stdout), "secret\n", "{a:?}");
    c.kill_and_remove(NS, &["a", "b"]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// `path` written with `text` and given `mode`.
fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod");
}

/// `ctr run --rm --mount type=bind,src=SRC,dst=DST,options=rbind:ACCESS`
/// of the test image running `script`.
fn run_with_bind(c: &Containerd, src: &Path, dst: &str, access: &str, script: &str) -> CtrOutput {
    let mount = format!(
        "type=bind,src={},dst={dst},options=rbind:{access}",
        src.display()
    );
    let id = unique("bind");
    c.ctr(
        NS,
        &[
            "run", "--rm", "--mount", &mount, RT, IMG, &id, "/bin/sh", "-c", script,
        ],
    )
}

/// A 0600 file of the host's root, bound read-only into a container
/// without an idmap (`binds = "shifted"`): the host's root is not mapped in
/// the container's user namespace, so the file shows as owned by the
/// overflow IDs (65534) and the container's root (another uid on the host,
/// without CAP_DAC_OVERRIDE over the host's files) cannot read it, nor
/// write it.
#[test]
fn a_root_only_host_file_bound_without_idmap_is_unreadable() {
    let c = Containerd::start("binds = \"shifted\"\n").expect("start containerd");
    c.import_image(NS, IMG, 1).expect("import image");
    let file = c.base().join("host-secret");
    write_private(&file, "host secret\n", 0o600);
    let out = run_with_bind(
        &c,
        &file,
        "/hostsecret",
        "ro",
        "stat -c %u:%g:%a /hostsecret; cat /hostsecret 2>&1; echo read=$?; \
         echo x >> /hostsecret 2>&1; echo write=$?",
    );
    let text = out.ok().stdout.clone();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"65534:65534:600"), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("read=1"), "{text}");
    assert!(text.contains("write=1"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "host secret\n"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// By default (`binds = "idmapped"`) a bind mount is idmapped into the
/// container's user namespace, so host files look as under runc: a root-only
/// host directory is root's inside, its 0600 file readable by the
/// container's root, and what that root writes there is owned by host root
/// (and only there: the rest of the host stays out of its reach, as the
/// other tests of this suite show).
#[test]
fn a_root_only_host_dir_bound_in_looks_as_under_runc_by_default() {
    let c = setup();
    let dir = c.base().join("host-private");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod dir");
    write_private(&dir.join("secret"), "host secret\n", 0o600);
    let out = run_with_bind(
        &c,
        &dir,
        "/hostdir",
        "rw",
        "stat -c %u:%g:%a /hostdir/secret; cat /hostdir/secret; echo new > /hostdir/new; \
         stat -c %u:%g /hostdir/new; head -1 /proc/self/uid_map",
    );
    let text = out.ok().stdout.clone();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"0:0:600"), "{text}");
    assert_eq!(lines.get(1), Some(&"host secret"), "{text}");
    assert_eq!(lines.get(2), Some(&"0:0"), "{text}");
    // Still in a user namespace of its own range.
    let map: Vec<&str> = lines
        .get(3)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(map.first(), Some(&"0"), "{text}");
    assert_ne!(map.get(1), Some(&"0"), "not the host's IDs: {text}");
    let meta = std::fs::metadata(dir.join("new")).expect("the container's file");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "written as host root");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// setgroups(2) in the user namespaces of an idshift container.
///
/// The container's own user namespace gets its full 65536-ID mapping from
/// the shim, a privileged writer (root on the host), so setgroups stays
/// "allow" there, as under runc with a user namespace: the container's root
/// may set its supplementary groups (`su` calls initgroups). A user
/// namespace made inside the container with a single mapping of its
/// creator (`unshare -r`, by the container's root and by its unprivileged
/// `nobody`) must have setgroups "deny": the kernel requires it before an
/// unprivileged writer may write the gid_map, so that nobody can drop a
/// group that denies them access (a negative-permission group); it cannot
/// be turned back to "allow" and setgroups(2) fails with EPERM even for
/// the nested namespace's root. (A nested namespace with no gid_map at all
/// also refuses setgroups, but its root is then the overflow uid and no
/// busybox applet reaches the call there: not covered.)
#[test]
fn setgroups_is_denied_where_the_mapping_requires_it() {
    let c = setup();
    let id = unique("sg");
    // Run as `sh /tmp/nested.sh <who>` in the nested namespace.
    let nested = "echo $1=$(cat /proc/self/setgroups) map=$(cat /proc/self/gid_map)\n\
        su -s /bin/sh root -c true 2>&1; echo $1-su=$?\n\
        echo allow > /proc/self/setgroups 2>&1; echo $1-allow=$?\n";
    let script = format!(
        "cat > /tmp/nested.sh <<'EOF'\n{nested}EOF\n\
         echo top=$(cat /proc/self/setgroups)\n\
         su -s /bin/sh root -c true 2>&1; echo top-su=$?\n\
         unshare -r sh /tmp/nested.sh root\n\
         su -s /bin/sh nobody -c 'unshare -r sh /tmp/nested.sh nobody'\n"
    );
    let out = c.ctr(NS, &["run", "--rm", RT, IMG, &id, "/bin/sh", "-c", &script]);
    let text = out.ok().stdout.clone();
    let has = |s: &str| text.lines().any(|l| l.trim() == s);
    // The container's own namespace: allow, and setgroups works.
    assert!(has("top=allow"), "{text}");
    assert!(has("top-su=0"), "{text}");
    // Nested, one mapping (root -> the container's 0, nobody -> 65534):
    // deny, refused, and it stays deny.
    for (who, outside) in [("root", 0), ("nobody", 65534)] {
        let line = format!("{who}=deny map= 0 {outside} 1");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "{line:?} missing\n{text}"
        );
        assert!(has(&format!("{who}-su=1")), "{text}");
        assert!(has(&format!("{who}-allow=1")), "{text}");
    }
    assert_eq!(
        text.matches("su: can't set groups: Operation not permitted")
            .count(),
        2,
        "{text}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Every capability Linux has (to cap_last_cap 40).
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The first whole disk of the host (/proc/partitions): (name, major,
/// minor).
fn host_disk() -> (String, u32, u32) {
    let text = std::fs::read_to_string("/proc/partitions").expect("/proc/partitions");
    text.lines()
        .skip(2)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
            let name = f.get(3)?.to_string();
            Path::new("/dev")
                .join(&name)
                .exists()
                .then_some((name, maj, min))
        })
        .expect("a block device in /proc/partitions and /dev")
}

/// The container's root, with every capability in every set (bounding,
/// effective, permitted, inheritable, ambient), no read-only or masked
/// paths, and the host's UTS namespace, cannot act on the host: capabilities
/// in its own user namespace are no capabilities over the host's kernel
/// objects. Refused: writing a host sysctl (kernel.panic, its own value
/// back), loading a module, mknod of a block device, opening the host's
/// disk bound in, setting the clock (to the current time), setting the
/// host's hostname (to its own name). Every write would leave the host as
/// it was had it been allowed (the same sysctl value, the same time, the
/// same name, a read-only disk): a regression fails the test without
/// damaging the machine. The host's state is checked unchanged. (runc without a
/// user namespace would allow all of these: not run.)
#[test]
fn every_capability_in_the_container_is_no_capability_over_the_host() {
    let c = Containerd::start("").expect("start containerd");
    let rootfs = busybox_rootfs(
        c.base(),
        &[
            "sh", "cat", "echo", "grep", "insmod", "mknod", "date", "hostname", "dd", "head",
        ],
    )
    .expect("busybox rootfs");
    let (disk, maj, min) = host_disk();
    let host_name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let panic_before = std::fs::read_to_string("/proc/sys/kernel/panic").expect("panic");
    let script = format!(
        "grep CapEff /proc/self/status; \
         v=$(cat /proc/sys/kernel/panic); echo $v > /proc/sys/kernel/panic 2>&1; echo sysctl=$?; \
         echo junk > /tmp/m.ko; insmod /tmp/m.ko 2>&1; echo insmod=$?; \
         mknod /tmp/blk b {maj} {min} 2>&1; echo mknod=$?; \
         dd if=/hostdisk of=/dev/null bs=512 count=1 2>&1; echo open=$?; \
         date -s \"$(date '+%Y-%m-%d %H:%M:%S')\" 2>&1; echo date=$?; \
         hostname {host_name} 2>&1; echo hostname=$?; echo name=$(hostname)"
    );
    let mut spec = c.oci_spec(NS, &rootfs, &script);
    let caps = serde_json::json!(ALL_CAPS.to_vec());
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": caps, "ambient": caps,
    });
    spec["linux"]["readonlyPaths"] = serde_json::json!([]);
    spec["linux"]["maskedPaths"] = serde_json::json!([]);
    let nss = spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    nss.retain(|n| n["type"] != "uts");
    spec["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/hostdisk", "type": "bind",
            "source": format!("/dev/{disk}"), "options": ["bind", "ro"],
        }));
    let t0 = std::time::SystemTime::now();
    let i0 = Instant::now();
    let (_, out) = c.run_spec(NS, RT, "caps", &spec);
    let text = out.ok().stdout.clone();
    // Every capability, in the container's own user namespace.
    assert!(text.contains("CapEff:\t000001ffffffffff"), "{text}");
    let has = |s: &str| text.lines().any(|l| l.trim() == s);
    for refused in ["sysctl=1", "mknod=1", "open=1", "hostname=1"] {
        assert!(
            has(refused),
            "{refused} missing: the container did it\n{text}"
        );
    }
    // busybox date reports a refused clock and goes on (exit 0).
    assert!(
        text.contains("date: can't set date: Operation not permitted"),
        "{text}"
    );
    // init_module: EPERM where the kernel has modules; a kernel without
    // (no /proc/modules, like the CI VM's) answers ENOSYS to anyone.
    assert!(!has("insmod=0"), "{text}");
    if Path::new("/proc/modules").exists() {
        assert!(has("insmod=1"), "{text}");
    }
    assert!(text.contains("Permission denied"), "{text}"); // sysctl, the disk
    assert!(text.contains("Operation not permitted"), "{text}"); // module, mknod, clock, hostname
    assert!(has(&format!("name={host_name}")), "{text}");
    // The host is unchanged.
    assert_eq!(
        rustix::system::uname().nodename().to_string_lossy(),
        host_name.as_str()
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").expect("panic"),
        panic_before
    );
    let wall = t0.elapsed().unwrap_or_default();
    let mono = i0.elapsed();
    assert!(
        wall.abs_diff(mono) < Duration::from_secs(2),
        "the host clock moved: wall {wall:?} vs monotonic {mono:?}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// The mode bits of `p` (no symlink followed).
fn mode(p: &Path) -> (u32, u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.mode() & 0o7777, md.uid(), md.gid())
}

/// Walks `dir` (not into `skip`): no directory writable by group or
/// others, no file readable or writable by them, all root's.
fn assert_private_tree(dir: &Path, skip: &[PathBuf]) {
    let (m, uid, _) = mode(dir);
    assert_eq!(uid, 0, "{} is not root's", dir.display());
    assert_eq!(
        m & 0o022,
        0,
        "{} is writable by group/others: {m:o}",
        dir.display()
    );
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if skip.contains(&p) {
            continue;
        }
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            assert_private_tree(&p, skip);
        } else {
            let (m, uid, _) = mode(&p);
            assert_eq!(uid, 0, "{} is not root's", p.display());
            assert_eq!(
                m & 0o066,
                0,
                "{} is open to group/others: {m:o}",
                p.display()
            );
        }
    }
}

/// The shim's ttrpc socket is 0600 root's (connect needs write
/// permission); the allocator's state dir is 0700 and its files 0600; the
/// run dirs are writable by root only and each container's state.json is
/// 0600. The run dir, its namespace dir and each container's dir are 0711,
/// not 0700: execute (traverse) for others is kept because the container's
/// init, already in its user namespace (an unprivileged host uid), reaches
/// its rootfs mount point `<run_dir>/<ns>/<id>/rootfs` by path; nothing in
/// them can be listed or read by others.
#[test]
fn the_shims_socket_and_state_are_root_only() {
    let c = setup();
    c.ctr(NS, &["run", "-d", RT, IMG, "s1", "sleep", "1000"])
        .ok();
    task_pid(&c, "s1");
    let bundle = c
        .containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(NS)
        .join("s1");
    let address = std::fs::read_to_string(bundle.join("address")).expect("address file");
    let socket = PathBuf::from(address.trim().trim_start_matches("unix://"));
    let md = std::fs::symlink_metadata(&socket).expect("the shim's socket");
    assert!(md.file_type().is_socket(), "{}", socket.display());
    assert_eq!(
        (md.mode() & 0o7777, md.uid()),
        (0o600, 0),
        "{}",
        socket.display()
    );
    // The allocator's state.
    let state = c.state_dir();
    assert_eq!(mode(&state).0, 0o700);
    assert_eq!(mode(&state.join("ranges.json")).0, 0o600);
    assert_private_tree(&state, &[]);
    // The run dirs.
    let run = c.run_dir();
    let mine = run.join(NS).join("s1");
    for d in [&run, &run.join(NS), &mine] {
        assert_eq!(mode(d).0, 0o711, "{}", d.display());
    }
    assert_eq!(mode(&mine.join("state.json")), (0o600, 0, 0));
    // Not into the container's rootfs mount point (0755, empty on the host).
    assert_private_tree(&run, &[mine.join("rootfs")]);
    c.kill_and_remove(NS, &["s1"]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}
