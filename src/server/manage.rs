//! The admin listener's commands, executed by the loop: they read and change every
//! connection, the topics and the broker's tokens. Parsing and authentication are in
//! [`crate::admin`]; this is what the commands do.
//!
//! With several workers a command is a gather: worker 0 (which owns the admin listener) asks
//! each worker concerned for its part ([`Worker::part`]: its connections, its topics, its
//! counters) through the mesh, and answers once the last part is in ([`render::Facts::merge`]).
//! A command about one connection goes to the worker its id names; the others go to all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::mesh::{Note, Query};
use super::Worker;
use crate::admin::render::Part;
use crate::admin::render::{self, collect_figures, form_ok, message_frame, publish_frames, DASHBOARD};
use crate::admin::{self, Command, Reply, Target};
use crate::apps::dashboard::{ACCESS_FEED, STATS_FEED};
use crate::apps::FEED_PREFIX;
use crate::broker::{check_token, quirks_payload, split_routed};
use crate::conn_id::worker_of;
use crate::encode::shared_frame;
use crate::metrics::{self, Figures};
use crate::presence::Ask;

/// The most bytes of members one `/api/presence` answer holds (it gives `next` past it).
const ADMIN_PRESENCE_BYTES: usize = 4 << 20;
use crate::ws::frame::Opcode;

/// A command waiting for the other workers' parts.
pub(super) struct Gather {
    reply: Pending,
    started: Instant,
    /// By worker index.
    parts: Vec<Option<Part>>,
    waiting: usize,
}

impl Gather {
    pub(super) fn is_stats(&self) -> bool {
        matches!(self.reply, Pending::Stats)
    }

    /// Still worth waiting for: a worker that has not answered in this long never will (its
    /// admin request was answered 503 at its deadline already).
    pub(super) fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < std::time::Duration::from_secs(60)
    }
}

/// Who gets the merged answer.
pub(super) enum Pending {
    /// The admin request on connection `key` (if it is still connection `id`).
    Admin { key: usize, id: u64, keep_alive: bool, head_only: bool, query: Arc<Command> },
    /// The dashboard's once-a-second figures.
    Stats,
}

impl Worker {
    /// Answers the admin request connection `key` passed on (now, or when the other workers'
    /// parts are in).
    pub(super) fn manage(&mut self, key: usize, req: admin::Request, now: Instant) {
        let head_only = req.method == "HEAD";
        let command = match admin::parse(&req) {
            Ok(c) => c,
            Err(reply) => return self.answer(key, &reply, req.keep_alive, head_only, now),
        };
        let keys = self.admin.as_ref().map(|a| a.config.keys.clone()).unwrap_or_default();
        if let Err(refusal) = admin::authorize(&keys, req.key.as_deref(), command.scope()) {
            let reply = if req.path == "/" { refusal.with_cors() } else { refusal };
            return self.answer(key, &reply, req.keep_alive, head_only, now);
        }
        if let Some(reply) = self.answer_here(&command) {
            return self.answer(key, &reply, req.keep_alive, head_only, now);
        }
        if self.cluster.is_some() && self.read_across_nodes(key, &command, req.keep_alive, head_only, now) {
            return;
        }
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let workers = self.mesh.workers();
        let targets: Vec<usize> = match &command {
            Command::Send { client, .. }
            | Command::Subscribe { client, .. }
            | Command::Unsubscribe { client, .. }
            | Command::Disconnect { target: Target::Client(client), .. } => {
                vec![worker_of(*client).min(workers - 1)]
            }
            // A topic's history is on one worker.
            Command::History { topic, .. }
            | Command::HistoryRemove { topic }
            | Command::Presence { topic, .. }
            | Command::PresenceStats { topic } => {
                vec![crate::history::owner(topic, workers)]
            }
            _ => (0..workers).collect(),
        };
        let command = Arc::new(command);
        let query = match &*command {
            Command::Publish { topics, data } => {
                let frames = publish_frames(topics, data);
                if let Some(cluster) = &mut self.cluster {
                    for (topic, frame) in &frames {
                        cluster.publish(topic, frame, now);
                    }
                }
                Query::Publish(frames.into())
            }
            Command::FormBroadcast { message } => {
                if let (Some(cluster), Some((receivers, payload))) =
                    (&mut self.cluster, split_routed(message.as_bytes()))
                {
                    let payload = if self.broker.quirks { quirks_payload(payload) } else { payload.to_vec() };
                    cluster.route(receivers, &shared_frame(Opcode::Text, &payload), now);
                }
                Query::Admin(Arc::clone(&command))
            }
            _ => Query::Admin(Arc::clone(&command)),
        };
        let pending = Pending::Admin { key, id, keep_alive: req.keep_alive, head_only, query: command };
        self.gather(pending, query, targets, now);
    }

    /// Across nodes, a topic's presence and its history are in Redis: the request is
    /// answered when Redis replies. `false`: the command is not one of those.
    fn read_across_nodes(
        &mut self,
        key: usize,
        command: &Command,
        keep_alive: bool,
        head_only: bool,
        now: Instant,
    ) -> bool {
        match command {
            Command::Presence { topic, after, limit } => {
                let ask = Ask::List { after: after.clone(), limit: *limit, max_bytes: ADMIN_PRESENCE_BYTES };
                self.admin_presence(key, topic, ask, (keep_alive, head_only), now);
            }
            Command::PresenceStats { topic } => {
                self.admin_presence(key, topic, Ask::Stats, (keep_alive, head_only), now)
            }
            Command::History { topic, .. } | Command::HistoryRemove { topic } if !self.topics.has_history(topic) => {
                let reply = Reply::error(404, crate::history::Unrecoverable::NoHistory.reason());
                self.answer(key, &reply, keep_alive, head_only, now);
            }
            Command::History { topic, since, limit, reverse } => {
                let since = since
                    .as_ref()
                    .map(|(offset, epoch)| crate::history::Position { offset: *offset, epoch: epoch.as_str().into() });
                let read = crate::history::Read {
                    since,
                    limit: *limit,
                    max_bytes: super::recovery::ADMIN_REPLY_BYTES,
                    reverse: *reverse,
                };
                let asked = super::recovery::Asked::Admin { keep_alive, head_only };
                self.read_across(key, topic.as_str().into(), asked, read, now);
            }
            Command::HistoryRemove { topic } => self.remove_across(key, topic, keep_alive, head_only, now),
            _ => return false,
        }
        true
    }

    pub(super) fn answer(&mut self, key: usize, reply: &Reply, keep_alive: bool, head_only: bool, now: Instant) {
        self.run_conn(key, now, |conn, ctx| conn.answer(ctx, reply, keep_alive, head_only));
    }

    /// Commands answered by worker 0 alone, and requests refused before any worker acts.
    fn answer_here(&self, command: &Command) -> Option<Reply> {
        Some(match command {
            Command::Dashboard => {
                Reply { status: 200, content_type: "text/html; charset=utf-8", body: DASHBOARD.into(), cors: false }
            }
            Command::Preflight => Reply { status: 204, content_type: "text/plain", body: Vec::new(), cors: true },
            Command::FormTokenList => {
                // Sorted, as Go's encoding/json writes a map.
                let map: BTreeMap<&str, bool> = self.broker.registered().collect();
                form_ok(serde_json::to_vec(&map).unwrap_or_default())
            }
            Command::FormRegister { token } => match check_token(token) {
                Ok(()) => return None,
                Err(e) => Reply::error(400, e.message()).with_cors(),
            },
            Command::FormBroadcast { message } => match split_routed(message.as_bytes()) {
                None => Reply::error(400, "message: expected receivers|text, e.g. abc1,group/|Hello").with_cors(),
                Some((receivers, _)) if receivers.len() > crate::broker::MAX_RECEIVERS_LEN => {
                    Reply::error(400, "message: receivers list too long").with_cors()
                }
                Some(_) => return None,
            },
            _ => return None,
        })
    }

    /// Asks `targets` (worker indexes, this one included or not) for their part of `query`;
    /// `reply` gets the merged answer once every part is in.
    pub(super) fn gather(&mut self, reply: Pending, query: Query, targets: Vec<usize>, now: Instant) {
        let me = self.mailbox.index;
        let workers = self.mesh.workers();
        let gather = self.next_gather;
        self.next_gather += 1;
        let queries = self.per_worker(&query, workers);
        let mut parts: Vec<Option<Part>> = (0..workers).map(|_| None).collect();
        let mut waiting = 0;
        for &w in &targets {
            if w != me && self.mesh.post(w, Note::Ask { gather, from: me, query: queries[w].clone() }) {
                waiting += 1;
            }
        }
        if targets.contains(&me) {
            parts[me] = Some(self.part(&queries[me], now));
        }
        self.gathers.insert(gather, Gather { reply, started: now, parts, waiting });
        if waiting == 0 {
            self.finish(gather, now);
        }
    }

    /// The query each worker gets: the same, but for a page of clients, which is split by
    /// the workers' connection counts (in worker order, as the merged list is).
    fn per_worker(&self, query: &Query, workers: usize) -> Vec<Query> {
        let Query::Admin(command) = query else { return vec![query.clone(); workers] };
        let Command::Clients { offset, limit } = **command else { return vec![query.clone(); workers] };
        let mut base = 0usize;
        (0..workers)
            .map(|w| {
                let count = if w == self.mailbox.index { self.listed_clients() } else { self.mesh.load(w) };
                let start = offset.max(base).min(base + count);
                let end = offset.saturating_add(limit).max(base).min(base + count);
                base += count;
                Query::Admin(Arc::new(Command::Clients { offset: start - (base - count), limit: end - start }))
            })
            .collect()
    }

    /// Another worker's part of gather `gather`.
    pub(super) fn gathered(&mut self, gather: u64, worker: usize, part: Part, now: Instant) {
        let Some(g) = self.gathers.get_mut(&gather) else { return };
        if let Some(slot) = g.parts.get_mut(worker) {
            *slot = Some(part);
        }
        g.waiting -= 1;
        if g.waiting == 0 {
            self.finish(gather, now);
        }
    }

    fn finish(&mut self, gather: u64, now: Instant) {
        let Some(g) = self.gathers.remove(&gather) else { return };
        match g.reply {
            Pending::Admin { key, id, keep_alive, head_only, query } => {
                let fds = matches!(*query, Command::Metrics | Command::Info);
                let reply = self.facts(now, fds).merge(&query, g.parts);
                // The request's connection may have gone (or its slot been reused) meanwhile.
                if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
                    self.answer(key, &reply, keep_alive, head_only, now);
                }
            }
            Pending::Stats => {
                let figures = collect_figures(g.parts);
                let frame = shared_frame(Opcode::Text, self.facts(now, false).stats_json(&figures).as_bytes());
                self.publish(STATS_FEED, &frame, None, &[], now);
            }
        }
        self.flush_dirty(now);
    }

    /// This worker's part of a command.
    pub(super) fn part(&mut self, query: &Query, now: Instant) -> Part {
        let command = match query {
            Query::Figures => return Part::Figures(Box::new(self.figures(now))),
            Query::Publish(frames) => {
                let mut subscribers = 0;
                for (topic, frame) in frames.iter() {
                    subscribers += self.topics.find(topic).map_or(0, |t| self.topics.members(t).len());
                    if !self.topics.has_history(topic) {
                        self.publish(topic, frame, None, &[], now);
                    } else if self.mailbox.index == 0 {
                        // Numbered by the topic's owner, which delivers it on every worker.
                        self.publish_numbered(Arc::clone(topic), frame.clone(), Arc::clone(&self.no_ids), now);
                    }
                }
                return Part::Count(subscribers);
            }
            Query::Admin(command) => command,
        };
        match &**command {
            Command::Metrics | Command::Info => Part::Figures(Box::new(self.figures(now))),
            Command::Clients { offset, limit } => {
                let (total, json) = self.clients_page(now, *offset, *limit);
                Part::Clients { total, json }
            }
            Command::Topics { .. } => Part::Topics(
                self.topics
                    .iter()
                    .filter(|(name, _, _)| !name.starts_with(FEED_PREFIX))
                    .map(|(name, subs, dropped)| (name.to_string(), subs, dropped))
                    .collect(),
            ),
            Command::Send { client, data } => Part::Flag(self.open_key(*client).map(|key| {
                let frame = message_frame(data);
                self.deliver(key, &frame, now)
            })),
            Command::Disconnect { target, code, reason } => {
                let keys: Vec<usize> = match target {
                    Target::Client(id) => self.open_key(*id).into_iter().collect(),
                    Target::Topic(t) => {
                        self.topics.find(t).map(|t| self.topics.members(t).collect()).unwrap_or_default()
                    }
                    // An exact token: neither groups nor the quirks' substrings apply.
                    Target::Token(t) => self.broker.holders(t),
                };
                let mut closed = 0;
                for key in keys {
                    if self.conns.get(key).is_some_and(|e| e.conn.is_open()) {
                        closed += 1;
                        let reason = reason.clone();
                        self.run_conn(key, now, |conn, ctx| conn.disconnect(ctx, *code, reason));
                    }
                }
                Part::Count(closed)
            }
            // The admin is not bound by the route's max_subscriptions.
            Command::Subscribe { client, topic } => Part::Flag(
                self.open_key(*client).map(|key| self.topics.subscribe(key, topic, usize::MAX).unwrap_or(false)),
            ),
            Command::Unsubscribe { client, topic } => Part::Flag(self.open_key(*client).map(|key| {
                // Out of the topic's presence too, with its leave event.
                self.leave_presence(key, topic, now);
                self.topics.unsubscribe(key, topic)
            })),
            Command::Presence { topic, after, limit } => {
                let ask = Ask::List { after: after.clone(), limit: *limit, max_bytes: ADMIN_PRESENCE_BYTES };
                Part::Owned(self.presence_part(topic, &ask))
            }
            Command::PresenceStats { topic } => Part::Owned(self.presence_part(topic, &Ask::Stats)),
            Command::History { topic, since, limit, reverse } => {
                Part::Owned(self.history_part(topic, since, *limit, *reverse, now))
            }
            Command::HistoryRemove { topic } => Part::Owned(if self.topics.has_history(topic) {
                let removed = self.histories.remove(topic);
                Ok(format!("{{\"removed\":{removed}}}").into_bytes())
            } else {
                Err((404, "the topic keeps no history".into()))
            }),
            Command::FormBroadcast { message } => {
                if let Some((receivers, payload)) = split_routed(message.as_bytes()) {
                    let frame = if self.broker.quirks {
                        shared_frame(Opcode::Text, &quirks_payload(payload))
                    } else {
                        shared_frame(Opcode::Text, payload)
                    };
                    let mut keys = std::mem::take(&mut self.scratch_keys);
                    self.broker.receivers(receivers, &mut keys);
                    if self.mailbox.index == 0 {
                        self.metrics.broker_routed += 1;
                    }
                    self.route_message(&keys, &frame, now);
                    self.scratch_keys = keys;
                }
                Part::Nothing
            }
            Command::FormClients => Part::Peers(
                self.conns
                    .iter()
                    .filter_map(|(_, e)| {
                        let token = e.conn.token().filter(|_| e.conn.is_open())?;
                        Some((e.conn.peer().to_string(), token.to_string()))
                    })
                    .collect(),
            ),
            Command::FormRegister { token } => {
                self.broker.register(token);
                Part::Nothing
            }
            Command::FormUnregister { token } => {
                self.broker.unregister(token);
                Part::Nothing
            }
            // Framed once by worker 0 (Query::Publish); the others never see this one.
            Command::Publish { .. } | Command::Dashboard | Command::Preflight | Command::FormTokenList => Part::Nothing,
        }
    }

    /// The slab key of the open WebSocket with this id.
    fn open_key(&self, id: u64) -> Option<usize> {
        let key = crate::conn_id::key_of(id);
        self.conns.get(key).filter(|e| e.conn.id() == id && e.conn.is_open()).map(|_| key)
    }

    /// This worker's figures: its counters, and what only a walk of its connections gives.
    pub(super) fn figures(&self, now: Instant) -> Figures {
        let mut by_state = BTreeMap::new();
        let mut routes: Vec<(u64, crate::apps::Traffic)> =
            self.metrics.closed_traffic.iter().map(|t| (0, *t)).collect();
        routes.resize(self.routes.iter().count().max(routes.len()), (0, crate::apps::Traffic::default()));
        for (_, e) in self.conns.iter() {
            *by_state.entry(e.conn.state()).or_insert(0) += 1;
            if let Some(r) = e.conn.route().and_then(|r| routes.get_mut(r)) {
                r.0 += 1;
                metrics::add_traffic(&mut r.1, e.conn.traffic());
            }
        }
        // The server's own feeds (log viewers, the dashboard) are not pub/sub topics.
        let (mut subscriptions, mut topics) = self.topics.len();
        let feeds = [STATS_FEED, ACCESS_FEED].into_iter().chain(self.tails.feeds());
        for feed in feeds.filter_map(|f| self.topics.find(f)) {
            topics -= 1;
            subscriptions -= self.topics.members(feed).len();
        }
        let mut top: Vec<(&str, usize, u64)> =
            self.topics.iter().filter(|(n, _, _)| !n.starts_with(FEED_PREFIX)).collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        let mut metrics = self.metrics.clone();
        if let Some(cluster) = &self.cluster {
            metrics.cluster = cluster.counters(now);
        }
        Figures {
            worker: self.mailbox.index,
            metrics,
            connections: self.conns.len(),
            by_state,
            routes,
            topics,
            subscriptions,
            top_topics: top.into_iter().take(10).map(|(n, s, d)| (n.to_string(), s, d)).collect(),
            tokens_held: self.broker.held().0,
            pool_bytes: self.pools.spare_bytes(),
            inbox_received: self.mailbox.received,
            inbox_dropped: self.mesh.dropped(self.mailbox.index),
            plugins: self.plugins.figures(),
        }
    }

    /// Descriptor figures, counted at most once a second (counting walks /proc/self/fd, which
    /// takes milliseconds at tens of thousands: a client hammering /metrics must not make
    /// the loop do that for every request).
    /// What [`render`] needs to know of this process, with the descriptors counted if `fds`.
    fn facts(&self, now: Instant, fds: bool) -> render::Facts<'_> {
        render::Facts {
            routes: &self.routes,
            limits: &self.limits,
            max_connections: self.max_connections,
            started: self.started,
            tokens_registered: self.broker.registered_count(),
            cluster_on: self.cluster.is_some(),
            fds: if fds { self.fd_figures(now) } else { (None, None) },
            now,
        }
    }

    fn fd_figures(&self, now: Instant) -> metrics::FdFigures {
        match self.fd_figures_cache.get() {
            Some((at, figures)) if now.saturating_duration_since(at) < std::time::Duration::from_secs(1) => figures,
            _ => {
                let figures = metrics::fd_figures();
                self.fd_figures_cache.set(Some((now, figures)));
                figures
            }
        }
    }

    /// How many of this worker's connections `/api/clients` lists.
    fn listed_clients(&self) -> usize {
        self.conns.iter().filter(|(_, e)| e.conn.is_listed()).count()
    }

    /// This worker's part of a page of `/api/clients`: how many it lists, and the objects of
    /// the page (`offset` and `limit` within this worker's list), comma-separated.
    fn clients_page(&self, now: Instant, offset: usize, limit: usize) -> (usize, Vec<u8>) {
        #[derive(serde::Serialize)]
        struct Client<'a> {
            id: String,
            peer: String,
            route: Option<&'a str>,
            state: &'static str,
            token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a str>,
            topics: Vec<&'a str>,
            connected_seconds: f64,
            messages_in: u64,
            bytes_in: u64,
            messages_out: u64,
            bytes_out: u64,
        }
        let total = self.listed_clients();
        let mut out = Vec::with_capacity(limit.min(total) * 220);
        let page = self.conns.iter().filter(|(_, e)| e.conn.is_listed()).skip(offset).take(limit);
        for (i, (key, e)) in page.enumerate() {
            let c = &e.conn;
            if i > 0 {
                out.push(b',');
            }
            let t = c.traffic();
            let client = Client {
                id: c.id().to_string(),
                peer: c.peer().to_string(),
                route: c.route().map(|r| &*self.routes.get(r).path),
                state: c.state(),
                token: c.token(),
                user: c.user(),
                topics: self.topics.of(key).filter(|t| !t.starts_with(FEED_PREFIX)).collect(),
                connected_seconds: now.saturating_duration_since(c.accepted(now)).as_secs_f64(),
                messages_in: t.msgs_in,
                bytes_in: t.bytes_in,
                messages_out: t.msgs_out,
                bytes_out: t.bytes_out,
            };
            let _ = serde_json::to_writer(&mut out, &client);
        }
        (total, out)
    }
}
