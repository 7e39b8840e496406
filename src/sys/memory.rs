//! Giving freed heap memory back to the system.

/// Asks the allocator to return free memory at the top of the heap and free pages inside it
/// (glibc `malloc_trim`). Without it, glibc keeps what thousands of departed connections
/// freed, and RSS stays at its peak. Returns whether anything was released; a no-op where
/// the C library is not glibc.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer and only walks the allocator's own free
        // lists; it is safe to call at any time from the thread that owns no allocator lock.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The size of a memory page, in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(1)
}
