//! Finding the installed agents (`agents/NAME/current/run`) and taking one under
//! supervision: its version, its directory and its `agent.json`.

use super::settings::{read_settings, valid_name, Settings};
use super::state::{Slot, Supervisor};
use crate::child::{Child, EventKind, Input, State};
use crate::wheel::Millis;
use log::{debug, warn};
use std::collections::BTreeSet;
use std::fs;
use std::io;

impl Supervisor {
    /// Finds every `agents/NAME/current/run` and supervises it; starts those not
    /// in `stopped`. Returns one line per agent directory that was skipped.
    pub fn discover(
        &mut self,
        stopped: &BTreeSet<String>,
        now: Millis,
        wall_s: i64,
    ) -> Vec<String> {
        let agents = self.data_dir.join("agents");
        let mut skipped = Vec::new();
        let entries = match fs::read_dir(&agents) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return skipped,
            Err(err) => {
                skipped.push(format!("{}: {err}", agents.display()));
                return skipped;
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            if self.slots.contains_key(&name) {
                continue; // adopted over an exec hand-over
            }
            if !valid_name(&name) {
                skipped.push(format!("agents/{name}: not a valid agent name"));
                continue;
            }
            if !agents.join(&name).join("current").join("run").exists() {
                continue; // not (yet) installed
            }
            if self.slots.len() >= self.children_max {
                skipped.push(format!(
                    "agents/{name}: more than {} agents (children_max)",
                    self.children_max
                ));
                continue;
            }
            self.add(&name, now);
            if !stopped.contains(&name) {
                self.input(&name, Input::Start, now, wall_s);
            }
        }
        skipped
    }

    /// Supervises the installed agent `name` (reads `current` and `agent.json`).
    pub(super) fn add(&mut self, name: &str, now: Millis) {
        let agent_dir = self.data_dir.join("agents").join(name);
        let current = agent_dir.join("current");
        let (version, dir, mut broken) = match fs::read_link(&current) {
            Ok(target) => {
                let version = target
                    .file_name()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = if target.is_absolute() {
                    target
                } else {
                    agent_dir.join(target)
                };
                (version, dir, None)
            }
            // A plain directory instead of a link: its name is the version.
            Err(_) => ("0".to_string(), current.clone(), None),
        };
        let settings = match read_settings(&agent_dir.join("agent.json"), self.cpus, self.policy) {
            Ok(settings) => settings,
            Err(err) => {
                broken = Some(err);
                Settings {
                    policy: self.policy,
                    ..Settings::default()
                }
            }
        };
        let mut child = Child::new(settings.policy);
        let broken_why = broken.clone();
        if let Some(why) = &broken {
            warn!("agent {name}: {why}; it will not be started");
            child.state = State::Fatal;
        }
        debug!("supervising {name} {version} in {}", dir.display());
        let _ = now;
        self.slots.insert(
            name.to_string(),
            Slot {
                child,
                version,
                dir,
                settings,
                broken,
                state_at: None,
                cgroup: None,
                oom_kills_seen: 0,
                throttle: None,
                killed_for: None,
                started_wall: None,
                health: Default::default(),
            },
        );
        if let Some(why) = broken_why {
            self.push_event(name, EventKind::Fatal, None, why, 0);
        }
        self.changed = true;
    }
}
