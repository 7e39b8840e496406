//! Every Debian package the tests use is there, installing the missing ones (root or
//! passwordless sudo), or fails with the command that installs them. Run alone, it provisions
//! a machine ahead of the other tests: `cargo test --test packages`.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use common::*;

#[test]
fn every_package_the_tests_use_is_installed() {
    require_all(PACKAGES);
    for package in PACKAGES {
        assert!(package.is_present(), "{}", package.name);
    }
}
