//! Presence: who is subscribed to a topic, on routes that opt in (`presence = true`).
//!
//! A member is one connection's subscription to one topic: the connection's id, its user
//! (when the connection has one), since when, and the `info` object the client gave when it
//! subscribed. Each topic's members are kept by the topic's owner worker
//! ([`crate::history::owner`], the same worker that numbers its history), so a listing or a
//! count is one worker's table, exact for the whole process; the other workers send it their
//! joins and leaves. Across nodes each node's owner also writes its members to Redis
//! ([`crate::cluster::presence`]), where a node that dies stops renewing them and they expire.
//!
//! Subscribers that asked for it (`"join_leave":true`) get `{"op":"join",..}` and
//! `{"op":"leave",..}` as members come and go: these are published on the topic's presence
//! feed ([`events_topic`]), a topic of its own that clients cannot name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The most bytes of a client's `info` object.
pub const MAX_INFO: usize = 1024;
/// The most members one listing gives (`"limit"`), and its default.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;
/// The most bytes of members one listing holds (it gives a `next` cursor past it).
pub const PAGE_BYTES: usize = 256 << 10;

/// The prefix of presence feeds: [`crate::pubsub::FEED_PREFIX`] (clients cannot name them),
/// then this, then the topic.
const EVENTS: &str = "\0presence:";

/// The topic on which `topic`'s joins and leaves are published.
pub fn events_topic(topic: &str) -> Arc<str> {
    let mut name = String::with_capacity(EVENTS.len() + topic.len());
    name.push_str(EVENTS);
    name.push_str(topic);
    name.into()
}

/// Whether `name` is a presence feed (these cross nodes, unlike the server's other feeds).
pub fn is_events_topic(name: &str) -> bool {
    name.starts_with(EVENTS)
}

/// One connection's membership of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The connection's id (as `/api/clients` gives it).
    pub client: u64,
    /// Milliseconds since the Unix epoch at which it subscribed.
    pub since_ms: u64,
    pub user: Option<Arc<str>>,
    /// The client's `info`: a JSON object, at most [`MAX_INFO`] bytes, as the client sent it.
    pub info: Option<Arc<str>>,
}

impl Member {
    /// `{"client":"12","user":..,"since":..,"info":..}`; `node` (hex) across nodes, where
    /// connection ids are only unique with it.
    pub fn write_json(&self, out: &mut Vec<u8>, node: Option<u64>) {
        out.extend_from_slice(b"{\"client\":\"");
        out.extend_from_slice(self.client.to_string().as_bytes());
        out.push(b'"');
        if let Some(node) = node {
            out.extend_from_slice(format!(",\"node\":\"{node:016x}\"").as_bytes());
        }
        if let Some(user) = &self.user {
            out.extend_from_slice(b",\"user\":");
            let _ = serde_json::to_writer(&mut *out, &**user);
        }
        out.extend_from_slice(b",\"since\":");
        out.extend_from_slice(self.since_ms.to_string().as_bytes());
        if let Some(info) = &self.info {
            out.extend_from_slice(b",\"info\":");
            out.extend_from_slice(info.as_bytes());
        }
        out.push(b'}');
    }
}

/// The wall clock in milliseconds since the Unix epoch (a member's `since`).
pub fn unix_ms() -> u64 {
    #[allow(clippy::disallowed_methods, reason = "`since` is a wall-clock time for applications")]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `{"op":"join"|"leave","topic":..,"member":{..}}`.
pub fn event(op: &str, topic: &str, member: &Member, node: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + topic.len() + member.info.as_ref().map_or(0, |i| i.len()));
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"topic\":");
    let _ = serde_json::to_writer(&mut out, topic);
    out.extend_from_slice(b",\"member\":");
    member.write_json(&mut out, node);
    out.push(b'}');
    out
}

/// What a client or the admin asks of a topic's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A page of members: those after the cursor `after` (from a previous page's `next`),
    /// at most `limit` and about `max_bytes`.
    List { after: Option<String>, limit: usize, max_bytes: usize },
    /// How many members, and how many distinct users among them.
    Stats,
}

/// A page of members: their JSON objects, comma-separated, and the cursor after the last
/// one when there are more.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub members: Vec<u8>,
    pub count: usize,
    pub next: Option<String>,
}

/// How many members, and how many distinct users among those that have one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub clients: usize,
    pub users: usize,
}

/// The answer to an [`Ask`] as a JSON object (without `op`): `{"topic":..,"members":[..],
/// "next":..}` or `{"topic":..,"clients":N,"users":N}`.
pub fn answer_json(topic: &str, answer: &Result<Page, Stats>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + topic.len() + answer.as_ref().map_or(0, |p| p.members.len()));
    out.extend_from_slice(b"{\"topic\":");
    let _ = serde_json::to_writer(&mut out, topic);
    match answer {
        Ok(page) => {
            out.extend_from_slice(b",\"members\":[");
            out.extend_from_slice(&page.members);
            out.extend_from_slice(b"],\"next\":");
            let _ = serde_json::to_writer(&mut out, &page.next);
        }
        Err(stats) => {
            out.extend_from_slice(format!(",\"clients\":{},\"users\":{}", stats.clients, stats.users).as_bytes())
        }
    }
    out.push(b'}');
    out
}

/// The members of the topics a worker owns.
#[derive(Debug, Default)]
pub struct Table {
    topics: HashMap<Arc<str>, BTreeMap<u64, Member>>,
    members: usize,
}

impl Table {
    /// Adds (or replaces) a member; `false` if it was one already (no join event then).
    pub fn join(&mut self, topic: &Arc<str>, member: Member) -> bool {
        let members = self.topics.entry(Arc::clone(topic)).or_default();
        let new = members.insert(member.client, member).is_none();
        self.members += usize::from(new);
        new
    }

    /// Removes a member; what it was, if it was one.
    pub fn leave(&mut self, topic: &str, client: u64) -> Option<Member> {
        let members = self.topics.get_mut(topic)?;
        let gone = members.remove(&client)?;
        self.members -= 1;
        if members.is_empty() {
            self.topics.remove(topic);
        }
        Some(gone)
    }

    /// The members of `topic`, in client id order.
    pub fn members(&self, topic: &str) -> impl Iterator<Item = &Member> {
        self.topics.get(topic).into_iter().flat_map(|m| m.values())
    }

    /// Every topic with members.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<str>> {
        self.topics.keys()
    }

    /// Members in all topics.
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Answers `ask` for `topic` (a topic without members has none: not an error).
    pub fn answer(&self, topic: &str, ask: &Ask) -> Result<Page, Stats> {
        let Some(members) = self.topics.get(topic) else {
            return match ask {
                Ask::List { .. } => Ok(Page::default()),
                Ask::Stats => Err(Stats::default()),
            };
        };
        match ask {
            Ask::Stats => {
                let users: HashSet<&str> = members.values().filter_map(|m| m.user.as_deref()).collect();
                Err(Stats { clients: members.len(), users: users.len() })
            }
            Ask::List { after, limit, max_bytes } => {
                // A cursor that is not a number is one from across nodes, or made up: it
                // names nothing here, so the listing starts from the first member.
                let start = after.as_deref().and_then(|a| a.parse::<u64>().ok());
                let range = match start {
                    Some(after) => members.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                    None => members.range(..),
                };
                let mut page = Page::default();
                let mut last = None;
                for (&client, member) in range {
                    if page.count == *limit || (page.count > 0 && page.members.len() >= *max_bytes) {
                        page.next = last.map(|c: u64| c.to_string());
                        break;
                    }
                    if page.count > 0 {
                        page.members.push(b',');
                    }
                    member.write_json(&mut page.members, None);
                    page.count += 1;
                    last = Some(client);
                }
                Ok(page)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: u64, user: Option<&str>) -> Member {
        Member { client, since_ms: 1000 + client, user: user.map(Arc::from), info: Some(r#"{"n":1}"#.into()) }
    }

    fn list(after: Option<&str>, limit: usize, max_bytes: usize) -> Ask {
        Ask::List { after: after.map(String::from), limit, max_bytes }
    }

    #[test]
    fn joins_and_leaves_are_counted_once() {
        let mut table = Table::default();
        let t: Arc<str> = "room".into();
        assert!(table.join(&t, member(5, Some("ann"))));
        assert!(!table.join(&t, member(5, Some("ann"))), "a member twice is one member");
        assert!(table.join(&t, member(7, Some("ann"))));
        assert!(table.join(&t, member(9, None)));
        assert_eq!(table.answer("room", &Ask::Stats), Err(Stats { clients: 3, users: 1 }));
        assert_eq!(table.leave("room", 5).map(|m| m.client), Some(5));
        assert_eq!(table.leave("room", 5), None);
        assert_eq!(table.len(), 2);
        table.leave("room", 7);
        table.leave("room", 9);
        assert!(table.is_empty());
        assert_eq!(table.topics().count(), 0, "an empty topic is forgotten");
        assert_eq!(table.answer("room", &Ask::Stats), Err(Stats::default()));
    }

    #[test]
    fn listing_pages_by_cursor_in_id_order() {
        let mut table = Table::default();
        let t: Arc<str> = "room".into();
        for client in [30, 10, 20, 40, 50] {
            table.join(&t, member(client, None));
        }
        let first = table.answer("room", &list(None, 2, PAGE_BYTES)).unwrap();
        assert_eq!(first.count, 2);
        assert_eq!(first.next.as_deref(), Some("20"));
        let text = String::from_utf8(first.members).unwrap();
        assert!(text.starts_with(r#"{"client":"10","since":1010,"info":{"n":1}},{"client":"20""#), "{text}");
        // A member that leaves between pages does not shift the next one.
        table.leave("room", 10);
        let second = table.answer("room", &list(Some("20"), 2, PAGE_BYTES)).unwrap();
        assert!(String::from_utf8(second.members).unwrap().contains(r#""client":"30""#));
        assert_eq!(second.next.as_deref(), Some("40"));
        let last = table.answer("room", &list(Some("40"), 2, PAGE_BYTES)).unwrap();
        assert_eq!((last.count, last.next), (1, None));
        // The byte bound stops a page early, but never before its first member.
        let small = table.answer("room", &list(None, 100, 1)).unwrap();
        assert_eq!((small.count, small.next.as_deref()), (1, Some("20")));
        // A cursor that names nothing here starts from the first.
        assert_eq!(table.answer("room", &list(Some("x"), 100, PAGE_BYTES)).unwrap().count, 4);
        assert_eq!(table.answer("none", &list(None, 100, PAGE_BYTES)).unwrap(), Page::default());
    }

    #[test]
    fn json_forms() {
        let m = Member { client: 3, since_ms: 9, user: Some("a\"b".into()), info: None };
        let event = String::from_utf8(event("join", "t\n", &m, Some(0xab))).unwrap();
        assert_eq!(
            event,
            r#"{"op":"join","topic":"t\n","member":{"client":"3","node":"00000000000000ab","user":"a\"b","since":9}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(v["member"]["user"], "a\"b");
        let page = Page { members: b"{}".to_vec(), count: 1, next: Some("7".into()) };
        assert_eq!(answer_json("t", &Ok(page)), br#"{"topic":"t","members":[{}],"next":"7"}"#.to_vec());
        let stats = answer_json("t", &Err(Stats { clients: 2, users: 1 }));
        assert_eq!(stats, br#"{"topic":"t","clients":2,"users":1}"#.to_vec());
        assert!(is_events_topic(&events_topic("x")));
        assert!(!is_events_topic("x"));
        assert!(events_topic("x").starts_with(crate::pubsub::FEED_PREFIX));
    }
}
