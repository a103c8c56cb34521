//! Time. Schedules run on a monotonic scale (milliseconds since the clock was made);
//! the wall clock is read only for the `timestamp` field of reports, because hosts
//! boot at 1970 and jump when NTP syncs.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::wheel::Millis;

pub trait Clock {
    /// Monotonic milliseconds since the clock was made.
    fn now_ms(&self) -> Millis;
    /// Wall-clock Unix milliseconds (may be wrong, may jump). Schedules read it only
    /// to place a report at the agent's phase, turned into a monotonic deadline at once.
    fn wall_ms(&self) -> i64;
    /// Wall-clock Unix seconds, for timestamps.
    fn wall_s(&self) -> i64 {
        self.wall_ms().div_euclid(1000)
    }
    /// The loop's sleep: the next of `events`, or a timeout at `deadline` on this
    /// clock's scale (`None`: no deadline). A real clock sleeps in the channel; a
    /// simulation's moves its own time instead, so a month passes in seconds.
    fn wait<T>(
        &self,
        events: &Receiver<T>,
        deadline: Option<Millis>,
    ) -> Result<T, RecvTimeoutError> {
        match deadline {
            Some(deadline) => {
                let wait_ms = deadline.saturating_sub(self.now_ms());
                events.recv_timeout(Duration::from_millis(wait_ms))
            }
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    }
}

/// The operating system's clocks.
pub struct RealClock {
    origin: Instant,
    /// Milliseconds the scale already had at `origin` (an image after an exec
    /// hand-over continues its predecessor's scale, so carried deadlines hold).
    offset_ms: u64,
}

impl RealClock {
    pub fn new() -> Self {
        RealClock {
            origin: Instant::now(),
            offset_ms: 0,
        }
    }

    /// A clock that continues the scale of a clock whose zero was at `origin_ms` of
    /// `CLOCK_MONOTONIC` (which an exec does not reset).
    pub fn continuing(origin_ms: u64) -> Self {
        RealClock {
            origin: Instant::now(),
            offset_ms: crate::sys::monotonic_ms().saturating_sub(origin_ms),
        }
    }

    /// Where this scale's zero is on `CLOCK_MONOTONIC`, in milliseconds.
    pub fn origin_ms(&self) -> u64 {
        crate::sys::monotonic_ms().saturating_sub(self.now_ms())
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> Millis {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.saturating_add(elapsed)
    }

    fn wall_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}
