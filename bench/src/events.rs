//! When containerd made each container's record, from its own event stream
//! (`ctr events`): the storm launches every configuration with one
//! `ctr run -d`, and a launch's task latency is the time from its
//! container's `/containers/create` event (stamped by containerd when it
//! published it) to the command's exit, so that every configuration, the
//! peers included, has one measured the same way.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CONTAINER_CREATE: &str = "/containers/create";
const NAMESPACE_UPDATE: &str = "/namespaces/update";
/// The label the subscription probe sets on the bench's namespace.
pub const PROBE_LABEL: &str = "idshift-bench.events-probe";
/// How long the subscription may take to deliver its first event.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen {
    /// Container id -> when containerd published its record's creation.
    creates: HashMap<String, SystemTime>,
    /// Values of the probe label seen in `/namespaces/update` events.
    probes: HashSet<String>,
    /// The stream ended (`ctr events` exited).
    ended: bool,
}

/// A running `ctr events` subscription and what it has delivered.
pub struct ContainerCreates {
    child: Child,
    reader: Option<JoinHandle<()>>,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl ContainerCreates {
    /// Starts `events` (a `ctr ... events` command without its filters) and
    /// returns once containerd delivers events to it: `label(value)` sets
    /// the probe label (`ctr namespaces label NS key=value`) until an
    /// update carrying it arrives; the label is then removed.
    pub fn subscribe(
        mut events: Command,
        namespace: &str,
        label: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Self, String> {
        events
            .arg(format!("topic=={CONTAINER_CREATE:?}"))
            .arg(format!("topic=={NAMESPACE_UPDATE:?}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = events
            .spawn()
            .map_err(|e| format!("starting `ctr events`: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("`ctr events` has no stdout".into());
        };
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let reader = {
            let (seen, namespace) = (seen.clone(), namespace.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some(event) = Event::parse(&line) else {
                        continue;
                    };
                    let (lock, cond) = &*seen;
                    let Ok(mut s) = lock.lock() else { break };
                    match event.topic {
                        CONTAINER_CREATE if event.namespace == namespace => {
                            if let Some(id) = event.payload_str("id") {
                                s.creates.insert(id, event.at);
                            }
                        }
                        NAMESPACE_UPDATE => {
                            if let Some(v) = event.probe_label() {
                                s.probes.insert(v);
                            }
                        }
                        _ => {}
                    }
                    cond.notify_all();
                }
                if let Ok(mut s) = seen.0.lock() {
                    s.ended = true;
                }
                seen.1.notify_all();
            })
        };
        let mut me = ContainerCreates {
            child,
            reader: Some(reader),
            seen,
        };
        let deadline = std::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        for attempt in 0u32.. {
            let value = format!("{}-{attempt}", std::process::id());
            label(&value)?;
            let seen = me.wait(Duration::from_millis(250), |s| s.probes.contains(&value));
            if seen {
                break;
            }
            if me.ended() {
                return Err(me.failed("`ctr events` exited before delivering any event"));
            }
            if std::time::Instant::now() > deadline {
                return Err(me.failed(&format!(
                    "`ctr events` delivered no event in {} s (label {PROBE_LABEL} set on namespace {namespace})",
                    SUBSCRIBE_TIMEOUT.as_secs()
                )));
            }
        }
        label("")?;
        Ok(me)
    }

    /// The `/containers/create` times of `ids` (waiting up to `timeout` for
    /// those not delivered yet: a launch returns once containerd has
    /// published them, the stream may lag).
    pub fn of(&self, ids: &[&str], timeout: Duration) -> HashMap<String, SystemTime> {
        self.wait(timeout, |s| {
            ids.iter().all(|id| s.creates.contains_key(*id))
        });
        let Ok(s) = self.seen.0.lock() else {
            return HashMap::new();
        };
        ids.iter()
            .filter_map(|id| Some((id.to_string(), *s.creates.get(*id)?)))
            .collect()
    }

    /// Waits until `done` holds, the stream ends or `timeout` passes;
    /// whether `done` held.
    fn wait(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let (lock, cond) = &*self.seen;
        let Ok(guard) = lock.lock() else { return false };
        match cond.wait_timeout_while(guard, timeout, |s| !done(s) && !s.ended) {
            Ok((s, _)) => done(&s),
            Err(_) => false,
        }
    }

    fn ended(&self) -> bool {
        self.seen.0.lock().map(|s| s.ended).unwrap_or(true)
    }

    /// Stops the subscription; `why` with `ctr events`' exit status.
    fn failed(&mut self, why: &str) -> String {
        let status = self.stop();
        format!("subscribing to containerd's events: {why} ({status})")
    }

    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let status = match self.child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait: {e}"),
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }
}

impl Drop for ContainerCreates {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line of `ctr events`: `TIMESTAMP NAMESPACE TOPIC JSON`, the
/// timestamp as Go prints a UTC time (`2026-12-02 16:30:00.123456789 +0000
/// UTC`, trailing zeros of the fraction dropped).
#[derive(Debug)]
struct Event<'a> {
    at: SystemTime,
    namespace: &'a str,
    topic: &'a str,
    payload: serde_json::Value,
}

impl<'a> Event<'a> {
    fn parse(line: &'a str) -> Option<Event<'a>> {
        let mut parts = line.splitn(7, ' ');
        let (date, time, offset, _zone) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (namespace, topic) = (parts.next()?, parts.next()?);
        let payload = serde_json::from_str(parts.next().unwrap_or("{}")).ok()?;
        Some(Event {
            at: parse_time(date, time, offset)?,
            namespace,
            topic,
            payload,
        })
    }

    fn payload_str(&self, key: &str) -> Option<String> {
        Some(self.payload.get(key)?.as_str()?.to_string())
    }

    fn probe_label(&self) -> Option<String> {
        Some(
            self.payload
                .get("labels")?
                .get(PROBE_LABEL)?
                .as_str()?
                .to_string(),
        )
    }
}

/// `YYYY-MM-DD`, `HH:MM:SS[.fraction]`, `+hhmm`/`-hhmm` as a time.
fn parse_time(date: &str, time: &str, offset: &str) -> Option<SystemTime> {
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let (sign, hhmm) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    if hhmm.len() != 4 {
        return None;
    }
    let off = sign * (hhmm[..2].parse::<i64>().ok()? * 3600 + hhmm[2..].parse::<i64>().ok()? * 60);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, m, day) * 86400 + h * 3600 + min * 60 + s - off;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(t: SystemTime) -> (u64, u32) {
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        (d.as_secs(), d.subsec_nanos())
    }

    #[test]
    fn go_times_parse() {
        // date -u -d '2026-12-02 16:30:05' +%s = 1796229005
        let t = parse_time("2026-12-02", "16:30:05.1234", "+0000").expect("parses");
        assert_eq!(unix(t), (1796229005, 123_400_000));
        let t = parse_time("2026-12-02", "17:30:05", "+0100").expect("parses");
        assert_eq!(unix(t), (1796229005, 0));
        let t = parse_time("1970-01-01", "00:00:00.000000001", "+0000").expect("parses");
        assert_eq!(unix(t), (0, 1));
        // 2024 is a leap year: 2024-03-01 = 19783 days.
        let t = parse_time("2024-03-01", "00:00:00", "-0130").expect("parses");
        assert_eq!(unix(t), (19783 * 86400 + 5400, 0));
        for (d, t, o) in [
            ("2026-13-02", "16:30:05", "+0000"),
            ("2026-12-02", "16:30", "+0000"),
            ("2026-12-02", "16:30:05.1x", "+0000"),
            ("2026-12-02", "16:30:05.1234567891", "+0000"),
            ("2026-12-02", "16:30:05", "0000"),
        ] {
            assert_eq!(parse_time(d, t, o), None, "{d} {t} {o}");
        }
    }

    #[test]
    fn event_lines_parse() {
        let line = r#"2026-12-02 16:30:05.5 +0000 UTC idshift-bench /containers/create {"id":"s-1","image":"img","runtime":{"name":"io.containerd.runc.v2"}}"#;
        let e = Event::parse(line).expect("parses");
        assert_eq!((e.namespace, e.topic), ("idshift-bench", CONTAINER_CREATE));
        assert_eq!(e.payload_str("id").as_deref(), Some("s-1"));
        assert_eq!(unix(e.at), (1796229005, 500_000_000));
        let line = r#"2026-12-02 16:30:05 +0000 UTC idshift-bench /namespaces/update {"name":"idshift-bench","labels":{"idshift-bench.events-probe":"12-0"}}"#;
        let e = Event::parse(line).expect("parses");
        assert_eq!(e.probe_label().as_deref(), Some("12-0"));
        assert!(Event::parse("2026-12-02 16:30:05 +0000 UTC ns /t not-json").is_none());
        assert!(Event::parse("garbage").is_none());
    }
}
