//! Dropping root: after the listeners are bound, become `user` (its primary group, no
//! supplementary groups), and check that it cannot be undone.

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Switches to `user`: setgroups([gid]), setgid(gid), setuid(uid), in that order.
pub fn drop_to(user: &str) -> Result<(), String> {
    let name = std::ffi::CString::new(user).map_err(|_| format!("user {user:?}: contains NUL"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the stated size; getpwnam_r writes only
    // into `pwd` and `buf`, and sets `result` to `&mut pwd` or null.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(format!("user {user:?}: no such user"));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    // SAFETY: plain system calls on integers and a one-element array.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            return Err(format!("user {user:?}: setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!("user {user:?}: setgid({gid}): {}", std::io::Error::last_os_error()));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!("user {user:?}: setuid({uid}): {}", std::io::Error::last_os_error()));
        }
        if uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() == 0) {
            return Err(format!("user {user:?}: root privileges could be regained; refusing to run"));
        }
    }
    Ok(())
}
