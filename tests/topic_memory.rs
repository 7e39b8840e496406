//! Memory per subscription, counted by the allocator (not timed): at most 32 bytes each at a
//! million subscriptions, however they are spread over topics and connections.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use wsgate::pubsub::Topics;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes per subscription for `conns` connections each subscribed to `per_conn` of `topics`
/// topics (connection `c` takes topics `c, c+1, ...` modulo `topics`).
fn bytes_per_subscription(conns: usize, topics: usize, per_conn: usize) -> f64 {
    let names: Vec<String> = (0..topics).map(|t| format!("topic-{t}")).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut t = Topics::new();
    for c in 0..conns {
        for k in 0..per_conn {
            t.subscribe(c, &names[(c + k) % topics], usize::MAX).unwrap();
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    let subs = conns * per_conn;
    assert_eq!(t.len().0, subs);
    let per = (after - before) as f64 / subs as f64;
    println!("{conns} connections x {per_conn} of {topics} topics: {per:.1} bytes per subscription");
    per
}

#[test]
fn a_subscription_costs_at_most_32_bytes_at_a_million() {
    // One room with a million members; a thousand topics of ten thousand; many small topics.
    for (conns, topics, per_conn) in [(1_000_000, 1, 1), (10_000, 1_000, 100), (100_000, 10_000, 10)] {
        let per = bytes_per_subscription(conns, topics, per_conn);
        assert!(per <= 32.0, "{per:.1} bytes per subscription");
    }
}
