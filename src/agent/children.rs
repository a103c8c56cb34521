//! What the core keeps of the children: their descriptions for the next reports,
//! their events until acknowledged (a bounded, persisted queue), and their desired
//! states in the metafile.

use super::{Core, Effect};
use crate::meta::StoredEvent;
use crate::wheel::Millis;
use crate::wire::AgentStatus;

impl Core {
    /// The children to describe in the next reports.
    pub fn set_agents(&mut self, agents: Vec<AgentStatus>) {
        self.agents = agents;
    }

    /// Queues a child event for delivery (kept until acknowledged, persisted) and
    /// asks for a prompt report. Bounded at `pending_events_max` exactly, the
    /// `dropped` events included: past that, the event is dropped and counted in
    /// the one `dropped` event of kind `"events"`.
    pub fn push_event(&mut self, now: Millis, event: serde_json::Value, effects: &mut Vec<Effect>) {
        let max = self.limits.pending_events_max.max(2);
        let dropped = &mut self.meta.dropped;
        if self.meta.events.len() + 1 + dropped.markers() > max {
            dropped.events = dropped.events.saturating_add(1);
            dropped.events_time = event
                .get("time")
                .and_then(|t| t.as_i64())
                .unwrap_or(self.wall_s);
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
    /// in one `dropped` event of kind `"results"`.
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

    /// The `dropped` events of the next report: one per kind, with its count.
    pub(super) fn dropped_events(&self) -> Vec<serde_json::Value> {
        let max = self.limits.pending_events_max.max(2);
        let d = &self.meta.dropped;
        let mut out = Vec::new();
        if d.events > 0 {
            out.push(
                serde_json::json!({"time": d.events_time, "event": "dropped",
                "what": "events", "count": d.events,
                "message": format!("{} event(s) dropped: the queue holds {max}", d.events)}),
            );
        }
        if d.results > 0 {
            out.push(
                serde_json::json!({"time": d.results_time, "event": "dropped",
                "what": "results", "count": d.results,
                "message": format!("{} job result(s) dropped: at most {} wait for delivery",
                    d.results, self.limits.pending_results_max)}),
            );
        }
        out
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
