//! `static = DIR` routes: the files under a directory, for GET and HEAD, next to the
//! WebSockets. A request path becomes a relative path by the rules of `socket_dir` names
//! (each segment, percent-decoded, is a plain name: letters, digits, `.`, `_`, `-`, not
//! starting with `.`), so `..`, hidden files, NUL and encoded slashes never get as far as the
//! file system; the file is then opened strictly beneath the directory (`openat2`
//! `RESOLVE_BENEATH`), so no symlink leads out. Validators (`ETag`, `Last-Modified`) answer
//! conditional requests with 304. The body is sent by the connection from the open file
//! ([`FileBody`]): `sendfile(2)` on plain TCP, 16 KiB chunks through TLS.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::request::Request;
use super::response::{push_header, push_status_line};
use crate::sys::files::is_plain_name;

/// What a route with `static = DIR` serves from: the directory, open for the route's life.
#[derive(Debug)]
pub struct StaticDir {
    path: PathBuf,
    dir: File,
}

impl StaticDir {
    pub fn open(path: &Path) -> io::Result<StaticDir> {
        let dir = crate::sys::files::open_dir(path)?;
        Ok(StaticDir { path: path.to_path_buf(), dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// The file a request names, relative to the route's directory.
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    pub rel: PathBuf,
    /// The path ended with `/` (or named the route itself): a directory, served by its
    /// `index.html`.
    pub dir: bool,
}

/// Why a path names no file it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A segment is not a plain name (`..`, `.hidden`, `a%2fb`, NUL, `//`...): 403.
    NotPlain,
}

/// The request path (without query) under the route's path → the relative path to serve.
/// `route_path` is the route's (`/`, `/site`); the request path extends it at a segment
/// boundary, as [`crate::route::Routes::find`] guarantees.
pub fn wanted(route_path: &str, request_path: &str) -> Result<Wanted, Refused> {
    let base = route_path.trim_end_matches(['/', '*']);
    let rest = request_path.strip_prefix(base).unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    // `/site` names the directory without its slash (redirected); `/` and `/site/` with it.
    let dir = request_path.ends_with('/');
    let mut rel = PathBuf::new();
    for segment in rest.split('/') {
        if segment.is_empty() {
            continue;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        let name = std::str::from_utf8(&decoded).map_err(|_| Refused::NotPlain)?;
        if !is_plain_name(name) {
            return Err(Refused::NotPlain);
        }
        rel.push(name);
    }
    // `a//b` is not `a/b`: names are taken literally, as for socket_dir.
    if rest.split('/').rev().skip(1).any(str::is_empty) {
        return Err(Refused::NotPlain);
    }
    Ok(Wanted { rel, dir })
}

/// The answer to a GET or HEAD of a static route.
pub enum Answer {
    /// Headers (for 200 and 304: the validators), and for 200 the file to send.
    File { status: u16, head: Vec<u8>, body: Option<FileBody> },
    /// An error or redirect with a short body: status, reason (body), extra header.
    Short { status: u16, reason: &'static str, location: Option<String> },
}

/// Resolves and opens what `req` asks of `dir`, and answers it.
pub fn answer(dir: &StaticDir, route_path: &str, req: &Request<'_, '_>, keep_alive: bool) -> Answer {
    let short = |status, reason| Answer::Short { status, reason, location: None };
    let wanted = match wanted(route_path, req.path()) {
        Ok(w) => w,
        Err(Refused::NotPlain) => return short(403, "forbidden path"),
    };
    let opened = match open(dir, &wanted) {
        Ok(Opened::File(file, meta)) => (file, meta),
        Ok(Opened::Directory) => {
            // Relative links in its index resolve against the directory only with the slash.
            let mut location = req.path().to_string();
            location.push('/');
            if let Some(q) = req.query() {
                location.push('?');
                location.push_str(q);
            }
            return Answer::Short { status: 301, reason: "moved to the directory's path", location: Some(location) };
        }
        Err(status) => {
            let reason = match status {
                404 => "not found",
                503 => "server busy, try again later",
                _ => "forbidden",
            };
            return short(status, reason);
        }
    };
    let (file, meta) = opened;
    let validators = Validators::of(&meta);
    let status = if validators.fresh_for(req) { 304 } else { 200 };
    let mut head = Vec::with_capacity(256);
    push_status_line(&mut head, status);
    push_header(&mut head, "ETag", validators.etag.as_bytes());
    push_header(&mut head, "Last-Modified", validators.last_modified.as_bytes());
    if status == 200 {
        push_header(&mut head, "Content-Type", content_type(&wanted, dir).as_bytes());
        push_header(&mut head, "Content-Length", meta.len().to_string().as_bytes());
    }
    if !keep_alive {
        push_header(&mut head, "Connection", b"close");
    }
    head.extend_from_slice(b"\r\n");
    let body = (status == 200 && req.method != "HEAD" && meta.len() > 0).then(|| FileBody {
        file,
        offset: 0,
        end: meta.len(),
    });
    Answer::File { status, head, body }
}

enum Opened {
    File(File, std::fs::Metadata),
    /// A directory named without the trailing slash.
    Directory,
}

/// Opens the file `wanted` names (a directory's `index.html`); `Err(status)`: 404 or 403.
fn open(dir: &StaticDir, wanted: &Wanted) -> Result<Opened, u16> {
    let open_one = |rel: &Path| -> Result<(File, std::fs::Metadata), u16> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let file = crate::sys::files::open_beneath(dir.fd(), dir.path(), rel).map_err(|e| status_of(&e))?;
        let meta = file.metadata().map_err(|e| status_of(&e))?;
        Ok((file, meta))
    };
    let (file, meta) = open_one(&wanted.rel)?;
    if meta.is_dir() {
        if !wanted.dir {
            return Ok(Opened::Directory);
        }
        // No listings: a directory without an index is forbidden.
        let (file, meta) = open_one(&wanted.rel.join("index.html")).map_err(|s| if s == 404 { 403 } else { s })?;
        return if meta.is_file() { Ok(Opened::File(file, meta)) } else { Err(403) };
    }
    if wanted.dir {
        return Err(404); // `file.html/`
    }
    if !meta.is_file() {
        return Err(403); // a FIFO, a device, a socket
    }
    Ok(Opened::File(file, meta))
}

fn status_of(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => 404,
        // Out of descriptors or memory: the server's trouble, not the path's.
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM) => 503,
        _ => 403, // EACCES, EPERM, EXDEV (a way out), ELOOP, ...
    }
}

/// `text/*` and the scripts and data browsers read as text get `charset=utf-8`.
fn content_type(wanted: &Wanted, _dir: &StaticDir) -> String {
    let name = if wanted.dir { Path::new("index.html") } else { wanted.rel.as_path() };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.essence_str(), "application/javascript" | "application/json" | "image/svg+xml");
    if textual && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_string()
    }
}

/// A file's `ETag` (modification time in nanoseconds and size, so any rewrite changes it)
/// and `Last-Modified`.
struct Validators {
    etag: String,
    last_modified: String,
    modified: SystemTime,
}

impl Validators {
    fn of(meta: &std::fs::Metadata) -> Validators {
        let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Validators {
            etag: format!("\"{:x}-{:x}\"", nanos, meta.len()),
            last_modified: httpdate::fmt_http_date(modified),
            modified,
        }
    }

    /// RFC 9110 §13.2.2: `If-None-Match` decides when present (weak comparison, §13.1.2);
    /// otherwise `If-Modified-Since`, at the second the date has.
    fn fresh_for(&self, req: &Request<'_, '_>) -> bool {
        let tag = self.etag.as_bytes();
        let mut any_inm = false;
        for value in req.list_elements("if-none-match") {
            any_inm = true;
            let value = value.strip_prefix(b"W/").unwrap_or(value);
            if value == b"*" || value == tag {
                return true;
            }
        }
        if any_inm {
            return false;
        }
        let Some(since) = req.header("if-modified-since").and_then(|v| std::str::from_utf8(v).ok()) else {
            return false;
        };
        let Ok(since) = httpdate::parse_http_date(since.trim()) else { return false };
        let modified_secs = self.modified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        let since_secs = since.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        modified_secs <= since_secs
    }
}

/// Bytes of a file one chunk carries through TLS (the most a client that stops reading
/// makes the server hold, besides the same bytes encrypted).
pub const TLS_CHUNK: usize = 16 * 1024;
/// Bytes one `sendfile` call may move: the connection's write budget per drive.
pub const SENDFILE_STEP: usize = 1 << 20;

/// A response body still to send from an open file: `offset..end`.
#[derive(Debug)]
pub struct FileBody {
    file: File,
    offset: u64,
    end: u64,
}

impl FileBody {
    pub fn remaining(&self) -> u64 {
        self.end - self.offset
    }

    /// Sends up to `SENDFILE_STEP` bytes to a plain socket with `sendfile(2)`.
    pub fn sendfile(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        let count = usize::try_from(self.remaining()).unwrap_or(usize::MAX).min(SENDFILE_STEP);
        let n = crate::sys::files::sendfile(socket, &self.file, &mut self.offset, count)?;
        if n == 0 && count > 0 {
            return Err(shrank());
        }
        Ok(n)
    }

    /// Reads the next chunk (at most `TLS_CHUNK` bytes) into `chunk`; returns its length.
    pub fn read_chunk(&mut self, chunk: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = usize::try_from(self.remaining()).unwrap_or(usize::MAX).min(chunk.len());
        let n = self.file.read_at(&mut chunk[..want], self.offset)?;
        if n == 0 && want > 0 {
            return Err(shrank());
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The file got shorter than the `Content-Length` already sent: the connection must end.
fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_become_relative_paths_or_are_refused() {
        let ok = |route: &str, path: &str, rel: &str, dir: bool| {
            assert_eq!(wanted(route, path), Ok(Wanted { rel: PathBuf::from(rel), dir }), "{route} {path}");
        };
        ok("/", "/", "", true);
        ok("/", "/index.html", "index.html", false);
        ok("/", "/js/app.min.js", "js/app.min.js", false);
        ok("/", "/docs/", "docs", true);
        ok("/site", "/site", "", false);
        ok("/site", "/site/", "", true);
        ok("/site", "/site/a-b_c.txt", "a-b_c.txt", false);
        ok("/", "/caf%65.html", "cafe.html", false);
        // The socket_dir traversal forms, and their encodings, on any segment.
        for hostile in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc",
            "/%2e%2e/etc",
            "/%2E%2E%2Fetc",
            "/a%2fb",
            "/.hidden",
            "/.git/config",
            "/a//b",
            "/a%00b",
            "/%c0%ae%c0%ae/x",
            "/a\\b",
            "/a b",
        ] {
            assert_eq!(wanted("/", hostile), Err(Refused::NotPlain), "{hostile}");
        }
    }
}
