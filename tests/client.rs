//! `wsgate::client` against the real binary (ws://, wss://) and against hand-written servers
//! that answer the upgrade wrongly or break the protocol after it.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use wsgate::client::handshake::HandshakeError;
use wsgate::client::{Client, ClientError, Message, Options};
use wsgate::ws::extensions::DeflateOffer;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[test]
fn echoes_text_binary_and_large_messages_then_closes_cleanly() {
    let server = Server::start(&[]);
    let mut ws = Client::open(&server.url("/echo"), &Options::default()).unwrap();
    ws.send_text("héllo").unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text("héllo".into()));
    ws.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Binary(vec![0, 1, 2, 255]));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    ws.send_binary(&big).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Binary(big));
    ws.ping(b"p").unwrap();
    ws.send_text("after the ping").unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text("after the ping".into()));
    // Nothing comes: a timeout, and the connection is still good.
    assert!(matches!(ws.receive(Some(Duration::from_millis(100))), Err(ClientError::Timeout)));
    ws.send_text("still here").unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text("still here".into()));
    assert_eq!(ws.close(1000, "done").unwrap(), Some(1000));
}

#[test]
fn handshake_failures_say_what_was_wrong() {
    let server = Server::start(&[]);
    match Client::open(&server.url("/no-such-route"), &Options::default()) {
        Err(ClientError::Handshake(HandshakeError::Status { code: 404, .. })) => {}
        other => panic!("{:?}", other.err()),
    }
    // A closed port: refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(matches!(
        Client::open(&format!("ws://127.0.0.1:{port}/"), &Options::default()),
        Err(ClientError::Connect(_))
    ));
    assert!(matches!(Client::open("http://127.0.0.1/", &Options::default()), Err(ClientError::Url(_))));
    let smuggling = Options { headers: vec![("X".into(), "a\r\nHost: evil".into())], ..Options::default() };
    assert!(matches!(Client::open(&server.url("/echo"), &smuggling), Err(ClientError::Url(_))));

    // Servers that answer wrongly, one connection each.
    for (answer, expected) in [
        ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", HandshakeError::WrongAccept),
        ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n", HandshakeError::UnofferedProtocol("chat".into())),
        ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", HandshakeError::UnofferedExtension("permessage-deflate".into())),
        ("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", HandshakeError::MissingUpgrade),
        ("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", HandshakeError::Status { code: 503, reason: "Busy".into() }),
        ("HTTP/1.1 101 OK\r\nUpgr", HandshakeError::Eof),
    ] {
        let url = fake_server(answer.to_string(), Vec::new());
        match Client::open(&url, &Options::default()) {
            Err(ClientError::Handshake(e)) => assert_eq!(e, expected),
            other => panic!("{answer}: {:?}", other.err()),
        }
    }
}

#[test]
fn a_server_that_breaks_the_protocol_is_failed_with_its_close_code() {
    let ok = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";
    // A masked frame from a server (§5.1): 1002.
    let url = fake_server(ok.into(), vec![0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]);
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Protocol { code: 1002, .. })));
    // Invalid UTF-8 in a text frame: 1007.
    let url = fake_server(ok.into(), vec![0x81, 0x02, 0xC3, 0x28]);
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Protocol { code: 1007, .. })));
    // A message over the client's limit: 1009.
    let url = fake_server(ok.into(), [&[0x82u8, 126, 0x04, 0x00][..], &[0u8; 1024]].concat());
    let options = Options { max_message: 1000, ..Options::default() };
    let mut ws = Client::open(&url, &options).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Protocol { code: 1009, .. })));
    // A frame that came with the 101, then the server's close: the message, then Closed.
    let url = fake_server(ok.into(), vec![0x81, 0x02, b'h', b'i', 0x88, 0x02, 0x03, 0xE9]);
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text("hi".into()));
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Closed { code: Some(1001), .. })));
    // The connection just ends: an I/O error (1006), not a hang.
    let url = fake_server(ok.into(), Vec::new());
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Io(_))));
    // A frame claiming 2^63 bytes: refused from its header, nothing allocated.
    let url = fake_server(ok.into(), vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Protocol { code: 1002 | 1009, .. })));
    // A compressed frame (RSV1) when no compression was agreed: 1002.
    let url = fake_server(ok.into(), vec![0xC1, 0x03, 0xF2, 0x48, 0x05]);
    let mut ws = Client::open(&url, &Options::default()).unwrap();
    assert!(matches!(ws.receive(WAIT), Err(ClientError::Protocol { code: 1002, .. })));
    // A server that never answers our close: close gives up after close_timeout.
    let url = fake_server(ok.into(), Vec::new());
    let options = Options { close_timeout: Duration::from_millis(100), ..Options::default() };
    let ws = Client::open(&url, &options).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(ws.close(1000, ""), Err(ClientError::Timeout | ClientError::Io(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn talks_to_python_websockets_server() {
    require(&PYTHON3_WEBSOCKETS);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = format!(
        r#"
import asyncio, websockets
async def echo(ws, *path):
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", {port}, subprotocols=["v1"]):
        print("ready", flush=True)
        await asyncio.sleep(30)
asyncio.run(main())
"#
    );
    let mut child = python_server(&script);
    let options = Options { protocols: vec!["v2".into(), "v1".into()], ..Options::default() };
    let mut ws = Client::open(&format!("ws://127.0.0.1:{port}/"), &options).unwrap();
    assert_eq!(ws.protocol(), Some("v1"));
    let big = "x".repeat(500_000);
    for text in ["hi", "héllo", big.as_str()] {
        ws.send_text(text).unwrap();
        assert_eq!(ws.receive(WAIT).unwrap(), Message::Text(text.into()));
    }
    ws.send_binary(&[1, 2, 3]).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Binary(vec![1, 2, 3]));
    assert_eq!(ws.close(1000, "bye").unwrap(), Some(1000));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn wss_with_a_ca_file_and_sni() {
    let (server, cert, dir) = tls_server("client");
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let options = Options { ca_file: Some(cert.clone()), ..Options::default() };
    let mut ws = Client::open(&url, &options).unwrap();
    ws.send_text("over TLS").unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text("over TLS".into()));
    assert_eq!(ws.close(1000, "").unwrap(), Some(1000));
    // Not trusted without the CA: a TLS error, not a panic or a hang.
    match Client::open(&url, &Options::default()) {
        Err(ClientError::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("{:?}", other.err()),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Against Python's `websockets` over TLS with `ssl` asking for a client certificate: the
/// server's self-signed certificate taken with `insecure`, ours presented from PEM files, and
/// permessage-deflate agreed with an implementation that is not ours.
#[test]
fn wss_insecure_with_a_client_certificate_and_compression_against_python() {
    require(&PYTHON3_WEBSOCKETS);
    let dir = std::env::temp_dir().join(format!("wsgate-client-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (server_cert, server_key) = self_signed(&dir, "server", "localhost");
    let (client_cert, client_key) = self_signed(&dir, "client", "client.example");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = format!(
        r#"
import asyncio, ssl, websockets
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{}", "{}")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations("{}")
async def echo(ws, *path):
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", {port}, ssl=ctx):
        print("ready", flush=True)
        await asyncio.sleep(30)
asyncio.run(main())
"#,
        server_cert.display(),
        server_key.display(),
        client_cert.display()
    );
    let mut child = python_server(&script);
    let url = format!("wss://localhost:{port}/");
    let options = Options {
        insecure: true,
        client_cert: Some((client_cert.clone(), client_key.clone())),
        compress: Some(DeflateOffer::default()),
        ..Options::default()
    };
    let mut ws = Client::open(&url, &options).unwrap();
    assert!(ws.compression().is_some(), "websockets accepts permessage-deflate by default");
    let text: String = (0..3000).map(|n| format!("line {n} of a repetitive text\n")).collect();
    for _ in 0..3 {
        ws.send_text(&text).unwrap();
        assert_eq!(ws.receive(WAIT).unwrap(), Message::Text(text.clone()));
    }
    assert_eq!(ws.close(1000, "").unwrap(), Some(1000));
    // Without our certificate the server refuses the TLS session: an error, not a hang.
    let without = Options { insecure: true, ..Options::default() };
    let refused = Client::open(&url, &without).and_then(|mut ws| ws.receive(WAIT).map(|_| ()));
    assert!(
        matches!(refused, Err(ClientError::Tls(_) | ClientError::Io(_) | ClientError::Handshake(HandshakeError::Eof))),
        "{refused:?}"
    );
    // Nor does the server's certificate pass without --insecure.
    let strict = Options { client_cert: options.client_cert.clone(), ..Options::default() };
    assert!(matches!(Client::open(&url, &strict), Err(ClientError::Tls(_))));
    // A key file that is not a key: a TLS setup error naming the file.
    let bad =
        Options { client_cert: Some((client_cert.clone(), client_cert.clone())), insecure: true, ..Options::default() };
    match Client::open(&url, &bad) {
        Err(ClientError::Tls(why)) => assert!(why.contains("client.pem"), "{why}"),
        other => panic!("{:?}", other.err()),
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ws_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("wsgate-client-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let request = read_head(&mut s);
        assert!(request.starts_with("GET /feed?x=1 HTTP/1.1\r\nHost: localhost\r\n"), "{request}");
        let answer = ok_answer(&request);
        s.write_all(answer.as_bytes()).unwrap();
        s.write_all(&[0x82, 0x03, 7, 8, 9]).unwrap();
        // The client's close, masked: answered.
        let mut frame = [0u8; 2 + 4 + 2];
        s.read_exact(&mut frame).unwrap();
        assert_eq!(frame[0..2], [0x88, 0x82]);
        s.write_all(&[0x88, 0x02, 0x03, 0xE8]).unwrap();
    });
    let mut ws = Client::open(&format!("ws+unix:{}:/feed?x=1", path.display()), &Options::default()).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Binary(vec![7, 8, 9]));
    assert_eq!(ws.close(1000, "").unwrap(), Some(1000));
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn compresses_both_ways_with_wsgate_routes() {
    let routes = "[[route]]\npath = \"/shared\"\napp = \"echo\"\ncompression = \"shared\"\n\
        [[route]]\npath = \"/dedicated\"\napp = \"echo\"\ncompression = \"dedicated\"\n\
        [[route]]\npath = \"/plain\"\napp = \"echo\"\n";
    let server = Server::with_config(routes, &[]);
    let json: String = (0..2000).map(|n| format!("{{\"n\":{},\"name\":\"item-{}\"}},", n, n % 17)).collect();
    let offers = [
        DeflateOffer::default(),
        DeflateOffer { server_max_window_bits: 10, client_max_window_bits: 11, ..DeflateOffer::default() },
        DeflateOffer { server_no_context_takeover: true, client_no_context_takeover: true, ..DeflateOffer::default() },
    ];
    for path in ["/shared", "/dedicated"] {
        for offer in offers {
            let options = Options { compress: Some(offer), ..Options::default() };
            let mut ws = Client::open(&server.url(path), &options).unwrap();
            let agreed = *ws.compression().expect("permessage-deflate agreed");
            assert!(agreed.server_max_window_bits <= offer.server_max_window_bits, "{path} {offer:?}: {agreed:?}");
            if offer.server_no_context_takeover {
                assert!(agreed.server_no_context_takeover);
            }
            // Repeated messages (context kept between them where agreed), small and large.
            for _ in 0..3 {
                for text in ["hi", "x".repeat(100).as_str(), json.as_str()] {
                    ws.send_text(text).unwrap();
                    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text(text.into()), "{path} {offer:?}");
                }
            }
            let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
            ws.send_binary(&bytes).unwrap();
            assert_eq!(ws.receive(WAIT).unwrap(), Message::Binary(bytes));
            assert_eq!(ws.close(1000, "").unwrap(), Some(1000));
        }
    }
    // The terminal client with --compress (and its window and context-takeover options).
    let lines: String = (0..200).map(|n| format!("{json:.200}{n}\n")).collect();
    for extra in [&[][..], &["--compress-window", "9", "--no-context-takeover"][..]] {
        let url = server.url("/dedicated");
        let args: Vec<&str> = ["--compress"].iter().chain(extra).copied().chain([url.as_str()]).collect();
        let (status, out, err) = terminal(&args, lines.as_bytes());
        assert_eq!((status, out.as_str()), (0, lines.as_str()), "{args:?}: {err}");
    }
    // A route without compression declines the offer; the client goes on uncompressed.
    let options = Options { compress: Some(DeflateOffer::default()), ..Options::default() };
    let mut ws = Client::open(&server.url("/plain"), &options).unwrap();
    assert!(ws.compression().is_none());
    ws.send_text(&json).unwrap();
    assert_eq!(ws.receive(WAIT).unwrap(), Message::Text(json.clone()));
}

#[test]
fn sends_compressed_frames_and_refuses_a_compressed_bomb() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    let message = "abcdefgh".repeat(1000);
    let expected = message.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let request = read_head(&mut s);
        assert!(
            request.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
            "{request}"
        );
        let answer = ok_answer(&request).replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits=9\r\n\r\n",
        );
        s.write_all(answer.as_bytes()).unwrap();
        // The client's message: one frame, RSV1 set, masked, inflating to what it sent.
        let mut head = [0u8; 4];
        s.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 0xC1, "FIN + RSV1 + text");
        // Short frames carry two bytes of the key in `head`, longer ones their length.
        let long = head[1] & 0x7F == 126;
        let len = if long { u16::from_be_bytes([head[2], head[3]]) as usize } else { (head[1] & 0x7F) as usize };
        let mut rest = vec![0u8; if long { 4 + len } else { 2 + len }];
        s.read_exact(&mut rest).unwrap();
        let (key, mut payload) = if long {
            ([rest[0], rest[1], rest[2], rest[3]], rest[4..].to_vec())
        } else {
            ([head[2], head[3], rest[0], rest[1]], rest[2..].to_vec())
        };
        wsgate::ws::mask::unmask(&mut payload, key, 0);
        assert!(payload.len() < expected.len() / 10, "compressed to {} bytes", payload.len());
        let mut out = Vec::new();
        wsgate::ws::deflate::Inflater::new().inflate(&payload, true, usize::MAX, &mut out).unwrap();
        assert_eq!(out, expected.as_bytes());
        // Then a bomb: 8 MiB of zeros, about 8 KiB compressed.
        let mut bomb = Vec::new();
        wsgate::ws::deflate::Deflater::new(15, 8, 1, false).compress(&vec![0u8; 8 << 20], &mut bomb);
        let mut frame = vec![0xC2, 127];
        frame.extend_from_slice(&(bomb.len() as u64).to_be_bytes());
        frame.extend_from_slice(&bomb);
        let _ = s.write_all(&frame);
        // The client's close (1009) arrives before it drops the connection.
        let mut close = [0u8; 8];
        let _ = s.read_exact(&mut close);
        assert_eq!(close[0], 0x88);
        let mut code = [close[6], close[7]];
        wsgate::ws::mask::unmask(&mut code, [close[2], close[3], close[4], close[5]], 0);
        u16::from_be_bytes(code)
    });
    let options = Options { compress: Some(DeflateOffer::default()), max_message: 64 << 10, ..Options::default() };
    let mut ws = Client::open(&url, &options).unwrap();
    assert_eq!(ws.compression().unwrap().client_max_window_bits, Some(9));
    ws.send_text(&message).unwrap();
    match ws.receive(WAIT) {
        Err(ClientError::Protocol { code: 1009, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.join().unwrap(), 1009);
}

/// Runs a Python server `script` (Debian's python3 with websockets) until it prints "ready".
fn python_server(script: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (Debian's)");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// A wsgate serving wss:// with a fresh self-signed certificate for "localhost": the server,
/// the certificate's PEM file (the CA to trust), and the directory to remove.
fn tls_server(tag: &str) -> (Server, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("wsgate-{tag}-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir, "c", "localhost");
    let server = Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    (server, cert, dir)
}

fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn ok_answer(request: &str) -> String {
    let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
    let accept = wsgate::ws::handshake::accept_key(key.trim().as_bytes());
    format!(
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        std::str::from_utf8(&accept).unwrap()
    )
}

/// A one-connection server that answers the upgrade with `answer` (`{accept}` replaced by the
/// right accept value), then sends `after` and closes.
fn fake_server(answer: String, after: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let request = read_head(&mut s);
        let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap_or("").trim().to_string();
        let accept = wsgate::ws::handshake::accept_key(key.as_bytes());
        let answer = answer.replace("{accept}", std::str::from_utf8(&accept).unwrap());
        let _ = s.write_all(answer.as_bytes());
        let _ = s.write_all(&after);
        // Long enough for the client to read and answer.
        std::thread::sleep(Duration::from_millis(200));
    });
    url
}

/// `wsgate client ARGS` with `input` on its standard input: (exit status, stdout, stderr).
fn terminal(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn terminal_client_pipes_lines_both_ways() {
    let server = Server::start(&[]);
    let url = server.url("/echo");
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let (status, out, err) = terminal(&[&url], input.as_bytes());
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, input, "every line echoed, in order");
    // -n: exits after N messages, without waiting for the rest of the input.
    let (status, out, _) = terminal(&[&url, "-n", "3"], input.as_bytes());
    assert_eq!((status, out.as_str()), (0, "1\n2\n3\n"));
    // --jsonl: one object per message.
    let (status, out, _) = terminal(&[&url, "--jsonl", "--linger", "0.2"], "héllo\n".as_bytes());
    assert_eq!(status, 0);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["size"].as_u64(), line["data"].as_str()),
        (Some("text"), Some(6), Some("héllo"))
    );
    assert!(line["time"].as_f64().unwrap() > 1.6e9);
    // --binary: binary messages, printed as they are.
    let (status, out, _) = terminal(&[&url, "--binary", "--jsonl", "--linger", "0.2"], b"\x00\xff\n");
    assert_eq!(status, 0);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((line["type"].as_str(), line["data"].as_str()), (Some("binary"), Some("AP8=")));
}

/// Interactive use: standard input and output are a terminal (util-linux `script` gives the
/// client a pseudo-terminal). The terminal echoes what is typed; the client's messages come
/// after, each a line; the end of input (^D, which `script` sends at the end of its input)
/// closes normally.
#[test]
fn terminal_client_works_in_a_pseudo_terminal() {
    use std::process::{Command, Stdio};
    let server = Server::start(&[]);
    let client = format!("{} client {}", env!("CARGO_BIN_EXE_wsgate"), server.url("/echo"));
    let mut child = Command::new("script")
        .args(["-qec", &client, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux, in every Debian)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed one\ntyped two\n").unwrap();
    // The input ends after the answers had time to come, as a person's would.
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Each line twice: the terminal's echo of the typing, then the server's echo.
    assert_eq!(text.matches("typed one\r\n").count(), 2, "{text:?}");
    assert_eq!(text.matches("typed two\r\n").count(), 2, "{text:?}");
}

#[test]
fn terminal_client_exit_status_says_how_it_ended() {
    let server = Server::start(&[]);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, _, err) = terminal(&[&format!("ws://127.0.0.1:{port}/")], b"");
    assert_eq!(status, 3, "refused: {err}");
    let (status, _, err) = terminal(&[&server.url("/nope")], b"");
    assert_eq!(status, 4, "handshake: {err}");
    assert!(err.contains("404"), "{err}");
    let (status, _, _) = terminal(&["ftp://x/"], b"");
    assert_eq!(status, 2);
    // The server fails the connection (a frame without the mask bit): 1002, status 5.
    let ok = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";
    let url = fake_server(ok.into(), vec![0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]);
    let (status, _, err) = terminal(&[&url], b"");
    assert_eq!(status, 5, "{err}");
    // It just goes away: status 6.
    let url = fake_server(ok.into(), Vec::new());
    let (status, _, err) = terminal(&[&url, "--linger", "5"], b"");
    assert_eq!(status, 6, "{err}");
}

#[test]
fn terminal_client_reconnects_until_the_server_is_there() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let client = std::thread::spawn(move || {
        // Waits for input while the first attempts are refused; the input is sent once
        // connected (the pipe holds it).
        terminal(&[&url, "--reconnect", "-n", "1"], b"again\n")
    });
    std::thread::sleep(Duration::from_millis(700));
    let listen = format!("127.0.0.1:{port}");
    let _server = Server::start(&["-l", &listen]);
    let (status, out, err) = client.join().unwrap();
    assert_eq!((status, out.as_str()), (0, "again\n"), "{err}");
    assert!(err.contains("connecting again"), "{err}");
}

#[test]
fn chat_room_members_hear_each_other() {
    let server = Server::start(&[]);
    let mut members: Vec<Client> =
        (0..3).map(|_| Client::open(&server.url("/chat/lobby"), &Options::default()).unwrap()).collect();
    // Joined in order: a message after the last join reaches all three, the sender too.
    members[1].send_text("from one").unwrap();
    for m in &mut members {
        assert_eq!(m.receive(WAIT).unwrap(), Message::Text("from one".into()));
    }
    for m in members {
        assert_eq!(m.close(1000, "").unwrap(), Some(1000));
    }
}

/// `wsgate bench ARGS`: (exit status, stdout, stderr).
fn bench(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate")).arg("bench").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bench_runs_every_mode_and_checks_every_echo() {
    let routes = "[[route]]\npath = \"/echo\"\napp = \"echo\"\n\
        [[route]]\npath = \"/zecho\"\napp = \"echo\"\ncompression = \"dedicated\"\ncompression_threshold = 0\n\
        [[route]]\npath = \"/chat/*\"\napp = \"chat\"\n";
    let server = Server::with_config(routes, &[]);
    let pid = server.child.id().to_string();
    let (echo, zecho, room) = (server.url("/echo"), server.url("/zecho"), server.url("/chat/bench"));
    let runs: &[(&str, &[&str])] = &[
        (&echo, &["-m", "closed"]),
        (&echo, &["-m", "flood", "-q", "8", "-t", "-s", "3000"]),
        (&echo, &["-m", "rate", "-r", "2000"]),
        (&zecho, &["-m", "flood", "-q", "4", "-t", "-s", "1000", "--compress"]),
        (&zecho, &["-m", "closed", "-t", "-s", "1000", "--compress", "--payload", "json"]),
        (&room, &["-m", "fanout", "-t", "--publishers", "3"]),
        (&room, &["-m", "fanout", "-t", "--publishers", "1", "--payload", "json", "-s", "300"]),
    ];
    for (url, mode) in runs {
        let mut args = vec![*url, "-c", "10", "--threads", "2", "-d", "0.5", "-w", "0.2", "--json"];
        args.extend_from_slice(&["--server-pid", &pid]);
        args.extend_from_slice(mode);
        let (status, out, err) = bench(&args);
        assert_eq!(status, 0, "{mode:?}: {err}");
        let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(summary["ok"], true);
        assert_eq!(summary["connections"], 10);
        assert!(summary["server"]["user_ns_per_msg"].is_number(), "{out}");
        match mode[1] {
            "rate" => {
                assert!(summary["msgs"].as_u64().unwrap() > 0, "{out}");
                let latency = &summary["latency"];
                assert!(latency["samples"].as_u64().unwrap() > 0, "{out}");
                assert!(latency["p50_us"].as_u64().unwrap() <= latency["max_us"].as_u64().unwrap(), "{out}");
            }
            "fanout" => {
                // Every round is one message of each publisher to each of the 10 connections.
                let publishers: u64 =
                    mode[mode.iter().position(|a| *a == "--publishers").unwrap() + 1].parse().unwrap();
                assert!(summary["rounds"].as_u64().unwrap() > 0, "{out}");
                assert!(summary["deliveries"].as_u64().unwrap() > 0, "{out}");
                assert_eq!(summary["publishers"], publishers);
            }
            _ => assert!(summary["msgs"].as_u64().unwrap() > 0, "{out}"),
        }
        let compress = mode.contains(&"--compress");
        assert_eq!(summary["compressed_connections"], if compress { 10 } else { 0 }, "{out}");
        // What went over the wire, frame headers included: far less than the payloads when
        // JSON is compressed, about as much otherwise (the two counts are sampled a read
        // apart at the window's edges).
        let (payload, wire_in) = (summary["bytes"].as_f64().unwrap(), summary["wire_in_bytes"].as_f64().unwrap());
        if mode.contains(&"json") && compress {
            assert!(wire_in < payload / 2.0, "{out}");
        } else if !compress {
            let frames = summary["msgs"].as_f64().or(summary["deliveries"].as_f64()).unwrap();
            assert!(wire_in > payload * 0.95 && wire_in < (payload + frames * 14.0) * 1.05, "{out}");
        }
        assert_eq!(summary["payload"], if mode.contains(&"json") { "json" } else { "pattern" }, "{out}");
    }
    // A server that answers with something else than the echo: the run fails and says so.
    let ok = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";
    let mut wrong = vec![0x82, 20];
    wrong.extend_from_slice(&[b'x'; 20]);
    let url = fake_server(ok.into(), wrong);
    let (status, _, err) = bench(&[&url, "-c", "1", "-d", "1", "-w", "0"]);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("differs"), "{err}");
    // Nothing listening: a failure; options that do not fit: a usage error.
    let (status, _, err) = bench(&["ws://127.0.0.1:1/", "-d", "1"]);
    assert_eq!(status, 1, "{err}");
    for wrong in [&["-m", "rate"][..], &["-r", "10"], &["-m", "fanout", "-c", "2", "--publishers", "3"]] {
        let (status, _, err) = bench(&[[echo.as_str()].as_slice(), wrong].concat());
        assert_eq!(status, 2, "{wrong:?}: {err}");
    }
}

#[test]
fn bench_over_wss() {
    let (server, cert, dir) = tls_server("bench");
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    for extra in [&["--ca", cert.to_str().unwrap()][..], &["--insecure", "-m", "flood", "-s", "20000", "-q", "4"]] {
        let args = [&[url.as_str(), "-c", "4", "-d", "0.5", "-w", "0.2", "--json"][..], extra].concat();
        let (status, out, err) = bench(&args);
        assert_eq!(status, 0, "{extra:?}: {err}");
        let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(summary["msgs"].as_u64().unwrap() > 0, "{out}");
    }
    // Without the CA, the certificate is refused before any load.
    let (status, _, err) = bench(&[url.as_str(), "-c", "1", "-d", "0.5"]);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
