//! What goes to the application and what comes back: the JSON bodies of the connect and
//! subscribe requests, and the answers, checked by the same rules as a token's claims.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::super::jwt::{info_claim, topics_claim, user_claim};
use super::super::Identity;
use super::{Failure, Outcome, Settings, MAX_REASON};
use crate::http::request::Request;

#[derive(Deserialize)]
struct RawAnswer<'a> {
    allow: Option<bool>,
    status: Option<serde_json::Value>,
    reason: Option<serde_json::Value>,
    user: Option<serde_json::Value>,
    expires: Option<serde_json::Value>,
    topics: Option<serde_json::Value>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
}

fn bad_answer(why: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(Failure::Error, format!("the auth proxy's answer: {why}"))
}

/// A denial's status (a 4xx, 403 by default) and reason (a short line).
fn denial(raw: &RawAnswer<'_>) -> Outcome {
    let status = match &raw.status {
        None => 403,
        Some(v) => match v.as_u64() {
            Some(s @ 400..=499) => s as u16,
            _ => return bad_answer("\"status\": expected 400 to 499"),
        },
    };
    let reason = match &raw.reason {
        None => "refused by the application".to_string(),
        Some(serde_json::Value::String(s)) if s.len() > MAX_REASON => {
            return bad_answer(format_args!("\"reason\": longer than {MAX_REASON} bytes"))
        }
        Some(serde_json::Value::String(s)) if s.chars().any(char::is_control) => {
            return bad_answer("\"reason\": control characters")
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return bad_answer("\"reason\": not a string"),
    };
    Outcome::Deny { status, reason }
}

/// The application's answer to a connect request (`now`: Unix seconds, for `expires`).
pub fn connect_answer(body: &[u8], now: u64) -> Outcome {
    let raw: RawAnswer<'_> = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(e) => return bad_answer(format_args!("not a JSON object ({e})")),
    };
    match raw.allow {
        None => return bad_answer("no \"allow\""),
        Some(false) => return denial(&raw),
        Some(true) => {}
    }
    let user = match raw.user {
        None => return bad_answer("an allowed connection needs its \"user\""),
        Some(user) => match user_claim(Some(user), "user") {
            Ok(user) => user,
            Err(r) => return bad_answer(r.reason),
        },
    };
    let expires = match raw.expires.as_ref().map(|v| v.as_u64()) {
        None => None,
        Some(Some(e)) if e > now => Some(e),
        Some(Some(_)) => return bad_answer("\"expires\" has passed"),
        Some(None) => return bad_answer("\"expires\": expected Unix seconds"),
    };
    let topics = match topics_claim(raw.topics) {
        Ok(topics) => topics,
        Err(r) => return bad_answer(r.reason),
    };
    let info = match info_claim(raw.info) {
        Ok(info) => info,
        Err(r) => return bad_answer(r.reason),
    };
    Outcome::Allow(Some(Identity { user, expires, topics, info }))
}

/// The application's answer to a subscribe request.
pub fn subscribe_answer(body: &[u8]) -> Outcome {
    let raw: RawAnswer<'_> = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(e) => return bad_answer(format_args!("not a JSON object ({e})")),
    };
    match raw.allow {
        None => bad_answer("no \"allow\""),
        Some(false) => denial(&raw),
        Some(true) => Outcome::Allow(None),
    }
}

#[derive(Serialize)]
struct ConnectRequest<'a> {
    client: String,
    remote_addr: String,
    remote_port: u16,
    tls: bool,
    route: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    subprotocols: Vec<&'a str>,
    headers: BTreeMap<&'a str, String>,
    cookies: BTreeMap<&'a str, String>,
}

/// What the connect request carries about the upgrade.
pub struct Upgrade<'a> {
    pub client: u64,
    pub peer: SocketAddr,
    pub tls: bool,
    pub route: &'a str,
}

/// The connect request's body: the upgrade request's path, query, offered subprotocols, the
/// configured headers and cookies (from the request itself, nothing else), and what wsgate
/// knows of the client.
pub fn connect_request(settings: &Settings, req: &Request<'_, '_>, upgrade: &Upgrade<'_>) -> Vec<u8> {
    let mut headers = BTreeMap::new();
    for name in settings.headers.iter() {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect();
        if !values.is_empty() {
            headers.insert(name.as_str(), values.join(", "));
        }
    }
    let mut cookies = BTreeMap::new();
    if !settings.cookies.is_empty() {
        for h in req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("cookie")) {
            for pair in String::from_utf8_lossy(h.value).split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else { continue };
                if let Some(wanted) = settings.cookies.iter().find(|c| *c == name) {
                    cookies.entry(wanted.as_str()).or_insert_with(|| value.to_string());
                }
            }
        }
    }
    let request = ConnectRequest {
        client: upgrade.client.to_string(),
        remote_addr: upgrade.peer.ip().to_canonical().to_string(),
        remote_port: upgrade.peer.port(),
        tls: upgrade.tls,
        route: upgrade.route,
        path: req.path(),
        query: req.query(),
        subprotocols: req.list_elements("sec-websocket-protocol").filter_map(|p| std::str::from_utf8(p).ok()).collect(),
        headers,
        cookies,
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

#[derive(Serialize)]
struct SubscribeRequest<'a> {
    client: String,
    user: &'a str,
    route: &'a str,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// The subscribe request's body: who asks for which topic, and the client's own `data`.
pub fn subscribe_request(client: u64, user: &str, route: &str, topic: &str, data: Option<&RawValue>) -> Vec<u8> {
    serde_json::to_vec(&SubscribeRequest { client: client.to_string(), user, route, topic, data }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_answers() {
        let Outcome::Allow(Some(id)) = connect_answer(
            br#"{"allow":true,"user":"alice","expires":2000,"topics":["chat.*"],"info":{"name":"Alice"},"extra":1}"#,
            1000,
        ) else {
            panic!("allowed")
        };
        assert_eq!(&*id.user, "alice");
        assert_eq!(id.expires, Some(2000));
        assert!(id.allows_topic("chat.x") && !id.allows_topic("news"));
        assert_eq!(id.info.as_deref(), Some(r#"{"name":"Alice"}"#));
        let deny = |body: &[u8]| match connect_answer(body, 1000) {
            Outcome::Deny { status, reason } => (status, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(deny(br#"{"allow":false}"#), (403, "refused by the application".to_string()));
        assert_eq!(deny(br#"{"allow":false,"status":401,"reason":"log in"}"#), (401, "log in".to_string()));
        let failed = |body: &[u8]| match connect_answer(body, 1000) {
            Outcome::Failed(Failure::Error, why) => why,
            other => panic!("{other:?}"),
        };
        assert!(failed(b"").contains("not a JSON object"));
        assert!(failed(br#"{"user":"a"}"#).contains("no \"allow\""));
        assert!(failed(br#"{"allow":true}"#).contains("needs its \"user\""));
        assert!(failed(br#"{"allow":true,"user":"a\nb"}"#).contains("control characters"));
        assert!(failed(br#"{"allow":true,"user":"a","expires":999}"#).contains("has passed"));
        assert!(failed(br#"{"allow":true,"user":"a","expires":"soon"}"#).contains("Unix seconds"));
        assert!(failed(br#"{"allow":true,"user":"a","info":[1]}"#).contains("info"));
        assert!(failed(br#"{"allow":true,"user":"a","topics":"x"}"#).contains("topics"));
        assert!(failed(br#"{"allow":false,"status":200}"#).contains("400 to 499"));
        assert!(failed(br#"{"allow":false,"status":503}"#).contains("400 to 499"));
        assert!(failed(br#"{"allow":false,"reason":"a\r\nSet-Cookie: x"}"#).contains("control"));
        let long = format!(r#"{{"allow":false,"reason":"{}"}}"#, "x".repeat(MAX_REASON + 1));
        assert!(failed(long.as_bytes()).contains("longer than"));
    }

    #[test]
    fn subscribe_answers() {
        assert!(matches!(subscribe_answer(br#"{"allow":true}"#), Outcome::Allow(None)));
        assert!(matches!(subscribe_answer(br#"{"allow":false,"status":404}"#), Outcome::Deny { status: 404, .. }));
        assert!(matches!(subscribe_answer(br#"[]"#), Outcome::Failed(Failure::Error, _)));
    }

    #[test]
    fn requests_keep_headers_cookies_and_data_apart() {
        let head = b"GET /chat/a?x=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1; session=s1; b=2\r\nX-Trace: t\r\n\
            Cookie: other=o\r\nX-Trace: u\r\nSec-WebSocket-Protocol: p1, p2\r\nUser-Agent: ua\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; crate::http::request::MAX_HEADERS];
        let limits = crate::http::request::HeadLimits { max_head_bytes: 4096, max_headers: 16 };
        let (req, _) = crate::http::request::parse_request(head, &mut storage, &limits).unwrap().unwrap();
        let settings = Settings {
            headers: Box::new(["x-trace".into(), "origin".into()]),
            cookies: Box::new(["session".into(), "other".into()]),
            ..Settings::default()
        };
        let upgrade = Upgrade { client: 7, peer: "[::ffff:10.0.0.1]:4000".parse().unwrap(), tls: true, route: "/chat" };
        let body: serde_json::Value = serde_json::from_slice(&connect_request(&settings, &req, &upgrade)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "client": "7", "remote_addr": "10.0.0.1", "remote_port": 4000, "tls": true,
                "route": "/chat", "path": "/chat/a", "query": "x=1", "subprotocols": ["p1", "p2"],
                "headers": {"x-trace": "t, u"},
                "cookies": {"session": "s1", "other": "o"},
            })
        );
        let data = RawValue::from_string(r#"{"headers":{"cookie":"forged"}}"#.into()).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&subscribe_request(7, "alice", "/ps", "private.x", Some(&data))).unwrap();
        assert_eq!(body["data"]["headers"]["cookie"], "forged");
        assert!(body.get("headers").is_none());
    }
}
