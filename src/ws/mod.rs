//! The RFC 6455 protocol core. No I/O: every function here takes byte slices and returns
//! values, so all of it is unit-tested, fuzzed (`fuzz/`) and benchmarked (`benches/`).
//!
//! - [`frame`]: frame headers, parsed in place and encoded into a fixed array.
//! - [`mask`]: in-place unmasking that can resume at any payload offset.
//! - [`utf8`]: streaming UTF-8 validation that fails at the first bad byte.
//! - [`message`]: fragments and control frames in, whole messages out.
//! - [`close`]: close codes and close payloads.
//! - [`handshake`]: the opening handshake (§4) on top of [`crate::http`].
//! - [`session`]: the sans-I/O session above them: pings, idle and close deadlines, the close
//!   handshake; time passed in, for the server and a client alike.
//! - [`deflate`], [`extensions`]: permessage-deflate (RFC 7692), its codec and negotiation.
//! - [`hixie`]: the legacy hixie-76/75 drafts: handshake, frames, translation.
//! - [`endpoint`]: one endpoint of either role: the session, the wire (RFC 6455 with
//!   permessage-deflate, or a legacy draft), and every failure's close code in one place;
//!   what the server's connections, a client and the load tools drive.

pub mod close;
pub mod deflate;
pub mod endpoint;
mod error;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod hixie;
pub mod mask;
pub mod message;
pub mod session;
pub mod utf8;

pub use error::ProtocolError;
