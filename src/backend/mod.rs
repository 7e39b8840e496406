//! Backends on UNIX-domain sockets: one connection per client, in one of four framings.
//!
//! - [`framed`]: the message-preserving record protocol (records; spec in `docs/backend-protocol.md`);
//! - [`codec`]: backend bytes → client frames for every framing, pure functions on slices;
//! - [`link`]: a client's live connection to its backend, both directions, bounded;
//! - here: framings, where a request's socket is (a fixed path, or a name in a directory), and
//!   connecting.

pub mod codec;
pub mod framed;
pub mod link;

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys::files::is_plain_name;
use crate::ws::message::MessageKind;

/// How messages travel on the backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Client payloads back-to-back; each backend read becomes one message (ouistiti).
    Raw,
    /// One message per line each way (websocketd).
    Lines,
    /// Records with type, FIN and length; close codes both ways; a HELLO first.
    Framed,
    /// The client's socket is handed to the backend after the handshake (ouistiti direct mode).
    Direct,
}

impl Framing {
    pub fn parse(s: &str) -> Result<Framing, String> {
        match s {
            "raw" => Ok(Framing::Raw),
            "lines" => Ok(Framing::Lines),
            "framed" => Ok(Framing::Framed),
            "direct" => Ok(Framing::Direct),
            other => Err(format!("unknown framing {other:?} (expected raw, lines, framed or direct)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Lines => "lines",
            Framing::Framed => "framed",
            Framing::Direct => "direct",
        }
    }
}

/// Where a route's backend sockets are.
#[derive(Debug, Clone)]
pub enum SocketSource {
    /// One socket for every client of the route.
    Path(PathBuf),
    /// `dir/NAME`, NAME being the path segment after the route's path, or else the
    /// subprotocol; filtered by allow / deny globs.
    Dir { dir: PathBuf, allow: Vec<glob::Pattern>, deny: Vec<glob::Pattern> },
}

#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub source: SocketSource,
    pub framing: Framing,
    /// raw / lines: what the backend's bytes become (text is checked to be UTF-8).
    pub message_kind: MessageKind,
    /// raw binary on plain TCP: move bulk payload with splice(2) instead of through memory.
    pub splice: bool,
}

impl BackendSpec {
    /// `unix:/path/app.sock`, optionally followed by `#` and comma-separated options: a
    /// framing (`raw`, `lines`, `framed`, `direct`) and/or a message type (`text`, `binary`),
    /// e.g. `unix:/run/app.sock#framed` or `unix:/run/app.sock#raw,binary` (the CLI form).
    pub fn from_uri(uri: &str) -> Result<BackendSpec, String> {
        let rest = uri.strip_prefix("unix:").ok_or_else(|| format!("backend {uri:?}: expected unix:/path/to.sock"))?;
        let (path, options) = rest.split_once('#').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(format!("backend {uri:?}: the socket path is empty"));
        }
        let mut spec = BackendSpec {
            source: SocketSource::Path(PathBuf::from(path)),
            framing: Framing::Raw,
            message_kind: MessageKind::Text,
            splice: true,
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option {
                "text" => spec.message_kind = MessageKind::Text,
                "binary" => spec.message_kind = MessageKind::Binary,
                "nosplice" => spec.splice = false,
                framing => spec.framing = Framing::parse(framing).map_err(|e| format!("backend {uri:?}: {e}"))?,
            }
        }
        Ok(spec)
    }

    pub fn describe(&self) -> String {
        match &self.source {
            SocketSource::Path(p) => format!("unix:{} ({})", p.display(), self.framing.name()),
            SocketSource::Dir { dir, .. } => format!("socket_dir {} ({})", dir.display(), self.framing.name()),
        }
    }
}

/// Why no backend socket could be chosen for a request; each is an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No name in the path and no usable subprotocol (404).
    NoName,
    /// The name is not plain: only letters, digits, `.`, `_`, `-`, not starting with `.` (404).
    NotPlain,
    /// The name is excluded by `allow` / `deny` (403).
    Denied,
    /// No socket of that name in the directory, or it is a symlink or not a socket (404).
    Missing,
}

impl ResolveError {
    pub fn status(&self) -> u16 {
        if *self == ResolveError::Denied {
            403
        } else {
            404
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::NoName => "no backend named in the path or the subprotocol",
            ResolveError::NotPlain => "backend names are letters, digits, '.', '_' and '-' only",
            ResolveError::Denied => "backend name not allowed",
            ResolveError::Missing => "no such backend",
        }
    }
}

/// The socket a request goes to, and (when the subprotocol named it) the subprotocol to accept.
pub fn resolve(
    spec: &BackendSpec,
    route_path: &str,
    request_path: &str,
    offered: &[&str],
) -> Result<(PathBuf, Option<String>), ResolveError> {
    let (dir, allow, deny) = match &spec.source {
        SocketSource::Path(p) => return Ok((p.clone(), None)),
        SocketSource::Dir { dir, allow, deny } => (dir, allow, deny),
    };
    // Exactly one separator: `/apps//chat` is not `/apps/chat` (names are taken literally).
    let rest = request_path.strip_prefix(route_path).unwrap_or("");
    let name = rest.strip_prefix('/').unwrap_or(rest);
    if !name.is_empty() {
        return socket_in(dir, name, allow, deny).map(|p| (p, None));
    }
    // No name in the path: the first offered subprotocol that names a usable socket.
    let mut first_error = ResolveError::NoName;
    for proto in offered {
        match socket_in(dir, proto, allow, deny) {
            Ok(p) => return Ok((p, Some(proto.to_string()))),
            Err(e) if first_error == ResolveError::NoName => first_error = e,
            Err(_) => {}
        }
    }
    Err(first_error)
}

fn socket_in(dir: &Path, name: &str, allow: &[glob::Pattern], deny: &[glob::Pattern]) -> Result<PathBuf, ResolveError> {
    if !is_plain_name(name) {
        return Err(ResolveError::NotPlain);
    }
    if !allow.iter().any(|p| p.matches(name)) || deny.iter().any(|p| p.matches(name)) {
        return Err(ResolveError::Denied);
    }
    let path = dir.join(name);
    // lstat: a symlink is refused even if it points at a socket (it could point anywhere).
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => Ok(path),
        _ => Err(ResolveError::Missing),
    }
}

/// Backend connect failures reach the log at most once a second, with a count of those left
/// out: a dead backend under a flood of clients, or a process out of descriptors, must not
/// flood the log. Each failure is still in its client's access line.
#[derive(Debug, Default)]
pub struct FailureLog {
    quiet_until: Option<Instant>,
    left_out: u64,
}

impl FailureLog {
    pub fn warn(&mut self, now: Instant, message: impl FnOnce() -> String) {
        match self.admit(now) {
            Some(0) => log::warn!("{}", message()),
            Some(n) => log::warn!("{} ({n} more backend connect failures in the second before this one)", message()),
            None => {}
        }
    }

    /// Whether a failure at `now` is logged, and if so how many were left out before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.quiet_until.is_some_and(|t| now < t) {
            self.left_out += 1;
            return None;
        }
        self.quiet_until = Some(now + Duration::from_secs(1));
        Some(std::mem::take(&mut self.left_out))
    }
}

/// Connects to a backend socket without blocking: a UNIX connect either completes at once
/// or fails (refused, missing, backlog full).
pub fn connect(path: &Path) -> io::Result<mio::net::UnixStream> {
    mio::net::UnixStream::connect(path)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a synthetic clock starting from any instant
mod tests {
    use super::*;

    #[test]
    fn failure_log_speaks_once_a_second_and_counts_the_rest() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for ms in [1, 10, 999] {
            assert_eq!(log.admit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn plain_names() {
        for ok in ["chat", "a.b", "x-1_2", "A"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "%2e%2e", "a%2fb", "a b", "a\\b", "é", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn resolve_in_directory() {
        let dir = std::env::temp_dir().join(format!("wsgate-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _chat = std::os::unix::net::UnixListener::bind(dir.join("chat")).unwrap();
        let _secret = std::os::unix::net::UnixListener::bind(dir.join("secret")).unwrap();
        std::fs::write(dir.join("file"), b"not a socket").unwrap();
        std::os::unix::fs::symlink(dir.join("chat"), dir.join("link")).unwrap();
        let spec = BackendSpec {
            source: SocketSource::Dir {
                dir: dir.clone(),
                allow: vec![glob::Pattern::new("*").unwrap()],
                deny: vec![glob::Pattern::new("sec*").unwrap()],
            },
            framing: Framing::Raw,
            message_kind: MessageKind::Text,
            splice: true,
        };
        let r = |path: &str, offered: &[&str]| resolve(&spec, "/apps", path, offered);
        assert_eq!(r("/apps/chat", &[]), Ok((dir.join("chat"), None)));
        assert_eq!(r("/apps", &["nope", "chat"]), Ok((dir.join("chat"), Some("chat".into()))));
        assert_eq!(r("/apps/", &[]), Err(ResolveError::NoName));
        assert_eq!(r("/apps/secret", &[]), Err(ResolveError::Denied));
        assert_eq!(r("/apps/file", &[]), Err(ResolveError::Missing));
        assert_eq!(r("/apps/link", &[]), Err(ResolveError::Missing));
        assert_eq!(r("/apps/missing", &[]), Err(ResolveError::Missing));
        for hostile in ["/apps/..", "/apps/../etc", "/apps/%2e%2e", "/apps/a%2fb", "/apps/chat/x", "/apps/.chat"] {
            assert_eq!(r(hostile, &[]), Err(ResolveError::NotPlain), "{hostile}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uris() {
        let s = BackendSpec::from_uri("unix:/run/app.sock#framed").unwrap();
        assert_eq!(s.framing, Framing::Framed);
        assert!(matches!(s.source, SocketSource::Path(ref p) if p == Path::new("/run/app.sock")));
        assert_eq!(BackendSpec::from_uri("unix:/x").unwrap().framing, Framing::Raw);
        let s = BackendSpec::from_uri("unix:/x#lines,binary").unwrap();
        assert_eq!((s.framing, s.message_kind), (Framing::Lines, MessageKind::Binary));
        assert!(BackendSpec::from_uri("tcp:1.2.3.4:5").is_err());
        assert!(BackendSpec::from_uri("unix:/x#zip").is_err());
        assert!(BackendSpec::from_uri("unix:").is_err());
    }
}
