//! The worker's life: what runs on its own clock (log viewers, dashboard figures, token
//! refresh, housekeeping), signals, reloading the configuration and certificates, reopening
//! the access log, and the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mesh::{self, Note};
use super::{admin_settings, manage, Worker};
use signal_hook::consts::SIGHUP;

use crate::access_log::AccessLogFile;
use crate::apps::dashboard::{ACCESS_FEED, STATS_FEED};
use crate::broker::tokens::Fetcher;
use crate::config::Config;
use crate::connection::Ready;
use crate::logview::Tails;
use crate::tls::build_server_config;

/// How often unused pooled buffers are freed (and freed memory given back to the system).
pub(super) const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

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

impl Worker {
    /// What runs on its own clock: the log viewers' files, the dashboard's figures, the
    /// broker's token refresh.
    #[inline]
    pub(super) fn periodic(&mut self, now: Instant, now_ms: i64) {
        let tails_due = !self.tails.is_empty() && now_ms >= self.tails_ms;
        if tails_due || now_ms >= self.stats_ms || self.tokens_refresh_ms.is_some_and(|at| now_ms >= at) {
            self.periodic_due(now, now_ms);
        }
    }

    fn periodic_due(&mut self, now: Instant, now_ms: i64) {
        if !self.tails.is_empty() && now_ms >= self.tails_ms {
            let mut lines = Vec::new();
            let more = self.tails.poll(|feed, frame| {
                lines.push((feed.to_string(), frame.clone()));
            });
            for (feed, frame) in lines {
                self.publish(&feed, &frame, None, &[], now);
            }
            self.flush_dirty(now);
            self.tails_ms = now_ms + if more { 0 } else { crate::logview::POLL_INTERVAL.as_millis() as i64 };
        }
        if now_ms >= self.stats_ms {
            self.stats_ms = now_ms + 1000;
            if self.mailbox.index == 0 {
                self.mesh.set_access_watched(self.topics.has_feed(ACCESS_FEED));
            }
            if self.topics.has_feed(STATS_FEED) && !self.gathers.values().any(manage::Gather::is_stats) {
                // The figures of every worker: published when the last one has answered (one
                // update at a time, however slow a worker is to answer).
                self.gather(manage::Pending::Stats, mesh::Query::Figures, (0..self.mesh.workers()).collect(), now);
            }
        }
        if let (Some(at), Some(every)) = (self.tokens_refresh_ms, self.tokens_refresh) {
            if now_ms >= at {
                self.tokens_refresh_ms = Some(now_ms + every.as_millis() as i64);
                if let Some(f) = &mut self.token_fetcher {
                    f.request();
                }
            }
        }
    }

    /// The token loader finished: the new list replaces the old, or the old one stays.
    pub(super) fn tokens_loaded(&mut self) {
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
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.housekeeping_ms = self.clock(now).ms + HOUSEKEEPING_INTERVAL.as_millis() as i64;
        self.gathers.retain(|_, g| g.is_fresh(now));
        if self.pools.shrink() {
            if self.trim_memory {
                let released = crate::sys::memory::trim_heap();
                log::debug!("buffer pools shrunk; heap trimmed (memory released: {released})");
            }
            self.pools.trimmed();
        }
    }

    /// Worker 0's signals, passed on to every worker.
    pub(super) fn on_signals(&mut self, now: Instant) {
        let Some(signals) = &mut self.signals else { return };
        let received: Vec<i32> = signals.pending().collect();
        let me = self.mailbox.index;
        for signal in received {
            match signal {
                SIGHUP => {
                    let fresh = self.read_config();
                    self.mesh.post_others(me, || Note::Reload(fresh.clone()));
                    self.reload(fresh, now);
                    if let Some(f) = &mut self.token_fetcher {
                        log::info!("SIGHUP: loading the broker's tokens from {}", f.source());
                        f.request();
                    }
                }
                _ if self.drain_ms.is_some() => {
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
    pub(super) fn read_config(&mut self) -> Option<Arc<Config>> {
        let reload = self.reload.as_ref()?;
        match reload() {
            Ok(fresh) => {
                for key in restart_only(&self.config, &fresh) {
                    log::warn!("SIGHUP: {key} changed; that takes a restart (the running value stays)");
                }
                log::info!("SIGHUP: configuration reloaded: {} route(s)", fresh.routes.len());
                if let Some(jwt) = &fresh.jwt {
                    // The new [jwt]'s keys, fetched off the loop (the old ones serve the
                    // connections admitted with them).
                    jwt.start_fetcher(false);
                }
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
    pub(super) fn reload(&mut self, fresh: Option<Arc<Config>>, now: Instant) {
        if let Some(config) = fresh {
            self.apply_config(config, now);
        }
        self.reload_certificates();
        self.reopen_access_log();
    }

    /// Swaps in a reloaded configuration. New connections get the new routes and limits;
    /// open ones keep what they were admitted with. What needs a restart keeps its running
    /// value (see `restart_only`).
    pub(super) fn apply_config(&mut self, config: Arc<Config>, now: Instant) {
        self.routes.replace(config.routes.clone());
        self.topics.set_history(Arc::clone(&config.history));
        self.histories.set_rules(Arc::clone(&config.history));
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
            self.tokens_refresh_ms = config.broker.tokens_refresh.map(|r| crate::stamp::millis(now + r));
        }
        self.config = config;
    }

    /// SIGHUP: re-reads every TLS listener's certificates and keys. New handshakes use the new
    /// ones; established connections keep theirs. A listener whose files fail keeps its old
    /// configuration.
    pub(super) fn reload_certificates(&mut self) {
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
    pub(super) fn reopen_access_log(&mut self) {
        let Some(file) = &mut self.access_file else { return };
        match file.reopen() {
            Ok(()) => log::info!("SIGHUP: reopened the access log {}", file.path().display()),
            Err(e) => {
                log::error!("SIGHUP: access log {}: {e}; writing to the file already open", file.path().display())
            }
        }
    }

    pub(super) fn start_drain(&mut self, now: Instant) {
        let drain = self.limits.drain_timeout;
        log::info!(
            "stop signal: worker {} closing {} connection(s) with 1001, up to {drain:?}",
            self.mailbox.index,
            self.conns.len()
        );
        self.drain_ms = Some(crate::stamp::millis(now + drain));
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
