//! Message assembly (RFC 6455 §5.4, §5.5, §8.1): frames in, messages and control frames out.
//!
//! [`Decoder::decode`] is fed the unread part of the connection's read buffer. It unmasks
//! payload bytes in place as they arrive, validates text incrementally (so invalid UTF-8 fails
//! at the first bad byte, even mid-frame), and reports how many bytes it consumed.
//!
//! - A complete unfragmented data frame already in the buffer is returned as a slice of that
//!   buffer: no copy.
//! - A frame whose payload is still arriving, or a fragment, is copied into the decoder's
//!   assembly buffer as its bytes arrive, so the read buffer never has to hold a whole large
//!   frame and memory grows only with bytes actually received, never with declared lengths.
//! - Control frames may arrive between fragments; they are returned as they complete.

use super::close::{parse_close_payload, CloseFrame};
use super::frame::{parse_header, FrameLimits, Header, Opcode, Role};
use super::mask::{unmask, unmask_ascii};
use super::utf8::Utf8Validator;
use super::ProtocolError;

/// Limits on what the decoder accepts.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// The largest message (all fragments together), in payload bytes.
    pub max_message: usize,
    /// The largest single frame payload.
    pub max_frame: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits { max_message: 32 << 20, max_frame: 32 << 20 }
    }
}

/// Whether a data message is text (UTF-8 validated) or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    pub fn opcode(self) -> Opcode {
        match self {
            MessageKind::Text => Opcode::Text,
            MessageKind::Binary => Opcode::Binary,
        }
    }
}

/// A message the fast lane ([`Decoder::decode_message`]) received whole: its kind, its
/// payload (unmasked, text validated) and the bytes its frame took.
pub type WholeMessage<'a> = (MessageKind, &'a [u8], usize);

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message. For text the payload is valid UTF-8.
    Message(MessageKind, &'a [u8]),
    /// A whole permessage-deflate message (RSV1 on its first frame, RFC 7692 §6), still
    /// compressed: text is validated once inflated.
    Compressed(MessageKind, &'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    Close(CloseFrame<'a>),
}

/// Frame-level position in the byte stream.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Waiting for a frame header.
    Header,
    /// Inside a frame's payload; `done` bytes of it were already consumed.
    Payload { header: Header, done: usize },
}

/// One direction of one connection's message stream.
///
/// Between messages a decoder is its limits and an empty box pointer: whatever a frame or
/// message that spans reads needs (where the frame is, the message so far, the UTF-8 state)
/// lives in `Partial`, allocated when such a frame starts and dropped when the stream is
/// between messages again, so an idle connection holds none of it.
#[derive(Debug)]
pub struct Decoder {
    /// The largest frame payload, and in the top bits [`CLIENT_FRAMES`] and [`RSV1_ALLOWED`]:
    /// the limits and flags in 8 bytes (every open connection carries them).
    max_frame_and_flags: u32,
    max_message: u32,
    partial: Option<Box<Partial>>,
}

/// A frame or message in progress across reads (see [`Decoder`]).
#[derive(Debug)]
struct Partial {
    state: FrameState,
    /// The data message in progress (set between its first frame and its FIN frame).
    message: Option<MessageKind>,
    /// That message is compressed.
    compressed: bool,
    /// Payload of the message in progress, when it spans frames or reads.
    assembly: Vec<u8>,
    /// A control frame's payload while it arrives in pieces (at most 125 bytes, §5.5),
    /// dropped at the next frame.
    control: Option<Box<[u8; 125]>>,
    utf8: Utf8Validator,
    /// A completed assembled message is still lent out; clear before the next one.
    lent: bool,
}

impl Partial {
    fn new() -> Box<Partial> {
        Box::new(Partial {
            state: FrameState::Header,
            message: None,
            compressed: false,
            assembly: Vec::new(),
            control: None,
            utf8: Utf8Validator::new(),
            lent: false,
        })
    }

    /// Nothing in progress and nothing lent: the box can go.
    fn is_done(&self) -> bool {
        matches!(self.state, FrameState::Header) && self.message.is_none() && !self.lent
    }
}

/// The RSV1 bit of a frame's first byte: permessage-deflate's "compressed" mark.
const RSV1: u8 = 0x40;

/// The largest message or frame a decoder accepts: 1 GiB - 1 (the limits share their 32 bits
/// with two flags).
pub const MAX_LIMIT: u32 = (1 << 30) - 1;
/// Frames as a client reads them (from a server: unmasked).
const CLIENT_FRAMES: u32 = 1 << 31;
/// permessage-deflate was agreed: RSV1 may be set.
const RSV1_ALLOWED: u32 = 1 << 30;

impl Decoder {
    /// A decoder for frames sent by a client (masked), as a server reads them.
    pub fn server(limits: MessageLimits) -> Decoder {
        Decoder::new(Role::Server, limits)
    }

    /// A decoder for frames sent by a server (unmasked), as a client reads them.
    pub fn client(limits: MessageLimits) -> Decoder {
        Decoder::new(Role::Client, limits)
    }

    fn new(role: Role, limits: MessageLimits) -> Decoder {
        let max_message = u32::try_from(limits.max_message).unwrap_or(u32::MAX).min(MAX_LIMIT);
        let max_frame = u32::try_from(limits.max_frame).unwrap_or(u32::MAX).min(max_message);
        let role = if role == Role::Client { CLIENT_FRAMES } else { 0 };
        Decoder { max_frame_and_flags: max_frame | role, max_message, partial: None }
    }

    fn frame_limits(&self) -> FrameLimits {
        let f = self.max_frame_and_flags;
        FrameLimits {
            max_payload: u64::from(f & MAX_LIMIT),
            allowed_rsv: if f & RSV1_ALLOWED != 0 { RSV1 } else { 0 },
            role: if f & CLIENT_FRAMES != 0 { Role::Client } else { Role::Server },
        }
    }

    /// permessage-deflate was negotiated: RSV1 may mark a data message's first frame.
    pub fn allow_compression(&mut self) {
        self.max_frame_and_flags |= RSV1_ALLOWED;
    }

    /// True when no frame or message is partly received: nothing would be lost by dropping
    /// the read buffer.
    pub fn is_between_messages(&self) -> bool {
        self.partial.as_deref().is_none_or(|p| matches!(p.state, FrameState::Header) && p.message.is_none())
    }

    /// The largest message accepted.
    pub fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// Bytes `start..start + len` of the event just returned from the decoder's own buffers:
    /// an assembled message, or a control frame's payload that arrived in pieces. Empty when
    /// there is no such event.
    pub fn lent(&self, start: usize, len: usize) -> &[u8] {
        let Some(p) = self.partial.as_deref() else { return &[] };
        let buf: &[u8] = if p.lent { &p.assembly } else { p.control.as_deref().map_or(&[], |c| &c[..]) };
        start.checked_add(len).and_then(|end| buf.get(start..end)).unwrap_or(&[])
    }

    /// Bytes held by the decoder's own buffer.
    pub fn buffered_capacity(&self) -> usize {
        self.partial.as_deref().map_or(0, |p| p.assembly.capacity())
    }

    /// Takes the message just returned by [`Decoder::decode`] if it was assembled in the
    /// decoder's own buffer (it spanned frames or reads), so the caller can keep it without
    /// copying. `None` if the last message was handed out in place from the read buffer.
    pub fn take_assembled(&mut self) -> Option<Vec<u8>> {
        let p = self.partial.as_deref_mut().filter(|p| p.lent)?;
        p.lent = false;
        Some(std::mem::take(&mut p.assembly))
    }

    /// The common frame in one step: an unfragmented, uncompressed text or binary message
    /// whose frame is whole at the start of `buf`, with nothing in progress and a payload
    /// under 64 KiB. Returns its kind, its payload (unmasked in place; text validated) and
    /// the frame's length; `None`, having touched nothing, for every other case, which
    /// [`Decoder::decode`] then handles with all of §5's rules and errors. `Some(Err)` only
    /// for a text payload that is not UTF-8.
    ///
    /// Always inlined into the caller's loop: a flood of small messages goes through here
    /// once each, and a call with its result returned through memory cost more than the
    /// checks (the general path's layers were a third of a 20-byte message's user time).
    #[inline(always)]
    pub fn decode_message<'a>(&mut self, buf: &'a mut [u8]) -> Option<Result<WholeMessage<'a>, ProtocolError>> {
        if self.partial.is_some() {
            return None;
        }
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return None,
        };
        // FIN, no reserved bit, text or binary.
        let kind = match b0 {
            0x81 => MessageKind::Text,
            0x82 => MessageKind::Binary,
            _ => return None,
        };
        let client_frames = self.max_frame_and_flags & CLIENT_FRAMES != 0;
        let masked = b1 & 0x80 != 0;
        // The wrong masking for the role is an error the general path reports.
        if masked == client_frames {
            return None;
        }
        let (len, mut header_len) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (usize::from(u16::from_be_bytes([a, b])), 4),
                _ => return None,
            },
            127 => return None,
            short => (usize::from(short), 2),
        };
        // A non-minimal length (§5.2) and the size limit are the general path's errors.
        if (header_len == 4 && len < 126) || len > (self.max_frame_and_flags & MAX_LIMIT) as usize {
            return None;
        }
        let key = if masked {
            let key = match buf.get(header_len..header_len + 4) {
                Some(&[a, b, c, d]) => [a, b, c, d],
                _ => return None,
            };
            header_len += 4;
            Some(key)
        } else {
            None
        };
        let end = header_len + len;
        let payload = buf.get_mut(header_len..end)?;
        let ascii = match key {
            Some(key) if kind == MessageKind::Text => unmask_ascii(payload, key),
            Some(key) => {
                unmask(payload, key, 0);
                false
            }
            None => false,
        };
        let payload = &*payload;
        // (The validator has its own ASCII fast path: a client's unmasked text is not scanned
        // twice, nor a server's that the unmasking pass already found non-ASCII.)
        if kind == MessageKind::Text && !ascii && super::utf8::validate(payload).is_err() {
            return Some(Err(ProtocolError::InvalidUtf8));
        }
        Some(Ok((kind, payload, end)))
    }

    /// Decodes from `buf`, the unread bytes of the read buffer.
    ///
    /// Returns the event (if one completed) and the number of bytes of `buf` consumed.
    /// `(None, 0)` means more bytes are needed. The event may borrow from `buf` (a frame
    /// received whole) or from the decoder (an assembled message); it must be handled
    /// before the next call.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<(Option<Event<'a>>, usize), ProtocolError> {
        if let Some(p) = self.partial.as_deref_mut() {
            if p.lent {
                p.lent = false;
                p.assembly = Vec::new();
            }
            if p.is_done() {
                self.partial = None;
            }
        }
        let mut consumed = 0;
        let (header, done) = match self.partial.as_deref().map(|p| p.state) {
            Some(FrameState::Payload { header, done }) => (header, done),
            _ => {
                if let Some(p) = self.partial.as_deref_mut() {
                    p.control = None;
                }
                let Some((header, header_len)) = parse_header(buf, &self.frame_limits())? else {
                    return Ok((None, 0));
                };
                self.check_sequence(&header)?;
                let compressed = header.rsv & RSV1 != 0;
                let frame_end = header_len + header.payload_len;
                let whole = header.opcode.is_control() || (header.fin && header.opcode != Opcode::Continuation);
                if whole && buf.len() >= frame_end {
                    // Fast path: the whole frame is here; hand out its payload in place.
                    let frame = &mut buf[header_len..frame_end];
                    let text = header.opcode == Opcode::Text && !compressed;
                    let ascii = match header.mask {
                        Some(key) if text => unmask_ascii(frame, key),
                        Some(key) => {
                            unmask(frame, key, 0);
                            false
                        }
                        None => false,
                    };
                    let event = match data_kind(header.opcode) {
                        Some(kind) if compressed => Event::Compressed(kind, frame),
                        Some(MessageKind::Text) if ascii => Event::Message(MessageKind::Text, frame),
                        _ => complete_in_place(header.opcode, frame)?,
                    };
                    return Ok((Some(event), frame_end));
                }
                let p = self.partial.get_or_insert_with(Partial::new);
                if let Some(kind) = data_kind(header.opcode) {
                    p.message = Some(kind);
                    p.compressed = compressed;
                }
                consumed = header_len;
                (header, 0)
            }
        };
        let p = self.partial.get_or_insert_with(Partial::new);
        let (_, rest) = buf.split_at_mut(consumed);
        let available = rest.len().min(header.payload_len - done);
        let piece = &mut rest[..available];
        if let Some(key) = header.mask {
            unmask(piece, key, done);
        }
        consumed += available;
        let done = done + available;
        let finished = done == header.payload_len;
        p.state = if finished { FrameState::Header } else { FrameState::Payload { header, done } };

        if header.opcode.is_control() {
            let control = p.control.get_or_insert_with(|| Box::new([0; 125]));
            control[done - available..done].copy_from_slice(piece);
            if !finished {
                return Ok((None, consumed));
            }
            let control = &mut control[..done];
            let event = complete_in_place(header.opcode, control)?;
            return Ok((Some(event), consumed));
        }

        // A data frame (first fragment or continuation).
        let kind = p.message.unwrap_or(MessageKind::Binary);
        let validate = kind == MessageKind::Text && !p.compressed;
        if validate {
            p.utf8.feed(piece).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        p.assembly.extend_from_slice(piece);
        if !(finished && header.fin) {
            return Ok((None, consumed));
        }
        if validate {
            p.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        p.message = None;
        p.lent = true;
        if std::mem::take(&mut p.compressed) {
            return Ok((Some(Event::Compressed(kind, &p.assembly)), consumed));
        }
        Ok((Some(Event::Message(kind, &p.assembly)), consumed))
    }

    /// Checks a new frame against the message in progress and the size limit (§5.4).
    fn check_sequence(&self, header: &Header) -> Result<(), ProtocolError> {
        // RFC 7692 §6.1: RSV1 marks a message's first frame only; never a control frame or a
        // continuation.
        if header.rsv & RSV1 != 0
            && matches!(header.opcode, Opcode::Continuation | Opcode::Ping | Opcode::Pong | Opcode::Close)
        {
            return Err(ProtocolError::ReservedBitsSet);
        }
        if header.opcode.is_control() {
            return Ok(());
        }
        let (message, assembled) = self.partial.as_deref().map_or((None, 0), |p| (p.message, p.assembly.len()));
        match (header.opcode, message) {
            (Opcode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (Opcode::Text | Opcode::Binary, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            _ => {}
        }
        // Checked on the declared length, before any of the payload is accepted.
        let total = assembled.checked_add(header.payload_len);
        match total {
            Some(total) if total <= self.max_message as usize => Ok(()),
            _ => Err(ProtocolError::MessageTooBig),
        }
    }
}

fn data_kind(opcode: Opcode) -> Option<MessageKind> {
    match opcode {
        Opcode::Text => Some(MessageKind::Text),
        Opcode::Binary => Some(MessageKind::Binary),
        _ => None,
    }
}

/// Builds the event for a frame whose (unmasked) payload is complete and not fragmented.
// Always inlined: called, its result came back through memory and the caller's loads of it
// stalled (no store-to-load forwarding): 4 ns of a 20-byte message's 30 in a client's flood.
#[inline(always)]
fn complete_in_place(opcode: Opcode, payload: &mut [u8]) -> Result<Event<'_>, ProtocolError> {
    let payload = &*payload;
    Ok(match opcode {
        Opcode::Text => {
            super::utf8::validate(payload).map_err(|_| ProtocolError::InvalidUtf8)?;
            Event::Message(MessageKind::Text, payload)
        }
        Opcode::Binary => Event::Message(MessageKind::Binary, payload),
        Opcode::Ping => Event::Ping(payload),
        Opcode::Pong => Event::Pong(payload),
        Opcode::Close => Event::Close(parse_close_payload(payload)?),
        // Continuations never complete in place; check_sequence routed them to assembly.
        Opcode::Continuation => return Err(ProtocolError::UnexpectedContinuation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode_header, MAX_HEADER_LEN};

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    /// A masked client frame.
    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, fin, opcode, payload.len(), Some(KEY));
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        crate::ws::mask::unmask(&mut out[start..], KEY, 0);
        out
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
        Compressed(MessageKind, Vec<u8>),
    }

    fn own(e: Event<'_>) -> Owned {
        match e {
            Event::Compressed(kind, p) => Owned::Compressed(kind, p.to_vec()),
            Event::Message(MessageKind::Text, p) => Owned::Text(String::from_utf8(p.to_vec()).unwrap()),
            Event::Message(MessageKind::Binary, p) => Owned::Binary(p.to_vec()),
            Event::Ping(p) => Owned::Ping(p.to_vec()),
            Event::Pong(p) => Owned::Pong(p.to_vec()),
            Event::Close(c) => Owned::Close(c.code, c.reason.to_string()),
        }
    }

    /// Feeds `bytes` in chunks of `chunk` bytes the way a connection would: appending to a
    /// read buffer and decoding until no progress.
    fn run(bytes: &[u8], chunk: usize, limits: MessageLimits) -> (Vec<Owned>, Option<ProtocolError>) {
        decode_in_chunks(Decoder::server(limits), bytes, chunk)
    }

    /// What `dec` makes of `bytes` fed `chunk` bytes at a time: its events, and its error.
    fn decode_in_chunks(mut dec: Decoder, bytes: &[u8], chunk: usize) -> (Vec<Owned>, Option<ProtocolError>) {
        let mut events = Vec::new();
        let mut rbuf: Vec<u8> = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            rbuf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match dec.decode(&mut rbuf[pos..]) {
                    Ok((ev, n)) => {
                        pos += n;
                        let progressed = ev.is_some() || n > 0;
                        if let Some(ev) = ev {
                            events.push(own(ev));
                        }
                        if !progressed {
                            break;
                        }
                    }
                    Err(e) => return (events, Some(e)),
                }
            }
            rbuf.drain(..pos);
        }
        (events, None)
    }

    fn all_chunkings(bytes: &[u8], limits: MessageLimits) -> (Vec<Owned>, Option<ProtocolError>) {
        let first = run(bytes, bytes.len(), limits);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(run(bytes, chunk, limits), first, "chunk {chunk}");
        }
        first
    }

    /// What the fast lane returned, owned.
    type Fast = Option<Result<(MessageKind, Vec<u8>, usize), ProtocolError>>;

    /// The fast lane on one frame, on a copy: what it returns, or `None`.
    fn fast(dec: &mut Decoder, bytes: &[u8]) -> Fast {
        let mut buf = bytes.to_vec();
        dec.decode_message(&mut buf).map(|r| r.map(|(kind, p, used)| (kind, p.to_vec(), used)))
    }

    #[test]
    fn fast_lane_takes_whole_small_messages_and_leaves_everything_else() {
        let mut dec = Decoder::server(MessageLimits { max_message: 1000, max_frame: 1000 });
        let text = frame(true, Opcode::Text, b"Hello");
        assert_eq!(fast(&mut dec, &text), Some(Ok((MessageKind::Text, b"Hello".to_vec(), text.len()))));
        let mut two = frame(true, Opcode::Binary, &[7; 300]);
        let first = two.len();
        two.extend(frame(true, Opcode::Text, b"next"));
        assert_eq!(fast(&mut dec, &two), Some(Ok((MessageKind::Binary, vec![7; 300], first))));
        let utf8 = frame(true, Opcode::Text, "κόσμε".as_bytes());
        assert_eq!(fast(&mut dec, &utf8).unwrap().unwrap().1, "κόσμε".as_bytes());
        assert_eq!(fast(&mut dec, &frame(true, Opcode::Text, &[0xce, 0xff])), Some(Err(ProtocolError::InvalidUtf8)));
        // Everything else is the general path's, and nothing was touched: decode agrees.
        let others = [
            frame(false, Opcode::Text, b"frag"),
            frame(true, Opcode::Ping, b"p"),
            frame(true, Opcode::Close, &[0x03, 0xE8]),
            frame(true, Opcode::Binary, &[1; 1001]),
            text[..text.len() - 1].to_vec(),
            text[..1].to_vec(),
            vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
            vec![0x81, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0],
            vec![0xC1, 0x80, 1, 2, 3, 4],
        ];
        for bytes in others {
            assert_eq!(fast(&mut dec, &bytes), None, "{bytes:02x?}");
            let mut buf = bytes.clone();
            let _ = Decoder::server(MessageLimits { max_message: 1000, max_frame: 1000 }).decode(&mut buf);
        }
        // A frame in progress: the general path owns the stream until it is between messages.
        let mut buf = frame(false, Opcode::Text, b"fr");
        assert!(dec.decode(&mut buf).unwrap().0.is_none());
        assert_eq!(fast(&mut dec, &text), None);
        let mut client = Decoder::client(MessageLimits::default());
        assert_eq!(fast(&mut client, &text), None, "a masked frame from a server is an error, not a message");
        assert_eq!(fast(&mut client, &[0x82, 2, 9, 9]), Some(Ok((MessageKind::Binary, vec![9, 9], 4))));
    }

    #[test]
    fn single_frames() {
        let mut bytes = frame(true, Opcode::Text, b"Hello");
        bytes.extend(frame(true, Opcode::Binary, &[0, 1, 2]));
        bytes.extend(frame(true, Opcode::Ping, b"p"));
        bytes.extend(frame(true, Opcode::Pong, b""));
        bytes.extend(frame(true, Opcode::Close, &[0x03, 0xE8, b'o', b'k']));
        let (events, err) = all_chunkings(&bytes, MessageLimits::default());
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                Owned::Text("Hello".into()),
                Owned::Binary(vec![0, 1, 2]),
                Owned::Ping(b"p".to_vec()),
                Owned::Pong(vec![]),
                Owned::Close(Some(1000), "ok".into()),
            ]
        );
    }

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut bytes = frame(false, Opcode::Text, "κό".as_bytes());
        bytes.extend(frame(true, Opcode::Ping, b"mid"));
        // A fragment boundary inside a multi-byte character.
        let sigma = "σ".as_bytes();
        bytes.extend(frame(false, Opcode::Continuation, &sigma[..1]));
        bytes.extend(frame(false, Opcode::Continuation, &sigma[1..]));
        bytes.extend(frame(true, Opcode::Continuation, "με".as_bytes()));
        bytes.extend(frame(false, Opcode::Binary, &[]));
        bytes.extend(frame(true, Opcode::Continuation, &[9; 300]));
        let (events, err) = all_chunkings(&bytes, MessageLimits::default());
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![Owned::Ping(b"mid".to_vec()), Owned::Text("κόσμε".into()), Owned::Binary(vec![9; 300])]
        );
    }

    #[test]
    fn sequence_errors() {
        use ProtocolError::*;
        let cont = frame(true, Opcode::Continuation, b"x");
        assert_eq!(all_chunkings(&cont, MessageLimits::default()).1, Some(UnexpectedContinuation));
        let mut two_starts = frame(false, Opcode::Text, b"a");
        two_starts.extend(frame(true, Opcode::Text, b"b"));
        assert_eq!(all_chunkings(&two_starts, MessageLimits::default()).1, Some(ExpectedContinuation));
        let mut close1 = frame(true, Opcode::Close, &[3]);
        close1.truncate(close1.len());
        assert_eq!(all_chunkings(&close1, MessageLimits::default()).1, Some(CloseCodeTruncated));
        let bad_code = frame(true, Opcode::Close, &[0x03, 0xED]);
        assert_eq!(all_chunkings(&bad_code, MessageLimits::default()).1, Some(InvalidCloseCode(1005)));
        let bad_reason = frame(true, Opcode::Close, &[0x03, 0xE8, 0xC0]);
        assert_eq!(all_chunkings(&bad_reason, MessageLimits::default()).1, Some(InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        let mut bytes = frame(false, Opcode::Text, &[0xce, 0xba]);
        bytes.extend(frame(false, Opcode::Continuation, &[0xf4, 0x90, 0x80, 0x80]));
        // This fragment never arrives in the test: the error must come without it.
        let (events, err) = run(&bytes, 1, MessageLimits::default());
        assert!(events.is_empty());
        assert_eq!(err, Some(ProtocolError::InvalidUtf8));
        // Mid-frame: the frame declares 100 bytes, only 6 arrive, the 3rd is invalid.
        let full = frame(true, Opcode::Text, &[b'a', b'b', 0xff, b'c', b'd', b'e'].repeat(17)[..100]);
        let (_, err) = run(&full[..6 + 6], 3, MessageLimits::default());
        assert_eq!(err, Some(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn text_ending_mid_character_is_invalid() {
        let mut bytes = frame(false, Opcode::Text, b"a");
        bytes.extend(frame(true, Opcode::Continuation, &[0xe2, 0x82]));
        assert_eq!(all_chunkings(&bytes, MessageLimits::default()).1, Some(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn size_limits() {
        let limits = MessageLimits { max_message: 10, max_frame: 8 };
        let (ev, err) = all_chunkings(&frame(true, Opcode::Binary, &[0; 8]), limits);
        assert_eq!((ev.len(), err), (1, None));
        assert_eq!(all_chunkings(&frame(true, Opcode::Binary, &[0; 9]), limits).1, Some(ProtocolError::MessageTooBig));
        let mut frags = frame(false, Opcode::Binary, &[0; 6]);
        frags.extend(frame(true, Opcode::Continuation, &[0; 4]));
        assert_eq!(all_chunkings(&frags, limits).0.len(), 1);
        let mut frags = frame(false, Opcode::Binary, &[0; 6]);
        frags.extend(frame(true, Opcode::Continuation, &[0; 5]));
        assert_eq!(all_chunkings(&frags, limits).1, Some(ProtocolError::MessageTooBig));
    }

    #[test]
    fn large_assembly_buffer_is_released_after_delivery() {
        let big = frame(true, Opcode::Binary, &vec![1; 200_000]);
        let mut dec = Decoder::server(MessageLimits::default());
        let mut buf = big[..100_000].to_vec();
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert!(ev.is_none() && n == 100_000);
        let mut rest = big[100_000..].to_vec();
        let (ev, _) = dec.decode(&mut rest).unwrap();
        assert!(matches!(ev, Some(Event::Message(MessageKind::Binary, p)) if p.len() == 200_000));
        assert!(dec.is_between_messages());
        let (ev, n) = dec.decode(&mut []).unwrap();
        assert!(ev.is_none() && n == 0);
        assert_eq!(dec.buffered_capacity(), 0);
    }

    /// Frames with RSV1 (permessage-deflate) through a decoder that allows it.
    fn run_compressed(bytes: &[u8], chunk: usize) -> (Vec<Owned>, Option<ProtocolError>) {
        let mut dec = Decoder::server(MessageLimits::default());
        dec.allow_compression();
        decode_in_chunks(dec, bytes, chunk)
    }

    #[test]
    fn compressed_messages_skip_utf8_and_keep_rsv1_rules() {
        // Compressed text is not UTF-8 on the wire: not checked here (after inflating).
        let mut first = frame(true, Opcode::Text, &[0xff, 0xfe]);
        first[0] |= 0x40;
        let mut frag = frame(false, Opcode::Binary, b"ab");
        frag[0] |= 0x40;
        let mut bytes = first.clone();
        bytes.extend(frag.clone());
        bytes.extend(frame(true, Opcode::Continuation, b"cd"));
        bytes.extend(frame(true, Opcode::Text, b"plain"));
        for chunk in [1, 3, 1000] {
            let (events, err) = run_compressed(&bytes, chunk);
            assert_eq!(err, None);
            assert_eq!(
                events,
                vec![
                    Owned::Compressed(MessageKind::Text, vec![0xff, 0xfe]),
                    Owned::Compressed(MessageKind::Binary, b"abcd".to_vec()),
                    Owned::Text("plain".into()),
                ],
                "chunk {chunk}"
            );
        }
        // RSV1 on a continuation or a control frame is an error even when negotiated.
        let mut cont = frame(true, Opcode::Continuation, b"x");
        cont[0] |= 0x40;
        let mut bad = frag.clone();
        bad.extend(cont);
        assert_eq!(run_compressed(&bad, 1000).1, Some(ProtocolError::ReservedBitsSet));
        let mut ping = frame(true, Opcode::Ping, b"");
        ping[0] |= 0x40;
        assert_eq!(run_compressed(&ping, 1000).1, Some(ProtocolError::ReservedBitsSet));
        // Without negotiation, RSV1 anywhere is an error.
        assert_eq!(run(&first, 1000, MessageLimits::default()).1, Some(ProtocolError::ReservedBitsSet));
    }
}
