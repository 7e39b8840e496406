//! wss:// end to end: rustls client + tungstenite against the real binary.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

type Wss = tungstenite::WebSocket<StreamOwned<ClientConnection, TcpStream>>;

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn make_cert(names: &[&str]) -> Cert {
    let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    Cert { pem: ck.cert.pem(), key: ck.key_pair.serialize_pem(), der: ck.cert.der().clone() }
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("wsgate-tls-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client_config(trusted: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn wss_connect(addr: SocketAddr, name: &str, trusted: &[&CertificateDer<'static>]) -> Result<Wss, String> {
    let conn = ClientConnection::new(client_config(trusted), ServerName::try_from(name.to_string()).unwrap())
        .map_err(|e| e.to_string())?;
    let tcp = tcp(addr);
    let stream = StreamOwned::new(conn, tcp);
    let url = format!("wss://{name}:{}/echo", addr.port());
    let (ws, response) = tungstenite::client(url, stream).map_err(|e| e.to_string())?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

fn peer_cert(ws: &Wss) -> CertificateDer<'static> {
    ws.get_ref().conn.peer_certificates().unwrap()[0].clone()
}

fn start_tls(dir: &Dir, cert: &Cert, extra: &[&str]) -> Server {
    let c = dir.write("server.pem", &cert.pem);
    let k = dir.write("server.key", &cert.key);
    let mut args = vec!["--tls-cert", &c, "--tls-key", &k];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn wss_echo_text_binary_large_and_close() {
    let dir = Dir::new("echo");
    let cert = make_cert(&["localhost"]);
    let server = start_tls(&dir, &cert, &[]);
    server.wait_log("(tls)");
    let mut ws = wss_connect(server.addr, "localhost", &[&cert.der]).unwrap();
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    ws.send(Message::text("over tls")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("over tls"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(ws);
    server.wait_log("/echo status=101");
}

#[test]
fn sni_selects_the_certificate() {
    let dir = Dir::new("sni");
    let default = make_cert(&["localhost"]);
    let alt = make_cert(&["alt.test"]);
    let wild = make_cert(&["x.apps.test"]);
    let config = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n\
[[listener.tls.sni]]\nnames = [\"alt.test\"]\ncert = \"{}\"\nkey = \"{}\"\n\
[[listener.tls.sni]]\nnames = [\"*.apps.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.write("d.pem", &default.pem),
        dir.write("d.key", &default.key),
        dir.write("a.pem", &alt.pem),
        dir.write("a.key", &alt.key),
        dir.write("w.pem", &wild.pem),
        dir.write("w.key", &wild.key),
    );
    // -l from the harness replaces the file's addresses, so use the file's listener only:
    // start with a config and no -l by binding port 0 in the file.
    let server = Server::with_config_only(&config);
    let all = [&default.der, &alt.der, &wild.der];
    let ws = wss_connect(server.addr, "alt.test", &all).unwrap();
    assert_eq!(peer_cert(&ws), alt.der);
    let ws = wss_connect(server.addr, "x.apps.test", &all).unwrap();
    assert_eq!(peer_cert(&ws), wild.der);
    let ws = wss_connect(server.addr, "localhost", &all).unwrap();
    assert_eq!(peer_cert(&ws), default.der);
}

#[test]
fn sighup_reloads_certificates_without_touching_open_connections() {
    let dir = Dir::new("reload");
    let old = make_cert(&["localhost"]);
    let new = make_cert(&["localhost"]);
    let server = start_tls(&dir, &old, &[]);
    let mut kept = wss_connect(server.addr, "localhost", &[&old.der]).unwrap();
    kept.send(Message::text("before")).unwrap();
    assert_eq!(kept.read().unwrap(), Message::text("before"));

    dir.write("server.pem", &new.pem);
    dir.write("server.key", &new.key);
    server.signal(libc::SIGHUP);
    server.wait_log("reloaded certificates for 1 TLS listener");

    // New handshakes get the new certificate; the open connection carries on.
    let fresh = wss_connect(server.addr, "localhost", &[&new.der]).unwrap();
    assert_eq!(peer_cert(&fresh), new.der);
    assert!(wss_connect(server.addr, "localhost", &[&old.der]).is_err());
    kept.send(Message::text("after")).unwrap();
    assert_eq!(kept.read().unwrap(), Message::text("after"));

    // A broken key: the error names the file, the certificate in use stays.
    dir.write("server.key", "not a key\n");
    server.signal(libc::SIGHUP);
    let line = server.wait_log("keeping the certificates in use");
    assert!(line.contains("server.key"), "{line}");
    let again = wss_connect(server.addr, "localhost", &[&new.der]).unwrap();
    assert_eq!(peer_cert(&again), new.der);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port() {
    let dir = Dir::new("garbage");
    let cert = make_cert(&["localhost"]);
    let server = start_tls(&dir, &cert, &[]);
    let response = http_exchange(server.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400 ") && response.contains("speaks TLS"), "{response}");
    // Binary garbage: closed without a word.
    let response = http_exchange(server.addr, &[0x00, 0xFF, 0x13, 0x37, 0x42]);
    assert!(response.is_empty(), "{response:?}");
    // A TLS record header followed by nonsense: rustls refuses, the server closes.
    let mut s = tcp(server.addr);
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.len() < 64, "at most an alert comes back");
    // Still serving.
    let mut ws = wss_connect(server.addr, "localhost", &[&cert.der]).unwrap();
    ws.send(Message::text("fine")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("fine"));
    server.wait_log("plain HTTP on a TLS port");
}

#[test]
fn tls_handshake_timeout() {
    let dir = Dir::new("timeout");
    let cert = make_cert(&["localhost"]);
    let c = dir.write("c.pem", &cert.pem);
    let k = dir.write("c.key", &cert.key);
    let server =
        Server::with_config("[limits]\ntls_handshake_timeout = \"300ms\"\n", &["--tls-cert", &c, "--tls-key", &k]);
    let mut s = tcp(server.addr);
    s.write_all(&[0x16, 0x03, 0x01]).unwrap(); // the start of a ClientHello, then silence
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    server.wait_log("TLS handshake timeout");
}

#[test]
fn certificate_errors_name_the_file() {
    let dir = Dir::new("errors");
    let a = make_cert(&["localhost"]);
    let b = make_cert(&["localhost"]);
    let cert = dir.write("a.pem", &a.pem);
    let other_key = dir.write("b.key", &b.key);
    let missing = dir.0.join("missing.key");
    let run = |c: &str, k: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["-l", "127.0.0.1:0", "--tls-cert", c, "--tls-key", k.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap()
    };
    let out = run(&cert, &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing.key") && err.contains("missing"), "{err}");
    let out = run(&cert, Path::new(&other_key));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not match"), "{err}");
    let _ = Duration::ZERO;
}

/// The request can ride in the same segment as the client's Finished (wstest does this): it
/// must not be lost while the connection moves from the TLS handshake to HTTP.
#[test]
fn request_in_the_same_flight_as_the_client_finished() {
    let dir = Dir::new("flight");
    let cert = make_cert(&["localhost"]);
    let server = start_tls(&dir, &cert, &[]);
    let mut conn =
        ClientConnection::new(client_config(&[&cert.der]), ServerName::try_from("localhost").unwrap()).unwrap();
    // Buffered by rustls now, sent together with Finished once the server's flight arrives.
    conn.writer().write_all(upgrade_request("/echo", "").as_bytes()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp(server.addr));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
}

/// An idle TLS connection holds no buffers (rustls' buffered API kept 4 KiB per connection):
/// a few hundred of them, once the buffer pool has shrunk back, cost a bounded amount each.
/// A regression guard, not a benchmark: `scripts/memory.py tls` measures it (about 4 KiB).
#[test]
fn idle_tls_connections_hold_no_buffers() {
    const CLIENTS: usize = 300;
    let dir = Dir::new("idle");
    let cert = make_cert(&["localhost"]);
    let server = start_tls(&dir, &cert, &[]);
    let mut warm = wss_connect(server.addr, "localhost", &[&cert.der]).unwrap();
    warm.send(Message::text("warm")).unwrap();
    assert_eq!(warm.read().unwrap(), Message::text("warm"));
    let before = server.rss_kib();
    let clients: Vec<Wss> =
        (0..CLIENTS).map(|_| wss_connect(server.addr, "localhost", &[&cert.der]).unwrap()).collect();
    // Two housekeeping ticks: the read buffers the handshakes used leave the pool.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let grown = server.rss_kib().saturating_sub(before);
    eprintln!("{CLIENTS} idle TLS connections: RSS grew {grown} KiB");
    assert!(grown < (CLIENTS as u64) * 7, "{CLIENTS} idle TLS connections grew RSS by {grown} KiB");
    drop(clients);
}

/// A real ClientHello, as rustls' client writes it.
fn client_hello(cert: &Cert) -> Vec<u8> {
    let mut conn =
        ClientConnection::new(client_config(&[&cert.der]), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100 && hello[0] == 0x16, "{hello:?}");
    hello
}

/// Clients that send part of their first TLS record and go silent cost their bytes, not a
/// 64 KiB read buffer each (52 KB per client before the fix; `scripts/memory.py
/// tls-partial-header tls-partial-hello` measures about 2.5 KB). A regression guard with a
/// generous bound, not a benchmark.
#[test]
fn partial_client_hellos_do_not_pin_read_buffers() {
    const CLIENTS: usize = 300;
    let dir = Dir::new("partial");
    let cert = make_cert(&["localhost"]);
    let server = start_tls(&dir, &cert, &[]);
    let hello = client_hello(&cert);
    for cut in [5, hello.len() / 2] {
        let before = server.rss_kib();
        let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| tcp(server.addr)).collect();
        for c in &mut clients {
            c.write_all(&hello[..cut]).unwrap();
        }
        // Every connection was read: a complete handshake after them works (the listener
        // accepts and serves in order on one worker).
        let mut probe = wss_connect(server.addr, "localhost", &[&cert.der]).unwrap();
        probe.send(Message::text("after")).unwrap();
        assert_eq!(probe.read().unwrap(), Message::text("after"));
        std::thread::sleep(Duration::from_millis(300));
        let grown = server.rss_kib().saturating_sub(before);
        eprintln!("{CLIENTS} clients holding {cut} bytes of a ClientHello: RSS grew {grown} KiB");
        // 64 KiB each would be 19 MiB; 16 KiB each is the bound.
        assert!(
            grown < (CLIENTS as u64) * 16,
            "{CLIENTS} clients with {cut} bytes of a ClientHello grew RSS {grown} KiB"
        );
    }
}

/// The TLS families of `/metrics`: a finished handshake, and three that failed (plain HTTP on
/// the TLS port, garbage, a client that does not trust the certificate).
#[test]
fn tls_metrics_count_handshakes_and_failures() {
    let dir = Dir::new("metrics");
    let cert = make_cert(&["localhost"]);
    let c = dir.write("server.pem", &cert.pem);
    let k = dir.write("server.key", &cert.key);
    let server = Server::with_config_only(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{c}\", key = \"{k}\" }}\n"
    ));
    let mut ws = wss_connect(server.addr, "localhost", &[&cert.der]).unwrap();
    ws.send(Message::text("x")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("x"));
    let reply = http_exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let _ = http_exchange(server.addr, b"\x00\x01garbage\r\n\r\n");
    let other = make_cert(&["localhost"]);
    assert!(wss_connect(server.addr, "localhost", &[&other.der]).is_err());
    wait_metrics(
        &server,
        &["wsgate_tls_handshakes_total{result=\"ok\"} 1", "wsgate_tls_handshakes_total{result=\"failed\"} 3"],
    );
}
