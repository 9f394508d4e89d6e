//! Byte-class bit sets: bit `i` says whether byte `i` of a text is in a class.
//!
//! The evasion checks and the digit and encoded-run scans look for short byte patterns
//! (`x y z` single letters, a leet digit between letters, a run of 16 base64 bytes). Written
//! as loops they branch on every byte; as bit sets they become a few shifts and ANDs per 64
//! bytes, and building a set compiles to vector compares (bytes are classified into a block
//! of 0/1 bytes, then packed eight at a time with a multiply).

/// A set of byte positions of one text, 64 per word. Bits past the text are clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

/// Packs eight 0/1 bytes into the low eight bits (byte `k` to bit `k`).
#[inline(always)]
fn pack8(ones: [u8; 8]) -> u64 {
    u64::from_le_bytes(ones).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

#[inline(always)]
fn block_mask(block: &[u8; 64], class: impl Fn(u8) -> bool) -> u64 {
    let mut ones = [0u8; 64];
    for (one, &b) in ones.iter_mut().zip(block) {
        *one = u8::from(class(b));
    }
    let mut mask = 0u64;
    for (k, eight) in ones.chunks_exact(8).enumerate() {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(eight);
        mask |= pack8(lanes) << (k * 8);
    }
    mask
}

impl Bits {
    /// The positions of `bytes` whose byte is in `class`.
    #[inline(always)]
    pub(crate) fn of(bytes: &[u8], class: impl Fn(u8) -> bool + Copy) -> Bits {
        let mut words = Vec::with_capacity(bytes.len().div_ceil(64));
        let mut chunks = bytes.chunks_exact(64);
        for chunk in &mut chunks {
            let mut block = [0u8; 64];
            block.copy_from_slice(chunk);
            words.push(block_mask(&block, class));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut block = [0u8; 64];
            block[..rest.len()].copy_from_slice(rest);
            let valid = (1u64 << rest.len()) - 1;
            words.push(block_mask(&block, class) & valid);
        }
        Bits {
            words,
            len: bytes.len(),
        }
    }

    /// Number of 64-bit words.
    pub(crate) fn words(&self) -> usize {
        self.words.len()
    }

    /// Word `w` (zero past the end).
    #[inline(always)]
    pub(crate) fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    /// Word `w` of the set moved back by `k < 64`: bit `i` says whether byte `i + k` is in it.
    #[inline(always)]
    pub(crate) fn ahead(&self, w: usize, k: u32) -> u64 {
        if k == 0 {
            return self.word(w);
        }
        (self.word(w) >> k) | (self.word(w + 1) << (64 - k))
    }

    /// Word `w` of the set moved on by `k < 64`: bit `i` says whether byte `i - k` is in it.
    #[inline(always)]
    pub(crate) fn behind(&self, w: usize, k: u32) -> u64 {
        if k == 0 {
            return self.word(w);
        }
        let before = if w == 0 { 0 } else { self.word(w - 1) };
        (self.word(w) << k) | (before >> (64 - k))
    }

    /// A set made word by word (`word(w)` for each word of `self`).
    pub(crate) fn derive(&self, word: impl Fn(usize) -> u64) -> Bits {
        let tail = self.len % 64;
        let last = self.words.len().saturating_sub(1);
        let words = (0..self.words.len())
            .map(|w| {
                let v = word(w);
                if w == last && tail != 0 {
                    v & ((1u64 << tail) - 1)
                } else {
                    v
                }
            })
            .collect();
        Bits {
            words,
            len: self.len,
        }
    }

    pub(crate) fn any(&self) -> bool {
        self.words.iter().any(|&w| w != 0)
    }

    /// The set positions, in order.
    pub(crate) fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + bit)
            })
        })
    }

    /// The first set position at or after `from`.
    pub(crate) fn next_one(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut word = self.words.get(w)? & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            word = *self.words.get(w)?;
        }
    }
}

/// Class predicates written as compares without table lookups or branches, so that
/// [`Bits::of`] compiles to vector code.
pub(crate) mod class {
    #[inline(always)]
    pub(crate) fn digit(b: u8) -> bool {
        b.wrapping_sub(b'0') < 10
    }

    #[inline(always)]
    pub(crate) fn alpha(b: u8) -> bool {
        (b | 0x20).wrapping_sub(b'a') < 26
    }

    #[inline(always)]
    pub(crate) fn alnum(b: u8) -> bool {
        alpha(b) | digit(b)
    }

    #[inline(always)]
    pub(crate) fn hex(b: u8) -> bool {
        digit(b) | ((b | 0x20).wrapping_sub(b'a') < 6)
    }

    /// Bytes of base64 (standard and URL-safe alphabets).
    #[inline(always)]
    pub(crate) fn base64(b: u8) -> bool {
        alnum(b) | (b == b'+') | (b == b'/') | (b == b'-') | (b == b'_')
    }

    /// Whether `b` is one of `set` (a non-short-circuit OR of compares).
    #[inline(always)]
    pub(crate) fn one_of<const N: usize>(b: u8, set: [u8; N]) -> bool {
        set.iter().fold(false, |acc, &c| acc | (b == c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(bytes: &[u8], class: impl Fn(u8) -> bool) -> Vec<usize> {
        (0..bytes.len()).filter(|&i| class(bytes[i])).collect()
    }

    #[test]
    fn class_predicates_match_std() {
        for b in 0..=255u8 {
            assert_eq!(class::digit(b), b.is_ascii_digit());
            assert_eq!(class::alpha(b), b.is_ascii_alphabetic());
            assert_eq!(class::alnum(b), b.is_ascii_alphanumeric());
            assert_eq!(class::hex(b), b.is_ascii_hexdigit());
            assert_eq!(
                class::base64(b),
                b.is_ascii_alphanumeric() || b"+/-_".contains(&b)
            );
        }
    }

    proptest! {
        #[test]
        fn sets_and_shifts_agree_with_byte_loops(
            bytes in proptest::collection::vec(proptest::sample::select(&b"ab1 -\xc3"[..]), 0..300),
            k in 0usize..64,
            from in 0usize..320,
        ) {
            let is_a = |b: u8| b == b'a';
            let set = Bits::of(&bytes, is_a);
            let expect = naive(&bytes, is_a);
            prop_assert_eq!(set.ones().collect::<Vec<_>>(), expect.clone());
            prop_assert_eq!(set.any(), !expect.is_empty());
            prop_assert_eq!(set.next_one(from), expect.iter().copied().find(|&i| i >= from));
            let k32 = u32::try_from(k).unwrap();
            let ahead: Vec<usize> = (0..bytes.len()).filter(|&i| i + k < bytes.len() && is_a(bytes[i + k])).collect();
            prop_assert_eq!(set.derive(|w| set.ahead(w, k32)).ones().collect::<Vec<_>>(), ahead);
            let behind: Vec<usize> = (0..bytes.len()).filter(|&i| i >= k && is_a(bytes[i - k])).collect();
            prop_assert_eq!(set.derive(|w| set.behind(w, k32)).ones().collect::<Vec<_>>(), behind);
            let digits = Bits::of(&bytes, |b| b == b'1');
            let either = Bits::of(&bytes, |b| b == b'a' || b == b'1');
            prop_assert_eq!(either.derive(|w| either.word(w) & !digits.word(w)).ones().collect::<Vec<_>>(), expect);
            prop_assert_eq!(set.words(), bytes.len().div_ceil(64));
        }
    }
}
