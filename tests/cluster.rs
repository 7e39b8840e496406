//! `[cluster]`: two wsgate nodes and one real Redis (Debian's `redis-server`, started here on
//! a loopback port): pub/sub, chat and the broker across nodes, Redis going away and coming
//! back, a Redis that stops answering, AUTH and TLS.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A redis-server of our own, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// The port `PING` is sent to when checking it is up (the TLS port has none in clear).
    plain_port: Option<u16>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        Redis::with_args(port, vec!["--port".into(), port.to_string()], Some(port))
    }

    fn with_args(port: u16, extra: Vec<String>, plain_port: Option<u16>) -> Redis {
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].iter().map(|s| s.to_string()).collect();
        args.extend(extra);
        let mut r = Redis { child: None, port, args, plain_port };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new(REDIS_SERVER.executable())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let up = match self.plain_port {
                Some(p) => redis_command(p, &["PING"]).is_some_and(|r| r.contains("PONG") || r.contains("NOAUTH")),
                None => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if up {
                return;
            }
            assert!(start.elapsed() < WAIT, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// One command in RESP over a fresh connection; the raw reply.
fn redis_command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Subscribers Redis counts on a channel (each subscribing worker is one).
fn numsub(redis: &Redis, channel: &str) -> u64 {
    let reply = redis_command(redis.port, &["PUBSUB", "NUMSUB", channel]).unwrap_or_default();
    reply.lines().last().and_then(|l| l.strip_prefix(':')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn node(redis_url: &str, extra: &str) -> Server {
    Server::with_config(
        &format!(
            "[server]\nworkers = 2\nbalance = \"handoff\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
[cluster]\nredis = \"{redis_url}\"\nping_interval = \"200ms\"\nping_timeout = \"1s\"\n\
reconnect_min = \"50ms\"\nreconnect_max = \"500ms\"\n{extra}\n\
[[route]]\npath = \"/ps\"\napp = \"pubsub\"\n\
[[route]]\npath = \"/chat/*\"\napp = \"chat\"\n\
[[route]]\npath = \"/broker\"\napp = \"broker\"\nclient_publish = true\n"
        ),
        &[],
    )
}

fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

fn wait_metric(server: &Server, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let start = Instant::now();
    loop {
        let v = metric(server, name);
        if ok(v) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "{name} = {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LINKS_UP: &str = "wsgate_cluster_links_up";

/// Workers of `server` with at least one topic.
fn workers_with_topics(server: &Server) -> u64 {
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    text.lines().filter(|l| l.starts_with("wsgate_worker_pubsub_topics{")).filter(|l| !l.ends_with(" 0")).count() as u64
}

/// Waits until Redis has the subscriptions of every worker (of `nodes`) holding the topic.
fn wait_subscribed(redis: &Redis, nodes: &[&Server], channel: &str) {
    let start = Instant::now();
    loop {
        let want: u64 = nodes.iter().map(|n| workers_with_topics(n)).sum();
        let have = numsub(redis, channel);
        if want > 0 && have == want {
            return;
        }
        assert!(start.elapsed() < WAIT, "{channel}: {have} subscribers at Redis, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn subscribe(server: &Server, topic: &str) -> Ws {
    let mut ws = ws_open(&server.url("/ps"));
    ws.send_text(&format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#)).unwrap();
    assert!(ws_text(&mut ws).contains("subscribed"));
    ws
}

fn publish(ws: &mut Ws, topic: &str, data: &str) {
    ws.send_text(&format!(r#"{{"op":"publish","topic":"{topic}","data":"{data}"}}"#)).unwrap();
}

fn published(topic: &str, data: &str) -> String {
    format!(r#"{{"topic":"{topic}","data":"{data}"}}"#)
}

#[test]
fn pubsub_and_chat_span_nodes_without_duplicates_or_echo() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), ""), node(&redis.url(), ""));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut subs: Vec<Ws> =
        (0..3).map(|_| subscribe(&a, "news")).chain((0..3).map(|_| subscribe(&b, "news"))).collect();
    wait_subscribed(&redis, &[&a, &b], "wsgate:t:news");
    let mut pub_a = ws_open(&a.url("/ps"));
    let mut pub_b = ws_open(&b.url("/ps"));
    for k in 0..30 {
        publish(&mut pub_a, "news", &format!("a{k}"));
    }
    // Each subscriber, on either node, gets A's messages once each and in order.
    for s in &mut subs {
        for k in 0..30 {
            assert_eq!(ws_text(s), published("news", &format!("a{k}")));
        }
    }
    publish(&mut pub_b, "news", "from b");
    publish(&mut pub_a, "news", "end");
    for s in &mut subs {
        let mut got = vec![ws_text(s), ws_text(s)];
        got.sort();
        assert_eq!(got, [published("news", "end"), published("news", "from b")]);
    }

    // A chat room with members on both nodes.
    let mut members: Vec<Ws> =
        (0..3).map(|_| ws_open(&a.url("/chat/lobby"))).chain((0..3).map(|_| ws_open(&b.url("/chat/lobby")))).collect();
    wait_subscribed(&redis, &[&a, &b], "wsgate:t:/chat/lobby");
    for (i, m) in members.iter_mut().enumerate() {
        m.send_text(&format!("hi from {i}")).unwrap();
    }
    for m in &mut members {
        let mut got: Vec<String> = (0..6).map(|_| ws_text(m)).collect();
        got.sort();
        let want: Vec<String> = (0..6).map(|i| format!("hi from {i}")).collect();
        assert_eq!(got, want);
    }
    // A room with one member on each node: each is its room's only member where it is, and
    // still what it says reaches the other node (and comes back to it once).
    let mut pair = [ws_open(&a.url("/chat/pair")), ws_open(&b.url("/chat/pair"))];
    // One worker on each node holds the room.
    let start = Instant::now();
    while numsub(&redis, "wsgate:t:/chat/pair") != 2 {
        assert!(start.elapsed() < WAIT, "the pair's room is not subscribed at Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, m) in pair.iter_mut().enumerate() {
        m.send_text(&format!("pair {i}")).unwrap();
    }
    for m in &mut pair {
        let mut got = vec![ws_text(m), ws_text(m)];
        got.sort();
        assert_eq!(got, ["pair 0", "pair 1"]);
    }
    // Counted: A published 31 topic messages and 4 chat lines through Redis.
    assert!(metric(&a, "wsgate_cluster_messages_total{direction=\"published\"}") >= 35.0);
    assert!(metric(&b, "wsgate_cluster_messages_total{direction=\"received\"}") >= 35.0);
    assert_eq!(metric(&a, "wsgate_cluster_publish_dropped_total"), 0.0);

    // The last subscriber of a topic gone: the node unsubscribes.
    drop(subs);
    let start = Instant::now();
    while numsub(&redis, "wsgate:t:news") != 0 {
        assert!(start.elapsed() < WAIT, "still subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn broker_messages_span_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), ""), node(&redis.url(), ""));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut sender = ws_open(&a.url("/broker?RegisterToken=abc1"));
    let mut near = ws_open(&a.url("/broker?RegisterToken=group/near"));
    let mut far: Vec<Ws> =
        ["abc2", "group/x", "group/y"].iter().map(|t| ws_open(&b.url(&format!("/broker?RegisterToken={t}")))).collect();
    // Registration is synchronous on B's side; one echo round trip each makes sure.
    for ws in &mut far {
        ws.send_text("Echo:ready").unwrap();
        assert_eq!(ws_text(ws), "ready");
    }
    sender.send_text("abc2,group/|hello").unwrap();
    assert_eq!(ws_text(&mut near), "hello");
    for ws in &mut far {
        assert_eq!(ws_text(ws), "hello");
    }
    // The sender holds abc1, not named: nothing for it (its next message is its own echo).
    sender.send_text("Echo:x").unwrap();
    assert_eq!(ws_text(&mut sender), "x");
}

#[test]
fn redis_restarted_mid_session() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis.url(), ""), node(&redis.url(), ""));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut on_a = subscribe(&a, "t");
    let mut on_b = subscribe(&b, "t");
    wait_subscribed(&redis, &[&a, &b], "wsgate:t:t");
    let mut publisher = ws_open(&a.url("/ps"));
    publish(&mut publisher, "t", "before");
    assert_eq!(ws_text(&mut on_a), published("t", "before"));
    assert_eq!(ws_text(&mut on_b), published("t", "before"));

    redis.kill();
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 0.0);
    }
    // Local delivery goes on; what would have crossed is lost, and counted.
    publish(&mut publisher, "t", "during");
    assert_eq!(ws_text(&mut on_a), published("t", "during"));
    wait_metric(&a, "wsgate_cluster_publish_dropped_total", |v| v >= 1.0);

    redis.spawn();
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    wait_subscribed(&redis, &[&a, &b], "wsgate:t:t");
    publish(&mut publisher, "t", "after");
    assert_eq!(ws_text(&mut on_a), published("t", "after"));
    // B missed "during" (at-most-once) and gets "after".
    assert_eq!(ws_text(&mut on_b), published("t", "after"));
    for n in [&a, &b] {
        assert!(metric(n, "wsgate_cluster_reconnects_total") >= 2.0);
        assert!(metric(n, "wsgate_cluster_unsubscribed_seconds_total") > 0.0);
    }
}

#[test]
fn a_silent_redis_is_found_by_the_probe() {
    let redis = Redis::start();
    let a = node(&redis.url(), "");
    wait_metric(&a, LINKS_UP, |v| v == 4.0);
    // SIGSTOP: the sockets stay open, nothing answers.
    redis.signal(libc::SIGSTOP);
    wait_metric(&a, "wsgate_cluster_probe_failures_total", |v| v >= 2.0);
    assert!(metric(&a, LINKS_UP) < 4.0);
    redis.signal(libc::SIGCONT);
    wait_metric(&a, LINKS_UP, |v| v == 4.0);
}

#[test]
fn auth_and_tls() {
    let dir = std::env::temp_dir().join(format!("wsgate-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key): (PathBuf, PathBuf) = self_signed(&dir, "cert", "localhost");
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret:with@odd/chars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let redis = Redis::with_args(port, args, None);
    let ca = format!("ca = \"{}\"", cert.display());
    let url = format!("rediss://:s3cret%3Awith%40odd%2Fchars@localhost:{}", redis.port);
    let (a, b) = (node(&url, &ca), node(&url, &ca));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut sub = subscribe(&b, "secure");
    // No NUMSUB in clear here: publish until B's subscription is in place.
    let mut publisher = ws_open(&a.url("/ps"));
    let start = Instant::now();
    loop {
        publish(&mut publisher, "secure", "hello");
        match sub.receive(Some(Duration::from_millis(200))) {
            Ok(WsMessage::Text(t)) => {
                assert_eq!(t, published("secure", "hello"));
                break;
            }
            Ok(_) | Err(wsgate::client::ClientError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < WAIT, "nothing crossed over TLS");
    }

    // A wrong password: the hello is refused, and the links stay down.
    let bad = node(&format!("rediss://:wrong@localhost:{}", redis.port), &ca);
    bad.wait_log("refused the hello");
    assert_eq!(metric(&bad, LINKS_UP), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_cluster_settings_are_refused_with_the_key() {
    for (text, want) in [
        ("redis = \"http://127.0.0.1\"", "cluster.redis: scheme \"http\""),
        ("redis = \"redis://\"", "cluster.redis:"),
        ("redis = \"redis://127.0.0.1/x\"", "database \"x\""),
        ("redis = \"redis://127.0.0.1\"\nca = \"x.pem\"", "cluster.ca: only for rediss://"),
        ("redis = \"redis://127.0.0.1\"\nping_timeout = 0", "ping_timeout: must be more than zero"),
        ("redis = \"redis://127.0.0.1\"\nreconnect_max = \"1ms\"", "reconnect_max at least"),
        ("redis = \"redis://127.0.0.1\"\nmax_pending = 10", "max_pending: must be at least 64 KiB"),
        ("redis = \"redis://127.0.0.1\"\nunknown = 1", "unknown field"),
    ] {
        let err = wsgate::config::Config::parse(&format!("[server]\n\n[cluster]\n{text}\n")).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
        if !want.contains("unknown") {
            assert!(err.contains("line 3"), "{text}: {err}");
        }
    }
    let ok = wsgate::config::Config::parse("[cluster]\nredis = \"redis://u:p%40ss@[::1]:7000/2\"\n").unwrap();
    let redis = ok.cluster.unwrap().redis;
    assert_eq!(
        (redis.host.as_str(), redis.port, redis.username.as_deref(), redis.password.as_deref(), redis.db),
        ("::1", 7000, Some("u"), Some("p@ss"), 2)
    );
    // The password stays out of what is printed.
    assert_eq!(format!("{redis:?}"), "redis://[::1]:7000/2");
}

#[test]
fn hostile_redis_peers_fail_the_link_and_nothing_else() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = Arc::new(AtomicUsize::new(0));
    let accept_mode = Arc::clone(&mode);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mode = accept_mode.load(Ordering::Relaxed);
            std::thread::spawn(move || {
                let _ = match mode {
                    0 => stream.write_all(b"this is not redis\r\n"),
                    1 => Ok(()), // silent: reads nothing, answers nothing
                    _ => {
                        // A bulk string that claims a gigabyte, then keeps coming.
                        let _ = stream.write_all(b"$1000000000\r\n");
                        let chunk = vec![b'x'; 64 << 10];
                        (0..16).try_for_each(|_| stream.write_all(&chunk))
                    }
                };
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let server = Server::with_config(
        &format!(
            "[server]\n[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_message_size = \"64KiB\"\n\
[cluster]\nredis = \"redis://127.0.0.1:{port}\"\nping_timeout = \"300ms\"\nreconnect_min = \"20ms\"\n\
reconnect_max = \"100ms\"\n[[route]]\npath = \"/echo\"\napp = \"echo\"\n"
        ),
        &[],
    );
    let mut echo = ws_open(&server.url("/echo"));
    for (m, why) in [(0, "not RESP2"), (1, "no answer to the hello within 300ms"), (2, "a reply larger than")] {
        mode.store(m, Ordering::Relaxed);
        server.wait_log(why);
        echo.send_text(why).unwrap();
        assert_eq!(ws_text(&mut echo), why);
    }
    assert_eq!(metric(&server, LINKS_UP), 0.0);
}

// ---- Topics with history across nodes: Redis streams ----

const HISTORY: &str = "[[history]]\ntopics = [\"news*\"]\nsize = 10000\nttl = 600\n\
[[history]]\ntopics = [\"short\"]\nsize = 10\nttl = 600\n\
[[route]]\npath = \"/psh\"\napp = \"pubsub\"\nclient_history = true\n";

/// Subscribes (with `recover` if given) and returns the answer.
fn subscribe_at(ws: &mut Ws, topic: &str, recover: Option<(&str, u64)>) -> serde_json::Value {
    recovering(ws, topic, recover).0
}

/// Subscribes; the answer, and the offsets of what was recovered before it.
fn recovering(ws: &mut Ws, topic: &str, recover: Option<(&str, u64)>) -> (serde_json::Value, Vec<u64>) {
    let mut req = serde_json::json!({"op":"subscribe","topic":topic});
    if let Some((epoch, offset)) = recover {
        req["recover"] = serde_json::json!({"epoch":epoch,"offset":offset});
    }
    ws.send_text(&req.to_string()).unwrap();
    let mut recovered = Vec::new();
    loop {
        let v = ws_json(ws);
        if v["op"] == "subscribed" {
            return (v, recovered);
        }
        recovered.push(v["offset"].as_u64().unwrap_or_else(|| panic!("{v}")));
    }
}

/// Publishes `{"n":1}`..`{"n":count}` from a thread, one every `pause`.
fn publisher(url: String, topic: &'static str, count: u64, pause: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut ws = ws_open(&url);
        for n in 1..=count {
            ws.send_text(&serde_json::json!({"op":"publish","topic":topic,"data":{"n":n}}).to_string()).unwrap();
            std::thread::sleep(pause);
        }
        // Answered after every publish before it was taken.
        ws.send_text(r#"{"op":"subscribe","topic":"sync"}"#).unwrap();
        assert!(ws_text(&mut ws).contains("subscribed"));
    })
}

fn delivery(v: &serde_json::Value) -> (u64, u64) {
    (v["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {v}")), v["data"]["n"].as_u64().unwrap())
}

#[test]
fn history_across_nodes_a_client_that_reconnects_elsewhere_gets_exactly_what_it_missed() {
    const N: u64 = 1000;
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), HISTORY), node(&redis.url(), HISTORY));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut sub = ws_open(&b.url("/ps"));
    let answer = subscribe_at(&mut sub, "news", None);
    let (epoch, start) = (answer["epoch"].as_str().unwrap().to_string(), answer["offset"].as_u64().unwrap());
    let done = publisher(a.url("/ps"), "news", N, Duration::from_micros(1500));
    let mut seen = Vec::new();
    while seen.len() < 300 {
        seen.push(delivery(&ws_json(&mut sub)));
    }
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    // Back on the publisher's node this time.
    let mut sub = ws_open(&a.url("/ps"));
    let last = seen.last().unwrap().0;
    sub.send_text(
        &serde_json::json!({"op":"subscribe","topic":"news","recover":{"offset":last,"epoch":epoch}}).to_string(),
    )
    .unwrap();
    let mut answered = false;
    while seen.last().map(|d| d.1) != Some(N) {
        let v = ws_json(&mut sub);
        if v["op"] == "subscribed" {
            assert_eq!(v["recovered"], true, "{v}");
            assert_eq!(v["epoch"], epoch.as_str());
            answered = true;
            continue;
        }
        seen.push(delivery(&v));
    }
    assert!(answered);
    let want: Vec<(u64, u64)> = (1..=N).map(|n| (start + n, n)).collect();
    assert_eq!(seen, want, "every publication once, in order, numbered one after the other");
    done.join().unwrap();
    // Both nodes number from one sequence: a publication on B follows A's.
    let mut on_b = ws_open(&b.url("/psh"));
    subscribe_at(&mut on_b, "news", None);
    publish(&mut ws_open(&b.url("/ps")), "news", "from b");
    let v = ws_json(&mut sub);
    assert_eq!((v["offset"].as_u64(), v["data"].as_str()), (Some(start + N + 1), Some("from b")), "{v}");
    assert_eq!(ws_json(&mut on_b)["offset"].as_u64(), Some(start + N + 1));
    // The history op reads the stream, on either node.
    on_b.send_text(r#"{"op":"history","topic":"news","limit":2,"reverse":true}"#).unwrap();
    let h = ws_json(&mut on_b);
    assert_eq!(h["op"], "history", "{h}");
    let offsets: Vec<u64> =
        h["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [start + N + 1, start + N], "{h}");
}

#[test]
fn history_across_nodes_refusals_say_why() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis.url(), HISTORY), node(&redis.url(), HISTORY));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut sub = ws_open(&b.url("/ps"));
    let answer = subscribe_at(&mut sub, "short", None);
    let epoch = answer["epoch"].as_str().unwrap().to_string();
    let mut p = ws_open(&a.url("/ps"));
    for k in 0..30 {
        publish(&mut p, "short", &format!("m{k}"));
    }
    for _ in 0..30 {
        ws_json(&mut sub);
    }
    // Kept: 10. From 25 it recovers; from 5 it cannot.
    let mut late = ws_open(&a.url("/ps"));
    let (v, got) = recovering(&mut late, "short", Some((&epoch, 25)));
    assert_eq!((v["recovered"].as_bool(), v["offset"].as_u64()), (Some(true), Some(30)), "{v}");
    assert_eq!(got, [26, 27, 28, 29, 30]);
    let mut too_late = ws_open(&a.url("/ps"));
    let v = subscribe_at(&mut too_late, "short", Some((&epoch, 5)));
    assert_eq!(v["recovered"], false, "{v}");
    assert_eq!(v["reason"], "offset no longer in history", "{v}");
    assert_eq!(v["offset"], 30);
    let v = subscribe_at(&mut ws_open(&a.url("/ps")), "short", Some((&epoch, 31)));
    assert_eq!(v["reason"], "offset ahead of the topic", "{v}");

    // The admin API reads the stream on either node, and removes it.
    let admin = |node: &Server, method: &str, body: serde_json::Value| {
        let body = body.to_string();
        let (status, text) =
            http("POST", &node.admin_url(&format!("/api/{method}")), &[], Some(("application/json", body.as_bytes())));
        (status, serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default())
    };
    let (status, v) = admin(&b, "history", serde_json::json!({"topic":"short","limit":3,"reverse":true}));
    assert_eq!(status, 200, "{v}");
    let offsets: Vec<u64> =
        v["result"]["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!((offsets, &v["result"]["epoch"]), (vec![30, 29, 28], &serde_json::json!(epoch)), "{v}");
    let since = serde_json::json!({"offset":5,"epoch":epoch});
    assert_eq!(admin(&a, "history", serde_json::json!({"topic":"short","since":since})).0, 410);
    assert_eq!(admin(&a, "history", serde_json::json!({"topic":"plain"})).0, 404);
    let (status, v) = admin(&a, "history_remove", serde_json::json!({"topic":"short"}));
    assert_eq!((status, &v["result"]["removed"]), (200, &serde_json::json!(true)), "{v}");
    let (_, v) = admin(&b, "history", serde_json::json!({"topic":"short"}));
    assert_ne!(v["result"]["epoch"], epoch.as_str(), "removed: a new epoch {v}");
    assert_eq!(v["result"]["publications"], serde_json::json!([]));
    let (_, v) = admin(&b, "history_remove", serde_json::json!({"topic":"short"}));
    assert_eq!(v["result"]["removed"], true, "the read made a new epoch, now removed: {v}");

    // Redis restarts without persistence: the history is gone, a new epoch.
    redis.kill();
    redis.spawn();
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let v = subscribe_at(&mut ws_open(&b.url("/ps")), "short", Some((&epoch, 30)));
    assert_eq!(v["recovered"], false, "{v}");
    assert_eq!(v["reason"], "epoch changed: the topic's history was lost", "{v}");
    assert_ne!(v["epoch"], epoch.as_str());
    assert_eq!(v["offset"], 0);
}

#[test]
fn history_across_nodes_survives_a_redis_restart_mid_stream() {
    // Redis with its append-only file: what it acknowledged survives its restart.
    let dir = std::env::temp_dir().join(format!("wsgate-redis-aof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut redis = Redis::with_args(
        port,
        ["--port", &port.to_string(), "--appendonly", "yes", "--appendfsync", "always", "--dir", dir.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(port),
    );
    let (a, b) = (node(&redis.url(), HISTORY), node(&redis.url(), HISTORY));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut sub = ws_open(&b.url("/ps"));
    let start = subscribe_at(&mut sub, "news.r", None)["offset"].as_u64().unwrap();
    wait_subscribed(&redis, &[&b], "wsgate:t:news.r");
    const N: u64 = 600;
    let done = publisher(a.url("/ps"), "news.r", N, Duration::from_millis(2));
    let mut offsets = Vec::new();
    let mut ns = Vec::new();
    while offsets.len() < 100 {
        let (o, n) = delivery(&ws_json(&mut sub));
        offsets.push(o);
        ns.push(n);
    }
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    redis.spawn();
    done.join().unwrap();
    // Everything Redis numbered reaches the subscriber on the other node: each offset once,
    // in order. (A publication in flight when Redis died may be lost: never half-delivered.)
    let last_numbered = || -> u64 {
        let reply = redis_command(port, &["HGET", "wsgate:m:news.r", "offset"]).unwrap_or_default();
        reply.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    while offsets.last().copied() != Some(last_numbered()) || last_numbered() < start + N - 5 {
        assert!(Instant::now() < deadline, "got to {:?}, Redis numbered {}", offsets.last(), last_numbered());
        let (o, n) = delivery(&ws_json(&mut sub));
        offsets.push(o);
        ns.push(n);
    }
    let want: Vec<u64> = (start + 1..=offsets.last().copied().unwrap()).collect();
    assert_eq!(offsets, want, "no gap, no duplicate");
    let mut unique = ns.clone();
    unique.dedup();
    assert_eq!(unique, ns, "no publication twice");
    assert!(metric(&b, "wsgate_cluster_reconnects_total") >= 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_across_nodes_large_publications_are_read_a_few_at_a_time() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url(), HISTORY), node(&redis.url(), HISTORY));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut first = ws_open(&b.url("/ps"));
    let epoch = subscribe_at(&mut first, "news.big", None)["epoch"].as_str().unwrap().to_string();
    // 5 × 300 KB: more than a page (64 KiB) each, 1.5 MB in all.
    let big = "x".repeat(300_000);
    let mut p = ws_open(&a.url("/ps"));
    for _ in 0..5 {
        publish(&mut p, "news.big", &big);
    }
    for k in 1..=5 {
        assert_eq!(ws_json(&mut first)["offset"].as_u64(), Some(k));
    }
    let mut late = ws_open(&a.url("/ps"));
    let (v, got) = recovering(&mut late, "news.big", Some((&epoch, 0)));
    assert_eq!(v["recovered"], true, "{v}");
    assert_eq!(got, [1, 2, 3, 4, 5]);
    let mut reader = ws_open(&b.url("/psh"));
    reader.send_text(r#"{"op":"history","topic":"news.big","limit":5}"#).unwrap();
    let h = ws_json(&mut reader);
    let n = h["publications"].as_array().map_or(0, Vec::len);
    assert!((1..5).contains(&n) && h["more"] == true, "a read stops at its bytes: {n} {}", h["more"]);
}

fn presence_node(redis: &Redis) -> Server {
    Server::with_config(
        &format!(
            "[server]\nworkers = 2\nbalance = \"handoff\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
[cluster]\nredis = \"{}\"\nping_interval = \"200ms\"\nping_timeout = \"1s\"\n\
reconnect_min = \"50ms\"\nreconnect_max = \"500ms\"\npresence_ttl = \"2s\"\n\
[[route]]\npath = \"/ps\"\napp = \"pubsub\"\npresence = true\n",
            redis.url()
        ),
        &[],
    )
}

fn ask(ws: &mut Ws, req: serde_json::Value) -> serde_json::Value {
    ws.send_text(&req.to_string()).unwrap();
    ws_json(ws)
}

/// Every member of `topic` on every node (paged, `limit` a page), as (node, client, n).
fn members_across(ws: &mut Ws, topic: &str, limit: usize) -> Result<Vec<(String, String, u64)>, serde_json::Value> {
    let mut all = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let v = ask(ws, serde_json::json!({"op":"presence","topic":topic,"limit":limit,"after":after}));
        let Some(page) = v["members"].as_array() else { return Err(v) };
        assert!(page.len() <= limit);
        all.extend(page.iter().map(|m| {
            let node = m["node"].as_str().unwrap().to_string();
            (node, m["client"].as_str().unwrap().to_string(), m["info"]["n"].as_u64().unwrap_or(0))
        }));
        after = v["next"].clone();
        if after.is_null() {
            return Ok(all);
        }
    }
}

fn wait_members(server: &Server, ws: &mut Ws, topic: &str, want: usize) -> Vec<(String, String, u64)> {
    let start = Instant::now();
    loop {
        // A refusal (503 while Redis is away) is retried like a wrong count.
        let members = members_across(ws, topic, 4);
        if let Ok(members) = &members {
            if members.len() == want {
                return members.clone();
            }
        }
        assert!(start.elapsed() < WAIT, "{topic}: want {want} members: {members:?}\n{:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn presence_across_nodes_joins_leaves_and_a_dead_nodes_members_expire() {
    let mut redis = Redis::start();
    let (a, mut b) = (presence_node(&redis), presence_node(&redis));
    for n in [&a, &b] {
        wait_metric(n, LINKS_UP, |v| v == 4.0);
    }
    let mut watcher = ws_open(&a.url("/ps"));
    let v = ask(&mut watcher, serde_json::json!({"op":"subscribe","topic":"room","info":{"n":0},"join_leave":true}));
    assert_eq!(v["op"], "subscribed");
    assert_eq!(ws_json(&mut watcher)["op"], "join");
    let start = Instant::now();
    while numsub(&redis, "wsgate:t:\u{0}presence:room") == 0 {
        assert!(start.elapsed() < WAIT, "the presence feed's channel was never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Members on both nodes and both workers of each.
    let mut on_b = Vec::new();
    for n in 1..=6u64 {
        let mut ws = ws_open(&b.url("/ps"));
        assert_eq!(
            ask(&mut ws, serde_json::json!({"op":"subscribe","topic":"room","info":{"n":n}}))["op"],
            "subscribed"
        );
        let join = ws_json(&mut watcher);
        assert_eq!((join["op"].as_str(), join["member"]["info"]["n"].as_u64()), (Some("join"), Some(n)), "{join}");
        on_b.push(ws);
    }
    let mut on_a = Vec::new();
    for n in 7..=9u64 {
        let mut ws = ws_open(&a.url("/ps"));
        ask(&mut ws, serde_json::json!({"op":"subscribe","topic":"room","info":{"n":n}}));
        assert_eq!(ws_json(&mut watcher)["member"]["info"]["n"], n);
        on_a.push(ws);
    }
    let members = wait_members(&a, &mut watcher, "room", 10);
    let mut ns: Vec<u64> = members.iter().map(|m| m.2).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..=9).collect::<Vec<_>>(), "every member once, paged 4 at a time: {members:?}");
    let nodes: std::collections::BTreeSet<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(nodes.len(), 2, "members are named with their node");
    let v = ask(&mut watcher, serde_json::json!({"op":"presence_stats","topic":"room"}));
    assert_eq!((v["clients"].as_u64(), v["users"].as_u64()), (Some(10), Some(0)), "{v}");
    // The admin API on either node reads every node's members.
    let (status, text) =
        http("POST", &b.admin_url("/api/presence_stats"), &[], Some(("application/json", br#"{"topic":"room"}"#)));
    assert_eq!(
        (status, serde_json::from_str::<serde_json::Value>(&text).unwrap()["result"]["clients"].as_u64()),
        (200, Some(10))
    );
    let (status, text) =
        http("POST", &a.admin_url("/api/presence"), &[], Some(("application/json", br#"{"topic":"room","limit":7}"#)));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, v["result"]["members"].as_array().map(|m| m.len())), (200, Some(7)), "{v}");
    assert!(v["result"]["next"].is_string(), "{v}");

    // A leave on the other node is an event here.
    let mut leaving = on_b.pop().unwrap();
    ask(&mut leaving, serde_json::json!({"op":"unsubscribe","topic":"room"}));
    let leave = ws_json(&mut watcher);
    assert_eq!((leave["op"].as_str(), leave["member"]["info"]["n"].as_u64()), (Some("leave"), Some(6)), "{leave}");
    // Members outlive several ttls while their node renews them.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(wait_members(&a, &mut watcher, "room", 9).len(), 9);

    // Redis restarted without persistence: every node writes its members again.
    redis.kill();
    redis.spawn();
    wait_members(&a, &mut watcher, "room", 9);

    // A node killed outright leaves no leave event, but its members expire with its ttl.
    b.signal(libc::SIGKILL);
    b.wait_exit();
    let killed = Instant::now();
    wait_members(&a, &mut watcher, "room", 4);
    let gone_in = killed.elapsed();
    eprintln!("a killed node's members were gone in {gone_in:?}");
    assert!(gone_in < Duration::from_secs(2 + 3), "a dead node's members stayed {gone_in:?} (presence_ttl 2s)");
}
