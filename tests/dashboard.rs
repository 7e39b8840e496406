//! The admin dashboard in a real browser (Debian's headless Chromium), driven over the
//! DevTools protocol: the page loads, its WebSocket connects, and its numbers move while
//! load runs. A screenshot is left in `target/dashboard.png` for people to look at.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

const KEY: &str = "dashboard-key-0123456789abcdef";

/// A DevTools session on one page.
struct DevTools {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl DevTools {
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let text = read_text(&mut self.ws);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, expression: &str) -> String {
        let r = self.call("Runtime.evaluate", serde_json::json!({ "expression": expression, "returnByValue": true }));
        r["result"]["value"].as_str().map(str::to_string).unwrap_or_else(|| r["result"]["value"].to_string())
    }

    fn wait_for(&mut self, what: &str, expression: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let v = self.eval(expression);
            if pred(&v) {
                return v;
            }
            assert!(start.elapsed() < WAIT, "{what}: still {v:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn dashboard_loads_connects_and_moves_in_chromium() {
    let server = Server::with_config(
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.key]]\nkey = \"{KEY}\"\nscope = \"read\"\n\
[[route]]\npath = \"/echo\"\napp = \"echo\"\n[[route]]\npath = \"/chat\"\napp = \"chat\"\n"
        ),
        &[],
    );
    let mut browser = Browser::launch(
        "dashboard",
        &server.admin_url(&format!("/?key={KEY}")),
        &["--window-size=1280,900", "--remote-debugging-port=0"],
        true,
    );
    let stderr = browser.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let browser_url = recv_within(&rx);
    let port = browser_url.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    let start = Instant::now();
    let page_ws = loop {
        let (_, list) = http("GET", &format!("http://127.0.0.1:{port}/json/list"), &[], None);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page" && t["url"].as_str().unwrap_or("").contains("key="));
        if let Some(p) = page {
            break p["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < WAIT, "no page in {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ws, _) = tungstenite::connect(&page_ws).expect("DevTools");
    let mut dt = DevTools { ws, next_id: 0 };
    dt.wait_for("the page", "document.title", |s| s == "wsgate dashboard");
    dt.wait_for("the page's WebSocket", "document.getElementById('status').textContent", |s| s == "live");

    // Load: echo clients in a loop, and chat members, until the page shows them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let url = server.url("/echo");
        load.push(std::thread::spawn(move || {
            let mut ws = ws_open(&url);
            while !stop.load(Ordering::Relaxed) {
                ws.send_text("load").unwrap();
                ws_text(&mut ws);
            }
        }));
    }
    let _members: Vec<_> = (0..3).map(|_| ws_open(&server.url("/chat"))).collect();
    dt.wait_for("connections", "document.getElementById('connections').textContent", |s| {
        s.parse::<u32>().is_ok_and(|n| n >= 7)
    });
    dt.wait_for("messages/s in", "document.getElementById('rate-in').textContent", |s| {
        s != "–" && s != "0" && !s.is_empty()
    });
    dt.wait_for("top routes", "document.querySelector('#routes tbody').textContent", |s| s.contains("/echo"));
    dt.wait_for("top topics", "document.querySelector('#topics tbody').textContent", |s| s.contains("/chat"));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    // The access log panel shows the echo clients leaving.
    dt.wait_for("access log panel", "document.getElementById('lines').textContent", |s| s.contains("/echo"));
    let shot = dt.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("dashboard.png"), png).unwrap();
}
