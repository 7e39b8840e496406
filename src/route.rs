//! Request path → what serves it, with the route's handshake policy and limits.

use crate::config::{App, Limits, Route};
use crate::ws::handshake::Policy;
use crate::ws::message::MessageLimits;

/// The routes of one server, looked up by exact path.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
}

/// Index of a route in [`Routes`].
pub type RouteId = usize;

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        Routes { routes }
    }

    pub fn find(&self, path: &str) -> Option<RouteId> {
        self.routes.iter().position(|r| r.path == path)
    }

    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[id]
    }

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

    pub fn is_websocket(&self) -> bool {
        self.app.is_websocket()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn app(&self) -> App {
        self.app
    }
}
