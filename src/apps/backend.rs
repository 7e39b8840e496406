//! `backend = "unix:..."` / `socket_dir`: every client message goes to the client's own
//! connection to a backend on a UNIX socket, and what the backend writes comes back as
//! messages (framings in [`crate::backend`]). A framed backend may also drive pub/sub for its
//! client (SUBSCRIBE, UNSUBSCRIBE, PUBLISH, SEND records).
//!
//! The link socket is the app's own: the app asks the loop to watch it, and the connection
//! calls [`App::on_io`] whenever it runs. On a raw binary route over plain TCP, bulk backend
//! data is spliced (backend → pipe → client) and never copied to user space.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::{App, AppClose, AppCtx, AppIo, Hold, Payload};
use crate::backend::codec::Command;
use crate::backend::link::{BackendEnd, BackendError, BackendLink, Pumped};
use crate::buffer::Pools;
use crate::io_step::IoStep;
use crate::sys::splice::{readable_bytes, Pipe, SPLICE_MIN};
use crate::ws::close;
use crate::ws::message::MessageKind;

pub struct Backend {
    link: BackendLink,
    /// The backend has ended (EOF, CLOSE record, failure): it is no longer read or written.
    done: bool,
    registered: bool,
    /// Raw binary backend on plain TCP: bulk payload may go backend → pipe → client.
    splice_allowed: bool,
    pipe: Option<Pipe>,
    /// Pub/sub records of the last read.
    commands: Vec<Command>,
    max_subscriptions: usize,
}

/// How a direct hand-off went.
#[derive(Debug)]
pub enum HandOff {
    /// The socket and every byte went.
    Done,
    /// The socket went; the rest of the bytes wait in the link's queue.
    Pending,
}

impl Backend {
    pub fn new(link: BackendLink, splice_allowed: bool, max_subscriptions: usize) -> Backend {
        Backend {
            link,
            done: false,
            registered: false,
            splice_allowed,
            pipe: None,
            commands: Vec::new(),
            max_subscriptions,
        }
    }

    /// The link socket's descriptor (for the poller).
    pub fn link_fd(&self) -> RawFd {
        self.link.sock.as_raw_fd()
    }

    /// Queues bytes for the backend before the WebSocket opens (the framed HELLO).
    pub fn queue_bytes(&mut self, pools: &mut Pools, bytes: &[u8]) {
        self.link.out.push_bytes(pools, bytes);
    }

    /// Direct mode: passes the client's socket `client` with `data` (HELLO and bytes read past
    /// the request); what one `sendmsg` does not take is queued and flushed like any write.
    pub fn hand_off(&mut self, pools: &mut Pools, client: RawFd, data: &[u8]) -> io::Result<HandOff> {
        let sent = crate::sys::fdpass::send_fd(&self.link.sock, client, data)?;
        if sent == data.len() {
            return Ok(HandOff::Done);
        }
        self.link.out.push_bytes(pools, &data[sent..]);
        self.link.writable = false;
        Ok(HandOff::Pending)
    }

    /// Bulk data from a raw binary backend: into the pipe, a frame header into the queue.
    /// `None` when this read should go through user space instead.
    fn splice_from_backend(&mut self, cx: &mut AppCtx<'_>) -> Option<Pumped> {
        if !(self.splice_allowed && self.link.bulk) {
            return None;
        }
        let available = match readable_bytes(&self.link.sock) {
            Ok(n) if n >= SPLICE_MIN => n,
            _ => {
                self.link.bulk = false;
                return None;
            }
        };
        if self.pipe.is_none() {
            match Pipe::new() {
                Ok(p) => {
                    log::debug!("{} splicing backend data through a pipe of {} bytes", cx.peer(), p.capacity);
                    self.pipe = Some(p);
                }
                Err(e) => {
                    log::warn!("{}: no pipe for splice ({e}); copying instead", cx.peer());
                    self.splice_allowed = false;
                    return None;
                }
            }
        }
        let pipe = self.pipe.as_mut()?;
        if pipe.held == pipe.capacity {
            return None;
        }
        match IoStep::of(pipe.fill_from(&self.link.sock, available)) {
            IoStep::End | IoStep::Retry => None,
            IoStep::Done(n) => {
                cx.out.push_piped_frame(cx.pools, n);
                Some(Pumped::Bytes(n))
            }
            IoStep::WouldBlock => {
                self.link.readable = false;
                Some(Pumped::WouldBlock)
            }
            IoStep::Failed(e) => Some(Pumped::Ended(BackendEnd::Failed(BackendError::Splice(e)))),
        }
    }

    fn ended(&mut self, cx: &mut AppCtx<'_>, end: BackendEnd) {
        self.done = true;
        match end {
            BackendEnd::Closed => cx.close(AppClose::Close(close::NORMAL, "backend closed".into())),
            BackendEnd::CloseRecord(code, reason) => {
                // A code a peer may not send becomes 1011 rather than a protocol error.
                let code = if close::is_valid_code(code) { code } else { close::INTERNAL_ERROR };
                cx.close(AppClose::Close(code, reason.into()));
            }
            BackendEnd::Failed(why) => cx.close(AppClose::Failed(why.to_string())),
        }
    }

    fn run_commands(&mut self, cx: &mut AppCtx<'_>) {
        for command in self.commands.drain(..) {
            match command {
                Command::Subscribe(topic) => {
                    if cx.subscribe(&topic, self.max_subscriptions).is_err() {
                        log::debug!("{} backend SUBSCRIBE {topic:?}: over max_subscriptions", cx.peer());
                    }
                }
                Command::Unsubscribe(topic) => {
                    cx.unsubscribe(&topic);
                }
                Command::Publish { topic, frame, exclude_client, exclude_ids } => {
                    cx.publish_excluding(Arc::from(topic), frame, exclude_client, exclude_ids);
                }
                Command::Send { id, frame } => cx.send_to(id, frame),
                Command::Request(json) => {
                    if let Some(answer) = super::pubsub::backend_request(cx, &json, self.max_subscriptions) {
                        self.link.send_answer(cx.pools, &answer);
                    }
                }
            }
        }
    }
}

impl App for Backend {
    fn queues_frames(&self) -> bool {
        true
    }

    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        self.registered = true;
        cx.watch(self.link.sock.as_raw_fd(), mio::Interest::READABLE, true);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        if !self.done {
            self.link.send_message(cx.pools, kind, payload.as_slice());
            if self.link.out.len() >= cx.backpressure_high {
                cx.hold_input();
            }
        }
    }

    fn on_close(&mut self, cx: &mut AppCtx<'_>, code: Option<u16>, reason: &str, protocol_error: bool) -> Hold {
        if self.done {
            return Hold::No;
        }
        self.link.send_close(cx.pools, code, reason);
        // On a framed route the backend hears of a protocol error first, and replies to the
        // client's earlier messages still reach it before its close frame.
        if protocol_error && self.link.is_framed() {
            return Hold::UntilAppCloses;
        }
        Hold::No
    }

    fn on_ready(&mut self, readable: bool, writable: bool) {
        self.link.readable |= readable;
        self.link.writable |= writable;
    }

    fn has_own_io(&self) -> bool {
        true
    }

    fn on_io(&mut self, cx: &mut AppCtx<'_>, may_read: bool) -> AppIo {
        if self.done {
            return AppIo::Idle;
        }
        if let Err(e) = self.link.flush(cx.pools) {
            log::warn!("{}: {e}", cx.peer());
            self.ended(cx, BackendEnd::Failed(e));
            return AppIo::Idle;
        }
        if self.registered {
            if let Some(interest) = self.link.interest_change() {
                cx.watch(self.link.sock.as_raw_fd(), interest, false);
            }
        }
        if !(may_read && self.link.readable) {
            return AppIo::Idle;
        }
        let queued_before = cx.out.len();
        let pumped = match self.splice_from_backend(cx) {
            Some(p) => p,
            None => self.link.pump(cx.pools, cx.out, &mut self.commands),
        };
        let queued = (cx.out.len() - queued_before) as u64;
        self.run_commands(cx);
        match pumped {
            Pumped::Bytes(n) => {
                cx.traffic.bytes_out += queued;
                cx.traffic.msgs_out += u64::from(queued > 0);
                AppIo::Read(n.max(1))
            }
            Pumped::WouldBlock => AppIo::Idle,
            Pumped::Ended(end) => {
                cx.traffic.bytes_out += queued;
                if let BackendEnd::Failed(why) = &end {
                    log::warn!("{}: {why}", cx.peer());
                }
                self.ended(cx, end);
                AppIo::Idle
            }
        }
    }

    fn on_answer(&mut self, cx: &mut AppCtx<'_>, body: &[u8]) -> bool {
        // Only a framed backend makes requests; a gone one's answers go nowhere.
        if self.link.is_framed() && !self.done {
            self.link.send_answer(cx.pools, body);
        }
        self.link.is_framed()
    }

    fn accepts_input(&self, high: usize) -> bool {
        self.done || self.link.out.len() < high
    }

    fn has_pending_output(&self) -> bool {
        !self.done && !self.link.out.is_empty()
    }

    fn pipe(&mut self) -> Option<&mut Pipe> {
        self.pipe.as_mut()
    }

    fn release(&mut self, pools: &mut Pools) {
        self.link.release(pools);
    }
}
