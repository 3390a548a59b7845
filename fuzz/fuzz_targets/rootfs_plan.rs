//! `rootfs::plan` over arbitrary containerd rootfs mount lists (no kernel):
//! it never panics, is deterministic, and every plan it accepts is within
//! its documented limits: at most MAX_LAYERS lowers, upper and work given
//! together, every path absolute and with no `.` or `..`; an accepted overlay's lowers, escaped back into a
//! `lowerdir=`, parse to the same lowers; an accepted `uidmap=`/`gidmap=`
//! idmap, written back, parses to itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rootfs::{format_extents, plan, MountIdmap, MountSpec, PlanError, RootfsPlan, MAX_LAYERS};
use std::path::{Component, Path};

#[derive(Arbitrary, Debug)]
enum Opt {
    /// `lowerdir=` of these entries joined with ':' (not escaped: they
    /// may hold ':' and '\' themselves).
    Lower(Vec<String>),
    /// `lowerdir=` of this many generated layers (the layer limit).
    ManyLowers(u16),
    Upper(String),
    Work(String),
    /// One of the options containerd and users pass.
    Known(u8),
    Raw(String),
    /// `uidmap=` (true) or `gidmap=` of these extents, containerd's
    /// `container:host:size` joined with ','.
    Idmap(bool, Vec<(u32, u32, u32)>),
}

#[derive(Arbitrary, Debug)]
enum Fstype {
    Overlay,
    Bind,
    Empty,
    None,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Mount {
    fstype: Fstype,
    source: String,
    options: Vec<Opt>,
}

const KNOWN: [&str; 14] = [
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "rbind",
    "bind",
    "index=off",
    "volatile",
    "userxattr",
    "rprivate",
    "metacopy=on",
    "lowerdir",
    "upperdir",
];

fn option(o: &Opt) -> String {
    match o {
        Opt::Lower(entries) => format!("lowerdir={}", entries.join(":")),
        Opt::ManyLowers(n) => {
            let l: Vec<String> = (0..(*n % 600)).map(|i| format!("/s/{i}/fs")).collect();
            format!("lowerdir={}", l.join(":"))
        }
        Opt::Upper(p) => format!("upperdir={p}"),
        Opt::Work(p) => format!("workdir={p}"),
        Opt::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_string(),
        Opt::Raw(s) => s.clone(),
        Opt::Idmap(uid, extents) => format!(
            "{}={}",
            if *uid { "uidmap" } else { "gidmap" },
            extents
                .iter()
                .map(|(c, h, n)| format!("{c}:{h}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// An accepted idmap: both maps, every extent non-empty and within 2^32,
/// and written back as containerd writes it, it parses to itself.
fn check_idmap(m: &MountIdmap) {
    for e in m.uid.iter().chain(&m.gid) {
        assert!(e.size > 0, "{m:?}");
        assert!(
            u64::from(e.container) + u64::from(e.size) <= 1 << 32,
            "{m:?}"
        );
        assert!(u64::from(e.host) + u64::from(e.size) <= 1 << 32, "{m:?}");
    }
    assert!(!m.uid.is_empty() && !m.gid.is_empty(), "{m:?}");
    let again = plan(
        &[MountSpec {
            fstype: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "lowerdir=/l".into(),
                format!("uidmap={}", format_extents(&m.uid)),
                format!("gidmap={}", format_extents(&m.gid)),
            ],
        }],
        Path::new("/"),
    )
    .expect("an accepted idmap re-plans");
    assert_eq!(again.idmap(), Some(m));
}

fn spec(m: &Mount) -> MountSpec {
    MountSpec {
        fstype: match &m.fstype {
            Fstype::Overlay => "overlay".into(),
            Fstype::Bind => "bind".into(),
            Fstype::Empty => String::new(),
            Fstype::None => "none".into(),
            Fstype::Other(s) => s.clone(),
        },
        source: m.source.clone(),
        target: String::new(),
        options: m.options.iter().map(option).collect(),
    }
}

/// Absolute and normalised: no `.` or `..` component.
fn check_path(p: &Path, what: &str) {
    assert!(p.is_absolute(), "{what} {p:?} is not absolute");
    for c in p.components() {
        assert!(
            matches!(c, Component::RootDir | Component::Normal(_)),
            "{what} {p:?} has a {c:?} component"
        );
    }
}

fn escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        if c == ':' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fuzz_target!(|mounts: Vec<Mount>| {
    let base = Path::new("/run/containerd/bundle");
    let specs: Vec<MountSpec> = mounts.iter().map(spec).collect();
    let got = plan(&specs, base);
    assert_eq!(got, plan(&specs, base), "plan is deterministic");
    match got {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let PlanError::TooManyLayers { count } = e {
                assert!(count > MAX_LAYERS);
            }
        }
        Ok(RootfsPlan::Overlay(o)) => {
            assert_eq!(specs.len(), 1);
            if let Some(m) = &o.idmap {
                check_idmap(m);
            }
            assert!(!o.lowers.is_empty() && o.lowers.len() <= MAX_LAYERS);
            assert_eq!(o.upper.is_some(), o.work.is_some());
            for l in &o.lowers {
                check_path(l, "lower");
            }
            for d in o.upper.iter().chain(o.work.iter()) {
                check_path(d, "upper/work");
            }
            // The lowers, escaped as overlayfs and containerd escape them,
            // parse back to themselves.
            let joined: Vec<String> = o.lowers.iter().map(|l| escape(l)).collect();
            let again = plan(
                &[MountSpec {
                    fstype: "overlay".into(),
                    source: "overlay".into(),
                    target: String::new(),
                    options: vec![format!("lowerdir={}", joined.join(":"))],
                }],
                base,
            );
            match again {
                Ok(RootfsPlan::Overlay(a)) => assert_eq!(a.lowers, o.lowers),
                other => panic!("re-planning {joined:?}: {other:?}"),
            }
        }
        Ok(RootfsPlan::Bind(b)) => {
            assert_eq!(specs.len(), 1);
            if let Some(m) = &b.idmap {
                check_idmap(m);
            }
            check_path(&b.source, "bind source");
        }
    }
});
