//! The host's mechanism behind the lifecycle interface (`lifecycle.rs`):
//! containers made by `container.rs` (user namespace, rootfs, cgroup, init
//! process), processes by `process.rs`, hooks by `hooks.rs`, cgroups by
//! `cgroup.rs`. What the task service asks, done here on the host.

use crate::container::{BundleId, Container, CreateRequest, PodUsers};
use crate::lifecycle::{self, Drain, Fault, Job, Which};
use crate::process::{self, Process};
use crate::stdio::{ProcessIo, StdioUris};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

/// The host: makes real containers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

impl lifecycle::Runtime for Host {
    type Container = Container;

    fn create(&self, req: CreateRequest) -> Result<(Container, Process), String> {
        let received = req.received;
        let (c, init, report) = Container::create(req)?;
        log::info!(
            "created {} (pid {}): userns {:.1} ms, rootfs {:.1} ms ({} strategy, {} in the shim, then 1 move_mount inside the container's own mount namespace), cgroup {:.1} ms, namespaces and init {:.1} ms{}, total {:.1} ms",
            c.id,
            init.pid,
            report.userns_ms,
            report.rootfs_ms,
            report.strategy,
            report.ops,
            report.cgroup_ms,
            report.init_ms,
            report.range.map(|r| format!(", host IDs {r}")).unwrap_or_default(),
            received.elapsed().as_secs_f64() * 1e3
        );
        Ok((c, init))
    }
}

fn kill(pid: i32, signal: nix::sys::signal::Signal) -> Result<(), String> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| format!("signalling pid {pid}: {e}"))
}

impl lifecycle::Container for Container {
    type Process = Process;

    fn bundle_id(&self) -> Option<BundleId> {
        self.bundle_id
    }

    fn take_pod_users(&mut self) -> Option<PodUsers> {
        self.pod_users.take()
    }

    fn watch_ooms(&self, mut on_kills: Box<dyn FnMut(u64) -> bool + Send>) -> Result<(), String> {
        let Some(cg) = &self.cgroup else {
            return Ok(());
        };
        if let Some(mut watch) = cg.oom_watch().map_err(|e| e.to_string())? {
            // A task on the shim's runtime (this is called from the
            // service's Create), not a thread of its own.
            tokio::spawn(async move {
                while let Some(kills) = watch.next().await {
                    if !on_kills(kills) {
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    fn oom_kills(&self) -> Option<u64> {
        self.cgroup.as_ref()?.stats().ok().map(|s| s.oom_kills)
    }

    fn signal_all(&self, signal: i32, thaw: bool) -> Result<bool, String> {
        let Some(cg) = &self.cgroup else {
            return Ok(false);
        };
        cg.kill_all(signal).map_err(|e| e.to_string())?;
        if thaw {
            // Signals to a frozen cgroup wait for the thaw.
            let _ = cg.thaw();
        }
        Ok(true)
    }

    fn pids(&self) -> Result<Vec<i32>, String> {
        match &self.cgroup {
            Some(cg) => cg.pids().map_err(|e| e.to_string()),
            None => Ok(vec![self.init_pid]),
        }
    }

    fn freezer(&self, frozen: bool) -> Result<Job, Fault> {
        let cg = self
            .cgroup
            .clone()
            .ok_or_else(|| Fault::Precondition("the container has no cgroup".into()))?;
        Ok(Box::new(move || {
            if frozen { cg.freeze() } else { cg.thaw() }.map_err(|e| e.to_string())
        }))
    }

    fn update(&self, res: &oci_spec::runtime::LinuxResources) -> Result<(), Fault> {
        crate::cgroup::check(res).map_err(|e| Fault::Invalid(e.to_string()))?;
        let cg = self
            .cgroup
            .as_ref()
            .ok_or_else(|| Fault::Precondition("the container has no cgroup".into()))?;
        cg.apply(res)
            .map_err(|e| Fault::Precondition(e.to_string()))
    }

    fn stats(&self) -> Result<Any, Fault> {
        let cg = self
            .cgroup
            .as_ref()
            .ok_or_else(|| Fault::Precondition("the container has no cgroup".into()))?;
        let s = cg.stats().map_err(|e| Fault::Internal(e.to_string()))?;
        let mut any = Any::new();
        let encoded = match cg.version() {
            crate::cgroup::Version::V1 => {
                any.type_url = "io.containerd.cgroups.v1.Metrics".into();
                crate::metrics::v1(&s).write_to_bytes()
            }
            crate::cgroup::Version::V2 => {
                any.type_url = "io.containerd.cgroups.v2.Metrics".into();
                crate::metrics::v2(&s).write_to_bytes()
            }
        };
        any.value = encoded.map_err(|e| Fault::Internal(format!("encoding metrics: {e}")))?;
        Ok(any)
    }

    fn start(&self, p: &mut Process, which: &Which) -> Result<Job, String> {
        let ch = p.take_channel()?;
        let pid = p.pid;
        let poststart = which.is_init().then(|| {
            (
                crate::hooks::Point::Poststart.of(self.hooks.as_ref()),
                self.state.clone(),
                self.cgroup.clone(),
            )
        });
        Ok(Box::new(move || {
            process::start_blocking(ch)?;
            // poststart: the workload runs; a failing hook kills the
            // container (as runc does) and fails Start.
            if let Some((hooks, state, cgroup)) = poststart {
                let state = state.with("running", pid);
                if let Err(e) =
                    crate::hooks::run_from_shim(crate::hooks::Point::Poststart, &hooks, &state)
                {
                    if let Some(cg) = &cgroup {
                        let _ = cg.kill_all(libc::SIGKILL);
                    }
                    let _ = kill(pid, nix::sys::signal::Signal::SIGKILL);
                    return Err(e);
                }
            }
            Ok(())
        }))
    }

    fn exec(
        &self,
        _exec_id: &str,
        process_spec: oci_spec::runtime::Process,
        uris: &StdioUris,
    ) -> Job<Process> {
        let (init_pid, namespace, cgroup, seccomp) = (
            self.init_pid,
            self.namespace.clone(),
            self.cgroup.clone(),
            self.seccomp.clone().map(Box::new),
        );
        let (id, uris) = (self.id.clone(), uris.clone());
        Box::new(move || {
            let (stdio, io) = ProcessIo::prepare(&uris, &id, &namespace)
                .map_err(|e| format!("setting up stdio: {e}"))?;
            let oom_score_adj = process_spec.oom_score_adj();
            // An exec runs under the container's seccomp profile, as in runc.
            let msg = crate::channel::ToInit::Exec {
                pid: init_pid,
                process: Box::new(process_spec),
                seccomp,
            };
            let (mut p, pty) = process::Helper::spawn(stdio)?
                .send_setup(&msg, &[], cgroup.as_ref(), None)?
                .wait_ready(io, &|_| Ok(()), oom_score_adj)?;
            if let Some(m) = pty {
                p.io.attach_pty(&uris, m)
                    .map_err(|e| format!("connecting the terminal: {e}"))?;
            }
            Ok(p)
        })
    }

    fn delete(mut self) {
        // The run dir is <run_dir>/<namespace>/<id>.
        if let Some(run_root) = self.run_dir.parent().and_then(|p| p.parent()) {
            crate::faultpoint::pause("delete", run_root, &self.id);
        }
        self.cleanup();
        // poststop: after the container is gone; a failure is logged.
        let poststop = crate::hooks::Point::Poststop.of(self.hooks.as_ref());
        let state = self.state.with("stopped", 0);
        if let Err(e) =
            crate::hooks::run_from_shim(crate::hooks::Point::Poststop, &poststop, &state)
        {
            log::warn!("container {}: {e}", self.id);
        }
    }

    fn release(mut self) {
        self.cleanup();
    }
}

impl lifecycle::Process for Process {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn signal(&self, signal: i32) -> Result<(), String> {
        let signal = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| format!("invalid signal {signal}"))?;
        kill(self.pid, signal)
    }

    fn resize_pty(&self, width: u32, height: u32) -> Result<(), String> {
        self.io
            .resize(width, height)
            .map_err(|e| format!("resizing the terminal: {e}"))
    }

    fn close_stdin(&mut self) {
        self.io.close_stdin();
    }

    fn take_output(&mut self) -> Drain {
        let mut io = std::mem::take(&mut self.io);
        Box::pin(async move { io.drain().await })
    }
}
