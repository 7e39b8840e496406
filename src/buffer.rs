//! Buffers: pools so idle connections hold none, and the output queue written with `writev`.
//!
//! A connection takes a read buffer when its socket has data and gives it back once every
//! byte is consumed; output chunks come from a pool and return to it once written. The pools
//! keep a bounded number of free buffers, so a burst does not pin memory forever.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::ws::frame::{encode_header, Opcode, MAX_HEADER_LEN};

/// Size of a read buffer. A request head must fit in one (config enforces it).
pub const READ_BUF_SIZE: usize = 64 * 1024;
/// Capacity of a pooled output chunk; small frames are coalesced into these.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Payloads at least this large are queued as their own chunk instead of being coalesced.
const OWN_CHUNK_MIN: usize = 4 * 1024;
/// Most iovecs handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Free buffers kept for reuse; beyond this they are freed.
#[derive(Debug)]
pub struct Pools {
    reads: Vec<Box<[u8]>>,
    chunks: Vec<Vec<u8>>,
    max_free: usize,
}

impl Pools {
    pub fn new(max_free: usize) -> Pools {
        Pools { reads: Vec::new(), chunks: Vec::new(), max_free }
    }

    pub fn take_read(&mut self) -> Box<[u8]> {
        self.reads.pop().unwrap_or_else(|| vec![0u8; READ_BUF_SIZE].into_boxed_slice())
    }

    pub fn put_read(&mut self, buf: Box<[u8]>) {
        if self.reads.len() < self.max_free {
            self.reads.push(buf);
        }
    }

    fn take_chunk(&mut self) -> Vec<u8> {
        self.chunks.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE))
    }

    fn put_chunk(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() == CHUNK_SIZE && self.chunks.len() < self.max_free {
            chunk.clear();
            self.chunks.push(chunk);
        }
    }

    /// Free buffers currently pooled (reads, chunks).
    pub fn free_counts(&self) -> (usize, usize) {
        (self.reads.len(), self.chunks.len())
    }
}

/// Bytes waiting to be written to one peer, in order.
///
/// Besides byte chunks the stream may hold *pipe segments*: payload that waits in the
/// connection's pipe (spliced from a backend) at a given place in the stream. [`write_to`]
/// stops at such a place; the connection then splices the pipe bytes, and the stream goes on.
///
/// [`write_to`]: OutQueue::write_to
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes waiting, pipe segments included.
    queued: usize,
    /// Offsets in the whole stream: bytes written so far, bytes queued so far.
    written: u64,
    pushed: u64,
    /// Pipe segments: (stream offset where it starts, bytes left).
    pipe_segments: VecDeque<(u64, usize)>,
}

impl OutQueue {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The last chunk if `extra` more bytes fit in it, else a new pooled chunk.
    fn tail(&mut self, pools: &mut Pools, extra: usize) -> &mut Vec<u8> {
        let fits = self.chunks.back().is_some_and(|c| c.capacity() == CHUNK_SIZE && c.len() + extra <= CHUNK_SIZE);
        if !fits {
            self.chunks.push_back(pools.take_chunk());
        }
        self.chunks.back_mut().expect("a chunk was just ensured")
    }

    /// Queues raw bytes (an HTTP response).
    pub fn push_bytes(&mut self, pools: &mut Pools, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let tail = self.tail(pools, 1);
            let room = CHUNK_SIZE.saturating_sub(tail.len()).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            tail.extend_from_slice(now);
            rest = later;
        }
        self.queued += bytes.len();
        self.pushed += bytes.len() as u64;
    }

    /// Queues one unmasked, unfragmented frame, copying the payload once.
    pub fn push_frame(&mut self, pools: &mut Pools, opcode: Opcode, payload: &[u8]) {
        self.push_frame_fin(pools, opcode, true, payload)
    }

    /// Queues one unmasked frame (a fragment when `fin` is false), copying the payload once.
    pub fn push_frame_fin(&mut self, pools: &mut Pools, opcode: Opcode, fin: bool, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, opcode, payload.len(), None);
        if payload.len() >= OWN_CHUNK_MIN {
            self.tail(pools, n).extend_from_slice(&head[..n]);
            self.chunks.push_back(payload.to_vec());
        } else {
            let tail = self.tail(pools, n + payload.len());
            tail.extend_from_slice(&head[..n]);
            tail.extend_from_slice(payload);
        }
        self.queued += n + payload.len();
        self.pushed += (n + payload.len()) as u64;
    }

    /// Queues one frame whose payload the caller already owns: no copy.
    pub fn push_frame_owned(&mut self, pools: &mut Pools, opcode: Opcode, payload: Vec<u8>) {
        if payload.len() < OWN_CHUNK_MIN {
            return self.push_frame(pools, opcode, &payload);
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, payload.len(), None);
        self.tail(pools, n).extend_from_slice(&head[..n]);
        self.queued += n + payload.len();
        self.pushed += (n + payload.len()) as u64;
        self.chunks.push_back(payload);
    }

    /// Queues a binary frame whose `len` payload bytes are already in the connection's pipe.
    pub fn push_piped_frame(&mut self, pools: &mut Pools, len: usize) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, Opcode::Binary, len, None);
        self.tail(pools, n).extend_from_slice(&head[..n]);
        self.queued += n;
        self.pushed += n as u64;
        self.pipe_segments.push_back((self.pushed, len));
        self.queued += len;
        self.pushed += len as u64;
    }

    /// Bytes to splice from the pipe now, if the stream has reached a pipe segment.
    pub fn pipe_due(&self) -> Option<usize> {
        self.pipe_segments.front().filter(|(start, _)| *start == self.written).map(|(_, len)| *len)
    }

    /// Records `n` bytes spliced from the pipe (the front pipe segment).
    pub fn consume_piped(&mut self, n: usize) {
        if let Some(front) = self.pipe_segments.front_mut() {
            front.0 += n as u64;
            front.1 -= n;
            if front.1 == 0 {
                self.pipe_segments.pop_front();
            }
        }
        self.written += n as u64;
        self.queued -= n;
    }

    /// One `writev` of as much as is queued (up to 64 chunks). Returns the bytes written.
    pub fn write_to<W: Write>(&mut self, w: &mut W, pools: &mut Pools) -> io::Result<usize> {
        // Bytes up to the next pipe segment, if there is one.
        let limit = self.pipe_segments.front().map_or(usize::MAX, |(start, _)| (start - self.written) as usize);
        if self.chunks.len() == 1 {
            // The common case (one wake-up's replies fit one chunk): a plain write, which
            // spares the kernel importing an iovec array.
            let bytes = &self.chunks[0][self.front_written..];
            let written = w.write(&bytes[..bytes.len().min(limit)])?;
            self.consume(written, pools);
            return Ok(written);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        let mut room = limit;
        for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
            let start = if i == 0 { self.front_written } else { 0 };
            let take = (chunk.len() - start).min(room);
            if take == 0 {
                break;
            }
            slices[i] = IoSlice::new(&chunk[start..start + take]);
            room -= take;
            count += 1;
        }
        let written = w.write_vectored(&slices[..count])?;
        self.consume(written, pools);
        Ok(written)
    }

    fn consume(&mut self, mut n: usize, pools: &mut Pools) {
        self.queued -= n;
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front() else { break };
            let left = front.len() - self.front_written;
            if n < left {
                self.front_written += n;
                return;
            }
            n -= left;
            self.front_written = 0;
            if let Some(done) = self.chunks.pop_front() {
                pools.put_chunk(done);
            }
        }
        // Drop emptied bookkeeping so an idle queue holds nothing.
        if self.queued == 0 {
            while let Some(c) = self.chunks.pop_front() {
                pools.put_chunk(c);
            }
            self.front_written = 0;
            if self.chunks.capacity() > 16 {
                self.chunks = VecDeque::new();
            }
        }
    }

    /// Every queued byte, in order (for tests and the fuzzer).
    #[doc(hidden)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.queued);
        for (i, c) in self.chunks.iter().enumerate() {
            out.extend_from_slice(if i == 0 { &c[self.front_written..] } else { c });
        }
        out
    }

    /// Returns every chunk to the pool (the connection is going away).
    pub fn release(&mut self, pools: &mut Pools) {
        for c in self.chunks.drain(..) {
            pools.put_chunk(c);
        }
        self.queued = 0;
        self.front_written = 0;
        self.chunks = VecDeque::new();
        self.pipe_segments.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `limit` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.limit);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut total = 0;
            for b in bufs {
                let n = b.len().min(self.limit - total);
                self.got.extend_from_slice(&b[..n]);
                total += n;
                if total == self.limit {
                    break;
                }
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer standing in for the socket, and a byte source standing in for the pipe.
    #[test]
    fn pipe_segments_keep_their_place_in_the_stream() {
        let mut pools = Pools::new(8);
        let mut q = OutQueue::default();
        q.push_bytes(&mut pools, b"before");
        q.push_piped_frame(&mut pools, 5);
        q.push_bytes(&mut pools, b"after");
        let pipe = b"PIPED";
        let mut piped_sent = 0;
        let mut w = Trickle { got: Vec::new(), limit: 3 };
        while !q.is_empty() {
            if let Some(due) = q.pipe_due() {
                let n = due.min(2);
                w.got.extend_from_slice(&pipe[piped_sent..piped_sent + n]);
                piped_sent += n;
                q.consume_piped(n);
            } else {
                q.write_to(&mut w, &mut pools).unwrap();
            }
        }
        assert_eq!(w.got, b"before\x82\x05PIPEDafter");
    }

    #[test]
    fn queue_preserves_order_across_partial_writes() {
        let mut pools = Pools::new(8);
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        let big = vec![7u8; 70_000];
        q.push_bytes(&mut pools, b"HTTP/1.1 101\r\n\r\n");
        want.extend_from_slice(b"HTTP/1.1 101\r\n\r\n");
        for i in 0..300u32 {
            let payload = i.to_be_bytes();
            q.push_frame(&mut pools, Opcode::Binary, &payload);
            want.extend_from_slice(&[0x82, 4]);
            want.extend_from_slice(&payload);
        }
        q.push_frame_owned(&mut pools, Opcode::Binary, big.clone());
        want.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        want.extend_from_slice(&big);
        q.push_frame(&mut pools, Opcode::Text, &big[..5000]);
        want.extend_from_slice(&[0x81, 126, 0x13, 0x88]);
        want.extend_from_slice(&big[..5000]);
        assert_eq!(q.len(), want.len());
        let mut w = Trickle { got: Vec::new(), limit: 999 };
        while !q.is_empty() {
            q.write_to(&mut w, &mut pools).unwrap();
        }
        assert_eq!(w.got, want);
        assert!(pools.free_counts().1 >= 1);
    }
}
