//! The access log file (`access_log = "path"`): one line per connection, appended.
//!
//! Lines are buffered and written once per loop turn (one `write` for a turn's worth of closed
//! connections). Writes to a local file block, as in every server that logs to files; a
//! full disk costs lines, never the loop: a failed write is reported once per episode and the
//! buffer dropped. SIGHUP reopens the path, so `logrotate` can rename the file and signal.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes of lines buffered before a write even mid-turn.
const FLUSH_AT: usize = 64 * 1024;

pub struct AccessLogFile {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

impl AccessLogFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<AccessLogFile> {
        let file = open_append(path)?;
        Ok(AccessLogFile { path: path.to_path_buf(), file, pending: Vec::new(), failing: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one line (a newline is added).
    pub fn line(&mut self, line: &str) {
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes what is queued.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    log::error!("access log {}: {e}; lines are being lost", self.path.display());
                }
                self.failing = true;
            }
        }
        self.pending.clear();
        if self.pending.capacity() > FLUSH_AT {
            self.pending = Vec::new();
        }
    }

    /// Writes what is queued to the old file, then opens the path again (after rotation). If
    /// that fails, logging goes on to the old file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
