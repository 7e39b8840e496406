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
//! connection and sequence number, or sender and round, then a fixed pattern or, with
//! `--payload json`, a JSON object whose numbers change with every message) and counted
//! once; a mismatch, a connection lost, or a connection with messages owed and nothing back
//! for `STALL` fails the run (exit status 1). The measured window follows `--warmup`; a
//! progress line goes to standard error every second, the summary to standard output (text,
//! or one JSON object with `--json`), with the client's CPU per message and, with
//! `--server-pid`, the server's.

// Argument docs are clap's help text (`ws://HOST[:PORT]/PATH`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod io;
mod payload;
mod reactor;
mod report;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use self::payload::{PayloadKind, Payloads};
use self::reactor::Reactor;
use self::report::Summary;
use super::url::Target;
use super::Options;
use crate::ws::extensions::DeflateOffer;
use crate::ws::frame::Opcode;

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
    /// pattern (a tag, then letters: the cheapest to check) or json (JSON objects of about
    /// --size bytes whose numbers change with every message: what compression meets).
    #[arg(long, default_value = "pattern", value_parser = ["pattern", "json"])]
    pub payload: String,
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
    /// WebSocket bytes (frame headers included; before TLS) read and written so far.
    wire_in: AtomicU64,
    wire_out: AtomicU64,
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
    let payload = if args.payload == "json" { PayloadKind::Json } else { PayloadKind::Pattern };
    let options = Options {
        ca_file: args.ca.clone(),
        insecure: args.insecure,
        compress: args.compress.then(DeflateOffer::default),
        max_message: Payloads::max_len(payload, args.size as usize) + 64,
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
            payload,
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
    let wire = |c: &[Arc<Counters>]| -> (u64, u64) {
        c.iter()
            .fold((0, 0), |(i, o), c| (i + c.wire_in.load(Ordering::Relaxed), o + c.wire_out.load(Ordering::Relaxed)))
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
    let wire0 = wire(&counters);
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
    let wire1 = wire(&counters);
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
        wire: (wire1.0 - wire0.0, wire1.1 - wire0.1),
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

/// What one thread's connections do.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    mode: Mode,
    size: usize,
    text: bool,
    payload: PayloadKind,
    /// Messages in flight per connection (closed and flood).
    depth: u64,
    /// Rate mode: this thread's share of the messages per second.
    rate: f64,
    /// Fan-out: connections 0..publishers send each round.
    publishers: usize,
}

impl Plan {
    fn opcode(&self) -> Opcode {
        if self.text {
            Opcode::Text
        } else {
            Opcode::Binary
        }
    }
}

#[allow(clippy::disallowed_methods)] // the load generator's own clock
fn now() -> Instant {
    Instant::now()
}
