//! The `jwt` fuzz target: connection and channel tokens, their claims, JWKS documents, and
//! the answers of the application that `auth = "proxy"` asks.

/// A token or its parts from a client or an identity provider: the first byte picks what the
/// rest is. 0: a token, verified against HMAC and EC keys; 1: a token's claims JSON, checked
/// directly and, signed with the HMAC key, through the whole verification, which must agree;
/// 2: a JWKS document; 3: an application's answer to a connect or subscribe request; 4: its
/// HTTP answer on a UNIX socket. Whatever a verified token (or the application) gives must be
/// what the rest of the server relies on: a user without control characters, an `info`
/// object within its bound, globs.
pub fn jwt(data: &[u8]) {
    use crate::auth::jwt::{hmac_key, jwk_key, parse_jwks, Verifier, MAX_INFO, MAX_SUB};
    use std::sync::OnceLock;
    const SECRET: &[u8] = b"fuzzing secret, 32 bytes or more";
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| {
        let ec = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec"}"#;
        let ec = jwk_key(&serde_json::from_str(ec).expect("a JWK")).expect("a key").expect("a signing key");
        let mut verifier = Verifier::with_keys(vec![hmac_key(None, SECRET).expect("a long secret"), ec]);
        verifier.audience = Some("fuzz".into());
        verifier
    });
    let check = |claims: &crate::auth::jwt::Claims| {
        let identity = &claims.identity;
        assert!(identity.user.len() <= MAX_SUB && !identity.user.chars().any(char::is_control));
        if let Some(info) = &identity.info {
            assert!(info.len() <= MAX_INFO && info.starts_with('{'));
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(info).is_ok());
        }
    };
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = 1_800_000_000;
    match mode % 5 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else { return };
            if let Ok(claims) = verifier.verify(token, now) {
                check(&claims);
            }
        }
        1 => {
            let Ok(json) = std::str::from_utf8(rest) else { return };
            let direct = verifier.claims(json, now);
            if let Ok(claims) = &direct {
                check(claims);
            }
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let signing = format!("{}.{}", b64.encode(br#"{"alg":"HS256"}"#), b64.encode(json));
            let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
            let Ok(signature) = jsonwebtoken::crypto::sign(signing.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            else {
                return;
            };
            let token = format!("{signing}.{signature}");
            if token.len() > 8192 {
                return;
            }
            match (verifier.verify(&token, now), direct) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
                (Err(_), Err(_)) => {}
                // jsonwebtoken reads the claims once itself (to check what we told it not
                // to): a payload that is not a JSON object fails there first.
                (Err(e), Ok(_)) => assert!(e.reason.starts_with("bad token"), "{json:?}: {e:?}"),
                (Ok(a), Err(e)) => panic!("{json:?}: verified {a:?}, but the claims alone fail: {e:?}"),
            }
        }
        2 => {
            if let Ok(keys) = parse_jwks(rest) {
                assert!(keys.len() <= rest.len());
            }
        }
        4 => {
            // The application's HTTP answer on its UNIX socket, as it comes: whatever is taken
            // is within the bound, and a connection is kept only after a delimited answer.
            struct Peer<'a>(&'a [u8]);
            impl std::io::Read for Peer<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    // A byte at a time, then the rest: the answer's pieces as they may come.
                    let n = buf.len().min(self.0.len()).min(if self.0.len() % 3 == 0 { 1 } else { 4096 });
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            impl std::io::Write for Peer<'_> {
                fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                    Ok(buf.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let limit = 1024;
            if let Ok((answer, _keep)) =
                crate::auth::proxy::exchange(&mut Peer(rest), b"POST / HTTP/1.1\r\n\r\n", limit)
            {
                assert!(answer.len() <= limit);
            }
        }
        _ => {
            // The application's answer to a connect or subscribe request (`auth = "proxy"`):
            // what it allows is bounded as a token's claims are, what it denies with is a 4xx
            // and a short line.
            use crate::auth::proxy::{connect_answer, subscribe_answer, Outcome, MAX_REASON};
            for outcome in [connect_answer(rest, now), subscribe_answer(rest)] {
                match outcome {
                    Outcome::Allow(Some(identity)) => {
                        check(&crate::auth::jwt::Claims { identity, channel: None });
                    }
                    Outcome::Allow(None) | Outcome::Failed(..) => {}
                    Outcome::Deny { status, reason } => {
                        assert!((400..500).contains(&status));
                        assert!(reason.len() <= MAX_REASON && !reason.chars().any(char::is_control));
                    }
                }
            }
        }
    }
}
