//! `splice(2)` for the raw backend → client path: payload moves backend socket → pipe →
//! client socket inside the kernel; only the frame header is written from user space.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Reads below this size go through user space: for small payloads the extra syscalls of
/// splicing (FIONREAD, splice in, splice out) cost more than the copy they save.
pub const SPLICE_MIN: usize = 16 * 1024;

/// The pipe size asked for (the default, 64 KiB, caps each spliced frame at that).
const PIPE_SIZE: usize = 1 << 20;

/// A non-blocking pipe, one per splicing connection, created on first use.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the client.
    pub held: usize,
    pub capacity: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe means fewer, larger splices (and frames). Best effort: the kernel caps
        // it at /proc/sys/fs/pipe-max-size for unprivileged processes.
        // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ only set and read the pipe's size.
        let size = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = usize::try_from(size).unwrap_or(64 * 1024).max(4096);
        Ok(Pipe { read, write, held: 0, capacity })
    }

    /// Moves up to `len` bytes from `src` into the pipe.
    pub fn fill_from(&mut self, src: &impl AsRawFd, len: usize) -> io::Result<usize> {
        let n = splice(src.as_raw_fd(), self.write.as_raw_fd(), len.min(self.capacity - self.held))?;
        self.held += n;
        Ok(n)
    }

    /// Moves up to `len` bytes from the pipe to `dst`.
    pub fn drain_to(&mut self, dst: &impl AsRawFd, len: usize) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), dst.as_raw_fd(), len.min(self.held))?;
        self.held -= n;
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: plain descriptors, null offsets (both ends are sockets or pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Bytes waiting in a socket's receive queue (FIONREAD).
pub fn readable_bytes(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn bytes_pass_through_the_pipe() {
        let (mut backend, gateway_side) = UnixStream::pair().unwrap();
        let (client_side, mut client) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        backend.write_all(&data).unwrap();
        assert_eq!(readable_bytes(&gateway_side).unwrap(), data.len());
        let mut pipe = Pipe::new().unwrap();
        let mut moved = 0;
        let mut got = vec![0u8; data.len()];
        while moved < data.len() {
            pipe.fill_from(&gateway_side, data.len() - moved).unwrap();
            let n = pipe.held;
            assert_eq!(pipe.drain_to(&client_side, n).unwrap(), n);
            client.read_exact(&mut got[moved..moved + n]).unwrap();
            moved += n;
        }
        assert_eq!(got, data);
        assert_eq!(pipe.held, 0);
    }
}
