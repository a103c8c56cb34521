//! A child's health beyond its pid (docs/protocol.md section 6, "Health"): the
//! `health` settings of `agent.json` or a job, and the pure rule that judges a
//! heartbeat file. Pure: `now` is a parameter; the supervisor reads the file and
//! keeps the timers (`supervisor/health.rs`).
//!
//! A heartbeat is stale when the value in the file has not changed for the timeout,
//! measured on the monotonic clock from the last time a new value was seen (or from
//! the start), so a wall-clock jump never marks a child hung. The file is read once
//! per timeout while it is fresh: a child that stops writing is found between one
//! and two timeouts later. Content that is no value (empty, a write in progress,
//! unreadable) is no new value, and gets one more read a second later before the
//! child is judged.

use crate::wheel::Millis;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Largest `ready_timeout_s`, `watchdog_s` and `heartbeat_timeout_s` (a day).
pub const HEALTH_TIMEOUT_S_MAX: u64 = 86_400;
/// `ready_timeout_s` when left out.
pub const READY_TIMEOUT_DEFAULT_S: u64 = 30;
/// `heartbeat_timeout_s` when left out.
pub const HEARTBEAT_TIMEOUT_DEFAULT_S: u64 = 60;
/// Longest `heartbeat_file` path.
pub const HEARTBEAT_PATH_BYTES_MAX: usize = 255;
/// Bytes read of a heartbeat file: a Unix time and a newline fit many times over.
pub const HEARTBEAT_READ_BYTES_MAX: usize = 64;
/// After a read that found no value at the deadline, the one more read comes this
/// much later.
pub const HEARTBEAT_RETRY_MS: u64 = 1_000;

/// The `health` settings; every part optional, none by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSpec {
    /// The child gets `NOTIFY_SOCKET` and is not ready until `READY=1`.
    pub notify: bool,
    /// With `notify`: not ready this long after the start is unhealthy.
    pub ready_timeout_ms: u64,
    /// No `WATCHDOG=1` for this long is unhealthy (`WATCHDOG_USEC`).
    pub watchdog_ms: Option<u64>,
    pub heartbeat: Option<HeartbeatSpec>,
}

/// A heartbeat file and its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatSpec {
    /// Relative to the version directory, without `..`.
    pub file: PathBuf,
    pub timeout_ms: u64,
}

impl HealthSpec {
    /// Reads `{"notify": true, "ready_timeout_s": 30, "watchdog_s": 20,
    /// "heartbeat_file": "heartbeat", "heartbeat_timeout_s": 60}`; unknown keys
    /// and bad values are errors naming the field.
    pub fn from_json(value: &Value) -> Result<HealthSpec, String> {
        Self::read(value).map_err(|message| crate::wire::one_line(&message))
    }

    fn read(value: &Value) -> Result<HealthSpec, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "health is {}, not an object",
                crate::wire::kind(value)
            ));
        };
        let seconds = |key: &str, value: &Value| -> Result<u64, String> {
            match value.as_u64() {
                Some(n) if (1..=HEALTH_TIMEOUT_S_MAX).contains(&n) => Ok(n * 1000),
                _ => Err(format!(
                    "health.{key} must be a whole number of seconds from 1 to {HEALTH_TIMEOUT_S_MAX}, not {value}"
                )),
            }
        };
        let mut spec = HealthSpec {
            ready_timeout_ms: READY_TIMEOUT_DEFAULT_S * 1000,
            ..HealthSpec::default()
        };
        let mut file = None;
        let mut heartbeat_timeout_ms = None;
        for (key, value) in map {
            match key.as_str() {
                "notify" => {
                    spec.notify = value.as_bool().ok_or_else(|| {
                        format!("health.notify must be true or false, not {value}")
                    })?
                }
                "ready_timeout_s" => spec.ready_timeout_ms = seconds(key, value)?,
                "watchdog_s" => spec.watchdog_ms = Some(seconds(key, value)?),
                "heartbeat_timeout_s" => heartbeat_timeout_ms = Some(seconds(key, value)?),
                "heartbeat_file" => match value {
                    Value::String(path) => file = Some(heartbeat_path(path)?),
                    other => {
                        return Err(format!(
                            "health.heartbeat_file is {}, not a string",
                            crate::wire::kind(other)
                        ))
                    }
                },
                other => {
                    let shown: String = other.chars().take(64).collect();
                    return Err(format!("unknown health setting {shown:?}"));
                }
            }
        }
        match (file, heartbeat_timeout_ms) {
            (Some(file), timeout) => {
                spec.heartbeat = Some(HeartbeatSpec {
                    file,
                    timeout_ms: timeout.unwrap_or(HEARTBEAT_TIMEOUT_DEFAULT_S * 1000),
                })
            }
            (None, Some(_)) => {
                return Err("health.heartbeat_timeout_s needs health.heartbeat_file".into())
            }
            (None, None) => {}
        }
        Ok(spec)
    }

    /// Whether any check is configured (`agents[].health` is reported then).
    pub fn is_set(&self) -> bool {
        self.notify || self.watchdog_ms.is_some() || self.heartbeat.is_some()
    }
}

/// A relative path inside the version directory: no `..`, not absolute, not empty.
fn heartbeat_path(path: &str) -> Result<PathBuf, String> {
    let shown: String = path.chars().take(80).collect();
    if path.is_empty() || path.len() > HEARTBEAT_PATH_BYTES_MAX || path.contains('\0') {
        return Err(format!(
            "health.heartbeat_file {shown:?}: empty, NUL, or longer than {HEARTBEAT_PATH_BYTES_MAX} bytes"
        ));
    }
    let inside = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "health.heartbeat_file {shown:?} must be a path inside the version directory"
        ));
    }
    Ok(PathBuf::from(path))
}

/// What one read of a heartbeat file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// No such file.
    Missing,
    /// Empty, not a number, or unreadable: a write in progress, not a value.
    NoValue,
    /// The value, as written (trimmed).
    Value(Vec<u8>),
}

impl Read {
    /// Judges the first bytes of a heartbeat file: decimal seconds, optionally with
    /// a fraction, surrounded by white space.
    pub fn of_content(content: &[u8]) -> Read {
        let value = content.trim_ascii();
        let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
            Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
            None => (value, None),
        };
        let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
        if digits(whole) && fraction.is_none_or(digits) {
            Read::Value(value.to_vec())
        } else {
            Read::NoValue
        }
    }
}

/// What the watch decides after a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read again at this time.
    CheckAt(Millis),
    /// Hung, for this reason.
    Stale(String),
}

/// The heartbeat of one run of a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatWatch {
    timeout_ms: u64,
    last: Option<Vec<u8>>,
    /// When a new value was last seen, or the start.
    changed_at: Millis,
    /// A read at the deadline found no value: the next one judges.
    retrying: bool,
}

impl HeartbeatWatch {
    /// The watch of a run that started at `started`.
    pub fn new(started: Millis, timeout_ms: u64) -> Self {
        HeartbeatWatch {
            timeout_ms,
            last: None,
            changed_at: started,
            retrying: false,
        }
    }

    /// When the first read is due.
    pub fn first_check(&self) -> Millis {
        self.changed_at.saturating_add(self.timeout_ms)
    }

    /// Takes a read made at `now`.
    pub fn observe(&mut self, read: Read, now: Millis) -> Verdict {
        let timeout_s = self.timeout_ms / 1000;
        match read {
            Read::Value(value) if self.last.as_ref() != Some(&value) => {
                self.last = Some(value);
                self.changed_at = now;
                self.retrying = false;
                Verdict::CheckAt(now.saturating_add(self.timeout_ms))
            }
            _ if now < self.changed_at.saturating_add(self.timeout_ms) => {
                Verdict::CheckAt(self.changed_at.saturating_add(self.timeout_ms))
            }
            Read::Value(_) => Verdict::Stale(format!("heartbeat unchanged for {timeout_s} s")),
            Read::NoValue | Read::Missing if !self.retrying => {
                self.retrying = true;
                Verdict::CheckAt(now.saturating_add(HEARTBEAT_RETRY_MS))
            }
            Read::Missing if self.last.is_none() => {
                Verdict::Stale(format!("no heartbeat file {timeout_s} s after the start"))
            }
            Read::Missing => Verdict::Stale(format!(
                "heartbeat file gone, no new value for {timeout_s} s"
            )),
            Read::NoValue => Verdict::Stale(format!(
                "heartbeat file holds no time, no new value for {timeout_s} s"
            )),
        }
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
