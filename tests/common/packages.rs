//! The real components the tests use, from Debian's packages: present → used; missing and we
//! are root (or have passwordless sudo) → installed with `apt-get`; missing and no way to
//! install → the test fails with the exact command that fixes it. No test skips.
//!
//! `PACKAGES` is the one list: the tests ask for entries of it, `tests/packages.rs` installs
//! them all (what `.ci/run` and a packager run to provision a machine ahead of time).
//!
//! Installs are serialised across test binaries (cargo runs tests on threads, nextest runs
//! binaries in parallel) with `flock(2)` on a lock file, and wait for the dpkg lock of an
//! unrelated `apt-get` instead of failing.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A Debian package and how to tell that what the tests use of it is there.
pub struct Package {
    pub name: &'static str,
    present: Presence,
}

enum Presence {
    /// One of these executables exists.
    Executable(&'static [&'static str]),
    /// Debian's `/usr/bin/python3` imports this module.
    PythonModule(&'static str),
}

/// Debian's Python: where the `python3-*` packages install their modules.
pub const PYTHON: &str = "/usr/bin/python3";

pub const PYTHON3: Package = Package { name: "python3", present: Presence::Executable(&[PYTHON]) };
pub const PYTHON3_WEBSOCKETS: Package =
    Package { name: "python3-websockets", present: Presence::PythonModule("websockets") };
pub const PYTHON3_PROMETHEUS_CLIENT: Package =
    Package { name: "python3-prometheus-client", present: Presence::PythonModule("prometheus_client") };
/// PyJWT: tokens made by an independent implementation (with `cryptography` for RS/PS/ES/EdDSA).
pub const PYTHON3_JWT: Package = Package { name: "python3-jwt", present: Presence::PythonModule("jwt") };
pub const PYTHON3_CRYPTOGRAPHY: Package =
    Package { name: "python3-cryptography", present: Presence::PythonModule("cryptography") };
pub const REDIS_SERVER: Package =
    Package { name: "redis-server", present: Presence::Executable(&["/usr/bin/redis-server"]) };
pub const CHROMIUM: Package = Package { name: "chromium", present: Presence::Executable(&["/usr/bin/chromium"]) };

/// The C compiler the plugin tests build their plugins with.
pub const GCC: Package = Package { name: "gcc", present: Presence::Executable(&["/usr/bin/gcc"]) };

/// Every package any test uses.
pub const PACKAGES: &[&Package] = &[
    &PYTHON3,
    &PYTHON3_WEBSOCKETS,
    &PYTHON3_PROMETHEUS_CLIENT,
    &PYTHON3_JWT,
    &PYTHON3_CRYPTOGRAPHY,
    &REDIS_SERVER,
    &CHROMIUM,
    &GCC,
];

/// How long an install waits for another `apt-get`/`dpkg` holding the dpkg lock (seconds).
const DPKG_LOCK_TIMEOUT: u32 = 600;

impl Package {
    pub fn is_present(&self) -> bool {
        match self.present {
            Presence::Executable(paths) => paths.iter().any(|p| std::path::Path::new(p).exists()),
            Presence::PythonModule(module) => Command::new(PYTHON)
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// The first executable that exists (for `Executable` packages).
    pub fn executable(&self) -> &'static str {
        require(self);
        match self.present {
            Presence::Executable(paths) => paths.iter().find(|p| std::path::Path::new(p).exists()).unwrap(),
            Presence::PythonModule(_) => PYTHON,
        }
    }
}

/// Makes sure `package` is installed, installing it when it is missing and we may. Panics
/// with the command that fixes it otherwise.
pub fn require(package: &Package) {
    require_all(&[package]);
}

/// `require` for several packages, installed with one `apt-get` call.
pub fn require_all(packages: &[&Package]) {
    let missing =
        |ps: &[&Package]| -> Vec<&'static str> { ps.iter().filter(|p| !p.is_present()).map(|p| p.name).collect() };
    if missing(packages).is_empty() {
        return;
    }
    // Threads of this binary queue here; other processes queue on the lock file.
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let _file_lock = InstallLock::acquire();
    // Someone else may have installed them while we waited.
    let names = missing(packages);
    if names.is_empty() {
        return;
    }
    let fix = format!("sudo apt-get install -y {}", names.join(" "));
    let Some(sudo) = privilege() else {
        panic!("the tests need {}, which is not installed; install it with: {fix}", names.join(", "));
    };
    eprintln!("installing {} with apt-get (first run on this machine)", names.join(" "));
    if names.iter().any(|n| !apt_knows(n)) {
        apt(sudo, &["update", "-q"]);
    }
    let mut args = vec!["install", "-y", "-q"];
    args.extend(&names);
    if !apt(sudo, &args) {
        // The lists may be stale (a package version gone from the mirror): refresh once.
        apt(sudo, &["update", "-q"]);
        assert!(apt(sudo, &args), "apt-get install {} failed; try: {fix}", names.join(" "));
    }
    let still = missing(packages);
    assert!(
        still.is_empty(),
        "apt-get installed {} but {} is still missing; try: {fix}",
        names.join(" "),
        still.join(", ")
    );
}

/// `Some("")` as root, `Some("sudo")` with passwordless sudo, `None` when we cannot install.
fn privilege() -> Option<&'static str> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some("");
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    sudo_ok.then_some("sudo")
}

/// Whether apt has a candidate version for `name` (false before the first `apt-get update`
/// on a fresh machine, whose package lists are empty).
fn apt_knows(name: &str) -> bool {
    Command::new("apt-cache").args(["policy", name]).stderr(Stdio::null()).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)"))
    })
}

/// Runs `apt-get ARGS` (under sudo when `sudo` says so), waiting for the dpkg lock. The lists
/// lock of `apt-get update` is not covered by `DPkg::Lock::Timeout`, so a failed run is retried
/// for as long.
fn apt(sudo: &str, args: &[&str]) -> bool {
    let timeout = format!("DPkg::Lock::Timeout={DPKG_LOCK_TIMEOUT}");
    let start = std::time::Instant::now();
    loop {
        let mut cmd = if sudo.is_empty() { Command::new("apt-get") } else { Command::new(sudo) };
        if !sudo.is_empty() {
            cmd.args(["-n", "apt-get"]);
        }
        let out = cmd
            .args(["-o", &timeout])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("apt-get");
        if out.status.success() {
            return true;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let locked = stderr.contains("Could not get lock") || stderr.contains("Unable to lock");
        if !locked || start.elapsed().as_secs() > u64::from(DPKG_LOCK_TIMEOUT) {
            eprintln!("apt-get {}: {}", args.join(" "), stderr.trim());
            return false;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// An exclusive `flock(2)` on a file every test binary shares, released on drop (and by the
/// kernel if the process dies).
struct InstallLock(std::fs::File);

impl InstallLock {
    fn acquire() -> InstallLock {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join("wsgate-tests-apt.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loop {
            // SAFETY: flock(2) on a descriptor we own for the duration of the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return InstallLock(file);
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "flock {}: {err}", path.display());
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in acquire; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
