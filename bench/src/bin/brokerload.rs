//! Load for the token broker and the admin API.
//!
//! `brokerload fanout ADDR N SECONDS [PID]`: N receivers connect to `ADDR/ws` holding tokens
//! `group/r0` … `group/rN-1` (N = 1: the one receiver's exact token), one sender routes
//! 32-byte messages to `group/` (to all of them) keeping at most `WINDOW` messages in flight
//! per receiver, and the deliveries received per second are printed (and the server's CPU
//! per delivery, with its PID).
//!
//! `brokerload latency WS_ADDR ADMIN_ADDR COUNT`: one pubsub subscriber on `WS_ADDR/pubsub`,
//! topic `lat`; COUNT times, `POST /api/publish` on a keep-alive connection to ADMIN_ADDR and
//! wait for the delivery; prints p50 / p90 / p99 / max of publish → delivery.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use wsgate::client::{Client, ClientError, Options};

#[path = "../load_common.rs"]
mod load_common;

const WINDOW: u64 = 32;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fanout") if args.len() >= 4 => fanout(
            args[1].parse().expect("ADDR"),
            args[2].parse().expect("N"),
            args[3].parse().expect("SECONDS"),
            args.get(4).map(|p| p.parse().expect("PID")),
        ),
        Some("latency") if args.len() == 4 => latency(
            args[1].parse().expect("WS_ADDR"),
            args[2].parse().expect("ADMIN_ADDR"),
            args[3].parse().expect("COUNT"),
        ),
        _ => {
            eprintln!("usage: brokerload fanout ADDR N SECONDS [PID] | brokerload latency WS_ADDR ADMIN_ADDR COUNT");
            std::process::exit(2);
        }
    }
}

fn fanout(addr: SocketAddr, n: usize, secs: u64, pid: Option<u32>) {
    let mut poll = Poll::new().unwrap();
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let token = if n == 1 { "solo".to_string() } else { format!("group/r{i}") };
        let receiver = open(&format!("ws://{addr}/ws?RegisterToken={token}"));
        // The client's non-blocking form: the loop waits on its socket, `receive_ready`
        // takes what arrived.
        poll.registry().register(&mut SourceFd(&receiver.fd()), Token(i), Interest::READABLE).unwrap();
        receivers.push(receiver);
    }
    let mut sender = open(&format!("ws://{addr}/ws?RegisterToken=sender"));
    // Every receiver's token is held once its connection is open: a round trip proves it.
    sender.send_text("Echo:ready").unwrap();
    sender.receive(Some(Duration::from_secs(10))).expect("the sender's echo");
    let message =
        if n == 1 { "solo|0123456789abcdef0123456789abcdef" } else { "group/|0123456789abcdef0123456789abcdef" };
    let mut events = Events::with_capacity(1024);
    let (mut sent, mut received) = (0u64, 0u64);
    let cpu0 = pid.map(load_common::cpu_ticks);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        // Keep WINDOW messages in flight, counted at the average receiver.
        if sent - received / n as u64 <= WINDOW {
            for _ in 0..WINDOW {
                sender.send_text(message).unwrap();
            }
            sent += WINDOW;
        }
        poll.poll(&mut events, Some(Duration::from_millis(1))).unwrap();
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match receivers[i].receive_ready() {
                    Ok(Some(_)) => received += 1,
                    Ok(None) => break,
                    Err(e) => panic!("receiver {i}: {e} (a slow consumer?)"),
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = received as f64 / elapsed;
    print!("receivers={n} messages={} deliveries={received} deliveries/s={rate:.0}", received / n as u64);
    if let (Some(pid), Some(c0)) = (pid, cpu0) {
        let ticks = load_common::cpu_ticks(pid) - c0;
        let cpu = ticks as f64 / 100.0;
        print!(" server_cpu={:.0}% ns/delivery={:.0}", cpu / elapsed * 100.0, cpu * 1e9 / received.max(1) as f64);
    }
    println!();
}

/// A connection by wsgate's client library; panics with its error.
fn open(url: &str) -> Client {
    Client::open(url, &Options::default()).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The API's answer (read so the keep-alive connection stays in step).
fn read_answer(api: &mut TcpStream, buf: &mut [u8]) {
    let mut answer = Vec::new();
    while !(answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}")) {
        let k = api.read(buf).unwrap();
        assert!(k > 0, "admin connection closed");
        answer.extend_from_slice(&buf[..k]);
    }
}

fn latency(ws: SocketAddr, admin: SocketAddr, count: usize) {
    let mut sub = open(&format!("ws://{ws}/pubsub"));
    sub.send_text(r#"{"op":"subscribe","topic":"lat"}"#).unwrap();
    sub.receive(Some(Duration::from_secs(10))).expect("the subscription's answer");
    let mut buf = vec![0u8; 4096];
    let mut api = TcpStream::connect(admin).unwrap();
    api.set_nodelay(true).unwrap();
    let body = br#"{"topic":"lat","data":1}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    // Warm up until a publish arrives: with the subscriber on another node, its subscription
    // reaches Redis a moment after the subscriber's own acknowledgement.
    loop {
        api.write_all(request.as_bytes()).unwrap();
        read_answer(&mut api, &mut buf);
        match sub.receive(Some(Duration::from_millis(200))) {
            Ok(_) => break,
            Err(ClientError::Timeout) => {}
            Err(e) => panic!("subscriber: {e}"),
        }
    }
    // Anything still in flight from the warm-up.
    while sub.receive(Some(Duration::from_millis(300))).is_ok() {}
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        api.write_all(request.as_bytes()).unwrap();
        sub.receive(Some(Duration::from_secs(10))).expect("the delivery");
        times.push(t0.elapsed());
        read_answer(&mut api, &mut buf);
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_micros();
    println!("publish->delivery over {count}: p50={}us p90={}us p99={}us max={}us", p(0.5), p(0.9), p(0.99), p(1.0));
}
