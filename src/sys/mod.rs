//! System calls std does not wrap, each behind a safe function: the only module (with the
//! SIMD unmask in `ws::mask`) allowed `unsafe`, and every block in it says why it is sound.
//!
//! - [`splice`]: pipes and `splice(2)` for the raw backend → client path;
//! - [`fdpass`]: passing a socket to a backend with `SCM_RIGHTS` (direct mode);
//! - [`privileges`]: dropping root to a named user;
//! - [`rlimit`]: raising the open-file limit;
//! - [`memory`]: giving freed heap memory back to the system;
//! - [`files`]: opening files strictly beneath a directory, and `sendfile(2)` (static routes);
//! - [`poll`]: `poll(2)` on a socket and standard input (the terminal client);
//! - [`cpu`]: a process's CPU time (the load generator's figures);
//! - [`clock`]: the monotonic clock as nanoseconds (the loop's turns).

pub mod clock;
pub mod cpu;
pub mod fdpass;
pub mod files;
pub mod memory;
pub mod poll;
pub mod privileges;
pub mod rlimit;
pub mod splice;
