//! `app = "echo"`: every message goes back to its sender, as it came (text or binary).

use super::{App, AppCtx, Payload};
use crate::ws::message::MessageKind;

pub struct Echo;

impl App for Echo {
    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        match payload {
            Payload::Borrowed(p) => cx.send(kind, p),
            Payload::Owned(v) => cx.send_owned(kind, v),
        }
    }
}
