//! Topics with history, on the loop: numbering publications on the topic's owner, and
//! answering subscriptions that want their position or what they missed, and `history` reads.
//!
//! Why nothing is lost or sent twice: a topic's owner (one worker, [`history::owner`]) numbers
//! every publication to it, keeps it, and only then delivers it, on its own worker and (as a
//! note that the inboxes keep far longer than others: `EXACT_SCALE`) to the others. A subscription waits in [`Topics`] without being
//! a member until the owner has answered: its answer holds every publication up to the
//! position it gives, and everything the owner numbers after it reaches the subscriber's worker
//! after the answer (each inbox is first in, first out), when the connection is a member. A
//! recovery longer than a page is read page by page, each asked for when the client's queue
//! has room for it; it joins the topic's members with the last page.

use std::sync::Arc;
use std::time::Instant;

use super::mesh::Note;
use super::Worker;
use crate::admin::{render, Reply};
use crate::apps::pubsub::{error_message, history_answer, history_refused, subscribed_at};
use crate::conn_id::key_of;
use crate::connection::Sender;
use crate::encode::{shared_frame, SharedFrame};
use crate::history::{self, Page, Position, Read, Unrecoverable};
use crate::pubsub::SubscribeError;
use crate::ws::frame::Opcode;

/// A recovery's page: at most this many bytes of publications (and half the client's
/// `max_backpressure`), and this many publications.
const PAGE_BYTES: usize = 64 << 10;
const PAGE_LIMIT: usize = 512;
/// The most bytes of publications one `/api/history` answer holds (`"more":true` past it).
pub(super) const ADMIN_REPLY_BYTES: usize = 4 << 20;

/// What a history read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A subscription waiting in [`crate::pubsub::Topics`], by its serial.
    Subscribe(u64),
    /// A client's `history` request.
    Read,
    /// `/api/history` across nodes, on the admin connection (answered as HTTP).
    Admin { keep_alive: bool, head_only: bool },
}

/// The owner's answer: a page, or why there is none (and the position, if the topic has one).
pub type Answer = Result<Page, (Unrecoverable, Option<Position>)>;

impl Worker {
    fn owner_of(&self, topic: &str) -> usize {
        history::owner(topic, self.mesh.workers())
    }

    /// A publication to a topic with history: numbered by its owner (this worker or another),
    /// which then delivers it everywhere. `exclude_ids`: connections not to deliver to.
    pub(super) fn publish_numbered(
        &mut self,
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_ids: Arc<[u64]>,
        now: Instant,
    ) {
        if self.cluster.is_some() {
            return self.publish_across(&topic, &frame, &exclude_ids, now);
        }
        let owner = self.owner_of(&topic);
        if owner != self.mailbox.index {
            self.mesh.post(owner, Note::Number { topic, frame, exclude_ids });
            return;
        }
        let Some((_, frame)) = self.histories.append(&topic, &frame, now) else {
            // No longer a topic with history (a reload): delivered as it is.
            self.publish(&topic, &frame, None, &exclude_ids, now);
            return;
        };
        self.metrics.history_appends += 1;
        self.publish(&topic, &frame, None, &exclude_ids, now);
        if self.mesh.workers() > 1 {
            self.mesh.post_others(self.mailbox.index, || Note::Numbered {
                topic: Arc::clone(&topic),
                frame: frame.clone(),
                exclude_ids: Arc::clone(&exclude_ids),
            });
        }
    }

    /// Asks `topic`'s owner (maybe this worker) for a read, for connection `key`.
    pub(super) fn ask_history(&mut self, key: usize, topic: Arc<str>, asked: Asked, read: Read, now: Instant) {
        if self.across_nodes(&topic) {
            return self.read_across(key, topic, asked, read, now);
        }
        let Some(id) = self.conns.get(key).map(|e| e.conn.id()) else { return };
        let owner = self.owner_of(&topic);
        if owner == self.mailbox.index {
            let answer = self.answer_history(&topic, asked, &read, now);
            self.history_answered(id, topic, asked, answer, now);
        } else {
            self.mesh.post(owner, Note::HistoryAsk { from: self.mailbox.index, id, topic, asked, read });
        }
    }

    /// The owner's side of a read.
    pub(super) fn answer_history(&mut self, topic: &str, asked: Asked, read: &Read, now: Instant) -> Answer {
        self.metrics.history_reads += 1;
        if matches!(asked, Asked::Subscribe(_)) && read.since.is_none() {
            return match self.histories.position(topic, now) {
                Some(position) => Ok(Page { position, entries: Vec::new(), more: false }),
                None => Err((Unrecoverable::NoHistory, None)),
            };
        }
        self.histories.read(topic, read, now)
    }

    /// A read's answer, for connection `id` (this worker's).
    pub(super) fn history_answered(&mut self, id: u64, topic: Arc<str>, asked: Asked, answer: Answer, now: Instant) {
        let key = key_of(id);
        if self.conns.get(key).is_none_or(|e| e.conn.id() != id) {
            return;
        }
        match asked {
            Asked::Read => {
                let body = match &answer {
                    Ok(page) => history_answer(&topic, page),
                    Err((why, position)) => history_refused(&topic, *why, position.as_ref()),
                };
                self.reply(key, &body, now);
            }
            Asked::Subscribe(serial) => self.recovered(key, topic, serial, answer, now),
            Asked::Admin { keep_alive, head_only } => {
                let reply = match &answer {
                    Ok(page) => render::result_reply(&history_answer(&topic, page)),
                    Err((Unrecoverable::Unavailable, _)) => Reply::error(503, Unrecoverable::Unavailable.reason()),
                    Err((why, _)) => {
                        Reply::error(if *why == Unrecoverable::NoHistory { 404 } else { 410 }, why.reason())
                    }
                };
                self.answer(key, &reply, keep_alive, head_only, now);
            }
        }
    }

    /// A page for a waiting subscription: its publications, then the next page or the
    /// subscription itself.
    fn recovered(&mut self, key: usize, topic: Arc<str>, serial: u64, answer: Answer, now: Instant) {
        let Some(pending) = self.topics.pending_mut(key, &topic).filter(|p| p.serial == serial).cloned() else {
            return; // unsubscribed meanwhile (and maybe subscribed again: another serial)
        };
        let page = match answer {
            Ok(page) => page,
            Err((Unrecoverable::NoHistory, _)) => {
                // The topic lost its history (a reload): an ordinary subscription.
                return self.finish_subscription(key, &topic, pending.max, None, None, now);
            }
            Err((why, position)) => {
                self.metrics.history_unrecovered += u64::from(pending.recover);
                let recovered = pending.recover.then_some(Err(why.reason()));
                return match position {
                    Some(position) if self.across_nodes(&topic) => {
                        self.join_across(key, &topic, position, recovered, now)
                    }
                    position => self.finish_subscription(key, &topic, pending.max, position, recovered, now),
                };
            }
        };
        let mut last = pending.since.as_ref().map_or(page.position.offset, |s| s.offset);
        let mut stopped = false;
        for entry in &page.entries {
            let room = self.conns.get(key).is_some_and(|e| e.conn.has_room_for(entry.frame.len()));
            if !room {
                stopped = true;
                break;
            }
            if !self.deliver(key, &entry.frame, now) {
                // Not open any more, or failing: nothing more to do for it.
                self.topics.end_pending(key, &topic);
                return;
            }
            self.metrics.history_recovered += 1;
            last = entry.offset;
        }
        if stopped || page.more {
            if let Some(p) = self.topics.pending_mut(key, &topic) {
                p.since = Some(Position { offset: last, epoch: Arc::clone(&page.position.epoch) });
                p.waiting_for_room = true;
            }
            return;
        }
        let recovered = pending.recover.then_some(Ok(()));
        let position = Position { offset: last.max(page.position.offset), epoch: page.position.epoch };
        if self.across_nodes(&topic) {
            return self.join_across(key, &topic, position, recovered, now);
        }
        self.finish_subscription(key, &topic, pending.max, Some(position), recovered, now);
    }

    pub(super) fn finish_subscription(
        &mut self,
        key: usize,
        topic: &Arc<str>,
        max: usize,
        position: Option<Position>,
        recovered: Option<Result<(), &str>>,
        now: Instant,
    ) {
        self.topics.end_pending(key, topic);
        let body = match self.topics.subscribe(key, topic, max) {
            Ok(_) => subscribed_at(topic, position.as_ref(), recovered),
            Err(SubscribeError::TooMany) => error_message(429, "too many subscriptions"),
            Err(SubscribeError::Reserved) => error_message(403, "topic not allowed"),
        };
        self.reply(key, &body, now);
    }

    /// The loop's answer to a client's request (never dropped: it counts as its own app's).
    pub(super) fn reply(&mut self, key: usize, body: &[u8], now: Instant) {
        // A framed backend's requests are answered to the backend.
        let mut taken = false;
        let route = self.conns.get(key).and_then(|e| e.conn.route());
        if route.is_some_and(|r| self.routes.get(r).app == crate::route::AppKind::Backend) {
            self.run_conn(key, now, |conn, ctx| {
                let (took, turn) = conn.offer_answer(ctx, body);
                taken = took;
                turn
            });
        }
        if taken {
            return;
        }
        let frame = shared_frame(Opcode::Text, body);
        self.deliver_from(key, &frame, now, Sender::OwnApp);
    }

    /// The end of a turn: recoveries whose clients have room for their next page ask for it.
    /// Pages read on this worker are written at once; if their clients took them all, the
    /// loop comes back without waiting for an event (`recovery_ready`), since none may come.
    pub(super) fn recovery_turn(&mut self, now: Instant) {
        self.recovery_ready = false;
        let waiting = self.topics.waiting_for_room();
        if waiting.is_empty() {
            return;
        }
        let mut asked = false;
        for (key, topic) in &waiting {
            let Some(page_bytes) = self.room_for_page(*key) else { continue };
            let Some(p) = self.topics.pending_mut(*key, topic) else { continue };
            p.waiting_for_room = false;
            let read = Read { since: p.since.clone(), limit: PAGE_LIMIT, max_bytes: page_bytes, reverse: false };
            let serial = p.serial;
            self.ask_history(*key, Arc::clone(topic), Asked::Subscribe(serial), read, now);
            asked = true;
        }
        if asked {
            self.flush_dirty(now);
        }
        for (key, topic) in waiting {
            if !self.conns.contains(key) {
                self.topics.end_pending(key, &topic);
            } else if self.topics.pending_mut(key, &topic).is_some_and(|p| p.waiting_for_room) {
                self.recovery_ready |= self.room_for_page(key).is_some();
            }
        }
    }

    /// The page size for connection `key`'s recovery, if its queue has room for a page now.
    fn room_for_page(&self, key: usize) -> Option<usize> {
        let conn = &self.conns.get(key)?.conn;
        let page_bytes = PAGE_BYTES.min(conn.max_backpressure() / 2).max(1);
        (conn.has_room_for(2 * page_bytes) || conn.buffered().0 == 0).then_some(page_bytes)
    }

    /// `/api/history` on the topic's owner: the answer's JSON, or an error.
    pub(super) fn history_part(
        &mut self,
        topic: &str,
        since: &Option<(u64, String)>,
        limit: usize,
        reverse: bool,
        now: Instant,
    ) -> Result<Vec<u8>, (u16, String)> {
        let since = since.as_ref().map(|(offset, epoch)| Position { offset: *offset, epoch: epoch.as_str().into() });
        let read = Read { since, limit, max_bytes: ADMIN_REPLY_BYTES, reverse };
        match self.answer_history(topic, Asked::Read, &read, now) {
            Ok(page) => Ok(history_answer(topic, &page)),
            Err((Unrecoverable::NoHistory, _)) => Err((404, Unrecoverable::NoHistory.reason().into())),
            Err((why, _)) => Err((410, why.reason().into())),
        }
    }

    /// The first read for a subscription that now waits in [`crate::pubsub::Topics`].
    /// (`serial`: the subscription's; one unsubscribed and made again since has another, and
    /// its own first read.)
    pub(super) fn start_recovery(&mut self, key: usize, topic: Arc<str>, serial: u64, now: Instant) {
        if self.across_nodes(&topic) {
            return self.recover_across(key, topic, serial, now);
        }
        self.start_recovery_read(key, topic, serial, now);
    }

    /// A waiting subscription's first page.
    pub(super) fn start_recovery_read(&mut self, key: usize, topic: Arc<str>, serial: u64, now: Instant) {
        let Some(p) = self.topics.pending_mut(key, &topic).filter(|p| p.serial == serial) else { return };
        let since = p.since.clone();
        let max_backpressure = self.conns.get(key).map_or(PAGE_BYTES, |e| e.conn.max_backpressure());
        let page_bytes = PAGE_BYTES.min(max_backpressure / 2).max(1);
        let read = Read { since, limit: PAGE_LIMIT, max_bytes: page_bytes, reverse: false };
        self.ask_history(key, topic, Asked::Subscribe(serial), read, now);
    }
}
