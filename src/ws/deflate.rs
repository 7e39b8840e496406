//! permessage-deflate's compression (RFC 7692 §7.2): a message is raw DEFLATE ending with an
//! empty stored block whose 4 tail bytes (`00 00 ff ff`) are not sent.
//!
//! zlib-rs does the work: a memory-safe zlib in Rust, as fast as zlib-ng on these machines,
//! with zlib's full control over the window and the memory level (flate2 hides the memory
//! level), and nothing to build but Rust.
//!
//! Inflating is bounded: output grows at most [`CHUNK`] bytes at a time, and the message fails
//! ([`InflateFail::TooBig`], close 1009) as soon as it passes the limit, so a small frame that
//! inflates to gigabytes costs at most the limit plus one chunk.

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

use super::extensions::Agreed;

/// Output grows by this much at most per step.
pub const CHUNK: usize = 64 << 10;
/// The tail every compressed message ends with, removed by the sender (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a message did not inflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateFail {
    /// It would pass `max_message_size` (1009).
    TooBig,
    /// Not valid DEFLATE data (1007).
    Invalid,
}

/// A compressor: one per connection with context takeover, or one per worker, reset after
/// every message, without.
pub struct Deflater {
    z: Deflate,
    takeover: bool,
}

impl Deflater {
    /// `window_bits` 9–15, `mem_level` 1–9 (checked at configuration load); `level` 0–9.
    pub fn new(window_bits: u8, mem_level: u8, level: i32, takeover: bool) -> Deflater {
        let config = DeflateConfig {
            level,
            window_bits: -i32::from(window_bits.clamp(9, 15)),
            mem_level: i32::from(mem_level.clamp(1, 9)),
            ..DeflateConfig::default()
        };
        Deflater { z: Deflate::new_with_config(config), takeover }
    }

    /// Appends `payload` compressed as one message to `out` (the tail removed).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = payload;
        loop {
            let room = (input.len() / 2).clamp(64, CHUNK);
            let at = out.len();
            out.resize(at + room, 0);
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            // SyncFlush ends the output on a byte boundary with the empty stored block.
            let status = self.z.compress(input, &mut out[at..], DeflateFlush::SyncFlush);
            let used = (self.z.total_in() - in_before) as usize;
            let made = (self.z.total_out() - out_before) as usize;
            out.truncate(at + made);
            input = &input[used.min(input.len())..];
            // Done when all input is in and the flush did not fill the output.
            if status.is_err() || (input.is_empty() && made < room) {
                break;
            }
        }
        if out.len() >= start + TAIL.len() && out[out.len() - TAIL.len()..] == TAIL {
            out.truncate(out.len() - TAIL.len());
        }
        if !self.takeover {
            self.z.reset();
        }
    }
}

/// A decompressor. With the client's context takeover it keeps its window between messages
/// (one per connection); without, it is reset after each message and can be the worker's.
pub struct Inflater {
    z: Inflate,
    /// The message's data ended with a final block (BFINAL): the rest of the message (the
    /// tail) is past the stream's end and ignored (§7.2.2), and the next message starts a
    /// new stream.
    ended: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        // Window 15 inflates anything a client may send, whatever window it compressed with.
        Inflater { z: Inflate::new(false, 15), ended: false }
    }

    /// Inflates one frame's payload of a compressed message, appending to `out`; `last`: the
    /// message's final frame (the tail is added). Fails as soon as `out` would pass `max`.
    pub fn inflate(&mut self, input: &[u8], last: bool, max: usize, out: &mut Vec<u8>) -> Result<(), InflateFail> {
        self.feed(input, max, out, usize::MAX)?;
        self.finish_if(last, max, out)
    }

    /// Inflates from `input` until it is used up or about `budget` more bytes came out (at
    /// least one step); returns the input bytes used. The message goes on with more calls,
    /// then [`Inflater::inflate`] with no input and `last`.
    pub fn inflate_some(
        &mut self,
        input: &[u8],
        max: usize,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Result<usize, InflateFail> {
        self.feed(input, max, out, budget)
    }

    fn finish_if(&mut self, last: bool, max: usize, out: &mut Vec<u8>) -> Result<(), InflateFail> {
        if last {
            self.feed(&TAIL, max, out, usize::MAX)?;
            if std::mem::take(&mut self.ended) {
                self.z.reset(false);
            }
        }
        Ok(())
    }

    /// Forgets the window (the client resets its own after every message, or a message
    /// failed).
    pub fn reset(&mut self) {
        self.z.reset(false);
        self.ended = false;
    }

    /// Inflates `input` (stopping once `budget` bytes came out); the input bytes used.
    fn feed(&mut self, mut input: &[u8], max: usize, out: &mut Vec<u8>, budget: usize) -> Result<usize, InflateFail> {
        let total = input.len();
        let start = out.len();
        // Room for a few times the input first (chatty messages are small), then doubling, at
        // most a chunk per step: zeroing a chunk for a 200-byte message would cost more than
        // inflating it.
        let mut step = (input.len() * 4).clamp(256, CHUNK);
        while !self.ended {
            if out.len() - start >= budget {
                return Ok(total - input.len());
            }
            let room = max.saturating_add(1).saturating_sub(out.len()).min(step);
            step = (step * 2).min(CHUNK);
            if room == 0 {
                return Err(InflateFail::TooBig);
            }
            let at = out.len();
            if out.capacity() < at + room {
                // Doubling, but never past the limit: a bomb stopped at `max` has not made the
                // server allocate twice that.
                let grown = (out.capacity() * 2).max(at + room).min(max.saturating_add(1));
                out.reserve_exact(grown - at);
            }
            out.resize(at + room, 0);
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self.z.decompress(input, &mut out[at..], InflateFlush::SyncFlush);
            let used = (self.z.total_in() - in_before) as usize;
            let made = (self.z.total_out() - out_before) as usize;
            out.truncate(at + made);
            input = &input[used.min(input.len())..];
            if out.len() > max {
                return Err(InflateFail::TooBig);
            }
            match status {
                Err(_) => return Err(InflateFail::Invalid),
                Ok(Status::StreamEnd) => self.ended = true,
                Ok(_) if made < room && (input.is_empty() || used == 0) => {
                    // All input taken with room to spare; input left that zlib will not take
                    // with room to spare is not DEFLATE.
                    return if input.is_empty() { Ok(total) } else { Err(InflateFail::Invalid) };
                }
                Ok(_) => {}
            }
        }
        // Past the final block, what follows is ignored (as zlib does).
        Ok(total)
    }
}

/// Messages larger than this are sent uncompressed (a server may leave any message
/// uncompressed, RFC 7692 §6): compressing one takes a single call, and at level 1 a
/// megabyte is a few milliseconds of the loop, the most one client's message should cost
/// the others. Inflating is not capped this way: it goes on over several drives instead.
pub const COMPRESS_MAX: usize = 1 << 20;

/// A compressed message being inflated across drives: its input, what came out so far, and
/// (without context takeover) an inflater of its own.
pub struct InflateJob {
    input: Vec<u8>,
    used: usize,
    pub out: Vec<u8>,
    own: Option<Box<Inflater>>,
}

/// A connection's permessage-deflate: what was agreed, and the codecs it owns when it keeps
/// context between messages (created at first use, so an idle connection holds none).
pub struct PerMessage {
    pub agreed: Agreed,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    level: i32,
    mem_level: u8,
    inflater: Option<Box<Inflater>>,
    deflater: Option<Box<Deflater>>,
}

/// A worker's codecs for connections without context takeover: reset after every message,
/// shared by all of them (one compressor per window size in use).
#[derive(Default)]
pub struct SharedCodecs {
    deflaters: [Option<(i32, Deflater)>; 7],
    inflater: Option<Inflater>,
    /// Open connections of this worker that keep context (dedicated mode's codecs).
    pub dedicated: usize,
}

/// The shared compressors' memory level. In zlib it sized the hash table cleared after every
/// message (128 KiB at 8, 4 KiB at 4); zlib-rs 0.6 keeps a fixed 64 Ki-entry table whatever
/// the level, so every message's reset clears 128 KiB (9 % of the server's core on a 1 KiB
/// JSON echo, `perf record`: docs/performance.md). Here the level only sizes the symbol
/// buffer (1,024 symbols a block at 4), which small messages never fill.
const SHARED_MEM_LEVEL: u8 = 4;

impl SharedCodecs {
    /// Compresses one message with the shared compressor for `window_bits` (9–15).
    pub fn compress(&mut self, window_bits: u8, level: i32, payload: &[u8], out: &mut Vec<u8>) {
        let slot = &mut self.deflaters[usize::from(window_bits.clamp(9, 15) - 9)];
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Deflater::new(window_bits, SHARED_MEM_LEVEL, level, false)));
        }
        if let Some((_, d)) = slot {
            d.compress(payload, out);
        }
    }
}

impl PerMessage {
    pub fn new(agreed: Agreed, threshold: usize, level: i32, mem_level: u8) -> PerMessage {
        PerMessage { agreed, threshold, level, mem_level, inflater: None, deflater: None }
    }

    /// A client's, from the server's answer (as the server states it). Asked to compress
    /// with a window of 8 bits, which zlib cannot deflate raw, it sends every message
    /// uncompressed (RFC 7692 §6 lets either side leave any message so).
    pub fn for_client(answer: Agreed, threshold: usize, level: i32, mem_level: u8) -> PerMessage {
        let agreed = answer.seen_from_client();
        let threshold = if agreed.server_max_window_bits < 9 { usize::MAX } else { threshold };
        PerMessage::new(agreed, threshold, level, mem_level)
    }

    /// Inflates a compressed message into `out` (at most `max` bytes) if it takes no more
    /// than about `budget`: `Ok(None)`. Otherwise `Ok(Some(used))`: the message goes on in
    /// a job ([`PerMessage::resume`]) from input byte `used`. With context takeover that is
    /// where this step stopped (`out` holds what came of it); without, the worker's inflater
    /// must serve others meanwhile, so the job starts over with one of its own (`used` is 0,
    /// `out` emptied): at most one budget of work is done twice, for large messages only.
    pub fn inflate_within(
        &mut self,
        shared: &mut SharedCodecs,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Result<Option<usize>, InflateFail> {
        let own = !self.agreed.client_no_context_takeover;
        let inflater: &mut Inflater = if own {
            self.inflater.get_or_insert_with(|| Box::new(Inflater::new()))
        } else {
            shared.inflater.get_or_insert_with(Inflater::new)
        };
        let result = inflater.inflate_some(payload, max, out, budget).and_then(|used| {
            if used < payload.len() {
                return Ok(Some(used));
            }
            inflater.inflate(&[], true, max, out).map(|()| None)
        });
        match result {
            Ok(Some(_)) if !own => {
                inflater.reset();
                out.clear();
                Ok(Some(0))
            }
            Ok(None) if !own => {
                inflater.reset();
                Ok(None)
            }
            Err(e) => {
                inflater.reset();
                Err(e)
            }
            ok => ok,
        }
    }

    /// The job that goes on with a message [`PerMessage::inflate_within`] did not finish:
    /// the whole compressed `input`, the bytes of it `used`, and what came out so far.
    pub fn resume(&self, input: Vec<u8>, used: usize, out: Vec<u8>) -> InflateJob {
        let own = self.agreed.client_no_context_takeover.then(|| Box::new(Inflater::new()));
        InflateJob { input, used, out, own }
    }

    /// Inflates more of `job`, about `budget` bytes at most; `Ok(true)` once it is whole
    /// (in `job.out`).
    pub fn inflate_step(&mut self, job: &mut InflateJob, max: usize, budget: usize) -> Result<bool, InflateFail> {
        let inflater: &mut Inflater = match &mut job.own {
            Some(own) => own,
            None => self.inflater.get_or_insert_with(|| Box::new(Inflater::new())),
        };
        let result = inflater.inflate_some(&job.input[job.used..], max, &mut job.out, budget).and_then(|used| {
            job.used += used;
            if job.used < job.input.len() {
                return Ok(false);
            }
            inflater.inflate(&[], true, max, &mut job.out).map(|()| true)
        });
        if result.is_err() {
            inflater.reset();
        }
        result
    }

    /// The message compressed, or `None` when it is under the threshold or over
    /// [`COMPRESS_MAX`] (sent as is).
    pub fn compress(&mut self, shared: &mut SharedCodecs, payload: &[u8]) -> Option<Vec<u8>> {
        if !self.wants(payload.len()) {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() / 2 + 16);
        let window = self.agreed.server_max_window_bits;
        if self.agreed.server_no_context_takeover {
            shared.compress(window, self.level, payload, &mut out);
        } else {
            let (level, mem) = (self.level, self.mem_level);
            self.deflater
                .get_or_insert_with(|| Box::new(Deflater::new(window, mem, level, true)))
                .compress(payload, &mut out);
        }
        Some(out)
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// Whether this connection takes a message of `len` bytes compressed.
    pub fn wants(&self, len: usize) -> bool {
        (self.threshold..=COMPRESS_MAX).contains(&len)
    }

    /// Whether this connection keeps context (and so may hold codecs of its own).
    pub fn keeps_context(&self) -> bool {
        !self.agreed.server_no_context_takeover || !self.agreed.client_no_context_takeover
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: &mut Deflater, i: &mut Inflater, msg: &[u8]) {
        let mut z = Vec::new();
        d.compress(msg, &mut z);
        let mut out = Vec::new();
        i.inflate(&z, true, usize::MAX, &mut out).unwrap();
        assert_eq!(out, msg);
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|n| format!("{{\"n\":{}}}", n % 97).into_bytes()).collect();
        for takeover in [true, false] {
            for window in [9, 12, 15] {
                let mut d = Deflater::new(window, 8, 6, takeover);
                let mut i = Inflater::new();
                for msg in [&b""[..], b"a", b"hello hello hello", &text[..1000], &text] {
                    round_trip(&mut d, &mut i, msg);
                    if !takeover {
                        i.reset();
                    }
                }
            }
        }
        // Context takeover makes a repeated message smaller the second time.
        let mut d = Deflater::new(15, 8, 6, true);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.compress(&text[..2000], &mut a);
        d.compress(&text[..2000], &mut b);
        assert!(b.len() < a.len() / 4, "{} then {}", a.len(), b.len());
    }

    #[test]
    fn the_rfc_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let mut out = Vec::new();
        Inflater::new().inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: "Hello" as a stored block with BFINAL set, then the next message.
        let mut i = Inflater::new();
        let mut out = Vec::new();
        i.inflate(&[0x01, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f], true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        out.clear();
        i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_large_message_inflates_in_steps_to_the_same_bytes() {
        use crate::ws::extensions::{negotiate, Compression};
        let text: Vec<u8> = (0..400_000u32).flat_map(|n| format!("{{\"n\":{}}}", n % 977).into_bytes()).collect();
        let mut z = Vec::new();
        Deflater::new(15, 8, 6, false).compress(&text, &mut z);
        let offers: [&[u8]; 1] = [b"permessage-deflate"];
        for mode in [Compression::Shared, Compression::Dedicated { window_bits: 15, mem_level: 8 }] {
            let agreed = negotiate(offers.iter().copied(), mode).unwrap();
            let mut pmd = PerMessage::new(agreed, 64, 1, 8);
            let mut shared = SharedCodecs::default();
            for round in 0..2 {
                let mut out = Vec::new();
                let used = pmd.inflate_within(&mut shared, &z, usize::MAX, &mut out, 256 << 10).unwrap().unwrap();
                let mut job = pmd.resume(z.clone(), used, out);
                let mut steps = 1;
                while !pmd.inflate_step(&mut job, usize::MAX, 256 << 10).unwrap() {
                    steps += 1;
                    // Each step stops near its budget.
                    assert!(job.out.len() <= (steps * (256 << 10)) + CHUNK, "{} after {steps}", job.out.len());
                }
                assert!(steps >= text.len() / (256 << 10) - 1, "{steps} steps for {} bytes", text.len());
                assert!(job.out == text, "round {round} ({mode:?})");
                // Small messages are whole in one go, and the worker's inflater is left clean.
                let mut small = Vec::new();
                Deflater::new(15, 8, 6, false).compress(&text[..3000], &mut small);
                let mut out = Vec::new();
                assert_eq!(pmd.inflate_within(&mut shared, &small, usize::MAX, &mut out, 256 << 10), Ok(None));
                assert!(out == text[..3000]);
            }
            // A bomb fails at the limit, in whichever step.
            let zeros = vec![0u8; 4 << 20];
            let mut bomb = Vec::new();
            Deflater::new(15, 8, 9, false).compress(&zeros, &mut bomb);
            let mut job = pmd.resume(bomb, 0, Vec::new());
            let result = loop {
                match pmd.inflate_step(&mut job, 1 << 20, 128 << 10) {
                    Ok(false) => continue,
                    other => break other,
                }
            };
            assert_eq!(result, Err(InflateFail::TooBig));
            assert!(job.out.capacity() <= (1 << 20) + 1, "{}", job.out.capacity());
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let mut z = Vec::new();
        Deflater::new(15, 8, 9, false).compress(&zeros, &mut z);
        assert!(z.len() < 2000, "{}", z.len());
        let mut out = Vec::new();
        assert_eq!(Inflater::new().inflate(&z, true, 100_000, &mut out), Err(InflateFail::TooBig));
        assert!(out.capacity() <= 100_001, "{}", out.capacity());
        // The same message split into many small frames, counted across them.
        let mut i = Inflater::new();
        let mut out = Vec::new();
        let mut result = Ok(());
        for (n, piece) in z.chunks(3).enumerate() {
            result = i.inflate(piece, n == z.chunks(3).count() - 1, 100_000, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(InflateFail::TooBig));
        // Exactly at the limit is fine.
        let mut out = Vec::new();
        Inflater::new().inflate(&z, true, 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
    }

    #[test]
    fn garbage_is_invalid() {
        let mut out = Vec::new();
        assert_eq!(Inflater::new().inflate(&[0xff; 64], true, 1000, &mut out), Err(InflateFail::Invalid));
    }
}
