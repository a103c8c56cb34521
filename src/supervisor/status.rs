//! What the supervisor tells, as types: a child's `Status` as reports name it, a
//! `Change` of a child for the loop, and a line of the local status view
//! (`ChildView`). `report.rs` makes them; this file imports nothing of `supervisor/`.

use crate::child::State;
use crate::report_event::ChildEvent;

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

/// A child's status, as reports name it (section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Stopped on purpose, or never started: `stoped` on the wire.
    Stopped,
    /// A process runs (or is being started or stopped).
    Running,
    /// Down after a crash, waiting for its restart.
    Restarting,
    /// Down after a limit kill, waiting for its restart.
    Killed,
    /// The restart policy gave up, or `agent.json` is broken.
    Fatal,
}

impl Status {
    pub fn of(state: &State) -> Status {
        match state {
            State::Stopped => Status::Stopped,
            State::Starting { .. } | State::Running { .. } | State::Stopping(_) => Status::Running,
            State::Waiting {
                limit_killed: true, ..
            } => Status::Killed,
            State::Waiting {
                limit_killed: false,
                ..
            } => Status::Restarting,
            State::Fatal => Status::Fatal,
        }
    }

    /// The status word of the wire, spelled as the original API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "stoped",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Killed => "killed",
            Status::Fatal => "fatal",
        }
    }
}

/// What the supervisor saw change in a child during one call: its status before
/// and after, and the event it reports (none for a change without one: a new
/// process under the same status, `READY=1`). The loop takes them
/// (`take_changes`) and hands each to the core and to the job runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub old: Status,
    pub new: Status,
    pub event: Option<ChildEvent>,
    /// The child when the loop took the change: after every change before it.
    pub child: ChildFacts,
}

/// What a job waiting on a child decides from: the child as the supervisor has it
/// at one moment (`Supervisor::facts`, and every `Change`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildFacts {
    /// Its status; `None` for a child not (or no longer) supervised.
    pub status: Option<Status>,
    /// Its process, when one runs.
    pub pid: Option<i32>,
    /// Its restarts after crashes since BootAgent started.
    pub restarts: u32,
    /// With `notify`: whether its process said `READY=1`; `None` without.
    pub ready: Option<bool>,
    /// How its last process ended.
    pub last_exit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::{StartReason, Stopping, Then};

    #[test]
    fn every_state_has_the_status_word_of_the_child() {
        let states = [
            State::Stopped,
            State::Starting {
                reason: StartReason::Asked,
            },
            State::Running { pid: 1, since: 0 },
            State::Stopping(Stopping {
                pid: 1,
                since: 0,
                kill_at: 5,
                killed: false,
                then: Then::Start,
            }),
            State::Waiting {
                until: 5,
                limit_killed: false,
                reason: StartReason::Crash,
            },
            State::Waiting {
                until: 5,
                limit_killed: true,
                reason: StartReason::Crash,
            },
            State::Fatal,
        ];
        for state in &states {
            let mut child = crate::child::Child::new(Default::default());
            child.state = state.clone();
            assert_eq!(Status::of(state).as_str(), child.status(), "{state:?}");
        }
        let words: Vec<&str> = states.iter().map(|s| Status::of(s).as_str()).collect();
        assert_eq!(
            words,
            [
                "stoped",
                "running",
                "running",
                "running",
                "restarting",
                "killed",
                "fatal"
            ]
        );
    }
}
