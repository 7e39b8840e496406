//! C plugins with apache-websocket's interface (`include/wsgate_plugin.h`): a shared library
//! exports an init function returning a structure of callbacks, and a route maps a path to
//! it.
//!
//! The one place besides `sys` and the unmasking where `unsafe` is allowed: calling into C.

#![allow(unsafe_code)]

pub mod abi;
pub mod load;
