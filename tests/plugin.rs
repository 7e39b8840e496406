//! C plugins: built here with the system's C compiler against `include/wsgate_plugin.h`, then
//! loaded the way a route loads them.
#![allow(clippy::disallowed_methods)] // tests/common times real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use wsgate::plugin::load::{load, LoadError};

/// Compiles C `source` into a shared library named `name` in `dir`.
fn build(dir: &Path, name: &str, source: &str) -> PathBuf {
    require(&GCC);
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let lib = dir.join(format!("{name}.so"));
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = Command::new("/usr/bin/gcc")
        .args(["-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-plugin-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plugin whose init returns `body` (C statements ending in a return).
fn plugin_returning(body: &str) -> String {
    format!(
        "#include \"wsgate_plugin.h\"\n\
         static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) \
         {{ (void)p; (void)s; (void)t; (void)b; return n; }}\n\
         static WebSocketPlugin plugin = {{ sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, NULL, on_message, NULL }};\n\
         extern EXPORT WebSocketPlugin *CALLBACK init(void) {{ (void)plugin; {body} }}\n"
    )
}

#[test]
fn the_echo_example_loads_once_and_bad_plugins_say_what_is_wrong() {
    let dir = scratch("load");
    let echo_source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins/echo.c")).unwrap();
    let echo = build(&dir, "echo", &echo_source);
    let first = load(&echo, "echo_init").unwrap();
    assert!(first.plugin().on_message.is_some());
    assert!(first.plugin().on_connect.is_none());
    let again = load(&echo, "echo_init").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "loaded once per process");

    assert!(matches!(load(&dir.join("missing.so"), "init"), Err(LoadError::Open(_))));
    assert_eq!(load(&echo, "no_such_init").unwrap_err(), LoadError::NoInit("no_such_init".into()));
    let cases = [
        ("null", "return NULL;", LoadError::Null),
        ("version", "plugin.version = 1; return &plugin;", LoadError::Version(1)),
        ("small", "plugin.size = 8; return &plugin;", LoadError::TooSmall(8)),
        ("no_message", "plugin.on_message = NULL; return &plugin;", LoadError::NoOnMessage),
    ];
    for (name, body, want) in cases {
        let lib = build(&dir, name, &plugin_returning(body));
        let got = load(&lib, "init").unwrap_err();
        assert_eq!(got, want, "{name}");
        assert!(!got.to_string().is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The examples, built once per test binary into one directory.
fn examples() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("examples");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins");
        for name in ["echo", "dumb_increment"] {
            let source = std::fs::read_to_string(root.join(format!("{name}.c"))).unwrap();
            build(&dir, name, &source);
        }
        dir
    })
}

/// A config with one plugin route at `path`, plus a built-in echo at /plain.
fn plugin_config(path: &str, library: &Path, init: &str, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"{path}\"\napp = \"plugin\"\nplugin = \"{}\"\ninit = \"{init}\"\n{extra}\n\
         [[route]]\npath = \"/plain\"\napp = \"echo\"\n",
        library.display()
    )
}

/// Sends an upgrade request for `path` with `extra` header lines; returns the stream and the
/// response head.
fn upgrade(addr: std::net::SocketAddr, path: &str, extra: &str) -> (Raw, String) {
    let mut stream = tcp(addr);
    stream.write_all(upgrade_request(path, extra).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (Raw::from_stream(stream), String::from_utf8(head).unwrap())
}

fn text_of(frame: Frame) -> String {
    assert_eq!(frame.opcode, 1, "a text frame");
    String::from_utf8(frame.payload).unwrap()
}

#[test]
fn the_echo_plugin_echoes_text_binary_and_large_messages() {
    let echo = examples().join("echo.so");
    let server = Server::with_config(&plugin_config("/echo", &echo, "echo_init", ""), &[]);
    let mut ws = client(&server.url("/echo"));
    ws.send(tungstenite::Message::text("hello plugin")).unwrap();
    assert_eq!(read_text(&mut ws), "hello plugin");
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(tungstenite::Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], &big[..]),
        other => panic!("expected binary, got {other:?}"),
    }
    // A ping is the server's to answer, not the plugin's.
    ws.send(tungstenite::Message::Ping(b"p".to_vec())).unwrap();
    ws.send(tungstenite::Message::text("after ping")).unwrap();
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Pong(p) => assert_eq!(&p[..], b"p"),
            tungstenite::Message::Text(t) => {
                assert_eq!(t.as_str(), "after ping");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    server.wait_log("/echo status=101");
}

#[test]
fn dumb_increment_negotiates_counts_and_resets() {
    let lib = examples().join("dumb_increment.so");
    let config =
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n{}", plugin_config("/di", &lib, "dumb_increment_init", ""));
    let server = Server::with_config(&config, &[]);
    // Without its protocol the plugin declines: 403.
    let (_, head) = upgrade(server.addr, "/di", "");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (_, head) = upgrade(server.addr, "/di", "Sec-WebSocket-Protocol: chat, superchat\r\n");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");

    let (mut raw, head) = upgrade(server.addr, "/di", "Sec-WebSocket-Protocol: chat, dumb-increment-protocol\r\n");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: dumb-increment-protocol\r\n"), "{head}");
    for want in 0..5 {
        assert_eq!(text_of(raw.recv().unwrap()), want.to_string());
    }
    raw.send(0x81, b"reset\n");
    // Counters already in flight may come first; then it starts over from 0.
    let mut last: i64 = 4;
    loop {
        let n: i64 = text_of(raw.recv().unwrap()).parse().unwrap();
        if n < last {
            assert!(n <= 1, "after reset the counter starts over, got {n}");
            break;
        }
        last = n;
        assert!(n < 100, "reset was not applied");
    }
    raw.send(0x88, &1000u16.to_be_bytes());
    assert_eq!(raw.expect_close(), Some(1000));
    raw.expect_eof();
    // Per plugin route: two declined, one accepted, the reset received; on_disconnect ran
    // (connect, message, disconnect: three callbacks at least for the accepted one).
    wait_metrics(
        &server,
        &[
            "wsgate_plugin_connects_total{route=\"/di\",result=\"accepted\"} 1",
            "wsgate_plugin_connects_total{route=\"/di\",result=\"declined\"} 2",
            "wsgate_plugin_messages_total{route=\"/di\",direction=\"in\"} 1",
            "wsgate_plugin_queue_jobs{route=\"/di\"} 0",
            "wsgate_plugin_callbacks_total{route=\"/di\"} 5",
        ],
    );
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix("wsgate_plugin_messages_total{route=\"/di\",direction=\"out\"} "))
        .unwrap();
    assert!(sent.parse::<u64>().unwrap() >= 6, "{text}");
}

#[test]
fn a_thousand_dumb_increment_clients_count_on_a_thousand_plugin_threads() {
    const CLIENTS: usize = 1000;
    raise_fd_limit(4 * CLIENTS as u64);
    const THREADS: usize = 32;
    let lib = examples().join("dumb_increment.so");
    let extra = format!("plugin_threads = {THREADS}");
    let server = Server::with_config(&plugin_config("/di", &lib, "dumb_increment_init", &extra), &[]);
    let offer = "Sec-WebSocket-Protocol: dumb-increment-protocol\r\n";
    let mut clients: Vec<Raw> = (0..CLIENTS)
        .map(|i| {
            let (raw, head) = upgrade(server.addr, "/di", offer);
            assert!(head.starts_with("HTTP/1.1 101 "), "client {i}: {head}");
            raw
        })
        .collect();
    // Every client counts 0, 1, 2 from its own thread.
    for (i, raw) in clients.iter_mut().enumerate() {
        for want in 0..3 {
            assert_eq!(text_of(raw.recv().unwrap()), want.to_string(), "client {i}");
        }
    }
    let threads = thread_count(server.child.id());
    assert!(threads > CLIENTS, "{threads} threads in the server with {CLIENTS} clients");
    drop(clients);
    // Every on_disconnect joins its thread (each waits up to 50 ms, 32 at a time): the
    // server's threads go back to its own.
    let start = std::time::Instant::now();
    while thread_count(server.child.id()) > THREADS + 4 {
        assert!(start.elapsed() < WAIT, "threads left: {}", thread_count(server.child.id()));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// Raises this process's open-file limit to at least `want` (within the hard limit).
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A plugin whose `on_connect` reads a request header and sets response headers (a valid one,
/// and ones wsgate must refuse), and whose `on_message` answers with what the header said.
const HEADERS_PLUGIN: &str = r#"
#include <stdio.h>
#include <string.h>
#include "wsgate_plugin.h"
static char name[64];
static void *CALLBACK on_connect(const WebSocketServer *s) {
  const char *n = s->header_get(s, "x-name");
  if (n == NULL || strcmp(n, "nobody") == 0) return NULL;
  snprintf(name, sizeof name, "%s", n);
  char greeting[96];
  snprintf(greeting, sizeof greeting, "hello %s", n);
  s->header_set(s, "X-Greeting", greeting);
  s->header_set(s, "Sec-WebSocket-Accept", "forged");
  s->header_set(s, "X-Split", "a\r\nInjected: yes");
  s->header_set(s, "Bad Name", "x");
  s->protocol_set(s, "never-offered");
  if (s->request(s) != NULL) return NULL;
  /* send before on_connect returns does nothing */
  if (s->send(s, MESSAGE_TYPE_TEXT, (const unsigned char *)"early", 5) != 0) return NULL;
  return (void *)1;
}
static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) {
  (void)p; (void)b; (void)n; (void)t;
  /* header_get outside on_connect: NULL */
  const char *late = s->header_get(s, "x-name");
  char out[128];
  int len = snprintf(out, sizeof out, "%s %s", name, late == NULL ? "null" : late);
  s->send(s, MESSAGE_TYPE_TEXT, (const unsigned char *)out, (size_t)len);
  /* not UTF-8: refused */
  if (s->send(s, MESSAGE_TYPE_TEXT, (const unsigned char *)"\xff", 1) != 0) s->close(s);
  /* a ping and a pong the plugin sends */
  s->send(s, MESSAGE_TYPE_PING, (const unsigned char *)"pi", 2);
  return 0;
}
static WebSocketPlugin plugin = { sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, on_connect, on_message, NULL };
extern EXPORT WebSocketPlugin *CALLBACK headers_init(void) { return &plugin; }
"#;

#[test]
fn on_connect_reads_request_headers_and_sets_response_headers() {
    let dir = scratch("headers");
    let lib = build(&dir, "headers", HEADERS_PLUGIN);
    let server = Server::with_config(&plugin_config("/h", &lib, "headers_init", ""), &[]);
    let (_, head) = upgrade(server.addr, "/h", "X-Name: nobody\r\n");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (mut raw, head) = upgrade(server.addr, "/h", "X-Name: ada\r\nSec-WebSocket-Protocol: p1, p2\r\n");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("\r\nX-Greeting: hello ada\r\n"), "{head}");
    assert!(!head.contains("forged") && !head.contains("Injected") && !head.contains("Bad Name"), "{head}");
    // apache-websocket's default: the first subprotocol offered (protocol_set of one not
    // offered is ignored).
    assert!(head.contains("Sec-WebSocket-Protocol: p1\r\n"), "{head}");
    assert_eq!(head.matches("Sec-WebSocket-Accept").count(), 1, "{head}");
    raw.send(0x81, b"hi");
    assert_eq!(text_of(raw.recv().unwrap()), "ada null");
    let ping = raw.recv().unwrap();
    assert_eq!((ping.opcode, &ping.payload[..]), (9, &b"pi"[..]));
    raw.send(0x88, &1000u16.to_be_bytes());
    assert_eq!(raw.expect_close(), Some(1000));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plugin that blocks in its callbacks: `on_message` sleeps 3 s before answering.
const SLOW_PLUGIN: &str = r#"
#include <time.h>
#include "wsgate_plugin.h"
static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) {
  (void)p;
  struct timespec pause = { 3, 0 };
  nanosleep(&pause, NULL);
  return s->send(s, t, b, n);
}
static WebSocketPlugin plugin = { sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, NULL, on_message, NULL };
extern EXPORT WebSocketPlugin *CALLBACK slow_init(void) { return &plugin; }
"#;

#[test]
fn a_plugin_blocking_in_a_callback_does_not_stall_other_routes() {
    let dir = scratch("slow");
    let lib = build(&dir, "slow", SLOW_PLUGIN);
    let server = Server::with_config(&plugin_config("/slow", &lib, "slow_init", ""), &[]);
    let mut slow = client(&server.url("/slow"));
    slow.send(tungstenite::Message::text("wait for me")).unwrap();
    // While the plugin sleeps (3 s), the built-in echo on the same worker answers at once:
    // a hundred round trips before the plugin's answer.
    let mut plain = client(&server.url("/plain"));
    for i in 0..100 {
        plain.send(tungstenite::Message::text(format!("{i}"))).unwrap();
        assert_eq!(read_text(&mut plain), i.to_string());
    }
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = slow.get_ref() {
        s.set_nonblocking(true).unwrap();
    }
    match slow.read() {
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the plugin answered before the echo's 100 round trips: {other:?}"),
    }
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = slow.get_ref() {
        s.set_nonblocking(false).unwrap();
    }
    assert_eq!(read_text(&mut slow), "wait for me");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plugin whose own thread goes on calling `send` and `close` after `on_disconnect`
/// returned (the harmless-afterwards guarantee): `on_connect` starts a detached thread that
/// sends for a second, whatever happens to the connection.
const LATE_PLUGIN: &str = r#"
#include <pthread.h>
#include <time.h>
#include "wsgate_plugin.h"
static void *run(void *data) {
  const WebSocketServer *s = data;
  const struct timespec tick = { 0, 2 * 1000 * 1000 };
  for (int i = 0; i < 500; i++) {
    s->send(s, MESSAGE_TYPE_TEXT, (const unsigned char *)"tick", 4);
    nanosleep(&tick, NULL);
  }
  s->close(s);
  return NULL;
}
static void *CALLBACK on_connect(const WebSocketServer *s) {
  pthread_t t;
  if (pthread_create(&t, NULL, run, (void *)s) != 0) return NULL;
  pthread_detach(t);
  return (void *)1;
}
static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) {
  (void)p; (void)s; (void)t; (void)b; (void)n;
  return 0;
}
static void CALLBACK on_disconnect(void *p, const WebSocketServer *s) { (void)p; (void)s; }
static WebSocketPlugin plugin = { sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, on_connect, on_message, on_disconnect };
extern EXPORT WebSocketPlugin *CALLBACK late_init(void) { return &plugin; }
"#;

#[test]
fn sends_after_on_disconnect_do_nothing() {
    let dir = scratch("late");
    let lib = build(&dir, "late", LATE_PLUGIN);
    let server = Server::with_config(&plugin_config("/late", &lib, "late_init", ""), &[]);
    for _ in 0..20 {
        let (mut raw, head) = upgrade(server.addr, "/late", "");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(text_of(raw.recv().unwrap()), "tick");
        // Gone at once: the plugin's thread sends on for a second, into a closed connection.
        drop(raw);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut plain = client(&server.url("/plain"));
    plain.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(read_text(&mut plain), "still here");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_refused_configuration_names_its_key_and_line() {
    let dir = scratch("refused");
    let echo = examples().join("echo.so");
    let null = build(&dir, "null", &plugin_returning("return NULL;"));
    let cases: Vec<(String, &str)> = vec![
        (plugin_config("/p", &dir.join("missing.so"), "echo_init", ""), "route.plugin"),
        (plugin_config("/p", &echo, "no_such_init", ""), "route.init"),
        (plugin_config("/p", &null, "init", ""), "returned NULL"),
        ("[[route]]\npath = \"/p\"\napp = \"plugin\"\ninit = \"echo_init\"\n".into(), "needs plugin"),
        (format!("[[route]]\npath = \"/p\"\napp = \"plugin\"\nplugin = \"{}\"\n", echo.display()), "needs plugin"),
        (format!("[[route]]\npath = \"/p\"\napp = \"echo\"\nplugin = \"{}\"\n", echo.display()), "belong to plugin"),
        (plugin_config("/p", &echo, "echo_init", "legacy = [\"hixie-76\"]\norigins = [\"http://a\"]"), "RFC 6455 only"),
    ];
    for (config, want) in cases {
        let path = dir.join("refused.toml");
        std::fs::write(&path, &config).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_wsgate")).arg("--check-config").arg("-c").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{config}");
        assert!(stderr.contains(want) && stderr.contains("line 1"), "{want:?} not in {stderr}\n{config}");
    }
    // From the command line: PATH=plugin:LIBRARY#INIT.
    let out =
        Command::new(env!("CARGO_BIN_EXE_wsgate")).args(["--check-config", "--route", "/p=plugin"]).output().unwrap();
    assert!(!out.status.success());
    let route = format!("/p=plugin:{}#echo_init", echo.display());
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate")).args(["--check-config", "--route", &route]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replies_to_messages_before_a_protocol_error_come_before_the_close() {
    let echo = examples().join("echo.so");
    let server = Server::with_config(&plugin_config("/echo", &echo, "echo_init", ""), &[]);
    for _ in 0..20 {
        let mut raw = Raw::connect(server.addr, "/echo");
        let mut burst = masked_frame(0x81, b"first");
        burst.extend(masked_frame(0x81, b"second"));
        burst.extend(masked_frame(0xC1, b"rsv1 without an extension"));
        raw.send_raw(&burst);
        assert_eq!(text_of(raw.recv().unwrap()), "first");
        assert_eq!(text_of(raw.recv().unwrap()), "second");
        assert_eq!(raw.expect_close(), Some(1002));
    }
}

/// `examples/plugins/rust`, built with cargo into a directory of its own (the outer build's
/// target directory may be locked).
fn rust_plugin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/plugin-example");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("examples/plugins/rust/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    target.join("release/libwsgate_plugin_rust.so")
}

#[test]
fn a_plugin_in_rust_on_the_same_abi() {
    let lib = rust_plugin();
    let server = Server::with_config(&plugin_config("/numbered", &lib, "numbered_init", ""), &[]);
    let (mut raw, head) = upgrade(server.addr, "/numbered", "Sec-WebSocket-Protocol: other, numbered\r\n");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: numbered\r\n"), "{head}");
    raw.send(0x81, b"hello");
    assert_eq!(text_of(raw.recv().unwrap()), "1: hello");
    raw.send(0x82, &[0, 1, 2, 255]);
    let binary = raw.recv().unwrap();
    assert_eq!((binary.opcode, &binary.payload[..]), (2, &[0u8, 1, 2, 255][..]));
    raw.send(0x81, "héllo".as_bytes());
    assert_eq!(text_of(raw.recv().unwrap()), "3: héllo");
    raw.send(0x88, &1000u16.to_be_bytes());
    assert_eq!(raw.expect_close(), Some(1000));
}

/// A plugin that takes a second per message.
const SLUGGISH_PLUGIN: &str = r#"
#include <time.h>
#include "wsgate_plugin.h"
static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) {
  (void)p; (void)s; (void)t; (void)b; (void)n;
  struct timespec pause = { 1, 0 };
  nanosleep(&pause, NULL);
  return 0;
}
static WebSocketPlugin plugin = { sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, NULL, on_message, NULL };
extern EXPORT WebSocketPlugin *CALLBACK sluggish_init(void) { return &plugin; }
"#;

#[test]
fn a_client_flooding_a_slow_plugin_stops_being_read() {
    let dir = scratch("sluggish");
    let lib = build(&dir, "sluggish", SLUGGISH_PLUGIN);
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        plugin_config("/slow", &lib, "sluggish_init", "backpressure_high = \"256KiB\"")
    );
    let server = Server::with_config(&config, &[]);
    let mut raw = Raw::connect(server.addr, "/slow");
    let frame = masked_frame(0x82, &[7u8; 64 << 10]);
    // The plugin takes a message a second: the server stops reading once 256 KiB wait for
    // it, and the client's writes block after that plus what the sockets' buffers hold.
    let sent = write_until_blocked(&mut raw.stream, &frame, 256 << 20);
    assert!(sent < 32 << 20, "{sent} bytes taken from a client the plugin cannot keep up with");
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    let queued: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wsgate_plugin_queue_jobs{route=\"/slow\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(queued <= 8, "{queued} jobs queued: more than backpressure_high's worth of 64 KiB messages");
    // Another client of the same route is still served.
    let mut other = Raw::connect(server.addr, "/slow");
    other.send(0x88, &1000u16.to_be_bytes());
    assert_eq!(other.expect_close(), Some(1000));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_keeps_the_plugin_threads_and_its_clients() {
    let echo = examples().join("echo.so");
    let server = Server::with_config(&plugin_config("/echo", &echo, "echo_init", ""), &[]);
    let mut before = Raw::connect(server.addr, "/echo");
    before.send(0x81, b"one");
    assert_eq!(text_of(before.recv().unwrap()), "one");
    let threads = thread_count(server.child.id());
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: configuration reloaded: 2 route(s)");
    // The reloaded route (a new route id, the same plugin) uses the same threads.
    let mut after = Raw::connect(server.addr, "/echo");
    after.send(0x81, b"two");
    assert_eq!(text_of(after.recv().unwrap()), "two");
    before.send(0x81, b"three");
    assert_eq!(text_of(before.recv().unwrap()), "three");
    assert_eq!(thread_count(server.child.id()), threads, "a reload started plugin threads");
}

/// A plugin whose `on_connect` takes two seconds.
const HESITANT_PLUGIN: &str = r#"
#include <time.h>
#include "wsgate_plugin.h"
static void *CALLBACK on_connect(const WebSocketServer *s) {
  (void)s;
  struct timespec pause = { 2, 0 };
  nanosleep(&pause, NULL);
  return (void *)1;
}
static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) {
  (void)p; (void)s; (void)t; (void)b; (void)n;
  return 0;
}
static WebSocketPlugin plugin = { sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, on_connect, on_message, NULL };
extern EXPORT WebSocketPlugin *CALLBACK hesitant_init(void) { return &plugin; }
"#;

#[test]
fn upgrades_waiting_for_on_connect_get_a_503_at_the_deadline_or_the_drain() {
    let dir = scratch("hesitant");
    let lib = build(&dir, "hesitant", HESITANT_PLUGIN);
    let config = format!("[limits]\nhandshake_timeout = \"500ms\"\n{}", plugin_config("/h", &lib, "hesitant_init", ""));
    let server = Server::with_config(&config, &[]);
    let (_, head) = upgrade(server.addr, "/h", "");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    let config = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{}", plugin_config("/h", &lib, "hesitant_init", ""));
    let mut server = Server::with_config(&config, &[]);
    let waiting = std::thread::spawn({
        let addr = server.addr;
        move || upgrade(addr, "/h", "").1
    });
    // The route's threads exist and have taken the job: on_connect is running.
    wait_metrics(&server, &["wsgate_plugin_queue_jobs{route=\"/h\"} 0"]);
    server.signal(libc::SIGTERM);
    let head = waiting.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert_eq!(server.wait_exit(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
