//! The backend → client direction of every framing as pure functions on byte slices: bytes
//! read from the backend go in, WebSocket frames come out on the client's queue, pub/sub
//! commands (framed records) come out as [`Command`]s. No socket: the link reads, this
//! decides, and the fuzzer feeds it directly.
//!
//! Every result depends only on the byte stream, never on how reads split it (the fuzz
//! target `backend_framing` checks this), except that a `raw` route sends each read as one
//! message, as ouistiti does.

use std::fmt;

use super::framed::{self, RecordError, RecordHeader, RecordType};
use super::Framing;
use crate::buffer::{OutQueue, Pools};
use crate::encode::{shared_frame, SharedFrame};
use crate::ws::close;
use crate::ws::frame::Opcode;
use crate::ws::message::MessageKind;
use crate::ws::utf8::{self, Utf8Validator};

/// Why a backend's byte stream is refused (the client is closed with 1011).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Text route (raw or lines): the bytes are not UTF-8.
    InvalidUtf8Text,
    LineTooLong,
    Record(RecordError),
    RecordTypeChanged,
    MessageTooLong,
    InvalidUtf8Record,
    TextEndsMidCharacter,
    /// A pub/sub record whose topic or layout is malformed.
    BadCommand(&'static str),
    ClosedMidMessage,
    ClosedWithoutClose,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::InvalidUtf8Text => f.write_str("backend sent invalid UTF-8 on a text route"),
            CodecError::LineTooLong => f.write_str("backend line over max_message_size"),
            CodecError::Record(e) => write!(f, "{e}"),
            CodecError::RecordTypeChanged => f.write_str("record type changed inside a message"),
            CodecError::MessageTooLong => f.write_str("backend message over max_message_size"),
            CodecError::InvalidUtf8Record => f.write_str("backend sent invalid UTF-8 in a TEXT record"),
            CodecError::TextEndsMidCharacter => f.write_str("backend TEXT message ends mid-character"),
            CodecError::BadCommand(why) => write!(f, "malformed pub/sub record: {why}"),
            CodecError::ClosedMidMessage => f.write_str("backend closed mid-message"),
            CodecError::ClosedWithoutClose => f.write_str("backend closed without a CLOSE record"),
        }
    }
}

impl std::error::Error for CodecError {}

/// A pub/sub request from a framed backend, on behalf of its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Subscribe(Box<str>),
    Unsubscribe(Box<str>),
    /// A message for every subscriber of `topic`, encoded once; `exclude_client`: not to the
    /// backend's own client.
    Publish {
        topic: Box<str>,
        frame: SharedFrame,
        exclude_client: bool,
        /// Connection ids not to deliver to (the record's exclude list).
        exclude_ids: Box<[u64]>,
    },
    /// A message for one connection, by its id.
    Send {
        id: u64,
        frame: SharedFrame,
    },
    /// A REQUEST record's JSON text (UTF-8 checked).
    Request(Box<[u8]>),
}

/// What a feed ended with, if the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A framed CLOSE record (code, reason); anything after it is ignored.
    CloseRecord(u16, String),
}

/// The longest topic name a backend may use in a record.
pub const MAX_TOPIC: usize = 255;

/// One backend stream's reassembly state.
#[derive(Debug)]
pub struct Reassembler {
    framing: Framing,
    /// raw / lines: what the backend's bytes become.
    kind: MessageKind,
    max_message: usize,
    /// lines: the line being collected, or framed: the record payload being collected.
    partial: Vec<u8>,
    /// framed: the record whose payload is being collected.
    record: Option<RecordHeader>,
    /// framed: the message in progress (between its first record and its FIN record).
    message: Option<MessageKind>,
    message_len: usize,
    /// framed: the text message in progress; raw text: the character carried across reads.
    utf8: Utf8Validator,
    close_received: bool,
}

impl Reassembler {
    pub fn new(framing: Framing, kind: MessageKind, max_message: usize) -> Reassembler {
        Reassembler {
            framing,
            kind,
            max_message,
            partial: Vec::new(),
            record: None,
            message: None,
            message_len: 0,
            utf8: Utf8Validator::new(),
            close_received: false,
        }
    }

    /// Converts `data`, the next bytes of the stream: frames onto `client`, pub/sub records
    /// into `commands`.
    pub fn feed(
        &mut self,
        data: &[u8],
        pools: &mut Pools,
        client: &mut OutQueue,
        commands: &mut Vec<Command>,
    ) -> Result<Option<Ended>, CodecError> {
        match self.framing {
            Framing::Raw | Framing::Direct => self.feed_raw(data, pools, client).map(|()| None),
            Framing::Lines => self.feed_lines(data, pools, client).map(|()| None),
            Framing::Framed => self.feed_framed(data, pools, client, commands),
        }
    }

    /// The stream ended (EOF): cleanly, or in the middle of something.
    pub fn end_of_stream(&self) -> Result<(), CodecError> {
        match self.framing {
            Framing::Framed if self.close_received => Ok(()),
            Framing::Framed => Err(CodecError::ClosedWithoutClose),
            _ if !self.partial.is_empty() || !self.utf8.pending().is_empty() => Err(CodecError::ClosedMidMessage),
            _ => Ok(()),
        }
    }

    /// raw: every read becomes one message. Text is cut at a character boundary; the
    /// incomplete tail waits for the next read.
    fn feed_raw(&mut self, data: &[u8], pools: &mut Pools, client: &mut OutQueue) -> Result<(), CodecError> {
        if self.kind == MessageKind::Binary {
            client.push_frame(pools, Opcode::Binary, data);
            return Ok(());
        }
        // The validator carries an unfinished character across reads; each message is the
        // carried bytes and this read's, up to the last whole character.
        let mut carried = [0u8; 4];
        let carried_len = self.utf8.pending().len();
        carried[..carried_len].copy_from_slice(self.utf8.pending());
        self.utf8.feed(data).map_err(|_| CodecError::InvalidUtf8Text)?;
        let whole = carried_len + data.len() - self.utf8.pending().len();
        let (from_carried, from_data) = (whole.min(carried_len), whole.saturating_sub(carried_len));
        if whole > 0 {
            client.push_frame_parts(pools, Opcode::Text, [&carried[..from_carried], &data[..from_data]]);
        }
        Ok(())
    }

    /// lines: each LF-terminated line (a trailing CR dropped) is one message.
    ///
    /// A line is refused for its length before its content, whether it arrives whole or in
    /// pieces: a partial line is refused as soon as no ending could bring it back under the
    /// limit (longer than the limit plus a CR the ending would drop).
    fn feed_lines(&mut self, mut data: &[u8], pools: &mut Pools, client: &mut OutQueue) -> Result<(), CodecError> {
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let (head, rest) = data.split_at(pos);
            data = &rest[1..];
            let line: &[u8] = if self.partial.is_empty() {
                head
            } else {
                self.partial.extend_from_slice(head);
                &self.partial
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > self.max_message {
                return Err(CodecError::LineTooLong);
            }
            let opcode = self.kind.opcode();
            if opcode == Opcode::Text && utf8::validate(line).is_err() {
                return Err(CodecError::InvalidUtf8Text);
            }
            client.push_frame(pools, opcode, line);
            self.partial.clear();
        }
        let pending = self.partial.len() + data.len();
        let last = data.last().or(self.partial.last()).copied();
        if pending > self.max_message + 1 || (pending == self.max_message + 1 && last != Some(b'\r')) {
            return Err(CodecError::LineTooLong);
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// framed: records become frames; fragments stay fragments. A CLOSE record ends the
    /// stream: anything after it is ignored.
    fn feed_framed(
        &mut self,
        mut data: &[u8],
        pools: &mut Pools,
        client: &mut OutQueue,
        commands: &mut Vec<Command>,
    ) -> Result<Option<Ended>, CodecError> {
        if self.close_received {
            return Ok(None);
        }
        while !data.is_empty() {
            let header = match self.record {
                Some(h) => h,
                None => {
                    // Collect at least a header (it may be split across reads).
                    let need = framed::HEADER_LEN - self.partial.len().min(framed::HEADER_LEN);
                    let take = need.min(data.len());
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let Some(h) = framed::parse_header(&self.partial, self.max_message).map_err(CodecError::Record)?
                    else {
                        return Ok(None);
                    };
                    self.partial.clear();
                    self.record = Some(h);
                    h
                }
            };
            let take = (header.len - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < header.len {
                return Ok(None);
            }
            self.record = None;
            let end = self.finish_record(header, pools, client, commands)?;
            self.partial.clear();
            if self.partial.capacity() > 64 * 1024 {
                self.partial = Vec::new();
            }
            if end.is_some() {
                return Ok(end);
            }
        }
        Ok(None)
    }

    fn finish_record(
        &mut self,
        h: RecordHeader,
        pools: &mut Pools,
        client: &mut OutQueue,
        commands: &mut Vec<Command>,
    ) -> Result<Option<Ended>, CodecError> {
        let payload = &self.partial;
        let kind = match h.kind {
            RecordType::Close => {
                let close = framed::parse_close(payload).map_err(CodecError::Record)?;
                self.close_received = true;
                let (code, reason) = close.unwrap_or((close::NORMAL, ""));
                return Ok(Some(Ended::CloseRecord(code, reason.to_string())));
            }
            RecordType::Subscribe | RecordType::Unsubscribe => {
                let topic = parse_topic(payload)?;
                commands.push(if h.kind == RecordType::Subscribe {
                    Command::Subscribe(topic)
                } else {
                    Command::Unsubscribe(topic)
                });
                return Ok(None);
            }
            RecordType::Publish => {
                let (flags, rest) = payload.split_first().ok_or(CodecError::BadCommand("empty PUBLISH"))?;
                let (&topic_len, rest) = rest.split_first().ok_or(CodecError::BadCommand("PUBLISH without topic"))?;
                let topic_len = usize::from(topic_len);
                if flags & !(framed::PUBLISH_BINARY | framed::PUBLISH_EXCLUDE | framed::PUBLISH_EXCLUDE_LIST) != 0 {
                    return Err(CodecError::BadCommand("reserved PUBLISH flag bits set"));
                }
                let (topic, rest) = rest
                    .split_at_checked(topic_len)
                    .ok_or(CodecError::BadCommand("PUBLISH topic longer than the record"))?;
                let topic = parse_topic(topic)?;
                let (exclude_ids, message) = if flags & framed::PUBLISH_EXCLUDE_LIST != 0 {
                    let (&count, rest) =
                        rest.split_first().ok_or(CodecError::BadCommand("PUBLISH exclude list without a count"))?;
                    let (ids, message) = rest
                        .split_at_checked(usize::from(count) * 8)
                        .ok_or(CodecError::BadCommand("PUBLISH exclude list longer than the record"))?;
                    let ids = ids.chunks_exact(8).map(|id| id.try_into().map_or(0, u64::from_be_bytes)).collect();
                    (ids, message)
                } else {
                    (Box::default(), rest)
                };
                let frame = command_frame(*flags, message)?;
                let exclude_client = flags & framed::PUBLISH_EXCLUDE != 0;
                commands.push(Command::Publish { topic, frame, exclude_client, exclude_ids });
                return Ok(None);
            }
            RecordType::Request => {
                utf8::validate(payload).map_err(|_| CodecError::BadCommand("REQUEST is not UTF-8"))?;
                commands.push(Command::Request(payload.as_slice().into()));
                return Ok(None);
            }
            RecordType::Send => {
                let (id, rest) = payload.split_at_checked(8).ok_or(CodecError::BadCommand("SEND without an id"))?;
                let id = u64::from_be_bytes(id.try_into().map_err(|_| CodecError::BadCommand("SEND id"))?);
                let (flags, message) = rest.split_first().ok_or(CodecError::BadCommand("SEND without flags"))?;
                let frame = command_frame(*flags, message)?;
                commands.push(Command::Send { id, frame });
                return Ok(None);
            }
            RecordType::Text => MessageKind::Text,
            RecordType::Binary => MessageKind::Binary,
            RecordType::Hello => return Err(CodecError::Record(RecordError::UnexpectedHello)),
            // Never parsed from a backend (parse_header refuses type 10).
            RecordType::Answer => return Err(CodecError::Record(RecordError::UnknownType(10))),
        };
        let opcode = match self.message {
            None => kind.opcode(),
            Some(k) if k == kind => Opcode::Continuation,
            Some(_) => return Err(CodecError::RecordTypeChanged),
        };
        self.message_len += payload.len();
        if self.message_len > self.max_message {
            return Err(CodecError::MessageTooLong);
        }
        if kind == MessageKind::Text {
            self.utf8.feed(payload).map_err(|_| CodecError::InvalidUtf8Record)?;
            if h.fin {
                self.utf8.finish().map_err(|_| CodecError::TextEndsMidCharacter)?;
            }
        }
        client.push_frame_fin(pools, opcode, h.fin, payload);
        if h.fin {
            self.message = None;
            self.message_len = 0;
        } else {
            self.message = Some(kind);
        }
        Ok(None)
    }
}

fn parse_topic(bytes: &[u8]) -> Result<Box<str>, CodecError> {
    if bytes.is_empty() || bytes.len() > MAX_TOPIC {
        return Err(CodecError::BadCommand("topic must be 1 to 255 bytes"));
    }
    utf8::validate(bytes).map(Into::into).map_err(|_| CodecError::BadCommand("topic is not UTF-8"))
}

/// The frame a PUBLISH or SEND record carries: text (UTF-8 checked) or binary by `flags`.
fn command_frame(flags: u8, message: &[u8]) -> Result<SharedFrame, CodecError> {
    if flags & framed::PUBLISH_BINARY != 0 {
        return Ok(shared_frame(Opcode::Binary, message));
    }
    utf8::validate(message).map_err(|_| CodecError::InvalidUtf8Record)?;
    Ok(shared_frame(Opcode::Text, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, kind: MessageKind, max: usize, stream: &[u8], piece: usize) -> (Vec<u8>, String) {
        let mut r = Reassembler::new(framing, kind, max);
        let mut pools = Pools::new(crate::buffer::DEFAULT_POOL_BYTES);
        let mut q = OutQueue::default();
        let mut cmds = Vec::new();
        for p in stream.chunks(piece) {
            match r.feed(p, &mut pools, &mut q, &mut cmds) {
                Ok(None) => {}
                Ok(Some(e)) => return (q.to_vec(), format!("{e:?}")),
                Err(e) => return (q.to_vec(), e.to_string()),
            }
        }
        (q.to_vec(), String::new())
    }

    #[test]
    fn lines_fail_the_same_way_whole_or_split() {
        // The fuzzer's finding: a line of exactly max bytes plus CR, invalid UTF-8. Whole it
        // was "invalid UTF-8"; split, the partial line with its CR was "over max".
        let mut stream = vec![0xFF; 10];
        stream.extend_from_slice(b"\r\n");
        let whole = run(Framing::Lines, MessageKind::Text, 10, &stream, stream.len());
        for piece in 1..stream.len() {
            assert_eq!(run(Framing::Lines, MessageKind::Text, 10, &stream, piece), whole, "piece {piece}");
        }
        assert_eq!(whole.1, "backend sent invalid UTF-8 on a text route");
        // Exactly max with CR is fine; one more byte is too long, however it arrives.
        let ok = [vec![b'a'; 10], b"\r\n".to_vec()].concat();
        assert_eq!(run(Framing::Lines, MessageKind::Text, 10, &ok, 3).1, "");
        let long = [vec![b'a'; 11], b"\r\n".to_vec()].concat();
        for piece in 1..long.len() {
            assert_eq!(
                run(Framing::Lines, MessageKind::Text, 10, &long, piece).1,
                "backend line over max_message_size"
            );
        }
    }

    #[test]
    fn raw_text_carries_split_characters() {
        let stream = "aé€😀b".as_bytes();
        for piece in 1..stream.len() {
            let (bytes, err) = run(Framing::Raw, MessageKind::Text, 100, stream, piece);
            assert_eq!(err, "");
            // Every frame is whole characters; together they are the text.
            let mut text = Vec::new();
            let mut rest = &bytes[..];
            while let [0x81, len, tail @ ..] = rest {
                let (payload, more) = tail.split_at(usize::from(*len));
                assert!(std::str::from_utf8(payload).is_ok());
                text.extend_from_slice(payload);
                rest = more;
            }
            assert!(rest.is_empty());
            assert_eq!(text, stream);
        }
        assert_eq!(
            run(Framing::Raw, MessageKind::Text, 100, b"a\xC3(", 1).1,
            "backend sent invalid UTF-8 on a text route"
        );
    }

    #[test]
    fn framed_pubsub_records() {
        let mut stream = Vec::new();
        let mut record = |t: RecordType, payload: &[u8]| {
            stream.extend_from_slice(&framed::encode_header(t, true, payload.len()));
            stream.extend_from_slice(payload);
        };
        record(RecordType::Subscribe, b"news");
        record(RecordType::Publish, &[framed::PUBLISH_EXCLUDE, 4, b'n', b'e', b'w', b's', b'h', b'i']);
        let mut list = vec![framed::PUBLISH_EXCLUDE_LIST, 4, b'n', b'e', b'w', b's', 2];
        list.extend_from_slice(&7u64.to_be_bytes());
        list.extend_from_slice(&9u64.to_be_bytes());
        list.push(b'x');
        record(RecordType::Publish, &list);
        let mut send = 7u64.to_be_bytes().to_vec();
        send.extend_from_slice(&[framed::PUBLISH_BINARY, 1, 2]);
        record(RecordType::Send, &send);
        record(RecordType::Unsubscribe, b"news");
        let mut r = Reassembler::new(Framing::Framed, MessageKind::Text, 100);
        let (mut pools, mut q, mut cmds) =
            (Pools::new(crate::buffer::DEFAULT_POOL_BYTES), OutQueue::default(), Vec::new());
        for b in stream.chunks(3) {
            assert_eq!(r.feed(b, &mut pools, &mut q, &mut cmds), Ok(None));
        }
        assert_eq!(
            cmds,
            vec![
                Command::Subscribe("news".into()),
                Command::Publish {
                    topic: "news".into(),
                    frame: shared_frame(Opcode::Text, b"hi"),
                    exclude_client: true,
                    exclude_ids: Box::default()
                },
                Command::Publish {
                    topic: "news".into(),
                    frame: shared_frame(Opcode::Text, b"x"),
                    exclude_client: false,
                    exclude_ids: vec![7, 9].into()
                },
                Command::Send { id: 7, frame: shared_frame(Opcode::Binary, &[1, 2]) },
                Command::Unsubscribe("news".into()),
            ]
        );
        assert!(q.is_empty());
        let mut bad = Reassembler::new(Framing::Framed, MessageKind::Text, 100);
        let rec = [framed::encode_header(RecordType::Publish, true, 3).as_slice(), &[0, 9, b'x']].concat();
        assert_eq!(
            bad.feed(&rec, &mut pools, &mut q, &mut cmds),
            Err(CodecError::BadCommand("PUBLISH topic longer than the record"))
        );
        let mut bad = Reassembler::new(Framing::Framed, MessageKind::Text, 100);
        let rec = [framed::encode_header(RecordType::Publish, true, 4).as_slice(), &[4, 1, b't', 3]].concat();
        assert_eq!(
            bad.feed(&rec, &mut pools, &mut q, &mut cmds),
            Err(CodecError::BadCommand("PUBLISH exclude list longer than the record"))
        );
        let mut bad = Reassembler::new(Framing::Framed, MessageKind::Text, 100);
        let rec = [framed::encode_header(RecordType::Publish, true, 3).as_slice(), &[0x10, 1, b't']].concat();
        assert_eq!(
            bad.feed(&rec, &mut pools, &mut q, &mut cmds),
            Err(CodecError::BadCommand("reserved PUBLISH flag bits set"))
        );
    }
}
