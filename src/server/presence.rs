//! Presence on the loop: joins and leaves go to the topic's owner worker, which keeps the
//! topic's members ([`crate::presence::Table`]), publishes the join and leave events on the
//! topic's presence feed, and (across nodes) writes the members to Redis; listings and counts
//! are the owner's (on one node) or Redis's (across nodes).
//!
//! Each worker remembers which topics its own connections are members of, so a connection
//! that closes leaves them all, whatever way it went.

use std::sync::Arc;
use std::time::Instant;

use super::mesh::Note;
use super::streams::Awaited;
use super::Worker;
use crate::admin::{render, Reply};
use crate::apps::pubsub::{error_message, presence_answer};
use crate::conn_id::{key_of, worker_of};
use crate::encode::shared_frame;
use crate::history;
use crate::presence::{self, Ask, Member};
use crate::ws::frame::Opcode;

const UNAVAILABLE: &str = "presence unavailable: Redis is unreachable";

/// A join or a leave, on its way to the topic's owner.
#[derive(Debug)]
pub enum Change {
    Join(Member),
    Leave(u64),
}

impl Worker {
    /// Connection `key` joins `topic`'s presence (nothing if it is a member already).
    pub(super) fn join_presence(
        &mut self,
        key: usize,
        topic: Arc<str>,
        user: Option<Arc<str>>,
        info: Option<Arc<str>>,
        now: Instant,
    ) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        // Most connections are members of one topic: no room for four.
        let joined = self.presence_of.entry(key).or_insert_with(|| Vec::with_capacity(1));
        if joined.contains(&topic) {
            return;
        }
        joined.push(Arc::clone(&topic));
        let member = Member { client: id, since_ms: presence::unix_ms(), user, info };
        self.change_presence(topic, Change::Join(member), now);
    }

    /// Connection `key` leaves `topic`'s presence (nothing if it was not a member).
    pub(super) fn leave_presence(&mut self, key: usize, topic: &str, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let Some(joined) = self.presence_of.get_mut(&key) else { return };
        let Some(i) = joined.iter().position(|t| &**t == topic) else { return };
        let topic = joined.swap_remove(i);
        if joined.is_empty() {
            self.presence_of.remove(&key);
        }
        self.change_presence(topic, Change::Leave(id), now);
    }

    /// Connection `id` (slab key `key`) is going: it leaves every topic it was a member of.
    pub(super) fn leave_all_presence(&mut self, key: usize, id: u64, now: Instant) {
        for topic in self.presence_of.remove(&key).unwrap_or_default() {
            self.change_presence(topic, Change::Leave(id), now);
        }
    }

    fn change_presence(&mut self, topic: Arc<str>, change: Change, now: Instant) {
        let owner = history::owner(&topic, self.mesh.workers());
        if owner == self.mailbox.index {
            self.presence_changed(topic, change, now);
        } else {
            // A control note, never dropped: the owner's table must see every leave.
            self.mesh.post(owner, Note::Presence { topic, change });
        }
    }

    /// The owner's side of a join or leave: the table, Redis, and the event.
    pub(super) fn presence_changed(&mut self, topic: Arc<str>, change: Change, now: Instant) {
        let node = self.cluster.as_ref().map(|c| c.node());
        let (op, member) = match change {
            Change::Join(member) => {
                if !self.presence.join(&topic, member.clone()) {
                    return;
                }
                if let Some(cluster) = &mut self.cluster {
                    let mut json = Vec::new();
                    member.write_json(&mut json, node);
                    cluster.presence_write(&topic, &[(member.client, json)], false, now);
                }
                ("join", member)
            }
            Change::Leave(client) => {
                let Some(member) = self.presence.leave(&topic, client) else { return };
                if let Some(cluster) = &mut self.cluster {
                    let last = self.presence.members(&topic).next().is_none();
                    cluster.presence_leave(&topic, client, last, now);
                }
                ("leave", member)
            }
        };
        let events = presence::events_topic(&topic);
        let frame = shared_frame(Opcode::Text, &presence::event(op, &topic, &member, node));
        self.publish(&events, &frame, None, &[], now);
        self.spread_publish(&events, &frame, Box::default());
        if let Some(cluster) = &mut self.cluster {
            cluster.publish(&events, &frame, now);
        }
    }

    /// The publish link to Redis came (back) up: this worker's members, written again.
    pub(super) fn rewrite_presence(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else { return };
        if !cluster.take_presence_lost() {
            return;
        }
        let node = Some(cluster.node());
        let topics: Vec<Arc<str>> = self.presence.topics().cloned().collect();
        log::info!("cluster: writing the members of {} topic(s) to Redis again", topics.len());
        for topic in topics {
            let members: Vec<(u64, Vec<u8>)> = self
                .presence
                .members(&topic)
                .map(|m| {
                    let mut json = Vec::new();
                    m.write_json(&mut json, node);
                    (m.client, json)
                })
                .collect();
            cluster.presence_write(&topic, &members, true, now);
        }
    }

    /// A client's `presence` or `presence_stats` request, for connection `key`.
    pub(super) fn ask_presence(&mut self, key: usize, topic: Arc<str>, ask: Ask, now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        if self.cluster.is_some() {
            let stats = ask == Ask::Stats;
            let tag = self.streams.tag(Awaited::Presence { id, topic: Arc::clone(&topic), stats, admin: None });
            let sent = self.cluster.as_mut().is_some_and(|c| c.presence_read(&topic, &ask, tag, now));
            if !sent {
                self.streams.forget(tag);
                self.reply(key, &error_message(503, UNAVAILABLE), now);
            }
            return;
        }
        let owner = history::owner(&topic, self.mesh.workers());
        if owner == self.mailbox.index {
            self.answer_presence(id, &topic, &ask, now);
        } else {
            self.mesh.post(owner, Note::PresenceAsk { id, topic, ask });
        }
    }

    /// The owner's answer to connection `id` (on whichever worker).
    pub(super) fn answer_presence(&mut self, id: u64, topic: &str, ask: &Ask, now: Instant) {
        let body = presence_answer(topic, &self.presence.answer(topic, ask));
        if worker_of(id) == self.mailbox.index {
            self.presence_answered(id, &body, now);
        } else {
            self.mesh.post(worker_of(id), Note::PresenceAnswer { id, body: body.into() });
        }
    }

    /// An answer for connection `id` (this worker's), sent as its own app's reply.
    pub(super) fn presence_answered(&mut self, id: u64, body: &[u8], now: Instant) {
        let key = key_of(id);
        if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
            self.reply(key, body, now);
        }
    }

    /// Redis's answer to a request across nodes: a client's, or the admin API's (`admin`:
    /// keep-alive, HEAD).
    pub(super) fn presence_read(
        &mut self,
        id: u64,
        topic: &str,
        stats: bool,
        admin: Option<(bool, bool)>,
        result: Result<Vec<u8>, String>,
        now: Instant,
    ) {
        let key = key_of(id);
        if self.conns.get(key).is_none_or(|e| e.conn.id() != id) {
            return;
        }
        let answer = result.and_then(|raw| crate::cluster::presence::parse_read(&raw, stats));
        if let Err(e) = &answer {
            log::warn!("cluster: reading {topic:?}'s presence: {e}");
        }
        match (admin, answer) {
            (None, Ok(answer)) => self.reply(key, &presence_answer(topic, &answer), now),
            (None, Err(_)) => self.reply(key, &error_message(503, UNAVAILABLE), now),
            (Some((keep_alive, head_only)), answer) => {
                let reply = match answer {
                    Ok(answer) => render::result_reply(&presence::answer_json(topic, &answer)),
                    Err(_) => Reply::error(503, UNAVAILABLE),
                };
                self.answer(key, &reply, keep_alive, head_only, now);
            }
        }
    }

    /// `/api/presence` and `/api/presence_stats` across nodes: read from Redis, answered
    /// when it replies.
    pub(super) fn admin_presence(&mut self, key: usize, topic: &str, ask: Ask, http: (bool, bool), now: Instant) {
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let stats = ask == Ask::Stats;
        let tag = self.streams.tag(Awaited::Presence { id, topic: topic.into(), stats, admin: Some(http) });
        if !self.cluster.as_mut().is_some_and(|c| c.presence_read(topic, &ask, tag, now)) {
            self.streams.forget(tag);
            self.answer(key, &Reply::error(503, UNAVAILABLE), http.0, http.1, now);
        }
    }

    /// `/api/presence` and `/api/presence_stats`: the owner's part (on one node).
    pub(super) fn presence_part(&self, topic: &str, ask: &Ask) -> Result<Vec<u8>, (u16, String)> {
        Ok(presence::answer_json(topic, &self.presence.answer(topic, ask)))
    }
}
