//! The `framed` backend protocol: message-preserving records on the UNIX stream.
//! Specified in `docs/backend-protocol.md`; this module is its codec, pure functions on bytes.
//!
//! A record is a 6-byte header, then the payload:
//!
//! ```text
//! +--------+--------+--------+--------+--------+--------+==========+
//! |  type  | flags  |   payload length (u32, big-endian)|  payload |
//! +--------+--------+--------+--------+--------+--------+==========+
//! ```
//!
//! Types: 1 HELLO (gateway → backend, first record only), 2 TEXT, 3 BINARY, 4 CLOSE, and
//! from the backend only, pub/sub on behalf of its client: 5 SUBSCRIBE, 6 UNSUBSCRIBE,
//! 7 PUBLISH, 8 SEND, 9 REQUEST (about topics with history, answered by 10 ANSWER from the
//! gateway). Flags: bit 0 FIN (the last record of a message; always set on every
//! record but TEXT and BINARY). Other bits are reserved and must be 0.

use std::fmt;
use std::net::SocketAddr;

pub const HEADER_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Hello = 1,
    Text = 2,
    Binary = 3,
    Close = 4,
    /// Subscribe the backend's client to a topic (payload: the topic, UTF-8).
    Subscribe = 5,
    Unsubscribe = 6,
    /// Publish to a topic: flags (u8), topic length (u8), topic, message.
    Publish = 7,
    /// Send to one connection: its id (u64, big-endian), flags (u8), message.
    Send = 8,
    /// A request about topics with history, as JSON text in pubsub's form (`subscribe` with
    /// `recover`, `history`): answered with an ANSWER record.
    Request = 9,
    /// Gateway → backend: the answer to a REQUEST, as JSON text.
    Answer = 10,
}

/// PUBLISH / SEND flags: the message is binary (else text, UTF-8 checked).
pub const PUBLISH_BINARY: u8 = 0x01;
/// PUBLISH flags: do not deliver to the backend's own client.
pub const PUBLISH_EXCLUDE: u8 = 0x02;
/// PUBLISH flags: after the topic, a count (u8) and that many connection ids (u64,
/// big-endian) not to deliver to.
pub const PUBLISH_EXCLUDE_LIST: u8 = 0x04;

pub const FLAG_FIN: u8 = 0x01;

/// The most bytes of a REQUEST record's JSON.
pub const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordType,
    pub fin: bool,
    pub len: usize,
}

/// A record that breaks the protocol; the gateway closes the client with 1011 and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    UnknownType(u8),
    ReservedFlags(u8),
    TooLong(u64),
    /// HELLO travels only from the gateway to the backend.
    UnexpectedHello,
    /// CLOSE must have FIN set and hold nothing or a code (2 bytes) and a UTF-8 reason.
    BadClose,
    /// Pub/sub records are never fragmented.
    NotFin,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnknownType(t) => write!(f, "unknown record type {t}"),
            RecordError::ReservedFlags(b) => write!(f, "reserved flag bits {b:#04x} set"),
            RecordError::TooLong(n) => write!(f, "record of {n} bytes is over the message size limit"),
            RecordError::UnexpectedHello => f.write_str("HELLO record from the backend"),
            RecordError::BadClose => f.write_str("malformed CLOSE record"),
            RecordError::NotFin => f.write_str("pub/sub record without FIN"),
        }
    }
}

/// Parses a record header from the front of `buf` (as the gateway reads the backend).
/// `Ok(None)`: fewer than 6 bytes. The length is checked against `max_len` before anything
/// is buffered.
pub fn parse_header(buf: &[u8], max_len: usize) -> Result<Option<RecordHeader>, RecordError> {
    let Some(&[t, flags, a, b, c, d]) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let kind = match t {
        1 => return Err(RecordError::UnexpectedHello),
        2 => RecordType::Text,
        3 => RecordType::Binary,
        4 => RecordType::Close,
        5 => RecordType::Subscribe,
        6 => RecordType::Unsubscribe,
        7 => RecordType::Publish,
        8 => RecordType::Send,
        9 => RecordType::Request,
        other => return Err(RecordError::UnknownType(other)),
    };
    if flags & !FLAG_FIN != 0 {
        return Err(RecordError::ReservedFlags(flags));
    }
    let len = u32::from_be_bytes([a, b, c, d]);
    let limit = match kind {
        RecordType::Close => 125,
        RecordType::Request => MAX_REQUEST.min(max_len),
        _ => max_len,
    };
    let len = usize::try_from(len).ok().filter(|&n| n <= limit).ok_or(RecordError::TooLong(u64::from(len)))?;
    let fin = flags & FLAG_FIN != 0;
    match kind {
        RecordType::Text | RecordType::Binary => {}
        RecordType::Close if !fin => return Err(RecordError::BadClose),
        _ if !fin => return Err(RecordError::NotFin),
        _ => {}
    }
    Ok(Some(RecordHeader { kind, fin, len }))
}

/// Encodes a record header.
pub fn encode_header(kind: RecordType, fin: bool, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).expect("records are bounded by max_message_size, which fits u32");
    let l = len.to_be_bytes();
    [kind as u8, u8::from(fin), l[0], l[1], l[2], l[3]]
}

/// A CLOSE record's payload: empty, or code + UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, RecordError> {
    match payload {
        [] => Ok(None),
        [_] => Err(RecordError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let reason = crate::ws::utf8::validate(reason).map_err(|_| RecordError::BadClose)?;
            Ok(Some((code, reason)))
        }
    }
}

/// What the HELLO record tells the backend about its client.
pub struct Hello<'a> {
    /// The connection's id (what SEND records and the access log name it by).
    pub id: u64,
    pub peer: SocketAddr,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub subprotocol: Option<&'a str>,
    pub headers: &'a [httparse::Header<'a>],
    /// What a verified connection token said (`auth = "jwt"` routes).
    pub identity: Option<&'a crate::auth::Identity>,
}

/// The HELLO payload: `name: value` lines, LF-terminated, starting with `wsgate-hello 3`
/// (version 2 added the `id` line and the pub/sub records).
/// Header values are passed as received (httparse refused CR and LF), except that bytes that
/// are not UTF-8 (HTTP allows opaque obs-text) become U+FFFD: the payload is promised to be
/// UTF-8, and a client must not be able to break a backend that decodes it.
pub fn hello_payload(hello: &Hello<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"wsgate-hello 3\n");
    push_line(&mut out, "id", hello.id.to_string().as_bytes());
    push_line(&mut out, "peer", hello.peer.to_string().as_bytes());
    push_line(&mut out, "path", hello.path.as_bytes());
    if let Some(q) = hello.query {
        push_line(&mut out, "query", q.as_bytes());
    }
    if let Some(p) = hello.subprotocol {
        push_line(&mut out, "subprotocol", p.as_bytes());
    }
    if let Some(identity) = hello.identity {
        // The verifier refused control characters in `sub`.
        push_line(&mut out, "user", identity.user.as_bytes());
        if let Some(exp) = identity.expires {
            push_line(&mut out, "expires", exp.to_string().as_bytes());
        }
        if let Some(info) = &identity.info {
            // Raw line breaks in JSON can only be whitespace between its tokens.
            push_line(&mut out, "info", info.replace(['\n', '\r'], " ").as_bytes());
        }
    }
    for h in hello.headers {
        out.extend_from_slice(b"header: ");
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(String::from_utf8_lossy(h.value).as_bytes());
        out.push(b'\n');
    }
    out
}

fn push_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A whole HELLO record (header + payload).
pub fn hello_record(hello: &Hello<'_>) -> Vec<u8> {
    let payload = hello_payload(hello);
    let mut out = encode_header(RecordType::Hello, true, payload.len()).to_vec();
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[2, 1, 0, 0], 100), Ok(None));
        assert_eq!(
            parse_header(&[2, 1, 0, 0, 0, 5, b'h'], 100),
            Ok(Some(RecordHeader { kind: RecordType::Text, fin: true, len: 5 }))
        );
        assert_eq!(
            parse_header(&[3, 0, 0, 0, 0, 100], 100),
            Ok(Some(RecordHeader { kind: RecordType::Binary, fin: false, len: 100 }))
        );
        assert_eq!(parse_header(&[3, 0, 0, 0, 0, 101], 100), Err(RecordError::TooLong(101)));
        assert_eq!(parse_header(&[3, 0, 0xFF, 0xFF, 0xFF, 0xFF], 100), Err(RecordError::TooLong(u32::MAX as u64)));
        assert_eq!(parse_header(&[1, 1, 0, 0, 0, 0], 100), Err(RecordError::UnexpectedHello));
        assert_eq!(parse_header(&[10, 1, 0, 0, 0, 0], 100), Err(RecordError::UnknownType(10)), "ANSWER is ours");
        assert_eq!(parse_header(&[11, 1, 0, 0, 0, 0], 100), Err(RecordError::UnknownType(11)));
        assert_eq!(
            parse_header(&[9, 1, 0, 1, 0, 0], 1 << 20),
            Ok(Some(RecordHeader { kind: RecordType::Request, fin: true, len: 65536 }))
        );
        assert_eq!(parse_header(&[9, 1, 0, 1, 0, 1], 1 << 20), Err(RecordError::TooLong(65537)), "REQUEST: 64 KiB");
        assert_eq!(parse_header(&[9, 0, 0, 0, 0, 2], 100), Err(RecordError::NotFin));
        assert_eq!(parse_header(&[7, 0, 0, 0, 0, 0], 100), Err(RecordError::NotFin));
        assert_eq!(parse_header(&[2, 3, 0, 0, 0, 0], 100), Err(RecordError::ReservedFlags(3)));
        assert_eq!(parse_header(&[4, 0, 0, 0, 0, 0], 100), Err(RecordError::BadClose));
        assert_eq!(parse_header(&[4, 1, 0, 0, 0, 126], 1000), Err(RecordError::TooLong(126)));
        assert_eq!(encode_header(RecordType::Binary, true, 258), [3, 1, 0, 0, 1, 2]);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(parse_close(&[0x03, 0xE8, b'o', b'k']), Ok(Some((1000, "ok"))));
        assert_eq!(parse_close(&[0x03]), Err(RecordError::BadClose));
        assert_eq!(parse_close(&[0x03, 0xE8, 0xFF]), Err(RecordError::BadClose));
    }

    #[test]
    fn hello_lists_everything() {
        let headers = [httparse::Header { name: "Host", value: b"example.com" }];
        let hello = Hello {
            id: 42,
            peer: "127.0.0.1:4000".parse().unwrap(),
            path: "/app",
            query: Some("a=1"),
            subprotocol: Some("chat"),
            headers: &headers,
            identity: None,
        };
        let record = hello_record(&hello);
        assert_eq!(&record[..2], &[1, 1]);
        let text = std::str::from_utf8(&record[6..]).unwrap();
        assert_eq!(
            text,
            "wsgate-hello 3\nid: 42\npeer: 127.0.0.1:4000\npath: /app\nquery: a=1\nsubprotocol: chat\nheader: Host: example.com\n"
        );
        assert_eq!(u32::from_be_bytes(record[2..6].try_into().unwrap()) as usize, text.len());
    }

    #[test]
    fn hello_names_the_tokens_user_and_keeps_info_on_one_line() {
        let identity = crate::auth::Identity {
            user: "alice smith".into(),
            expires: Some(1_900_000_000),
            topics: None,
            info: Some("{\n  \"name\": \"A\"\r\n}".into()),
        };
        let hello = Hello {
            id: 7,
            peer: "127.0.0.1:4000".parse().unwrap(),
            path: "/app",
            query: None,
            subprotocol: None,
            headers: &[],
            identity: Some(&identity),
        };
        let text = String::from_utf8(hello_payload(&hello)).unwrap();
        assert_eq!(
            text,
            "wsgate-hello 3\nid: 7\npeer: 127.0.0.1:4000\npath: /app\nuser: alice smith\nexpires: 1900000000\ninfo: {   \"name\": \"A\"  }\n"
        );
    }
}
