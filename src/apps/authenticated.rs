//! Any app behind a verified connection token (`auth = "jwt"`, every app but pubsub, which
//! handles its own tokens because its clients may refresh them): names the user for the
//! access log and `/api/clients`, and closes the connection with
//! [`TOKEN_EXPIRED`](crate::auth::TOKEN_EXPIRED) when the token's `exp` passes.

use std::time::Instant;

use super::{App, AppClose, AppCtx, AppIo, Hold, Payload};
use crate::auth::{Identity, TOKEN_EXPIRED};
use crate::buffer::Pools;
use crate::sys::splice::Pipe;
use crate::ws::message::MessageKind;

pub struct Authenticated {
    inner: Box<dyn App>,
    identity: Identity,
    /// `exp` (with leeway) on the reactor's clock.
    expires_at: Option<Instant>,
}

impl Authenticated {
    pub fn new(inner: Box<dyn App>, identity: Identity, expires_at: Option<Instant>) -> Authenticated {
        Authenticated { inner, identity, expires_at }
    }
}

impl App for Authenticated {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        self.inner.on_open(cx);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
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
        Some(&self.identity.user)
    }

    fn queues_frames(&self) -> bool {
        self.inner.queues_frames()
    }
}
