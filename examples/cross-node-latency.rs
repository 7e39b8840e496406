//! Publish → delivery latency between two wsgate nodes (or any two URLs of one room): a
//! thread publishes on the first URL at a fixed rate, each message carrying the time it was
//! sent; the main thread receives on the second URL and prints the percentiles. Both ends run
//! in this process, so they read one clock.
//!
//! usage: cross-node-latency PUBLISH_URL RECEIVE_URL [RATE] [COUNT]
//!        (a chat room on two nodes: ws://A/chat/room ws://B/chat/room; default 2000/s, 10000)
#![allow(clippy::disallowed_methods)] // a measuring program with its own clock

use std::time::{Duration, Instant};

use wsgate::client::{Client, Message, Options};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cross-node-latency PUBLISH_URL RECEIVE_URL [RATE] [COUNT]";
    let publish_url = args.next().expect(usage);
    let receive_url = args.next().expect(usage);
    let rate: u64 = args.next().map_or(2000, |s| s.parse().expect("RATE: messages per second"));
    let count: u64 = args.next().map_or(10_000, |s| s.parse().expect("COUNT: a number of messages"));
    let mut receiver = Client::open(&receive_url, &Options::default()).unwrap_or_else(|e| panic!("{receive_url}: {e}"));
    // The receiving node's subscription must reach Redis before the first publication.
    std::thread::sleep(Duration::from_millis(500));
    let origin = Instant::now();
    let publisher = std::thread::spawn(move || {
        let mut ws = Client::open(&publish_url, &Options::default()).unwrap_or_else(|e| panic!("{publish_url}: {e}"));
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            let sent = origin.elapsed().as_nanos() as u64;
            ws.send_text(&format!("{i} {sent}")).expect("send");
        }
        // Keep the connection until the receiver is done.
        std::thread::sleep(Duration::from_secs(2));
        let _ = ws.close(1000, "done");
    });
    let mut latencies = Vec::with_capacity(count as usize);
    let mut next = 0;
    while next < count {
        let text = match receiver.receive(Some(Duration::from_secs(5))) {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("stopped after {next} of {count}: {e}");
                break;
            }
        };
        let now = origin.elapsed().as_nanos() as u64;
        let mut parts = text.split(' ');
        let (Some(i), Some(sent)) = (parts.next(), parts.next()) else { continue };
        let (i, sent): (u64, u64) = (i.parse().unwrap_or(u64::MAX), sent.parse().unwrap_or(0));
        if i != next {
            eprintln!("expected message {next}, got {i}");
        }
        next = i + 1;
        latencies.push(now.saturating_sub(sent) / 1000);
    }
    publisher.join().expect("the publisher");
    let _ = receiver.close(1000, "done");
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "received {} of {count}: p50 {} us, p99 {} us, max {} us",
        latencies.len(),
        at(0.5).copied().unwrap_or(0),
        at(0.99).copied().unwrap_or(0),
        latencies.last().copied().unwrap_or(0)
    );
}
