//! Who a client is: a route's `auth` (JWT connection tokens, checked before the 101 or, on
//! pubsub routes, in the first message), channel tokens for private topics, and the
//! [`Identity`] a verified token gives the connection (its user, until when it may stay,
//! which topics it may use, and an `info` object for presence and backends).
//!
//! - [`jwt`]: the keys and the rules a token must pass;
//! - [`jwks`]: keys fetched from a JWKS URL off the reactor;
//! - [`proxy`]: `auth = "proxy"` and `subscribe_proxy`, where the application decides.

pub mod jwks;
pub mod jwt;
pub mod proxy;

use std::sync::Arc;

use crate::http::request::Request;

/// What a verified token says about its connection.
#[derive(Debug, Default)]
pub struct Identity {
    /// `sub` (empty when the token has none).
    pub user: Arc<str>,
    /// `exp` plus the leeway, in seconds since the Unix epoch: the connection closes then
    /// (code [`TOKEN_EXPIRED`]) unless it refreshes.
    pub expires: Option<u64>,
    /// The `topics` claim: the globs of the topics the connection may subscribe and publish
    /// to (within the route's own `topics`). `None`: the route's alone.
    pub topics: Option<Box<[glob::Pattern]>>,
    /// The `info` claim: a JSON object, at most [`jwt::MAX_INFO`] bytes.
    pub info: Option<Arc<str>>,
}

impl Identity {
    /// May this connection use `topic` (by its token's `topics` claim)?
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.as_ref().is_none_or(|globs| globs.iter().any(|g| g.matches(topic)))
    }
}

/// The close code for a connection whose token expired (IANA's registry: 3000 is
/// "Unauthorized").
pub const TOKEN_EXPIRED: u16 = 3000;

/// A refused token: the HTTP status (or pubsub error code) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal { status, reason: reason.into() }
    }
}

/// A route's `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Anyone may connect (the default).
    #[default]
    None,
    /// A JWT connection token is required.
    Jwt,
    /// The application decides, asked before the 101 ([`proxy`]).
    Proxy,
}

/// A route's authentication: the mode, the verifier, and the topics that need channel tokens.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub mode: Mode,
    /// `[jwt]`, shared by every route that uses it (set when `mode` is [`Mode::Jwt`]).
    pub verifier: Option<Arc<jwt::Verifier>>,
    /// `private = [...]`: topics a subscriber needs a channel token for.
    pub private: Vec<glob::Pattern>,
    /// `[proxy]`, on routes with `auth = "proxy"` or `subscribe_proxy`.
    pub proxy: Option<Arc<proxy::Proxy>>,
    /// `subscribe_proxy = [...]`: topics the application is asked about before a subscribe.
    pub subscribe_proxy: Vec<glob::Pattern>,
}

impl RouteAuth {
    pub fn is_private(&self, topic: &str) -> bool {
        self.private.iter().any(|g| g.matches(topic))
    }

    /// Is the application asked before a subscribe to `topic`?
    pub fn asks_to_subscribe(&self, topic: &str) -> bool {
        self.subscribe_proxy.iter().any(|g| g.matches(topic))
    }
}

/// The token a request carries: `Authorization: Bearer` (clients that can set headers), else
/// `?token=` (browsers, which cannot). `Err` for a header that is there but not a bearer
/// token: a client that sent credentials of another kind is told so, not treated as anonymous.
pub fn presented_token(head: &Request<'_, '_>) -> Result<Option<String>, Refusal> {
    if let Some(value) = head.header("authorization") {
        let value = std::str::from_utf8(value).map_err(|_| Refusal::new(401, "Authorization: not UTF-8"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::new(401, "Authorization: expected a Bearer token"));
        }
        return Ok(Some(rest.trim().to_string()));
    }
    Ok(head
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())))
}

/// Seconds since the Unix epoch: what `exp`, `nbf` and `iat` count in.
#[allow(clippy::disallowed_methods)] // wall-clock time is what the claims are in
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
