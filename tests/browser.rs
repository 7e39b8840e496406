//! The demo page in a real browser (Debian's headless Chromium): its echo panel and its chat
//! panel work against the real server. The page's `?selftest` mode echoes a message and
//! reports what came back in the chat room, where this test listens.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use tungstenite::Message;

/// Chromium's binary, installing Debian's package first when it is missing and we may.
fn chromium() -> String {
    for name in ["chromium", "chromium-browser"] {
        if Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().is_ok_and(|o| o.status.success()) {
            return name.to_string();
        }
    }
    let root = wsgate::sys::privileges::is_root();
    assert!(root, "this test needs Chromium: apt-get install chromium");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .expect("apt-get");
    assert!(status.success(), "apt-get install chromium failed");
    "chromium".to_string()
}

#[test]
fn demo_page_echo_and_chat_panels_work_in_chromium() {
    let browser = chromium();
    let server = Server::start(&[]);
    let mut room = client(&server.url("/chat/selftest"));
    let profile = std::env::temp_dir().join(format!("wsgate-chromium-{}", std::process::id()));
    let mut chromium = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/?selftest&room=selftest&nick=chromium", server.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
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
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
}
