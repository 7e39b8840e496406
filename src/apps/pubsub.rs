//! `app = "pubsub"`: topics for browser clients, in JSON text messages.
//!
//! Client → server (one JSON object per text message):
//!
//! ```text
//! {"op":"subscribe","topic":"news"}
//! {"op":"unsubscribe","topic":"news"}
//! {"op":"publish","topic":"news","data":<any JSON value>}
//! {"op":"subscribe","topic":"news","recover":{"offset":41,"epoch":"e1"}}
//! {"op":"history","topic":"news","since":{"offset":41,"epoch":"e1"},"limit":100,"reverse":false}
//! ```
//!
//! Server → client: `{"op":"subscribed","topic":"news"}` and `{"op":"unsubscribed",...}` as
//! acknowledgements, `{"topic":"news","data":<the value as published>}` for each delivery,
//! and `{"op":"error","code":N,"message":"..."}` for a request refused: 400 malformed,
//! 403 topic not allowed by the route's `topics` globs (or history not allowed on the route),
//! 404 no history for the topic, 405 publishing not allowed, 413 topic longer than
//! `max_topic_length`, 429 over `max_subscriptions`. A client whose requests fail
//! `MAX_ERRORS_IN_A_ROW` times in a row is closed with 1008.
//!
//! Topics with history (`[[history]]`): deliveries carry `"offset":N` after the topic, and
//! `subscribed` carries the topic's position (`"epoch"`, `"offset"`). With `recover`, the
//! publications after that position come first, then `subscribed` with `"recovered":true`,
//! then live ones: none missing, none twice. When they cannot be had, `subscribed` says
//! `"recovered":false` with a `"reason"` and the current position. See docs/history.md.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{App, AppClose, AppCtx, Payload, Subscribing};
use crate::auth::jwt::Verifier;
use crate::auth::proxy::{Failure, Outcome};
use crate::auth::{unix_now, Identity, RouteAuth, TOKEN_EXPIRED};
use crate::encode::shared_frame;
use crate::history::{Page, Position, Read, Unrecoverable, MAX_LIMIT};
use crate::presence;
use crate::pubsub::SubscribeError;
use crate::rate_limit::{self, Bucket, Rule};
use crate::ws::close;
use crate::ws::frame::Opcode;
use crate::ws::message::MessageKind;

/// Consecutive refused requests after which the client is closed (1008).
pub const MAX_ERRORS_IN_A_ROW: u32 = 10;

pub use crate::pubsub::Policy;

pub struct PubSub {
    policy: Arc<Policy>,
    errors_in_a_row: u32,
    /// What routes with `auth` or `rate_operations` add (one box, and none elsewhere).
    guards: Option<Box<Guards>>,
}

#[derive(Default)]
struct Guards {
    /// On `auth = "jwt"` and `"proxy"` routes: who the client is, once it is known.
    auth: Option<Auth>,
    /// `rate_operations`: every request counts.
    operations: Option<(Rule, Bucket)>,
    /// `subscribe_proxy`: subscribes waiting for the application.
    asking: Option<Asking>,
}

/// The most subscribes one client may have waiting for the application.
pub const MAX_ASKING: usize = 16;

/// A client's subscribes that wait for the application (`subscribe_proxy`): each request,
/// as the client sent it, handled again once allowed.
struct Asking {
    route: Arc<RouteAuth>,
    path: Arc<str>,
    waiting: Vec<(u32, Box<[u8]>, Box<str>)>,
    next: u32,
}

/// A pubsub connection's side of `auth = "jwt"` (or `"proxy"`, which names the user before
/// the 101 and takes no tokens).
struct Auth {
    route: Arc<RouteAuth>,
    identity: Option<Arc<Identity>>,
    /// The token's `exp` (with leeway) on the reactor's clock.
    expires_at: Option<Instant>,
    /// A client that came without a token must `connect` before this.
    connect_by: Instant,
    /// Closed for its token: no more deadlines.
    closing: bool,
}

impl Auth {
    fn verifier(&self) -> &Verifier {
        self.route.verifier.as_deref().expect("auth = \"jwt\" routes have a verifier")
    }

    /// Verifies a connection token (`connect`, `refresh`) and takes what it says.
    fn take_token(&mut self, cx: &AppCtx<'_>, token: &str) -> Result<(), Refusal> {
        let now = unix_now();
        let claims = self.verifier().verify(token, now).map_err(|r| Refusal(r.status, r.reason.into()))?;
        if claims.channel.is_some() {
            return Err(Refusal(401, Cow::Borrowed("a channel token cannot identify a connection")));
        }
        if let Some(old) = &self.identity {
            if old.user != claims.identity.user {
                return Err(Refusal(403, Cow::Borrowed("refresh: the token is for another user (sub)")));
            }
        }
        self.expires_at = claims.identity.expires.map(|e| cx.now() + Duration::from_secs(e.saturating_sub(now)));
        self.identity = Some(Arc::new(claims.identity));
        Ok(())
    }

    fn answer(&self, op: &str) -> Vec<u8> {
        let identity = self.identity.as_deref().expect("a token was taken");
        let mut body = format!("{{\"op\":\"{op}\",\"user\":").into_bytes();
        write_json_string(&mut body, &identity.user);
        if let Some(exp) = identity.expires {
            body.extend_from_slice(format!(",\"expires\":{exp}").as_bytes());
        }
        body.push(b'}');
        body
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    op: &'a str,
    #[serde(borrow)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    recover: Option<At>,
    since: Option<At>,
    limit: Option<usize>,
    reverse: Option<bool>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    join_leave: Option<bool>,
    after: Option<String>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

/// A position as a client gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct At {
    offset: u64,
    epoch: String,
}

impl At {
    fn position(self) -> Position {
        Position { offset: self.offset, epoch: self.epoch.into() }
    }
}

/// A refused request: a code (HTTP-like) and a message for the client.
struct Refusal(u16, Cow<'static, str>);

impl PubSub {
    pub fn new(policy: Arc<Policy>) -> PubSub {
        PubSub { policy, errors_in_a_row: 0, guards: None }
    }

    fn auth(&self) -> Option<&Auth> {
        self.guards.as_deref()?.auth.as_ref()
    }

    fn auth_mut(&mut self) -> Option<&mut Auth> {
        self.guards.as_deref_mut()?.auth.as_mut()
    }

    /// Limits the client's requests (`rate_operations`).
    pub fn limit_operations(mut self, rule: Option<Rule>, now: Instant) -> PubSub {
        if let Some(rule) = rule {
            let guards = self.guards.get_or_insert_with(Box::default);
            guards.operations = Some((rule, Bucket::full(&rule, crate::stamp::millis(now))));
        }
        self
    }

    /// A pubsub client of an `auth = "jwt"` route: `identity` from the request's token, or
    /// `None` until it sends `connect` (by `connect_by`).
    pub fn authenticated(
        policy: Arc<Policy>,
        route: Arc<RouteAuth>,
        identity: Option<Identity>,
        expires_at: Option<Instant>,
        connect_by: Instant,
    ) -> PubSub {
        let auth = Auth { route, identity: identity.map(Arc::new), expires_at, connect_by, closing: false };
        PubSub { policy, errors_in_a_row: 0, guards: Some(Box::new(Guards { auth: Some(auth), ..Guards::default() })) }
    }

    /// Asks the application before subscribing to the route's `subscribe_proxy` topics.
    pub fn ask_before_subscribing(mut self, route: &Arc<RouteAuth>, path: &Arc<str>) -> PubSub {
        if !route.subscribe_proxy.is_empty() && route.proxy.is_some() {
            let asking = Asking { route: Arc::clone(route), path: Arc::clone(path), waiting: Vec::new(), next: 1 };
            self.guards.get_or_insert_with(Box::default).asking = Some(asking);
        }
        self
    }

    /// `connect` and `refresh`, and the gate every other op passes on an `auth` route.
    /// `Ok(true)`: the op was one of those and is answered.
    fn authenticate(&mut self, cx: &mut AppCtx<'_>, req: &Request<'_>) -> Result<bool, Refusal> {
        let Some(auth) = self.auth_mut() else {
            return match req.op {
                "connect" | "refresh" => Err(Refusal(400, Cow::Borrowed("this route takes no tokens"))),
                _ => Ok(false),
            };
        };
        match (req.op, &auth.identity) {
            ("connect" | "refresh", _) if auth.route.mode != crate::auth::Mode::Jwt => {
                Err(Refusal(400, Cow::Borrowed("this route takes no tokens (the application names the user)")))
            }
            ("connect", None) | ("refresh", Some(_)) => {
                let token = req.token.as_deref().ok_or(Refusal(400, Cow::Borrowed("missing \"token\"")))?;
                let first = auth.identity.is_none();
                if let Err(refusal) = auth.take_token(cx, token) {
                    if first {
                        // A client that cannot identify itself has nothing more to do here.
                        cx.send(MessageKind::Text, &error_message(refusal.0, &refusal.1));
                        cx.close(AppClose::Close(TOKEN_EXPIRED, "unauthorized".into()));
                        return Ok(true);
                    }
                    return Err(refusal);
                }
                cx.send(MessageKind::Text, &auth.answer(if first { "connected" } else { "refreshed" }));
                Ok(true)
            }
            ("connect", Some(_)) => Err(Refusal(400, Cow::Borrowed("already connected"))),
            (_, None) => {
                cx.send(MessageKind::Text, &error_message(401, "send {\"op\":\"connect\",\"token\":...} first"));
                cx.close(AppClose::Close(TOKEN_EXPIRED, "unauthorized".into()));
                Ok(true)
            }
            (_, Some(_)) => Ok(false),
        }
    }

    /// One request. `allowed`: the application has allowed this subscribe (`subscribe_proxy`).
    fn handle(&mut self, cx: &mut AppCtx<'_>, text: &[u8], allowed: bool) -> Result<(), Refusal> {
        let req: Request<'_> = serde_json::from_slice(text)
            .map_err(|_| Refusal(400, Cow::Borrowed("expected a JSON object with \"op\"")))?;
        if self.authenticate(cx, &req)? {
            return Ok(());
        }
        let identity = self.auth().and_then(|a| a.identity.clone());
        let topic = req.topic.as_deref().ok_or(Refusal(400, Cow::Borrowed("missing \"topic\"")))?;
        if topic.is_empty() {
            return Err(Refusal(400, Cow::Borrowed("empty topic")));
        }
        if topic.len() > self.policy.max_topic_length {
            return Err(Refusal(413, Cow::Borrowed("topic too long")));
        }
        if topic.chars().any(char::is_control) {
            return Err(Refusal(400, Cow::Borrowed("control characters in topic")));
        }
        if !self.policy.topics.iter().any(|p| p.matches(topic)) {
            return Err(Refusal(403, Cow::Borrowed("topic not allowed")));
        }
        if identity.as_deref().is_some_and(|i| !i.allows_topic(topic)) {
            let by_token = self.auth().is_some_and(|a| a.route.mode == crate::auth::Mode::Jwt);
            let why = if by_token { "topic not allowed by the token" } else { "topic not allowed by the application" };
            return Err(Refusal(403, Cow::Borrowed(why)));
        }
        let presence_asked = req.info.is_some() || req.join_leave.is_some() || req.op.starts_with("presence");
        if presence_asked && !self.policy.presence {
            return Err(Refusal(403, Cow::Borrowed("presence is not enabled on this route")));
        }
        match req.op {
            "subscribe" => {
                let info = match req.info {
                    Some(info) if !info.get().starts_with('{') => {
                        return Err(Refusal(400, Cow::Borrowed("\"info\": expected an object")))
                    }
                    Some(info) if info.get().len() > presence::MAX_INFO => {
                        return Err(Refusal(413, Cow::Borrowed("\"info\" too large")))
                    }
                    info => info.map(|i| Arc::from(i.get())),
                };
                if let Some(auth) = self.auth().filter(|a| a.route.is_private(topic)) {
                    let token = req.token.as_deref().ok_or(Refusal(403, Cow::Borrowed("a private topic: \"token\" (a channel token) is required")))?;
                    let user = identity.as_deref().map_or("", |i| &i.user);
                    auth.verifier().verify_channel(token, user, topic, unix_now()).map_err(|r| Refusal(r.status, r.reason.into()))?;
                }
                let asking = self.guards.as_deref_mut().and_then(|g| g.asking.as_mut());
                if let Some(asking) = asking.filter(|a| !allowed && a.route.asks_to_subscribe(topic)) {
                    if asking.waiting.len() >= MAX_ASKING {
                        return Err(Refusal(429, Cow::Borrowed("too many subscribes wait for the application")));
                    }
                    let Some(proxy) = asking.route.proxy.clone() else { return Ok(()) };
                    let user = identity.as_deref().map_or("", |i| &*i.user);
                    let body = crate::auth::proxy::subscribe_request(cx.id, user, &asking.path, topic, req.data);
                    let seq = asking.next;
                    asking.next = asking.next.checked_add(1).unwrap_or(1);
                    asking.waiting.push((seq, text.into(), topic.into()));
                    cx.actions.push(super::Action::AskProxy {
                        proxy,
                        kind: crate::auth::proxy::Kind::Subscribe,
                        seq,
                        body,
                    });
                    return Ok(());
                }
                // The token's info is the application's word; the client's own only when the
                // token gives none.
                let info = identity.as_deref().and_then(|i| i.info.clone()).or(info);
                let user = identity.as_deref().map(|i| Arc::clone(&i.user)).filter(|u| !u.is_empty());
                match cx.subscribe_at(topic, req.recover.map(At::position), self.policy.max_subscriptions) {
                    Ok(Subscribing::Done(_)) => reply(cx, "subscribed", topic),
                    // The loop answers once the topic's owner has.
                    Ok(Subscribing::Pending) => {}
                    Err(SubscribeError::TooMany) => return Err(Refusal(429, Cow::Borrowed("too many subscriptions"))),
                    Err(SubscribeError::Reserved) => return Err(Refusal(403, Cow::Borrowed("topic not allowed"))),
                }
                if self.policy.presence {
                    cx.join_presence(topic, user, info);
                    if req.join_leave == Some(true) {
                        cx.subscribe_feed(&presence::events_topic(topic));
                    }
                }
            }
            "presence" => {
                let limit = req.limit.unwrap_or(presence::DEFAULT_LIMIT);
                if limit == 0 || limit > presence::MAX_LIMIT {
                    return Err(Refusal(400, Cow::Borrowed("\"limit\": 1 to 1000")));
                }
                let max_bytes = cx.backpressure_high().clamp(4 << 10, presence::PAGE_BYTES);
                cx.ask_presence(topic, presence::Ask::List { after: req.after, limit, max_bytes });
            }
            "presence_stats" => cx.ask_presence(topic, presence::Ask::Stats),
            "history" => {
                if !self.policy.client_history {
                    return Err(Refusal(403, Cow::Borrowed("reading history is not allowed on this route")));
                }
                if !cx.has_history(topic) {
                    return Err(Refusal(404, Cow::Borrowed("the topic keeps no history")));
                }
                let limit = req.limit.unwrap_or(100);
                if limit == 0 || limit > MAX_LIMIT {
                    return Err(Refusal(400, Cow::Borrowed("\"limit\": 1 to 1000")));
                }
                let max_bytes = cx.backpressure_high().clamp(4 << 10, HISTORY_REPLY_BYTES);
                let read = Read {
                    since: req.since.map(At::position),
                    limit,
                    max_bytes,
                    reverse: req.reverse.unwrap_or(false),
                };
                cx.read_history(topic, read);
            }
            "unsubscribe" => {
                // A subscribe still waiting for the application is forgotten with it.
                if let Some(asking) = self.guards.as_deref_mut().and_then(|g| g.asking.as_mut()) {
                    asking.waiting.retain(|(_, _, t)| **t != *topic);
                }
                cx.unsubscribe(topic);
                if self.policy.presence {
                    cx.leave_presence(topic);
                    cx.unsubscribe(&presence::events_topic(topic));
                }
                reply(cx, "unsubscribed", topic)
            }
            "publish" => {
                if !self.policy.client_publish {
                    return Err(Refusal(405, Cow::Borrowed("publishing is not allowed on this route")));
                }
                let data = req.data.ok_or(Refusal(400, Cow::Borrowed("missing \"data\"")))?;
                let mut body = Vec::with_capacity(32 + topic.len() + data.get().len());
                body.extend_from_slice(b"{\"topic\":");
                write_json_string(&mut body, topic);
                body.extend_from_slice(b",\"data\":");
                body.extend_from_slice(data.get().as_bytes());
                body.push(b'}');
                cx.publish(Arc::from(topic), shared_frame(Opcode::Text, &body), self.policy.exclude_sender);
            }
            _ => {
                return Err(Refusal(
                    400,
                    Cow::Borrowed("unknown op (expected subscribe, unsubscribe, publish, history, presence, presence_stats, connect or refresh)"),
                ))
            }
        }
        Ok(())
    }
}

/// A framed backend's REQUEST (docs/backend-protocol.md): pubsub's `subscribe` (with
/// `recover`) and `history` ops, made for the backend's client. The answer, when it is known
/// now (else the loop sends it when the topic's owner or Redis has answered); every answer
/// names its topic, so a backend can match answers that come out of order.
pub(crate) fn backend_request(cx: &mut AppCtx<'_>, text: &[u8], max_subscriptions: usize) -> Option<Vec<u8>> {
    let Ok(req) = serde_json::from_slice::<Request<'_>>(text) else {
        return Some(error_message(400, "expected a JSON object with \"op\" and \"topic\""));
    };
    let topic = match req.topic.as_deref() {
        Some(t) if !t.is_empty() && t.len() <= 1024 && !t.chars().any(char::is_control) => t,
        _ => return Some(error_message(400, "\"topic\": 1 to 1024 bytes, no control characters")),
    };
    let refused = |code: u16, message: &str| {
        let mut body = format!("{{\"op\":\"error\",\"code\":{code},\"topic\":").into_bytes();
        write_json_string(&mut body, topic);
        body.extend_from_slice(b",\"message\":");
        write_json_string(&mut body, message);
        body.push(b'}');
        Some(body)
    };
    match req.op {
        "subscribe" => match cx.subscribe_at(topic, req.recover.map(At::position), max_subscriptions) {
            Ok(Subscribing::Done(_)) => Some(subscribed_at(topic, None, None)),
            Ok(Subscribing::Pending) => None,
            Err(SubscribeError::TooMany) => refused(429, "too many subscriptions"),
            Err(SubscribeError::Reserved) => refused(403, "topic not allowed"),
        },
        "history" => {
            if !cx.has_history(topic) {
                return refused(404, "the topic keeps no history");
            }
            let limit = req.limit.unwrap_or(100);
            if limit == 0 || limit > MAX_LIMIT {
                return refused(400, "\"limit\": 1 to 1000");
            }
            let reverse = req.reverse.unwrap_or(false);
            cx.read_history(
                topic,
                Read { since: req.since.map(At::position), limit, max_bytes: HISTORY_REPLY_BYTES, reverse },
            );
            None
        }
        _ => refused(400, "unknown op (a REQUEST is subscribe or history)"),
    }
}

/// The most bytes of publications one `history` answer holds (it says `"more":true` past it).
pub const HISTORY_REPLY_BYTES: usize = 256 << 10;

/// `subscribed` for a topic with history: its position, and whether what the client missed
/// was recovered (`Some(Err(reason))`: it was not).
pub(crate) fn subscribed_at(topic: &str, position: Option<&Position>, recovered: Option<Result<(), &str>>) -> Vec<u8> {
    let mut body = Vec::with_capacity(96 + topic.len());
    body.extend_from_slice(b"{\"op\":\"subscribed\",\"topic\":");
    write_json_string(&mut body, topic);
    if let Some(position) = position {
        write_position(&mut body, position);
    }
    match recovered {
        None => {}
        Some(Ok(())) => body.extend_from_slice(b",\"recovered\":true"),
        Some(Err(reason)) => {
            body.extend_from_slice(b",\"recovered\":false,\"reason\":");
            write_json_string(&mut body, reason);
        }
    }
    body.push(b'}');
    body
}

fn write_position(body: &mut Vec<u8>, position: &Position) {
    body.extend_from_slice(b",\"epoch\":");
    write_json_string(body, &position.epoch);
    body.extend_from_slice(b",\"offset\":");
    body.extend_from_slice(position.offset.to_string().as_bytes());
}

/// The answer to a `history` request (also `/api/history`'s body).
pub(crate) fn history_answer(topic: &str, page: &Page) -> Vec<u8> {
    let mut body = Vec::with_capacity(128 + page.entries.iter().map(|e| e.frame.len() + 24).sum::<usize>());
    body.extend_from_slice(b"{\"op\":\"history\",\"topic\":");
    write_json_string(&mut body, topic);
    write_position(&mut body, &page.position);
    body.extend_from_slice(b",\"publications\":[");
    for (i, e) in page.entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        e.write_json(&mut body);
    }
    body.extend_from_slice(b"],\"more\":");
    body.extend_from_slice(if page.more { b"true" } else { b"false" });
    body.push(b'}');
    body
}

/// A refused `history` request: why, and the position when the topic has one.
pub(crate) fn history_refused(topic: &str, why: Unrecoverable, position: Option<&Position>) -> Vec<u8> {
    let code = if why == Unrecoverable::NoHistory { 404 } else { 410 };
    let mut body = format!("{{\"op\":\"error\",\"code\":{code},\"topic\":").into_bytes();
    write_json_string(&mut body, topic);
    if let Some(p) = position {
        write_position(&mut body, p);
    }
    body.extend_from_slice(b",\"message\":");
    write_json_string(&mut body, why.reason());
    body.push(b'}');
    body
}

/// The answer to a `presence` or `presence_stats` request.
pub(crate) fn presence_answer(topic: &str, answer: &Result<presence::Page, presence::Stats>) -> Vec<u8> {
    let op: &[u8] = if answer.is_ok() { b"{\"op\":\"presence\"," } else { b"{\"op\":\"presence_stats\"," };
    let json = presence::answer_json(topic, answer);
    let mut body = Vec::with_capacity(op.len() + json.len());
    body.extend_from_slice(op);
    body.extend_from_slice(&json[1..]);
    body
}

/// `{"op":"error",...}` for a refusal the loop makes (a subscription it could not finish).
pub(crate) fn error_message(code: u16, message: &str) -> Vec<u8> {
    let mut body = format!("{{\"op\":\"error\",\"code\":{code},\"message\":").into_bytes();
    write_json_string(&mut body, message);
    body.push(b'}');
    body
}

fn reply(cx: &mut AppCtx<'_>, op: &str, topic: &str) {
    let mut body = Vec::with_capacity(32 + topic.len());
    body.extend_from_slice(b"{\"op\":\"");
    body.extend_from_slice(op.as_bytes());
    body.extend_from_slice(b"\",\"topic\":");
    write_json_string(&mut body, topic);
    body.push(b'}');
    cx.send(MessageKind::Text, &body);
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a string exactly as JSON requires (escapes, control characters).
    let _ = serde_json::to_writer(&mut *out, s);
}

impl PubSub {
    /// A request's result for the client: nothing more when it went through, else an error
    /// (naming the topic of a subscribe the application decided on); too many refusals in a
    /// row close the client.
    fn answer_client(&mut self, cx: &mut AppCtx<'_>, result: Result<(), Refusal>, topic: Option<&str>) {
        let Err(Refusal(code, message)) = result else {
            self.errors_in_a_row = 0;
            return;
        };
        self.errors_in_a_row += 1;
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
            cx.close(AppClose::Close(close::POLICY_VIOLATION, "too many bad requests".into()));
            return;
        }
        let mut body = error_message(code, &message);
        if let Some(topic) = topic {
            body.pop();
            body.extend_from_slice(b",\"topic\":");
            write_json_string(&mut body, topic);
            body.push(b'}');
        }
        cx.send(MessageKind::Text, &body);
    }
}

impl App for PubSub {
    fn deadline(&self) -> Option<Instant> {
        let auth = self.auth().filter(|a| !a.closing)?;
        match &auth.identity {
            None => Some(auth.connect_by),
            Some(_) => auth.expires_at,
        }
    }

    fn on_timer(&mut self, cx: &mut AppCtx<'_>) {
        let Some(auth) = self.auth_mut() else { return };
        let why = match (&auth.identity, auth.expires_at) {
            (None, _) if cx.now() >= auth.connect_by => "no token in time",
            (Some(_), Some(at)) if cx.now() >= at => "token expired",
            _ => return,
        };
        // Acted on: no deadline any more (the close handshake has its own).
        auth.closing = true;
        cx.close(AppClose::Close(TOKEN_EXPIRED, why.into()));
    }

    fn user(&self) -> Option<&str> {
        self.auth()?.identity.as_deref().map(|i| &*i.user)
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        if let Some((rule, bucket)) = self.guards.as_deref_mut().and_then(|g| g.operations.as_mut()) {
            if !rate_limit::check(cx, bucket, rule, rate_limit::Kind::Operations, 1) {
                return;
            }
        }
        let result = match kind {
            MessageKind::Text => self.handle(cx, payload.as_slice(), false),
            MessageKind::Binary => Err(Refusal(400, Cow::Borrowed("binary messages are not part of this protocol"))),
        };
        self.answer_client(cx, result, None);
    }

    fn on_proxy_answer(&mut self, cx: &mut AppCtx<'_>, seq: u32, outcome: Outcome) {
        let Some(asking) = self.guards.as_deref_mut().and_then(|g| g.asking.as_mut()) else { return };
        // Gone: the client unsubscribed meanwhile.
        let Some(at) = asking.waiting.iter().position(|(s, _, _)| *s == seq) else { return };
        let (_, text, topic) = asking.waiting.remove(at);
        let result = match outcome {
            Outcome::Allow(_) => self.handle(cx, &text, true),
            Outcome::Deny { status, reason } => Err(Refusal(status, Cow::Owned(reason))),
            Outcome::Failed(Failure::Timeout, _) => {
                Err(Refusal(503, Cow::Borrowed("the application did not answer in time")))
            }
            Outcome::Failed(..) => Err(Refusal(503, Cow::Borrowed("the application cannot decide now"))),
        };
        self.answer_client(cx, result, Some(&topic));
    }
}
