//! The timer wheel against exact deadlines, level boundaries, stale and foreign
//! ids, the ends of the clock, and a seeded reference model.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use std::collections::BTreeSet;
use std::time::Instant;

const SECOND: Millis = 1_000;
const HOUR: Millis = 3_600 * SECOND;
const DAY: Millis = 24 * HOUR;
const YEAR: Millis = 365 * DAY;
/// 64^6 ms: the span of the six levels.
const RANGE: Millis = 1 << (SLOT_BITS * LEVELS);

/// Polls at `now` until `None`, returning the values fired.
fn drain<T>(wheel: &mut Wheel<T>, now: Millis) -> Vec<T> {
    iter::from_fn(|| wheel.poll(now).map(|(_, value)| value)).collect()
}

/// Fires every timer in deadline order, checking each fires at its exact
/// deadline and not a millisecond before; returns the deadlines seen.
fn fire_all_exactly(wheel: &mut Wheel<Millis>) -> Vec<Millis> {
    let mut fired = Vec::new();
    while let Some(deadline) = wheel.next_deadline() {
        if let Some(before) = deadline.checked_sub(1) {
            assert_eq!(drain(wheel, before), Vec::<Millis>::new(), "early");
        }
        let values = drain(wheel, deadline);
        assert!(!values.is_empty(), "wake-up at {deadline} fired nothing");
        assert!(values.iter().all(|&value| value == deadline));
        fired.extend(values);
    }
    assert!(wheel.is_empty());
    fired
}

#[test]
fn fires_at_exact_deadline() {
    let mut wheel = Wheel::new(0);
    let id = wheel.insert(100, "a");
    assert_eq!(wheel.next_deadline(), Some(100));
    assert_eq!(wheel.poll(99), None);
    assert_eq!(wheel.poll(100), Some((id, "a")));
    assert_eq!(wheel.poll(100), None);
    assert!(wheel.is_empty());
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
fn fires_at_exact_deadline_on_level_boundaries() {
    let mut wheel = Wheel::new(7);
    let mut deadlines = Vec::new();
    for level in 0..LEVELS {
        let width = slot_range(level);
        for deadline in [width - 1, width, width + 1, 63 * width, 64 * width + 5] {
            deadlines.push(deadline + 7);
        }
    }
    for &deadline in &deadlines {
        wheel.insert(deadline, deadline);
    }
    deadlines.sort_unstable();
    assert_eq!(fire_all_exactly(&mut wheel), deadlines);
}

#[test]
fn past_deadline_fires_at_next_poll() {
    let mut wheel = Wheel::new(1_000);
    let past = wheel.insert(10, "past");
    let now = wheel.insert(1_000, "now");
    assert_eq!(wheel.next_deadline(), Some(10));
    assert_eq!(wheel.poll(1_000), Some((past, "past")));
    assert_eq!(wheel.next_deadline(), Some(1_000));
    assert_eq!(wheel.poll(1_000), Some((now, "now")));
    assert_eq!(wheel.poll(1_000), None);
}

#[test]
fn cancel_before_fire() {
    let mut wheel = Wheel::new(0);
    let a = wheel.insert(50, "a");
    let b = wheel.insert(5 * DAY, "b");
    assert_eq!(wheel.cancel(a), Some("a"));
    assert_eq!(wheel.len(), 1);
    assert_eq!(wheel.next_deadline(), Some(5 * DAY));
    assert_eq!(wheel.cancel(b), Some("b"));
    assert_eq!(wheel.next_deadline(), None);
    assert_eq!(wheel.poll(10 * DAY), None);
    assert!(wheel.is_empty());
}

#[test]
fn cancel_after_fire_returns_none() {
    let mut wheel = Wheel::new(0);
    let id = wheel.insert(50, "a");
    assert_eq!(wheel.poll(60), Some((id, "a")));
    assert_eq!(wheel.cancel(id), None);
}

#[test]
fn cancel_twice_returns_none() {
    let mut wheel = Wheel::new(0);
    let id = wheel.insert(50, "a");
    assert_eq!(wheel.cancel(id), Some("a"));
    assert_eq!(wheel.cancel(id), None);
    assert!(wheel.is_empty());
}

#[test]
fn stale_id_after_slot_reuse_is_harmless() {
    let mut wheel = Wheel::new(0);
    let old = wheel.insert(50, "old");
    assert_eq!(wheel.cancel(old), Some("old"));
    let new = wheel.insert(50, "new");
    assert_eq!(new.index, old.index, "the slab entry is reused");
    assert_eq!(wheel.cancel(old), None);
    assert_eq!(wheel.len(), 1);
    assert_eq!(wheel.poll(50), Some((new, "new")));
    assert_eq!(wheel.cancel(old), None);
}

#[test]
fn foreign_ids_are_harmless() {
    let mut other = Wheel::new(0);
    let foreign = (0..10).map(|i| other.insert(i, ())).last();
    let mut wheel = Wheel::new(0);
    let mine = wheel.insert(5, ());
    if let Some(foreign) = foreign {
        assert_eq!(wheel.cancel(foreign), None);
    }
    let forged = TimerId {
        index: usize::MAX,
        generation: u64::MAX,
    };
    assert_eq!(wheel.cancel(forged), None);
    assert_eq!(wheel.cancel(mine), Some(()));
}

#[test]
fn u64_max_deadline() {
    let mut wheel = Wheel::new(0);
    let id = wheel.insert(u64::MAX, "max");
    assert_eq!(wheel.next_deadline(), Some(u64::MAX));
    assert_eq!(wheel.poll(u64::MAX - 1), None);
    assert_eq!(wheel.next_deadline(), Some(u64::MAX));
    assert_eq!(wheel.poll(u64::MAX), Some((id, "max")));

    let mut wheel = Wheel::new(u64::MAX);
    let id = wheel.insert(u64::MAX, "max");
    wheel.insert(u64::MAX - 1, "before");
    assert_eq!(drain(&mut wheel, u64::MAX), vec!["max", "before"]);
    assert_eq!(wheel.poll(u64::MAX), None);
    assert_eq!(wheel.cancel(id), None);
}

#[test]
fn near_u64_max_fires_exactly() {
    let start = u64::MAX - 3 * RANGE;
    let mut wheel = Wheel::new(start);
    for offset in [1, 64, RANGE - 1, RANGE, 2 * RANGE + 99, 3 * RANGE] {
        wheel.insert(start + offset, start + offset);
    }
    assert_eq!(fire_all_exactly(&mut wheel).len(), 6);
}

#[test]
fn now_going_backwards() {
    let mut wheel = Wheel::new(0);
    wheel.insert(500, "a");
    wheel.insert(2_000, "b");
    assert_eq!(drain(&mut wheel, 1_000), vec!["a"]);
    assert_eq!(wheel.poll(10), None);
    assert_eq!(wheel.poll(0), None);
    assert_eq!(wheel.next_deadline(), Some(2_000));
    // Due relative to the wheel, but not relative to the `now` passed in.
    wheel.insert(900, "c");
    assert_eq!(wheel.poll(500), None);
    assert_eq!(wheel.next_deadline(), Some(900));
    assert_eq!(drain(&mut wheel, 900), vec!["c"]);
    assert_eq!(wheel.poll(1_999), None);
    assert_eq!(drain(&mut wheel, 2_000), vec!["b"]);
}

#[test]
fn next_deadline_exact_across_levels() {
    let mut wheel = Wheel::new(0);
    let deadlines = [5, 700, 600_000, 3 * DAY, 3 * YEAR, 7 * YEAR + 3];
    for &deadline in deadlines.iter().rev() {
        wheel.insert(deadline, deadline);
    }
    assert_eq!(fire_all_exactly(&mut wheel), deadlines);
}

#[test]
fn next_deadline_exact_after_long_idle() {
    // The wheel sits at 0 while the caller's clock is far ahead.
    let mut wheel = Wheel::new(0);
    let late = 40 * DAY;
    wheel.insert(late + 10 * SECOND, late + 10 * SECOND);
    wheel.insert(late + 3, late + 3);
    wheel.insert(late - 5 * DAY, late - 5 * DAY);
    assert_eq!(wheel.next_deadline(), Some(late - 5 * DAY));
    assert_eq!(drain(&mut wheel, late), vec![late - 5 * DAY]);
    assert_eq!(wheel.next_deadline(), Some(late + 3));
    assert_eq!(fire_all_exactly(&mut wheel), [late + 3, late + 10 * SECOND]);
}

#[test]
fn beyond_range_fires_at_exact_deadline() {
    let mut wheel = Wheel::new(12_345);
    let deadlines = [RANGE - 1, RANGE, RANGE + 1, 2 * RANGE + 777, 5 * RANGE];
    for &deadline in &deadlines {
        wheel.insert(deadline, deadline);
    }
    // Step through in months so the overflow slot cascades several times.
    let mut now = 12_345;
    while now < RANGE - 2 {
        now = (now + 30 * DAY).min(RANGE - 2);
        assert_eq!(drain(&mut wheel, now), Vec::<Millis>::new());
        assert_eq!(wheel.next_deadline(), Some(RANGE - 1));
    }
    assert_eq!(fire_all_exactly(&mut wheel), deadlines);
}

/// splitmix64: a tiny, fixed-seed generator for the model test.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// The reference: pending timers as (deadline, serial), serial = index in `issued`.
struct Model {
    wheel: Wheel<usize>,
    pending: BTreeSet<(Millis, usize)>,
    issued: Vec<(TimerId, Millis)>,
    clock: Millis,
    fired: usize,
    cancelled: usize,
}

impl Model {
    fn insert(&mut self, rng: &mut SplitMix64) {
        let deadline = random_deadline(rng, self.clock);
        let serial = self.issued.len();
        let id = self.wheel.insert(deadline, serial);
        self.issued.push((id, deadline));
        self.pending.insert((deadline, serial));
    }

    fn cancel(&mut self, rng: &mut SplitMix64) {
        let count = self.issued.len() as u64;
        let serial = match rng.below(100) {
            0..=59 => count - 1 - rng.below(count.min(64)),
            60..=94 => rng.below(count),
            _ => {
                let forged = TimerId {
                    index: (self.issued.len() + rng.below(1_000) as usize),
                    generation: rng.next(),
                };
                assert_eq!(self.wheel.cancel(forged), None);
                return;
            }
        } as usize;
        let (id, deadline) = self.issued[serial];
        let expected = self.pending.remove(&(deadline, serial)).then_some(serial);
        assert_eq!(self.wheel.cancel(id), expected, "cancel #{serial}");
        self.cancelled += usize::from(expected.is_some());
    }

    fn advance(&mut self, rng: &mut SplitMix64) {
        let now = match rng.below(100) {
            0..=2 => self.clock.saturating_sub(rng.below(10 * SECOND)),
            percent => {
                let step = match percent {
                    3..=49 => rng.below(16),
                    50..=79 => rng.below(5 * SECOND),
                    80..=92 => rng.below(2 * HOUR),
                    93..=98 => rng.below(10 * DAY),
                    _ => rng.below(400 * DAY),
                };
                self.clock = self.clock.saturating_add(step);
                self.clock
            }
        };
        while let Some((id, serial)) = self.wheel.poll(now) {
            let (issued_id, deadline) = self.issued[serial];
            assert_eq!(id, issued_id);
            assert!(deadline <= now, "#{serial} fired early: {deadline} > {now}");
            assert!(
                self.pending.remove(&(deadline, serial)),
                "#{serial} fired twice or after cancel"
            );
            self.fired += 1;
        }
        if let Some(&(deadline, serial)) = self.pending.first() {
            assert!(deadline > now, "#{serial} late: {deadline} <= {now}");
        }
    }

    fn check(&self) {
        assert_eq!(self.wheel.len(), self.pending.len());
        let expected = self.pending.first().map(|&(deadline, _)| deadline);
        assert_eq!(self.wheel.next_deadline(), expected);
    }
}

fn random_deadline(rng: &mut SplitMix64, clock: Millis) -> Millis {
    let ahead = match rng.below(100) {
        0..=9 => return clock.saturating_sub(rng.below(5 * SECOND)),
        10..=34 => rng.below(64),
        35..=59 => rng.below(60 * SECOND),
        60..=74 => rng.below(10 * HOUR),
        75..=89 => rng.below(30 * DAY),
        90..=94 => rng.below(3 * YEAR),
        95..=98 => RANGE + rng.below(4 * RANGE),
        _ => return u64::MAX - rng.below(3),
    };
    clock.saturating_add(ahead)
}

fn run_model(seed: u64, start: Millis, operations: usize) -> Model {
    let mut rng = SplitMix64(seed);
    let mut model = Model {
        wheel: Wheel::new(start),
        pending: BTreeSet::new(),
        issued: Vec::new(),
        clock: start,
        fired: 0,
        cancelled: 0,
    };
    for _ in 0..operations {
        match rng.below(100) {
            0..=44 => model.insert(&mut rng),
            45..=64 if !model.issued.is_empty() => model.cancel(&mut rng),
            _ => model.advance(&mut rng),
        }
        model.check();
    }
    model
}

#[test]
fn matches_reference_model() {
    let started = Instant::now();
    let model = run_model(0xB007_A6E7_5EED, 1_000_000_007, 300_000);
    // The mix must actually exercise firing and cancelling.
    assert!(model.fired > 50_000, "fired {}", model.fired);
    assert!(model.cancelled > 5_000, "cancelled {}", model.cancelled);
    eprintln!(
        "model: {} fired, {} cancelled, {} pending, clock {} ms, in {:?}",
        model.fired,
        model.cancelled,
        model.pending.len(),
        model.clock,
        started.elapsed()
    );
}

#[test]
fn matches_reference_model_near_u64_max() {
    let model = run_model(42, u64::MAX - 2 * RANGE, 50_000);
    assert_eq!(model.clock, u64::MAX, "the clock should saturate");
    assert!(model.fired > 5_000, "fired {}", model.fired);
}
