//! The containerd task service (task API v2): requests, events and exits,
//! over the containers this shim serves.

use crate::config::Config;
use crate::config::Orphan;
use crate::container::BundleId;
use crate::container::{Container, CreateRequest, PodRole, PodUsers};
use crate::containerd_api::{container_known, Known};
use crate::process::{self, Event, Process, State};
use crate::stdio::{ProcessIo, StdioUris};
use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim_protos::api::{self, Empty, Status};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext, Code};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Mutex;

type TtResult<T> = ttrpc::Result<T>;

/// Whether a found (container, exec id) is the container's init.
fn exec_id_is_init(found: &Option<(String, String)>) -> bool {
    found.as_ref().is_some_and(|(_, e)| e.is_empty())
}

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn ts(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut x = Timestamp::new();
    x.seconds = d.as_secs() as i64;
    x.nanos = d.subsec_nanos() as i32;
    MessageField::some(x)
}

pub struct Inner {
    pub namespace: String,
    pub containers: Mutex<HashMap<String, Container>>,
    /// The user namespaces of the CRI pods served here, by sandbox id, kept
    /// from the sandbox's create to its delete for the pod's containers.
    pods: Mutex<HashMap<String, PodUsers>>,
    /// Exits of pids not (yet) known to any process, held while a process
    /// is being started (a fast exit can beat the registration of its pid).
    unclaimed: Arc<ExitHold>,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
    config_path: Mutex<Option<std::path::PathBuf>>,
    /// Held by Pause and Resume (only), one at a time.
    freezing: Mutex<()>,
    /// Container ids whose cgroup reported an OOM kill.
    oom_tx: tokio::sync::mpsc::UnboundedSender<String>,
    /// Who started this shim, for telling whether containerd forgot it.
    origin: Origin,
    /// Creates under way (their container is not in `containers` yet).
    creating: AtomicUsize,
    /// Set once the shim has decided to exit as an orphan: Create refuses.
    exiting: AtomicBool,
    /// The `[orphan]` settings (the config's; refreshed by every Create).
    orphan: std::sync::Mutex<Orphan>,
}

/// What the serving shim was started for: containerd's gRPC address
/// (`-address`), the task id (`-id`) and its bundle (the shim's cwd).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub address: String,
    pub id: String,
    pub bundle: Option<std::path::PathBuf>,
    /// Its ttrpc socket (`-socket`).
    pub socket: String,
}

/// Counts a Create as under way while it lives.
struct Creating<'a>(&'a AtomicUsize);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    pub fn new(
        namespace: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
        origin: Origin,
    ) -> Self {
        let (oom_tx, mut oom_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // The config containerd's environment names (a Create's options may
        // name another; its [orphan] settings replace these then).
        let orphan = Config::load(None).map(|c| c.orphan).unwrap_or_else(|e| {
            log::warn!("{e}; orphan checks use the defaults until a Create");
            Orphan::default()
        });
        let svc = TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                containers: Mutex::new(HashMap::new()),
                pods: Mutex::new(HashMap::new()),
                unclaimed: Arc::new(ExitHold::default()),
                publisher,
                exit,
                config_path: Mutex::new(None),
                freezing: Mutex::new(()),
                oom_tx,
                origin,
                creating: AtomicUsize::new(0),
                exiting: AtomicBool::new(false),
                orphan: std::sync::Mutex::new(orphan),
            }),
        };
        let watcher = svc.clone();
        tokio::spawn(async move { watcher.watch_exits().await });
        let watchdog = svc.clone();
        tokio::spawn(async move { watchdog.watch_orphans().await });
        let oom = svc.clone();
        tokio::spawn(async move {
            while let Some(id) = oom_rx.recv().await {
                log::info!("container {id} had a process killed by the OOM killer");
                oom.publish(
                    topics::TASK_OOM_EVENT_TOPIC,
                    Box::new(ev::TaskOOM {
                        container_id: id,
                        ..Default::default()
                    }),
                )
                .await;
            }
        });
        svc
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .inner
            .publisher
            .publish(Default::default(), topic, &self.inner.namespace, event)
            .await
        {
            log::error!("publishing {topic}: {e}");
        }
    }

    async fn watch_exits(&self) {
        let mut sub = match monitor_subscribe(Topic::Pid).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("subscribing to process exits: {e}");
                return;
            }
        };
        while let Some(e) = sub.rx.recv().await {
            if let Subject::Pid(pid) = e.subject {
                self.on_exit(pid, e.exit_code).await;
            }
        }
    }

    /// A process of ours exited with `code` (128+signal for a signal): it is
    /// reported stopped at once; its output is drained (bounded), then its
    /// exit is recorded and published.
    async fn on_exit(&self, pid: i32, code: i32) {
        let mut drains = Vec::new();
        let found = {
            let mut cs = self.inner.containers.lock().await;
            let mut found = None;
            for c in cs.values_mut() {
                if c.init.pid == pid {
                    found = Some((c.id.clone(), String::new()));
                } else if let Some(p) = c.execs.values().find(|p| p.pid == pid) {
                    found = Some((c.id.clone(), p.exec_id.clone()));
                }
                if let Some((_, exec_id)) = &found {
                    let p = if exec_id.is_empty() {
                        Some(&mut c.init)
                    } else {
                        c.execs.get_mut(exec_id)
                    };
                    if let Some(p) = p {
                        p.reaped = Some(crate::process::Exit {
                            status: code as u32,
                            at: SystemTime::now(),
                        });
                        drains.push(std::mem::take(&mut p.io));
                    }
                    // The init is gone: so is everything else in the
                    // container, now (a process left holding its output
                    // would hold its exit back until the drain times out).
                    if exec_id_is_init(&found) {
                        if let Some(cg) = &c.cgroup {
                            let _ = cg.kill_all(libc::SIGKILL);
                        }
                    }
                    break;
                }
            }
            if found.is_none() {
                // Decided while the containers are locked: a start registers
                // its pid under that lock, then claims its exit.
                self.inner.unclaimed.exited(pid, code);
            }
            found
        };
        let Some((cid, exec_id)) = found else {
            return;
        };
        for mut io in drains {
            io.drain().await;
        }
        let (exited_at, unreported_ooms) = {
            let mut cs = self.inner.containers.lock().await;
            let Some(c) = cs.get_mut(&cid) else { return };
            // OOM kills the watcher has not reported yet are reported before
            // the exit (the cgroup exists until Delete).
            let mut unreported = 0;
            if let (true, Some(cg)) = (exec_id.is_empty(), &c.cgroup) {
                if let Ok(s) = cg.stats() {
                    let before = c.oom_reported.fetch_max(s.oom_kills, Ordering::SeqCst);
                    unreported = s.oom_kills.saturating_sub(before);
                }
            }
            let at = if exec_id.is_empty() {
                c.init.set_exited(code as u32);
                // The init is gone: so is everything else in the container.
                if let Some(cg) = &c.cgroup {
                    let _ = cg.kill_all(libc::SIGKILL);
                }
                c.init.exit().map(|e| e.at)
            } else {
                // Deleted meanwhile: nothing left to report.
                let Some(p) = c.execs.get_mut(&exec_id) else {
                    return;
                };
                p.set_exited(code as u32);
                p.exit().map(|e| e.at)
            };
            (at, unreported)
        };
        for _ in 0..unreported_ooms {
            let e = ev::TaskOOM {
                container_id: cid.clone(),
                ..Default::default()
            };
            self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(e))
                .await;
        }
        let id = if exec_id.is_empty() {
            cid.clone()
        } else {
            exec_id
        };
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(ev::TaskExit {
                container_id: cid,
                id,
                pid: pid as u32,
                exit_status: code as u32,
                exited_at: ts(exited_at.unwrap_or_else(SystemTime::now)),
                ..Default::default()
            }),
        )
        .await;
    }

    /// Registers a new pid; if it already exited, handles that now.
    async fn claim(&self, pid: i32) {
        let code = self.inner.unclaimed.claim(pid);
        if let Some(code) = code {
            let me = self.clone();
            tokio::spawn(async move { me.on_exit(pid, code).await });
        }
    }

    async fn config(&self, options: &MessageField<Any>) -> Result<Config, ttrpc::Error> {
        let mut path = self.inner.config_path.lock().await;
        if let Some(p) = config_path_from_options(options) {
            *path = Some(p);
        }
        let c = Config::load(path.as_deref()).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        log::set_max_level(c.log_filter());
        Ok(c)
    }
}

/// Why a container's bundle says containerd forgot it: the directory is
/// gone, or another directory (containerd made a new bundle for a new task
/// of the same id) stands in its place.
fn bundle_forgotten(bundle: &std::path::Path, at_create: Option<BundleId>) -> Option<String> {
    match BundleId::of(bundle) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its bundle {} is gone", bundle.display()))
        }
        Ok(now) if at_create.is_some_and(|then| then != now) => Some(format!(
            "its bundle {} was replaced by another",
            bundle.display()
        )),
        _ => None,
    }
}

/// Containers a shim serves are asked about every this many checks (their
/// bundles are looked at every check): containerd removes the bundle of a
/// task it forgets, so the question is a second opinion and kept rare. The
/// task a shim was started for, before any Create, is asked about at every
/// check.
const ASK_EVERY: u64 = 6;

/// NOT_FOUND answers in a row from containerd that make a container
/// forgotten (a check interval apart): one could be a containerd that
/// answers before it has loaded everything; no answer counts for nothing.
const NOT_FOUND_STRIKES: u32 = 2;

impl TaskService {
    /// The orphan watchdog: a shim that containerd no longer knows exits by
    /// itself, releasing what it holds. Every `[orphan] check_seconds`:
    /// - a container whose bundle containerd removed (or replaced), or
    ///   (with `ask_containerd`, every `ASK_EVERY` checks) whose record
    ///   containerd's containers API answers NOT_FOUND for twice in a row,
    ///   is killed and cleaned up as a Delete would (range, cgroup, run dir);
    /// - with no container left and no Create under way, the shim exits:
    ///   at once if it just forgot its last container or if the task it was
    ///   started for is forgotten before any Create came (its bundle gone,
    ///   or NOT_FOUND twice), else once it has had nothing to serve for
    ///   `grace_seconds`.
    async fn watch_orphans(&self) {
        let mut strikes: HashMap<String, u32> = HashMap::new();
        let mut idle_since = Some(Instant::now());
        let mut served = false;
        // Checks until the containers served are asked about again.
        let mut until_ask: u64 = ASK_EVERY;
        loop {
            until_ask -= 1;
            let ask_held = until_ask == 0;
            if ask_held {
                until_ask = ASK_EVERY;
            }
            let settings = match self.inner.orphan.lock() {
                Ok(o) => o.clone(),
                Err(p) => p.into_inner().clone(),
            };
            tokio::time::sleep(settings.check()).await;
            let held: Vec<(String, std::path::PathBuf, Option<BundleId>)> = {
                let cs = self.inner.containers.lock().await;
                cs.values()
                    .map(|c| (c.id.clone(), c.bundle.clone(), c.bundle_id))
                    .collect()
            };
            served |= !held.is_empty();
            let mut forgotten = Vec::new();
            for (id, bundle, at_create) in &held {
                if let Some(why) = bundle_forgotten(bundle, *at_create) {
                    forgotten.push((id.clone(), why));
                } else if settings.ask_containerd && ask_held {
                    if let Some(why) = self.not_found(id, &mut strikes).await {
                        forgotten.push((id.clone(), why));
                    }
                }
            }
            strikes.retain(|id, _| {
                held.iter().any(|(h, _, _)| h == id) || *id == self.inner.origin.id
            });
            for (id, why) in &forgotten {
                self.forget(id, why).await;
            }
            // Nothing to serve?
            if !self.inner.containers.lock().await.is_empty()
                || self.inner.creating.load(Ordering::SeqCst) > 0
            {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let origin = &self.inner.origin;
            let why = if !forgotten.is_empty() {
                Some("containerd forgot its last container".to_string())
            } else if since.elapsed() >= settings.grace() {
                Some(format!(
                    "it has had no container to serve for {} s ([orphan] grace_seconds)",
                    since.elapsed().as_secs()
                ))
            } else if served {
                None
            } else if let Some(why) = origin
                .bundle
                .as_deref()
                .and_then(|b| bundle_forgotten(b, None))
            {
                Some(format!("no Create came for {} and {why}", origin.id))
            } else if settings.ask_containerd && !origin.id.is_empty() {
                self.not_found(&origin.id, &mut strikes)
                    .await
                    .map(|why| format!("no Create came and {why}"))
            } else {
                None
            };
            let Some(why) = why else { continue };
            // Decided under the containers' lock, against a Create that
            // just began (it counts itself first, then looks at `exiting`).
            {
                let cs = self.inner.containers.lock().await;
                if !cs.is_empty() || self.inner.creating.load(Ordering::SeqCst) > 0 {
                    idle_since = None;
                    continue;
                }
                self.inner.exiting.store(true, Ordering::SeqCst);
                if self.inner.creating.load(Ordering::SeqCst) > 0 {
                    self.inner.exiting.store(false, Ordering::SeqCst);
                    idle_since = None;
                    continue;
                }
            }
            log::warn!(
                "shim {} (pid {}) exits: containerd no longer needs it: {why}",
                origin.id,
                std::process::id()
            );
            self.inner.pods.lock().await.clear();
            self.inner.exit.signal();
            return;
        }
    }

    /// Asks containerd whether it has container `id`; the reason it is
    /// forgotten once it answered NOT_FOUND `NOT_FOUND_STRIKES` times in a
    /// row. No answer changes nothing.
    async fn not_found(&self, id: &str, strikes: &mut HashMap<String, u32>) -> Option<String> {
        let origin = &self.inner.origin;
        if origin.address.is_empty() {
            return None;
        }
        match container_known(&origin.address, &self.inner.namespace, id).await {
            Ok(Known::Yes) => {
                strikes.remove(id);
                None
            }
            Ok(Known::No) => {
                let n = strikes.entry(id.to_string()).or_default();
                *n += 1;
                (*n >= NOT_FOUND_STRIKES).then(|| {
                    format!(
                        "containerd at {} has no container {id} in namespace {} ({} answers in a row)",
                        origin.address,
                        self.inner.namespace,
                        *n
                    )
                })
            }
            Err(e) => {
                log::debug!("orphan check of {id}: no answer from containerd: {e}");
                None
            }
        }
    }

    /// Kills container `id` (every process in its cgroup), waits for its
    /// init (10 s at most), ends its pod if it is a sandbox, and takes it
    /// out of the containers served: what Delete does before the cleanup.
    async fn stop_and_take(&self, id: &str) -> TtResult<Container> {
        let mut rx = {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, id)?;
            if c.init.reported_exit().is_none() {
                if let Some(cg) = &c.cgroup {
                    let _ = cg.kill_all(libc::SIGKILL);
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.init.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            c.init.exit_watch()
        };
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while rx.borrow_and_update().is_none() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if waited.is_err() {
            log::warn!("the init of {id} did not exit within 10 s of SIGKILL");
        }
        self.end_pod_if_sandbox(id).await;
        let mut cs = self.inner.containers.lock().await;
        cs.remove(id)
            .ok_or_else(|| not_found(&format!("container {id}")))
    }

    /// A container containerd has forgotten: killed and everything it holds
    /// released (nobody will Delete it).
    async fn forget(&self, id: &str, why: &str) {
        log::warn!(
            "containerd no longer knows container {id}: {why}; killing it and releasing its ID range, cgroup and run dir"
        );
        let mut c = match self.stop_and_take(id).await {
            Ok(c) => c,
            Err(_) => return, // deleted meanwhile
        };
        if let Err(e) = tokio::task::spawn_blocking(move || c.cleanup()).await {
            log::error!("cleaning up forgotten container {id}: {e}");
        }
    }
}

impl TaskService {
    /// A sandbox's delete ends its pod: the pod's user namespace is no
    /// longer handed out, and the processes of the pod's other containers
    /// (CRI stops them first; this is for a forced delete) are killed and
    /// waited for before the sandbox's cleanup releases the pod's range.
    async fn end_pod_if_sandbox(&self, id: &str) {
        let mut watches = Vec::new();
        let sandbox = {
            let cs = self.inner.containers.lock().await;
            let Some(PodRole::Sandbox(sandbox)) = cs.get(id).map(|c| c.role.clone()) else {
                return;
            };
            for c in cs.values() {
                if c.id == id || c.role != PodRole::Member(sandbox.clone()) {
                    continue;
                }
                if c.init.exit().is_none() {
                    log::warn!(
                        "pod {sandbox}: its sandbox is deleted while container {} runs: killing it",
                        c.id
                    );
                    if let Some(cg) = &c.cgroup {
                        let _ = cg.kill_all(libc::SIGKILL);
                    }
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(c.init.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    watches.push(c.init.exit_watch());
                }
            }
            sandbox
        };
        for mut rx in watches {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while rx.borrow_and_update().is_none() {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        self.inner.pods.lock().await.remove(&sandbox);
    }

    /// Pause (freeze the cgroup) or resume (thaw it), and say so.
    async fn set_paused(&self, id: &str, pause: bool) -> TtResult<Empty> {
        let event = if pause { Event::Pause } else { Event::Resume };
        // Pauses and resumes follow one another; the freezer's wait (up to
        // seconds) holds neither the containers' lock nor a runtime thread.
        let _one_at_a_time = self.inner.freezing.lock().await;
        let cg = {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, id)?;
            process::transition(c.init.state, event).map_err(precondition)?;
            c.cgroup
                .clone()
                .ok_or_else(|| precondition("the container has no cgroup".into()))?
        };
        let blocking_cg = cg.clone();
        tokio::task::spawn_blocking(move || {
            if pause {
                blocking_cg.freeze()
            } else {
                blocking_cg.thaw()
            }
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("freezer panicked: {e}")))?
        .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        {
            let mut cs = self.inner.containers.lock().await;
            let applied = get(&mut cs, id).and_then(|c| c.init.apply(event).map_err(precondition));
            if let Err(e) = applied {
                // The container exited or went meanwhile: leave nothing frozen.
                if pause {
                    let _ = tokio::task::spawn_blocking(move || cg.thaw()).await;
                }
                return Err(e);
            }
        }
        let container_id = id.to_string();
        if pause {
            let e = ev::TaskPaused {
                container_id,
                ..Default::default()
            };
            self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(e))
                .await;
        } else {
            let e = ev::TaskResumed {
                container_id,
                ..Default::default()
            };
            self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(e))
                .await;
        }
        Ok(Empty::new())
    }
}

/// `ConfigPath` of containerd's generic runtime options
/// (`runtimeoptions.v1.Options`: type_url = 1, config_path = 2).
pub fn config_path_from_options(options: &MessageField<Any>) -> Option<std::path::PathBuf> {
    let any = options.as_ref()?;
    if !any.type_url.contains("runtimeoptions") {
        return None;
    }
    let mut is = containerd_shim_protos::protobuf::CodedInputStream::from_bytes(&any.value);
    while let Ok(Some(tag)) = is.read_raw_tag_or_eof() {
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 2 && wire == 2 {
            return is
                .read_string()
                .ok()
                .filter(|s| !s.is_empty())
                .map(Into::into);
        }
        if is
            .skip_field(containerd_shim_protos::protobuf::rt::WireType::new(wire)?)
            .is_err()
        {
            return None;
        }
    }
    None
}

fn state_status(s: State) -> Status {
    match s {
        State::Created => Status::CREATED,
        State::Running => Status::RUNNING,
        State::Paused => Status::PAUSED,
        State::Stopped => Status::STOPPED,
    }
}

fn not_found(what: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("{what} not found"))
}

fn get<'a>(cs: &'a mut HashMap<String, Container>, id: &str) -> TtResult<&'a mut Container> {
    cs.get_mut(id)
        .ok_or_else(|| not_found(&format!("container {id}")))
}

fn process<'a>(c: &'a mut Container, exec_id: &str) -> TtResult<&'a mut Process> {
    if exec_id.is_empty() {
        Ok(&mut c.init)
    } else {
        c.execs
            .get_mut(exec_id)
            .ok_or_else(|| not_found(&format!("exec {exec_id} of container {}", c.id)))
    }
}

fn precondition(e: String) -> ttrpc::Error {
    status(Code::FAILED_PRECONDITION, e)
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtResult<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(status(
                Code::UNIMPLEMENTED,
                "idshift does not restore checkpoints",
            ));
        }
        let started = std::time::Instant::now();
        self.inner.creating.fetch_add(1, Ordering::SeqCst);
        let _creating = Creating(&self.inner.creating);
        if self.inner.exiting.load(Ordering::SeqCst) {
            return Err(status(
                Code::UNAVAILABLE,
                format!(
                    "this shim is exiting (containerd had forgotten it); create {} again",
                    req.id
                ),
            ));
        }
        let _window = self.inner.unclaimed.open();
        if self.inner.containers.lock().await.contains_key(&req.id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let config = self.config(&req.options).await?;
        if let Ok(mut o) = self.inner.orphan.lock() {
            *o = config.orphan.clone();
        }
        // `shim delete` (after a crash) gets no runtime options: it finds
        // the config this container was made with in its bundle.
        if let Some(p) = self.inner.config_path.lock().await.clone() {
            let file = std::path::Path::new(&req.bundle).join(crate::config::CONFIG_PATH_FILE);
            std::fs::write(&file, p.as_os_str().as_encoded_bytes()).map_err(|e| {
                status(
                    Code::INTERNAL,
                    format!("recording the config path in {}: {e}", file.display()),
                )
            })?;
        }
        // A container of a CRI pod joins the user namespace its sandbox made.
        let role = crate::container::read_spec(std::path::Path::new(&req.bundle))
            .map(|spec| crate::container::pod_role(&req.id, &spec))
            .unwrap_or(PodRole::None);
        let pod = match &role {
            PodRole::Member(sandbox) => match self.inner.pods.lock().await.get(sandbox) {
                Some(p) => Some(p.try_clone().map_err(|e| {
                    status(
                        Code::INTERNAL,
                        format!("the user namespace of pod {sandbox}: {e}"),
                    )
                })?),
                None => None,
            },
            _ => None,
        };
        let creq = CreateRequest {
            id: req.id.clone(),
            namespace: self.inner.namespace.clone(),
            bundle: req.bundle.clone().into(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| rootfs::MountSpec {
                    fstype: m.type_.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.to_vec(),
                })
                .collect(),
            uris: StdioUris {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            config,
            pod,
            shim_socket: self.inner.origin.socket.clone(),
        };
        let (mut c, report) = tokio::task::spawn_blocking(move || Container::create(creq))
            .await
            .map_err(|e| status(Code::INTERNAL, format!("create task panicked: {e}")))?
            .map_err(|e| {
                log::error!("create {}: {e}", req.id);
                status(
                    Code::FAILED_PRECONDITION,
                    format!("idshift create {}: {e}", req.id),
                )
            })?;
        log::info!(
            "created {} (pid {}): userns {:.1} ms, rootfs {:.1} ms ({} strategy, {} in the shim, then 1 move_mount inside the container's own mount namespace), cgroup {:.1} ms, namespaces and init {:.1} ms{}, total {:.1} ms",
            req.id,
            c.init.pid,
            report.userns_ms,
            report.rootfs_ms,
            report.strategy,
            report.ops,
            report.cgroup_ms,
            report.init_ms,
            report.range.map(|r| format!(", host IDs {r}")).unwrap_or_default(),
            started.elapsed().as_secs_f64() * 1e3
        );
        let pid = c.init.pid;
        match c.cgroup.as_ref().map(|cg| cg.oom_watch()) {
            Some(Ok(Some(mut watch))) => {
                let (tx, id) = (self.inner.oom_tx.clone(), req.id.clone());
                let reported = c.oom_reported.clone();
                std::thread::spawn(move || {
                    while let Some(kills) = watch.wait() {
                        let before = reported.fetch_max(kills, Ordering::SeqCst);
                        for _ in before..kills {
                            if tx.send(id.clone()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            Some(Err(e)) => log::warn!("{}: OOM events unavailable: {e}", req.id),
            _ => {}
        }
        if let (PodRole::Sandbox(sandbox), Some(userns)) = (&c.role, c.pod_users.take()) {
            self.inner.pods.lock().await.insert(sandbox.clone(), userns);
        }
        self.inner.containers.lock().await.insert(req.id.clone(), c);
        self.claim(pid).await;
        let mut io = ev::TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(ev::TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(io),
                pid: pid as u32,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtResult<api::StartResponse> {
        let (ch, pid, poststart) = {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            let poststart = req.exec_id.is_empty().then(|| {
                (
                    crate::hooks::Point::Poststart.of(c.hooks.as_ref()),
                    c.state.clone(),
                    c.cgroup.clone(),
                )
            });
            let p = process(c, &req.exec_id)?;
            process::transition(p.state, Event::Start).map_err(precondition)?;
            (p.take_channel().map_err(precondition)?, p.pid, poststart)
        };
        let started = tokio::task::spawn_blocking(move || {
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
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return Err(e);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("start panicked: {e}")))?;
        if let Err(e) = started {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("starting {}: {e}", req.id),
            ));
        }
        {
            let mut cs = self.inner.containers.lock().await;
            if let Ok(c) = get(&mut cs, &req.id) {
                if let Ok(p) = process(c, &req.exec_id) {
                    // It may already have exited.
                    if p.state == State::Created {
                        let _ = p.apply(Event::Start);
                    }
                }
            }
        }
        if req.exec_id.is_empty() {
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(ev::TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            )
            .await;
        } else {
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(ev::TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtResult<api::StateResponse> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let bundle = c.bundle.display().to_string();
        let p = process(c, &req.exec_id)?;
        let exit = p.reported_exit();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle,
            pid: p.pid as u32,
            status: state_status(p.current()).into(),
            stdin: p.uris.stdin.clone(),
            stdout: p.uris.stdout.clone(),
            stderr: p.uris.stderr.clone(),
            terminal: p.uris.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| ts(e.at)).unwrap_or_default(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtResult<api::PidsResponse> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let pids = match &c.cgroup {
            Some(cg) => cg
                .pids()
                .map_err(|e| status(Code::INTERNAL, e.to_string()))?,
            None => vec![c.init.pid],
        };
        let mut resp = api::PidsResponse::new();
        for pid in pids {
            let mut info = containerd_shim_protos::api::ProcessInfo::new();
            info.pid = pid as u32;
            resp.processes.push(info);
        }
        Ok(resp)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtResult<Empty> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let sig = req.signal as i32;
        if req.all && req.exec_id.is_empty() {
            if let Some(cg) = &c.cgroup {
                cg.kill_all(sig)
                    .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
                if c.init.state == State::Paused || sig == libc::SIGKILL {
                    // Signals to a frozen cgroup wait for the thaw.
                    let _ = cg.thaw();
                }
                return Ok(Empty::new());
            }
        }
        let p = process(c, &req.exec_id)?;
        if p.current() == State::Stopped {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        }
        let signal = nix::sys::signal::Signal::try_from(sig)
            .map_err(|_| status(Code::INVALID_ARGUMENT, format!("invalid signal {sig}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), signal)
            .map_err(|e| status(Code::NOT_FOUND, format!("signalling pid {}: {e}", p.pid)))?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtResult<Empty> {
        let _window = self.inner.unclaimed.open();
        let (init_pid, namespace, cgroup, bundle) = {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            if c.init.current() != State::Running {
                return Err(precondition(format!(
                    "container {} is {}, not running",
                    req.id,
                    c.init.current().name()
                )));
            }
            (
                c.init.pid,
                self.inner.namespace.clone(),
                c.cgroup.clone(),
                c.bundle.clone(),
            )
        };
        let spec = req.spec.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "exec request without a process spec",
            )
        })?;
        let process_spec: oci_spec::runtime::Process = serde_json::from_slice(&spec.value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
        crate::container::validate_process(&process_spec)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
        let uris = StdioUris {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let exec_id = req.exec_id.clone();
        let id = req.id.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            // An exec runs under the container's seccomp profile, as in runc.
            let seccomp = crate::container::read_spec(&bundle)?
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
                .map(Box::new);
            let (stdio, io) = ProcessIo::prepare(&uris, &id, &namespace)
                .map_err(|e| format!("setting up stdio: {e}"))?;
            let msg = crate::channel::ToInit::Exec {
                pid: init_pid,
                process: Box::new(process_spec),
                seccomp,
            };
            let (mut p, pty) = process::spawn_blocking(
                &exec_id,
                &msg,
                &[],
                stdio,
                uris.clone(),
                io,
                process::Setup {
                    cgroup: cgroup.as_ref(),
                    run_hooks: &|_| Ok(()),
                },
            )?;
            if let Some(m) = pty {
                p.io.attach_pty(&uris, m)
                    .map_err(|e| format!("connecting the terminal: {e}"))?;
            }
            Ok::<_, String>(p)
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("exec panicked: {e}")))?;
        let spawned = match spawned {
            Ok(p) => p,
            Err(e) => {
                // The init died meanwhile (its exit kills the container's
                // cgroup, the exec's helper with it): say so.
                let mut cs = self.inner.containers.lock().await;
                let c = get(&mut cs, &req.id)?;
                if c.init.current() != State::Running {
                    return Err(precondition(format!(
                        "container {} is {}, not running",
                        req.id,
                        c.init.current().name()
                    )));
                }
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("exec in {}: {e}", req.id),
                ));
            }
        };
        let pid = spawned.pid;
        {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            c.execs.insert(req.exec_id.clone(), spawned);
        }
        self.claim(pid).await;
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(ev::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtResult<Empty> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let p = process(c, &req.exec_id)?;
        p.io.resize(req.width, req.height).map_err(|e| {
            status(
                Code::FAILED_PRECONDITION,
                format!("resizing the terminal: {e}"),
            )
        })?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtResult<Empty> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let p = process(c, &req.exec_id)?;
        if req.stdin {
            p.io.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtResult<api::WaitResponse> {
        let mut rx = {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            process(c, &req.exec_id)?.exit_watch()
        };
        let exit = loop {
            if let Some(e) = *rx.borrow_and_update() {
                break e;
            }
            if rx.changed().await.is_err() {
                return Err(status(
                    Code::NOT_FOUND,
                    "the process was deleted while waiting",
                ));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: ts(exit.at),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            let p = process(c, &req.exec_id)?;
            process::transition(p.current(), Event::Delete).map_err(precondition)?;
            if p.reported_exit().is_none() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let exit = p.reported_exit();
            let pid = p.pid;
            c.execs.remove(&req.exec_id);
            return Ok(api::DeleteResponse {
                pid: pid as u32,
                exit_status: exit.map(|e| e.status).unwrap_or(137),
                exited_at: ts(exit.map(|e| e.at).unwrap_or_else(SystemTime::now)),
                ..Default::default()
            });
        }
        // The init: a created (never started) one is killed first.
        {
            let mut cs = self.inner.containers.lock().await;
            let c = get(&mut cs, &req.id)?;
            process::transition(c.init.current(), Event::Delete).map_err(precondition)?;
        }
        let mut c = self.stop_and_take(&req.id).await?;
        let pid = c.init.pid;
        let exit = c.init.exit();
        tokio::task::spawn_blocking(move || {
            // The run dir is <run_dir>/<namespace>/<id>.
            if let Some(run_root) = c.run_dir.parent().and_then(|p| p.parent()) {
                crate::faultpoint::pause("delete", run_root, &c.id);
            }
            c.cleanup();
            // poststop: after the container is gone; a failure is logged.
            let poststop = crate::hooks::Point::Poststop.of(c.hooks.as_ref());
            let state = c.state.with("stopped", 0);
            if let Err(e) =
                crate::hooks::run_from_shim(crate::hooks::Point::Poststop, &poststop, &state)
            {
                log::warn!("container {}: {e}", c.id);
            }
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("cleanup panicked: {e}")))?;
        let exit_status = exit.map(|e| e.status).unwrap_or(137);
        let exited_at = exit.map(|e| e.at).unwrap_or_else(SystemTime::now);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(ev::TaskDelete {
                container_id: req.id.clone(),
                pid: pid as u32,
                exit_status,
                exited_at: ts(exited_at),
                id: req.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::DeleteResponse {
            pid: pid as u32,
            exit_status,
            exited_at: ts(exited_at),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtResult<Empty> {
        self.set_paused(&req.id, true).await
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtResult<Empty> {
        self.set_paused(&req.id, false).await
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtResult<Empty> {
        Err(status(
            Code::UNIMPLEMENTED,
            "idshift does not checkpoint containers",
        ))
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtResult<Empty> {
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "update without resources"))?;
        let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("update resources: {e}")))?;
        let resources =
            crate::container::resources_of(&res).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let cg = c
            .cgroup
            .as_ref()
            .ok_or_else(|| precondition("the container has no cgroup".into()))?;
        cg.apply(&resources)
            .map_err(|e| status(Code::FAILED_PRECONDITION, e.to_string()))?;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtResult<api::StatsResponse> {
        let mut cs = self.inner.containers.lock().await;
        let c = get(&mut cs, &req.id)?;
        let cg = c
            .cgroup
            .as_ref()
            .ok_or_else(|| precondition("the container has no cgroup".into()))?;
        let s = cg
            .stats()
            .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
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
        any.value =
            encoded.map_err(|e| status(Code::INTERNAL, format!("encoding metrics: {e}")))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtResult<api::ConnectResponse> {
        let mut cs = self.inner.containers.lock().await;
        let task_pid = get(&mut cs, &req.id)
            .map(|c| c.init.pid as u32)
            .unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtResult<Empty> {
        if self.inner.containers.lock().await.is_empty() {
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_removed_or_replaced_is_forgotten() {
        let d = tempfile::tempdir().expect("tempdir");
        let bundle = d.path().join("c1");
        std::fs::create_dir(&bundle).expect("bundle");
        let at_create = BundleId::of(&bundle).ok();
        assert_eq!(bundle_forgotten(&bundle, at_create), None, "still there");
        assert_eq!(bundle_forgotten(&bundle, None), None);
        // containerd made a new bundle for a new task of the same id (a
        // old one, renamed, keeps its inode from being reused at once).
        std::fs::rename(&bundle, d.path().join("old")).expect("rename");
        std::fs::create_dir(&bundle).expect("new bundle");
        let why = bundle_forgotten(&bundle, at_create).expect("replaced");
        assert!(why.contains("replaced"), "{why}");
        std::fs::remove_dir(&bundle).expect("remove");
        let why = bundle_forgotten(&bundle, at_create).expect("gone");
        assert!(why.contains("is gone"), "{why}");
        assert!(bundle_forgotten(&bundle, None).is_some());
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
