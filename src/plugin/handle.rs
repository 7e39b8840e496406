//! One connection as a plugin sees it: the `WebSocketServer` structure its callbacks get, and
//! the functions in that structure.
//!
//! The structure lives in a [`Handle`] that the worker and the plugin thread share (an `Arc`,
//! so its address never moves). A plugin may keep the pointer and call `send` or `close` from
//! any thread, even after the connection is gone: the functions look at the handle's state
//! first, and the plugin thread keeps every handle alive for [`QUARANTINE`] after
//! `on_disconnect` returned, so a late call finds a dead handle, not freed memory.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::abi::{self, Server};
use super::host::Outlet;
use crate::encode::shared_frame;
use crate::server::mesh::Note;
use crate::ws::frame::Opcode;

/// How long a handle outlives its `on_disconnect`: calls a plugin makes through a stale
/// pointer within this time are harmless (they do nothing); later ones read freed memory, as
/// they would in any C library. A plugin must stop its threads by then (dumb-increment joins
/// them in `on_disconnect`).
pub const QUARANTINE: Duration = Duration::from_secs(60);

/// Response headers `on_connect` may add, at most, and their bytes in all.
const MAX_SET_HEADERS: usize = 32;
const MAX_SET_BYTES: usize = 8 << 10;

/// Headers wsgate writes itself in a 101: a plugin setting them would break the handshake.
const RESERVED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];

/// The handle's life, in order.
const CONNECTING: u8 = 0;
/// `on_connect` accepted: `send` and `close` act.
const OPEN: u8 = 1;
/// The plugin (or the connection) asked to close: `send` does nothing more.
const CLOSING: u8 = 2;
/// Declined, or `on_disconnect` has been called.
const GONE: u8 = 3;

/// One connection's state, shared by its worker and its plugin thread.
pub struct Handle {
    /// What the plugin is given; its `state` points back at this handle.
    server: Server,
    pub(super) id: u64,
    life: AtomicU8,
    /// What `on_connect` returned (only the plugin thread reads and writes it).
    pub(super) private: AtomicPtr<c_void>,
    /// Bytes of messages queued to the plugin thread and not yet given to `on_message`: the
    /// worker stops reading the client past the route's `backpressure_high`.
    pub(super) pending: AtomicUsize,
    /// The request, and the answer being built, while `on_connect` runs.
    connecting: Mutex<Option<Connecting>>,
    pub(super) outlet: Arc<Outlet>,
}

// SAFETY: `server` is written once, at creation, and only read after (its pointers are the
// handle's own address and functions); everything that changes is an atomic or behind a mutex.
unsafe impl Send for Handle {}
// SAFETY: as for `Send`.
unsafe impl Sync for Handle {}

/// The request a plugin's `on_connect` reads, and what it answers.
pub struct Connecting {
    headers: Vec<(CString, CString)>,
    protocols: Vec<CString>,
    /// The subprotocol chosen (an index into `protocols`).
    protocol: Option<usize>,
    set: Vec<(String, String)>,
    set_bytes: usize,
}

impl Connecting {
    /// The request's headers (a value with a NUL byte, which no C string can carry, is left
    /// out) and the subprotocols the client offered, in its order. The answer names the
    /// subprotocol the plugin chooses; until it does, `route`'s choice when the route lists
    /// subprotocols (`Some`), else, as apache-websocket does, the first the client offered.
    pub fn new<'h>(
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        protocols: &[&str],
        route: Option<Option<&str>>,
    ) -> Connecting {
        let headers = headers.filter_map(|(n, v)| Some((CString::new(n).ok()?, CString::new(v).ok()?))).collect();
        let protocols: Vec<CString> = protocols.iter().filter_map(|p| CString::new(*p).ok()).collect();
        let protocol = match route {
            Some(choice) => choice.and_then(|d| protocols.iter().position(|p| p.as_bytes() == d.as_bytes())),
            None => (!protocols.is_empty()).then_some(0),
        };
        Connecting { headers, protocols, protocol, set: Vec::new(), set_bytes: 0 }
    }
}

/// `on_connect`'s answer, for the worker to write into the 101.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accept {
    pub protocol: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Handle {
    pub(super) fn new(id: u64, outlet: Arc<Outlet>, connecting: Connecting) -> Arc<Handle> {
        Arc::new_cyclic(|me: &std::sync::Weak<Handle>| Handle {
            server: Server {
                size: std::mem::size_of::<Server>() as u32,
                version: abi::SERVER_VERSION_1,
                state: me.as_ptr().cast_mut().cast(),
                request: Some(request),
                header_get: Some(header_get),
                header_set: Some(header_set),
                protocol_count: Some(protocol_count),
                protocol_index: Some(protocol_index),
                protocol_set: Some(protocol_set),
                send: Some(send),
                close: Some(close),
            },
            id,
            life: AtomicU8::new(CONNECTING),
            private: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            connecting: Mutex::new(Some(connecting)),
            outlet,
        })
    }

    /// The structure handed to the plugin.
    pub(super) fn server(&self) -> *const Server {
        &self.server
    }

    /// `on_connect` returned: accepted (with what it set) or declined. The request is
    /// dropped; `send` still does nothing until [`Handle::open`].
    pub(super) fn connected(&self, accepted: bool) -> Option<Accept> {
        let connecting = self.connecting.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        if !accepted {
            self.life.store(GONE, Ordering::Release);
            return None;
        }
        let protocol = connecting.protocol.and_then(|i| connecting.protocols[i].to_str().ok()).map(str::to_owned);
        Some(Accept { protocol, headers: connecting.set })
    }

    /// The answer is on its way to the worker: from now on `send` and `close` act (their
    /// notes follow the answer, so none reaches a connection not yet open).
    pub(super) fn open(&self) {
        let _ = self.life.compare_exchange(CONNECTING, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether `on_connect` accepted (and `on_disconnect` has not run yet).
    pub(super) fn accepted(&self) -> bool {
        matches!(self.life.load(Ordering::Acquire), OPEN | CLOSING)
    }

    /// `on_disconnect` has returned (or is not called): every later call does nothing.
    pub(super) fn gone(&self) {
        self.life.store(GONE, Ordering::Release);
    }

    fn with_connecting<T>(&self, f: impl FnOnce(&mut Connecting) -> T) -> Option<T> {
        self.connecting.lock().unwrap_or_else(PoisonError::into_inner).as_mut().map(f)
    }
}

/// The handle behind a plugin's `server` pointer.
///
/// # Safety
/// `server` is NULL or a pointer wsgate gave the plugin (valid for [`QUARANTINE`] after
/// `on_disconnect`); the header documents the rest.
unsafe fn handle<'a>(server: *const Server) -> Option<&'a Handle> {
    // SAFETY: per the function's contract; `state` was set to the handle at its creation
    // and the handle outlives every pointer to its `server` field.
    unsafe { server.as_ref().and_then(|s| s.state.cast::<Handle>().cast_const().as_ref()) }
}

/// A C string argument, or `None` when NULL or not UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn c_str<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

/// apache-websocket's `request_rec`: wsgate has none.
unsafe extern "C" fn request(_server: *const Server) -> *mut c_void {
    std::ptr::null_mut()
}

unsafe extern "C" fn header_get(server: *const Server, key: *const c_char) -> *const c_char {
    // SAFETY: the plugin passes what it was given, and a C string.
    let (Some(h), Some(key)) = (unsafe { handle(server) }, unsafe { c_str(key) }) else {
        return std::ptr::null();
    };
    h.with_connecting(|c| {
        // The value's bytes stay where they are until on_connect returns: the list is never
        // changed, only dropped after.
        c.headers.iter().find(|(n, _)| n.to_bytes().eq_ignore_ascii_case(key.as_bytes())).map(|(_, v)| v.as_ptr())
    })
    .flatten()
    .unwrap_or(std::ptr::null())
}

unsafe extern "C" fn header_set(server: *const Server, key: *const c_char, value: *const c_char) {
    // SAFETY: the plugin passes what it was given, and C strings.
    let (Some(h), Some(key), Some(value)) = (unsafe { handle(server) }, unsafe { c_str(key) }, unsafe { c_str(value) })
    else {
        return;
    };
    let id = h.id;
    if let Err(why) = check_header(key, value) {
        log::warn!("plugin on connection {id:x}: header_set({key:?}) ignored: {why}");
        return;
    }
    h.with_connecting(|c| {
        if c.set.len() >= MAX_SET_HEADERS || c.set_bytes + key.len() + value.len() > MAX_SET_BYTES {
            log::warn!("plugin on connection {id:x}: header_set({key:?}) ignored: too many response headers");
            return;
        }
        c.set_bytes += key.len() + value.len();
        c.set.push((key.to_owned(), value.to_owned()));
    });
}

/// Whether a plugin may add this header to a 101: a token name, a value without control
/// characters, and not one wsgate writes itself.
fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err("not a header name");
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control characters in the value");
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("wsgate writes this header itself (the subprotocol: protocol_set)");
    }
    Ok(())
}

unsafe extern "C" fn protocol_count(server: *const Server) -> usize {
    // SAFETY: the plugin passes what it was given.
    unsafe { handle(server) }.and_then(|h| h.with_connecting(|c| c.protocols.len())).unwrap_or(0)
}

unsafe extern "C" fn protocol_index(server: *const Server, index: usize) -> *const c_char {
    // SAFETY: the plugin passes what it was given.
    unsafe { handle(server) }
        .and_then(|h| h.with_connecting(|c| c.protocols.get(index).map(|p| p.as_ptr())))
        .flatten()
        .unwrap_or(std::ptr::null())
}

unsafe extern "C" fn protocol_set(server: *const Server, protocol: *const c_char) {
    // SAFETY: the plugin passes what it was given, and a C string.
    let (Some(h), Some(protocol)) = (unsafe { handle(server) }, unsafe { c_str(protocol) }) else { return };
    let id = h.id;
    h.with_connecting(|c| match c.protocols.iter().position(|p| p.as_bytes() == protocol.as_bytes()) {
        Some(i) => c.protocol = Some(i),
        None => {
            log::warn!("plugin on connection {id:x}: protocol_set({protocol:?}) ignored: the client did not offer it")
        }
    });
}

unsafe extern "C" fn send(server: *const Server, kind: c_int, buffer: *const u8, size: usize) -> usize {
    // SAFETY: the plugin passes what it was given.
    let Some(h) = (unsafe { handle(server) }) else { return 0 };
    if h.life.load(Ordering::Acquire) != OPEN {
        return 0;
    }
    let payload: &[u8] = match (buffer.is_null(), size) {
        (_, 0) => &[],
        (true, _) => return 0,
        // SAFETY: the plugin gives `size` readable bytes at `buffer`, as the header says.
        (false, _) => unsafe { std::slice::from_raw_parts(buffer, size) },
    };
    if send_payload(h, kind, payload) {
        size
    } else {
        0
    }
}

/// `send`'s work once the bytes are in a slice: checked, framed, and posted to the worker.
fn send_payload(h: &Handle, kind: c_int, payload: &[u8]) -> bool {
    let opcode = match kind {
        abi::MESSAGE_TYPE_TEXT if simdutf8::basic::from_utf8(payload).is_ok() => Opcode::Text,
        abi::MESSAGE_TYPE_BINARY => Opcode::Binary,
        abi::MESSAGE_TYPE_PING if payload.len() <= 125 => Opcode::Ping,
        abi::MESSAGE_TYPE_PONG if payload.len() <= 125 => Opcode::Pong,
        abi::MESSAGE_TYPE_CLOSE => {
            return match parse_close(payload) {
                Some((code, reason)) => close_with(h, code, reason),
                None => false,
            }
        }
        _ => return false,
    };
    if payload.len() > h.outlet.max_message {
        return false;
    }
    let frame = shared_frame(opcode, payload);
    let sent = h.outlet.post(Note::PluginSend { id: h.id, frame });
    h.outlet.stats.count_send(sent);
    sent
}

/// A close frame's payload as a plugin gives it: empty (1000), or a code a server may send
/// and a UTF-8 reason that fits a control frame.
fn parse_close(payload: &[u8]) -> Option<(u16, String)> {
    match payload {
        [] => Some((1000, String::new())),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let reason = std::str::from_utf8(reason).ok()?;
            (crate::ws::close::is_valid_code(code) && payload.len() <= 125).then(|| (code, reason.to_owned()))
        }
        [_] => None,
    }
}

unsafe extern "C" fn close(server: *const Server) {
    // SAFETY: the plugin passes what it was given.
    if let Some(h) = unsafe { handle(server) } {
        close_with(h, 1000, String::new());
    }
}

/// Asks the worker to close the connection, once.
fn close_with(h: &Handle, code: u16, reason: String) -> bool {
    if h.life.compare_exchange(OPEN, CLOSING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return false;
    }
    h.outlet.post(Note::PluginClose { id: h.id, code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_a_plugin_may_set() {
        assert!(check_header("X-Counter", "1").is_ok());
        assert!(check_header("Set-Cookie", "a=b; Path=/").is_ok());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("X-A", "a\r\nInjected: yes").is_err());
        assert!(check_header("sec-websocket-accept", "x").is_err());
        assert!(check_header("", "x").is_err());
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(b""), Some((1000, String::new())));
        assert_eq!(parse_close(b"\x03\xe8bye"), Some((1000, "bye".into())));
        assert_eq!(parse_close(b"\x0f\xa0"), Some((4000, String::new())));
        assert_eq!(parse_close(b"\x03"), None);
        assert_eq!(parse_close(b"\x03\xed"), None, "1005 is never sent");
        assert_eq!(parse_close(b"\x03\xe8\xff"), None, "reason not UTF-8");
        assert_eq!(parse_close(&[0x03, 0xe8].iter().chain(&[b'a'; 124]).copied().collect::<Vec<u8>>()), None);
    }

    #[test]
    fn the_first_offered_protocol_unless_the_route_lists_some() {
        let c = Connecting::new(std::iter::empty(), &["a", "b"], None);
        assert_eq!(c.protocol, Some(0));
        let c = Connecting::new(std::iter::empty(), &["a", "b"], Some(Some("b")));
        assert_eq!(c.protocol, Some(1));
        let c = Connecting::new(std::iter::empty(), &["a", "b"], Some(None));
        assert_eq!(c.protocol, None);
        let c = Connecting::new(std::iter::empty(), &[], None);
        assert_eq!(c.protocol, None);
    }
}
