//! The shim's own verbs as containerd 2.x runs them: `-info`, and `start`
//! with the bootstrap message containerd 2.3.4 writes to its stdin (the
//! fixture in shim/fixtures), answered with a plain address where task
//! API v2 is served.

use containerd_shim_protos::api::{ConnectRequest, ShutdownRequest};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::introspection::RuntimeInfo;
use idshift_tests::{processes_matching, shim_dir, shim_log_fifo, unique, Containerd};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &[u8] = include_bytes!("../../shim/fixtures/containerd-2.3.4-shim-start-stdin.bin");

fn shim() -> std::path::PathBuf {
    shim_dir().join("containerd-shim-idshift-v2")
}

#[test]
fn info_describes_the_runtime() {
    let out = Command::new(shim())
        .arg("-info")
        .stdin(Stdio::null())
        .output()
        .expect("run -info");
    assert!(out.status.success(), "{out:?}");
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).expect("a RuntimeInfo protobuf");
    assert_eq!(info.name, "io.containerd.idshift.v2");
    assert!(!info.version.version.is_empty());
    let features: serde_json::Value =
        serde_json::from_slice(&info.features.value).expect("OCI features JSON");
    assert!(features["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n == "user")));
    // CRI clients look for rro here before asking for recursive read-only
    // mounts.
    let opts = features["mountOptions"].as_array().expect("mountOptions");
    for o in ["rro", "rbind", "ridmap", "ratime", "nosymfollow"] {
        assert!(opts.iter().any(|x| x == o), "{o} missing in {opts:?}");
    }
    assert_eq!(features["linux"]["cgroup"]["v1"], true);
    assert!(features["linux"]["seccomp"]["actions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "SCMP_ACT_ERRNO")));
}

#[test]
fn start_with_the_containerd_2_bootstrap_message() {
    let stdin = FIXTURE;
    let c = Containerd::start("").expect("containerd (for its ttrpc address)");
    let id = unique("boot");
    let bundle = c.base().join(&id);
    std::fs::create_dir_all(&bundle).expect("bundle");
    std::fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
    )
    .expect("spec");
    // containerd makes the shim's log fifo in the bundle and reads it.
    let log_reader = shim_log_fifo(&bundle);
    let ttrpc = c.ttrpc_address().to_path_buf();
    let mut child = Command::new(shim())
        .args(["-namespace", "e2e", "-id", &id, "-address"])
        .arg(c.address())
        .args(["-publish-binary", "/usr/bin/containerd", "start"])
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &ttrpc)
        .env("GRPC_ADDRESS", c.address())
        .env("NAMESPACE", "e2e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write the bootstrap message");
    let out = child.wait_with_output().expect("start");
    assert!(out.status.success(), "start failed: {out:?}");
    let address = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        address.starts_with("unix://") && !address.contains('{'),
        "a plain socket address (task API v2), not JSON: {address:?}"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("address")).expect("address file"),
        address
    );
    // The serving shim answers task API v2 on it.
    let client = containerd_shim_protos::ttrpc::Client::connect(&address).expect("connect");
    let task = TaskClient::new(client);
    let ctx = || containerd_shim_protos::ttrpc::context::with_timeout(5_000_000_000);
    let mut req = ConnectRequest::new();
    req.id = id.clone();
    let resp = task.connect(ctx(), &req).expect("Connect");
    let shim_pid = resp.shim_pid;
    assert!(std::path::Path::new(&format!("/proc/{shim_pid}")).exists());
    // With no container, Shutdown stops it.
    let mut req = ShutdownRequest::new();
    req.id = id.clone();
    let _ = task.shutdown(ctx(), &req);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_matching(&format!("-id {id} ")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shim did not exit after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // `delete` after it (nothing left to clean) succeeds and answers.
    let out = Command::new(shim())
        .args(["-namespace", "e2e", "-id", &id, "-address"])
        .arg(c.address())
        .arg("delete")
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &ttrpc)
        .env("IDSHIFT_CONFIG", &c.idshift_config)
        .stdin(Stdio::null())
        .output()
        .expect("delete");
    assert!(out.status.success(), "{out:?}");
    assert!(!out.stdout.is_empty(), "a DeleteResponse");
    let log = log_reader.join().unwrap_or_default();
    assert!(log.contains("Shim successfully started"), "shim log: {log}");
}

/// When the serving shim cannot start, `start` fails instead of handing
/// containerd an address nobody listens on.
#[test]
fn start_fails_when_the_serving_shim_dies() {
    let c = Containerd::start("").expect("containerd");
    let id = unique("dead");
    let bundle = c.base().join(&id);
    std::fs::create_dir_all(&bundle).expect("bundle");
    // No `log` fifo: the serving shim cannot set up its log and exits.
    let out = Command::new(shim())
        .args(["-namespace", "e2e", "-id", &id, "-address"])
        .arg(c.address())
        .arg("start")
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", c.ttrpc_address())
        .stdin(Stdio::null())
        .output()
        .expect("start");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("serving shim exited"),
        "{out:?}"
    );
}
