//! The example backends behind the real gateway (chat with -w commands, JSON-RPC), and the
//! peers docs/performance.md measures with (unix-echo, unix-ws-echo, unix-relay, uring-relay):
//! a figure from a peer that does not echo correctly would mean nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

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
    if unsafe { libc::geteuid() } == 0 {
        args.extend(["-u", "nobody"]);
    }
    Server::start(&args)
}

fn text(ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn chat_broadcasts_and_answers_commands() {
    let (_backend, socket) = start_backend("backend-chat", &["-w", "-f", "framed"]);
    let server = gateway(&format!("/chat=unix:{}#framed", socket.display()));
    let mut alice = client(&server.url("/chat"));
    let mut bob = client(&server.url("/chat"));
    alice.send(Message::text("WSHello alice")).unwrap();
    assert_eq!(text(&mut alice), "WSWelcome alice");
    bob.send(Message::text("WSHello bob")).unwrap();
    assert_eq!(text(&mut bob), "WSWelcome bob");
    bob.send(Message::text("hi all")).unwrap();
    assert_eq!(text(&mut alice), "hi all");
    alice.send(Message::text("WSPrivate bob just for you")).unwrap();
    assert_eq!(text(&mut bob), "just for you");
    alice.send(Message::text("WSWhois bob")).unwrap();
    let whois = text(&mut alice);
    assert!(whois.starts_with("WSIs bob 127.0.0.1:"), "{whois}");
    alice.send(Message::text("WSWhois carol")).unwrap();
    assert_eq!(text(&mut alice), "WSUnknown carol");
}

#[test]
fn jsonrpc_over_lines() {
    let (_backend, socket) = start_backend("backend-jsonrpc", &["-f", "lines"]);
    let server = gateway(&format!("/rpc=unix:{}#lines", socket.display()));
    let mut ws = client(&server.url("/rpc"));
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
        ws.send(Message::text(request)).unwrap();
        if let Some(want) = want {
            assert_eq!(text(&mut ws), want, "{request}");
        }
    }
    // Hostile nesting is a parse error, not a crash.
    ws.send(Message::text("[".repeat(100_000))).unwrap();
    assert!(text(&mut ws).contains("-32700"));
    // The notification above got no reply: the next reply is for the next request.
    ws.send(Message::text(r#"{"jsonrpc":"2.0","method":"add","params":[40,2],"id":1}"#)).unwrap();
    assert_eq!(text(&mut ws), r#"{"jsonrpc":"2.0","result":42,"id":1}"#);
}

/// A loopback port nothing listens on (bound and released; the peer binds it next).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Sends `payload` in one write and reads back exactly as many bytes.
fn round_trip(stream: &mut (impl Read + Write), payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

/// unix-echo behind `relay` (unix-relay or uring-relay): bytes come back intact, at every size
/// from one byte to more than a socket buffer (which makes the relay's writes block).
fn check_relay(relay: &str) {
    let dir = scratch_dir(relay);
    let echo_path = dir.join("echo");
    let _echo = spawn_example("unix-echo", &[echo_path.to_str().unwrap()], dir.clone(), || echo_path.exists());
    let addr = free_port();
    let addr_arg = addr.to_string();
    let _relay = spawn_example(relay, &[&addr_arg, echo_path.to_str().unwrap()], PathBuf::new(), || {
        TcpStream::connect(addr).is_ok()
    });
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &clients {
        c.set_read_timeout(Some(WAIT)).unwrap();
    }
    for (i, size) in [1usize, 20, 1024, 65_536, 3 << 20].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        let c = &mut clients[i % 3];
        // Big payloads: write from a thread, or both directions fill up and deadlock the test.
        let mut writer = c.try_clone().unwrap();
        let sent = payload.clone();
        let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut back = vec![0; size];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
        assert!(back == payload, "{relay}: {size} bytes came back different");
    }
    assert_eq!(round_trip(&mut clients[0], b"still there"), b"still there");
}

#[test]
fn unix_relay_relays_both_ways() {
    check_relay("unix-relay");
}

#[test]
fn uring_relay_relays_both_ways() {
    // io_uring can be disabled (kernel.io_uring_disabled, seccomp in containers); then there is
    // no figure to measure and nothing to check.
    let ring = unsafe {
        let mut params: [u8; 120] = [0; 120];
        libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr())
    };
    if ring < 0 {
        eprintln!("io_uring unavailable here ({}); skipped", std::io::Error::last_os_error());
        return;
    }
    unsafe { libc::close(ring as i32) };
    check_relay("uring-relay");
}

#[test]
fn unix_ws_echo_speaks_websocket() {
    let dir = scratch_dir("unix-ws-echo");
    let path = dir.join("ws");
    let _echo = spawn_example("unix-ws-echo", &[path.to_str().unwrap()], dir.clone(), || path.exists());
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, _) = tungstenite::client("ws://localhost/app", stream).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for message in [Message::text("hello"), Message::binary(vec![0u8, 255, 10]), Message::binary(big)] {
        ws.send(message.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), message);
    }
    ws.send(Message::Ping(b"p".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec()));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("after close: {other:?}"),
        }
    }
}
