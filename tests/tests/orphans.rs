//! No orphan shim (root needed; a private containerd 1.6): containerd
//! SIGKILLed while containers are being created, at several points, then
//! started again and every container it lists removed. Within a bounded
//! time no idshift shim of those containers is left, and neither is an ID
//! range, a cgroup, a mount, a run-dir entry or a shim socket; containers
//! that containerd still knows keep running through every restart. The
//! same rounds launch containers under containerd's runc shim beside
//! idshift's, whose leftovers are reported for comparison (not asserted:
//! runc's shim leaks here).

use idshift_tests::{
    host_mountinfo, processes_matching, run_with_timeout, unique, Containerd, ContainerdOptions,
    CtrOutput, IDSHIFT_RUNTIME, RUNC_RUNTIME,
};
use rustix::process::Signal;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const IMG: &str = "docker.io/library/idshift-orphans:20";
const LAYERS: usize = 20;
/// Containers launched per round under each runtime.
const IDSHIFT_PER_ROUND: usize = 8;
const RUNC_PER_ROUND: usize = 4;
/// The shims' orphan settings: short, so that the test is not slow (the
/// default grace is 60 s).
const ORPHAN_TOML: &str = "[orphan]\ngrace_seconds = 10\ncheck_seconds = 1\n";
/// How long idshift's leftovers may take to go (grace + checks, on a busy
/// machine): a bound, not a speed.
const CLEAN_WITHIN: Duration = Duration::from_secs(90);

/// When containerd is SIGKILLed in a round.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as one of the round's idshift shims serves (started, no
    /// Create yet, or Create under way).
    FirstShim,
    /// As soon as one of the round's idshift containers has a run-dir entry
    /// (Create under way in its shim).
    FirstRunDir,
    /// This long after the launches began.
    After(Duration),
}

fn task_ls(c: &Containerd, ns: &str) -> Vec<(String, u32, String)> {
    c.ctr(ns, &["task", "ls"])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

/// The `-id` of a shim command line.
fn shim_id(cmd: &str) -> Option<String> {
    let mut words = cmd.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-id" {
            return words.next().map(str::to_string);
        }
    }
    None
}

/// (pid, -id) of this containerd's serving shims of `binary`.
fn shims(c: &Containerd, binary: &str) -> Vec<(u32, String)> {
    processes_matching(&format!("{}/", c.base().display()))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(binary) && cmd.contains(" -address "))
        .filter(|(_, cmd)| !cmd.contains(" start") && !cmd.contains(" delete"))
        .filter_map(|(pid, cmd)| Some((pid, shim_id(&cmd)?)))
        .collect()
}

/// The shim sockets named by the bundles' `address` files of `ids`.
fn sockets_of(c: &Containerd, ns: &str, ids: &[String]) -> BTreeSet<PathBuf> {
    let tasks = c
        .containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(ns);
    ids.iter()
        .filter_map(|id| std::fs::read_to_string(tasks.join(id).join("address")).ok())
        .map(|a| PathBuf::from(a.trim().trim_start_matches("unix://")))
        .filter(|p| p.is_absolute())
        .collect()
}

fn is_one_of(path_or_line: &str, ids: &[String]) -> bool {
    ids.iter().any(|id| {
        path_or_line.ends_with(&format!("/{id}"))
            || path_or_line.contains(&format!("/{id}/"))
            || path_or_line.contains(&format!("/{id} "))
    })
}

/// What the round's containers `ids` of one runtime left: shim processes,
/// bundles, cgroups, mounts, and for idshift ID ranges beyond `ranges_kept`,
/// run-dir entries and sockets.
fn leftovers(
    c: &Containerd,
    ns: &str,
    binary: &str,
    ids: &[String],
    sockets: &BTreeSet<PathBuf>,
    idshift: bool,
    ranges_kept: usize,
) -> Vec<String> {
    let mut left = Vec::new();
    for (pid, id) in shims(c, binary) {
        if ids.contains(&id) {
            left.push(format!("shim process {pid} (-id {id})"));
        }
    }
    for l in c.cgroup_leaks() {
        if is_one_of(&l, ids) {
            left.push(l);
        }
    }
    let state = c.containerd_state().display().to_string();
    let run = c.run_dir().display().to_string();
    for l in host_mountinfo() {
        if (l.contains(&run) || l.contains(&state)) && is_one_of(&l, ids) {
            left.push(format!("mount: {l}"));
        }
    }
    let tasks = c
        .containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(ns);
    for id in ids {
        if tasks.join(id).exists() {
            left.push(format!("bundle {}", tasks.join(id).display()));
        }
    }
    if idshift {
        let ranges = c.live_ranges();
        if ranges > ranges_kept {
            left.push(format!(
                "{} ID ranges allocated beyond the survivors' {ranges_kept}",
                ranges - ranges_kept
            ));
        }
        for id in ids {
            let d = c.run_dir().join(ns).join(id);
            if d.exists() {
                left.push(format!("run dir {}", d.display()));
            }
        }
        for s in sockets {
            if s.exists() {
                left.push(format!("socket {}", s.display()));
            }
        }
    }
    left
}

/// What a leftover shim is doing (for a failure's message): its threads'
/// states and kernel stacks, and its open files.
fn diagnose(c: &Containerd, binary: &str, ids: &[String]) -> String {
    let mut out = String::new();
    for (pid, id) in shims(c, binary) {
        if !ids.contains(&id) {
            continue;
        }
        out.push_str(&format!("shim {pid} (-id {id}):\n"));
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for t in tasks.into_iter().flatten().flatten() {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            out.push_str(&format!(
                "  thread {} {} wchan={} stat={}\n{}",
                t.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan").trim(),
                read("stat").split(' ').nth(2).unwrap_or(""),
                read("stack")
            ));
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                out.push_str(&format!(
                    "  fd {} -> {}\n",
                    fd.file_name().to_string_lossy(),
                    target.display()
                ));
            }
        }
    }
    out
}

/// Removes container `id` as an operator would: its task (killed), then the
/// container; returns what failed.
fn remove(c: &Containerd, ns: &str, id: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = c.ctr(ns, &["task", "rm", "-f", id]);
        let r = c.ctr(ns, &["c", "rm", id]);
        if r.success() || r.stderr.contains("not found") {
            return None;
        }
        if Instant::now() > deadline {
            return Some(format!("ctr task rm -f {id}: {t:?}; ctr c rm {id}: {r:?}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

struct Round {
    idshift: Vec<String>,
    runc: Vec<String>,
    runs: Vec<std::thread::JoinHandle<CtrOutput>>,
}

fn launch(c: &Containerd, ns: &str, tag: &str) -> Round {
    let mut round = Round {
        idshift: (0..IDSHIFT_PER_ROUND)
            .map(|_| unique(&format!("i{tag}")))
            .collect(),
        runc: (0..RUNC_PER_ROUND)
            .map(|_| unique(&format!("r{tag}")))
            .collect(),
        runs: Vec::new(),
    };
    let all: Vec<(String, &str)> = round
        .idshift
        .iter()
        .map(|id| (id.clone(), IDSHIFT_RUNTIME))
        .chain(round.runc.iter().map(|id| (id.clone(), RUNC_RUNTIME)))
        .collect();
    for (id, runtime) in all {
        let cmd = c.ctr_command(
            ns,
            &[
                "run",
                "-d",
                runtime,
                IMG,
                &id,
                "/bin/sh",
                "-c",
                "sleep 100000",
            ],
        );
        round.runs.push(std::thread::spawn(move || {
            run_with_timeout(cmd, Duration::from_secs(120))
        }));
    }
    round
}

fn wait_kill_point(c: &Containerd, ns: &str, round: &Round, point: KillPoint, t0: Instant) {
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let reached = match point {
            KillPoint::After(d) => t0.elapsed() >= d,
            KillPoint::FirstShim => shims(c, "containerd-shim-idshift-v2")
                .iter()
                .any(|(_, id)| round.idshift.contains(id)),
            KillPoint::FirstRunDir => round
                .idshift
                .iter()
                .any(|id| c.run_dir().join(ns).join(id).exists()),
        };
        if reached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kill point {point:?} not reached within 60 s\n{}",
            c.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ctr run -d` of an idshift container `id` that sleeps until killed.
fn run_sleeper(c: &Containerd, ns: &str, id: &str) {
    let out = c.ctr(
        ns,
        &[
            "run",
            "-d",
            IDSHIFT_RUNTIME,
            IMG,
            id,
            "/bin/sh",
            "-c",
            "sleep 100000",
        ],
    );
    assert!(
        out.success(),
        "ctr run -d {id}: {out:?}\n{}",
        c.log_tail(60)
    );
}
#[test]
fn containerd_sigkilled_during_creates_leaves_no_idshift_orphan() {
    let mut c =
        Containerd::start(ContainerdOptions::idshift(ORPHAN_TOML)).expect("start containerd");
    let ns = c.namespace();
    c.import_image(&ns, IMG, LAYERS).expect("import image");

    // Containers containerd knows all along: they must survive every
    // restart, with the same pid, and still work at the end.
    let survivors: Vec<String> = (0..2).map(|_| unique("keep")).collect();
    for id in &survivors {
        run_sleeper(&c, &ns, id);
    }
    let running = |c: &Containerd| -> Vec<(String, u32)> {
        task_ls(c, &ns)
            .into_iter()
            .filter(|(id, _, st)| survivors.contains(id) && st == "RUNNING")
            .map(|(id, pid, _)| (id, pid))
            .collect()
    };
    let mut before = running(&c);
    before.sort();
    assert_eq!(before.len(), survivors.len(), "survivors run: {before:?}");
    let survivor_shims: BTreeSet<u32> = shims(&c, "containerd-shim-idshift-v2")
        .into_iter()
        .filter(|(_, id)| survivors.contains(id))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(survivor_shims.len(), survivors.len(), "{survivor_shims:?}");

    let points = [
        KillPoint::FirstShim,
        KillPoint::FirstRunDir,
        KillPoint::After(Duration::from_millis(400)),
        KillPoint::After(Duration::from_millis(800)),
        KillPoint::After(Duration::from_millis(1500)),
    ];
    let mut report = Vec::new();
    for (n, point) in points.iter().enumerate() {
        let t0 = Instant::now();
        let round = launch(&c, &ns, &n.to_string());
        wait_kill_point(&c, &ns, &round, *point, t0);
        let mut sockets = sockets_of(&c, &ns, &round.idshift);
        c.stop_with(Signal::KILL).expect("SIGKILL containerd");
        let mut launched = 0;
        for r in round.runs {
            if r.join().map(|o| o.success()).unwrap_or(false) {
                launched += 1;
            }
        }
        sockets.extend(sockets_of(&c, &ns, &round.idshift));
        c.start_again().expect("start containerd again");

        // What containerd still knows keeps running, as it was.
        let mut after = running(&c);
        after.sort();
        assert_eq!(
            after,
            before,
            "round {n} ({point:?}): the survivors after the restart\n{}",
            c.log_tail(80)
        );
        sockets.extend(sockets_of(&c, &ns, &round.idshift));

        // Every container containerd lists of this round, removed.
        let listed: Vec<String> = c
            .ctr(&ns, &["c", "ls", "-q"])
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|id| round.idshift.contains(id) || round.runc.contains(id))
            .collect();
        for id in &listed {
            if let Some(problem) = remove(&c, &ns, id) {
                if round.idshift.contains(id) {
                    panic!("round {n}: {problem}\n{}", c.log_tail(80));
                }
                report.push(format!("round {n}: runc: {problem}"));
            }
        }

        // Shims still there once containerd has no container of the round:
        // what is left for the shims' own watchdog (idshift) to clean.
        let count = |binary: &str, ids: &[String]| {
            shims(&c, binary)
                .into_iter()
                .filter(|(_, id)| ids.contains(id))
                .count()
        };
        let after_removal = (
            count("containerd-shim-idshift-v2", &round.idshift),
            count("containerd-shim-runc-v2", &round.runc),
        );
        // idshift: nothing left, within a bound.
        let deadline = Instant::now() + CLEAN_WITHIN;
        let t_clean = Instant::now();
        loop {
            let left = leftovers(
                &c,
                &ns,
                "containerd-shim-idshift-v2",
                &round.idshift,
                &sockets,
                true,
                survivors.len(),
            );
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {n} ({point:?}): idshift left after {} s: {left:#?}\n{}\n{}",
                CLEAN_WITHIN.as_secs(),
                c.log_tail(150),
                diagnose(&c, "containerd-shim-idshift-v2", &round.idshift)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let runc_left = leftovers(
            &c,
            &ns,
            "containerd-shim-runc-v2",
            &round.runc,
            &BTreeSet::new(),
            false,
            0,
        );
        let line = format!(
            "round {n} (kill {point:?}): {launched} of {} launches succeeded, {} listed after the restart, shims left once every container was removed: idshift {}, runc {}; idshift: nothing left after {:.1} s; runc shim: {} left: {runc_left:?}",
            IDSHIFT_PER_ROUND + RUNC_PER_ROUND,
            listed.len(),
            after_removal.0,
            after_removal.1,
            t_clean.elapsed().as_secs_f64(),
            runc_left.len(),
        );
        eprintln!("{line}");
        report.push(line);
        // The survivors' shims are the ones they had.
        let now: BTreeSet<u32> = shims(&c, "containerd-shim-idshift-v2")
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(now, survivor_shims, "round {n}: idshift shims");
    }

    // The survivors still work and are removed cleanly.
    for id in &survivors {
        let out = c.ctr(&ns, &["task", "exec", "--exec-id", "e", id, "id", "-u"]);
        assert_eq!(out.stdout.trim(), "0", "exec in {id}: {out:?}");
        assert!(remove(&c, &ns, id).is_none(), "removing {id}");
    }
    let deadline = Instant::now() + CLEAN_WITHIN;
    while c.live_ranges() > 0 || !shims(&c, "containerd-shim-idshift-v2").is_empty() {
        assert!(
            Instant::now() < deadline,
            "after removing the survivors: {} ranges, shims {:?}",
            c.live_ranges(),
            shims(&c, "containerd-shim-idshift-v2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("orphans: {}", report.join("\n orphans: "));
}

/// `containerd-shim-idshift-v2 gc` of this containerd's idshift config.
fn gc(c: &Containerd, dry_run: bool) -> CtrOutput {
    let mut cmd =
        std::process::Command::new(idshift_tests::shim_dir().join(idshift_tests::SHIM_BINARY));
    cmd.arg("gc");
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.arg("--config").arg(&c.idshift_config);
    run_with_timeout(cmd, Duration::from_secs(60))
}

fn bundle(c: &Containerd, ns: &str, id: &str) -> PathBuf {
    c.containerd_state()
        .join("io.containerd.runtime.v2.task")
        .join(ns)
        .join(id)
}

/// An operator's clean-up of what shims without the watchdog leave: `gc`
/// lists (dry run, nothing changed) then cleans an orphaned shim (its
/// bundle removed while containerd was down, as containerd's restart does
/// for containers it does not know) and a run-dir entry whose shim died,
/// and keeps a container containerd knows.
#[test]
fn gc_lists_then_cleans_orphaned_shims_entries_and_ranges() {
    // The watchdog is off: only gc can clean up here.
    let mut c = Containerd::start(ContainerdOptions::idshift(
        "[orphan]\ngrace_seconds = 100000\ncheck_seconds = 100000\nask_containerd = false\n",
    ))
    .expect("start containerd");
    let ns = c.namespace();
    c.import_image(&ns, IMG, 1).expect("import image");
    let (orphan, dead, known) = (unique("orphan"), unique("dead"), unique("known"));
    for id in [&orphan, &dead, &known] {
        run_sleeper(&c, &ns, id);
    }
    let shim_of = |c: &Containerd, id: &str| {
        shims(c, "containerd-shim-idshift-v2")
            .into_iter()
            .find(|(_, i)| i == id)
            .map(|(pid, _)| pid)
    };
    let orphan_shim = shim_of(&c, &orphan).expect("the orphan's shim");
    let dead_shim = shim_of(&c, &dead).expect("the dead one's shim");
    let known_pid = task_ls(&c, &ns)
        .into_iter()
        .find(|(id, _, _)| *id == known)
        .map(|(_, pid, _)| pid)
        .expect("known runs");
    let sockets = sockets_of(&c, &ns, &[orphan.clone(), dead.clone()]);

    // containerd down: one shim dies, and containerd "forgets" both (their
    // bundles go, as its restart removes the bundles of tasks it cannot load).
    c.stop_with(Signal::KILL).expect("SIGKILL containerd");
    let pid = rustix::process::Pid::from_raw(dead_shim as i32).expect("pid");
    rustix::process::kill_process(pid, Signal::KILL).expect("SIGKILL the shim");
    for id in [&orphan, &dead] {
        std::fs::remove_dir_all(bundle(&c, &ns, id)).expect("remove the bundle");
    }
    c.start_again().expect("start containerd again");
    assert_eq!(c.live_ranges(), 3);

    let out = gc(&c, true);
    assert!(out.success(), "gc --dry-run: {out:?}");
    let text = &out.stdout;
    assert!(
        text.contains(&format!("shim {orphan_shim} ")) && text.contains("would be killed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("run dir entry {ns}/{dead}")),
        "{text}"
    );
    assert!(
        text.contains("dry run: 1 orphaned shims, 1 orphaned run-dir entries"),
        "{text}"
    );
    assert!(
        text.contains(&format!("containerd knows {known}: kept")),
        "containerd's containers API answered for {known}: {text}"
    );
    // Nothing changed.
    assert!(shim_of(&c, &orphan).is_some(), "the dry run killed a shim");
    assert_eq!(c.live_ranges(), 3);
    assert!(c.run_dir().join(&ns).join(&dead).exists());

    let out = gc(&c, false);
    assert!(out.success(), "gc: {out:?}");
    eprintln!("gc said:\n{}", out.stdout);
    assert!(
        out.stdout
            .contains("1 orphaned shims, 1 orphaned run-dir entries"),
        "{}",
        out.stdout
    );
    assert_eq!(shim_of(&c, &orphan), None, "the orphan's shim is killed");
    assert_eq!(c.live_ranges(), 1, "only the known container's range");
    let both = [orphan.clone(), dead.clone()];
    let left = leftovers(
        &c,
        &ns,
        "containerd-shim-idshift-v2",
        &both,
        &sockets,
        true,
        1,
    );
    assert!(left.is_empty(), "gc left: {left:#?}");
    // The known container is untouched, and gc again finds nothing.
    let now = task_ls(&c, &ns)
        .into_iter()
        .find(|(id, _, _)| *id == known)
        .map(|(_, pid, st)| (pid, st));
    assert_eq!(now, Some((known_pid, "RUNNING".to_string())));
    let out = gc(&c, false);
    assert!(
        out.stdout
            .contains("0 orphaned shims, 0 orphaned run-dir entries, 0 orphaned ID ranges"),
        "{out:?}"
    );

    for id in [&orphan, &dead, &known] {
        assert!(remove(&c, &ns, id).is_none(), "removing {id}");
    }
    c.assert_no_leaks(Duration::from_secs(20));
}
