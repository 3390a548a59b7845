//! A private CNI network for one test: a bridge of its own (bridge +
//! host-local + loopback, the host's containernetworking-plugins) on a
//! test-only subnet, no NAT; the bridge link, the IPAM state and the host's
//! `ip_forward` setting put back when it is dropped.

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Where Debian (`containernetworking-plugins`) and upstream put the plugins.
const CNI_BIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// The plugins a [`CniNetwork`] uses.
const PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The directory holding the host's CNI plugins (the first of
/// `/usr/lib/cni`, `/opt/cni/bin` that has `bridge`).
pub fn cni_bin_dir() -> PathBuf {
    CNI_BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").exists())
        .unwrap_or_else(|| PathBuf::from(CNI_BIN_DIRS[0]))
}

/// Live networks of this test process, and the `ip_forward` value found
/// before the first (the bridge plugin's `isGateway` turns forwarding on).
static LIVE: Mutex<(u32, Option<String>)> = Mutex::new((0, None));

/// A CNI network named `name` on bridge `bridge` over `subnet`; dropping it
/// deletes the bridge and the IPAM state (and restores `ip_forward` once the
/// process's last network is dropped).
#[derive(Debug)]
pub struct CniNetwork {
    pub name: String,
    pub bridge: String,
    /// `10.234.<x>.0/24`.
    pub subnet: String,
    data_dir: PathBuf,
}

impl CniNetwork {
    /// A fresh network (its host-local state in a directory of its own
    /// under the temporary directory). The subnet is `10.234.<x>.0/24`
    /// with `x` from this process's id and a counter, the bridge
    /// `idsh<x><pid>` (at most 15 characters).
    pub fn new() -> Result<CniNetwork, Error> {
        for p in PLUGINS {
            if !cni_bin_dir().join(p).exists() {
                return Err(format!(
                    "the CNI plugin {p} is not installed in {} (apt install containernetworking-plugins)",
                    cni_bin_dir().display()
                )
                .into());
            }
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let x = (pid.wrapping_mul(7).wrapping_add(n * 31)) % 250 + 1;
        let name = crate::unique("idshift-test-net");
        let bridge = format!("idsh{x}x{}", pid % 100_000);
        let net = CniNetwork {
            subnet: format!("10.234.{x}.0/24"),
            data_dir: std::env::temp_dir().join(&name),
            name,
            bridge,
        };
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        if live.0 == 0 {
            live.1 = std::fs::read_to_string(IP_FORWARD).ok();
        }
        live.0 += 1;
        Ok(net)
    }

    /// The conflist: loopback, then a bridge with host-local IPAM.
    pub fn conflist(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.data_dir.to_string_lossy(),
                        "ranges": [[{"subnet": self.subnet}]],
                    }
                },
                {"type": "loopback"}
            ]
        })
        .to_string()
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let out = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("idshift-tests: deleting bridge {}: {out:?}", self.bridge);
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&self.name));
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.0 = live.0.saturating_sub(1);
        if live.0 == 0 {
            if let Some(v) = live.1.take() {
                let _ = std::fs::write(IP_FORWARD, v);
            }
        }
    }
}
