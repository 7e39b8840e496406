//! The admin API's answers rendered: every worker's parts of a command merged into one
//! JSON (or Prometheus text) reply, the dashboard's figures, and the frames `/api/publish` and
//! `/api/send` deliver. Pure functions of what the workers gathered and of [`Facts`] about
//! the process: the loop gathers, this renders.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use super::{Command, Data, Reply};
use crate::encode::{shared_frame, SharedFrame};
use crate::limits::Limits;
use crate::metrics::{self, FdFigures, Figures, Snapshot};
use crate::route::Routes;
use crate::ws::frame::Opcode;

/// What the answering worker knows of the process beyond the workers' parts.
pub struct Facts<'a> {
    pub routes: &'a Routes,
    /// The server-wide limits (`/api/info`).
    pub limits: &'a Limits,
    pub max_connections: usize,
    pub started: Instant,
    pub tokens_registered: usize,
    pub cluster_on: bool,
    /// Open descriptors and their limit, when counted (`/metrics`, `/api/info`).
    pub fds: FdFigures,
    pub now: Instant,
}

/// The dashboard page: plain HTML and JS, no build step.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// websockets_pro's answers: 200, CORS headers, the body as is.
pub fn form_ok(body: Vec<u8>) -> Reply {
    Reply { status: 200, content_type: "application/json", body, cors: true }
}

/// `/api/send`'s message: a JSON string as its text, other JSON as its text, bytes as binary.
pub fn message_frame(data: &Data) -> SharedFrame {
    match data {
        Data::Json(json) => match serde_json::from_str::<String>(json) {
            Ok(text) => shared_frame(Opcode::Text, text.as_bytes()),
            Err(_) => shared_frame(Opcode::Text, json.as_bytes()),
        },
        Data::Binary(bytes) => shared_frame(Opcode::Binary, bytes),
    }
}

/// Each worker's figures, in worker order.
pub fn collect_figures(parts: Vec<Option<Part>>) -> Vec<Figures> {
    parts.into_iter().flatten().filter_map(|p| if let Part::Figures(f) = p { Some(*f) } else { None }).collect()
}

/// `/api/publish`'s messages, framed once for every worker: JSON data wrapped as
/// `{"topic":…,"data":…}`, bytes as a binary message.
pub fn publish_frames(topics: &[String], data: &Data) -> Vec<(Arc<str>, SharedFrame)> {
    topics
        .iter()
        .map(|topic| {
            let frame = match data {
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
            (Arc::from(topic.as_str()), frame)
        })
        .collect()
}

impl<'a> Facts<'a> {
    /// The answer to a command, from every worker's part.
    pub fn merge(&self, command: &Command, parts: Vec<Option<Part>>) -> Reply {
        let parts = parts.into_iter().flatten();
        let count = |parts: &mut dyn Iterator<Item = Part>| {
            parts.map(|p| if let Part::Count(n) = p { n } else { 0 }).sum::<usize>()
        };
        let flag = |parts: &mut dyn Iterator<Item = Part>| {
            parts.filter_map(|p| if let Part::Flag(f) = p { f } else { None }).next()
        };
        let mut parts = parts;
        match command {
            Command::Metrics => {
                let figures = collect_figures(parts.map(Some).collect());
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: self.metrics_text(&figures).into_bytes(),
                    cors: false,
                }
            }
            Command::Info => Reply::json(self.info_json(&collect_figures(parts.map(Some).collect()))),
            Command::Clients { offset, limit } => {
                let mut out = b"{\"result\":{\"clients\":[".to_vec();
                let mut total = 0;
                for part in parts {
                    if let Part::Clients { total: t, json } = part {
                        total += t;
                        if !json.is_empty() {
                            if out.last() != Some(&b'[') {
                                out.push(b',');
                            }
                            out.extend_from_slice(&json);
                        }
                    }
                }
                let _ = write!(out, "],\"total\":{total}");
                if offset.saturating_add(*limit) < total {
                    let _ = write!(out, ",\"next_offset\":{}", offset + limit);
                }
                out.extend_from_slice(b"}}");
                Reply::json(out)
            }
            Command::Topics { offset, limit } => {
                let mut merged: BTreeMap<String, (usize, u64)> = BTreeMap::new();
                for part in parts {
                    if let Part::Topics(list) = part {
                        for (name, subs, dropped) in list {
                            let e = merged.entry(name).or_default();
                            e.0 += subs;
                            e.1 += dropped;
                        }
                    }
                }
                #[derive(serde::Serialize)]
                struct Topic<'a> {
                    topic: &'a str,
                    subscribers: usize,
                    dropped: u64,
                }
                let total = merged.len();
                let topics: Vec<Topic<'_>> = merged
                    .iter()
                    .skip(*offset)
                    .take(*limit)
                    .map(|(topic, (subscribers, dropped))| Topic {
                        topic,
                        subscribers: *subscribers,
                        dropped: *dropped,
                    })
                    .collect();
                let mut body = b"{\"result\":{\"topics\":".to_vec();
                let _ = serde_json::to_writer(&mut body, &topics);
                let _ = write!(body, ",\"total\":{total}");
                if offset.saturating_add(*limit) < total {
                    let _ = write!(body, ",\"next_offset\":{}", offset + limit);
                }
                body.extend_from_slice(b"}}");
                Reply::json(body)
            }
            Command::Publish { .. } => {
                let subscribers = count(&mut parts);
                Reply::json(serde_json::json!({ "result": { "subscribers": subscribers } }).to_string())
            }
            Command::Send { .. } => match flag(&mut parts) {
                Some(queued) => Reply::json(serde_json::json!({ "result": { "queued": queued } }).to_string()),
                None => Reply::error(404, "no open WebSocket with this id"),
            },
            Command::Disconnect { .. } => {
                let closed = count(&mut parts);
                Reply::json(serde_json::json!({ "result": { "disconnected": closed } }).to_string())
            }
            Command::Subscribe { .. } => match flag(&mut parts) {
                Some(added) => Reply::json(serde_json::json!({ "result": { "subscribed": added } }).to_string()),
                None => Reply::error(404, "no open WebSocket with this id"),
            },
            Command::History { .. }
            | Command::HistoryRemove { .. }
            | Command::Presence { .. }
            | Command::PresenceStats { .. } => {
                match parts.find_map(|p| if let Part::Owned(h) = p { Some(h) } else { None }) {
                    Some(Ok(json)) => result_reply(&json),
                    Some(Err((status, message))) => Reply::error(status, &message),
                    None => Reply::error(503, "the topic's owner did not answer"),
                }
            }
            Command::Unsubscribe { .. } => match flag(&mut parts) {
                Some(removed) => Reply::json(serde_json::json!({ "result": { "unsubscribed": removed } }).to_string()),
                None => Reply::error(404, "no open WebSocket with this id"),
            },
            Command::FormClients => {
                // websockets_pro's get_clients: {"peer address": "token"} for broker clients.
                let mut map = serde_json::Map::new();
                for part in parts {
                    if let Part::Peers(peers) = part {
                        for (peer, token) in peers {
                            map.insert(peer, token.into());
                        }
                    }
                }
                form_ok(serde_json::Value::Object(map).to_string().into_bytes())
            }
            Command::FormBroadcast { .. } | Command::FormRegister { .. } | Command::FormUnregister { .. } => {
                form_ok(Vec::new())
            }
            Command::Dashboard | Command::Preflight | Command::FormTokenList => {
                Reply::error(500, "answered before any worker acts")
            }
        }
    }

    /// The process's figures: every worker's summed, with the route names and what the
    /// process as a whole has (memory, descriptors).
    fn snapshot(&self, total: &Figures, fds: bool) -> Snapshot<'a> {
        let now = self.now;
        // A route reloaded unchanged (or changed and changed back) is one series, not two.
        let mut routes: Vec<(&str, &'static str, u64, crate::metrics::Traffic)> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let (open, traffic) = total.routes.get(i).copied().unwrap_or_default();
            match routes.iter_mut().find(|(p, a, _, _)| *p == &*r.path && *a == r.app.name()) {
                Some(entry) => {
                    entry.2 += open;
                    metrics::add_traffic(&mut entry.3, &traffic);
                }
                None => routes.push((&*r.path, r.app.name(), open, traffic)),
            }
        }
        let mut plugins: Vec<(&str, crate::plugin::host::PluginFigures)> = Vec::new();
        for (i, p) in &total.plugins {
            let path = &*self.routes.get(*i).path;
            match plugins.iter_mut().find(|(r, _)| *r == path) {
                Some((_, into)) => into.absorb(p),
                None => plugins.push((path, *p)),
            }
        }
        let (open_fds, max_fds) = if fds { self.fds } else { (None, None) };
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime: now.saturating_duration_since(self.started),
            by_state: total.by_state.clone(),
            routes,
            plugins,
            topics: total.topics,
            subscriptions: total.subscriptions,
            broker_tokens_held: total.tokens_held,
            broker_tokens_registered: self.tokens_registered,
            rss_bytes: metrics::rss_bytes(),
            open_fds,
            max_fds,
            pool_bytes: total.pool_bytes,
        }
    }

    fn metrics_text(&self, figures: &[Figures]) -> String {
        let total = Figures::sum(figures);
        metrics::render(&total.metrics, &self.snapshot(&total, true), figures, self.cluster_on)
    }

    fn info_json(&self, figures: &[Figures]) -> String {
        let total = Figures::sum(figures);
        let s = self.snapshot(&total, true);
        let l = &self.limits;
        serde_json::json!({ "result": {
            "version": s.version,
            "uptime_seconds": s.uptime.as_secs(),
            "connections": total.connections,
            "max_connections": self.max_connections,
            "workers": figures.len(),
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
            "routes": self.routes.active().map(|r| serde_json::json!({ "path": &*r.path, "app": r.app.name() })).collect::<Vec<_>>(),
        }})
        .to_string()
    }

    /// The dashboard's once-a-second figures.
    pub fn stats_json(&self, figures: &[Figures]) -> String {
        let total = Figures::sum(figures);
        let s = self.snapshot(&total, false);
        let m = &total.metrics;
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
        let topics: Vec<serde_json::Value> = total
            .top_topics
            .iter()
            .map(|(name, subs, dropped)| serde_json::json!({ "topic": name, "subscribers": subs, "dropped": dropped }))
            .collect();
        serde_json::json!({
            "type": "stats",
            "version": s.version,
            "uptime_seconds": s.uptime.as_secs(),
            "connections": total.connections,
            "workers": figures.len(),
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

/// One worker's answer to a gather's query (`server::mesh::Query`).
pub enum Part {
    Figures(Box<Figures>),
    /// Serialised client objects, comma-separated, and how many this worker lists in all.
    Clients {
        total: usize,
        json: Vec<u8>,
    },
    /// Topic name, subscribers, dropped.
    Topics(Vec<(String, usize, u64)>),
    Count(usize),
    /// `None`: the connection named is not open here.
    Flag(Option<bool>),
    /// websockets_pro's get_clients: (peer address, token).
    Peers(Vec<(String, String)>),
    /// The answer of the topic's owner (its history, its presence): a JSON object, or an
    /// error's status and message.
    Owned(Result<Vec<u8>, (u16, String)>),
    Nothing,
}

/// `{"result":JSON}`, 200.
pub fn result_reply(json: &[u8]) -> Reply {
    let mut body = Vec::with_capacity(json.len() + 11);
    body.extend_from_slice(b"{\"result\":");
    body.extend_from_slice(json);
    body.push(b'}');
    Reply::json(body)
}
