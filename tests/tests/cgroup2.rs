//! cgroup v2 with real controllers, under systemd as PID 1: the checks of
//! `make test-vm`'s systemd VM (tests/vm/run.sh boots it with
//! tests/vm/boot-systemd.sh and runs this file's one test there with
//! `--ignored`). The test is ignored elsewhere, since it needs that machine:
//! it fails at once, saying so, on a host without a cgroup2 root offering
//! memory, pids and cpu or without systemd as PID 1.
//!
//! Driven through `ctr` on one private containerd (the system's 1.6, started
//! once: under TCG a start and an image import take most of a minute), like
//! the ctr suite; each check reads the kernel's view (the container's cgroup
//! files, `/proc/<pid>/cgroup`, systemd's units), not only ctr's exit codes.
//! Each check runs on its own (a panic fails that check, the others still
//! run), must leave nothing behind (checked after each; whatever a failed
//! check left is removed), and prints `check NAME: pass|FAIL (N s)`, the
//! lines tests/vm/run.sh makes its table of.
//!
//! To add a check: a `fn(&Containerd)` and its name in [`CHECKS`].
//! `IDSHIFT_CGROUP2_CHECKS=name,name` runs only those.

use idshift_tests::{busybox_rootfs, unique, Containerd, CtrOutput};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const VM: &str = "needs cgroup v2 with controllers under systemd: run by make test-vm";
const RT: &str = "--runtime=io.containerd.idshift.v2";
const IMG: &str = "docker.io/library/idshift-busybox:1";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Panics unless this machine is the one these checks are for: the cgroup2
/// hierarchy at /sys/fs/cgroup (no v1) offering memory, pids and cpu, and
/// systemd as PID 1.
fn require_cgroup2_under_systemd() {
    let controllers = std::fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
        .unwrap_or_else(|e| panic!("{CGROUP_ROOT} is not a cgroup2 root ({e}): {VM}"));
    for c in ["memory", "pids", "cpu"] {
        assert!(
            controllers.split_whitespace().any(|x| x == c),
            "the cgroup2 root offers no {c} controller ({controllers:?}): {VM}"
        );
    }
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(init.trim(), "systemd", "PID 1 is not systemd: {VM}");
}

/// A check: what it is called and what it does.
type Check = (&'static str, fn(&Containerd));

/// Every check, by name.
const CHECKS: &[Check] = &[
    ("memory_limit_and_oom_event", memory_limit_and_oom_event),
    ("pids_limit", pids_limit),
    ("cpu_weight_and_quota", cpu_weight_and_quota),
    (
        "pause_resume_freezes_and_thaws",
        pause_resume_freezes_and_thaws,
    ),
    (
        "metrics_are_v2_and_match_the_cgroup",
        metrics_are_v2_and_match_the_cgroup,
    ),
    (
        "update_changes_the_cgroup_files",
        update_changes_the_cgroup_files,
    ),
    (
        "device_allow_list_is_enforced",
        device_allow_list_is_enforced,
    ),
    ("systemd_driver_makes_a_scope", systemd_driver_makes_a_scope),
];

/// Runs [`CHECKS`] (or those named in `IDSHIFT_CGROUP2_CHECKS`) on one
/// private containerd with the busybox image; fails naming the checks that
/// failed.
#[test]
#[ignore = "needs cgroup v2 with controllers under systemd: run by make test-vm"]
fn cgroup_v2_under_systemd() {
    require_cgroup2_under_systemd();
    let only: Option<Vec<String>> = std::env::var("IDSHIFT_CGROUP2_CHECKS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let checks: Vec<&Check> = CHECKS
        .iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name)))
        .collect();
    if let Some(o) = &only {
        for n in o {
            assert!(
                CHECKS.iter().any(|(name, _)| name == n),
                "IDSHIFT_CGROUP2_CHECKS names {n:?}, which is no check"
            );
        }
    }
    let names: Vec<&str> = checks.iter().map(|(n, _)| *n).collect();
    // On a line of its own (libtest has just printed "test NAME ... ").
    eprintln!("\nchecks: {}", names.join(" "));
    let t0 = Instant::now();
    let c = Containerd::start("").expect("start containerd");
    c.import_image(&c.namespace(), IMG, 1)
        .expect("import image");
    eprintln!(
        "containerd {} started and the image imported in {:.0} s",
        c.flavour().name(),
        t0.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for (name, check) in checks {
        eprintln!("--- {name}");
        let t = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&c);
            c.assert_no_leaks(Duration::from_secs(10));
        }));
        if run.is_err() {
            failed.push(*name);
            remove_everything(&c);
        }
        eprintln!(
            "check {name}: {} ({:.0} s)",
            if run.is_ok() { "pass" } else { "FAIL" },
            t.elapsed().as_secs_f64()
        );
    }
    assert!(failed.is_empty(), "checks failed: {failed:?}");
}

/// After a failed check: every task and container of the namespace killed
/// and removed.
fn remove_everything(c: &Containerd) {
    let ns = c.namespace();
    let ids = c.ctr(&ns, &["containers", "ls", "-q"]).stdout;
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    for id in &ids {
        let _ = c.ctr(&ns, &["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while c
            .ctr(&ns, &["task", "ls", "-q"])
            .stdout
            .lines()
            .any(|l| l == *id)
            && !c.ctr(&ns, &["task", "delete", id]).success()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = c.ctr(&ns, &["containers", "rm", id]);
    }
}

/// `ctr run -d <flags> IMG id sleep 1000`, then the task's pid once it runs.
fn run_sleeper(c: &Containerd, id: &str, flags: &[&str]) -> u32 {
    let mut args = vec!["run", "-d", RT];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[IMG, id, "sleep", "1000"]);
    c.ctr(&c.namespace(), &args).ok();
    task_pid(c, id)
}

/// The pid of task `id` once `ctr task ls` shows it RUNNING (30 s at most).
fn task_pid(c: &Containerd, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = c.ctr(&c.namespace(), &["task", "ls"]).stdout;
        let row = ls
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == id && f[2] == "RUNNING");
        if let Some(f) = row {
            return f[1].parse().expect("task ls pid");
        }
        assert!(
            Instant::now() < deadline,
            "{id} never ran: {ls}\n{}",
            c.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status column of task `id` in `ctr task ls`.
fn task_status(c: &Containerd, id: &str) -> String {
    let ls = c.ctr(&c.namespace(), &["task", "ls"]).stdout;
    ls.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == id)
        .map(|f| f[2].to_string())
        .unwrap_or_default()
}

/// The cgroup2 path of process `pid` (its `0::` line).
fn cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup2 line in /proc/{pid}/cgroup: {text}"))
        .to_string()
}

/// The directory of cgroup `path` (`/a/b`) in the hierarchy.
fn cgroup_dir(path: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(path.trim_start_matches('/'))
}

/// The container's cgroup directory: where its init is, checked to be
/// ctr's default `/<namespace>/<id>`.
fn container_cgroup(c: &Containerd, id: &str, pid: u32) -> PathBuf {
    let path = cgroup_of(pid);
    assert_eq!(
        path,
        format!("/{}/{id}", c.namespace()),
        "cgroup of {id}'s init"
    );
    cgroup_dir(&path)
}

/// A cgroup file's content, trimmed.
fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// `key value` lines (memory.events, cpu.stat, ...) as a map.
fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// `ctr task exec` of `script` in `id` (a fresh exec id).
fn exec(c: &Containerd, id: &str, script: &str) -> CtrOutput {
    let exec_id = unique("x");
    c.ctr(
        &c.namespace(),
        &[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            "/bin/sh",
            "-c",
            script,
        ],
    )
}

/// `ctr events` of this containerd, read line by line on a thread.
struct Events {
    child: Child,
    lines: Receiver<String>,
}

impl Events {
    fn start(c: &Containerd) -> Events {
        let mut cmd = c.ctr_command(&c.namespace(), &["events"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("ctr events");
        let stdout = child.stdout.take().expect("events stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // ctr subscribes after it starts: give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, lines }
    }

    /// Waits (`within` at most) for an event whose line contains every one
    /// of `needles`; returns it, or what was seen.
    fn wait_for(&self, needles: &[&str], within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut seen = String::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if needles.iter().all(|n| line.contains(n)) {
                    return Ok(line);
                }
                seen.push_str(&line);
                seen.push('\n');
            }
        }
        Err(seen)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ctr run --memory-limit`: memory.max is the limit; a process that
/// exceeds it is OOM-killed (memory.events' oom_kill counts it) and
/// containerd gets a TaskOOM event for the container.
fn memory_limit_and_oom_event(c: &Containerd) {
    let events = Events::start(c);
    let limit = 32u64 << 20;
    let pid = run_sleeper(c, "m1", &["--memory-limit", &limit.to_string()]);
    let dir = container_cgroup(c, "m1", pid);
    assert_eq!(read(&dir, "memory.max"), limit.to_string());
    assert_eq!(
        keyed(&read(&dir, "memory.events")).get("oom_kill"),
        Some(&0)
    );
    // 100 MB in a shell variable: more than the limit. The hog asks to be
    // the OOM killer's first choice (the init may be its second: not
    // checked).
    let out = exec(
        c,
        "m1",
        "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert!(
        !out.stdout.contains("survived"),
        "the hog survived: {out:?}"
    );
    let oom_kills = keyed(&read(&dir, "memory.events"))
        .get("oom_kill")
        .copied()
        .unwrap_or(0);
    assert!(
        oom_kills >= 1,
        "memory.events: {}",
        read(&dir, "memory.events")
    );
    let ev = events.wait_for(&["/tasks/oom", "\"m1\""], Duration::from_secs(15));
    assert!(
        ev.is_ok(),
        "no TaskOOM event for m1; events seen:\n{}",
        ev.unwrap_err()
    );
    eprintln!(
        "memory.max {limit}, oom_kill {oom_kills}, TaskOOM: {}",
        ev.unwrap_or_default()
    );
    c.kill_and_remove(&c.namespace(), &["m1"]).expect("remove");
    assert!(!dir.exists(), "{} left", dir.display());
}

/// `linux.resources.pids.limit` (ctr has no flag: a whole spec): pids.max
/// is the limit, and forks beyond it fail (pids.events' max counts them).
fn pids_limit(c: &Containerd) {
    let ns = c.namespace();
    let rootfs = busybox_rootfs(c.base(), &["sh", "seq", "sleep"]).expect("busybox rootfs");
    let id = unique("pids");
    let mut spec = c.oci_spec(&ns, &rootfs, "sleep 1000");
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
    spec["linux"]["resources"]["pids"] = serde_json::json!({"limit": 10});
    let path = c.base().join(format!("{id}.json"));
    std::fs::write(&path, spec.to_string()).expect("write spec");
    let p = path.display().to_string();
    c.ctr(&ns, &["run", "-d", "--config", &p, RT, &id]).ok();
    let pid = task_pid(c, &id);
    let dir = container_cgroup(c, &id, pid);
    assert_eq!(read(&dir, "pids.max"), "10");
    let out = exec(
        c,
        &id,
        "for i in $(seq 1 40); do sleep 3 & done; wait; exit 0",
    );
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "40 sleeps under a limit of 10: {out:?}"
    );
    let events = read(&dir, "pids.events");
    let refused = keyed(&events).get("max").copied().unwrap_or(0);
    assert!(refused >= 1, "pids.events: {events}");
    eprintln!("pids.max 10, forks refused (pids.events max): {refused}");
    c.kill_and_remove(&ns, &[&id]).expect("remove");
}

/// runc's conversion of cpu shares (2..262144) to cgroup v2's cpu.weight.
fn weight_of_shares(shares: u64) -> u64 {
    1 + ((shares - 2) * 9999) / 262_142
}

/// `--cpu-shares` is cpu.weight (runc's conversion), `--cpus` and
/// `--cpu-quota`/`--cpu-period` are cpu.max.
fn cpu_weight_and_quota(c: &Containerd) {
    let pid = run_sleeper(c, "w1", &["--cpu-shares", "512", "--cpus", "0.5"]);
    let dir = container_cgroup(c, "w1", pid);
    assert_eq!(read(&dir, "cpu.weight"), weight_of_shares(512).to_string());
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    let pid = run_sleeper(c, "q1", &["--cpu-quota", "25000", "--cpu-period", "50000"]);
    let dir2 = container_cgroup(c, "q1", pid);
    assert_eq!(read(&dir2, "cpu.max"), "25000 50000");
    assert_eq!(
        read(&dir2, "cpu.weight"),
        weight_of_shares(1024).to_string()
    );
    // The quota is enforced: a busy loop for 2 s is throttled.
    let out = exec(
        c,
        "q1",
        "end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done",
    );
    out.ok();
    let stat = keyed(&read(&dir2, "cpu.stat"));
    let throttled = stat.get("nr_throttled").copied().unwrap_or(0);
    assert!(throttled >= 1, "cpu.stat: {stat:?}");
    eprintln!(
        "cpu.weight {} (shares 512), cpu.max \"50000 100000\" (--cpus 0.5), \"25000 50000\"; \
         busy loop throttled {throttled} times",
        weight_of_shares(512)
    );
    c.kill_and_remove(&c.namespace(), &["w1", "q1"])
        .expect("remove");
}

/// Pause freezes the cgroup (cgroup.freeze 1, cgroup.events frozen 1, the
/// process stopped in the freezer), resume thaws it.
fn pause_resume_freezes_and_thaws(c: &Containerd) {
    let ns = c.namespace();
    let pid = run_sleeper(c, "p1", &[]);
    let dir = container_cgroup(c, "p1", pid);
    assert_eq!(read(&dir, "cgroup.freeze"), "0");
    c.ctr(&ns, &["task", "pause", "p1"]).ok();
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    assert_eq!(keyed(&read(&dir, "cgroup.events")).get("frozen"), Some(&1));
    assert_eq!(task_status(c, "p1"), "PAUSED");
    c.ctr(&ns, &["task", "resume", "p1"]).ok();
    assert_eq!(read(&dir, "cgroup.freeze"), "0");
    assert_eq!(keyed(&read(&dir, "cgroup.events")).get("frozen"), Some(&0));
    assert_eq!(task_status(c, "p1"), "RUNNING");
    exec(c, "p1", "echo thawed").ok();
    c.kill_and_remove(&ns, &["p1"]).expect("remove");
}

/// `ctr task metrics` prints cgroup v2's metrics, equal to the cgroup's
/// files.
fn metrics_are_v2_and_match_the_cgroup(c: &Containerd) {
    let ns = c.namespace();
    let limit = 48u64 << 20;
    let pid = run_sleeper(c, "s1", &["--memory-limit", &limit.to_string()]);
    let dir = container_cgroup(c, "s1", pid);
    let m = c.ctr(&ns, &["task", "metrics", "s1"]);
    m.ok();
    let table: BTreeMap<&str, &str> = m
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .collect();
    // v2's names (v1's would be memory.usage_in_bytes, memory.limit_in_bytes).
    assert_eq!(
        table.get("memory.usage_limit").copied(),
        Some(limit.to_string().as_str()),
        "{}",
        m.stdout
    );
    assert_eq!(
        table.get("pids.current").copied(),
        Some(read(&dir, "pids.current").as_str()),
        "{}",
        m.stdout
    );
    let usage: u64 = table
        .get("cpu.usage_usec")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cpu.usage_usec: {}", m.stdout));
    let usage_after = keyed(&read(&dir, "cpu.stat"))
        .get("usage_usec")
        .copied()
        .unwrap_or(0);
    assert!(
        usage > 0 && usage <= usage_after,
        "cpu.usage_usec {usage}, cpu.stat's usage_usec after {usage_after}"
    );
    let mem: u64 = table
        .get("memory.usage")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory.usage: {}", m.stdout));
    assert!(mem > 0 && mem <= limit, "memory.usage {mem}");
    eprintln!("ctr task metrics:\n{}", m.stdout);
    c.kill_and_remove(&ns, &["s1"]).expect("remove");
}

/// containerd's Update request (ctr has no `task update`: sent to the
/// task's shim over ttrpc as containerd sends it) changes memory.max,
/// pids.max, cpu.weight and cpu.max live.
fn update_changes_the_cgroup_files(c: &Containerd) {
    let ns = c.namespace();
    let pid = run_sleeper(c, "u1", &["--memory-limit", &(64u64 << 20).to_string()]);
    let dir = container_cgroup(c, "u1", pid);
    assert_eq!(read(&dir, "memory.max"), (64u64 << 20).to_string());
    let address = std::fs::read_to_string(
        c.containerd_state()
            .join("io.containerd.runtime.v2.task")
            .join(&ns)
            .join("u1")
            .join("address"),
    )
    .expect("the task's shim address");
    let client = containerd_shim_protos::ttrpc::Client::connect(address.trim()).expect("connect");
    let task = containerd_shim_protos::shim::shim_ttrpc::TaskClient::new(client);
    let mut req = containerd_shim_protos::api::UpdateTaskRequest::new();
    req.id = "u1".into();
    let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = serde_json::json!({
        "memory": {"limit": 96u64 << 20},
        "cpu": {"shares": 2048, "quota": 30000, "period": 100000},
        "pids": {"limit": 42}
    })
    .to_string()
    .into_bytes();
    req.resources = containerd_shim_protos::protobuf::MessageField::some(any);
    task.update(
        containerd_shim_protos::ttrpc::context::with_timeout(10_000_000_000),
        &req,
    )
    .expect("Update");
    assert_eq!(read(&dir, "memory.max"), (96u64 << 20).to_string());
    assert_eq!(read(&dir, "pids.max"), "42");
    assert_eq!(read(&dir, "cpu.weight"), weight_of_shares(2048).to_string());
    assert_eq!(read(&dir, "cpu.max"), "30000 100000");
    // The live container still runs, inside its cgroup.
    assert_eq!(cgroup_of(pid), format!("/{ns}/u1"));
    c.kill_and_remove(&ns, &["u1"]).expect("remove");
}

/// The device allow-list is enforced on cgroup v2: in a container whose
/// root is the host's root (`io.idshift.userns=host`, so nothing but the
/// cgroup stops it), a node of the VM's own disk cannot be made or opened
/// (EPERM), while /dev/null works.
fn device_allow_list_is_enforced(c: &Containerd) {
    use std::os::unix::fs::MetadataExt;
    // The disk holding / (the VM's virtio disk): a real, readable device.
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let script = format!(
        "mknod /disk b {major} {minor}; echo mknod=$?; \
         head -c1 /disk >/dev/null && echo disk-read; \
         head -c1 /dev/null && echo null-ok; echo x > /dev/null && echo null-written"
    );
    let out = c.ctr(
        &c.namespace(),
        &[
            "run",
            "--rm",
            RT,
            "--annotation",
            "io.idshift.userns=host",
            IMG,
            "d1",
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    eprintln!("block device {major}:{minor}: {out:?}");
    assert!(
        out.stdout.contains("null-ok") && out.stdout.contains("null-written"),
        "/dev/null must work: {out:?}"
    );
    assert!(
        !out.stdout.contains("disk-read"),
        "the container read block device {major}:{minor}, which its device rules deny: {out:?}"
    );
    assert!(
        out.stderr.contains("Operation not permitted"),
        "mknod or open of {major}:{minor} must fail with EPERM: {out:?}"
    );
}

/// `systemctl show UNIT -p ...` as a map.
fn systemctl_show(unit: &str, props: &[&str]) -> BTreeMap<String, String> {
    let out = std::process::Command::new("systemctl")
        .arg("show")
        .arg(unit)
        .arg(format!("--property={}", props.join(",")))
        .output()
        .expect("systemctl show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The systemd cgroup driver: `ctr run --cgroup system.slice:idshift:NAME`
/// makes the container's cgroup a transient scope `idshift-NAME.scope` in
/// system.slice, created through systemd (active, its ControlGroup the
/// init's cgroup, the memory limit in it), and gone after delete.
fn systemd_driver_makes_a_scope(c: &Containerd) {
    let ns = c.namespace();
    let id = unique("sd");
    let unit = format!("idshift-{id}.scope");
    let limit = 40u64 << 20;
    let cgroups_path = format!("system.slice:idshift:{id}");
    let pid = run_sleeper(
        c,
        &id,
        &[
            "--cgroup",
            &cgroups_path,
            "--memory-limit",
            &limit.to_string(),
        ],
    );
    let want = format!("/system.slice/{unit}");
    assert_eq!(cgroup_of(pid), want, "the init's cgroup");
    let show = systemctl_show(
        &unit,
        &["ActiveState", "ControlGroup", "MemoryMax", "Slice"],
    );
    assert_eq!(
        show.get("ActiveState").map(String::as_str),
        Some("active"),
        "{show:?}"
    );
    assert_eq!(show.get("ControlGroup"), Some(&want), "{show:?}");
    assert_eq!(
        show.get("Slice").map(String::as_str),
        Some("system.slice"),
        "{show:?}"
    );
    let dir = cgroup_dir(&want);
    assert_eq!(read(&dir, "memory.max"), limit.to_string());
    eprintln!("{unit}: {show:?}");
    c.kill_and_remove(&ns, &[&id]).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let show = systemctl_show(&unit, &["ActiveState", "LoadState"]);
        let gone = show.get("ActiveState").map(String::as_str) != Some("active") && !dir.exists();
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unit} still there after delete: {show:?}, {} exists: {}",
            dir.display(),
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
