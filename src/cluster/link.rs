//! One connection to Redis, driven by the worker's reactor like any other socket: a
//! non-blocking connect, TLS for `rediss://` (rustls, the loop feeding it), AUTH and CLIENT
//! SETNAME, then commands written from a bounded buffer and replies decoded in place
//! (`redis_protocol::resp2::decode::decode_range`: ranges into our own read buffer, no copy).
//!
//! Every state has a deadline: the connect and the hello must finish within `ping_timeout`;
//! once up, a PING goes out every `ping_interval`, and a link with a command unanswered for
//! `ping_timeout` is dead (it is closed and made again): that is how a connection that
//! silently stopped delivering — a NAT that forgot it, a Redis that hangs — is found.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

use super::config::RedisAddr;
use super::wire;
use crate::io_step::{would_block, IoStep};

/// Bytes read per readiness event before the link yields to the loop's other sockets.
const READ_BUDGET: usize = 1 << 20;

/// The socket, plain or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::ClientConnection>),
}

impl Stream {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) | Stream::Tls(s, _) => s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No connection; the next attempt is at the link's `retry_at`.
    Down,
    /// Connecting, in the TLS handshake, or waiting for the hello's replies.
    Opening,
    Ready,
}

/// A reply or a pushed message, as ranges into the read buffer.
pub enum Reply<'a> {
    /// A pub/sub message: channel and payload.
    Message(&'a [u8], &'a [u8]),
    /// An answer to a command: the tag it was sent with ([`Link::send_tagged`]; 0 for the
    /// link's own) and the whole reply's RESP bytes, or an error's text.
    Answer(u64, Result<&'a [u8], String>),
}

pub struct Link {
    name: &'static str,
    token: Token,
    stream: Option<Stream>,
    pub phase: Phase,
    /// The commands this link sends first (AUTH, CLIENT SETNAME), and how many of their
    /// replies are still awaited.
    hello: Vec<u8>,
    hello_replies: usize,
    rbuf: Vec<u8>,
    /// Commands waiting for the socket (plaintext: TLS encrypts as it writes).
    wbuf: Vec<u8>,
    /// Replies awaited, and since when the link has been waiting without progress.
    outstanding: u64,
    /// The tags of the replies awaited, in order (a tag and how many replies carry it).
    tags: VecDeque<(u64, u64)>,
    /// Tags of commands that were never answered: the link failed with them outstanding.
    pub lost_tags: Vec<u64>,
    progress_at: Instant,
    ping_at: Instant,
    pub retry_at: Option<Instant>,
    backoff: Duration,
    /// The most a single reply may be (the largest message a route accepts, and room).
    max_reply: usize,
    /// The last read stopped at its budget: read again next turn.
    pub busy: bool,
    /// Times the link went down after being ready, and how many of those were found by an
    /// unanswered command (the liveness probe).
    pub lost: u64,
    pub probe_failures: u64,
    /// Connection attempts so far: a name with several addresses is tried address by address.
    attempts: usize,
    /// Why the last attempt failed: a new reason is logged as a warning, a repeated one
    /// (Redis still down, the password still wrong) only at debug level.
    last_failure: String,
}

/// Settings every link shares.
pub struct Settings {
    pub addr: RedisAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl Link {
    pub fn new(
        name: &'static str,
        token: Token,
        client_name: &str,
        addr: &RedisAddr,
        max_reply: usize,
        now: Instant,
    ) -> Link {
        let mut hello = Vec::new();
        let mut hello_replies = 0;
        if let Some(password) = &addr.password {
            match &addr.username {
                Some(user) => wire::command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => wire::command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            hello_replies += 1;
        }
        wire::command(&mut hello, &[b"CLIENT", b"SETNAME", client_name.as_bytes()]);
        hello_replies += 1;
        Link {
            name,
            token,
            stream: None,
            phase: Phase::Down,
            hello,
            hello_replies,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            outstanding: 0,
            tags: VecDeque::new(),
            lost_tags: Vec::new(),
            progress_at: now,
            ping_at: now,
            retry_at: Some(now),
            backoff: Duration::ZERO,
            max_reply,
            busy: false,
            lost: 0,
            probe_failures: 0,
            attempts: 0,
            last_failure: String::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// A command the link sends first on every connection (after AUTH and its name): the
    /// scripts it will call, say, which a restarted Redis no longer has.
    pub fn add_to_hello(&mut self, args: &[&[u8]]) {
        wire::command(&mut self.hello, args);
        self.hello_replies += 1;
    }

    /// Bytes of commands waiting to be written.
    pub fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// Queues a command; `replies`: how many replies it brings (one per channel for
    /// SUBSCRIBE and UNSUBSCRIBE).
    pub fn send(&mut self, args: &[&[u8]], replies: u64, now: Instant) {
        self.send_tagged(args, replies, 0, now);
    }

    /// Queues commands already in RESP, each with one untagged reply.
    pub fn send_encoded(&mut self, commands: &[u8], count: u64, now: Instant) {
        self.wbuf.extend_from_slice(commands);
        self.expect(count, 0, now);
    }

    /// Queues a command whose replies are handed on with `tag`.
    pub fn send_tagged(&mut self, args: &[&[u8]], replies: u64, tag: u64, now: Instant) {
        wire::command(&mut self.wbuf, args);
        self.expect(replies, tag, now);
    }

    fn expect(&mut self, replies: u64, tag: u64, now: Instant) {
        if self.outstanding == 0 {
            self.progress_at = now;
        }
        self.outstanding += replies;
        match self.tags.back_mut() {
            Some((t, n)) if *t == tag => *n += replies,
            _ => self.tags.push_back((tag, replies)),
        }
    }

    /// Starts connecting (a due retry).
    pub fn connect(&mut self, settings: &Settings, registry: &Registry, now: Instant) {
        self.retry_at = None;
        match self.open(settings, registry) {
            Ok(stream) => {
                self.stream = Some(stream);
                self.phase = Phase::Opening;
                self.progress_at = now;
                self.rbuf.clear();
                self.wbuf.clear();
                self.wbuf.extend_from_slice(&self.hello);
                self.outstanding = 0;
                self.tags.clear();
                self.expect(self.hello_replies as u64, 0, now);
                log::debug!("cluster: {} link connecting to {}", self.name, settings.addr);
            }
            Err(e) => self.fail(settings, registry, &format!("connect: {e}"), now),
        }
    }

    fn open(&mut self, settings: &Settings, registry: &Registry) -> io::Result<Stream> {
        let addrs = resolve(&settings.addr)?;
        self.attempts = self.attempts.wrapping_add(1);
        let addr = addrs[self.attempts % addrs.len()];
        let mut tcp = TcpStream::connect(addr)?;
        registry.register(&mut tcp, self.token, Interest::READABLE | Interest::WRITABLE)?;
        let _ = tcp.set_nodelay(true);
        Ok(match &settings.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(settings.addr.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
                Stream::Tls(tcp, Box::new(conn))
            }
        })
    }

    /// Closes the connection and schedules the next attempt (backoff doubling from
    /// `reconnect_min` to `reconnect_max`, with ±25 % jitter so a crowd of nodes does not
    /// come back in step).
    pub fn fail(&mut self, settings: &Settings, registry: &Registry, why: &str, now: Instant) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(stream.tcp());
        }
        let was = self.phase;
        self.phase = Phase::Down;
        self.busy = false;
        self.outstanding = 0;
        self.lost_tags.extend(self.tags.drain(..).map(|(tag, _)| tag).filter(|&tag| tag != 0));
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.backoff = if self.backoff.is_zero() {
            settings.reconnect_min
        } else {
            (self.backoff * 2).min(settings.reconnect_max)
        };
        let wait = jitter(self.backoff, now);
        self.retry_at = Some(now + wait);
        if was == Phase::Ready {
            self.lost += 1;
            log::warn!("cluster: {} link to {} lost: {why}; reconnecting in {wait:?}", self.name, settings.addr);
        } else if why != self.last_failure {
            log::warn!(
                "cluster: {} link to {}: {why}; retrying (from {wait:?}, backing off)",
                self.name,
                settings.addr
            );
        } else {
            log::debug!("cluster: {} link to {}: {why}; next attempt in {wait:?}", self.name, settings.addr);
        }
        why.clone_into(&mut self.last_failure);
    }

    /// The link's next deadline.
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        match self.phase {
            Phase::Down => self.retry_at,
            Phase::Opening => Some(self.progress_at + settings.ping_timeout),
            Phase::Ready if self.outstanding > 0 => Some(self.ping_at.min(self.progress_at + settings.ping_timeout)),
            Phase::Ready => Some(self.ping_at),
        }
    }

    /// Timers: a due retry, a due PING, a dead link.
    pub fn tick(&mut self, settings: &Settings, registry: &Registry, now: Instant) {
        match self.phase {
            Phase::Down if self.retry_at.is_some_and(|t| now >= t) => self.connect(settings, registry, now),
            Phase::Down => {}
            _ if (self.outstanding > 0 || self.phase == Phase::Opening)
                && now.saturating_duration_since(self.progress_at) >= settings.ping_timeout =>
            {
                let what = if self.phase == Phase::Opening { "no answer to the hello" } else { "no reply" };
                self.probe_failures += u64::from(self.phase == Phase::Ready);
                self.fail(settings, registry, &format!("{what} within {:?}", settings.ping_timeout), now);
            }
            Phase::Ready if now >= self.ping_at => {
                self.ping_at = now + settings.ping_interval;
                self.send(&[b"PING"], 1, now);
            }
            _ => {}
        }
    }

    /// Writes what waits, as far as the socket takes it.
    pub fn flush(&mut self, settings: &Settings, registry: &Registry, now: Instant) {
        if let Err(e) = self.write() {
            // Before the hello is answered, a write error is the connect's (refused, unreachable).
            let what = if self.phase == Phase::Opening { "connect" } else { "write" };
            self.fail(settings, registry, &format!("{what}: {e}"), now);
        }
    }

    fn write(&mut self) -> io::Result<()> {
        let Some(stream) = &mut self.stream else { return Ok(()) };
        match stream {
            Stream::Plain(tcp) => {
                while !self.wbuf.is_empty() {
                    match IoStep::of(tcp.write(&self.wbuf)) {
                        IoStep::End => return Err(io::ErrorKind::WriteZero.into()),
                        IoStep::Done(n) => {
                            self.wbuf.drain(..n);
                        }
                        IoStep::WouldBlock => break,
                        IoStep::Retry => {}
                        IoStep::Failed(e) => return Err(e),
                    }
                }
            }
            Stream::Tls(tcp, tls) => {
                // rustls takes plaintext up to its own buffer limit; the rest waits here.
                if !self.wbuf.is_empty() && !tls.is_handshaking() {
                    let n = tls.writer().write(&self.wbuf)?;
                    self.wbuf.drain(..n);
                }
                while tls.wants_write() {
                    match IoStep::of(tls.write_tls(tcp)) {
                        IoStep::End | IoStep::Done(_) | IoStep::Retry => {}
                        IoStep::WouldBlock => break,
                        IoStep::Failed(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Readiness: finishes connecting, reads (up to the budget) and hands every decoded
    /// reply to `each`. Returns whether the link became ready during this call.
    pub fn on_ready(
        &mut self,
        settings: &Settings,
        registry: &Registry,
        now: Instant,
        mut each: impl FnMut(Reply<'_>),
    ) -> bool {
        let Some(stream) = &mut self.stream else { return false };
        if let Ok(Some(e)) | Err(e) = stream.tcp().take_error() {
            self.fail(settings, registry, &format!("connect: {e}"), now);
            return false;
        }
        self.busy = false;
        let mut budget = READ_BUDGET;
        let outcome = loop {
            if budget == 0 {
                self.busy = true;
                break Ok(());
            }
            match IoStep::of(read_some(stream, &mut self.rbuf)) {
                IoStep::End => break Err("closed by Redis".to_string()),
                IoStep::Done(n) => budget = budget.saturating_sub(n),
                IoStep::WouldBlock => break Ok(()),
                IoStep::Retry => {}
                IoStep::Failed(e) => break Err(format!("read: {e}")),
            }
            if self.rbuf.len() > self.max_reply {
                break Err(format!("a reply larger than {} bytes", self.max_reply));
            }
        };
        let became_ready = match self.decode(now, &mut each) {
            Ok(ready) => ready,
            Err(why) => {
                self.fail(settings, registry, &why, now);
                return false;
            }
        };
        if let Err(why) = outcome {
            self.fail(settings, registry, &why, now);
            return false;
        }
        // A TLS handshake or the hello may have queued bytes to write.
        self.flush(settings, registry, now);
        became_ready && self.is_ready()
    }

    /// Decodes every whole reply in the read buffer.
    fn decode(&mut self, now: Instant, each: &mut impl FnMut(Reply<'_>)) -> Result<bool, String> {
        let mut pos = 0;
        let mut became_ready = false;
        while let Some((reply, used)) = next_reply(&self.rbuf[pos..])? {
            pos += used;
            let reply = match reply {
                Reply::Answer(_, result) => Reply::Answer(next_tag(&mut self.tags), result),
                message => message,
            };
            if let Reply::Answer(_, result) = &reply {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.progress_at = now;
                if self.phase == Phase::Opening {
                    if let Err(e) = result {
                        return Err(format!("refused the hello: {e}"));
                    }
                    if self.outstanding == 0 {
                        self.phase = Phase::Ready;
                        self.backoff = Duration::ZERO;
                        self.last_failure.clear();
                        self.ping_at = now;
                        became_ready = true;
                    }
                    continue;
                }
                if let Err(e) = result {
                    log::warn!("cluster: {} link: Redis answered an error: {e}", self.name);
                }
            }
            each(reply);
        }
        self.rbuf.drain(..pos);
        Ok(became_ready)
    }
}

/// The first whole reply in `buf` and its length; `Ok(None)` if it is incomplete, `Err`
/// if `buf` is not RESP2.
pub fn next_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, String> {
    let Some((frame, used)) = decode_range(buf).map_err(|e| format!("not RESP2: {}", e.details()))? else {
        return Ok(None);
    };
    let buf = buf.get(..used).unwrap_or_default();
    let reply = match &frame {
        RangeFrame::Array(items) => match items.as_slice() {
            [RangeFrame::BulkString(kind), RangeFrame::BulkString(channel), RangeFrame::BulkString(payload)]
                if slice(buf, *kind) == b"message" =>
            {
                Reply::Message(slice(buf, *channel), slice(buf, *payload))
            }
            // subscribe / unsubscribe confirmations, the subscribed-mode pong, arrays.
            _ => Reply::Answer(0, Ok(buf)),
        },
        RangeFrame::Error(e) => Reply::Answer(0, Err(String::from_utf8_lossy(slice(buf, *e)).into_owned())),
        _ => Reply::Answer(0, Ok(buf)),
    };
    Ok(Some((reply, used)))
}

/// The tag of the next reply (consumed).
fn next_tag(tags: &mut VecDeque<(u64, u64)>) -> u64 {
    let Some((tag, n)) = tags.front_mut() else { return 0 };
    let tag = *tag;
    *n -= 1;
    if *n == 0 {
        tags.pop_front();
    }
    tag
}

fn slice(buf: &[u8], (start, end): (usize, usize)) -> &[u8] {
    buf.get(start..end).unwrap_or_default()
}

fn read_some(stream: &mut Stream, rbuf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 << 10];
    match stream {
        Stream::Plain(tcp) => {
            let n = tcp.read(&mut chunk)?;
            rbuf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Stream::Tls(tcp, tls) => {
            // Plaintext already decrypted first; then more records from the socket.
            match tls.reader().read(&mut chunk) {
                Ok(n) if n > 0 => {
                    rbuf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Ok(_) => return Ok(0),
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
            let n = tls.read_tls(tcp)?;
            if n == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if tls.wants_write() {
                // Handshake messages: written at once (the caller flushes after reading).
                let _ = tls.write_tls(tcp);
            }
            // Progress was made even if no plaintext came yet (handshake records).
            Ok(n.max(1))
        }
    }
}

/// The addresses to try (never empty). An IP address is used as is; a name is resolved at
/// each attempt (a blocking lookup: use an address, or a local resolver, on busy nodes).
fn resolve(addr: &RedisAddr) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = addr.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, addr.port)]);
    }
    let addrs: Vec<SocketAddr> = (addr.host.as_str(), addr.port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", addr.host)));
    }
    Ok(addrs)
}

/// `d` ± 25 %, from the clock's low bits (nodes restarted together still spread).
fn jitter(d: Duration, now: Instant) -> Duration {
    let seed = now.elapsed().as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(17);
    let seed =
        seed ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64);
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.75 + (x % 1000) as f64 / 2000.0;
    d.mul_f64(factor)
}
