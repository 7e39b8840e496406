//! Topic history: every publication to a topic with history gets a position (`offset`, strictly
//! increasing per topic, and the topic's `epoch`, which changes whenever its history is lost),
//! and the last publications are kept, so a client that comes back can get exactly what it
//! missed.
//!
//! [`Histories`] is one worker's store, pure and owned by the reactor: with `workers = N` each
//! topic's history lives on one worker ([`owner`]), which numbers every publication to it, so
//! offsets are process-wide. Entries hold the delivery frame itself (shared with every
//! subscriber's queue), so keeping one costs its frame and 40 bytes.
//!
//! Bounds: `size` publications and `ttl` per topic ([`Rule`]), `max_bytes` of frames per worker
//! (the oldest publications of any topic go first), and a topic silent for longer than its
//! `ttl` is forgotten (its next publication starts a new epoch).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::encode::{frame_parts, shared_frame, SharedFrame};
use crate::ws::frame::Opcode;

/// Which topics keep history, and how much.
#[derive(Debug, Clone)]
pub struct Rule {
    pub topics: Vec<glob::Pattern>,
    /// Publications kept per topic.
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
}

/// The `[[history]]` rules (the first that matches a topic applies) and the memory bound.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rules: Vec<Rule>,
    /// Bytes of frames one worker keeps, all topics together.
    pub max_bytes: usize,
}

pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Most publications one `history` request returns.
pub const MAX_LIMIT: usize = 1000;

impl Default for Rules {
    fn default() -> Rules {
        Rules { rules: Vec::new(), max_bytes: DEFAULT_MAX_BYTES }
    }
}

impl Rules {
    /// The rule for `topic`, if it has history.
    pub fn find(&self, topic: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.topics.iter().any(|p| p.matches(topic)))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The worker that owns `topic`'s history among `workers`.
pub fn owner(topic: &str, workers: usize) -> usize {
    // FNV-1a: stable across threads and runs (the std hasher is seeded per process).
    let mut h = Fnv::default();
    h.write(topic.as_bytes());
    (h.finish() % workers.max(1) as u64) as usize
}

/// FNV-1a, for topic names: a few nanoseconds where SipHash takes tens. The names come from
/// clients, but a worker keeps a bounded number of topics ([`Histories`]' `max_topics`), so
/// colliding names cost a slower lookup, never unbounded memory.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// A position in a topic: the last offset, in this epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// Why a client cannot get what it missed; it gets the current position instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The topic's history was lost since (a restart, a removal, a silence past its ttl).
    EpochChanged,
    /// Publications after the offset are no longer kept (past `size`, `ttl` or the memory bound).
    Trimmed,
    /// The offset is after the topic's last publication.
    Ahead,
    /// The topic has no history.
    NoHistory,
    /// Across nodes: Redis could not be asked (its link is down, or failed while asked).
    Unavailable,
}

impl Unrecoverable {
    pub fn reason(self) -> &'static str {
        match self {
            Unrecoverable::EpochChanged => "epoch changed: the topic's history was lost",
            Unrecoverable::Trimmed => "offset no longer in history",
            Unrecoverable::Ahead => "offset ahead of the topic",
            Unrecoverable::NoHistory => "the topic keeps no history",
            Unrecoverable::Unavailable => "history unavailable: Redis is unreachable",
        }
    }
}

/// A kept publication.
#[derive(Debug, Clone)]
pub struct Entry {
    pub offset: u64,
    at: Instant,
    /// The delivery frame, with its offset.
    pub frame: SharedFrame,
    /// Where the published JSON value starts in the frame's payload (pubsub's form), or 0 for
    /// a message published as it is (chat, backends, binary).
    data_at: u32,
}

impl Entry {
    /// A publication kept elsewhere (a Redis stream), as a delivery frame with its offset.
    pub fn numbered(topic: &str, opcode: Opcode, payload: &[u8], offset: u64, now: Instant) -> Entry {
        let (frame, data_at) = with_offset(topic, &shared_frame(opcode, payload), offset);
        Entry { offset, at: now, frame, data_at }
    }
    /// Appends `{"offset":N,"data":…}` (or `"b64data"` for binary) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (opcode, payload) = frame_parts(&self.frame).unwrap_or((Opcode::Binary, &[]));
        out.extend_from_slice(b"{\"offset\":");
        out.extend_from_slice(self.offset.to_string().as_bytes());
        if self.data_at > 0 {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(&payload[self.data_at as usize..payload.len() - 1]);
        } else if opcode == Opcode::Text {
            out.extend_from_slice(b",\"data\":");
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(payload));
        } else {
            use base64::Engine;
            out.extend_from_slice(b",\"b64data\":\"");
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(payload).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
}

/// What a read of a topic's history found.
#[derive(Debug, Clone)]
pub struct Page {
    pub position: Position,
    pub entries: Vec<Entry>,
    /// More publications follow the page's last (the page hit its bound).
    pub more: bool,
}

/// A read: after `since` (or the latest), at most `limit` publications and about `max_bytes`
/// of frames (always at least one), oldest first unless `reverse`.
#[derive(Debug, Clone)]
pub struct Read {
    pub since: Option<Position>,
    pub limit: usize,
    pub max_bytes: usize,
    pub reverse: bool,
}

#[derive(Debug)]
struct Stream {
    name: Arc<str>,
    epoch: Arc<str>,
    /// The last offset given (0: none yet).
    last: u64,
    entries: VecDeque<Entry>,
    size: usize,
    ttl: Duration,
    /// The last publication (or the stream's creation).
    touched: Instant,
}

impl Stream {
    fn position(&self) -> Position {
        Position { offset: self.last, epoch: Arc::clone(&self.epoch) }
    }

    /// Drops what is past the ttl: the bytes and entries freed.
    fn expire(&mut self, now: Instant) -> (usize, usize) {
        let (mut freed, mut gone) = (0, 0);
        while self.entries.front().is_some_and(|e| now.saturating_duration_since(e.at) > self.ttl) {
            freed += self.entries.pop_front().map_or(0, |e| e.frame.len());
            gone += 1;
        }
        (freed, gone)
    }
}

/// One worker's histories: the topics it owns.
#[derive(Debug)]
pub struct Histories {
    rules: Arc<Rules>,
    streams: FnvMap<Arc<str>, Stream>,
    /// Every kept entry, oldest first (topic, its epoch, offset): what the memory bound
    /// evicts. Also records of entries gone since, at most as many as are kept.
    order: VecDeque<(Arc<str>, Arc<str>, u64)>,
    bytes: usize,
    kept: usize,
    /// Epochs made so far, and this worker's random part of them.
    epochs: u64,
    seed: u64,
    /// When expired entries and silent topics were last swept.
    swept: Option<Instant>,
}

impl Histories {
    pub fn new(rules: Arc<Rules>) -> Histories {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        #[allow(clippy::disallowed_methods, reason = "epochs differ from one run to the next")]
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        Histories {
            rules,
            streams: FnvMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            kept: 0,
            epochs: 0,
            seed: h.finish(),
            swept: None,
        }
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// New rules (a reload): topics that no longer have history are forgotten; the others
    /// keep theirs, with the new bounds from their next publication.
    pub fn set_rules(&mut self, rules: Arc<Rules>) {
        self.streams.retain(|topic, s| match rules.find(topic) {
            Some(r) => {
                s.size = r.size;
                s.ttl = r.ttl;
                true
            }
            None => false,
        });
        self.rules = rules;
        self.rebuild_order();
    }

    /// Topics, kept publications and their bytes.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.streams.len(), self.kept, self.bytes)
    }

    /// The most topics one worker keeps positions for: a kilobyte of `max_bytes` each.
    fn max_topics(&self) -> usize {
        (self.rules.max_bytes / 1024).max(64)
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.epochs += 1;
        format!("{:08x}{:x}", self.seed as u32, self.epochs).into()
    }

    fn stream(&mut self, topic: &str, now: Instant) -> Option<&mut Stream> {
        // One lookup for a known topic (the borrow checker wants the early return's shape).
        if self.streams.contains_key(topic) {
            return self.streams.get_mut(topic);
        }
        {
            let rule = self.rules.find(topic)?;
            if self.streams.len() >= self.max_topics() {
                // Many topics with nothing kept (subscribed to, never published to, or all
                // trimmed): they are forgotten first, so names cannot pin memory.
                self.streams.retain(|_, s| !s.entries.is_empty());
                if self.streams.len() >= self.max_topics() {
                    log::warn!("history: {} topics on this worker, the most history_memory allows", self.streams.len());
                    return None;
                }
            }
            let (size, ttl) = (rule.size, rule.ttl);
            let epoch = self.new_epoch();
            let name: Arc<str> = topic.into();
            let stream =
                Stream { name: Arc::clone(&name), epoch, last: 0, entries: VecDeque::new(), size, ttl, touched: now };
            self.streams.insert(name, stream);
        }
        self.streams.get_mut(topic)
    }

    /// Numbers a publication to `topic` and keeps it: the offset and the frame to deliver
    /// (pubsub's form gets `"offset":N` after its topic; other messages go as they are).
    /// `None`: the topic has no history.
    pub fn append(&mut self, topic: &str, frame: &SharedFrame, now: Instant) -> Option<(u64, SharedFrame)> {
        self.sweep(now);
        self.stream(topic, now)?;
        let Histories { streams, order, .. } = self;
        let stream = streams.get_mut(topic)?;
        stream.last += 1;
        stream.touched = now;
        let offset = stream.last;
        let (frame, data_at) = with_offset(topic, frame, offset);
        let (mut freed, mut gone) = stream.expire(now);
        stream.entries.push_back(Entry { offset, at: now, frame: frame.clone(), data_at });
        while stream.entries.len() > stream.size {
            let Some(old) = stream.entries.pop_front() else { break };
            freed += old.frame.len();
            gone += 1;
            // Its record is usually the oldest of all (one busy topic): forgotten now, without
            // a lookup.
            if let Some((name, _, offset)) = order.front() {
                if *offset == old.offset && Arc::ptr_eq(name, &stream.name) {
                    order.pop_front();
                }
            }
        }
        let record = (Arc::clone(&stream.name), Arc::clone(&stream.epoch), offset);
        self.bytes = self.bytes + frame.len() - freed;
        self.kept = self.kept + 1 - gone;
        self.order.push_back(record);
        // Most appends: within the bound, and few records of entries gone.
        if self.bytes > self.rules.max_bytes || self.order.len() > 3 * self.kept + 64 {
            self.evict();
        }
        Some((offset, frame))
    }

    /// Whether `order`'s record names an entry still kept (entries leave a stream only from
    /// its front).
    fn is_kept(&self, (topic, epoch, offset): &(Arc<str>, Arc<str>, u64)) -> bool {
        self.streams
            .get(topic)
            .is_some_and(|s| Arc::ptr_eq(&s.epoch, epoch) && s.entries.front().is_some_and(|e| e.offset <= *offset))
    }

    /// Drops the oldest entries of any topic while over the memory bound; forgets the records
    /// of entries already gone (trimmed, expired), so `order` stays within twice what is kept.
    fn evict(&mut self) {
        while let Some(record) = self.order.front() {
            if self.is_kept(record) {
                if self.bytes <= self.rules.max_bytes {
                    break;
                }
                let stream = self.streams.get_mut(&record.0).expect("kept");
                let e = stream.entries.pop_front().expect("kept");
                self.bytes -= e.frame.len();
                self.kept -= 1;
            }
            self.order.pop_front();
        }
        if self.order.len() > 3 * self.kept + 64 {
            let order = std::mem::take(&mut self.order);
            self.order = order.into_iter().filter(|r| self.is_kept(r)).collect();
        }
    }

    fn rebuild_order(&mut self) {
        type Kept = (Instant, Arc<str>, Arc<str>, u64, usize);
        let mut all: Vec<Kept> = Vec::new();
        for (topic, s) in &self.streams {
            all.extend(
                s.entries.iter().map(|e| (e.at, Arc::clone(topic), Arc::clone(&s.epoch), e.offset, e.frame.len())),
            );
        }
        all.sort_by_key(|(at, _, _, offset, _)| (*at, *offset));
        self.bytes = all.iter().map(|(.., len)| len).sum();
        self.kept = all.len();
        self.order = all.into_iter().map(|(_, t, e, o, _)| (t, e, o)).collect();
        self.evict();
    }

    /// At most once a second: drops expired entries, and forgets topics silent past their ttl.
    pub fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.swept = Some(now);
        let (mut freed, mut gone) = (0, 0);
        self.streams.retain(|_, s| {
            let (b, n) = s.expire(now);
            freed += b;
            gone += n;
            !(s.entries.is_empty() && now.saturating_duration_since(s.touched) > s.ttl)
        });
        self.bytes -= freed;
        self.kept -= gone;
        self.evict();
    }

    /// The topic's current position (a topic with history but no publication yet gets its
    /// epoch now, so a client can recover from offset 0). `None`: no history.
    pub fn position(&mut self, topic: &str, now: Instant) -> Option<Position> {
        self.sweep(now);
        self.stream(topic, now).map(|s| s.position())
    }

    /// Forgets `topic`'s history (its next publication starts a new epoch).
    pub fn remove(&mut self, topic: &str) -> bool {
        match self.streams.remove(topic) {
            Some(s) => {
                self.bytes -= s.entries.iter().map(|e| e.frame.len()).sum::<usize>();
                self.kept -= s.entries.len();
                self.evict();
                true
            }
            None => false,
        }
    }

    /// Reads `topic`'s history (see [`Read`]).
    pub fn read(&mut self, topic: &str, read: &Read, now: Instant) -> Result<Page, (Unrecoverable, Option<Position>)> {
        self.sweep(now);
        let Some(stream) = self.stream(topic, now) else { return Err((Unrecoverable::NoHistory, None)) };
        let (freed, gone) = stream.expire(now);
        let position = stream.position();
        let first = match &read.since {
            None => stream.entries.front().map_or(stream.last + 1, |e| e.offset),
            Some(since) => {
                if since.epoch != stream.epoch {
                    return Err((Unrecoverable::EpochChanged, Some(position)));
                }
                if since.offset > stream.last {
                    return Err((Unrecoverable::Ahead, Some(position)));
                }
                let oldest = stream.entries.front().map_or(stream.last + 1, |e| e.offset);
                if since.offset + 1 < oldest {
                    return Err((Unrecoverable::Trimmed, Some(position)));
                }
                since.offset + 1
            }
        };
        let oldest = stream.entries.front().map_or(stream.last + 1, |e| e.offset);
        let skip = (first - oldest) as usize;
        let limit = read.limit.max(1);
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut take = |e: &Entry| {
            if entries.len() >= limit || (!entries.is_empty() && bytes + e.frame.len() > read.max_bytes) {
                return false;
            }
            bytes += e.frame.len();
            entries.push(e.clone());
            true
        };
        let mut more = false;
        if read.reverse && read.since.is_none() {
            for e in stream.entries.iter().rev() {
                if !take(e) {
                    more = true;
                    break;
                }
            }
        } else {
            for e in stream.entries.iter().skip(skip) {
                if !take(e) {
                    more = true;
                    break;
                }
            }
            if read.reverse {
                entries.reverse();
            }
        }
        self.bytes -= freed;
        self.kept -= gone;
        Ok(Page { position, entries, more })
    }
}

/// A read answered by a Redis stream ([`crate::cluster::streams`]) as a page, with the same
/// checks and bounds as [`Histories::read`]: `ttl` against Redis's clock (`now_ms`, the
/// reply's entries carry when Redis appended them; nodes' clocks are assumed close).
pub fn page_of_stream(
    topic: &str,
    reply: &crate::cluster::streams::ReadReply<'_>,
    read: &Read,
    ttl: Duration,
    now_ms: u64,
    now: Instant,
) -> Result<Page, (Unrecoverable, Option<Position>)> {
    let position = Position { offset: reply.last, epoch: reply.epoch.into() };
    let fresh = |at_ms: u64| at_ms.saturating_add(ttl.as_millis() as u64) >= now_ms;
    if let Some(since) = &read.since {
        if *since.epoch != *reply.epoch {
            return Err((Unrecoverable::EpochChanged, Some(position)));
        }
        if since.offset > reply.last {
            return Err((Unrecoverable::Ahead, Some(position)));
        }
        let oldest = reply.oldest.unwrap_or(reply.last + 1);
        let next_kept = reply.entries.first().filter(|e| fresh(e.at_ms)).map_or(reply.last + 1, |e| e.offset);
        if since.offset + 1 < oldest || (since.offset < reply.last && next_kept != since.offset + 1) {
            return Err((Unrecoverable::Trimmed, Some(position)));
        }
    }
    let limit = read.limit.max(1);
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    for e in reply.entries.iter().filter(|e| fresh(e.at_ms)) {
        if entries.len() >= limit || (!entries.is_empty() && bytes + e.payload.len() > read.max_bytes) {
            more = true;
            break;
        }
        bytes += e.payload.len();
        let opcode = if e.binary { Opcode::Binary } else { Opcode::Text };
        entries.push(Entry::numbered(topic, opcode, e.payload, e.offset, now));
    }
    match (&read.since, read.reverse) {
        (Some(_), reverse) => {
            more |= entries.last().is_some_and(|e| e.offset < reply.last);
            if reverse {
                entries.reverse();
            }
        }
        (None, false) => more |= entries.last().is_some_and(|e| e.offset < reply.last),
        (None, true) => more |= entries.last().is_some_and(|e| reply.oldest.is_some_and(|o| e.offset > o)),
    }
    Ok(Page { position, entries, more })
}

/// `frame` numbered `offset`: pubsub's `{"topic":T,"data":D}` becomes
/// `{"topic":T,"offset":N,"data":D}`, anything else is kept as it is. Also where the data
/// starts in the new payload (0 when it is not pubsub's form).
pub fn with_offset(topic: &str, frame: &SharedFrame, offset: u64) -> (SharedFrame, u32) {
    let Some((Opcode::Text, payload)) = frame_parts(frame) else { return (frame.clone(), 0) };
    if !payload.starts_with(b"{\"topic\":") {
        return (frame.clone(), 0);
    }
    let mut head = Vec::with_capacity(24 + topic.len());
    head.extend_from_slice(b"{\"topic\":");
    let _ = serde_json::to_writer(&mut head, topic);
    let topic_end = head.len();
    head.extend_from_slice(b",\"data\":");
    if !payload.starts_with(&head) || payload.last() != Some(&b'}') {
        return (frame.clone(), 0);
    }
    let mut body = Vec::with_capacity(payload.len() + 32);
    body.extend_from_slice(&head[..topic_end]);
    body.extend_from_slice(b",\"offset\":");
    body.extend_from_slice(offset.to_string().as_bytes());
    body.extend_from_slice(b",\"data\":");
    let data_at = body.len() as u32;
    body.extend_from_slice(&payload[head.len()..]);
    (shared_frame(Opcode::Text, &body), data_at)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests start their own clocks")]
mod tests {
    use super::*;

    fn rules(size: usize, ttl: u64, max_bytes: usize) -> Arc<Rules> {
        Arc::new(Rules {
            rules: vec![Rule { topics: vec![glob::Pattern::new("h.*").unwrap()], size, ttl: Duration::from_secs(ttl) }],
            max_bytes,
        })
    }

    fn pubsub(topic: &str, data: &str) -> SharedFrame {
        shared_frame(
            Opcode::Text,
            format!("{{\"topic\":{},\"data\":{data}}}", serde_json::to_string(topic).unwrap()).as_bytes(),
        )
    }

    fn payload(frame: &SharedFrame) -> String {
        String::from_utf8(frame_parts(frame).unwrap().1.to_vec()).unwrap()
    }

    fn since(offset: u64, epoch: &Arc<str>) -> Read {
        Read {
            since: Some(Position { offset, epoch: Arc::clone(epoch) }),
            limit: 1000,
            max_bytes: 1 << 20,
            reverse: false,
        }
    }

    #[test]
    fn numbers_pubsub_frames_and_keeps_others_as_they_are() {
        let mut h = Histories::new(rules(10, 60, 1 << 20));
        let now = Instant::now();
        assert!(h.append("other", &pubsub("other", "1"), now).is_none(), "no rule, no history");
        let (o, f) = h.append("h.a", &pubsub("h.a", "{\"x\":[1,2]}"), now).unwrap();
        assert_eq!(o, 1);
        assert_eq!(payload(&f), r#"{"topic":"h.a","offset":1,"data":{"x":[1,2]}}"#);
        let raw = shared_frame(Opcode::Text, b"hello");
        let (o, f) = h.append("h.a", &raw, now).unwrap();
        assert_eq!((o, &*f), (2, &*raw));
        let bin = shared_frame(Opcode::Binary, &[0, 1, 2]);
        h.append("h.a", &bin, now).unwrap();
        let page = h.read("h.a", &Read { since: None, limit: 10, max_bytes: 1 << 20, reverse: false }, now).unwrap();
        let mut json = Vec::new();
        for e in &page.entries {
            e.write_json(&mut json);
        }
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"offset":1,"data":{"x":[1,2]}}{"offset":2,"data":"hello"}{"offset":3,"b64data":"AAEC"}"#
        );
        // A topic whose name needs escaping.
        let (_, f) = h.append("h.\"q\"", &pubsub("h.\"q\"", "1"), now).unwrap();
        assert_eq!(payload(&f), r#"{"topic":"h.\"q\"","offset":1,"data":1}"#);
    }

    #[test]
    fn recovery_pages_and_reasons() {
        let mut h = Histories::new(rules(5, 60, 1 << 20));
        let now = Instant::now();
        let epoch = h.position("h.a", now).unwrap().epoch;
        assert_eq!(h.position("h.a", now).unwrap().offset, 0);
        for i in 1..=8 {
            h.append("h.a", &pubsub("h.a", &i.to_string()), now);
        }
        // Kept: 4..=8.
        let page = h.read("h.a", &since(3, &epoch), now).unwrap();
        assert_eq!(page.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
        assert_eq!(page.position.offset, 8);
        assert!(!page.more);
        assert_eq!(h.read("h.a", &since(2, &epoch), now).unwrap_err().0, Unrecoverable::Trimmed);
        assert_eq!(h.read("h.a", &since(9, &epoch), now).unwrap_err().0, Unrecoverable::Ahead);
        assert!(h.read("h.a", &since(8, &epoch), now).unwrap().entries.is_empty());
        let other: Arc<str> = "x".into();
        let (why, pos) = h.read("h.a", &since(5, &other), now).unwrap_err();
        assert_eq!((why, pos.unwrap().offset), (Unrecoverable::EpochChanged, 8));
        // Pages by count and by bytes (at least one entry).
        let page = h.read("h.a", &Read { limit: 2, ..since(3, &epoch) }, now).unwrap();
        assert_eq!(page.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
        assert!(page.more);
        let page = h.read("h.a", &Read { max_bytes: 1, ..since(3, &epoch) }, now).unwrap();
        assert_eq!(page.entries.len(), 1);
        // The latest, newest first.
        let page = h.read("h.a", &Read { since: None, limit: 2, max_bytes: 1 << 20, reverse: true }, now).unwrap();
        assert_eq!(page.entries.iter().map(|e| e.offset).collect::<Vec<_>>(), [8, 7]);
        // Removed: a new epoch, offsets start over.
        assert!(h.remove("h.a"));
        let fresh = h.position("h.a", now).unwrap();
        assert_ne!(fresh.epoch, epoch);
        assert_eq!(fresh.offset, 0);
        assert_eq!(h.read("h.a", &since(8, &epoch), now).unwrap_err().0, Unrecoverable::EpochChanged);
        assert_eq!(h.read("nope", &since(0, &epoch), now).unwrap_err().0, Unrecoverable::NoHistory);
    }

    #[test]
    fn ttl_expires_entries_then_the_topic() {
        let mut h = Histories::new(rules(100, 10, 1 << 20));
        let t0 = Instant::now();
        let epoch = h.position("h.a", t0).unwrap().epoch;
        h.append("h.a", &pubsub("h.a", "1"), t0);
        h.append("h.a", &pubsub("h.a", "2"), t0 + Duration::from_secs(6));
        let page = h.read("h.a", &since(0, &epoch), t0 + Duration::from_secs(12)).unwrap_err();
        assert_eq!(page.0, Unrecoverable::Trimmed, "offset 1 expired");
        let page = h.read("h.a", &since(1, &epoch), t0 + Duration::from_secs(12)).unwrap();
        assert_eq!(page.entries.len(), 1);
        // Silent past the ttl: forgotten, a new epoch.
        let later = t0 + Duration::from_secs(40);
        assert_ne!(h.position("h.a", later).unwrap().epoch, epoch);
        assert_eq!(h.stats(), (1, 0, 0));
    }

    #[test]
    fn the_memory_bound_evicts_the_oldest_of_any_topic() {
        let frame_len = pubsub("h.a", "1").len() + 11;
        let mut h = Histories::new(rules(1000, 600, 10 * frame_len));
        let now = Instant::now();
        for i in 0..100 {
            h.append(if i % 2 == 0 { "h.a" } else { "h.b" }, &pubsub(if i % 2 == 0 { "h.a" } else { "h.b" }, "1"), now);
            let (_, n, bytes) = h.stats();
            assert!(bytes <= 10 * frame_len, "{bytes}");
            assert!(n <= 10);
        }
        let page = h.read("h.b", &Read { since: None, limit: 1000, max_bytes: 1 << 20, reverse: false }, now).unwrap();
        assert_eq!(page.entries.last().unwrap().offset, 50);
        assert!(page.entries.len() >= 4);
        assert!(h.order.len() <= 3 * h.kept + 64);
    }

    #[test]
    fn topics_with_nothing_kept_are_forgotten_past_the_topic_bound() {
        let mut h = Histories::new(rules(10, 600, 64 << 10));
        let now = Instant::now();
        h.append("h.kept", &pubsub("h.kept", "1"), now).unwrap();
        let kept = h.position("h.kept", now).unwrap();
        for i in 0..1000 {
            assert!(h.position(&format!("h.{i}"), now).is_some(), "room made by forgetting empty topics");
        }
        assert!(h.stats().0 <= 64);
        assert_eq!(h.position("h.kept", now).unwrap(), kept, "a topic with publications kept stays");
    }

    #[test]
    fn owner_is_stable() {
        assert_eq!(owner("news", 1), 0);
        let o = owner("news", 4);
        assert!(o < 4);
        assert_eq!(owner("news", 4), o);
    }
}
