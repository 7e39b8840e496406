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

/// Why a legacy handshake or frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HixieError {
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
    use md5::{Digest, Md5};
    let mut input = [0u8; 16];
    input[..4].copy_from_slice(&key_number(key1)?.to_be_bytes());
    input[4..8].copy_from_slice(&key_number(key2)?.to_be_bytes());
    input[8..].copy_from_slice(key3);
    Ok(Md5::digest(input).into())
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

/// Appends a text frame (the caller sends text only: these drafts have no binary messages).
pub fn encode_text(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(0x00);
    out.extend_from_slice(text);
    out.push(0xFF);
}

/// The closing frame.
pub const CLOSE: [u8; 2] = [0xFF, 0x00];

#[cfg(test)]
mod tests {
    use super::*;

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
}
