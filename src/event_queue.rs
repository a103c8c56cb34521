//! The events of the reports until a server acknowledged them (docs/protocol.md
//! section 3): a bounded queue, kept in the metafile.
//!
//! At most `max` events wait, the `dropped` events included: past that, an event is
//! not queued but counted, and the reports carry one `dropped` event per what was
//! dropped (events, job results) with its count. Worker kills of one child that
//! wait for the same report are one event (`ChildEvent::coalesce`). An event a
//! report in flight carries never changes under it, and an acknowledged report
//! takes away exactly what it carried: the events up to its sequence number and
//! the drops it counted. Pure: times are parameters.

use crate::report_event::{ChildEvent, DroppedWhat, ReportEvent};
use serde::{Deserialize, Serialize};

/// The queue as the metafile keeps it, flattened into the metafile's object:
/// `events`, `event_seq` and `dropped`, as every BootAgent wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQueue {
    /// Child events not yet acknowledged by a server, oldest first.
    #[serde(default)]
    pub events: Vec<StoredEvent>,
    /// Sequence number of the last event queued.
    #[serde(default)]
    pub event_seq: u64,
    /// Events and results dropped past their bounds and not yet reported as such.
    #[serde(default, skip_serializing_if = "Dropped::is_empty")]
    pub dropped: Dropped,
}

/// One queued event: its sequence number and the event, kept in the form a report
/// carries it (as every BootAgent wrote it, see `report_event`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: ChildEvent,
}

/// How many events and job results were dropped past their bounds since a
/// server last acknowledged a report saying so; each count becomes one `dropped`
/// event of the reports, at the time of the latest drop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub events_time: i64,
    #[serde(default)]
    pub results: u64,
    #[serde(default)]
    pub results_time: i64,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.results == 0
    }

    /// How many `dropped` events the reports carry: 0, 1 or 2.
    pub fn markers(&self) -> usize {
        usize::from(self.events > 0) + usize::from(self.results > 0)
    }
}

/// What a report carried of the queue, to take away once it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// The sequence number of the last event it carried.
    pub seq: u64,
    /// The events and results it counted as dropped.
    pub dropped_events: u64,
    pub dropped_results: u64,
}

/// The smallest bound: room for the two `dropped` events.
const BOUND_MIN: usize = 2;

impl EventQueue {
    /// Queues `event`, or adds it to a waiting worker kill of the same child, or
    /// counts it dropped when `max` are waiting (the `dropped` events included).
    /// `in_flight_seq`: the last event a report in flight carries (0 without).
    pub fn push(&mut self, event: ChildEvent, in_flight_seq: u64, max: usize) {
        let max = max.max(BOUND_MIN);
        if event.count.is_some()
            && (self.events.iter_mut().rev())
                .filter(|stored| stored.seq > in_flight_seq)
                .any(|stored| stored.event.coalesce(&event))
        {
            return;
        }
        if self.events.len() + 1 + self.dropped.markers() > max {
            self.dropped.events = self.dropped.events.saturating_add(1);
            self.dropped.events_time = event.time;
            self.keep_bound(max, event.time);
        } else {
            self.event_seq += 1;
            self.events.push(StoredEvent {
                seq: self.event_seq,
                event,
            });
        }
    }

    /// Counts `count` job results dropped at `wall_s`.
    pub fn drop_results(&mut self, count: u64, wall_s: i64, max: usize) {
        self.dropped.results = self.dropped.results.saturating_add(count);
        self.dropped.results_time = wall_s;
        self.keep_bound(max.max(BOUND_MIN), wall_s);
    }

    /// A new `dropped` event takes the place of the newest queued event when the
    /// queue is full, so that the bound holds exactly.
    fn keep_bound(&mut self, max: usize, wall_s: i64) {
        while self.events.len() + self.dropped.markers() > max {
            if self.events.pop().is_none() {
                break; // max >= 2 >= markers: cannot happen
            }
            self.dropped.events = self.dropped.events.saturating_add(1);
            if self.dropped.events_time == 0 {
                self.dropped.events_time = wall_s;
            }
        }
    }

    /// The events of the next report: those queued, oldest first, then one
    /// `dropped` event per what was dropped. `max` and `results_max` are named in
    /// their messages.
    pub fn report(&self, max: usize, results_max: usize) -> Vec<ReportEvent> {
        let max = max.max(BOUND_MIN);
        let d = &self.dropped;
        let mut out: Vec<ReportEvent> = (self.events.iter())
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
                    "{} job result(s) dropped: at most {results_max} wait for delivery",
                    d.results
                ),
            });
        }
        out
    }

    /// What a report built now carries.
    pub fn carried(&self) -> Carried {
        Carried {
            seq: self.events.last().map_or(0, |e| e.seq),
            dropped_events: self.dropped.events,
            dropped_results: self.dropped.results,
        }
    }

    /// A report that carried `carried` was acknowledged: what it carried goes;
    /// drops counted while it was on its way stay for the next one. True if the
    /// queue changed.
    pub fn acknowledge(&mut self, carried: Carried) -> bool {
        let before = self.events.len();
        self.events.retain(|e| e.seq > carried.seq);
        let d = &mut self.dropped;
        d.events = d.events.saturating_sub(carried.dropped_events);
        d.results = d.results.saturating_sub(carried.dropped_results);
        self.events.len() != before || carried.dropped_events > 0 || carried.dropped_results > 0
    }

    /// How many entries the next report's `events` has.
    pub fn len(&self) -> usize {
        self.events.len() + self.dropped.markers()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::{EventKind, Exit};

    fn exited(time: i64, code: i32) -> ChildEvent {
        let mut event = ChildEvent::new(time, "svc", EventKind::Exited, format!("code {code}"));
        event.exit = Some(Exit::Code(code));
        event
    }

    fn dropped(events: &[ReportEvent]) -> Vec<(DroppedWhat, u64)> {
        (events.iter())
            .filter_map(|e| match e {
                ReportEvent::Dropped { what, count, .. } => Some((*what, *count)),
                ReportEvent::Child(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_bound_holds_exactly_with_the_dropped_events_counted_in() {
        let mut q = EventQueue::default();
        for i in 0..8 {
            q.push(exited(i, i as i32), 0, 5);
            assert!(q.len() <= 5, "{i}: {}", q.len());
        }
        // Four events and one `dropped` counting the other four.
        let report = q.report(5, 10);
        assert_eq!(report.len(), 5);
        assert_eq!(dropped(&report), [(DroppedWhat::Events, 4)]);
        // Dropped results take the place of the newest event.
        q.drop_results(3, 50, 5);
        let report = q.report(5, 10);
        assert_eq!(report.len(), 5);
        assert_eq!(
            dropped(&report),
            [(DroppedWhat::Events, 5), (DroppedWhat::Results, 3)]
        );
        // A bound below two still leaves room for both `dropped` events.
        let mut tiny = EventQueue::default();
        tiny.push(exited(1, 1), 0, 0);
        tiny.drop_results(1, 1, 0);
        tiny.push(exited(2, 2), 0, 0);
        assert_eq!(tiny.len(), 2);
    }

    #[test]
    fn an_acknowledged_report_takes_away_what_it_carried_and_no_more() {
        let mut q = EventQueue::default();
        for i in 0..4 {
            q.push(exited(i, 0), 0, 3);
        }
        let carried = q.carried();
        assert_eq!(carried.dropped_events, 2);
        // Meanwhile: one more dropped, while the report is on its way.
        q.push(exited(9, 0), carried.seq, 3);
        assert!(q.acknowledge(carried));
        assert!(q.events.is_empty());
        assert_eq!(q.dropped.events, 1, "the drop after the report stays");
        assert!(q.acknowledge(q.carried()));
        assert!(q.is_empty());
        assert!(!q.acknowledge(q.carried()), "nothing left to change");
    }

    #[test]
    fn worker_kills_are_coalesced_only_while_waiting() {
        let msg = "worker 7 (awk) killed";
        let kill = |time, count| ChildEvent::worker_kills(time, "svc", msg, count);
        let mut q = EventQueue::default();
        q.push(kill(1, 1), 0, 10);
        q.push(kill(2, 2), 0, 10);
        assert_eq!(q.events.len(), 1);
        assert_eq!(q.events[0].event.count, Some(3));
        // Carried by the report in flight: a new event of its own.
        let in_flight = q.carried().seq;
        q.push(kill(3, 1), in_flight, 10);
        q.push(kill(4, 5), in_flight, 10);
        assert_eq!(q.events.len(), 2);
        assert_eq!(
            q.events[0].event.count,
            Some(3),
            "unchanged under the report"
        );
        assert_eq!(q.events[1].event.count, Some(6));
        assert_eq!(q.events[1].event.message, format!("{msg} (6 times)"));
    }

    #[test]
    fn the_queue_of_an_older_metafile_reads_the_same() {
        let old = r#"{"events":[{"seq":4,"event":{"event":"started","message":"started","name":"a","time":3}}],
            "event_seq":4,"dropped":{"events":2,"events_time":1,"results":0,"results_time":0}}"#;
        let q: EventQueue = serde_json::from_str(old).expect("older queue");
        assert_eq!(q.event_seq, 4);
        assert_eq!(q.events[0].event.kind, EventKind::Started);
        assert_eq!(dropped(&q.report(10, 10)), [(DroppedWhat::Events, 2)]);
        let empty: EventQueue = serde_json::from_str("{}").expect("none");
        assert!(empty.is_empty());
    }
}
