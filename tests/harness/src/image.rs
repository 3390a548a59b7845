//! OCI images built offline: a busybox-static root file system plus small
//! layers, written as an OCI image-layout archive that `ctr image import`
//! takes.

use crate::{Containerd, Error};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where busybox-static may be installed.
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The `PATH` of the images' config.
pub const IMAGE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn sha256(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

/// The OCI architecture of this machine (amd64 on x86_64).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_path(path)?;
    h.set_cksum();
    Ok(h)
}

fn add_file<W: Write>(
    t: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let h = header(path, tar::EntryType::Regular, mode, data.len() as u64)?;
    t.append(&h, data)
}

fn add_dir<W: Write>(t: &mut tar::Builder<W>, path: &str, mode: u32) -> std::io::Result<()> {
    let h = header(path, tar::EntryType::Directory, mode, 0)?;
    t.append(&h, std::io::empty())
}

fn add_symlink<W: Write>(t: &mut tar::Builder<W>, path: &str, target: &str) -> std::io::Result<()> {
    let mut h = header(path, tar::EntryType::Symlink, 0o777, 0)?;
    h.set_link_name(target)?;
    h.set_cksum();
    t.append(&h, std::io::empty())
}

/// The path of the host's busybox-static.
pub fn busybox_path() -> Result<&'static str, Error> {
    BUSYBOX
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| "busybox-static is not installed (apt-get install busybox-static)".into())
}

/// The base layer: /bin/busybox with a symlink for each applet, /etc/passwd
/// and /etc/group, the usual empty directories; all owned by 0:0.
fn base_layer() -> Result<Vec<u8>, Error> {
    let bb_path = busybox_path()?;
    let bb = std::fs::read(bb_path)?;
    let list = Command::new(bb_path).arg("--list").output()?;
    if !list.status.success() {
        return Err(format!("{bb_path} --list: {:?}", list.status).into());
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .split_whitespace()
        .filter(|a| *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    if !applets.iter().any(|a| a == "sh") {
        return Err(format!("{bb_path} has no sh applet").into());
    }
    let mut t = tar::Builder::new(Vec::new());
    for d in ["bin", "dev", "etc", "layers", "proc", "run", "sys", "var"] {
        add_dir(&mut t, d, 0o755)?;
    }
    add_dir(&mut t, "root", 0o700)?;
    add_dir(&mut t, "tmp", 0o1777)?;
    add_file(&mut t, "bin/busybox", 0o755, &bb)?;
    for applet in &applets {
        add_symlink(&mut t, &format!("bin/{applet}"), "busybox")?;
    }
    add_file(
        &mut t,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    add_file(&mut t, "etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
    Ok(t.into_inner()?)
}

/// Layer `i` > 1: `/layers/<i>` holding "layer i\n".
fn small_layer(i: usize) -> Result<Vec<u8>, Error> {
    let mut t = tar::Builder::new(Vec::new());
    add_dir(&mut t, "layers", 0o755)?;
    add_file(
        &mut t,
        &format!("layers/{i}"),
        0o644,
        format!("layer {i}\n").as_bytes(),
    )?;
    Ok(t.into_inner()?)
}

/// Writes into `dir` an OCI image-layout archive (`oci-layout`,
/// `index.json`, `blobs/sha256/*`) of a busybox image of `layers` layers
/// named `name` (a full reference, e.g.
/// `docker.io/library/idshift-busybox:1`), and returns its path.
///
/// Layer 1 is busybox-static (`/bin/busybox` and its applets in /bin,
/// /etc/passwd, /etc/group, /root, /tmp, ...), each layer `i` in 2..=`layers`
/// adds `/layers/<i>` = "layer i\n". Layers are uncompressed tars with every
/// file owned by 0:0 and mtime 0, so the same arguments give the same
/// archive bytes (its file name is unique).
pub fn build_image(dir: &Path, name: &str, layers: usize) -> Result<PathBuf, Error> {
    build_image_with_cmd(dir, name, layers, &["/bin/sh"])
}

/// [`build_image`] with the image config's `Cmd` given (e.g. a pause
/// image's).
pub fn build_image_with_cmd(
    dir: &Path,
    name: &str,
    layers: usize,
    cmd: &[&str],
) -> Result<PathBuf, Error> {
    if layers == 0 {
        return Err("an image needs at least one layer".into());
    }
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::with_capacity(layers + 2);
    let mut layer_descs = Vec::with_capacity(layers);
    for i in 1..=layers {
        let data = if i == 1 {
            base_layer()?
        } else {
            small_layer(i)?
        };
        let digest = sha256(&data);
        layer_descs.push(serde_json::json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": format!("sha256:{digest}"),
            "size": data.len(),
        }));
        blobs.push((digest, data));
    }
    // Uncompressed layers: each diff_id is the layer's digest.
    let diff_ids: Vec<serde_json::Value> =
        layer_descs.iter().map(|d| d["digest"].clone()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": cmd,
            "Env": [IMAGE_PATH],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids,
        },
        "history": (1..=layers).map(|i| serde_json::json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("idshift-tests layer {i}"),
        })).collect::<Vec<_>>(),
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": layer_descs,
    }))?;
    let manifest_digest = sha256(&manifest);
    // org.opencontainers.image.ref.name is the tag (the OCI convention);
    // containerd names the image by io.containerd.image.name first.
    let tag = tag_of(name);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    blobs.push((config_digest, config));
    blobs.push((manifest_digest, manifest));
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.tar", crate::unique("image")));
    let mut t = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&path)?));
    add_file(
        &mut t,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_file(&mut t, "index.json", 0o644, &index)?;
    add_dir(&mut t, "blobs", 0o755)?;
    add_dir(&mut t, "blobs/sha256", 0o755)?;
    for (digest, data) in &blobs {
        add_file(&mut t, &format!("blobs/sha256/{digest}"), 0o644, data)?;
    }
    let file = t
        .into_inner()?
        .into_inner()
        .map_err(|e| format!("writing {}: {}", path.display(), e.error()))?;
    file.sync_all()?;
    Ok(path)
}

/// The tag of a reference (`latest` when it has none); a digest reference
/// keeps its digest.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once('@') {
        Some((_, digest)) => digest,
        None => last.split_once(':').map(|(_, t)| t).unwrap_or("latest"),
    }
}

/// Imports the archive `archive` (from [`build_image`]) into `namespace` of
/// `c` with `ctr image import` (which unpacks it into the default
/// snapshotter, overlayfs), then checks that `name` is listed by `ctr image
/// check -q`, i.e. present and unpacked.
pub fn import_image(
    c: &Containerd,
    namespace: &str,
    archive: &Path,
    name: &str,
) -> Result<(), Error> {
    let path = archive.to_string_lossy();
    let platform = format!("linux/{}", oci_arch());
    let out = c.ctr(
        namespace,
        &["images", "import", "--platform", &platform, &path],
    );
    if !out.success() {
        return Err(format!("ctr images import {path}: {out:?}").into());
    }
    let ready = c.ctr(namespace, &["images", "check", "-q"]);
    if !ready.stdout.lines().any(|l| l.trim() == name) {
        let ls = c.ctr(namespace, &["images", "check"]);
        return Err(format!(
            "{name} is not ready (imported and unpacked) after importing {path}: \
             import said {out:?}; images check said {ls:?}"
        )
        .into());
    }
    Ok(())
}

/// A root directory (for a spec's `root.path`) in a fresh directory under
/// `dir`, with the host's busybox-static at /bin/busybox and `applets`
/// linked to it.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> Result<PathBuf, Error> {
    let root = dir.join(crate::unique("rootfs"));
    for d in ["bin", "dev", "proc", "sys", "tmp", "etc", "run"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox_path()?, root.join("bin/busybox"))?;
    for a in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag_of("docker.io/library/x:1"), "1");
        assert_eq!(tag_of("localhost:5000/x"), "latest");
        assert_eq!(tag_of("x@sha256:ab"), "sha256:ab");
    }

    #[test]
    fn images_are_deterministic_and_complete() {
        let dir = std::env::temp_dir().join(crate::unique("idshift-image-test"));
        let a = build_image(&dir, "docker.io/library/t:3", 3).expect("build");
        let b = build_image(&dir, "docker.io/library/t:3", 3).expect("build");
        let (ba, bb) = (
            std::fs::read(&a).expect("read"),
            std::fs::read(&b).expect("read"),
        );
        assert_eq!(ba, bb, "same arguments, same bytes");
        let mut names = Vec::new();
        let mut index = String::new();
        for e in tar::Archive::new(&ba[..]).entries().expect("tar") {
            let mut e = e.expect("entry");
            let p = e.path().expect("path").to_string_lossy().into_owned();
            if p == "index.json" {
                std::io::Read::read_to_string(&mut e, &mut index).expect("index");
            }
            names.push(p);
        }
        // oci-layout, index.json, 2 dirs, 3 layers + config + manifest.
        assert_eq!(names.len(), 9, "{names:?}");
        let v: serde_json::Value = serde_json::from_str(&index).expect("json");
        let ann = &v["manifests"][0]["annotations"];
        assert_eq!(ann["io.containerd.image.name"], "docker.io/library/t:3");
        assert_eq!(ann["org.opencontainers.image.ref.name"], "3");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
