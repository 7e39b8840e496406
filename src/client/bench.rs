//! `wsgate bench URL`: the load generator, on the client's own protocol code.
//!
//! N connections, spread over `--threads` client reactors (one mio loop each, so it can load a
//! multi-core server), each opened with the client's handshake and then driven non-blocking:
//! frames are masked and written from one buffer per connection, the server's frames decoded
//! by the same [`Endpoint`] as the client's. Modes:
//!
//! - `closed`: one message in flight per connection (the echo's round trip);
//! - `flood`: `--depth` messages in flight per connection (pipelined).
//!
//! Every echo is checked byte for byte against what was sent (a sequence number and a
//! pattern derived from it) and counted once; a mismatch, a connection lost, or a connection
//! with messages in flight and nothing back for `STALL` fails the run (exit status 1). The
//! measured window follows `--warmup`; a progress line goes to standard error every second,
//! the summary to standard output (text, or one JSON object with `--json`), with the client's
//! CPU per message and, with `--server-pid`, the server's.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::handshake::{self, Offer};
use super::url::{Address, Target};
use crate::stamp::Stamp;
use crate::ws::deflate::SharedCodecs;
use crate::ws::endpoint::{Endpoint, Event};
use crate::ws::frame::{encode_header, Opcode, Role, MAX_HEADER_LEN};
use crate::ws::message::MessageLimits;

/// Free space a read needs in the buffer (it grows when less is left).
const READ_ROOM: usize = 64 * 1024;

/// A connection with messages in flight and nothing back for this long has stalled.
const STALL: Duration = Duration::from_secs(5);

/// `wsgate bench`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// ws://HOST[:PORT]/PATH of an echo route.
    pub url: String,
    /// closed (one message in flight per connection) or flood (--depth in flight).
    #[arg(short = 'm', long, default_value = "closed", value_parser = ["closed", "flood"])]
    pub mode: String,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Payload bytes per message (at least 8: a sequence number leads each payload).
    #[arg(short = 's', long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(8..=16_777_216))]
    pub size: u32,
    /// Messages in flight per connection in flood mode.
    #[arg(short = 'q', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// Text frames (the payload is ASCII) instead of binary.
    #[arg(short = 't', long)]
    pub text: bool,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(short = 'w', long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Client reactor threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// The server's process id: its CPU time per message over the window.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What one thread counted, shared with the main thread for the progress line.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    bytes: AtomicU64,
}

/// Runs the bench; returns the exit status (0: a clean run; 1: a failure, said on stderr;
/// 2: bad arguments).
pub fn run(args: &BenchArgs) -> u8 {
    let target = match Target::parse(&args.url) {
        Ok(t) if !t.tls && matches!(t.address, Address::Tcp { .. }) => t,
        Ok(_) => {
            eprintln!("wsgate bench: only ws:// URLs for now");
            return 2;
        }
        Err(e) => {
            eprintln!("wsgate bench: {e}");
            return 2;
        }
    };
    let (Ok(duration), Ok(warmup)) =
        (Duration::try_from_secs_f64(args.duration), Duration::try_from_secs_f64(args.warmup))
    else {
        eprintln!("wsgate bench: --duration and --warmup are seconds");
        return 2;
    };
    let depth = if args.mode == "flood" { args.depth } else { 1 };
    let threads = (args.threads as usize).min(args.connections.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<Counters>> = (0..threads).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    for (t, counters) in counters.iter().enumerate() {
        let n = args.connections / threads + usize::from(t < args.connections % threads);
        let (target, stop, counters) = (target.clone(), Arc::clone(&stop), Arc::clone(counters));
        let (size, text) = (args.size as usize, args.text);
        let first = t * (args.connections / threads) + t.min(args.connections % threads);
        handles.push(std::thread::spawn(move || {
            Reactor::open(&target, first, n, size, text, depth).and_then(|mut r| r.run(&stop, &counters))
        }));
    }
    let total = |c: &[Arc<Counters>]| -> (u64, u64) {
        c.iter().fold((0, 0), |(m, b), c| (m + c.received.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed)))
    };
    let started = now();
    let failed = |handles: &[std::thread::JoinHandle<Result<(), String>>]| handles.iter().any(|h| h.is_finished());
    while now() < started + warmup && !failed(&handles) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (m0, b0) = total(&counters);
    let (client0, server0) =
        (crate::sys::cpu::times(None), args.server_pid.and_then(|p| crate::sys::cpu::times(Some(p))));
    let window = now();
    let mut last = (window, m0);
    while now() < window + duration && !failed(&handles) {
        std::thread::sleep(Duration::from_millis(50));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let (m, _) = total(&counters);
            let rate = (m - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!("wsgate bench: {:.0} msg/s", rate);
            last = (now(), m);
        }
    }
    let (m1, b1) = total(&counters);
    let secs = window.elapsed().as_secs_f64();
    let (client1, server1) =
        (crate::sys::cpu::times(None), args.server_pid.and_then(|p| crate::sys::cpu::times(Some(p))));
    stop.store(true, Ordering::Relaxed);
    let mut status = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
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
    let client = per_msg(client0, client1);
    let server = per_msg(server0, server1);
    let rate = msgs as f64 / secs;
    if args.json {
        let ns = |x: Option<(f64, f64)>| x.map(|(u, s)| serde_json::json!({"user_ns_per_msg": u, "sys_ns_per_msg": s}));
        let summary = serde_json::json!({
            "mode": args.mode, "connections": args.connections, "size": args.size, "depth": depth,
            "frames": if args.text { "text" } else { "binary" }, "threads": threads,
            "seconds": secs, "messages": msgs, "msgs_per_s": rate, "bytes": b1 - b0,
            "client": ns(client), "server": ns(server), "ok": status == 0,
        });
        println!("{summary}");
    } else {
        println!(
            "mode={} conns={} size={} depth={} frames={} threads={} secs={:.2} msgs={} msgs_per_s={:.0}",
            args.mode,
            args.connections,
            args.size,
            depth,
            if args.text { "text" } else { "binary" },
            threads,
            secs,
            msgs,
            rate
        );
        if let Some((u, s)) = client {
            println!("client_usr_ns_per_msg={u:.0} client_sys_ns_per_msg={s:.0}");
        }
        if let Some((u, s)) = server {
            println!("server_usr_ns_per_msg={u:.0} server_sys_ns_per_msg={s:.0}");
        }
    }
    status
}

/// One bench connection.
struct Conn {
    stream: TcpStream,
    endpoint: Endpoint,
    /// Read buffer (allocated once, never zeroed again): `input[..filled]` is unread.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// Sequence numbers: next to send, next expected back.
    sent: u64,
    echoed: u64,
    /// When an echo last came back (or the connection opened).
    heard: Instant,
    writable: bool,
}

struct Reactor {
    poll: Poll,
    conns: Vec<Conn>,
    size: usize,
    text: bool,
    depth: u64,
    /// The mask generator (xorshift64*, seeded from the OS): a load tool masks every frame
    /// but has no browser's reason to make the keys unguessable.
    mask_state: u64,
    codecs: SharedCodecs,
    /// Payloads, built and checked in place.
    scratch: Vec<u8>,
}

impl Reactor {
    /// Opens connections `first..first + n` (blocking connect and handshake), then makes them
    /// non-blocking under one poll.
    fn open(target: &Target, first: usize, n: usize, size: usize, text: bool, depth: u32) -> Result<Reactor, String> {
        let Address::Tcp { host, port } = &target.address else { return Err("not a TCP address".into()) };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connection {}: {e}", first + i))?;
            let _ = s.set_nodelay(true);
            let key = handshake::new_key().map_err(|e| e.to_string())?;
            let offer = Offer::default();
            s.write_all(&handshake::request(target, &key, &offer)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
            let mut input = Vec::new();
            let used = loop {
                if let Some((_, used)) = handshake::check_response(&input, &key, &offer)
                    .map_err(|e| format!("connection {}: handshake failed: {e}", first + i))?
                {
                    break used;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) => return Err(format!("connection {}: closed during the handshake", first + i)),
                    Ok(k) => input.extend_from_slice(&chunk[..k]),
                    Err(e) => return Err(format!("connection {}: {e}", first + i)),
                }
            };
            input.drain(..used);
            let filled = input.len();
            input.resize(filled.max(READ_ROOM) + READ_ROOM + size + MAX_HEADER_LEN, 0);
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut stream = TcpStream::from_std(s);
            poll.registry()
                .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let limits = MessageLimits { max_message: size + 64, max_frame: size + 64 };
            conns.push(Conn {
                stream,
                endpoint: Endpoint::new(Role::Client, limits, now(), false),
                input,
                filled,
                output: Vec::new(),
                sent: 0,
                echoed: 0,
                heard: now(),
                writable: true,
            });
        }
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| e.to_string())?;
        let mask_state = u64::from_le_bytes(seed) | 1;
        Ok(Reactor {
            poll,
            conns,
            size,
            text,
            depth: u64::from(depth),
            mask_state,
            codecs: SharedCodecs::default(),
            scratch: pattern(size),
        })
    }

    fn run(&mut self, stop: &AtomicBool, counters: &Counters) -> Result<(), String> {
        for i in 0..self.conns.len() {
            // Frames that came with the 101 (none, from an echo server that was sent nothing).
            let (n, _) = self.decode(i)?;
            counters.received.fetch_add(n, Ordering::Relaxed);
            self.refill(i);
            self.flush(i)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut checked = now();
        while !stop.load(Ordering::Relaxed) {
            match self.poll.poll(&mut events, Some(Duration::from_millis(100))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
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
                    self.refill(i);
                }
                self.flush(i)?;
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = now();
                for (i, c) in self.conns.iter().enumerate() {
                    if c.sent > c.echoed && c.heard.elapsed() >= STALL {
                        return Err(format!(
                            "connection {i}: {} messages in flight, nothing back for {STALL:?}",
                            c.sent - c.echoed
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues messages until `depth` are in flight.
    fn refill(&mut self, i: usize) {
        let opcode = if self.text { Opcode::Text } else { Opcode::Binary };
        while self.conns[i].sent - self.conns[i].echoed < self.depth {
            let seq = self.conns[i].sent;
            fill_payload(&mut self.scratch, seq, i);
            self.mask_state ^= self.mask_state << 13;
            self.mask_state ^= self.mask_state >> 7;
            self.mask_state ^= self.mask_state << 17;
            let key = (self.mask_state as u32).to_le_bytes();
            let c = &mut self.conns[i];
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut head, true, opcode, self.size, Some(key));
            c.output.extend_from_slice(&head[..n]);
            let start = c.output.len();
            c.output.extend_from_slice(&self.scratch);
            crate::ws::mask::unmask(&mut c.output[start..], key, 0);
            c.sent += 1;
        }
    }

    fn flush(&mut self, i: usize) -> Result<(), String> {
        let c = &mut self.conns[i];
        let mut done = 0;
        while c.writable && done < c.output.len() {
            match c.stream.write(&c.output[done..]) {
                Ok(0) => return Err(format!("connection {i}: closed by the server")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {i}: {e}")),
            }
        }
        c.output.drain(..done);
        Ok(())
    }

    /// Reads what the socket has and checks every echo. Returns messages and payload bytes.
    fn read(&mut self, i: usize) -> Result<(u64, u64), String> {
        let (mut messages, mut bytes) = (0u64, 0u64);
        loop {
            let c = &mut self.conns[i];
            if c.input.len() - c.filled < READ_ROOM {
                let grown = c.input.len() * 2;
                c.input.resize(grown, 0);
            }
            let filled = c.filled;
            let room = c.input.len() - filled;
            let drained = match c.stream.read(&mut c.input[filled..]) {
                Ok(0) => return Err(format!("connection {i}: closed by the server")),
                Ok(n) => {
                    c.filled += n;
                    // Edge-triggered: a read short of the room took all there was, and the
                    // next bytes raise a new edge; no second read to hear WouldBlock.
                    n < room
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("connection {i}: {e}")),
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
        let at = Stamp::at(now());
        loop {
            let c = &mut self.conns[i];
            let filled = c.filled;
            let received = c
                .endpoint
                .receive(&mut c.input[start..filled], at, usize::MAX, &mut self.codecs, None)
                .map_err(|e| format!("connection {i}: the server broke the protocol: {}", e.reason()))?;
            let used = received.used;
            match received.event {
                None if used == 0 => break,
                Some(Event::Message(_, payload)) => {
                    let seq = c.echoed;
                    fill_payload(&mut self.scratch, seq, i);
                    if payload.as_slice() != self.scratch.as_slice() {
                        return Err(format!("connection {i}: echo of message {seq} differs from what was sent"));
                    }
                    c.echoed += 1;
                    messages += 1;
                    bytes += self.size as u64;
                }
                Some(Event::CloseBegun { code, reason }) => {
                    return Err(format!("connection {i}: the server closed ({code:?} {reason})"))
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

/// Message `seq` of connection `conn` in `buf`, whose bytes past the eighth already hold the
/// fixed pattern ([`pattern`]): the first eight are the sequence number mixed with the
/// connection's index, in hex (ASCII, so text frames carry it too), so an echo that comes back
/// out of order, twice, or on another connection differs.
fn fill_payload(buf: &mut [u8], seq: u64, conn: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = (seq as u32) ^ (conn as u32).rotate_left(16);
    for (k, b) in buf.iter_mut().take(8).enumerate() {
        *b = HEX[((v >> (28 - 4 * k)) & 0xF) as usize];
    }
}

/// The payload of `size` bytes with the pattern after its first eight.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|j| b'a' + (j % 26) as u8).collect()
}

#[allow(clippy::disallowed_methods)] // the load generator's own clock
fn now() -> Instant {
    Instant::now()
}
