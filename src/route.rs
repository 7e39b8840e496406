//! Request path → what serves it, with the route's handshake policy and limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::BackendSpec;
use crate::limits::Limits;
use crate::pubsub::Policy as PubSubPolicy;
use crate::ws::handshake::Policy;
use crate::ws::message::MessageLimits;

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
    /// WebSocket: a C plugin's callbacks (see `Route::plugin`).
    Plugin,
    /// WebSocket: an app of the embedding program's (see `Route::custom`; not configurable
    /// from a file).
    Custom,
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
            AppKind::Plugin => "plugin",
            AppKind::Custom => "custom",
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
            "plugin" => Ok(AppKind::Plugin),
            other => Err(format!(
                "unknown app {other:?} (expected \"echo\", \"chat\", \"pubsub\", \"broker\", \"logview\", \"plugin\" or \"demo\")"
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
    /// Set when `app` is [`AppKind::Plugin`]: the plugin, loaded, and its threads.
    pub plugin: Option<PluginSpec>,
    /// Set when `app` is [`AppKind::Custom`]: what makes each connection's app.
    pub custom: Option<CustomApp>,
    /// `auth` and `private`: who may connect, and the topics that need channel tokens.
    pub auth: Arc<crate::auth::RouteAuth>,
    /// `rate_*` and `max_connections_per_ip`.
    pub rates: Arc<crate::rate_limit::RouteRates>,
}

/// An embedding program's app for a route ([`crate::Builder::route`]): called on the
/// worker serving each new connection.
#[derive(Clone)]
pub struct CustomApp(pub Arc<dyn Fn() -> Box<dyn crate::apps::App> + Send + Sync>);

impl std::fmt::Debug for CustomApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomApp")
    }
}

/// A plugin route's plugin and how many threads run its callbacks on each worker.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub loaded: Arc<crate::plugin::Loaded>,
    /// `plugin_threads`: a connection's callbacks all run on one of them (so in order); a
    /// callback that blocks delays only the connections of its thread.
    pub threads: usize,
}

impl PluginSpec {
    pub const DEFAULT_THREADS: usize = 4;
    pub const MAX_THREADS: usize = 1024;
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
            plugin: None,
            custom: None,
            auth: Arc::default(),
            rates: Arc::default(),
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
        if let Some(plugin) = target.strip_prefix("plugin:") {
            let (library, init) = plugin.split_once('#').ok_or_else(|| {
                format!("--route {spec:?}: expected plugin:LIBRARY#INIT, e.g. /echo=plugin:/usr/lib/wsgate/echo.so#echo_init")
            })?;
            let loaded = crate::plugin::load(Path::new(library), init)
                .map_err(|e| format!("--route {spec:?}: plugin {library}: {e}"))?;
            let plugin = PluginSpec { loaded, threads: PluginSpec::DEFAULT_THREADS };
            return Ok(Route { plugin: Some(plugin), ..Route::new(path, AppKind::Plugin, limits) });
        }
        if target.starts_with("unix:") {
            let backend = BackendSpec::from_uri(target).map_err(|e| format!("--route {spec:?}: {e}"))?;
            return Ok(Route { backend: Some(backend), ..Route::new(path, AppKind::Backend, limits) });
        }
        let app = AppKind::parse(target).map_err(|e| format!("--route {spec:?}: {e}"))?;
        if app == AppKind::Plugin {
            return Err(format!("--route {spec:?}: a plugin route names its library: PATH=plugin:LIBRARY#INIT"));
        }
        Ok(Route::new(path, app, limits))
    }
}

/// The routes of one server, looked up by exact path.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Every route loaded since the start: a reload adds the new table and retires the old,
    /// so an open connection's route id keeps naming the route it was admitted on.
    routes: Vec<Route>,
    /// The ids of the current table, the only ones new requests are matched against.
    active: Vec<RouteId>,
}

/// Index of a route in [`Routes`].
pub type RouteId = usize;

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        let active = (0..routes.len()).collect();
        Routes { routes, active }
    }

    /// A reloaded configuration's routes: new requests use them; connections open on the old
    /// ones keep theirs.
    pub fn replace(&mut self, routes: Vec<Route>) {
        let base = self.routes.len();
        self.routes.extend(routes);
        self.active = (base..self.routes.len()).collect();
    }

    /// The current table's routes.
    pub fn active(&self) -> impl Iterator<Item = &Route> {
        self.active.iter().map(|&i| &self.routes[i])
    }

    fn active_with_ids(&self) -> impl Iterator<Item = (RouteId, &Route)> {
        self.active.iter().map(|&i| (i, &self.routes[i]))
    }

    /// The route for a request path: an exact match, else the longest `/prefix/*` route the
    /// path extends by at least one byte (`/chat/*` serves `/chat/a`, not `/chat/`), else the
    /// longest `socket_dir` or `static` route whose path is a prefix ending at a segment
    /// boundary (`/apps` serves `/apps/chat`, `/` serves `/js/app.js`).
    pub fn find(&self, path: &str) -> Option<RouteId> {
        if let Some((i, _)) = self.active_with_ids().find(|(_, r)| &*r.path == path) {
            return Some(i);
        }
        let wildcard = self
            .active_with_ids()
            .filter_map(|(i, r)| r.path.strip_suffix('*').map(|prefix| (i, prefix)))
            .filter(|(_, prefix)| path.len() > prefix.len() && path.starts_with(prefix))
            .max_by_key(|(_, prefix)| prefix.len());
        if let Some((i, _)) = wildcard {
            return Some(i);
        }
        self.active_with_ids()
            .filter(|(_, r)| r.is_prefix())
            .filter(|(_, r)| {
                let base = r.path.trim_end_matches('/');
                path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, r)| r.path.len())
            .map(|(i, _)| i)
    }

    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[id]
    }

    /// Every route ever loaded, by id (retired ones too: their counters still count).
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

impl Route {
    pub fn policy(&self) -> Policy<'_> {
        Policy { origins: &self.origins, subprotocols: &self.subprotocols }
    }

    pub fn message_limits(&self) -> MessageLimits {
        MessageLimits { max_message: self.limits.max_message_size, max_frame: self.limits.max_frame_size }
    }

    pub fn is_socket_dir(&self) -> bool {
        matches!(&self.backend, Some(b) if matches!(b.source, crate::backend::SocketSource::Dir { .. }))
    }

    /// A route that serves every path under its own (`socket_dir`, `static`).
    pub fn is_prefix(&self) -> bool {
        self.is_socket_dir() || self.files.is_some()
    }

    pub fn is_websocket(&self) -> bool {
        self.app.is_websocket()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn app(&self) -> AppKind {
        self.app
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_routes_take_one_more_segment_at_least() {
        let l = Limits::default();
        let routes = Routes::new(vec![
            Route::new("/chat", AppKind::Chat, l),
            Route::new("/chat/*", AppKind::Chat, l),
            Route::new("/chat/vip/*", AppKind::Echo, l),
        ]);
        assert_eq!(routes.find("/chat"), Some(0));
        assert_eq!(routes.find("/chat/a"), Some(1));
        assert_eq!(routes.find("/chat/a/b"), Some(1));
        assert_eq!(routes.find("/chat/"), None);
        assert_eq!(routes.find("/chat/vip/x"), Some(2));
        assert_eq!(routes.find("/chatroom"), None);
    }

    #[test]
    fn a_reload_retires_the_old_table_but_keeps_its_ids() {
        let l = Limits::default();
        let mut routes = Routes::new(vec![Route::new("/a", AppKind::Echo, l), Route::new("/b", AppKind::Chat, l)]);
        assert_eq!(routes.find("/b"), Some(1));
        routes.replace(vec![Route::new("/b", AppKind::Echo, l), Route::new("/c/*", AppKind::Chat, l)]);
        assert_eq!(routes.find("/a"), None);
        assert_eq!(routes.find("/b"), Some(2));
        assert_eq!(routes.find("/c/x"), Some(3));
        assert_eq!(routes.get(1).app, AppKind::Chat);
        assert_eq!(routes.active().count(), 2);
        assert_eq!(routes.iter().count(), 4);
    }
}
