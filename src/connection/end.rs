//! Why a connection ends, and the access log line that says so.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::apps::Traffic;

/// Every way a connection ends goes through [`super::Connection::close`] with one of these.
#[derive(Debug)]
pub enum End {
    /// HTTP: refused with this status and reason (the response body), then closed.
    Refuse { status: u16, reason: Cow<'static, str> },
    /// HTTP: the request head did not arrive within `handshake_timeout` (408).
    HeadTimeout,
    /// HTTP: a keep-alive connection that was served sent no next request in time: closed
    /// without a 408, which a client reusing the connection could take for its answer.
    KeepAliveTimeout,
    /// HTTP: the response just queued was the last one (no keep-alive).
    Answered,
    /// WebSocket: our close frame (idle, ping timeout, shutdown, the app); then the peer's.
    Close { code: u16, reason: Cow<'static, str> },
    /// WebSocket: the app's backend failed: close 1011, the log says why.
    BackendFailed(String),
    /// WebSocket: the client is too slow for what is published to it (policy "close").
    SlowConsumer,
    /// WebSocket: the close handshake is complete (either side began it).
    Closed { code: Option<u16>, reason: String },
    /// WebSocket: failed (§7.1.7): our close frame, then TCP close without waiting.
    Fail { code: u16, reason: &'static str },
    /// No more I/O at once (EOF, timeouts past talking, a client that is not speaking TLS).
    Abort(Cow<'static, str>),
    /// An I/O error on the client's socket.
    Io(io::Error),
    /// Direct mode: the socket now belongs to the backend.
    HandedOff,
    /// Direct mode: passing the socket failed.
    HandOffFailed(io::Error),
}

/// The close code a slow consumer gets (§7.4.1: a policy violation).
pub const SLOW_CONSUMER_CODE: u16 = crate::ws::close::POLICY_VIOLATION;

/// `status` was set and not yet counted in the metrics.
const FRESH_STATUS: u8 = 1;
/// Accepted on the admin listener.
const ADMIN: u8 = 2;
/// The request's path is its route's own (kept nowhere else, then: an idle connection on an
/// exact route carries no path); other paths are kept in [`Rare`].
const PATH_IS_ROUTE: u8 = 4;

/// What the access line says about one connection.
#[derive(Debug, Default)]
pub struct AccessLog {
    /// The last response's status (0: none yet).
    status: u16,
    /// HTTP responses sent on this connection (keep-alive), saturating; a 101 is not one.
    responses: u16,
    /// [`FRESH_STATUS`], [`ADMIN`], [`PATH_IS_ROUTE`]: one byte, as every open connection
    /// carries this struct.
    flags: u8,
    /// The route serving it (an index in the routes; `u16::MAX`: none yet).
    pub route: u16,
    pub traffic: Traffic,
    /// What few connections have (how it ended is known only at the end): boxed, because
    /// every open connection carries this struct.
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Default)]
struct Rare {
    /// The request's path when it is not its route's own (a prefix route, a 404, the admin
    /// listener), at most 256 characters.
    path: Option<Box<str>>,
    /// Messages from others not delivered because this client was too slow (drop policy).
    dropped: u64,
    /// Close code (sent or received) and reason.
    close: Option<(u16, Cow<'static, str>)>,
    /// Why the connection ended, when it did not end with a close handshake.
    end: Option<Cow<'static, str>>,
    /// The close code we sent, and the one the peer sent (for the metrics).
    sent: Option<u16>,
    received: Option<u16>,
}

impl AccessLog {
    pub fn new(admin: bool) -> AccessLog {
        AccessLog { flags: if admin { ADMIN } else { 0 }, route: u16::MAX, ..AccessLog::default() }
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        self.flags = if on { self.flags | flag } else { self.flags & !flag };
    }

    /// Accepted on the admin listener.
    pub fn is_admin(&self) -> bool {
        self.flags & ADMIN != 0
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Counts a message from others that this client was too slow to be given.
    pub fn note_dropped(&mut self) {
        self.rare().dropped += 1;
    }

    /// Records why the connection ended, unless something already did.
    pub fn note_end(&mut self, why: impl Into<Cow<'static, str>>) {
        let ending = self.rare();
        if ending.end.is_none() && ending.close.is_none() {
            ending.end = Some(why.into());
        }
    }

    /// Records why the connection ended, replacing an earlier reason.
    pub fn set_end(&mut self, why: impl Into<Cow<'static, str>>) {
        self.rare().end = Some(why.into());
    }

    /// Whether a reason for the end was recorded.
    pub fn has_end(&self) -> bool {
        self.rare.as_ref().is_some_and(|e| e.end.is_some())
    }

    /// Records the close code and reason (sent or received), replacing an earlier one.
    pub fn set_close(&mut self, code: u16, reason: impl Into<Cow<'static, str>>) {
        let rare = self.rare();
        rare.close = Some((code, reason.into()));
        rare.sent = Some(code);
    }

    /// The close code the peer sent.
    pub fn note_received_close(&mut self, code: u16) {
        self.rare().received = Some(code);
    }

    /// The close codes sent and received, if any.
    pub fn close_codes(&self) -> (Option<u16>, Option<u16>) {
        self.rare.as_deref().map_or((None, None), |r| (r.sent, r.received))
    }

    /// Messages not delivered to this slow client.
    pub fn dropped(&self) -> u64 {
        self.rare.as_deref().map_or(0, |r| r.dropped)
    }

    /// Records the status of a response just queued (counted by the loop once).
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
        self.set_flag(FRESH_STATUS, true);
        if status != 101 {
            self.responses = self.responses.saturating_add(1);
        }
    }

    /// A status set since the last call.
    #[inline]
    pub fn take_fresh_status(&mut self) -> Option<u16> {
        // Asked after every drive: most find nothing, and store nothing.
        if self.flags & FRESH_STATUS == 0 {
            return None;
        }
        self.set_flag(FRESH_STATUS, false);
        (self.status != 0).then_some(self.status)
    }

    /// HTTP responses sent so far (a 101 is not one).
    pub fn responses(&self) -> u16 {
        self.responses
    }

    /// "1 request served", "3 requests served".
    pub fn served(&self) -> String {
        match self.responses {
            1 => "1 request served".to_string(),
            n => format!("{n} requests served"),
        }
    }

    /// Records the close code and reason unless one was recorded.
    pub fn note_close(&mut self, code: u16, reason: impl Into<Cow<'static, str>>) {
        self.rare().close.get_or_insert_with(|| (code, reason.into()));
    }

    /// The request's path: `route_path` is the path of the route that serves it, if any.
    pub fn set_path(&mut self, path: &str, route_path: Option<&str>) {
        let is_route = route_path == Some(path);
        self.set_flag(PATH_IS_ROUTE, is_route);
        if is_route {
            if let Some(rare) = &mut self.rare {
                rare.path = None;
            }
        } else {
            self.rare().path = Some(path.chars().take(256).collect());
        }
    }

    /// One line: peer, id, path, status, duration, messages and bytes each way, close.
    /// `route_path`: the path of the route that served it, if any.
    pub fn line(
        &self,
        peer: SocketAddr,
        id: u64,
        accepted: Instant,
        now: Instant,
        route_path: Option<&str>,
        user: Option<&str>,
    ) -> String {
        let path = match (self.flags & PATH_IS_ROUTE != 0, self.rare.as_deref()) {
            (true, _) => route_path,
            (false, Some(rare)) => rare.path.as_deref(),
            (false, None) => None,
        };
        let (close, end) = self.rare.as_deref().map_or((&None, &None), |e| (&e.close, &e.end));
        let close = match (close, end) {
            (Some((code, reason)), _) if reason.is_empty() => format!("close={code}"),
            (Some((code, reason)), _) => format!("close={code} ({reason})"),
            (None, Some(end)) => format!("end=({end})"),
            // Nothing went wrong: the last response said the connection ends, and it did.
            (None, None) if self.responses > 0 => format!("end=({}; closed after the response)", self.served()),
            (None, None) => "end=(closed)".to_string(),
        };
        let t = &self.traffic;
        let dropped = match self.rare.as_deref() {
            Some(r) if r.dropped > 0 => format!(" dropped={}", r.dropped),
            _ => String::new(),
        };
        // Quoted as a JSON string: a user may have spaces (never control characters).
        let user = user.map_or(String::new(), |u| format!(" user={}", serde_json::Value::from(u)));
        format!(
            "{peer} id={id}{user} {} status={} {:.3}s in={}msg/{}B out={}msg/{}B{dropped} {close}",
            path.unwrap_or("-"),
            if self.status == 0 { "-".to_string() } else { self.status.to_string() },
            now.saturating_duration_since(accepted).as_secs_f64(),
            t.msgs_in,
            t.bytes_in,
            t.msgs_out,
            t.bytes_out,
        )
    }
}
