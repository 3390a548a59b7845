//! A rootfs the caller mounted itself (`root.path` with no rootfs mounts in
//! Create: Docker's overlay2 and containerd-snapshotter storage, `ctr run
//! --rootfs`): when it is an overlay, its layers and upper/work dirs are
//! read from the mount table so that idshift builds its own overlay of the
//! same layers (idmapped, at constant cost) and leaves the caller's mount
//! alone; a plain directory is cloned (a bind plan), as before.

use crate::plan::{BindPlan, FsParam, OverlayPlan, RootfsPlan, MAX_LAYERS};
use rustix::fs::StatxFlags;
use rustix::mount::MountAttrFlags;
use std::path::{Component, Path, PathBuf};

/// Why a pre-mounted rootfs cannot be rebuilt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PremountError {
    #[error("root.path {path}: {reason}")]
    Root { path: PathBuf, reason: String },
    #[error("root.path {path} is mount {mnt_id}, which /proc/self/mountinfo does not list")]
    NotListed { path: PathBuf, mnt_id: u64 },
    #[error("root.path {path} is inside the overlay mounted at {mount_point} but is not its root; idshift rebuilds only a whole overlay (give the overlay's mount point, or its layers as rootfs mounts)")]
    InsideOverlay { path: PathBuf, mount_point: String },
    #[error("the overlay at {path}: {reason}")]
    Overlay { path: PathBuf, reason: String },
}

/// One line of `/proc/<pid>/mountinfo`, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mnt_id: u64,
    /// The mount's root within its filesystem.
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub mount_options: Vec<String>,
    pub fstype: String,
    /// Per-superblock options, each unescaped (a value may hold `,`).
    pub super_options: Vec<String>,
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\054` for a
/// comma in an option value, `\134` for a backslash, ...). Anything else is
/// kept as is.
pub fn unescape_octal(s: &str) -> String {
    String::from_utf8_lossy(&unescape_octal_bytes(s)).into_owned()
}

/// [`unescape_octal`] as bytes (a path need not be UTF-8).
pub fn unescape_octal_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses one mountinfo line; `None` if it is malformed.
pub fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    if pre.len() < 6 {
        return None;
    }
    let mut post = post.splitn(3, ' ');
    let fstype = unescape_octal(post.next()?);
    let _source = post.next()?;
    let supers = post.next().unwrap_or("");
    Some(MountInfo {
        mnt_id: pre[0].parse().ok()?,
        root: unescape_octal(pre[3]),
        mount_point: unescape_octal(pre[4]),
        mount_options: pre[5].split(',').map(unescape_octal).collect(),
        fstype,
        // Commas inside values are escaped (\054), so splitting first is
        // right; each piece is unescaped afterwards.
        super_options: supers.trim_end().split(',').map(unescape_octal).collect(),
    })
}

/// The plan for the caller-mounted rootfs at `root` (absolute), read from
/// the calling process's mount table.
pub fn premounted_plan(root: &Path) -> Result<RootfsPlan, PremountError> {
    let fail = |reason: String| PremountError::Root {
        path: root.to_path_buf(),
        reason,
    };
    let canon = std::fs::canonicalize(root).map_err(|e| fail(e.to_string()))?;
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        &canon,
        rustix::fs::AtFlags::empty(),
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )
    .map_err(|e| fail(e.to_string()))?;
    if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR {
        return Err(fail("not a directory".into()));
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail(format!("reading /proc/self/mountinfo: {e}")))?;
    plan_from_mountinfo(&canon, st.stx_mnt_id, &table, &|p: &Path| p.exists())
}

/// [`premounted_plan`] on a given mount table: `canon` is the canonical
/// root path, `mnt_id` the mount it is on, `exists` says whether a path
/// exists (to find the directory relative overlay paths are relative to).
pub fn plan_from_mountinfo(
    canon: &Path,
    mnt_id: u64,
    table: &str,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<RootfsPlan, PremountError> {
    let mount = table
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.mnt_id == mnt_id)
        .ok_or(PremountError::NotListed {
            path: canon.to_path_buf(),
            mnt_id,
        })?;
    if mount.fstype != "overlay" {
        // A directory: cloned (idmapped where the filesystem can be), as
        // before; a filesystem that cannot be idmapped is named then.
        return Ok(RootfsPlan::Bind(BindPlan {
            source: canon.to_path_buf(),
            recursive: true,
            attrs: MountAttrFlags::empty(),
            idmap: None,
        }));
    }
    if Path::new(&mount.mount_point) != canon || mount.root != "/" {
        return Err(PremountError::InsideOverlay {
            path: canon.to_path_buf(),
            mount_point: mount.mount_point,
        });
    }
    overlay_from_options(canon, &mount, exists).map(RootfsPlan::Overlay)
}

fn overlay_from_options(
    at: &Path,
    m: &MountInfo,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<OverlayPlan, PremountError> {
    let fail = |reason: String| PremountError::Overlay {
        path: at.to_path_buf(),
        reason,
    };
    let mut lowers: Vec<String> = Vec::new();
    let mut legacy = false;
    let mut upper = None;
    let mut work = None;
    let mut params = Vec::new();
    for opt in &m.super_options {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("rw" | "ro", None) | ("", None) => {}
            ("lowerdir", Some(v)) => {
                legacy = true;
                lowers.extend(split_legacy_lowerdir(v).map_err(fail)?);
            }
            ("lowerdir+", Some(v)) => lowers.push(v.to_string()),
            ("datadir+", Some(_)) => {
                return Err(fail(
                    "it has data-only layers (datadir+), which idshift does not rebuild".into(),
                ))
            }
            ("upperdir", Some(v)) => upper = Some(v.to_string()),
            ("workdir", Some(v)) => work = Some(v.to_string()),
            // Our overlay shares the caller's upper and work dirs with its
            // (idle) mount: the inode index would refuse the second mount.
            ("index", Some(_)) => {}
            (k, Some(v)) => params.push(FsParam::Value(k.into(), v.into())),
            (k, None) => params.push(FsParam::Flag(k.into())),
        }
    }
    if legacy && lowers.is_empty() {
        return Err(fail("its lowerdir= option is empty".into()));
    }
    if lowers.is_empty() {
        return Err(fail("the mount table shows no lower layers".into()));
    }
    if lowers.len() > MAX_LAYERS {
        return Err(fail(format!(
            "{} layers exceed overlayfs's limit of {MAX_LAYERS}",
            lowers.len()
        )));
    }
    if upper.is_some() != work.is_some() {
        return Err(fail("it has only one of upperdir and workdir".into()));
    }
    if upper.is_some() {
        params.push(FsParam::Value("index".into(), "off".into()));
    }
    // Relative paths are relative to the mounter's working directory, which
    // the mount table does not record. Docker's overlay2 mounts from its
    // storage directory with `l/<short>` links (when the absolute options
    // exceed a page): an ancestor of the mount point. containerd's mount
    // helper makes only the lowerdirs relative, to their common directory,
    // and keeps upperdir/workdir absolute: its snapshots directory, an
    // ancestor of the upper dir. The first candidate (ancestors of the
    // absolute upper/work dirs, then of the mount point) under which every
    // relative path exists is taken.
    let all: Vec<&String> = lowers
        .iter()
        .chain(upper.iter())
        .chain(work.iter())
        .collect();
    let relative: Vec<&&String> = all.iter().filter(|p| !p.starts_with('/')).collect();
    let base = if relative.is_empty() {
        PathBuf::from("/")
    } else {
        let absolute: Vec<&Path> = upper
            .iter()
            .chain(work.iter())
            .filter(|p| p.starts_with('/'))
            .map(Path::new)
            .collect();
        absolute
            .iter()
            .flat_map(|p| p.ancestors().skip(1))
            .chain(at.ancestors().skip(1))
            .find(|a| relative.iter().all(|p| exists(&a.join(p))))
            .ok_or_else(|| {
                fail(format!(
                    "its layer paths are relative (e.g. {:?}) to the working directory of whoever mounted it, which the mount table does not record, and they exist under none of the directories they could be relative to (the ancestors of its upper dir and of its mount point); give the layers as rootfs mounts instead",
                    relative.first().map(|s| s.as_str()).unwrap_or("")
                ))
            })?
            .to_path_buf()
    };
    let resolve = |what: &str, p: &str| -> Result<PathBuf, PremountError> {
        if Path::new(p).components().any(|c| c == Component::ParentDir) {
            return Err(fail(format!("its {what} {p:?} contains '..'")));
        }
        Ok(base.join(p))
    };
    let mut attrs = MountAttrFlags::empty();
    for o in &m.mount_options {
        attrs |= match o.as_str() {
            "ro" => MountAttrFlags::MOUNT_ATTR_RDONLY,
            "nosuid" => MountAttrFlags::MOUNT_ATTR_NOSUID,
            "nodev" => MountAttrFlags::MOUNT_ATTR_NODEV,
            "noexec" => MountAttrFlags::MOUNT_ATTR_NOEXEC,
            "noatime" => MountAttrFlags::MOUNT_ATTR_NOATIME,
            "nodiratime" => MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            _ => MountAttrFlags::empty(),
        };
    }
    Ok(OverlayPlan {
        lowers: lowers
            .iter()
            .map(|l| resolve("lowerdir entry", l))
            .collect::<Result<_, _>>()?,
        upper: upper.map(|u| resolve("upperdir", &u)).transpose()?,
        work: work.map(|w| resolve("workdir", &w)).transpose()?,
        params,
        attrs,
        // A mounted overlay's layers are idmapped by the container's user
        // namespace, like a directory's clone.
        idmap: None,
    })
}

/// Splits a legacy `lowerdir=` value as overlayfs does: `:` separates
/// layers, `\` escapes the next character, and `::` starts data-only
/// layers (refused).
fn split_legacy_lowerdir(v: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ':' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    if out.iter().any(String::is_empty) {
        return Err(format!(
            "its lowerdir= {v:?} has an empty entry (data-only layers after '::' are not rebuilt)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_ABS: &str = "49 45 0:40 / /var/lib/docker/overlay2/abc/merged rw,relatime shared:2 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/5BMR:/var/lib/docker/overlay2/l/ZYQ5,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work\n";

    fn plan_of(
        line: &str,
        at: &str,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Result<RootfsPlan, PremountError> {
        let m = parse_mountinfo_line(line.trim_end()).expect("parses");
        plan_from_mountinfo(Path::new(at), m.mnt_id, line, exists)
    }

    #[test]
    fn docker_overlay2_absolute() {
        let RootfsPlan::Overlay(o) =
            plan_of(DOCKER_ABS, "/var/lib/docker/overlay2/abc/merged", &|_| true).expect("plan")
        else {
            panic!("not an overlay")
        };
        assert_eq!(
            o.lowers,
            vec![
                PathBuf::from("/var/lib/docker/overlay2/l/5BMR"),
                "/var/lib/docker/overlay2/l/ZYQ5".into()
            ]
        );
        assert_eq!(o.upper, Some("/var/lib/docker/overlay2/abc/diff".into()));
        assert_eq!(o.work, Some("/var/lib/docker/overlay2/abc/work".into()));
        assert_eq!(o.params, vec![FsParam::Value("index".into(), "off".into())]);
        assert!(o.attrs.is_empty());
    }

    #[test]
    fn docker_overlay2_relative_short_links() {
        let line = "50 45 0:41 / /d/overlay2/abc/merged rw,nosuid,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=abc/diff,workdir=abc/work,userxattr\n";
        let exists =
            |p: &Path| p.starts_with("/d/overlay2/") && !p.starts_with("/d/overlay2/abc/l");
        let RootfsPlan::Overlay(o) =
            plan_of(line, "/d/overlay2/abc/merged", &exists).expect("plan")
        else {
            panic!("not an overlay")
        };
        assert_eq!(
            o.lowers,
            vec![PathBuf::from("/d/overlay2/l/A"), "/d/overlay2/l/B".into()]
        );
        assert_eq!(o.upper, Some("/d/overlay2/abc/diff".into()));
        assert_eq!(o.work, Some("/d/overlay2/abc/work".into()));
        assert_eq!(
            o.params,
            vec![
                FsParam::Flag("userxattr".into()),
                FsParam::Value("index".into(), "off".into())
            ]
        );
        assert_eq!(o.attrs, MountAttrFlags::MOUNT_ATTR_NOSUID);
        let err = plan_of(line, "/d/overlay2/abc/merged", &|_| false).expect_err("unresolvable");
        assert!(
            err.to_string()
                .contains("they exist under none of the directories"),
            "{err}"
        );
    }

    #[test]
    fn containerd_relative_lowerdirs() {
        let line = "53 45 0:44 / /d/rootfs/overlayfs/abc rw,relatime - overlay overlay rw,lowerdir=89/fs:88/fs,upperdir=/c/snapshots/90/fs,workdir=/c/snapshots/90/work\n";
        // 89/fs exists under /c/snapshots only (not under the mount point's ancestors).
        let exists =
            |p: &Path| p.parent().and_then(Path::parent) == Some(Path::new("/c/snapshots"));
        let RootfsPlan::Overlay(o) =
            plan_of(line, "/d/rootfs/overlayfs/abc", &exists).expect("plan")
        else {
            panic!("not an overlay")
        };
        assert_eq!(
            o.lowers,
            vec![
                PathBuf::from("/c/snapshots/89/fs"),
                "/c/snapshots/88/fs".into()
            ]
        );
        assert_eq!(o.upper, Some("/c/snapshots/90/fs".into()));
    }

    #[test]
    fn escapes_in_paths_and_options() {
        // A space in the mount point (\040), a comma (\054) and a colon
        // (overlay's own \: escape, its backslash shown as \134) in a layer.
        let line = "51 45 0:42 / /r/my\\040root rw - overlay overlay rw,lowerdir=/l/a\\054b:/l/c\\134:d,lowerdir+=/x\n";
        let RootfsPlan::Overlay(o) = plan_of(line, "/r/my root", &|_| true).expect("plan") else {
            panic!("not an overlay")
        };
        assert_eq!(
            o.lowers,
            vec![PathBuf::from("/l/a,b"), "/l/c:d".into(), "/x".into()]
        );
        assert_eq!(o.upper, None);
        assert!(o.params.is_empty());
    }

    #[test]
    fn refusals() {
        let sub = plan_of(
            DOCKER_ABS,
            "/var/lib/docker/overlay2/abc/merged/usr",
            &|_| true,
        );
        // A subdirectory is on the same mount id: refused, naming the mount point.
        let err = sub.expect_err("subdir");
        assert!(err.to_string().contains("is not its root"), "{err}");
        let data_only = "52 45 0:43 / /r rw - overlay overlay rw,lowerdir=/a::/b\n";
        let err = plan_of(data_only, "/r", &|_| true).expect_err("data-only");
        assert!(err.to_string().contains("data-only"), "{err}");
        let datadir = "52 45 0:43 / /r rw - overlay overlay rw,lowerdir+=/a,datadir+=/b\n";
        assert!(plan_of(datadir, "/r", &|_| true).is_err());
        let dotdot = "52 45 0:43 / /r rw - overlay overlay rw,lowerdir=/a/../../etc\n";
        let err = plan_of(dotdot, "/r", &|_| true).expect_err("dotdot");
        assert!(err.to_string().contains("'..'"), "{err}");
        let upper_only = "52 45 0:43 / /r rw - overlay overlay rw,lowerdir=/a,upperdir=/u\n";
        assert!(plan_of(upper_only, "/r", &|_| true).is_err());
        let err =
            plan_from_mountinfo(Path::new("/r"), 99, DOCKER_ABS, &|_| true).expect_err("unlisted");
        assert!(err.to_string().contains("does not list"), "{err}");
    }

    #[test]
    fn plain_directories_are_cloned() {
        let line = "45 27 254:0 /var/tmp/data /var/tmp/data rw,relatime shared:1 - ext4 /dev/vda rw,discard\n";
        assert_eq!(
            plan_of(line, "/var/tmp/data/rootfs", &|_| true).expect("bind"),
            RootfsPlan::Bind(BindPlan {
                source: "/var/tmp/data/rootfs".into(),
                recursive: true,
                attrs: MountAttrFlags::empty(),
                idmap: None,
            })
        );
    }
}
