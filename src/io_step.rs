//! What one non-blocking I/O call did, read the same way everywhere.
//!
//! A read, a write, a splice, a `sendfile` or an `accept` on a non-blocking descriptor ends in
//! one of five ways, and every caller must tell them apart: bytes moved; the stream ended
//! (`Ok(0)`: the peer's FIN on a read, a peer that takes nothing more on a write); the
//! descriptor would block (wait for the next readiness event); a signal interrupted the call
//! before it moved anything (try again); or a failure. [`IoStep::of`] is the one place that
//! reads an `io::Result` that way, so no caller matches `WouldBlock` or `Interrupted` itself.

use std::io;

/// One I/O call's outcome (see the module's documentation).
#[derive(Debug)]
pub enum IoStep<T> {
    /// Something moved (for byte counts: at least one byte).
    Done(T),
    /// `Ok(0)` from a read or write: the end of the stream.
    End,
    /// `WouldBlock`: nothing to do until the next readiness event.
    WouldBlock,
    /// `Interrupted`: nothing moved; the same call may be made again at once.
    Retry,
    Failed(io::Error),
}

/// What an I/O call returns on success, and whether that success is the end of the stream.
pub trait Moved {
    /// An `Ok` that is the end of the stream (zero bytes).
    fn is_end(&self) -> bool {
        false
    }
}

impl Moved for usize {
    fn is_end(&self) -> bool {
        *self == 0
    }
}

impl Moved for () {}

impl<S, A> Moved for (S, A) {}

impl<T: Moved> IoStep<T> {
    /// Reads `result` (see the module's documentation).
    pub fn of(result: io::Result<T>) -> IoStep<T> {
        match result {
            Ok(moved) if moved.is_end() => IoStep::End,
            Ok(moved) => IoStep::Done(moved),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => IoStep::WouldBlock,
                io::ErrorKind::Interrupted => IoStep::Retry,
                _ => IoStep::Failed(e),
            },
        }
    }
}

/// Whether `e` says "not now, wait for readiness" (for results that are not this module's
/// to read, such as a TLS library's).
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_outcome() {
        assert!(matches!(IoStep::of(Ok(5usize)), IoStep::Done(5)));
        assert!(matches!(IoStep::of(Ok(0usize)), IoStep::End));
        assert!(matches!(IoStep::of(Ok(())), IoStep::Done(())));
        assert!(matches!(IoStep::<usize>::of(Err(io::ErrorKind::WouldBlock.into())), IoStep::WouldBlock));
        assert!(matches!(IoStep::<usize>::of(Err(io::ErrorKind::Interrupted.into())), IoStep::Retry));
        let failed = IoStep::<usize>::of(Err(io::ErrorKind::ConnectionReset.into()));
        assert!(matches!(failed, IoStep::Failed(e) if e.kind() == io::ErrorKind::ConnectionReset));
    }
}
