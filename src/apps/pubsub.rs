//! `app = "pubsub"`: topics for browser clients, in JSON text messages.
//!
//! Client → server (one JSON object per text message):
//!
//! ```text
//! {"op":"subscribe","topic":"news"}
//! {"op":"unsubscribe","topic":"news"}
//! {"op":"publish","topic":"news","data":<any JSON value>}
//! ```
//!
//! Server → client: `{"op":"subscribed","topic":"news"}` and `{"op":"unsubscribed",...}` as
//! acknowledgements, `{"topic":"news","data":<the value as published>}` for each delivery,
//! and `{"op":"error","code":N,"message":"..."}` for a request refused: 400 malformed,
//! 403 topic not allowed by the route's `topics` globs, 405 publishing not allowed,
//! 413 topic longer than `max_topic_length`, 429 over `max_subscriptions`. A client whose
//! requests fail `MAX_ERRORS_IN_A_ROW` times in a row is closed with 1008.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{App, AppClose, AppCtx, Payload};
use crate::encode::shared_frame;
use crate::pubsub::SubscribeError;
use crate::ws::close;
use crate::ws::frame::Opcode;
use crate::ws::message::MessageKind;

/// Consecutive refused requests after which the client is closed (1008).
pub const MAX_ERRORS_IN_A_ROW: u32 = 10;

pub use crate::pubsub::Policy;

pub struct PubSub {
    policy: Arc<Policy>,
    errors_in_a_row: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    op: &'a str,
    #[serde(borrow)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A refused request: a code (HTTP-like) and a message for the client.
struct Refusal(u16, &'static str);

impl PubSub {
    pub fn new(policy: Arc<Policy>) -> PubSub {
        PubSub { policy, errors_in_a_row: 0 }
    }

    fn handle(&mut self, cx: &mut AppCtx<'_>, text: &[u8]) -> Result<(), Refusal> {
        let req: Request<'_> =
            serde_json::from_slice(text).map_err(|_| Refusal(400, "expected a JSON object with \"op\""))?;
        let topic = req.topic.as_deref().ok_or(Refusal(400, "missing \"topic\""))?;
        if topic.is_empty() {
            return Err(Refusal(400, "empty topic"));
        }
        if topic.len() > self.policy.max_topic_length {
            return Err(Refusal(413, "topic too long"));
        }
        if topic.chars().any(char::is_control) {
            return Err(Refusal(400, "control characters in topic"));
        }
        if !self.policy.topics.iter().any(|p| p.matches(topic)) {
            return Err(Refusal(403, "topic not allowed"));
        }
        match req.op {
            "subscribe" => match cx.subscribe(topic, self.policy.max_subscriptions) {
                Ok(_) => reply(cx, "subscribed", topic),
                Err(SubscribeError::TooMany) => return Err(Refusal(429, "too many subscriptions")),
                Err(SubscribeError::Reserved) => return Err(Refusal(403, "topic not allowed")),
            },
            "unsubscribe" => {
                cx.unsubscribe(topic);
                reply(cx, "unsubscribed", topic)
            }
            "publish" => {
                if !self.policy.client_publish {
                    return Err(Refusal(405, "publishing is not allowed on this route"));
                }
                let data = req.data.ok_or(Refusal(400, "missing \"data\""))?;
                let mut body = Vec::with_capacity(32 + topic.len() + data.get().len());
                body.extend_from_slice(b"{\"topic\":");
                write_json_string(&mut body, topic);
                body.extend_from_slice(b",\"data\":");
                body.extend_from_slice(data.get().as_bytes());
                body.push(b'}');
                cx.publish(Arc::from(topic), shared_frame(Opcode::Text, &body), self.policy.exclude_sender);
            }
            _ => return Err(Refusal(400, "unknown op (expected subscribe, unsubscribe or publish)")),
        }
        Ok(())
    }
}

fn reply(cx: &mut AppCtx<'_>, op: &str, topic: &str) {
    let mut body = Vec::with_capacity(32 + topic.len());
    body.extend_from_slice(b"{\"op\":\"");
    body.extend_from_slice(op.as_bytes());
    body.extend_from_slice(b"\",\"topic\":");
    write_json_string(&mut body, topic);
    body.push(b'}');
    cx.send(MessageKind::Text, &body);
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a string exactly as JSON requires (escapes, control characters).
    let _ = serde_json::to_writer(&mut *out, s);
}

impl App for PubSub {
    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        let result = match kind {
            MessageKind::Text => self.handle(cx, payload.as_slice()),
            MessageKind::Binary => Err(Refusal(400, "binary messages are not part of this protocol")),
        };
        match result {
            Ok(()) => self.errors_in_a_row = 0,
            Err(Refusal(code, message)) => {
                self.errors_in_a_row += 1;
                if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                    cx.close(AppClose::Close(close::POLICY_VIOLATION, "too many bad requests".into()));
                    return;
                }
                let mut body = format!("{{\"op\":\"error\",\"code\":{code},\"message\":").into_bytes();
                write_json_string(&mut body, message);
                body.push(b'}');
                cx.send(MessageKind::Text, &body);
            }
        }
    }
}
