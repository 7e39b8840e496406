//! Compact timestamps: what every connection stores of time (when it was last heard from,
//! when a phase's deadline falls) in 4 bytes instead of an `Instant`'s 16.
//!
//! A [`Stamp`] is a millisecond count from a process-wide epoch, rounded up (a deadline kept
//! as a stamp is never earlier than the instant it came from, and at most 1 ms later), in 32
//! bits that wrap. It is only ever read back against the current time ([`Stamp::instant`]),
//! as a signed distance from it, so it is exact for instants within [`Stamp::SPAN`] of now:
//! about 24 days, past every timeout a connection keeps (the configuration refuses longer
//! ones). Time is still passed around as `Instant`; stamps are only how it is stored.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(NonZeroU32);

/// The process's epoch: a second before the first instant stamped. Instants before it are
/// fine (offsets are signed), so a synthetic clock in tests may start anywhere.
static EPOCH: OnceLock<Instant> = OnceLock::new();

thread_local! {
    /// The last instant converted and its offset: a loop turn converts the same `now` many
    /// times (every message stamps it, every deadline is read against it).
    static LAST: Cell<Option<(Instant, i64, u32)>> = const { Cell::new(None) };
}

/// `t`'s offset from the epoch in whole milliseconds (floor) and the nanoseconds past that.
#[inline]
fn offset(t: Instant) -> (i64, u32) {
    if let Some((last, ms, sub)) = LAST.get() {
        if last == t {
            return (ms, sub);
        }
    }
    let (ms, sub) = compute_offset(t);
    LAST.set(Some((t, ms, sub)));
    (ms, sub)
}

fn compute_offset(t: Instant) -> (i64, u32) {
    // Whole milliseconds as seconds * 1000 + nanoseconds / 10^6: `as_millis` divides a u128,
    // and a loop turn converts a new instant every time.
    let split = |d: Duration| (d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()), d.subsec_nanos() % 1_000_000);
    let epoch = *EPOCH.get_or_init(|| t.checked_sub(Duration::from_secs(1)).unwrap_or(t));
    match t.checked_duration_since(epoch) {
        Some(d) => split(d),
        None => {
            let (ms, sub) = split(epoch - t);
            if sub == 0 {
                (-ms, 0)
            } else {
                (-ms - 1, 1_000_000 - sub)
            }
        }
    }
}

impl Stamp {
    /// How far from now a stamp reads back exactly (2^31 ms, 24.8 days).
    pub const SPAN: Duration = Duration::from_millis(i32::MAX as u64);

    /// `t`, rounded up to the millisecond. (Once every 49.7 days the count passes 0, which
    /// is kept as 1, a millisecond later: so `Option<Stamp>` is 4 bytes too.)
    pub fn at(t: Instant) -> Stamp {
        Stamp::of_offset(offset(t))
    }

    fn of_offset((ms, sub): (i64, u32)) -> Stamp {
        let count = (ms + i64::from(sub > 0)) as u32;
        Stamp(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
    }

    /// The instant this stamp stands for, read against `now` (which must be within
    /// [`Stamp::SPAN`] of it).
    pub fn instant(self, now: Instant) -> Instant {
        let (ms, sub) = offset(now);
        // Milliseconds from the stamp to the last whole millisecond at or before `now`.
        let back = (ms as u32).wrapping_sub(self.0.get()) as i32;
        let since_whole = Duration::from_nanos(u64::from(sub));
        if back >= 0 {
            let d = Duration::from_millis(back as u64) + since_whole;
            now.checked_sub(d).unwrap_or(now)
        } else {
            let ahead = Duration::from_millis(u64::from(back.unsigned_abs()));
            (now + ahead).checked_sub(since_whole).unwrap_or(now)
        }
    }

    /// Whether `now` is at or past this stamp (a deadline).
    pub fn passed(self, now: Instant) -> bool {
        now >= self.instant(now)
    }

    /// `d` after this stamp, rounded up to the millisecond (a deadline from a stamp: never
    /// early, at most 1 ms late). `d` must be under [`Stamp::SPAN`].
    #[inline]
    pub fn after(self, d: Duration) -> Stamp {
        self.after_ms(Stamp::millis_of(d))
    }

    /// `ms` milliseconds after this stamp (see [`Stamp::millis_of`]).
    #[inline]
    pub fn after_ms(self, ms: u32) -> Stamp {
        let count = self.0.get().wrapping_add(ms);
        Stamp(NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN))
    }

    /// `d` in whole milliseconds, rounded up, at most [`Stamp::SPAN`]'s.
    #[inline]
    pub fn millis_of(d: Duration) -> u32 {
        let ms = d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)));
        ms.min(i32::MAX as u64) as u32
    }

    /// The earlier of two stamps within [`Stamp::SPAN`] of each other.
    #[inline]
    pub fn earlier(self, other: Stamp) -> Stamp {
        if (other.0.get().wrapping_sub(self.0.get()) as i32) >= 0 {
            self
        } else {
            other
        }
    }

    /// The stamp's 32 bits, as the loop's timers remember them.
    pub fn bits(self) -> u32 {
        self.0.get()
    }

    /// Milliseconds from the epoch, read against `now_ms` (from [`millis`]; within
    /// [`Stamp::SPAN`] of it).
    pub fn unwrap(self, now_ms: i64) -> i64 {
        now_ms + i64::from(self.0.get().wrapping_sub(now_ms as u32) as i32)
    }
}

/// `t` in whole milliseconds from the epoch, rounded down: a stamp of `m` has passed at `t`
/// when `m <= millis(t)`.
pub fn millis(t: Instant) -> i64 {
    offset(t).0
}

/// A loop's clock: the monotonic clock as nanoseconds ([`monotonic_ns`]), turned into the
/// `Instant`, [`Stamp`] and [`millis`] of the same moment by integer arithmetic. Reading
/// `Instant::now()` and converting it costs a `Timespec` subtraction for each, which a loop
/// turn of one message pays for as much as for the message.
///
/// The instants it gives are `base + (ns - base_ns)`, where `base_ns` was read just after
/// `base`: at most that gap (well under a microsecond) before `Instant::now()` would have
/// been, so a deadline is never seen passed early. Their stamps and milliseconds are exactly
/// what [`Stamp::at`] and [`millis`] give for them.
///
/// [`monotonic_ns`]: crate::sys::clock::monotonic_ns
#[derive(Debug, Clone, Copy)]
pub struct LoopClock {
    base: Instant,
    base_ns: i64,
    /// The epoch on the nanosecond clock: `ns - epoch_ns` is the offset [`offset`] gives.
    epoch_ns: i64,
}

impl LoopClock {
    #[allow(clippy::disallowed_methods)] // the clock's anchor: read once, when a loop starts
    pub fn new() -> LoopClock {
        let base = Instant::now();
        let base_ns = crate::sys::clock::monotonic_ns();
        let (ms, sub) = offset(base);
        LoopClock { base, base_ns, epoch_ns: base_ns - (ms * 1_000_000 + i64::from(sub)) }
    }

    /// Now, on this clock.
    #[inline]
    pub fn read(&self) -> i64 {
        crate::sys::clock::monotonic_ns()
    }

    /// The moment `ns` (a [`LoopClock::read`]) as an instant, a stamp and milliseconds.
    #[inline]
    pub fn at(&self, ns: i64) -> (Instant, Stamp, i64) {
        // The clock is monotonic: never before the base. (The epoch may be later than the
        // base, when something stamped a later instant first: the offset is then negative.)
        let at = self.base + Duration::from_nanos((ns - self.base_ns).max(0) as u64);
        let since = ns - self.epoch_ns;
        let offset = match u64::try_from(since) {
            // Unsigned division, the common case, is the cheaper.
            Ok(since) => ((since / 1_000_000) as i64, (since % 1_000_000) as u32),
            Err(_) => (since.div_euclid(1_000_000), since.rem_euclid(1_000_000) as u32),
        };
        (at, Stamp::of_offset(offset), offset.0)
    }
}

impl Default for LoopClock {
    fn default() -> LoopClock {
        LoopClock::new()
    }
}

/// `t` as a [`Stamp`] and as [`millis`], from one conversion: what the loop keeps of the
/// instant of its turn.
pub fn stamp_and_millis(t: Instant) -> (Stamp, i64) {
    let offset = offset(t);
    (Stamp::of_offset(offset), offset.0)
}

/// A stamp for what may be held for months (when a connection was accepted): the same
/// millisecond count in 64 bits, exact at any distance from now, in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongStamp(i64);

impl LongStamp {
    pub fn at(t: Instant) -> LongStamp {
        let (ms, sub) = offset(t);
        LongStamp(ms + i64::from(sub > 0))
    }

    /// The same instant as a (wrapping) [`Stamp`].
    pub fn short(self) -> Stamp {
        Stamp(NonZeroU32::new(self.0 as u32).unwrap_or(NonZeroU32::MIN))
    }

    pub fn instant(self, now: Instant) -> Instant {
        let (ms, sub) = offset(now);
        let back = ms - self.0;
        let since_whole = Duration::from_nanos(u64::from(sub));
        if back >= 0 {
            now.checked_sub(Duration::from_millis(back as u64) + since_whole).unwrap_or(now)
        } else {
            (now + Duration::from_millis(back.unsigned_abs())).checked_sub(since_whole).unwrap_or(now)
        }
    }
}

/// `t` rounded up to what a stamp keeps of it: a synthetic clock that starts there (tests,
/// the fuzz targets) sees deadlines exactly where it puts them.
pub fn round_up(t: Instant) -> Instant {
    Stamp::at(t).instant(t)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;

    #[test]
    fn reads_back_within_a_millisecond_never_earlier() {
        let t0 = Instant::now();
        for step_us in [0u64, 1, 999, 1000, 1001, 123_456, 86_400_000_000, 20 * 86_400_000_000] {
            let t = t0 + Duration::from_micros(step_us);
            let s = Stamp::at(t);
            for later_us in [0u64, 1, 500, 3_000_000, 10 * 86_400_000_000] {
                let now = t + Duration::from_micros(later_us);
                let back = s.instant(now);
                assert!(back >= t && back - t < Duration::from_millis(1), "step {step_us} later {later_us}");
            }
        }
    }

    #[test]
    fn deadlines_ahead_of_now_and_before_the_epoch() {
        let now = Instant::now() + Duration::from_secs(100);
        let deadline = now + Duration::from_secs(30);
        let s = Stamp::at(deadline);
        assert!(!s.passed(now));
        assert!(!s.passed(deadline - Duration::from_micros(1)));
        assert!(s.passed(deadline + Duration::from_millis(1)));
        let early = now - Duration::from_secs(90);
        let e = Stamp::at(early);
        let back = e.instant(now);
        assert!(back >= early && back - early < Duration::from_millis(1));
    }

    #[test]
    fn long_stamps_read_back_at_any_distance() {
        let t = Instant::now();
        let s = LongStamp::at(t);
        for later in [0, 1, 60, 90 * 86_400, 3 * 365 * 86_400] {
            let back = s.instant(t + Duration::from_secs(later));
            assert!(back >= t && back - t < Duration::from_millis(1), "{later}");
        }
    }

    #[test]
    fn deadlines_in_stamp_space_match_instants() {
        let t = Instant::now() + Duration::from_micros(1234);
        let s = Stamp::at(t);
        let d = s.after(Duration::from_micros(30_000_001));
        // Never early, at most 2 ms late (the stamp's rounding and the duration's).
        let back = d.instant(t);
        let exact = t + Duration::from_micros(30_000_001);
        assert!(back >= exact && back - exact < Duration::from_millis(2));
        assert_eq!(s.earlier(d), s);
        assert_eq!(d.earlier(s), s);
        let now_ms = millis(t);
        // The stamp rounds `t` up unless it is a whole millisecond from the epoch (as when
        // this test is the first to stamp: the epoch is then `t` less a second).
        let rounded_up = i64::from(offset(t).1 > 0);
        assert_eq!(d.unwrap(now_ms), now_ms + rounded_up + 30_001);
        assert!(d.unwrap(now_ms) > millis(exact));
        assert_eq!(LongStamp::at(t).short(), s);
        // Across the 32-bit wrap, against a now on either side of it.
        let late = Stamp(NonZeroU32::new(u32::MAX - 5).unwrap()).after(Duration::from_millis(10));
        assert_eq!(late.bits(), 4);
        let now_ms = (1i64 << 32) - 3;
        assert_eq!(late.unwrap(now_ms), (1i64 << 32) + 4);
        assert_eq!(Stamp(NonZeroU32::new(u32::MAX - 5).unwrap()).earlier(late).bits(), u32::MAX - 5);
    }

    #[test]
    fn wraps_without_losing_nearby_instants() {
        // 2^32 ms is 49.7 days: a stamp 50 days in reads back exactly against a now near it.
        let t = Instant::now() + Duration::from_secs(50 * 86_400);
        let s = Stamp::at(t);
        let now = t + Duration::from_secs(3600);
        let back = s.instant(now);
        assert!(back >= t && back - t < Duration::from_millis(1));
    }

    #[test]
    fn the_loop_clock_agrees_with_stamping_its_instants_and_is_never_ahead() {
        let clock = LoopClock::new();
        let mut last = None;
        for _ in 0..1000 {
            let ns = clock.read();
            let (at, stamp, ms) = clock.at(ns);
            assert!(at <= Instant::now(), "never ahead of the clock Instant reads");
            assert_eq!((stamp, ms), stamp_and_millis(at), "the same conversion as the instant's");
            assert!(last.is_none_or(|l| l <= at), "monotonic");
            last = Some(at);
        }
        // Far from its base (a month of uptime), the same; and with the epoch after it (a
        // synthetic clock stamped a later instant first), the same.
        for ahead in [0, 1, 999_999, 30 * 86_400 * 1_000_000_000 + 123_456_789] {
            let (at, stamp, ms) = clock.at(clock.read() + ahead);
            assert_eq!((stamp, ms), stamp_and_millis(at), "{ahead}");
        }
        let late = LoopClock { epoch_ns: clock.read() + 5_000_000_001, ..clock };
        let ns = clock.read();
        let (_, _, ms) = late.at(ns);
        let since = ns - late.epoch_ns;
        assert!(ms < 0 && ms * 1_000_000 <= since && since < (ms + 1) * 1_000_000, "floored: {ms} for {since}");
    }
}
