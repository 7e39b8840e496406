//! WebSocket frames onto output queues: the server's frames are unmasked (§5.1), encoded
//! once. A frame for one receiver is copied into its queue; a frame for many (pub/sub, chat)
//! is encoded once into shared bytes ([`SharedFrame`]) and queued by reference, except that
//! a small one is copied: copying a few dozen bytes into the chunk being filled costs less
//! than a reference (an iovec and a queue entry of 32 bytes) and keeps one write per turn.
//! Control frames jump ahead of queued data ([`OutQueue::push_urgent`]).

use std::sync::Arc;

use crate::buffer::{OutQueue, Pools, CHUNK_OVERHEAD};
use crate::ws::close::encode_close_payload;
use crate::ws::frame::{encode_header, Opcode, MAX_HEADER_LEN};

/// Payloads at least this large are queued as their own chunk instead of being coalesced.
const OWN_CHUNK_MIN: usize = 4 * 1024;
/// Shared frames up to this size are copied into the receiver's queue, not referenced.
const SHARED_COPY_MAX: usize = 4 * CHUNK_OVERHEAD;

/// A frame encoded once (header and payload), shared by every receiver in this reactor.
pub type SharedFrame = Arc<[u8]>;

/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;

/// Encodes one unfragmented compressed message (RSV1 set) into shared bytes.
pub fn compressed_shared_frame(opcode: Opcode, compressed: &[u8]) -> SharedFrame {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut head, true, opcode, compressed.len(), None);
    head[0] |= RSV1;
    shared_bytes(&head[..n], compressed)
}

/// A server frame's opcode and payload (server frames are never masked).
pub fn frame_parts(frame: &[u8]) -> Option<(Opcode, &[u8])> {
    let opcode = if frame.first()? & 0x0F == 2 { Opcode::Binary } else { Opcode::Text };
    let header = match frame.get(1)? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(header..)?))
}

/// A shared frame's compressed twin, for the receivers that negotiated permessage-deflate:
/// compressed once by the worker's shared compressor for this window (no context takeover,
/// so any receiver can inflate it, whatever its own context).
pub fn compressed_twin(
    codecs: &mut crate::ws::deflate::SharedCodecs,
    window: u8,
    level: i32,
    frame: &[u8],
) -> SharedFrame {
    let Some((opcode, payload)) = frame_parts(frame) else { return Arc::from(frame) };
    let mut z = Vec::with_capacity(payload.len() / 2 + 16);
    codecs.compress(window, level, payload, &mut z);
    compressed_shared_frame(opcode, &z)
}

/// A shared frame's legacy (hixie) twin, for the legacy clients among its receivers: the
/// payload as one text frame (`0x00` … `0xFF`), built once per message for all of them.
/// `None` when the payload is not UTF-8 (those drafts carry text only).
pub fn legacy_twin(frame: &[u8]) -> Option<SharedFrame> {
    let (_, payload) = frame_parts(frame)?;
    let mut text = Vec::with_capacity(payload.len() + 2);
    crate::ws::hixie::push_text(&mut text, payload).then(|| text.into())
}

/// Encodes one unfragmented server frame into shared bytes.
pub fn shared_frame(opcode: Opcode, payload: &[u8]) -> SharedFrame {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut head, true, opcode, payload.len(), None);
    shared_bytes(&head[..n], payload)
}

/// `head` then `payload` as shared bytes. Frames up to 256 bytes are assembled on the stack
/// first: an `Arc<[u8]>` made from a slice is one allocation, from a `Vec` two and a free
/// (the `Vec`'s bytes are copied into the `Arc`'s), and a chat route publishes a frame for
/// every message it receives. The stack buffer is zeroed first, so a small frame gets a
/// small one (64 bytes are a few stores; 256 were a `memset` call per message).
fn shared_bytes(head: &[u8], payload: &[u8]) -> SharedFrame {
    /// Through a zeroed `N`-byte buffer on the stack (`head` and `payload` fit in it).
    fn via_stack<const N: usize>(head: &[u8], payload: &[u8]) -> SharedFrame {
        let (n, total) = (head.len(), head.len() + payload.len());
        let mut frame = [0u8; N];
        frame[..n].copy_from_slice(head);
        frame[n..total].copy_from_slice(payload);
        Arc::from(&frame[..total])
    }
    match head.len() + payload.len() {
        0..=64 => via_stack::<64>(head, payload),
        65..=256 => via_stack::<256>(head, payload),
        total => {
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(head);
            bytes.extend_from_slice(payload);
            bytes.into()
        }
    }
}

impl OutQueue {
    /// Queues one unfragmented frame, copying the payload once.
    #[inline]
    pub fn push_frame(&mut self, pools: &mut Pools, opcode: Opcode, payload: &[u8]) {
        self.push_frame_fin(pools, opcode, true, payload)
    }

    /// Queues one frame (a fragment when `fin` is false), copying the payload once.
    // Always inlined, the small case: an app's send of a small message is this, a few
    // moves and a copy into the open chunk, and a call per message cost more than that.
    #[inline(always)]
    pub fn push_frame_fin(&mut self, pools: &mut Pools, opcode: Opcode, fin: bool, payload: &[u8]) {
        if payload.len() < 126 {
            // The common small message: a two-byte header (§5.2), built in place.
            let head = [(u8::from(fin) << 7) | opcode as u8, payload.len() as u8];
            return self.push_small_frame(pools, &head, payload);
        }
        self.push_large_frame(pools, opcode, fin, payload)
    }

    /// [`OutQueue::push_frame_fin`] for payloads of 126 bytes and more.
    #[inline(never)]
    fn push_large_frame(&mut self, pools: &mut Pools, opcode: Opcode, fin: bool, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, opcode, payload.len(), None);
        if payload.len() >= OWN_CHUNK_MIN {
            self.push_parts(pools, &[&head[..n]]);
            self.push_owned_continuation(payload.to_vec());
        } else {
            self.push_small_frame(pools, &head[..n], payload);
        }
    }

    /// Queues one frame whose payload is the concatenation of `parts` (a carried UTF-8 tail
    /// and the new bytes), copying once.
    pub fn push_frame_parts(&mut self, pools: &mut Pools, opcode: Opcode, parts: [&[u8]; 2]) {
        let len = parts[0].len() + parts[1].len();
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, len, None);
        self.push_parts(pools, &[&head[..n], parts[0], parts[1]]);
    }

    /// Queues one frame whose payload the caller already owns: no copy.
    pub fn push_frame_owned(&mut self, pools: &mut Pools, opcode: Opcode, payload: Vec<u8>) {
        if payload.len() < OWN_CHUNK_MIN {
            return self.push_frame(pools, opcode, &payload);
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, payload.len(), None);
        self.push_parts(pools, &[&head[..n]]);
        self.push_owned_continuation(payload);
    }

    /// Queues one compressed message (RSV1 set) whose payload the caller owns.
    pub fn push_compressed_frame(&mut self, pools: &mut Pools, opcode: Opcode, compressed: Vec<u8>) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, compressed.len(), None);
        head[0] |= RSV1;
        if compressed.len() < OWN_CHUNK_MIN {
            self.push_parts(pools, &[&head[..n], &compressed]);
        } else {
            self.push_parts(pools, &[&head[..n]]);
            self.push_owned_continuation(compressed);
        }
    }

    /// Queues `frames` (whole server frames an app queued itself: a backend's), compressing
    /// each unfragmented data message the connection wants compressed; fragments, control
    /// frames and messages already compressed go as they are (RFC 7692 §6: any message may
    /// go uncompressed, and one that does leaves the compression context untouched).
    pub fn push_frames_compressing(
        &mut self,
        pools: &mut Pools,
        frames: &[u8],
        pmd: &mut crate::ws::deflate::PerMessage,
        codecs: &mut crate::ws::deflate::SharedCodecs,
    ) {
        let limits =
            crate::ws::frame::FrameLimits { allowed_rsv: RSV1, ..crate::ws::frame::FrameLimits::client(u64::MAX) };
        let mut rest = frames;
        while let Ok(Some((header, n))) = crate::ws::frame::parse_header(rest, &limits) {
            let Some(frame) = rest.get(..n + header.payload_len) else { break };
            rest = &rest[frame.len()..];
            let whole_data = header.fin && header.rsv == 0 && matches!(header.opcode, Opcode::Text | Opcode::Binary);
            match whole_data.then(|| pmd.compress(codecs, &frame[n..])).flatten() {
                Some(compressed) => self.push_compressed_frame(pools, header.opcode, compressed),
                None => self.push_parts(pools, &[frame]),
            }
        }
        debug_assert!(rest.is_empty(), "apps queue whole frames");
    }

    /// Queues a frame encoded once for many receivers.
    pub fn push_shared_frame(&mut self, pools: &mut Pools, frame: &SharedFrame) {
        if frame.len() <= SHARED_COPY_MAX {
            self.push_parts(pools, &[frame]);
        } else {
            self.push_shared(frame.clone());
        }
    }

    /// Queues a binary frame whose `len` payload bytes are already in the connection's pipe.
    pub fn push_piped_frame(&mut self, pools: &mut Pools, len: usize) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, Opcode::Binary, len, None);
        self.push_parts(pools, &[&head[..n]]);
        self.push_piped(len);
    }

    /// Queues a ping or pong ahead of queued data (in order among themselves).
    pub fn push_control(&mut self, opcode: Opcode, payload: &[u8]) {
        debug_assert!(payload.len() <= 125, "§5.5: control frames carry at most 125 bytes");
        let mut frame = [0u8; MAX_HEADER_LEN + 125];
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, payload.len(), None);
        frame[..n].copy_from_slice(&head[..n]);
        let len = payload.len().min(125);
        frame[n..n + len].copy_from_slice(&payload[..len]);
        self.push_urgent(&frame[..n + len]);
    }

    /// Queues a close frame with a code and a reason (cut to fit 125 bytes at a character
    /// boundary), or an empty one for `None`. It goes after queued data: a close frame is the
    /// last frame (§5.5.1), so whatever is queued before it goes first (or is discarded with
    /// [`OutQueue::discard_unstarted`]).
    pub fn push_close(&mut self, pools: &mut Pools, code: Option<u16>, reason: &str) {
        let mut payload = [0u8; 125];
        let n = match code {
            Some(code) => encode_close_payload(&mut payload, code, reason),
            None => 0,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let h = encode_header(&mut head, true, Opcode::Close, n, None);
        self.push_parts(pools, &[&head[..h], &payload[..n]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_jump_queued_data_but_not_into_a_frame() {
        let mut pools = Pools::new(crate::buffer::DEFAULT_POOL_BYTES);
        let mut q = OutQueue::default();
        let big = vec![b'x'; 10_000];
        q.push_frame(&mut pools, Opcode::Binary, &big); // header chunk + payload continuation
        let shared = shared_frame(Opcode::Text, &[b'y'; 300]);
        q.push_shared_frame(&mut pools, &shared);
        q.push_shared_frame(&mut pools, &shared);
        // Nothing written yet: the pong goes first.
        q.push_control(Opcode::Pong, b"a");
        assert_eq!(&q.to_vec()[..3], &[0x8A, 1, b'a']);
        // Part of the pong and the big frame written: the next pong goes right after the big
        // frame (its header and payload stay together), before the two shared frames.
        let mut sink = Vec::new();
        let mut partial = std::io::Cursor::new(&mut sink);
        assert_eq!(q.write_to(&mut LimitedWriter(&mut partial, 3), &mut pools).unwrap(), 3);
        assert_eq!(q.write_to(&mut LimitedWriter(&mut partial, 2), &mut pools).unwrap(), 2);
        q.push_control(Opcode::Pong, b"p");
        let bytes = q.to_vec();
        let big_rest = 4 + big.len() - 2;
        assert_eq!(&bytes[big_rest..big_rest + 3], &[0x8A, 1, b'p']);
        assert_eq!(bytes.len(), big_rest + 3 + 2 * shared.len());
        // A third pong keeps its place after the second.
        q.push_control(Opcode::Pong, b"q");
        let bytes = q.to_vec();
        assert_eq!(&bytes[big_rest..big_rest + 6], &[0x8A, 1, b'p', 0x8A, 1, b'q']);
        // A slow consumer's close: the unstarted shared frames go, the pongs stay.
        assert_eq!(q.discard_unstarted(&mut pools), 2 * shared.len());
        q.push_close(&mut pools, Some(1008), "slow");
        let bytes = q.to_vec();
        assert_eq!(bytes.len(), big_rest + 6 + 2 + 2 + 4);
        // Into an empty queue, urgent units keep their order too.
        let mut q = OutQueue::default();
        for p in [b"0", b"1", b"2"] {
            q.push_control(Opcode::Pong, p);
        }
        assert_eq!(q.to_vec(), [0x8A, 1, b'0', 0x8A, 1, b'1', 0x8A, 1, b'2']);
        assert_eq!(&bytes[big_rest + 6..big_rest + 8], &[0x88, 6]);
    }

    /// Takes at most `.1` bytes in one call.
    struct LimitedWriter<'a, W>(&'a mut W, usize);

    impl<W: std::io::Write> std::io::Write for LimitedWriter<'_, W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(&buf[..buf.len().min(self.1)])
        }
        fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            self.write(first)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shared_frames_either_side_of_the_stack_assembly_bound_are_the_same_encoding() {
        for len in [0, 1, 61, 62, 63, 64, 65, 125, 126, 250, 251, 252, 253, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut want = Vec::new();
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut head, true, Opcode::Binary, len, None);
            want.extend_from_slice(&head[..n]);
            want.extend_from_slice(&payload);
            assert_eq!(&*shared_frame(Opcode::Binary, &payload), &want[..], "{len}");
            want[0] |= RSV1;
            assert_eq!(&*compressed_shared_frame(Opcode::Binary, &payload), &want[..], "{len}");
        }
    }

    #[test]
    fn small_shared_frames_are_copied_large_ones_referenced() {
        let mut pools = Pools::new(crate::buffer::DEFAULT_POOL_BYTES);
        let mut q = OutQueue::default();
        let small = shared_frame(Opcode::Text, b"hello");
        let large = shared_frame(Opcode::Text, &[b'z'; 1000]);
        for _ in 0..10 {
            q.push_shared_frame(&mut pools, &small);
        }
        q.push_shared_frame(&mut pools, &large);
        assert_eq!(Arc::strong_count(&small), 1);
        assert_eq!(Arc::strong_count(&large), 2);
        assert_eq!(q.len(), 10 * 7 + large.len());
        // One coalesced chunk and one reference.
        assert_eq!(q.footprint(), q.len() + 2 * CHUNK_OVERHEAD);
    }
}
