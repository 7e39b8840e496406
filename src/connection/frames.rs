//! Input to the app: request heads go to [`http`](super::http), frames through the one
//! frames → app path ([`Connection::process_frames`]); every app call goes through
//! [`call_app`], so every app is called the same way and everything it sends is encoded the
//! same way (compressed, or translated for a legacy client).

use std::io;
use std::net::IpAddr;

use super::{Connection, Ctx, End, Phase, Rare, Ws, FANOUT_BUDGET, INFLATE_BUDGET, INFLATE_UNIT};
use crate::apps::{App, AppClose, AppCtx, AppIo, Traffic};
use crate::buffer::OutQueue;
use crate::ws::deflate::{PerMessage, CHUNK};
use crate::ws::endpoint::{Endpoint, Event, Payload, WsError};
use crate::ws::frame::Opcode;

impl Connection {
    /// Runs `f` on the app (see [`call_app`]); applies what the app asked for after.
    pub(super) fn with_app<R>(
        &mut self,
        cx: &mut Ctx<'_>,
        f: impl FnOnce(&mut dyn App, &mut AppCtx<'_>) -> R,
    ) -> Option<R> {
        let who = self.who();
        let high = self.limits.backpressure_high;
        let Connection { phase, rare, out, log, .. } = self;
        let ws = phase.ws_mut()?;
        let mut close = None;
        let (r, _) = call_app(ws, rare, out, cx, who, high, &mut log.traffic, &mut close, f);
        if let Some(why) = close {
            self.app_closed(cx, why);
        }
        Some(r)
    }

    /// The loop's answer to a request (a subscription with a position, a history read):
    /// `true` if the app took it for its backend; the client gets it otherwise.
    pub fn offer_answer(&mut self, cx: &mut Ctx<'_>, body: &[u8]) -> (bool, super::Turn) {
        let taken = self.with_app(cx, |app, acx| app.on_answer(acx, body)).unwrap_or(false);
        (taken, self.drive(cx, super::Ready { corked: true, ..super::Ready::default() }))
    }

    /// The app's own I/O (its backend socket). `Some(bytes read)` when it read and may
    /// read again.
    pub(super) fn app_io(&mut self, cx: &mut Ctx<'_>) -> Option<usize> {
        // Who the app serves, only where it is asked (building the address costs every drive).
        let who = matches!(self.phase, Phase::HandedOff { .. }).then(|| self.who());
        if let (Phase::HandedOff { handoff: h, .. }, Some(who)) = (&mut self.phase, who) {
            let mut close = None;
            let mut traffic = Traffic::default();
            let mut acx = app_ctx(cx, who, &mut self.out, &mut traffic, 0, &mut close, None, None);
            h.backend.on_io(&mut acx, false);
            if close.is_some() {
                self.close(cx.now, cx.pools, End::HandOffFailed(io::ErrorKind::BrokenPipe.into()));
            } else if !h.backend.has_pending_output() {
                self.close(cx.now, cx.pools, End::HandedOff);
            }
            return None;
        }
        if !self.has_own_io() {
            return None;
        }
        let may_read = self.is_open() && self.out.len() < self.limits.backpressure_high;
        match self.with_app(cx, |app, acx| app.on_io(acx, may_read))? {
            AppIo::Read(n) if !self.is_closed() => Some(n),
            _ => None,
        }
    }

    /// The app has a socket of its own (a backend's), driven alongside the client's.
    #[inline]
    pub(super) fn has_own_io(&self) -> bool {
        debug_assert_eq!(self.app_own_io, self.phase.ws().is_some_and(|ws| ws.app.has_own_io()));
        self.app_own_io
    }

    // Inlined into the drive: per read, it is a buffer lent and a dispatch on the phase.
    #[inline(always)]
    pub(super) fn process_input(&mut self, cx: &mut Ctx<'_>) {
        let Some(mut bytes) = self.input.detach() else {
            // A large compressed message goes on inflating with no new bytes.
            if matches!(self.phase, Phase::Connected(_)) && self.is_inflating() {
                self.process_frames(&mut [], cx);
            }
            return;
        };
        loop {
            match self.phase {
                Phase::Http { .. } => {
                    if !self.process_request(&bytes, cx) {
                        break;
                    }
                }
                Phase::Connected(_) => {
                    self.process_frames(&mut bytes, cx);
                    break;
                }
                // Pipelined requests wait for the file being sent.
                Phase::Sending(_) => break,
                _ => {
                    self.input.discard();
                    break;
                }
            }
        }
        self.input.attach(bytes);
    }

    /// The one frames → app path, for every wire: the endpoint decodes (inflating, or a
    /// legacy draft's frames), the app gets whole messages through one context (the one
    /// [`call_app`] makes), pings are answered, the close handshake ends it. Stops for
    /// backpressure, the fan-out budget, an app that holds input, or a large message's
    /// inflating budget (the input is then held: what is left goes first next time).
    pub(super) fn process_frames(&mut self, buf: &mut [u8], cx: &mut Ctx<'_>) {
        /// Why the loop over frames stopped.
        enum Stop {
            /// Backpressure, the app (holding input, or closing: `app_close`), the fan-out or
            /// inflating budget: bytes may wait.
            Held,
            /// An incomplete frame (or nothing): a read brings the rest.
            NeedMore,
            Failed(WsError),
            /// The peer began closing: answer, tell the app, end.
            CloseBegun(Option<u16>, String),
            Ended(End),
        }
        let high = self.limits.backpressure_high;
        let max_backpressure = self.limits.max_backpressure;
        let who = self.who();
        let failing = self.failing().is_some();
        let Connection { phase, rare, out, log, input, .. } = self;
        let Some(ws) = phase.ws_mut() else { return };
        if failing || !ws.app.accepts_input(high) {
            input.set_held(true);
            return;
        }
        let mut app_close = None;
        let mut dropped = 0;
        let own_copied;
        let cx_stamp = cx.stamp;
        let stop = {
            let parts = AppParts::of(ws, rare, out);
            let AppParts { queue, mut wire_out, pmd } = parts;
            // A client that takes published frames as they are (not compressed, not a legacy
            // draft's) gets its own publications' copies straight away. (It is open: after
            // our close, the session gives the app no more messages.)
            let own_copies = (wire_out.is_none() && pmd.is_none()).then_some(max_backpressure);
            let mut acx = app_ctx(cx, who, queue, &mut log.traffic, high, &mut app_close, pmd, own_copies);
            let now = cx_stamp;
            let stop = loop {
                let queued = wire_out.as_deref().map_or(acx.out.len(), OutQueue::len);
                if queued >= high || *acx.fanout >= FANOUT_BUDGET {
                    break Stop::Held;
                }
                let Ws { endpoint, app } = &mut *ws;
                let pending = input.pending_in_mut(buf);
                // The common frame first (a whole small message), then the general path.
                let (kind, payload) = if let Some(got) = endpoint.receive_message(&mut *pending, now) {
                    match got {
                        Ok((kind, payload, used)) => {
                            input.consume(used);
                            (kind, Payload::Borrowed(payload))
                        }
                        Err(e) => break Stop::Failed(e),
                    }
                } else if pending.is_empty() && !endpoint.is_inflating() {
                    // Every whole frame of the read is handled: nothing can come of no bytes.
                    break Stop::NeedMore;
                } else {
                    // Inflating shares the drive's work budget with fan-out.
                    let budget = INFLATE_BUDGET.saturating_sub(acx.fanout.saturating_mul(INFLATE_UNIT)).max(CHUNK);
                    let received = match endpoint.receive(pending, now, budget, acx.codecs, acx.pmd.as_deref_mut()) {
                        Ok(r) => r,
                        Err(e) => break Stop::Failed(e),
                    };
                    input.consume(received.used);
                    *acx.fanout += received.inflated / INFLATE_UNIT;
                    let Some(event) = received.event else {
                        if received.used == 0 {
                            break Stop::NeedMore;
                        }
                        continue;
                    };
                    match event {
                        Event::Message(kind, payload) => (kind, payload),
                        // Pongs ride the urgent lane of the client's own queue.
                        Event::Ping(payload) => {
                            wire_out.as_deref_mut().unwrap_or(acx.out).push_control(Opcode::Pong, payload);
                            continue;
                        }
                        Event::Pong => continue,
                        Event::CloseBegun { code, reason } => {
                            break Stop::CloseBegun(code, reason.chars().take(123).collect())
                        }
                        Event::CloseAnswered(code) => break Stop::Ended(End::Closed { code, reason: String::new() }),
                        Event::Yield => break Stop::Held,
                    }
                };
                acx.traffic.msgs_in += 1;
                acx.traffic.bytes_in += payload.len() as u64;
                app.on_message(&mut acx, kind, payload);
                if let Some(wire_out) = wire_out.as_deref_mut() {
                    dropped += reencode(endpoint, &mut acx, wire_out);
                }
                if acx.close.is_some() || acx.hold {
                    break Stop::Held;
                }
                // Every byte read is used (a read is one message, most often): the next pass
                // would only find nothing.
                if !input.has_pending() && !endpoint.is_inflating() {
                    break Stop::NeedMore;
                }
            };
            own_copied = acx.own_copied;
            stop
        };
        cx.metrics.legacy_dropped += dropped as u64;
        cx.metrics.deliveries += u64::from(own_copied);
        // Held input goes first next time. (After the app closes, what follows, the peer's
        // answer perhaps, is read on.)
        self.input.set_held(matches!(stop, Stop::Held));
        match stop {
            Stop::NeedMore => {}
            Stop::Held => {
                if let Some(why) = app_close {
                    self.app_closed(cx, why);
                }
            }
            Stop::Failed(e) => self.protocol_error(cx, e.close_code(), e.reason()),
            Stop::CloseBegun(code, reason) => {
                // §5.5.1: answer, echoing the code (an empty close gets an empty one).
                if let Some(ws) = self.phase.ws() {
                    ws.endpoint.close_reply(&mut self.out, cx.pools, code);
                }
                self.with_app(cx, |app, acx| app.on_close(acx, code, &reason, false));
                self.close(cx.now, cx.pools, End::Closed { code, reason });
            }
            Stop::Ended(end) => self.close(cx.now, cx.pools, end),
        }
    }
}

/// What an app call writes to: the queue its context holds (the connection's output, or the
/// scratch queue when what it queues is re-encoded for the wire), the connection's output in
/// the second case, and permessage-deflate to compress with.
struct AppParts<'q> {
    queue: &'q mut OutQueue,
    wire_out: Option<&'q mut OutQueue>,
    pmd: Option<&'q mut PerMessage>,
}

impl<'q> AppParts<'q> {
    #[inline]
    fn of(ws: &Ws, rare: &'q mut Option<Box<Rare>>, out: &'q mut OutQueue) -> AppParts<'q> {
        let compressing = rare.as_ref().is_some_and(|r| r.pmd.is_some());
        if !ws.recodes(compressing) && !compressing {
            return AppParts { queue: out, wire_out: None, pmd: None };
        }
        let Rare { pmd, scratch, .. } = rare.get_or_insert_with(Box::default).as_mut();
        if ws.recodes(compressing) {
            AppParts { queue: scratch, wire_out: Some(out), pmd: pmd.as_mut() }
        } else {
            AppParts { queue: out, wire_out: None, pmd: pmd.as_mut() }
        }
    }
}

/// The one way an app is called: a context over [`AppParts`], and what the app queued
/// re-encoded for the wire after the call. Returns `f`'s result and whether the app holds
/// input. (The frames loop keeps one such context for all the messages of a read.)
#[allow(clippy::too_many_arguments)]
pub(super) fn call_app<R>(
    ws: &mut Ws,
    rare: &mut Option<Box<Rare>>,
    out: &mut OutQueue,
    cx: &mut Ctx<'_>,
    who: (u64, usize, (IpAddr, u16)),
    high: usize,
    traffic: &mut Traffic,
    close: &mut Option<AppClose>,
    f: impl FnOnce(&mut dyn App, &mut AppCtx<'_>) -> R,
) -> (R, bool) {
    let AppParts { queue, wire_out, pmd } = AppParts::of(ws, rare, out);
    let mut dropped = 0;
    let (r, hold) = {
        let mut acx = app_ctx(cx, who, queue, traffic, high, close, pmd, None);
        let r = f(ws.app.as_mut(), &mut acx);
        if let Some(wire_out) = wire_out {
            dropped = reencode(&mut ws.endpoint, &mut acx, wire_out);
        }
        (r, acx.hold)
    };
    cx.metrics.legacy_dropped += dropped as u64;
    (r, hold)
}

/// What the app queued in the scratch queue (its context's queue) goes out to `wire_out`
/// re-encoded for the wire. Returns the messages a legacy client could not be sent.
pub(super) fn reencode(endpoint: &mut Endpoint, acx: &mut AppCtx<'_>, wire_out: &mut OutQueue) -> usize {
    if acx.out.is_empty() {
        return 0;
    }
    let AppCtx { out: scratch, pools, codecs, pmd, .. } = acx;
    scratch.drain_contiguous(pools, |frames, pools| {
        endpoint.encode_queued(frames, wire_out, pools, codecs, pmd.as_deref_mut())
    })
}

/// The context an app gets for one call: the connection's id, key and peer, its output queue
/// and counters, and the loop's shares (pools, topics, actions, the fan-out count).
#[allow(clippy::too_many_arguments)]
pub(super) fn app_ctx<'b>(
    cx: &'b mut Ctx<'_>,
    (id, key, peer): (u64, usize, (IpAddr, u16)),
    out: &'b mut OutQueue,
    traffic: &'b mut Traffic,
    backpressure_high: usize,
    close: &'b mut Option<AppClose>,
    pmd: Option<&'b mut PerMessage>,
    own_copies: Option<usize>,
) -> AppCtx<'b> {
    AppCtx {
        now: cx.now,
        id,
        key,
        peer,
        out,
        pools: cx.pools,
        traffic,
        backpressure_high,
        topics: cx.topics,
        broker: cx.broker,
        actions: cx.actions,
        close,
        fanout: &mut cx.fanout,
        hold: false,
        pmd,
        codecs: cx.codecs,
        own_copies,
        own_copied: 0,
        publish_spreads: cx.publish_spreads,
    }
}
