//! The workers of one process, and what they send each other.
//!
//! Every worker is a thread with its own reactor (poll, slab, timers, buffer pools, topics).
//! They share no mutable state on the per-message path: a worker that must reach another
//! worker's connections posts a [`Note`] to that worker's inbox, an unbounded lock-free MPSC
//! queue (`std::sync::mpsc`), and wakes it through its `mio::Waker` only when the inbox goes
//! from empty to non-empty (one `swap` per note, one syscall per burst).
//!
//! A published message crosses as the frame already encoded (an `Arc`), so it is framed once
//! in the process whatever the number of workers and subscribers.
//!
//! What the workers do share is read with relaxed atomics off the hot path: each worker's
//! open-connection count (for `balance = "handoff"` and the admin API's paging), the
//! process's total (for `max_connections`, a per-process limit), and whether the dashboard's
//! access feed has a watcher.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

use crate::admin::render::Part;
use crate::admin::Command;
use crate::broker::tokens::TokenSet;
use crate::encode::SharedFrame;

/// Publishes and other data notes waiting in one inbox past this many, or past
/// [`INBOX_BYTES`] of messages, are dropped (and counted): a worker that cannot keep up must
/// not make the others' memory grow without bound. Control notes (drain, admin queries and
/// answers, handed-off sockets) are never dropped.
pub const INBOX_LIMIT: usize = 1 << 16;
pub const INBOX_BYTES: usize = 64 << 20;
/// Publications to topics with history (to be numbered, and numbered) wait in an inbox up to
/// this many times the limits above before they are dropped: their subscribers' exactness
/// depends on them, so they get far more room, but a worker that falls that far behind must
/// still not make memory grow without bound. Such a drop is logged as an error and counted.
pub const EXACT_SCALE: usize = 4;
/// Notes a worker takes from its inbox per loop turn; more wait for the next turn, so a flood
/// from other workers cannot starve its own sockets.
pub const INBOX_BATCH: usize = 4096;

/// What one worker asks of another.
pub enum Note {
    /// Deliver to this worker's subscribers of `topic`, except `exclude_ids`.
    Publish {
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_ids: Arc<[u64]>,
    },
    /// A publication to a topic with history, for its owner to number (dropped only past
    /// [`EXACT_SCALE`] times the inbox limits).
    Number {
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_ids: Arc<[u64]>,
    },
    /// A publication its owner numbered: deliver it as [`Note::Publish`] does (dropped only
    /// past [`EXACT_SCALE`] times the inbox limits, so a topic's subscribers on every worker
    /// get every offset).
    Numbered {
        topic: Arc<str>,
        frame: SharedFrame,
        exclude_ids: Arc<[u64]>,
    },
    /// Read `topic`'s history (this worker owns it) for connection `id` of worker `from`.
    HistoryAsk {
        from: usize,
        id: u64,
        topic: Arc<str>,
        asked: super::recovery::Asked,
        read: crate::history::Read,
    },
    /// The owner's answer to [`Note::HistoryAsk`].
    HistoryAnswer {
        id: u64,
        topic: Arc<str>,
        asked: super::recovery::Asked,
        answer: super::recovery::Answer,
    },
    /// A join or leave of `topic`'s presence, for its owner (a control note: never dropped).
    Presence {
        topic: Arc<str>,
        change: super::presence::Change,
    },
    /// Answer connection `id`'s presence request about `topic` (this worker owns it).
    PresenceAsk {
        id: u64,
        topic: Arc<str>,
        ask: crate::presence::Ask,
    },
    /// The owner's answer to [`Note::PresenceAsk`] (a control note: an answer is not dropped).
    PresenceAnswer {
        id: u64,
        body: Box<[u8]>,
    },
    /// A broker message: deliver to this worker's holders of the tokens `receivers` names.
    Route {
        receivers: Arc<[u8]>,
        frame: SharedFrame,
    },
    /// Deliver to the connection with this id (it is this worker's).
    SendTo {
        id: u64,
        frame: SharedFrame,
    },
    /// A plugin's `on_connect` answered for connection `id` (`None`: declined).
    PluginOpened {
        id: u64,
        answer: crate::plugin::host::Answer,
    },
    /// The application answered connection `id`'s question (`[proxy]`; `seq` as asked).
    Proxied {
        id: u64,
        seq: u32,
        answer: crate::auth::proxy::Answer,
    },
    /// A plugin's message to connection `id` (this worker's), framed.
    PluginSend {
        id: u64,
        frame: SharedFrame,
    },
    /// A plugin asked for connection `id` to close.
    PluginClose {
        id: u64,
        code: u16,
        reason: String,
    },
    /// A plugin has been through every message connection `id` sent before it broke the
    /// protocol: its close frame may go now.
    PluginFlushed {
        id: u64,
    },
    /// A plugin has caught up with connection `id`'s messages: read from it again.
    PluginResume {
        id: u64,
    },
    /// `balance = "handoff"`: serve this accepted socket.
    Adopt {
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    },
    /// Do your part of an admin command (or of the dashboard's figures) and answer worker
    /// `from` with gather `gather`'s [`Note::Answer`].
    Ask {
        gather: u64,
        from: usize,
        query: Query,
    },
    Answer {
        gather: u64,
        worker: usize,
        part: Part,
    },
    /// The broker's registered tokens, loaded again.
    Tokens(Arc<TokenSet>),
    /// SIGHUP: the configuration read again (if it was, and is valid), then reload the
    /// certificates and reopen the access log.
    Reload(Option<Arc<crate::config::Config>>),
    /// SIGTERM / SIGINT: drain (close every client with 1001, exit when done).
    Drain,
    /// A second stop signal: exit now.
    Exit,
}

impl Note {
    /// The message bytes a data note holds (the frames it shares), or `None` for a control
    /// note, which is never dropped.
    fn data_bytes(&self) -> Option<usize> {
        match self {
            Note::Publish { frame, .. }
            | Note::SendTo { frame, .. }
            | Note::PluginSend { frame, .. }
            | Note::Number { frame, .. }
            | Note::Numbered { frame, .. } => Some(frame.len()),
            Note::Route { frame, receivers } => Some(frame.len() + receivers.len()),
            _ => None,
        }
    }
}

/// What a worker is asked to do for a gather.
#[derive(Clone)]
pub enum Query {
    Admin(Arc<Command>),
    /// `/api/publish`: these frames to these topics' subscribers (framed once, by worker 0).
    Publish(Arc<[(Arc<str>, SharedFrame)]>),
    /// The worker's figures, for the dashboard's once-a-second update.
    Figures,
}

struct Inbox {
    tx: Sender<Note>,
    /// Set by the first note after the worker last looked; the waker fires only then.
    pending: AtomicBool,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    waker: Arc<mio::Waker>,
}

/// A cache line of its own, so one worker bumping its count does not slow the others.
#[repr(align(64))]
#[derive(Default)]
struct Load(AtomicUsize);

/// Every worker's inbox and counts.
pub struct Mesh {
    inboxes: Box<[Inbox]>,
    loads: Box<[Load]>,
    total: AtomicUsize,
    access_watched: AtomicBool,
}

/// A worker's end of its inbox.
pub struct Mailbox {
    pub index: usize,
    rx: Receiver<Note>,
    /// The last take stopped at the batch limit: more notes wait.
    pub more: bool,
    pub received: u64,
}

impl Mesh {
    /// A mesh of `wakers.len()` workers; the mailboxes go to the workers, by index.
    pub fn new(wakers: Vec<Arc<mio::Waker>>) -> (Arc<Mesh>, Vec<Mailbox>) {
        let mut inboxes = Vec::with_capacity(wakers.len());
        let mut mailboxes = Vec::with_capacity(wakers.len());
        for (index, waker) in wakers.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            inboxes.push(Inbox {
                tx,
                pending: AtomicBool::new(false),
                queued: AtomicUsize::new(0),
                queued_bytes: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                waker,
            });
            mailboxes.push(Mailbox { index, rx, more: false, received: 0 });
        }
        let loads = (0..inboxes.len()).map(|_| Load::default()).collect();
        let mesh = Mesh { inboxes: inboxes.into(), loads, total: AtomicUsize::new(0), access_watched: false.into() };
        (Arc::new(mesh), mailboxes)
    }

    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Posts `note` to worker `to`; false if it was dropped (a full inbox, a data note) or the
    /// worker is gone.
    pub fn post(&self, to: usize, note: Note) -> bool {
        let Some(inbox) = self.inboxes.get(to) else { return false };
        let bytes = note.data_bytes();
        if let Some(bytes) = bytes {
            let scale = if matches!(note, Note::Number { .. } | Note::Numbered { .. }) { EXACT_SCALE } else { 1 };
            if inbox.queued.load(Ordering::Relaxed) >= INBOX_LIMIT * scale
                || inbox.queued_bytes.load(Ordering::Relaxed).saturating_add(bytes) > INBOX_BYTES * scale
            {
                let dropped = inbox.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if scale > 1 && dropped.is_power_of_two() {
                    log::error!(
                        "worker {to} is {} notes behind: publications to topics with history dropped on their way \
to it ({dropped} notes dropped in all): its subscribers miss them",
                        inbox.queued.load(Ordering::Relaxed)
                    );
                }
                return false;
            }
            inbox.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        inbox.queued.fetch_add(1, Ordering::Relaxed);
        if inbox.tx.send(note).is_err() {
            inbox.queued.fetch_sub(1, Ordering::Relaxed);
            inbox.queued_bytes.fetch_sub(bytes.unwrap_or(0), Ordering::Relaxed);
            return false;
        }
        // SeqCst pairs with the receiver's store before it drains: either it sees this note,
        // or this swap sees `false` and wakes it.
        if !inbox.pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = inbox.waker.wake() {
                log::error!("cannot wake worker {to}: {e}");
            }
        }
        true
    }

    /// Posts a note made by `make` to every worker but `from`.
    pub fn post_others(&self, from: usize, mut make: impl FnMut() -> Note) {
        for to in (0..self.inboxes.len()).filter(|&w| w != from) {
            self.post(to, make());
        }
    }

    /// Takes up to [`INBOX_BATCH`] notes from worker `mailbox.index`'s inbox.
    pub fn take(&self, mailbox: &mut Mailbox, mut each: impl FnMut(Note)) {
        let inbox = &self.inboxes[mailbox.index];
        if !mailbox.more {
            inbox.pending.store(false, Ordering::SeqCst);
        }
        mailbox.more = false;
        for _ in 0..INBOX_BATCH {
            match mailbox.rx.try_recv() {
                Ok(note) => {
                    inbox.queued.fetch_sub(1, Ordering::Relaxed);
                    if let Some(bytes) = note.data_bytes() {
                        inbox.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    }
                    mailbox.received += 1;
                    each(note);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
        mailbox.more = true;
    }

    /// Data notes dropped at worker `index`'s full inbox.
    pub fn dropped(&self, index: usize) -> u64 {
        self.inboxes.get(index).map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    pub fn set_load(&self, worker: usize, open: usize) {
        if let Some(l) = self.loads.get(worker) {
            l.0.store(open, Ordering::Relaxed);
        }
    }

    pub fn load(&self, worker: usize) -> usize {
        self.loads.get(worker).map_or(0, |l| l.0.load(Ordering::Relaxed))
    }

    /// The worker with the fewest open connections (the lowest index among equals), counted
    /// as one more at once so a burst of accepts in one turn spreads.
    pub fn least_loaded(&self) -> usize {
        let w = (0..self.loads.len()).min_by_key(|&w| self.load(w)).unwrap_or(0);
        self.loads[w].0.fetch_add(1, Ordering::Relaxed);
        w
    }

    /// Counts one more open connection in the process, unless that would pass `max`.
    pub fn admit_one(&self, max: usize) -> bool {
        self.total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    pub fn release_one(&self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn set_access_watched(&self, watched: bool) {
        self.access_watched.store(watched, Ordering::Relaxed);
    }

    pub fn access_watched(&self) -> bool {
        self.access_watched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(n: usize) -> (Arc<Mesh>, Vec<Mailbox>, Vec<mio::Poll>) {
        let polls: Vec<mio::Poll> = (0..n).map(|_| mio::Poll::new().unwrap()).collect();
        let wakers = polls.iter().map(|p| Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).unwrap())).collect();
        let (mesh, boxes) = Mesh::new(wakers);
        (mesh, boxes, polls)
    }

    fn wakes(poll: &mut mio::Poll) -> usize {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(std::time::Duration::ZERO)).unwrap();
        events.iter().count()
    }

    #[test]
    fn wakes_once_per_burst_and_again_after_a_take() {
        let (mesh, mut boxes, mut polls) = mesh(2);
        for _ in 0..3 {
            assert!(mesh.post(1, Note::Drain));
        }
        assert_eq!(wakes(&mut polls[1]), 1);
        let mut n = 0;
        mesh.take(&mut boxes[1], |_| n += 1);
        assert_eq!(n, 3);
        assert_eq!(wakes(&mut polls[1]), 0);
        mesh.post(1, Note::Exit);
        assert_eq!(wakes(&mut polls[1]), 1);
        assert_eq!(wakes(&mut polls[0]), 0);
    }

    #[test]
    fn a_full_inbox_drops_data_but_not_control() {
        let (mesh, mut boxes, _polls) = mesh(2);
        let frame: SharedFrame = Arc::from(&b"\x81\x00"[..]);
        let publish = || Note::SendTo { id: 1, frame: frame.clone() };
        for _ in 0..INBOX_LIMIT {
            assert!(mesh.post(1, publish()));
        }
        assert!(!mesh.post(1, publish()));
        assert!(mesh.post(1, Note::Drain));
        assert_eq!(mesh.dropped(1), 1);
        let mut n = 0;
        while {
            mesh.take(&mut boxes[1], |_| n += 1);
            boxes[1].more
        } {}
        assert_eq!(n, INBOX_LIMIT + 1);
        assert!(mesh.post(1, publish()));
    }

    #[test]
    fn large_messages_are_bounded_by_bytes() {
        let (mesh, mut boxes, _polls) = mesh(2);
        let big: SharedFrame = Arc::from(vec![0u8; 16 << 20]);
        let publish = || Note::Publish { topic: Arc::from("t"), frame: big.clone(), exclude_ids: Arc::from(&[][..]) };
        for _ in 0..INBOX_BYTES / big.len() {
            assert!(mesh.post(1, publish()));
        }
        assert!(!mesh.post(1, publish()));
        mesh.take(&mut boxes[1], |_| {});
        assert!(mesh.post(1, publish()));
    }

    #[test]
    fn least_loaded_spreads_a_burst_and_total_is_capped() {
        let (mesh, _boxes, _polls) = mesh(3);
        mesh.set_load(0, 5);
        let picks: Vec<usize> = (0..4).map(|_| mesh.least_loaded()).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        assert!(mesh.admit_one(2) && mesh.admit_one(2));
        assert!(!mesh.admit_one(2));
        mesh.release_one();
        assert!(mesh.admit_one(2));
    }
}
