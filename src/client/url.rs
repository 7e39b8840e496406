//! Where a client connects: `ws://`, `wss://` and `ws+unix:` URLs.
//!
//! - `ws://host[:port][/path][?query]` (port 80) and `wss://...` (port 443); an IPv6 host in
//!   brackets (`ws://[::1]:8080/`).
//! - `ws+unix:/run/app.sock` or `ws+unix:/run/app.sock:/path?query`: a UNIX-domain socket
//!   (a backend's, or a server listening on one); the request path follows the socket path
//!   after a `:` (default `/`), and `Host` is `localhost`.

use std::fmt;
use std::path::PathBuf;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A host name or IP literal (without brackets) and port.
    Tcp {
        /// The host name or IP literal.
        host: String,
        /// The port (the scheme's default when the URL has none).
        port: u16,
    },
    /// `ws+unix:`: a UNIX-domain socket's path.
    Unix(PathBuf),
}

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub address: Address,
    /// `wss://`: TLS, with `host` as the server name.
    pub tls: bool,
    /// The request target: path and query (`/` at least).
    pub resource: String,
}

/// A URL this client cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Target {
    /// Parses `ws://HOST[:PORT]/PATH`, `wss://...` or `ws+unix:SOCKET[:/PATH]`.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let bad = |why: &str| Err(UrlError(format!("{url:?}: {why}")));
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return bad("spaces and control characters are not allowed");
        }
        let lower = url.get(..9).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("ws+unix:") {
            let rest = &url[8..];
            let (socket, resource) = match rest.find(":/") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, "/"),
            };
            if socket.is_empty() {
                return bad("no socket path after ws+unix:");
            }
            let resource = resource.split('#').next().unwrap_or("/");
            return Ok(Target { address: Address::Unix(socket.into()), tls: false, resource: resource.into() });
        }
        let (tls, rest) = if lower.starts_with("wss://") {
            (true, &url[6..])
        } else if lower.starts_with("ws://") {
            (false, &url[5..])
        } else {
            return bad("not a ws://, wss:// or ws+unix: URL");
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        if authority.contains('@') {
            return bad("user information in the URL is not supported (use a header)");
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let Some(end) = inner.find(']') else { return bad("unclosed '[' in the host") };
            let host = &inner[..end];
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return bad("not an IPv6 address in brackets");
            }
            (host, inner[end + 1..].strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return bad("no host");
        }
        let literal_v6 = authority.starts_with('[');
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b) || (literal_v6 && b == b':')) {
            return bad("the host has characters a host name cannot have");
        }
        let port = match port {
            None | Some("") => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return bad("the port is not a number from 1 to 65535"),
            },
        };
        let resource = match resource {
            "" => "/".to_string(),
            r if r.starts_with('?') => format!("/{r}"),
            r => r.to_string(),
        };
        Ok(Target { address: Address::Tcp { host: host.to_ascii_lowercase(), port }, tls, resource })
    }

    /// The `Host` header's value: the port only when not the scheme's default.
    pub fn host_header(&self) -> String {
        match &self.address {
            Address::Unix(_) => "localhost".into(),
            Address::Tcp { host, port } => {
                let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
                if *port == if self.tls { 443 } else { 80 } {
                    host
                } else {
                    format!("{host}:{port}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp { host: host.into(), port }
    }

    #[test]
    fn schemes_ports_paths_and_ipv6() {
        let t = Target::parse("ws://Example.com/chat?x=1#frag").unwrap();
        assert_eq!((t.address.clone(), t.tls, t.resource.as_str()), (tcp("example.com", 80), false, "/chat?x=1"));
        assert_eq!(t.host_header(), "example.com");
        let t = Target::parse("WSS://example.com:8443").unwrap();
        assert_eq!((t.address.clone(), t.tls, t.resource.as_str()), (tcp("example.com", 8443), true, "/"));
        assert_eq!(t.host_header(), "example.com:8443");
        let t = Target::parse("ws://[::1]:9000?q").unwrap();
        assert_eq!((t.address.clone(), t.resource.as_str()), (tcp("::1", 9000), "/?q"));
        assert_eq!(t.host_header(), "[::1]:9000");
        let t = Target::parse("ws+unix:/run/app.sock:/echo?a=b").unwrap();
        assert_eq!((t.address, t.resource.as_str()), (Address::Unix("/run/app.sock".into()), "/echo?a=b"));
        let t = Target::parse("ws+unix:/run/app.sock").unwrap();
        assert_eq!(t.resource, "/");
    }

    #[test]
    fn what_cannot_be_used_is_refused_with_a_reason() {
        for bad in [
            "http://example.com/",
            "ws://",
            "ws://:80/",
            "ws://host:0/",
            "ws://host:65536/",
            "ws://host:x/",
            "ws://[::1/",
            "ws://[nothex]/",
            "ws://user:pw@host/",
            "ws://ho st/",
            "ws://host/\r\nX: y",
            "ws://ho\"st/",
            "ws://::1/",
            "ws+unix:",
            "",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{bad}");
        }
    }
}
