//! What the core keeps of the children: their descriptions for the next reports,
//! their events until acknowledged (`EventQueue`, in the metafile), and their desired
//! states in the metafile.

use super::{Core, Effect};
use crate::report_event::{ChildEvent, ReportEvent};
use crate::wheel::Millis;
use crate::wire::AgentStatus;
use std::collections::BTreeSet;

impl Core {
    /// The children to describe in the next reports.
    pub fn set_agents(&mut self, agents: Vec<AgentStatus>) {
        self.agents = agents;
    }

    /// Queues a child event for delivery (kept until acknowledged, persisted) and
    /// asks for a prompt report; bounded at `pending_events_max` exactly, the
    /// `dropped` events included (see `EventQueue`).
    pub fn push_event(&mut self, now: Millis, event: ChildEvent, effects: &mut Vec<Effect>) {
        // An event already on its way to the server must not change under it.
        let in_flight_seq = self.in_flight.as_ref().map_or(0, |f| f.carried_events.seq);
        (self.meta.events).push(event, in_flight_seq, self.limits.pending_events_max);
        effects.push(Effect::SaveMeta);
        self.request_report(now);
    }

    /// Counts `count` job results dropped past `pending_results_max`, reported
    /// in one `dropped` event of what `results`.
    pub(super) fn drop_results(&mut self, count: u64) {
        (self.meta.events).drop_results(count, self.wall_s, self.limits.pending_events_max);
    }

    /// The events of the next report.
    pub(super) fn report_events(&self) -> Vec<ReportEvent> {
        (self.meta.events).report(
            self.limits.pending_events_max,
            self.limits.pending_results_max,
        )
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
