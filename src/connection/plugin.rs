//! A plugin route's upgrade: the request goes to the plugin's `on_connect` (on its thread),
//! the connection waits in `Consulting`, and the answer writes the 101 (with the plugin's
//! subprotocol and headers) or a 403.

use super::{Connection, Ctx, End, Phase, PluginOpening, Ready, Turn};
use crate::apps::plugin::Plugin;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::plugin::host::Answer;
use crate::plugin::Connecting;
use crate::route::{Route, RouteId};
use crate::stamp::Stamp;
use crate::ws::handshake;

impl Connection {
    /// Hands the upgrade request to the route's plugin thread; returns what
    /// `handle_request` returns (false: nothing more to look at until the answer).
    pub(super) fn consult_plugin(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route_id: RouteId,
        route: &Route,
        accepted: &handshake::Accepted<'_>,
    ) -> bool {
        let offered: Vec<&str> =
            req.list_elements("sec-websocket-protocol").filter_map(|p| std::str::from_utf8(p).ok()).collect();
        let route_choice = (!route.subprotocols.is_empty()).then_some(accepted.subprotocol);
        let request = Connecting::new(req.headers.iter().map(|h| (h.name, h.value)), &offered, route_choice);
        let Some(plugins) = cx.plugins.as_deref_mut() else {
            return self.respond(cx, req, 503, "no plugin threads here", false);
        };
        match plugins.connect(route_id, route, self.id, request) {
            Ok(attachment) => {
                let deflate = super::http::negotiate_deflate(req, route, cx.codecs.dedicated);
                let opening = Box::new(PluginOpening { attachment, accept: accepted.accept, deflate });
                let deadline = Stamp::at(cx.now + cx.limits.handshake_timeout);
                self.set_phase(Phase::Consulting { deadline, opening });
                false
            }
            Err(e) => {
                log::error!("route {:?}: cannot start a plugin thread: {e}", route.path);
                self.log.set_end(format!("plugin thread: {e}"));
                self.respond(cx, req, 503, "the plugin cannot take connections now", false)
            }
        }
    }

    /// The plugin's `on_connect` returned (the loop passes its answer on): the 101 with what
    /// it chose, or 403 if it declined. Input the client sent after its request is looked
    /// at now.
    pub fn plugin_answered(&mut self, cx: &mut Ctx<'_>, answer: Answer) -> Turn {
        if matches!(self.phase, Phase::Consulting { .. }) {
            let Phase::Consulting { opening, .. } = std::mem::replace(&mut self.phase, Phase::Unknown) else {
                unreachable!("matched above")
            };
            self.answer_upgrade(cx, *opening, answer);
        }
        self.drive(cx, Ready { corked: true, ..Ready::default() })
    }

    fn answer_upgrade(&mut self, cx: &mut Ctx<'_>, opening: PluginOpening, answer: Answer) {
        let Some(accept) = answer else {
            self.log.set_end("the plugin declined the connection");
            let response = Response::error(403, "the plugin declined this connection");
            self.send_response(cx, &Response { keep_alive: false, ..response });
            return;
        };
        let Some(route) = self.route().map(|id| cx.routes.get(id)) else {
            self.close(cx.now, cx.pools, End::Abort("route gone".into()));
            return;
        };
        let PluginOpening { attachment, accept: key_accept, deflate } = opening;
        let accepted = handshake::Accepted { accept: key_accept, subprotocol: accept.protocol.as_deref() };
        let mut head = Vec::with_capacity(200);
        handshake::write_accept(&mut head, &accepted, deflate.as_ref());
        // The plugin's headers go before the head's final CRLF (each was checked by
        // header_set: a token name, no control characters).
        head.truncate(head.len() - 2);
        for (name, value) in &accept.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        self.out.push_bytes(cx.pools, &head);
        self.open(cx, route, Box::new(Plugin::new(attachment)), deflate, None);
        if self.input.has_pending() {
            self.process_input(cx);
        }
    }
}
