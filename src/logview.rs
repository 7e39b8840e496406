//! Following log files for the log viewer (`app = "logview"`): one reader per file, whatever
//! the number of viewers or routes, polled by the loop every [`POLL_INTERVAL`].
//!
//! Each complete line becomes one frame, `{"file":...,"line":...}`, published to the file's
//! feed and kept in a bounded backlog for viewers who arrive later. A file replaced under its
//! name (rotation) is read to its end, then the new one from its start; a file that shrank
//! (truncation) is read again from its start; a file that does not exist yet is waited for.
//! Reading is bounded per poll ([`READ_PER_POLL`]) and lines are cut at [`MAX_LINE`] bytes,
//! so a runaway writer costs a bounded amount of work and memory per turn.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::encode::{shared_frame, SharedFrame};
use crate::io_step::IoStep;
use crate::route::Route;
use crate::ws::frame::Opcode;

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes read from one file per poll.
pub const READ_PER_POLL: usize = 256 << 10;
/// Longer lines are cut here (the rest follows as another line).
pub const MAX_LINE: usize = 16 << 10;
/// Backlog bytes kept per file, whatever the `backlog` in lines.
const MAX_BACKLOG_BYTES: usize = 1 << 20;
/// On the first open of an existing file, this much of its end fills the backlog.
const INITIAL_TAIL: u64 = 256 << 10;

/// The feed (topic) a file's lines are published to.
pub fn feed_name(path: &Path) -> String {
    format!("{}log:{}", crate::pubsub::FEED_PREFIX, path.display())
}

struct Tail {
    path: PathBuf,
    feed: String,
    file: Option<File>,
    /// (device, inode) of the open file: a different one under the path is a rotation.
    identity: (u64, u64),
    offset: u64,
    partial: Vec<u8>,
    backlog: VecDeque<SharedFrame>,
    backlog_bytes: usize,
    backlog_lines: usize,
    /// Logged once while the file is missing.
    missing_noted: bool,
    /// The next line is incomplete (reading began mid-line): dropped.
    discard_first: bool,
}

/// Every file some logview route follows.
#[derive(Default)]
pub struct Tails {
    tails: Vec<Tail>,
    by_path: HashMap<PathBuf, usize>,
}

impl Tails {
    pub fn new(routes: &[Route]) -> Tails {
        let mut tails = Tails::default();
        for spec in routes.iter().filter_map(|r| r.logview.as_deref()) {
            for path in &spec.files {
                let i = *tails.by_path.entry(path.clone()).or_insert_with(|| {
                    tails.tails.push(Tail::new(path.clone()));
                    tails.tails.len() - 1
                });
                let tail = &mut tails.tails[i];
                tail.backlog_lines = tail.backlog_lines.max(spec.backlog);
            }
        }
        for tail in &mut tails.tails {
            tail.open_at_start();
        }
        tails
    }

    pub fn is_empty(&self) -> bool {
        self.tails.is_empty()
    }

    /// The feed names of the files followed.
    pub fn feeds(&self) -> impl Iterator<Item = &str> {
        self.tails.iter().map(|t| t.feed.as_str())
    }

    /// Reads what was appended since the last poll; `publish(feed, frame)` for each line.
    /// Returns true when a file had more than one poll's worth (poll again soon).
    pub fn poll(&mut self, mut publish: impl FnMut(&str, &SharedFrame)) -> bool {
        let mut more = false;
        for tail in &mut self.tails {
            more |= tail.poll(&mut publish);
        }
        more
    }

    /// The last `lines` lines of `path` (oldest first).
    pub fn backlog(&self, path: &Path, lines: usize) -> impl Iterator<Item = &SharedFrame> {
        let backlog = self.by_path.get(path).map(|&i| &self.tails[i].backlog);
        let skip = backlog.map_or(0, |b| b.len().saturating_sub(lines));
        backlog.into_iter().flat_map(move |b| b.iter().skip(skip))
    }
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            feed: feed_name(&path),
            path,
            file: None,
            identity: (0, 0),
            offset: 0,
            partial: Vec::new(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            backlog_lines: 0,
            missing_noted: false,
            discard_first: false,
        }
    }

    /// At start: an existing file's last lines fill the backlog; new lines come from its end.
    fn open_at_start(&mut self) {
        let Ok(mut file) = File::open(&self.path) else {
            self.note_missing();
            return;
        };
        let Ok(meta) = file.metadata() else { return };
        let start = meta.len().saturating_sub(INITIAL_TAIL);
        if file.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        self.identity = (meta.dev(), meta.ino());
        self.offset = start;
        self.file = Some(file);
        // Starting mid-file, the first line is only the end of one.
        self.discard_first = start > 0;
        // Read up to the current end, keeping lines for the backlog only.
        while self.read_some(meta.len().saturating_sub(self.offset), &mut |_, _| {}) {}
    }

    fn note_missing(&mut self) {
        if !self.missing_noted {
            self.missing_noted = true;
            log::info!("logview: {} does not exist yet; waiting for it", self.path.display());
        }
    }

    fn poll(&mut self, publish: &mut dyn FnMut(&str, &SharedFrame)) -> bool {
        let available = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let identity = (meta.dev(), meta.ino());
                if self.file.is_some() && identity != self.identity {
                    // Rotated: what the old file still holds first, then the new one.
                    for _ in 0..4 {
                        if !self.read_some(u64::MAX, publish) {
                            break;
                        }
                    }
                    self.flush_partial(publish);
                    log::debug!("logview: {} was replaced; following the new file", self.path.display());
                    self.file = None;
                }
                if self.file.is_none() {
                    match File::open(&self.path) {
                        Ok(file) => {
                            self.file = Some(file);
                            self.identity = identity;
                            self.offset = 0;
                            self.partial.clear();
                            self.missing_noted = false;
                        }
                        Err(e) => {
                            log::debug!("logview: {}: {e}", self.path.display());
                            return false;
                        }
                    }
                } else if meta.len() < self.offset {
                    log::debug!("logview: {} was truncated; reading from its start", self.path.display());
                    if let Some(f) = &mut self.file {
                        let _ = f.seek(SeekFrom::Start(0));
                    }
                    self.offset = 0;
                    self.partial.clear();
                }
                meta.len().saturating_sub(self.offset)
            }
            Err(_) if self.file.is_none() => {
                self.note_missing();
                return false;
            }
            // Removed while open: keep reading what was written to it until a new one appears.
            Err(_) => u64::MAX,
        };
        available > 0 && self.read_some(available, publish)
    }

    /// One bounded read; lines out. True if the read filled its budget (more may wait).
    fn read_some(&mut self, available: u64, publish: &mut dyn FnMut(&str, &SharedFrame)) -> bool {
        let Some(file) = &mut self.file else { return false };
        let want = available.min(READ_PER_POLL as u64) as usize;
        if want == 0 {
            return false;
        }
        let mut buf = vec![0u8; want];
        let n = match read_full(file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("logview: {}: {e}", self.path.display());
                return false;
            }
        };
        self.offset += n as u64;
        let mut rest = &buf[..n];
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if std::mem::take(&mut self.discard_first) {
                self.partial.clear();
            } else if self.partial.is_empty() {
                self.line(line, publish);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, publish);
            }
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            let cut: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.line(&cut, publish);
        }
        n == READ_PER_POLL && available > READ_PER_POLL as u64
    }

    fn flush_partial(&mut self, publish: &mut dyn FnMut(&str, &SharedFrame)) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, publish);
        }
    }

    fn line(&mut self, line: &[u8], publish: &mut dyn FnMut(&str, &SharedFrame)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            for piece in line.chunks(MAX_LINE) {
                self.line(piece, publish);
            }
            return;
        }
        let mut body = Vec::with_capacity(line.len() + self.feed.len() + 24);
        body.extend_from_slice(b"{\"file\":");
        let _ = serde_json::to_writer(&mut body, &*self.path.to_string_lossy());
        body.extend_from_slice(b",\"line\":");
        let _ = serde_json::to_writer(&mut body, &*String::from_utf8_lossy(line));
        body.push(b'}');
        let frame = shared_frame(Opcode::Text, &body);
        publish(&self.feed, &frame);
        if self.backlog_lines > 0 {
            self.backlog_bytes += frame.len();
            self.backlog.push_back(frame);
            while self.backlog.len() > self.backlog_lines || self.backlog_bytes > MAX_BACKLOG_BYTES {
                let Some(old) = self.backlog.pop_front() else { break };
                self.backlog_bytes -= old.len();
            }
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match IoStep::of(file.read(&mut buf[n..])) {
            IoStep::End => break,
            IoStep::Done(k) => n += k,
            IoStep::WouldBlock | IoStep::Retry => {}
            IoStep::Failed(e) => return Err(e),
        }
    }
    Ok(n)
}
