//! `auth = "proxy"` and `subscribe_proxy`: the application decides who connects and who
//! subscribes. wsgate POSTs a JSON request to the application's URL and acts on its JSON
//! answer (docs/auth.md has both formats).
//!
//! The reactor never waits: requests go to a bounded queue served by at most
//! `max_connections` helper threads, each with one keep-alive connection to the
//! application (spawned as the queue needs them). A request still queued past its deadline is
//! not sent; a full queue answers at once. Every request is answered exactly once — allowed,
//! denied, or failed (busy, timed out, unreachable, a bad answer) — through the reply the
//! loop gave it, which posts it to the connection's worker.
//!
//! What goes to the application keeps its sources apart (the mistake Centrifugo fixed in
//! 6.9): `headers` and `cookies` are only ever taken from the real HTTP request (by name,
//! from `headers` and `cookies` in `[proxy]`); what wsgate itself knows (the address, TLS,
//! the route) are fields of their own; what a client sends in a message is `data`, and
//! never becomes a header.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::jwt::{info_claim, topics_claim, user_claim};
use super::Identity;
use crate::http::request::Request;

/// The longest `reason` an application may give (it goes into a response body or an error
/// message).
pub const MAX_REASON: usize = 256;

/// `[proxy]`: where the application is, and how much may wait for it.
#[derive(Debug)]
pub struct Settings {
    pub connect_url: Option<String>,
    pub subscribe_url: Option<String>,
    /// From the request's submission to its answer (queueing included).
    pub timeout: Duration,
    /// Helper threads, each with one keep-alive connection.
    pub max_connections: usize,
    /// Requests queued for a thread; more are answered "busy" at once.
    pub max_pending: usize,
    /// Request headers forwarded (lower case).
    pub headers: Box<[String]>,
    /// Cookies forwarded, by name.
    pub cookies: Box<[String]>,
    pub max_answer_size: usize,
    /// The application's UNIX socket: the URLs' requests go there (their host is the
    /// `Host`), not over TCP.
    pub unix_socket: Option<PathBuf>,
    /// Headers added to every request (say, a key by which the application knows the caller).
    pub request_headers: Box<[(String, String)]>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_url: None,
            subscribe_url: None,
            timeout: Duration::from_secs(1),
            max_connections: 16,
            max_pending: 1024,
            headers: Box::new([]),
            cookies: Box::new([]),
            max_answer_size: 16 << 10,
            unix_socket: None,
            request_headers: Box::new([]),
        }
    }
}

/// Which question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Subscribe,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Subscribe => "subscribe",
        }
    }
}

/// Why there is no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `max_pending` requests were already waiting.
    Busy,
    /// No answer within `timeout`.
    Timeout,
    /// Unreachable, an HTTP error, or an answer that is not one.
    Error,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Busy => "busy",
            Failure::Timeout => "timeout",
            Failure::Error => "error",
        }
    }
}

/// The application's decision, or why there is none.
#[derive(Debug)]
pub enum Outcome {
    /// Allowed; a connect answer names the user (with what else it chose).
    Allow(Option<Identity>),
    /// Denied: the HTTP status (connect) or error code (subscribe), and why.
    Deny {
        status: u16,
        reason: String,
    },
    Failed(Failure, String),
}

impl Outcome {
    /// The metrics' name of the result.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Allow(_) => "allow",
            Outcome::Deny { .. } => "deny",
            Outcome::Failed(f, _) => f.name(),
        }
    }
}

/// An outcome and how long it took from submission.
#[derive(Debug)]
pub struct Answer {
    pub kind: Kind,
    pub outcome: Outcome,
    pub took: Duration,
}

/// Where the answer goes (the loop's: it posts it to the connection's worker).
pub type Reply = Box<dyn FnOnce(Answer) + Send>;

/// One request: answered exactly once, by the thread that ran it, or on drop (a queue
/// emptied by a reload or the end).
struct Job {
    kind: Kind,
    body: Vec<u8>,
    submitted: Instant,
    deadline: Instant,
    reply: Option<Reply>,
}

impl Job {
    fn answer(&mut self, outcome: Outcome, now: Instant) {
        if let Some(reply) = self.reply.take() {
            reply(Answer { kind: self.kind, outcome, took: now.saturating_duration_since(self.submitted) });
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // off the reactor: no turn's clock here
        let now = Instant::now();
        self.answer(Outcome::Failed(Failure::Error, "the auth proxy was stopped".into()), now);
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The application's proxy: its settings and helper threads, shared by the routes (and the
/// workers) that use it; the threads end when the last holder drops it (a reload).
#[derive(Debug)]
pub struct Proxy {
    pub settings: Arc<Settings>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Proxy {
    pub fn new(settings: Settings) -> Proxy {
        Proxy { settings: Arc::new(settings), shared: Arc::default() }
    }

    /// Queues a request; `reply` gets its answer, on a helper thread or (when the queue is
    /// full, or no thread can start) here, at once.
    pub fn submit(&self, kind: Kind, body: Vec<u8>, now: Instant, reply: Reply) {
        let mut job = Job { kind, body, submitted: now, deadline: now + self.settings.timeout, reply: Some(reply) };
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.jobs.len() >= self.settings.max_pending {
            drop(queue);
            let why = format!("the auth proxy is busy ({} requests waiting)", self.settings.max_pending);
            job.answer(Outcome::Failed(Failure::Busy, why), now);
            return;
        }
        queue.jobs.push_back(job);
        if queue.jobs.len() > queue.idle && queue.threads < self.settings.max_connections {
            let (settings, shared) = (Arc::clone(&self.settings), Arc::clone(&self.shared));
            let started =
                std::thread::Builder::new().name("wsgate-proxy".into()).spawn(move || serve(&settings, &shared));
            match started {
                Ok(_) => queue.threads += 1,
                Err(e) => log::error!("auth proxy: cannot start a helper thread: {e}"),
            }
        }
        if queue.threads == 0 {
            // Nothing will run it: answer now (dropping the job answers it).
            let job = queue.jobs.pop_back();
            drop(queue);
            drop(job);
            return;
        }
        self.shared.ready.notify_one();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let jobs = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.closed = true;
            std::mem::take(&mut queue.jobs)
        };
        self.shared.ready.notify_all();
        drop(jobs); // each answers "stopped"
    }
}

/// How a helper thread reaches the application: HTTP(S) over TCP by ureq, or HTTP/1.1 on
/// the application's UNIX socket; either way one keep-alive connection.
enum Link {
    Tcp(ureq::Agent),
    Unix(Option<UnixStream>),
}

/// A helper thread: takes requests until the proxy is dropped.
fn serve(settings: &Settings, shared: &Shared) {
    let mut link = match settings.unix_socket {
        Some(_) => Link::Unix(None),
        None => Link::Tcp(
            ureq::AgentBuilder::new()
                .max_idle_connections(1)
                .max_idle_connections_per_host(1)
                .redirects(0)
                .timeout(settings.timeout)
                .build(),
        ),
    };
    loop {
        let mut job = {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if queue.closed {
                    queue.threads -= 1;
                    return;
                }
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                queue.idle += 1;
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                queue.idle -= 1;
            }
        };
        #[allow(clippy::disallowed_methods)] // a helper thread's own clock
        let now = Instant::now();
        let outcome = if now >= job.deadline {
            Outcome::Failed(Failure::Timeout, "the auth proxy did not answer in time (queued)".into())
        } else {
            ask(settings, &mut link, &job, now)
        };
        #[allow(clippy::disallowed_methods)]
        let done = Instant::now();
        job.answer(outcome, done);
    }
}

/// POSTs one request and reads its answer (blocking, bounded by the job's deadline).
fn ask(settings: &Settings, link: &mut Link, job: &Job, now: Instant) -> Outcome {
    let url = match job.kind {
        Kind::Connect => settings.connect_url.as_deref(),
        Kind::Subscribe => settings.subscribe_url.as_deref(),
    };
    let Some(url) = url else {
        return Outcome::Failed(Failure::Error, format!("no {}_url in [proxy]", job.kind.name()));
    };
    let limit = settings.max_answer_size;
    let body = match (link, &settings.unix_socket) {
        (Link::Unix(conn), Some(path)) => post_unix(settings, path, conn, url, &job.body, job.deadline),
        (Link::Tcp(agent), _) => post_tcp(settings, agent, url, &job.body, job.deadline - now),
        (Link::Unix(_), None) => Err(Answerless::Failed("no unix_socket".into())),
    };
    #[allow(clippy::disallowed_methods)]
    let timed_out = Instant::now() >= job.deadline;
    match body {
        Ok(body) => match job.kind {
            Kind::Connect => connect_answer(&body, super::unix_now()),
            Kind::Subscribe => subscribe_answer(&body),
        },
        Err(Answerless::Status(code)) => {
            Outcome::Failed(Failure::Error, format!("the auth proxy answered HTTP {code}"))
        }
        Err(_) if timed_out => Outcome::Failed(Failure::Timeout, "the auth proxy did not answer in time".into()),
        Err(Answerless::TooLarge) => {
            Outcome::Failed(Failure::Error, format!("the auth proxy's answer is over max_answer_size ({limit} bytes)"))
        }
        Err(Answerless::Failed(why)) => Outcome::Failed(Failure::Error, format!("the auth proxy: {why}")),
    }
}

/// Why a request got no answer to parse.
pub enum Answerless {
    /// An HTTP status other than 2xx.
    Status(u16),
    TooLarge,
    Failed(String),
}

fn post_tcp(
    settings: &Settings,
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Answerless> {
    let limit = settings.max_answer_size;
    let mut request = agent.post(url).timeout(timeout).set("Content-Type", "application/json");
    for (name, value) in settings.request_headers.iter() {
        request = request.set(name, value);
    }
    let response = request.send_bytes(body).map_err(|e| match e {
        ureq::Error::Status(code, _) => Answerless::Status(code),
        other => Answerless::Failed(other.to_string()),
    })?;
    let mut answer = Vec::new();
    response
        .into_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(|e| Answerless::Failed(e.to_string()))?;
    if answer.len() > limit {
        return Err(Answerless::TooLarge);
    }
    Ok(answer)
}

/// HTTP/1.1 on the application's UNIX socket, kept open between requests. A kept connection
/// the application closed meanwhile is found when nothing comes back: then once more on a
/// new one.
fn post_unix(
    settings: &Settings,
    path: &Path,
    conn: &mut Option<UnixStream>,
    url: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Answerless> {
    let limit = settings.max_answer_size;
    let parsed = url::Url::parse(url).map_err(|e| Answerless::Failed(format!("{url}: {e}")))?;
    let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let host = parsed.host_str().unwrap_or("localhost");
    let mut request =
        format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n").into_bytes();
    for (name, value) in settings.request_headers.iter() {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    for _ in 0..2 {
        let reused = conn.is_some();
        let stream = match conn {
            Some(stream) => stream,
            None => conn
                .insert(UnixStream::connect(path).map_err(|e| Answerless::Failed(format!("{}: {e}", path.display())))?),
        };
        #[allow(clippy::disallowed_methods)]
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        match exchange(stream, &request, limit) {
            Ok((answer, keep)) => {
                if !keep {
                    *conn = None;
                }
                return Ok(answer);
            }
            Err(Exchange::Stale) if reused => *conn = None,
            Err(Exchange::Stale) => {
                *conn = None;
                return Err(Answerless::Failed("the connection closed without an answer".into()));
            }
            Err(Exchange::Failed(why)) => {
                *conn = None;
                return Err(why);
            }
        }
    }
    Err(Answerless::Failed("the connection closed without an answer".into()))
}

/// Why [`exchange`] has no answer.
pub enum Exchange {
    /// Closed before a byte of the answer (a kept connection the application let go).
    Stale,
    Failed(Answerless),
}

/// One request and its answer on `stream` (the application's UNIX socket; public for the
/// fuzz target): the body, at most `limit` bytes, and whether the connection may be kept.
pub fn exchange<S: Read + std::io::Write>(
    stream: &mut S,
    request: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), Exchange> {
    let failed = |e: std::io::Error| Exchange::Failed(Answerless::Failed(e.to_string()));
    match stream.write_all(request) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {
            return Err(Exchange::Stale)
        }
        Err(e) => return Err(failed(e)),
    }
    let head_limit = 8 << 10;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (status, head_len, length, keep) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(Exchange::Stale),
            Ok(0) => return Err(Exchange::Failed(Answerless::Failed("the answer was cut short".into()))),
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Exchange::Stale),
            Err(e) => return Err(failed(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let header =
                    |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                if header("transfer-encoding").is_some() {
                    let why = "a chunked answer: send Content-Length".to_string();
                    return Err(Exchange::Failed(Answerless::Failed(why)));
                }
                let length = header("content-length")
                    .map(|v| std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok()))
                    .map(|l| l.ok_or_else(|| Exchange::Failed(Answerless::Failed("a bad Content-Length".into()))))
                    .transpose()?;
                let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
                    || response.version == Some(0);
                break (response.code.unwrap_or(0), head_len, length, !close && length.is_some());
            }
            Ok(httparse::Status::Partial) if buf.len() < head_limit => {}
            Ok(httparse::Status::Partial) => {
                return Err(Exchange::Failed(Answerless::Failed("an answer head over 8 KiB".into())))
            }
            Err(e) => return Err(Exchange::Failed(Answerless::Failed(format!("not an HTTP answer ({e})")))),
        }
    };
    if !(200..300).contains(&status) {
        return Err(Exchange::Failed(Answerless::Status(status)));
    }
    let mut answer = buf.split_off(head_len);
    match length {
        Some(length) if length > limit => return Err(Exchange::Failed(Answerless::TooLarge)),
        Some(length) => {
            if answer.len() > length {
                return Err(Exchange::Failed(Answerless::Failed("more bytes than its Content-Length".into())));
            }
            let have = answer.len();
            answer.resize(length, 0);
            stream.read_exact(&mut answer[have..]).map_err(failed)?;
        }
        None => {
            // Delimited by the end of the connection.
            let room = (limit + 1).saturating_sub(answer.len()) as u64;
            stream.take(room).read_to_end(&mut answer).map_err(failed)?;
            if answer.len() > limit {
                return Err(Exchange::Failed(Answerless::TooLarge));
            }
        }
    }
    Ok((answer, keep))
}

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

    #[test]
    fn a_full_queue_answers_busy_and_a_dropped_proxy_answers_the_rest() {
        use std::sync::mpsc;
        // An application that takes the connection and never answers.
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/connect", app.local_addr().unwrap());
        let settings = Settings {
            connect_url: Some(url),
            max_connections: 1,
            max_pending: 2,
            timeout: Duration::from_secs(30),
            ..Settings::default()
        };
        let proxy = Proxy::new(settings);
        let (tx, rx) = mpsc::channel();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let submit = |proxy: &Proxy| {
            let tx = tx.clone();
            proxy.submit(Kind::Connect, b"{}".to_vec(), now, Box::new(move |a| tx.send(a.outcome.result()).unwrap()));
        };
        submit(&proxy);
        let (held, _) = app.accept().unwrap(); // the one thread is busy with it
        for _ in 0..3 {
            submit(&proxy);
        }
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "busy");
        drop(proxy); // the two queued ones are answered, not lost
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "error");
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "error");
        drop(held); // and the one in flight fails once its connection does
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "error");
    }

    /// An application's side of a connection: what it answers, and what it was sent.
    struct Scripted<'a> {
        answer: &'a [u8],
        sent: Vec<u8>,
    }

    impl Read for Scripted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // A few bytes at a time, as a socket may give them.
            let n = buf.len().min(self.answer.len()).min(7);
            buf[..n].copy_from_slice(&self.answer[..n]);
            self.answer = &self.answer[n..];
            Ok(n)
        }
    }

    impl std::io::Write for Scripted<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn over_unix(answer: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let mut app = Scripted { answer, sent: Vec::new() };
        let result = exchange(&mut app, b"POST /c HTTP/1.1\r\n\r\n", 64);
        assert_eq!(app.sent, b"POST /c HTTP/1.1\r\n\r\n");
        result.map_err(|e| match e {
            Exchange::Stale => "stale".to_string(),
            Exchange::Failed(Answerless::Status(code)) => format!("status {code}"),
            Exchange::Failed(Answerless::TooLarge) => "too large".to_string(),
            Exchange::Failed(Answerless::Failed(why)) => why,
        })
    }

    #[test]
    fn answers_on_a_unix_socket() {
        let ok = over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"allow\":true}").unwrap();
        assert_eq!(ok, (br#"{"allow":true}"#.to_vec(), true));
        let closing = over_unix(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(closing, (b"{}".to_vec(), false), "not kept");
        let to_the_end = over_unix(b"HTTP/1.0 200 OK\r\n\r\n{}").unwrap();
        assert_eq!(to_the_end, (b"{}".to_vec(), false));
        assert_eq!(over_unix(b""), Err("stale".into()), "a kept connection let go");
        assert_eq!(over_unix(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"), Err("status 503".into()));
        assert_eq!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"), Err("too large".into()));
        let endless = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(over_unix(&endless), Err("too large".into()), "bounded without a length too");
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            .unwrap_err()
            .contains("Content-Length"));
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").unwrap_err().contains("Content-Length"));
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").is_err(), "cut short");
        assert!(over_unix(b"SSH-2.0-OpenSSH\r\n").unwrap_err().contains("not an HTTP answer"));
        let huge_head = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert!(over_unix(&huge_head).unwrap_err().contains("8 KiB"));
    }

    #[test]
    fn no_thread_no_wait() {
        let proxy = Proxy::new(Settings { max_connections: 0, ..Settings::default() });
        let (tx, rx) = std::sync::mpsc::channel();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        proxy.submit(Kind::Subscribe, Vec::new(), now, Box::new(move |a| tx.send(a.outcome.result()).unwrap()));
        assert_eq!(rx.try_recv().unwrap(), "error");
    }
}
