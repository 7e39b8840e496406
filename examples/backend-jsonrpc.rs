//! A JSON-RPC 2.0 backend for wsgate: each WebSocket message is a request (or a batch), each
//! reply a response (none for notifications).
//!
//! usage: backend-jsonrpc [-R DIR] [-n NAME] [-u USER] [-f raw|lines|framed]
//!        (defaults: -R /tmp/wsgate -n jsonrpc -f lines)
//! then:  wsgate --route /rpc=unix:/tmp/wsgate/jsonrpc#lines
//!
//! Methods:
//!   echo(params)                  -> params
//!   add([numbers...])             -> their sum
//!   hello({"name": string})       -> "Hello, <name>!"
//! Errors: -32700 parse error, -32600 invalid request, -32601 method not found,
//!         -32602 invalid params, -32603 internal error (a sum that is not finite).

#[path = "backend_common/mod.rs"]
mod common;

use common::{Msg, MsgReader};

fn main() {
    let mut o = common::options("jsonrpc", &[]);
    if !std::env::args().any(|a| a == "-f") {
        o.framing = common::Framing::Lines;
    }
    let listener = common::listen(&o);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let framing = o.framing;
        std::thread::spawn(move || {
            let Ok(mut writer) = stream.try_clone() else { return };
            let Ok(mut reader) = MsgReader::new(stream, framing) else { return };
            while let Ok(Some(msg)) = reader.next() {
                let text = match msg {
                    Msg::Text(t) => t,
                    Msg::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Msg::Close(_) => break,
                };
                if let Some(reply) = handle(&text) {
                    if common::write_msg(&mut writer, framing, &Msg::Text(reply)).is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// One message in, the response text out (`None` for notifications only).
fn handle(text: &str) -> Option<String> {
    let value = match json::parse(text) {
        Ok(v) => v,
        Err(_) => return Some(error(&json::Value::Null, -32700, "Parse error").to_string()),
    };
    match value {
        json::Value::Array(items) if items.is_empty() => {
            Some(error(&json::Value::Null, -32600, "Invalid Request").to_string())
        }
        json::Value::Array(items) => {
            let replies: Vec<json::Value> = items.iter().filter_map(call).collect();
            (!replies.is_empty()).then(|| json::Value::Array(replies).to_string())
        }
        single => call(&single).map(|r| r.to_string()),
    }
}

fn call(request: &json::Value) -> Option<json::Value> {
    use json::Value;
    let Value::Object(fields) = request else {
        return Some(error(&Value::Null, -32600, "Invalid Request"));
    };
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let id = get("id");
    let id_ok = matches!(id, None | Some(Value::Null | Value::Number(_) | Value::String(_)));
    let version_ok = matches!(get("jsonrpc"), Some(Value::String(v)) if v == "2.0");
    let (Some(Value::String(method)), true, true) = (get("method"), version_ok, id_ok) else {
        return Some(error(id.unwrap_or(&Value::Null), -32600, "Invalid Request"));
    };
    let params = get("params");
    let result = match method.as_str() {
        "echo" => Ok(params.cloned().unwrap_or(Value::Null)),
        "add" => match params {
            Some(Value::Array(xs)) if xs.iter().all(|x| matches!(x, Value::Number(_))) => {
                let sum: f64 = xs.iter().map(|x| if let Value::Number(n) = x { *n } else { 0.0 }).sum();
                if sum.is_finite() {
                    Ok(Value::Number(sum))
                } else {
                    Err((-32603, "Internal error: the sum is not a finite number"))
                }
            }
            _ => Err((-32602, "Invalid params: expected an array of numbers")),
        },
        "hello" => match params {
            Some(Value::Object(p)) => match p.iter().find(|(k, _)| k == "name") {
                Some((_, Value::String(name))) => Ok(Value::String(format!("Hello, {name}!"))),
                _ => Err((-32602, "Invalid params: expected {\"name\": string}")),
            },
            _ => Err((-32602, "Invalid params: expected {\"name\": string}")),
        },
        _ => Err((-32601, "Method not found")),
    };
    // A request without an id is a notification: no response, even for errors.
    let id = id?;
    Some(match result {
        Ok(r) => Value::Object(vec![
            ("jsonrpc".into(), Value::String("2.0".into())),
            ("result".into(), r),
            ("id".into(), id.clone()),
        ]),
        Err((code, message)) => error(id, code, message),
    })
}

fn error(id: &json::Value, code: i64, message: &str) -> json::Value {
    use json::Value;
    Value::Object(vec![
        ("jsonrpc".into(), Value::String("2.0".into())),
        (
            "error".into(),
            Value::Object(vec![
                ("code".into(), Value::Number(code as f64)),
                ("message".into(), Value::String(message.into())),
            ]),
        ),
        ("id".into(), id.clone()),
    ])
}

/// Just enough JSON (RFC 8259) for the example, with a nesting limit against hostile input.
mod json {
    use std::fmt;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    const MAX_DEPTH: usize = 64;

    pub fn parse(text: &str) -> Result<Value, ()> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i == p.s.len() {
            Ok(v)
        } else {
            Err(())
        }
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        fn eat(&mut self, lit: &[u8]) -> Result<(), ()> {
            if self.s.get(self.i..self.i + lit.len()) == Some(lit) {
                self.i += lit.len();
                Ok(())
            } else {
                Err(())
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, ()> {
            if depth > MAX_DEPTH {
                return Err(());
            }
            self.ws();
            match self.s.get(self.i).ok_or(())? {
                b'n' => self.eat(b"null").map(|_| Value::Null),
                b't' => self.eat(b"true").map(|_| Value::Bool(true)),
                b'f' => self.eat(b"false").map(|_| Value::Bool(false)),
                b'"' => self.string().map(Value::String),
                b'[' => {
                    self.i += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.eat(b"]").is_ok() {
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        if self.eat(b",").is_ok() {
                            continue;
                        }
                        self.eat(b"]")?;
                        return Ok(Value::Array(items));
                    }
                }
                b'{' => {
                    self.i += 1;
                    let mut fields = Vec::new();
                    self.ws();
                    if self.eat(b"}").is_ok() {
                        return Ok(Value::Object(fields));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.ws();
                        self.eat(b":")?;
                        fields.push((key, self.value(depth + 1)?));
                        self.ws();
                        if self.eat(b",").is_ok() {
                            continue;
                        }
                        self.eat(b"}")?;
                        return Ok(Value::Object(fields));
                    }
                }
                _ => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value, ()> {
            let start = self.i;
            while matches!(self.s.get(self.i), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| ())?;
            // JSON forbids what Rust accepts beyond it: leading '+', "inf", bare '.', "01".
            let digits = text.strip_prefix('-').unwrap_or(text);
            let valid_start = digits.starts_with(|c: char| c.is_ascii_digit())
                && !(digits.starts_with('0') && digits[1..].starts_with(|c: char| c.is_ascii_digit()));
            if !valid_start || text.ends_with('.') || text.contains(".e") || text.contains(".E") {
                return Err(());
            }
            text.parse::<f64>().map(Value::Number).map_err(|_| ())
        }

        fn string(&mut self) -> Result<String, ()> {
            self.eat(b"\"")?;
            let mut out = String::new();
            loop {
                let c = *self.s.get(self.i).ok_or(())?;
                self.i += 1;
                match c {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let e = *self.s.get(self.i).ok_or(())?;
                        self.i += 1;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let hi = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&hi) {
                                    self.eat(b"\\u")?;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(());
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    hi
                                };
                                out.push(char::from_u32(code).ok_or(())?);
                            }
                            _ => return Err(()),
                        }
                    }
                    0..=0x1F => return Err(()),
                    _ => {
                        // Copy one UTF-8 character (the input is a &str, so it is valid).
                        let start = self.i - 1;
                        let mut end = self.i;
                        while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                            end += 1;
                        }
                        out.push_str(std::str::from_utf8(&self.s[start..end]).map_err(|_| ())?);
                        self.i = end;
                    }
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, ()> {
            let digits = self.s.get(self.i..self.i + 4).ok_or(())?;
            self.i += 4;
            u32::from_str_radix(std::str::from_utf8(digits).map_err(|_| ())?, 16).map_err(|_| ())
        }
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Value::Null => f.write_str("null"),
                Value::Bool(b) => write!(f, "{b}"),
                Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
                Value::Number(n) => write!(f, "{n}"),
                Value::String(s) => write_string(f, s),
                Value::Array(items) => {
                    f.write_str("[")?;
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str("]")
                }
                Value::Object(fields) => {
                    f.write_str("{")?;
                    for (i, (k, v)) in fields.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write_string(f, k)?;
                        write!(f, ":{v}")?;
                    }
                    f.write_str("}")
                }
            }
        }
    }

    fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
        f.write_str("\"")?;
        for c in s.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}
