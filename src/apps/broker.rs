//! `app = "broker"`: the websockets_pro token broker.
//!
//! A client holds one token: from the URL (`/ws?RegisterToken=abc1`), from a text message
//! `RegisterToken:abc1`, or `unregistered` when the route allows clients without one. Its
//! messages:
//!
//! - `abc1,group/,abc3|Hello`: `Hello` to every client holding `abc1` or `abc3`, and to every
//!   client whose token starts with `group/` (the sender too, if it is among them); only on
//!   routes with `client_publish = true`;
//! - `Echo:message`: `message` back to the sender alone;
//! - `RegisterToken:abc1`: hold `abc1` from now on (a registered token, unless the route has
//!   `allow_unregistered`);
//! - anything else is a service message, which nobody receives.
//!
//! A refused request is answered with `Error:<why>`; `MAX_ERRORS_IN_A_ROW` of them in a row
//! close the client (1008). With `[broker] websockets_pro_quirks` the original's undocumented
//! behaviour applies instead: receivers match by substring, a message without `|` is routed
//! too (the whole text is both receivers and payload), deliveries and echoes are JSON-quoted
//! strings, and a client without a token holds `unregstered` (sic).

use super::pubsub::MAX_ERRORS_IN_A_ROW;
use super::{App, AppClose, AppCtx, Payload};
use crate::broker::{check_token, quirks_payload, split_routed, Broker, TokenError, MAX_RECEIVERS_LEN};
use crate::encode::shared_frame;
use crate::route::BrokerRoute;
use crate::ws::close;
use crate::ws::message::MessageKind;

const REGISTER: &[u8] = b"RegisterToken:";
const ECHO: &[u8] = b"Echo:";

pub struct BrokerClient {
    token: Box<str>,
    policy: BrokerRoute,
    errors_in_a_row: u32,
}

/// The token a client starts with, or why it is refused at the handshake (403).
pub fn admit(token: Option<&str>, policy: BrokerRoute, broker: &Broker) -> Result<Box<str>, String> {
    match token {
        None | Some("") if policy.allow_unregistered => Ok(broker.unregistered_token().into()),
        None | Some("") => Err("a registered token is required (?RegisterToken=...)".into()),
        Some(t) => {
            check_token(t).map_err(|e| e.message().to_string())?;
            if !policy.allow_unregistered && !broker.is_registered(t) {
                return Err(TokenError::NotRegistered.message().into());
            }
            Ok(t.into())
        }
    }
}

impl BrokerClient {
    pub fn new(token: Box<str>, policy: BrokerRoute) -> BrokerClient {
        BrokerClient { token, policy, errors_in_a_row: 0 }
    }

    fn handle(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, message: &[u8]) -> Result<(), &'static str> {
        let quirks = cx.broker.quirks;
        if let Some(rest) = message.strip_prefix(REGISTER) {
            // websockets_pro takes the text up to the next colon.
            let rest = if quirks { rest.split(|&b| b == b':').next().unwrap_or(rest) } else { rest };
            let token = std::str::from_utf8(rest).map_err(|_| "token is not UTF-8")?;
            check_token(token).map_err(TokenError::message)?;
            if !self.policy.allow_unregistered && !cx.broker.is_registered(token) {
                return Err(TokenError::NotRegistered.message());
            }
            self.token = token.into();
            cx.broker.hold(cx.key, token);
            return Ok(());
        }
        if let Some(rest) = message.strip_prefix(ECHO) {
            if quirks {
                // strings.TrimPrefix(strings.Join(strings.Split(msg, ":"), ""), "Echo")
                let joined: Vec<u8> = message.iter().copied().filter(|&b| b != b':').collect();
                let text = joined.strip_prefix(b"Echo").unwrap_or(&joined);
                cx.send(MessageKind::Text, &quirks_payload(text));
            } else {
                cx.send(kind, rest);
            }
            return Ok(());
        }
        let Some((receivers, payload)) = split_routed(message) else {
            if quirks && self.policy.client_publish && message.len() <= MAX_RECEIVERS_LEN {
                // websockets_pro routes a message without '|' too: the whole message is both
                // the receivers part and the payload.
                cx.route(message, shared_frame(MessageKind::Text.opcode(), &quirks_payload(message)));
                return Ok(());
            }
            log::debug!("broker: service message from {} ignored", cx.peer());
            return Ok(());
        };
        if !self.policy.client_publish {
            return Err("routing messages is not allowed on this route");
        }
        if receivers.len() > MAX_RECEIVERS_LEN {
            return Err("receivers list too long");
        }
        let frame = if quirks {
            shared_frame(MessageKind::Text.opcode(), &quirks_payload(payload))
        } else {
            shared_frame(kind.opcode(), payload)
        };
        cx.route(receivers, frame);
        Ok(())
    }
}

impl App for BrokerClient {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        cx.broker.hold(cx.key, &self.token);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        match self.handle(cx, kind, payload.as_slice()) {
            Ok(()) => self.errors_in_a_row = 0,
            Err(why) => {
                self.errors_in_a_row += 1;
                if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                    cx.close(AppClose::Close(close::POLICY_VIOLATION, "too many bad requests".into()));
                    return;
                }
                cx.send(MessageKind::Text, format!("Error:{why}").as_bytes());
            }
        }
    }

    fn token(&self) -> Option<&str> {
        Some(&self.token)
    }
}
