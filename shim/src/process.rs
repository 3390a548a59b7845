//! The host side of a container's process (its init, or an exec): starting
//! it as the shim's own binary, telling it to exec, its rlimits and OOM
//! score. Its life (states, exits) is `lifecycle.rs`'s.

use crate::cgroup::Cgroup;
use crate::channel::{Channel, FromInit, ToInit};
use crate::stdio::{ChildStdio, ProcessIo};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A process set up and waiting for Start ([`SettingUp::wait_ready`]).
pub struct Process {
    pub pid: i32,
    pub io: ProcessIo,
    /// Until Start: the channel to the process waiting to exec.
    channel: Option<Channel>,
}

impl Process {
    /// The channel to the process waiting for Start (once).
    pub fn take_channel(&mut self) -> Result<Channel, String> {
        self.channel
            .take()
            .ok_or_else(|| "the process was already started".to_string())
    }
}

/// Sends Start and waits for the exec: the channel closing means success.
pub fn start_blocking(mut ch: Channel) -> Result<(), String> {
    ch.send(&ToInit::Start, &[])
        .map_err(|e| format!("telling the process to start: {e}"))?;
    match ch.recv::<FromInit>() {
        Ok(None) => Ok(()),
        Ok(Some((FromInit::Error(e), _))) => Err(e),
        Ok(Some((other, _))) => Err(format!("unexpected message at start: {other:?}")),
        Err(e) => Err(format!("waiting for the exec: {e}")),
    }
}

/// A new process's way from the shim's binary to waiting for Start, in
/// three states, each allowing only its own next step:
///
/// - [`Helper`]: spawned as `init`, loading, told nothing. A Create spawns
///   it first, so that its exec and loading overlap the shim's user
///   namespace, cgroup and rootfs work.
/// - [`SettingUp`]: in its cgroup and sent its set-up; it joins and makes
///   namespaces and forks while the shim finishes (a container's rootfs,
///   then [`SettingUp::send_rootfs`], its resources).
/// - [`Process`]: set up and waiting for Start.
///
/// Dropping a `Helper` or a `SettingUp` (a failed Create or Exec) kills the
/// helper through its pidfd (no pid reuse can misdirect it) and closes the
/// channel, on which the processes it forked wait and exit; what is already
/// in the cgroup is killed with the cgroup by the caller.
pub struct Helper {
    ch: Channel,
    pid: i32,
    kill: KillOnDrop,
    marks: Vec<(String, u64)>,
}

/// The helper's pidfd: the helper is killed when this is dropped, unless
/// disarmed (`None`).
struct KillOnDrop(Option<OwnedFd>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            // ESRCH: it exited already (a helper that forked, or one whose
            // set-up failed), which is what was wanted.
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
        }
    }
}

impl Helper {
    /// Spawns the shim's own binary as `init` (environment cleared, stdio
    /// `stdio`, the channel at fd 3).
    pub fn spawn(stdio: ChildStdio) -> Result<Helper, String> {
        let mut marks = vec![("start".to_string(), crate::sys::monotonic_ns())];
        let (ch, child_end) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("finding the shim binary: {e}"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("init")
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        cmd.env_clear();
        let child_fd = child_end.as_raw_fd();
        crate::sys::pre_exec(&mut cmd, move || {
            crate::sys::dup2_raw(child_fd, crate::init::CHANNEL_FD)
        });
        // The helper exits once it has forked; the shim's reaper collects it.
        let helper =
            spawn_reaped(&mut cmd).map_err(|e| format!("starting the container init: {e}"))?;
        let pid = i32::try_from(helper.id()).map_err(|e| format!("helper pid: {e}"))?;
        // The helper cannot exit before it reads its channel (or the channel
        // closes), so this pid is still its own. Without pidfds (before
        // 5.3), a failure leaves it to exit at the channel's end.
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        marks.push(("(shim) fork and exec".into(), crate::sys::monotonic_ns()));
        drop(child_end);
        Ok(Helper {
            ch,
            pid,
            kill: KillOnDrop(pidfd),
            marks,
        })
    }

    /// Records the end of a step of the shim's, for the debug log.
    pub fn mark(&mut self, step: &str) {
        self.marks
            .push((format!("(shim) {step}"), crate::sys::monotonic_ns()));
    }

    /// Puts the helper in `cgroup` and sends it `msg` (with `fds`).
    ///
    /// With a `cgroup`, the helper is in it before it is told anything, so
    /// that everything it forks (the container's init or the exec) starts
    /// there: accounted and limited from its first instruction, and rooted
    /// there if it makes a cgroup namespace. `before_setup` is work of the
    /// shim's done before the process does anything in its cgroup: a
    /// container's device rules, which a v1 cgroup applies with a moment
    /// refusing every device. A process that moves itself (v1) is told to
    /// only after it; one the shim moves (v2, a systemd scope, which exists
    /// only from then on) gets its set-up message after it.
    pub fn send_setup(
        mut self,
        msg: &ToInit,
        fds: &[RawFd],
        cgroup: Option<&Cgroup>,
        before_setup: Option<&dyn Fn() -> Result<(), String>>,
    ) -> Result<SettingUp, String> {
        let mut before_setup = before_setup;
        let mut run_before_setup = |marks: &mut Vec<(String, u64)>| -> Result<(), String> {
            if let Some(work) = before_setup.take() {
                work()?;
                marks.push(("(shim) before set-up".into(), crate::sys::monotonic_ns()));
            }
            Ok(())
        };
        if let Some(cg) = cgroup {
            let in_cgroup = |e: String| {
                format!(
                    "moving the container's process into cgroup {}: {e}",
                    cg.path()
                )
            };
            match cg.self_join_files().map_err(|e| in_cgroup(e.to_string()))? {
                // It moves itself first thing, and says so if it cannot.
                Some(tasks) => {
                    run_before_setup(&mut self.marks)?;
                    self.ch
                        .send(&ToInit::JoinCgroup { tasks }, &[])
                        .map_err(|e| in_cgroup(format!("sending the cgroup: {e}")))?
                }
                None => {
                    cg.add_process(self.pid)
                        .map_err(|e| in_cgroup(e.to_string()))?;
                    self.marks
                        .push(("(shim) cgroup joined".into(), crate::sys::monotonic_ns()));
                }
            }
        }
        run_before_setup(&mut self.marks)?;
        self.ch
            .send(msg, fds)
            .map_err(|e| format!("sending the set-up: {e}"))?;
        self.marks.push((
            "(shim) set-up message sent".into(),
            crate::sys::monotonic_ns(),
        ));
        let what = match msg {
            ToInit::Container(c) => format!("container {}", c.state.id),
            ToInit::Exec { pid, .. } => format!("an exec in the container of pid {pid}"),
            _ => "a process".to_string(),
        };
        Ok(SettingUp { helper: self, what })
    }
}

/// A process told its set-up, not yet ready (see [`Helper`]).
pub struct SettingUp {
    helper: Helper,
    what: String,
}

impl SettingUp {
    /// Records the end of a step of the shim's, for the debug log.
    pub fn mark(&mut self, step: &str) {
        self.helper.mark(step);
    }

    /// Hands a container's init its detached rootfs, which it waits for
    /// once it has forked into its namespaces.
    pub fn send_rootfs(&mut self, rootfs: BorrowedFd<'_>) -> Result<(), String> {
        self.helper
            .ch
            .send(&ToInit::Rootfs, &[rootfs.as_raw_fd()])
            .map_err(|e| format!("sending the rootfs: {e}"))
    }

    /// Waits for the process's pid and for it to be set up, running
    /// `run_hooks` (the prestart and createRuntime hooks, given the pid)
    /// when a container's init asks, before its pivot_root. Then raises its
    /// OOM score to the process's `oomScoreAdj`.
    pub fn wait_ready(
        mut self,
        io: ProcessIo,
        run_hooks: &dyn Fn(i32) -> Result<(), String>,
        oom_score_adj: Option<i32>,
    ) -> Result<(Process, Option<OwnedFd>), String> {
        let h = &mut self.helper;
        let died = |what: &str| format!("the container's init died before it was {what}");
        let pid = match h.ch.recv::<FromInit>() {
            Ok(Some((FromInit::Pid(p), _))) => p,
            Ok(Some((FromInit::Error(e), _))) => return Err(e),
            Ok(Some((m, _))) => return Err(format!("unexpected message {m:?}")),
            Ok(None) => return Err(died("forked")),
            Err(e) => return Err(format!("reading the init's pid: {e}")),
        };
        h.marks
            .push(("(shim) pid read".into(), crate::sys::monotonic_ns()));
        let mut ready = h.ch.recv::<FromInit>();
        if let Ok(Some((FromInit::RunHooks, _))) = ready {
            // On failure, dropping the channel makes the waiting process exit.
            run_hooks(pid)?;
            h.ch.send(&ToInit::HooksDone, &[])
                .map_err(|e| format!("resuming the init after the hooks: {e}"))?;
            ready = h.ch.recv::<FromInit>();
        }
        let pty = match ready {
            Ok(Some((FromInit::Ready { marks: theirs }, mut fds))) => {
                h.marks.extend(theirs);
                h.marks
                    .push(("(shim) Ready read".into(), crate::sys::monotonic_ns()));
                // The shim's steps and the init's interleave.
                h.marks.sort_by_key(|m| m.1);
                log_marks(&self.what, &h.marks);
                fds.pop()
            }
            Ok(Some((FromInit::Error(e), _))) => return Err(e),
            Ok(Some((m, _))) => return Err(format!("unexpected message {m:?}")),
            Ok(None) => return Err(died("ready")),
            Err(e) => return Err(format!("waiting for the init to be ready: {e}")),
        };
        // Dropping `self` on an error here makes the waiting process exit.
        apply_oom_score_adj(pid, oom_score_adj)?;
        // The helper has forked and exited: nothing to kill any more.
        h.kill.0 = None;
        Ok((
            Process {
                pid,
                io,
                channel: Some(self.helper.ch),
            },
            pty,
        ))
    }
}

/// Logs (debug) how long each step of a process's set-up took: the shim's
/// and then the process's own marks, each the end of a step.
fn log_marks(what: &str, marks: &[(String, u64)]) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let steps: Vec<String> = marks
        .windows(2)
        .map(|w| {
            let ms = w[1].1.saturating_sub(w[0].1) as f64 / 1e6;
            format!("{} {ms:.2} ms", w[1].0)
        })
        .collect();
    let total = match (marks.first(), marks.last()) {
        (Some(a), Some(b)) => b.1.saturating_sub(a.1) as f64 / 1e6,
        _ => 0.0,
    };
    log::debug!(
        "init phases of {what}: {}; {total:.2} ms in all",
        steps.join(", ")
    );
}

/// `Command::spawn` for a process whose exit the shim's reaper collects.
/// When the exec of a child with a `pre_exec` hook fails, std waits for the
/// child and panics ("wait() should either return Ok or panic") if someone
/// else reaped it first, as the shim's reaper may: that is an error here.
pub fn spawn_reaped(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn())).unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "its exec failed (and the child was reaped before it could be waited for)",
        ))
    })
}

/// `process.rlimits`, set on `pid` (the container's process itself, before
/// it enters its user namespace: inside it, it could not raise a hard limit;
/// and a shim without `CAP_SYS_RESOURCE` may not set another process's
/// limits once that process is in a user namespace the shim does not own).
/// A failure fails Create (or Exec), naming the rlimit.
pub fn apply_rlimits(pid: i32, process: &oci_spec::runtime::Process) -> Result<(), String> {
    let target = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| format!("setting rlimits: invalid pid {pid}"))?;
    let limit = |v: u64| (v != u64::MAX).then_some(v);
    for r in process.rlimits().iter().flatten() {
        let name = crate::container::rlimit_name(&r.typ());
        let resource = rlimit_resource(&name)
            .ok_or_else(|| format!("process.rlimits: unknown rlimit {name}"))?;
        rustix::process::prlimit(
            Some(target),
            resource,
            rustix::process::Rlimit {
                current: limit(r.soft()),
                maximum: limit(r.hard()),
            },
        )
        .map_err(|e| {
            format!(
                "process.rlimits {name} (soft {}, hard {}): {}",
                r.soft(),
                r.hard(),
                std::io::Error::from(e)
            )
        })?;
    }
    Ok(())
}

/// `process.oomScoreAdj`, written by the shim (host root) to the ready
/// process's `/proc/<pid>/oom_score_adj`, as runc's parent does: from inside
/// its user namespace the process cannot open that file (kubelet gives
/// BestEffort pods 1000). A value below the current one is skipped, as
/// containerd's `restrict_oom_score_adj` does: the container does not get
/// more protection from the OOM killer than its shim has.
pub fn apply_oom_score_adj(pid: i32, oom_score_adj: Option<i32>) -> Result<(), String> {
    let Some(adj) = oom_score_adj else {
        return Ok(());
    };
    let path = format!("/proc/{pid}/oom_score_adj");
    let current: i32 = std::fs::read_to_string(&path)
        .map_err(|e| format!("process.oomScoreAdj {adj}: reading {path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("process.oomScoreAdj {adj}: parsing {path}: {e}"))?;
    if adj <= current {
        if adj < current {
            log::debug!(
                "process.oomScoreAdj {adj} is below the current {current}: kept at {current}"
            );
        }
        return Ok(());
    }
    std::fs::write(&path, adj.to_string())
        .map_err(|e| format!("process.oomScoreAdj: setting {path} to {adj}: {e}"))
}

/// The kernel resource of an OCI rlimit type name.
fn rlimit_resource(name: &str) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    // Accepts "RLIMIT_NOFILE" and oci-spec's Debug form "RlimitNofile".
    let upper = name.to_ascii_uppercase().replace('_', "");
    Some(match upper.trim_start_matches("RLIMIT") {
        "CPU" => R::Cpu,
        "FSIZE" => R::Fsize,
        "DATA" => R::Data,
        "STACK" => R::Stack,
        "CORE" => R::Core,
        "RSS" => R::Rss,
        "NPROC" => R::Nproc,
        "NOFILE" => R::Nofile,
        "MEMLOCK" => R::Memlock,
        "AS" => R::As,
        "LOCKS" => R::Locks,
        "SIGPENDING" => R::Sigpending,
        "MSGQUEUE" => R::Msgqueue,
        "NICE" => R::Nice,
        "RTPRIO" => R::Rtprio,
        "RTTIME" => R::Rttime,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed exec whose child a reaper collects before std waits for it:
    /// an error, never a panic. Run in a child process of the test binary
    /// (its reaper thread would steal other tests' children).
    #[test]
    fn a_failed_exec_reaped_elsewhere_is_an_error() {
        if std::env::var_os("IDSHIFT_REAPER_TEST").is_some() {
            std::thread::spawn(|| loop {
                let _ = nix::sys::wait::waitpid(None, None);
                std::thread::sleep(std::time::Duration::from_micros(50));
            });
            for _ in 0..200 {
                let mut cmd = std::process::Command::new("/nonexistent/idshift-test-binary");
                crate::sys::pre_exec(&mut cmd, || Ok(()));
                assert!(spawn_reaped(&mut cmd).is_err());
            }
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "process::tests::a_failed_exec_reaped_elsewhere_is_an_error",
                "--nocapture",
            ])
            .env("IDSHIFT_REAPER_TEST", "1")
            .output()
            .expect("run the test in a child");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// rlimits land on the target process (read back from /proc/PID/limits);
    /// one the kernel refuses (NOFILE above nr_open) is named with its
    /// values. Root needed to raise a hard limit.
    #[test]
    fn rlimits_are_set_on_the_process_or_named() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let process = |rlimits: serde_json::Value| -> oci_spec::runtime::Process {
            serde_json::from_value(serde_json::json!({
                "cwd": "/", "user": {"uid": 0, "gid": 0}, "rlimits": rlimits
            }))
            .expect("process")
        };
        let ok = apply_rlimits(
            pid,
            &process(serde_json::json!([
                {"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
                {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX},
            ])),
        );
        let bad = apply_rlimits(
            pid,
            &process(serde_json::json!([
                {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": u64::MAX}
            ])),
        );
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        ok.expect("rlimits set");
        let line = |name: &str| {
            limits
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(line("Max open files"), "Max open files 321 654 files");
        assert_eq!(
            line("Max core file size"),
            "Max core file size unlimited unlimited bytes"
        );
        assert_eq!(
            bad,
            Err("process.rlimits RLIMIT_NOFILE (soft 1024, hard 18446744073709551615): Operation not permitted (os error 1)".into())
        );
    }

    /// oom_score_adj is raised on the target process by the shim, and a
    /// lower value leaves it as it was.
    #[test]
    fn oom_score_adj_is_raised_never_lowered() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let read = || {
            std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let before: i32 = read().parse().expect("current value");
        let want = (before + 500).min(1000);
        let up = apply_oom_score_adj(pid, Some(want));
        let after_up = read();
        let down = apply_oom_score_adj(pid, Some(before));
        let after_down = read();
        let _ = child.kill();
        let _ = child.wait();
        up.expect("raise");
        down.expect("lower is skipped");
        assert_eq!(after_up, want.to_string());
        assert_eq!(after_down, want.to_string());
    }
}
