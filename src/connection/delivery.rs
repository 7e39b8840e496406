//! What others send a connection: frames published to it (topics, the broker, the admin API)
//! and its own plugin's messages through the loop, in the form it takes them, under its
//! route's backpressure policy.

use std::time::Instant;

use super::{Connection, End};
use crate::buffer::Pools;
use crate::encode::SharedFrame;
use crate::limits::OnBackpressure;

/// How a message published to this connection fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// Over the backpressure limit, policy "drop": counted, not queued.
    Dropped,
    /// Over the backpressure limit, policy "close": the connection is closing.
    Closing,
    /// Not an open WebSocket (closing, or not yet upgraded).
    NotOpen,
}

/// Who a frame delivered to a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A publisher, the broker, the admin API: anyone but the connection's app.
    Other,
    /// The connection's own app, sending through the loop (a plugin).
    OwnApp,
}

/// The form in which a connection takes a frame published to it ([`Connection::frame_form`]):
/// the loop frames each message once per form among its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameForm {
    /// RFC 6455, as published.
    Plain,
    /// permessage-deflate, with this window and level (the message is worth compressing).
    Compressed { window_bits: u8, level: i32 },
    /// A hixie draft's frame (text only).
    Legacy,
    /// None: not an open WebSocket, or one being failed.
    Nothing,
}

impl Connection {
    /// Whether a delivery of `len` bytes would be queued now, within `max_backpressure` (an
    /// empty queue takes anything).
    pub fn has_room_for(&self, len: usize) -> bool {
        self.out.has_room(len, self.limits.max_backpressure)
    }

    /// The route's `max_backpressure`.
    pub fn max_backpressure(&self) -> usize {
        self.limits.max_backpressure
    }

    /// The form in which this connection takes a frame published to it, for a payload of
    /// `payload_len` bytes.
    pub fn frame_form(&self, payload_len: usize) -> FrameForm {
        self.form_for(payload_len, Sender::Other)
    }

    /// The form for a frame from `sender`: the connection's own app may still send while
    /// the client is being failed (its replies to messages before the error go first).
    pub fn form_for(&self, payload_len: usize, sender: Sender) -> FrameForm {
        let accepts = self.is_open() && (self.failing().is_none() || sender != Sender::Other);
        let Some(ws) = self.phase.ws().filter(|_| accepts) else {
            return FrameForm::Nothing;
        };
        if ws.endpoint.draft().is_some() {
            return FrameForm::Legacy;
        }
        match self.pmd() {
            Some(pmd) if pmd.wants(payload_len) => {
                FrameForm::Compressed { window_bits: pmd.agreed.server_max_window_bits, level: pmd.level() }
            }
            _ => FrameForm::Plain,
        }
    }

    /// Queues a frame published by someone else (already in this client's framing: RFC 6455,
    /// compressed or not, or legacy), under the route's backpressure policy.
    pub fn deliver(&mut self, now: Instant, pools: &mut Pools, frame: &SharedFrame) -> Delivered {
        self.deliver_from(now, pools, frame, Sender::Other)
    }

    /// [`Connection::deliver`] for a frame from `sender`. The connection's own app (a plugin,
    /// whose messages come through the loop) may send while the client is being failed, and
    /// has `backpressure_high` of slack over `max_backpressure`: client messages still in its
    /// queue when reading stopped come back too. An empty queue takes one message whatever
    /// its size (a message larger than the limit would never go otherwise).
    pub fn deliver_from(&mut self, now: Instant, pools: &mut Pools, frame: &SharedFrame, sender: Sender) -> Delivered {
        let (accepts, slack) = match sender {
            Sender::Other => (self.failing().is_none(), 0),
            Sender::OwnApp => (true, self.limits.backpressure_high),
        };
        if !self.is_open() || !accepts {
            return Delivered::NotOpen;
        }
        if !self.out.has_room(frame.len(), self.limits.max_backpressure.saturating_add(slack)) {
            return match self.limits.on_backpressure {
                OnBackpressure::Drop => {
                    self.log.note_dropped();
                    Delivered::Dropped
                }
                OnBackpressure::Close => {
                    self.close(now, pools, End::SlowConsumer);
                    Delivered::Closing
                }
            };
        }
        self.out.push_shared_frame(pools, frame);
        self.log.traffic.msgs_out += 1;
        self.log.traffic.bytes_out += frame.len() as u64;
        Delivered::Queued
    }
}
