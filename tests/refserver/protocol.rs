//! The wire protocol's endpoints: `POST /agent/register` (docs/protocol.md §2) and
//! `POST /agent/status` (§3), each body's shape checked before it is used.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::reply::{error, Reply};
use super::state::{Agent, Shared};
use super::{MAX_EVENTS_PER_AGENT, TAGS};

/// `agents[].status` values allowed by docs/protocol.md §3.
const AGENT_STATES: &[&str] = &["running", "stoped", "fatal", "killed", "restarting"];
/// The kinds of child events (docs/protocol.md §3), `dropped` included.
const EVENT_KINDS: &[&str] = &[
    "exited",
    "killed",
    "fatal",
    "restarted",
    "started",
    "stopped",
    "unhealthy",
    "dropped",
];

/// The values of an event's `origin` (docs/protocol.md §6): a command at the device's console.
const EVENT_ORIGINS: &[&str] = &["local"];

/// Checks that `obj[field]` is present (when `required`) and of the right JSON type.
fn check_field(
    obj: &Map<String, Value>,
    field: &str,
    required: bool,
    kind: &str,
    ok: fn(&Value) -> bool,
) -> Result<(), String> {
    match obj.get(field) {
        None if required => Err(format!("missing field `{field}`")),
        None => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(v) => Err(format!("field `{field}` must be {kind}, got {v}")),
    }
}

fn is_nonempty_str(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

/// `POST /agent/register` (docs/protocol.md §2).
pub(super) fn register(shared: &Shared, body: &Value) -> Reply {
    let Some(obj) = body.as_object() else {
        return error(400, "body must be a JSON object");
    };
    let checks = [
        check_field(obj, "hostname", true, "a non-empty string", is_nonempty_str),
        check_field(obj, "agentsn", true, "a non-empty string", is_nonempty_str),
        check_field(obj, "version", false, "a string", Value::is_string),
        check_field(obj, "host", false, "an object", Value::is_object),
    ];
    if let Some(Err(msg)) = checks.into_iter().find(Result::is_err) {
        return error(400, msg);
    }
    let own_sn = obj
        .get("agentsn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let hostname = obj
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    let mut st = shared.state();
    if st.reject_registrations > 0 {
        st.reject_registrations -= 1;
        return Reply::Json(
            200,
            json!({"status": 1, "error": "registration rejected (test)"}),
            vec![],
        );
    }
    // The SN to hand out: a remembered conflict resolution, a new conflict, or its own.
    let sn = if let Some(new_sn) = st.aliases.get(&own_sn) {
        new_sn.clone()
    } else if let Some(new_sn) = st.conflict_sn.take().filter(|s| *s != own_sn) {
        st.aliases.insert(own_sn.clone(), new_sn.clone());
        new_sn
    } else {
        own_sn.clone()
    };
    let order = st.next_agent_order;
    if !st.agents.contains_key(&sn) {
        st.next_agent_order += 1;
    }
    let agent = st
        .agents
        .entry(sn.clone())
        .or_insert_with(|| new_agent(order));
    agent.hostname = hostname;
    agent.version = obj
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(host) = obj.get("host") {
        agent.host = Some(host.clone());
    }
    if sn != own_sn {
        agent.previous_sn = Some(own_sn);
    }
    agent.registrations += 1;
    agent.last_seen = Instant::now();

    let mut answer = json!({"status": 0, "agentsn": sn, "tags": TAGS});
    if let Some(step) = st.step {
        answer["step"] = json!(step);
    }
    if let Some((key, secret)) = &st.credentials {
        answer["key"] = json!(key);
        answer["secret"] = json!(secret);
    }
    Reply::Json(200, answer, Vec::new())
}

/// An agent this server has just come to know, `order`-th of them.
fn new_agent(order: u64) -> Agent {
    Agent {
        order,
        hostname: String::new(),
        version: None,
        host: None,
        previous_sn: None,
        registrations: 0,
        reports: 0,
        last_report: None,
        agents: None,
        lazy_reports: 0,
        last_seen: Instant::now(),
        job_results: BTreeMap::new(),
        events: VecDeque::new(),
    }
}

/// Checks a status report's shape (docs/protocol.md §3); `Err` names the first problem.
fn check_report(obj: &Map<String, Value>) -> Result<(), String> {
    let number = |v: &Value| v.is_u64() || v.is_i64();
    check_field(obj, "hostname", true, "a non-empty string", is_nonempty_str)?;
    check_field(obj, "agentsn", true, "a non-empty string", is_nonempty_str)?;
    check_field(obj, "version", false, "a string", Value::is_string)?;
    check_field(obj, "uptime", true, "an integer", number)?;
    check_field(obj, "timestamp", true, "an integer", number)?;
    check_field(obj, "step", true, "an integer", number)?;
    // Left out by an agent in lazy mode while nothing in it changed.
    check_field(obj, "agents", false, "an array", Value::is_array)?;
    check_field(obj, "jobs", true, "an array", Value::is_array)?;
    check_field(obj, "events", false, "an array", Value::is_array)?;
    let empty = Vec::new();
    for (i, a) in obj
        .get("agents")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let Some(a) = a.as_object() else {
            return Err(format!("agents[{i}] must be an object"));
        };
        check_field(a, "name", true, "a non-empty string", is_nonempty_str)
            .and_then(|_| check_field(a, "status", true, "a string", Value::is_string))
            .map_err(|e| format!("agents[{i}]: {e}"))?;
        let state = a.get("status").and_then(Value::as_str).unwrap_or_default();
        if !AGENT_STATES.contains(&state) {
            return Err(format!("agents[{i}]: unknown status {state:?}"));
        }
    }
    for (i, j) in obj
        .get("jobs")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let Some(j) = j.as_object() else {
            return Err(format!("jobs[{i}] must be an object"));
        };
        check_field(j, "id", true, "a string", Value::is_string)
            .and_then(|_| check_field(j, "errcode", true, "an integer", number))
            .and_then(|_| check_field(j, "message", true, "a string", Value::is_string))
            .map_err(|e| format!("jobs[{i}]: {e}"))?;
    }
    for (i, e) in obj
        .get("events")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let Some(e) = e.as_object() else {
            return Err(format!("events[{i}] must be an object"));
        };
        let kind = e.get("event").and_then(Value::as_str).unwrap_or_default();
        // A `dropped` event counts what was dropped, and names no agent.
        let dropped = kind == "dropped";
        let is_what = |v: &Value| matches!(v.as_str(), Some("events" | "results"));
        check_field(e, "time", true, "an integer", number)
            .and_then(|_| check_field(e, "name", !dropped, "a string", Value::is_string))
            .and_then(|_| check_field(e, "event", true, "a string", Value::is_string))
            .and_then(|_| check_field(e, "count", dropped, "an integer", Value::is_u64))
            .and_then(|_| check_field(e, "what", dropped, "\"events\" or \"results\"", is_what))
            .map_err(|e| format!("events[{i}]: {e}"))?;
        if !EVENT_KINDS.contains(&kind) {
            return Err(format!("events[{i}]: unknown event {kind:?}"));
        }
        // `origin` (docs/protocol.md §6, local control): absent, or "local".
        match e.get("origin") {
            None => {}
            Some(Value::String(origin)) if EVENT_ORIGINS.contains(&origin.as_str()) => {}
            Some(other) => return Err(format!("events[{i}]: unknown origin {other}")),
        }
    }
    Ok(())
}

/// `POST /agent/status` (docs/protocol.md §3).
pub(super) fn status(shared: &Shared, body: &Value) -> Reply {
    let Some(obj) = body.as_object() else {
        return error(400, "body must be a JSON object");
    };
    if let Err(msg) = check_report(obj) {
        return error(400, msg);
    }
    let sn = obj
        .get("agentsn")
        .and_then(Value::as_str)
        .unwrap_or_default();

    let mut st = shared.state();
    if st.adopt_unknown && !st.agents.contains_key(sn) {
        let order = st.next_agent_order;
        st.next_agent_order += 1;
        st.agents.insert(sn.to_string(), new_agent(order));
    }
    let Some(agent) = st.agents.get_mut(sn) else {
        return error(404, format!("unknown agentsn {sn}: register first"));
    };
    if let Some(hostname) = obj.get("hostname").and_then(Value::as_str) {
        agent.hostname = hostname.to_string();
    }
    if let Some(version) = obj.get("version").and_then(Value::as_str) {
        agent.version = Some(version.to_string());
    }
    agent.reports += 1;
    agent.last_seen = Instant::now();
    agent.last_report = Some(body.clone());
    match obj.get("agents") {
        Some(agents) => agent.agents = Some(agents.clone()),
        None => agent.lazy_reports += 1,
    }
    for result in obj
        .get("jobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = result.get("id").and_then(Value::as_str) {
            agent.job_results.insert(id.to_string(), result.clone());
        }
    }
    for event in obj
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        agent.events.push_back(event.clone());
        if agent.events.len() > MAX_EVENTS_PER_AGENT {
            agent.events.pop_front();
        }
    }
    let jobs: Vec<Value> = st.queues.remove(sn).map(Vec::from).unwrap_or_default();
    let mut answer = json!({"status": 0, "jobs": jobs});
    if let Some(report) = &st.report {
        answer["report"] = json!(report);
    }
    Reply::Json(200, answer, Vec::new())
}
