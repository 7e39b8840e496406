//! `workers = N`: echo, chat, pub/sub, the broker and the admin API across reactor threads,
//! both ways of spreading connections, the per-process connection limit, and the drain.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn start(workers: usize, balance: &str, extra: &str) -> Server {
    Server::with_config(
        &format!(
            "[server]\nworkers = {workers}\nbalance = \"{balance}\"\n{ADMIN}\
[[route]]\npath = \"/echo\"\napp = \"echo\"\n\
[[route]]\npath = \"/chat/*\"\napp = \"chat\"\n\
[[route]]\npath = \"/ps\"\napp = \"pubsub\"\n\
[[route]]\npath = \"/broker\"\napp = \"broker\"\nclient_publish = true\n{extra}"
        ),
        &[],
    )
}

/// Open connections per worker, from `/metrics`.
fn per_worker(server: &Server) -> Vec<u64> {
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    let mut counts: Vec<(usize, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("wsgate_worker_connections_open{worker=\""))
        .map(|rest| {
            let (w, v) = rest.split_once("\"} ").unwrap();
            (w.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    counts.sort();
    counts.into_iter().map(|(_, v)| v).collect()
}

/// Waits until the server counts `n` open connections (the admin scrape included).
fn wait_open(server: &Server, n: u64) -> Vec<u64> {
    let start = Instant::now();
    loop {
        let counts = per_worker(server);
        if counts.iter().sum::<u64>() == n + 1 {
            return counts;
        }
        assert!(start.elapsed() < WAIT, "open connections {counts:?}, want {n} + the scrape");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_chat_and_pubsub_across_1_2_and_4_workers() {
    for workers in [1, 2, 4] {
        let server = start(workers, "reuseport", "");
        // Echo on many connections (the kernel spreads them over the workers).
        let mut echoes: Vec<Ws> = (0..24).map(|_| ws_open(&server.url("/echo"))).collect();
        for (i, ws) in echoes.iter_mut().enumerate() {
            ws.send_text(&format!("echo {i}")).unwrap();
        }
        for (i, ws) in echoes.iter_mut().enumerate() {
            assert_eq!(ws_next(ws), WsMessage::Text(format!("echo {i}")));
        }
        let counts = wait_open(&server, 24);
        assert_eq!(counts.len(), workers, "{counts:?}");
        if workers > 1 {
            // 24 connections all on one worker: odds of 1 in 4^23 with a fair hash.
            assert!(counts.iter().filter(|&&c| c > 0).count() >= 2, "{counts:?}");
        }
        drop(echoes);

        // Chat: every member gets every message exactly once, its own included.
        let mut members: Vec<Ws> = (0..12).map(|_| ws_open(&server.url("/chat/room"))).collect();
        wait_open(&server, 12);
        for (i, m) in members.iter_mut().enumerate() {
            m.send_text(&format!("from {i}")).unwrap();
        }
        for (j, m) in members.iter_mut().enumerate() {
            let mut got: Vec<String> = (0..12).map(|_| ws_text(m)).collect();
            got.sort();
            let mut want: Vec<String> = (0..12).map(|i| format!("from {i}")).collect();
            want.sort();
            assert_eq!(got, want, "member {j} with {workers} worker(s)");
        }
        drop(members);

        // Pub/sub: one publisher's messages arrive once each and in order at every subscriber.
        let mut subs: Vec<Ws> = (0..12).map(|_| ws_open(&server.url("/ps"))).collect();
        for s in &mut subs {
            s.send_text(r#"{"op":"subscribe","topic":"news"}"#).unwrap();
            let ack = ws_text(s);
            assert!(ack.contains("subscribed"), "{ack}");
        }
        let mut publisher = ws_open(&server.url("/ps"));
        for k in 0..50 {
            publisher.send_text(&format!(r#"{{"op":"publish","topic":"news","data":{k}}}"#)).unwrap();
        }
        for s in &mut subs {
            for k in 0..50 {
                let msg = ws_text(s);
                assert!(msg.contains(&format!("\"data\":{k}}}")), "want {k}, got {msg}");
            }
        }
        // Nothing more: exactly once.
        publisher.send_text(r#"{"op":"publish","topic":"news","data":"end"}"#).unwrap();
        for s in &mut subs {
            let msg = ws_text(s);
            assert!(msg.contains("\"end\""), "a duplicate before the end marker: {msg}");
        }
    }
}

#[test]
fn handoff_spreads_connections_evenly() {
    let server = start(4, "handoff", "");
    let clients: Vec<Ws> = (0..40).map(|_| ws_open(&server.url("/echo"))).collect();
    let counts = wait_open(&server, 40);
    // 41 with the scrape (on worker 0, the admin listener's): at most one apart.
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "{counts:?}");
    drop(clients);
}

#[test]
fn admin_api_sees_and_reaches_every_worker() {
    let server = start(4, "handoff", "");
    let mut subs: Vec<Ws> = (0..8).map(|_| ws_open(&server.url("/ps"))).collect();
    for s in &mut subs {
        s.send_text(r#"{"op":"subscribe","topic":"t"}"#).unwrap();
        ws_next(s);
    }
    // Every client listed, paged across workers without gaps or repeats.
    let mut ids = Vec::new();
    let mut offset = 0;
    loop {
        let (status, body) =
            http("GET", &server.admin_url(&format!("/api/clients?offset={offset}&limit=3")), &[], None);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"]["total"], 8, "{body}");
        for c in v["result"]["clients"].as_array().unwrap() {
            ids.push(c["id"].as_str().unwrap().to_string());
        }
        match v["result"]["next_offset"].as_u64() {
            Some(n) => offset = n as usize,
            None => break,
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (8, 8), "{ids:?}");

    // One topic, its subscribers summed over the workers.
    let (_, body) = http("GET", &server.admin_url("/api/topics"), &[], None);
    assert!(body.contains(r#"{"topic":"t","subscribers":8,"dropped":0}"#), "{body}");

    // Publish reaches every worker's subscribers, and says how many.
    let (status, body) = http(
        "POST",
        &server.admin_url("/api/publish"),
        &[],
        Some(("application/json", br#"{"topic":"t","data":"hi"}"#)),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"result":{"subscribers":8}}"#));
    for s in &mut subs {
        assert_eq!(ws_next(s), WsMessage::Text(r#"{"topic":"t","data":"hi"}"#.into()));
    }

    // Send by id reaches a client whichever worker serves it.
    for (i, id) in ids.iter().enumerate() {
        let body = format!(r#"{{"client":"{id}","data":"to {i}"}}"#);
        let (status, reply) =
            http("POST", &server.admin_url("/api/send"), &[], Some(("application/json", body.as_bytes())));
        assert_eq!((status, reply.as_str()), (200, r#"{"result":{"queued":true}}"#));
    }
    let mut got: Vec<String> = subs.iter_mut().map(ws_text).collect();
    got.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("to {i}")).collect();
    want.sort();
    assert_eq!(got, want);

    // /metrics: totals over the workers, and a line per worker.
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    assert!(text.lines().any(|l| l == "wsgate_workers 4"), "{text}");
    assert!(text.lines().any(|l| l == "wsgate_pubsub_subscriptions 8"), "{text}");
    let accepted: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("wsgate_worker_connections_accepted_total{worker=\""))
        .map(|r| r.split("} ").nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    let total: u64 =
        text.lines().find_map(|l| l.strip_prefix("wsgate_connections_accepted_total ")).unwrap().parse().unwrap();
    assert_eq!(accepted, total, "{text}");

    // Disconnect a topic's subscribers on every worker.
    let (status, body) = http(
        "POST",
        &server.admin_url("/api/disconnect"),
        &[],
        Some(("application/json", br#"{"topic":"t","code":4001,"reason":"bye"}"#)),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"result":{"disconnected":8}}"#));
    for s in &mut subs {
        assert_eq!(ws_closed(s), (Some(4001), "bye".into()));
    }
    // An id no worker has.
    let (status, _) = http(
        "POST",
        &server.admin_url("/api/send"),
        &[],
        Some(("application/json", br#"{"client":"12345","data":"x"}"#)),
    );
    assert_eq!(status, 404);
}

#[test]
fn broker_messages_reach_token_holders_on_every_worker() {
    let server = start(4, "handoff", "");
    let mut holders: HashMap<String, Ws> = HashMap::new();
    for name in ["abc1", "abc2", "group/a", "group/b", "group/c", "other"] {
        holders.insert(name.into(), ws_open(&server.url(&format!("/broker?RegisterToken={name}"))));
    }
    wait_open(&server, 6);
    let sender = holders.get_mut("abc1").unwrap();
    sender.send_text("abc2,group/|hello").unwrap();
    for name in ["abc2", "group/a", "group/b", "group/c"] {
        assert_eq!(ws_next(holders.get_mut(name).unwrap()), WsMessage::Text("hello".into()), "{name}");
    }
    // `other` got nothing: its next message is this echo.
    let other = holders.get_mut("other").unwrap();
    other.send_text("Echo:ping").unwrap();
    assert_eq!(ws_next(other), WsMessage::Text("ping".into()));
    // The form API's broadcast too.
    let (status, _) = http(
        "POST",
        &server.admin_url("/"),
        &[],
        Some(("application/x-www-form-urlencoded", b"method=broadcast&message=group/|all")),
    );
    assert_eq!(status, 200);
    for name in ["group/a", "group/b", "group/c"] {
        assert_eq!(ws_next(holders.get_mut(name).unwrap()), WsMessage::Text("all".into()), "{name}");
    }
}

#[test]
fn max_connections_is_per_process() {
    let server = start(2, "reuseport", "");
    drop(server);
    let server = Server::with_config(
        "[server]\nworkers = 2\nmax_connections = 10\n[[route]]\npath = \"/echo\"\napp = \"echo\"\n",
        &[],
    );
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(ws_open(&server.url("/echo")));
    }
    for _ in 0..4 {
        let head = http_exchange_head(server.addr, &upgrade_request("/echo", ""));
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    }
    drop(open.pop());
    // A place is free again (once the server saw the close).
    let start = Instant::now();
    loop {
        let head = http_exchange_head(server.addr, &upgrade_request("/echo", ""));
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(start.elapsed() < WAIT, "{head}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_every_worker() {
    let mut server = start(4, "handoff", "");
    let mut clients: Vec<Ws> = (0..16).map(|_| ws_open(&server.url("/echo"))).collect();
    wait_open(&server, 16);
    server.signal(libc::SIGTERM);
    for ws in &mut clients {
        assert_eq!(ws_closed(ws).0, Some(1001));
    }
    drop(clients);
    assert_eq!(server.wait_exit(), Some(0));
    for w in 0..4 {
        server.wait_log(&format!("worker {w} drained"));
    }
}

#[test]
fn bad_worker_counts_are_refused() {
    for (text, want) in [
        ("workers = 0", "server.workers: must be 1..=256"),
        ("workers = 300", "server.workers: must be 1..=256"),
        ("workers = \"many\"", "expected a number or \"auto\""),
        ("balance = \"random\"", "server.balance: \"random\""),
    ] {
        let err = wsgate::config::Config::parse(&format!("[server]\n{text}\n")).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    let auto = wsgate::config::Config::parse("[server]\nworkers = \"auto\"\n").unwrap();
    assert_eq!(auto.workers, std::thread::available_parallelism().unwrap().get().min(256));
}

#[test]
fn the_dashboard_feed_sums_every_worker() {
    let server = start(2, "handoff", "");
    let _clients: Vec<Ws> = (0..6).map(|_| ws_open(&server.url("/echo"))).collect();
    wait_open(&server, 6);
    let mut feed = ws_open(&format!("ws://{}/ws", server.admin.unwrap()));
    let start = Instant::now();
    loop {
        let text = ws_text(&mut feed);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "stats" && v["workers"] == 2 && v["by_state"]["connected"] == 7 {
            break; // six clients and the feed itself, on two workers
        }
        assert!(start.elapsed() < WAIT, "{text}");
    }
}
