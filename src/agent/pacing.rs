//! When the next request goes out (docs/protocol.md sections 3 and 4): the one rule that
//! weighs everything that asks for a request, and the waits it is made of — the
//! agent's phase in the step, the first-report delay after a restart, the backoff
//! after a failed round, a server's `Retry-After`. Pure functions: the time and the
//! random draws are parameters, so a test can check them over any input.
//!
//! ```text
//!  asks                         the rule (next_request_at)
//!  ─────────────────────────    ──────────────────────────────────────────────
//!  scheduled: next phase slot ┐
//!  prompt: job done, child    ├─ earliest of them; a pending retry overrides both
//!  retry: next server,        ┘  (a failing or throttled agent waits its turn)
//!         backoff, Retry-After
//!  not_before (Retry-After) ───  nothing before it, prompt reports included
//!  last answered report ───────  a status report never less than `gap_ms` after
//!                                it, unless exempt (first report right after a
//!                                registration; next server after a connection
//!                                failure)
//! ```

use crate::rng::Rng;
use crate::wheel::Millis;

/// What asks for the next request, as the core knows it at one moment (monotonic
/// milliseconds throughout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asks {
    /// The report the schedule wants: the next phase slot, or the first report
    /// after a start.
    pub scheduled: Option<Millis>,
    /// A prompt report asked for at this time (a job finished, a child changed).
    pub prompt: Option<Millis>,
    /// A retry due at this time: the next server after a failure, the end of a
    /// backoff wait or of a `Retry-After` wait. While one is pending, the schedule
    /// and prompt reports wait for it.
    pub retry: Option<Millis>,
    /// A server's `Retry-After`: no request before this.
    pub not_before: Option<Millis>,
    /// When the last status report that got an HTTP answer was sent.
    pub last_answered: Option<Millis>,
    /// The next request is a status report (registrations are not held by the gap).
    pub is_report: bool,
    /// The next report is exempt from the gap: it is the first right after a
    /// registration, or the next server after a connection failure.
    pub exempt: bool,
}

/// The one rule: when the next request goes out, or `None` when nothing asks for one.
pub fn next_request_at(asks: &Asks, gap_ms: u64) -> Option<Millis> {
    let wanted = match asks.retry {
        Some(at) => at,
        None => match (asks.scheduled, asks.prompt) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        },
    };
    let mut at = wanted.max(asks.not_before.unwrap_or(0));
    if asks.is_report && !asks.exempt {
        if let Some(last) = asks.last_answered {
            at = at.max(last.saturating_add(gap_ms));
        }
    }
    Some(at)
}

/// The 64-bit hash of an SN that places the agent in the step: FNV-1a over its
/// bytes, then the finaliser of MurmurHash3 so that every bit of the SN moves the
/// high bits (which decide the phase).
pub fn sn_hash(sn: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sn.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The agent's phase in a step of `step_ms`: `h / 2^64 × step`, in milliseconds.
pub fn phase_ms(sn: &str, step_ms: u64) -> u64 {
    ((u128::from(sn_hash(sn)) * u128::from(step_ms)) >> 64) as u64
}

/// The first wall-clock time strictly after `after_wall_ms` that is a slot of
/// this phase: `(t - phase) mod step == 0`.
pub fn next_slot_wall_ms(after_wall_ms: i64, phase_ms: u64, step_ms: u64) -> i64 {
    let step = i128::from(step_ms.max(1));
    let after = i128::from(after_wall_ms);
    let ahead = (i128::from(phase_ms) - after).rem_euclid(step);
    let slot = after + if ahead == 0 { step } else { ahead };
    i64::try_from(slot).unwrap_or(i64::MAX)
}

/// The monotonic deadline of the next scheduled report, after a report sent at
/// `sent` (monotonic) when the wall clock read `sent_wall_ms`: the first slot more
/// than half a step after that report, converted to the monotonic scale with that
/// one reading. A wall-clock jump after it moves nothing already scheduled, and the
/// next report after the jump is again between half a step and a step and a half
/// after the previous one: at most one report early, never a burst or a stall.
/// Not before `now`: slots already past (a slow exchange) are skipped whole.
pub fn next_report_deadline(
    sent: Millis,
    sent_wall_ms: i64,
    now: Millis,
    phase_ms: u64,
    step_ms: u64,
) -> Millis {
    let step_ms = step_ms.max(1);
    let half = i64::try_from(step_ms / 2).unwrap_or(i64::MAX);
    let slot = next_slot_wall_ms(sent_wall_ms.saturating_add(half), phase_ms, step_ms);
    let ahead = u64::try_from(slot.saturating_sub(sent_wall_ms)).unwrap_or(0);
    let mut deadline = sent.saturating_add(ahead);
    if deadline < now {
        let behind = now - deadline;
        deadline = deadline.saturating_add(behind.div_ceil(step_ms).saturating_mul(step_ms));
    }
    deadline
}

/// The delay of the first report after a start of an agent already registered:
/// uniform in 0…min(step, `max_ms`).
pub fn first_report_delay_ms(step_ms: u64, max_ms: u64, rng: &mut Rng) -> Millis {
    rng.below_incl(step_ms.min(max_ms))
}

/// The backoff wait after `round` failed rounds (1 for the first): from
/// `initial_ms`, doubling, capped at `cap_ms` first, then drawn uniformly from
/// (100 − `jitter_pct`) % to 100 % of the capped value, so waits never pile up on
/// the cap.
pub fn backoff_wait_ms(
    round: u32,
    initial_ms: u64,
    cap_ms: u64,
    jitter_pct: u64,
    rng: &mut Rng,
) -> Millis {
    let doublings = round.saturating_sub(1).min(62);
    let capped = initial_ms
        .saturating_mul(1u64 << doublings)
        .min(cap_ms)
        .max(1);
    let spread = capped.saturating_mul(jitter_pct.min(100)) / 100;
    capped - spread + rng.below_incl(spread)
}

/// The wait a server's `Retry-After` asks for: capped at the step, at least
/// `min_ms`, plus a random extra of up to `extra_pct` percent of it, so that a
/// fleet told to come back in 30 s does not come back in the same second.
pub fn retry_after_wait_ms(
    retry_after_s: u64,
    step_ms: u64,
    min_ms: u64,
    extra_pct: u64,
    rng: &mut Rng,
) -> Millis {
    let base = retry_after_s
        .saturating_mul(1000)
        .min(step_ms)
        .max(min_ms)
        .max(1);
    base + rng.below_incl(base.saturating_mul(extra_pct.min(100)) / 100)
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds, or an HTTP date taken
/// relative to `now_wall_s` (the answer's own `Date` when it has one, so that an
/// agent whose clock is wrong still waits what the server meant). A date in the
/// past is 0; anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now_wall_s: i64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().unwrap_or(u64::MAX)); // all digits: only too big
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let at = date
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())?;
    Some(u64::try_from(at.saturating_sub(now_wall_s)).unwrap_or(0))
}

#[cfg(test)]
#[path = "pacing_tests.rs"]
mod tests;
