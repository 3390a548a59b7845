//! The containerd task service (task API v2): request validation, locking,
//! events, exits and the ttrpc codes of errors, over the lifecycle
//! interface of `lifecycle.rs` (the init's and the execs' state machines,
//! and the [`Runtime`] that makes containers: the host's in `host.rs`, a
//! fake in this module's tests). The orphan watchdog is `service/orphans.rs`.

mod orphans;
#[cfg(test)]
mod tests;

use crate::cgroup::ManagerAhead;
use crate::config::Config;
use crate::config::Orphan;
use crate::container::{BundleId, CreateRequest, PodRole, PodUsers};
use crate::host::Host;
use crate::lifecycle::{
    Container, Event, ExitHold, Fault, Kind, Life, Process, Runtime, State, Which,
};
use crate::stdio::StdioUris;
use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim_protos::api::{self, Empty, Status};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageField, MessageFull};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext, Code};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

type TtResult<T> = ttrpc::Result<T>;

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

/// Where the task events go: containerd (its publisher), or a test's record.
/// Each comes as containerd's `Any` ([`event_any`]).
#[async_trait]
pub trait Events: Send + Sync + 'static {
    async fn publish(&self, topic: &str, event: Any);
}

/// A task event as containerd's `Any`: its encoding and its protobuf type
/// name (the type_url containerd-shim's `convert_to_any` gives), the
/// package of containerd's task events and the message's name. Neither is
/// asked of protobuf's reflection (`descriptor_dyn`, which the `_dyn`
/// encoding uses too): building the descriptors of the events' file and of
/// the files it imports (descriptor.proto among them) took about 350 KiB
/// of a serving shim's heap at its first event, for one string (issue 16).
pub fn event_any<M: MessageFull>(event: &M) -> Result<Any, String> {
    Ok(Any {
        type_url: format!("containerd.events.{}", M::NAME),
        value: event
            .write_to_bytes()
            .map_err(|e| format!("encoding {}: {e}", M::NAME))?,
        ..Default::default()
    })
}

/// containerd's event service, in the shim's namespace, through the
/// publisher's queue (which retries and reconnects).
struct Remote {
    publisher: RemotePublisher,
    namespace: String,
}

#[async_trait]
impl Events for Remote {
    async fn publish(&self, topic: &str, event: Any) {
        use containerd_shim_protos::shim_async::Events as _;
        let mut envelope = containerd_shim_protos::shim::event::Envelope::new();
        envelope.topic = topic.to_string();
        envelope.namespace = self.namespace.clone();
        envelope.timestamp = ts(SystemTime::now());
        envelope.event = MessageField::some(event);
        let mut req = api::ForwardRequest::new();
        req.envelope = MessageField::some(envelope);
        let ctx = TtrpcContext {
            mh: Default::default(),
            metadata: HashMap::new(),
            timeout_nano: 0,
        };
        // Queued: the publisher retries and reconnects.
        if let Err(e) = self.publisher.forward(&ctx, req).await {
            log::error!("publishing {topic}: {e}");
        }
    }
}

/// A process as the service sees it: its life, its stdio as asked, and its
/// mechanism.
struct Proc<P> {
    life: Life,
    uris: StdioUris,
    mech: P,
}

/// A container as the service sees it.
struct TaskRecord<C: Container> {
    id: String,
    bundle: PathBuf,
    /// The bundle directory's identity at create: containerd removing it
    /// (or replacing it) means it forgot the container.
    bundle_id: Option<BundleId>,
    role: PodRole,
    init: Proc<C::Process>,
    execs: HashMap<String, Proc<C::Process>>,
    /// OOM kills already reported as TaskOOM (by the watcher or at exit).
    oom_reported: Arc<AtomicU64>,
    mech: C,
}

impl<C: Container> TaskRecord<C> {
    /// The container's mechanism and the process `which` names.
    fn split(&mut self, which: &Which) -> TtResult<(&C, &mut Proc<C::Process>)> {
        let p = match which {
            Which::Init => &mut self.init,
            Which::Exec(e) => self
                .execs
                .get_mut(e)
                .ok_or_else(|| not_found(&format!("exec {e} of container {}", self.id)))?,
        };
        Ok((&self.mech, p))
    }

    fn process(&mut self, which: &Which) -> TtResult<&mut Proc<C::Process>> {
        self.split(which).map(|(_, p)| p)
    }

    /// Which of its processes has `pid`.
    fn which_pid(&self, pid: i32) -> Option<Which> {
        if self.init.mech.pid() == pid {
            return Some(Which::Init);
        }
        self.execs
            .iter()
            .find(|(_, p)| p.mech.pid() == pid)
            .map(|(e, _)| Which::Exec(e.clone()))
    }

    /// Refused unless the init runs (an exec needs it).
    fn must_run(&self) -> TtResult<()> {
        match self.init.life.current() {
            State::Running => Ok(()),
            s => Err(precondition(format!(
                "container {} is {}, not running",
                self.id,
                s.name()
            ))),
        }
    }
}

pub struct Inner<R: Runtime> {
    pub namespace: String,
    runtime: R,
    containers: Mutex<HashMap<String, TaskRecord<R::Container>>>,
    /// The user namespaces of the CRI pods served here, by sandbox id, kept
    /// from the sandbox's create to its delete for the pod's containers.
    pods: Mutex<HashMap<String, PodUsers>>,
    /// Exits of pids not (yet) known to any process, held while a process
    /// is being started (a fast exit can beat the registration of its pid).
    unclaimed: Arc<ExitHold>,
    events: Box<dyn Events>,
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
    /// What the shim made ahead for the Create of the container it was
    /// started for (taken by the first Create).
    cgroup_ahead: std::sync::Mutex<ManagerAhead>,
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

/// The task service over a lifecycle [`Runtime`] (the host's by default).
pub struct TaskService<R: Runtime = Host> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for TaskService<R> {
    fn clone(&self) -> Self {
        TaskService {
            inner: self.inner.clone(),
        }
    }
}

impl TaskService<Host> {
    /// The serving shim's service: containers on the host, events to
    /// containerd, exits from the shim's reaper, the orphan watchdog.
    pub fn new(
        namespace: &str,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
        origin: Origin,
    ) -> Self {
        // The config containerd's environment names (a Create's options may
        // name another; its [orphan] settings replace these then).
        let orphan = Config::load(None).map(|c| c.orphan).unwrap_or_else(|e| {
            log::warn!("{e}; orphan checks use the defaults until a Create");
            Orphan::default()
        });
        let events = Box::new(Remote {
            publisher,
            namespace: namespace.to_string(),
        });
        let ahead = origin.bundle.clone().map(|bundle| {
            let (ahead, job) =
                crate::container::ahead_of(bundle, namespace.to_string(), origin.id.clone());
            // A thread that ends with the job (a blocking-pool one would
            // stay a second, beside the one the Create takes). Not started:
            // the Create makes the manager itself.
            let _ = std::thread::Builder::new()
                .name("cgroup-ahead".into())
                .spawn(job);
            ahead
        });
        let svc = TaskService::with_runtime(Host, namespace, events, exit, origin, orphan);
        if let (Some(ahead), Ok(mut slot)) = (ahead, svc.inner.cgroup_ahead.lock()) {
            *slot = ahead;
        }
        let watcher = svc.clone();
        tokio::spawn(async move { watcher.watch_exits().await });
        let watchdog = svc.clone();
        tokio::spawn(async move { watchdog.watch_orphans().await });
        svc
    }
}

impl<R: Runtime> TaskService<R> {
    /// A service over `runtime`, publishing to `events`; exits are fed to
    /// [`TaskService::on_exit`] (by the shim's reaper in [`TaskService::new`]).
    pub fn with_runtime(
        runtime: R,
        namespace: &str,
        events: Box<dyn Events>,
        exit: Arc<ExitSignal>,
        origin: Origin,
        orphan: Orphan,
    ) -> Self {
        let (oom_tx, mut oom_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let svc = TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                runtime,
                containers: Mutex::new(HashMap::new()),
                pods: Mutex::new(HashMap::new()),
                unclaimed: Arc::new(ExitHold::default()),
                events,
                exit,
                config_path: Mutex::new(None),
                freezing: Mutex::new(()),
                oom_tx,
                origin,
                creating: AtomicUsize::new(0),
                exiting: AtomicBool::new(false),
                orphan: std::sync::Mutex::new(orphan),
                cgroup_ahead: std::sync::Mutex::default(),
            }),
        };
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

    async fn publish<M: MessageFull>(&self, topic: &str, event: Box<M>) {
        match event_any(&*event) {
            Ok(any) => self.inner.events.publish(topic, any).await,
            Err(e) => log::error!("publishing {topic}: {e}"),
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
    /// exit is recorded and published. While the events of its creation or
    /// start go out, the exit is held and handled after them.
    async fn on_exit(&self, pid: i32, code: i32) {
        let mut drains = Vec::new();
        let found = {
            let mut cs = self.inner.containers.lock().await;
            let mut found = None;
            for t in cs.values_mut() {
                let Some(which) = t.which_pid(pid) else {
                    continue;
                };
                let Ok(p) = t.process(&which) else { break };
                if p.life.held(code) {
                    return;
                }
                p.life.set_reaped(code as u32);
                drains.push(p.mech.take_output());
                // The init is gone: so is everything else in the container,
                // now (a process left holding its output would hold its
                // exit back until the drain times out).
                if which.is_init() {
                    let _ = t.mech.signal_all(libc::SIGKILL, false);
                }
                found = Some((t.id.clone(), which));
                break;
            }
            if found.is_none() {
                // Decided while the containers are locked: a start registers
                // its pid under that lock, then claims its exit.
                self.inner.unclaimed.exited(pid, code);
            }
            found
        };
        let Some((cid, which)) = found else {
            return;
        };
        for drain in drains {
            drain.await;
        }
        let (exited_at, unreported_ooms) = {
            let mut cs = self.inner.containers.lock().await;
            let Some(t) = cs.get_mut(&cid) else { return };
            match &which {
                Which::Init => {
                    // OOM kills the watcher has not reported yet are reported
                    // before the exit (the cgroup exists until Delete).
                    let mut unreported = 0;
                    if let Some(kills) = t.mech.oom_kills() {
                        let before = t.oom_reported.fetch_max(kills, Ordering::SeqCst);
                        unreported = kills.saturating_sub(before);
                    }
                    t.init.life.set_exited(code as u32);
                    // The init is gone: so is everything else in the container.
                    let _ = t.mech.signal_all(libc::SIGKILL, false);
                    (t.init.life.exit().map(|e| e.at), unreported)
                }
                Which::Exec(e) => {
                    // Deleted meanwhile: nothing left to report.
                    let Some(p) = t.execs.get_mut(e) else {
                        return;
                    };
                    p.life.set_exited(code as u32);
                    (p.life.exit().map(|e| e.at), 0)
                }
            }
        };
        for _ in 0..unreported_ooms {
            let e = ev::TaskOOM {
                container_id: cid.clone(),
                ..Default::default()
            };
            self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(e))
                .await;
        }
        let id = match which {
            Which::Init => cid.clone(),
            Which::Exec(e) => e,
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

    /// The events of a process's creation or start are out: an exit held
    /// meanwhile is handled now.
    async fn release_hold(&self, id: &str, which: &Which) {
        let held = {
            let mut cs = self.inner.containers.lock().await;
            cs.get_mut(id)
                .and_then(|t| t.process(which).ok())
                .and_then(|p| p.life.release().map(|code| (p.mech.pid(), code)))
        };
        if let Some((pid, code)) = held {
            self.on_exit(pid, code).await;
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

    /// Kills container `id` (every process in its cgroup), waits for its
    /// init (10 s at most), ends its pod if it is a sandbox, and takes it
    /// out of the containers served: what Delete does before the cleanup.
    async fn stop_and_take(&self, id: &str) -> TtResult<TaskRecord<R::Container>> {
        let mut rx = {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, id)?;
            if t.init.life.reported_exit().is_none() {
                let _ = t.mech.signal_all(libc::SIGKILL, false);
                let _ = t.init.mech.signal(libc::SIGKILL);
            }
            t.init.life.exit_watch()
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

    /// A sandbox's delete ends its pod: the pod's user namespace is no
    /// longer handed out, and the processes of the pod's other containers
    /// (CRI stops them first; this is for a forced delete) are killed and
    /// waited for before the sandbox's cleanup releases the pod's range.
    async fn end_pod_if_sandbox(&self, id: &str) {
        let mut watches = Vec::new();
        let sandbox = {
            let cs = self.inner.containers.lock().await;
            let Some(PodRole::Sandbox(sandbox)) = cs.get(id).map(|t| t.role.clone()) else {
                return;
            };
            for t in cs.values() {
                if t.id == id || t.role != PodRole::Member(sandbox.clone()) {
                    continue;
                }
                if t.init.life.exit().is_none() {
                    log::warn!(
                        "pod {sandbox}: its sandbox is deleted while container {} runs: killing it",
                        t.id
                    );
                    let _ = t.mech.signal_all(libc::SIGKILL, false);
                    let _ = t.init.mech.signal(libc::SIGKILL);
                    watches.push(t.init.life.exit_watch());
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

    /// Pause (freeze the container) or resume (thaw it), and say so.
    async fn set_paused(&self, id: &str, pause: bool) -> TtResult<Empty> {
        let event = if pause { Event::Pause } else { Event::Resume };
        // Pauses and resumes follow one another; the freezer's wait (up to
        // seconds) holds neither the containers' lock nor a runtime thread.
        let _one_at_a_time = self.inner.freezing.lock().await;
        let (job, thaw) = {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, id)?;
            t.init.life.check(event).map_err(precondition)?;
            (
                t.mech.freezer(pause).map_err(fault)?,
                t.mech.freezer(false).map_err(fault)?,
            )
        };
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| status(Code::INTERNAL, format!("freezer panicked: {e}")))?
            .map_err(|e| status(Code::INTERNAL, e))?;
        {
            let mut cs = self.inner.containers.lock().await;
            let applied =
                get(&mut cs, id).and_then(|t| t.init.life.apply(event).map_err(precondition));
            if let Err(e) = applied {
                // The container exited or went meanwhile: leave nothing frozen.
                if pause {
                    let _ = tokio::task::spawn_blocking(thaw).await;
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

/// Gives back what a Create or Start left resident and unused: the main
/// thread's stack pages below the shallowest frame (`sys::trim_main_stack`,
/// from a task of its own, which runs once the request is answered, not
/// from inside its handler), and, once the blocking pool's idle threads
/// have left (their caches go back to the heap), the heap's free pages
/// and the stack again (`sys::trim_heap`).
fn release_memory_soon() {
    tokio::spawn(async {
        crate::sys::trim_main_stack();
        tokio::time::sleep(crate::BLOCKING_KEEP_ALIVE * 2).await;
        crate::sys::trim_heap();
        crate::sys::trim_main_stack();
    });
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

fn get<'a, C: Container>(
    cs: &'a mut HashMap<String, TaskRecord<C>>,
    id: &str,
) -> TtResult<&'a mut TaskRecord<C>> {
    cs.get_mut(id)
        .ok_or_else(|| not_found(&format!("container {id}")))
}

fn precondition(e: String) -> ttrpc::Error {
    status(Code::FAILED_PRECONDITION, e)
}

/// A mechanism's failure as the ttrpc code it calls for.
fn fault(f: Fault) -> ttrpc::Error {
    match f {
        Fault::Invalid(m) => status(Code::INVALID_ARGUMENT, m),
        Fault::Precondition(m) => status(Code::FAILED_PRECONDITION, m),
        Fault::Internal(m) => status(Code::INTERNAL, m),
    }
}

#[async_trait]
impl<R: Runtime> Task for TaskService<R> {
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
        let failed = |e: String| {
            log::error!("create {}: {e}", req.id);
            status(
                Code::FAILED_PRECONDITION,
                format!("idshift create {}: {e}", req.id),
            )
        };
        // The spec, parsed once for the whole create.
        let spec =
            crate::container::read_spec(std::path::Path::new(&req.bundle)).map_err(failed)?;
        // A container of a CRI pod joins the user namespace its sandbox made.
        let role = crate::container::pod_role(&req.id, &spec);
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
        let uris = StdioUris {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let creq = CreateRequest {
            id: req.id.clone(),
            namespace: self.inner.namespace.clone(),
            bundle: req.bundle.clone().into(),
            spec,
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
            uris: uris.clone(),
            config,
            pod,
            shim_socket: self.inner.origin.socket.clone(),
            received: started,
            cgroup_ahead: self
                .inner
                .cgroup_ahead
                .lock()
                .map(|mut a| std::mem::take(&mut *a))
                .unwrap_or_default(),
        };
        let inner = self.inner.clone();
        let (mut mech, init) = tokio::task::spawn_blocking(move || inner.runtime.create(creq))
            .await
            .map_err(|e| status(Code::INTERNAL, format!("create task panicked: {e}")))?
            .map_err(failed)?;
        let pid = init.pid();
        let oom_reported = Arc::new(AtomicU64::new(0));
        let (tx, id, reported) = (
            self.inner.oom_tx.clone(),
            req.id.clone(),
            oom_reported.clone(),
        );
        let on_kills = Box::new(move |kills: u64| {
            let before = reported.fetch_max(kills, Ordering::SeqCst);
            (before..kills).all(|_| tx.send(id.clone()).is_ok())
        });
        if let Err(e) = mech.watch_ooms(on_kills) {
            log::warn!("{}: OOM events unavailable: {e}", req.id);
        }
        if let (PodRole::Sandbox(sandbox), Some(users)) = (&role, mech.take_pod_users()) {
            self.inner.pods.lock().await.insert(sandbox.clone(), users);
        }
        let mut init = Proc {
            life: Life::new(Kind::Init),
            uris,
            mech: init,
        };
        // Its exit waits for TaskCreate.
        init.life.hold();
        {
            let mut cs = self.inner.containers.lock().await;
            if let Some(code) = self.inner.unclaimed.claim(pid) {
                init.life.held(code);
            }
            let record = TaskRecord {
                id: req.id.clone(),
                bundle: req.bundle.clone().into(),
                bundle_id: mech.bundle_id(),
                role,
                init,
                execs: HashMap::new(),
                oom_reported,
                mech,
            };
            cs.insert(req.id.clone(), record);
        }
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
        self.release_hold(&req.id, &Which::Init).await;
        release_memory_soon();
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
        let which = Which::of(&req.exec_id);
        let (job, pid) = {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, &req.id)?;
            t.process(&which)?;
            if !which.is_init() {
                // A paused or stopped container runs no new process.
                t.must_run()?;
            }
            let (mech, p) = t.split(&which)?;
            p.life.check(Event::Start).map_err(precondition)?;
            let job = mech.start(&mut p.mech, &which).map_err(precondition)?;
            // Its exit waits for TaskStart (or TaskExecStarted).
            p.life.hold();
            (job, p.mech.pid())
        };
        let started = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| status(Code::INTERNAL, format!("start panicked: {e}")));
        if let Err(e) = started.and_then(|r| {
            r.map_err(|e| {
                status(
                    Code::FAILED_PRECONDITION,
                    format!("starting {}: {e}", req.id),
                )
            })
        }) {
            self.release_hold(&req.id, &which).await;
            return Err(e);
        }
        {
            let mut cs = self.inner.containers.lock().await;
            if let Ok(p) = get(&mut cs, &req.id).and_then(|t| t.process(&which)) {
                // It may already have exited.
                if p.life.state() == State::Created {
                    let _ = p.life.apply(Event::Start);
                }
            }
        }
        match &which {
            Which::Init => {
                self.publish(
                    topics::TASK_START_EVENT_TOPIC,
                    Box::new(ev::TaskStart {
                        container_id: req.id.clone(),
                        pid: pid as u32,
                        ..Default::default()
                    }),
                )
                .await
            }
            Which::Exec(exec_id) => {
                self.publish(
                    topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                    Box::new(ev::TaskExecStarted {
                        container_id: req.id.clone(),
                        exec_id: exec_id.clone(),
                        pid: pid as u32,
                        ..Default::default()
                    }),
                )
                .await
            }
        }
        self.release_hold(&req.id, &which).await;
        release_memory_soon();
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
        let which = Which::of(&req.exec_id);
        let mut cs = self.inner.containers.lock().await;
        let t = get(&mut cs, &req.id)?;
        let bundle = t.bundle.display().to_string();
        let p = t.process(&which)?;
        let exit = p.life.reported_exit();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle,
            pid: p.mech.pid() as u32,
            status: state_status(p.life.current()).into(),
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
        let t = get(&mut cs, &req.id)?;
        let pids = t.mech.pids().map_err(|e| status(Code::INTERNAL, e))?;
        let mut resp = api::PidsResponse::new();
        for pid in pids {
            let mut info = containerd_shim_protos::api::ProcessInfo::new();
            info.pid = pid as u32;
            resp.processes.push(info);
        }
        Ok(resp)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtResult<Empty> {
        let which = Which::of(&req.exec_id);
        let mut cs = self.inner.containers.lock().await;
        let t = get(&mut cs, &req.id)?;
        let sig = req.signal as i32;
        if req.all && which.is_init() {
            // Signals to a frozen cgroup wait for the thaw.
            let thaw = t.init.life.state() == State::Paused || sig == libc::SIGKILL;
            if t.mech
                .signal_all(sig, thaw)
                .map_err(|e| status(Code::INTERNAL, e))?
            {
                return Ok(Empty::new());
            }
        }
        let p = t.process(&which)?;
        if p.life.current() == State::Stopped {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        }
        nix::sys::signal::Signal::try_from(sig)
            .map_err(|_| status(Code::INVALID_ARGUMENT, format!("invalid signal {sig}")))?;
        p.mech.signal(sig).map_err(|e| status(Code::NOT_FOUND, e))?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtResult<Empty> {
        let Which::Exec(exec_id) = Which::of(&req.exec_id) else {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "exec request without an exec id",
            ));
        };
        let _window = self.inner.unclaimed.open();
        let spec = req.spec.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "exec request without a process spec",
            )
        })?;
        let uris = StdioUris {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let job = {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, &req.id)?;
            if t.execs.contains_key(&exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {exec_id} already exists"),
                ));
            }
            t.must_run()?;
            let process_spec: oci_spec::runtime::Process = serde_json::from_slice(&spec.value)
                .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
            crate::container::validate_process(&process_spec)
                .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
            t.mech.exec(&exec_id, process_spec, &uris)
        };
        let spawned = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| status(Code::INTERNAL, format!("exec panicked: {e}")))?;
        let spawned = match spawned {
            Ok(p) => p,
            Err(e) => {
                // The init died meanwhile (its exit kills the container's
                // cgroup, the exec's helper with it): say so.
                let mut cs = self.inner.containers.lock().await;
                get(&mut cs, &req.id)?.must_run()?;
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("exec in {}: {e}", req.id),
                ));
            }
        };
        let pid = spawned.pid();
        {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, &req.id)?;
            let mut p = Proc {
                life: Life::new(Kind::Exec),
                uris,
                mech: spawned,
            };
            // Its exit waits for TaskExecAdded.
            p.life.hold();
            if let Some(code) = self.inner.unclaimed.claim(pid) {
                p.life.held(code);
            }
            t.execs.insert(exec_id.clone(), p);
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(ev::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        self.release_hold(&req.id, &Which::Exec(exec_id)).await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtResult<Empty> {
        let which = Which::of(&req.exec_id);
        let mut cs = self.inner.containers.lock().await;
        let p = get(&mut cs, &req.id)?.process(&which)?;
        p.mech
            .resize_pty(req.width, req.height)
            .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtResult<Empty> {
        let which = Which::of(&req.exec_id);
        let mut cs = self.inner.containers.lock().await;
        let p = get(&mut cs, &req.id)?.process(&which)?;
        if req.stdin {
            p.mech.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtResult<api::WaitResponse> {
        let which = Which::of(&req.exec_id);
        let mut rx = {
            let mut cs = self.inner.containers.lock().await;
            get(&mut cs, &req.id)?.process(&which)?.life.exit_watch()
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
        if let Which::Exec(exec_id) = Which::of(&req.exec_id) {
            let mut cs = self.inner.containers.lock().await;
            let t = get(&mut cs, &req.id)?;
            let p = t.process(&Which::Exec(exec_id.clone()))?;
            p.life.check(Event::Delete).map_err(precondition)?;
            if p.life.reported_exit().is_none() {
                let _ = p.mech.signal(libc::SIGKILL);
            }
            let exit = p.life.reported_exit();
            let pid = p.mech.pid();
            t.execs.remove(&exec_id);
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
            let t = get(&mut cs, &req.id)?;
            t.init.life.check(Event::Delete).map_err(precondition)?;
        }
        let t = self.stop_and_take(&req.id).await?;
        let pid = t.init.mech.pid();
        let exit = t.init.life.exit();
        tokio::task::spawn_blocking(move || {
            let TaskRecord { mech, .. } = t;
            mech.delete();
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
        let mut cs = self.inner.containers.lock().await;
        get(&mut cs, &req.id)?.mech.update(&res).map_err(fault)?;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtResult<api::StatsResponse> {
        let mut cs = self.inner.containers.lock().await;
        let any = get(&mut cs, &req.id)?.mech.stats().map_err(fault)?;
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
            .map(|t| t.init.mech.pid() as u32)
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
