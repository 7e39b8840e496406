//! Dropping root: after the listeners are bound, become `user` (its primary group, no
//! supplementary groups), and check that it cannot be undone.

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why dropping privileges failed; the server refuses to start.
#[derive(Debug)]
pub enum PrivilegeError {
    /// The name holds a NUL byte.
    BadName(String),
    NoSuchUser(String),
    /// A system call failed (which one, and the OS error).
    Call {
        user: String,
        call: &'static str,
        error: std::io::Error,
    },
    /// setuid(0) worked again after dropping: the drop did not hold.
    Regainable(String),
}

impl std::fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivilegeError::BadName(u) => write!(f, "user {u:?}: contains NUL"),
            PrivilegeError::NoSuchUser(u) => write!(f, "user {u:?}: no such user"),
            PrivilegeError::Call { user, call, error } => write!(f, "user {user:?}: {call}: {error}"),
            PrivilegeError::Regainable(u) => {
                write!(f, "user {u:?}: root privileges could be regained; refusing to run")
            }
        }
    }
}

impl std::error::Error for PrivilegeError {}

/// Switches to `user`: `setgroups([gid])`, `setgid(gid)`, `setuid(uid)`, in that order.
pub fn drop_to(user: &str) -> Result<(), PrivilegeError> {
    let name = std::ffi::CString::new(user).map_err(|_| PrivilegeError::BadName(user.into()))?;
    // SAFETY: passwd is plain old data (integers and pointers); all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the stated size; getpwnam_r writes only
    // into `pwd` and `buf`, and sets `result` to `&mut pwd` or null.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.into()));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let failed = |call| PrivilegeError::Call { user: user.into(), call, error: std::io::Error::last_os_error() };
    // SAFETY: plain system calls on integers and a one-element array that outlives the call.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            return Err(failed("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(failed("setuid"));
        }
        if uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() == 0) {
            return Err(PrivilegeError::Regainable(user.into()));
        }
    }
    Ok(())
}
