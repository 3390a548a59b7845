//! idshift under real containerds (1.6, 1.7 and 2.x: every test on each),
//! driven with `ctr` (root needed).
//! Each test has its own containerd, idshift state and run dirs.

use idshift_tests::{host_mountinfo, on_containerd, Containerd, Flavour};
use std::process::Stdio;
use std::time::{Duration, Instant};

const RT: &str = "--runtime=io.containerd.idshift.v2";
const IMG: &str = "docker.io/library/idshift-busybox:1";
const IMG60: &str = "docker.io/library/idshift-busybox:60";

fn setup(config: &str, images: &[(&str, usize)]) -> Containerd {
    let c = Containerd::start(config)
        .unwrap_or_else(|e| panic!("start containerd {}: {e}", Flavour::current().name()));
    for (name, layers) in images {
        c.import_image(&c.namespace(), name, *layers)
            .expect("import image");
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
        let ls = c.ctr(&c.namespace(), &["task", "ls"]).stdout;
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

on_containerd!(run_rm_output_exit_code_identity_and_no_leaks: V1_6, V1_7, V2);
fn run_rm_output_exit_code_identity_and_no_leaks() {
    let c = setup("", &[(IMG, 1)]);
    let out = c.ctr(
        &c.namespace(),
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

on_containerd!(concurrent_containers_get_disjoint_ranges_and_no_host_mounts: V1_6, V1_7, V2);
fn concurrent_containers_get_disjoint_ranges_and_no_host_mounts() {
    let c = setup("", &[(IMG60, 60)]);
    let mounts_before: Vec<String> = host_mountinfo();
    for id in ["a", "b"] {
        c.ctr(
            &c.namespace(),
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
            &c.namespace(),
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
    c.kill_and_remove(&c.namespace(), &["a", "b"])
        .expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(kill_pause_resume_ps_metrics_delete: V1_6, V1_7, V2);
fn kill_pause_resume_ps_metrics_delete() {
    let c = setup("", &[(IMG, 1)]);
    // SIGTERM reaches a handler; the exit code is the handler's.
    let mut run = c.ctr_command(
        &c.namespace(),
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
    c.ctr(&c.namespace(), &["task", "kill", "-s", "SIGTERM", "k1"])
        .ok();
    assert_eq!(child.wait().expect("wait").code(), Some(42));
    // SIGKILL: 137, as runc reports it.
    let mut run = c.ctr_command(
        &c.namespace(),
        &["run", "--rm", RT, IMG, "k2", "sleep", "1000"],
    );
    let mut child = run
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ctr run");
    wait_running(&c, "k2");
    let ps = c.ctr(&c.namespace(), &["task", "ps", "k2"]);
    ps.ok();
    assert_eq!(ps.stdout.lines().count(), 2, "one process: {ps:?}");
    c.ctr(&c.namespace(), &["task", "pause", "k2"]).ok();
    assert!(c
        .ctr(&c.namespace(), &["task", "ls"])
        .stdout
        .contains("PAUSED"));
    c.ctr(&c.namespace(), &["task", "resume", "k2"]).ok();
    let m = c.ctr(&c.namespace(), &["task", "metrics", "k2"]);
    m.ok();
    assert!(
        m.stdout.contains("pids.current") && m.stdout.contains("memory.usage_in_bytes"),
        "{m:?}"
    );
    c.ctr(&c.namespace(), &["task", "kill", "-s", "SIGKILL", "k2"])
        .ok();
    assert_eq!(child.wait().expect("wait").code(), Some(137));
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(exec_with_and_without_tty_and_task_delete: V1_6, V1_7, V2);
fn exec_with_and_without_tty_and_task_delete() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(
        &c.namespace(),
        &["run", "-d", RT, IMG, "x1", "sleep", "1000"],
    )
    .ok();
    wait_running(&c, "x1");
    let out = c.ctr(
        &c.namespace(),
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
        let out = c.ctr(
            &c.namespace(),
            &["task", "exec", "--exec-id", &id, "x1", "true"],
        );
        assert_eq!(out.code, Some(0), "exec {i}: {out:?}");
    }
    let bad = c.ctr(
        &c.namespace(),
        &["task", "exec", "--exec-id", "e2", "x1", "/no/such"],
    );
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
    c.kill_and_remove(&c.namespace(), &["x1"])
        .expect("task delete");
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
    let mut cmd = c.ctr_command(&c.namespace(), args);
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

on_containerd!(run_with_a_terminal: V1_6, V1_7, V2);
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

on_containerd!(nonexistent_command_is_a_clear_error_and_leaks_nothing: V1_6, V1_7, V2);
fn nonexistent_command_is_a_clear_error_and_leaks_nothing() {
    let c = setup("", &[(IMG, 1)]);
    let out = c.ctr(
        &c.namespace(),
        &["run", "--rm", RT, IMG, "n1", "/no/such/binary"],
    );
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("/no/such/binary"), "{out:?}");
    let _ = c.ctr(&c.namespace(), &["containers", "rm", "n1"]);
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(every_strategy_runs_a_60_layer_image: V1_6, V1_7, V2);
/// Every strategy builds a working 60-layer rootfs under containerd.
fn every_strategy_runs_a_60_layer_image() {
    for strategy in ["fd", "path", "per-layer", "plain"] {
        let c = setup(&format!("strategy = \"{strategy}\""), &[(IMG60, 60)]);
        let out = c.ctr(
            &c.namespace(),
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

on_containerd!(oom_kill_is_reported_as_a_task_oom_event: V1_6, V1_7, V2);
fn oom_kill_is_reported_as_a_task_oom_event() {
    let c = setup("", &[(IMG, 1)]);
    let mut events = c.ctr_command(&c.namespace(), &["events"]);
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
        &c.namespace(),
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

on_containerd!(stdin_file_and_binary_log_uris: V1_6, V1_7, V2);
fn stdin_file_and_binary_log_uris() {
    let c = setup("", &[(IMG, 1)]);
    // stdin reaches the process, and its end (CloseIO) ends `cat`.
    let mut cmd = c.ctr_command(
        &c.namespace(),
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
        &c.namespace(),
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
        "#!/bin/sh\n# args: path <file>\nexec 5>&-\ncat <&3 > \"$2.out\" &\ncat <&4 > \"$2.err\"\nwait\nenv > \"$2.env\"\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.id\"\n",
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
        &c.namespace(),
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
    assert_eq!(read("id"), format!("{}/b1\n", c.namespace()));
    // Its environment: CONTAINER_ID and CONTAINER_NAMESPACE, as the runc
    // shim gives it, not the shim's own.
    let env = read("env");
    assert!(env.contains("CONTAINER_ID=b1"), "{env}");
    for own in ["TTRPC_ADDRESS=", "GLIBC_TUNABLES="] {
        assert!(!env.contains(own), "the logger got the shim's {own}: {env}");
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(a_killed_shim_is_cleaned_up_by_shim_delete: V1_6, V1_7, V2);
/// A shim killed with SIGKILL: containerd runs `shim delete`, which kills
/// the container, releases its range and removes its state.
fn a_killed_shim_is_cleaned_up_by_shim_delete() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(
        &c.namespace(),
        &["run", "-d", RT, IMG, "d1", "sleep", "1000"],
    )
    .ok();
    wait_running(&c, "d1");
    assert_eq!(c.live_ranges(), 1);
    let init_pid: u32 = c
        .ctr(&c.namespace(), &["task", "ls"])
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
        let ls = c.ctr(&c.namespace(), &["task", "ls"]).stdout;
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
    let _ = c.ctr(&c.namespace(), &["task", "rm", "-f", "d1"]);
    let _ = c.ctr(&c.namespace(), &["containers", "rm", "d1"]);
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
    c.ctr(&c.namespace(), &["run", "--rm", RT, IMG, "d1", "true"])
        .ok();
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(namespaces_given_by_path_are_joined: V1_6, V1_7, V2);
/// A namespace given by path in the spec is joined (here: another
/// container's network namespace), while the user namespace stays its own.
fn namespaces_given_by_path_are_joined() {
    let c = setup("", &[(IMG, 1)]);
    c.ctr(
        &c.namespace(),
        &["run", "-d", RT, IMG, "ns-a", "sleep", "1000"],
    )
    .ok();
    wait_running(&c, "ns-a");
    let pid_a: u32 = c
        .ctr(&c.namespace(), &["task", "ls"])
        .stdout
        .lines()
        .find(|l| l.starts_with("ns-a"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("pid of ns-a");
    let net = format!("network:/proc/{pid_a}/ns/net");
    let show = "readlink /proc/self/ns/net; readlink /proc/self/ns/user";
    let b = c.ctr(
        &c.namespace(),
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
        &c.namespace(),
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
    c.kill_and_remove(&c.namespace(), &["ns-a"])
        .expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// The line the shim logs for the create of `id` (strategy and mount
/// syscalls).
fn create_log_line(c: &Containerd, id: &str) -> String {
    c.log()
        .lines()
        .find(|l| l.contains(&format!("created {id} ")))
        .unwrap_or_else(|| panic!("the shim logs the create of {id}:\n{}", c.log_tail(60)))
        .to_string()
}

on_containerd!(remapped_snapshot_options_become_the_layers_idmap: V2);
/// Kubelet's style of mappings on containerd 2.x, through `ctr run --uidmap
/// --gidmap --remap-labels`: the overlay snapshotter hands the runtime
/// `uidmap=`/`gidmap=` rootfs options, which become the idmap of idshift's
/// single idmapped clone: the user namespace is exactly the mappings, the
/// image is 0:0 inside, a file written inside is 262144's on the host, the
/// rootfs took 4 mount syscalls in the shim and 1 move_mount inside, the
/// host mount table did not change.
fn remapped_snapshot_options_become_the_layers_idmap() {
    let c = setup("", &[(IMG, 1)]);
    let ns = c.namespace();
    let before = host_mountinfo();
    let map = "0:262144:65536";
    c.ctr(
        &ns,
        &[
            "run",
            "-d",
            "--uidmap",
            map,
            "--gidmap",
            map,
            "--remap-labels",
            RT,
            IMG,
            "km",
            "/bin/sh",
            "-c",
            "echo x > /written; sleep 1000",
        ],
    )
    .ok();
    wait_running(&c, "km");
    // containerd passed the mapping in the rootfs options.
    let mounts = c.ctr(&ns, &["snapshots", "mounts", "/mnt", "km"]);
    mounts.ok();
    assert!(
        mounts.stdout.contains("uidmap=0:262144:65536")
            && mounts.stdout.contains("gidmap=0:262144:65536"),
        "containerd's rootfs mount options: {mounts:?}"
    );
    let out = c.ctr(
        &ns,
        &[
            "task", "exec", "--exec-id", "k", "km", "/bin/sh", "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; stat -c %u:%g /bin/busybox /etc/passwd /written",
        ],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{out:?}");
    assert_eq!(uid_map_of(lines[0]), (0, 262144, 65536), "uid_map: {out:?}");
    assert_eq!(uid_map_of(lines[1]), (0, 262144, 65536), "gid_map: {out:?}");
    assert_eq!(&lines[2..], ["0:0", "0:0", "0:0"], "{out:?}");
    // On the host, the file is the mapping's root's.
    let snaps = c
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let owners: Vec<(u32, u32)> = std::fs::read_dir(&snaps)
        .expect("snapshots")
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("fs/written")).ok())
        .map(|md| {
            use std::os::unix::fs::MetadataExt;
            (md.uid(), md.gid())
        })
        .collect();
    assert_eq!(owners, [(262144, 262144)], "the written file's host owner");
    // 4 mount syscalls in the shim (fd strategy: open_tree, mount_setattr,
    // fsopen, fsmount), 1 move_mount inside, nothing on the host.
    let line = create_log_line(&c, "km");
    assert!(
        line.contains("(fd strategy, 4 mount syscalls (open_tree 1, mount_setattr 1, fsopen 1, fsmount 1, move_mount 0, mount 0, umount 0;")
            && line.contains("then 1 move_mount inside"),
        "{line}"
    );
    let base = c.base().display().to_string();
    let added: Vec<String> = host_mountinfo()
        .into_iter()
        .filter(|l| !before.contains(l) && l.contains(&base))
        .collect();
    assert!(added.is_empty(), "host mount table gained {added:#?}");
    c.kill_and_remove(&ns, &["km"]).expect("remove");
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(remapped_snapshot_options_unlike_the_spec_are_refused: V2);
/// Rootfs options whose mapping is not the spec's are refused, naming
/// both, and nothing is left: a container run once with `--uidmap --gidmap
/// --remap-labels` keeps its snapshot; relabelled with another mapping,
/// its next task gets rootfs options unlike its spec's mappings.
fn remapped_snapshot_options_unlike_the_spec_are_refused() {
    let c = setup("", &[(IMG, 1)]);
    let ns = c.namespace();
    let map = "0:262144:65536";
    let out = c.ctr(
        &ns,
        &[
            "run",
            "--uidmap",
            map,
            "--gidmap",
            map,
            "--remap-labels",
            RT,
            IMG,
            "kx",
            "true",
        ],
    );
    out.ok();
    let before = host_mountinfo();
    let ranges_before = c.live_ranges();
    let label = c.ctr(
        &ns,
        &[
            "snapshots",
            "label",
            "kx",
            "containerd.io/snapshot/gidmapping=0:327680:65536",
        ],
    );
    label.ok();
    let mounts = c.ctr(&ns, &["snapshots", "mounts", "/mnt", "kx"]);
    assert!(
        mounts.stdout.contains("gidmap=0:327680:65536"),
        "relabelled: {mounts:?}"
    );
    let out = c.ctr(&ns, &["task", "start", "kx"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains(
            "the rootfs mount options' idmapping (uidmap=0:262144:65536 gidmap=0:327680:65536) \
             differs from the spec's user namespace mappings (linux.uidMappings 0:262144:65536, \
             linux.gidMappings 0:262144:65536)"
        ),
        "{out:?}"
    );
    let base = c.base().display().to_string();
    let added: Vec<String> = host_mountinfo()
        .into_iter()
        .filter(|l| !before.contains(l) && l.contains(&base))
        .collect();
    assert!(added.is_empty(), "host mount table gained {added:#?}");
    assert_eq!(c.live_ranges(), ranges_before, "no range allocated");
    let _ = c.ctr(&ns, &["task", "delete", "kx"]);
    c.ctr(&ns, &["containers", "rm", "kx"]).ok();
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(the_runtime_options_config_path_is_honoured: V1_6, V1_7, V2);
/// `ctr run --runtime-config-path` (containerd's runtime options, which
/// 1.6 writes to the shim's `start` alone and 2.x in its bootstrap
/// message's extensions): a config that does not exist is refused naming
/// it; one that does is the container's (its strategy is used).
fn the_runtime_options_config_path_is_honoured() {
    let c = setup("", &[(IMG, 1)]);
    let ns = c.namespace();
    let missing = c.base().join("no-such-idshift.toml");
    let missing = missing.display().to_string();
    let out = c.ctr(
        &ns,
        &[
            "run",
            "--rm",
            RT,
            "--runtime-config-path",
            &missing,
            IMG,
            "cp1",
            "true",
        ],
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    // Refused by `start` (the options on its standard input), before any
    // create.
    assert!(
        out.stderr.contains("the runtime options' ConfigPath") && out.stderr.contains(&missing),
        "{out:?}"
    );
    let _ = c.ctr(&ns, &["containers", "rm", "cp1"]);
    let own = c.base().join("own-idshift.toml");
    let text = std::fs::read_to_string(&c.idshift_config).expect("idshift config");
    std::fs::write(&own, format!("{text}\nstrategy = \"path\"\n")).expect("own config");
    let own = own.display().to_string();
    let out = c.ctr(
        &ns,
        &[
            "run",
            "--rm",
            RT,
            "--runtime-config-path",
            &own,
            IMG,
            "cp2",
            "true",
        ],
    );
    out.ok();
    let line = create_log_line(&c, "cp2");
    assert!(line.contains("(path strategy, "), "{line}");
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(ctr_run_device_matches_runc: V1_6, V1_7, V2);
/// `ctr run --device /dev/fuse` (the device and its cgroup rule, as ctr
/// writes them): the node is there, with the host's type, numbers and mode,
/// under idshift as under runc.
fn ctr_run_device_matches_runc() {
    let c = setup("", &[(IMG, 1)]);
    let ns = c.namespace();
    let script =
        "stat -c '%F %t:%T %a' /dev/fuse; grep -c ' /dev/fuse ' /proc/self/mountinfo; true";
    let run = |runtime: &str, id: &str| {
        c.ctr(
            &ns,
            &[
                "run",
                "--rm",
                runtime,
                "--device",
                "/dev/fuse",
                IMG,
                id,
                "/bin/sh",
                "-c",
                script,
            ],
        )
    };
    let ours = run(RT, "dev-idshift");
    let runc = run("--runtime=io.containerd.runc.v2", "dev-runc");
    let mode = std::fs::metadata("/dev/fuse").map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    let want = format!("character special file a:e5 {:o}", mode.expect("/dev/fuse"));
    assert_eq!(
        ours.ok().stdout.lines().next(),
        Some(want.as_str()),
        "{ours:?}"
    );
    assert_eq!(
        runc.ok().stdout.lines().next(),
        Some(want.as_str()),
        "{runc:?}"
    );
    // idshift binds the host's node (a user namespace cannot mknod); runc
    // without a user namespace makes one.
    assert_eq!(ours.stdout.lines().nth(1), Some("1"), "{ours:?}");
    c.assert_no_leaks(Duration::from_secs(10));
}

on_containerd!(a_forced_strategy_runs_or_is_refused_clearly: V1_6, V1_7, V2);
/// A strategy forced in the config runs exactly when the kernel has it (as
/// `--features` reports), and is otherwise refused at create with an error
/// naming it, never replaced by another (on Debian 12's 6.1, `fd`).
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
        let ns = c.namespace();
        let out = c.ctr(
            &ns,
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
            let _ = c.ctr(&ns, &["containers", "rm", "f1"]);
        }
        c.assert_no_leaks(Duration::from_secs(10));
    }
}
