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

//!
//! Here: the queue and its helper threads. [`post`] carries a request to the application
//! (ureq over TCP, or [`unix_http`] on a UNIX socket); [`wire`] is what is sent and what an
//! answer may say.

mod post;
pub mod unix_http;
mod wire;

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Identity;
use post::{post_tcp, post_unix, Answerless};
pub use unix_http::{exchange, Exchange};
pub use wire::{connect_answer, connect_request, subscribe_answer, subscribe_request, Upgrade};

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

#[cfg(test)]
mod tests {
    use super::*;

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
