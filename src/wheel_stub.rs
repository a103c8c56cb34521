//! Temporary stand-in with the wheel's API (BTreeMap-based).
use std::collections::BTreeMap;
pub type Millis = u64;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);
pub struct Wheel<T> {
    next: u64,
    now: Millis,
    map: BTreeMap<(Millis, u64), T>,
    ids: std::collections::HashMap<u64, Millis>,
}
impl<T> Wheel<T> {
    pub fn new(now: Millis) -> Self {
        Wheel {
            next: 0,
            now,
            map: BTreeMap::new(),
            ids: Default::default(),
        }
    }
    pub fn insert(&mut self, deadline: Millis, value: T) -> TimerId {
        self.next += 1;
        self.map.insert((deadline, self.next), value);
        self.ids.insert(self.next, deadline);
        TimerId(self.next)
    }
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let d = self.ids.remove(&id.0)?;
        self.map.remove(&(d, id.0))
    }
    pub fn next_deadline(&self) -> Option<Millis> {
        self.map.keys().next().map(|k| k.0)
    }
    pub fn poll(&mut self, now: Millis) -> Option<(TimerId, T)> {
        self.now = self.now.max(now);
        let k = *self.map.keys().next()?;
        if k.0 > self.now {
            return None;
        }
        self.ids.remove(&k.1);
        self.map.remove(&k).map(|v| (TimerId(k.1), v))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
