//! Host ID ranges, one per owner (a container or pod id), that concurrent
//! shims never share and that survive shim, containerd and idshift crashes
//! and restarts.
//!
//! State is one JSON file, `<state_dir>/ranges.json`, read and replaced under
//! an exclusive `flock` of `<state_dir>/ranges.lock` (released by the kernel if
//! the holder dies). A new state is written to `ranges.json.tmp` and renamed
//! over the old one: a process that dies at any instant leaves the old or the
//! new state, never a torn one. When the file system is full, a state no
//! longer than the current one (a release) is written over it in place
//! instead (one small `write` under the lock), so that ranges can still be
//! released.
//!
//! Nothing is fsynced: the ranges belong to processes, and no process
//! outlives the boot. The state records the boot it was written in
//! (`/proc/sys/kernel/random/boot_id`); a state of an earlier boot, whatever
//! a machine crash left of it (old, new, even torn), holds no live range and
//! is read as empty. Only within one boot must it be exact, and there the page
//! cache is the truth every process reads.
//!
//! The pool is cut into slots of `range_size` IDs; slot `i` is
//! `pool_start + i * range_size`. Allocation takes the smallest released slot
//! (a sorted set) or the next never-used one: O(log n) in live ranges.

use crate::idmap::IdRange;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the allocator keeps its state and which IDs it hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorConfig {
    pub state_dir: PathBuf,
    /// First host ID of the pool.
    pub pool_start: u32,
    /// Number of host IDs in the pool.
    pub pool_size: u32,
    /// IDs per range (per container or pod).
    pub range_size: u32,
}

impl Default for AllocatorConfig {
    /// 4094 ranges of 65536 from host ID 0x70000000: above systemd's
    /// container range (up to 0x6FFFFFFF), below its "foreign" range
    /// (0x7FFE0000) and below 2^31; see README.
    fn default() -> Self {
        AllocatorConfig {
            state_dir: PathBuf::from("/var/lib/idshift"),
            pool_start: 0x7000_0000,
            pool_size: 0x0FFE_0000,
            range_size: 65536,
        }
    }
}

/// The alignment Kubernetes gives user namespace ranges (kubelet's
/// `idsPerPod` and the base of every pod's range are multiples of it).
pub const KUBERNETES_ALIGNMENT: u32 = 65536;

impl AllocatorConfig {
    /// Kubernetes' rules for pod ranges, on top of what [`Allocator::open`]
    /// checks: the pool starts on a multiple of 65536 and every range is a
    /// multiple of 65536 IDs, so each range is aligned to 65536, as kubelet's
    /// are (and, the pool ending at 4294967294 at most, no range ends at
    /// 4294967295, the invalid ID).
    pub fn check_kubernetes(&self) -> Result<(), AllocError> {
        let a = KUBERNETES_ALIGNMENT;
        if !self.pool_start.is_multiple_of(a) {
            return Err(AllocError::InvalidConfig(format!(
                "pool start {} is not a multiple of {a} (Kubernetes aligns ID ranges to {a})",
                self.pool_start
            )));
        }
        if self.range_size == 0 || !self.range_size.is_multiple_of(a) {
            return Err(AllocError::InvalidConfig(format!(
                "range_size {} is not a positive multiple of {a} (kubelet's idsPerPod must be)",
                self.range_size
            )));
        }
        if u64::from(self.pool_start) + u64::from(self.pool_size) > u64::from(u32::MAX) {
            return Err(AllocError::InvalidConfig(format!(
                "pool {}+{} reaches ID 4294967295",
                self.pool_start, self.pool_size
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("invalid ID pool configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid range owner {owner:?}: {reason}")]
    InvalidOwner { owner: String, reason: &'static str },
    #[error("no free host ID range: all {capacity} ranges of the pool are in use")]
    Exhausted { capacity: u32 },
    #[error("the ID pool configuration changed (start {old_start} -> {new_start}, range size {old_size} -> {new_size}, {old_capacity} -> {new_capacity} ranges) while {live} ranges are allocated; release them or restore the old configuration")]
    ConfigChanged {
        old_start: u32,
        new_start: u32,
        old_size: u32,
        new_size: u32,
        old_capacity: u32,
        new_capacity: u32,
        live: usize,
    },
    #[error("allocator state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AllocError {
    let path = path.to_path_buf();
    move |source| AllocError::Io { op, path, source }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    slot: u32,
    created: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    pool_start: u32,
    range_size: u32,
    capacity: u32,
    /// Slots `0..next` have been handed out at least once.
    next: u32,
    /// Released slots below `next`.
    free: BTreeSet<u32>,
    owners: BTreeMap<String, Entry>,
    /// The boot it was written in; none in a state of an idshift that did
    /// not record it (taken as this boot's: its ranges may be live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
}

impl State {
    fn empty(cfg: &AllocatorConfig, capacity: u32) -> State {
        State {
            pool_start: cfg.pool_start,
            range_size: cfg.range_size,
            capacity,
            next: 0,
            free: BTreeSet::new(),
            owners: BTreeMap::new(),
            boot_id: None,
        }
    }

    /// The invariants that make a double allocation impossible.
    fn check(&self) -> Result<(), String> {
        if self.next > self.capacity {
            return Err(format!(
                "next slot {} is beyond the capacity {}",
                self.next, self.capacity
            ));
        }
        if let Some(f) = self.free.iter().find(|&&f| f >= self.next) {
            return Err(format!(
                "free slot {f} is not below next slot {}",
                self.next
            ));
        }
        let mut used = BTreeMap::new();
        for (owner, e) in &self.owners {
            if e.slot >= self.next {
                return Err(format!(
                    "{owner:?} holds slot {} which is not below next slot {}",
                    e.slot, self.next
                ));
            }
            if self.free.contains(&e.slot) {
                return Err(format!(
                    "{owner:?} holds slot {} which is also free",
                    e.slot
                ));
            }
            if let Some(other) = used.insert(e.slot, owner) {
                return Err(format!("{other:?} and {owner:?} both hold slot {}", e.slot));
            }
        }
        Ok(())
    }

    fn range(&self, slot: u32) -> IdRange {
        IdRange {
            base: self.pool_start + slot * self.range_size,
            size: self.range_size,
        }
    }
}

/// The host ID range allocator.
#[derive(Debug)]
pub struct Allocator {
    cfg: AllocatorConfig,
    capacity: u32,
    state_path: PathBuf,
    tmp_path: PathBuf,
    lock_path: PathBuf,
    boot: Boot,
}

/// The boot this process runs in.
#[derive(Clone, Debug)]
struct Boot {
    id: String,
    /// When it started (`btime` of /proc/stat).
    since: std::time::SystemTime,
}

impl Boot {
    fn current() -> Result<Boot, AllocError> {
        let id_path = Path::new("/proc/sys/kernel/random/boot_id");
        let id = fs::read_to_string(id_path)
            .map_err(io_err("reading", id_path))?
            .trim()
            .to_string();
        let stat_path = Path::new("/proc/stat");
        let stat = fs::read_to_string(stat_path).map_err(io_err("reading", stat_path))?;
        let btime = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| AllocError::Io {
                op: "reading the boot time (btime) from",
                path: stat_path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
            })?;
        Ok(Boot {
            id,
            since: std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime),
        })
    }
}

/// Holds the exclusive lock until dropped (or the process dies).
struct Locked(#[allow(dead_code)] File);

impl Allocator {
    /// Validates the configuration and creates the state dir (mode 0700).
    pub fn open(cfg: AllocatorConfig) -> Result<Self, AllocError> {
        let bad = |s: String| Err(AllocError::InvalidConfig(s));
        if cfg.range_size == 0 {
            return bad("range_size must be > 0".into());
        }
        if cfg.pool_size < cfg.range_size {
            return bad(format!(
                "pool_size {} is smaller than one range of {}",
                cfg.pool_size, cfg.range_size
            ));
        }
        if cfg.pool_start < 65536 {
            return bad(format!(
                "pool_start {} is below 65536, among the host's own users",
                cfg.pool_start
            ));
        }
        if u64::from(cfg.pool_start) + u64::from(cfg.pool_size) > u64::from(u32::MAX) {
            return bad(format!(
                "pool {}+{} reaches past ID 4294967294 (4294967295 is the invalid ID)",
                cfg.pool_start, cfg.pool_size
            ));
        }
        if cfg.state_dir.as_os_str().is_empty() {
            return bad("state_dir is empty".into());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.state_dir)
            .map_err(io_err("creating state dir", &cfg.state_dir))?;
        fs::set_permissions(&cfg.state_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod 0700", &cfg.state_dir))?;
        Ok(Allocator {
            capacity: cfg.pool_size / cfg.range_size,
            state_path: cfg.state_dir.join("ranges.json"),
            tmp_path: cfg.state_dir.join("ranges.json.tmp"),
            lock_path: cfg.state_dir.join("ranges.lock"),
            boot: Boot::current()?,
            cfg,
        })
    }

    pub fn config(&self) -> &AllocatorConfig {
        &self.cfg
    }

    /// Number of ranges in the pool.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The range of `owner`, allocating one if it holds none.
    pub fn allocate(&self, owner: &str) -> Result<IdRange, AllocError> {
        check_owner(owner)?;
        let _lock = self.lock()?;
        let mut st = self.load()?;
        if let Some(e) = st.owners.get(owner) {
            return Ok(st.range(e.slot));
        }
        let slot = match st.free.pop_first() {
            Some(s) => s,
            None if st.next < st.capacity => {
                st.next += 1;
                st.next - 1
            }
            None => {
                return Err(AllocError::Exhausted {
                    capacity: st.capacity,
                })
            }
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        st.owners.insert(owner.to_string(), Entry { slot, created });
        self.store(&st)?;
        Ok(st.range(slot))
    }

    /// Releases the range of `owner`; `Ok(None)` if it held none.
    pub fn release(&self, owner: &str) -> Result<Option<IdRange>, AllocError> {
        check_owner(owner)?;
        let _lock = self.lock()?;
        let mut st = self.load()?;
        let Some(e) = st.owners.remove(owner) else {
            return Ok(None);
        };
        st.free.insert(e.slot);
        while st.next > 0 && st.free.remove(&(st.next - 1)) {
            st.next -= 1;
        }
        self.store(&st)?;
        Ok(Some(st.range(e.slot)))
    }

    /// The range `owner` holds, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<IdRange>, AllocError> {
        check_owner(owner)?;
        let _lock = self.lock()?;
        let st = self.load()?;
        Ok(st.owners.get(owner).map(|e| st.range(e.slot)))
    }

    /// Every live range with its owner, sorted by base.
    pub fn live(&self) -> Result<Vec<(String, IdRange)>, AllocError> {
        let _lock = self.lock()?;
        let st = self.load()?;
        let mut v: Vec<_> = st
            .owners
            .iter()
            .map(|(o, e)| (o.clone(), st.range(e.slot)))
            .collect();
        v.sort_by_key(|(_, r)| r.base);
        Ok(v)
    }

    fn lock(&self) -> Result<Locked, AllocError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.lock_path)
            .map_err(io_err("opening lock", &self.lock_path))?;
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Locked(f)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err("locking", &self.lock_path)(e.into())),
            }
        }
    }

    /// Reads the state (under the lock), adopting a changed configuration
    /// only when no range is live.
    fn load(&self) -> Result<State, AllocError> {
        let text = match fs::read_to_string(&self.state_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State::empty(&self.cfg, self.capacity))
            }
            Err(e) => return Err(io_err("reading", &self.state_path)(e)),
        };
        let corrupt = |reason: String| AllocError::Corrupt {
            path: self.state_path.clone(),
            reason,
        };
        let mut st: State = match serde_json::from_str::<State>(&text) {
            Ok(st) => st,
            Err(_) if self.written_before_boot() => return Ok(self.earlier_boot("unreadable")),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if st.boot_id.as_ref().is_some_and(|b| *b != self.boot.id) {
            return Ok(self.earlier_boot(&format!("{} ranges", st.owners.len())));
        }
        st.check().map_err(corrupt)?;
        let same_layout =
            st.pool_start == self.cfg.pool_start && st.range_size == self.cfg.range_size;
        if same_layout && st.capacity == self.capacity {
            return Ok(st);
        }
        let fits = same_layout && st.owners.values().all(|e| e.slot < self.capacity);
        if st.owners.is_empty() {
            return Ok(State::empty(&self.cfg, self.capacity));
        }
        if !fits {
            return Err(AllocError::ConfigChanged {
                old_start: st.pool_start,
                new_start: self.cfg.pool_start,
                old_size: st.range_size,
                new_size: self.cfg.range_size,
                old_capacity: st.capacity,
                new_capacity: self.capacity,
                live: st.owners.len(),
            });
        }
        // The pool grew or shrank around the live slots.
        st.capacity = self.capacity;
        st.next = st.next.min(self.capacity);
        let next = st.next;
        st.free.retain(|&f| f < next);
        Ok(st)
    }

    /// Whether the state file was last written before this boot began.
    fn written_before_boot(&self) -> bool {
        fs::metadata(&self.state_path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < self.boot.since)
    }

    /// The state that replaces one of an earlier boot: empty.
    fn earlier_boot(&self, what: &str) -> State {
        log::info!(
            "{}: state of an earlier boot ({what}): no range of it is live, starting empty",
            self.state_path.display()
        );
        State::empty(&self.cfg, self.capacity)
    }

    fn store(&self, st: &State) -> Result<(), AllocError> {
        let st = State {
            boot_id: Some(self.boot.id.clone()),
            ..st.clone()
        };
        let text = serde_json::to_vec_pretty(&st).map_err(|e| AllocError::Corrupt {
            path: self.state_path.clone(),
            reason: format!("cannot serialise: {e}"),
        })?;
        match self.store_by_rename(&text) {
            Err(AllocError::Io { source, .. }) if is_full(&source) => {
                self.store_in_place(&text).map_err(|e| {
                    log::debug!("{}: in place: {e}", self.state_path.display());
                    AllocError::Io {
                        op: "writing",
                        path: self.tmp_path.clone(),
                        source,
                    }
                })
            }
            other => other,
        }
    }

    /// The atomic way: a temporary file renamed over the state.
    fn store_by_rename(&self, text: &[u8]) -> Result<(), AllocError> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.tmp_path)
            .map_err(io_err("creating", &self.tmp_path))?;
        // A failed write (ENOSPC) leaves the old state in place and no
        // partial temporary file taking space.
        if let Err(e) = f.write_all(text) {
            drop(f);
            let _ = fs::remove_file(&self.tmp_path);
            return Err(io_err("writing", &self.tmp_path)(e));
        }
        drop(f);
        fs::rename(&self.tmp_path, &self.state_path).map_err(|e| {
            let _ = fs::remove_file(&self.tmp_path);
            io_err("renaming into place", &self.state_path)(e)
        })
    }

    /// On a full file system, a state no longer than the current one (a
    /// release always is) is written over it in place, padded with
    /// whitespace (valid JSON) to the old length: the file's blocks exist
    /// already, so a release still succeeds when nothing can be allocated.
    /// One `write` of a few hundred bytes under the lock; only a crash of
    /// the machine in the middle of it could tear it, and a state of an
    /// earlier boot is read as empty.
    fn store_in_place(&self, text: &[u8]) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.state_path)?;
        let old_len = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
        if text.len() > old_len {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut padded = text.to_vec();
        padded.resize(old_len, b' ');
        if let Some(last) = padded.last_mut().filter(|_| old_len > text.len()) {
            *last = b'\n';
        }
        f.write_all(&padded)
    }
}

/// ENOSPC or EDQUOT.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn check_owner(owner: &str) -> Result<(), AllocError> {
    let reason = if owner.is_empty() {
        "it is empty"
    } else if owner.len() > 256 {
        "it is longer than 256 bytes"
    } else if owner.chars().any(|c| c.is_control()) {
        "it contains a control character"
    } else if owner.contains('/') {
        "it contains '/'"
    } else {
        return Ok(());
    };
    Err(AllocError::InvalidOwner {
        owner: owner.chars().take(300).collect(),
        reason,
    })
}

/// Entries of a `/etc/subuid`-style file (`name:start:count`) that reach into
/// the pool `pool_start..+pool_size`. A missing file has none.
pub fn subid_overlaps(
    pool_start: u32,
    pool_size: u32,
    path: &Path,
) -> Result<Vec<(String, IdRange)>, AllocError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    let pool = IdRange {
        base: pool_start,
        size: pool_size,
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let (Some(name), Some(start), Some(count)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        let r = IdRange {
            base: start,
            size: count,
        };
        if count > 0 && r.overlaps(&pool) {
            out.push((name.to_string(), r));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, ranges: u32) -> AllocatorConfig {
        AllocatorConfig {
            state_dir: dir.to_path_buf(),
            pool_start: 1_000_000,
            pool_size: ranges * 1000,
            range_size: 1000,
        }
    }

    #[test]
    fn a_shorter_state_written_in_place_is_read_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        a.allocate("c1").expect("c1");
        let r2 = a.allocate("c2").expect("c2");
        let before = fs::metadata(&a.state_path).expect("state").len();
        let mut st = a.load().expect("load");
        let e = st.owners.remove("c1").expect("c1's entry");
        st.free.insert(e.slot);
        let text = serde_json::to_vec_pretty(&st).expect("json");
        a.store_in_place(&text).expect("in place");
        assert_eq!(fs::metadata(&a.state_path).expect("state").len(), before);
        assert_eq!(a.live().expect("live"), vec![("c2".to_string(), r2)]);
        // A longer one is refused (it would need new blocks).
        st.owners.insert("a-much-longer-owner-name".into(), e);
        st.free.clear();
        let text = serde_json::to_vec_pretty(&st).expect("json");
        assert!(a.store_in_place(&text).is_err());
        assert_eq!(a.live().expect("live"), vec![("c2".to_string(), r2)]);
    }

    #[test]
    fn allocate_release_reuse_and_exhaust() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        assert_eq!(a.capacity(), 3);
        let r1 = a.allocate("c1").expect("c1");
        let r2 = a.allocate("c2").expect("c2");
        let r3 = a.allocate("c3").expect("c3");
        assert_eq!(
            (r1.base, r2.base, r3.base),
            (1_000_000, 1_001_000, 1_002_000)
        );
        assert_eq!(a.allocate("c2").expect("again"), r2, "idempotent");
        let err = a.allocate("c4").expect_err("exhausted");
        assert!(
            matches!(err, AllocError::Exhausted { capacity: 3 }),
            "{err}"
        );
        assert_eq!(a.release("c2").expect("release"), Some(r2));
        assert_eq!(a.release("c2").expect("release twice"), None);
        assert_eq!(a.allocate("c4").expect("reuse"), r2);
        assert_eq!(a.lookup("c4").expect("lookup"), Some(r2));
        assert_eq!(a.lookup("c2").expect("lookup"), None);
        // Persisted across instances.
        let b = Allocator::open(cfg(d.path(), 3)).expect("reopen");
        let live = b.live().expect("live");
        assert_eq!(
            live,
            vec![
                ("c1".to_string(), r1),
                ("c4".to_string(), r2),
                ("c3".to_string(), r3)
            ]
        );
        let mode = fs::metadata(d.path()).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Releasing the top slots shrinks the high-water mark.
        for o in ["c1", "c3", "c4"] {
            b.release(o).expect("release");
        }
        let st: State =
            serde_json::from_str(&fs::read_to_string(d.path().join("ranges.json")).expect("read"))
                .expect("parse");
        assert_eq!((st.next, st.free.len()), (0, 0));
    }

    #[test]
    fn config_is_validated() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().to_path_buf();
        let cases = [
            AllocatorConfig {
                range_size: 0,
                ..cfg(&p, 3)
            },
            AllocatorConfig {
                pool_size: 10,
                ..cfg(&p, 3)
            },
            AllocatorConfig {
                pool_start: 1000,
                ..cfg(&p, 3)
            },
            AllocatorConfig {
                pool_start: u32::MAX - 1000,
                ..cfg(&p, 3)
            },
        ];
        for c in cases {
            let e = Allocator::open(c.clone()).expect_err("invalid");
            assert!(matches!(e, AllocError::InvalidConfig(_)), "{c:?}: {e}");
        }
        Allocator::open(AllocatorConfig {
            state_dir: p.join("default"),
            ..AllocatorConfig::default()
        })
        .expect("the default pool is valid");
        assert_eq!(AllocatorConfig::default().pool_size / 65536, 4094);
    }

    #[test]
    fn config_change_with_live_ranges_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        a.allocate("c1").expect("c1");
        let moved = Allocator::open(AllocatorConfig {
            pool_start: 2_000_000,
            ..cfg(d.path(), 3)
        })
        .expect("open");
        let e = moved.allocate("c2").expect_err("config changed");
        assert!(
            matches!(e, AllocError::ConfigChanged { live: 1, .. }),
            "{e}"
        );
        // A bigger pool with the same layout is fine.
        let bigger = Allocator::open(cfg(d.path(), 5)).expect("open");
        assert_eq!(bigger.allocate("c2").expect("c2").base, 1_001_000);
        // Once empty, any new layout is adopted.
        bigger.release("c1").expect("release");
        bigger.release("c2").expect("release");
        assert_eq!(moved.allocate("c3").expect("c3").base, 2_000_000);
    }

    #[test]
    fn corrupt_state_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        let path = d.path().join("ranges.json");
        for (text, what) in [
            ("", "EOF"),
            ("{not json", "key"),
            (
                r#"{"pool_start":1000000,"range_size":1000,"capacity":3,"next":2,"free":[],
                   "owners":{"a":{"slot":1,"created":0},"b":{"slot":1,"created":0}}}"#,
                "both hold slot 1",
            ),
            (
                r#"{"pool_start":1000000,"range_size":1000,"capacity":3,"next":1,"free":[0],
                   "owners":{"a":{"slot":0,"created":0}}}"#,
                "also free",
            ),
            (
                r#"{"pool_start":1000000,"range_size":1000,"capacity":3,"next":4,"free":[],"owners":{}}"#,
                "beyond the capacity",
            ),
        ] {
            fs::write(&path, text).expect("write");
            let e = a.allocate("x").expect_err("corrupt");
            assert!(matches!(e, AllocError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(what), "{e}");
            assert!(e.to_string().contains("ranges.json"), "{e}");
        }
    }

    #[test]
    fn a_state_of_an_earlier_boot_holds_no_range() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        let path = d.path().join("ranges.json");
        let r = a.allocate("live").expect("live");
        // This boot's state keeps its ranges, and records the boot.
        let text = fs::read_to_string(&path).expect("state");
        assert!(text.contains(&a.boot.id), "{text}");
        assert_eq!(a.lookup("live").expect("lookup"), Some(r));
        // A state without a boot (an earlier idshift's) is taken as this boot's.
        let mut st: State = serde_json::from_str(&text).expect("json");
        st.boot_id = None;
        fs::write(&path, serde_json::to_vec(&st).expect("json")).expect("write");
        assert_eq!(a.lookup("live").expect("lookup"), Some(r));
        // Another boot's, even one breaking the invariants, holds nothing.
        st.boot_id = Some("another-boot".into());
        st.free.insert(r.base);
        fs::write(&path, serde_json::to_vec(&st).expect("json")).expect("write");
        assert_eq!(a.lookup("live").expect("lookup"), None);
        assert_eq!(a.allocate("new").expect("new"), r);
        // A torn file is an earlier boot's if written before this boot began,
        // and corrupt if written since.
        for (text, when) in [("", a.boot.since), ("{\"pool_st", a.boot.since)] {
            fs::write(&path, text).expect("write");
            let f = File::options().write(true).open(&path).expect("open");
            f.set_modified(when - std::time::Duration::from_secs(5))
                .expect("mtime");
            drop(f);
            assert_eq!(a.live().expect("earlier boot"), vec![]);
            fs::write(&path, text).expect("write");
            let e = a.live().expect_err("torn in this boot");
            assert!(matches!(e, AllocError::Corrupt { .. }), "{e}");
        }
    }

    #[test]
    fn owners_are_validated() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Allocator::open(cfg(d.path(), 3)).expect("open");
        let long = "x".repeat(257);
        for bad in ["", "a/b", "a\nb", long.as_str()] {
            let e = a.allocate(bad).expect_err("bad owner");
            assert!(matches!(e, AllocError::InvalidOwner { .. }), "{e}");
        }
        a.allocate(&"y".repeat(256)).expect("256 bytes is fine");
    }

    #[test]
    fn kubernetes_rules() {
        let d = tempfile::tempdir().expect("tempdir");
        let ok = AllocatorConfig {
            state_dir: d.path().to_path_buf(),
            pool_start: 262144,
            pool_size: 10 * 131072,
            range_size: 131072,
        };
        ok.check_kubernetes().expect("aligned");
        AllocatorConfig::default()
            .check_kubernetes()
            .expect("the default");
        for (c, want) in [
            (
                AllocatorConfig {
                    pool_start: 262145,
                    ..ok.clone()
                },
                "pool start 262145 is not a multiple of 65536",
            ),
            (
                AllocatorConfig {
                    range_size: 1000,
                    ..ok.clone()
                },
                "range_size 1000 is not a positive multiple of 65536",
            ),
            (
                AllocatorConfig {
                    pool_start: u32::MAX - 65535,
                    pool_size: 65536,
                    range_size: 65536,
                    ..ok.clone()
                },
                "reaches ID 4294967295",
            ),
        ] {
            let e = c.check_kubernetes().expect_err(want).to_string();
            assert!(e.contains(want), "{e}");
        }
        // Ranges of an aligned pool are aligned, the last one short of 2^32-1.
        let a = Allocator::open(AllocatorConfig {
            pool_start: 0xFFFE_0000,
            pool_size: 0xFFFF,
            range_size: 65536,
            ..ok.clone()
        });
        assert!(a.is_err(), "a pool shorter than one range");
        let a = Allocator::open(ok.clone()).expect("open");
        for i in 0..3 {
            let r = a.allocate(&format!("p{i}")).expect("allocate");
            assert_eq!(r.base % 65536, 0);
            assert_eq!(r.size, 131072);
        }
    }

    #[test]
    fn subid_overlaps_are_reported() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("subuid");
        fs::write(
            &p,
            "alice:100000:65536\n# comment\nbob:1879000000:100000\nbad line\ncarol:2147483000:10\n",
        )
        .expect("write");
        let c = AllocatorConfig::default();
        let o = subid_overlaps(c.pool_start, c.pool_size, &p).expect("parse");
        assert_eq!(
            o,
            vec![(
                "bob".to_string(),
                IdRange {
                    base: 1_879_000_000,
                    size: 100_000
                }
            )]
        );
        assert!(
            subid_overlaps(c.pool_start, c.pool_size, &d.path().join("none"))
                .expect("missing")
                .is_empty()
        );
    }
}
