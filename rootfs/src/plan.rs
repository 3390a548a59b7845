//! What containerd asks for: parsing `CreateTaskRequest.rootfs` mounts into a
//! plan the strategies can build.

use rustix::mount::MountAttrFlags;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Overlayfs stacks at most this many lower layers.
pub const MAX_LAYERS: usize = 500;

/// One mount as containerd passes it (`containerd.types.Mount`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub fstype: String,
    pub source: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub options: Vec<String>,
}

/// A filesystem parameter passed through to the filesystem (`fsconfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsParam {
    Flag(String),
    Value(String, String),
}

/// One extent of an ID mapping: `size` IDs from `container` inside map to
/// `host` on the host (containerd's `container:host:size`, OCI's
/// `containerID`/`hostID`/`size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdExtent {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The idmapping containerd 2.x asks the runtime to apply to the layers
/// (`uidmap=`/`gidmap=` rootfs mount options, set by its overlay
/// snapshotter for kubelet's `hostUsers: false` pods and `ctr run --uidmap
/// --gidmap --remap-labels`): the layers must be idmapped into a user
/// namespace with exactly these mappings. idshift's idmapped clone uses the
/// container's user namespace, so these must be the spec's
/// `linux.uidMappings`/`gidMappings`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountIdmap {
    pub uid: Vec<IdExtent>,
    pub gid: Vec<IdExtent>,
}

/// Formats extents as containerd writes them (`0:262144:65536,...`).
pub fn format_extents(extents: &[IdExtent]) -> String {
    extents
        .iter()
        .map(|e| format!("{}:{}:{}", e.container, e.host, e.size))
        .collect::<Vec<_>>()
        .join(",")
}

/// The rootfs to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsPlan {
    Overlay(OverlayPlan),
    Bind(BindPlan),
}

/// An overlay: layers top first, as in `lowerdir=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayPlan {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Other overlay parameters (`index=off`, `metacopy=on`, `volatile`...).
    pub params: Vec<FsParam>,
    /// Mount attributes from generic options (`ro`, `nosuid`, `nodev`...).
    pub attrs: MountAttrFlags,
    /// `uidmap=`/`gidmap=`: the idmapping the layers must get.
    pub idmap: Option<MountIdmap>,
}

/// A single directory (containerd's `bind` rootfs: native snapshotter, or a
/// one-layer view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindPlan {
    pub source: PathBuf,
    pub recursive: bool,
    pub attrs: MountAttrFlags,
    /// `uidmap=`/`gidmap=`: the idmapping the directory must get.
    pub idmap: Option<MountIdmap>,
}

impl RootfsPlan {
    /// Number of image layers (1 for a bind).
    pub fn layer_count(&self) -> usize {
        match self {
            RootfsPlan::Overlay(o) => o.lowers.len(),
            RootfsPlan::Bind(_) => 1,
        }
    }

    /// The idmapping the mount options ask for (`uidmap=`/`gidmap=`).
    pub fn idmap(&self) -> Option<&MountIdmap> {
        match self {
            RootfsPlan::Overlay(o) => o.idmap.as_ref(),
            RootfsPlan::Bind(b) => b.idmap.as_ref(),
        }
    }
}

/// Why containerd's mounts cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no rootfs mounts were given")]
    NoMounts,
    #[error("containerd passed {count} rootfs mounts ({types}); idshift builds a rootfs from exactly one overlay or bind mount")]
    SeveralMounts { count: usize, types: String },
    #[error("rootfs mount type {fstype:?} is not supported (supported: overlay, bind)")]
    UnsupportedType { fstype: String },
    #[error("overlay rootfs mount has no lowerdir= option")]
    MissingLowerdir,
    #[error("overlay option {option:?} is given more than once")]
    Duplicate { option: String },
    #[error("lowerdir= entry {index} is empty")]
    EmptyLayer { index: usize },
    #[error("{count} layers exceed overlayfs's limit of {MAX_LAYERS} lower layers")]
    TooManyLayers { count: usize },
    #[error("overlay rootfs has upperdir= but no workdir=")]
    UpperWithoutWork,
    #[error("overlay rootfs has workdir= but no upperdir=")]
    WorkWithoutUpper,
    #[error("{what} {path:?} contains a '..' component; rootfs paths must not walk upwards")]
    ParentComponent { what: &'static str, path: String },
    #[error("{what} is empty")]
    EmptyPath { what: &'static str },
    #[error("bind rootfs mount has no source")]
    MissingSource,
    #[error("rootfs mount option {option}={value:?}: {reason} (containerd's format: container:host:size extents separated by ',')")]
    BadIdmap {
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error("rootfs mount options give {given} without {missing}: both or neither")]
    HalfIdmap {
        given: &'static str,
        missing: &'static str,
    },
}

/// Builds a plan from containerd's rootfs mounts. Relative paths (lowerdirs,
/// upper/work dirs, bind sources) are resolved against `base` and may not
/// contain `..`.
pub fn plan(mounts: &[MountSpec], base: &Path) -> Result<RootfsPlan, PlanError> {
    let mount = match mounts {
        [] => return Err(PlanError::NoMounts),
        [one] => one,
        many => {
            return Err(PlanError::SeveralMounts {
                count: many.len(),
                types: many
                    .iter()
                    .map(|m| m.fstype.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let is_bind = mount.fstype == "bind"
        || (mount.fstype.is_empty() || mount.fstype == "none")
            && mount.options.iter().any(|o| o == "bind" || o == "rbind");
    if mount.fstype == "overlay" {
        plan_overlay(mount, base).map(RootfsPlan::Overlay)
    } else if is_bind {
        plan_bind(mount, base).map(RootfsPlan::Bind)
    } else {
        Err(PlanError::UnsupportedType {
            fstype: mount.fstype.clone(),
        })
    }
}

/// Applies a generic mount option to `attrs`; false when it is not one.
fn mount_attr_option(option: &str, attrs: &mut MountAttrFlags) -> bool {
    let (set, clear) = match option {
        "ro" => (MountAttrFlags::MOUNT_ATTR_RDONLY, MountAttrFlags::empty()),
        "rw" => (MountAttrFlags::empty(), MountAttrFlags::MOUNT_ATTR_RDONLY),
        "nosuid" => (MountAttrFlags::MOUNT_ATTR_NOSUID, MountAttrFlags::empty()),
        "suid" => (MountAttrFlags::empty(), MountAttrFlags::MOUNT_ATTR_NOSUID),
        "nodev" => (MountAttrFlags::MOUNT_ATTR_NODEV, MountAttrFlags::empty()),
        "dev" => (MountAttrFlags::empty(), MountAttrFlags::MOUNT_ATTR_NODEV),
        "noexec" => (MountAttrFlags::MOUNT_ATTR_NOEXEC, MountAttrFlags::empty()),
        "exec" => (MountAttrFlags::empty(), MountAttrFlags::MOUNT_ATTR_NOEXEC),
        "noatime" => (MountAttrFlags::MOUNT_ATTR_NOATIME, MountAttrFlags::empty()),
        "nodiratime" => (
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            MountAttrFlags::empty(),
        ),
        "strictatime" => (
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
            MountAttrFlags::empty(),
        ),
        "relatime" | "defaults" | "async" | "atime" | "diratime" => {
            (MountAttrFlags::empty(), MountAttrFlags::empty())
        }
        _ => return false,
    };
    attrs.remove(clear);
    attrs.insert(set);
    true
}

fn plan_overlay(mount: &MountSpec, base: &Path) -> Result<OverlayPlan, PlanError> {
    let mut lowers = None;
    let mut upper = None;
    let mut work = None;
    let mut params = Vec::new();
    let mut attrs = MountAttrFlags::empty();
    let mut idmap = IdmapOptions::default();
    for option in &mount.options {
        if mount_attr_option(option, &mut attrs) || idmap.take(option)? {
            continue;
        }
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        let slot = match (key, value) {
            ("lowerdir", Some(v)) => {
                if lowers.is_some() {
                    return Err(PlanError::Duplicate { option: key.into() });
                }
                lowers = Some(split_lowerdir(v, base)?);
                continue;
            }
            ("upperdir", Some(_)) => &mut upper,
            ("workdir", Some(_)) => &mut work,
            (_, Some(v)) => {
                params.push(FsParam::Value(key.into(), v.into()));
                continue;
            }
            (_, None) => {
                params.push(FsParam::Flag(key.into()));
                continue;
            }
        };
        if slot.is_some() {
            return Err(PlanError::Duplicate { option: key.into() });
        }
        let what = if key == "upperdir" {
            "upperdir"
        } else {
            "workdir"
        };
        *slot = Some(resolve(what, value.unwrap_or_default(), base)?);
    }
    let lowers = lowers.ok_or(PlanError::MissingLowerdir)?;
    if lowers.len() > MAX_LAYERS {
        return Err(PlanError::TooManyLayers {
            count: lowers.len(),
        });
    }
    match (&upper, &work) {
        (Some(_), None) => return Err(PlanError::UpperWithoutWork),
        (None, Some(_)) => return Err(PlanError::WorkWithoutUpper),
        _ => {}
    }
    Ok(OverlayPlan {
        lowers,
        upper,
        work,
        params,
        attrs,
        idmap: idmap.finish()?,
    })
}

fn plan_bind(mount: &MountSpec, base: &Path) -> Result<BindPlan, PlanError> {
    if mount.source.is_empty() {
        return Err(PlanError::MissingSource);
    }
    let mut attrs = MountAttrFlags::empty();
    let mut recursive = false;
    let mut idmap = IdmapOptions::default();
    for option in &mount.options {
        if idmap.take(option)? {
            continue;
        }
        match option.as_str() {
            "rbind" => recursive = true,
            "bind" => {}
            other => {
                // Propagation and other bind options do not change the tree.
                mount_attr_option(other, &mut attrs);
            }
        }
    }
    Ok(BindPlan {
        source: resolve("bind source", &mount.source, base)?,
        recursive,
        attrs,
        idmap: idmap.finish()?,
    })
}

/// `uidmap=` and `gidmap=` as they are met among a mount's options.
#[derive(Default)]
struct IdmapOptions {
    uid: Option<Vec<IdExtent>>,
    gid: Option<Vec<IdExtent>>,
}

impl IdmapOptions {
    /// Takes `option` if it is `uidmap=` or `gidmap=` (true), parsed.
    fn take(&mut self, option: &str) -> Result<bool, PlanError> {
        let (name, slot) = if let Some(v) = option.strip_prefix("uidmap=") {
            (("uidmap", v), &mut self.uid)
        } else if let Some(v) = option.strip_prefix("gidmap=") {
            (("gidmap", v), &mut self.gid)
        } else {
            return Ok(false);
        };
        if slot.is_some() {
            return Err(PlanError::Duplicate {
                option: name.0.into(),
            });
        }
        *slot = Some(parse_extents(name.0, name.1)?);
        Ok(true)
    }

    fn finish(self) -> Result<Option<MountIdmap>, PlanError> {
        match (self.uid, self.gid) {
            (None, None) => Ok(None),
            (Some(uid), Some(gid)) => Ok(Some(MountIdmap { uid, gid })),
            (Some(_), None) => Err(PlanError::HalfIdmap {
                given: "uidmap=",
                missing: "gidmap=",
            }),
            (None, Some(_)) => Err(PlanError::HalfIdmap {
                given: "gidmap=",
                missing: "uidmap=",
            }),
        }
    }
}

/// Parses containerd's `container:host:size[,container:host:size...]`.
/// Extents must be non-empty and not wrap past 2^32; overlaps and the
/// kernel's limit on the number of extents are the user namespace's to
/// refuse (the mappings must equal the spec's, which are checked there).
fn parse_extents(option: &'static str, value: &str) -> Result<Vec<IdExtent>, PlanError> {
    let bad = |reason: String| PlanError::BadIdmap {
        option,
        value: value.into(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("no extent".into()));
    }
    value
        .split(',')
        .map(|extent| {
            let fields: Vec<&str> = extent.split(':').collect();
            let [c, h, n] = fields[..] else {
                return Err(bad(format!("extent {extent:?} does not have 3 fields")));
            };
            let num = |what: &str, f: &str| {
                f.parse::<u32>()
                    .map_err(|e| bad(format!("{what} {f:?} of extent {extent:?}: {e}")))
            };
            let e = IdExtent {
                container: num("container ID", c)?,
                host: num("host ID", h)?,
                size: num("size", n)?,
            };
            if e.size == 0 {
                return Err(bad(format!("extent {extent:?} has size 0")));
            }
            let end = |start: u32| u64::from(start) + u64::from(e.size) - 1;
            if end(e.container) > u64::from(u32::MAX) || end(e.host) > u64::from(u32::MAX) {
                return Err(bad(format!("extent {extent:?} goes past 2^32-1")));
            }
            Ok(e)
        })
        .collect()
}

/// Splits a `lowerdir=` value on unescaped `:` (overlayfs escapes `:` and `\`
/// with a backslash) and resolves each entry.
fn split_lowerdir(value: &str, base: &Path) -> Result<Vec<PathBuf>, PlanError> {
    let mut entries = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if let Some(last) = entries.last_mut() {
                        last.push(next);
                    }
                }
            }
            ':' => entries.push(String::new()),
            c => {
                if let Some(last) = entries.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, e)| {
            if e.is_empty() {
                Err(PlanError::EmptyLayer { index })
            } else {
                resolve("lowerdir entry", e, base)
            }
        })
        .collect()
}

/// Resolves `path` against `base`, refusing `..` and dropping `.` components.
fn resolve(what: &'static str, path: &str, base: &Path) -> Result<PathBuf, PlanError> {
    if path.is_empty() {
        return Err(PlanError::EmptyPath { what });
    }
    let p = Path::new(path);
    let mut out = if p.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(PlanError::ParentComponent {
                    what,
                    path: path.into(),
                })
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(options: &[&str]) -> Vec<MountSpec> {
        vec![MountSpec {
            fstype: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn parses_containerd_overlay() {
        let p = plan(
            &overlay(&[
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ]),
            Path::new("/bundle"),
        )
        .expect("valid overlay");
        let RootfsPlan::Overlay(o) = p else {
            panic!("not an overlay: {p:?}")
        };
        assert_eq!(o.lowers, vec![PathBuf::from("/s/2/fs"), "/s/1/fs".into()]);
        assert_eq!(o.upper, Some("/s/3/fs".into()));
        assert_eq!(o.work, Some("/s/3/work".into()));
        assert_eq!(o.params, vec![FsParam::Value("index".into(), "off".into())]);
        assert!(o.attrs.is_empty());
    }

    #[test]
    fn relative_and_escaped_lowerdirs() {
        let RootfsPlan::Overlay(o) = plan(
            &overlay(&["lowerdir=2/fs:./1/fs:/abs/a\\:b", "ro", "nosuid"]),
            Path::new("/snaps"),
        )
        .expect("valid") else {
            panic!("not an overlay")
        };
        assert_eq!(
            o.lowers,
            vec![
                PathBuf::from("/snaps/2/fs"),
                "/snaps/1/fs".into(),
                "/abs/a:b".into()
            ]
        );
        assert_eq!(
            o.attrs,
            MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID
        );
        assert_eq!(o.upper, None);
    }

    #[test]
    fn rejects_bad_overlays() {
        let base = Path::new("/b");
        let cases: Vec<(Vec<&str>, PlanError)> = vec![
            (
                vec!["upperdir=/u", "workdir=/w"],
                PlanError::MissingLowerdir,
            ),
            (vec!["lowerdir=/a::/b"], PlanError::EmptyLayer { index: 1 }),
            (
                vec!["lowerdir=/a", "upperdir=/u"],
                PlanError::UpperWithoutWork,
            ),
            (
                vec!["lowerdir=/a", "workdir=/w"],
                PlanError::WorkWithoutUpper,
            ),
            (
                vec!["lowerdir=../x"],
                PlanError::ParentComponent {
                    what: "lowerdir entry",
                    path: "../x".into(),
                },
            ),
            (
                vec!["lowerdir=/a/../../etc"],
                PlanError::ParentComponent {
                    what: "lowerdir entry",
                    path: "/a/../../etc".into(),
                },
            ),
            (
                vec!["lowerdir=/a", "lowerdir=/b"],
                PlanError::Duplicate {
                    option: "lowerdir".into(),
                },
            ),
        ];
        for (opts, want) in cases {
            assert_eq!(plan(&overlay(&opts), base), Err(want), "options {opts:?}");
        }
    }

    /// The text each refusal gives (what reaches containerd, after
    /// "invalid rootfs mounts: ").
    #[test]
    fn refusals_name_the_problem() {
        let base = Path::new("/run/bundle");
        let many: Vec<String> = (0..600).map(|i| format!("/s/{i}/fs")).collect();
        let many = format!("lowerdir={}", many.join(":"));
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["upperdir=/u", "workdir=/w"],
                "overlay rootfs mount has no lowerdir= option",
            ),
            (
                vec!["lowerdir=../../../etc"],
                "lowerdir entry \"../../../etc\" contains a '..' component; rootfs paths must not walk upwards",
            ),
            (
                vec!["lowerdir=/l", "upperdir=u/../../x", "workdir=/w"],
                "upperdir \"u/../../x\" contains a '..' component; rootfs paths must not walk upwards",
            ),
            (
                vec!["lowerdir=/l", "upperdir=/u", "workdir=.."],
                "workdir \"..\" contains a '..' component; rootfs paths must not walk upwards",
            ),
            (
                vec![&many],
                "600 layers exceed overlayfs's limit of 500 lower layers",
            ),
            (vec!["lowerdir="], "lowerdir= entry 0 is empty"),
            (
                vec!["lowerdir=/l", "upperdir=", "workdir=/w"],
                "upperdir is empty",
            ),
            (
                vec!["lowerdir=/l", "workdir=/w", "workdir=/w2"],
                "overlay option \"workdir\" is given more than once",
            ),
        ];
        for (opts, want) in cases {
            let err = plan(&overlay(&opts), base).expect_err(want);
            assert_eq!(err.to_string(), want, "options {opts:?}");
        }
    }

    #[test]
    fn layer_limit() {
        let many = |n: usize| {
            let l: Vec<String> = (0..n).map(|i| format!("/s/{i}/fs")).collect();
            format!("lowerdir={}", l.join(":"))
        };
        let ok = plan(&overlay(&[&many(MAX_LAYERS)]), Path::new("/")).expect("500 layers");
        assert_eq!(ok.layer_count(), MAX_LAYERS);
        let err = plan(&overlay(&[&many(501)]), Path::new("/")).expect_err("501 layers");
        assert_eq!(err, PlanError::TooManyLayers { count: 501 });
        assert!(err.to_string().contains("501 layers"), "{err}");
    }

    #[test]
    fn bind_and_unsupported_and_several() {
        let bind = MountSpec {
            fstype: "bind".into(),
            source: "/snap/1/fs".into(),
            target: String::new(),
            options: vec!["rbind".into(), "ro".into(), "rprivate".into()],
        };
        let p = plan(std::slice::from_ref(&bind), Path::new("/")).expect("bind");
        assert_eq!(
            p,
            RootfsPlan::Bind(BindPlan {
                source: "/snap/1/fs".into(),
                recursive: true,
                attrs: MountAttrFlags::MOUNT_ATTR_RDONLY,
                idmap: None,
            })
        );
        let ext4 = MountSpec {
            fstype: "ext4".into(),
            source: "/dev/dm-3".into(),
            ..Default::default()
        };
        assert_eq!(
            plan(std::slice::from_ref(&ext4), Path::new("/")),
            Err(PlanError::UnsupportedType {
                fstype: "ext4".into()
            })
        );
        let err = plan(&[bind.clone(), bind], Path::new("/")).expect_err("two mounts");
        assert!(
            err.to_string().contains("2 rootfs mounts (bind, bind)"),
            "{err}"
        );
        assert_eq!(plan(&[], Path::new("/")), Err(PlanError::NoMounts));
        let no_source = MountSpec {
            fstype: "bind".into(),
            ..Default::default()
        };
        assert_eq!(
            plan(&[no_source], Path::new("/")),
            Err(PlanError::MissingSource)
        );
    }

    #[test]
    fn uidmap_and_gidmap_are_the_layers_idmap() {
        let p = plan(
            &overlay(&[
                "index=off",
                "lowerdir=/l2:/l1",
                "uidmap=0:262144:65536",
                "gidmap=0:262144:1000,1000:300000:64536",
            ]),
            Path::new("/"),
        )
        .expect("plan");
        let RootfsPlan::Overlay(o) = &p else {
            panic!("{p:?}")
        };
        // Not passed to overlayfs.
        assert_eq!(o.params, vec![FsParam::Value("index".into(), "off".into())]);
        let e = |container, host, size| IdExtent {
            container,
            host,
            size,
        };
        assert_eq!(
            p.idmap(),
            Some(&MountIdmap {
                uid: vec![e(0, 262144, 65536)],
                gid: vec![e(0, 262144, 1000), e(1000, 300000, 64536)],
            })
        );
        assert_eq!(
            format_extents(&o.idmap.as_ref().expect("idmap").gid),
            "0:262144:1000,1000:300000:64536"
        );
        let b = plan(
            &[MountSpec {
                fstype: "bind".into(),
                source: "/snap/1/fs".into(),
                target: String::new(),
                options: vec![
                    "rbind".into(),
                    "uidmap=0:1000:1".into(),
                    "gidmap=0:1000:1".into(),
                ],
            }],
            Path::new("/"),
        )
        .expect("bind");
        assert_eq!(b.idmap().map(|m| m.uid.clone()), Some(vec![e(0, 1000, 1)]));
        let plain = plan(&overlay(&["lowerdir=/l1"]), Path::new("/")).expect("plan");
        assert_eq!(plain.idmap(), None);
    }

    #[test]
    fn bad_idmap_options_are_refused_by_name() {
        let err = |opts: &[&str]| {
            plan(&overlay(opts), Path::new("/"))
                .expect_err("refused")
                .to_string()
        };
        for (opts, want) in [
            (
                &["lowerdir=/l", "uidmap=0:1:1"][..],
                "uidmap= without gidmap=",
            ),
            (
                &["lowerdir=/l", "gidmap=0:1:1"][..],
                "gidmap= without uidmap=",
            ),
            (
                &["lowerdir=/l", "uidmap=0:1", "gidmap=0:1:1"][..],
                "\"0:1\" does not have 3 fields",
            ),
            (
                &["lowerdir=/l", "uidmap=0:1:1", "gidmap=0:x:1"][..],
                "gidmap=\"0:x:1\": host ID \"x\"",
            ),
            (
                &["lowerdir=/l", "uidmap=0:1:0", "gidmap=0:1:1"][..],
                "has size 0",
            ),
            (
                &["lowerdir=/l", "uidmap=0:4294967295:2", "gidmap=0:1:1"][..],
                "goes past 2^32-1",
            ),
            (&["lowerdir=/l", "uidmap=", "gidmap=0:1:1"][..], "no extent"),
            (
                &["lowerdir=/l", "uidmap=0:1:1,", "gidmap=0:1:1"][..],
                "\"\" does not have 3 fields",
            ),
            (
                &[
                    "lowerdir=/l",
                    "uidmap=0:1:1",
                    "uidmap=0:1:1",
                    "gidmap=0:1:1",
                ][..],
                "\"uidmap\" is given more than once",
            ),
        ] {
            let e = err(opts);
            assert!(e.contains(want), "{opts:?}: {e}");
        }
    }
}
