//! The command line: --version, --check-config, config errors, -l and --route.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::process::Command;

use common::*;

fn wsgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wsgate")).args(args).output().unwrap()
}

#[test]
fn version_and_help() {
    let out = wsgate(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = wsgate(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--route"));
}

#[test]
fn check_config_accepts_the_annotated_example() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/wsgate.toml");
    let out = wsgate(&["-c", conf, "--check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/echo (echo)"));
}

#[test]
fn config_errors_name_key_and_line_and_exit_2() {
    let path = std::env::temp_dir().join(format!("wsgate-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[limits]\nmax_message_size = \"12 parsecs\"\n").unwrap();
    let out = wsgate(&["-c", path.to_str().unwrap(), "--check-config"]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("max_message_size"), "{err}");
    let out = wsgate(&["-c", "/nonexistent/wsgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/wsgate.toml"));
    let out = wsgate(&["--route", "/x=nonsense", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let out = wsgate(&["-l", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_routes_and_ipv6() {
    let server = Server::start(&["-l", "[::1]:0", "--route", "/other=echo"]);
    let mut ws = ws_open(&server.url("/other"));
    ws.send_text("via --route").unwrap();
    assert_eq!(ws_text(&mut ws), "via --route");
    let line = server.wait_log("listening on");
    assert!(line.contains("[::1]:"), "{line}");
}
