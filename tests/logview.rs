//! The log viewer (`app = "logview"`) against the real binary and real files: the backlog, new
//! lines, rotation (the file renamed and replaced), truncation, a file that appears later,
//! and `require_key`.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn line(v: &str) -> (String, String) {
    let j: serde_json::Value = serde_json::from_str(v).unwrap_or_else(|e| panic!("{e}: {v}"));
    (j["file"].as_str().unwrap().to_string(), j["line"].as_str().unwrap().to_string())
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn backlog_new_lines_rotation_truncation_and_late_files() {
    let dir = Dir(std::env::temp_dir().join(format!("wsgate-logview-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let a = dir.0.join("a.log");
    let b = dir.0.join("b.log");
    append(&a, "one\ntwo\nthree\nfour\nfive\n");
    let server = Server::with_config(
        &format!(
            "[[route]]\npath = \"/logs\"\napp = \"logview\"\nfiles = [\"{}\", \"{}\"]\nbacklog = 3\n",
            a.display(),
            b.display()
        ),
        &[],
    );
    let a_name = a.display().to_string();
    let b_name = b.display().to_string();
    let mut viewer = ws_open(&server.url("/logs"));
    for want in ["three", "four", "five"] {
        assert_eq!(line(&ws_text(&mut viewer)), (a_name.clone(), want.to_string()));
    }
    append(&a, "six\nseven");
    assert_eq!(line(&ws_text(&mut viewer)), (a_name.clone(), "six".to_string()));
    // "seven" has no newline yet: it comes when the line is complete.
    append(&a, " and a half\n");
    assert_eq!(line(&ws_text(&mut viewer)), (a_name.clone(), "seven and a half".to_string()));

    // A second viewer gets the backlog too (one reader for both).
    let mut second = ws_open(&server.url("/logs"));
    for want in ["five", "six", "seven and a half"] {
        assert_eq!(line(&ws_text(&mut second)), (a_name.clone(), want.to_string()));
    }

    // Rotation: renamed, a last line written to the old file, then a new file.
    let rotated = dir.0.join("a.log.1");
    std::fs::rename(&a, &rotated).unwrap();
    append(&rotated, "last of the old\n");
    std::thread::sleep(std::time::Duration::from_millis(400));
    append(&a, "first of the new\n");
    for ws in [&mut viewer, &mut second] {
        assert_eq!(line(&ws_text(ws)), (a_name.clone(), "last of the old".to_string()));
        assert_eq!(line(&ws_text(ws)), (a_name.clone(), "first of the new".to_string()));
    }

    // Truncation: read again from the start.
    append(&a, "filler line to make the file longer\n");
    assert_eq!(line(&ws_text(&mut viewer)).1, "filler line to make the file longer");
    std::fs::write(&a, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    append(&a, "after truncation\n");
    assert_eq!(line(&ws_text(&mut viewer)), (a_name.clone(), "after truncation".to_string()));

    // A file that did not exist is waited for.
    append(&b, "b appears\n");
    assert_eq!(line(&ws_text(&mut viewer)), (b_name.clone(), "b appears".to_string()));

    // A very long line is cut (16 KiB pieces), not buffered without bound.
    append(&a, &format!("{}\n", "x".repeat(40_000)));
    let mut total = 0;
    while total < 40_000 {
        let (_, l) = line(&ws_text(&mut viewer));
        assert!(l.len() <= 16 << 10);
        total += l.len();
    }
    assert_eq!(total, 40_000);
}

#[test]
fn require_key_guards_the_viewer() {
    let key = "viewer-key-0123456789abcdef";
    let server = Server::with_config(
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.key]]\nkey = \"{key}\"\nscope = \"read\"\n\
[[route]]\npath = \"/logs\"\napp = \"logview\"\nfiles = [\"/nonexistent/wsgate-test.log\"]\nrequire_key = true\n"
        ),
        &[],
    );
    let head = http_exchange_head(server.addr, &upgrade_request("/logs", ""));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let head = http_exchange_head(server.addr, &upgrade_request("/logs?key=wrong-key-0123456789abcdef", ""));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let head = http_exchange_head(server.addr, &upgrade_request(&format!("/logs?key={key}"), ""));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let head = http_exchange_head(server.addr, &upgrade_request("/logs", &format!("Authorization: Bearer {key}\r\n")));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}
