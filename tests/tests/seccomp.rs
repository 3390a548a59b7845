//! Seccomp under a real containerd 1.6: profiles put into the spec by `ctr
//! run --seccomp [--seccomp-profile]` (or a whole spec by `--config`), run
//! by idshift and by containerd's own runc shim side by side, which must
//! behave the same. Root needed.

use idshift_tests::{
    busybox_rootfs, unique, Containerd, CtrOutput, IDSHIFT_RUNTIME as IDSHIFT, RUNC_RUNTIME as RUNC,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NS: &str = "seccomp";
const IMG: &str = "docker.io/library/idshift-busybox:1";

fn setup() -> Containerd {
    let c = Containerd::start("").expect("start containerd");
    c.import_image(NS, IMG, 1).expect("import image");
    c
}

/// Writes `profile` (a `linux.seccomp` object) to a file of the test's.
fn profile_file(c: &Containerd, profile: &serde_json::Value) -> PathBuf {
    let p = c.base().join(format!("{}.json", unique("profile")));
    std::fs::write(&p, profile.to_string()).expect("write profile");
    p
}

fn arches() -> serde_json::Value {
    serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
}

/// `ctr run --rm --seccomp [--seccomp-profile p] <runtime> IMG <id> sh -c script`.
fn run(c: &Containerd, runtime: &str, profile: Option<&Path>, script: &str) -> CtrOutput {
    let id = unique("sc");
    let p = profile.map(|p| p.display().to_string());
    let mut args = vec!["run", "--rm", "--seccomp"];
    if let Some(p) = &p {
        args.extend(["--seccomp-profile", p.as_str()]);
    }
    args.extend([runtime, IMG, id.as_str(), "/bin/sh", "-c", script]);
    c.ctr(NS, &args)
}

/// Runs `script` under idshift and under runc with the same profile; both
/// must give the same exit code and output, which is returned.
fn same_under_both(c: &Containerd, profile: Option<&Path>, script: &str) -> CtrOutput {
    c.same_under_idshift_and_runc(|runtime| run(c, runtime, profile, script))
}

#[test]
fn a_profile_blocking_mkdir_fails_it_with_the_configured_errno_as_under_runc() {
    let c = setup();
    let eacces = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": arches(),
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
        }),
    );
    let eperm = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
        }),
    );
    let script = "mkdir /x 2>&1; echo rc=$?; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";
    // Unfiltered, mkdir works (under idshift).
    let out = run(&c, IDSHIFT, None, "mkdir /x && echo made");
    // `--seccomp` alone is containerd's default profile, which allows mkdir.
    assert_eq!(out.ok().stdout, "made\n");
    let out = same_under_both(&c, Some(&eacces), script);
    assert_eq!(
        out.ok().stdout,
        "mkdir: can't create directory '/x': Permission denied\nrc=1\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    // No errnoRet: EPERM.
    let out = same_under_both(&c, Some(&eperm), script);
    assert!(
        out.ok()
            .stdout
            .starts_with("mkdir: can't create directory '/x': Operation not permitted\nrc=1\n"),
        "{out:?}"
    );

    // An exec into the container runs under the container's profile.
    for runtime in [IDSHIFT, RUNC] {
        let id = unique("exec");
        let p = eacces.display().to_string();
        c.ctr(
            NS,
            &[
                "run",
                "-d",
                "--seccomp",
                "--seccomp-profile",
                &p,
                runtime,
                IMG,
                &id,
                "sleep",
                "1000",
            ],
        )
        .ok();
        let out = c.ctr(
            NS,
            &[
                "task",
                "exec",
                "--exec-id",
                "e1",
                &id,
                "/bin/sh",
                "-c",
                "mkdir /y 2>&1; echo rc=$?",
            ],
        );
        assert_eq!(
            out.ok().stdout,
            "mkdir: can't create directory '/y': Permission denied\nrc=1\n",
            "{runtime}"
        );
        c.kill_and_remove(NS, &[&id]).expect("remove");
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn argument_conditions_and_log_behave_as_under_runc() {
    let c = setup();
    // personality(2): linux32 asks for PER_LINUX32 (8), linux64 for PER_LINUX (0).
    let only_32 = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": arches(),
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["uname", "getcwd"], "action": "SCMP_ACT_LOG"},
            ],
        }),
    );
    // Two comparisons of one argument: OR'ed (runc's rule), so both blocked.
    let either = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            ],
        }),
    );
    // Conditions on two different arguments: AND'ed. kill(pid > 0, SIGUSR1)
    // is blocked; kill(pid, 0) is not (it would be, were they OR'ed).
    let both = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_GT"},
                          {"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
            ],
        }),
    );
    let script = "linux32 true 2>&1; echo 32=$?; linux64 true 2>&1; echo 64=$?; uname -s; pwd";
    let out = same_under_both(&c, Some(&only_32), script);
    let text = &out.ok().stdout;
    assert!(
        text.contains("Invalid argument\n32=1\n64=0\nLinux\n/\n"),
        "{out:?}"
    );
    // Filter flags: the runc here (1.1) refuses any ("seccomp flags are not
    // yet supported by runc"); runc 1.2 and idshift apply them.
    let mut flagged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&only_32).expect("read")).expect("json");
    flagged["flags"] = serde_json::json!([
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
    ]);
    let flagged = profile_file(&c, &flagged);
    let out = run(&c, IDSHIFT, Some(&flagged), script);
    assert!(
        out.ok()
            .stdout
            .contains("Invalid argument\n32=1\n64=0\nLinux\n/\n"),
        "{out:?}"
    );
    let out = same_under_both(&c, Some(&either), script);
    let text = &out.ok().stdout;
    assert!(
        text.contains("Operation not permitted\n32=1\n")
            && text.contains("Operation not permitted\n64=1\n"),
        "{out:?}"
    );
    let out = same_under_both(
        &c,
        Some(&both),
        "kill -0 $$ && echo alive; kill -USR1 $$ 2>/dev/null; echo usr1=$?",
    );
    assert_eq!(out.ok().stdout, "alive\nusr1=1\n");
    c.assert_no_leaks(Duration::from_secs(10));
}

#[test]
fn containerd_default_profile_behaves_as_under_runc() {
    let c = setup();
    // Without a profile, a user namespace can be made (idshift's container
    // root may nest one; runc's root needs no capability for it).
    for runtime in [IDSHIFT, RUNC] {
        let id = unique("nosc");
        let out = c.ctr(
            NS,
            &["run", "--rm", runtime, IMG, &id, "unshare", "-U", "true"],
        );
        assert_eq!(out.code, Some(0), "{runtime}: {out:?}");
    }
    // containerd's default profile allows the usual and denies unshare
    // without CAP_SYS_ADMIN: EPERM.
    let out = same_under_both(
        &c,
        None,
        "echo hi > /tmp/f && cat /tmp/f && ls / >/dev/null && echo listed; \
         unshare -U true 2>&1; echo rc=$?; grep '^Seccomp:' /proc/self/status",
    );
    assert_eq!(
        out.ok().stdout,
        "hi\nlisted\nunshare: unshare(0x10000000): Operation not permitted\nrc=1\nSeccomp:\t2\n"
    );
    c.assert_no_leaks(Duration::from_secs(10));
}

/// Without no_new_privs the filter is loaded while the container's root
/// still holds CAP_SYS_ADMIN (in its user namespace), before capabilities
/// drop, as runc does; with it, right before the exec. Both filter the
/// workload the same. The spec is written whole (`ctr run --config`).
#[test]
fn with_and_without_no_new_privileges() {
    let c = setup();
    let base = ctr_default_spec(&c);
    let rootfs = busybox_rootfs(c.base(), &["sh", "mkdir", "grep", "echo", "cat", "true"])
        .expect("busybox rootfs");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": arches(),
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let script =
        "mkdir /dev/shm/x 2>&1; echo rc=$?; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";
    for nnp in [false, true] {
        let mut outs = Vec::new();
        for runtime in [IDSHIFT, RUNC] {
            let mut spec = base.clone();
            spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
            spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
            spec["process"]["noNewPrivileges"] = serde_json::json!(nnp);
            spec["process"]["terminal"] = serde_json::json!(false);
            spec["root"] = serde_json::json!({"path": rootfs, "readonly": true});
            spec["linux"]["seccomp"] = profile.clone();
            let id = unique("cfg");
            spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NS}/{id}"));
            let path = c.base().join(format!("{id}.json"));
            std::fs::write(&path, spec.to_string()).expect("write spec");
            let p = path.display().to_string();
            let out = c.ctr(NS, &["run", "--rm", "--config", &p, runtime, &id]);
            outs.push(out);
        }
        assert_eq!(
            outs[0],
            outs[1],
            "nnp {nnp}: idshift, then runc\n{}",
            c.log_tail(40)
        );
        let want = format!(
            "mkdir: can't create directory '/dev/shm/x': Operation not permitted\nrc=1\nNoNewPrivs:\t{}\nSeccomp:\t2\n",
            u8::from(nnp)
        );
        assert_eq!(outs[0].ok().stdout, want, "nnp {nnp}");
    }
    c.assert_no_leaks(Duration::from_secs(10));
}

/// ctr's default spec (`ctr oci spec`), as JSON.
fn ctr_default_spec(c: &Containerd) -> serde_json::Value {
    let out = c.ctr(NS, &["oci", "spec"]);
    serde_json::from_str(&out.ok().stdout).expect("ctr oci spec is JSON")
}

/// What idshift cannot honour is refused at create, with the reason, and
/// nothing is left behind: a notify action (no listener support), a bad
/// argument index.
#[test]
fn unsupported_or_bad_profiles_are_refused_at_create() {
    let c = setup();
    let notify = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
        }),
    );
    let bad_index = profile_file(
        &c,
        &serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}],
        }),
    );
    for (profile, needle) in [
        (&notify, "SCMP_ACT_NOTIFY"),
        (&bad_index, "linux.seccomp.syscalls[0].args[0].index"),
    ] {
        let out = run(&c, IDSHIFT, Some(profile), "echo ran");
        assert_ne!(out.code, Some(0), "{out:?}");
        assert!(!out.stdout.contains("ran"), "{out:?}");
        assert!(out.stderr.contains(needle), "{needle}: {out:?}");
    }
    let left = c.ctr(NS, &["containers", "ls", "-q"]).stdout;
    for id in left.lines() {
        let _ = c.ctr(NS, &["containers", "rm", id]);
    }
    c.assert_no_leaks(Duration::from_secs(10));
}
