//! `unix-relay` on io_uring instead of epoll: the same per-client TCP → UNIX byte relay, with
//! every recv and send of a loop turn submitted in one `io_uring_enter` and no readiness
//! syscalls at all. It answers one question for docs/performance.md: how much lower is the
//! floor for a proxy that makes one backend connection per client when the syscalls are
//! batched? A benchmark peer for loopback only: no limits, no timeouts, and a closed pair's
//! buffers are not reused.
//!
//! usage: uring-relay LISTEN_ADDR BACKEND_SOCKET

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;

use io_uring::{opcode, squeue, types, IoUring};

const BUF: usize = 64 * 1024;
const ACCEPT: u64 = u64::MAX;

/// One client and its backend; side 0 is the client, side 1 the backend.
struct Pair {
    fds: [RawFd; 2],
    bufs: [Box<[u8]>; 2],
    open: bool,
}

fn user_data(key: usize, side: usize) -> u64 {
    (key as u64) << 1 | side as u64
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) {
    // SAFETY: every buffer an entry points at lives in a `Pair` that is never dropped while
    // the ring runs (closed pairs keep their buffers).
    while unsafe { ring.submission().push(entry) }.is_err() {
        ring.submit().expect("io_uring_enter");
    }
}

fn recv(pair: &mut Pair, key: usize, side: usize) -> squeue::Entry {
    // IORING_RECVSEND_POLL_FIRST: in a request-response flow the socket is empty when the
    // recv is queued, so arm the poll at once instead of trying a recv that must fail first.
    opcode::Recv::new(types::Fd(pair.fds[side]), pair.bufs[side].as_mut_ptr(), BUF as u32)
        .ioprio(1)
        .build()
        .user_data(user_data(key, side))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(backend)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: uring-relay LISTEN_ADDR BACKEND_SOCKET");
        std::process::exit(2)
    };
    let listener = TcpListener::bind(addr)?;
    // Task work (the recv that a wake-up completes) runs only when this thread enters the
    // ring, so each turn handles a whole batch.
    let mut ring: IoUring = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(4096)?;
    let mut pairs: Vec<Pair> = Vec::new();
    let accept = opcode::Accept::new(types::Fd(listener.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept);
    eprintln!("uring-relay: {addr} -> {backend}");
    loop {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (data, result) in done {
            if data == ACCEPT {
                if result >= 0 {
                    let client = result as RawFd;
                    let nodelay: libc::c_int = 1;
                    // SAFETY: setsockopt on a socket we own, with a c_int option value.
                    unsafe {
                        libc::setsockopt(
                            client,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&nodelay as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                    let backend = UnixStream::connect(backend)?.into_raw_fd();
                    let key = pairs.len();
                    pairs.push(Pair {
                        fds: [client, backend],
                        bufs: [vec![0; BUF].into_boxed_slice(), vec![0; BUF].into_boxed_slice()],
                        open: true,
                    });
                    for side in 0..2 {
                        let entry = recv(&mut pairs[key], key, side);
                        push(&mut ring, &entry);
                    }
                }
                push(&mut ring, &accept);
                continue;
            }
            let (key, side) = ((data >> 1) as usize, (data & 1) as usize);
            let pair = &mut pairs[key];
            if !pair.open {
                continue;
            }
            if result <= 0 {
                pair.open = false;
                // SAFETY: both descriptors are ours; late completions for them are ignored.
                unsafe {
                    libc::close(pair.fds[0]);
                    libc::close(pair.fds[1]);
                }
                continue;
            }
            // Send what arrived to the other side (MSG_WAITALL: the whole of it), then, linked
            // behind it, receive again into the same buffer. Only the recv posts a completion.
            let send = opcode::Send::new(types::Fd(pair.fds[1 - side]), pair.bufs[side].as_ptr(), result as u32)
                .flags(libc::MSG_WAITALL)
                .build()
                .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
                .user_data(user_data(key, side));
            let again = recv(pair, key, side);
            push(&mut ring, &send);
            push(&mut ring, &again);
        }
    }
}
