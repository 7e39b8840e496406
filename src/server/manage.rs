//! The admin listener's commands, executed by the loop: they read and change every
//! connection, the topics and the broker's tokens. Parsing and authentication are in
//! [`crate::admin`]; this is what the commands do.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use super::Server;
use crate::admin::{self, Command, Data, Reply, Target};
use crate::apps::dashboard::{ACCESS_FEED, STATS_FEED};
use crate::apps::FEED_PREFIX;
use crate::broker::{check_token, quirks_payload, split_routed};
use crate::connection::Connection;
use crate::encode::{shared_frame, SharedFrame};
use crate::metrics::{self, add_traffic, Snapshot};
use crate::ws::frame::Opcode;

/// The dashboard page: plain HTML and JS, no build step.
const DASHBOARD: &str = include_str!("../admin/dashboard.html");

impl Server {
    /// Answers the admin request connection `key` passed on.
    pub(super) fn manage(&mut self, key: usize, req: admin::Request, now: Instant) {
        let reply = self.execute(&req, now);
        let head_only = req.method == "HEAD";
        self.run_conn(key, now, |conn, ctx| conn.answer(ctx, &reply, req.keep_alive, head_only));
    }

    fn execute(&mut self, req: &admin::Request, now: Instant) -> Reply {
        let command = match admin::parse(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let keys = self.admin.as_ref().map(|a| a.config.keys.clone()).unwrap_or_default();
        if let Err(refusal) = admin::authorize(&keys, req.key.as_deref(), command.scope()) {
            let form = req.path == "/";
            return if form { refusal.with_cors() } else { refusal };
        }
        match command {
            Command::Dashboard => {
                Reply { status: 200, content_type: "text/html; charset=utf-8", body: DASHBOARD.into(), cors: false }
            }
            Command::Metrics => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics_text(now).into_bytes(),
                cors: false,
            },
            Command::Info => Reply::json(self.info_json(now)),
            Command::Clients { offset, limit } => Reply::json(self.clients_json(now, offset, limit)),
            Command::Topics { offset, limit } => {
                #[derive(serde::Serialize)]
                struct Topic<'a> {
                    topic: &'a str,
                    subscribers: usize,
                    dropped: u64,
                }
                let listed = || self.topics.iter().filter(|(name, _, _)| !name.starts_with(FEED_PREFIX));
                let total = listed().count();
                let topics: Vec<Topic<'_>> = listed()
                    .skip(offset)
                    .take(limit)
                    .map(|(topic, subscribers, dropped)| Topic { topic, subscribers, dropped })
                    .collect();
                let mut body = b"{\"result\":{\"topics\":".to_vec();
                let _ = serde_json::to_writer(&mut body, &topics);
                let _ = write!(body, ",\"total\":{total}");
                if offset.saturating_add(limit) < total {
                    let _ = write!(body, ",\"next_offset\":{}", offset + limit);
                }
                body.extend_from_slice(b"}}");
                Reply::json(body)
            }
            Command::Publish { topics, data } => {
                let mut subscribers = 0;
                for topic in &topics {
                    let frame = match &data {
                        Data::Json(json) => {
                            let mut body = Vec::with_capacity(json.len() + topic.len() + 24);
                            body.extend_from_slice(b"{\"topic\":");
                            let _ = serde_json::to_writer(&mut body, topic);
                            body.extend_from_slice(b",\"data\":");
                            body.extend_from_slice(json.as_bytes());
                            body.push(b'}');
                            shared_frame(Opcode::Text, &body)
                        }
                        Data::Binary(bytes) => shared_frame(Opcode::Binary, bytes),
                    };
                    subscribers += self.topics.find(topic).map_or(0, |t| self.topics.members(t).len());
                    self.publish(topic, &frame, None, &[], now);
                }
                Reply::json(serde_json::json!({ "result": { "subscribers": subscribers } }).to_string())
            }
            Command::Send { client, data } => {
                let Some(key) = self.open_key(client) else {
                    return Reply::error(404, "no open WebSocket with this id");
                };
                let frame = message_frame(&data);
                let queued = self.deliver(key, &frame, now);
                Reply::json(serde_json::json!({ "result": { "queued": queued } }).to_string())
            }
            Command::Disconnect { target, code, reason } => {
                let keys: Vec<usize> = match &target {
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
                        self.run_conn(key, now, |conn, ctx| conn.disconnect(ctx, code, reason));
                    }
                }
                Reply::json(serde_json::json!({ "result": { "disconnected": closed } }).to_string())
            }
            Command::Subscribe { client, topic } => {
                let Some(key) = self.open_key(client) else {
                    return Reply::error(404, "no open WebSocket with this id");
                };
                // The admin is not bound by the route's max_subscriptions.
                let added = self.topics.subscribe(key, &topic, usize::MAX).unwrap_or(false);
                Reply::json(serde_json::json!({ "result": { "subscribed": added } }).to_string())
            }
            Command::Unsubscribe { client, topic } => {
                let Some(key) = self.open_key(client) else {
                    return Reply::error(404, "no open WebSocket with this id");
                };
                let removed = self.topics.unsubscribe(key, &topic);
                Reply::json(serde_json::json!({ "result": { "unsubscribed": removed } }).to_string())
            }
            Command::FormBroadcast { message } => {
                let Some((receivers, payload)) = split_routed(message.as_bytes()) else {
                    return Reply::error(400, "message: expected receivers|text, e.g. abc1,group/|Hello").with_cors();
                };
                if receivers.len() > crate::broker::MAX_RECEIVERS_LEN {
                    return Reply::error(400, "message: receivers list too long").with_cors();
                }
                let frame = if self.broker.quirks {
                    shared_frame(Opcode::Text, &quirks_payload(payload))
                } else {
                    shared_frame(Opcode::Text, payload)
                };
                let mut keys = std::mem::take(&mut self.scratch_keys);
                self.broker.receivers(receivers, &mut keys);
                self.route_message(&keys, &frame, now);
                self.scratch_keys = keys;
                self.flush_dirty(now);
                form_ok(Vec::new())
            }
            Command::FormClients => {
                // websockets_pro's get_clients: {"peer address": "token"} for broker clients.
                let mut map = serde_json::Map::new();
                for (_, e) in self.conns.iter() {
                    if let Some(token) = e.conn.token().filter(|_| e.conn.is_open()) {
                        map.insert(e.conn.peer().to_string(), token.into());
                    }
                }
                form_ok(serde_json::Value::Object(map).to_string().into_bytes())
            }
            Command::FormRegister { token } => match check_token(&token) {
                Ok(()) => {
                    self.broker.register(&token);
                    form_ok(Vec::new())
                }
                Err(e) => Reply::error(400, e.message()).with_cors(),
            },
            Command::FormUnregister { token } => {
                self.broker.unregister(&token);
                form_ok(Vec::new())
            }
            Command::FormTokenList => {
                // Sorted, as Go's encoding/json writes a map.
                let map: BTreeMap<&str, bool> = self.broker.registered().collect();
                form_ok(serde_json::to_vec(&map).unwrap_or_default())
            }
            Command::Preflight => Reply { status: 204, content_type: "text/plain", body: Vec::new(), cors: true },
        }
    }

    /// The slab key of the open WebSocket with this id.
    fn open_key(&self, id: u64) -> Option<usize> {
        let key = super::key_of(id);
        self.conns.get(key).filter(|e| e.conn.id() == id && e.conn.is_open()).map(|_| key)
    }

    /// The figures only a walk of the connections gives; `fds`: count descriptors too.
    fn snapshot(&self, now: Instant, fds: bool) -> Snapshot<'_> {
        let mut by_state = BTreeMap::new();
        let mut routes: Vec<(&str, &'static str, u64, crate::apps::Traffic)> =
            self.routes.iter().map(|r| (&*r.path, r.app.name(), 0, crate::apps::Traffic::default())).collect();
        for (i, t) in self.metrics.closed_traffic.iter().enumerate().take(routes.len()) {
            add_traffic(&mut routes[i].3, t);
        }
        for (_, e) in self.conns.iter() {
            *by_state.entry(e.conn.state()).or_insert(0) += 1;
            if let Some(r) = e.conn.route().and_then(|r| routes.get_mut(r)) {
                r.2 += 1;
                add_traffic(&mut r.3, e.conn.traffic());
            }
        }
        // The server's own feeds (log viewers, the dashboard) are not pub/sub topics.
        let (mut subscriptions, mut topics) = self.topics.len();
        let feeds = [STATS_FEED, ACCESS_FEED].into_iter().chain(self.tails.feeds());
        for feed in feeds.filter_map(|f| self.topics.find(f)) {
            topics -= 1;
            subscriptions -= self.topics.members(feed).len();
        }
        let (open_fds, max_fds) = if fds { self.fd_figures(now) } else { (None, None) };
        let rss_bytes = metrics::rss_bytes();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime: now.saturating_duration_since(self.started),
            by_state,
            routes,
            topics,
            subscriptions,
            broker_tokens_held: self.broker.held().0,
            broker_tokens_registered: self.broker.registered_count(),
            rss_bytes,
            open_fds,
            max_fds,
            pool_bytes: self.pools.spare_bytes(),
        }
    }

    /// Descriptor figures, counted at most once a second (counting walks /proc/self/fd, which
    /// takes milliseconds at tens of thousands: a client hammering /metrics must not make
    /// the loop do that for every request).
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

    fn metrics_text(&self, now: Instant) -> String {
        metrics::render(&self.metrics, &self.snapshot(now, true))
    }

    fn info_json(&self, now: Instant) -> String {
        let s = self.snapshot(now, true);
        let l = &self.limits;
        serde_json::json!({ "result": {
            "version": s.version,
            "uptime_seconds": s.uptime.as_secs(),
            "connections": self.conns.len(),
            "max_connections": self.max_connections,
            "topics": s.topics,
            "subscriptions": s.subscriptions,
            "broker": { "tokens_held": s.broker_tokens_held, "tokens_registered": s.broker_tokens_registered },
            "rss_bytes": s.rss_bytes,
            "open_fds": s.open_fds,
            "limits": {
                "max_message_size": l.max_message_size,
                "max_frame_size": l.max_frame_size,
                "max_head_size": l.max_head_size,
                "handshake_timeout_ms": l.handshake_timeout.as_millis() as u64,
                "idle_timeout_ms": l.idle_timeout.as_millis() as u64,
                "ping_interval_ms": l.ping_interval.as_millis() as u64,
                "max_backpressure": l.max_backpressure,
                "max_queued": l.max_queued,
            },
            "routes": self.routes.iter().map(|r| serde_json::json!({ "path": &*r.path, "app": r.app.name() })).collect::<Vec<_>>(),
        }})
        .to_string()
    }

    /// A page of `/api/clients`: `{"result":{"clients":[...],"total":N,"next_offset":M}}`
    /// (`next_offset` only when more follow). Admin requests in progress are not clients.
    fn clients_json(&self, now: Instant, offset: usize, limit: usize) -> String {
        #[derive(serde::Serialize)]
        struct Client<'a> {
            id: String,
            peer: String,
            route: Option<&'a str>,
            state: &'static str,
            token: Option<&'a str>,
            topics: Vec<&'a str>,
            connected_seconds: f64,
            messages_in: u64,
            bytes_in: u64,
            messages_out: u64,
            bytes_out: u64,
        }
        let listed = |c: &Connection| !(c.is_admin() && c.route().is_none() && !c.is_open());
        let total = self.conns.iter().filter(|(_, e)| listed(&e.conn)).count();
        let mut out = Vec::with_capacity(64 + limit.min(total) * 220);
        out.extend_from_slice(b"{\"result\":{\"clients\":[");
        let page = self.conns.iter().filter(|(_, e)| listed(&e.conn)).skip(offset).take(limit);
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
                topics: self.topics.of(key).filter(|t| !t.starts_with(FEED_PREFIX)).collect(),
                connected_seconds: now.saturating_duration_since(c.accepted()).as_secs_f64(),
                messages_in: t.msgs_in,
                bytes_in: t.bytes_in,
                messages_out: t.msgs_out,
                bytes_out: t.bytes_out,
            };
            let _ = serde_json::to_writer(&mut out, &client);
        }
        let _ = write!(out, "],\"total\":{total}");
        if offset.saturating_add(limit) < total {
            let _ = write!(out, ",\"next_offset\":{}", offset + limit);
        }
        out.extend_from_slice(b"}}");
        String::from_utf8(out).unwrap_or_default()
    }

    /// The dashboard's once-a-second figures.
    pub(super) fn stats_json(&self, now: Instant) -> String {
        let s = self.snapshot(now, false);
        let m = &self.metrics;
        let (mut msgs_in, mut msgs_out, mut bytes_in, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
        for (_, _, _, t) in &s.routes {
            msgs_in += t.msgs_in;
            msgs_out += t.msgs_out;
            bytes_in += t.bytes_in;
            bytes_out += t.bytes_out;
        }
        let mut routes: Vec<_> = s.routes.iter().collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.2));
        let routes: Vec<serde_json::Value> = routes
            .iter()
            .take(10)
            .map(|(path, app, open, t)| {
                serde_json::json!({ "route": path, "app": app, "open": open, "messages_in": t.msgs_in, "messages_out": t.msgs_out })
            })
            .collect();
        let mut topics: Vec<(&str, usize, u64)> =
            self.topics.iter().filter(|(n, _, _)| !n.starts_with(FEED_PREFIX)).collect();
        topics.sort_by_key(|t| std::cmp::Reverse(t.1));
        let topics: Vec<serde_json::Value> = topics
            .iter()
            .take(10)
            .map(|(name, subs, dropped)| serde_json::json!({ "topic": name, "subscribers": subs, "dropped": dropped }))
            .collect();
        serde_json::json!({
            "type": "stats",
            "version": s.version,
            "uptime_seconds": s.uptime.as_secs(),
            "connections": self.conns.len(),
            "by_state": s.by_state,
            "messages_in": msgs_in,
            "messages_out": msgs_out,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "deliveries": m.deliveries,
            "slow_consumer_closes": m.slow_consumer_closes,
            "dropped": m.dropped,
            "broker_routed": m.broker_routed,
            "rss_bytes": s.rss_bytes,
            "routes": routes,
            "topics": topics,
        })
        .to_string()
    }
}

/// websockets_pro's answers: 200, CORS headers, the body as is.
fn form_ok(body: Vec<u8>) -> Reply {
    Reply { status: 200, content_type: "application/json", body, cors: true }
}

/// `/api/send`'s message: a JSON string as its text, other JSON as its text, bytes as binary.
fn message_frame(data: &Data) -> SharedFrame {
    match data {
        Data::Json(json) => match serde_json::from_str::<String>(json) {
            Ok(text) => shared_frame(Opcode::Text, text.as_bytes()),
            Err(_) => shared_frame(Opcode::Text, json.as_bytes()),
        },
        Data::Binary(bytes) => shared_frame(Opcode::Binary, bytes),
    }
}
