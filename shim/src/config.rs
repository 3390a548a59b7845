//! idshift's configuration: `/etc/idshift/config.toml` by default, or the
//! file containerd's runtime options name (`ConfigPath`).

use rootfs::Strategy;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use userns::AllocatorConfig;

/// The file in a container's bundle naming the config its runtime options
/// gave (`ConfigPath`), for `shim delete`, which gets no options.
pub const CONFIG_PATH_FILE: &str = "idshift-config-path";

pub const DEFAULT_CONFIG: &str = "/etc/idshift/config.toml";
/// An environment variable naming the config file (set on containerd).
pub const CONFIG_ENV: &str = "IDSHIFT_CONFIG";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto`, `fd`, `path`, `per-layer` or `plain`.
    pub strategy: Strategy,
    /// Persistent state: the ID range allocator.
    pub state_dir: PathBuf,
    /// Per-container runtime state and mount points (should be a tmpfs).
    pub run_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Whether a container outside a CRI pod (e.g. `ctr run`) whose spec
    /// asks for no user namespace still gets one over a range of its own.
    pub userns: UsernsMode,
    /// The user namespace of a CRI pod whose sandbox asks for none.
    pub pod_userns: PodUsernsMode,
    /// Under `pod_userns = "own-range"`: what becomes of a pod (or
    /// container) that shares the host's PID or IPC namespace or is
    /// privileged, which a user namespace of its own cannot serve.
    pub pod_host_access: HostAccess,
    /// How the bind mounts of a container in a range of idshift's own
    /// (ctr, Docker, `own-range` pods) see their host files.
    pub binds: BindsMode,
    pub pool: Pool,
    /// When a shim decides that containerd has forgotten it.
    pub orphan: Orphan,
}

/// `[orphan]`: how a serving shim notices that containerd no longer knows
/// it (containerd killed during creates and restarted, say) and exits,
/// releasing what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Orphan {
    /// A shim that has served no container (no Create yet, or none left)
    /// for this long exits.
    pub grace_seconds: u64,
    /// How often the shim looks at its containers' bundles (and asks
    /// containerd).
    pub check_seconds: u64,
    /// Also ask containerd's containers API (at the shim's `-address`)
    /// whether it still has each container: two NOT_FOUND answers in a row
    /// make the container forgotten; no answer is never taken for one.
    pub ask_containerd: bool,
}

impl Default for Orphan {
    fn default() -> Self {
        Orphan {
            grace_seconds: 60,
            check_seconds: 5,
            ask_containerd: true,
        }
    }
}

impl Orphan {
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.grace_seconds.max(1))
    }
    pub fn check(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.check_seconds.max(1))
    }
}

/// `userns = "always" | "when-requested"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsernsMode {
    /// Every container or pod gets a user namespace: the spec's (a path or
    /// mappings, as containerd 2.x passes for `hostUsers: false`), else one
    /// over a host ID range idshift allocates.
    #[default]
    Always,
    /// Only a spec that asks for a user namespace gets one; the others run
    /// as host root with a plain overlay rootfs (the `plain` strategy).
    WhenRequested,
}

/// `pod_userns = "as-requested" | "own-range"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodUsernsMode {
    /// As runc: the user namespace the pod's sandbox config asks for
    /// (kubelet's mappings for `hostUsers: false`), else the host's.
    #[default]
    AsRequested,
    /// A pod whose sandbox asks for none still gets a user namespace over a
    /// host ID range idshift allocates; its bind mounts are idmapped.
    OwnRange,
}

/// `pod_host_access = "host-ids" | "refuse"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostAccess {
    /// Runs on the host's IDs, without a user namespace, as under runc.
    #[default]
    HostIds,
    /// Refused at create, saying why.
    Refuse,
}

/// `binds = "idmapped" | "shifted"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindsMode {
    /// Every bind mount is idmapped into the container's user namespace:
    /// host IDs 0..N are the container's 0..N, so host files look (and
    /// are written) as under runc: the container's root is host root for
    /// the files it is given, and only for those.
    #[default]
    Idmapped,
    /// Bind mounts keep the host's owners: an owner outside the container's
    /// range is the overflow ID (65534) inside and gets the host's
    /// permission checks as such (a bind mount asking for `idmap` is still
    /// idmapped).
    Shifted,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    pub start: u32,
    pub size: u32,
    /// IDs per range: per container, per pod under CRI (kubelet's
    /// `idsPerPod`); a multiple of 65536.
    pub range_size: u32,
    /// kubelet's own subordinate IDs (the entries of user `kubelet`), which
    /// idshift's pool must not overlap: checked before every allocation.
    pub kubelet_subuid: PathBuf,
    pub kubelet_subgid: PathBuf,
}

impl Default for Pool {
    fn default() -> Self {
        let d = AllocatorConfig::default();
        Pool {
            start: d.pool_start,
            size: d.pool_size,
            range_size: d.range_size,
            kubelet_subuid: PathBuf::from("/etc/subuid"),
            kubelet_subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::Auto,
            state_dir: PathBuf::from("/var/lib/idshift"),
            run_dir: PathBuf::from("/run/idshift"),
            log_level: "info".into(),
            userns: UsernsMode::Always,
            pod_userns: PodUsernsMode::AsRequested,
            pod_host_access: HostAccess::HostIds,
            binds: BindsMode::Idmapped,
            pool: Pool::default(),
            orphan: Orphan::default(),
        }
    }
}

impl Config {
    /// Reads `path`, else `$IDSHIFT_CONFIG` (containerd passes its
    /// environment to shims), else the default file. A missing default file
    /// means defaults; a missing file that was asked for is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let (path, explicit) = match (path, &env) {
            (Some(p), _) => (p, true),
            (None, Some(e)) => (e.as_path(), true),
            (None, None) => (Path::new(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(e) => return Err(format!("reading idshift config {}: {e}", path.display())),
        };
        Config::parse(&text).map_err(|e| format!("idshift config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if !matches!(
            c.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(format!(
                "log_level {:?} is not one of error, warn, info, debug, trace",
                c.log_level
            ));
        }
        c.allocator()
            .check_kubernetes()
            .map_err(|e| format!("[pool]: {e}"))?;
        Ok(c)
    }

    /// Refuses a pool that overlaps the subordinate IDs of user `kubelet`
    /// (`/etc/subuid`, `/etc/subgid`): kubelet hands those to its pods with
    /// `hostUsers: false`, and no ID may belong to two pods.
    pub fn check_kubelet_subids(&self) -> Result<(), String> {
        for path in [&self.pool.kubelet_subuid, &self.pool.kubelet_subgid] {
            let overlaps = userns::subid_overlaps(self.pool.start, self.pool.size, path)
                .map_err(|e| e.to_string())?;
            if let Some((_, r)) = overlaps.iter().find(|(name, _)| name == "kubelet") {
                return Err(format!(
                    "idshift's ID pool {}+{} overlaps kubelet's subordinate IDs {}+{} in {}: move [pool] start or kubelet's entry so that they are disjoint",
                    self.pool.start,
                    self.pool.size,
                    r.base,
                    r.size,
                    path.display()
                ));
            }
        }
        Ok(())
    }

    pub fn allocator(&self) -> AllocatorConfig {
        AllocatorConfig {
            state_dir: self.state_dir.clone(),
            pool_start: self.pool.start,
            pool_size: self.pool.size,
            range_size: self.pool.range_size,
        }
    }

    pub fn log_filter(&self) -> log::LevelFilter {
        match self.log_level.as_str() {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            _ => log::LevelFilter::Info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        assert_eq!(Config::parse("").expect("empty"), Config::default());
        let c = Config::parse(
            "strategy = \"per-layer\"\nstate_dir = \"/x\"\nlog_level = \"debug\"\n[pool]\nstart = 196608\nsize = 131072\nrange_size = 65536\n",
        )
        .expect("full");
        assert_eq!(c.strategy, Strategy::PerLayer);
        assert_eq!(c.allocator().pool_start, 196608);
        assert_eq!(c.log_filter(), log::LevelFilter::Debug);
        assert_eq!(c.userns, UsernsMode::Always);
        let c = Config::parse("userns = \"when-requested\"").expect("userns");
        assert_eq!(c.userns, UsernsMode::WhenRequested);
        assert_eq!(c.pod_userns, PodUsernsMode::AsRequested);
        assert_eq!(c.pod_host_access, HostAccess::HostIds);
        let c = Config::parse("pod_userns = \"own-range\"\npod_host_access = \"refuse\"")
            .expect("pod keys");
        assert_eq!(c.pod_userns, PodUsernsMode::OwnRange);
        assert_eq!(c.pod_host_access, HostAccess::Refuse);
        assert_eq!(c.binds, BindsMode::Idmapped);
        let c = Config::parse("binds = \"shifted\"").expect("binds");
        assert_eq!(c.binds, BindsMode::Shifted);
        let e = Config::parse("binds = \"chowned\"").expect_err("bad binds");
        assert!(e.contains("chowned"), "{e}");
        let e = Config::parse("pod_userns = \"always\"").expect_err("bad pod_userns");
        assert!(e.contains("always"), "{e}");
        let c =
            Config::parse("[orphan]\ngrace_seconds = 7\nask_containerd = false\n").expect("orphan");
        assert_eq!(c.orphan.grace(), std::time::Duration::from_secs(7));
        assert_eq!(c.orphan.check_seconds, 5);
        assert!(!c.orphan.ask_containerd);
        let e = Config::parse("[orphan]\ngrace = 7\n").expect_err("typo");
        assert!(e.contains("grace"), "{e}");
        let e = Config::parse("userns = \"never\"").expect_err("bad userns");
        assert!(e.contains("never"), "{e}");
        let e = Config::parse("strategy = \"fast\"").expect_err("bad strategy");
        assert!(e.contains("fast"), "{e}");
        let e = Config::parse("stratgy = \"fd\"").expect_err("typo");
        assert!(e.contains("stratgy"), "{e}");
        let e = Config::parse("log_level = \"loud\"").expect_err("level");
        assert!(e.contains("loud"), "{e}");
    }

    #[test]
    fn pools_follow_kubernetes_rules_and_avoid_kubelets_ids() {
        let e = Config::parse("[pool]\nstart = 200000").expect_err("unaligned");
        assert!(e.contains("[pool]: ") && e.contains("200000"), "{e}");
        let e = Config::parse("[pool]\nrange_size = 4096").expect_err("small");
        assert!(e.contains("4096"), "{e}");
        let d = tempfile::tempdir().expect("tempdir");
        let (u, g) = (d.path().join("subuid"), d.path().join("subgid"));
        std::fs::write(&u, "kubelet:65536:7208960\nalice:1879048192:65536\n").expect("subuid");
        std::fs::write(&g, "kubelet:1879179264:65536\n").expect("subgid");
        let cfg = |start: u32| {
            Config::parse(&format!(
                "[pool]\nstart = {start}\nsize = 262144\nkubelet_subuid = {u:?}\nkubelet_subgid = {g:?}"
            ))
            .expect("config")
        };
        // alice's entry is not kubelet's; kubelet's subgid one is.
        let e = cfg(1879048192).check_kubelet_subids().expect_err("overlap");
        assert_eq!(
            e,
            format!("idshift's ID pool 1879048192+262144 overlaps kubelet's subordinate IDs 1879179264+65536 in {}: move [pool] start or kubelet's entry so that they are disjoint", g.display())
        );
        cfg(1879048192 + 262144)
            .check_kubelet_subids()
            .expect("disjoint");
        let e = cfg(65536).check_kubelet_subids().expect_err("subuid");
        assert!(e.contains("subuid"), "{e}");
    }

    #[test]
    fn missing_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = Config::load(Some(&d.path().join("none.toml"))).expect_err("explicit");
        assert!(e.contains("none.toml"), "{e}");
    }
}
