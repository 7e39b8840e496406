//! Every way a peer can break RFC 6455 after the handshake, and the close code each maps to.

use std::fmt;

/// A broken protocol rule. Each variant names the rule; [`ProtocolError::close_code`] is the
/// one place that maps rules to the close code sent to the peer (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.2: RSV1–3 must be 0 unless an extension defining them was negotiated.
    ReservedBitsSet,
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpcode(u8),
    /// §5.1: a server must close on a frame from the client that is not masked.
    UnmaskedClientFrame,
    /// §5.1: a client must close on a frame from the server that is masked.
    MaskedServerFrame,
    /// §5.5: control frames carry at most 125 payload bytes.
    ControlFrameTooLong,
    /// §5.5: control frames must not be fragmented.
    FragmentedControl,
    /// §5.2: the payload length must be encoded in the minimal number of bytes.
    NonMinimalLength,
    /// §5.2: the most significant bit of a 64-bit payload length must be 0.
    LengthTopBitSet,
    /// A frame or message is larger than the configured limit (§7.4.1, 1009).
    MessageTooBig,
    /// §5.4: a continuation frame arrived with no fragmented message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame arrived while a fragmented message was in progress.
    ExpectedContinuation,
    /// §8.1: a text message (or close reason) is not valid UTF-8.
    InvalidUtf8,
    /// §5.5.1: a close payload of exactly one byte cannot hold a status code.
    CloseCodeTruncated,
    /// §7.4: the close status code is not one a peer may send.
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code to send when this rule is broken (RFC 6455 §7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => super::close::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig => super::close::MESSAGE_TOO_BIG,
            _ => super::close::PROTOCOL_ERROR,
        }
    }

    /// A short reason suitable for the close frame and the log.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBitsSet => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::UnmaskedClientFrame => "client frame not masked",
            ProtocolError::MaskedServerFrame => "server frame masked",
            ProtocolError::ControlFrameTooLong => "control frame too long",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::NonMinimalLength => "non-minimal payload length",
            ProtocolError::LengthTopBitSet => "payload length top bit set",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "expected a continuation frame",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::CloseCodeTruncated => "close payload of one byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}
