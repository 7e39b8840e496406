//! The reactors. A [`Server`] is `workers` threads, each running a [`Worker`]: one
//! `mio::Poll`, its listeners, a `Slab<Connection>`, its timers, buffer pools and topics.
//! A worker is single-threaded and owns everything it serves; workers reach each other only
//! through the notes of [`mesh`]. Worker 0 also owns the signals, the admin listener and the
//! broker's token loader.
//!
//! One turn of the loop: poll (timeout = earliest deadline) → dispatch events to connections
//! → serve connections whose read budget ran out last turn → fire due timers → remove closed
//! connections (close-after-batch) → accept new ones (accept-after-batch). A slab key is never
//! freed and reused inside one batch, and every token also carries a generation, so a stale
//! event can never reach a new connection in a reused slot.
//!
//! Where things are: this file has the loop (the turn above, driving connections and doing
//! what they leave for it); [`seed`](self) starts a worker; `accept` binds and admits;
//! `fanout` publishes and delivers; `lifecycle` has the clocks, signals, reload and drain;
//! `manage` executes admin commands (their rendering is `admin::render`); [`mesh`] carries
//! notes between workers. Connection ids are [`crate::conn_id`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

mod accept;
mod builder;
pub(crate) mod fanout;
mod lifecycle;
mod manage;
pub mod mesh;
mod presence;
mod recovery;
mod seed;
mod streams;
mod timers;
mod turn_clock;

use crate::access_log::AccessLogFile;
use crate::apps::dashboard::ACCESS_FEED;
use crate::apps::Action;
use crate::broker::tokens::Fetcher;
use crate::broker::Broker;
use crate::buffer::Pools;
use crate::cluster::{Cluster, PUB_TOKEN, SUB_TOKEN};
use crate::config::{Balance, Config};
use crate::conn_id::{self, key_of};
use crate::connection::{AdminSettings, Answered, Connection, Ctx, Departure, Progress, Ready, Turn};
use crate::encode::{shared_frame, SharedFrame};
use crate::io_step::IoStep;
use crate::limits::Limits;
use crate::logview::Tails;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::route::{AppKind, Route};
use crate::ws::frame::Opcode;
use accept::{Accepted, ListenSocket, Listener};
pub use builder::{Builder, Stopper};
use mesh::{Mailbox, Mesh, Note};
use seed::{Binding, Seed};
use turn_clock::Stamped;

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// The token loader thread's wake-ups.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 2;
const MAX_LISTENERS: usize = 1024;
// Every slab key (admitted connections and those being refused) fits the timers' key bits.
const _: () = assert!(crate::config::MAX_CONNECTIONS + 2 * accept::ACCEPT_BATCH <= timers::MAX_KEYS);
/// Most slab entries reserved up front (address space only, a few hundred MiB at most).
const MAX_RESERVED: usize = 1 << 20;

/// A connection and the loop's bookkeeping for it.
struct Entry {
    conn: Connection,
    /// The timer armed for this connection (see [`timers`]), 0 when none.
    timer_at: timers::Armed,
    /// Others queued output for it this turn; it is flushed once, after the events.
    dirty: bool,
    /// On the busy list: driven again after the events (a flag, so that a list of thousands
    /// is not searched on every drive).
    busy: bool,
    /// Its last drive said it is done: removed after the batch, never driven again.
    closed: bool,
}

impl Entry {
    /// Queues the connection (slab `key`) for the end-of-turn write, once per turn.
    fn mark_dirty(&mut self, key: usize, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(key);
        }
    }
}

/// Reads the configuration again (the file, then the command line's overrides) for SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send>;

/// A bound, not yet running server: its workers, each with its listeners bound.
pub struct Server {
    seeds: Vec<Seed>,
    /// The broker's registered tokens, read at start before anyone connects (later loads
    /// run off the loop).
    tokens: Option<crate::broker::tokens::TokenSet>,
}

impl Server {
    /// Binds every worker's listeners and installs the signal handlers. With `workers > 1`
    /// and `balance = "reuseport"` each worker binds its own `SO_REUSEPORT` socket on every
    /// address (worker 0 first, so port 0 resolves once); with `"handoff"` only worker 0 binds
    /// and hands accepted sockets on.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let n = config.workers.max(1);
        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            wakers.push(Arc::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?));
            polls.push(poll);
        }
        let (mesh, mailboxes) = Mesh::new(wakers.clone());
        let config = Arc::new(config.clone());
        let node = node_id();
        if let Some(c) = &config.cluster {
            log::info!("cluster: node {node:016x}, channels {:?}* on {}", c.prefix, c.redis);
        }
        let mut seeds: Vec<Seed> = Vec::with_capacity(n);
        for ((poll, waker), mailbox) in polls.into_iter().zip(wakers).zip(mailboxes) {
            let binding = match seeds.first() {
                None => Binding::Configured,
                Some(_) if config.balance == Balance::Handoff => Binding::None,
                Some(first) => Binding::Same(first.listeners.iter().filter(|l| !l.admin).map(|l| l.addr).collect()),
            };
            seeds.push(Seed::bind(&config, poll, waker, mailbox, Arc::clone(&mesh), binding, node)?);
        }
        let tokens = config.broker.tokens.as_ref().and_then(|source| {
            match crate::broker::tokens::load(source, config.broker.tokens_timeout, config.broker.tokens_max_size) {
                Ok(set) => {
                    log::info!("broker: {} registered token(s) from {source}", set.values().filter(|v| **v).count());
                    Some(set)
                }
                Err(e) => {
                    log::error!("broker: tokens from {source}: {e}; starting with no registered tokens");
                    None
                }
            }
        });
        if let Some(jwt) = &config.jwt {
            jwt.start_fetcher(true);
        }
        Ok(Server { seeds, tokens })
    }

    /// The WebSocket listeners' addresses actually bound (port 0 resolved), with whether
    /// each is TLS.
    /// How SIGHUP reads the configuration again (without it, SIGHUP reloads certificates,
    /// the access log and the broker's tokens only).
    pub fn reload_with(&mut self, reload: Reloader) {
        self.seeds[0].reload = Some(reload);
    }

    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.seeds[0].listeners.iter().filter(|l| !l.admin).map(|l| (l.addr, l.tls.is_some())).collect()
    }

    /// The admin listener's address (`http://127.0.0.1:9090/` or `unix:/path`), if configured.
    pub fn admin_url(&self) -> Option<String> {
        self.seeds[0].listeners.iter().find(|l| l.admin).map(|l| match &l.socket {
            ListenSocket::Tcp(_) => format!("http://{}/", l.addr),
            ListenSocket::Unix { path, .. } => format!("unix:{}", path.display()),
        })
    }

    /// Runs every worker until a SIGTERM / SIGINT drain completes: worker 0 on this thread,
    /// the others on threads of their own.
    pub fn run(self) -> io::Result<()> {
        let mut seeds = self.seeds.into_iter();
        let Some(first) = seeds.next() else { return Ok(()) };
        let mut threads = Vec::new();
        for seed in seeds {
            let name = format!("wsgate-w{}", seed.mailbox.index);
            let tokens = self.tokens.clone();
            threads.push(std::thread::Builder::new().name(name).spawn(move || seed.start(tokens).run())?);
        }
        let mut result = first.start(self.tokens).run();
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(io::Error::other("a worker thread panicked"))),
            }
        }
        // Every worker has stopped: the plugins' destroy functions, once each.
        crate::plugin::load::destroy_all();
        result
    }
}

/// One reactor thread.
pub struct Worker {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Entry>,
    /// The plugin routes' threads. Declared after `conns`, so dropped after them: a stopping
    /// worker's connections post their disconnects before the threads are waited for.
    plugins: crate::plugin::Hosts,
    /// Numbers the occupants of slab slots (see [`conn_id`]).
    generation: u64,
    /// One entry per armed connection; stale entries are skipped (see `fire_timers`).
    timers: timers::Timers,
    /// Connections whose read budget ran out: served again next turn.
    busy: Vec<usize>,
    /// Connections that others queued output for this turn.
    dirty: Vec<usize>,
    closed: Vec<usize>,
    /// What the connection being driven asked for (kept for its capacity).
    actions: Vec<Action>,
    topics: Topics,
    /// The histories of the topics this worker owns.
    histories: crate::history::Histories,
    /// The presence of the topics this worker owns.
    presence: crate::presence::Table,
    /// The topics each of this worker's connections is in the presence of, by slab key.
    presence_of: std::collections::HashMap<usize, Vec<Arc<str>>>,
    /// A recovery's client has room for its next page: the next poll does not wait.
    recovery_ready: bool,
    /// Across nodes: reads and barriers in flight, topics served from their channels.
    streams: streams::Streams,
    routes: Routes,
    limits: Arc<Limits>,
    max_connections: usize,
    pools: Pools,
    trim_memory: bool,
    /// Where access lines go when not to the log (`access_log`).
    access_file: Option<AccessLogFile>,
    /// When the buffer pools next shrink to what was used since (and memory is given back),
    /// as [`crate::stamp::millis`]: the loop compares it every turn.
    housekeeping_ms: i64,
    backend_failures: crate::backend::FailureLog,
    /// Worker 0's.
    signals: Option<Signals>,
    /// Accepting waits until then (descriptors ran out), as `housekeeping_ms`.
    accept_paused_ms: Option<i64>,
    /// Set on SIGTERM / SIGINT: the time by which the server exits regardless, as
    /// `housekeeping_ms`.
    drain_ms: Option<i64>,
    /// A second stop signal: exit at the end of this turn.
    exit_now: bool,
    broker: Broker,
    /// Loads the broker's registered tokens off the loop (`[broker] tokens`).
    token_fetcher: Option<Fetcher>,
    tokens_refresh: Option<Duration>,
    /// When the registered tokens are next loaded again, as `housekeeping_ms`.
    tokens_refresh_ms: Option<i64>,
    /// Wakes the loop from helper threads; kept alive here.
    _waker: Arc<mio::Waker>,
    metrics: Metrics,
    admin: Option<AdminSettings>,
    /// The files log viewers follow, and when they are next read (as `housekeeping_ms`).
    tails: Tails,
    tails_ms: i64,
    /// When the dashboard's figures are next published (while someone watches), as
    /// `housekeeping_ms`: the loop compares it every turn.
    stats_ms: i64,
    started: Instant,
    /// Scratch for a delivery's receivers (kept for its capacity).
    scratch_keys: Vec<usize>,
    /// The capacity `busy`, `dirty` and `closed` swap with when walked (see [`Worker::walk`]).
    spare_keys: Vec<usize>,
    /// The last count of open descriptors and the limit, and when it was taken.
    fd_figures_cache: std::cell::Cell<Option<(Instant, crate::metrics::FdFigures)>>,
    /// Set while accept() fails for lack of descriptors; logged once per episode.
    fd_exhausted: bool,
    /// This worker's inbox, and every worker's.
    mailbox: Mailbox,
    /// Notes taken from the inbox, being handled (kept for its capacity).
    notes: Vec<Note>,
    mesh: Arc<Mesh>,
    /// Worker 0 with `balance = "handoff"`: accepted sockets go to the least loaded worker.
    hands_off: bool,
    /// Admin requests and dashboard updates waiting for other workers' parts.
    gathers: std::collections::HashMap<u64, manage::Gather>,
    next_gather: u64,
    /// Nobody to exclude, shared (a publish that crosses to other workers clones it).
    no_ids: Arc<[u64]>,
    /// The links to Redis (`[cluster]`).
    cluster: Option<Cluster>,
    /// permessage-deflate's codecs shared by the connections without context takeover.
    codecs: crate::ws::deflate::SharedCodecs,
    /// Worker 0's way to read the configuration again.
    reload: Option<Reloader>,
    /// The configuration in force.
    config: Arc<Config>,
    /// The turn's instant, converted once (see [`Worker::clock`]).
    stamped: Stamped,
    /// What the loop reads the time with, twice a turn.
    loop_clock: crate::stamp::LoopClock,
}

impl Worker {
    /// Runs until a SIGTERM / SIGINT drain completes.
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // The time is read when the poll returns (`woke_ns`, the turn's `now`) and when the
        // turn's work is done: the difference is the loop's busy time.
        let mut woke_ns = self.loop_clock.read();
        let mut woke = self.clock_at(woke_ns);
        loop {
            let done_ns = self.loop_clock.read();
            self.metrics.loop_iterations += 1;
            let spent_ns = (done_ns - woke_ns).max(0) as u64;
            self.metrics.busy_ns += spent_ns;
            if self.exit_now {
                log::warn!("second stop signal: exiting now");
                return Ok(());
            }
            if let Some(deadline_ms) = self.drain_ms {
                if self.conns.is_empty() {
                    log::info!("worker {} drained: all connections closed", self.mailbox.index);
                    return Ok(());
                }
                if self.loop_clock.at(done_ns).2 >= deadline_ms {
                    log::warn!(
                        "drain timeout: worker {} closing {} remaining connection(s)",
                        self.mailbox.index,
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
            // Deadlines are read against the turn's `woke` (converted already, for the
            // connections it drove); what the turn took comes off.
            let timeout = self.poll_timeout(woke.at, woke.ms, spent_ns);
            match IoStep::of(self.poll.poll(&mut events, timeout)) {
                IoStep::Done(()) | IoStep::End => {}
                IoStep::Retry | IoStep::WouldBlock => {
                    // Interrupted (a signal): the time since `woke` was waiting, not work.
                    woke_ns = self.loop_clock.read();
                    woke = self.clock_at(woke_ns);
                    continue;
                }
                IoStep::Failed(e) => return Err(e),
            }
            woke_ns = self.loop_clock.read();
            woke = self.clock_at(woke_ns);
            let now = woke.at;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => self.on_signals(now),
                    WAKER_TOKEN => {
                        self.tokens_loaded();
                        self.take_notes(now);
                    }
                    token @ (SUB_TOKEN | PUB_TOKEN) => self.on_cluster(token, now),
                    Token(t) if t > LISTENER_BASE - MAX_LISTENERS => {
                        if let Some(l) = self.listeners.get_mut(LISTENER_BASE - t) {
                            l.pending = true;
                        }
                    }
                    token => {
                        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                        self.on_ready(token, readable, writable, woke);
                    }
                }
            }
            if self.mailbox.more {
                self.take_notes(now);
            }
            self.serve_busy(now);
            self.fire_timers(now, woke.ms);
            self.flush_dirty(now);
            self.remove_closed(now);
            self.accept(now);
            self.mesh.set_load(self.mailbox.index, self.conns.len());
            if woke.ms >= self.housekeeping_ms {
                self.housekeeping(now);
            }
            self.periodic(now, woke.ms);
            self.cluster_turn(now);
            self.recovery_turn(now);
        }
    }

    /// Runs connection `key` with a context (`f` gets the connection and the context), then
    /// does what the run left for the loop: its actions, its timer, closing.
    pub(super) fn run_conn(&mut self, key: usize, now: Instant, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Turn) {
        let at = self.clock(now);
        self.run_conn_at(key, at, f);
    }

    /// [`Worker::run_conn`] at an instant converted already (the turn's, for its events).
    #[inline(always)]
    fn run_conn_at(&mut self, key: usize, at: Stamped, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Turn) {
        let (now, stamp) = (at.at, at.stamp);
        let Some(entry) = self.conns.get_mut(key) else { return };
        if entry.closed {
            return;
        }
        let mut ctx = Ctx {
            now,
            stamp,
            routes: &self.routes,
            limits: &self.limits,
            pools: &mut self.pools,
            backend_failures: &mut self.backend_failures,
            topics: &mut self.topics,
            broker: &mut self.broker,
            metrics: &mut self.metrics,
            admin: self.admin.as_ref(),
            plugins: Some(&mut self.plugins),
            actions: &mut self.actions,
            codecs: &mut self.codecs,
            fanout: 0,
            publish_spreads: self.mesh.workers() > 1 || self.cluster.is_some(),
        };
        let turn = f(&mut entry.conn, &mut ctx);
        match entry.conn.take_response() {
            Some(Answered::Handshake(status)) => Metrics::count(&mut self.metrics.handshakes, status),
            Some(Answered::Admin(status)) => Metrics::count(&mut self.metrics.admin_requests, status),
            None => {}
        }
        if !self.actions.is_empty() {
            // Taken out while applied (applying needs the worker); its capacity comes back.
            let mut actions = std::mem::take(&mut self.actions);
            for action in actions.drain(..) {
                self.apply(key, action, now);
            }
            self.actions = actions;
        }
        self.after_drive(key, turn, now);
    }

    /// Runs the connection with id `id`, if it is still there.
    fn run_by_id(&mut self, id: u64, now: Instant, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Turn) {
        let key = key_of(id);
        if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
            self.run_conn(key, now, f);
        }
    }

    fn on_ready(&mut self, token: Token, readable: bool, writable: bool, woke: Stamped) {
        let (id, app_socket) = conn_id::from_token(token.0);
        let key = key_of(id);
        let Some(entry) = self.conns.get(key) else { return };
        if entry.conn.id() != id {
            return; // stale: the slot's connection is gone
        }
        // Nothing queued for it by others yet this turn: its own output goes out at once.
        let write_after = !entry.dirty;
        let ready = if app_socket {
            Ready { app_readable: readable, app_writable: writable, corked: true, write_after, ..Ready::default() }
        } else {
            Ready { readable, writable, corked: true, write_after, ..Ready::default() }
        };
        self.run_conn_at(key, woke, |conn, ctx| conn.drive(ctx, ready));
    }

    /// Does what a connection's app asked for.
    pub(super) fn apply(&mut self, key: usize, action: Action, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let app_token = Token(conn_id::app_socket_token(id));
        match action {
            Action::Register { fd, interest } => {
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), app_token, interest) {
                    log::warn!("cannot register a backend socket: {e}");
                }
            }
            Action::Reregister { fd, interest } => {
                if let Err(e) = self.poll.registry().reregister(&mut SourceFd(&fd), app_token, interest) {
                    log::warn!("cannot watch a backend socket: {e}");
                }
            }
            Action::Publish { topic, frame, exclude, exclude_ids, .. } if self.topics.has_history(&topic) => {
                let ids = match (exclude, exclude_ids.is_empty()) {
                    (None, true) => Arc::clone(&self.no_ids),
                    (None, false) => exclude_ids.into(),
                    (Some(_), _) => exclude_ids.iter().copied().chain([id]).collect(),
                };
                self.publish_numbered(topic, frame, ids, now);
            }
            Action::Recover { topic, serial } => self.start_recovery(key, topic, serial, now),
            Action::History { topic, read } => self.ask_history(key, topic, recovery::Asked::Read, read, now),
            Action::Join { topic, user, info } => self.join_presence(key, topic, user, info, now),
            Action::Leave { topic } => self.leave_presence(key, &topic, now),
            Action::Presence { topic, ask } => self.ask_presence(key, topic, ask, now),
            Action::Publish { topic, frame, exclude, exclude_ids, found } => {
                // The id found when the app published spares a second lookup, if still its.
                match found.filter(|&id| self.topics.is_named(id, &topic)) {
                    Some(id) => self.publish_to(id, &frame, exclude, &exclude_ids, now),
                    None => self.publish(&topic, &frame, exclude, &exclude_ids, now),
                }
                self.spread_publish(&topic, &frame, exclude_ids);
                if let Some(cluster) = &mut self.cluster {
                    cluster.publish(&topic, &frame, now);
                }
            }
            Action::SendTo { id, frame } => self.send_to(id, frame, now),
            Action::Route { keys, receivers, frame } => {
                self.metrics.broker_routed += 1;
                self.route_message(&keys, &frame, now);
                if let Some(receivers) = receivers {
                    if let Some(cluster) = &mut self.cluster {
                        cluster.route(&receivers, &frame, now);
                    }
                    self.spread_route(receivers.into(), &frame);
                }
            }
            Action::Backlog(spec) => {
                let frames: Vec<SharedFrame> =
                    spec.files.iter().flat_map(|path| self.tails.backlog(path, spec.backlog)).cloned().collect();
                for frame in frames {
                    self.deliver(key, &frame, now);
                }
            }
            Action::Admin(request) => self.manage(key, *request, now),
            Action::AskProxy { proxy, kind, seq, body } => {
                let (mesh, worker) = (Arc::clone(&self.mesh), self.mailbox.index);
                proxy.submit(
                    kind,
                    body,
                    now,
                    Box::new(move |answer| {
                        mesh.post(worker, Note::Proxied { id, seq, answer });
                    }),
                );
            }
        }
    }

    /// Takes what other workers sent (a batch per turn), and writes what it queued.
    pub(super) fn take_notes(&mut self, now: Instant) {
        let mesh = Arc::clone(&self.mesh);
        let mut notes = std::mem::take(&mut self.notes);
        mesh.take(&mut self.mailbox, |note| notes.push(note));
        for note in notes.drain(..) {
            self.on_note(note, now);
        }
        self.notes = notes;
        self.flush_dirty(now);
    }

    pub(super) fn on_note(&mut self, note: Note, now: Instant) {
        match note {
            Note::Publish { topic, frame, exclude_ids } | Note::Numbered { topic, frame, exclude_ids } => {
                self.publish(&topic, &frame, None, &exclude_ids, now)
            }
            Note::Number { topic, frame, exclude_ids } => self.publish_numbered(topic, frame, exclude_ids, now),
            Note::HistoryAsk { from, id, topic, asked, read } => {
                let answer = self.answer_history(&topic, asked, &read, now);
                self.mesh.post(from, Note::HistoryAnswer { id, topic, asked, answer });
            }
            Note::HistoryAnswer { id, topic, asked, answer } => {
                self.history_answered(id, topic, asked, answer, now);
                self.flush_dirty(now);
            }
            Note::Presence { topic, change } => self.presence_changed(topic, change, now),
            Note::PresenceAsk { id, topic, ask } => self.answer_presence(id, &topic, &ask, now),
            Note::PresenceAnswer { id, body } => self.presence_answered(id, &body, now),
            Note::Route { receivers, frame } => {
                let mut keys = std::mem::take(&mut self.scratch_keys);
                self.broker.receivers(&receivers, &mut keys);
                self.route_message(&keys, &frame, now);
                self.scratch_keys = keys;
            }
            Note::SendTo { id, frame } => self.send_to(id, frame, now),
            Note::PluginSend { id, frame } => self.plugin_send(id, &frame, now),
            Note::PluginOpened { id, answer } => {
                self.run_by_id(id, now, |conn, ctx| conn.plugin_answered(ctx, answer));
            }
            Note::Proxied { id, seq, answer } => {
                self.metrics.proxy_answered(&answer);
                self.run_by_id(id, now, |conn, ctx| match seq {
                    0 => conn.proxy_answered(ctx, answer.outcome),
                    seq => conn.app_proxy_answered(ctx, seq, answer.outcome),
                });
            }
            Note::PluginClose { id, code, reason } => {
                self.run_by_id(id, now, |conn, ctx| conn.disconnect(ctx, code, reason));
            }
            Note::PluginFlushed { id } => {
                // The close frame the client is owed (held while the plugin caught up).
                self.run_by_id(id, now, |conn, ctx| conn.disconnect(ctx, 1000, String::new()));
            }
            Note::PluginResume { id } => {
                self.run_by_id(id, now, |conn, ctx| conn.drive(ctx, Ready { corked: true, ..Ready::default() }));
            }
            // A socket handed over as this worker began draining: closed, never served.
            Note::Adopt { .. } if self.drain_ms.is_some() => self.mesh.release_one(),
            Note::Adopt { stream, peer, tls } => self.admit(Accepted::Tcp(stream), peer, tls, false, true, now),
            Note::Ask { gather, from, query } => {
                let part = self.part(&query, now);
                self.mesh.post(from, Note::Answer { gather, worker: self.mailbox.index, part });
            }
            Note::Answer { gather, worker, part } => self.gathered(gather, worker, part, now),
            Note::Tokens(set) => self.broker.replace_registered((*set).clone()),
            Note::Reload(fresh) => self.reload(fresh, now),
            Note::Drain => {
                if self.drain_ms.is_none() {
                    self.start_drain(now);
                }
            }
            Note::Exit => self.exit_now = true,
        }
    }

    /// What the loop does after a connection ran: queue for closing, for another turn, for
    /// the end-of-turn write, and (re)arm its timer.
    // Forced inline (plain #[inline] left it out of line): after every drive, a call that
    // sets a flag or two and compares the armed timer's 32 bits.
    #[inline(always)]
    pub(super) fn after_drive(&mut self, key: usize, Turn { progress, deadline }: Turn, now: Instant) {
        let Some(entry) = self.conns.get_mut(key) else { return };
        if progress == Progress::Closed {
            if !entry.closed {
                entry.closed = true;
                self.closed.push(key);
            }
            return;
        }
        if matches!(progress, Progress::Busy | Progress::Again) && !entry.busy {
            entry.busy = true;
            self.busy.push(key);
        }
        // Written at the end of this turn (a Busy one too: it read a lot, so queued a lot).
        if matches!(progress, Progress::Write | Progress::Busy) {
            entry.mark_dirty(key, &mut self.dirty);
        }
        // One timer entry per connection, at or before its deadline; a deadline that moved
        // later is found when the entry fires and re-armed then.
        if let Some(deadline) = deadline {
            entry.timer_at = self.timers.arm(key, deadline, entry.timer_at, now);
        }
    }

    pub(super) fn serve_busy(&mut self, now: Instant) {
        if self.busy.is_empty() {
            return;
        }
        let busy = Worker::walk(&mut self.busy, &mut self.spare_keys);
        for &key in &busy {
            let Some(entry) = self.conns.get_mut(key) else { continue };
            entry.busy = false;
            self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready { corked: true, ..Ready::default() }));
        }
        self.walked(busy);
    }

    /// A per-turn list of keys to walk, the spare capacity left in its place: what is
    /// pushed meanwhile goes there, and no turn allocates for its lists.
    pub(super) fn walk(list: &mut Vec<usize>, spare: &mut Vec<usize>) -> Vec<usize> {
        std::mem::replace(list, std::mem::take(spare))
    }

    /// A walked list's capacity becomes the spare.
    pub(super) fn walked(&mut self, mut keys: Vec<usize>) {
        keys.clear();
        self.spare_keys = keys;
    }

    /// The end of a turn's batch: closed connections go, what their going queued is written,
    /// and the access lines are flushed. Inlined: most turns close nothing.
    #[inline(always)]
    pub(super) fn remove_closed(&mut self, now: Instant) {
        if !self.closed.is_empty() {
            self.remove_all_closed(now);
        }
        if !self.dirty.is_empty() {
            self.flush_dirty(now);
        }
        if let Some(file) = &mut self.access_file {
            file.flush();
        }
    }

    fn remove_all_closed(&mut self, now: Instant) {
        let closed = Worker::walk(&mut self.closed, &mut self.spare_keys);
        for &key in &closed {
            if self.conns.get(key).is_some_and(|e| e.closed) {
                self.remove_one(key, now);
            }
        }
        self.walked(closed);
    }

    /// Takes a closed connection out of the slab and of everything that knows it, and
    /// writes its access line.
    fn remove_one(&mut self, key: usize, now: Instant) {
        let mut entry = self.conns.remove(key);
        // The client socket may now be shared with a backend (direct hand-off): epoll
        // keys on the open file, so it must be deregistered, not just closed. The app's
        // own socket is closed when the app is dropped, which removes it.
        if let Some(source) = entry.conn.source_mut() {
            let _ = self.poll.registry().deregister(source);
        }
        self.leave_all_presence(key, entry.conn.id(), now);
        self.topics.remove_connection(key);
        self.broker.release(key);
        self.mesh.release_one();
        let departure = entry.conn.depart(now, &mut self.pools, &mut self.codecs, &self.routes);
        self.count_closed(&departure);
        let line = departure.access_line;
        // The dashboard (on worker 0) shows every worker's access lines.
        let watched_here = self.topics.has_feed(ACCESS_FEED);
        if watched_here || (self.mailbox.index != 0 && self.mesh.access_watched()) {
            let mut body = b"{\"type\":\"access\",\"line\":".to_vec();
            let _ = serde_json::to_writer(&mut body, &line);
            body.push(b'}');
            let frame = shared_frame(Opcode::Text, &body);
            if watched_here {
                self.publish(ACCESS_FEED, &frame, None, &[], now);
            } else {
                let topic: Arc<str> = ACCESS_FEED.into();
                let exclude_ids = Arc::clone(&self.no_ids);
                self.mesh.post(0, Note::Publish { topic, frame, exclude_ids });
            }
        }
        match &mut self.access_file {
            Some(file) => file.line(&line),
            None => log::info!(target: "wsgate::access", "{line}"),
        }
    }

    /// What a closed connection adds to the metrics.
    pub(super) fn count_closed(&mut self, departure: &Departure) {
        if let Some(code) = departure.close_sent {
            Metrics::count(&mut self.metrics.closes_sent, code);
        }
        if let Some(code) = departure.close_received {
            Metrics::count(&mut self.metrics.closes_received, code);
        }
        self.metrics.tls_failures += u64::from(departure.tls_failed);
        self.metrics.add_closed(departure.route, &departure.traffic);
    }
}

/// This process's id among the nodes of a cluster: random, so two processes on one host (or
/// one restarted) never share it.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// What every worker knows of the admin listener: its keys, the dashboard's route, the files
/// the log viewers follow.
fn admin_settings(config: &Config, admin: &crate::admin::config::AdminConfig) -> AdminSettings {
    let mut route = Route::new("/ws", AppKind::Dashboard, config.limits);
    // The dashboard's page connects from the admin listener's own origin.
    route.limits = Arc::new(Limits { idle_timeout: Duration::ZERO, ..config.limits }.settled());
    let mut log_files: Vec<std::path::PathBuf> =
        config.routes.iter().filter_map(|r| r.logview.as_ref()).flat_map(|l| l.files.clone()).collect();
    log_files.sort();
    log_files.dedup();
    AdminSettings { config: admin.clone(), route, log_files: log_files.into() }
}
