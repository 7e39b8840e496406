//! Plain TCP and TLS behind one interface: plaintext in, plaintext out.
//!
//! TLS is rustls driven by hand from the event loop: `read_tls → process_new_packets →
//! reader().read()` on the way in, `writer().write_vectored() → write_tls` on the way out (one
//! `writev` carries many records). Nothing here blocks; `WouldBlock` means "wait for the next
//! readiness event".

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::buffer::{OutQueue, Pools};

/// How much plaintext rustls may hold encrypted-but-unsent (its own buffer), on top of the
/// connection's output queue.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
    /// The first bytes have been checked to look like TLS.
    checked_first_byte: bool,
    close_notify_sent: bool,
    /// TLS abandoned: the client spoke plain HTTP and gets a plain answer on the raw socket.
    plain: bool,
    /// The last socket read returned less than asked: the socket is drained, and (edge-
    /// triggered epoll reporting every later arrival) the next read attempt can be skipped.
    drained: bool,
}

/// Passes reads through to the socket, noting whether the last one came back short.
struct ShortReadProbe<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortReadProbe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// Why a TLS read failed in a way the connection handles specially.
#[derive(Debug)]
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
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Transport::Tls(Box::new(TlsStream {
            sock,
            conn,
            checked_first_byte: false,
            close_notify_sent: false,
            plain: false,
            drained: false,
        })))
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// A TLS handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => !t.plain && t.conn.is_handshaking(),
        }
    }

    /// TLS records wait to be written.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => !t.plain && t.conn.wants_write(),
        }
    }

    /// The SNI server name the client asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.conn.server_name(),
        }
    }

    /// Reads plaintext. `Ok(0)` is the end of the stream (FIN, or TLS close_notify).
    /// A TLS error is `InvalidData`; a client that does not speak TLS at all is
    /// `InvalidData` wrapping [`NotTls`].
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Writes as much of `out` as the socket takes (for TLS: encrypts it, then writes the
    /// records). Returns plaintext bytes taken from `out`; `WouldBlock` when the socket is
    /// full.
    pub fn write_from(&mut self, out: &mut OutQueue, pools: &mut Pools) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => out.write_to(s, pools),
            Transport::Tls(t) if t.plain => out.write_to(&mut t.sock, pools),
            Transport::Tls(t) => {
                t.flush_records()?;
                let n = out.write_to(&mut t.conn.writer(), pools)?;
                t.flush_records()?;
                Ok(n)
            }
        }
    }

    /// Writes pending TLS records (handshake messages, alerts).
    pub fn flush_records(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_records(),
        }
    }

    /// Queues a TLS close_notify (once); a no-op on plain TCP.
    pub fn send_close_notify(&mut self) {
        if let Transport::Tls(t) = self {
            if !t.close_notify_sent && !t.plain {
                t.close_notify_sent = true;
                t.conn.send_close_notify();
            }
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown(Shutdown::Write),
            Transport::Tls(t) => t.sock.shutdown(Shutdown::Write),
        }
    }

    /// Abandons TLS on this socket, to answer a client that spoke plain HTTP in plain HTTP.
    pub fn fall_back_to_plain(&mut self) {
        if let Transport::Tls(t) = self {
            t.plain = true;
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the TCP stream without close_notify: treat as end of stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // No plaintext buffered: pull TLS records off the socket, unless the last pull
            // already drained it (one syscall fewer per message; a later arrival is a new event).
            if self.drained {
                self.drained = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut probe = ShortReadProbe { sock: &mut self.sock, short: false };
            let pulled = self.conn.read_tls(&mut probe);
            self.drained = probe.short;
            match pulled {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // Tell the peer why (the alert rustls queued), best effort.
                        let _ = self.conn.write_tls(&mut self.sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn flush_records(&mut self) -> io::Result<()> {
        while !self.plain && self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped accepting data")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
