//! How the core moves its `Schedule` after each outcome, and when the next exchange
//! is due: the next server at once after a failure, backoff after a failed round,
//! a server's `Retry-After`, the agent's phase after a report answered; the log of
//! a failure that repeats (`outage`).

use super::outage::{Line, Trouble};
use super::{pacing, Core, InFlight, Phase};
use crate::addr::ServerAddr;
use crate::wheel::Millis;
use log::{debug, info, warn};

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
