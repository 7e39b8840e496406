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
pub mod mesh;

use crate::access_log::AccessLogFile;
use crate::admin::config::AdminListen;
use crate::apps::dashboard::{ACCESS_FEED, STATS_FEED};
use crate::apps::Action;
use crate::broker::tokens::Fetcher;
use crate::broker::Broker;
use crate::buffer::Pools;
use crate::cluster::{Cluster, PUB_TOKEN, SUB_TOKEN};
use crate::config::{Balance, Config};
use crate::connection::{refuse_unadmitted, AdminSettings, Connection, Ctx, Delivered, Progress, Ready, Turn};
use crate::encode::{shared_frame, SharedFrame};
use crate::limits::Limits;
use crate::logview::Tails;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::route::{AppKind, Route};
use crate::tls::{build_server_config, TlsSettings};
use crate::transport::Transport;
use crate::ws::frame::Opcode;
use mesh::{Mailbox, Mesh, Note};

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// The token loader thread's wake-ups.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 2;
const MAX_LISTENERS: usize = 1024;
/// Connection tokens: slab key in the low 32 bits, generation in bits 32–53, the worker's
/// index in bits 54–61, bit 62 set for the socket the connection's app owns (a backend link),
/// bit 63 clear (listener and signal tokens have it set). A connection's id is its token
/// without bit 62, as a `u64`: unique in the process, and it says which worker serves it.
const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
const GEN_MASK: usize = 0x3F_FFFF;
const WORKER_SHIFT: u32 = 54;
const APP_SOCKET_BIT: usize = 1 << 62;

/// The slab key of the connection with this id.
pub fn key_of(id: u64) -> usize {
    (id as usize) & KEY_MASK
}

/// The index of the worker serving the connection with this id.
pub fn worker_of(id: u64) -> usize {
    (id >> WORKER_SHIFT) as usize & 0xFF
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
        result
    }
}

/// Which addresses a worker listens on.
enum Binding {
    /// The configuration's (worker 0).
    Configured,
    /// These, already bound by worker 0 (`SO_REUSEPORT`).
    Same(Vec<SocketAddr>),
    /// None: worker 0 hands connections over.
    None,
}

/// One reactor thread.
pub struct Worker {
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
    /// Worker 0's.
    signals: Option<Signals>,
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
    /// This worker's inbox, and every worker's.
    mailbox: Mailbox,
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
}

impl Seed {
    fn bind(
        config: &Arc<Config>,
        poll: Poll,
        waker: Arc<mio::Waker>,
        mailbox: Mailbox,
        mesh: Arc<Mesh>,
        binding: Binding,
        node: u64,
    ) -> io::Result<Seed> {
        let first = mailbox.index == 0;
        if config.listen.len() > MAX_LISTENERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many listen addresses"));
        }
        let reuse_port = config.workers > 1 && config.balance == Balance::ReusePort;
        let addrs: Vec<SocketAddr> = match &binding {
            Binding::Configured => config.listen.iter().map(|l| l.addr).collect(),
            Binding::Same(addrs) => addrs.clone(),
            Binding::None => Vec::new(),
        };
        let mut listeners = Vec::new();
        for (i, (listener, addr)) in config.listen.iter().zip(addrs).enumerate() {
            // Certificates first: a bad file is a configuration error, not a half-started server.
            let tls = match &listener.tls {
                Some(settings) => {
                    let built = build_server_config(settings)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                    Some((settings.clone(), built))
                }
                None => None,
            };
            let mut socket =
                bind_listener(addr, reuse_port).map_err(|e| io::Error::new(e.kind(), format!("listen {addr}: {e}")))?;
            let addr = socket.local_addr()?;
            poll.registry().register(&mut socket, Token(LISTENER_BASE - i), Interest::READABLE)?;
            listeners.push(Listener { socket: ListenSocket::Tcp(socket), addr, tls, pending: true, admin: false });
        }
        // Every worker knows the keys (a `require_key` log viewer checks them); only worker 0
        // listens for admin requests.
        let admin = match &config.admin {
            Some(admin) => {
                if first {
                    let at = |e: io::Error| io::Error::new(e.kind(), format!("admin.listen {}: {e}", admin.listen));
                    let (mut socket, addr) = match &admin.listen {
                        AdminListen::Tcp(addr) => {
                            let socket = bind_listener(*addr, false).map_err(at)?;
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
                }
                Some(admin_settings(config, admin))
            }
            None => None,
        };
        let signals = if first {
            let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
            poll.registry().register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let access_file = match &config.access_log {
            Some(path) => Some(
                AccessLogFile::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("access_log {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let cluster = match &config.cluster {
            Some(c) => {
                let broker = config.routes.iter().any(|r| r.app == AppKind::Broker);
                let max_message = config.routes.iter().map(|r| r.limits.max_message_size).max().unwrap_or(0);
                let max_message = max_message.max(config.limits.max_message_size);
                let cluster = Cluster::new(poll.registry().try_clone()?, c, node, mailbox.index, broker, max_message)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some(cluster)
            }
            None => None,
        };
        Ok(Seed {
            config: Arc::clone(config),
            poll,
            waker,
            mailbox,
            mesh,
            listeners,
            admin,
            signals,
            access_file,
            cluster,
            reload: None,
        })
    }
}

/// What a worker needs that can fail to get (sockets, files), made before the threads start;
/// the worker itself is built on its own thread (it is not `Send`: its connections and
/// topics use `Rc`).
pub struct Seed {
    config: Arc<Config>,
    poll: Poll,
    waker: Arc<mio::Waker>,
    mailbox: Mailbox,
    mesh: Arc<Mesh>,
    listeners: Vec<Listener>,
    admin: Option<AdminSettings>,
    signals: Option<Signals>,
    access_file: Option<AccessLogFile>,
    cluster: Option<Cluster>,
    reload: Option<Reloader>,
}

impl Seed {
    fn start(self, tokens: Option<crate::broker::tokens::TokenSet>) -> Worker {
        let Seed { config, poll, waker, mailbox, mesh, listeners, admin, signals, access_file, cluster, reload } = self;
        let mut topics = Topics::new();
        if cluster.is_some() {
            topics.track_changes();
        }
        let first = mailbox.index == 0;
        let mut broker = Broker::new(config.broker.websockets_pro_quirks);
        broker.set_spread(config.workers > 1 || config.cluster.is_some());
        if let Some(set) = tokens {
            broker.replace_registered(set);
        }
        let token_fetcher = if first { Fetcher::start(&config.broker, Arc::clone(&waker)) } else { None };
        let now = Instant::now();
        // Room for every admitted connection plus those refused with a 503.
        let reserve = config.max_connections.saturating_add(ACCEPT_BATCH).min(MAX_RESERVED);
        let hands_off = first && config.workers > 1 && config.balance == Balance::Handoff;
        Worker {
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
            topics,
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
            tokens_refresh: config.broker.tokens_refresh.filter(|_| first),
            tokens_refresh_at: config.broker.tokens_refresh.filter(|_| first).map(|r| now + r),
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
            mailbox,
            mesh,
            hands_off,
            gathers: Default::default(),
            next_gather: 0,
            no_ids: Arc::from(&[][..]),
            cluster,
            reload,
            config,
            codecs: Default::default(),
        }
    }
}

impl Worker {
    /// Runs until a SIGTERM / SIGINT drain completes.
    fn run(mut self) -> io::Result<()> {
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
                    log::info!("worker {} drained: all connections closed", self.mailbox.index);
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "drain timeout: worker {} closing {} remaining connection(s)",
                        self.mailbox.index,
                        self.conns.len()
                    );
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
                        self.on_ready(token, readable, writable, now);
                    }
                }
            }
            if self.mailbox.more {
                self.take_notes(now);
            }
            self.serve_busy(now);
            self.fire_timers(now);
            self.flush_dirty(now);
            self.remove_closed(now);
            self.accept(now);
            self.mesh.set_load(self.mailbox.index, self.conns.len());
            if now >= self.housekeeping_at {
                self.housekeeping(now);
            }
            self.periodic(now);
            self.cluster_turn(now);
        }
    }

    /// Readiness on a Redis link: what other nodes published goes to this worker's
    /// subscribers and token holders.
    fn on_cluster(&mut self, token: Token, now: Instant) {
        let Some(mut cluster) = self.cluster.take() else { return };
        cluster.on_ready(token, now, |m| {
            let frame = shared_frame(m.opcode, m.payload);
            match m.kind {
                crate::cluster::wire::Kind::Publish => self.publish(m.topic, &frame, None, &[], now),
                crate::cluster::wire::Kind::Route => {
                    let mut keys = std::mem::take(&mut self.scratch_keys);
                    self.broker.receivers(m.receivers, &mut keys);
                    self.route_message(&keys, &frame, now);
                    self.scratch_keys = keys;
                }
            }
        });
        self.cluster = Some(cluster);
        self.flush_dirty(now);
    }

    /// The end of a turn for the Redis links: topics that came or went, timers, writes.
    fn cluster_turn(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else { return };
        for (topic, subscribed) in self.topics.take_changes() {
            if !topic.starts_with(crate::apps::FEED_PREFIX) {
                cluster.topic_changed(&topic, subscribed);
            }
        }
        if cluster.busy() {
            for token in [SUB_TOKEN, PUB_TOKEN] {
                self.on_cluster(token, now);
            }
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.turn(now);
        }
    }

    /// Whether the links to Redis are configured.
    pub(super) fn cluster_on(&self) -> bool {
        self.cluster.is_some()
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
            if self.mailbox.index == 0 {
                self.mesh.set_access_watched(self.topics.find(ACCESS_FEED).is_some());
            }
            if self.topics.find(STATS_FEED).is_some() && !self.gathers.values().any(manage::Gather::is_stats) {
                // The figures of every worker: published when the last one has answered (one
                // update at a time, however slow a worker is to answer).
                self.gather(manage::Pending::Stats, mesh::Query::Figures, (0..self.mesh.workers()).collect(), now);
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
                    if self.mesh.workers() > 1 {
                        let shared = Arc::new(set.clone());
                        self.mesh.post_others(self.mailbox.index, || Note::Tokens(Arc::clone(&shared)));
                    }
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
        self.gathers.retain(|_, g| g.is_fresh(now));
        if self.pools.shrink() {
            if self.trim_memory {
                let released = crate::sys::memory::trim_heap();
                log::debug!("buffer pools shrunk; heap trimmed (memory released: {released})");
            }
            self.pools.trimmed();
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.busy.is_empty() || self.mailbox.more || self.cluster.as_ref().is_some_and(Cluster::busy) {
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
        if let Some(t) = self.cluster.as_ref().and_then(Cluster::deadline) {
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
            codecs: &mut self.codecs,
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
                self.publish(&topic, &frame, exclude, &exclude_ids, now);
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
        }
    }

    /// Delivers `frame` to the connection with id `id`, on whichever worker serves it.
    fn send_to(&mut self, id: u64, frame: SharedFrame, now: Instant) {
        if worker_of(id) != self.mailbox.index {
            self.mesh.post(worker_of(id), Note::SendTo { id, frame });
            return;
        }
        let key = key_of(id);
        if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
            self.deliver(key, &frame, now);
        }
    }

    /// A publish made on this worker goes to the other workers' subscribers too.
    fn spread_publish(&mut self, topic: &Arc<str>, frame: &SharedFrame, exclude_ids: Box<[u64]>) {
        if self.mesh.workers() > 1 {
            let exclude_ids: Arc<[u64]> =
                if exclude_ids.is_empty() { Arc::clone(&self.no_ids) } else { exclude_ids.into() };
            self.mesh.post_others(self.mailbox.index, || Note::Publish {
                topic: Arc::clone(topic),
                frame: frame.clone(),
                exclude_ids: Arc::clone(&exclude_ids),
            });
        }
    }

    /// A broker message sent on this worker goes to the other workers' token holders too.
    fn spread_route(&mut self, receivers: Arc<[u8]>, frame: &SharedFrame) {
        if self.mesh.workers() > 1 {
            self.mesh.post_others(self.mailbox.index, || Note::Route {
                receivers: Arc::clone(&receivers),
                frame: frame.clone(),
            });
        }
    }

    /// Takes what other workers sent (a batch per turn), and writes what it queued.
    fn take_notes(&mut self, now: Instant) {
        let mesh = Arc::clone(&self.mesh);
        let mut notes = Vec::new();
        mesh.take(&mut self.mailbox, |note| notes.push(note));
        for note in notes {
            self.on_note(note, now);
        }
        self.flush_dirty(now);
    }

    fn on_note(&mut self, note: Note, now: Instant) {
        match note {
            Note::Publish { topic, frame, exclude_ids } => self.publish(&topic, &frame, None, &exclude_ids, now),
            Note::Route { receivers, frame } => {
                let mut keys = std::mem::take(&mut self.scratch_keys);
                self.broker.receivers(&receivers, &mut keys);
                self.route_message(&keys, &frame, now);
                self.scratch_keys = keys;
            }
            Note::SendTo { id, frame } => self.send_to(id, frame, now),
            // A socket handed over as this worker began draining: closed, never served.
            Note::Adopt { .. } if self.drain_deadline.is_some() => self.mesh.release_one(),
            Note::Adopt { stream, peer, tls } => self.admit(Accepted::Tcp(stream), peer, tls, false, true, now),
            Note::Ask { gather, from, query } => {
                let part = self.part(&query, now);
                self.mesh.post(from, Note::Answer { gather, worker: self.mailbox.index, part });
            }
            Note::Answer { gather, worker, part } => self.gathered(gather, worker, part, now),
            Note::Tokens(set) => self.broker.replace_registered((*set).clone()),
            Note::Reload(fresh) => self.reload(fresh),
            Note::Drain => {
                if self.drain_deadline.is_none() {
                    self.start_drain(now);
                }
            }
            Note::Exit => self.exit_now = true,
        }
    }

    /// A broker message's deliveries to the connections its receivers named here.
    fn route_message(&mut self, keys: &[usize], frame: &SharedFrame, now: Instant) {
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
        // Framed once per form its receivers take (compressed per window, legacy), when the
        // first of them comes.
        let mut forms = Forms::new(frame);
        for key in self.topics.members(id) {
            if Some(key) == exclude || (!excluded.is_empty() && excluded.binary_search(&key).is_ok()) {
                continue;
            }
            let Some(entry) = self.conns.get_mut(key) else { continue };
            let Some(frame) = forms.for_conn(&entry.conn, &mut self.codecs) else {
                self.metrics.legacy_dropped += 1;
                continue;
            };
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
        let mut forms = Forms::new(frame);
        let Some(frame) = forms.for_conn(&entry.conn, &mut self.codecs) else {
            self.metrics.legacy_dropped += 1;
            return false;
        };
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
            self.mesh.release_one();
            if entry.conn.keeps_compression_context() {
                self.codecs.dedicated = self.codecs.dedicated.saturating_sub(1);
            }
            entry.conn.release(&mut self.pools);
            self.count_closed(&mut entry.conn);
            let line = entry.conn.access_line(now);
            // The dashboard (on worker 0) shows every worker's access lines.
            let watched_here = self.topics.find(ACCESS_FEED).is_some();
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
                        match stream {
                            Accepted::Tcp(stream) if self.hands_off && !admin => self.hand_off(stream, peer, tls, now),
                            stream => self.admit(stream, peer, tls, admin, false, now),
                        }
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

    /// `balance = "handoff"`: passes an accepted socket to the worker with the fewest
    /// connections (this one included). The process's connection count is taken here, so a
    /// refusal at `max_connections` is answered at once.
    fn hand_off(
        &mut self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        now: Instant,
    ) {
        let to = self.mesh.least_loaded();
        if to == self.mailbox.index {
            return self.admit(Accepted::Tcp(stream), peer, tls, false, false, now);
        }
        if !self.mesh.admit_one(self.max_connections) {
            self.metrics.accepted += 1;
            return self.refuse_capacity(Accepted::Tcp(stream), peer);
        }
        if !self.mesh.post(to, Note::Adopt { stream, peer, tls }) {
            // The worker is gone (draining): the socket was dropped with the note.
            self.mesh.release_one();
        }
    }

    fn refuse_capacity(&mut self, mut stream: Accepted, peer: SocketAddr) {
        self.metrics.refused_capacity += 1;
        if self.metrics.refused_capacity.is_power_of_two() {
            log::warn!(
                "at max_connections ({}): refusing {peer} with 503 ({} refused so far by worker {})",
                self.max_connections,
                self.metrics.refused_capacity,
                self.mailbox.index
            );
        }
        match &mut stream {
            Accepted::Tcp(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
            Accepted::Unix(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
        }
    }

    /// Serves an accepted socket. `counted`: the process's connection count already includes
    /// it (a socket handed over by worker 0).
    fn admit(
        &mut self,
        mut stream: Accepted,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        admin: bool,
        counted: bool,
        now: Instant,
    ) {
        self.metrics.accepted += 1;
        if !counted && !self.mesh.admit_one(self.max_connections) {
            return self.refuse_capacity(stream, peer);
        }
        if let Accepted::Tcp(s) = &stream {
            if let Err(e) = s.set_nodelay(true) {
                log::debug!("{peer}: TCP_NODELAY: {e}");
            }
        }
        self.generation = (self.generation + 1) & GEN_MASK;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token((self.mailbox.index << WORKER_SHIFT) | (self.generation << KEY_BITS) | key);
        if let Err(e) = self.poll.registry().register(stream.source(), token, Interest::READABLE | Interest::WRITABLE) {
            log::warn!("{peer}: cannot register: {e}");
            self.mesh.release_one();
            return;
        }
        let transport = match (stream, tls) {
            (Accepted::Unix(s), _) => Transport::Local(s),
            (Accepted::Tcp(s), None) => Transport::Plain(s),
            (Accepted::Tcp(stream), Some(config)) => match Transport::tls(stream, config) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("{peer}: TLS session: {e}");
                    self.mesh.release_one();
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

    /// Worker 0's signals, passed on to every worker.
    fn on_signals(&mut self, now: Instant) {
        let Some(signals) = &mut self.signals else { return };
        let received: Vec<i32> = signals.pending().collect();
        let me = self.mailbox.index;
        for signal in received {
            match signal {
                SIGHUP => {
                    let fresh = self.read_config();
                    self.mesh.post_others(me, || Note::Reload(fresh.clone()));
                    self.reload(fresh);
                    if let Some(f) = &mut self.token_fetcher {
                        log::info!("SIGHUP: loading the broker's tokens from {}", f.source());
                        f.request();
                    }
                }
                _ if self.drain_deadline.is_some() => {
                    self.mesh.post_others(me, || Note::Exit);
                    self.exit_now = true;
                }
                _ => {
                    self.mesh.post_others(me, || Note::Drain);
                    self.start_drain(now);
                }
            }
        }
    }

    /// SIGHUP on worker 0: the configuration read again, if it can be (a bad one is logged
    /// and the running one stays).
    fn read_config(&mut self) -> Option<Arc<Config>> {
        let reload = self.reload.as_ref()?;
        match reload() {
            Ok(fresh) => {
                for key in restart_only(&self.config, &fresh) {
                    log::warn!("SIGHUP: {key} changed; that takes a restart (the running value stays)");
                }
                log::info!("SIGHUP: configuration reloaded: {} route(s)", fresh.routes.len());
                Some(Arc::new(fresh))
            }
            Err(e) => {
                log::error!("SIGHUP: configuration not reloaded: {e}; the running one stays");
                None
            }
        }
    }

    /// SIGHUP, on every worker: the configuration (if it was read again), certificates, the
    /// access log.
    fn reload(&mut self, fresh: Option<Arc<Config>>) {
        if let Some(config) = fresh {
            self.apply_config(config);
        }
        self.reload_certificates();
        self.reopen_access_log();
    }

    /// Swaps in a reloaded configuration. New connections get the new routes and limits;
    /// open ones keep what they were admitted with. What needs a restart keeps its running
    /// value (see `restart_only`).
    fn apply_config(&mut self, config: Arc<Config>) {
        self.routes.replace(config.routes.clone());
        self.limits = Arc::new(config.limits);
        self.max_connections = config.max_connections;
        self.pools.set_max(config.buffer_pool);
        self.trim_memory = config.trim_memory;
        self.broker.quirks = config.broker.websockets_pro_quirks;
        if let (Some(admin), Some(_)) = (&config.admin, &self.admin) {
            self.admin = Some(admin_settings(&config, admin));
        }
        // TLS listeners keep their sockets; their certificate files may have moved (when the
        // addresses are the same: otherwise the listeners stay as they are until a restart).
        let addrs = |c: &Config| c.listen.iter().map(|l| (l.addr, l.tls.is_some())).collect::<Vec<_>>();
        if addrs(&self.config) == addrs(&config) {
            for (l, new) in self.listeners.iter_mut().filter(|l| !l.admin).zip(&config.listen) {
                if let (Some((settings, _)), Some(fresh)) = (&mut l.tls, &new.tls) {
                    *settings = fresh.clone();
                }
            }
        }
        let files = |c: &Config| {
            let mut f: Vec<std::path::PathBuf> =
                c.routes.iter().filter_map(|r| r.logview.as_ref()).flat_map(|l| l.files.clone()).collect();
            f.sort();
            f
        };
        if files(&self.config) != files(&config) {
            self.tails = Tails::new(&config.routes);
        }
        if config.access_log != self.config.access_log {
            self.access_file = match &config.access_log {
                None => None,
                Some(path) => match AccessLogFile::open(path) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        log::error!("SIGHUP: access_log {}: {e}; access lines go to the log", path.display());
                        None
                    }
                },
            };
        }
        if self.mailbox.index == 0 && config.broker.tokens != self.config.broker.tokens {
            self.token_fetcher = Fetcher::start(&config.broker, Arc::clone(&self._waker));
        }
        if self.mailbox.index == 0 {
            self.tokens_refresh = config.broker.tokens_refresh;
            self.tokens_refresh_at = config.broker.tokens_refresh.map(|r| Instant::now() + r);
        }
        self.config = config;
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
        if reloaded > 0 || self.mailbox.index == 0 {
            log::info!("SIGHUP: worker {} reloaded certificates for {reloaded} TLS listener(s)", self.mailbox.index);
        }
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
        log::info!(
            "stop signal: worker {} closing {} connection(s) with 1001, up to {drain:?}",
            self.mailbox.index,
            self.conns.len()
        );
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
/// so `0.0.0.0:P` and `[::]:P` can both be listed. `reuse_port`: one of several workers'
/// sockets on the same address, among which the kernel spreads connections (`SO_REUSEPORT`,
/// which only sockets of the same user can join).
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
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
    route.limits = Arc::new(Limits { idle_timeout: Duration::ZERO, ..config.limits });
    let mut log_files: Vec<std::path::PathBuf> =
        config.routes.iter().filter_map(|r| r.logview.as_ref()).flat_map(|l| l.files.clone()).collect();
    log_files.sort();
    log_files.dedup();
    AdminSettings { config: admin.clone(), route, log_files: log_files.into() }
}

/// The keys a reload cannot change while running (sockets bound, threads started, links made).
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let listeners = |c: &Config| c.listen.iter().map(|l| (l.addr, l.tls.is_some())).collect::<Vec<_>>();
    let mut keys = Vec::new();
    if listeners(old) != listeners(new) {
        keys.push("listen / [[listener]] addresses");
    }
    if old.workers != new.workers {
        keys.push("server.workers");
    }
    if old.balance != new.balance {
        keys.push("server.balance");
    }
    if old.user != new.user {
        keys.push("server.user");
    }
    if old.admin.as_ref().map(|a| &a.listen) != new.admin.as_ref().map(|a| &a.listen) {
        keys.push("admin.listen (or adding / removing [admin])");
    }
    if format!("{:?}", old.cluster) != format!("{:?}", new.cluster) {
        keys.push("[cluster]");
    }
    keys
}

/// One published frame in each form its receivers take, made at most once each: as it is,
/// compressed for a window (the receivers that negotiated permessage-deflate), or framed for
/// the legacy drafts.
struct Forms<'f> {
    frame: &'f SharedFrame,
    payload_len: usize,
    compressed: [Option<SharedFrame>; 7],
    /// `Some(None)`: the payload is not UTF-8, no legacy form.
    legacy: Option<Option<SharedFrame>>,
}

impl<'f> Forms<'f> {
    fn new(frame: &'f SharedFrame) -> Forms<'f> {
        let payload_len = crate::encode::frame_parts(frame).map_or(0, |(_, p)| p.len());
        Forms { frame, payload_len, compressed: Default::default(), legacy: None }
    }

    /// The form `conn` takes; `None` when it can take none (a legacy client, a message that is
    /// not text).
    fn for_conn(&mut self, conn: &Connection, codecs: &mut crate::ws::deflate::SharedCodecs) -> Option<&SharedFrame> {
        let frame = self.frame;
        if conn.is_legacy() {
            return self.legacy.get_or_insert_with(|| crate::encode::legacy_twin(frame)).as_ref();
        }
        Some(match conn.deflate_params(self.payload_len) {
            None => frame,
            Some((window, level)) => self.compressed[usize::from(window.clamp(9, 15) - 9)]
                .get_or_insert_with(|| crate::encode::compressed_twin(codecs, window, level, frame)),
        })
    }
}
