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
    /// asks for a prompt report. Bounded at `pending_events_max`: past that, newer
    /// events are counted in one trailing `dropped` event.
    pub fn push_event(&mut self, now: Millis, event: serde_json::Value, effects: &mut Vec<Effect>) {
        let max = self.limits.pending_events_max.max(2);
        // A marker already on its way to the server must not change under it.
        let in_flight_seq = self.in_flight.as_ref().map_or(0, |f| f.carried_events_seq);
        let events = &mut self.meta.events;
        if events.len() + 1 >= max {
            let dropped = match events.last_mut() {
                Some(last)
                    if last.seq > in_flight_seq
                        && last.event.get("event").and_then(|e| e.as_str()) == Some("dropped") =>
                {
                    last
                }
                _ => {
                    self.meta.event_seq += 1;
                    events.push(StoredEvent {
                        seq: self.meta.event_seq,
                        event: serde_json::json!({"time": event.get("time"), "name": "", "event": "dropped", "count": 0}),
                    });
                    match events.last_mut() {
                        Some(last) => last,
                        None => return, // just pushed
                    }
                }
            };
            let count = dropped
                .event
                .get("count")
                .and_then(|c| c.as_u64())
                .unwrap_or(0)
                + 1;
            dropped.event["count"] = count.into();
            dropped.event["message"] =
                format!("{count} event(s) dropped: the queue holds {max}").into();
        } else {
            self.meta.event_seq += 1;
            events.push(StoredEvent {
                seq: self.meta.event_seq,
                event,
            });
        }
        effects.push(Effect::SaveMeta);
        self.request_report(now);
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
