//! A process's standard I/O on the shim side: containerd's fifos (or
//! `file://` / `binary://` log URIs) on one end, pipes or a pty master to the
//! process on the other, copied by tasks that finish when the process's side
//! closes.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// What containerd asked for.
#[derive(Clone, Debug, Default)]
pub struct StdioUris {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The process's ends, for `Command::stdin/stdout/stderr`.
pub struct ChildStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// The shim's side of a process's I/O.
#[derive(Default)]
pub struct ProcessIo {
    stdin: Option<StdinCopy>,
    copies: Vec<JoinHandle<()>>,
    /// The pty master, kept for resizing.
    pub pty: Option<OwnedFd>,
}

/// Copies containerd's stdin fifo to the process on a thread of its own.
/// The fifo is opened read-only (blocking until containerd's writer
/// connects), so containerd closing its writer is end of file for the
/// process; CloseIO drops the process's side at once.
struct StdinCopy {
    fifo: PathBuf,
    to: Arc<Mutex<Option<std::fs::File>>>,
}

/// `write_all` that waits out EAGAIN (a pty master is non-blocking, and that
/// flag is shared by all its dups).
fn write_all_retrying(w: &mut std::fs::File, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl StdinCopy {
    fn start(fifo: &str, to: std::fs::File) -> StdinCopy {
        let to = Arc::new(Mutex::new(Some(to)));
        let (path, sink) = (PathBuf::from(fifo), to.clone());
        std::thread::spawn(move || {
            let Ok(mut from) = std::fs::File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 8192];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut guard = sink.lock().unwrap_or_else(|e| e.into_inner());
                let written = guard
                    .as_mut()
                    .is_some_and(|w| write_all_retrying(w, &buf[..n]).is_ok());
                if !written {
                    break;
                }
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
        StdinCopy {
            fifo: PathBuf::from(fifo),
            to,
        }
    }

    fn close(&self) {
        self.to.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Unblock a copier still waiting for containerd to open the fifo.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.fifo);
    }
}

enum Sink {
    Fifo(String),
    File(String),
    Binary(String),
    Null,
}

fn sink(uri: &str) -> io::Result<Sink> {
    if uri.is_empty() {
        return Ok(Sink::Null);
    }
    match uri.split_once("://") {
        None => Ok(Sink::Fifo(uri.to_string())),
        Some(("fifo", p)) => Ok(Sink::Fifo(p.to_string())),
        Some(("file", p)) => Ok(Sink::File(p.to_string())),
        Some(("binary", p)) => Ok(Sink::Binary(p.to_string())),
        Some((scheme, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported stdio URI scheme {scheme:?} in {uri:?} (fifo paths, file:// and binary:// are supported)"),
        )),
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn open_fifo_writer(path: &str) -> io::Result<pipe::Sender> {
    // Read-write, so the open does not wait for (or fail without) a reader.
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening fifo {path}: {e}")))
}

async fn copy_to<W: tokio::io::AsyncWrite + Unpin>(mut from: pipe::Receiver, mut to: W) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.flush().await;
}

/// Spawns containerd's binary logging protocol: the logger gets stdout and
/// stderr as fds 3 and 4 and closes fd 5 when ready.
fn spawn_binary_logger(
    uri: &str,
    id: &str,
    namespace: &str,
    out: OwnedFd,
    err: OwnedFd,
) -> io::Result<()> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut cmd = std::process::Command::new(path);
    // As containerd's runc shim does: each query parameter becomes the
    // arguments `key value`.
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some((k, v)) => cmd.args([k, v]),
            None => cmd.arg(kv),
        };
    }
    let (ready_r, ready_w) = pipe_pair()?;
    let fds = [out.as_raw_fd(), err.as_raw_fd(), ready_w.as_raw_fd()];
    // Its environment is these two alone, as the runc shim gives it (not
    // the shim's own: containerd's TTRPC_ADDRESS, GLIBC_TUNABLES).
    cmd.env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::sys::pre_exec(&mut cmd, move || {
        for (i, fd) in fds.iter().enumerate() {
            crate::sys::dup2_raw(*fd, 3 + i as i32)?;
        }
        Ok(())
    });
    cmd.spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting logger {path}: {e}")))?;
    drop(ready_w);
    // Wait (bounded) for the logger to close its end of the ready pipe.
    let mut buf = [0u8; 1];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let _ = rustix::io::ioctl_fionbio(&ready_r, true);
    loop {
        match rustix::io::read(&ready_r, &mut buf) {
            Ok(_) => break,
            Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(_) => break,
        }
    }
    Ok(())
}

impl ProcessIo {
    /// Sets up I/O for a process. With a terminal the process gets /dev/null
    /// and [`ProcessIo::attach_pty`] is called once its pty master arrives.
    pub fn prepare(
        uris: &StdioUris,
        id: &str,
        namespace: &str,
    ) -> io::Result<(ChildStdio, ProcessIo)> {
        let mut io = ProcessIo::default();
        if uris.terminal {
            return Ok((
                ChildStdio {
                    stdin: Stdio::null(),
                    stdout: Stdio::null(),
                    stderr: Stdio::null(),
                },
                io,
            ));
        }
        let stdin = if uris.stdin.is_empty() {
            Stdio::null()
        } else {
            let (r, w) = pipe_pair()?;
            io.stdin = Some(StdinCopy::start(&uris.stdin, std::fs::File::from(w)));
            Stdio::from(r)
        };
        let (out_sink, err_sink) = (sink(&uris.stdout)?, sink(&uris.stderr)?);
        let mut child_out = Stdio::null();
        let mut child_err = Stdio::null();
        if let Sink::Binary(uri) = &out_sink {
            let (out_r, out_w) = pipe_pair()?;
            let (err_r, err_w) = pipe_pair()?;
            spawn_binary_logger(uri, id, namespace, out_r, err_r)?;
            return Ok((
                ChildStdio {
                    stdin,
                    stdout: Stdio::from(out_w),
                    stderr: Stdio::from(err_w),
                },
                io,
            ));
        }
        for (s, child) in [(&out_sink, &mut child_out), (&err_sink, &mut child_err)] {
            match s {
                Sink::Null => {}
                Sink::Fifo(p) => {
                    let (r, w) = pipe_pair()?;
                    let to = open_fifo_writer(p)?;
                    io.copies
                        .push(tokio::spawn(copy_to(pipe::Receiver::from_owned_fd(r)?, to)));
                    *child = Stdio::from(w);
                }
                Sink::File(p) => {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|e| {
                            io::Error::new(e.kind(), format!("opening log file {p}: {e}"))
                        })?;
                    *child = Stdio::from(f);
                }
                Sink::Binary(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "binary:// must be given for stdout (and is used for both streams)",
                    ))
                }
            }
        }
        Ok((
            ChildStdio {
                stdin,
                stdout: child_out,
                stderr: child_err,
            },
            io,
        ))
    }

    /// Connects a pty master: stdin fifo -> master -> stdout.
    pub fn attach_pty(&mut self, uris: &StdioUris, master: OwnedFd) -> io::Result<()> {
        rustix::io::ioctl_fionbio(&master, true)?;
        let reader = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
        if !uris.stdout.is_empty() {
            let to = match sink(&uris.stdout)? {
                Sink::Fifo(p) => open_fifo_writer(&p)?,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a terminal needs a fifo for stdout",
                    ))
                }
            };
            self.copies.push(tokio::spawn(copy_to(reader, to)));
        }
        if !uris.stdin.is_empty() {
            let writer = std::fs::File::from(master.try_clone()?);
            self.stdin = Some(StdinCopy::start(&uris.stdin, writer));
        }
        self.pty = Some(master);
        Ok(())
    }

    /// CloseIO: the process's stdin reaches end of file.
    pub fn close_stdin(&mut self) {
        if let Some(s) = self.stdin.take() {
            s.close();
            // A pty has no end-of-file but ^D at the start of a line.
            if let Some(m) = &self.pty {
                let _ = rustix::io::write(m, b"\x04");
            }
        }
    }

    /// Waits (bounded) until the output copies drained what the process wrote.
    pub async fn drain(&mut self) {
        let copies = std::mem::take(&mut self.copies);
        let all = futures_join(copies);
        if tokio::time::timeout(std::time::Duration::from_secs(5), all)
            .await
            .is_err()
        {
            log::warn!("output of an exited process did not drain within 5 s");
        }
        self.close_stdin();
    }

    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let m = self.pty.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the process has no terminal")
        })?;
        let ws = rustix::termios::Winsize {
            ws_row: height.min(u16::MAX.into()) as u16,
            ws_col: width.min(u16::MAX.into()) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Ok(rustix::termios::tcsetwinsize(m, ws)?)
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for t in &self.copies {
            t.abort();
        }
        if let Some(s) = self.stdin.take() {
            s.close();
        }
    }
}
