//! Responses: a status line, headers and a body written into the connection's output bytes.

/// The reason phrase for the statuses this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What a response looks like apart from its status.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    pub headers: &'a [(&'a str, &'a str)],
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Keep the connection open afterwards (otherwise `Connection: close`).
    pub keep_alive: bool,
    /// A HEAD request: headers as for GET, no body.
    pub head_only: bool,
}

impl<'a> Response<'a> {
    /// A plain-text error response whose body is the reason, closing the connection.
    pub fn error(status: u16, reason: &'a str) -> Response<'a> {
        Response {
            status,
            headers: &[],
            content_type: "text/plain; charset=utf-8",
            body: reason.as_bytes(),
            keep_alive: false,
            head_only: false,
        }
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(128 + self.body.len());
        push_status_line(out, self.status);
        for (name, value) in self.headers {
            push_header(out, name, value.as_bytes());
        }
        if self.status != 304 {
            push_header(out, "Content-Type", self.content_type.as_bytes());
            let mut digits = itoa_buf();
            push_header(out, "Content-Length", format_usize(&mut digits, self.body.len()));
        }
        if !self.keep_alive {
            push_header(out, "Connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only && self.status != 304 {
            out.extend_from_slice(self.body);
        }
    }
}

pub fn push_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = itoa_buf();
    out.extend_from_slice(format_usize(&mut digits, usize::from(status)));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// Decimal digits of `n` without allocating.
fn format_usize(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[pos..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_error_and_head() {
        let mut out = Vec::new();
        Response::error(404, "no route").write(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\
Connection: close\r\n\r\nno route"
        );
        let mut out = Vec::new();
        Response { head_only: true, keep_alive: true, ..Response::error(200, "hello") }.write(&mut out);
        assert!(out.ends_with(b"Content-Length: 5\r\n\r\n"));
    }

    #[test]
    fn formats_numbers() {
        let mut b = itoa_buf();
        assert_eq!(format_usize(&mut b, 0), b"0");
        assert_eq!(format_usize(&mut b, usize::MAX), usize::MAX.to_string().as_bytes());
    }
}
