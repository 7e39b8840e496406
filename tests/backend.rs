//! Backend routes end to end: the real gateway, a Python backend (stdlib only), and wsgate's
//! client library (tungstenite where a test needs to see pongs).
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

struct Backend {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for sockets that the gateway (perhaps running as `nobody`) can reach.
struct SockDir(PathBuf);

impl SockDir {
    fn new(tag: &str) -> SockDir {
        let d = std::env::temp_dir().join(format!("wsgate-backend-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        SockDir(d)
    }

    fn backend(&self, name: &str, mode: &str) -> Backend {
        let socket = self.0.join(name);
        let log = self.0.join(format!("{name}.log"));
        let child = spawn_py_backend(&socket, mode, &log);
        Backend { child, socket, log }
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gateway arguments: as root, wsgate insists on dropping privileges.
fn gateway(routes: &[String]) -> Server {
    let mut args: Vec<&str> = vec!["-v"];
    let root = wsgate::sys::privileges::is_root();
    if root {
        args.extend(["-u", "nobody"]);
    }
    for r in routes {
        args.extend(["--route", r.as_str()]);
    }
    Server::start(&args)
}

fn gateway_with_config(config: &str) -> Server {
    let root = wsgate::sys::privileges::is_root();
    let args: &[&str] = if root { &["-u", "nobody"] } else { &[] };
    Server::with_config(config, args)
}

fn route(path: &str, socket: &Path, framing: &str) -> String {
    format!("{path}=unix:{}#{framing}", socket.display())
}

fn wait_for_file_line(path: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
        }
        assert!(start.elapsed() < WAIT, "{} never got {needle:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn framed_keeps_boundaries_types_and_large_messages() {
    let dir = SockDir::new("framed");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    let mut ws = ws_open(&server.url("/app"));
    for i in 0..200 {
        ws.send_text(&format!("message {i}")).unwrap();
    }
    for i in 0..200 {
        assert_eq!(ws_next(&mut ws), WsMessage::Text(format!("message {i}")));
    }
    ws.send_binary(&[0u8, 255, 1]).unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Binary(vec![0u8, 255, 1]));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 241) as u8).collect();
    ws.send_binary(&big).unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Binary(big));
    // Fragments from the backend arrive as one message.
    ws.send_text("split").unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Text("abcdefghi".into()));
}

#[test]
fn framed_hello_carries_the_request() {
    let dir = SockDir::new("hello");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    let options = wsgate::client::Options { headers: vec![("X-Trace".into(), "abc123".into())], ..Default::default() };
    let mut ws = ws_open_with(&format!("{}?room=7", server.url("/app")), &options);
    ws.send_text("hello?").unwrap();
    let hello = ws_text(&mut ws);
    assert!(hello.starts_with("wsgate-hello 3\nid: "), "{hello}");
    assert!(hello.contains("\npeer: 127.0.0.1:"), "{hello}");
    assert!(hello.contains("\npath: /app\n") && hello.contains("\nquery: room=7\n"), "{hello}");
    // Header names as the client sent them.
    assert!(
        hello.contains("\nheader: X-Trace: abc123\n") && hello.contains(&format!("\nheader: Host: {}\n", server.addr)),
        "{hello}"
    );

    // The HELLO stays UTF-8 whatever the client sends, so a backend that decodes it cannot be
    // broken by a header: opaque bytes (obs-text) that are not UTF-8 become U+FFFD, UTF-8
    // passes as it is.
    let mut request = upgrade_request("/app", "X-Latin1: caf@\r\nX-Utf8: café\r\n").into_bytes();
    let at = request.iter().position(|&b| b == b'@').unwrap();
    request[at] = 0xE9;
    let mut raw = Raw::connect_with(server.addr, &request);
    raw.send(0x81, b"hello?");
    let reply = raw.recv().expect("the HELLO echoed");
    assert_eq!(reply.opcode, 1);
    let hello = String::from_utf8(reply.payload).unwrap();
    assert!(hello.contains("\nheader: X-Latin1: caf\u{fffd}\n"), "{hello}");
    assert!(hello.contains("\nheader: X-Utf8: café\n"), "{hello}");
}

#[test]
fn framed_close_codes_travel_both_ways() {
    let dir = SockDir::new("close");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    // Client → backend.
    let ws = ws_open(&server.url("/app"));
    assert_eq!(ws.close(4000, "client bye").unwrap(), Some(4000));
    wait_for_file_line(&backend.log, "CLOSE 4000 client bye");
    // Backend → client.
    let mut ws = ws_open(&server.url("/app"));
    ws.send_text("close-me").unwrap();
    assert_eq!(ws_closed(&mut ws), (Some(4001), "asked".into()));
}

/// A client that breaks the protocol on a framed route: the backend gets CLOSE with the code,
/// the replies to the client's earlier messages still reach it, then the close frame (the
/// order Autobahn's strict cases 3.2, 4.1.3 and 5.15 ask for, through a backend).
#[test]
fn a_client_protocol_error_lets_earlier_replies_out_first() {
    let dir = SockDir::new("fail");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    let mut raw = Raw::connect(server.addr, "/app");
    // Valid text, then a frame with RSV2 set, then a ping, in one write.
    let mut bytes = masked_frame(0x81, b"first");
    bytes.extend(masked_frame(0xA1, b"bad"));
    bytes.extend(masked_frame(0x89, b"ping"));
    raw.send_raw(&bytes);
    let echo = raw.recv().expect("the echo of the valid message");
    assert_eq!((echo.opcode, &echo.payload[..]), (1, &b"first"[..]));
    let close = raw.recv().expect("a close frame");
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    raw.expect_eof();
    wait_for_file_line(&backend.log, "CLOSE 1002");
}

/// The same with a backend that never answers: the client still gets its close frame, after
/// close_timeout.
#[test]
fn a_client_protocol_error_does_not_wait_forever_for_the_backend() {
    let dir = SockDir::new("fail-stall");
    let backend = dir.backend("app", "stall");
    let server = gateway_with_config(&format!(
        "[limits]\nclose_timeout = \"300ms\"\n[[route]]\npath = \"/app\"\nbackend = \"unix:{}\"\nframing = \"framed\"\n",
        backend.socket.display()
    ));
    let mut raw = Raw::connect(server.addr, "/app");
    raw.send(0xA1, b"bad");
    assert_eq!(raw.expect_close(), Some(1002));
    raw.expect_eof();
}

#[test]
fn backend_crash_closes_the_client_with_1011() {
    let dir = SockDir::new("crash");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    let mut ws = ws_open(&server.url("/app"));
    ws.send_text("die").unwrap();
    assert_eq!(ws_closed(&mut ws).0, Some(1011));
    server.wait_log("backend closed without a CLOSE record");
}

/// A backend killed (SIGKILL) while many clients talk: every one of its clients is closed with
/// 1011, another route's client does not notice, a new client gets 503 while the socket is
/// dead, and the route works again once a backend listens on the socket again.
#[test]
fn killing_a_backend_under_load_closes_its_clients_only() {
    let dir = SockDir::new("kill");
    let mut doomed = dir.backend("a", "framed");
    let other = dir.backend("b", "framed");
    let server = gateway(&[route("/a", &doomed.socket, "framed"), route("/b", &other.socket, "framed")]);
    let mut clients: Vec<_> = (0..20).map(|_| ws_open(&server.url("/a"))).collect();
    let mut bystander = ws_open(&server.url("/b"));
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send_text(&format!("before {i}")).unwrap();
        assert_eq!(ws_next(ws), WsMessage::Text(format!("before {i}")));
        // Leave a message in flight on half of them when the backend dies.
        if i % 2 == 0 {
            ws.send_binary(&[i as u8; 100_000]).unwrap();
        }
    }
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    for ws in &mut clients {
        // Echoes of the message in flight may come first.
        loop {
            match ws.receive(Some(WAIT)) {
                Err(wsgate::client::ClientError::Closed { code, .. }) => {
                    assert_eq!(code, Some(1011));
                    break;
                }
                Ok(WsMessage::Binary(_)) => {}
                other => panic!("expected close 1011, got {other:?}"),
            }
        }
    }
    bystander.send_text("still here").unwrap();
    assert_eq!(ws_next(&mut bystander), WsMessage::Text("still here".into()));
    let response = http_exchange(server.addr, upgrade_request("/a", "").as_bytes());
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    let _revived = dir.backend("a", "framed");
    let mut ws = ws_open(&server.url("/a"));
    ws.send_text("again").unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Text("again".into()));
}

#[test]
fn raw_and_lines_round_trips() {
    let dir = SockDir::new("stream");
    let raw = dir.backend("raw", "raw");
    let lines = dir.backend("lines", "raw"); // an echo of bytes is a correct lines backend too
    let server = gateway(&[route("/raw", &raw.socket, "raw"), route("/lines", &lines.socket, "lines")]);

    let mut ws = ws_open(&server.url("/lines"));
    for i in 0..100 {
        ws.send_text(&format!("line {i}")).unwrap();
    }
    for i in 0..100 {
        assert_eq!(ws_next(&mut ws), WsMessage::Text(format!("line {i}")));
    }

    // raw: boundaries are not kept, bytes are. Collect until everything came back.
    let mut ws = ws_open(&server.url("/raw"));
    let mut sent = Vec::new();
    for i in 0..100 {
        let m = format!("<{i}>");
        sent.extend_from_slice(m.as_bytes());
        ws.send_text(&m).unwrap();
    }
    let big = "é".repeat(300_000); // 600 KB of two-byte characters: reads split them
    sent.extend_from_slice(big.as_bytes());
    ws.send_text(&big).unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.extend_from_slice(ws_text(&mut ws).as_bytes());
    }
    assert_eq!(got, sent);
}

#[test]
fn raw_backend_eof_closes_1000_and_client_close_is_eof() {
    let dir = SockDir::new("eof");
    let backend = dir.backend("app", "raw");
    let server = gateway(&[route("/app", &backend.socket, "raw")]);
    let mut ws = ws_open(&server.url("/app"));
    ws.send_text("x").unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Text("x".into()));
    drop(backend); // the backend process dies: EOF on its sockets
    let (code, reason) = ws_closed(&mut ws);
    assert!(matches!(code, Some(1000 | 1011)), "{code:?} {reason}");
}

#[test]
fn absent_backend_is_503() {
    let dir = SockDir::new("absent");
    let server = gateway(&[route("/app", &dir.0.join("nothing-here"), "framed")]);
    let response = http_exchange(server.addr, upgrade_request("/app", "").as_bytes());
    assert!(response.starts_with("HTTP/1.1 503 ") && response.contains("backend unavailable"), "{response}");
    server.wait_log("nothing-here");
}

/// A backend that never accepts: once its backlog is full, clients get 503 at once instead of
/// waiting on a connect that cannot finish.
#[test]
fn a_backend_that_never_accepts_gives_503_not_a_hang() {
    let dir = SockDir::new("noaccept");
    let backend = dir.backend("app", "noaccept");
    let server = gateway(&[route("/app", &backend.socket, "raw")]);
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut stream = tcp(server.addr);
        stream.write_all(upgrade_request("/app", "").as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        match &head {
            b"HTTP/1.1 101" => kept.push(stream),
            b"HTTP/1.1 503" => refused += 1,
            other => panic!("{:?}", String::from_utf8_lossy(other)),
        }
    }
    assert!(refused > 0, "the backlog never filled ({} upgraded)", kept.len());
    // The log names the socket.
    server.wait_log(&backend.socket.display().to_string());
}

#[test]
fn a_backend_that_never_reads_cannot_grow_the_gateway() {
    let dir = SockDir::new("stall");
    let backend = dir.backend("app", "stall");
    let server = gateway_with_config(&format!(
        "[limits]\nbackpressure_high = \"256KiB\"\n[[route]]\npath = \"/app\"\nbackend = \"unix:{}\"\nframing = \"framed\"\n\
[[route]]\npath = \"/echo\"\napp = \"echo\"\n",
        backend.socket.display()
    ));
    let mut raw = Raw::connect(server.addr, "/app");
    let rss_before = server.rss_kib();
    let frame = masked_frame(0x82, &vec![1u8; 64 * 1024]);
    let sent = write_until_blocked(&mut raw.stream, &frame, 256 << 20);
    assert!(sent < 256 << 20, "the gateway kept reading for a backend that never reads");
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "gateway RSS grew {grown} KiB");
    let mut other = ws_open(&server.url("/echo"));
    other.send_text("unaffected").unwrap();
    assert_eq!(ws_next(&mut other), WsMessage::Text("unaffected".into()));
}

#[test]
fn directory_routing_allow_deny_subprotocol_and_traversal() {
    let dir = SockDir::new("dir");
    let chat = dir.backend("chat", "framed");
    let _secret = dir.backend("secret", "framed");
    let server = gateway_with_config(&format!(
        "[[route]]\npath = \"/apps\"\nsocket_dir = \"{}\"\nframing = \"framed\"\ndeny = [\"sec*\"]\nsubprotocols = [\"chat\"]\n",
        dir.0.display()
    ));
    let mut ws = ws_open(&server.url("/apps/chat"));
    ws.send_text("via path").unwrap();
    assert_eq!(ws_next(&mut ws), WsMessage::Text("via path".into()));
    drop(ws);

    // No name in the path: the subprotocol names the socket, and is the one accepted.
    let r = http_exchange_head(server.addr, &upgrade_request("/apps", "Sec-WebSocket-Protocol: nope, chat\r\n"));
    assert!(r.starts_with("HTTP/1.1 101 ") && r.contains("Sec-WebSocket-Protocol: chat\r\n"), "{r}");

    let cases = [
        ("/apps/secret", "403 "),
        ("/apps/missing", "404 "),
        ("/apps/..", "404 "),
        ("/apps/%2e%2e", "404 "),
        ("/apps/%2e%2e%2fetc", "404 "),
        ("/apps/chat%2f..", "404 "),
        ("/apps/chat/extra", "404 "),
        ("/apps/.chat", "404 "),
        ("/apps/chat.log", "404 "), // a file, not a socket
        ("/apps", "404 "),
        ("/apps/chat%00", "404 "),
        ("/apps//chat", "404 "),
        ("/apps/~chat", "404 "),
        ("/apps/chat%20", "404 "),
    ];
    let long = format!("/apps/{}", "a".repeat(4000)); // past NAME_MAX and sun_path
    for (path, want) in cases.iter().copied().chain([(long.as_str(), "404 ")]) {
        let r = http_exchange(server.addr, upgrade_request(path, "").as_bytes());
        assert!(r.starts_with(&format!("HTTP/1.1 {want}")), "{path} -> {r}");
    }
    // A symlink to a socket is refused too.
    std::os::unix::fs::symlink(&chat.socket, dir.0.join("alias")).unwrap();
    let r = http_exchange(server.addr, upgrade_request("/apps/alias", "").as_bytes());
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
}

#[test]
fn direct_mode_hands_the_socket_to_the_backend() {
    let dir = SockDir::new("direct");
    let backend = dir.backend("app", "direct");
    let server = gateway(&[route("/app", &backend.socket, "direct")]);
    let mut ws = ws_open(&server.url("/app"));
    assert_eq!(ws_text(&mut ws), "from the backend, directly");
    let line = wait_for_file_line(&backend.log, "DIRECT 1 wsgate-hello 3");
    assert!(line.contains("|path: /app|"), "{line}");
    server.wait_log("handed off to the backend");
}

#[test]
fn direct_mode_is_refused_on_tls() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["-l", "127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--route", "/d=unix:/tmp/x#direct"])
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot work on TLS"));
}

#[test]
fn root_without_user_is_refused_for_backend_routes() {
    if !wsgate::sys::privileges::is_root() {
        return; // only meaningful as root
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["-l", "127.0.0.1:0", "--route", "/b=unix:/tmp/none.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"));
}

/// Bulk data from a raw binary backend takes the splice path (backend → pipe → client); a
/// ping answered meanwhile must come out between frames, never inside one.
#[test]
fn raw_binary_bulk_through_splice_stays_in_order() {
    let dir = SockDir::new("splice");
    let backend = dir.backend("app", "raw");
    let server = gateway(&[format!("/app=unix:{}#raw,binary", backend.socket.display())]);
    // tungstenite: this test needs to see the pongs (the library takes them inside).
    let mut ws = client(&server.url("/app"));
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for chunk in sent.chunks(500_000) {
        ws.send(Message::binary(chunk.to_vec())).unwrap();
        ws.send(Message::Ping(b"mid-stream".to_vec())).unwrap();
    }
    let mut got = Vec::new();
    let mut pongs = 0;
    while got.len() < sent.len() {
        match ws.read().unwrap() {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Pong(p) => {
                assert_eq!(p, b"mid-stream".to_vec());
                pongs += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, sent);
    assert!(pongs > 0);
    server.wait_log("splicing backend data through a pipe");
}

/// The other way round: a backend that writes without end to a client that never reads must
/// not make the gateway buffer without bound either.
#[test]
fn a_client_that_never_reads_cannot_grow_the_gateway() {
    let dir = SockDir::new("flood");
    let backend = dir.backend("app", "flood");
    let server = gateway_with_config(&format!(
        "[limits]\nbackpressure_high = \"256KiB\"\n[[route]]\npath = \"/app\"\nbackend = \"unix:{}#raw,binary\"\n\
[[route]]\npath = \"/echo\"\napp = \"echo\"\n",
        backend.socket.display()
    ));
    let rss_before = server.rss_kib();
    let _idle = Raw::connect(server.addr, "/app");
    // Give the backend ample time to push what it can; the gateway must stop reading it.
    std::thread::sleep(Duration::from_millis(1500));
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "gateway RSS grew {grown} KiB for one client that never reads");
    let mut other = ws_open(&server.url("/echo"));
    other.send_text("unaffected").unwrap();
    assert_eq!(ws_next(&mut other), WsMessage::Text("unaffected".into()));
}

/// A framed backend drives pub/sub for its client: SUBSCRIBE, PUBLISH (with and without its
/// own client), UNSUBSCRIBE, and SEND to a connection named by the id from another HELLO.
#[test]
fn framed_backend_subscribes_publishes_and_sends_by_id() {
    let dir = SockDir::new("pubsub");
    let backend = dir.backend("app", "framed");
    let server = gateway(&[route("/app", &backend.socket, "framed")]);
    let mut a = ws_open(&server.url("/app"));
    let mut b = ws_open(&server.url("/app"));
    for ws in [&mut a, &mut b] {
        ws.send_text("sub:news").unwrap();
    }
    // A round trip through each backend connection: its SUBSCRIBE was applied before.
    a.send_text("id?").unwrap();
    let a_id = ws_text(&mut a);
    b.send_text("id?").unwrap();
    let b_id = ws_text(&mut b);
    assert_ne!(a_id, b_id);

    a.send_text("pub:news:to everyone").unwrap();
    assert_eq!(ws_next(&mut a), WsMessage::Text("to everyone".into()));
    assert_eq!(ws_next(&mut b), WsMessage::Text("to everyone".into()));
    a.send_text("pubx:news:not to a").unwrap();
    assert_eq!(ws_next(&mut b), WsMessage::Text("not to a".into()));

    b.send_text(&format!("send:{}:just for a", a_id)).unwrap();
    assert_eq!(ws_next(&mut a), WsMessage::Text("just for a".into()));

    // An exclude list (NaviServer's `ws::multicast -exclude`): a third member, and a
    // publication that skips a and c by id, reaches b alone.
    let mut c = ws_open(&server.url("/app"));
    c.send_text("sub:news").unwrap();
    c.send_text("id?").unwrap();
    let c_id = ws_text(&mut c);
    b.send_text(&format!("publ:news:{},{}:not to a or c", a_id, c_id.as_str())).unwrap();
    assert_eq!(ws_next(&mut b), WsMessage::Text("not to a or c".into()));
    c.send_text("pub:news:to all three").unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws_next(ws), WsMessage::Text("to all three".into()), "a and c skipped the excluded one");
    }

    b.send_text("unsub:news").unwrap();
    b.send_text("id?").unwrap();
    assert_eq!(ws_next(&mut b), WsMessage::Text(b_id.clone()));
    a.send_text("pub:news:only a now").unwrap();
    assert_eq!(ws_next(&mut a), WsMessage::Text("only a now".into()));
    b.send_text("id?").unwrap();
    assert_eq!(ws_next(&mut b), WsMessage::Text(b_id.clone()), "b unsubscribed and got nothing more");
    // An id that names no open connection is ignored.
    a.send_text("send:12345678901:nobody").unwrap();
    a.send_text("id?").unwrap();
    assert_eq!(ws_next(&mut a), WsMessage::Text(a_id.clone()));
    a.close(1000, "").unwrap();
    server.wait_log(&format!("id={} /app status=101", a_id));
}

/// A framed backend asks about topics with history (REQUEST, answered with ANSWER records):
/// its client subscribes from a position and gets what it missed, then live; history reads;
/// refusals name their topic. The backend here passes each answer on to its client.
#[test]
fn framed_backend_recovers_and_reads_history_with_requests() {
    let dir = SockDir::new("history");
    let backend = dir.backend("app", "framed");
    let server = gateway_with_config(&format!(
        "[server]\nworkers = 2\nbalance = \"handoff\"\n\
[[history]]\ntopics = [\"news*\"]\nsize = 100\nttl = 600\n\
[[route]]\npath = \"/app\"\nbackend = \"unix:{}\"\nframing = \"framed\"\n",
        backend.socket.display()
    ));
    let answer = |ws: &mut Ws| -> serde_json::Value {
        let text = ws_text(ws);
        let json = text.strip_prefix("answer:").unwrap_or_else(|| panic!("not an answer: {text}"));
        serde_json::from_str(json).unwrap()
    };
    let mut a = ws_open(&server.url("/app"));
    a.send_text(r#"req:{"op":"subscribe","topic":"news"}"#).unwrap();
    let v = answer(&mut a);
    assert_eq!(
        (v["op"].as_str(), v["topic"].as_str(), v["offset"].as_u64()),
        (Some("subscribed"), Some("news"), Some(0)),
        "{v}"
    );
    let epoch = v["epoch"].as_str().unwrap().to_string();
    for n in 1..=5 {
        a.send_text(&format!("pub:news:m{n}")).unwrap();
        assert_eq!(ws_next(&mut a), WsMessage::Text(format!("m{n}")));
    }
    // Another client, on the other worker, recovers from offset 2: m3..m5, then the answer.
    let mut b = ws_open(&server.url("/app"));
    b.send_text(&format!(r#"req:{{"op":"subscribe","topic":"news","recover":{{"offset":2,"epoch":"{epoch}"}}}}"#))
        .unwrap();
    for n in 3..=5 {
        assert_eq!(ws_next(&mut b), WsMessage::Text(format!("m{n}")));
    }
    let v = answer(&mut b);
    assert_eq!((v["recovered"].as_bool(), v["offset"].as_u64()), (Some(true), Some(5)), "{v}");
    a.send_text("pub:news:live").unwrap();
    assert_eq!(ws_next(&mut b), WsMessage::Text("live".into()));
    b.send_text(r#"req:{"op":"history","topic":"news","limit":2,"reverse":true}"#).unwrap();
    let v = answer(&mut b);
    let data: Vec<&str> = v["publications"].as_array().unwrap().iter().map(|p| p["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["live", "m5"], "{v}");
    // Refusals name their topic; a malformed request is refused, not fatal.
    for (req, code) in [
        (r#"{"op":"history","topic":"plain"}"#, 404),
        // (b is subscribed to news already: another topic with history.)
        (r#"{"op":"subscribe","topic":"news.b","recover":{"offset":9,"epoch":"old"}}"#, 0),
        (r#"{"op":"publish","topic":"news"}"#, 400),
        (r#"not json"#, 400),
    ] {
        b.send_text(&format!("req:{req}")).unwrap();
        let v = answer(&mut b);
        if code == 0 {
            assert_eq!(v["reason"], "epoch changed: the topic's history was lost", "{v}");
        } else {
            assert_eq!(v["code"], code, "{req}: {v}");
        }
        if req.contains("topic") {
            assert!(v["topic"].is_string(), "{v}");
        }
    }
    // A client without history topics gets nothing of this.
    b.send_text("id?").unwrap();
    assert!(!ws_text(&mut b).starts_with("answer:"));
}

/// The backend families of `/metrics`: connects that worked and failed, and a backend that
/// died while serving a client.
#[test]
fn backend_metrics_count_connects_failures_and_deaths() {
    let dir = SockDir::new("metrics");
    let backend = dir.backend("app", "framed");
    let server = gateway_with_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
[[route]]\npath = \"/app\"\nbackend = \"unix:{}\"\nframing = \"framed\"\n\
[[route]]\npath = \"/gone\"\nbackend = \"unix:{}\"\n",
        backend.socket.display(),
        dir.0.join("nobody-listens").display()
    ));
    let head = http_exchange_head(server.addr, &upgrade_request("/gone", ""));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let mut ws = ws_open(&server.url("/app"));
    ws.send_text("die").unwrap();
    assert_eq!(ws_closed(&mut ws).0, Some(1011));
    wait_metrics(
        &server,
        &[
            "wsgate_backend_connects_total{result=\"ok\"} 1",
            "wsgate_backend_connects_total{result=\"failed\"} 1",
            "wsgate_backend_deaths_total 1",
        ],
    );
}
