//! The request log: every request as it was read ([`Request`]), completed with its
//! answer, bounded by entries and by body bytes; and one-line summaries for people.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::faults::Fault;
use super::state::{lock, Shared};
use super::{LOG_MAX_BODY_BYTES, LOG_MAX_ENTRIES};

/// Which part of the server a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/agent/...`: the wire protocol; faults apply here only.
    Protocol,
    /// `/admin` and `/admin/...`.
    Admin,
    /// `/files/...`.
    File,
    /// Anything else (answered 404).
    Other,
}

/// One logged request. Entries are appended when a request has been read, and
/// completed (`fault`, `status`, `response`) once its answer is decided.
#[derive(Clone, Debug)]
pub struct Request {
    /// Sequence number, from 1, in order of arrival.
    pub seq: u64,
    /// Protocol, admin, file or other.
    pub kind: Kind,
    /// When the request was taken from the server (monotonic clock).
    pub received: Instant,
    /// Same moment, wall clock.
    pub wall: SystemTime,
    /// Client address, if known.
    pub remote: Option<SocketAddr>,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without the query string, e.g. `/agent/status`.
    pub path: String,
    /// Query string without the `?`, if any.
    pub query: Option<String>,
    /// Every request header, in order, as sent.
    pub headers: Vec<(String, String)>,
    /// `X-Boot-Key` header, if present.
    pub boot_key: Option<String>,
    /// `X-Boot-Timestamp` header, if present.
    pub boot_timestamp: Option<String>,
    /// `X-Boot-Signature` header, if present.
    pub boot_signature: Option<String>,
    /// Raw body, cut at [`LOG_BODY_CAP`](super::LOG_BODY_CAP) bytes (see `body_len`).
    pub body: Vec<u8>,
    /// Number of body bytes read: the body's length, or `MAX_BODY + 1` when it was
    /// larger than [`MAX_BODY`](super::MAX_BODY) (reading stops there).
    pub body_len: usize,
    /// The body parsed as JSON, when it was JSON.
    pub json: Option<Value>,
    /// The fault injected instead of the normal answer, if any.
    pub fault: Option<Fault>,
    /// HTTP status answered; 0 while undecided, or when no answer was sent
    /// (a `Stall` or `Close` fault).
    pub status: u16,
    /// JSON body answered, for protocol requests answered with JSON.
    pub response: Option<Value>,
}

impl Request {
    /// Value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for `/admin` requests.
    pub fn is_admin(&self) -> bool {
        self.kind == Kind::Admin
    }

    /// The body's `agentsn`, if it has one.
    pub fn agentsn(&self) -> Option<&str> {
        self.json.as_ref()?.get("agentsn")?.as_str()
    }
}

/// Callback run for every request once its answer is decided (see
/// [`RefServer::on_request`](super::RefServer::on_request)).
pub type Observer = Arc<dyn Fn(&Request) + Send + Sync + 'static>;

impl Shared {
    /// Appends a request to the log, dropping the oldest entries beyond the bounds.
    pub(super) fn log_request(&self, mut entry: Request) -> u64 {
        let mut st = self.state();
        st.next_seq += 1;
        entry.seq = st.next_seq;
        st.log_body_bytes += entry.body.len();
        st.log.push_back(entry);
        while st.log.len() > LOG_MAX_ENTRIES
            || (st.log_body_bytes > LOG_MAX_BODY_BYTES && st.log.len() > 1)
        {
            if let Some(old) = st.log.pop_front() {
                st.log_body_bytes -= old.body.len();
            }
        }
        st.next_seq
    }

    /// Records the answer decided for a logged request, then runs the observer.
    pub(super) fn log_answer(&self, seq: u64, status: u16, response: Option<Value>) {
        let observer = lock(&self.observer).clone();
        let snapshot = {
            let mut st = self.state();
            let entry = st.log.iter_mut().rev().find(|r| r.seq == seq);
            match entry {
                Some(r) => {
                    r.status = status;
                    r.response = response;
                    observer.as_ref().map(|_| r.clone())
                }
                None => None,
            }
        };
        if let (Some(f), Some(r)) = (observer, snapshot) {
            f(&r);
        }
    }
}

/// `HH:MM:SS` (UTC) of a wall-clock time.
pub fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A one-line, human-readable summary of a protocol request, e.g.
/// `12:00:01 register  edge-17 sn=bfdcc18c… → 200 step=10`.
pub fn describe(r: &Request) -> String {
    let what = match r.path.as_str() {
        "/agent/register" => "register",
        "/agent/status" => "status",
        p => p,
    };
    let field = |k: &str| r.json.as_ref().and_then(|j| j.get(k));
    let hostname = field("hostname").and_then(Value::as_str).unwrap_or("?");
    let sn = r.agentsn().map_or_else(|| "?".to_string(), short_sn);
    let mut line = format!("{} {:<9} {} sn={}", clock(r.wall), what, hostname, sn);
    if what == "status" {
        let count = |k: &str| field(k).and_then(Value::as_array).map_or(0, Vec::len);
        line += &format!(" agents={} jobs={}", count("agents"), count("jobs"));
        if count("events") > 0 {
            line += &format!(" events={}", count("events"));
        }
    }
    match (&r.fault, r.status) {
        (Some(f), _) => line += &format!(" → FAULT {f}"),
        (None, 0) => line += " → (no answer)",
        (None, code) => line += &format!(" → {code}"),
    }
    if let Some(resp) = &r.response {
        if let Some(new_sn) = resp.get("agentsn").and_then(Value::as_str) {
            if Some(new_sn) != r.agentsn() {
                line += &format!(" new sn={}", short_sn(new_sn));
            }
        }
        if let Some(step) = resp.get("step") {
            line += &format!(" step={step}");
        }
        if let Some(jobs) = resp.get("jobs").and_then(Value::as_array) {
            if !jobs.is_empty() {
                line += &format!(" handed out {} job(s)", jobs.len());
            }
        }
        if let (None, Some(err)) = (&r.fault, resp.get("error").and_then(Value::as_str)) {
            line += &format!(" ({err})");
        }
    }
    line
}

/// The first 8 characters of an SN, with an ellipsis.
fn short_sn(sn: &str) -> String {
    match sn.char_indices().nth(8) {
        Some((i, _)) => format!("{}…", &sn[..i]),
        None => sn.to_string(),
    }
}
