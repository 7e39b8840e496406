//! Topics owned by the reactor: topic → subscribers and connection → topics.
//!
//! A subscription is 20 bytes: its record (topic, position in the topic's member list, next
//! subscription of the same connection: three `u32`) and its entry in the topic's member list
//! (connection key, subscription index). Subscribing is O(1) after a walk of the connection's
//! own subscriptions (to refuse duplicates; bounded by the route's `max_subscriptions`);
//! unsubscribing is the same walk and an O(1) swap-remove; a disconnect walks only the
//! connection's own subscriptions. Delivery walks the topic's member list, contiguous keys.
//! Nothing is keyed by connection in a hash: connection keys are slab keys, dense and reused.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::history::{Position, Rules};

const NONE: u32 = u32::MAX;

/// Index of a live topic (valid until its last subscriber leaves).
pub type TopicId = u32;

#[derive(Debug)]
struct Topic {
    name: Rc<str>,
    /// (connection key, subscription index).
    members: Vec<(u32, u32)>,
    /// Messages not delivered to a slow subscriber (drop policy).
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sub {
    topic: u32,
    /// Index in the topic's member list.
    pos: u32,
    /// The connection's next subscription, or the next free record.
    next: u32,
}

/// Topics whose names start with this are the server's own feeds (the log viewer's files, the
/// dashboard): apps and backends can neither subscribe nor publish to them by name.
pub const FEED_PREFIX: char = '\0';

/// A route's pub/sub policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Topics a client may subscribe to (and publish to).
    pub topics: Vec<glob::Pattern>,
    pub client_publish: bool,
    /// Clients may read topics' history (`{"op":"history"}`).
    pub client_history: bool,
    /// Subscriptions are listed in the topic's presence, and clients may read it and ask
    /// for its joins and leaves.
    pub presence: bool,
    pub max_subscriptions: usize,
    pub max_topic_length: usize,
    pub exclude_sender: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            topics: vec![glob::Pattern::new("*").expect("a valid glob")],
            client_publish: true,
            client_history: false,
            presence: false,
            max_subscriptions: 64,
            max_topic_length: 128,
            exclude_sender: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct Topics {
    by_name: HashMap<Rc<str>, TopicId, foldhash::quality::RandomState>,
    topics: Vec<Option<Topic>>,
    free_topics: Vec<TopicId>,
    subs: Vec<Sub>,
    free_sub: Option<u32>,
    /// Per connection key: its first subscription.
    heads: Vec<u32>,
    live_subs: usize,
    /// Live topics that are the server's own feeds (named from [`FEED_PREFIX`]): the loop
    /// asks about them every turn, and a hash lookup is not free.
    live_feeds: usize,
    /// Names in order, for prefix queries (the broker's groups); `None` unless [`Topics::ordered`].
    sorted: Option<BTreeMap<Rc<str>, TopicId>>,
    /// Topics created (`true`) and emptied (`false`) since the last [`Topics::take_changes`];
    /// `None` unless [`Topics::track_changes`] (a cluster subscribes to exactly these).
    changes: Option<Vec<(Rc<str>, bool)>>,
    /// The topics that keep history (their subscriptions wait for the topic's position).
    history: Arc<Rules>,
    /// Subscriptions to topics with history, by connection key and topic, until the topic's
    /// owner has answered with its position (and the publications the client missed).
    pending: HashMap<(usize, Arc<str>), Pending>,
    pending_serial: u64,
}

/// A subscription waiting for its topic's history: the connection is not a member yet, so
/// nothing published meanwhile reaches it twice; the owner's answer includes it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Read after this position next (`None`: only the position is wanted).
    pub since: Option<Position>,
    /// The client asked to recover (it gets `recovered` in its answer).
    pub recover: bool,
    pub max: usize,
    /// Waiting for its client's queue to drain before asking for the next page.
    pub waiting_for_room: bool,
    /// Set by [`Topics::begin_pending`]: an answer meant for an earlier subscription to the
    /// same topic (unsubscribed meanwhile) names another serial and is ignored.
    pub serial: u64,
    /// Across nodes: read to the end, waiting for the channel to catch up with the read;
    /// meanwhile it takes the channel's publications after `since` itself.
    pub joining: bool,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection already has the most subscriptions its route allows.
    TooMany,
    /// The name is one of the server's own feeds.
    Reserved,
}

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubscribeError::TooMany => "too many subscriptions for this connection",
            SubscribeError::Reserved => "a topic reserved for the server's own feeds",
        })
    }
}

impl std::error::Error for SubscribeError {}

impl Topics {
    pub fn new() -> Topics {
        Topics { free_sub: None, ..Default::default() }
    }

    /// Topics that also answer prefix queries ([`Topics::with_prefix`]).
    pub fn ordered() -> Topics {
        Topics { sorted: Some(BTreeMap::new()), ..Topics::new() }
    }

    /// The topics that keep history from now on.
    pub fn set_history(&mut self, rules: Arc<Rules>) {
        self.history = rules;
    }

    /// Whether `topic` keeps history (the server's own feeds never do).
    pub fn has_history(&self, topic: &str) -> bool {
        !self.history.is_empty() && !topic.starts_with(FEED_PREFIX) && self.history.find(topic).is_some()
    }

    /// Whether `conn` is subscribed to `name`.
    pub fn is_subscribed(&self, conn: usize, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|&topic| self.is_member(conn, topic))
    }

    /// Records a subscription waiting for `topic`'s history: its serial, or `None` if one
    /// already waits.
    pub fn begin_pending(&mut self, conn: usize, topic: Arc<str>, pending: Pending) -> Option<u64> {
        match self.pending.entry((conn, topic)) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(v) => {
                self.pending_serial += 1;
                v.insert(Pending { serial: self.pending_serial, ..pending });
                Some(self.pending_serial)
            }
        }
    }

    pub fn pending_mut(&mut self, conn: usize, topic: &Arc<str>) -> Option<&mut Pending> {
        self.pending.get_mut(&(conn, Arc::clone(topic)))
    }

    pub fn end_pending(&mut self, conn: usize, topic: &Arc<str>) -> Option<Pending> {
        self.pending.remove(&(conn, Arc::clone(topic)))
    }

    /// Whether a subscription to `topic` waits.
    pub fn has_pending(&self, topic: &str) -> bool {
        !self.pending.is_empty() && self.pending.keys().any(|(_, t)| &**t == topic)
    }

    /// The connections whose subscription to `topic` is joining (see [`Pending::joining`])
    /// and has not had publication `offset` yet; their `since` moves to it.
    pub fn joining_before(&mut self, topic: &str, offset: u64) -> Vec<usize> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut keys = Vec::new();
        for ((key, t), p) in &mut self.pending {
            if p.joining && &**t == topic {
                if let Some(since) = p.since.as_mut().filter(|s| s.offset < offset) {
                    since.offset = offset;
                    keys.push(*key);
                }
            }
        }
        keys
    }

    /// The pending subscriptions waiting for room in their client's queue.
    pub fn waiting_for_room(&self) -> Vec<(usize, Arc<str>)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.pending.iter().filter(|(_, p)| p.waiting_for_room).map(|((k, t), _)| (*k, Arc::clone(t))).collect()
    }

    /// From now on, record which topics come and go (see [`Topics::take_changes`]).
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The topics that got their first subscriber (`true`) or lost their last (`false`) since
    /// the last call, in order.
    pub fn take_changes(&mut self) -> Vec<(Rc<str>, bool)> {
        self.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The live topics whose names start with `prefix`, in name order (ordered topics only).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, TopicId)> + 'a {
        self.sorted
            .iter()
            .flat_map(move |m| m.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded)))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(name, &id)| (&**name, id))
    }

    /// A live topic's name.
    pub fn name(&self, topic: TopicId) -> &str {
        self.topics.get(topic as usize).and_then(Option::as_ref).map_or("", |t| &t.name)
    }

    /// Every live topic: name, subscribers, messages dropped for slow subscribers.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize, u64)> {
        self.topics.iter().flatten().map(|t| (&*t.name, t.members.len(), t.dropped))
    }

    /// The topics `conn` is subscribed to.
    pub fn of(&self, conn: usize) -> impl Iterator<Item = &str> {
        let mut s = self.heads.get(conn).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            if s == NONE {
                return None;
            }
            let sub = self.subs[s as usize];
            s = sub.next;
            Some(self.name(sub.topic))
        })
    }

    /// Subscribes connection `conn` to `name`. `Ok(false)`: it already was.
    pub fn subscribe(&mut self, conn: usize, name: &str, max: usize) -> Result<bool, SubscribeError> {
        let key = conn as u32;
        if self.heads.len() <= conn {
            self.heads.resize(conn + 1, NONE);
        }
        let topic = self.by_name.get(name).copied();
        let mut count = 0;
        let mut s = self.heads[conn];
        while s != NONE {
            let sub = self.subs[s as usize];
            if Some(sub.topic) == topic {
                return Ok(false);
            }
            count += 1;
            s = sub.next;
        }
        if count >= max {
            return Err(SubscribeError::TooMany);
        }
        let topic = topic.unwrap_or_else(|| self.create_topic(name));
        let t = self.topics[topic as usize].as_mut().expect("live topic");
        let pos = t.members.len() as u32;
        let record = Sub { topic, pos, next: self.heads[conn] };
        let index = match self.free_sub {
            Some(i) => {
                let next_free = self.subs[i as usize].next;
                self.free_sub = (next_free != NONE).then_some(next_free);
                self.subs[i as usize] = record;
                i
            }
            None => {
                self.subs.push(record);
                (self.subs.len() - 1) as u32
            }
        };
        t.members.push((key, index));
        self.heads[conn] = index;
        self.live_subs += 1;
        Ok(true)
    }

    /// Unsubscribes `conn` from `name` (or forgets its subscription waiting for history).
    /// Returns whether it was subscribed.
    pub fn unsubscribe(&mut self, conn: usize, name: &str) -> bool {
        if !self.pending.is_empty() && self.pending.remove(&(conn, Arc::from(name))).is_some() {
            return true;
        }
        let Some(&topic) = self.by_name.get(name) else { return false };
        let Some(&head) = self.heads.get(conn) else { return false };
        let (mut prev, mut s) = (NONE, head);
        while s != NONE {
            let sub = self.subs[s as usize];
            if sub.topic == topic {
                if prev == NONE {
                    self.heads[conn] = sub.next;
                } else {
                    self.subs[prev as usize].next = sub.next;
                }
                self.drop_sub(s);
                return true;
            }
            prev = s;
            s = sub.next;
        }
        false
    }

    /// Removes every subscription of `conn` (it is going away).
    pub fn remove_connection(&mut self, conn: usize) {
        if !self.pending.is_empty() {
            self.pending.retain(|(k, _), _| *k != conn);
        }
        let Some(head) = self.heads.get_mut(conn) else { return };
        let mut s = std::mem::replace(head, NONE);
        while s != NONE {
            let next = self.subs[s as usize].next;
            self.drop_sub(s);
            s = next;
        }
    }

    /// Whether `conn` is a member of topic `id` (a walk of its own subscriptions, as short as
    /// its route's `max_subscriptions`).
    pub fn is_member(&self, conn: usize, id: TopicId) -> bool {
        let mut s = self.heads.get(conn).copied().unwrap_or(NONE);
        while s != NONE {
            let sub = self.subs[s as usize];
            if sub.topic == id {
                return true;
            }
            s = sub.next;
        }
        false
    }

    /// The topic's id, if anyone is subscribed to it.
    pub fn find(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).copied()
    }

    /// Whether topic `id` is live and named `name` (an id found earlier may since have been
    /// freed and given to another topic).
    pub fn is_named(&self, id: TopicId, name: &str) -> bool {
        self.topics.get(id as usize).and_then(Option::as_ref).is_some_and(|t| &*t.name == name)
    }

    /// The connection keys subscribed to `topic`.
    pub fn members(&self, topic: TopicId) -> impl ExactSizeIterator<Item = usize> + '_ {
        let members = self.topics.get(topic as usize).and_then(Option::as_ref).map_or(&[][..], |t| &t.members[..]);
        members.iter().map(|&(conn, _)| conn as usize)
    }

    /// Counts messages a slow subscriber of `topic` did not get.
    pub fn note_dropped(&mut self, topic: TopicId, n: u64) {
        if let Some(Some(t)) = self.topics.get_mut(topic as usize) {
            t.dropped += n;
        }
    }

    /// Messages dropped on `name` for slow subscribers, since the topic was created.
    pub fn dropped(&self, name: &str) -> u64 {
        self.find(name).and_then(|t| self.topics[t as usize].as_ref()).map_or(0, |t| t.dropped)
    }

    /// How many topics `conn` is subscribed to, or waits for (their history).
    pub fn count(&self, conn: usize) -> usize {
        let mut n = if self.pending.is_empty() { 0 } else { self.pending.keys().filter(|(k, _)| *k == conn).count() };
        let mut s = self.heads.get(conn).copied().unwrap_or(NONE);
        while s != NONE {
            n += 1;
            s = self.subs[s as usize].next;
        }
        n
    }

    /// Live subscriptions and topics.
    pub fn len(&self) -> (usize, usize) {
        (self.live_subs, self.by_name.len())
    }

    pub fn is_empty(&self) -> bool {
        self.live_subs == 0
    }

    /// Whether the server's own feed `name` (from [`FEED_PREFIX`]) has subscribers: no
    /// lookup while no feed has any, as on a server nobody watches.
    pub fn has_feed(&self, name: &str) -> bool {
        debug_assert!(name.starts_with(FEED_PREFIX));
        self.live_feeds > 0 && self.by_name.contains_key(name)
    }

    fn create_topic(&mut self, name: &str) -> TopicId {
        let name: Rc<str> = name.into();
        let topic = Topic { name: name.clone(), members: Vec::new(), dropped: 0 };
        let id = match self.free_topics.pop() {
            Some(id) => {
                self.topics[id as usize] = Some(topic);
                id
            }
            None => {
                self.topics.push(Some(topic));
                (self.topics.len() - 1) as TopicId
            }
        };
        if let Some(sorted) = &mut self.sorted {
            sorted.insert(name.clone(), id);
        }
        if let Some(changes) = &mut self.changes {
            changes.push((name.clone(), true));
        }
        self.live_feeds += usize::from(name.starts_with(FEED_PREFIX));
        self.by_name.insert(name, id);
        id
    }

    /// Frees subscription record `s` (already unlinked from its connection's list).
    fn drop_sub(&mut self, s: u32) {
        let Sub { topic, pos, .. } = self.subs[s as usize];
        let t = self.topics[topic as usize].as_mut().expect("a subscription's topic is live");
        t.members.swap_remove(pos as usize);
        if let Some(&(_, moved)) = t.members.get(pos as usize) {
            self.subs[moved as usize].pos = pos;
        }
        if t.members.is_empty() {
            if t.dropped > 0 {
                log::info!("topic {:?}: {} message(s) dropped for slow subscribers in its life", &*t.name, t.dropped);
            }
            let name = t.name.clone();
            self.by_name.remove(&name);
            self.live_feeds -= usize::from(name.starts_with(FEED_PREFIX));
            if let Some(changes) = &mut self.changes {
                changes.push((name.clone(), false));
            }
            if let Some(sorted) = &mut self.sorted {
                sorted.remove(&name);
            }
            self.topics[topic as usize] = None;
            self.free_topics.push(topic);
        } else if t.members.capacity() > 64 && t.members.len() < t.members.capacity() / 4 {
            t.members.shrink_to(t.members.len() * 2);
        }
        self.subs[s as usize] = Sub { topic: NONE, pos: NONE, next: self.free_sub.unwrap_or(NONE) };
        self.free_sub = Some(s);
        self.live_subs -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(t: &Topics, name: &str) -> Vec<usize> {
        let mut v: Vec<usize> = t.find(name).map(|id| t.members(id).collect()).unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn subscribe_unsubscribe_disconnect() {
        let mut t = Topics::new();
        assert_eq!(t.subscribe(1, "a", 10), Ok(true));
        assert_eq!(t.subscribe(1, "a", 10), Ok(false));
        assert_eq!(t.subscribe(2, "a", 10), Ok(true));
        assert_eq!(t.subscribe(3, "a", 10), Ok(true));
        assert_eq!(t.subscribe(1, "b", 10), Ok(true));
        assert_eq!(members(&t, "a"), [1, 2, 3]);
        assert_eq!(t.count(1), 2);
        assert!(t.unsubscribe(1, "a"));
        assert!(!t.unsubscribe(1, "a"));
        assert_eq!(members(&t, "a"), [2, 3]);
        t.remove_connection(1);
        assert_eq!(t.find("b"), None, "a topic without subscribers is gone");
        assert_eq!(t.len(), (2, 1));
        t.note_dropped(t.find("a").unwrap(), 3);
        assert_eq!(t.dropped("a"), 3);
        assert_eq!(t.subscribe(2, "c", 2), Ok(true));
        assert_eq!(t.subscribe(2, "d", 2), Err(SubscribeError::TooMany));
        t.remove_connection(2);
        t.remove_connection(3);
        assert!(t.is_empty());
        assert_eq!(t.len(), (0, 0));
    }

    #[test]
    fn an_id_found_earlier_is_checked_against_its_name() {
        let mut t = Topics::new();
        assert_eq!(t.subscribe(1, "a", 10), Ok(true));
        let a = t.find("a").unwrap();
        assert!(t.is_named(a, "a") && !t.is_named(a, "b") && !t.is_named(a + 1, "a"));
        t.remove_connection(1);
        assert!(!t.is_named(a, "a"), "freed");
        assert_eq!(t.subscribe(2, "b", 10), Ok(true));
        assert_eq!(t.find("b"), Some(a), "the slot is reused");
        assert!(!t.is_named(a, "a") && t.is_named(a, "b"));
    }

    #[test]
    fn the_servers_feeds_are_counted_as_they_come_and_go() {
        let mut t = Topics::new();
        assert_eq!(t.subscribe(1, "stats", 10), Ok(true));
        assert!(!t.has_feed("\0stats"), "a client's topic of the same name is not the feed");
        assert_eq!(t.subscribe(1, "\0stats", 10), Ok(true));
        assert_eq!(t.subscribe(2, "\0stats", 10), Ok(true));
        assert_eq!(t.subscribe(2, "\0access", 10), Ok(true));
        assert!(t.has_feed("\0stats") && t.has_feed("\0access"));
        t.remove_connection(1);
        assert!(t.has_feed("\0stats"), "one watcher left");
        assert!(t.unsubscribe(2, "\0stats"));
        assert!(!t.has_feed("\0stats") && t.has_feed("\0access"));
        t.remove_connection(2);
        assert!(!t.has_feed("\0access"));
        assert_eq!(t.live_feeds, 0);
        assert_eq!(t.subscribe(3, "\0stats", 10), Ok(true), "a feed's slot is reused");
        assert!(t.has_feed("\0stats"));
    }

    /// Against a naive model, in a pseudo-random order of operations.
    #[test]
    fn matches_a_naive_model() {
        let mut t = Topics::new();
        let mut model: std::collections::BTreeSet<(usize, u8)> = Default::default();
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let conn = (x % 50) as usize;
            let topic = ((x >> 8) % 7) as u8;
            let name = format!("t{topic}");
            match (x >> 16) % 5 {
                0 | 1 => assert_eq!(t.subscribe(conn, &name, 100), Ok(model.insert((conn, topic)))),
                2 | 3 => assert_eq!(t.unsubscribe(conn, &name), model.remove(&(conn, topic))),
                _ => {
                    t.remove_connection(conn);
                    model.retain(|(c, _)| *c != conn);
                }
            }
        }
        for topic in 0..7u8 {
            let want: Vec<usize> = model.iter().filter(|(_, t)| *t == topic).map(|(c, _)| *c).collect();
            assert_eq!(members(&t, &format!("t{topic}")), want);
        }
        assert_eq!(t.len().0, model.len());
    }
}
