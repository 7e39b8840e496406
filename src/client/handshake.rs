//! The client's half of the opening handshake (RFC 6455 §4.1), as pure functions: the
//! request for a target, and the check of the server's answer, which names exactly what was
//! wrong with it.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::url::Target;
use crate::ws::extensions::{self, AnswerError, DeflateOffer};
use crate::ws::handshake::accept_key;

/// The most a server's response head may take (status line and headers).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Headers a response head may have.
const MAX_HEADERS: usize = 64;

/// What the request asks for besides the target.
#[derive(Debug, Clone, Default)]
pub struct Offer<'a> {
    /// Subprotocols offered, in order of preference.
    pub protocols: &'a [String],
    /// `Origin`, if any (browsers always send one; other clients need not).
    pub origin: Option<&'a str>,
    /// Extra header lines, `("Name", "value")`.
    pub headers: &'a [(String, String)],
    /// permessage-deflate, offered when set.
    pub deflate: Option<DeflateOffer>,
}

/// How a server's answer to the upgrade failed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not 101: the status and reason, and the start of the body if it came with the head.
    Status {
        /// The HTTP status.
        code: u16,
        /// The reason phrase, and the body's start when it came with the head.
        reason: String,
    },
    /// The head is not HTTP/1.1 (the parser's complaint).
    Malformed(String),
    /// The head did not end within [`MAX_RESPONSE_HEAD`] bytes.
    TooLarge,
    /// The connection ended before the head did.
    Eof,
    /// A 101 without `Upgrade: websocket`.
    MissingUpgrade,
    /// A 101 without `Connection: Upgrade`.
    MissingConnection,
    /// A 101 without `Sec-WebSocket-Accept`.
    MissingAccept,
    /// `Sec-WebSocket-Accept` is not the hash of our key: not a WebSocket server, or a proxy
    /// that answered for one.
    WrongAccept,
    /// A subprotocol we did not offer (or one when we offered none).
    UnofferedProtocol(String),
    /// An extension we did not offer.
    UnofferedExtension(String),
    /// permessage-deflate accepted with parameters our offer does not allow.
    BadExtension(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Status { code, reason } => write!(f, "server answered {code} {reason}, not 101"),
            HandshakeError::Malformed(why) => write!(f, "malformed response: {why}"),
            HandshakeError::TooLarge => write!(f, "response head over {MAX_RESPONSE_HEAD} bytes"),
            HandshakeError::Eof => write!(f, "connection closed before the response head ended"),
            HandshakeError::MissingUpgrade => write!(f, "101 without \"Upgrade: websocket\""),
            HandshakeError::MissingConnection => write!(f, "101 without \"Connection: Upgrade\""),
            HandshakeError::MissingAccept => write!(f, "101 without Sec-WebSocket-Accept"),
            HandshakeError::WrongAccept => write!(f, "Sec-WebSocket-Accept does not match the key sent"),
            HandshakeError::UnofferedProtocol(p) => write!(f, "server chose subprotocol {p:?}, which was not offered"),
            HandshakeError::UnofferedExtension(e) => write!(f, "server chose extension {e:?}, which was not offered"),
            HandshakeError::BadExtension(why) => write!(f, "server's permessage-deflate answer: {why}"),
        }
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (§4.1).
pub fn new_key() -> std::io::Result<String> {
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(std::io::Error::other)?;
    Ok(STANDARD.encode(raw))
}

/// The upgrade request for `target` with `key`.
pub fn request(target: &Target, key: &str, offer: &Offer<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.resource.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(target.host_header().as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Key: ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !offer.protocols.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(offer.protocols.join(", ").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(origin) = offer.origin {
        out.extend_from_slice(b"Origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(deflate) = &offer.deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        deflate.write_offer(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in offer.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What a valid 101 agreed to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agreed {
    /// The subprotocol the server chose (one the client offered).
    pub protocol: Option<String>,
    /// permessage-deflate as the server accepted it (its own view of the sides).
    pub deflate: Option<extensions::Agreed>,
}

/// Checks a response head (`head`: the bytes read so far). `Ok(None)`: incomplete, read more.
/// `Ok(Some((agreed, used)))`: a valid 101 that took `used` bytes; what follows is frames.
pub fn check_response(head: &[u8], key: &str, offer: &Offer<'_>) -> Result<Option<(Agreed, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if head.len() >= MAX_RESPONSE_HEAD => return Err(HandshakeError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        let reason = response.reason.unwrap_or("").to_string();
        return Err(HandshakeError::Status { code, reason });
    }
    let values = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| std::str::from_utf8(h.value).unwrap_or("").split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if !values("upgrade").any(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !values("connection").any(|v| v.eq_ignore_ascii_case("upgrade")) {
        return Err(HandshakeError::MissingConnection);
    }
    let accept = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
    match accept {
        None => return Err(HandshakeError::MissingAccept),
        Some(h) if h.value.trim_ascii() != accept_key(key.as_bytes()) => return Err(HandshakeError::WrongAccept),
        Some(_) => {}
    }
    let mut protocol = None;
    for chosen in values("sec-websocket-protocol") {
        if protocol.is_some() || !offer.protocols.iter().any(|p| p == chosen) {
            return Err(HandshakeError::UnofferedProtocol(chosen.to_string()));
        }
        protocol = Some(chosen.to_string());
    }
    let lines = response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
    let deflate = match &offer.deflate {
        Some(ours) => ours.check_answer(lines.map(|h| h.value)).map_err(|e| match e {
            AnswerError::Unoffered(name) => HandshakeError::UnofferedExtension(name),
            AnswerError::Invalid(why) => HandshakeError::BadExtension(why),
        })?,
        None => match values("sec-websocket-extensions").next() {
            Some(extension) => return Err(HandshakeError::UnofferedExtension(extension.to_string())),
            None => None,
        },
    };
    Ok(Some((Agreed { protocol, deflate }, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn answer(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_rfc_example_is_accepted_and_frames_after_it_are_left() {
        let protocols = ["chat".to_string(), "superchat".to_string()];
        let offer = Offer { protocols: &protocols, ..Offer::default() };
        let head = answer("Sec-WebSocket-Protocol: chat\r\n") + "\u{81}\u{0}";
        let (agreed, used) = check_response(head.as_bytes(), KEY, &offer).unwrap().unwrap();
        assert_eq!(agreed.protocol.as_deref(), Some("chat"));
        assert_eq!(used, head.len() - 3);
        // A partial head asks for more.
        assert_eq!(check_response(&head.as_bytes()[..40], KEY, &offer), Ok(None));
    }

    #[test]
    fn every_failure_names_what_was_wrong() {
        let none = Offer::default();
        let check = |head: &str| check_response(head.as_bytes(), KEY, &none);
        assert_eq!(
            check("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            Err(HandshakeError::Status { code: 404, reason: "Not Found".into() })
        );
        let no_upgrade = answer("").replace("Upgrade: websocket\r\n", "");
        assert_eq!(check(&no_upgrade), Err(HandshakeError::MissingUpgrade));
        let no_connection = answer("").replace("Connection: Upgrade\r\n", "");
        assert_eq!(check(&no_connection), Err(HandshakeError::MissingConnection));
        let no_accept = answer("").replace("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", "");
        assert_eq!(check(&no_accept), Err(HandshakeError::MissingAccept));
        assert_eq!(check(&answer("").replace("xOo=", "xOp=")), Err(HandshakeError::WrongAccept));
        assert_eq!(
            check(&answer("Sec-WebSocket-Protocol: chat\r\n")),
            Err(HandshakeError::UnofferedProtocol("chat".into()))
        );
        assert_eq!(
            check(&answer("Sec-WebSocket-Extensions: permessage-deflate\r\n")),
            Err(HandshakeError::UnofferedExtension("permessage-deflate".into()))
        );
        assert!(matches!(check("HTTP/1.1 1O1 x\r\n\r\n"), Err(HandshakeError::Malformed(_))));
        // With permessage-deflate offered: the answer is checked against the offer.
        let offered = Offer { deflate: Some(DeflateOffer::default()), ..Offer::default() };
        let check = |head: &str| check_response(head.as_bytes(), KEY, &offered);
        let (agreed, _) = check(&answer("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(agreed.deflate.unwrap().client_max_window_bits, Some(9));
        assert_eq!(check(&answer("")).unwrap().unwrap().0.deflate, None);
        assert!(matches!(
            check(&answer("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n")),
            Err(HandshakeError::BadExtension(_))
        ));
        assert_eq!(
            check(&answer("Sec-WebSocket-Extensions: x-foo\r\n")),
            Err(HandshakeError::UnofferedExtension("x-foo".into()))
        );
        let huge = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(check(&huge), Err(HandshakeError::TooLarge));
    }

    #[test]
    fn the_request_carries_the_offer() {
        let target = Target::parse("ws://example.com:8080/chat?room=1").unwrap();
        let protocols = ["v2".to_string(), "v1".to_string()];
        let headers = [("Authorization".to_string(), "Bearer x".to_string())];
        let offer = Offer {
            protocols: &protocols,
            origin: Some("https://example.com"),
            headers: &headers,
            deflate: Some(DeflateOffer::default()),
        };
        let text = String::from_utf8(request(&target, KEY, &offer)).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n"), "{text}");
        for line in [
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Protocol: v2, v1\r\n",
            "Origin: https://example.com\r\n",
            "Authorization: Bearer x\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(new_key().unwrap().len(), 24);
        assert_ne!(new_key().unwrap(), new_key().unwrap());
    }
}
