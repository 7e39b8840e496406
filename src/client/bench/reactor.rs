//! One client reactor: a mio loop over its share of the connections, queueing, sending,
//! reading and checking messages as the plan's mode says.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::io::Io;
use super::payload::{echo_tag, fanout_tag, split_fanout_tag, Payloads};
use super::{now, Counters, Mode, Plan, Report, Shared};
use super::{FANOUT_SETTLE, LATENCY_MAX_US, RATE_MAX_IN_FLIGHT, READ_ROOM, STALL};
use crate::client::url::Target;
use crate::client::{Client, Options};
use crate::stamp::Stamp;
use crate::ws::deflate::{PerMessage, SharedCodecs};
use crate::ws::endpoint::{Endpoint, Event, Payload, WsError};
use crate::ws::frame::{encode_header, MAX_HEADER_LEN};

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

pub(super) struct Reactor {
    poll: Poll,
    conns: Vec<Conn>,
    plan: Plan,
    /// The connections' global index of `conns[0]` (tags name connections globally).
    first: usize,
    /// The mask generator (xorshift64*, seeded from the OS): a load tool masks every frame
    /// but has no browser's reason to make the keys unguessable.
    mask_state: u64,
    codecs: SharedCodecs,
    payloads: Payloads,
    /// When every message has one length: the header of an uncompressed one (its key
    /// written per frame) and its length.
    head: Option<([u8; MAX_HEADER_LEN], usize)>,
    latency: Option<Histogram<u64>>,
    late: u64,
    /// WebSocket bytes read and written so far.
    wire_in: u64,
    wire_out: u64,
    /// Fan-out: the round under way and the deliveries it still waits for.
    round: u64,
    owed: u64,
    rounds: u64,
}

impl Reactor {
    /// Opens connections `first..first + n` (blocking connect and handshake), then makes them
    /// non-blocking under one poll.
    pub(super) fn open(
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
        let payloads = Payloads::new(plan.payload, plan.size, plan.text);
        let head = payloads.fixed_len().map(|len| {
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut head, true, plan.opcode(), len, Some([0; 4]));
            (head, n)
        });
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
            payloads,
            head,
            latency,
            late: 0,
            wire_in: 0,
            wire_out: 0,
            round: 0,
            owed: 0,
            rounds: 0,
        })
    }

    pub(super) fn run(&mut self, shared: &Shared, counters: &Counters) -> Result<Report, String> {
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
                    counters.wire_in.store(self.wire_in, Ordering::Relaxed);
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
            counters.wire_in.store(self.wire_in, Ordering::Relaxed);
            counters.wire_out.store(self.wire_out, Ordering::Relaxed);
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
        self.payloads.build(tag);
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
            self.payloads.build(fanout_tag(p, self.round));
            self.queue(p);
            self.conns[p].sent += 1;
        }
        Ok(())
    }

    /// Frames the current payload onto connection `i`'s output: masked, and compressed
    /// when that was agreed.
    fn queue(&mut self, i: usize) {
        let opcode = self.plan.opcode();
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 7;
        self.mask_state ^= self.mask_state << 17;
        let key = (self.mask_state as u32).to_le_bytes();
        let c = &mut self.conns[i];
        let payload = self.payloads.current();
        match c.pmd.as_mut().and_then(|pmd| pmd.compress(&mut self.codecs, payload)) {
            Some(compressed) => {
                let mut head = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut head, true, opcode, compressed.len(), Some(key));
                head[0] |= crate::client::RSV1;
                crate::ws::mask::frame_into(&mut c.output, &head, n, &compressed, key);
            }
            // Every frame has the same header but for the key. (By reference: a copy on the
            // stack, read back at once a word at a time, stalls store-to-load forwarding.)
            None => match &self.head {
                Some((head, n)) => crate::ws::mask::frame_into(&mut c.output, head, *n, payload, key),
                None => {
                    let mut head = [0u8; MAX_HEADER_LEN];
                    let n = encode_header(&mut head, true, opcode, payload.len(), Some(key));
                    crate::ws::mask::frame_into(&mut c.output, &head, n, payload, key);
                }
            },
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
        self.wire_out += done as u64;
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
                    self.wire_in += n as u64;
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
        let stamp = Stamp::at(at);
        let name = self.first + i;
        loop {
            let c = &mut self.conns[i];
            let filled = c.filled;
            let input = &mut c.input[start..filled];
            let broke = |e: WsError| format!("connection {name}: the server broke the protocol: {}", e.reason());
            // The common frame first (a whole small message), then the general path.
            let (payload, used) = if let Some(got) = c.endpoint.receive_message(&mut *input, stamp) {
                let (_, payload, used) = got.map_err(broke)?;
                (Payload::Borrowed(payload), used)
            } else {
                let received =
                    c.endpoint.receive(input, stamp, usize::MAX, &mut self.codecs, c.pmd.as_mut()).map_err(broke)?;
                let used = received.used;
                match received.event {
                    None if used == 0 => break,
                    Some(Event::Message(_, payload)) => (payload, used),
                    Some(Event::CloseBegun { code, reason }) => {
                        return Err(format!("connection {name}: the server closed ({code:?} {reason})"))
                    }
                    _ => {
                        start += used;
                        continue;
                    }
                }
            };
            let payload = payload.as_slice();
            match self.plan.mode {
                Mode::Fanout => {
                    let Some((sender, round)) = self.payloads.tag_of(payload).map(split_fanout_tag) else {
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
                    if !self.payloads.matches(payload, fanout_tag(sender, self.round)) {
                        return Err(format!("connection {name}: delivery from {sender} differs from what was sent"));
                    }
                    self.owed -= 1;
                }
                _ => {
                    let seq = c.echoed;
                    if !self.payloads.matches(payload, echo_tag(seq, name)) {
                        return Err(format!("connection {name}: echo of message {seq} differs from what was sent"));
                    }
                    if let (Some(h), Some(sent)) = (&mut self.latency, c.sent_at.pop_front()) {
                        let us = at.saturating_duration_since(sent).as_micros() as u64;
                        h.saturating_record(us.clamp(1, LATENCY_MAX_US));
                    }
                }
            }
            c.echoed += 1;
            messages += 1;
            bytes += payload.len() as u64;
            start += used;
        }
        let c = &mut self.conns[i];
        c.input.copy_within(start..c.filled, 0);
        c.filled -= start;
        Ok((messages, bytes))
    }
}
