//! What asks for the next exchange, and its timer: the next server at once after a
//! failure, backoff after a failed round, a server's `Retry-After`, the agent's
//! phase after a report answered. The rule that weighs them is `pacing`; the log
//! of a failure that repeats is `outage`.

use super::outage::{Line, Trouble};
use super::{pacing, Core, InFlight, Phase};
use crate::addr::ServerAddr;
use crate::wheel::Millis;
use log::{debug, info, warn};

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

impl Core {
    pub(super) fn step_ms(&self) -> u64 {
        self.meta.step_s.max(1).saturating_mul(1000)
    }

    /// Everything that asks for the next request, for the rule.
    pub(super) fn asks(&self) -> pacing::Asks {
        self.schedule.asks(self.phase == Phase::Report)
    }

    /// Sets the exchange timer to what the rule says (nothing while an exchange is
    /// in flight: its outcome decides again).
    pub(super) fn reschedule(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        self.exchange_at = pacing::next_request_at(&self.asks(), self.limits.report_gap_min_ms);
    }

    /// An exchange failed: the next server at once, or backoff after a round.
    pub(super) fn failed(&mut self, now: Millis, flight: &InFlight, err: String, trouble: Trouble) {
        let what = match flight.phase {
            Phase::Register => "register",
            Phase::Report => "status",
        };
        debug!("{what} to {} failed: {err}", flight.server);
        let detail = format!("{what} to {} failed: {err}", flight.server);
        self.log_trouble(now, trouble, &detail);
        self.schedule.scheduled_at = None; // the schedule starts again from the recovery
        if !self.servers.failed() {
            self.schedule.retry_at = Some(now); // next server at once
            return;
        }
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let delay = self.backoff_delay_ms(self.failed_rounds);
        debug!(
            "{what}: every server failed; next round in {:.1} s",
            delay as f64 / 1000.0
        );
        self.schedule.retry_at = Some(now.saturating_add(delay));
    }

    /// A server asked to come back later: that wait, capped, with a random extra.
    pub(super) fn throttled(&mut self, now: Millis, flight: &InFlight, status: u16, secs: u64) {
        let wait = pacing::retry_after_wait_ms(
            secs,
            self.step_ms(),
            self.limits.retry_after_min_ms,
            self.limits.retry_after_extra_pct,
            &mut self.rng,
        );
        let detail = format!(
            "{} answered HTTP {status} with Retry-After {secs} s (waiting {:.1} s)",
            flight.server,
            wait as f64 / 1000.0
        );
        debug!("{detail}");
        self.log_trouble(now, Trouble::Throttled, &detail);
        self.schedule.hold_until(now.saturating_add(wait));
    }

    pub(super) fn log_trouble(&mut self, now: Millis, trouble: Trouble, detail: &str) {
        let interval = self.limits.failure_log_interval_ms;
        match self.outage.trouble(now, trouble, detail, interval) {
            Some(Line::Warn(line)) | Some(Line::Info(line)) => warn!("{line}"),
            None => {}
        }
    }

    pub(super) fn recovered(&mut self, now: Millis, server: &ServerAddr) {
        if let Some(Line::Info(line) | Line::Warn(line)) =
            self.outage.recovered(now, &server.to_string())
        {
            info!("{line}");
        }
        self.failed_rounds = 0;
    }

    /// Backoff after `round` failed rounds: 1 s doubling, capped at min(step, 300 s),
    /// then 50–100 % of the capped value (section 4).
    pub(super) fn backoff_delay_ms(&mut self, round: u32) -> Millis {
        let cap_ms = self
            .meta
            .step_s
            .min(self.limits.backoff_cap_s)
            .max(1)
            .saturating_mul(1000);
        pacing::backoff_wait_ms(
            round,
            self.limits.backoff_initial_ms,
            cap_ms,
            self.limits.backoff_jitter_pct,
            &mut self.rng,
        )
    }

    /// The next scheduled report after the report of `flight`, at the agent's phase.
    pub(super) fn next_phase_slot(&self, now: Millis, flight: &InFlight) -> Millis {
        let step_ms = self.step_ms();
        pacing::next_report_deadline(
            flight.sent_at,
            flight.sent_wall_ms,
            now,
            pacing::phase_ms(&self.meta.agentsn, step_ms),
            step_ms,
        )
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
