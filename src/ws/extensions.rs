//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and the negotiation of permessage-deflate
//! (RFC 7692 §7): offers in, the one accepted (if any) and its response out. Pure functions on
//! the header's bytes.
//!
//! Offers are taken in the client's order; the first one this server can honour is accepted.
//! An offer is declined (RFC 7692 §7) when it has a parameter not defined for an offer, a
//! parameter twice, a value out of range, or asks for what this server cannot do: a server
//! window of 8 bits, which zlib refuses for raw deflate (rather than answer something else).
//! A header that does not parse declines everything: the connection goes on uncompressed.

/// How a route compresses (`compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Off,
    /// No context takeover on the server side: one compressor per worker, reset per message,
    /// so a published message is compressed once for every subscriber.
    Shared,
    /// Context takeover: a compressor per connection with this window and memory level.
    Dedicated {
        window_bits: u8,
        mem_level: u8,
    },
}

/// What was agreed with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so the server's inflater holds
    /// nothing between messages. A shared-mode server always asks for it (RFC 7692 §7.1.1.2
    /// lets a server add it to any offer).
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this window (9–15); said in the response when the
    /// offer named it (accepting requires that, §7.1.2.1) or when it is less than 15.
    pub server_max_window_bits: u8,
    server_window_in_response: bool,
    /// Sent in the response only when the client offered it (with or without a value).
    pub client_max_window_bits: Option<u8>,
}

/// Parses the header's values (all `Sec-WebSocket-Extensions` lines, in order) and picks the
/// first permessage-deflate offer that can be honoured with `ours`.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>, ours: Compression) -> Option<Agreed> {
    let (window, takeover) = match ours {
        Compression::Off => return None,
        Compression::Shared => (15, false),
        Compression::Dedicated { window_bits, .. } => (window_bits.clamp(9, 15), true),
    };
    for value in values {
        let Ok(offers) = parse(value) else { return None };
        for offer in offers.iter().filter(|o| o.name.eq_ignore_ascii_case(b"permessage-deflate")) {
            if let Some(agreed) = accept(offer, window, takeover) {
                return Some(agreed);
            }
        }
    }
    None
}

/// One offer's parameters against this server's window and context takeover.
fn accept(offer: &Extension<'_>, window: u8, takeover: bool) -> Option<Agreed> {
    let mut seen: [bool; 4] = [false; 4];
    let mut agreed = Agreed {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: window,
        server_window_in_response: window < 15,
        client_max_window_bits: None,
    };
    for (name, value) in &offer.params {
        let slot = match &name.to_ascii_lowercase()[..] {
            b"server_no_context_takeover" => 0,
            b"client_no_context_takeover" => 1,
            b"server_max_window_bits" => 2,
            b"client_max_window_bits" => 3,
            _ => return None, // not defined for an offer
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None; // the same parameter twice
        }
        match slot {
            0 | 1 if value.is_some() => return None,
            0 => agreed.server_no_context_takeover = true,
            1 => agreed.client_no_context_takeover = true,
            2 => {
                let bits = window_bits(value.as_deref()?)?;
                // zlib cannot deflate raw with a window of 8: decline, never answer larger.
                if bits < 9 {
                    return None;
                }
                agreed.server_max_window_bits = bits.min(window);
                agreed.server_window_in_response = true;
            }
            _ => {
                agreed.client_max_window_bits = Some(match value {
                    None => 15,
                    Some(v) => window_bits(v)?,
                });
            }
        }
    }
    Some(agreed)
}

/// A window size: 8 to 15, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

impl Agreed {
    /// The response header's value.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"permessage-deflate");
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.server_window_in_response {
            out.extend_from_slice(format!("; server_max_window_bits={}", self.server_max_window_bits).as_bytes());
        }
        if let Some(bits) = self.client_max_window_bits {
            out.extend_from_slice(format!("; client_max_window_bits={bits}").as_bytes());
        }
    }
}

/// What a client offers (RFC 7692 §7.1). It always says `client_max_window_bits`, so a
/// server may limit our window (we honour 9–15; asked for 8, which zlib cannot deflate raw,
/// we send every message uncompressed, which §6 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateOffer {
    /// Ask the server to reset its compressor after every message: our inflater then holds
    /// nothing between messages.
    pub server_no_context_takeover: bool,
    /// Promise to reset ours after every message: the server's inflater holds nothing.
    pub client_no_context_takeover: bool,
    /// Ask the server for at most this window (9–15; 15 asks nothing).
    pub server_max_window_bits: u8,
    /// Our compressor's window (9–15), said as the `client_max_window_bits` hint when under 15.
    pub client_max_window_bits: u8,
}

impl Default for DeflateOffer {
    fn default() -> Self {
        DeflateOffer {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateOffer {
    /// The offer's header value.
    pub fn write_offer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"permessage-deflate");
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            out.extend_from_slice(format!("; server_max_window_bits={}", self.server_max_window_bits).as_bytes());
        }
        match self.client_max_window_bits {
            15.. => out.extend_from_slice(b"; client_max_window_bits"),
            bits => out.extend_from_slice(format!("; client_max_window_bits={bits}").as_bytes()),
        }
    }

    /// Checks the server's `Sec-WebSocket-Extensions` lines against this offer (§7.1): `None`
    /// when it accepted no extension, or what it agreed to (as the server states it; a client
    /// uses [`Agreed::seen_from_client`]). Anything we did not offer, a parameter twice, a
    /// value out of range or above what we asked, or a parameter we asked for and the server
    /// left out, fails the connection (§7.2.2: "the client MUST _Fail the WebSocket Connection_").
    pub fn check_answer<'a>(&self, lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<Agreed>, AnswerError> {
        let mut agreed = None;
        for line in lines {
            let list = parse(line).map_err(|_| AnswerError::Invalid("the extensions header does not parse".into()))?;
            for ext in list {
                if !ext.name.eq_ignore_ascii_case(b"permessage-deflate") {
                    return Err(AnswerError::Unoffered(String::from_utf8_lossy(ext.name).into_owned()));
                }
                if agreed.is_some() {
                    return Err(AnswerError::Invalid("permessage-deflate accepted twice".into()));
                }
                agreed = Some(self.check_params(&ext)?);
            }
        }
        Ok(agreed)
    }

    fn check_params(&self, ext: &Extension<'_>) -> Result<Agreed, AnswerError> {
        let bad = |why: String| Err(AnswerError::Invalid(why));
        let mut seen = [false; 4];
        let mut agreed = Agreed {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            server_window_in_response: false,
            client_max_window_bits: None,
        };
        for (name, value) in &ext.params {
            let text = String::from_utf8_lossy(name).into_owned();
            let slot = match &name.to_ascii_lowercase()[..] {
                b"server_no_context_takeover" => 0,
                b"client_no_context_takeover" => 1,
                b"server_max_window_bits" => 2,
                b"client_max_window_bits" => 3,
                _ => return bad(format!("unknown parameter {text}")),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return bad(format!("{text} twice"));
            }
            let bits = match (slot, value) {
                (0 | 1, None) => 0,
                (0 | 1, Some(_)) => return bad(format!("{text} with a value")),
                (_, None) => return bad(format!("{text} without a value")),
                (_, Some(v)) => match window_bits(v) {
                    Some(bits) => bits,
                    None => return bad(format!("{text}={}", String::from_utf8_lossy(v))),
                },
            };
            match slot {
                0 => agreed.server_no_context_takeover = true,
                1 => agreed.client_no_context_takeover = true,
                2 if bits > self.server_max_window_bits => {
                    return bad(format!(
                        "server_max_window_bits={bits}, above the {} offered",
                        self.server_max_window_bits
                    ))
                }
                2 => {
                    agreed.server_max_window_bits = bits;
                    agreed.server_window_in_response = true;
                }
                _ if bits > self.client_max_window_bits => {
                    return bad(format!("client_max_window_bits={bits}, above our {}", self.client_max_window_bits))
                }
                _ => agreed.client_max_window_bits = Some(bits),
            }
        }
        if self.server_no_context_takeover && !agreed.server_no_context_takeover {
            return bad("server_no_context_takeover was asked for and not agreed".into());
        }
        if self.server_max_window_bits < 15 && !agreed.server_window_in_response {
            return bad("server_max_window_bits was asked for and not agreed".into());
        }
        agreed.client_no_context_takeover |= self.client_no_context_takeover;
        Ok(agreed)
    }
}

/// How a server's answer to our offer fails the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// An extension we did not offer.
    Unoffered(String),
    /// permessage-deflate with parameters the offer does not allow.
    Invalid(String),
}

impl Agreed {
    /// The agreement as a client applies it. [`PerMessage`](super::deflate::PerMessage) names
    /// the sides as the server sees them (`server_*`: the sender's compressor, `client_*`: the
    /// receiver's inflater); for a client the sender is the client, so the sides swap.
    pub fn seen_from_client(&self) -> Agreed {
        Agreed {
            server_no_context_takeover: self.client_no_context_takeover,
            client_no_context_takeover: self.server_no_context_takeover,
            server_max_window_bits: self.client_max_window_bits.unwrap_or(15),
            server_window_in_response: false,
            client_max_window_bits: Some(self.server_max_window_bits),
        }
    }
}

/// One extension of the list: its name and parameters (a quoted value unquoted).
#[derive(Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    pub name: &'a [u8],
    pub params: Vec<(&'a [u8], Option<Vec<u8>>)>,
}

/// Why the header does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError;

/// `extension-list = 1#extension`, `extension = token *( ";" param )`,
/// `param = token [ "=" ( token / quoted-string ) ]`, with optional whitespace around the
/// separators. Empty list elements (`a, , b`) are allowed, as `#` rules allow them.
pub fn parse(value: &[u8]) -> Result<Vec<Extension<'_>>, SyntaxError> {
    let mut p = Parser { s: value, i: 0 };
    let mut list = Vec::new();
    loop {
        p.ows();
        if p.eat(b',') {
            continue;
        }
        if p.done() {
            return Ok(list);
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.ows();
            if !p.eat(b';') {
                break;
            }
            p.ows();
            let pname = p.token()?;
            p.ows();
            let value = if p.eat(b'=') {
                p.ows();
                Some(if p.peek() == Some(b'"') { p.quoted()? } else { p.token()?.to_vec() })
            } else {
                None
            };
            params.push((pname, value));
        }
        list.push(Extension { name, params });
        p.ows();
        if !p.done() && !p.eat(b',') {
            return Err(SyntaxError);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Result<&'a [u8], SyntaxError> {
        let start = self.i;
        while self.peek().is_some_and(crate::http::is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(SyntaxError);
        }
        Ok(&self.s[start..self.i])
    }

    fn quoted(&mut self) -> Result<Vec<u8>, SyntaxError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(SyntaxError),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    out.push(self.peek().ok_or(SyntaxError)?);
                    self.i += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEDICATED: Compression = Compression::Dedicated { window_bits: 15, mem_level: 8 };

    fn answer(offer: &str, ours: Compression) -> Option<String> {
        negotiate([offer.as_bytes()], ours).map(|a| {
            let mut out = Vec::new();
            a.write_response(&mut out);
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn negotiation_table() {
        use Compression::Shared;
        let pmd = "permessage-deflate";
        let table: &[(&str, Compression, Option<&str>)] = &[
            // Autobahn 13.1–13.7's offers (accept_no_context_takeover, request_max_window_bits).
            (pmd, DEDICATED, Some(pmd)),
            (pmd, Shared, Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")),
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits",
                DEDICATED,
                Some("permessage-deflate; client_no_context_takeover; client_max_window_bits=15"),
            ),
            ("permessage-deflate; client_max_window_bits", DEDICATED, Some("permessage-deflate; client_max_window_bits=15")),
            ("permessage-deflate; server_no_context_takeover", DEDICATED, Some("permessage-deflate; server_no_context_takeover")),
            ("permessage-deflate; server_max_window_bits=8", DEDICATED, None),
            ("permessage-deflate; server_max_window_bits=9", DEDICATED, Some("permessage-deflate; server_max_window_bits=9")),
            ("permessage-deflate; server_max_window_bits=15", DEDICATED, Some("permessage-deflate; server_max_window_bits=15")),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8, permessage-deflate; server_no_context_takeover, permessage-deflate",
                DEDICATED,
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            // Browsers' offer.
            (
                "permessage-deflate; client_max_window_bits",
                Shared,
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15"),
            ),
            ("permessage-deflate; client_max_window_bits=10", DEDICATED, Some("permessage-deflate; client_max_window_bits=10")),
            ("permessage-deflate; client_no_context_takeover", DEDICATED, Some("permessage-deflate; client_no_context_takeover")),
            // Our window is smaller than 15: said, and never larger than offered.
            (pmd, Compression::Dedicated { window_bits: 12, mem_level: 8 }, Some("permessage-deflate; server_max_window_bits=12")),
            ("permessage-deflate; server_max_window_bits=10", Compression::Dedicated { window_bits: 12, mem_level: 8 }, Some("permessage-deflate; server_max_window_bits=10")),
            // Declined: unknown, duplicate, bad values, values where none belong.
            ("permessage-deflate; foo", DEDICATED, None),
            ("permessage-deflate; client_max_window_bits; client_max_window_bits", DEDICATED, None),
            ("permessage-deflate; server_max_window_bits", DEDICATED, None),
            ("permessage-deflate; server_max_window_bits=16", DEDICATED, None),
            ("permessage-deflate; server_max_window_bits=010", DEDICATED, None),
            ("permessage-deflate; client_max_window_bits=7", DEDICATED, None),
            ("permessage-deflate; server_no_context_takeover=1", DEDICATED, None),
            // The first acceptable offer wins; other extensions are skipped.
            ("x-webkit-deflate-frame, permessage-deflate; foo, permessage-deflate", DEDICATED, Some(pmd)),
            ("permessage-deflate; server_max_window_bits=\"10\"", DEDICATED, Some("permessage-deflate; server_max_window_bits=10")),
            ("PerMessage-Deflate", DEDICATED, Some(pmd)),
            // Off: nothing is ever accepted; garbage: nothing either.
            (pmd, Compression::Off, None),
            ("permessage-deflate; =", DEDICATED, None),
            ("permessage-deflate \"x\"", DEDICATED, None),
            ("permessage-deflate; a=\"unterminated", DEDICATED, None),
        ];
        for (offer, ours, want) in table {
            assert_eq!(answer(offer, *ours).as_deref(), *want, "{offer} with {ours:?}");
        }
    }

    #[test]
    fn a_clients_offer_and_the_answers_it_takes() {
        let plain = DeflateOffer::default();
        let strict = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: 12,
            client_max_window_bits: 10,
        };
        let text = |o: &DeflateOffer| {
            let mut out = Vec::new();
            o.write_offer(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(&plain), "permessage-deflate; client_max_window_bits");
        assert_eq!(
            text(&strict),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=10"
        );
        let check = |o: &DeflateOffer, answer: &str| o.check_answer([answer.as_bytes()]);
        // Autobahn 13.x's answers, and what a client then does.
        let a =
            check(&plain, "permessage-deflate; client_no_context_takeover; client_max_window_bits=9").unwrap().unwrap();
        let ours = a.seen_from_client();
        assert!(ours.server_no_context_takeover && !ours.client_no_context_takeover);
        assert_eq!((ours.server_max_window_bits, ours.client_max_window_bits), (9, Some(15)));
        let a = check(&plain, "permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
            .unwrap()
            .unwrap();
        let ours = a.seen_from_client();
        assert!(!ours.server_no_context_takeover && ours.client_no_context_takeover);
        assert_eq!(ours.server_max_window_bits, 15);
        assert_eq!(check(&plain, ""), Ok(None));
        assert!(check(&strict, "permessage-deflate; server_no_context_takeover; server_max_window_bits=9").is_ok());
        // What fails the connection.
        let invalid = |o: &DeflateOffer, answer: &str| {
            assert!(matches!(check(o, answer), Err(AnswerError::Invalid(_))), "{answer}");
        };
        assert_eq!(
            check(&plain, "x-webkit-deflate-frame"),
            Err(AnswerError::Unoffered("x-webkit-deflate-frame".into()))
        );
        invalid(&plain, "permessage-deflate, permessage-deflate");
        invalid(&plain, "permessage-deflate; foo");
        invalid(&plain, "permessage-deflate; client_max_window_bits");
        invalid(&plain, "permessage-deflate; client_max_window_bits=16");
        invalid(&plain, "permessage-deflate; server_no_context_takeover=1");
        invalid(&plain, "permessage-deflate; server_no_context_takeover; server_no_context_takeover");
        invalid(&plain, "permessage-deflate; =");
        invalid(&strict, "permessage-deflate; server_max_window_bits=12"); // context takeover kept
        invalid(&strict, "permessage-deflate; server_no_context_takeover"); // window not agreed
        invalid(&strict, "permessage-deflate; server_no_context_takeover; server_max_window_bits=13");
        invalid(
            &strict,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11",
        );
    }

    #[test]
    fn header_lines_are_one_list() {
        let lines: [&[u8]; 2] = [b"x-foo", b"permessage-deflate; client_no_context_takeover"];
        let a = negotiate(lines, DEDICATED).unwrap();
        assert!(a.client_no_context_takeover);
    }

    #[test]
    fn parser() {
        let list = parse(b" a ;b= 1 ; c=\"x\\\"y\" ,, d").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, b"a");
        assert_eq!(list[0].params, vec![(&b"b"[..], Some(b"1".to_vec())), (&b"c"[..], Some(b"x\"y".to_vec()))]);
        assert_eq!(list[1], Extension { name: b"d", params: vec![] });
        assert_eq!(parse(b""), Ok(vec![]));
        assert_eq!(parse(b"a b"), Err(SyntaxError));
        assert_eq!(parse(b"a;"), Err(SyntaxError));
    }
}
