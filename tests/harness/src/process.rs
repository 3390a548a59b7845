//! Processes and mounts of the host: running commands with a timeout,
//! finding and killing processes by command line, reading and cleaning the
//! mount table.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a command run by [`run_with_timeout`] (e.g. `ctr`) said and how it
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrOutput {
    /// The exit code; `None` when it could not be spawned, was killed by a
    /// signal or timed out (then `stderr` says so).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOutput {
    /// Panics with everything the command said unless it exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "command failed (code {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured), killing
/// it when it runs longer than `timeout`.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> CtrOutput {
    run(cmd, None, timeout)
}

/// [`run_with_timeout`] with `input` on the command's standard input
/// (written by a thread: a command that does not read it cannot block us).
pub fn run_with_stdin(cmd: Command, input: &[u8], timeout: Duration) -> CtrOutput {
    run(cmd, Some(input.to_vec()), timeout)
}

fn run(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> CtrOutput {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CtrOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("spawning {cmd:?}: {e}"),
            }
        }
    };
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let t_out = std::thread::spawn(move || read_all(out));
    let t_err = std::thread::spawn(move || read_all(err));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = t_err.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!(
            "\n[idshift-tests: killed {cmd:?} after {} s]",
            timeout.as_secs_f64()
        ));
    }
    CtrOutput {
        code,
        stdout: t_out.join().unwrap_or_default(),
        stderr,
    }
}

fn read_all<R: Read>(r: Option<R>) -> String {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The lines of `/proc/self/mountinfo` (the test process's mount namespace,
/// the host's).
pub fn host_mountinfo() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The mount point (5th field) of a mountinfo line, with the kernel's octal
/// escapes (`\040` for a space, ...) decoded.
pub fn mount_point(mountinfo_line: &str) -> Option<String> {
    let field = mountinfo_line.split(' ').nth(4)?;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\' && oct.len() == 3 && oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
            let b = oct.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(b).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Whether `path` is `dir` or inside it (compared as strings, component-wise).
pub(crate) fn is_under(path: &str, dir: &Path) -> bool {
    Path::new(path).starts_with(dir)
}

/// The mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let mut mounts: Vec<String> = host_mountinfo()
        .iter()
        .filter_map(|l| mount_point(l))
        .filter(|m| is_under(m, dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    mounts.dedup();
    mounts
}

/// Detaches (`umount2(MNT_DETACH)`) every mount at or under `dir`, deepest
/// first, a few rounds (a mount may hide another); returns the mount points
/// that are still there.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in &mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    mounts_under(dir)
}

/// The cgroup hierarchies of the host: every directory in /sys/fs/cgroup
/// (v1 controllers and a hybrid `unified`), or /sys/fs/cgroup itself
/// (cgroup v2).
pub(crate) fn cgroup_roots() -> Vec<PathBuf> {
    let top = Path::new("/sys/fs/cgroup");
    if top.join("cgroup.controllers").exists() {
        return vec![top.to_path_buf()];
    }
    let mut roots: Vec<PathBuf> = std::fs::read_dir(top)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    roots.sort();
    roots
}

/// Removes the (empty) cgroups `paths` (relative to each hierarchy's root;
/// only the leaf, not its parents) from every hierarchy, retrying for up to
/// `timeout` while one is busy (its processes still exiting); returns those
/// still there.
pub fn remove_cgroups(paths: &[PathBuf], timeout: Duration) -> Vec<PathBuf> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut todo: Vec<PathBuf> = cgroup_roots()
        .iter()
        .flat_map(|root| paths.iter().map(move |p| root.join(p)))
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        todo.retain(|dir| match std::fs::remove_dir(dir) {
            Ok(()) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        });
        if todo.is_empty() || Instant::now() >= deadline {
            return todo;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (pid, cmdline with NULs as spaces) of every process but this one whose
/// command line contains `needle`. Zombies (empty command lines) are not
/// listed.
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if !cmd.is_empty() && cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// SIGKILLs the process `pid` through a pidfd (no risk of hitting a reused
/// pid once the fd is open) if its command line still contains `needle`.
pub(crate) fn kill_if_matching(pid: u32, needle: &str) -> std::io::Result<()> {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmd)
        .replace('\0', " ")
        .contains(needle)
    {
        rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL)?;
    }
    Ok(())
}

/// The parent pid and state of process `pid`, from /proc/<pid>/stat.
fn ppid_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every live (not zombie) descendant of the processes `roots`.
pub fn descendants_of(roots: &[u32]) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some((ppid, state)) = ppid_and_state(pid) {
                if state != 'Z' {
                    parent.push((pid, ppid));
                }
            }
        }
    }
    let mut found: Vec<u32> = Vec::new();
    let mut frontier: Vec<u32> = roots.to_vec();
    while let Some(p) = frontier.pop() {
        for &(child, pp) in &parent {
            if pp == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Whether `pid` is gone or a zombie.
fn is_gone(pid: u32) -> bool {
    !matches!(ppid_and_state(pid), Some((_, state)) if state != 'Z')
}

/// The paths of the unix sockets the processes `pids` listen on (through
/// their fds' socket inodes and `/proc/net/unix`), e.g. a shim's ttrpc
/// socket, which its bundle may no longer name.
pub fn listening_sockets_of(pids: &[u32]) -> Vec<PathBuf> {
    let mut inodes = std::collections::BTreeSet::new();
    for pid in pids {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (f.get(6)?, f.get(7)?);
            (inodes.contains(*inode) && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect()
}

/// SIGKILLs every process whose command line contains `needle`, and their
/// descendants (e.g. the containers of a shim), and waits (up to `timeout`)
/// until all are gone; returns the matching ones still there.
pub fn kill_processes_matching(needle: &str, timeout: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + timeout;
    let mut killed: Vec<u32> = Vec::new();
    loop {
        let left = processes_matching(needle);
        killed.retain(|p| !is_gone(*p));
        if (left.is_empty() && killed.is_empty()) || Instant::now() >= deadline {
            return left;
        }
        let roots: Vec<u32> = left.iter().map(|(p, _)| *p).collect();
        for pid in descendants_of(&roots) {
            let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            if let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
                let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
                killed.push(pid);
            }
        }
        for pid in roots {
            let _ = kill_if_matching(pid, needle);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `log` fifo containerd makes in a shim's bundle, made in `bundle`
/// for a shim started by hand, and read to its end (when the shim closes
/// it) by a thread whose result is the log's text.
pub fn shim_log_fifo(bundle: &std::path::Path) -> std::thread::JoinHandle<String> {
    let log = bundle.join("log");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &log,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo log");
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&log) {
            let _ = std::io::Read::read_to_end(&mut f, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        let l = "36 35 98:0 / /var/tmp/a\\040b rw,noatime master:1 - ext3 /dev/root rw";
        assert_eq!(mount_point(l).as_deref(), Some("/var/tmp/a b"));
        assert_eq!(mount_point("1 2 3").as_deref(), None);
        let l = "36 35 98:0 / /x\\134 rw - ext3 /dev/root rw";
        assert_eq!(mount_point(l).as_deref(), Some("/x\\"));
    }

    #[test]
    fn under_is_component_wise() {
        assert!(is_under("/var/tmp/a", Path::new("/var/tmp/a")));
        assert!(is_under("/var/tmp/a/b", Path::new("/var/tmp/a")));
        assert!(!is_under("/var/tmp/ab", Path::new("/var/tmp/a")));
    }

    #[test]
    fn matching_processes_die_with_their_descendants() {
        let marker = crate::unique("idshift-kill-test");
        // sh (matching) -> sleep (not matching, its descendant).
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 1000 & wait", &marker])
            .spawn()
            .expect("spawn sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        let child = loop {
            if let Some(c) = descendants_of(&[sh.id()]).first() {
                break *c;
            }
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(processes_matching(&marker).len(), 1);
        let left = kill_processes_matching(&marker, Duration::from_secs(10));
        assert!(left.is_empty(), "{left:?}");
        let _ = sh.wait();
        assert!(is_gone(child), "the descendant was killed too");
    }

    #[test]
    fn timeouts_kill_and_codes_are_reported() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 7"]);
        let o = run_with_timeout(c, Duration::from_secs(10));
        assert_eq!((o.code, o.stdout.as_str()), (Some(7), "out\n"));
        assert!(o.stderr.starts_with("err\n"));
        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        let o = run_with_timeout(c, Duration::from_millis(200));
        assert_eq!(o.code, None);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(o.stderr.contains("killed"), "{o:?}");
    }
}
