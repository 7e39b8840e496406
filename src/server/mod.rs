//! The reactor: one `mio::Poll`, the listeners, a `Slab<Connection>`, the timers and the
//! signals. Single-threaded; it owns everything.
//!
//! One turn of the loop: poll (timeout = earliest deadline) → dispatch events to connections
//! → serve connections whose read budget ran out last turn → fire due timers → remove closed
//! connections (close-after-batch) → accept new ones (accept-after-batch). A slab key is never
//! freed and reused inside one batch, and every token also carries a generation, so a stale
//! event can never reach a new connection in a reused slot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::{Domain, Socket, Type};

mod manage;

use crate::access_log::AccessLogFile;
use crate::apps::dashboard::{ACCESS_FEED, STATS_FEED};
use crate::apps::Action;
use crate::broker::tokens::Fetcher;
use crate::broker::Broker;
use crate::buffer::Pools;
use crate::config::{AdminListen, AppKind, Config, Limits, Route};
use crate::connection::{refuse_unadmitted, AdminSettings, Connection, Ctx, Delivered, Progress, Ready, Turn};
use crate::encode::{shared_frame, SharedFrame};
use crate::logview::Tails;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::tls::{build_server_config, TlsSettings};
use crate::transport::Transport;
use crate::ws::frame::Opcode;

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// The token loader thread's wake-ups.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 2;
const MAX_LISTENERS: usize = 1024;
/// Connection tokens: slab key in the low 32 bits, generation in bits 32–61, bit 62 set for
/// the socket the connection's app owns (a backend link), bit 63 clear (listener and signal
/// tokens have it set). A connection's id is its token without bit 62, as a `u64`.
const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
const GEN_MASK: usize = 0x3FFF_FFFF;
const APP_SOCKET_BIT: usize = 1 << 62;

/// The slab key of the connection with this id.
pub fn key_of(id: u64) -> usize {
    (id as usize) & KEY_MASK
}
/// Connections accepted per listener per turn, so a flood of connects cannot starve clients.
const ACCEPT_BATCH: usize = 256;
/// After EMFILE / ENFILE: how long to stop accepting before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
const LISTEN_BACKLOG: i32 = 4096;
/// How often unused pooled buffers are freed (and freed memory given back to the system).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Most slab entries reserved up front (address space only, a few hundred MiB at most).
const MAX_RESERVED: usize = 1 << 20;

/// A listening socket: TCP, or the admin listener's UNIX-domain socket (its file is removed
/// when the listener goes).
enum ListenSocket {
    Tcp(TcpListener),
    Unix { socket: mio::net::UnixListener, path: std::path::PathBuf },
}

/// A socket just accepted.
enum Accepted {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl ListenSocket {
    fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            ListenSocket::Tcp(l) => l.accept().map(|(s, peer)| (Accepted::Tcp(s), peer)),
            // A UNIX peer has no address: it shows as 0.0.0.0:0.
            ListenSocket::Unix { socket, .. } => {
                socket.accept().map(|(s, _)| (Accepted::Unix(s), SocketAddr::from(([0, 0, 0, 0], 0))))
            }
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix { socket, .. } => socket,
        }
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Accepted {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Accepted::Tcp(s) => s,
            Accepted::Unix(s) => s,
        }
    }
}

struct Listener {
    socket: ListenSocket,
    addr: SocketAddr,
    /// The TLS settings (re-read on SIGHUP) and the configuration new handshakes use.
    tls: Option<(TlsSettings, Arc<rustls::ServerConfig>)>,
    /// Readiness seen and not yet drained (edge-triggered).
    pending: bool,
    /// The admin listener (management API, metrics, dashboard).
    admin: bool,
}

/// A connection and the loop's bookkeeping for it.
struct Entry {
    conn: Connection,
    /// When the loop's timer entry for this connection fires.
    timer_at: Option<Instant>,
    /// Others queued output for it this turn; it is flushed once, after the events.
    dirty: bool,
    /// Its last drive said it is done: removed after the batch, never driven again.
    closed: bool,
}

impl Entry {
    /// The connection's poll token (its id: slab key and generation).
    fn token(&self) -> Token {
        Token(self.conn.id() as usize)
    }
}

/// A bound, not yet running server.
pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Entry>,
    generation: usize,
    /// Min-heap of (when, connection token); stale entries are skipped (see `fire_timers`).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Connections whose read budget ran out: served again next turn.
    busy: Vec<usize>,
    /// Connections that others queued output for this turn.
    dirty: Vec<usize>,
    closed: Vec<usize>,
    /// What the connection being driven asked for (kept for its capacity).
    actions: Vec<Action>,
    topics: Topics,
    routes: Routes,
    limits: Arc<Limits>,
    max_connections: usize,
    pools: Pools,
    trim_memory: bool,
    /// Where access lines go when not to the log (`access_log`).
    access_file: Option<AccessLogFile>,
    /// When the buffer pools next shrink to what was used since (and memory is given back).
    housekeeping_at: Instant,
    backend_failures: crate::backend::FailureLog,
    signals: Signals,
    accept_paused_until: Option<Instant>,
    /// Set on SIGTERM / SIGINT: the time by which the server exits regardless.
    drain_deadline: Option<Instant>,
    /// A second stop signal: exit at the end of this turn.
    exit_now: bool,
    broker: Broker,
    /// Loads the broker's registered tokens off the loop (`[broker] tokens`).
    token_fetcher: Option<Fetcher>,
    tokens_refresh: Option<Duration>,
    tokens_refresh_at: Option<Instant>,
    /// Wakes the loop from helper threads; kept alive here.
    _waker: Arc<mio::Waker>,
    metrics: Metrics,
    admin: Option<AdminSettings>,
    /// The files log viewers follow, and when they are next read.
    tails: Tails,
    tails_at: Instant,
    /// When the dashboard's figures are next published (while someone watches).
    stats_at: Instant,
    started: Instant,
    /// Scratch for a delivery's receivers (kept for its capacity).
    scratch_keys: Vec<usize>,
    /// The last count of open descriptors and the limit, and when it was taken.
    fd_figures_cache: std::cell::Cell<Option<(Instant, crate::metrics::FdFigures)>>,
    /// Set while accept() fails for lack of descriptors; logged once per episode.
    fd_exhausted: bool,
}

impl Server {
    /// Binds every listener and installs the signal handlers.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        if config.listen.len() > MAX_LISTENERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many listen addresses"));
        }
        let mut listeners = Vec::new();
        for (i, listener) in config.listen.iter().enumerate() {
            // Certificates first: a bad file is a configuration error, not a half-started server.
            let tls = match &listener.tls {
                Some(settings) => {
                    let built = build_server_config(settings)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                    Some((settings.clone(), built))
                }
                None => None,
            };
            let addr = listener.addr;
            let mut socket =
                bind_listener(addr).map_err(|e| io::Error::new(e.kind(), format!("listen {addr}: {e}")))?;
            let addr = socket.local_addr()?;
            poll.registry().register(&mut socket, Token(LISTENER_BASE - i), Interest::READABLE)?;
            listeners.push(Listener { socket: ListenSocket::Tcp(socket), addr, tls, pending: true, admin: false });
        }
        let admin = match &config.admin {
            Some(admin) => {
                let at = |e: io::Error| io::Error::new(e.kind(), format!("admin.listen {}: {e}", admin.listen));
                let (mut socket, addr) = match &admin.listen {
                    AdminListen::Tcp(addr) => {
                        let socket = bind_listener(*addr).map_err(at)?;
                        let addr = socket.local_addr()?;
                        (ListenSocket::Tcp(socket), addr)
                    }
                    AdminListen::Unix(path) => (
                        ListenSocket::Unix { socket: bind_unix(path).map_err(at)?, path: path.clone() },
                        SocketAddr::from(([0, 0, 0, 0], 0)),
                    ),
                };
                let i = listeners.len();
                poll.registry().register(socket.source(), Token(LISTENER_BASE - i), Interest::READABLE)?;
                listeners.push(Listener { socket, addr, tls: None, pending: true, admin: true });
                let mut route = Route::new("/ws", AppKind::Dashboard, config.limits);
                // The dashboard's page connects from the admin listener's own origin.
                route.limits = Arc::new(Limits { idle_timeout: Duration::ZERO, ..config.limits });
                let mut log_files: Vec<std::path::PathBuf> =
                    config.routes.iter().filter_map(|r| r.logview.as_ref()).flat_map(|l| l.files.clone()).collect();
                log_files.sort();
                log_files.dedup();
                Some(AdminSettings { config: admin.clone(), route, log_files: log_files.into() })
            }
            None => None,
        };
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
        let mut broker = Broker::new(config.broker.websockets_pro_quirks);
        if let Some(source) = &config.broker.tokens {
            // At start the list is read before anyone connects; later loads run off the loop.
            match crate::broker::tokens::load(source, config.broker.tokens_timeout, config.broker.tokens_max_size) {
                Ok(set) => {
                    broker.replace_registered(set);
                    log::info!("broker: {} registered token(s) from {source}", broker.registered_count());
                }
                Err(e) => log::error!("broker: tokens from {source}: {e}; starting with no registered tokens"),
            }
        }
        let token_fetcher = Fetcher::start(&config.broker, Arc::clone(&waker));
        let now = Instant::now();
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry().register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        let access_file = match &config.access_log {
            Some(path) => Some(
                AccessLogFile::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("access_log {}: {e}", path.display())))?,
            ),
            None => None,
        };
        // Room for every admitted connection plus those refused with a 503.
        let reserve = config.max_connections.saturating_add(ACCEPT_BATCH).min(MAX_RESERVED);
        Ok(Server {
            poll,
            listeners,
            // Reserved, not touched: pages become resident as connections arrive, and growing
            // never copies the slab (a copy leaves the old one's pages resident in the heap).
            conns: Slab::with_capacity(reserve),
            generation: 0,
            timers: BinaryHeap::with_capacity(reserve),
            busy: Vec::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            actions: Vec::new(),
            topics: Topics::new(),
            routes: Routes::new(config.routes.clone()),
            limits: Arc::new(config.limits),
            max_connections: config.max_connections,
            pools: Pools::new(config.buffer_pool),
            trim_memory: config.trim_memory,
            access_file,
            housekeeping_at: Instant::now() + HOUSEKEEPING_INTERVAL,
            backend_failures: Default::default(),
            signals,
            accept_paused_until: None,
            drain_deadline: None,
            exit_now: false,
            broker,
            token_fetcher,
            tokens_refresh: config.broker.tokens_refresh,
            tokens_refresh_at: config.broker.tokens_refresh.map(|r| now + r),
            _waker: waker,
            metrics: Metrics::new(config.routes.len()),
            admin,
            tails: Tails::new(&config.routes),
            tails_at: now,
            stats_at: now,
            started: now,
            scratch_keys: Vec::new(),
            fd_figures_cache: std::cell::Cell::new(None),
            fd_exhausted: false,
        })
    }

    /// The WebSocket listeners' addresses actually bound (port 0 resolved), with whether
    /// each is TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners.iter().filter(|l| !l.admin).map(|l| (l.addr, l.tls.is_some())).collect()
    }

    /// The admin listener's address (`http://127.0.0.1:9090/` or `unix:/path`), if configured.
    pub fn admin_url(&self) -> Option<String> {
        self.listeners.iter().find(|l| l.admin).map(|l| match &l.socket {
            ListenSocket::Tcp(_) => format!("http://{}/", l.addr),
            ListenSocket::Unix { path, .. } => format!("unix:{}", path.display()),
        })
    }

    /// Runs until a SIGTERM / SIGINT drain completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut woke = Instant::now();
        loop {
            let now = Instant::now();
            self.metrics.loop_iterations += 1;
            self.metrics.busy += now.saturating_duration_since(woke);
            if self.exit_now {
                log::warn!("second stop signal: exiting now");
                return Ok(());
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() {
                    log::info!("drained: all connections closed");
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!("drain timeout: closing {} remaining connection(s)", self.conns.len());
                    return Ok(());
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            woke = now;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => self.on_signals(now),
                    WAKER_TOKEN => self.tokens_loaded(),
                    Token(t) if t > LISTENER_BASE - MAX_LISTENERS => {
                        if let Some(l) = self.listeners.get_mut(LISTENER_BASE - t) {
                            l.pending = true;
                        }
                    }
                    token => {
                        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                        self.on_ready(token, readable, writable, now);
                    }
                }
            }
            self.serve_busy(now);
            self.fire_timers(now);
            self.flush_dirty(now);
            self.remove_closed(now);
            self.accept(now);
            if now >= self.housekeeping_at {
                self.housekeeping(now);
            }
            self.periodic(now);
        }
    }

    /// What runs on its own clock: the log viewers' files, the dashboard's figures, the
    /// broker's token refresh.
    fn periodic(&mut self, now: Instant) {
        if !self.tails.is_empty() && now >= self.tails_at {
            let mut lines = Vec::new();
            let more = self.tails.poll(|feed, frame| {
                lines.push((feed.to_string(), frame.clone()));
            });
            for (feed, frame) in lines {
                self.publish(&feed, &frame, None, &[], now);
            }
            self.flush_dirty(now);
            self.tails_at = now + if more { Duration::ZERO } else { crate::logview::POLL_INTERVAL };
        }
        if now >= self.stats_at {
            self.stats_at = now + Duration::from_secs(1);
            if self.topics.find(STATS_FEED).is_some() {
                let frame = shared_frame(Opcode::Text, self.stats_json(now).as_bytes());
                self.publish(STATS_FEED, &frame, None, &[], now);
                self.flush_dirty(now);
            }
        }
        if let (Some(at), Some(every)) = (self.tokens_refresh_at, self.tokens_refresh) {
            if now >= at {
                self.tokens_refresh_at = Some(now + every);
                if let Some(f) = &mut self.token_fetcher {
                    f.request();
                }
            }
        }
    }

    /// The token loader finished: the new list replaces the old, or the old one stays.
    fn tokens_loaded(&mut self) {
        let Some(fetcher) = &mut self.token_fetcher else { return };
        while let Some(result) = fetcher.take() {
            match result {
                Ok(set) => {
                    self.broker.replace_registered(set);
                    log::info!(
                        "broker: {} registered token(s) from {}",
                        self.broker.registered_count(),
                        fetcher.source()
                    );
                }
                Err(e) => log::error!(
                    "broker: tokens from {}: {e}; keeping the {} token(s) loaded before",
                    fetcher.source(),
                    self.broker.registered_count()
                ),
            }
        }
    }

    /// Frees pooled buffers that went unused for a whole interval, and asks the allocator to
    /// give memory back once enough was freed (after a crowd leaves, RSS goes back down
    /// instead of staying at its peak).
    fn housekeeping(&mut self, now: Instant) {
        self.housekeeping_at = now + HOUSEKEEPING_INTERVAL;
        if self.pools.shrink() {
            if self.trim_memory {
                let released = crate::sys::memory::trim_heap();
                log::debug!("buffer pools shrunk; heap trimmed (memory released: {released})");
            }
            self.pools.trimmed();
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.busy.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.timers.peek().map(|Reverse((t, _))| *t);
        if let Some(t) = self.accept_paused_until {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if let Some(t) = self.drain_deadline {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if !self.tails.is_empty() {
            next = Some(next.map_or(self.tails_at, |n| n.min(self.tails_at)));
        }
        if self.topics.find(STATS_FEED).is_some() {
            next = Some(next.map_or(self.stats_at, |n| n.min(self.stats_at)));
        }
        if let Some(t) = self.tokens_refresh_at {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if self.pools.has_spare() {
            // Housekeeping has something to give back; an idle server with nothing spare
            // does not wake for it.
            next = Some(next.map_or(self.housekeeping_at, |n| n.min(self.housekeeping_at)));
        }
        // Round up so a timer is never polled for a hair early and then spun on.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// Runs connection `key` with a context (`f` gets the connection and the context), then
    /// does what the run left for the loop: its actions, its timer, closing.
    fn run_conn(&mut self, key: usize, now: Instant, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Turn) {
        let mut actions = std::mem::take(&mut self.actions);
        let Some(entry) = self.conns.get_mut(key) else { return };
        if entry.closed {
            self.actions = actions;
            return;
        }
        let mut ctx = Ctx {
            now,
            routes: &self.routes,
            limits: &self.limits,
            pools: &mut self.pools,
            backend_failures: &mut self.backend_failures,
            topics: &mut self.topics,
            broker: &mut self.broker,
            metrics: &mut self.metrics,
            admin: self.admin.as_ref(),
            actions: &mut actions,
            fanout: 0,
        };
        let turn = f(&mut entry.conn, &mut ctx);
        if let Some(status) = entry.conn.log_mut().take_fresh_status() {
            let counts =
                if entry.conn.is_admin() { &mut self.metrics.admin_requests } else { &mut self.metrics.handshakes };
            Metrics::count(counts, status);
        }
        for action in actions.drain(..) {
            self.apply(key, action, now);
        }
        self.actions = actions;
        self.after_drive(key, turn);
    }

    fn on_ready(&mut self, token: Token, readable: bool, writable: bool, now: Instant) {
        let key = token.0 & KEY_MASK;
        let app_socket = token.0 & APP_SOCKET_BIT != 0;
        let Some(entry) = self.conns.get(key) else { return };
        if entry.token().0 != token.0 & !APP_SOCKET_BIT {
            return; // stale: the slot's connection is gone
        }
        let ready = if app_socket {
            Ready { app_readable: readable, app_writable: writable, corked: true, ..Ready::default() }
        } else {
            Ready { readable, writable, corked: true, ..Ready::default() }
        };
        self.run_conn(key, now, |conn, ctx| conn.drive(ctx, ready));
    }

    /// Does what a connection's app asked for.
    fn apply(&mut self, key: usize, action: Action, now: Instant) {
        let Some(token) = self.conns.get(key).map(Entry::token) else { return };
        let app_token = Token(token.0 | APP_SOCKET_BIT);
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
            Action::Publish { topic, frame, exclude, exclude_ids } => {
                self.publish(&topic, &frame, exclude, &exclude_ids, now)
            }
            Action::SendTo { id, frame } => {
                let key = key_of(id);
                if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
                    self.deliver(key, &frame, now);
                }
            }
            Action::Route { keys, frame } => self.route_message(&keys, &frame, now),
            Action::Backlog(spec) => {
                let frames: Vec<SharedFrame> =
                    spec.files.iter().flat_map(|path| self.tails.backlog(path, spec.backlog)).cloned().collect();
                for frame in frames {
                    self.deliver(key, &frame, now);
                }
            }
            Action::Admin(request) => self.manage(key, *request, now),
        }
    }

    /// A broker message to the connections its receivers named.
    fn route_message(&mut self, keys: &[usize], frame: &SharedFrame, now: Instant) {
        self.metrics.broker_routed += 1;
        for &key in keys {
            if self.deliver(key, frame, now) {
                self.metrics.broker_deliveries += 1;
            }
        }
    }

    /// Queues `frame` on every subscriber of `topic` but `exclude`: encoded once, queued by
    /// reference, written once per subscriber at the end of the turn.
    fn publish(&mut self, topic: &str, frame: &SharedFrame, exclude: Option<usize>, exclude_ids: &[u64], now: Instant) {
        let Some(id) = self.topics.find(topic) else { return };
        // Ids to slab keys (an id names its key; a stale one names nobody), sorted. Empty,
        // as it nearly always is, it allocates nothing.
        let mut excluded: Vec<usize> = exclude_ids
            .iter()
            .map(|&id| key_of(id))
            .filter(|&key| self.conns.get(key).is_some_and(|e| exclude_ids.contains(&e.conn.id())))
            .collect();
        excluded.sort_unstable();
        let mut dropped = 0;
        for key in self.topics.members(id) {
            if Some(key) == exclude || (!excluded.is_empty() && excluded.binary_search(&key).is_ok()) {
                continue;
            }
            let Some(entry) = self.conns.get_mut(key) else { continue };
            let delivered = entry.conn.deliver(now, &mut self.pools, frame);
            match delivered {
                Delivered::Queued | Delivered::Closing => {
                    if !entry.dirty {
                        entry.dirty = true;
                        self.dirty.push(key);
                    }
                }
                Delivered::Dropped => dropped += 1,
                Delivered::NotOpen => {}
            }
            self.metrics.deliveries += u64::from(delivered == Delivered::Queued);
            self.metrics.slow_consumer_closes += u64::from(delivered == Delivered::Closing);
        }
        if dropped > 0 {
            self.topics.note_dropped(id, dropped);
            self.metrics.dropped += dropped;
        }
    }

    /// Queues `frame` for connection `key`; whether it was queued.
    fn deliver(&mut self, key: usize, frame: &SharedFrame, now: Instant) -> bool {
        let Some(entry) = self.conns.get_mut(key) else { return false };
        let delivered = entry.conn.deliver(now, &mut self.pools, frame);
        match delivered {
            Delivered::Queued | Delivered::Closing => self.mark_dirty(key),
            Delivered::Dropped => self.metrics.dropped += 1,
            Delivered::NotOpen => {}
        }
        self.metrics.slow_consumer_closes += u64::from(delivered == Delivered::Closing);
        delivered == Delivered::Queued
    }

    /// The end of the turn: every connection with output queued during it (its own replies,
    /// what others published to it) writes once. Writing reads nothing, so this ends.
    fn flush_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            for key in std::mem::take(&mut self.dirty) {
                let Some(entry) = self.conns.get_mut(key) else { continue };
                entry.dirty = false;
                self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready::default()));
            }
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(entry) = self.conns.get_mut(key) {
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// What the loop does after a connection ran: queue for closing, for another turn, for
    /// the end-of-turn write, and (re)arm its timer.
    fn after_drive(&mut self, key: usize, Turn { progress, deadline }: Turn) {
        let Some(entry) = self.conns.get_mut(key) else { return };
        if progress == Progress::Closed {
            if !entry.closed {
                entry.closed = true;
                self.closed.push(key);
            }
            return;
        }
        if matches!(progress, Progress::Busy | Progress::Again) && !self.busy.contains(&key) {
            self.busy.push(key);
        }
        // Written at the end of this turn (a Busy one too: it read a lot, so queued a lot).
        if matches!(progress, Progress::Write | Progress::Busy) && !entry.dirty {
            entry.dirty = true;
            self.dirty.push(key);
        }
        // One timer entry per connection, at or before its deadline; a deadline that moved
        // later is found when the entry fires and re-armed then.
        if let Some(deadline) = deadline {
            if entry.timer_at.is_none_or(|t| deadline < t) {
                entry.timer_at = Some(deadline);
                self.timers.push(Reverse((deadline, entry.token().0)));
            }
        }
    }

    fn serve_busy(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.busy) {
            self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready { corked: true, ..Ready::default() }));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((when, token))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let key = token & KEY_MASK;
            let Some(entry) = self.conns.get_mut(key) else { continue };
            if entry.token().0 != token || entry.timer_at != Some(when) || entry.closed {
                continue; // stale entry
            }
            entry.timer_at = None;
            // Whatever the timer queued (a ping, a close frame, a 408) goes out at the end of
            // the turn.
            self.run_conn(key, now, |conn, ctx| {
                conn.drive(ctx, Ready { corked: true, timer: true, ..Ready::default() })
            });
        }
    }

    fn remove_closed(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.closed) {
            if !self.conns.get(key).is_some_and(|e| e.closed) {
                continue;
            }
            let mut entry = self.conns.remove(key);
            // The client socket may now be shared with a backend (direct hand-off): epoll
            // keys on the open file, so it must be deregistered, not just closed. The app's
            // own socket is closed when the app is dropped, which removes it.
            let _ = self.poll.registry().deregister(entry.conn.source_mut());
            self.topics.remove_connection(key);
            self.broker.release(key);
            entry.conn.release(&mut self.pools);
            self.count_closed(&mut entry.conn);
            let line = entry.conn.access_line(now);
            if self.topics.find(ACCESS_FEED).is_some() {
                let mut body = b"{\"type\":\"access\",\"line\":".to_vec();
                let _ = serde_json::to_writer(&mut body, &line);
                body.push(b'}');
                self.publish(ACCESS_FEED, &shared_frame(Opcode::Text, &body), None, &[], now);
            }
            match &mut self.access_file {
                Some(file) => file.line(&line),
                None => log::info!(target: "wsgate::access", "{line}"),
            }
        }
        if !self.dirty.is_empty() {
            self.flush_dirty(now);
        }
        if let Some(file) = &mut self.access_file {
            file.flush();
        }
    }

    /// What a closed connection adds to the metrics.
    fn count_closed(&mut self, conn: &mut Connection) {
        let (sent, received) = conn.log_mut().close_codes();
        if let Some(code) = sent {
            Metrics::count(&mut self.metrics.closes_sent, code);
        }
        if let Some(code) = received {
            Metrics::count(&mut self.metrics.closes_received, code);
        }
        if conn.failed_tls_handshake() {
            self.metrics.tls_failures += 1;
        }
        self.metrics.add_closed(conn.route(), conn.traffic());
    }

    fn accept(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
            for l in &mut self.listeners {
                l.pending = true;
            }
        }
        for i in 0..self.listeners.len() {
            if !self.listeners[i].pending {
                continue;
            }
            for _ in 0..ACCEPT_BATCH {
                match self.listeners[i].socket.accept() {
                    Ok((stream, peer)) => {
                        if self.fd_exhausted {
                            self.fd_exhausted = false;
                            log::info!("accepting again: file descriptors available");
                        }
                        let tls = self.listeners[i].tls.as_ref().map(|(_, config)| config.clone());
                        let admin = self.listeners[i].admin;
                        self.admit(stream, peer, tls, admin, now)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.listeners[i].pending = false;
                        break;
                    }
                    Err(e) if is_fd_exhaustion(&e) => {
                        self.metrics.refused_fd += 1;
                        // The pending connection stays in the backlog; polling would report it
                        // again at once, so stop accepting for a moment instead of spinning.
                        if !self.fd_exhausted {
                            self.fd_exhausted = true;
                            log::warn!(
                                "accept on {}: {e}; retrying every {ACCEPT_PAUSE:?} until descriptors free up",
                                self.listeners[i].addr
                            );
                        }
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                    Err(e) => {
                        // ECONNABORTED and friends concern one connection, not the listener.
                        log::debug!("accept on {}: {e}", self.listeners[i].addr);
                    }
                }
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: Accepted,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        admin: bool,
        now: Instant,
    ) {
        self.metrics.accepted += 1;
        if self.conns.len() >= self.max_connections {
            self.metrics.refused_capacity += 1;
            if self.metrics.refused_capacity.is_power_of_two() {
                log::warn!(
                    "at max_connections ({}): refusing {peer} with 503 ({} refused so far)",
                    self.max_connections,
                    self.metrics.refused_capacity
                );
            }
            match &mut stream {
                Accepted::Tcp(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
                Accepted::Unix(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
            }
            return;
        }
        if let Accepted::Tcp(s) = &stream {
            if let Err(e) = s.set_nodelay(true) {
                log::debug!("{peer}: TCP_NODELAY: {e}");
            }
        }
        self.generation = (self.generation + 1) & GEN_MASK;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token((self.generation << KEY_BITS) | key);
        if let Err(e) = self.poll.registry().register(stream.source(), token, Interest::READABLE | Interest::WRITABLE) {
            log::warn!("{peer}: cannot register: {e}");
            return;
        }
        let transport = match (stream, tls) {
            (Accepted::Unix(s), _) => Transport::Local(s),
            (Accepted::Tcp(s), None) => Transport::Plain(s),
            (Accepted::Tcp(stream), Some(config)) => match Transport::tls(stream, config) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("{peer}: TLS session: {e}");
                    return;
                }
            },
        };
        let conn = Connection::new(token.0 as u64, transport, peer, now, Arc::clone(&self.limits), admin);
        entry.insert(Entry { conn, timer_at: None, dirty: false, closed: false });
        log::debug!("{peer} accepted as {key}");
        // The first drive starts its handshake clock (and reads nothing yet).
        self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready { corked: true, ..Ready::default() }));
    }

    fn on_signals(&mut self, now: Instant) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            match signal {
                SIGHUP => {
                    self.reload_certificates();
                    self.reopen_access_log();
                    if let Some(f) = &mut self.token_fetcher {
                        log::info!("SIGHUP: loading the broker's tokens from {}", f.source());
                        f.request();
                    }
                }
                _ if self.drain_deadline.is_some() => self.exit_now = true,
                _ => self.start_drain(now),
            }
        }
    }

    /// SIGHUP: re-reads every TLS listener's certificates and keys. New handshakes use the new
    /// ones; established connections keep theirs. A listener whose files fail keeps its old
    /// configuration.
    fn reload_certificates(&mut self) {
        let mut reloaded = 0;
        for l in &mut self.listeners {
            let Some((settings, config)) = &mut l.tls else { continue };
            match build_server_config(settings) {
                Ok(fresh) => {
                    *config = fresh;
                    reloaded += 1;
                }
                Err(e) => log::error!("SIGHUP: {}: {e}; keeping the certificates in use", l.addr),
            }
        }
        log::info!("SIGHUP: reloaded certificates for {reloaded} TLS listener(s)");
    }

    /// SIGHUP: opens the access log's path again (after `logrotate` renamed the file). If that
    /// fails (the file's directory not writable after dropping privileges, say), lines keep
    /// going to the old file.
    fn reopen_access_log(&mut self) {
        let Some(file) = &mut self.access_file else { return };
        match file.reopen() {
            Ok(()) => log::info!("SIGHUP: reopened the access log {}", file.path().display()),
            Err(e) => {
                log::error!("SIGHUP: access log {}: {e}; writing to the file already open", file.path().display())
            }
        }
    }

    fn start_drain(&mut self, now: Instant) {
        let drain = self.limits.drain_timeout;
        log::info!("stop signal: closing {} connection(s) with 1001, up to {drain:?}", self.conns.len());
        self.drain_deadline = Some(now + drain);
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l.socket.source());
        }
        self.listeners.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            // The close frame goes out now if the socket takes it.
            self.run_conn(key, now, |conn, ctx| {
                conn.drive(ctx, Ready { corked: true, drain: true, ..Ready::default() })
            });
        }
        self.flush_dirty(now);
        self.remove_closed(now);
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The admin listener's UNIX socket: a stale socket file left by a previous run is replaced
/// (anything else at the path is an error); the socket is owner- and group-only (0660).
fn bind_unix(path: &std::path::Path) -> io::Result<mio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        std::fs::remove_file(path)?;
    }
    let socket = mio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(socket)
}

/// A non-blocking listener with SO_REUSEADDR and a large backlog; IPv6 sockets are v6-only
/// so `0.0.0.0:P` and `[::]:P` can both be listed.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
