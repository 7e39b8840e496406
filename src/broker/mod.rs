//! The token broker (websockets_pro): which connections hold which token, which tokens are
//! registered, and who a routed message `abc1,group/,abc3|Hello` reaches.
//!
//! A token is a topic in an ordered [`Topics`] (token → connection keys), so an exact receiver
//! is one lookup and a group receiver (`group/`, a prefix) is a range of the ordered token
//! names: delivery never scans clients. The registered tokens are a map token → allowed
//! (websockets_pro's `allowsTokens`: unregistering sets `false`), replaced whole when the list
//! is loaded again ([`tokens`]).

pub mod config;
pub mod tokens;

use std::collections::HashMap;

use crate::pubsub::Topics;

/// The token a client holds until it registers one (when the route allows that).
pub const UNREGISTERED: &str = "unregistered";
/// The same, as websockets_pro spells it (with `websockets_pro_quirks`).
pub const UNREGISTERED_QUIRKS: &str = "unregstered";
/// Longest token accepted (from the URL, `RegisterToken:`, the admin API).
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest receivers part of a routed message (hundreds of tokens): resolving a message is
/// bounded work whatever its size.
pub const MAX_RECEIVERS_LEN: usize = 16 << 10;

#[derive(Debug)]
pub struct Broker {
    /// Token → the connections holding it (each holds at most one).
    tokens: Topics,
    registered: HashMap<Box<str>, bool>,
    /// websockets_pro's actual behaviour: a client receives a message when its token is a
    /// substring of the receivers part, and payloads are delivered JSON-quoted.
    pub quirks: bool,
    /// Other workers or nodes hold tokens too: a routed message travels on to them.
    spread: bool,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    TooLong,
    /// `,` and `|` separate receivers and payload; control characters have no place in a name.
    BadCharacter,
    NotRegistered,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Empty => "empty token",
            TokenError::TooLong => "token too long",
            TokenError::BadCharacter => "a token may not contain ',', '|' or control characters",
            TokenError::NotRegistered => "token not registered",
        }
    }
}

/// Checks a token's form (not whether it is registered).
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    if token.chars().any(|c| c == ',' || c == '|' || c.is_control()) {
        return Err(TokenError::BadCharacter);
    }
    Ok(())
}

/// Splits a routed message into its receivers part and payload: `None` for a message without
/// `|` (a service message).
pub fn split_routed(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let bar = memchr::memchr(b'|', message)?;
    Some((&message[..bar], &message[bar + 1..]))
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new(false)
    }
}

impl Broker {
    pub fn new(quirks: bool) -> Broker {
        Broker { tokens: Topics::ordered(), registered: HashMap::new(), quirks, spread: false }
    }

    /// Whether routed messages also go to other workers or nodes.
    pub fn spreads(&self) -> bool {
        self.spread
    }

    pub fn set_spread(&mut self, spread: bool) {
        self.spread = spread;
    }

    pub fn is_registered(&self, token: &str) -> bool {
        self.registered.get(token) == Some(&true)
    }

    /// Registers a token.
    pub fn register(&mut self, token: &str) {
        self.registered.insert(token.into(), true);
    }

    /// Unregisters a token: listed as `false` from now on, as websockets_pro does (clients
    /// holding it keep it until they register another).
    pub fn unregister(&mut self, token: &str) {
        self.registered.insert(token.into(), false);
    }

    /// Replaces the token list with a freshly loaded one.
    pub fn replace_registered(&mut self, tokens: HashMap<Box<str>, bool>) {
        self.registered = tokens;
    }

    /// Every listed token and whether it is registered.
    pub fn registered(&self) -> impl Iterator<Item = (&str, bool)> {
        self.registered.iter().map(|(t, &on)| (&**t, on))
    }

    /// Registered tokens (listed as `true`).
    pub fn registered_count(&self) -> usize {
        self.registered.values().filter(|&&on| on).count()
    }

    /// The token a client without one holds.
    pub fn unregistered_token(&self) -> &'static str {
        if self.quirks {
            UNREGISTERED_QUIRKS
        } else {
            UNREGISTERED
        }
    }

    /// Connection `key` now holds `token` (and no other).
    pub fn hold(&mut self, key: usize, token: &str) {
        self.tokens.remove_connection(key);
        // One token per connection: the limit is never reached.
        let _ = self.tokens.subscribe(key, token, 1);
    }

    /// Connection `key` is going away.
    pub fn release(&mut self, key: usize) {
        self.tokens.remove_connection(key);
    }

    /// The connections holding exactly `token` (whatever the quirks).
    pub fn holders(&self, token: &str) -> Vec<usize> {
        self.tokens.find(token).map(|t| self.tokens.members(t).collect()).unwrap_or_default()
    }

    /// Distinct tokens held and connections holding one.
    pub fn held(&self) -> (usize, usize) {
        let (subs, tokens) = self.tokens.len();
        (tokens, subs)
    }

    /// The keys of the connections `receivers` names, each once, in `out` (cleared first).
    /// `a,b` are exact tokens and `group/` (ending in `/`) every token with that prefix; with
    /// quirks, every connection whose token occurs anywhere in `receivers`. A receivers part
    /// over [`MAX_RECEIVERS_LEN`] names nobody (the caller refuses it first).
    pub fn receivers(&self, receivers: &[u8], out: &mut Vec<usize>) {
        out.clear();
        if receivers.len() > MAX_RECEIVERS_LEN {
            return;
        }
        let Ok(receivers) = std::str::from_utf8(receivers) else { return };
        let mut lists = 0;
        if self.quirks {
            for (_, topic) in self.tokens.with_prefix("") {
                let name = self.tokens.name(topic);
                if !name.is_empty() && memchr::memmem::find(receivers.as_bytes(), name.as_bytes()).is_some() {
                    out.extend(self.tokens.members(topic));
                    lists += 1;
                }
            }
        } else {
            for entry in receivers.split(',').map(|e| e.trim_matches(' ')).filter(|e| !e.is_empty()) {
                if entry.ends_with('/') {
                    for (_, topic) in self.tokens.with_prefix(entry) {
                        out.extend(self.tokens.members(topic));
                        lists += 1;
                    }
                } else if let Some(topic) = self.tokens.find(entry) {
                    out.extend(self.tokens.members(topic));
                    lists += 1;
                }
            }
        }
        // A connection holds one token, so one list never repeats a key; several lists can
        // (`abc1,abc1`, `group/,group/a`).
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// A payload as websockets_pro delivers it (`conn.WriteJSON(string)` in Go): a JSON string
/// with `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u....`, and a newline.
pub fn quirks_payload(payload: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(payload);
    let mut out = Vec::with_capacity(payload.len() + 8);
    let _ = serde_json::to_writer(&mut out, &*text);
    let json = String::from_utf8(out).unwrap_or_default();
    let mut escaped = String::with_capacity(json.len() + 1);
    for c in json.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    escaped.push('\n');
    escaped.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(b: &Broker, receivers: &str) -> Vec<usize> {
        let mut out = Vec::new();
        b.receivers(receivers.as_bytes(), &mut out);
        out.sort_unstable();
        out
    }

    fn broker(quirks: bool) -> Broker {
        let mut b = Broker::new(quirks);
        for (key, token) in
            [(1, "abc1"), (2, "abc2"), (3, "abc3"), (4, "group/item1"), (5, "group/item2"), (6, "groupie")]
        {
            b.hold(key, token);
        }
        b.hold(7, "abc1");
        b
    }

    #[test]
    fn receivers_exact_group_and_dedup() {
        let b = broker(false);
        assert_eq!(held(&b, "abc1,group/,abc3"), [1, 3, 4, 5, 7]);
        assert_eq!(held(&b, "abc1"), [1, 7]);
        assert_eq!(held(&b, "abc1,abc1, group/item1 ,group/"), [1, 4, 5, 7]);
        assert_eq!(held(&b, "group"), Vec::<usize>::new(), "no prefix without the slash");
        assert_eq!(held(&b, "abc"), Vec::<usize>::new(), "no substring match by default");
        assert_eq!(held(&b, ""), Vec::<usize>::new());
        assert_eq!(held(&b, ",,,"), Vec::<usize>::new());
    }

    #[test]
    fn quirks_match_by_substring() {
        let b = broker(true);
        assert_eq!(b.holders("abc"), Vec::<usize>::new(), "holders are exact, quirks or not");
        // "abc1" and "abc3" occur; "group/item1" does not occur in "group/".
        assert_eq!(held(&b, "abc1,group/,abc3"), [1, 3, 7]);
        assert_eq!(held(&b, "xgroup/item2x"), [5]);
    }

    #[test]
    fn a_token_moves_and_goes() {
        let mut b = broker(false);
        b.hold(1, "abc2");
        assert_eq!(held(&b, "abc1"), [7]);
        assert_eq!(held(&b, "abc2"), [1, 2]);
        b.release(7);
        assert_eq!(held(&b, "abc1"), Vec::<usize>::new());
        assert_eq!(b.held(), (5, 6));
    }

    #[test]
    fn routed_messages_split_at_the_first_bar() {
        assert_eq!(split_routed(b"a,b|x|y"), Some((&b"a,b"[..], &b"x|y"[..])));
        assert_eq!(split_routed(b"hello"), None);
        assert_eq!(split_routed(b"|"), Some((&b""[..], &b""[..])));
    }

    #[test]
    fn tokens_are_checked() {
        assert_eq!(check_token("abc1"), Ok(()));
        assert_eq!(check_token(""), Err(TokenError::Empty));
        assert_eq!(check_token("a,b"), Err(TokenError::BadCharacter));
        assert_eq!(check_token("a|b"), Err(TokenError::BadCharacter));
        assert_eq!(check_token("a\nb"), Err(TokenError::BadCharacter));
        assert_eq!(check_token(&"x".repeat(257)), Err(TokenError::TooLong));
    }

    #[test]
    fn quirks_payload_is_go_json() {
        assert_eq!(quirks_payload(b"Hello"), b"\"Hello\"\n");
        assert_eq!(quirks_payload(b"<a&b>\"\n"), b"\"\\u003ca\\u0026b\\u003e\\\"\\n\"\n");
    }
}
