//! The admin listener's WebSocket (`/ws`): the dashboard's live feed. Each second the loop
//! publishes a JSON snapshot of its figures to [`STATS_FEED`]; every access line goes to
//! [`ACCESS_FEED`]; and the lines of every file a log viewer follows come too (the page's
//! log panel). All are published only while someone watches. What the page sends is ignored.

use std::path::PathBuf;
use std::sync::Arc;

use super::{App, AppCtx, Payload};
use crate::logview::feed_name;
use crate::ws::message::MessageKind;

/// The figures, once a second: `{"type":"stats",...}`.
pub const STATS_FEED: &str = "\0stats";
/// Access lines as they are written: `{"type":"access","line":"..."}`.
pub const ACCESS_FEED: &str = "\0access";

/// The dashboard's feed for one page; `log_files`: the files log viewers follow.
pub struct Dashboard {
    pub log_files: Arc<[PathBuf]>,
}

impl App for Dashboard {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        cx.subscribe_feed(STATS_FEED);
        cx.subscribe_feed(ACCESS_FEED);
        for file in self.log_files.iter() {
            cx.subscribe_feed(&feed_name(file));
        }
    }

    fn on_message(&mut self, _cx: &mut AppCtx<'_>, _kind: MessageKind, _payload: Payload<'_>) {}
}
