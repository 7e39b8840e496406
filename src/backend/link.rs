//! One client's UNIX-socket connection to its backend, and the framing on it.
//!
//! Client → backend: [`BackendLink::send_message`] queues a message in the route's framing.
//! Backend → client: [`BackendLink::pump`] reads what the backend wrote and queues WebSocket
//! frames on the client's output queue. Each side stops being read while the other side's
//! queue is over the route's backpressure limit, so memory stays bounded both ways.

use std::io::{self, Read};

use mio::net::UnixStream;

use super::framed::{self, RecordHeader, RecordType};
use super::Framing;
use crate::buffer::{OutQueue, Pools};
use crate::ws::frame::Opcode;
use crate::ws::message::MessageKind;
use crate::ws::utf8::Utf8Validator;

/// How the backend ended, as the client's close frame will say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEnd {
    /// The backend closed its end (raw / lines EOF): close 1000.
    Closed,
    /// A framed CLOSE record: its code and reason.
    CloseRecord(u16, String),
    /// Died (error, EOF without CLOSE on framed) or broke the protocol: close 1011.
    Failed(String),
}

/// What one pump call did.
#[derive(Debug, PartialEq, Eq)]
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
    /// raw / lines: what the backend's bytes become.
    kind: MessageKind,
    max_message: usize,
    /// Bytes waiting to be written to the backend.
    pub out: OutQueue,
    pub readable: bool,
    pub writable: bool,
    pub registered: bool,
    /// Whether the poller currently watches this socket for writability. A UNIX socket's
    /// peer wakes every writability watcher each time it reads, so we watch only while a
    /// write is blocked.
    pub watching_writable: bool,
    rbuf: Option<Box<[u8]>>,
    /// raw text: an incomplete UTF-8 sequence carried to the next read.
    utf8_tail: ([u8; 4], usize),
    /// lines: the line being collected, or framed: the record payload being collected.
    partial: Vec<u8>,
    /// framed: the record whose payload is being collected.
    record: Option<RecordHeader>,
    /// framed: the message in progress (between its first record and its FIN record).
    message: Option<MessageKind>,
    message_len: usize,
    utf8: Utf8Validator,
    /// framed: the backend sent CLOSE.
    close_received: bool,
    /// The last read filled most of the buffer: bulk data, worth trying splice next.
    pub bulk: bool,
}

impl BackendLink {
    /// Whether the backend speaks records (and so can be told why the client is being closed).
    pub fn is_framed(&self) -> bool {
        self.framing == Framing::Framed
    }

    pub fn new(sock: UnixStream, framing: Framing, kind: MessageKind, max_message: usize) -> BackendLink {
        BackendLink {
            sock,
            framing,
            kind,
            max_message,
            out: OutQueue::default(),
            readable: false,
            writable: false,
            registered: false,
            watching_writable: false,
            rbuf: None,
            utf8_tail: ([0; 4], 0),
            partial: Vec::new(),
            record: None,
            message: None,
            message_len: 0,
            utf8: Utf8Validator::new(),
            close_received: false,
            bulk: false,
        }
    }

    /// Queues one client message for the backend.
    pub fn send_message(&mut self, pools: &mut Pools, kind: MessageKind, payload: &[u8]) {
        match self.framing {
            Framing::Raw | Framing::Direct => self.out.push_bytes(pools, payload),
            Framing::Lines => {
                self.out.push_bytes(pools, payload);
                self.out.push_bytes(pools, b"\n");
            }
            Framing::Framed => {
                let t = if kind == MessageKind::Text { RecordType::Text } else { RecordType::Binary };
                self.out.push_bytes(pools, &framed::encode_header(t, true, payload.len()));
                self.out.push_bytes(pools, payload);
            }
        }
    }

    /// Tells a framed backend the client closed (code and reason); nothing for other framings,
    /// whose backends see EOF when the link is dropped.
    pub fn send_close(&mut self, pools: &mut Pools, code: Option<u16>, reason: &str) {
        if self.framing != Framing::Framed {
            return;
        }
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
        }
        self.out.push_bytes(pools, &framed::encode_header(RecordType::Close, true, payload.len()));
        self.out.push_bytes(pools, &payload);
    }

    /// Writes queued bytes to the backend until done or the socket is full.
    pub fn flush(&mut self, pools: &mut Pools) -> io::Result<()> {
        while self.writable && !self.out.is_empty() {
            match self.out.write_to(&mut self.sock, pools) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads once from the backend and turns what arrived into frames on `client`.
    pub fn pump(&mut self, pools: &mut Pools, client: &mut OutQueue) -> Pumped {
        let mut buf = self.rbuf.take().unwrap_or_else(|| pools.take_read());
        // Room in front for an incomplete UTF-8 sequence carried over (raw text).
        const FRONT: usize = 4;
        let result = self.sock.read(&mut buf[FRONT..]);
        let pumped = match result {
            Ok(0) => {
                self.readable = false;
                Pumped::Ended(self.end_of_stream())
            }
            Ok(n) => {
                self.bulk = n >= super::splice::SPLICE_MIN;
                if n < buf.len() - FRONT {
                    // Short read: drained (edge-triggered; a later arrival is a new event).
                    self.readable = false;
                }
                match self.deliver(&mut buf, FRONT, n, pools, client) {
                    Ok(None) => Pumped::Bytes(n),
                    Ok(Some(end)) => Pumped::Ended(end),
                    Err(why) => Pumped::Ended(BackendEnd::Failed(why)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Pumped::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Pumped::Bytes(0),
            Err(e) => {
                self.readable = false;
                Pumped::Ended(BackendEnd::Failed(format!("backend read failed: {e}")))
            }
        };
        // Nothing is ever left in the buffer between reads: give it back.
        pools.put_read(buf);
        pumped
    }

    /// Runs the bytes `data` through this framing's backend → client conversion, as if read
    /// from the socket (for the fuzzer; [`BackendLink::pump`] is the real path).
    #[doc(hidden)]
    pub fn feed(
        &mut self,
        pools: &mut Pools,
        client: &mut OutQueue,
        data: &[u8],
    ) -> Result<Option<BackendEnd>, String> {
        const FRONT: usize = 4;
        let mut buf = vec![0u8; FRONT + data.len()];
        buf[FRONT..].copy_from_slice(data);
        self.deliver(&mut buf, FRONT, data.len(), pools, client)
    }

    fn end_of_stream(&self) -> BackendEnd {
        match self.framing {
            Framing::Framed if self.close_received => BackendEnd::Closed,
            Framing::Framed => BackendEnd::Failed("backend closed without a CLOSE record".into()),
            _ if !self.partial.is_empty() || self.utf8_tail.1 > 0 => {
                BackendEnd::Failed("backend closed mid-message".into())
            }
            _ => BackendEnd::Closed,
        }
    }

    fn deliver(
        &mut self,
        buf: &mut [u8],
        front: usize,
        n: usize,
        pools: &mut Pools,
        client: &mut OutQueue,
    ) -> Result<Option<BackendEnd>, String> {
        match self.framing {
            Framing::Raw | Framing::Direct => self.deliver_raw(buf, front, n, pools, client).map(|()| None),
            Framing::Lines => self.deliver_lines(&buf[front..front + n], pools, client).map(|()| None),
            Framing::Framed => self.deliver_framed(&buf[front..front + n], pools, client),
        }
    }

    /// raw: every read becomes one message. Text is cut at a character boundary; the
    /// incomplete tail waits for the next read.
    fn deliver_raw(
        &mut self,
        buf: &mut [u8],
        front: usize,
        n: usize,
        pools: &mut Pools,
        client: &mut OutQueue,
    ) -> Result<(), String> {
        if self.kind == MessageKind::Binary {
            client.push_frame(pools, Opcode::Binary, &buf[front..front + n]);
            return Ok(());
        }
        let (tail, tail_len) = self.utf8_tail;
        let start = front - tail_len;
        buf[start..front].copy_from_slice(&tail[..tail_len]);
        let data = &buf[start..front + n];
        let valid = match crate::ws::utf8::validate(data) {
            Ok(_) => data.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err("backend sent invalid UTF-8 on a text route".into()),
        };
        let rest = &data[valid..];
        self.utf8_tail.0[..rest.len()].copy_from_slice(rest);
        self.utf8_tail.1 = rest.len();
        if valid > 0 {
            client.push_frame(pools, Opcode::Text, &data[..valid]);
        }
        Ok(())
    }

    /// lines: each LF-terminated line (a trailing CR dropped) is one message.
    fn deliver_lines(&mut self, mut data: &[u8], pools: &mut Pools, client: &mut OutQueue) -> Result<(), String> {
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let (head, rest) = data.split_at(pos);
            data = &rest[1..];
            let line: &[u8] = if self.partial.is_empty() {
                head
            } else {
                self.partial.extend_from_slice(head);
                &self.partial
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > self.max_message {
                return Err("backend line over max_message_size".into());
            }
            let opcode = self.kind.opcode();
            if opcode == Opcode::Text && crate::ws::utf8::validate(line).is_err() {
                return Err("backend sent invalid UTF-8 on a text route".into());
            }
            client.push_frame(pools, opcode, line);
            self.partial.clear();
        }
        if self.partial.len() + data.len() > self.max_message {
            return Err("backend line over max_message_size".into());
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// framed: records become frames; fragments stay fragments. A CLOSE record ends the
    /// stream: anything after it is ignored.
    fn deliver_framed(
        &mut self,
        mut data: &[u8],
        pools: &mut Pools,
        client: &mut OutQueue,
    ) -> Result<Option<BackendEnd>, String> {
        while !data.is_empty() {
            let header = match self.record {
                Some(h) => h,
                None => {
                    // Collect at least a header (it may be split across reads).
                    let need = framed::HEADER_LEN - self.partial.len().min(framed::HEADER_LEN);
                    let take = need.min(data.len());
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let Some(h) = framed::parse_header(&self.partial, self.max_message).map_err(|e| e.to_string())?
                    else {
                        return Ok(None);
                    };
                    self.partial.clear();
                    self.record = Some(h);
                    h
                }
            };
            let take = (header.len - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < header.len {
                return Ok(None);
            }
            self.record = None;
            let end = self.finish_record(header, pools, client)?;
            self.partial.clear();
            if self.partial.capacity() > 64 * 1024 {
                self.partial = Vec::new();
            }
            if end.is_some() {
                return Ok(end);
            }
        }
        Ok(None)
    }

    fn finish_record(
        &mut self,
        h: RecordHeader,
        pools: &mut Pools,
        client: &mut OutQueue,
    ) -> Result<Option<BackendEnd>, String> {
        let payload = &self.partial;
        if h.kind == RecordType::Close {
            let close = framed::parse_close(payload).map_err(|e| e.to_string())?;
            self.close_received = true;
            let (code, reason) = close.unwrap_or((crate::ws::close::NORMAL, ""));
            return Ok(Some(BackendEnd::CloseRecord(code, reason.to_string())));
        }
        let kind = if h.kind == RecordType::Text { MessageKind::Text } else { MessageKind::Binary };
        let opcode = match self.message {
            None => kind.opcode(),
            Some(k) if k == kind => Opcode::Continuation,
            Some(_) => return Err("record type changed inside a message".into()),
        };
        self.message_len += payload.len();
        if self.message_len > self.max_message {
            return Err("backend message over max_message_size".into());
        }
        if kind == MessageKind::Text {
            self.utf8.feed(payload).map_err(|_| "backend sent invalid UTF-8 in a TEXT record".to_string())?;
            if h.fin {
                self.utf8.finish().map_err(|_| "backend TEXT message ends mid-character".to_string())?;
            }
        }
        client.push_frame_fin(pools, opcode, h.fin, payload);
        if h.fin {
            self.message = None;
            self.message_len = 0;
        } else {
            self.message = Some(kind);
        }
        Ok(None)
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
        if let Some(buf) = self.rbuf.take() {
            pools.put_read(buf);
        }
        self.out.release(pools);
    }
}
