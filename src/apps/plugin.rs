//! A C plugin's connection, on the worker's side: every message goes to the route's plugin
//! thread (see [`crate::plugin::host`]), and the client is not read while the plugin is
//! behind on it. What the plugin sends comes back through the worker's inbox, so this app
//! never queues anything itself.

use super::{App, AppCtx, Hold, Payload};
use crate::plugin::Attachment;
use crate::ws::message::MessageKind;

pub struct Plugin {
    attachment: Attachment,
}

impl Plugin {
    pub fn new(attachment: Attachment) -> Plugin {
        Plugin { attachment }
    }
}

impl App for Plugin {
    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        let payload = match payload {
            Payload::Borrowed(bytes) => bytes.to_vec(),
            Payload::Owned(bytes) => bytes,
        };
        if !self.attachment.message(kind, payload) {
            cx.hold_input();
        }
    }

    /// A client that broke the protocol is owed a close frame, but the plugin's replies to
    /// its earlier messages go first: the frame waits until the plugin thread has been
    /// through them (bounded by `close_timeout`). A client's own close is answered at once.
    fn on_close(&mut self, _cx: &mut AppCtx<'_>, _code: Option<u16>, _reason: &str, protocol_error: bool) -> Hold {
        if protocol_error {
            self.attachment.flush();
            return Hold::UntilAppCloses;
        }
        Hold::No
    }

    fn accepts_input(&self, _high: usize) -> bool {
        self.attachment.accepts_input()
    }
}
