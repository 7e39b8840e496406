//! Fan-out: publishing to a topic's subscribers, a broker message to its token holders, a
//! frame to one connection by id, on this worker and (through the mesh and the Redis links)
//! the others; each in the form its receiver takes, written once per receiver at the end of
//! the turn.

use std::sync::Arc;
use std::time::Instant;

use mio::Token;

use super::mesh::Note;
use super::Worker;
use crate::cluster::{PUB_TOKEN, SUB_TOKEN};
use crate::conn_id::{key_of, worker_of};
use crate::connection::{Delivered, FrameForm, Ready, Sender};
use crate::encode::SharedFrame;
use crate::ws::deflate::SharedCodecs;

impl Worker {
    /// Readiness on a Redis link: what other nodes published goes to this worker's
    /// subscribers and token holders.
    pub(super) fn on_cluster(&mut self, token: Token, now: Instant) {
        let Some(mut cluster) = self.cluster.take() else { return };
        let mut deferred = Vec::new();
        cluster.on_ready(token, now, |event| self.on_cluster_event(event, &mut deferred, now));
        self.cluster = Some(cluster);
        self.on_deferred(deferred, now);
        self.flush_dirty(now);
    }

    /// The end of a turn for the Redis links: topics that came or went, timers, writes.
    pub(super) fn cluster_turn(&mut self, now: Instant) {
        if self.cluster.is_none() {
            return;
        }
        let changes = self.topics.take_changes();
        let Some(cluster) = &mut self.cluster else { return };
        for (topic, subscribed) in &changes {
            // A subscription still reading its history keeps the channel.
            // The server's own feeds stay on the node, but for presence events.
            let crosses = !topic.starts_with(crate::apps::FEED_PREFIX) || crate::presence::is_events_topic(topic);
            if crosses && (*subscribed || !self.topics.has_pending(topic)) {
                cluster.topic_changed(topic, *subscribed);
            }
        }
        let busy = cluster.busy();
        for (topic, subscribed) in changes {
            if !subscribed {
                self.forget_live(&topic);
            }
        }
        if busy {
            for token in [SUB_TOKEN, PUB_TOKEN] {
                self.on_cluster(token, now);
            }
        }
        self.rewrite_presence(now);
        if let Some(cluster) = &mut self.cluster {
            cluster.turn(now);
        }
        self.on_deferred(Vec::new(), now);
        self.streams_turn(now);
    }

    /// Delivers `frame` to the connection with id `id`, on whichever worker serves it.
    pub(super) fn send_to(&mut self, id: u64, frame: SharedFrame, now: Instant) {
        if worker_of(id) != self.mailbox.index {
            self.mesh.post(worker_of(id), Note::SendTo { id, frame });
            return;
        }
        let key = key_of(id);
        if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
            self.deliver(key, &frame, now);
        }
    }

    /// A publish made on this worker goes to the other workers' subscribers too.
    pub(super) fn spread_publish(&mut self, topic: &Arc<str>, frame: &SharedFrame, exclude_ids: Box<[u64]>) {
        if self.mesh.workers() > 1 {
            let exclude_ids: Arc<[u64]> =
                if exclude_ids.is_empty() { Arc::clone(&self.no_ids) } else { exclude_ids.into() };
            self.mesh.post_others(self.mailbox.index, || Note::Publish {
                topic: Arc::clone(topic),
                frame: frame.clone(),
                exclude_ids: Arc::clone(&exclude_ids),
            });
        }
    }

    /// A broker message sent on this worker goes to the other workers' token holders too.
    pub(super) fn spread_route(&mut self, receivers: Arc<[u8]>, frame: &SharedFrame) {
        if self.mesh.workers() > 1 {
            self.mesh.post_others(self.mailbox.index, || Note::Route {
                receivers: Arc::clone(&receivers),
                frame: frame.clone(),
            });
        }
    }

    /// A broker message's deliveries to the connections its receivers named here.
    pub(super) fn route_message(&mut self, keys: &[usize], frame: &SharedFrame, now: Instant) {
        for &key in keys {
            if self.deliver(key, frame, now) {
                self.metrics.broker_deliveries += 1;
            }
        }
    }

    /// Queues `frame` on every subscriber of `topic` but `exclude`: encoded once, queued by
    /// reference, written once per subscriber at the end of the turn.
    pub(super) fn publish(
        &mut self,
        topic: &str,
        frame: &SharedFrame,
        exclude: Option<usize>,
        exclude_ids: &[u64],
        now: Instant,
    ) {
        if let Some(id) = self.topics.find(topic) {
            self.publish_to(id, frame, exclude, exclude_ids, now);
        }
    }

    /// [`Worker::publish`] to the topic with id `id`.
    pub(super) fn publish_to(
        &mut self,
        id: crate::pubsub::TopicId,
        frame: &SharedFrame,
        exclude: Option<usize>,
        exclude_ids: &[u64],
        now: Instant,
    ) {
        // Ids to slab keys (an id names its key; a stale one names nobody), sorted. Empty,
        // as it nearly always is, it allocates nothing.
        let mut excluded: Vec<usize> = exclude_ids
            .iter()
            .map(|&id| key_of(id))
            .filter(|&key| self.conns.get(key).is_some_and(|e| exclude_ids.contains(&e.conn.id())))
            .collect();
        excluded.sort_unstable();
        let mut dropped = 0;
        // Framed once per form its receivers take (compressed per window, legacy), when the
        // first of them comes.
        let mut forms = Forms::new(frame);
        for key in self.topics.members(id) {
            if Some(key) == exclude || (!excluded.is_empty() && excluded.binary_search(&key).is_ok()) {
                continue;
            }
            let Some(entry) = self.conns.get_mut(key) else { continue };
            let form = entry.conn.frame_form(forms.payload_len);
            if form == FrameForm::Nothing {
                continue;
            }
            let Some(frame) = forms.get(form, &mut self.codecs) else {
                self.metrics.legacy_dropped += 1;
                continue;
            };
            let delivered = entry.conn.deliver(now, &mut self.pools, frame);
            match delivered {
                Delivered::Queued | Delivered::Closing => entry.mark_dirty(key, &mut self.dirty),
                Delivered::Dropped => dropped += 1,
                Delivered::NotOpen => {}
            }
            self.metrics.deliveries += u64::from(delivered == Delivered::Queued);
            self.metrics.slow_consumer_closes += u64::from(delivered == Delivered::Closing);
        }
        if dropped > 0 {
            self.topics.note_dropped(id, dropped);
            self.metrics.dropped += dropped;
        }
    }

    /// Queues `frame` for connection `key`; whether it was queued.
    pub(super) fn deliver(&mut self, key: usize, frame: &SharedFrame, now: Instant) -> bool {
        self.deliver_from(key, frame, now, Sender::Other)
    }

    /// A plugin's message to connection `id` (this worker's).
    pub(super) fn plugin_send(&mut self, id: u64, frame: &SharedFrame, now: Instant) {
        let key = key_of(id);
        if self.conns.get(key).is_some_and(|e| e.conn.id() == id) {
            self.deliver_from(key, frame, now, Sender::OwnApp);
        }
    }

    pub(super) fn deliver_from(&mut self, key: usize, frame: &SharedFrame, now: Instant, sender: Sender) -> bool {
        let Some(entry) = self.conns.get_mut(key) else { return false };
        let mut forms = Forms::new(frame);
        let form = match entry.conn.form_for(forms.payload_len, sender) {
            // A control frame (a plugin's ping or pong) is never compressed.
            FrameForm::Compressed { .. } if frame.first().is_some_and(|b| b & 0x08 != 0) => FrameForm::Plain,
            FrameForm::Nothing => return false,
            form => form,
        };
        let Some(frame) = forms.get(form, &mut self.codecs) else {
            self.metrics.legacy_dropped += 1;
            return false;
        };
        let delivered = entry.conn.deliver_from(now, &mut self.pools, frame, sender);
        match delivered {
            Delivered::Queued | Delivered::Closing => self.mark_dirty(key),
            Delivered::Dropped => self.metrics.dropped += 1,
            Delivered::NotOpen => {}
        }
        self.metrics.slow_consumer_closes += u64::from(delivered == Delivered::Closing);
        delivered == Delivered::Queued
    }

    /// The end of the turn: every connection with output queued during it (its own replies,
    /// what others published to it) writes once. Writing reads nothing, so this ends.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let dirty = Worker::walk(&mut self.dirty, &mut self.spare_keys);
            for &key in &dirty {
                let Some(entry) = self.conns.get_mut(key) else { continue };
                entry.dirty = false;
                self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready::default()));
            }
            self.walked(dirty);
        }
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(entry) = self.conns.get_mut(key) {
            entry.mark_dirty(key, &mut self.dirty);
        }
    }
}

/// One published frame in each form its receivers take, made at most once each: as it is,
/// compressed for a window (the receivers that negotiated permessage-deflate), or framed for
/// the legacy drafts.
pub(crate) struct Forms<'f> {
    frame: &'f SharedFrame,
    payload_len: usize,
    compressed: [Option<SharedFrame>; 7],
    /// `Some(None)`: the payload is not UTF-8, no legacy form.
    legacy: Option<Option<SharedFrame>>,
}

impl<'f> Forms<'f> {
    pub(crate) fn new(frame: &'f SharedFrame) -> Forms<'f> {
        let payload_len = crate::encode::frame_parts(frame).map_or(0, |(_, p)| p.len());
        Forms { frame, payload_len, compressed: Default::default(), legacy: None }
    }

    /// The message's length, which decides whether a receiver takes it compressed.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The frame in `form`, framed on first use; `None` for a form that takes none of this
    /// message (a legacy client and a message that is not text, or not an open WebSocket).
    pub(crate) fn get(&mut self, form: FrameForm, codecs: &mut SharedCodecs) -> Option<&SharedFrame> {
        let frame = self.frame;
        Some(match form {
            FrameForm::Nothing => return None,
            FrameForm::Plain => frame,
            FrameForm::Legacy => return self.legacy.get_or_insert_with(|| crate::encode::legacy_twin(frame)).as_ref(),
            FrameForm::Compressed { window_bits, level } => self.compressed[usize::from(window_bits.clamp(9, 15) - 9)]
                .get_or_insert_with(|| crate::encode::compressed_twin(codecs, window_bits, level, frame)),
        })
    }
}
