//! The measuring peers docs/performance.md uses (unix-echo, unix-ws-echo, unix-relay,
//! uring-relay): a figure from a peer that does not echo correctly would mean nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

fn binary(name: &str) -> &'static str {
    match name {
        "unix-echo" => env!("CARGO_BIN_EXE_unix-echo"),
        "unix-ws-echo" => env!("CARGO_BIN_EXE_unix-ws-echo"),
        "unix-relay" => env!("CARGO_BIN_EXE_unix-relay"),
        "uring-relay" => env!("CARGO_BIN_EXE_uring-relay"),
        other => panic!("no peer {other}"),
    }
}

struct Running(Child, PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if !self.1.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-peers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs peer `name` with `args` until dropped (then `dir` is removed too), once `ready` says
/// it is listening.
fn spawn(name: &str, args: &[&str], dir: PathBuf, ready: impl Fn() -> bool) -> Running {
    let mut child = Command::new(binary(name)).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("{name} exited ({status}): {err}");
        }
        assert!(start.elapsed() < WAIT, "{name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running(child, dir)
}

/// A loopback port nothing listens on (bound and released; the peer binds it next).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Sends `payload` in one write and reads back exactly as many bytes.
fn round_trip(stream: &mut (impl Read + Write), payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

/// unix-echo behind `relay` (unix-relay or uring-relay): bytes come back intact, at every size
/// from one byte to more than a socket buffer (which makes the relay's writes block).
fn check_relay(relay: &str) {
    let dir = scratch_dir(relay);
    let echo_path = dir.join("echo");
    let _echo = spawn("unix-echo", &[echo_path.to_str().unwrap()], dir.clone(), || echo_path.exists());
    let addr = free_port();
    let addr_arg = addr.to_string();
    let _relay =
        spawn(relay, &[&addr_arg, echo_path.to_str().unwrap()], PathBuf::new(), || TcpStream::connect(addr).is_ok());
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &clients {
        c.set_read_timeout(Some(WAIT)).unwrap();
    }
    for (i, size) in [1usize, 20, 1024, 65_536, 3 << 20].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        let c = &mut clients[i % 3];
        // Big payloads: write from a thread, or both directions fill up and deadlock the test.
        let mut writer = c.try_clone().unwrap();
        let sent = payload.clone();
        let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut back = vec![0; size];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
        assert!(back == payload, "{relay}: {size} bytes came back different");
    }
    assert_eq!(round_trip(&mut clients[0], b"still there"), b"still there");
}

#[test]
fn unix_relay_relays_both_ways() {
    check_relay("unix-relay");
}

#[test]
fn uring_relay_relays_both_ways() {
    // io_uring can be disabled (kernel.io_uring_disabled, seccomp in containers); then there is
    // no figure to measure and nothing to check.
    let ring = unsafe {
        let mut params: [u8; 120] = [0; 120];
        libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr())
    };
    if ring < 0 {
        eprintln!("io_uring unavailable here ({}); skipped", std::io::Error::last_os_error());
        return;
    }
    unsafe { libc::close(ring as i32) };
    check_relay("uring-relay");
}

#[test]
fn unix_ws_echo_speaks_websocket() {
    let dir = scratch_dir("unix-ws-echo");
    let path = dir.join("ws");
    let _echo = spawn("unix-ws-echo", &[path.to_str().unwrap()], dir.clone(), || path.exists());
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, _) = tungstenite::client("ws://localhost/app", stream).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for message in [Message::text("hello"), Message::binary(vec![0u8, 255, 10]), Message::binary(big)] {
        ws.send(message.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), message);
    }
    ws.send(Message::Ping(b"p".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec()));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("after close: {other:?}"),
        }
    }
}
