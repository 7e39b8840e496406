//! HTTP/1.1 as far as a WebSocket server needs it: request heads (parsed with httparse into
//! caller-provided storage, bounded in bytes and header count), responses, and the files of
//! `static` routes.

pub mod request;
pub mod response;
pub mod static_files;

pub use request::{parse_request, HeadLimits, Request, RequestError};

/// RFC 9110 `tchar`: a byte that may appear in a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
