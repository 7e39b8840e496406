//! Plain TCP and TLS behind one interface: plaintext in, plaintext out.
//!
//! TLS is rustls' unbuffered API driven by hand from the event loop, so the buffers are ours
//! and an idle TLS connection holds none: TLS bytes are read into a pooled read buffer, which
//! goes back to the pool once its records are processed (a partial record from a peer that
//! paused keeps only its bytes), and encrypted bytes wait in `outgoing` only while the socket
//! does not take them. (rustls' buffered
//! `ServerConnection` keeps a 4 KiB read buffer on every connection for its whole life.)
//! Nothing here blocks; `WouldBlock` means "wait for the next readiness event".

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic};
use rustls::ServerConfig;

use crate::buffer::{OutQueue, Pools, READ_BUF_SIZE};
use crate::io_step::{would_block, IoStep};

pub mod memory;

/// Most plaintext encrypted ahead of what the socket has taken, on top of the connection's
/// output queue.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;
/// Bytes one record adds to its plaintext on the wire (header, content type, tag), with room.
const RECORD_OVERHEAD: usize = 64;
/// Most plaintext in one record.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// A UNIX-domain stream (the admin listener's `unix:` socket).
    Local(mio::net::UnixStream),
    /// No socket (the connection fuzz target, tests): see [`memory`].
    Memory(Box<memory::MemoryStream>),
}

pub struct TlsStream {
    sock: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed.
    incoming: TlsInput,
    /// Encrypted bytes (records, alerts) not yet written, from `outgoing_sent` on. Empty,
    /// with no allocation, once the socket took everything.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// Plaintext decrypted and not yet taken: a record larger than the reader's room, or
    /// one decrypted while writing. Usually empty.
    plaintext: Vec<u8>,
    /// The first bytes have been checked to look like TLS.
    checked_first_byte: bool,
    /// They did not: why (read by the connection after the read that failed).
    not_tls: Option<NotTls>,
    close_notify_sent: bool,
    /// The peer sent close_notify: the end of the stream, once `plaintext` is taken.
    peer_closed: bool,
    /// TLS abandoned: the client spoke plain HTTP and gets a plain answer on the raw socket.
    plain: bool,
    /// The last socket read returned less than asked: the socket is drained, and (edge-
    /// triggered epoll reporting every later arrival) the next read attempt can be skipped.
    drained: bool,
}

/// Why a TLS read failed in a way the connection handles specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTls {
    /// The client spoke plain HTTP to a TLS port.
    PlainHttp,
    /// The first byte is not a TLS handshake record.
    Garbage,
}

impl std::fmt::Display for NotTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotTls::PlainHttp => f.write_str("plain HTTP on a TLS port"),
            NotTls::Garbage => f.write_str("not a TLS handshake"),
        }
    }
}

impl std::error::Error for NotTls {}

impl Transport {
    pub fn tls(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream {
            sock,
            conn,
            incoming: TlsInput::default(),
            outgoing: Vec::new(),
            outgoing_sent: 0,
            plaintext: Vec::new(),
            checked_first_byte: false,
            not_tls: None,
            close_notify_sent: false,
            peer_closed: false,
            plain: false,
            drained: false,
        })))
    }

    /// The socket, for the poller (`None`: there is none).
    pub fn source_mut(&mut self) -> Option<&mut dyn mio::event::Source> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(t) => Some(&mut t.sock),
            Transport::Local(s) => Some(s),
            Transport::Memory(_) => None,
        }
    }

    /// The socket's descriptor (`sendfile`, splice, the direct hand-off).
    pub fn fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Transport::Plain(s) => Ok(s.as_fd()),
            Transport::Tls(t) => Ok(t.sock.as_fd()),
            Transport::Local(s) => Ok(s.as_fd()),
            Transport::Memory(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "no descriptor")),
        }
    }

    /// The in-memory stream, if this is one.
    pub fn memory_mut(&mut self) -> Option<&mut memory::MemoryStream> {
        match self {
            Transport::Memory(m) => Some(m),
            _ => None,
        }
    }

    /// Why the last read failed, when it failed because the client does not speak TLS; said
    /// once, so a later failure of the same socket is an I/O error again.
    pub fn take_not_tls(&mut self) -> Option<NotTls> {
        match self {
            Transport::Tls(t) => t.not_tls.take(),
            _ => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// A TLS handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Local(_) | Transport::Memory(_) => false,
            Transport::Tls(t) => !t.plain && t.conn.is_handshaking(),
        }
    }

    /// A TLS connection whose handshake never finished (still under way, or abandoned for a
    /// client that spoke plain HTTP).
    pub fn tls_failed(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Local(_) | Transport::Memory(_) => false,
            Transport::Tls(t) => t.plain || t.conn.is_handshaking(),
        }
    }

    /// TLS records wait to be written.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Local(_) | Transport::Memory(_) => false,
            Transport::Tls(t) => !t.plain && t.outgoing_sent < t.outgoing.len(),
        }
    }

    /// Reads plaintext. `Ok(0)` is the end of the stream (FIN, or TLS close_notify).
    /// A TLS error is `InvalidData`; so is a client that does not speak TLS at all, and
    /// then [`Transport::take_not_tls`] says which way.
    pub fn read(&mut self, buf: &mut [u8], pools: &mut Pools) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Local(s) => s.read(buf),
            Transport::Memory(m) => m.read(buf),
            Transport::Tls(t) => {
                let result = t.read(buf, pools);
                // `WouldBlock` is a drained socket too (the `drained` flag is spent by then):
                // a partial record from a peer that paused keeps only its bytes, whichever
                // read saw the pause.
                let drained = t.drained || result.as_ref().is_err_and(would_block);
                t.incoming.settle(pools, drained);
                result
            }
        }
    }

    /// Writes as much of `out` as the socket takes (for TLS: encrypts it, then writes the
    /// records). Returns plaintext bytes taken from `out`; `WouldBlock` when the socket is
    /// full.
    pub fn write_from(&mut self, out: &mut OutQueue, pools: &mut Pools) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => out.write_to(s, pools),
            Transport::Local(s) => out.write_to(s, pools),
            Transport::Memory(m) => out.write_to(&mut **m, pools),
            Transport::Tls(t) if t.plain => out.write_to(&mut t.sock, pools),
            Transport::Tls(t) => t.write_from(out, pools),
        }
    }

    /// Writes pending TLS records (handshake messages, alerts).
    pub fn flush_records(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) | Transport::Local(_) | Transport::Memory(_) => Ok(()),
            Transport::Tls(t) => t.flush_records(),
        }
    }

    /// Queues a TLS close_notify (once); a no-op on plain TCP.
    pub fn send_close_notify(&mut self) {
        if let Transport::Tls(t) = self {
            if !t.close_notify_sent && !t.plain {
                t.close_notify_sent = true;
                t.queue_close_notify();
            }
        }
    }

    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(Shutdown::Write),
            Transport::Tls(t) => t.sock.shutdown(Shutdown::Write),
            Transport::Local(s) => s.shutdown(Shutdown::Write),
            Transport::Memory(m) => {
                m.shutdown_write();
                Ok(())
            }
        }
    }

    /// Abandons TLS on this socket, to answer a client that spoke plain HTTP in plain HTTP.
    pub fn fall_back_to_plain(&mut self) {
        if let Transport::Tls(t) = self {
            t.plain = true;
        }
    }
}

/// TLS bytes read and not yet processed, in a pooled read buffer while a burst lasts (no
/// allocation, no zeroing per read), and otherwise, when a partial record waits, in an
/// allocation of its size; nothing at all between records.
#[derive(Default)]
struct TlsInput {
    buf: Option<Box<[u8]>>,
    len: usize,
}

impl TlsInput {
    fn filled(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => &mut b[..self.len],
            None => &mut [],
        }
    }

    /// Drops `n` processed bytes from the front (rustls' `discard`: always before it is
    /// called again, on the same bytes, whose offsets it tracks).
    fn discard(&mut self, n: usize) {
        let n = n.min(self.len);
        if let Some(b) = &mut self.buf {
            b.copy_within(n..self.len, 0);
        }
        self.len -= n;
    }

    /// One socket read after what is held. Returns the bytes read (0: end of stream).
    fn pull(&mut self, sock: &mut TcpStream, pools: &mut Pools) -> io::Result<usize> {
        let mut buf = match self.buf.take() {
            Some(pooled) if pooled.len() == READ_BUF_SIZE => pooled,
            kept => {
                let mut pooled = pools.take_read();
                if let Some(kept) = kept {
                    pooled[..self.len].copy_from_slice(&kept[..self.len]);
                }
                pooled
            }
        };
        let room = &mut buf[self.len..];
        if room.is_empty() {
            // Only a handshake message joined across records can fill a read buffer.
            self.buf = Some(buf);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: handshake message too large"));
        }
        let result = sock.read(room);
        self.len += *result.as_ref().unwrap_or(&0);
        self.buf = Some(buf);
        result
    }

    /// Between wake-ups: an empty buffer goes back to the pool; a partial record from a
    /// peer that paused (`drained`) keeps only its bytes.
    fn settle(&mut self, pools: &mut Pools, drained: bool) {
        let pooled = self.buf.as_ref().is_some_and(|b| b.len() == READ_BUF_SIZE);
        if self.len == 0 {
            if let Some(b) = self.buf.take() {
                pools.put_read(b);
            }
        } else if pooled && drained {
            if let Some(b) = self.buf.take() {
                self.buf = Some(b[..self.len].into());
                pools.put_read(b);
            }
        }
    }
}

/// What one round of record processing reached.
enum Reached {
    /// rustls needs more bytes from the peer.
    NeedInput,
    /// The handshake is done and nothing is pending: application data may be written.
    Open,
    /// The session is over (close_notify both ways).
    Closed,
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8], pools: &mut Pools) -> io::Result<usize> {
        if self.plain {
            return self.sock.read(buf);
        }
        if !self.checked_first_byte {
            let mut first = [0u8; 1];
            match self.sock.peek(&mut first) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.checked_first_byte = true;
                    // 0x16: a TLS handshake record, the only way a TLS client can begin.
                    if first[0] != 0x16 {
                        let why = if first[0].is_ascii_uppercase() { NotTls::PlainHttp } else { NotTls::Garbage };
                        self.not_tls = Some(why);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            if !self.plaintext.is_empty() {
                return Ok(self.take_plaintext(buf));
            }
            let n = self.process(Some(&mut *buf)).map(|(n, _)| n)?;
            if n > 0 || !self.plaintext.is_empty() {
                return Ok(n + self.take_plaintext(&mut buf[n..]));
            }
            if self.peer_closed {
                return Ok(0);
            }
            // Nothing decrypted: pull TLS records off the socket, unless the last pull already
            // drained it (one syscall fewer per message; a later arrival is a new event).
            if self.drained {
                self.drained = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.pull(pools)? == 0 {
                // The peer closed the TCP stream (with or without close_notify): the end.
                return Ok(0);
            }
        }
    }

    /// Moves decrypted plaintext waiting in `plaintext` to `buf`.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> usize {
        let n = self.plaintext.len().min(buf.len());
        buf[..n].copy_from_slice(&self.plaintext[..n]);
        self.plaintext.drain(..n);
        if self.plaintext.is_empty() {
            self.plaintext = Vec::new();
        }
        n
    }

    /// One socket read into `incoming`. Returns the bytes read (0: end of stream).
    fn pull(&mut self, pools: &mut Pools) -> io::Result<usize> {
        let room = READ_BUF_SIZE - self.incoming.len;
        let result = self.incoming.pull(&mut self.sock, pools);
        // Only a read that returned data can say the socket is drained.
        self.drained = matches!(result, Ok(n) if n < room);
        result
    }

    /// Runs rustls over the records in `incoming` until it needs more input or is open for
    /// writing: handshake messages (and alerts) are encoded into `outgoing`, and application
    /// data is decrypted into `buf` (what does not fit, or all of it when `buf` is `None`,
    /// into `plaintext`). Returns the bytes put into `buf` and where processing stopped.
    fn process(&mut self, mut buf: Option<&mut [u8]>) -> io::Result<(usize, Reached)> {
        let mut filled = 0;
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(self.incoming.filled());
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.discard_incoming(discard);
                    self.send_pending_alert();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                }
            };
            let reached = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record =
                            record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
                        discard += record.discard;
                        let payload = record.payload;
                        let room = buf.as_deref().map_or(0, |b| b.len() - filled);
                        let now = payload.len().min(room);
                        if let Some(b) = buf.as_deref_mut() {
                            b[filled..filled + now].copy_from_slice(&payload[..now]);
                        }
                        filled += now;
                        self.plaintext.extend_from_slice(&payload[now..]);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    let mut need = 512;
                    loop {
                        let at = self.outgoing.len();
                        self.outgoing.resize(at + need, 0);
                        match data.encode(&mut self.outgoing[at..]) {
                            Ok(n) => {
                                self.outgoing.truncate(at + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(s)) => {
                                self.outgoing.truncate(at);
                                need = s.required_size;
                            }
                            Err(e) => {
                                self.outgoing.truncate(at);
                                return Err(io::Error::other(format!("TLS: {e}")));
                            }
                        }
                    }
                    None
                }
                // What was encoded goes out with the next flush, before anything encrypted later.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Reached::Closed)
                }
                ConnectionState::WriteTraffic(_) => Some(Reached::Open),
                // Early data is not enabled; anything else rustls may add needs input.
                _ => Some(Reached::NeedInput),
            };
            self.discard_incoming(discard);
            if let Some(reached) = reached {
                return Ok((filled, reached));
            }
        }
    }

    /// Drops `n` processed bytes from the front of `incoming` (rustls' `discard`: always
    /// before it is called again, and always on the same buffer, whose offsets it tracks).
    fn discard_incoming(&mut self, n: usize) {
        self.incoming.discard(n);
    }

    /// After a TLS error: tell the peer why (the alert rustls queued), best effort.
    fn send_pending_alert(&mut self) {
        for _ in 0..4 {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(self.incoming.filled());
            let more = match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let mut alert = [0u8; 64];
                    if let Ok(n) = data.encode(&mut alert) {
                        self.outgoing.extend_from_slice(&alert[..n]);
                    }
                    true
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    true
                }
                _ => false,
            };
            self.discard_incoming(discard);
            if !more {
                break;
            }
        }
        let _ = self.flush_records();
    }

    /// Encrypts queued plaintext (up to `TLS_BUFFER_LIMIT` ahead of the socket) and writes
    /// it. Returns the plaintext bytes taken from `out`.
    fn write_from(&mut self, out: &mut OutQueue, pools: &mut Pools) -> io::Result<usize> {
        self.flush_records()?;
        if self.outgoing_sent < self.outgoing.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        // Records already read may need handling first (rustls answers them before it lets
        // us write); their plaintext waits in `plaintext` for the next read.
        if let (_, Reached::Open) = self.process(None)? {
            while taken < TLS_BUFFER_LIMIT && !out.is_empty() {
                let UnbufferedStatus { discard, state } = self.conn.process_tls_records(self.incoming.filled());
                let Ok(ConnectionState::WriteTraffic(mut traffic)) = state else {
                    self.discard_incoming(discard);
                    break;
                };
                let mut sealer =
                    Sealer { traffic: &mut traffic, outgoing: &mut self.outgoing, room: TLS_BUFFER_LIMIT - taken };
                let sealed = out.write_to(&mut sealer, pools);
                self.discard_incoming(discard);
                let n = sealed?;
                if n == 0 {
                    break;
                }
                taken += n;
            }
        }
        self.incoming.settle(pools, self.drained);
        match self.flush_records() {
            Err(e) if would_block(&e) && taken > 0 => Ok(taken),
            Err(e) => Err(e),
            Ok(()) => Ok(taken),
        }
    }

    /// Queues a close_notify alert, if the handshake got far enough to send one.
    fn queue_close_notify(&mut self) {
        if !matches!(self.process(None), Ok((_, Reached::Open))) {
            return;
        }
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(self.incoming.filled());
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
            let mut alert = [0u8; 64];
            if let Ok(n) = traffic.queue_close_notify(&mut alert) {
                self.outgoing.extend_from_slice(&alert[..n]);
            }
        }
        self.discard_incoming(discard);
    }

    fn flush_records(&mut self) -> io::Result<()> {
        while !self.plain && self.outgoing_sent < self.outgoing.len() {
            match IoStep::of(self.sock.write(&self.outgoing[self.outgoing_sent..])) {
                IoStep::End => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped accepting data")),
                IoStep::Done(n) => self.outgoing_sent += n,
                IoStep::Retry => {}
                IoStep::WouldBlock => return Err(io::ErrorKind::WouldBlock.into()),
                IoStep::Failed(e) => return Err(e),
            }
        }
        // All written: an idle connection keeps no buffer.
        self.outgoing = Vec::new();
        self.outgoing_sent = 0;
        Ok(())
    }
}

/// Encrypts what the output queue writes into records appended to `outgoing`: small queued
/// frames are gathered into one record, not a record each.
struct Sealer<'a, 'c> {
    traffic: &'a mut WriteTraffic<'c, ServerConnectionData>,
    outgoing: &'a mut Vec<u8>,
    /// Plaintext bytes this sealer may still take.
    room: usize,
}

impl Sealer<'_, '_> {
    fn seal(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let mut need = plaintext.len() + plaintext.len().div_ceil(MAX_RECORD_PLAINTEXT).max(1) * RECORD_OVERHEAD;
        loop {
            let at = self.outgoing.len();
            self.outgoing.resize(at + need, 0);
            match self.traffic.encrypt(plaintext, &mut self.outgoing[at..]) {
                Ok(n) => {
                    self.outgoing.truncate(at + n);
                    return Ok(());
                }
                Err(EncryptError::InsufficientSize(s)) if s.required_size > need => {
                    self.outgoing.truncate(at);
                    need = s.required_size;
                }
                Err(e) => {
                    self.outgoing.truncate(at);
                    return Err(io::Error::other(format!("TLS: {e}")));
                }
            }
        }
    }
}

impl Write for Sealer<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.room);
        self.seal(&buf[..n])?;
        self.room -= n;
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Gather up to a record's worth of small slices, so 100 small frames are one record.
        let mut gathered = Vec::new();
        let mut taken = 0;
        for b in bufs {
            if self.room == 0 {
                break;
            }
            if gathered.len() + b.len() > MAX_RECORD_PLAINTEXT && !gathered.is_empty() {
                self.seal(&gathered)?;
                gathered.clear();
            }
            let n = b.len().min(self.room);
            if n >= MAX_RECORD_PLAINTEXT {
                self.seal(&b[..n])?;
            } else {
                gathered.extend_from_slice(&b[..n]);
            }
            self.room -= n;
            taken += n;
        }
        if !gathered.is_empty() {
            self.seal(&gathered)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
