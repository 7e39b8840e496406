//! Where plugin callbacks run: one thread per plugin route and worker, fed through a queue.
//!
//! The reactor never calls into a plugin: a callback may block (dumb-increment's
//! `on_disconnect` joins a thread that sleeps 50 ms), and a worker that waited would stall
//! every other connection it serves. The worker posts jobs (connect, message, disconnect) to
//! one of the route's plugin threads (`plugin_threads` per route and worker), always the same
//! one for a connection: each thread runs its jobs in order, so the callbacks of one
//! connection are never concurrent and come in the order their events did, while different
//! connections' callbacks may run at once on different threads (as Apache runs them). What
//! comes back (the answer to `on_connect`, `send`, `close`) goes to the worker as mesh notes.
//!
//! Memory stays bounded without bounding the queue: a connection's messages count against
//! the route's `backpressure_high` until `on_message` has returned (past it the worker stops
//! reading that client, and the thread says when to resume), and connects and disconnects
//! are one per connection.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::abi;
use super::handle::{Accept, Connecting, Handle, QUARANTINE};
use super::load::Loaded;
use crate::route::{Route, RouteId};
use crate::server::mesh::{Mesh, Note};
use crate::ws::message::MessageKind;

/// What a queued message counts beyond its payload, so a flood of empty messages is bounded
/// too.
const MESSAGE_OVERHEAD: usize = 64;
/// How long a stopping worker waits for its plugin threads to finish their callbacks.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A plugin route's figures on one worker (read by `/metrics` and the admin API).
#[derive(Default, Debug)]
pub struct Stats {
    /// Connections given to `on_connect`, and those it declined.
    pub connects: AtomicU64,
    pub declined: AtomicU64,
    /// Messages given to `on_message`.
    pub messages_in: AtomicU64,
    /// Messages the plugin sent, and those refused (not valid for their type, the connection
    /// gone or closing, the worker's inbox full).
    pub messages_out: AtomicU64,
    pub sends_refused: AtomicU64,
    /// Jobs waiting for the plugin thread.
    pub queued: AtomicUsize,
    /// Callbacks run, and the time spent in them.
    pub callbacks: AtomicU64,
    pub callback_nanos: AtomicU64,
}

impl Stats {
    pub(super) fn count_send(&self, sent: bool) {
        if sent {
            self.messages_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.sends_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures, summed into `into` (one worker's part of the route's).
    pub fn add_to(&self, into: &mut PluginFigures) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        into.connects += get(&self.connects);
        into.declined += get(&self.declined);
        into.messages_in += get(&self.messages_in);
        into.messages_out += get(&self.messages_out);
        into.sends_refused += get(&self.sends_refused);
        into.queued += self.queued.load(Ordering::Relaxed) as u64;
        into.callbacks += get(&self.callbacks);
        into.callback_nanos += get(&self.callback_nanos);
    }
}

/// A plugin route's figures, summed over the workers.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginFigures {
    pub connects: u64,
    pub declined: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub sends_refused: u64,
    pub queued: u64,
    pub callbacks: u64,
    pub callback_nanos: u64,
}

impl PluginFigures {
    pub fn absorb(&mut self, o: &PluginFigures) {
        self.connects += o.connects;
        self.declined += o.declined;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.sends_refused += o.sends_refused;
        self.queued += o.queued;
        self.callbacks += o.callbacks;
        self.callback_nanos += o.callback_nanos;
    }
}

/// How a plugin's calls reach the worker serving its connections.
pub struct Outlet {
    mesh: Arc<Mesh>,
    worker: usize,
    pub(super) stats: Arc<Stats>,
    /// Larger sends are refused (the route's `max_message_size`).
    pub(super) max_message: usize,
    /// The route's `backpressure_high`: what [`Handle::pending`] is held under.
    high: usize,
}

impl Outlet {
    pub(super) fn post(&self, note: Note) -> bool {
        self.mesh.post(self.worker, note)
    }
}

enum Job {
    Connect(Arc<Handle>),
    Message(Arc<Handle>, c_int, Vec<u8>),
    /// No callback: say when every earlier job of the connection is done.
    Flush(Arc<Handle>),
    Disconnect(Arc<Handle>),
}

/// A worker's way to one plugin thread.
struct Link {
    jobs: Sender<Job>,
    outlet: Arc<Outlet>,
}

impl Link {
    fn post(&self, job: Job) {
        self.outlet.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            // The thread is gone only if a callback panicked through it (a plugin bug).
            self.outlet.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One connection of a plugin route, from the worker's side: what it posts its messages
/// through. Dropped (the connection is gone, whatever the phase), it posts the disconnect.
pub struct Attachment {
    link: Arc<Link>,
    handle: Arc<Handle>,
}

impl Attachment {
    /// Queues a client's message for `on_message`; false when the client must not be read
    /// until the thread catches up.
    pub fn message(&self, kind: MessageKind, payload: Vec<u8>) -> bool {
        let kind = match kind {
            MessageKind::Text => abi::MESSAGE_TYPE_TEXT,
            MessageKind::Binary => abi::MESSAGE_TYPE_BINARY,
        };
        let cost = payload.len() + MESSAGE_OVERHEAD;
        let pending = self.handle.pending.fetch_add(cost, Ordering::AcqRel) + cost;
        self.link.post(Job::Message(Arc::clone(&self.handle), kind, payload));
        pending < self.link.outlet.high
    }

    /// Asks the plugin thread to say ([`Note::PluginFlushed`]) once the messages queued so
    /// far have been through `on_message` (and what they sent is on its way).
    pub fn flush(&self) {
        self.link.post(Job::Flush(Arc::clone(&self.handle)));
    }

    /// Whether the client may be read: its messages the plugin has not taken yet are under
    /// the route's `backpressure_high`.
    pub fn accepts_input(&self) -> bool {
        self.handle.pending.load(Ordering::Acquire) < self.link.outlet.high
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.link.post(Job::Disconnect(Arc::clone(&self.handle)));
    }
}

/// One worker's plugin threads (started when a route's first client comes). A route that a
/// reload re-creates with the same plugin, threads and limits gets the same pool: reloading
/// starts no threads.
pub struct Hosts {
    mesh: Arc<Mesh>,
    worker: usize,
    pools: Vec<Pool>,
}

/// What makes two routes' pools the same: the plugin, the threads, and the limits the
/// outlet applies.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PoolKey {
    plugin: *const Loaded,
    threads: usize,
    high: usize,
    max_message: usize,
}

/// A route's threads on one worker: a connection's jobs all go to one of them.
struct Pool {
    key: PoolKey,
    /// The latest route served by it (its figures go under that route's path).
    route: RouteId,
    links: Vec<Arc<Link>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl Hosts {
    pub fn new(mesh: Arc<Mesh>, worker: usize) -> Hosts {
        Hosts { mesh, worker, pools: Vec::new() }
    }

    /// Gives connection `id` to route `route_id`'s plugin: `on_connect` runs on one of the
    /// plugin's threads, whose answer comes back as a [`Note::PluginOpened`]. Fails only when
    /// the threads cannot be started.
    pub fn connect(
        &mut self,
        route_id: RouteId,
        route: &Route,
        id: u64,
        request: Connecting,
    ) -> io::Result<Attachment> {
        let Some(spec) = &route.plugin else { return Err(io::Error::other("not a plugin route")) };
        let key = PoolKey {
            plugin: Arc::as_ptr(&spec.loaded),
            threads: spec.threads,
            high: route.limits.backpressure_high.max(1),
            max_message: route.limits.max_message_size,
        };
        let pool = match self.pools.iter().position(|p| p.key == key) {
            Some(i) => &mut self.pools[i],
            None => {
                let pool = Pool::start(&self.mesh, self.worker, route_id, key, &spec.loaded)?;
                log::debug!("worker {}: {} plugin thread(s) for route {:?}", self.worker, spec.threads, route.path);
                self.pools.push(pool);
                self.pools.last_mut().expect("just pushed")
            }
        };
        pool.route = pool.route.max(route_id);
        // Slab keys and generations both spread, so the low bits of the mix spread too.
        let link = Arc::clone(&pool.links[((id ^ (id >> 32)) % pool.links.len() as u64) as usize]);
        let handle = Handle::new(id, Arc::clone(&link.outlet), request);
        link.post(Job::Connect(Arc::clone(&handle)));
        Ok(Attachment { link, handle })
    }

    /// Each plugin route's figures on this worker (by the latest route each pool served).
    pub fn figures(&self) -> Vec<(RouteId, PluginFigures)> {
        let mut all: Vec<(RouteId, PluginFigures)> = self
            .pools
            .iter()
            .map(|pool| {
                let mut f = PluginFigures::default();
                pool.stats.add_to(&mut f);
                (pool.route, f)
            })
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

impl Pool {
    fn start(
        mesh: &Arc<Mesh>,
        worker: usize,
        route_id: RouteId,
        key: PoolKey,
        loaded: &Arc<Loaded>,
    ) -> io::Result<Pool> {
        let outlet = Arc::new(Outlet {
            mesh: Arc::clone(mesh),
            worker,
            stats: Arc::default(),
            max_message: key.max_message,
            high: key.high,
        });
        let n = key.threads;
        let mut pool = Pool {
            key,
            route: route_id,
            links: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stats: Arc::clone(&outlet.stats),
        };
        for i in 0..n {
            let (jobs, rx) = channel();
            let loaded = Arc::clone(loaded);
            let thread_outlet = Arc::clone(&outlet);
            loaded.threads.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new().name(format!("wsgate-p{worker}.{route_id}.{i}")).spawn({
                let loaded = Arc::clone(&loaded);
                move || {
                    run(&loaded, &rx, &thread_outlet);
                    loaded.threads.fetch_sub(1, Ordering::AcqRel);
                }
            });
            match spawned {
                Ok(thread) => pool.threads.push(thread),
                Err(e) => {
                    loaded.threads.fetch_sub(1, Ordering::AcqRel);
                    return Err(e); // the threads started end with their links, dropped here
                }
            }
            pool.links.push(Arc::new(Link { jobs, outlet: Arc::clone(&outlet) }));
        }
        Ok(pool)
    }
}

impl Drop for Hosts {
    /// The worker stops: its connections (dropped before this) have posted their
    /// disconnects; each thread runs them and ends. One stuck in a callback is left behind
    /// after [`STOP_WAIT`] (the process is exiting).
    #[allow(clippy::disallowed_methods)] // off the loop: the worker has stopped
    fn drop(&mut self) {
        let threads: Vec<JoinHandle<()>> = self.pools.drain(..).flat_map(|pool| pool.threads).collect();
        let give_up = Instant::now() + STOP_WAIT;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                log::warn!("a plugin callback has not returned in {STOP_WAIT:?}; exiting without it");
            }
        }
    }
}

/// The plugin thread: jobs in order until every link to it is gone.
#[allow(clippy::disallowed_methods)] // the thread's own clock: callback timing and the quarantine
fn run(loaded: &Loaded, jobs: &Receiver<Job>, outlet: &Outlet) {
    let plugin = loaded.plugin();
    let stats = &*outlet.stats;
    let mut quarantine: VecDeque<(Instant, Arc<Handle>)> = VecDeque::new();
    // When the last job ended: a job taken without waiting starts then, so a busy thread
    // reads the clock once per job, not twice.
    let mut last_end = Instant::now();
    loop {
        let (job, started) = match jobs.try_recv() {
            Ok(job) => (job, last_end),
            Err(_) => {
                let job = match quarantine.front() {
                    Some((since, _)) => jobs.recv_timeout((*since + QUARANTINE).saturating_duration_since(last_end)),
                    None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match job {
                    Ok(job) => (job, Instant::now()),
                    Err(RecvTimeoutError::Timeout) => {
                        last_end = Instant::now();
                        expire(&mut quarantine, last_end);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        let called = match job {
            Job::Connect(handle) => {
                let private = match plugin.on_connect {
                    // SAFETY: the plugin's callback, called as the header specifies, with a
                    // server structure that outlives the call.
                    Some(on_connect) => unsafe { on_connect(handle.server()) },
                    None => std::ptr::null_mut(),
                };
                let accepted = plugin.on_connect.is_none() || !private.is_null();
                handle.private.store(private, std::sync::atomic::Ordering::Release);
                let answer = handle.connected(accepted);
                stats.connects.fetch_add(1, Ordering::Relaxed);
                stats.declined.fetch_add(u64::from(!accepted), Ordering::Relaxed);
                outlet.post(Note::PluginOpened { id: handle.id, answer: answer.map(Box::new) });
                if accepted {
                    handle.open();
                }
                plugin.on_connect.is_some()
            }
            Job::Message(handle, kind, mut payload) => {
                let on_message = plugin.on_message.filter(|_| handle.accepted());
                if let Some(on_message) = on_message {
                    let private = handle.private.load(Ordering::Acquire);
                    // SAFETY: as for on_connect; the buffer is ours and writable for the call
                    // (the header lets the plugin change it).
                    unsafe { on_message(private, handle.server(), kind, payload.as_mut_ptr(), payload.len()) };
                    stats.messages_in.fetch_add(1, Ordering::Relaxed);
                }
                let cost = payload.len() + MESSAGE_OVERHEAD;
                let before = handle.pending.fetch_sub(cost, Ordering::AcqRel);
                // The worker stopped reading this client at `high`: it reads again once the
                // plugin is back under it (a resume too many is harmless).
                if before >= outlet.high && before - cost < outlet.high {
                    outlet.post(Note::PluginResume { id: handle.id });
                }
                on_message.is_some()
            }
            Job::Flush(handle) => {
                outlet.post(Note::PluginFlushed { id: handle.id });
                false
            }
            Job::Disconnect(handle) => {
                let on_disconnect = plugin.on_disconnect.filter(|_| handle.accepted());
                if let Some(on_disconnect) = on_disconnect {
                    let private = handle.private.load(Ordering::Acquire);
                    // SAFETY: as for on_connect.
                    unsafe { on_disconnect(private, handle.server()) };
                }
                handle.gone();
                // The quarantine starts when on_disconnect has returned (now: `last_end` is
                // set right after this job).
                quarantine.push_back((Instant::now(), handle));
                on_disconnect.is_some()
            }
        };
        last_end = Instant::now();
        if called {
            stats.callbacks.fetch_add(1, Ordering::Relaxed);
            stats.callback_nanos.fetch_add(last_end.duration_since(started).as_nanos() as u64, Ordering::Relaxed);
        }
        expire(&mut quarantine, last_end);
    }
    // The worker is gone (the process is exiting): a plugin thread of the plugin's own may
    // still hold a server pointer, so the handles in quarantine are kept to the exit.
    static KEPT: std::sync::Mutex<Vec<Arc<Handle>>> = std::sync::Mutex::new(Vec::new());
    KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(quarantine.into_iter().map(|(_, h)| h));
}

/// Frees the handles whose quarantine is over.
fn expire(quarantine: &mut VecDeque<(Instant, Arc<Handle>)>, now: Instant) {
    while quarantine.front().is_some_and(|(since, _)| now >= *since + QUARANTINE) {
        quarantine.pop_front();
    }
}

/// What the worker writes into the 101 for an accepted connection.
pub type Answer = Option<Box<Accept>>;
