//! Carrying one request to the application: HTTP(S) over TCP by ureq (one idle connection a
//! thread, no redirects), or HTTP/1.1 by hand on its UNIX socket ([`super::unix_http`]).

/// Why a request got no answer to parse.
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::unix_http::{exchange, Exchange};
use super::Settings;

pub enum Answerless {
    /// An HTTP status other than 2xx.
    Status(u16),
    TooLarge,
    Failed(String),
}

pub(super) fn post_tcp(
    settings: &Settings,
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Answerless> {
    let limit = settings.max_answer_size;
    let mut request = agent.post(url).timeout(timeout).set("Content-Type", "application/json");
    for (name, value) in settings.request_headers.iter() {
        request = request.set(name, value);
    }
    let response = request.send_bytes(body).map_err(|e| match e {
        ureq::Error::Status(code, _) => Answerless::Status(code),
        other => Answerless::Failed(other.to_string()),
    })?;
    let mut answer = Vec::new();
    response
        .into_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(|e| Answerless::Failed(e.to_string()))?;
    if answer.len() > limit {
        return Err(Answerless::TooLarge);
    }
    Ok(answer)
}

/// HTTP/1.1 on the application's UNIX socket, kept open between requests. A kept connection
/// the application closed meanwhile is found when nothing comes back: then once more on a
/// new one.
pub(super) fn post_unix(
    settings: &Settings,
    path: &Path,
    conn: &mut Option<UnixStream>,
    url: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, Answerless> {
    let limit = settings.max_answer_size;
    let parsed = url::Url::parse(url).map_err(|e| Answerless::Failed(format!("{url}: {e}")))?;
    let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let host = parsed.host_str().unwrap_or("localhost");
    let mut request =
        format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n").into_bytes();
    for (name, value) in settings.request_headers.iter() {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    for _ in 0..2 {
        let reused = conn.is_some();
        let stream = match conn {
            Some(stream) => stream,
            None => conn
                .insert(UnixStream::connect(path).map_err(|e| Answerless::Failed(format!("{}: {e}", path.display())))?),
        };
        #[allow(clippy::disallowed_methods)]
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        match exchange(stream, &request, limit) {
            Ok((answer, keep)) => {
                if !keep {
                    *conn = None;
                }
                return Ok(answer);
            }
            Err(Exchange::Stale) if reused => *conn = None,
            Err(Exchange::Stale) => {
                *conn = None;
                return Err(Answerless::Failed("the connection closed without an answer".into()));
            }
            Err(Exchange::Failed(why)) => {
                *conn = None;
                return Err(why);
            }
        }
    }
    Err(Answerless::Failed("the connection closed without an answer".into()))
}
