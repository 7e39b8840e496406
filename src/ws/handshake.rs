//! The opening handshake (RFC 6455 §4.2): checks an HTTP request head for a valid upgrade,
//! negotiates the subprotocol, and writes the 101 response or the error response.

use super::extensions::Agreed;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::http::request::{parse_request, HeadLimits, Request, RequestError, MAX_HEADERS};
use crate::http::response::{push_header, push_status_line, Response};

/// §1.3: the GUID appended to the client's key.
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a route allows: origins (empty = any) and subprotocols in the server's order of
/// preference.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'p> {
    pub origins: &'p [String],
    pub subprotocols: &'p [String],
}

/// A valid upgrade request: what the 101 response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'p> {
    /// `Sec-WebSocket-Accept`: base64 of SHA-1 of key + GUID (always 28 bytes).
    pub accept: [u8; 28],
    /// The subprotocol chosen, if the client offered one the route supports.
    pub subprotocol: Option<&'p str>,
}

/// Why an upgrade request was refused, named after the broken rule of §4.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request head itself was unacceptable.
    Request(RequestError),
    /// "The method of the request MUST be GET".
    MethodNotGet,
    /// "the HTTP version MUST be at least 1.1".
    HttpVersionTooOld,
    /// "A |Host| header field".
    MissingHost,
    /// No `Upgrade: websocket`: a plain HTTP request to a WebSocket resource.
    NotAnUpgrade,
    /// "A |Connection| header field that includes the token "Upgrade"".
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version`.
    MissingVersion,
    /// A version other than 13 (or 7 / 8, whose framing is the same): §4.4.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
    /// "base64-encoded ... 16 bytes in length".
    InvalidKey,
    /// §10.2: the route does not accept this `Origin`.
    OriginNotAllowed,
}

impl HandshakeError {
    /// The HTTP status sent for this refusal.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Request(e) => e.status(),
            HandshakeError::MethodNotGet => 405,
            HandshakeError::NotAnUpgrade | HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginNotAllowed => 403,
            _ => 400,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Request(e) => e.reason(),
            HandshakeError::MethodNotGet => "WebSocket upgrade requires GET",
            HandshakeError::HttpVersionTooOld => "WebSocket upgrade requires HTTP/1.1 (RFC 6455 section 4.1)",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::NotAnUpgrade => "this resource is a WebSocket endpoint; send Upgrade: websocket",
            HandshakeError::MissingConnectionUpgrade => "Connection header must include Upgrade",
            HandshakeError::MissingVersion => "missing Sec-WebSocket-Version header",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version; this server speaks 13",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key header",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::OriginNotAllowed => "origin not allowed",
        }
    }

    /// Appends the error response: the status, the reason as the body, and for 426 the
    /// headers that tell the client what to send instead (§4.4).
    pub fn write_response(self, out: &mut Vec<u8>) {
        let headers: &[(&str, &str)] = match self {
            HandshakeError::NotAnUpgrade => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            HandshakeError::MethodNotGet => &[("Allow", "GET")],
            _ => &[],
        };
        Response { headers, ..Response::error(self.status(), self.reason()) }.write(out);
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl From<RequestError> for HandshakeError {
    fn from(e: RequestError) -> Self {
        HandshakeError::Request(e)
    }
}

/// Whether the request asks for a WebSocket upgrade at all (`Upgrade: websocket`).
pub fn is_upgrade(req: &Request<'_, '_>) -> bool {
    req.has_token("upgrade", "websocket")
}

/// Validates an upgrade request against §4.2.1 and the route's policy.
pub fn validate<'p>(req: &Request<'_, '_>, policy: &Policy<'p>) -> Result<Accepted<'p>, HandshakeError> {
    if !is_upgrade(req) {
        return Err(HandshakeError::NotAnUpgrade);
    }
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if req.header("host").is_none_or(<[u8]>::is_empty) {
        return Err(HandshakeError::MissingHost);
    }
    if !req.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    match req.header("sec-websocket-version") {
        None => return Err(HandshakeError::MissingVersion),
        Some(b"13" | b"8" | b"7") => {}
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = req.header("sec-websocket-key").ok_or(HandshakeError::MissingKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    if !policy.origins.is_empty() {
        if let Some(origin) = req.header("origin") {
            let allowed = policy.origins.iter().any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin));
            if !allowed {
                return Err(HandshakeError::OriginNotAllowed);
            }
        }
    }
    let subprotocol = choose_subprotocol(req, policy.subprotocols);
    Ok(Accepted { accept: accept_key(key), subprotocol })
}

/// The first of the server's subprotocols (in its order of preference) that the client
/// offered. Subprotocol names are tokens and compare case-sensitively (§4.1).
fn choose_subprotocol<'p>(req: &Request<'_, '_>, ours: &'p [String]) -> Option<&'p str> {
    if ours.is_empty() {
        return None;
    }
    ours.iter()
        .find(|p| req.list_elements("sec-websocket-protocol").any(|offered| offered == p.as_bytes()))
        .map(String::as_str)
}

/// §4.1: "a randomly selected 16-byte value that has been base64-encoded".
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// `Sec-WebSocket-Accept` for `key` (§4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut out = [0u8; 28];
    let n = STANDARD.encode_slice(sha.digest().bytes(), &mut out);
    debug_assert_eq!(n, Ok(28));
    out
}

/// Appends the 101 response; `deflate`: the permessage-deflate agreed, if any.
pub fn write_accept(out: &mut Vec<u8>, accepted: &Accepted<'_>, deflate: Option<&Agreed>) {
    out.reserve(160);
    push_status_line(out, 101);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
    push_header(out, "Sec-WebSocket-Accept", &accepted.accept);
    if let Some(p) = accepted.subprotocol {
        push_header(out, "Sec-WebSocket-Protocol", p.as_bytes());
    }
    if let Some(agreed) = deflate {
        let mut value = Vec::with_capacity(96);
        agreed.write_response(&mut value);
        push_header(out, "Sec-WebSocket-Extensions", &value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses and validates a complete upgrade request in one call, writing the response
/// (101 or error) into `out`. Returns the head length on success, `Ok(None)` if the head is
/// incomplete. Used by the fuzzer and benchmarks; the server does the two steps itself
/// because it routes on the path in between.
pub fn respond(
    buf: &[u8],
    limits: &HeadLimits,
    policy: &Policy<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, HandshakeError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let result = match parse_request(buf, &mut storage, limits) {
        Ok(None) => return Ok(None),
        Ok(Some((req, head_len))) => validate(&req, policy).map(|a| (a, head_len)),
        Err(e) => Err(HandshakeError::Request(e)),
    };
    match result {
        Ok((accepted, head_len)) => {
            write_accept(out, &accepted, None);
            Ok(Some(head_len))
        }
        Err(e) => {
            e.write_response(out);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn check(request: &str, origins: &[&str], protocols: &[&str]) -> Result<(String, Option<String>), HandshakeError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (req, _) = parse_request(request.as_bytes(), &mut storage, &HeadLimits::default())?.expect("complete");
        let (origins, protocols) = (strings(origins), strings(protocols));
        let policy = Policy { origins: &origins, subprotocols: &protocols };
        validate(&req, &policy)
            .map(|a| (String::from_utf8(a.accept.to_vec()).unwrap(), a.subprotocol.map(str::to_string)))
    }

    /// RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" gives "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
    #[test]
    fn rfc_accept_example() {
        assert_eq!(&accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let (accept, proto) = check(OK_REQUEST, &[], &[]).unwrap();
        assert_eq!((accept.as_str(), proto), ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None));
    }

    #[test]
    fn subprotocol_in_server_order() {
        assert_eq!(check(OK_REQUEST, &[], &["superchat", "chat"]).unwrap().1.as_deref(), Some("superchat"));
        assert_eq!(check(OK_REQUEST, &[], &["other", "chat"]).unwrap().1.as_deref(), Some("chat"));
        assert_eq!(check(OK_REQUEST, &[], &["other"]).unwrap().1, None);
        assert_eq!(check(OK_REQUEST, &[], &["CHAT"]).unwrap().1, None);
    }

    #[test]
    fn origin_policy() {
        assert!(check(OK_REQUEST, &["http://example.com"], &[]).is_ok());
        assert!(check(OK_REQUEST, &["HTTP://EXAMPLE.COM"], &[]).is_ok());
        assert!(check(OK_REQUEST, &["*"], &[]).is_ok());
        assert_eq!(check(OK_REQUEST, &["https://example.com"], &[]), Err(HandshakeError::OriginNotAllowed));
        let no_origin = OK_REQUEST.replace("Origin: http://example.com\r\n", "");
        assert!(check(&no_origin, &["https://example.com"], &[]).is_ok());
    }

    #[test]
    fn token_lists_and_case() {
        let r = OK_REQUEST
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, upgrade");
        assert!(check(&r, &[], &[]).is_ok());
        let split = OK_REQUEST.replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\nConnection: Upgrade\r\n");
        assert!(check(&split, &[], &[]).is_ok());
        for v in ["7", "8"] {
            let r = OK_REQUEST.replace("Version: 13", &format!("Version: {v}"));
            assert!(check(&r, &[], &[]).is_ok(), "version {v}");
        }
    }

    #[test]
    fn refusals() {
        use HandshakeError::*;
        let cases: &[(&str, &str, HandshakeError, u16)] = &[
            ("GET /chat", "POST /chat", MethodNotGet, 405),
            // 400, not 505: RFC 9110 keeps 505 for a major version the server does not support.
            ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", HttpVersionTooOld, 400),
            ("Host: server.example.com\r\n", "", MissingHost, 400),
            ("Host: server.example.com", "Host: ", MissingHost, 400),
            ("Upgrade: websocket\r\n", "", NotAnUpgrade, 426),
            ("Upgrade: websocket", "Upgrade: h2c", NotAnUpgrade, 426),
            ("Connection: Upgrade", "Connection: keep-alive", MissingConnectionUpgrade, 400),
            ("Connection: Upgrade", "Connection: Upgrader", MissingConnectionUpgrade, 400),
            ("Sec-WebSocket-Version: 13\r\n", "", MissingVersion, 400),
            ("Version: 13", "Version: 12", UnsupportedVersion, 426),
            ("Version: 13", "Version: 013", UnsupportedVersion, 426),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", MissingKey, 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", InvalidKey, 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=!", InvalidKey, 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQQ=", InvalidKey, 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZXMx", InvalidKey, 400),
        ];
        for (from, to, want, status) in cases {
            let r = OK_REQUEST.replacen(from, to, 1);
            assert_ne!(r, OK_REQUEST, "{from}");
            assert_eq!(check(&r, &[], &[]), Err(*want), "{from} -> {to}");
            assert_eq!(want.status(), *status);
        }
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        let policy = Policy::default();
        let n = respond(OK_REQUEST.as_bytes(), &HeadLimits::default(), &policy, &mut out).unwrap();
        assert_eq!(n, Some(OK_REQUEST.len()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let mut out = Vec::new();
        let r = OK_REQUEST.replace("Version: 13", "Version: 99");
        assert!(respond(r.as_bytes(), &HeadLimits::default(), &policy, &mut out).is_err());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let mut out = Vec::new();
        assert_eq!(respond(&OK_REQUEST.as_bytes()[..40], &HeadLimits::default(), &policy, &mut out), Ok(None));
        assert!(out.is_empty());
    }
}
