//! Payload masking (RFC 6455 §5.3): `payload[i] ^= key[(offset + i) % 4]`, in place.
//!
//! `offset` lets a payload that spans several reads be unmasked piece by piece: pass the number
//! of payload bytes already unmasked. The fast path XORs 64-byte blocks against a key spread
//! over 64 bytes, which the compiler turns into vector instructions for whatever the function
//! is compiled for: SSE2 on the default x86_64 target, and AVX2 / AVX-512 through runtime
//! dispatch (`is_x86_feature_detected!`), so no `target-cpu=native` is needed.

// The SIMD unmask is the one `unsafe` outside `sys`: target-feature functions and intrinsics.
#![allow(unsafe_code)]

/// Unmasks (or masks: the operation is its own inverse) `buf` in place, continuing `key` at
/// payload position `offset`.
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    // Below one block the dispatch costs more than it saves.
    if buf.len() < BLOCK {
        return unmask_tail(buf, key);
    }
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

#[inline(always)]
fn unmask_blocks(buf: &mut [u8], key: [u8; 4]) {
    let mut wide = [0u8; BLOCK];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, k) in block.iter_mut().zip(wide.iter()) {
            *b ^= *k;
        }
    }
    // BLOCK is a multiple of 4, so the tail starts at key phase 0.
    unmask_tail(blocks.into_remainder(), key);
}

#[inline(always)]
fn unmask_tail(buf: &mut [u8], key: [u8; 4]) {
    let mut words = buf.chunks_exact_mut(4);
    let k = u32::from_ne_bytes(key);
    for w in &mut words {
        let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) ^ k;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unmask_avx2(buf: &mut [u8], key: [u8; 4]) {
    unmask_blocks(buf, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unmask_avx512(buf: &mut [u8], key: [u8; 4]) {
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
