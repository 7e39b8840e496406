//! A chat backend for wsgate: every message goes to all the other clients of the room. The
//! gateway does the fan-out: on connect the backend SUBSCRIBEs its client to the room (named
//! by the request path), and each message is one PUBLISH record that wsgate encodes once and
//! delivers to every member but the sender. The backend keeps no list of clients, only a
//! directory of names for the commands.
//!
//! usage: backend-chat [-R DIR] [-n NAME] [-u USER] [-w]     (defaults: -R /tmp/wsgate -n chat)
//! With -w, text messages can be commands:
//!   WSHello <name>          -> WSWelcome <name>       (this client is now <name>)
//!   WSPrivate <name> <text> -> <text> to <name> only  (a SEND record; WSUnknown <name> if nobody is)
//!   WSWhois <name>          -> WSIs <name> <address>  (WSUnknown <name> if nobody is)
//!
//! then:  wsgate --route /chat=unix:/tmp/wsgate/chat#framed

#[path = "backend_common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use common::{Framing, Msg, MsgReader};

/// Who is called what: name → (connection id, client address).
type Directory = Arc<Mutex<HashMap<String, (u64, String)>>>;

fn main() {
    let mut o = common::options("chat", &['w']);
    if o.framing != Framing::Lines && o.framing != Framing::Framed {
        eprintln!("backend-chat speaks the framed protocol only (its records drive the fan-out)");
        std::process::exit(2);
    }
    o.framing = Framing::Framed;
    let commands = o.flags.contains(&'w');
    let listener = common::listen(&o);
    let names: Directory = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let names = names.clone();
        std::thread::spawn(move || serve(stream, commands, names));
    }
}

fn serve(stream: UnixStream, commands: bool, names: Directory) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let Ok(mut reader) = MsgReader::new(stream, Framing::Framed) else { return };
    let id: u64 = reader.hello_value("id").and_then(|v| v.parse().ok()).unwrap_or(0);
    let address = reader.hello_value("peer").unwrap_or("-").to_string();
    let room = format!("chat:{}", reader.hello_value("path").unwrap_or("/"));
    if common::subscribe(&mut writer, &room).is_err() {
        return;
    }
    let mut my_name = None;
    while let Ok(Some(msg)) = reader.next() {
        let sent = match &msg {
            Msg::Close(_) => break,
            Msg::Text(text) if commands => match command(id, &address, text, &names, &mut my_name) {
                Some(Reply::ToMe(reply)) => common::write_msg(&mut writer, Framing::Framed, &Msg::Text(reply)),
                Some(Reply::To(to, body)) => common::send_to(&mut writer, to, &body),
                None => common::publish(&mut writer, &room, &msg, true),
            },
            _ => common::publish(&mut writer, &room, &msg, true),
        };
        if sent.is_err() {
            break;
        }
    }
    if let Some(name) = my_name {
        names.lock().unwrap().remove(&name);
    }
}

enum Reply {
    ToMe(String),
    To(u64, String),
}

/// Handles a -w command; `None` if the text is not one (it is then an ordinary message).
fn command(id: u64, address: &str, text: &str, names: &Directory, my_name: &mut Option<String>) -> Option<Reply> {
    let mut names = names.lock().unwrap();
    let mut words = text.splitn(3, ' ');
    let (verb, name, rest) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next());
    Some(match verb {
        "WSHello" if !name.is_empty() => {
            if let Some(old) = my_name.replace(name.to_string()) {
                names.remove(&old);
            }
            names.insert(name.to_string(), (id, address.to_string()));
            Reply::ToMe(format!("WSWelcome {name}"))
        }
        "WSPrivate" => match (names.get(name), rest) {
            (Some((to, _)), Some(body)) => Reply::To(*to, body.to_string()),
            _ => Reply::ToMe(format!("WSUnknown {name}")),
        },
        "WSWhois" => match names.get(name) {
            Some((_, address)) => Reply::ToMe(format!("WSIs {name} {address}")),
            None => Reply::ToMe(format!("WSUnknown {name}")),
        },
        _ => return None,
    })
}
