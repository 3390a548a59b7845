//! The range allocator under concurrency and crashes: threads, processes,
//! and processes killed with SIGKILL at random points.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use userns::{Allocator, AllocatorConfig, IdRange};

const WORKER_ENV: &str = "IDSHIFT_ALLOC_WORKER";

fn cfg(dir: &Path) -> AllocatorConfig {
    AllocatorConfig {
        state_dir: dir.to_path_buf(),
        pool_start: 0x7000_0000,
        pool_size: 4000 * 4096,
        range_size: 4096,
    }
}

fn assert_disjoint(live: &[(String, IdRange)], pool: &AllocatorConfig) {
    let mut sorted: Vec<_> = live.to_vec();
    sorted.sort_by_key(|(_, r)| r.base);
    for w in sorted.windows(2) {
        assert!(
            !w[0].1.overlaps(&w[1].1),
            "{} and {} overlap: {} / {}",
            w[0].0,
            w[1].0,
            w[0].1,
            w[1].1
        );
    }
    for (o, r) in &sorted {
        assert!(r.base >= pool.pool_start, "{o} below the pool");
        assert!(
            r.end() <= u64::from(pool.pool_start) + u64::from(pool.pool_size),
            "{o} above the pool"
        );
        assert_eq!(r.size, pool.range_size);
    }
}

/// Entry point of worker processes (a no-op in a normal test run).
/// `IDSHIFT_ALLOC_WORKER=dir:tag:mode`: mode `keep:N` allocates N owners and
/// prints them; mode `churn` allocates and releases forever.
#[test]
fn worker_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (dir, tag, mode) = (
        parts.next().expect("dir"),
        parts.next().expect("tag"),
        parts.next().expect("mode"),
    );
    let a = Allocator::open(cfg(Path::new(dir))).expect("open");
    if let Some(n) = mode.strip_prefix("keep:") {
        let n: usize = n.parse().expect("count");
        for i in 0..n {
            let r = a.allocate(&format!("{tag}-{i}")).expect("allocate");
            println!("RANGE {tag}-{i} {}", r.base);
        }
    } else {
        let mut i = 0u64;
        loop {
            let owner = format!("{tag}-{}", i % 7);
            a.allocate(&owner).expect("allocate");
            if i.is_multiple_of(3) {
                a.release(&owner).expect("release");
            }
            i += 1;
        }
    }
}

fn spawn_worker(dir: &Path, tag: &str, mode: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, format!("{}:{tag}:{mode}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker")
}

#[test]
fn threads_and_processes_never_share_a_range() {
    let d = tempfile::tempdir().expect("tempdir");
    let procs: Vec<Child> = (0..4)
        .map(|p| spawn_worker(d.path(), &format!("proc{p}"), "keep:40"))
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = d.path().to_path_buf();
            std::thread::spawn(move || {
                let a = Allocator::open(cfg(&dir)).expect("open");
                let mut held = Vec::new();
                for i in 0..50 {
                    let owner = format!("thread{t}-{i}");
                    held.push((owner.clone(), a.allocate(&owner).expect("allocate")));
                    if i % 2 == 1 {
                        let (o, r) = held.remove(0);
                        assert_eq!(a.release(&o).expect("release"), Some(r));
                    }
                }
                held
            })
        })
        .collect();
    let mut kept: Vec<(String, IdRange)> = Vec::new();
    for t in threads {
        kept.extend(t.join().expect("thread"));
    }
    for p in procs {
        let out = p.wait_with_output().expect("worker");
        assert!(out.status.success(), "worker failed");
        let text = String::from_utf8(out.stdout).expect("utf8");
        // libtest prints "test worker_entry ... " before the first line.
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.find("RANGE ").map(|i| &l[i..]))
            .collect();
        assert_eq!(lines.len(), 40, "worker output: {text}");
        for l in lines {
            let f: Vec<&str> = l.split(' ').collect();
            kept.push((
                f[1].to_string(),
                IdRange {
                    base: f[2].parse().expect("base"),
                    size: 4096,
                },
            ));
        }
    }
    let a = Allocator::open(cfg(d.path())).expect("open");
    let mut live = a.live().expect("live");
    assert_eq!(live.len(), 4 * 40 + 8 * 25);
    kept.sort();
    live.sort();
    assert_eq!(kept, live, "what the workers hold is exactly the live set");
    assert_disjoint(&live, a.config());
    // Second phase: release half, allocate again, still disjoint.
    for (o, _) in live.iter().step_by(2) {
        a.release(o).expect("release");
    }
    for i in 0..100 {
        a.allocate(&format!("again-{i}")).expect("allocate");
    }
    assert_disjoint(&a.live().expect("live"), a.config());
}

#[test]
fn sigkill_at_any_point_never_corrupts_or_double_allocates() {
    let d = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    for round in 0..40u64 {
        let mut child = spawn_worker(d.path(), &format!("r{round}"), "churn");
        std::thread::sleep(Duration::from_millis(5 + (round * 7) % 40));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let a = Allocator::open(cfg(d.path())).expect("open");
        let live = a.live().unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_disjoint(&live, a.config());
    }
    let a = Allocator::open(cfg(d.path())).expect("open");
    for i in 0..50 {
        a.allocate(&format!("after-{i}")).expect("allocate");
    }
    let live = a.live().expect("live");
    assert_disjoint(&live, a.config());
    assert!(live.len() >= 50);
    assert!(
        live.iter().any(|(o, _)| o.starts_with('r')),
        "the killed workers never allocated: the test did not exercise anything"
    );
    eprintln!(
        "40 kill rounds, {} live ranges at the end, {:?}",
        live.len(),
        start.elapsed()
    );
}
