//! OCI hooks (`hooks` in the spec), run as the runtime spec and runc run
//! them, each with the container's state JSON on its standard input, its
//! `args` (args[0] as argv[0]), `env` and `timeout`:
//!
//! - `prestart` (deprecated) and `createRuntime`: by the shim, in the host's
//!   namespaces, once the container's mounts are made and before its
//!   `pivot_root` (status `creating`);
//! - `createContainer`: by the container's init, in its mount namespace,
//!   right after those and before `pivot_root` (status `creating`);
//! - `startContainer`: by the container's init after `pivot_root`, as the
//!   container's user, just before the workload's execve (status `created`);
//! - `poststart`: by the shim once the workload runs (status `running`); a
//!   failure kills the container and fails Start;
//! - `poststop`: by the shim once the container is deleted (status
//!   `stopped`); a failure is logged.
//!
//! A failing create-phase hook fails Create with its output in the error.
//! The shim's own hooks run in a helper (`containerd-shim-idshift-v2
//! hooks`), because the shim reaps every child itself: a hook's exit
//! status could not be waited for directly.

use oci_spec::runtime::{Hook, Hooks, Spec};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The state of the container, as the runtime spec's `state` operation
/// shows it (what every hook reads on its standard input).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: String,
    /// Left out when there is none (stopped), as runc leaves it out.
    #[serde(skip_serializing_if = "no_pid", default)]
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty", default)]
    pub annotations: std::collections::HashMap<String, String>,
}

fn no_pid(pid: &i32) -> bool {
    *pid <= 0
}

impl State {
    pub fn of(spec: &Spec, id: &str, bundle: &std::path::Path) -> State {
        State {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: String::new(),
            pid: 0,
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }

    pub fn with(&self, status: &str, pid: i32) -> State {
        State {
            status: status.to_string(),
            pid,
            ..self.clone()
        }
    }
}

/// The hook points of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Point {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Prestart => "prestart",
            Point::CreateRuntime => "createRuntime",
            Point::CreateContainer => "createContainer",
            Point::StartContainer => "startContainer",
            Point::Poststart => "poststart",
            Point::Poststop => "poststop",
        }
    }

    /// The spec's hooks at this point.
    pub fn of(self, hooks: Option<&Hooks>) -> Vec<Hook> {
        let Some(h) = hooks else {
            return Vec::new();
        };
        #[allow(deprecated)]
        let list = match self {
            Point::Prestart => h.prestart(),
            Point::CreateRuntime => h.create_runtime(),
            Point::CreateContainer => h.create_container(),
            Point::StartContainer => h.start_container(),
            Point::Poststart => h.poststart(),
            Point::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// Every path must be absolute (the runtime spec requires it; a relative
/// one would be looked up from wherever the runner happens to be).
pub fn validate(hooks: Option<&Hooks>) -> Result<(), String> {
    for p in [
        Point::Prestart,
        Point::CreateRuntime,
        Point::CreateContainer,
        Point::StartContainer,
        Point::Poststart,
        Point::Poststop,
    ] {
        for (i, h) in p.of(hooks).iter().enumerate() {
            if !h.path().is_absolute() {
                return Err(format!(
                    "hooks.{}[{i}].path {} is not absolute",
                    p.name(),
                    h.path().display()
                ));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return Err(format!("hooks.{}[{i}].timeout must be positive", p.name()));
            }
        }
    }
    Ok(())
}

/// Runs `hooks` in order in this process (which must be able to wait for
/// its children: the init, or the `hooks` helper); the first failure stops
/// them and is returned, naming the hook, with its output.
pub fn run_here(point: Point, hooks: &[Hook], state: &State) -> Result<(), String> {
    let json = serde_json::to_vec(state).map_err(|e| format!("the state JSON: {e}"))?;
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, &json)
            .map_err(|e| format!("hooks.{}[{i}] ({}): {e}", point.name(), h.path().display()))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state: &[u8]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1)).env_clear();
    for e in h.env().iter().flatten() {
        match e.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(e, ""),
        };
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("starting it: {e}"))?;
    // Written by a thread: a hook that does not read its state must not
    // block us (nor its timeout); one that closes its stdin early is fine.
    if let Some(mut stdin) = child.stdin.take() {
        let state = state.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&state);
        });
    }
    let collect = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            let _ = tx.send(String::from_utf8_lossy(&buf).trim().to_string());
        });
        rx
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = h
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(format!("waiting for it: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            break Err(format!(
                "timed out after {}s",
                h.timeout().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A process the hook left behind may hold its pipes open: the hook is
    // done, its output is what it wrote by now (the readers are not waited
    // for beyond a moment).
    let grace = Duration::from_millis(500);
    let (out, err) = (
        out.recv_timeout(grace).unwrap_or_default(),
        err.recv_timeout(grace).unwrap_or_default(),
    );
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{s}, stdout: {out:?}, stderr: {err:?}")),
        Err(e) => Err(e),
    }
}

/// What the shim hands its hook helper.
#[derive(Serialize, Deserialize)]
struct Job {
    point: Point,
    hooks: Vec<Hook>,
    state: State,
}

/// Runs `hooks` from the shim, in a helper process (see the module doc).
/// Blocking.
pub fn run_from_shim(point: Point, hooks: &[Hook], state: &State) -> Result<(), String> {
    if hooks.is_empty() {
        return Ok(());
    }
    let job = serde_json::to_vec(&Job {
        point,
        hooks: hooks.to_vec(),
        state: state.clone(),
    })
    .map_err(|e| format!("the {} hooks' job: {e}", point.name()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the shim binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("hooks")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the {} hooks' helper: {e}", point.name()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&job)
            .map_err(|e| format!("sending the {} hooks: {e}", point.name()))?;
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_end(&mut out)
            .map_err(|e| format!("reading the {} hooks' result: {e}", point.name()))?;
    }
    // The shim's reaper collects the helper: its answer is what it wrote.
    drop(child);
    match serde_json::from_slice::<Result<(), String>>(&out) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the {} hooks' helper died without an answer",
            point.name()
        )),
    }
}

/// `containerd-shim-idshift-v2 hooks`: the job on stdin, the result
/// (JSON `Ok`/`Err`) on stdout.
pub fn helper_main() -> std::process::ExitCode {
    let mut input = Vec::new();
    let result = std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the job: {e}"))
        .and_then(|_| serde_json::from_slice::<Job>(&input).map_err(|e| format!("the job: {e}")))
        .and_then(|j| run_here(j.point, &j.hooks, &j.state));
    let ok = result.is_ok();
    let text = serde_json::to_string(&result).unwrap_or_else(|_| "{\"Err\":\"?\"}".into());
    let _ = std::io::stdout().write_all(text.as_bytes());
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).expect("hook")
    }

    #[test]
    fn a_hook_gets_the_state_args_and_env_and_its_failure_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let state = State {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: "creating".into(),
            pid: 42,
            bundle: "/b".into(),
            annotations: Default::default(),
        };
        let ok = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["hook-sh", "-c", "cat > \"$1\"; printf '\\n%s %s\\n' \"$0\" \"$FOO\" >> \"$1\"", "hook-sh", out],
            "env": ["FOO=bar"],
        }));
        run_here(Point::CreateRuntime, &[ok], &state).expect("hook runs");
        let text = std::fs::read_to_string(&out).expect("marker");
        let (json, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let got: State = serde_json::from_str(json).expect("state JSON");
        assert_eq!(got, state);
        assert_eq!(rest.trim(), "hook-sh bar");
        let bad = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"],
        }));
        let e = run_here(Point::Poststart, &[bad], &state).expect_err("fails");
        assert!(
            e.contains("hooks.poststart[0] (/bin/sh)") && e.contains("boom") && e.contains('3'),
            "{e}"
        );
        // A hook that leaves a process holding its pipes: done when it exits.
        let daemon = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "sleep 20 & exit 0"],
        }));
        run_here(Point::CreateRuntime, &[daemon], &state).expect("returns at its exit");
        let slow = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1,
        }));
        let e = run_here(Point::Poststop, &[slow], &state).expect_err("times out");
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(validate(Some(
            &serde_json::from_value(serde_json::json!({"poststop": [{"path": "rel"}]}))
                .expect("hooks")
        ))
        .is_err_and(|e| e.contains("hooks.poststop[0].path rel is not absolute")));
    }
}
