//! The admin listener's WebSocket (`/ws`): the dashboard's live feed. Each second the loop
//! publishes a JSON snapshot of its figures to [`STATS_FEED`]; every access line goes to
//! [`ACCESS_FEED`]. Both are published only while someone watches. What the page sends is
//! ignored.

use super::{App, AppCtx, Payload};
use crate::ws::message::MessageKind;

/// The figures, once a second: `{"type":"stats",...}`.
pub const STATS_FEED: &str = "\0stats";
/// Access lines as they are written: `{"type":"access","line":"..."}`.
pub const ACCESS_FEED: &str = "\0access";

pub struct Dashboard;

impl App for Dashboard {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        cx.subscribe_feed(STATS_FEED);
        cx.subscribe_feed(ACCESS_FEED);
    }

    fn on_message(&mut self, _cx: &mut AppCtx<'_>, _kind: MessageKind, _payload: Payload<'_>) {}
}
