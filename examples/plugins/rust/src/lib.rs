//! A wsgate plugin in Rust, on the same C ABI as the C examples (`include/wsgate_plugin.h`,
//! apache-websocket's plugin version 0 and server version 1): "numbered echo". Every text
//! message comes back numbered (`"1: hello"`), binary messages come back as they are, and a
//! client that offers the subprotocol `numbered` gets it named in the 101.
//!
//! ```sh
//! cargo build --release --manifest-path examples/plugins/rust/Cargo.toml
//! ```
//!
//! ```toml
//! [[route]]
//! path = "/numbered"
//! app = "plugin"
//! plugin = "target/release/libwsgate_plugin_rust.so"
//! init = "numbered_init"
//! ```
//!
//! The structures are declared here as the header declares them: a plugin needs nothing of
//! wsgate's but the ABI. A panic must not unwind into the server (it would abort it), so every
//! callback catches it and answers as a failed call would.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

const MESSAGE_TYPE_TEXT: c_int = 0;
const MESSAGE_TYPE_BINARY: c_int = 128;
const WEBSOCKET_SERVER_VERSION_1: c_uint = 1;
const WEBSOCKET_PLUGIN_VERSION_0: c_uint = 0;

/// `WebSocketServer`, as the header lays it out.
#[repr(C)]
pub struct Server {
    size: c_uint,
    version: c_uint,
    state: *mut c_void,
    request: Option<unsafe extern "C" fn(*const Server) -> *mut c_void>,
    header_get: Option<unsafe extern "C" fn(*const Server, *const c_char) -> *const c_char>,
    header_set: Option<unsafe extern "C" fn(*const Server, *const c_char, *const c_char)>,
    protocol_count: Option<unsafe extern "C" fn(*const Server) -> usize>,
    protocol_index: Option<unsafe extern "C" fn(*const Server, usize) -> *const c_char>,
    protocol_set: Option<unsafe extern "C" fn(*const Server, *const c_char)>,
    send: Option<unsafe extern "C" fn(*const Server, c_int, *const u8, usize) -> usize>,
    close: Option<unsafe extern "C" fn(*const Server)>,
}

/// `WebSocketPlugin`, as the header lays it out.
#[repr(C)]
pub struct Plugin {
    size: c_uint,
    version: c_uint,
    destroy: Option<unsafe extern "C" fn(*mut Plugin)>,
    on_connect: Option<unsafe extern "C" fn(*const Server) -> *mut c_void>,
    on_message: Option<unsafe extern "C" fn(*mut c_void, *const Server, c_int, *mut u8, usize) -> usize>,
    on_disconnect: Option<unsafe extern "C" fn(*mut c_void, *const Server)>,
}

/// One connection's state: the messages it sent so far.
struct Numbered {
    count: u64,
}

/// Chooses `numbered` if offered, and accepts every client.
unsafe extern "C" fn on_connect(server: *const Server) -> *mut c_void {
    let accepted = catch_unwind(|| {
        // SAFETY: wsgate passes a valid server structure for the duration of the call.
        let s = unsafe { &*server };
        if s.version < WEBSOCKET_SERVER_VERSION_1 {
            return std::ptr::null_mut();
        }
        if let (Some(count), Some(index), Some(set)) = (s.protocol_count, s.protocol_index, s.protocol_set) {
            // SAFETY: the server's own functions, called with its own structure; the strings
            // they return are valid during on_connect.
            unsafe {
                for i in 0..count(server) {
                    let p = index(server, i);
                    if !p.is_null() && CStr::from_ptr(p).to_bytes() == b"numbered" {
                        set(server, p);
                    }
                }
            }
        }
        Box::into_raw(Box::new(Numbered { count: 0 })).cast::<c_void>()
    });
    accepted.unwrap_or(std::ptr::null_mut())
}

unsafe extern "C" fn on_message(
    private: *mut c_void,
    server: *const Server,
    kind: c_int,
    buffer: *mut u8,
    size: usize,
) -> usize {
    let sent = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `private` is what on_connect returned, used by one callback at a time
        // (wsgate never runs a connection's callbacks concurrently).
        let Some(state) = (unsafe { private.cast::<Numbered>().as_mut() }) else { return 0 };
        // SAFETY: wsgate passes `size` readable bytes at `buffer` for the call.
        let payload = if size == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(buffer, size) } };
        // SAFETY: as in on_connect.
        let Some(send) = (unsafe { &*server }).send else { return 0 };
        state.count += 1;
        match kind {
            MESSAGE_TYPE_TEXT => {
                let reply = format!("{}: {}", state.count, String::from_utf8_lossy(payload));
                // SAFETY: the server's send, with a buffer valid for the call.
                unsafe { send(server, MESSAGE_TYPE_TEXT, reply.as_ptr(), reply.len()) }
            }
            // SAFETY: as above.
            MESSAGE_TYPE_BINARY => unsafe { send(server, MESSAGE_TYPE_BINARY, payload.as_ptr(), payload.len()) },
            _ => 0,
        }
    }));
    sent.unwrap_or(0)
}

unsafe extern "C" fn on_disconnect(private: *mut c_void, _server: *const Server) {
    if !private.is_null() {
        // SAFETY: the box on_connect made, freed once: on_disconnect is the last callback.
        drop(unsafe { Box::from_raw(private.cast::<Numbered>()) });
    }
}

static PLUGIN: Plugin = Plugin {
    size: std::mem::size_of::<Plugin>() as c_uint,
    version: WEBSOCKET_PLUGIN_VERSION_0,
    destroy: None,
    on_connect: Some(on_connect),
    on_message: Some(on_message),
    on_disconnect: Some(on_disconnect),
};

/// The init function a route names (`init = "numbered_init"`).
#[no_mangle]
pub extern "C" fn numbered_init() -> *const Plugin {
    &PLUGIN
}
