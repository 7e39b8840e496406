//! The C structures of `include/wsgate_plugin.h` (apache-websocket's plugin version 0 and server
//! version 1), laid out as C lays them out.

use std::ffi::{c_char, c_int, c_uint, c_void};

pub const MESSAGE_TYPE_TEXT: c_int = 0;
pub const MESSAGE_TYPE_BINARY: c_int = 128;
pub const MESSAGE_TYPE_CLOSE: c_int = 255;
pub const MESSAGE_TYPE_PING: c_int = 256;
pub const MESSAGE_TYPE_PONG: c_int = 257;

pub const SERVER_VERSION_1: c_uint = 1;
pub const PLUGIN_VERSION_0: c_uint = 0;

pub type Request = unsafe extern "C" fn(server: *const Server) -> *mut c_void;
pub type HeaderGet = unsafe extern "C" fn(server: *const Server, key: *const c_char) -> *const c_char;
pub type HeaderSet = unsafe extern "C" fn(server: *const Server, key: *const c_char, value: *const c_char);
pub type ProtocolCount = unsafe extern "C" fn(server: *const Server) -> usize;
pub type ProtocolIndex = unsafe extern "C" fn(server: *const Server, index: usize) -> *const c_char;
pub type ProtocolSet = unsafe extern "C" fn(server: *const Server, protocol: *const c_char);
pub type Send = unsafe extern "C" fn(server: *const Server, kind: c_int, buffer: *const u8, size: usize) -> usize;
pub type Close = unsafe extern "C" fn(server: *const Server);

/// `WebSocketServer`: what a plugin is handed for one connection.
#[repr(C)]
pub struct Server {
    pub size: c_uint,
    pub version: c_uint,
    /// wsgate's per-connection state (opaque to the plugin).
    pub state: *mut c_void,
    pub request: Option<Request>,
    pub header_get: Option<HeaderGet>,
    pub header_set: Option<HeaderSet>,
    pub protocol_count: Option<ProtocolCount>,
    pub protocol_index: Option<ProtocolIndex>,
    pub protocol_set: Option<ProtocolSet>,
    pub send: Option<Send>,
    pub close: Option<Close>,
}

pub type Init = unsafe extern "C" fn() -> *mut Plugin;
pub type Destroy = unsafe extern "C" fn(plugin: *mut Plugin);
pub type OnConnect = unsafe extern "C" fn(server: *const Server) -> *mut c_void;
pub type OnMessage = unsafe extern "C" fn(
    private: *mut c_void,
    server: *const Server,
    kind: c_int,
    buffer: *mut u8,
    size: usize,
) -> usize;
pub type OnDisconnect = unsafe extern "C" fn(private: *mut c_void, server: *const Server);

/// `WebSocketPlugin`: what a plugin's init function returns.
#[repr(C)]
pub struct Plugin {
    pub size: c_uint,
    pub version: c_uint,
    pub destroy: Option<Destroy>,
    pub on_connect: Option<OnConnect>,
    pub on_message: Option<OnMessage>,
    pub on_disconnect: Option<OnDisconnect>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The layout a C compiler gives the header's structures on an LP64 target (every Linux
    /// wsgate runs on): two 32-bit fields, then pointers.
    #[test]
    fn layouts_are_the_headers() {
        assert_eq!(size_of::<Server>(), 8 + 9 * 8);
        assert_eq!(offset_of!(Server, state), 8);
        assert_eq!(offset_of!(Server, send), 8 + 7 * 8);
        assert_eq!(offset_of!(Server, close), 8 + 8 * 8);
        assert_eq!(size_of::<Plugin>(), 8 + 4 * 8);
        assert_eq!(offset_of!(Plugin, on_message), 8 + 2 * 8);
    }
}
