//! Incremental UTF-8 validation for text messages that arrive in pieces (fragments, partial
//! reads). It fails at the first byte that cannot begin or continue a valid sequence, even when
//! the message is far from complete (RFC 6455 §8.1 "fail fast"), and carries an incomplete
//! sequence (at most 3 bytes) across piece boundaries.

/// The bytes seen so far are not a prefix of any valid UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Streaming validator state: the unfinished trailing sequence of the bytes fed so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    pub const fn new() -> Utf8Validator {
        Utf8Validator { partial: [0; 4], partial_len: 0 }
    }

    /// Validates the next piece. `Err` means no continuation can make the text valid.
    #[inline]
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = sequence_len(self.partial[0]).saturating_sub(have);
            let take = need.min(piece.len());
            let (head, rest) = piece.split_at(take);
            self.partial[have..have + take].copy_from_slice(head);
            let filled = have + take;
            match validate(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix and the piece is used up: wait for more.
                Err(_) => {
                    self.partial_len = filled as u8;
                    return Ok(());
                }
            }
            piece = rest;
        }
        match validate(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // `error_len() == None`: the piece ends inside a sequence that is valid so far.
                let tail = piece.get(e.valid_up_to()..).unwrap_or_default();
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The unfinished sequence carried from the pieces fed so far (at most 3 bytes).
    pub fn pending(&self) -> &[u8] {
        &self.partial[..usize::from(self.partial_len)]
    }

    /// Ends the text: valid only if no sequence is left unfinished.
    #[inline]
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// Whole-slice validation: SIMD with runtime CPU detection, std's error detail.
#[inline]
pub fn validate(bytes: &[u8]) -> Result<&str, simdutf8::compat::Utf8Error> {
    simdutf8::compat::from_utf8(bytes)
}

/// Length of the sequence a lead byte starts. Only called on a byte std already accepted as
/// the start of an incomplete sequence, so it is one of 0xC2..=0xF4.
#[inline]
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<Result<(), InvalidUtf8>> {
        let mut results = Vec::new();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let r = v.feed(&bytes[..cut]).and_then(|_| v.feed(&bytes[cut..])).and_then(|_| v.finish());
            results.push(r);
        }
        results
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            b"",
            b"hello",
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{7FF}\u{FFFF}a".as_bytes(),
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xf4, 0x90, 0x80, 0x80],
            &[0xed, 0xa0, 0x80],       // surrogate
            &[0xc0, 0xaf],             // overlong
            &[0xf8, 0x88, 0x80, 0x80], // 5-byte form
            &[0xe0, 0x80],             // truncated overlong
            &[0xf0, 0x9f, 0x98],       // truncated at the end
            &[0x80],
        ];
        for s in samples {
            let want = std::str::from_utf8(s).map(|_| ()).map_err(|_| InvalidUtf8);
            for (cut, got) in split_everywhere(s).into_iter().enumerate() {
                assert_eq!(got, want, "{s:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        // Autobahn 6.4.1: the invalid code point arrives in the second fragment.
        let mut v = Utf8Validator::new();
        v.feed(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5]).unwrap();
        assert_eq!(v.feed(&[0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn byte_by_byte_agrees_with_std() {
        let text = "a€𝄞ü".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }
}
