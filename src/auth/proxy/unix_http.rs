//! HTTP/1.1 on the application's UNIX socket, by hand (ureq speaks only TCP): one request,
//! and an answer read to its `Content-Length` or the connection's end, within a size limit.
//! Chunked answers are refused with a message saying so.

use std::io::Read;

use super::post::Answerless;

/// Why [`exchange`] has no answer.
pub enum Exchange {
    /// Closed before a byte of the answer (a kept connection the application let go).
    Stale,
    Failed(Answerless),
}

/// One request and its answer on `stream` (the application's UNIX socket; public for the
/// fuzz target): the body, at most `limit` bytes, and whether the connection may be kept.
pub fn exchange<S: Read + std::io::Write>(
    stream: &mut S,
    request: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), Exchange> {
    let failed = |e: std::io::Error| Exchange::Failed(Answerless::Failed(e.to_string()));
    match stream.write_all(request) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {
            return Err(Exchange::Stale)
        }
        Err(e) => return Err(failed(e)),
    }
    let head_limit = 8 << 10;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (status, head_len, length, keep) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(Exchange::Stale),
            Ok(0) => return Err(Exchange::Failed(Answerless::Failed("the answer was cut short".into()))),
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Exchange::Stale),
            Err(e) => return Err(failed(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let header =
                    |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                if header("transfer-encoding").is_some() {
                    let why = "a chunked answer: send Content-Length".to_string();
                    return Err(Exchange::Failed(Answerless::Failed(why)));
                }
                let length = header("content-length")
                    .map(|v| std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok()))
                    .map(|l| l.ok_or_else(|| Exchange::Failed(Answerless::Failed("a bad Content-Length".into()))))
                    .transpose()?;
                let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
                    || response.version == Some(0);
                break (response.code.unwrap_or(0), head_len, length, !close && length.is_some());
            }
            Ok(httparse::Status::Partial) if buf.len() < head_limit => {}
            Ok(httparse::Status::Partial) => {
                return Err(Exchange::Failed(Answerless::Failed("an answer head over 8 KiB".into())))
            }
            Err(e) => return Err(Exchange::Failed(Answerless::Failed(format!("not an HTTP answer ({e})")))),
        }
    };
    if !(200..300).contains(&status) {
        return Err(Exchange::Failed(Answerless::Status(status)));
    }
    let mut answer = buf.split_off(head_len);
    match length {
        Some(length) if length > limit => return Err(Exchange::Failed(Answerless::TooLarge)),
        Some(length) => {
            if answer.len() > length {
                return Err(Exchange::Failed(Answerless::Failed("more bytes than its Content-Length".into())));
            }
            let have = answer.len();
            answer.resize(length, 0);
            stream.read_exact(&mut answer[have..]).map_err(failed)?;
        }
        None => {
            // Delimited by the end of the connection.
            let room = (limit + 1).saturating_sub(answer.len()) as u64;
            stream.take(room).read_to_end(&mut answer).map_err(failed)?;
            if answer.len() > limit {
                return Err(Exchange::Failed(Answerless::TooLarge));
            }
        }
    }
    Ok((answer, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application's side of a connection: what it answers, and what it was sent.
    struct Scripted<'a> {
        answer: &'a [u8],
        sent: Vec<u8>,
    }

    impl Read for Scripted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // A few bytes at a time, as a socket may give them.
            let n = buf.len().min(self.answer.len()).min(7);
            buf[..n].copy_from_slice(&self.answer[..n]);
            self.answer = &self.answer[n..];
            Ok(n)
        }
    }

    impl std::io::Write for Scripted<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn over_unix(answer: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let mut app = Scripted { answer, sent: Vec::new() };
        let result = exchange(&mut app, b"POST /c HTTP/1.1\r\n\r\n", 64);
        assert_eq!(app.sent, b"POST /c HTTP/1.1\r\n\r\n");
        result.map_err(|e| match e {
            Exchange::Stale => "stale".to_string(),
            Exchange::Failed(Answerless::Status(code)) => format!("status {code}"),
            Exchange::Failed(Answerless::TooLarge) => "too large".to_string(),
            Exchange::Failed(Answerless::Failed(why)) => why,
        })
    }

    #[test]
    fn answers_on_a_unix_socket() {
        let ok = over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"allow\":true}").unwrap();
        assert_eq!(ok, (br#"{"allow":true}"#.to_vec(), true));
        let closing = over_unix(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(closing, (b"{}".to_vec(), false), "not kept");
        let to_the_end = over_unix(b"HTTP/1.0 200 OK\r\n\r\n{}").unwrap();
        assert_eq!(to_the_end, (b"{}".to_vec(), false));
        assert_eq!(over_unix(b""), Err("stale".into()), "a kept connection let go");
        assert_eq!(over_unix(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"), Err("status 503".into()));
        assert_eq!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"), Err("too large".into()));
        let endless = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(over_unix(&endless), Err("too large".into()), "bounded without a length too");
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            .unwrap_err()
            .contains("Content-Length"));
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").unwrap_err().contains("Content-Length"));
        assert!(over_unix(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").is_err(), "cut short");
        assert!(over_unix(b"SSH-2.0-OpenSSH\r\n").unwrap_err().contains("not an HTTP answer"));
        let huge_head = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert!(over_unix(&huge_head).unwrap_err().contains("8 KiB"));
    }
}
