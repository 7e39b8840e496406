//! Fuzz entry points. Each `fuzz/fuzz_targets/*.rs` calls exactly one of these; they assert
//! the invariants the protocol core promises, so a violation is a crash the fuzzer reports.

mod connection;
mod jwt;

pub use connection::connection;
pub use jwt::jwt;

use crate::http::request::HeadLimits;
use crate::ws::close::parse_close_payload;
use crate::ws::frame::{encode_header, parse_header, FrameLimits, MAX_HEADER_LEN};
use crate::ws::handshake::{respond, Policy};
use crate::ws::mask::{unmask, unmask_naive};
use crate::ws::message::{Decoder, Event, MessageKind, MessageLimits};

/// Frame-header parsing: never panics, consumes no more than it was given, respects the
/// limit, and a parsed header re-encodes to exactly the bytes it came from (the encoding is
/// minimal, hence unique).
pub fn frame_header(data: &[u8]) {
    for limits in [FrameLimits::server(1 << 16), FrameLimits::client(u64::MAX >> 1)] {
        if let Ok(Some((header, len))) = parse_header(data, &limits) {
            assert!(len <= data.len() && len <= MAX_HEADER_LEN);
            assert!(header.payload_len as u64 <= limits.max_payload);
            assert!(!header.opcode.is_control() || (header.fin && header.payload_len <= 125));
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut out, header.fin, header.opcode, header.payload_len, header.mask);
            assert_eq!(&out[..n], &data[..len]);
        }
    }
}

/// Handshake parsing and validation: never panics, and always produces a response (an
/// HTTP/1.1 status line) unless the head is incomplete.
pub fn handshake(data: &[u8]) {
    let origins = vec!["https://example.com".to_string()];
    let protocols = vec!["chat".to_string(), "superchat".to_string()];
    let policy = Policy { origins: &origins, subprotocols: &protocols };
    let limits = HeadLimits { max_head_bytes: 4096, max_headers: 16 };
    let mut out = Vec::new();
    match respond(data, &limits, &policy, &mut out) {
        Ok(None) => {
            assert!(out.is_empty());
            assert!(data.len() < limits.max_head_bytes);
        }
        Ok(Some(head_len)) => {
            assert!(head_len <= data.len());
            assert!(out.starts_with(b"HTTP/1.1 101 "));
        }
        Err(e) => {
            assert!(out.starts_with(b"HTTP/1.1 4") || out.starts_with(b"HTTP/1.1 5"));
            assert!(e.status() >= 400);
        }
    }
}

/// The client's URL parsing, upgrade request and check of the server's answer. The input is a
/// URL line, then a response head. Never panics; a URL that parses gives a request that is
/// one complete, well-formed HTTP/1.1 head (no header smuggled in through the URL); a
/// response accepted took no more than it was given and agreed to nothing not offered.
pub fn client_handshake(data: &[u8]) {
    use crate::client::handshake::{check_response, request, Offer};
    use crate::client::url::Target;
    use crate::ws::deflate::PerMessage;
    use crate::ws::extensions::DeflateOffer;
    let split = memchr::memchr(b'\n', data).unwrap_or(data.len());
    let (url, response) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    if let Ok(target) = Target::parse(&String::from_utf8_lossy(url)) {
        assert!(target.resource.starts_with('/'));
        let req = request(&target, "dGhlIHNhbXBsZSBub25jZQ==", &Offer::default());
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        assert_eq!(parsed.parse(&req), Ok(httparse::Status::Complete(req.len())), "{target:?}");
        assert_eq!(parsed.headers.len(), 5, "{target:?}");
    }
    let protocols = ["chat".to_string()];
    // The response is checked against an offer without compression and one with a
    // restrictive permessage-deflate offer: whatever is agreed stays within it.
    let deflate = DeflateOffer {
        server_no_context_takeover: true,
        client_no_context_takeover: false,
        server_max_window_bits: 12,
        client_max_window_bits: 10,
    };
    for deflate in [None, Some(deflate)] {
        let offer = Offer { protocols: &protocols, deflate, ..Offer::default() };
        if let Ok(Some((agreed, used))) = check_response(response, "dGhlIHNhbXBsZSBub25jZQ==", &offer) {
            assert!(used <= response.len());
            assert!(agreed.protocol.is_none_or(|p| p == "chat"));
            match (deflate, agreed.deflate) {
                (None, Some(_)) => panic!("compression agreed without an offer"),
                (Some(_), Some(a)) => {
                    assert!(a.server_no_context_takeover && a.server_max_window_bits <= 12);
                    assert!(a.client_max_window_bits.is_none_or(|b| (8..=10).contains(&b)));
                    let ours = PerMessage::for_client(a, 0, 1, 8);
                    assert!(ours.agreed.server_max_window_bits <= 10);
                }
                _ => {}
            }
        }
    }
}

/// Unmasking: the fast path equals the byte loop at the offset and alignment the input picks.
pub fn unmask_vs_naive(data: &[u8]) {
    let [k0, k1, k2, k3, offset, align, rest @ ..] = data else { return };
    let key = [*k0, *k1, *k2, *k3];
    let start = usize::from(*align % 32).min(rest.len());
    let mut fast = rest.to_vec();
    let mut naive = rest.to_vec();
    unmask(&mut fast[start..], key, usize::from(*offset));
    unmask_naive(&mut naive[start..], key, usize::from(*offset));
    assert_eq!(fast, naive);
    // The fused pass (from payload position 0) unmasks the same and finds every high bit.
    let mut fused = rest.to_vec();
    let ascii = crate::ws::mask::unmask_ascii(&mut fused[start..], key);
    let mut naive0 = rest.to_vec();
    unmask_naive(&mut naive0[start..], key, 0);
    assert_eq!(fused, naive0);
    assert_eq!(ascii, naive0[start..].is_ascii());
    // A client frame written in one pass equals the header, the key, and the payload copied and
    // masked, after whatever the buffer held (the offset picks how much, and the header size).
    let head_len = [6, 8, 14][usize::from(*offset) % 3];
    let mut head = [0u8; crate::ws::frame::MAX_HEADER_LEN];
    head.iter_mut().enumerate().for_each(|(i, b)| *b = k0.wrapping_add(i as u8));
    let mut framed = rest[..start].to_vec();
    crate::ws::mask::frame_into(&mut framed, &head, head_len, &rest[start..], key);
    let mut want = rest[..start].to_vec();
    want.extend_from_slice(&head[..head_len - 4]);
    want.extend_from_slice(&key);
    want.extend_from_slice(&naive0[start..]);
    assert_eq!(framed, want);
}

/// Owned copy of an event, to compare decodings.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

const FUZZ_MAX_MESSAGE: usize = 1000;

/// Feeds `stream` to a server decoder `chunk` bytes at a time, like a connection would.
/// `fast`: each frame is offered to [`Decoder::decode_message`] first, as the server's loop
/// does; its answers must be the general path's.
fn decode_stream(stream: &[u8], chunk: usize, fast: bool) -> (Vec<Seen>, Option<crate::ws::ProtocolError>) {
    let limits = MessageLimits { max_message: FUZZ_MAX_MESSAGE, max_frame: 600 };
    let mut decoder = Decoder::server(limits);
    let mut seen = Vec::new();
    let mut rbuf = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        rbuf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            if fast {
                match decoder.decode_message(&mut rbuf[pos..]) {
                    Some(Ok((kind, payload, used))) => {
                        seen.push(Seen::Message(kind, payload.to_vec()));
                        pos += used;
                        continue;
                    }
                    Some(Err(e)) => return (seen, Some(e)),
                    None => {}
                }
            }
            let (event, used) = match decoder.decode(&mut rbuf[pos..]) {
                Ok(r) => r,
                Err(e) => return (seen, Some(e)),
            };
            pos += used;
            let Some(event) = event else {
                if used == 0 {
                    break;
                }
                continue;
            };
            seen.push(match event {
                Event::Message(kind, payload) => {
                    assert!(payload.len() <= FUZZ_MAX_MESSAGE);
                    if kind == MessageKind::Text {
                        assert!(std::str::from_utf8(payload).is_ok());
                    }
                    Seen::Message(kind, payload.to_vec())
                }
                Event::Compressed(..) => panic!("a compressed message without permessage-deflate negotiated"),
                Event::Ping(p) => {
                    assert!(p.len() <= 125);
                    Seen::Ping(p.to_vec())
                }
                Event::Pong(p) => {
                    assert!(p.len() <= 125);
                    Seen::Pong(p.to_vec())
                }
                Event::Close(c) => Seen::Close(c.code, c.reason.to_string()),
            });
        }
        assert!(pos <= rbuf.len());
        rbuf.drain(..pos);
        // The decoder never holds back more than one frame header's worth of bytes.
        assert!(rbuf.len() < MAX_HEADER_LEN);
    }
    (seen, None)
}

/// Message assembly over arbitrary frame sequences. The input describes frames (so most of
/// them get past the header checks): per frame a flags byte (FIN, RSV, opcode), a length byte,
/// then the payload. Invariants: text is valid UTF-8, no message exceeds the limit, control
/// payloads fit 125 bytes, and the result does not depend on how the bytes were split.
pub fn message_assembly(data: &[u8]) {
    let [chunk, frames @ ..] = data else { return };
    let mut rest = frames;
    let mut stream = Vec::new();
    while let [flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        let key = [flags.wrapping_mul(7), 0x5a, *flags, 0xc3];
        let mut head = [0u8; MAX_HEADER_LEN];
        let opcode = match flags & 0x0F {
            0x0 | 0x3 => crate::ws::frame::Opcode::Continuation,
            0x1 | 0x4 | 0x5 => crate::ws::frame::Opcode::Text,
            0x2 | 0x6 => crate::ws::frame::Opcode::Binary,
            0x8 | 0xB => crate::ws::frame::Opcode::Close,
            0x9 | 0xC => crate::ws::frame::Opcode::Ping,
            _ => crate::ws::frame::Opcode::Pong,
        };
        let n = encode_header(&mut head, flags & 0x80 != 0, opcode, payload.len(), Some(key));
        // Occasionally set RSV bits or a reserved opcode so those paths are reached too.
        if flags & 0x70 == 0x70 {
            head[0] |= 0x40;
        }
        stream.extend_from_slice(&head[..n]);
        let start = stream.len();
        stream.extend_from_slice(payload);
        unmask(&mut stream[start..], key, 0);
        rest = tail;
    }
    let whole = decode_stream(&stream, stream.len(), false);
    let split = decode_stream(&stream, usize::from(*chunk % 17) + 1, false);
    assert_eq!(whole, split);
    // The fast lane (whole, and with frames split across reads) agrees with the general path.
    assert_eq!(decode_stream(&stream, stream.len(), true), whole, "fast lane, whole");
    assert_eq!(decode_stream(&stream, usize::from(*chunk % 17) + 1, true), whole, "fast lane, split");
    for seen in &whole.0 {
        if let Seen::Close(Some(code), reason) = seen {
            assert!(crate::ws::close::is_valid_code(*code));
            assert!(reason.len() <= 123);
        }
    }
    // Raw bytes, not built by us, must never panic either.
    let raw = decode_stream(frames, usize::from(*chunk % 5) + 1, false);
    assert_eq!(decode_stream(frames, usize::from(*chunk % 5) + 1, true), raw, "fast lane, raw bytes");
    let _ = parse_close_payload(frames);
}

/// The backend → client conversion of every framing, fed arbitrary bytes in arbitrary pieces.
/// Invariants: what reaches the client parses as a sequence of valid server frames; text
/// messages (joined across fragments) are valid UTF-8; nothing exceeds the message limit;
/// the result (frames, pub/sub commands, how it ended) does not depend on how the bytes were
/// split across reads.
pub fn backend_framing(data: &[u8]) {
    use crate::backend::codec::Reassembler;
    use crate::backend::Framing;
    use crate::buffer::{OutQueue, Pools};

    let [selector, chunk, stream @ ..] = data else { return };
    // `% 5` as the committed corpus was written; the route's kind for framed from the top bit.
    let (framing, kind) = match selector % 5 {
        0 => (Framing::Raw, MessageKind::Text),
        1 => (Framing::Raw, MessageKind::Binary),
        2 => (Framing::Lines, MessageKind::Text),
        3 => (Framing::Lines, MessageKind::Binary),
        _ if selector & 0x80 != 0 => (Framing::Framed, MessageKind::Binary),
        _ => (Framing::Framed, MessageKind::Text),
    };
    const MAX: usize = 300;
    let run = |piece: usize| {
        let mut codec = Reassembler::new(framing, kind, MAX);
        let mut pools = Pools::new(crate::buffer::DEFAULT_POOL_BYTES);
        let mut client = OutQueue::default();
        let mut commands = Vec::new();
        let mut outcome = String::new();
        for p in stream.chunks(piece.max(1)) {
            match codec.feed(p, &mut pools, &mut client, &mut commands) {
                Ok(None) => {}
                Ok(Some(end)) => {
                    outcome = format!("{end:?}");
                    break;
                }
                Err(e) => {
                    outcome = e.to_string();
                    break;
                }
            }
        }
        if outcome.is_empty() {
            outcome = format!("{:?}", codec.end_of_stream());
        }
        (client.to_vec(), commands, outcome)
    };
    // Raw messages are as large as one read (here: all the input at once).
    let limit = if framing == Framing::Raw { stream.len() } else { MAX };
    let whole = run(stream.len());
    check_server_frames(&whole.0, limit);
    let split = run(usize::from(*chunk % 7) + 1);
    if framing == Framing::Raw {
        // Raw framing turns every read into a message: only the bytes carried are the same.
        check_server_frames(&split.0, limit);
        assert_eq!(whole.2, split.2);
        if whole.2 == "Ok(())" {
            assert_eq!(payload_bytes(&whole.0), payload_bytes(&split.0));
        }
    } else {
        assert_eq!(whole, split);
    }
}

/// The payload bytes of a sequence of valid server frames, concatenated.
fn payload_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::client(MessageLimits { max_message: usize::MAX >> 1, max_frame: usize::MAX >> 1 });
    let mut buf = bytes.to_vec();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let (event, used) = decoder.decode(&mut buf[pos..]).expect("valid frames");
        if let Some(Event::Message(_, payload)) = event {
            out.extend_from_slice(payload);
        }
        if used == 0 {
            break;
        }
        pos += used;
    }
    out
}

/// Parses `bytes` as server frames and checks each message.
fn check_server_frames(bytes: &[u8], max: usize) {
    let mut decoder = Decoder::client(MessageLimits { max_message: max.max(1), max_frame: max.max(1) });
    let mut buf = bytes.to_vec();
    let mut pos = 0;
    while pos < buf.len() {
        let (event, used) = decoder.decode(&mut buf[pos..]).expect("the gateway produced an invalid frame");
        assert!(used > 0 || event.is_some(), "a truncated frame");
        if let Some(Event::Message(kind, payload)) = event {
            assert!(payload.len() <= max);
            if kind == MessageKind::Text {
                assert!(std::str::from_utf8(payload).is_ok());
            }
        }
        pos += used;
    }
}

/// The admin listener's request parsing: never panics; an error is a JSON error body with a
/// 4xx status; a command's scope is defined. The input is `METHOD PATH?QUERY\nCONTENT-TYPE\nBODY`.
pub fn admin_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let line = parts.next().unwrap_or("");
    let content_type = parts.next().unwrap_or("").to_string();
    let body = parts.next().unwrap_or("").as_bytes().to_vec();
    let (method, target) = line.split_once(' ').unwrap_or(("POST", line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = crate::admin::Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        content_type,
        key: None,
        body,
        keep_alive: true,
    };
    match crate::admin::parse(&req) {
        Ok(command) => {
            let _ = command.scope();
        }
        Err(reply) => {
            assert!((400..500).contains(&reply.status));
            let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("a JSON error");
            assert_eq!(v["error"]["code"].as_u64(), Some(u64::from(reply.status)));
        }
    }
}

/// Broker messages and token lists: splitting and resolving receivers never panic; every
/// connection resolved holds a token the receivers name (exactly, or by a `/` prefix), and
/// none twice; a parsed token list holds only well-formed tokens.
pub fn broker_message(data: &[u8]) {
    use crate::broker::{check_token, split_routed, tokens, Broker};
    let mut broker = Broker::new(false);
    let held = ["abc1", "abc2", "group/item1", "group/item2", "group/", "unregistered", "a"];
    for (key, token) in held.iter().enumerate() {
        broker.hold(key, token);
    }
    broker.hold(held.len(), "abc1");
    if let Some((receivers, _payload)) = split_routed(data) {
        let mut keys = Vec::new();
        broker.receivers(receivers, &mut keys);
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "a receiver twice");
        let text = std::str::from_utf8(receivers).unwrap_or("");
        let entries: Vec<&str> = text.split(',').map(|e| e.trim_matches(' ')).collect();
        for key in keys {
            let token = held.get(key).copied().unwrap_or("abc1");
            assert!(entries.iter().any(|e| *e == token || (e.ends_with('/') && token.starts_with(e))));
        }
    }
    if let Ok(set) = tokens::parse(data) {
        assert!(set.keys().all(|t| check_token(t).is_ok()));
    }
}

/// Bytes from Redis: every whole reply is classified, and every pub/sub message's payload
/// decoded as wsgate's cluster message, which must encode back to the same bytes.
pub fn cluster_message(data: &[u8]) {
    use crate::cluster::link::{next_reply, Reply};
    use crate::cluster::wire;
    let mut pos = 0;
    let mut payloads: Vec<&[u8]> = vec![data];
    while let Ok(Some((reply, used))) = next_reply(&data[pos..]) {
        assert!(used > 0 && pos + used <= data.len());
        pos += used;
        if let Reply::Message(_, payload) = reply {
            payloads.push(payload);
        }
    }
    for payload in payloads {
        if let Ok(m) = wire::decode(payload) {
            let again = match m.kind {
                wire::Kind::Numbered => {
                    wire::encode_numbered(m.node, m.opcode, m.receivers, m.offset, m.epoch, m.payload)
                }
                _ => wire::encode(m.kind, m.node, m.opcode, m.receivers, m.payload),
            };
            assert_eq!(again, payload);
        }
    }
    // A history read's answer: parsed or refused, never a panic.
    let _ = crate::cluster::streams::parse_read(data);
    let _ = crate::cluster::streams::parse_count(data);
    // A presence read's: what goes to clients is a JSON array of objects.
    for stats in [false, true] {
        if let Ok(Ok(page)) = crate::cluster::presence::parse_read(data, stats) {
            let mut list = b"[".to_vec();
            list.extend_from_slice(&page.members);
            list.push(b']');
            let members: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&list).expect("members pass on as JSON objects");
            assert_eq!(members.len(), page.count);
        }
    }
}

/// A `Sec-WebSocket-Extensions` value: parsing never panics; an accepted offer's response
/// parses back to one permessage-deflate extension with a window the server can use, never
/// larger than the one offered.
pub fn extension_offer(data: &[u8]) {
    use crate::ws::extensions::{negotiate, parse, Compression};
    let offers = parse(data);
    for ours in [
        Compression::Shared,
        Compression::Dedicated { window_bits: 12, mem_level: 8 },
        Compression::Dedicated { window_bits: 15, mem_level: 8 },
    ] {
        let Some(agreed) = negotiate([data], ours) else { continue };
        assert!(offers.is_ok());
        assert!((9..=15).contains(&agreed.server_max_window_bits));
        if let Compression::Dedicated { window_bits, .. } = ours {
            assert!(agreed.server_max_window_bits <= window_bits);
        } else {
            assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        }
        let mut response = Vec::new();
        agreed.write_response(&mut response);
        let back = parse(&response).expect("our response parses");
        assert!(back.len() == 1 && back[0].name == b"permessage-deflate");
    }
}

/// Compressed bytes from a client: inflating stops at the limit (never more than one byte
/// past it), and the message cut in two frames inflates to the same as whole.
pub fn inflate(data: &[u8]) {
    use crate::ws::deflate::Inflater;
    const MAX: usize = 1 << 16;
    let mut whole = Vec::new();
    let a = Inflater::new().inflate(data, true, MAX, &mut whole);
    assert!(whole.len() <= MAX + 1);
    let cut = data.len() / 2;
    let mut split = Vec::new();
    let mut inflater = Inflater::new();
    let b = inflater
        .inflate(&data[..cut], false, MAX, &mut split)
        .and_then(|()| inflater.inflate(&data[cut..], true, MAX, &mut split));
    if a.is_ok() && b.is_ok() {
        assert_eq!(whole, split);
    }
    // In steps of a small budget (as a connection inflates a large message over several
    // turns): the same outcome and the same bytes, and each step keeps near its budget.
    let budget = 1 + usize::from(data.first().copied().unwrap_or(0)) * 64;
    let mut stepped = Vec::new();
    let mut inflater = Inflater::new();
    let mut used = 0;
    let c = loop {
        let before = stepped.len();
        match inflater.inflate_some(&data[used..], MAX, &mut stepped, budget) {
            Err(e) => break Err(e),
            Ok(n) => {
                assert!(stepped.len() - before <= budget + crate::ws::deflate::CHUNK);
                used += n;
            }
        }
        if used == data.len() {
            break inflater.inflate(&[], true, MAX, &mut stepped);
        }
    };
    assert_eq!(a.is_ok(), c.is_ok(), "whole {a:?}, in steps {c:?}");
    if a.is_ok() {
        assert_eq!(whole, stepped);
    }
    assert!(stepped.capacity() <= MAX + 1);
}

/// Legacy (hixie) keys, frames and translation:
/// - keys never panic;
/// - a text frame parsed, encoded again, parses to the same text taking the same bytes;
/// - the decoder gives the same frames (and fails or not alike) whether the bytes come in one
///   read or in two, split where the first byte says, as a connection feeds it;
/// - the same bytes taken as the server's RFC 6455 frames translate into nothing but whole,
///   valid legacy text frames, one per message counted.
pub fn hixie(data: &[u8]) {
    use crate::ws::hixie::{encode_text, key_number, parse_frame, Decoder, Frame, Translator};
    let _ = key_number(data);
    if let Ok(Some((Frame::Text(text), used))) = parse_frame(data, 1 << 16) {
        let mut again = Vec::new();
        encode_text(&mut again, text);
        assert_eq!(again.len(), used);
        assert_eq!(parse_frame(&again, 1 << 16), Ok(Some((Frame::Text(text), used))));
    }

    /// Feeds `reads` to a decoder as a connection does; the frames, and whether it failed.
    fn decode_all(reads: &[&[u8]], max: usize) -> (Vec<Option<Vec<u8>>>, bool) {
        let mut d = Decoder::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut frames = Vec::new();
        for read in reads {
            pending.extend_from_slice(read);
            loop {
                match d.decode(&pending, max) {
                    Err(_) => return (frames, true),
                    Ok((None, 0)) => break,
                    Ok((None, used)) => drop(pending.drain(..used)),
                    Ok((Some(frame), used)) => {
                        frames.push(match frame {
                            Frame::Text(t) => Some(t.to_vec()),
                            Frame::Close => None,
                        });
                        pending.drain(..used);
                    }
                }
            }
        }
        (frames, false)
    }
    let max = 1 << 14;
    let whole = decode_all(&[data], max);
    let at = data.first().map_or(0, |&b| usize::from(b) * data.len() / 256);
    let (a, b) = data.split_at(at);
    assert_eq!(decode_all(&[a, b], max), whole, "split at {at}");
    let chunks: Vec<&[u8]> = data.chunks(4096 + at % 512).collect();
    assert_eq!(decode_all(&chunks, max), whole, "in chunks");

    let mut out = Vec::new();
    let done = Translator::default().translate(data, 1 << 16, &mut out);
    let mut rest = &out[..];
    let mut messages = 0;
    while !rest.is_empty() {
        match parse_frame(rest, usize::MAX) {
            Ok(Some((Frame::Text(_), used))) => {
                rest = &rest[used..];
                messages += 1;
            }
            other => panic!("translation made {other:?}"),
        }
    }
    assert_eq!(messages, done.messages);
}

/// One WebSocket endpoint (`ws::Endpoint`) over arbitrary bytes, in the wire the first byte
/// picks (a server or a client, each with or without permessage-deflate, a hixie-76 server):
/// - never panics; every failure maps to a close code a server may send (§7.4.1);
/// - the messages, control events and outcome are the same whether the bytes come at once
///   with an unbounded budget, or in pieces (sizes from the second byte) with a small
///   inflating budget, as a connection feeds them across reads and turns;
/// - no message exceeds the limit.
#[allow(clippy::disallowed_methods)] // the fuzzer drives the endpoint as the loop does, from its edge
pub fn endpoint(data: &[u8]) {
    use crate::ws::deflate::{PerMessage, SharedCodecs};
    use crate::ws::endpoint::{Endpoint, Event, WsError};
    use crate::ws::extensions::{negotiate, Compression, DeflateOffer};
    use crate::ws::frame::Role;
    use std::time::Instant;
    const MAX: usize = 1 << 16;
    let [mode, split, bytes @ ..] = data else { return };
    let limits = MessageLimits { max_message: MAX, max_frame: MAX };
    let t0 = Instant::now();
    let make = || match mode % 5 {
        0 => (Endpoint::new(Role::Server, limits, t0, false), None),
        1 => {
            let agreed = negotiate([&b"permessage-deflate"[..]], Compression::Shared);
            (Endpoint::new(Role::Server, limits, t0, true), agreed.map(|a| PerMessage::new(a, 64, 1, 8)))
        }
        2 => (Endpoint::new(Role::Client, limits, t0, false), None),
        // The client with compression, the server keeping its context: the client's own inflater.
        3 => {
            let answer = DeflateOffer::default().check_answer([&b"permessage-deflate"[..]]);
            let pmd = answer.ok().flatten().map(|a| PerMessage::for_client(a, 64, 1, 8));
            (Endpoint::new(Role::Client, limits, t0, true), pmd)
        }
        _ => (Endpoint::legacy(crate::ws::hixie::Draft::Hixie76, limits, t0), None),
    };
    /// Feeds `bytes` in pieces of `step`, keeping what is not consumed; the events (owned,
    /// yields left out) and the error that ended it.
    type Made = (Endpoint, Option<PerMessage>);
    /// `fast`: [`Endpoint::receive_message`] is tried first for every frame, as the server's
    /// loop does.
    fn run(
        (mut e, mut pmd): Made,
        bytes: &[u8],
        step: usize,
        budget: usize,
        fast: bool,
    ) -> (Vec<(u8, Vec<u8>)>, Option<WsError>) {
        let mut codecs = SharedCodecs::default();
        let (mut pending, mut events) = (Vec::new(), Vec::new());
        for piece in bytes.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                if fast {
                    match e.receive_message(&mut pending, crate::stamp::Stamp::at(Instant::now())) {
                        Some(Ok((kind, p, used))) => {
                            assert!(p.len() <= MAX);
                            events.push((kind as u8, p.to_vec()));
                            pending.drain(..used);
                            continue;
                        }
                        Some(Err(err)) => return (events, Some(err)),
                        None => {}
                    }
                }
                let r = match e.receive(
                    &mut pending,
                    crate::stamp::Stamp::at(Instant::now()),
                    budget,
                    &mut codecs,
                    pmd.as_mut(),
                ) {
                    Ok(r) => r,
                    Err(err) => return (events, Some(err)),
                };
                let used = r.used;
                let event = match r.event {
                    None if used == 0 => break,
                    None | Some(Event::Yield) => None,
                    Some(Event::Message(kind, p)) => {
                        assert!(p.len() <= MAX);
                        Some((kind as u8, p.as_slice().to_vec()))
                    }
                    Some(Event::Ping(p)) => Some((9, p.to_vec())),
                    Some(Event::Pong) => Some((10, Vec::new())),
                    Some(Event::CloseBegun { code, reason }) => {
                        let mut v = code.map_or(Vec::new(), |c| c.to_be_bytes().to_vec());
                        v.extend_from_slice(reason.as_bytes());
                        Some((8, v))
                    }
                    Some(Event::CloseAnswered(_)) => Some((11, Vec::new())),
                };
                pending.drain(..used);
                if let Some(event) = event {
                    let closed = event.0 == 8;
                    events.push(event);
                    if closed {
                        return (events, None);
                    }
                }
            }
        }
        // A message left inflating goes on with no new bytes.
        while e.is_inflating() {
            match e.receive(&mut [], crate::stamp::Stamp::at(Instant::now()), budget, &mut codecs, pmd.as_mut()) {
                Ok(r) => {
                    if let Some(Event::Message(kind, p)) = r.event {
                        events.push((kind as u8, p.as_slice().to_vec()));
                    }
                }
                Err(err) => return (events, Some(err)),
            }
        }
        (events, None)
    }
    let whole = run(make(), bytes, bytes.len().max(1), usize::MAX, false);
    let budget = (1 + usize::from(*split) * 16).max(crate::ws::deflate::CHUNK);
    let pieces = run(make(), bytes, 1 + usize::from(*split) % 97, budget, true);
    assert_eq!(run(make(), bytes, bytes.len().max(1), usize::MAX, true), whole, "the fast lane, at once");
    if let Some(err) = whole.1 {
        let code = err.close_code();
        assert!(crate::ws::close::is_valid_code(code) && !err.reason().is_empty(), "{err:?}");
    }
    assert_eq!(whole, pieces, "at once vs in pieces of {}", 1 + usize::from(*split) % 97);
}

/// A static route's request path → the relative path served: never panics, and whatever it
/// accepts has only plain, normal components (no `..`, no root, no NUL, no hidden name), so
/// it cannot name anything outside the route's directory. The first byte picks the route.
pub fn static_path(data: &[u8]) {
    use std::path::Component;
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(rest) = std::str::from_utf8(rest) else { return };
    let route = ["/", "/site", "/a/b/"][usize::from(pick) % 3];
    let path = format!("{}{rest}", route.trim_end_matches('/'));
    let Ok(wanted) = crate::http::static_files::wanted(route, &path) else { return };
    assert!(wanted.rel.is_relative(), "{path:?} -> {wanted:?}");
    for component in wanted.rel.components() {
        let Component::Normal(name) = component else { panic!("{path:?} -> {wanted:?}: {component:?}") };
        let name = name.to_str().expect("decoded names are UTF-8");
        assert!(crate::sys::files::is_plain_name(name), "{path:?} -> {name:?}");
    }
}

#[cfg(test)]
mod tests {
    /// Every committed seed (and every input that ever failed, kept as a seed) replays
    /// clean under `cargo test`, not only under the fuzzer.
    #[test]
    fn committed_corpus_replays_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 16] = [
            ("frame_header", super::frame_header),
            ("handshake", super::handshake),
            ("message_assembly", super::message_assembly),
            ("unmask", super::unmask_vs_naive),
            ("backend_framing", super::backend_framing),
            ("admin_request", super::admin_request),
            ("broker_message", super::broker_message),
            ("cluster_message", super::cluster_message),
            ("extension_offer", super::extension_offer),
            ("inflate", super::inflate),
            ("hixie", super::hixie),
            ("static_path", super::static_path),
            ("endpoint", super::endpoint),
            ("connection", super::connection),
            ("client_handshake", super::client_handshake),
            ("jwt", super::jwt),
        ];
        let mut replayed = 0;
        for (name, run) in targets {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with("seed-") {
                    run(&std::fs::read(entry.path()).unwrap());
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 10, "the seed corpus is missing");
    }
}
