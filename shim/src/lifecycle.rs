//! A task's lifecycle, apart from the mechanism that runs it: the states of
//! a container's init and of its exec processes as explicit state machines
//! (containerd's Go shim's `init_state.go`/`exec_state.go`), their exits,
//! and the small interface the task service (`service.rs`) drives the
//! mechanism through: [`Runtime`] makes a [`Container`], whose processes are
//! [`Process`]es (as rust-extensions' runc-shim's container and process
//! traits). The host's mechanism (namespaces, rootfs, init process,
//! cgroups) implements it in `host.rs`; the service's unit tests use a fake.
//!
//! ```text
//! init:  Created --start--> Running --pause--> Paused --resume--> Running
//!           |                  |                 |
//!           +------exit--------+------exit-------+----> Stopped --delete--> (gone)
//!           +------------------------------delete------------------------> (gone)
//! exec:  Created --start--> Running --exit--> Stopped --delete--> (gone)
//!           +------exit-------------------------^
//!           +--------------------------delete------------------> (gone)
//! ```
//! Only the transitions above exist; every other request is refused with the
//! state it was made in. An exec is never paused by itself (its container
//! is), and is started only while its container's init runs.

use crate::container::{BundleId, CreateRequest, PodUsers};
use crate::stdio::StdioUris;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
        }
    }
}

/// What may happen to a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Start,
    Pause,
    Resume,
    Exit,
    Delete,
}

/// Which process of a container a request names: its init (containerd's
/// empty exec id) or one of its execs. The one place an exec id is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Which {
    Init,
    Exec(String),
}

impl Which {
    pub fn of(exec_id: &str) -> Which {
        if exec_id.is_empty() {
            Which::Init
        } else {
            Which::Exec(exec_id.to_string())
        }
    }

    pub fn is_init(&self) -> bool {
        matches!(self, Which::Init)
    }
}

/// The kind of a process, which decides its transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Init,
    Exec,
}

/// The one place that knows which transitions exist.
pub fn transition(kind: Kind, from: State, ev: Event) -> Result<State, String> {
    use Event as E;
    use State as S;
    match (kind, from, ev) {
        (_, S::Created, E::Start) => Ok(S::Running),
        (Kind::Init, S::Running, E::Pause) => Ok(S::Paused),
        (Kind::Init, S::Paused, E::Resume) => Ok(S::Running),
        (_, S::Created | S::Running | S::Paused, E::Exit) => Ok(S::Stopped),
        (_, S::Created | S::Stopped, E::Delete) => Ok(S::Stopped),
        (Kind::Exec, _, E::Pause | E::Resume) => Err(format!(
            "cannot {} an exec process (its container is paused and resumed)",
            format!("{ev:?}").to_lowercase()
        )),
        (_, s, e) => Err(format!(
            "cannot {} a process that is {}",
            format!("{e:?}").to_lowercase(),
            s.name()
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// One process's life: its state, its exit (watched by Wait), and whether
/// its exit must wait for the events of its start to be out.
pub struct Life {
    kind: Kind,
    state: State,
    /// The exit, as soon as the process is reaped: while its output drains
    /// (before [`Life::exit`] is set and the exit is published), the
    /// process is already reported stopped and never signalled by pid.
    reaped: Option<Exit>,
    exit_tx: watch::Sender<Option<Exit>>,
    /// While the events of its creation or start are being published: an
    /// exit seen meanwhile is held here, handled once they are out (so that
    /// TaskExit never precedes TaskCreate, TaskStart, TaskExecAdded or
    /// TaskExecStarted).
    holding: bool,
    held_exit: Option<i32>,
}

impl Life {
    pub fn new(kind: Kind) -> Life {
        let (exit_tx, _) = watch::channel(None);
        Life {
            kind,
            state: State::Created,
            reaped: None,
            exit_tx,
            holding: false,
            held_exit: None,
        }
    }

    /// The state as the machine has it (the exit not yet recorded).
    pub fn state(&self) -> State {
        self.state
    }

    /// The state as reported: stopped from the moment the process is reaped.
    pub fn current(&self) -> State {
        if self.reaped.is_some() {
            State::Stopped
        } else {
            self.state
        }
    }

    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit_tx.subscribe()
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit_tx.borrow()
    }

    /// The exit as reported: from the moment the process is reaped.
    pub fn reported_exit(&self) -> Option<Exit> {
        self.exit().or(self.reaped)
    }

    /// Whether `ev` may happen now (nothing changes).
    pub fn check(&self, ev: Event) -> Result<State, String> {
        transition(self.kind, self.current(), ev)
    }

    pub fn apply(&mut self, ev: Event) -> Result<(), String> {
        self.state = transition(self.kind, self.state, ev)?;
        Ok(())
    }

    /// The process was reaped (its output may still drain).
    pub fn set_reaped(&mut self, status: u32) {
        self.reaped.get_or_insert(Exit {
            status,
            at: SystemTime::now(),
        });
    }

    /// Records the exit (once) and wakes every waiter.
    pub fn set_exited(&mut self, status: u32) {
        if self.exit().is_some() {
            return;
        }
        self.state = transition(self.kind, self.state, Event::Exit).unwrap_or(State::Stopped);
        self.exit_tx.send_replace(Some(Exit {
            status,
            at: SystemTime::now(),
        }));
    }

    /// From now on an exit is held (see [`Life::release`]).
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Whether an exit is to be held now: if so it is.
    pub fn held(&mut self, code: i32) -> bool {
        if self.holding {
            self.held_exit = Some(code);
        }
        self.holding
    }

    /// Ends the hold: the exit seen meanwhile, for the caller to handle.
    pub fn release(&mut self) -> Option<i32> {
        self.holding = false;
        self.held_exit.take()
    }
}

/// Exits of pids no process is registered for. They are held only while a
/// start window is open (Create or Exec spawning a process that may exit
/// before its pid is registered), as containerd's Go shim does, and
/// forgotten when the last window closes: a later process that gets the
/// same pid must not be reported exited by a stale record.
#[derive(Default)]
pub struct ExitHold(std::sync::Mutex<HoldState>);

#[derive(Default)]
struct HoldState {
    windows: usize,
    exits: HashMap<i32, i32>,
}

/// An open start window; closed on drop.
pub struct StartWindow(Arc<ExitHold>);

impl ExitHold {
    fn state(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open(self: &Arc<Self>) -> StartWindow {
        self.state().windows += 1;
        StartWindow(self.clone())
    }

    /// An exit no process claims: held if a window is open, else dropped.
    pub fn exited(&self, pid: i32, code: i32) {
        let mut s = self.state();
        if s.windows > 0 {
            s.exits.insert(pid, code);
        } else {
            log::debug!("exit of pid {pid} ({code}), not a process of ours");
        }
    }

    /// The held exit of a pid just registered.
    pub fn claim(&self, pid: i32) -> Option<i32> {
        self.state().exits.remove(&pid)
    }
}

impl Drop for StartWindow {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.windows = s.windows.saturating_sub(1);
        if s.windows == 0 {
            s.exits.clear();
        }
    }
}

/// Blocking work handed out under the service's lock and run off it.
pub type Job<T = ()> = Box<dyn FnOnce() -> Result<T, String> + Send>;

/// A process's output draining after its exit (bounded).
pub type Drain = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a mechanism failed, for the service to answer with the right code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request's values are refused (INVALID_ARGUMENT).
    Invalid(String),
    /// Not possible in the container's present shape (FAILED_PRECONDITION).
    Precondition(String),
    /// The host failed (INTERNAL).
    Internal(String),
}

/// Makes containers: the mechanism's entry point.
pub trait Runtime: Send + Sync + 'static {
    type Container: Container;

    /// Creates a container and its init, set up and waiting for Start; on
    /// failure nothing is left behind. Blocking.
    #[allow(clippy::type_complexity)]
    fn create(
        &self,
        req: CreateRequest,
    ) -> Result<(Self::Container, <Self::Container as Container>::Process), String>;
}

/// One container's mechanism: what the task service asks of it.
pub trait Container: Send + 'static {
    type Process: Process;

    /// The bundle directory's identity at create (the orphan watchdog's).
    fn bundle_id(&self) -> Option<BundleId>;

    /// A sandbox's IDs, for the service to keep for the pod's containers.
    fn take_pod_users(&mut self) -> Option<PodUsers>;

    /// Calls `on_kills` with the container's OOM-kill count each time it
    /// grows, until it returns false.
    fn watch_ooms(&self, on_kills: Box<dyn FnMut(u64) -> bool + Send>) -> Result<(), String>;

    /// OOM kills so far, if known.
    fn oom_kills(&self) -> Option<u64>;

    /// Signals every process of the container (thawed first if `thaw`);
    /// false when the container has no cgroup to reach them through.
    fn signal_all(&self, signal: i32, thaw: bool) -> Result<bool, String>;

    /// The pids of the container's processes.
    fn pids(&self) -> Result<Vec<i32>, String>;

    /// The job that freezes (or thaws) the container.
    fn freezer(&self, frozen: bool) -> Result<Job, Fault>;

    /// Applies new resources (an Update's).
    fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), Fault>;

    /// The container's metrics (cgroup v1 or v2 `Metrics`).
    fn stats(&self) -> Result<Any, Fault>;

    /// The job that makes a process waiting for Start exec its workload
    /// (for the init, then the poststart hooks).
    fn start(&self, process: &mut Self::Process, which: &Which) -> Result<Job, String>;

    /// The job that makes an exec process, waiting for Start.
    fn exec(
        &self,
        exec_id: &str,
        process: oci_spec::runtime::Process,
        uris: &StdioUris,
    ) -> Job<Self::Process>;

    /// Releases what the container holds (its processes gone) and runs the
    /// poststop hooks: Delete. Blocking.
    fn delete(self);

    /// Releases what the container holds (its processes gone): containerd
    /// forgot it. Blocking.
    fn release(self);
}

/// One process's mechanism.
pub trait Process: Send + 'static {
    fn pid(&self) -> i32;

    /// Sends `signal` (already checked to be one) to the process.
    fn signal(&self, signal: i32) -> Result<(), String>;

    fn resize_pty(&self, width: u32, height: u32) -> Result<(), String>;

    fn close_stdin(&mut self);

    /// The process's output, to drain once it exited.
    fn take_output(&mut self) -> Drain;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_drawn_transitions_exist() {
        use Event as E;
        use State as S;
        let all_s = [S::Created, S::Running, S::Paused, S::Stopped];
        let all_e = [E::Start, E::Pause, E::Resume, E::Exit, E::Delete];
        let common = [
            (S::Created, E::Start, S::Running),
            (S::Created, E::Exit, S::Stopped),
            (S::Running, E::Exit, S::Stopped),
            (S::Paused, E::Exit, S::Stopped),
            (S::Created, E::Delete, S::Stopped),
            (S::Stopped, E::Delete, S::Stopped),
        ];
        let init_only = [
            (S::Running, E::Pause, S::Paused),
            (S::Paused, E::Resume, S::Running),
        ];
        for kind in [Kind::Init, Kind::Exec] {
            for s in all_s {
                for e in all_e {
                    let want = common
                        .iter()
                        .chain(init_only.iter().filter(|_| kind == Kind::Init))
                        .find(|(a, b, _)| *a == s && *b == e)
                        .map(|t| t.2);
                    match (transition(kind, s, e), want) {
                        (Ok(got), Some(w)) => assert_eq!(got, w, "{kind:?} {s:?} {e:?}"),
                        (Err(msg), None) if kind == Kind::Exec && e == E::Pause => {
                            assert!(msg.contains("exec"), "{msg}")
                        }
                        (Err(msg), None) if kind == Kind::Exec && e == E::Resume => {
                            assert!(msg.contains("exec"), "{msg}")
                        }
                        (Err(msg), None) => assert!(msg.contains(s.name()), "{msg}"),
                        (got, want) => panic!("{kind:?} {s:?} {e:?}: got {got:?}, want {want:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn exits_are_held_while_the_start_events_go_out() {
        let mut l = Life::new(Kind::Init);
        assert!(!l.held(1), "not holding");
        l.hold();
        assert!(l.held(137));
        assert_eq!(l.release(), Some(137));
        assert_eq!(l.release(), None);
        assert!(!l.held(1));
    }

    /// An exit seen during a start window is claimed by the process
    /// registered in it; outside a window, or after it closed, an unknown
    /// pid's exit is forgotten, so a later process that reuses the pid is
    /// not reported exited.
    #[test]
    fn unknown_exits_are_held_only_during_a_start_window() {
        let hold = Arc::new(ExitHold::default());
        hold.exited(100, 0);
        assert_eq!(hold.claim(100), None, "no window: dropped");
        let w = hold.open();
        hold.exited(101, 3);
        hold.exited(102, 9);
        assert_eq!(hold.claim(101), Some(3), "a fast exit in the window");
        let w2 = hold.open();
        drop(w);
        assert_eq!(hold.claim(102), Some(9), "a window is still open");
        hold.exited(103, 1);
        drop(w2);
        // pid 103 reused by a process registered later: nothing stale.
        let _w3 = hold.open();
        assert_eq!(hold.claim(103), None, "forgotten when the windows closed");
    }
}
