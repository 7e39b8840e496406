//! SIGHUP reads the configuration file again: every worker serves new requests with the new
//! routes and limits, open connections keep theirs, a bad file changes nothing, and what
//! needs a restart says so.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::time::{Duration, Instant};

use common::*;

fn config(routes: &str, workers: usize) -> String {
    format!("[server]\nworkers = {workers}\nbalance = \"handoff\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{routes}")
}

const BEFORE: &str = "[[route]]\npath = \"/echo\"\napp = \"echo\"\n[[route]]\npath = \"/old\"\napp = \"chat\"\n";
const AFTER: &str = "[[route]]\npath = \"/echo\"\napp = \"echo\"\nmax_message_size = 100\n\
[[route]]\npath = \"/new\"\napp = \"echo\"\n";

fn status(server: &Server, path: &str) -> String {
    let head = http_exchange_head(server.addr, &upgrade_request(path, ""));
    head.split_whitespace().nth(1).unwrap_or("").to_string()
}

fn wait_for(what: impl Fn() -> bool, why: &str) {
    let start = Instant::now();
    while !what() {
        assert!(start.elapsed() < WAIT, "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_swaps_routes_and_limits_on_every_worker() {
    let server = Server::with_config(&config(BEFORE, 2), &[]);
    let mut old = ws_open(&server.url("/old"));
    let mut echo = ws_open(&server.url("/echo"));
    assert_eq!(status(&server, "/new"), "404");

    std::fs::write(server.config_path(), config(AFTER, 2)).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: configuration reloaded: 2 route(s)");
    // Both workers (handoff alternates them): every new request sees the new table.
    wait_for(|| (0..6).all(|_| status(&server, "/new") == "101"), "/new is not served everywhere");
    for _ in 0..6 {
        assert_eq!(status(&server, "/old"), "404");
    }
    // The open connections keep their route and limits.
    old.send_text("still here").unwrap();
    assert_eq!(ws_text(&mut old), "still here");
    let long = "x".repeat(1000);
    echo.send_text(&long).unwrap();
    assert_eq!(ws_text(&mut echo), long);
    // A new connection gets the new limit: 1009 past 100 bytes.
    let mut fresh = ws_open(&server.url("/echo"));
    fresh.send_text(&long).unwrap();
    assert_eq!(ws_closed(&mut fresh).0, Some(1009));

    // Metrics keep one series per route, old and new.
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    let mut series: Vec<&str> = text.lines().filter(|l| l.starts_with("wsgate_route_connections_open")).collect();
    let n = series.len();
    series.sort();
    series.dedup();
    assert_eq!(series.len(), n, "{text}");
    assert!(text.contains("wsgate_route_connections_open{route=\"/old\",app=\"chat\"} 1"), "{text}");

    // A broken file changes nothing.
    std::fs::write(server.config_path(), "[server\nworkers = ").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: configuration not reloaded");
    assert_eq!(status(&server, "/new"), "101");

    // What takes a restart is named, and the rest applies.
    std::fs::write(server.config_path(), config(BEFORE, 3)).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: server.workers changed; that takes a restart");
    wait_for(|| status(&server, "/old") == "101" && status(&server, "/new") == "404", "BEFORE not back");
    let (_, text) = http("GET", &server.admin_url("/metrics"), &[], None);
    assert!(text.lines().any(|l| l == "wsgate_workers 2"), "{text}");
}
