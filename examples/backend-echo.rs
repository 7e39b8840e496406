//! An echo backend for wsgate: every message comes back to its sender.
//!
//! usage: backend-echo [-R DIR] [-n NAME] [-u USER] [-f raw|lines|framed]
//!        (defaults: -R /tmp/wsgate -n echo -f lines)
//! then:  wsgate --route /echo-backend=unix:/tmp/wsgate/echo#lines

#[path = "backend_common/mod.rs"]
mod common;

use common::{Msg, MsgReader};

fn main() {
    let o = common::options("echo", &[]);
    let listener = common::listen(&o);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let framing = o.framing;
        std::thread::spawn(move || {
            let mut writer = stream.try_clone().expect("clone the stream");
            let Ok(mut reader) = MsgReader::new(stream, framing) else { return };
            while let Ok(Some(msg)) = reader.next() {
                let closing = matches!(msg, Msg::Close(_));
                if common::write_msg(&mut writer, framing, &msg).is_err() || closing {
                    break;
                }
            }
        });
    }
}
