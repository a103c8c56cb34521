//! What a child runs with: `Settings` from its `agent.json` (or a job), the
//! `envs` it may add, and the rule for agent names.

use crate::child::RestartPolicy;
use crate::health::HealthSpec;
use crate::reslimit::{self, ResourceLimits};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// Largest `agent.json` read.
const AGENT_JSON_BYTES_MAX: u64 = 64 * 1024;
/// Most environment variables a child gets from its settings.
const ENVS_MAX: usize = 256;
/// Longest environment variable (name plus value).
const ENV_BYTES_MAX: usize = 32 * 1024;

/// What a child runs with: from its `agent.json`, or from a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub envs: BTreeMap<String, String>,
    pub limits: ResourceLimits,
    pub policy: RestartPolicy,
    pub health: HealthSpec,
}

impl Settings {
    /// Reads `{"envs": {…}, "limits": {…}, "restart": {…}, "health": {…}}`; every part
    /// optional.
    pub fn from_json(value: &Value, cpus: u32) -> Result<Settings, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "settings are {}, not an object",
                crate::wire::kind(value)
            ));
        };
        let mut settings = Settings::default();
        for (key, value) in map {
            match key.as_str() {
                "envs" => settings.envs = parse_envs(value)?,
                "limits" => settings.limits = reslimit::parse_limits(value, cpus)?,
                "restart" => settings.policy = RestartPolicy::from_json(value)?,
                "health" => settings.health = HealthSpec::from_json(value)?,
                other => return Err(format!("unknown setting {other:?}")),
            }
        }
        Ok(settings)
    }
}

/// Reads `envs`: names of letters, digits and `_`; `BOOT_AGENT_*` is reserved.
pub fn parse_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    read_envs(value).map_err(|message| crate::wire::one_line(&message))
}

fn read_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "envs is {}, not an object",
            crate::wire::kind(value)
        ));
    };
    if map.len() > ENVS_MAX {
        return Err(format!(
            "envs has {} entries, more than {ENVS_MAX}",
            map.len()
        ));
    }
    let mut envs = BTreeMap::new();
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(format!("envs.{name} must be a string"));
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(format!("envs: {name:?} is not a valid variable name"));
        }
        if name.starts_with("BOOT_AGENT_") || name == "PATH" && value.is_empty() {
            return Err(format!(
                "envs: {name} is set by BootAgent and cannot be replaced"
            ));
        }
        if value.contains('\0') || name.len() + value.len() > ENV_BYTES_MAX {
            return Err(format!(
                "envs.{name}: NUL byte, or longer than {ENV_BYTES_MAX} bytes"
            ));
        }
        envs.insert(name.clone(), value.clone());
    }
    Ok(envs)
}

/// A child name (section 7): 1–64 of `A–Z a–z 0–9 . _ -`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn read_settings(path: &Path, cpus: u32) -> Result<Settings, String> {
    let bytes = match fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(err) => return Err(format!("agent.json: {err}")),
        Ok(meta) if meta.len() > AGENT_JSON_BYTES_MAX => {
            return Err(format!(
                "agent.json is larger than {AGENT_JSON_BYTES_MAX} bytes"
            ))
        }
        Ok(_) => fs::read(path).map_err(|err| format!("agent.json: {err}"))?,
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|err| format!("agent.json: {err}"))?;
    Settings::from_json(&value, cpus).map_err(|err| format!("agent.json: {err}"))
}
