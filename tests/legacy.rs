//! The legacy drafts (hixie-76, hixie-75) through the server, with a small client written for
//! these tests (no maintained client speaks them): handshakes checked against the draft's own
//! example, echo, a chat room shared with RFC 6455 clients, a framed backend, refusals, and
//! hostile frames.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;

const ORIGIN: &str = "http://example.com";

const CONFIG: &str = r#"
[limits]
max_message_size = "256KiB"
idle_timeout = "2s"

[[route]]
path = "/echo"
app = "echo"
legacy = ["hixie-76", "hixie-75"]
origins = ["http://example.com"]

[[route]]
path = "/only76"
app = "echo"
legacy = ["hixie-76"]
origins = ["http://example.com"]

[[route]]
path = "/plain"
app = "echo"

[[route]]
path = "/room/*"
app = "chat"
legacy = ["hixie-76", "hixie-75"]
origins = ["http://example.com"]
"#;

/// A hixie-76 / -75 client: the handshake, text frames out, frames in.
struct Legacy<S: Read + Write = TcpStream> {
    stream: S,
    pending: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum In {
    Text(String),
    Close,
}

/// draft-hixie-thewebsocketprotocol-76 §1.2: these keys and key3 must be answered with
/// `8jKS'y:G*Co,Wxa-` (computed by hand in the draft, not by our code).
const KEY1: &str = "4 @1  46546xW%0l 1 5";
const KEY2: &str = "12998 5 Y3 1  .P00";
const KEY3: &[u8; 8] = b"^n:ds[4U";
const ANSWER: &[u8; 16] = b"8jKS'y:G*Co,Wxa-";

fn request76(path: &str, origin: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nSec-WebSocket-Key2: {KEY2}\r\n\
Upgrade: WebSocket\r\nSec-WebSocket-Key1: {KEY1}\r\nOrigin: {origin}\r\n{extra}\r\n"
    )
}

fn request75(path: &str, origin: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nHost: example.com\r\nOrigin: {origin}\r\n\r\n"
    )
}

impl Legacy {
    /// A hixie-76 client; `late`: key3 follows the head after a pause.
    fn connect76(addr: SocketAddr, path: &str, late: bool) -> (Legacy, String) {
        let mut stream = tcp(addr);
        stream.write_all(request76(path, ORIGIN, "").as_bytes()).unwrap();
        if late {
            std::thread::sleep(Duration::from_millis(300));
        }
        stream.write_all(KEY3).unwrap();
        let mut client = Legacy { stream, pending: Vec::new() };
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"), "{head}");
        let mut answer = [0u8; 16];
        client.read_exact(&mut answer);
        assert_eq!(&answer, ANSWER, "the draft's own example");
        (client, head)
    }

    fn connect75(addr: SocketAddr, path: &str) -> (Legacy, String) {
        let mut stream = tcp(addr);
        stream.write_all(request75(path, ORIGIN).as_bytes()).unwrap();
        let mut client = Legacy { stream, pending: Vec::new() };
        let head = client.read_head();
        // hixie-75 clients compare these 85 bytes exactly.
        assert!(
            head.starts_with(
                "HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            ),
            "{head}"
        );
        (client, head)
    }
}

impl<S: Read + Write> Legacy<S> {
    /// hixie-76's handshake on any stream (TLS too).
    fn open76(mut stream: S, path: &str) -> (Legacy<S>, String) {
        stream.write_all(request76(path, ORIGIN, "").as_bytes()).unwrap();
        stream.write_all(KEY3).unwrap();
        let mut client = Legacy { stream, pending: Vec::new() };
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"), "{head}");
        let mut answer = [0u8; 16];
        client.read_exact(&mut answer);
        assert_eq!(&answer, ANSWER, "the draft's own example");
        (client, head)
    }

    fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(self.stream.read(&mut b).unwrap(), 1, "EOF in the head: {}", String::from_utf8_lossy(&head));
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }

    fn read_exact(&mut self, out: &mut [u8]) {
        self.stream.read_exact(out).unwrap();
    }

    fn send(&mut self, text: &str) {
        self.send_raw(&[&[0u8][..], text.as_bytes(), &[0xFF]].concat());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame; `None` at EOF.
    fn recv(&mut self) -> Option<In> {
        loop {
            match self.pending.as_slice() {
                [0x00, rest @ ..] => {
                    if let Some(end) = rest.iter().position(|&b| b == 0xFF) {
                        let text = String::from_utf8(rest[..end].to_vec()).expect("UTF-8 from the server");
                        self.pending.drain(..end + 2);
                        return Some(In::Text(text));
                    }
                }
                [0xFF, 0x00, ..] => {
                    self.pending.drain(..2);
                    return Some(In::Close);
                }
                [0xFF] | [] => {}
                other => panic!("not a legacy frame from the server: {:?}", &other[..other.len().min(16)]),
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn expect_text(&mut self) -> String {
        match self.recv() {
            Some(In::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn metric(server: &Server, line_start: &str) -> u64 {
    let _ = server;
    let text = ureq_get(&format!("http://{}/metrics", server.admin.expect("admin")));
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn ureq_get(url: &str) -> String {
    let (status, body) = http("GET", url, &[], None);
    assert_eq!(status, 200, "{url}: {body}");
    body
}

fn server() -> Server {
    Server::with_config(&format!("{CONFIG}\n[admin]\nlisten = \"127.0.0.1:0\"\n"), &[])
}

#[test]
fn hixie76_echo_with_the_drafts_own_handshake() {
    let server = server();
    let (mut c, head) = Legacy::connect76(server.addr, "/echo", false);
    assert!(head.contains("\r\nSec-WebSocket-Origin: http://example.com\r\n"), "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Location: ws://example.com/echo\r\n"), "{head}");
    c.send("hello");
    assert_eq!(c.expect_text(), "hello");
    c.send("héllo, 世界");
    assert_eq!(c.expect_text(), "héllo, 世界");
    // Two frames in one write, and one split over writes.
    c.send_raw(b"\x00one\xff\x00two\xff\x00thr");
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b"ee\xff");
    assert_eq!(c.expect_text(), "one");
    assert_eq!(c.expect_text(), "two");
    assert_eq!(c.expect_text(), "three");
    // Longer than a read buffer, in small writes: joined across reads.
    let long = "0123456789abcdef".repeat(12_000); // 192,000 bytes
    let wire = [&[0u8][..], long.as_bytes(), &[0xFF]].concat();
    for piece in wire.chunks(7_000) {
        c.send_raw(piece);
    }
    assert_eq!(c.expect_text(), long);
    // The client closes: the server answers 0xFF 0x00 and ends the connection.
    c.send_raw(&[0xFF, 0x00]);
    assert_eq!(c.recv(), Some(In::Close));
    assert_eq!(c.recv(), None);
    assert_eq!(metric(&server, "wsgate_legacy_opens_total{draft=\"hixie-76\"}"), 1);
}

#[test]
fn key3_may_come_after_the_head() {
    let server = server();
    let (mut c, _) = Legacy::connect76(server.addr, "/echo", true);
    c.send("late key");
    assert_eq!(c.expect_text(), "late key");
}

#[test]
fn key3_that_never_comes_is_a_handshake_timeout() {
    let config = CONFIG.replace("idle_timeout = \"2s\"", "idle_timeout = \"2s\"\nhandshake_timeout = \"1s\"");
    let server = Server::with_config(&config, &[]);
    let mut s = tcp(server.addr);
    s.write_all(request76("/echo", ORIGIN, "").as_bytes()).unwrap();
    s.write_all(&KEY3[..5]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn hixie75_echo_and_the_server_closing() {
    let server = server();
    let (mut c, head) = Legacy::connect75(server.addr, "/echo");
    assert!(head.contains("\r\nWebSocket-Origin: http://example.com\r\n"), "{head}");
    assert!(head.contains("\r\nWebSocket-Location: ws://example.com/echo\r\n"), "{head}");
    assert!(!head.contains("Sec-"), "{head}");
    c.send("seventy-five");
    assert_eq!(c.expect_text(), "seventy-five");
    // idle_timeout (2 s): hixie-75 has no closing frame, the connection just ends.
    assert_eq!(c.recv(), None);
    assert_eq!(metric(&server, "wsgate_legacy_opens_total{draft=\"hixie-75\"}"), 1);
}

#[test]
fn idle_hixie76_client_gets_the_closing_frame_and_no_pings() {
    let server = server();
    let (mut c, _) = Legacy::connect76(server.addr, "/echo", false);
    // No RFC 6455 ping ever reaches it (recv panics on anything but legacy frames).
    assert_eq!(c.recv(), Some(In::Close));
    c.send_raw(&[0xFF, 0x00]);
    assert_eq!(c.recv(), None);
}

#[test]
fn legacy_and_rfc6455_clients_share_a_chat_room() {
    let server = server();
    let (mut old76, _) = Legacy::connect76(server.addr, "/room/lobby", false);
    let (mut old75, _) = Legacy::connect75(server.addr, "/room/lobby");
    let mut modern = ws_open(&server.url("/room/lobby"));
    // Everyone is in the room before anyone speaks: each one's own message comes back too.
    modern.send_text("from rfc6455").unwrap();
    assert_eq!(ws_text(&mut modern), "from rfc6455");
    assert_eq!(old76.expect_text(), "from rfc6455");
    assert_eq!(old75.expect_text(), "from rfc6455");
    old76.send("from hixie-76");
    assert_eq!(ws_text(&mut modern), "from hixie-76");
    assert_eq!(old76.expect_text(), "from hixie-76");
    assert_eq!(old75.expect_text(), "from hixie-76");
    old75.send("from hixie-75");
    assert_eq!(ws_text(&mut modern), "from hixie-75");
    assert_eq!(old76.expect_text(), "from hixie-75");
    assert_eq!(old75.expect_text(), "from hixie-75");
    // Binary: UTF-8 goes to legacy clients as text; anything else cannot, and is counted.
    modern.send_binary(b"\xff\xfe not text").unwrap();
    modern.send_binary(b"utf-8 in binary").unwrap();
    assert_eq!(old76.expect_text(), "utf-8 in binary");
    assert_eq!(old75.expect_text(), "utf-8 in binary");
    assert_eq!(metric(&server, "wsgate_legacy_dropped_total"), 2);
}

#[test]
fn refusals() {
    let server = server();
    let cases: &[(String, &str)] = &[
        (request76("/echo", "http://evil.example", ""), "HTTP/1.1 403"),
        (request76("/echo", "", "").replace("Origin: \r\n", ""), "HTTP/1.1 403"),
        (request75("/only76", ORIGIN), "HTTP/1.1 426"),
        (request76("/echo", ORIGIN, "").replace(KEY1, "12345"), "HTTP/1.1 400"),
        (request76("/echo", ORIGIN, "").replace(KEY1, "1 2 3"), "HTTP/1.1 400"),
        (request76("/echo", ORIGIN, "").replace(KEY1, "99999999999 "), "HTTP/1.1 400"),
        (request76("/echo", ORIGIN, "").replace("Connection: Upgrade\r\n", ""), "HTTP/1.1 400"),
        // A route without `legacy` answers as it always did: RFC 6455 needs a version.
        (request76("/plain", ORIGIN, ""), "HTTP/1.1 400"),
    ];
    for (request, status) in cases {
        let mut bytes = request.clone().into_bytes();
        bytes.extend_from_slice(KEY3);
        let answer = http_exchange(server.addr, &bytes);
        assert!(answer.starts_with(status), "{request:?} -> {answer}");
    }
    let answer = http_exchange(server.addr, request75("/only76", ORIGIN).as_bytes());
    assert!(answer.contains("Sec-WebSocket-Version: 13"), "{answer}");
    assert!(answer.contains("does not accept hixie-75"), "{answer}");
}

#[test]
fn hostile_frames_close_the_connection() {
    let server = server();
    let cases: &[&[u8]] = &[
        // The length-prefixed form.
        b"\x80\x05hello",
        // Neither text nor close.
        b"\x01abc\xff",
        // Invalid UTF-8.
        b"\x00\xc3\x28\xff",
    ];
    for bytes in cases {
        let (mut c, _) = Legacy::connect76(server.addr, "/echo", false);
        c.send_raw(bytes);
        assert_eq!(c.recv(), Some(In::Close), "{bytes:?}");
        assert_eq!(c.recv(), None, "{bytes:?}");
    }
    // Past max_message_size (256 KiB), with no 0xFF in sight: closed without buffering on.
    let (mut c, _) = Legacy::connect76(server.addr, "/echo", false);
    let mut sent = 0;
    c.send_raw(&[0x00]);
    let chunk = vec![b'a'; 64 * 1024];
    while sent < 1 << 20 {
        if c.stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
        if sent > 300 * 1024 {
            break;
        }
    }
    assert_eq!(c.recv(), Some(In::Close));
    let line = server.wait_log("message larger than max_message_size");
    assert!(line.contains("1009"), "{line}");
}

#[test]
fn legacy_clients_through_a_framed_backend() {
    let mut backends = PyBackends::new("legacy");
    let socket = backends.start("echo.sock", "framed");
    let config = format!(
        "[[route]]\npath = \"/app\"\nbackend = \"unix:{}\"\nframing = \"framed\"\nlegacy = [\"hixie-76\"]\n\
origins = [\"http://example.com\"]\nsubprotocols = [\"chat\"]\n",
        socket.display()
    );
    let server = Server::with_config(&config, backend_gateway_args());
    let mut s = tcp(server.addr);
    s.write_all(request76("/app", ORIGIN, "Sec-WebSocket-Protocol: chat\r\n").as_bytes()).unwrap();
    s.write_all(KEY3).unwrap();
    let mut c = Legacy { stream: s, pending: Vec::new() };
    let head = c.read_head();
    assert!(head.contains("\r\nSec-WebSocket-Protocol: chat\r\n"), "{head}");
    let mut answer = [0u8; 16];
    c.read_exact(&mut answer);
    assert_eq!(&answer, ANSWER);
    c.send("through the backend");
    assert_eq!(c.expect_text(), "through the backend");
    // The backend answers in three fragments: one legacy frame.
    c.send("split");
    assert_eq!(c.expect_text(), "abcdefghi");
    // The backend closes with 4001: the legacy client gets its closing frame.
    c.send("close-me");
    assert_eq!(c.recv(), Some(In::Close));
}

#[test]
fn a_legacy_route_needs_a_named_origin_list() {
    let cases = [
        ("legacy = [\"hixie-76\"]\n", "origins list"),
        ("legacy = [\"hixie-76\"]\norigins = [\"*\"]\n", "origins list"),
        ("legacy = [\"hixie-77\"]\norigins = [\"http://a\"]\n", "route.legacy: \"hixie-77\""),
    ];
    for (keys, needle) in cases {
        let config = format!("[[route]]\npath = \"/x\"\napp = \"echo\"\n{keys}");
        let path = std::env::temp_dir().join(format!("wsgate-legacy-bad-{}.toml", std::process::id()));
        std::fs::write(&path, &config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["-c", path.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config} was accepted");
        assert!(stderr.contains(needle) && stderr.contains("line 1"), "{config}: {stderr}");
    }
}

#[test]
fn hixie76_over_tls_names_wss_in_its_location() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wsgate-legacy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let config = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\
[[route]]\npath = \"/echo\"\napp = \"echo\"\nlegacy = [\"hixie-76\"]\norigins = [\"http://example.com\"]\n",
        cert.display(),
        key.display()
    );
    let server = Server::with_config_only(&config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(tls), name).unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp(server.addr));
    let (mut c, head) = Legacy::open76(stream, "/echo");
    assert!(head.contains("\r\nSec-WebSocket-Location: wss://example.com/echo\r\n"), "{head}");
    c.send("over tls");
    assert_eq!(c.expect_text(), "over tls");
    c.send_raw(&[0xFF, 0x00]);
    assert_eq!(c.recv(), Some(In::Close));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn legacy_clients_on_every_worker_share_a_room() {
    let config = format!("[server]\nworkers = 2\nbalance = \"handoff\"\n{CONFIG}");
    let server = Server::with_config(&config, &[]);
    // Handoff spreads them: two per worker.
    let mut clients: Vec<Legacy> = (0..4).map(|_| Legacy::connect76(server.addr, "/room/w", false).0).collect();
    let mut modern = ws_open(&server.url("/room/w"));
    modern.send_text("to every worker").unwrap();
    assert_eq!(ws_text(&mut modern), "to every worker");
    for c in &mut clients {
        assert_eq!(c.expect_text(), "to every worker");
    }
    clients[3].send("from the last one");
    assert_eq!(ws_text(&mut modern), "from the last one");
    for c in &mut clients {
        assert_eq!(c.expect_text(), "from the last one");
    }
}
