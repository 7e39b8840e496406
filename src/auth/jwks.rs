//! Keys from a JWKS (RFC 7517) URL or file, fetched by a helper thread so a slow or dead
//! identity provider never blocks a reactor: the thread replaces the verifier's fetched keys
//! when a fetch succeeds and keeps the old ones when it fails.
//!
//! It fetches at once, then every `jwks_refresh`, retrying a failure sooner (every
//! `RETRY`), and when a token names a `kid` no key has (a rotation the provider has
//! published), at most once per [`super::jwt::MIN_NUDGED_FETCH`]. The thread holds the
//! verifier weakly and ends when a reload has dropped it.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::jwt::{parse_jwks, Verifier, MIN_NUDGED_FETCH};
use crate::broker::config::TokenSource;

/// A failed fetch is tried again this soon (unless the refresh interval is shorter).
const RETRY: Duration = Duration::from_secs(10);

/// Where the keys come from and how.
#[derive(Debug, Clone)]
pub struct Source {
    pub source: TokenSource,
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_size: usize,
}

/// Fetches once (blocking), for the start and the tests.
pub fn fetch(source: &Source) -> Result<Vec<super::jwt::Key>, String> {
    let bytes = crate::broker::tokens::fetch(&source.source, source.timeout, source.max_size, "jwks_max_size")?;
    parse_jwks(&bytes)
}

/// Starts the thread that keeps `verifier`'s fetched keys current.
/// `fetched`: the first fetch is done (the thread starts by waiting).
pub fn start(verifier: &Arc<Verifier>, source: Source, nudges: Receiver<()>, fetched: bool) {
    let weak = Arc::downgrade(verifier);
    let spawned =
        std::thread::Builder::new().name("wsgate-jwks".into()).spawn(move || run(&weak, &source, &nudges, fetched));
    if let Err(e) = spawned {
        log::error!("jwt.jwks: cannot start the fetcher thread: {e}; tokens signed by its keys are refused");
    }
}

#[allow(clippy::disallowed_methods)] // a helper thread's own pacing, not a reactor's clock
fn run(weak: &Weak<Verifier>, source: &Source, nudges: &Receiver<()>, mut skip: bool) {
    let mut failing = false;
    loop {
        let fetched = if std::mem::take(&mut skip) { Ok(None) } else { fetch(source).map(Some) };
        let at = Instant::now();
        let Some(verifier) = weak.upgrade() else { return };
        match fetched {
            Ok(None) => {}
            Ok(Some(keys)) => {
                if failing {
                    log::info!("jwt.jwks {}: fetched again ({} keys)", source.source, keys.len());
                } else {
                    log::debug!("jwt.jwks {}: {} keys", source.source, keys.len());
                }
                failing = false;
                if let Ok(mut slot) = verifier.fetched.write() {
                    *slot = Arc::new(keys);
                }
            }
            Err(e) => {
                log::error!("jwt.jwks {}: {e}; the keys fetched before stay", source.source);
                failing = true;
            }
        }
        drop(verifier);
        let wait = if failing { source.refresh.min(RETRY) } else { source.refresh };
        // Wait for the interval, or a nudge; a nudge sooner than MIN_NUDGED_FETCH after the
        // last fetch waits for that floor (a client naming random kids cannot make us hammer
        // the provider).
        match nudges.recv_timeout(wait) {
            Ok(()) => {
                // Never later than the fetch that was due anyway.
                let floor = at + MIN_NUDGED_FETCH.min(wait);
                let now = Instant::now();
                if now < floor {
                    std::thread::sleep(floor - now);
                }
                while nudges.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if weak.strong_count() == 0 {
            return;
        }
    }
}
