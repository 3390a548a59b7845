//! `make demo`: a private containerd running idshift containers side by side.

use idshift_harness::{host_mountinfo, Containerd};
use std::time::Instant;

type Error = idshift_harness::Error;

const NS: &str = "demo";
const RT: &str = "--runtime=io.containerd.idshift.v2";

fn step(s: &str) {
    println!("\n== {s}");
}

fn ctr_ok(c: &Containerd, args: &[&str]) -> Result<String, Error> {
    let out = c.ctr(NS, args);
    if out.code != Some(0) {
        return Err(format!("ctr {}: {}{}", args.join(" "), out.stdout, out.stderr).into());
    }
    Ok(out.stdout)
}

fn main() {
    if let Err(e) = demo() {
        eprintln!("idshift-demo: {e}");
        std::process::exit(1);
    }
}

fn demo() -> Result<(), Error> {
    step("a private containerd with idshift first on its PATH");
    let c = Containerd::start("")?;
    println!(
        "containerd at {} (state, root and idshift dirs inside)",
        c.base().display()
    );

    step("building and importing two local images (busybox-static; 1 and 60 layers)");
    let t = Instant::now();
    c.import_image(NS, "docker.io/library/idshift-demo:1", 1)?;
    c.import_image(NS, "docker.io/library/idshift-demo:60", 60)?;
    println!("imported in {:.1} s", t.elapsed().as_secs_f64());

    step("two containers side by side, each in its own user namespace");
    for id in ["demo-a", "demo-b"] {
        ctr_ok(
            &c,
            &[
                "run",
                "-d",
                RT,
                "docker.io/library/idshift-demo:1",
                id,
                "sleep",
                "1000",
            ],
        )?;
    }
    for id in ["demo-a", "demo-b"] {
        let out = ctr_ok(&c, &["task", "exec", "--exec-id", "show", id, "/bin/sh", "-c",
            "echo \"id: $(id)\"; echo \"uid_map: $(cat /proc/self/uid_map | tr -s ' ')\"; echo \"/bin/busybox owner: $(stat -c %u:%g /bin/busybox)\""])?;
        println!("{id}:");
        for l in out.lines() {
            println!("    {l}");
        }
    }

    step("a 60-layer image: constant-cost idmapped rootfs, host mount table untouched");
    let before = host_mountinfo().len();
    let t = Instant::now();
    ctr_ok(
        &c,
        &[
            "run",
            "-d",
            RT,
            "docker.io/library/idshift-demo:60",
            "demo-60",
            "sleep",
            "1000",
        ],
    )?;
    println!("started in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let out = ctr_ok(
        &c,
        &[
            "task",
            "exec",
            "--exec-id",
            "show",
            "demo-60",
            "cat",
            "/layers/60",
            "/layers/2",
        ],
    )?;
    print!("inside: {out}");
    let during = host_mountinfo().len();
    println!(
        "host /proc/self/mountinfo: {before} lines before, {during} with 3 containers running"
    );
    if let Some(line) = c.log().lines().find(|l| l.contains("created demo-60")) {
        let msg = line
            .split("msg=\"")
            .nth(1)
            .unwrap_or(line)
            .trim_end_matches('"');
        println!("shim log: {}", msg.replace("\\\"", "\""));
    }

    step("stopping and deleting everything");
    c.kill_and_remove(NS, &["demo-a", "demo-b", "demo-60"])?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let leaks = c.leaks();
    println!(
        "left behind: {}",
        if leaks.is_empty() {
            "nothing (no mount, process, ID range or run dir)".to_string()
        } else {
            format!("{leaks:?}")
        }
    );
    drop(c);
    println!("private containerd stopped and removed");
    Ok(())
}
