//! Files for `static` routes: opening a path strictly beneath a directory, and `sendfile(2)`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A name that can only ever denote an entry of the directory itself: no separators, no dot
/// segments, no percent-encoding (it is never decoded), no control characters.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Opens `rel` (a relative path) for reading, beneath the directory `dir`: `..`, absolute
/// symlinks and symlinks leading out of it fail (`EXDEV`), whatever a component resolves to;
/// symlinks that stay inside are followed. `O_NONBLOCK`, so a FIFO put there cannot stall
/// the reactor (the caller serves regular files only).
///
/// `openat2(2)` with `RESOLVE_BENEATH` (Linux 5.6); where the kernel or a seccomp filter
/// refuses it, the fallback resolves the path and checks it is under `dir_path`.
pub fn open_beneath(dir: BorrowedFd<'_>, dir_path: &Path, rel: &Path) -> io::Result<File> {
    let mut c_path = rel.as_os_str().as_bytes().to_vec();
    if c_path.contains(&0) || rel.is_absolute() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a relative path"));
    }
    c_path.push(0);
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    // SAFETY: open_how is plain data; zeroed is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a NUL-terminated path, a valid open_how of the size passed, and a descriptor
    // borrowed for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel returned a new descriptor that nobody else owns.
        return Ok(unsafe { File::from_raw_fd(fd as i32) });
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => open_checked(dir_path, rel, flags),
        _ => Err(err),
    }
}

/// The fallback: resolve every symlink, then refuse what is not under `dir_path`. (A path
/// swapped between the check and the open could still escape; openat2 has no such window.)
fn open_checked(dir_path: &Path, rel: &Path, flags: i32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let root = dir_path.canonicalize()?;
    let full = root.join(rel).canonicalize()?;
    if !full.starts_with(&root) {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    std::fs::OpenOptions::new().read(true).custom_flags(flags & !libc::O_RDONLY).open(full)
}

/// Opens a directory to serve files beneath (kept open for the route's life).
pub fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)
}

/// `sendfile(2)`: up to `count` bytes of `file` from `*offset` to the socket `out`, inside
/// the kernel; advances `*offset`. `WouldBlock` when the socket is full.
pub fn sendfile(out: BorrowedFd<'_>, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: two descriptors borrowed for the call and a valid pointer to an off_t.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_fd().as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = u64::try_from(off).unwrap_or(*offset);
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_beneath_refuses_every_way_out() {
        let base = std::env::temp_dir().join(format!("wsgate-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/in.txt"), b"in").unwrap();
        std::fs::write(base.join("secret.txt"), b"out").unwrap();
        std::os::unix::fs::symlink("sub/in.txt", root.join("inside-link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("outside-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("absolute-link")).unwrap();
        let dir = open_dir(&root).unwrap();
        let open =
            |rel: &str| open_beneath(dir.as_fd(), &root, Path::new(rel)).map(|f| std::io::read_to_string(f).unwrap());
        assert_eq!(open("sub/in.txt").unwrap(), "in");
        assert_eq!(open("inside-link").unwrap(), "in");
        for escape in ["../secret.txt", "sub/../../secret.txt", "outside-link", "absolute-link", "/etc/passwd"] {
            assert!(open(escape).is_err(), "{escape} must not open");
        }
        assert_eq!(open("missing").unwrap_err().kind(), io::ErrorKind::NotFound);
        // The fallback applies the same rules.
        let checked = |rel: &str| open_checked(&root, Path::new(rel), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(checked("sub/in.txt").is_ok() && checked("inside-link").is_ok());
        for escape in ["../secret.txt", "outside-link", "absolute-link"] {
            assert!(checked(escape).is_err(), "fallback: {escape} must not open");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
