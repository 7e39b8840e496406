//! The example backends behind the real gateway (chat with -w commands, JSON-RPC). The
//! measuring peers are tested in bench/tests/peers.rs.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The example's binary: `cargo test` builds examples next to the test binaries
/// (target/<profile>/examples); a filtered run (`--test examples`) may not, so build it then.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO")).args(["build", "--example", name]).status().unwrap();
        assert!(status.success(), "cargo build --example {name}");
    }
    path
}

struct Running(Child, PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-examples-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs example `name` with `args` until dropped (then `dir` is removed too), once `ready`
/// says it is listening.
fn spawn_example(name: &str, args: &[&str], dir: PathBuf, ready: impl Fn() -> bool) -> Running {
    let mut child = Command::new(example(name))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", example(name).display()));
    let start = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("{name} exited ({status}): {err}");
        }
        assert!(start.elapsed() < WAIT, "{name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running(child, dir)
}

/// An example backend with ouistiti's options, serving `-R dir -n sock`.
fn start_backend(name: &str, args: &[&str]) -> (Running, PathBuf) {
    let dir = scratch_dir(name);
    let socket = dir.join("sock");
    let mut all = vec!["-R", dir.to_str().unwrap(), "-n", "sock"];
    all.extend(args);
    let running = spawn_example(name, &all, dir.clone(), || socket.exists());
    (running, socket)
}

fn gateway(route: &str) -> Server {
    let mut args = vec!["--route", route];
    if wsgate::sys::privileges::is_root() {
        args.extend(["-u", "nobody"]);
    }
    Server::start(&args)
}

#[test]
fn chat_broadcasts_and_answers_commands() {
    let (_backend, socket) = start_backend("backend-chat", &["-w", "-f", "framed"]);
    let server = gateway(&format!("/chat=unix:{}#framed", socket.display()));
    let mut alice = ws_open(&server.url("/chat"));
    let mut bob = ws_open(&server.url("/chat"));
    alice.send_text("WSHello alice").unwrap();
    assert_eq!(ws_text(&mut alice), "WSWelcome alice");
    bob.send_text("WSHello bob").unwrap();
    assert_eq!(ws_text(&mut bob), "WSWelcome bob");
    bob.send_text("hi all").unwrap();
    assert_eq!(ws_text(&mut alice), "hi all");
    alice.send_text("WSPrivate bob just for you").unwrap();
    assert_eq!(ws_text(&mut bob), "just for you");
    alice.send_text("WSWhois bob").unwrap();
    let whois = ws_text(&mut alice);
    assert!(whois.starts_with("WSIs bob 127.0.0.1:"), "{whois}");
    alice.send_text("WSWhois carol").unwrap();
    assert_eq!(ws_text(&mut alice), "WSUnknown carol");
}

#[test]
fn jsonrpc_over_lines() {
    let (_backend, socket) = start_backend("backend-jsonrpc", &["-f", "lines"]);
    let server = gateway(&format!("/rpc=unix:{}#lines", socket.display()));
    let mut ws = ws_open(&server.url("/rpc"));
    let cases = [
        (
            r#"{"jsonrpc":"2.0","method":"add","params":[1,2,3.5],"id":1}"#,
            Some(r#"{"jsonrpc":"2.0","result":6.5,"id":1}"#),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":{"a":[true,null,"\u00e9"]},"id":"x"}"#,
            Some(r#"{"jsonrpc":"2.0","result":{"a":[true,null,"é"]},"id":"x"}"#),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"hello","params":{"name":"ws"},"id":2}"#,
            Some(r#"{"jsonrpc":"2.0","result":"Hello, ws!","id":2}"#),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"nope","id":3}"#,
            Some(r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":3}"#),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"add","params":"x","id":4}"#,
            Some(
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params: expected an array of numbers"},"id":4}"#,
            ),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"add","params":[1e308,1e308],"id":5}"#,
            Some(
                r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error: the sum is not a finite number"},"id":5}"#,
            ),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]"#,
            Some(r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#),
        ),
        (
            r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#,
            Some(r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#),
        ),
        (r#"[]"#, Some(r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#)),
        (r#"[1]"#, Some(r#"[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}]"#)),
        (r#"{"jsonrpc":"2.0","method":"echo","params":[1]}"#, None),
        (
            r#"[{"jsonrpc":"2.0","method":"echo","params":[1]},{"jsonrpc":"2.0","method":"echo","params":[7],"id":9}]"#,
            Some(r#"[{"jsonrpc":"2.0","result":[7],"id":9}]"#),
        ),
    ];
    for (request, want) in cases {
        ws.send_text(request).unwrap();
        if let Some(want) = want {
            assert_eq!(ws_text(&mut ws), want, "{request}");
        }
    }
    // Hostile nesting is a parse error, not a crash.
    ws.send_text(&"[".repeat(100_000)).unwrap();
    assert!(ws_text(&mut ws).contains("-32700"));
    // The notification above got no reply: the next reply is for the next request.
    ws.send_text(r#"{"jsonrpc":"2.0","method":"add","params":[40,2],"id":1}"#).unwrap();
    assert_eq!(ws_text(&mut ws), r#"{"jsonrpc":"2.0","result":42,"id":1}"#);
}

/// `examples/embed.rs`: wsgate as a library, with an app of the program's own (a counter room
/// with a topic and a timer per client).
#[test]
fn the_embedded_counter_room_counts_publishes_and_ticks() {
    use std::io::BufRead;
    let mut child = Command::new(example("embed"))
        .args(["127.0.0.1:0", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
    let _running = Running(child, scratch_dir("embed"));
    let url = format!("ws://{addr}/counter");
    let mut a = ws_open(&url);
    let mut b = ws_open(&url);
    assert_eq!(ws_text(&mut a), "count 0");
    assert_eq!(ws_text(&mut b), "count 0");
    a.send_text("+1").unwrap();
    a.send_text("+1").unwrap();
    // Both hear every change (published to the room's topic); ticks may come in between.
    for ws in [&mut a, &mut b] {
        let mut counts = Vec::new();
        while counts.len() < 2 {
            let text = ws_text(ws);
            if let Some(n) = text.strip_prefix("count ") {
                counts.push(n.to_string());
            } else {
                assert!(text.starts_with("tick "), "{text}");
            }
        }
        assert_eq!(counts, ["1", "2"]);
    }
    b.send_text("nonsense").unwrap();
    loop {
        let text = ws_text(&mut b);
        if !text.starts_with("tick ") {
            assert_eq!(text, "error: send +1 or get");
            break;
        }
    }
    // Each client's own timer: a tick with the current value.
    loop {
        let text = ws_text(&mut a);
        if text == "tick 2" {
            break;
        }
        assert!(text.starts_with("tick "), "{text}");
    }
    a.close(1000, "").unwrap();
}

#[test]
fn the_auth_proxy_app_lets_in_by_session_cookie_and_guards_private_topics() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _app = spawn_example("auth-proxy-app", &[&addr.to_string()], scratch_dir("auth-proxy-app"), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let config = format!(
        "[proxy]\nconnect_url = \"http://{addr}/connect\"\nsubscribe_url = \"http://{addr}/subscribe\"\ncookies = [\"session\"]\n\n[[route]]\npath = \"/live\"\napp = \"pubsub\"\nauth = \"proxy\"\nsubscribe_proxy = [\"private.*\"]\n"
    );
    let server = Server::with_config(&config, &[]);
    let options = wsgate::client::Options {
        headers: vec![("Cookie".into(), "theme=dark; session=s-alice".into())],
        ..Default::default()
    };
    let mut alice = ws_open_with(&server.url("/live"), &options);
    alice.send_text(r#"{"op":"subscribe","topic":"private.alice.inbox"}"#).unwrap();
    assert_eq!(ws_json(&mut alice), serde_json::json!({"op":"subscribed","topic":"private.alice.inbox"}));
    alice.send_text(r#"{"op":"subscribe","topic":"private.bob.inbox"}"#).unwrap();
    let refused = ws_json(&mut alice);
    assert_eq!((refused["code"].as_u64(), refused["message"].as_str()), (Some(403), Some("not your topic")));
    let response = http_exchange(server.addr, upgrade_request("/live", "Cookie: session=stolen\r\n").as_bytes());
    assert!(response.starts_with("HTTP/1.1 401 ") && response.ends_with("log in first"), "{response}");
}
