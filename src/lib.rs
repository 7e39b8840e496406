//! wsgate: a WebSocket gateway and message broker for the low-latency edge.
//!
//! Mostly it runs as a program (`wsgate -c wsgate.toml`, see `wsgate(8)`). As a library it
//! does two things:
//!
//! - **Serve apps of your own** on the same reactors as the built-in ones: implement [`App`]
//!   (a connection's callbacks: [`App::on_open`], [`App::on_message`], [`App::on_close`],
//!   [`App::on_timer`], and I/O on a socket of its own), then run a [`Server`] with
//!   [`Server::builder`]. Each connection's app runs on the worker thread that serves it and
//!   answers through an [`AppCtx`]: send to its client, subscribe it to topics, publish to
//!   every subscriber on every worker (and node), send to another connection by id, close.
//!   `examples/embed.rs` is a counter room built this way.
//! - **Be a WebSocket client**: [`client`] (blocking, `ws://`, `wss://` and `ws+unix:`), on
//!   the same sans-I/O protocol core as the server.
//!
//! ```no_run
//! use wsgate::{App, AppCtx, MessageKind, Payload};
//!
//! struct Echo;
//!
//! impl App for Echo {
//!     fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
//!         cx.send(kind, payload.as_slice());
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     wsgate::Server::builder().listen("127.0.0.1:8080".parse().unwrap()).route("/echo", || Echo).run()
//! }
//! ```
//!
//! What is public API (semver): the items at this root, [`client`] and [`config`]. The other
//! modules are public only for the project's own benches, fuzz targets and tests; they are
//! hidden from these docs and may change in any release.
//!
//! For the project's developers, data flows through the (hidden) modules in this order:
//!
//! - `server`: the reactors (one mio `Poll` per worker: listeners, `Slab<Connection>`,
//!   timers, signals), applying what connections ask for, split by job (starting, accepting,
//!   fan-out, lifecycle, admin commands); `conn_id`: a connection's id, which says where it
//!   is; `pubsub`: their topics; `cluster`: topics across nodes through Redis;
//! - `connection`: one connection's phases, read buffer and readiness; one frames → app
//!   path, one close path, and the access line that says how it ended; `access_log`: that
//!   line's file;
//! - `apps`: what serves an open WebSocket (echo, chat, pubsub, broker, logview, dashboard,
//!   backend, plugin, and the embedding program's) behind one trait; `broker`: the token
//!   broker's index and token lists; `logview`: following log files for the log viewers;
//!   `plugin`: C plugins (apache-websocket's ABI) on threads of their own;
//! - `transport`: plain TCP or TLS (rustls, driven by hand) behind one interface, or an
//!   in-memory stream for the fuzzer; `io_step`: the one reading of an I/O call's result;
//!   `tls`: certificates, SNI and the rustls configuration;
//! - `http`: request heads, responses and static files; `ws`: the RFC 6455 protocol core
//!   (frames, masking, UTF-8, messages, close, handshake, permessage-deflate, the hixie
//!   drafts, and the endpoint of either role that drives them), pure functions on byte
//!   slices, fuzzed and benchmarked;
//! - `route`: a route and the table, request path → app, backend or directory, with the
//!   route's policy and `limits`;
//! - `backend`: UNIX-socket backends: framings (raw, lines, framed, direct), links, hand-off;
//! - `buffer`: pooled read buffers and the vectored output queue; `encode`: frames onto
//!   it, encoded once and shared for fan-out;
//! - `admin`: the admin listener's API (keys, scopes, commands, their rendering) and
//!   dashboard; `metrics`: the counters and their Prometheus text;
//! - [`config`]: TOML → validated [`Config`] (parsing and validation only: the types it
//!   builds live with the modules that use them), the embedded default;
//! - `sys`: the system calls std does not wrap (splice, fd passing, privileges, rlimit,
//!   memory, openat2 and sendfile), the only place with `unsafe` besides the SIMD unmask and
//!   the calls into plugins;
//! - `fuzzing`: the fuzz targets' entry points, a whole connection among them.
//!
//! The modules form layers, with no import circle: `sys`, `buffer`, `ws`, `http`, `backend`,
//! `pubsub`, `metrics` and `route` below `apps`, `admin` and `logview`, and `connection` and
//! `server` on top.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub use apps::{App, AppClose, AppCtx, AppIo, Hold, Payload};
pub use config::{Config, Listener};
pub use limits::Limits;
pub use pubsub::SubscribeError;
pub use route::Route;
pub use server::{Builder, Server, Stopper};
pub use ws::message::MessageKind;

#[doc(hidden)]
pub mod access_log;
#[doc(hidden)]
pub mod admin;
#[doc(hidden)]
pub mod apps;
#[doc(hidden)]
pub mod auth;
#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod broker;
#[doc(hidden)]
pub mod buffer;
pub mod client;
#[doc(hidden)]
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod conn_id;
#[doc(hidden)]
pub mod connection;
#[doc(hidden)]
pub mod encode;
#[doc(hidden)]
pub mod history;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod io_step;
#[doc(hidden)]
pub mod limits;
#[doc(hidden)]
pub mod logview;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod plugin;
#[doc(hidden)]
pub mod presence;
#[doc(hidden)]
pub mod pubsub;
#[doc(hidden)]
pub mod rate_limit;
#[doc(hidden)]
pub mod route;
#[doc(hidden)]
pub mod server;
#[doc(hidden)]
pub mod stamp;
// Every `unsafe` block of the crate is in `sys` (and the SIMD unmask in `ws::mask`, and the
// calls into C plugins in `plugin`), each with a `// SAFETY:` comment; elsewhere `unsafe` does
// not compile.
#[allow(unsafe_code)]
#[doc(hidden)]
pub mod sys;
#[doc(hidden)]
pub mod tls;
#[doc(hidden)]
pub mod transport;
#[doc(hidden)]
pub mod ws;

/// Entry points for `fuzz/`: each fuzz target is one line into here.
#[doc(hidden)]
pub mod fuzzing;
