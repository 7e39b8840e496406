//! The loop's timers: one heap entry per armed connection, 8 bytes each.
//!
//! An entry packs the deadline, in milliseconds since the worker started (rounded up, so a
//! timer never fires early), into the high 40 bits (34 years) and the connection's slab key
//! into the low 24 (the configuration caps `max_connections` below 2^24). A connection's
//! [`Entry`](super::Entry) keeps the low 32 bits of the tick it armed, which is enough to
//! tell its entry from a stale one; a stale entry that matches by chance only drives the
//! connection once more, which finds nothing due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Bits of an entry that hold the slab key.
const KEY_BITS: u32 = 24;
/// Slab keys the timers can hold (`max_connections` is checked against it).
pub const MAX_KEYS: usize = 1 << KEY_BITS;

/// What an [`super::Entry`] remembers of its armed timer: 0 when none.
pub type Armed = u32;

pub struct Timers {
    start: Instant,
    heap: BinaryHeap<Reverse<u64>>,
}

impl Timers {
    pub fn new(start: Instant, capacity: usize) -> Timers {
        Timers { start, heap: BinaryHeap::with_capacity(capacity) }
    }

    /// `t` in ticks: milliseconds since the start, rounded up, from 1 (0 is "none").
    fn tick(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.start);
        let ms = d.as_secs() * 1000 + u64::from(d.subsec_nanos().div_ceil(1_000_000));
        (ms + 1).min((1 << (64 - KEY_BITS)) - 1)
    }

    fn instant(&self, tick: u64) -> Instant {
        self.start + Duration::from_millis(tick - 1)
    }

    /// Arms a timer for slab `key` at `at`, unless `armed` (what the connection holds) is at
    /// or before it already. Returns what the connection holds now.
    pub fn arm(&mut self, key: usize, at: Instant, armed: Armed) -> Armed {
        debug_assert!(key < MAX_KEYS);
        let tick = self.tick(at);
        let short = tick as u32;
        // Signed distance: exact for deadlines within 24 days of each other.
        if armed != 0 && (short.wrapping_sub(armed) as i32) >= 0 {
            return armed;
        }
        self.heap.push(Reverse((tick << KEY_BITS) | key as u64));
        short
    }

    /// The earliest deadline armed.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| self.instant(e >> KEY_BITS))
    }

    /// Takes the next entry due by `now`: the slab key and the tick its connection would
    /// hold if this entry is its current one.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, Armed)> {
        let &Reverse(e) = self.heap.peek()?;
        if self.instant(e >> KEY_BITS) > now {
            return None;
        }
        self.heap.pop();
        Some(((e & (MAX_KEYS as u64 - 1)) as usize, (e >> KEY_BITS) as u32))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_never_early_and_keeps_the_earliest() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, 4);
        let ms = Duration::from_millis;
        let a = t.arm(7, t0 + ms(30) + Duration::from_micros(1), 0);
        let b = t.arm(MAX_KEYS - 1, t0 + ms(10), 0);
        // A later deadline for key 7 is not armed again; an earlier one is.
        assert_eq!(t.arm(7, t0 + ms(50), a), a);
        let a2 = t.arm(7, t0 + ms(20), a);
        assert_ne!(a2, a);
        assert!(t.next().unwrap() >= t0 + ms(10));
        assert_eq!(t.pop_due(t0 + ms(9)), None);
        assert_eq!(t.pop_due(t0 + ms(10)), Some((MAX_KEYS - 1, b)));
        assert_eq!(t.pop_due(t0 + ms(25)), Some((7, a2)));
        // Rounded up: 30 ms and 1 µs fires at 31 ms.
        assert_eq!(t.pop_due(t0 + ms(30) + Duration::from_micros(1)), None);
        assert_eq!(t.pop_due(t0 + ms(31)), Some((7, a)));
        assert_eq!(t.next(), None);
    }
}
