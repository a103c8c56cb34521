//! Misbehaviour on demand: the [`Fault`]s that replace the answer to `/agent/*`
//! requests, the next one to apply, how `POST /admin/fault` spells them, and the reply
//! each makes, with the generated body of the huge ones.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use serde_json::{json, Value};

use super::reply::{error, Reply};
use super::state::Shared;
use super::DEFAULT_HUGE;

/// A misbehaviour injected in place of the normal answer to one `/agent/*` request.
///
/// The request is always read whole (and logged) before the fault is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a short JSON error body.
    Status(u16),
    /// Answer with this status (meant for 429 or 503) and `Retry-After: N` (seconds).
    RetryAfter(u16, u64),
    /// Answer 200 with a body that is not JSON (`Content-Type` still says JSON).
    Garbage,
    /// Answer 200 with a body of exactly N bytes and a `Content-Length`, generated while
    /// it is sent (never held in memory). The body is valid JSON padded with spaces
    /// inside a string (`{"status":0,"jobs":[],"pad":"   …"}`), so only its size is wrong.
    HugeBody(usize),
    /// Same body as [`Fault::HugeBody`], sent with `Transfer-Encoding: chunked` and no
    /// `Content-Length`, so the client can only notice the size by counting.
    HugeChunked(usize),
    /// Read the request, send nothing for that long, then close the connection.
    Stall(Duration),
    /// Read the request and close the connection without any answer.
    Close,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(code) => write!(f, "status {code}"),
            Fault::RetryAfter(code, secs) => write!(f, "status {code} retry-after {secs}s"),
            Fault::Garbage => write!(f, "garbage"),
            Fault::HugeBody(n) => write!(f, "huge body {n} B"),
            Fault::HugeChunked(n) => write!(f, "huge chunked body {n} B"),
            Fault::Stall(d) => write!(f, "stall {:.1}s", d.as_secs_f64()),
            Fault::Close => write!(f, "close"),
        }
    }
}

impl Shared {
    /// The fault for the next protocol request: queued ones first, then the sticky one.
    pub(super) fn next_fault(&self) -> Option<Fault> {
        let mut st = self.state();
        st.faults.pop_front().or_else(|| st.sticky.clone())
    }
}

/// The reply for an injected fault.
pub(super) fn fault_reply(fault: &Fault) -> Reply {
    match fault {
        Fault::Status(code) => error(*code, format!("injected fault: HTTP {code}")),
        Fault::RetryAfter(code, secs) => Reply::Json(
            *code,
            json!({"status": 1, "error": format!("injected fault: HTTP {code}, retry after {secs} s")}),
            vec![("Retry-After".to_string(), secs.to_string())],
        ),
        Fault::Garbage => Reply::Text(
            200,
            "<html>this is { not \"json\" at all".to_string(),
            "application/json",
        ),
        Fault::HugeBody(n) => Reply::Huge(*n, false),
        Fault::HugeChunked(n) => Reply::Huge(*n, true),
        Fault::Stall(d) => Reply::Stall(*d),
        Fault::Close => Reply::Close,
    }
}

/// The body of a `HugeBody` fault: valid JSON of exactly `len` bytes, padded with
/// spaces inside a string, generated as it is read.
pub(super) struct HugeBody {
    len: usize,
    pos: usize,
}

impl HugeBody {
    const HEAD: &'static [u8] = br#"{"status":0,"jobs":[],"pad":""#;
    const TAIL: &'static [u8] = br#""}"#;

    pub(super) fn new(len: usize) -> HugeBody {
        HugeBody { len, pos: 0 }
    }

    fn byte_at(&self, i: usize) -> u8 {
        let (head, tail) = (Self::HEAD, Self::TAIL);
        if self.len < head.len() + tail.len() {
            b' '
        } else if i < head.len() {
            head[i]
        } else if i >= self.len - tail.len() {
            tail[i - (self.len - tail.len())]
        } else {
            b' '
        }
    }
}

impl Read for HugeBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len - self.pos);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = self.byte_at(self.pos + k);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Parses the `fault` of a `POST /admin/fault` body.
pub(super) fn parse_fault(body: &Value) -> Result<Fault, String> {
    let seconds = match body.get("seconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() && s < 1e9 => Some(s),
            _ => {
                return Err(format!(
                    "\"seconds\" must be a non-negative number, got {v}"
                ))
            }
        },
    };
    let status_field = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|c| (100..=999).contains(c)) {
            Some(c) => Some(c as u16),
            None => return Err(format!("\"status\" must be an HTTP status, got {v}")),
        },
    };
    let name = match body.get("fault") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("\"fault\" must be a string or null, got {other}")),
        None => return Err("missing \"fault\"".to_string()),
    };
    let code = name.parse::<u16>().ok().filter(|c| (100..=999).contains(c));
    Ok(match (name.as_str(), code) {
        (_, Some(code)) => match seconds {
            Some(s) => Fault::RetryAfter(code, s.round() as u64),
            None => Fault::Status(code),
        },
        ("retry-after", _) => Fault::RetryAfter(
            status_field.unwrap_or(503),
            seconds.map_or(5, |s| s.round() as u64),
        ),
        ("garbage", _) => Fault::Garbage,
        ("huge" | "huge-chunked", _) => {
            let bytes = match body.get("bytes") {
                None | Some(Value::Null) => DEFAULT_HUGE,
                Some(v) => match v.as_u64() {
                    Some(n) => usize::try_from(n).map_err(|_| "\"bytes\" too large".to_string())?,
                    None => return Err(format!("\"bytes\" must be a count, got {v}")),
                },
            };
            if name == "huge" {
                Fault::HugeBody(bytes)
            } else {
                Fault::HugeChunked(bytes)
            }
        }
        ("stall", _) => Fault::Stall(Duration::from_secs_f64(seconds.unwrap_or(60.0))),
        ("close", _) => Fault::Close,
        _ => return Err(format!("unknown fault {name:?}")),
    })
}
