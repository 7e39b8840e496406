//! A transport with no socket: the peer's bytes are fed in by hand, what the connection
//! writes is collected, and how much a write may take is set by hand (a peer that reads
//! slowly, or not at all). It lets the connection fuzz target and tests run a whole
//! connection — handshake, frames, backpressure, the close handshake, deadlines — through the
//! code the server runs, with no descriptor and no kernel in between.
//!
//! It has no descriptor, so what needs one (a file body's `sendfile`, splicing, the direct
//! hand-off) fails on it with `Unsupported`, which the connection turns into an abort.

use std::io::{self, IoSlice, Read, Write};

#[derive(Debug, Default)]
pub struct MemoryStream {
    /// What the peer sent and the connection has not read yet, from `read_at` on.
    inbound: Vec<u8>,
    read_at: usize,
    /// The peer finished sending: once `inbound` is read, reads are the end of the stream.
    peer_done: bool,
    /// What the connection wrote, until [`MemoryStream::take_output`].
    outbound: Vec<u8>,
    /// Bytes writes may take before they would block.
    room: usize,
    write_shut: bool,
}

impl MemoryStream {
    /// A stream whose writes may take `room` bytes before they would block.
    pub fn new(room: usize) -> MemoryStream {
        MemoryStream { room, ..MemoryStream::default() }
    }

    /// The peer sends `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.read_at == self.inbound.len() {
            self.inbound.clear();
            self.read_at = 0;
        }
        self.inbound.extend_from_slice(bytes);
    }

    /// The peer sends its FIN.
    pub fn finish(&mut self) {
        self.peer_done = true;
    }

    /// The peer reads: writes may take `n` more bytes.
    pub fn open_window(&mut self, n: usize) {
        self.room = self.room.saturating_add(n);
    }

    /// What the connection wrote since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbound)
    }

    /// Bytes fed and not read yet.
    pub fn unread(&self) -> usize {
        self.inbound.len() - self.read_at
    }

    /// The connection shut its writing half (its FIN).
    pub fn is_write_shut(&self) -> bool {
        self.write_shut
    }

    pub fn shutdown_write(&mut self) {
        self.write_shut = true;
    }
}

impl Read for MemoryStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let unread = &self.inbound[self.read_at..];
        if unread.is_empty() {
            return if self.peer_done { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = unread.len().min(buf.len());
        buf[..n].copy_from_slice(&unread[..n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for MemoryStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > 0 && self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut left = total.min(self.room);
        let taken = left;
        for buf in bufs {
            let n = buf.len().min(left);
            self.outbound.extend_from_slice(&buf[..n]);
            left -= n;
        }
        self.room -= taken;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_fed_then_blocks_then_ends() {
        let mut s = MemoryStream::new(0);
        let mut buf = [0u8; 4];
        assert_eq!(s.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        s.feed(b"abcdef");
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(s.unread(), 2);
        s.finish();
        assert_eq!(s.read(&mut buf).unwrap(), 2);
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn writes_take_what_the_window_allows() {
        let mut s = MemoryStream::new(3);
        assert_eq!(s.write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap(), 3);
        assert_eq!(s.write(b"x").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        s.open_window(10);
        assert_eq!(s.write(b"d").unwrap(), 1);
        assert_eq!(s.take_output(), b"abcd");
        s.shutdown_write();
        assert_eq!(s.write(b"e").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
