//! Docker Engine as idshift's client (root needed): Debian sid's docker.io
//! and containerd 2.x in private prefixes (`scripts/debian-debs.sh`), a
//! private dockerd per test with README's daemon.json snippet, images
//! loaded with `docker load` from locally built OCI archives. Every check
//! runs under `--runtime io.containerd.idshift.v2` and under runc in the
//! same run and must behave the same; idshift's containers each get their
//! own user namespace over their own range and the constant-cost rootfs
//! (mount syscalls from the shim's log), and nothing is left after.
//!
//! Docker's defaults are kept: its `net.ipv4.ping_group_range=0 2147483647`
//! (groups outside a container's 65536-ID user namespace) is translated
//! through the container's mappings.

use idshift_tests::{CtrOutput, Docker, DockerOptions};
use std::path::Path;
use std::time::Duration;

const IDSHIFT: &str = "io.containerd.idshift.v2";
const RUNC: &str = "runc";
const IMG: &str = "idshift-busybox:1";
const IMG60: &str = "idshift-busybox:60";

fn start(containerd_snapshotter: bool) -> Docker {
    let d = Docker::start(DockerOptions {
        containerd_snapshotter,
        ..Default::default()
    })
    .expect("start containerd and dockerd");
    d.load_image(&format!("docker.io/library/{IMG}"), 1)
        .expect("load the 1-layer image");
    d.load_image(&format!("docker.io/library/{IMG60}"), 60)
        .expect("load the 60-layer image");
    d
}

/// `docker run --rm --runtime rt <extra> image cmd...`.
fn run_args<'a>(rt: &'a str, extra: &[&'a str], image: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["run", "--rm", "--runtime", rt];
    a.extend_from_slice(extra);
    a.push(image);
    a.extend_from_slice(cmd);
    a
}

/// Runs `f` under idshift then runc; both must give the same exit code,
/// stdout and stderr. Returns idshift's.
fn same(d: &Docker, what: &str, f: impl Fn(&str) -> CtrOutput) -> CtrOutput {
    let ours = f(IDSHIFT);
    let runc = f(RUNC);
    assert_eq!(
        (ours.code, &ours.stdout, &ours.stderr),
        (runc.code, &runc.stdout, &runc.stderr),
        "{what}: idshift (left) and runc (right) differ\n{}",
        d.log_tail("containerd.log", 40)
    );
    ours
}

/// The (inside, outside, count) triples of a uid_map.
fn uid_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

/// idshift's create line in the shim's log (containerd's log) for container
/// `id`. containerd copies the shim's log to its own asynchronously: waited
/// for (10 s at most).
fn create_line(d: &Docker, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.containerd_log();
        if let Some(l) = log.lines().find(|l| l.contains(&format!("created {id}"))) {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no create line for {id} in {}:\n{}",
            d.base().join("containerd.log").display(),
            d.log_tail("containerd.log", 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn docker_ok(d: &Docker, args: &[&str]) -> String {
    let out = d.docker(args);
    assert!(
        out.success(),
        "docker {args:?}: {out:?}\n{}",
        d.log_tail("containerd.log", 30)
    );
    out.stdout.trim().to_string()
}

/// Every check; `deep` is the many-layer image idshift must run as runc
/// does, with its layer count.
fn checks(d: &Docker, deep: (&str, usize)) {
    // Run, exit code, stdout and stderr.
    same(d, "exit code", |rt| {
        d.docker(&run_args(
            rt,
            &[],
            IMG,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
        ))
    });
    // stdin.
    let out = same(d, "stdin", |rt| {
        d.docker_stdin(&run_args(rt, &["-i"], IMG, &["cat"]), "hello\nworld\n")
    });
    assert_eq!(out.stdout, "hello\nworld\n");
    // -t.
    let out = same(d, "-t", |rt| {
        d.docker_tty(&run_args(
            rt,
            &["-t"],
            IMG,
            &["sh", "-c", "test -t 1 && echo tty-ok"],
        ))
    });
    assert!(out.stdout.contains("tty-ok"), "{out:?}");

    // Each idshift container in its own user namespace over its own range;
    // runc's in the host's.
    let runc_map = docker_ok(d, &run_args(RUNC, &[], IMG, &["cat", "/proc/self/uid_map"]));
    assert_eq!(uid_map(&runc_map), vec![(0, 0, 4294967295)]);
    let script =
        "trap 'echo got-term; exit 7' TERM; echo started; while :; do sleep 1 & wait $!; done";
    let mut detached = Vec::new();
    for rt in [IDSHIFT, IDSHIFT, RUNC] {
        let id = docker_ok(d, &["run", "-d", "--runtime", rt, IMG, "sh", "-c", script]);
        detached.push((rt, id));
    }
    let mut ranges = Vec::new();
    for (rt, id) in &detached {
        if *rt != IDSHIFT {
            continue;
        }
        let m = uid_map(&docker_ok(d, &["exec", id, "cat", "/proc/self/uid_map"]));
        assert_eq!(m.len(), 1, "{m:?}");
        let (inside, outside, count) = m[0];
        assert!(inside == 0 && outside != 0 && count == 65536, "{m:?}");
        let line = create_line(d, id);
        assert!(line.contains("fd strategy, 4 mount syscalls"), "{line}");
        ranges.push((outside, outside + count));
    }
    assert!(
        ranges[0].1 <= ranges[1].0 || ranges[1].1 <= ranges[0].0,
        "overlapping ranges {ranges:?}"
    );
    // exec, exec -i, exec -it, stop (the TERM handler's exit code), logs.
    let by_rt = |rt: &str| -> String {
        detached
            .iter()
            .rev()
            .find(|(r, _)| *r == rt)
            .map(|(_, id)| id.clone())
            .unwrap_or_default()
    };
    same(d, "exec", |rt| {
        d.docker(&["exec", &by_rt(rt), "sh", "-c", "echo exec-ok; exit 4"])
    });
    let out = same(d, "exec -i", |rt| {
        d.docker_stdin(&["exec", "-i", &by_rt(rt), "cat"], "piped\n")
    });
    assert_eq!(out.stdout, "piped\n");
    let out = same(d, "exec -it", |rt| {
        d.docker_tty(&[
            "exec",
            "-it",
            &by_rt(rt),
            "sh",
            "-c",
            "test -t 0 && echo exec-tty",
        ])
    });
    assert!(out.stdout.contains("exec-tty"), "{out:?}");
    // No host mount table line for any idshift container's rootfs.
    let run_dir = d.base().join("idshift-run").display().to_string();
    let host: Vec<String> = idshift_tests::host_mountinfo()
        .into_iter()
        .filter(|l| l.contains(&run_dir))
        .collect();
    assert!(host.is_empty(), "{host:#?}");
    for (_, id) in &detached {
        docker_ok(d, &["stop", id]);
    }
    let code = same(d, "stop", |rt| {
        d.docker(&["inspect", "--format", "{{.State.ExitCode}}", &by_rt(rt)])
    });
    assert_eq!(code.stdout.trim(), "7");
    let logs = same(d, "logs", |rt| d.docker(&["logs", &by_rt(rt)]));
    assert_eq!(logs.stdout, "started\ngot-term\n");
    for (_, id) in &detached {
        docker_ok(d, &["rm", id]);
    }

    // -v, read-write and read-only, of a root-only host directory: under
    // idshift (binds idmapped by default) as under runc, its files are
    // root's inside and what the container's root writes is host root's.
    let host = d.base().join("volume");
    std::fs::create_dir_all(&host).expect("volume dir");
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    std::fs::write(host.join("in"), "host-file\n").expect("volume file");
    std::fs::set_permissions(
        host.join("in"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod file");
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/data:ro", host.display());
    let out = same(d, "-v rw", |rt| {
        let out = d.docker(&run_args(
            rt,
            &["-v", &rw],
            IMG,
            &[
                "sh",
                "-c",
                "stat -c %u:%g:%a /data/in; cat /data/in; echo new > /data/out && cat /data/out",
            ],
        ));
        assert_eq!(
            std::fs::read_to_string(host.join("out")).ok().as_deref(),
            Some("new\n"),
            "{rt}: written through the bind"
        );
        let owner = std::fs::metadata(host.join("out")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.uid(), m.gid())
        });
        assert_eq!(owner.ok(), Some((0, 0)), "{rt}: written as host root");
        let _ = std::fs::remove_file(host.join("out"));
        out
    });
    assert_eq!(out.stdout, "0:0:600\nhost-file\nnew\n");
    let out = same(d, "-v ro", |rt| {
        d.docker(&run_args(
            rt,
            &["-v", &ro],
            IMG,
            &[
                "sh",
                "-c",
                "cat /data/in; echo x > /data/out 2>/dev/null || echo refused",
            ],
        ))
    });
    assert_eq!(out.stdout, "host-file\nrefused\n");
    assert!(!host.join("out").exists());

    // --cap-drop ALL: no capability in any set, as under runc.
    let out = same(d, "--cap-drop ALL", |rt| {
        d.docker(&run_args(
            rt,
            &["--cap-drop", "ALL"],
            IMG,
            &["grep", "^Cap", "/proc/self/status"],
        ))
    });
    assert!(
        out.stdout.contains("CapBnd:\t0000000000000000")
            && out.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        out.stdout
    );
    // --device: the host's node (type, numbers, mode) at the path asked for.
    let out = same(d, "--device", |rt| {
        d.docker(&run_args(
            rt,
            &["--device", "/dev/null:/dev/xnull"],
            IMG,
            &[
                "sh",
                "-c",
                "stat -c '%F %t:%T' /dev/xnull; echo data > /dev/xnull && echo written",
            ],
        ))
    });
    assert_eq!(out.stdout, "character special file 1:3\nwritten\n");

    // What the container writes lands in Docker's upper dir: `docker diff`
    // sees it.
    let out = same(d, "docker diff", |rt| {
        let name = idshift_tests::unique("diff");
        let run = d.docker(&[
            "run",
            "--name",
            &name,
            "--runtime",
            rt,
            IMG,
            "sh",
            "-c",
            "echo a > /newfile; rm /etc/group",
        ]);
        assert!(run.success(), "{rt}: {run:?}");
        let mut diff = d.docker(&["diff", &name]);
        docker_ok(d, &["rm", &name]);
        // Docker lists the changes in no fixed order.
        let mut lines: Vec<&str> = diff.stdout.lines().collect();
        lines.sort_unstable();
        diff.stdout = lines.join("\n");
        diff
    });
    assert!(
        out.stdout.contains("A /newfile") && out.stdout.contains("D /etc/group"),
        "{out:?}"
    );

    // Many layers: the same files, and idshift's rootfs still costs 4 mount
    // syscalls.
    let (deep_img, layers) = deep;
    let script = format!("cat /layers/* | wc -l; cat /layers/{layers}");
    let out = same(d, "many layers", |rt| {
        let name = idshift_tests::unique("layers");
        let out = d.docker(&[
            "run",
            "--name",
            &name,
            "--runtime",
            rt,
            deep_img,
            "sh",
            "-c",
            &script,
        ]);
        if rt == IDSHIFT {
            let id = docker_ok(d, &["inspect", "--format", "{{.Id}}", &name]);
            let line = create_line(d, &id);
            assert!(line.contains("fd strategy, 4 mount syscalls"), "{line}");
        }
        docker_ok(d, &["rm", &name]);
        out
    });
    assert_eq!(out.stdout, format!("{}\nlayer {layers}\n", layers - 1));

    // Opting out per container: the host's user namespace; an unknown
    // value is refused, naming it.
    let host_map = docker_ok(
        d,
        &run_args(
            "idshift",
            &["--annotation", "io.idshift.userns=host"],
            IMG,
            &["cat", "/proc/self/uid_map"],
        ),
    );
    assert_eq!(uid_map(&host_map), vec![(0, 0, 4294967295)]);
    let bad = d.docker(&run_args(
        IDSHIFT,
        &["--annotation", "io.idshift.userns=bogus"],
        IMG,
        &["true"],
    ));
    assert!(!bad.success(), "{bad:?}");
    assert!(
        bad.stderr
            .contains("annotation io.idshift.userns=\"bogus\" is not understood"),
        "{bad:?}"
    );

    d.assert_no_leaks(Duration::from_secs(20));
}

/// Docker's default storage, the overlay2 graph driver.
#[test]
fn docker_overlay2() {
    let d = start(false);
    checks(&d, (IMG60, 60));
    assert!(Path::new(&d.install().dockerd).exists());
}

/// Docker's containerd-snapshotter image store (a 60-layer image there is
/// mounted by containerd's helper with lowerdirs relative to its snapshots
/// directory, as the options exceed a page).
#[test]
fn docker_containerd_snapshotter() {
    let d = start(true);
    checks(&d, (IMG60, 60));
}
