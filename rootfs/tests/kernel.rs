//! Rootfs strategies against the real kernel (root needed).
//!
//! Tests that count mount-table lines hold `MOUNTS` so that no other test of
//! this binary attaches a temporary mount meanwhile.

use rootfs::synthetic::{self, SyntheticImage};
use rootfs::{
    build, build_with, plan, BuildOptions, Idmap, KernelFeatures, KernelSys, MountAttrFlags,
    MountFlags, MountOps, MountSys, RootfsError, RootfsPlan, Strategy,
};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use userns::{IdRange, UserNamespace};

static MOUNTS: Mutex<()> = Mutex::new(());

fn mounts_lock() -> MutexGuard<'static, ()> {
    // The probe attaches mounts briefly, under this lock: run it first, so
    // that no thread holding the lock ever waits for it.
    features();
    MOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn mountinfo_lines() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .count()
}

fn mountinfo_mentions(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn features() -> &'static KernelFeatures {
    static F: OnceLock<KernelFeatures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let _guard = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        rootfs::probe(dir.path()).expect("kernel probe")
    })
}

/// What `auto` means on this kernel: tests that are about something else than
/// one strategy use it, so that they run on every kernel of the VM matrix.
fn best() -> Strategy {
    features()
        .resolve(Strategy::Auto)
        .unwrap_or_else(|e| panic!("no strategy works on this kernel: {e}"))
}

/// Whether this kernel runs `strategy`; when not, forcing it must be refused
/// up front with an error saying so (never a silent fall back).
fn kernel_runs(strategy: Strategy) -> bool {
    match features().resolve(strategy) {
        Ok(s) => {
            assert_eq!(s, strategy, "a forced strategy must not be replaced");
            true
        }
        Err(e) => {
            assert!(
                matches!(e, RootfsError::Unsupported { .. }),
                "{strategy}: {e}"
            );
            assert!(
                e.to_string().contains("not supported by this kernel"),
                "{e}"
            );
            eprintln!("{strategy} skipped on {}: {e}", features().kernel);
            false
        }
    }
}

/// A test's private world: a synthetic image, a scratch dir and a user
/// namespace over a range of its own.
struct World {
    _dir: tempfile::TempDir,
    image: SyntheticImage,
    scratch: PathBuf,
    ns: UserNamespace,
    range: IdRange,
}

impl World {
    fn new(layers: usize, range_slot: u32) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = synthetic::create(&dir.path().join("img"), layers).expect("synthetic image");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).expect("scratch dir");
        let range = IdRange {
            base: 0x7100_0000 + range_slot * 0x10000,
            size: 0x10000,
        };
        let ns = UserNamespace::for_range(range).expect("user namespace");
        World {
            _dir: dir,
            image,
            scratch,
            ns,
            range,
        }
    }

    fn plan(&self) -> RootfsPlan {
        plan(std::slice::from_ref(&self.image.mount), Path::new("/")).expect("plan")
    }

    fn opts<'a>(&'a self, strategy: Strategy, features: &'a KernelFeatures) -> BuildOptions<'a> {
        BuildOptions {
            strategy,
            features,
            idmap: strategy.uses_userns().then(|| Idmap {
                userns: self.ns.fd(),
                root_uid: self.range.base,
                root_gid: self.range.base,
            }),
            scratch_dir: &self.scratch,
        }
    }

    fn scratch_is_empty(&self) -> bool {
        std::fs::read_dir(&self.scratch)
            .expect("read scratch")
            .next()
            .is_none()
    }
}

fn read_at(mnt: BorrowedFd<'_>, path: &str) -> io::Result<String> {
    let fd = rustix::fs::openat(
        mnt,
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut f = std::fs::File::from(fd);
    let mut s = String::new();
    io::Read::read_to_string(&mut f, &mut s)?;
    Ok(s)
}

fn exists_at(mnt: BorrowedFd<'_>, path: &str) -> bool {
    rustix::fs::statat(mnt, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// Runs `args` joined to `ns` with the rootfs as its stdin (so it can reach
/// it as /proc/self/fd/0 without any path on the host), returning stdout.
fn run_in_userns(
    ns: &UserNamespace,
    ids: Option<(u32, u32)>,
    mnt: BorrowedFd<'_>,
    args: &[&str],
) -> String {
    let stdin: OwnedFd = mnt.try_clone_to_owned().expect("dup mount fd");
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    userns::join_before_exec(&mut cmd, ns, ids).expect("join userns");
    let out = cmd.output().expect("spawn in userns");
    assert!(
        out.status.success(),
        "{args:?} in the user namespace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds `layers` layers with `strategy` and checks everything a container
/// would see, the counters and the host mount table.
fn check_strategy(strategy: Strategy, layers: usize, slot: u32) -> MountOps {
    let w = World::new(layers, slot);
    let plan = w.plan();
    let f = features();
    let guard = mounts_lock();
    let before = mountinfo_lines();
    let root = build(&plan, &w.opts(strategy, f)).unwrap_or_else(|e| {
        panic!("{strategy} with {layers} layers: {e}");
    });
    let held = mountinfo_lines();
    assert_eq!(
        held, before,
        "{strategy}: the host mount table changed while the rootfs is held"
    );
    assert!(w.scratch_is_empty(), "{strategy}: temporary dirs left");
    drop(guard);
    let mnt = root.mount.as_fd();

    // The merged view.
    assert_eq!(read_at(mnt, "top").expect("top"), format!("{layers}\n"));
    for i in [1, layers / 2 + 1, layers] {
        assert_eq!(
            read_at(mnt, &format!("layers/{i}")).expect("layer file"),
            format!("layer {i}\n")
        );
    }
    if layers >= 2 {
        assert!(!exists_at(mnt, "deleted/file"), "whiteout did not hide");
        assert!(!exists_at(mnt, "opaque/old"), "opaque dir did not hide");
        assert_eq!(read_at(mnt, "opaque/new").expect("opaque/new"), "new\n");
    } else {
        assert!(exists_at(mnt, "deleted/file"));
        assert!(exists_at(mnt, "opaque/old"));
    }

    // Ownership on the host side and from inside the user namespace.
    let st = rustix::fs::statat(mnt, "top", rustix::fs::AtFlags::empty()).expect("stat top");
    if strategy.uses_userns() {
        assert_eq!((st.st_uid, st.st_gid), (w.range.base, w.range.base));
        let inside = run_in_userns(
            &w.ns,
            None,
            mnt,
            &["stat", "-c", "%u:%g", "/proc/self/fd/0/top"],
        );
        assert_eq!(inside, "0:0", "{strategy}: ownership inside the userns");
        // A write by the container's root lands in upper with the shifted owner.
        let id = run_in_userns(
            &w.ns,
            Some((0, 0)),
            mnt,
            &[
                "sh",
                "-c",
                "touch /proc/self/fd/0/written && id -u && id -g",
            ],
        );
        assert_eq!(id, "0\n0", "{strategy}: not root inside");
        let up = std::fs::metadata(w.image.upper.join("written")).expect("written in upper");
        assert_eq!((up.uid(), up.gid()), (w.range.base, w.range.base));
        // Lower files are untouched on disk.
        let low = std::fs::metadata(w.image.lowers[0].join("top")).expect("lower top");
        assert_eq!((low.uid(), low.gid()), (0, 0));
    } else {
        assert_eq!((st.st_uid, st.st_gid), (0, 0));
    }
    assert_eq!(root.strategy, strategy);
    assert_eq!(root.layers, layers);
    root.ops
}

#[test]
fn fd_strategy_is_constant_and_invisible() {
    if !kernel_runs(Strategy::Fd) {
        return;
    }
    // 6.13-6.14 attach the idmapped tree once (move_mount + umount).
    let attached = u32::from(!features().detached_layer_fds);
    let mut totals = Vec::new();
    for (i, layers) in [1, 50, 200, 499].into_iter().enumerate() {
        let ops = check_strategy(Strategy::Fd, layers, i as u32);
        assert_eq!(ops.umount, attached, "{ops}");
        assert_eq!(ops.move_mount, attached, "{ops}");
        totals.push(ops.total());
    }
    assert!(
        totals.iter().all(|&t| t == totals[0]),
        "fd op count must not depend on layers: {totals:?}"
    );
    assert_eq!(
        totals[0],
        4 + 2 * attached,
        "open_tree + mount_setattr + fsopen + fsmount"
    );
}

#[test]
fn path_strategy_is_constant() {
    if !kernel_runs(Strategy::Path) {
        return;
    }
    // Legacy lowerdir= (before 6.7): mount(2) at a temporary point, open_tree
    // of it and its umount instead of fsopen + fsmount.
    let legacy = u32::from(!features().lowerdir_plus);
    let mut totals = Vec::new();
    for (i, layers) in [1, 50, 200].into_iter().enumerate() {
        let ops = check_strategy(Strategy::Path, layers, 10 + i as u32);
        totals.push(ops.total());
    }
    assert!(totals.iter().all(|&t| t == totals[0]), "{totals:?}");
    assert_eq!(
        totals[0],
        6 + legacy,
        "open_tree, mount_setattr, move_mount, fsopen, fsmount, umount"
    );
}

#[test]
fn per_layer_strategy_is_linear() {
    if !kernel_runs(Strategy::PerLayer) {
        return;
    }
    let legacy = u32::from(!features().lowerdir_plus);
    for (i, layers) in [1, 50, 200].into_iter().enumerate() {
        let ops = check_strategy(Strategy::PerLayer, layers, 20 + i as u32);
        let l = layers as u32;
        assert_eq!(
            (ops.open_tree, ops.mount_setattr, ops.move_mount, ops.umount),
            (l + legacy, l, l, l + legacy),
            "{ops}"
        );
        assert_eq!(ops.total(), 4 * l + 2 + legacy, "{ops}");
    }
}

#[test]
fn plain_strategy() {
    if !kernel_runs(Strategy::Plain) {
        return;
    }
    let f = features();
    let legacy = u32::from(!f.lowerdir_plus && !f.layer_fds);
    for (i, layers) in [1, 50, 200].into_iter().enumerate() {
        let ops = check_strategy(Strategy::Plain, layers, 30 + i as u32);
        assert_eq!(ops.total(), 2 + legacy, "fsopen + fsmount: {ops}");
    }
}

/// The older kernel tiers, forced on this kernel: 6.13-6.14 (`fd` attaching
/// the idmapped tree once), 6.7-6.12 (`lowerdir+` strings) and 5.19+ (legacy
/// relative `lowerdir=`).
#[test]
fn older_kernel_tiers_build_the_same_tree() {
    let real = features();
    let tiers = [
        (
            "6.13",
            Strategy::Fd,
            KernelFeatures {
                detached_layer_fds: false,
                ..real.clone()
            },
            6,
        ),
        (
            "6.7",
            Strategy::Path,
            KernelFeatures {
                layer_fds: false,
                detached_layer_fds: false,
                upper_fds: false,
                ..real.clone()
            },
            6,
        ),
        (
            "5.19",
            Strategy::Path,
            KernelFeatures {
                lowerdir_plus: false,
                layer_fds: false,
                detached_layer_fds: false,
                upper_fds: false,
                ..real.clone()
            },
            7,
        ),
    ];
    for (slot, (tier, strategy, f, want_ops)) in tiers.into_iter().enumerate() {
        let has = match tier {
            "6.13" => real.layer_fds,
            "6.7" => real.lowerdir_plus,
            _ => real.legacy_lowerdir,
        };
        if !has {
            eprintln!("tier {tier} skipped: kernel {} lacks it", real.kernel);
            continue;
        }
        for layers in [2, 60, 200] {
            let w = World::new(layers, 40 + slot as u32 * 4 + (layers % 4) as u32);
            let plan = w.plan();
            let guard = mounts_lock();
            let before = mountinfo_lines();
            let root = build(&plan, &w.opts(strategy, &f))
                .unwrap_or_else(|e| panic!("tier {tier}, {layers} layers: {e}"));
            assert_eq!(
                mountinfo_lines(),
                before,
                "tier {tier}: mount left attached"
            );
            drop(guard);
            assert!(w.scratch_is_empty(), "tier {tier}: temporary dirs left");
            assert_eq!(root.ops.total(), want_ops, "tier {tier}: {}", root.ops);
            let mnt = root.mount.as_fd();
            assert_eq!(read_at(mnt, "top").expect("top"), format!("{layers}\n"));
            assert!(!exists_at(mnt, "deleted/file"));
            assert_eq!(
                rustix::fs::statat(mnt, "top", rustix::fs::AtFlags::empty())
                    .expect("stat")
                    .st_uid,
                w.range.base
            );
        }
    }
}

#[test]
fn attach_places_the_rootfs_and_detach_removes_it() {
    let w = World::new(3, 50);
    let root = build(&w.plan(), &w.opts(best(), features())).expect("build");
    let target = w.scratch.join("rootfs");
    std::fs::create_dir(&target).expect("mkdir target");
    let _guard = mounts_lock();
    rootfs::attach_mount(root.mount.as_fd(), &target).expect("attach");
    let lines = mountinfo_mentions(&target);
    let detached = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" overlay "), "{lines:?}");
    detached.expect("detach");
    assert!(mountinfo_mentions(&target).is_empty());
}

#[test]
fn bind_rootfs_is_idmapped_with_two_syscalls() {
    let w = World::new(1, 51);
    let mount = rootfs::MountSpec {
        fstype: "bind".into(),
        source: w.image.lowers[0].display().to_string(),
        target: String::new(),
        options: vec!["rbind".into(), "ro".into()],
    };
    let plan = plan(&[mount], Path::new("/")).expect("plan");
    let root = build(&plan, &w.opts(best(), features())).expect("bind");
    assert_eq!(root.ops.total(), 2, "{}", root.ops);
    let mnt = root.mount.as_fd();
    let st = rustix::fs::statat(mnt, "top", rustix::fs::AtFlags::empty()).expect("stat");
    assert_eq!(st.st_uid, w.range.base);
    let err = rustix::fs::openat(
        mnt,
        "new",
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect_err("read-only bind");
    assert_eq!(err, rustix::io::Errno::ROFS);
}

#[test]
fn missing_layer_is_named_and_nothing_is_left() {
    for (i, strategy) in [
        Strategy::Fd,
        Strategy::Path,
        Strategy::PerLayer,
        Strategy::Plain,
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, s)| kernel_runs(*s))
    {
        let w = World::new(5, 60 + i as u32);
        std::fs::remove_dir_all(&w.image.lowers[2]).expect("remove a layer");
        let owner = std::fs::metadata(&w.image.upper).expect("upper").uid();
        let guard = mounts_lock();
        let before = mountinfo_lines();
        let err = build(&w.plan(), &w.opts(strategy, features())).expect_err("missing layer");
        assert_eq!(mountinfo_lines(), before, "{strategy}: mount leaked");
        drop(guard);
        let msg = err.to_string();
        assert!(
            msg.contains(&w.image.lowers[2].display().to_string()),
            "{strategy}: error does not name the layer: {msg}"
        );
        assert!(w.scratch_is_empty(), "{strategy}: temporary dirs left");
        assert_eq!(
            std::fs::metadata(&w.image.upper).expect("upper").uid(),
            owner,
            "{strategy}: the upper dir was given away by a refused build"
        );
    }
}

#[test]
fn too_many_layers_is_refused_before_any_syscall() {
    let w = World::new(1, 70);
    let mut lowers = Vec::new();
    for i in 0..501 {
        let d = w.scratch.join(format!("l{i}"));
        std::fs::create_dir(&d).expect("layer dir");
        lowers.push(d);
    }
    let plan = RootfsPlan::Overlay(rootfs::OverlayPlan {
        lowers,
        upper: None,
        work: None,
        params: Vec::new(),
        attrs: MountAttrFlags::empty(),
        idmap: None,
    });
    let sys = KernelSys::new();
    let err = build_with(&sys, &plan, &w.opts(best(), features())).expect_err("501");
    assert!(err.to_string().contains("501 layers"), "{err}");
    assert_eq!(sys.ops().total(), 0);
}

#[test]
fn strategy_and_userns_must_agree() {
    let w = World::new(2, 71);
    let f = features();
    let best = best();
    let mut opts = w.opts(best, f);
    opts.idmap = None;
    let err = build(&w.plan(), &opts).expect_err("idmapping strategy without userns");
    assert!(
        matches!(err, RootfsError::NeedsUserns { strategy } if strategy == best),
        "{err}"
    );
    let mut opts = w.opts(Strategy::Plain, f);
    opts.idmap = w.opts(best, f).idmap;
    let err = build(&w.plan(), &opts).expect_err("plain with userns");
    assert!(matches!(err, RootfsError::PlainWithUserns), "{err}");
}

/// A kernel that fails the `fail_at`-th call (counting every call but the
/// detaches that cleanup issues) with `errno`.
struct FaultySys {
    inner: KernelSys,
    calls: std::sync::atomic::AtomicUsize,
    fail_at: usize,
    errno: i32,
}

impl FaultySys {
    fn new(fail_at: usize, errno: i32) -> Self {
        FaultySys {
            inner: KernelSys::new(),
            calls: Default::default(),
            fail_at,
            errno,
        }
    }
    fn step(&self) -> io::Result<()> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == self.fail_at {
            Err(io::Error::from_raw_os_error(self.errno))
        } else {
            Ok(())
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl MountSys for FaultySys {
    fn ops(&self) -> MountOps {
        self.inner.ops()
    }
    fn clone_tree(&self, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
        self.step()?;
        self.inner.clone_tree(path, recursive)
    }
    fn setattr(
        &self,
        tree: BorrowedFd<'_>,
        attrs: MountAttrFlags,
        userns: Option<BorrowedFd<'_>>,
        recursive: bool,
    ) -> io::Result<()> {
        self.step()?;
        self.inner.setattr(tree, attrs, userns, recursive)
    }
    fn fsopen(&self, fstype: &str) -> io::Result<OwnedFd> {
        self.step()?;
        self.inner.fsopen(fstype)
    }
    fn fsconfig_string(&self, fs: BorrowedFd<'_>, key: &str, value: &OsStr) -> io::Result<()> {
        self.step()?;
        self.inner.fsconfig_string(fs, key, value)
    }
    fn fsconfig_flag(&self, fs: BorrowedFd<'_>, key: &str) -> io::Result<()> {
        self.step()?;
        self.inner.fsconfig_flag(fs, key)
    }
    fn fsconfig_fd(&self, fs: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.step()?;
        self.inner.fsconfig_fd(fs, key, fd)
    }
    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> io::Result<()> {
        self.step()?;
        self.inner.fsconfig_create(fs)
    }
    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: MountAttrFlags) -> io::Result<OwnedFd> {
        self.step()?;
        self.inner.fsmount(fs, attrs)
    }
    fn attach(&self, mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.attach(mnt, target)
    }
    fn detach(&self, target: &Path) -> io::Result<()> {
        self.inner.detach(target)
    }
    fn mount_overlay_in(
        &self,
        cwd: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        self.step()?;
        self.inner.mount_overlay_in(cwd, target, data, flags)
    }
}

/// A failure injected at every step of every construction leaves no mount
/// and no temporary directory, and the error says what failed.
#[test]
fn a_failure_at_any_step_leaves_nothing_behind() {
    let real = features();
    let legacy = KernelFeatures {
        lowerdir_plus: false,
        layer_fds: false,
        detached_layer_fds: false,
        upper_fds: false,
        ..real.clone()
    };
    let attach_once = KernelFeatures {
        detached_layer_fds: false,
        ..real.clone()
    };
    let cases = [
        (Strategy::Fd, real.clone()),
        (Strategy::Fd, attach_once),
        (Strategy::Path, real.clone()),
        (Strategy::Path, legacy.clone()),
        (Strategy::Plain, legacy),
        (Strategy::PerLayer, real.clone()),
        (Strategy::Plain, real.clone()),
    ];
    for (c, (strategy, f)) in cases.iter().enumerate() {
        if f.resolve(*strategy).is_err() {
            eprintln!("{strategy} ({}) skipped: not on this kernel", f.tier());
            continue;
        }
        let w = World::new(3, 80 + c as u32);
        let plan = w.plan();
        // Count the steps of a successful build first.
        let ok = FaultySys::new(usize::MAX, 0);
        let guard = mounts_lock();
        build_with(&ok, &plan, &w.opts(*strategy, f)).expect("fault-free build");
        drop(guard);
        let steps = ok.calls();
        // Legacy plain is the shortest: mount(2) and open_tree.
        assert!(steps >= 2, "{strategy}: {steps} steps");
        for fail_at in 0..steps {
            let sys = FaultySys::new(fail_at, libc::EIO);
            let guard = mounts_lock();
            let before = mountinfo_lines();
            let err = build_with(&sys, &plan, &w.opts(*strategy, f))
                .expect_err("injected failure must surface");
            assert_eq!(
                mountinfo_lines(),
                before,
                "{strategy} ({}) failing at step {fail_at}: mount leaked",
                f.tier()
            );
            drop(guard);
            assert!(
                w.scratch_is_empty(),
                "{strategy} failing at step {fail_at}: temporary dir left"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("Input/output error"),
                "{strategy}@{fail_at}: {msg}"
            );
        }
    }
}

#[test]
fn idmap_refused_by_the_filesystem_is_explained() {
    let w = World::new(2, 90);
    // Step 1 of the fd strategy is the idmap of the layers' parent.
    let sys = FaultySys::new(1, libc::EINVAL);
    let err =
        build_with(&sys, &w.plan(), &w.opts(best(), features())).expect_err("simulated EINVAL");
    let msg = err.to_string();
    assert!(matches!(err, RootfsError::IdmapUnsupported { .. }), "{msg}");
    assert!(msg.contains("does not support idmapped mounts"), "{msg}");
    assert!(
        msg.contains("ext4") || msg.contains("tmpfs") || msg.contains("filesystem"),
        "{msg}"
    );
    assert!(w.scratch_is_empty());
}

/// Layers on a real filesystem without idmapped-mount support.
#[test]
fn layers_on_a_filesystem_without_idmap_support() {
    let w = World::new(1, 91);
    let mnt_point = w._dir.path().join("ramfs");
    std::fs::create_dir(&mnt_point).expect("mkdir");
    let guard = mounts_lock();
    rustix::mount::mount(
        "idshift-test",
        &mnt_point,
        "ramfs",
        MountFlags::empty(),
        None,
    )
    .expect("mount ramfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(mnt_point.clone());
    // One layer: ramfs has no trusted.* xattrs for an opaque directory.
    let img = synthetic::create(&mnt_point.join("img"), 1).expect("image on ramfs");
    let plan = plan(std::slice::from_ref(&img.mount), Path::new("/")).expect("plan");
    let before = mountinfo_lines();
    let result = build(&plan, &w.opts(best(), features()));
    assert_eq!(mountinfo_lines(), before);
    // Unmounted while the lock is held: other tests count mount lines.
    drop(_unmount);
    drop(guard);
    // ramfs has no idmapped-mount support (FS_ALLOW_IDMAP) on Linux up to 6.18 at least.
    let err = result.expect_err("ramfs layers cannot be idmapped");
    assert!(matches!(err, RootfsError::IdmapUnsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("ramfs"), "{msg}");
    assert!(
        msg.contains(&mnt_point.join("img").display().to_string()),
        "{msg}"
    );
    assert!(w.scratch_is_empty());
}

#[test]
fn probe_reports_this_kernel() {
    let f = features();
    assert!(f.mount_api && f.overlay, "{f:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("probe.json");
    let guard = mounts_lock();
    let a = rootfs::probe_cached(dir.path(), &cache).expect("probe");
    drop(guard);
    assert!(cache.exists());
    let b = rootfs::probe_cached(dir.path(), &cache).expect("cached probe");
    assert_eq!(a, b);
    assert_eq!(&a, f);
    // Only the cache file is left.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(left.len(), 1);
}

/// An upperdir on another mount than its workdir (a tmpfs mounted over the
/// work dir), and a missing upperdir, are refused before anything is
/// changed or mounted, with errors naming both directories; every
/// strategy.
#[test]
fn upper_and_work_on_different_mounts_are_named() {
    let w = World::new(2, 95);
    let plan_of = |upper: &Path| {
        let mut m = w.image.mount.clone();
        for o in &mut m.options {
            if o.starts_with("upperdir=") {
                *o = format!("upperdir={}", upper.display());
            }
        }
        plan(&[m], Path::new("/")).expect("plan")
    };
    let missing = w._dir.path().join("no-such-upper");
    for strategy in [best(), Strategy::PerLayer, Strategy::Plain] {
        let err = build(&plan_of(&missing), &w.opts(strategy, features())).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "upperdir {} cannot be used: No such file or directory (os error 2)",
                missing.display()
            ),
            "{strategy}"
        );
    }
    let guard = mounts_lock();
    rustix::mount::mount(
        "idshift-test",
        &w.image.work,
        "tmpfs",
        MountFlags::empty(),
        None,
    )
    .expect("mount tmpfs on the work dir");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(w.image.work.clone());
    let before = mountinfo_lines();
    let owner = std::fs::metadata(&w.image.upper).expect("upper").uid();
    for strategy in [best(), Strategy::PerLayer, Strategy::Plain] {
        let err = build(&w.plan(), &w.opts(strategy, features())).expect_err("apart");
        assert!(matches!(err, RootfsError::UpperWorkApart { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "upperdir {} and workdir {} are on different mounts; overlayfs needs both on the same one",
                w.image.upper.display(),
                w.image.work.display()
            )
        );
    }
    assert_eq!(mountinfo_lines(), before, "nothing mounted");
    // Unmounted while the lock is held: other tests count mount lines.
    drop(_unmount);
    drop(guard);
    assert_eq!(
        std::fs::metadata(&w.image.upper).expect("upper").uid(),
        owner,
        "the upper dir was not chowned"
    );
    assert!(w.scratch_is_empty());
}

/// The probe never claims what a real construction then refuses, and never
/// denies what one would do: every overlay construction is built for real,
/// with the kernel features that select it, and must succeed exactly when the
/// probe says the kernel has it. (Before 6.5, overlay's legacy parser takes
/// any `fsconfig` key and refuses it only at create: a probe that stops at
/// `fsconfig` claims `lowerdir+` on 6.1.)
#[test]
fn probe_claims_exactly_what_real_constructions_do() {
    let real = features();
    let forced =
        |legacy_lowerdir, lowerdir_plus, layer_fds, detached_layer_fds, upper_fds| KernelFeatures {
            legacy_lowerdir,
            lowerdir_plus,
            layer_fds,
            detached_layer_fds,
            upper_fds,
            notes: Vec::new(),
            ..real.clone()
        };
    let cases = [
        (
            "legacy lowerdir=",
            Strategy::Path,
            forced(true, false, false, false, false),
            real.legacy_lowerdir,
        ),
        (
            "lowerdir+ path strings",
            Strategy::Path,
            forced(true, true, false, false, false),
            real.lowerdir_plus,
        ),
        (
            "lowerdir+ fds through the tree attached once",
            Strategy::Fd,
            forced(true, true, true, false, false),
            real.layer_fds,
        ),
        (
            "lowerdir+ and upper/work fds",
            Strategy::Fd,
            forced(true, true, true, false, true),
            real.layer_fds && real.upper_fds,
        ),
        (
            "lowerdir+ fds of the detached idmapped tree",
            Strategy::Fd,
            forced(true, true, true, true, real.upper_fds),
            real.detached_layer_fds,
        ),
    ];
    assert!(
        real.idmapped_mounts,
        "idmapped mounts on the test's filesystem: {real:?}"
    );
    for (slot, (what, strategy, f, claimed)) in cases.into_iter().enumerate() {
        let w = World::new(3, 120 + slot as u32);
        let guard = mounts_lock();
        let before = mountinfo_lines();
        let result = build(&w.plan(), &w.opts(strategy, &f));
        assert_eq!(mountinfo_lines(), before, "{what}: mount left attached");
        drop(guard);
        assert!(w.scratch_is_empty(), "{what}: temporary dirs left");
        match (claimed, result) {
            (true, Ok(root)) => {
                let mnt = root.mount.as_fd();
                assert_eq!(read_at(mnt, "top").expect("top"), "3\n", "{what}");
                assert!(!exists_at(mnt, "deleted/file"), "{what}");
                eprintln!("kernel {}: {what}: yes ({})", real.kernel, root.ops);
            }
            (true, Err(e)) => panic!(
                "kernel {}: the probe claims {what}, but a real construction refuses it: {e}",
                real.kernel
            ),
            (false, Ok(_)) => panic!(
                "kernel {}: the probe denies {what}, but a real construction works (notes: {:?})",
                real.kernel, real.notes
            ),
            (false, Err(e)) => eprintln!("kernel {}: {what}: no ({e})", real.kernel),
        }
    }
}
