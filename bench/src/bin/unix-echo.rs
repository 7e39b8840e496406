//! A single-threaded epoll (mio) echo server on a UNIX socket: the fast backend for measuring
//! the gateway itself (`backend-echo` is the readable, thread-per-client one).
//!
//! Sockets are watched for writability only while a write is blocked (`peer_common`).
//!
//! usage: unix-echo SOCKET_PATH

use std::io::{self, Read, Write};

#[path = "../peer_common.rs"]
mod peer;

use mio::{Events, Interest, Token};
use slab::Slab;

fn main() -> io::Result<()> {
    let path = peer::arg("unix-echo SOCKET_PATH");
    let (mut poll, listener) = peer::listen_unix(&path)?;
    let mut conns: Slab<(mio::net::UnixStream, Vec<u8>)> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    eprintln!("unix-echo: listening on {path}");
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == peer::LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    let entry = conns.vacant_entry();
                    poll.registry().register(&mut s, Token(entry.key()), Interest::READABLE)?;
                    entry.insert((s, Vec::new()));
                }
                continue;
            }
            let key = ev.token().0;
            let Some((sock, pending)) = conns.get_mut(key) else { continue };
            let mut closed = false;
            // `was_blocked` is compared after the I/O to see whether EPOLLOUT must be armed or dropped.
            let was_blocked = !pending.is_empty();
            // Finish what could not be written before, then echo what arrives.
            while !pending.is_empty() {
                match sock.write(pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            while pending.is_empty() && !closed {
                match sock.read(&mut buf) {
                    Ok(0) => closed = true,
                    Ok(n) => {
                        let mut done = 0;
                        while done < n {
                            match sock.write(&buf[done..n]) {
                                Ok(w) => done += w,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    pending.extend_from_slice(&buf[done..n]);
                                    break;
                                }
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => closed = true,
                }
            }
            if closed {
                let (mut s, _) = conns.remove(key);
                let _ = poll.registry().deregister(&mut s);
            } else {
                peer::watch_writable(poll.registry(), sock, Token(key), was_blocked, !pending.is_empty())?;
            }
        }
    }
}
