//! Time. Schedules run on a monotonic scale (milliseconds since the clock was made);
//! the wall clock is read only for the `timestamp` field of reports, because hosts
//! boot at 1970 and jump when NTP syncs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use crate::wheel::Millis;

pub trait Clock {
    /// Monotonic milliseconds since the clock was made.
    fn now_ms(&self) -> Millis;
    /// Wall-clock Unix seconds (may be wrong, may jump; never used for schedules).
    fn wall_s(&self) -> i64;
}

/// The operating system's clocks.
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    pub fn new() -> Self {
        RealClock {
            origin: Instant::now(),
        }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> Millis {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn wall_s(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
    wall_s: AtomicI64,
}

impl ManualClock {
    pub fn new(wall_s: i64) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(0),
            wall_s: AtomicI64::new(wall_s),
        }
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
        let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        self.wall_s.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn wall_s(&self) -> i64 {
        self.wall_s.load(Ordering::SeqCst)
    }
}
