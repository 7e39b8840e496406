//! C plugins: built here with the system's C compiler against `include/wsgate_plugin.h`, then
//! loaded the way a route loads them.
#![allow(clippy::disallowed_methods)] // tests/common times real servers; the rule is for the server's code

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use wsgate::plugin::load::{load, LoadError};

/// Compiles C `source` into a shared library named `name` in `dir`.
fn build(dir: &Path, name: &str, source: &str) -> PathBuf {
    require(&GCC);
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let lib = dir.join(format!("{name}.so"));
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = Command::new("/usr/bin/gcc")
        .args(["-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-plugin-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plugin whose init returns `body` (C statements ending in a return).
fn plugin_returning(body: &str) -> String {
    format!(
        "#include \"wsgate_plugin.h\"\n\
         static size_t CALLBACK on_message(void *p, const WebSocketServer *s, const int t, unsigned char *b, const size_t n) \
         {{ (void)p; (void)s; (void)t; (void)b; return n; }}\n\
         static WebSocketPlugin plugin = {{ sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, NULL, on_message, NULL }};\n\
         extern EXPORT WebSocketPlugin *CALLBACK init(void) {{ (void)plugin; {body} }}\n"
    )
}

#[test]
fn the_echo_example_loads_once_and_bad_plugins_say_what_is_wrong() {
    let dir = scratch("load");
    let echo_source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins/echo.c")).unwrap();
    let echo = build(&dir, "echo", &echo_source);
    let first = load(&echo, "echo_init").unwrap();
    assert!(first.plugin().on_message.is_some());
    assert!(first.plugin().on_connect.is_none());
    let again = load(&echo, "echo_init").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "loaded once per process");

    assert!(matches!(load(&dir.join("missing.so"), "init"), Err(LoadError::Open(_))));
    assert_eq!(load(&echo, "no_such_init").unwrap_err(), LoadError::NoInit("no_such_init".into()));
    let cases = [
        ("null", "return NULL;", LoadError::Null),
        ("version", "plugin.version = 1; return &plugin;", LoadError::Version(1)),
        ("small", "plugin.size = 8; return &plugin;", LoadError::TooSmall(8)),
        ("no_message", "plugin.on_message = NULL; return &plugin;", LoadError::NoOnMessage),
    ];
    for (name, body, want) in cases {
        let lib = build(&dir, name, &plugin_returning(body));
        let got = load(&lib, "init").unwrap_err();
        assert_eq!(got, want, "{name}");
        assert!(!got.to_string().is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
