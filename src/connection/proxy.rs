//! `auth = "proxy"`: the upgrade request goes to the application ([`crate::auth::proxy`])
//! and the connection waits in `Asking`, reading nothing. The request's bytes stay in the
//! input: an allowing answer looks at them again (every check of the upgrade runs again,
//! cheaply) with the application's decision in hand, so the 101 is written by the same path
//! as every other route's.

use std::sync::Arc;
use std::time::Duration;

use super::{Connection, Ctx, Phase, Ready, Turn};
use crate::apps::Action;
use crate::auth::proxy::{self, Failure, Kind, Outcome, Upgrade};
use crate::auth::Identity;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::rate_limit::IpSlot;
use crate::route::Route;
use crate::stamp::Stamp;

/// Past the proxy's own timeout, the connection stops waiting for an answer that should
/// have come (the helper thread answers "timed out" first when it is alive).
const GRACE: Duration = Duration::from_millis(250);

/// An upgrade the application is deciding on: the address's slot it holds meanwhile, and,
/// once allowed, who the application says the client is.
#[derive(Default)]
pub(super) struct Asking {
    slot: Option<IpSlot>,
    granted: Option<Identity>,
}

impl Connection {
    /// Sends the upgrade to the application; `consumed`: the request's bytes, kept for when
    /// the answer comes. Returns what `handle_request` returns (nothing more to look at).
    pub(super) fn ask_proxy(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
        slot: Option<IpSlot>,
        consumed: usize,
    ) -> bool {
        let Some(proxy) = route.auth.proxy.as_ref() else {
            return self.respond(cx, req, 500, "no [proxy] for this route", false);
        };
        let upgrade = Upgrade { client: self.id, peer: self.peer(), tls: self.transport.is_tls(), route: &route.path };
        let body = proxy::connect_request(&proxy.settings, req, &upgrade);
        cx.actions.push(Action::AskProxy { proxy: Arc::clone(proxy), kind: Kind::Connect, seq: 0, body });
        self.input.unconsume(consumed);
        self.rare.get_or_insert_with(Box::default).asking = Some(Box::new(Asking { slot, granted: None }));
        let deadline = Stamp::at(cx.now + proxy.settings.timeout + GRACE);
        self.set_phase(Phase::Asking { deadline });
        false
    }

    /// The application's decision on this upgrade, once it has allowed it: who the client
    /// is, and its address's slot.
    pub(super) fn take_granted(&mut self) -> Option<(Identity, Option<IpSlot>)> {
        let asking = self.rare.as_mut()?.asking.take()?;
        let Asking { slot, granted } = *asking;
        granted.map(|identity| (identity, slot))
    }

    /// The application answered the connect request (the loop passes it on): allowed, the
    /// request is looked at again and upgraded; denied, its status and reason; no answer, 503.
    pub fn proxy_answered(&mut self, cx: &mut Ctx<'_>, outcome: Outcome) -> Turn {
        self.proxy_decided(cx, outcome);
        self.drive(cx, Ready { corked: true, ..Ready::default() })
    }

    /// [`Connection::proxy_answered`] without the drive (also the deadline's, with a timeout).
    pub(super) fn proxy_decided(&mut self, cx: &mut Ctx<'_>, outcome: Outcome) {
        if matches!(self.phase, Phase::Asking { .. }) {
            self.set_phase(Phase::Http { deadline: Stamp::at(cx.now + cx.limits.handshake_timeout) });
            match outcome {
                Outcome::Allow(Some(identity)) => {
                    if let Some(asking) = self.rare.as_mut().and_then(|r| r.asking.as_mut()) {
                        asking.granted = Some(identity);
                    }
                    self.process_input(cx);
                }
                Outcome::Deny { status, reason } => {
                    cx.metrics.auth_refusals += 1;
                    self.log.set_end(format!("refused by the application: {reason}"));
                    self.refuse(cx, status, &reason);
                }
                Outcome::Allow(None) => {
                    self.log.set_end("the auth proxy allowed without a user");
                    self.refuse(cx, 503, "the auth proxy answered badly");
                }
                Outcome::Failed(failure, why) => {
                    self.log.set_end(why);
                    let reason = match failure {
                        Failure::Busy => "too many connections are waiting for the application, try again later",
                        Failure::Timeout => "the application did not answer in time",
                        Failure::Error => "the application cannot decide now, try again later",
                    };
                    self.refuse(cx, 503, reason);
                }
            }
        }
    }

    /// The application answered a question the connection's app asked.
    /// Nothing once the WebSocket is closing: after a close frame, nothing may follow.
    pub fn app_proxy_answered(&mut self, cx: &mut Ctx<'_>, seq: u32, outcome: Outcome) -> Turn {
        if self.is_open() {
            self.with_app(cx, |app, acx| app.on_proxy_answer(acx, seq, outcome));
        }
        self.drive(cx, Ready { corked: true, ..Ready::default() })
    }

    /// No upgrade: the response, and the connection closes (its slot is given back).
    fn refuse(&mut self, cx: &mut Ctx<'_>, status: u16, reason: &str) {
        if let Some(rare) = self.rare.as_mut() {
            rare.asking = None;
        }
        let headers: &[(&str, &str)] = if status == 503 { &[("Retry-After", "1")] } else { &[] };
        self.send_response(cx, &Response { headers, keep_alive: false, ..Response::error(status, reason) });
    }
}
