//! Every deadline of the agent, named: the typed keys of the event loop's one timer
//! wheel, and the requests through which the supervisor sets and cancels its timers.
//!
//! The loop owns [`Timers`]: one [`Wheel`] of [`TimerKey`]s, and beside it the
//! deadline each key is armed for. A key is armed at most once: setting it again
//! moves it, so a timer that was moved or cancelled never fires late. What fires is
//! handed by key to the part it belongs to (the core, a child of the supervisor, the
//! job runner, the metafile, the self-upgrade's probation).
//!
//! The parts keep their deadlines as data and never touch the wheel. The core, the
//! job runner and the loop itself have one deadline each, which the loop copies into
//! the wheel after every turn ([`Timers::sync`]). The supervisor has up to six per
//! child, set and cancelled as it goes: it writes them into its [`TimerRequests`],
//! which the loop applies before it looks at the wheel again.

use crate::wheel::{Millis, TimerId, Wheel};
use std::collections::HashMap;

/// A timer of one child (see `supervisor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildTimer {
    /// The deadline of the child's state (restart delay, grace period).
    State,
    /// Time for a `/proc` sample.
    Sample,
    /// End of a `/proc` CPU throttle pause: `SIGCONT`.
    Resume,
    /// The ready timeout of a child with `notify`.
    Ready,
    /// The watchdog of a child with `watchdog_s`.
    Watchdog,
    /// Time to read a child's heartbeat file.
    Heartbeat,
}

impl ChildTimer {
    /// Every timer a child may have, to cancel them all when it goes.
    pub const ALL: [ChildTimer; 6] = [
        ChildTimer::State,
        ChildTimer::Sample,
        ChildTimer::Resume,
        ChildTimer::Ready,
        ChildTimer::Watchdog,
        ChildTimer::Heartbeat,
    ];
}

/// What a deadline is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// The core's next exchange (registration or status report).
    Exchange,
    /// A timer of the child of that name.
    Child(String, ChildTimer),
    /// The deadline of the job in progress (a stop's grace, a probation).
    Job,
    /// The next try at writing the metafile after a failed write.
    SaveRetry,
    /// The end of this image's probation after a self-upgrade.
    SelfProbation,
}

/// A change the supervisor asks of the wheel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    Set(TimerKey, Millis),
    Cancel(TimerKey),
}

/// Timer changes asked for and not yet applied, in order. The loop applies them
/// after every call into the part that asked, so they stay few (a handful per
/// child that changed).
#[derive(Debug, Default)]
pub struct TimerRequests(Vec<TimerRequest>);

impl TimerRequests {
    /// Arms `key` at `at`, moving it if it was armed.
    pub fn set(&mut self, key: TimerKey, at: Millis) {
        self.0.push(TimerRequest::Set(key, at));
    }

    /// Disarms `key`, if it was armed.
    pub fn cancel(&mut self, key: TimerKey) {
        self.0.push(TimerRequest::Cancel(key));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The requests, oldest first, leaving none.
    pub fn take(&mut self) -> Vec<TimerRequest> {
        std::mem::take(&mut self.0)
    }
}

/// The loop's one wheel, by key. At most one timer per key.
pub struct Timers {
    wheel: Wheel<TimerKey>,
    armed: HashMap<TimerKey, (TimerId, Millis)>,
}

impl Timers {
    /// No timer armed; the wheel's time starts at `now`.
    pub fn new(now: Millis) -> Self {
        Timers {
            wheel: Wheel::new(now),
            armed: HashMap::new(),
        }
    }

    /// Arms `key` at `at`; a key already armed moves there.
    pub fn set(&mut self, key: TimerKey, at: Millis) {
        if self.deadline(&key) == Some(at) {
            return;
        }
        self.cancel(&key);
        let id = self.wheel.insert(at, key.clone());
        self.armed.insert(key, (id, at));
    }

    /// Disarms `key`; nothing if it was not armed.
    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some((id, _)) = self.armed.remove(key) {
            self.wheel.cancel(id);
        }
    }

    /// Arms `key` at `at`, or disarms it for `None`: a part's one deadline, copied.
    pub fn sync(&mut self, key: TimerKey, at: Option<Millis>) {
        match at {
            Some(at) => self.set(key, at),
            None => self.cancel(&key),
        }
    }

    /// Applies what a part asked, in order.
    pub fn apply(&mut self, requests: &mut TimerRequests) {
        for request in requests.take() {
            match request {
                TimerRequest::Set(key, at) => self.set(key, at),
                TimerRequest::Cancel(key) => self.cancel(&key),
            }
        }
    }

    /// When `key` is armed for.
    pub fn deadline(&self, key: &TimerKey) -> Option<Millis> {
        self.armed.get(key).map(|&(_, at)| at)
    }

    /// The earliest deadline armed: when the loop must wake.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.wheel.next_deadline()
    }

    /// One key whose deadline has come at `now`, disarmed; `None` when none is due.
    /// Call again until `None`.
    pub fn poll(&mut self, now: Millis) -> Option<TimerKey> {
        let (id, key) = self.wheel.poll(now)?;
        if self.armed.get(&key).is_some_and(|&(armed, _)| armed == id) {
            self.armed.remove(&key);
        }
        Some(key)
    }

    /// Disarms `key` and says true if its deadline has come at `now`; leaves it
    /// armed and says false if not.
    pub fn take_due(&mut self, key: &TimerKey, now: Millis) -> bool {
        if self.deadline(key).is_some_and(|at| at <= now) {
            self.cancel(key);
            return true;
        }
        false
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(name: &str, timer: ChildTimer) -> TimerKey {
        TimerKey::Child(name.to_string(), timer)
    }

    fn due(timers: &mut Timers, now: Millis) -> Vec<TimerKey> {
        std::iter::from_fn(|| timers.poll(now)).collect()
    }

    #[test]
    fn a_key_fires_once_at_its_deadline() {
        let mut timers = Timers::new(0);
        timers.set(TimerKey::Exchange, 1_000);
        assert_eq!(timers.next_deadline(), Some(1_000));
        assert!(due(&mut timers, 999).is_empty());
        assert_eq!(due(&mut timers, 1_000), vec![TimerKey::Exchange]);
        assert!(due(&mut timers, 5_000).is_empty());
        assert!(timers.is_empty());
        assert_eq!(timers.deadline(&TimerKey::Exchange), None);
    }

    #[test]
    fn setting_a_key_again_moves_it_rather_than_adding_one() {
        let mut timers = Timers::new(0);
        timers.set(TimerKey::Job, 500);
        timers.set(TimerKey::Job, 2_000);
        assert_eq!(timers.len(), 1);
        assert!(
            due(&mut timers, 1_000).is_empty(),
            "the old deadline is gone"
        );
        assert_eq!(due(&mut timers, 2_000), vec![TimerKey::Job]);
        // Moved earlier, too.
        timers.set(TimerKey::Job, 9_000);
        timers.set(TimerKey::Job, 3_000);
        assert_eq!(timers.next_deadline(), Some(3_000));
        assert_eq!(due(&mut timers, 3_000), vec![TimerKey::Job]);
        assert!(due(&mut timers, 10_000).is_empty());
    }

    #[test]
    fn a_cancelled_key_never_fires_and_the_same_key_can_be_armed_again() {
        let mut timers = Timers::new(0);
        timers.set(child("web", ChildTimer::State), 100);
        timers.cancel(&child("web", ChildTimer::State));
        timers.cancel(&child("web", ChildTimer::State)); // twice is nothing
        assert!(due(&mut timers, 1_000).is_empty());
        timers.set(child("web", ChildTimer::State), 1_500);
        assert_eq!(
            due(&mut timers, 2_000),
            vec![child("web", ChildTimer::State)]
        );
    }

    #[test]
    fn children_and_kinds_are_distinct_keys() {
        let mut timers = Timers::new(0);
        timers.set(child("web", ChildTimer::State), 300);
        timers.set(child("web", ChildTimer::Sample), 200);
        timers.set(child("db", ChildTimer::State), 100);
        timers.set(TimerKey::SaveRetry, 400);
        assert_eq!(timers.len(), 4);
        assert_eq!(
            due(&mut timers, 1_000),
            vec![
                child("db", ChildTimer::State),
                child("web", ChildTimer::Sample),
                child("web", ChildTimer::State),
                TimerKey::SaveRetry,
            ]
        );
    }

    #[test]
    fn sync_copies_one_deadline_and_none_disarms() {
        let mut timers = Timers::new(0);
        timers.sync(TimerKey::SelfProbation, Some(60_000));
        timers.sync(TimerKey::SelfProbation, Some(60_000));
        assert_eq!(timers.len(), 1);
        timers.sync(TimerKey::SelfProbation, None);
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn requests_apply_in_order() {
        let mut timers = Timers::new(0);
        let mut asked = TimerRequests::default();
        asked.set(child("web", ChildTimer::Ready), 100);
        asked.cancel(child("web", ChildTimer::Ready));
        asked.set(child("web", ChildTimer::Heartbeat), 700);
        asked.set(child("web", ChildTimer::Heartbeat), 800);
        timers.apply(&mut asked);
        assert!(asked.is_empty());
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.deadline(&child("web", ChildTimer::Heartbeat)),
            Some(800)
        );
    }

    #[test]
    fn take_due_takes_only_a_key_that_has_come() {
        let mut timers = Timers::new(0);
        timers.set(TimerKey::Exchange, 50);
        assert!(!timers.take_due(&TimerKey::Exchange, 49));
        assert!(!timers.take_due(&TimerKey::Job, 1_000), "not armed");
        assert!(timers.take_due(&TimerKey::Exchange, 50));
        assert!(timers.is_empty());
        assert!(
            due(&mut timers, 100).is_empty(),
            "taken, so it does not fire"
        );
    }

    #[test]
    fn a_deadline_in_the_past_fires_at_the_next_poll() {
        let mut timers = Timers::new(10_000);
        assert!(due(&mut timers, 20_000).is_empty());
        timers.set(TimerKey::Exchange, 5_000);
        assert_eq!(due(&mut timers, 20_000), vec![TimerKey::Exchange]);
    }
}
