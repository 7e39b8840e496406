//! Rate limits through the real binary: exact counts from token buckets (a burst sent in one
//! write, then the rate after a pause), drop with an error message and close with 1008, pubsub
//! operations, upgrades and open connections per client address under a connect flood, and
//! dry-run counting without refusing; every limit passed is in /metrics by name.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CONFIG: &str = "
[admin]
listen = \"127.0.0.1:0\"

[[route]]
path = \"/messages\"
app = \"echo\"
rate_messages = { rate = 1, burst = 10 }

[[route]]
path = \"/bytes\"
app = \"echo\"
rate_bytes = { rate = \"100B\", burst = \"100B\", action = \"close\" }

[[route]]
path = \"/dry\"
app = \"echo\"
rate_messages = { rate = 1, burst = 2, dry_run = true }

[[route]]
path = \"/ps\"
app = \"pubsub\"
rate_operations = { rate = 1, burst = 3 }

[[route]]
path = \"/upgrades\"
app = \"echo\"
rate_handshakes_per_ip = { rate = 1, burst = 5 }

[[route]]
path = \"/capped\"
app = \"echo\"
max_connections_per_ip = { max = 3 }

[[route]]
path = \"/free\"
app = \"echo\"
";

/// Sends `n` text messages in one write; reads `n` answers: how many came back as sent.
fn burst(ws: &mut Raw, n: usize, tag: &str) -> (usize, usize) {
    let mut wire = Vec::new();
    for i in 0..n {
        wire.extend_from_slice(&masked_frame(0x81, format!("{tag}{i}").as_bytes()));
    }
    ws.send_raw(&wire);
    let (mut echoed, mut refused) = (0, 0);
    for _ in 0..n {
        let f = ws.recv().expect("an answer for every message");
        let text = String::from_utf8(f.payload).unwrap();
        if text.starts_with(tag) {
            echoed += 1;
        } else {
            assert_eq!(text, r#"{"op":"error","code":429,"message":"rate limit: messages"}"#);
            refused += 1;
        }
    }
    (echoed, refused)
}

fn status_of(server: &Server, path: &str) -> (u16, String) {
    let response = http_exchange_head(server.addr, &upgrade_request(path, ""));
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

#[test]
fn message_buckets_give_their_burst_then_their_rate_exactly() {
    let server = Server::with_config(CONFIG, &[]);
    let mut ws = Raw::connect(server.addr, "/messages");
    assert_eq!(burst(&mut ws, 30, "a"), (10, 20));
    // One token a second: after 2.5 s, two.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(burst(&mut ws, 5, "b"), (2, 3));
    // Another connection has its own bucket.
    let mut other = Raw::connect(server.addr, "/messages");
    assert_eq!(burst(&mut other, 12, "c"), (10, 2));
    // Dry run: everything through, the excess counted.
    let mut dry = Raw::connect(server.addr, "/dry");
    let mut wire = Vec::new();
    for i in 0..7 {
        wire.extend_from_slice(&masked_frame(0x81, format!("d{i}").as_bytes()));
    }
    dry.send_raw(&wire);
    for i in 0..7 {
        assert_eq!(dry.recv().unwrap().payload, format!("d{i}").as_bytes());
    }
    // Routes without limits are untouched.
    let mut free = Raw::connect(server.addr, "/free");
    let mut wire = Vec::new();
    for i in 0..100 {
        wire.extend_from_slice(&masked_frame(0x81, format!("f{i}").as_bytes()));
    }
    free.send_raw(&wire);
    for i in 0..100 {
        assert_eq!(free.recv().unwrap().payload, format!("f{i}").as_bytes());
    }
    wait_metrics(
        &server,
        &[
            "wsgate_rate_limited_total{limit=\"messages\",action=\"drop\"} 25",
            "wsgate_rate_limited_total{limit=\"messages\",action=\"dry_run\"} 5",
        ],
    );
}

#[test]
fn a_byte_limit_that_closes_and_pubsub_operations() {
    let server = Server::with_config(CONFIG, &[]);
    let mut ws = Raw::connect(server.addr, "/bytes");
    ws.send(0x82, &[7; 60]);
    assert_eq!(ws.recv().unwrap().payload, vec![7; 60]);
    ws.send(0x82, &[8; 60]);
    assert_eq!(ws.expect_close(), Some(1008));
    server.wait_log("close=1008 (rate limit: bytes)");

    let mut ps = ws_open(&server.url("/ps"));
    let mut answers = Vec::new();
    for i in 0..5 {
        ps.send_text(&json!({"op":"subscribe","topic": format!("t{i}")}).to_string()).unwrap();
    }
    for _ in 0..5 {
        answers.push(ws_json(&mut ps));
    }
    let ok = answers.iter().filter(|v| v["op"] == "subscribed").count();
    let limited =
        answers.iter().filter(|v| **v == json!({"op":"error","code":429,"message":"rate limit: operations"})).count();
    assert_eq!((ok, limited), (3, 2), "{answers:?}");
    // Refusals for the rate do not count as bad requests: the client is still served.
    std::thread::sleep(Duration::from_millis(1100));
    ps.send_text(&json!({"op":"subscribe","topic":"later"}).to_string()).unwrap();
    assert_eq!(ws_json(&mut ps), json!({"op":"subscribed","topic":"later"}));
    wait_metrics(&server, &["wsgate_rate_limited_total{limit=\"bytes\",action=\"close\"} 1"]);
}

#[test]
fn upgrades_and_open_connections_per_address_under_a_connect_flood() {
    let server = Server::with_config(CONFIG, &[]);
    let statuses: Vec<u16> = (0..8).map(|_| status_of(&server, "/upgrades").0).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 101).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 3, "{statuses:?}");
    let (_, refused) = status_of(&server, "/upgrades");
    assert!(refused.contains("Retry-After: 1"), "{refused}");

    // The cap: three open at once from this address, however many try, on every worker.
    let held: Vec<Raw> = (0..3).map(|_| Raw::connect(server.addr, "/capped")).collect();
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| http_exchange_head(addr, &upgrade_request("/capped", "")))
                    .filter(|r| r.starts_with("HTTP/1.1 101"))
                    .count()
            })
        })
        .collect();
    let admitted: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, 0, "none past the cap while three are held");
    // A connection that goes gives its place back.
    drop(held);
    let start = std::time::Instant::now();
    let again: Vec<Raw> = loop {
        let tries: Vec<(u16, String)> = (0..3).map(|_| status_of(&server, "/capped")).collect();
        if tries.iter().all(|(s, _)| *s == 101) {
            break (0..3).map(|_| Raw::connect(server.addr, "/capped")).collect();
        }
        assert!(start.elapsed() < WAIT, "places never given back: {tries:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status_of(&server, "/capped").0, 429);
    drop(again);
    let metrics = http("GET", &server.admin_url("/metrics"), &[], None).1;
    let value = |labels: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("wsgate_rate_limited_total{{{labels}}}"))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("limit=\"handshakes_per_ip\",action=\"drop\""), 4);
    assert!(value("limit=\"connections_per_ip\",action=\"drop\"") >= 201);
}

#[test]
fn configuration_mistakes_name_the_key() {
    let check = |route: &str| -> String {
        let path = std::env::temp_dir().join(format!("wsgate-rate-{}.toml", std::process::id()));
        std::fs::write(&path, format!("[[route]]\npath = \"/r\"\n{route}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("-c")
            .arg(&path)
            .arg("--check-config")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(!out.status.success(), "accepted: {route}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(check("app = \"echo\"\nrate_messages = { rate = 0 }\n").contains("more than zero"));
    assert!(check("app = \"echo\"\nrate_messages = { rate = 1, action = \"ban\" }\n").contains("rate_messages.action"));
    assert!(check("app = \"echo\"\nrate_operations = { rate = 1 }\n").contains("only pubsub"));
    assert!(check("app = \"echo\"\nrate_handshakes_per_ip = { rate = 1, action = \"close\" }\n").contains("429"));
    assert!(check("app = \"echo\"\nrate_messages = { rate = 1, brust = 2 }\n").contains("brust"));
}
