//! The `Http` phase: request heads in, responses or an upgrade out. A WebSocket route gets
//! its app here (and a backend route its backend connection, before the 101, so a missing
//! backend is a 503 rather than a WebSocket that dies at once).

use std::sync::Arc;

use super::admission::{guard, Admitted, Verified};
use super::{Connection, Ctx, End, HandOffState, Phase, SendingFile, Ws};
use crate::admin::config::Scope;
use crate::admin::{self, Reply};
use crate::apps::backend::Backend;
use crate::apps::broker::{self, BrokerClient};
use crate::apps::chat::Chat;
use crate::apps::dashboard::Dashboard;
use crate::apps::echo::Echo;
use crate::apps::logview::Logview;
use crate::apps::pubsub::PubSub;
use crate::apps::Action;
use crate::apps::{demo, App};
use crate::auth;
use crate::backend::link::BackendLink;
use crate::backend::{self, framed, Framing};
use crate::http::request::{parse_request, HeadLimits, Request, MAX_HEADERS};
use crate::http::response::Response;
use crate::http::static_files::{self, Answer, StaticDir};
use crate::route::{AppKind, Route};
use crate::stamp::Stamp;
use crate::ws::deflate::PerMessage;
use crate::ws::endpoint::Endpoint;
use crate::ws::extensions::{Agreed, Compression};
use crate::ws::frame::Role;
use crate::ws::handshake;
use crate::ws::hixie::{self, Draft};
use crate::ws::message::MessageKind;

impl Connection {
    /// Handles one request head if a whole one is buffered. Returns `true` when the phase
    /// changed in a way that the remaining input must be looked at again.
    pub(super) fn process_request(&mut self, buf: &[u8], cx: &mut Ctx<'_>) -> bool {
        let head_limits = HeadLimits { max_head_bytes: cx.limits.max_head_size, max_headers: cx.limits.max_headers };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_request(self.input.pending_in(buf), &mut storage, &head_limits) {
            Ok(None) => false,
            Err(e) => {
                self.close(cx.now, cx.pools, End::Refuse { status: e.status(), reason: e.reason().into() });
                false
            }
            Ok(Some((req, head_len))) if self.log.is_admin() => self.admin_request(&req, buf, head_len, cx),
            Ok(Some((req, head_len))) => {
                self.input.consume(head_len);
                self.handle_request(&req, buf, head_len, cx)
            }
        }
    }

    /// A request on the admin listener: the dashboard's WebSocket is opened here; anything
    /// else, once its body is in, goes to the loop as an [`Action::Admin`].
    pub(super) fn admin_request(
        &mut self,
        req: &Request<'_, '_>,
        buf: &[u8],
        head_len: usize,
        cx: &mut Ctx<'_>,
    ) -> bool {
        let Some(admin) = cx.admin else { return false };
        self.log.set_path(req.path(), None);
        if handshake::is_upgrade(req) {
            self.input.consume(head_len);
            if req.path() != "/ws" {
                return self.reply(cx, &Reply::error(404, "the dashboard's WebSocket is at /ws"), false);
            }
            if let Err(refusal) =
                admin::authorize(&admin.config.keys, admin::presented_key(req).as_deref(), Scope::Read)
            {
                return self.reply(cx, &refusal, false);
            }
            let route = &admin.route;
            return match handshake::validate(req, &route.policy()) {
                Ok(accepted) => {
                    let mut head = Vec::with_capacity(160);
                    handshake::write_accept(&mut head, &accepted, None);
                    self.out.push_bytes(cx.pools, &head);
                    let log_files = Arc::clone(&admin.log_files);
                    self.open(cx, route, Box::new(Dashboard { log_files }), None, None);
                    true
                }
                Err(e) => self.reply(cx, &Reply::error(e.status(), e.reason()), false),
            };
        }
        if req.header("transfer-encoding").is_some() {
            self.input.consume(head_len);
            return self.reply(cx, &Reply::error(411, "send the body with Content-Length, not chunked"), false);
        }
        let length = match req
            .header("content-length")
            .map(|v| std::str::from_utf8(v).ok().and_then(|v| v.parse::<usize>().ok()))
        {
            None => 0,
            Some(Some(n)) => n,
            Some(None) => {
                self.input.consume(head_len);
                return self.reply(cx, &Reply::error(400, "bad Content-Length"), false);
            }
        };
        // The whole request must fit one read buffer; max_body is checked to leave room.
        if length > admin.config.max_body || head_len + length > crate::buffer::READ_BUF_SIZE {
            self.input.consume(head_len);
            let message = if length > admin.config.max_body {
                format!("body larger than max_body ({} bytes)", admin.config.max_body)
            } else {
                format!("head and body larger than {} bytes", crate::buffer::READ_BUF_SIZE)
            };
            return self.reply(cx, &Reply::error(413, &message), false);
        }
        let Some(body) = self.input.pending_in(buf).get(head_len..head_len + length) else {
            return false; // the rest of the body is on its way (bounded by handshake_timeout)
        };
        let request = admin::Request::new(req, body);
        self.input.consume(head_len + length);
        self.set_phase(Phase::Answering { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
        cx.actions.push(Action::Admin(Box::new(request)));
        false
    }

    /// An admin reply, closing the connection unless `keep_alive`; returns whether the next
    /// request may follow.
    pub(super) fn reply(&mut self, cx: &mut Ctx<'_>, reply: &Reply, keep_alive: bool) -> bool {
        self.send_reply(cx, reply, keep_alive, false)
    }

    pub(super) fn send_reply(&mut self, cx: &mut Ctx<'_>, reply: &Reply, keep_alive: bool, head_only: bool) -> bool {
        const CORS: &[(&str, &str)] = &[
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Authorization, X-API-Key, Content-Type"),
        ];
        const UNAUTHORIZED: &[(&str, &str)] = &[("WWW-Authenticate", "Bearer")];
        let headers = match (reply.cors, reply.status) {
            (true, _) => CORS,
            (false, 401) => UNAUTHORIZED,
            _ => &[],
        };
        let response = Response {
            status: reply.status,
            headers,
            content_type: reply.content_type,
            body: &reply.body,
            keep_alive: keep_alive && reply.status < 400,
            head_only,
        };
        self.send_response(cx, &response)
    }

    /// A request on a WebSocket listener (its head, `head_len` bytes, is consumed; `buf`
    /// holds what follows: hixie-76's eight key bytes).
    pub(super) fn handle_request(
        &mut self,
        req: &Request<'_, '_>,
        buf: &[u8],
        head_len: usize,
        cx: &mut Ctx<'_>,
    ) -> bool {
        let path = req.path();
        let has_body = req.header("transfer-encoding").is_some()
            || req.header("content-length").is_some_and(|v| v != b"0".as_slice());
        let route_id = cx.routes.find(path);
        if let Some(id) = route_id {
            self.log.route = u16::try_from(id).unwrap_or(super::NO_ROUTE);
        }
        self.log.set_path(path, route_id.map(|id| &*cx.routes.get(id).path));
        let Some(route_id) = route_id else {
            // A refused upgrade closes: the client has nothing more to say on this connection.
            let may_keep = !has_body && !handshake::is_upgrade(req);
            return self.respond(cx, req, 404, "no route for this path", may_keep);
        };
        let route = cx.routes.get(route_id);
        if !route.is_websocket() {
            let keep_alive = req.keep_alive() && !has_body;
            let response = match (req.method, &route.files) {
                ("GET" | "HEAD", Some(files)) => return self.serve_file(cx, req, files, &route.path, keep_alive),
                ("GET" | "HEAD", None) => demo::page(keep_alive, req.method == "HEAD"),
                _ => Response { headers: &[("Allow", "GET, HEAD")], ..Response::error(405, "use GET or HEAD") },
            };
            return self.send_response(cx, &response);
        }
        let legacy = if route.legacy.any() { hixie::detect(req) } else { None };
        let opening = match legacy {
            Some(draft) => match self.legacy_opening(req, buf, head_len, route, draft, cx) {
                Ok(opening) => opening,
                Err(go_on) => return go_on,
            },
            None => match handshake::validate(req, &route.policy()) {
                Ok(a) => Opening::Rfc6455(a),
                Err(e) => {
                    let mut body = Vec::with_capacity(200);
                    e.write_response(&mut body);
                    self.out.push_bytes(cx.pools, &body);
                    self.log.set_status(e.status());
                    self.log.note_end(e.reason());
                    self.close(cx.now, cx.pools, End::Answered);
                    return false;
                }
            },
        };
        let (slot, verified) = match self.take_granted() {
            // The application allowed this upgrade (`auth = "proxy"`): it comes back here with
            // the decision, and the slot taken when it was asked.
            Some((identity, slot)) => {
                if route.app == AppKind::Chat && !identity.allows_topic(path) {
                    return self.refuse_token(cx, 403, "the application does not allow this room");
                }
                (slot, Some(Verified::new(identity, cx.now)))
            }
            None => {
                // Before the token: a client over its address's limits costs no signature
                // check, and no question to the application.
                let slot = match self.admit_address(cx, req, route) {
                    Ok(slot) => slot,
                    Err(go_on) => return go_on,
                };
                if route.auth.mode == auth::Mode::Proxy {
                    let key3 = if opening.draft() == Some(Draft::Hixie76) { 8 } else { 0 };
                    return self.ask_proxy(cx, req, route, slot, head_len + key3);
                }
                match self.verify_token(cx, req, route, path) {
                    Ok(verified) => (slot, verified),
                    Err(go_on) => return go_on,
                }
            }
        };
        let (identity, expires_at) = match verified {
            Some(v) => (Some(v.identity), v.expires_at),
            None => (None, None),
        };
        let app: Box<dyn App> = match route.app {
            AppKind::Echo => Box::new(Echo),
            AppKind::Chat => Box::new(Chat::new(path, route.pubsub.exclude_sender)),
            AppKind::PubSub if route.auth.mode != auth::Mode::None => {
                let connect_by = cx.now + route.limits.handshake_timeout;
                let auth = Arc::clone(&route.auth);
                let app = PubSub::authenticated(Arc::clone(&route.pubsub), auth, identity, expires_at, connect_by)
                    .limit_operations(route.rates.operations, cx.now)
                    .ask_before_subscribing(&route.auth, &route.path);
                let app = guard(Box::new(app), None, slot, route, cx.now);
                return self.open_app(cx, req, route, &opening, app);
            }
            AppKind::PubSub => Box::new(
                PubSub::new(Arc::clone(&route.pubsub))
                    .limit_operations(route.rates.operations, cx.now)
                    .ask_before_subscribing(&route.auth, &route.path),
            ),
            AppKind::Broker => {
                let asked = req.query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "RegisterToken")
                        .map(|(_, v)| v.into_owned())
                });
                match broker::admit(asked.as_deref(), route.broker, cx.broker) {
                    Ok(token) => Box::new(BrokerClient::new(token, route.broker)),
                    Err(why) => return self.respond(cx, req, 403, &why, false),
                }
            }
            AppKind::Logview => {
                let Some(spec) = &route.logview else { return false };
                if spec.require_key {
                    let keys = cx.admin.map_or(&[][..], |a| &a.config.keys[..]);
                    let presented = admin::presented_key(req);
                    // No key configured is a configuration error; refuse rather than open.
                    if keys.is_empty() {
                        return self.respond(cx, req, 403, "this log viewer requires a key", false);
                    }
                    if let Err(refusal) = admin::authorize(keys, presented.as_deref(), Scope::Read) {
                        return self.reply(cx, &refusal, false);
                    }
                }
                Box::new(Logview::new(Arc::clone(spec)))
            }
            AppKind::Dashboard => {
                let log_files = cx.admin.map(|a| Arc::clone(&a.log_files)).unwrap_or_else(|| Arc::from([]));
                Box::new(Dashboard { log_files })
            }
            AppKind::Custom => match &route.custom {
                Some(make) => (make.0)(),
                None => return self.respond(cx, req, 500, "no app for this route", false),
            },
            AppKind::Plugin => {
                return match &opening {
                    Opening::Rfc6455(accepted) => self.consult_plugin(cx, req, route_id, route, accepted),
                    Opening::Legacy(..) => self.respond(cx, req, 426, "plugin routes speak RFC 6455 only", false),
                };
            }
            AppKind::Backend | AppKind::Demo | AppKind::Static => {
                let Some(backend) = self.connect_backend(cx, req, route) else { return false };
                let verified = identity.map(|identity| Verified { identity, expires_at });
                return self.upgrade_to_backend(cx, req, route, &opening, backend, Admitted { verified, slot });
            }
        };
        let verified = identity.map(|identity| Verified { identity, expires_at });
        let app = guard(app, verified, slot, route, cx.now);
        self.open_app(cx, req, route, &opening, app)
    }

    /// The 101 for an app made by [`Connection::handle_request`].
    fn open_app(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
        opening: &Opening<'_, '_>,
        app: Box<dyn App>,
    ) -> bool {
        let deflate = match opening {
            Opening::Rfc6455(_) => negotiate_deflate(req, route, cx.codecs.dedicated),
            Opening::Legacy(..) => None,
        };
        let subprotocol = opening.subprotocol(req, route, None);
        let head = opening.head(subprotocol, deflate.as_ref(), self.transport.is_tls());
        self.out.push_bytes(cx.pools, &head);
        self.open(cx, route, app, deflate, opening.draft());
        true
    }

    /// A GET or HEAD on a `static` route: the head now, the body (if any) from the open file
    /// as the socket takes it (the `Sending` phase).
    fn serve_file(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        files: &StaticDir,
        route_path: &str,
        keep_alive: bool,
    ) -> bool {
        match static_files::answer(files, route_path, req, keep_alive) {
            Answer::Short { status, reason, location } => {
                let location = location.unwrap_or_default();
                let redirect = [("Location", location.as_str())];
                let headers: &[(&str, &str)] = if location.is_empty() { &[] } else { &redirect };
                let response = Response {
                    headers,
                    keep_alive,
                    head_only: req.method == "HEAD",
                    ..Response::error(status, reason)
                };
                self.send_response(cx, &response)
            }
            Answer::File { status, head, body } => {
                self.out.push_bytes(cx.pools, &head);
                self.log.set_status(status);
                match body {
                    Some(body) => {
                        self.set_phase(Phase::Sending(Box::new(SendingFile { body, keep_alive })));
                        false
                    }
                    None if keep_alive => {
                        self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
                        true
                    }
                    None => {
                        self.close(cx.now, cx.pools, End::Answered);
                        false
                    }
                }
            }
        }
    }

    /// A legacy (hixie) upgrade on a route that lists drafts: checked, and for hixie-76 its
    /// eight key bytes taken once they are in (the head is parsed again when they come,
    /// bounded by handshake_timeout). `Err`: answered, or waiting (what `handle_request`
    /// returns).
    fn legacy_opening<'b>(
        &mut self,
        req: &Request<'b, '_>,
        buf: &[u8],
        head_len: usize,
        route: &Route,
        draft: Draft,
        cx: &mut Ctx<'_>,
    ) -> Result<Opening<'static, 'b>, bool> {
        if !route.legacy.allows(draft) {
            let reason =
                format!("this route does not accept {}; use RFC 6455 (Sec-WebSocket-Version: 13)", draft.name());
            let response = Response {
                headers: &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
                ..Response::error(426, &reason)
            };
            self.send_response(cx, &Response { keep_alive: false, ..response });
            return Err(false);
        }
        let legacy = match hixie::validate(req, draft, &route.origins) {
            Ok(legacy) => legacy,
            Err(e) => return Err(self.respond(cx, req, e.status(), e.reason(), false)),
        };
        let mut key3 = [0u8; 8];
        if draft == Draft::Hixie76 {
            let Some(bytes) = self.input.pending_in(buf).get(..8) else {
                self.input.unconsume(head_len);
                return Err(false);
            };
            key3.copy_from_slice(bytes);
            self.input.consume(8);
        }
        Ok(Opening::Legacy(legacy, key3))
    }

    /// The 101 is queued: the WebSocket is open, the app starts.
    pub(super) fn open(
        &mut self,
        cx: &mut Ctx<'_>,
        route: &Route,
        app: Box<dyn App>,
        deflate: Option<Agreed>,
        legacy: Option<Draft>,
    ) {
        self.log.set_status(101);
        self.limits = Arc::clone(&route.limits);
        if let Some(draft) = legacy {
            cx.metrics.legacy_opens[usize::from(draft == Draft::Hixie75)] += 1;
        }
        let pmd = deflate.map(|agreed| {
            cx.metrics.compressed_opens += 1;
            let spec = &route.compression;
            let mem_level = match spec.mode {
                Compression::Dedicated { mem_level, .. } => mem_level,
                _ => 8,
            };
            let pmd = PerMessage::new(agreed, spec.threshold, spec.level, mem_level);
            cx.codecs.dedicated += usize::from(pmd.keeps_context());
            pmd
        });
        let endpoint = match legacy {
            Some(draft) => Endpoint::legacy(draft, route.message_limits(), cx.now),
            None => Endpoint::new(Role::Server, route.message_limits(), cx.now, pmd.is_some()),
        };
        if pmd.is_some() {
            self.rare.get_or_insert_with(Box::default).pmd = pmd;
        }
        self.set_phase(Phase::Connected(Ws { endpoint, app }));
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
                cx.metrics.backend_connects += 1;
                Some((BackendLink::new(sock, spec.framing, spec.message_kind, route.limits.max_message_size), named_by))
            }
            Err(e) => {
                cx.metrics.backend_failures += 1;
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
        opening: &Opening<'_, '_>,
        (link, named): (BackendLink, Option<String>),
        admitted: Admitted,
    ) -> bool {
        let Some(spec) = route.backend.as_ref() else { return false };
        // Direct mode hands the socket over: the backend would have to speak the extension.
        let deflate = match opening {
            Opening::Rfc6455(_) if spec.framing != Framing::Direct => {
                negotiate_deflate(req, route, cx.codecs.dedicated)
            }
            _ => None,
        };
        let subprotocol = opening.subprotocol(req, route, named.as_deref());
        let head = opening.head(subprotocol, deflate.as_ref(), self.transport.is_tls());
        let hello = framed::Hello {
            id: self.id,
            peer: self.peer(),
            path: req.path(),
            query: req.query(),
            subprotocol,
            headers: req.headers,
            identity: admitted.verified.as_ref().map(|v| &v.identity),
        };
        // Spliced bytes would pass the legacy translation and the compression of what the
        // backend sends.
        let splice = spec.splice
            && opening.draft().is_none()
            && deflate.is_none()
            && spec.framing == Framing::Raw
            && spec.message_kind == MessageKind::Binary
            && !self.transport.is_tls();
        let mut backend = Backend::new(link, splice, route.pubsub.max_subscriptions);
        self.out.push_bytes(cx.pools, &head);
        match spec.framing {
            Framing::Direct => {
                self.log.set_status(101);
                let handoff =
                    Box::new(HandOffState { backend: Box::new(backend), hello: framed::hello_record(&hello) });
                self.set_phase(Phase::HandingOff { deadline: Stamp::at(cx.now + route.limits.write_timeout), handoff });
                false
            }
            Framing::Framed | Framing::Raw | Framing::Lines => {
                if spec.framing == Framing::Framed {
                    backend.queue_bytes(cx.pools, &framed::hello_record(&hello));
                }
                let app = guard(Box::new(backend), admitted.verified, admitted.slot, route, cx.now);
                self.open(cx, route, app, deflate, opening.draft());
                true
            }
        }
    }

    /// A plain error-or-not response; returns whether the next request may follow.
    pub(super) fn respond(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        status: u16,
        reason: &str,
        may_keep: bool,
    ) -> bool {
        let response = Response { keep_alive: may_keep && req.keep_alive(), ..Response::error(status, reason) };
        self.send_response(cx, &response)
    }

    pub(super) fn send_response(&mut self, cx: &mut Ctx<'_>, response: &Response<'_>) -> bool {
        let mut bytes = Vec::with_capacity(256 + response.body.len());
        response.write(&mut bytes);
        self.out.push_bytes(cx.pools, &bytes);
        self.log.set_status(response.status);
        if response.keep_alive {
            self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
            true
        } else {
            self.close(cx.now, cx.pools, End::Answered);
            false
        }
    }
}

/// A valid opening handshake: RFC 6455's, or a legacy draft's (with hixie-76's key3).
enum Opening<'p, 'b> {
    Rfc6455(handshake::Accepted<'p>),
    Legacy(hixie::LegacyRequest<'b>, [u8; 8]),
}

impl Opening<'_, '_> {
    pub(super) fn draft(&self) -> Option<Draft> {
        match self {
            Opening::Rfc6455(_) => None,
            Opening::Legacy(legacy, _) => Some(legacy.draft),
        }
    }

    /// The subprotocol the 101 names: the one that named the backend's socket, or the first
    /// of the route's the client offered (legacy clients offer one, in their own header).
    fn subprotocol<'a>(&'a self, req: &Request<'_, '_>, route: &'a Route, named: Option<&'a str>) -> Option<&'a str> {
        if let Some(p) = named {
            return Some(route.subprotocols.iter().find(|s| *s == p).map_or(p, String::as_str));
        }
        match self {
            Opening::Rfc6455(accepted) => accepted.subprotocol,
            Opening::Legacy(legacy, _) => {
                let header = match legacy.draft {
                    Draft::Hixie76 => "sec-websocket-protocol",
                    Draft::Hixie75 => "websocket-protocol",
                };
                let offered = req.header(header)?;
                route.subprotocols.iter().find(|p| p.as_bytes() == offered).map(String::as_str)
            }
        }
    }

    /// The 101 response.
    pub(super) fn head(&self, subprotocol: Option<&str>, deflate: Option<&Agreed>, tls: bool) -> Vec<u8> {
        let mut head = Vec::with_capacity(200);
        match self {
            Opening::Rfc6455(accepted) => {
                handshake::write_accept(&mut head, &handshake::Accepted { subprotocol, ..*accepted }, deflate)
            }
            Opening::Legacy(legacy, key3) => hixie::write_accept(&mut head, legacy, tls, subprotocol, key3),
        }
        head
    }
}

/// The permessage-deflate the client offered and the route can do (RFC 7692 §7), if any.
pub(super) fn negotiate_deflate(req: &Request<'_, '_>, route: &Route, dedicated_open: usize) -> Option<Agreed> {
    let mode = match route.compression.mode {
        Compression::Off => return None,
        // Past the route's cap, a dedicated route answers as a shared one: codecs of their
        // own (some 370 KB each at window 15) for every client an attacker opens would not be
        // bounded by anything but max_connections.
        Compression::Dedicated { .. } if dedicated_open >= route.compression.max_dedicated => Compression::Shared,
        mode => mode,
    };
    let values =
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions")).map(|h| h.value);
    crate::ws::extensions::negotiate(values, mode)
}
