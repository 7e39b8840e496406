//! A chat backend for wsgate: every message goes to all the other clients.
//!
//! usage: backend-chat [-R DIR] [-n NAME] [-u USER] [-f raw|lines|framed] [-w]
//!        (defaults: -R /tmp/wsgate -n chat -f lines)
//! With -w, text messages can be commands:
//!   WSHello <name>          -> WSWelcome <name>       (this client is now <name>)
//!   WSPrivate <name> <text> -> <text> to <name> only  (WSUnknown <name> if nobody is)
//!   WSWhois <name>          -> WSIs <name> <address>  (WSUnknown <name> if nobody is)
//! The address is the client's (from the HELLO record) with -f framed, else a connection id.
//!
//! then:  wsgate --route /chat=unix:/tmp/wsgate/chat#lines

#[path = "backend_common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use common::{Framing, Msg, MsgReader};

struct Member {
    writer: UnixStream,
    name: Option<String>,
    address: String,
}

type Room = Arc<Mutex<HashMap<u64, Member>>>;

fn main() {
    let o = common::options("chat", &['w']);
    let commands = o.flags.contains(&'w');
    let listener = common::listen(&o);
    let room: Room = Arc::new(Mutex::new(HashMap::new()));
    for (id, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        let (room, framing) = (room.clone(), o.framing);
        std::thread::spawn(move || serve(id as u64, stream, framing, commands, room));
    }
}

fn serve(id: u64, stream: UnixStream, framing: Framing, commands: bool, room: Room) {
    let Ok(writer) = stream.try_clone() else { return };
    let Ok(mut reader) = MsgReader::new(stream, framing) else { return };
    let address = reader.hello_value("peer").map_or_else(|| format!("connection-{id}"), str::to_string);
    room.lock().unwrap().insert(id, Member { writer, name: None, address });
    while let Ok(Some(msg)) = reader.next() {
        match &msg {
            Msg::Close(_) => break,
            Msg::Text(text) if commands && command(id, text, framing, &room) => {}
            _ => broadcast(id, &msg, framing, &room),
        }
    }
    room.lock().unwrap().remove(&id);
}

fn broadcast(from: u64, msg: &Msg, framing: Framing, room: &Room) {
    let mut room = room.lock().unwrap();
    // A member whose socket fails is dropped; the others carry on.
    room.retain(|id, m| *id == from || common::write_msg(&mut m.writer, framing, msg).is_ok());
}

/// Handles a -w command; `false` if the text is not one (it is then an ordinary message).
fn command(from: u64, text: &str, framing: Framing, room: &Room) -> bool {
    let mut room = room.lock().unwrap();
    let mut words = text.splitn(3, ' ');
    let (verb, name, rest) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next());
    let find = |room: &HashMap<u64, Member>, name: &str| {
        room.iter().find(|(_, m)| m.name.as_deref() == Some(name)).map(|(id, _)| *id)
    };
    let reply = match verb {
        "WSHello" if !name.is_empty() => {
            if let Some(me) = room.get_mut(&from) {
                me.name = Some(name.to_string());
            }
            format!("WSWelcome {name}")
        }
        "WSPrivate" => match (find(&room, name), rest) {
            (Some(to), Some(body)) => {
                if let Some(m) = room.get_mut(&to) {
                    let _ = common::write_msg(&mut m.writer, framing, &Msg::Text(body.to_string()));
                }
                return true;
            }
            _ => format!("WSUnknown {name}"),
        },
        "WSWhois" => match find(&room, name).and_then(|id| room.get(&id)) {
            Some(m) => format!("WSIs {name} {}", m.address),
            None => format!("WSUnknown {name}"),
        },
        _ => return false,
    };
    if let Some(me) = room.get_mut(&from) {
        let _ = common::write_msg(&mut me.writer, framing, &Msg::Text(reply));
    }
    true
}
