//! User namespaces against the real kernel (root needed).

use std::process::Command;
use userns::{join_before_exec, IdMap, IdRange, NsError, UserNamespace};

fn m(c: u32, h: u32, s: u32) -> IdMap {
    IdMap {
        container_id: c,
        host_id: h,
        size: s,
    }
}

/// Parses /proc/self/{uid,gid}_map as seen by a process joined to `ns`.
fn maps_seen_inside(ns: &UserNamespace) -> (Vec<IdMap>, Vec<IdMap>) {
    let mut cmd = Command::new("cat");
    cmd.args(["/proc/self/uid_map", "/proc/self/gid_map"]);
    join_before_exec(&mut cmd, ns, None).expect("join");
    let out = cmd.output().expect("spawn cat in the namespace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<IdMap> = text
        .lines()
        .map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            m(f[0], f[1], f[2])
        })
        .collect();
    (lines.clone(), lines)
}

/// Zombie children of this test process that stay unreaped. Tests run in
/// parallel threads, so another test's child can be a zombie for the moment
/// between its exit and its own thread's wait: only zombies that are still
/// there after a few seconds are leaks.
fn zombie_children() -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let z = zombies_now();
        if z.is_empty() || std::time::Instant::now() > deadline {
            return z;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn zombies_now() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").expect("ls /proc").flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // pid (comm) state ppid ...
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 1 && f[0] == "Z" && f[1] == me {
                    z.push(stat);
                }
            }
        }
    }
    z
}

#[test]
fn single_range_namespace() {
    let r = IdRange {
        base: 0x7200_0000,
        size: 65536,
    };
    let ns = UserNamespace::for_range(r).expect("create");
    let (seen, _) = maps_seen_inside(&ns);
    assert_eq!(seen, vec![r.to_map(), r.to_map()], "uid_map then gid_map");
    let z = zombie_children();
    assert!(z.is_empty(), "{z:?}");
}

#[test]
fn multi_extent_namespace_and_root_inside() {
    let uids = [
        m(0, 0x7300_0000, 1000),
        m(1000, 0x7310_0000, 10),
        m(5000, 0x7320_0000, 1),
    ];
    let gids = [m(0, 0x7400_0000, 2000), m(3000, 0x7410_0000, 5)];
    let ns = UserNamespace::create(&uids, &gids).expect("create");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g",
    ]);
    join_before_exec(&mut cmd, &ns, Some((1000, 3000))).expect("join");
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let parts: Vec<&str> = text.split("--\n").collect();
    let parse = |s: &str| -> Vec<IdMap> {
        s.lines()
            .map(|l| {
                let f: Vec<u32> = l
                    .split_whitespace()
                    .map(|x| x.parse().expect("n"))
                    .collect();
                m(f[0], f[1], f[2])
            })
            .collect()
    };
    assert_eq!(parse(parts[0]), uids.to_vec());
    assert_eq!(parse(parts[1]), gids.to_vec());
    assert_eq!(parts[2].trim(), "1000\n3000".replace("\\n", "\n"));
}

#[test]
fn three_hundred_forty_extents() {
    // Short numbers: the map's text must also fit in one write of under a page.
    let maps: Vec<IdMap> = (0..340).map(|i| m(i, 1000 + i * 2, 1)).collect();
    let ns = UserNamespace::create(&maps, &maps).expect("340 extents");
    let (seen, _) = maps_seen_inside(&ns);
    assert_eq!(seen.len(), 680);
    assert_eq!(&seen[..340], &maps[..]);
}

#[test]
fn invalid_mappings_fail_before_any_process() {
    let e = UserNamespace::create(&[m(0, 1000, 10), m(5, 2000, 10)], &[m(0, 1000, 1)])
        .expect_err("overlap");
    assert!(matches!(e, NsError::Mapping(_)), "{e}");
    assert!(
        e.to_string().contains("overlap on the container side"),
        "{e}"
    );
    let many: Vec<IdMap> = (0..341).map(|i| m(i, 100 + i, 1)).collect();
    let e = UserNamespace::create(&many, &many).expect_err("341");
    assert!(e.to_string().contains("341 uid mapping extents"), "{e}");
    let z = zombie_children();
    assert!(z.is_empty(), "{z:?}");
}

#[test]
fn open_checks_the_namespace_type() {
    let own = UserNamespace::open(std::path::Path::new("/proc/self/ns/user")).expect("own userns");
    let _dup = own.try_clone().expect("clone");
    for p in ["/proc/self/ns/net", "/proc/self/ns/mnt", "/etc/hostname"] {
        let e = UserNamespace::open(std::path::Path::new(p)).expect_err(p);
        assert!(matches!(e, NsError::NotUserNamespace { .. }), "{p}: {e}");
        assert!(e.to_string().contains(p), "{e}");
    }
    let e = UserNamespace::open(std::path::Path::new("/nonexistent/ns")).expect_err("missing");
    assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    // A namespace made here, opened back by path through a process in it.
    let ns = UserNamespace::for_range(IdRange {
        base: 0x7600_0000,
        size: 10,
    })
    .expect("create");
    let mut cmd = Command::new("sleep");
    cmd.arg("5");
    join_before_exec(&mut cmd, &ns, Some((0, 0))).expect("join");
    let mut child = cmd.spawn().expect("spawn");
    let path = format!("/proc/{}/ns/user", child.id());
    let opened = UserNamespace::open(std::path::Path::new(&path));
    let _ = child.kill();
    let _ = child.wait();
    let opened = opened.expect("open by path");
    let a = rustix::fs::fstat(ns.fd()).expect("stat");
    let b = rustix::fs::fstat(opened.fd()).expect("stat");
    assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino), "same namespace");
}

#[test]
fn many_namespaces_leave_no_process_behind() {
    for i in 0..50 {
        let ns = UserNamespace::for_range(IdRange {
            base: 0x7700_0000 + i * 0x10000,
            size: 0x10000,
        })
        .expect("create");
        drop(ns);
    }
    let z = zombie_children();
    assert!(z.is_empty(), "{z:?}");
}

/// A namespace path given for a type (OCI `linux.namespaces[].path`):
/// a file of the right type opens; a namespace of another type, a regular
/// file, /dev/null and a missing path each give an error naming the path
/// and what is wrong with it.
#[test]
fn open_namespace_names_what_a_path_is() {
    use std::path::Path;
    use userns::open_namespace;
    open_namespace(Path::new("/proc/self/ns/net"), libc::CLONE_NEWNET).expect("own netns");
    open_namespace(Path::new("/proc/self/ns/pid"), libc::CLONE_NEWPID).expect("own pidns");
    let e = open_namespace(Path::new("/proc/self/ns/net"), libc::CLONE_NEWPID).expect_err("net");
    assert_eq!(
        e.to_string(),
        "/proc/self/ns/net is a network namespace, not a pid namespace"
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    for p in [file.path(), Path::new("/dev/null")] {
        let e = open_namespace(p, libc::CLONE_NEWIPC).expect_err("not a namespace");
        assert!(matches!(e, NsError::NotANamespace { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{} is not a namespace file", p.display())),
            "{e}"
        );
    }
    let e = open_namespace(Path::new("/nonexistent/ns"), libc::CLONE_NEWUTS).expect_err("gone");
    assert_eq!(
        e.to_string(),
        "opening /nonexistent/ns: No such file or directory (os error 2)"
    );
}

/// The validator's bound is the kernel's: an extent ending at the last
/// valid ID (4294967294) on either side is written by the kernel; one more
/// is refused first by validate_mappings (the kernel gives EINVAL: first +
/// count wraps u32).
#[test]
fn extents_up_to_the_last_id_are_the_kernels() {
    let last = userns::LAST_ID;
    let ns = UserNamespace::create(&[m(last, 0x7300_0000, 1)], &[m(0, last, 1)])
        .expect("extents ending at the last ID");
    drop(ns);
    for (u, g) in [
        (m(last, 0x7300_0000, 2), m(0, 0x7300_0000, 1)),
        (m(0, 0x7300_0000, 1), m(0, last, 2)),
        (m(u32::MAX, 0x7300_0000, 1), m(0, 0x7300_0000, 1)),
    ] {
        let e = UserNamespace::create(&[u], &[g]).expect_err("past the last ID");
        assert!(
            matches!(e, NsError::Mapping(userns::MappingError::Overflow { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("goes past 4294967294"), "{e}");
    }
    assert!(zombie_children().is_empty());
}

const INOTIFY_WORKER: &str = "IDSHIFT_INOTIFY_WORKER";

/// Worker (a no-op in a normal run): opens inotify instances until the
/// kernel refuses one, and prints how many it got.
#[test]
fn inotify_worker_entry() {
    if std::env::var_os(INOTIFY_WORKER).is_none() {
        return;
    }
    let mut fds = Vec::new();
    while fds.len() < 1_000_000 {
        match rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC) {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                println!("INSTANCES {} ({e})", fds.len());
                return;
            }
        }
    }
    println!("INSTANCES {}", fds.len());
}

/// How many inotify instances a process can open as root of `ns`.
fn inotify_instances_in(ns: &UserNamespace) -> usize {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "inotify_worker_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(INOTIFY_WORKER, "1");
    join_before_exec(&mut cmd, ns, Some((0, 0))).expect("join");
    let out = cmd.output().expect("worker");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("INSTANCES ")
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "worker output: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A range's namespace is owned by the range's first host ID (as
/// containerd 2.3 makes pods' namespaces), so the per-user limits of its
/// processes count against that user: root of it can open the host's whole
/// `max_inotify_instances`, which host root's own instances (containerd's,
/// systemd's) do not eat into. A namespace made without an owner stays
/// host root's.
#[test]
fn a_ranges_namespace_is_owned_by_the_range_and_limits_count_there() {
    let r = IdRange {
        base: 0x7230_0000,
        size: 65536,
    };
    let owned = UserNamespace::for_range(r).expect("create");
    assert_eq!(owned.owner_uid().expect("owner"), r.base);
    let map = [r.to_map()];
    let roots = UserNamespace::create(&map, &map).expect("create");
    assert_eq!(roots.owner_uid().expect("owner"), 0);
    // Capabilities over it are kept: the maps were written, and processes
    // join it (maps_seen_inside joins it).
    let (seen, _) = maps_seen_inside(&owned);
    assert_eq!(seen, vec![r.to_map(), r.to_map()]);
    let max: usize = std::fs::read_to_string("/proc/sys/user/max_inotify_instances")
        .expect("max_inotify_instances")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        inotify_instances_in(&owned),
        max,
        "the range's user holds no other instance"
    );
    // Under root's namespace, the instances count against host root, which
    // shares the limit with every host process of root.
    let under_root = inotify_instances_in(&roots);
    eprintln!("inotify instances: {max} under the range's owner, {under_root} under host root");
    assert!(under_root <= max, "{under_root} > {max}");
}
