//! Synthetic layered images laid out like containerd's overlayfs snapshotter
//! (`<root>/snapshots/<n>/fs`), for tests, the demo and benchmarks.
//!
//! Layer `i` (1 = bottom) holds `layers/<i>` ("layer i"), and `top` ("i"),
//! which every layer overrides. The bottom layer also holds `deleted/file`
//! and `opaque/old`; when there are at least two layers the top one deletes
//! `deleted/file` with a whiteout and makes `opaque/` opaque, holding
//! `opaque/new`. So the merged tree shows `top` = L, no `deleted/file`, and
//! only `opaque/new`. Everything is owned by 0:0 on disk.

use crate::plan::MountSpec;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A generated image and the rootfs mount containerd would pass for a new
/// container of it.
#[derive(Clone, Debug)]
pub struct SyntheticImage {
    pub root: PathBuf,
    /// Layer directories, top first (as in `lowerdir=`).
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The overlay mount: `lowerdir=` (top first), `upperdir=`, `workdir=`, `index=off`.
    pub mount: MountSpec,
}

/// Creates `layers` layers (at least 1) and an empty upper/work snapshot under `root`.
pub fn create(root: &Path, layers: usize) -> io::Result<SyntheticImage> {
    if layers == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a synthetic image needs at least one layer",
        ));
    }
    let snaps = root.join("snapshots");
    let mut lowers = Vec::with_capacity(layers);
    for i in 1..=layers {
        let fs_dir = snaps.join(i.to_string()).join("fs");
        fs::create_dir_all(fs_dir.join("layers"))?;
        fs::write(
            fs_dir.join("layers").join(i.to_string()),
            format!("layer {i}\n"),
        )?;
        fs::write(fs_dir.join("top"), format!("{i}\n"))?;
        if i == 1 {
            fs::create_dir_all(fs_dir.join("deleted"))?;
            fs::write(fs_dir.join("deleted/file"), "deleted\n")?;
            fs::create_dir_all(fs_dir.join("opaque"))?;
            fs::write(fs_dir.join("opaque/old"), "old\n")?;
        }
        if i == layers && layers >= 2 {
            fs::create_dir_all(fs_dir.join("deleted"))?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                fs_dir.join("deleted/file"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )?;
            fs::create_dir_all(fs_dir.join("opaque"))?;
            rustix::fs::setxattr(
                fs_dir.join("opaque"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )?;
            fs::write(fs_dir.join("opaque/new"), "new\n")?;
        }
        lowers.push(fs_dir);
    }
    lowers.reverse();
    let top = snaps.join((layers + 1).to_string());
    let upper = top.join("fs");
    let work = top.join("work");
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mount = MountSpec {
        fstype: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            "index=off".into(),
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={lowerdir}"),
        ],
    };
    Ok(SyntheticImage {
        root: root.to_path_buf(),
        lowers,
        upper,
        work,
        mount,
    })
}
