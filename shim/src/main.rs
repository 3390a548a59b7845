//! containerd-shim-idshift-v2: a containerd shim v2 that is also the container
//! runtime. containerd runs it as `start`, `delete` and (to serve) with
//! `-socket`; it runs itself as `init` for every container process; people
//! run `--version` and `--features`.

mod cgroup;
mod channel;
mod config;
mod container;
mod containerd_api;
mod faultpoint;
mod gc;
mod hooks;
mod host;
mod init;
mod lifecycle;
mod logger;
mod metrics;
mod mounts;
mod process;
mod seccomp;
mod service;
mod shim;
mod stdio;
mod sys;

use rootfs::{KernelFeatures, Strategy};
use std::path::PathBuf;
use std::process::ExitCode;

const NAME: &str = "containerd-shim-idshift-v2";
const DEFAULT_SCRATCH: &str = "/var/lib/idshift";
/// How long an idle thread of the async runtime's blocking pool stays.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

fn usage() -> String {
    format!(
        "usage: {NAME} --version\n       {NAME} --features [--scratch DIR]\n\n\
         --features probes what the running kernel's mount API supports (in a\n\
         temporary directory under DIR, default {DEFAULT_SCRATCH}, which should be\n\
         on the filesystem holding the image layers) and prints the rootfs\n\
         strategy `auto` chooses.\n\n       {NAME} {}",
        gc::USAGE
    )
}

fn print_features(f: &KernelFeatures) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel:                         {}", f.kernel);
    println!("new mount API:                  {}", yes(f.mount_api));
    println!("overlayfs:                      {}", yes(f.overlay));
    println!("idmapped mounts:                {}", yes(f.idmapped_mounts));
    println!("overlay legacy lowerdir=:       {}", yes(f.legacy_lowerdir));
    println!("overlay lowerdir+ (path):       {}", yes(f.lowerdir_plus));
    println!("overlay layers as fds:          {}", yes(f.layer_fds));
    println!(
        "layer fds from detached tree:   {}",
        yes(f.detached_layer_fds)
    );
    println!("overlay upper/work as fds:      {}", yes(f.upper_fds));
    println!("tier:                           {}", f.tier());
    match f.resolve(Strategy::Auto) {
        Ok(s) => println!("rootfs strategy (auto):         {s}"),
        Err(e) => println!("rootfs strategy (auto):         none: {e}"),
    }
    for note in &f.notes {
        println!("note: {note}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-v") => {
            println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--features") => {
            let scratch = match &args[1..] {
                [] => PathBuf::from(DEFAULT_SCRATCH),
                [flag, dir] if flag == "--scratch" => PathBuf::from(dir),
                _ => {
                    eprintln!("{}", usage());
                    return ExitCode::from(2);
                }
            };
            match rootfs::probe(&scratch) {
                Ok(f) => {
                    print_features(&f);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{NAME}: probing the kernel in {}: {e}", scratch.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some("init") => init::main(),
        Some("gc") => gc::main(&args[1..]),
        Some("hooks") => hooks::helper_main(),
        Some("-info") => info(),
        Some("--help") | Some("-h") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Some(_) => serve(),
        None => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}

/// `-info` (containerd 2.x): the runtime's name, version and OCI features as
/// a `RuntimeInfo` protobuf on stdout. Standard input (runtime options) is
/// read and not needed.
fn info() -> ExitCode {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::protobuf::{Message, MessageField};
    use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
    use std::io::{Read, Write};
    let mut ignored = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut ignored);
    let features = features();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").into();
    let mut f = Any::new();
    f.type_url = "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into();
    f.value = features.to_string().into_bytes();
    let mut info = RuntimeInfo::new();
    info.name = "io.containerd.idshift.v2".into();
    info.version = MessageField::some(version);
    info.features = MessageField::some(f);
    match info.write_to_bytes() {
        Ok(bytes) if std::io::stdout().write_all(&bytes).is_ok() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The OCI runtime features (runc's `features` JSON shape): what this shim
/// really applies. CRI clients read `mountOptions` (e.g. for `rro`).
fn features() -> serde_json::Value {
    let mut caps: Vec<String> = caps::all().iter().map(ToString::to_string).collect();
    caps.sort();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mounts::KNOWN_OPTIONS.as_slice(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": true},
            "seccomp": {
                "enabled": true,
                "actions": seccomp::ACTIONS,
                "operators": seccomp::OPERATORS,
                "knownFlags": seccomp::FLAGS,
                "supportedFlags": seccomp::FLAGS,
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}},
        },
        "annotations": {"io.github.idshift.rootfs": "idmapped overlay, constant cost in layers"},
    })
}

/// containerd's verbs (`start`, `delete`, serving with `-socket`).
fn serve() -> ExitCode {
    // One thread serves the task API (containerd's requests to one shim are
    // few, and every blocking step runs on the blocking pool, whose idle
    // threads leave after a second); one malloc arena for all threads.
    // Both keep a running shim small (issue 16).
    sys::one_malloc_arena();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        // A shim polls a handful of fds: 64 events a tick, not 1024 (a
        // 12 KiB buffer).
        .max_io_events_per_tick(64)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The serving shim logs through our own logger (one write a line); the
    // level is the config's once Create has read it (service.rs).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if logger::is_serving(&args) {
        let level = if args.iter().any(|a| a == "-debug") {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        };
        // As containerd-shim's own logger: no log fifo, no serving.
        if let Err(e) = logger::LineLogger::install(level) {
            eprintln!("{NAME}: {e}");
            return ExitCode::FAILURE;
        }
        // The first Create comes in a few ms: the wait of its cgroup move
        // can start now (cgroup/warm.rs).
        match cgroup::Hierarchy::detect() {
            Ok(h) => cgroup::start_grace_period(&h),
            Err(e) => log::debug!("no head start for the cgroup move: {e}"),
        }
    }
    let config = containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    };
    rt.block_on(containerd_shim::asynchronous::run::<shim::IdshiftShim>(
        "io.containerd.idshift.v2",
        Some(config),
    ));
    ExitCode::SUCCESS
}
