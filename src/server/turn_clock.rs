//! The loop's time: the turn's instant converted once ([`Worker::clock`]), how long a poll
//! may sleep, and the connection timers that come due.

use std::time::{Duration, Instant};

use super::Worker;
use crate::apps::dashboard::STATS_FEED;
use crate::cluster::Cluster;
use crate::connection::Ready;
use crate::stamp::Stamp;

/// An instant the loop works at, as the stamp connections keep and the milliseconds the
/// timer heap counts in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamped {
    pub(super) at: Instant,
    pub(super) stamp: Stamp,
    pub(super) ms: i64,
}

impl Stamped {
    pub(super) fn of(at: Instant) -> Stamped {
        let (stamp, ms) = crate::stamp::stamp_and_millis(at);
        Stamped { at, stamp, ms }
    }
}

impl Worker {
    /// The turn's instant `now` as a stamp and in milliseconds: converted once a turn, every
    /// drive and timer of it compares.
    pub(super) fn clock(&mut self, now: Instant) -> Stamped {
        if self.stamped.at != now {
            self.stamped = Stamped::of(now);
        }
        self.stamped
    }

    /// The loop's clock reading `ns` becomes the turn's instant, converted once: the loop
    /// keeps what this returns for the turn's own tests (a rare path may convert another
    /// instant into `stamped` meanwhile).
    pub(super) fn clock_at(&mut self, ns: i64) -> Stamped {
        let (at, stamp, ms) = self.loop_clock.at(ns);
        self.stamped = Stamped { at, stamp, ms };
        self.stamped
    }

    /// How long the poll may wait from `now` (`now_ms` as [`Worker::clock`] has it), less
    /// the `spent_ns` the turn took since. Worked out in milliseconds, converted once.
    pub(super) fn poll_timeout(&self, now: Instant, now_ms: i64, spent_ns: u64) -> Option<Duration> {
        if !self.busy.is_empty()
            || self.mailbox.more
            || self.recovery_ready
            || self.cluster.as_ref().is_some_and(Cluster::busy)
        {
            return Some(Duration::ZERO);
        }
        let mut wait_ms = self.timers.wait_ms(now_ms);
        let mut within = |ms: i64| wait_ms = Some(wait_ms.map_or(ms, |w| w.min(ms)));
        let until = |t: Instant| i64::from(Stamp::millis_of(t.saturating_duration_since(now)));
        // Three tests, not an iterator over the three: every turn asks.
        if let Some(ms) = self.accept_paused_ms {
            within((ms - now_ms).max(0));
        }
        if let Some(ms) = self.drain_ms {
            within((ms - now_ms).max(0));
        }
        if !self.tails.is_empty() {
            within((self.tails_ms - now_ms).max(0));
        }
        if self.topics.has_feed(STATS_FEED) {
            within((self.stats_ms - now_ms).max(0));
        }
        if let Some(ms) = self.tokens_refresh_ms {
            within((ms - now_ms).max(0));
        }
        if let Some(t) = self.cluster.as_ref().and_then(Cluster::deadline) {
            within(until(t));
        }
        if self.pools.has_spare() {
            // Housekeeping has something to give back; an idle server with nothing spare
            // does not wake for it.
            within((self.housekeeping_ms - now_ms).max(0));
        }
        // Rounded up a millisecond, so a timer is never polled for a hair early and then
        // spun on.
        wait_ms.map(|ms| Duration::from_nanos(((ms + 1) * 1_000_000).saturating_sub(spent_ns as i64).max(0) as u64))
    }

    /// Drives the connections whose timers are due by `now` (`now_ms` in the timer heap's
    /// milliseconds, as [`Worker::clock`] converts it).
    pub(super) fn fire_timers(&mut self, now: Instant, now_ms: i64) {
        while let Some((key, armed)) = self.timers.pop_due(now_ms) {
            let Some(entry) = self.conns.get_mut(key) else { continue };
            if entry.timer_at != armed || entry.closed {
                continue; // stale entry
            }
            entry.timer_at = 0;
            // Whatever the timer queued (a ping, a close frame, a 408) goes out at the end of
            // the turn.
            self.run_conn(key, now, |conn, ctx| {
                conn.drive(ctx, Ready { corked: true, timer: true, ..Ready::default() })
            });
        }
    }
}
