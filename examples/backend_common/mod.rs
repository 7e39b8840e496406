//! Shared by the example backends: options (ouistiti's `-R dir -n name -u user`, plus
//! `-f raw|lines|framed`), the listening socket, and a reader/writer for each framing.
//! Plain std (and wsgate's privilege drop for `-u`), so a backend author can read it whole.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    Raw,
    Lines,
    Framed,
}

pub struct Options {
    pub dir: PathBuf,
    pub name: String,
    pub user: Option<String>,
    pub framing: Framing,
    /// Further single-letter flags the example understands (e.g. chat's `-w`).
    pub flags: Vec<char>,
}

/// Parses `-R DIR -n NAME -u USER -f FRAMING` and the flags in `extra`.
pub fn options(default_name: &str, extra: &[char]) -> Options {
    let mut o = Options {
        dir: PathBuf::from("/tmp/wsgate"),
        name: default_name.to_string(),
        user: None,
        framing: Framing::Lines,
        flags: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().unwrap_or_else(|| usage(&format!("{a} needs {what}")));
        match a.as_str() {
            "-R" => o.dir = PathBuf::from(value("a directory")),
            "-n" => o.name = value("a socket name"),
            "-u" => o.user = Some(value("a user")),
            "-f" => {
                o.framing = match value("raw, lines or framed").as_str() {
                    "raw" => Framing::Raw,
                    "lines" => Framing::Lines,
                    "framed" => Framing::Framed,
                    other => usage(&format!("unknown framing {other}")),
                }
            }
            flag if flag.len() == 2 && flag.starts_with('-') && extra.contains(&flag.as_bytes()[1].into()) => {
                o.flags.push(flag.as_bytes()[1].into())
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    o
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: {} [-R DIR] [-n NAME] [-u USER] [-f raw|lines|framed]",
        std::env::args().next().unwrap_or_default()
    );
    std::process::exit(2);
}

/// Binds `dir/name` (replacing a stale socket), then drops to `-u USER` if given.
pub fn listen(o: &Options) -> UnixListener {
    std::fs::create_dir_all(&o.dir).unwrap_or_else(|e| fail(&format!("{}: {e}", o.dir.display())));
    let path = o.dir.join(&o.name);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    // Anyone who can reach the directory may connect: the directory's permissions are the
    // access control (wsgate itself usually runs as an unprivileged user of its own).
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
    if let Some(user) = &o.user {
        wsgate::sys::privileges::drop_to(user).unwrap_or_else(|e| fail(&e.to_string()));
    }
    eprintln!("listening on {}", path.display());
    listener
}

fn fail(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(1);
}

/// A message as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    /// framed: the client closed (code, reason).
    Close(Option<(u16, String)>),
}

/// Reads messages in one framing.
pub struct MsgReader {
    framing: Framing,
    inner: BufReader<UnixStream>,
    /// framed: the HELLO's `name: value` lines.
    pub hello: Vec<(String, String)>,
}

impl MsgReader {
    pub fn new(stream: UnixStream, framing: Framing) -> io::Result<MsgReader> {
        let mut r = MsgReader { framing, inner: BufReader::new(stream), hello: Vec::new() };
        if framing == Framing::Framed {
            let (kind, _, payload) = read_record(&mut r.inner)?.ok_or(io::ErrorKind::UnexpectedEof)?;
            if kind != 1 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "first record is not HELLO"));
            }
            for line in String::from_utf8_lossy(&payload).lines().skip(1) {
                if let Some((k, v)) = line.split_once(": ") {
                    r.hello.push((k.to_string(), v.to_string()));
                }
            }
        }
        Ok(r)
    }

    /// The HELLO's value for `key` (framed only).
    pub fn hello_value(&self, key: &str) -> Option<&str> {
        self.hello.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The next message; `None` at EOF.
    pub fn next(&mut self) -> io::Result<Option<Msg>> {
        match self.framing {
            Framing::Raw => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = self.inner.read(&mut buf)?;
                buf.truncate(n);
                Ok((n > 0).then_some(Msg::Binary(buf)))
            }
            Framing::Lines => {
                let mut line = String::new();
                if self.inner.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                Ok(Some(Msg::Text(line)))
            }
            Framing::Framed => {
                // Fragments (FIN clear) are joined into one message.
                let mut whole = Vec::new();
                loop {
                    let Some((kind, fin, payload)) = read_record(&mut self.inner)? else { return Ok(None) };
                    if kind == 4 {
                        let close = (payload.len() >= 2).then(|| {
                            (
                                u16::from_be_bytes([payload[0], payload[1]]),
                                String::from_utf8_lossy(&payload[2..]).into_owned(),
                            )
                        });
                        return Ok(Some(Msg::Close(close)));
                    }
                    whole.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(if kind == 2 {
                            Msg::Text(String::from_utf8(whole).map_err(|_| io::ErrorKind::InvalidData)?)
                        } else {
                            Msg::Binary(whole)
                        }));
                    }
                }
            }
        }
    }
}

fn read_record(r: &mut impl Read) -> io::Result<Option<(u8, bool, Vec<u8>)>> {
    let mut head = [0u8; 6];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if len > 64 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "record too long"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], head[1] & 1 != 0, payload)))
}

/// Writes one message in a framing.
pub fn write_msg(w: &mut impl Write, framing: Framing, msg: &Msg) -> io::Result<()> {
    let (kind, payload): (u8, Vec<u8>) = match msg {
        Msg::Text(t) => (2, t.as_bytes().to_vec()),
        Msg::Binary(b) => (3, b.clone()),
        Msg::Close(c) => {
            let mut p = Vec::new();
            if let Some((code, reason)) = c {
                p.extend_from_slice(&code.to_be_bytes());
                p.extend_from_slice(reason.as_bytes());
            }
            (4, p)
        }
    };
    match framing {
        Framing::Raw => w.write_all(&payload),
        Framing::Lines => {
            w.write_all(&payload)?;
            w.write_all(b"\n")
        }
        Framing::Framed => {
            let mut head = vec![kind, 1];
            head.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            w.write_all(&head)?;
            w.write_all(&payload)
        }
    }
}

/// Writes one framed record.
fn write_record(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut record = Vec::with_capacity(6 + payload.len());
    record.extend_from_slice(&[kind, 1]);
    record.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    record.extend_from_slice(payload);
    w.write_all(&record)
}

/// framed: subscribes this backend's client to `topic` (SUBSCRIBE record).
pub fn subscribe(w: &mut impl Write, topic: &str) -> io::Result<()> {
    write_record(w, 5, topic.as_bytes())
}

/// framed: publishes `msg` to every subscriber of `topic` (PUBLISH record), this backend's
/// own client too unless `exclude_own_client`. The gateway encodes it once for all of them.
pub fn publish(w: &mut impl Write, topic: &str, msg: &Msg, exclude_own_client: bool) -> io::Result<()> {
    let (binary, body) = match msg {
        Msg::Text(t) => (false, t.as_bytes()),
        Msg::Binary(b) => (true, b.as_slice()),
        Msg::Close(_) => return Ok(()),
    };
    let topic = topic.as_bytes();
    let len =
        u8::try_from(topic.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "topic over 255 bytes"))?;
    let flags = u8::from(binary) | if exclude_own_client { 0x02 } else { 0 };
    let mut payload = Vec::with_capacity(2 + topic.len() + body.len());
    payload.extend_from_slice(&[flags, len]);
    payload.extend_from_slice(topic);
    payload.extend_from_slice(body);
    write_record(w, 7, &payload)
}

/// framed: sends a text message to the connection with id `id` (SEND record).
pub fn send_to(w: &mut impl Write, id: u64, text: &str) -> io::Result<()> {
    let mut payload = id.to_be_bytes().to_vec();
    payload.push(0);
    payload.extend_from_slice(text.as_bytes());
    write_record(w, 8, &payload)
}
