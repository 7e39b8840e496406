//! One client connection: its transport, buffers, phase and readiness.
//!
//! Phases: `Unknown` (accepted) → `Opening` (TLS) → `Http` (reading request heads, and
//! `Sending` a static file's body) → `Connected` (a [`ws::endpoint::Endpoint`](Endpoint) and
//! an [`App`]) → `Flushing` (last bytes out, then FIN) →
//! `Lingering` (waiting for the peer's FIN) → `Closed`; direct hand-off goes `HandingOff` →
//! `HandedOff`. Every phase has a deadline.
//!
//! The connection never touches the poller, the slab or other connections. The loop calls
//! [`Connection::drive`] with the readiness it saw (a passed deadline and the drain are
//! readiness too) and gets a [`Turn`]: how to go on, and the next deadline. What else the loop
//! must do (publish, watch a backend socket...) the connection's app records as
//! [`Action`](crate::apps)s in the context. Every ending goes through
//! [`Connection::close`] with an [`End`]. Time is passed in, so everything here runs the same
//! in tests.
//!
//! Readiness is edge-triggered and tracked here: `readable` / `writable` stay set until an
//! operation returns `WouldBlock`. Backpressure is "do not read while too much output is
//! queued", which needs no re-registration. Writes are corked for the event batch: one write
//! per connection per turn, at its end ([`Ready::corked`]).

mod end;
mod http;
mod read_buf;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub use end::{AccessLog, End, SLOW_CONSUMER_CODE};
use read_buf::{Filled, ReadBuf};

use crate::admin::config::AdminConfig;
use crate::admin::Reply;
use crate::apps::backend::{Backend, HandOff};
use crate::apps::{Action, App, AppClose, AppCtx, AppIo, Hold, Traffic};
use crate::backend::FailureLog;
use crate::broker::Broker;
use crate::buffer::{OutQueue, Pools};
use crate::conn_id::key_of;
use crate::encode::SharedFrame;
use crate::http::response::Response;
use crate::http::static_files::{FileBody, TLS_CHUNK};
use crate::limits::{Limits, OnBackpressure};
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::transport::{NotTls, Transport};
use crate::ws::close;
use crate::ws::deflate::{PerMessage, SharedCodecs, CHUNK};
use crate::ws::endpoint::{Endpoint, Event, WsError};
use crate::ws::frame::Opcode;
use crate::ws::hixie::Draft;
use crate::ws::session::{Due, Timing};

/// Bytes one connection may read per wake-up before the loop serves others.
const READ_BUDGET: usize = 512 * 1024;
/// Deliveries one connection's publishes may cause per wake-up (a read budget in messages
/// delivered: 20-byte messages to a room of 10,000 would otherwise be 230 M deliveries for
/// one 512 KiB read).
const FANOUT_BUDGET: usize = 256 * 1024;
/// Output a corked connection may hold before it writes anyway: enough for a turn of small
/// messages in one write, small enough that bulk data is written while still in cache.
const CORK_LIMIT: usize = 64 * 1024;
/// File body bytes one write turn may send, so one fast reader of a large file does not
/// hold the loop: the rest goes next turn.
const BODY_BUDGET: usize = 4 << 20;
/// Bytes one drive may inflate (the read budget's counterpart for compressed messages): a
/// larger message is inflated over several drives, the others served in between.
const INFLATE_BUDGET: usize = 256 << 10;
/// Inflated bytes per unit of the fan-out budget: a drive that inflated `INFLATE_BUDGET` has
/// spent its whole `FANOUT_BUDGET`.
const INFLATE_UNIT: usize = INFLATE_BUDGET / FANOUT_BUDGET;

/// [`Connection::route`] of a connection no route serves (yet).
pub(crate) const NO_ROUTE: u16 = u16::MAX;

/// What the loop shares with a connection for one call.
pub struct Ctx<'a> {
    pub now: Instant,
    pub routes: &'a Routes,
    /// Server-wide limits (those that apply before a route is known).
    pub limits: &'a Limits,
    pub pools: &'a mut Pools,
    pub backend_failures: &'a mut FailureLog,
    pub topics: &'a mut Topics,
    pub broker: &'a mut Broker,
    pub metrics: &'a mut Metrics,
    /// The admin listener's settings (keys also guard `require_key` log viewers).
    pub admin: Option<&'a AdminSettings>,
    /// Where the connection's app records what the loop must do.
    pub actions: &'a mut Vec<Action>,
    /// The worker's compressors and decompressor for connections without context takeover.
    pub codecs: &'a mut SharedCodecs,
    /// Deliveries the connection's publishes caused during this call: past `FANOUT_BUDGET`
    /// it stops reading until the next turn, so one publisher flooding a big room cannot
    /// hold the loop.
    pub fanout: usize,
}

/// The admin listener's configuration and the route its dashboard WebSocket uses.
pub struct AdminSettings {
    pub config: AdminConfig,
    pub route: crate::route::Route,
    /// Every file a log viewer follows (the dashboard shows them too).
    pub log_files: Arc<[std::path::PathBuf]>,
}

/// Readiness the poller reported, for the client's socket and for the app's own socket, and
/// which half of a turn this is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    pub app_readable: bool,
    pub app_writable: bool,
    /// Corked (during the event batch): read and process, queue output, write only past
    /// `CORK_LIMIT` bytes. Uncorked (the end of the turn): write what was queued, read
    /// nothing. So a connection that many others publish to in one turn gets one write for
    /// all of it.
    pub corked: bool,
    /// A deadline the connection asked for has passed.
    pub timer: bool,
    /// The server is shutting down.
    pub drain: bool,
}

/// What a drive leaves the loop to do: go on, and arm this deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub progress: Progress,
    /// When the connection next needs a [`Ready::timer`] drive (`None`: never).
    pub deadline: Option<Instant>,
}

/// What [`Connection::drive`] leaves the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for readiness or a deadline.
    Idle,
    /// Output is queued: write it at the end of the turn.
    Write,
    /// The read budget ran out with data still readable: write at the end of the turn, and
    /// drive again soon, after others.
    Busy,
    /// Written; input that backpressure held back can flow again: drive again next turn.
    Again,
    /// Done: remove after the batch.
    Closed,
}

/// How a message published to this connection fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// Over the backpressure limit, policy "drop": counted, not queued.
    Dropped,
    /// Over the backpressure limit, policy "close": the connection is closing.
    Closing,
    /// Not an open WebSocket (closing, or not yet upgraded).
    NotOpen,
}

/// The open WebSocket: the protocol endpoint and the app behind it.
struct Ws {
    endpoint: Endpoint,
    app: Box<dyn App>,
}

impl Ws {
    /// Whether what the app queues is re-encoded after each call (see [`Rare::scratch`]): for
    /// a legacy client, or compressed when the app queues frames itself (a backend).
    fn recodes(&self, compressing: bool) -> bool {
        self.endpoint.draft().is_some() || (compressing && self.app.queues_frames())
    }
}

/// What few connections have, boxed together: every connection carries the pointer.
#[derive(Default)]
struct Rare {
    /// Direct mode, between the 101 and the hand-off.
    handoff: Option<Box<HandOffState>>,
    /// A protocol error on a route whose app must hear first (framed backend): the close frame
    /// the client is owed, and since when it waits (bounded by `close_timeout`).
    failing: Option<(u16, &'static str, Instant)>,
    /// permessage-deflate, when negotiated: lent to the endpoint to inflate and to the app's
    /// context to compress.
    pmd: Option<PerMessage>,
    /// What the app queues during one call when it must be re-encoded after it
    /// ([`Ws::recodes`]).
    scratch: OutQueue,
}

#[derive(Debug)]
enum Phase {
    /// Accepted; the first drive moves it on.
    Unknown,
    /// The TLS handshake (TLS listeners only).
    Opening {
        deadline: Instant,
    },
    /// Reading request heads (one, or several with keep-alive).
    Http {
        deadline: Instant,
    },
    /// Admin listener: a request is with the loop, which answers it ([`Connection::answer`])
    /// right after this drive, or once every worker concerned has given its part; nothing
    /// more is read until then. Past the deadline the client gets a 503.
    Answering {
        deadline: Instant,
    },
    /// A static file's body is being sent (after its head); then the next request, or the
    /// end. No deadline of its own: `write_timeout` ends a client that stops reading.
    Sending(Box<SendingFile>),
    /// Frames flow (`Connection::ws` is set).
    Connected,
    /// Direct mode: the 101 is being written; then the socket goes to the backend.
    HandingOff {
        deadline: Instant,
    },
    /// Direct mode: the socket went; the rest of the HELLO is being written to the backend.
    HandedOff {
        deadline: Instant,
    },
    /// The last bytes (an error response, a close frame) are being written; then FIN.
    Flushing {
        deadline: Instant,
    },
    /// FIN sent; reading and discarding until the peer's FIN, so our last bytes are not
    /// destroyed by a reset.
    Lingering {
        deadline: Instant,
    },
    Closed,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Unknown => "unknown",
            Phase::Opening { .. } => "opening",
            Phase::Http { .. } => "handshaking",
            Phase::Answering { .. } => "handshaking",
            Phase::Sending(_) => "sending",
            Phase::Connected => "connected",
            Phase::HandingOff { .. } => "handing-off",
            Phase::HandedOff { .. } => "handed-off",
            Phase::Flushing { .. } => "flushing",
            Phase::Lingering { .. } => "lingering",
            Phase::Closed => "closed",
        }
    }
}

/// A static file being sent: what is left of it, and whether the connection then goes on.
#[derive(Debug)]
struct SendingFile {
    body: FileBody,
    keep_alive: bool,
}

/// Direct mode, between the 101 and the hand-off: the backend and what goes with the socket.
struct HandOffState {
    backend: Box<Backend>,
    hello: Vec<u8>,
}

pub struct Connection {
    /// Also says where it is ([`key_of`]).
    id: u64,
    transport: Transport,
    /// The peer's address, without what a `SocketAddrV6` adds (flow info, scope): 20 bytes
    /// instead of 32 on every connection.
    peer_ip: IpAddr,
    peer_port: u16,
    accepted: Instant,
    phase: Phase,
    /// Set from the upgrade on: kept through `Flushing` so the app can finish its own writes.
    ws: Option<Ws>,
    rare: Option<Box<Rare>>,
    input: ReadBuf,
    out: OutQueue,
    readable: bool,
    writable: bool,
    /// Since when queued output has made no progress.
    stalled_since: Option<Instant>,
    /// Limits in force: the server's until a route is chosen, then the route's.
    limits: Arc<Limits>,
    log: AccessLog,
}

impl Connection {
    pub fn new(
        id: u64,
        transport: Transport,
        peer: SocketAddr,
        now: Instant,
        limits: Arc<Limits>,
        admin: bool,
    ) -> Connection {
        Connection {
            id,
            transport,
            peer_ip: peer.ip(),
            peer_port: peer.port(),
            accepted: now,
            phase: Phase::Unknown,
            ws: None,
            rare: None,
            input: ReadBuf::default(),
            out: OutQueue::default(),
            readable: false,
            writable: false,
            stalled_since: None,
            limits,
            log: AccessLog::new(admin),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer_ip, self.peer_port)
    }

    /// Id, slab key and peer: who the app is serving.
    fn who(&self) -> (u64, usize, SocketAddr) {
        (self.id, key_of(self.id), self.peer())
    }

    /// The connection's stable id (access line, HELLO, send-by-id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The index of the route serving it, once known.
    pub fn route(&self) -> Option<usize> {
        (self.log.route != NO_ROUTE).then_some(usize::from(self.log.route))
    }

    pub fn is_admin(&self) -> bool {
        self.log.admin
    }

    /// When it was accepted.
    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    /// The phase's name (for the metrics and the API).
    pub fn state(&self) -> &'static str {
        self.phase.name()
    }

    /// An open WebSocket (not closing).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Connected) && self.ws.as_ref().is_some_and(|ws| !ws.endpoint.session().is_closing())
    }

    pub fn traffic(&self) -> &Traffic {
        &self.log.traffic
    }

    /// The broker token its app holds.
    pub fn token(&self) -> Option<&str> {
        self.ws.as_ref().and_then(|ws| ws.app.token())
    }

    /// The access log's record (the loop counts what it says when the connection goes).
    pub fn log_mut(&mut self) -> &mut AccessLog {
        &mut self.log
    }

    /// A TLS client that never finished its handshake.
    pub fn failed_tls_handshake(&self) -> bool {
        self.transport.tls_failed()
    }

    /// Closes an open WebSocket with `code` (the admin API's disconnect).
    pub fn disconnect(&mut self, cx: &mut Ctx<'_>, code: u16, reason: String) -> Turn {
        self.close(cx.now, cx.pools, End::Close { code, reason: reason.into() });
        self.drive(cx, Ready { corked: true, ..Ready::default() })
    }

    /// The loop's answer to the admin request this connection passed on: queued, then the
    /// connection goes on (the next request, if one is already buffered).
    pub fn answer(&mut self, cx: &mut Ctx<'_>, reply: &Reply, keep_alive: bool, head_only: bool) -> Turn {
        if matches!(self.phase, Phase::Answering { .. }) {
            self.set_phase(Phase::Http { deadline: cx.now + cx.limits.handshake_timeout });
            self.send_reply(cx, reply, keep_alive, head_only);
            if self.input.has_pending() {
                self.process_input(cx);
            }
        }
        self.drive(cx, Ready { corked: true, ..Ready::default() })
    }

    /// A client failed while its app must hear first: the close frame it is owed, and since
    /// when it waits.
    fn failing(&self) -> Option<&(u16, &'static str, Instant)> {
        self.rare.as_ref()?.failing.as_ref()
    }

    fn set_failing(&mut self, failing: Option<(u16, &'static str, Instant)>) {
        if failing.is_some() || self.rare.is_some() {
            self.rare.get_or_insert_with(Box::default).failing = failing;
        }
    }

    /// permessage-deflate, when this client negotiated it.
    fn pmd(&self) -> Option<&PerMessage> {
        self.rare.as_ref()?.pmd.as_ref()
    }

    fn handoff_mut(&mut self) -> Option<&mut HandOffState> {
        self.rare.as_mut()?.handoff.as_deref_mut()
    }

    /// The client's socket, for the poller.
    pub fn source_mut(&mut self) -> &mut dyn mio::event::Source {
        self.transport.source_mut()
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Does all the I/O the readiness allows (after acting on passed deadlines, if `timer`),
    /// and says what the loop must do next: the progress and the deadline to arm.
    pub fn drive(&mut self, cx: &mut Ctx<'_>, ready: Ready) -> Turn {
        if ready.timer {
            self.on_timer(cx);
        }
        if ready.drain {
            self.start_drain(cx);
        }
        let progress = self.run(cx, ready);
        let deadline = if progress == Progress::Closed { None } else { self.deadline() };
        Turn { progress, deadline }
    }

    fn run(&mut self, cx: &mut Ctx<'_>, ready: Ready) -> Progress {
        self.readable |= ready.readable;
        self.writable |= ready.writable;
        if ready.app_readable || ready.app_writable {
            if let Some(ws) = &mut self.ws {
                ws.app.on_ready(ready.app_readable, ready.app_writable);
            }
            if let Some(h) = self.handoff_mut() {
                h.backend.on_ready(ready.app_readable, ready.app_writable);
            }
        }
        if let Phase::Unknown = self.phase {
            let next = if self.transport.is_tls() {
                Phase::Opening { deadline: self.accepted + cx.limits.tls_handshake_timeout }
            } else {
                Phase::Http { deadline: self.accepted + cx.limits.handshake_timeout }
            };
            self.set_phase(next);
        }
        if !ready.corked {
            return self.write_turn(cx);
        }
        let mut budget = READ_BUDGET;
        loop {
            if self.writable && self.out.len() >= CORK_LIMIT {
                self.flush(cx);
            }
            if self.is_closed() {
                return Progress::Closed;
            }
            if cx.fanout >= FANOUT_BUDGET {
                return Progress::Busy;
            }
            if let Some(n) = self.app_io(cx) {
                if budget == 0 {
                    return Progress::Busy;
                }
                budget = budget.saturating_sub(n);
                continue;
            }
            // Input left over by backpressure goes first, before more is read.
            if self.has_unprocessed_input() && self.wants_input() {
                self.process_input(cx);
                if self.is_inflating() && self.wants_input() {
                    // This drive's inflating budget is spent: the rest next turn.
                    return Progress::Busy;
                }
            }
            if !(self.readable && self.wants_input()) {
                break;
            }
            if budget == 0 {
                return Progress::Busy;
            }
            budget = budget.saturating_sub(self.read_once(cx));
        }
        self.after_io(cx, READ_BUDGET - budget);
        if self.is_closed() {
            Progress::Closed
        } else if self.writable && self.has_output() {
            Progress::Write
        } else {
            Progress::Idle
        }
    }

    /// The end-of-turn write: everything queued this turn goes in one write (or writev).
    /// Reports `Again` when the write made room for input that backpressure held back.
    fn write_turn(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let high = self.limits.backpressure_high;
        let was_full = self.out.len() >= high;
        if self.writable && self.has_output() {
            self.flush(cx);
        }
        self.after_io(cx, 0);
        if self.is_closed() {
            return Progress::Closed;
        }
        let input_waits = (self.readable || self.has_unprocessed_input()) && self.wants_input();
        let room_made = was_full && self.out.len() < high;
        // A file body that spent this turn's budget with the socket still writable.
        let body_left = self.writable && matches!(self.phase, Phase::Sending(_));
        if input_waits || room_made || body_left {
            Progress::Again
        } else {
            Progress::Idle
        }
    }

    /// The earliest time at which a timer has something to do.
    fn deadline(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Unknown => Some(self.accepted + self.limits.handshake_timeout),
            Phase::Opening { deadline }
            | Phase::Http { deadline }
            | Phase::Answering { deadline }
            | Phase::HandingOff { deadline }
            | Phase::HandedOff { deadline }
            | Phase::Flushing { deadline }
            | Phase::Lingering { deadline } => Some(*deadline),
            Phase::Connected => match self.ws.as_ref() {
                Some(_) if self.failing().is_some() => self.failing().map(|f| f.2 + self.limits.close_timeout),
                Some(ws) => ws.endpoint.session().deadline(&self.timing()),
                None => None,
            },
            Phase::Sending(_) | Phase::Closed => None,
        };
        let stall = self.stalled_since.map(|t| t + self.limits.write_timeout);
        match (phase, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on every deadline that has passed.
    fn on_timer(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        if self.stalled_since.is_some_and(|t| now >= t + self.limits.write_timeout) {
            return self.close(cx.now, cx.pools, End::Abort("write timeout: peer is not reading".into()));
        }
        let passed = self.deadline().is_some_and(|d| now >= d);
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
                self.set_phase(Phase::Http { deadline: now + cx.limits.handshake_timeout });
                let reply = crate::admin::Reply::error(503, "the workers did not all answer in time");
                self.send_reply(cx, &reply, false, false);
                None
            }
            Phase::HandingOff { .. } if passed => Some(End::Abort("101 not accepted in time for the hand-off".into())),
            Phase::HandedOff { .. } if passed => Some(End::Abort("backend did not take the hand-off in time".into())),
            Phase::Connected => self.ws_timer(now),
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

    fn ws_timer(&mut self, now: Instant) -> Option<End> {
        if let Some(&(code, reason, since)) = self.failing() {
            if now < since + self.limits.close_timeout {
                return None;
            }
            log::debug!("{} backend did not answer CLOSE in time", self.peer());
            return Some(End::Fail { code, reason });
        }
        let timing = self.timing();
        let ws = self.ws.as_mut()?;
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

    /// The server is shutting down: close handshakes start, requests in progress end.
    fn start_drain(&mut self, cx: &mut Ctx<'_>) {
        let end = match &self.phase {
            Phase::Unknown | Phase::Opening { .. } | Phase::Http { .. } => {
                Some(End::Abort("server shutting down".into()))
            }
            Phase::Connected => Some(End::Close { code: close::GOING_AWAY, reason: "server shutting down".into() }),
            _ => None,
        };
        if let Some(end) = end {
            self.close(cx.now, cx.pools, end);
        }
        self.after_io(cx, 0);
    }

    /// Queues a message published by someone else, under the route's backpressure policy.
    /// Nothing more is queued once the connection is closing.
    /// Whether this connection keeps compression context (counted against the route's
    /// `compression_max_dedicated`).
    pub fn keeps_compression_context(&self) -> bool {
        self.pmd().is_some_and(PerMessage::keeps_context)
    }

    /// With permessage-deflate negotiated and a message of `payload_len` bytes worth
    /// compressing: the window and level its compressed form must use.
    pub fn deflate_params(&self, payload_len: usize) -> Option<(u8, i32)> {
        let pmd = self.pmd().filter(|_| self.ws.is_some())?;
        pmd.wants(payload_len).then(|| (pmd.agreed.server_max_window_bits, pmd.level()))
    }

    /// A legacy (hixie) client: what is delivered to it must be its frames
    /// ([`crate::encode::legacy_twin`]).
    pub fn is_legacy(&self) -> bool {
        self.ws.as_ref().and_then(|ws| ws.endpoint.draft()).is_some()
    }

    /// Queues a frame published by someone else (already in this client's framing: RFC 6455,
    /// compressed or not, or legacy), under the route's backpressure policy.
    pub fn deliver(&mut self, now: Instant, pools: &mut Pools, frame: &SharedFrame) -> Delivered {
        let open = matches!(self.phase, Phase::Connected)
            && self.failing().is_none()
            && self.ws.as_ref().is_some_and(|ws| !ws.endpoint.session().is_closing());
        if !open {
            return Delivered::NotOpen;
        }
        if self.out.footprint() + frame.len() > self.limits.max_backpressure {
            return match self.limits.on_backpressure {
                OnBackpressure::Drop => {
                    self.log.note_dropped();
                    Delivered::Dropped
                }
                OnBackpressure::Close => {
                    self.close(now, pools, End::SlowConsumer);
                    Delivered::Closing
                }
            };
        }
        self.out.push_shared_frame(pools, frame);
        self.log.traffic.msgs_out += 1;
        self.log.traffic.bytes_out += frame.len() as u64;
        Delivered::Queued
    }

    /// Gives back every buffer; the connection is about to be dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        self.input.release(pools);
        self.out.release(pools);
        if let Some(ws) = &mut self.ws {
            ws.app.release(pools);
        }
        if let Some(h) = self.handoff_mut() {
            h.backend.release(pools);
        }
        if let Some(rare) = &mut self.rare {
            rare.scratch.release(pools);
        }
    }

    /// The access log line.
    pub fn access_line(&self, now: Instant) -> String {
        self.log.line(self.peer(), self.id, self.accepted, now)
    }

    /// The WebSocket session's timers, from the route's limits.
    fn timing(&self) -> Timing {
        let l = &self.limits;
        // The legacy drafts have no pings: a legacy client is held by idle_timeout alone.
        let legacy = self.is_legacy();
        Timing {
            idle_timeout: l.idle_timeout,
            ping_interval: if legacy { std::time::Duration::ZERO } else { l.ping_interval },
            pong_timeout: l.pong_timeout,
            close_timeout: l.close_timeout,
        }
    }

    /// Bytes wait to go out: queued plaintext or, on TLS, encrypted records.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.transport.wants_write() || matches!(self.phase, Phase::Sending(_))
    }

    // ---- the one close path ----

    /// Ends the connection the way `end` says: a response, a close frame and its handshake,
    /// or at once. Everything that ends a connection comes here.
    pub fn close(&mut self, now: Instant, pools: &mut Pools, end: End) {
        if self.is_closed() {
            return;
        }
        match end {
            End::Refuse { status, reason } => {
                self.log.set_status(status);
                self.out.push_error_response(pools, status, &reason);
                self.log.note_end(reason);
                self.finish(now);
            }
            End::HeadTimeout => {
                self.log.set_status(408);
                self.log.note_end("request head not received within handshake_timeout");
                self.out.push_error_response(pools, 408, "request head not received in time");
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
                let already_sent = self.ws.as_ref().is_some_and(|ws| ws.endpoint.session().is_closing());
                if !already_sent {
                    self.push_close_frame(pools, Some(code), reason);
                }
                if let Some(ws) = &mut self.ws {
                    ws.endpoint.session_mut().close(now);
                }
                self.set_failing(None);
                self.log.set_close(code, reason);
                self.input.discard();
                self.finish(now);
            }
            End::Abort(why) => {
                self.log.note_end(why);
                self.set_phase(Phase::Closed);
            }
            End::Io(e) => {
                if !self.log.has_end() {
                    self.log.set_end(format!("I/O error: {e}"));
                }
                self.set_phase(Phase::Closed);
            }
            End::HandedOff => {
                self.log.set_end("handed off to the backend");
                self.set_phase(Phase::Closed);
            }
            End::HandOffFailed(e) => {
                log::warn!("{}: hand-off to the backend failed: {e}", self.peer());
                self.log.set_end(format!("hand-off failed: {e}"));
                self.set_phase(Phase::Closed);
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
    fn begin_close(&mut self, now: Instant, pools: &mut Pools, code: u16, reason: std::borrow::Cow<'static, str>) {
        if let Some(&(code, reason, _)) = self.failing() {
            return self.close(now, pools, End::Fail { code, reason });
        }
        let Some(ws) = self.ws.as_mut().filter(|_| matches!(self.phase, Phase::Connected)) else {
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
    fn push_close_frame(&mut self, pools: &mut Pools, code: Option<u16>, reason: &str) {
        match &self.ws {
            Some(ws) => ws.endpoint.close_frame(&mut self.out, pools, code, reason),
            None => self.out.push_close(pools, code, reason),
        }
    }

    /// Writes what is queued, then FIN, then waits for the peer's FIN (bounded).
    fn finish(&mut self, now: Instant) {
        self.set_phase(Phase::Flushing { deadline: now + self.limits.close_timeout });
    }

    fn set_phase(&mut self, phase: Phase) {
        log::debug!("{} {} -> {}", self.peer(), self.phase.name(), phase.name());
        self.phase = phase;
    }

    // ---- the app ----

    /// Runs `f` on the app (see [`call_app`]); applies what the app asked for after.
    fn with_app<R>(&mut self, cx: &mut Ctx<'_>, f: impl FnOnce(&mut dyn App, &mut AppCtx<'_>) -> R) -> Option<R> {
        let who = self.who();
        let high = self.limits.backpressure_high;
        let Connection { ws, rare, out, log, .. } = self;
        let ws = ws.as_mut()?;
        let mut close = None;
        let (r, _) = call_app(ws, rare, out, cx, who, high, &mut log.traffic, &mut close, f);
        if let Some(why) = close {
            self.app_closed(cx, why);
        }
        Some(r)
    }

    fn app_closed(&mut self, cx: &mut Ctx<'_>, why: AppClose) {
        let end = match why {
            AppClose::Close(code, reason) => End::Close { code, reason },
            AppClose::Failed(why) => {
                cx.metrics.backend_deaths += 1;
                End::BackendFailed(why)
            }
        };
        self.close(cx.now, cx.pools, end);
    }

    /// The app's own I/O (its backend socket). `Some(bytes read)` when it read and may
    /// read again.
    fn app_io(&mut self, cx: &mut Ctx<'_>) -> Option<usize> {
        if let Phase::HandedOff { .. } = self.phase {
            let who = self.who();
            let h = self.rare.as_mut()?.handoff.as_mut()?;
            let mut close = None;
            let mut traffic = Traffic::default();
            let mut acx = app_ctx(cx, who, &mut self.out, &mut traffic, 0, &mut close, None);
            h.backend.on_io(&mut acx, false);
            if close.is_some() {
                self.close(cx.now, cx.pools, End::HandOffFailed(io::ErrorKind::BrokenPipe.into()));
            } else if !h.backend.has_pending_output() {
                self.close(cx.now, cx.pools, End::HandedOff);
            }
            return None;
        }
        let may_read = matches!(self.phase, Phase::Connected)
            && self.out.len() < self.limits.backpressure_high
            && self.ws.as_ref().is_some_and(|ws| !ws.endpoint.session().is_closing());
        match self.with_app(cx, |app, acx| app.on_io(acx, may_read))? {
            AppIo::Read(n) if !self.is_closed() => Some(n),
            _ => None,
        }
    }

    /// The client broke the protocol (§7.1.7). An app that must hear first (a framed
    /// backend) holds the close frame the client is owed until it answers; otherwise the
    /// client is failed at once.
    fn protocol_error(&mut self, cx: &mut Ctx<'_>, code: u16, reason: &'static str) {
        let hold = self.with_app(cx, |app, acx| app.on_close(acx, Some(code), reason, true));
        if self.is_closed() {
            return;
        }
        let closing = self.ws.as_ref().is_none_or(|ws| ws.endpoint.session().is_closing());
        let may_wait = !closing && self.failing().is_none() && matches!(self.phase, Phase::Connected);
        if hold == Some(Hold::UntilAppCloses) && may_wait {
            self.set_failing(Some((code, reason, cx.now)));
            self.input.discard();
            log::debug!("{} protocol error ({code} {reason}); waiting for the backend's CLOSE", self.peer());
            return;
        }
        self.close(cx.now, cx.pools, End::Fail { code, reason })
    }

    // ---- I/O ----

    fn wants_input(&self) -> bool {
        match &self.phase {
            Phase::Opening { .. } => true,
            Phase::Http { .. } => self.out.len() < self.limits.backpressure_high,
            Phase::Connected => {
                let high = self.limits.backpressure_high;
                self.out.len() < high
                    && self.failing().is_none()
                    && self.ws.as_ref().is_some_and(|ws| ws.app.accepts_input(high))
            }
            Phase::Lingering { .. } => true,
            _ => false,
        }
    }

    fn has_unprocessed_input(&self) -> bool {
        // Bytes left because processing was held back; bytes left because a frame is
        // incomplete wait for a read.
        matches!(self.phase, Phase::Connected) && (self.input.has_held_input() || self.is_inflating())
    }

    fn is_inflating(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| ws.endpoint.is_inflating())
    }

    /// One read; processes what arrived. Returns the bytes read.
    fn read_once(&mut self, cx: &mut Ctx<'_>) -> usize {
        let Connection { input, transport, .. } = self;
        let result = input.fill(cx.pools, |room, pools| transport.read(room, pools));
        match result {
            Ok(Filled { bytes: 0, .. }) => {
                self.readable = false;
                self.on_eof(cx);
                0
            }
            Ok(Filled { bytes: n, short }) => {
                if short && !self.transport.is_tls() {
                    // A short read drained the socket. Edge-triggered epoll reports every later
                    // arrival as a new event, so the read that would only say WouldBlock is
                    // skipped: one syscall fewer per wake-up.
                    self.readable = false;
                }
                if matches!(self.phase, Phase::Lingering { .. }) {
                    // Discard: only the peer's FIN matters now.
                    self.input.discard();
                    return n;
                }
                if matches!(self.phase, Phase::Opening { .. }) && !self.transport.is_handshaking() {
                    // The request can arrive in the same segment as the client's Finished.
                    self.opened(cx);
                }
                self.process_input(cx);
                n
            }
            // Opening: rustls consumed handshake records and produced no plaintext yet.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && matches!(self.phase, Phase::Opening { .. }) => {
                self.readable = false;
                if !self.transport.is_handshaking() {
                    self.opened(cx);
                    // Plaintext may already be buffered inside rustls.
                    self.readable = true;
                }
                0
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<NotTls>()) => {
                self.readable = false;
                self.not_tls(cx, &e);
                0
            }
            Err(e) => {
                self.readable = false;
                self.close(cx.now, cx.pools, End::Io(e));
                0
            }
        }
    }

    /// The TLS handshake is done: HTTP begins.
    fn opened(&mut self, cx: &mut Ctx<'_>) {
        cx.metrics.tls_handshakes += 1;
        self.set_phase(Phase::Http { deadline: cx.now + cx.limits.handshake_timeout });
    }

    /// A client that does not speak TLS on a TLS port. One that spoke plain HTTP gets a plain
    /// HTTP 400 saying so; anything else is dropped.
    fn not_tls(&mut self, cx: &mut Ctx<'_>, e: &io::Error) {
        let plain_http =
            e.get_ref().and_then(|i| i.downcast_ref::<NotTls>()).is_some_and(|n| matches!(n, NotTls::PlainHttp));
        self.log.note_end(e.to_string());
        if !plain_http {
            return self.close(cx.now, cx.pools, End::Abort("not TLS".into()));
        }
        self.transport.fall_back_to_plain();
        self.close(
            cx.now,
            cx.pools,
            End::Refuse { status: 400, reason: "this port speaks TLS: use https:// or wss://".into() },
        );
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) {
        let mut body_budget = BODY_BUDGET;
        while self.has_output() {
            if let Some(due) = self.out.pipe_due() {
                let pipe = self.ws.as_mut().and_then(|ws| ws.app.pipe());
                let Some(pipe) = pipe else {
                    return self.close(cx.now, cx.pools, End::Abort("spliced data without a pipe".into()));
                };
                match pipe.drain_to(&self.transport.fd(), due) {
                    Ok(0) => return self.close(cx.now, cx.pools, End::Abort("peer stopped accepting data".into())),
                    Ok(n) => {
                        self.out.consume_piped(n);
                        self.stalled_since = Some(cx.now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.writable = false;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.close(cx.now, cx.pools, End::Io(e)),
                }
                continue;
            }
            let result = if self.out.is_empty() && !self.transport.wants_write() {
                // Only a file body is left: sendfile, or one chunk through TLS.
                match self.send_body(cx, &mut body_budget) {
                    Some(result) => result,
                    None => return,
                }
            } else if self.out.is_empty() {
                // Only TLS records (handshake, alert, close_notify) are left.
                self.transport.flush_records().map(|()| 1)
            } else {
                self.transport.write_from(&mut self.out, cx.pools)
            };
            match result {
                Ok(0) => return self.close(cx.now, cx.pools, End::Abort("peer stopped accepting data".into())),
                Ok(_) => self.stalled_since = Some(cx.now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close(cx.now, cx.pools, End::Io(e)),
            }
        }
    }

    /// The next piece of a static file's body: `None` when the budget is spent (or nothing
    /// is being sent), else what the write gave. The body done, the connection goes on to
    /// the next request (which may be buffered already) or ends.
    fn send_body(&mut self, cx: &mut Ctx<'_>, budget: &mut usize) -> Option<io::Result<usize>> {
        let Phase::Sending(sending) = &mut self.phase else { return None };
        if sending.body.remaining() == 0 {
            let keep_alive = sending.keep_alive;
            if keep_alive {
                self.set_phase(Phase::Http { deadline: cx.now + cx.limits.handshake_timeout });
                if self.input.has_pending() {
                    self.process_input(cx);
                }
            } else {
                self.close(cx.now, cx.pools, End::Answered);
            }
            return Some(Ok(1));
        }
        if *budget == 0 {
            return None;
        }
        let result = if self.transport.is_tls() {
            // One chunk at a time, only once the last is out: a client that stops reading
            // holds one chunk (and its records), never the file.
            let mut chunk = cx.pools.take_read();
            let read = sending.body.read_chunk(&mut chunk[..TLS_CHUNK]);
            if let Ok(n) = read {
                self.out.push_bytes(cx.pools, &chunk[..n]);
            }
            cx.pools.put_read(chunk);
            read
        } else {
            sending.body.sendfile(self.transport.fd())
        };
        if let Ok(n) = result {
            *budget = budget.saturating_sub(n);
            self.log.traffic.bytes_out += n as u64;
        }
        Some(result)
    }

    /// Bookkeeping after any activity: buffers back to the pool when idle, the hand-off, the
    /// end of `Flushing`, the stall clock.
    /// `read`: bytes read in this wake-up (a busy reader keeps its read buffer for the next).
    fn after_io(&mut self, cx: &mut Ctx<'_>, read: usize) {
        if let (Phase::HandingOff { .. }, true) = (&self.phase, self.out.is_empty()) {
            self.hand_off(cx);
        }
        let mid_message = self.ws.as_ref().is_some_and(|ws| !ws.endpoint.is_between_messages());
        self.input.settle(cx.pools, read, mid_message);
        if let (Phase::Flushing { .. }, true) = (&self.phase, self.out.is_empty()) {
            // Our last message is out: TLS close_notify, then FIN, then wait for the peer's.
            self.transport.send_close_notify();
            if self.writable {
                let _ = self.transport.flush_records();
            }
            if !self.transport.wants_write() {
                match self.transport.shutdown_write() {
                    Ok(()) => self.set_phase(Phase::Lingering { deadline: cx.now + self.limits.close_timeout }),
                    Err(e) => self.close(cx.now, cx.pools, End::Io(e)),
                }
            }
        }
        if !self.has_output() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(cx.now);
        }
        if matches!(self.phase, Phase::Connected) && self.out.len() > self.limits.max_queued {
            self.log.set_end("output queue over max_queued");
            self.close(cx.now, cx.pools, End::Fail { code: close::POLICY_VIOLATION, reason: "too much queued output" });
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        let why: &'static str = match &self.phase {
            Phase::Lingering { .. } => {
                self.set_phase(Phase::Closed);
                return;
            }
            Phase::Http { .. } if !self.input.has_pending() && self.log.responses() > 0 => {
                let why = format!("{}; client closed while idle", self.log.served());
                return self.close(cx.now, cx.pools, End::Abort(why.into()));
            }
            Phase::Http { .. } if !self.input.has_pending() => "client closed without sending a request",
            Phase::Http { .. } => "client closed mid-request",
            Phase::Connected if self.ws.as_ref().is_some_and(|ws| ws.endpoint.session().is_closing()) => {
                "peer closed without answering close"
            }
            Phase::Connected => "peer closed without a close frame (1006)",
            _ => "peer closed",
        };
        self.close(cx.now, cx.pools, End::Abort(why.into()));
    }

    /// Direct mode, once the 101 is out: the socket (with the HELLO and any bytes read past
    /// the request) goes to the backend, and this connection ends without touching it.
    fn hand_off(&mut self, cx: &mut Ctx<'_>) {
        let Some(mut h) = self.rare.as_mut().and_then(|r| r.handoff.take()) else {
            return self.close(cx.now, cx.pools, End::Abort("nothing to hand off".into()));
        };
        h.hello.extend_from_slice(self.input.pending());
        self.input.discard();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.transport.fd());
        let hello = std::mem::take(&mut h.hello);
        match h.backend.hand_off(cx.pools, fd, &hello) {
            Ok(HandOff::Done) => {
                self.rare.get_or_insert_with(Box::default).handoff = Some(h);
                self.close(cx.now, cx.pools, End::HandedOff)
            }
            Ok(HandOff::Pending) => {
                // The rest of the HELLO goes when the backend reads; the client's socket is
                // the backend's now and is not read or written again.
                let deadline = cx.now + self.limits.write_timeout;
                let fd = h.backend.link_fd();
                cx.actions.push(Action::Register { fd, interest: mio::Interest::WRITABLE });
                self.rare.get_or_insert_with(Box::default).handoff = Some(h);
                self.set_phase(Phase::HandedOff { deadline });
            }
            Err(e) => {
                self.rare.get_or_insert_with(Box::default).handoff = Some(h);
                self.close(cx.now, cx.pools, End::HandOffFailed(e))
            }
        }
    }

    // ---- input ----

    fn process_input(&mut self, cx: &mut Ctx<'_>) {
        let Some(mut bytes) = self.input.detach() else {
            // A large compressed message goes on inflating with no new bytes.
            if matches!(self.phase, Phase::Connected) && self.is_inflating() {
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
                Phase::Connected => {
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
    fn process_frames(&mut self, buf: &mut [u8], cx: &mut Ctx<'_>) {
        /// Why the loop over frames stopped.
        enum Stop {
            /// Backpressure, the app, the fan-out or inflating budget: bytes may wait.
            Held,
            /// An incomplete frame (or nothing): a read brings the rest.
            NeedMore,
            Failed(WsError),
            /// The peer began closing: answer, tell the app, end.
            CloseBegun(Option<u16>, String),
            Ended(End),
            App(AppClose),
        }
        let high = self.limits.backpressure_high;
        let who = self.who();
        let failing = self.failing().is_some();
        let Connection { ws, rare, out, log, input, .. } = self;
        let Some(ws) = ws.as_mut() else { return };
        if failing || !ws.app.accepts_input(high) {
            input.set_held(true);
            return;
        }
        let mut app_close = None;
        let mut dropped = 0;
        let stop = {
            let parts = AppParts::of(ws, rare, out);
            let AppParts { queue, mut wire_out, pmd } = parts;
            let mut acx = app_ctx(cx, who, queue, &mut log.traffic, high, &mut app_close, pmd);
            loop {
                let queued = wire_out.as_deref().map_or(acx.out.len(), OutQueue::len);
                if queued >= high || *acx.fanout >= FANOUT_BUDGET {
                    break Stop::Held;
                }
                // Inflating shares the drive's work budget with fan-out.
                let budget = INFLATE_BUDGET.saturating_sub(acx.fanout.saturating_mul(INFLATE_UNIT)).max(CHUNK);
                let Ws { endpoint, app } = &mut *ws;
                let pending = input.pending_in_mut(buf);
                let received = match endpoint.receive(pending, acx.now, budget, acx.codecs, acx.pmd.as_deref_mut()) {
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
                    Event::Message(kind, payload) => {
                        acx.traffic.msgs_in += 1;
                        acx.traffic.bytes_in += payload.len() as u64;
                        app.on_message(&mut acx, kind, payload);
                        if let Some(wire_out) = wire_out.as_deref_mut() {
                            dropped += reencode(endpoint, &mut acx, wire_out);
                        }
                        if acx.close.is_some() {
                            break Stop::Held;
                        }
                        if acx.hold {
                            break Stop::Held;
                        }
                    }
                    // Pongs ride the urgent lane of the client's own queue.
                    Event::Ping(payload) => {
                        wire_out.as_deref_mut().unwrap_or(acx.out).push_control(Opcode::Pong, payload)
                    }
                    Event::Pong => {}
                    Event::CloseBegun { code, reason } => {
                        break Stop::CloseBegun(code, reason.chars().take(123).collect())
                    }
                    Event::CloseAnswered(code) => break Stop::Ended(End::Closed { code, reason: String::new() }),
                    Event::Yield => break Stop::Held,
                }
            }
        };
        cx.metrics.legacy_dropped += dropped as u64;
        let stop = match (stop, app_close) {
            (Stop::Held, Some(why)) => Stop::App(why),
            (stop, _) => stop,
        };
        // After the app closes, what follows (the peer's answer, perhaps) is read on.
        self.input.set_held(matches!(stop, Stop::Held | Stop::App(_)));
        match stop {
            Stop::Held | Stop::NeedMore => {}
            Stop::Failed(e) => self.protocol_error(cx, e.close_code(), e.reason()),
            Stop::CloseBegun(code, reason) => {
                // §5.5.1: answer, echoing the code (an empty close gets an empty one).
                if let Some(ws) = &self.ws {
                    ws.endpoint.close_reply(&mut self.out, cx.pools, code);
                }
                self.with_app(cx, |app, acx| app.on_close(acx, code, &reason, false));
                self.close(cx.now, cx.pools, End::Closed { code, reason });
            }
            Stop::Ended(end) => self.close(cx.now, cx.pools, end),
            Stop::App(why) => self.app_closed(cx, why),
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
fn call_app<R>(
    ws: &mut Ws,
    rare: &mut Option<Box<Rare>>,
    out: &mut OutQueue,
    cx: &mut Ctx<'_>,
    who: (u64, usize, SocketAddr),
    high: usize,
    traffic: &mut Traffic,
    close: &mut Option<AppClose>,
    f: impl FnOnce(&mut dyn App, &mut AppCtx<'_>) -> R,
) -> (R, bool) {
    let AppParts { queue, wire_out, pmd } = AppParts::of(ws, rare, out);
    let mut dropped = 0;
    let (r, hold) = {
        let mut acx = app_ctx(cx, who, queue, traffic, high, close, pmd);
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
fn reencode(endpoint: &mut Endpoint, acx: &mut AppCtx<'_>, wire_out: &mut OutQueue) -> usize {
    if acx.out.is_empty() {
        return 0;
    }
    let frames = acx.out.to_vec();
    acx.out.release(acx.pools);
    endpoint.encode_queued(&frames, wire_out, acx.pools, acx.codecs, acx.pmd.as_deref_mut())
}

impl OutQueue {
    /// Queues a plain-text error response that closes the connection.
    fn push_error_response(&mut self, pools: &mut Pools, status: u16, reason: &str) {
        let mut bytes = Vec::with_capacity(160 + reason.len());
        Response::error(status, reason).write(&mut bytes);
        self.push_bytes(pools, &bytes);
    }
}

/// The context an app gets for one call: the connection's id, key and peer, its output queue
/// and counters, and the loop's shares (pools, topics, actions, the fan-out count).
fn app_ctx<'b>(
    cx: &'b mut Ctx<'_>,
    (id, key, peer): (u64, usize, SocketAddr),
    out: &'b mut OutQueue,
    traffic: &'b mut Traffic,
    backpressure_high: usize,
    close: &'b mut Option<AppClose>,
    pmd: Option<&'b mut PerMessage>,
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
    }
}

/// Answers a connection refused before it enters the slab (the server is at
/// `max_connections`): the same response [`End::Refuse`] queues, written once, best effort
/// (a fresh socket's send buffer takes it at once or not at all).
pub fn refuse_unadmitted(stream: &mut impl io::Write, status: u16, reason: &str) {
    let mut bytes = Vec::with_capacity(160);
    Response::error(status, reason).write(&mut bytes);
    let _ = stream.write(&bytes);
}
#[cfg(test)]
mod size_tests {
    /// Every open connection carries this struct (plus the loop's bookkeeping): 584 bytes
    /// before step 6, whose idle-memory target is 512 bytes per connection in all.
    #[test]
    fn an_open_connection_stays_small() {
        let size = std::mem::size_of::<super::Connection>();
        eprintln!("size_of::<Connection>() = {size}");
        // In debug builds mio keeps a selector id in every socket (8 bytes more), which moves
        // the transport's tag out of the descriptor's niche; release builds have neither.
        let debug_mio = std::mem::size_of::<mio::net::TcpStream>() - std::mem::size_of::<std::net::TcpStream>();
        assert!(size <= 432 + debug_mio, "Connection grew to {size} bytes");
    }
}
