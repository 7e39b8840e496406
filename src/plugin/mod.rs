//! C plugins with apache-websocket's interface (`include/wsgate_plugin.h`): a shared library
//! exports an init function returning a structure of callbacks, and a route maps a path to
//! it.
//!
//! - [`mod@load`]: opening the library and checking what its init function returns, once per
//!   process;
//! - [`host`]: the threads the callbacks run on (never the reactor's), and the queues to them;
//! - [`handle`]: one connection as the plugin sees it, and the functions it may call.
//!
//! The one place besides `sys` and the unmasking where `unsafe` is allowed: calling into C.

#![allow(unsafe_code)]

pub mod abi;
pub mod handle;
pub mod host;
pub mod load;

pub use handle::{Accept, Connecting};
pub use host::{Attachment, Hosts};
pub use load::{load, Loaded};
