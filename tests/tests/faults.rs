//! Faults under a real containerd 1.6 (root needed): containerd restarted
//! under running containers, the shim SIGKILLed while idle, at each phase
//! of Create and during Delete (the shim's test-only `IDSHIFT_TEST_PAUSE`
//! hook, `shim/src/faultpoint.rs`), the container's init killed under its
//! execs, many execs (no zombies, no fd leak), the host out of ID ranges and
//! the state dir's disk full. After each: the state containerd shows is
//! right, nothing is left behind ([`Containerd::leaks`]: processes, mounts,
//! ranges, run dirs, cgroups) and the same container id works again.

use idshift_tests::{
    host_mountinfo, processes_matching, Containerd, ContainerdOptions, CtrOutput, IDSHIFT_RUNTIME,
};
use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMG: &str = "docker.io/library/idshift-busybox:1";
const IMG3: &str = "docker.io/library/idshift-busybox:3";

/// A containerd of the test's own, with `idshift_toml`, the environment
/// `env` (for the shims) and the images `images` in its own namespace.
fn setup(
    idshift_toml: &str,
    env: &[(&str, &str)],
    images: &[(&str, usize)],
) -> (Containerd, String) {
    let mut opts = ContainerdOptions::idshift(idshift_toml);
    opts.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let c = Containerd::start(opts).expect("start containerd");
    let ns = c.namespace();
    for (name, layers) in images {
        c.import_image(&ns, name, *layers).expect("import image");
    }
    (c, ns)
}

/// `ctr run -d` of `cmd` (a shell script) in container `id`.
fn run_detached(c: &Containerd, ns: &str, image: &str, id: &str, script: &str) {
    let out = c.ctr(
        ns,
        &[
            "run",
            "-d",
            IDSHIFT_RUNTIME,
            image,
            id,
            "/bin/sh",
            "-c",
            script,
        ],
    );
    assert!(
        out.success(),
        "ctr run -d {id}: {out:?}\n{}",
        c.log_tail(60)
    );
}

/// (pid, status) of task `id` in `ctr task ls`.
fn task(c: &Containerd, ns: &str, id: &str) -> Option<(u32, String)> {
    let out = c.ctr(ns, &["task", "ls"]);
    out.stdout.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| {
            (
                f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
    })
}

fn wait_status(c: &Containerd, ns: &str, id: &str, status: &str, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let t = task(c, ns, id);
        if let Some((pid, s)) = &t {
            if s == status {
                return *pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is {t:?}, not {status}\n{}",
            c.log_tail(80)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, c: &Containerd, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} (waited {within:?})\n{}",
            c.log_tail(80)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The serving shim of container `id` (its pid).
fn shim_pid(c: &Containerd, id: &str) -> u32 {
    let me = format!("{}/", c.base().display());
    let flag = format!(" -id {id} ");
    let found: Vec<u32> = processes_matching(&me)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(&flag) && cmd.contains("-socket"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(found.len(), 1, "the serving shim of {id}: {found:?}");
    found[0]
}

fn alive(pid: u32) -> bool {
    // A zombie is dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

fn sigkill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, Signal::KILL).expect("SIGKILL");
}

/// The shim socket containerd was given for container `id` (the bundle's
/// `address` file), as a path.
fn shim_socket(c: &Containerd, ns: &str, id: &str) -> PathBuf {
    let f = c
        .containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(ns)
        .join(id)
        .join("address");
    let a = std::fs::read_to_string(&f).expect("the bundle's address file");
    PathBuf::from(a.trim().trim_start_matches("unix://"))
}

/// `ctr task rm` then `ctr c rm` of `id`, tolerating a task containerd
/// already dropped (its shim died).
fn remove(c: &Containerd, ns: &str, id: &str) {
    let out = c.ctr(ns, &["task", "rm", "-f", id]);
    assert!(
        out.success() || out.stderr.contains("not found"),
        "ctr task rm {id}: {out:?}\n{}",
        c.log_tail(60)
    );
    let out = c.ctr(ns, &["c", "rm", id]);
    assert!(out.success(), "ctr c rm {id}: {out:?}\n{}", c.log_tail(60));
}

/// The same id again: a container that runs, says it is root and exits 3.
fn same_id_works(c: &Containerd, ns: &str, id: &str) {
    let out = c.ctr(
        ns,
        &[
            "run",
            "--rm",
            IDSHIFT_RUNTIME,
            IMG,
            id,
            "/bin/sh",
            "-c",
            "id -u; exit 3",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(3), "0"),
        "{id} again: {out:?}\n{}",
        c.log_tail(60)
    );
}

/// A `ctr` running in the background (its output collected as it comes),
/// killed on drop.
struct Bg {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let to = buf.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut b) = to.lock() {
                b.push_str(&line);
                b.push('\n');
            }
        }
    });
    buf
}

impl Bg {
    fn spawn(c: &Containerd, ns: &str, args: &[&str]) -> Bg {
        let mut cmd = c.ctr_command(ns, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ctr");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Bg {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits (at most `within`) for it to exit; its output.
    fn finish(mut self, within: Duration) -> CtrOutput {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // The readers see EOF.
                std::thread::sleep(Duration::from_millis(100));
                return CtrOutput {
                    code: st.code(),
                    stdout: self.stdout(),
                    stderr: self.stderr.lock().map(|s| s.clone()).unwrap_or_default(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "ctr still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most `within`) until `ctr events` printed the exit of process
/// `id` of container `cid`.
fn wait_exit_event(c: &Containerd, events: &Bg, cid: &str, id: &str, within: Duration) {
    let want = |l: &&str| {
        l.contains("/tasks/exit")
            && l.contains(&format!("\"container_id\":\"{cid}\""))
            && l.contains(&format!("\"id\":\"{id}\""))
    };
    let deadline = Instant::now() + within;
    while !events.stdout().lines().any(|l| want(&l)) {
        assert!(
            Instant::now() < deadline,
            "no /tasks/exit event of {cid}/{id}; ctr events printed:\n{}\n{}",
            events.stdout(),
            c.log_tail(80)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The exit code `ctr task rm` reports (it warns about a non-zero one and
/// exits 0).
fn rm_exit_code(out: &CtrOutput) -> Option<i32> {
    if !out.success() {
        return None;
    }
    match out.stderr.split("exit with non-zero exit code ").nth(1) {
        Some(rest) => rest
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok(),
        None => Some(0),
    }
}

fn restart_under_running_containers(signal: Signal) {
    let (mut c, ns) = setup("", &[], &[(IMG, 1)]);
    // a exits 7 once told to (after the restart); b runs until killed.
    run_detached(
        &c,
        &ns,
        IMG,
        "a",
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7",
    );
    run_detached(&c, &ns, IMG, "b", "sleep 100000");
    // d exits 5 on SIGTERM, sent while containerd is down.
    run_detached(
        &c,
        &ns,
        IMG,
        "d",
        "trap 'exit 5' TERM; while :; do sleep 0.1; done",
    );
    let pid_a = wait_status(&c, &ns, "a", "RUNNING", Duration::from_secs(30));
    let pid_b = wait_status(&c, &ns, "b", "RUNNING", Duration::from_secs(30));
    let pid_d = wait_status(&c, &ns, "d", "RUNNING", Duration::from_secs(30));
    let (shim_a, shim_b) = (shim_pid(&c, "a"), shim_pid(&c, "b"));

    c.stop_with(signal).expect("stop containerd");
    let pid = rustix::process::Pid::from_raw(pid_d as i32).expect("d's pid");
    rustix::process::kill_process(pid, Signal::TERM).expect("SIGTERM d");
    wait_for("d to exit", &c, Duration::from_secs(10), || !alive(pid_d));
    c.start_again().expect("start containerd again");
    // The shims and their tasks ran on, and containerd found them again.
    assert!(
        alive(shim_a) && alive(shim_b),
        "the shims died with containerd"
    );
    assert_eq!(task(&c, &ns, "a"), Some((pid_a, "RUNNING".into())));
    assert_eq!(task(&c, &ns, "b"), Some((pid_b, "RUNNING".into())));
    // The exit while containerd was down is the task's state.
    wait_status(&c, &ns, "d", "STOPPED", Duration::from_secs(10));
    let out = c.ctr(&ns, &["task", "rm", "d"]);
    assert_eq!(
        rm_exit_code(&out),
        Some(5),
        "d's exit code: {out:?}\n{}",
        c.log_tail(60)
    );
    assert!(c.ctr(&ns, &["c", "rm", "d"]).success());

    // An exit after the restart reaches containerd: as an event, and as the
    // task's state and exit code.
    let events = Bg::spawn(&c, &ns, &["events"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = c.ctr(
        &ns,
        &["task", "exec", "--exec-id", "go", "a", "touch", "/tmp/go"],
    );
    assert!(
        out.success(),
        "exec after the restart: {out:?}\n{}",
        c.log_tail(60)
    );
    wait_status(&c, &ns, "a", "STOPPED", Duration::from_secs(20));
    // The shim's publisher reconnects and retries within seconds.
    wait_exit_event(&c, &events, "a", "a", Duration::from_secs(20));
    drop(events);
    let out = c.ctr(&ns, &["task", "rm", "a"]);
    assert_eq!(
        rm_exit_code(&out),
        Some(7),
        "a's exit code: {out:?}\n{}",
        c.log_tail(60)
    );
    let out = c.ctr(&ns, &["c", "rm", "a"]);
    assert!(out.success(), "{out:?}");

    // Kill and delete work through the new containerd.
    let out = c.ctr(&ns, &["task", "kill", "-s", "SIGKILL", "b"]);
    assert!(out.success(), "kill b: {out:?}\n{}", c.log_tail(60));
    wait_status(&c, &ns, "b", "STOPPED", Duration::from_secs(20));
    let out = c.ctr(&ns, &["task", "rm", "b"]);
    assert_eq!(
        rm_exit_code(&out),
        Some(137),
        "b's exit code: {out:?}\n{}",
        c.log_tail(60)
    );
    assert!(c.ctr(&ns, &["c", "rm", "b"]).success());
    c.assert_no_leaks(Duration::from_secs(10));
    wait_for("the shims to exit", &c, Duration::from_secs(10), || {
        !alive(shim_a) && !alive(shim_b)
    });
}

#[test]
fn containerd_sigterm_restart_keeps_tasks_and_delivers_later_exits() {
    restart_under_running_containers(Signal::TERM);
}

#[test]
fn containerd_sigkill_restart_keeps_tasks_and_delivers_later_exits() {
    restart_under_running_containers(Signal::KILL);
}

/// After a shim's death: containerd's `shim delete` kills the containers'
/// inits; removing the containers then leaves nothing, not even the dead
/// shims' sockets, and each id can be used again.
fn cleaned_up_after_shim_death(
    c: &Containerd,
    ns: &str,
    ids: &[&str],
    inits: &[u32],
    sockets: &[PathBuf],
) {
    wait_for("the inits to be killed", c, Duration::from_secs(20), || {
        inits.iter().all(|p| !alive(*p))
    });
    for id in ids {
        remove(c, ns, id);
    }
    c.assert_no_leaks(Duration::from_secs(20));
    for s in sockets {
        assert!(
            !s.exists(),
            "the dead shim's socket {} is left",
            s.display()
        );
    }
    for id in ids {
        same_id_works(c, ns, id);
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn shim_sigkilled_while_idle_is_cleaned_up_by_shim_delete() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    run_detached(&c, &ns, IMG, "idle", "sleep 100000");
    let init = wait_status(&c, &ns, "idle", "RUNNING", Duration::from_secs(30));
    let shim = shim_pid(&c, "idle");
    let socket = shim_socket(&c, &ns, "idle");
    assert!(socket.exists(), "{}", socket.display());
    assert_eq!(c.live_ranges(), 1);
    // The leak check sees the container's cgroup while it lives.
    assert!(
        !c.cgroup_leaks().is_empty(),
        "the cgroup of idle is not seen"
    );
    sigkill(shim);
    // containerd sees the shim gone and runs `shim delete`, which kills the
    // container and releases what it held.
    wait_for(
        "shim delete to release the range",
        &c,
        Duration::from_secs(20),
        || c.live_ranges() == 0,
    );
    cleaned_up_after_shim_death(&c, &ns, &["idle"], &[init], &[socket]);
}

#[test]
fn shim_dead_while_containerd_down_with_a_torn_or_missing_state_json() {
    let (mut c, ns) = setup("", &[], &[(IMG, 1)]);
    let ids = ["torn", "gone"];
    let mut inits = Vec::new();
    let mut shims = Vec::new();
    let mut sockets = Vec::new();
    for id in ids {
        run_detached(&c, &ns, IMG, id, "sleep 100000");
        inits.push(wait_status(&c, &ns, id, "RUNNING", Duration::from_secs(30)));
        shims.push(shim_pid(&c, id));
        sockets.push(shim_socket(&c, &ns, id));
    }
    c.stop_with(Signal::KILL).expect("SIGKILL containerd");
    for shim in &shims {
        sigkill(*shim);
    }
    wait_for("the shims to die", &c, Duration::from_secs(10), || {
        shims.iter().all(|p| !alive(*p))
    });
    // The record shim delete needs is lost: truncated (by something other
    // than idshift, which renames whole files into place), or removed.
    let state = |id| container_run_dir(&c, &ns, id).join("state.json");
    std::fs::write(state("torn"), "{\"pid\": 12").expect("tear state.json");
    std::fs::remove_file(state("gone")).expect("remove state.json");
    assert!(
        inits.iter().all(|p| alive(*p)),
        "the containers outlive their shims"
    );
    assert_eq!(c.live_ranges(), 2);
    // containerd finds the shims dead on start and runs `shim delete`, which
    // cleans up by the allocator and the bundle's spec.
    c.start_again().expect("start containerd again");
    cleaned_up_after_shim_death(&c, &ns, &ids, &inits, &sockets);
}

#[test]
fn group_shim_sigkilled_cleans_up_every_container_it_served() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    let group = "--annotation=io.containerd.runc.v2.group=g1";
    let ids = ["ga", "gb"];
    let mut inits = Vec::new();
    for id in ids {
        let out = c.ctr(
            &ns,
            &[
                "run",
                "-d",
                IDSHIFT_RUNTIME,
                group,
                IMG,
                id,
                "sleep",
                "100000",
            ],
        );
        assert!(out.success(), "ctr run {id}: {out:?}\n{}", c.log_tail(60));
        inits.push(wait_status(&c, &ns, id, "RUNNING", Duration::from_secs(30)));
    }
    // One shim (started for the first, serving both) and its socket.
    let shim = shim_pid(&c, "ga");
    let socket = shim_socket(&c, &ns, "gb");
    assert_eq!(
        socket,
        shim_socket(&c, &ns, "ga"),
        "one socket for the group"
    );
    assert_eq!(c.live_ranges(), 2);
    sigkill(shim);
    cleaned_up_after_shim_death(&c, &ns, &ids, &inits, &[socket]);
}

/// The run dir of container `id`.
fn container_run_dir(c: &Containerd, ns: &str, id: &str) -> PathBuf {
    c.run_dir().join(ns).join(id)
}

fn state_json(c: &Containerd, ns: &str, id: &str) -> serde_json::Value {
    let p = container_run_dir(c, ns, id).join("state.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("state.json parses")
}

const CREATE_PHASES: [&str; 4] = ["userns", "rootfs-mount", "rootfs", "init"];
const ALL_PHASES: [&str; 5] = ["userns", "rootfs-mount", "rootfs", "init", "delete"];

/// Marks every pause phase but `phase` as done for `id` (the hook is
/// one-shot per marker).
fn only_pause_at(c: &Containerd, phase: &str, id: &str) -> PathBuf {
    for p in ALL_PHASES.iter().filter(|p| **p != phase) {
        std::fs::write(c.run_dir().join(format!("pause-{p}-{id}")), "").expect("marker");
    }
    c.run_dir().join(format!("pause-{phase}-{id}"))
}

#[test]
fn shim_sigkilled_at_each_create_phase_leaks_nothing() {
    // `path` builds the rootfs with temporary mounts in the container's run
    // dir: the rootfs-mount phase kills the shim while one is attached.
    let (c, ns) = setup(
        "strategy = \"path\"\n",
        &[("IDSHIFT_TEST_PAUSE", &ALL_PHASES.join(","))],
        &[(IMG3, 3), (IMG, 1)],
    );
    create_phases(&c, &ns, &CREATE_PHASES);
}

#[test]
fn shim_sigkilled_with_a_temporary_mount_per_layer_leaks_nothing() {
    let (c, ns) = setup(
        "strategy = \"per-layer\"\n",
        &[("IDSHIFT_TEST_PAUSE", &ALL_PHASES.join(","))],
        &[(IMG3, 3), (IMG, 1)],
    );
    create_phases(&c, &ns, &["rootfs-mount"]);
}

/// For each phase of `phases`: `ctr run` paused there, the shim SIGKILLed,
/// then nothing left and the same id runs.
fn create_phases(c: &Containerd, ns: &str, phases: &[&str]) {
    std::fs::create_dir_all(c.run_dir()).expect("run dir");
    for &phase in phases {
        let id = format!("create-{phase}");
        let marker = only_pause_at(c, phase, &id);
        let run = Bg::spawn(
            c,
            ns,
            &[
                "run",
                "-d",
                IDSHIFT_RUNTIME,
                IMG3,
                &id,
                "/bin/sh",
                "-c",
                "sleep 100000",
            ],
        );
        wait_for(
            &format!("the shim to pause at {phase}"),
            c,
            Duration::from_secs(30),
            || marker.exists(),
        );
        // What the phase has acquired is on record.
        let st = state_json(c, ns, &id);
        assert_eq!(c.live_ranges(), 1, "{phase}: the range is allocated");
        assert!(st["range_owner"].is_string(), "{phase}: {st}");
        let dir = container_run_dir(c, ns, &id);
        match phase {
            "rootfs-mount" => {
                let tmp = dir.join("tmp").display().to_string();
                assert!(
                    host_mountinfo().iter().any(|l| l.contains(&tmp)),
                    "a temporary mount under {tmp}"
                );
            }
            "init" => {
                assert!(st["cgroup"].is_string(), "{st}");
                let pid = st["pid"].as_u64().expect("the init's pid") as u32;
                assert!(alive(pid), "the init {pid} waits for Start");
            }
            _ => {}
        }
        let init = st["pid"].as_u64().unwrap_or(0) as u32;
        let socket = shim_socket(c, ns, &id);
        sigkill(shim_pid(c, &id));
        let out = run.finish(Duration::from_secs(60));
        assert!(!out.success(), "{phase}: ctr run succeeded: {out:?}");
        if init > 0 {
            wait_for("the init to be killed", c, Duration::from_secs(20), || {
                !alive(init)
            });
        }
        // ctr run cleaned up the container it made, or left it to us.
        let listed = c.ctr(ns, &["c", "ls", "-q"]).stdout;
        if listed.lines().any(|l| l.trim() == id) {
            remove(c, ns, &id);
        }
        wait_for(
            &format!("{phase}: no leaks"),
            c,
            Duration::from_secs(20),
            || c.leaks().is_empty(),
        );
        assert!(
            !socket.exists(),
            "{phase}: the dead shim's socket {} is left",
            socket.display()
        );
        same_id_works(c, ns, &id);
        c.assert_no_leaks(Duration::from_secs(10));
    }
}

#[test]
fn shim_sigkilled_during_delete_leaks_nothing() {
    let (c, ns) = setup("", &[("IDSHIFT_TEST_PAUSE", "delete")], &[(IMG, 1)]);
    std::fs::create_dir_all(c.run_dir()).expect("run dir");
    let id = "del";
    let marker = only_pause_at(&c, "delete", id);
    run_detached(&c, &ns, IMG, id, "sleep 100000");
    let init = wait_status(&c, &ns, id, "RUNNING", Duration::from_secs(30));
    assert!(c.ctr(&ns, &["task", "kill", "-s", "SIGKILL", id]).success());
    wait_status(&c, &ns, id, "STOPPED", Duration::from_secs(20));
    let shim = shim_pid(&c, id);
    let rm = Bg::spawn(&c, &ns, &["task", "rm", id]);
    wait_for(
        "the shim to pause in Delete",
        &c,
        Duration::from_secs(30),
        || marker.exists(),
    );
    assert_eq!(c.live_ranges(), 1, "Delete paused before releasing");
    sigkill(shim);
    let _ = rm.finish(Duration::from_secs(60));
    assert!(!alive(init));
    remove(&c, &ns, id);
    c.assert_no_leaks(Duration::from_secs(20));
    same_id_works(&c, &ns, id);
    c.assert_no_leaks(Duration::from_secs(10));
}

/// The pids of the processes of task `id` (`ctr task ps`).
fn task_pids(c: &Containerd, ns: &str, id: &str) -> Vec<u32> {
    c.ctr(ns, &["task", "ps", id])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn init_killed_under_running_execs() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    run_detached(&c, &ns, IMG, "ik", "sleep 100000");
    let init = wait_status(&c, &ns, "ik", "RUNNING", Duration::from_secs(30));
    let events = Bg::spawn(&c, &ns, &["events"]);
    for e in ["e1", "e2"] {
        // e2 ignores SIGTERM: only SIGKILL ends it.
        let out = c.ctr(
            &ns,
            &[
                "task",
                "exec",
                "-d",
                "--exec-id",
                e,
                "ik",
                "/bin/sh",
                "-c",
                "trap '' TERM; sleep 100000",
            ],
        );
        assert!(out.success(), "exec {e}: {out:?}\n{}", c.log_tail(60));
    }
    wait_for("three processes", &c, Duration::from_secs(10), || {
        task_pids(&c, &ns, "ik").len() >= 3
    });
    let pids = task_pids(&c, &ns, "ik");
    std::thread::sleep(Duration::from_millis(300));
    let out = c.ctr(&ns, &["task", "kill", "-s", "SIGKILL", "ik"]);
    assert!(out.success(), "{out:?}");
    wait_status(&c, &ns, "ik", "STOPPED", Duration::from_secs(20));
    wait_for(
        "every process of the container to die",
        &c,
        Duration::from_secs(10),
        || pids.iter().all(|p| !alive(*p)),
    );
    assert!(!alive(init));
    // Every exit is reported: the execs' and then the init's.
    for id in ["e1", "e2", "ik"] {
        wait_exit_event(&c, &events, "ik", id, Duration::from_secs(10));
    }
    let got = events.stdout();
    drop(events);
    let exits: Vec<&str> = got.lines().filter(|l| l.contains("/tasks/exit")).collect();
    let pos = |id: &str| {
        exits
            .iter()
            .position(|l| l.contains(&format!("\"id\":\"{id}\"")))
    };
    assert!(
        pos("e1") < pos("ik") && pos("e2") < pos("ik"),
        "the init's exit is reported after its execs': {exits:#?}"
    );
    let out = c.ctr(&ns, &["task", "rm", "ik"]);
    assert_eq!(rm_exit_code(&out), Some(137), "{out:?}");
    assert!(c.ctr(&ns, &["c", "rm", "ik"]).success());
    c.assert_no_leaks(Duration::from_secs(10));
}

/// (fd count, zombie children) of process `pid`.
fn fds_and_zombie_children(pid: u32) -> (usize, Vec<u32>) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|x| x.parse().ok()) == Some(pid) {
            zombies.push(p);
        }
    }
    (fds, zombies)
}

#[test]
fn many_execs_leave_no_zombies_or_fds_in_the_shim() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    // An init that never reaps (sleep waits for nothing).
    let out = c.ctr(
        &ns,
        &[
            "run",
            "-d",
            IDSHIFT_RUNTIME,
            IMG,
            "z",
            "/bin/sleep",
            "100000",
        ],
    );
    assert!(out.success(), "{out:?}");
    wait_status(&c, &ns, "z", "RUNNING", Duration::from_secs(30));
    let shim = shim_pid(&c, "z");
    // One exec first: whatever the first exec sets up once is counted.
    assert!(c
        .ctr(&ns, &["task", "exec", "--exec-id", "w", "z", "true"])
        .success());
    let (fds_before, _) = fds_and_zombie_children(shim);
    for i in 0..50 {
        let id = format!("x{i}");
        // Some leave an orphan behind (reparented inside the container).
        let script = if i % 5 == 0 {
            "sleep 0.2 & echo $$"
        } else {
            "echo $$"
        };
        let out = c.ctr(
            &ns,
            &[
                "task",
                "exec",
                "--exec-id",
                &id,
                "z",
                "/bin/sh",
                "-c",
                script,
            ],
        );
        assert!(out.success(), "exec {id}: {out:?}\n{}", c.log_tail(40));
        assert!(!out.stdout.trim().is_empty(), "exec {id} printed nothing");
    }
    std::thread::sleep(Duration::from_millis(500));
    let (fds_after, zombies) = fds_and_zombie_children(shim);
    assert!(
        zombies.is_empty(),
        "zombie children of the shim: {zombies:?}"
    );
    assert!(
        fds_after <= fds_before + 2,
        "the shim had {fds_before} fds before 50 execs and {fds_after} after"
    );
    assert_eq!(task(&c, &ns, "z").map(|t| t.1), Some("RUNNING".into()));
    c.kill_and_remove(&ns, &["z"]).expect("remove z");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn out_of_id_ranges_fails_clearly_and_recovers() {
    // Room for two ranges of 65536.
    let (c, ns) = setup(
        "[pool]\nstart = 1879048192\nsize = 131072\nrange_size = 65536\n",
        &[],
        &[(IMG, 1)],
    );
    run_detached(&c, &ns, IMG, "p1", "sleep 100000");
    run_detached(&c, &ns, IMG, "p2", "sleep 100000");
    wait_status(&c, &ns, "p1", "RUNNING", Duration::from_secs(30));
    wait_status(&c, &ns, "p2", "RUNNING", Duration::from_secs(30));
    let out = c.ctr(&ns, &["run", "--rm", IDSHIFT_RUNTIME, IMG, "p3", "true"]);
    assert!(!out.success(), "a third range: {out:?}");
    assert!(
        out.stderr.contains("no free host ID range") && out.stderr.contains("pool"),
        "the error names the exhausted pool: {out:?}"
    );
    assert_eq!(c.live_ranges(), 2);
    // The others are unaffected.
    for id in ["p1", "p2"] {
        assert_eq!(task(&c, &ns, id).map(|t| t.1), Some("RUNNING".into()));
        let out = c.ctr(&ns, &["task", "exec", "--exec-id", "ok", id, "echo", "ok"]);
        assert_eq!(out.stdout.trim(), "ok", "{id}: {out:?}");
    }
    // The failed create left nothing (its container, if ctr kept it, aside).
    if c.ctr(&ns, &["c", "ls", "-q"])
        .stdout
        .lines()
        .any(|l| l.trim() == "p3")
    {
        assert!(c.ctr(&ns, &["c", "rm", "p3"]).success());
    }
    assert!(!container_run_dir(&c, &ns, "p3").exists());
    c.kill_and_remove(&ns, &["p1"]).expect("remove p1");
    same_id_works(&c, &ns, "p3");
    c.kill_and_remove(&ns, &["p2"]).expect("remove p2");
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A tmpfs mounted on `dir`, detached on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Fills the file system of `path`'s directory with `path` until ENOSPC.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
}

fn owners(c: &Containerd) -> Vec<String> {
    let p = c.state_dir().join("ranges.json");
    let text = std::fs::read_to_string(&p).expect("ranges.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("ranges.json parses");
    let mut o: Vec<String> = v["owners"]
        .as_object()
        .expect("owners")
        .keys()
        .cloned()
        .collect();
    o.sort();
    o
}

#[test]
fn full_state_dir_fails_clearly_and_recovers() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    let disk = Tmpfs::mount(&c.state_dir(), "64k");
    run_detached(&c, &ns, IMG, "f1", "sleep 100000");
    wait_status(&c, &ns, "f1", "RUNNING", Duration::from_secs(30));
    let live = owners(&c);
    assert_eq!(live.len(), 1);
    let filler = c.state_dir().join("filler");
    fill(&filler);
    let out = c.ctr(&ns, &["run", "--rm", IDSHIFT_RUNTIME, IMG, "f2", "true"]);
    assert!(!out.success(), "create on a full state dir: {out:?}");
    let dir = c.state_dir().display().to_string();
    assert!(
        out.stderr.contains(&dir) && out.stderr.contains("No space left on device"),
        "the error names the state dir and ENOSPC: {out:?}"
    );
    // ranges.json is intact and still the live set; no temporary file.
    assert_eq!(owners(&c), live);
    assert!(!c.state_dir().join("ranges.json.tmp").exists());
    assert_eq!(task(&c, &ns, "f1").map(|t| t.1), Some("RUNNING".into()));
    if c.ctr(&ns, &["c", "ls", "-q"])
        .stdout
        .lines()
        .any(|l| l.trim() == "f2")
    {
        assert!(c.ctr(&ns, &["c", "rm", "f2"]).success());
    }
    // A delete on the full disk still releases the range (the allocator
    // writes a shorter state over the old one in place).
    c.kill_and_remove(&ns, &["f1"]).expect("remove f1");
    assert_eq!(owners(&c), Vec::<String>::new(), "f1's range released");
    std::fs::remove_file(&filler).expect("free space");
    same_id_works(&c, &ns, "f2");
    assert_eq!(owners(&c), Vec::<String>::new(), "every range released");
    drop(disk);
    c.assert_no_leaks(Duration::from_secs(10));
}

/// A container made with runtime options naming a config (`ConfigPath`,
/// ctr's `--runtime-config-path`) whose run_dir and state_dir are not the
/// default config's: after its shim is SIGKILLed, `shim delete` (which
/// containerd gives no options) cleans up by that config, found in the
/// bundle: its run dir is removed and its ID range released.
#[test]
fn shim_delete_after_a_crash_uses_the_containers_config_path() {
    let (c, ns) = setup("", &[], &[(IMG, 1)]);
    let other = c.base().join("other-config");
    let (run_dir, state_dir) = (other.join("run"), other.join("state"));
    std::fs::create_dir_all(&other).expect("mkdir");
    let cfg = other.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\nrun_dir = {:?}\n",
            state_dir.display().to_string(),
            run_dir.display().to_string()
        ),
    )
    .expect("write config");
    let cfg_arg = cfg.display().to_string();
    let out = c.ctr(
        &ns,
        &[
            "run",
            "-d",
            IDSHIFT_RUNTIME,
            "--runtime-config-path",
            &cfg_arg,
            IMG,
            "cfg",
            "sleep",
            "100000",
        ],
    );
    assert!(out.success(), "{out:?}\n{}", c.log_tail(40));
    let init = wait_status(&c, &ns, "cfg", "RUNNING", Duration::from_secs(30));
    let container_run_dir = run_dir.join(&ns).join("cfg");
    assert!(
        container_run_dir.is_dir(),
        "{}",
        container_run_dir.display()
    );
    let owners = || {
        std::fs::read_to_string(state_dir.join("ranges.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("owners").and_then(|o| o.as_object()).map(|o| o.len()))
            .unwrap_or(0)
    };
    assert_eq!(owners(), 1, "the range is in the other config's state_dir");
    assert_eq!(c.live_ranges(), 0, "nothing in the default state_dir");
    let shim = shim_pid(&c, "cfg");
    let socket = shim_socket(&c, &ns, "cfg");
    sigkill(shim);
    wait_for(
        "shim delete to release the range in the other state_dir",
        &c,
        Duration::from_secs(20),
        || owners() == 0,
    );
    wait_for(
        "the run dir to be removed",
        &c,
        Duration::from_secs(20),
        || !container_run_dir.exists(),
    );
    wait_for("the init to be killed", &c, Duration::from_secs(20), || {
        !alive(init)
    });
    remove(&c, &ns, "cfg");
    assert!(!socket.exists(), "{}", socket.display());
    c.assert_no_leaks(Duration::from_secs(20));
}

/// A container whose spec has a poststop hook, its shim SIGKILLed:
/// containerd's cleanup (`shim delete`) runs the hook with the state
/// (status "stopped", no pid), as `runc delete` runs it after containerd's
/// runc shim is SIGKILLed: the same state keys and status under both.
#[test]
fn poststop_hooks_run_by_shim_delete_after_a_shim_crash() {
    let (c, ns) = setup("", &[], &[]);
    let rootfs = idshift_tests::busybox_rootfs(c.base(), &["sh", "sleep"]).expect("rootfs");
    let mut seen = Vec::new();
    for (runtime, id) in [
        (IDSHIFT_RUNTIME, "pstop"),
        (idshift_tests::RUNC_RUNTIME, "pstop-runc"),
    ] {
        let marker = c.base().join(format!("{id}.poststop"));
        let mut spec = c.oci_spec(&ns, &rootfs, "sleep 100000");
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
        spec["annotations"] = serde_json::json!({"test.poststop": id});
        spec["hooks"] = serde_json::json!({"poststop": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}.tmp && mv {0}.tmp {0}", marker.display())],
            "timeout": 20,
        }]});
        let path = c.base().join(format!("{id}.json"));
        std::fs::write(&path, spec.to_string()).expect("write spec");
        let p = path.display().to_string();
        let out = c.ctr(&ns, &["run", "-d", "--config", &p, runtime, id]);
        assert!(out.success(), "{runtime}: {out:?}\n{}", c.log_tail(40));
        let init = wait_status(&c, &ns, id, "RUNNING", Duration::from_secs(30));
        let shim = if runtime == IDSHIFT_RUNTIME {
            shim_pid(&c, id)
        } else {
            // containerd's runc shim: `containerd-shim-runc-v2 -namespace
            // <ns> -id <id> -address <our containerd>`.
            let flag = format!(" -id {id} ");
            let me = c.address().display().to_string();
            let found: Vec<u32> = processes_matching("containerd-shim-runc-v2")
                .into_iter()
                .filter(|(_, cmd)| cmd.contains(&flag) && cmd.contains(&me))
                .map(|(pid, _)| pid)
                .collect();
            assert_eq!(found.len(), 1, "the runc shim of {id}: {found:?}");
            found[0]
        };
        assert!(!marker.exists(), "{runtime}: poststop ran too early");
        let sockets = c.shim_sockets();
        assert!(!sockets.is_empty(), "{runtime}: no shim socket");
        sigkill(shim);
        wait_for(
            "containerd's cleanup to run the poststop hook",
            &c,
            Duration::from_secs(30),
            || marker.exists(),
        );
        wait_for("the init to be killed", &c, Duration::from_secs(20), || {
            !alive(init)
        });
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&marker).expect("marker"))
                .unwrap_or_else(|e| panic!("{runtime}: the hook's state: {e}"));
        assert_eq!(state["id"], id, "{state}");
        assert_eq!(state["annotations"]["test.poststop"], id, "{state}");
        let mut keys: Vec<String> = state
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        seen.push((keys, state["status"].clone(), state.get("pid").cloned()));
        remove(&c, &ns, id);
        if runtime == IDSHIFT_RUNTIME {
            // idshift's `shim delete` removes the dead shim's socket.
            wait_for(
                "idshift's shim delete to remove the dead socket",
                &c,
                Duration::from_secs(10),
                || sockets.iter().all(|s| !s.exists()),
            );
        } else {
            // The runc shim's does not: remove it, as its next start would.
            let failed = c.remove_dead_sockets(&sockets);
            assert!(failed.is_empty(), "removing runc's dead socket: {failed:?}");
        }
    }
    eprintln!("poststop states (idshift, runc): {seen:?}");
    assert_eq!(seen[0].1, "stopped");
    assert_eq!(seen[0], seen[1], "idshift (left) and runc (right) differ");
    c.assert_no_leaks(Duration::from_secs(20));
}

/// A pid namespace for a test's containerd and shims, with a mount
/// namespace whose `/proc` is its own: its init (pid 1) a perl loop that
/// reaps the orphans it adopts; killed, with everything in it, on drop.
struct PidNamespace {
    unshare: Child,
    init: u32,
}

impl PidNamespace {
    fn new() -> PidNamespace {
        let unshare = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"])
            .args(["perl", "-e", "while (1) { sleep 1 if wait() == -1 }"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --pid");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut ns = PidNamespace { unshare, init: 0 };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns.init == 0
            || !std::fs::read_to_string(format!("/proc/{}/cmdline", ns.init))
                .is_ok_and(|c| c.starts_with("perl"))
        {
            assert!(Instant::now() < deadline, "unshare made no init");
            std::thread::sleep(Duration::from_millis(10));
            ns.init = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
                .unwrap_or(0);
        }
        ns
    }

    /// The next process made in it gets `pid` (unless that is taken).
    fn next_pid(&self, pid: u32) {
        let write = format!("echo {} > /proc/sys/kernel/ns_last_pid", pid - 1);
        let ok = std::process::Command::new("nsenter")
            .args([
                "-t",
                &self.init.to_string(),
                "--pid",
                "--mount",
                "sh",
                "-c",
                &write,
            ])
            .status()
            .expect("nsenter");
        assert!(ok.success(), "setting ns_last_pid: {ok}");
    }
}

impl Drop for PidNamespace {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The pid of host process `pid` in its own (innermost) pid namespace.
fn inner_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// An exec of container `id` leaves `n` `sleep <tag>` processes whose parent
/// exits: the shim (their subreaper) adopts them. They are killed, and the
/// shim reaps exits of pids no process of its own has; returns those pids
/// (in the shim's pid namespace).
fn orphan_exits(c: &Containerd, ns: &str, id: &str, n: usize, tag: &str) -> Vec<u32> {
    // Their output is not the exec's: it ends when its sh does.
    let script = format!("for i in $(seq {n}); do sleep {tag} >/dev/null 2>&1 & done");
    let out = c.ctr(
        ns,
        &["task", "exec", "--exec-id", tag, id, "sh", "-c", &script],
    );
    assert!(out.success(), "{out:?}\n{}", c.log_tail(40));
    let needle = format!("sleep {tag}");
    let orphans = processes_matching(&needle);
    assert_eq!(orphans.len(), n, "{orphans:?}");
    let pids: Vec<u32> = orphans.iter().filter_map(|(p, _)| inner_pid(*p)).collect();
    assert_eq!(pids.len(), n);
    for (p, _) in &orphans {
        sigkill(*p);
    }
    wait_for(
        "the shim to reap the orphans",
        c,
        Duration::from_secs(20),
        || {
            orphans
                .iter()
                .all(|(p, _)| !Path::new(&format!("/proc/{p}")).exists())
        },
    );
    pids
}

/// An exit of a pid the shim does not know (an orphan it adopted) is not
/// held for a later process that gets the same pid: the shims run in a
/// private pid namespace whose `ns_last_pid` hands the reaped pids out
/// again, to an exec and then to a new container's init in the same (group)
/// shim; the exec runs to its end with its own exit status, the init keeps
/// running (not reported exited, its cgroup not killed).
#[test]
fn a_reused_pid_is_not_taken_for_an_old_exit() {
    let pidns = PidNamespace::new();
    let mut opts = ContainerdOptions::idshift("");
    opts.namespaces_of = Some(pidns.init);
    let c = Containerd::start(opts).expect("start containerd");
    let ns = c.namespace();
    let rootfs =
        idshift_tests::busybox_rootfs(c.base(), &["sh", "sleep", "seq", "echo"]).expect("rootfs");
    let run = |id: &str, script: &str| {
        let mut spec = c.oci_spec(&ns, &rootfs, script);
        // No pid namespace of its own: its processes are the shim's.
        spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "pid");
        // Nor a proc of its own: the pid namespace is not its user
        // namespace's (the container needs none here).
        spec["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["type"] != "proc");
        for paths in ["maskedPaths", "readonlyPaths"] {
            spec["linux"][paths] = serde_json::json!([]);
        }
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
        let path = c.base().join(format!("{id}.json"));
        std::fs::write(&path, spec.to_string()).expect("write spec");
        let p = path.display().to_string();
        let out = c.ctr(
            &ns,
            &[
                "run",
                "-d",
                "--label",
                "io.containerd.runc.v2.group=reuse",
                "--config",
                &p,
                IDSHIFT_RUNTIME,
                id,
            ],
        );
        assert!(out.success(), "{out:?}\n{}", c.log_tail(40));
        wait_status(&c, &ns, id, "RUNNING", Duration::from_secs(30))
    };
    run("first", "sleep 100000");
    // An exec that gets the pid of a reaped orphan.
    let old = orphan_exits(&c, &ns, "first", 40, "100001");
    pidns.next_pid(old.iter().copied().min().expect("pids"));
    let out = c.ctr(
        &ns,
        &[
            "task",
            "exec",
            "--exec-id",
            "late",
            "first",
            "sh",
            "-c",
            "echo $$; sleep 2; echo survived; exit 7",
        ],
    );
    let pid: u32 = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(
        old.contains(&pid),
        "the exec's pid {pid} is not one of {old:?}: {out:?}"
    );
    assert_eq!(
        (out.code, out.stdout.lines().nth(1)),
        (Some(7), Some("survived")),
        "the exec with a reused pid {pid}: {out:?}\n{}",
        c.log_tail(40)
    );
    // A container's init that gets the pid of a reaped orphan.
    let old = orphan_exits(&c, &ns, "first", 40, "100002");
    pidns.next_pid(old.iter().copied().min().expect("pids"));
    let init = run("second", "sleep 100003");
    assert!(
        old.contains(&init),
        "the init's pid {init} is not one of {old:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        task(&c, &ns, "second"),
        Some((init, "RUNNING".to_string())),
        "the init with a reused pid\n{}",
        c.log_tail(40)
    );
    assert_eq!(
        processes_matching("sleep 100003").len(),
        1,
        "its cgroup was killed"
    );
    for id in ["second", "first"] {
        remove(&c, &ns, id);
    }
    c.assert_no_leaks(Duration::from_secs(20));
    drop(c);
    drop(pidns);
}
