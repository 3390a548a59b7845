//! `containerd-shim-idshift-v2 gc [--dry-run] [--config FILE]`: what an
//! operator runs to find and clean up what idshift shims containerd forgot
//! left behind (shims that predate the orphan watchdog, shims SIGKILLed
//! while containerd was down, ...):
//!
//! - serving shims (of this config's run dir) that containerd no longer
//!   knows: every container they serve is forgotten (its bundle is gone, or
//!   containerd at the shim's `-address` answers NOT_FOUND twice), or they
//!   serve none and their bundle is gone, containerd has no record of the
//!   task they were started for, or they are older than `[orphan]
//!   grace_seconds`. They are SIGKILLed (through a pidfd) and cleaned up
//!   after as containerd's `shim delete` would: the containers' cgroups
//!   (and processes), ID ranges and run dirs, and the shim's socket;
//! - run-dir entries whose shim is dead: cleaned up the same way;
//! - ID ranges the allocator holds for a container with no run-dir entry:
//!   released.
//!
//! With `--dry-run` it only lists what it would do. No answer from
//! containerd is never taken for "forgotten".

use crate::config::Config;
use crate::container::{cleanup_persisted, range_owner, read_persisted, remove_run_dir, Persisted};
use crate::containerd_api::{container_known, Known};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub const USAGE: &str = "gc [--dry-run] [--config FILE]\n\n\
    gc lists and cleans up what idshift shims that containerd forgot left\n\
    behind: orphaned shims (killed, their containers' cgroups, ID ranges and\n\
    run dirs released, their sockets removed), run-dir entries whose shim is\n\
    dead, and ID ranges held for no container. --dry-run only lists. FILE is\n\
    idshift's config (default: $IDSHIFT_CONFIG, else /etc/idshift/config.toml).";

/// A serving idshift shim found in /proc.
#[derive(Debug, Clone)]
struct ShimProc {
    pid: i32,
    namespace: String,
    id: String,
    address: String,
    socket: String,
    /// Its cwd (the bundle it was started in); None when it is deleted.
    bundle: Option<PathBuf>,
    bundle_path: String,
    age: Duration,
    /// The run dir of the config in its environment.
    run_dir: Option<PathBuf>,
}

/// A `<run_dir>/<ns>/<id>` entry.
#[derive(Debug)]
struct Entry {
    namespace: String,
    id: String,
    dir: PathBuf,
    persisted: Option<Persisted>,
    age: Duration,
}

/// How long process `pid` has run.
fn process_age(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    // Fields after the comm: state is field 3, starttime field 22.
    let start: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = start as f64 / crate::sys::clock_ticks_per_second() as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The serving shim `pid`, if it is one of this binary's.
fn serving_shim(pid: i32, exe_name: &str) -> Option<ShimProc> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    if name.trim_end_matches(" (deleted)") != exe_name {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let socket = flag(&args, "-socket")?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let bundle_path = cwd
        .as_ref()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    let bundle = cwd.filter(|c| !c.to_string_lossy().ends_with(" (deleted)") && c.exists());
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let config_env = env
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{}=", crate::config::CONFIG_ENV)))
        .map(PathBuf::from);
    let run_dir = match config_env {
        Some(p) => Config::load(Some(&p)).ok().map(|c| c.run_dir),
        None => Config::load(Some(Path::new(crate::config::DEFAULT_CONFIG)))
            .ok()
            .map(|c| c.run_dir)
            .or_else(|| Some(Config::default().run_dir)),
    };
    Some(ShimProc {
        pid,
        namespace: flag(&args, "-namespace").unwrap_or_default(),
        id: flag(&args, "-id").unwrap_or_default(),
        address: flag(&args, "-address").unwrap_or_default(),
        socket,
        bundle,
        bundle_path,
        age: process_age(pid).unwrap_or_default(),
        run_dir,
    })
}

fn serving_shims() -> Vec<ShimProc> {
    let me = std::process::id() as i32;
    let exe_name = std::env::current_exe()
        .ok()
        .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.trim_end_matches(" (deleted)").to_string())
        .unwrap_or_else(|| crate::NAME.to_string());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(s) = serving_shim(pid, &exe_name) {
            out.push(s);
        }
    }
    out
}

fn entries(run_dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(run_dir).into_iter().flatten().flatten() {
        if !ns.path().is_dir() {
            continue;
        }
        for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if !c.path().is_dir() {
                continue;
            }
            let age = c
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            out.push(Entry {
                namespace: ns.file_name().to_string_lossy().into_owned(),
                id: c.file_name().to_string_lossy().into_owned(),
                persisted: read_persisted(&c.path()),
                dir: c.path(),
                age,
            });
        }
    }
    out
}

/// containerd's answer about a container: asked again a second later if
/// it said NOT_FOUND. None: no answer.
fn known(rt: &tokio::runtime::Runtime, address: &str, ns: &str, id: &str) -> Option<bool> {
    if address.is_empty() {
        return None;
    }
    for attempt in 0..2 {
        match rt.block_on(container_known(address, ns, id)) {
            Ok(Known::Yes) => return Some(true),
            Ok(Known::No) if attempt == 1 => return Some(false),
            Ok(Known::No) => std::thread::sleep(Duration::from_secs(1)),
            Err(_) => return None,
        }
    }
    None
}

/// Why a container is forgotten by containerd, if it is.
fn entry_forgotten(rt: &tokio::runtime::Runtime, address: &str, e: &Entry) -> Option<String> {
    if let Some(b) = e.persisted.as_ref().and_then(|p| p.bundle.as_ref()) {
        if !b.exists() {
            return Some(format!("its bundle {} is gone", b.display()));
        }
    }
    match known(rt, address, &e.namespace, &e.id) {
        Some(false) => Some(format!("containerd at {address} has no container {}", e.id)),
        _ => None,
    }
}

/// SIGKILLs `shim` through a pidfd (if it is still the same shim) and waits
/// (10 s at most) for it to die.
fn kill_shim(shim: &ShimProc) -> Result<(), String> {
    let pid = rustix::process::Pid::from_raw(shim.pid).ok_or("a bad pid")?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("pidfd_open({}): {e}", shim.pid))?;
    // Still the same process (the pid was not reused meanwhile)?
    let again = serving_shim(shim.pid, crate::NAME)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
                .and_then(|n| serving_shim(shim.pid, &n))
        })
        .ok_or("it exited meanwhile")?;
    if again.socket != shim.socket {
        return Err("its pid now belongs to another process".into());
    }
    rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL)
        .map_err(|e| format!("SIGKILL: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(shim.pid) {
        if std::time::Instant::now() > deadline {
            return Err("it did not die within 10 s of SIGKILL".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn remove_socket(socket: &str) -> Result<bool, String> {
    let path = socket.trim_start_matches("unix://");
    if !path.starts_with('/') {
        return Ok(false);
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)
            .map(|_| true)
            .map_err(|e| format!("removing {path}: {e}")),
        _ => Ok(false),
    }
}

/// What an entry without a readable state.json may hold: the range the
/// allocator keeps under its name.
fn fallback(config: &Config, e: &Entry) -> Persisted {
    let owner = range_owner(&e.namespace, &e.id);
    let held = userns::Allocator::open(config.allocator())
        .and_then(|a| a.lookup(&owner))
        .ok()
        .flatten();
    Persisted {
        range_owner: held.map(|_| owner),
        state_dir: config.state_dir.clone(),
        pool_start: config.pool.start,
        pool_size: config.pool.size,
        range_size: config.pool.range_size,
        ..Default::default()
    }
}

fn describe(p: &Persisted) -> String {
    let mut what = Vec::new();
    if let Some(o) = &p.range_owner {
        what.push(format!("ID range of {o}"));
    }
    if let Some(c) = &p.cgroup {
        what.push(format!("cgroup {c} and its processes"));
    }
    what.push("run dir".into());
    what.join(", ")
}

pub fn main(args: &[String]) -> ExitCode {
    let mut dry_run = false;
    let mut config_path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dry-run" | "-n" => dry_run = true,
            "--config" => match it.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => {
                    eprintln!(
                        "{}: --config needs a FILE\nusage: {} {USAGE}",
                        crate::NAME,
                        crate::NAME
                    );
                    return ExitCode::from(2);
                }
            },
            "--help" | "-h" => {
                println!("usage: {} {USAGE}", crate::NAME);
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!(
                    "{}: gc: unknown argument {other:?}\nusage: {} {USAGE}",
                    crate::NAME,
                    crate::NAME
                );
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: gc: {e}", crate::NAME);
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: gc: starting the async runtime: {e}", crate::NAME);
            return ExitCode::FAILURE;
        }
    };
    let report = gc(&config, dry_run, &rt);
    for line in &report.lines {
        println!("{line}");
    }
    for e in &report.errors {
        eprintln!("{}: gc: {e}", crate::NAME);
    }
    println!(
        "{}{} orphaned shims, {} orphaned run-dir entries, {} orphaned ID ranges{}",
        if dry_run { "dry run: " } else { "" },
        report.shims,
        report.entries,
        report.ranges,
        if dry_run {
            " (nothing changed)"
        } else {
            " cleaned up"
        }
    );
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    errors: Vec<String>,
    shims: usize,
    entries: usize,
    ranges: usize,
}

fn gc(config: &Config, dry_run: bool, rt: &tokio::runtime::Runtime) -> Report {
    let mut r = Report::default();
    let grace = config.orphan.grace();
    let all = entries(&config.run_dir);
    let shims: Vec<ShimProc> = serving_shims()
        .into_iter()
        .filter(|s| {
            all.iter()
                .any(|e| e.persisted.as_ref().is_some_and(|p| p.shim_pid == s.pid))
                || s.run_dir.as_deref() == Some(config.run_dir.as_path())
        })
        .collect();
    let mut handled: Vec<PathBuf> = Vec::new();

    // 1. Shims containerd forgot.
    for s in &shims {
        let mine: Vec<&Entry> = all
            .iter()
            .filter(|e| e.persisted.as_ref().is_some_and(|p| p.shim_pid == s.pid))
            .collect();
        let who = format!(
            "shim {} (namespace {}, id {}, {} container(s))",
            s.pid,
            s.namespace,
            s.id,
            mine.len()
        );
        let why = if mine.is_empty() {
            if s.bundle.is_none() {
                Some(format!(
                    "serves no container and its bundle {} is gone",
                    s.bundle_path
                ))
            } else if known(rt, &s.address, &s.namespace, &s.id) == Some(false) {
                Some(format!(
                    "serves no container and containerd at {} has no container {}",
                    s.address, s.id
                ))
            } else if s.age >= grace {
                Some(format!(
                    "has served no container for {} s (older than [orphan] grace_seconds)",
                    s.age.as_secs()
                ))
            } else {
                None
            }
        } else {
            let reasons: Vec<String> = mine
                .iter()
                .map(|e| entry_forgotten(rt, &s.address, e))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            (!reasons.is_empty()).then(|| {
                format!(
                    "containerd forgot every container it serves: {}",
                    reasons.join("; ")
                )
            })
        };
        let Some(why) = why else {
            let id = mine.first().map(|e| e.id.as_str()).unwrap_or(&s.id);
            let said = match known(rt, &s.address, &s.namespace, id) {
                Some(true) => format!("containerd knows {id}"),
                Some(false) => {
                    format!("containerd has no {id}, but not every container is forgotten")
                }
                None => format!("no answer from containerd at {}", s.address),
            };
            r.lines.push(format!("{who}: {said}: kept"));
            continue;
        };
        r.shims += 1;
        if dry_run {
            r.lines
                .push(format!("{who}: orphan: {why}: would be killed"));
        } else {
            match kill_shim(s) {
                Ok(()) => r.lines.push(format!("{who}: orphan: {why}: killed")),
                Err(e) => {
                    r.errors
                        .push(format!("{who}: orphan ({why}), but not killed: {e}"));
                    continue;
                }
            }
        }
        for e in &mine {
            let p = e.persisted.clone().unwrap_or_default();
            if dry_run {
                r.lines.push(format!(
                    "  {}/{}: would release its {}",
                    e.namespace,
                    e.id,
                    describe(&p)
                ));
            } else {
                cleanup_persisted(&p, &e.dir);
                r.lines.push(format!(
                    "  {}/{}: released its {}",
                    e.namespace,
                    e.id,
                    describe(&p)
                ));
            }
            handled.push(e.dir.clone());
        }
        if dry_run {
            r.lines
                .push(format!("  would remove its socket {}", s.socket));
        } else {
            match remove_socket(&s.socket) {
                Ok(true) => r.lines.push(format!("  removed its socket {}", s.socket)),
                Ok(false) => {}
                Err(e) => r.errors.push(e),
            }
        }
    }

    // 2. Run-dir entries whose shim is dead.
    let live = |pid: i32| shims.iter().any(|s| s.pid == pid) && alive(pid);
    let rest: Vec<&Entry> = all.iter().filter(|e| !handled.contains(&e.dir)).collect();
    for e in rest {
        let what = format!("run dir entry {}/{}", e.namespace, e.id);
        let (why, p) = match &e.persisted {
            Some(p) if p.shim_pid > 0 && live(p.shim_pid) => continue,
            Some(p) if p.shim_pid > 0 => {
                (format!("its shim (pid {}) is gone", p.shim_pid), p.clone())
            }
            Some(p) if shims.is_empty() => ("no idshift shim runs".to_string(), p.clone()),
            Some(_) => {
                r.lines.push(format!(
                    "{what}: written by an older idshift (no shim pid) while shims run: left alone"
                ));
                continue;
            }
            None if e.age >= grace => (
                format!("no readable state.json for {} s", e.age.as_secs()),
                fallback(config, e),
            ),
            None => continue, // a Create may be writing it
        };
        r.entries += 1;
        if dry_run {
            r.lines.push(format!(
                "{what}: orphan: {why}: would release its {}",
                describe(&p)
            ));
        } else {
            if e.persisted.is_some() {
                cleanup_persisted(&p, &e.dir);
            } else {
                if let Some(owner) = &p.range_owner {
                    if let Err(err) =
                        userns::Allocator::open(config.allocator()).and_then(|a| a.release(owner))
                    {
                        r.errors
                            .push(format!("{what}: releasing the range of {owner}: {err}"));
                    }
                }
                remove_run_dir(&e.dir);
            }
            r.lines.push(format!(
                "{what}: orphan: {why}: released its {}",
                describe(&p)
            ));
            // The dead shim's socket, unless a live shim serves it.
            if let Some(socket) = &p.socket {
                match remove_socket(socket) {
                    Ok(true) => r
                        .lines
                        .push(format!("  removed its shim's socket {socket}")),
                    Ok(false) => {}
                    Err(e) => r.errors.push(e),
                }
            }
        }
        handled.push(e.dir.clone());
    }

    // 3. Ranges held for no container.
    let alloc = match userns::Allocator::open(config.allocator()) {
        Ok(a) => a,
        Err(e) => {
            r.errors
                .push(format!("opening the ID range allocator: {e}"));
            return r;
        }
    };
    let live_ranges = match alloc.live() {
        Ok(l) => l,
        Err(e) => {
            r.errors
                .push(format!("reading the ID range allocator: {e}"));
            return r;
        }
    };
    for (owner, range) in live_ranges {
        let Some((ns, id)) = owner.split_once(':') else {
            continue;
        };
        let dir = config.run_dir.join(ns).join(id);
        // A handled entry's range goes (or would go) with it.
        if handled.contains(&dir) || dir.exists() {
            continue;
        }
        r.ranges += 1;
        if dry_run {
            r.lines.push(format!(
                "ID range {range} of {owner}: no run dir: would be released"
            ));
        } else if dir.exists() {
            continue; // a Create of that id began meanwhile
        } else {
            match alloc.release(&owner) {
                Ok(_) => r
                    .lines
                    .push(format!("ID range {range} of {owner}: no run dir: released")),
                Err(e) => r
                    .errors
                    .push(format!("releasing the ID range of {owner}: {e}")),
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            state_dir: dir.join("state"),
            run_dir: dir.join("run"),
            pool: crate::config::Pool {
                start: 65536 * 1526,
                size: 65536 * 4,
                range_size: 65536,
                ..crate::config::Pool::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn ranges_without_run_dir_and_entries_of_dead_shims_go() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = config(d.path());
        let alloc = userns::Allocator::open(cfg.allocator()).expect("allocator");
        alloc.allocate("ns:lost").expect("allocate");
        alloc.allocate("ns:dead").expect("allocate");
        let dir = cfg.run_dir.join("ns").join("dead");
        std::fs::create_dir_all(&dir).expect("run dir");
        let p = Persisted {
            range_owner: Some("ns:dead".into()),
            state_dir: cfg.state_dir.clone(),
            pool_start: cfg.pool.start,
            pool_size: cfg.pool.size,
            range_size: cfg.pool.range_size,
            // No such process: pids stop well below this.
            shim_pid: i32::MAX - 1,
            ..Default::default()
        };
        crate::container::write_persisted(&dir, &p).expect("state.json");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");

        let dry = gc(&cfg, true, &rt);
        assert!(dry.errors.is_empty(), "{:?}", dry.errors);
        assert_eq!(
            (dry.shims, dry.entries, dry.ranges),
            (0, 1, 1),
            "{:?}",
            dry.lines
        );
        assert_eq!(
            alloc.live().expect("live").len(),
            2,
            "a dry run changes nothing"
        );
        assert!(dir.exists());

        let done = gc(&cfg, false, &rt);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        assert_eq!((done.entries, done.ranges), (1, 1), "{:?}", done.lines);
        assert!(alloc.live().expect("live").is_empty(), "{:?}", done.lines);
        assert!(!dir.exists());
        let again = gc(&cfg, false, &rt);
        assert_eq!((again.shims, again.entries, again.ranges), (0, 0, 0));
    }
}
