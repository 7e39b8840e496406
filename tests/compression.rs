//! permessage-deflate (RFC 7692) through the server: negotiation, round trips with Python's
//! `websockets` (Debian's python3-websockets, which offers compression by default), bombs,
//! RSV1 where it may not be, and pub/sub to a mix of compressing and plain subscribers.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::process::Command;

use common::*;
use wsgate::ws::deflate::{Deflater, Inflater};

const ROUTES: &str = "[limits]\nmax_message_size = \"256KiB\"\n\
[[route]]\npath = \"/shared\"\napp = \"echo\"\ncompression = \"shared\"\n\
[[route]]\npath = \"/dedicated\"\napp = \"echo\"\ncompression = \"dedicated\"\ncompression_window_bits = 12\n\
[[route]]\npath = \"/plain\"\napp = \"echo\"\n\
[[route]]\npath = \"/ps\"\napp = \"pubsub\"\ncompression = \"shared\"\ncompression_threshold = 16\n";

fn server() -> Server {
    Server::with_config(ROUTES, &[])
}

fn compress(payload: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    Deflater::new(15, 8, 6, false).compress(payload, &mut z);
    z
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Inflater::new().inflate(payload, true, usize::MAX, &mut out).unwrap();
    out
}

#[test]
fn negotiation_through_the_handshake() {
    let server = server();
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "/shared",
            "permessage-deflate; client_max_window_bits",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15",
            ),
        ),
        ("/dedicated", "permessage-deflate", Some("permessage-deflate; server_max_window_bits=12")),
        ("/dedicated", "permessage-deflate; server_max_window_bits=8", None),
        (
            "/dedicated",
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10",
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        ("/dedicated", "permessage-deflate; client_max_window_bits; client_max_window_bits", None),
        ("/plain", "permessage-deflate", None),
        ("/shared", "x-webkit-deflate-frame", None),
    ];
    for (path, offer, want) in cases {
        let (_, answer) = Raw::connect_offering(server.addr, path, offer);
        assert_eq!(answer.as_deref(), *want, "{path}: {offer}");
    }
}

#[test]
fn echo_round_trips_compressed_both_ways() {
    let server = server();
    for path in ["/shared", "/dedicated"] {
        let (mut raw, answer) = Raw::connect_offering(server.addr, path, "permessage-deflate");
        assert!(answer.is_some());
        // The dedicated route keeps its context: one inflater for the connection's messages.
        let mut context = Inflater::new();
        let json: Vec<u8> = (0..2000).flat_map(|n| format!("{{\"id\":{n},\"name\":\"item\"}},").into_bytes()).collect();
        for msg in [&b"short"[..], &json[..], &json[..3000]] {
            raw.send(0xC1, &compress(msg)); // FIN, RSV1, text
            let frame = raw.recv().unwrap();
            assert_eq!(frame.opcode, 1);
            // Under the threshold the answer is plain; over it, compressed.
            let payload = if frame.compressed {
                let mut out = Vec::new();
                context.inflate(&frame.payload, true, usize::MAX, &mut out).unwrap();
                out
            } else {
                frame.payload.clone()
            };
            assert_eq!(payload, msg, "{path}");
            assert_eq!(frame.compressed, msg.len() >= 64, "{path} {}", msg.len());
            if frame.compressed {
                assert!(frame.payload.len() < msg.len() / 3, "{} of {}", frame.payload.len(), msg.len());
            }
        }
        // An uncompressed message is fine too (RSV1 is per message).
        raw.send(0x81, b"plain");
        assert_eq!(raw.recv().unwrap().payload, b"plain");
    }
}

#[test]
fn bombs_close_with_1009() {
    let server = server();
    let zeros = vec![0u8; 1 << 20];
    let z = compress(&zeros);
    assert!(z.len() < 2000);
    let rss_before = server.rss_kib();
    // One small frame inflating to 1 MiB, past the 256 KiB limit.
    for _ in 0..20 {
        let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
        raw.send(0xC2, &z);
        assert_eq!(raw.expect_close(), Some(1009));
    }
    // The same message cut into many small compressed fragments.
    let (mut raw, _) = Raw::connect_offering(server.addr, "/dedicated", "permessage-deflate");
    let pieces: Vec<&[u8]> = z.chunks(8).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let first = if i == 0 { 0x42 } else { 0x00 };
        let fin = if i == pieces.len() - 1 { 0x80 } else { 0 };
        raw.send(first | fin, piece);
    }
    assert_eq!(raw.expect_close(), Some(1009));
    // Memory did not follow the bombs (each stopped at the limit plus one chunk).
    let rss_after = server.rss_kib();
    assert!(rss_after < rss_before + 8 * 1024, "{rss_before} -> {rss_after} KiB");
}

#[test]
fn rsv1_only_where_the_extension_allows_it() {
    let server = server();
    // Not negotiated: RSV1 is a protocol error.
    let mut raw = Raw::connect(server.addr, "/shared");
    raw.send(0xC1, &compress(b"x"));
    assert_eq!(raw.expect_close(), Some(1002));
    // Negotiated, but on a control frame or a continuation.
    let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
    raw.send(0xC9, b"ping");
    assert_eq!(raw.expect_close(), Some(1002));
    let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
    raw.send(0x41, &compress(b"abc")[..2]);
    raw.send(0xC0, b"x");
    assert_eq!(raw.expect_close(), Some(1002));
    // Garbage that is not DEFLATE, and text that is not UTF-8 once inflated: 1007.
    let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
    raw.send(0xC1, &[0xff; 32]);
    assert_eq!(raw.expect_close(), Some(1007));
    let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
    raw.send(0xC1, &compress(&[0xc3, 0x28]));
    assert_eq!(raw.expect_close(), Some(1007));
}

#[test]
fn pubsub_to_compressing_and_plain_subscribers() {
    let server = server();
    let (mut zsub, _) = Raw::connect_offering(server.addr, "/ps", "permessage-deflate; client_max_window_bits");
    let mut plain = Raw::connect(server.addr, "/ps");
    for s in [&mut zsub, &mut plain] {
        s.send(0x81, br#"{"op":"subscribe","topic":"t"}"#);
        let ack = s.recv().unwrap();
        let text = if ack.compressed { inflate(&ack.payload) } else { ack.payload };
        assert!(String::from_utf8(text).unwrap().contains("subscribed"));
    }
    let data = "y".repeat(5000);
    plain.send(0x81, format!(r#"{{"op":"publish","topic":"t","data":"{data}"}}"#).as_bytes());
    let want = format!(r#"{{"topic":"t","data":"{data}"}}"#);
    let z = zsub.recv().unwrap();
    assert!(z.compressed && z.payload.len() < 200, "{}", z.payload.len());
    assert_eq!(inflate(&z.payload), want.as_bytes());
    let p = plain.recv().unwrap();
    assert!(!p.compressed);
    assert_eq!(p.payload, want.as_bytes());
}

#[test]
fn python_websockets_negotiates_and_round_trips() {
    let server = server();
    let script = format!(
        r#"
import asyncio, json, websockets
async def main():
    for path in ["/shared", "/dedicated"]:
        async with websockets.connect("ws://{addr}" + path, max_size=2**20) as ws:
            assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
            for msg in ["hi", json.dumps({{"k": list(range(3000))}}), b"\x00\x01" * 20000]:
                await ws.send(msg)
                assert await ws.recv() == msg
    print("ok")
asyncio.run(main())
"#,
        addr = server.addr
    );
    require(&PYTHON3_WEBSOCKETS);
    let out = Command::new(PYTHON).arg("-c").arg(&script).output().expect("python3 (Debian's)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "python3-websockets: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_compression_settings_are_refused() {
    for (text, want) in [
        ("compression = \"maybe\"", "route.compression: \"maybe\""),
        ("compression = \"dedicated\"\ncompression_window_bits = 8", "compression_window_bits: must be 9..=15"),
        ("compression = \"dedicated\"\ncompression_mem_level = 0", "compression_mem_level: must be 1..=9"),
        ("compression = \"shared\"\ncompression_window_bits = 10", "only with compression = \"dedicated\""),
        ("compression = \"shared\"\ncompression_level = 10", "compression_level: must be 0..=9"),
        ("compression = \"shared\"\ncompression_max_dedicated = 5", "compression_max_dedicated: only with"),
    ] {
        let err = wsgate::config::Config::parse(&format!("[[route]]\npath = \"/x\"\napp = \"echo\"\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains("line 1"), "{text}: {err}");
    }
}

#[test]
fn dedicated_codecs_are_capped_then_shared() {
    let server = Server::with_config(
        "[[route]]\npath = \"/d\"\napp = \"echo\"\ncompression = \"dedicated\"\ncompression_max_dedicated = 2\n",
        &[],
    );
    let dedicated = "permessage-deflate";
    let shared = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let (first, a) = Raw::connect_offering(server.addr, "/d", "permessage-deflate");
    let (_second, b) = Raw::connect_offering(server.addr, "/d", "permessage-deflate");
    assert_eq!((a.as_deref(), b.as_deref()), (Some(dedicated), Some(dedicated)));
    // The third is answered as shared: it keeps no context, so it holds no codec.
    let (mut third, c) = Raw::connect_offering(server.addr, "/d", "permessage-deflate");
    assert_eq!(c.as_deref(), Some(shared));
    let msg = "z".repeat(3000);
    third.send(0xC1, &compress(msg.as_bytes()));
    let echo = third.recv().unwrap();
    assert!(echo.compressed);
    assert_eq!(inflate(&echo.payload), msg.as_bytes());
    // One of the first two leaves: a place is free again.
    drop(first);
    let start = std::time::Instant::now();
    loop {
        let (_, d) = Raw::connect_offering(server.addr, "/d", "permessage-deflate");
        if d.as_deref() == Some(dedicated) {
            break;
        }
        assert!(start.elapsed() < WAIT, "{d:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Messages that inflate past one drive's budget (1 MiB) go on over several drives: whole
/// and in order, in one frame or fragmented, on shared and dedicated routes; a bomb past a
/// large limit still closes with 1009.
#[test]
fn large_messages_inflate_over_several_drives() {
    let config = "[limits]\nmax_message_size = \"8MiB\"\nmax_frame_size = \"8MiB\"\n\
[[route]]\npath = \"/shared\"\napp = \"echo\"\ncompression = \"shared\"\n\
[[route]]\npath = \"/dedicated\"\napp = \"echo\"\ncompression = \"dedicated\"\n";
    let server = Server::with_config(config, &[]);
    let text: Vec<u8> =
        (0..250_000u32).flat_map(|n| format!("{{\"n\":{},\"v\":\"{}\"}},", n, n % 977).into_bytes()).collect();
    assert!(text.len() > 5 << 20, "{}", text.len());
    let z = compress(&text);
    for path in ["/shared", "/dedicated"] {
        let (mut raw, answer) = Raw::connect_offering(server.addr, path, "permessage-deflate");
        assert!(answer.is_some());
        let mut context = Inflater::new();
        let mut read_text = |raw: &mut Raw| {
            let frame = raw.recv().unwrap();
            let mut out = Vec::new();
            if frame.compressed {
                context.inflate(&frame.payload, true, usize::MAX, &mut out).unwrap();
                if path == "/shared" {
                    context.reset();
                }
            } else {
                out = frame.payload.clone();
            }
            out
        };
        // One frame, then a small plain message in the same write: it waits its turn.
        let mut bytes = masked_frame(0xC1, &z);
        bytes.extend(masked_frame(0x81, b"after"));
        raw.send_raw(&bytes);
        let got = read_text(&mut raw);
        assert!(
            got == text,
            "{path}: the large message: {} bytes, {:?}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
        assert_eq!(read_text(&mut raw), b"after", "{path}");
        // Fragmented: RSV1 on the first frame only.
        let third = z.len() / 3;
        let mut bytes = masked_frame(0x41, &z[..third]);
        bytes.extend(masked_frame(0x00, &z[third..2 * third]));
        bytes.extend(masked_frame(0x80, &z[2 * third..]));
        raw.send_raw(&bytes);
        assert!(read_text(&mut raw) == text, "{path}: fragmented");
    }
    // 16 MiB of zeros in some 16 KB: stopped at the 8 MiB limit, in a later step.
    let bomb = compress(&vec![0u8; 16 << 20]);
    for path in ["/shared", "/dedicated"] {
        let (mut raw, _) = Raw::connect_offering(server.addr, path, "permessage-deflate");
        raw.send(0xC2, &bomb);
        assert_eq!(raw.expect_close(), Some(1009), "{path}");
    }
    // The server went on serving everyone.
    let (mut raw, _) = Raw::connect_offering(server.addr, "/shared", "permessage-deflate");
    raw.send(0x81, b"still here");
    assert_eq!(raw.recv().unwrap().payload, b"still here");
}

/// What a backend sends is compressed too: each whole message over the threshold, on shared
/// and dedicated routes; a message the backend sends in fragments goes uncompressed (the
/// compression context untouched), and splice is off when compression is negotiated.
#[test]
fn backend_replies_are_compressed() {
    let mut backends = PyBackends::new("zbackend");
    for mode in ["framed", "lines"] {
        backends.start(mode, mode);
    }
    let mut config = String::new();
    for (path, mode, compression) in
        [("/fs", "framed", "shared"), ("/fd", "framed", "dedicated"), ("/ls", "lines", "shared")]
    {
        config += &format!(
            "[[route]]\npath = \"{path}\"\nbackend = \"unix:{}\"\nframing = \"{mode}\"\ncompression = \"{compression}\"\n",
            backends.dir.join(mode).display()
        );
    }
    let server = Server::with_config(&config, backend_gateway_args());
    let json: Vec<u8> = (0..300).flat_map(|n| format!("{{\"id\":{n},\"name\":\"item\"}},").into_bytes()).collect();
    for path in ["/fs", "/fd", "/ls"] {
        let (mut raw, answer) = Raw::connect_offering(server.addr, path, "permessage-deflate");
        assert!(answer.is_some(), "{path}");
        let mut context = Inflater::new();
        for round in 0..3 {
            let mut msg = json.clone();
            msg.extend(format!("round {round}").bytes());
            raw.send(0xC1, &compress(&msg));
            let frame = raw.recv().unwrap();
            assert!(frame.compressed && frame.fin, "{path}: the backend's reply went uncompressed");
            assert!(frame.payload.len() < msg.len() / 3, "{path}: {} of {}", frame.payload.len(), msg.len());
            let mut out = Vec::new();
            context.inflate(&frame.payload, true, usize::MAX, &mut out).unwrap();
            if path != "/fd" {
                context.reset();
            }
            // Lines backends answer line by line: the message and its newline come back.
            assert_eq!(out.strip_suffix(b"\n").unwrap_or(&out), &msg[..], "{path}");
        }
        // Short replies stay plain.
        raw.send(0x81, b"hi");
        let frame = raw.recv().unwrap();
        assert!(!frame.compressed, "{path}");
        if path == "/fd" {
            // Fragments go as they are; the next whole message is compressed with the context intact.
            raw.send(0x81, b"split");
            let parts: Vec<Frame> = (0..3).map(|_| raw.recv().unwrap()).collect();
            assert!(parts.iter().all(|f| !f.compressed), "{parts:?}");
            assert_eq!(parts.iter().flat_map(|f| f.payload.clone()).collect::<Vec<u8>>(), b"abcdefghi");
            raw.send(0xC1, &compress(&json));
            let frame = raw.recv().unwrap();
            assert!(frame.compressed);
            let mut out = Vec::new();
            context.inflate(&frame.payload, true, usize::MAX, &mut out).unwrap();
            assert_eq!(out, json);
        }
    }
}
