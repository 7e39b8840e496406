//! `[cluster]`'s settings: where Redis is and how the links behave.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// A node's presence members expire this long after it last renewed them (it renews
    /// every third of it): the most a dead node's members stay listed.
    pub presence_ttl: Duration,
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
