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
    /// optional; `restart` over `policy` (the policy of the limits in force).
    pub fn from_json(value: &Value, cpus: u32, policy: RestartPolicy) -> Result<Settings, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "settings are {}, not an object",
                crate::wire::kind(value)
            ));
        };
        let mut settings = Settings {
            policy,
            ..Settings::default()
        };
        for (key, value) in map {
            match key.as_str() {
                "envs" => settings.envs = parse_envs(value)?,
                "limits" => settings.limits = reslimit::parse_limits(value, cpus)?,
                "restart" => settings.policy = RestartPolicy::from_json_over(value, policy)?,
                "health" => settings.health = HealthSpec::from_json(value)?,
                other => return Err(format!("unknown setting {other:?}")),
            }
        }
        Ok(settings)
    }
}

pub(super) fn read_settings(
    path: &Path,
    cpus: u32,
    policy: RestartPolicy,
) -> Result<Settings, String> {
    let bytes = match fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(Settings {
                policy,
                ..Settings::default()
            })
        }
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
    Settings::from_json(&value, cpus, policy).map_err(|err| format!("agent.json: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::reslimit::Mechanism;
    use crate::supervisor::Supervisor;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bootagent-settings-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    /// `-o restart_grace_ms=2000` and `-o restart_window_ms=5000`, as `-o` parses them.
    fn policy() -> RestartPolicy {
        let mut limits = Limits::default();
        limits.set("restart_grace_ms=2000").expect("valid");
        limits.set("restart_window_ms=5000").expect("valid");
        RestartPolicy::new(&limits)
    }

    #[test]
    fn agent_json_s_restart_goes_over_the_policy_of_the_limits() {
        let dir = scratch("read");
        let path = dir.join("agent.json");
        let none = read_settings(&path, 1, policy()).expect("no agent.json");
        assert_eq!((none.policy.grace_ms, none.policy.window_ms), (2000, 5000));
        fs::write(&path, r#"{"restart": {"grace_s": 5}}"#).expect("write");
        let some = read_settings(&path, 1, policy()).expect("agent.json");
        assert_eq!((some.policy.grace_ms, some.policy.window_ms), (5000, 5000));
        assert_eq!(some.policy.delay_ms, RestartPolicy::default().delay_ms);
        fs::write(&path, r#"{"envs": {}}"#).expect("write");
        let other = read_settings(&path, 1, policy()).expect("agent.json");
        assert_eq!(other.policy, policy());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_child_gets_the_grace_period_of_the_limits_in_force() {
        let dir = scratch("supervisor");
        let version = dir.join("agents/a/1");
        fs::create_dir_all(&version).expect("version directory");
        std::os::unix::fs::symlink("1", dir.join("agents/a/current")).expect("current");
        let mechanism = Mechanism::CgroupV2 {
            dir: dir.join("no-cgroups"),
        };
        let mut supervisor = Supervisor::new(&dir, mechanism, None, None, 1);
        assert_eq!(supervisor.grace_ms("a"), 10_000, "Limits::default()");
        let mut limits = Limits::default();
        limits.set("restart_grace_ms=2000").expect("valid");
        limits.set("children_max=1").expect("valid");
        supervisor.set_limits(&limits);
        supervisor.add("a", 0);
        assert_eq!(supervisor.grace_ms("a"), 2000);
        assert_eq!(supervisor.children_max(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
