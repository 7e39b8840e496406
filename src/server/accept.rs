//! Binding and accepting: the listening sockets, admission (`max_connections`, descriptor
//! exhaustion), and `balance = "handoff"`'s passing of accepted sockets to other workers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Token};
use socket2::{Domain, Socket, Type};

use super::mesh::Note;
use super::{Entry, Worker};
use crate::conn_id;
use crate::connection::{refuse_unadmitted, Connection, Ready};
use crate::io_step::IoStep;
use crate::tls::TlsSettings;
use crate::transport::Transport;

/// Connections accepted per listener per turn, so a flood of connects cannot starve clients.
pub(super) const ACCEPT_BATCH: usize = 256;

/// After EMFILE / ENFILE: how long to stop accepting before trying again.
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

pub(super) const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket: TCP, or the admin listener's UNIX-domain socket (its file is removed
/// when the listener goes).
pub(super) enum ListenSocket {
    Tcp(TcpListener),
    Unix { socket: mio::net::UnixListener, path: std::path::PathBuf },
}

impl ListenSocket {
    pub(super) fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            ListenSocket::Tcp(l) => l.accept().map(|(s, peer)| (Accepted::Tcp(s), peer)),
            // A UNIX peer has no address: it shows as 0.0.0.0:0.
            ListenSocket::Unix { socket, .. } => {
                socket.accept().map(|(s, _)| (Accepted::Unix(s), SocketAddr::from(([0, 0, 0, 0], 0))))
            }
        }
    }

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix { socket, .. } => socket,
        }
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A socket just accepted.
pub(super) enum Accepted {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Accepted {
    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Accepted::Tcp(s) => s,
            Accepted::Unix(s) => s,
        }
    }
}

pub(super) struct Listener {
    pub(super) socket: ListenSocket,
    pub(super) addr: SocketAddr,
    /// The TLS settings (re-read on SIGHUP) and the configuration new handshakes use.
    pub(super) tls: Option<(TlsSettings, Arc<rustls::ServerConfig>)>,
    /// Readiness seen and not yet drained (edge-triggered).
    pub(super) pending: bool,
    /// The admin listener (management API, metrics, dashboard).
    pub(super) admin: bool,
}

pub(super) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The admin listener's UNIX socket: a stale socket file left by a previous run is replaced
/// (anything else at the path is an error); the socket is owner- and group-only (0660).
pub(super) fn bind_unix(path: &std::path::Path) -> io::Result<mio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        std::fs::remove_file(path)?;
    }
    let socket = mio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(socket)
}

/// A non-blocking listener with SO_REUSEADDR and a large backlog; IPv6 sockets are v6-only
/// so `0.0.0.0:P` and `[::]:P` can both be listed. `reuse_port`: one of several workers'
/// sockets on the same address, among which the kernel spreads connections (`SO_REUSEPORT`,
/// which only sockets of the same user can join).
pub(super) fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Worker {
    /// Accepts what the listeners have waiting (accept-after-batch). Inlined: most turns
    /// find no listener ready.
    #[inline]
    pub(super) fn accept(&mut self, now: Instant) {
        if self.accept_paused_ms.is_some() || self.listeners.iter().any(|l| l.pending) {
            self.accept_waiting(now);
        }
    }

    fn accept_waiting(&mut self, now: Instant) {
        if self.drain_ms.is_some() {
            return;
        }
        if let Some(until_ms) = self.accept_paused_ms {
            if self.clock(now).ms < until_ms {
                return;
            }
            self.accept_paused_ms = None;
            for l in &mut self.listeners {
                l.pending = true;
            }
        }
        for i in 0..self.listeners.len() {
            if !self.listeners[i].pending {
                continue;
            }
            for _ in 0..ACCEPT_BATCH {
                match IoStep::of(self.listeners[i].socket.accept()) {
                    IoStep::Done((stream, peer)) => {
                        if self.fd_exhausted {
                            self.fd_exhausted = false;
                            log::info!("accepting again: file descriptors available");
                        }
                        let tls = self.listeners[i].tls.as_ref().map(|(_, config)| config.clone());
                        let admin = self.listeners[i].admin;
                        match stream {
                            Accepted::Tcp(stream) if self.hands_off && !admin => self.hand_off(stream, peer, tls, now),
                            stream => self.admit(stream, peer, tls, admin, false, now),
                        }
                    }
                    IoStep::WouldBlock | IoStep::End => {
                        self.listeners[i].pending = false;
                        break;
                    }
                    IoStep::Retry => {}
                    IoStep::Failed(e) if is_fd_exhaustion(&e) => {
                        self.metrics.refused_fd += 1;
                        // The pending connection stays in the backlog; polling would report it
                        // again at once, so stop accepting for a moment instead of spinning.
                        if !self.fd_exhausted {
                            self.fd_exhausted = true;
                            log::warn!(
                                "accept on {}: {e}; retrying every {ACCEPT_PAUSE:?} until descriptors free up",
                                self.listeners[i].addr
                            );
                        }
                        self.accept_paused_ms = Some(self.clock(now).ms + ACCEPT_PAUSE.as_millis() as i64);
                        return;
                    }
                    IoStep::Failed(e) => {
                        // ECONNABORTED and friends concern one connection, not the listener.
                        log::debug!("accept on {}: {e}", self.listeners[i].addr);
                    }
                }
            }
        }
    }

    /// `balance = "handoff"`: passes an accepted socket to the worker with the fewest
    /// connections (this one included). The process's connection count is taken here, so a
    /// refusal at `max_connections` is answered at once.
    pub(super) fn hand_off(
        &mut self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        now: Instant,
    ) {
        let to = self.mesh.least_loaded();
        if to == self.mailbox.index {
            return self.admit(Accepted::Tcp(stream), peer, tls, false, false, now);
        }
        if !self.mesh.admit_one(self.max_connections) {
            self.metrics.accepted += 1;
            return self.refuse_capacity(Accepted::Tcp(stream), peer);
        }
        if !self.mesh.post(to, Note::Adopt { stream, peer, tls }) {
            // The worker is gone (draining): the socket was dropped with the note.
            self.mesh.release_one();
        }
    }

    pub(super) fn refuse_capacity(&mut self, mut stream: Accepted, peer: SocketAddr) {
        self.metrics.refused_capacity += 1;
        if self.metrics.refused_capacity.is_power_of_two() {
            log::warn!(
                "at max_connections ({}): refusing {peer} with 503 ({} refused so far by worker {})",
                self.max_connections,
                self.metrics.refused_capacity,
                self.mailbox.index
            );
        }
        match &mut stream {
            Accepted::Tcp(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
            Accepted::Unix(s) => refuse_unadmitted(s, 503, "server at capacity, try again later"),
        }
    }

    /// Serves an accepted socket. `counted`: the process's connection count already includes
    /// it (a socket handed over by worker 0).
    pub(super) fn admit(
        &mut self,
        mut stream: Accepted,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        admin: bool,
        counted: bool,
        now: Instant,
    ) {
        self.metrics.accepted += 1;
        if !counted && !self.mesh.admit_one(self.max_connections) {
            return self.refuse_capacity(stream, peer);
        }
        if let Accepted::Tcp(s) = &stream {
            if let Err(e) = s.set_nodelay(true) {
                log::debug!("{peer}: TCP_NODELAY: {e}");
            }
        }
        self.generation = self.generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let id = conn_id::compose(self.mailbox.index, self.generation, key);
        let token = Token(id as usize);
        if let Err(e) = self.poll.registry().register(stream.source(), token, Interest::READABLE | Interest::WRITABLE) {
            log::warn!("{peer}: cannot register: {e}");
            self.mesh.release_one();
            return;
        }
        let transport = match (stream, tls) {
            (Accepted::Unix(s), _) => Transport::Local(s),
            (Accepted::Tcp(s), None) => Transport::Plain(s),
            (Accepted::Tcp(stream), Some(config)) => match Transport::tls(stream, config) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("{peer}: TLS session: {e}");
                    self.mesh.release_one();
                    return;
                }
            },
        };
        let conn = Connection::new(id, transport, peer, now, Arc::clone(&self.limits), admin);
        entry.insert(Entry { conn, timer_at: 0, dirty: false, busy: false, closed: false });
        log::debug!("{peer} accepted as {key}");
        // The first drive starts its handshake clock (and reads nothing yet).
        self.run_conn(key, now, |conn, ctx| conn.drive(ctx, Ready { corked: true, ..Ready::default() }));
    }
}
