//! The token broker (`app = "broker"`), against the real binary: every receiver rule, Echo,
//! both ways of registering, both `allow_unregistered` settings, `client_publish`, the
//! websockets_pro quirks, and registered tokens from a file and from a real HTTP server
//! (Python's http.server), with reloads that fail keeping the old list.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn send(ws: &mut Ws, text: &str) {
    ws.send_text(text).unwrap();
}

/// Asserts the next message `ws` gets is `want` (an Echo marker proves nothing came before).
fn expect_next(ws: &mut Ws, want: &str) {
    assert_eq!(ws_text(ws), want);
}

/// Proves `ws` received nothing so far: its own echo comes back first.
fn expect_nothing(ws: &mut Ws) {
    send(ws, "Echo:marker");
    assert_eq!(ws_text(ws), "marker");
}

fn tokens_file(name: &str, json: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wsgate-{name}-{}.json", std::process::id()));
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn receivers_exact_group_and_echo() {
    let server = Server::with_config("[[route]]\npath = \"/ws\"\napp = \"broker\"\nclient_publish = true\n", &[]);
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc1"));
    let mut b = ws_open(&server.url("/ws"));
    send(&mut b, "RegisterToken:abc3");
    let mut c = ws_open(&server.url("/ws?RegisterToken=group%2Fitem1"));
    let mut d = ws_open(&server.url("/ws?RegisterToken=group/item2"));
    let mut e = ws_open(&server.url("/ws"));
    let mut f = ws_open(&server.url("/ws?RegisterToken=groupie"));
    let mut a2 = ws_open(&server.url("/ws?RegisterToken=abc1"));
    // Every registration has been processed once each client's echo is back.
    for ws in [&mut a, &mut b, &mut c, &mut d, &mut e, &mut f, &mut a2] {
        expect_nothing(ws);
    }
    send(&mut a, "abc1,group/,abc3|Hello");
    for ws in [&mut a, &mut a2, &mut b, &mut c, &mut d] {
        expect_next(ws, "Hello");
    }
    expect_nothing(&mut e);
    expect_nothing(&mut f);
    // The unregistered client has a token too, and a binary message stays binary.
    send(&mut a, "unregistered|to the anonymous");
    expect_next(&mut e, "to the anonymous");
    a.send_binary(b"groupie|\x00\x01").unwrap();
    assert_eq!(ws_next(&mut f), WsMessage::Binary(vec![0u8, 1]));
    // A receiver listed twice, or by name and by group, gets the message once.
    send(&mut a, "group/item1,group/,group/item1|once");
    expect_next(&mut c, "once");
    expect_nothing(&mut c);
    // Re-registering moves the client: the old token no longer reaches it.
    send(&mut b, "RegisterToken:abc9");
    expect_nothing(&mut b);
    send(&mut a, "abc3|old token");
    expect_nothing(&mut b);
    send(&mut a, "abc9|new token");
    expect_next(&mut b, "new token");
    // A service message (no '|') reaches nobody; Echo: keeps its colons.
    send(&mut a, "just saying");
    expect_nothing(&mut a);
    send(&mut a, "Echo:a:b");
    expect_next(&mut a, "a:b");
    // A bad token is refused with a message, not a close.
    send(&mut a, "RegisterToken:a,b");
    assert!(ws_text(&mut a).starts_with("Error:"));
    // A receivers part over 16 KiB is refused: resolving a message is bounded work.
    send(&mut a, &format!("{}|x", "abc1,".repeat(4000)));
    assert_eq!(ws_text(&mut a), "Error:receivers list too long");
    // Disconnected clients leave their token.
    drop(d);
    std::thread::sleep(Duration::from_millis(100));
    send(&mut a, "group/|after d left");
    expect_next(&mut c, "after d left");
}

#[test]
fn client_publish_is_off_by_default() {
    let server = Server::with_config("[[route]]\npath = \"/ws\"\napp = \"broker\"\n", &[]);
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc1"));
    send(&mut a, "abc1|Hello");
    assert_eq!(ws_text(&mut a), "Error:routing messages is not allowed on this route");
    send(&mut a, "Echo:still here");
    expect_next(&mut a, "still here");
}

#[test]
fn registered_tokens_only() {
    let tokens = tokens_file("tokens-only", r#"{"abc1":true,"abc2":true,"group/item1":true,"off":false}"#);
    let server = Server::with_config(
        &format!(
            "[broker]\ntokens = \"file:{}\"\n{ADMIN}[[route]]\npath = \"/ws\"\napp = \"broker\"\nallow_unregistered = false\nclient_publish = true\n",
            tokens.display()
        ),
        &[],
    );
    for (query, status) in
        [("", 403), ("?RegisterToken=", 403), ("?RegisterToken=nope", 403), ("?RegisterToken=off", 403)]
    {
        let head = http_exchange_head(server.addr, &upgrade_request(&format!("/ws{query}"), ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{query}: {head}");
    }
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc1"));
    send(&mut a, "RegisterToken:nope");
    assert_eq!(ws_text(&mut a), "Error:token not registered");
    send(&mut a, "RegisterToken:abc2");
    send(&mut a, "abc2|moved");
    expect_next(&mut a, "moved");
    // registerToken through the admin API lets a new token in.
    let (status, _) = http(
        "POST",
        &server.admin_url("/"),
        &[],
        Some(("application/x-www-form-urlencoded", b"method=registerToken&token=fresh")),
    );
    assert_eq!(status, 200);
    let mut fresh = ws_open(&server.url("/ws?RegisterToken=fresh"));
    expect_nothing(&mut fresh);
    let _ = std::fs::remove_file(tokens);
}

#[test]
fn websockets_pro_quirks() {
    let server = Server::with_config(
        "[broker]\nwebsockets_pro_quirks = true\n[[route]]\npath = \"/ws\"\napp = \"broker\"\nclient_publish = true\n",
        &[],
    );
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc1"));
    let mut g = ws_open(&server.url("/ws?RegisterToken=group/item1"));
    let mut x = ws_open(&server.url("/ws?RegisterToken=bc"));
    send(&mut a, "Echo:hi:there");
    assert_eq!(ws_text(&mut a), "\"hithere\"\n");
    send(&mut g, "Echo:ready");
    assert_eq!(ws_text(&mut g), "\"ready\"\n");
    send(&mut x, "Echo:ready");
    assert_eq!(ws_text(&mut x), "\"ready\"\n");
    // Substring matching: "bc" occurs in "abc1"; "group/item1" does not occur in "group/".
    send(&mut a, "abc1,group/|<b>&");
    assert_eq!(ws_text(&mut a), "\"\\u003cb\\u003e\\u0026\"\n");
    assert_eq!(ws_text(&mut x), "\"\\u003cb\\u003e\\u0026\"\n");
    send(&mut g, "Echo:nothing before this");
    assert_eq!(ws_text(&mut g), "\"nothing before this\"\n");
    // RegisterToken takes the text up to the next colon.
    send(&mut x, "RegisterToken:zz:ignored");
    send(&mut a, "zz|to zz");
    assert_eq!(ws_text(&mut x), "\"to zz\"\n");
    // A message without '|' is routed too: the whole text is the receivers part and the payload.
    send(&mut a, "hey zz");
    assert_eq!(ws_text(&mut x), "\"hey zz\"\n");
    // A client without a token holds websockets_pro's "unregstered".
    let mut u = ws_open(&server.url("/ws"));
    send(&mut u, "Echo:ready");
    assert_eq!(ws_text(&mut u), "\"ready\"\n");
    send(&mut a, "unregstered|to the anonymous");
    assert_eq!(ws_text(&mut u), "\"to the anonymous\"\n");
}

/// Python's http.server serving `dir` on a free loopback port.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &std::path::Path) -> HttpServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(PYTHON3.executable())
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_list(server: &Server) -> String {
    let (status, body) = http("GET", &server.admin_url("/?method=registeredTokenList"), &[], None);
    assert_eq!(status, 200);
    body
}

fn wait_token_list(server: &Server, want: &str) {
    let start = Instant::now();
    loop {
        let got = token_list(server);
        if got == want {
            return;
        }
        assert!(start.elapsed() < WAIT, "token list stayed {got}, wanted {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tokens_from_a_url_reload_on_sighup_and_failures_keep_the_old_list() {
    let dir = std::env::temp_dir().join(format!("wsgate-tokens-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens.json"), r#"{"abc1":true}"#).unwrap();
    let http_server = HttpServer::start(&dir);
    let server = Server::with_config(
        &format!(
            "[broker]\ntokens = \"http://127.0.0.1:{}/tokens.json\"\ntokens_timeout = \"2s\"\n{ADMIN}[[route]]\npath = \"/ws\"\napp = \"broker\"\nallow_unregistered = false\n",
            http_server.port
        ),
        &[],
    );
    server.wait_log("1 registered token(s)");
    assert_eq!(token_list(&server), r#"{"abc1":true}"#);
    // SIGHUP loads it again.
    std::fs::write(dir.join("tokens.json"), r#"{"abc1":true,"abc2":true}"#).unwrap();
    server.signal(libc::SIGHUP);
    wait_token_list(&server, r#"{"abc1":true,"abc2":true}"#);
    // Not JSON: the old list stays, and the log says why.
    std::fs::write(dir.join("tokens.json"), "<html>oops</html>").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("not a JSON object");
    assert_eq!(token_list(&server), r#"{"abc1":true,"abc2":true}"#);
    // Gone (404), then the server down: the old list stays.
    std::fs::remove_file(dir.join("tokens.json")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("HTTP status 404");
    drop(http_server);
    server.signal(libc::SIGHUP);
    let start = Instant::now();
    while server.log.lock().unwrap().iter().filter(|l| l.contains("keeping the 2 token(s)")).count() < 3 {
        assert!(start.elapsed() < WAIT, "{:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(token_list(&server), r#"{"abc1":true,"abc2":true}"#);
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc2"));
    expect_nothing(&mut a);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokens_file_refreshes_on_its_own_and_too_large_is_refused() {
    let tokens = tokens_file("tokens-refresh", r#"{"abc1":true}"#);
    let server = Server::with_config(
        &format!(
            "[broker]\ntokens = \"file:{}\"\ntokens_refresh = \"1s\"\ntokens_max_size = 64\n{ADMIN}[[route]]\npath = \"/ws\"\napp = \"broker\"\n",
            tokens.display()
        ),
        &[],
    );
    std::fs::write(&tokens, r#"{"abc1":true,"abc5":true}"#).unwrap();
    wait_token_list(&server, r#"{"abc1":true,"abc5":true}"#);
    std::fs::write(&tokens, format!("{{\"{}\":true}}", "x".repeat(100))).unwrap();
    server.wait_log("larger than tokens_max_size");
    assert_eq!(token_list(&server), r#"{"abc1":true,"abc5":true}"#);
    let _ = std::fs::remove_file(tokens);
}

#[test]
fn a_token_url_that_never_answers_times_out_and_the_list_in_use_stays() {
    // A server that accepts and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = hang.incoming().take(4).collect();
        std::thread::sleep(WAIT * 2);
        drop(held);
    });
    let server = Server::with_config(
        &format!(
            "[broker]\ntokens = \"http://127.0.0.1:{port}/tokens.json\"\ntokens_timeout = \"1s\"\n{ADMIN}[[route]]\npath = \"/ws\"\napp = \"broker\"\nallow_unregistered = false\n"
        ),
        &[],
    );
    server.wait_log("starting with no registered tokens");
    let (status, _) = http(
        "POST",
        &server.admin_url("/"),
        &[],
        Some(("application/x-www-form-urlencoded", b"method=registerToken&token=abc7")),
    );
    assert_eq!(status, 200);
    let started = Instant::now();
    server.signal(libc::SIGHUP);
    server.wait_log("keeping the 1 token(s)");
    assert!(started.elapsed() < WAIT);
    assert_eq!(token_list(&server), r#"{"abc7":true}"#);
    // The loop went on serving while the loader waited.
    let mut a = ws_open(&server.url("/ws?RegisterToken=abc7"));
    expect_nothing(&mut a);
}
