//! Running a server from Rust, with apps of one's own on some routes: [`Builder`].
//!
//! ```no_run
//! use wsgate::{App, AppCtx, MessageKind, Payload};
//!
//! /// Every message back, upper-cased.
//! struct Shout;
//!
//! impl App for Shout {
//!     fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
//!         cx.send(kind, &payload.as_slice().to_ascii_uppercase());
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     wsgate::Server::builder()
//!         .listen("127.0.0.1:8080".parse().unwrap())
//!         .route("/shout", || Shout)
//!         .run()
//! }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::mesh::{Mesh, Note};
use super::Server;
use crate::apps::App;
use crate::config::{Config, Listener};
use crate::route::{AppKind, CustomApp, Route};

/// A server being put together: a configuration (the embedded default's listener,
/// `127.0.0.1:8080`, and no routes, unless [`Builder::config`] gives one), and the
/// program's own apps by path.
pub struct Builder {
    config: Config,
    /// Each app's route, and whether it takes the configuration's limits (else its own).
    custom: Vec<(Route, CustomApp, bool)>,
}

impl Server {
    /// Starts putting a server together (see [`Builder`]).
    pub fn builder() -> Builder {
        Builder { config: Config { routes: Vec::new(), ..Config::embedded_default() }, custom: Vec::new() }
    }

    /// A handle that stops the running server from any thread (as SIGTERM does: clients
    /// closed with 1001, then [`Server::run`] returns).
    pub fn stopper(&self) -> Stopper {
        Stopper { mesh: Arc::clone(&self.seeds[0].mesh) }
    }
}

impl Builder {
    /// The whole configuration: listeners, limits, admin listener, the file's routes
    /// (e.g. from [`Config::load`]). The apps of [`Builder::route`] are added to its routes
    /// (replacing one with the same path).
    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// Listens on `addr` (plain `ws://`) instead of the configuration's listeners.
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        self.config.listen = vec![Listener::plain(addr)];
        self
    }

    /// Serves `path` with an app `make` makes for each connection (on the worker thread that
    /// serves it), under the configuration's limits.
    pub fn route<A, F>(mut self, path: &str, make: F) -> Builder
    where
        A: App + 'static,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let route = Route::new(path, AppKind::Custom, crate::limits::Limits::default());
        self.custom.push((route, custom_app(make), true));
        self
    }

    /// [`Builder::route`] with the route's policy set: `route`'s origins, subprotocols,
    /// limits and compression (its `app` is replaced). Its limits are taken as they are.
    pub fn route_with<A, F>(mut self, route: Route, make: F) -> Builder
    where
        A: App + 'static,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.custom.push((route, custom_app(make), false));
        self
    }

    /// Binds the listeners (port 0 resolved: see [`Server::local_addrs`]) without running.
    pub fn bind(mut self) -> io::Result<Server> {
        let limits = self.config.limits;
        for (mut route, make, inherit) in self.custom {
            if inherit {
                route.limits = Arc::new(limits);
            }
            route.app = AppKind::Custom;
            route.custom = Some(make);
            self.config.add_route(route).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        self.config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Server::bind(&self.config)
    }

    /// Binds and runs until stopped (SIGTERM, SIGINT, or a [`Stopper`]).
    pub fn run(self) -> io::Result<()> {
        self.bind()?.run()
    }
}

fn custom_app<A, F>(make: F) -> CustomApp
where
    A: App + 'static,
    F: Fn() -> A + Send + Sync + 'static,
{
    CustomApp(Arc::new(move || Box::new(make()) as Box<dyn App>))
}

/// Stops a running server ([`Server::stopper`]).
#[derive(Clone)]
pub struct Stopper {
    mesh: Arc<Mesh>,
}

impl Stopper {
    /// Begins the drain: every worker closes its clients with 1001 and exits when they are
    /// gone (or `drain_timeout` passes).
    pub fn stop(&self) {
        for worker in 0..self.mesh.workers() {
            self.mesh.post(worker, Note::Drain);
        }
    }
}
