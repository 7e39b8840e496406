//! Buffers: the output queue written with `writev`, and (in `pools.rs`) the pools that let
//! idle connections hold none.
//!
//! A connection takes a read buffer when its socket has data and gives it back once every
//! byte is consumed; output chunks come from a pool and return to it once written. The pools
//! keep a bounded number of free buffers, so a burst does not pin memory forever.
//!
//! The queue is byte-level: it knows chunks, not frames. Frames are encoded onto it by
//! [`crate::encode`]; the one thing it knows of framing is where a chunk continues the frame
//! of the chunk before (so an urgent control frame is never put inside another frame).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

mod pools;

pub use pools::{Pools, DEFAULT_POOL_BYTES};

/// Size of a read buffer. A request head must fit in one (config enforces it).
pub const READ_BUF_SIZE: usize = 64 * 1024;
/// Capacity of a pooled output chunk; small frames are coalesced into these.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Most iovecs handed to one `writev` (a subscriber may hold many shared frames).
const MAX_IOVECS: usize = 256;
/// What one queued chunk costs besides its bytes (the queue entry), for memory accounting.
pub const CHUNK_OVERHEAD: usize = std::mem::size_of::<Chunk>();

#[derive(Debug)]
enum Bytes {
    /// Pooled (coalescing) or owned bytes.
    Owned(Vec<u8>),
    /// A frame encoded once and queued by reference on every receiver.
    Shared(Arc<[u8]>),
    /// This many bytes that wait in the connection's pipe (spliced from a backend), at this
    /// place in the stream.
    Piped(usize),
}

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    role: Role,
}

/// What a chunk is to the frames around it, for [`OutQueue::push_urgent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Role {
    /// Starts with a frame (and holds whole frames, perhaps the header of a large one).
    #[default]
    Frames,
    /// Starts inside the frame the previous chunk began (a large payload).
    Continues,
    /// Queued ahead of data by [`OutQueue::push_urgent`].
    Urgent,
    /// Raw bytes (an HTTP response, a backend stream): nothing jumps ahead of them.
    Fixed,
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(v) => v,
            Bytes::Shared(s) => s,
            Bytes::Piped(_) => &[],
        }
    }
}

/// Bytes waiting to be written to one peer, in order.
///
/// Besides byte chunks the stream may hold *piped* chunks: payload that waits in the
/// connection's pipe (spliced from a backend) at its place in the stream. [`write_to`]
/// stops there; the connection then splices the pipe bytes, and the stream goes on.
///
/// [`write_to`]: OutQueue::write_to
///
/// An empty queue is a byte count and a null pointer (16 bytes on every connection); the
/// chunk list lives in a box taken when output is queued and given back to the pools
/// (with its list's capacity) when the queue drains, so an idle connection holds none of it
/// and a busy one allocates nothing per turn.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Bytes waiting, piped ones included.
    queued: usize,
    list: Option<Box<ChunkList>>,
}

/// The chunks of a queue that holds any: `chunks`, then the open chunk.
///
/// The open chunk is the pooled one that small frames and bytes are copied into. It is held
/// here rather than as the deque's last entry so the per-message path reaches it in one load
/// from the list (not through the deque's buffer, another cache line, and its wrapping
/// index); anything queued by other means seals it into the deque first, which keeps order.
#[derive(Debug, Default)]
struct ChunkList {
    chunks: VecDeque<Chunk>,
    /// After `chunks`: a pooled chunk (capacity [`CHUNK_SIZE`]) or nothing (capacity 0). It
    /// may be empty (written and kept for the next bytes).
    open: Vec<u8>,
    /// The open chunk's role, set when its first byte is copied.
    open_role: Role,
    /// Bytes of the front chunk (the deque's first, or the open chunk when the deque is
    /// empty) already written.
    front_written: usize,
}

impl OutQueue {
    /// The chunk list where no pool is at hand (rarer pushes).
    fn list_unpooled(&mut self) -> &mut ChunkList {
        self.list.get_or_insert_with(Box::default)
    }

    /// The chunk list with the open chunk sealed into the deque: for pushes that queue by
    /// other means than copying, and for the rare paths that reorder or drop chunks.
    fn list_sealed(&mut self) -> &mut ChunkList {
        let list = self.list_unpooled();
        list.seal();
        list
    }

    /// The queue drained: its list goes back to the pool (and its open chunk).
    fn drop_list(&mut self, pools: &mut Pools) {
        if let Some(list) = self.list.take() {
            pools.put_drained(list);
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// What the queue holds in memory: its bytes plus a queue entry per chunk. This is what
    /// backpressure limits count, so a peer that never reads cannot pin memory with many
    /// tiny shared frames either.
    pub fn footprint(&self) -> usize {
        self.queued + self.list.as_ref().map_or(0, |l| l.count()) * CHUNK_OVERHEAD
    }

    /// Whether `len` more bytes keep the [`footprint`](OutQueue::footprint) within `limit`
    /// (a backpressure bound). An empty queue takes anything: a message larger than the
    /// limit would never go otherwise.
    pub fn has_room(&self, len: usize, limit: usize) -> bool {
        let queued = self.footprint();
        queued == 0 || queued + len <= limit
    }

    /// The open chunk if `extra` more bytes fit in it, else a new one (the full one sealed).
    /// `role` is the chunk's if these are its first bytes.
    /// Inlined: the common case (the hot list taken, its chunk with room) is a few tests;
    /// a new chunk is [`ChunkList::open_fresh`]'s.
    #[inline(always)]
    fn tail(&mut self, pools: &mut Pools, extra: usize, role: Role) -> &mut Vec<u8> {
        let list = self.list.get_or_insert_with(|| pools.take_list());
        if list.open.capacity() == 0 || list.open.len() + extra > CHUNK_SIZE {
            list.open_fresh(pools);
        }
        if list.open.is_empty() {
            list.open_role = role;
        }
        &mut list.open
    }

    /// Queues one small frame, its header and payload copied into the open chunk: the echo
    /// and small-message path (no parts list, one unit). The common case, the open chunk
    /// there with room, is checked inline; the rest is [`OutQueue::tail`]'s.
    #[inline(always)]
    pub fn push_small_frame(&mut self, pools: &mut Pools, head: &[u8], payload: &[u8]) {
        let total = head.len() + payload.len();
        debug_assert!(total <= CHUNK_SIZE);
        // A pooled open chunk has capacity CHUNK_SIZE, none has 0: one comparison covers
        // both (a frame is never empty). An empty open chunk's role is set by `tail`.
        let open = match self.list.as_deref_mut() {
            Some(list) if !list.open.is_empty() && list.open.len() + total <= list.open.capacity() => &mut list.open,
            _ => self.tail(pools, total, Role::Frames),
        };
        open.extend_from_slice(head);
        open.extend_from_slice(payload);
        self.count(total);
    }

    fn count(&mut self, n: usize) {
        self.queued += n;
    }

    /// Queues raw bytes (an HTTP response, a backend record stream).
    pub fn push_bytes(&mut self, pools: &mut Pools, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let tail = self.tail(pools, 1, Role::Fixed);
            let room = CHUNK_SIZE.saturating_sub(tail.len()).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            tail.extend_from_slice(now);
            rest = later;
        }
        // Bytes coalesced into a chunk of frames pin it too (`tail` left them in the open
        // chunk).
        if let Some(list) = self.list.as_deref_mut() {
            list.open_role = Role::Fixed;
        }
        self.count(bytes.len());
    }

    /// Queues the concatenation of `parts` (a header and its payload) as one unit: coalesced
    /// into the tail chunk when it fits, else the last part gets a chunk of its own.
    #[inline]
    pub fn push_parts(&mut self, pools: &mut Pools, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= CHUNK_SIZE {
            let tail = self.tail(pools, total, Role::Frames);
            for p in parts {
                tail.extend_from_slice(p);
            }
            self.count(total);
            return;
        }
        let Some((last, head)) = parts.split_last() else { return };
        let head_len: usize = head.iter().map(|p| p.len()).sum();
        let tail = self.tail(pools, head_len, Role::Frames);
        for p in head {
            tail.extend_from_slice(p);
        }
        self.count(head_len);
        self.push_owned_continuation(last.to_vec());
    }

    /// Queues `bytes` (already owned: no copy) right after what is queued; they continue the
    /// unit whose first part was pushed just before (a frame header, typically).
    pub fn push_owned_continuation(&mut self, bytes: Vec<u8>) {
        let n = bytes.len();
        if n == 0 {
            return;
        }
        self.list_sealed().chunks.push_back(Chunk { bytes: Bytes::Owned(bytes), role: Role::Continues });
        self.count(n);
    }

    /// Queues shared bytes by reference (a frame encoded once for many receivers).
    pub fn push_shared(&mut self, bytes: Arc<[u8]>) {
        let n = bytes.len();
        if n == 0 {
            return;
        }
        self.list_sealed().chunks.push_back(Chunk { bytes: Bytes::Shared(bytes), role: Role::Frames });
        self.count(n);
    }

    /// Where a unit may enter ahead of queued data: after the chunk being written and what
    /// continues it (never inside another frame), after earlier urgent units (they keep
    /// their order) and after raw bytes (the 101 response). `None` when it can only go last.
    fn urgent_slot(list: &ChunkList) -> Option<usize> {
        let mut at = usize::from(list.front_written > 0);
        while list.chunks.get(at).is_some_and(|c| c.role != Role::Frames) {
            at += 1;
        }
        (at < list.chunks.len()).then_some(at)
    }

    /// Queues a small unit (a ping or pong) ahead of queued data, so it never waits behind a
    /// full queue (after the unit being written, never inside a frame; see `urgent_slot`).
    pub fn push_urgent(&mut self, bytes: &[u8]) {
        // Its own chunk even at the end, so a later urgent unit queues behind it.
        let list = self.list_sealed();
        let at = OutQueue::urgent_slot(list).unwrap_or(list.chunks.len());
        list.chunks.insert(at, Chunk { bytes: Bytes::Owned(bytes.to_vec()), role: Role::Urgent });
        self.count(bytes.len());
    }

    /// Drops every queued unit not yet begun (urgent ones stay): for a peer that will get a
    /// close frame next and nothing after it. Returns the bytes dropped.
    pub fn discard_unstarted(&mut self, pools: &mut Pools) -> usize {
        let Some(list) = self.list.as_deref_mut() else { return 0 };
        list.seal();
        // Piped bytes cannot be taken back out of the pipe: with some queued, nothing goes.
        if list.chunks.iter().any(|c| matches!(c.bytes, Bytes::Piped(_))) {
            return 0;
        }
        let Some(mut at) = OutQueue::urgent_slot(list) else { return 0 };
        let mut dropped = 0;
        while at < list.chunks.len() {
            if matches!(list.chunks[at].role, Role::Urgent | Role::Fixed) {
                at += 1;
                continue;
            }
            if let Some(c) = list.chunks.remove(at) {
                dropped += c.as_slice().len();
                recycle(c, pools);
            }
        }
        self.queued -= dropped;
        if self.queued == 0 {
            self.drop_list(pools);
        }
        dropped
    }

    /// Queues `len` payload bytes that are already in the connection's pipe; they continue
    /// the frame whose header was pushed just before.
    pub fn push_piped(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        self.list_sealed().chunks.push_back(Chunk { bytes: Bytes::Piped(len), role: Role::Continues });
        self.count(len);
    }

    /// Bytes to splice from the pipe now, if the stream has reached piped bytes.
    pub fn pipe_due(&self) -> Option<usize> {
        match self.list.as_ref()?.chunks.front()?.bytes {
            Bytes::Piped(left) => Some(left),
            _ => None,
        }
    }

    /// Records `n` bytes spliced from the pipe (the front piped chunk).
    pub fn consume_piped(&mut self, n: usize) {
        let Some(list) = self.list.as_deref_mut() else { return };
        let Some(Chunk { bytes: Bytes::Piped(left), .. }) = list.chunks.front_mut() else { return };
        let n = n.min(*left);
        *left -= n;
        if *left == 0 {
            list.chunks.pop_front();
        }
        self.queued -= n;
        if self.queued == 0 {
            self.list = None;
        }
    }

    /// One `writev` of as much as is queued (up to 256 chunks). Returns the bytes written.
    // Inlined into the connection's flush: an echo's write is then one call, the write(2).
    #[inline(always)]
    pub fn write_to<W: Write>(&mut self, w: &mut W, pools: &mut Pools) -> io::Result<usize> {
        let Some(list) = self.list.as_deref() else { return Ok(0) };
        if list.count() == 1 {
            // The common case (one wake-up's replies fit one chunk): a plain write, which
            // spares the kernel importing an iovec array. (A piped chunk's slice is empty:
            // nothing is written before it is spliced.)
            let bytes = &list.front()[list.front_written..];
            if bytes.is_empty() {
                return Ok(0);
            }
            let (len, last) = (bytes.len(), list.chunks.is_empty());
            let written = w.write(bytes)?;
            if written == len && last {
                // All of it, from the open chunk (a reply, most often): the queue is empty.
                self.release(pools);
                return Ok(written);
            }
            self.consume(written, pools);
            return Ok(written);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        // Up to the first piped chunk, whose bytes are in the pipe.
        let mut piped = false;
        for (i, chunk) in list.chunks.iter().take(MAX_IOVECS).enumerate() {
            if matches!(chunk.bytes, Bytes::Piped(_)) {
                piped = true;
                break;
            }
            let start = if i == 0 { list.front_written } else { 0 };
            slices[i] = IoSlice::new(&chunk.as_slice()[start..]);
            count += 1;
        }
        if !piped && count < MAX_IOVECS && !list.open.is_empty() {
            let start = if count == 0 { list.front_written } else { 0 };
            slices[count] = IoSlice::new(&list.open[start..]);
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let written = w.write_vectored(&slices[..count])?;
        self.consume(written, pools);
        Ok(written)
    }

    fn consume(&mut self, mut n: usize, pools: &mut Pools) {
        self.queued -= n;
        let Some(list) = self.list.as_deref_mut() else { return };
        while n > 0 {
            let Some(front) = list.chunks.front() else {
                // The open chunk: kept, emptied, once all of it is written.
                let left = list.open.len() - list.front_written;
                if n < left {
                    list.front_written += n;
                    return;
                }
                list.open.clear();
                list.front_written = 0;
                break;
            };
            let left = front.as_slice().len() - list.front_written;
            if n < left {
                list.front_written += n;
                return;
            }
            n -= left;
            list.front_written = 0;
            if let Some(done) = list.chunks.pop_front() {
                recycle(done, pools);
            }
        }
        // An idle queue holds nothing: its list goes back to the pool.
        if self.queued == 0 {
            self.release(pools);
        }
    }

    /// Lends every queued byte to `f` as one slice, then empties the queue (its chunks back
    /// to the pool). No copy when the queue is one chunk, as one app call's output nearly
    /// always is; several are gathered into one allocation first.
    pub fn drain_contiguous<R>(&mut self, pools: &mut Pools, f: impl FnOnce(&[u8], &mut Pools) -> R) -> R {
        let result = match self.list.as_deref() {
            None => f(&[], pools),
            Some(list) if list.count() <= 1 => f(&list.front()[list.front_written..], pools),
            Some(list) => f(&list.gather(self.queued), pools),
        };
        self.release(pools);
        result
    }

    /// Every queued byte, in order (for tests and the fuzzer).
    #[doc(hidden)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.list.as_deref().map_or_else(Vec::new, |list| list.gather(self.queued))
    }

    /// Returns every chunk and the list to the pool (the queue drained, or the connection is
    /// going away).
    #[inline(always)]
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(mut list) = self.list.take() {
            // Most queues drain with only the open chunk: no deque to walk.
            if !list.chunks.is_empty() {
                for c in list.chunks.drain(..) {
                    recycle(c, pools);
                }
            }
            pools.put_drained(list);
        }
        self.queued = 0;
    }
}

impl ChunkList {
    /// Chunks holding bytes (or piped bytes), the open one included.
    fn count(&self) -> usize {
        self.chunks.len() + usize::from(!self.open.is_empty())
    }

    /// The front chunk's bytes (written ones included): the deque's first, else the open one.
    fn front(&self) -> &[u8] {
        self.chunks.front().map_or(&self.open[..], Chunk::as_slice)
    }

    /// Moves the open chunk, if it holds bytes, to the end of the deque (it stops being
    /// copied into).
    /// The full open chunk sealed, and an empty one from the pool in its place.
    #[cold]
    #[inline(never)]
    fn open_fresh(&mut self, pools: &mut Pools) {
        self.seal();
        if self.open.capacity() == 0 {
            self.open = pools.take_chunk();
        }
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            let bytes = Bytes::Owned(std::mem::take(&mut self.open));
            self.chunks.push_back(Chunk { bytes, role: self.open_role });
        }
    }

    /// The open chunk back to the pool (the queue drained or going away).
    fn recycle_open(&mut self, pools: &mut Pools) {
        if self.open.capacity() != 0 {
            pools.put_chunk(std::mem::take(&mut self.open));
        }
    }

    /// Every byte not yet written, in order, in one buffer of `queued` bytes' capacity.
    fn gather(&self, queued: usize) -> Vec<u8> {
        let mut all = Vec::with_capacity(queued);
        let mut first = true;
        for c in self.chunks.iter().map(Chunk::as_slice).chain([&self.open[..]]) {
            all.extend_from_slice(if first { &c[self.front_written.min(c.len())..] } else { c });
            first = false;
        }
        all
    }
}

fn recycle(chunk: Chunk, pools: &mut Pools) {
    if let Bytes::Owned(v) = chunk.bytes {
        pools.put_chunk(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::Opcode;

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
        let mut pools = Pools::new(DEFAULT_POOL_BYTES);
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
    fn a_drained_queue_leaves_its_chunk_hot_for_the_next_one_and_idle_pools_let_it_go() {
        let mut pools = Pools::new(DEFAULT_POOL_BYTES);
        let mut w = Trickle { got: Vec::new(), limit: usize::MAX };
        let (mut a, mut b) = (OutQueue::default(), OutQueue::default());
        a.push_small_frame(&mut pools, b"\x81\x02", b"hi");
        a.write_to(&mut w, &mut pools).unwrap();
        assert!(a.is_empty());
        assert_eq!(pools.free_counts(), (0, 1), "the drained list kept its chunk, hot");
        // The next queue gets the list and its chunk in one; the chunk pool is not touched.
        b.push_small_frame(&mut pools, b"\x81\x02", b"yo");
        assert_eq!(pools.free_counts(), (0, 0));
        // A queue drained while another holds the hot list gives its chunk to the pool.
        a.push_small_frame(&mut pools, b"\x81\x01", b"!");
        a.write_to(&mut w, &mut pools).unwrap();
        b.write_to(&mut w, &mut pools).unwrap();
        assert_eq!(pools.free_counts(), (0, 2));
        assert_eq!(w.got, b"\x81\x02hi\x81\x01!\x81\x02yo");
        // Both were taken during the interval: they stay one tick, then go.
        pools.shrink();
        assert_eq!(pools.free_counts(), (0, 2));
        pools.shrink();
        assert_eq!(pools.free_counts(), (0, 0));
        // No pool bytes allowed: nothing is kept hot either.
        let mut none = Pools::new(0);
        a.push_small_frame(&mut none, b"\x81\x00", b"");
        a.write_to(&mut w, &mut none).unwrap();
        assert_eq!(none.free_counts(), (0, 0));
    }

    #[test]
    fn drain_contiguous_lends_everything_once_and_empties_the_queue() {
        let mut pools = Pools::new(DEFAULT_POOL_BYTES);
        let mut q = OutQueue::default();
        assert_eq!(q.drain_contiguous(&mut pools, |b, _| b.len()), 0);
        q.push_bytes(&mut pools, b"one chunk");
        assert_eq!(q.drain_contiguous(&mut pools, |b, _| b.to_vec()), b"one chunk");
        assert!(q.is_empty());
        // Past one chunk: gathered, in order.
        let mut want = Vec::new();
        for i in 0..3 * CHUNK_SIZE / 100 {
            let piece = vec![(i % 251) as u8; 100];
            q.push_bytes(&mut pools, &piece);
            want.extend_from_slice(&piece);
        }
        assert_eq!(q.drain_contiguous(&mut pools, |b, _| b.to_vec()), want);
        assert!(q.is_empty());
    }

    #[test]
    fn small_frames_share_the_open_chunk_and_what_follows_an_urgent_frame_stays_behind_it() {
        let mut pools = Pools::new(DEFAULT_POOL_BYTES);
        let mut q = OutQueue::default();
        q.push_frame(&mut pools, Opcode::Text, b"one");
        q.push_frame(&mut pools, Opcode::Text, b"two");
        assert_eq!(q.footprint(), q.len() + CHUNK_OVERHEAD, "one chunk for both");
        let mut w = Trickle { got: Vec::new(), limit: 2 };
        q.write_to(&mut w, &mut pools).unwrap();
        // A pong goes after the chunk being written (frames share it), before what follows.
        q.push_control(Opcode::Pong, b"p");
        q.push_frame(&mut pools, Opcode::Binary, b"three");
        w.limit = 1000;
        while !q.is_empty() {
            q.write_to(&mut w, &mut pools).unwrap();
        }
        assert_eq!(w.got, b"\x81\x03one\x81\x03two\x8a\x01p\x82\x05three");
        // Drained: the chunks and the list went back to the pools, and the queue reuses them.
        assert!(pools.free_counts().1 >= 1);
        q.push_frame(&mut pools, Opcode::Text, b"again");
        assert_eq!(q.to_vec(), b"\x81\x05again");
        q.release(&mut pools);
        assert!(q.is_empty());
    }

    #[test]
    fn queue_preserves_order_across_partial_writes() {
        let mut pools = Pools::new(DEFAULT_POOL_BYTES);
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
