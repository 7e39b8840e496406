//! Topics with history through the real binary: positions, recovery after a disconnect with
//! the publisher running throughout (on one worker and across workers), the reasons a
//! recovery is refused, paging, `history` reads and their permission.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn config(workers: usize, size: usize) -> String {
    format!(
        "
[server]
workers = {workers}
balance = \"handoff\"

[admin]
listen = \"127.0.0.1:0\"

[[history]]
topics = [\"news*\", \"big\"]
size = {size}
ttl = 600

[[route]]
path = \"/ps\"
app = \"pubsub\"
client_history = true

[[route]]
path = \"/ro\"
app = \"pubsub\"
client_publish = false
"
    )
}

/// Subscribes; the answer's position (epoch, offset).
fn subscribe(ws: &mut Ws, topic: &str) -> (String, u64) {
    ws.send_text(&json!({"op":"subscribe","topic":topic}).to_string()).unwrap();
    let v = ws_json(ws);
    assert_eq!(v["op"], "subscribed", "{v}");
    (v["epoch"].as_str().expect("an epoch").to_string(), v["offset"].as_u64().expect("an offset"))
}

/// A request answered after everything `ws` sent before: the server has taken it all.
fn sync(ws: &mut Ws) {
    ws.send_text(r#"{"op":"subscribe","topic":"sync"}"#).unwrap();
    assert_eq!(ws_json(ws), json!({"op":"subscribed","topic":"sync"}));
}

fn recover(ws: &mut Ws, topic: &str, epoch: &str, offset: u64) {
    ws.send_text(&json!({"op":"subscribe","topic":topic,"recover":{"offset":offset,"epoch":epoch}}).to_string())
        .unwrap();
}

/// Publishes `{"n":1}`..`{"n":count}` to `topic`, one every `pause`, from a thread of its
/// own; the receiver says when it is done.
fn publisher(url: String, topic: &'static str, count: u64, pause: Duration) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ws = ws_open(&url);
        for n in 1..=count {
            ws.send_text(&json!({"op":"publish","topic":topic,"data":{"n":n}}).to_string()).unwrap();
            std::thread::sleep(pause);
        }
        sync(&mut ws);
        let _ = tx.send(());
    });
    rx
}

/// A delivery's (offset, n).
fn delivery(v: &Value) -> (u64, u64) {
    (v["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {v}")), v["data"]["n"].as_u64().unwrap())
}

/// The scenario of the issue: a subscriber leaves mid-stream and comes back with its last
/// offset while the publisher goes on; across both connections it gets 1..=N, in order,
/// each once, with offsets one after the other.
fn disconnect_and_recover(workers: usize) {
    const N: u64 = 1000;
    let server = Server::with_config(&config(workers, 10_000), &[]);
    let mut sub = ws_open(&server.url("/ps"));
    let (epoch, start) = subscribe(&mut sub, "news");
    let done = publisher(server.url("/ps"), "news", N, Duration::from_micros(1500));
    let mut seen = Vec::new();
    while seen.len() < 300 {
        seen.push(delivery(&ws_json(&mut sub)));
    }
    drop(sub); // gone without a close: a lost network
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = ws_open(&server.url("/ps"));
    let last = seen.last().unwrap().0;
    recover(&mut sub, "news", &epoch, last);
    let mut answered = false;
    while seen.last().map(|d| d.1) != Some(N) {
        let v = ws_json(&mut sub);
        if v["op"] == "subscribed" {
            assert_eq!(v["recovered"], true, "{v}");
            assert_eq!(v["epoch"], epoch.as_str());
            assert!(v["offset"].as_u64().unwrap() >= last);
            answered = true;
            continue;
        }
        seen.push(delivery(&v));
    }
    assert!(answered, "the subscription was answered");
    let want: Vec<(u64, u64)> = (1..=N).map(|n| (start + n, n)).collect();
    assert_eq!(seen, want, "every publication once, in order, numbered one after the other");
    recv_within(&done);
}

#[test]
fn a_client_that_reconnects_gets_exactly_what_it_missed_one_worker() {
    disconnect_and_recover(1);
}

#[test]
fn a_client_that_reconnects_gets_exactly_what_it_missed_across_workers() {
    // Handed to the least loaded of three workers: the subscriber, the publisher and the
    // topic's owner are on different workers in most runs, whatever the run.
    disconnect_and_recover(3);
}

#[test]
fn many_publishers_on_many_workers_share_one_sequence() {
    let server = Server::with_config(&config(3, 10_000), &[]);
    let mut subs: Vec<Ws> = (0..3).map(|_| ws_open(&server.url("/ps"))).collect();
    let starts: Vec<u64> = subs.iter_mut().map(|s| subscribe(s, "news.multi").1).collect();
    let dones: Vec<_> =
        (0..3).map(|_| publisher(server.url("/ps"), "news.multi", 200, Duration::from_micros(200))).collect();
    for (sub, start) in subs.iter_mut().zip(starts) {
        let offsets: Vec<u64> = (0..600).map(|_| ws_json(sub)["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            offsets,
            (start + 1..=start + 600).collect::<Vec<_>>(),
            "the same offsets, in order, on every worker"
        );
    }
    for d in dones {
        recv_within(&d);
    }
}

#[test]
fn a_long_recovery_is_paged_and_ends_with_the_live_stream() {
    let server = Server::with_config(&config(2, 100_000), &[]);
    let mut sub = ws_open(&server.url("/ps"));
    let (epoch, start) = subscribe(&mut sub, "big");
    drop(sub);
    // 20,000 publications of ~300 bytes: 6 MB, far more than one page or max_backpressure.
    let pad = "x".repeat(300);
    let mut p = ws_open(&server.url("/ps"));
    for n in 1..=20_000u64 {
        p.send_text(&json!({"op":"publish","topic":"big","data":{"n":n,"pad":pad}}).to_string()).unwrap();
    }
    sync(&mut p);
    let mut sub = ws_open(&server.url("/ps"));
    recover(&mut sub, "big", &epoch, start);
    for n in 1..=20_000u64 {
        let v = match sub.receive(Some(WAIT)) {
            Ok(WsMessage::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("publication {n} of 20000: {other:?}"),
        };
        assert_eq!(delivery(&v), (start + n, n));
    }
    let v = ws_json(&mut sub);
    assert_eq!(
        (v["op"].as_str(), v["recovered"].as_bool(), v["offset"].as_u64()),
        (Some("subscribed"), Some(true), Some(start + 20_000))
    );
    p.send_text(&json!({"op":"publish","topic":"big","data":{"n":0}}).to_string()).unwrap();
    assert_eq!(delivery(&ws_json(&mut sub)), (start + 20_001, 0), "then live");
    wait_metrics(&server, &["wsgate_history_recovered_total 20000"]);
}

#[test]
fn recovery_refused_with_a_reason_and_the_position() {
    let server = Server::with_config(&config(2, 10), &[]);
    let mut sub = ws_open(&server.url("/ps"));
    let (epoch, start) = subscribe(&mut sub, "news");
    let mut p = ws_open(&server.url("/ps"));
    for n in 1..=50u64 {
        p.send_text(&json!({"op":"publish","topic":"news","data":{"n":n}}).to_string()).unwrap();
    }
    for n in 1..=50u64 {
        assert_eq!(delivery(&ws_json(&mut sub)).1, n);
    }
    let refused = |sub: &mut Ws, epoch: &str, offset: u64, reason: &str| {
        recover(sub, "news", epoch, offset);
        let v = ws_json(sub);
        assert_eq!(v["op"], "subscribed", "{v}");
        assert_eq!(v["recovered"], false, "{v}");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
        assert_eq!(v["offset"].as_u64(), Some(start + 50), "{v}");
        sub.send_text(r#"{"op":"unsubscribe","topic":"news"}"#).unwrap();
        assert_eq!(ws_json(sub)["op"], "unsubscribed");
    };
    let mut again = ws_open(&server.url("/ps"));
    // Only the last 10 are kept.
    refused(&mut again, &epoch, start + 5, "no longer in history");
    refused(&mut again, "another-epoch", start + 45, "epoch changed");
    refused(&mut again, &epoch, start + 51, "ahead");
    // Within history: the last 10.
    recover(&mut again, "news", &epoch, start + 40);
    for n in 41..=50 {
        assert_eq!(delivery(&ws_json(&mut again)), (start + n, n));
    }
    assert_eq!(ws_json(&mut again)["recovered"], true);
    wait_metrics(&server, &["wsgate_history_unrecovered_total 3"]);
}

#[test]
fn a_restart_changes_the_epoch() {
    let text = config(1, 100);
    let server = Server::with_config(&text, &[]);
    let mut sub = ws_open(&server.url("/ps"));
    let (epoch, _) = subscribe(&mut sub, "news");
    sub.send_text(r#"{"op":"publish","topic":"news","data":1}"#).unwrap();
    let (offset, _) = (ws_json(&mut sub)["offset"].as_u64().unwrap(), ());
    drop(sub);
    drop(server);
    let server = Server::with_config(&text, &[]);
    let mut sub = ws_open(&server.url("/ps"));
    recover(&mut sub, "news", &epoch, offset);
    let v = ws_json(&mut sub);
    assert_eq!(v["recovered"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("epoch changed"), "{v}");
    assert_ne!(v["epoch"].as_str().unwrap(), epoch);
    assert_eq!(v["offset"], 0);
}

#[test]
fn history_reads_page_and_are_refused_where_the_route_forbids() {
    let server = Server::with_config(&config(2, 100), &[]);
    let mut c = ws_open(&server.url("/ps"));
    for n in 1..=30u64 {
        c.send_text(&json!({"op":"publish","topic":"news","data":{"n":n}}).to_string()).unwrap();
    }
    sync(&mut c);
    let read = |c: &mut Ws, req: Value| {
        c.send_text(&req.to_string()).unwrap();
        ws_json(c)
    };
    let v = read(&mut c, json!({"op":"history","topic":"news","limit":5}));
    let ns: Vec<u64> = v["publications"].as_array().unwrap().iter().map(|p| p["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5], "{v}");
    assert_eq!(v["more"], true);
    let epoch = v["epoch"].as_str().unwrap().to_string();
    assert_eq!(v["offset"], 30);
    let v = read(&mut c, json!({"op":"history","topic":"news","limit":3,"reverse":true}));
    let offsets: Vec<u64> =
        v["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [30, 29, 28]);
    let v = read(&mut c, json!({"op":"history","topic":"news","since":{"offset":27,"epoch":epoch}}));
    assert_eq!(v["publications"].as_array().unwrap().len(), 3);
    assert_eq!(v["more"], false);
    let v = read(&mut c, json!({"op":"history","topic":"news","since":{"offset":27,"epoch":"old"}}));
    assert_eq!((v["op"].as_str(), v["code"].as_u64()), (Some("error"), Some(410)), "{v}");
    let v = read(&mut c, json!({"op":"history","topic":"plain"}));
    assert_eq!(v["code"], 404, "{v}");
    let v = read(&mut c, json!({"op":"history","topic":"news","limit":0}));
    assert_eq!(v["code"], 400, "{v}");
    let mut ro = ws_open(&server.url("/ro"));
    let v = read(&mut ro, json!({"op":"history","topic":"news"}));
    assert_eq!(v["code"], 403, "{v}");
    // Subscribing and recovering are for every client.
    recover(&mut ro, "news", &epoch, 28);
    assert_eq!(delivery(&ws_json(&mut ro)).1, 29);
    assert_eq!(delivery(&ws_json(&mut ro)).1, 30);
    assert_eq!(ws_json(&mut ro)["recovered"], true);
}

#[test]
fn topics_without_history_are_as_before() {
    let server = Server::with_config(&config(2, 100), &[]);
    let mut c = ws_open(&server.url("/ps"));
    c.send_text(r#"{"op":"subscribe","topic":"plain"}"#).unwrap();
    assert_eq!(ws_json(&mut c), json!({"op":"subscribed","topic":"plain"}));
    c.send_text(r#"{"op":"publish","topic":"plain","data":1}"#).unwrap();
    assert_eq!(ws_json(&mut c), json!({"topic":"plain","data":1}));
    let started = Instant::now();
    c.send_text(r#"{"op":"subscribe","topic":"news"}"#).unwrap();
    c.send_text(r#"{"op":"unsubscribe","topic":"news"}"#).unwrap();
    // Unsubscribed before (or after) the answer: never a member afterwards.
    let mut ops = Vec::new();
    while ops.last().map(String::as_str) != Some("unsubscribed") {
        ops.push(ws_json(&mut c)["op"].as_str().unwrap().to_string());
        assert!(started.elapsed() < WAIT);
    }
    c.send_text(r#"{"op":"publish","topic":"news","data":2}"#).unwrap();
    c.send_text(r#"{"op":"publish","topic":"plain","data":3}"#).unwrap();
    assert_eq!(ws_json(&mut c), json!({"topic":"plain","data":3}), "nothing from news");
}

#[test]
fn the_admin_api_reads_and_removes_history() {
    let server = Server::with_config(&config(2, 100), &[]);
    let mut c = ws_open(&server.url("/ps"));
    let (epoch, _) = subscribe(&mut c, "news");
    for n in 1..=3u64 {
        c.send_text(&json!({"op":"publish","topic":"news","data":{"n":n}}).to_string()).unwrap();
        assert_eq!(delivery(&ws_json(&mut c)).1, n);
    }
    let post = |path: &str, body: Value| {
        let (status, text) =
            http("POST", &server.admin_url(path), &[], Some(("application/json", body.to_string().as_bytes())));
        (status, serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    };
    let (status, v) = post("/api/history", json!({"topic":"news","since":{"offset":1,"epoch":epoch}}));
    assert_eq!(status, 200, "{v}");
    let r = &v["result"];
    assert_eq!((r["epoch"].as_str(), r["offset"].as_u64()), (Some(epoch.as_str()), Some(3)));
    assert_eq!(r["publications"], json!([{"offset":2,"data":{"n":2}},{"offset":3,"data":{"n":3}}]));
    assert_eq!(post("/api/history", json!({"topic":"plain"})).0, 404);
    assert_eq!(post("/api/history", json!({"topic":"news","since":{"offset":1,"epoch":"x"}})).0, 410);
    assert_eq!(post("/api/history", json!({"topic":"news","limit":5000})).0, 400);
    let (status, v) = post("/api/history_remove", json!({"topic":"news"}));
    assert_eq!((status, &v["result"]["removed"]), (200, &json!(true)));
    // The subscriber is still subscribed; the next publication starts a new epoch.
    c.send_text(r#"{"op":"publish","topic":"news","data":{"n":4}}"#).unwrap();
    assert_eq!(delivery(&ws_json(&mut c)), (1, 4));
    let mut again = ws_open(&server.url("/ps"));
    recover(&mut again, "news", &epoch, 3);
    let v = ws_json(&mut again);
    assert_eq!(v["recovered"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("epoch changed"));
}

#[test]
fn subscribe_unsubscribe_subscribe_in_one_write_recovers_once() {
    for workers in [1, 2, 3] {
        let server = Server::with_config(&config(workers, 1000), &[]);
        let mut c = ws_open(&server.url("/ps"));
        let (epoch, start) = subscribe(&mut c, "news");
        for n in 1..=600u64 {
            c.send_text(&json!({"op":"publish","topic":"news","data":{"n":n}}).to_string()).unwrap();
        }
        for n in 1..=600u64 {
            assert_eq!(delivery(&ws_json(&mut c)).1, n);
        }
        let mut again = ws_open(&server.url("/ps"));
        // Three requests in one batch: the first subscription's answer must not be taken for
        // the second's, nor the second's asked twice.
        let recover = json!({"op":"subscribe","topic":"news","recover":{"offset":start,"epoch":epoch}});
        again.send_text(r#"{"op":"subscribe","topic":"news"}"#).unwrap();
        again.send_text(r#"{"op":"unsubscribe","topic":"news"}"#).unwrap();
        again.send_text(&recover.to_string()).unwrap();
        // The first subscription may be answered before the unsubscribe is read.
        let mut v = ws_json(&mut again);
        if v["op"] == "subscribed" {
            assert!(v.get("recovered").is_none(), "{v}");
            v = ws_json(&mut again);
        }
        assert_eq!(v["op"], "unsubscribed", "{v}");
        for n in 1..=600u64 {
            let v = ws_json(&mut again);
            assert_eq!(delivery(&v), (start + n, n), "workers = {workers}: {v}");
        }
        let v = ws_json(&mut again);
        assert_eq!((v["op"].as_str(), v["recovered"].as_bool()), (Some("subscribed"), Some(true)), "{v}");
        c.send_text(r#"{"op":"publish","topic":"news","data":{"n":0}}"#).unwrap();
        assert_eq!(delivery(&ws_json(&mut again)), (start + 601, 0), "then live, once");
    }
}
