//! A rootfs the caller mounted itself (what Docker and `ctr run --rootfs`
//! send: `root.path`, no rootfs mounts), under a real containerd 1.6 (root
//! needed): an overlay is rebuilt from its layers in the mount table
//! (idmapped, constant cost) and left as it was; a directory under a
//! *shared* mount (Docker binds its data-root onto itself as shared) runs,
//! and a Create that fails after the container's mounts (the shim's
//! test-only `IDSHIFT_TEST_FAIL=mounts`) leaves no mount in any mount
//! namespace.

use idshift_tests::{
    busybox_rootfs, host_mountinfo, unique, Containerd, ContainerdOptions, IDSHIFT_RUNTIME as RT,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NS: &str = "premounted";
const APPLETS: &[&str] = &["sh", "cat", "echo", "id", "ls", "grep", "wc"];

/// A directory of the test's own with the mounts it made: unmounted
/// (innermost first) and removed on drop, also when the test panics.
struct Scratch {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = PathBuf::from("/var/tmp").join(unique("idshift-premounted"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch {
            dir,
            mounts: Vec::new(),
        }
    }

    fn mount(&mut self, args: &[&str], target: &Path) {
        let out = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount {args:?} {}: {out:?}",
            target.display()
        );
        self.mounts.push(target.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lines of every process's mount table that name `needle`, with the pid.
fn mounts_anywhere(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(t) = std::fs::read_to_string(e.path().join("mountinfo")) else {
            continue;
        };
        found.extend(
            t.lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("pid {pid}: {l}")),
        );
    }
    found
}

/// An overlay mounted by the caller (two layers, upper, work; a space in
/// its path, escaped in mountinfo): idshift builds its own overlay of the
/// same layers in the container's user namespace with 4 mount syscalls,
/// what the container writes lands in the caller's upper dir with the
/// container's host IDs, and the caller's mount is untouched. A directory
/// inside that overlay is refused, naming the overlay.
#[test]
fn caller_overlay_is_rebuilt_from_its_layers() {
    let mut s = Scratch::new();
    let base = s.dir.join("my layers");
    let lower1 = busybox_rootfs(&base, APPLETS).expect("busybox layer");
    let lower2 = base.join("layer2");
    std::fs::create_dir_all(&lower2).expect("layer2");
    std::fs::write(lower2.join("from-layer2"), "two\n").expect("layer2 file");
    let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).expect("dirs");
    }
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        lower2.display(),
        lower1.display(),
        upper.display(),
        work.display()
    );
    s.mount(&["-t", "overlay", "overlay", "-o", &opts], &merged);
    let line_of = |p: &Path| {
        let esc = p.display().to_string().replace(' ', "\\040");
        host_mountinfo()
            .into_iter()
            .find(|l| l.split(' ').nth(4) == Some(esc.as_str()))
    };
    let before = line_of(&merged).expect("the caller's overlay is mounted");

    let c = Containerd::start(ContainerdOptions::idshift("")).expect("containerd");
    let script = "cat /proc/self/uid_map; cat /from-layer2; echo written > /new; id -u";
    let spec = c.oci_spec(NS, &merged, script);
    let (id, out) = c.run_spec(NS, RT, "pre", &spec);
    assert!(out.success(), "run: {out:?}\n{}", c.log_tail(40));
    let map: Vec<u64> = out
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "uid_map: {out:?}");
    assert_eq!(map[0], 0);
    assert_ne!(map[1], 0, "its own user namespace over a range: {out:?}");
    assert!(
        out.stdout.contains("two\n") && out.stdout.ends_with("0\n"),
        "{out:?}"
    );
    // The write is in the caller's upper dir, owned by the container's
    // root's host ID.
    let st = std::fs::metadata(upper.join("new")).expect("written to the caller's upper dir");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&st),
        u32::try_from(map[1]).expect("u32")
    );
    let log = c.log();
    let created = log
        .lines()
        .find(|l| l.contains(&format!("created {id}")))
        .unwrap_or_else(|| panic!("no create line for {id}:\n{}", c.log_tail(40)));
    assert!(
        log.contains("is an overlay the caller mounted") && created.contains("4 mount syscalls"),
        "{created}"
    );
    assert_eq!(
        line_of(&merged).as_deref(),
        Some(before.as_str()),
        "caller's mount untouched"
    );
    c.assert_no_leaks(Duration::from_secs(10));

    // A subdirectory of the overlay is refused, naming it.
    let sub = merged.join("bin");
    let (_, out) = c.run_spec(NS, RT, "sub", &c.oci_spec(NS, &sub, "true"));
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("is not its root") && out.stderr.contains("my layers/merged"),
        "{out:?}"
    );
    c.assert_no_leaks(Duration::from_secs(10));
    assert_eq!(line_of(&merged).as_deref(), Some(before.as_str()));
}

/// A rootfs directory under a shared mount (as under Docker's data-root):
/// the container runs (pivot_root accepts the private clone), and a Create
/// forced to fail after the container's mounts leaves no mount under it in
/// any mount namespace, nor anything else.
#[test]
fn shared_rootfs_never_propagates() {
    let mut s = Scratch::new();
    let shared = s.dir.join("shared");
    std::fs::create_dir_all(&shared).expect("dir");
    let src = shared.display().to_string();
    s.mount(&["--bind", &src], &shared);
    let out = Command::new("mount")
        .args(["--make-shared", &src])
        .output()
        .expect("mount --make-shared");
    assert!(out.status.success(), "{out:?}");
    let rootfs = busybox_rootfs(&shared, APPLETS).expect("rootfs");
    let needle = rootfs.display().to_string();

    // A container runs on it, and nothing of it shows anywhere after.
    let c = Containerd::start(ContainerdOptions::idshift("")).expect("containerd");
    let (_, out) = c.run_spec(
        NS,
        RT,
        "shared",
        &c.oci_spec(NS, &rootfs, "grep -c . /proc/self/mountinfo"),
    );
    assert!(
        out.success(),
        "run on a shared rootfs: {out:?}\n{}",
        c.log_tail(40)
    );
    assert_eq!(mounts_anywhere(&needle), Vec::<String>::new());
    c.assert_no_leaks(Duration::from_secs(10));
    drop(c);

    // A Create that fails after every spec mount is made.
    let mut opts = ContainerdOptions::idshift("");
    opts.env = vec![("IDSHIFT_TEST_FAIL".into(), "mounts".into())];
    let c = Containerd::start(opts).expect("containerd");
    let (_, out) = c.run_spec(NS, RT, "fail", &c.oci_spec(NS, &rootfs, "true"));
    assert!(!out.success(), "the forced failure: {out:?}");
    assert!(out.stderr.contains("IDSHIFT_TEST_FAIL=mounts"), "{out:?}");
    assert_eq!(
        mounts_anywhere(&needle),
        Vec::<String>::new(),
        "mounts of the failed container under its shared rootfs"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}
