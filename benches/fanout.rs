//! Hot paths of fan-out: topic bookkeeping (subscribe, unsubscribe, a connection leaving),
//! walking a topic's members, and queueing a shared frame on a subscriber (copied when small,
//! referenced when large), then writing a turn's worth in one go.

use std::hint::black_box;
use std::io::{self, IoSlice, Write};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsgate::buffer::{OutQueue, Pools};
use wsgate::encode::shared_frame;
use wsgate::pubsub::Topics;
use wsgate::ws::frame::Opcode;

fn topics(c: &mut Criterion) {
    let mut g = c.benchmark_group("topics");
    g.throughput(Throughput::Elements(1));
    // A topic with 10,000 members, and connections with 10 subscriptions each.
    let names: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let mut t = Topics::new();
    for conn in 0..10_000 {
        for k in 0..10 {
            t.subscribe(conn, &names[(conn + k) % 100], 64).unwrap();
        }
    }
    g.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            t.subscribe(black_box(20_000), "t7", 64).unwrap();
            t.unsubscribe(black_box(20_000), "t7")
        })
    });
    g.bench_function("connection_with_10_leaves_and_returns", |b| {
        b.iter(|| {
            t.remove_connection(black_box(5));
            for name in &names[5..15] {
                t.subscribe(5, name, 64).unwrap();
            }
        })
    });
    let id = t.find("t7").unwrap();
    let members = t.members(id).len();
    g.throughput(Throughput::Elements(members as u64));
    g.bench_function(BenchmarkId::new("walk_members", members), |b| {
        b.iter(|| t.members(id).fold(0usize, |acc, k| acc ^ k))
    });
    g.finish();
}

/// A socket that takes everything (the kernel's share of the work is not measured here).
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("deliver");
    let mut pools = Pools::new(wsgate::buffer::DEFAULT_POOL_BYTES);
    let mut q = OutQueue::default();
    for size in [20usize, 1024] {
        let frame = shared_frame(Opcode::Text, &vec![b'x'; size]);
        // One turn: 32 publications reach one subscriber, then one write.
        g.throughput(Throughput::Elements(32));
        g.bench_with_input(BenchmarkId::new("32_per_turn", size), &size, |b, _| {
            b.iter(|| {
                for _ in 0..32 {
                    q.push_shared_frame(&mut pools, black_box(&frame));
                }
                q.write_to(&mut Sink, &mut pools).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, topics, deliver);
criterion_main!(benches);
