//! The admin listener's requests: authentication, and parsing into [`Command`]s. The loop
//! executes them (`server/manage.rs`), since they concern every connection.
//!
//! Keys come in `Authorization: Bearer KEY`, `X-API-Key: KEY`, or `?key=KEY` (for the
//! browser: the dashboard page and its WebSocket). Each key has a scope (read < publish <
//! admin). With no key configured (allowed only on a loopback address) every request is
//! admitted. Errors are JSON: `{"error":{"code":N,"message":"..."}}`.
//!
//! Two APIs:
//! - websockets_pro's form API on `/`: `method=broadcast&message=...`, `get_clients`,
//!   `registerToken`, `unregisterToken`, `registeredTokenList`, as a form body or a query;
//! - a JSON API under `/api/`, shaped like Centrifugo's server API.

use serde::Deserialize;
use serde_json::value::RawValue;

pub mod config;
pub mod render;

use crate::http::request::Request as Head;
use config::{ApiKey, Scope};

/// The largest `max_body` accepted: a request must fit one 64 KiB read buffer with its head.
pub const MAX_BODY_LIMIT: usize = 48 << 10;
/// `max_body` unless configured.
pub const DEFAULT_MAX_BODY: usize = 32 << 10;

/// One admin request, owned (it outlives the read buffer it came from).
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The key presented, if any.
    pub key: Option<String>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn new(head: &Head<'_, '_>, body: &[u8]) -> Request {
        let text = |name: &str| head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
        let query = head.query().unwrap_or("").to_string();
        Request {
            method: head.method.to_string(),
            path: head.path().to_string(),
            content_type: text("content-type").unwrap_or_default(),
            key: presented_key(head),
            query,
            body: body.to_vec(),
            keep_alive: head.keep_alive(),
        }
    }
}

/// The key a request presents: `Authorization: Bearer`, `X-API-Key`, or `?key=`.
pub fn presented_key(head: &Head<'_, '_>) -> Option<String> {
    let header = |name: &str| head.header(name).and_then(|v| std::str::from_utf8(v).ok());
    if let Some(auth) = header("authorization") {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim().to_string());
        }
    }
    if let Some(k) = header("x-api-key") {
        return Some(k.to_string());
    }
    let query = head.query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
}

/// An HTTP answer from the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// websockets_pro's form API sends CORS headers; so do we, there.
    pub cors: bool,
}

pub const JSON: &str = "application/json";

impl Reply {
    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply { status: 200, content_type: JSON, body: body.into(), cors: false }
    }

    pub fn error(status: u16, message: &str) -> Reply {
        let body = serde_json::json!({ "error": { "code": status, "message": message } });
        Reply { status, content_type: JSON, body: body.to_string().into_bytes(), cors: false }
    }

    pub fn with_cors(self) -> Reply {
        Reply { cors: true, ..self }
    }
}

/// Checks the key against the configured ones for `needed`. Every key is compared, in time
/// independent of where they differ (SHA-1 digests compared without early exit, so neither
/// content nor length leaks through timing).
pub fn authorize(keys: &[ApiKey], presented: Option<&str>, needed: Scope) -> Result<(), Reply> {
    if keys.is_empty() {
        return Ok(());
    }
    let Some(presented) = presented.filter(|k| !k.is_empty()) else {
        return Err(Reply::error(401, "a key is required (Authorization: Bearer KEY, X-API-Key: KEY, or ?key=KEY)"));
    };
    let digest = sha1_smol::Sha1::from(presented).digest().bytes();
    let mut granted: Option<Scope> = None;
    for k in keys {
        let theirs = sha1_smol::Sha1::from(&k.key).digest().bytes();
        let diff = digest.iter().zip(theirs.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) == 0 {
            granted = granted.max(Some(k.scope));
        }
    }
    match granted {
        None => Err(Reply::error(401, "unknown key")),
        Some(scope) if scope < needed => {
            Err(Reply::error(403, &format!("this key's scope is {}; {} is needed", scope.name(), needed.name())))
        }
        Some(_) => Ok(()),
    }
}

/// Where a payload goes, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A JSON value as written.
    Json(String),
    /// Bytes, sent as a binary message.
    Binary(Vec<u8>),
}

/// Whom `/api/disconnect` closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Client(u64),
    Topic(String),
    Token(String),
}

/// What an admin request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Dashboard,
    Metrics,
    /// A page of the connections: `offset` (0 first), at most `limit`.
    Clients {
        offset: usize,
        limit: usize,
    },
    /// A page of the topics, the same way.
    Topics {
        offset: usize,
        limit: usize,
    },
    Info,
    Publish {
        topics: Vec<String>,
        data: Data,
    },
    Send {
        client: u64,
        data: Data,
    },
    Disconnect {
        target: Target,
        code: u16,
        reason: String,
    },
    Subscribe {
        client: u64,
        topic: String,
    },
    Unsubscribe {
        client: u64,
        topic: String,
    },
    /// A topic's history (`/api/history`), read by its owner.
    History {
        topic: String,
        /// After this position (offset, epoch); `None`: from the oldest kept (or the newest,
        /// `reverse`).
        since: Option<(u64, String)>,
        limit: usize,
        reverse: bool,
    },
    /// Forgets a topic's history (`/api/history_remove`): its next publication starts a new
    /// epoch, and clients recovering from the old one are told so.
    HistoryRemove {
        topic: String,
    },
    /// A page of a topic's presence (`/api/presence`), from its owner: the members after the
    /// cursor `after`.
    Presence {
        topic: String,
        after: Option<String>,
        limit: usize,
    },
    /// A topic's presence counted (`/api/presence_stats`).
    PresenceStats {
        topic: String,
    },
    /// The form API: a broker message `receivers|payload` as if a client sent it.
    FormBroadcast {
        message: String,
    },
    FormClients,
    FormRegister {
        token: String,
    },
    FormUnregister {
        token: String,
    },
    FormTokenList,
    /// A CORS preflight for the form API.
    Preflight,
}

impl Command {
    pub fn scope(&self) -> Scope {
        match self {
            Command::Dashboard
            | Command::Metrics
            | Command::Clients { .. }
            | Command::Topics { .. }
            | Command::Info
            | Command::FormClients
            | Command::FormTokenList
            | Command::History { .. }
            | Command::Presence { .. }
            | Command::PresenceStats { .. }
            | Command::Preflight => Scope::Read,
            Command::Publish { .. } | Command::Send { .. } | Command::FormBroadcast { .. } => Scope::Publish,
            Command::Disconnect { .. }
            | Command::Subscribe { .. }
            | Command::Unsubscribe { .. }
            | Command::HistoryRemove { .. }
            | Command::FormRegister { .. }
            | Command::FormUnregister { .. } => Scope::Admin,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    b64data: Option<String>,
    client: Option<ClientId>,
    token: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
    since: Option<Since>,
    limit: Option<usize>,
    reverse: Option<bool>,
    after: Option<String>,
}

/// `/api/history`'s `since`: a position as clients give it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    offset: u64,
    epoch: String,
}

/// A connection id, as a JSON number or a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClientId {
    Number(u64),
    Text(String),
}

impl ClientId {
    fn get(&self) -> Result<u64, Reply> {
        match self {
            ClientId::Number(n) => Ok(*n),
            ClientId::Text(s) => s.parse().map_err(|_| Reply::error(400, "\"client\": expected a connection id")),
        }
    }
}

/// Parses a request into a command (not yet authorized: see [`Command::scope`]).
pub fn parse(req: &Request) -> Result<Command, Reply> {
    let path = req.path.as_str();
    let method = req.method.as_str();
    if path == "/" {
        return parse_form(req);
    }
    if path == "/metrics" {
        return match method {
            "GET" | "HEAD" => Ok(Command::Metrics),
            _ => Err(Reply::error(405, "use GET")),
        };
    }
    let Some(api) = path.strip_prefix("/api/") else {
        return Err(Reply::error(404, "no such endpoint (see /api/info, /metrics, or the dashboard at /)"));
    };
    let readonly = match api {
        "clients" => Some(page(&req.query, |offset, limit| Command::Clients { offset, limit })?),
        "topics" => Some(page(&req.query, |offset, limit| Command::Topics { offset, limit })?),
        "info" => Some(Command::Info),
        _ => None,
    };
    if let Some(command) = readonly {
        return match method {
            "GET" | "HEAD" | "POST" => Ok(command),
            _ => Err(Reply::error(405, "use GET")),
        };
    }
    if !matches!(
        api,
        "publish"
            | "broadcast"
            | "send"
            | "disconnect"
            | "subscribe"
            | "unsubscribe"
            | "history"
            | "history_remove"
            | "presence"
            | "presence_stats"
    ) {
        return Err(Reply::error(404, &format!("no such method: {api}")));
    }
    if method != "POST" {
        return Err(Reply::error(405, "use POST with a JSON body"));
    }
    let body: Body<'_> =
        serde_json::from_slice(&req.body).map_err(|e| Reply::error(400, &format!("body: invalid JSON: {e}")))?;
    let need_topic = || {
        let t = body.topic.clone().ok_or_else(|| Reply::error(400, "\"topic\" is required"))?;
        check_topic(&t)?;
        Ok::<_, Reply>(t)
    };
    let need_client = || body.client.as_ref().ok_or_else(|| Reply::error(400, "\"client\" is required"))?.get();
    match api {
        "publish" => Ok(Command::Publish { topics: vec![need_topic()?], data: data(&body)? }),
        "broadcast" => {
            let topics = body.topics.clone().ok_or_else(|| Reply::error(400, "\"topics\" is required"))?;
            if topics.is_empty() || topics.len() > 1000 {
                return Err(Reply::error(400, "\"topics\": 1 to 1000 topics"));
            }
            topics.iter().try_for_each(|t| check_topic(t))?;
            Ok(Command::Publish { topics, data: data(&body)? })
        }
        "send" => Ok(Command::Send { client: need_client()?, data: data(&body)? }),
        "subscribe" => Ok(Command::Subscribe { client: need_client()?, topic: need_topic()? }),
        "unsubscribe" => Ok(Command::Unsubscribe { client: need_client()?, topic: need_topic()? }),
        "history" => {
            let limit = body.limit.unwrap_or(100);
            if limit == 0 || limit > crate::history::MAX_LIMIT {
                return Err(Reply::error(400, "\"limit\": 1 to 1000"));
            }
            Ok(Command::History {
                topic: need_topic()?,
                since: body.since.as_ref().map(|s| (s.offset, s.epoch.clone())),
                limit,
                reverse: body.reverse.unwrap_or(false),
            })
        }
        "history_remove" => Ok(Command::HistoryRemove { topic: need_topic()? }),
        "presence" => {
            let limit = body.limit.unwrap_or(crate::presence::DEFAULT_LIMIT);
            if limit == 0 || limit > crate::presence::MAX_LIMIT {
                return Err(Reply::error(400, "\"limit\": 1 to 1000"));
            }
            Ok(Command::Presence { topic: need_topic()?, after: body.after.clone(), limit })
        }
        "presence_stats" => Ok(Command::PresenceStats { topic: need_topic()? }),
        _ => {
            let targets = [body.client.is_some(), body.topic.is_some(), body.token.is_some()];
            if targets.iter().filter(|t| **t).count() != 1 {
                return Err(Reply::error(400, "give exactly one of \"client\", \"topic\", \"token\""));
            }
            let target = if body.client.is_some() {
                Target::Client(need_client()?)
            } else if let Some(t) = &body.token {
                Target::Token(t.clone())
            } else {
                Target::Topic(need_topic()?)
            };
            let code = body.code.unwrap_or(crate::ws::close::NORMAL);
            if !sendable_close_code(code) {
                return Err(Reply::error(400, "\"code\": expected 1000, 1001, 1008, 1011 or 3000-4999"));
            }
            let reason = body.reason.clone().unwrap_or_else(|| "disconnected by the server".into());
            if reason.len() > 123 {
                return Err(Reply::error(400, "\"reason\": at most 123 bytes"));
            }
            Ok(Command::Disconnect { target, code, reason })
        }
    }
}

/// Most entries one `/api/clients` or `/api/topics` answer lists: building the page is work
/// the loop does between other clients' messages, so it is bounded; `offset` pages through
/// the rest.
pub const MAX_PAGE: usize = 10_000;
/// The page size unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 1000;

fn page(query: &str, command: impl FnOnce(usize, usize) -> Command) -> Result<Command, Reply> {
    let (mut offset, mut limit) = (0, DEFAULT_PAGE);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let n = || v.parse::<usize>().map_err(|_| Reply::error(400, &format!("{k}: expected a number")));
        match &*k {
            "offset" => offset = n()?,
            "limit" => limit = n()?.clamp(1, MAX_PAGE),
            _ => {}
        }
    }
    Ok(command(offset, limit))
}

fn check_topic(t: &str) -> Result<(), Reply> {
    if t.is_empty() || t.len() > 1024 || t.chars().any(char::is_control) {
        return Err(Reply::error(400, "\"topic\": 1 to 1024 bytes, no control characters"));
    }
    Ok(())
}

/// The codes the disconnect command may close with: those that say why a server ends a
/// connection, and the registered and private ranges.
fn sendable_close_code(code: u16) -> bool {
    use crate::ws::close::{GOING_AWAY, INTERNAL_ERROR, NORMAL, POLICY_VIOLATION};
    matches!(code, NORMAL | GOING_AWAY | POLICY_VIOLATION | INTERNAL_ERROR | 3000..=4999)
}

fn data(body: &Body<'_>) -> Result<Data, Reply> {
    use base64::Engine;
    match (&body.data, &body.b64data) {
        (Some(d), None) => Ok(Data::Json(d.get().to_string())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Data::Binary)
            .map_err(|_| Reply::error(400, "\"b64data\": invalid base64")),
        _ => Err(Reply::error(400, "give exactly one of \"data\" or \"b64data\"")),
    }
}

/// websockets_pro's API on `/`: `method` and its fields from the query and, for a form
/// body, the body.
fn parse_form(req: &Request) -> Result<Command, Reply> {
    let mut fields: Vec<(String, String)> =
        form_urlencoded::parse(req.query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let form_body = req.content_type.split(';').next().is_some_and(|t| t.trim() == "application/x-www-form-urlencoded");
    if form_body {
        fields.extend(form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(method) = field("method") else {
        return match req.method.as_str() {
            "GET" | "HEAD" => Ok(Command::Dashboard),
            "OPTIONS" => Ok(Command::Preflight),
            _ if !req.body.is_empty() && !form_body => {
                Err(Reply::error(400, "expected an application/x-www-form-urlencoded body with method=..."))
            }
            _ => Err(Reply::error(
                400,
                "missing method (broadcast, get_clients, registerToken, unregisterToken, registeredTokenList)",
            )),
        };
    };
    if !matches!(req.method.as_str(), "GET" | "POST") {
        return Err(Reply::error(405, "use POST"));
    }
    let token = || {
        field("token")
            .or_else(|| field("message"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Reply::error(400, "token is required (in \"token\" or \"message\")").with_cors())
    };
    match method.as_str() {
        "broadcast" => Ok(Command::FormBroadcast { message: field("message").unwrap_or_default() }),
        "get_clients" => Ok(Command::FormClients),
        "registerToken" => Ok(Command::FormRegister { token: token()? }),
        "unregisterToken" => Ok(Command::FormUnregister { token: token()? }),
        "registeredTokenList" => Ok(Command::FormTokenList),
        other => Err(Reply::error(404, &format!("unknown method {other:?}")).with_cors()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: &str, content_type: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            content_type: content_type.into(),
            key: None,
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[test]
    fn form_api() {
        let p = |q: &str, body: &str| parse(&req("POST", "/", q, FORM, body));
        assert_eq!(
            p("", "method=broadcast&message=abc1%2Cgroup%2F%7CHello+there"),
            Ok(Command::FormBroadcast { message: "abc1,group/|Hello there".into() })
        );
        assert_eq!(p("method=get_clients", ""), Ok(Command::FormClients));
        assert_eq!(p("", "method=registerToken&token=abc9"), Ok(Command::FormRegister { token: "abc9".into() }));
        assert_eq!(p("", "method=unregisterToken&message=abc9"), Ok(Command::FormUnregister { token: "abc9".into() }));
        assert_eq!(p("", "method=registeredTokenList"), Ok(Command::FormTokenList));
        assert_eq!(p("", "method=registerToken").unwrap_err().status, 400);
        assert_eq!(p("", "method=nope").unwrap_err().status, 404);
        assert_eq!(parse(&req("GET", "/", "", "", "")), Ok(Command::Dashboard));
    }

    #[test]
    fn json_api() {
        let p = |path: &str, body: &str| parse(&req("POST", path, "", JSON, body));
        assert_eq!(
            p("/api/publish", r#"{"topic":"news","data":{"a":1}}"#),
            Ok(Command::Publish { topics: vec!["news".into()], data: Data::Json(r#"{"a":1}"#.into()) })
        );
        assert_eq!(
            p("/api/send", r#"{"client":"42","b64data":"AAE="}"#),
            Ok(Command::Send { client: 42, data: Data::Binary(vec![0, 1]) })
        );
        assert_eq!(
            p("/api/disconnect", r#"{"token":"abc1","code":4000,"reason":"bye"}"#),
            Ok(Command::Disconnect { target: Target::Token("abc1".into()), code: 4000, reason: "bye".into() })
        );
        for (path, body, status) in [
            ("/api/publish", "{", 400),
            ("/api/publish", r#"{"topic":"x"}"#, 400),
            ("/api/publish", r#"{"topic":"x","data":1,"b64data":"AA=="}"#, 400),
            ("/api/publish", r#"{"topic":"","data":1}"#, 400),
            ("/api/publish", r#"{"topic":"x","data":1,"extra":2}"#, 400),
            ("/api/send", r#"{"client":"x1","data":1}"#, 400),
            ("/api/disconnect", r#"{"client":1,"token":"a"}"#, 400),
            ("/api/disconnect", r#"{"client":1,"code":1005}"#, 400),
            ("/api/nothing", "{}", 404),
            ("/elsewhere", "", 404),
        ] {
            assert_eq!(p(path, body).unwrap_err().status, status, "{path} {body}");
        }
        assert_eq!(parse(&req("GET", "/api/publish", "", "", "")).unwrap_err().status, 405);
        assert_eq!(parse(&req("GET", "/api/clients", "", "", "")), Ok(Command::Clients { offset: 0, limit: 1000 }));
        assert_eq!(
            parse(&req("GET", "/api/clients", "offset=5&limit=99999", "", "")),
            Ok(Command::Clients { offset: 5, limit: MAX_PAGE })
        );
        assert_eq!(parse(&req("GET", "/api/clients", "limit=x", "", "")).unwrap_err().status, 400);
    }

    #[test]
    fn keys_and_scopes() {
        let keys = [
            ApiKey { key: "read-key-0123456789".into(), scope: Scope::Read },
            ApiKey { key: "admin-key-0123456789".into(), scope: Scope::Admin },
        ];
        assert_eq!(authorize(&[], None, Scope::Admin), Ok(()));
        assert_eq!(authorize(&keys, None, Scope::Read).unwrap_err().status, 401);
        assert_eq!(authorize(&keys, Some("wrong-key-0123456789"), Scope::Read).unwrap_err().status, 401);
        assert_eq!(authorize(&keys, Some("read-key-0123456789"), Scope::Read), Ok(()));
        assert_eq!(authorize(&keys, Some("read-key-0123456789"), Scope::Publish).unwrap_err().status, 403);
        assert_eq!(authorize(&keys, Some("admin-key-0123456789"), Scope::Publish), Ok(()));
    }
}
