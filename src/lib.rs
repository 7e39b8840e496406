//! wsgate: a WebSocket gateway and message broker for the low-latency edge.
//!
//! Data flows through the modules in this order:
//!
//! - [`server`]: the reactor (mio `Poll`, listeners, `Slab<Connection>`, timers, signals),
//!   applying what connections ask for; [`pubsub`]: its topics;
//! - [`connection`]: one connection's phases, buffers and readiness; one close path;
//! - [`apps`]: what serves an open WebSocket (echo, chat, pubsub, backend) behind one trait;
//! - [`transport`]: plain TCP or TLS (rustls, driven by hand) behind one interface;
//!   [`tls`]: certificates, SNI and the rustls configuration;
//! - [`http`]: request heads and responses; [`ws`]: the RFC 6455 protocol core (frames,
//!   masking, UTF-8, messages, close, handshake), pure functions on byte slices, fuzzed and
//!   benchmarked;
//! - [`route`]: request path → app or backend, with the route's policy and limits;
//! - [`backend`]: UNIX-socket backends: framings (raw, lines, framed, direct), links, hand-off;
//! - [`buffer`]: pooled read buffers and the vectored output queue; [`encode`]: frames onto
//!   it, encoded once and shared for fan-out;
//! - [`config`]: TOML → validated [`config::Config`], the embedded default;
//! - [`sys`]: the system calls std does not wrap (splice, fd passing, privileges, rlimit),
//!   the only place with `unsafe` besides the SIMD unmask.

#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod apps;
pub mod backend;
pub mod broker;
pub mod buffer;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod encode;
pub mod http;
pub mod logview;
pub mod metrics;
pub mod pubsub;
pub mod route;
pub mod server;
// Every `unsafe` block of the crate is in `sys` (and the SIMD unmask in `ws::mask`), each with
// a `// SAFETY:` comment; elsewhere `unsafe` does not compile.
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod transport;
pub mod ws;

/// Entry points for `fuzz/`: each fuzz target is one line into here.
#[doc(hidden)]
pub mod fuzzing;
