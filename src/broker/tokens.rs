//! The registered tokens: a JSON object `{"abc1":true,"abc2":true}` read from a file or an
//! HTTP(S) URL (websockets_pro's `RegisteredTokensUrl`). Loaded once before the server
//! starts, and again on SIGHUP and every `tokens_refresh` by a helper thread, so a slow or
//! dead URL never blocks the reactor: the thread wakes the loop with the result, and a
//! failed load keeps the old list.

use std::collections::HashMap;
use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use super::config::{BrokerConfig, TokenSource};

/// Token → registered (`true`) or listed as not (`false`).
pub type TokenSet = HashMap<Box<str>, bool>;

/// Parses a token list: a JSON object of token → `true` (registered) or `false`.
pub fn parse(bytes: &[u8]) -> Result<TokenSet, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object of token: true/false ({e})"))?;
    let mut set = TokenSet::with_capacity(map.len());
    for (token, value) in map {
        let serde_json::Value::Bool(on) = value else {
            return Err(format!("token {token:?}: expected true or false, found {value}"));
        };
        super::check_token(&token).map_err(|e| format!("token {token:?}: {}", e.message()))?;
        set.insert(token.into(), on);
    }
    Ok(set)
}

/// Reads and parses the list (blocking: the helper thread, or before the loop starts).
pub fn load(source: &TokenSource, timeout: Duration, max_size: usize) -> Result<TokenSet, String> {
    parse(&fetch(source, timeout, max_size, "tokens_max_size")?)
}

/// Reads a file or GETs a URL, at most `max_size` bytes (blocking: helper threads only, or
/// before the loop starts). Also the JWKS fetcher's. `limit`: the key that sets `max_size`.
pub fn fetch(source: &TokenSource, timeout: Duration, max_size: usize, limit: &str) -> Result<Vec<u8>, String> {
    Ok(match source {
        TokenSource::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            read_bounded(file, max_size, limit)?
        }
        TokenSource::Url(url) => {
            let agent = ureq::AgentBuilder::new().timeout(timeout).redirects(3).build();
            let response = agent.get(url).call().map_err(|e| match e {
                ureq::Error::Status(code, _) => format!("HTTP status {code}"),
                other => other.to_string(),
            })?;
            read_bounded(response.into_reader(), max_size, limit)?
        }
    })
}

fn read_bounded(reader: impl Read, max_size: usize, limit: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader.take(max_size as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() > max_size {
        return Err(format!("larger than {limit} ({max_size} bytes)"));
    }
    Ok(bytes)
}

/// The helper thread and its mailboxes.
pub struct Fetcher {
    source: TokenSource,
    requests: Sender<()>,
    results: Receiver<Result<TokenSet, String>>,
    /// A load is under way: more requests wait for it.
    busy: bool,
}

impl Fetcher {
    /// Starts the helper thread; it wakes the loop through `waker` with each result.
    pub fn start(config: &BrokerConfig, waker: Arc<mio::Waker>) -> Option<Fetcher> {
        let source = config.tokens.clone()?;
        let (requests, incoming) = mpsc::channel::<()>();
        let (done, results) = mpsc::channel();
        let (timeout, max_size) = (config.tokens_timeout, config.tokens_max_size);
        let thread_source = source.clone();
        let spawned = std::thread::Builder::new().name("wsgate-tokens".into()).spawn(move || {
            // Ends when the server drops its sender.
            while incoming.recv().is_ok() {
                if done.send(load(&thread_source, timeout, max_size)).is_err() {
                    break;
                }
                let _ = waker.wake();
            }
        });
        match spawned {
            Ok(_) => Some(Fetcher { source, requests, results, busy: false }),
            Err(e) => {
                log::error!("broker.tokens: cannot start the loader thread: {e}; tokens load only at start");
                None
            }
        }
    }

    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    /// Asks for a load unless one is under way.
    pub fn request(&mut self) {
        if !self.busy && self.requests.send(()).is_ok() {
            self.busy = true;
        }
    }

    /// A finished load, if any.
    pub fn take(&mut self) -> Option<Result<TokenSet, String>> {
        match self.results.try_recv() {
            Ok(r) => {
                self.busy = false;
                Some(r)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_and_false_members_are_kept() {
        let set = parse(br#"{"abc1":true,"abc2":false,"group/item1":true}"#).unwrap();
        let mut v: Vec<(&str, bool)> = set.iter().map(|(t, &on)| (&**t, on)).collect();
        v.sort();
        assert_eq!(v, [("abc1", true), ("abc2", false), ("group/item1", true)]);
    }

    #[test]
    fn bad_lists_are_errors() {
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"{\"a\":1}").is_err());
        assert!(parse(b"{\"a,b\":true}").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{\"a\":true").is_err());
    }

    #[test]
    fn oversized_files_are_refused() {
        let path = std::env::temp_dir().join(format!("wsgate-tokens-{}.json", std::process::id()));
        std::fs::write(&path, br#"{"abc1":true}"#).unwrap();
        let source = TokenSource::File(path.clone());
        assert!(load(&source, Duration::from_secs(1), 1000).is_ok());
        assert!(load(&source, Duration::from_secs(1), 5).unwrap_err().contains("tokens_max_size"));
        std::fs::remove_file(&path).unwrap();
        assert!(load(&source, Duration::from_secs(1), 1000).is_err());
    }
}
