//! JWT connection and channel tokens through the real binary, with tokens made by an
//! independent implementation (Debian's PyJWT on `cryptography`): HS256, ES256, RS256/PS256
//! from a JWKS, EdDSA by `kid`; the refusals (missing, expired, not yet valid, wrong audience,
//! `alg: none`, an HMAC made with the public key, unknown `kid`, a channel token as a
//! connection token); pubsub's `connect` and `refresh`, expiry closing with 3000, the topics
//! claim, private topics and channel tokens, the user in presence, the access line and
//! `/api/clients`; a JWKS rotation while clients stay connected.
#![allow(clippy::disallowed_methods)] // tests time real servers; the rule is for the server's code

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Makes keys and tokens with PyJWT. `keys DIR` writes the key files; `mint` reads a JSON
/// list of `[alg, key file or null, claims, header]` and prints one token per line;
/// `hmac-with FILE CLAIMS` signs HS256 with any bytes as the key (PyJWT refuses a PEM key as
/// an HMAC secret, which is the attack we want to make).
const PY: &str = r#"
import sys, json, hmac, hashlib, base64, jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa, ed25519
from cryptography.hazmat.primitives import serialization as s

def pem(private, d, name):
    open(f"{d}/{name}.pem", "wb").write(private.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    open(f"{d}/{name}.pub.pem", "wb").write(private.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))

cmd = sys.argv[1]
if cmd == "keys":
    d = sys.argv[2]
    pem(ec.generate_private_key(ec.SECP256R1()), d, "ec")
    pem(ed25519.Ed25519PrivateKey.generate(), d, "ed")
    for kid in ["r1", "r2"]:
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem(k, d, kid)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
        jwk.update(kid=kid, use="sig")
        open(f"{d}/{kid}.jwk.json", "w").write(json.dumps(jwk))
elif cmd == "mint":
    for alg, key, claims, header in json.load(sys.stdin):
        key = open(key, "rb").read() if key else None
        print(jwt.encode(claims, key, algorithm=alg, headers=header or None))
elif cmd == "hmac-with":
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(sys.argv[3].encode())
    mac = hmac.new(open(sys.argv[2], "rb").read(), signing.encode(), hashlib.sha256).digest()
    print(signing + "." + b64(mac))
"#;

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(tag: &str) -> Keys {
        require_all(&[&PYTHON3_JWT, &PYTHON3_CRYPTOGRAPHY]);
        let dir = std::env::temp_dir().join(format!("wsgate-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mint_tokens.py"), PY).unwrap();
        // The server drops the file's final newline (`echo secret > file`); PyJWT signs with
        // the bytes it is given, so it gets them without.
        std::fs::write(dir.join("hs.secret"), "a shared secret of more than 32 bytes\n").unwrap();
        std::fs::write(dir.join("hs.raw"), "a shared secret of more than 32 bytes").unwrap();
        let keys = Keys { dir };
        keys.py(&["keys", keys.path("").to_str().unwrap()], "");
        keys.jwks(&["r1"]);
        keys
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn py(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(PYTHON)
            .arg(self.path("mint_tokens.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "mint_tokens.py {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// The JWKS file holds these RSA keys.
    fn jwks(&self, kids: &[&str]) {
        let keys: Vec<Value> = kids
            .iter()
            .map(|k| {
                serde_json::from_str(&std::fs::read_to_string(self.path(&format!("{k}.jwk.json"))).unwrap()).unwrap()
            })
            .collect();
        let tmp = self.path("jwks.json.tmp");
        std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(tmp, self.path("jwks.json")).unwrap();
    }

    /// Tokens, one per `(alg, key file, claims, header)`.
    fn mint(&self, specs: &[(&str, Option<&str>, Value, Value)]) -> Vec<String> {
        let list: Vec<Value> = specs
            .iter()
            .map(|(alg, key, claims, header)| json!([alg, key.map(|k| self.path(k)), claims, header]))
            .collect();
        self.py(&["mint"], &Value::from(list).to_string()).lines().map(str::to_string).collect()
    }

    fn one(&self, alg: &str, key: &str, claims: Value) -> String {
        self.mint(&[(alg, Some(key), claims, Value::Null)]).remove(0)
    }

    fn config(&self, extra: &str) -> String {
        let p = |n: &str| self.path(n).display().to_string();
        format!(
            "[limits]\nhandshake_timeout = \"1s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[jwt]\nsecret = \"file:{}\"\npublic_key = \"file:{}\"\njwks = \"file:{}\"\njwks_refresh = \"1s\"\nleeway = \"0s\"\naudience = \"wsgate-test\"\nmax_token_size = \"1KiB\"\n\n[[jwt.key]]\nkid = \"ed\"\npublic_key = \"file:{}\"\n\n[[route]]\npath = \"/echo\"\napp = \"echo\"\nauth = \"jwt\"\n\n[[route]]\npath = \"/ps\"\napp = \"pubsub\"\nauth = \"jwt\"\npresence = true\nprivate = [\"private:*\"]\n\n[[route]]\npath = \"/open\"\napp = \"echo\"\n{extra}",
            p("hs.secret"),
            p("ec.pub.pem"),
            p("jwks.json"),
            p("ed.pub.pem"),
        )
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The upgrade's status line and the response's body (the reason for a refusal).
fn upgrade(server: &Server, target: &str, headers: &str) -> (u16, String) {
    let request = upgrade_request(target, headers);
    let response = http_exchange(server.addr, request.as_bytes());
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn echo_once(url: &str, options: &wsgate::client::Options) {
    let mut ws = ws_open_with(url, options);
    ws.send_text("hello").unwrap();
    assert_eq!(ws_text(&mut ws), "hello");
}

fn bearer(token: &str) -> wsgate::client::Options {
    wsgate::client::Options { headers: vec![("Authorization".into(), format!("Bearer {token}"))], ..Default::default() }
}

fn ask(ws: &mut Ws, req: Value) -> Value {
    ws.send_text(&req.to_string()).unwrap();
    ws_json(ws)
}

#[test]
fn tokens_made_by_pyjwt_open_the_upgrade_and_bad_ones_are_refused_with_the_reason() {
    let keys = Keys::new("upgrade");
    let server = Server::with_config(&keys.config(""), &[]);
    let t = now();
    let claims = |sub: &str| json!({"sub": sub, "exp": t + 600, "aud": "wsgate-test"});
    let good = keys.mint(&[
        ("HS256", Some("hs.raw"), claims("hs-user"), Value::Null),
        ("HS512", Some("hs.raw"), claims("hs512-user"), Value::Null),
        ("ES256", Some("ec.pem"), claims("es-user"), Value::Null),
        ("RS256", Some("r1.pem"), claims("rs-user"), json!({"kid":"r1"})),
        ("PS256", Some("r1.pem"), claims("ps-user"), json!({"kid":"r1"})),
        ("EdDSA", Some("ed.pem"), claims("ed-user"), json!({"kid":"ed"})),
    ]);
    for token in &good {
        echo_once(&server.url(&format!("/echo?token={token}")), &Default::default());
        echo_once(&server.url("/echo"), &bearer(token));
    }
    for user in ["hs-user", "hs512-user", "es-user", "rs-user", "ps-user", "ed-user"] {
        server.wait_log(&format!("user=\"{user}\" /echo status=101"));
    }

    let refused = |target: &str, headers: &str| upgrade(&server, target, headers);
    let with = |token: &str| format!("/echo?token={token}");
    assert_eq!(refused("/echo", "").0, 401);
    assert!(refused("/echo", "").1.contains("a token is required"));
    let expired = keys.one("HS256", "hs.raw", json!({"sub":"u","exp": t - 1}));
    assert_eq!(refused(&with(&expired), ""), (401, "token expired".into()));
    let early = keys.one("HS256", "hs.raw", json!({"sub":"u","nbf": t + 600}));
    assert_eq!(refused(&with(&early), ""), (401, "token not valid yet (nbf)".into()));
    let future = keys.one("HS256", "hs.raw", json!({"sub":"u","iat": t + 600}));
    assert_eq!(refused(&with(&future), ""), (401, "token issued in the future (iat)".into()));
    let elsewhere = keys.one("HS256", "hs.raw", json!({"sub":"u","aud":"another-app"}));
    assert_eq!(refused(&with(&elsewhere), ""), (401, "token not meant for this audience (aud)".into()));
    let unsigned = keys.mint(&[("none", None, json!({"sub":"admin"}), Value::Null)]).remove(0);
    assert!(refused(&with(&unsigned), "").1.starts_with("malformed token"), "alg none");
    let confused = keys.py(&["hmac-with", keys.path("ec.pub.pem").to_str().unwrap(), r#"{"sub":"admin"}"#], "");
    assert_eq!(
        refused(&with(confused.trim()), ""),
        (401, "bad signature".into()),
        "HS256 keyed with the EC public key"
    );
    let rs_as_hs = keys.py(&["hmac-with", keys.path("r1.pub.pem").to_str().unwrap(), r#"{"sub":"admin"}"#], "");
    assert_eq!(refused(&with(rs_as_hs.trim()), "").0, 401);
    let unknown = keys.mint(&[("RS256", Some("r2.pem"), json!({"sub":"u"}), json!({"kid":"r2"}))]).remove(0);
    assert_eq!(refused(&with(&unknown), ""), (401, "unknown kid \"r2\"".into()));
    let channel = keys.one("HS256", "hs.raw", json!({"sub":"u","channel":"private:1"}));
    assert_eq!(refused(&with(&channel), ""), (401, "a channel token cannot open a connection".into()));
    let (status, _) = refused("/echo", "Authorization: Basic dXNlcjpwYXNz\r\n");
    assert_eq!(status, 401, "credentials of another kind are not a missing token");
    assert!(refused(&with("not.a.token"), "").1.starts_with("malformed token"));
    assert!(refused(&with(&"x".repeat(2000)), "").1.contains("max_token_size"));
    let response = http_exchange(server.addr, upgrade_request("/echo", "").as_bytes());
    assert!(response.contains("WWW-Authenticate: Bearer error=\"invalid_token\""), "{response}");
    // Routes without auth are as before.
    echo_once(&server.url("/open"), &Default::default());
    wait_metrics(&server, &["wsgate_auth_refusals_total 15"]);
    server.wait_log("token refused: unknown kid");
}

#[test]
fn pubsub_connect_refresh_expiry_topics_presence_and_channel_tokens() {
    let keys = Keys::new("pubsub");
    let server = Server::with_config(&keys.config(""), &[]);
    let t = now();
    let alice = keys.one(
        "ES256",
        "ec.pem",
        json!({"sub":"alice","exp": t + 3,"topics":["news","private:*"],"info":{"name":"Alice"}}),
    );

    // A browser's way: no token in the request, `connect` first.
    let mut a = ws_open(&server.url("/ps"));
    assert_eq!(
        ask(&mut a, json!({"op":"connect","token": alice})),
        json!({"op":"connected","user":"alice","expires": t + 3})
    );
    assert_eq!(ask(&mut a, json!({"op":"subscribe","topic":"news"})), json!({"op":"subscribed","topic":"news"}));
    let v = ask(&mut a, json!({"op":"subscribe","topic":"sports"}));
    assert_eq!((v["code"].as_u64(), v["message"].as_str()), (Some(403), Some("topic not allowed by the token")));
    let v = ask(&mut a, json!({"op":"publish","topic":"sports","data":1}));
    assert_eq!(v["code"], 403);
    // Presence names the user, with the token's info.
    let v = ask(&mut a, json!({"op":"presence","topic":"news"}));
    assert_eq!(v["members"][0]["user"], "alice", "{v}");
    assert_eq!(v["members"][0]["info"], json!({"name":"Alice"}), "{v}");
    // A private topic needs a channel token for this topic and this user.
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private:1"}));
    assert_eq!(v["code"], 403, "{v}");
    let [for_alice, for_bob, other_topic]: [String; 3] = keys
        .mint(&[
            ("HS256", Some("hs.raw"), json!({"sub":"alice","channel":"private:1"}), Value::Null),
            ("HS256", Some("hs.raw"), json!({"sub":"bob","channel":"private:1"}), Value::Null),
            ("HS256", Some("hs.raw"), json!({"sub":"alice","channel":"private:2"}), Value::Null),
        ])
        .try_into()
        .unwrap();
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private:1","token": for_bob}));
    assert_eq!((v["code"].as_u64(), v["message"].as_str()), (Some(403), Some("channel token: for another user (sub)")));
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private:1","token": other_topic}));
    assert_eq!(v["message"], "channel token: for another topic");
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private:1","token": for_alice}));
    assert_eq!(v, json!({"op":"subscribed","topic":"private:1"}));
    // The admin API lists the user.
    let (_, clients) = http("GET", &server.admin_url("/api/clients"), &[], None);
    assert!(clients.contains("\"user\":\"alice\""), "{clients}");

    // A refresh for the same user extends the connection past the first token's exp; a
    // client that does not refresh is closed with 3000 when its exp passes.
    let bob = keys.one("HS256", "hs.raw", json!({"sub":"bob","exp": t + 3}));
    let mut b = ws_open(&server.url(&format!("/ps?token={bob}")));
    assert_eq!(ask(&mut b, json!({"op":"subscribe","topic":"news"}))["op"], "subscribed");
    let later = keys.one("ES256", "ec.pem", json!({"sub":"alice","exp": t + 600,"topics":["news"]}));
    let someone_else = keys.one("ES256", "ec.pem", json!({"sub":"mallory","exp": t + 600}));
    let v = ask(&mut a, json!({"op":"refresh","token": someone_else}));
    assert_eq!(v["code"], 403, "{v}");
    assert_eq!(
        ask(&mut a, json!({"op":"refresh","token": later})),
        json!({"op":"refreshed","user":"alice","expires": t + 600})
    );
    let started = Instant::now();
    assert_eq!(ws_closed(&mut b), (Some(3000), "token expired".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Alice is still here after her first token's exp, and the refreshed topics apply.
    std::thread::sleep(Duration::from_secs((t + 4).saturating_sub(now())));
    let v = ask(&mut a, json!({"op":"subscribe","topic":"private:2"}));
    assert_eq!(v["message"], "topic not allowed by the token", "{v}");
    server.wait_log("user=\"bob\" /ps status=101");

    // Anything before `connect` is refused and closes; so does silence past the handshake
    // timeout, and a bad token in `connect`.
    let mut c = ws_open(&server.url("/ps"));
    let v = ask(&mut c, json!({"op":"subscribe","topic":"news"}));
    assert_eq!(v["code"], 401);
    assert_eq!(ws_closed(&mut c).0, Some(3000));
    let mut d = ws_open(&server.url("/ps"));
    assert_eq!(ws_closed(&mut d), (Some(3000), "no token in time".into()));
    let mut e = ws_open(&server.url("/ps"));
    let v = ask(&mut e, json!({"op":"connect","token":"garbage"}));
    assert_eq!(v["code"], 401);
    assert_eq!(ws_closed(&mut e).0, Some(3000));
    // Routes without auth take no tokens.
    let mut f = ws_open(&server.url("/open"));
    f.send_text("x").unwrap();
    assert_eq!(ws_text(&mut f), "x");
}

#[test]
fn a_jwks_rotation_while_connected() {
    let keys = Keys::new("rotation");
    let server = Server::with_config(&keys.config(""), &[]);
    let r1 = keys.mint(&[("RS256", Some("r1.pem"), json!({"sub":"one"}), json!({"kid":"r1"}))]).remove(0);
    let r2 = keys.mint(&[("RS256", Some("r2.pem"), json!({"sub":"two"}), json!({"kid":"r2"}))]).remove(0);
    let mut connected = ws_open_with(&server.url("/echo"), &bearer(&r1));
    assert_eq!(upgrade(&server, &format!("/echo?token={r2}"), "").0, 401);
    // The provider rotates: r2 in, r1 out. The fetcher (every second here) picks it up.
    keys.jwks(&["r2"]);
    let start = Instant::now();
    let opens = |token: &str| Ws::open(&server.url(&format!("/echo?token={token}")), &Default::default()).is_ok();
    while !opens(&r2) {
        assert!(start.elapsed() < Duration::from_secs(10), "r2 never accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(upgrade(&server, &format!("/echo?token={r1}"), "").1, "unknown kid \"r1\"");
    // The client admitted with r1 stays: a token is checked when it is shown.
    connected.send_text("still here").unwrap();
    assert_eq!(ws_text(&mut connected), "still here");
    // A JWKS that cannot be read keeps the keys fetched before.
    std::fs::write(keys.path("jwks.json"), "{ not json").unwrap();
    server.wait_log("the keys fetched before stay");
    assert!(opens(&r2));
}

#[test]
fn configuration_mistakes_name_the_key() {
    let keys = Keys::new("config");
    let check = |text: &str| -> String {
        let path = keys.path("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_wsgate")).arg("-c").arg(&path).arg("--check-config").output().unwrap();
        assert!(!out.status.success(), "accepted: {text}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let route = "[[route]]\npath = \"/e\"\napp = \"echo\"\nauth = \"jwt\"\n";
    assert!(check(route).contains("needs a [jwt] section"));
    let secret = format!("[jwt]\nsecret = \"file:{}\"\n", keys.path("hs.secret").display());
    assert!(check(&format!("{secret}algorithms = [\"none\"]\n{route}")).contains("never accepted"));
    assert!(check("[jwt]\nsecret = \"short\"\n").contains("at least 32 bytes"));
    assert!(check(&format!("[jwt]\npublic_key = \"file:{}\"\n", keys.path("ec.pem").display())).contains("private key"));
    assert!(check("[jwt]\n").contains("no keys"));
    assert!(check(&format!("{secret}[[route]]\npath = \"/p\"\napp = \"echo\"\nprivate = [\"a\"]\n"))
        .contains("route.private"));
    assert!(
        check(&format!("{secret}[[route]]\npath = \"/e\"\napp = \"echo\"\nauth = \"magic\"\n")).contains("route.auth")
    );
    let logview = "[[route]]\npath = \"/l\"\napp = \"logview\"\nfiles = [\"/dev/null\"]\nauth = \"jwt\"\n";
    assert!(check(&format!("{secret}{logview}")).contains("not on log viewers"));
}

#[test]
fn a_users_connections_share_its_message_bucket_across_workers() {
    let keys = Keys::new("per-user");
    let extra = "\n[[route]]\npath = \"/user-limited\"\napp = \"echo\"\nauth = \"jwt\"\nrate_messages_per_user = { rate = 1, burst = 10 }\n\n[server]\nworkers = 2\nbalance = \"handoff\"\n";
    let server = Server::with_config(&keys.config(extra), &[]);
    let token = |sub: &str| keys.one("HS256", "hs.raw", json!({"sub": sub}));
    let (alice, bob) = (token("alice"), token("bob"));
    let open = |token: &str| {
        let request = upgrade_request("/user-limited", &format!("Authorization: Bearer {token}\r\n"));
        Raw::connect_with(server.addr, request.as_bytes())
    };
    // Consecutive connections land on both workers (handoff balance).
    let mut conns = [open(&alice), open(&alice), open(&bob)];
    let sent = |ws: &mut Raw, tag: &str| -> usize {
        let mut wire = Vec::new();
        for i in 0..8 {
            wire.extend_from_slice(&masked_frame(0x81, format!("{tag}{i}").as_bytes()));
        }
        ws.send_raw(&wire);
        (0..8).filter(|_| ws.recv().unwrap().payload.starts_with(tag.as_bytes())).count()
    };
    let a1 = sent(&mut conns[0], "a");
    let a2 = sent(&mut conns[1], "b");
    let b = sent(&mut conns[2], "c");
    assert_eq!((a1 + a2, b), (10, 8), "alice's two connections share one burst of 10; bob has his own");
    wait_metrics(&server, &["wsgate_rate_limited_total{limit=\"messages_per_user\",action=\"drop\"} 6"]);
}
