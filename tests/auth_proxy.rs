//! `auth = "proxy"` and `subscribe_proxy` through the real binary, against an application
//! written here (a small keep-alive HTTP/1.1 server on its own threads): allow with the user,
//! topics, info and expiry applied; deny with the application's status and reason; bad
//! answers and HTTP errors as 503; what the application is sent (only the configured headers
//! and cookies, the client's data apart); a slow application timing out with 503 while other
//! clients are served; a flood of connects to a slow application bounded by the queue; and the
//! counts in `/metrics`.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The application: decides by the connect request's query and the subscribe request's
/// topic, and keeps every request it was sent.
struct App {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    /// TCP connections wsgate opened to it.
    connections: Arc<AtomicUsize>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let split = |s: std::net::TcpStream| (s.try_clone().unwrap(), s);
        let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)));
        App { addr, ..App::listen(incoming, split, usize::MAX) }
    }

    /// The same application on a UNIX socket; it closes each connection after two answers
    /// (as an application with a short keep-alive would), without saying so.
    fn start_unix(path: &std::path::Path) -> App {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let split = |s: std::os::unix::net::UnixStream| (s.try_clone().unwrap(), s);
        let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)));
        App::listen(incoming, split, 2)
    }

    /// Serves every connection of `incoming` on its own thread, `answers` requests each.
    fn listen<S: Read + Write + Send + 'static>(
        incoming: impl Iterator<Item = std::io::Result<S>> + Send + 'static,
        split: fn(S) -> (S, S),
        answers: usize,
    ) -> App {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c) = (Arc::clone(&requests), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in incoming {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                let (input, output) = split(stream);
                std::thread::spawn(move || serve(input, output, &r, answers));
            }
        });
        App { addr: "127.0.0.1:9".parse().unwrap(), requests, connections }
    }

    fn config(&self, extra: &str) -> String {
        let a = self.addr;
        format!(
            "[limits]\nhandshake_timeout = \"3s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[proxy]\nconnect_url = \"http://{a}/connect\"\nsubscribe_url = \"http://{a}/subscribe\"\ntimeout = \"5s\"\nmax_connections = 4\nmax_pending = 8\nheaders = [\"x-trace\", \"origin\"]\ncookies = [\"session\"]\nrequest_headers = {{ X-Wsgate-Key = \"k-1\" }}\n\n[[route]]\npath = \"/echo\"\napp = \"echo\"\nauth = \"proxy\"\n\n[[route]]\npath = \"/ps\"\napp = \"pubsub\"\nauth = \"proxy\"\npresence = true\nsubscribe_proxy = [\"private.*\"]\n\n[[route]]\npath = \"/open\"\napp = \"pubsub\"\nsubscribe_proxy = [\"private.*\"]\n\n[[route]]\npath = \"/plain\"\napp = \"echo\"\n{extra}"
        )
    }

    fn requests(&self, path: &str) -> Vec<Value> {
        self.requests.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, v)| v.clone()).collect()
    }
}

/// One keep-alive connection from wsgate: requests until it closes, or `answers` are given.
fn serve(input: impl Read, mut out: impl Write, requests: &Mutex<Vec<(String, Value)>>, answers: usize) {
    let mut reader = BufReader::new(input);
    for _ in 0..answers {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0;
        let mut key = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
                if k.eq_ignore_ascii_case("x-wsgate-key") {
                    key = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap();
        // Kept as it came, with the header the test looks for.
        let mut kept = request.clone();
        kept["_key"] = key.into();
        requests.lock().unwrap().push((path.clone(), kept));
        let (status, answer) = decide(&path, &request);
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn decide(path: &str, request: &Value) -> (u16, String) {
    let allow = |user: &str| {
        json!({"allow": true, "user": user, "topics": ["news", "private.*"], "info": {"name": user}}).to_string()
    };
    if path == "/subscribe" {
        return match (request["topic"].as_str().unwrap(), request["user"].as_str().unwrap()) {
            ("private.slow", _) => {
                std::thread::sleep(Duration::from_secs(2));
                (200, json!({"allow": true}).to_string())
            }
            ("private.ok", "alice" | "") => (200, json!({"allow": true}).to_string()),
            _ => (200, json!({"allow": false, "status": 403, "reason": "not yours"}).to_string()),
        };
    }
    // A browser's session cookie (what a login page set): the user is the session's.
    if let Some(user) = request["cookies"]["session"].as_str().and_then(|s| s.strip_prefix("browser-")) {
        return (200, allow(user));
    }
    let query = request["query"].as_str().unwrap_or("");
    match query.split_once('=') {
        Some(("user", user)) => (200, allow(user)),
        Some(("short", user)) => (200, json!({"allow": true, "user": user, "expires": now() + 2}).to_string()),
        Some(("slow", user)) => {
            std::thread::sleep(Duration::from_secs(2));
            (200, allow(user))
        }
        _ => match query {
            "deny" => (200, json!({"allow": false, "status": 401, "reason": "log in first"}).to_string()),
            "bad" => (200, "not json".to_string()),
            "crash" => (500, "{}".to_string()),
            _ => (200, json!({"allow": false}).to_string()),
        },
    }
}

/// The upgrade's status and the response's body.
fn upgrade(server: &Server, target: &str, headers: &str) -> (u16, String) {
    let response = http_exchange(server.addr, upgrade_request(target, headers).as_bytes());
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn ask(ws: &mut Ws, req: Value) -> Value {
    ws.send_text(&req.to_string()).unwrap();
    ws_json(ws)
}

/// `wsgate_proxy_requests_total{kind,result}` as the server counts it.
fn proxy_count(server: &Server, kind: &str, result: &str) -> u64 {
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    let want = format!("wsgate_proxy_requests_total{{kind=\"{kind}\",result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&want)).map_or(0, |n| n.parse().unwrap())
}

#[test]
fn the_application_allows_with_a_user_denies_with_its_status_and_is_sent_only_what_is_configured() {
    let app = App::start();
    let server = Server::with_config(&app.config(""), &[]);

    let mut ws = ws_open_with(
        &server.url("/echo?user=alice"),
        &wsgate::client::Options {
            headers: vec![
                ("X-Trace".into(), "t-1".into()),
                ("Cookie".into(), "session=s-1; tracking=secret".into()),
                ("X-Not-Listed".into(), "no".into()),
            ],
            origin: Some("http://example.test".into()),
            protocols: vec!["chat.v1".into()],
            ..Default::default()
        },
    );
    ws.send_text("hello").unwrap();
    assert_eq!(ws_text(&mut ws), "hello");
    drop(ws); // the access line is written at the end
    server.wait_log("user=\"alice\" /echo status=101");
    let sent = app.requests("/connect").remove(0);
    assert_eq!(sent["path"], "/echo");
    assert_eq!(sent["query"], "user=alice");
    assert_eq!(sent["route"], "/echo");
    assert_eq!(sent["remote_addr"], "127.0.0.1");
    assert_eq!(sent["tls"], false);
    assert_eq!(sent["subprotocols"], json!(["chat.v1"]));
    // Only the configured headers and cookies leave the server.
    assert_eq!(sent["headers"], json!({"x-trace": "t-1", "origin": "http://example.test"}));
    assert_eq!(sent["cookies"], json!({"session": "s-1"}));
    assert!(sent["client"].as_str().is_some_and(|c| c.parse::<u64>().is_ok()), "{sent}");
    assert_eq!(sent["_key"], "k-1", "request_headers reach the application");

    // Denied: the application's status and reason.
    assert_eq!(upgrade(&server, "/echo?deny", ""), (401, "log in first".into()));
    assert_eq!(upgrade(&server, "/echo?nobody", ""), (403, "refused by the application".into()));
    // No decision: 503, the reason in the access log.
    let (status, body) = upgrade(&server, "/echo?bad", "");
    assert_eq!((status, body.as_str()), (503, "the application cannot decide now, try again later"));
    server.wait_log("the auth proxy's answer: not a JSON object");
    assert_eq!(upgrade(&server, "/echo?crash", "").0, 503);
    server.wait_log("the auth proxy answered HTTP 500");
    // The request's other checks still run first, and once: a bad upgrade never reaches it.
    let before = app.requests("/connect").len();
    let bad = "GET /echo?user=x HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(http_exchange(server.addr, bad.as_bytes()).split(' ').nth(1), Some("400"));
    assert_eq!(app.requests("/connect").len(), before);

    // Keep-alive: many upgrades over at most max_connections connections to the application.
    for i in 0..20 {
        let mut ws = ws_open(&server.url(&format!("/echo?user=u{i}")));
        ws.send_text("x").unwrap();
        assert_eq!(ws_text(&mut ws), "x");
    }
    assert!(app.connections.load(Ordering::SeqCst) <= 4, "{} connections", app.connections.load(Ordering::SeqCst));
    wait_metrics(&server, &["wsgate_auth_refusals_total 2"]);
    assert_eq!(proxy_count(&server, "connect", "allow"), 21);
    assert_eq!(proxy_count(&server, "connect", "deny"), 2);
    assert_eq!(proxy_count(&server, "connect", "error"), 2);
}

#[test]
fn pubsub_takes_the_user_topics_info_and_expiry_and_asks_before_subscribing() {
    let app = App::start();
    // Under the slow answer's 2 s, so that one times out.
    let server = Server::with_config(&app.config("").replace("timeout = \"5s\"", "timeout = \"1s\""), &[]);
    let mut a = ws_open(&server.url("/ps?user=alice"));
    assert_eq!(ask(&mut a, json!({"op":"subscribe","topic":"news"})), json!({"op":"subscribed","topic":"news"}));
    let v = ask(&mut a, json!({"op":"subscribe","topic":"sports"}));
    assert_eq!(v["message"], "topic not allowed by the application", "its topics: {v}");
    let v = ask(&mut a, json!({"op":"presence","topic":"news"}));
    assert_eq!(v["members"][0]["user"], "alice", "{v}");
    assert_eq!(v["members"][0]["info"], json!({"name":"alice"}), "{v}");
    let v = ask(&mut a, json!({"op":"connect","token":"x"}));
    assert_eq!(v["code"], 400, "no tokens here: {v}");

    // subscribe_proxy: the application is asked, with the user and the client's data apart.
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private.ok","data":{"headers":{"cookie":"forged"}}}));
    assert_eq!(v, json!({"op":"subscribed","topic":"private.ok"}));
    let sent = app.requests("/subscribe").remove(0);
    assert_eq!(sent["user"], "alice");
    assert_eq!(sent["route"], "/ps");
    assert_eq!(sent["topic"], "private.ok");
    assert_eq!(sent["data"], json!({"headers":{"cookie":"forged"}}));
    assert!(sent.get("headers").is_none(), "{sent}");
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private.other"}));
    assert_eq!(v, json!({"op":"error","code":403,"message":"not yours","topic":"private.other"}));
    // A slow answer: the client is served meanwhile, then told the application timed out.
    a.send_text(&json!({"op":"subscribe","topic":"private.slow"}).to_string()).unwrap();
    // (The answer to this comes before the timeout's error: served while the application thinks.)
    assert_eq!(ask(&mut a, json!({"op":"unsubscribe","topic":"news"})), json!({"op":"unsubscribed","topic":"news"}));
    let v = ws_json(&mut a);
    assert_eq!(v["code"], 503, "{v}");
    assert_eq!(v["topic"], "private.slow", "{v}");
    // Publications reach the allowed private topic.
    let mut b = ws_open(&server.url("/ps?user=bob"));
    b.send_text(&json!({"op":"publish","topic":"private.ok","data":7}).to_string()).unwrap();
    assert_eq!(ws_json(&mut a), json!({"topic":"private.ok","data":7}));
    let v = ask(&mut b, json!({"op":"subscribe","topic":"private.ok"}));
    assert_eq!(v["message"], "not yours", "bob is not allowed: {v}");

    // An anonymous route with subscribe_proxy: asked with no user.
    let mut anon = ws_open(&server.url("/open"));
    let v = ask(&mut anon, json!({"op":"subscribe","topic":"private.ok"}));
    assert_eq!(v, json!({"op":"subscribed","topic":"private.ok"}));
    assert_eq!(app.requests("/subscribe").last().unwrap()["user"], "");
    assert_eq!(ask(&mut anon, json!({"op":"subscribe","topic":"news"}))["op"], "subscribed", "not asked");

    // The application's expiry closes the connection with 3000.
    let mut short = ws_open(&server.url("/ps?short=carol"));
    assert_eq!(ws_closed(&mut short).0, Some(3000));
    assert_eq!(proxy_count(&server, "subscribe", "allow"), 2);
    assert_eq!(proxy_count(&server, "subscribe", "deny"), 2);
    assert_eq!(proxy_count(&server, "subscribe", "timeout"), 1);
}

#[test]
fn a_slow_application_times_out_with_503_and_a_connect_flood_is_bounded_while_others_are_served() {
    let app = App::start();
    let server = Server::with_config(&app.config("").replace("timeout = \"5s\"", "timeout = \"500ms\""), &[]);
    let started = Instant::now();
    let (status, body) = upgrade(&server, "/echo?slow=x", "");
    assert_eq!((status, body.as_str()), (503, "the application did not answer in time"));
    assert!(started.elapsed() < Duration::from_millis(1900), "answered at the proxy's timeout");

    // 40 clients at once to the slow application (4 connections, 8 waiting): every one is
    // answered 503 within about the timeout, none waits for the application's 2 s, and a
    // plain client is served all along.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let started = Instant::now();
                let response = http_exchange(addr, upgrade_request(&format!("/echo?slow=f{i}"), "").as_bytes());
                (response.split(' ').nth(1).unwrap_or("").to_string(), started.elapsed())
            })
        })
        .collect();
    let mut plain = ws_open(&server.url("/plain"));
    for _ in 0..5 {
        let started = Instant::now();
        plain.send_text("ping").unwrap();
        assert_eq!(ws_text(&mut plain), "ping");
        assert!(started.elapsed() < Duration::from_secs(1), "the loop never waits for the application's 2 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    for client in flood {
        let (status, took) = client.join().unwrap();
        assert_eq!(status, "503");
        assert!(took < Duration::from_millis(1900), "{took:?}");
    }
    // Only what the pool had in flight reached the application (4 per timeout round); the
    // rest were answered "busy" at once or found expired in the queue and never sent.
    let reached =
        app.requests("/connect").iter().filter(|r| r["query"].as_str().unwrap().starts_with("slow=f")).count();
    assert!(reached <= 12, "{reached} of the flood reached the application");
    let busy = proxy_count(&server, "connect", "busy");
    assert!(busy > 0, "a full queue answers at once");
    // Once the application is quick again, clients get in.
    let mut ws = ws_open(&server.url("/echo?user=after"));
    ws.send_text("x").unwrap();
    assert_eq!(ws_text(&mut ws), "x");
    // Every request was answered exactly once (the 503s above may have come from the
    // connection's own deadline, a little before the helper's answer is counted).
    let started = Instant::now();
    while proxy_count(&server, "connect", "busy") + proxy_count(&server, "connect", "timeout") < 41 {
        assert!(started.elapsed() < WAIT, "unanswered requests");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxy_count(&server, "connect", "busy") + proxy_count(&server, "connect", "timeout"), 41);
    assert_eq!(proxy_count(&server, "connect", "allow"), 1);
}

#[test]
fn configuration_mistakes_name_the_key() {
    let check = |config: &str| -> String {
        let path = std::env::temp_dir().join(format!("wsgate-proxy-conf-{}.toml", std::process::id()));
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["-c", path.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(!out.status.success(), "{config}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let route = "[[route]]\npath = \"/e\"\napp = \"echo\"\nauth = \"proxy\"\n";
    assert!(check(route).contains("needs [proxy] connect_url"));
    assert!(check(&format!("[proxy]\nconnect_url = \"ftp://x\"\n{route}")).contains("proxy.connect_url"));
    assert!(check("[proxy]\ntimeout = \"1s\"\n").contains("set connect_url, subscribe_url"));
    let p = "[proxy]\nconnect_url = \"http://127.0.0.1:1/c\"\n";
    assert!(check(&format!("{p}max_connections = 0\n")).contains("proxy.max_connections"));
    assert!(check(&format!("{p}headers = [\"bad name\"]\n")).contains("proxy.headers"));
    assert!(check(&format!("{p}request_headers = {{ Host = \"x\" }}\n")).contains("sets this header itself"));
    assert!(check(&format!("{p}request_headers = {{ K = \"a\\r\\nb\" }}\n")).contains("proxy.request_headers.K"));
    assert!(check(&format!("{p}[[route]]\npath = \"/p\"\napp = \"pubsub\"\nsubscribe_proxy = [\"x\"]\n"))
        .contains("subscribe_proxy needs [proxy] subscribe_url"));
    assert!(check(&format!("{p}[[route]]\npath = \"/e\"\napp = \"echo\"\nsubscribe_proxy = [\"x\"]\n"))
        .contains("route.subscribe_proxy: only pubsub routes"));
}

#[test]
fn the_application_on_a_unix_socket_with_connections_it_lets_go() {
    let dir = std::env::temp_dir().join(format!("wsgate-proxy-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("app.sock");
    let app = App::start_unix(&socket);
    let config = app.config("").replace("[proxy]\n", &format!("[proxy]\nunix_socket = \"{}\"\n", socket.display()));
    let server = Server::with_config(&config, &[]);
    // Sequential upgrades over kept connections that the application closes after two
    // answers: a request on a connection it let go is sent again on a new one.
    for i in 0..9 {
        let mut ws = ws_open(&server.url(&format!("/echo?user=u{i}")));
        ws.send_text("x").unwrap();
        assert_eq!(ws_text(&mut ws), "x");
    }
    assert_eq!(upgrade(&server, "/echo?deny", ""), (401, "log in first".into()));
    assert_eq!(upgrade(&server, "/echo?bad", "").0, 503);
    let sent = app.requests("/connect");
    assert_eq!(sent.len(), 11, "each asked once");
    assert_eq!(sent[0]["query"], "user=u0");
    assert!(sent.iter().all(|r| r["_key"] == "k-1"), "request_headers on the socket too");
    assert!(app.connections.load(Ordering::SeqCst) >= 5, "the application let connections go");
    let mut a = ws_open(&server.url("/ps?user=alice"));
    assert_eq!(ask(&mut a, json!({"op":"subscribe","topic":"private.ok"}))["op"], "subscribed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_application_is_a_503_at_once_and_counted() {
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = App { addr: dead, requests: Arc::default(), connections: Arc::default() };
    let server = Server::with_config(&app.config("").replace("timeout = \"5s\"", "timeout = \"10s\""), &[]);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = upgrade(&server, "/echo?user=alice", "");
        assert_eq!((status, body.as_str()), (503, "the application cannot decide now, try again later"));
        assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not at the 10 s timeout");
    }
    server.wait_log("the auth proxy: ");
    let mut plain = ws_open(&server.url("/plain"));
    plain.send_text("still here").unwrap();
    assert_eq!(ws_text(&mut plain), "still here");
    assert_eq!(proxy_count(&server, "connect", "error"), 3);
}

/// The page Chromium opens: it sets a session cookie as a login page would, then opens the
/// pubsub route, which sends the cookie with the upgrade; once in, it subscribes to a topic
/// the application must allow, and publishes to `news` to say so.
const PAGE: &str = r#"<!doctype html><script>
document.cookie = "session=browser-alice; path=/";
const ws = new WebSocket(`ws://${location.host}/ps`);
ws.onopen = () => ws.send(JSON.stringify({op: "subscribe", topic: "private.ok"}));
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.op === "subscribed") ws.send(JSON.stringify({op: "publish", topic: "news", data: "chromium is in"}));
};
</script>"#;

#[test]
fn a_browser_session_cookie_reaches_the_application_with_the_browser_set_origin() {
    let app = App::start();
    let dir = std::env::temp_dir().join(format!("wsgate-proxy-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), PAGE).unwrap();
    let extra = format!("\n[[route]]\npath = \"/page\"\nstatic = \"{}\"\n", dir.display());
    let server = Server::with_config(&app.config(&extra), &[]);
    let mut listener = ws_open(&server.url("/ps?user=listener"));
    assert_eq!(ask(&mut listener, json!({"op":"subscribe","topic":"news"}))["op"], "subscribed");
    let _browser = Browser::launch("proxy", &format!("http://{}/page/", server.addr), &[], false);
    assert_eq!(ws_json(&mut listener), json!({"topic":"news","data":"chromium is in"}));
    let sent = app.requests("/connect");
    let from_browser = sent.iter().find(|r| r["cookies"]["session"] == "browser-alice").expect("the browser's upgrade");
    assert_eq!(from_browser["headers"]["origin"], format!("http://{}", server.addr));
    assert!(from_browser.get("query").is_none(), "{from_browser}");
    let asked = app.requests("/subscribe");
    assert!(asked.iter().any(|r| r["user"] == "alice" && r["topic"] == "private.ok"), "{asked:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_address_over_its_limits_is_refused_before_the_application_is_asked() {
    let app = App::start();
    let extra =
        "\n[[route]]\npath = \"/capped\"\napp = \"echo\"\nauth = \"proxy\"\nmax_connections_per_ip = { max = 2 }\n";
    let config = app.config(extra);
    let server = Server::with_config(&config, &[]);
    // Two upgrades wait for the slow application (2 s), each holding its address's place.
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || http_exchange_head(addr, &upgrade_request(&format!("/capped?slow=c{i}"), "")))
        })
        .collect();
    let started = Instant::now();
    while app.requests("/connect").len() < 2 {
        assert!(started.elapsed() < WAIT, "the two were not asked");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third from the same address: 429 at once, and the application is not asked.
    let (status, _) = upgrade(&server, "/capped?user=third", "");
    assert_eq!(status, 429);
    assert_eq!(app.requests("/connect").len(), 2);
    for w in waiting {
        assert!(w.join().unwrap().starts_with("HTTP/1.1 101 "), "allowed once the application answered");
    }
}
