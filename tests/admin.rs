//! The admin listener against the real binary: keys and scopes, every JSON API method and the
//! websockets_pro form API, bad input (400, 404, 405, 411, 413), `/metrics` parsed by the
//! Prometheus client library's own parser and moving with traffic, and the configurations
//! refused at start.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const READ: &str = "read-key-0123456789abcdef";
const PUBLISH: &str = "publish-key-0123456789abcdef";
const ADMIN: &str = "admin-key-0123456789abcdef";

fn config() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
max_body = "4KiB"
[[admin.key]]
key = "{READ}"
scope = "read"
[[admin.key]]
key = "{PUBLISH}"
scope = "publish"
[[admin.key]]
key = "{ADMIN}"
scope = "admin"

[[route]]
path = "/pubsub"
app = "pubsub"
[[route]]
path = "/ws"
app = "broker"
[[route]]
path = "/echo"
app = "echo"
"#
    )
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn post_json(server: &Server, path: &str, key: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = bearer(key);
    let (status, text) =
        http("POST", &server.admin_url(path), &[("Authorization", &auth)], Some(("application/json", body.as_bytes())));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}")))
}

fn get_json(server: &Server, path: &str, key: &str) -> serde_json::Value {
    let (status, text) = http("GET", &server.admin_url(path), &[("X-API-Key", key)], None);
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn error_code(status: u16, body: &serde_json::Value) -> u16 {
    let code = body["error"]["code"].as_u64().unwrap_or_else(|| panic!("not a JSON error: {body}")) as u16;
    assert_eq!(code, status);
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    code
}

#[test]
fn keys_and_scopes() {
    let server = Server::with_config(&config(), &[]);
    let url = server.admin_url("/api/info");
    let (status, body) = http("GET", &url, &[], None);
    assert_eq!(status, 401);
    error_code(401, &serde_json::from_str(&body).unwrap());
    let (status, _) = http("GET", &url, &[("Authorization", "Bearer wrong-key-0123456789abcdef")], None);
    assert_eq!(status, 401);
    let (status, _) = http("GET", &url, &[("Authorization", &bearer(READ))], None);
    assert_eq!(status, 200);
    let (status, _) = http("GET", &format!("{url}?key={READ}"), &[], None);
    assert_eq!(status, 200);
    let publish = r#"{"topic":"t","data":1}"#;
    let (status, body) = post_json(&server, "/api/publish", READ, publish);
    assert_eq!(error_code(status, &body), 403);
    assert_eq!(post_json(&server, "/api/publish", PUBLISH, publish).0, 200);
    assert_eq!(post_json(&server, "/api/publish", ADMIN, publish).0, 200);
    let (status, body) = post_json(&server, "/api/disconnect", PUBLISH, r#"{"client":1}"#);
    assert_eq!(error_code(status, &body), 403);
    // The form API is guarded the same way (and answers with CORS headers).
    let (status, _) = http(
        "POST",
        &server.admin_url("/"),
        &[],
        Some(("application/x-www-form-urlencoded", b"method=registerToken&token=abc")),
    );
    assert_eq!(status, 401);
}

#[test]
fn bad_requests_get_json_errors() {
    let server = Server::with_config(&config(), &[]);
    for (method, path, body, status) in [
        ("POST", "/api/publish", "{", 400),
        ("POST", "/api/publish", r#"{"topic":"t"}"#, 400),
        ("POST", "/api/publish", r#"{"topic":"t","b64data":"%%%"}"#, 400),
        ("POST", "/api/send", r#"{"client":"nope","data":1}"#, 400),
        ("POST", "/api/nothing", "{}", 404),
        ("POST", "/nowhere", "{}", 404),
        ("GET", "/api/publish", "", 405),
        ("DELETE", "/metrics", "", 405),
    ] {
        let auth = bearer(ADMIN);
        let body = (!body.is_empty()).then_some(("application/json", body.as_bytes()));
        let (got, text) = http(method, &server.admin_url(path), &[("Authorization", &auth)], body);
        assert_eq!(got, status, "{method} {path}: {text}");
        error_code(status, &serde_json::from_str(&text).unwrap());
    }
    // Over max_body (4 KiB): 413 without reading it all.
    let big = format!(r#"{{"topic":"t","data":"{}"}}"#, "x".repeat(5000));
    let (status, text) = post_json(&server, "/api/publish", ADMIN, &big);
    assert_eq!(error_code(status, &text), 413);
    // Chunked bodies: 411.
    let admin = server.admin.unwrap();
    let reply = http_exchange(
        admin,
        format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 411"), "{reply}");
    // A body that never finishes arriving is bounded by handshake_timeout, and others are
    // served meanwhile; two requests pipelined on one connection are both answered, in order.
    let mut slow = tcp(admin);
    slow.write_all(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"to").unwrap();
    let mut pipelined = tcp(admin);
    pipelined
        .write_all(
            format!("GET /api/topics?key={READ} HTTP/1.1\r\nHost: x\r\n\r\nGET /api/nothing?key={READ} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut both = String::new();
    pipelined.read_to_string(&mut both).unwrap();
    let first = both.find("HTTP/1.1 200").expect("first answered");
    let second = both.find("HTTP/1.1 404").expect("second answered");
    assert!(first < second, "{both}");
    drop(slow);
}

/// A connected pubsub client subscribed to `topic`.
fn subscriber(server: &Server, topic: &str) -> Ws {
    let mut ws = ws_open(&server.url("/pubsub"));
    ws.send_text(&format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#)).unwrap();
    assert_eq!(ws_text(&mut ws), format!(r#"{{"op":"subscribed","topic":"{topic}"}}"#));
    ws
}

#[test]
fn json_api_methods() {
    let server = Server::with_config(&config(), &[]);
    let mut news = subscriber(&server, "news");
    let mut sport = subscriber(&server, "sport");
    let (status, body) = post_json(&server, "/api/publish", PUBLISH, r#"{"topic":"news","data":{"headline":"hi"}}"#);
    assert_eq!((status, body["result"]["subscribers"].as_u64()), (200, Some(1)));
    assert_eq!(ws_text(&mut news), r#"{"topic":"news","data":{"headline":"hi"}}"#);
    post_json(&server, "/api/broadcast", PUBLISH, r#"{"topics":["news","sport"],"data":"both"}"#);
    assert_eq!(ws_text(&mut news), r#"{"topic":"news","data":"both"}"#);
    assert_eq!(ws_text(&mut sport), r#"{"topic":"sport","data":"both"}"#);
    post_json(&server, "/api/publish", PUBLISH, r#"{"topic":"news","b64data":"AAEC"}"#);
    assert_eq!(ws_next(&mut news), WsMessage::Binary(vec![0u8, 1, 2]));

    // Clients: ids, peers, routes, topics, counters.
    let mut broker = ws_open(&server.url("/ws?RegisterToken=abc1"));
    broker.send_text("Echo:x").unwrap();
    assert_eq!(ws_text(&mut broker), "x");
    let clients = get_json(&server, "/api/clients", READ);
    let list = clients["result"]["clients"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{clients}");
    let find = |route: &str| list.iter().find(|c| c["route"] == route && c["state"] == "connected").cloned();
    let b = find("/ws").expect("the broker client");
    assert_eq!(b["token"], "abc1");
    assert_eq!(b["messages_in"], 1);
    assert_eq!(b["messages_out"], 1);
    let news_id =
        list.iter().find(|c| c["topics"] == serde_json::json!(["news"])).unwrap()["id"].as_str().unwrap().to_string();
    let broker_id = b["id"].as_str().unwrap().to_string();

    // Send to one connection: a JSON string as text, other JSON as its text.
    post_json(&server, "/api/send", PUBLISH, &format!(r#"{{"client":"{broker_id}","data":"direct"}}"#));
    assert_eq!(ws_text(&mut broker), "direct");
    post_json(&server, "/api/send", PUBLISH, &format!(r#"{{"client":{broker_id},"data":{{"a":1}}}}"#));
    assert_eq!(ws_text(&mut broker), r#"{"a":1}"#);
    let (status, _) = post_json(&server, "/api/send", PUBLISH, r#"{"client":"12345678","data":1}"#);
    assert_eq!(status, 404);

    // Subscribe a connection to a topic, and back.
    let (_, r) = post_json(&server, "/api/subscribe", ADMIN, &format!(r#"{{"client":"{news_id}","topic":"sport"}}"#));
    assert_eq!(r["result"]["subscribed"], true);
    post_json(&server, "/api/publish", PUBLISH, r#"{"topic":"sport","data":2}"#);
    assert_eq!(ws_text(&mut news), r#"{"topic":"sport","data":2}"#);
    assert_eq!(ws_text(&mut sport), r#"{"topic":"sport","data":2}"#);
    let topics = get_json(&server, "/api/topics", READ);
    assert_eq!(topics["result"]["total"], 2);
    let page = get_json(&server, "/api/topics?limit=1", READ);
    assert_eq!(
        (page["result"]["topics"].as_array().unwrap().len(), page["result"]["next_offset"].as_u64()),
        (1, Some(1))
    );
    let sport_subs = topics["result"]["topics"].as_array().unwrap().iter().find(|t| t["topic"] == "sport").unwrap()
        ["subscribers"]
        .clone();
    assert_eq!(sport_subs, 2);
    let (_, r) = post_json(&server, "/api/unsubscribe", ADMIN, &format!(r#"{{"client":"{news_id}","topic":"sport"}}"#));
    assert_eq!(r["result"]["unsubscribed"], true);

    // Disconnect by token, by topic, by id; the client sees the code and reason.
    let (_, r) = post_json(&server, "/api/disconnect", ADMIN, r#"{"token":"abc1","code":4000,"reason":"bye"}"#);
    assert_eq!(r["result"]["disconnected"], 1);
    assert_eq!(ws_closed(&mut broker), (Some(4000), "bye".into()));
    let (_, r) = post_json(&server, "/api/disconnect", ADMIN, r#"{"topic":"sport"}"#);
    assert_eq!(r["result"]["disconnected"], 1);
    assert_eq!(ws_closed(&mut sport).0, Some(1000));
    let (_, r) = post_json(&server, "/api/disconnect", ADMIN, &format!(r#"{{"client":"{news_id}","code":1008}}"#));
    assert_eq!(r["result"]["disconnected"], 1);

    let info = get_json(&server, "/api/info", READ);
    assert_eq!(info["result"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["result"]["limits"]["max_message_size"].as_u64().unwrap() > 0);
}

#[test]
fn websockets_pro_form_api() {
    let server =
        Server::with_config(&config().replace("app = \"broker\"", "app = \"broker\"\nclient_publish = true"), &[]);
    let form = |body: &str| {
        let auth = bearer(ADMIN);
        http(
            "POST",
            &server.admin_url("/"),
            &[("Authorization", &auth)],
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
    };
    assert_eq!(form("method=registerToken&token=abc1"), (200, String::new()));
    assert_eq!(form("method=registerToken&message=group%2Fitem1"), (200, String::new()));
    assert_eq!(form("method=registeredTokenList"), (200, r#"{"abc1":true,"group/item1":true}"#.to_string()));
    assert_eq!(form("method=unregisterToken&token=abc1"), (200, String::new()));
    // As websockets_pro: an unregistered token is listed as false.
    assert_eq!(form("method=registeredTokenList"), (200, r#"{"abc1":false,"group/item1":true}"#.to_string()));
    assert_eq!(form("method=registerToken&token=abc1"), (200, String::new()));
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc1"));
    let mut g = ws_open(&server.url("/ws?RegisterToken=group/item1"));
    for ws in [&mut a, &mut g] {
        ws.send_text("Echo:ready").unwrap();
        assert_eq!(ws_text(ws), "ready");
    }
    assert_eq!(form("method=broadcast&message=abc1,group/|from the API"), (200, String::new()));
    assert_eq!(ws_text(&mut a), "from the API");
    assert_eq!(ws_text(&mut g), "from the API");
    // The same as a query string.
    let (status, _) =
        http("GET", &server.admin_url(&format!("/?method=broadcast&message=abc1%7Cq&key={ADMIN}")), &[], None);
    assert_eq!(status, 200);
    assert_eq!(ws_text(&mut a), "q");
    let (status, clients) = form("method=get_clients");
    assert_eq!(status, 200);
    let clients: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&clients).unwrap();
    let mut tokens: Vec<&str> = clients.values().map(|v| v.as_str().unwrap()).collect();
    tokens.sort();
    assert_eq!(tokens, ["abc1", "group/item1"]);
    assert!(clients.keys().all(|peer| peer.starts_with("127.0.0.1:")));
    assert_eq!(form("method=broadcast&message=no+bar").0, 400);
    assert_eq!(form("method=nonsense").0, 404);
}

/// Debian's Python with its `prometheus_client`.
fn python_with_prometheus() -> String {
    require(&PYTHON3_PROMETHEUS_CLIENT);
    PYTHON.to_string()
}

/// Parses the exposition with prometheus_client's parser; returns `name{labels} value` lines.
fn parse_metrics(python: &str, text: &str) -> Vec<(String, f64)> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser refused the exposition:\n{text}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn value(samples: &[(String, f64)], key: &str) -> f64 {
    samples.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("no sample {key}"))
}

#[test]
fn metrics_parse_and_move() {
    let python = python_with_prometheus();
    let server = Server::with_config(&config(), &[]);
    let scrape = || {
        let (status, text) = http("GET", &server.admin_url("/metrics"), &[("Authorization", &bearer(READ))], None);
        assert_eq!(status, 200);
        parse_metrics(&python, &text)
    };
    let before = scrape();
    let echo_in = "wsgate_messages_received_total{app=echo,route=/echo}";
    assert_eq!(value(&before, echo_in), 0.0);
    let mut ws = ws_open(&server.url("/echo"));
    for i in 0..10 {
        ws.send_text(&format!("m{i}")).unwrap();
        ws_text(&mut ws);
    }
    let mut news = subscriber(&server, "news");
    // A dashboard watching: its feeds are not pub/sub topics.
    let mut dashboard = ws_open(&format!("ws://{}/ws?key={READ}", server.admin.unwrap()));
    assert!(ws_text(&mut dashboard).contains("\"type\":\"stats\""));
    post_json(&server, "/api/publish", PUBLISH, r#"{"topic":"news","data":1}"#);
    ws_text(&mut news);
    let during = scrape();
    assert_eq!(value(&during, "wsgate_pubsub_subscriptions{}"), 1.0);
    assert_eq!(value(&during, echo_in), 10.0);
    assert_eq!(value(&during, "wsgate_route_connections_open{app=echo,route=/echo}"), 1.0);
    assert_eq!(value(&during, "wsgate_connections_open{state=connected}"), 3.0);
    assert_eq!(value(&during, "wsgate_pubsub_topics{}"), 1.0);
    assert!(
        value(&during, "wsgate_pubsub_deliveries_total{}") >= 1.0,
        "the publish (and the dashboard's figures) delivered"
    );
    assert_eq!(value(&during, "wsgate_handshakes_total{status=101}"), 2.0);
    assert!(value(&during, "process_resident_memory_bytes{}") > 1e6);
    assert!(value(&during, "process_open_fds{}") >= 4.0);
    assert!(value(&during, "wsgate_loop_iterations_total{}") > value(&before, "wsgate_loop_iterations_total{}"));
    ws.close(1000, "").unwrap();
    let _ = http_exchange(server.addr, b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    loop {
        let after = scrape();
        let closed = after.iter().any(|(k, v)| k == "wsgate_close_codes_total{code=1000,side=received}" && *v == 1.0);
        if closed {
            // Traffic of a closed connection stays counted.
            assert_eq!(value(&after, echo_in), 10.0);
            assert_eq!(value(&after, "wsgate_handshakes_total{status=404}"), 1.0);
            assert_eq!(value(&after, "wsgate_route_connections_open{app=echo,route=/echo}"), 0.0);
            break;
        }
        assert!(start.elapsed() < WAIT, "close not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unsafe_admin_configurations_are_refused() {
    for (text, needle) in [
        ("[admin]\nlisten = \"0.0.0.0:0\"\n", "not a loopback address"),
        ("[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.key]]\nkey = \"short\"\nscope = \"read\"\n", "at least 16"),
        ("[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.key]]\nkey = \"0123456789abcdefgh\"\nscope = \"root\"\n", "admin.key.scope"),
        (
            "[server]\nlisten = [\"0.0.0.0:0\"]\n[[route]]\npath = \"/logs\"\napp = \"logview\"\nfiles = [\"/tmp/x.log\"]\n",
            "reveals internal information",
        ),
    ] {
        let path = std::env::temp_dir().join(format!("wsgate-refused-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wsgate")).arg("-c").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} started");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn admin_on_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("wsgate-admin-{}.sock", std::process::id()));
    // A stale socket file from an earlier run is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let mut server = Server::with_config(&format!("[admin]\nlisten = \"unix:{}\"\n", path.display()), &[]);
    server.wait_log(&format!("dashboard on unix:{}", path.display()));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"version\""), "{reply}");
    // The socket file goes with the server.
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
    assert!(!path.exists());
}
