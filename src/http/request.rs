//! Request heads: parsed without copying into a [`Request`] that borrows the read buffer.

use std::fmt;

/// Bounds on a request head; both guard the server against slow or hostile clients.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The largest head (request line and headers, up to the blank line), in bytes.
    pub max_head_bytes: usize,
    /// The most header fields accepted (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
}

/// The header storage a caller provides; `max_headers` above this is clamped.
pub const MAX_HEADERS: usize = 64;

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_head_bytes: 8192, max_headers: 32 }
    }
}

/// Why a request head was refused. Each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The head did not end within `max_head_bytes` (431).
    HeadTooLarge,
    /// More than `max_headers` header fields (431).
    TooManyHeaders,
    /// Not HTTP/1.x syntax (400).
    Malformed(&'static str),
    /// The request target is not an origin-form path (400).
    BadTarget,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::Malformed(_) | RequestError::BadTarget => 400,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            RequestError::HeadTooLarge => "request head too large",
            RequestError::TooManyHeaders => "too many header fields",
            RequestError::Malformed(what) => what,
            RequestError::BadTarget => "request target is not a path",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A parsed request head borrowing the read buffer.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    pub method: &'b str,
    /// The request target as sent: path and optional `?query`.
    pub target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: &'h [httparse::Header<'b>],
}

impl<'b> Request<'b, '_> {
    /// The path part of the target (before `?`).
    pub fn path(&self) -> &'b str {
        self.target.split_once('?').map_or(self.target, |(path, _)| path)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// Values of every header field named `name` (case-insensitive), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// The value of the single header field `name`, trimmed; `None` if absent.
    /// A field that appears more than once yields its first value.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.header_values(name).next().map(trim)
    }

    /// Every comma-separated element of every `name` field, trimmed, empty ones skipped
    /// (RFC 9110 §5.6.1 lists).
    pub fn list_elements<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.header_values(name).flat_map(|v| v.split(|&b| b == b',')).map(trim).filter(|e| !e.is_empty())
    }

    /// Whether the `name` list contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list_elements(name).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the client asked to keep the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

/// Trims optional whitespace (SP / HTAB) from both ends.
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses a request head from the front of `buf` into `headers`.
///
/// `Ok(None)`: incomplete and still within limits. `Ok(Some((request, head_len)))`: the head
/// is complete and `head_len` bytes long; anything after it is the body or a pipelined request.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
    limits: &HeadLimits,
) -> Result<Option<(Request<'b, 'h>, usize)>, RequestError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    // Only the first max_head_bytes can ever form a head.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let status = req.parse(window).map_err(|e| match e {
        httparse::Error::TooManyHeaders => RequestError::TooManyHeaders,
        httparse::Error::Version => RequestError::Malformed("not HTTP/1.x"),
        httparse::Error::Token => RequestError::Malformed("invalid token in request line"),
        httparse::Error::HeaderName => RequestError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => RequestError::Malformed("invalid header value"),
        httparse::Error::NewLine => RequestError::Malformed("invalid line ending"),
        httparse::Error::Status => RequestError::Malformed("invalid request line"),
    })?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= limits.max_head_bytes => return Err(RequestError::HeadTooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed("incomplete request line"));
    };
    if !target.starts_with('/') {
        return Err(RequestError::BadTarget);
    }
    Ok(Some((Request { method, target, minor_version, headers: req.headers }, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<R>(buf: &[u8], f: impl FnOnce(Result<Option<(Request<'_, '_>, usize)>, RequestError>) -> R) -> R {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        f(parse_request(buf, &mut storage, &HeadLimits::default()))
    }

    #[test]
    fn parses_and_reads_lists() {
        let head = b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Protocol: a, b\r\nsec-websocket-protocol:  c ,,\r\n\r\nrest";
        with(head, |r| {
            let (req, n) = r.unwrap().unwrap();
            assert_eq!(n, head.len() - 4);
            assert_eq!((req.method, req.path(), req.query()), ("GET", "/chat", Some("room=1")));
            assert!(req.has_token("connection", "upgrade"));
            assert!(!req.has_token("connection", "close"));
            let protos: Vec<_> = req.list_elements("Sec-WebSocket-Protocol").collect();
            assert_eq!(protos, [&b"a"[..], b"b", b"c"]);
            assert_eq!(req.header("host"), Some(&b"x"[..]));
            assert!(req.keep_alive());
        });
    }

    #[test]
    fn partial_then_limits() {
        with(b"GET / HTTP/1.1\r\nHost: x\r\n", |r| assert!(matches!(r, Ok(None))));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(vec![b'a'; 9000]);
        with(&long, |r| assert_eq!(r.unwrap_err(), RequestError::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        with(&many, |r| assert_eq!(r.unwrap_err(), RequestError::TooManyHeaders));
    }

    #[test]
    fn malformed() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/2.0\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for c in cases {
            with(c, |r| assert_eq!(r.unwrap_err().status(), 400, "{c:?}"));
        }
        with(b"GET http://x/ HTTP/1.1\r\n\r\n", |r| assert_eq!(r.unwrap_err(), RequestError::BadTarget));
    }
}
