//! Direct mode: the client's socket itself goes to the backend with `SCM_RIGHTS`, together with
//! the HELLO record (and any bytes the gateway already read past the request head), in one
//! `sendmsg`. The gateway then forgets the client.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Sends `fd` with the first bytes of `data` over the UNIX stream `sock`, in one `sendmsg`.
/// Returns how many bytes of `data` went (at least one on success); the caller queues the
/// rest as ordinary stream bytes (the backend reads a byte stream), so nothing here waits.
pub fn send_fd(sock: &impl AsRawFd, fd: RawFd, data: &[u8]) -> io::Result<usize> {
    if data.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "SCM_RIGHTS needs at least one byte of data"));
    }
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain old data; every pointer in it refers to a live local buffer of the
    // stated length for the duration of the sendmsg call, and the control buffer was sized with
    // CMSG_SPACE for exactly one descriptor.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            &fd as *const RawFd as *const u8,
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<RawFd>(),
        );
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;

    /// Receives one descriptor and the data that came with it.
    fn recv_fd(sock: &UnixStream) -> (RawFd, Vec<u8>) {
        let mut data = vec![0u8; 4096];
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec { iov_base: data.as_mut_ptr() as *mut libc::c_void, iov_len: data.len() };
        // SAFETY: as for sendmsg: every pointer refers to a live local buffer of the stated
        // length; the control message is read only after recvmsg filled it.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            assert!(n > 0);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null());
            let mut fd: RawFd = -1;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(cmsg),
                &mut fd as *mut RawFd as *mut u8,
                std::mem::size_of::<RawFd>(),
            );
            data.truncate(n as usize);
            (fd, data)
        }
    }

    #[test]
    fn descriptor_and_data_arrive_together() {
        let (gateway, backend) = UnixStream::pair().unwrap();
        let (mut client_side, passed) = UnixStream::pair().unwrap();
        assert_eq!(send_fd(&gateway, passed.as_raw_fd(), b"hello").unwrap(), 5);
        drop(passed);
        let (fd, data) = recv_fd(&backend);
        assert_eq!(data, b"hello");
        // SAFETY: the descriptor was just received and nothing else owns it.
        let mut received = unsafe { UnixStream::from_raw_fd(fd) };
        received.write_all(b"via the passed fd").unwrap();
        let mut buf = [0u8; 17];
        client_side.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"via the passed fd");
    }
}
