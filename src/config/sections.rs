//! From a file's sections to the domain's types, checking what serde cannot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::schema::*;
use super::ConfigError;
use crate::admin::config::{AdminConfig, AdminListen, ApiKey, Scope};
use crate::apps::pubsub::Policy as PubSubPolicy;
use crate::backend::{BackendSpec, Framing, SocketSource};
use crate::broker::config::{BrokerConfig, TokenSource};
use crate::cluster::config::{ClusterConfig, RedisAddr};
use crate::route::{AppKind, BrokerRoute, CompressionSpec, LogviewSpec, PluginSpec};
use crate::ws::message::MessageKind;

/// A route's target: exactly one of `app`, `backend`, `socket_dir`, `static`, with the backend keys
/// only where they mean something.
pub(super) fn route_target(r: &RouteSection, base: &Path) -> Result<(AppKind, Option<BackendSpec>), String> {
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
pub(super) fn pubsub_policy(r: &RouteSection, app: AppKind) -> Result<PubSubPolicy, String> {
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
    if r.client_history.is_some() && app != AppKind::PubSub {
        return Err(format!("route {:?}: client_history belongs to pubsub routes", r.path));
    }
    policy.client_history = r.client_history.unwrap_or(policy.client_history);
    if r.presence.is_some() && app != AppKind::PubSub {
        return Err(format!("route {:?}: presence belongs to pubsub routes", r.path));
    }
    policy.presence = r.presence.unwrap_or(policy.presence);
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
pub(super) fn legacy_drafts(
    r: &RouteSection,
    backend: Option<&BackendSpec>,
) -> Result<crate::ws::hixie::Drafts, String> {
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

pub(super) fn compression_spec(r: &RouteSection) -> Result<CompressionSpec, String> {
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

pub(super) fn admin_config(a: AdminSection, base: &Path) -> Result<AdminConfig, String> {
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

pub(super) fn cluster_config(c: ClusterSection, base: &Path) -> Result<ClusterConfig, String> {
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
        presence_ttl: c.presence_ttl.map_or(Duration::from_secs(30), |s| s.0),
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
    if config.presence_ttl < Duration::from_secs(1) || config.presence_ttl > Duration::from_secs(3600) {
        return Err("cluster.presence_ttl: 1 second to 1 hour".into());
    }
    Ok(config)
}

pub(super) fn broker_config(b: BrokerSection, base: &Path) -> Result<BrokerConfig, String> {
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
pub(super) fn broker_route(r: &RouteSection, app: AppKind) -> Result<BrokerRoute, String> {
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

/// A plugin route's library, loaded and checked now (so `--check-config` finds every
/// mistake), and its threads: only on plugin routes, which speak RFC 6455 only.
pub(super) fn plugin_spec(r: &RouteSection, app: AppKind, base: &Path) -> Result<Option<PluginSpec>, String> {
    if app != AppKind::Plugin {
        if r.plugin.is_some() || r.init.is_some() || r.plugin_threads.is_some() {
            return Err(format!(
                "route {:?}: plugin, init and plugin_threads belong to plugin routes (app = \"plugin\")",
                r.path
            ));
        }
        return Ok(None);
    }
    let (Some(library), Some(init)) = (&r.plugin, &r.init) else {
        return Err(format!(
            "route {:?}: a plugin route needs plugin = \"/path/to/plugin.so\" and init = \"its_init_function\"",
            r.path
        ));
    };
    if !r.legacy.is_empty() {
        return Err("route.legacy: plugin routes speak RFC 6455 only".into());
    }
    let threads = r.plugin_threads.unwrap_or(PluginSpec::DEFAULT_THREADS);
    if !(1..=PluginSpec::MAX_THREADS).contains(&threads) {
        return Err(format!("route.plugin_threads: {threads} (must be 1..={})", PluginSpec::MAX_THREADS));
    }
    let library = base.join(library);
    let loaded = crate::plugin::load(&library, init).map_err(|e| {
        let key = if matches!(e, crate::plugin::load::LoadError::Open(_)) { "plugin" } else { "init" };
        format!("route.{key}: {} ({init}): {e}", library.display())
    })?;
    Ok(Some(PluginSpec { loaded, threads }))
}

/// A log-viewer route's files, only on logview routes.
pub(super) fn logview_spec(r: &RouteSection, app: AppKind, base: &Path) -> Result<Option<Arc<LogviewSpec>>, String> {
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

pub(super) fn is_token_byte(b: u8) -> bool {
    crate::http::is_tchar(b)
}

/// The `[[history]]` sections, in order, and `history_memory`.
pub(super) fn history_rules(
    sections: &[toml::Spanned<HistorySection>],
    max_bytes: Option<usize>,
    text: &str,
) -> Result<crate::history::Rules, ConfigError> {
    let mut rules = crate::history::Rules::default();
    if let Some(max) = max_bytes {
        if max < 64 << 10 {
            return Err(ConfigError::Invalid("server.history_memory: at least 64KiB".into()));
        }
        rules.max_bytes = max;
    }
    for spanned in sections {
        let line = line_of(text, spanned.span().start);
        let at = |message: String| ConfigError::Section { section: "history", line, message };
        let h = spanned.get_ref();
        if h.topics.is_empty() {
            return Err(at("history.topics: name at least one topic glob".into()));
        }
        let topics = h
            .topics
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| at(format!("history.topics: {g:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        if h.size == 0 || h.size > 1_000_000 {
            return Err(at(format!("history.size: {} (must be 1..=1000000)", h.size)));
        }
        if h.ttl.0.is_zero() || h.ttl.0 > super::MAX_TIMEOUT {
            return Err(at("history.ttl: must be more than 0 and at most 20 days".into()));
        }
        rules.rules.push(crate::history::Rule { topics, size: h.size, ttl: h.ttl.0 });
    }
    Ok(rules)
}

/// A secret or key given inline or as `file:PATH` (the file's bytes, one final newline
/// dropped, so `echo secret > file` works).
fn inline_or_file(value: &str, key: &str, base: &Path) -> Result<Vec<u8>, String> {
    match value.strip_prefix("file:") {
        Some(path) => {
            let path = base.join(path);
            let mut bytes = std::fs::read(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            Ok(bytes)
        }
        None => Ok(value.as_bytes().to_vec()),
    }
}

/// `[jwt]`: the verifier every `auth = "jwt"` route shares.
pub(super) fn jwt_config(j: JwtSection, base: &Path) -> Result<crate::auth::jwt::Verifier, String> {
    use crate::auth::jwt::{hmac_key, parse_algorithm, pem_key, Verifier, ALGORITHMS};
    let mut fixed = Vec::new();
    let mut add =
        |kid: Option<String>, secret: Option<&str>, public_key: Option<&str>, at: &str| -> Result<(), String> {
            match (secret, public_key) {
                (Some(s), None) => fixed.push(
                    hmac_key(kid, &inline_or_file(s, &format!("{at}.secret"), base)?)
                        .map_err(|e| format!("{at}.secret: {e}"))?,
                ),
                (None, Some(p)) => fixed.push(
                    pem_key(kid, &inline_or_file(p, &format!("{at}.public_key"), base)?)
                        .map_err(|e| format!("{at}.public_key: {e}"))?,
                ),
                (Some(_), Some(_)) => return Err(format!("{at}: a key is a secret or a public_key, not both")),
                (None, None) if at == "jwt" => {}
                (None, None) => return Err(format!("{at}: needs a secret or a public_key")),
            }
            Ok(())
        };
    // At the top, a secret and a public key are two keys (HS* and the other type).
    add(None, j.secret.as_deref(), None, "jwt")?;
    add(None, None, j.public_key.as_deref(), "jwt")?;
    for k in &j.keys {
        if k.kid.is_empty() {
            return Err("jwt.key.kid: must not be empty".into());
        }
        add(Some(k.kid.clone()), k.secret.as_deref(), k.public_key.as_deref(), "jwt.key")?;
    }
    let mut kids: Vec<&str> = fixed.iter().filter_map(|k| k.kid.as_deref()).collect();
    kids.sort_unstable();
    if let Some(w) = kids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("jwt.key.kid: {:?} is listed twice", w[0]));
    }
    let jwks = match j.jwks {
        None => None,
        Some(s) => {
            let source = if s.starts_with("https://") || s.starts_with("http://") {
                TokenSource::Url(s)
            } else {
                match s.strip_prefix("file:") {
                    Some(path) if !path.is_empty() => TokenSource::File(base.join(path)),
                    _ => return Err(format!("jwt.jwks: {s:?} (expected an https:// URL or \"file:/path/jwks.json\")")),
                }
            };
            let refresh = j.jwks_refresh.map_or(Duration::from_secs(300), |s| s.0);
            if refresh < Duration::from_secs(1) {
                return Err("jwt.jwks_refresh: must be at least 1s".into());
            }
            let timeout = j.jwks_timeout.map_or(Duration::from_secs(5), |s| s.0);
            if timeout.is_zero() {
                return Err("jwt.jwks_timeout: must be more than zero".into());
            }
            let max_size = j.jwks_max_size.map_or(1 << 20, |b| b.0);
            Some(crate::auth::jwks::Source { source, refresh, timeout, max_size })
        }
    };
    if fixed.is_empty() && jwks.is_none() {
        return Err("jwt: no keys (set secret, public_key, jwks or [[jwt.key]])".into());
    }
    if j.jwks_refresh.is_some() && jwks.is_none() {
        return Err("jwt.jwks_refresh: set jwt.jwks too".into());
    }
    let algorithms = match j.algorithms {
        Some(names) if names.is_empty() => return Err("jwt.algorithms: must not be empty".into()),
        Some(names) => names
            .iter()
            .map(|n| parse_algorithm(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("jwt.algorithms: {e}"))?,
        None => ALGORITHMS.to_vec(),
    };
    let leeway = j.leeway.map_or(5, |s| s.0.as_secs());
    if leeway > 3600 {
        return Err("jwt.leeway: at most 1 hour".into());
    }
    let max_token_size = j.max_token_size.map_or(8 << 10, |b| b.0);
    if !(256..=64 << 10).contains(&max_token_size) {
        return Err("jwt.max_token_size: 256 bytes to 64 KiB".into());
    }
    let mut verifier = Verifier::with_keys(fixed);
    verifier.algorithms = algorithms;
    verifier.leeway = leeway;
    verifier.audience = j.audience;
    verifier.issuer = j.issuer;
    verifier.max_token_size = max_token_size;
    verifier.jwks = jwks;
    Ok(verifier)
}

/// `[proxy]`: the application's URLs and how much may wait for it.
pub(super) fn proxy_config(p: ProxySection, base: &Path) -> Result<crate::auth::proxy::Proxy, String> {
    use crate::auth::proxy::{Proxy, Settings};
    let url = |u: Option<String>, key: &str| -> Result<Option<String>, String> {
        match u {
            None => Ok(None),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                url::Url::parse(&u).map_err(|e| format!("proxy.{key}: {u:?}: {e}"))?;
                Ok(Some(u))
            }
            Some(u) => Err(format!("proxy.{key}: {u:?} (expected an http:// or https:// URL)")),
        }
    };
    let defaults = Settings::default();
    let names = |list: Option<Vec<String>>, key: &str, lower: bool| -> Result<Box<[String]>, String> {
        let list = list.unwrap_or_default();
        for name in &list {
            let token =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(format!("proxy.{key}: {name:?} is not a valid name"));
            }
        }
        Ok(list.into_iter().map(|n| if lower { n.to_ascii_lowercase() } else { n }).collect())
    };
    let settings = Settings {
        connect_url: url(p.connect_url, "connect_url")?,
        subscribe_url: url(p.subscribe_url, "subscribe_url")?,
        timeout: p.timeout.map_or(defaults.timeout, |t| t.0),
        max_connections: p.max_connections.unwrap_or(defaults.max_connections),
        max_pending: p.max_pending.unwrap_or(defaults.max_pending),
        headers: names(p.headers, "headers", true)?,
        cookies: names(p.cookies, "cookies", false)?,
        max_answer_size: p.max_answer_size.map_or(defaults.max_answer_size, |b| b.0),
        unix_socket: p.unix_socket.map(|path| base.join(path)),
        request_headers: Box::new([]),
    };
    let mut request_headers = Vec::new();
    for (name, value) in p.request_headers.unwrap_or_default() {
        let key = format!("proxy.request_headers.{name}");
        let token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("{key}: not a valid header name"));
        }
        let reserved = ["host", "content-type", "content-length", "connection", "transfer-encoding"];
        if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(format!("{key}: wsgate sets this header itself"));
        }
        let value = String::from_utf8(inline_or_file(&value, &key, base)?).map_err(|_| format!("{key}: not UTF-8"))?;
        if value.chars().any(char::is_control) {
            return Err(format!("{key}: control characters (a header value is one line)"));
        }
        request_headers.push((name, value));
    }
    let settings = Settings { request_headers: request_headers.into(), ..settings };
    let over_unix = settings.unix_socket.is_some();
    for (u, key) in [(&settings.connect_url, "connect_url"), (&settings.subscribe_url, "subscribe_url")] {
        if over_unix && u.as_deref().is_some_and(|u| u.starts_with("https://")) {
            return Err(format!("proxy.{key}: https:// with unix_socket (the socket is plain HTTP)"));
        }
    }
    if settings.connect_url.is_none() && settings.subscribe_url.is_none() {
        return Err("proxy: set connect_url, subscribe_url, or both".into());
    }
    if settings.timeout.is_zero() || settings.timeout > Duration::from_secs(60) {
        return Err("proxy.timeout: more than zero, at most 60s".into());
    }
    if !(1..=1024).contains(&settings.max_connections) {
        return Err("proxy.max_connections: 1 to 1024".into());
    }
    if !(1..=1_000_000).contains(&settings.max_pending) {
        return Err("proxy.max_pending: 1 to 1000000".into());
    }
    if !(256..=(1 << 20)).contains(&settings.max_answer_size) {
        return Err("proxy.max_answer_size: 256 bytes to 1 MiB".into());
    }
    Ok(Proxy::new(settings))
}

/// A route's `auth`, `private` and `subscribe_proxy`.
pub(super) fn route_auth(
    r: &RouteSection,
    app: AppKind,
    verifier: Option<&Arc<crate::auth::jwt::Verifier>>,
    proxy: Option<&Arc<crate::auth::proxy::Proxy>>,
) -> Result<crate::auth::RouteAuth, String> {
    use crate::auth::{Mode, RouteAuth};
    let mode = match r.auth.as_deref() {
        None | Some("none") => Mode::None,
        Some("jwt") => Mode::Jwt,
        Some("proxy") => Mode::Proxy,
        Some(other) => return Err(format!("route.auth: {other:?} (expected \"none\", \"jwt\" or \"proxy\")")),
    };
    if mode == Mode::Jwt && verifier.is_none() {
        return Err("route.auth = \"jwt\" needs a [jwt] section (its keys)".into());
    }
    if mode == Mode::Proxy && proxy.is_none_or(|p| p.settings.connect_url.is_none()) {
        return Err("route.auth = \"proxy\" needs [proxy] connect_url".into());
    }
    if mode != Mode::None && app == AppKind::Plugin {
        return Err("route.auth: not on plugin routes (the plugin's on_connect decides who connects)".into());
    }
    if mode != Mode::None && app == AppKind::Logview {
        // Its require_key takes the admin key from the same Authorization header.
        return Err("route.auth: not on log viewers (require_key guards them, with an [admin] key)".into());
    }
    if mode != Mode::None && !app.is_websocket() {
        return Err(format!("route.auth: {} routes serve plain HTTP", app.name()));
    }
    let globs = |list: &Option<Vec<String>>, key: &str| -> Result<Vec<glob::Pattern>, String> {
        let Some(list) = list else { return Ok(Vec::new()) };
        if app != AppKind::PubSub {
            return Err(format!("route.{key}: only pubsub routes have topics"));
        }
        list.iter().map(|g| glob::Pattern::new(g).map_err(|e| format!("route.{key}: {g:?}: {e}"))).collect()
    };
    let private = globs(&r.private, "private")?;
    if !private.is_empty() && mode != Mode::Jwt {
        return Err("route.private: channel tokens need auth = \"jwt\"".into());
    }
    let subscribe_proxy = globs(&r.subscribe_proxy, "subscribe_proxy")?;
    if !subscribe_proxy.is_empty() && proxy.is_none_or(|p| p.settings.subscribe_url.is_none()) {
        return Err("route.subscribe_proxy needs [proxy] subscribe_url".into());
    }
    let asks = mode == Mode::Proxy || !subscribe_proxy.is_empty();
    Ok(RouteAuth {
        mode,
        verifier: if mode == Mode::Jwt { verifier.cloned() } else { None },
        private,
        proxy: if asks { proxy.cloned() } else { None },
        subscribe_proxy,
    })
}

/// A route's `rate_*` and `max_connections_per_ip`.
pub(super) fn route_rates(r: &RouteSection, app: AppKind) -> Result<crate::rate_limit::RouteRates, String> {
    use crate::rate_limit::{Action, IpTable, RouteRates, Rule};
    let rule = |s: &Option<RateSection>, key: &str, actions: bool| -> Result<Option<Rule>, String> {
        let Some(s) = s else { return Ok(None) };
        let rate = s.rate.0 as u64;
        let burst = s.burst.map_or(rate, |b| b.0 as u64);
        if rate == 0 || burst == 0 {
            return Err(format!("route.{key}: rate and burst must be more than zero"));
        }
        if rate > 1 << 40 || burst > 1 << 40 {
            return Err(format!("route.{key}: rate and burst at most 2^40"));
        }
        let action = match s.action.as_deref() {
            None | Some("drop") => Action::Drop,
            Some("close") if actions => Action::Close,
            Some("close") => {
                return Err(format!("route.{key}: an upgrade past it is answered 429; no action to choose"))
            }
            Some(other) => return Err(format!("route.{key}.action: {other:?} (expected \"drop\" or \"close\")")),
        };
        Ok(Some(Rule { rate, burst, action, dry_run: s.dry_run.unwrap_or(false) }))
    };
    if !app.is_websocket()
        && (r.rate_messages.is_some() || r.rate_bytes.is_some() || r.max_connections_per_ip.is_some())
    {
        return Err(format!("route: rate limits are for WebSocket routes, not {} ones", app.name()));
    }
    if r.rate_operations.is_some() && app != AppKind::PubSub {
        return Err("route.rate_operations: only pubsub routes have operations".into());
    }
    let per_connection = r.rate_messages.is_some()
        || r.rate_bytes.is_some()
        || r.max_connections_per_ip.is_some()
        || r.rate_messages_per_user.is_some();
    if app == AppKind::Plugin && per_connection {
        return Err("route.rate_messages / rate_bytes / max_connections_per_ip: not on plugin routes (the plugin's threads own its connections)".into());
    }
    if r.framing.as_deref() == Some("direct") && per_connection {
        return Err("route.rate_messages / rate_bytes / max_connections_per_ip: not with framing = \"direct\" (the backend owns the socket after the hand-off)".into());
    }
    let mut rates = RouteRates {
        messages: rule(&r.rate_messages, "rate_messages", true)?,
        bytes: rule(&r.rate_bytes, "rate_bytes", true)?,
        operations: rule(&r.rate_operations, "rate_operations", true)?,
        handshakes_per_ip: rule(&r.rate_handshakes_per_ip, "rate_handshakes_per_ip", false)?,
        connections_per_ip: r.max_connections_per_ip.as_ref().map(|c| (c.max, c.dry_run.unwrap_or(false))),
        per_ip: None,
        messages_per_user: rule(&r.rate_messages_per_user, "rate_messages_per_user", true)?,
        per_user: None,
    };
    if rates.messages_per_user.is_some() {
        if !matches!(r.auth.as_deref(), Some("jwt" | "proxy")) {
            return Err("route.rate_messages_per_user: users come from tokens or the application; set auth = \"jwt\" or \"proxy\"".into());
        }
        rates.per_user = Some(crate::rate_limit::UserTable::default());
    }
    if rates.connections_per_ip.is_some_and(|(max, dry)| max == 0 && !dry) {
        return Err("route.max_connections_per_ip.max: must be more than zero".into());
    }
    if rates.handshakes_per_ip.is_some() || rates.connections_per_ip.is_some() {
        rates.per_ip = Some(Arc::new(IpTable::default()));
    }
    Ok(rates)
}
