use super::*;
use crate::broker::config::TokenSource;
use crate::route::BrokerRoute;
use crate::ws::message::MessageKind;

#[test]
fn annotated_example_parses_to_the_defaults() {
    let text = include_str!("../../conf/wsgate.toml");
    let config = Config::parse(text).unwrap();
    let default = Config::embedded_default();
    assert_eq!(config.listen, default.listen);
    assert!(text.contains("[[listener]]"), "the example documents TLS listeners");
    assert_eq!(config.limits, default.limits);
    assert_eq!(config.max_connections, default.max_connections);
    let paths: Vec<_> = config.routes.iter().map(|r| (&*r.path, r.app)).collect();
    let default_paths: Vec<_> = default.routes.iter().map(|r| (&*r.path, r.app)).collect();
    assert_eq!(paths, default_paths);
}

#[test]
fn the_broker_example_parses() {
    let c = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/broker.toml"))).unwrap();
    let Some(TokenSource::File(tokens)) = &c.broker.tokens else { panic!("a token file") };
    let set = crate::broker::tokens::load(&TokenSource::File(tokens.clone()), Duration::from_secs(1), 1 << 20).unwrap();
    assert_eq!(set.len(), 5);
    assert!(matches!(c.admin.as_ref().map(|a| &a.listen), Some(AdminListen::Tcp(_))));
    let broker = c.routes.iter().find(|r| r.app == AppKind::Broker).unwrap();
    assert_eq!(broker.broker, BrokerRoute { allow_unregistered: false, client_publish: true });
    assert!(c.routes.iter().any(|r| r.logview.is_some()));
}

#[test]
fn values_and_overrides() {
    let c = Config::parse(
        r#"
[server]
listen = ["127.0.0.1:9001", "[::1]:9001"]
[limits]
max_message_size = "1MiB"
idle_timeout = "90s"
ping_interval = 0
[[route]]
path = "/e"
app = "echo"
max_message_size = 1000
subprotocols = ["chat"]
"#,
    )
    .unwrap();
    assert_eq!(c.listen.len(), 2);
    assert!(c.listen.iter().all(|l| l.tls.is_none()));
    assert_eq!(c.limits.max_message_size, 1 << 20);
    let r = &c.routes[0];
    assert_eq!((r.limits.max_message_size, r.limits.idle_timeout), (1000, Duration::from_secs(90)));
    assert!(r.limits.ping_interval.is_zero());
}

#[test]
fn server_section_memory_and_access_log_keys() {
    let d = Config::parse("").unwrap();
    assert_eq!((d.buffer_pool, d.trim_memory), (crate::buffer::DEFAULT_POOL_BYTES, true));
    let c = Config::parse("[server]\nbuffer_pool = \"512KiB\"\ntrim_memory = false\n").unwrap();
    assert_eq!((c.buffer_pool, c.trim_memory), (512 * 1024, false));
    let e = Config::parse("[server]\nbuffer_pool = \"lots\"\n").unwrap_err().to_string();
    assert!(e.contains("lots") && e.contains("line 2"), "{e}");
    let c = Config::parse_in("[server]\naccess_log = \"access.log\"\n", Path::new("/etc/wsgate")).unwrap();
    assert_eq!(c.access_log.as_deref(), Some(Path::new("/etc/wsgate/access.log")));
}

#[test]
fn errors_name_the_key_and_line() {
    let cases = [
        ("[limits]\nmax_mesage_size = 5\n", "max_mesage_size", "line 2"),
        ("[limits]\nidle_timeout = \"5 parsecs\"\n", "parsecs", "line 2"),
        ("[server]\nlisten = [\"localhost\"]\n", "listen address", "line 2"),
        ("\n\n[[route]]\npath = \"/x\"\napp = \"nope\"\n", "route.app", "line 3"),
        ("[[route]]\npath = \"x\"\napp = \"echo\"\n", "route.path", "line 1"),
        ("[limits]\nhandshake_timeout = 0\n", "handshake_timeout", ""),
        ("[limits]\nmax_head_size = \"1MiB\"\n", "max_head_size", ""),
        ("[limits]\nidle_timeout = \"720h\"\n", "idle_timeout: at most 20 days", ""),
        ("[[route]]\npath = \"/x\"\napp = \"echo\"\nwrite_timeout = \"600h\"\n", "write_timeout: at most", ""),
        ("[server]\nmax_connections = 20000000\n", "max_connections: at most", ""),
        ("[limits]\nmax_message_size = \"1GiB\"\n", "at most 1 GiB - 1", ""),
        ("[[route]]\npath = \"/x\"\napp = \"echo\"\nbogus = 1\n", "bogus", "line"),
    ];
    for (text, key, line) in cases {
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(line), "{text:?} gave {e}");
    }
}

#[test]
fn tls_listeners_resolve_paths_against_the_config_directory() {
    let text = r#"
[[listener]]
addr = "127.0.0.1:8443"
tls = { cert = "certs/a.pem", key = "/abs/a.key", sni = [{ names = ["x.test"], cert = "x.pem", key = "x.key" }] }
"#;
    let c = Config::parse_in(text, Path::new("/etc/wsgate")).unwrap();
    assert_eq!(c.listen.len(), 1, "[[listener]] alone replaces the default listener");
    let tls = c.listen[0].tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, Path::new("/etc/wsgate/certs/a.pem"));
    assert_eq!(tls.default.key, Path::new("/abs/a.key"));
    assert_eq!(tls.sni[0].0, ["x.test"]);
    assert_eq!(tls.sni[0].1.cert, Path::new("/etc/wsgate/x.pem"));
    let e = Config::parse("[[listener]]\naddr = \"127.0.0.1:1\"\ntls = { cert = \"a\" }\n").unwrap_err();
    assert!(e.to_string().contains("key") && e.to_string().contains("line 3"), "{e}");
}

#[test]
fn backend_routes() {
    let c = Config::parse_in(
        "[[route]]\npath = \"/a\"\nbackend = \"unix:run/a.sock\"\nframing = \"framed\"\nmessage_type = \"binary\"\n",
        Path::new("/etc/wsgate"),
    )
    .unwrap();
    let spec = c.routes[0].backend.as_ref().unwrap();
    assert_eq!((spec.framing, spec.message_kind), (Framing::Framed, MessageKind::Binary));
    assert!(matches!(&spec.source, SocketSource::Path(p) if p == Path::new("/etc/wsgate/run/a.sock")));
    let cases = [
        ("[[route]]\npath = \"/a\"\n", "exactly one"),
        ("[[route]]\npath = \"/a\"\napp = \"echo\"\nbackend = \"unix:/x\"\n", "exactly one"),
        ("[[route]]\npath = \"/a\"\napp = \"echo\"\nframing = \"raw\"\n", "belong to backend"),
        ("[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nframing = \"zip\"\n", "route.framing"),
        ("[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nallow = [\"*\"]\n", "socket_dir"),
        ("[[route]]\npath = \"/a\"\nsocket_dir = \"/nonexistent-dir\"\n", "not a directory"),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\ntls = { cert = \"c\", key = \"k\" }\n\
[[route]]\npath = \"/a\"\nbackend = \"unix:/x\"\nframing = \"direct\"\n",
            "cannot work on TLS",
        ),
    ];
    for (text, want) in cases {
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?} gave {e}");
    }
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("64KiB"), Ok(65536));
    assert_eq!(parse_size("7"), Ok(7));
    assert!(parse_size("1ZiB").is_err());
    assert!(parse_size("99999999999999GiB").is_err());
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn cli_routes() {
    let r = Route::from_cli("/e=echo", Limits::default()).unwrap();
    assert_eq!((&*r.path, r.app), ("/e", AppKind::Echo));
    let r = Route::from_cli("/b=unix:/run/b.sock#lines", Limits::default()).unwrap();
    assert_eq!(r.app, AppKind::Backend);
    assert_eq!(r.backend.unwrap().framing, Framing::Lines);
    assert!(Route::from_cli("/e", Limits::default()).is_err());
    assert!(Route::from_cli("/e=chat2", Limits::default()).is_err());
}

#[test]
fn errors_in_admin_and_cluster_name_their_section() {
    let cases = [
        ("[server]\n\n[admin]\nlisten = \"unix:\"\n", "admin", 3, "admin.listen"),
        ("\n[cluster]\nredis = \"redis://127.0.0.1\"\nping_interval = 0\n", "cluster", 2, "cluster.ping_interval"),
    ];
    for (text, want_section, want_line, key) in cases {
        match Config::parse(text) {
            Err(ConfigError::Section { section, line, message }) => {
                assert_eq!((section, line), (want_section, want_line), "{text:?}");
                assert!(message.contains(key), "{text:?} gave {message}");
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
}
