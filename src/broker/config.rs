//! `[broker]`'s settings: where the registered tokens come from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `[broker]`: where the registered tokens come from.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub tokens: Option<TokenSource>,
    /// Fetch the tokens again this often (`None`: at start and on SIGHUP only).
    pub tokens_refresh: Option<Duration>,
    /// A fetch that takes longer fails (the old list stays).
    pub tokens_timeout: Duration,
    /// A token list larger than this is refused (the old list stays).
    pub tokens_max_size: usize,
    /// websockets_pro's undocumented behaviour: receivers matched by substring, payloads
    /// delivered JSON-quoted.
    pub websockets_pro_quirks: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            tokens: None,
            tokens_refresh: None,
            tokens_timeout: Duration::from_secs(5),
            tokens_max_size: 1 << 20,
            websockets_pro_quirks: false,
        }
    }
}

/// Where registered tokens are read from: a JSON object `{"token": true, ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    /// `http://` or `https://`.
    Url(String),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "file:{}", p.display()),
            TokenSource::Url(u) => f.write_str(u),
        }
    }
}
