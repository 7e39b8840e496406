//! A sans-I/O RFC 6455 session: bytes in, events out, deadlines reported, time passed in.
//!
//! It owns the message decoder and the rules that sit above frames: the ping schedule (a
//! silent peer is pinged, one that does not answer is closed), the idle timeout, and the
//! close handshake (§5.5.1, §7.1.2: once our close frame is sent only the peer's close frame
//! matters, and it must come within `close_timeout`). It writes nothing: the caller queues
//! the frames that events and timers ask for, so the server, the client and the load tools
//! share one state machine, and tests drive it with a synthetic clock.

use std::time::{Duration, Instant};

use crate::stamp::Stamp;

use super::close::{self, CloseFrame};
use super::frame::Role;
use super::message::{Decoder, Event, MessageKind, MessageLimits, WholeMessage};
use super::ProtocolError;

/// The close reason of a peer that did not answer a ping in time.
pub const PING_TIMEOUT: &str = "ping timeout";

/// The session's timers in whole milliseconds (rounded up, at most [`Stamp::SPAN`]); a zero
/// `idle_ms` or `ping_ms` switches that timer off. Milliseconds, because the server asks for
/// the next deadline after every drive: stamps plus milliseconds are additions, where
/// `Duration`s were a conversion each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    pub idle_ms: u32,
    pub ping_ms: u32,
    pub pong_ms: u32,
    pub close_ms: u32,
}

impl Timing {
    pub fn new(
        idle_timeout: Duration,
        ping_interval: Duration,
        pong_timeout: Duration,
        close_timeout: Duration,
    ) -> Timing {
        Timing {
            idle_ms: Stamp::millis_of(idle_timeout),
            ping_ms: Stamp::millis_of(ping_interval),
            pong_ms: Stamp::millis_of(pong_timeout),
            close_ms: Stamp::millis_of(close_timeout),
        }
    }

    /// How long our close frame waits for the peer's.
    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_ms.into())
    }
}

/// `ms` milliseconds as a `Duration`.
fn ms(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

/// What the peer's bytes produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A whole data message; text is valid UTF-8.
    Message(MessageKind, &'a [u8]),
    /// A whole compressed message (permessage-deflate): the caller inflates it, then checks
    /// text.
    Compressed(MessageKind, &'a [u8]),
    /// Answer with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer began the close handshake: answer with [`reply_code`] and end (§5.5.1).
    /// The session counts the answer as sent.
    CloseBegun(CloseFrame<'a>),
    /// The peer answered our close frame: the handshake is complete.
    CloseAnswered(Option<u16>),
}

/// What a passed deadline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a ping: the peer has been silent for `ping_interval`.
    Ping,
    /// Begin the close handshake with this code and reason.
    Close(u16, &'static str),
    /// Give up on the peer: our close frame was not answered in time.
    Abort(&'static str),
}

#[derive(Debug)]
pub struct Session {
    decoder: Decoder,
    /// Last data message from the peer (idle timeout).
    last_message: Stamp,
    /// Last frame of any kind from the peer (ping schedule).
    last_read: Stamp,
    /// What we wait for from the peer, and since when.
    awaiting: Awaiting,
}

/// One field for both waits (a pong does not matter once closing): every open connection
/// carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Nothing,
    /// A pong to the ping sent then (any frame will do).
    Pong(Stamp),
    /// The peer's close frame, ours having been queued then.
    Close(Stamp),
}

/// §5.5.1: the close frame that answers `frame`, echoing its status code (an empty close
/// gets an empty one).
pub fn reply_code(frame: &CloseFrame<'_>) -> Option<u16> {
    frame.code
}

impl Session {
    /// A session that opened at `now`. Its timers are passed to [`Session::deadline`] and
    /// [`Session::on_timer`] (the owner keeps them once for all its sessions' limits).
    pub fn new(role: Role, limits: MessageLimits, now: Instant) -> Session {
        let decoder = match role {
            Role::Server => Decoder::server(limits),
            Role::Client => Decoder::client(limits),
        };
        let now = Stamp::at(now);
        Session { decoder, last_message: now, last_read: now, awaiting: Awaiting::Nothing }
    }

    /// Decodes from `buf` (the unread bytes). Returns the event, if one completed, and the
    /// bytes consumed; `(None, 0)` means more bytes are needed. After our close frame, every
    /// frame but the peer's close is consumed and dropped (§5.5.1).
    pub fn receive<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        now: Stamp,
    ) -> Result<(Option<Received<'a>>, usize), ProtocolError> {
        let closing = self.is_closing();
        let (event, used) = self.decoder.decode(buf)?;
        let Some(event) = event else { return Ok((None, used)) };
        // Any frame proves the peer alive, not only a pong.
        self.last_read = now;
        if !closing {
            self.awaiting = Awaiting::Nothing;
        }
        let received = match event {
            Event::Close(frame) if closing => Received::CloseAnswered(frame.code),
            Event::Close(frame) => {
                self.awaiting = Awaiting::Close(now);
                Received::CloseBegun(frame)
            }
            _ if closing => return Ok((None, used)),
            Event::Message(kind, payload) => {
                self.last_message = now;
                Received::Message(kind, payload)
            }
            Event::Compressed(kind, payload) => {
                self.last_message = now;
                Received::Compressed(kind, payload)
            }
            Event::Ping(p) => Received::Ping(p),
            Event::Pong(p) => Received::Pong(p),
        };
        Ok((Some(received), used))
    }

    /// [`Session::receive`] for the common frame ([`Decoder::decode_message`]): a whole,
    /// unfragmented, uncompressed data message while open. `None`, with nothing touched,
    /// for everything else (call [`Session::receive`]).
    #[inline(always)]
    pub fn receive_message<'a>(
        &mut self,
        buf: &'a mut [u8],
        now: Stamp,
    ) -> Option<Result<WholeMessage<'a>, ProtocolError>> {
        if self.is_closing() {
            return None;
        }
        let got = self.decoder.decode_message(buf)?;
        if got.is_ok() {
            self.last_read = now;
            self.last_message = now;
            self.awaiting = Awaiting::Nothing;
        }
        Some(got)
    }

    /// A message arrived by other means than [`Session::receive`] (a legacy draft's frame).
    pub fn note_message(&mut self, now: Stamp) {
        self.last_message = now;
        self.last_read = now;
    }

    /// permessage-deflate was negotiated: compressed messages are accepted.
    pub fn allow_compression(&mut self) {
        self.decoder.allow_compression();
    }

    /// Marks our close frame as sent. Returns `false` if it already was (send nothing).
    pub fn close(&mut self, now: Instant) -> bool {
        self.close_at(Stamp::at(now))
    }

    /// [`Session::close`] with the time already stamped.
    pub fn close_at(&mut self, now: Stamp) -> bool {
        if self.is_closing() {
            return false;
        }
        self.awaiting = Awaiting::Close(now);
        true
    }

    /// Our close frame is out; only the peer's close frame matters now.
    pub fn is_closing(&self) -> bool {
        matches!(self.awaiting, Awaiting::Close(_))
    }

    /// The next time [`Session::on_timer`] has something to do (read at `now`).
    pub fn deadline(&self, now: Instant, t: &Timing) -> Option<Instant> {
        self.due(t).map(|s| s.instant(now))
    }

    /// [`Session::deadline`] as a stamp (rounded up to the millisecond): what the server's
    /// loop arms, computed without reading the clock.
    pub fn due(&self, t: &Timing) -> Option<Stamp> {
        if let Awaiting::Close(sent) = self.awaiting {
            return Some(sent.after_ms(t.close_ms));
        }
        let idle = (t.idle_ms != 0).then(|| self.last_message.after_ms(t.idle_ms));
        let ping = match self.awaiting {
            Awaiting::Pong(pinged) => Some(pinged.after_ms(t.pong_ms)),
            _ if t.ping_ms != 0 => Some(self.last_read.after_ms(t.ping_ms)),
            _ => None,
        };
        match (idle, ping) {
            (Some(a), Some(b)) => Some(a.earlier(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the deadlines passed by `now` ask for, if anything. A `Ping` is recorded as sent.
    pub fn on_timer(&mut self, now: Instant, t: &Timing) -> Option<Due> {
        let at = |s: Stamp| s.instant(now);
        if let Awaiting::Close(sent) = self.awaiting {
            return (now >= at(sent) + ms(t.close_ms)).then_some(Due::Abort("close handshake timed out"));
        }
        if t.idle_ms != 0 && now >= at(self.last_message) + ms(t.idle_ms) {
            return Some(Due::Close(close::GOING_AWAY, "idle timeout"));
        }
        match self.awaiting {
            Awaiting::Pong(pinged) if now >= at(pinged) + ms(t.pong_ms) => {
                Some(Due::Close(close::GOING_AWAY, PING_TIMEOUT))
            }
            Awaiting::Pong(_) => None,
            _ if t.ping_ms != 0 && now >= at(self.last_read) + ms(t.ping_ms) => {
                self.awaiting = Awaiting::Pong(Stamp::at(now));
                Some(Due::Ping)
            }
            _ => None,
        }
    }

    /// True when no frame or message is partly received.
    pub fn is_between_messages(&self) -> bool {
        self.decoder.is_between_messages()
    }

    /// The largest message accepted.
    pub fn max_message(&self) -> usize {
        self.decoder.max_message()
    }

    /// Bytes of the event just received that sit in the decoder's own buffers (see
    /// [`super::message::Decoder::lent`]).
    pub fn lent(&self, start: usize, len: usize) -> &[u8] {
        self.decoder.lent(start, len)
    }

    /// The message just received, if it was assembled in the decoder's own buffer: the
    /// caller may keep it without copying.
    pub fn take_assembled(&mut self) -> Option<Vec<u8>> {
        self.decoder.take_assembled()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;
    use crate::ws::frame::{encode_header, Opcode, MAX_HEADER_LEN};

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing::new(100 * S, 10 * S, 5 * S, 3 * S)
    }

    /// A masked client frame.
    fn frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, payload.len(), Some(key));
        let mut v = head[..n].to_vec();
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        v
    }

    fn server(t0: Instant) -> Session {
        Session::new(Role::Server, MessageLimits::default(), t0)
    }

    #[test]
    fn silent_peer_is_pinged_then_closed() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = server(t0);
        assert_eq!(s.deadline(t0, &timing()), Some(t0 + 10 * S));
        assert_eq!(s.on_timer(t0 + 9 * S, &timing()), None);
        assert_eq!(s.on_timer(t0 + 10 * S, &timing()), Some(Due::Ping));
        assert_eq!(s.deadline(t0, &timing()), Some(t0 + 15 * S));
        assert_eq!(s.on_timer(t0 + 12 * S, &timing()), None);
        assert_eq!(s.on_timer(t0 + 15 * S, &timing()), Some(Due::Close(close::GOING_AWAY, "ping timeout")));
    }

    #[test]
    fn any_frame_answers_a_ping_and_resets_the_schedule() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = server(t0);
        assert_eq!(s.on_timer(t0 + 10 * S, &timing()), Some(Due::Ping));
        let mut bytes = frame(Opcode::Pong, b"");
        let (ev, used) = s.receive(&mut bytes, Stamp::at(t0 + 11 * S)).unwrap();
        assert_eq!((ev, used), (Some(Received::Pong(b"")), 2 + 4));
        assert_eq!(s.deadline(t0, &timing()), Some(t0 + 21 * S));
        assert_eq!(s.on_timer(t0 + 16 * S, &timing()), None);
    }

    #[test]
    fn idle_timeout_counts_messages_not_pongs() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = Session::new(Role::Server, MessageLimits::default(), t0);
        let no_pings = Timing { ping_ms: 0, ..timing() };
        let mut pong = frame(Opcode::Pong, b"");
        s.receive(&mut pong, Stamp::at(t0 + 50 * S)).unwrap();
        assert_eq!(s.deadline(t0, &no_pings), Some(t0 + 100 * S));
        let mut msg = frame(Opcode::Text, b"hi");
        assert_eq!(
            s.receive(&mut msg, Stamp::at(t0 + 60 * S)).unwrap().0,
            Some(Received::Message(MessageKind::Text, b"hi"))
        );
        assert_eq!(s.on_timer(t0 + 100 * S, &no_pings), None);
        assert_eq!(s.on_timer(t0 + 160 * S, &no_pings), Some(Due::Close(close::GOING_AWAY, "idle timeout")));
    }

    #[test]
    fn close_handshake_ignores_data_and_times_out() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = server(t0);
        assert!(s.close(t0));
        assert!(!s.close(t0 + S), "one close frame only");
        assert_eq!(s.deadline(t0, &timing()), Some(t0 + 3 * S));
        let mut msg = frame(Opcode::Text, b"late");
        let len = msg.len();
        let (ev, used) = s.receive(&mut msg, Stamp::at(t0 + S)).unwrap();
        assert_eq!((ev, used), (None, len));
        assert_eq!(s.on_timer(t0 + 2 * S, &timing()), None);
        assert_eq!(s.on_timer(t0 + 3 * S, &timing()), Some(Due::Abort("close handshake timed out")));
        let mut answer = frame(Opcode::Close, &1000u16.to_be_bytes());
        assert_eq!(s.receive(&mut answer, Stamp::at(t0 + 2 * S)).unwrap().0, Some(Received::CloseAnswered(Some(1000))));
    }

    #[test]
    fn peer_initiated_close_is_reported_with_its_code() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = server(t0);
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = frame(Opcode::Close, &payload);
        let (ev, _) = s.receive(&mut bytes, Stamp::at(t0)).unwrap();
        let Some(Received::CloseBegun(f)) = ev else { panic!("{ev:?}") };
        assert_eq!((reply_code(&f), f.reason), (Some(4000), "bye"));
    }

    #[test]
    fn client_role_refuses_masked_frames() {
        let t0 = crate::stamp::round_up(Instant::now());
        let mut s = Session::new(Role::Client, MessageLimits::default(), t0);
        let mut masked = frame(Opcode::Text, b"x");
        assert!(s.receive(&mut masked, Stamp::at(t0)).is_err());
        let mut s = Session::new(Role::Client, MessageLimits::default(), t0);
        let mut plain = vec![0x81, 1, b'x'];
        assert_eq!(s.receive(&mut plain, Stamp::at(t0)).unwrap().0, Some(Received::Message(MessageKind::Text, b"x")));
    }
}
