//! What the bench sends, and the check of what comes back: every message carries a 32-bit
//! tag (connection and sequence number, or sender and round) as eight hex digits, so an echo
//! or a delivery that is out of order, duplicated, misrouted or damaged is found.
//!
//! Two kinds of payload: `pattern` (the tag, then a fixed run of letters: the cheapest to
//! build and check, for measuring the server's per-message cost; in binary frames the tag is
//! its four bytes and their complement instead of hex, one store and one compare) and `json` (a JSON object
//! like an application's, whose numbers change with every message: what permessage-deflate
//! meets in production, for measuring compression).

use std::io::Write;

/// Which payload the messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PayloadKind {
    Pattern,
    Json,
}

/// Builds the messages to send and checks those that come back.
pub(super) struct Payloads {
    kind: PayloadKind,
    /// Pattern in binary frames: the tag as raw bytes rather than hex.
    raw_tags: bool,
    size: usize,
    /// The message being sent (pattern: its bytes past the tag are the pattern for good,
    /// and the check compares against them).
    message: Vec<u8>,
    /// Json: the message a tag stands for, rebuilt to check an echo.
    expected: Vec<u8>,
}

impl Payloads {
    pub(super) fn new(kind: PayloadKind, size: usize, text: bool) -> Payloads {
        let message = match kind {
            PayloadKind::Pattern => pattern(size),
            PayloadKind::Json => Vec::with_capacity(Payloads::max_len(kind, size)),
        };
        Payloads { kind, raw_tags: kind == PayloadKind::Pattern && !text, size, message, expected: Vec::new() }
    }

    /// The longest message for `size` (json objects end on a whole item).
    pub(super) fn max_len(kind: PayloadKind, size: usize) -> usize {
        match kind {
            PayloadKind::Pattern => size,
            PayloadKind::Json => size + JSON_ITEM_MAX + JSON_MIN,
        }
    }

    /// The length of every message, when they all have one (the frame header is then the
    /// same for all).
    pub(super) fn fixed_len(&self) -> Option<usize> {
        (self.kind == PayloadKind::Pattern).then_some(self.size)
    }

    /// Makes the message tagged `tag` the current one.
    #[inline]
    pub(super) fn build(&mut self, tag: u32) {
        match self.kind {
            PayloadKind::Pattern => {
                let head = self.tag_head(tag);
                fill_tag(&mut self.message, head);
            }
            PayloadKind::Json => json_message(&mut self.message, tag, self.size),
        }
    }

    /// The message last built.
    #[inline]
    pub(super) fn current(&self) -> &[u8] {
        &self.message
    }

    /// Whether `payload` is, byte for byte, the message tagged `tag`.
    // The pattern's check inlined into the reactor's loop (a call per echo showed as 6 % of
    // a flooding client's core); the json one, which rebuilds the message, out of line.
    #[inline(always)]
    pub(super) fn matches(&mut self, payload: &[u8], tag: u32) -> bool {
        match self.kind {
            PayloadKind::Pattern => is_tagged_pattern(payload, self.tag_head(tag), &self.message),
            PayloadKind::Json => self.matches_json(payload, tag),
        }
    }

    #[inline(never)]
    fn matches_json(&mut self, payload: &[u8], tag: u32) -> bool {
        json_message(&mut self.expected, tag, self.size);
        payload == self.expected.as_slice()
    }

    /// The eight bytes that carry `tag`: hex digits, or (raw) the tag and its complement,
    /// little-endian, so that damage to either half shows.
    #[inline]
    fn tag_head(&self, tag: u32) -> [u8; 8] {
        if self.raw_tags {
            (u64::from(tag) | (u64::from(!tag) << 32)).to_le_bytes()
        } else {
            tag_hex(tag)
        }
    }

    /// The tag a message carries, if it carries one.
    pub(super) fn tag_of(&self, payload: &[u8]) -> Option<u32> {
        if self.raw_tags {
            let word = u64::from_le_bytes(*payload.first_chunk::<8>()?);
            let (tag, check) = (word as u32, (word >> 32) as u32);
            return (check == !tag).then_some(tag);
        }
        let at = match self.kind {
            PayloadKind::Pattern => 0,
            PayloadKind::Json => JSON_TAG_AT,
        };
        let hex = std::str::from_utf8(payload.get(at..at + 8)?).ok()?;
        u32::from_str_radix(hex, 16).ok()
    }
}

/// Where a json message's tag is: after `{"tag":"`.
const JSON_TAG_AT: usize = 8;

/// The shortest json message (`{"tag":"XXXXXXXX"}`) and an upper bound on one item.
const JSON_MIN: usize = 18;
const JSON_ITEM_MAX: usize = 128;

/// The json message tagged `tag`, of about `size` bytes: the tag, then items (id, name,
/// price, stock, tags) until the size is reached, their numbers drawn from the tag so that
/// every message differs and an echo can be rebuilt to check it.
fn json_message(out: &mut Vec<u8>, tag: u32, size: usize) {
    out.clear();
    out.extend_from_slice(b"{\"tag\":\"");
    out.extend_from_slice(&tag_hex(tag));
    out.push(b'"');
    let mut x = tag.wrapping_mul(0x9E37_79B9) | 1;
    let mut item = 0u32;
    while out.len() + 2 < size {
        out.extend_from_slice(if item == 0 { b",\"items\":[" } else { b"," });
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"id\":{},\"name\":\"item-{item}\",\"price\":{}.{:02},\"in_stock\":{},\"tags\":[\"new\",\"sale\"]}}",
            x % 1_000_000,
            (x >> 8) % 1000,
            x % 100,
            x & 1 == 1,
        );
        item += 1;
    }
    if item > 0 {
        out.push(b']');
    }
    out.push(b'}');
}

/// The tag of message `seq` of connection `conn`: the two mixed into 32 bits, so an echo that
/// comes back out of order, twice, or on another connection differs.
pub(super) fn echo_tag(seq: u64, conn: usize) -> u32 {
    (seq as u32) ^ (conn as u32).rotate_left(16)
}

/// The tag of publisher `sender`'s message in round `round`: the sender in the high 16 bits,
/// the round's low 16 bits in the low ones.
pub(super) fn fanout_tag(sender: usize, round: u64) -> u32 {
    ((sender as u32) << 16) | (round as u32 & 0xFFFF)
}

/// The sender and round (its low 16 bits) of a fan-out tag.
pub(super) fn split_fanout_tag(tag: u32) -> (usize, u32) {
    ((tag >> 16) as usize, tag & 0xFFFF)
}

/// Writes a tag's eight bytes ([`Payloads::tag_head`]) at the start of `buf`, whose bytes
/// past the eighth already hold the fixed pattern ([`pattern`]).
#[inline]
fn fill_tag(buf: &mut [u8], head: [u8; 8]) {
    match buf.first_chunk_mut::<8>() {
        // One 8-byte store: the masking pass that reads the payload a word at a time right
        // after would stall on eight byte stores (no store-to-load forwarding).
        Some(word) => *word = head,
        None => buf.iter_mut().zip(head).for_each(|(b, h)| *b = h),
    }
}

/// `tag` as eight hex digits, most significant first, computed in one register (a table
/// lookup per digit cost more than the rest of the check).
#[inline]
fn tag_hex(tag: u32) -> [u8; 8] {
    // Spread the eight nibbles over eight bytes, nibble k in byte k...
    let mut x = u64::from(tag);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // ... add '0' to each, and 'a' - '0' - 10 more to those above 9 ...
    let above_nine = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x += 0x3030_3030_3030_3030 + above_nine * 0x27;
    // ... most significant first.
    x.swap_bytes().to_le_bytes()
}

/// Whether `payload` is the message tagged `tag`: the tag's hex, then `pattern`'s bytes past
/// the eighth. Compared a word at a time in registers: for the small messages a flood
/// checks millions of, a call to `memcmp` per message cost more than the comparison.
#[inline(always)]
fn is_tagged_pattern(payload: &[u8], head: [u8; 8], pattern: &[u8]) -> bool {
    if payload.len() != pattern.len() {
        return false;
    }
    let tagged = payload.len().min(8);
    if let Ok(word) = <[u8; 8]>::try_from(&payload[..tagged]) {
        if word != head {
            return false;
        }
    } else if payload.iter().zip(head).any(|(a, b)| *a != b) {
        return false;
    }
    let (rest, want) = (&payload[tagged..], &pattern[tagged..]);
    let word = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    if rest.len() < 8 {
        return rest == want;
    }
    // Whole words, then the last eight bytes (overlapping the words before: equality does not
    // mind), so no byte loop is left.
    let mut diff = word(rest, rest.len() - 8) ^ word(want, rest.len() - 8);
    let mut at = 0;
    while at + 8 <= rest.len() {
        diff |= word(rest, at) ^ word(want, at);
        at += 8;
    }
    diff == 0
}

/// The payload of `size` bytes with the pattern after its first eight.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|j| b'a' + (j % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_differ() {
        for (kind, text) in [(PayloadKind::Pattern, true), (PayloadKind::Pattern, false), (PayloadKind::Json, true)] {
            let mut p = Payloads::new(kind, 200, text);
            p.build(fanout_tag(513, 70_000));
            let tag = p.tag_of(p.current()).expect("a tag");
            assert_eq!(split_fanout_tag(tag), (513, 70_000 & 0xFFFF));
            assert_eq!(p.tag_of(b"zz"), None);
            assert_eq!(p.tag_of(b"{\"tag\":\"0000000g\"}"), None);
            assert_eq!(p.tag_of(b"0000000g and more"), None);
            let mut damaged = p.current().to_vec();
            damaged[if kind == PayloadKind::Json { 15 } else { 6 }] ^= 1;
            assert_ne!(p.tag_of(&damaged), Some(fanout_tag(513, 70_000)));
            assert!(!p.matches(&damaged, fanout_tag(513, 70_000)));
        }
        assert_eq!(&Payloads::new(PayloadKind::Pattern, 20, false).current()[8..], &pattern(20)[8..]);
        assert_ne!(echo_tag(1, 0), echo_tag(0, 1));
        assert_ne!(echo_tag(1, 2), echo_tag(2, 2));
    }

    #[test]
    fn tag_hex_is_lowercase_hex() {
        for tag in [0, 1, 9, 10, 15, 0xdead_beef, 0x0123_4567, 0x89ab_cdef, u32::MAX] {
            assert_eq!(tag_hex(tag), *format!("{tag:08x}").as_bytes(), "{tag:x}");
        }
    }

    #[test]
    fn json_messages_are_json_of_about_the_size_and_differ() {
        for size in [8, 19, 64, 200, 1024, 16_384] {
            let mut p = Payloads::new(PayloadKind::Json, size, true);
            p.build(7);
            let first = p.current().to_vec();
            let v: serde_json::Value = serde_json::from_slice(&first).expect("valid JSON");
            assert_eq!(v["tag"], "00000007");
            assert!(first.len() <= Payloads::max_len(PayloadKind::Json, size), "{size}: {}", first.len());
            assert!(first.len() >= size.min(JSON_MIN), "{size}: {}", first.len());
            assert!(p.matches(&first, 7));
            p.build(8);
            assert!(!p.matches(&first, 8));
            if size >= 64 {
                assert_ne!(&first[20..], &p.current()[20..], "the numbers change with the tag");
            }
            let mut damaged = first.clone();
            let last = damaged.len() - 2;
            damaged[last] ^= 1;
            assert!(!p.matches(&damaged, 7));
        }
    }

    #[test]
    fn the_check_finds_every_changed_byte_and_wrong_length() {
        for size in 0..40 {
            let pattern = pattern(size);
            let mut sent = pattern.clone();
            fill_tag(&mut sent, tag_hex(0xdead_beef));
            assert!(is_tagged_pattern(&sent, tag_hex(0xdead_beef), &pattern), "size {size}");
            if size > 0 {
                assert!(!is_tagged_pattern(&sent, tag_hex(0xdead_beee), &pattern) || size < 8, "size {size}");
                assert!(!is_tagged_pattern(&sent[..size - 1], tag_hex(0xdead_beef), &pattern));
            }
            for at in 0..size {
                let mut changed = sent.clone();
                changed[at] ^= 0x20;
                assert!(!is_tagged_pattern(&changed, tag_hex(0xdead_beef), &pattern), "size {size} at {at}");
            }
        }
    }
}
