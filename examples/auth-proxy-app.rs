//! An application for `auth = "proxy"` (docs/auth.md): a small keep-alive HTTP/1.1 server
//! that decides who connects and who subscribes. A client is let in when its `session` cookie
//! (sent when `[proxy] cookies = ["session"]`) or its `?user=` names a user of USERS; each
//! user may subscribe to `private.<user>.*` only.
//!
//! usage: auth-proxy-app HOST:PORT
//!
//! and in wsgate.toml:
//!
//! ```toml
//! [proxy]
//! connect_url = "http://127.0.0.1:8000/connect"
//! subscribe_url = "http://127.0.0.1:8000/subscribe"
//! cookies = ["session"]
//!
//! [[route]]
//! path = "/live"
//! app = "pubsub"
//! auth = "proxy"
//! subscribe_proxy = ["private.*"]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use serde_json::{json, Value};

/// Sessions and the users they are (a real application asks its session store).
const USERS: &[(&str, &str)] = &[("s-alice", "alice"), ("s-bob", "bob")];

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8000".into());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    eprintln!("deciding for wsgate on http://{addr}/connect and /subscribe");
    for stream in listener.incoming().flatten() {
        // One thread per connection from wsgate: it keeps at most `max_connections`.
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Requests on one keep-alive connection, until wsgate closes it.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0).min(1 << 20);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = match path.as_str() {
            "/connect" => connect(&request),
            "/subscribe" => subscribe(&request),
            _ => json!({"allow": false, "status": 404, "reason": "unknown question"}),
        }
        .to_string();
        // One write: a response in pieces meets Nagle's algorithm and a delayed ACK (40 ms).
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        out.write_all(response.as_bytes())?;
    }
}

fn connect(request: &Value) -> Value {
    let session = request["cookies"]["session"].as_str();
    let from_session = USERS.iter().find(|(s, _)| Some(*s) == session).map(|(_, u)| *u);
    let query = request["query"].as_str().unwrap_or("");
    let from_query = query.strip_prefix("user=").filter(|u| USERS.iter().any(|(_, known)| known == u));
    match from_session.or(from_query) {
        Some(user) => json!({
            "allow": true,
            "user": user,
            // What the connection may use at all; subscribe_proxy topics are asked about too.
            "topics": ["news", "private.*"],
            "info": {"name": user},
        }),
        None => json!({"allow": false, "status": 401, "reason": "log in first"}),
    }
}

fn subscribe(request: &Value) -> Value {
    let user = request["user"].as_str().unwrap_or("");
    let topic = request["topic"].as_str().unwrap_or("");
    if !user.is_empty() && topic.starts_with(&format!("private.{user}.")) {
        json!({"allow": true})
    } else {
        json!({"allow": false, "status": 403, "reason": "not your topic"})
    }
}
