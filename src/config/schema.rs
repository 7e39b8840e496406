//! The file format: TOML sections as serde reads them, and the value syntaxes (sizes,
//! durations, addresses).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::MAX_WORKERS;
use crate::limits::{Limits, OnBackpressure};

// ---- the file format ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub(super) server: ServerSection,
    #[serde(default)]
    pub(super) limits: LimitsSection,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<toml::Spanned<RouteSection>>,
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<ListenerSection>,
    pub(super) admin: Option<toml::Spanned<AdminSection>>,
    #[serde(default)]
    pub(super) broker: BrokerSection,
    pub(super) cluster: Option<toml::Spanned<ClusterSection>>,
    #[serde(default, rename = "history")]
    pub(super) histories: Vec<toml::Spanned<HistorySection>>,
    pub(super) jwt: Option<toml::Spanned<JwtSection>>,
    pub(super) proxy: Option<toml::Spanned<ProxySection>>,
}

/// `[proxy]`: the application that decides for `auth = "proxy"` and `subscribe_proxy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProxySection {
    pub(super) connect_url: Option<String>,
    pub(super) subscribe_url: Option<String>,
    pub(super) timeout: Option<Secs>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_pending: Option<usize>,
    pub(super) headers: Option<Vec<String>>,
    pub(super) cookies: Option<Vec<String>>,
    pub(super) max_answer_size: Option<ByteSize>,
    pub(super) unix_socket: Option<PathBuf>,
    /// Headers wsgate adds to every request (a key the application checks), `file:` values read.
    pub(super) request_headers: Option<std::collections::BTreeMap<String, String>>,
}

/// `[jwt]`: the keys that sign connection and channel tokens, and the rules they must pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JwtSection {
    /// An HMAC secret (HS256/384/512), or `file:PATH` (the file's bytes, a final newline
    /// dropped).
    pub(super) secret: Option<String>,
    /// A PEM public key (RSA, EC, Ed25519), inline or `file:PATH`.
    pub(super) public_key: Option<String>,
    /// `https://...` or `file:PATH`: a JWKS.
    pub(super) jwks: Option<String>,
    pub(super) jwks_refresh: Option<Secs>,
    pub(super) jwks_timeout: Option<Secs>,
    pub(super) jwks_max_size: Option<ByteSize>,
    pub(super) algorithms: Option<Vec<String>>,
    pub(super) leeway: Option<Secs>,
    pub(super) audience: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) max_token_size: Option<ByteSize>,
    /// More keys, each with a `kid`.
    #[serde(default, rename = "key")]
    pub(super) keys: Vec<JwtKeySection>,
}

/// A rate limit: `{ rate = 100, burst = 200, action = "drop", dry_run = false }` (sizes for
/// `rate_bytes`: "1MiB").
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RateSection {
    pub(super) rate: ByteSize,
    pub(super) burst: Option<ByteSize>,
    pub(super) action: Option<String>,
    pub(super) dry_run: Option<bool>,
}

/// `max_connections_per_ip = { max = 100, dry_run = false }`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct CapSection {
    pub(super) max: u32,
    pub(super) dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JwtKeySection {
    pub(super) kid: String,
    pub(super) secret: Option<String>,
    pub(super) public_key: Option<String>,
}

/// `[[history]]`: the topics that keep their last publications.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistorySection {
    pub(super) topics: Vec<String>,
    pub(super) size: usize,
    pub(super) ttl: Secs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterSection {
    pub(super) redis: String,
    /// Overrides the URL's password; `file:PATH` reads it from a file (first line).
    pub(super) password: Option<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) channel_prefix: Option<String>,
    pub(super) ping_interval: Option<Secs>,
    pub(super) ping_timeout: Option<Secs>,
    pub(super) reconnect_min: Option<Secs>,
    pub(super) reconnect_max: Option<Secs>,
    pub(super) max_pending: Option<ByteSize>,
    pub(super) presence_ttl: Option<Secs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    pub(super) listen: String,
    pub(super) max_body: Option<ByteSize>,
    #[serde(default, rename = "key")]
    pub(super) keys: Vec<KeySection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeySection {
    /// The key itself, or `file:PATH` to read it from a file (first line).
    pub(super) key: String,
    pub(super) scope: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BrokerSection {
    pub(super) tokens: Option<String>,
    pub(super) tokens_refresh: Option<Secs>,
    pub(super) tokens_timeout: Option<Secs>,
    pub(super) tokens_max_size: Option<ByteSize>,
    pub(super) websockets_pro_quirks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerSection {
    pub(super) addr: Addr,
    pub(super) tls: Option<TlsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    #[serde(default)]
    pub(super) sni: Vec<SniSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SniSection {
    pub(super) names: Vec<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    pub(super) listen: Option<Vec<Addr>>,
    pub(super) max_connections: Option<usize>,
    pub(super) user: Option<String>,
    pub(super) buffer_pool: Option<ByteSize>,
    pub(super) trim_memory: Option<bool>,
    pub(super) access_log: Option<PathBuf>,
    pub(super) workers: Option<Workers>,
    pub(super) balance: Option<String>,
    pub(super) history_memory: Option<ByteSize>,
}

/// `workers`: a number, or "auto".
pub(super) struct Workers(pub(super) usize);

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
pub(super) struct LimitsSection {
    pub(super) max_message_size: Option<ByteSize>,
    pub(super) max_frame_size: Option<ByteSize>,
    pub(super) max_head_size: Option<ByteSize>,
    pub(super) max_headers: Option<usize>,
    pub(super) handshake_timeout: Option<Secs>,
    pub(super) tls_handshake_timeout: Option<Secs>,
    pub(super) idle_timeout: Option<Secs>,
    pub(super) ping_interval: Option<Secs>,
    pub(super) pong_timeout: Option<Secs>,
    pub(super) close_timeout: Option<Secs>,
    pub(super) write_timeout: Option<Secs>,
    pub(super) backpressure_high: Option<ByteSize>,
    pub(super) max_queued: Option<ByteSize>,
    pub(super) drain_timeout: Option<Secs>,
    pub(super) max_backpressure: Option<ByteSize>,
    pub(super) on_backpressure: Option<Backpressure>,
}

/// `on_backpressure` as written in the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backpressure(pub(super) OnBackpressure);

impl<'de> Deserialize<'de> for Backpressure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OnBackpressure::parse(&s).map(Backpressure).map_err(de::Error::custom)
    }
}

impl LimitsSection {
    pub(super) fn apply(&self, base: Limits) -> Limits {
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
            timing: base.timing,
        }
        .settled()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSection {
    pub(super) path: String,
    pub(super) app: Option<String>,
    pub(super) backend: Option<String>,
    pub(super) socket_dir: Option<PathBuf>,
    /// `static = "DIR"`: the files under DIR (`static` is a Rust keyword).
    #[serde(rename = "static")]
    pub(super) static_dir: Option<PathBuf>,
    pub(super) allow: Option<Vec<String>>,
    pub(super) deny: Option<Vec<String>>,
    pub(super) framing: Option<String>,
    pub(super) message_type: Option<String>,
    pub(super) splice: Option<bool>,
    pub(super) exclude_sender: Option<bool>,
    pub(super) topics: Option<Vec<String>>,
    pub(super) client_publish: Option<bool>,
    pub(super) client_history: Option<bool>,
    pub(super) presence: Option<bool>,
    pub(super) max_subscriptions: Option<usize>,
    pub(super) max_topic_length: Option<usize>,
    pub(super) allow_unregistered: Option<bool>,
    pub(super) auth: Option<String>,
    pub(super) private: Option<Vec<String>>,
    pub(super) subscribe_proxy: Option<Vec<String>>,
    pub(super) rate_messages: Option<RateSection>,
    pub(super) rate_bytes: Option<RateSection>,
    pub(super) rate_operations: Option<RateSection>,
    pub(super) rate_handshakes_per_ip: Option<RateSection>,
    pub(super) rate_messages_per_user: Option<RateSection>,
    pub(super) max_connections_per_ip: Option<CapSection>,
    pub(super) files: Option<Vec<PathBuf>>,
    pub(super) backlog: Option<usize>,
    pub(super) require_key: Option<bool>,
    pub(super) plugin: Option<PathBuf>,
    pub(super) init: Option<String>,
    pub(super) plugin_threads: Option<usize>,
    pub(super) compression: Option<String>,
    pub(super) compression_level: Option<i32>,
    pub(super) compression_threshold: Option<ByteSize>,
    pub(super) compression_window_bits: Option<u8>,
    pub(super) compression_mem_level: Option<u8>,
    pub(super) compression_max_dedicated: Option<usize>,
    #[serde(default)]
    pub(super) legacy: Vec<String>,
    #[serde(default)]
    pub(super) origins: Vec<String>,
    #[serde(default)]
    pub(super) subprotocols: Vec<String>,
    #[serde(flatten)]
    pub(super) limits: RouteLimits,
}

/// The limits a route may override (the server-wide ones, such as the head size and the drain
/// timeout, apply before a route is known and are not per route).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteLimits {
    pub(super) max_message_size: Option<ByteSize>,
    pub(super) max_frame_size: Option<ByteSize>,
    pub(super) idle_timeout: Option<Secs>,
    pub(super) ping_interval: Option<Secs>,
    pub(super) pong_timeout: Option<Secs>,
    pub(super) close_timeout: Option<Secs>,
    pub(super) write_timeout: Option<Secs>,
    pub(super) backpressure_high: Option<ByteSize>,
    pub(super) max_queued: Option<ByteSize>,
    pub(super) max_backpressure: Option<ByteSize>,
    pub(super) on_backpressure: Option<Backpressure>,
}

impl RouteLimits {
    pub(super) fn as_section(&self) -> LimitsSection {
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
pub(super) struct ByteSize(pub(super) usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_unit_string(d, |n| usize::try_from(n).map_err(|_| "size too large".to_string()), parse_size)
            .map(ByteSize)
    }
}

/// A duration: an integer of seconds, or a string with a unit ("500ms", "10s", "5m", "1h").
#[derive(Debug, Clone, Copy)]
pub(super) struct Secs(pub(super) Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_unit_string(d, |n| Ok(Duration::from_secs(n)), parse_duration).map(Secs)
    }
}

/// A value written either as a bare integer or as a string with a unit.
pub(super) fn int_or_unit_string<'de, D: Deserializer<'de>, T>(
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
pub(super) struct Addr(pub(super) SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s).map(Addr).map_err(de::Error::custom)
    }
}

/// An address as `listen` takes it: `"127.0.0.1:8080"`, `"[::1]:8080"`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("invalid listen address {s:?} (expected e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"))
}

/// A size as the configuration takes it: bytes, or with a unit (`"64KiB"`, `"32MiB"`).
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

/// A duration as the configuration takes it: seconds, or with a unit (`"500ms"`, `"2m"`).
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
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}
