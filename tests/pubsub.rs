//! Fan-out end to end through the real binary: chat rooms, the pubsub JSON protocol, slow
//! consumers under both policies, and delivery to many subscribers exactly once.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::*;
#[test]
fn chat_reaches_every_member_of_the_room_sender_included() {
    let server = Server::start(&[]);
    let mut members: Vec<Ws> = (0..3).map(|_| ws_open(&server.url("/chat"))).collect();
    members[0].send_text("hello room").unwrap();
    members[1].send_binary(&[1u8, 2, 3]).unwrap();
    for m in &mut members {
        assert_eq!(ws_next(m), WsMessage::Text("hello room".into()));
        assert_eq!(ws_next(m), WsMessage::Binary(vec![1u8, 2, 3]));
    }
}

#[test]
fn chat_with_exclude_sender() {
    let server = Server::with_config("[[route]]\npath = \"/room/*\"\napp = \"chat\"\nexclude_sender = true\n", &[]);
    let mut a = ws_open(&server.url("/room/x"));
    let mut b = ws_open(&server.url("/room/x"));
    let mut c = ws_open(&server.url("/room/x"));
    a.send_text("from a").unwrap();
    assert_eq!(ws_text(&mut b), "from a");
    assert_eq!(ws_text(&mut c), "from a");
    b.send_text("from b").unwrap();
    // a's first message is b's, not its own.
    assert_eq!(ws_text(&mut a), "from b");
    assert_eq!(ws_text(&mut c), "from b");
    // Alone in its room, a member's message reaches nobody, itself included; the next one
    // reaches whoever joined since.
    let mut lone = ws_open(&server.url("/room/y"));
    lone.send_text("nobody hears this").unwrap();
    let mut late = ws_open(&server.url("/room/y"));
    lone.send_text("from lone").unwrap();
    assert_eq!(ws_text(&mut late), "from lone");
    late.send_text("from late").unwrap();
    assert_eq!(ws_text(&mut lone), "from late");
}

#[test]
fn rooms_are_isolated() {
    let server = Server::start(&[]);
    let mut a1 = ws_open(&server.url("/chat/a"));
    let mut b1 = ws_open(&server.url("/chat/b"));
    let mut lobby = ws_open(&server.url("/chat"));
    a1.send_text("in a").unwrap();
    assert_eq!(ws_text(&mut a1), "in a");
    b1.send_text("in b").unwrap();
    assert_eq!(ws_text(&mut b1), "in b", "b did not hear room a");
    lobby.send_text("in lobby").unwrap();
    assert_eq!(ws_text(&mut lobby), "in lobby", "the lobby heard neither");
    // `/chat/` names no room.
    let r = http_exchange(server.addr, upgrade_request("/chat/", "").as_bytes());
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
}

const PUBSUB: &str = "[[route]]
path = \"/ps\"
app = \"pubsub\"
topics = [\"news\", \"sport/*\"]
max_subscriptions = 2
max_topic_length = 16

[[route]]
path = \"/ro\"
app = \"pubsub\"
client_publish = false
";

#[test]
fn pubsub_subscribe_publish_unsubscribe() {
    let server = Server::with_config(PUBSUB, &[]);
    let mut sub = ws_open(&server.url("/ps"));
    let mut publisher = ws_open(&server.url("/ps"));
    sub.send_text(r#"{"op":"subscribe","topic":"news"}"#).unwrap();
    assert_eq!(ws_json(&mut sub), serde_json::json!({"op":"subscribed","topic":"news"}));
    publisher.send_text(r#"{"op":"publish","topic":"news","data":{"n":[1,2,"\u00e9"]}}"#).unwrap();
    assert_eq!(ws_json(&mut sub), serde_json::json!({"topic":"news","data":{"n":[1,2,"é"]}}));
    sub.send_text(r#"{"op":"unsubscribe","topic":"news"}"#).unwrap();
    assert_eq!(ws_json(&mut sub), serde_json::json!({"op":"unsubscribed","topic":"news"}));
    publisher.send_text(r#"{"op":"publish","topic":"news","data":"gone"}"#).unwrap();
    sub.send_text(r#"{"op":"subscribe","topic":"sport/ski"}"#).unwrap();
    assert_eq!(
        ws_json(&mut sub),
        serde_json::json!({"op":"subscribed","topic":"sport/ski"}),
        "nothing after unsubscribe"
    );
}

#[test]
fn pubsub_refusals_are_errors_then_1008() {
    let server = Server::with_config(PUBSUB, &[]);
    let mut ws = ws_open(&server.url("/ps"));
    let expect_error = |ws: &mut Ws, request: &str, code: u16| {
        ws.send_text(request).unwrap();
        let reply = ws_json(ws);
        assert_eq!(
            (reply["op"].as_str(), reply["code"].as_u64()),
            (Some("error"), Some(u64::from(code))),
            "{request}: {reply}"
        );
    };
    expect_error(&mut ws, r#"{"op":"subscribe","topic":"secret"}"#, 403);
    expect_error(&mut ws, "not json", 400);
    expect_error(&mut ws, r#"{"op":"subscribe"}"#, 400);
    expect_error(&mut ws, r#"{"op":"dance","topic":"news"}"#, 400);
    expect_error(&mut ws, r#"{"op":"subscribe","topic":"sport/this-is-far-too-long"}"#, 413);
    ws.send_text(r#"{"op":"subscribe","topic":"news"}"#).unwrap();
    assert_eq!(ws_json(&mut ws)["op"], "subscribed");
    ws.send_text(r#"{"op":"subscribe","topic":"sport/a"}"#).unwrap();
    assert_eq!(ws_json(&mut ws)["op"], "subscribed");
    expect_error(&mut ws, r#"{"op":"subscribe","topic":"sport/b"}"#, 429);
    ws.send_binary(&[0u8; 3]).unwrap();
    assert_eq!(ws_json(&mut ws)["code"], 400);
    // Publishing refused on a read-only route.
    let mut ro = ws_open(&server.url("/ro"));
    expect_error(&mut ro, r#"{"op":"publish","topic":"x","data":1}"#, 405);
    // A client that keeps sending garbage is closed with 1008.
    let mut raw = Raw::connect(server.addr, "/ps");
    for _ in 0..10 {
        raw.send(0x81, b"{{{garbage");
    }
    assert_eq!(raw.expect_close(), Some(1008));
}

/// A client whose socket buffers are small and which never reads: what is published to it
/// piles up in the server.
fn slow_subscriber(server: &Server, path: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    stream
}

fn slow_config(policy: &str) -> String {
    format!(
        "[[route]]\npath = \"/chat\"\napp = \"chat\"\nmax_backpressure = \"64KiB\"\non_backpressure = \"{policy}\"\n"
    )
}

#[test]
fn slow_consumer_is_closed_with_1008() {
    let server = Server::with_config(&slow_config("close"), &[]);
    let _slow = slow_subscriber(&server, "/chat");
    let mut fast = ws_open(&server.url("/chat"));
    // 16 MiB: more than the kernel buffers of a loopback connection hold (tcp_wmem's 4 MiB).
    let payload = vec![b'x'; 16 * 1024];
    for _ in 0..1000 {
        fast.send_binary(&payload).unwrap();
        assert_eq!(ws_next(&mut fast), WsMessage::Binary(payload.clone()));
    }
    let line = server.wait_log("close=1008 (slow consumer");
    assert!(line.contains("/chat status=101"), "{line}");
    // The fast member was never held back by the slow one.
    fast.send_text("still here").unwrap();
    assert_eq!(ws_text(&mut fast), "still here");
}

#[test]
fn slow_consumer_loses_counted_messages_but_pongs_get_through() {
    let server = Server::with_config(&slow_config("drop"), &[]);
    let mut slow = slow_subscriber(&server, "/chat");
    let mut fast = ws_open(&server.url("/chat"));
    let payload = vec![b'y'; 16 * 1024];
    let sent = 1000;
    for _ in 0..sent {
        fast.send_binary(&payload).unwrap();
        assert_eq!(ws_next(&mut fast), WsMessage::Binary(payload.clone()));
    }
    // The slow client pings: the pong jumps the queued messages.
    slow.write_all(&masked_frame(0x89, b"are you there")).unwrap();
    let mut raw_reader = Raw::from_stream(slow);
    let started = Instant::now();
    let mut data_frames = 0;
    loop {
        let frame = raw_reader.recv().expect("the pong before EOF");
        if frame.opcode == 0xA {
            assert_eq!(frame.payload, b"are you there");
            break;
        }
        data_frames += 1;
        assert!(started.elapsed() < WAIT);
    }
    // Everything published after the pong was queued must not exceed what was published.
    assert!(data_frames < sent, "some messages were dropped, so fewer arrived before the pong: {data_frames}");
    raw_reader.send(0x88, &1000u16.to_be_bytes());
    drop(raw_reader);
    let line = server.wait_log(" dropped=");
    let dropped: u64 = line.split(" dropped=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(dropped > 0, "{line}");
}

/// Raises this process's descriptor limit (the test opens 10,000 sockets).
fn raise_nofile(want: u64) -> bool {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        // Never lower it: tests run in parallel and each asks for its own need.
        lim.rlim_cur = lim.rlim_cur.max(lim.rlim_max.min(want));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur >= want
    }
}

#[test]
fn fan_out_to_ten_thousand_subscribers_delivers_each_message_once() {
    const N: usize = 10_000;
    const MESSAGES: usize = 5;
    assert!(raise_nofile(N as u64 + 200), "need {} descriptors", N + 200);
    let server = Server::with_config("[server]\nmax_connections = 20000\n", &[]);
    let url = server.url("/chat/big");
    let mut subs: Vec<Ws> = (0..N).map(|_| ws_open(&url)).collect();
    let mut publisher = ws_open(&server.url("/chat/big"));
    for i in 0..MESSAGES {
        publisher.send_text(&format!("m{i}")).unwrap();
    }
    publisher.send_text("end").unwrap();
    for (n, s) in subs.iter_mut().enumerate() {
        for i in 0..MESSAGES {
            assert_eq!(ws_next(s), WsMessage::Text(format!("m{i}")), "subscriber {n}");
        }
        assert_eq!(ws_text(s), "end", "subscriber {n}: exactly once");
    }
    for i in 0..MESSAGES {
        assert_eq!(ws_text(&mut publisher), format!("m{i}"));
    }
}

/// A publisher that floods a big room is served in slices (a fan-out budget per turn): every
/// member still gets every message once, in order, and others are served meanwhile.
#[test]
fn flooding_a_big_room_delivers_everything_in_order() {
    const MEMBERS: usize = 1000;
    const MESSAGES: usize = 2000;
    assert!(raise_nofile(MEMBERS as u64 + 200));
    let server = Server::start(&[]);
    let url = server.url("/chat/flood");
    let mut members: Vec<Ws> = (0..MEMBERS).map(|_| ws_open(&url)).collect();
    let mut publisher = Raw::connect(server.addr, "/chat/flood");
    // All messages in one write: far more deliveries than one turn may make.
    let burst: Vec<u8> = (0..MESSAGES).flat_map(|i| masked_frame(0x81, format!("{i:05}").as_bytes())).collect();
    publisher.send_raw(&burst);
    // Meanwhile the loop still serves others.
    let mut echo = ws_open(&server.url("/echo"));
    echo.send_text("served").unwrap();
    assert_eq!(ws_text(&mut echo), "served");
    for (n, m) in members.iter_mut().enumerate() {
        for i in 0..MESSAGES {
            assert_eq!(ws_text(m), format!("{i:05}"), "member {n}");
        }
    }
    for i in 0..MESSAGES {
        let f = publisher.recv().expect("a delivery");
        assert_eq!(f.payload, format!("{i:05}").into_bytes(), "the publisher");
    }
}

/// A chat member that publishes and never reads has its own copies piling up like any reply:
/// past `backpressure_high` the server stops reading it (TCP pushes back on the publisher),
/// so they never pass `max_backpressure` and it is not closed as a slow consumer; once it
/// reads, every copy is there, in order.
#[test]
fn a_publisher_that_does_not_read_is_held_not_dropped() {
    const MESSAGES: u32 = 16_000;
    let server = Server::with_config(
        "[[route]]\npath = \"/chat\"\napp = \"chat\"\nbackpressure_high = \"64KiB\"\n\
         max_backpressure = \"256KiB\"\non_backpressure = \"close\"\n",
        &[],
    );
    let stream = slow_subscriber(&server, "/chat");
    let mut writer = stream.try_clone().unwrap();
    // 16 MiB: more than the kernel buffers between the two hold, so the server must hold.
    let sending = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let mut payload = format!("{i:08}").into_bytes();
            payload.resize(1024, b'.');
            writer.write_all(&masked_frame(0x82, &payload)).unwrap();
        }
        writer.write_all(&masked_frame(0x81, b"end")).unwrap();
    });
    // Reading starts late: whatever the server queued meanwhile stayed within its bounds.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut reader = Raw::from_stream(stream);
    for i in 0..MESSAGES {
        let frame = reader.recv().unwrap_or_else(|| panic!("copy {i}: the connection ended"));
        assert_eq!(frame.opcode, 2, "copy {i}: {:?}", frame.close_code());
        assert_eq!(&frame.payload[..8], format!("{i:08}").as_bytes());
    }
    assert_eq!(reader.recv().map(|f| f.payload), Some(b"end".to_vec()));
    sending.join().unwrap();
}
