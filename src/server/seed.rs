//! Starting a worker: its listeners bound and its sources registered on the main thread
//! (so a bad address or certificate stops the start), then the [`Worker`] built on its own
//! thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::accept::{bind_listener, bind_unix, ListenSocket, Listener, ACCEPT_BATCH};
use super::lifecycle::HOUSEKEEPING_INTERVAL;
use super::mesh::{Mailbox, Mesh};
use super::{admin_settings, Reloader, Worker, LISTENER_BASE, MAX_LISTENERS, MAX_RESERVED, SIGNAL_TOKEN};
use crate::access_log::AccessLogFile;
use crate::admin::config::AdminListen;
use crate::broker::tokens::Fetcher;
use crate::broker::Broker;
use crate::buffer::Pools;
use crate::cluster::Cluster;
use crate::config::{Balance, Config};
use crate::connection::AdminSettings;
use crate::logview::Tails;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::{AppKind, Routes};
use crate::tls::build_server_config;

/// Which addresses a worker listens on.
pub(super) enum Binding {
    /// The configuration's (worker 0).
    Configured,
    /// These, already bound by worker 0 (`SO_REUSEPORT`).
    Same(Vec<SocketAddr>),
    /// None: worker 0 hands connections over.
    None,
}

impl Seed {
    #[allow(clippy::disallowed_methods)] // binding, before the loop: its edge
    pub(super) fn bind(
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
                let cluster = Cluster::new(
                    poll.registry().try_clone()?,
                    c,
                    node,
                    mailbox.index,
                    broker,
                    max_message,
                    Instant::now(),
                )
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
    pub(super) config: Arc<Config>,
    pub(super) poll: Poll,
    pub(super) waker: Arc<mio::Waker>,
    pub(super) mailbox: Mailbox,
    pub(super) mesh: Arc<Mesh>,
    pub(super) listeners: Vec<Listener>,
    pub(super) admin: Option<AdminSettings>,
    pub(super) signals: Option<Signals>,
    pub(super) access_file: Option<AccessLogFile>,
    pub(super) cluster: Option<Cluster>,
    pub(super) reload: Option<Reloader>,
}

impl Seed {
    #[allow(clippy::disallowed_methods)] // a worker's start is the loop's edge
    pub(super) fn start(self, tokens: Option<crate::broker::tokens::TokenSet>) -> Worker {
        let Seed { config, poll, waker, mailbox, mesh, listeners, admin, signals, access_file, cluster, reload } = self;
        let mut topics = Topics::new();
        topics.set_history(Arc::clone(&config.history));
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
            plugins: crate::plugin::Hosts::new(Arc::clone(&mesh), mailbox.index),
            generation: 0,
            timers: super::timers::Timers::new(now, reserve),
            busy: Vec::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            actions: Vec::new(),
            topics,
            histories: crate::history::Histories::new(Arc::clone(&config.history)),
            presence: crate::presence::Table::default(),
            presence_of: std::collections::HashMap::new(),
            recovery_ready: false,
            streams: Default::default(),
            routes: Routes::new(config.routes.clone()),
            limits: Arc::new(config.limits),
            max_connections: config.max_connections,
            pools: Pools::new(config.buffer_pool),
            trim_memory: config.trim_memory,
            access_file,
            housekeeping_ms: crate::stamp::millis(now) + HOUSEKEEPING_INTERVAL.as_millis() as i64,
            backend_failures: Default::default(),
            signals,
            accept_paused_ms: None,
            drain_ms: None,
            exit_now: false,
            broker,
            token_fetcher,
            tokens_refresh: config.broker.tokens_refresh.filter(|_| first),
            tokens_refresh_ms: config.broker.tokens_refresh.filter(|_| first).map(|r| crate::stamp::millis(now + r)),
            _waker: waker,
            metrics: Metrics::new(config.routes.len()),
            admin,
            tails: Tails::new(&config.routes),
            tails_ms: crate::stamp::millis(now),
            stats_ms: crate::stamp::millis(now),
            started: now,
            scratch_keys: Vec::new(),
            spare_keys: Vec::new(),
            fd_figures_cache: std::cell::Cell::new(None),
            fd_exhausted: false,
            mailbox,
            notes: Vec::new(),
            mesh,
            hands_off,
            gathers: Default::default(),
            next_gather: 0,
            no_ids: Arc::from(&[][..]),
            cluster,
            reload,
            config,
            codecs: Default::default(),
            stamped: super::turn_clock::Stamped::of(now),
            loop_clock: crate::stamp::LoopClock::new(),
        }
    }
}
