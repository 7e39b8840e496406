//! Who is admitted to a WebSocket route, before its app starts: the route's per-address
//! limits (upgrades per address, open connections per address) and its connection token
//! (`auth = "jwt"`); and the guards the app then runs behind ([`Guarded`]: the token's end,
//! per-connection limits, the address's slot).

use std::time::{Duration, Instant};

use super::{Connection, Ctx};
use crate::apps::guarded::Guarded;
use crate::apps::App;
use crate::auth::{self, Identity};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::rate_limit::{self, IpSlot};
use crate::route::{AppKind, Route};

/// A verified connection token: what it says, and its `exp` on the reactor's clock.
pub(super) struct Verified {
    pub(super) identity: Identity,
    pub(super) expires_at: Option<Instant>,
}

impl Verified {
    /// What the token (or the application) said, its `exp` put on the reactor's clock.
    pub(super) fn new(identity: Identity, now: Instant) -> Verified {
        let unix = auth::unix_now();
        let expires_at = identity.expires.map(|e| now + Duration::from_secs(e.saturating_sub(unix)));
        Verified { identity, expires_at }
    }
}

/// What an upgrade was admitted with: a verified token, a slot in its address's count.
pub(super) struct Admitted {
    pub(super) verified: Option<Verified>,
    pub(super) slot: Option<IpSlot>,
}

/// The app behind the route's guards ([`Guarded`]).
pub(super) fn guard(
    app: Box<dyn App>,
    verified: Option<Verified>,
    slot: Option<IpSlot>,
    route: &Route,
    now: Instant,
) -> Box<dyn App> {
    Guarded::wrap(app, verified.map(|v| (v.identity, v.expires_at)), &route.rates, slot, now)
}

impl Connection {
    /// `auth = "jwt"`: the request's token, verified (`Ok(None)`: the route has no auth, or a
    /// pubsub client will send its token as its first message). A refusal is answered here
    /// (`Err` holds whether the connection goes on).
    pub(super) fn verify_token(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
        path: &str,
    ) -> Result<Option<Verified>, bool> {
        let Some(verifier) = route.auth.verifier.as_deref().filter(|_| route.auth.mode == auth::Mode::Jwt) else {
            return Ok(None);
        };
        let token = match auth::presented_token(req) {
            Ok(Some(token)) => token,
            Ok(None) if route.app == AppKind::PubSub => return Ok(None),
            Ok(None) => {
                return Err(self.refuse_token(cx, 401, "a token is required (Authorization: Bearer or ?token=)"))
            }
            Err(refusal) => return Err(self.refuse_token(cx, refusal.status, &refusal.reason)),
        };
        let claims = match verifier.verify(&token, auth::unix_now()) {
            Ok(claims) => claims,
            Err(refusal) => return Err(self.refuse_token(cx, refusal.status, &refusal.reason)),
        };
        if claims.channel.is_some() {
            return Err(self.refuse_token(cx, 401, "a channel token cannot open a connection"));
        }
        if route.app == AppKind::Chat && !claims.identity.allows_topic(path) {
            return Err(self.refuse_token(cx, 403, "the token does not allow this room"));
        }
        Ok(Some(Verified::new(claims.identity, cx.now)))
    }

    /// The route's per-address limits (`rate_handshakes_per_ip`, `max_connections_per_ip`):
    /// the connection's slot in its address's count, or a 429 (`Err` holds whether the
    /// connection goes on).
    pub(super) fn admit_address(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request<'_, '_>,
        route: &Route,
    ) -> Result<Option<IpSlot>, bool> {
        let Some(table) = &route.rates.per_ip else { return Ok(None) };
        match table.admit(&route.rates, self.peer().ip(), cx.now) {
            Ok(slot) => Ok(slot),
            Err(rate_limit::Refused(kind)) => {
                self.log.set_end(format!("rate limit: {}", kind.name()));
                let reason = format!("rate limit: {}", kind.name());
                let response =
                    Response { headers: &[("Retry-After", "1")], keep_alive: false, ..Response::error(429, &reason) };
                let _ = req;
                Err(self.send_response(cx, &response))
            }
        }
    }

    /// A refused token: 401 (with `WWW-Authenticate`, RFC 6750 §3) or 403, and the
    /// connection closes.
    pub(super) fn refuse_token(&mut self, cx: &mut Ctx<'_>, status: u16, reason: &str) -> bool {
        cx.metrics.auth_refusals += 1;
        self.log.set_end(format!("token refused: {reason}"));
        let headers: &[(&str, &str)] =
            if status == 401 { &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")] } else { &[] };
        let response = Response { headers, keep_alive: false, ..Response::error(status, reason) };
        self.send_response(cx, &response)
    }
}
