//! What serves a WebSocket once it is open: an [`App`] per connection, behind one interface.
//!
//! The connection owns the socket, the RFC 6455 session and the output queue; the app sees
//! messages and the client's close, and answers through an [`AppCtx`]: it can send to its
//! client, subscribe it to topics, and record [`Action`]s for the loop (publish, send to
//! another connection, watch a socket of its own). An app never touches another connection,
//! the poller or the slab. New apps are new files here.
//!
//! - [`echo`]: every message back to its sender;
//! - [`chat`]: rooms named by the URL path, every message to every member;
//! - [`pubsub`]: a JSON protocol for topics (subscribe, unsubscribe, publish);
//! - [`backend`]: every message to a backend on a UNIX socket and back;
//! - [`broker`]: the websockets_pro token broker (messages routed to tokens);
//! - [`logview`]: lines appended to log files, live;
//! - [`plugin`]: a C plugin's callbacks, on a thread of their own;
//! - [`dashboard`]: the admin listener's live feed of the server's figures;
//! - [`demo`]: the plain-HTTP demo page (no WebSocket).

pub mod backend;
pub mod broker;
pub mod chat;
pub mod dashboard;
pub mod demo;
pub mod echo;
pub mod guarded;
pub mod logview;
pub mod plugin;
pub mod pubsub;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::Broker;
use crate::buffer::{OutQueue, Pools};
use crate::encode::SharedFrame;
use crate::pubsub::{SubscribeError, Topics};
use crate::route::LogviewSpec;
use crate::sys::splice::Pipe;
use crate::ws::deflate::{PerMessage, SharedCodecs};
use crate::ws::message::MessageKind;

/// What the loop must do for a connection, recorded during its turn and applied after it.
#[derive(Debug)]
pub enum Action {
    /// Watch a socket the connection's app owns (a backend link) under its foreign token.
    Register { fd: RawFd, interest: mio::Interest },
    /// Change what that socket is watched for.
    Reregister { fd: RawFd, interest: mio::Interest },
    /// Deliver `frame` to every subscriber of `topic`, except connection key `exclude` and
    /// the connections whose ids are in `exclude_ids` (NaviServer's `ws::multicast -exclude`).
    /// `found`: the topic's id when the app published (its subscribers were counted then),
    /// checked against the name before use, as the drive may have emptied and reused it.
    Publish {
        topic: Arc<str>,
        frame: SharedFrame,
        exclude: Option<usize>,
        exclude_ids: Box<[u64]>,
        found: Option<crate::pubsub::TopicId>,
    },
    /// Deliver `frame` to the connection with this id, if it is open.
    SendTo { id: u64, frame: SharedFrame },
    /// Deliver `frame` to these connections (a broker message's receivers, resolved when it
    /// was sent: keys stay valid for the turn), and, when there are other workers or nodes,
    /// to the holders `receivers` names there.
    Route { keys: Vec<usize>, receivers: Option<Box<[u8]>>, frame: SharedFrame },
    /// Send this connection the last lines of the log viewer's files.
    Backlog(Arc<LogviewSpec>),
    /// An admin-listener request, answered by the loop (it needs every connection's state).
    Admin(Box<crate::admin::Request>),
    /// Ask `topic`'s history owner for the position (and what this connection missed) of the
    /// subscription waiting in [`Topics`]; the loop subscribes and answers the client.
    Recover { topic: Arc<str>, serial: u64 },
    /// A client's `history` request: the loop answers it.
    History { topic: Arc<str>, read: crate::history::Read },
    /// List this connection in `topic`'s presence, with the client's `info`.
    Join { topic: Arc<str>, user: Option<Arc<str>>, info: Option<Arc<str>> },
    /// Take this connection out of `topic`'s presence.
    Leave { topic: Arc<str> },
    /// A client's `presence` or `presence_stats` request: the loop answers it.
    Presence { topic: Arc<str>, ask: crate::presence::Ask },
    /// Ask the application (`[proxy]`); its answer comes back to this connection: to the
    /// connection itself for a connect (`seq` 0), else to its app
    /// ([`App::on_proxy_answer`]) with `seq`.
    AskProxy { proxy: Arc<crate::auth::proxy::Proxy>, kind: crate::auth::proxy::Kind, seq: u32, body: Vec<u8> },
}

impl Action {
    /// Whether applying this may queue output on connection `key` (the one that asked): a
    /// publication it is not excluded from, anything answered to it or sent by id (perhaps
    /// its own). Its own write then waits for the end of the turn, to carry that too.
    pub fn may_reach(&self, key: usize) -> bool {
        match self {
            Action::Register { .. } | Action::Reregister { .. } => false,
            Action::Publish { exclude, .. } => *exclude != Some(key),
            _ => true,
        }
    }
}

/// What [`AppCtx::subscribe_at`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribing {
    /// Subscribed (`true`) or already was (`false`), at once: the topic keeps no history.
    Done(bool),
    /// The topic keeps history: the loop answers the client once the topic's owner has given
    /// its position (and the publications the client missed).
    Pending,
}

/// A received message's payload (the endpoint's): borrowed, or owned when large.
pub use crate::ws::endpoint::Payload;

/// Why the app asks its connection to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppClose {
    /// Begin the close handshake with this code and reason.
    Close(u16, Cow<'static, str>),
    /// The app's backend failed: close 1011, and say why in the log.
    Failed(String),
}

/// Whether the client's close frame waits for the app (see [`App::on_close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    No,
    /// The app has told its backend; the client's close frame waits until the app closes
    /// (or `close_timeout` passes).
    UntilAppCloses,
}

/// What an app's I/O on its own socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppIo {
    /// Nothing to do until new readiness.
    Idle,
    /// Read this many bytes; call again (the connection keeps a budget).
    Read(usize),
}

pub use crate::metrics::Traffic;
pub use crate::pubsub::FEED_PREFIX;

/// What an app may use during one call: its client (send, close, hold input), topics
/// (subscribe, publish), other connections (send by id), and the loop (watch a socket of its
/// own).
pub struct AppCtx<'a> {
    pub(crate) now: Instant,
    /// This connection's id and slab key.
    pub(crate) id: u64,
    pub(crate) key: usize,
    /// The client's address, as the connection keeps it (made a `SocketAddr` when asked:
    /// most calls never ask).
    pub(crate) peer: (std::net::IpAddr, u16),
    pub(crate) out: &'a mut OutQueue,
    pub(crate) pools: &'a mut Pools,
    pub(crate) traffic: &'a mut Traffic,
    /// The client is not read while this many bytes wait for it.
    pub(crate) backpressure_high: usize,
    pub(crate) topics: &'a mut Topics,
    pub(crate) broker: &'a mut Broker,
    pub(crate) actions: &'a mut Vec<Action>,
    pub(crate) close: &'a mut Option<AppClose>,
    /// Deliveries this connection's publishes will cause this turn (its fan-out budget).
    pub(crate) fanout: &'a mut usize,
    /// The app can take no more messages for now (see [`AppCtx::hold_input`]).
    pub(crate) hold: bool,
    /// permessage-deflate, when this client negotiated it.
    pub(crate) pmd: Option<&'a mut PerMessage>,
    pub(crate) codecs: &'a mut SharedCodecs,
    /// `Some(max_backpressure)` where this client's copy of what it publishes to a topic it
    /// is in goes straight onto its queue (see [`AppCtx::own_copy`]); `None` where it goes
    /// through the loop like anyone's.
    pub(crate) own_copies: Option<usize>,
    /// Own copies queued by this context (the worker counts them among its deliveries).
    pub(crate) own_copied: u32,
    /// See [`crate::connection::Ctx::publish_spreads`].
    pub(crate) publish_spreads: bool,
}

impl AppCtx<'_> {
    /// The time of this call (read once per loop turn: use it, not the clock).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// This connection's id: unique in the process, what [`AppCtx::send_to`] and the admin
    /// API name it by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer.0, self.peer.1)
    }

    /// Bytes queued for this client and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The route's `backpressure_high`: past it, the client is not read.
    pub fn backpressure_high(&self) -> usize {
        self.backpressure_high
    }

    /// Sends one message to this client.
    // Inlined into the app: the echo of a small message is this and a copy.
    #[inline(always)]
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        match self.pmd.as_deref_mut().and_then(|pmd| pmd.compress(self.codecs, payload)) {
            Some(compressed) => self.out.push_compressed_frame(self.pools, kind.opcode(), compressed),
            None => self.out.push_frame(self.pools, kind.opcode(), payload),
        }
        self.count_out(payload.len());
    }

    /// Sends one message whose payload the app owns (no copy for large ones).
    pub fn send_owned(&mut self, kind: MessageKind, payload: Vec<u8>) {
        let len = payload.len();
        match self.pmd.as_deref_mut().and_then(|pmd| pmd.compress(self.codecs, &payload)) {
            Some(compressed) => self.out.push_compressed_frame(self.pools, kind.opcode(), compressed),
            None => self.out.push_frame_owned(self.pools, kind.opcode(), payload),
        }
        self.count_out(len);
    }

    #[inline]
    pub fn count_out(&mut self, bytes: usize) {
        self.traffic.msgs_out += 1;
        self.traffic.bytes_out += bytes as u64;
    }

    /// Subscribes this client to `topic` (at once: topics are the reactor's).
    pub fn subscribe(&mut self, topic: &str, max: usize) -> Result<bool, SubscribeError> {
        if topic.starts_with(FEED_PREFIX) {
            return Err(SubscribeError::Reserved);
        }
        self.topics.subscribe(self.key, topic, max)
    }

    /// Subscribes this client to `topic`, recovering what it missed after `recover` when the
    /// topic keeps history (see [`Subscribing`]).
    pub fn subscribe_at(
        &mut self,
        topic: &str,
        recover: Option<crate::history::Position>,
        max: usize,
    ) -> Result<Subscribing, SubscribeError> {
        if topic.starts_with(FEED_PREFIX) {
            return Err(SubscribeError::Reserved);
        }
        if !self.topics.has_history(topic) || self.topics.is_subscribed(self.key, topic) {
            return self.topics.subscribe(self.key, topic, max).map(Subscribing::Done);
        }
        if self.topics.count(self.key) >= max {
            return Err(SubscribeError::TooMany);
        }
        let topic: Arc<str> = topic.into();
        let pending = crate::pubsub::Pending {
            recover: recover.is_some(),
            since: recover,
            max,
            waiting_for_room: false,
            serial: 0,
            joining: false,
        };
        if let Some(serial) = self.topics.begin_pending(self.key, Arc::clone(&topic), pending) {
            self.actions.push(Action::Recover { topic, serial });
        }
        Ok(Subscribing::Pending)
    }

    /// Whether `topic` keeps history.
    pub fn has_history(&self, topic: &str) -> bool {
        self.topics.has_history(topic)
    }

    /// Asks for `topic`'s history; the loop sends the answer.
    pub(crate) fn read_history(&mut self, topic: &str, read: crate::history::Read) {
        self.actions.push(Action::History { topic: topic.into(), read });
    }

    /// Lists this client in `topic`'s presence (once: joining again changes nothing).
    pub(crate) fn join_presence(&mut self, topic: &str, user: Option<Arc<str>>, info: Option<Arc<str>>) {
        self.count_presence_event(topic);
        self.actions.push(Action::Join { topic: topic.into(), user, info });
    }

    /// Takes this client out of `topic`'s presence (if it was in it).
    pub(crate) fn leave_presence(&mut self, topic: &str) {
        self.count_presence_event(topic);
        self.actions.push(Action::Leave { topic: topic.into() });
    }

    /// A join or leave is delivered to the topic's watchers: it counts against this
    /// connection's fan-out budget as a publication would, so a client that subscribes and
    /// unsubscribes in a loop cannot make the worker deliver without bound in one turn.
    fn count_presence_event(&mut self, topic: &str) {
        let events = crate::presence::events_topic(topic);
        *self.fanout += 1 + self.topics.find(&events).map_or(0, |t| self.topics.members(t).len());
    }

    /// Asks for `topic`'s presence; the loop sends the answer.
    pub(crate) fn ask_presence(&mut self, topic: &str, ask: crate::presence::Ask) {
        self.actions.push(Action::Presence { topic: topic.into(), ask });
    }

    /// Subscribes this client to one of the server's own feeds.
    pub(crate) fn subscribe_feed(&mut self, feed: &str) {
        debug_assert!(feed.starts_with(FEED_PREFIX));
        let _ = self.topics.subscribe(self.key, feed, usize::MAX);
    }

    /// Sends `frame` to the connections `receivers` names (a broker message).
    pub fn route(&mut self, receivers: &[u8], frame: SharedFrame) {
        let mut keys = Vec::new();
        self.broker.receivers(receivers, &mut keys);
        *self.fanout += keys.len();
        let receivers = self.broker.spreads().then(|| receivers.into());
        self.actions.push(Action::Route { keys, receivers, frame });
    }

    /// Asks the loop for the log viewer's backlog.
    pub(crate) fn backlog(&mut self, spec: Arc<LogviewSpec>) {
        self.actions.push(Action::Backlog(spec));
    }

    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.topics.unsubscribe(self.key, topic)
    }

    /// Publishes one message to `topic`'s subscribers, on every worker and (with
    /// `[cluster]`) every node: framed once here, shared by all of them.
    pub fn publish_message(&mut self, topic: &str, kind: MessageKind, payload: &[u8], exclude_self: bool) {
        let frame = crate::encode::shared_frame(kind.opcode(), payload);
        self.publish(topic.into(), frame, exclude_self);
    }

    /// [`AppCtx::publish_message`] to a topic whose id the app keeps (see
    /// [`AppCtx::topic_id`]). Where nobody but this client hears it (it is the topic's only
    /// member, on the only worker of the only node, and the topic keeps no history), its own
    /// copy is queued as an echo's reply is, and no frame is made for a room (or nothing is
    /// done, with `exclude_self`); else as [`AppCtx::publish_known`].
    pub fn publish_message_known(
        &mut self,
        id: crate::pubsub::TopicId,
        topic: &Arc<str>,
        kind: MessageKind,
        payload: &[u8],
        exclude_self: bool,
    ) {
        if self.only_listener(id, topic) {
            if exclude_self {
                return;
            }
            // As `own_copy` would: within `max_backpressure`, else the loop's policy decides.
            if self.own_copy_of(kind, payload) {
                return;
            }
        }
        let frame = crate::encode::shared_frame(kind.opcode(), payload);
        self.publish_known(id, Arc::clone(topic), frame, exclude_self);
    }

    /// Queues this client's own copy of a message as [`AppCtx::own_copy`] would (the client
    /// takes frames as published, within `max_backpressure`); whether it did. Out of line: the
    /// copy into the open chunk is then inlined, as in [`AppCtx::send`].
    #[inline(never)]
    fn own_copy_of(&mut self, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(limit) = self.own_copies else { return false };
        let len = crate::ws::frame::header_len(payload.len()) + payload.len();
        if !self.out.has_room(len, limit) {
            return false;
        }
        self.out.push_frame(self.pools, kind.opcode(), payload);
        self.count_out(len);
        self.own_copied += 1;
        true
    }

    /// Whether this client alone would hear a publication to topic `id` (see
    /// [`AppCtx::publish_message_known`]).
    fn only_listener(&self, id: crate::pubsub::TopicId, topic: &str) -> bool {
        let mut members = self.topics.members(id);
        !self.publish_spreads
            && members.len() == 1
            && members.next() == Some(self.key)
            && self.topics.is_named(id, topic)
            && !topic.starts_with(FEED_PREFIX)
            && !self.topics.has_history(topic)
    }

    /// Sends one message to the connection with id `id`, wherever it is served (nothing if it
    /// is gone).
    pub fn send_message_to(&mut self, id: u64, kind: MessageKind, payload: &[u8]) {
        self.send_to(id, crate::encode::shared_frame(kind.opcode(), payload));
    }

    /// Publishes `frame` to `topic`'s subscribers (this client too unless `exclude_self`).
    pub fn publish(&mut self, topic: Arc<str>, frame: SharedFrame, exclude_self: bool) {
        self.publish_excluding(topic, frame, exclude_self, Box::default());
    }

    /// The id of `topic` while it has subscribers, for [`AppCtx::publish_known`].
    pub fn topic_id(&self, topic: &str) -> Option<crate::pubsub::TopicId> {
        self.topics.find(topic)
    }

    /// [`AppCtx::publish`] to a topic whose id the app keeps (see [`AppCtx::topic_id`]): no
    /// lookup by name per message. An id gone stale (the topic emptied, its id given to
    /// another) costs nothing but a lookup: the loop checks it against `topic` before use.
    pub fn publish_known(
        &mut self,
        id: crate::pubsub::TopicId,
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_self: bool,
    ) {
        if topic.starts_with(FEED_PREFIX) {
            log::debug!("{}: publish to a reserved topic ignored", self.peer());
            return;
        }
        let own = !exclude_self && self.own_copy(id, &topic, &frame);
        let exclude = (exclude_self || own).then_some(self.key);
        *self.fanout += self.topics.members(id).len() - usize::from(own);
        self.actions.push(Action::Publish { topic, frame, exclude, exclude_ids: Box::default(), found: Some(id) });
    }

    /// Publishes `frame` to `topic`'s subscribers but the connections with ids `exclude_ids`
    /// (and this client if `exclude_self`).
    pub fn publish_excluding(
        &mut self,
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_self: bool,
        exclude_ids: Box<[u64]>,
    ) {
        if topic.starts_with(FEED_PREFIX) {
            log::debug!("{}: publish to a reserved topic ignored", self.peer());
            return;
        }
        let found = self.topics.find(&topic);
        let own = !exclude_self
            && !exclude_ids.contains(&self.id)
            && found.is_some_and(|id| self.own_copy(id, &topic, &frame));
        let exclude = (exclude_self || own).then_some(self.key);
        *self.fanout += found.map_or(0, |t| self.topics.members(t).len()) - usize::from(own);
        self.actions.push(Action::Publish { topic, frame, exclude, exclude_ids, found });
    }

    /// Queues this client's own copy of `frame`, published to topic `id`, at once, if it is
    /// a member and takes the frame as it is; whether it did (the loop then skips it). A
    /// publisher that hears itself needs no second drive this turn to write its copy: one
    /// write covers its read and its message. Under the same policy as any delivery: where
    /// the copy would pass `max_backpressure`, or the topic numbers its messages (history),
    /// the loop delivers it.
    fn own_copy(&mut self, id: crate::pubsub::TopicId, topic: &str, frame: &SharedFrame) -> bool {
        let Some(max_backpressure) = self.own_copies else { return false };
        if !self.out.has_room(frame.len(), max_backpressure)
            || !self.topics.is_member(self.key, id)
            || self.topics.has_history(topic)
        {
            return false;
        }
        self.out.push_shared_frame(self.pools, frame);
        self.count_out(frame.len());
        self.own_copied += 1;
        true
    }

    /// Sends `frame` to the connection with id `id`.
    pub fn send_to(&mut self, id: u64, frame: SharedFrame) {
        *self.fanout += 1;
        self.actions.push(Action::SendTo { id, frame });
    }

    /// Asks the loop to watch (or re-watch) the app's own socket.
    pub fn watch(&mut self, fd: RawFd, interest: mio::Interest, first: bool) {
        self.actions.push(if first { Action::Register { fd, interest } } else { Action::Reregister { fd, interest } });
    }

    /// Stops the connection reading more client messages for now: the app's own queue is
    /// full. Reading resumes once [`App::accepts_input`] says so.
    pub fn hold_input(&mut self) {
        self.hold = true;
    }

    /// Asks the connection to close (applied when the app's call returns).
    pub fn close(&mut self, why: AppClose) {
        if self.close.is_none() {
            *self.close = Some(why);
        }
    }
}

/// One connection's app. Every method but `on_message` has a default that does nothing.
pub trait App {
    /// The WebSocket is open (the 101 is queued).
    fn on_open(&mut self, _cx: &mut AppCtx<'_>) {}

    /// A whole message from the client.
    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>);

    /// The client sent a close frame (`protocol_error` false) or broke the protocol (true),
    /// with this code. The connection answers the client; an app that must first tell its
    /// backend returns [`Hold::UntilAppCloses`].
    fn on_close(&mut self, _cx: &mut AppCtx<'_>, _code: Option<u16>, _reason: &str, _protocol_error: bool) -> Hold {
        Hold::No
    }

    /// When the app wants [`App::on_timer`] next (`None`: not at all). Asked after every
    /// call into the app, so a deadline set in any callback is armed.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// [`App::deadline`] has passed.
    fn on_timer(&mut self, _cx: &mut AppCtx<'_>) {}

    /// Readiness the poller reported for the app's own socket.
    fn on_ready(&mut self, _readable: bool, _writable: bool) {}

    /// Whether the app has a socket of its own: [`App::on_io`] is only called if so (asked
    /// on every drive, so an echo or chat connection builds no context for it).
    fn has_own_io(&self) -> bool {
        false
    }

    /// I/O on the app's own socket: write what waits, and read once if `may_read`.
    fn on_io(&mut self, _cx: &mut AppCtx<'_>, _may_read: bool) -> AppIo {
        AppIo::Idle
    }

    /// False while the app cannot take more client messages (its own queue is full).
    fn accepts_input(&self, _high: usize) -> bool {
        true
    }

    /// True while the app's own queue holds bytes (the connection waits for them on close).
    fn has_pending_output(&self) -> bool {
        false
    }

    /// The pipe holding spliced payload the client's queue refers to.
    #[doc(hidden)]
    fn pipe(&mut self) -> Option<&mut Pipe> {
        None
    }

    /// Gives back pooled buffers: the connection is going away.
    #[doc(hidden)]
    fn release(&mut self, _pools: &mut Pools) {}

    /// The loop's answer to a request the app made for a party of its own (a framed
    /// backend's REQUEST): `true` if the app took it, else it goes to the client.
    fn on_answer(&mut self, _cx: &mut AppCtx<'_>, _body: &[u8]) -> bool {
        false
    }

    /// The broker token this client holds.
    #[doc(hidden)]
    fn token(&self) -> Option<&str> {
        None
    }

    /// The user a verified token named (`sub`), for the access log and `/api/clients`.
    fn user(&self) -> Option<&str> {
        None
    }

    /// The application's answer to a question this app asked ([`Action::AskProxy`], with
    /// this `seq`).
    fn on_proxy_answer(&mut self, _cx: &mut AppCtx<'_>, _seq: u32, _outcome: crate::auth::proxy::Outcome) {}

    /// The app queues whole frames itself (a backend's codec), not through [`AppCtx::send`]:
    /// with permessage-deflate, the connection compresses them after the call.
    #[doc(hidden)]
    fn queues_frames(&self) -> bool {
        false
    }
}
