//! `wsgate client URL`: standard input and output over a WebSocket, websocat's everyday uses.
//!
//! Each line of standard input becomes a text message (`--binary`: a binary one, without the
//! newline) and each message received is written as a line (`--jsonl`: a JSON object with
//! its type, size, time and payload). At the end of the input it keeps printing what still
//! arrives until nothing has come for `--linger`, then closes (1000) and waits for the
//! server's close. `-n N` exits after N messages. `--reconnect` opens the connection again
//! after it is lost, with exponential backoff and jitter.
//!
//! The exit status says how it ended: [`EXIT_OK`] after a normal close, [`EXIT_CONNECT`]
//! when no connection could be made, [`EXIT_HANDSHAKE`] when the server (or TLS) refused the
//! upgrade, [`EXIT_CLOSED`] when the server closed with a code other than 1000/1001 or broke
//! the protocol, [`EXIT_LOST`] when the connection broke without a close.

// Argument docs are clap's help text (`ws://HOST[:PORT]/PATH`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{Client, ClientError, Message, Options};
use crate::ws::extensions::DeflateOffer;

pub const EXIT_OK: u8 = 0;
/// Bad arguments (clap's own status).
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONNECT: u8 = 3;
pub const EXIT_HANDSHAKE: u8 = 4;
pub const EXIT_CLOSED: u8 = 5;
pub const EXIT_LOST: u8 = 6;

/// `wsgate client`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// ws://HOST[:PORT]/PATH, wss://..., or ws+unix:SOCKET[:/PATH].
    pub url: String,
    /// Send each line as a binary message and print binary messages as they are.
    #[arg(long)]
    pub binary: bool,
    /// Print each message as a JSON line: {"type","size","time","data"} (binary data base64).
    #[arg(long)]
    pub jsonl: bool,
    /// Exit after receiving N messages.
    #[arg(short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Extra request header (repeatable), "Name: value".
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// CA certificates (PEM) to trust for wss:// instead of the public roots.
    #[arg(long = "ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (wss:// without knowing who the server is; a warning
    /// says so on every connection).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Client certificate chain (PEM), for servers that ask for one; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Offer permessage-deflate (RFC 7692).
    #[arg(long)]
    pub compress: bool,
    /// With --compress: ask the server to compress with at most this window (9-15).
    #[arg(long, value_name = "BITS", requires = "compress", value_parser = clap::value_parser!(u8).range(9..=15))]
    pub compress_window: Option<u8>,
    /// With --compress: both sides reset their compressor after every message (less memory
    /// on both, less compression).
    #[arg(long, requires = "compress")]
    pub no_context_takeover: bool,
    /// Ping the server after this many seconds of silence (0: never); a pong overdue by
    /// --pong-timeout ends the connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub ping_interval: f64,
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub pong_timeout: f64,
    /// After the end of input, how long to wait for more messages before closing.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub linger: f64,
    /// Connect and handshake timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Largest message accepted from the server, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message: usize,
    /// Connect again when the connection is lost or refused (not after a normal close or
    /// the end of input): waits 0.5 s, doubling up to 30 s, with up to 50 % random jitter.
    #[arg(long)]
    pub reconnect: bool,
}

fn seconds(s: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name}: {s} is not a number of seconds"))
}

impl ClientArgs {
    fn options(&self) -> Result<Options, String> {
        let mut headers = Vec::new();
        for h in &self.headers {
            let Some((name, value)) = h.split_once(':') else {
                return Err(format!("--header {h:?}: expected \"Name: value\""));
            };
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let timeout = seconds(self.timeout, "timeout")?;
        Ok(Options {
            protocols: self.protocols.clone(),
            origin: self.origin.clone(),
            headers,
            ca_file: self.ca.clone(),
            insecure: self.insecure,
            client_cert: self.cert.clone().zip(self.key.clone()),
            compress: self.compress.then(|| DeflateOffer {
                server_no_context_takeover: self.no_context_takeover,
                client_no_context_takeover: self.no_context_takeover,
                server_max_window_bits: self.compress_window.unwrap_or(15),
                client_max_window_bits: 15,
            }),
            max_message: self.max_message,
            connect_timeout: timeout,
            handshake_timeout: timeout,
            ping_interval: seconds(self.ping_interval, "ping-interval")?,
            pong_timeout: seconds(self.pong_timeout, "pong-timeout")?,
            ..Options::default()
        })
    }
}

/// Runs the terminal client; returns the exit status.
pub fn run(args: &ClientArgs) -> u8 {
    let options = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wsgate client: {e}");
            return EXIT_USAGE;
        }
    };
    let mut session =
        Session { args, input: Input::new(), received: 0, backoff: Duration::from_millis(500), heard: None };
    loop {
        if args.insecure && args.url.starts_with("wss:") {
            eprintln!("wsgate client: WARNING: --insecure: the server's certificate is not checked; anyone on the path can read and change this connection");
        }
        let ended = match Client::open(&args.url, &options) {
            Ok(client) => {
                session.backoff = Duration::from_millis(500);
                session.serve(client)
            }
            Err(e) => Ended::Failed(e),
        };
        let status = match &ended {
            Ended::Done => return EXIT_OK,
            Ended::Failed(e) => {
                eprintln!("wsgate client: {e}");
                exit_status(e)
            }
        };
        let retry = args.reconnect && matches!(status, EXIT_CONNECT | EXIT_LOST) && !session.input.eof;
        if !retry {
            return status;
        }
        let jitter = session.backoff.mul_f64(jitter_fraction() * 0.5);
        eprintln!("wsgate client: connecting again in {:.1} s", (session.backoff + jitter).as_secs_f64());
        std::thread::sleep(session.backoff + jitter);
        session.backoff = (session.backoff * 2).min(Duration::from_secs(30));
    }
}

/// How a connection ended, as far as the exit status cares.
enum Ended {
    /// Normal close, the message count reached, or the end of input.
    Done,
    Failed(ClientError),
}

fn exit_status(e: &ClientError) -> u8 {
    match e {
        ClientError::Url(_) => EXIT_USAGE,
        ClientError::Connect(_) => EXIT_CONNECT,
        ClientError::Tls(_) | ClientError::Handshake(_) => EXIT_HANDSHAKE,
        ClientError::Closed { code: Some(1000 | 1001), .. } => EXIT_OK,
        ClientError::Closed { .. } | ClientError::Protocol { .. } => EXIT_CLOSED,
        ClientError::Timeout => EXIT_CONNECT,
        ClientError::Io(_) => EXIT_LOST,
    }
}

/// A fraction in [0, 1) from the OS's randomness (the reconnect jitter).
fn jitter_fraction() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// Standard input, read as it becomes readable, split into lines.
struct Input {
    pending: Vec<u8>,
    eof: bool,
    /// When the end of input was seen (the linger runs from there).
    eof_at: Option<Instant>,
}

impl Input {
    fn new() -> Input {
        Input { pending: Vec::new(), eof: false, eof_at: None }
    }

    /// One read (stdin is readable, so it does not block); the complete lines go to `line`.
    fn read(&mut self, mut line: impl FnMut(&[u8]) -> Result<(), ClientError>) -> Result<(), ClientError> {
        let mut chunk = [0u8; 64 * 1024];
        let n = match io::stdin().lock().read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => 0,
        };
        if n == 0 {
            self.eof = true;
            self.eof_at = Some(now());
            if !self.pending.is_empty() {
                let last = std::mem::take(&mut self.pending);
                line(&last)?;
            }
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.pending[start..]) {
            let end = start + i;
            let text = &self.pending[start..end];
            line(text.strip_suffix(b"\r").unwrap_or(text))?;
            start = end + 1;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

struct Session<'a> {
    args: &'a ClientArgs,
    input: Input,
    received: u64,
    backoff: Duration,
    /// When the last message came (the linger after the end of input runs from it too).
    heard: Option<Instant>,
}

impl Session<'_> {
    fn serve(&mut self, mut client: Client) -> Ended {
        let mut out = io::BufWriter::new(io::stdout().lock());
        let result = self.pump(&mut client, &mut out);
        let _ = out.flush();
        match result {
            Ok(Some(())) => match client.close(1000, "") {
                Ok(_) | Err(ClientError::Timeout) => Ended::Done,
                Err(e) => Ended::Failed(e),
            },
            Ok(None) => Ended::Done,
            Err(ClientError::Closed { code: Some(1000 | 1001), .. }) => Ended::Done,
            Err(e) => Ended::Failed(e),
        }
    }

    /// Moves messages both ways until the count is reached or the input ended and lingered
    /// (`Some`: close now), or the connection ended (`Err`).
    fn pump(&mut self, client: &mut Client, out: &mut impl Write) -> Result<Option<()>, ClientError> {
        let linger = Duration::try_from_secs_f64(self.args.linger).unwrap_or(Duration::from_secs(1));
        let binary = self.args.binary;
        loop {
            while let Some(message) = client.receive_ready()? {
                self.print(out, &message).map_err(ClientError::Io)?;
                self.received += 1;
                self.heard = Some(now());
                if self.args.count.is_some_and(|n| self.received >= n) {
                    return Ok(Some(()));
                }
            }
            out.flush().map_err(ClientError::Io)?;
            let mut deadline = client.next_deadline();
            if let Some(eof) = self.input.eof_at {
                let quiet_until = self.heard.map_or(eof, |h| h.max(eof)) + linger;
                if now() >= quiet_until {
                    return Ok(Some(()));
                }
                deadline = Some(deadline.map_or(quiet_until, |d| d.min(quiet_until)));
            }
            let (socket, stdin) = wait(client.fd(), !self.input.eof, deadline);
            if stdin {
                self.input.read(|line| {
                    if binary {
                        client.send_binary(line)
                    } else {
                        client.send_text(&String::from_utf8_lossy(line))
                    }
                })?;
            }
            if !socket && client.next_deadline().is_some_and(|d| now() >= d) {
                client.on_timer()?;
            }
        }
    }

    fn print(&self, out: &mut impl Write, message: &Message) -> io::Result<()> {
        if self.args.jsonl {
            let time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
            let line = match message {
                Message::Text(t) => {
                    serde_json::json!({"type": "text", "size": t.len(), "time": time, "data": t})
                }
                Message::Binary(b) => {
                    serde_json::json!({"type": "binary", "size": b.len(), "time": time, "data": STANDARD.encode(b)})
                }
            };
            serde_json::to_writer(&mut *out, &line)?;
        } else {
            match message {
                Message::Text(t) => out.write_all(t.as_bytes())?,
                Message::Binary(b) => out.write_all(b)?,
            }
        }
        out.write_all(b"\n")
    }
}

/// Waits until the socket or standard input (when `stdin`) is readable, or `deadline`.
fn wait(socket: std::os::fd::RawFd, stdin: bool, deadline: Option<Instant>) -> (bool, bool) {
    let timeout = deadline.map(|d| d.saturating_duration_since(now()));
    let ready = if stdin {
        crate::sys::poll::readable([socket, libc::STDIN_FILENO], timeout)
    } else {
        crate::sys::poll::readable([socket], timeout).map(|[s]| [s, false])
    };
    // A poll that failed (it cannot, on these descriptors) reads as "nothing yet".
    let [socket, stdin] = ready.unwrap_or([false, false]);
    (socket, stdin)
}

#[allow(clippy::disallowed_methods)] // the terminal client's own clock
fn now() -> Instant {
    Instant::now()
}
