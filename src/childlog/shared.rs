//! What the handles of the child logs and the log thread both see (`Shared`: the
//! attached slots, the stop flags, the counters), and the bound on attached pipes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Pipes attached at once, across all children.
pub const ATTACHED_MAX: usize = 1024;
/// Capacity of the attach queue. A queued pipe holds one of the `ATTACHED_MAX` slots,
/// so the queue is never full when `attach` has found a free slot: `attach` never waits.
pub(super) const ATTACH_QUEUE_MAX: usize = ATTACHED_MAX;

/// What the handles and the thread both see.
pub(super) struct Shared {
    pub(super) attached_max: usize,
    /// Pipes attached or queued.
    pub(super) attached: AtomicUsize,
    pub(super) stopping: AtomicBool,
    /// Stopping to hand the pipes over to the next image (an exec), not to close them.
    pub(super) handing_over: AtomicBool,
    pub(super) read_bytes: AtomicU64,
    pub(super) dropped_bytes: AtomicU64,
    /// Bytes dropped for being over `bytes_per_s_max`.
    pub(super) shed_bytes: AtomicU64,
    /// Write failure streaks, each warned about once.
    pub(super) failure_streaks: AtomicU64,
    /// The log thread's kernel thread id and its rounds, for the idle test.
    #[cfg(test)]
    pub(super) tid: std::sync::atomic::AtomicI32,
    #[cfg(test)]
    pub(super) rounds: AtomicU64,
}

impl Shared {
    pub(super) fn new(attached_max: usize) -> Shared {
        Shared {
            attached_max: attached_max.min(ATTACH_QUEUE_MAX),
            attached: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            read_bytes: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            shed_bytes: AtomicU64::new(0),
            failure_streaks: AtomicU64::new(0),
            #[cfg(test)]
            tid: std::sync::atomic::AtomicI32::new(0),
            #[cfg(test)]
            rounds: AtomicU64::new(0),
        }
    }

    /// Gives back an attached slot.
    pub(super) fn release(&self) {
        // Never an error: the closure always gives a value.
        let _ = self
            .attached
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }
}
