//! The admin API: the `/admin/...` JSON endpoints (listed on `RefServer`) with which
//! a person or a script looks at agents and requests, queues jobs and sets faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::faults::parse_fault;
use super::files::percent_decode;
use super::reply::{error, ok_json, Reply};
use super::request_log::Request;
use super::state::{agent_view, Agent, AgentView, Shared, State};
use super::ADMIN_BODY_CAP;

/// `GET /admin`: the list of admin endpoints.
pub(super) fn admin_help() -> Reply {
    ok_json(json!({
        "endpoints": [
            "GET  /admin/agents",
            "POST /admin/jobs      {\"sn\": SN?, \"job\": {\"action\": ..., ...}}",
            "GET  /admin/requests?path=/agent/status&since=SEQ&limit=N",
            "GET  /admin/fault",
            "POST /admin/fault     {\"fault\": \"500\"|\"401\"|\"garbage\"|\"huge\"|\"huge-chunked\"|\"stall\"|\"close\"|\"retry-after\"|null, \"count\": N, \"seconds\": S, \"status\": CODE, \"bytes\": N, \"sticky\": BOOL}",
            "POST /admin/step      {\"step\": N|null}",
            "POST /admin/report    {\"report\": \"lazy\"|\"full\"|null}",
            "POST /admin/conflict  {\"sn\": SN|null}",
            "GET  /files/REL/PATH",
        ]
    }))
}

/// One agent as JSON.
fn agent_json(a: &AgentView) -> Value {
    json!({
        "sn": a.sn,
        "hostname": a.hostname,
        "version": a.version,
        "host": a.host,
        "previous_sn": a.previous_sn,
        "registrations": a.registrations,
        "reports": a.reports,
        "last_seen_s_ago": a.last_seen.elapsed().as_secs(),
        "last_report": a.last_report,
        "agents": a.agents,
        "lazy_reports": a.lazy_reports,
        "job_results": a.job_results,
        "events": a.events,
        "queued_jobs": a.queued_jobs,
    })
}

/// `GET /admin/agents`.
pub(super) fn admin_agents(shared: &Shared) -> Reply {
    let st = shared.state();
    let mut agents: Vec<(&String, &Agent)> = st.agents.iter().collect();
    agents.sort_by_key(|(_, a)| a.order);
    let list: Vec<Value> = agents
        .into_iter()
        .map(|(sn, a)| agent_json(&agent_view(&st, sn, a)))
        .collect();
    ok_json(Value::Array(list))
}

/// `POST /admin/jobs`.
pub(super) fn admin_jobs(shared: &Shared, body: &Value) -> Reply {
    let Some(job) = body.get("job").and_then(Value::as_object) else {
        return error(400, "expected {\"sn\": \"...\", \"job\": {...}}");
    };
    let mut job = job.clone();
    if !job.contains_key("id") {
        job.insert("id".to_string(), json!(new_uuid()));
    }
    let mut st = shared.state();
    let sn = match body.get("sn") {
        Some(Value::String(sn)) if !sn.is_empty() => sn.clone(),
        None | Some(Value::Null) => {
            if st.agents.len() != 1 {
                return error(
                    400,
                    format!("no \"sn\" given and {} agents known", st.agents.len()),
                );
            }
            match st.agents.keys().next() {
                Some(sn) => sn.clone(),
                None => return error(400, "no agent known"),
            }
        }
        Some(other) => return error(400, format!("\"sn\" must be a string, got {other}")),
    };
    let id = job.get("id").cloned().unwrap_or(Value::Null);
    let queue = st.queues.entry(sn.clone()).or_default();
    queue.push_back(Value::Object(job));
    let queued = queue.len();
    ok_json(json!({"status": 0, "sn": sn, "id": id, "queued": queued}))
}

/// Parses a query string into decoded key/value pairs.
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// Unix time in seconds (with fractions) of a `SystemTime`.
fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One logged request as JSON. Bodies up to [`ADMIN_BODY_CAP`] bytes are included, as
/// `json` when they parsed, else as `body` (text); larger ones are left out.
fn request_json(r: &Request, started: Instant) -> Value {
    let mut v = json!({
        "seq": r.seq,
        "kind": format!("{:?}", r.kind).to_lowercase(),
        "t": r.received.saturating_duration_since(started).as_secs_f64(),
        "wall": unix_secs(r.wall),
        "remote": r.remote.map(|a| a.to_string()),
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "x_boot_key": r.boot_key,
        "x_boot_timestamp": r.boot_timestamp,
        "x_boot_signature": r.boot_signature,
        "body_len": r.body_len,
        "fault": r.fault.as_ref().map(|f| f.to_string()),
        "status": (r.status != 0).then_some(r.status),
        "response": r.response,
    });
    if r.body_len <= ADMIN_BODY_CAP {
        match &r.json {
            Some(j) => v["json"] = j.clone(),
            None if !r.body.is_empty() => v["body"] = json!(String::from_utf8_lossy(&r.body)),
            None => {}
        }
    }
    v
}

/// `GET /admin/requests?path=P&since=SEQ&limit=N`.
pub(super) fn admin_requests(shared: &Shared, query: Option<&str>) -> Reply {
    let mut path = None;
    let mut since = 0u64;
    let mut limit = 1000usize;
    for (k, v) in parse_query(query) {
        match k.as_str() {
            "path" => path = Some(v),
            "since" => match v.parse() {
                Ok(n) => since = n,
                Err(_) => return error(400, format!("bad since={v}")),
            },
            "limit" => match v.parse() {
                Ok(n) => limit = n,
                Err(_) => return error(400, format!("bad limit={v}")),
            },
            _ => return error(400, format!("unknown parameter {k:?} (path, since, limit)")),
        }
    }
    let st = shared.state();
    let matching: Vec<&Request> = st
        .log
        .iter()
        .filter(|r| r.seq > since && path.as_ref().is_none_or(|p| r.path == *p))
        .collect();
    let skip = matching.len().saturating_sub(limit);
    let list: Vec<Value> = matching[skip..]
        .iter()
        .map(|r| request_json(r, shared.started))
        .collect();
    ok_json(Value::Array(list))
}

/// The fault settings as JSON.
fn fault_state(st: &State) -> Value {
    json!({
        "status": 0,
        "queued": st.faults.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "sticky": st.sticky.as_ref().map(|f| f.to_string()),
    })
}

/// `GET /admin/fault`.
pub(super) fn admin_fault_state(shared: &Shared) -> Reply {
    ok_json(fault_state(&shared.state()))
}

/// `POST /admin/fault`.
pub(super) fn admin_fault(shared: &Shared, body: &Value) -> Reply {
    if matches!(body.get("fault"), Some(Value::Null)) {
        let mut st = shared.state();
        st.faults.clear();
        st.sticky = None;
        return ok_json(fault_state(&st));
    }
    let fault = match parse_fault(body) {
        Ok(f) => f,
        Err(msg) => return error(400, msg),
    };
    let sticky = body.get("sticky").and_then(Value::as_bool).unwrap_or(false);
    let count = match body.get("count") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64().filter(|n| *n <= 1_000_000) {
            Some(n) => n as usize,
            None => return error(400, format!("\"count\" must be 0…1000000, got {v}")),
        },
    };
    let mut st = shared.state();
    if sticky {
        st.sticky = Some(fault);
    } else {
        st.faults.extend(std::iter::repeat_n(fault, count));
    }
    ok_json(fault_state(&st))
}

/// `POST /admin/report`: the `report` mode of status answers (docs/protocol.md §3).
pub(super) fn admin_report(shared: &Shared, body: &Value) -> Reply {
    let report = match body.get("report") {
        Some(Value::Null) => None,
        Some(Value::String(mode)) if mode == "lazy" || mode == "full" => Some(mode.clone()),
        _ => return error(400, "expected {\"report\": \"lazy\"|\"full\"|null}"),
    };
    shared.state().report = report.clone();
    ok_json(json!({"status": 0, "report": report}))
}

/// `POST /admin/step`.
pub(super) fn admin_step(shared: &Shared, body: &Value) -> Reply {
    let step = match body.get("step") {
        Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return error(
                    400,
                    format!("\"step\" must be a count of seconds or null, got {v}"),
                )
            }
        },
        None => return error(400, "expected {\"step\": N} or {\"step\": null}"),
    };
    shared.state().step = step;
    ok_json(json!({"status": 0, "step": step}))
}

/// `POST /admin/conflict`.
pub(super) fn admin_conflict(shared: &Shared, body: &Value) -> Reply {
    let sn = match body.get("sn") {
        Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => return error(400, "expected {\"sn\": \"...\"} or {\"sn\": null}"),
    };
    shared.state().conflict_sn = sn.clone();
    ok_json(json!({"status": 0, "conflict_sn": sn}))
}

/// A random lowercase UUID v4 (randomness from std's hash seeds, the clock and a counter).
pub fn new_uuid() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    let hi = (word(1) & !0xf000) | 0x4000; // version 4
    let lo = (word(2) & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}
