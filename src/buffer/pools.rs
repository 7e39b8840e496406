//! The pools of free buffers, so idle connections hold none: read buffers, output chunks,
//! the output queues' chunk lists and the one list kept hot with its chunk. Bounded in bytes
//! (`buffer_pool`), and shrinking by themselves to what the traffic uses.

use super::{ChunkList, CHUNK_SIZE, READ_BUF_SIZE};

/// Chunk lists kept by the pools at most (each keeps a list's capacity, a few hundred bytes).
const MAX_POOLED_LISTS: usize = 256;
/// A chunk list whose capacity grew past this goes back to the allocator, not the pool.
const MAX_POOLED_LIST_CAPACITY: usize = 16;

/// The default bound on free buffers kept for reuse, in bytes (`buffer_pool`).
pub const DEFAULT_POOL_BYTES: usize = 4 * 1024 * 1024;
/// Bytes freed (by the pool shrinking, or beyond its bound) after which the loop's
/// housekeeping asks the allocator to give memory back to the system.
const TRIM_AFTER: usize = 1024 * 1024;

/// Free buffers kept for reuse, up to a byte bound; beyond it they are freed.
///
/// The pool also shrinks by itself: [`Pools::shrink`] (each housekeeping tick) frees the
/// buffers that stayed unused since the previous tick, so after a burst the pool goes back to
/// what the traffic actually uses, and then to nothing.
#[derive(Debug)]
pub struct Pools {
    /// The read buffer given back last, when the slot was free: the next wake-up's read
    /// takes it (one buffer serves a loop of small messages without touching `reads`).
    hot_read: HotSlot<Box<[u8]>>,
    reads: Vec<Box<[u8]>>,
    chunks: Vec<Vec<u8>>,
    /// Empty chunk lists of drained queues, with their capacity. Boxed: a queue holds its list
    /// by box, so a pooled box is an allocation saved.
    #[allow(clippy::vec_box)]
    lists: Vec<Box<ChunkList>>,
    /// The last drained list with its open chunk left in it, emptied: the next queue that
    /// takes a list (the next reply, most often) gets both in one move, and gives them back
    /// as one when it drains. Like uWebSockets' per-loop cork buffer, one buffer serves
    /// every small reply of a loop that keeps up; unlike it, a reply the socket does not
    /// take stays where it is (the queue owns the list), so nothing is copied again.
    hot: HotSlot<Box<ChunkList>>,
    /// Most bytes of free buffers kept.
    max_bytes: usize,
    /// Fewest free buffers of each kind since the last tick: that many were never needed.
    reads_low: usize,
    chunks_low: usize,
    /// Bytes freed since the allocator was last asked to trim.
    freed: usize,
}

impl Pools {
    pub fn new(max_bytes: usize) -> Pools {
        Pools {
            hot_read: HotSlot::EMPTY,
            reads: Vec::new(),
            chunks: Vec::new(),
            lists: Vec::new(),
            hot: HotSlot::EMPTY,
            max_bytes,
            reads_low: 0,
            chunks_low: 0,
            freed: 0,
        }
    }

    /// A new most bytes to keep (a reloaded `buffer_pool`); what is over it goes at the next
    /// housekeeping.
    pub fn set_max(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// Bytes of free buffers kept for reuse.
    pub fn spare_bytes(&self) -> usize {
        self.pooled_bytes()
    }

    fn pooled_bytes(&self) -> usize {
        (self.free_reads() * READ_BUF_SIZE) + (self.chunks.len() + self.hot.count()) * CHUNK_SIZE
    }

    #[inline]
    pub fn take_read(&mut self) -> Box<[u8]> {
        if let Some(buf) = self.hot_read.take() {
            return buf;
        }
        let buf = self.reads.pop().unwrap_or_else(|| vec![0u8; READ_BUF_SIZE].into_boxed_slice());
        self.reads_low = self.reads_low.min(self.reads.len());
        buf
    }

    /// Takes back a read buffer; anything else (a connection's small buffer of kept bytes)
    /// is simply freed, so the pool only ever hands out full-size buffers.
    #[inline(always)]
    pub fn put_read(&mut self, buf: Box<[u8]>) {
        // The common case inlined: the hot slot free for the buffer taken from it.
        if self.hot_read.is_empty() && self.keeps_read(&buf) {
            return self.hot_read.fill(buf);
        }
        self.put_read_pooled(buf);
    }

    /// Whether a read buffer given back is kept: a full-size one, while the pool is within
    /// its bound.
    #[inline(always)]
    fn keeps_read(&self, buf: &[u8]) -> bool {
        buf.len() == READ_BUF_SIZE && self.pooled_bytes() + READ_BUF_SIZE <= self.max_bytes
    }

    /// [`Pools::put_read`], the general case: the hot slot taken, or the buffer not kept.
    #[inline(never)]
    fn put_read_pooled(&mut self, buf: Box<[u8]>) {
        if self.keeps_read(&buf) {
            if let Err(buf) = self.hot_read.put(buf) {
                self.reads.push(buf);
            }
        } else {
            self.freed += buf.len();
        }
    }

    /// A chunk list for a queue that had none: the hot one (its open chunk in it) if kept.
    #[inline]
    pub(super) fn take_list(&mut self) -> Box<ChunkList> {
        self.hot.take().unwrap_or_else(|| self.lists.pop().unwrap_or_default())
    }

    /// Takes back a drained queue's list, its deque's chunks already recycled: kept hot
    /// with its open chunk when the hot slot is free (see [`Pools::hot`]), else the chunk
    /// and the list go back to their pools.
    #[inline(always)]
    pub(super) fn put_drained(&mut self, mut list: Box<ChunkList>) {
        debug_assert!(list.chunks.is_empty());
        list.front_written = 0;
        if self.hot.is_empty()
            && list.open.capacity() == CHUNK_SIZE
            && list.chunks.capacity() <= MAX_POOLED_LIST_CAPACITY
            && self.pooled_bytes() + CHUNK_SIZE <= self.max_bytes
        {
            list.open.clear();
            self.hot.fill(list);
            return;
        }
        list.recycle_open(self);
        self.put_list(list);
    }

    /// Takes back an emptied chunk list (its chunks already recycled).
    fn put_list(&mut self, list: Box<ChunkList>) {
        debug_assert!(list.chunks.is_empty());
        if self.lists.len() < MAX_POOLED_LISTS && list.chunks.capacity() <= MAX_POOLED_LIST_CAPACITY {
            self.lists.push(list);
        }
    }

    pub(super) fn take_chunk(&mut self) -> Vec<u8> {
        let chunk = self.chunks.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE));
        self.chunks_low = self.chunks_low.min(self.chunks.len());
        chunk
    }

    pub(super) fn put_chunk(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() == CHUNK_SIZE && self.pooled_bytes() + CHUNK_SIZE <= self.max_bytes {
            chunk.clear();
            self.chunks.push(chunk);
        } else {
            self.freed += chunk.capacity();
        }
    }

    fn free_reads(&self) -> usize {
        self.reads.len() + self.hot_read.count()
    }

    /// Free buffers currently pooled (reads, chunks).
    pub fn free_counts(&self) -> (usize, usize) {
        (self.free_reads(), self.chunks.len() + self.hot.count())
    }

    /// Whether a housekeeping tick has anything to do.
    pub fn has_spare(&self) -> bool {
        !(self.hot_read.is_empty() && self.reads.is_empty() && self.chunks.is_empty() && self.hot.is_empty())
    }

    /// Frees the buffers no one took since the last call. Returns true when enough was freed
    /// since the last trim that the allocator should be asked to give memory back, or the
    /// pool just emptied after freeing some (the caller trims, then calls [`Pools::trimmed`]).
    pub fn shrink(&mut self) -> bool {
        let (reads, chunks) = (self.reads_low.min(self.reads.len()), self.chunks_low.min(self.chunks.len()));
        self.reads.truncate(self.reads.len() - reads);
        self.chunks.truncate(self.chunks.len() - chunks);
        self.reads.shrink_to_fit();
        self.chunks.shrink_to_fit();
        // The hot list and read buffer go too if no one took them since the last tick.
        let hot_freed = self.hot.shrink() * CHUNK_SIZE + self.hot_read.shrink() * READ_BUF_SIZE;
        // Chunk lists are small (at most 256 of a few hundred bytes): rebuilt from the next turn's.
        self.lists = Vec::new();
        self.freed += reads * READ_BUF_SIZE + chunks * CHUNK_SIZE + hot_freed;
        (self.reads_low, self.chunks_low) = (self.reads.len(), self.chunks.len());
        self.freed >= TRIM_AFTER || (self.freed > 0 && !self.has_spare())
    }

    /// The allocator was asked to give freed memory back.
    pub fn trimmed(&mut self) {
        self.freed = 0;
    }
}

/// One free buffer kept apart from its pool, for the very next taker: a loop that takes
/// and gives back one buffer at a time never touches the pool's vector. Kept while used:
/// [`HotSlot::shrink`] frees it after an interval in which nothing was taken.
#[derive(Debug)]
struct HotSlot<T> {
    kept: Option<T>,
    /// Something was taken since the last shrink (from the slot or, with the slot empty,
    /// from the pool behind it): a buffer was needed, so the kept one stays.
    taken: bool,
}

impl<T> HotSlot<T> {
    const EMPTY: HotSlot<T> = HotSlot { kept: None, taken: false };

    /// The kept buffer if any; either way counts as a take.
    #[inline]
    fn take(&mut self) -> Option<T> {
        self.taken = true;
        self.kept.take()
    }

    /// Keeps `buf` if the slot is free, else gives it back.
    #[inline]
    fn put(&mut self, buf: T) -> Result<(), T> {
        if self.kept.is_some() {
            return Err(buf);
        }
        self.kept = Some(buf);
        Ok(())
    }

    /// Keeps `buf`; the caller checked the slot is free.
    #[inline]
    fn fill(&mut self, buf: T) {
        debug_assert!(self.kept.is_none());
        self.kept = Some(buf);
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.kept.is_none()
    }

    /// Buffers kept: 0 or 1.
    #[inline]
    fn count(&self) -> usize {
        usize::from(self.kept.is_some())
    }

    /// Ends an interval: frees the kept buffer if nothing was taken in it. Returns how many
    /// were freed (0 or 1).
    fn shrink(&mut self) -> usize {
        if std::mem::take(&mut self.taken) {
            return 0;
        }
        usize::from(self.kept.take().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keeps_what_its_bound_allows_and_shrinks_to_what_is_used() {
        let mut pools = Pools::new(2 * READ_BUF_SIZE + CHUNK_SIZE);
        let reads: Vec<_> = (0..4).map(|_| pools.take_read()).collect();
        for r in reads {
            pools.put_read(r);
        }
        assert_eq!(pools.free_counts(), (2, 0), "the byte bound holds");
        let chunk = pools.take_chunk();
        pools.put_chunk(chunk);
        assert_eq!(pools.free_counts(), (2, 1));
        assert!(!pools.shrink(), "2 of 4 read buffers freed: under the trim threshold");
        // One read buffer in use during the next interval: one stays, the other goes.
        let r = pools.take_read();
        pools.put_read(r);
        pools.shrink();
        assert_eq!(pools.free_counts(), (1, 0));
        pools.shrink();
        assert_eq!(pools.free_counts(), (0, 0), "unused: everything goes");
    }

    #[test]
    fn the_hot_read_buffer_is_bounded_kept_while_used_and_freed_when_not() {
        let mut pools = Pools::new(0);
        let r = pools.take_read();
        pools.put_read(r);
        assert_eq!(pools.free_counts().0, 0, "a bound of 0 keeps no buffer, hot or not");
        let mut pools = Pools::new(READ_BUF_SIZE);
        let (a, b) = (pools.take_read(), pools.take_read());
        pools.put_read(a);
        pools.put_read(b);
        assert_eq!(pools.free_counts().0, 1, "the hot one counts against the bound");
        for _ in 0..3 {
            let r = pools.take_read();
            pools.put_read(r);
            pools.shrink();
            assert_eq!(pools.free_counts().0, 1, "taken every interval: kept");
        }
        pools.shrink();
        assert_eq!(pools.free_counts().0, 0, "an interval untaken: freed");
        assert!(!pools.has_spare());
    }

    #[test]
    fn a_hot_slot_keeps_one_buffer_while_anything_is_taken() {
        let mut slot = HotSlot::EMPTY;
        assert_eq!(slot.put(1), Ok(()));
        assert_eq!(slot.put(2), Err(2), "one kept at most");
        assert_eq!((slot.count(), slot.shrink()), (1, 1), "nothing taken in the interval: freed");
        assert!(slot.is_empty());
        assert_eq!(slot.take(), None);
        slot.fill(3);
        assert_eq!(slot.shrink(), 0, "a take from the empty slot still counts: a buffer was needed");
        assert_eq!(slot.take(), Some(3));
        slot.fill(4);
        assert_eq!((slot.shrink(), slot.shrink()), (0, 1));
    }

    #[test]
    fn only_full_size_read_buffers_are_pooled() {
        let mut pools = Pools::new(4 * READ_BUF_SIZE);
        pools.put_read(vec![0u8; 37].into_boxed_slice());
        assert_eq!(pools.free_counts().0, 0);
        assert_eq!(pools.take_read().len(), READ_BUF_SIZE);
        pools.put_read(vec![0u8; READ_BUF_SIZE].into_boxed_slice());
        assert_eq!(pools.free_counts().0, 1);
    }
}
