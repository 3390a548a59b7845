//! The serving shim's log: containerd's `log` fifo in the bundle directory,
//! in containerd's logfmt (`time="..." level=... msg="..."`).
//!
//! containerd copies the fifo to its own stderr by the chunk, not by the
//! line, so a line must reach the fifo in one write(2) or another writer's
//! output can land inside it. (containerd-shim 0.11's logger writes each
//! piece of a line separately; under load its lines came out split.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub struct LineLogger {
    /// None: nobody was reading the fifo when the shim started.
    file: Mutex<Option<File>>,
}

/// Opens the `log` fifo for writing without waiting for a reader: a plain
/// open blocks until one comes, and when containerd was killed between
/// `start` and the serving shim's start nobody ever comes (the shim would
/// hang there forever, an orphan that cannot even notice it). `None` when
/// there is no reader; the fd is made blocking again once open.
fn open_log_fifo(path: &str) -> Result<Option<File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => {
            nix::fcntl::fcntl(
                &f,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .map_err(|e| format!("making the log fifo blocking: {e}"))?;
            Ok(Some(f))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(format!("opening the log fifo: {e}")),
    }
}

impl LineLogger {
    /// Opens containerd's `log` fifo in the current directory (the bundle)
    /// and makes it the process's logger at `level`. Without a reader on
    /// the fifo (containerd gone), lines are dropped.
    pub fn install(level: log::LevelFilter) -> Result<(), String> {
        let file = open_log_fifo("log")?;
        log::set_boxed_logger(Box::new(LineLogger {
            file: Mutex::new(file),
        }))
        .map_err(|e| format!("installing the logger: {e}"))?;
        log::set_max_level(level);
        Ok(())
    }
}

/// One log line, newline included: the message quoted, with `\`, `"` and
/// line breaks escaped so that it stays one line.
pub fn format_line(time: &str, level: log::Level, msg: &str) -> String {
    let mut line = format!(
        "time=\"{time}\" level={} msg=\"",
        level.as_str().to_lowercase()
    );
    for c in msg.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '"' => line.push_str("\\\""),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
    line.push_str("\"\n");
    line
}

impl log::Log for LineLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let time = now.format(&Rfc3339).unwrap_or_else(|_| now.to_string());
        let line = format_line(&time, record.level(), &record.args().to_string());
        // A lost log line is not worth failing for (containerd may have
        // closed the fifo); a poisoned lock still guards a usable file.
        let mut file = match self.file.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Whether containerd runs the shim to serve (not for `start` or `delete`):
/// the action is the one argument that is not a flag or a flag's value.
pub fn is_serving(args: &[String]) -> bool {
    const BOOL_FLAGS: [&str; 4] = ["-debug", "-v", "-version", "-info"];
    let mut action = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with('-') {
            if !BOOL_FLAGS.contains(&a.as_str()) && !a.contains('=') {
                it.next();
            }
        } else {
            action = Some(a.as_str());
        }
    }
    !matches!(action, Some("start") | Some("delete"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn one_line_whatever_the_message() {
        let l = format_line("T", log::Level::Warn, "a \"b\"\nc\\d");
        assert_eq!(l, "time=\"T\" level=warn msg=\"a \\\"b\\\"\\nc\\\\d\"\n");
        assert_eq!(l.matches('\n').count(), 1);
    }

    #[test]
    fn a_fifo_without_reader_is_not_waited_for() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("log");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let path = p.to_str().expect("utf-8");
        assert!(open_log_fifo(path).expect("no reader").is_none());
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .expect("reader");
        let mut w = open_log_fifo(path).expect("open").expect("a reader");
        w.write_all(b"x\n").expect("write");
        let flags = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).expect("flags");
        assert_eq!(flags & libc::O_NONBLOCK, 0, "blocking again");
        drop(reader);
    }

    #[test]
    fn serving_is_told_from_start_and_delete() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(!is_serving(&v("-namespace n -address a -id x start")));
        assert!(!is_serving(&v("-debug -namespace n -id x delete")));
        assert!(is_serving(&v("-namespace n -id start -socket s")));
        assert!(is_serving(&v("-namespace n -id delete -address a -debug")));
    }
}
