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

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

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

fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Counts whole server frames in `buf[..]`, keeping a partial one; returns frames seen.
fn count_frames(buf: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        if rest.len() < 2 {
            break;
        }
        let (len, off) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            126 => break,
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            127 => break,
            l => (l as usize, 2),
        };
        if rest.len() < off + len {
            break;
        }
        pos += off + len;
        n += 1;
    }
    buf.drain(..pos);
    n
}

fn fanout(addr: SocketAddr, n: usize, secs: u64, pid: Option<u32>) {
    let mut poll = Poll::new().unwrap();
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let token = if n == 1 { "solo".to_string() } else { format!("group/r{i}") };
        let s = load_common::upgrade(addr, &format!("/ws?RegisterToken={token}"));
        s.set_nonblocking(true).unwrap();
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap();
        receivers.push((s, Vec::<u8>::new()));
    }
    let mut sender = load_common::upgrade(addr, "/ws?RegisterToken=sender");
    // Every receiver's token is held once its connection is open: a round trip proves it.
    sender.write_all(&masked_text(b"Echo:ready")).unwrap();
    let mut scratch = [0u8; 64];
    let _ = sender.read(&mut scratch).unwrap();
    let message = if n == 1 {
        b"solo|0123456789abcdef0123456789abcdef".to_vec()
    } else {
        b"group/|0123456789abcdef0123456789abcdef".to_vec()
    };
    let frame = masked_text(&message);
    let mut batch = Vec::new();
    for _ in 0..WINDOW {
        batch.extend_from_slice(&frame);
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut sent, mut received) = (0u64, 0u64);
    let cpu0 = pid.map(load_common::cpu_ticks);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        // Keep WINDOW messages in flight, counted at the average receiver.
        if sent - received / n as u64 <= WINDOW {
            sender.write_all(&batch).unwrap();
            sent += WINDOW;
        }
        poll.poll(&mut events, Some(Duration::from_millis(1))).unwrap();
        for ev in events.iter() {
            let (s, pending) = &mut receivers[ev.token().0];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => panic!("receiver {} closed (a slow consumer?)", ev.token().0),
                    Ok(k) => {
                        pending.extend_from_slice(&buf[..k]);
                        received += count_frames(pending);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
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
    let mut sub = load_common::upgrade(ws, "/pubsub");
    sub.write_all(&masked_text(br#"{"op":"subscribe","topic":"lat"}"#)).unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = sub.read(&mut buf).unwrap();
    let mut api = TcpStream::connect(admin).unwrap();
    api.set_nodelay(true).unwrap();
    let body = br#"{"topic":"lat","data":1}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let mut pending = Vec::new();
    // Warm up until a publish arrives: with the subscriber on another node, its subscription
    // reaches Redis a moment after the subscriber's own acknowledgement.
    sub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    loop {
        api.write_all(request.as_bytes()).unwrap();
        read_answer(&mut api, &mut buf);
        match sub.read(&mut buf) {
            Ok(0) => panic!("subscriber closed"),
            Ok(k) => {
                pending.extend_from_slice(&buf[..k]);
                if count_frames(&mut pending) > 0 {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("subscriber: {e}"),
        }
    }
    // Anything still in flight from the warm-up.
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(k) = sub.read(&mut buf) {
        if k == 0 {
            break;
        }
    }
    pending.clear();
    sub.set_read_timeout(None).unwrap();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        api.write_all(request.as_bytes()).unwrap();
        // The delivery.
        loop {
            let k = sub.read(&mut buf).unwrap();
            assert!(k > 0, "subscriber closed");
            pending.extend_from_slice(&buf[..k]);
            if count_frames(&mut pending) > 0 {
                break;
            }
        }
        times.push(t0.elapsed());
        read_answer(&mut api, &mut buf);
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_micros();
    println!("publish->delivery over {count}: p50={}us p90={}us p99={}us max={}us", p(0.5), p(0.9), p(0.99), p(1.0));
}
