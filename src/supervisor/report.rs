//! What the supervisor tells: child events for the next report, the children of
//! a status report, and the local status view (`bootagent status`).

use super::{health, Supervisor};
use crate::child::{EventKind, Exit};
use crate::wheel::Millis;
use crate::wire::{AgentStatus, ChildEvent};
use log::{info, warn};

/// One line of the local status view (`bootagent status`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChildView {
    pub name: String,
    pub version: String,
    pub status: String,
    pub pid: u32,
    pub started: Option<i64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// The limits in force, as `agent.json` or a job set them ("none" without).
    #[serde(default)]
    pub limits: String,
    /// The environment a job or `agent.json` added, as `NAME=value`.
    #[serde(default)]
    pub envs: Vec<String>,
    /// As in reports (docs/protocol.md section 6, "Health"); absent without checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
}

impl Supervisor {
    pub(super) fn push_event(
        &mut self,
        name: &str,
        kind: EventKind,
        exit: Option<Exit>,
        message: String,
        wall_s: i64,
    ) {
        let (code, signal) = match exit {
            Some(Exit::Code(code)) => (Some(code), None),
            Some(Exit::Signal(signal)) => (None, Some(signal)),
            None => (None, None),
        };
        match kind {
            EventKind::Started | EventKind::Restarted | EventKind::Stopped => {
                info!("{name}: {message}")
            }
            _ => warn!("{name}: {message}"),
        }
        self.events.push(ChildEvent {
            time: wall_s,
            name: name.to_string(),
            event: kind.as_str(),
            code,
            signal,
            count: None,
            message,
        });
        self.changed = true;
    }

    /// A worker process of a running child killed by the kernel for the child's memory
    /// limit, `count` times since the last look; the child stays `running`.
    pub(super) fn push_worker_kills(
        &mut self,
        name: &str,
        message: String,
        count: u64,
        wall_s: i64,
    ) {
        let message = crate::wire::counted(&message, count);
        warn!("{name}: {message}");
        self.events.push(ChildEvent {
            time: wall_s,
            name: name.to_string(),
            event: EventKind::Killed.as_str(),
            code: None,
            signal: Some(libc::SIGKILL),
            count: Some(count),
            message,
        });
        self.changed = true;
    }

    /// Reports an upgrade that was rolled back: a `restarted` event (docs/protocol.md section 3
    /// names no other kind for it) whose message says which version replaced which.
    pub fn note_rollback(&mut self, name: &str, new: &str, old: &str, why: &str, wall_s: i64) {
        let message = format!("version {new} did not stay up ({why}); rolled back to {old}");
        self.push_event(name, EventKind::Restarted, None, message, wall_s);
    }

    /// The children for a status report.
    pub fn agents(&self, now: Millis) -> Vec<AgentStatus> {
        self.slots
            .iter()
            .map(|(name, slot)| AgentStatus {
                name: name.clone(),
                version: slot.version.clone(),
                status: slot.child.status(),
                uptime: slot.child.uptime_ms(now) / 1000,
                pid: slot.child.pid().map_or(0, |pid| pid as u32),
                restarts: slot.child.restarts,
                ready: self.ready(name),
                health: health::health_word(slot),
                status_text: slot.health.status_text.clone(),
            })
            .collect()
    }

    /// The children for the local status view.
    pub fn views(&self) -> Vec<ChildView> {
        self.slots
            .iter()
            .map(|(name, slot)| ChildView {
                name: name.clone(),
                version: slot.version.clone(),
                status: slot.child.status().to_string(),
                pid: slot.child.pid().map_or(0, |pid| pid as u32),
                started: slot.started_wall,
                restarts: slot.child.restarts,
                last_exit: slot.broken.clone().or_else(|| slot.child.last_exit.clone()),
                limits: slot.settings.limits.to_string(),
                envs: slot
                    .settings
                    .envs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                ready: self.ready(name),
                health: health::health_word(slot).map(str::to_string),
                status_text: slot.health.status_text.clone(),
            })
            .collect()
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<ChildEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether anything shown changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    /// Whether anything of the status view alone changed since the last call.
    pub fn take_view_changed(&mut self) -> bool {
        std::mem::replace(&mut self.view_changed, false)
    }
}
