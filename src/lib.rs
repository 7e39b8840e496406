//! wsgate: a WebSocket gateway and message broker for the low-latency edge.
//!
//! Data flows through the modules in this order:
//!
//! - [`server`]: the reactors (one mio `Poll` per worker: listeners, `Slab<Connection>`,
//!   timers, signals), applying what connections ask for, split by job (starting, accepting,
//!   fan-out, lifecycle, admin commands); [`conn_id`]: a connection's id, which says where it
//!   is; [`pubsub`]: their topics;
//!   [`cluster`]: topics across nodes through Redis;
//! - [`connection`]: one connection's phases, read buffer and readiness; one frames → app
//!   path, one close path, and the access line that says how it ended; [`access_log`]: that
//!   line's file;
//! - [`apps`]: what serves an open WebSocket (echo, chat, pubsub, broker, logview, dashboard,
//!   backend) behind one trait; [`broker`]: the token broker's index and token lists;
//!   [`logview`]: following log files for the log viewers;
//! - [`transport`]: plain TCP or TLS (rustls, driven by hand) behind one interface, or an
//!   in-memory stream for the fuzzer; [`io_step`]: the one reading of an I/O call's result;
//!   [`tls`]: certificates, SNI and the rustls configuration;
//! - [`http`]: request heads, responses and static files; [`ws`]: the RFC 6455 protocol core
//!   (frames, masking, UTF-8, messages, close, handshake, permessage-deflate, the hixie
//!   drafts, and the endpoint of either role that drives them), pure functions on byte
//!   slices, fuzzed and benchmarked;
//! - [`route`]: a route and the table, request path → app, backend or directory, with the
//!   route's policy and [`limits`];
//! - [`backend`]: UNIX-socket backends: framings (raw, lines, framed, direct), links, hand-off;
//! - [`buffer`]: pooled read buffers and the vectored output queue; [`encode`]: frames onto
//!   it, encoded once and shared for fan-out;
//! - [`admin`]: the admin listener's API (keys, scopes, commands, their rendering) and
//!   dashboard;
//!   [`metrics`]: the counters and their Prometheus text;
//! - [`config`]: TOML → validated [`config::Config`] (parsing and validation only: the
//!   types it builds live with the modules that use them), the embedded default;
//! - [`sys`]: the system calls std does not wrap (splice, fd passing, privileges, rlimit,
//!   memory, openat2 and sendfile), the only place with `unsafe` besides the SIMD unmask;
//! - `fuzzing` (hidden): the fuzz targets' entry points, a whole connection among them.
//!
//! The modules form layers, with no import circle: `sys`, `buffer`, `ws`, `http`, `backend`,
//! `pubsub`, `metrics` and `route` below `apps`, `admin` and `logview`, and `connection` and
//! `server` on top.

#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod apps;
pub mod backend;
pub mod broker;
pub mod buffer;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conn_id;
pub mod connection;
pub mod encode;
pub mod http;
pub mod io_step;
pub mod limits;
pub mod logview;
pub mod metrics;
pub mod plugin;
pub mod pubsub;
pub mod route;
pub mod server;
pub mod stamp;
// Every `unsafe` block of the crate is in `sys` (and the SIMD unmask in `ws::mask`, and the
// calls into C plugins in `plugin`), each with a `// SAFETY:` comment; elsewhere `unsafe` does
// not compile.
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod transport;
pub mod ws;

/// Entry points for `fuzz/`: each fuzz target is one line into here.
#[doc(hidden)]
pub mod fuzzing;
