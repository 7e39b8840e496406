//! Topics with history across nodes: each is a Redis stream (`<prefix>h:<topic>`, one entry
//! per publication, its id the offset) with a hash beside it (`<prefix>m:<topic>`: the epoch
//! and the last offset given). Two server-side scripts do everything that must be atomic:
//!
//! - publishing numbers the publication (`HINCRBY`), appends it to the stream trimmed to the
//!   topic's `size` (`XADD MAXLEN`), renews both keys' ttl and `PUBLISH`es it, so two nodes
//!   never give one offset twice and no subscriber sees a publication before it is in history;
//! - reading returns the epoch, the last offset, the oldest kept and the entries asked for, as
//!   one snapshot.
//!
//! A topic whose keys are gone (never published, silent past its ttl, deleted, a Redis that
//! restarted without persistence) gets a new epoch from the node that touches it first.
//! Everything here is pure: commands to send and replies to parse (fuzzed: `cluster_message`).

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

/// KEYS: stream, meta. ARGV: channel, message head, payload, size, ttl (ms), new epoch,
/// opcode (`t` or `b`).
pub const PUBLISH_SCRIPT: &str = "\
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], offset .. '-0', 't', ms, 'o', ARGV[7], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. offset .. ':' .. epoch .. ':' .. ARGV[3])
return offset
";

/// KEYS: stream, meta. ARGV: after this offset (empty: from the oldest, or the newest when
/// reversed), count, reverse (`1`), new epoch, ttl (ms), bytes (the entries after the first
/// stop where their fields would pass it: a reply stays within what the link takes).
pub const READ_SCRIPT: &str = "\
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local last = redis.call('HGET', KEYS[2], 'offset') or '0'
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local entries
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
elseif ARGV[3] == '1' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
end
local budget, used, kept = tonumber(ARGV[6]), 0, {}
for i, e in ipairs(entries) do
  local size = 0
  for j = 2, #e[2], 2 do size = size + #e[2][j] end
  if i > 1 and used + size > budget then break end
  used = used + size
  kept[i] = e
end
return {epoch, last, oldest, kept}
";

/// A script's SHA-1, as `EVALSHA` names it.
pub fn sha(script: &str) -> String {
    sha1_smol::Sha1::from(script).digest().to_string()
}

pub fn stream_key(prefix: &str, topic: &str) -> Vec<u8> {
    [prefix.as_bytes(), b"h:", topic.as_bytes()].concat()
}

pub fn meta_key(prefix: &str, topic: &str) -> Vec<u8> {
    [prefix.as_bytes(), b"m:", topic.as_bytes()].concat()
}

/// A kept publication, as the read script returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry<'a> {
    pub offset: u64,
    /// When Redis appended it (ms since the Unix epoch, Redis's clock).
    pub at_ms: u64,
    pub binary: bool,
    pub payload: &'a [u8],
}

/// What the read script returned.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadReply<'a> {
    pub epoch: &'a str,
    pub last: u64,
    /// The oldest entry still in the stream (none: empty).
    pub oldest: Option<u64>,
    pub entries: Vec<StreamEntry<'a>>,
}

/// Parses the read script's reply (the whole RESP2 reply). Anything else is an error: the
/// keys are open to every Redis client, so what is in them is checked like network input.
pub fn parse_read(reply: &[u8]) -> Result<ReadReply<'_>, String> {
    let Some((frame, _)) = decode_range(reply).map_err(|e| format!("not RESP2: {}", e.details()))? else {
        return Err("a truncated reply".into());
    };
    let RangeFrame::Array(parts) = &frame else { return Err("not an array".into()) };
    let [epoch, last, oldest, entries] = parts.as_slice() else { return Err("not four parts".into()) };
    let epoch = std::str::from_utf8(bulk(reply, epoch)?).map_err(|_| "an epoch that is not UTF-8")?;
    if epoch.is_empty() || epoch.contains(':') {
        return Err("a malformed epoch".into());
    }
    let last = number(bulk(reply, last)?).ok_or("a malformed last offset")?;
    let RangeFrame::Array(oldest) = oldest else { return Err("oldest: not an array".into()) };
    let oldest = match oldest.first() {
        Some(e) => Some(entry(reply, e)?.offset),
        None => None,
    };
    let RangeFrame::Array(entries) = entries else { return Err("entries: not an array".into()) };
    let entries = entries.iter().map(|e| entry(reply, e)).collect::<Result<Vec<_>, _>>()?;
    Ok(ReadReply { epoch, last, oldest, entries })
}

/// An integer reply (`DEL`'s count).
pub fn parse_count(reply: &[u8]) -> Result<i64, String> {
    match decode_range(reply).map_err(|e| format!("not RESP2: {}", e.details()))? {
        Some((RangeFrame::Integer(n), _)) => Ok(n),
        Some(_) => Err("not an integer".into()),
        None => Err("a truncated reply".into()),
    }
}

/// A string reply's bytes (a range of `buf`).
pub(super) fn bulk<'a>(buf: &'a [u8], frame: &RangeFrame) -> Result<&'a [u8], String> {
    match frame {
        RangeFrame::BulkString((start, end)) | RangeFrame::SimpleString((start, end)) => {
            buf.get(*start..*end).ok_or_else(|| "a range outside the reply".into())
        }
        _ => Err("not a string".into()),
    }
}

/// `[id, [field, value, ...]]` with id `N-0` and fields `t` and `d`.
fn entry<'a>(buf: &'a [u8], frame: &RangeFrame) -> Result<StreamEntry<'a>, String> {
    let RangeFrame::Array(parts) = frame else { return Err("an entry that is not an array".into()) };
    let [id, RangeFrame::Array(fields)] = parts.as_slice() else { return Err("a malformed entry".into()) };
    let id = bulk(buf, id)?;
    let offset = id.strip_suffix(b"-0").and_then(number).ok_or("an entry id that is not an offset")?;
    let (mut at_ms, mut payload, mut binary) = (None, None, false);
    for pair in fields.chunks(2) {
        let [name, value] = pair else { return Err("an odd field list".into()) };
        match bulk(buf, name)? {
            b"t" => at_ms = number(bulk(buf, value)?),
            b"d" => payload = Some(bulk(buf, value)?),
            b"o" => binary = bulk(buf, value)? == b"b",
            _ => {}
        }
    }
    match (at_ms, payload) {
        (Some(at_ms), Some(payload)) => Ok(StreamEntry { offset, at_ms, binary, payload }),
        _ => Err("an entry without its time or data".into()),
    }
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Vec<u8> {
        [format!("${}\r\n", s.len()).as_bytes(), s, b"\r\n"].concat()
    }

    fn entry(offset: u64, at: u64, data: &[u8]) -> Vec<u8> {
        [
            b"*2\r\n".to_vec(),
            bulk(format!("{offset}-0").as_bytes()),
            b"*4\r\n".to_vec(),
            bulk(b"t"),
            bulk(at.to_string().as_bytes()),
            bulk(b"d"),
            bulk(data),
        ]
        .concat()
    }

    #[test]
    fn read_replies_parse() {
        let reply = [
            b"*4\r\n".to_vec(),
            bulk(b"e1"),
            bulk(b"12"),
            b"*1\r\n".to_vec(),
            entry(10, 5, b"x"),
            b"*2\r\n".to_vec(),
            entry(11, 6, b"{\"a\":1}"),
            entry(12, 7, b""),
        ]
        .concat();
        let r = parse_read(&reply).unwrap();
        assert_eq!((r.epoch, r.last, r.oldest), ("e1", 12, Some(10)));
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.entries[0], StreamEntry { offset: 11, at_ms: 6, binary: false, payload: b"{\"a\":1}" });
        // Empty stream.
        let reply = [b"*4\r\n".to_vec(), bulk(b"e2"), bulk(b"0"), b"*0\r\n*0\r\n".to_vec()].concat();
        assert_eq!(parse_read(&reply).unwrap(), ReadReply { epoch: "e2", last: 0, oldest: None, entries: vec![] });
        // Someone else's data in our keys.
        for bad in [
            b"-ERR no\r\n".to_vec(),
            b"*3\r\n".to_vec(),
            [b"*4\r\n".to_vec(), bulk(b"e:1"), bulk(b"0"), b"*0\r\n*0\r\n".to_vec()].concat(),
            [b"*4\r\n".to_vec(), bulk(b"e"), bulk(b"x"), b"*0\r\n*0\r\n".to_vec()].concat(),
            [
                b"*4\r\n".to_vec(),
                bulk(b"e"),
                bulk(b"1"),
                b"*0\r\n*1\r\n*2\r\n".to_vec(),
                bulk(b"1-1"),
                b"*0\r\n".to_vec(),
            ]
            .concat(),
        ] {
            assert!(parse_read(&bad).is_err(), "{:?}", String::from_utf8_lossy(&bad));
        }
    }

    #[test]
    fn scripts_are_named_by_their_sha1() {
        assert_eq!(sha("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(stream_key("ws:", "a/b"), b"ws:h:a/b");
        assert_eq!(meta_key("ws:", "a/b"), b"ws:m:a/b");
    }
}
