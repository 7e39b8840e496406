//! Handshake refusals, plain HTTP, timeouts, limits, backpressure and shutdown.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use tungstenite::Message;

#[test]
fn bad_handshakes_get_clear_http_errors() {
    let server = Server::with_config(
        "[[route]]\npath = \"/echo\"\napp = \"echo\"\norigins = [\"https://good.example\"]\n\
[[route]]\npath = \"/\"\napp = \"demo\"\n",
        &[],
    );
    let ok = upgrade_request("/echo", "");
    let cases: Vec<(String, &str)> = vec![
        (ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), "400 Bad Request"),
        (ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "400 Bad Request"),
        (ok.replace("Connection: Upgrade", "Connection: close"), "400 Bad Request"),
        (ok.replace("Host: test\r\n", ""), "400 Bad Request"),
        (ok.replace("Version: 13", "Version: 12"), "426 Upgrade Required"),
        (ok.replace("Upgrade: websocket\r\n", ""), "426 Upgrade Required"),
        (ok.replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n"), "403 Forbidden"),
        (ok.replace("GET /echo", "GET /nowhere"), "404 Not Found"),
        (ok.replace("GET /echo", "POST /echo"), "405 Method Not Allowed"),
        ("PUT / HTTP/1.1\r\nHost: x\r\n\r\n".into(), "405 Method Not Allowed"),
        ("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n".into(), "426 Upgrade Required"),
        ("\u{16}\u{3}\u{1}garbage that is not HTTP\r\n\r\n".into(), "400 Bad Request"),
        (format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)), "431 "),
    ];
    for (request, want) in cases {
        let response = http_exchange(server.addr, request.as_bytes());
        assert!(response.starts_with(&format!("HTTP/1.1 {want}")), "{request:?} -> {response}");
    }
    let r = http_exchange(server.addr, ok.replace("Version: 13", "Version: 12").as_bytes());
    assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{r}");
    // A good origin passes.
    let r = http_exchange_head(server.addr, &ok.replace("\r\n\r\n", "\r\nOrigin: https://good.example\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 101 "), "{r}");
}

#[test]
fn demo_page_get_head_and_keep_alive() {
    let server = Server::start(&[]);
    let mut s = tcp(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let first = out.find("HTTP/1.1 200 OK").unwrap();
    let second = out[first + 1..].find("HTTP/1.1 200 OK").expect("second response on the same connection");
    assert!(out.contains("new WebSocket("), "the page carries the JS client");
    // HEAD carries no body: the connection ends right after its head.
    assert!(out.ends_with("Connection: close\r\n\r\n"), "{}", &out[first + 1 + second..]);
}

#[test]
fn handshake_timeout_answers_408_and_closes() {
    let server = Server::with_config("[limits]\nhandshake_timeout = \"300ms\"\n", &[]);
    // A slowloris: part of a head, then nothing.
    let response = http_exchange(server.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n");
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    server.wait_log("request head not received within handshake_timeout");
}

#[test]
fn idle_timeout_closes_with_1001() {
    let server = Server::with_config("[limits]\nidle_timeout = \"300ms\"\nping_interval = 0\n", &[]);
    let mut raw = Raw::connect(server.addr, "/echo");
    let frame = raw.recv().unwrap();
    assert_eq!(frame.close_code(), Some(1001));
    assert_eq!(&frame.payload[2..], b"idle timeout");
    raw.send(0x88, &[0x03, 0xE9]);
    raw.expect_eof();
}

#[test]
fn unanswered_ping_closes_the_connection() {
    let server = Server::with_config(
        "[limits]\nping_interval = \"200ms\"\npong_timeout = \"200ms\"\nclose_timeout = \"200ms\"\n",
        &[],
    );
    let mut raw = Raw::connect(server.addr, "/echo");
    let ping = raw.recv().unwrap();
    assert_eq!(ping.opcode, 9);
    // No pong: the server gives up.
    assert_eq!(raw.expect_close(), Some(1001));
    raw.expect_eof();
    server.wait_log("ping timeout");

    // A client that answers (tungstenite does, on read) stays connected past several pings.
    let server = Server::with_config("[limits]\nping_interval = \"200ms\"\npong_timeout = \"10s\"\n", &[]);
    let mut ws = client(&server.url("/echo"));
    let mut pings = 0;
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        ws.send(Message::text(format!("still here {i}"))).unwrap();
        loop {
            match ws.read().unwrap() {
                Message::Text(t) => {
                    assert_eq!(t.as_str(), format!("still here {i}"));
                    break;
                }
                Message::Ping(_) => pings += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(pings >= 1, "the server pings a silent client");
}

#[test]
fn graceful_shutdown_sends_1001_and_exits_zero() {
    let mut server = Server::start(&[]);
    let mut raw = Raw::connect(server.addr, "/echo");
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    server.signal(libc::SIGTERM);
    assert_eq!(raw.expect_close(), Some(1001));
    raw.send(0x88, &[0x03, 0xE9]);
    raw.expect_eof();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("{other:?}"),
    }
    // tungstenite answers the close; once both clients hang up the server has nobody left.
    let _ = ws.flush();
    drop(ws);
    drop(raw);
    assert_eq!(server.wait_exit(), Some(0));
    // New connections are refused once draining starts.
    assert!(std::net::TcpStream::connect(server.addr).is_err());
}

#[test]
fn max_connections_refuses_politely() {
    let server = Server::with_config("[server]\nmax_connections = 2\n", &[]);
    let _a = client(&server.url("/echo"));
    let _b = client(&server.url("/echo"));
    let response = http_exchange(server.addr, upgrade_request("/echo", "").as_bytes());
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
}

/// A client that sends without ever reading must not make the server buffer without bound,
/// and must not disturb others.
#[test]
fn backpressure_bounds_memory_for_a_client_that_never_reads() {
    let server = Server::with_config("[limits]\nbackpressure_high = \"256KiB\"\n", &[]);
    let mut hog = Raw::connect(server.addr, "/echo");
    let rss_before = server.rss_kib();
    let frame = masked_frame(0x82, &vec![7u8; 64 * 1024]);
    // Up to 256 MiB; the socket stops taking bytes long before that once the server stops
    // reading from it.
    let sent = write_until_blocked(&mut hog.stream, &frame, 256 << 20);
    assert!(sent < 256 << 20, "the server kept reading from a client that never reads");
    let grown_kib = server.rss_kib().saturating_sub(rss_before);
    assert!(grown_kib < 32 * 1024, "server RSS grew {grown_kib} KiB for one stalled client");
    // Meanwhile everyone else is served.
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("unaffected")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("unaffected"));
}

#[test]
fn garbage_and_truncated_input_never_hurt_other_clients() {
    let mut server = Server::start(&[]);
    let mut ws = client(&server.url("/echo"));
    let mut seed = 0x1234_5678u32;
    for round in 0..50 {
        let mut bytes = Vec::new();
        for _ in 0..(round * 37 % 500) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            bytes.push(seed as u8);
        }
        // Half the rounds start with a valid upgrade so the garbage hits the frame parser.
        let mut s = tcp(server.addr);
        if round % 2 == 0 {
            s.write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
        }
        let _ = s.write_all(&bytes);
        drop(s); // truncated: hang up mid-whatever
    }
    ws.send(Message::text("still fine")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still fine"));
    assert!(server.is_running());
}

#[test]
fn access_log_line_per_connection() {
    let server = Server::start(&[]);
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("one")).unwrap();
    ws.read().unwrap();
    ws.send(Message::binary(vec![1u8; 10])).unwrap();
    ws.read().unwrap();
    ws.close(None).unwrap();
    let _ = ws.read();
    drop(ws);
    let line = server.wait_log("/echo status=101");
    assert!(line.contains("in=2msg/13B out=2msg/13B"), "{line}");
}

/// The access line says what happened in words a user reads right: a served keep-alive
/// connection the client then closed is not a failure, and every common ending says which.
#[test]
fn access_line_wording_of_the_common_endings() {
    let server = Server::with_config("[limits]\nhandshake_timeout = \"1s\"\n", &[]);
    // The access line of the connection from `port` opened when the log had `from` lines.
    let line_for = |from: usize, port: u16| {
        let needle = format!(":{port} id=");
        server.wait_log_since(from, &needle)
    };
    // Served with keep-alive, then closed by the client while idle.
    let from = server.log_lines();
    let mut s = tcp(server.addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 65536];
    while seen.windows(8).filter(|w| w == b"HTTP/1.1").count() < 2 || !seen.ends_with(b"</html>\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&b[..n]);
    }
    drop(s);
    let line = line_for(from, port);
    assert!(
        line.contains("status=200") && line.ends_with("end=(2 requests served; client closed while idle)"),
        "{line}"
    );
    // Sends `bytes`, then reads until the server closes (`wait`) or pauses 100 ms, closes, and
    // returns the server's answer and the connection's access line.
    let exchange = |bytes: &[u8], wait: bool| {
        let from = server.log_lines();
        let mut s = tcp(server.addr);
        let port = s.local_addr().unwrap().port();
        s.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        if wait {
            let _ = s.read_to_end(&mut answer);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(s);
        (String::from_utf8_lossy(&answer).into_owned(), line_for(from, port))
    };
    // Served and closed by the response (HTTP/1.0 without keep-alive).
    let (_, line) = exchange(b"GET / HTTP/1.0\r\n\r\n", true);
    assert!(line.ends_with("end=(1 request served; closed after the response)"), "{line}");
    // Connected and said nothing.
    let (_, line) = exchange(b"", false);
    assert!(line.contains("status=-") && line.ends_with("end=(client closed without sending a request)"), "{line}");
    // Half a head, then gone.
    let (_, line) = exchange(b"GET / HTTP/1.1\r\nHo", false);
    assert!(line.ends_with("end=(client closed mid-request)"), "{line}");
    // Half a head, then silence: 408.
    let (answer, line) = exchange(b"GET / HTTP/1.1\r\nHo", true);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        line.contains("status=408") && line.contains("end=(request head not received within handshake_timeout)"),
        "{line}"
    );
    // Served, then idle past the timeout: closed quietly, no 408 after a 200.
    let (answer, line) = exchange(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert!(answer.starts_with("HTTP/1.1 200 ") && !answer.contains("408"), "{answer}");
    assert!(
        line.contains("status=200") && line.ends_with("end=(1 request served; closed idle past handshake_timeout)"),
        "{line}"
    );
    // A WebSocket closed by the client with a code.
    let from = server.log_lines();
    let mut ws = client(&server.url("/echo"));
    let port = match ws.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.local_addr().unwrap().port(),
        _ => unreachable!(),
    };
    ws.close(Some(tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "bye".into() })).unwrap();
    let _ = ws.read();
    let line = line_for(from, port);
    assert!(line.contains("status=101") && line.ends_with("close=1000 (bye)"), "{line}");
}

/// Out of file descriptors, the server must neither spin nor die, and must recover.
#[test]
fn fd_exhaustion_pauses_accepting_without_spinning() {
    // `ulimit -n` before exec caps both limits, so the server cannot raise them back.
    let server = Server::start_with_fd_limit(32, &[]);
    let mut clients = Vec::new();
    // More connections than descriptors: the kernel completes them into the backlog.
    for _ in 0..40 {
        clients.push(tcp(server.addr));
    }
    server.wait_log("retrying every");
    let cpu_before = server.cpu_ticks();
    std::thread::sleep(Duration::from_millis(1000));
    let used = server.cpu_ticks() - cpu_before;
    // Spinning would burn ~100 ticks (one second of CPU); waiting burns next to none.
    assert!(used < 50, "server used {used} ticks of CPU in 1 s while out of descriptors");
    drop(clients);
    // Descriptors come back; a new client is served.
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("recovered")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("recovered"));
    server.wait_log("accepting again");
}

/// A WebSocket upgrade over HTTP/1.0 is a 400 that says why (RFC 9110 keeps 505 for a major
/// version the server does not speak); a plain HTTP/1.0 request still gets the page.
#[test]
fn upgrade_over_http_1_0_is_400_and_plain_1_0_works() {
    let server = Server::start(&[]);
    let upgrade = upgrade_request("/echo", "").replace("HTTP/1.1", "HTTP/1.0");
    let r = http_exchange(server.addr, upgrade.as_bytes());
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("requires HTTP/1.1"), "{r}");
    let r = http_exchange(server.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 ") && r.contains("<title>wsgate</title>"), "{r}");
}

/// Clients trickling request heads cost their bytes, not a 64 KiB read buffer each: a few
/// hundred of them hold the server's memory to a generous bound (a regression guard).
#[test]
fn slow_request_heads_do_not_pin_read_buffers() {
    const CLIENTS: usize = 400;
    let server = Server::start(&[]);
    let before = server.rss_kib();
    let mut clients: Vec<std::net::TcpStream> = (0..CLIENTS).map(|_| tcp(server.addr)).collect();
    for c in &mut clients {
        c.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    // Every head was read (the server answers a trivial request after them, in order).
    let r = http_exchange(server.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let grown = server.rss_kib().saturating_sub(before);
    // 64 KiB each would be 25 MiB; a few KiB each is what is allowed.
    assert!(grown < 4 * 1024, "{CLIENTS} slow heads grew RSS by {grown} KiB");
    drop(clients);
}

/// The same for upgraded clients that start a large frame and stall in its payload, or in its
/// header: what they sent is kept, not a read buffer each.
#[test]
fn stalled_frames_do_not_pin_read_buffers() {
    const CLIENTS: usize = 300;
    let server = Server::start(&[]);
    let mut clients: Vec<Raw> = (0..CLIENTS).map(|_| Raw::connect(server.addr, "/echo")).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = server.rss_kib();
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            // A 1 MiB binary frame's header and mask, then 10 bytes of its payload.
            let mut start = vec![0x82, 0xFF];
            start.extend_from_slice(&(1u64 << 20).to_be_bytes());
            start.extend_from_slice(&[1, 2, 3, 4]);
            start.extend_from_slice(&[0u8; 10]);
            c.send_raw(&start);
        } else {
            c.send_raw(&[0x82, 0xFF, 0, 0]); // half a header
        }
    }
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("still served")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still served"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let grown = server.rss_kib().saturating_sub(before);
    // 64 KiB each would be 19 MiB.
    assert!(grown < 4 * 1024, "{CLIENTS} stalled frames grew RSS by {grown} KiB");
}

/// `access_log`: access lines go to the file; SIGHUP reopens the path after a rotation, and
/// later lines go to the new file.
#[test]
fn access_log_file_is_written_and_reopened_on_sighup() {
    let dir = std::env::temp_dir().join(format!("wsgate-access-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let server = Server::with_config(&format!("[server]\naccess_log = {:?}\n", log.to_str().unwrap()), &[]);
    let echo_and_close = |text: &str| {
        let mut ws = client(&server.url("/echo"));
        ws.send(Message::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text));
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    };
    let lines_of = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
    };
    let wait_for_lines = |path: &std::path::Path, n: usize| {
        for _ in 0..100 {
            if lines_of(path).len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} has {:?}, expected {n} line(s)", path.display(), lines_of(path));
    };
    echo_and_close("first");
    wait_for_lines(&log, 1);
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("reopened the access log");
    echo_and_close("second");
    wait_for_lines(&log, 1);
    let (old, new) = (lines_of(&rotated), lines_of(&log));
    assert_eq!((old.len(), new.len()), (1, 1), "{old:?} {new:?}");
    for line in old.iter().chain(&new) {
        assert!(line.contains(" /echo status=101 ") && line.contains("in=1msg/"), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
