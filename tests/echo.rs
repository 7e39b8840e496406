//! The echo app end to end, through the real binary, with tungstenite as the client.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

#[test]
fn text_and_binary_round_trip() {
    let server = Server::start(&[]);
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::text("hello, wsgate")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello, wsgate"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.send(Message::text("")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(""));
    for size in [125, 126, 65535, 65536, 200_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        ws.send(Message::binary(payload.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(payload), "size {size}");
    }
    ws.close(None).unwrap();
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let server = Server::start(&[]);
    let mut raw = Raw::connect(server.addr, "/echo");
    raw.send(0x01, "κό".as_bytes()); // text, not FIN
    raw.send(0x89, b"between"); // ping between fragments
    raw.send(0x00, &"σμε".as_bytes()[..1]); // continuation, splits a character
    raw.send(0x80, &"σμε".as_bytes()[1..]); // final continuation
    let pong = raw.recv().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"between"[..]));
    let echo = raw.recv().unwrap();
    assert_eq!((echo.fin, echo.opcode), (true, 1));
    assert_eq!(String::from_utf8(echo.payload).unwrap(), "κόσμε");
}

#[test]
fn sixteen_mib_message() {
    let server = Server::start(&[]);
    let (mut ws, _) = tungstenite::client::connect_with_config(
        server.url("/echo"),
        Some(tungstenite::protocol::WebSocketConfig {
            max_frame_size: Some(64 << 20),
            max_message_size: Some(64 << 20),
            ..Default::default()
        }),
        3,
    )
    .unwrap();
    let payload: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(payload.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(payload));
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let server = Server::start(&[]);
    let mut ws = client(&server.url("/echo"));
    ws.send(Message::Ping(b"are you there".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec()));
}

#[test]
fn client_close_is_echoed_and_tcp_closed() {
    let server = Server::start(&[]);
    let mut raw = Raw::connect(server.addr, "/echo");
    raw.send(0x88, &[0x0F, 0xA0, b'b', b'y', b'e']); // 4000 "bye"
    assert_eq!(raw.expect_close(), Some(4000));
    raw.expect_eof();
    server.wait_log("close=4000 (bye)");

    // An empty close gets an empty close back.
    let mut raw = Raw::connect(server.addr, "/echo");
    raw.send(0x88, b"");
    let frame = raw.recv().unwrap();
    assert_eq!((frame.opcode, frame.payload.len()), (8, 0));
    raw.expect_eof();

    // And through tungstenite.
    let mut ws = client(&server.url("/echo"));
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() })).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Each protocol rule a client can break, and the close code it earns (RFC 6455 §7.4.1).
#[test]
fn protocol_errors_close_with_the_right_code() {
    let server = Server::with_config("[[route]]\npath = \"/echo\"\napp = \"echo\"\nmax_message_size = 1000\n", &[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved bit", masked_frame(0xC1, b"x"), 1002),
        ("reserved opcode", masked_frame(0x83, b""), 1002),
        ("fragmented ping", masked_frame(0x09, b""), 1002),
        ("long ping", masked_frame(0x89, &[0; 126]), 1002),
        ("stray continuation", masked_frame(0x80, b"x"), 1002),
        ("close code 1005", masked_frame(0x88, &[0x03, 0xED]), 1002),
        ("one-byte close", masked_frame(0x88, &[0x03]), 1002),
        ("bad UTF-8 text", masked_frame(0x81, &[b'a', 0xC0, 0xAF]), 1007),
        ("bad UTF-8 close reason", masked_frame(0x88, &[0x03, 0xE8, 0xFF]), 1007),
        ("too big", masked_frame(0x82, &[0; 1001]), 1009),
    ];
    for (name, bytes, code) in cases {
        let mut raw = Raw::connect(server.addr, "/echo");
        raw.send_raw(&bytes);
        assert_eq!(raw.expect_close(), Some(code), "{name}");
        raw.expect_eof();
    }
    // Too big across fragments, refused before the message ends.
    let mut raw = Raw::connect(server.addr, "/echo");
    raw.send(0x02, &[0; 600]);
    raw.send(0x00, &[0; 600]);
    assert_eq!(raw.expect_close(), Some(1009));
    // Invalid UTF-8 fails fast: the rest of the message never comes.
    let mut raw = Raw::connect(server.addr, "/echo");
    raw.send(0x01, &[0xCE, 0xBA, 0xF4, 0x90]);
    assert_eq!(raw.expect_close(), Some(1007));
}

#[test]
fn many_messages_in_one_write_all_come_back_in_order() {
    let server = Server::start(&[]);
    let mut raw = Raw::connect(server.addr, "/echo");
    let mut batch = Vec::new();
    for i in 0..2000u32 {
        batch.extend(masked_frame(0x82, &i.to_be_bytes()));
    }
    raw.send_raw(&batch);
    for i in 0..2000u32 {
        let frame = raw.recv().unwrap();
        assert_eq!(frame.payload, i.to_be_bytes());
    }
}

#[test]
fn a_thousand_concurrent_clients() {
    let server = Server::start(&[]);
    let mut clients: Vec<_> = (0..1000).map(|_| client(&server.url("/echo"))).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(ws.read().unwrap(), Message::text(format!("client {i}")));
    }
    for ws in clients.iter_mut() {
        ws.close(None).unwrap();
    }
}
