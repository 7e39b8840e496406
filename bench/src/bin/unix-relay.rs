//! The floor for a per-client proxy to UNIX backends: a single-threaded epoll (mio) relay
//! that accepts TCP, opens one UNIX connection per client and copies bytes both ways with one
//! read and one write per wake-up, understanding nothing. With `wsload --raw` in front and
//! `unix-echo` behind, it makes the same four syscalls per message as wsgate's raw route, so
//! the gap between the two is what WebSocket framing costs (docs/performance.md).
//! A benchmark peer: no limits, no timeouts, loopback only.
//!
//! usage: unix-relay LISTEN_ADDR BACKEND_SOCKET

use std::io::{self, Read, Write};
use std::net::SocketAddr;

#[path = "../peer_common.rs"]
mod peer;

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// One client: its TCP socket, its backend socket, and bytes not yet written each way.
struct Pair {
    client: TcpStream,
    backend: UnixStream,
    to_backend: Vec<u8>,
    to_client: Vec<u8>,
}

/// Moves what `from` has into `to`; what `to` does not take waits in `pending`, and `from` is
/// not read again until it is written (so neither side is buffered for without bound).
/// `from` is read when it signalled (`readable`) or when this call unblocked it.
/// Returns false when either side is finished.
fn pump(from: &mut impl Read, to: &mut impl Write, pending: &mut Vec<u8>, buf: &mut [u8], readable: bool) -> bool {
    let unblocked = !pending.is_empty();
    while !pending.is_empty() {
        match to.write(pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    // Reading a side that did not signal would cost an EAGAIN read per message, which is not
    // the floor; but a side that was left unread because its data had nowhere to go has no
    // new edge coming, so it is read as soon as the data can go.
    let mut read = readable || unblocked;
    while read {
        let n = match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        match to.write(&buf[..n]) {
            Ok(w) if w == n => {}
            Ok(w) => {
                pending.extend_from_slice(&buf[w..n]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pending.extend_from_slice(&buf[..n]);
                return true;
            }
            Err(_) => return false,
        }
        // A short read drained the socket; the next edge says when there is more.
        read = n == buf.len();
    }
    true
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(backend)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: unix-relay LISTEN_ADDR BACKEND_SOCKET");
        std::process::exit(2)
    };
    let addr: SocketAddr = addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    const LISTENER: Token = Token(usize::MAX);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: Slab<Pair> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    eprintln!("unix-relay: {addr} -> {backend}");
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut client, _)) = listener.accept() {
                    client.set_nodelay(true)?;
                    let std_backend = std::os::unix::net::UnixStream::connect(backend)?;
                    std_backend.set_nonblocking(true)?;
                    let mut backend = UnixStream::from_std(std_backend);
                    let entry = pairs.vacant_entry();
                    // Token 2k is the client, 2k + 1 the backend, both edge-triggered. The
                    // backend is watched for writability only while a write to it is blocked
                    // (a UNIX socket wakes EPOLLOUT watchers on every read by its peer).
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    poll.registry().register(&mut client, Token(2 * entry.key()), interest)?;
                    poll.registry().register(&mut backend, Token(2 * entry.key() + 1), Interest::READABLE)?;
                    entry.insert(Pair { client, backend, to_backend: Vec::new(), to_client: Vec::new() });
                }
                continue;
            }
            let (key, from_backend) = (ev.token().0 / 2, ev.token().0 % 2 == 1);
            let Some(pair) = pairs.get_mut(key) else { continue };
            let was_blocked = !pair.to_backend.is_empty();
            // An event on one side reads that side; the other is only flushed.
            let alive = pump(&mut pair.backend, &mut pair.client, &mut pair.to_client, &mut buf, from_backend)
                && pump(&mut pair.client, &mut pair.backend, &mut pair.to_backend, &mut buf, !from_backend);
            if alive {
                let blocked = !pair.to_backend.is_empty();
                peer::watch_writable(poll.registry(), &mut pair.backend, Token(2 * key + 1), was_blocked, blocked)?;
            }
            if !alive {
                let mut pair = pairs.remove(key);
                let _ = poll.registry().deregister(&mut pair.client);
                let _ = poll.registry().deregister(&mut pair.backend);
            }
        }
    }
}
