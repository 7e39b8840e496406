//! One client's UNIX-socket connection to its backend: the socket, its readiness, and the
//! queue of bytes for it. What the bytes mean is [`super::codec`]'s business.
//!
//! Client → backend: [`BackendLink::send_message`] queues a message in the route's framing.
//! Backend → client: [`BackendLink::pump`] reads once and runs the bytes through the codec
//! onto the client's output queue. Each side stops being read while the other side's queue
//! is over the route's backpressure limit, so memory stays bounded both ways.

use std::fmt;
use std::io::{self, Read};

use mio::net::UnixStream;

use super::codec::{CodecError, Command, Ended, Reassembler};
use super::framed::{self, RecordType};
use super::Framing;
use crate::buffer::{OutQueue, Pools};
use crate::io_step::IoStep;
use crate::ws::message::MessageKind;

/// How a backend failed (the client is closed with 1011; this goes to the log).
#[derive(Debug)]
pub enum BackendError {
    /// Its bytes broke the framing.
    Codec(CodecError),
    Read(io::Error),
    Write(io::Error),
    Splice(io::Error),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Codec(e) => write!(f, "{e}"),
            BackendError::Read(e) => write!(f, "backend read failed: {e}"),
            BackendError::Write(e) => write!(f, "backend write failed: {e}"),
            BackendError::Splice(e) => write!(f, "backend splice failed: {e}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// How the backend ended, as the client's close frame will say.
#[derive(Debug)]
pub enum BackendEnd {
    /// The backend closed its end (raw / lines EOF, or EOF after CLOSE): close 1000.
    Closed,
    /// A framed CLOSE record: its code and reason.
    CloseRecord(u16, String),
    /// Died or broke the protocol: close 1011.
    Failed(BackendError),
}

/// What one pump call did.
#[derive(Debug)]
pub enum Pumped {
    /// Read this many bytes; call again while readable.
    Bytes(usize),
    /// The socket is drained.
    WouldBlock,
    Ended(BackendEnd),
}

pub struct BackendLink {
    pub sock: UnixStream,
    framing: Framing,
    /// Bytes waiting to be written to the backend.
    pub out: OutQueue,
    pub readable: bool,
    pub writable: bool,
    /// Whether the poller currently watches this socket for writability. A UNIX socket's
    /// peer wakes every writability watcher each time it reads, so we watch only while a
    /// write is blocked.
    watching_writable: bool,
    codec: Reassembler,
    /// The last read filled most of the buffer: bulk data, worth trying splice next.
    pub bulk: bool,
}

impl BackendLink {
    /// A link on a just-connected socket (a UNIX connect completes at once: writable).
    pub fn new(sock: UnixStream, framing: Framing, kind: MessageKind, max_message: usize) -> BackendLink {
        BackendLink {
            sock,
            framing,
            out: OutQueue::default(),
            readable: false,
            writable: true,
            watching_writable: false,
            codec: Reassembler::new(framing, kind, max_message),
            bulk: false,
        }
    }

    /// Whether the backend speaks records (and so can be told why the client is being closed).
    pub fn is_framed(&self) -> bool {
        self.framing == Framing::Framed
    }

    /// Queues one client message for the backend.
    pub fn send_message(&mut self, pools: &mut Pools, kind: MessageKind, payload: &[u8]) {
        match self.framing {
            Framing::Raw | Framing::Direct => self.out.push_bytes(pools, payload),
            Framing::Lines => self.out.push_parts(pools, &[payload, b"\n"]),
            Framing::Framed => {
                let t = if kind == MessageKind::Text { RecordType::Text } else { RecordType::Binary };
                self.out.push_parts(pools, &[&framed::encode_header(t, true, payload.len()), payload]);
            }
        }
    }

    /// An ANSWER record to a framed backend's REQUEST.
    pub fn send_answer(&mut self, pools: &mut Pools, json: &[u8]) {
        debug_assert_eq!(self.framing, Framing::Framed);
        self.out.push_parts(pools, &[&framed::encode_header(RecordType::Answer, true, json.len()), json]);
    }

    /// Tells a framed backend the client closed (code and reason); nothing for other framings,
    /// whose backends see EOF when the link is dropped.
    pub fn send_close(&mut self, pools: &mut Pools, code: Option<u16>, reason: &str) {
        if self.framing != Framing::Framed {
            return;
        }
        let (code_bytes, reason) = match code {
            Some(code) => (code.to_be_bytes(), reason.as_bytes()),
            None => ([0; 2], &b""[..]),
        };
        let code_bytes = if code.is_some() { &code_bytes[..] } else { &[][..] };
        let header = framed::encode_header(RecordType::Close, true, code_bytes.len() + reason.len());
        self.out.push_parts(pools, &[&header, code_bytes, reason]);
    }

    /// Writes queued bytes to the backend until done or the socket is full.
    pub fn flush(&mut self, pools: &mut Pools) -> Result<(), BackendError> {
        while self.writable && !self.out.is_empty() {
            match IoStep::of(self.out.write_to(&mut self.sock, pools)) {
                IoStep::End => return Err(BackendError::Write(io::ErrorKind::WriteZero.into())),
                IoStep::Done(_) | IoStep::Retry => {}
                IoStep::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                IoStep::Failed(e) => return Err(BackendError::Write(e)),
            }
        }
        Ok(())
    }

    /// Reads once from the backend and turns what arrived into frames on `client` and
    /// pub/sub commands.
    pub fn pump(&mut self, pools: &mut Pools, client: &mut OutQueue, commands: &mut Vec<Command>) -> Pumped {
        let mut buf = pools.take_read();
        let result = self.sock.read(&mut buf);
        let pumped = match IoStep::of(result) {
            IoStep::End => {
                self.readable = false;
                Pumped::Ended(match self.codec.end_of_stream() {
                    Ok(()) => BackendEnd::Closed,
                    Err(e) => BackendEnd::Failed(BackendError::Codec(e)),
                })
            }
            IoStep::Done(n) => {
                self.bulk = n >= crate::sys::splice::SPLICE_MIN;
                if n < buf.len() {
                    // Short read: drained (edge-triggered; a later arrival is a new event).
                    self.readable = false;
                }
                match self.codec.feed(&buf[..n], pools, client, commands) {
                    Ok(None) => Pumped::Bytes(n),
                    Ok(Some(Ended::CloseRecord(code, reason))) => Pumped::Ended(BackendEnd::CloseRecord(code, reason)),
                    Err(e) => Pumped::Ended(BackendEnd::Failed(BackendError::Codec(e))),
                }
            }
            IoStep::WouldBlock => {
                self.readable = false;
                Pumped::WouldBlock
            }
            IoStep::Retry => Pumped::Bytes(0),
            IoStep::Failed(e) => {
                self.readable = false;
                Pumped::Ended(BackendEnd::Failed(BackendError::Read(e)))
            }
        };
        // Nothing is ever left in the buffer between reads: give it back.
        pools.put_read(buf);
        pumped
    }

    /// The interest the poller should have now, if it differs from what it has.
    pub fn interest_change(&mut self) -> Option<mio::Interest> {
        let want_writable = !self.out.is_empty();
        if want_writable == self.watching_writable {
            return None;
        }
        self.watching_writable = want_writable;
        if want_writable {
            // Registered without writability: whether the socket has room is unknown until
            // the poller says so.
            self.writable = false;
            Some(mio::Interest::READABLE | mio::Interest::WRITABLE)
        } else {
            // Unwatched, the socket is assumed writable; a blocked write re-arms the watch.
            self.writable = true;
            Some(mio::Interest::READABLE)
        }
    }

    /// Gives back pooled buffers (the link is about to be dropped).
    pub fn release(&mut self, pools: &mut Pools) {
        self.out.release(pools);
    }
}
