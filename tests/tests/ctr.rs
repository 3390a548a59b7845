//! idshift under a real containerd 1.6, driven with `ctr` (root needed).
//! Each test has its own containerd, idshift state and run dirs.

use idshift_tests::{host_mountinfo, Containerd};
use std::process::Stdio;
use std::time::{Duration, Instant};

const NS: &str = "e2e";
const RT: &str = "--runtime=io.containerd.idshift.v2";
const IMG: &str = "docker.io/library/idshift-busybox:1";
const IMG60: &str = "docker.io/library/idshift-busybox:60";

fn setup(config: &str, images: &[(&str, usize)]) -> Containerd {
    let c = Containerd::start(config).expect("start containerd");
    for (name, layers) in images {
        c.import_image(NS, name, *layers).expect("import image");
    }
    c
}

fn uid_map_of(out: &str) -> (u64, u64, u64) {
    let f: Vec<u64> = out
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().expect("uid_map number"))
        .collect();
    (f[0], f[1], f[2])
}

fn wait_running(c: &Containerd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ls = c.ctr(NS, &["task", "ls"]).stdout;
        if ls
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{id} never ran: {}", c.log());
}

#[test]
fn run_rm_output_exit_code_identity_and_no_leaks() {
    let c = setup("", &[(IMG, 1)]);
    let out = c.ctr(
        NS,
        &[
            "run", "--rm", RT, IMG, "r1", "/bin/sh", "-c",
            "echo hello; id -u; id -g; stat -c %u:%g /bin/busybox /etc/passwd; cat /proc/self/uid_map; exit 3",
        ],
    );
    assert_eq!(out.code, Some(3), "{out:?}\n{}", c.log());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..5], ["hello", "0", "0", "0:0", "0:0"], "{out:?}");
    let (inside, host, size) = uid_map_of(lines[5]);
    assert_eq!((inside, size), (0, 65536));
    assert!(host >= 0x7000_0000, "the default pool: {host}");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn concurrent_containers_get_disjoint_ranges_and_no_host_mounts() {
    let c = setup("", &[(IMG60, 60)]);
    let mounts_before: Vec<String> = host_mountinfo();
    for id in ["a", "b"] {
        c.ctr(
            NS,
            &[
                "run",
                "-d",
                RT,
                IMG60,
                id,
                "/bin/sh",
                "-c",
                "echo made > /root/made; sleep 1000",
            ],
        )
        .ok();
    }
    wait_running(&c, "a");
    wait_running(&c, "b");
    let mut ranges = Vec::new();
    for id in ["a", "b"] {
        let out = c.ctr(
            NS,
            &[
                "task",
                "exec",
                "--exec-id",
                "m",
                id,
                "cat",
                "/proc/self/uid_map",
                "/layers/60",
            ],
        );
        out.ok();
        let (_, host, size) = uid_map_of(&out.stdout);
        assert!(out.stdout.contains("layer 60"), "{out:?}");
        ranges.push((host, host + size));
    }
    assert!(
        ranges[0].1 <= ranges[1].0 || ranges[1].1 <= ranges[0].0,
        "overlapping ranges {ranges:?}"
    );
    // Running containers add nothing to the host's mount table.
    let base = c.base().display().to_string();
    let added: Vec<String> = host_mountinfo()
        .into_iter()
        .filter(|l| !mounts_before.contains(l) && l.contains(&base))
        .collect();
    assert!(added.is_empty(), "host mount table gained {added:#?}");
    // For the record (the VM matrix shows it per kernel): the mount syscalls
    // each create issued, and the host's mount table while both run.
    for line in c.log().lines().filter(|l| l.contains("mount syscalls")) {
        eprintln!("create: {line}");
    }
    eprintln!(
        "host mountinfo: {} lines before, {} while both run, {} added under the test's directory",
        mounts_before.len(),
        host_mountinfo().len(),
        added.len()
    );
    // The file made inside is in the upper dir, owned by the container's root.
    let snaps = c
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let mut owners = Vec::new();
    for e in std::fs::read_dir(&snaps).expect("snapshots").flatten() {
        let f = e.path().join("fs/root/made");
        if let Ok(md) = std::fs::metadata(&f) {
            use std::os::unix::fs::MetadataExt;
            owners.push(u64::from(md.uid()));
        }
    }
    owners.sort_unstable();
    let mut want: Vec<u64> = ranges.iter().map(|r| r.0).collect();
    want.sort_unstable();
    assert_eq!(owners, want, "upper-dir owners vs ranges");
    c.kill_and_remove(NS, &["a", "b"]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn kill_pause_resume_ps_metrics_delete() {
    let c = setup("", &[(IMG, 1)]);
    // SIGTERM reaches a handler; the exit code is the handler's.
    let mut run = c.ctr_command(
        NS,
        &[
            "run",
            "--rm",
            RT,
            IMG,
            "k1",
            "/bin/sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.1; done",
        ],
    );
    let mut child = run
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ctr run");
    wait_running(&c, "k1");
    c.ctr(NS, &["task", "kill", "-s", "SIGTERM", "k1"]).ok();
    assert_eq!(child.wait().expect("wait").code(), Some(42));
    // SIGKILL: 137, as runc reports it.
    let mut run = c.ctr_command(NS, &["run", "--rm", RT, IMG, "k2", "sleep", "1000"]);
    let mut child = run
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ctr run");
    wait_running(&c, "k2");
    let ps = c.ctr(NS, &["task", "ps", "k2"]);
    ps.ok();
    assert_eq!(ps.stdout.lines().count(), 2, "one process: {ps:?}");
    c.ctr(NS, &["task", "pause", "k2"]).ok();
    assert!(c.ctr(NS, &["task", "ls"]).stdout.contains("PAUSED"));
    c.ctr(NS, &["task", "resume", "k2"]).ok();
    let m = c.ctr(NS, &["task", "metrics", "k2"]);
    m.ok();
    assert!(
        m.stdout.contains("pids.current") && m.stdout.contains("memory.usage_in_bytes"),
        "{m:?}"
    );
    c.ctr(NS, &["task", "kill", "-s", "SIGKILL", "k2"]).ok();
    assert_eq!(child.wait().expect("wait").code(), Some(137));
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn exec_with_and_without_tty_and_task_delete() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(NS, &["run", "-d", RT, IMG, "x1", "sleep", "1000"])
        .ok();
    wait_running(&c, "x1");
    let out = c.ctr(
        NS,
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "x1",
            "/bin/sh",
            "-c",
            "id -u; cat /proc/1/cmdline; exit 7",
        ],
    );
    assert_eq!(out.code, Some(7), "{out:?}");
    assert!(out.stdout.starts_with("0\nsleep"), "{out:?}");
    // Many short execs: the pid report and readiness never race.
    for i in 0..20 {
        let id = format!("q{i}");
        let out = c.ctr(NS, &["task", "exec", "--exec-id", &id, "x1", "true"]);
        assert_eq!(out.code, Some(0), "exec {i}: {out:?}");
    }
    let bad = c.ctr(NS, &["task", "exec", "--exec-id", "e2", "x1", "/no/such"]);
    assert_ne!(bad.code, Some(0));
    assert!(
        bad.stderr.contains("/no/such"),
        "error names the binary: {bad:?}"
    );
    let tty = with_pty(
        &c,
        &["task", "exec", "-t", "--exec-id", "e3", "x1", "/bin/sh"],
        b"tty; stty size; exit 6\r",
    );
    assert_eq!(tty.0, Some(6), "{tty:?}");
    assert!(
        tty.1.contains("/dev/pts/") && tty.1.contains("30 100"),
        "{tty:?}"
    );
    c.kill_and_remove(NS, &["x1"]).expect("task delete");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Runs ctr on a pty of 30x100, types `input`, returns (exit code, output).
fn with_pty(c: &Containerd, args: &[&str], input: &[u8]) -> (Option<i32>, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("utf8"))
        .expect("open slave");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("winsize");
    let mut cmd = c.ctr_command(NS, args);
    cmd.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let mut child = cmd.spawn().expect("spawn ctr");
    // The Command holds our copies of the slave: without dropping it the
    // master never sees the end.
    drop(cmd);
    let mut out = Vec::new();
    let mut typed = false;
    let start = Instant::now();
    let mut code = None;
    let mut exited_at = None;
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &master,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0);
        if ready > 0 {
            let mut buf = [0u8; 4096];
            match rustix::io::read(&master, &mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => {
                    if exited_at.is_some() {
                        break;
                    }
                }
            }
        }
        if !typed && start.elapsed() > Duration::from_millis(1500) {
            rustix::io::write(&master, input).expect("type");
            typed = true;
        }
        if exited_at.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                code = st.code();
                exited_at = Some(Instant::now());
            }
        }
        match exited_at {
            Some(t) if t.elapsed() > Duration::from_millis(500) => break,
            None if start.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            _ => {}
        }
    }
    (code, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn run_with_a_terminal() {
    let c = setup("", &[(IMG, 1)]);
    let (code, out) = with_pty(
        &c,
        &["run", "-t", "--rm", RT, IMG, "t1", "/bin/sh"],
        b"tty; stty size; echo $((6*7)); exit 4\r",
    );
    assert_eq!(code, Some(4), "{out}\n{}", c.log());
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("30 100"), "window size: {out}");
    assert!(out.contains("42"), "{out}");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn nonexistent_command_is_a_clear_error_and_leaks_nothing() {
    let c = setup("", &[(IMG, 1)]);
    let out = c.ctr(NS, &["run", "--rm", RT, IMG, "n1", "/no/such/binary"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("/no/such/binary"), "{out:?}");
    let _ = c.ctr(NS, &["containers", "rm", "n1"]);
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Every strategy builds a working 60-layer rootfs under containerd.
#[test]
fn every_strategy_runs_a_60_layer_image() {
    for strategy in ["fd", "path", "per-layer", "plain"] {
        let c = setup(&format!("strategy = \"{strategy}\""), &[(IMG60, 60)]);
        let out = c.ctr(
            NS,
            &[
                "run",
                "--rm",
                RT,
                IMG60,
                "s1",
                "/bin/sh",
                "-c",
                "cat /layers/60 /layers/2; cat /proc/self/uid_map",
            ],
        );
        assert_eq!(out.code, Some(0), "{strategy}: {out:?}\n{}", c.log());
        assert!(
            out.stdout.starts_with("layer 60\nlayer 2\n"),
            "{strategy}: {out:?}"
        );
        let (_, host, size) = uid_map_of(out.stdout.lines().nth(2).expect("uid_map"));
        if strategy == "plain" {
            assert_eq!((host, size), (0, 4294967295), "plain has no user namespace");
        } else {
            assert_eq!(size, 65536, "{strategy}");
        }
        assert!(
            c.log().contains(&format!("{strategy} strategy")),
            "{strategy}: the create log names the strategy"
        );
        c.assert_no_leaks(Duration::from_secs(10));
    }
}

#[test]
fn oom_kill_is_reported_as_a_task_oom_event() {
    let c = setup("", &[(IMG, 1)]);
    let mut events = c.ctr_command(NS, &["events"]);
    events
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut events = events.spawn().expect("ctr events");
    let stdout = events.stdout.take().expect("events stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = c.ctr(
        NS,
        &[
            "run",
            "--rm",
            RT,
            "--memory-limit",
            "16777216",
            IMG,
            "o1",
            "/bin/sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(out.code, Some(137), "OOM-killed: {out:?}");
    let mut text = String::new();
    let mut ooms = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ooms == 0 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("/tasks/oom") && line.contains("\"o1\"") {
                ooms += 1;
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(ooms >= 1, "no TaskOOM event: {text}");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn stdin_file_and_binary_log_uris() {
    let c = setup("", &[(IMG, 1)]);
    // stdin reaches the process, and its end (CloseIO) ends `cat`.
    let mut cmd = c.ctr_command(
        NS,
        &[
            "run",
            "--rm",
            RT,
            IMG,
            "i1",
            "/bin/sh",
            "-c",
            "cat; echo done",
        ],
    );
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"from the host\n").expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from the host\ndone\n"
    );

    // file:// gets stdout and stderr.
    let log = c.base().join("file.log");
    let uri = format!("file://{}", log.display());
    c.ctr(
        NS,
        &[
            "run",
            "--rm",
            RT,
            "--log-uri",
            &uri,
            IMG,
            "f1",
            "/bin/sh",
            "-c",
            "echo out; echo err >&2",
        ],
    )
    .ok();
    let text = std::fs::read_to_string(&log).expect("file log");
    assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");

    // binary://: containerd's logging protocol (fds 3 and 4, ready on 5).
    let logger = c.base().join("logger.sh");
    let blog = c.base().join("binary.log");
    std::fs::write(
        &logger,
        "#!/bin/sh\n# args: path <file>\nexec 5>&-\ncat <&3 > \"$2.out\" &\ncat <&4 > \"$2.err\"\nwait\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.id\"\n",
    )
    .expect("logger");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&logger).expect("md").permissions(),
        0o755,
    );
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let uri = format!("binary://{}?path={}", logger.display(), blog.display());
    c.ctr(
        NS,
        &[
            "run",
            "--rm",
            RT,
            "--log-uri",
            &uri,
            IMG,
            "b1",
            "/bin/sh",
            "-c",
            "echo bout; echo berr >&2",
        ],
    )
    .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let id_file = c.base().join("binary.log.id");
    while !id_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = |ext: &str| {
        std::fs::read_to_string(c.base().join(format!("binary.log.{ext}"))).unwrap_or_default()
    };
    assert_eq!(read("out"), "bout\n");
    assert_eq!(read("err"), "berr\n");
    assert_eq!(read("id"), format!("{NS}/b1\n"));
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A shim killed with SIGKILL: containerd runs `shim delete`, which kills
/// the container, releases its range and removes its state.
#[test]
fn a_killed_shim_is_cleaned_up_by_shim_delete() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(NS, &["run", "-d", RT, IMG, "d1", "sleep", "1000"])
        .ok();
    wait_running(&c, "d1");
    assert_eq!(c.live_ranges(), 1);
    let init_pid: u32 = c
        .ctr(NS, &["task", "ls"])
        .stdout
        .lines()
        .find(|l| l.starts_with("d1"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("init pid");
    let shims = idshift_tests::processes_matching("-id d1 ");
    let shims: Vec<_> = shims
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.contains("containerd-shim-idshift-v2")
                && cmd.contains(&c.address().display().to_string())
        })
        .collect();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let pid = rustix::process::Pid::from_raw(shims[0].0 as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill shim");
    // containerd notices, runs `shim delete`, and marks the task stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ls = c.ctr(NS, &["task", "ls"]).stdout;
        if !ls
            .lines()
            .any(|l| l.starts_with("d1") && l.contains("RUNNING"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task still running: {ls}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.ctr(NS, &["task", "rm", "-f", "d1"]);
    let _ = c.ctr(NS, &["containers", "rm", "d1"]);
    c.assert_no_leaks(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{init_pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the container's init {init_pid} survived its shim"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same id can be used again.
    c.ctr(NS, &["run", "--rm", RT, IMG, "d1", "true"]).ok();
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A namespace given by path in the spec is joined (here: another
/// container's network namespace), while the user namespace stays its own.
#[test]
fn namespaces_given_by_path_are_joined() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(NS, &["run", "-d", RT, IMG, "ns-a", "sleep", "1000"])
        .ok();
    wait_running(&c, "ns-a");
    let pid_a: u32 = c
        .ctr(NS, &["task", "ls"])
        .stdout
        .lines()
        .find(|l| l.starts_with("ns-a"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("pid of ns-a");
    let net = format!("network:/proc/{pid_a}/ns/net");
    let show = "readlink /proc/self/ns/net; readlink /proc/self/ns/user";
    let b = c.ctr(
        NS,
        &[
            "run",
            "--rm",
            RT,
            "--with-ns",
            &net,
            IMG,
            "ns-b",
            "/bin/sh",
            "-c",
            show,
        ],
    );
    b.ok();
    let a = c.ctr(
        NS,
        &[
            "task",
            "exec",
            "--exec-id",
            "show",
            "ns-a",
            "/bin/sh",
            "-c",
            show,
        ],
    );
    a.ok();
    let (a, b): (Vec<&str>, Vec<&str>) = (a.stdout.lines().collect(), b.stdout.lines().collect());
    assert_eq!(a[0], b[0], "the same network namespace");
    assert_ne!(a[1], b[1], "different user namespaces");
    c.kill_and_remove(NS, &["ns-a"]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A strategy forced in the config runs exactly when the kernel has it (as
/// `--features` reports), and is otherwise refused at create with an error
/// naming it, never replaced by another (on Debian 12's 6.1, `fd`).
#[test]
fn a_forced_strategy_runs_or_is_refused_clearly() {
    let scratch = std::env::temp_dir().join(idshift_tests::unique("idshift-features"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let features =
        std::process::Command::new(idshift_tests::shim_dir().join(idshift_tests::SHIM_BINARY))
            .args(["--features", "--scratch"])
            .arg(&scratch)
            .output()
            .expect("--features");
    let _ = std::fs::remove_dir_all(&scratch);
    let text = String::from_utf8_lossy(&features.stdout).into_owned();
    let has = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("--features lacks {label:?}: {text}"))
            .ends_with("yes")
    };
    let paths = has("overlay legacy lowerdir=:") || has("overlay lowerdir+ (path):");
    for (strategy, supported) in [
        ("fd", has("overlay layers as fds:")),
        ("path", paths),
        ("per-layer", paths),
    ] {
        let c = setup(&format!("strategy = \"{strategy}\""), &[(IMG, 1)]);
        let out = c.ctr(
            NS,
            &["run", "--rm", RT, IMG, "f1", "/bin/sh", "-c", "echo ran"],
        );
        if supported {
            assert_eq!(out.code, Some(0), "{strategy}: {out:?}\n{}", c.log());
            assert!(
                c.log().contains(&format!("{strategy} strategy")),
                "{strategy}"
            );
        } else {
            assert_ne!(
                out.code,
                Some(0),
                "{strategy} ran on a kernel without it: {out:?}"
            );
            assert!(
                out.stderr.contains(&format!(
                    "rootfs strategy {strategy} is not supported by this kernel"
                )),
                "{strategy}: {out:?}"
            );
            eprintln!("{strategy} refused as it should: {}", out.stderr.trim());
            let _ = c.ctr(NS, &["containers", "rm", "f1"]);
        }
        c.assert_no_leaks(Duration::from_secs(10));
    }
}
