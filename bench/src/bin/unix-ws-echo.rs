//! A single-threaded epoll (mio) WebSocket echo server on a UNIX socket: the backend for
//! measuring other proxies (nginx `proxy_pass http://unix:...`) in the layout wsgate's own
//! backend figures use. It answers the upgrade with wsgate's handshake code and echoes every
//! data frame as it came (opcode and FIN kept), answers pings and closes; it is a benchmark
//! peer, not a conforming server (no UTF-8 or fragmentation checks).
//!
//! usage: unix-ws-echo SOCKET_PATH

use std::io::{self, Read, Write};

#[path = "../peer_common.rs"]
mod common;

use mio::net::UnixStream;
use mio::{Events, Interest, Token};
use slab::Slab;
use wsgate::http::request::HeadLimits;
use wsgate::ws::frame::{self, FrameLimits, Opcode, MAX_HEADER_LEN};
use wsgate::ws::handshake::{self, Policy};
use wsgate::ws::mask::unmask;

struct Peer {
    sock: UnixStream,
    open: bool,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// Consumes what `peer.input` holds, appending responses to `peer.output`.
/// Returns false when the connection should end.
fn serve(peer: &mut Peer) -> bool {
    let mut used = 0;
    if !peer.open {
        let policy = Policy { origins: &[], subprotocols: &[] };
        match handshake::respond(&peer.input, &HeadLimits::default(), &policy, &mut peer.output) {
            Ok(None) => return true,
            Ok(Some(head_len)) => (used, peer.open) = (head_len, true),
            Err(_) => return false,
        }
    }
    let limits = FrameLimits::server(64 << 20);
    let mut alive = true;
    while let Ok(Some((header, header_len))) = frame::parse_header(&peer.input[used..], &limits) {
        let start = used + header_len;
        let Some(payload) = peer.input.get_mut(start..start + header.payload_len) else { break };
        unmask(payload, header.mask.unwrap_or_default(), 0);
        let opcode = match header.opcode {
            Opcode::Ping => Opcode::Pong,
            Opcode::Pong => {
                used = start + header.payload_len;
                continue;
            }
            Opcode::Close => {
                alive = false;
                Opcode::Close
            }
            other => other,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = frame::encode_header(&mut head, header.fin, opcode, header.payload_len, None);
        peer.output.extend_from_slice(&head[..n]);
        peer.output.extend_from_slice(&peer.input[start..start + header.payload_len]);
        used = start + header.payload_len;
        if !alive {
            break;
        }
    }
    peer.input.drain(..used);
    alive
}

/// Writes what it can; returns Err on a dead peer.
fn flush(peer: &mut Peer) -> io::Result<()> {
    while !peer.output.is_empty() {
        match peer.sock.write(&peer.output) {
            Ok(n) => drop(peer.output.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let path = common::arg("unix-ws-echo SOCKET_PATH");
    let (mut poll, listener) = common::listen_unix(&path)?;
    let mut peers: Slab<Peer> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    eprintln!("unix-ws-echo: listening on {path}");
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == common::LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    let entry = peers.vacant_entry();
                    poll.registry().register(&mut sock, Token(entry.key()), Interest::READABLE)?;
                    entry.insert(Peer { sock, open: false, input: Vec::new(), output: Vec::new() });
                }
                continue;
            }
            let key = ev.token().0;
            let Some(peer) = peers.get_mut(key) else { continue };
            let was_blocked = !peer.output.is_empty();
            let mut alive = flush(peer).is_ok();
            // Read only while nothing is pending, so a client that does not read is not
            // buffered for without bound.
            while alive && peer.output.is_empty() {
                match peer.sock.read(&mut buf) {
                    Ok(0) => alive = false,
                    Ok(n) => {
                        peer.input.extend_from_slice(&buf[..n]);
                        let served = serve(peer);
                        alive = flush(peer).is_ok() && served;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => alive = false,
                }
            }
            if !alive {
                let mut peer = peers.remove(key);
                let _ = poll.registry().deregister(&mut peer.sock);
            } else {
                let blocked = !peer.output.is_empty();
                common::watch_writable(poll.registry(), &mut peer.sock, Token(key), was_blocked, blocked)?;
            }
        }
    }
}
