//! `[admin]`'s settings: where the management listener listens, and its keys.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `[admin]`: where the management API, `/metrics` and the dashboard listen, and who may
/// use them.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: AdminListen,
    pub keys: Arc<[ApiKey]>,
    /// Largest request body accepted (413 above).
    pub max_body: usize,
}

/// Where the admin listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    /// A UNIX-domain socket (`unix:/run/wsgate/admin.sock`): guarded by its file permissions.
    Unix(PathBuf),
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Tcp(a) => write!(f, "{a}"),
            AdminListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One management key and what it may do.
#[derive(Clone)]
pub struct ApiKey {
    pub key: String,
    pub scope: Scope,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even in a debug dump of the configuration.
        write!(f, "ApiKey {{ scope: {:?}, key: <{} bytes> }}", self.scope, self.key.len())
    }
}

/// What a key may do; each scope includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET endpoints: clients, topics, info, metrics, the dashboard.
    Read,
    /// Publish, broadcast, send.
    Publish,
    /// Disconnect, subscribe, unsubscribe, token registration.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }
}
