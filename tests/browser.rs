//! The demo page in a real browser (Debian's headless Chromium): its echo panel and its chat
//! panel work against the real server. The page's `?selftest` mode echoes a message and
//! reports what came back in the chat room, where this test listens.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::time::Instant;

use common::*;
use tungstenite::Message;

#[test]
fn demo_page_echo_and_chat_panels_work_in_chromium() {
    let server = Server::start(&[]);
    let mut room = client(&server.url("/chat/selftest"));
    let _browser =
        Browser::launch("demo", &format!("http://{}/?selftest&room=selftest&nick=chromium", server.addr), &[], false);
    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "chromium: echo said: ping from the demo page") {
        assert!(started.elapsed() < WAIT * 3, "the page reported only {seen:?}");
        match room.read() {
            Ok(Message::Text(t)) => seen.push(t.as_str().to_string()),
            Ok(_) => {}
            Err(e) => panic!("chat: {e} (saw {seen:?})"),
        }
    }
    assert!(seen.contains(&"chromium joined".to_string()), "{seen:?}");
}

#[test]
fn chromium_negotiates_compression_and_mixes_with_plain_clients() {
    // The demo page's routes with permessage-deflate on; the room listener (tungstenite) does
    // not compress, Chromium does.
    let server = Server::with_config(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\napp = \"demo\"\n\
[[route]]\npath = \"/echo\"\napp = \"echo\"\ncompression = \"dedicated\"\n\
[[route]]\npath = \"/chat/*\"\napp = \"chat\"\ncompression = \"shared\"\ncompression_threshold = 0\n",
        &[],
    );
    let mut room = client(&server.url("/chat/selftest"));
    let _browser = Browser::launch(
        "deflate",
        &format!("http://{}/?selftest&room=selftest&nick=chromium", server.addr),
        &[],
        false,
    );
    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "chromium: echo said: ping from the demo page") {
        assert!(started.elapsed() < WAIT * 3, "the page reported only {seen:?}");
        match room.read() {
            Ok(Message::Text(t)) => seen.push(t.as_str().to_string()),
            Ok(_) => {}
            Err(e) => panic!("chat: {e} (saw {seen:?})"),
        }
    }
    // Chromium's two WebSockets (echo and chat) negotiated it; the listener did not.
    wait_metrics(&server, &["wsgate_compression_negotiated_total 2"]);
}
