//! The monotonic clock read directly, as nanoseconds.

/// `CLOCK_MONOTONIC` in nanoseconds: the clock std's `Instant` reads on Linux, without the
/// `Timespec` checks and subtractions around it. The loop reads it twice a turn and does its
/// arithmetic in integers (see [`crate::stamp::LoopClock`]).
#[inline]
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration, and the clock id
    // is one every Linux has, so the call fills it and cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
