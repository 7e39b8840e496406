//! A whole connection over arbitrary bytes: the client's byte stream (a handshake, frames,
//! compressed frames, legacy frames, garbage) cut into arbitrary reads, through the code the
//! server runs — [`Connection::drive`] with the loop's readiness, its deliveries and its
//! deadlines — on an in-memory transport, with a synthetic clock.
//!
//! Input: four bytes that pick the run, then the client's bytes:
//! - `pick`: a request the client sends first (none: the bytes are all there is; an upgrade to
//!   echo, echo with permessage-deflate dedicated or shared, chat, pubsub, the broker; a
//!   hixie-76 upgrade, whose key3 is the first 8 bytes of the stream);
//! - `chunking`: the sizes of the reads (0: everything in one read);
//! - `window`: how the client reads what the server writes (0: at once; 255: never; else that
//!   many times 16 bytes per turn);
//! - `tick`: how far the clock moves per turn, in 10 ms steps (the low 7 bits); the top bit
//!   set, others are taken to have queued output for it in every turn, so it never writes
//!   its own as its drive ends (clear: it does, as the loop has a lone connection do it).
//!
//! Invariants:
//! - never a panic;
//! - the connection ends: once the client has sent everything and its FIN, the connection
//!   closes within a bounded number of turns and deadlines (every phase has one);
//! - what the server wrote is well formed: HTTP responses, and after a `101` with
//!   `Sec-WebSocket-Accept` only unmasked RFC 6455 frames with valid opcodes and RSV bits
//!   (RSV1 on a message's first frame only with permessage-deflate), control frames whole
//!   and at most 125 bytes, unfragmented uncompressed text that is UTF-8, and a close frame
//!   with a code a server may send and a UTF-8 reason, after which nothing;
//! - memory is bounded by the limits: queued output stays under `max_queued` plus what one
//!   drive may add, unconsumed input under a frame and its header.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apps::Action;
use crate::backend::FailureLog;
use crate::broker::Broker;
use crate::buffer::Pools;
use crate::config::Config;
use crate::conn_id::key_of;
use crate::connection::{Connection, Ctx, Progress, Ready};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pubsub::Topics;
use crate::route::Routes;
use crate::server::fanout::Forms;
use crate::transport::memory::MemoryStream;
use crate::transport::Transport;
use crate::ws::close::parse_close_payload;
use crate::ws::deflate::SharedCodecs;
use crate::ws::frame::{parse_header, FrameLimits, Opcode};

/// The server the fuzzer talks to: small limits, so that the fuzzer reaches them.
const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:1"]

[limits]
max_message_size = "64KiB"
max_frame_size = "64KiB"
handshake_timeout = "2s"
close_timeout = "1s"
idle_timeout = "20s"
ping_interval = "4s"
pong_timeout = "2s"
write_timeout = "3s"
backpressure_high = "32KiB"
max_queued = "256KiB"

[[route]]
path = "/echo"
app = "echo"
origins = ["http://example.com"]
legacy = ["hixie-76", "hixie-75"]
compression = "dedicated"
compression_threshold = 0

[[route]]
path = "/shared"
app = "echo"
compression = "shared"
compression_threshold = 0

[[route]]
path = "/chat"
app = "chat"
exclude_sender = false

[[route]]
path = "/pubsub"
app = "pubsub"
presence = true

[[route]]
path = "/broker"
app = "broker"

[jwt]
secret = "fuzzing secret, 32 bytes or more"
leeway = "0s"

[[route]]
path = "/authed"
app = "pubsub"
auth = "jwt"
presence = true
private = ["p*"]
rate_operations = { rate = 5, burst = 10 }
rate_bytes = { rate = "4KiB", burst = "16KiB", action = "close" }
max_connections_per_ip = { max = 100000 }
rate_handshakes_per_ip = { rate = 1000000, burst = 1000000 }
rate_messages_per_user = { rate = 20, burst = 40 }

[[route]]
path = "/limited"
app = "echo"
rate_messages = { rate = 5, burst = 20 }

[proxy]
connect_url = "http://127.0.0.1:1/connect"
subscribe_url = "http://127.0.0.1:1/subscribe"

[[route]]
path = "/proxied"
app = "echo"
auth = "proxy"
origins = ["http://example.com"]
legacy = ["hixie-76"]

[[route]]
path = "/asked"
app = "pubsub"
auth = "proxy"
subscribe_proxy = ["p*"]
"#;

/// HS256 with the configuration's secret: `{"sub":"fuzz","exp":4000000000,"topics":["a*","p*"],
/// "info":{"n":1}}`. (The seeds also hold a channel token for "p1".)
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmdXp6IiwiZXhwIjo0MDAwMDAwMDAwLCJ0b3BpY3MiOlsiYSoiLCJwKiJdLCJpbmZvIjp7Im4iOjF9fQ.r7UL6qPyf_uS5B8-piPOJjqlgZhfqEaDlxPXXzJlijA";

/// Requests `pick` puts before the client's bytes.
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
const DEFLATE: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

fn prelude(pick: u8) -> String {
    let upgrade = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: fuzz\r\n{UPGRADE}{extra}\r\n");
    // The high bit: the routes behind tokens and rate limits (the low bits as the committed
    // corpus was written).
    if pick & 0x80 != 0 {
        return match pick % 8 {
            0 => upgrade(&format!("/authed?token={TOKEN}"), ""),
            1 => upgrade("/authed", ""),
            2 => upgrade("/authed", &format!("Authorization: Bearer {TOKEN}\r\n")),
            3 => upgrade("/limited", ""),
            4 => upgrade("/proxied?q=1", "Cookie: a=1\r\n"),
            5 => upgrade("/asked", ""),
            6 => "GET /proxied HTTP/1.1\r\nHost: fuzz\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
                  Origin: http://example.com\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n"
                .to_string(),
            _ => upgrade("/proxied", DEFLATE),
        };
    }
    match pick % 8 {
        0 => String::new(),
        1 => upgrade("/echo", ""),
        2 => upgrade("/echo", DEFLATE),
        3 => upgrade("/shared", DEFLATE),
        4 => upgrade("/chat", ""),
        5 => upgrade("/pubsub", ""),
        6 => upgrade("/broker?RegisterToken=t1", ""),
        _ => "GET /echo HTTP/1.1\r\nHost: fuzz\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
              Origin: http://example.com\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n\
              Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n"
            .to_string(),
    }
}

/// Most turns the connection may take to end once the client is done (each is a readiness
/// event or a passed deadline).
const MAX_TURNS_TO_END: usize = 10_000;
/// What one drive may queue past `max_queued` before the check after it closes the
/// connection: a read budget's worth of echoes, an inflated message, a close frame.
const QUEUE_SLACK: usize = 512 * 1024 + 64 * 1024 + 256;

struct Server {
    routes: Routes,
    route_count: usize,
    limits: Arc<Limits>,
}

thread_local! {
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

pub fn connection(data: &[u8]) {
    let [pick, chunking, window, tick, stream @ ..] = data else { return };
    SERVER.with(|server| {
        let mut server = server.borrow_mut();
        let server = server.get_or_insert_with(|| {
            let config = Config::parse(CONFIG).expect("the fuzz target's configuration");
            Server {
                route_count: config.routes.len(),
                routes: Routes::new(config.routes.clone()),
                limits: Arc::new(config.limits),
            }
        });
        let mut bytes = prelude(*pick).into_bytes();
        bytes.extend_from_slice(stream);
        Run::new(server, *window, *tick).go(&bytes, *chunking);
    });
}

/// One connection and the loop's state around it.
struct Run<'s> {
    server: &'s Server,
    conn: Connection,
    now: Instant,
    tick: Duration,
    /// Its readable turns are [`Ready::write_after`] ones (see the module's `tick`).
    write_after: bool,
    /// Bytes the client reads per turn (`None`: all; `Some(0)`: it never reads).
    window: Option<usize>,
    pools: Pools,
    topics: Topics,
    broker: Broker,
    metrics: Metrics,
    codecs: SharedCodecs,
    failures: FailureLog,
    actions: Vec<Action>,
    /// What the connection asked the application, to be answered after its drive.
    asked: Vec<(crate::auth::proxy::Kind, u32)>,
    /// Picks the next answer.
    answers: u8,
    deadline: Option<Instant>,
    /// Drive again without new readiness (the connection said Busy or Again).
    again: bool,
    closed: bool,
    written: Vec<u8>,
}

impl<'s> Run<'s> {
    #[allow(clippy::disallowed_methods)] // the fuzzer is the loop's edge; after this, time is synthetic
    fn new(server: &'s Server, window: u8, tick: u8) -> Run<'s> {
        let now = Instant::now();
        let answers = window;
        let window = match window {
            0 => None,
            255 => Some(0),
            w => Some(usize::from(w) * 16),
        };
        let room = window.unwrap_or(usize::MAX);
        let transport = Transport::Memory(Box::new(MemoryStream::new(room)));
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        let id = crate::conn_id::compose(0, 0, 1);
        Run {
            server,
            conn: Connection::new(id, transport, peer, now, Arc::clone(&server.limits), false),
            now,
            tick: Duration::from_millis(u64::from(tick & 0x7f) * 10),
            write_after: tick & 0x80 == 0,
            window,
            pools: Pools::new(1 << 20),
            topics: Topics::new(),
            broker: Broker::new(false),
            metrics: Metrics::new(server.route_count),
            codecs: SharedCodecs::default(),
            failures: FailureLog::default(),
            actions: Vec::new(),
            asked: Vec::new(),
            answers,
            deadline: None,
            again: false,
            closed: false,
            written: Vec::new(),
        }
    }

    fn go(mut self, bytes: &[u8], chunking: u8) {
        // The accept's drive starts the handshake clock.
        self.turn(Ready { corked: true, ..Ready::default() });
        let mut seed = u32::from(chunking).wrapping_mul(2_654_435_761) | 1;
        let mut rest = bytes;
        while !rest.is_empty() && !self.closed {
            let n = if chunking == 0 {
                rest.len()
            } else {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                1 + (seed as usize) % (usize::from(chunking) * 8)
            };
            let (piece, after) = rest.split_at(n.min(rest.len()));
            rest = after;
            self.memory().feed(piece);
            self.turn(Ready { readable: true, corked: true, write_after: self.write_after, ..Ready::default() });
            self.now += self.tick;
        }
        // The client is done: its FIN, then turns (readiness, deadlines) until the end.
        self.memory().finish();
        let mut ready = Ready { readable: true, corked: true, write_after: self.write_after, ..Ready::default() };
        for _ in 0..MAX_TURNS_TO_END {
            if self.closed {
                break;
            }
            self.turn(ready);
            ready = Ready { corked: true, ..Ready::default() };
            if !self.again {
                match self.deadline {
                    Some(at) => {
                        self.now = self.now.max(at);
                        ready.timer = true;
                    }
                    None => break,
                }
            }
        }
        assert!(self.closed, "the connection did not end (state {}, deadline {:?})", self.conn.state(), self.deadline);
        let departure = self.conn.depart(self.now, &mut self.pools, &mut self.codecs, &self.server.routes);
        if let Some(code) = departure.close_sent {
            assert!(crate::ws::close::is_valid_code(code), "close code {code} sent");
        }
        check_output(&self.written);
    }

    fn memory(&mut self) -> &mut MemoryStream {
        self.conn.memory_mut().expect("an in-memory transport")
    }

    /// One turn of the loop for this connection: the drive with what happened, what it asked
    /// the loop to do, and the end-of-turn write.
    fn turn(&mut self, mut ready: Ready) {
        if let Some(n) = self.window.filter(|&n| n > 0) {
            self.memory().open_window(n);
            ready.writable = true;
        } else if self.window.is_none() {
            ready.writable = true;
        }
        if self.deadline.is_some_and(|at| at <= self.now) {
            ready.timer = true;
        }
        let mut turn = self.drive(ready);
        self.deliver();
        if !self.asked.is_empty() && turn.progress != Progress::Closed {
            turn = self.answer_proxy();
            self.deliver();
        }
        let mut progress = turn.progress;
        let mut deadline = turn.deadline;
        if progress != Progress::Closed {
            let end = self.drive(Ready::default());
            progress = end.progress;
            deadline = end.deadline;
        }
        self.closed = progress == Progress::Closed;
        self.again = matches!(progress, Progress::Busy | Progress::Again) || turn.progress == Progress::Busy;
        self.deadline = deadline.map(|d| d.instant(self.now));
        let output = self.memory().take_output();
        self.written.extend_from_slice(&output);
        let (queued, unread) = self.conn.buffered();
        let limits = &self.server.limits;
        assert!(queued <= limits.max_queued + QUEUE_SLACK, "{queued} bytes queued");
        assert!(
            unread <= limits.max_frame_size + crate::ws::frame::MAX_HEADER_LEN + 512 * 1024,
            "{unread} bytes unread"
        );
    }

    /// The application's answers to what the connection asked (`[proxy]`), in turn: allowed
    /// (with a user and topics), denied, timed out, or never (the connection's deadline).
    fn answer_proxy(&mut self) -> crate::connection::Turn {
        use crate::auth::proxy::{Failure, Kind, Outcome};
        let mut turn = crate::connection::Turn { progress: Progress::Idle, deadline: None };
        for (kind, seq) in std::mem::take(&mut self.asked) {
            self.answers = self.answers.wrapping_add(1);
            let outcome = match self.answers % 4 {
                0 => Outcome::Allow(Some(crate::auth::Identity {
                    user: "fuzz".into(),
                    expires: None,
                    topics: Some(Box::new([glob::Pattern::new("p*").expect("a glob")])),
                    info: Some(r#"{"n":1}"#.into()),
                })),
                1 => Outcome::Deny { status: 401, reason: "no".into() },
                2 => Outcome::Failed(Failure::Timeout, "slow".into()),
                _ => continue,
            };
            let outcome = match (kind, outcome) {
                (Kind::Subscribe, Outcome::Allow(_)) => Outcome::Allow(None),
                (_, outcome) => outcome,
            };
            turn = self.with_cx(|conn, cx| match kind {
                Kind::Connect => conn.proxy_answered(cx, outcome),
                Kind::Subscribe => conn.app_proxy_answered(cx, seq, outcome),
            });
        }
        turn
    }

    fn drive(&mut self, ready: Ready) -> crate::connection::Turn {
        self.with_cx(|conn, cx| conn.drive(cx, ready))
    }

    /// Calls into the connection with the loop's context around it.
    fn with_cx<R>(&mut self, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R) -> R {
        let mut cx = Ctx {
            now: self.now,
            stamp: crate::stamp::Stamp::at(self.now),
            routes: &self.server.routes,
            limits: &self.server.limits,
            pools: &mut self.pools,
            backend_failures: &mut self.failures,
            topics: &mut self.topics,
            broker: &mut self.broker,
            metrics: &mut self.metrics,
            admin: None,
            plugins: None,
            actions: &mut self.actions,
            codecs: &mut self.codecs,
            fanout: 0,
            publish_spreads: false,
        };
        f(&mut self.conn, &mut cx)
    }

    /// What the connection's app asked the loop to deliver, delivered to it when it is a
    /// receiver (the only connection there is), in the form it takes.
    fn deliver(&mut self) {
        let key = key_of(self.conn.id());
        for action in std::mem::take(&mut self.actions) {
            let frame = match action {
                Action::AskProxy { kind, seq, .. } => {
                    self.asked.push((kind, seq));
                    continue;
                }
                Action::Publish { topic, frame, exclude, .. } => {
                    let member = self.topics.find(&topic).is_some_and(|t| self.topics.members(t).any(|k| k == key));
                    if !member || exclude == Some(key) {
                        continue;
                    }
                    frame
                }
                Action::SendTo { id, frame } if id == self.conn.id() => frame,
                Action::Route { keys, frame, .. } if keys.contains(&key) => frame,
                _ => continue,
            };
            let mut forms = Forms::new(&frame);
            let form = self.conn.frame_form(forms.payload_len());
            if let Some(frame) = forms.get(form, &mut self.codecs) {
                self.conn.deliver(self.now, &mut self.pools, frame);
            }
        }
    }
}

/// Checks what the server wrote (see the module's invariants).
fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    // A client that reads slowly may see only the beginning of what was sent before the
    // connection ended.
    let status = b"HTTP/1.1 ";
    assert!(out.starts_with(status) || status.starts_with(out), "output begins {:?}", &out[..out.len().min(16)]);
    if !out.starts_with(b"HTTP/1.1 101 ") {
        return;
    }
    let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let head_end = head_end + 4;
    let head = std::str::from_utf8(&out[..head_end]).expect("an ASCII head");
    if !head.contains("Sec-WebSocket-Accept: ") {
        return; // a hixie draft's handshake: its frames are the hixie fuzz target's
    }
    let deflate = head.contains("permessage-deflate");
    let limits = FrameLimits { allowed_rsv: if deflate { 0b0100_0000 } else { 0 }, ..FrameLimits::client(1 << 40) };
    let mut rest = &out[head_end..];
    let mut in_message = false;
    while !rest.is_empty() {
        let (header, len) = match parse_header(rest, &limits) {
            Ok(Some(parsed)) => parsed,
            // The client stopped reading and the connection ended mid-frame.
            Ok(None) => return,
            Err(e) => panic!("a malformed frame in the output: {e:?}"),
        };
        assert!(header.mask.is_none());
        let Some(payload) = rest.get(len..len + header.payload_len) else { return };
        rest = &rest[len + header.payload_len..];
        match header.opcode {
            Opcode::Close => {
                let close = parse_close_payload(payload).expect("a valid close payload");
                if let Some(code) = close.code {
                    assert!(crate::ws::close::is_valid_code(code), "close code {code} sent");
                }
                assert!(rest.is_empty(), "{} bytes after the close frame", rest.len());
            }
            Opcode::Ping | Opcode::Pong => assert!(header.payload_len <= 125 && header.fin),
            Opcode::Continuation => {
                assert!(in_message && header.rsv == 0, "a stray continuation frame");
                in_message = !header.fin;
            }
            Opcode::Text | Opcode::Binary => {
                assert!(!in_message, "a message begun inside another");
                in_message = !header.fin;
                if header.opcode == Opcode::Text && header.fin && header.rsv == 0 {
                    assert!(std::str::from_utf8(payload).is_ok(), "text that is not UTF-8");
                }
            }
        }
    }
}
