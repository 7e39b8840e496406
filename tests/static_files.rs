//! `static = DIR` routes (`--static DIR`): files next to the WebSockets. GET, HEAD, the
//! validators and their 304s, index.html, keep-alive with pipelining, every traversal form,
//! symlinks, large files to readers that stop (plain: sendfile; TLS: one chunk), and a page
//! in headless Chromium that opens a WebSocket to a chat room of the same server.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A directory of files for one test, removed on drop.
struct Site(PathBuf);

impl Site {
    fn new(tag: &str) -> Site {
        let root = std::env::temp_dir().join(format!("wsgate-static-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("www/docs")).unwrap();
        std::fs::create_dir_all(root.join("www/empty")).unwrap();
        std::fs::write(root.join("www/index.html"), "<!doctype html><title>home</title>\n").unwrap();
        std::fs::write(root.join("www/docs/index.html"), "<p>docs</p>\n").unwrap();
        std::fs::write(root.join("www/app.js"), "console.log(1);\n").unwrap();
        std::fs::write(root.join("www/style.css"), "body{}\n").unwrap();
        std::fs::write(root.join("www/data.bin"), [0u8, 1, 2, 3]).unwrap();
        std::fs::write(root.join("www/.secret"), "hidden\n").unwrap();
        std::fs::write(root.join("outside.txt"), "outside\n").unwrap();
        std::os::unix::fs::symlink("../outside.txt", root.join("www/out-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("www/abs-link")).unwrap();
        std::os::unix::fs::symlink("style.css", root.join("www/in-link.css")).unwrap();
        Site(root)
    }

    fn www(&self) -> String {
        self.0.join("www").to_str().unwrap().to_string()
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join("www").join(rel);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One response read off a stream: status, headers (lower-case names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_only`: a HEAD (no body whatever Content-Length says).
fn read_response(s: &mut impl Read, pending: &mut Vec<u8>, head_only: bool) -> Resp {
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF inside a head: {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(pending[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    pending.drain(..head_end);
    let length: usize = if head_only || status == 304 {
        0
    } else {
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap())
    };
    while pending.len() < length {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF inside a body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending.drain(..length).collect();
    Resp { status, headers, body }
}

fn get(addr: std::net::SocketAddr, request: &str) -> Resp {
    let mut s = tcp(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), request.starts_with("HEAD "))
}

fn simple(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> Resp {
    get(addr, &format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"))
}

#[test]
fn files_heads_types_validators_and_errors() {
    let site = Site::new("basics");
    let server = Server::start(&["--static", &site.www()]);
    let a = server.addr;

    let r = simple(a, "GET", "/", "");
    assert_eq!((r.status, r.body.as_slice()), (200, b"<!doctype html><title>home</title>\n".as_slice()));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    for (path, ty) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.bin", "application/octet-stream"),
        ("/in-link.css", "text/css; charset=utf-8"),
    ] {
        let r = simple(a, "GET", path, "");
        assert_eq!(r.status, 200, "{path}");
        let ty_ok = r.header("content-type") == Some(ty)
            || (path == "/app.js" && r.header("content-type") == Some("application/javascript; charset=utf-8"));
        assert!(ty_ok, "{path}: {:?}", r.header("content-type"));
        assert_eq!(r.header("content-length").unwrap(), r.body.len().to_string());
    }
    // A directory: its index.html; without the slash, a redirect to it (relative links).
    assert_eq!(simple(a, "GET", "/docs/", "").body, b"<p>docs</p>\n");
    let r = simple(a, "GET", "/docs?x=1", "");
    assert_eq!((r.status, r.header("location")), (301, Some("/docs/?x=1")));
    assert_eq!(simple(a, "GET", "/empty/", "").status, 403, "no listings");
    assert_eq!(simple(a, "GET", "/missing.html", "").status, 404);
    assert_eq!(simple(a, "GET", "/style.css/", "").status, 404);

    // HEAD: the same headers, no body.
    let head = simple(a, "HEAD", "/style.css", "");
    assert_eq!((head.status, head.header("content-length")), (200, Some("7")));
    assert!(head.body.is_empty());
    let r = simple(a, "POST", "/style.css", "Content-Length: 0\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    // Validators: ETag first, then Last-Modified; weak and lists compare too.
    let r = simple(a, "GET", "/style.css", "");
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    for extra in [
        format!("If-None-Match: {etag}\r\n"),
        format!("If-None-Match: \"nope\", W/{etag}\r\n"),
        "If-None-Match: *\r\n".to_string(),
        format!("If-Modified-Since: {modified}\r\n"),
    ] {
        let r = simple(a, "GET", "/style.css", &extra);
        assert_eq!(r.status, 304, "{extra}");
        assert!(r.body.is_empty() && r.header("etag") == Some(etag.as_str()), "{extra}");
    }
    for extra in [
        "If-None-Match: \"other\"\r\n".to_string(),
        // If-None-Match decides when present, even against a matching date.
        format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {modified}\r\n"),
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n".to_string(),
        "If-Modified-Since: garbage\r\n".to_string(),
    ] {
        assert_eq!(simple(a, "GET", "/style.css", &extra).status, 200, "{extra}");
    }
    // A rewrite changes the ETag.
    site.write("style.css", b"body{color:red}\n");
    let r = simple(a, "GET", "/style.css", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (200, b"body{color:red}\n".as_slice()));

    // The WebSocket routes still work next to the files.
    let mut ws = ws_open(&server.url("/echo"));
    ws.send_text("hi").unwrap();
    assert_eq!(ws_text(&mut ws), "hi");
}

/// Every way out of the directory, in every encoding, is refused; nothing outside is read.
#[test]
fn never_outside_the_directory() {
    let site = Site::new("traversal");
    let server = Server::start(&["--static", &site.www()]);
    for path in [
        "/..",
        "/../outside.txt",
        "/docs/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/..%2foutside.txt",
        "/%2e%2e%2foutside.txt",
        "/docs%2f..%2f..%2foutside.txt",
        "/.%2e/outside.txt",
        "/%c0%ae%c0%ae/outside.txt",
        "/..\\outside.txt",
        "/.secret",
        "/%2esecret",
        "/a%00.html",
        "//etc/passwd",
        "/docs//index.html",
    ] {
        let r = simple(server.addr, "GET", path, "");
        assert_eq!(r.status, 403, "{path}: {}", String::from_utf8_lossy(&r.body));
    }
    // Symlinks leading out are refused, absolute or relative; inside ones are followed.
    assert_eq!(simple(server.addr, "GET", "/out-link", "").status, 403);
    assert_eq!(simple(server.addr, "GET", "/abs-link", "").status, 403);
    assert_eq!(simple(server.addr, "GET", "/in-link.css", "").status, 200);
    // An absolute-form target is not a path under the route.
    let r = get(server.addr, "GET http://x/../outside.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.status >= 400, "{}", r.status);
    // A NUL in the request line itself is refused by the parser.
    let r = http_exchange(server.addr, b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
}

/// Requests pipelined in one write, a large file between small ones, all answered in order on
/// one connection; HTTP/1.0 and `Connection: close` end it.
#[test]
fn keep_alive_and_pipelining() {
    let site = Site::new("pipeline");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    site.write("big.bin", &big);
    let server = Server::start(&["--static", &site.www()]);
    let mut s = tcp(server.addr);
    s.write_all(
        b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n\
HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut s, &mut pending, false).body, b"body{}\n");
    let r = read_response(&mut s, &mut pending, false);
    assert!(r.status == 200 && r.body == big, "the big file arrived whole");
    assert_eq!(read_response(&mut s, &mut pending, true).header("content-length"), Some("16"));
    assert_eq!(read_response(&mut s, &mut pending, false).status, 404);
    assert_eq!(read_response(&mut s, &mut pending, false).body, b"<p>docs</p>\n");
    // Still open: one more.
    s.write_all(b"GET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(s);
    let line = server.wait_log("6 requests served");
    assert!(line.contains("closed after the response"), "{line}");
    let r = http_exchange(server.addr, b"GET /style.css HTTP/1.0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\nbody{}\n") && r.contains("Connection: close"),
        "{r}"
    );
}

/// `static = "DIR"` in a file, under a prefix, with the key's errors.
#[test]
fn config_key_prefix_route_and_errors() {
    let site = Site::new("config");
    let server = Server::with_config(
        &format!(
            "[[route]]\npath = \"/site\"\nstatic = \"{}\"\n[[route]]\npath = \"/site/ws\"\napp = \"echo\"\n",
            site.www()
        ),
        &[],
    );
    assert_eq!(simple(server.addr, "GET", "/site/style.css", "").body, b"body{}\n");
    assert_eq!(simple(server.addr, "GET", "/site/", "").status, 200);
    assert_eq!(simple(server.addr, "GET", "/site", "").header("location"), Some("/site/"));
    assert_eq!(simple(server.addr, "GET", "/sitex/style.css", "").status, 404, "a prefix ends at a segment");
    let mut ws = ws_open(&server.url("/site/ws"));
    ws.send_text("x").unwrap();
    assert_eq!(ws_text(&mut ws), "x");

    let check = |text: &str| {
        let path = std::env::temp_dir().join(format!("wsgate-static-check-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["-c", path.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check("[[route]]\npath = \"/\"\nstatic = \"/nonexistent-wsgate-dir\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("line 1") && err.contains("static /nonexistent-wsgate-dir"), "{err}");
    let (code, err) = check(&format!("[[route]]\npath = \"/\"\nstatic = \"{}\"\napp = \"echo\"\n", site.www()));
    assert_eq!(code, Some(2));
    assert!(err.contains("exactly one of app, backend, socket_dir, static"), "{err}");
    let (code, err) = check(&format!("[[route]]\npath = \"/s/*\"\nstatic = \"{}\"\n", site.www()));
    assert_eq!(code, Some(2));
    assert!(err.contains("`*` may only end a path"), "{err}");
}

/// Readers that ask for a large file and stop reading cost no memory per request on plain
/// connections (sendfile moves the file inside the kernel) and at most one chunk through TLS;
/// other clients are served meanwhile. A regression guard with generous bounds.
#[test]
fn large_files_to_readers_that_stop_cost_bounded_memory() {
    const CLIENTS: usize = 40;
    let site = Site::new("slow");
    let big = vec![b'x'; 48 << 20];
    site.write("big.bin", &big);
    drop(big);
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = site.write("cert.pem", ck.cert.pem().as_bytes());
    let key = site.write("key.pem", ck.key_pair.serialize_pem().as_bytes());
    // Stalled readers stay until the test resumes one (the default write_timeout would end
    // them on a slow machine).
    let limits = "[limits]\nwrite_timeout = \"10m\"\n";
    let plain = Server::with_config(limits, &["--static", &site.www()]);
    let tls = Server::with_config(
        limits,
        &["--static", &site.www(), "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let request = b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n";

    // Plain: each takes the head and a little, then stops. The first few warm the server's
    // pools and slab; the figure is what the others add.
    // Each reader with the body bytes it got with the head.
    let stall = |n: usize| -> Vec<(TcpStream, usize)> {
        let mut readers = Vec::new();
        for _ in 0..n {
            let mut r = tcp(plain.addr);
            r.write_all(request).unwrap();
            let mut first = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let got = r.read(&mut chunk).unwrap();
                assert!(got > 0, "closed before the head");
                first.extend_from_slice(&chunk[..got]);
                if let Some(i) = first.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            readers.push((r, first.len() - head_end));
        }
        std::thread::sleep(Duration::from_millis(1000));
        readers
    };
    let warm = stall(10);
    let before = plain.rss_kib();
    let mut readers = stall(CLIENTS);
    assert_eq!(simple(plain.addr, "GET", "/style.css", "").status, 200, "others are served");
    let grown = plain.rss_kib().saturating_sub(before);
    eprintln!("{CLIENTS} stalled plain readers of a 48 MiB file: RSS grew {grown} KiB");
    assert!(grown < (CLIENTS as u64) * 16, "plain: {CLIENTS} stalled readers grew RSS {grown} KiB");

    // A reader that resumes gets the rest of the file.
    let (mut r, mut total) = readers.pop().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while total < 48 << 20 {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'x'));
        total += n;
    }
    assert_eq!(total, 48 << 20);

    // TLS: the same, through rustls.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tls_stall = |n: usize| {
        let mut tls_readers = Vec::new();
        for _ in 0..n {
            let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
            let mut stream = rustls::StreamOwned::new(conn, tcp(tls.addr));
            stream.write_all(request).unwrap();
            let mut first = [0u8; 4096];
            assert!(stream.read(&mut first).unwrap() > 0);
            tls_readers.push(stream);
        }
        std::thread::sleep(Duration::from_millis(1000));
        tls_readers
    };
    let tls_warm = tls_stall(10);
    let before = tls.rss_kib();
    let tls_readers = tls_stall(CLIENTS);
    let grown = tls.rss_kib().saturating_sub(before);
    eprintln!("{CLIENTS} stalled TLS readers of a 48 MiB file: RSS grew {grown} KiB");
    // One 16 KiB chunk (or its records) each, plus a TLS connection's state.
    assert!(grown < (CLIENTS as u64) * 64, "TLS: {CLIENTS} stalled readers grew RSS {grown} KiB");

    drop((readers, warm, tls_readers, tls_warm));
}

/// A page served from the directory, in headless Chromium, opens a WebSocket to a chat room
/// of the same server and says hello there.
#[test]
fn chromium_loads_a_page_that_talks_to_a_chat_route() {
    let site = Site::new("chromium");
    site.write("index.html", b"<!doctype html><title>wsgate static</title><script src=\"js/app.js\"></script>\n");
    std::fs::create_dir_all(Path::new(&site.www()).join("js")).unwrap();
    site.write(
        "js/app.js",
        b"const ws = new WebSocket(`ws://${location.host}/chat/static`);\n\
ws.onopen = () => ws.send(`hello from ${document.title}`);\n",
    );
    let server = Server::start(&["--static", &site.www()]);
    let mut room = ws_open(&server.url("/chat/static"));
    let _browser = Browser::launch("static", &format!("http://{}/", server.addr), &[], false);
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < WAIT * 3, "the page did not say hello");
        match room.receive(Some(WAIT)) {
            Ok(WsMessage::Text(t)) if t == "hello from wsgate static" => break,
            Ok(_) | Err(wsgate::client::ClientError::Timeout) => {}
            Err(e) => panic!("chat: {e}"),
        }
    }
}
