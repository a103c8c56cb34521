//! Jobs from status answers (PROTOCOL.md section 7): validation into a closed
//! `Job` type, error codes, and the job journal's bookkeeping. Pure: executing a
//! job that touches the host belongs to the edge.

use crate::addr::{self, ServerAddr};
use crate::limits::Limits;
use crate::meta::{JobRecord, Meta};
use serde_json::Value;

/// Longest job id accepted.
pub const JOB_ID_BYTES_MAX: usize = 128;

/// `errcode` values of section 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrCode {
    Success = 0,
    Invalid = 1,
    Internal = 9,
}

/// A validated job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// `config`: replace the server-given list and/or set the step (already clamped).
    Config {
        svrlist: Option<Vec<ServerAddr>>,
        step_s: Option<u64>,
    },
    /// A known action that this build does not carry out yet.
    Unsupported { action: String },
}

/// A job that could not be validated. Without an id it cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: Option<String>,
    pub message: String,
}

const KNOWN_ACTIONS: [&str; 7] = [
    "install",
    "upgrade",
    "uninstall",
    "restart",
    "stop",
    "start",
    "config",
];

/// Reads the id of a job, if it has a usable one.
pub fn job_id(value: &Value) -> Option<String> {
    match value.get("id") {
        Some(Value::String(id))
            if !id.is_empty()
                && id.len() <= JOB_ID_BYTES_MAX
                && !id.chars().any(char::is_control) =>
        {
            Some(id.clone())
        }
        _ => None,
    }
}

/// Validates one job of a status answer.
pub fn parse_job(value: &Value, limits: &Limits) -> Result<(String, Job), Rejected> {
    let id = job_id(value);
    let reject = |message: String| Rejected {
        id: id.clone(),
        message,
    };
    let Value::Object(map) = value else {
        return Err(reject(format!(
            "job is {}, not an object",
            crate::wire::kind(value)
        )));
    };
    let Some(id_text) = id.clone() else {
        return Err(reject(match map.get("id") {
            None => "job has no id".to_string(),
            Some(_) => {
                format!("job id must be a string of 1 to {JOB_ID_BYTES_MAX} printable characters")
            }
        }));
    };
    let action = match map.get("action") {
        Some(Value::String(action)) => action.as_str(),
        Some(other) => return Err(reject(format!("action is {}", crate::wire::kind(other)))),
        None => return Err(reject("job has no action".to_string())),
    };
    let job = match action {
        "config" => parse_config(map, limits).map_err(reject)?,
        known if KNOWN_ACTIONS.contains(&known) => Job::Unsupported {
            action: known.to_string(),
        },
        unknown => {
            let shown: String = unknown.chars().take(64).collect();
            return Err(reject(format!("unknown action {shown:?}")));
        }
    };
    Ok((id_text, job))
}

fn parse_config(map: &serde_json::Map<String, Value>, limits: &Limits) -> Result<Job, String> {
    let svrlist = match map.get("svrlist") {
        None | Some(Value::Null) => None,
        Some(Value::String(list)) => Some(addr::parse_list(list).map_err(|e| e.to_string())?),
        Some(Value::Array(items)) => {
            let mut joined = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => joined.push(s.as_str()),
                    other => return Err(format!("svrlist entry is {}", crate::wire::kind(other))),
                }
            }
            Some(addr::parse_list(&joined.join(",")).map_err(|e| e.to_string())?)
        }
        Some(other) => return Err(format!("svrlist is {}", crate::wire::kind(other))),
    };
    let step_s = match map.get("step") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            if let Some(step) = n.as_u64() {
                Some(step.clamp(limits.step_min_s, limits.step_max_s))
            } else if n.as_i64().is_some() {
                return Err(format!("step {n} is negative"));
            } else {
                return Err(format!("step {n} is not a whole number of seconds"));
            }
        }
        Some(other) => return Err(format!("step is {}", crate::wire::kind(other))),
    };
    if svrlist.is_none() && step_s.is_none() {
        return Err("config job sets neither svrlist nor step".to_string());
    }
    Ok(Job::Config { svrlist, step_s })
}

/// The journal entry of a job already executed, if any.
pub fn find_record<'m>(meta: &'m mut Meta, id: &str) -> Option<&'m mut JobRecord> {
    meta.jobs.iter_mut().find(|record| record.id == id)
}

/// Appends a result to the journal, then trims it to `remembered` entries: delivered
/// results go first, oldest first; an undelivered one only when nothing else is left.
/// Returns how many undelivered results had to be dropped.
pub fn record_result(
    meta: &mut Meta,
    id: String,
    errcode: u32,
    message: String,
    remembered: usize,
) -> usize {
    meta.jobs.push(JobRecord {
        id,
        errcode,
        message,
        delivered: false,
    });
    let mut dropped_undelivered = 0;
    while meta.jobs.len() > remembered.max(1) {
        match meta.jobs.iter().position(|r| r.delivered) {
            Some(oldest_delivered) => {
                meta.jobs.remove(oldest_delivered);
            }
            None => {
                meta.jobs.remove(0);
                dropped_undelivered += 1;
            }
        }
    }
    dropped_undelivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(job: Value, expected: Result<Job, &str>) {
        let got = parse_job(&job, &Limits::default());
        match expected {
            Ok(want) => assert_eq!(got.map(|(_, j)| j), Ok(want), "{job}"),
            Err(part) => {
                let err = got.expect_err(&job.to_string());
                assert!(
                    err.message.contains(part),
                    "{job}: {} lacks {part}",
                    err.message
                );
            }
        }
    }

    #[test]
    fn config_jobs() {
        let step = |s| {
            Ok(Job::Config {
                svrlist: None,
                step_s: Some(s),
            })
        };
        check(json!({"id": "1", "action": "config", "step": 60}), step(60));
        check(json!({"id": "1", "action": "config", "step": 0}), step(1));
        check(
            json!({"id": "1", "action": "config", "step": 999_999}),
            step(86_400),
        );
        check(
            json!({"id": "1", "action": "config", "step": -5}),
            Err("negative"),
        );
        check(
            json!({"id": "1", "action": "config", "step": 1.5}),
            Err("whole number"),
        );
        check(
            json!({"id": "1", "action": "config", "step": "60"}),
            Err("step is a string"),
        );
        check(json!({"id": "1", "action": "config"}), Err("neither"));
        check(
            json!({"id": "1", "action": "config", "svrlist": "a:1, b:2"}),
            Ok(Job::Config {
                svrlist: Some(addr::parse_list("a:1,b:2").expect("valid")),
                step_s: None,
            }),
        );
        check(
            json!({"id": "1", "action": "config", "svrlist": ["a:1", "b:2"]}),
            Ok(Job::Config {
                svrlist: Some(addr::parse_list("a:1,b:2").expect("valid")),
                step_s: None,
            }),
        );
        check(
            json!({"id": "1", "action": "config", "svrlist": "a:99999"}),
            Err("bad port"),
        );
    }

    #[test]
    fn malformed_jobs_are_rejected_with_a_reason() {
        check(json!({"action": "config"}), Err("no id"));
        check(
            json!({"id": 7, "action": "config"}),
            Err("job id must be a string"),
        );
        check(json!({"id": "", "action": "config"}), Err("job id must be"));
        check(
            json!({"id": "x".repeat(200), "action": "config"}),
            Err("job id must be"),
        );
        check(json!({"id": "1"}), Err("no action"));
        check(json!({"id": "1", "action": 3}), Err("action is a number"));
        check(
            json!({"id": "1", "action": "reboot"}),
            Err("unknown action \"reboot\""),
        );
        check(json!([1]), Err("not an object"));
        check(
            json!({"id": "1", "action": "install"}),
            Ok(Job::Unsupported {
                action: "install".into(),
            }),
        );
        let rejected = parse_job(&json!({"id": "k", "action": 1}), &Limits::default());
        assert_eq!(rejected.expect_err("bad").id.as_deref(), Some("k"));
    }

    #[test]
    fn journal_is_bounded_and_keeps_undelivered_results_longest() {
        let mut meta = Meta::new("sn".into(), String::new(), 600);
        for i in 0..5 {
            record_result(&mut meta, format!("d{i}"), 0, "success".into(), 4);
            if let Some(r) = find_record(&mut meta, &format!("d{i}")) {
                r.delivered = true;
            }
        }
        assert_eq!(meta.jobs.len(), 4);
        for i in 0..3 {
            assert_eq!(
                record_result(&mut meta, format!("u{i}"), 1, "x".into(), 4),
                0
            );
        }
        let ids: Vec<&str> = meta.jobs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["d4", "u0", "u1", "u2"]);
        assert_eq!(record_result(&mut meta, "u3".into(), 1, "x".into(), 4), 0);
        assert_eq!(record_result(&mut meta, "u4".into(), 1, "x".into(), 4), 1);
        assert_eq!(meta.jobs[0].id, "u1");
    }
}
