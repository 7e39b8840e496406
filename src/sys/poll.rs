//! `poll(2)` on a few descriptors, for the blocking tools (the terminal client) that wait on a
//! socket and standard input at once. The reactor uses mio.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until one of `fds` is readable (or hung up, or in error), or `timeout` passes
/// (`None`: no limit; rounded up to the millisecond). Returns which are ready.
pub fn readable<const N: usize>(fds: [RawFd; N], timeout: Option<Duration>) -> io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let timeout = timeout.map_or(-1, |t| i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX));
    // SAFETY: `polled` is an array of N initialised pollfd structures, alive for the call.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, timeout) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok([false; N]) } else { Err(e) };
    }
    Ok(polled.map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_the_readable_one_and_times_out() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        let fds = [b.as_raw_fd(), d.as_raw_fd()];
        assert_eq!(readable(fds, Some(Duration::from_millis(1))).unwrap(), [false, false]);
        a.write_all(b"x").unwrap();
        assert_eq!(readable(fds, None).unwrap(), [true, false]);
    }
}
