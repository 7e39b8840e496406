//! One WebSocket endpoint, sans-I/O, for either role: the [`Session`] (frames, pings,
//! deadlines, the close handshake), the wire it speaks — RFC 6455, with permessage-deflate
//! and a large compressed message's inflating spread over several calls, or a legacy hixie
//! draft with its decoder and the translator of what is sent — and the one mapping from
//! every failure to its close code ([`WsError::close_code`]).
//!
//! Receiving: [`Endpoint::receive`] takes the unread bytes, the time and a work budget and
//! returns what the caller must act on ([`Event`]) and the bytes it consumed. Sending: the
//! caller frames messages (compressing with its [`PerMessage`]) or queues RFC 6455 frames and
//! has them re-encoded for this wire by [`Endpoint::encode_queued`].
//!
//! The codecs are lent, not owned: the caller keeps a connection's [`PerMessage`] (what was
//! agreed, and codecs of its own with context takeover) as it keeps the worker's
//! [`SharedCodecs`], and passes both to each call, so it can frame its replies with them
//! while a received message is still borrowed. The server's connection,
//! a client and the load tools drive the same code; tests drive it with a synthetic clock.

use std::time::Instant;

use super::close::{self, CloseFrame};
use super::deflate::{InflateFail, InflateJob, PerMessage, SharedCodecs};
use super::frame::Role;
use super::hixie::{self, Draft, HixieError};
use super::message::{MessageKind, MessageLimits, WholeMessage};
use super::session::{Received as SessionEvent, Session};
use super::ProtocolError;
use crate::buffer::{OutQueue, Pools};
use crate::stamp::Stamp;

/// Messages at least this large that were assembled in the decoder are handed over as owned
/// buffers (no copy); smaller ones are borrowed.
pub const OWN_PAYLOAD_MIN: usize = 4096;

/// A received message's payload: borrowed from the input (or the decoder), or owned (a large
/// message assembled across frames or reads, or inflated, handed over without a copy).
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

/// What the peer's bytes ask of the caller.
pub enum Event<'a> {
    /// A whole data message; text is valid UTF-8 (legacy drafts send text only).
    Message(MessageKind, Payload<'a>),
    /// Answer with a pong carrying this payload (§5.5.2).
    Ping(&'a [u8]),
    Pong,
    /// The peer began closing: answer with [`Endpoint::close_reply`] for `code`, then end
    /// (§5.5.1). A legacy client's close has no code.
    CloseBegun {
        code: Option<u16>,
        reason: &'a str,
    },
    /// The peer answered our close: the handshake is complete.
    CloseAnswered(Option<u16>),
    /// The work budget is spent inside a message (a large compressed one): call again, after
    /// others were served, with the same unread bytes.
    Yield,
}

/// One [`Endpoint::receive`]'s outcome.
pub struct Received<'a> {
    /// `None` with `used == 0`: more bytes are needed. `None` with `used > 0`: bytes went
    /// into a message in progress (or were dropped while closing); call again.
    pub event: Option<Event<'a>>,
    pub used: usize,
    /// Bytes inflated during the call (what it spent of the budget).
    pub inflated: usize,
}

/// Every way a peer can fail the connection after the handshake, on any wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// An RFC 6455 rule.
    Protocol(ProtocolError),
    /// A permessage-deflate message that does not inflate, or inflates past the limit.
    Inflate(InflateFail),
    /// A compressed text message that is not UTF-8 once inflated (§8.1).
    InflatedUtf8,
    /// A legacy draft's framing.
    Hixie(HixieError),
}

impl WsError {
    /// The close code the peer gets (RFC 6455 §7.4.1): the one place every failure is mapped.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Protocol(e) => e.close_code(),
            WsError::Inflate(InflateFail::TooBig) | WsError::Hixie(HixieError::TooBig) => close::MESSAGE_TOO_BIG,
            WsError::Inflate(InflateFail::Invalid)
            | WsError::InflatedUtf8
            | WsError::Hixie(HixieError::InvalidUtf8) => close::INVALID_PAYLOAD,
            WsError::Hixie(_) => close::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame and the log.
    pub fn reason(self) -> &'static str {
        match self {
            WsError::Protocol(e) => e.reason(),
            WsError::Inflate(InflateFail::TooBig) => "message too big once inflated",
            WsError::Inflate(InflateFail::Invalid) => "invalid compressed data",
            WsError::InflatedUtf8 => "invalid UTF-8 in a text message",
            WsError::Hixie(e) => e.reason(),
        }
    }
}

impl From<ProtocolError> for WsError {
    fn from(e: ProtocolError) -> WsError {
        WsError::Protocol(e)
    }
}

/// The session and what few endpoints have besides (boxed: every open connection carries an
/// endpoint).
pub struct Endpoint {
    session: Session,
    wire: Option<Box<Wire>>,
}

#[derive(Default)]
struct Wire {
    /// A peer speaking a legacy draft (hixie-76 / -75).
    legacy: Option<Legacy>,
    /// A large compressed message being inflated over several calls.
    inflating: Option<Inflating>,
}

/// A legacy peer: its frames in, RFC 6455 frames translated on the way out.
struct Legacy {
    draft: Draft,
    decoder: hixie::Decoder,
    translator: hixie::Translator,
}

/// A compressed message too large to inflate in one call: its kind, and the work so far.
struct Inflating {
    kind: MessageKind,
    job: InflateJob,
}

/// Where an event's bytes are, once the decoder's borrow is over.
#[derive(Clone, Copy)]
enum At {
    /// At this offset of the input.
    Input(usize),
    /// In the decoder's own buffer (a message assembled across frames or reads, or a control
    /// frame that arrived in pieces).
    Decoder,
}

/// An event without its borrow.
enum Got {
    Message(MessageKind, At, usize),
    Inflated(MessageKind, Vec<u8>),
    /// A compressed message to go on with in later calls: its bytes, the input used, and the
    /// output so far.
    Defer(MessageKind, At, usize, usize, Vec<u8>),
    Ping(At, usize),
    Pong,
    CloseBegun(Option<u16>, At, usize),
    CloseAnswered(Option<u16>),
}

impl Endpoint {
    /// An endpoint opened at `now` speaking RFC 6455; `compressed`: permessage-deflate was
    /// agreed (the caller passes its [`PerMessage`] to every call).
    pub fn new(role: Role, limits: MessageLimits, now: Instant, compressed: bool) -> Endpoint {
        let mut session = Session::new(role, limits, now);
        if compressed {
            session.allow_compression();
        }
        Endpoint { session, wire: None }
    }

    /// A server endpoint for a client speaking a legacy draft.
    pub fn legacy(draft: Draft, limits: MessageLimits, now: Instant) -> Endpoint {
        let legacy = Legacy { draft, decoder: hixie::Decoder::default(), translator: hixie::Translator::default() };
        let wire = Some(Box::new(Wire { legacy: Some(legacy), ..Wire::default() }));
        Endpoint { session: Session::new(Role::Server, limits, now), wire }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The legacy draft the peer speaks, if any.
    pub fn draft(&self) -> Option<Draft> {
        Some(self.wire.as_ref()?.legacy.as_ref()?.draft)
    }

    /// A large compressed message is being inflated over several calls.
    pub fn is_inflating(&self) -> bool {
        self.wire.as_ref().is_some_and(|w| w.inflating.is_some())
    }

    /// No frame or message is partly received: nothing is lost if the input buffer goes.
    pub fn is_between_messages(&self) -> bool {
        match self.wire.as_ref().and_then(|w| w.legacy.as_ref()) {
            Some(legacy) => legacy.decoder.is_between_messages(),
            None => self.session.is_between_messages(),
        }
    }

    /// Our close frame, for `code` and `reason`, into `out`: RFC 6455's, hixie-76's
    /// `0xFF 0x00`, or nothing for hixie-75 (which has no closing handshake).
    pub fn close_frame(&self, out: &mut OutQueue, pools: &mut Pools, code: Option<u16>, reason: &str) {
        match self.draft() {
            None => out.push_close(pools, code, reason),
            Some(Draft::Hixie76) => out.push_bytes(pools, &hixie::CLOSE),
            Some(Draft::Hixie75) => {}
        }
    }

    /// The answer to a peer's close ([`Event::CloseBegun`]): its code echoed (§5.5.1).
    pub fn close_reply(&self, out: &mut OutQueue, pools: &mut Pools, code: Option<u16>) {
        self.close_frame(out, pools, code, "");
    }

    /// Decodes from `input` (the unread bytes; RFC 6455 unmasks in place). `budget`: bytes it
    /// may inflate in this call, with `pmd` (this connection's) and `codecs` (the worker's). After our close frame only the peer's close matters (§5.5.1):
    /// other frames are consumed and dropped, and a message being inflated is abandoned.
    pub fn receive<'a>(
        &'a mut self,
        input: &'a mut [u8],
        now: Stamp,
        budget: usize,
        codecs: &mut SharedCodecs,
        mut pmd: Option<&mut PerMessage>,
    ) -> Result<Received<'a>, WsError> {
        let max = self.session.max_message();
        if let Some(wire) = self.wire.as_deref_mut() {
            if wire.inflating.is_some() {
                if self.session.is_closing() {
                    wire.inflating = None;
                } else {
                    return self.resume_inflating(max, budget, pmd);
                }
            }
            if wire.legacy.is_some() {
                return self.receive_legacy(input, now, max);
            }
        }
        // The input's place, to tell afterwards where the event's bytes are.
        let (base, size) = (input.as_ptr() as usize, input.len());
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize;
            if start >= base && start + part.len() <= base + size {
                At::Input(start - base)
            } else {
                At::Decoder
            }
        };
        let (got, used) = {
            let (event, used) = self.session.receive(&mut *input, now)?;
            let got = match event {
                None => None,
                Some(SessionEvent::Message(kind, p)) => Some(Got::Message(kind, at(p), p.len())),
                Some(SessionEvent::Compressed(kind, p)) => {
                    Some(inflate(kind, p, at(p), pmd.as_deref_mut(), codecs, max, budget)?)
                }
                Some(SessionEvent::Ping(p)) => Some(Got::Ping(at(p), p.len())),
                Some(SessionEvent::Pong(_)) => Some(Got::Pong),
                Some(SessionEvent::CloseBegun(CloseFrame { code, reason })) => {
                    Some(Got::CloseBegun(code, at(reason.as_bytes()), reason.len()))
                }
                Some(SessionEvent::CloseAnswered(code)) => Some(Got::CloseAnswered(code)),
            };
            (got, used)
        };
        let mut inflated = 0;
        let event = match got {
            None => None,
            Some(Got::Message(kind, at, len)) => Some(Event::Message(kind, payload(&mut self.session, input, at, len))),
            Some(Got::Inflated(kind, out)) => {
                inflated = out.len();
                Some(Event::Message(kind, Payload::Owned(out)))
            }
            Some(Got::Defer(kind, at, len, done, out)) => {
                inflated = out.len();
                let compressed = match at {
                    At::Input(start) => input[start..start + len].to_vec(),
                    At::Decoder => self.session.take_assembled().unwrap_or_default(),
                };
                if let Some(pmd) = &pmd {
                    let job = pmd.resume(compressed, done, out);
                    self.wire.get_or_insert_with(Box::default).inflating = Some(Inflating { kind, job });
                }
                Some(Event::Yield)
            }
            Some(Got::Ping(at, len)) => Some(Event::Ping(bytes(&self.session, input, at, 0, len))),
            Some(Got::Pong) => Some(Event::Pong),
            Some(Got::CloseBegun(code, at, len)) => {
                // In the decoder's buffer the reason follows the two bytes of the code.
                let skip = if code.is_some() { 2 } else { 0 };
                let reason = std::str::from_utf8(bytes(&self.session, input, at, skip, len)).unwrap_or("");
                Some(Event::CloseBegun { code, reason })
            }
            Some(Got::CloseAnswered(code)) => Some(Event::CloseAnswered(code)),
        };
        Ok(Received { event, used, inflated })
    }

    /// The fast lane of [`Endpoint::receive`]: on an RFC 6455 wire with no large message
    /// being inflated, a whole, unfragmented, uncompressed data message at the start of
    /// `input` (see [`Session::receive_message`]). Returns its kind, payload and the bytes
    /// used; `None`, with nothing touched, when [`Endpoint::receive`] must decide. Callers
    /// try this first for each frame: it is what a flood of small messages consists of.
    #[inline(always)]
    pub fn receive_message<'a>(
        &mut self,
        input: &'a mut [u8],
        now: Stamp,
    ) -> Option<Result<WholeMessage<'a>, WsError>> {
        if self.wire.as_deref().is_some_and(|w| w.legacy.is_some() || w.inflating.is_some()) {
            return None;
        }
        Some(self.session.receive_message(input, now)?.map_err(WsError::Protocol))
    }

    /// Goes on with a large compressed message for at most `budget` bytes: the whole message,
    /// or [`Event::Yield`] again.
    #[cold]
    #[inline(never)]
    fn resume_inflating(
        &mut self,
        max: usize,
        budget: usize,
        pmd: Option<&mut PerMessage>,
    ) -> Result<Received<'_>, WsError> {
        let Some(wire) = self.wire.as_deref_mut() else { return Err(WsError::Inflate(InflateFail::Invalid)) };
        let (Some(pmd), Some(inflating)) = (pmd, wire.inflating.as_mut()) else {
            return Err(WsError::Inflate(InflateFail::Invalid));
        };
        let before = inflating.job.out.len();
        let result = pmd.inflate_step(&mut inflating.job, max, budget);
        let inflated = inflating.job.out.len().saturating_sub(before);
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                wire.inflating = None;
                return Err(WsError::Inflate(e));
            }
        };
        if !done {
            return Ok(Received { event: Some(Event::Yield), used: 0, inflated });
        }
        let Some(Inflating { kind, job }) = wire.inflating.take() else {
            return Err(WsError::Inflate(InflateFail::Invalid));
        };
        let message = job.out;
        if kind == MessageKind::Text && super::utf8::validate(&message).is_err() {
            return Err(WsError::InflatedUtf8);
        }
        let event = Some(Event::Message(kind, Payload::Owned(message)));
        Ok(Received { event, used: 0, inflated })
    }

    /// A legacy client's frames: text messages, and its close.
    #[inline(never)]
    fn receive_legacy<'a>(&'a mut self, input: &'a [u8], now: Stamp, max: usize) -> Result<Received<'a>, WsError> {
        let closing = self.session.is_closing();
        let Some(legacy) = self.wire.as_deref_mut().and_then(|w| w.legacy.as_mut()) else {
            return Ok(Received { event: None, used: 0, inflated: 0 });
        };
        let (frame, used) = legacy.decoder.decode(input, max).map_err(WsError::Hixie)?;
        let len = match frame {
            None => return Ok(Received { event: None, used, inflated: 0 }),
            Some(hixie::Frame::Close) if closing => {
                return Ok(Received { event: Some(Event::CloseAnswered(None)), used, inflated: 0 });
            }
            Some(hixie::Frame::Close) => {
                self.session.close_at(now);
                let event = Some(Event::CloseBegun { code: None, reason: "" });
                return Ok(Received { event, used, inflated: 0 });
            }
            // After our close only the client's matters.
            Some(hixie::Frame::Text(_)) if closing => return Ok(Received { event: None, used, inflated: 0 }),
            Some(hixie::Frame::Text(text)) => text.len(),
        };
        let payload = match legacy.decoder.take_assembled() {
            Some(joined) => Payload::Owned(joined),
            // A frame read whole: `0x00`, the text, `0xFF`, ending at `used`.
            None => Payload::Borrowed(&input[used - 1 - len..used - 1]),
        };
        self.session.note_message(now);
        Ok(Received { event: Some(Event::Message(MessageKind::Text, payload)), used, inflated: 0 })
    }

    /// Re-encodes RFC 6455 frames an app queued (`frames`, whole frames) for this wire into
    /// `out`: translated to legacy text frames, or with whole messages compressed (`pmd`).
    /// Returns the messages that could not be sent (a legacy peer takes text only).
    pub fn encode_queued(
        &mut self,
        frames: &[u8],
        out: &mut OutQueue,
        pools: &mut Pools,
        codecs: &mut SharedCodecs,
        pmd: Option<&mut PerMessage>,
    ) -> usize {
        let max = self.session.max_message();
        if let Some(legacy) = self.wire.as_deref_mut().and_then(|w| w.legacy.as_mut()) {
            let mut text = Vec::with_capacity(frames.len());
            let done = legacy.translator.translate(frames, max, &mut text);
            out.push_bytes(pools, &text);
            return done.dropped;
        }
        match pmd {
            Some(pmd) => out.push_frames_compressing(pools, frames, pmd, codecs),
            None => out.push_bytes(pools, frames),
        }
        0
    }
}

/// A message's payload: in place in the input, or the decoder's buffer (taken whole when
/// large, so the app may keep it without a copy).
fn payload<'a>(session: &'a mut Session, input: &'a [u8], at: At, len: usize) -> Payload<'a> {
    match at {
        At::Input(start) => Payload::Borrowed(&input[start..start + len]),
        At::Decoder if len >= OWN_PAYLOAD_MIN => match session.take_assembled() {
            Some(owned) => Payload::Owned(owned),
            None => Payload::Borrowed(&[]),
        },
        At::Decoder => Payload::Borrowed(session.lent(0, len)),
    }
}

/// A control frame's bytes: in place, or `skip..skip + len` of the decoder's buffer.
fn bytes<'a>(session: &'a Session, input: &'a [u8], at: At, skip: usize, len: usize) -> &'a [u8] {
    match at {
        At::Input(start) => &input[start..start + len],
        At::Decoder => session.lent(skip, len),
    }
}

/// A compressed message, inflated whole within `budget` (and checked, if text), or the work
/// so far to go on with in later calls. Out of the hot path of plain messages.
#[inline(never)]
fn inflate(
    kind: MessageKind,
    payload: &[u8],
    at: At,
    pmd: Option<&mut PerMessage>,
    codecs: &mut SharedCodecs,
    max: usize,
    budget: usize,
) -> Result<Got, WsError> {
    let Some(pmd) = pmd else { return Err(WsError::Inflate(InflateFail::Invalid)) };
    let mut out = Vec::new();
    match pmd.inflate_within(codecs, payload, max, &mut out, budget).map_err(WsError::Inflate)? {
        None if kind == MessageKind::Text && super::utf8::validate(&out).is_err() => Err(WsError::InflatedUtf8),
        None => Ok(Got::Inflated(kind, out)),
        Some(done) => Ok(Got::Defer(kind, at, payload.len(), done, out)),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;
    use crate::ws::deflate::Deflater;
    use crate::ws::extensions::{negotiate, Compression};
    use crate::ws::frame::{encode_header, Opcode, MAX_HEADER_LEN};
    use crate::ws::session::Timing;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    /// A frame as `role`'s peer sends it: masked towards a server, plain towards a client.
    fn frame(to: Role, first: u8, payload: &[u8]) -> Vec<u8> {
        let key = (to == Role::Server).then_some([9, 8, 7, 6]);
        let mut head = [0u8; MAX_HEADER_LEN];
        let opcode = match first & 0x0F {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            _ => Opcode::Pong,
        };
        let n = encode_header(&mut head, first & 0x80 != 0, opcode, payload.len(), key);
        head[0] |= first & 0x70;
        let mut v = head[..n].to_vec();
        let at = v.len();
        v.extend_from_slice(payload);
        if let Some(key) = key {
            crate::ws::mask::unmask(&mut v[at..], key, 0);
        }
        v
    }

    /// What one `receive` gave, owned.
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Text(String, bool),
        Binary(usize, bool),
        Ping(Vec<u8>),
        Pong,
        CloseBegun(Option<u16>, String),
        CloseAnswered(Option<u16>),
        Yield,
        Nothing(usize),
    }

    fn got(r: Received<'_>) -> Got {
        match r.event {
            None => Got::Nothing(r.used),
            Some(Event::Message(kind, p)) => {
                let owned = matches!(p, Payload::Owned(_));
                match kind {
                    MessageKind::Text => Got::Text(String::from_utf8(p.as_slice().to_vec()).unwrap(), owned),
                    MessageKind::Binary => Got::Binary(p.len(), owned),
                }
            }
            Some(Event::Ping(p)) => Got::Ping(p.to_vec()),
            Some(Event::Pong) => Got::Pong,
            Some(Event::CloseBegun { code, reason }) => Got::CloseBegun(code, reason.to_string()),
            Some(Event::CloseAnswered(code)) => Got::CloseAnswered(code),
            Some(Event::Yield) => Got::Yield,
        }
    }

    /// Feeds `bytes` in pieces of `step` bytes, keeping unconsumed ones as a connection does;
    /// returns every event.
    fn feed(e: &mut Endpoint, bytes: &[u8], step: usize, now: Instant, budget: usize) -> Vec<Got> {
        feed_with(e, None, bytes, step, now, budget)
    }

    fn feed_with(
        e: &mut Endpoint,
        mut pmd: Option<&mut PerMessage>,
        bytes: &[u8],
        step: usize,
        now: Instant,
        budget: usize,
    ) -> Vec<Got> {
        let mut codecs = SharedCodecs::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let r = match e.receive(&mut pending, Stamp::at(now), budget, &mut codecs, pmd.as_deref_mut()) {
                    Ok(r) => r,
                    Err(err) => {
                        out.push(Got::Nothing(usize::from(err.close_code())));
                        return out;
                    }
                };
                let used = r.used;
                let g = got(r);
                pending.drain(..used);
                match g {
                    Got::Nothing(0) => break,
                    Got::Nothing(_) => {}
                    other => out.push(other),
                }
            }
        }
        out
    }

    fn limits() -> MessageLimits {
        MessageLimits { max_message: 1 << 20, max_frame: 1 << 20 }
    }

    #[test]
    fn server_role_messages_in_any_chunking() {
        let t0 = crate::stamp::round_up(Instant::now());
        let big = vec![7u8; 10_000];
        let mut stream = frame(Role::Server, 0x81, b"hello");
        stream.extend(frame(Role::Server, 0x01, b"frag"));
        stream.extend(frame(Role::Server, 0x89, b"ping!"));
        stream.extend(frame(Role::Server, 0x80, b"mented"));
        stream.extend(frame(Role::Server, 0x02, &big[..6000]));
        stream.extend(frame(Role::Server, 0x80, &big[6000..]));
        let mut close = 4001u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye now");
        stream.extend(frame(Role::Server, 0x88, &close));
        for step in [1, 2, 3, 7, 100, stream.len()] {
            let mut e = Endpoint::new(Role::Server, limits(), t0, false);
            let events = feed(&mut e, &stream, step, t0, usize::MAX);
            assert_eq!(
                events,
                [
                    Got::Text("hello".into(), false),
                    Got::Ping(b"ping!".to_vec()),
                    Got::Text("fragmented".into(), false),
                    Got::Binary(10_000, true),
                    Got::CloseBegun(Some(4001), "bye now".into()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn client_role_takes_plain_frames_and_refuses_masked_ones() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut e = Endpoint::new(Role::Client, limits(), t0, false);
        let stream = [frame(Role::Client, 0x82, &[1, 2, 3]), frame(Role::Client, 0x8A, b"")].concat();
        assert_eq!(feed(&mut e, &stream, 1, t0, usize::MAX), [Got::Binary(3, false), Got::Pong]);
        let mut e = Endpoint::new(Role::Client, limits(), t0, false);
        let masked = frame(Role::Server, 0x81, b"x");
        assert_eq!(feed(&mut e, &masked, 100, t0, usize::MAX), [Got::Nothing(usize::from(close::PROTOCOL_ERROR))]);
    }

    #[test]
    fn our_close_then_only_the_peers_close_matters() {
        let t0 = crate::stamp::round_up(Instant::now());
        let timing = Timing::new(100 * S, 10 * S, 5 * S, 3 * S);
        let mut e = Endpoint::new(Role::Server, limits(), t0, false);
        assert_eq!(e.session().deadline(t0, &timing), Some(t0 + 10 * S));
        assert!(e.session_mut().close(t0 + S));
        assert_eq!(e.session().deadline(t0, &timing), Some(t0 + 4 * S));
        let stream = [frame(Role::Server, 0x81, b"late"), frame(Role::Server, 0x88, &1000u16.to_be_bytes())].concat();
        assert_eq!(feed(&mut e, &stream, 5, t0 + 2 * S, usize::MAX), [Got::CloseAnswered(Some(1000))]);
    }

    /// permessage-deflate with context takeover off, as a shared route agrees it.
    fn compressing(t0: Instant) -> (Endpoint, PerMessage) {
        let agreed = negotiate([&b"permessage-deflate"[..]], Compression::Shared).unwrap();
        (Endpoint::new(Role::Server, limits(), t0, true), PerMessage::new(agreed, 64, 1, 8))
    }

    fn compressed(to: Role, first: u8, payload: &[u8]) -> Vec<u8> {
        let mut z = Vec::new();
        Deflater::new(15, 8, 6, false).compress(payload, &mut z);
        frame(to, first | 0x40, &z)
    }

    #[test]
    fn compressed_messages_inflate_whole_or_over_several_calls() {
        let t0 = crate::stamp::round_up(Instant::now());
        let text: String = (0..20_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        let stream =
            [compressed(Role::Server, 0x81, b"small one"), compressed(Role::Server, 0x81, text.as_bytes())].concat();
        let (mut e, mut pmd) = compressing(t0);
        let events = feed_with(&mut e, Some(&mut pmd), &stream, stream.len(), t0, usize::MAX);
        assert_eq!(events, [Got::Text("small one".into(), true), Got::Text(text.clone(), true)]);
        // A budget smaller than the message: it yields, then goes on with no new bytes.
        let (mut e, mut pmd) = compressing(t0);
        let mut codecs = SharedCodecs::default();
        let mut bytes = compressed(Role::Server, 0x81, text.as_bytes());
        let r = e.receive(&mut bytes, Stamp::at(t0), 4096, &mut codecs, Some(&mut pmd)).unwrap();
        assert_eq!((got(r), e.is_inflating()), (Got::Yield, true));
        let mut yields = 0;
        let message = loop {
            let r = e.receive(&mut [], Stamp::at(t0), 4096, &mut codecs, Some(&mut pmd)).unwrap();
            match got(r) {
                Got::Yield => yields += 1,
                other => break other,
            }
        };
        assert_eq!(message, Got::Text(text, true));
        assert!(yields >= 2 && !e.is_inflating(), "{yields}");
    }

    #[test]
    fn every_failure_maps_to_its_close_code() {
        let t0 = crate::stamp::round_up(Instant::now());
        let bomb = vec![0u8; 2 << 20];
        let cases: [(Vec<u8>, u16); 4] = [
            (compressed(Role::Server, 0x82, &bomb), close::MESSAGE_TOO_BIG),
            (frame(Role::Server, 0xC1, &[0xFF, 0xFF, 0xFF]), close::INVALID_PAYLOAD),
            (compressed(Role::Server, 0x81, &[0xC3, 0x28]), close::INVALID_PAYLOAD),
            (frame(Role::Server, 0xF1, b"rsv"), close::PROTOCOL_ERROR),
        ];
        for (bytes, code) in cases {
            let (mut e, mut pmd) = compressing(t0);
            let events = feed_with(&mut e, Some(&mut pmd), &bytes, bytes.len(), t0, usize::MAX);
            assert_eq!(events, [Got::Nothing(usize::from(code))]);
        }
        for (bytes, code) in
            [(b"\x00\xc3\x28\xff".to_vec(), close::INVALID_PAYLOAD), (b"\x80\x05hello".to_vec(), close::PROTOCOL_ERROR)]
        {
            let mut e = Endpoint::legacy(Draft::Hixie76, limits(), t0);
            assert_eq!(feed(&mut e, &bytes, 1, t0, usize::MAX), [Got::Nothing(usize::from(code))]);
        }
        let mut small = Endpoint::legacy(Draft::Hixie76, MessageLimits { max_message: 10, max_frame: 10 }, t0);
        let long = [&[0u8][..], &[b'a'; 5000], &[0xFF]].concat();
        assert_eq!(feed(&mut small, &long, 4096, t0, usize::MAX), [Got::Nothing(usize::from(close::MESSAGE_TOO_BIG))]);
    }

    #[test]
    fn legacy_frames_messages_and_close() {
        let t0 = crate::stamp::round_up(Instant::now());
        let long: Vec<u8> = [&[0u8][..], &vec![b'z'; 5000], &[0xFF]].concat();
        let stream = [&b"\x00hi\xff"[..], &long, b"\xff\x00"].concat();
        for step in [1, 4096, stream.len()] {
            let mut e = Endpoint::legacy(Draft::Hixie76, limits(), t0);
            let events = feed(&mut e, &stream, step, t0, usize::MAX);
            let z = "z".repeat(5000);
            assert_eq!(events[0], Got::Text("hi".into(), false), "step {step}");
            assert!(matches!(&events[1], Got::Text(t, _) if *t == z), "step {step}");
            assert_eq!(events[2], Got::CloseBegun(None, String::new()));
            assert!(e.session().is_closing());
        }
    }

    /// An RFC 6455 text frame as an app queues it.
    fn frames_of(pools: &mut Pools, text: &[u8]) -> Vec<u8> {
        let mut q = OutQueue::default();
        q.push_frame(pools, Opcode::Text, text);
        let bytes = q.to_vec();
        q.release(pools);
        bytes
    }

    #[test]
    fn the_send_side_encodes_for_the_wire() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut pools = Pools::new(1 << 20);
        let mut codecs = SharedCodecs::default();
        let frames = frames_of(&mut pools, b"to a legacy client");
        let mut e = Endpoint::legacy(Draft::Hixie76, limits(), t0);
        let mut out = OutQueue::default();
        assert_eq!(e.encode_queued(&frames, &mut out, &mut pools, &mut codecs, None), 0);
        assert_eq!(out.to_vec(), b"\x00to a legacy client\xff");
        let mut out = OutQueue::default();
        e.close_frame(&mut out, &mut pools, Some(1000), "");
        assert_eq!(out.to_vec(), hixie::CLOSE);
        // Compressing: a whole message over the threshold goes with RSV1.
        let (mut e, mut pmd) = compressing(t0);
        let text = "compress me ".repeat(20);
        let frames = frames_of(&mut pools, text.as_bytes());
        let mut out = OutQueue::default();
        e.encode_queued(&frames, &mut out, &mut pools, &mut codecs, Some(&mut pmd));
        let bytes = out.to_vec();
        assert_eq!(bytes[0], 0xC1, "FIN, RSV1, text");
        assert!(bytes.len() < frames.len());
        out.release(&mut pools);
    }
}
