//! Pub/sub across wsgate nodes through Redis (`[cluster]`): topics, chat rooms and broker
//! messages reach every node connected to the same Redis.
//!
//! Each worker has its own two links (one SUBSCRIBEd, one for PUBLISH), driven by its reactor:
//! no extra runtime, no lock. A worker subscribes to a topic's channel when the topic gets
//! its first subscriber on that worker and unsubscribes when it loses its last, batched once
//! per loop turn. A message published on this node is delivered to its own subscribers first
//! (locally and through the other workers' inboxes), then published once to Redis with the
//! node's id; every node's workers that subscribe get it, and a node ignores its own.
//!
//! Redis pub/sub is at-most-once: what is published while a link is down is lost. Local
//! delivery never waits for Redis. A link that fails or goes silent (see [`link`]) is made
//! again with backoff and jitter, and resubscribes everything. What was lost is counted:
//! publishes that could not be sent, and the time the subscription link was down.

pub mod config;
pub mod link;
pub mod presence;
pub mod streams;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};

use crate::encode::SharedFrame;
use crate::metrics::ClusterCounters;
use crate::ws::frame::Opcode;
use config::ClusterConfig;
use link::{Link, Reply, Settings};

/// The poll tokens of a worker's two links.
pub const SUB_TOKEN: Token = Token(usize::MAX - 1100);
pub const PUB_TOKEN: Token = Token(usize::MAX - 1101);

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const CHANNELS_PER_COMMAND: usize = 512;

/// A message from another node, for this worker's subscribers or token holders.
pub struct Incoming<'a> {
    pub kind: wire::Kind,
    /// The topic (a publish).
    pub topic: &'a str,
    pub opcode: Opcode,
    /// A broker message's receivers; a numbered publication's excluded ids if it was
    /// published on this node (8 bytes each), else empty.
    pub receivers: &'a [u8],
    /// A numbered publication's offset and epoch.
    pub offset: u64,
    pub epoch: &'a [u8],
    pub payload: &'a [u8],
}

/// What the links bring to the worker.
pub enum Event<'a> {
    Message(Incoming<'a>),
    /// The answer to a history read sent with this tag ([`Cluster::read_history`]).
    Answer(u64, Result<&'a [u8], String>),
    /// The subscription link passed the barrier sent with this tag ([`Cluster::barrier`]):
    /// every message published before it was sent has been handed on.
    Barrier(u64),
    /// The subscription link is (again) subscribed to every channel: what was published
    /// while it was down was not received.
    Resubscribed,
}

/// How a topic with history keeps it in Redis.
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    pub size: usize,
    pub ttl: std::time::Duration,
}

pub struct Cluster {
    /// The worker's poll registry (a clone: the links register their own sockets).
    registry: Registry,
    settings: Settings,
    prefix: String,
    node: u64,
    sub: Link,
    publ: Link,
    max_pending: usize,
    /// Subscribe to the broker's channel (there are broker routes).
    broker: bool,
    /// Topics with subscribers on this worker: the channels the subscription link holds.
    wanted: HashSet<Box<str>>,
    to_subscribe: Vec<Box<str>>,
    to_unsubscribe: Vec<Box<str>>,
    counters: ClusterCounters,
    /// Since when the subscription link has not been subscribed (from the start, too).
    down_since: Option<Instant>,
    publish_sha: String,
    read_sha: String,
    /// New epochs: this prefix (the node's id and when the links were made), then a count.
    /// Every publication and read proposes one, used only if the topic has none, so it must
    /// differ from every earlier proposal, but costs only the count's formatting.
    epoch_prefix: String,
    epochs: u64,
    /// Numbered publications waiting for the publish link (RESP commands), bounded by
    /// `max_pending`: a Redis that restarts loses none of a short outage's.
    held: Vec<u8>,
    held_count: u64,
    /// The most a reply from Redis may be.
    max_reply: usize,
    presence_write_sha: String,
    presence_read_sha: String,
    presence_ttl: std::time::Duration,
    /// Topics this worker has members of (it owns them): renewed every third of the ttl.
    presence_topics: HashSet<Arc<str>>,
    presence_renew_at: Instant,
    /// The publish link came (back) up: every member must be written again.
    presence_lost: bool,
    /// Joins or leaves were not sent because the publish link's queue was past
    /// `max_pending`: everything is written again once it has drained.
    presence_skipped: bool,
}

impl Cluster {
    /// A worker's cluster links (connecting starts at its first turn). `max_message`: the
    /// largest message any route accepts (a bigger reply from Redis fails the link).
    pub fn new(
        registry: Registry,
        config: &ClusterConfig,
        node: u64,
        worker: usize,
        broker: bool,
        max_message: usize,
        now: Instant,
    ) -> Result<Cluster, String> {
        let tls = if config.redis.tls { Some(client_tls(config)?) } else { None };
        let settings = Settings {
            addr: config.redis.clone(),
            tls,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
        };
        let max_reply = max_message.saturating_add(config.prefix.len() + (64 << 10));
        let name = |role: &str| format!("wsgate-{node:016x}-w{worker}-{role}");
        let mut publ = Link::new("publish", PUB_TOKEN, &name("pub"), &config.redis, max_reply, now);
        for script in [streams::PUBLISH_SCRIPT, streams::READ_SCRIPT, presence::WRITE_SCRIPT, presence::READ_SCRIPT] {
            publ.add_to_hello(&[b"SCRIPT", b"LOAD", script.as_bytes()]);
        }
        Ok(Cluster {
            registry,
            sub: Link::new("subscription", SUB_TOKEN, &name("sub"), &config.redis, max_reply, now),
            publ,
            settings,
            prefix: config.prefix.clone(),
            node,
            max_pending: config.max_pending,
            broker,
            wanted: HashSet::new(),
            to_subscribe: Vec::new(),
            to_unsubscribe: Vec::new(),
            counters: ClusterCounters::default(),
            down_since: Some(now),
            publish_sha: streams::sha(streams::PUBLISH_SCRIPT),
            read_sha: streams::sha(streams::READ_SCRIPT),
            epoch_prefix: {
                #[allow(clippy::disallowed_methods, reason = "epochs differ from those of earlier runs")]
                let ms =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                format!("{:x}.{ms:x}.", node as u32)
            },
            epochs: 0,
            held: Vec::new(),
            held_count: 0,
            max_reply,
            presence_write_sha: streams::sha(presence::WRITE_SCRIPT),
            presence_read_sha: streams::sha(presence::READ_SCRIPT),
            presence_ttl: config.presence_ttl,
            presence_topics: HashSet::new(),
            presence_renew_at: now,
            presence_lost: false,
            presence_skipped: false,
        })
    }

    fn new_epoch(&mut self) -> String {
        use std::fmt::Write;
        self.epochs += 1;
        let mut epoch = String::with_capacity(self.epoch_prefix.len() + 8);
        epoch.push_str(&self.epoch_prefix);
        let _ = write!(epoch, "{:x}", self.epochs);
        epoch
    }

    /// Publishes to a topic with history: Redis numbers, keeps and publishes it (see
    /// [`streams`]); this node's subscribers get it from the channel like everyone's. While
    /// the link is down it waits (up to `max_pending` bytes, then it is dropped and counted).
    pub fn publish_numbered(
        &mut self,
        topic: &str,
        frame: &SharedFrame,
        exclude_ids: &[u64],
        kept: Kept,
        now: Instant,
    ) {
        let Some((opcode, payload)) = crate::encode::frame_parts(frame) else { return };
        let head = wire::numbered_head(self.node, opcode, exclude_ids);
        let channel = wire::topic_channel(&self.prefix, topic);
        let (size, ttl) = (kept.size.to_string(), kept.ttl.as_millis().max(1).to_string());
        let epoch = self.new_epoch();
        let (stream, meta) = (streams::stream_key(&self.prefix, topic), streams::meta_key(&self.prefix, topic));
        let opcode: &[u8] = if opcode == Opcode::Binary { b"b" } else { b"t" };
        let args: [&[u8]; 12] = [
            b"EVALSHA",
            self.publish_sha.as_bytes(),
            b"2",
            &stream,
            &meta,
            &channel,
            &head,
            payload,
            size.as_bytes(),
            ttl.as_bytes(),
            epoch.as_bytes(),
            opcode,
        ];
        if self.publ.is_ready() && self.held.is_empty() && self.publ.pending() <= self.max_pending {
            self.publ.send(&args, 1, now);
            self.counters.published += 1;
        } else if self.held.len() + payload.len() <= self.max_pending {
            wire::command(&mut self.held, &args);
            self.held_count += 1;
        } else {
            self.counters.publish_dropped += 1;
            log::error!(
                "cluster: a publication to {topic:?} (with history) dropped: Redis has been unreachable too long"
            );
        }
    }

    /// Reads a topic's history (the read script); the answer comes as [`Event::Answer`] with
    /// `tag`, or the tag is in [`Cluster::take_lost`] if the link fails first. `false`: the
    /// link is down, nothing was sent.
    #[allow(clippy::too_many_arguments)]
    pub fn read_history(
        &mut self,
        topic: &str,
        after: Option<u64>,
        count: usize,
        reverse: bool,
        ttl: std::time::Duration,
        max_bytes: usize,
        tag: u64,
        now: Instant,
    ) -> bool {
        if !self.publ.is_ready() {
            return false;
        }
        let after = after.map(|o| o.to_string()).unwrap_or_default();
        let (count, ttl) = (count.to_string(), ttl.as_millis().max(1).to_string());
        let epoch = self.new_epoch();
        let (stream, meta) = (streams::stream_key(&self.prefix, topic), streams::meta_key(&self.prefix, topic));
        let reverse: &[u8] = if reverse { b"1" } else { b"0" };
        // Half of what a reply may be: the rest is the framing and one entry past the bound.
        let budget = max_bytes.min(self.max_reply / 2).to_string();
        let args: [&[u8]; 11] = [
            b"EVALSHA",
            self.read_sha.as_bytes(),
            b"2",
            &stream,
            &meta,
            after.as_bytes(),
            count.as_bytes(),
            reverse,
            epoch.as_bytes(),
            ttl.as_bytes(),
            budget.as_bytes(),
        ];
        self.publ.send_tagged(&args, 1, tag, now);
        true
    }

    /// This node's members of `topic` (this worker owns it), as (connection id, member JSON):
    /// added to what Redis has, or, `full`, replacing it.
    pub fn presence_write(&mut self, topic: &Arc<str>, members: &[(u64, Vec<u8>)], full: bool, now: Instant) {
        self.presence_topics.insert(Arc::clone(topic));
        if !self.presence_can_send() {
            return; // written again, all of it, when the link is back or has drained
        }
        let key = presence::members_key(&self.prefix, topic, self.node);
        let nodes = presence::nodes_key(&self.prefix, topic);
        let (ttl, node) = (self.presence_ttl.as_millis().to_string(), format!("{:016x}", self.node));
        let fields: Vec<String> = members.iter().map(|(client, _)| presence::field(*client)).collect();
        // A topic with very many members here is written in parts (the first clears).
        let mut first = full;
        let chunks: Vec<usize> = if members.is_empty() { vec![0] } else { (0..members.len()).step_by(512).collect() };
        for start in chunks {
            let end = (start + 512).min(members.len());
            let clear: &[u8] = if first { b"1" } else { b"0" };
            first = false;
            let mut args: Vec<&[u8]> = vec![
                b"EVALSHA",
                self.presence_write_sha.as_bytes(),
                b"2",
                &key,
                &nodes,
                ttl.as_bytes(),
                node.as_bytes(),
                clear,
            ];
            for i in start..end {
                args.push(fields[i].as_bytes());
                args.push(&members[i].1);
            }
            self.publ.send(&args, 1, now);
        }
    }

    /// A member of `topic` on this node left; `last`: it was the topic's last here.
    pub fn presence_leave(&mut self, topic: &str, client: u64, last: bool, now: Instant) {
        if last {
            self.presence_topics.remove(topic);
        }
        if self.presence_can_send() {
            let key = presence::members_key(&self.prefix, topic, self.node);
            self.publ.send(&[b"HDEL", &key, presence::field(client).as_bytes()], 1, now);
        }
    }

    /// Whether a join or leave can go now. A publish link whose queue is past `max_pending`
    /// (a slow Redis, a flood of subscribes) takes none, so memory stays bounded; the members
    /// are all written again once it has drained.
    fn presence_can_send(&mut self) -> bool {
        if self.publ.pending() > self.max_pending {
            self.presence_skipped = true;
        }
        self.publ.is_ready() && !self.presence_skipped
    }

    /// The publish link came (back) up since the last call: every member must be written
    /// again ([`Cluster::presence_write`] with `full`).
    pub fn take_presence_lost(&mut self) -> bool {
        if self.presence_skipped && self.publ.is_ready() && self.publ.pending() <= self.max_pending / 2 {
            self.presence_skipped = false;
            self.presence_lost = true;
        }
        std::mem::take(&mut self.presence_lost) && !self.presence_topics.is_empty()
    }

    fn renew_presence(&mut self, now: Instant) {
        self.presence_renew_at = now + self.presence_ttl / 3;
        let ttl = self.presence_ttl.as_millis().to_string();
        for topic in &self.presence_topics {
            let key = presence::members_key(&self.prefix, topic, self.node);
            let nodes = presence::nodes_key(&self.prefix, topic);
            self.publ.send(&[b"PEXPIRE", &key, ttl.as_bytes()], 1, now);
            self.publ.send(&[b"PEXPIRE", &nodes, ttl.as_bytes()], 1, now);
        }
    }

    /// Reads `topic`'s presence on every node (the read script); the answer comes as
    /// [`Event::Answer`] with `tag` (parse it with [`presence::parse_read`]). `false`: the
    /// link is down, nothing was sent.
    pub fn presence_read(&mut self, topic: &str, ask: &crate::presence::Ask, tag: u64, now: Instant) -> bool {
        if !self.publ.is_ready() {
            return false;
        }
        let nodes = presence::nodes_key(&self.prefix, topic);
        let base = presence::members_base(&self.prefix, topic);
        let (mode, after, limit, budget) = match ask {
            crate::presence::Ask::Stats => ("stats", String::new(), String::new(), String::new()),
            crate::presence::Ask::List { after, limit, max_bytes } => (
                "list",
                after.clone().unwrap_or_default(),
                limit.to_string(),
                // Half of what a reply may be: the rest is the framing and one member past it.
                (*max_bytes).min(self.max_reply / 2).to_string(),
            ),
        };
        let args: [&[u8]; 9] = [
            b"EVALSHA",
            self.presence_read_sha.as_bytes(),
            b"1",
            &nodes,
            &base,
            mode.as_bytes(),
            after.as_bytes(),
            limit.as_bytes(),
            budget.as_bytes(),
        ];
        self.publ.send_tagged(&args, 1, tag, now);
        true
    }

    /// Deletes `topic`'s history (its stream and its epoch: the next publication starts a
    /// new epoch); the count of keys deleted comes as [`Event::Answer`] with `tag`. `false`:
    /// the link is down, nothing was sent.
    pub fn remove_history(&mut self, topic: &str, tag: u64, now: Instant) -> bool {
        if !self.publ.is_ready() {
            return false;
        }
        let (stream, meta) = (streams::stream_key(&self.prefix, topic), streams::meta_key(&self.prefix, topic));
        self.publ.send_tagged(&[b"DEL", &stream, &meta], 1, tag, now);
        true
    }

    /// This node's id (members across nodes are named by it and their connection id).
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Sends a barrier down the subscription link (a PING, answered in order with the
    /// messages): [`Event::Barrier`] with `tag` when it comes back. `false`: the link is not
    /// subscribed, nothing was sent.
    pub fn barrier(&mut self, tag: u64, now: Instant) -> bool {
        if !self.sub.is_ready() {
            return false;
        }
        self.sub.send_tagged(&[b"PING"], 1, tag, now);
        true
    }

    /// Whether a history read can be sent now.
    pub fn can_read(&self) -> bool {
        self.publ.is_ready()
    }

    /// Tags of reads and barriers that will never be answered (their link failed).
    pub fn take_lost(&mut self) -> Vec<u64> {
        let mut lost = std::mem::take(&mut self.sub.lost_tags);
        lost.append(&mut self.publ.lost_tags);
        lost
    }

    /// A topic got its first subscriber on this worker (`true`) or lost its last.
    pub fn topic_changed(&mut self, topic: &str, subscribed: bool) {
        if subscribed {
            if self.wanted.insert(topic.into()) {
                self.to_subscribe.push(topic.into());
            }
        } else if self.wanted.remove(topic) {
            self.to_unsubscribe.push(topic.into());
        }
    }

    /// Publishes a message this node's client (or admin) published to `topic`.
    pub fn publish(&mut self, topic: &str, frame: &SharedFrame, now: Instant) {
        let Some((opcode, payload)) = crate::encode::frame_parts(frame) else { return };
        let message = wire::encode(wire::Kind::Publish, self.node, opcode, b"", payload);
        let channel = wire::topic_channel(&self.prefix, topic);
        self.send(&channel, &message, now);
    }

    /// Sends a broker message on to the other nodes' token holders.
    pub fn route(&mut self, receivers: &[u8], frame: &SharedFrame, now: Instant) {
        let Some((opcode, payload)) = crate::encode::frame_parts(frame) else { return };
        let message = wire::encode(wire::Kind::Route, self.node, opcode, receivers, payload);
        let channel = wire::broker_channel(&self.prefix);
        self.send(&channel, &message, now);
    }

    fn send(&mut self, channel: &[u8], message: &[u8], now: Instant) {
        if !self.publ.is_ready() || self.publ.pending() + message.len() > self.max_pending {
            self.counters.publish_dropped += 1;
            if self.counters.publish_dropped.is_power_of_two() {
                log::warn!(
                    "cluster: {} publish(es) not sent to Redis ({}): other nodes miss them",
                    self.counters.publish_dropped,
                    if self.publ.is_ready() { "its queue is full" } else { "the link is down" }
                );
            }
            return;
        }
        self.publ.send(&[b"PUBLISH", channel, message], 1, now);
        self.counters.published += 1;
    }

    /// Readiness on one of the links; every message from another node (and every numbered
    /// one), answer and barrier goes to `each`.
    pub fn on_ready(&mut self, token: Token, now: Instant, mut each: impl FnMut(Event<'_>)) {
        if token == PUB_TOKEN {
            let ready = self.publ.on_ready(&self.settings, &self.registry, now, |reply| {
                if let Reply::Answer(tag, result) = reply {
                    if tag != 0 {
                        each(Event::Answer(tag, result));
                    }
                }
            });
            if ready {
                self.release_held(now);
                self.presence_lost = true;
                self.presence_skipped = false;
            }
            return;
        }
        let (prefix, node, counters) = (&self.prefix, self.node, &mut self.counters);
        let became_ready = self.sub.on_ready(&self.settings, &self.registry, now, |reply| {
            let (channel, payload) = match reply {
                Reply::Message(channel, payload) => (channel, payload),
                Reply::Answer(0, _) => return,
                Reply::Answer(tag, _) => return each(Event::Barrier(tag)),
            };
            let message = match wire::decode(payload) {
                Ok(m) => m,
                Err(_) => {
                    counters.malformed += 1;
                    return;
                }
            };
            if message.node == node && message.kind != wire::Kind::Numbered {
                return; // ours: its subscribers were served before it left
            }
            let topic = match message.kind {
                wire::Kind::Publish | wire::Kind::Numbered => match wire::channel_topic(prefix, channel) {
                    Some(t) => t,
                    None => {
                        counters.malformed += 1;
                        return;
                    }
                },
                wire::Kind::Route => "",
            };
            counters.received += 1;
            let receivers = match message.kind {
                wire::Kind::Numbered if message.node != node => &[][..],
                _ => message.receivers,
            };
            each(Event::Message(Incoming {
                kind: message.kind,
                topic,
                opcode: message.opcode,
                receivers,
                offset: message.offset,
                epoch: message.epoch,
                payload: message.payload,
            }));
        });
        if became_ready {
            self.resubscribe(now);
            each(Event::Resubscribed);
        }
        self.note_down(now);
    }

    /// The publish link is (again) up: what waited for it goes first.
    fn release_held(&mut self, now: Instant) {
        if self.held_count > 0 {
            log::info!("cluster: {} publication(s) with history sent after the link came back", self.held_count);
            self.publ.send_encoded(&std::mem::take(&mut self.held), self.held_count, now);
            self.counters.published += self.held_count;
            self.held_count = 0;
        }
    }

    /// The subscription link is (again) up: subscribe to every channel this worker needs.
    fn resubscribe(&mut self, now: Instant) {
        if let Some(since) = self.down_since.take() {
            self.counters.down += now.saturating_duration_since(since);
        }
        self.to_subscribe.clear();
        self.to_unsubscribe.clear();
        let mut channels: Vec<Vec<u8>> = self.wanted.iter().map(|t| wire::topic_channel(&self.prefix, t)).collect();
        if self.broker {
            channels.push(wire::broker_channel(&self.prefix));
        }
        log::info!("cluster: subscribed to {} channel(s) on {}", channels.len(), self.settings.addr);
        self.subscribe_command(b"SUBSCRIBE", channels, now);
    }

    fn subscribe_command(&mut self, verb: &[u8], channels: Vec<Vec<u8>>, now: Instant) {
        for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
            let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
            args.push(verb);
            args.extend(chunk.iter().map(|c| c.as_slice()));
            self.sub.send(&args, chunk.len() as u64, now);
        }
    }

    /// End of a loop turn: timers, this turn's subscription changes, and writing.
    pub fn turn(&mut self, now: Instant) {
        self.sub.tick(&self.settings, &self.registry, now);
        self.publ.tick(&self.settings, &self.registry, now);
        if self.sub.is_ready() && (!self.to_subscribe.is_empty() || !self.to_unsubscribe.is_empty()) {
            let mut add = std::mem::take(&mut self.to_subscribe);
            let mut remove = std::mem::take(&mut self.to_unsubscribe);
            // A topic that came and went in the same turn needs neither.
            add.retain(|t| self.wanted.contains(t));
            remove.retain(|t| !self.wanted.contains(t));
            add.sort_unstable();
            add.dedup();
            remove.sort_unstable();
            remove.dedup();
            let add = add.iter().map(|t| wire::topic_channel(&self.prefix, t)).collect();
            let remove = remove.iter().map(|t| wire::topic_channel(&self.prefix, t)).collect();
            self.subscribe_command(b"SUBSCRIBE", add, now);
            self.subscribe_command(b"UNSUBSCRIBE", remove, now);
        } else if !self.sub.is_ready() {
            // Everything is subscribed again when the link comes back.
            self.to_subscribe.clear();
            self.to_unsubscribe.clear();
        }
        if self.publ.is_ready() {
            self.release_held(now);
            if now >= self.presence_renew_at {
                self.renew_presence(now);
            }
        }
        self.sub.flush(&self.settings, &self.registry, now);
        self.publ.flush(&self.settings, &self.registry, now);
        self.note_down(now);
    }

    /// Starts the clock of lost time when the subscription link is found down.
    fn note_down(&mut self, now: Instant) {
        if !self.sub.is_ready() && self.down_since.is_none() {
            self.down_since = Some(now);
        }
    }

    /// The earliest of the links' deadlines.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.sub.deadline(&self.settings), self.publ.deadline(&self.settings)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A link read up to its budget and has more to read.
    pub fn busy(&self) -> bool {
        self.sub.busy || self.publ.busy
    }

    pub fn counters(&self, now: Instant) -> ClusterCounters {
        let mut c = self.counters.clone();
        if let Some(since) = self.down_since {
            c.down += now.saturating_duration_since(since);
        }
        c.links_up = u64::from(self.sub.is_ready()) + u64::from(self.publ.is_ready());
        c.reconnects = self.sub.lost + self.publ.lost;
        c.probe_failures = self.sub.probe_failures + self.publ.probe_failures;
        c
    }
}

/// The TLS client configuration for `rediss://`: `cluster.ca` if given, else the public CAs.
fn client_tls(config: &ClusterConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &config.redis.ca {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cluster.ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("cluster.ca {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("cluster.ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("cluster.ca {}: no certificate in it", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::shared_frame;

    #[test]
    fn frames_split_into_opcode_and_payload() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let frame = shared_frame(Opcode::Binary, &payload);
            assert_eq!(crate::encode::frame_parts(&frame), Some((Opcode::Binary, &payload[..])), "{len}");
        }
        let frame = shared_frame(Opcode::Text, b"hi");
        assert_eq!(crate::encode::frame_parts(&frame), Some((Opcode::Text, &b"hi"[..])));
    }
}
