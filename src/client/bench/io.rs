//! The byte stream under a bench connection: TCP, TLS over TCP, or a UNIX socket, all
//! non-blocking under the reactor's poll.

use std::io::{self, Read, Write};

use crate::client::Stream;

/// The byte stream under a bench connection, non-blocking.
pub(super) enum Io {
    Tcp(mio::net::TcpStream),
    Tls(mio::net::TcpStream, Box<rustls::ClientConnection>),
    Unix(mio::net::UnixStream),
}

impl Io {
    pub(super) fn from_client(stream: Stream) -> io::Result<Io> {
        Ok(match stream {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Io::Tcp(mio::net::TcpStream::from_std(s))
            }
            Stream::Tls(owned) => {
                let (conn, s) = owned.into_parts();
                s.set_nonblocking(true)?;
                Io::Tls(mio::net::TcpStream::from_std(s), Box::new(conn))
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                Io::Unix(mio::net::UnixStream::from_std(s))
            }
        })
    }

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Io::Tcp(s) | Io::Tls(s, _) => s,
            Io::Unix(s) => s,
        }
    }

    /// Reads like a non-blocking socket: `WouldBlock` when nothing more is there. The bool:
    /// a short read means the socket is drained (plain sockets only: TLS records hide it).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        match self {
            Io::Tcp(s) => s.read(buf).map(|n| (n, n < buf.len())),
            Io::Unix(s) => s.read(buf).map(|n| (n, n < buf.len())),
            Io::Tls(s, conn) => loop {
                match conn.reader().read(buf) {
                    Ok(n) => return Ok((n, false)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if conn.read_tls(s)? == 0 {
                    return Ok((0, false));
                }
                conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            },
        }
    }

    /// Writes what the socket takes now (TLS: encrypts what its buffer allows, then sends
    /// what it can); `WouldBlock` when nothing.
    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Unix(s) => s.write(buf),
            Io::Tls(s, conn) => {
                Io::send_tls(s, conn)?;
                if conn.wants_write() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = conn.writer().write(buf)?;
                Io::send_tls(s, conn)?;
                Ok(n)
            }
        }
    }

    /// TLS records already made and not yet sent (a plain socket has none).
    pub(super) fn has_pending(&self) -> bool {
        matches!(self, Io::Tls(_, conn) if conn.wants_write())
    }

    pub(super) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Io::Tls(s, conn) => Io::send_tls(s, conn),
            _ => Ok(()),
        }
    }

    fn send_tls(s: &mut mio::net::TcpStream, conn: &mut rustls::ClientConnection) -> io::Result<()> {
        while conn.wants_write() {
            match conn.write_tls(s) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
