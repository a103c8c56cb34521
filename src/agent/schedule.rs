//! What asks for the next exchange, as data: the next server at once after a
//! failure, backoff after a failed round, a server's `Retry-After`, the agent's
//! phase after a report answered. The rule that weighs them is `pacing`; the core
//! moves them after each outcome in `timing.rs`.

use super::pacing;
use crate::wheel::Millis;

/// What asks for the next request, for the rule in `pacing` to weigh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Schedule {
    /// The next phase slot, or the first report after a start.
    pub scheduled_at: Option<Millis>,
    /// `scheduled_at` is a phase slot (not the first report after a start).
    pub scheduled_is_slot: bool,
    /// A prompt report asked for at this time (a job finished, a child changed).
    pub prompt_at: Option<Millis>,
    /// An answer asks for a prompt report once taken (a job result to deliver).
    pub report_wanted: bool,
    /// The next server after a failure, the end of a backoff or `Retry-After` wait.
    pub retry_at: Option<Millis>,
    /// A server's `Retry-After`: no exchange before this, prompt reports included.
    pub not_before: Option<Millis>,
    /// When the last status report that got an HTTP answer was sent.
    pub last_answered_at: Option<Millis>,
    /// The next report is exempt from the gap (docs/protocol.md section 3).
    pub exempt_next: bool,
}

impl Schedule {
    pub fn asks(&self, is_report: bool) -> pacing::Asks {
        pacing::Asks {
            scheduled: self.scheduled_at,
            prompt: self.prompt_at,
            retry: self.retry_at,
            not_before: self.not_before,
            last_answered: self.last_answered_at,
            is_report,
            exempt: self.exempt_next,
        }
    }

    /// A request goes out at `now`: it answers whatever asked, except a phase slot
    /// still ahead (a prompt report does not move the phase).
    pub fn sent(&mut self, now: Millis) {
        if self.scheduled_at.is_some_and(|at| at <= now) {
            self.scheduled_at = None;
        }
        self.prompt_at = None;
        self.retry_at = None;
        self.not_before = None;
        self.exempt_next = false;
        self.report_wanted = false;
    }

    /// A prompt report asked for at `now`; an earlier ask stands.
    pub fn prompt(&mut self, now: Millis) {
        self.prompt_at.get_or_insert(now);
    }

    /// A server's `Retry-After`: nothing before `at`, then a retry; the schedule
    /// starts again from the answer after it.
    pub fn hold_until(&mut self, at: Millis) {
        self.scheduled_at = None;
        self.not_before = Some(at);
        self.retry_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_answers_every_ask_but_a_slot_still_ahead() {
        let mut s = Schedule {
            scheduled_at: Some(50_000),
            scheduled_is_slot: true,
            report_wanted: true,
            exempt_next: true,
            ..Schedule::default()
        };
        s.prompt(1_000);
        s.prompt(2_000);
        assert_eq!(s.prompt_at, Some(1_000), "an earlier ask stands");
        s.hold_until(9_000);
        assert_eq!(
            s.scheduled_at, None,
            "Retry-After starts the schedule again"
        );
        s.scheduled_at = Some(50_000);
        s.sent(10_000);
        assert_eq!(
            s,
            Schedule {
                scheduled_at: Some(50_000),
                scheduled_is_slot: true,
                ..Schedule::default()
            },
            "only the slot ahead stays"
        );
        s.sent(50_000);
        assert_eq!(s.scheduled_at, None, "a slot due is answered");
    }

    #[test]
    fn the_rule_sees_every_ask() {
        let s = Schedule {
            scheduled_at: Some(1),
            prompt_at: Some(2),
            retry_at: Some(3),
            not_before: Some(4),
            last_answered_at: Some(5),
            exempt_next: true,
            ..Schedule::default()
        };
        let asks = s.asks(true);
        assert_eq!(
            (asks.scheduled, asks.prompt, asks.retry, asks.not_before),
            (Some(1), Some(2), Some(3), Some(4))
        );
        assert_eq!(asks.last_answered, Some(5));
        assert!(asks.is_report && asks.exempt);
        assert!(!s.asks(false).is_report);
    }
}
