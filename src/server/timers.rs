//! The loop's timers: one heap entry per armed connection, 8 bytes each.
//!
//! An entry packs the deadline, in milliseconds since the worker started (kept as
//! [`Stamp`]s are: rounded up, so a timer never fires early), into the high 40 bits (34
//! years) and the connection's slab key into the low 24 (the configuration caps
//! `max_connections` below 2^24). A connection's [`Entry`](super::Entry) keeps the 32 bits of
//! the stamp it armed, which is enough to tell its entry from a stale one; a stale entry that
//! matches by chance only drives the connection once more, which finds nothing due. Arming
//! a deadline no earlier than the one armed (the common case: every message moves the ping
//! deadline later) compares 32 bits and reads no clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::stamp::{self, Stamp};

/// Bits of an entry that hold the slab key.
const KEY_BITS: u32 = 24;
/// Slab keys the timers can hold (`max_connections` is checked against it).
pub const MAX_KEYS: usize = 1 << KEY_BITS;

/// What an [`super::Entry`] remembers of its armed timer: the stamp's bits, 0 when none.
pub type Armed = u32;

pub struct Timers {
    /// Stamp milliseconds of tick 0 (a millisecond before the worker started).
    base: i64,
    heap: BinaryHeap<Reverse<u64>>,
}

impl Timers {
    pub fn new(start: Instant, capacity: usize) -> Timers {
        Timers { base: stamp::millis(start) - 1, heap: BinaryHeap::with_capacity(capacity) }
    }

    /// Arms a timer for slab `key` at `at`, unless `armed` (what the connection holds) is at
    /// or before it already. Returns what the connection holds now.
    pub fn arm(&mut self, key: usize, at: Stamp, armed: Armed, now: Instant) -> Armed {
        debug_assert!(key < MAX_KEYS);
        let short = at.bits();
        // Signed distance: exact for deadlines within 24 days of each other.
        if armed != 0 && (short.wrapping_sub(armed) as i32) >= 0 {
            return armed;
        }
        let tick = (at.unwrap(stamp::millis(now)) - self.base).clamp(1, (1 << (64 - KEY_BITS)) - 1) as u64;
        self.heap.push(Reverse((tick << KEY_BITS) | key as u64));
        short
    }

    /// How many milliseconds from `now_ms` (a [`stamp::millis`]) until the earliest deadline
    /// armed (zero if it has passed): whole milliseconds from now's, so never short and at most a
    /// millisecond long. The loop asks every turn, so this is stamp arithmetic on the
    /// milliseconds it converted once, not instants.
    pub fn wait_ms(&self, now_ms: i64) -> Option<i64> {
        let &Reverse(e) = self.heap.peek()?;
        Some((self.millis(e) - now_ms).max(0))
    }

    fn millis(&self, entry: u64) -> i64 {
        (entry >> KEY_BITS) as i64 + self.base
    }

    /// Takes the next entry due by `now_ms` (a [`stamp::millis`]): the slab key and the
    /// stamp bits its connection would hold if this entry is its current one.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(usize, Armed)> {
        let &Reverse(e) = self.heap.peek()?;
        let ms = self.millis(e);
        if ms > now_ms {
            return None;
        }
        self.heap.pop();
        // As a stamp keeps it: a count that wrapped to 0 is kept as 1.
        Some(((e & (MAX_KEYS as u64 - 1)) as usize, (ms as u32).max(1)))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_never_early_and_keeps_the_earliest() {
        let t0 = stamp::round_up(Instant::now());
        let mut t = Timers::new(t0, 4);
        let ms = Duration::from_millis;
        let at = |d: Duration| Stamp::at(t0 + d);
        let a = t.arm(7, at(ms(30) + Duration::from_micros(1)), 0, t0);
        let b = t.arm(MAX_KEYS - 1, at(ms(10)), 0, t0);
        // A later deadline for key 7 is not armed again; an earlier one is.
        assert_eq!(t.arm(7, at(ms(50)), a, t0), a);
        let a2 = t.arm(7, at(ms(20)), a, t0);
        assert_ne!(a2, a);
        assert_eq!(t.wait_ms(stamp::millis(t0)), Some(10));
        assert_eq!(t.pop_due(stamp::millis(t0 + ms(9))), None);
        assert_eq!(t.pop_due(stamp::millis(t0 + ms(10))), Some((MAX_KEYS - 1, b)));
        assert_eq!(t.pop_due(stamp::millis(t0 + ms(25))), Some((7, a2)));
        // Rounded up: 30 ms and 1 µs fires at 31 ms.
        assert_eq!(t.pop_due(stamp::millis(t0 + ms(30) + Duration::from_micros(1))), None);
        assert_eq!(t.pop_due(stamp::millis(t0 + ms(31))), Some((7, a)));
        assert_eq!(t.wait_ms(stamp::millis(t0)), None);
    }

    #[test]
    fn a_deadline_armed_late_in_a_long_run_reads_back_exactly() {
        // Twenty days in (past the 32-bit stamps' wrap for some epochs), against a later now.
        let t0 = stamp::round_up(Instant::now());
        let mut t = Timers::new(t0, 1);
        let now = t0 + Duration::from_secs(20 * 86_400);
        let due = now + Duration::from_secs(30);
        let armed = t.arm(3, Stamp::at(due), 0, now);
        assert_eq!(t.wait_ms(stamp::millis(now)), Some(30_000));
        assert_eq!(t.wait_ms(stamp::millis(now + Duration::from_micros(1500))), Some(29_999), "never short");
        assert_eq!(t.wait_ms(stamp::millis(due + Duration::from_secs(1))), Some(0));
        assert_eq!(t.pop_due(stamp::millis(due - Duration::from_millis(1))), None);
        assert_eq!(t.pop_due(stamp::millis(due)), Some((3, armed)));
    }
}
