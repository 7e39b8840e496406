//! Payload masking (RFC 6455 §5.3): `payload[i] ^= key[(offset + i) % 4]`, in place.
//!
//! `offset` lets a payload that spans several reads be unmasked piece by piece: pass the number
//! of payload bytes already unmasked. The fast path XORs 64-byte blocks against a key spread
//! over 64 bytes, which the compiler turns into vector instructions for whatever the function
//! is compiled for: SSE2 on the default x86_64 target, and AVX2 / AVX-512 through runtime
//! dispatch (`is_x86_feature_detected!`), so no `target-cpu=native` is needed.

// The SIMD unmask is the one `unsafe` outside `sys`: target-feature functions and intrinsics.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::frame::MAX_HEADER_LEN;

/// Unmasks (or masks: the operation is its own inverse) `buf` in place, continuing `key` at
/// payload position `offset`.
#[inline(always)]
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    // Below one block the dispatch costs more than it saves: small frames stay inline.
    if buf.len() < BLOCK {
        unmask_short(buf, key);
    } else {
        unmask_long(buf, key);
    }
}

/// Unmasks like [`unmask`] from payload position 0, and says whether every unmasked byte is
/// ASCII: a text payload that is needs no UTF-8 validation, and the check rides on the pass
/// that brings the bytes into registers anyway (most small text messages are ASCII).
#[inline(always)]
pub fn unmask_ascii(buf: &mut [u8], key: [u8; 4]) -> bool {
    if buf.len() < BLOCK {
        unmask_short(buf, key)
    } else {
        unmask_long(buf, key)
    }
}

/// Appends a client frame to `out`: its header `head[..head_len]` (from
/// [`encode_header`](super::frame::encode_header), whose last four bytes are the masking key's
/// place; this writes `key` there), then `payload` masked with `key`. One pass over the
/// bytes, where copying them and then masking in place would be two, and no call to `memcpy`
/// for the few bytes of a small frame (a load generator queues millions a second). A caller
/// that sends many frames of one size can pass the same header each time: only the key changes.
pub fn frame_into(out: &mut Vec<u8>, head: &[u8; MAX_HEADER_LEN], head_len: usize, payload: &[u8], key: [u8; 4]) {
    assert!((6..=MAX_HEADER_LEN).contains(&head_len), "a masked frame's header is 6 to {MAX_HEADER_LEN} bytes");
    let src = payload;
    // The whole header array is written (a fixed-size copy, a few moves), then the key, and the
    // payload overwrites what lies past `head_len`.
    out.reserve(MAX_HEADER_LEN + src.len());
    let spare = out.spare_capacity_mut();
    let head_room: &mut [MaybeUninit<u8>; MAX_HEADER_LEN] =
        (&mut spare[..MAX_HEADER_LEN]).try_into().expect("reserved above");
    *head_room = head.map(MaybeUninit::new);
    let key_room: &mut [MaybeUninit<u8>; 4] = (&mut spare[head_len - 4..head_len]).try_into().expect("6 bytes or more");
    *key_room = key.map(MaybeUninit::new);
    let spare = &mut spare[head_len..head_len + src.len()];
    let mut dst_blocks = spare.chunks_exact_mut(BLOCK);
    let mut src_blocks = src.chunks_exact(BLOCK);
    if src.len() >= BLOCK {
        let mut wide = [0u8; BLOCK];
        for (i, b) in wide.iter_mut().enumerate() {
            *b = key[i % 4];
        }
        for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
            for ((d, s), k) in d.iter_mut().zip(s).zip(&wide) {
                d.write(s ^ k);
            }
        }
    }
    // BLOCK is a multiple of 4: the rest starts at key phase 0.
    let k4 = u32::from_ne_bytes(key);
    let k8 = u64::from(k4) | (u64::from(k4) << 32);
    let mut dst_words = dst_blocks.into_remainder().chunks_exact_mut(8);
    let mut src_words = src_blocks.remainder().chunks_exact(8);
    for (d, s) in (&mut dst_words).zip(&mut src_words) {
        let mut word = [0u8; 8];
        word.copy_from_slice(s);
        for (d, b) in d.iter_mut().zip((u64::from_ne_bytes(word) ^ k8).to_ne_bytes()) {
            d.write(b);
        }
    }
    for ((d, s), k) in dst_words.into_remainder().iter_mut().zip(src_words.remainder()).zip(key.iter().cycle()) {
        d.write(s ^ k);
    }
    // SAFETY: the header loop wrote the first `head_len` spare bytes, and the three loops
    // after it every one of the `src.len()` after them (blocks, then words, then bytes, each
    // over what the one before left).
    unsafe { out.set_len(out.len() + head_len + src.len()) };
}

/// The reference: one byte at a time. The fast path is tested against it.
pub fn unmask_naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

const BLOCK: usize = 64;

/// The key as it applies to a buffer that starts at payload position `offset`.
#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let s = offset % 4;
    [key[s], key[(s + 1) % 4], key[(s + 2) % 4], key[(s + 3) % 4]]
}

/// A block or more: the widest vectors the CPU has. Returns whether all of it is ASCII (the
/// OR that tells costs one vector operation per block, in registers already).
#[inline(never)]
fn unmask_long(buf: &mut [u8], key: [u8; 4]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU reports AVX-512F, the only feature the function is compiled for.
            return unsafe { unmask_avx512(buf, key) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU reports AVX2, the only feature the function is compiled for.
            return unsafe { unmask_avx2(buf, key) };
        }
    }
    unmask_blocks(buf, key)
}

/// 64-byte blocks against the key spread over 64 bytes (the compiler vectorises both loops
/// for whatever the function is compiled for), then the rest.
#[inline(always)]
fn unmask_blocks(buf: &mut [u8], key: [u8; 4]) -> bool {
    let mut wide = [0u8; BLOCK];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut high = [0u8; BLOCK];
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for ((b, k), h) in block.iter_mut().zip(wide.iter()).zip(high.iter_mut()) {
            *b ^= *k;
            *h |= *b;
        }
    }
    // BLOCK is a multiple of 4, so the rest starts at key phase 0.
    let rest_ascii = unmask_short(blocks.into_remainder(), key);
    rest_ascii && high.iter().fold(0, |acc, h| acc | h) < 0x80
}

/// Eight bytes at a time (a short message is two or three words), then the last few.
/// Returns whether all of it is ASCII.
#[inline(always)]
fn unmask_short(buf: &mut [u8], key: [u8; 4]) -> bool {
    let k4 = u32::from_ne_bytes(key);
    let k8 = u64::from(k4) | (u64::from(k4) << 32);
    let mut high = 0u64;
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let v = u64::from_ne_bytes(word) ^ k8;
        high |= v;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // 8 is a multiple of 4: the rest starts at key phase 0.
    let mut rest = words.into_remainder();
    if rest.len() >= 4 {
        let (w, more) = rest.split_at_mut(4);
        let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) ^ k4;
        high |= u64::from(v);
        w.copy_from_slice(&v.to_ne_bytes());
        rest = more;
    }
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
        high |= u64::from(*b);
    }
    high & 0x8080_8080_8080_8080 == 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unmask_avx2(buf: &mut [u8], key: [u8; 4]) -> bool {
    unmask_blocks(buf, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unmask_avx512(buf: &mut [u8], key: [u8; 4]) -> bool {
    unmask_blocks(buf, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_naive_at_every_length_alignment_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let source: Vec<u8> = (0..400u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..=300 {
            for align in 0..16 {
                for offset in 0..8 {
                    let mut fast = source.clone();
                    let mut naive = source.clone();
                    unmask(&mut fast[align..align + len], key, offset);
                    unmask_naive(&mut naive[align..align + len], key, offset);
                    assert_eq!(fast, naive, "len {len} align {align} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn unmask_ascii_matches_naive_and_finds_every_high_byte() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=200 {
            for align in 0..9 {
                let plain: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let mut masked = vec![0u8; align];
                masked.extend_from_slice(&plain);
                unmask_naive(&mut masked[align..], key, 0);
                let mut got = masked.clone();
                assert!(unmask_ascii(&mut got[align..], key), "len {len} align {align}");
                assert_eq!(&got[align..], &plain[..]);
                let mut portable = masked.clone();
                assert!(unmask_blocks(&mut portable[align..], key));
                assert_eq!(portable, got);
                // One byte with its high bit set, anywhere, is found.
                for at in 0..len {
                    let mut one = plain.clone();
                    one[at] = 0xc3;
                    let mut m = vec![0u8; align];
                    m.extend_from_slice(&one);
                    unmask_naive(&mut m[align..], key, 0);
                    let mut portable = m.clone();
                    assert!(!unmask_ascii(&mut m[align..], key), "len {len} align {align} at {at}");
                    assert_eq!(&m[align..], &one[..]);
                    assert!(!unmask_blocks(&mut portable[align..], key));
                }
            }
        }
    }

    #[test]
    fn frame_into_matches_copy_then_mask_at_every_length() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let source: Vec<u8> = (0..400u32).map(|i| (i * 31 + 7) as u8).collect();
        let mut head = [0u8; MAX_HEADER_LEN];
        for (i, b) in head.iter_mut().enumerate() {
            *b = 0xC0 + i as u8;
        }
        for len in 0..=300 {
            for already in [0, 1, 6] {
                for head_len in [6, 8, 14] {
                    let mut out = vec![0xAAu8; already];
                    frame_into(&mut out, &head, head_len, &source[..len], key);
                    let mut want = vec![0xAAu8; already];
                    want.extend_from_slice(&head[..head_len - 4]);
                    want.extend_from_slice(&key);
                    want.extend_from_slice(&source[..len]);
                    unmask_naive(&mut want[already + head_len..], key, 0);
                    assert_eq!(out, want, "len {len} after {already}, header {head_len}");
                }
            }
        }
    }

    #[test]
    fn portable_path_matches_naive() {
        let key = [1, 2, 3, 4];
        for len in [0, 3, 64, 65, 200, 1000] {
            let mut fast: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut naive = fast.clone();
            unmask_blocks(&mut fast, rotate_key(key, 3));
            unmask_naive(&mut naive, key, 3);
            assert_eq!(fast, naive);
        }
    }

    #[test]
    fn split_unmask_equals_whole() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut whole = data.clone();
        unmask(&mut whole, key, 0);
        for cut in [1, 2, 3, 5, 63, 64, 65, 333] {
            let mut split = data.clone();
            let (a, b) = split.split_at_mut(cut);
            unmask(a, key, 0);
            unmask(b, key, cut);
            assert_eq!(split, whole, "cut {cut}");
        }
    }
}
