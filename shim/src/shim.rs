//! The shim process's life: `start` (spawn the serving shim, or reuse the
//! group's), `delete` (clean up after a dead shim), and serving.

use crate::config::Config;
use crate::container::{cleanup_persisted, read_persisted, read_spec, run_dir, Persisted};
use crate::service::{Origin, TaskService};
use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::{Config as ShimConfig, Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use std::io::Read;
use std::sync::Arc;

pub struct IdshiftShim {
    namespace: String,
    id: String,
    /// The serving shim's ttrpc socket (`unix://...`).
    socket: String,
    exit: Arc<ExitSignal>,
    /// containerd's gRPC address, the task id and bundle it was started for.
    origin: Origin,
}

/// Makes the serving shim's ttrpc socket root's only (0600). The shim
/// crate binds it with the process umask (0755 with the usual 022): connect
/// needs write permission, so nobody but root could connect even then, but
/// the socket should say so itself. The shim's umask is not narrowed
/// instead: the containers' processes inherit it.
fn restrict_socket(socket: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket.trim_start_matches("unix://");
    if path.is_empty() || path.starts_with('@') {
        // An abstract socket has no mode.
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Runtime options as containerd passes them: a `google.protobuf.Any`.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct AnyOptions {
    pub type_url: String,
    pub value: Vec<u8>,
}

impl AnyOptions {
    /// The `ConfigPath` they name (containerd's generic
    /// `runtimeoptions.v1.Options`), if any.
    pub fn config_path(&self) -> Option<std::path::PathBuf> {
        if !self.type_url.contains("runtimeoptions") {
            return None;
        }
        proto_fields(&self.value)
            .ok()?
            .into_iter()
            .find(|(f, _)| *f == 2)
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .filter(|p| !p.is_empty())
            .map(Into::into)
    }
}

/// What containerd wrote to `start`'s standard input.
#[derive(Debug, PartialEq, Eq)]
pub enum StartInput {
    Nothing,
    /// containerd 1.6/1.7: the runtime options.
    Options(AnyOptions),
    /// containerd 2.x: the bootstrap parameters (id, namespace, addresses...),
    /// the runtime options among their extensions (field 8).
    Bootstrap {
        id: String,
        namespace: String,
        options: Vec<AnyOptions>,
    },
}

impl StartInput {
    /// The runtime options, whichever containerd sent them.
    pub fn options(&self) -> &[AnyOptions] {
        match self {
            StartInput::Nothing => &[],
            StartInput::Options(o) => std::slice::from_ref(o),
            StartInput::Bootstrap { options, .. } => options,
        }
    }
}

/// The length-delimited fields (number, bytes) of a protobuf message;
/// other wire types are skipped.
fn proto_fields(data: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut i = 0;
    let varint = |i: &mut usize| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *data.get(*i).ok_or("truncated varint")?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    };
    while i < data.len() {
        let tag = varint(&mut i)?;
        let (field, wire) = ((tag >> 3) as u32, tag & 7);
        match wire {
            0 => {
                varint(&mut i)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut i)?).map_err(|_| "field too long")?;
                let end = i
                    .checked_add(len)
                    .filter(|&e| e <= data.len())
                    .ok_or("truncated field")?;
                fields.push((field, data[i..end].to_vec()));
                i = end;
            }
            1 => i += 8,
            5 => i += 4,
            w => return Err(format!("unsupported protobuf wire type {w}")),
        }
    }
    if i > data.len() {
        return Err("truncated fixed-size field".into());
    }
    Ok(fields)
}

/// An `Any` from its fields (type_url 1, value 2).
fn any_of(fields: &[(u32, Vec<u8>)]) -> AnyOptions {
    let get = |n: u32| fields.iter().find(|(f, _)| *f == n).map(|(_, v)| v.clone());
    AnyOptions {
        type_url: String::from_utf8_lossy(&get(1).unwrap_or_default()).into_owned(),
        value: get(2).unwrap_or_default(),
    }
}

/// Tells the two apart: an `Any` has only fields 1 and 2; containerd 2.x's
/// bootstrap message has more (version 4, addresses 5-7, socket dir 9).
pub fn parse_start_input(data: &[u8]) -> Result<StartInput, String> {
    if data.is_empty() {
        return Ok(StartInput::Nothing);
    }
    let fields = proto_fields(data)?;
    let text = |n: u32| {
        fields
            .iter()
            .find(|(f, _)| *f == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    if fields.iter().any(|(f, _)| *f > 2) {
        // extensions (8): Extension { google.protobuf.Any value = 1 }.
        let mut options = Vec::new();
        for (_, ext) in fields.iter().filter(|(f, _)| *f == 8) {
            let ext = proto_fields(ext).map_err(|e| format!("bootstrap extension: {e}"))?;
            if let Some((_, any)) = ext.iter().find(|(f, _)| *f == 1) {
                let any =
                    proto_fields(any).map_err(|e| format!("bootstrap extension's Any: {e}"))?;
                options.push(any_of(&any));
            }
        }
        Ok(StartInput::Bootstrap {
            id: text(1),
            namespace: text(2),
            options,
        })
    } else {
        Ok(StartInput::Options(any_of(&fields)))
    }
}

/// The group a container's shim serves: the pod (CRI) or an explicit group.
pub fn grouping(id: &str, spec: Option<&oci_spec::runtime::Spec>) -> String {
    let ann = spec
        .and_then(|s| s.annotations().clone())
        .unwrap_or_default();
    for key in [
        "io.kubernetes.cri.sandbox-id",
        "io.containerd.runc.v2.group",
    ] {
        if let Some(v) = ann.get(key).filter(|v| !v.is_empty()) {
            return v.clone();
        }
    }
    id.to_string()
}

#[async_trait]
impl Shim for IdshiftShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut ShimConfig) -> Self {
        IdshiftShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            socket: args.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
            origin: Origin {
                address: args.address.clone(),
                id: args.id.clone(),
                bundle: std::env::current_dir().ok(),
                socket: args.socket.clone(),
            },
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|e| Error::Other(format!("reading start's standard input: {e}")))?;
        let input = parse_start_input(&data)
            .map_err(|e| Error::InvalidArgument(format!("start input: {e}")))?;
        log::debug!("start input: {input:?}");
        // A ConfigPath in the runtime options (1.6's Any, 2.x's bootstrap
        // extension) must name a config that loads: refused here, at start,
        // rather than at the first create.
        for path in input.options().iter().filter_map(AnyOptions::config_path) {
            Config::load(Some(&path)).map_err(|e| {
                Error::InvalidArgument(format!("the runtime options' ConfigPath: {e}"))
            })?;
        }
        let cwd = std::env::current_dir().map_err(|e| Error::Other(format!("bundle dir: {e}")))?;
        let spec = read_spec(&cwd).ok();
        let group = grouping(&opts.id, spec.as_ref());
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &group);
        // Another container of the group: its shim is already serving.
        let sock_path = address.trim_start_matches("unix://");
        if std::os::unix::net::UnixStream::connect(sock_path).is_ok() {
            std::fs::write(cwd.join("address"), &address)
                .map_err(|e| Error::Other(format!("writing the address file: {e}")))?;
            return Ok(address);
        }
        let exe = std::env::current_exe().map_err(|e| Error::Other(format!("shim binary: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.env("GLIBC_TUNABLES", glibc_tunables());
        cmd.current_dir(&cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .args([
                "-namespace",
                &opts.namespace,
                "-id",
                &opts.id,
                "-address",
                &opts.address,
                "-socket",
                &address,
            ]);
        if opts.debug {
            cmd.arg("-debug");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Other(format!("spawning the serving shim: {e}")))?;
        // The serving shim closes its stdout once it listens, or by dying.
        if let Some(mut out) = child.stdout.take() {
            let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
        }
        // It closes stdout only once it listens: if nobody answers on the
        // socket, it died (its stdout closes before it becomes waitable, so
        // the socket, not its exit status, is the test).
        if std::os::unix::net::UnixStream::connect(sock_path).is_err() {
            let status = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait())
                .await
                .map(|s| s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))
                .unwrap_or_else(|_| "still running".into());
            return Err(Error::Other(format!(
                "the serving shim exited ({status}) instead of listening on {address}; see the shim log in containerd's log"
            )));
        }
        std::fs::write(cwd.join("address"), &address)
            .map_err(|e| Error::Other(format!("writing the address file: {e}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // The config the container was made with (its runtime options'
        // ConfigPath, recorded in the bundle, containerd's cwd for delete),
        // else the default one.
        let recorded = std::env::current_dir()
            .ok()
            .and_then(|b| std::fs::read(b.join(crate::config::CONFIG_PATH_FILE)).ok())
            .map(|b| {
                std::path::PathBuf::from(
                    <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(b),
                )
            });
        let config = Config::load(recorded.as_deref()).map_err(Error::InvalidArgument)?;
        let dir = run_dir(&config, &self.namespace, &self.id);
        let mut resp = DeleteResponse::new();
        let persisted = read_persisted(&dir);
        let created = persisted.is_some();
        let p = match persisted {
            Some(p) => p,
            None => {
                // No (readable) state.json: the shim died before writing
                // it, or it is lost. What the container may hold is found
                // from the config, the allocator and the bundle (the cwd).
                log::warn!(
                    "{}: no readable {}/state.json; cleaning up by the config and the bundle",
                    self.id,
                    dir.display()
                );
                fallback_persisted(&config, &self.namespace, &self.id)
            }
        };
        // With a cgroup on record, its cleanup kills every process in it
        // (the init is put there before it runs); a bare pid is signalled
        // only without one (it may have been reused since the shim died).
        if p.pid > 0 && p.cgroup.is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        resp.pid = p.pid.max(0) as u32;
        cleanup_persisted(&p, &dir);
        remove_dead_socket();
        // The container is gone: its poststop hooks run, as `runc delete`
        // runs them (status "stopped"); without a state.json the container
        // may never have been made, and none run. A failure is logged.
        if created {
            let id = self.id.clone();
            let ran = tokio::task::spawn_blocking(move || run_poststop(&id)).await;
            if let Err(e) = ran {
                log::warn!("{}: the poststop hooks' task failed: {e}", self.id);
            }
        }
        resp.exit_status = 128 + libc::SIGKILL as u32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut t = Timestamp::new();
        t.seconds = now.as_secs() as i64;
        t.nanos = now.subsec_nanos() as i32;
        resp.exited_at = MessageField::some(t);
        Ok(resp)
    }

    async fn wait(&mut self) {
        // The server listens by now (the shim crate calls wait after
        // starting it).
        if let Err(e) = restrict_socket(&self.socket) {
            log::warn!("chmod 0600 {}: {e}", self.socket);
        }
        self.exit.wait().await;
        // The shim crate removes the socket named in the bundle's `address`
        // file once the server stops; an orphan's bundle is gone, so the
        // socket is removed here (no new connection is wanted either way).
        let path = self.socket.trim_start_matches("unix://");
        if path.starts_with('/') {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("removing the shim's socket {path}: {e}")
                }
                _ => {}
            }
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(
            &self.namespace,
            publisher,
            self.exit.clone(),
            self.origin.clone(),
        )
    }
}

/// `GLIBC_TUNABLES` for the serving shim: the caller's, and no cache of
/// the stacks of exited threads (glibc keeps up to 40 MiB of them mapped,
/// their touched pages resident: 12-24 KiB each of the blocking pool's
/// threads, which leave after a second idle). The shim's processes get
/// their own environment (the spec's), never this one.
fn glibc_tunables() -> String {
    const NO_STACK_CACHE: &str = "glibc.pthread.stack_cache_size=0";
    match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:{NO_STACK_CACHE}"),
        _ => NO_STACK_CACHE.to_string(),
    }
}

/// The poststop hooks of the spec in the bundle (`shim delete`'s cwd), run
/// after a dead shim's container is cleaned up; failures are logged.
fn run_poststop(id: &str) {
    let bundle = match std::env::current_dir() {
        Ok(b) => b,
        Err(e) => {
            log::warn!("{id}: poststop hooks not run: finding the bundle: {e}");
            return;
        }
    };
    let spec = match read_spec(&bundle) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{id}: poststop hooks not run: {e}");
            return;
        }
    };
    let point = crate::hooks::Point::Poststop;
    let hooks = point.of(spec.hooks().as_ref());
    if hooks.is_empty() {
        return;
    }
    let state = crate::hooks::State::of(&spec, id, &bundle).with("stopped", 0);
    // `shim delete` reaps its children too (the shim crate's SIGCHLD
    // handler): the hooks run in the helper, as the serving shim runs them.
    match crate::hooks::run_from_shim(point, &hooks, &state) {
        Ok(()) => log::info!("{id}: ran {} poststop hook(s)", hooks.len()),
        Err(e) => log::warn!("{id}: {e}"),
    }
}

/// What `shim delete` cleans up without a state.json: the range the
/// allocator holds for the container (if any) and the cgroup its spec names
/// (or idshift's default).
fn fallback_persisted(config: &Config, namespace: &str, id: &str) -> Persisted {
    let owner = crate::container::range_owner(namespace, id);
    let held = userns::Allocator::open(config.allocator())
        .and_then(|a| a.lookup(&owner))
        .map_err(|e| log::error!("looking up the ID range of {owner}: {e}"))
        .ok()
        .flatten();
    let spec = std::env::current_dir()
        .ok()
        .and_then(|bundle| read_spec(&bundle).ok());
    let cgroup = crate::container::cgroup_path(spec.as_ref(), namespace, id);
    Persisted {
        pid: 0,
        range_owner: held.map(|_| owner),
        state_dir: config.state_dir.clone(),
        pool_start: config.pool.start,
        pool_size: config.pool.size,
        range_size: config.pool.range_size,
        cgroup: Some(cgroup),
        pod: None,
        shim_pid: 0,
        bundle: None,
        socket: None,
    }
}

/// The serving shim's socket (named in the bundle's `address` file, the
/// cwd of `shim delete`) removed if nobody listens on it any more: a
/// SIGKILLed shim cannot remove it itself. A socket still served (another
/// container of a live group shim) stays.
fn remove_dead_socket() {
    let Ok(address) = std::fs::read_to_string("address") else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if path.is_empty() || !path.starts_with('/') {
        return;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            if let Err(e) = std::fs::remove_file(path) {
                log::error!("removing the dead shim's socket {path}: {e}");
            }
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What containerd 2.3.4 wrote to a shim's stdin at `start`.
    const BOOTSTRAP_FIXTURE: &[u8] =
        include_bytes!("../fixtures/containerd-2.3.4-shim-start-stdin.bin");

    #[test]
    fn containerd_2_bootstrap_is_recognised() {
        assert_eq!(
            parse_start_input(BOOTSTRAP_FIXTURE),
            Ok(StartInput::Bootstrap {
                id: "demo1".into(),
                namespace: "default".into(),
                options: Vec::new(),
            })
        );
    }

    /// The recorded bytes are a `BootstrapParams` of containerd's schema
    /// (`fixtures/bootstrap.proto`, parsed here without protoc): encoding
    /// the fixture's values from the schema gives exactly those bytes, and
    /// a message encoded from the schema with other values (extensions, a
    /// log level) is recognised too.
    #[test]
    fn bootstrap_fixture_matches_its_schema() {
        use containerd_shim_protos::protobuf::reflect::{
            FileDescriptor, MessageDescriptor, ReflectValueBox,
        };
        use containerd_shim_protos::protobuf::MessageDyn;

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let parsed = protobuf_parse::Parser::new()
            .pure()
            .include(&dir)
            .input(dir.join("bootstrap.proto"))
            .parse_and_typecheck()
            .expect("bootstrap.proto parses");
        let files = FileDescriptor::new_dynamic_fds(parsed.file_descriptors, &[])
            .expect("bootstrap.proto's descriptors");
        let file = files
            .iter()
            .find(|f| f.proto().name() == "bootstrap.proto")
            .expect("bootstrap.proto among the parsed files");
        let params = file
            .message_by_package_relative_name("BootstrapParams")
            .expect("BootstrapParams");
        let set = |m: &mut dyn MessageDyn, d: &MessageDescriptor, name: &str, v: &str| {
            d.field_by_name(name)
                .unwrap_or_else(|| panic!("field {name}"))
                .set_singular_field(m, ReflectValueBox::String(v.into()));
        };
        let mut m = params.new_instance();
        for (name, value) in [
            ("instance_id", "demo1"),
            ("namespace", "default"),
            ("containerd_version", "v2.3.4"),
            (
                "containerd_ttrpc_address",
                "/run/containerd/containerd.sock.ttrpc",
            ),
            ("containerd_grpc_address", "/run/containerd/containerd.sock"),
            ("containerd_binary", "/usr/bin/containerd"),
            ("socket_dir", "/run/containerd/s"),
        ] {
            set(&mut *m, &params, name, value);
        }
        let encoded = m.write_to_bytes_dyn().expect("encode");
        assert_eq!(
            encoded, BOOTSTRAP_FIXTURE,
            "the fixture is the schema's encoding"
        );

        // The fixture read back through the schema.
        let back = params
            .parse_from_bytes(BOOTSTRAP_FIXTURE)
            .expect("the fixture parses as BootstrapParams");
        let get = |name: &str| {
            params
                .field_by_name(name)
                .and_then(|f| f.get_singular(&*back))
                .map(|v| v.to_string())
        };
        assert_eq!(get("instance_id").as_deref(), Some("demo1"));
        assert_eq!(get("socket_dir").as_deref(), Some("/run/containerd/s"));

        // Another message of the same schema: a log level, an extension
        // (runtime options as an Any) and no socket dir.
        let mut m = params.new_instance();
        set(&mut *m, &params, "instance_id", "c2");
        set(&mut *m, &params, "namespace", "k8s.io");
        params
            .field_by_name("log_level")
            .expect("log_level")
            .set_singular_field(
                &mut *m,
                ReflectValueBox::Enum(
                    file.enum_by_package_relative_name("LogLevel")
                        .expect("LogLevel"),
                    2,
                ),
            );
        let ext_d = file
            .message_by_package_relative_name("Extension")
            .expect("Extension");
        let any_d = ext_d
            .field_by_name("value")
            .expect("value")
            .singular_runtime_type();
        let containerd_shim_protos::protobuf::reflect::RuntimeType::Message(any_d) = any_d else {
            panic!("Extension.value is a message");
        };
        let mut any = any_d.new_instance();
        set(&mut *any, &any_d, "type_url", "runtimeoptions.v1.Options");
        // runtimeoptions.v1.Options { type_url = 1, config_path = 2 }
        let mut value = vec![0x12, 19];
        value.extend_from_slice(b"/etc/idshift/a.toml");
        any_d
            .field_by_name("value")
            .expect("Any.value")
            .set_singular_field(&mut *any, ReflectValueBox::Bytes(value.clone()));
        let mut ext = ext_d.new_instance();
        ext_d
            .field_by_name("value")
            .expect("value")
            .set_singular_field(&mut *ext, ReflectValueBox::Message(any));
        params
            .field_by_name("extensions")
            .expect("extensions")
            .mut_repeated(&mut *m)
            .push(ReflectValueBox::Message(ext));
        let encoded = m.write_to_bytes_dyn().expect("encode");
        let input = parse_start_input(&encoded).expect("parses");
        assert_eq!(
            input,
            StartInput::Bootstrap {
                id: "c2".into(),
                namespace: "k8s.io".into(),
                options: vec![AnyOptions {
                    type_url: "runtimeoptions.v1.Options".into(),
                    value,
                }],
            }
        );
        assert_eq!(
            input.options()[0].config_path(),
            Some("/etc/idshift/a.toml".into())
        );
    }

    #[test]
    fn containerd_1_6_options_and_nothing() {
        assert_eq!(parse_start_input(&[]), Ok(StartInput::Nothing));
        // Any{type_url: "containerd.runc.v1.Options", value: [0x08, 0x01]}
        let mut any = vec![0x0a, 26];
        any.extend_from_slice(b"containerd.runc.v1.Options");
        any.extend_from_slice(&[0x12, 2, 0x08, 0x01]);
        let input = parse_start_input(&any).expect("parses");
        assert_eq!(
            input,
            StartInput::Options(AnyOptions {
                type_url: "containerd.runc.v1.Options".into(),
                value: vec![0x08, 0x01]
            })
        );
        assert_eq!(input.options()[0].config_path(), None);
        assert!(parse_start_input(&[0x0a, 50, 1]).is_err(), "truncated");
    }

    #[test]
    fn grouping_follows_annotations() {
        let mut spec = oci_spec::runtime::Spec::default();
        assert_eq!(grouping("c1", Some(&spec)), "c1");
        let mut ann = std::collections::HashMap::new();
        ann.insert(
            "io.kubernetes.cri.sandbox-id".to_string(),
            "pod1".to_string(),
        );
        spec.set_annotations(Some(ann));
        assert_eq!(grouping("c1", Some(&spec)), "pod1");
        assert_eq!(grouping("c1", None), "c1");
    }

    #[test]
    fn pod_roles_follow_cri_annotations() {
        use crate::container::{pod_role, PodRole};
        let mut spec = oci_spec::runtime::Spec::default();
        assert_eq!(pod_role("c1", &spec), PodRole::None);
        let ann = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        spec.set_annotations(ann(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-id", "pod1"),
        ]));
        assert_eq!(pod_role("pod1", &spec), PodRole::Sandbox("pod1".into()));
        spec.set_annotations(ann(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "pod1"),
        ]));
        assert_eq!(pod_role("c1", &spec), PodRole::Member("pod1".into()));
        // A container without its sandbox's id is no pod's.
        spec.set_annotations(ann(&[("io.kubernetes.cri.container-type", "container")]));
        assert_eq!(pod_role("c1", &spec), PodRole::None);
    }
}
