//! Presence across nodes: each node's members of a topic are one Redis hash,
//! `<prefix>p:<topic>:<node>` (field: the connection id in 16 hex digits; value: the member's
//! JSON object), and `<prefix>pn:<topic>` is the set of nodes that have such a hash.
//!
//! Both keys expire after the cluster's `presence_ttl`; each node renews its own every third
//! of it. A node that dies (or loses Redis) stops renewing, so its members are gone within
//! `presence_ttl`, with no other node having to notice. A node whose publish link comes back
//! writes all its members again (the hash cleared first), so what it lost meanwhile (a
//! restarted Redis, a leave that could not be sent) is mended at once.
//!
//! Reads go through one script that walks the topic's nodes (dropping those whose hash has
//! expired from the set) and returns a page in cursor order, or the counts. Everything here is
//! pure: the scripts, the keys, and parsing the replies (fuzzed: `cluster_message`).

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

use super::streams::bulk;
use crate::presence::{Page, Stats};

/// KEYS: the node's hash, the topic's node set. ARGV: ttl (ms), node, `1` to clear the hash
/// first (a full write), then field and member pairs.
pub const WRITE_SCRIPT: &str = "\
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
";

/// KEYS: the topic's node set. ARGV: the nodes' hash names without the node, `list` or
/// `stats`, the cursor to start after (empty: the first), the most members, and bytes (the
/// members after the first stop where they would pass it).
///
/// A list answers `[next cursor or '', member, ...]`; stats answer `[clients, users]`.
pub const READ_SCRIPT: &str = "\
local nodes = redis.call('SMEMBERS', KEYS[1])
table.sort(nodes)
local stats = ARGV[2] == 'stats'
local clients, users, seen, all = 0, 0, {}, {}
for _, node in ipairs(nodes) do
  local hash = ARGV[1] .. node
  if redis.call('EXISTS', hash) == 0 then
    redis.call('SREM', KEYS[1], node)
  elseif stats then
    local members = redis.call('HVALS', hash)
    clients = clients + #members
    for _, m in ipairs(members) do
      local ok, v = pcall(cjson.decode, m)
      if ok and type(v) == 'table' and type(v.user) == 'string' and not seen[v.user] then
        seen[v.user] = true
        users = users + 1
      end
    end
  else
    local flat = redis.call('HGETALL', hash)
    for i = 1, #flat, 2 do
      local cursor = node .. ':' .. flat[i]
      if ARGV[3] == '' or cursor > ARGV[3] then all[#all + 1] = {cursor, flat[i + 1]} end
    end
  end
end
if stats then return {clients, users} end
table.sort(all, function(a, b) return a[1] < b[1] end)
local limit, budget, used, out = tonumber(ARGV[4]), tonumber(ARGV[5]), 0, {''}
for i, e in ipairs(all) do
  if #out > limit or (#out > 1 and used + #e[2] > budget) then
    out[1] = all[i - 1][1]
    break
  end
  used = used + #e[2]
  out[#out + 1] = e[2]
end
return out
";

/// The hash holding `node`'s members of `topic`.
pub fn members_key(prefix: &str, topic: &str, node: u64) -> Vec<u8> {
    let mut key = members_base(prefix, topic);
    key.extend_from_slice(format!("{node:016x}").as_bytes());
    key
}

/// The hash names of `topic`'s members without the node (the read script adds each).
pub fn members_base(prefix: &str, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + topic.len() + 20);
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(b"p:");
    key.extend_from_slice(topic.as_bytes());
    key.push(b':');
    key
}

/// The set of nodes with members of `topic`.
pub fn nodes_key(prefix: &str, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + topic.len() + 3);
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(b"pn:");
    key.extend_from_slice(topic.as_bytes());
    key
}

/// A member's field in its node's hash: fixed width, so cursors sort as ids do.
pub fn field(client: u64) -> String {
    format!("{client:016x}")
}

/// Parses the read script's answer: a page (`list`) or the counts (`stats`).
pub fn parse_read(reply: &[u8], stats: bool) -> Result<Result<Page, Stats>, String> {
    let Some((frame, _)) = decode_range(reply).map_err(|e| format!("not RESP2: {}", e.details()))? else {
        return Err("a truncated reply".into());
    };
    let RangeFrame::Array(parts) = &frame else { return Err("not an array".into()) };
    if stats {
        let [RangeFrame::Integer(clients), RangeFrame::Integer(users)] = parts.as_slice() else {
            return Err("not two counts".into());
        };
        let count = |n: i64| usize::try_from(n).map_err(|_| "a negative count".to_string());
        return Ok(Err(Stats { clients: count(*clients)?, users: count(*users)? }));
    }
    let Some((next, members)) = parts.split_first() else { return Err("an empty list".into()) };
    let next = std::str::from_utf8(bulk(reply, next)?).map_err(|_| "a cursor that is not UTF-8")?;
    let mut page =
        Page { members: Vec::new(), count: members.len(), next: (!next.is_empty()).then(|| next.to_string()) };
    for (i, member) in members.iter().enumerate() {
        let member = bulk(reply, member)?;
        // Written by a node, but read from the network: only a JSON object goes to clients.
        match serde_json::from_slice::<&serde_json::value::RawValue>(member) {
            Ok(v) if v.get().starts_with('{') => {}
            _ => return Err("a member that is not a JSON object".into()),
        }
        if i > 0 {
            page.members.push(b',');
        }
        page.members.extend_from_slice(member);
    }
    Ok(Ok(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_fields() {
        assert_eq!(members_key("ws:", "room", 0xab), b"ws:p:room:00000000000000ab".to_vec());
        assert_eq!(nodes_key("ws:", "room"), b"ws:pn:room".to_vec());
        assert_eq!(field(255), "00000000000000ff");
        assert!(field(9) < field(10), "cursors sort as ids do");
    }

    #[test]
    fn replies_parse_or_are_refused() {
        let list = b"*3\r\n$4\r\nn:01\r\n$12\r\n{\"client\":1}\r\n$2\r\n{}\r\n";
        let page = parse_read(list, false).unwrap().unwrap();
        assert_eq!(page.members, b"{\"client\":1},{}".to_vec());
        assert_eq!((page.count, page.next.as_deref()), (2, Some("n:01")));
        let last = parse_read(b"*1\r\n$0\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((last.count, last.next), (0, None));
        assert_eq!(parse_read(b"*2\r\n:3\r\n:1\r\n", true).unwrap(), Err(Stats { clients: 3, users: 1 }));
        for bad in [
            &b"*2\r\n$0\r\n\r\n$3\r\n[1]\r\n"[..],
            b"*2\r\n$0\r\n\r\n$2\r\n{x\r\n",
            b"*0\r\n",
            b"*2\r\n:3\r\n",
            b"$3\r\nabc\r\n",
            b"*2\r\n$0\r\n",
        ] {
            assert!(parse_read(bad, false).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_read(b"*2\r\n:-1\r\n:0\r\n", true).is_err());
    }
}
