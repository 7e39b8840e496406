//! Presence on one node through the real binary, with two workers (members and watchers on
//! both): join and leave events, listing and paging, counts, members gone when their
//! connection goes (however it goes), the admin API, and where the route forbids it.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

const CONFIG: &str = "
[server]
workers = 2
balance = \"handoff\"

[admin]
listen = \"127.0.0.1:0\"

[[route]]
path = \"/ps\"
app = \"pubsub\"
presence = true

[[route]]
path = \"/plain\"
app = \"pubsub\"
";

fn ask(ws: &mut Ws, req: Value) -> Value {
    ws.send_text(&req.to_string()).unwrap();
    ws_json(ws)
}

fn stats(ws: &mut Ws, topic: &str) -> (u64, u64) {
    let v = ask(ws, json!({"op":"presence_stats","topic":topic}));
    assert_eq!(v["op"], "presence_stats", "{v}");
    (v["clients"].as_u64().unwrap(), v["users"].as_u64().unwrap())
}

/// Subscribes with `info`; the connection's id (from its own join event, which it watches).
fn member(server: &Server, topic: &str, n: u64) -> (Ws, String) {
    let mut ws = ws_open(&server.url("/ps"));
    let v = ask(&mut ws, json!({"op":"subscribe","topic":topic,"info":{"n":n},"join_leave":true}));
    assert_eq!(v, json!({"op":"subscribed","topic":topic}));
    let join = ws_json(&mut ws);
    assert_eq!((join["op"].as_str(), join["member"]["info"]["n"].as_u64()), (Some("join"), Some(n)), "{join}");
    let id = join["member"]["client"].as_str().unwrap().to_string();
    (ws, id)
}

/// Waits for `ws`'s next event (skipping nothing: events come in order).
fn event(ws: &mut Ws) -> (String, String, u64) {
    let v = ws_json(ws);
    let op = v["op"].as_str().unwrap_or_default().to_string();
    assert!(op == "join" || op == "leave", "{v}");
    let m = &v["member"];
    (op, m["client"].as_str().unwrap().to_string(), m["info"]["n"].as_u64().unwrap_or(0))
}

#[test]
fn joins_and_leaves_reach_watchers_on_every_worker() {
    let server = Server::with_config(CONFIG, &[]);
    let (mut watcher, watcher_id) = member(&server, "room", 1);
    // With handoff balance, consecutive clients land on both workers.
    let (mut b, b_id) = member(&server, "room", 2);
    let (c, c_id) = member(&server, "room", 3);
    assert_eq!(event(&mut watcher), ("join".into(), b_id.clone(), 2));
    assert_eq!(event(&mut watcher), ("join".into(), c_id.clone(), 3));
    assert_eq!(event(&mut b), ("join".into(), c_id.clone(), 3));
    assert_eq!(stats(&mut watcher, "room"), (3, 0));
    // A member that does not ask for events is listed, and gets none.
    let mut quiet = ws_open(&server.url("/ps"));
    assert_eq!(ask(&mut quiet, json!({"op":"subscribe","topic":"room"}))["op"], "subscribed");
    let (op, quiet_id, _) = event(&mut watcher);
    assert_eq!(op, "join");
    assert_eq!(event(&mut b), ("join".into(), quiet_id.clone(), 0));
    let v = ask(&mut quiet, json!({"op":"presence","topic":"room"}));
    assert_eq!(v["op"], "presence", "{v}");
    let listed: BTreeSet<String> =
        v["members"].as_array().unwrap().iter().map(|m| m["client"].as_str().unwrap().to_string()).collect();
    let want: BTreeSet<String> = [&watcher_id, &b_id, &c_id, &quiet_id].into_iter().cloned().collect();
    assert_eq!(listed, want, "{v}");
    assert_eq!(v["next"], Value::Null);
    let c_listed = v["members"].as_array().unwrap().iter().find(|m| m["client"] == c_id.as_str()).unwrap();
    assert_eq!(c_listed["info"], json!({"n":3}));
    assert!(c_listed["since"].as_u64().unwrap() > 1_700_000_000_000, "{c_listed}");
    // Unsubscribing, a close and a dropped socket are all leaves, each once.
    assert_eq!(ask(&mut b, json!({"op":"unsubscribe","topic":"room"}))["op"], "unsubscribed");
    assert_eq!(event(&mut watcher), ("leave".into(), b_id.clone(), 2));
    drop(c); // the TCP connection goes without a close frame
    assert_eq!(event(&mut watcher), ("leave".into(), c_id, 3));
    quiet.close(1000, "bye").unwrap();
    assert_eq!(event(&mut watcher), ("leave".into(), quiet_id, 0));
    assert_eq!(stats(&mut watcher, "room"), (1, 0));
    // b no longer watches either.
    assert_eq!(stats(&mut b, "room"), (1, 0));
}

#[test]
fn listings_page_by_cursor_and_counts_are_exact() {
    let server = Server::with_config(CONFIG, &[]);
    let mut clients = Vec::new();
    for n in 0..25u64 {
        let mut ws = ws_open(&server.url("/ps"));
        ask(&mut ws, json!({"op":"subscribe","topic":"big","info":{"n":n}}));
        clients.push(ws);
    }
    let mut reader = ws_open(&server.url("/ps"));
    // Joins reach the owner worker in order with everything else: poll for the last.
    let start = Instant::now();
    while stats(&mut reader, "big").0 != 25 {
        assert!(start.elapsed() < WAIT, "not every join arrived");
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let v = ask(&mut reader, json!({"op":"presence","topic":"big","limit":10,"after":after}));
        let members = v["members"].as_array().unwrap();
        assert!(members.len() <= 10, "{v}");
        seen.extend(members.iter().map(|m| m["info"]["n"].as_u64().unwrap()));
        pages += 1;
        after = v["next"].clone();
        if after.is_null() {
            break;
        }
    }
    assert_eq!(pages, 3);
    seen.sort_unstable();
    assert_eq!(seen, (0..25).collect::<Vec<_>>(), "every member once");
    // The admin API reads the same, and counts.
    let (status, body) =
        http("POST", &server.admin_url("/api/presence_stats"), &[], Some(("application/json", br#"{"topic":"big"}"#)));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], json!({"topic":"big","clients":25,"users":0}));
    let (status, body) = http(
        "POST",
        &server.admin_url("/api/presence"),
        &[],
        Some(("application/json", br#"{"topic":"big","limit":20}"#)),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["members"].as_array().unwrap().len(), 20);
    let next = v["result"]["next"].as_str().unwrap().to_string();
    let req = json!({"topic":"big","after":next}).to_string();
    let (_, body) = http("POST", &server.admin_url("/api/presence"), &[], Some(("application/json", req.as_bytes())));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["result"]["members"].as_array().unwrap().len(), &v["result"]["next"]), (5, &Value::Null));
    // An empty topic is no error.
    let (status, body) =
        http("POST", &server.admin_url("/api/presence"), &[], Some(("application/json", br#"{"topic":"none"}"#)));
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["result"]["members"].clone()), (200, json!([])));
    let (status, _) = http(
        "POST",
        &server.admin_url("/api/presence"),
        &[],
        Some(("application/json", br#"{"topic":"x","limit":0}"#)),
    );
    assert_eq!(status, 400);
    drop(clients);
    let start = Instant::now();
    while stats(&mut reader, "big").0 != 0 {
        assert!(start.elapsed() < WAIT, "members of closed connections stayed");
    }
}

#[test]
fn presence_is_refused_where_the_route_forbids_and_bad_info_is_refused() {
    let server = Server::with_config(CONFIG, &[]);
    let mut plain = ws_open(&server.url("/plain"));
    for req in [
        json!({"op":"presence","topic":"room"}),
        json!({"op":"presence_stats","topic":"room"}),
        json!({"op":"subscribe","topic":"room","info":{"a":1}}),
        json!({"op":"subscribe","topic":"room","join_leave":true}),
    ] {
        let v = ask(&mut plain, req.clone());
        assert_eq!((v["op"].as_str(), v["code"].as_u64()), (Some("error"), Some(403)), "{req}: {v}");
    }
    // A plain route's subscribers are nobody's members.
    assert_eq!(ask(&mut plain, json!({"op":"subscribe","topic":"room"}))["op"], "subscribed");
    let mut ps = ws_open(&server.url("/ps"));
    assert_eq!(stats(&mut ps, "room"), (0, 0));
    let big = "x".repeat(2000);
    for (req, code) in [
        (json!({"op":"subscribe","topic":"room","info":[1]}), 400),
        (json!({"op":"subscribe","topic":"room","info":"text"}), 400),
        (json!({"op":"subscribe","topic":"room","info":{"big":big}}), 413),
        (json!({"op":"presence","topic":"room","limit":0}), 400),
        (json!({"op":"presence","topic":"room","limit":1001}), 400),
        (json!({"op":"presence","topic":"room","after":7}), 400),
    ] {
        let v = ask(&mut ps, req.clone());
        assert_eq!((v["op"].as_str(), v["code"].as_u64()), (Some("error"), Some(code)), "{req}: {v}");
    }
    // None of those refused subscriptions made a member; a made-up cursor lists from the start.
    assert_eq!(stats(&mut ps, "room"), (0, 0));
    let v = ask(&mut ps, json!({"op":"presence","topic":"room","after":"zzz"}));
    assert_eq!(v["members"], json!([]), "{v}");
    // The presence feed cannot be named by a client.
    let v = ask(&mut ps, json!({"op":"subscribe","topic":"\u{0}presence:room"}));
    assert_eq!(v["op"], "error", "{v}");
}

#[test]
fn a_subscribe_unsubscribe_flood_with_a_watcher_that_never_reads_stays_bounded() {
    let server = Server::with_config(CONFIG, &[]);
    let (_watcher, _) = member(&server, "room", 1); // never read again
    let rss_before = server.rss_kib();
    let mut flooder = ws_open(&server.url("/ps"));
    let info = format!("{{\"pad\":\"{}\"}}", "x".repeat(900));
    for _ in 0..20_000 {
        flooder.send_text(&format!(r#"{{"op":"subscribe","topic":"room","info":{info}}}"#)).unwrap();
        flooder.send_text(r#"{"op":"unsubscribe","topic":"room"}"#).unwrap();
    }
    // Every request was answered, in order, and the flooder is a member no longer.
    let start = Instant::now();
    let mut answers = 0;
    while answers < 40_000 {
        let v = ws_json(&mut flooder);
        assert!(v["op"] == "subscribed" || v["op"] == "unsubscribed", "{v}");
        answers += 1;
        assert!(start.elapsed() < WAIT * 3);
    }
    let mut reader = ws_open(&server.url("/ps"));
    let start = Instant::now();
    while stats(&mut reader, "room").0 != 1 {
        assert!(start.elapsed() < WAIT, "the flooder's memberships stayed");
    }
    // 40,000 events of about 1 KiB went to a watcher that reads nothing: its queue is
    // bounded by the route's slow-consumer policy, not by the events.
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew {grown} KiB");
}
