//! One client connection: its state machine, buffers and readiness.
//!
//! States: `Unknown` (accepted) → `Opening` (TLS; not on plain listeners yet) → `Handshaking`
//! (reading the request head) → `Connected` (frames flow) → `Flushing` (last bytes out, then
//! FIN) → `Lingering` (waiting for the peer's FIN) → `Closed`. Every state has a deadline
//! ([`Connection::deadline`]); the loop calls [`Connection::on_timer`] when it passes.
//!
//! The connection never touches the poller, the slab or other connections: the loop sets the
//! readiness it observed, calls [`Connection::drive`], and does what the result says. Time is
//! passed in (`Ctx::now`), so everything here runs the same in tests.
//!
//! Readiness is edge-triggered and tracked here: `readable` / `writable` stay set until an
//! operation returns `WouldBlock`. Backpressure is "do not read while too much output is
//! queued", which needs no re-registration.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use crate::transport::{NotTls, Transport};

use crate::backend::link::{BackendEnd, BackendLink, Pumped};
use crate::backend::splice::{readable_bytes, Pipe, SPLICE_MIN};
use crate::backend::{self, framed, Framing};
use crate::buffer::{OutQueue, Pools};
use crate::config::{App, Limits};
use crate::http::request::{parse_request, HeadLimits, Request, MAX_HEADERS};
use crate::http::response::Response;
use crate::route::Routes;
use crate::ws::close::{self, encode_close_payload, CloseFrame};
use crate::ws::frame::Opcode;
use crate::ws::handshake;
use crate::ws::message::{Decoder, Event};

/// Bytes one connection may read per wake-up before the loop serves others.
const READ_BUDGET: usize = 512 * 1024;

/// What the loop shares with a connection for one call.
pub struct Ctx<'a> {
    pub now: Instant,
    pub routes: &'a Routes,
    /// Server-wide limits (those that apply before a route is known).
    pub limits: &'a Limits,
    pub pools: &'a mut Pools,
    pub backend_failures: &'a mut backend::FailureLog,
}

/// The WebSocket session of a `Connected` connection.
#[derive(Debug)]
struct Session {
    app: App,
    decoder: Decoder,
    /// Last data message from the peer (idle timeout).
    last_message: Instant,
    /// Last frame of any kind from the peer (ping schedule).
    last_read: Instant,
    ping_sent: Option<Instant>,
    /// Set once our close frame is queued; then only the peer's close frame matters.
    close_sent: Option<Instant>,
    /// The client broke the protocol on a framed backend route: the close frame it is owed
    /// (code, reason) waits until the backend has answered the CLOSE record, so the replies to
    /// the client's earlier, valid messages reach it first. Since when, for the deadline.
    failing: Option<(u16, &'static str, Instant)>,
}

#[derive(Debug)]
enum State {
    /// Accepted; the first readiness event moves it on.
    Unknown,
    /// The TLS handshake (TLS listeners only).
    Opening {
        deadline: Instant,
    },
    Handshaking {
        deadline: Instant,
    },
    Connected(Box<Session>),
    /// Direct mode: the 101 is being written; then the socket goes to the backend.
    HandingOff {
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

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Opening { .. } => "opening",
            State::Handshaking { .. } => "handshaking",
            State::Connected(_) => "connected",
            State::HandingOff { .. } => "handing-off",
            State::Flushing { .. } => "flushing",
            State::Lingering { .. } => "lingering",
            State::Closed => "closed",
        }
    }
}

/// Counters for the access log line.
#[derive(Debug, Default)]
struct AccessLog {
    path: Option<Box<str>>,
    status: Option<u16>,
    msgs_in: u64,
    bytes_in: u64,
    msgs_out: u64,
    bytes_out: u64,
    /// Close code (sent or received) and reason.
    close: Option<(u16, Cow<'static, str>)>,
    /// Why the connection ended, when it did not end with a close handshake.
    end: Option<Cow<'static, str>>,
}

pub struct Connection {
    pub token: Token,
    transport: Transport,
    peer: SocketAddr,
    accepted: Instant,
    state: State,
    rbuf: Option<Box<[u8]>>,
    /// Unconsumed bytes are `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    out: OutQueue,
    readable: bool,
    writable: bool,
    /// Since when queued output has made no progress.
    stalled_since: Option<Instant>,
    /// Limits in force: the server's until a route is chosen, then the route's.
    limits: Limits,
    /// When the loop's timer entry for this connection fires (see `server.rs`).
    pub timer_at: Option<Instant>,
    log: AccessLog,
    /// The backend connection of a backend route.
    backend: Option<Box<BackendLink>>,
    /// The backend has ended (EOF, CLOSE record, failure): it is no longer read or written.
    backend_done: bool,
    /// Direct mode: the HELLO (and bytes read past the request) to send with the socket.
    handoff: Option<Vec<u8>>,
    /// Raw binary backend on plain TCP: bulk payload may go backend → pipe → client.
    splice_allowed: bool,
    pipe: Option<Pipe>,
}

impl Connection {
    pub fn new(token: Token, transport: Transport, peer: SocketAddr, now: Instant, limits: Limits) -> Connection {
        Connection {
            token,
            transport,
            peer,
            accepted: now,
            state: State::Unknown,
            rbuf: None,
            rstart: 0,
            rend: 0,
            out: OutQueue::default(),
            readable: false,
            writable: false,
            stalled_since: None,
            limits,
            timer_at: None,
            log: AccessLog::default(),
            backend: None,
            backend_done: false,
            handoff: None,
            splice_allowed: false,
            pipe: None,
        }
    }

    /// The backend socket, if it has not been registered with the poller yet (the loop
    /// registers it; the connection only connects it).
    pub fn backend_to_register(&mut self) -> Option<&mut mio::net::UnixStream> {
        let link = self.backend.as_mut()?;
        if link.registered {
            return None;
        }
        link.registered = true;
        Some(&mut link.sock)
    }

    /// The backend socket and the interest it needs now, when that changed.
    pub fn backend_interest_change(&mut self) -> Option<(&mut mio::net::UnixStream, mio::Interest)> {
        let link = self.backend.as_mut().filter(|l| l.registered)?;
        let interest = link.interest_change()?;
        Some((&mut link.sock, interest))
    }

    /// The registered backend socket, for deregistration.
    pub fn backend_socket_mut(&mut self) -> Option<&mut mio::net::UnixStream> {
        self.backend.as_mut().filter(|l| l.registered).map(|l| &mut l.sock)
    }

    /// Records readiness the poller reported for the backend socket.
    pub fn set_backend_ready(&mut self, readable: bool, writable: bool) {
        if let Some(link) = &mut self.backend {
            link.readable |= readable;
            link.writable |= writable;
        }
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        self.transport.socket_mut()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Records readiness the poller reported.
    pub fn set_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// Does all the I/O the readiness allows. Returns `true` when the read budget ran out
    /// with data still readable: the loop must call again soon, after serving others.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if let State::Unknown = self.state {
            let next = if self.transport.is_tls() {
                State::Opening { deadline: self.accepted + ctx.limits.tls_handshake_timeout }
            } else {
                State::Handshaking { deadline: self.accepted + ctx.limits.handshake_timeout }
            };
            self.set_state(next);
        }
        let mut budget = READ_BUDGET;
        loop {
            if self.writable && self.has_output() {
                self.flush(ctx);
            }
            self.flush_backend(ctx);
            if self.is_closed() {
                return false;
            }
            if self.backend_wants_pump() {
                if budget == 0 {
                    return true;
                }
                budget = budget.saturating_sub(self.pump_backend(ctx));
                continue;
            }
            // Input left over by backpressure goes first, before more is read.
            if self.has_unprocessed_input() && self.wants_input() {
                self.process_input(ctx);
                if self.writable && self.has_output() {
                    continue;
                }
            }
            if !(self.readable && self.wants_input()) {
                break;
            }
            if budget == 0 {
                return true;
            }
            budget = budget.saturating_sub(self.read_once(ctx));
        }
        self.after_io(ctx);
        false
    }

    /// The earliest time at which [`Connection::on_timer`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            State::Unknown => Some(self.accepted + self.limits.handshake_timeout),
            State::Opening { deadline }
            | State::Handshaking { deadline }
            | State::HandingOff { deadline }
            | State::Flushing { deadline }
            | State::Lingering { deadline } => Some(*deadline),
            State::Connected(s) => Some(session_deadline(s, &self.limits)).flatten(),
            State::Closed => None,
        };
        let stall = self.stalled_since.map(|t| t + self.limits.write_timeout);
        match (state, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on every deadline that has passed.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        if self.stalled_since.is_some_and(|t| now >= t + self.limits.write_timeout) {
            return self.abort("write timeout: peer is not reading");
        }
        let limits = self.limits;
        match &mut self.state {
            State::Opening { deadline } => {
                if now >= *deadline {
                    self.abort("TLS handshake timeout");
                }
            }
            State::Unknown | State::Handshaking { .. } => {
                if self.deadline().is_some_and(|d| now >= d) {
                    self.log.status = Some(408);
                    self.log.end = Some("handshake timeout".into());
                    self.out.push_bytes_response(ctx.pools, 408, "request head not received in time");
                    self.finish(now);
                }
            }
            State::Connected(s) => {
                if let Some((code, reason, since)) = s.failing {
                    if now >= since + limits.close_timeout {
                        log::debug!("{} backend did not answer CLOSE in time", self.peer);
                        self.send_owed_close(ctx, code, reason);
                    }
                } else if let Some(sent) = s.close_sent {
                    if now >= sent + limits.close_timeout {
                        self.abort("close handshake timed out");
                    }
                } else if !limits.idle_timeout.is_zero() && now >= s.last_message + limits.idle_timeout {
                    self.begin_close(ctx, close::GOING_AWAY, "idle timeout");
                } else if let Some(pinged) = s.ping_sent {
                    if now >= pinged + limits.pong_timeout {
                        self.begin_close(ctx, close::GOING_AWAY, "ping timeout");
                    }
                } else if !limits.ping_interval.is_zero() && now >= s.last_read + limits.ping_interval {
                    s.ping_sent = Some(now);
                    self.out.push_frame(ctx.pools, Opcode::Ping, b"");
                }
            }
            State::Flushing { deadline } | State::Lingering { deadline } => {
                if now >= *deadline {
                    self.abort("peer did not finish closing in time");
                }
            }
            State::HandingOff { deadline } => {
                if now >= *deadline {
                    self.abort("101 not accepted in time for the hand-off");
                }
            }
            State::Closed => {}
        }
        self.after_io(ctx);
    }

    /// The server is shutting down: close handshakes start, requests in progress end.
    pub fn start_drain(&mut self, ctx: &mut Ctx<'_>) {
        match &self.state {
            State::Unknown | State::Opening { .. } | State::Handshaking { .. } => self.abort("server shutting down"),
            State::Connected(s) if s.close_sent.is_none() => {
                self.begin_close(ctx, close::GOING_AWAY, "server shutting down");
            }
            _ => {}
        }
        self.after_io(ctx);
    }

    /// Gives back every buffer; the connection is about to be dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(buf) = self.rbuf.take() {
            pools.put_read(buf);
        }
        self.out.release(pools);
        if let Some(link) = &mut self.backend {
            link.release(pools);
        }
    }

    /// Whether this connection holds any buffer (for tests of "idle holds nothing").
    pub fn holds_buffers(&self) -> bool {
        self.rbuf.is_some() || !self.out.is_empty()
    }

    /// Bytes wait to go out: queued plaintext or, on TLS, encrypted records.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.transport.wants_write()
    }

    /// One access log line: peer, path, status, duration, messages and bytes each way, close.
    pub fn access_line(&self, now: Instant) -> String {
        let l = &self.log;
        let close = match (&l.close, &l.end) {
            (Some((code, reason)), _) if reason.is_empty() => format!("close={code}"),
            (Some((code, reason)), _) => format!("close={code} ({reason})"),
            (None, Some(end)) => format!("end=({end})"),
            (None, None) => "end=(peer closed)".to_string(),
        };
        format!(
            "{} {} status={} {:.3}s in={}msg/{}B out={}msg/{}B {}",
            self.peer,
            l.path.as_deref().unwrap_or("-"),
            l.status.map_or("-".to_string(), |s| s.to_string()),
            now.saturating_duration_since(self.accepted).as_secs_f64(),
            l.msgs_in,
            l.bytes_in,
            l.msgs_out,
            l.bytes_out,
            close
        )
    }

    // ---- I/O ----

    fn wants_input(&self) -> bool {
        match &self.state {
            State::Opening { .. } => true,
            State::Handshaking { .. } => self.out.is_empty() || self.out.len() < self.limits.backpressure_high,
            State::Connected(s) if s.failing.is_some() => false,
            State::Connected(_) => {
                let backend_full = self.backend.as_ref().is_some_and(|b| b.out.len() >= self.limits.backpressure_high);
                self.out.len() < self.limits.backpressure_high && !backend_full
            }
            State::Lingering { .. } => true,
            State::Unknown | State::HandingOff { .. } | State::Flushing { .. } | State::Closed => false,
        }
    }

    fn has_unprocessed_input(&self) -> bool {
        // A frame header is at most 14 bytes; fewer bytes than a full one may be waiting for
        // the rest, which only a read can bring.
        self.rend - self.rstart >= crate::ws::frame::MAX_HEADER_LEN
            && matches!(self.state, State::Connected(_) | State::Handshaking { .. })
    }

    /// One read; processes what arrived. Returns the bytes read.
    fn read_once(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let mut buf = self.rbuf.take().unwrap_or_else(|| ctx.pools.take_read());
        if self.rend == buf.len() {
            // Make room: move the unconsumed tail to the front.
            buf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        let room = buf.len() - self.rend;
        let result = self.transport.read(&mut buf[self.rend..]);
        self.rbuf = Some(buf);
        match result {
            Ok(0) => {
                self.readable = false;
                self.on_eof();
                0
            }
            Ok(n) => {
                if n < room && !self.transport.is_tls() {
                    // A short read drained the socket. Edge-triggered epoll reports every later
                    // arrival as a new event, so the read that would only say WouldBlock is
                    // skipped: one syscall fewer per wake-up.
                    self.readable = false;
                }
                if matches!(self.state, State::Lingering { .. }) {
                    // Discard: only the peer's FIN matters now.
                    self.rstart = 0;
                    self.rend = 0;
                    return n;
                }
                self.rend += n;
                if matches!(self.state, State::Opening { .. }) && !self.transport.is_handshaking() {
                    // The request can arrive in the same segment as the client's Finished.
                    self.opened(ctx);
                }
                self.process_input(ctx);
                n
            }
            // Opening: rustls consumed handshake records and produced no plaintext yet.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && matches!(self.state, State::Opening { .. }) => {
                self.readable = false;
                if !self.transport.is_handshaking() {
                    self.opened(ctx);
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
                self.not_tls(ctx, &e);
                0
            }
            Err(e) => {
                self.readable = false;
                self.abort_io(e);
                0
            }
        }
    }

    /// The TLS handshake is done: HTTP begins.
    fn opened(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(name) = self.transport.server_name() {
            log::debug!("{} TLS server name {name}", self.peer);
        }
        self.set_state(State::Handshaking { deadline: ctx.now + ctx.limits.handshake_timeout });
    }

    /// A client that does not speak TLS on a TLS port. One that spoke plain HTTP gets a plain
    /// HTTP 400 saying so; anything else is dropped.
    fn not_tls(&mut self, ctx: &mut Ctx<'_>, e: &io::Error) {
        self.log.end = Some(e.to_string().into());
        let plain_http =
            e.get_ref().and_then(|i| i.downcast_ref::<NotTls>()).is_some_and(|n| matches!(n, NotTls::PlainHttp));
        if !plain_http {
            return self.set_state(State::Closed);
        }
        self.transport.fall_back_to_plain();
        self.log.status = Some(400);
        self.out.push_bytes_response(ctx.pools, 400, "this port speaks TLS: use https:// or wss://");
        self.finish(ctx.now);
    }

    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        while self.has_output() {
            if let Some(due) = self.out.pipe_due() {
                let Some(pipe) = self.pipe.as_mut() else { return self.abort("spliced data without a pipe") };
                match pipe.drain_to(self.transport.socket_mut(), due) {
                    Ok(0) => return self.abort("peer stopped accepting data"),
                    Ok(n) => {
                        self.out.consume_piped(n);
                        self.stalled_since = Some(ctx.now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.writable = false;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.abort_io(e),
                }
                continue;
            }
            if self.out.is_empty() {
                // Only TLS records (handshake, alert, close_notify) are left.
                match self.transport.flush_records() {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.writable = false;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return self.abort_io(e),
                }
            }
            match self.transport.write_from(&mut self.out, ctx.pools) {
                Ok(0) => return self.abort("peer stopped accepting data"),
                Ok(_) => self.stalled_since = Some(ctx.now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.abort_io(e),
            }
        }
    }

    /// Bookkeeping after any activity: buffers back to the pool when idle, the end of
    /// `Flushing`, the stall clock.
    fn after_io(&mut self, ctx: &mut Ctx<'_>) {
        if let (State::HandingOff { .. }, true) = (&self.state, self.out.is_empty()) {
            self.hand_off();
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            let idle = match &self.state {
                State::Connected(s) => s.decoder.is_between_messages(),
                _ => true,
            };
            if idle {
                if let Some(buf) = self.rbuf.take() {
                    ctx.pools.put_read(buf);
                }
            }
        }
        if let (State::Flushing { .. }, true) = (&self.state, self.out.is_empty()) {
            // Our last message is out: TLS close_notify, then FIN, then wait for the peer's.
            self.transport.send_close_notify();
            if self.writable {
                let _ = self.transport.flush_records();
            }
            if !self.transport.wants_write() {
                match self.transport.shutdown_write() {
                    Ok(()) => self.set_state(State::Lingering { deadline: ctx.now + self.limits.close_timeout }),
                    Err(_) => self.set_state(State::Closed),
                }
            }
        }
        if !self.has_output() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(ctx.now);
        }
        if matches!(self.state, State::Connected(_)) && self.out.len() > self.limits.max_queued {
            self.log.end = Some("output queue over max_queued".into());
            self.fail_ws(ctx, close::POLICY_VIOLATION, "too much queued output");
        }
    }

    fn on_eof(&mut self) {
        let why: &'static str = match &self.state {
            State::Lingering { .. } => {
                self.set_state(State::Closed);
                return;
            }
            State::Handshaking { .. } if self.rend == self.rstart => "peer closed before a request",
            State::Handshaking { .. } => "peer closed mid-request",
            State::Connected(s) if s.close_sent.is_some() => "peer closed without answering close",
            State::Connected(_) => "peer closed without a close frame (1006)",
            _ => "peer closed",
        };
        self.abort(why);
    }

    // ---- state changes ----

    fn set_state(&mut self, state: State) {
        log::debug!("{} {} -> {}", self.peer, self.state.name(), state.name());
        self.state = state;
    }

    /// Ends at once (no more I/O); the loop removes the connection after the batch.
    fn abort(&mut self, why: &'static str) {
        if self.log.end.is_none() && self.log.close.is_none() {
            self.log.end = Some(why.into());
        }
        self.set_state(State::Closed);
    }

    fn abort_io(&mut self, e: io::Error) {
        if self.log.end.is_none() {
            self.log.end = Some(format!("I/O error: {e}").into());
        }
        self.set_state(State::Closed);
    }

    /// Writes what is queued, then FIN, then waits for the peer's FIN (bounded).
    fn finish(&mut self, now: Instant) {
        self.set_state(State::Flushing { deadline: now + self.limits.close_timeout });
    }

    /// Starts the closing handshake (§7.1.2): our close frame, then wait for the peer's.
    /// While the client is being failed, any reason to close sends the close frame it is owed.
    fn begin_close(&mut self, ctx: &mut Ctx<'_>, code: u16, reason: impl Into<Cow<'static, str>>) {
        if let State::Connected(s) = &self.state {
            if let Some((code, reason, _)) = s.failing {
                return self.send_owed_close(ctx, code, reason);
            }
        }
        if let State::Connected(s) = &mut self.state {
            if s.close_sent.is_none() {
                let reason = reason.into();
                s.close_sent = Some(ctx.now);
                push_close(&mut self.out, ctx.pools, code, &reason);
                self.log.close = Some((code, reason));
            }
        }
    }

    // ---- the backend ----

    fn backend_wants_pump(&self) -> bool {
        let open = matches!(&self.state, State::Connected(s) if s.close_sent.is_none());
        open && !self.backend_done
            && self.backend.as_ref().is_some_and(|b| b.readable)
            && self.out.len() < self.limits.backpressure_high
    }

    /// Bulk data from a raw binary backend: into the pipe, a frame header into the queue.
    /// `None` when this read should go through user space instead.
    fn splice_from_backend(&mut self) -> Option<Pumped> {
        let link = self.backend.as_mut()?;
        if !(self.splice_allowed && link.bulk) {
            return None;
        }
        let available = match readable_bytes(&link.sock) {
            Ok(n) if n >= SPLICE_MIN => n,
            _ => {
                link.bulk = false;
                return None;
            }
        };
        if self.pipe.is_none() {
            match Pipe::new() {
                Ok(p) => {
                    log::debug!("{} splicing backend data through a pipe of {} bytes", self.peer, p.capacity);
                    self.pipe = Some(p);
                }
                Err(e) => {
                    log::warn!("{}: no pipe for splice ({e}); copying instead", self.peer);
                    self.splice_allowed = false;
                    return None;
                }
            }
        }
        let pipe = self.pipe.as_mut()?;
        if pipe.held == pipe.capacity {
            return None;
        }
        match pipe.fill_from(&link.sock, available) {
            Ok(0) => None,
            Ok(n) => Some(Pumped::Bytes(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                link.readable = false;
                Some(Pumped::WouldBlock)
            }
            Err(e) => Some(Pumped::Ended(BackendEnd::Failed(format!("backend splice failed: {e}")))),
        }
    }

    /// Reads once from the backend into the client's queue. Returns the bytes read.
    fn pump_backend(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let queued_before = self.out.len();
        let pumped = match self.splice_from_backend() {
            Some(Pumped::Bytes(n)) => {
                self.out.push_piped_frame(ctx.pools, n);
                Pumped::Bytes(n)
            }
            Some(other) => other,
            None => {
                let Some(link) = &mut self.backend else { return 0 };
                link.pump(ctx.pools, &mut self.out)
            }
        };
        self.log.bytes_out += (self.out.len() - queued_before) as u64;
        match pumped {
            Pumped::Bytes(n) => {
                self.log.msgs_out += u64::from(n > 0);
                n
            }
            Pumped::WouldBlock => 0,
            Pumped::Ended(end) => {
                self.backend_done = true;
                match end {
                    BackendEnd::Closed => self.begin_close(ctx, close::NORMAL, "backend closed"),
                    BackendEnd::CloseRecord(code, reason) => {
                        // A code a peer may not send becomes 1011 rather than a protocol error.
                        let code = if close::is_valid_code(code) { code } else { close::INTERNAL_ERROR };
                        self.begin_close(ctx, code, reason);
                    }
                    BackendEnd::Failed(why) => {
                        log::warn!("{} {}: {why}", self.peer, self.log.path.as_deref().unwrap_or("-"));
                        self.begin_close(ctx, close::INTERNAL_ERROR, "backend failed");
                        self.log.end = Some(why.into());
                    }
                }
                0
            }
        }
    }

    fn flush_backend(&mut self, ctx: &mut Ctx<'_>) {
        let Some(link) = &mut self.backend else { return };
        if self.backend_done || link.out.is_empty() {
            return;
        }
        if let Err(e) = link.flush(ctx.pools) {
            self.backend_done = true;
            let why = format!("backend write failed: {e}");
            log::warn!("{} {}: {why}", self.peer, self.log.path.as_deref().unwrap_or("-"));
            self.begin_close(ctx, close::INTERNAL_ERROR, "backend failed");
            self.log.end = Some(why.into());
        }
    }

    /// Direct mode, once the 101 is out: the socket (with the HELLO and any bytes read past
    /// the request) goes to the backend, and this connection ends without touching it.
    fn hand_off(&mut self) {
        let (Some(link), Some(mut data)) = (self.backend.as_ref(), self.handoff.take()) else {
            return self.abort("nothing to hand off");
        };
        if let Some(buf) = &self.rbuf {
            data.extend_from_slice(&buf[self.rstart..self.rend]);
        }
        self.rstart = self.rend;
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.transport.socket_mut());
        match backend::direct::send_fd(&link.sock, fd, &data) {
            Ok(()) => {
                self.log.end = Some("handed off to the backend".into());
                self.set_state(State::Closed);
            }
            Err(e) => {
                log::warn!("{}: hand-off to the backend failed: {e}", self.peer);
                self.log.end = Some(format!("hand-off failed: {e}").into());
                self.set_state(State::Closed);
            }
        }
    }

    /// Fails the WebSocket connection (§7.1.7): close frame with the code, then TCP close
    /// without waiting for the peer's close frame.
    fn fail_ws(&mut self, ctx: &mut Ctx<'_>, code: u16, reason: &'static str) {
        let already_sent = matches!(&self.state, State::Connected(s) if s.close_sent.is_some());
        if !already_sent {
            push_close(&mut self.out, ctx.pools, code, reason);
        }
        self.log.close = Some((code, reason.into()));
        self.rstart = self.rend;
        self.finish(ctx.now);
    }

    /// A protocol error from the client (§7.1.7). On a framed backend route the backend hears
    /// of it first (a CLOSE record with the code) and the client is not read again; its close
    /// frame follows once the backend has answered with CLOSE or EOF, or `close_timeout` has
    /// passed, so replies to the messages before the error are not lost. Elsewhere the client
    /// is failed at once.
    fn fail_client(&mut self, ctx: &mut Ctx<'_>, code: u16, reason: &'static str) {
        let framed = !self.backend_done && self.backend.as_ref().is_some_and(|l| l.is_framed());
        if let (State::Connected(s), true) = (&mut self.state, framed) {
            if s.close_sent.is_none() && s.failing.is_none() {
                s.failing = Some((code, reason, ctx.now));
                self.rstart = self.rend;
                if let Some(link) = &mut self.backend {
                    link.send_close(ctx.pools, Some(code), reason);
                }
                log::debug!("{} protocol error ({code} {reason}); waiting for the backend's CLOSE", self.peer);
                return;
            }
        }
        self.fail_ws(ctx, code, reason)
    }

    /// Ends the wait that `fail_client` started: the backend is done with, the client gets
    /// the close frame its protocol error earned.
    fn send_owed_close(&mut self, ctx: &mut Ctx<'_>, code: u16, reason: &'static str) {
        self.backend_done = true;
        self.fail_ws(ctx, code, reason)
    }

    // ---- input ----

    fn process_input(&mut self, ctx: &mut Ctx<'_>) {
        let Some(mut buf) = self.rbuf.take() else { return };
        loop {
            match self.state {
                State::Handshaking { .. } => {
                    if !self.process_request(&buf, ctx) {
                        break;
                    }
                }
                State::Connected(_) => {
                    self.process_frames(&mut buf, ctx);
                    break;
                }
                _ => {
                    self.rstart = self.rend;
                    break;
                }
            }
        }
        self.rbuf = Some(buf);
    }

    /// Handles one request head if a whole one is buffered. Returns `true` when the state
    /// changed in a way that the remaining input must be looked at again.
    fn process_request(&mut self, buf: &[u8], ctx: &mut Ctx<'_>) -> bool {
        let head_limits = HeadLimits { max_head_bytes: ctx.limits.max_head_size, max_headers: ctx.limits.max_headers };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let parsed = parse_request(&buf[self.rstart..self.rend], &mut storage, &head_limits);
        match parsed {
            Ok(None) => false,
            Err(e) => {
                self.log.status = Some(e.status());
                self.log.end = Some(e.reason().into());
                self.out.push_bytes_response(ctx.pools, e.status(), e.reason());
                self.finish(ctx.now);
                false
            }
            Ok(Some((req, head_len))) => {
                self.rstart += head_len;
                self.handle_request(&req, ctx)
            }
        }
    }

    fn handle_request(&mut self, req: &Request<'_, '_>, ctx: &mut Ctx<'_>) -> bool {
        let path = req.path();
        self.log.path = Some(path.chars().take(256).collect::<String>().into_boxed_str());
        let has_body = req.header("transfer-encoding").is_some()
            || req.header("content-length").is_some_and(|v| v != b"0".as_slice());
        let Some(route_id) = ctx.routes.find(path) else {
            // A refused upgrade closes: the client has nothing more to say on this connection.
            let may_keep = !has_body && !handshake::is_upgrade(req);
            return self.respond(ctx, req, 404, "no route for this path", may_keep);
        };
        let route = ctx.routes.get(route_id);
        if !route.is_websocket() {
            return match req.method {
                "GET" | "HEAD" => {
                    let response = Response {
                        status: 200,
                        headers: &[("Cache-Control", "no-cache")],
                        content_type: "text/html; charset=utf-8",
                        body: DEMO_PAGE.as_bytes(),
                        keep_alive: req.keep_alive() && !has_body,
                        head_only: req.method == "HEAD",
                    };
                    self.send_response(ctx, &response)
                }
                _ => {
                    let response = Response { headers: &[("Allow", "GET, HEAD")], ..Response::error(405, "use GET") };
                    self.send_response(ctx, &response)
                }
            };
        }
        match handshake::validate(req, &route.policy()) {
            Ok(mut accepted) => {
                let mut backend_target = None;
                if let Some(spec) = &route.backend {
                    let offered: Vec<&str> = req
                        .list_elements("sec-websocket-protocol")
                        .filter_map(|p| std::str::from_utf8(p).ok())
                        .collect();
                    let (socket, named_by) = match backend::resolve(spec, &route.path, path, &offered) {
                        Ok(r) => r,
                        Err(e) => return self.respond(ctx, req, e.status(), e.reason(), false),
                    };
                    let sock = match backend::connect(&socket) {
                        Ok(s) => s,
                        Err(e) => {
                            let peer = self.peer;
                            ctx.backend_failures
                                .warn(ctx.now, || format!("{peer} {path}: backend {}: {e}", socket.display()));
                            self.log.end = Some(format!("backend {}: {e}", socket.display()).into());
                            return self.respond(ctx, req, 503, "backend unavailable, try again later", false);
                        }
                    };
                    if let Some(p) = named_by {
                        // The subprotocol named the socket: it is the one accepted.
                        accepted.subprotocol = route.subprotocols.iter().find(|s| **s == p).map(String::as_str);
                        backend_target = Some((sock, spec.clone(), Some(p)));
                    } else {
                        backend_target = Some((sock, spec.clone(), None));
                    }
                }
                let mut head = Vec::with_capacity(160);
                let named_protocol = backend_target.as_ref().and_then(|(_, _, p)| p.clone());
                if accepted.subprotocol.is_none() && named_protocol.is_some() {
                    let name = named_protocol.as_deref().unwrap_or_default();
                    handshake::write_accept(&mut head, &handshake::Accepted { subprotocol: Some(name), ..accepted });
                } else {
                    handshake::write_accept(&mut head, &accepted);
                }
                if let Some((sock, spec, _)) = backend_target {
                    let hello = framed::Hello {
                        peer: self.peer,
                        path,
                        query: req.query(),
                        subprotocol: accepted.subprotocol.or(named_protocol.as_deref()),
                        headers: req.headers,
                    };
                    let mut link =
                        BackendLink::new(sock, spec.framing, spec.message_kind, route.limits.max_message_size);
                    match spec.framing {
                        Framing::Framed => link.out.push_bytes(ctx.pools, &framed::hello_record(&hello)),
                        Framing::Direct => self.handoff = Some(framed::hello_record(&hello)),
                        Framing::Raw | Framing::Lines => {}
                    }
                    // Connected at once (UNIX connect does not wait), so writable now.
                    link.writable = true;
                    self.splice_allowed = spec.splice
                        && spec.framing == Framing::Raw
                        && spec.message_kind == crate::ws::message::MessageKind::Binary
                        && !self.transport.is_tls();
                    self.backend = Some(Box::new(link));
                    if spec.framing == Framing::Direct {
                        self.out.push_bytes(ctx.pools, &head);
                        self.log.status = Some(101);
                        self.set_state(State::HandingOff { deadline: ctx.now + route.limits.write_timeout });
                        return false;
                    }
                }
                self.out.push_bytes(ctx.pools, &head);
                self.log.status = Some(101);
                self.limits = route.limits;
                let session = Session {
                    app: route.app,
                    decoder: Decoder::server(route.message_limits()),
                    last_message: ctx.now,
                    last_read: ctx.now,
                    ping_sent: None,
                    close_sent: None,
                    failing: None,
                };
                self.set_state(State::Connected(Box::new(session)));
                true
            }
            Err(e) => {
                let mut body = Vec::with_capacity(200);
                e.write_response(&mut body);
                self.out.push_bytes(ctx.pools, &body);
                self.log.status = Some(e.status());
                self.log.end = Some(e.reason().into());
                self.finish(ctx.now);
                false
            }
        }
    }

    /// A plain error-or-not response; returns whether the next request may follow.
    fn respond(&mut self, ctx: &mut Ctx<'_>, req: &Request<'_, '_>, status: u16, reason: &str, may_keep: bool) -> bool {
        let response = Response { keep_alive: may_keep && req.keep_alive(), ..Response::error(status, reason) };
        self.send_response(ctx, &response)
    }

    fn send_response(&mut self, ctx: &mut Ctx<'_>, response: &Response<'_>) -> bool {
        let mut bytes = Vec::with_capacity(256 + response.body.len());
        response.write(&mut bytes);
        self.out.push_bytes(ctx.pools, &bytes);
        self.log.status = Some(response.status);
        if response.keep_alive {
            self.set_state(State::Handshaking { deadline: ctx.now + ctx.limits.handshake_timeout });
            true
        } else {
            self.finish(ctx.now);
            false
        }
    }

    fn process_frames(&mut self, buf: &mut [u8], ctx: &mut Ctx<'_>) {
        let State::Connected(session) = &mut self.state else { return };
        let high = self.limits.backpressure_high;
        let mut pos = self.rstart;
        let mut next: Option<(u16, &'static str, bool)> = None;
        while self.out.len() < high {
            let (event, used) = match session.decoder.decode(&mut buf[pos..self.rend]) {
                Ok(r) => r,
                Err(e) => {
                    next = Some((e.close_code(), e.reason(), true));
                    break;
                }
            };
            pos += used;
            let Some(event) = event else {
                if used == 0 {
                    break;
                }
                continue;
            };
            // Any frame proves the peer alive, not only a pong.
            session.last_read = ctx.now;
            session.ping_sent = None;
            if session.close_sent.is_some() {
                // §5.5.1: after sending close, only the peer's close frame matters.
                if let Event::Close(frame) = event {
                    self.log.close.get_or_insert((frame.code.unwrap_or(close::NO_STATUS), "".into()));
                    next = Some((0, "", false));
                    break;
                }
                continue;
            }
            match event {
                Event::Message(kind, payload) => {
                    session.last_message = ctx.now;
                    self.log.msgs_in += 1;
                    self.log.bytes_in += payload.len() as u64;
                    match session.app {
                        App::Echo => {
                            let len = payload.len();
                            if len < 4096 {
                                self.out.push_frame(ctx.pools, kind.opcode(), payload);
                            } else if let Some(owned) = session.decoder.take_assembled() {
                                self.out.push_frame_owned(ctx.pools, kind.opcode(), owned);
                            } else {
                                // A whole frame read at once: its payload ends at `pos`.
                                self.out.push_frame(ctx.pools, kind.opcode(), &buf[pos - len..pos]);
                            }
                            self.log.msgs_out += 1;
                            self.log.bytes_out += len as u64;
                        }
                        App::Backend => {
                            if let (Some(link), false) = (&mut self.backend, self.backend_done) {
                                link.send_message(ctx.pools, kind, payload);
                            }
                        }
                        App::Demo => {}
                    }
                }
                Event::Ping(payload) => self.out.push_frame(ctx.pools, Opcode::Pong, payload),
                Event::Pong(_) => {}
                Event::Close(frame) => {
                    reply_close(&mut self.out, ctx.pools, &frame);
                    if let (Some(link), false) = (&mut self.backend, self.backend_done) {
                        link.send_close(ctx.pools, frame.code, frame.reason);
                    }
                    let code = frame.code.unwrap_or(close::NO_STATUS);
                    self.log.close = Some((code, frame.reason.chars().take(123).collect::<String>().into()));
                    next = Some((0, "", false));
                    break;
                }
            }
        }
        self.rstart = pos;
        match next {
            Some((code, reason, true)) => self.fail_client(ctx, code, reason),
            Some(_) => {
                // Close handshake complete: the rest of the input is after the close frame.
                self.rstart = self.rend;
                self.finish(ctx.now);
            }
            None => {}
        }
    }
}

/// The next time a `Connected` session has something to do.
fn session_deadline(s: &Session, limits: &Limits) -> Option<Instant> {
    if let Some((_, _, since)) = s.failing {
        return Some(since + limits.close_timeout);
    }
    if let Some(sent) = s.close_sent {
        return Some(sent + limits.close_timeout);
    }
    let mut next: Option<Instant> = None;
    let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
    if !limits.idle_timeout.is_zero() {
        consider(s.last_message + limits.idle_timeout);
    }
    match s.ping_sent {
        Some(pinged) => consider(pinged + limits.pong_timeout),
        None if !limits.ping_interval.is_zero() => consider(s.last_read + limits.ping_interval),
        None => {}
    }
    next
}

fn push_close(out: &mut OutQueue, pools: &mut Pools, code: u16, reason: &str) {
    let mut payload = [0u8; 125];
    let n = encode_close_payload(&mut payload, code, reason);
    out.push_frame(pools, Opcode::Close, &payload[..n]);
}

/// §5.5.1: answer a close frame, echoing its status code (an empty close gets an empty one).
fn reply_close(out: &mut OutQueue, pools: &mut Pools, frame: &CloseFrame<'_>) {
    match frame.code {
        Some(code) => push_close(out, pools, code, ""),
        None => out.push_frame(pools, Opcode::Close, b""),
    }
}

impl OutQueue {
    /// Queues a plain-text error response that closes the connection.
    fn push_bytes_response(&mut self, pools: &mut Pools, status: u16, reason: &str) {
        let mut bytes = Vec::with_capacity(160 + reason.len());
        Response::error(status, reason).write(&mut bytes);
        self.push_bytes(pools, &bytes);
    }
}

/// The page served by `app = "demo"` routes.
pub const DEMO_PAGE: &str = include_str!("http/demo.html");
