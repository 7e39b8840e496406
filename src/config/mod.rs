//! Configuration: TOML → a validated [`Config`]. Every limit has a documented default
//! (`conf/wsgate.toml` lists them all); unknown keys and bad values are errors naming the key
//! and the line. With no file, [`Config::embedded_default`] serves `127.0.0.1:8080` with `/echo`
//! and the demo page at `/`.

mod schema;
mod sections;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::config::{AdminConfig, AdminListen};
use crate::backend::{Framing, SocketSource};
use crate::broker::config::BrokerConfig;
use crate::cluster::config::ClusterConfig;
use crate::limits::Limits;
use crate::route::{AppKind, Route};
use crate::tls::{CertFiles, TlsSettings};
pub use schema::{auto_workers, parse_duration, parse_listen, parse_size, parse_workers};
use schema::{line_of, File};
use sections::*;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect (`listen`, `[[listener]]`).
    pub listen: Vec<Listener>,
    /// Open connections the process serves at most (`max_connections`).
    pub max_connections: usize,
    /// Drop root privileges to this user once the listeners are bound.
    pub user: Option<String>,
    /// Most bytes of free I/O buffers kept for reuse (`buffer_pool`).
    pub buffer_pool: usize,
    /// Give freed memory back to the system (`trim_memory`, glibc `malloc_trim`).
    pub trim_memory: bool,
    /// Append access lines to this file instead of the log (`access_log`).
    pub access_log: Option<PathBuf>,
    /// Server-wide limits, and every route's defaults (`[limits]`).
    pub limits: Limits,
    /// The routes, in the file's order (`[[route]]`).
    pub routes: Vec<Route>,
    /// The management listener (`[admin]`), off unless configured.
    pub admin: Option<AdminConfig>,
    /// The token broker's registered tokens (`[broker]`).
    pub broker: BrokerConfig,
    /// Reactor threads (`workers`; `"auto"`: the CPUs this process may run on).
    pub workers: usize,
    /// How connections reach the workers (`balance`).
    pub balance: Balance,
    /// Pub/sub across wsgate nodes through Redis (`[cluster]`), off unless configured.
    pub cluster: Option<ClusterConfig>,
    /// The topics that keep history (`[[history]]`) and its memory bound (`history_memory`).
    pub history: Arc<crate::history::Rules>,
    /// `[jwt]`: how connection and channel tokens are verified (shared by the routes).
    pub jwt: Option<Arc<crate::auth::jwt::Verifier>>,
    /// `[proxy]`: the application asked by `auth = "proxy"` and `subscribe_proxy` routes.
    pub proxy: Option<Arc<crate::auth::proxy::Proxy>>,
}

/// Most workers: a worker's index lives in 8 bits of every connection id.
pub const MAX_WORKERS: usize = 256;
/// The longest timeout: a connection keeps its deadlines as 32-bit millisecond stamps
/// ([`crate::stamp`]), exact within 24 days of now.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20 * 86_400);

/// The first of `l`'s connection timeouts longer than [`MAX_TIMEOUT`], by its key.
fn too_long_timeout(l: &Limits) -> Option<&'static str> {
    [
        ("handshake_timeout", l.handshake_timeout),
        ("tls_handshake_timeout", l.tls_handshake_timeout),
        ("idle_timeout", l.idle_timeout),
        ("ping_interval", l.ping_interval),
        ("pong_timeout", l.pong_timeout),
        ("close_timeout", l.close_timeout),
        ("write_timeout", l.write_timeout),
    ]
    .into_iter()
    .find(|(_, d)| *d > MAX_TIMEOUT)
    .map(|(key, _)| key)
}

/// The largest message or frame a route may accept (the decoder keeps its limits in 30 bits).
pub const MAX_MESSAGE_SIZE: usize = crate::ws::message::MAX_LIMIT as usize;

/// The largest `max_connections` (per worker): the loop's timers keep a slab key in 24 bits.
pub const MAX_CONNECTIONS: usize = (1 << 24) - 1024;

/// How accepted connections are spread over the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every worker has its own `SO_REUSEPORT` socket per address; the kernel picks one per
    /// connection (by a hash of the addresses).
    ReusePort,
    /// Worker 0 accepts, and hands each socket to the worker with the fewest connections.
    Handoff,
}

/// One listening address, plain or TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The address (port 0: any free port).
    pub addr: SocketAddr,
    /// Certificates, for `wss://`.
    pub tls: Option<TlsSettings>,
}

impl Listener {
    /// A plain (`ws://`) listener.
    pub fn plain(addr: SocketAddr) -> Listener {
        Listener { addr, tls: None }
    }

    /// `"http/ws"` or `"https/wss"`, for the log.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https/wss"
        } else {
            "http/ws"
        }
    }
}

/// A configuration error: which file, which line or key, and what is wrong.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key or a bad value (the message names the key and line).
    Syntax(String),
    /// A route's keys break a rule (the route starts at `line`).
    Route {
        /// The line of the route's `[[route]]`.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A section other than a route (`[admin]`, `[cluster]`) breaks a rule (it starts at
    /// `line`; the message names the key, as `admin.listen`).
    /// `line`).
    Section {
        /// The section's name.
        section: &'static str,
        /// The line it starts at.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A rule across keys or sections (checked after parsing and command-line overrides).
    Invalid(String),
    /// Any of the above, in the file `path`.
    InFile {
        /// The file.
        path: PathBuf,
        /// The error in it.
        error: Box<ConfigError>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "{}: cannot read config: {error}", path.display()),
            ConfigError::Syntax(m) | ConfigError::Invalid(m) => f.write_str(m),
            ConfigError::Route { line, message } => write!(f, "line {line}: {message}"),
            ConfigError::Section { line, message, .. } => write!(f, "line {line}: {message}"),
            ConfigError::InFile { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// `127.0.0.1:8080`, `/echo` (echo) and `/` (demo page), default limits.
    pub fn embedded_default() -> Config {
        let limits = Limits::default();
        Config {
            listen: vec![Listener::plain(SocketAddr::from(([127, 0, 0, 1], 8080)))],
            max_connections: 10_000,
            user: None,
            buffer_pool: crate::buffer::DEFAULT_POOL_BYTES,
            trim_memory: true,
            access_log: None,
            admin: None,
            broker: BrokerConfig::default(),
            workers: 1,
            balance: Balance::ReusePort,
            cluster: None,
            history: Arc::default(),
            jwt: None,
            proxy: None,
            limits,
            routes: vec![
                Route::new("/", AppKind::Demo, limits),
                Route::new("/echo", AppKind::Echo, limits),
                Route::new("/chat", AppKind::Chat, limits),
                Route::new("/chat/*", AppKind::Chat, limits),
            ],
        }
    }

    /// Reads and validates the file at `path` (relative paths in it are relative to its
    /// directory).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_in(&text, base).map_err(|e| ConfigError::InFile { path: path.to_path_buf(), error: Box::new(e) })
    }

    /// Parses a config whose relative paths are relative to the current directory.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, Path::new(""))
    }

    /// Parses a config whose relative paths (certificates, keys) are relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_string()))?;
        let defaults = Config::embedded_default();
        let limits = file.limits.apply(Limits::default());
        let explicit_listeners = !file.listeners.is_empty();
        let mut listen: Vec<Listener> = match file.server.listen {
            Some(v) => v.into_iter().map(|a| Listener::plain(a.0)).collect(),
            None if explicit_listeners => Vec::new(),
            None => defaults.listen,
        };
        for l in file.listeners {
            let tls = l.tls.map(|t| TlsSettings {
                default: CertFiles { cert: base.join(t.cert), key: base.join(t.key) },
                sni: t
                    .sni
                    .into_iter()
                    .map(|s| (s.names, CertFiles { cert: base.join(s.cert), key: base.join(s.key) }))
                    .collect(),
            });
            listen.push(Listener { addr: l.addr.0, tls });
        }
        let mut config = Config {
            listen,
            max_connections: file.server.max_connections.unwrap_or(defaults.max_connections),
            user: file.server.user,
            buffer_pool: file.server.buffer_pool.map_or(defaults.buffer_pool, |b| b.0),
            trim_memory: file.server.trim_memory.unwrap_or(defaults.trim_memory),
            access_log: file.server.access_log.map(|p| base.join(p)),
            limits,
            routes: Vec::new(),
            admin: match file.admin {
                Some(spanned) => {
                    let line = line_of(text, spanned.span().start);
                    Some(admin_config(spanned.into_inner(), base).map_err(|message| ConfigError::Section {
                        section: "admin",
                        line,
                        message,
                    })?)
                }
                None => None,
            },
            broker: broker_config(file.broker, base).map_err(ConfigError::Invalid)?,
            workers: file.server.workers.map_or(defaults.workers, |w| w.0),
            balance: match file.server.balance.as_deref() {
                Some("reuseport") => Balance::ReusePort,
                None => defaults.balance,
                Some("handoff") => Balance::Handoff,
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "server.balance: {other:?} (expected \"reuseport\" or \"handoff\")"
                    )))
                }
            },
            cluster: match file.cluster {
                Some(spanned) => {
                    let line = line_of(text, spanned.span().start);
                    Some(cluster_config(spanned.into_inner(), base).map_err(|message| ConfigError::Section {
                        section: "cluster",
                        line,
                        message,
                    })?)
                }
                None => None,
            },
            history: Arc::new(history_rules(&file.histories, file.server.history_memory.map(|b| b.0), text)?),
            jwt: match file.jwt {
                Some(spanned) => {
                    let line = line_of(text, spanned.span().start);
                    Some(Arc::new(jwt_config(spanned.into_inner(), base).map_err(|message| ConfigError::Section {
                        section: "jwt",
                        line,
                        message,
                    })?))
                }
                None => None,
            },
            proxy: match file.proxy {
                Some(spanned) => {
                    let line = line_of(text, spanned.span().start);
                    Some(Arc::new(
                        proxy_config(spanned.into_inner(), base).map_err(|message| ConfigError::Section {
                            section: "proxy",
                            line,
                            message,
                        })?,
                    ))
                }
                None => None,
            },
        };
        if file.routes.is_empty() {
            config.routes = defaults.routes.iter().map(|r| Route { limits: Arc::new(limits), ..r.clone() }).collect();
        }
        for spanned in file.routes {
            let line = line_of(text, spanned.span().start);
            let r = spanned.into_inner();
            let at = |message: String| ConfigError::Route { line, message };
            let (app, backend) = route_target(&r, base).map_err(at)?;
            let pubsub = pubsub_policy(&r, app).map_err(at)?;
            let broker = broker_route(&r, app).map_err(at)?;
            let logview = logview_spec(&r, app, base).map_err(at)?;
            let plugin = plugin_spec(&r, app, base).map_err(at)?;
            let compression = compression_spec(&r).map_err(at)?;
            let auth = route_auth(&r, app, config.jwt.as_ref(), config.proxy.as_ref()).map_err(at)?;
            let rates = route_rates(&r, app).map_err(at)?;
            let legacy = legacy_drafts(&r, backend.as_ref()).map_err(at)?;
            let files = match &r.static_dir {
                Some(dir) => Route::static_files(&r.path, &base.join(dir), limits).map_err(at)?.files,
                None => None,
            };
            let route = Route {
                path: r.path.into(),
                app,
                origins: r.origins,
                subprotocols: r.subprotocols,
                limits: Arc::new(r.limits.as_section().apply(limits)),
                backend,
                pubsub: Arc::new(pubsub),
                broker,
                logview,
                compression,
                legacy,
                files,
                plugin,
                custom: None,
                auth: Arc::new(auth),
                rates: Arc::new(rates),
            };
            config.add_route(route).map_err(|message| ConfigError::Route { line, message })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Adds or replaces (same path) a route, checking it.
    pub fn add_route(&mut self, route: Route) -> Result<(), String> {
        if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
            return Err(format!("route.path: {:?} must be an absolute path without query", route.path));
        }
        let stem = route.path.strip_suffix("/*").unwrap_or(&*route.path);
        if stem.contains('*') || (stem.len() < route.path.len() && route.is_prefix()) {
            return Err(format!(
                "route.path: {:?}: `*` may only end a path, as \"/prefix/*\" (and not on socket_dir and static routes, which serve the rest of the path already)",
                route.path
            ));
        }
        for p in &route.subprotocols {
            if p.is_empty() || !p.bytes().all(is_token_byte) {
                return Err(format!("route.subprotocols: {p:?} is not an HTTP token"));
            }
        }
        if let Some(existing) = self.routes.iter_mut().find(|r| r.path == route.path) {
            *existing = route;
        } else {
            self.routes.push(route);
        }
        Ok(())
    }

    /// Checks cross-field rules after parsing and after CLI overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError::Invalid(m));
        for r in &self.routes {
            let Some(spec) = &r.backend else { continue };
            if spec.framing == Framing::Direct {
                if let Some(l) = self.listen.iter().find(|l| l.tls.is_some()) {
                    return err(format!(
                        "route {:?}: framing = \"direct\" hands the client's raw TCP socket to the backend, \
which cannot work on TLS listener {} (use raw, lines or framed there)",
                        r.path, l.addr
                    ));
                }
            }
            if let SocketSource::Dir { dir, .. } = &spec.source {
                if !dir.is_dir() {
                    return err(format!("route {:?}: socket_dir {} is not a directory", r.path, dir.display()));
                }
            }
        }
        if self.listen.is_empty() {
            return err("server.listen: at least one address is needed".into());
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i].iter().any(|b| b.addr == a.addr) {
                return err(format!("listen: {} is listed twice", a.addr));
            }
            if let Some(tls) = &a.tls {
                if tls.sni.iter().any(|(names, _)| names.is_empty()) {
                    return err(format!("listener {}: tls.sni entries need at least one name", a.addr));
                }
            }
        }
        if self.max_connections == 0 {
            return err("server.max_connections: must be at least 1".into());
        }
        if self.max_connections > MAX_CONNECTIONS {
            return err(format!(
                "server.max_connections: at most {MAX_CONNECTIONS} (per worker, the timers' key space)"
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return err(format!("server.workers: must be 1..={MAX_WORKERS} (or \"auto\")"));
        }
        if let Some(AdminConfig { listen: AdminListen::Tcp(addr), keys, .. }) = &self.admin {
            if keys.is_empty() && !addr.ip().is_loopback() {
                return err(format!(
                    "admin.listen: {addr} is not a loopback address, and no [[admin.key]] is configured: \
anyone who can reach it could manage the server (add a key, or listen on 127.0.0.1, ::1 or unix:PATH)"
                ));
            }
            if addr.port() != 0 && self.listen.iter().any(|l| l.addr == *addr) {
                return err(format!("admin.listen: {addr} is also a WebSocket listener"));
            }
        }
        let public = self.listen.iter().find(|l| !l.addr.ip().is_loopback());
        for r in &self.routes {
            let Some(spec) = &r.logview else { continue };
            if spec.require_key && self.admin.as_ref().is_none_or(|a| a.keys.is_empty()) {
                return err(format!("route {:?}: require_key needs an [admin] section with at least one key", r.path));
            }
            if let Some(l) = public {
                if !spec.require_key && r.origins.is_empty() {
                    return err(format!(
                        "route {:?}: a log viewer reveals internal information, and listener {} is not loopback: \
set require_key = true or an origins list",
                        r.path, l.addr
                    ));
                }
            }
        }
        let l = &self.limits;
        // A head must fit one read buffer (64 KiB) with room to spare.
        if !(256..=60 << 10).contains(&l.max_head_size) {
            return err(format!("limits.max_head_size: {} is out of range (256 bytes to 60 KiB)", l.max_head_size));
        }
        if l.max_headers == 0 || l.max_headers > crate::http::request::MAX_HEADERS {
            return err(format!("limits.max_headers: must be 1..={}", crate::http::request::MAX_HEADERS));
        }
        if l.tls_handshake_timeout.is_zero() {
            return err("limits.tls_handshake_timeout: must be more than zero".into());
        }
        if l.handshake_timeout.is_zero() {
            return err("limits.handshake_timeout: must be more than zero (it guards against slowloris)".into());
        }
        if let Some(key) = too_long_timeout(l) {
            return err(format!("limits.{key}: at most {} days", MAX_TIMEOUT.as_secs() / 86_400));
        }
        for r in &self.routes {
            let l = &r.limits;
            let at = |key: &str| format!("route {:?}: {key}", r.path);
            if let Some(key) = too_long_timeout(l) {
                return err(at(&format!("{key}: at most {} days", MAX_TIMEOUT.as_secs() / 86_400)));
            }
            if l.max_message_size == 0 || l.max_frame_size == 0 {
                return err(at("max_message_size / max_frame_size: must be more than zero"));
            }
            if l.max_message_size > MAX_MESSAGE_SIZE || l.max_frame_size > MAX_MESSAGE_SIZE {
                return err(at("max_message_size / max_frame_size: at most 1 GiB - 1"));
            }
            if l.close_timeout.is_zero() || l.write_timeout.is_zero() {
                return err(at("close_timeout / write_timeout: must be more than zero"));
            }
            if !l.ping_interval.is_zero() && l.pong_timeout.is_zero() {
                return err(at("pong_timeout: must be more than zero when pings are on"));
            }
            if l.max_backpressure == 0 {
                return err(at("max_backpressure: must be more than zero"));
            }
            if l.backpressure_high == 0 || l.max_queued < l.backpressure_high {
                return err(at("max_queued: must be at least backpressure_high (and both more than zero)"));
            }
        }
        Ok(())
    }

    /// The longest any connection may take to finish once the server starts draining.
    pub fn drain_timeout(&self) -> Duration {
        self.limits.drain_timeout
    }
}
