//! Closed-loop wss:// echo load: N connections, each with one masked binary message in flight,
//! every echo checked byte for byte. The TLS counterpart of `wsload` (which speaks plain TCP
//! only), single-threaded on mio + rustls so it can be pinned to one core.
//!
//! usage: wssload [-c CONNS] [-s BYTES] [-d SECS] [-w WARMUP] [-p PATH] [--name SNI] [--pid PID] ADDR
//!
//! ADDR must be a loopback address. Certificates are not verified (it is a load tool for a
//! server you started yourself).

#[path = "../load_common.rs"]
mod load;
use load::cpu_ticks;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    upgraded: bool,
    inbox: Vec<u8>,
    seq: u64,
    sent_at: Option<Instant>,
    id: usize,
}

struct Args {
    conns: usize,
    size: usize,
    secs: u64,
    warmup: u64,
    path: String,
    name: String,
    pid: Option<u32>,
    addr: SocketAddr,
}

fn parse_args() -> Args {
    let mut a = Args {
        conns: 100,
        size: 20,
        secs: 10,
        warmup: 2,
        path: "/echo".into(),
        name: "localhost".into(),
        pid: None,
        addr: "127.0.0.1:8443".parse().unwrap(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "-c" => a.conns = val().parse().unwrap_or_else(|_| usage()),
            "-s" => a.size = val().parse().unwrap_or_else(|_| usage()),
            "-d" => a.secs = val().parse().unwrap_or_else(|_| usage()),
            "-w" => a.warmup = val().parse().unwrap_or_else(|_| usage()),
            "-p" => a.path = val(),
            "--name" => a.name = val(),
            "--pid" => a.pid = Some(val().parse().unwrap_or_else(|_| usage())),
            addr => a.addr = addr.parse().unwrap_or_else(|_| usage()),
        }
    }
    if !a.addr.ip().is_loopback() || a.size < 8 {
        usage();
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: wssload [-c CONNS] [-s BYTES>=8] [-d SECS] [-w WARMUP] [-p PATH] [--name SNI] [--pid PID] LOOPBACK_ADDR");
    std::process::exit(2);
}

/// The expected payload of message `seq` on connection `id`: tag then filler.
fn payload(id: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[..8].copy_from_slice(&((id as u64) << 40 | seq).to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    p
}

fn send_message(c: &mut Conn, size: usize) {
    let p = payload(c.id, c.seq, size);
    let mut frame = Vec::with_capacity(size + 14);
    let mut head = [0u8; wsgate::ws::frame::MAX_HEADER_LEN];
    let key = [0x12, 0x34, 0x56, 0x78];
    let n = wsgate::ws::frame::encode_header(&mut head, true, wsgate::ws::frame::Opcode::Binary, size, Some(key));
    frame.extend_from_slice(&head[..n]);
    let start = frame.len();
    frame.extend_from_slice(&p);
    wsgate::ws::mask::unmask(&mut frame[start..], key, 0);
    c.tls.writer().write_all(&frame).unwrap();
    c.sent_at = Some(Instant::now());
}

/// Consumes a complete echo from the inbox if there is one; checks it.
fn take_echo(c: &mut Conn, size: usize) -> Result<bool, String> {
    let header = if size < 126 {
        2
    } else if size <= 0xFFFF {
        4
    } else {
        10
    };
    if c.inbox.len() < header + size {
        return Ok(false);
    }
    if c.inbox[0] != 0x82 {
        return Err(format!("conn {}: unexpected frame byte {:#x}", c.id, c.inbox[0]));
    }
    if c.inbox[header..header + size] != payload(c.id, c.seq, size)[..] {
        return Err(format!("conn {}: echo mismatch at seq {}", c.id, c.seq));
    }
    c.inbox.drain(..header + size);
    c.seq += 1;
    Ok(true)
}

fn main() {
    let args = parse_args();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let mut poll = Poll::new().unwrap();
    let mut conns = Vec::new();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        args.path, args.name
    );
    for id in 0..args.conns {
        let mut sock = TcpStream::connect(args.addr).unwrap();
        sock.set_nodelay(true).unwrap();
        poll.registry().register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE).unwrap();
        let mut tls = ClientConnection::new(config.clone(), ServerName::try_from(args.name.clone()).unwrap()).unwrap();
        // One whole message goes into rustls at a time, whatever its size (the default 64 KiB
        // send buffer would refuse larger ones); one is in flight per connection, so this is
        // bounded by -s.
        tls.set_buffer_limit(None);
        tls.writer().write_all(request.as_bytes()).unwrap();
        conns.push(Conn { sock, tls, upgraded: false, inbox: Vec::new(), seq: 0, sent_at: None, id });
    }
    let started = Instant::now();
    let mut window: Option<(Instant, u64, u64)> = None; // (start, messages at start, cpu at start)
    let mut total: u64 = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = started + Duration::from_secs(args.warmup + args.secs + 30);
    loop {
        let now = Instant::now();
        if window.is_none() && now >= started + Duration::from_secs(args.warmup) && conns.iter().all(|c| c.upgraded) {
            window = Some((now, total, args.pid.map_or(0, cpu_ticks)));
        }
        if let Some((t0, m0, cpu0)) = window {
            if now >= t0 + Duration::from_secs(args.secs) {
                let secs = now.duration_since(t0).as_secs_f64();
                let msgs = total - m0;
                print!(
                    "mode=closed proto=wss conns={} size={} msgs={msgs} secs={secs:.2} msgs_per_s={:.0}",
                    args.conns,
                    args.size,
                    msgs as f64 / secs
                );
                if let Some(pid) = args.pid {
                    let ticks = cpu_ticks(pid) - cpu0;
                    let hz = 100.0;
                    print!(
                        " server_cpu_pct={:.1} server_us_per_msg={:.3}",
                        ticks as f64 / hz / secs * 100.0,
                        ticks as f64 / hz * 1e6 / msgs.max(1) as f64
                    );
                }
                println!();
                return;
            }
        }
        if now > deadline {
            eprintln!("wssload: stalled");
            std::process::exit(1);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            // Pull TLS records and plaintext.
            loop {
                match c.tls.read_tls(&mut c.sock) {
                    Ok(0) => {
                        eprintln!("wssload: conn {} closed by the server", c.id);
                        std::process::exit(1);
                    }
                    Ok(_) => {
                        if let Err(e) = c.tls.process_new_packets() {
                            eprintln!("wssload: TLS: {e}");
                            std::process::exit(1);
                        }
                        // Take the plaintext after every read: rustls holds at most 16 KiB of
                        // it, and refuses to read more records while that is full.
                        loop {
                            match c.tls.reader().read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => c.inbox.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    eprintln!("wssload: {e}");
                                    std::process::exit(1);
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        eprintln!("wssload: read: {e}");
                        std::process::exit(1);
                    }
                }
            }
            if !c.upgraded {
                if let Some(end) = c.inbox.windows(4).position(|w| w == b"\r\n\r\n") {
                    if !c.inbox.starts_with(b"HTTP/1.1 101") {
                        eprintln!("wssload: upgrade refused: {}", String::from_utf8_lossy(&c.inbox[..end]));
                        std::process::exit(1);
                    }
                    c.inbox.drain(..end + 4);
                    c.upgraded = true;
                    send_message(c, args.size);
                }
            } else {
                match take_echo(c, args.size) {
                    Ok(true) => {
                        total += 1;
                        send_message(c, args.size);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("wssload: {e}");
                        std::process::exit(1);
                    }
                }
            }
            while c.tls.wants_write() {
                match c.tls.write_tls(&mut c.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        eprintln!("wssload: write: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}
