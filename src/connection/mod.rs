//! One client connection: its transport, buffers, phase and readiness.
//!
//! Phases: `Unknown` (accepted) → `Opening` (TLS) → `Http` (reading request heads, and
//! `Sending` a static file's body) → `Connected` (a [`ws::endpoint::Endpoint`](Endpoint) and
//! an [`App`]) → `Flushing` (last bytes out, then FIN) →
//! `Lingering` (waiting for the peer's FIN) → `Closed`; direct hand-off goes `HandingOff` →
//! `HandedOff`. Every phase has a deadline, and holds what only it needs: `Connected` the
//! WebSocket (endpoint and app, which the phases after it inherit until the connection
//! departs), the hand-off phases the backend and the HELLO, `Sending` the open file.
//! `Connection::set_phase` moves between them by taking the old phase out.
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
//! per connection per turn, at its end ([`Ready::corked`]), except that a connection nobody
//! else wrote to writes its own output as its drive ends ([`Ready::write_after`]): an echo
//! is one drive per event, not two.

mod admission;
mod closing;
mod delivery;
mod end;
mod frames;
mod http;
mod plugin;
mod proxy;
mod read_buf;
mod socket;
mod timers;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub use delivery::{Delivered, FrameForm, Sender};
pub use end::{AccessLog, End, SLOW_CONSUMER_CODE};
use read_buf::ReadBuf;

use crate::admin::config::AdminConfig;
use crate::admin::Reply;
use crate::apps::backend::Backend;
use crate::apps::{Action, App, Traffic};
use crate::backend::FailureLog;
use crate::broker::Broker;
use crate::buffer::{OutQueue, Pools};
use crate::conn_id::key_of;
use crate::http::response::Response;
use crate::http::static_files::FileBody;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::stamp::{LongStamp, Stamp};
use crate::transport::Transport;
use crate::ws::deflate::{PerMessage, SharedCodecs};
use crate::ws::endpoint::Endpoint;

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
    /// `now` as a [`Stamp`], converted once for the call (every message and write stamps it).
    pub stamp: Stamp,
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
    /// The worker's plugin threads (none where there are no workers: the fuzz targets).
    pub plugins: Option<&'a mut crate::plugin::Hosts>,
    /// Where the connection's app records what the loop must do.
    pub actions: &'a mut Vec<Action>,
    /// The worker's compressors and decompressor for connections without context takeover.
    pub codecs: &'a mut SharedCodecs,
    /// Deliveries the connection's publishes caused during this call: past `FANOUT_BUDGET`
    /// it stops reading until the next turn, so one publisher flooding a big room cannot
    /// hold the loop.
    pub fanout: usize,
    /// What this worker publishes is heard beyond it (other workers, other nodes): a
    /// topic's members here may not be all of them.
    pub publish_spreads: bool,
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
    /// Corked, but nothing else has queued output for it this turn: unless the drive
    /// published to others (who may publish back before the turn ends), write what it queued
    /// before returning. An echo then costs one drive, not a corked one and an uncorked one.
    pub write_after: bool,
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
    pub deadline: Option<Stamp>,
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

/// What the loop counts and logs when a connection goes ([`Connection::depart`]).
#[derive(Debug)]
pub struct Departure {
    pub access_line: String,
    pub close_sent: Option<u16>,
    pub close_received: Option<u16>,
    /// A TLS client that never finished its handshake.
    pub tls_failed: bool,
    pub route: Option<usize>,
    pub traffic: Traffic,
}

/// An HTTP response a connection queued ([`Connection::take_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// On a WebSocket listener: a refused handshake, a static file, the demo page...
    Handshake(u16),
    /// On the admin listener.
    Admin(u16),
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
    /// A protocol error on a route whose app must hear first (framed backend): the close frame
    /// the client is owed, and since when it waits (bounded by `close_timeout`).
    failing: Option<(u16, &'static str, Instant)>,
    /// permessage-deflate, when negotiated: lent to the endpoint to inflate and to the app's
    /// context to compress.
    pmd: Option<PerMessage>,
    /// What the app queues during one call when it must be re-encoded after it
    /// ([`Ws::recodes`]).
    scratch: OutQueue,
    /// `auth = "proxy"`: the upgrade the application is deciding on.
    asking: Option<Box<proxy::Asking>>,
}

enum Phase {
    /// Accepted; the first drive moves it on.
    Unknown,
    /// The TLS handshake (TLS listeners only).
    Opening {
        deadline: Stamp,
    },
    /// Reading request heads (one, or several with keep-alive).
    Http {
        deadline: Stamp,
    },
    /// Admin listener: a request is with the loop, which answers it ([`Connection::answer`])
    /// right after this drive, or once every worker concerned has given its part; nothing
    /// more is read until then. Past the deadline the client gets a 503.
    Answering {
        deadline: Stamp,
    },
    /// A plugin route's `on_connect` is deciding, on the plugin's thread; its answer comes
    /// through the loop ([`Connection::plugin_answered`]). Nothing more is read until then.
    /// Past the deadline the client gets a 503.
    Consulting {
        deadline: Stamp,
        opening: Box<PluginOpening>,
    },
    /// `auth = "proxy"`: the application is deciding on the upgrade, whose request waits
    /// in the input; its answer comes through the loop ([`Connection::proxy_answered`]).
    /// Nothing more is read until then. Past the deadline the client gets a 503.
    Asking {
        deadline: Stamp,
    },
    /// A static file's body is being sent (after its head); then the next request, or the
    /// end. No deadline of its own: `write_timeout` ends a client that stops reading.
    Sending(Box<SendingFile>),
    /// Frames flow: the protocol endpoint and the app.
    Connected(Ws),
    /// Direct mode: the 101 is being written; then the socket goes to the backend.
    HandingOff {
        deadline: Stamp,
        handoff: Box<HandOffState>,
    },
    /// Direct mode: the socket went; the rest of the HELLO is being written to the backend.
    HandedOff {
        deadline: Stamp,
        handoff: Box<HandOffState>,
    },
    /// The last bytes (an error response, a close frame) are being written; then FIN.
    /// `ws`: the WebSocket's, kept so the app can finish its own writes (a splice).
    Flushing {
        deadline: Stamp,
        ws: Option<Ws>,
    },
    /// FIN sent; reading and discarding until the peer's FIN, so our last bytes are not
    /// destroyed by a reset. `ws` (and in `Closed`) waits for [`Connection::depart`] to give
    /// the app's buffers back.
    Lingering {
        deadline: Stamp,
        ws: Option<Ws>,
    },
    Closed(Option<Ws>),
}

impl Phase {
    /// The phases after `Connected`, built empty: [`Connection::set_phase`] moves the open
    /// WebSocket (if any) from the phase it leaves into them.
    fn flushing(deadline: Instant) -> Phase {
        Phase::Flushing { deadline: Stamp::at(deadline), ws: None }
    }

    fn lingering(deadline: Instant) -> Phase {
        Phase::Lingering { deadline: Stamp::at(deadline), ws: None }
    }

    fn closed() -> Phase {
        Phase::Closed(None)
    }

    /// The WebSocket, from the upgrade on.
    fn ws(&self) -> Option<&Ws> {
        match self {
            Phase::Connected(ws) => Some(ws),
            Phase::Flushing { ws, .. } | Phase::Lingering { ws, .. } | Phase::Closed(ws) => ws.as_ref(),
            _ => None,
        }
    }

    fn ws_mut(&mut self) -> Option<&mut Ws> {
        match self {
            Phase::Connected(ws) => Some(ws),
            Phase::Flushing { ws, .. } | Phase::Lingering { ws, .. } | Phase::Closed(ws) => ws.as_mut(),
            _ => None,
        }
    }

    /// Where a phase after `Connected` keeps the WebSocket it inherits.
    fn inherited_ws(&mut self) -> Option<&mut Option<Ws>> {
        match self {
            Phase::Flushing { ws, .. } | Phase::Lingering { ws, .. } | Phase::Closed(ws) => Some(ws),
            _ => None,
        }
    }

    fn into_ws(self) -> Option<Ws> {
        match self {
            Phase::Connected(ws) => Some(ws),
            Phase::Flushing { ws, .. } | Phase::Lingering { ws, .. } | Phase::Closed(ws) => ws,
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Phase::Unknown => "unknown",
            Phase::Opening { .. } => "opening",
            Phase::Http { .. } => "handshaking",
            Phase::Answering { .. } | Phase::Consulting { .. } | Phase::Asking { .. } => "handshaking",
            Phase::Sending(_) => "sending",
            Phase::Connected(_) => "connected",
            Phase::HandingOff { .. } => "handing-off",
            Phase::HandedOff { .. } => "handed-off",
            Phase::Flushing { .. } => "flushing",
            Phase::Lingering { .. } => "lingering",
            Phase::Closed(_) => "closed",
        }
    }
}

/// A static file being sent: what is left of it, and whether the connection then goes on.
#[derive(Debug)]
struct SendingFile {
    body: FileBody,
    keep_alive: bool,
}

/// A plugin route's upgrade while its plugin decides: what the 101 will need.
struct PluginOpening {
    attachment: crate::plugin::Attachment,
    accept: [u8; 28],
    deflate: Option<crate::ws::extensions::Agreed>,
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
    accepted: LongStamp,
    phase: Phase,
    rare: Option<Box<Rare>>,
    input: ReadBuf,
    out: OutQueue,
    readable: bool,
    writable: bool,
    /// The open WebSocket's app has a socket of its own ([`App::has_own_io`], fixed for the
    /// app's life): set with the phase, so the drive reads a field, not the app, each read.
    app_own_io: bool,
    /// Since when queued output has made no progress.
    stalled_since: Option<Stamp>,
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
            accepted: LongStamp::at(now),
            phase: Phase::Unknown,
            rare: None,
            input: ReadBuf::default(),
            out: OutQueue::default(),
            readable: false,
            writable: false,
            app_own_io: false,
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
    fn who(&self) -> (u64, usize, (IpAddr, u16)) {
        (self.id, key_of(self.id), (self.peer_ip, self.peer_port))
    }

    /// The connection's stable id (access line, HELLO, send-by-id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The index of the route serving it, once known.
    pub fn route(&self) -> Option<usize> {
        (self.log.route != NO_ROUTE).then_some(usize::from(self.log.route))
    }

    /// When it was accepted (read against `now`).
    pub fn accepted(&self, now: Instant) -> Instant {
        self.accepted.instant(now)
    }

    /// The phase's name (for the metrics and the API).
    pub fn state(&self) -> &'static str {
        self.phase.name()
    }

    /// An open WebSocket (not closing).
    pub fn is_open(&self) -> bool {
        matches!(&self.phase, Phase::Connected(ws) if !ws.endpoint.session().is_closing())
    }

    pub fn traffic(&self) -> &Traffic {
        &self.log.traffic
    }

    /// The broker token its app holds.
    pub fn token(&self) -> Option<&str> {
        self.phase.ws().and_then(|ws| ws.app.token())
    }

    /// The user a verified token named (`auth = "jwt"` routes).
    pub fn user(&self) -> Option<&str> {
        self.phase.ws().and_then(|ws| ws.app.user())
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
            self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
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

    /// The client's socket, for the poller (`None` for an in-memory transport).
    pub fn source_mut(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.transport.source_mut()
    }

    /// The in-memory stream under it, if it has one (the connection fuzz target, tests).
    pub fn memory_mut(&mut self) -> Option<&mut crate::transport::memory::MemoryStream> {
        self.transport.memory_mut()
    }

    /// What it holds in its buffers: queued output bytes and unconsumed input bytes.
    pub fn buffered(&self) -> (usize, usize) {
        (self.out.len(), self.input.pending().len())
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
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
        let deadline = if progress == Progress::Closed { None } else { self.due() };
        Turn { progress, deadline }
    }

    fn run(&mut self, cx: &mut Ctx<'_>, ready: Ready) -> Progress {
        self.readable |= ready.readable;
        self.writable |= ready.writable;
        if ready.app_readable || ready.app_writable {
            if let Some(ws) = self.phase.ws_mut() {
                ws.app.on_ready(ready.app_readable, ready.app_writable);
            }
            if let Phase::HandingOff { handoff, .. } | Phase::HandedOff { handoff, .. } = &mut self.phase {
                handoff.backend.on_ready(ready.app_readable, ready.app_writable);
            }
        }
        if let Phase::Unknown = self.phase {
            let next = if self.transport.is_tls() {
                Phase::Opening { deadline: Stamp::at(self.accepted(cx.now) + cx.limits.tls_handshake_timeout) }
            } else {
                Phase::Http { deadline: Stamp::at(self.accepted(cx.now) + cx.limits.handshake_timeout) }
            };
            self.set_phase(next);
        }
        if !ready.corked {
            return self.write_turn(cx);
        }
        let mut budget = READ_BUDGET;
        if ready.readable && self.reads_in_one_pass(cx) {
            match self.one_pass(cx, ready) {
                Ok(progress) => return progress,
                // The read left more than one pass does: the general loop goes on from there.
                Err(read) => budget -= read,
            }
        }
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
            // A read that drained the socket, with nothing held back and no socket of the
            // app's own, leaves another round nothing to do (the common wake-up: one read).
            if !self.readable && !self.has_unprocessed_input() && !self.has_own_io() {
                break;
            }
        }
        self.end_of_reads(cx, ready, READ_BUDGET - budget)
    }

    /// The end of a corked drive's reads: its output written if it may go now, and the
    /// bookkeeping. `read`: the bytes read.
    fn end_of_reads(&mut self, cx: &mut Ctx<'_>, ready: Ready, read: usize) -> Progress {
        if self.is_closed() {
            return Progress::Closed;
        }
        // Nobody else queued for it, and nothing it asked of the loop queues more for it (its
        // own copy of what it published is queued already): its output goes now, and one
        // round of bookkeeping covers the read and the write.
        let write_now = ready.write_after
            && self.writable
            && self.has_output()
            && !cx.actions.iter().any(|action| action.may_reach(key_of(self.id)));
        let was_full = self.out.len() >= self.limits.backpressure_high;
        if write_now {
            self.flush(cx);
        }
        self.after_io(cx, read);
        self.progress_after(write_now, was_full)
    }

    /// The connection is being removed: every buffer goes back, and the loop gets what it
    /// must count and log. `codecs`: the worker's, whose count of connections holding
    /// compression contexts of their own this one leaves.
    /// `routes`: the worker's (the access line names the route's path).
    pub fn depart(&mut self, now: Instant, pools: &mut Pools, codecs: &mut SharedCodecs, routes: &Routes) -> Departure {
        if self.pmd().is_some_and(PerMessage::keeps_context) {
            codecs.dedicated = codecs.dedicated.saturating_sub(1);
        }
        self.input.release(pools);
        self.out.release(pools);
        if let Some(ws) = self.phase.ws_mut() {
            ws.app.release(pools);
        }
        if let Some(rare) = &mut self.rare {
            rare.scratch.release(pools);
        }
        let (close_sent, close_received) = self.log.close_codes();
        Departure {
            access_line: self.log.line(
                self.peer(),
                self.id,
                self.accepted(now),
                now,
                self.route().map(|id| &*routes.get(id).path),
                self.user(),
            ),
            close_sent,
            close_received,
            tls_failed: self.transport.tls_failed(),
            route: self.route(),
            traffic: self.log.traffic,
        }
    }

    /// The status of an HTTP response queued since the last call (each is counted once).
    pub fn take_response(&mut self) -> Option<Answered> {
        let status = self.log.take_fresh_status()?;
        Some(if self.log.is_admin() { Answered::Admin(status) } else { Answered::Handshake(status) })
    }

    /// Shown in `/api/clients` (an admin request in progress is not a client).
    pub fn is_listed(&self) -> bool {
        !(self.log.is_admin() && self.route().is_none() && !self.is_open())
    }

    /// Bytes wait to go out: queued plaintext or, on TLS, encrypted records.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.transport.wants_write() || matches!(self.phase, Phase::Sending(_))
    }

    /// Moves to `next`, taking the old phase out: what the new one inherits (the open
    /// WebSocket, into the phases after `Connected`) moves with it, the rest is dropped.
    fn set_phase(&mut self, mut next: Phase) {
        log::debug!("{} {} -> {}", self.peer(), self.phase.name(), next.name());
        let old = std::mem::replace(&mut self.phase, Phase::Unknown);
        if let Some(slot) = next.inherited_ws().filter(|slot| slot.is_none()) {
            *slot = old.into_ws();
        }
        self.phase = next;
        self.app_own_io = self.phase.ws().is_some_and(|ws| ws.app.has_own_io());
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
    use super::*;
    use std::mem::size_of;

    /// What every open connection carries, part by part (`cargo test sizes -- --nocapture`).
    #[test]
    fn sizes_of_every_part() {
        let parts = [
            ("Connection", size_of::<super::Connection>()),
            ("  Transport", size_of::<crate::transport::Transport>()),
            ("  Phase", size_of::<super::Phase>()),
            ("    Ws (Connected)", size_of::<super::Ws>()),
            ("      Endpoint", size_of::<Endpoint>()),
            ("        Session", size_of::<crate::ws::session::Session>()),
            ("          Decoder", size_of::<crate::ws::message::Decoder>()),
            ("      Box<dyn App>", size_of::<Box<dyn App>>()),
            ("  ReadBuf", size_of::<super::ReadBuf>()),
            ("  OutQueue", size_of::<OutQueue>()),
            ("  AccessLog", size_of::<AccessLog>()),
            ("    Traffic", size_of::<Traffic>()),
            ("  Arc<Limits>", size_of::<Arc<Limits>>()),
            ("  peer (IpAddr + port)", size_of::<IpAddr>() + 2),
        ];
        for (name, size) in parts {
            eprintln!("{name:<28} {size:>4}");
        }
    }

    /// Every open connection carries this struct (plus the loop's 8 bytes and a timer entry):
    /// 584 bytes before step 6, 432 after step 11, 232 after step 12 (whose target is 256
    /// bytes of RSS per idle connection in all).
    #[test]
    fn an_open_connection_stays_small() {
        let size = size_of::<super::Connection>();
        eprintln!("size_of::<Connection>() = {size}");
        // In debug builds mio keeps a selector id in every socket (8 bytes more), which moves
        // the transport's tag out of the descriptor's niche; release builds have neither.
        let debug_mio = size_of::<mio::net::TcpStream>() - size_of::<std::net::TcpStream>();
        assert!(size <= 232 + debug_mio, "Connection grew to {size} bytes");
    }
}
