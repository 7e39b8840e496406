//! Close frames (RFC 6455 §5.5.1, §7.4): status codes and the payload check.

use super::ProtocolError;

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Reserved: "no status code was present". Never sent on the wire.
pub const NO_STATUS: u16 = 1005;
/// Reserved: "closed abnormally" (no close frame). Never sent on the wire.
pub const ABNORMAL: u16 = 1006;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY_VIOLATION: u16 = 1008;
pub const MESSAGE_TOO_BIG: u16 = 1009;
pub const INTERNAL_ERROR: u16 = 1011;
pub const TRY_AGAIN_LATER: u16 = 1013;

/// A received close frame's payload: no code, or a code and a UTF-8 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    pub code: Option<u16>,
    pub reason: &'a str,
}

/// Whether a peer may put `code` in a close frame (§7.4.1, §7.4.2, and the IANA registry).
///
/// 1004–1006 and 1015 are reserved and never sent; 1012–1014 are registered (service restart,
/// try again later, bad gateway) and accepted; 1016–2999 are unassigned; 3000–4999 belong to
/// libraries, frameworks and applications.
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close payload: empty, or a valid 2-byte code followed by a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame<'_>, ProtocolError> {
    match payload {
        [] => Ok(CloseFrame { code: None, reason: "" }),
        [_] => Err(ProtocolError::CloseCodeTruncated),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = super::utf8::validate(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(CloseFrame { code: Some(code), reason })
        }
    }
}

/// Builds a close payload into `out` (code, then as much of `reason` as fits in a control
/// frame, cut at a character boundary). Returns the payload length.
pub fn encode_close_payload(out: &mut [u8; 125], code: u16, reason: &str) -> usize {
    out[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    out[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    2 + cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        use ProtocolError::*;
        type Expected = Result<(Option<u16>, &'static str), ProtocolError>;
        let cases: &[(&[u8], Expected)] = &[
            (b"", Ok((None, ""))),
            (&[0x03], Err(CloseCodeTruncated)),
            (&[0x03, 0xE8], Ok((Some(1000), ""))),
            (&[0x03, 0xE8, b'b', b'y', b'e'], Ok((Some(1000), "bye"))),
            (&[0x0F, 0x9F], Ok((Some(3999), ""))),
            (&[0x13, 0x87], Ok((Some(4999), ""))),
            (&[0x03, 0xE8, 0xff], Err(InvalidUtf8)),
            (&[0x00, 0x00], Err(InvalidCloseCode(0))),
            (&[0x03, 0xE7], Err(InvalidCloseCode(999))),
            (&[0x03, 0xEC], Err(InvalidCloseCode(1004))),
            (&[0x03, 0xED], Err(InvalidCloseCode(1005))),
            (&[0x03, 0xEE], Err(InvalidCloseCode(1006))),
            (&[0x03, 0xF7], Err(InvalidCloseCode(1015))),
            (&[0x07, 0xD0], Err(InvalidCloseCode(2000))),
            (&[0x0B, 0xB7], Err(InvalidCloseCode(2999))),
            (&[0x13, 0x88], Err(InvalidCloseCode(5000))),
            (&[0xFF, 0xFF], Err(InvalidCloseCode(65535))),
        ];
        for (bytes, want) in cases {
            let got = parse_close_payload(bytes).map(|c| (c.code, c.reason));
            assert_eq!(&got, want, "{bytes:02x?}");
        }
    }

    #[test]
    fn encode_cuts_reason_at_a_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "é".repeat(100);
        let n = encode_close_payload(&mut out, 1000, &reason);
        assert!(n <= 125);
        let parsed = parse_close_payload(&out[..n]).unwrap();
        assert_eq!(parsed.code, Some(1000));
        assert_eq!(parsed.reason.len(), 122);
    }
}
