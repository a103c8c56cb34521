//! The events of a status report (docs/protocol.md section 3), typed.
//!
//! A `ChildEvent` is what happened to a child (or to BootAgent itself, named
//! `bootagent`): the supervisor makes it, the core queues it until a server
//! acknowledged it, the metafile keeps it. A `ReportEvent` is one entry of a
//! report's `events`: a child's event, or one `dropped` event counting what was
//! dropped past a bound. Only the wire edge (`wire.rs`) turns them into JSON.
//!
//! The metafile keeps a `ChildEvent` as the JSON object a report carries
//! (`time`, `name`, `event`, `code`, `signal`, `count`, `message`, `origin`), so
//! that metafiles written before these types existed read the same, and an older
//! BootAgent (a self-upgrade rolled back) reads what this one wrote.

use crate::child::{EventKind, Exit};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Who caused an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// BootAgent: supervision, or a server's job. No `origin` on the wire.
    #[default]
    Agent,
    /// A person at the console (`bootagent restart|stop|start`): `"origin": "local"`.
    Local,
}

/// What happened to a child (or to BootAgent itself, named `bootagent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredForm", into = "StoredForm")]
pub struct ChildEvent {
    /// Wall-clock seconds.
    pub time: i64,
    pub name: String,
    pub kind: EventKind,
    /// How the process ended, when it did.
    pub exit: Option<Exit>,
    /// Kills of worker processes coalesced into this `killed` event (section 3).
    pub count: Option<u64>,
    pub origin: Origin,
    pub message: String,
}

impl ChildEvent {
    pub fn new(time: i64, name: &str, kind: EventKind, message: String) -> Self {
        ChildEvent {
            time,
            name: name.to_string(),
            kind,
            exit: None,
            count: None,
            origin: Origin::Agent,
            message,
        }
    }

    /// A worker process of a running child killed by the kernel for the child's
    /// memory limit, `count` times since the last look.
    pub fn worker_kills(time: i64, name: &str, message: &str, count: u64) -> Self {
        ChildEvent {
            exit: Some(Exit::Signal(libc::SIGKILL)),
            count: Some(count),
            ..ChildEvent::new(time, name, EventKind::Killed, counted(message, count))
        }
    }

    /// Repeated kills of a child's worker processes are one event per child per
    /// report (section 3): `later`, another such kill of the same child, is added
    /// to this one, which takes its time and message and the sum of the counts.
    /// False (and nothing changed) when either is not a worker kill, or another child's.
    pub fn coalesce(&mut self, later: &ChildEvent) -> bool {
        let (Some(count), Some(more)) = (self.count, later.count) else {
            return false;
        };
        if self.kind != EventKind::Killed || later.kind != EventKind::Killed {
            return false;
        }
        if self.name != later.name {
            return false;
        }
        let total = count.saturating_add(more);
        self.time = later.time;
        self.count = Some(total);
        self.message = counted(&later.message, total);
        true
    }
}

/// What was dropped past its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DroppedWhat {
    /// Events past `pending_events_max`.
    Events,
    /// Job results past `pending_results_max`.
    Results,
}

impl DroppedWhat {
    pub fn as_str(self) -> &'static str {
        match self {
            DroppedWhat::Events => "events",
            DroppedWhat::Results => "results",
        }
    }
}

/// One entry of a report's `events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportEvent {
    Child(ChildEvent),
    /// `count` events or results dropped, the latest at `time`.
    Dropped {
        time: i64,
        count: u64,
        what: DroppedWhat,
        message: String,
    },
}

/// `message` with how many times it happened: `"… (3 times)"`, replacing a count it
/// already ends with; unchanged for once.
pub fn counted(message: &str, count: u64) -> String {
    let base = match message.rsplit_once(" (") {
        Some((base, tail))
            if tail
                .strip_suffix(" times)")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            base
        }
        _ => message,
    };
    if count > 1 {
        format!("{base} ({count} times)")
    } else {
        base.to_string()
    }
}

/// Every kind a child event has, for reading them back.
const KINDS: [EventKind; 7] = [
    EventKind::Started,
    EventKind::Restarted,
    EventKind::Exited,
    EventKind::Killed,
    EventKind::Fatal,
    EventKind::Stopped,
    EventKind::Unhealthy,
];

/// The metafile's form of a `ChildEvent`: the object a report carries.
#[derive(Serialize, Deserialize)]
struct StoredForm {
    time: i64,
    name: String,
    event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// A stored event that is not one this BootAgent makes.
#[derive(Debug)]
pub struct BadEvent(String);

impl fmt::Display for BadEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad event: {}", self.0)
    }
}

impl TryFrom<StoredForm> for ChildEvent {
    type Error = BadEvent;

    fn try_from(form: StoredForm) -> Result<Self, BadEvent> {
        let Some(kind) = KINDS.into_iter().find(|k| k.as_str() == form.event) else {
            return Err(BadEvent(format!("unknown kind {:?}", form.event)));
        };
        let exit = match (form.code, form.signal) {
            (None, None) => None,
            (Some(code), None) => Some(Exit::Code(code)),
            (None, Some(signal)) => Some(Exit::Signal(signal)),
            (Some(_), Some(_)) => {
                return Err(BadEvent(format!(
                    "{} of {} has both a code and a signal",
                    form.event, form.name
                )))
            }
        };
        let origin = match form.origin.as_deref() {
            None => Origin::Agent,
            Some("local") => Origin::Local,
            Some(other) => return Err(BadEvent(format!("unknown origin {other:?}"))),
        };
        Ok(ChildEvent {
            time: form.time,
            name: form.name,
            kind,
            exit,
            count: form.count,
            origin,
            message: form.message,
        })
    }
}

impl From<ChildEvent> for StoredForm {
    fn from(event: ChildEvent) -> Self {
        let (code, signal) = split_exit(event.exit);
        StoredForm {
            time: event.time,
            name: event.name,
            event: event.kind.as_str().to_string(),
            code,
            signal,
            count: event.count,
            message: event.message,
            origin: match event.origin {
                Origin::Agent => None,
                Origin::Local => Some("local".to_string()),
            },
        }
    }
}

/// An exit as the protocol's `code` and `signal`.
pub fn split_exit(exit: Option<Exit>) -> (Option<i32>, Option<i32>) {
    match exit {
        Some(Exit::Code(code)) => (Some(code), None),
        Some(Exit::Signal(signal)) => (None, Some(signal)),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back() {
        for kind in KINDS {
            let event = ChildEvent::new(5, "a", kind, "m".into());
            let text = serde_json::to_string(&event).expect("serialises");
            let back: ChildEvent = serde_json::from_str(&text).expect("reads back");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn events_stored_before_the_types_existed_read_the_same() {
        // As an earlier BootAgent wrote them: a supervisor's event, a worker kill,
        // a console's, BootAgent's own.
        let check = |text: &str, expected: ChildEvent| {
            let event: ChildEvent = serde_json::from_str(text).expect(text);
            assert_eq!(event, expected, "{text}");
            // And written back in the same form, for an older BootAgent.
            let again: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&event).expect("ser")).expect("json");
            let before: serde_json::Value = serde_json::from_str(text).expect("json");
            assert_eq!(again, before);
        };
        let mut exited =
            ChildEvent::new(100, "svc", EventKind::Exited, "exited with code 3".into());
        exited.exit = Some(Exit::Code(3));
        check(
            r#"{"code":3,"event":"exited","message":"exited with code 3","name":"svc","time":100}"#,
            exited,
        );
        check(
            r#"{"count":2,"event":"killed","message":"worker 7 (awk) killed (2 times)","name":"svc","signal":9,"time":101}"#,
            ChildEvent::worker_kills(101, "svc", "worker 7 (awk) killed", 2),
        );
        let mut local = ChildEvent::new(7, "a", EventKind::Stopped, "stop from the console".into());
        local.origin = Origin::Local;
        check(
            r#"{"event":"stopped","message":"stop from the console","name":"a","origin":"local","time":7}"#,
            local,
        );
        check(
            r#"{"event":"fatal","message":"m","name":"bootagent","time":1}"#,
            ChildEvent::new(1, "bootagent", EventKind::Fatal, "m".into()),
        );
    }

    #[test]
    fn a_stored_event_it_does_not_know_is_named() {
        for (text, part) in [
            (
                r#"{"event":"exploded","message":"","name":"a","time":1}"#,
                "unknown kind",
            ),
            (
                r#"{"event":"exited","code":1,"signal":9,"message":"","name":"a","time":1}"#,
                "both",
            ),
            (
                r#"{"event":"started","origin":"moon","message":"","name":"a","time":1}"#,
                "origin",
            ),
            (r#"{"event":"started","name":"a","time":1}"#, "message"),
        ] {
            let err = serde_json::from_str::<ChildEvent>(text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(part), "{err} lacks {part}");
        }
    }

    #[test]
    fn worker_kills_of_one_child_add_up() {
        let msg = "worker 7 (awk) killed by the kernel: over the child's memory 20M limit";
        let mut first = ChildEvent::worker_kills(100, "a", msg, 1);
        assert!(first.coalesce(&ChildEvent::worker_kills(103, "a", msg, 2)));
        assert_eq!((first.time, first.count), (103, Some(3)));
        assert_eq!(first.message, format!("{msg} (3 times)"));
        // Another child, or a kill of the whole child (no count): not added.
        assert!(!first.coalesce(&ChildEvent::worker_kills(104, "b", msg, 1)));
        let whole = ChildEvent::new(105, "a", EventKind::Killed, "killed".into());
        assert!(!first.coalesce(&whole));
        assert!(!whole.clone().coalesce(&first));
        assert_eq!(first.count, Some(3));
    }

    #[test]
    fn counted_replaces_a_count_it_ends_with() {
        assert_eq!(counted("x", 1), "x");
        assert_eq!(counted("x", 2), "x (2 times)");
        assert_eq!(counted("x (2 times)", 5), "x (5 times)");
        assert_eq!(counted("x (many times)", 3), "x (many times) (3 times)");
    }
}
