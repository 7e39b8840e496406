//! Request path → what serves it, with the route's handshake policy and limits.

use crate::config::{AppKind, Limits, Route};
use crate::ws::handshake::Policy;
use crate::ws::message::MessageLimits;

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
