//! containerd-shim-idshift-v2: a containerd shim v2 that is also the container
//! runtime. For now: `--version` and `--features`.

use rootfs::{KernelFeatures, Strategy};
use std::path::PathBuf;
use std::process::ExitCode;

const NAME: &str = "containerd-shim-idshift-v2";
const DEFAULT_SCRATCH: &str = "/var/lib/idshift";

fn usage() -> String {
    format!(
        "usage: {NAME} --version\n       {NAME} --features [--scratch DIR]\n\n\
         --features probes what the running kernel's mount API supports (in a\n\
         temporary directory under DIR, default {DEFAULT_SCRATCH}, which should be\n\
         on the filesystem holding the image layers) and prints the rootfs\n\
         strategy `auto` chooses."
    )
}

fn print_features(f: &KernelFeatures) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel:                         {}", f.kernel);
    println!("new mount API:                  {}", yes(f.mount_api));
    println!("overlayfs:                      {}", yes(f.overlay));
    println!("idmapped mounts:                {}", yes(f.idmapped_mounts));
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
        Some("--help") | Some("-h") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}
