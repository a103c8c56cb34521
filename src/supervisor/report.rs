//! What the supervisor tells: the changes of its children (status before and after,
//! the event) for the loop, the children of a status report, and the local status
//! view (`bootagent status`), in the types of `status.rs`.

use super::health;
use super::state::Supervisor;
use super::status::{Change, ChildFacts, ChildView, Status};
use crate::child::{EventKind, Exit};
use crate::report_event::ChildEvent;
use crate::wheel::Millis;
use crate::wire::AgentStatus;
use log::{info, warn};

impl Supervisor {
    /// The child `name` now, as a job waiting on it sees it.
    pub fn facts(&self, name: &str) -> ChildFacts {
        let Some(slot) = self.slots.get(name) else {
            return ChildFacts::default();
        };
        ChildFacts {
            status: Some(Status::of(&slot.child.state)),
            pid: slot.child.pid(),
            restarts: slot.child.restarts,
            ready: self.ready(name),
            last_exit: slot.child.last_exit.clone(),
        }
    }

    /// The status of `name` now (`Stopped` for a child no longer supervised).
    fn status_now(&self, name: &str) -> Status {
        self.slots
            .get(name)
            .map_or(Status::Stopped, |slot| Status::of(&slot.child.state))
    }

    /// A change of `name` without an event.
    pub(super) fn note_change(&mut self, name: &str) {
        let now = self.status_now(name);
        self.changes.push(Change {
            name: name.to_string(),
            old: now,
            new: now,
            event: None,
            child: ChildFacts::default(),
        });
    }

    /// After an input to `name`: the changes it made carry the status before and
    /// after it, and one that changed the status or the process without an event is
    /// a change too.
    pub(super) fn note_input(&mut self, name: &str, before: (Status, Option<i32>), first: usize) {
        let pid = self.slots.get(name).and_then(|slot| slot.child.pid());
        let after = (self.status_now(name), pid);
        let mut made = false;
        for change in self.changes.iter_mut().skip(first) {
            if change.name == name {
                (change.old, change.new) = (before.0, after.0);
                made = true;
            }
        }
        if !made && after != before {
            self.changes.push(Change {
                name: name.to_string(),
                old: before.0,
                new: after.0,
                event: None,
                child: ChildFacts::default(),
            });
        }
    }

    pub(super) fn push_event(
        &mut self,
        name: &str,
        kind: EventKind,
        exit: Option<Exit>,
        message: String,
        wall_s: i64,
    ) {
        match kind {
            EventKind::Started | EventKind::Restarted | EventKind::Stopped => {
                info!("{name}: {message}")
            }
            _ => warn!("{name}: {message}"),
        }
        let mut event = ChildEvent::new(wall_s, name, kind, message);
        event.exit = exit;
        self.push_change(event);
    }

    fn push_change(&mut self, event: ChildEvent) {
        let now = self.status_now(&event.name);
        self.changes.push(Change {
            name: event.name.clone(),
            old: now,
            new: now,
            event: Some(event),
            child: ChildFacts::default(),
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
        let event = ChildEvent::worker_kills(wall_s, name, &message, count);
        warn!("{name}: {}", event.message);
        self.push_change(event);
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
                status: Status::of(&slot.child.state).as_str(),
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
                status: Status::of(&slot.child.state).as_str().to_string(),
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

    /// The changes since the last call, oldest first.
    /// Each carries the child as it is now (`ChildFacts`).
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut changes = std::mem::take(&mut self.changes);
        for change in changes.iter_mut() {
            change.child = self.facts(&change.name);
        }
        changes
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
