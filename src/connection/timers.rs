//! Deadlines: when each phase must have moved on, and what happens when it has not.

use std::time::Instant;

use super::{Connection, Ctx, End, Phase};
use crate::auth::proxy::{Failure, Outcome};
use crate::stamp::Stamp;
use crate::ws::frame::Opcode;
use crate::ws::session::{Due, Timing};

impl Connection {
    /// The earliest time at which a timer has something to do.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        self.due().map(|s| s.instant(now))
    }

    /// [`Connection::deadline`] as a stamp, without reading the clock: what the loop arms
    /// after every drive.
    #[inline(always)]
    pub(super) fn due(&self) -> Option<Stamp> {
        let phase = match &self.phase {
            Phase::Unknown => Some(self.accepted.short().after(self.limits.handshake_timeout)),
            Phase::Opening { deadline }
            | Phase::Http { deadline }
            | Phase::Answering { deadline }
            | Phase::Consulting { deadline, .. }
            | Phase::Asking { deadline }
            | Phase::HandingOff { deadline, .. }
            | Phase::HandedOff { deadline, .. }
            | Phase::Flushing { deadline, .. }
            | Phase::Lingering { deadline, .. } => Some(*deadline),
            Phase::Connected(ws) => match self.failing() {
                Some(&(_, _, since)) => Some(Stamp::at(since + self.limits.close_timeout)),
                None => {
                    let session = ws.endpoint.session().due(&self.timing());
                    // A closing connection does not call its app's timer (see on_timer): a
                    // passed app deadline would be armed again and again.
                    let app = if ws.endpoint.session().is_closing() { None } else { ws.app.deadline() };
                    match app.map(Stamp::at) {
                        Some(app) => Some(session.map_or(app, |s| s.earlier(app))),
                        None => session,
                    }
                }
            },
            Phase::Sending(_) | Phase::Closed(_) => None,
        };
        let stall = self.stalled_since.map(|t| t.after(self.limits.write_timeout));
        match (phase, stall) {
            (Some(a), Some(b)) => Some(a.earlier(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on every deadline that has passed.
    pub(super) fn on_timer(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        if self.stalled_since.is_some_and(|t| now >= t.instant(now) + self.limits.write_timeout) {
            return self.close(cx.now, cx.pools, End::Abort("write timeout: peer is not reading".into()));
        }
        let passed = self.deadline(now).is_some_and(|d| now >= d);
        let end = match &self.phase {
            Phase::Opening { .. } if passed => Some(End::Abort("TLS handshake timeout".into())),
            Phase::Http { .. } if passed && !self.input.has_pending() && self.log.responses() > 0 => {
                Some(End::KeepAliveTimeout)
            }
            Phase::Unknown | Phase::Http { .. } if passed => Some(End::HeadTimeout),
            Phase::Flushing { .. } | Phase::Lingering { .. } if passed => {
                Some(End::Abort("peer did not finish closing in time".into()))
            }
            Phase::Answering { .. } if passed => {
                // A worker did not give its part in time (it is stuck, or draining).
                self.set_phase(Phase::Http { deadline: Stamp::at(now + cx.limits.handshake_timeout) });
                let reply = crate::admin::Reply::error(503, "the workers did not all answer in time");
                self.send_reply(cx, &reply, false, false);
                None
            }
            Phase::Asking { .. } if passed => {
                // Counted in /metrics when the helper thread's own answer comes.
                let outcome = Outcome::Failed(Failure::Timeout, "the auth proxy did not answer in time".into());
                self.proxy_decided(cx, outcome);
                None
            }
            Phase::Consulting { .. } if passed => {
                cx.metrics.plugin_timeouts += 1;
                self.log.set_end("the plugin's on_connect did not return in time");
                let response = crate::http::response::Response::error(503, "the plugin did not answer in time");
                self.send_response(cx, &crate::http::response::Response { keep_alive: false, ..response });
                None
            }
            Phase::HandingOff { .. } if passed => Some(End::Abort("101 not accepted in time for the hand-off".into())),
            Phase::HandedOff { .. } if passed => Some(End::Abort("backend did not take the hand-off in time".into())),
            Phase::Connected(ws) => {
                // The app's timer first: what it sends goes before a close the session's
                // timers may begin.
                if ws.app.deadline().is_some_and(|t| now >= t) && self.is_open() {
                    self.with_app(cx, |app, acx| app.on_timer(acx));
                }
                if matches!(self.phase, Phase::Connected(_)) {
                    self.ws_timer(now)
                } else {
                    None
                }
            }
            _ => None,
        };
        if matches!(&end, Some(End::Close { reason, .. }) if reason == crate::ws::session::PING_TIMEOUT) {
            cx.metrics.ping_timeouts += 1;
        }
        if let Some(end) = end {
            self.close(cx.now, cx.pools, end);
        }
        self.after_io(cx, 0);
    }

    pub(super) fn ws_timer(&mut self, now: Instant) -> Option<End> {
        if let Some(&(code, reason, since)) = self.failing() {
            if now < since + self.limits.close_timeout {
                return None;
            }
            log::debug!("{} backend did not answer CLOSE in time", self.peer());
            return Some(End::Fail { code, reason });
        }
        let timing = self.timing();
        let ws = self.phase.ws_mut()?;
        match ws.endpoint.session_mut().on_timer(now, &timing)? {
            Due::Ping => {
                // Pings ride the urgent lane: a peer slow to read still gets them promptly.
                self.out.push_control(Opcode::Ping, b"");
                None
            }
            Due::Close(code, reason) => Some(End::Close { code, reason: reason.into() }),
            Due::Abort(why) => Some(End::Abort(why.into())),
        }
    }

    /// The WebSocket session's timers, from the route's limits.
    pub(super) fn timing(&self) -> Timing {
        let l = &self.limits;
        debug_assert_eq!(l.timing, (**l).settled().timing, "limits built without Limits::settled");
        // The legacy drafts have no pings: a legacy client is held by idle_timeout alone.
        let legacy = self.phase.ws().is_some_and(|ws| ws.endpoint.draft().is_some());
        Timing { ping_ms: if legacy { 0 } else { l.timing.ping_ms }, ..l.timing }
    }
}
