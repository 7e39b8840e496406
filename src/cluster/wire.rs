//! What wsgate puts on Redis channels, and the RESP commands that carry it. Pure functions on
//! byte slices (fuzzed: `cluster_message`).
//!
//! A message is `W`, version `1`, a kind byte, the sending node's id (8 bytes, big-endian),
//! then for a topic publish the payload, and for a broker message the receivers' length
//! (4 bytes, big-endian), the receivers and the payload. A node ignores its own messages (its
//! subscribers were served before the message left), and anything that is not such a message
//! is counted and ignored: the channels are open to any Redis client.
//!
//! A publication to a topic with history is numbered by Redis ([`super::streams`]): after the
//! node id come the connection ids not to deliver to on the publishing node (a count, 2 bytes,
//! then 8 bytes each), then the offset in decimal, `:`, the epoch, `:`, and the payload. Every
//! node, the publishing one too, delivers it from the channel, so all see the same order.

use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

use crate::ws::frame::Opcode;

const MAGIC: u8 = b'W';
const VERSION: u8 = b'1';
const HEADER: usize = 11;

/// Which message a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A topic's (or chat room's) message.
    Publish,
    /// A broker message for the holders of the tokens it names.
    Route,
    /// A publication to a topic with history, numbered by Redis.
    Numbered,
}

/// A message from another node.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: Kind,
    pub node: u64,
    pub opcode: Opcode,
    /// A broker message's receivers part; a numbered publication's excluded connection ids
    /// (8 bytes each); empty for a publish.
    pub receivers: &'a [u8],
    /// A numbered publication's offset and epoch (0 and empty otherwise).
    pub offset: u64,
    pub epoch: &'a [u8],
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// A numbered publication's excluded connection ids.
    pub fn excluded(&self) -> impl Iterator<Item = u64> + '_ {
        self.receivers.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
    }
}

/// Why a message on a wsgate channel was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    NotWsgate,
    Truncated,
    BadKind,
    BadOffset,
}

/// Encodes a message (see the module's comment).
pub fn encode(kind: Kind, node: u64, opcode: Opcode, receivers: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 4 + receivers.len() + payload.len());
    let kind_byte = match (kind, opcode) {
        (Kind::Publish, Opcode::Binary) => b'b',
        (Kind::Publish, _) => b't',
        (Kind::Route, Opcode::Binary) => b'B',
        (Kind::Route, _) => b'T',
        (Kind::Numbered, Opcode::Binary) => b'N',
        (Kind::Numbered, _) => b'n',
    };
    out.extend_from_slice(&[MAGIC, VERSION, kind_byte]);
    out.extend_from_slice(&node.to_be_bytes());
    if kind == Kind::Route {
        out.extend_from_slice(&(receivers.len() as u32).to_be_bytes());
        out.extend_from_slice(receivers);
    }
    out.extend_from_slice(payload);
    out
}

/// A numbered publication's head, up to its offset (Redis's script appends the offset, the
/// epoch and the payload).
pub fn numbered_head(node: u64, opcode: Opcode, exclude_ids: &[u64]) -> Vec<u8> {
    let mut out = encode(Kind::Numbered, node, opcode, b"", b"");
    let count = exclude_ids.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for id in &exclude_ids[..count] {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// A whole numbered publication, as Redis's script makes it (`excluded`: 8 bytes per id).
pub fn encode_numbered(
    node: u64,
    opcode: Opcode,
    excluded: &[u8],
    offset: u64,
    epoch: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = encode(Kind::Numbered, node, opcode, b"", b"");
    out.extend_from_slice(&((excluded.len() / 8) as u16).to_be_bytes());
    out.extend_from_slice(&excluded[..excluded.len() / 8 * 8]);
    out.extend_from_slice(offset.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(epoch);
    out.push(b':');
    out.extend_from_slice(payload);
    out
}

/// A decimal offset as Redis writes it: 1 to 20 digits, no leading zero, fits in a u64.
fn parse_offset(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Decodes a message.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let (&[magic, version, kind], rest) = bytes.split_first_chunk::<3>().ok_or(WireError::Truncated)?;
    if magic != MAGIC || version != VERSION {
        return Err(WireError::NotWsgate);
    }
    let (kind, opcode) = match kind {
        b't' => (Kind::Publish, Opcode::Text),
        b'b' => (Kind::Publish, Opcode::Binary),
        b'T' => (Kind::Route, Opcode::Text),
        b'B' => (Kind::Route, Opcode::Binary),
        b'n' => (Kind::Numbered, Opcode::Text),
        b'N' => (Kind::Numbered, Opcode::Binary),
        _ => return Err(WireError::BadKind),
    };
    let (node, rest) = rest.split_first_chunk::<8>().ok_or(WireError::Truncated)?;
    let node = u64::from_be_bytes(*node);
    let (receivers, payload) = match kind {
        Kind::Publish => (&rest[..0], rest),
        Kind::Route => {
            let (len, rest) = rest.split_first_chunk::<4>().ok_or(WireError::Truncated)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| WireError::Truncated)?;
            if rest.len() < len {
                return Err(WireError::Truncated);
            }
            rest.split_at(len)
        }
        Kind::Numbered => {
            let (count, rest) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
            let len = usize::from(u16::from_be_bytes(*count)) * 8;
            if rest.len() < len {
                return Err(WireError::Truncated);
            }
            let (excluded, rest) = rest.split_at(len);
            let mut parts = rest.splitn(3, |&b| b == b':');
            let (Some(offset), Some(epoch), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(WireError::Truncated);
            };
            let offset = parse_offset(offset).ok_or(WireError::BadOffset)?;
            return Ok(Message { kind, node, opcode, receivers: excluded, offset, epoch, payload });
        }
    };
    Ok(Message { kind, node, opcode, receivers, offset: 0, epoch: b"", payload })
}

/// Appends a RESP2 command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frames: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer is exactly the frame's length, so encoding cannot run out of room.
    let written = encode_borrowed(&mut out[start..], &frame, false).unwrap_or(0);
    out.truncate(start + written);
}

/// A channel's name: the prefix, then `t:` and the topic, or `broker`.
pub fn topic_channel(prefix: &str, topic: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(prefix.len() + 2 + topic.len());
    c.extend_from_slice(prefix.as_bytes());
    c.extend_from_slice(b"t:");
    c.extend_from_slice(topic.as_bytes());
    c
}

pub fn broker_channel(prefix: &str) -> Vec<u8> {
    let mut c = prefix.as_bytes().to_vec();
    c.extend_from_slice(b"broker");
    c
}

/// The topic a channel names, if it is one of this prefix's topic channels.
pub fn channel_topic<'a>(prefix: &str, channel: &'a [u8]) -> Option<&'a str> {
    let rest = channel.strip_prefix(prefix.as_bytes())?.strip_prefix(b"t:")?;
    std::str::from_utf8(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let m = encode(Kind::Publish, 7, Opcode::Text, b"", b"hello");
        assert_eq!(
            decode(&m),
            Ok(Message {
                kind: Kind::Publish,
                node: 7,
                opcode: Opcode::Text,
                receivers: b"",
                offset: 0,
                epoch: b"",
                payload: b"hello"
            })
        );
        let m = encode(Kind::Route, u64::MAX, Opcode::Binary, b"abc1,group/", b"\x00\x01");
        assert_eq!(
            decode(&m),
            Ok(Message {
                kind: Kind::Route,
                node: u64::MAX,
                opcode: Opcode::Binary,
                receivers: b"abc1,group/",
                offset: 0,
                epoch: b"",
                payload: b"\x00\x01"
            })
        );
        // What the script appends to the head: offset, epoch, payload (which may hold ':').
        let mut m = numbered_head(9, Opcode::Text, &[3, 4]);
        m.extend_from_slice(b"42:e1:{\"a\":\"b:c\"}");
        let d = decode(&m).unwrap();
        assert_eq!(
            (d.kind, d.node, d.offset, d.epoch, d.payload),
            (Kind::Numbered, 9, 42, &b"e1"[..], &b"{\"a\":\"b:c\"}"[..])
        );
        assert_eq!(d.excluded().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(encode_numbered(9, Opcode::Text, d.receivers, 42, b"e1", d.payload), m);
        for bad in [&b"042:e:x"[..], b":e:x", b"x1:e:x", b"99999999999999999999999:e:x"] {
            let mut m = numbered_head(9, Opcode::Binary, &[]);
            m.extend_from_slice(bad);
            assert_eq!(decode(&m).unwrap_err(), WireError::BadOffset, "{bad:?}");
        }
        let mut m = numbered_head(9, Opcode::Binary, &[]);
        m.extend_from_slice(b"7:e");
        assert_eq!(decode(&m).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn foreign_and_truncated_messages_are_refused() {
        assert_eq!(decode(b""), Err(WireError::Truncated));
        assert_eq!(decode(b"hello world, not ours"), Err(WireError::NotWsgate));
        assert_eq!(decode(b"W1x12345678"), Err(WireError::BadKind));
        assert_eq!(decode(b"W1t1234567"), Err(WireError::Truncated));
        let m = encode(Kind::Route, 1, Opcode::Text, b"abc", b"x");
        assert_eq!(decode(&m[..HEADER + 5]), Err(WireError::Truncated));
        let mut huge = m[..HEADER].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&huge), Err(WireError::Truncated));
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"ch", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn channels() {
        assert_eq!(topic_channel("wsgate:", "room/1"), b"wsgate:t:room/1");
        assert_eq!(channel_topic("wsgate:", b"wsgate:t:room/1"), Some("room/1"));
        assert_eq!(channel_topic("wsgate:", b"wsgate:broker"), None);
        assert_eq!(channel_topic("other:", b"wsgate:t:x"), None);
        assert_eq!(broker_channel("p:"), b"p:broker");
    }
}
