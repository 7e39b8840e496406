//! wsgate as a library: a counter room, served by an app of this program's own.
//!
//! Every client of `/counter` sees one counter, shared by the whole process: `+1` increments
//! it and every client hears the new value (`count N`, published to a topic, so it reaches
//! the clients of every worker); `get` answers the sender alone; and each client gets a
//! `tick N` every few seconds from its own timer. `/echo` is the smallest app there is (every
//! message back): what `docs/plugins.md` measures against the built-in echo and a C plugin.
//!
//! ```sh
//! cargo run --release --example embed -- 127.0.0.1:8080 5000
//! wsgate client ws://127.0.0.1:8080/counter
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsgate::{App, AppCtx, MessageKind, Payload};

/// Where every client hears the counter change.
const TOPIC: &str = "counter";

/// One client of the room.
struct Counter {
    count: Arc<AtomicU64>,
    tick_every: Duration,
    next_tick: Option<Instant>,
}

impl Counter {
    fn value(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl App for Counter {
    fn on_open(&mut self, cx: &mut AppCtx<'_>) {
        if let Err(e) = cx.subscribe(TOPIC, 1) {
            cx.send(MessageKind::Text, format!("error: {e}").as_bytes());
        }
        cx.send(MessageKind::Text, format!("count {}", self.value()).as_bytes());
        self.next_tick = Some(cx.now() + self.tick_every);
    }

    fn on_message(&mut self, cx: &mut AppCtx<'_>, _kind: MessageKind, payload: Payload<'_>) {
        match payload.as_slice() {
            b"+1" => {
                let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                cx.publish_message(TOPIC, MessageKind::Text, format!("count {n}").as_bytes(), false);
            }
            b"get" => cx.send(MessageKind::Text, format!("count {}", self.value()).as_bytes()),
            _ => cx.send(MessageKind::Text, b"error: send +1 or get"),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.next_tick
    }

    fn on_timer(&mut self, cx: &mut AppCtx<'_>) {
        cx.send(MessageKind::Text, format!("tick {}", self.value()).as_bytes());
        self.next_tick = Some(cx.now() + self.tick_every);
    }
}

/// Every message back to its sender.
struct Echo;

impl App for Echo {
    fn on_message(&mut self, cx: &mut AppCtx<'_>, kind: MessageKind, payload: Payload<'_>) {
        cx.send(kind, payload.as_slice());
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse().expect("ADDRESS:PORT");
    let tick_every = Duration::from_millis(args.next().map_or(5000, |ms| ms.parse().expect("tick interval in ms")));
    let count = Arc::new(AtomicU64::new(0));
    let server = wsgate::Server::builder()
        .listen(addr)
        .route("/counter", move || Counter { count: Arc::clone(&count), tick_every, next_tick: None })
        .route("/echo", || Echo)
        .bind()?;
    // The port actually bound (0 in the tests), for whoever started us.
    println!("listening on {}", server.local_addrs()[0].0);
    server.run()
}
