//! The one close path: every ending, whatever its cause, goes through [`Connection::close`]
//! with an [`End`], which sends what the peer is owed (a close frame, an error response), tells
//! the app, logs why, and moves to `Flushing` or `Closed`.

use std::time::Instant;

use super::{Connection, Ctx, End, Phase, SLOW_CONSUMER_CODE};
use crate::apps::{App, AppClose, Hold};
use crate::buffer::{OutQueue, Pools};
use crate::http::response::Response;
use crate::ws::close;
use crate::ws::hixie::Draft;

impl Connection {
    /// Ends the connection the way `end` says: a response, a close frame and its handshake,
    /// or at once. Everything that ends a connection comes here.
    pub fn close(&mut self, now: Instant, pools: &mut Pools, end: End) {
        if self.is_closed() {
            return;
        }
        if let Phase::HandingOff { handoff, .. } | Phase::HandedOff { handoff, .. } = &mut self.phase {
            // Whatever the ending, the hand-off's backend link goes with its phase: its
            // buffers back to the pool first.
            handoff.backend.release(pools);
        }
        match end {
            End::Refuse { status, reason } => {
                self.log.set_status(status);
                push_error_response(&mut self.out, pools, status, &reason);
                self.log.note_end(reason);
                self.finish(now);
            }
            End::HeadTimeout => {
                self.log.set_status(408);
                self.log.note_end("request head not received within handshake_timeout");
                push_error_response(&mut self.out, pools, 408, "request head not received in time");
                self.finish(now);
            }
            End::KeepAliveTimeout => {
                self.log.note_end(format!("{}; closed idle past handshake_timeout", self.log.served()));
                self.finish(now);
            }
            End::Answered => self.finish(now),
            End::Close { code, reason } => self.begin_close(now, pools, code, reason),
            End::BackendFailed(why) => {
                self.begin_close(now, pools, close::INTERNAL_ERROR, "backend failed".into());
                self.log.set_end(why);
            }
            End::SlowConsumer => {
                // What it has not begun to receive it will not get: its close frame goes next.
                self.out.discard_unstarted(pools);
                self.begin_close(now, pools, SLOW_CONSUMER_CODE, "slow consumer: too much queued".into())
            }
            End::Closed { code, reason } => {
                let code = code.unwrap_or(close::NO_STATUS);
                self.log.note_received_close(code);
                self.log.note_close(code, reason);
                self.input.discard();
                self.finish(now);
            }
            End::Fail { code, reason } => {
                let already_sent = self.phase.ws().is_some_and(|ws| ws.endpoint.session().is_closing());
                if !already_sent {
                    self.push_close_frame(pools, Some(code), reason);
                }
                if let Some(ws) = self.phase.ws_mut() {
                    ws.endpoint.session_mut().close(now);
                }
                self.set_failing(None);
                self.log.set_close(code, reason);
                self.input.discard();
                self.finish(now);
            }
            End::Abort(why) => {
                self.log.note_end(why);
                self.set_phase(Phase::closed());
            }
            End::Io(e) => {
                if !self.log.has_end() {
                    self.log.set_end(format!("I/O error: {e}"));
                }
                self.set_phase(Phase::closed());
            }
            End::HandedOff => {
                self.log.set_end("handed off to the backend");
                self.set_phase(Phase::closed());
            }
            End::HandOffFailed(e) => {
                log::warn!("{}: hand-off to the backend failed: {e}", self.peer());
                self.log.set_end(format!("hand-off failed: {e}"));
                self.set_phase(Phase::closed());
            }
        }
        if self.is_closed() {
            // Back to the pool now, not after the batch: when thousands of clients leave in one
            // batch, the next one's read reuses this buffer instead of allocating another.
            self.input.release(pools);
        }
    }

    /// Starts the closing handshake (§7.1.2): our close frame, then wait for the peer's.
    /// While the client is being failed, any reason to close sends the close frame it is owed.
    pub(super) fn begin_close(
        &mut self,
        now: Instant,
        pools: &mut Pools,
        code: u16,
        reason: std::borrow::Cow<'static, str>,
    ) {
        if let Some(&(code, reason, _)) = self.failing() {
            return self.close(now, pools, End::Fail { code, reason });
        }
        let Phase::Connected(ws) = &mut self.phase else {
            return self.finish(now);
        };
        if ws.endpoint.session_mut().close(now) {
            let legacy = ws.endpoint.draft();
            self.push_close_frame(pools, Some(code), &reason);
            self.log.set_close(code, reason);
            if legacy == Some(Draft::Hixie75) {
                // hixie-75 has no closing handshake: the connection just ends.
                self.finish(now);
            }
        }
    }

    /// Our close frame, as the client's wire has it ([`Endpoint::close_frame`]).
    pub(super) fn push_close_frame(&mut self, pools: &mut Pools, code: Option<u16>, reason: &str) {
        match self.phase.ws() {
            Some(ws) => ws.endpoint.close_frame(&mut self.out, pools, code, reason),
            None => self.out.push_close(pools, code, reason),
        }
    }

    /// Writes what is queued, then FIN, then waits for the peer's FIN (bounded).
    pub(super) fn finish(&mut self, now: Instant) {
        self.set_phase(Phase::flushing(now + self.limits.close_timeout));
    }

    /// The client broke the protocol (§7.1.7). An app that must hear first (a framed
    /// backend) holds the close frame the client is owed until it answers; otherwise the
    /// client is failed at once.
    pub(super) fn protocol_error(&mut self, cx: &mut Ctx<'_>, code: u16, reason: &'static str) {
        let hold = self.with_app(cx, |app, acx| app.on_close(acx, Some(code), reason, true));
        if self.is_closed() {
            return;
        }
        let may_wait = self.is_open() && self.failing().is_none();
        if hold == Some(Hold::UntilAppCloses) && may_wait {
            self.set_failing(Some((code, reason, cx.now)));
            self.input.discard();
            log::debug!("{} protocol error ({code} {reason}); waiting for the backend's CLOSE", self.peer());
            return;
        }
        self.close(cx.now, cx.pools, End::Fail { code, reason })
    }

    pub(super) fn app_closed(&mut self, cx: &mut Ctx<'_>, why: AppClose) {
        let end = match why {
            AppClose::Close(code, reason) => End::Close { code, reason },
            AppClose::Failed(why) => {
                cx.metrics.backend_deaths += 1;
                End::BackendFailed(why)
            }
        };
        self.close(cx.now, cx.pools, end);
    }

    /// The server is shutting down: close handshakes start, requests in progress end.
    pub(super) fn start_drain(&mut self, cx: &mut Ctx<'_>) {
        let end = match &self.phase {
            Phase::Unknown | Phase::Opening { .. } | Phase::Http { .. } => {
                Some(End::Abort("server shutting down".into()))
            }
            Phase::Connected(_) => Some(End::Close { code: close::GOING_AWAY, reason: "server shutting down".into() }),
            // A plugin's on_connect is deciding: the client is told now, not at the deadline.
            Phase::Consulting { .. } | Phase::Asking { .. } => {
                Some(End::Refuse { status: 503, reason: "server shutting down".into() })
            }
            _ => None,
        };
        if let Some(end) = end {
            self.close(cx.now, cx.pools, end);
        }
        self.after_io(cx, 0);
    }
}

/// Queues a plain-text error response that closes the connection.
fn push_error_response(out: &mut OutQueue, pools: &mut Pools, status: u16, reason: &str) {
    let mut bytes = Vec::with_capacity(160 + reason.len());
    Response::error(status, reason).write(&mut bytes);
    out.push_bytes(pools, &bytes);
}
