//! Wire types of the register and status exchanges (docs/protocol.md sections 2 and 3).
//!
//! Requests are plain structs serialised in the field order of the protocol.
//! Answers are read field by field from a `serde_json::Value`, so that an unknown
//! field is ignored, an extension field of the wrong type is dropped with a reason,
//! and only a body that is not the expected JSON object fails the exchange.

use crate::report_event::{split_exit, Origin, ReportEvent};
use serde::Serialize;
use serde_json::Value;
use std::fmt;

pub use crate::message::{kind, one_line, MESSAGE_BYTES_MAX};

/// Longest agent serial number accepted from a server (and from the metafile).
pub const SN_BYTES_MAX: usize = 128;

/// Longest `tags`, `key` or `secret` accepted from a server.
pub const FIELD_BYTES_MAX: usize = 4096;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    pub os: String,
    pub arch: String,
    pub kernel: String,
    pub cpus: u32,
    pub mem_kb: u64,
    pub boot_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegisterRequest<'a> {
    pub hostname: &'a str,
    pub agentsn: &'a str,
    pub version: &'a str,
    pub host: &'a HostInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusRequest<'a> {
    pub hostname: &'a str,
    pub agentsn: &'a str,
    pub version: &'a str,
    pub uptime: u64,
    pub timestamp: i64,
    pub step: u64,
    /// Left out in lazy mode while nothing in it changed (section 3, `report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentStatus>>,
    pub jobs: Vec<JobResult<'a>>,
    pub events: Vec<ReportEvent>,
}

/// One child agent in a status report (section 3); none exist before supervision.
/// The health fields (section 6, "Health") are left out for a child without checks.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AgentStatus {
    pub name: String,
    pub version: String,
    pub status: &'static str,
    pub uptime: u64,
    pub pid: u32,
    pub restarts: u32,
    /// With `notify`: false until `READY=1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// `"ok"` or `"unhealthy"`, with a health check configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<&'static str>,
    /// The last `STATUS=` of sd_notify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
}

/// An event of a report (section 3, `events`), in its wire form: the fields in
/// the order reports have always had them (alphabetical), absent ones left out.
impl Serialize for ReportEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            ReportEvent::Child(event) => {
                let (code, signal) = split_exit(event.exit);
                WireEvent {
                    code,
                    count: event.count,
                    event: event.kind.as_str(),
                    message: &event.message,
                    name: Some(&event.name),
                    origin: match event.origin {
                        Origin::Agent => None,
                        Origin::Local => Some("local"),
                    },
                    signal,
                    time: event.time,
                    what: None,
                }
            }
            ReportEvent::Dropped {
                time,
                count,
                what,
                message,
            } => WireEvent {
                code: None,
                count: Some(*count),
                event: "dropped",
                message,
                name: None,
                origin: None,
                signal: None,
                time: *time,
                what: Some(what.as_str()),
            },
        };
        wire.serialize(serializer)
    }
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    /// Kills of worker processes coalesced into this event, or how many were dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    event: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct JobResult<'a> {
    pub id: &'a str,
    pub errcode: u32,
    pub message: &'a str,
}

/// The register answer, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterAnswer {
    pub status: i64,
    pub agentsn: Option<String>,
    pub tags: Option<String>,
    pub credentials: Option<(String, String)>,
    pub step_s: Option<u64>,
    /// Fields that were present but unusable, for one log line each.
    pub ignored: Vec<String>,
}

/// The status answer: the jobs, each still unvalidated, and the report mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusAnswer {
    pub jobs: Vec<Value>,
    /// `report`: `Some(true)` for `"lazy"`, `Some(false)` for `"full"`.
    pub lazy: Option<bool>,
    /// A `report` that was present but unusable, for one log line.
    pub ignored: Option<String>,
}

/// A body that is not the JSON object of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAnswer(pub String);

impl fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad answer: {}", self.0)
    }
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, BadAnswer> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(BadAnswer(format!(
            "expected a JSON object, got {}",
            kind(&other)
        ))),
        Err(err) => Err(BadAnswer(format!("not JSON ({err})"))),
    }
}

/// Reads a register answer. `status` is required and must be an integer.
pub fn parse_register_answer(body: &[u8]) -> Result<RegisterAnswer, BadAnswer> {
    let map = parse_object(body)?;
    let status = match map.get("status") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| BadAnswer(format!("status {n} is not an integer")))?,
        Some(other) => return Err(BadAnswer(format!("status is {}", kind(other)))),
        None => return Err(BadAnswer("no status field".to_string())),
    };
    let mut answer = RegisterAnswer {
        status,
        ..RegisterAnswer::default()
    };
    answer.agentsn = bounded_string(&map, "agentsn", SN_BYTES_MAX, &mut answer.ignored)
        .filter(|sn| !sn.is_empty());
    answer.tags = bounded_string(&map, "tags", FIELD_BYTES_MAX, &mut answer.ignored);
    let key = bounded_string(&map, "key", FIELD_BYTES_MAX, &mut answer.ignored);
    let secret = bounded_string(&map, "secret", FIELD_BYTES_MAX, &mut answer.ignored);
    answer.credentials = match (key, secret) {
        (Some(key), Some(secret)) if !key.is_empty() && !secret.is_empty() => Some((key, secret)),
        (None, None) => None,
        _ => {
            answer
                .ignored
                .push("key without secret (or the reverse)".to_string());
            None
        }
    };
    answer.step_s = match map.get("step") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| s > 0) => n.as_u64(),
        Some(other) => {
            answer
                .ignored
                .push(format!("step {other} is not a positive integer"));
            None
        }
    };
    Ok(answer)
}

/// Reads a status answer. `status` is ignored, as in the original API; `jobs`, when
/// present, must be an array.
pub fn parse_status_answer(body: &[u8]) -> Result<StatusAnswer, BadAnswer> {
    let mut map = parse_object(body)?;
    let jobs = match map.remove("jobs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(jobs)) => jobs,
        Some(other) => return Err(BadAnswer(format!("jobs is {}", kind(&other)))),
    };
    let (lazy, ignored) = match map.get("report") {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(mode)) if mode == "lazy" => (Some(true), None),
        Some(Value::String(mode)) if mode == "full" => (Some(false), None),
        Some(other) => {
            let shown: String = other.to_string().chars().take(64).collect();
            (
                None,
                Some(format!("report {shown} is not \"lazy\" or \"full\"")),
            )
        }
    };
    Ok(StatusAnswer {
        jobs,
        lazy,
        ignored,
    })
}

fn bounded_string(
    map: &serde_json::Map<String, Value>,
    field: &str,
    bytes_max: usize,
    ignored: &mut Vec<String>,
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= bytes_max && !s.chars().any(char::is_control) => {
            Some(s.clone())
        }
        Some(Value::String(s)) => {
            ignored.push(format!(
                "{field} ({} bytes, or control characters)",
                s.len()
            ));
            None
        }
        Some(other) => {
            ignored.push(format!("{field} is {}", kind(other)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_answer_full_and_minimal() {
        let a = parse_register_answer(
            br#"{"status":0,"agentsn":"dcb886e9-04ed-41bb-9c12-4d2de12cd59b","tags":"svc=ecs,cmpt=DB","key":"ak-1","secret":"s","step":60,"extra":[1]}"#,
        )
        .expect("parses");
        assert_eq!(a.status, 0);
        assert_eq!(
            a.agentsn.as_deref(),
            Some("dcb886e9-04ed-41bb-9c12-4d2de12cd59b")
        );
        assert_eq!(a.tags.as_deref(), Some("svc=ecs,cmpt=DB"));
        assert_eq!(a.credentials, Some(("ak-1".into(), "s".into())));
        assert_eq!(a.step_s, Some(60));
        assert!(a.ignored.is_empty());
        let a = parse_register_answer(br#"{"status":3}"#).expect("parses");
        assert_eq!((a.status, a.agentsn, a.step_s), (3, None, None));
    }

    #[test]
    fn register_answer_bad_extension_fields_are_dropped_not_fatal() {
        let a =
            parse_register_answer(br#"{"status":0,"step":-5,"tags":7,"key":"k"}"#).expect("parses");
        assert_eq!(a.step_s, None);
        assert_eq!(a.tags, None);
        assert_eq!(a.credentials, None);
        assert_eq!(a.ignored.len(), 3, "{:?}", a.ignored);
    }

    #[test]
    fn bad_bodies_are_named() {
        let check = |body: &[u8], part: &str| {
            let err = parse_register_answer(body)
                .expect_err("must fail")
                .to_string();
            assert!(err.contains(part), "{err} lacks {part}");
        };
        check(b"<html>", "not JSON");
        check(b"[1]", "expected a JSON object, got an array");
        check(b"{}", "no status");
        check(br#"{"status":"0"}"#, "status is a string");
        check(br#"{"status":0.5}"#, "not an integer");
        let deep = "[".repeat(10_000);
        check(deep.as_bytes(), "not JSON");
        let err = parse_status_answer(br#"{"jobs":{}}"#).expect_err("jobs object");
        assert!(err.to_string().contains("jobs is an object"));
        assert_eq!(
            parse_status_answer(br#"{"status":1}"#)
                .expect("ok")
                .jobs
                .len(),
            0
        );
    }

    #[test]
    fn messages_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        let long = one_line(&"x".repeat(10_000));
        assert_eq!(long.len(), MESSAGE_BYTES_MAX + '…'.len_utf8());
        assert!(long.ends_with('…'));
        assert!(one_line(&"é".repeat(10_000)).len() <= MESSAGE_BYTES_MAX + 3);
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn events_keep_their_wire_form() {
        use crate::child::{EventKind, Exit};
        use crate::report_event::{ChildEvent, DroppedWhat};
        let text = |event: &ReportEvent| serde_json::to_string(event).expect("serialises");
        let mut exited = ChildEvent::new(9, "a", EventKind::Exited, "killed by signal 15".into());
        exited.exit = Some(Exit::Signal(15));
        assert_eq!(
            text(&ReportEvent::Child(exited)),
            r#"{"event":"exited","message":"killed by signal 15","name":"a","signal":15,"time":9}"#
        );
        let dropped = ReportEvent::Dropped {
            time: 5,
            count: 3,
            what: DroppedWhat::Results,
            message: "3 job result(s) dropped".into(),
        };
        assert_eq!(
            text(&dropped),
            r#"{"count":3,"event":"dropped","message":"3 job result(s) dropped","time":5,"what":"results"}"#
        );
    }

    #[test]
    fn status_request_keeps_protocol_field_order() {
        let req = StatusRequest {
            hostname: "h",
            agentsn: "sn",
            version: "v",
            uptime: 1,
            timestamp: 2,
            step: 600,
            agents: Some(Vec::new()),
            jobs: vec![JobResult {
                id: "j",
                errcode: 0,
                message: "success",
            }],
            events: Vec::new(),
        };
        let text = serde_json::to_string(&req).expect("serialises");
        assert_eq!(
            text,
            r#"{"hostname":"h","agentsn":"sn","version":"v","uptime":1,"timestamp":2,"step":600,"agents":[],"jobs":[{"id":"j","errcode":0,"message":"success"}],"events":[]}"#
        );
    }
}
