//! The server's CPU per WebSocket upgrade: COUNT upgrades, one after another, each on a new
//! TCP connection that is closed after the 101, with the server's user and system time read
//! from /proc around them. For comparing routes (none vs JWT HS256 vs ES256): give the same
//! server and different paths (a token goes in the path's `?token=`).
//!
//! usage: handshake-cost SERVER_PID HOST:PORT PATH [COUNT]
#![allow(clippy::disallowed_methods)] // a measuring program with its own clock

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc/PID/stat");
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: handshake-cost SERVER_PID HOST:PORT PATH [COUNT]";
    let pid = args.next().expect(usage);
    let addr = args.next().expect(usage);
    let path = args.next().expect(usage);
    let count: u32 = args.next().map_or(5000, |s| s.parse().expect("COUNT: a number"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let ticks = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(&pid);
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    for i in 0..count {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_nodelay(true).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed before the response");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "upgrade {i}: {}", String::from_utf8_lossy(&got));
    }
    let elapsed = start.elapsed();
    // The last closes are handled after the loop; give them a moment.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let cpu = (cpu_ticks(&pid) - before) as f64 / ticks;
    println!(
        "path={} upgrades={count} per_s={:.0} server_cpu_us_per_upgrade={:.1}",
        path.split('?').next().unwrap_or(""),
        f64::from(count) / elapsed.as_secs_f64(),
        cpu * 1e6 / f64::from(count)
    );
}
