//! Frame headers (RFC 6455 §5.2): parsed straight from the read buffer, encoded into a
//! caller-provided array. The payload is never touched here; the caller owns it in place.

use super::ProtocolError;

/// The largest header: 2 fixed bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (§5.2). Reserved values are rejected at parse time, so every `Opcode`
/// is one a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// Control frames are those whose opcode has the high bit set (§5.5).
    #[inline]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    #[inline]
    fn from_bits(bits: u8) -> Result<Opcode, ProtocolError> {
        Ok(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }
}

/// Which side's frames are being parsed: a server reads masked client frames (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Parsing frames a client sent: every frame must be masked.
    Server,
    /// Parsing frames a server sent: no frame may be masked.
    Client,
}

/// What a parser accepts.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// The largest payload length accepted, checked before anything is reserved.
    pub max_payload: u64,
    /// RSV bits (as `0b0111_0000` in the first byte) that a negotiated extension defines.
    pub allowed_rsv: u8,
    pub role: Role,
}

impl FrameLimits {
    pub const fn server(max_payload: u64) -> FrameLimits {
        FrameLimits { max_payload, allowed_rsv: 0, role: Role::Server }
    }

    pub const fn client(max_payload: u64) -> FrameLimits {
        FrameLimits { max_payload, allowed_rsv: 0, role: Role::Client }
    }
}

/// A parsed frame header. `payload_len` has been checked against the limit, so it fits memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1–3 as they appear in the first byte (`0b0111_0000` mask).
    pub rsv: u8,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: usize,
}

/// Parses one frame header from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((header, header_len)))` when the
/// header is complete (the payload starts at `header_len`), or the rule the bytes break.
/// Rules visible in the first two bytes are reported as soon as those two bytes arrive.
#[inline]
pub fn parse_header(buf: &[u8], limits: &FrameLimits) -> Result<Option<(Header, usize)>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    let rsv = b0 & 0x70;
    if rsv & !limits.allowed_rsv != 0 {
        return Err(ProtocolError::ReservedBitsSet);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    match (limits.role, masked) {
        (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
        (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less and
        // MUST NOT be fragmented."
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if len7 > 125 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, mut pos): (u64, usize) = match len7 {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => {
                let len = u16::from_be_bytes([a, b]);
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (u64::from(len), 4)
            }
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                if len <= 0xFFFF {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if payload_len > limits.max_payload {
        return Err(ProtocolError::MessageTooBig);
    }
    let payload_len = usize::try_from(payload_len).map_err(|_| ProtocolError::MessageTooBig)?;
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(&[a, b, c, d]) => {
                pos += 4;
                Some([a, b, c, d])
            }
            _ => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((Header { fin, rsv, opcode, mask, payload_len }, pos)))
}

/// Encodes a frame header into `out`, returning how many bytes were written.
/// The length uses the minimal encoding (§5.2). A server passes `mask: None`.
#[inline]
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: Opcode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if let Ok(len16) = u16::try_from(payload_len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    if let Some(key) = mask {
        out[pos..pos + 4].copy_from_slice(&key);
        pos += 4;
    }
    pos
}

/// The header length a payload of `payload_len` bytes needs (unmasked).
#[inline]
pub const fn header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits::server(1 << 20);

    fn parse(bytes: &[u8]) -> Result<Option<(Header, usize)>, ProtocolError> {
        parse_header(bytes, &LIMITS)
    }

    /// RFC 6455 §5.7: "A single-frame masked text message" containing "Hello".
    #[test]
    fn rfc_example_masked_hello() {
        let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, n) = parse(&frame).unwrap().unwrap();
        assert_eq!(n, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Text);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
        let mut payload = frame[n..].to_vec();
        crate::ws::mask::unmask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
    }

    /// §5.7: unmasked frames from a server, read by a client.
    #[test]
    fn rfc_examples_server_frames() {
        let client = FrameLimits::client(1 << 20);
        // "A single-frame unmasked text message"
        let (h, n) = parse_header(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'], &client).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len, n), (true, Opcode::Text, 5, 2));
        // "A fragmented unmasked text message": 0x01 0x03 "Hel", 0x80 0x02 "lo"
        let (h, _) = parse_header(&[0x01, 0x03, b'H', b'e', b'l'], &client).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, Opcode::Text));
        let (h, _) = parse_header(&[0x80, 0x02, b'l', b'o'], &client).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, Opcode::Continuation));
        // "Unmasked Ping request and masked Ping response"
        let (h, _) = parse_header(&[0x89, 0x05], &client).unwrap().unwrap();
        assert_eq!(h.opcode, Opcode::Ping);
        let (h, n) = parse(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.opcode, n), (Opcode::Pong, 6));
        // "256 bytes binary message in a single unmasked frame"
        let (h, n) = parse_header(&[0x82, 0x7E, 0x01, 0x00], &client).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (Opcode::Binary, 256, 4));
        // "64KiB binary message in a single unmasked frame"
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (h, n) = parse_header(&bytes, &client).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn needs_more_bytes_at_every_cut() {
        let frames: [&[u8]; 3] = [
            &[0x82, 0x85, 1, 2, 3, 4],
            &[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4],
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4],
        ];
        for frame in frames {
            for cut in 0..frame.len() {
                assert_eq!(parse(&frame[..cut]), Ok(None), "cut {cut} of {frame:?}");
            }
            assert_eq!(parse(frame).unwrap().unwrap().1, frame.len());
        }
    }

    #[test]
    fn invalid_headers() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (&[0xC1, 0x80], ReservedBitsSet),
            (&[0xA1, 0x80], ReservedBitsSet),
            (&[0x91, 0x80], ReservedBitsSet),
            (&[0x83, 0x80], ReservedOpcode(3)),
            (&[0x87, 0x80], ReservedOpcode(7)),
            (&[0x8B, 0x80], ReservedOpcode(0xB)),
            (&[0x8F, 0x80], ReservedOpcode(0xF)),
            (&[0x81, 0x05], UnmaskedClientFrame),
            (&[0x09, 0x80], FragmentedControl),
            (&[0x08, 0x80], FragmentedControl),
            (&[0x89, 0xFE], ControlFrameTooLong),
            (&[0x8A, 0xFE, 0x00, 0x7E], ControlFrameTooLong),
            (&[0x88, 0xFF], ControlFrameTooLong),
            (&[0x82, 0xFE, 0x00, 0x7D], NonMinimalLength),
            (&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], NonMinimalLength),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], LengthTopBitSet),
            (&[0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 1], MessageTooBig),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Err(*want), "{bytes:02x?}");
        }
        let client = FrameLimits::client(1 << 20);
        assert_eq!(parse_header(&[0x81, 0x85], &client), Err(MaskedServerFrame));
    }

    #[test]
    fn limit_is_inclusive_and_checked_before_the_mask() {
        let limits = FrameLimits::server(126);
        assert!(parse_header(&[0x82, 0xFE, 0x00, 0x7E, 1, 2, 3, 4], &limits).unwrap().is_some());
        // The key has not arrived yet, but the length is already over the limit.
        assert_eq!(parse_header(&[0x82, 0xFE, 0x00, 0x7F], &limits), Err(ProtocolError::MessageTooBig));
    }

    #[test]
    fn allowed_rsv_bits_pass() {
        let limits = FrameLimits { allowed_rsv: 0x40, ..LIMITS };
        let (h, _) = parse_header(&[0xC1, 0x80, 0, 0, 0, 0], &limits).unwrap().unwrap();
        assert_eq!(h.rsv, 0x40);
        assert_eq!(parse_header(&[0xE1, 0x80], &limits), Err(ProtocolError::ReservedBitsSet));
    }

    #[test]
    fn encode_roundtrips_every_length_class() {
        let client = FrameLimits::client(u64::MAX >> 1);
        for len in [0usize, 1, 125, 126, 127, 0xFFFF, 0x10000, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut out, true, Opcode::Binary, len, mask);
                let limits = if mask.is_some() { FrameLimits::server(u64::MAX >> 1) } else { client };
                let (h, m) = parse_header(&out[..n], &limits).unwrap().unwrap();
                assert_eq!((h.payload_len, h.mask, m), (len, mask, n));
                if mask.is_none() {
                    assert_eq!(n, header_len(len));
                }
            }
        }
    }
}
