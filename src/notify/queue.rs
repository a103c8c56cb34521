//! The two bounds of the notify thread, pure (`now` is a parameter): the rate of
//! datagrams read per child, and the messages kept while the loop cannot take them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::message::Message;

/// Most datagrams read from one child's socket per second. Past that its socket is not
/// polled until the second is over: the rest wait in the kernel's queue (and a sender
/// that goes on blocks, or fails with `EAGAIN`), so a flooding child costs BootAgent
/// little and delays no other child.
pub const DATAGRAMS_PER_S_MAX: u32 = 64;
/// Most datagrams read per second from all sockets together, so that many flooding
/// children at once still cost BootAgent little (each datagram costs a few reads of
/// `/proc`). Past it no socket is polled until the second is over; the next round
/// begins with the socket the budget ran out on.
pub const DATAGRAMS_PER_S_TOTAL_MAX: u32 = 1024;
/// Most messages kept for one child while the loop's channel is full: one per sender,
/// each the coalesced latest of every kind of notice; past that the oldest goes.
pub const PENDING_PER_CHILD_MAX: usize = 4;
/// The window of [`DATAGRAMS_PER_S_MAX`] and [`DATAGRAMS_PER_S_TOTAL_MAX`].
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What one socket (or all of them) may still read in the current second.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    start: Instant,
    used: u32,
    /// Datagrams a second.
    max: u32,
}

impl Allowance {
    pub fn new(now: Instant, max: u32) -> Allowance {
        Allowance {
            start: now,
            used: 0,
            max,
        }
    }

    /// Takes one datagram's worth; false when this second's is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= RATE_WINDOW {
            *self = Allowance::new(now, self.max);
        }
        if self.used >= self.max {
            return false;
        }
        self.used += 1;
        true
    }

    /// Gives back what `take` took for a read that found nothing.
    pub fn refund(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    /// When a spent allowance is renewed; `None` while datagrams may be read.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        let end = self.start + RATE_WINDOW;
        (self.used >= self.max && now < end).then_some(end)
    }
}

/// The messages the loop could not take yet, oldest first, at most
/// [`PENDING_PER_CHILD_MAX`] per child.
#[derive(Debug, Default)]
pub struct Backlog {
    queue: VecDeque<Message>,
    /// Messages dropped since the backlog was last empty.
    dropped: u64,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether messages of `child` wait: a newer one must queue behind them.
    pub fn holds(&self, child: &str) -> bool {
        self.queue.iter().any(|m| m.child == child)
    }

    /// Queues `message`: merged into the waiting one of the same child and sender (each
    /// kind of notice once, the latest), else appended, dropping the child's oldest when
    /// it has [`PENDING_PER_CHILD_MAX`]. True when a message was dropped.
    pub fn push(&mut self, message: Message) -> bool {
        let same_sender = self
            .queue
            .iter_mut()
            .find(|m| m.child == message.child && m.sender.pid == message.sender.pid);
        if let Some(waiting) = same_sender {
            merge(waiting, message);
            return false;
        }
        let mut dropped = false;
        if self
            .queue
            .iter()
            .filter(|m| m.child == message.child)
            .count()
            >= PENDING_PER_CHILD_MAX
        {
            if let Some(oldest) = self.queue.iter().position(|m| m.child == message.child) {
                self.queue.remove(oldest);
                self.dropped += 1;
                dropped = true;
            }
        }
        self.queue.push_back(message);
        dropped
    }

    /// Offers the waiting messages to `deliver`, oldest first, until it refuses one.
    pub fn flush(&mut self, deliver: &mut dyn FnMut(Message) -> bool) {
        while let Some(front) = self.queue.front() {
            if !deliver(front.clone()) {
                return;
            }
            self.queue.pop_front();
        }
        self.dropped = 0;
    }

    /// Drops the messages of `child` (its socket is closed).
    pub fn forget(&mut self, child: &str) {
        self.queue.retain(|m| m.child != child);
    }

    /// Messages dropped since the backlog was last empty.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// `newer` into `waiting`: each notice of `newer` replaces the one of its kind; the
/// sender's facts and a named main pid are the newer ones.
fn merge(waiting: &mut Message, newer: Message) {
    for notice in newer.notices {
        waiting.notices.retain(|n| !n.same_kind(&notice));
        waiting.notices.push(notice);
    }
    waiting.sender = newer.sender;
    if newer.main_pid.is_some() {
        waiting.main_pid = newer.main_pid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notice, ProcessFacts};

    fn message(child: &str, pid: i32, notices: Vec<Notice>) -> Message {
        Message {
            child: child.to_string(),
            sender: ProcessFacts {
                pid,
                uid: 0,
                sid: Some(pid),
                cgroup: None,
                ancestors: Vec::new(),
            },
            notices,
            main_pid: None,
        }
    }

    #[test]
    fn allowance_pauses_a_socket_for_the_rest_of_the_second() {
        let t0 = Instant::now();
        let mut allowance = Allowance::new(t0, DATAGRAMS_PER_S_MAX);
        for _ in 0..DATAGRAMS_PER_S_MAX {
            assert!(allowance.take(t0));
        }
        assert!(!allowance.take(t0 + Duration::from_millis(10)));
        allowance.refund();
        assert!(allowance.take(t0 + Duration::from_millis(10)));
        assert!(!allowance.take(t0 + Duration::from_millis(10)));
        assert_eq!(
            allowance.paused_until(t0 + Duration::from_millis(10)),
            Some(t0 + RATE_WINDOW)
        );
        assert_eq!(allowance.paused_until(t0 + RATE_WINDOW), None);
        assert!(allowance.take(t0 + RATE_WINDOW));
        assert_eq!(allowance.paused_until(t0 + RATE_WINDOW), None);
    }

    #[test]
    fn backlog_coalesces_per_sender_and_is_bounded_per_child() {
        let mut backlog = Backlog::default();
        backlog.push(message("a", 10, vec![Notice::Status("one".into())]));
        backlog.push(message("a", 10, vec![Notice::Ready, Notice::Watchdog]));
        backlog.push(message("a", 10, vec![Notice::Status("two".into())]));
        assert!(backlog.holds("a") && !backlog.holds("b"));
        let mut got = Vec::new();
        backlog.flush(&mut |m| {
            got.push(m);
            true
        });
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].notices,
            vec![
                Notice::Ready,
                Notice::Watchdog,
                Notice::Status("two".into())
            ]
        );

        for pid in 0..PENDING_PER_CHILD_MAX as i32 {
            assert!(!backlog.push(message("a", 100 + pid, vec![Notice::Ready])));
        }
        backlog.push(message("b", 7, vec![Notice::Stopping]));
        assert!(backlog.push(message("a", 999, vec![Notice::Ready])));
        assert_eq!(backlog.dropped(), 1);
        // The refused message stays, in order; nothing of "b" was dropped for "a".
        let mut offered = 0;
        backlog.flush(&mut |_| {
            offered += 1;
            false
        });
        assert_eq!(offered, 1);
        let mut pids = Vec::new();
        backlog.flush(&mut |m| {
            pids.push((m.child.clone(), m.sender.pid));
            true
        });
        assert_eq!(
            pids,
            vec![
                ("a".into(), 101),
                ("a".into(), 102),
                ("a".into(), 103),
                ("b".into(), 7),
                ("a".into(), 999)
            ]
        );
        assert!(backlog.is_empty());
        assert_eq!(backlog.dropped(), 0);
        backlog.push(message("c", 1, vec![Notice::Ready]));
        backlog.forget("c");
        assert!(backlog.is_empty());
    }
}
