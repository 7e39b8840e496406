//! The Autobahn TestSuite's client agent: runs every case of a `wstest -m fuzzingserver` as an
//! echo client on `wsgate::client`, then asks the suite to write its reports.
//! usage: autobahn-client [BASE_URL] [AGENT]      (default ws://127.0.0.1:9011 wsgate)
#![allow(clippy::disallowed_methods)] // a test client with its own clock

use std::time::Duration;

use wsgate::client::{Client, ClientError, Message, Options};
use wsgate::ws::extensions::DeflateOffer;

/// The longest a case may leave the client waiting for its next frame.
const CASE_WAIT: Duration = Duration::from_secs(60);

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9011".into());
    let agent = args.next().unwrap_or_else(|| "wsgate".into());
    // permessage-deflate offered on every case: cases 12 and 13 accept it (with the server
    // asking for our context takeover off and our window at 9 or 15), the others decline it.
    let options = Options { max_message: 64 << 20, compress: Some(DeflateOffer::default()), ..Options::default() };
    let count = {
        let mut ws = Client::open(&format!("{base}/getCaseCount"), &options).expect("getCaseCount");
        match ws.receive(Some(CASE_WAIT)) {
            Ok(Message::Text(n)) => n.trim().parse::<u32>().expect("a case count"),
            other => panic!("getCaseCount: {other:?}"),
        }
    };
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let mut ws = match Client::open(&url, &options) {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("case {case}: {e}");
                continue;
            }
        };
        loop {
            let echoed = match ws.receive(Some(CASE_WAIT)) {
                Ok(Message::Text(t)) => ws.send_text(&t),
                Ok(Message::Binary(b)) => ws.send_binary(&b),
                // Closed (the handshake done), failed with a close code, or lost: the case is over.
                Err(ClientError::Closed { .. } | ClientError::Protocol { .. } | ClientError::Io(_)) => break,
                Err(e) => {
                    eprintln!("case {case}: {e}");
                    break;
                }
            };
            if let Err(e) = echoed {
                if !matches!(e, ClientError::Closed { .. } | ClientError::Io(_)) {
                    eprintln!("case {case}: {e}");
                }
                // What the server sends next (its close) ends the case.
            }
        }
        ws.finish(Duration::from_secs(2));
    }
    let mut ws = Client::open(&format!("{base}/updateReports?agent={agent}"), &options).expect("updateReports");
    while ws.receive(Some(CASE_WAIT)).is_ok() {}
    eprintln!("{count} cases run");
}
