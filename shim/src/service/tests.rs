//! The task service over a fake mechanism: no root, no kernel. The fake
//! records what it is asked; exits are fed to the service as the shim's
//! reaper would (a signal that kills, or a test's "exit now").

use super::*;
use crate::lifecycle::{Drain, Job};
use containerd_shim_protos::protobuf::Message;
use std::sync::OnceLock;

/// What the fake mechanism is asked to do and how it behaves.
#[derive(Default)]
struct World {
    next_pid: i32,
    /// Mechanism calls, in order ("create c1", "start 1001", ...).
    calls: Vec<String>,
    /// The next init exits with this code inside Create (before its pid is
    /// registered: the unknown-exit window).
    exit_in_create: Option<i32>,
    /// The next Start's process exits with this code while it is started.
    exit_in_start: Option<i32>,
    /// The next Start fails with this error.
    fail_start: Option<String>,
}

#[derive(Clone, Default)]
struct Fake {
    world: Arc<std::sync::Mutex<World>>,
    svc: Arc<OnceLock<TaskService<Fake>>>,
}

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, what: String) {
        self.world().calls.push(what);
    }

    fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    fn pid(&self) -> i32 {
        let mut w = self.world();
        w.next_pid += 1;
        1000 + w.next_pid
    }

    /// The reaper reports `pid` exited, from a blocking thread (a job).
    fn exit_blocking(&self, pid: i32, code: i32) {
        let svc = self.svc.get().expect("service").clone();
        tokio::runtime::Handle::current().block_on(svc.on_exit(pid, code));
    }

    /// The reaper reports `pid` exited, soon (from the async side).
    fn exit_soon(&self, pid: i32, code: i32) {
        let svc = self.svc.get().expect("service").clone();
        tokio::spawn(async move { svc.on_exit(pid, code).await });
    }
}

struct FakeContainer {
    id: String,
    fake: Fake,
    pids: Vec<i32>,
    users: Option<PodUsers>,
}

struct FakeProcess {
    pid: i32,
    fake: Fake,
}

impl Runtime for Fake {
    type Container = FakeContainer;

    fn create(&self, req: CreateRequest) -> Result<(FakeContainer, FakeProcess), String> {
        self.call(format!("create {}", req.id));
        let pid = self.pid();
        let exit = self.world().exit_in_create.take();
        if let Some(code) = exit {
            self.exit_blocking(pid, code);
        }
        let users = matches!(
            crate::container::pod_role(&req.id, &req.spec),
            PodRole::Sandbox(_)
        )
        .then_some(PodUsers::Host);
        Ok((
            FakeContainer {
                id: req.id,
                fake: self.clone(),
                pids: vec![pid],
                users,
            },
            FakeProcess {
                pid,
                fake: self.clone(),
            },
        ))
    }
}

impl Container for FakeContainer {
    type Process = FakeProcess;

    fn bundle_id(&self) -> Option<BundleId> {
        None
    }

    fn take_pod_users(&mut self) -> Option<PodUsers> {
        self.users.take()
    }

    fn watch_ooms(&self, _on_kills: Box<dyn FnMut(u64) -> bool + Send>) -> Result<(), String> {
        Ok(())
    }

    fn oom_kills(&self) -> Option<u64> {
        None
    }

    fn signal_all(&self, signal: i32, thaw: bool) -> Result<bool, String> {
        self.fake
            .call(format!("signal all of {} {signal} thaw {thaw}", self.id));
        Ok(true)
    }

    fn pids(&self) -> Result<Vec<i32>, String> {
        Ok(self.pids.clone())
    }

    fn freezer(&self, frozen: bool) -> Result<Job, Fault> {
        let (fake, id) = (self.fake.clone(), self.id.clone());
        Ok(Box::new(move || {
            fake.call(format!("{} {id}", if frozen { "freeze" } else { "thaw" }));
            Ok(())
        }))
    }

    fn update(&self, _res: &oci_spec::runtime::LinuxResources) -> Result<(), Fault> {
        Err(Fault::Precondition("the fake has no cgroup".into()))
    }

    fn stats(&self) -> Result<Any, Fault> {
        Err(Fault::Internal("the fake has no stats".into()))
    }

    fn start(&self, p: &mut FakeProcess, which: &Which) -> Result<Job, String> {
        let (fake, pid, init) = (self.fake.clone(), p.pid, which.is_init());
        Ok(Box::new(move || {
            fake.call(format!("start {pid} init {init}"));
            let (fail, exit) = {
                let mut w = fake.world();
                (w.fail_start.take(), w.exit_in_start.take())
            };
            if let Some(e) = fail {
                return Err(e);
            }
            if let Some(code) = exit {
                fake.exit_blocking(pid, code);
            }
            Ok(())
        }))
    }

    fn exec(
        &self,
        exec_id: &str,
        _process: oci_spec::runtime::Process,
        _uris: &StdioUris,
    ) -> Job<FakeProcess> {
        let (fake, what) = (self.fake.clone(), format!("exec {exec_id} in {}", self.id));
        Box::new(move || {
            fake.call(what);
            let pid = fake.pid();
            Ok(FakeProcess { pid, fake })
        })
    }

    fn delete(self) {
        self.fake.call(format!("delete {}", self.id));
    }

    fn release(self) {
        self.fake.call(format!("release {}", self.id));
    }
}

impl Process for FakeProcess {
    fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGTERM and SIGKILL kill (128 + signal); others are recorded only.
    fn signal(&self, signal: i32) -> Result<(), String> {
        self.fake.call(format!("signal {} {signal}", self.pid));
        if signal == libc::SIGTERM || signal == libc::SIGKILL {
            self.fake.exit_soon(self.pid, 128 + signal);
        }
        Ok(())
    }

    fn resize_pty(&self, _width: u32, _height: u32) -> Result<(), String> {
        Err("no terminal".into())
    }

    fn close_stdin(&mut self) {
        self.fake.call(format!("close stdin of {}", self.pid));
    }

    fn take_output(&mut self) -> Drain {
        Box::pin(async {})
    }
}

/// An event as published: its topic and message.
type Published = (String, Any);

/// Events as published, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<Published>>>);

#[async_trait]
impl Events for Recorder {
    async fn publish(&self, topic: &str, event: Any) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((topic.to_string(), event));
    }
}

impl Recorder {
    /// The topics so far, shortened ("/tasks/create" -> "create").
    fn topics(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, _)| t.trim_start_matches("/tasks/").to_string())
            .collect()
    }

    /// The `n`th TaskExit's (id, exit status).
    fn exit(&self, n: usize) -> (String, u32) {
        let events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = events
            .iter()
            .filter(|(_, e)| e.type_url == "containerd.events.TaskExit")
            .nth(n)
            .map(|(_, e)| ev::TaskExit::parse_from_bytes(&e.value).expect("a TaskExit"))
            .expect("TaskExit");
        (e.id.clone(), e.exit_status)
    }

    /// Waits until `n` events are out (the exit path publishes from its own
    /// task); a bound only against hanging.
    async fn until(&self, n: usize) -> Vec<String> {
        for _ in 0..6000 {
            if self.topics().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.topics()
    }
}

struct Setup {
    svc: TaskService<Fake>,
    fake: Fake,
    events: Recorder,
    bundles: tempfile::TempDir,
}

fn setup() -> Setup {
    let fake = Fake::default();
    let events = Recorder::default();
    let svc = TaskService::with_runtime(
        fake.clone(),
        "testns",
        Box::new(events.clone()),
        Arc::new(ExitSignal::default()),
        Origin::default(),
        Orphan::default(),
    );
    assert!(fake.svc.set(svc.clone()).is_ok());
    Setup {
        svc,
        fake,
        events,
        bundles: tempfile::tempdir().expect("tempdir"),
    }
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: Default::default(),
        metadata: Default::default(),
        timeout_nano: 0,
    }
}

fn code(r: ttrpc::Error) -> Code {
    match r {
        ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("not a status: {other:?}"),
    }
}

fn message(r: ttrpc::Error) -> String {
    match r {
        ttrpc::Error::RpcStatus(s) => s.message,
        other => panic!("not a status: {other:?}"),
    }
}

impl Setup {
    async fn create(&self, id: &str) -> TtResult<u32> {
        self.create_with(id, serde_json::json!({"ociVersion": "1.0.2"}))
            .await
    }

    async fn create_with(&self, id: &str, spec: serde_json::Value) -> TtResult<u32> {
        let bundle = self.bundles.path().join(id);
        std::fs::create_dir_all(&bundle).expect("bundle");
        std::fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");
        let req = api::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            ..Default::default()
        };
        self.svc.create(&ctx(), req).await.map(|r| r.pid)
    }

    async fn start(&self, id: &str, exec_id: &str) -> TtResult<u32> {
        let req = api::StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.svc.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn state(&self, id: &str, exec_id: &str) -> TtResult<(Status, u32)> {
        let req = api::StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let s = self.svc.state(&ctx(), req).await?;
        Ok((s.status.enum_value_or_default(), s.exit_status))
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: i32) -> TtResult<Empty> {
        let req = api::KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal: signal as u32,
            ..Default::default()
        };
        self.svc.kill(&ctx(), req).await
    }

    async fn wait(&self, id: &str, exec_id: &str) -> TtResult<u32> {
        let req = api::WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        // A bound only against hanging when an exit is lost.
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.svc.wait(&ctx(), req),
        )
        .await
        .expect("Wait returned within 60 s")
        .map(|r| r.exit_status)
    }

    async fn delete(&self, id: &str, exec_id: &str) -> TtResult<u32> {
        let req = api::DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.svc.delete(&ctx(), req).await.map(|r| r.exit_status)
    }

    async fn exec(&self, id: &str, exec_id: &str) -> TtResult<Empty> {
        let process =
            serde_json::json!({"cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}});
        let mut spec = Any::new();
        spec.value = process.to_string().into_bytes();
        let req = api::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: MessageField::some(spec),
            ..Default::default()
        };
        self.svc.exec(&ctx(), req).await
    }

    async fn pause(&self, id: &str) -> TtResult<Empty> {
        let req = api::PauseRequest {
            id: id.into(),
            ..Default::default()
        };
        self.svc.pause(&ctx(), req).await
    }

    async fn resume(&self, id: &str) -> TtResult<Empty> {
        let req = api::ResumeRequest {
            id: id.into(),
            ..Default::default()
        };
        self.svc.resume(&ctx(), req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_start_kill_wait_delete_in_order() {
    let s = setup();
    let pid = s.create("c1").await.expect("create");
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::CREATED);
    assert_eq!(s.start("c1", "").await.expect("start"), pid);
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::RUNNING);
    s.kill("c1", "", libc::SIGTERM).await.expect("kill");
    assert_eq!(s.wait("c1", "").await.expect("wait"), 143);
    assert_eq!(s.events.until(3).await, ["create", "start", "exit"]);
    assert_eq!(s.events.exit(0), ("c1".to_string(), 143));
    assert_eq!(
        s.state("c1", "").await.expect("state"),
        (Status::STOPPED, 143)
    );
    assert_eq!(s.delete("c1", "").await.expect("delete"), 143);
    assert_eq!(s.events.topics(), ["create", "start", "exit", "delete"]);
    assert_eq!(
        code(s.state("c1", "").await.expect_err("gone")),
        Code::NOT_FOUND
    );
    assert_eq!(
        s.fake.calls(),
        [
            "create c1".to_string(),
            format!("start {pid} init true"),
            format!("signal {pid} 15"),
            "signal all of c1 9 thaw false".into(),
            "signal all of c1 9 thaw false".into(),
            "delete c1".into(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_run_beside_the_init_and_are_deleted_on_their_own() {
    let s = setup();
    s.create("c1").await.expect("create");
    s.start("c1", "").await.expect("start");
    s.exec("c1", "e1").await.expect("exec");
    assert_eq!(
        code(s.exec("c1", "e1").await.expect_err("twice")),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        code(s.exec("c1", "").await.expect_err("no exec id")),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(s.state("c1", "e1").await.expect("state").0, Status::CREATED);
    let pid = s.start("c1", "e1").await.expect("start exec");
    assert_eq!(s.state("c1", "e1").await.expect("state").0, Status::RUNNING);
    let e = s.delete("c1", "e1").await.expect_err("running");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "cannot delete a process that is running");
    s.svc.on_exit(pid as i32, 3).await;
    assert_eq!(s.wait("c1", "e1").await.expect("wait"), 3);
    // The init still runs.
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::RUNNING);
    assert_eq!(s.delete("c1", "e1").await.expect("delete exec"), 3);
    assert_eq!(
        code(s.state("c1", "e1").await.expect_err("gone")),
        Code::NOT_FOUND
    );
    assert_eq!(
        s.events.until(5).await,
        ["create", "start", "exec-added", "exec-started", "exit"]
    );
    assert_eq!(s.events.exit(0), ("e1".to_string(), 3));
    // A created exec is deleted (killed) without being started.
    s.exec("c1", "e2").await.expect("exec");
    assert_eq!(
        s.delete("c1", "e2").await.expect("delete created exec"),
        137
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_and_what_a_paused_container_refuses() {
    let s = setup();
    s.create("c1").await.expect("create");
    assert_eq!(
        code(s.pause("c1").await.expect_err("created")),
        Code::FAILED_PRECONDITION
    );
    s.start("c1", "").await.expect("start");
    s.exec("c1", "e1").await.expect("exec");
    s.pause("c1").await.expect("pause");
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::PAUSED);
    let e = s.pause("c1").await.expect_err("twice");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "cannot pause a process that is paused");
    let e = s.exec("c1", "e2").await.expect_err("exec while paused");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "container c1 is paused, not running");
    let e = s
        .start("c1", "e1")
        .await
        .expect_err("start exec while paused");
    assert_eq!(code(e), Code::FAILED_PRECONDITION);
    // kill --all of a paused container thaws it for the signal.
    let req = api::KillRequest {
        id: "c1".into(),
        signal: libc::SIGUSR1 as u32,
        all: true,
        ..Default::default()
    };
    s.svc.kill(&ctx(), req).await.expect("kill all");
    s.resume("c1").await.expect("resume");
    assert_eq!(
        code(s.resume("c1").await.expect_err("twice")),
        Code::FAILED_PRECONDITION
    );
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::RUNNING);
    s.start("c1", "e1").await.expect("start exec once running");
    assert_eq!(
        s.events.topics(),
        [
            "create",
            "start",
            "exec-added",
            "paused",
            "resumed",
            "exec-started"
        ]
    );
    let calls = s.fake.calls();
    assert_eq!(
        calls[2..5],
        [
            "exec e1 in c1".to_string(),
            "freeze c1".into(),
            format!("signal all of c1 {} thaw true", libc::SIGUSR1),
        ]
    );
    assert_eq!(calls[5], "thaw c1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transitions_and_requests_get_their_codes() {
    let s = setup();
    assert_eq!(
        code(s.start("nope", "").await.expect_err("unknown")),
        Code::NOT_FOUND
    );
    let pid = s.create("c1").await.expect("create");
    assert_eq!(
        code(s.create("c1").await.expect_err("twice")),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        code(s.start("c1", "e9").await.expect_err("unknown exec")),
        Code::NOT_FOUND
    );
    assert_eq!(
        code(s.exec("c1", "e1").await.expect_err("exec before start")),
        Code::FAILED_PRECONDITION
    );
    s.start("c1", "").await.expect("start");
    let e = s.start("c1", "").await.expect_err("start twice");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "cannot start a process that is running");
    let e = s.delete("c1", "").await.expect_err("delete running");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "cannot delete a process that is running");
    assert_eq!(
        code(s.kill("c1", "", 0xffff).await.expect_err("bad signal")),
        Code::INVALID_ARGUMENT
    );
    s.svc.on_exit(pid as i32, 0).await;
    assert_eq!(
        code(s.kill("c1", "", libc::SIGTERM).await.expect_err("stopped")),
        Code::NOT_FOUND
    );
    let e = s.pause("c1").await.expect_err("pause stopped");
    assert_eq!(message(e), "cannot pause a process that is stopped");
    let e = s.exec("c1", "e1").await.expect_err("exec in stopped");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "container c1 is stopped, not running");
    assert_eq!(
        code(s.start("c1", "").await.expect_err("start stopped")),
        Code::FAILED_PRECONDITION
    );
    let req = api::CheckpointTaskRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.svc.checkpoint(&ctx(), req).await.expect_err("checkpoint")),
        Code::UNIMPLEMENTED
    );
    let req = api::StatsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.svc.stats(&ctx(), req).await.expect_err("stats")),
        Code::INTERNAL
    );
    let mut res = Any::new();
    res.value = b"{}".to_vec();
    let req = api::UpdateTaskRequest {
        id: "c1".into(),
        resources: MessageField::some(res),
        ..Default::default()
    };
    assert_eq!(
        code(s.svc.update(&ctx(), req).await.expect_err("update")),
        Code::FAILED_PRECONDITION
    );
    assert_eq!(s.delete("c1", "").await.expect("delete stopped"), 0);
    // A bundle without a spec: refused, nothing made.
    let bundle = s.bundles.path().join("bad");
    std::fs::create_dir_all(&bundle).expect("bundle");
    let req = api::CreateTaskRequest {
        id: "bad".into(),
        bundle: bundle.display().to_string(),
        ..Default::default()
    };
    let e = s.svc.create(&ctx(), req).await.expect_err("no config.json");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert!(message(e).starts_with("idshift create bad: reading the OCI spec "));
    assert!(!s.fake.calls().contains(&"create bad".to_string()));
}

/// An init that exits before its pid is registered (inside Create, the
/// start window): its exit is claimed and reported, after TaskCreate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_during_create_is_reported_after_task_create() {
    let s = setup();
    s.fake.world().exit_in_create = Some(7);
    s.create("c1").await.expect("create");
    assert_eq!(s.wait("c1", "").await.expect("wait"), 7);
    assert_eq!(s.events.until(2).await, ["create", "exit"]);
    assert_eq!(
        s.state("c1", "").await.expect("state"),
        (Status::STOPPED, 7)
    );
    assert_eq!(
        code(s.start("c1", "").await.expect_err("start after exit")),
        Code::FAILED_PRECONDITION
    );
}

/// A process that exits while it is started: TaskStart (or
/// TaskExecStarted) first, then its TaskExit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_during_start_is_reported_after_task_start() {
    let s = setup();
    s.create("c1").await.expect("create");
    s.fake.world().exit_in_start = Some(0);
    s.start("c1", "").await.expect("start");
    assert_eq!(s.wait("c1", "").await.expect("wait"), 0);
    assert_eq!(s.events.until(3).await, ["create", "start", "exit"]);
    let s = setup();
    s.create("c1").await.expect("create");
    s.start("c1", "").await.expect("start");
    s.exec("c1", "e1").await.expect("exec");
    s.fake.world().exit_in_start = Some(5);
    s.start("c1", "e1").await.expect("start exec");
    assert_eq!(s.wait("c1", "e1").await.expect("wait"), 5);
    assert_eq!(
        s.events.until(5).await,
        ["create", "start", "exec-added", "exec-started", "exit"]
    );
}

/// A failed start says why and publishes no TaskStart; an exit the fake
/// reports then is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_a_precondition_error() {
    let s = setup();
    s.create("c1").await.expect("create");
    s.fake.world().fail_start = Some("exec: no such file".into());
    let e = s.start("c1", "").await.expect_err("fails");
    assert_eq!(code(e.clone()), Code::FAILED_PRECONDITION);
    assert_eq!(message(e), "starting c1: exec: no such file");
    assert_eq!(s.events.topics(), ["create"]);
    // Deleting the never-started container kills it: 137.
    assert_eq!(s.delete("c1", "").await.expect("delete"), 137);
    // Delete waits for the exit, not for its event: either order.
    let mut topics = s.events.until(3).await;
    topics[1..].sort();
    assert_eq!(topics, ["create", "delete", "exit"]);
}

/// The exit of a pid nobody knows, outside any start window, is forgotten:
/// a process created later with the same pid is not reported exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_exit_outside_a_window_does_not_touch_a_later_process() {
    let s = setup();
    s.svc.on_exit(1001, 9).await;
    let pid = s.create("c1").await.expect("create");
    assert_eq!(pid, 1001, "the fake hands out 1001 first");
    assert_eq!(s.state("c1", "").await.expect("state").0, Status::CREATED);
    s.start("c1", "").await.expect("start");
    assert_eq!(s.events.topics(), ["create", "start"]);
}

/// A sandbox's user namespace (here the host's IDs) is kept for its pod's
/// containers; deleting the sandbox kills the members still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_delete_ends_its_pod() {
    let s = setup();
    let ann = |kind: &str| {
        serde_json::json!({"ociVersion": "1.0.2", "annotations": {
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": "pod1"}})
    };
    s.create_with("pod1", ann("sandbox"))
        .await
        .expect("sandbox");
    assert!(s.svc.inner.pods.lock().await.contains_key("pod1"));
    let member = s.create_with("m1", ann("container")).await.expect("member");
    s.start("m1", "").await.expect("start member");
    s.delete("pod1", "").await.expect("delete sandbox");
    assert!(s.svc.inner.pods.lock().await.is_empty());
    assert_eq!(
        s.state("m1", "").await.expect("state"),
        (Status::STOPPED, 137)
    );
    assert!(s.fake.calls().contains(&format!("signal {member} 9")));
}

/// The type names given without reflection are protobuf's, and the
/// encoding is the message's, for every task event published.
#[test]
fn event_anys_are_what_reflection_would_give() {
    fn check<M: MessageFull + PartialEq>(m: M) {
        let any = event_any(&m).expect("encode");
        assert_eq!(any.type_url, M::descriptor().full_name());
        assert_eq!(M::parse_from_bytes(&any.value).expect("decode"), m);
    }
    check(ev::TaskCreate {
        container_id: "c".into(),
        pid: 7,
        ..Default::default()
    });
    check(ev::TaskStart {
        container_id: "c".into(),
        pid: 7,
        ..Default::default()
    });
    check(ev::TaskExit {
        container_id: "c".into(),
        exit_status: 137,
        ..Default::default()
    });
    check(ev::TaskDelete::default());
    check(ev::TaskExecAdded::default());
    check(ev::TaskExecStarted::default());
    check(ev::TaskOOM::default());
    check(ev::TaskPaused::default());
    check(ev::TaskResumed::default());
}
