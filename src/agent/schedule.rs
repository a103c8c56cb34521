//! When the next exchange is due: the next server at once after a failure, backoff
//! after a failed round, the jittered step after a success, and the exchange timer.

use super::{Core, InFlight, Phase, Timer};
use crate::addr::ServerAddr;
use crate::wheel::Millis;
use log::{debug, info, warn};

impl Core {
    pub(super) fn failed(&mut self, now: Millis, flight: &InFlight, err: String) {
        self.failed_attempts += 1;
        let what = match flight.phase {
            Phase::Register => "register",
            Phase::Report => "status",
        };
        debug!("{what} to {} failed: {err}", flight.server);
        self.last_error = format!("{}: {err}", flight.server);
        if !self.servers.failed() {
            self.schedule_exchange(now); // next server at once
            return;
        }
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let delay = self.backoff_delay_ms(self.failed_rounds);
        warn!(
            "{what}: every server failed ({} attempt(s) failed so far; last: {}); next round in {:.1} s",
            self.failed_attempts,
            self.last_error,
            delay as f64 / 1000.0
        );
        self.schedule_exchange(now.saturating_add(delay));
    }

    pub(super) fn recovered(&mut self, server: &ServerAddr) {
        if self.failed_attempts > 0 {
            info!(
                "{server} answered again after {} failed attempt(s)",
                self.failed_attempts
            );
        }
        self.failed_rounds = 0;
        self.failed_attempts = 0;
    }

    /// Backoff after `round` failed rounds: 1 s doubling, ± 50 %, capped at
    /// min(step, 300 s) (section 4).
    pub(super) fn backoff_delay_ms(&mut self, round: u32) -> Millis {
        let cap_ms = self
            .meta
            .step_s
            .min(self.limits.backoff_cap_s)
            .saturating_mul(1000);
        let doublings = round.saturating_sub(1).min(40);
        let base = self
            .limits
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(cap_ms);
        self.rng
            .jitter(base, self.limits.backoff_jitter_pct)
            .min(cap_ms)
    }

    pub(super) fn step_delay_ms(&mut self) -> Millis {
        let step_ms = self.meta.step_s.saturating_mul(1000);
        self.rng.jitter(step_ms, self.limits.step_jitter_pct)
    }

    pub(super) fn schedule_exchange(&mut self, at: Millis) {
        if let Some((id, _)) = self.exchange_timer.take() {
            self.wheel.cancel(id);
        }
        self.exchange_timer = Some((self.wheel.insert(at, Timer::Exchange), at));
    }

    pub(super) fn schedule_exchange_no_later_than(&mut self, at: Millis) {
        match self.exchange_timer {
            Some((_, pending_at)) if pending_at <= at => {}
            _ => self.schedule_exchange(at),
        }
    }
}
