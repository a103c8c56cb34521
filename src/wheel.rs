//! A pure, hierarchical timer wheel (after tokio's `time/wheel`).
//!
//! The wheel never reads a clock: the caller passes `now` (milliseconds on its own
//! monotonic scale) to [`Wheel::poll`], and the wheel keeps `elapsed`, the time up to
//! which it has been advanced.
//!
//! # Structure
//!
//! ```text
//!            slot width       level width
//! level 5    2^30 ms ~12 d    2^36 ms ~2.2 y   [ 0* | 1 | 2 | .. | 63 ]  occupied: u64
//! level 4    2^24 ms ~4.7 h   2^30 ms ~12 d    [ 0  | 1 | 2 | .. | 63 ]  occupied: u64
//! level 3    2^18 ms ~4.4 min 2^24 ms ~4.7 h   [ 0  | 1 | 2 | .. | 63 ]  occupied: u64
//! level 2    2^12 ms ~4.1 s   2^18 ms ~4.4 min [ 0  | 1 | 2 | .. | 63 ]  occupied: u64
//! level 1    2^6 ms  64 ms    2^12 ms ~4.1 s   [ 0  | 1 | 2 | .. | 63 ]  occupied: u64
//! level 0    1 ms             64 ms            [ 0  | 1 | 2 | .. | 63 ]  occupied: u64
//! pending    timers already due (deadline <= elapsed), handed out by `poll`
//!
//! every slot (and `pending`) is an intrusive doubly linked list of slab indices:
//!
//!   slot.head -> [7] <-> [2] <-> [9] <- slot.tail
//!
//!   entries: Vec<Entry<T>>   [0] [1] [2] ... (deadline, value, prev, next, generation)
//!   free:    Vec<usize>      indices of vacant entries, reused last-in first-out
//! ```
//!
//! A timer goes to the level of the highest bit in which its deadline differs from
//! `elapsed` (six bits per level), in the slot given by the deadline's six bits of that
//! level. So a level-L timer's slot always lies after `elapsed`'s slot in that level,
//! and every timer in level L is earlier than every timer in level L + 1. When `poll`
//! reaches the start of an occupied slot, the wheel moves to the slot's earliest
//! deadline (or to `now`, if sooner) and the slot's timers cascade: each is placed
//! again relative to the new `elapsed`, landing in a lower level or, once its
//! deadline is reached, in `pending`.
//!
//! # Range
//!
//! The six levels span 64^6 ms = 2^36 ms, about 2.2 years: the top-level rotation
//! that holds `elapsed`. A deadline past that rotation is clamped into the top
//! level's slot 0, the overflow slot, which falls due when the wheel enters the next
//! rotation; its timers are then placed again (some may go back into the overflow
//! slot). They fire at their exact deadline, never early. Any `u64` deadline is
//! accepted, `u64::MAX` included.
//!
//! # Cost
//!
//! * `insert`, `cancel`: O(1).
//! * `poll`: O(1) per returned timer plus the cascades. Only occupied slots are
//!   visited, found by `trailing_zeros` on a rotated bitmap, and a cascade jumps
//!   straight to the slot's earliest deadline (or to `now`), so a long jump of `now`
//!   costs nothing for empty stretches. A timer cascades at most once per level, and
//!   while beyond the range at most once per `poll` call that crosses a rotation.
//! * `next_deadline`: O(k), where k is the number of timers in the one list it scans:
//!   `pending` when timers are already due, else the first occupied slot of the
//!   lowest non-empty level. A level-0 slot holds a single deadline; a level-L slot
//!   holds the timers within a 64^L ms window.
//! * Memory: the slab never shrinks; the lists take 385 × 32 bytes.

use std::{fmt, iter};

/// Milliseconds on a monotonic scale chosen by the caller (e.g. since the agent
/// started). Never wall time.
pub type Millis = u64;

/// Bits of the deadline consumed by one level.
const SLOT_BITS: usize = 6;
/// Slots in one level: one bit each in a `u64` occupancy bitmap.
const SLOTS_PER_LEVEL: usize = 1 << SLOT_BITS;
/// Number of levels: 6 levels cover 64^6 ms, about 2.2 years.
const LEVELS: usize = 6;
/// The highest level, which also holds the timers beyond the range.
const TOP_LEVEL: usize = LEVELS - 1;
/// The top-level slot that holds deadlines beyond the range (see the module doc).
const OVERFLOW_SLOT: usize = 0;
/// Index of the list of due timers, after the `LEVELS * SLOTS_PER_LEVEL` slot lists.
const PENDING: usize = LEVELS * SLOTS_PER_LEVEL;
/// Slot lists plus the pending list.
const LIST_COUNT: usize = PENDING + 1;

/// Handle to a timer: a slab index plus the generation of that slab entry, so an id
/// kept after its timer fired or was cancelled never touches a reused entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: usize,
    generation: u64,
}

/// A slab entry. `value` is `None` while the entry is vacant (in the free list).
struct Entry<T> {
    generation: u64,
    deadline: Millis,
    value: Option<T>,
    /// The list holding the entry (a slot list or `PENDING`) while it is live.
    list: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Head and tail of an intrusive doubly linked list of slab indices.
#[derive(Clone, Copy, Default)]
struct List {
    head: Option<usize>,
    tail: Option<usize>,
}

/// The next slot the wheel will reach, and when.
#[derive(Clone, Copy, Debug)]
struct Expiration {
    level: usize,
    slot: usize,
    /// Start of the slot: the time at which its timers cascade.
    deadline: Millis,
}

/// A hierarchical timer wheel holding values of type `T`. See the module doc.
pub struct Wheel<T> {
    /// Time up to which the wheel has been advanced.
    elapsed: Millis,
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    /// `LEVELS * SLOTS_PER_LEVEL` slot lists, level-major, then the pending list.
    lists: Vec<List>,
    /// Per level, bit `s` is set iff slot `s` of that level is non-empty.
    occupied: [u64; LEVELS],
    len: usize,
}

impl<T> Wheel<T> {
    /// An empty wheel whose current time is `now`.
    pub fn new(now: Millis) -> Self {
        Wheel {
            elapsed: now,
            entries: Vec::new(),
            free: Vec::new(),
            lists: vec![List::default(); LIST_COUNT],
            occupied: [0; LEVELS],
            len: 0,
        }
    }

    /// O(1). Adds a timer firing at `deadline`. A deadline at or before the wheel's
    /// current time fires at the next `poll` whose `now` has reached it.
    pub fn insert(&mut self, deadline: Millis, value: T) -> TimerId {
        let id = self.allocate(deadline, value);
        self.push_back(list_for(self.elapsed, deadline), id.index);
        self.len += 1;
        id
    }

    /// O(1). Returns the value if the timer was still pending; `None` if it already
    /// fired, was cancelled, or the id is stale or foreign.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.index)?;
        if entry.generation != id.generation || entry.value.is_none() {
            return None;
        }
        self.unlink(id.index);
        self.release(id.index).map(|(_, value)| value)
    }

    /// The exact earliest deadline among pending timers, or `None` when empty.
    ///
    /// Timers already due sit in `pending` and are earlier than anything in the
    /// slots; otherwise the earliest timer lies in the first occupied slot of the
    /// lowest non-empty level. Either way one list is scanned (see the module doc).
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.lists[PENDING].head.is_some() {
            return self.min_deadline(PENDING);
        }
        let expiration = self.next_expiration()?;
        self.min_deadline(slot_list(expiration.level, expiration.slot))
    }

    /// Advances the wheel to `now` and returns one expired timer (deadline <= now),
    /// or `None` when none is due. Call repeatedly until `None`.
    ///
    /// A `now` earlier than the wheel's current time is treated as "no time passed":
    /// the wheel does not move back, and still only timers with deadline <= `now`
    /// are returned.
    pub fn poll(&mut self, now: Millis) -> Option<(TimerId, T)> {
        loop {
            if let Some(index) = self.find_due(now) {
                self.unlink(index);
                return self.release(index);
            }
            match self.next_expiration() {
                Some(expiration) if expiration.deadline <= now => self.cascade(expiration, now),
                _ => {
                    // Sound: every slot starts after `now`, so placements stay valid.
                    self.elapsed = self.elapsed.max(now);
                    return None;
                }
            }
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes a vacant slab entry (or grows the slab) and fills it.
    fn allocate(&mut self, deadline: Millis, value: T) -> TimerId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    deadline,
                    value: None,
                    list: PENDING,
                    prev: None,
                    next: None,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.deadline = deadline;
        entry.value = Some(value);
        TimerId {
            index,
            generation: entry.generation,
        }
    }

    /// Vacates an unlinked entry, bumping its generation so its id goes stale.
    fn release(&mut self, index: usize) -> Option<(TimerId, T)> {
        let entry = &mut self.entries[index];
        let value = entry.value.take()?;
        let id = TimerId {
            index,
            generation: entry.generation,
        };
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        Some((id, value))
    }

    /// The first pending timer with deadline <= `now`. O(1) unless `now` went
    /// backwards, when pending timers later than `now` are skipped one by one.
    fn find_due(&self, now: Millis) -> Option<usize> {
        self.iter_list(PENDING)
            .find(|&index| self.entries[index].deadline <= now)
    }

    /// The next occupied slot; lower levels always come first (module doc).
    fn next_expiration(&self) -> Option<Expiration> {
        (0..LEVELS).find_map(|level| self.next_expiration_in(level))
    }

    /// The first occupied slot of `level` after `elapsed`'s slot, wrapping around.
    /// Only the top level's overflow slot can be found by wrapping: every other
    /// occupied slot lies after `elapsed`'s slot in its level.
    fn next_expiration_in(&self, level: usize) -> Option<Expiration> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let current = slot_for(self.elapsed, level);
        let start = (current + 1) % SLOTS_PER_LEVEL;
        let distance = occupied.rotate_right(start as u32).trailing_zeros() as usize;
        let slot = (start + distance) % SLOTS_PER_LEVEL;
        let level_start = self.elapsed & !(level_range(level) - 1);
        // No overflow: the level-aligned block holding `elapsed` fits in a u64.
        let mut deadline = level_start + slot as u64 * slot_range(level);
        if slot <= current {
            // The next rotation. Saturating is exact: an overflow timer's deadline is
            // at least the next rotation's start, so that start fits in a u64.
            deadline = deadline.saturating_add(level_range(level));
        }
        Some(Expiration {
            level,
            slot,
            deadline,
        })
    }

    /// Moves the wheel into `expiration`'s slot and places each of the slot's timers
    /// again, into a lower level or into `pending`.
    ///
    /// The wheel moves to the slot's earliest deadline, or to `now` if sooner: never
    /// before the slot's start, and never past a timer, so every placement stays
    /// valid. For the overflow slot this skips whole empty rotations at once, rather
    /// than cascading once per 2.2 years between `elapsed` and `now`.
    fn cascade(&mut self, expiration: Expiration, now: Millis) {
        let list = slot_list(expiration.level, expiration.slot);
        let earliest = self.min_deadline(list).unwrap_or(expiration.deadline);
        // `max` keeps the wheel moving forward even if a placement were wrong.
        self.elapsed = earliest.min(now).max(expiration.deadline);
        let mut cursor = self.lists[list].head;
        self.lists[list] = List::default();
        self.occupied[expiration.level] &= !(1 << expiration.slot);
        while let Some(index) = cursor {
            cursor = self.entries[index].next;
            let target = list_for(self.elapsed, self.entries[index].deadline);
            self.push_back(target, index);
        }
    }

    fn push_back(&mut self, list: usize, index: usize) {
        let tail = self.lists[list].tail;
        let entry = &mut self.entries[index];
        entry.list = list;
        entry.prev = tail;
        entry.next = None;
        match tail {
            Some(tail) => self.entries[tail].next = Some(index),
            None => self.lists[list].head = Some(index),
        }
        self.lists[list].tail = Some(index);
        if list != PENDING {
            self.occupied[list / SLOTS_PER_LEVEL] |= 1 << (list % SLOTS_PER_LEVEL);
        }
    }

    fn unlink(&mut self, index: usize) {
        let (list, prev, next) = {
            let entry = &self.entries[index];
            (entry.list, entry.prev, entry.next)
        };
        match prev {
            Some(prev) => self.entries[prev].next = next,
            None => self.lists[list].head = next,
        }
        match next {
            Some(next) => self.entries[next].prev = prev,
            None => self.lists[list].tail = prev,
        }
        if list != PENDING && self.lists[list].head.is_none() {
            self.occupied[list / SLOTS_PER_LEVEL] &= !(1 << (list % SLOTS_PER_LEVEL));
        }
    }

    fn iter_list(&self, list: usize) -> impl Iterator<Item = usize> + '_ {
        iter::successors(self.lists[list].head, |&index| self.entries[index].next)
    }

    fn min_deadline(&self, list: usize) -> Option<Millis> {
        self.iter_list(list)
            .map(|index| self.entries[index].deadline)
            .min()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

/// The list a timer belongs in when the wheel is at `elapsed`.
fn list_for(elapsed: Millis, deadline: Millis) -> usize {
    if deadline <= elapsed {
        return PENDING;
    }
    match level_for(elapsed, deadline) {
        level if level < LEVELS => slot_list(level, slot_for(deadline, level)),
        _ => slot_list(TOP_LEVEL, OVERFLOW_SLOT),
    }
}

/// The level of the highest bit in which `elapsed` and `deadline` differ; `LEVELS`
/// or more when they differ above the top level (beyond the range).
fn level_for(elapsed: Millis, deadline: Millis) -> usize {
    // Or-ing the level-0 bits keeps the mask non-zero; the result is level 0 then.
    let masked = (elapsed ^ deadline) | (SLOTS_PER_LEVEL as u64 - 1);
    let highest_bit = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    highest_bit / SLOT_BITS
}

/// The slot of `time` in `level`: its six bits for that level.
fn slot_for(time: Millis, level: usize) -> usize {
    ((time >> (level * SLOT_BITS)) as usize) % SLOTS_PER_LEVEL
}

fn slot_list(level: usize, slot: usize) -> usize {
    level * SLOTS_PER_LEVEL + slot
}

/// Milliseconds covered by one slot of `level`.
fn slot_range(level: usize) -> u64 {
    1 << (level * SLOT_BITS)
}

/// Milliseconds covered by one rotation of `level`.
fn level_range(level: usize) -> u64 {
    1 << ((level + 1) * SLOT_BITS)
}

#[cfg(test)]
#[path = "wheel_tests.rs"]
mod tests;
