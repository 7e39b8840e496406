//! The legacy drafts' wire format, no I/O: draft-hixie-thewebsocketprotocol-76 (and -75,
//! which has no keys). Pure functions on byte slices, fuzzed (`hixie`).
//!
//! hixie-76 proves the handshake with two keys in headers and eight bytes after the head: each
//! key's digits, read as a number, divided by its count of spaces (which must divide it
//! exactly, and leave a 32-bit quotient), then MD5 of the two quotients (big-endian) and the
//! eight bytes. Frames are text only: `0x00`, UTF-8, `0xFF`; `0xFF 0x00` closes. The
//! length-prefixed form (a first byte with the top bit set) is refused: no client sends it,
//! and it would let a peer declare lengths this format has no limit for.
//!
//! These drafts have no masking: a hostile page could make a browser of the time send bytes
//! that intermediaries read as something else. Routes enable them only with an origin list.
//!
//! The apps write RFC 6455 frames; [`Translator`] turns them into legacy frames for a legacy
//! client, so every app and backend serves both without knowing.

use crate::http::request::Request;
use crate::http::response::push_header;
use crate::ws::frame::{parse_header, FrameLimits, Opcode};

/// A legacy draft a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draft {
    /// draft-hixie-thewebsocketprotocol-76 (= draft-ietf-hybi-thewebsocketprotocol-00).
    Hixie76,
    /// draft-hixie-thewebsocketprotocol-75: no keys, no closing handshake.
    Hixie75,
}

impl Draft {
    pub fn name(self) -> &'static str {
        match self {
            Draft::Hixie76 => "hixie-76",
            Draft::Hixie75 => "hixie-75",
        }
    }

    pub fn parse(name: &str) -> Option<Draft> {
        match name {
            "hixie-76" => Some(Draft::Hixie76),
            "hixie-75" => Some(Draft::Hixie75),
            _ => None,
        }
    }
}

/// The drafts a route accepts (its `legacy` list); none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drafts {
    pub hixie76: bool,
    pub hixie75: bool,
}

impl Drafts {
    pub fn any(self) -> bool {
        self.hixie76 || self.hixie75
    }

    pub fn allows(self, draft: Draft) -> bool {
        match draft {
            Draft::Hixie76 => self.hixie76,
            Draft::Hixie75 => self.hixie75,
        }
    }
}

/// Which legacy draft an upgrade request speaks, if it is one: `Upgrade: WebSocket` without
/// RFC 6455's `Sec-WebSocket-Version` and `Sec-WebSocket-Key`; hixie-76 sends
/// `Sec-WebSocket-Key1` / `Key2`, hixie-75 nothing of the kind.
pub fn detect(req: &Request<'_, '_>) -> Option<Draft> {
    let rfc6455 = req.header("sec-websocket-version").is_some() || req.header("sec-websocket-key").is_some();
    if rfc6455 || !req.has_token("upgrade", "websocket") {
        return None;
    }
    let keyed = req.header("sec-websocket-key1").is_some() || req.header("sec-websocket-key2").is_some();
    Some(if keyed { Draft::Hixie76 } else { Draft::Hixie75 })
}

/// A valid legacy upgrade request: what the 101 response echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyRequest<'b> {
    pub draft: Draft,
    pub origin: &'b [u8],
    pub host: &'b [u8],
    /// The request-target, for `Sec-WebSocket-Location`.
    pub target: &'b str,
    /// hixie-76's keys' numbers.
    pub numbers: Option<(u32, u32)>,
}

/// Checks a legacy upgrade request: GET, `Connection: Upgrade`, a `Host`, an `Origin` on the
/// route's list (required: the list is what stands in for the masking these drafts lack), and
/// for hixie-76 both keys, valid.
pub fn validate<'b>(req: &Request<'b, '_>, draft: Draft, origins: &[String]) -> Result<LegacyRequest<'b>, HixieError> {
    if req.method != "GET" {
        return Err(HixieError::MethodNotGet);
    }
    if !req.has_token("connection", "upgrade") {
        return Err(HixieError::MissingConnectionUpgrade);
    }
    let host = req.header("host").filter(|h| !h.is_empty()).ok_or(HixieError::MissingHost)?;
    if !host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b)) {
        return Err(HixieError::BadHost);
    }
    let origin = req.header("origin").filter(|o| !o.is_empty()).ok_or(HixieError::MissingOrigin)?;
    if !origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin)) {
        return Err(HixieError::OriginNotAllowed);
    }
    let numbers = match draft {
        Draft::Hixie75 => None,
        Draft::Hixie76 => {
            let key1 = req.header("sec-websocket-key1").ok_or(HixieError::MissingKey)?;
            let key2 = req.header("sec-websocket-key2").ok_or(HixieError::MissingKey)?;
            Some((key_number(key1)?, key_number(key2)?))
        }
    };
    Ok(LegacyRequest { draft, origin, host, target: req.target, numbers })
}

/// Appends the 101 response (and for hixie-76 the 16-byte answer to `key3`, the eight bytes
/// that followed the head). `tls`: the Location's scheme is `wss`.
pub fn write_accept(out: &mut Vec<u8>, req: &LegacyRequest<'_>, tls: bool, subprotocol: Option<&str>, key3: &[u8; 8]) {
    // hixie-75 clients compare the first three lines byte for byte (§4.1 of the draft).
    let (status, prefix) = match req.draft {
        Draft::Hixie76 => ("HTTP/1.1 101 WebSocket Protocol Handshake\r\n", "Sec-WebSocket-"),
        Draft::Hixie75 => ("HTTP/1.1 101 Web Socket Protocol Handshake\r\n", "WebSocket-"),
    };
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"Upgrade: WebSocket\r\nConnection: Upgrade\r\n");
    let header = |out: &mut Vec<u8>, name: &str, value: &[&[u8]]| {
        let value: Vec<u8> = value.concat();
        push_header(out, &format!("{prefix}{name}"), &value);
    };
    header(out, "Origin", &[req.origin]);
    let scheme: &[u8] = if tls { b"wss://" } else { b"ws://" };
    header(out, "Location", &[scheme, req.host, req.target.as_bytes()]);
    if let Some(p) = subprotocol {
        header(out, "Protocol", &[p.as_bytes()]);
    }
    out.extend_from_slice(b"\r\n");
    if let Some((n1, n2)) = req.numbers {
        out.extend_from_slice(&challenge(n1, n2, key3));
    }
}

/// Why a legacy handshake or frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HixieError {
    MethodNotGet,
    MissingConnectionUpgrade,
    MissingHost,
    /// A `Host` that is not a host and port (RFC 3986's characters): it is echoed in the
    /// Location header, so it must be one.
    BadHost,
    /// These drafts' only protection is the origin check: no `Origin`, no connection.
    MissingOrigin,
    OriginNotAllowed,
    /// hixie-76 without `Sec-WebSocket-Key1` or `Sec-WebSocket-Key2`.
    MissingKey,
    /// A key without spaces (division by zero in the draft).
    KeyWithoutSpaces,
    /// A key's number is not a multiple of its spaces.
    KeyNotDivisible,
    /// A key's number, or its quotient, does not fit 32 bits.
    KeyTooLarge,
    /// A frame that does not start with 0x00 (text) or 0xFF 0x00 (close).
    BadFrameType,
    /// A text frame longer than the route's `max_message_size`.
    TooBig,
    InvalidUtf8,
}

impl HixieError {
    /// The HTTP status for a refused handshake (frames' errors close the connection).
    pub fn status(self) -> u16 {
        match self {
            HixieError::MethodNotGet => 405,
            HixieError::MissingOrigin | HixieError::OriginNotAllowed => 403,
            _ => 400,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HixieError::MethodNotGet => "WebSocket upgrade requires GET",
            HixieError::MissingConnectionUpgrade => "Connection header must include Upgrade",
            HixieError::MissingHost => "missing Host header",
            HixieError::BadHost => "Host is not a host name or address",
            HixieError::MissingOrigin => "a legacy (hixie) WebSocket client must send Origin",
            HixieError::OriginNotAllowed => "origin not allowed",
            HixieError::MissingKey => "hixie-76 needs both Sec-WebSocket-Key1 and Sec-WebSocket-Key2",
            HixieError::KeyWithoutSpaces => "a Sec-WebSocket-Key has no spaces",
            HixieError::KeyNotDivisible => "a Sec-WebSocket-Key's number is not a multiple of its spaces",
            HixieError::KeyTooLarge => "a Sec-WebSocket-Key's number does not fit 32 bits",
            HixieError::BadFrameType => "only text frames (0x00 .. 0xFF) and the close (0xFF 0x00) are accepted",
            HixieError::TooBig => "message larger than max_message_size",
            HixieError::InvalidUtf8 => "invalid UTF-8 in a text frame",
        }
    }
}

/// A key's number: its digits divided by its spaces.
pub fn key_number(key: &[u8]) -> Result<u32, HixieError> {
    let mut digits: u64 = 0;
    let mut spaces: u64 = 0;
    for &b in key {
        match b {
            b'0'..=b'9' => {
                digits = digits
                    .checked_mul(10)
                    .and_then(|d| d.checked_add(u64::from(b - b'0')))
                    .ok_or(HixieError::KeyTooLarge)?;
                if digits > u64::from(u32::MAX) {
                    return Err(HixieError::KeyTooLarge);
                }
            }
            b' ' => spaces += 1,
            _ => {}
        }
    }
    if spaces == 0 {
        return Err(HixieError::KeyWithoutSpaces);
    }
    if digits % spaces != 0 {
        return Err(HixieError::KeyNotDivisible);
    }
    u32::try_from(digits / spaces).map_err(|_| HixieError::KeyTooLarge)
}

/// The 16 bytes that end a hixie-76 server handshake.
pub fn challenge_response(key1: &[u8], key2: &[u8], key3: &[u8; 8]) -> Result<[u8; 16], HixieError> {
    Ok(challenge(key_number(key1)?, key_number(key2)?, key3))
}

/// MD5 of the two keys' numbers (big-endian) and key3.
fn challenge(n1: u32, n2: u32, key3: &[u8; 8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut input = [0u8; 16];
    input[..4].copy_from_slice(&n1.to_be_bytes());
    input[4..8].copy_from_slice(&n2.to_be_bytes());
    input[8..].copy_from_slice(key3);
    Md5::digest(input).into()
}

/// A legacy frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text message (valid UTF-8).
    Text(&'a [u8]),
    /// `0xFF 0x00`: the client closes.
    Close,
}

/// The first frame of `buf`: `Ok(None)` while incomplete (at most `max` payload bytes are
/// waited for), with the bytes it takes.
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<(Frame<'_>, usize)>, HixieError> {
    match buf {
        [] => Ok(None),
        [0x00, rest @ ..] => match memchr::memchr(0xFF, rest) {
            Some(end) => {
                let text = &rest[..end];
                if text.len() > max {
                    return Err(HixieError::TooBig);
                }
                std::str::from_utf8(text).map_err(|_| HixieError::InvalidUtf8)?;
                Ok(Some((Frame::Text(text), end + 2)))
            }
            None if rest.len() > max => Err(HixieError::TooBig),
            None => Ok(None),
        },
        [0xFF] => Ok(None),
        [0xFF, 0x00, ..] => Ok(Some((Frame::Close, 2))),
        _ => Err(HixieError::BadFrameType),
    }
}

/// An incomplete text frame at least this long moves into the decoder's own buffer, so a
/// message longer than a read buffer can arrive (up to `max_message_size`).
pub const SPILL_AT: usize = 4096;

/// Frames from a legacy client across reads: [`parse_frame`] on what is buffered, and a text
/// frame too long to wait in the read buffer joined here.
#[derive(Debug, Default)]
pub struct Decoder {
    /// A text frame's bytes so far (its 0x00 consumed), once it outgrew [`SPILL_AT`].
    partial: Option<Vec<u8>>,
    /// `partial` is a whole message, just returned.
    returned: bool,
}

impl Decoder {
    /// The next frame from `buf` (the unread bytes) and the bytes it took; `(None, n)` with
    /// `n > 0` when bytes went into a message in progress, `(None, 0)` when more are needed.
    pub fn decode<'a>(&'a mut self, buf: &'a [u8], max: usize) -> Result<(Option<Frame<'a>>, usize), HixieError> {
        if std::mem::take(&mut self.returned) {
            self.partial = None;
        }
        if self.partial.is_some() {
            return self.join(buf, max);
        }
        match parse_frame(buf, max)? {
            Some((frame, used)) => Ok((Some(frame), used)),
            None if buf.len() >= SPILL_AT && buf[0] == 0x00 => {
                self.partial = Some(buf[1..].to_vec());
                Ok((None, buf.len()))
            }
            None => Ok((None, 0)),
        }
    }

    /// More of a message in progress.
    fn join<'a>(&'a mut self, buf: &[u8], max: usize) -> Result<(Option<Frame<'a>>, usize), HixieError> {
        let joined = self.partial.get_or_insert_with(Vec::new);
        let end = memchr::memchr(0xFF, buf);
        let take = end.unwrap_or(buf.len());
        if joined.len() + take > max {
            return Err(HixieError::TooBig);
        }
        joined.extend_from_slice(&buf[..take]);
        if end.is_none() {
            return Ok((None, take));
        }
        if crate::ws::utf8::validate(joined).is_err() {
            return Err(HixieError::InvalidUtf8);
        }
        self.returned = true;
        Ok((Some(Frame::Text(joined)), take + 1))
    }

    /// The message just returned, if it was joined in the decoder's own buffer (no copy).
    pub fn take_assembled(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.returned).then(|| self.partial.take()).flatten()
    }

    /// No frame is partly received into the decoder.
    pub fn is_between_messages(&self) -> bool {
        self.partial.is_none() || self.returned
    }
}

/// Appends a text frame (the caller sends text only: these drafts have no binary messages).
pub fn encode_text(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(0x00);
    out.extend_from_slice(text);
    out.push(0xFF);
}

/// The closing frame.
pub const CLOSE: [u8; 2] = [0xFF, 0x00];

/// Turns the RFC 6455 frames the server writes (unmasked, uncompressed: what the apps and
/// the fan-out queue) into legacy frames for a legacy client.
///
/// A message goes as one text frame when it is valid UTF-8, text or binary (these drafts have
/// no binary messages: a backend or a publisher sending UTF-8 in binary frames still reaches a
/// legacy client); otherwise it is dropped and counted. Fragments are joined first, up to
/// `max` bytes (past it the message is dropped). Pings, pongs and close frames are not
/// translated: the connection sends the legacy close itself and never pings.
#[derive(Debug, Default)]
pub struct Translator {
    /// A fragmented message being joined.
    partial: Option<Vec<u8>>,
    /// Inside a fragmented message that is being dropped (too large).
    dropping: bool,
}

/// What one [`Translator::translate`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    pub messages: usize,
    /// Messages that could not be sent as text (not UTF-8, or fragments past `max`).
    pub dropped: usize,
}

impl Translator {
    /// Appends to `out` the legacy frames for `frames` (whole frames; an incomplete one at
    /// the end is ignored).
    pub fn translate(&mut self, frames: &[u8], max: usize, out: &mut Vec<u8>) -> Translated {
        let limits = FrameLimits::client(max as u64);
        let mut done = Translated::default();
        let mut rest = frames;
        while let Ok(Some((header, n))) = parse_header(rest, &limits) {
            let Some(payload) = rest.get(n..n + header.payload_len) else { break };
            rest = &rest[n + header.payload_len..];
            let whole = match header.opcode {
                Opcode::Text | Opcode::Binary if header.fin => {
                    self.partial = None;
                    self.dropping = false;
                    Some(payload)
                }
                Opcode::Text | Opcode::Binary => {
                    self.partial = Some(payload.to_vec());
                    self.dropping = false;
                    None
                }
                Opcode::Continuation => {
                    match &mut self.partial {
                        Some(joined) if joined.len() + payload.len() <= max => joined.extend_from_slice(payload),
                        Some(_) => {
                            self.partial = None;
                            self.dropping = true;
                        }
                        None => {}
                    }
                    if header.fin {
                        if std::mem::take(&mut self.dropping) {
                            done.dropped += 1;
                        }
                        if let Some(joined) = self.partial.take() {
                            done.add(push_text(out, &joined));
                        }
                    }
                    None
                }
                _ => None,
            };
            if let Some(payload) = whole {
                done.add(push_text(out, payload));
            }
        }
        done
    }
}

impl Translated {
    fn add(&mut self, sent: bool) {
        if sent {
            self.messages += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// Appends `payload` as a text frame if it is valid UTF-8 (which never holds 0xFF, the
/// frame's end); returns whether it did.
pub fn push_text(out: &mut Vec<u8>, payload: &[u8]) -> bool {
    if crate::ws::utf8::validate(payload).is_err() {
        return false;
    }
    encode_text(out, payload);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::MAX_HEADERS;

    #[test]
    fn the_drafts_own_example() {
        // draft-hixie-thewebsocketprotocol-76 §1.3 / §5.2.
        let key1 = b"18x 6]8vM;54 *(5:  {   U1]8  z [  8";
        let key2 = b"1_ tx7X d  <  nw  334J702) 7]o}` 0";
        assert_eq!(key_number(key1), Ok(155_712_099));
        assert_eq!(key_number(key2), Ok(173_347_027));
        assert_eq!(challenge_response(key1, key2, b"Tm[K T2u"), Ok(*b"fQJ,fN/4F4!~K~MH"));
    }

    #[test]
    fn bad_keys() {
        assert_eq!(key_number(b"12345"), Err(HixieError::KeyWithoutSpaces));
        assert_eq!(key_number(b"1 2 3"), Err(HixieError::KeyNotDivisible)); // 123 / 2
        assert_eq!(key_number(b"99999999999 "), Err(HixieError::KeyTooLarge));
        assert_eq!(key_number(b"4294967295 "), Ok(u32::MAX));
        assert_eq!(key_number(b"8589934590  "), Err(HixieError::KeyTooLarge)); // digits over 32 bits
        assert_eq!(key_number(b" "), Ok(0));
    }

    #[test]
    fn frames() {
        assert_eq!(parse_frame(b"\x00hello\xff\x00", 100), Ok(Some((Frame::Text(b"hello"), 7))));
        assert_eq!(parse_frame(b"\x00hel", 100), Ok(None));
        assert_eq!(parse_frame(b"\xff", 100), Ok(None));
        assert_eq!(parse_frame(b"\xff\x00", 100), Ok(Some((Frame::Close, 2))));
        assert_eq!(parse_frame(b"\x80\x05hello", 100), Err(HixieError::BadFrameType));
        assert_eq!(parse_frame(b"\x01x\xff", 100), Err(HixieError::BadFrameType));
        assert_eq!(parse_frame(b"\x00\xc3\x28\xff", 100), Err(HixieError::InvalidUtf8));
        assert_eq!(parse_frame(b"\x00abcdef", 5), Err(HixieError::TooBig));
        assert_eq!(parse_frame(b"\x00abcde\xff", 5), Ok(Some((Frame::Text(b"abcde"), 7))));
        let mut out = Vec::new();
        encode_text(&mut out, "héllo".as_bytes());
        assert_eq!(parse_frame(&out, 100), Ok(Some((Frame::Text("héllo".as_bytes()), out.len()))));
    }

    #[test]
    fn long_frames_are_joined_across_reads() {
        let text = "é".repeat(SPILL_AT); // 8 KiB
        let mut wire = Vec::new();
        encode_text(&mut wire, text.as_bytes());
        wire.extend_from_slice(b"\x00next\xff\xff\x00");
        let mut d = Decoder::default();
        // Reads of 3000 bytes: the first waits in the read buffer, the second spills.
        let mut pending: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        for read in wire.chunks(3000) {
            pending.extend_from_slice(read);
            loop {
                match d.decode(&pending, 1 << 20).unwrap() {
                    (Some(Frame::Text(t)), used) => {
                        got.push(String::from_utf8(t.to_vec()).unwrap());
                        pending.drain(..used);
                    }
                    (Some(Frame::Close), used) => {
                        got.push("CLOSE".into());
                        pending.drain(..used);
                    }
                    (None, 0) => break,
                    (None, used) => {
                        pending.drain(..used);
                    }
                }
            }
        }
        assert_eq!(got, [text.as_str(), "next", "CLOSE"]);
        assert!(d.is_between_messages());
        // The limit holds across reads too.
        let mut d = Decoder::default();
        let big = [&[0u8][..], &[b'a'; SPILL_AT]].concat();
        assert_eq!(d.decode(&big, SPILL_AT + 10).unwrap(), (None, big.len()));
        assert_eq!(d.decode(&[b'a'; 11], SPILL_AT + 10), Err(HixieError::TooBig));
    }

    fn rfc(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; crate::ws::frame::MAX_HEADER_LEN];
        let n = crate::ws::frame::encode_header(&mut head, fin, opcode, payload.len(), None);
        [&head[..n], payload].concat()
    }

    #[test]
    fn translation() {
        let mut t = Translator::default();
        let mut out = Vec::new();
        let mut frames = rfc(Opcode::Text, true, "héllo".as_bytes());
        frames.extend(rfc(Opcode::Ping, true, b"p"));
        frames.extend(rfc(Opcode::Binary, true, b"utf8 in binary"));
        frames.extend(rfc(Opcode::Binary, true, b"\xff\x00not text"));
        frames.extend(rfc(Opcode::Text, false, b"one "));
        frames.extend(rfc(Opcode::Continuation, false, b"two "));
        frames.extend(rfc(Opcode::Continuation, true, b"three"));
        frames.extend(rfc(Opcode::Close, true, b"\x03\xe8"));
        let done = t.translate(&frames, 100, &mut out);
        assert_eq!(done, Translated { messages: 3, dropped: 1 });
        let mut expected = Vec::new();
        for m in ["héllo", "utf8 in binary", "one two three"] {
            encode_text(&mut expected, m.as_bytes());
        }
        assert_eq!(out, expected);
        // Fragments past `max` are dropped, whichever call brings them.
        out.clear();
        assert_eq!(t.translate(&rfc(Opcode::Text, false, b"12345"), 8, &mut out), Translated::default());
        assert_eq!(t.translate(&rfc(Opcode::Continuation, false, b"6789"), 8, &mut out), Translated::default());
        let done = t.translate(&rfc(Opcode::Continuation, true, b"0"), 8, &mut out);
        assert_eq!(done, Translated { messages: 0, dropped: 1 });
        assert!(out.is_empty());
        let done = t.translate(&rfc(Opcode::Text, true, b"fine"), 8, &mut out);
        assert_eq!(done, Translated { messages: 1, dropped: 0 });
    }

    fn request<'b, 'h>(head: &'b [u8], storage: &'h mut [httparse::Header<'b>; MAX_HEADERS]) -> Request<'b, 'h> {
        let limits = crate::http::request::HeadLimits { max_head_bytes: 8192, max_headers: 64 };
        crate::http::request::parse_request(head, storage, &limits).unwrap().unwrap().0
    }

    const DRAFT76: &[u8] = b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: sample\r\nUpgrade: WebSocket\r\n\
Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n";

    #[test]
    fn the_drafts_own_handshake() {
        // draft-hixie-thewebsocketprotocol-76 §1.2, answered byte for byte.
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = request(DRAFT76, &mut storage);
        assert_eq!(detect(&req), Some(Draft::Hixie76));
        let origins = ["http://example.com".to_string()];
        let legacy = validate(&req, Draft::Hixie76, &origins).unwrap();
        let mut out = Vec::new();
        write_accept(&mut out, &legacy, false, Some("sample"), b"^n:ds[4U");
        let expected: &[u8] = b"HTTP/1.1 101 WebSocket Protocol Handshake\r\nUpgrade: WebSocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Origin: http://example.com\r\n\
Sec-WebSocket-Location: ws://example.com/demo\r\nSec-WebSocket-Protocol: sample\r\n\r\n8jKS'y:G*Co,Wxa-";
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(expected));
    }

    #[test]
    fn hixie75_and_refusals() {
        let head = b"GET /chat?x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h:8080\r\n\
Origin: https://ok.example\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = request(head, &mut storage);
        assert_eq!(detect(&req), Some(Draft::Hixie75));
        let origins = ["https://ok.example".to_string()];
        let legacy = validate(&req, Draft::Hixie75, &origins).unwrap();
        let mut out = Vec::new();
        write_accept(&mut out, &legacy, true, None, &[0; 8]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
WebSocket-Origin: https://ok.example\r\nWebSocket-Location: wss://h:8080/chat?x=1\r\n\r\n"
        );
        let other = ["https://other.example".to_string()];
        assert_eq!(validate(&req, Draft::Hixie75, &other), Err(HixieError::OriginNotAllowed));

        let cases: &[(&[u8], HixieError)] = &[
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h\r\n\r\n", HixieError::MissingOrigin),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nOrigin: https://ok.example\r\n\r\n", HixieError::MissingHost),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h\xa3\r\nOrigin: https://ok.example\r\n\r\n", HixieError::BadHost),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h/x?\r\nOrigin: https://ok.example\r\n\r\n", HixieError::BadHost),
            (b"POST / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h\r\n\r\n", HixieError::MethodNotGet),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nHost: h\r\nOrigin: https://ok.example\r\n\r\n", HixieError::MissingConnectionUpgrade),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h\r\nOrigin: https://ok.example\r\nSec-WebSocket-Key1: 1 2\r\n\r\n", HixieError::MissingKey),
            (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: h\r\nOrigin: https://ok.example\r\nSec-WebSocket-Key1: 12\r\nSec-WebSocket-Key2: 1 2\r\n\r\n", HixieError::KeyWithoutSpaces),
        ];
        for (head, expected) in cases {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let req = request(head, &mut storage);
            let draft = detect(&req).unwrap();
            assert_eq!(validate(&req, draft, &origins), Err(*expected), "{}", String::from_utf8_lossy(head));
        }
        // RFC 6455 requests are not legacy ones.
        let head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: h\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(detect(&request(head, &mut storage)), None);
    }
}
