//! Rate limits, per route: token buckets for what a connection sends (messages, bytes), for
//! pubsub operations (subscribe, publish, ...), and for upgrades per client address, and a cap
//! on a client address's open connections. Each limit has a rate (per second), a burst, what
//! happens past it (the message dropped with an error message, or the connection closed with
//! 1008), and a dry-run mode that only counts. Every limit passed is counted by name in
//! `/metrics` (`wsgate_rate_limited_total`).
//!
//! A route without limits has none of this on its path: no wrapper, no bucket, no lock.
//! Per-connection buckets live in the connection's app wrapper
//! ([`Guarded`](crate::apps::guarded::Guarded)); the per-address
//! ones in one table for the process (a mutex taken once per upgrade, never per message), so a
//! client cannot spread its upgrades over the workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::apps::{AppClose, AppCtx};
use crate::stamp;
use crate::ws::close;
use crate::ws::message::MessageKind;

/// What is limited (the metric's `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Messages,
    Bytes,
    Operations,
    HandshakesPerIp,
    ConnectionsPerIp,
    MessagesPerUser,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Messages,
        Kind::Bytes,
        Kind::Operations,
        Kind::HandshakesPerIp,
        Kind::ConnectionsPerIp,
        Kind::MessagesPerUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Messages => "messages",
            Kind::Bytes => "bytes",
            Kind::Operations => "operations",
            Kind::HandshakesPerIp => "handshakes_per_ip",
            Kind::ConnectionsPerIp => "connections_per_ip",
            Kind::MessagesPerUser => "messages_per_user",
        }
    }
}

/// What happens past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The message (or operation, or upgrade: 429) is refused with an error; the connection
    /// stays.
    Drop,
    /// The connection is closed with 1008 (an upgrade is refused: 429).
    Close,
}

impl Action {
    fn index(self, dry_run: bool) -> usize {
        match (dry_run, self) {
            (true, _) => 2,
            (false, Action::Drop) => 0,
            (false, Action::Close) => 1,
        }
    }

    pub fn label(i: usize) -> &'static str {
        ["drop", "close", "dry_run"][i]
    }
}

/// One limit: `rate` per second, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub rate: u64,
    pub burst: u64,
    pub action: Action,
    /// Only count: let everything through.
    pub dry_run: bool,
}

/// Times the limits were passed, by kind and by what was done ([`Action::label`]): process-wide,
/// touched only when a limit is passed.
static PASSED: [[AtomicU64; 3]; 6] = [const { [const { AtomicU64::new(0) }; 3] }; 6];

/// The counts for `/metrics`: (limit, action label, count).
pub fn passed() -> impl Iterator<Item = (&'static str, &'static str, u64)> {
    Kind::ALL.into_iter().enumerate().flat_map(|(k, kind)| {
        (0..3).map(move |a| (kind.name(), Action::label(a), PASSED[k][a].load(Ordering::Relaxed)))
    })
}

/// Counts a passed limit; `true` if the thing goes through anyway (dry run).
fn note(kind: Kind, rule: &Rule) -> bool {
    let k = Kind::ALL.iter().position(|&x| x == kind).unwrap_or(0);
    PASSED[k][rule.action.index(rule.dry_run)].fetch_add(1, Ordering::Relaxed);
    rule.dry_run
}

/// A token bucket: full at `burst`, refilled at `rate` per second, in thousandths of a token so
/// that slow rates refill exactly.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    milli: u64,
    at_ms: i64,
}

impl Bucket {
    pub fn full(rule: &Rule, now_ms: i64) -> Bucket {
        Bucket { milli: rule.burst.saturating_mul(1000), at_ms: now_ms }
    }

    /// Takes `n` tokens if there are that many (after refilling to `now_ms`).
    pub fn take(&mut self, rule: &Rule, now_ms: i64, n: u64) -> bool {
        let elapsed = u64::try_from(now_ms - self.at_ms).unwrap_or(0);
        if elapsed > 0 {
            self.milli =
                self.milli.saturating_add(elapsed.saturating_mul(rule.rate)).min(rule.burst.saturating_mul(1000));
            self.at_ms = now_ms;
        }
        let want = n.saturating_mul(1000);
        if self.milli >= want {
            self.milli -= want;
            true
        } else {
            false
        }
    }

    /// Would be full by `now_ms` (an idle entry that can be forgotten).
    fn is_full(&self, rule: &Rule, now_ms: i64) -> bool {
        let elapsed = u64::try_from(now_ms - self.at_ms).unwrap_or(0);
        self.milli.saturating_add(elapsed.saturating_mul(rule.rate)) >= rule.burst.saturating_mul(1000)
    }
}

/// A route's limits (`rate_*` and `max_connections_per_ip`).
#[derive(Debug, Default)]
pub struct RouteRates {
    pub messages: Option<Rule>,
    pub bytes: Option<Rule>,
    /// Pubsub operations (every request a client makes).
    pub operations: Option<Rule>,
    pub handshakes_per_ip: Option<Rule>,
    pub connections_per_ip: Option<(u32, bool)>,
    /// The per-address table, when either per-address limit is set.
    pub per_ip: Option<Arc<IpTable>>,
    /// Messages all of a user's connections send together (the token's `sub`).
    pub messages_per_user: Option<Rule>,
    pub per_user: Option<UserTable>,
}

impl RouteRates {
    /// Any limit that needs the connection's app wrapped.
    pub fn wraps(&self) -> bool {
        self.messages.is_some()
            || self.bytes.is_some()
            || self.connections_per_ip.is_some()
            || self.messages_per_user.is_some()
    }
}

/// One bucket per user for the route, shared by the user's connections on every worker. A
/// connection holds its user's bucket; the table forgets a bucket that no connection holds
/// once it has refilled (so reconnecting does not refill it sooner).
#[derive(Debug, Default)]
pub struct UserTable {
    map: Mutex<HashMap<Arc<str>, Arc<Mutex<Bucket>>>>,
}

impl UserTable {
    /// `user`'s bucket (made full if the user has none).
    pub fn bucket(&self, user: &str, rule: &Rule, now: Instant) -> Arc<Mutex<Bucket>> {
        let now_ms = stamp::millis(now);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(user) {
            return Arc::clone(b);
        }
        if map.len() >= PRUNE_AT && map.len().is_power_of_two() {
            map.retain(|_, b| Arc::strong_count(b) > 1 || b.lock().is_ok_and(|b| !b.is_full(rule, now_ms)));
        }
        let b = Arc::new(Mutex::new(Bucket::full(rule, now_ms)));
        map.insert(Arc::from(user), Arc::clone(&b));
        b
    }

    /// Users tracked.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client address as limits see it: IPv4 whole, IPv6 by its /64 (one host's share of a
/// network; a client has 2^64 addresses in its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    V6Net(u64),
}

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(u32::from(v4)),
                None => IpKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct IpEntry {
    bucket: Option<Bucket>,
    open: u32,
}

/// Per-address state for one route, shared by the workers.
#[derive(Debug, Default)]
pub struct IpTable {
    map: Mutex<HashMap<IpKey, IpEntry>>,
}

/// Why an upgrade was refused.
pub struct Refused(pub Kind);

impl IpTable {
    /// An upgrade from `ip`: takes a handshake token and an open-connection slot. `Ok(slot)`:
    /// admitted (the slot, if the cap is set, is given back when the connection goes).
    pub fn admit(self: &Arc<Self>, rates: &RouteRates, ip: IpAddr, now: Instant) -> Result<Option<IpSlot>, Refused> {
        let key = IpKey::of(ip);
        let now_ms = stamp::millis(now);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT && map.len().is_power_of_two() {
            // Forget addresses with nothing open whose bucket has refilled: the table holds
            // the clients of the last burst's worth of time, not every client ever seen.
            map.retain(|_, e| {
                e.open > 0
                    || rates
                        .handshakes_per_ip
                        .as_ref()
                        .zip(e.bucket.as_ref())
                        .is_some_and(|(r, b)| !b.is_full(r, now_ms))
            });
        }
        let entry = map.entry(key).or_insert(IpEntry { bucket: None, open: 0 });
        if let Some(rule) = &rates.handshakes_per_ip {
            let bucket = entry.bucket.get_or_insert_with(|| Bucket::full(rule, now_ms));
            if !bucket.take(rule, now_ms, 1) && !note(Kind::HandshakesPerIp, rule) {
                return Err(Refused(Kind::HandshakesPerIp));
            }
        }
        let Some((max, dry_run)) = rates.connections_per_ip else { return Ok(None) };
        if entry.open >= max {
            let rule = Rule { rate: 0, burst: u64::from(max), action: Action::Drop, dry_run };
            if !note(Kind::ConnectionsPerIp, &rule) {
                return Err(Refused(Kind::ConnectionsPerIp));
            }
        }
        entry.open += 1;
        Ok(Some(IpSlot { table: Arc::clone(self), key }))
    }

    fn release(&self, key: IpKey) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.bucket.is_none() {
                map.remove(&key);
            }
        }
    }

    /// Addresses tracked (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Past this many addresses, the table forgets idle ones (each time it doubles).
const PRUNE_AT: usize = 1024;

/// An open connection's place in its address's count; given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<IpTable>,
    key: IpKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

/// The error message a dropped message or operation is answered with.
pub fn error_message(kind: Kind) -> Vec<u8> {
    format!("{{\"op\":\"error\",\"code\":429,\"message\":\"rate limit: {}\"}}", kind.name()).into_bytes()
}

/// Checks one take against `rule`: `true` if the thing goes on. Past the limit, counts, and
/// answers (drop) or closes (close) through `cx`.
pub fn check(cx: &mut AppCtx<'_>, bucket: &mut Bucket, rule: &Rule, kind: Kind, n: u64) -> bool {
    if bucket.take(rule, stamp::millis(cx.now()), n) || note(kind, rule) {
        return true;
    }
    match rule.action {
        Action::Drop => cx.send(MessageKind::Text, &error_message(kind)),
        Action::Close => {
            cx.close(AppClose::Close(close::POLICY_VIOLATION, format!("rate limit: {}", kind.name()).into()))
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let rule = Rule { rate: 10, burst: 5, action: Action::Drop, dry_run: false };
        let mut b = Bucket::full(&rule, 0);
        assert_eq!((0..8).filter(|_| b.take(&rule, 0, 1)).count(), 5);
        // 10 per second: one every 100 ms, exactly, however the time is sliced.
        let mut got = 0;
        for ms in 1..=1000 {
            got += usize::from(b.take(&rule, ms, 1));
        }
        assert_eq!(got, 10);
        // Never more than the burst after a long pause.
        assert_eq!((0..20).filter(|_| b.take(&rule, 1_000_000, 1)).count(), 5);
        // A take larger than the burst never passes.
        assert!(!b.take(&rule, 10_000_000, 6));
        // A clock that goes backwards refills nothing.
        let mut c = Bucket::full(&rule, 100);
        assert_eq!((0..9).filter(|_| c.take(&rule, 50, 1)).count(), 5);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(a), IpKey::of(b));
        assert_ne!(IpKey::of(a), IpKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(IpKey::of(mapped), IpKey::of("10.0.0.1".parse().unwrap()));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's own clock
    fn the_address_table_caps_open_connections_and_forgets_closed_ones() {
        let rates = RouteRates { connections_per_ip: Some((2, false)), ..Default::default() };
        let table = Arc::new(IpTable::default());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let now = Instant::now();
        let a = table.admit(&rates, ip, now).ok().flatten().unwrap();
        let b = table.admit(&rates, ip, now).ok().flatten().unwrap();
        assert!(matches!(table.admit(&rates, ip, now), Err(Refused(Kind::ConnectionsPerIp))));
        assert!(table.admit(&rates, "10.1.2.4".parse().unwrap(), now).is_ok_and(|s| s.is_some()));
        drop(a);
        let c = table.admit(&rates, ip, now).ok().flatten();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(table.len(), 0, "nothing kept for addresses with nothing open");
        // Dry run: counted, let through.
        let dry = RouteRates { connections_per_ip: Some((0, true)), ..Default::default() };
        assert!(table.admit(&dry, ip, now).is_ok());
    }
}
