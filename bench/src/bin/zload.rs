//! Load with permessage-deflate (wsload speaks no extension).
//!
//! `zload echo ADDR PATH N SECONDS deflate|plain [PID]`: N connections in a closed loop, one
//! 1 KiB JSON-like text message in flight each; with `deflate` every message is sent
//! compressed (offer: `permessage-deflate; client_max_window_bits`) and every answer inflated
//! and checked. Prints messages/s, bytes on the wire per message each way, and the server's
//! CPU per message (with its PID).
//!
//! `zload fanout ADDR PATH N SECONDS deflate|plain [PID]`: N receivers in a chat room at PATH
//! and one sender keeping 32 messages in flight per receiver; prints deliveries/s, wire bytes
//! per delivery and CPU per delivery.

#[path = "../load_common.rs"]
mod load_common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use wsgate::ws::deflate::{Deflater, Inflater};

const WINDOW: u64 = 32;

/// A JSON-like message of about 1 KiB, different for every `n` (so nothing is cached).
fn message(n: u64) -> Vec<u8> {
    let mut s = format!("{{\"seq\":{n},\"items\":[");
    for i in 0..16 {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":\"item-{i}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b\"]}},",
            n + i,
            i * 3,
            i
        ));
    }
    s.push_str("{}]}");
    s.into_bytes()
}

struct Conn {
    stream: mio::net::TcpStream,
    pending: Vec<u8>,
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    sent: Vec<u8>,
}

fn connect(addr: SocketAddr, path: &str, deflate: bool) -> Conn {
    let offer = if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" } else { "" };
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(head.contains("permessage-deflate"), deflate, "{head}");
    s.set_nonblocking(true).unwrap();
    Conn {
        stream: mio::net::TcpStream::from_std(s),
        pending: Vec::new(),
        // The client may always reset: the shared route asks it to.
        deflater: deflate.then(|| Deflater::new(15, 4, 6, false)),
        inflater: deflate.then(Inflater::new),
        sent: Vec::new(),
    }
}

/// A masked text frame, compressed when the connection negotiated it.
fn frame(conn: &mut Conn, payload: &[u8]) -> Vec<u8> {
    let (first, body) = match &mut conn.deflater {
        Some(d) => {
            let mut z = Vec::new();
            d.compress(payload, &mut z);
            (0xC1u8, z)
        }
        None => (0x81, payload.to_vec()),
    };
    let key = [7u8, 1, 9, 3];
    let mut f = vec![first];
    match body.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(body.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Whole server frames in `conn.pending`: their payloads (inflated when RSV1 is set).
fn frames(conn: &mut Conn) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &conn.pending[pos..];
        if rest.len() < 2 {
            break;
        }
        let (len, off) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            l => (l as usize, 2),
        };
        if rest.len() < off + len {
            break;
        }
        let payload = &rest[off..off + len];
        if rest[0] & 0x40 != 0 {
            let mut inflated = Vec::new();
            conn.inflater
                .as_mut()
                .expect("RSV1 without the extension")
                .inflate(payload, true, 1 << 24, &mut inflated)
                .unwrap();
            out.push(inflated);
        } else {
            out.push(payload.to_vec());
        }
        pos += off + len;
    }
    conn.pending.drain(..pos);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 || !["echo", "fanout"].contains(&args[0].as_str()) {
        eprintln!("usage: zload echo|fanout ADDR PATH N SECONDS deflate|plain [PID]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let path = &args[2];
    let n: usize = args[3].parse().expect("N");
    let secs: u64 = args[4].parse().expect("SECONDS");
    let deflate = args[5] == "deflate";
    let pid = args.get(6).map(|p| p.parse::<u32>().expect("PID"));
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Conn> = (0..n).map(|_| connect(addr, path, deflate)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry().register(&mut c.stream, Token(i), Interest::READABLE).unwrap();
    }
    let fanout = args[0] == "fanout";
    let mut sender = fanout.then(|| connect(addr, path, deflate));
    let (mut wire_out, mut wire_in, mut done, mut seq) = (0u64, 0u64, 0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let cpu0 = pid.map(load_common::cpu_ticks);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    if !fanout {
        for c in conns.iter_mut() {
            seq += 1;
            c.sent = message(seq);
            let f = frame(c, &c.sent.clone());
            wire_out += f.len() as u64;
            c.stream.write_all(&f).unwrap();
        }
    }
    let mut published = 0u64;
    while Instant::now() < end {
        if let Some(s) = &mut sender {
            if published - done / n as u64 <= WINDOW {
                let mut batch = Vec::new();
                for _ in 0..WINDOW {
                    seq += 1;
                    batch.extend(frame(s, &message(seq)));
                }
                wire_out += batch.len() as u64;
                s.stream.write_all(&batch).unwrap();
                published += WINDOW;
                // The sender is in the room too: its copies are read and dropped.
                loop {
                    match s.stream.read(&mut buf) {
                        Ok(0) => panic!("sender closed"),
                        Ok(k) => {
                            s.pending.extend_from_slice(&buf[..k]);
                            frames(s);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(1))).unwrap();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => panic!("connection {} closed", ev.token().0),
                    Ok(k) => {
                        wire_in += k as u64;
                        c.pending.extend_from_slice(&buf[..k]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            for payload in frames(c) {
                done += 1;
                if !fanout {
                    assert_eq!(payload, c.sent, "echo mismatch");
                    seq += 1;
                    c.sent = message(seq);
                    let f = frame(c, &c.sent.clone());
                    wire_out += f.len() as u64;
                    c.stream.write_all(&f).unwrap();
                } else {
                    assert!(payload.starts_with(b"{\"seq\":"), "a delivery that is not ours");
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let what = if fanout { "deliveries" } else { "messages" };
    let sent_msgs = if fanout { published } else { done };
    print!(
        "{what}={done} {what}/s={:.0} wire_out_per_msg={:.0}B wire_in_per_{}={:.0}B",
        done as f64 / elapsed,
        wire_out as f64 / sent_msgs.max(1) as f64,
        if fanout { "delivery" } else { "msg" },
        wire_in as f64 / done.max(1) as f64
    );
    if let (Some(pid), Some(c0)) = (pid, cpu0) {
        let cpu = (load_common::cpu_ticks(pid) - c0) as f64 / 100.0;
        print!(" server_cpu={:.0}% us_per_{}={:.2}", cpu / elapsed * 100.0, what, cpu * 1e6 / done.max(1) as f64);
    }
    println!();
}
