//! Jobs from status answers (docs/protocol.md section 7): validation into a closed
//! `Job` type and error codes (their journal is `journal`). Pure: executing a job
//! that touches the host belongs to the edge.

use crate::addr::{self, ServerAddr};
use crate::child::RestartPolicy;
pub use crate::job_fields::ErrCode;
use crate::job_fields::{parse_checksum, parse_envs, valid_name, valid_version};
use crate::limits::Limits;
use serde_json::{Map, Value};

/// Longest job id accepted.
pub const JOB_ID_BYTES_MAX: usize = 128;

/// The action of a self-upgrade, as the journal names it.
pub const SELF_UPGRADE_ACTION: &str = "self_upgrade";

/// Longest package URL accepted.
pub const URL_BYTES_MAX: usize = 4096;
/// Default probation of an upgrade, and its ceiling (seconds).
pub const PROBATION_DEFAULT_S: u64 = 30;
pub const PROBATION_MAX_S: u64 = 3600;
/// Default probation of a self-upgrade (seconds), and its floor (a shorter one is
/// raised to it: the new image needs a report answered within it).
pub const SELF_PROBATION_DEFAULT_S: u64 = 120;
pub const SELF_PROBATION_MIN_S: u64 = 2;

/// An `install` or `upgrade` job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub name: String,
    pub url: String,
    pub checksum: [u8; 32],
    /// From the job; else from the package's `VERSION` file or the URL.
    pub version: Option<String>,
    pub settings: Settings,
    pub probation_s: u64,
    /// `exec` *(ext)*: the program inside the package that `run` points to.
    pub exec: Option<String>,
}

/// A `self_upgrade` job (docs/protocol.md section 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfUpgrade {
    pub url: String,
    pub checksum: [u8; 32],
    /// From the job; else what the new binary's `-V` prints.
    pub version: Option<String>,
    pub probation_s: u64,
}

/// The `envs`, `limits`, `restart` and `health` a job sets, validated, in their JSON form
/// (they are written to the agent's `agent.json` as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(pub Map<String, Value>);

/// A validated job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// `config`: replace the server-given list and/or set the step (already clamped).
    Config {
        svrlist: Option<Vec<ServerAddr>>,
        step_s: Option<u64>,
    },
    /// `install` and `upgrade` (an install over an installed agent upgrades it).
    Install(Box<Install>),
    Uninstall {
        name: String,
    },
    Restart {
        name: String,
        settings: Settings,
    },
    Stop {
        name: String,
    },
    Start {
        name: String,
    },
    /// Replace BootAgent's own binary; the children keep running.
    SelfUpgrade(Box<SelfUpgrade>),
}

impl Job {
    /// The agent the job is about, if any.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Job::Config { .. } | Job::SelfUpgrade(_) => None,
            Job::Install(install) => Some(&install.name),
            Job::Uninstall { name }
            | Job::Restart { name, .. }
            | Job::Stop { name }
            | Job::Start { name } => Some(name),
        }
    }
}

/// A job that could not be validated. Without an id it cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: Option<String>,
    pub message: String,
}

/// A URL fit for a log line or a message: a password in it becomes `***`.
pub fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

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
pub fn parse_job(value: &Value, limits: &Limits, cpus: u32) -> Result<(String, Job), Rejected> {
    let id = job_id(value);
    let reject = |message: String| Rejected {
        id: id.clone(),
        message: crate::wire::one_line(&message),
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
        "install" | "upgrade" => parse_install(map, limits, cpus).map_err(reject)?,
        "uninstall" => Job::Uninstall {
            name: name(map).map_err(reject)?,
        },
        "restart" => Job::Restart {
            name: name(map).map_err(reject)?,
            settings: settings(map, cpus).map_err(reject)?,
        },
        "stop" => Job::Stop {
            name: name(map).map_err(reject)?,
        },
        "start" => Job::Start {
            name: name(map).map_err(reject)?,
        },
        SELF_UPGRADE_ACTION => parse_self_upgrade(map).map_err(reject)?,
        unknown => {
            let shown: String = unknown.chars().take(64).collect();
            return Err(reject(format!("unknown action {shown:?}")));
        }
    };
    Ok((id_text, job))
}

fn name(map: &Map<String, Value>) -> Result<String, String> {
    match map.get("name") {
        Some(Value::String(name)) if valid_name(name) => Ok(name.clone()),
        Some(Value::String(name)) => Err(format!(
            "bad name {:?}: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'",
            name.chars().take(80).collect::<String>()
        )),
        Some(other) => Err(format!("name is {}", crate::wire::kind(other))),
        None => Err("job has no name".to_string()),
    }
}

/// `envs`, `limits`, `restart` and `health`, each validated; absent ones are left out.
fn settings(map: &Map<String, Value>, cpus: u32) -> Result<Settings, String> {
    let mut settings = Map::new();
    if let Some(envs) = map.get("envs").filter(|v| !v.is_null()) {
        parse_envs(envs)?;
        settings.insert("envs".into(), envs.clone());
    }
    if let Some(limits) = map.get("limits").filter(|v| !v.is_null()) {
        crate::reslimit::parse_limits(limits, cpus).map_err(|e| format!("limits: {e}"))?;
        settings.insert("limits".into(), limits.clone());
    }
    if let Some(restart) = map.get("restart").filter(|v| !v.is_null()) {
        RestartPolicy::from_json(restart)?;
        settings.insert("restart".into(), restart.clone());
    }
    if let Some(health) = map.get("health").filter(|v| !v.is_null()) {
        crate::health::HealthSpec::from_json(health)?;
        settings.insert("health".into(), health.clone());
    }
    Ok(Settings(settings))
}

fn parse_install(map: &Map<String, Value>, limits: &Limits, cpus: u32) -> Result<Job, String> {
    let name = name(map)?;
    let (url, checksum, version) = (url(map)?, checksum(map)?, version(map)?);
    let probation_s = probation(map, PROBATION_DEFAULT_S)?;
    let exec = match map.get("exec") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) => Some(exec_path(path, limits.unpack_path_bytes_max)?),
        Some(other) => return Err(format!("exec is {}", crate::wire::kind(other))),
    };
    Ok(Job::Install(Box::new(Install {
        name,
        url,
        checksum,
        version,
        settings: settings(map, cpus)?,
        probation_s,
        exec,
    })))
}

fn parse_self_upgrade(map: &Map<String, Value>) -> Result<Job, String> {
    Ok(Job::SelfUpgrade(Box::new(SelfUpgrade {
        url: url(map)?,
        checksum: checksum(map)?,
        version: version(map)?,
        probation_s: probation(map, SELF_PROBATION_DEFAULT_S)?.max(SELF_PROBATION_MIN_S),
    })))
}

fn url(map: &Map<String, Value>) -> Result<String, String> {
    match map.get("url") {
        Some(Value::String(url))
            if url.len() <= URL_BYTES_MAX && !url.chars().any(char::is_control) =>
        {
            let scheme_ok = ["http://", "https://", "file://", "ftp://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok {
                return Err("url must start with http://, https://, file:// or ftp://".to_string());
            }
            Ok(url.clone())
        }
        Some(Value::String(_)) => Err(format!(
            "url is longer than {URL_BYTES_MAX} bytes or has control characters"
        )),
        Some(other) => Err(format!("url is {}", crate::wire::kind(other))),
        None => Err("job has no url".to_string()),
    }
}

fn checksum(map: &Map<String, Value>) -> Result<[u8; 32], String> {
    match map.get("checksum") {
        Some(Value::String(text)) => parse_checksum(text),
        Some(other) => Err(format!("checksum is {}", crate::wire::kind(other))),
        None => Err("job has no checksum (SHA256:<64 hex digits>)".to_string()),
    }
}

fn version(map: &Map<String, Value>) -> Result<Option<String>, String> {
    match map.get("version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if valid_version(v) => Ok(Some(v.clone())),
        Some(Value::String(v)) => Err(format!(
            "bad version {:?}",
            v.chars().take(80).collect::<String>()
        )),
        Some(other) => Err(format!("version is {}", crate::wire::kind(other))),
    }
}

fn probation(map: &Map<String, Value>, default_s: u64) -> Result<u64, String> {
    match map.get("probation") {
        None | Some(Value::Null) => Ok(default_s),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if s <= PROBATION_MAX_S => Ok(s),
            _ => Err(format!(
                "probation {n} is not 0 to {PROBATION_MAX_S} seconds"
            )),
        },
        Some(other) => Err(format!("probation is {}", crate::wire::kind(other))),
    }
}

/// A job's `exec`: a relative path of plain names inside the package (the
/// unpacker checks it again against what the package holds).
fn exec_path(path: &str, path_bytes_max: usize) -> Result<String, String> {
    let plain = !path.is_empty()
        && path.len() <= path_bytes_max
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && path.split('/').all(|name| name != "..");
    if !plain {
        return Err(format!(
            "bad exec {:?}: a relative path inside the package",
            path.chars().take(80).collect::<String>()
        ));
    }
    Ok(path.to_string())
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

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
