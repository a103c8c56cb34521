//! What a child runs with: `Settings` from its `agent.json` (or a job), the
//! `envs` it may add (read by `job_fields`, like the rule for agent names).

use crate::child::RestartPolicy;
use crate::health::HealthSpec;
pub use crate::job_fields::{parse_envs, valid_name};
use crate::reslimit::{self, ResourceLimits};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// Largest `agent.json` read.
const AGENT_JSON_BYTES_MAX: u64 = 64 * 1024;

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
