//! A blocking Kubernetes CRI client (the `k8s-cri` crate's tonic client, CRI
//! v1) over a private containerd's socket, plus what the CRI tests share:
//! the pause image and pod and container configs. Pods it made and did not
//! see removed are stopped and removed when it is dropped (drop it before
//! its [`Containerd`]: declare it after).

use idshift_harness::{Containerd, Error};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's CRI namespace (CRI's images must be imported there).
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The pause image the CRI tests configure as `sandbox_image` and import.
pub const PAUSE_IMAGE: &str = "docker.io/library/idshift-pause:1";
/// The pause image's command: sleep until SIGTERM (or SIGKILL), reaping
/// (the shell waits for its children).
pub const PAUSE_CMD: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];
/// How long one CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Imports the pause image ([`PAUSE_IMAGE`], a one-layer busybox image whose
/// command is [`PAUSE_CMD`]) into `k8s.io`.
pub fn import_pause_image(c: &Containerd) -> Result<(), Error> {
    let archive = idshift_harness::build_image_with_cmd(c.base(), PAUSE_IMAGE, 1, &PAUSE_CMD)?;
    let res = idshift_harness::import_image(c, K8S_NAMESPACE, &archive, PAUSE_IMAGE);
    let _ = std::fs::remove_file(&archive);
    res
}

/// A CRI client; every call blocks (on its own tokio runtime).
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Pods made through this client and not yet removed.
    pods: Mutex<BTreeSet<String>>,
}

impl Cri {
    /// Connects to the gRPC unix socket `socket` (containerd's).
    pub fn connect(socket: &Path) -> Result<Cri, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        // The URI is ignored: every connection is to the socket.
        let channel = rt.block_on(async move {
            Endpoint::try_from("http://[::]:0")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
        })?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
            pods: Mutex::new(BTreeSet::new()),
        })
    }

    /// Runs one call (at most [`CALL_TIMEOUT`]).
    pub fn block_on<T, F>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, f).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "the CRI call took more than {} s",
                    CALL_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    /// The runtime service client (clone it per call: calls take `&mut`).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The image service client.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    pub fn version(&self) -> Result<VersionResponse, tonic::Status> {
        self.block_on(self.runtime().version(VersionRequest {
            version: "v1".into(),
        }))
    }

    /// RunPodSandbox; the pod is removed at drop unless
    /// [`Cri::remove_pod`] was called.
    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String, Error> {
        let r = self.block_on(self.runtime().run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        }))?;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.pod_sandbox_id.clone());
        Ok(r.pod_sandbox_id)
    }

    pub fn pod_status(&self, pod: &str) -> Result<PodSandboxStatus, Error> {
        let r = self.block_on(self.runtime().pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        }))?;
        r.status
            .ok_or_else(|| format!("no status for pod {pod}").into())
    }

    /// CreateContainer of `config` in `pod` (made with `pod_config`).
    pub fn create_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, Error> {
        let r = self.block_on(self.runtime().create_container(CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        }))?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        self.block_on(self.runtime().start_container(StartContainerRequest {
            container_id: id.to_string(),
        }))?;
        Ok(())
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, Error> {
        let r = self.block_on(self.runtime().container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        }))?;
        r.status
            .ok_or_else(|| format!("no status for container {id}").into())
    }

    /// Polls ContainerStatus until the container has exited (at most
    /// `timeout`).
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.container_status(id)?;
            if s.state == ContainerState::ContainerExited as i32 {
                return Ok(s);
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("container {id} still runs after {timeout:?}: {s:?}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// ExecSync of `cmd` with a timeout in seconds (0: none).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.block_on(self.runtime().exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_s,
        }))
    }

    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), Error> {
        self.block_on(self.runtime().stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_s,
        }))?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Error> {
        self.block_on(self.runtime().remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        }))?;
        Ok(())
    }

    pub fn stop_pod(&self, pod: &str) -> Result<(), Error> {
        self.block_on(self.runtime().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        }))?;
        Ok(())
    }

    pub fn remove_pod(&self, pod: &str) -> Result<(), Error> {
        self.block_on(self.runtime().remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        }))?;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod);
        Ok(())
    }
}

/// What a streaming exec gave.
#[derive(Debug, Default)]
pub struct StreamedExec {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The remotecommand channels of the websocket protocol.
const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;

impl Cri {
    /// The streaming Exec, as `crictl exec` does it: the CRI `Exec` call
    /// gives a URL of containerd's streaming server, spoken to over a
    /// websocket with Kubernetes' `v4.channel.k8s.io` protocol (one byte of
    /// channel, then data; the error channel ends with a JSON status whose
    /// causes carry the exit code). `stdin`, when given, is sent as one
    /// message (v4 cannot close stdin: the command must stop reading by
    /// itself).
    pub fn exec_stream(
        &self,
        id: &str,
        cmd: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<StreamedExec, Error> {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::Message;
        let r = self.block_on(self.runtime().exec(ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: stdin.is_some(),
            stdout: true,
            stderr: true,
        }))?;
        let url = r
            .url
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}"))
            .ok_or_else(|| format!("the streaming server's URL is not http: {}", r.url))?;
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
        let (mut ws, _) = tungstenite::connect(req)?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(CALL_TIMEOUT))?;
        }
        if let Some(data) = stdin {
            let mut m = vec![CH_STDIN];
            m.extend_from_slice(data);
            ws.send(Message::binary(m))?;
        }
        let mut out = StreamedExec::default();
        let mut error = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => match b.split_first() {
                    Some((&CH_STDOUT, d)) => out.stdout.extend_from_slice(d),
                    Some((&CH_STDERR, d)) => out.stderr.extend_from_slice(d),
                    Some((&CH_ERROR, d)) => error.extend_from_slice(d),
                    _ => {}
                },
                Ok(Message::Close(_))
                | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the exec stream: {e}").into()),
            }
        }
        // v4: a metav1.Status, Success or Failure with an ExitCode cause.
        let status: serde_json::Value = serde_json::from_slice(&error).map_err(|e| {
            format!(
                "the exec's status {:?}: {e}",
                String::from_utf8_lossy(&error)
            )
        })?;
        if status["status"] != "Success" {
            out.exit_code = status["details"]["causes"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| format!("the exec failed: {status}"))?;
        }
        Ok(out)
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        let pods: Vec<String> = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for pod in pods {
            // The pod's containers go with it (and its network namespace,
            // which lives on the host's /run/netns).
            if let Err(e) = self.stop_pod(&pod) {
                eprintln!("idshift-tests: stopping pod {pod}: {e}");
            }
            if let Err(e) = self.remove_pod(&pod) {
                eprintln!("idshift-tests: removing pod {pod}: {e}");
            }
        }
    }
}

/// A pod config: `name` (also its uid) in namespace `default`, host network
/// or not, `share_pid` for `shareProcessNamespace`, logs under `log_dir`.
pub fn pod_config(
    name: &str,
    log_dir: &Path,
    host_network: bool,
    share_pid: bool,
) -> PodSandboxConfig {
    let mode = |host: bool| {
        if host {
            NamespaceMode::Node as i32
        } else {
            NamespaceMode::Pod as i32
        }
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: name.to_string(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: if host_network {
            String::new()
        } else {
            name.chars().take(63).collect()
        },
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: mode(host_network),
                    pid: if share_pid {
                        NamespaceMode::Pod as i32
                    } else {
                        NamespaceMode::Container as i32
                    },
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config: `name` running `image` with `command`, its log at
/// `<pod log dir>/<name>.log`, namespaces as the pod's.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    pod: &PodSandboxConfig,
) -> ContainerConfig {
    let ns = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
