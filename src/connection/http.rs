//! The `Http` phase: request heads in, responses or an upgrade out. A WebSocket route gets
//! its app here (and a backend route its backend connection, before the 101, so a missing
//! backend is a 503 rather than a WebSocket that dies at once).

use std::sync::Arc;

use super::{Connection, Ctx, End, HandOffState, Phase, Ws};
use crate::apps::backend::Backend;
use crate::apps::chat::Chat;
use crate::apps::echo::Echo;
use crate::apps::pubsub::PubSub;
use crate::apps::{demo, App};
use crate::backend::link::BackendLink;
use crate::backend::{self, framed, Framing};
use crate::config::{AppKind, Route};
use crate::http::request::{parse_request, HeadLimits, Request, MAX_HEADERS};
use crate::http::response::Response;
use crate::ws::frame::Role;
use crate::ws::handshake;
use crate::ws::message::MessageKind;
use crate::ws::session::Session;

impl Connection {
    /// Handles one request head if a whole one is buffered. Returns `true` when the phase
    /// changed in a way that the remaining input must be looked at again.
    pub(super) fn process_request(&mut self, buf: &[u8], cx: &mut Ctx<'_>) -> bool {
        let head_limits = HeadLimits { max_head_bytes: cx.limits.max_head_size, max_headers: cx.limits.max_headers };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_request(&buf[self.rstart..self.rend], &mut storage, &head_limits) {
            Ok(None) => false,
            Err(e) => {
                self.close(cx.now, cx.pools, End::Refuse { status: e.status(), reason: e.reason().into() });
                false
            }
            Ok(Some((req, head_len))) => {
                self.rstart += head_len;
                self.handle_request(&req, cx)
            }
        }
    }

    fn handle_request(&mut self, req: &Request<'_, '_>, cx: &mut Ctx<'_>) -> bool {
        let path = req.path();
        let has_body = req.header("transfer-encoding").is_some()
            || req.header("content-length").is_some_and(|v| v != b"0".as_slice());
        let route_id = cx.routes.find(path);
        self.log.path = Some(match route_id.map(|id| &cx.routes.get(id).path) {
            Some(route_path) if **route_path == *path => Arc::clone(route_path),
            _ => path.chars().take(256).collect::<String>().into(),
        });
        let Some(route_id) = route_id else {
            // A refused upgrade closes: the client has nothing more to say on this connection.
            let may_keep = !has_body && !handshake::is_upgrade(req);
            return self.respond(cx, req, 404, "no route for this path", may_keep);
        };
        let route = cx.routes.get(route_id);
        if !route.is_websocket() {
            let response = match req.method {
                "GET" | "HEAD" => demo::page(req.keep_alive() && !has_body, req.method == "HEAD"),
                _ => Response { headers: &[("Allow", "GET, HEAD")], ..Response::error(405, "use GET") },
            };
            return self.send_response(cx, &response);
        }
        let accepted = match handshake::validate(req, &route.policy()) {
            Ok(a) => a,
            Err(e) => {
                let mut body = Vec::with_capacity(200);
                e.write_response(&mut body);
                self.out.push_bytes(cx.pools, &body);
                self.log.status = Some(e.status());
                self.log.note_end(e.reason());
                self.close(cx.now, cx.pools, End::Answered);
                return false;
            }
        };
        let app: Box<dyn App> = match route.app {
            AppKind::Echo => Box::new(Echo),
            AppKind::Chat => Box::new(Chat::new(path, route.pubsub.exclude_sender)),
            AppKind::PubSub => Box::new(PubSub::new(Arc::clone(&route.pubsub))),
            AppKind::Backend | AppKind::Demo => {
                let Some((backend, named)) = self.connect_backend(cx, req, route) else { return false };
                // A subprotocol that named the socket is the one accepted.
                let accepted = match &named {
                    Some(p) => handshake::Accepted {
                        subprotocol: Some(route.subprotocols.iter().find(|s| *s == p).unwrap_or(p).as_str()),
                        ..accepted
                    },
                    None => accepted,
                };
                return self.upgrade_to_backend(cx, req, route, &accepted, backend);
            }
        };
        let mut head = Vec::with_capacity(160);
        handshake::write_accept(&mut head, &accepted);
        self.out.push_bytes(cx.pools, &head);
        self.open(cx, route, app);
        true
    }

    /// The 101 is queued: the WebSocket is open, the app starts.
    fn open(&mut self, cx: &mut Ctx<'_>, route: &Route, app: Box<dyn App>) {
        self.log.status = Some(101);
        self.limits = Arc::clone(&route.limits);
        let session = Session::new(Role::Server, route.message_limits(), cx.now);
        self.ws = Some(Ws { session, app, failing: None });
        self.set_phase(Phase::Connected);
        self.with_app(cx, |app, acx| app.on_open(acx));
    }

    /// Connects the route's backend for this request; on failure answers the client (503 and
    /// friends) and returns `None`.
    fn connect_backend(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
    ) -> Option<(BackendLink, Option<String>)> {
        let spec = route.backend.as_ref()?;
        let path = req.path();
        let offered: Vec<&str> =
            req.list_elements("sec-websocket-protocol").filter_map(|p| std::str::from_utf8(p).ok()).collect();
        let (socket, named_by) = match backend::resolve(spec, &route.path, path, &offered) {
            Ok(r) => r,
            Err(e) => {
                self.respond(cx, req, e.status(), e.reason(), false);
                return None;
            }
        };
        match backend::connect(&socket) {
            Ok(sock) => {
                Some((BackendLink::new(sock, spec.framing, spec.message_kind, route.limits.max_message_size), named_by))
            }
            Err(e) => {
                let peer = self.peer();
                cx.backend_failures.warn(cx.now, || format!("{peer} {path}: backend {}: {e}", socket.display()));
                self.log.set_end(format!("backend {}: {e}", socket.display()));
                self.respond(cx, req, 503, "backend unavailable, try again later", false);
                None
            }
        }
    }

    fn upgrade_to_backend(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
        accepted: &handshake::Accepted<'_>,
        link: BackendLink,
    ) -> bool {
        let Some(spec) = route.backend.as_ref() else { return false };
        let mut head = Vec::with_capacity(160);
        handshake::write_accept(&mut head, accepted);
        let hello = framed::Hello {
            id: self.id,
            peer: self.peer(),
            path: req.path(),
            query: req.query(),
            subprotocol: accepted.subprotocol,
            headers: req.headers,
        };
        let splice = spec.splice
            && spec.framing == Framing::Raw
            && spec.message_kind == MessageKind::Binary
            && !self.transport.is_tls();
        let mut backend = Backend::new(link, splice, route.pubsub.max_subscriptions);
        self.out.push_bytes(cx.pools, &head);
        match spec.framing {
            Framing::Direct => {
                self.log.status = Some(101);
                self.handoff =
                    Some(Box::new(HandOffState { backend: Box::new(backend), hello: framed::hello_record(&hello) }));
                self.set_phase(Phase::HandingOff { deadline: cx.now + route.limits.write_timeout });
                false
            }
            Framing::Framed => {
                backend.queue_bytes(cx.pools, &framed::hello_record(&hello));
                self.open(cx, route, Box::new(backend));
                true
            }
            Framing::Raw | Framing::Lines => {
                self.open(cx, route, Box::new(backend));
                true
            }
        }
    }

    /// A plain error-or-not response; returns whether the next request may follow.
    fn respond(&mut self, cx: &mut Ctx<'_>, req: &Request<'_, '_>, status: u16, reason: &str, may_keep: bool) -> bool {
        let response = Response { keep_alive: may_keep && req.keep_alive(), ..Response::error(status, reason) };
        self.send_response(cx, &response)
    }

    fn send_response(&mut self, cx: &mut Ctx<'_>, response: &Response<'_>) -> bool {
        let mut bytes = Vec::with_capacity(256 + response.body.len());
        response.write(&mut bytes);
        self.out.push_bytes(cx.pools, &bytes);
        self.log.status = Some(response.status);
        if response.keep_alive {
            self.set_phase(Phase::Http { deadline: cx.now + cx.limits.handshake_timeout });
            true
        } else {
            self.close(cx.now, cx.pools, End::Answered);
            false
        }
    }
}
