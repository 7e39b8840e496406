//! Topics with history across nodes (`[cluster]` with `[[history]]`), on the loop: Redis
//! numbers and keeps every publication ([`crate::cluster::streams`]), and each worker
//! delivers them from its subscription link in offset order, dropping what it already
//! delivered.
//!
//! Why a subscription gets neither a gap nor a duplicate: its reads go to Redis on the publish
//! link, its publications come on the subscription link, and the two are not ordered with
//! each other. So a waiting subscription first sends a barrier (a PING) down the subscription
//! link after its channel's SUBSCRIBE: when it comes back, the channel is subscribed, and
//! every publication from then on is received. Then it reads page by page to the end (what
//! arrives meanwhile is in a later page). Then a second barrier: until it comes back, the
//! subscription takes from the channel what is after its last page itself; once back, every
//! publication still to come is later than all it has, and it joins the topic's members.
//!
//! When the subscription link comes back after a failure, or a publication skips offsets,
//! the worker repairs: it reads what its members missed from the stream and delivers it in
//! order, holding (up to `HELD_MAX` publications and `HELD_BYTES`) what arrives meanwhile. So delivery to a member is
//! exactly once and in order across Redis reconnects, as far as the stream still holds what
//! it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::recovery::Asked;
use super::Worker;
use crate::cluster::{streams, Event, Incoming, Kept};
use crate::conn_id::key_of;
use crate::encode::SharedFrame;
use crate::history::{self, Entry, Position, Read, Unrecoverable};
use crate::ws::frame::Opcode;

/// Publications held while a repair reads or subscriptions wait (and bytes of them, the
/// frames' own: they are shared with the members' queues); past these, they are read instead.
const HELD_MAX: usize = 4096;
const HELD_BYTES: usize = 8 << 20;
/// Publications, and bytes of them, per repair read.
const REPAIR_LIMIT: usize = 512;
const REPAIR_BYTES: usize = 4 << 20;

/// What a tagged read or barrier is for.
pub(super) enum Awaited {
    /// A waiting subscription's first barrier: its channel is subscribed.
    Subscribed { id: u64, topic: Arc<str>, serial: u64 },
    /// A read for a client: a waiting subscription's page, or its `history` request.
    Read { id: u64, topic: Arc<str>, asked: Asked, read: Read },
    /// A subscription's last barrier: the channel caught up with its last page.
    Joined { id: u64, topic: Arc<str>, serial: u64, recovered: Option<Result<(), &'static str>> },
    /// The subscription link came back: repairs may read.
    Resubscribed,
    /// A repair's read for `topic`'s members.
    Repair { topic: Arc<str> },
    /// A client's `presence` (or, `stats`, `presence_stats`) request; `admin`: the admin
    /// API's, answered as HTTP (keep-alive, HEAD).
    Presence { id: u64, topic: Arc<str>, stats: bool, admin: Option<(bool, bool)> },
    /// `/api/history_remove` across nodes (keep-alive, HEAD).
    Removed { id: u64, keep_alive: bool, head_only: bool },
}

/// A topic with history whose members this worker serves from the channel.
struct Live {
    epoch: Box<str>,
    /// The last offset delivered to the members.
    last: u64,
    /// A repair is reading: what the channel brings meanwhile (in order), and whether some
    /// of it was not held.
    repair: Option<(Vec<Held>, usize, bool)>,
}

struct Held {
    offset: u64,
    frame: SharedFrame,
    excluded: Vec<u64>,
}

/// What a topic's channel brought while subscriptions to it wait: a reply to their read may
/// come after publications that followed the read (the two links are not ordered), and
/// those are taken from here.
#[derive(Default)]
struct Recent {
    epoch: Box<str>,
    held: VecDeque<Held>,
    bytes: usize,
    /// The last offset let go to stay within `HELD_MAX` and `HELD_BYTES` (a read goes on
    /// from before it).
    dropped_through: u64,
}

/// Held publications and their bytes.
fn holding(held: Vec<Held>) -> (Vec<Held>, usize, bool) {
    let bytes = held.iter().map(|h| h.frame.len()).sum();
    (held, bytes, false)
}

/// A worker's reads and barriers in flight, and its live topics with history.
#[derive(Default)]
pub(super) struct Streams {
    awaited: HashMap<u64, Awaited>,
    next_tag: u64,
    live: HashMap<Arc<str>, Live>,
    recent: HashMap<Arc<str>, Recent>,
    /// Repairs waiting for the publish link.
    stalled: Vec<Arc<str>>,
}

impl Streams {
    pub(super) fn tag(&mut self, awaited: Awaited) -> u64 {
        self.next_tag += 1;
        self.awaited.insert(self.next_tag, awaited);
        self.next_tag
    }

    /// A tag whose request was never sent.
    pub(super) fn forget(&mut self, tag: u64) {
        self.awaited.remove(&tag);
    }
}

/// What the Redis links brought that needs the links again (handled once they are back in
/// the worker's hands).
pub(super) enum Deferred {
    Answer(u64, Result<Vec<u8>, String>),
    Barrier(u64),
    Resubscribed,
    Gap(Arc<str>),
}

/// Redis's clock is compared with ours for a history's `ttl`.
fn now_ms() -> u64 {
    #[allow(clippy::disallowed_methods, reason = "a ttl against the time Redis stamped, in ms since the epoch")]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Worker {
    /// Whether topics with history are Redis streams here.
    pub(super) fn across_nodes(&self, topic: &str) -> bool {
        self.cluster.is_some() && self.topics.has_history(topic)
    }

    /// How `topic` keeps its history; `None` once a reload took its rule away.
    fn kept(&self, topic: &str) -> Option<Kept> {
        self.histories.rules().find(topic).map(|rule| Kept { size: rule.size, ttl: rule.ttl })
    }

    /// A publication to a topic with history, across nodes: to Redis, which numbers it.
    pub(super) fn publish_across(&mut self, topic: &str, frame: &SharedFrame, exclude_ids: &[u64], now: Instant) {
        let Some(kept) = self.kept(topic) else {
            // No longer a topic with history (a reload): published as topics without it are.
            self.publish(topic, frame, None, exclude_ids, now);
            self.spread_publish(&Arc::from(topic), frame, exclude_ids.into());
            if let Some(cluster) = &mut self.cluster {
                cluster.publish(topic, frame, now);
            }
            return;
        };
        if let Some(cluster) = &mut self.cluster {
            cluster.publish_numbered(topic, frame, exclude_ids, kept, now);
            self.metrics.history_appends += 1;
        }
    }

    /// A subscription that waits in [`crate::pubsub::Topics`]: its channel, then its first barrier.
    pub(super) fn recover_across(&mut self, key: usize, topic: Arc<str>, serial: u64, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        self.streams.recent.entry(Arc::clone(&topic)).or_default();
        let tag = self.streams.tag(Awaited::Subscribed { id, topic: Arc::clone(&topic), serial });
        let sent = self.cluster.as_mut().is_some_and(|c| {
            c.topic_changed(&topic, true);
            c.barrier(tag, now)
        });
        if !sent {
            self.streams.awaited.remove(&tag);
            self.give_up_pending(key, &topic, serial, now);
        }
    }

    /// A read of a topic's history from its stream, for connection `key`.
    pub(super) fn read_across(&mut self, key: usize, topic: Arc<str>, asked: Asked, read: Read, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        self.metrics.history_reads += 1;
        let Some(Kept { ttl, .. }) = self.kept(&topic) else {
            return self.history_answered(id, topic, asked, Err((Unrecoverable::NoHistory, None)), now);
        };
        let (after, count) = match &read.since {
            Some(since) => (Some(since.offset), read.limit.max(1)),
            None if matches!(asked, Asked::Subscribe(_)) => (None, 1), // only the position
            None => (None, read.limit.max(1)),
        };
        let reverse = read.reverse && read.since.is_none();
        let max_bytes = read.max_bytes;
        let tag = self.streams.tag(Awaited::Read { id, topic: Arc::clone(&topic), asked, read });
        let sent = self
            .cluster
            .as_mut()
            .is_some_and(|c| c.read_history(&topic, after, count, reverse, ttl, max_bytes, tag, now));
        if !sent {
            self.streams.awaited.remove(&tag);
            self.history_answered(id, topic, asked, Err((Unrecoverable::Unavailable, None)), now);
        }
    }

    /// `/api/history_remove` across nodes: the topic's keys deleted in Redis.
    pub(super) fn remove_across(&mut self, key: usize, topic: &str, keep_alive: bool, head_only: bool, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let tag = self.streams.tag(Awaited::Removed { id, keep_alive, head_only });
        if !self.cluster.as_mut().is_some_and(|c| c.remove_history(topic, tag, now)) {
            self.streams.forget(tag);
            self.history_removed(id, keep_alive, head_only, Err("the link is down".into()), now);
        }
    }

    fn history_removed(
        &mut self,
        id: u64,
        keep_alive: bool,
        head_only: bool,
        result: Result<Vec<u8>, String>,
        now: Instant,
    ) {
        let key = key_of(id);
        if self.conns.get(key).is_none_or(|e| e.conn.id() != id) {
            return;
        }
        let reply = match result.and_then(|raw| streams::parse_count(&raw)) {
            Ok(deleted) => crate::admin::render::result_reply(format!("{{\"removed\":{}}}", deleted > 0).as_bytes()),
            Err(e) => {
                log::warn!("cluster: removing a history: {e}");
                crate::admin::Reply::error(503, Unrecoverable::Unavailable.reason())
            }
        };
        self.answer(key, &reply, keep_alive, head_only, now);
    }

    /// A waiting subscription read to its end (`position`): what the channel brought after
    /// it, then its last barrier, then it joins.
    pub(super) fn join_across(
        &mut self,
        key: usize,
        topic: &Arc<str>,
        mut position: Position,
        recovered: Option<Result<(), &'static str>>,
        now: Instant,
    ) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let mut after = Vec::new();
        if let Some(r) = self.streams.recent.get(topic).filter(|r| *r.epoch == *position.epoch) {
            if r.dropped_through > position.offset && recovered.is_none_or(|r| r.is_ok()) {
                // Not all of it was kept: a recovery reads on instead.
                if let Some(p) = self.topics.pending_mut(key, topic) {
                    p.since = Some(position);
                    p.waiting_for_room = true;
                }
                return;
            }
            after.extend(
                r.held
                    .iter()
                    .filter(|h| h.offset > position.offset && !h.excluded.contains(&id))
                    .map(|h| (h.offset, h.frame.clone())),
            );
        }
        for (offset, frame) in after {
            if !self.deliver(key, &frame, now) {
                self.topics.end_pending(key, topic);
                return;
            }
            position.offset = offset;
        }
        let Some(p) = self.topics.pending_mut(key, topic) else { return };
        p.since = Some(position);
        p.joining = true;
        let serial = p.serial;
        let tag = self.streams.tag(Awaited::Joined { id, topic: Arc::clone(topic), serial, recovered });
        if !self.cluster.as_mut().is_some_and(|c| c.barrier(tag, now)) {
            self.streams.awaited.remove(&tag);
            self.joined(key, topic, serial, recovered, now);
        }
    }

    /// A waiting subscription that cannot go on (Redis is unreachable): subscribed as it is,
    /// told why it recovered nothing.
    fn give_up_pending(&mut self, key: usize, topic: &Arc<str>, serial: u64, now: Instant) {
        let Some(p) = self.topics.pending_mut(key, topic).filter(|p| p.serial == serial).cloned() else { return };
        self.metrics.history_unrecovered += u64::from(p.recover);
        let recovered = p.recover.then_some(Err(Unrecoverable::Unavailable.reason()));
        self.finish_subscription(key, topic, p.max, None, recovered, now);
    }

    /// The last barrier came back: the subscription joins at the position it reached.
    fn joined(
        &mut self,
        key: usize,
        topic: &Arc<str>,
        serial: u64,
        recovered: Option<Result<(), &'static str>>,
        now: Instant,
    ) {
        let Some(p) = self.topics.pending_mut(key, topic).filter(|p| p.serial == serial).cloned() else { return };
        if let Some(since) = &p.since {
            // The first member on this worker: what it has is where the topic is.
            self.streams.live.entry(Arc::clone(topic)).or_insert_with(|| Live {
                epoch: since.epoch.as_ref().into(),
                last: since.offset,
                repair: None,
            });
        }
        self.finish_subscription(key, topic, p.max, p.since, recovered, now);
    }

    /// The links' events, once the links are back in the worker's hands.
    pub(super) fn on_deferred(&mut self, deferred: Vec<Deferred>, now: Instant) {
        for d in deferred {
            match d {
                Deferred::Answer(tag, result) => self.on_answer(tag, result, now),
                Deferred::Barrier(tag) => self.on_barrier(tag, now),
                Deferred::Resubscribed => {
                    if !self.streams.live.is_empty() {
                        let tag = self.streams.tag(Awaited::Resubscribed);
                        if !self.cluster.as_mut().is_some_and(|c| c.barrier(tag, now)) {
                            self.streams.awaited.remove(&tag);
                        }
                    }
                }
                Deferred::Gap(topic) => self.repair(topic, now),
            }
        }
        let lost = self.cluster.as_mut().map(|c| c.take_lost()).unwrap_or_default();
        for tag in lost {
            self.on_lost(tag, now);
        }
    }

    fn on_barrier(&mut self, tag: u64, now: Instant) {
        match self.streams.awaited.remove(&tag) {
            Some(Awaited::Subscribed { id, topic, serial }) => {
                let key = key_of(id);
                if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
                    self.start_recovery_read(key, topic, serial, now);
                }
            }
            Some(Awaited::Joined { id, topic, serial, recovered }) => {
                let key = key_of(id);
                if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
                    self.joined(key, &topic, serial, recovered, now);
                }
            }
            Some(Awaited::Resubscribed) => {
                let topics: Vec<Arc<str>> = self.streams.live.keys().cloned().collect();
                log::info!(
                    "cluster: repairing {} topic(s) with history after the subscription link came back",
                    topics.len()
                );
                for topic in topics {
                    self.repair(topic, now);
                }
            }
            _ => {}
        }
    }

    fn on_answer(&mut self, tag: u64, result: Result<Vec<u8>, String>, now: Instant) {
        match self.streams.awaited.remove(&tag) {
            Some(Awaited::Read { id, topic, asked, read }) => {
                let ttl = self.kept(&topic).map_or(std::time::Duration::ZERO, |k| k.ttl);
                let answer = match &result {
                    Err(e) => {
                        log::warn!("cluster: reading {topic:?}'s history: Redis answered {e}");
                        Err((Unrecoverable::Unavailable, None))
                    }
                    Ok(raw) => match streams::parse_read(raw) {
                        Ok(reply) => history::page_of_stream(&topic, &reply, &read, ttl, now_ms(), now),
                        Err(e) => {
                            log::warn!("cluster: {topic:?}'s history in Redis is not wsgate's: {e}");
                            Err((Unrecoverable::Unavailable, None))
                        }
                    },
                };
                let answer = match (asked, answer) {
                    // Only the position was asked for.
                    (Asked::Subscribe(_), Ok(mut page)) if read.since.is_none() => {
                        page.entries.clear();
                        page.more = false;
                        Ok(page)
                    }
                    (_, answer) => answer,
                };
                self.history_answered(id, topic, asked, answer, now);
            }
            Some(Awaited::Repair { topic }) => self.repaired(topic, result, now),
            Some(Awaited::Presence { id, topic, stats, admin }) => {
                self.presence_read(id, &topic, stats, admin, result, now)
            }
            Some(Awaited::Removed { id, keep_alive, head_only }) => {
                self.history_removed(id, keep_alive, head_only, result, now)
            }
            _ => {}
        }
    }

    fn on_lost(&mut self, tag: u64, now: Instant) {
        match self.streams.awaited.remove(&tag) {
            Some(Awaited::Subscribed { id, topic, serial }) => {
                if self.conns.get(key_of(id)).is_some_and(|e| e.conn.id() == id) {
                    self.give_up_pending(key_of(id), &topic, serial, now);
                }
            }
            Some(Awaited::Joined { id, topic, serial, recovered }) => {
                if self.conns.get(key_of(id)).is_some_and(|e| e.conn.id() == id) {
                    self.joined(key_of(id), &topic, serial, recovered, now);
                }
            }
            Some(Awaited::Read { id, topic, asked, .. }) => {
                self.history_answered(id, topic, asked, Err((Unrecoverable::Unavailable, None)), now);
            }
            Some(Awaited::Repair { topic }) => self.repaired(topic, Err("the link failed".into()), now),
            Some(Awaited::Presence { id, topic, stats, admin }) => {
                self.presence_read(id, &topic, stats, admin, Err("the link failed".into()), now)
            }
            Some(Awaited::Removed { id, keep_alive, head_only }) => {
                self.history_removed(id, keep_alive, head_only, Err("the link failed".into()), now)
            }
            Some(Awaited::Resubscribed) | None => {}
        }
    }

    /// A numbered publication from the channel (see the module's comment). `true`: it
    /// skipped offsets, and a repair must read what is between.
    pub(super) fn on_numbered(&mut self, m: &Incoming<'_>, now: Instant) -> Option<Arc<str>> {
        let entry = Entry::numbered(m.topic, m.opcode, m.payload, m.offset, now);
        let excluded: Vec<u64> =
            m.receivers.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())).collect();
        let epoch = std::str::from_utf8(m.epoch).unwrap_or_default();
        if let Some(r) = self.streams.recent.get_mut(m.topic) {
            if *r.epoch != *epoch {
                *r = Recent { epoch: epoch.into(), ..Recent::default() };
            }
            r.held.push_back(Held { offset: m.offset, frame: entry.frame.clone(), excluded: excluded.clone() });
            r.bytes += entry.frame.len();
            while r.held.len() > HELD_MAX || (r.bytes > HELD_BYTES && r.held.len() > 1) {
                let Some(h) = r.held.pop_front() else { break };
                r.bytes -= h.frame.len();
                r.dropped_through = h.offset;
            }
        }
        let mut to_members = true;
        let mut gap = None;
        if let Some(live) = self.streams.live.get_mut(m.topic) {
            if *live.epoch != *epoch {
                log::warn!("cluster: topic {:?}'s history was lost (a new epoch): its offsets start over", m.topic);
                live.epoch = epoch.into();
                live.last = 0;
                live.repair = None;
            }
            if let Some((held, bytes, overflow)) = &mut live.repair {
                if held.len() < HELD_MAX && *bytes < HELD_BYTES {
                    *bytes += entry.frame.len();
                    held.push(Held { offset: m.offset, frame: entry.frame.clone(), excluded: excluded.clone() });
                } else {
                    *overflow = true;
                }
                to_members = false;
            } else if m.offset <= live.last {
                return None; // delivered already (by a repair)
            } else if live.last != 0 && m.offset > live.last + 1 {
                let held = Held { offset: m.offset, frame: entry.frame.clone(), excluded: excluded.clone() };
                live.repair = Some(holding(vec![held]));
                gap = Some(Arc::from(m.topic));
                to_members = false;
            } else {
                live.last = m.offset;
            }
        }
        if to_members {
            self.publish(m.topic, &entry.frame, None, &excluded, now);
        }
        self.deliver_joining(m.topic, m.offset, &entry.frame, now);
        gap
    }

    /// Subscriptions between their last page and joining take what comes after it.
    fn deliver_joining(&mut self, topic: &str, offset: u64, frame: &SharedFrame, now: Instant) {
        for key in self.topics.joining_before(topic, offset) {
            self.deliver(key, frame, now);
        }
    }

    /// Reads what `topic`'s members missed after the last offset they got.
    fn repair(&mut self, topic: Arc<str>, now: Instant) {
        // A topic whose rule a reload took away has nothing to repair from.
        let Some(Kept { ttl, .. }) = self.kept(&topic) else { return };
        let Some(live) = self.streams.live.get_mut(&topic) else { return };
        live.repair.get_or_insert_with(|| holding(Vec::new()));
        let after = live.last;
        let tag = self.streams.tag(Awaited::Repair { topic: Arc::clone(&topic) });
        if !self
            .cluster
            .as_mut()
            .is_some_and(|c| c.read_history(&topic, Some(after), REPAIR_LIMIT, false, ttl, REPAIR_BYTES, tag, now))
        {
            // The publish link is down: the repair reads when it is back (holding meanwhile).
            self.streams.awaited.remove(&tag);
            if !self.streams.stalled.contains(&topic) {
                self.streams.stalled.push(topic);
            }
        }
    }

    /// The end of a turn: stalled repairs read if they can now; what waiting subscriptions
    /// no longer need is let go.
    pub(super) fn streams_turn(&mut self, now: Instant) {
        if !self.streams.stalled.is_empty() && self.cluster.as_ref().is_some_and(|c| c.can_read()) {
            for topic in std::mem::take(&mut self.streams.stalled) {
                self.repair(topic, now);
            }
        }
        if !self.streams.recent.is_empty() {
            let topics = &self.topics;
            self.streams.recent.retain(|t, _| topics.has_pending(t));
        }
    }

    /// A repair's page: delivered to the members, then the next page or what was held.
    fn repaired(&mut self, topic: Arc<str>, result: Result<Vec<u8>, String>, now: Instant) {
        let Some(live) = self.streams.live.get_mut(&topic) else { return };
        let Some((held, _, overflow)) = live.repair.take() else { return };
        let page: Vec<(u64, SharedFrame)>;
        let mut again = overflow;
        match result.as_deref().map_err(String::clone).and_then(streams::parse_read) {
            Ok(reply) if *reply.epoch == *live.epoch => {
                page = reply
                    .entries
                    .iter()
                    .filter(|e| e.offset > live.last)
                    .map(|e| {
                        let opcode = if e.binary { Opcode::Binary } else { Opcode::Text };
                        (e.offset, Entry::numbered(&topic, opcode, e.payload, e.offset, now).frame)
                    })
                    .collect();
                if reply.oldest.is_some_and(|o| o > live.last + 1) {
                    log::warn!(
                        "cluster: {topic:?}: publications {}..{} are no longer in history: its members miss them",
                        live.last + 1,
                        reply.oldest.unwrap_or_default() - 1
                    );
                }
                again |= reply.entries.last().is_some_and(|e| e.offset < reply.last);
            }
            Ok(reply) => {
                log::warn!(
                    "cluster: {topic:?}'s history was lost (epoch {} now): its members may have missed publications",
                    reply.epoch
                );
                live.epoch = reply.epoch.into();
                live.last = 0;
                page = Vec::new();
                again = false;
            }
            Err(e) => {
                log::warn!("cluster: repairing {topic:?} failed ({e}): its members may have missed publications");
                let from = live.last;
                let held: Vec<Held> = held.into_iter().filter(|h| h.offset > from).collect();
                live.last = held.last().map_or(from, |h| h.offset);
                for h in held {
                    self.publish(&topic, &h.frame, None, &h.excluded, now);
                }
                return;
            }
        }
        let mut delivered = 0;
        for (offset, frame) in page {
            self.publish(&topic, &frame, None, &[], now);
            delivered += 1;
            if let Some(live) = self.streams.live.get_mut(&topic) {
                live.last = offset;
            }
        }
        self.metrics.history_recovered += delivered;
        let Some(live) = self.streams.live.get_mut(&topic) else { return };
        if again {
            live.repair = Some(holding(held.into_iter().filter(|h| h.offset > live.last).collect()));
            self.repair(topic, now);
            return;
        }
        // What arrived meanwhile, in order; a gap in it (a lost hold) reads again.
        let from = live.last;
        let mut rest = held.into_iter().filter(|h| h.offset > from).peekable();
        let mut deliver = Vec::new();
        while let Some(h) = rest.next_if(|h| live.last == 0 || h.offset == live.last + 1) {
            live.last = h.offset;
            deliver.push(h);
        }
        let rest: Vec<Held> = rest.collect();
        let gap = !rest.is_empty();
        if gap {
            live.repair = Some(holding(rest));
        }
        for h in deliver {
            self.publish(&topic, &h.frame, None, &h.excluded, now);
        }
        if gap {
            self.repair(topic, now);
        }
    }

    /// A topic with no member left on this worker is no longer served from its channel.
    pub(super) fn forget_live(&mut self, topic: &str) {
        self.streams.live.remove(topic);
    }

    /// Turns the links' events into what the worker does now, and what waits for the links.
    pub(super) fn on_cluster_event(&mut self, event: Event<'_>, deferred: &mut Vec<Deferred>, now: Instant) {
        match event {
            Event::Message(m) => match m.kind {
                crate::cluster::wire::Kind::Numbered => {
                    if let Some(topic) = self.on_numbered(&m, now) {
                        deferred.push(Deferred::Gap(topic));
                    }
                }
                crate::cluster::wire::Kind::Publish => {
                    let frame = crate::encode::shared_frame(m.opcode, m.payload);
                    self.publish(m.topic, &frame, None, &[], now);
                }
                crate::cluster::wire::Kind::Route => {
                    let frame = crate::encode::shared_frame(m.opcode, m.payload);
                    let mut keys = std::mem::take(&mut self.scratch_keys);
                    self.broker.receivers(m.receivers, &mut keys);
                    self.route_message(&keys, &frame, now);
                    self.scratch_keys = keys;
                }
            },
            Event::Answer(tag, result) => deferred.push(Deferred::Answer(tag, result.map(<[u8]>::to_vec))),
            Event::Barrier(tag) => deferred.push(Deferred::Barrier(tag)),
            Event::Resubscribed => deferred.push(Deferred::Resubscribed),
        }
    }
}
