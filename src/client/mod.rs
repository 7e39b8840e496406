//! A blocking WebSocket client on the server's own protocol code: the same sans-I/O
//! [`Endpoint`] (in [`Role::Client`]) decodes what the server sends, answers its pings and
//! keeps the close handshake, so the client is as strict as the server (a server that sends
//! masked frames, bad UTF-8 or a bad close code is failed with the close code RFC 6455 asks
//! for).
//!
//! Shaped like NaviServer's `ws::client` API: [`Client::open`] a URL, [`Client::send_text`] /
//! [`Client::send_binary`], [`Client::receive`] the next message with a timeout, and
//! [`Client::close`] with a code and reason, waiting for the server's close with a deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! use wsgate::client::{Client, Message, Options};
//!
//! let mut ws = Client::open("ws://127.0.0.1:8080/echo", &Options::default())?;
//! ws.send_text("hello")?;
//! match ws.receive(Some(Duration::from_secs(5)))? {
//!     Message::Text(text) => println!("{text}"),
//!     Message::Binary(bytes) => println!("{} bytes", bytes.len()),
//! }
//! ws.close(1000, "bye")?;
//! # Ok::<(), wsgate::client::ClientError>(())
//! ```
//!
//! `wss://` uses rustls with the webpki roots, or the CAs of [`Options::ca_file`], and sends
//! the host as SNI; `ws+unix:/path.sock:/resource` talks to a UNIX-domain socket (see
//! [`url`]).

/// `wsgate bench` (the command line's implementation).
#[doc(hidden)]
pub mod bench;
pub mod handshake;
mod stream;
/// `wsgate client` (the command line's implementation).
#[doc(hidden)]
pub mod terminal;
pub mod url;

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::handshake::{Agreed, HandshakeError, Offer};
use self::stream::{connect, tls_config, Stream};
use self::url::{Target, UrlError};
use crate::stamp::Stamp;
use crate::ws::close::{self, encode_close_payload};
use crate::ws::deflate::{PerMessage, SharedCodecs};
use crate::ws::endpoint::{Endpoint, Event, WsError};
use crate::ws::extensions::DeflateOffer;
use crate::ws::frame::{encode_header, Opcode, Role, MAX_HEADER_LEN};
use crate::ws::message::{MessageKind, MessageLimits};
use crate::ws::session::{Due, Timing};

/// How to connect and what to allow.
#[derive(Debug, Clone)]
pub struct Options {
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// The `Origin` header to send (browsers send one; servers may check it).
    pub origin: Option<String>,
    /// Extra request headers (`Authorization`, cookies...).
    pub headers: Vec<(String, String)>,
    /// PEM file of the CAs to trust for `wss://` instead of the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (`wss://` without authenticating the server: for tests
    /// against self-signed servers only; anyone on the path can read and change the traffic).
    pub insecure: bool,
    /// A client certificate chain and its key (PEM files), for servers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Offer permessage-deflate with these parameters (RFC 7692). The server's messages are
    /// inflated within [`Options::max_message`], as the server bounds a client's.
    pub compress: Option<DeflateOffer>,
    /// The largest message accepted from the server (its frames too).
    pub max_message: usize,
    /// TCP connect, per address tried.
    pub connect_timeout: Duration,
    /// TLS and the upgrade, from the connection to the 101.
    pub handshake_timeout: Duration,
    /// How long [`Client::close`] waits for the server's close frame.
    pub close_timeout: Duration,
    /// Ping the server after this long without hearing from it (zero: never) ...
    pub ping_interval: Duration,
    /// ... and give up on it if the pong takes longer than this.
    pub pong_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            ca_file: None,
            insecure: false,
            client_cert: None,
            compress: None,
            max_message: 64 << 20,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Duration::ZERO,
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8, checked).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// How a client operation failed.
#[derive(Debug)]
pub enum ClientError {
    /// The URL or an option cannot be used.
    Url(UrlError),
    /// No connection: refused, unreachable, the name did not resolve, or the connect timed out.
    Connect(io::Error),
    /// TLS failed (the certificate, the handshake).
    Tls(String),
    /// The server's answer to the upgrade was not a valid 101.
    Handshake(HandshakeError),
    /// Nothing came within the timeout (the connection is still usable after a
    /// [`Client::receive`] timeout).
    Timeout,
    /// The connection broke (reset, or ended without a close frame: 1006).
    Io(io::Error),
    /// The server broke the protocol; we sent this close code and dropped the connection.
    Protocol {
        /// The close code we sent (1002, 1007, 1009...).
        code: u16,
        /// The rule the server broke.
        reason: &'static str,
    },
    /// The connection is closed: the code and reason of the server's close frame (`None`:
    /// it had none), after the close handshake.
    Closed {
        /// The server's close code (`None`: its close frame had none).
        code: Option<u16>,
        /// The server's reason.
        reason: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Url(e) => write!(f, "{e}"),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Tls(e) => write!(f, "TLS: {e}"),
            ClientError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ClientError::Timeout => write!(f, "timed out"),
            ClientError::Io(e) => write!(f, "connection lost: {e}"),
            ClientError::Protocol { code, reason } => write!(f, "server broke the protocol ({code} {reason})"),
            ClientError::Closed { code: Some(code), reason } => write!(f, "closed by the server: {code} {reason}"),
            ClientError::Closed { code: None, .. } => write!(f, "closed by the server (no status)"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        ClientError::Handshake(e)
    }
}

/// An open WebSocket connection (blocking).
pub struct Client {
    stream: Stream,
    endpoint: Endpoint,
    /// permessage-deflate, when the server accepted our offer.
    pmd: Option<PerMessage>,
    codecs: SharedCodecs,
    /// Bytes read and not yet decoded: `input[start..filled]`. The buffer past `filled` is
    /// room for the next read, zeroed once when it grows, not before every read.
    input: Vec<u8>,
    start: usize,
    filled: usize,
    /// Whether the socket is non-blocking now ([`Client::receive_ready`] makes it so, the
    /// blocking calls undo it): switched only when the mode changes, not around every read.
    nonblocking: bool,
    agreed: Agreed,
    timing: Timing,
    /// The close handshake is over or the connection failed: nothing more to read or send.
    done: bool,
    /// The socket's read timeout as last set (setting it costs a system call; see `read_more`).
    read_timeout: Option<Duration>,
    /// Masking keys from the OS's CSPRNG, fetched 64 at a time (a `getrandom` call per frame
    /// cost more than the frame), and how many are used.
    mask_keys: [u8; MASK_KEY_BATCH * 4],
    mask_keys_used: usize,
    /// The frame being written, kept between sends (released when a big one made it large).
    out: Vec<u8>,
}

/// An input buffer that grew past this for a big message is shrunk after it.
const INPUT_KEEP: usize = 256 * 1024;

/// Masking keys fetched per `getrandom` call.
const MASK_KEY_BATCH: usize = 64;

/// A send buffer that grew past this for a big message is released after it.
const OUT_KEEP: usize = 64 * 1024;

/// What is read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The client's zlib level (the server's default too): level 1 costs a third of level 6's
/// time for most of its ratio on the JSON and text WebSocket messages carry.
const COMPRESSION_LEVEL: i32 = 1;

/// Messages shorter than this go uncompressed (a deflate block costs more than it saves).
const COMPRESSION_THRESHOLD: usize = 64;

impl Client {
    /// Connects to `url` and completes the opening handshake.
    pub fn open(url: &str, options: &Options) -> Result<Client, ClientError> {
        let target = Target::parse(url).map_err(ClientError::Url)?;
        let tls = if target.tls { Some(tls_config(options)?) } else { None };
        Client::open_target(&target, options, tls)
    }

    /// [`Client::open`] for a parsed target, with the TLS configuration made once for many
    /// connections (`wsgate bench`).
    fn open_target(
        target: &Target,
        options: &Options,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client, ClientError> {
        let target = target.clone();
        check_headers(options)?;
        let deadline = now() + options.handshake_timeout;
        let mut stream = connect(&target, options, tls)?;
        let key = handshake::new_key().map_err(ClientError::Connect)?;
        let offer = Offer {
            protocols: &options.protocols,
            origin: options.origin.as_deref(),
            headers: &options.headers,
            deflate: options.compress,
        };
        let request = handshake::request(&target, &key, &offer);
        stream.set_write_timeout(Some(options.handshake_timeout)).map_err(ClientError::Io)?;
        stream.write_all(&request).map_err(|e| handshake_io(e, &target))?;
        stream.flush().map_err(|e| handshake_io(e, &target))?;
        let mut input = Vec::with_capacity(READ_CHUNK);
        let (agreed, used) = loop {
            if let Some(done) = handshake::check_response(&input, &key, &offer)? {
                break done;
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            stream.set_read_timeout(Some(left)).map_err(ClientError::Io)?;
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(HandshakeError::Eof.into()),
                Ok(n) => input.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Err(ClientError::Timeout),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(handshake_io(e, &target)),
            }
        };
        stream.set_write_timeout(None).map_err(ClientError::Io)?;
        stream.set_read_timeout(None).map_err(ClientError::Io)?;
        let limits = MessageLimits { max_message: options.max_message, max_frame: options.max_message };
        let timing = Timing::new(Duration::ZERO, options.ping_interval, options.pong_timeout, options.close_timeout);
        let pmd = agreed.deflate.map(|a| PerMessage::for_client(a, COMPRESSION_THRESHOLD, COMPRESSION_LEVEL, 8));
        Ok(Client {
            stream,
            endpoint: Endpoint::new(Role::Client, limits, now(), pmd.is_some()),
            pmd,
            codecs: SharedCodecs::default(),
            filled: input.len(),
            input,
            start: used,
            nonblocking: false,
            agreed,
            timing,
            done: false,
            read_timeout: None,
            mask_keys: [0; MASK_KEY_BATCH * 4],
            mask_keys_used: MASK_KEY_BATCH,
            out: Vec::new(),
        })
    }

    /// What this client is made of, for a caller that drives the connection itself: the
    /// stream, the endpoint, its permessage-deflate, and the bytes read after the 101.
    fn into_parts(mut self) -> (Stream, Endpoint, Option<PerMessage>, Vec<u8>) {
        self.input.truncate(self.filled);
        self.input.drain(..self.start);
        (self.stream, self.endpoint, self.pmd, self.input)
    }

    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.agreed.protocol.as_deref()
    }

    /// permessage-deflate as the server agreed it (its own view of the sides), if it did.
    pub fn compression(&self) -> Option<&crate::ws::extensions::Agreed> {
        self.agreed.deflate.as_ref()
    }

    /// Sends one text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send_frame(Opcode::Text, text.as_bytes())
    }

    /// Sends one binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send_frame(Opcode::Binary, bytes)
    }

    /// Sends a ping (its pong is taken inside [`Client::receive`]).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        if payload.len() > 125 {
            return Err(ClientError::Url(UrlError("a ping carries at most 125 bytes".into())));
        }
        self.send_frame(Opcode::Ping, payload)
    }

    /// The next message, waiting at most `timeout` (`None`: as long as it takes). Pings are
    /// answered and pongs taken on the way. After the server's close frame (answered here)
    /// it returns [`ClientError::Closed`].
    pub fn receive(&mut self, timeout: Option<Duration>) -> Result<Message, ClientError> {
        let deadline = timeout.map(|t| now() + t);
        loop {
            if self.done {
                return Err(ClientError::Closed { code: Some(close::ABNORMAL), reason: "connection is closed".into() });
            }
            if let Some(message) = self.decode()? {
                return Ok(message);
            }
            self.read_more(deadline)?;
        }
    }

    /// Closes with `code` and `reason` (at most 123 bytes), waits up to the close timeout for
    /// the server's close frame (messages that arrive meanwhile are dropped), and ends the
    /// connection. Returns the server's code.
    pub fn close(mut self, code: u16, reason: &str) -> Result<Option<u16>, ClientError> {
        if self.done {
            return Ok(None);
        }
        if !close::is_valid_code(code) || reason.len() > 123 {
            return Err(ClientError::Url(UrlError(format!(
                "cannot close with code {code} and a {}-byte reason",
                reason.len()
            ))));
        }
        self.send_close(code, reason)?;
        let deadline = Some(now() + self.timing.close_timeout());
        loop {
            match self.decode() {
                Ok(_) => {}
                Err(ClientError::Closed { code, .. }) => return Ok(code),
                Err(e) => return Err(e),
            }
            match self.read_more(deadline) {
                Ok(()) => {}
                Err(ClientError::Timeout) => return Err(ClientError::Timeout),
                Err(e) => return Err(e),
            }
        }
    }

    /// After the close handshake, waits up to `timeout` for the server to close the TCP
    /// connection first, as RFC 6455 §7.1.1 asks of a client, then closes it.
    pub fn finish(mut self, timeout: Duration) {
        let deadline = now() + timeout;
        self.done = false;
        while now() < deadline {
            self.filled = 0;
            self.start = 0;
            match self.read_more(Some(deadline)) {
                Ok(()) => {}
                Err(_) => return,
            }
        }
    }

    /// Decodes what is buffered: a message, or `None` when more bytes are needed.
    fn decode(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            let at = Stamp::at(now());
            let received = match self.endpoint.receive(
                &mut self.input[self.start..self.filled],
                at,
                usize::MAX,
                &mut self.codecs,
                self.pmd.as_mut(),
            ) {
                Ok(r) => r,
                Err(e) => return Err(self.fail(e)),
            };
            let used = received.used;
            let mut reply: Option<(Opcode, Vec<u8>)> = None;
            let mut outcome = None;
            match received.event {
                None if used == 0 => {
                    self.compact();
                    return Ok(None);
                }
                None | Some(Event::Pong) | Some(Event::Yield) => {}
                Some(Event::Message(kind, payload)) => {
                    let bytes = payload.as_slice().to_vec();
                    outcome = Some(Ok(match kind {
                        // The endpoint checked the UTF-8; this cannot fail.
                        MessageKind::Text => Message::Text(String::from_utf8_lossy(&bytes).into_owned()),
                        _ => Message::Binary(bytes),
                    }));
                }
                Some(Event::Ping(payload)) => reply = Some((Opcode::Pong, payload.to_vec())),
                Some(Event::CloseBegun { code, reason }) => {
                    let mut body = [0u8; 125];
                    let n = code.map_or(0, |c| encode_close_payload(&mut body, c, ""));
                    reply = Some((Opcode::Close, body[..n].to_vec()));
                    outcome = Some(Err(ClientError::Closed { code, reason: reason.to_string() }));
                }
                Some(Event::CloseAnswered(code)) => {
                    outcome = Some(Err(ClientError::Closed { code, reason: String::new() }));
                }
            }
            self.start += used;
            if let Some((opcode, payload)) = reply {
                // Our close answer may meet a connection the server already shut: the close
                // handshake is complete either way.
                let sent = self.write_frame(opcode, &payload);
                if opcode != Opcode::Close {
                    sent?;
                }
            }
            if let Some(outcome) = outcome {
                if outcome.is_err() {
                    self.done = true;
                }
                return outcome.map(Some);
            }
        }
    }

    /// The socket, for a caller that waits on it with others (`poll(2)`): when it is
    /// readable, call [`Client::receive_ready`]; at [`Client::next_deadline`], [`Client::on_timer`].
    pub fn fd(&self) -> RawFd {
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// The next message if one is buffered or can be read without waiting; `None` when the
    /// socket has nothing more for now.
    pub fn receive_ready(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            if self.done {
                return Err(ClientError::Closed { code: Some(close::ABNORMAL), reason: "connection is closed".into() });
            }
            if let Some(message) = self.decode()? {
                return Ok(Some(message));
            }
            self.set_nonblocking(true)?;
            match self.read_chunk() {
                Ok(()) => {}
                Err(ClientError::Timeout) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// When [`Client::on_timer`] has something to do (a ping to send, a pong overdue).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.endpoint.session().deadline(now(), &self.timing)
    }

    /// Sends the ping that is due, or fails the connection whose pong is overdue.
    pub fn on_timer(&mut self) -> Result<(), ClientError> {
        let now = now();
        match self.endpoint.session_mut().on_timer(now, &self.timing) {
            Some(Due::Ping) => self.write_frame(Opcode::Ping, b""),
            Some(Due::Close(code, reason)) => {
                let _ = self.send_close(code, reason);
                self.done = true;
                Err(ClientError::Protocol { code, reason })
            }
            Some(Due::Abort(why)) => {
                self.done = true;
                Err(ClientError::Protocol { code: close::ABNORMAL, reason: why })
            }
            None => Ok(()),
        }
    }

    fn set_nonblocking(&mut self, on: bool) -> Result<(), ClientError> {
        if self.nonblocking == on {
            return Ok(());
        }
        let set = match &self.stream {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Tls(s) => s.sock.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        };
        set.map_err(ClientError::Io)?;
        self.nonblocking = on;
        Ok(())
    }

    /// One read into the buffer: `Timeout` when the socket had nothing (or the read timed out).
    fn read_chunk(&mut self) -> Result<(), ClientError> {
        if self.input.len() < self.filled + READ_CHUNK {
            self.input.resize(self.filled + READ_CHUNK, 0);
        }
        let read = self.stream.read(&mut self.input[self.filled..]);
        match read {
            Ok(0) => {
                self.done = true;
                Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server ended the connection without a close frame",
                )))
            }
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) if is_timeout(&e) => Err(ClientError::Timeout),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => {
                self.done = true;
                Err(ClientError::Io(e))
            }
        }
    }

    /// Reads more input, by `deadline` (and the session's ping schedule).
    fn read_more(&mut self, deadline: Option<Instant>) -> Result<(), ClientError> {
        self.set_nonblocking(false)?;
        loop {
            let now = now();
            let session_due = self.endpoint.session().deadline(now, &self.timing);
            if session_due.is_some_and(|d| now >= d) {
                self.on_timer()?;
                continue;
            }
            let wait = [deadline, session_due].into_iter().flatten().min().map(|d| d.saturating_duration_since(now));
            if wait.is_some_and(|w| w.is_zero()) {
                return Err(ClientError::Timeout);
            }
            self.wait_at_most(wait)?;
            match self.read_chunk() {
                Err(ClientError::Timeout) if deadline.is_none_or(|d| self::now() < d) => {}
                other => return other,
            }
        }
    }

    /// Makes the next read wait no longer than `wait` (`None`: forever). The timeout is set
    /// again only when the one set would wait too long, or less than three quarters of `wait`:
    /// a read that returns data (the usual case) then costs no `setsockopt`, and one that
    /// times out early only goes round `read_more`'s loop.
    fn wait_at_most(&mut self, wait: Option<Duration>) -> Result<(), ClientError> {
        let keep = match (self.read_timeout, wait) {
            (None, None) => true,
            (Some(set), Some(wait)) => set <= wait && set >= wait * 3 / 4,
            _ => false,
        };
        if !keep {
            let next = wait.map(|w| if w > Duration::from_millis(4) { w * 7 / 8 } else { w });
            self.stream.set_read_timeout(next).map_err(ClientError::Io)?;
            self.read_timeout = next;
        }
        Ok(())
    }

    /// The next masking key.
    fn mask_key(&mut self) -> Result<[u8; 4], ClientError> {
        if self.mask_keys_used == MASK_KEY_BATCH {
            getrandom::getrandom(&mut self.mask_keys).map_err(|e| ClientError::Io(io::Error::other(e)))?;
            self.mask_keys_used = 0;
        }
        let at = self.mask_keys_used * 4;
        self.mask_keys_used += 1;
        Ok([self.mask_keys[at], self.mask_keys[at + 1], self.mask_keys[at + 2], self.mask_keys[at + 3]])
    }

    /// Moves the undecoded bytes to the front, so the buffer holds at most one message.
    fn compact(&mut self) {
        if self.start > 0 {
            self.input.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        // A big message grew the buffer: give the memory back once it is decoded.
        if self.input.len() > INPUT_KEEP && self.filled < INPUT_KEEP / 2 {
            self.input.truncate(INPUT_KEEP / 2);
            self.input.shrink_to_fit();
        }
    }

    /// The server broke the protocol: our close frame with the code it asks for, then done.
    fn fail(&mut self, e: WsError) -> ClientError {
        let code = e.close_code();
        let _ = self.send_close(code, e.reason());
        self.done = true;
        ClientError::Protocol { code, reason: e.reason() }
    }

    fn send_close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        if !self.endpoint.session_mut().close(now()) {
            return Ok(());
        }
        let mut body = [0u8; 125];
        let n = encode_close_payload(&mut body, code, reason);
        self.write_frame(Opcode::Close, &body[..n])
    }

    fn send_frame(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), ClientError> {
        if self.done || self.endpoint.session().is_closing() {
            return Err(ClientError::Closed { code: None, reason: "the connection is closing".into() });
        }
        self.write_frame(opcode, payload)
    }

    /// One masked frame, written whole; a data frame compressed (RSV1) when that was agreed
    /// and the message is worth it.
    fn write_frame(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), ClientError> {
        // Sends block (a frame is written whole), also between non-blocking reads.
        self.set_nonblocking(false)?;
        let key = self.mask_key()?;
        let compressed = match &mut self.pmd {
            Some(pmd) if !opcode.is_control() => pmd.compress(&mut self.codecs, payload),
            _ => None,
        };
        let payload = compressed.as_deref().unwrap_or(payload);
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, opcode, payload.len(), Some(key));
        if compressed.is_some() {
            head[0] |= RSV1;
        }
        let mut frame = std::mem::take(&mut self.out);
        crate::ws::mask::frame_into(&mut frame, &head, n, payload, key);
        let written = self.stream.write_all(&frame).and_then(|()| self.stream.flush());
        frame.clear();
        if frame.capacity() <= OUT_KEEP {
            self.out = frame;
        }
        written.map_err(|e| {
            self.done = true;
            ClientError::Io(e)
        })
    }
}

/// permessage-deflate's "compressed" mark on a message's first frame (RFC 7692 §6).
const RSV1: u8 = 0x40;

#[allow(clippy::disallowed_methods)] // a blocking client's own clock
fn now() -> Instant {
    Instant::now()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A failure while the upgrade is under way: TLS errors said as such.
fn handshake_io(e: io::Error, target: &Target) -> ClientError {
    if target.tls && e.kind() == io::ErrorKind::InvalidData {
        return ClientError::Tls(e.to_string());
    }
    if is_timeout(&e) {
        return ClientError::Timeout;
    }
    ClientError::Io(e)
}

/// Header names and values that would break the request (or smuggle another) are refused.
fn check_headers(options: &Options) -> Result<(), ClientError> {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    for (name, v) in &options.headers {
        if !token(name) || !value(v) {
            return Err(ClientError::Url(UrlError(format!("header {name:?}: not a valid header name and value"))));
        }
    }
    for p in &options.protocols {
        if !token(p) {
            return Err(ClientError::Url(UrlError(format!("subprotocol {p:?}: not a token"))));
        }
    }
    if options.origin.as_deref().is_some_and(|o| !value(o)) {
        return Err(ClientError::Url(UrlError("origin: line breaks are not allowed".into())));
    }
    Ok(())
}
