//! `app = "logview"`: lines appended to the route's files, as they arrive (NaviServer's
//! log-view). Each line is a text message `{"file":"/var/log/x.log","line":"..."}`; a new
//! viewer first gets the last `backlog` lines of each file. The files are followed by the
//! loop's [`crate::logview::Tails`] (one reader per file, whatever the number of viewers);
//! each file is a feed this app subscribes to. Viewers only watch: what they send is ignored.

use std::sync::Arc;

use super::{App, AppCtx, Payload};
use crate::logview::feed_name;
use crate::route::LogviewSpec;
use crate::ws::message::MessageKind;

pub struct Logview {
    spec: Arc<LogviewSpec>,
}

impl Logview {
    pub fn new(spec: Arc<LogviewSpec>) -> Logview {
        Logview { spec }
    }
}

impl App for Logview {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        // The backlog is queued first (the loop applies it right after this call, before
        // anything the feeds publish later in the turn).
        cx.backlog(Arc::clone(&self.spec));
        for file in &self.spec.files {
            cx.subscribe_feed(&feed_name(file));
        }
    }

    fn on_message(&mut self, _cx: &mut AppCtx<'_>, _kind: MessageKind, _payload: Payload<'_>) {}
}
