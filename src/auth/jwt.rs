//! JWT connection and channel tokens (RFC 7519, signed as RFC 7515 JWS): which keys may sign
//! them, and what a verified token says.
//!
//! The signatures are jsonwebtoken's (on ring, the provider rustls already uses here); every
//! other rule is ours, so it is the same for every key and exact to the RFC:
//!
//! - `alg` must be one the configuration allows, and `none` never is (it is not even a name
//!   the header parser knows).
//! - A key is only ever tried with algorithms of its own type: an HMAC secret verifies HS*
//!   only, an RSA key RS*/PS* only, and so on. A token signed with HS256 using an RSA public
//!   key as the secret (the HS/RS confusion attack) therefore finds no key to try.
//! - `kid` picks the key when the token has one; an unknown `kid` is refused (and asks the
//!   JWKS fetcher, if any, to look again soon).
//! - `exp`, `nbf` and `iat` are NumericDates (integer or not) checked with the leeway; a
//!   value of another type is refused rather than ignored. `aud`, when present, must name
//!   the configured audience (RFC 7519 §4.1.3: a token for someone else is refused even when
//!   no audience is configured); `iss` must be the configured issuer when one is.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Identity, Refusal};

/// Every algorithm wsgate verifies (RFC 7518's, less `none`, plus EdDSA of RFC 8037).
pub const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The claim that names the topics a connection may use (globs).
pub const TOPICS_CLAIM: &str = "topics";
/// A channel token's claim naming its topic.
pub const CHANNEL_CLAIM: &str = "channel";
/// The largest `info` claim carried (it travels to presence and backends).
pub const MAX_INFO: usize = 1024;
/// The longest `sub` taken.
pub const MAX_SUB: usize = 1024;
/// The most globs a token's `topics` claim may list.
pub const MAX_TOPIC_GLOBS: usize = 64;

/// The type of a key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Hmac,
    Rsa,
    /// ECDSA on P-256 (ES256).
    P256,
    /// ECDSA on P-384 (ES384).
    P384,
    /// ECDSA on a curve the PEM did not say (ES256 or ES384; ring checks the curve).
    Ec,
    Ed25519,
}

impl KeyType {
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyType::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyType::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyType::P256 => alg == ES256,
            KeyType::P384 => alg == ES384,
            KeyType::Ec => matches!(alg, ES256 | ES384),
            KeyType::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyType,
    /// The one algorithm a JWK's `alg` allows, if it names one.
    pub only: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.allows(alg) && self.only.is_none_or(|only| only == alg)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, kid {:?})", self.kind, self.kid)
    }
}

/// A secret for HS* (at least 32 bytes: RFC 7518 §3.2 asks a key as long as the hash).
pub fn hmac_key(kid: Option<String>, secret: &[u8]) -> Result<Key, String> {
    if secret.len() < 32 {
        return Err(format!("an HMAC secret must be at least 32 bytes (RFC 7518 §3.2), this one is {}", secret.len()));
    }
    Ok(Key { kid, kind: KeyType::Hmac, only: None, key: DecodingKey::from_secret(secret) })
}

/// A public key in PEM: RSA (PKCS#1 or SPKI), EC (SPKI) or Ed25519 (SPKI).
pub fn pem_key(kid: Option<String>, pem: &[u8]) -> Result<Key, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key { kid, kind: KeyType::Rsa, only: None, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Key { kid, kind: KeyType::Ec, only: None, key });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(Key { kid, kind: KeyType::Ed25519, only: None, key });
    }
    if pem.windows(7).any(|w| w == b"PRIVATE") {
        return Err("a private key: give the public key (openssl pkey -pubout)".into());
    }
    Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into())
}

/// A key of a JWKS (RFC 7517). `Ok(None)`: a key for something else (encryption, an
/// unsupported curve), skipped.
pub fn jwk_key(jwk: &Jwk) -> Result<Option<Key>, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyType::P256,
            EllipticCurve::P384 => KeyType::P384,
            _ => return Ok(None),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            _ => return Ok(None),
        },
        AlgorithmParameters::OctetKey(_) => KeyType::Hmac,
    };
    let only = match jwk.common.key_algorithm {
        Some(ka) => match Algorithm::from_str(&ka.to_string()) {
            Ok(alg) if kind.allows(alg) => Some(alg),
            Ok(alg) => return Err(format!("alg {alg:?} does not fit a {kind:?} key")),
            // An `alg` for encryption (RSA-OAEP and the like): not a signing key.
            Err(_) => return Ok(None),
        },
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(Some(Key { kid: jwk.common.key_id.clone(), kind, only, key }))
}

/// Parses a JWKS document (`{"keys":[...]}`). Keys that cannot be used are skipped with a
/// warning, so one odd key does not cost the others.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS ({e})"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, value) in set.keys.into_iter().enumerate() {
        let parsed = serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(|jwk| jwk_key(&jwk));
        match parsed {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(e) => log::warn!("JWKS key {i}: {e}; skipped"),
        }
    }
    Ok(keys)
}

/// `[jwt]`: how tokens are verified.
#[derive(Debug)]
pub struct Verifier {
    /// Keys from the configuration (secrets and PEM files): fixed until a reload.
    pub fixed: Vec<Key>,
    /// Keys from the JWKS URL, replaced by the fetcher.
    pub fetched: RwLock<Arc<Vec<Key>>>,
    /// Algorithms accepted at all.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`, in seconds.
    pub leeway: u64,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Tokens longer than this are refused unread.
    pub max_token_size: usize,
    /// `jwks`: where more keys come from, if anywhere.
    pub jwks: Option<super::jwks::Source>,
    /// Asks the JWKS fetcher to look again (an unknown `kid`); set when it starts.
    nudge: std::sync::OnceLock<std::sync::mpsc::SyncSender<()>>,
}

/// What a verified connection token says.
#[derive(Debug)]
pub struct Claims {
    pub identity: Identity,
    /// A channel token's `channel`.
    pub channel: Option<String>,
}

/// The claims we read; the rest of the token is ignored.
#[derive(Deserialize)]
struct Raw<'a> {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    topics: Option<serde_json::Value>,
    channel: Option<serde_json::Value>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
}

fn refused(reason: impl Into<String>) -> Refusal {
    Refusal::new(401, reason)
}

impl Verifier {
    /// A verifier of these keys with the defaults: every algorithm, a 5 s leeway, no audience
    /// or issuer, tokens up to 8 KiB, no JWKS.
    pub fn with_keys(fixed: Vec<Key>) -> Verifier {
        Verifier {
            fixed,
            fetched: Default::default(),
            algorithms: ALGORITHMS.to_vec(),
            leeway: 5,
            audience: None,
            issuer: None,
            max_token_size: 8 << 10,
            jwks: None,
            nudge: Default::default(),
        }
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, Refusal> {
        if token.len() > self.max_token_size {
            return Err(refused(format!("token longer than max_token_size ({} bytes)", self.max_token_size)));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(format!("malformed token: {e}")))?;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(refused(format!("algorithm {alg:?} not accepted")));
        }
        let fetched = self.fetched.read().map(|k| Arc::clone(&k)).unwrap_or_default();
        let candidates = self.fixed.iter().chain(fetched.iter()).filter(|k| match &header.kid {
            Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
            None => true,
        });
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut known_kid = false;
        let mut tried = false;
        let mut payload = None;
        for key in candidates {
            known_kid = true;
            if !key.verifies(alg) {
                continue;
            }
            tried = true;
            match // Owned: the decoder deserializes from a buffer of its own.
            jsonwebtoken::decode::<Box<RawValue>>(token, &key.key, &validation) {
                Ok(data) => {
                    payload = Some(data.claims);
                    break;
                }
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(refused(format!("bad token: {e}"))),
            }
        }
        let Some(payload) = payload else {
            return Err(refused(match (&header.kid, known_kid, tried) {
                (Some(kid), false, _) => {
                    if let Some(nudge) = self.nudge.get() {
                        let _ = nudge.try_send(());
                    }
                    format!("unknown kid {kid:?}")
                }
                (_, _, false) => format!("no key verifies {alg:?}"),
                _ => "bad signature".to_string(),
            }));
        };
        self.claims(payload.get(), now)
    }

    /// Checks a verified token's claims (public for the fuzz target and tests).
    pub fn claims(&self, json: &str, now: u64) -> Result<Claims, Refusal> {
        let raw: Raw<'_> = serde_json::from_str(json).map_err(|e| refused(format!("claims: {e}")))?;
        let leeway = self.leeway as f64;
        let now = now as f64;
        if let Some(exp) = numeric_date(raw.exp.as_ref(), "exp")? {
            if now > exp + leeway {
                return Err(refused("token expired"));
            }
        }
        if let Some(nbf) = numeric_date(raw.nbf.as_ref(), "nbf")? {
            if now + leeway < nbf {
                return Err(refused("token not valid yet (nbf)"));
            }
        }
        if let Some(iat) = numeric_date(raw.iat.as_ref(), "iat")? {
            if now + leeway < iat {
                return Err(refused("token issued in the future (iat)"));
            }
        }
        match (&raw.aud, &self.audience) {
            (None, _) => {}
            (Some(aud), wanted) => {
                let names = match aud {
                    serde_json::Value::String(s) => vec![s.as_str()],
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|v| v.as_str().ok_or_else(|| refused("aud: not a string")))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(refused("aud: not a string or an array of strings")),
                };
                if !wanted.as_deref().is_some_and(|w| names.contains(&w)) {
                    return Err(refused("token not meant for this audience (aud)"));
                }
            }
        }
        if let Some(iss) = &self.issuer {
            match &raw.iss {
                Some(serde_json::Value::String(s)) if s == iss => {}
                Some(_) => return Err(refused("wrong issuer (iss)")),
                None => return Err(refused("no issuer (iss)")),
            }
        }
        let user = user_claim(raw.sub, "sub")?;
        let topics = topics_claim(raw.topics)?;
        let info = info_claim(raw.info)?;
        let channel = match raw.channel {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => return Err(refused("channel: not a string")),
        };
        let expires = numeric_date(raw.exp.as_ref(), "exp")?.map(|e| (e + leeway).min(u64::MAX as f64) as u64);
        Ok(Claims { identity: Identity { user, expires, topics, info }, channel })
    }

    /// Verifies a channel token for `topic`, held by a connection whose user is `user`.
    pub fn verify_channel(&self, token: &str, user: &str, topic: &str, now: u64) -> Result<(), Refusal> {
        let claims = self.verify(token, now).map_err(|r| Refusal::new(403, format!("channel token: {}", r.reason)))?;
        if claims.channel.as_deref() != Some(topic) {
            return Err(Refusal::new(403, "channel token: for another topic"));
        }
        if &*claims.identity.user != user {
            return Err(Refusal::new(403, "channel token: for another user (sub)"));
        }
        Ok(())
    }

    /// Starts keeping the JWKS keys current (once; nothing without `jwks`). `first_here`:
    /// fetch the first time on this thread, before returning (at start, so the first clients
    /// find the keys; a reload leaves it to the fetcher, as a reactor must not wait).
    pub fn start_fetcher(self: &Arc<Self>, first_here: bool) {
        let Some(source) = &self.jwks else { return };
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        if self.nudge.set(nudge).is_err() {
            return;
        }
        let mut fetched_first = false;
        if first_here {
            match super::jwks::fetch(source) {
                Ok(keys) => {
                    log::info!("jwt.jwks {}: {} keys", source.source, keys.len());
                    if let Ok(mut slot) = self.fetched.write() {
                        *slot = Arc::new(keys);
                    }
                    fetched_first = true;
                }
                Err(e) => log::error!(
                    "jwt.jwks {}: {e}; tokens signed by its keys are refused until a fetch succeeds",
                    source.source
                ),
            }
        }
        super::jwks::start(self, source.clone(), nudges, fetched_first);
    }
}

/// A user name (`sub`, or a proxy's `user`): at most [`MAX_SUB`] bytes, no control
/// characters (it goes on lines of the access log and a backend's HELLO). `name`: the field.
pub(crate) fn user_claim(value: Option<serde_json::Value>, name: &str) -> Result<Arc<str>, Refusal> {
    match value {
        None => Ok(Arc::from("")),
        Some(serde_json::Value::String(s)) if s.len() > MAX_SUB => {
            Err(refused(format!("{name}: longer than {MAX_SUB} bytes")))
        }
        Some(serde_json::Value::String(s)) if s.chars().any(char::is_control) => {
            Err(refused(format!("{name}: control characters")))
        }
        Some(serde_json::Value::String(s)) => Ok(Arc::from(s)),
        Some(_) => Err(refused(format!("{name}: not a string"))),
    }
}

/// `topics`: at most [`MAX_TOPIC_GLOBS`] globs.
pub(crate) fn topics_claim(value: Option<serde_json::Value>) -> Result<Option<Box<[glob::Pattern]>>, Refusal> {
    match value {
        None => Ok(None),
        Some(serde_json::Value::Array(a)) if a.len() <= MAX_TOPIC_GLOBS => a
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(|| refused("topics: not a string"))?;
                glob::Pattern::new(s).map_err(|e| refused(format!("topics: {s:?}: {e}")))
            })
            .collect::<Result<Box<[_]>, _>>()
            .map(Some),
        Some(serde_json::Value::Array(_)) => Err(refused(format!("topics: more than {MAX_TOPIC_GLOBS} globs"))),
        Some(_) => Err(refused("topics: not an array of globs")),
    }
}

/// `info`: a JSON object of at most [`MAX_INFO`] bytes.
pub(crate) fn info_claim(value: Option<&serde_json::value::RawValue>) -> Result<Option<Arc<str>>, Refusal> {
    match value {
        None => Ok(None),
        Some(v) if v.get().len() > MAX_INFO => Err(refused(format!("info: larger than {MAX_INFO} bytes"))),
        Some(v) if v.get().starts_with('{') => Ok(Some(Arc::from(v.get()))),
        Some(_) => Err(refused("info: not a JSON object")),
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, integer or not); other types are refused.
fn numeric_date(value: Option<&serde_json::Value>, name: &str) -> Result<Option<f64>, Refusal> {
    match value {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
            _ => Err(refused(format!("{name}: not a date"))),
        },
        Some(_) => Err(refused(format!("{name}: not a number of seconds"))),
    }
}

/// Parses an algorithm's name as the config gives it.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("\"none\" is never accepted: an unsigned token proves nothing".into());
    }
    Algorithm::from_str(name)
        .ok()
        .filter(|a| ALGORITHMS.contains(a))
        .ok_or_else(|| format!("{name:?}: unknown algorithm (expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"))
}

/// The JWKS fetch interval's floor after a nudge (an unknown `kid`).
pub const MIN_NUDGED_FETCH: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    /// RFC 7515 §A.1: HS256, and its key as a JWK.
    const A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const A1_JWK: &str =
        r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#;
    /// RFC 7515 §A.3: ES256 (P-256), the same claims.
    const A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    /// The examples' `exp`.
    const A_EXP: u64 = 1_300_819_380;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(fixed: Vec<Key>) -> Verifier {
        Verifier::with_keys(fixed)
    }

    fn jwk(json: &str) -> Key {
        jwk_key(&serde_json::from_str(json).unwrap()).unwrap().unwrap()
    }

    fn hs256(claims: &serde_json::Value, kid: Option<&str>) -> String {
        let header = Header { kid: kid.map(str::to_string), ..Header::new(Algorithm::HS256) };
        encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn the_rfc_7515_examples_verify_until_their_exp_and_leeway() {
        for (token, key) in [(A1_TOKEN, A1_JWK), (A3_TOKEN, A3_JWK)] {
            let v = verifier(vec![jwk(key)]);
            let claims = v.verify(token, A_EXP - 100).unwrap();
            assert_eq!(claims.identity.expires, Some(A_EXP + 5));
            assert_eq!(&*claims.identity.user, "");
            assert!(v.verify(token, A_EXP + 5).is_ok(), "within the leeway");
            assert_eq!(v.verify(token, A_EXP + 6).unwrap_err().reason, "token expired");
            // One bit of the signature changed.
            let mut bad = token.to_string();
            let last = bad.pop().unwrap();
            bad.push(if last == 'Q' { 'A' } else { 'Q' });
            assert_eq!(v.verify(&bad, A_EXP - 100).unwrap_err().reason, "bad signature");
        }
    }

    #[test]
    fn alg_none_is_never_accepted() {
        let v = verifier(vec![hmac_key(None, SECRET).unwrap()]);
        // {"alg":"none"} . {"sub":"x"} . (empty signature)
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        assert!(v.verify(none, 0).unwrap_err().reason.starts_with("malformed token"));
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("NONE").is_err());
        assert!(parse_algorithm("HS1").is_err());
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
    }

    #[test]
    fn a_public_key_used_as_an_hmac_secret_verifies_nothing() {
        // The HS/RS confusion: the attacker signs HS256 with the server's public key (PEM
        // text) as the secret, hoping it is handed to HMAC.
        let pair = rcgen::KeyPair::generate().unwrap();
        let pem = pair.public_key_pem();
        let v = verifier(vec![pem_key(None, pem.as_bytes()).unwrap()]);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub":"admin"}),
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&forged, 0).unwrap_err().reason, "no key verifies HS256");
        // And the real thing works: ES256 signed with the pair.
        let der = pair.serialize_der();
        let real = encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"sub":"alice"}),
            &EncodingKey::from_ec_der(&der),
        )
        .unwrap();
        assert_eq!(&*v.verify(&real, 0).unwrap().identity.user, "alice");
    }

    #[test]
    fn kid_picks_the_key_and_an_unknown_kid_is_refused() {
        let other = b"another secret, 32 bytes or more!!";
        let v = verifier(vec![hmac_key(Some("a".into()), SECRET).unwrap(), hmac_key(Some("b".into()), other).unwrap()]);
        let claims = serde_json::json!({"sub":"u"});
        assert!(v.verify(&hs256(&claims, Some("a")), 0).is_ok());
        assert_eq!(v.verify(&hs256(&claims, Some("b")), 0).unwrap_err().reason, "bad signature");
        assert_eq!(v.verify(&hs256(&claims, Some("zz")), 0).unwrap_err().reason, "unknown kid \"zz\"");
        // No kid: every key of the right type is tried.
        assert!(v.verify(&hs256(&claims, None), 0).is_ok());
    }

    #[test]
    fn algorithms_not_configured_are_refused() {
        let mut v = verifier(vec![hmac_key(None, SECRET).unwrap()]);
        v.algorithms = vec![Algorithm::HS512];
        assert_eq!(
            v.verify(&hs256(&serde_json::json!({}), None), 0).unwrap_err().reason,
            "algorithm HS256 not accepted"
        );
    }

    #[test]
    fn time_claims_with_leeway_and_of_the_wrong_type() {
        let v = verifier(vec![]);
        let now = 1_000_000;
        let ok = |json: &str| v.claims(json, now).map(|_| ()).map_err(|r| r.reason);
        assert_eq!(ok(r#"{"exp":999995}"#), Ok(()));
        assert_eq!(ok(r#"{"exp":999994.5}"#), Err("token expired".into()));
        assert_eq!(ok(r#"{"nbf":1000005}"#), Ok(()));
        assert_eq!(ok(r#"{"nbf":1000006}"#), Err("token not valid yet (nbf)".into()));
        assert_eq!(ok(r#"{"iat":1000006}"#), Err("token issued in the future (iat)".into()));
        assert_eq!(ok(r#"{"exp":"tomorrow"}"#), Err("exp: not a number of seconds".into()));
        assert_eq!(ok(r#"{"exp":-1}"#), Err("exp: not a date".into()));
        assert_eq!(ok(r#"{"nbf":null}"#), Ok(()), "null is absent");
    }

    #[test]
    fn audience_issuer_and_the_claims_we_carry() {
        let mut v = verifier(vec![]);
        let now = 0;
        assert_eq!(v.claims(r#"{"aud":"app"}"#, now).unwrap_err().reason, "token not meant for this audience (aud)");
        v.audience = Some("app".into());
        assert!(v.claims(r#"{"aud":"app"}"#, now).is_ok());
        assert!(v.claims(r#"{"aud":["x","app"]}"#, now).is_ok());
        assert!(v.claims(r#"{"aud":["x"]}"#, now).is_err());
        assert!(v.claims(r#"{"aud":7}"#, now).is_err());
        v.issuer = Some("https://id.example".into());
        assert_eq!(v.claims(r#"{}"#, now).unwrap_err().reason, "no issuer (iss)");
        assert_eq!(v.claims(r#"{"iss":"evil"}"#, now).unwrap_err().reason, "wrong issuer (iss)");
        let c = v
            .claims(r#"{"iss":"https://id.example","sub":"alice","topics":["news.*","chat"],"info":{"name":"A"}}"#, now)
            .unwrap();
        assert_eq!(&*c.identity.user, "alice");
        assert!(
            c.identity.allows_topic("news.eu") && c.identity.allows_topic("chat") && !c.identity.allows_topic("admin")
        );
        assert_eq!(c.identity.info.as_deref(), Some(r#"{"name":"A"}"#));
        v.issuer = None;
        assert!(v.claims(r#"{"sub":"a\nb"}"#, now).is_err(), "control characters in sub");
        assert!(v.claims(r#"{"sub":5}"#, now).is_err());
        assert!(v.claims(r#"{"topics":"news"}"#, now).is_err());
        assert!(v.claims(r#"{"topics":["[unclosed"]}"#, now).is_err());
        assert!(v.claims(r#"{"info":[1]}"#, now).is_err());
        let big = format!(r#"{{"info":{{"a":"{}"}}}}"#, "x".repeat(MAX_INFO));
        assert!(v.claims(&big, now).is_err());
        assert!(v.claims("[1]", now).is_err());
    }

    #[test]
    fn channel_tokens_name_the_topic_and_the_user() {
        let v = verifier(vec![hmac_key(None, SECRET).unwrap()]);
        let token = hs256(&serde_json::json!({"sub":"alice","channel":"private:1"}), None);
        assert!(v.verify_channel(&token, "alice", "private:1", 0).is_ok());
        assert_eq!(v.verify_channel(&token, "bob", "private:1", 0).unwrap_err().status, 403);
        assert!(v.verify_channel(&token, "alice", "private:2", 0).is_err());
    }

    #[test]
    fn oversized_tokens_are_not_read_and_keys_are_checked() {
        let v = verifier(vec![hmac_key(None, SECRET).unwrap()]);
        assert!(v.verify(&"a".repeat(8193), 0).unwrap_err().reason.contains("max_token_size"));
        assert!(hmac_key(None, b"short").is_err());
        assert!(pem_key(None, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err()
            .contains("private"));
        assert!(pem_key(None, b"nonsense").is_err());
    }

    #[test]
    fn jwks_keys_that_cannot_sign_are_skipped() {
        let jwks = format!(
            r#"{{"keys":[{A3_JWK},{{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","use":"enc"}},{{"kty":"weird"}},{{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw","alg":"HS256","kid":"h"}}]}}"#
        );
        let keys = parse_jwks(jwks.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].only, Some(Algorithm::HS256));
        assert_eq!(keys[1].kid.as_deref(), Some("h"));
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"[]").is_err());
        // An `alg` that does not fit its key's type is refused, not trusted.
        let bad: Jwk = serde_json::from_str(&A3_JWK.replace("{\"kty\"", "{\"alg\":\"HS256\",\"kty\"")).unwrap();
        assert!(jwk_key(&bad).is_err());
    }
}
