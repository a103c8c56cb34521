//! What the core keeps of the children: their descriptions for the next reports,
//! their events until acknowledged (a bounded, persisted queue), and their desired
//! states in the metafile.

use super::{Core, Effect};
use crate::meta::StoredEvent;
use crate::report_event::{ChildEvent, DroppedWhat, ReportEvent};
use crate::wheel::Millis;
use crate::wire::AgentStatus;
use std::collections::BTreeSet;

impl Core {
    /// The children to describe in the next reports.
    pub fn set_agents(&mut self, agents: Vec<AgentStatus>) {
        self.agents = agents;
    }

    /// Queues a child event for delivery (kept until acknowledged, persisted) and
    /// asks for a prompt report. Bounded at `pending_events_max` exactly, the
    /// `dropped` events included: past that, the event is dropped and counted in
    /// the one `dropped` event of what `events`.
    pub fn push_event(&mut self, now: Millis, event: ChildEvent, effects: &mut Vec<Effect>) {
        let max = self.limits.pending_events_max.max(2);
        // An event already on its way to the server must not change under it.
        let in_flight_seq = self.in_flight.as_ref().map_or(0, |f| f.carried_events_seq);
        if coalesce(&mut self.meta.events, in_flight_seq, &event) {
            effects.push(Effect::SaveMeta);
            self.request_report(now);
            return;
        }
        let dropped = &mut self.meta.dropped;
        if self.meta.events.len() + 1 + dropped.markers() > max {
            dropped.events = dropped.events.saturating_add(1);
            dropped.events_time = event.time;
            self.keep_events_bound();
        } else {
            self.meta.event_seq += 1;
            self.meta.events.push(StoredEvent {
                seq: self.meta.event_seq,
                event,
            });
        }
        effects.push(Effect::SaveMeta);
        self.request_report(now);
    }

    /// Counts `count` job results dropped past `pending_results_max`, reported
    /// in one `dropped` event of what `results`.
    pub(super) fn drop_results(&mut self, count: u64) {
        self.meta.dropped.results = self.meta.dropped.results.saturating_add(count);
        self.meta.dropped.results_time = self.wall_s;
        self.keep_events_bound();
    }

    /// A new `dropped` event takes the place of the newest queued event when the
    /// queue is full, so that the bound holds exactly.
    fn keep_events_bound(&mut self) {
        let max = self.limits.pending_events_max.max(2);
        while self.meta.events.len() + self.meta.dropped.markers() > max {
            if self.meta.events.pop().is_none() {
                break; // max >= 2 >= markers: cannot happen
            }
            let dropped = &mut self.meta.dropped;
            dropped.events = dropped.events.saturating_add(1);
            if dropped.events_time == 0 {
                dropped.events_time = self.wall_s;
            }
        }
    }

    /// The events of the next report: those queued, oldest first, then one
    /// `dropped` event per what was dropped, with its count.
    pub(super) fn report_events(&self) -> Vec<ReportEvent> {
        let max = self.limits.pending_events_max.max(2);
        let d = &self.meta.dropped;
        let mut out: Vec<ReportEvent> = (self.meta.events.iter())
            .map(|e| ReportEvent::Child(e.event.clone()))
            .collect();
        if d.events > 0 {
            out.push(ReportEvent::Dropped {
                time: d.events_time,
                count: d.events,
                what: DroppedWhat::Events,
                message: format!("{} event(s) dropped: the queue holds {max}", d.events),
            });
        }
        if d.results > 0 {
            out.push(ReportEvent::Dropped {
                time: d.results_time,
                count: d.results,
                what: DroppedWhat::Results,
                message: format!(
                    "{} job result(s) dropped: at most {} wait for delivery",
                    d.results, self.limits.pending_results_max
                ),
            });
        }
        out
    }

    /// The children held `fatal` by the restart policy, kept in the metafile for a
    /// restart of BootAgent within the same boot.
    pub fn set_fatal(&mut self, fatal: BTreeSet<String>, effects: &mut Vec<Effect>) {
        if self.meta.fatal != fatal {
            self.meta.fatal = fatal;
            effects.push(Effect::SaveMeta);
        }
    }

    /// Desired states of the children, kept in the metafile.
    pub fn set_stopped(&mut self, name: &str, stopped: bool, effects: &mut Vec<Effect>) {
        let changed = if stopped {
            self.meta.stopped.insert(name.to_string())
        } else {
            self.meta.stopped.remove(name)
        };
        if changed {
            effects.push(Effect::SaveMeta);
        }
    }
}

/// Repeated kills of a child's worker processes are one event per child per report
/// (docs/protocol.md section 3): a `killed` event with a `count` is added to one of the
/// same child still waiting to be sent (not carried by the report in flight). True if it was.
fn coalesce(events: &mut [StoredEvent], in_flight_seq: u64, event: &ChildEvent) -> bool {
    event.count.is_some()
        && (events.iter_mut().rev())
            .filter(|stored| stored.seq > in_flight_seq)
            .any(|stored| stored.event.coalesce(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::EventKind;

    fn stored(seq: u64, event: ChildEvent) -> StoredEvent {
        StoredEvent { seq, event }
    }

    #[test]
    fn worker_kills_of_one_child_are_one_event_per_report() {
        let msg = "worker 7 (awk) killed by the kernel: over the child's memory 20M limit";
        let kill =
            |time: i64, name: &str, count: u64| ChildEvent::worker_kills(time, name, msg, count);
        let whole = ChildEvent::new(
            101,
            "a",
            EventKind::Killed,
            "killed for exceeding its memory 20M limit".into(),
        );
        let mut events = vec![stored(1, kill(100, "a", 1)), stored(2, whole.clone())];
        // Carried by the report in flight: not changed under it.
        assert!(!coalesce(&mut events, 2, &kill(102, "a", 2)));
        // Waiting: added up, the newer time and message.
        assert!(coalesce(&mut events, 0, &kill(103, "a", 2)));
        assert_eq!(events[0].event.count, Some(3));
        assert_eq!(events[0].event.time, 103);
        assert_eq!(events[0].event.message, format!("{msg} (3 times)"));
        // Another child, or a kill of the whole child (no count): an event of its own.
        assert!(!coalesce(&mut events, 0, &kill(104, "b", 1)));
        assert!(!coalesce(&mut events, 0, &whole));
        assert_eq!(events[1].event, whole);
    }
}
