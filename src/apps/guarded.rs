//! Any app behind its route's guards, for the connection's life:
//!
//! - a verified connection token (`auth = "jwt"`; every app but pubsub, which handles its own
//!   tokens because its clients may refresh them): names the user for the access log and
//!   `/api/clients`, and closes the connection with
//!   [`TOKEN_EXPIRED`](crate::auth::TOKEN_EXPIRED) when the token's `exp` passes;
//! - per-connection rate limits (`rate_messages`, `rate_bytes`) on what the client sends, and
//!   the connection's place in its address's count (`max_connections_per_ip`), given back when
//!   the app is dropped.
//!
//! A route with none of these serves the app itself, without this layer.

use std::sync::Arc;
use std::time::Instant;

use super::{App, AppClose, AppCtx, AppIo, Hold, Payload};
use crate::auth::{Identity, TOKEN_EXPIRED};
use crate::buffer::Pools;
use crate::rate_limit::{self, Bucket, IpSlot, Kind, RouteRates};
use crate::sys::splice::Pipe;
use crate::ws::message::MessageKind;

pub struct Guarded {
    inner: Box<dyn App>,
    identity: Option<Identity>,
    /// `exp` (with leeway) on the reactor's clock.
    expires_at: Option<Instant>,
    limits: Option<Box<Limits>>,
}

/// A connection's rate limits.
struct Limits {
    rates: Arc<RouteRates>,
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    /// The user's shared bucket (`rate_messages_per_user`), for the user it was taken for (a
    /// pubsub client names its user with its first message).
    user: Option<(Arc<str>, Arc<std::sync::Mutex<Bucket>>)>,
    _slot: Option<IpSlot>,
}

impl Guarded {
    /// `app` with what the route asks (`app` itself when it asks nothing).
    pub fn wrap(
        app: Box<dyn App>,
        verified: Option<(Identity, Option<Instant>)>,
        rates: &Arc<RouteRates>,
        slot: Option<IpSlot>,
        now: Instant,
    ) -> Box<dyn App> {
        if verified.is_none() && !rates.wraps() {
            return app;
        }
        let limits = rates.wraps().then(|| {
            let now_ms = crate::stamp::millis(now);
            Box::new(Limits {
                rates: Arc::clone(rates),
                messages: rates.messages.as_ref().map(|r| Bucket::full(r, now_ms)),
                bytes: rates.bytes.as_ref().map(|r| Bucket::full(r, now_ms)),
                user: None,
                _slot: slot,
            })
        });
        let (identity, expires_at) = match verified {
            Some((identity, at)) => (Some(identity), at),
            None => (None, None),
        };
        Box::new(Guarded { inner: app, identity, expires_at, limits })
    }
}

impl App for Guarded {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        self.inner.on_open(cx);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        if let Some(limits) = self.limits.as_deref_mut() {
            let rates = &*limits.rates;
            if let (Some(bucket), Some(rule)) = (&mut limits.messages, &rates.messages) {
                if !rate_limit::check(cx, bucket, rule, Kind::Messages, 1) {
                    return;
                }
            }
            if let (Some(bucket), Some(rule)) = (&mut limits.bytes, &rates.bytes) {
                if !rate_limit::check(cx, bucket, rule, Kind::Bytes, payload.as_slice().len() as u64) {
                    return;
                }
            }
            if let (Some(rule), Some(table)) = (&rates.messages_per_user, &rates.per_user) {
                // Anonymous clients (no token yet, or an empty `sub`) have no user to share.
                let user = self.identity.as_ref().map(|i| &*i.user).or_else(|| self.inner.user()).unwrap_or("");
                if !user.is_empty() {
                    if limits.user.as_ref().is_none_or(|(u, _)| **u != *user) {
                        limits.user = Some((Arc::from(user), table.bucket(user, rule, cx.now())));
                    }
                    let Some((_, shared)) = &limits.user else { return };
                    let mut bucket = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if !rate_limit::check(cx, &mut bucket, rule, Kind::MessagesPerUser, 1) {
                        return;
                    }
                }
            }
        }
        self.inner.on_message(cx, kind, payload);
    }

    fn on_close(&mut self, cx: &mut AppCtx<'_>, code: Option<u16>, reason: &str, protocol_error: bool) -> Hold {
        self.inner.on_close(cx, code, reason, protocol_error)
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.inner.deadline(), self.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self, cx: &mut AppCtx<'_>) {
        if self.expires_at.is_some_and(|at| cx.now() >= at) {
            self.expires_at = None;
            cx.close(AppClose::Close(TOKEN_EXPIRED, "token expired".into()));
            return;
        }
        if self.inner.deadline().is_some_and(|at| cx.now() >= at) {
            self.inner.on_timer(cx);
        }
    }

    fn on_ready(&mut self, readable: bool, writable: bool) {
        self.inner.on_ready(readable, writable);
    }

    fn has_own_io(&self) -> bool {
        self.inner.has_own_io()
    }

    fn on_io(&mut self, cx: &mut AppCtx<'_>, may_read: bool) -> AppIo {
        self.inner.on_io(cx, may_read)
    }

    fn accepts_input(&self, high: usize) -> bool {
        self.inner.accepts_input(high)
    }

    fn has_pending_output(&self) -> bool {
        self.inner.has_pending_output()
    }

    fn pipe(&mut self) -> Option<&mut Pipe> {
        self.inner.pipe()
    }

    fn release(&mut self, pools: &mut Pools) {
        self.inner.release(pools);
    }

    fn on_answer(&mut self, cx: &mut AppCtx<'_>, body: &[u8]) -> bool {
        self.inner.on_answer(cx, body)
    }

    fn token(&self) -> Option<&str> {
        self.inner.token()
    }

    fn user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| &*i.user).or_else(|| self.inner.user())
    }

    fn on_proxy_answer(&mut self, cx: &mut AppCtx<'_>, seq: u32, outcome: crate::auth::proxy::Outcome) {
        self.inner.on_proxy_answer(cx, seq, outcome);
    }

    fn queues_frames(&self) -> bool {
        self.inner.queues_frames()
    }
}
