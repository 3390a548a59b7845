//! idshift-bench: the rootfs construction benchmark and the demo.
//!
//! `idshift-bench rootfs` builds the rootfs of a synthetic image of L layers
//! with every strategy, interleaved so that machine noise hits all alike, and
//! prints per strategy the mount syscalls, the construction time and the
//! ratio against the per-layer construction (containerd 2.0's) measured in
//! the same run. `idshift-bench storm` launches N containers at once from
//! an image of L layers under every configuration (see `storm.rs`).
//! `idshift-bench demo` is README's demo.

mod events;
mod host;
mod report;
mod storm;
mod stress;

use rootfs::{BuildOptions, Idmap, KernelFeatures, MountOps, Strategy};
use serde::Serialize;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use userns::{Allocator, AllocatorConfig, IdRange, UserNamespace};

type Error = Box<dyn std::error::Error>;

const STRATEGIES: [Strategy; 4] = [
    Strategy::Fd,
    Strategy::Path,
    Strategy::PerLayer,
    Strategy::Plain,
];

fn usage() -> String {
    format!(
        "usage: idshift-bench demo\n       \
         idshift-bench rootfs [--layers 1,10,50,100,200] [--iterations N] [--json FILE]\n       \
         {}
       {}",
        storm::usage(),
        stress::usage()
    )
}

/// Set in the environment of the storm's worker process.
const WORKER_ENV: &str = "IDSHIFT_BENCH_STORM_WORKER";

/// `idshift-bench storm`: the storm runs in a worker process of its own
/// process group, so that a Ctrl-C at the terminal reaches neither the
/// containerd it starts nor its `ctr`s; this process forwards SIGINT and
/// SIGTERM to the worker, which stops after its current round and cleans
/// everything up.
fn storm_supervise(sub: &str, args: &[String]) -> Result<ExitCode, Error> {
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::{AtomicI32, Ordering};
    static WORKER: AtomicI32 = AtomicI32::new(0);
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg(sub)
        .args(args)
        .env(WORKER_ENV, "1")
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the storm worker: {e}"))?;
    WORKER.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    ctrlc::set_handler(|| {
        if let Some(pid) = rustix::process::Pid::from_raw(WORKER.load(Ordering::SeqCst)) {
            eprintln!("\nidshift-bench: interrupted: finishing the current round and cleaning up");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    })
    .map_err(|e| format!("installing the SIGINT handler: {e}"))?;
    let status = child.wait()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn storm_worker(args: &[String]) -> Result<ExitCode, Error> {
    ctrlc::set_handler(|| storm::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst))
        .map_err(|e| format!("installing the SIGINT handler: {e}"))?;
    let opts = storm::Options::parse(args).map_err(|e| e.to_string())?;
    let strict = opts.strict;
    let command = std::iter::once("idshift-bench storm".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let clean = storm::run(opts, command).map_err(|e| e.to_string())?;
    if strict && !clean {
        eprintln!("idshift-bench: --strict: a launch failed or something leaked (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `idshift-bench stress` in its worker process (see [`storm_supervise`]).
fn stress_worker(args: &[String]) -> Result<ExitCode, Error> {
    ctrlc::set_handler(|| storm::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst))
        .map_err(|e| format!("installing the SIGINT handler: {e}"))?;
    let opts = stress::Options::parse(args).map_err(|e| e.to_string())?;
    let command = std::iter::once("idshift-bench stress".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    if stress::run(opts, command).map_err(|e| e.to_string())? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "idshift-bench: stress: a leak, an unclean failure or an ID range overlap (see above)"
        );
        Ok(ExitCode::FAILURE)
    }
}

fn mountinfo_lines() -> Result<usize, Error> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count())
}

#[derive(Serialize)]
struct Row {
    layers: usize,
    strategy: String,
    ops: MountOps,
    median_us: f64,
    p90_us: f64,
    vs_per_layer: f64,
    mountinfo_lines_added: i64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Builds `image` with every strategy `iterations` times, interleaved.
fn measure(
    image: &rootfs::synthetic::SyntheticImage,
    features: &KernelFeatures,
    ns: &UserNamespace,
    range: IdRange,
    scratch: &Path,
    iterations: usize,
) -> Result<Vec<Row>, Error> {
    let plan = rootfs::plan(std::slice::from_ref(&image.mount), Path::new("/"))?;
    // Only the strategies this kernel has are built; the others are reported.
    let supported: Vec<bool> = STRATEGIES
        .iter()
        .map(|&s| match features.resolve(s) {
            Ok(_) => true,
            Err(e) => {
                println!("{:>6}  {:<10} unsupported: {e}", image.lowers.len(), s);
                false
            }
        })
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); STRATEGIES.len()];
    let mut ops = vec![MountOps::default(); STRATEGIES.len()];
    let mut added = vec![0i64; STRATEGIES.len()];
    for _ in 0..iterations {
        for (i, &strategy) in STRATEGIES.iter().enumerate() {
            if !supported[i] {
                continue;
            }
            let opts = BuildOptions {
                strategy,
                features,
                idmap: strategy.uses_userns().then(|| Idmap {
                    userns: ns.fd(),
                    root_uid: range.base,
                    root_gid: range.base,
                }),
                scratch_dir: scratch,
            };
            let before = mountinfo_lines()?;
            let root = rootfs::build(&plan, &opts)
                .map_err(|e| format!("{strategy} with {} layers: {e}", image.lowers.len()))?;
            added[i] = mountinfo_lines()? as i64 - before as i64;
            times[i].push(root.elapsed);
            ops[i] = root.ops;
            drop(root);
        }
    }
    let medians: Vec<Option<Duration>> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            (!t.is_empty()).then(|| percentile(t, 0.5))
        })
        .collect();
    let per_layer = medians[2].map(|d| d.as_secs_f64());
    Ok(STRATEGIES
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let median = medians[i]?;
            Some(Row {
                layers: image.lowers.len(),
                strategy: s.to_string(),
                ops: ops[i],
                median_us: median.as_secs_f64() * 1e6,
                p90_us: percentile(&times[i], 0.9).as_secs_f64() * 1e6,
                // NaN (null in JSON) where per-layer cannot run.
                vs_per_layer: per_layer.map_or(f64::NAN, |p| p / median.as_secs_f64()),
                mountinfo_lines_added: added[i],
            })
        })
        .collect())
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:>6}  {:<10} {:>8} {:>10} {:>8} {:>6} {:>11} {:>11} {:>9} {:>10}",
        "layers",
        "strategy",
        "syscalls",
        "open_tree",
        "setattr",
        "umount",
        "median",
        "p90",
        "speed-up",
        "mountinfo+"
    );
    for r in rows {
        println!(
            "{:>6}  {:<10} {:>8} {:>10} {:>8} {:>6} {:>9.0}us {:>9.0}us {:>8.1}x {:>10}",
            r.layers,
            r.strategy,
            r.ops.total(),
            r.ops.open_tree,
            r.ops.mount_setattr,
            r.ops.umount,
            r.median_us,
            r.p90_us,
            r.vs_per_layer,
            r.mountinfo_lines_added
        );
    }
}

fn bench_rootfs(args: &[String]) -> Result<(), Error> {
    let mut layers = vec![1, 10, 50, 100, 200];
    let mut iterations = 20;
    let mut json = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--layers" => {
                layers = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--layers {s:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--iterations" => {
                iterations = value()?.parse().map_err(|e| format!("--iterations: {e}"))?
            }
            "--json" => json = Some(value()?.clone()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    if iterations == 0 || layers.iter().any(|&l| l == 0 || l > rootfs::MAX_LAYERS) {
        return Err("--iterations must be > 0 and layers between 1 and 500".into());
    }
    let dir = tempfile::Builder::new().prefix("idshift-bench").tempdir()?;
    let features = rootfs::probe(dir.path())?;
    println!(
        "kernel {} ({}); {} iterations per strategy, interleaved; speed-up = per-layer median / median",
        features.kernel,
        features.tier(),
        iterations
    );
    let range = IdRange {
        base: 0x7ff0_0000,
        size: 65536,
    };
    let ns = UserNamespace::for_range(range)?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch)?;
    let mut all = Vec::new();
    for &l in &layers {
        let img = rootfs::synthetic::create(&dir.path().join(format!("img{l}")), l)?;
        let rows = measure(&img, &features, &ns, range, &scratch, iterations)?;
        print_rows(&rows);
        all.extend(rows);
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&all)?)?;
        println!("wrote {path}");
    }
    Ok(())
}

/// README's demo: ID ranges from the allocator, and a 50-layer idmapped
/// rootfs built by every strategy with its mount-syscall count.
fn demo() -> Result<(), Error> {
    let dir = tempfile::Builder::new().prefix("idshift-demo").tempdir()?;
    println!("== kernel probe");
    let features = rootfs::probe(dir.path())?;
    println!(
        "kernel {}: {}; `auto` means {}",
        features.kernel,
        features.tier(),
        features.resolve(Strategy::Auto)?
    );

    println!("\n== host ID ranges (allocator state in a private dir for the demo)");
    let alloc = Allocator::open(AllocatorConfig {
        state_dir: dir.path().join("state"),
        ..AllocatorConfig::default()
    })?;
    let a = alloc.allocate("demo-container-a")?;
    let b = alloc.allocate("demo-container-b")?;
    for (owner, r) in [("demo-container-a", a), ("demo-container-b", b)] {
        println!(
            "{owner}: container 0..{} -> host {}..{}",
            r.size,
            r.base,
            r.end() - 1
        );
    }
    println!("overlap: {}", a.overlaps(&b));

    println!("\n== a 50-layer image, built for demo-container-a by each strategy");
    let img = rootfs::synthetic::create(&dir.path().join("image"), 50)?;
    let ns = UserNamespace::for_range(a)?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch)?;
    let rows = measure(&img, &features, &ns, a, &scratch, 5)?;
    print_rows(&rows);
    println!(
        "(host /proc/self/mountinfo lines added while each rootfs is held: {:?})",
        rows.iter()
            .map(|r| r.mountinfo_lines_added)
            .collect::<Vec<_>>()
    );

    let auto = features.resolve(Strategy::Auto)?;
    println!("\n== what the container sees ({auto} strategy, what `auto` means here)");
    let plan = rootfs::plan(std::slice::from_ref(&img.mount), Path::new("/"))?;
    let root = rootfs::build(
        &plan,
        &BuildOptions {
            strategy: auto,
            features: &features,
            idmap: Some(Idmap {
                userns: ns.fd(),
                root_uid: a.base,
                root_gid: a.base,
            }),
            scratch_dir: &scratch,
        },
    )?;
    let host = rustix::fs::statat(root.mount.as_fd(), "top", rustix::fs::AtFlags::empty())?;
    let mut cmd = std::process::Command::new("stat");
    cmd.args(["-c", "%u:%g", "/proc/self/fd/0/top"])
        .stdin(std::process::Stdio::from(root.mount.try_clone()?));
    userns::join_before_exec(&mut cmd, &ns, None)?;
    let out = cmd.output()?;
    println!(
        "/top: owner {}:{} seen from the host, {} seen from inside the container's user namespace; on disk 0:0",
        host.st_uid,
        host.st_gid,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    drop(root);
    alloc.release("demo-container-a")?;
    alloc.release("demo-container-b")?;
    println!(
        "\nreleased both ranges; live ranges now: {}",
        alloc.live()?.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("rootfs") => bench_rootfs(&args[1..]),
        Some("storm") if args[1..].iter().any(|a| a == "-h" || a == "--help") => {
            println!("usage: {}", storm::usage());
            return ExitCode::SUCCESS;
        }
        Some("stress") if args[1..].iter().any(|a| a == "-h" || a == "--help") => {
            println!("usage: {}", stress::usage());
            return ExitCode::SUCCESS;
        }
        Some(sub @ ("storm" | "stress")) => {
            let r = match (std::env::var_os(WORKER_ENV).is_some(), sub) {
                (true, "storm") => storm_worker(&args[1..]),
                (true, _) => stress_worker(&args[1..]),
                (false, _) => storm_supervise(sub, &args[1..]),
            };
            return match r {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("idshift-bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idshift-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
