//! Backend → client bulk throughput through a raw binary route: measures whether splice pays.
//!
//! usage: raw-throughput SOCKET GATEWAY_ADDR PATH SECONDS [GATEWAY_PID]
//!   1. runs a backend on SOCKET that writes a byte pattern as fast as the gateway takes it;
//!   2. connects to ws://GATEWAY_ADDR/PATH (a route `unix:SOCKET#raw,binary`, optionally
//!      `,nosplice`), reads binary frames for SECONDS, checks every byte of the pattern;
//!   3. prints MB/s and, with GATEWAY_PID, the gateway's CPU time per MB.

#[path = "../load_common.rs"]
mod load;
use load::cpu_ticks;
use wsgate::client::{Client, Message, Options};

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, addr, path, secs, rest @ ..] = args.as_slice() else {
        eprintln!("usage: raw-throughput SOCKET GATEWAY_ADDR PATH SECONDS [GATEWAY_PID]");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECONDS");
    let pid: Option<u32> = rest.first().map(|p| p.parse().expect("GATEWAY_PID"));
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).expect("bind the backend socket");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        // A whole number of pattern periods, so the same chunk is written again and again.
        let chunk: Vec<u8> = (0..251 * 1024).map(pattern).collect();
        while conn.write_all(&chunk).is_ok() {}
    });

    let url = format!("ws://{addr}{path}");
    let mut ws = Client::open(&url, &Options::default()).unwrap_or_else(|e| panic!("{url}: {e}"));

    let reference: Vec<u8> = (0..251 * 64).map(pattern).collect();
    let mut seen = 0u64; // payload bytes checked
    let mut frames = 0u64;
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    let mut window: Option<(Instant, u64, u64)> = None;
    loop {
        if window.is_none() && start.elapsed() >= warmup {
            window = Some((Instant::now(), seen, pid.map_or(0, cpu_ticks)));
        }
        if let Some((t0, seen0, cpu0)) = window {
            let elapsed = t0.elapsed();
            if elapsed >= Duration::from_secs(secs) {
                let mb = (seen - seen0) as f64 / 1e6;
                print!("bytes={} frames={frames} MB_per_s={:.0}", seen - seen0, mb / elapsed.as_secs_f64());
                if let Some(pid) = pid {
                    let cpu_s = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
                    print!(
                        " gateway_cpu_pct={:.0} gateway_ms_per_GB={:.0}",
                        cpu_s / elapsed.as_secs_f64() * 100.0,
                        cpu_s * 1e3 / (mb / 1e3)
                    );
                }
                println!();
                return;
            }
        }
        let payload = match ws.receive(Some(Duration::from_secs(10))) {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Text(_)) => panic!("expected binary frames"),
            Err(e) => panic!("{url}: {e}"),
        };
        frames += 1;
        // Compare against the pattern at the right phase (slices: memcmp, not a byte loop).
        let mut checked = 0;
        while checked < payload.len() {
            let phase = ((seen + checked as u64) % 251) as usize;
            let n = (payload.len() - checked).min(reference.len() - phase);
            assert!(payload[checked..checked + n] == reference[phase..phase + n], "payload wrong near byte {seen}");
            checked += n;
        }
        seen += payload.len() as u64;
    }
}
