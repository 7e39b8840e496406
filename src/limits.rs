//! Limits and timeouts: the server's, and each route's (which start from them).

use std::time::Duration;

use crate::ws::session::Timing;

/// Limits and timeouts; every route starts from these and may override some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_frame_size: usize,
    pub max_head_size: usize,
    pub max_headers: usize,
    pub handshake_timeout: Duration,
    /// From accept to a finished TLS handshake (TLS listeners).
    pub tls_handshake_timeout: Duration,
    /// Close a connection from which no message arrived for this long (zero: never).
    pub idle_timeout: Duration,
    /// Ping a peer that has been silent this long (zero: never).
    pub ping_interval: Duration,
    /// Close a peer that did not answer a ping within this time.
    pub pong_timeout: Duration,
    /// How long to wait for the peer's close frame, and then for its FIN.
    pub close_timeout: Duration,
    /// Close a peer that accepts none of the queued output for this long.
    pub write_timeout: Duration,
    /// Stop reading from a peer while this many bytes wait to be sent to it.
    pub backpressure_high: usize,
    /// Close a peer (1008) once this many bytes wait to be sent to it.
    pub max_queued: usize,
    /// On SIGTERM / SIGINT, how long connections get to finish their close handshake.
    pub drain_timeout: Duration,
    /// Most bytes (and queue entries) waiting for one client before messages published to it
    /// meet `on_backpressure`.
    pub max_backpressure: usize,
    pub on_backpressure: OnBackpressure,
    /// The four session timeouts above in milliseconds, as every drive reads them: derived,
    /// set by [`Limits::settled`] (which whoever builds or changes limits calls last).
    pub timing: Timing,
}

impl Limits {
    /// These limits with [`Limits::timing`] worked out from the timeouts.
    pub fn settled(mut self) -> Limits {
        self.timing = Timing::new(self.idle_timeout, self.ping_interval, self.pong_timeout, self.close_timeout);
        self
    }
}

/// What happens to a message published to a client that is too slow to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackpressure {
    /// Close the client (1008, "slow consumer"); nothing more is queued for it.
    Close,
    /// Skip the message for this client; counted in its access line and per topic.
    Drop,
}

impl OnBackpressure {
    pub fn parse(s: &str) -> Result<OnBackpressure, String> {
        match s {
            "close" => Ok(OnBackpressure::Close),
            "drop" => Ok(OnBackpressure::Drop),
            other => Err(format!("on_backpressure: {other:?} (expected \"close\" or \"drop\")")),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 32 << 20,
            max_frame_size: 32 << 20,
            max_head_size: 8 << 10,
            max_headers: 32,
            handshake_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            backpressure_high: 1 << 20,
            max_queued: 64 << 20,
            drain_timeout: Duration::from_secs(10),
            max_backpressure: 1 << 20,
            on_backpressure: OnBackpressure::Close,
            timing: Timing::default(),
        }
        .settled()
    }
}
