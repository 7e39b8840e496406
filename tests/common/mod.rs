//! Test harness: starts the real `wsgate` binary on an ephemeral loopback port. The apps'
//! tests talk to it through wsgate's own client library (`ws`); tungstenite (`client`) stays
//! the independent referee of the protocol tests (echo, TLS, compression, lifecycle), and
//! `Raw` writes the hostile bytes neither client would send.
#![allow(dead_code)]

mod packages;
pub use packages::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: tests must pass on a slow, noisy machine. Nothing waits this long when it works.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener (port 0 resolved), when the config has one.
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    _config: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Server {
    /// Starts `wsgate -l 127.0.0.1:0 ARGS...`.
    pub fn start(args: &[&str]) -> Server {
        Server::spawn(args, None)
    }

    /// Starts `wsgate -c <file with config_text> -l 127.0.0.1:0 ARGS...`.
    pub fn with_config(config_text: &str, args: &[&str]) -> Server {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wsgate-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, config_text).unwrap();
        Server::spawn(args, Some(tempfile_path::TempPath(path)))
    }

    /// Starts the server under `ulimit -n LIMIT` (soft and hard).
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_wsgate"));
        Server::spawn_cmd(cmd, args, None)
    }

    /// Starts `wsgate -c <file>` with no `-l`: the file's own listeners (port 0) are used.
    pub fn with_config_only(config_text: &str) -> Server {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wsgate-test-only-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, config_text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        cmd.arg("-c").arg(&path);
        Server::spawn_cmd_with(cmd, &[], Some(tempfile_path::TempPath(path)), false)
    }

    fn spawn(args: &[&str], config: Option<tempfile_path::TempPath>) -> Server {
        Server::spawn_cmd(Command::new(env!("CARGO_BIN_EXE_wsgate")), args, config)
    }

    /// utime + stime of the server process, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the ")" that ends the command name; utime and stime are fields 14, 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn spawn_cmd(cmd: Command, args: &[&str], config: Option<tempfile_path::TempPath>) -> Server {
        Server::spawn_cmd_with(cmd, args, config, true)
    }

    fn spawn_cmd_with(
        mut cmd: Command,
        args: &[&str],
        config: Option<tempfile_path::TempPath>,
        listen_arg: bool,
    ) -> Server {
        if listen_arg {
            if let Some(c) = &config {
                cmd.arg("-c").arg(&c.0);
            }
            cmd.args(["-l", "127.0.0.1:0"]);
        }
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start wsgate");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        let sink = log.clone();
        let (admin_tx, admin_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("the dashboard on http://").nth(1) {
                    let _ = admin_tx.send(rest.trim_end_matches('/').to_string());
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let first = rest.split(',').next().unwrap_or("");
                    let _ = tx.send(first.split_whitespace().next().unwrap_or("").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log: {:?}", log.lock().unwrap());
            }
        };
        // The server logs the admin listener before the WebSocket listeners.
        let admin = admin_rx.try_recv().ok().map(|a| a.parse().expect("admin address"));
        Server { child, addr, admin, log, _config: config }
    }

    /// The configuration file the server was started with (`with_config`).
    pub fn config_path(&self) -> &std::path::Path {
        &self._config.as_ref().expect("started with a config file").0
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("an admin listener"), path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_since(0, needle)
    }

    /// Log lines so far: a later [`Server::wait_log_since`] looks only at what comes after.
    pub fn log_lines(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The first log line with `needle` from line `from` on (a client port in an access line
    /// may be one an earlier connection had: loopback reuses ports at once).
    pub fn wait_log_since(&self, from: usize, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().skip(from).find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(start.elapsed() < WAIT, "no log line with {needle:?}: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < WAIT, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh self-signed certificate for `host`, written to `dir` as `NAME.pem` and `NAME.key`:
/// the certificate's path (also the CA a client trusts) and the key's.
pub fn self_signed(dir: &std::path::Path, name: &str, host: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends raw bytes and reads the whole response (until the server closes or `WAIT`).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tcp(addr);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends raw bytes and reads the response head only (the connection may stay open, e.g.
/// after a 101).
pub fn http_exchange_head(addr: SocketAddr, request: &str) -> String {
    let mut s = tcp(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes `frame` again and again until the peer stops taking bytes (a write blocks past the
/// stream's write timeout) or `cap` bytes went out. Returns the bytes written.
pub fn write_until_blocked(stream: &mut TcpStream, frame: &[u8], cap: usize) -> usize {
    stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut sent = 0usize;
    while sent < cap {
        match stream.write(frame) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}

/// A client speaking raw bytes, to send what a conforming client never would.
pub struct Raw {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

/// A frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: a permessage-deflate message.
    pub compressed: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl Raw {
    /// Connects and completes the upgrade on `path`, offering permessage-deflate with
    /// `offer` (the `Sec-WebSocket-Extensions` value); returns the server's answer to it.
    pub fn connect_offering(addr: SocketAddr, path: &str, offer: &str) -> (Raw, Option<String>) {
        let request = upgrade_request(path, &format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        let mut stream = tcp(addr);
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let answer =
            head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: ")).map(|v| v.trim_end().to_string());
        (Raw { stream, pending: Vec::new() }, answer)
    }

    /// Connects and completes the upgrade on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> Raw {
        Raw::connect_with(addr, upgrade_request(path, "").as_bytes())
    }

    /// Sends `request` (bytes, so they need not be UTF-8) and expects a 101.
    pub fn connect_with(addr: SocketAddr, request: &[u8]) -> Raw {
        let mut stream = tcp(addr);
        stream.write_all(request).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        Raw { stream, pending: Vec::new() }
    }

    /// Wraps a stream whose upgrade is already done.
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw { stream, pending: Vec::new() }
    }

    /// Sends one masked frame with the given first byte (FIN/RSV/opcode).
    pub fn send(&mut self, first: u8, payload: &[u8]) {
        let frame = masked_frame(first, payload);
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one frame; `None` on EOF.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                return Some(frame);
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code. Panics on EOF without one.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.recv().expect("EOF before a close frame");
            if frame.opcode == 8 {
                return frame.close_code();
            }
        }
    }

    /// After the close handshake the server must end the TCP connection.
    pub fn expect_eof(&mut self) {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected EOF, got {e}"),
            }
        }
    }
}

pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0xA1, 0xB2, 0xC3, 0xD4];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(pos..pos + len)?.to_vec();
    pos += len;
    let (fin, compressed) = (buf[0] & 0x80 != 0, buf[0] & 0x40 != 0);
    Some((Frame { fin, compressed, opcode: buf[0] & 0x0F, payload }, pos))
}

/// Connects a tungstenite client (the independent implementation).
pub fn client(url: &str) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (ws, response) = tungstenite::connect(url).expect("connect");
    assert_eq!(response.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    ws
}

/// A connection made with wsgate's own client library (`wsgate::client`).
pub type Ws = wsgate::client::Client;
pub use wsgate::client::Message as WsMessage;

/// Opens `url` with the client library; panics with its error (which says what was wrong).
pub fn ws_open(url: &str) -> Ws {
    ws_open_with(url, &wsgate::client::Options::default())
}

pub fn ws_open_with(url: &str, options: &wsgate::client::Options) -> Ws {
    Ws::open(url, options).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The next message (pings answered and pongs taken inside), within `WAIT`.
pub fn ws_next(ws: &mut Ws) -> WsMessage {
    ws.receive(Some(WAIT)).unwrap_or_else(|e| panic!("receive: {e}"))
}

/// The next message, which must be text.
pub fn ws_text(ws: &mut Ws) -> String {
    match ws_next(ws) {
        WsMessage::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next message as JSON.
pub fn ws_json(ws: &mut Ws) -> serde_json::Value {
    let text = ws_text(ws);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Reads the server's close frame (answered inside): its code and reason. A message before it
/// is a failure.
pub fn ws_closed(ws: &mut Ws) -> (Option<u16>, String) {
    match ws.receive(Some(WAIT)) {
        Err(wsgate::client::ClientError::Closed { code, reason }) => (code, reason),
        other => panic!("expected the server's close, got {other:?}"),
    }
}

/// Waits (bounded) for a channel message; for tests that run clients on threads.
pub fn recv_within<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(WAIT).expect("timed out")
}

/// An HTTP request with ureq (independent of the server's code): status and body, whatever
/// the status.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<(&str, &[u8])>) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(WAIT).build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some((content_type, bytes)) => req.set("Content-Type", content_type).send_bytes(bytes),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    (status, response.into_string().unwrap_or_default())
}

/// Reads text messages until `pred` matches one (bounded by `WAIT`); returns it.
pub fn read_text(ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>) -> String {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) => return t.as_str().to_string(),
            tungstenite::Message::Binary(b) => return format!("binary:{}", String::from_utf8_lossy(&b)),
            _ => {}
        }
    }
}

/// A headless Chromium with a profile of its own, killed (and its profile removed) when
/// dropped, so a failing test leaves no browser behind.
pub struct Browser {
    pub child: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Opens `url`; `extra`: more command-line switches; `stderr`: piped (DevTools' address).
    pub fn launch(tag: &str, url: &str, extra: &[&str], stderr: bool) -> Browser {
        let profile = std::env::temp_dir().join(format!("wsgate-chromium-{tag}-{}", std::process::id()));
        let child = Command::new(CHROMIUM.executable())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(if stderr { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("start chromium");
        Browser { child, profile }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Scrapes the admin listener's `/metrics` until every line in `want` is there (bounded).
pub fn wait_metrics(server: &Server, want: &[&str]) {
    let start = Instant::now();
    loop {
        let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            return;
        }
        assert!(start.elapsed() < WAIT, "missing some of {want:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A socket directory with Python test backends (`tests/backends/echo_backend.py`) in it,
/// reachable after a privilege drop; the backends are killed and the directory removed on drop.
pub struct PyBackends {
    pub dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl PyBackends {
    pub fn new(tag: &str) -> PyBackends {
        let dir = std::env::temp_dir().join(format!("wsgate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        PyBackends { dir, children: Vec::new() }
    }

    /// Starts a backend in `mode` on socket `name`; returns the socket's path once it listens.
    pub fn start(&mut self, name: &str, mode: &str) -> std::path::PathBuf {
        let socket = self.dir.join(name);
        let child = spawn_py_backend(&socket, mode, &self.dir.join(format!("{name}.log")));
        self.children.push(child);
        socket
    }
}

/// Starts `tests/backends/echo_backend.py` on `socket` in `mode`, logging to `log`; returns
/// once it listens.
pub fn spawn_py_backend(socket: &std::path::Path, mode: &str, log: &std::path::Path) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/backends/echo_backend.py");
    let mut child = Command::new(PYTHON3.executable())
        .args([script, socket.to_str().unwrap(), mode, log.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    child
}

impl Drop for PyBackends {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Arguments a gateway with backend routes needs: as root, wsgate insists on dropping privileges.
pub fn backend_gateway_args() -> &'static [&'static str] {
    if wsgate::sys::privileges::is_root() {
        &["-u", "nobody"]
    } else {
        &[]
    }
}
