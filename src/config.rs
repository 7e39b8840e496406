//! Configuration: TOML → a validated [`Config`]. Every limit has a documented default
//! (`conf/wsgate.toml` lists them all); unknown keys and bad values are errors naming the key
//! and the line. With no file, [`Config::embedded_default`] serves `127.0.0.1:8080` with `/echo`
//! and the demo page at `/`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::apps::pubsub::Policy as PubSubPolicy;
use crate::backend::{BackendSpec, Framing, SocketSource};
use crate::tls::{CertFiles, TlsSettings};
use crate::ws::message::MessageKind;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Listener>,
    pub max_connections: usize,
    /// Drop root privileges to this user once the listeners are bound.
    pub user: Option<String>,
    /// Most bytes of free I/O buffers kept for reuse (`buffer_pool`).
    pub buffer_pool: usize,
    /// Give freed memory back to the system (`trim_memory`, glibc `malloc_trim`).
    pub trim_memory: bool,
    /// Append access lines to this file instead of the log (`access_log`).
    pub access_log: Option<PathBuf>,
    pub limits: Limits,
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
}

/// Most workers: a worker's index lives in 8 bits of every connection id.
pub const MAX_WORKERS: usize = 256;

/// How accepted connections are spread over the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every worker has its own `SO_REUSEPORT` socket per address; the kernel picks one per
    /// connection (by a hash of the addresses).
    ReusePort,
    /// Worker 0 accepts, and hands each socket to the worker with the fewest connections.
    Handoff,
}

/// `[cluster]`: the Redis server that carries topics, chat rooms and broker messages between
/// wsgate nodes.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis: RedisAddr,
    /// Every channel's name starts with this (`channel_prefix`).
    pub prefix: String,
    /// How often the subscription connection is probed with PING, and how long a probe (or any
    /// reply) may take before the connection counts as dead and is replaced.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Reconnecting waits from `reconnect_min`, doubling up to `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Most bytes of publishes waiting for Redis (past it, publishes are dropped and counted).
    pub max_pending: usize,
}

/// Where Redis is: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// For `rediss://`: trust these CA certificates (PEM) instead of the system's roots.
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for RedisAddr {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

impl RedisAddr {
    /// Parses a `redis://` or `rediss://` URL.
    pub fn parse(s: &str) -> Result<RedisAddr, String> {
        let url = url::Url::parse(s).map_err(|e| format!("{e} (expected e.g. \"redis://127.0.0.1:6379\")"))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => return Err(format!("scheme {other:?}: expected redis:// or rediss://")),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err("no host".into()),
        };
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| "the user or password is not valid percent-encoded UTF-8".to_string())
        };
        let username = Some(url.username()).filter(|u| !u.is_empty()).map(decode).transpose()?;
        let password = url.password().map(decode).transpose()?;
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse().map_err(|_| format!("database {n:?}: expected a number"))?,
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err("no query or fragment is understood".into());
        }
        Ok(RedisAddr { host, port: url.port().unwrap_or(6379), tls, username, password, db, ca: None })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

/// `[admin]`: where the management API, `/metrics` and the dashboard listen, and who may
/// use them.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: AdminListen,
    pub keys: Arc<[ApiKey]>,
    /// Largest request body accepted (413 above).
    pub max_body: usize,
}

/// Where the admin listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    /// A UNIX-domain socket (`unix:/run/wsgate/admin.sock`): guarded by its file permissions.
    Unix(PathBuf),
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Tcp(a) => write!(f, "{a}"),
            AdminListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One management key and what it may do.
#[derive(Clone)]
pub struct ApiKey {
    pub key: String,
    pub scope: Scope,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even in a debug dump of the configuration.
        write!(f, "ApiKey {{ scope: {:?}, key: <{} bytes> }}", self.scope, self.key.len())
    }
}

/// What a key may do; each scope includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET endpoints: clients, topics, info, metrics, the dashboard.
    Read,
    /// Publish, broadcast, send.
    Publish,
    /// Disconnect, subscribe, unsubscribe, token registration.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }
}

/// `[broker]`: where the registered tokens come from.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub tokens: Option<TokenSource>,
    /// Fetch the tokens again this often (`None`: at start and on SIGHUP only).
    pub tokens_refresh: Option<Duration>,
    /// A fetch that takes longer fails (the old list stays).
    pub tokens_timeout: Duration,
    /// A token list larger than this is refused (the old list stays).
    pub tokens_max_size: usize,
    /// websockets_pro's undocumented behaviour: receivers matched by substring, payloads
    /// delivered JSON-quoted.
    pub websockets_pro_quirks: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            tokens: None,
            tokens_refresh: None,
            tokens_timeout: Duration::from_secs(5),
            tokens_max_size: 1 << 20,
            websockets_pro_quirks: false,
        }
    }
}

/// Where registered tokens are read from: a JSON object `{"token": true, ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    /// `http://` or `https://`.
    Url(String),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "file:{}", p.display()),
            TokenSource::Url(u) => f.write_str(u),
        }
    }
}

/// A token-broker route's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerRoute {
    /// Clients without a (registered) token are let in as `unregistered`.
    pub allow_unregistered: bool,
    /// Clients may route messages to other tokens.
    pub client_publish: bool,
}

impl Default for BrokerRoute {
    fn default() -> Self {
        BrokerRoute { allow_unregistered: true, client_publish: false }
    }
}

/// A log-viewer route: the files it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogviewSpec {
    pub files: Vec<PathBuf>,
    /// Lines a new viewer gets first, per file.
    pub backlog: usize,
    /// Viewers must present a management key (`?key=` or `Authorization: Bearer`).
    pub require_key: bool,
}

/// One listening address, plain or TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<TlsSettings>,
}

impl Listener {
    pub fn plain(addr: SocketAddr) -> Listener {
        Listener { addr, tls: None }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https/wss"
        } else {
            "http/ws"
        }
    }
}

/// Limits and timeouts; every route starts from these and may override some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_frame_size: usize,
    pub max_head_size: usize,
    pub max_headers: usize,
    pub handshake_timeout: Duration,
    /// From accept to a finished TLS handshake (TLS listeners).
    pub tls_handshake_timeout: Duration,
    /// Close a connection from which no message arrived for this long (zero: never).
    pub idle_timeout: Duration,
    /// Ping a peer that has been silent this long (zero: never).
    pub ping_interval: Duration,
    /// Close a peer that did not answer a ping within this time.
    pub pong_timeout: Duration,
    /// How long to wait for the peer's close frame, and then for its FIN.
    pub close_timeout: Duration,
    /// Close a peer that accepts none of the queued output for this long.
    pub write_timeout: Duration,
    /// Stop reading from a peer while this many bytes wait to be sent to it.
    pub backpressure_high: usize,
    /// Close a peer (1008) once this many bytes wait to be sent to it.
    pub max_queued: usize,
    /// On SIGTERM / SIGINT, how long connections get to finish their close handshake.
    pub drain_timeout: Duration,
    /// Most bytes (and queue entries) waiting for one client before messages published to it
    /// meet `on_backpressure`.
    pub max_backpressure: usize,
    pub on_backpressure: OnBackpressure,
}

/// What happens to a message published to a client that is too slow to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackpressure {
    /// Close the client (1008, "slow consumer"); nothing more is queued for it.
    Close,
    /// Skip the message for this client; counted in its access line and per topic.
    Drop,
}

impl OnBackpressure {
    fn parse(s: &str) -> Result<OnBackpressure, String> {
        match s {
            "close" => Ok(OnBackpressure::Close),
            "drop" => Ok(OnBackpressure::Drop),
            other => Err(format!("on_backpressure: {other:?} (expected \"close\" or \"drop\")")),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 32 << 20,
            max_frame_size: 32 << 20,
            max_head_size: 8 << 10,
            max_headers: 32,
            handshake_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            backpressure_high: 1 << 20,
            max_queued: 64 << 20,
            drain_timeout: Duration::from_secs(10),
            max_backpressure: 1 << 20,
            on_backpressure: OnBackpressure::Close,
        }
    }
}

/// What serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// WebSocket: every message comes back to its sender.
    Echo,
    /// Plain HTTP: the embedded demo page.
    Demo,
    /// WebSocket: the path names a room; every message goes to every member.
    Chat,
    /// WebSocket: topics in a JSON protocol (subscribe, unsubscribe, publish).
    PubSub,
    /// WebSocket: every message goes to a backend on a UNIX socket (see `Route::backend`).
    Backend,
    /// WebSocket: the websockets_pro token broker (messages routed to tokens).
    Broker,
    /// WebSocket: lines appended to log files, as they arrive.
    Logview,
    /// WebSocket: the admin listener's dashboard feed (not configurable).
    Dashboard,
    /// Plain HTTP: the files under a directory (see `Route::files`).
    Static,
}

impl AppKind {
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Echo => "echo",
            AppKind::Demo => "demo",
            AppKind::Chat => "chat",
            AppKind::PubSub => "pubsub",
            AppKind::Backend => "backend",
            AppKind::Broker => "broker",
            AppKind::Logview => "logview",
            AppKind::Dashboard => "dashboard",
            AppKind::Static => "static",
        }
    }

    pub fn parse(name: &str) -> Result<AppKind, String> {
        match name {
            "echo" => Ok(AppKind::Echo),
            "demo" => Ok(AppKind::Demo),
            "chat" => Ok(AppKind::Chat),
            "pubsub" => Ok(AppKind::PubSub),
            "broker" => Ok(AppKind::Broker),
            "logview" => Ok(AppKind::Logview),
            other => Err(format!(
                "unknown app {other:?} (expected \"echo\", \"chat\", \"pubsub\", \"broker\", \"logview\" or \"demo\")"
            )),
        }
    }

    pub fn is_websocket(self) -> bool {
        !matches!(self, AppKind::Demo | AppKind::Static)
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Shared with the access log of every connection it serves.
    pub path: Arc<str>,
    pub app: AppKind,
    /// Allowed `Origin` values; empty means any.
    pub origins: Vec<String>,
    /// Subprotocols offered, in order of preference.
    pub subprotocols: Vec<String>,
    /// Shared with every connection the route serves (one pointer each, not a copy).
    pub limits: Arc<Limits>,
    /// Set when `app` is [`AppKind::Backend`].
    pub backend: Option<BackendSpec>,
    /// Pub/sub policy (chat, pubsub, and backends' SUBSCRIBE records).
    pub pubsub: Arc<PubSubPolicy>,
    /// The token broker's policy (broker routes).
    pub broker: BrokerRoute,
    /// Set when `app` is [`AppKind::Logview`].
    pub logview: Option<Arc<LogviewSpec>>,
    /// permessage-deflate (RFC 7692), off unless configured.
    pub compression: CompressionSpec,
    /// The legacy drafts (hixie-76, hixie-75) this route also accepts; none by default.
    pub legacy: crate::ws::hixie::Drafts,
    /// Set when `app` is [`AppKind::Static`]: the directory, open.
    pub files: Option<Arc<crate::http::static_files::StaticDir>>,
}

/// A route's `compression`, `compression_level`, `compression_threshold`,
/// `compression_window_bits` and `compression_mem_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSpec {
    pub mode: crate::ws::extensions::Compression,
    /// zlib's level, 0 (stored) to 9.
    pub level: i32,
    /// Messages shorter than this go uncompressed.
    pub threshold: usize,
    /// Dedicated mode: at most this many connections per worker hold codecs of their own;
    /// past it, new connections are answered as shared (no context takeover).
    pub max_dedicated: usize,
}

impl Default for CompressionSpec {
    fn default() -> Self {
        CompressionSpec { mode: crate::ws::extensions::Compression::Off, level: 1, threshold: 64, max_dedicated: 1000 }
    }
}

/// A configuration error: which file, which line or key, and what is wrong.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, error: std::io::Error },
    /// TOML syntax, an unknown key or a bad value (the message names the key and line).
    Syntax(String),
    /// A route's keys break a rule (the route starts at `line`).
    Route { line: usize, message: String },
    /// A rule across keys or sections (checked after parsing and command-line overrides).
    Invalid(String),
    /// Any of the above, in the file `path`.
    InFile { path: PathBuf, error: Box<ConfigError> },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "{}: cannot read config: {error}", path.display()),
            ConfigError::Syntax(m) | ConfigError::Invalid(m) => f.write_str(m),
            ConfigError::Route { line, message } => write!(f, "line {line}: {message}"),
            ConfigError::InFile { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---- the file format ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default, rename = "route")]
    routes: Vec<toml::Spanned<RouteSection>>,
    #[serde(default, rename = "listener")]
    listeners: Vec<ListenerSection>,
    admin: Option<toml::Spanned<AdminSection>>,
    #[serde(default)]
    broker: BrokerSection,
    cluster: Option<toml::Spanned<ClusterSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    redis: String,
    /// Overrides the URL's password; `file:PATH` reads it from a file (first line).
    password: Option<String>,
    ca: Option<PathBuf>,
    channel_prefix: Option<String>,
    ping_interval: Option<Secs>,
    ping_timeout: Option<Secs>,
    reconnect_min: Option<Secs>,
    reconnect_max: Option<Secs>,
    max_pending: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: String,
    max_body: Option<ByteSize>,
    #[serde(default, rename = "key")]
    keys: Vec<KeySection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    /// The key itself, or `file:PATH` to read it from a file (first line).
    key: String,
    scope: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BrokerSection {
    tokens: Option<String>,
    tokens_refresh: Option<Secs>,
    tokens_timeout: Option<Secs>,
    tokens_max_size: Option<ByteSize>,
    websockets_pro_quirks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    addr: Addr,
    tls: Option<TlsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    sni: Vec<SniSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SniSection {
    names: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Vec<Addr>>,
    max_connections: Option<usize>,
    user: Option<String>,
    buffer_pool: Option<ByteSize>,
    trim_memory: Option<bool>,
    access_log: Option<PathBuf>,
    workers: Option<Workers>,
    balance: Option<String>,
}

/// `workers`: a number, or "auto".
struct Workers(usize);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_unit_string(
            d,
            |n| usize::try_from(n).map_err(|_| "too many workers".to_string()),
            |s| match s {
                "auto" => Ok(auto_workers()),
                other => Err(format!("workers: {other:?} (expected a number or \"auto\")")),
            },
        )
        .map(Workers)
    }
}

/// The CPUs this process may run on (its affinity mask), at most [`MAX_WORKERS`].
pub fn auto_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS)
}

/// `-w N` / `workers = N`: a number or "auto".
pub fn parse_workers(s: &str) -> Result<usize, String> {
    match s {
        "auto" => Ok(auto_workers()),
        n => n.parse().map_err(|_| format!("{n:?}: expected a number of workers or \"auto\"")),
    }
}

/// Every limit key; shared by `[limits]` and each `[[route]]` (which overrides).
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    max_message_size: Option<ByteSize>,
    max_frame_size: Option<ByteSize>,
    max_head_size: Option<ByteSize>,
    max_headers: Option<usize>,
    handshake_timeout: Option<Secs>,
    tls_handshake_timeout: Option<Secs>,
    idle_timeout: Option<Secs>,
    ping_interval: Option<Secs>,
    pong_timeout: Option<Secs>,
    close_timeout: Option<Secs>,
    write_timeout: Option<Secs>,
    backpressure_high: Option<ByteSize>,
    max_queued: Option<ByteSize>,
    drain_timeout: Option<Secs>,
    max_backpressure: Option<ByteSize>,
    on_backpressure: Option<Backpressure>,
}

/// `on_backpressure` as written in the file.
#[derive(Debug, Clone, Copy)]
struct Backpressure(OnBackpressure);

impl<'de> Deserialize<'de> for Backpressure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OnBackpressure::parse(&s).map(Backpressure).map_err(de::Error::custom)
    }
}

impl LimitsSection {
    fn apply(&self, base: Limits) -> Limits {
        Limits {
            max_message_size: self.max_message_size.map_or(base.max_message_size, |b| b.0),
            max_frame_size: self.max_frame_size.map_or(base.max_frame_size, |b| b.0),
            max_head_size: self.max_head_size.map_or(base.max_head_size, |b| b.0),
            max_headers: self.max_headers.unwrap_or(base.max_headers),
            handshake_timeout: self.handshake_timeout.map_or(base.handshake_timeout, |s| s.0),
            tls_handshake_timeout: self.tls_handshake_timeout.map_or(base.tls_handshake_timeout, |s| s.0),
            idle_timeout: self.idle_timeout.map_or(base.idle_timeout, |s| s.0),
            ping_interval: self.ping_interval.map_or(base.ping_interval, |s| s.0),
            pong_timeout: self.pong_timeout.map_or(base.pong_timeout, |s| s.0),
            close_timeout: self.close_timeout.map_or(base.close_timeout, |s| s.0),
            write_timeout: self.write_timeout.map_or(base.write_timeout, |s| s.0),
            backpressure_high: self.backpressure_high.map_or(base.backpressure_high, |b| b.0),
            max_queued: self.max_queued.map_or(base.max_queued, |b| b.0),
            drain_timeout: self.drain_timeout.map_or(base.drain_timeout, |s| s.0),
            max_backpressure: self.max_backpressure.map_or(base.max_backpressure, |b| b.0),
            on_backpressure: self.on_backpressure.map_or(base.on_backpressure, |b| b.0),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    path: String,
    app: Option<String>,
    backend: Option<String>,
    socket_dir: Option<PathBuf>,
    /// `static = "DIR"`: the files under DIR (`static` is a Rust keyword).
    #[serde(rename = "static")]
    static_dir: Option<PathBuf>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    framing: Option<String>,
    message_type: Option<String>,
    splice: Option<bool>,
    exclude_sender: Option<bool>,
    topics: Option<Vec<String>>,
    client_publish: Option<bool>,
    max_subscriptions: Option<usize>,
    max_topic_length: Option<usize>,
    allow_unregistered: Option<bool>,
    files: Option<Vec<PathBuf>>,
    backlog: Option<usize>,
    require_key: Option<bool>,
    compression: Option<String>,
    compression_level: Option<i32>,
    compression_threshold: Option<ByteSize>,
    compression_window_bits: Option<u8>,
    compression_mem_level: Option<u8>,
    compression_max_dedicated: Option<usize>,
    #[serde(default)]
    legacy: Vec<String>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    subprotocols: Vec<String>,
    #[serde(flatten)]
    limits: RouteLimits,
}

/// The limits a route may override (the server-wide ones, such as the head size and the drain
/// timeout, apply before a route is known and are not per route).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RouteLimits {
    max_message_size: Option<ByteSize>,
    max_frame_size: Option<ByteSize>,
    idle_timeout: Option<Secs>,
    ping_interval: Option<Secs>,
    pong_timeout: Option<Secs>,
    close_timeout: Option<Secs>,
    write_timeout: Option<Secs>,
    backpressure_high: Option<ByteSize>,
    max_queued: Option<ByteSize>,
    max_backpressure: Option<ByteSize>,
    on_backpressure: Option<Backpressure>,
}

impl RouteLimits {
    fn as_section(&self) -> LimitsSection {
        LimitsSection {
            max_message_size: self.max_message_size,
            max_frame_size: self.max_frame_size,
            idle_timeout: self.idle_timeout,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            close_timeout: self.close_timeout,
            write_timeout: self.write_timeout,
            backpressure_high: self.backpressure_high,
            max_queued: self.max_queued,
            max_backpressure: self.max_backpressure,
            on_backpressure: self.on_backpressure,
            ..LimitsSection::default()
        }
    }
}

/// A size: an integer of bytes, or a string with a unit ("64KiB", "32MiB", "1GiB", "512B").
#[derive(Debug, Clone, Copy)]
struct ByteSize(usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_unit_string(d, |n| usize::try_from(n).map_err(|_| "size too large".to_string()), parse_size)
            .map(ByteSize)
    }
}

/// A duration: an integer of seconds, or a string with a unit ("500ms", "10s", "5m", "1h").
#[derive(Debug, Clone, Copy)]
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_unit_string(d, |n| Ok(Duration::from_secs(n)), parse_duration).map(Secs)
    }
}

/// A value written either as a bare integer or as a string with a unit.
fn int_or_unit_string<'de, D: Deserializer<'de>, T>(
    d: D,
    from_int: impl FnOnce(u64) -> Result<T, String>,
    from_str: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => from_int(n),
        Raw::Str(s) => from_str(&s),
    }
    .map_err(de::Error::custom)
}

/// A listen address; `*:8080` and `[::]:8080` style is accepted as std parses it.
#[derive(Debug, Clone, Copy)]
struct Addr(SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map(Addr).map_err(de::Error::custom)
    }
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("invalid listen address {s:?} (expected e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"))
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("invalid size {s:?} (expected e.g. 65536, \"64KiB\", \"32MiB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| format!("size {s:?} is too large"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("invalid duration {s:?} (expected e.g. 30, \"500ms\", \"10s\", \"5m\")"))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("unknown duration unit {other:?} in {s:?} (use ms, s, m or h)")),
    })
}

/// 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

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
            limits,
            routes: vec![
                Route::new("/", AppKind::Demo, limits),
                Route::new("/echo", AppKind::Echo, limits),
                Route::new("/chat", AppKind::Chat, limits),
                Route::new("/chat/*", AppKind::Chat, limits),
            ],
        }
    }

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
                    Some(
                        admin_config(spanned.into_inner(), base)
                            .map_err(|message| ConfigError::Route { line, message })?,
                    )
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
                    Some(
                        cluster_config(spanned.into_inner(), base)
                            .map_err(|message| ConfigError::Route { line, message })?,
                    )
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
            let compression = compression_spec(&r).map_err(at)?;
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
        for r in &self.routes {
            let l = &r.limits;
            let at = |key: &str| format!("route {:?}: {key}", r.path);
            if l.max_message_size == 0 || l.max_frame_size == 0 {
                return err(at("max_message_size / max_frame_size: must be more than zero"));
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

impl Route {
    pub fn new(path: &str, app: AppKind, limits: Limits) -> Route {
        Route {
            path: path.into(),
            app,
            origins: Vec::new(),
            subprotocols: Vec::new(),
            limits: Arc::new(limits),
            backend: None,
            pubsub: Arc::default(),
            broker: BrokerRoute::default(),
            logview: None,
            compression: CompressionSpec::default(),
            legacy: crate::ws::hixie::Drafts::default(),
            files: None,
        }
    }

    /// A route serving the files under `dir` (`static = DIR`, `--static DIR`).
    pub fn static_files(path: &str, dir: &Path, limits: Limits) -> Result<Route, String> {
        let files = crate::http::static_files::StaticDir::open(dir)
            .map_err(|e| format!("route {path:?}: static {}: {e}", dir.display()))?;
        Ok(Route { files: Some(Arc::new(files)), ..Route::new(path, AppKind::Static, limits) })
    }

    /// Parses a CLI route `PATH=TARGET`: an app (`/echo=echo`) or a backend
    /// (`/app=unix:/run/app.sock`, framing after `#`: `unix:/run/app.sock#framed`).
    pub fn from_cli(spec: &str, limits: Limits) -> Result<Route, String> {
        let (path, target) = spec.split_once('=').ok_or_else(|| {
            format!("--route {spec:?}: expected PATH=TARGET, e.g. /echo=echo or /app=unix:/run/app.sock")
        })?;
        if let Some(dir) = target.strip_prefix("static:") {
            return Route::static_files(path, Path::new(dir), limits).map_err(|e| format!("--route {spec:?}: {e}"));
        }
        if target.starts_with("unix:") {
            let backend = BackendSpec::from_uri(target).map_err(|e| format!("--route {spec:?}: {e}"))?;
            return Ok(Route { backend: Some(backend), ..Route::new(path, AppKind::Backend, limits) });
        }
        let app = AppKind::parse(target).map_err(|e| format!("--route {spec:?}: {e}"))?;
        Ok(Route::new(path, app, limits))
    }
}

/// A route's target: exactly one of `app`, `backend`, `socket_dir`, `static`, with the backend keys
/// only where they mean something.
fn route_target(r: &RouteSection, base: &Path) -> Result<(AppKind, Option<BackendSpec>), String> {
    let targets = [r.app.is_some(), r.backend.is_some(), r.socket_dir.is_some(), r.static_dir.is_some()];
    if targets.iter().filter(|t| **t).count() != 1 {
        return Err(format!("route {:?}: set exactly one of app, backend, socket_dir, static", r.path));
    }
    let backend_keys =
        r.framing.is_some() || r.message_type.is_some() || r.allow.is_some() || r.deny.is_some() || r.splice.is_some();
    if backend_keys && (r.app.is_some() || r.static_dir.is_some()) {
        return Err(format!("route {:?}: framing, message_type, allow and deny belong to backend routes", r.path));
    }
    if r.static_dir.is_some() {
        return Ok((AppKind::Static, None));
    }
    if let Some(app) = &r.app {
        return AppKind::parse(app).map(|a| (a, None)).map_err(|e| format!("route.app: {e}"));
    }
    let framing =
        r.framing.as_deref().map_or(Ok(Framing::Raw), Framing::parse).map_err(|e| format!("route.framing: {e}"))?;
    let message_kind = match r.message_type.as_deref() {
        None | Some("text") => MessageKind::Text,
        Some("binary") => MessageKind::Binary,
        Some(other) => return Err(format!("route.message_type: {other:?} (expected \"text\" or \"binary\")")),
    };
    let source = if let Some(uri) = &r.backend {
        if r.allow.is_some() || r.deny.is_some() {
            return Err(format!("route {:?}: allow and deny belong to socket_dir routes", r.path));
        }
        let mut spec = BackendSpec::from_uri(uri).map_err(|e| format!("route.backend: {e}"))?;
        if let SocketSource::Path(p) = &mut spec.source {
            *p = base.join(&*p);
        }
        spec.source
    } else {
        let dir = base.join(r.socket_dir.as_ref().expect("checked above"));
        let patterns =
            |key: &str, list: &Option<Vec<String>>, default: &[&str]| -> Result<Vec<glob::Pattern>, String> {
                let list: Vec<String> = list.clone().unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
                list.iter().map(|p| glob::Pattern::new(p).map_err(|e| format!("route.{key}: {p:?}: {e}"))).collect()
            };
        SocketSource::Dir { dir, allow: patterns("allow", &r.allow, &["*"])?, deny: patterns("deny", &r.deny, &[])? }
    };
    let splice = r.splice.unwrap_or(true);
    Ok((AppKind::Backend, Some(BackendSpec { source, framing, message_kind, splice })))
}

/// A route's pub/sub keys, each only where it means something.
fn pubsub_policy(r: &RouteSection, app: AppKind) -> Result<PubSubPolicy, String> {
    let mut policy = PubSubPolicy::default();
    let chat_or_pubsub = matches!(app, AppKind::Chat | AppKind::PubSub);
    if r.exclude_sender.is_some() && !chat_or_pubsub {
        return Err(format!("route {:?}: exclude_sender belongs to chat and pubsub routes", r.path));
    }
    if r.client_publish.is_some() && !matches!(app, AppKind::PubSub | AppKind::Broker) {
        return Err(format!("route {:?}: client_publish belongs to pubsub and broker routes", r.path));
    }
    let pubsub_only = r.topics.is_some() || r.max_topic_length.is_some();
    if pubsub_only && app != AppKind::PubSub {
        return Err(format!("route {:?}: topics and max_topic_length belong to pubsub routes", r.path));
    }
    if r.max_subscriptions.is_some() && !matches!(app, AppKind::PubSub | AppKind::Backend) {
        return Err(format!("route {:?}: max_subscriptions belongs to pubsub and backend routes", r.path));
    }
    if let Some(globs) = &r.topics {
        policy.topics = globs
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| format!("route.topics: {g:?}: {e}")))
            .collect::<Result<_, _>>()?;
    }
    policy.exclude_sender = r.exclude_sender.unwrap_or(policy.exclude_sender);
    policy.client_publish = r.client_publish.unwrap_or(policy.client_publish);
    policy.max_subscriptions = r.max_subscriptions.unwrap_or(policy.max_subscriptions);
    policy.max_topic_length = r.max_topic_length.unwrap_or(policy.max_topic_length);
    if policy.max_topic_length == 0 || policy.max_topic_length > 1024 {
        return Err("route.max_topic_length: must be 1..=1024".into());
    }
    Ok(policy)
}

/// A route's `legacy` list. These drafts have no masking, so a route accepts them only with
/// an origin list that names origins (not `*`); direct mode hands the socket to a backend,
/// which would have to speak them itself.
fn legacy_drafts(r: &RouteSection, backend: Option<&BackendSpec>) -> Result<crate::ws::hixie::Drafts, String> {
    use crate::ws::hixie::{Draft, Drafts};
    let mut drafts = Drafts::default();
    for name in &r.legacy {
        match Draft::parse(name) {
            Some(Draft::Hixie76) => drafts.hixie76 = true,
            Some(Draft::Hixie75) => drafts.hixie75 = true,
            None => return Err(format!("route.legacy: {name:?} (expected \"hixie-76\" or \"hixie-75\")")),
        }
    }
    if !drafts.any() {
        return Ok(drafts);
    }
    if r.origins.is_empty() || r.origins.iter().any(|o| o == "*") {
        return Err("route.legacy: the hixie drafts have no masking (browsers dropped them for that); \
a route accepts them only with an origins list naming the pages allowed to connect (not \"*\")"
            .into());
    }
    if backend.is_some_and(|b| b.framing == Framing::Direct) {
        return Err("route.legacy: framing = \"direct\" hands the socket to the backend, which would have to \
speak the hixie drafts itself (use raw, lines or framed)"
            .into());
    }
    Ok(drafts)
}

fn compression_spec(r: &RouteSection) -> Result<CompressionSpec, String> {
    use crate::ws::extensions::Compression;
    let d = CompressionSpec::default();
    let window_bits = r.compression_window_bits.unwrap_or(15);
    let mem_level = r.compression_mem_level.unwrap_or(8);
    let mode = match r.compression.as_deref() {
        None | Some("off") => Compression::Off,
        Some("shared") => Compression::Shared,
        Some("dedicated") => Compression::Dedicated { window_bits, mem_level },
        Some(other) => {
            return Err(format!("route.compression: {other:?} (expected \"off\", \"shared\" or \"dedicated\")"))
        }
    };
    if !(9..=15).contains(&window_bits) {
        return Err("route.compression_window_bits: must be 9..=15 (zlib cannot deflate with a window of 8)".into());
    }
    if !(1..=9).contains(&mem_level) {
        return Err("route.compression_mem_level: must be 1..=9".into());
    }
    if (r.compression_window_bits.is_some() || r.compression_mem_level.is_some())
        && !matches!(mode, Compression::Dedicated { .. })
    {
        return Err("route.compression_window_bits / compression_mem_level: only with compression = \"dedicated\" (shared compressors use 15 and 8)".into());
    }
    let level = r.compression_level.unwrap_or(d.level);
    if !(0..=9).contains(&level) {
        return Err("route.compression_level: must be 0..=9".into());
    }
    let threshold = r.compression_threshold.map_or(d.threshold, |b| b.0);
    if r.compression_max_dedicated.is_some() && !matches!(mode, Compression::Dedicated { .. }) {
        return Err("route.compression_max_dedicated: only with compression = \"dedicated\"".into());
    }
    let max_dedicated = r.compression_max_dedicated.unwrap_or(d.max_dedicated);
    Ok(CompressionSpec { mode, level, threshold, max_dedicated })
}

fn admin_config(a: AdminSection, base: &Path) -> Result<AdminConfig, String> {
    let mut keys = Vec::new();
    for k in a.keys {
        let scope = match k.scope.as_str() {
            "read" => Scope::Read,
            "publish" => Scope::Publish,
            "admin" => Scope::Admin,
            other => return Err(format!("admin.key.scope: {other:?} (expected \"read\", \"publish\" or \"admin\")")),
        };
        let key = match k.key.strip_prefix("file:") {
            Some(path) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("admin.key: cannot read {}: {e}", path.display()))?;
                text.lines().next().unwrap_or("").trim().to_string()
            }
            None => k.key,
        };
        if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("admin.key.key: keys must be at least 16 printable ASCII characters, without spaces".into());
        }
        if keys.iter().any(|k: &ApiKey| k.key == key) {
            return Err("admin.key.key: the same key is listed twice".into());
        }
        keys.push(ApiKey { key, scope });
    }
    let max_body = a.max_body.map_or(crate::admin::DEFAULT_MAX_BODY, |b| b.0);
    if !(1..=crate::admin::MAX_BODY_LIMIT).contains(&max_body) {
        return Err(format!("admin.max_body: must be 1 byte to {} KiB", crate::admin::MAX_BODY_LIMIT >> 10));
    }
    let listen = match a.listen.strip_prefix("unix:") {
        Some("") => return Err("admin.listen: unix: needs a path, e.g. \"unix:/run/wsgate/admin.sock\"".into()),
        Some(path) => AdminListen::Unix(base.join(path)),
        None => AdminListen::Tcp(parse_listen(&a.listen).map_err(|e| format!("admin.listen: {e}"))?),
    };
    Ok(AdminConfig { listen, keys: keys.into(), max_body })
}

fn cluster_config(c: ClusterSection, base: &Path) -> Result<ClusterConfig, String> {
    let mut redis = RedisAddr::parse(&c.redis).map_err(|e| format!("cluster.redis: {e}"))?;
    if let Some(p) = c.password {
        redis.password = Some(match p.strip_prefix("file:") {
            Some(path) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cluster.password: cannot read {}: {e}", path.display()))?;
                text.lines().next().unwrap_or("").trim_end().to_string()
            }
            None => p,
        });
    }
    if let Some(ca) = c.ca {
        if !redis.tls {
            return Err("cluster.ca: only for rediss:// (TLS)".into());
        }
        redis.ca = Some(base.join(ca));
    }
    let config = ClusterConfig {
        redis,
        prefix: c.channel_prefix.unwrap_or_else(|| "wsgate:".into()),
        ping_interval: c.ping_interval.map_or(Duration::from_secs(5), |s| s.0),
        ping_timeout: c.ping_timeout.map_or(Duration::from_secs(5), |s| s.0),
        reconnect_min: c.reconnect_min.map_or(Duration::from_millis(100), |s| s.0),
        reconnect_max: c.reconnect_max.map_or(Duration::from_secs(10), |s| s.0),
        max_pending: c.max_pending.map_or(8 << 20, |b| b.0),
    };
    if config.prefix.len() > 256 || config.prefix.bytes().any(|b| b.is_ascii_control()) {
        return Err("cluster.channel_prefix: at most 256 bytes, no control characters".into());
    }
    if config.ping_interval.is_zero() || config.ping_timeout.is_zero() {
        return Err("cluster.ping_interval / ping_timeout: must be more than zero".into());
    }
    if config.reconnect_min.is_zero() || config.reconnect_max < config.reconnect_min {
        return Err("cluster.reconnect_min: must be more than zero, and reconnect_max at least as long".into());
    }
    if config.max_pending < 64 << 10 {
        return Err("cluster.max_pending: must be at least 64 KiB".into());
    }
    Ok(config)
}

fn broker_config(b: BrokerSection, base: &Path) -> Result<BrokerConfig, String> {
    let d = BrokerConfig::default();
    let tokens = match b.tokens {
        None => None,
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => Some(TokenSource::Url(s)),
        Some(s) => match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Some(TokenSource::File(base.join(path))),
            _ => {
                return Err(format!(
                    "broker.tokens: {s:?} (expected \"file:/path/tokens.json\" or an http:// or https:// URL)"
                ))
            }
        },
    };
    let config = BrokerConfig {
        tokens,
        tokens_refresh: b.tokens_refresh.map(|s| s.0).filter(|d| !d.is_zero()),
        tokens_timeout: b.tokens_timeout.map_or(d.tokens_timeout, |s| s.0),
        tokens_max_size: b.tokens_max_size.map_or(d.tokens_max_size, |s| s.0),
        websockets_pro_quirks: b.websockets_pro_quirks.unwrap_or(d.websockets_pro_quirks),
    };
    if config.tokens_timeout.is_zero() {
        return Err("broker.tokens_timeout: must be more than zero".into());
    }
    if config.tokens_refresh.is_some_and(|r| r < Duration::from_secs(1)) {
        return Err("broker.tokens_refresh: must be at least 1s (or 0 for never)".into());
    }
    if config.tokens_refresh.is_some() && config.tokens.is_none() {
        return Err("broker.tokens_refresh: set broker.tokens too".into());
    }
    Ok(config)
}

/// A broker route's keys, only on broker routes.
fn broker_route(r: &RouteSection, app: AppKind) -> Result<BrokerRoute, String> {
    if app != AppKind::Broker {
        if r.allow_unregistered.is_some() {
            return Err(format!("route {:?}: allow_unregistered belongs to broker routes", r.path));
        }
        return Ok(BrokerRoute::default());
    }
    let d = BrokerRoute::default();
    Ok(BrokerRoute {
        allow_unregistered: r.allow_unregistered.unwrap_or(d.allow_unregistered),
        client_publish: r.client_publish.unwrap_or(d.client_publish),
    })
}

/// A log-viewer route's files, only on logview routes.
fn logview_spec(r: &RouteSection, app: AppKind, base: &Path) -> Result<Option<Arc<LogviewSpec>>, String> {
    if app != AppKind::Logview {
        if r.files.is_some() || r.backlog.is_some() || r.require_key.is_some() {
            return Err(format!("route {:?}: files, backlog and require_key belong to logview routes", r.path));
        }
        return Ok(None);
    }
    let files: Vec<PathBuf> = r.files.clone().unwrap_or_default().into_iter().map(|f| base.join(f)).collect();
    if files.is_empty() {
        return Err(format!("route {:?}: a logview route needs files = [\"/path/to/file.log\", ...]", r.path));
    }
    if files.len() > 64 {
        return Err(format!("route {:?}: files: at most 64 per route", r.path));
    }
    let backlog = r.backlog.unwrap_or(100);
    if backlog > 10_000 {
        return Err(format!("route {:?}: backlog: at most 10000 lines", r.path));
    }
    Ok(Some(Arc::new(LogviewSpec { files, backlog, require_key: r.require_key.unwrap_or(false) })))
}

fn is_token_byte(b: u8) -> bool {
    crate::http::is_tchar(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_example_parses_to_the_defaults() {
        let text = include_str!("../conf/wsgate.toml");
        let config = Config::parse(text).unwrap();
        let default = Config::embedded_default();
        assert_eq!(config.listen, default.listen);
        assert!(text.contains("[[listener]]"), "the example documents TLS listeners");
        assert_eq!(config.limits, default.limits);
        assert_eq!(config.max_connections, default.max_connections);
        let paths: Vec<_> = config.routes.iter().map(|r| (&*r.path, r.app)).collect();
        let default_paths: Vec<_> = default.routes.iter().map(|r| (&*r.path, r.app)).collect();
        assert_eq!(paths, default_paths);
    }

    #[test]
    fn the_broker_example_parses() {
        let c = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/broker.toml"))).unwrap();
        let Some(TokenSource::File(tokens)) = &c.broker.tokens else { panic!("a token file") };
        let set =
            crate::broker::tokens::load(&TokenSource::File(tokens.clone()), Duration::from_secs(1), 1 << 20).unwrap();
        assert_eq!(set.len(), 5);
        assert!(matches!(c.admin.as_ref().map(|a| &a.listen), Some(AdminListen::Tcp(_))));
        let broker = c.routes.iter().find(|r| r.app == AppKind::Broker).unwrap();
        assert_eq!(broker.broker, BrokerRoute { allow_unregistered: false, client_publish: true });
        assert!(c.routes.iter().any(|r| r.logview.is_some()));
    }

    #[test]
    fn values_and_overrides() {
        let c = Config::parse(
            r#"
[server]
listen = ["127.0.0.1:9001", "[::1]:9001"]
[limits]
max_message_size = "1MiB"
idle_timeout = "90s"
ping_interval = 0
[[route]]
path = "/e"
app = "echo"
max_message_size = 1000
subprotocols = ["chat"]
"#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen.iter().all(|l| l.tls.is_none()));
        assert_eq!(c.limits.max_message_size, 1 << 20);
        let r = &c.routes[0];
        assert_eq!((r.limits.max_message_size, r.limits.idle_timeout), (1000, Duration::from_secs(90)));
        assert!(r.limits.ping_interval.is_zero());
    }

    #[test]
    fn server_section_memory_and_access_log_keys() {
        let d = Config::parse("").unwrap();
        assert_eq!((d.buffer_pool, d.trim_memory), (crate::buffer::DEFAULT_POOL_BYTES, true));
        let c = Config::parse("[server]\nbuffer_pool = \"512KiB\"\ntrim_memory = false\n").unwrap();
        assert_eq!((c.buffer_pool, c.trim_memory), (512 * 1024, false));
        let e = Config::parse("[server]\nbuffer_pool = \"lots\"\n").unwrap_err().to_string();
        assert!(e.contains("lots") && e.contains("line 2"), "{e}");
        let c = Config::parse_in("[server]\naccess_log = \"access.log\"\n", Path::new("/etc/wsgate")).unwrap();
        assert_eq!(c.access_log.as_deref(), Some(Path::new("/etc/wsgate/access.log")));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            ("[limits]\nmax_mesage_size = 5\n", "max_mesage_size", "line 2"),
            ("[limits]\nidle_timeout = \"5 parsecs\"\n", "parsecs", "line 2"),
            ("[server]\nlisten = [\"localhost\"]\n", "listen address", "line 2"),
            ("\n\n[[route]]\npath = \"/x\"\napp = \"nope\"\n", "route.app", "line 3"),
            ("[[route]]\npath = \"x\"\napp = \"echo\"\n", "route.path", "line 1"),
            ("[limits]\nhandshake_timeout = 0\n", "handshake_timeout", ""),
            ("[limits]\nmax_head_size = \"1MiB\"\n", "max_head_size", ""),
            ("[[route]]\npath = \"/x\"\napp = \"echo\"\nbogus = 1\n", "bogus", "line"),
        ];
        for (text, key, line) in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(line), "{text:?} gave {e}");
        }
    }

    #[test]
    fn tls_listeners_resolve_paths_against_the_config_directory() {
        let text = r#"
[[listener]]
addr = "127.0.0.1:8443"
tls = { cert = "certs/a.pem", key = "/abs/a.key", sni = [{ names = ["x.test"], cert = "x.pem", key = "x.key" }] }
"#;
        let c = Config::parse_in(text, Path::new("/etc/wsgate")).unwrap();
        assert_eq!(c.listen.len(), 1, "[[listener]] alone replaces the default listener");
        let tls = c.listen[0].tls.as_ref().unwrap();
        assert_eq!(tls.default.cert, Path::new("/etc/wsgate/certs/a.pem"));
        assert_eq!(tls.default.key, Path::new("/abs/a.key"));
        assert_eq!(tls.sni[0].0, ["x.test"]);
        assert_eq!(tls.sni[0].1.cert, Path::new("/etc/wsgate/x.pem"));
        let e = Config::parse("[[listener]]\naddr = \"127.0.0.1:1\"\ntls = { cert = \"a\" }\n").unwrap_err();
        assert!(e.to_string().contains("key") && e.to_string().contains("line 3"), "{e}");
    }

    #[test]
    fn backend_routes() {
        let c = Config::parse_in(
            "[[route]]\npath = \"/a\"\nbackend = \"unix:run/a.sock\"\nframing = \"framed\"\nmessage_type = \"binary\"\n",
            Path::new("/etc/wsgate"),
        )
        .unwrap();
        let spec = c.routes[0].backend.as_ref().unwrap();
        assert_eq!((spec.framing, spec.message_kind), (Framing::Framed, MessageKind::Binary));
        assert!(matches!(&spec.source, SocketSource::Path(p) if p == Path::new("/etc/wsgate/run/a.sock")));
        let cases = [
            ("[[route]]\npath = \"/a\"\n", "exactly one"),
            ("[[route]]\npath = \"/a\"\napp = \"echo\"\nbackend = \"unix:/x\"\n", "exactly one"),
            ("[[route]]\npath = \"/a\"\napp = \"echo\"\nframing = \"raw\"\n", "belong to backend"),
            ("[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nframing = \"zip\"\n", "route.framing"),
            ("[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nallow = [\"*\"]\n", "socket_dir"),
            ("[[route]]\npath = \"/a\"\nsocket_dir = \"/nonexistent-dir\"\n", "not a directory"),
            (
                "[[listener]]\naddr = \"127.0.0.1:1\"\ntls = { cert = \"c\", key = \"k\" }\n\
[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nframing = \"direct\"\n",
                "cannot work on TLS",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?} gave {e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("1ZiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_routes() {
        let r = Route::from_cli("/e=echo", Limits::default()).unwrap();
        assert_eq!((&*r.path, r.app), ("/e", AppKind::Echo));
        let r = Route::from_cli("/b=unix:/run/b.sock#lines", Limits::default()).unwrap();
        assert_eq!(r.app, AppKind::Backend);
        assert_eq!(r.backend.unwrap().framing, Framing::Lines);
        assert!(Route::from_cli("/e", Limits::default()).is_err());
        assert!(Route::from_cli("/e=chat2", Limits::default()).is_err());
    }
}
