//! Shared by the measuring peers (`unix-echo`, `unix-ws-echo`, `unix-relay`): the UNIX
//! listener they serve on, and the rule each of them must follow to stay out of the figures.
#![allow(dead_code)]

use std::io;
use std::os::unix::fs::PermissionsExt;

use mio::event::Source;
use mio::net::UnixListener;
use mio::{Interest, Poll, Registry, Token};

/// The listener's token; connections use slab keys, which never reach it.
pub const LISTENER: Token = Token(usize::MAX);

/// The one command-line argument, or the usage line and exit status 2.
pub fn arg(usage: &str) -> String {
    std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: {usage}");
        std::process::exit(2)
    })
}

/// Binds `path` (replacing a stale socket) for anyone to connect to, registered with a new
/// poll under [`LISTENER`].
pub fn listen_unix(path: &str) -> io::Result<(Poll, UnixListener)> {
    let _ = std::fs::remove_file(path);
    let mut listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    Ok((poll, listener))
}

/// Watches `source` for writability only while a write to it is blocked: arms EPOLLOUT when
/// `blocked` has just become true and drops it when it has just become false. A UNIX socket
/// wakes every EPOLLOUT watcher each time its peer reads, so a peer that kept EPOLLOUT armed
/// would make the gateway wake it on every message (8 % of the gateway's time at 20 B).
pub fn watch_writable(
    registry: &Registry,
    source: &mut impl Source,
    token: Token,
    was_blocked: bool,
    blocked: bool,
) -> io::Result<()> {
    if blocked == was_blocked {
        return Ok(());
    }
    let interest = if blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
    registry.reregister(source, token, interest)
}
