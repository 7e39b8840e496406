//! How many messages one blocking `wsgate::client` connection moves through an echo server:
//! first one at a time (send, wait for the echo: the round trip is the limit), then `WINDOW`
//! sends ahead of their echoes (the library's own cost is the limit). Every echo is checked.
//!
//! usage: client-throughput [URL] [SIZE] [SECONDS] [WINDOW]
//!        (default ws://127.0.0.1:8080/echo 20 5 100)
#![allow(clippy::disallowed_methods)] // a measuring program with its own clock

use std::time::{Duration, Instant};

use wsgate::client::{Client, Message, Options};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());
    let size: usize = args.next().map_or(20, |s| s.parse().expect("SIZE: a number of bytes"));
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("SECONDS: a number"));
    let window: usize = args.next().map_or(100, |s| s.parse().expect("WINDOW: a number of messages"));
    let mut ws = Client::open(&url, &Options::default()).unwrap_or_else(|e| panic!("{url}: {e}"));
    let wait = Some(Duration::from_secs(10));
    let mut payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();

    for (label, batch) in [("one at a time", 1), ("pipelined", window.max(1))] {
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let mut count: u64 = 0;
        while started.elapsed() < Duration::from_secs(seconds) {
            for k in 0..batch {
                stamp(&mut payload, count + k as u64);
                ws.send_binary(&payload).expect("send");
            }
            for k in 0..batch {
                stamp(&mut payload, count + k as u64);
                match ws.receive(wait).expect("receive") {
                    Message::Binary(echo) if echo == payload => {}
                    other => panic!("echo {} differs: {other:?}", count + k as u64),
                }
            }
            count += batch as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        println!(
            "{label}: {count} messages of {size} B in {secs:.2} s: {:.0} msg/s, client CPU {:.2} µs per message",
            count as f64 / secs,
            cpu * 1e6 / count as f64
        );
    }
    ws.close(1000, "").expect("close");
}

/// Marks the payload with the message's number, so an echo out of order is caught.
fn stamp(payload: &mut [u8], n: u64) {
    for (b, s) in payload.iter_mut().zip(n.to_le_bytes()) {
        *b = s;
    }
}

/// This process's user + system CPU time so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}
