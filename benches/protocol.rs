//! Hot paths of the protocol core: frame-header parsing, unmasking, UTF-8 validation,
//! message decoding, the opening handshake, and the legacy (hixie) frames both ways.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsgate::http::request::HeadLimits;
use wsgate::ws::frame::{encode_header, parse_header, FrameLimits, Opcode, MAX_HEADER_LEN};
use wsgate::ws::handshake::{respond, Policy};
use wsgate::ws::mask::unmask;
use wsgate::ws::message::{Decoder, MessageLimits};
use wsgate::ws::utf8::Utf8Validator;

fn frame_header(c: &mut Criterion) {
    let limits = FrameLimits::server(32 << 20);
    let mut g = c.benchmark_group("frame_header");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, &[u8]); 3] = [
        ("parse_7bit", &[0x82, 0x94, 1, 2, 3, 4]),
        ("parse_16bit", &[0x82, 0xFE, 0x40, 0x00, 1, 2, 3, 4]),
        ("parse_64bit", &[0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]),
    ];
    for (name, bytes) in cases {
        g.bench_function(name, |b| b.iter(|| parse_header(black_box(bytes), &limits)));
    }
    g.bench_function("encode", |b| {
        let mut out = [0u8; MAX_HEADER_LEN];
        b.iter(|| encode_header(&mut out, true, Opcode::Binary, black_box(20), None))
    });
    g.finish();
}

fn unmask_sizes(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 1024, 16 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| unmask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii = "a".repeat(16 * 1024);
    let mixed = "κόσμε 𝄞 abc ".repeat(16 * 1024 / 20);
    for (name, text) in [("ascii_16k", ascii.as_bytes()), ("mixed_16k", mixed.as_bytes())] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(text)).unwrap();
                v.finish().unwrap()
            })
        });
        g.bench_function(format!("{name}_in_1k_pieces"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in text.chunks(1000) {
                    v.feed(black_box(piece)).unwrap();
                }
                v.finish().unwrap()
            })
        });
    }
    g.finish();
}

/// Decoding a read buffer full of small masked binary frames, as an echo server sees it.
fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for size in [20usize, 1024] {
        let count = 64;
        let mut stream = Vec::new();
        for _ in 0..count {
            let mut head = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut head, true, Opcode::Binary, size, Some([1, 2, 3, 4]));
            stream.extend_from_slice(&head[..n]);
            stream.extend(std::iter::repeat_n(7u8, size));
        }
        g.throughput(Throughput::Elements(count));
        g.bench_function(format!("binary_{size}B_x64"), |b| {
            let mut decoder = Decoder::server(MessageLimits::default());
            let mut buf = stream.clone();
            b.iter(|| {
                buf.copy_from_slice(&stream);
                let mut pos = 0;
                let mut total = 0;
                while let Ok((Some(ev), n)) = decoder.decode(&mut buf[pos..]) {
                    black_box(&ev);
                    total += 1;
                    pos += n;
                }
                total
            })
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bench\r\n\r\n";
    let protocols = vec!["chat".to_string()];
    let policy = Policy { origins: &[], subprotocols: &protocols };
    let limits = HeadLimits::default();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_101", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            respond(black_box(request), &limits, &policy, &mut out).unwrap()
        })
    });
    g.finish();
}

/// A legacy client's 1 KiB text frames decoded, and the apps' frames translated for it.
fn hixie(c: &mut Criterion) {
    use wsgate::ws::hixie::{encode_text, Decoder as HixieDecoder, Frame, Translator};
    let text: Vec<u8> = b"{\"id\":1234,\"name\":\"item\",\"ok\":true},".iter().copied().cycle().take(1024).collect();
    let mut wire = Vec::new();
    for _ in 0..64 {
        encode_text(&mut wire, &text);
    }
    let mut rfc = Vec::new();
    for _ in 0..64 {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut head, true, Opcode::Text, text.len(), None);
        rfc.extend_from_slice(&head[..n]);
        rfc.extend_from_slice(&text);
    }
    let mut g = c.benchmark_group("hixie");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode_64x1KiB", |b| {
        let mut d = HixieDecoder::default();
        b.iter(|| {
            let mut pos = 0;
            while let Ok((Some(Frame::Text(t)), used)) = d.decode(black_box(&wire[pos..]), 1 << 20) {
                black_box(t);
                pos += used;
            }
            pos
        })
    });
    g.bench_function("translate_64x1KiB", |b| {
        let mut t = Translator::default();
        let mut out = Vec::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            t.translate(black_box(&rfc), 1 << 20, &mut out)
        })
    });
    g.finish();
}

/// What a JWT adds to a handshake: verifying a connection token (signature and claims) with
/// each kind of key.
fn jwt(c: &mut Criterion) {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use wsgate::auth::jwt::{hmac_key, pem_key, Verifier};
    let secret = b"a benchmark secret of 32 bytes or more";
    let ec = rcgen::KeyPair::generate().unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut verifier = Verifier::with_keys(vec![
        hmac_key(Some("hs".into()), secret).unwrap(),
        pem_key(Some("ec".into()), ec.public_key_pem().as_bytes()).unwrap(),
        pem_key(Some("ed".into()), ed.public_key_pem().as_bytes()).unwrap(),
    ]);
    verifier.audience = Some("bench".into());
    let claims = serde_json::json!({"sub":"user-1234","exp": 4_000_000_000u64,"aud":"bench","topics":["news.*"],"info":{"name":"A"}});
    let token = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        encode(&Header { kid: Some(kid.into()), ..Header::new(alg) }, &claims, key).unwrap()
    };
    let tokens = [
        ("HS256", token(Algorithm::HS256, "hs", &EncodingKey::from_secret(secret))),
        ("ES256", token(Algorithm::ES256, "ec", &EncodingKey::from_ec_der(&ec.serialize_der()))),
        ("EdDSA", token(Algorithm::EdDSA, "ed", &EncodingKey::from_ed_der(&ed.serialize_der()))),
    ];
    let mut g = c.benchmark_group("jwt");
    for (name, token) in &tokens {
        assert!(verifier.verify(token, 1_800_000_000).is_ok());
        g.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| verifier.verify(black_box(token), 1_800_000_000))
        });
    }
    g.finish();
}

criterion_group!(benches, frame_header, unmask_sizes, utf8, decode, handshake, hixie, jwt);
criterion_main!(benches);
