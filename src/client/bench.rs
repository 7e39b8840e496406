//! `wsgate bench URL`: the load generator, on the client's own protocol code.
//!
//! N connections, spread over `--threads` client reactors (one mio loop each, so it can load a
//! multi-core server), each opened by [`Client`]'s handshake (ws://, wss://, ws+unix:, with
//! permessage-deflate on `--compress`) and then driven non-blocking: frames are masked and
//! written from one buffer per connection, the server's frames decoded by the same
//! [`Endpoint`] as the client's. Modes:
//!
//! - `closed`: one message in flight per connection (the echo's round trip);
//! - `flood`: `--depth` messages in flight per connection (pipelined);
//! - `rate`: `--rate` messages a second in all, on a fixed schedule, round-robin over the
//!   connections (open loop: sends never wait for echoes); every echo's latency goes into a
//!   histogram, reported as percentiles;
//! - `fanout`: the room pattern of uWebSockets' `broadcast_test`, for a route that delivers
//!   every message to every client (`app = "chat"`): each round, each of `--publishers`
//!   connections sends one message, and the next round starts when every connection got all
//!   of them. It counts deliveries.
//!
//! Every echo and delivery is checked byte for byte against what was sent (a tag made of the
//! connection and sequence number, or sender and round, then a fixed pattern) and counted
//! once; a mismatch, a connection lost, or a connection with messages owed and nothing back
//! for `STALL` fails the run (exit status 1). The measured window follows `--warmup`; a
//! progress line goes to standard error every second, the summary to standard output (text,
//! or one JSON object with `--json`), with the client's CPU per message and, with
//! `--server-pid`, the server's.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::url::Target;
use super::{Client, Options, Stream};
use crate::stamp::Stamp;
use crate::ws::deflate::{PerMessage, SharedCodecs};
use crate::ws::endpoint::{Endpoint, Event};
use crate::ws::extensions::DeflateOffer;
use crate::ws::frame::{encode_header, Opcode, MAX_HEADER_LEN};

/// Free space a read needs in the buffer (it grows when less is left).
const READ_ROOM: usize = 64 * 1024;

/// A connection owed messages with nothing back for this long has stalled.
const STALL: Duration = Duration::from_secs(5);

/// Rate mode: messages in flight on one connection past which the server is not keeping up
/// and the run fails (the client would otherwise buffer without bound).
const RATE_MAX_IN_FLIGHT: usize = 1 << 16;

/// Fan-out: the pause between the last connection opening and round 0, for the server to
/// finish joining everyone to the room.
const FANOUT_SETTLE: Duration = Duration::from_millis(100);

/// Latencies are recorded in microseconds, up to a minute, to 3 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;

/// `wsgate bench`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// ws://HOST[:PORT]/PATH, wss://..., or ws+unix:SOCKET[:/PATH] of an echo route (a chat
    /// room for fanout).
    pub url: String,
    /// closed (one message in flight per connection), flood (--depth in flight), rate
    /// (--rate msgs/s, latency percentiles) or fanout (rounds in a room).
    #[arg(short = 'm', long, default_value = "closed", value_parser = ["closed", "flood", "rate", "fanout"])]
    pub mode: String,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Payload bytes per message (at least 8: a tag leads each payload).
    #[arg(short = 's', long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(8..=16_777_216))]
    pub size: u32,
    /// Messages in flight per connection in flood mode.
    #[arg(short = 'q', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// Rate mode: messages per second in all.
    #[arg(short = 'r', long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Fanout: how many connections publish each round (the first K; default all).
    #[arg(long, value_name = "K")]
    pub publishers: Option<usize>,
    /// Text frames (the payload is ASCII) instead of binary.
    #[arg(short = 't', long)]
    pub text: bool,
    /// Offer permessage-deflate; messages the server compresses are inflated, ours compressed.
    #[arg(long)]
    pub compress: bool,
    /// CA certificates (PEM) to trust for wss:// instead of the public roots.
    #[arg(long = "ca", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Accept any server certificate for wss:// (a benchmark against a self-signed server).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(short = 'w', long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Client reactor threads (fanout runs on one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// The server's process id: its CPU time per message over the window.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Flood,
    Rate,
    Fanout,
}

/// What one thread counted, shared with the main thread for the progress line.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    bytes: AtomicU64,
}

/// What the threads share: the flags that start the window and end the run.
struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
}

/// What a thread hands back at the end.
struct Report {
    /// Rate mode: the echoes' latency over the window, in microseconds.
    latency: Option<Histogram<u64>>,
    /// Rate mode: messages sent more than a millisecond after their scheduled time (the
    /// generator could not keep the schedule: its latencies are then understated).
    late: u64,
    /// Fan-out: rounds completed.
    rounds: u64,
    /// Connections on which the server agreed to permessage-deflate.
    compressed: usize,
}

/// Runs the bench; returns the exit status (0: a clean run; 1: a failure, said on stderr;
/// 2: bad arguments).
pub fn run(args: &BenchArgs) -> u8 {
    let fail = |e: String| {
        eprintln!("wsgate bench: {e}");
        2
    };
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let (Ok(duration), Ok(warmup)) =
        (Duration::try_from_secs_f64(args.duration), Duration::try_from_secs_f64(args.warmup))
    else {
        return fail("--duration and --warmup are seconds".into());
    };
    let mode = match args.mode.as_str() {
        "flood" => Mode::Flood,
        "rate" => Mode::Rate,
        "fanout" => Mode::Fanout,
        _ => Mode::Closed,
    };
    let rate = match (mode, args.rate) {
        (Mode::Rate, Some(r)) if r.is_finite() && r > 0.0 => r,
        (Mode::Rate, _) => return fail("--mode rate needs --rate MSGS_PER_S (above 0)".into()),
        (_, Some(_)) => return fail("--rate is for --mode rate".into()),
        _ => 0.0,
    };
    if args.connections == 0 {
        return fail("--connections: at least 1".into());
    }
    let publishers = args.publishers.unwrap_or(args.connections);
    if mode == Mode::Fanout && (args.connections > 65_536 || publishers == 0 || publishers > args.connections) {
        return fail("fanout: at most 65536 connections, and 1 to --connections publishers".into());
    }
    if mode != Mode::Fanout && args.publishers.is_some() {
        return fail("--publishers is for --mode fanout".into());
    }
    let options = Options {
        ca_file: args.ca.clone(),
        insecure: args.insecure,
        compress: args.compress.then(DeflateOffer::default),
        max_message: args.size as usize + 64,
        ..Options::default()
    };
    let tls = match target.tls.then(|| super::tls_config(&options)).transpose() {
        Ok(tls) => tls,
        Err(e) => return fail(e.to_string()),
    };
    let depth = match mode {
        Mode::Flood => args.depth,
        _ => 1,
    };
    let threads = if mode == Mode::Fanout { 1 } else { (args.threads as usize).min(args.connections) };
    let shared = Arc::new(Shared { stop: AtomicBool::new(false), measuring: AtomicBool::new(false) });
    let counters: Vec<Arc<Counters>> = (0..threads).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    for (t, counters) in counters.iter().enumerate() {
        let n = args.connections / threads + usize::from(t < args.connections % threads);
        let first = t * (args.connections / threads) + t.min(args.connections % threads);
        let plan = Plan {
            mode,
            size: args.size as usize,
            text: args.text,
            depth: u64::from(depth),
            rate: rate * n as f64 / args.connections as f64,
            publishers,
        };
        let (target, options, tls) = (target.clone(), options.clone(), tls.clone());
        let (shared, counters) = (Arc::clone(&shared), Arc::clone(counters));
        handles.push(std::thread::spawn(move || {
            Reactor::open(&target, &options, tls, first, n, plan).and_then(|mut r| r.run(&shared, &counters))
        }));
    }
    let total = |c: &[Arc<Counters>]| -> (u64, u64) {
        c.iter().fold((0, 0), |(m, b), c| (m + c.received.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed)))
    };
    let failed = |handles: &[std::thread::JoinHandle<Result<Report, String>>]| handles.iter().any(|h| h.is_finished());
    // The warm-up counts from the first message, not from the first connection opening.
    while total(&counters).0 == 0 && !failed(&handles) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = now();
    while now() < started + warmup && !failed(&handles) {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let (m0, b0) = total(&counters);
    let (client0, server0) =
        (crate::sys::cpu::times(None), args.server_pid.and_then(|p| crate::sys::cpu::times(Some(p))));
    let window = now();
    let mut last = (window, m0);
    let unit = if mode == Mode::Fanout { "deliveries" } else { "msg" };
    while now() < window + duration && !failed(&handles) {
        std::thread::sleep(Duration::from_millis(50));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let (m, _) = total(&counters);
            let rate = (m - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!("wsgate bench: {rate:.0} {unit}/s");
            last = (now(), m);
        }
    }
    let (m1, b1) = total(&counters);
    let secs = window.elapsed().as_secs_f64();
    let (client1, server1) =
        (crate::sys::cpu::times(None), args.server_pid.and_then(|p| crate::sys::cpu::times(Some(p))));
    shared.stop.store(true, Ordering::Relaxed);
    let mut status = 0;
    let mut latency: Option<Histogram<u64>> = None;
    let (mut late, mut rounds, mut compressed) = (0, 0, 0);
    for h in handles {
        match h.join() {
            Ok(Ok(report)) => {
                if let Some(h) = report.latency {
                    match &mut latency {
                        Some(all) => {
                            let _ = all.add(&h);
                        }
                        None => latency = Some(h),
                    }
                }
                late += report.late;
                rounds += report.rounds;
                compressed += report.compressed;
            }
            Ok(Err(e)) => {
                eprintln!("wsgate bench: {e}");
                status = 1;
            }
            Err(_) => {
                eprintln!("wsgate bench: a client thread panicked");
                status = 1;
            }
        }
    }
    let msgs = m1 - m0;
    let per_msg = |a: Option<(Duration, Duration)>, b: Option<(Duration, Duration)>| {
        let ((u0, s0), (u1, s1)) = (a?, b?);
        let n = msgs.max(1) as f64;
        Some(((u1 - u0).as_secs_f64() * 1e9 / n, (s1 - s0).as_secs_f64() * 1e9 / n))
    };
    let summary = Summary {
        args,
        mode,
        depth,
        threads,
        secs,
        msgs,
        bytes: b1 - b0,
        client: per_msg(client0, client1),
        server: per_msg(server0, server1),
        latency,
        late,
        rounds,
        compressed,
        ok: status == 0,
    };
    summary.print();
    status
}

/// The run's results, printed as text or JSON.
struct Summary<'a> {
    args: &'a BenchArgs,
    mode: Mode,
    depth: u32,
    threads: usize,
    secs: f64,
    /// Echoes (fan-out: deliveries) in the window.
    msgs: u64,
    bytes: u64,
    /// User and system nanoseconds per message.
    client: Option<(f64, f64)>,
    server: Option<(f64, f64)>,
    latency: Option<Histogram<u64>>,
    late: u64,
    rounds: u64,
    compressed: usize,
    ok: bool,
}

/// The percentiles reported, by name.
const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

impl Summary<'_> {
    fn print(&self) {
        let a = self.args;
        let frames = if a.text { "text" } else { "binary" };
        let rate = self.msgs as f64 / self.secs;
        let count = if self.mode == Mode::Fanout { "deliveries" } else { "msgs" };
        if a.json {
            let ns =
                |x: Option<(f64, f64)>| x.map(|(u, s)| serde_json::json!({"user_ns_per_msg": u, "sys_ns_per_msg": s}));
            let mut summary = serde_json::json!({
                "mode": a.mode, "connections": a.connections, "size": a.size, "depth": self.depth,
                "frames": frames, "compressed_connections": self.compressed, "threads": self.threads,
                "seconds": self.secs, "bytes": self.bytes,
                "client": ns(self.client), "server": ns(self.server), "ok": self.ok,
            });
            summary[count] = self.msgs.into();
            summary[format!("{count}_per_s")] = rate.into();
            if let Some(h) = &self.latency {
                let mut l = serde_json::Map::new();
                for (name, q) in PERCENTILES {
                    l.insert(format!("{name}_us"), h.value_at_percentile(q).into());
                }
                l.insert("max_us".into(), h.max().into());
                l.insert("samples".into(), h.len().into());
                summary["latency"] = l.into();
                summary["rate"] = a.rate.into();
                summary["late_sends"] = self.late.into();
            }
            if self.mode == Mode::Fanout {
                summary["rounds"] = self.rounds.into();
                summary["publishers"] = a.publishers.unwrap_or(a.connections).into();
            }
            println!("{summary}");
            return;
        }
        println!(
            "mode={} conns={} size={} depth={} frames={frames} compressed={} threads={} secs={:.2} {count}={} {count}_per_s={rate:.0}",
            a.mode, a.connections, a.size, self.depth, self.compressed, self.threads, self.secs, self.msgs
        );
        if self.mode == Mode::Fanout {
            println!("rounds={} publishers={}", self.rounds, a.publishers.unwrap_or(a.connections));
        }
        if let Some(h) = &self.latency {
            let mut line = format!("rate={} samples={}", a.rate.unwrap_or(0.0), h.len());
            for (name, q) in PERCENTILES {
                line += &format!(" {name}_us={}", h.value_at_percentile(q));
            }
            println!("{line} max_us={} late_sends={}", h.max(), self.late);
        }
        if let Some((u, s)) = self.client {
            println!("client_usr_ns_per_msg={u:.0} client_sys_ns_per_msg={s:.0}");
        }
        if let Some((u, s)) = self.server {
            let cpu_pct = (u + s) * self.msgs as f64 / self.secs / 1e7;
            println!("server_usr_ns_per_msg={u:.0} server_sys_ns_per_msg={s:.0} server_cpu_pct={cpu_pct:.1}");
        }
        if !self.ok {
            println!("result=failed (the reason is on standard error)");
        }
    }
}

/// What one thread's connections do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    size: usize,
    text: bool,
    /// Messages in flight per connection (closed and flood).
    depth: u64,
    /// Rate mode: this thread's share of the messages per second.
    rate: f64,
    /// Fan-out: connections 0..publishers send each round.
    publishers: usize,
}

/// The byte stream under a bench connection, non-blocking.
enum Io {
    Tcp(mio::net::TcpStream),
    Tls(mio::net::TcpStream, Box<rustls::ClientConnection>),
    Unix(mio::net::UnixStream),
}

impl Io {
    fn from_client(stream: Stream) -> io::Result<Io> {
        Ok(match stream {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                Io::Tcp(mio::net::TcpStream::from_std(s))
            }
            Stream::Tls(owned) => {
                let (conn, s) = owned.into_parts();
                s.set_nonblocking(true)?;
                Io::Tls(mio::net::TcpStream::from_std(s), Box::new(conn))
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                Io::Unix(mio::net::UnixStream::from_std(s))
            }
        })
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Io::Tcp(s) | Io::Tls(s, _) => s,
            Io::Unix(s) => s,
        }
    }

    /// Reads like a non-blocking socket: `WouldBlock` when nothing more is there. The bool:
    /// a short read means the socket is drained (plain sockets only: TLS records hide it).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        match self {
            Io::Tcp(s) => s.read(buf).map(|n| (n, n < buf.len())),
            Io::Unix(s) => s.read(buf).map(|n| (n, n < buf.len())),
            Io::Tls(s, conn) => loop {
                match conn.reader().read(buf) {
                    Ok(n) => return Ok((n, false)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if conn.read_tls(s)? == 0 {
                    return Ok((0, false));
                }
                conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            },
        }
    }

    /// Writes what the socket takes now (TLS: encrypts what its buffer allows, then sends
    /// what it can); `WouldBlock` when nothing.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Unix(s) => s.write(buf),
            Io::Tls(s, conn) => {
                Io::send_tls(s, conn)?;
                if conn.wants_write() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = conn.writer().write(buf)?;
                Io::send_tls(s, conn)?;
                Ok(n)
            }
        }
    }

    /// TLS records already made and not yet sent (a plain socket has none).
    fn has_pending(&self) -> bool {
        matches!(self, Io::Tls(_, conn) if conn.wants_write())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Io::Tls(s, conn) => Io::send_tls(s, conn),
            _ => Ok(()),
        }
    }

    fn send_tls(s: &mut mio::net::TcpStream, conn: &mut rustls::ClientConnection) -> io::Result<()> {
        while conn.wants_write() {
            match conn.write_tls(s) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One bench connection.
struct Conn {
    io: Io,
    endpoint: Endpoint,
    pmd: Option<PerMessage>,
    /// Read buffer (allocated once, never zeroed again): `input[..filled]` is unread.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// Sequence numbers: next to send, next expected back (fan-out: messages sent, and
    /// deliveries received in this round).
    sent: u64,
    echoed: u64,
    /// When something last came back (or the connection opened).
    heard: Instant,
    writable: bool,
    /// Rate mode: when each message in flight was sent (echoes come back in order).
    sent_at: VecDeque<Instant>,
    /// Fan-out: one bit per publisher whose message of this round arrived.
    heard_from: Vec<u64>,
}

struct Reactor {
    poll: Poll,
    conns: Vec<Conn>,
    plan: Plan,
    /// The connections' global index of `conns[0]` (tags name connections globally).
    first: usize,
    /// The mask generator (xorshift64*, seeded from the OS): a load tool masks every frame
    /// but has no browser's reason to make the keys unguessable.
    mask_state: u64,
    codecs: SharedCodecs,
    /// Payloads, built and checked in place.
    scratch: Vec<u8>,
    /// The header of an uncompressed message (its key written per frame) and its length.
    head: ([u8; MAX_HEADER_LEN], usize),
    latency: Option<Histogram<u64>>,
    late: u64,
    /// Fan-out: the round under way and the deliveries it still waits for.
    round: u64,
    owed: u64,
    rounds: u64,
}

impl Reactor {
    /// Opens connections `first..first + n` (blocking connect and handshake), then makes them
    /// non-blocking under one poll.
    fn open(
        target: &Target,
        options: &Options,
        tls: Option<Arc<rustls::ClientConfig>>,
        first: usize,
        n: usize,
        plan: Plan,
    ) -> Result<Reactor, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let client = Client::open_target(target, options, tls.clone())
                .map_err(|e| format!("connection {}: {e}", first + i))?;
            let (stream, endpoint, pmd, mut input) = client.into_parts();
            let mut io = Io::from_client(stream).map_err(|e| e.to_string())?;
            poll.registry()
                .register(io.source(), Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let filled = input.len();
            input.resize(filled.max(READ_ROOM) + READ_ROOM + plan.size + MAX_HEADER_LEN, 0);
            let fanout = plan.mode == Mode::Fanout;
            conns.push(Conn {
                io,
                endpoint,
                pmd,
                input,
                filled,
                output: Vec::new(),
                sent: 0,
                echoed: 0,
                heard: now(),
                writable: true,
                sent_at: VecDeque::new(),
                heard_from: if fanout { vec![0; plan.publishers.div_ceil(64)] } else { Vec::new() },
            });
        }
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| e.to_string())?;
        let latency = match plan.mode {
            Mode::Rate => Some(Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(Reactor {
            poll,
            conns,
            plan,
            first,
            mask_state: u64::from_le_bytes(seed) | 1,
            codecs: SharedCodecs::default(),
            scratch: pattern(plan.size),
            head: {
                let mut head = [0u8; MAX_HEADER_LEN];
                let opcode = if plan.text { Opcode::Text } else { Opcode::Binary };
                let n = encode_header(&mut head, true, opcode, plan.size, Some([0; 4]));
                (head, n)
            },
            latency,
            late: 0,
            round: 0,
            owed: 0,
            rounds: 0,
        })
    }

    fn run(&mut self, shared: &Shared, counters: &Counters) -> Result<Report, String> {
        if self.plan.mode == Mode::Fanout {
            std::thread::sleep(FANOUT_SETTLE);
        }
        for i in 0..self.conns.len() {
            // Frames that came with the 101 (none, from an echo server that was sent nothing).
            let (n, _) = self.decode(i)?;
            counters.received.fetch_add(n, Ordering::Relaxed);
            if self.plan.mode != Mode::Fanout {
                self.refill(i);
            }
        }
        if self.plan.mode == Mode::Fanout {
            self.start_round()?;
        }
        for i in 0..self.conns.len() {
            self.flush(i)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut checked = now();
        let mut measuring = false;
        // Rate mode: message k of this thread is due at `schedule + k / rate`.
        let schedule = now();
        let rate = self.plan.rate;
        let due = |k: u64| schedule + Duration::from_secs_f64(k as f64 / rate);
        let mut scheduled: u64 = 0;
        while !shared.stop.load(Ordering::Relaxed) {
            let timeout = match self.plan.mode {
                Mode::Rate => {
                    let due = due(scheduled);
                    // Sleeping in epoll has a millisecond's grain: closer than that, spin.
                    let wait = due.saturating_duration_since(now());
                    if wait < Duration::from_millis(1) {
                        Duration::ZERO
                    } else {
                        wait.min(Duration::from_millis(100))
                    }
                }
                _ => Duration::from_millis(100),
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
            if !measuring && shared.measuring.load(Ordering::Relaxed) {
                // The window starts: what the warm-up recorded is left out.
                measuring = true;
                if let Some(h) = &mut self.latency {
                    h.reset();
                }
                self.late = 0;
                self.rounds = 0;
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.is_writable() {
                    self.conns[i].writable = true;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let (n, bytes) = self.read(i)?;
                    counters.received.fetch_add(n, Ordering::Relaxed);
                    counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                    if matches!(self.plan.mode, Mode::Closed | Mode::Flood) {
                        self.refill(i);
                    }
                }
                self.flush(i)?;
            }
            if self.plan.mode == Mode::Rate {
                let n = self.conns.len() as u64;
                let mut touched = false;
                loop {
                    let due = due(scheduled);
                    let at = now();
                    if due > at {
                        break;
                    }
                    if at - due > Duration::from_millis(1) {
                        self.late += 1;
                    }
                    let i = (scheduled % n) as usize;
                    if self.conns[i].sent_at.len() >= RATE_MAX_IN_FLIGHT {
                        return Err(format!(
                            "connection {}: {RATE_MAX_IN_FLIGHT} messages in flight: the server does not keep up with --rate",
                            self.first + i
                        ));
                    }
                    self.queue_echo(i);
                    self.conns[i].sent_at.push_back(at);
                    scheduled += 1;
                    touched = true;
                    // Flush what was queued every connection-count messages, so a backlog
                    // goes out spread over the connections rather than all at the end.
                    if scheduled % n == 0 {
                        break;
                    }
                }
                if touched {
                    for i in 0..self.conns.len() {
                        if !self.conns[i].output.is_empty() {
                            self.flush(i)?;
                        }
                    }
                }
            }
            if self.plan.mode == Mode::Fanout && self.owed == 0 {
                self.rounds += 1;
                self.round += 1;
                self.start_round()?;
                for i in 0..self.plan.publishers {
                    self.flush(i)?;
                }
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = now();
                self.check_stalls()?;
            }
        }
        let compressed = self.conns.iter().filter(|c| c.pmd.is_some()).count();
        Ok(Report { latency: self.latency.take(), late: self.late, rounds: self.rounds, compressed })
    }

    /// A connection owed messages with nothing back for [`STALL`] fails the run.
    fn check_stalls(&self) -> Result<(), String> {
        let fanout = self.plan.mode == Mode::Fanout;
        for (i, c) in self.conns.iter().enumerate() {
            let owed = if fanout { self.plan.publishers as u64 - c.echoed } else { c.sent - c.echoed };
            if owed > 0 && c.heard.elapsed() >= STALL {
                let what = if fanout { format!("round {}", self.round) } else { "in flight".into() };
                return Err(format!(
                    "connection {}: {owed} messages ({what}) owed, nothing back for {STALL:?}",
                    self.first + i
                ));
            }
        }
        Ok(())
    }

    /// Closed and flood: queues messages until `depth` are in flight.
    fn refill(&mut self, i: usize) {
        while self.conns[i].sent - self.conns[i].echoed < self.plan.depth {
            self.queue_echo(i);
        }
    }

    /// Queues connection `i`'s next message of the echo modes.
    fn queue_echo(&mut self, i: usize) {
        let tag = echo_tag(self.conns[i].sent, self.first + i);
        fill_tag(&mut self.scratch, tag);
        self.queue(i);
        self.conns[i].sent += 1;
    }

    /// Fan-out: every publisher sends its message of this round, and every connection now
    /// owes all of them.
    fn start_round(&mut self) -> Result<(), String> {
        for c in &mut self.conns {
            c.echoed = 0;
            c.heard_from.iter_mut().for_each(|w| *w = 0);
            c.heard = now();
        }
        self.owed = (self.conns.len() * self.plan.publishers) as u64;
        for p in 0..self.plan.publishers {
            if !self.conns[p].output.is_empty() {
                return Err(format!(
                    "connection {p}: {} bytes of earlier output unsent at round {} (the server is not reading)",
                    self.conns[p].output.len(),
                    self.round
                ));
            }
            fill_tag(&mut self.scratch, fanout_tag(p, self.round));
            self.queue(p);
            self.conns[p].sent += 1;
        }
        Ok(())
    }

    /// Frames the payload in `scratch` onto connection `i`'s output: masked, and compressed
    /// when that was agreed.
    fn queue(&mut self, i: usize) {
        let opcode = if self.plan.text { Opcode::Text } else { Opcode::Binary };
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 7;
        self.mask_state ^= self.mask_state << 17;
        let key = (self.mask_state as u32).to_le_bytes();
        let c = &mut self.conns[i];
        match c.pmd.as_mut().and_then(|pmd| pmd.compress(&mut self.codecs, &self.scratch)) {
            Some(compressed) => {
                let mut head = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut head, true, opcode, compressed.len(), Some(key));
                head[0] |= super::RSV1;
                crate::ws::mask::frame_into(&mut c.output, &head, n, &compressed, key);
            }
            // Every uncompressed frame has the same header but for the key.
            None => crate::ws::mask::frame_into(&mut c.output, &self.head.0, self.head.1, &self.scratch, key),
        }
    }

    fn flush(&mut self, i: usize) -> Result<(), String> {
        let c = &mut self.conns[i];
        let mut done = 0;
        while c.writable && done < c.output.len() {
            match c.io.write(&c.output[done..]) {
                Ok(0) => return Err(format!("connection {}: closed by the server", self.first + i)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {}: {e}", self.first + i)),
            }
        }
        c.output.drain(..done);
        if c.writable && c.io.has_pending() {
            c.io.flush_pending().map_err(|e| format!("connection {}: {e}", self.first + i))?;
        }
        Ok(())
    }

    /// Reads what the socket has and checks every message. Returns messages and payload bytes.
    fn read(&mut self, i: usize) -> Result<(u64, u64), String> {
        let (mut messages, mut bytes) = (0u64, 0u64);
        loop {
            let c = &mut self.conns[i];
            if c.input.len() - c.filled < READ_ROOM {
                let grown = c.input.len() * 2;
                c.input.resize(grown, 0);
            }
            let filled = c.filled;
            let drained = match c.io.read(&mut c.input[filled..]) {
                Ok((0, _)) => return Err(format!("connection {}: closed by the server", self.first + i)),
                Ok((n, drained)) => {
                    c.filled += n;
                    // Edge-triggered: a read short of the room took all there was, and the
                    // next bytes raise a new edge; no second read to hear WouldBlock.
                    drained
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("connection {}: {e}", self.first + i)),
            };
            let (n, b) = self.decode(i)?;
            messages += n;
            bytes += b;
            if drained {
                break;
            }
        }
        if messages > 0 {
            self.conns[i].heard = now();
        }
        Ok((messages, bytes))
    }

    /// Decodes and checks the buffered frames. Returns messages and payload bytes.
    fn decode(&mut self, i: usize) -> Result<(u64, u64), String> {
        let (mut messages, mut bytes) = (0u64, 0u64);
        let mut start = 0;
        let at = now();
        let name = self.first + i;
        loop {
            let c = &mut self.conns[i];
            let filled = c.filled;
            let received = c
                .endpoint
                .receive(&mut c.input[start..filled], Stamp::at(at), usize::MAX, &mut self.codecs, c.pmd.as_mut())
                .map_err(|e| format!("connection {name}: the server broke the protocol: {}", e.reason()))?;
            let used = received.used;
            match received.event {
                None if used == 0 => break,
                Some(Event::Message(_, payload)) => {
                    let payload = payload.as_slice();
                    match self.plan.mode {
                        Mode::Fanout => {
                            let Some((sender, round)) = parse_fanout_tag(payload) else {
                                return Err(format!("connection {name}: a delivery without a sender's tag"));
                            };
                            if sender >= self.plan.publishers || round != self.round as u32 & 0xFFFF {
                                return Err(format!(
                                    "connection {name}: delivery from {sender} of round {round} during round {}",
                                    self.round
                                ));
                            }
                            let (word, bit) = (sender / 64, 1u64 << (sender % 64));
                            if c.heard_from[word] & bit != 0 {
                                return Err(format!("connection {name}: message of {sender} delivered twice"));
                            }
                            c.heard_from[word] |= bit;
                            if !is_tagged_pattern(payload, fanout_tag(sender, self.round), &self.scratch) {
                                return Err(format!(
                                    "connection {name}: delivery from {sender} differs from what was sent"
                                ));
                            }
                            self.owed -= 1;
                        }
                        _ => {
                            let seq = c.echoed;
                            if !is_tagged_pattern(payload, echo_tag(seq, name), &self.scratch) {
                                return Err(format!(
                                    "connection {name}: echo of message {seq} differs from what was sent"
                                ));
                            }
                            if let (Some(h), Some(sent)) = (&mut self.latency, c.sent_at.pop_front()) {
                                let us = at.saturating_duration_since(sent).as_micros() as u64;
                                h.saturating_record(us.clamp(1, LATENCY_MAX_US));
                            }
                        }
                    }
                    c.echoed += 1;
                    messages += 1;
                    bytes += self.plan.size as u64;
                }
                Some(Event::CloseBegun { code, reason }) => {
                    return Err(format!("connection {name}: the server closed ({code:?} {reason})"))
                }
                _ => {}
            }
            start += used;
        }
        let c = &mut self.conns[i];
        c.input.copy_within(start..c.filled, 0);
        c.filled -= start;
        Ok((messages, bytes))
    }
}

/// The tag of message `seq` of connection `conn`: the two mixed into 32 bits, so an echo that
/// comes back out of order, twice, or on another connection differs.
fn echo_tag(seq: u64, conn: usize) -> u32 {
    (seq as u32) ^ (conn as u32).rotate_left(16)
}

/// The tag of publisher `sender`'s message in round `round`: the sender in the high 16 bits,
/// the round's low 16 bits in the low ones.
fn fanout_tag(sender: usize, round: u64) -> u32 {
    ((sender as u32) << 16) | (round as u32 & 0xFFFF)
}

/// The sender and round of a fan-out delivery, from its tag.
fn parse_fanout_tag(payload: &[u8]) -> Option<(usize, u32)> {
    let hex = std::str::from_utf8(payload.get(..8)?).ok()?;
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(((v >> 16) as usize, v & 0xFFFF))
}

/// Writes `tag` as the first eight bytes of `buf` (hex: ASCII, so text frames carry it too),
/// whose bytes past the eighth already hold the fixed pattern ([`pattern`]).
fn fill_tag(buf: &mut [u8], tag: u32) {
    let hex = tag_hex(tag);
    match buf.first_chunk_mut::<8>() {
        // One 8-byte store: the masking pass that reads the payload a word at a time right
        // after would stall on eight byte stores (no store-to-load forwarding).
        Some(word) => *word = hex,
        None => buf.iter_mut().zip(hex).for_each(|(b, h)| *b = h),
    }
}

/// `tag` as eight hex digits, most significant first, built in a register.
fn tag_hex(tag: u32) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut word = 0u64;
    for k in 0..8 {
        word |= u64::from(HEX[((tag >> (28 - 4 * k)) & 0xF) as usize]) << (8 * k);
    }
    word.to_le_bytes()
}

/// Whether `payload` is the message tagged `tag`: the tag's hex, then `pattern`'s bytes past
/// the eighth. Compared a word at a time in registers: for the small messages a flood
/// checks millions of, a call to `memcmp` per message cost more than the comparison.
fn is_tagged_pattern(payload: &[u8], tag: u32, pattern: &[u8]) -> bool {
    if payload.len() != pattern.len() {
        return false;
    }
    let hex = tag_hex(tag);
    let head = payload.len().min(8);
    if let Ok(word) = <[u8; 8]>::try_from(&payload[..head]) {
        if word != hex {
            return false;
        }
    } else if payload.iter().zip(hex).any(|(a, b)| *a != b) {
        return false;
    }
    let (rest, want) = (&payload[head..], &pattern[head..]);
    let mut diff = 0u64;
    let mut got_words = rest.chunks_exact(8);
    let mut want_words = want.chunks_exact(8);
    for (g, w) in (&mut got_words).zip(&mut want_words) {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        a.copy_from_slice(g);
        b.copy_from_slice(w);
        diff |= u64::from_ne_bytes(a) ^ u64::from_ne_bytes(b);
    }
    for (g, w) in got_words.remainder().iter().zip(want_words.remainder()) {
        diff |= u64::from(g ^ w);
    }
    diff == 0
}

/// The payload of `size` bytes with the pattern after its first eight.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|j| b'a' + (j % 26) as u8).collect()
}

#[allow(clippy::disallowed_methods)] // the load generator's own clock
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_differ() {
        let mut buf = pattern(20);
        fill_tag(&mut buf, fanout_tag(513, 70_000));
        assert_eq!(parse_fanout_tag(&buf), Some((513, 70_000 & 0xFFFF)));
        assert_eq!(&buf[8..], &pattern(20)[8..]);
        assert_ne!(echo_tag(1, 0), echo_tag(0, 1));
        assert_ne!(echo_tag(1, 2), echo_tag(2, 2));
        assert_eq!(parse_fanout_tag(b"zz"), None);
        assert_eq!(parse_fanout_tag(b"0000000g"), None);
    }

    #[test]
    fn the_check_finds_every_changed_byte_and_wrong_length() {
        for size in 0..40 {
            let pattern = pattern(size);
            let mut sent = pattern.clone();
            fill_tag(&mut sent, 0xdead_beef);
            assert!(is_tagged_pattern(&sent, 0xdead_beef, &pattern), "size {size}");
            if size > 0 {
                assert!(!is_tagged_pattern(&sent, 0xdead_beee, &pattern) || size < 8, "size {size}");
                assert!(!is_tagged_pattern(&sent[..size - 1], 0xdead_beef, &pattern));
            }
            for at in 0..size {
                let mut changed = sent.clone();
                changed[at] ^= 0x20;
                assert!(!is_tagged_pattern(&changed, 0xdead_beef, &pattern), "size {size} at {at}");
            }
        }
    }
}
