//! The systemd cgroup driver, as runc's: a `linux.cgroupsPath` of the form
//! `slice:prefix:name` is a transient scope `prefix-name.scope` in `slice`,
//! started through systemd's D-Bus API (StartTransientUnit with the
//! container's first process, Delegate=yes), given the resource properties
//! systemd knows (SetUnitProperties), and stopped on delete (StopUnit). The
//! D-Bus client is cgroups-rs's; the cgroup files are then written as for a
//! cgroupfs path (`super::Cgroup`), so systemd and the files agree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::systemd::props::PropertiesBuilder;
use cgroups_rs::systemd::{self as sd, Property, SystemdClient};

use oci_spec::runtime::LinuxResources;

use super::{shares_to_weight, swap_v2, CgroupError, Result};

/// A systemd cgroupsPath, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// `system.slice` when the path's slice is empty (as runc).
    pub slice: String,
    /// `prefix-name.scope` (`name.scope` without a prefix).
    pub unit: String,
    /// The scope's cgroup below the hierarchy roots:
    /// `system.slice/prefix-name.scope`, `a.slice/a-b.slice/...`.
    pub rel: PathBuf,
}

/// Parses `slice:prefix:name`; the error says what is wrong with it.
pub fn parse(path: &str) -> std::result::Result<Unit, String> {
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, prefix, name] = parts.as_slice() else {
        return Err(format!(
            "cgroupsPath {path:?} is neither a cgroupfs path (/a/b) nor systemd's slice:prefix:name"
        ));
    };
    let slice = if slice.is_empty() {
        sd::DEFAULT_SLICE
    } else {
        slice
    };
    let expanded = sd::utils::expand_slice(slice).map_err(|_| {
        format!("cgroupsPath {path:?}: {slice:?} is not a systemd slice name (a-b.slice)")
    })?;
    let bad = |s: &str| s.contains('/') || s.chars().any(char::is_whitespace);
    if name.is_empty() || bad(name) || bad(prefix) {
        return Err(format!(
            "cgroupsPath {path:?}: the scope's prefix and name must be non-empty words (name) without '/'"
        ));
    }
    if name.ends_with(sd::SLICE_SUFFIX) {
        return Err(format!(
            "cgroupsPath {path:?}: a container in a slice of its own ({name}) is not supported; use slice:prefix:name for a scope"
        ));
    }
    let unit = if prefix.is_empty() {
        format!("{name}{}", sd::SCOPE_SUFFIX)
    } else {
        format!("{prefix}-{name}{}", sd::SCOPE_SUFFIX)
    };
    let rel = Path::new(&expanded).join(&unit);
    Ok(Unit {
        slice: slice.to_string(),
        unit,
        rel,
    })
}

/// Whether systemd is the init system (its sd_booted() test).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn dbus_err(what: &str, unit: &Unit, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Systemd(format!("{what} {}: {e}", unit.unit))
}

/// Whether the process's cgroup (any hierarchy) is the unit's.
fn in_unit(pid: i32, unit: &Unit) -> bool {
    let suffix = format!("/{}", unit.unit);
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| t.lines().any(|l| l.ends_with(&suffix)))
        .unwrap_or(false)
}

/// Whether the unit is loaded in systemd.
pub fn exists(unit: &Unit) -> Result<bool> {
    let client = SystemdClient::new(&unit.unit, Vec::new())
        .map_err(|e| dbus_err("reaching systemd for", unit, e))?;
    Ok(client.exists())
}

/// StartTransientUnit of the scope with `pid` in it (Delegate=yes, the
/// accounting runc turns on), then waits until systemd has moved `pid`.
pub fn start(unit: &Unit, pid: i32, cgroups_path: &str) -> Result<()> {
    let pid = u32::try_from(pid)
        .map_err(|_| CgroupError::Invalid(format!("pid {pid} is not a process id")))?;
    let props = PropertiesBuilder::default_cgroup(&unit.slice, &unit.unit)
        .description(format!("idshift container {cgroups_path}"))
        .pids(vec![pid])
        .build();
    let client = SystemdClient::new(&unit.unit, props)
        .map_err(|e| dbus_err("preparing the transient unit", unit, e))?;
    client
        .start()
        .map_err(|e| dbus_err("StartTransientUnit (systemd's D-Bus API) of", unit, e))?;
    // The job runs after the call returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_unit(pid as i32, unit) {
        if Instant::now() > deadline {
            return Err(CgroupError::Systemd(format!(
                "systemd started {} but process {pid} is not in it after 10 s",
                unit.unit
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The unit properties for `r` that systemd knows (runc's set): memory
/// limit, CPU weight/shares, quota and period, tasks, and on v2 the memory
/// low/swap limits and cpuset. The rest only goes to the cgroup files.
pub fn properties(r: &LinuxResources, v2: bool) -> Result<Vec<Property<'static>>> {
    let mut p: Vec<Property<'static>> = Vec::new();
    let infinity = u64::MAX;
    let bytes = |v: i64| if v < 0 { infinity } else { v as u64 };
    let m = r.memory().as_ref();
    let cpu = r.cpu().as_ref();
    let memory_limit = m.and_then(|m| m.limit());
    if let Some(l) = memory_limit {
        let name = if v2 { sd::MEMORY_MAX } else { sd::MEMORY_LIMIT };
        p.push((name, bytes(l).into()));
    }
    if v2 {
        if let Some(l) = m.and_then(|m| m.reservation()) {
            p.push((sd::MEMORY_LOW, bytes(l).into()));
        }
        if let Some(s) = swap_v2(memory_limit, m.and_then(|m| m.swap()))? {
            let v = if s == "max" {
                infinity
            } else {
                s.parse().unwrap_or(infinity)
            };
            p.push((sd::MEMORY_SWAP_MAX, v.into()));
        }
    }
    if let Some(s) = cpu.and_then(|c| c.shares()).filter(|s| *s != 0) {
        if v2 {
            p.push((sd::CPU_WEIGHT, shares_to_weight(s).into()));
        } else {
            p.push((sd::CPU_SHARES, s.into()));
        }
    }
    let period = cpu.and_then(|c| c.period()).filter(|p| *p != 0);
    if let Some(period) = period {
        p.push((sd::CPU_QUOTA_PERIOD_US, period.into()));
    }
    if let Some(q) = cpu.and_then(|c| c.quota()) {
        // As runc: quota per second of CPU time, rounded up to 10 ms.
        let per_sec = if q > 0 {
            let period = period.unwrap_or(100_000);
            let us = (q as u64).saturating_mul(1_000_000) / period;
            us.div_ceil(10_000) * 10_000
        } else {
            infinity
        };
        p.push((sd::CPU_QUOTA_PER_SEC_US, per_sec.into()));
    }
    if let Some(v) = r.pids().as_ref().map(|p| p.limit()) {
        let v = if v <= 0 { infinity } else { v as u64 };
        p.push((sd::TASKS_MAX, v.into()));
    }
    if v2 {
        if let Some(c) = cpu
            .and_then(|c| c.cpus().as_deref())
            .filter(|c| !c.is_empty())
        {
            let (name, mask) = sd::cpuset::cpus(c).map_err(|_| {
                CgroupError::Invalid(format!("cpuset cpus {c:?} is not a CPU list"))
            })?;
            p.push((name, mask.into()));
        }
        if let Some(m) = cpu
            .and_then(|c| c.mems().as_deref())
            .filter(|m| !m.is_empty())
        {
            let (name, mask) = sd::cpuset::mems(m).map_err(|_| {
                CgroupError::Invalid(format!("cpuset mems {m:?} is not a node list"))
            })?;
            p.push((name, mask.into()));
        }
    }
    Ok(p)
}

/// SetUnitProperties of `r`'s properties on the running unit.
pub fn set(unit: &Unit, r: &LinuxResources, v2: bool) -> Result<()> {
    let props = properties(r, v2)?;
    if props.is_empty() {
        return Ok(());
    }
    if !exists(unit)? {
        return Err(CgroupError::Systemd(format!(
            "setting resources: unit {} is not running",
            unit.unit
        )));
    }
    let mut client = SystemdClient::new(&unit.unit, Vec::new())
        .map_err(|e| dbus_err("preparing properties of", unit, e))?;
    client
        .set_properties(&props)
        .map_err(|e| dbus_err("SetUnitProperties of", unit, e))
}

/// StopUnit (kills what is left in the scope); a unit that is not there is
/// fine.
pub fn stop(unit: &Unit) -> Result<()> {
    let client = SystemdClient::new(&unit.unit, Vec::new())
        .map_err(|e| dbus_err("reaching systemd for", unit, e))?;
    client.stop().map_err(|e| dbus_err("StopUnit of", unit, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgroups_rs::systemd::Property;

    #[test]
    fn paths_parse_as_runc_names_units() {
        let u = parse("system.slice:idshift:web").expect("parse");
        assert_eq!(u.slice, "system.slice");
        assert_eq!(u.unit, "idshift-web.scope");
        assert_eq!(u.rel, PathBuf::from("system.slice/idshift-web.scope"));
        let u = parse(":cri-containerd:abc").expect("default slice");
        assert_eq!(u.slice, "system.slice");
        assert_eq!(u.unit, "cri-containerd-abc.scope");
        let u = parse("kubepods-besteffort-pod1.slice::c1").expect("no prefix");
        assert_eq!(u.unit, "c1.scope");
        assert_eq!(
            u.rel,
            PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/c1.scope"
            )
        );
        for bad in [
            "a:b",
            "a:b:c:d",
            "notaslice:p:n",
            "system.slice:p:",
            "system.slice:p:a/b",
            "system.slice:p/q:n",
            "system.slice:p:n.slice",
            "bad--x.slice:p:n",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    fn find<'a>(p: &'a [Property<'static>], name: &str) -> Option<&'a Property<'static>> {
        p.iter().find(|(n, _)| *n == name)
    }

    fn u64_of(p: &[Property<'static>], name: &str) -> Option<u64> {
        find(p, name).map(|(_, v)| u64::try_from(v).expect("u64 property"))
    }

    #[test]
    fn properties_follow_runc() {
        let res = |j: serde_json::Value| -> LinuxResources {
            serde_json::from_value(j).expect("resources")
        };
        let r = res(serde_json::json!({
            "memory": {"limit": 64 << 20, "swap": 128 << 20},
            "cpu": {"shares": 1024, "quota": 50_000, "period": 100_000, "cpus": "0-1"},
            "pids": {"limit": 42},
        }));
        let v2 = properties(&r, true).expect("v2");
        assert_eq!(u64_of(&v2, "MemoryMax"), Some(64 << 20));
        assert_eq!(u64_of(&v2, "MemorySwapMax"), Some(64 << 20));
        assert_eq!(u64_of(&v2, "CPUWeight"), Some(39));
        assert_eq!(u64_of(&v2, "CPUQuotaPerSecUSec"), Some(500_000));
        assert_eq!(u64_of(&v2, "CPUQuotaPeriodUSec"), Some(100_000));
        assert_eq!(u64_of(&v2, "TasksMax"), Some(42));
        assert!(find(&v2, "AllowedCPUs").is_some());
        let v1 = properties(&r, false).expect("v1");
        assert_eq!(u64_of(&v1, "MemoryLimit"), Some(64 << 20));
        assert_eq!(u64_of(&v1, "CPUShares"), Some(1024));
        assert!(find(&v1, "MemoryMax").is_none());
        assert!(find(&v1, "AllowedCPUs").is_none());
        // Unlimited is systemd's infinity; a quota rounds up to 10 ms.
        let r = res(serde_json::json!({
            "memory": {"limit": -1},
            "cpu": {"quota": 12_345},
            "pids": {"limit": 0},
        }));
        let p = properties(&r, true).expect("unlimited");
        assert_eq!(u64_of(&p, "MemoryMax"), Some(u64::MAX));
        assert_eq!(u64_of(&p, "CPUQuotaPerSecUSec"), Some(130_000));
        assert_eq!(u64_of(&p, "TasksMax"), Some(u64::MAX));
        assert!(properties(&LinuxResources::default(), true)
            .expect("nothing")
            .is_empty());
    }
}
