//! Socket I/O: reading (into the [`ReadBuf`]), writing the output queue or a file body,
//! and the bookkeeping after it (buffers back to the pool when idle, the stall clock, the
//! hand-off, the end of `Flushing`).

use std::io;

use super::read_buf::Filled;
use super::{Connection, Ctx, End, Phase, Progress, Ready, BODY_BUDGET, FANOUT_BUDGET};
use crate::apps::backend::HandOff;
use crate::apps::Action;
use crate::conn_id::key_of;
use crate::http::static_files::TLS_CHUNK;
use crate::io_step::IoStep;
use crate::stamp::Stamp;
use crate::transport::NotTls;
use crate::ws::close;

impl Connection {
    pub(super) fn wants_input(&self) -> bool {
        match &self.phase {
            Phase::Opening { .. } => true,
            Phase::Http { .. } => self.out.len() < self.limits.backpressure_high,
            Phase::Connected(ws) => {
                let high = self.limits.backpressure_high;
                self.out.len() < high && self.failing().is_none() && ws.app.accepts_input(high)
            }
            Phase::Lingering { .. } => true,
            _ => false,
        }
    }

    pub(super) fn has_unprocessed_input(&self) -> bool {
        // Bytes left because processing was held back; bytes left because a frame is
        // incomplete wait for a read.
        matches!(self.phase, Phase::Connected(_)) && (self.input.has_held_input() || self.is_inflating())
    }

    pub(super) fn is_inflating(&self) -> bool {
        self.phase.ws().is_some_and(|ws| ws.endpoint.is_inflating())
    }

    /// One read; processes what arrived. Returns the bytes read.
    pub(super) fn read_once(&mut self, cx: &mut Ctx<'_>) -> usize {
        let result = self.fill_input(cx);
        self.after_read(cx, result)
    }

    /// One read into the input.
    #[inline(always)]
    fn fill_input(&mut self, cx: &mut Ctx<'_>) -> io::Result<Filled> {
        let Connection { input, transport, .. } = self;
        input.fill(cx.pools, |room, pools| transport.read(room, pools))
    }

    /// What a read brought, processed. Returns the bytes read.
    fn after_read(&mut self, cx: &mut Ctx<'_>, result: io::Result<Filled>) -> usize {
        match IoStep::of(result) {
            IoStep::End => {
                self.readable = false;
                self.on_eof(cx);
                0
            }
            IoStep::Done(Filled { bytes: n, short }) => {
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
            IoStep::WouldBlock => {
                self.readable = false;
                if matches!(self.phase, Phase::Opening { .. }) && !self.transport.is_handshaking() {
                    // rustls consumed handshake records and produced no plaintext yet, but
                    // the handshake is done; plaintext may already be buffered inside it.
                    self.opened(cx);
                    self.readable = true;
                }
                0
            }
            IoStep::Retry => 0,
            IoStep::Failed(e) => {
                self.readable = false;
                match self.transport.take_not_tls() {
                    Some(why) => self.not_tls(cx, why),
                    None => self.close(cx.now, cx.pools, End::Io(e)),
                }
                0
            }
        }
    }

    /// The TLS handshake is done: HTTP begins.
    pub(super) fn opened(&mut self, cx: &mut Ctx<'_>) {
        cx.metrics.tls_handshakes += 1;
        self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
    }

    /// A client that does not speak TLS on a TLS port. One that spoke plain HTTP gets a plain
    /// HTTP 400 saying so; anything else is dropped.
    pub(super) fn not_tls(&mut self, cx: &mut Ctx<'_>, why: NotTls) {
        self.log.note_end(why.to_string());
        if why != NotTls::PlainHttp {
            return self.close(cx.now, cx.pools, End::Abort("not TLS".into()));
        }
        self.transport.fall_back_to_plain();
        self.close(
            cx.now,
            cx.pools,
            End::Refuse { status: 400, reason: "this port speaks TLS: use https:// or wss://".into() },
        );
    }

    /// The end-of-turn write: everything queued this turn goes in one write (or writev).
    /// Reports `Again` when the write made room for input that backpressure held back.
    pub(super) fn write_turn(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let was_full = self.out.len() >= self.limits.backpressure_high;
        if self.writable && self.has_output() {
            self.flush(cx);
        }
        self.after_io(cx, 0);
        if self.is_closed() {
            return Progress::Closed;
        }
        self.after_write(was_full)
    }

    /// What a connection still open wants after a write: `Again` when input waits (or the
    /// write made room for input that backpressure held back, `was_full`), or a file body
    /// has budget left.
    #[inline(always)]
    pub(super) fn after_write(&self, was_full: bool) -> Progress {
        let input_waits = (self.readable || self.has_unprocessed_input()) && self.wants_input();
        let room_made = was_full && self.out.len() < self.limits.backpressure_high;
        // A file body that spent this turn's budget with the socket still writable.
        let body_left = self.writable && matches!(self.phase, Phase::Sending(_));
        if input_waits || room_made || body_left {
            Progress::Again
        } else {
            Progress::Idle
        }
    }

    pub(super) fn flush(&mut self, cx: &mut Ctx<'_>) {
        let mut body_budget = BODY_BUDGET;
        while self.has_output() {
            if let Some(due) = self.out.pipe_due() {
                let pipe = self.phase.ws_mut().and_then(|ws| ws.app.pipe());
                let Some(pipe) = pipe else {
                    return self.close(cx.now, cx.pools, End::Abort("spliced data without a pipe".into()));
                };
                let drained = self.transport.fd().and_then(|fd| pipe.drain_to(&fd, due));
                match IoStep::of(drained) {
                    IoStep::End => {
                        return self.close(cx.now, cx.pools, End::Abort("peer stopped accepting data".into()))
                    }
                    IoStep::Done(n) => {
                        self.out.consume_piped(n);
                        self.stalled_since = Some(cx.stamp);
                    }
                    IoStep::WouldBlock => {
                        self.writable = false;
                        return;
                    }
                    IoStep::Retry => {}
                    IoStep::Failed(e) => return self.close(cx.now, cx.pools, End::Io(e)),
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
            match IoStep::of(result) {
                IoStep::End => return self.close(cx.now, cx.pools, End::Abort("peer stopped accepting data".into())),
                IoStep::Done(_) => self.stalled_since = Some(cx.stamp),
                IoStep::WouldBlock => {
                    self.writable = false;
                    return;
                }
                IoStep::Retry => {}
                IoStep::Failed(e) => return self.close(cx.now, cx.pools, End::Io(e)),
            }
        }
    }

    /// The next piece of a static file's body: `None` when the budget is spent (or nothing
    /// is being sent), else what the write gave. The body done, the connection goes on to
    /// the next request (which may be buffered already) or ends.
    pub(super) fn send_body(&mut self, cx: &mut Ctx<'_>, budget: &mut usize) -> Option<io::Result<usize>> {
        let Phase::Sending(sending) = &mut self.phase else { return None };
        if sending.body.remaining() == 0 {
            let keep_alive = sending.keep_alive;
            if keep_alive {
                self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
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
            self.transport.fd().and_then(|fd| sending.body.sendfile(fd))
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
    #[inline(always)]
    pub(super) fn after_io(&mut self, cx: &mut Ctx<'_>, read: usize) {
        if let (Phase::HandingOff { .. }, true) = (&self.phase, self.out.is_empty()) {
            self.hand_off(cx);
        }
        let mid_message = self.phase.ws().is_some_and(|ws| !ws.endpoint.is_between_messages());
        self.input.settle(cx.pools, read, mid_message);
        if let (Phase::Flushing { .. }, true) = (&self.phase, self.out.is_empty()) {
            // Our last message is out: TLS close_notify, then FIN, then wait for the peer's.
            self.transport.send_close_notify();
            if self.writable {
                let _ = self.transport.flush_records();
            }
            if !self.transport.wants_write() {
                match self.transport.shutdown_write() {
                    Ok(()) => self.set_phase(Phase::lingering(cx.now + self.limits.close_timeout)),
                    Err(e) => self.close(cx.now, cx.pools, End::Io(e)),
                }
            }
        }
        self.stall_clock(cx);
        if matches!(self.phase, Phase::Connected(_)) {
            self.bound_queue(cx);
        }
    }

    /// Since when output has waited: from the first write that left some, until none is left.
    #[inline(always)]
    fn stall_clock(&mut self, cx: &Ctx<'_>) {
        if !self.has_output() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(cx.stamp);
        }
    }

    /// An open WebSocket whose queue passed `max_queued` is failed.
    #[inline(always)]
    fn bound_queue(&mut self, cx: &mut Ctx<'_>) {
        if self.out.len() > self.limits.max_queued {
            self.log.set_end("output queue over max_queued");
            self.close(cx.now, cx.pools, End::Fail { code: close::POLICY_VIOLATION, reason: "too much queued output" });
        }
    }

    /// Whether this readable wake-up is the common one, done in one pass
    /// ([`Connection::one_pass`]): an open WebSocket on a plain socket with nothing held
    /// back and nothing queued, whose app takes input and has no socket of its own, and
    /// nothing rare (compression, a legacy draft's re-encoding, a failing backend).
    #[inline(always)]
    pub(super) fn reads_in_one_pass(&self, cx: &Ctx<'_>) -> bool {
        let Phase::Connected(ws) = &self.phase else { return false };
        debug_assert!(self.rare.is_some() || !ws.endpoint.is_inflating(), "inflating needs permessage-deflate");
        !self.app_own_io
            && self.rare.is_none()
            && self.out.is_empty()
            && !self.input.has_held_input()
            && !self.transport.is_tls()
            && cx.fanout < FANOUT_BUDGET
            && ws.app.accepts_input(self.limits.backpressure_high)
    }

    /// The common wake-up in one pass (see [`Connection::reads_in_one_pass`]): one read, its
    /// messages to the app, the reply written and the bookkeeping, without the general
    /// loop's tests for what cannot be so here (another phase, held input, an app's socket,
    /// a file body, TLS records, a hand-off). `Err(bytes read)` when the read left more than
    /// one pass does (more to read, input held back, the peer or the app closing, an error):
    /// the general loop goes on from there.
    #[inline(always)]
    pub(super) fn one_pass(&mut self, cx: &mut Ctx<'_>, ready: Ready) -> Result<Progress, usize> {
        let read = match self.fill_input(cx) {
            // Bytes, and the plain socket drained (see `after_read`): straight to the frames.
            Ok(Filled { bytes, short: true }) if bytes > 0 => {
                self.readable = false;
                if let Some(mut buf) = self.input.detach() {
                    self.process_frames(&mut buf, cx);
                    self.input.attach(buf);
                }
                bytes
            }
            result => self.after_read(cx, result),
        };
        let Phase::Connected(ws) = &self.phase else { return Err(read) };
        let mid_message = !ws.endpoint.is_between_messages();
        if self.readable || self.input.has_held_input() || self.rare.is_some() {
            return Err(read);
        }
        let write_now = ready.write_after
            && self.writable
            && !self.out.is_empty()
            && !cx.actions.iter().any(|action| action.may_reach(key_of(self.id)));
        let was_full = self.out.len() >= self.limits.backpressure_high;
        if write_now {
            self.flush(cx);
            if !matches!(self.phase, Phase::Connected(_)) {
                // The write failed, and closed it.
                self.after_io(cx, read);
                return Ok(self.progress_after(write_now, was_full));
            }
        }
        self.input.settle(cx.pools, read, mid_message);
        self.stall_clock(cx);
        self.bound_queue(cx);
        Ok(self.progress_after(write_now, was_full))
    }

    /// What a corked drive that read leaves the loop to do, once its bookkeeping is done:
    /// `write_now`, whether it wrote its output itself; `was_full`, whether backpressure held
    /// its input before that write.
    #[inline(always)]
    pub(super) fn progress_after(&self, write_now: bool, was_full: bool) -> Progress {
        if self.is_closed() {
            Progress::Closed
        } else if write_now {
            self.after_write(was_full)
        } else if self.writable && self.has_output() {
            Progress::Write
        } else {
            Progress::Idle
        }
    }

    pub(super) fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        let why: &'static str = match &self.phase {
            Phase::Lingering { .. } => {
                self.set_phase(Phase::closed());
                return;
            }
            Phase::Http { .. } if !self.input.has_pending() && self.log.responses() > 0 => {
                let why = format!("{}; client closed while idle", self.log.served());
                return self.close(cx.now, cx.pools, End::Abort(why.into()));
            }
            Phase::Http { .. } if !self.input.has_pending() => "client closed without sending a request",
            Phase::Http { .. } => "client closed mid-request",
            Phase::Connected(ws) if ws.endpoint.session().is_closing() => "peer closed without answering close",
            Phase::Connected(_) => "peer closed without a close frame (1006)",
            _ => "peer closed",
        };
        self.close(cx.now, cx.pools, End::Abort(why.into()));
    }

    /// Direct mode, once the 101 is out: the socket (with the HELLO and any bytes read past
    /// the request) goes to the backend, and this connection ends without touching it.
    pub(super) fn hand_off(&mut self, cx: &mut Ctx<'_>) {
        let Phase::HandingOff { handoff: h, .. } = &mut self.phase else { return };
        h.hello.extend_from_slice(self.input.pending());
        self.input.discard();
        let handed = match self.transport.fd() {
            Ok(fd) => {
                let hello = std::mem::take(&mut h.hello);
                h.backend.hand_off(cx.pools, std::os::fd::AsRawFd::as_raw_fd(&fd), &hello)
            }
            Err(e) => Err(e),
        };
        if let Ok(HandOff::Pending) = handed {
            // The rest of the HELLO goes when the backend reads; the client's socket is the
            // backend's now and is not read or written again.
            cx.actions.push(Action::Register { fd: h.backend.link_fd(), interest: mio::Interest::WRITABLE });
            let deadline = Stamp::at(cx.now + self.limits.write_timeout);
            let Phase::HandingOff { handoff, .. } = std::mem::replace(&mut self.phase, Phase::closed()) else {
                unreachable!("matched above")
            };
            log::debug!("{} handing-off -> handed-off", self.peer());
            self.phase = Phase::HandedOff { deadline, handoff };
            return;
        }
        match handed {
            Ok(_) => self.close(cx.now, cx.pools, End::HandedOff),
            Err(e) => self.close(cx.now, cx.pools, End::HandOffFailed(e)),
        }
    }
}
