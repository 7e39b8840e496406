//! What a connection has read and not yet consumed, and the read buffer that holds it.

use std::io;

use crate::buffer::{Pools, READ_BUF_SIZE};

const _: () = assert!(READ_BUF_SIZE <= u32::MAX as usize);

/// A wake-up that read this much keeps its read buffer for the next (a streaming client,
/// mid-message or with a split frame header pending); one that read less (a trickle, or a
/// timer) gives it back, keeping only pending bytes in an allocation of their size.
const KEEP_READ_BUFFER_AFTER: usize = 512;

/// A connection's input.
///
/// Invariant: `start <= end <= bytes.len()`, and with no buffer `start == end == 0`; the
/// unconsumed input is `bytes[start..end]`. The buffer is a pooled `READ_BUF_SIZE` one while
/// the peer sends (and while a message is being received), an allocation of exactly the
/// pending bytes while a slow peer's partial head or frame header waits for more, or none.
/// Processing takes the buffer out ([`ReadBuf::detach`]) to lend its bytes while the
/// connection is borrowed mutably, and moves the cursor with [`ReadBuf::consume`].
#[derive(Default)]
pub(super) struct ReadBuf {
    bytes: Option<Box<[u8]>>,
    /// 32 bits: a read buffer is far smaller, and every connection carries these.
    start: u32,
    /// The end of the unread bytes, and in the top bit [`HELD`]: 24 bytes in all, not 32.
    end_held: u32,
}

/// Processing stopped with input left that may hold whole frames (backpressure, the fan-out
/// budget, an app that holds input): it goes first when processing resumes, whatever its
/// size. Otherwise what is left is an incomplete frame or head, and waits for a read.
const HELD: u32 = 1 << 31;
const _: () = assert!(READ_BUF_SIZE < HELD as usize);

/// What one read brought.
pub(super) struct Filled {
    pub bytes: usize,
    /// Fewer bytes than there was room for: the socket is drained.
    pub short: bool,
}

impl crate::io_step::Moved for Filled {
    fn is_end(&self) -> bool {
        self.bytes == 0
    }
}

impl ReadBuf {
    fn end(&self) -> u32 {
        self.end_held & !HELD
    }

    fn set_end(&mut self, end: u32) {
        self.end_held = (self.end_held & HELD) | end;
    }

    fn held(&self) -> bool {
        self.end_held & HELD != 0
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end() as usize
    }

    /// Bytes read and not consumed.
    pub fn has_pending(&self) -> bool {
        self.end() > self.start
    }

    /// The unconsumed input (empty while the buffer is detached).
    pub fn pending(&self) -> &[u8] {
        self.bytes.as_deref().map_or(&[], |b| &b[self.range()])
    }

    /// The unconsumed input within `bytes`, the buffer [`ReadBuf::detach`] gave.
    pub fn pending_in<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.range()]
    }

    /// The unconsumed input within `bytes`, mutable (frames are unmasked in place).
    pub fn pending_in_mut<'b>(&self, bytes: &'b mut [u8]) -> &'b mut [u8] {
        &mut bytes[self.range()]
    }

    /// `n` bytes of the input were used.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= (self.end() - self.start) as usize, "consumed past the input");
        self.start += n as u32;
    }

    /// Gives back the last `n` bytes consumed: a hixie-76 request head whose 8-byte key has
    /// not all arrived is looked at again with it.
    pub fn unconsume(&mut self, n: usize) {
        assert!(n <= self.start as usize, "unconsumed more than was consumed");
        self.start -= n as u32;
    }

    /// Drops whatever input is left (a closing connection's, or a lingering one's).
    pub fn discard(&mut self) {
        self.start = self.end();
    }

    pub fn set_held(&mut self, held: bool) {
        self.end_held = if held { self.end_held | HELD } else { self.end_held & !HELD };
    }

    /// Held input that processing must resume with before reading more.
    pub fn has_held_input(&self) -> bool {
        self.held() && self.has_pending()
    }

    /// Takes the buffer out to lend its bytes; [`ReadBuf::attach`] puts it back.
    pub fn detach(&mut self) -> Option<Box<[u8]>> {
        self.bytes.take()
    }

    pub fn attach(&mut self, bytes: Box<[u8]>) {
        debug_assert!(self.end() as usize <= bytes.len());
        self.bytes = Some(bytes);
    }

    /// One read into the room after the pending bytes: a pooled buffer is taken (and the
    /// pending bytes moved into it) if there is none, and the pending bytes moved to the
    /// front when there is no room after them. `read` gets the room and the pools back.
    // Inlined into both reads (the one pass's and the general one's): out of line, saving and
    // restoring registers around it cost a fifth of its work.
    #[inline(always)]
    pub fn fill(
        &mut self,
        pools: &mut Pools,
        read: impl FnOnce(&mut [u8], &mut Pools) -> io::Result<usize>,
    ) -> io::Result<Filled> {
        let mut buf = match self.bytes.take() {
            Some(pooled) if pooled.len() == READ_BUF_SIZE => pooled,
            Some(kept) => {
                // Bytes kept between reads in an allocation of their own size (see `settle`).
                let mut pooled = pools.take_read();
                let n = self.range().len();
                pooled[..n].copy_from_slice(&kept[self.range()]);
                self.start = 0;
                self.set_end(n as u32);
                pooled
            }
            None => pools.take_read(),
        };
        if self.end() as usize == buf.len() {
            buf.copy_within(self.range(), 0);
            self.set_end(self.end() - self.start);
            self.start = 0;
        }
        let room = buf.len() - self.end() as usize;
        let result = read(&mut buf[self.end() as usize..], pools);
        self.bytes = Some(buf);
        let n = result?;
        self.set_end(self.end() + n.min(room) as u32);
        Ok(Filled { bytes: n, short: n < room })
    }

    /// After a wake-up that read `read` bytes: an emptied buffer goes back to the pool (kept
    /// by a busy reader in the middle of a message, `mid_message`), and a slow peer's few
    /// pending bytes move to an allocation of their size, so a connection trickling bytes
    /// costs its bytes, not a read buffer.
    #[inline(always)]
    pub fn settle(&mut self, pools: &mut Pools, read: usize, mid_message: bool) {
        if self.start == self.end() {
            self.start = 0;
            self.set_end(0);
            if read < KEEP_READ_BUFFER_AFTER || !mid_message {
                if let Some(buf) = self.bytes.take() {
                    pools.put_read(buf);
                }
            }
        } else if !self.held() && read < KEEP_READ_BUFFER_AFTER {
            if let Some(pooled) = self.bytes.take_if(|b| b.len() == READ_BUF_SIZE) {
                // A busy reader keeps its buffer until a wake-up that reads little (its next
                // timer at the latest).
                let kept: Box<[u8]> = pooled[self.range()].into();
                pools.put_read(pooled);
                self.start = 0;
                self.set_end(kept.len() as u32);
                self.bytes = Some(kept);
            }
        }
    }

    /// The buffer back to the pool, the input dropped (the connection ended).
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(buf) = self.bytes.take() {
            pools.put_read(buf);
        }
        (self.start, self.end_held) = (0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &mut ReadBuf, pools: &mut Pools, data: &[u8]) -> Filled {
        input
            .fill(pools, |room, _| {
                let n = data.len().min(room.len());
                room[..n].copy_from_slice(&data[..n]);
                Ok(n)
            })
            .unwrap()
    }

    #[test]
    fn a_trickle_costs_its_bytes_not_a_buffer() {
        let mut pools = Pools::new(1 << 20);
        let mut input = ReadBuf::default();
        let filled = feed(&mut input, &mut pools, b"GET / HT");
        assert!(filled.short && filled.bytes == 8);
        input.settle(&mut pools, 8, false);
        assert_eq!(input.bytes.as_ref().map(|b| b.len()), Some(8), "kept in an allocation of its size");
        feed(&mut input, &mut pools, b"TP/1.1\r\n");
        assert_eq!(input.pending(), b"GET / HTTP/1.1\r\n");
        input.consume(4);
        input.unconsume(2);
        assert_eq!(input.pending(), b"T / HTTP/1.1\r\n");
        input.discard();
        input.settle(&mut pools, 8, false);
        assert!(input.bytes.is_none() && !input.has_pending(), "an emptied buffer goes back");
    }

    #[test]
    fn a_full_buffer_moves_its_tail_to_the_front() {
        let mut pools = Pools::new(1 << 20);
        let mut input = ReadBuf::default();
        let big = vec![7u8; READ_BUF_SIZE];
        assert!(!feed(&mut input, &mut pools, &big).short);
        input.consume(READ_BUF_SIZE - 3);
        feed(&mut input, &mut pools, b"abc");
        assert_eq!(input.pending(), &[7, 7, 7, b'a', b'b', b'c']);
        input.set_held(true);
        input.settle(&mut pools, 3, true);
        assert!(input.has_held_input());
        assert_eq!(input.bytes.as_ref().map(|b| b.len()), Some(READ_BUF_SIZE), "held input keeps its buffer");
        let bytes = input.detach().unwrap();
        assert_eq!(input.pending_in(&bytes), &[7, 7, 7, b'a', b'b', b'c']);
        input.attach(bytes);
        input.release(&mut pools);
        assert!(!input.has_pending() && !input.held());
    }

    #[test]
    #[should_panic(expected = "consumed past the input")]
    fn consuming_past_the_input_is_a_bug() {
        let mut pools = Pools::new(1 << 20);
        let mut input = ReadBuf::default();
        feed(&mut input, &mut pools, b"ab");
        input.consume(3);
    }
}
