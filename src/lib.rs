//! wsgate: a WebSocket gateway and message broker for the low-latency edge.
//!
//! Data flows through the modules in this order:
//!
//! - [`ws`]: the RFC 6455 protocol core (frames, masking, UTF-8, messages, close, handshake),
//!   pure functions on byte slices, fuzzed and benchmarked;
//! - [`http`]: request heads and responses around the handshake.

pub mod http;
pub mod ws;

/// Entry points for `fuzz/`: each fuzz target is one line into here.
#[doc(hidden)]
pub mod fuzzing;
