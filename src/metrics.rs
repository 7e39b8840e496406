//! The server's counters, and their Prometheus text exposition (format 0.0.4) for `GET
//! /metrics` on the admin listener.
//!
//! Counting costs the hot path nothing measurable: counters are plain integers owned by the
//! loop (no atomics, no locks), bumped where an event already costs a syscall or more, and
//! per-route traffic is summed at scrape time from the connections' own counters (which the
//! access log keeps anyway) plus the totals of those that closed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::plugin::host::PluginFigures;

/// Counters the access line reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
}

/// Counters kept by the loop.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub accepted: u64,
    pub refused_capacity: u64,
    /// accept() failures for lack of descriptors (EMFILE, ENFILE...).
    pub refused_fd: u64,
    /// Responses to requests on the WebSocket listeners, by status (101: upgraded).
    pub handshakes: BTreeMap<u16, u64>,
    pub closes_sent: BTreeMap<u16, u64>,
    pub closes_received: BTreeMap<u16, u64>,
    pub ping_timeouts: u64,
    pub tls_handshakes: u64,
    pub tls_failures: u64,
    pub backend_connects: u64,
    pub backend_failures: u64,
    /// Backends that failed while connected (clients closed with 1011).
    pub backend_deaths: u64,
    /// Messages queued to subscribers by publishes (topics, rooms, feeds).
    pub deliveries: u64,
    /// Published messages skipped for slow subscribers (policy "drop").
    pub dropped: u64,
    /// Subscribers closed for being too slow (policy "close").
    pub slow_consumer_closes: u64,
    /// Broker messages routed, and the deliveries they made.
    pub broker_routed: u64,
    pub broker_deliveries: u64,
    /// Publications numbered and kept by topics with history (on their owners).
    pub history_appends: u64,
    /// History reads answered (positions, recovery pages, `history` requests).
    pub history_reads: u64,
    /// Publications delivered by recoveries.
    pub history_recovered: u64,
    /// Recoveries refused (`recovered:false`).
    pub history_unrecovered: u64,
    pub admin_requests: BTreeMap<u16, u64>,
    /// WebSockets opened with permessage-deflate negotiated.
    pub compressed_opens: u64,
    /// WebSockets opened with a legacy draft: hixie-76, hixie-75.
    pub legacy_opens: [u64; 2],
    /// Upgrades refused for their token (`auth = "jwt"`: missing, bad, expired, ...).
    pub auth_refusals: u64,
    /// Messages a legacy client could not be sent (not UTF-8: these drafts carry text only).
    pub legacy_dropped: u64,
    /// Plugin routes' upgrades whose `on_connect` did not return within the handshake
    /// timeout (answered 503).
    pub plugin_timeouts: u64,
    /// The application's answers (`[proxy]`), by question (connect, subscribe) and result
    /// ([`PROXY_RESULTS`]), and the time they took from submission.
    pub proxy: [[u64; 5]; 2],
    pub proxy_time: [Duration; 2],
    pub loop_iterations: u64,
    /// Nanoseconds from the end of one poll to the start of the next.
    pub busy_ns: u64,
    /// Traffic of closed connections, per route id (connections without a route carry no
    /// messages and are not counted here).
    pub closed_traffic: Vec<Traffic>,
    pub cluster: ClusterCounters,
}

impl Metrics {
    pub fn new(routes: usize) -> Metrics {
        Metrics { closed_traffic: vec![Traffic::default(); routes], ..Metrics::default() }
    }

    pub fn count(map: &mut BTreeMap<u16, u64>, code: u16) {
        *map.entry(code).or_insert(0) += 1;
    }

    /// Adds a closed connection's traffic to its route's totals.
    pub fn add_closed(&mut self, route: Option<usize>, t: &Traffic) {
        let Some(route) = route else { return };
        if self.closed_traffic.len() <= route {
            // A route of a reloaded configuration.
            self.closed_traffic.resize(route + 1, Traffic::default());
        }
        add_traffic(&mut self.closed_traffic[route], t);
    }
}

/// The results counted in `wsgate_proxy_requests_total`, in [`Metrics::proxy`]'s order.
pub const PROXY_RESULTS: [&str; 5] = ["allow", "deny", "busy", "timeout", "error"];

impl Metrics {
    /// Counts one of the application's answers.
    pub fn proxy_answered(&mut self, answer: &crate::auth::proxy::Answer) {
        let kind = usize::from(answer.kind == crate::auth::proxy::Kind::Subscribe);
        let result = answer.outcome.result();
        let at = PROXY_RESULTS.iter().position(|r| *r == result).unwrap_or(4);
        self.proxy[kind][at] += 1;
        self.proxy_time[kind] += answer.took;
    }
}

impl Metrics {
    /// Adds another worker's counters to these.
    pub fn absorb(&mut self, o: &Metrics) {
        self.accepted += o.accepted;
        self.refused_capacity += o.refused_capacity;
        self.refused_fd += o.refused_fd;
        for (into, from) in [
            (&mut self.handshakes, &o.handshakes),
            (&mut self.closes_sent, &o.closes_sent),
            (&mut self.closes_received, &o.closes_received),
            (&mut self.admin_requests, &o.admin_requests),
        ] {
            for (k, v) in from {
                *into.entry(*k).or_insert(0) += v;
            }
        }
        self.ping_timeouts += o.ping_timeouts;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_failures += o.tls_failures;
        self.backend_connects += o.backend_connects;
        self.backend_failures += o.backend_failures;
        self.backend_deaths += o.backend_deaths;
        self.deliveries += o.deliveries;
        self.dropped += o.dropped;
        self.slow_consumer_closes += o.slow_consumer_closes;
        self.broker_routed += o.broker_routed;
        self.broker_deliveries += o.broker_deliveries;
        self.history_appends += o.history_appends;
        self.history_reads += o.history_reads;
        self.history_recovered += o.history_recovered;
        self.history_unrecovered += o.history_unrecovered;
        self.compressed_opens += o.compressed_opens;
        self.legacy_opens[0] += o.legacy_opens[0];
        self.legacy_opens[1] += o.legacy_opens[1];
        self.auth_refusals += o.auth_refusals;
        for kind in 0..2 {
            for (into, from) in self.proxy[kind].iter_mut().zip(o.proxy[kind]) {
                *into += from;
            }
            self.proxy_time[kind] += o.proxy_time[kind];
        }
        self.legacy_dropped += o.legacy_dropped;
        self.loop_iterations += o.loop_iterations;
        self.busy_ns += o.busy_ns;
        if self.closed_traffic.len() < o.closed_traffic.len() {
            self.closed_traffic.resize(o.closed_traffic.len(), Traffic::default());
        }
        for (into, t) in self.closed_traffic.iter_mut().zip(&o.closed_traffic) {
            add_traffic(into, t);
        }
        self.cluster.absorb(&o.cluster);
    }
}

/// Pub/sub across nodes through Redis (`[cluster]`).
#[derive(Debug, Default, Clone)]
pub struct ClusterCounters {
    /// Messages published to Redis, and received from other nodes through it.
    pub published: u64,
    pub received: u64,
    /// Publishes lost because the link to Redis was down or its queue full (Redis pub/sub
    /// is at-most-once: these never reach the other nodes).
    pub publish_dropped: u64,
    /// Connections to Redis made again after one failed or went silent.
    pub reconnects: u64,
    /// Time the subscription link was not subscribed (messages from other nodes published
    /// meanwhile are lost).
    pub down: Duration,
    /// Subscription links found dead by the liveness probe.
    pub probe_failures: u64,
    /// Links up now (0–2 per worker).
    pub links_up: u64,
    /// Messages from Redis that were not wsgate's (or were malformed), ignored.
    pub malformed: u64,
}

impl ClusterCounters {
    fn absorb(&mut self, o: &ClusterCounters) {
        self.published += o.published;
        self.received += o.received;
        self.publish_dropped += o.publish_dropped;
        self.reconnects += o.reconnects;
        self.down += o.down;
        self.probe_failures += o.probe_failures;
        self.links_up += o.links_up;
        self.malformed += o.malformed;
    }
}

/// What one worker reports at scrape time (and, summed, the whole process).
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub worker: usize,
    pub metrics: Metrics,
    pub connections: usize,
    pub by_state: BTreeMap<&'static str, u64>,
    /// Per route index: open connections, and traffic (closed and open together).
    pub routes: Vec<(u64, Traffic)>,
    pub topics: usize,
    pub subscriptions: usize,
    /// The worker's ten busiest topics: name, subscribers, dropped.
    pub top_topics: Vec<(String, usize, u64)>,
    pub tokens_held: usize,
    pub pool_bytes: usize,
    /// Notes from other workers taken from this worker's inbox, and dropped at it (full).
    pub inbox_received: u64,
    pub inbox_dropped: u64,
    /// Per plugin route index, its plugin's figures (routes whose threads have started).
    pub plugins: Vec<(usize, PluginFigures)>,
}

impl Figures {
    /// Sums the workers' figures (topics: a topic with subscribers on two workers counts
    /// twice; the busiest topics are merged by name).
    pub fn sum(all: &[Figures]) -> Figures {
        let mut total = Figures::default();
        let mut top: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for f in all {
            total.metrics.absorb(&f.metrics);
            total.connections += f.connections;
            for (k, v) in &f.by_state {
                *total.by_state.entry(k).or_insert(0) += v;
            }
            if total.routes.len() < f.routes.len() {
                total.routes.resize(f.routes.len(), (0, Traffic::default()));
            }
            for (into, (open, t)) in total.routes.iter_mut().zip(&f.routes) {
                into.0 += open;
                add_traffic(&mut into.1, t);
            }
            total.topics += f.topics;
            total.subscriptions += f.subscriptions;
            for (name, subs, dropped) in &f.top_topics {
                let e = top.entry(name).or_default();
                e.0 += subs;
                e.1 += dropped;
            }
            total.tokens_held += f.tokens_held;
            total.pool_bytes += f.pool_bytes;
            total.inbox_received += f.inbox_received;
            total.inbox_dropped += f.inbox_dropped;
            for (route, p) in &f.plugins {
                match total.plugins.iter_mut().find(|(r, _)| r == route) {
                    Some((_, into)) => into.absorb(p),
                    None => total.plugins.push((*route, *p)),
                }
            }
        }
        total.plugins.sort_by_key(|(r, _)| *r);
        let mut top: Vec<(String, usize, u64)> = top.into_iter().map(|(n, (s, d))| (n.to_string(), s, d)).collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        top.truncate(10);
        total.top_topics = top;
        total
    }
}

pub fn add_traffic(into: &mut Traffic, t: &Traffic) {
    into.msgs_in += t.msgs_in;
    into.bytes_in += t.bytes_in;
    into.msgs_out += t.msgs_out;
    into.bytes_out += t.bytes_out;
}

/// What the loop knows only at scrape time.
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub uptime: Duration,
    /// Open connections by phase name.
    pub by_state: BTreeMap<&'static str, u64>,
    /// Per route (path, app): open connections and traffic (closed and open together).
    pub routes: Vec<(&'a str, &'static str, u64, Traffic)>,
    pub topics: usize,
    pub subscriptions: usize,
    pub broker_tokens_held: usize,
    pub broker_tokens_registered: usize,
    /// Per plugin route (path): its plugin's figures.
    pub plugins: Vec<(&'a str, PluginFigures)>,
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub pool_bytes: usize,
}

/// The plugin routes' figures (see `wsgate.toml(5)`, "Plugins").
fn render_plugins(o: &mut String, m: &Metrics, plugins: &[(&str, PluginFigures)]) {
    family(o, "wsgate_plugin_connects_total", "counter", "Connections given to a plugin's on_connect, by result.");
    for (route, p) in plugins {
        sample(o, "wsgate_plugin_connects_total", &[("route", route), ("result", "accepted")], p.connects - p.declined);
        sample(o, "wsgate_plugin_connects_total", &[("route", route), ("result", "declined")], p.declined);
    }
    family(o, "wsgate_plugin_timeouts_total", "counter", "Upgrades answered 503: on_connect did not return in time.");
    sample(o, "wsgate_plugin_timeouts_total", &[], m.plugin_timeouts);
    family(
        o,
        "wsgate_plugin_messages_total",
        "counter",
        "Messages given to on_message (in) and sent by plugins (out).",
    );
    for (route, p) in plugins {
        sample(o, "wsgate_plugin_messages_total", &[("route", route), ("direction", "in")], p.messages_in);
        sample(o, "wsgate_plugin_messages_total", &[("route", route), ("direction", "out")], p.messages_out);
    }
    type Pick = fn(&PluginFigures) -> u64;
    let per_route: [(&str, &str, &str, Pick); 3] = [
        (
            "wsgate_plugin_sends_refused_total",
            "counter",
            "Plugin sends refused: invalid for their type, the connection closed, or the worker's inbox full.",
            |p| p.sends_refused,
        ),
        (
            "wsgate_plugin_queue_jobs",
            "gauge",
            "Jobs (connects, messages, disconnects) waiting for plugin threads.",
            |p| p.queued,
        ),
        ("wsgate_plugin_callbacks_total", "counter", "Plugin callbacks run.", |p| p.callbacks),
    ];
    for (name, kind, help, pick) in per_route {
        family(o, name, kind, help);
        for (route, p) in plugins {
            sample(o, name, &[("route", route)], pick(p));
        }
    }
    family(o, "wsgate_plugin_callback_seconds_total", "counter", "Time spent in plugin callbacks.");
    for (route, p) in plugins {
        sample_f(o, "wsgate_plugin_callback_seconds_total", &[("route", route)], p.callback_nanos as f64 / 1e9);
    }
}

/// Prometheus text format 0.0.4: the process's totals, then per-worker figures (`workers`,
/// one entry per worker) and, with `cluster`, the Redis link's counters.
pub fn render(m: &Metrics, s: &Snapshot<'_>, workers: &[Figures], cluster: bool) -> String {
    let mut out = String::with_capacity(8192);
    let o = &mut out;
    family(o, "wsgate_build_info", "gauge", "The running build.");
    sample(o, "wsgate_build_info", &[("version", s.version)], 1);
    family(o, "wsgate_uptime_seconds", "gauge", "Seconds since the server started.");
    sample_f(o, "wsgate_uptime_seconds", &[], s.uptime.as_secs_f64());

    family(o, "wsgate_connections_open", "gauge", "Open client connections by state.");
    for state in
        ["opening", "handshaking", "sending", "connected", "flushing", "lingering", "handing-off", "handed-off"]
    {
        let n = s.by_state.get(state).copied().unwrap_or(0);
        sample(o, "wsgate_connections_open", &[("state", state)], n);
    }
    family(o, "wsgate_connections_accepted_total", "counter", "Client connections accepted.");
    sample(o, "wsgate_connections_accepted_total", &[], m.accepted);
    family(o, "wsgate_connections_refused_total", "counter", "Client connections refused, by reason.");
    sample(o, "wsgate_connections_refused_total", &[("reason", "capacity")], m.refused_capacity);
    sample(o, "wsgate_connections_refused_total", &[("reason", "emfile")], m.refused_fd);

    family(
        o,
        "wsgate_handshakes_total",
        "counter",
        "Requests answered on the WebSocket listeners, by HTTP status (101: upgraded).",
    );
    for (status, n) in &m.handshakes {
        sample(o, "wsgate_handshakes_total", &[("status", &status.to_string())], *n);
    }

    family(o, "wsgate_route_connections_open", "gauge", "Open connections per route.");
    for (path, app, open, _) in &s.routes {
        sample(o, "wsgate_route_connections_open", &[("route", path), ("app", app)], *open);
    }
    for (name, help, pick) in [
        ("wsgate_messages_received_total", "WebSocket messages received from clients, per route.", 0),
        ("wsgate_messages_sent_total", "WebSocket messages sent to clients, per route.", 1),
        ("wsgate_bytes_received_total", "WebSocket payload bytes received from clients, per route.", 2),
        ("wsgate_bytes_sent_total", "WebSocket payload bytes sent to clients, per route.", 3),
    ] {
        family(o, name, "counter", help);
        for (path, app, _, t) in &s.routes {
            let v = [t.msgs_in, t.msgs_out, t.bytes_in, t.bytes_out][pick];
            sample(o, name, &[("route", path), ("app", app)], v);
        }
    }

    family(o, "wsgate_close_codes_total", "counter", "WebSocket close codes, by who sent them.");
    for (side, map) in [("sent", &m.closes_sent), ("received", &m.closes_received)] {
        for (code, n) in map {
            sample(o, "wsgate_close_codes_total", &[("code", &code.to_string()), ("side", side)], *n);
        }
    }
    family(o, "wsgate_ping_timeouts_total", "counter", "Clients closed for not answering a ping.");
    sample(o, "wsgate_ping_timeouts_total", &[], m.ping_timeouts);

    family(o, "wsgate_tls_handshakes_total", "counter", "TLS handshakes, by result.");
    sample(o, "wsgate_tls_handshakes_total", &[("result", "ok")], m.tls_handshakes);
    sample(o, "wsgate_tls_handshakes_total", &[("result", "failed")], m.tls_failures);

    family(o, "wsgate_backend_connects_total", "counter", "Backend connections, by result.");
    sample(o, "wsgate_backend_connects_total", &[("result", "ok")], m.backend_connects);
    sample(o, "wsgate_backend_connects_total", &[("result", "failed")], m.backend_failures);
    family(o, "wsgate_backend_deaths_total", "counter", "Backends that failed while serving a client.");
    sample(o, "wsgate_backend_deaths_total", &[], m.backend_deaths);

    family(o, "wsgate_pubsub_topics", "gauge", "Topics with at least one subscriber.");
    sample(o, "wsgate_pubsub_topics", &[], s.topics as u64);
    family(o, "wsgate_pubsub_subscriptions", "gauge", "Subscriptions.");
    sample(o, "wsgate_pubsub_subscriptions", &[], s.subscriptions as u64);
    family(o, "wsgate_pubsub_deliveries_total", "counter", "Published messages queued to subscribers.");
    sample(o, "wsgate_pubsub_deliveries_total", &[], m.deliveries);
    family(o, "wsgate_pubsub_dropped_total", "counter", "Published messages skipped for slow subscribers.");
    sample(o, "wsgate_pubsub_dropped_total", &[], m.dropped);
    family(o, "wsgate_slow_consumer_closes_total", "counter", "Subscribers closed for being too slow.");
    sample(o, "wsgate_slow_consumer_closes_total", &[], m.slow_consumer_closes);

    family(o, "wsgate_broker_routed_total", "counter", "Broker messages routed to tokens.");
    sample(o, "wsgate_broker_routed_total", &[], m.broker_routed);
    family(o, "wsgate_broker_deliveries_total", "counter", "Deliveries made by routed broker messages.");
    sample(o, "wsgate_broker_deliveries_total", &[], m.broker_deliveries);
    for (name, help, v) in [
        ("wsgate_history_appends_total", "Publications numbered and kept by topics with history.", m.history_appends),
        (
            "wsgate_history_reads_total",
            "History reads answered (positions, recovery pages, history requests).",
            m.history_reads,
        ),
        ("wsgate_history_recovered_total", "Publications delivered by recoveries.", m.history_recovered),
        ("wsgate_history_unrecovered_total", "Recoveries refused (recovered:false).", m.history_unrecovered),
    ] {
        family(o, name, "counter", help);
        sample(o, name, &[], v);
    }
    family(o, "wsgate_broker_tokens", "gauge", "Broker tokens, held by clients or registered.");
    sample(o, "wsgate_broker_tokens", &[("kind", "held")], s.broker_tokens_held as u64);
    sample(o, "wsgate_broker_tokens", &[("kind", "registered")], s.broker_tokens_registered as u64);

    family(o, "wsgate_admin_requests_total", "counter", "Admin listener requests, by HTTP status.");
    for (status, n) in &m.admin_requests {
        sample(o, "wsgate_admin_requests_total", &[("status", &status.to_string())], *n);
    }

    family(o, "wsgate_compression_negotiated_total", "counter", "WebSockets opened with permessage-deflate.");
    sample(o, "wsgate_compression_negotiated_total", &[], m.compressed_opens);
    family(o, "wsgate_legacy_opens_total", "counter", "WebSockets opened with a legacy draft (route key legacy).");
    sample(o, "wsgate_legacy_opens_total", &[("draft", "hixie-76")], m.legacy_opens[0]);
    sample(o, "wsgate_legacy_opens_total", &[("draft", "hixie-75")], m.legacy_opens[1]);
    family(
        o,
        "wsgate_auth_refusals_total",
        "counter",
        "Upgrades refused for their token (missing, malformed, expired, bad signature) or by the application (auth = proxy).",
    );
    sample(o, "wsgate_auth_refusals_total", &[], m.auth_refusals);
    family(
        o,
        "wsgate_proxy_requests_total",
        "counter",
        "Requests to the application ([proxy]), by question and result (busy: the queue was full; timeout and error: no decision).",
    );
    family(o, "wsgate_proxy_seconds_total", "counter", "Time the application's answers took, queueing included.");
    for (k, kind) in ["connect", "subscribe"].into_iter().enumerate() {
        for (n, result) in m.proxy[k].iter().zip(PROXY_RESULTS) {
            sample(o, "wsgate_proxy_requests_total", &[("kind", kind), ("result", result)], *n);
        }
    }
    for (k, kind) in ["connect", "subscribe"].into_iter().enumerate() {
        sample_f(o, "wsgate_proxy_seconds_total", &[("kind", kind)], m.proxy_time[k].as_secs_f64());
    }
    family(
        o,
        "wsgate_rate_limited_total",
        "counter",
        "Times a rate limit was passed, by limit and what was done (drop, close, or dry_run: only counted).",
    );
    for (limit, action, n) in crate::rate_limit::passed() {
        sample(o, "wsgate_rate_limited_total", &[("limit", limit), ("action", action)], n);
    }
    family(
        o,
        "wsgate_legacy_dropped_total",
        "counter",
        "Messages not sent to legacy clients: not UTF-8 (these drafts carry text only).",
    );
    sample(o, "wsgate_legacy_dropped_total", &[], m.legacy_dropped);

    render_plugins(o, m, &s.plugins);

    family(o, "wsgate_loop_iterations_total", "counter", "Turns of the event loop.");
    sample(o, "wsgate_loop_iterations_total", &[], m.loop_iterations);
    family(o, "wsgate_loop_busy_seconds_total", "counter", "Time the loop spent working (not waiting in poll).");
    sample_f(o, "wsgate_loop_busy_seconds_total", &[], m.busy_ns as f64 / 1e9);
    family(o, "wsgate_buffer_pool_bytes", "gauge", "Bytes of free I/O buffers kept for reuse.");
    sample(o, "wsgate_buffer_pool_bytes", &[], s.pool_bytes as u64);

    family(o, "wsgate_workers", "gauge", "Reactor threads serving clients.");
    sample(o, "wsgate_workers", &[], workers.len() as u64);
    type Pick = fn(&Figures) -> u64;
    let per_worker: [(&str, &str, &str, Pick); 5] = [
        ("wsgate_worker_connections_open", "gauge", "Open connections per worker.", |f| f.connections as u64),
        ("wsgate_worker_connections_accepted_total", "counter", "Connections accepted per worker.", |f| {
            f.metrics.accepted
        }),
        ("wsgate_worker_loop_iterations_total", "counter", "Turns of each worker's event loop.", |f| {
            f.metrics.loop_iterations
        }),
        (
            "wsgate_worker_inbox_notes_total",
            "counter",
            "Notes from other workers (publishes, routed messages, admin queries) taken from each worker's inbox.",
            |f| f.inbox_received,
        ),
        (
            "wsgate_worker_inbox_dropped_total",
            "counter",
            "Publishes from other workers dropped at a full inbox.",
            |f| f.inbox_dropped,
        ),
    ];
    for (name, kind, help, pick) in per_worker {
        family(o, name, kind, help);
        for f in workers {
            sample(o, name, &[("worker", &f.worker.to_string())], pick(f));
        }
    }
    family(o, "wsgate_worker_loop_busy_seconds_total", "counter", "Time each worker's loop spent working.");
    for f in workers {
        sample_f(
            o,
            "wsgate_worker_loop_busy_seconds_total",
            &[("worker", &f.worker.to_string())],
            f.metrics.busy_ns as f64 / 1e9,
        );
    }
    family(o, "wsgate_worker_pubsub_topics", "gauge", "Topics with subscribers on each worker.");
    for f in workers {
        sample(o, "wsgate_worker_pubsub_topics", &[("worker", &f.worker.to_string())], f.topics as u64);
    }

    if cluster {
        let c = &m.cluster;
        family(
            o,
            "wsgate_cluster_links_up",
            "gauge",
            "Connections to Redis that are ready (two per worker when all is well).",
        );
        sample(o, "wsgate_cluster_links_up", &[], c.links_up);
        family(o, "wsgate_cluster_messages_total", "counter", "Messages through Redis, by direction.");
        sample(o, "wsgate_cluster_messages_total", &[("direction", "published")], c.published);
        sample(o, "wsgate_cluster_messages_total", &[("direction", "received")], c.received);
        family(
            o,
            "wsgate_cluster_publish_dropped_total",
            "counter",
            "Publishes that never reached Redis (link down or its queue full): other nodes lost them.",
        );
        sample(o, "wsgate_cluster_publish_dropped_total", &[], c.publish_dropped);
        family(o, "wsgate_cluster_reconnects_total", "counter", "Connections to Redis made again after a failure.");
        sample(o, "wsgate_cluster_reconnects_total", &[], c.reconnects);
        family(
            o,
            "wsgate_cluster_probe_failures_total",
            "counter",
            "Subscription links found silent by the liveness probe.",
        );
        sample(o, "wsgate_cluster_probe_failures_total", &[], c.probe_failures);
        family(
            o,
            "wsgate_cluster_unsubscribed_seconds_total",
            "counter",
            "Time subscription links were down (summed over workers): what other nodes published then was lost.",
        );
        sample_f(o, "wsgate_cluster_unsubscribed_seconds_total", &[], c.down.as_secs_f64());
        family(
            o,
            "wsgate_cluster_malformed_total",
            "counter",
            "Messages on wsgate's channels that were not wsgate's, ignored.",
        );
        sample(o, "wsgate_cluster_malformed_total", &[], c.malformed);
    }

    if let Some(rss) = s.rss_bytes {
        family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        sample(o, "process_resident_memory_bytes", &[], rss);
    }
    if let Some(fds) = s.open_fds {
        family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
        sample(o, "process_open_fds", &[], fds);
    }
    if let Some(max) = s.max_fds {
        family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        sample(o, "process_max_fds", &[], max);
    }
    out
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn labels(o: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    o.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(k);
        o.push_str("=\"");
        // Label values escape backslash, double quote and newline (format 0.0.4).
        for c in v.chars() {
            match c {
                '\\' => o.push_str("\\\\"),
                '"' => o.push_str("\\\""),
                '\n' => o.push_str("\\n"),
                c => o.push(c),
            }
        }
        o.push('"');
    }
    o.push('}');
}

fn sample(o: &mut String, name: &str, l: &[(&str, &str)], v: u64) {
    o.push_str(name);
    labels(o, l);
    let _ = writeln!(o, " {v}");
}

fn sample_f(o: &mut String, name: &str, l: &[(&str, &str)], v: f64) {
    o.push_str(name);
    labels(o, l);
    let _ = writeln!(o, " {v}");
}

/// This process's resident memory (Linux /proc).
pub fn rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * crate::sys::memory::page_size())
}

/// Open descriptors and their limit, when known.
pub type FdFigures = (Option<u64>, Option<u64>);

/// This process's open descriptors and their limit. Counting reads /proc/self/fd, which
/// takes a few milliseconds at tens of thousands of descriptors: for scrapes, not for the
/// dashboard's once-a-second figures.
pub fn fd_figures() -> FdFigures {
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64);
    (fds, crate::sys::rlimit::nofile_soft())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut o = String::new();
        sample(&mut o, "x", &[("route", "/a\"b\\c\nd")], 3);
        assert_eq!(o, "x{route=\"/a\\\"b\\\\c\\nd\"} 3\n");
    }
}
