//! `app = "chat"`: the URL path names the room (`/chat`, `/chat/a` and `/chat/b` are three
//! rooms); every text or binary message goes to every member of the room, the sender too
//! unless the route sets `exclude_sender`. A message is encoded once for the whole room.

use std::sync::Arc;

use super::{App, AppCtx, Payload};
use crate::encode::shared_frame;
use crate::pubsub::TopicId;
use crate::ws::message::MessageKind;

pub struct Chat {
    room: Arc<str>,
    /// The room's topic id, kept from `on_open`: the room lives while this client is in it,
    /// so every message is published without a lookup by name.
    room_id: Option<TopicId>,
    exclude_sender: bool,
}

impl Chat {
    pub fn new(room: &str, exclude_sender: bool) -> Chat {
        Chat { room: room.into(), room_id: None, exclude_sender }
    }
}

impl App for Chat {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        // One room per connection: the limit is never reached.
        let _ = cx.subscribe(&self.room, usize::MAX);
        self.room_id = cx.topic_id(&self.room);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        match self.room_id {
            Some(id) => cx.publish_message_known(id, &self.room, kind, payload.as_slice(), self.exclude_sender),
            None => cx.publish(self.room.clone(), shared_frame(kind.opcode(), payload.as_slice()), self.exclude_sender),
        }
    }
}
