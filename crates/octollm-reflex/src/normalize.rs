//! Normalisation for injection matching, with a map from every normalised byte back to the
//! original text.
//!
//! PII detection runs on the original text. Injection detection runs on this normalised form,
//! where evasions are undone: compatibility decomposition (the "K" of NFKC: fullwidth,
//! mathematical and circled letters become ASCII), combining marks dropped (`ïgnore` →
//! `ignore`, slightly stronger than NFKC), confusable Cyrillic and Greek letters folded to
//! ASCII, zero-width and bidi controls removed, case folded, whitespace runs collapsed (a
//! newline is kept as `\n`, so line-anchored role tags still work), and letter-spaced words
//! (`i g n o r e`, `I.G.N.O.R.E`) joined.
//!
//! Every byte of the normalised text remembers the byte offset of the original char it came
//! from, so a match maps back to a span of the original text on char boundaries
//! ([`Normalized::original_span`]).

use crate::bits::{self, Bits};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Zero-width characters, bidi controls and other invisible format characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Letters from other scripts that render like Latin ones, and typographic punctuation that
/// stands for ASCII punctuation. Applied after compatibility decomposition.
pub(crate) fn fold_confusable(c: char) -> char {
    match c {
        'а' | 'А' | 'α' | 'Α' | 'ɑ' => 'a',
        'в' | 'В' | 'β' | 'Β' | 'Ь' | 'ь' => 'b',
        'с' | 'С' | 'ϲ' | 'Ϲ' => 'c',
        'ԁ' | 'Ԁ' => 'd',
        'е' | 'Е' | 'ε' | 'Ε' | 'ё' | 'Ё' | 'є' | 'Є' => 'e',
        'ɡ' | 'ց' => 'g',
        'һ' | 'Һ' | 'Н' | 'н' | 'Η' => 'h',
        'і' | 'І' | 'ι' | 'Ι' | 'ı' | 'ӏ' | 'Ӏ' | 'ǀ' | 'ɪ' => 'i',
        'ј' | 'Ј' | 'ϳ' => 'j',
        'к' | 'К' | 'κ' | 'Κ' => 'k',
        'ⅼ' | 'ℓ' => 'l',
        'м' | 'М' | 'Μ' => 'm',
        'п' | 'η' | 'Ν' | 'ո' => 'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' | 'օ' | 'ө' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ԛ' => 'q',
        'г' | 'ʀ' => 'r',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' | 'τ' | 'Τ' => 't',
        'υ' | 'ս' | 'ц' => 'u',
        'ν' | 'ѵ' | 'Ѵ' => 'v',
        'ω' | 'ԝ' | 'Ԝ' | 'ɯ' => 'w',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'у' | 'У' | 'γ' | 'Υ' | 'ү' | 'Ү' => 'y',
        'Ζ' | 'ᴢ' => 'z',
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}'
        | '\u{FF07}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
        | '\u{00BB}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        other => other,
    }
}

/// Normalised text and, for each of its bytes, the original byte offset it came from.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    text: String,
    origin: Vec<usize>,
}

impl Normalized {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The smallest span of `original` (the text this was built from) that covers the chars a
    /// normalised byte span came from. Always on char boundaries of `original`.
    pub fn original_span(&self, original: &str, start: usize, end: usize) -> (usize, usize) {
        let (Some(&first), Some(&last)) = (
            self.origin
                .get(start.min(self.origin.len().saturating_sub(1))),
            self.origin.get(
                end.saturating_sub(1)
                    .max(start)
                    .min(self.origin.len().saturating_sub(1)),
            ),
        ) else {
            return (0, 0);
        };
        let last_len = original
            .get(last..)
            .and_then(|s| s.chars().next())
            .map_or(0, char::len_utf8);
        (first, (last + last_len).max(first))
    }

    /// The same text with leetspeak digits and symbols folded to letters (`1gn0r3` →
    /// `ignore`). Each replacement is one ASCII byte for one ASCII byte, so offsets are unchanged.
    pub fn leet_folded(&self) -> Normalized {
        let text: String = self
            .text
            .chars()
            .map(|c| match c {
                '0' => 'o',
                '1' | '!' | '|' => 'i',
                '3' => 'e',
                '4' | '@' => 'a',
                '5' | '$' => 's',
                '7' => 't',
                '8' => 'b',
                '9' => 'g',
                other => other,
            })
            .collect();
        Normalized {
            text,
            origin: self.origin.clone(),
        }
    }
}

/// One normalised char and the original offset it came from.
#[derive(Clone, Copy)]
struct Unit {
    c: char,
    origin: usize,
}

/// Appends the folded, lower-cased form of `c` to `out`.
fn fold_char(c: char, out: &mut Vec<char>) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) || is_invisible(d) {
            return;
        }
        let d = fold_confusable(d);
        out.extend(d.to_lowercase());
    });
}

fn is_letter_separator(c: char) -> bool {
    matches!(c, ' ' | '.' | '-' | '_' | '*' | '|' | '/' | '+' | '~' | ',')
}

/// Normalised text with its offset map (see the module documentation).
pub fn normalize_mapped(text: &str) -> Normalized {
    if text.is_ascii() && !has_spaced_letters(text.as_bytes()) {
        return normalize_ascii(text);
    }
    // Stage 1: fold each char, drop invisibles, collapse whitespace runs to one unit: '\n' when
    // the run holds a newline, two spaces when it is wider than one char, else one space.
    let mut units: Vec<Unit> = Vec::with_capacity(text.len());
    let mut buf: Vec<char> = Vec::with_capacity(8);
    let mut gap: Option<(usize, usize, bool)> = None; // (origin, width, has newline)
    for (i, c) in text.char_indices() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            let (origin, width, nl) = gap.unwrap_or((i, 0, false));
            gap = Some((origin, width + 1, nl || c == '\n'));
            continue;
        }
        buf.clear();
        fold_char(c, &mut buf);
        if buf.is_empty() {
            continue;
        }
        if let Some((origin, width, nl)) = gap.take()
            && !units.is_empty()
        {
            if nl {
                units.push(Unit { c: '\n', origin });
            } else {
                units.push(Unit { c: ' ', origin });
                if width > 1 {
                    units.push(Unit { c: ' ', origin });
                }
            }
        }
        units.extend(buf.iter().map(|&c| Unit { c, origin: i }));
    }

    // Stage 2: join letter-spaced runs of three or more single letters.
    let joined = join_spaced_letters(&units);

    // Stage 3: build the string and the per-byte origin map, collapsing double spaces.
    let mut out = Normalized {
        text: String::with_capacity(joined.len()),
        origin: Vec::with_capacity(joined.len()),
    };
    let mut prev = '\0';
    for mut u in joined {
        // Quotes inside or around words (`ig'nore`, `"ignore" "previous"`) are dropped;
        // hyphens and underscores between words become spaces.
        match u.c {
            '\'' | '"' | '`' => continue,
            '-' | '_' => u.c = ' ',
            _ => {}
        }
        if u.c == ' ' && (prev == ' ' || prev == '\n' || prev == '\0') {
            continue;
        }
        let mut b = [0u8; 4];
        let s = u.c.encode_utf8(&mut b);
        out.text.push_str(s);
        out.origin.extend(std::iter::repeat_n(u.origin, s.len()));
        prev = u.c;
    }
    out
}

/// The same normalisation for ASCII text without letter spacing: one pass over bytes.
fn normalize_ascii(text: &str) -> Normalized {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut origin = Vec::with_capacity(bytes.len());
    // 0: none, 1: space pending, 2: newline pending.
    let mut gap = 0u8;
    let mut gap_at = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => {
                if gap == 0 {
                    gap_at = i;
                }
                gap = 2;
            }
            b' ' | b'\t' | b'\r' | 0x0B | 0x0C | b'-' | b'_' => {
                if gap == 0 {
                    gap_at = i;
                    gap = 1;
                }
            }
            b'\'' | b'"' | b'`' => {}
            _ => {
                if gap != 0 && !out.is_empty() {
                    out.push(if gap == 2 { b'\n' } else { b' ' });
                    origin.push(gap_at);
                }
                gap = 0;
                out.push(b.to_ascii_lowercase());
                origin.push(i);
            }
        }
    }
    Normalized {
        text: String::from_utf8(out).unwrap_or_default(),
        origin,
    }
}

fn is_single_alnum(units: &[Unit], i: usize) -> bool {
    let alnum = |j: usize| units.get(j).is_some_and(|u| u.c.is_alphanumeric());
    alnum(i) && (i == 0 || !alnum(i - 1)) && !alnum(i + 1)
}

fn join_spaced_letters(units: &[Unit]) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        if is_single_alnum(units, i) {
            // Follow letter, separator, letter, … with one separator char in between.
            let mut letters = vec![i];
            let mut j = i;
            let sep = units.get(i + 1).map(|u| u.c);
            while j + 2 < units.len()
                && is_letter_separator(units[j + 1].c)
                && Some(units[j + 1].c) == sep
                && is_single_alnum(units, j + 2)
            {
                j += 2;
                letters.push(j);
            }
            if letters.len() >= 3 {
                out.extend(letters.iter().map(|&k| units[k]));
                i = j + 1;
                continue;
            }
        }
        out.push(units[i]);
        i += 1;
    }
    out
}

/// The normalised text alone.
pub fn normalize(text: &str) -> String {
    normalize_mapped(text).text.trim().to_owned()
}

/// True when plain matching is not enough: non-ASCII text, letter spacing or leetspeak.
pub fn needs_normalizing(bytes: &[u8]) -> bool {
    !bytes.is_ascii() || has_spaced_letters(bytes) || has_leet(bytes) || has_split_word(bytes)
}

/// A quote inside a word that is not a contraction (`ig'nore`, but not `don't`, `it's`).
fn has_split_word(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\'', bytes).any(|i| {
        let letter = |k: usize| bytes.get(k).is_some_and(u8::is_ascii_alphabetic);
        if i == 0 || !letter(i - 1) || !letter(i + 1) {
            return false;
        }
        let suffix_len = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let suffix = bytes[i + 1..i + 1 + suffix_len].to_ascii_lowercase();
        !matches!(
            suffix.as_slice(),
            b"s" | b"t" | b"d" | b"m" | b"re" | b"ve" | b"ll" | b"all" | b"clock"
        )
    })
}

/// A leetspeak character between two letters (`1gn0re`, `s3cret`).
pub fn has_leet(bytes: &[u8]) -> bool {
    let leet = Bits::of(bytes, |b| {
        bits::class::one_of(
            b,
            [b'0', b'1', b'3', b'4', b'5', b'7', b'@', b'$', b'!', b'|'],
        )
    });
    if !leet.any() {
        return false;
    }
    let alpha = Bits::of(bytes, bits::class::alpha);
    (0..leet.words()).any(|w| leet.word(w) & alpha.behind(w, 1) & alpha.ahead(w, 1) != 0)
}

/// True when `bytes` hold a run of three single letters separated by one separator each
/// (`i g n`, `I.G.N`): such text needs [`normalize_mapped`] before matching.
pub fn has_spaced_letters(bytes: &[u8]) -> bool {
    let alnum = Bits::of(bytes, bits::class::alnum);
    // One-character words: x, y, z in `x y z`.
    let single = alnum.derive(|w| alnum.word(w) & !alnum.behind(w, 1) & !alnum.ahead(w, 1));
    if !single.any() {
        return false;
    }
    let separator = Bits::of(bytes, |b| {
        bits::class::one_of(
            b,
            [b' ', b'.', b'-', b'_', b'*', b'|', b'/', b'+', b'~', b','],
        )
    });
    (0..single.words()).any(|w| {
        single.word(w)
            & separator.ahead(w, 1)
            & single.ahead(w, 2)
            & separator.ahead(w, 3)
            & single.ahead(w, 4)
            != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn undoes_evasions() {
        assert_eq!(normalize("Ign\u{200B}ore  PREVIOUS"), "ignore previous");
        assert_eq!(normalize("іgnоrе"), "ignore");
        assert_eq!(normalize("i g n o r e all"), "ignore all");
        assert_eq!(normalize("i g n o r e   a l l"), "ignore all");
        assert_eq!(normalize("I.G.N.O.R.E previous"), "ignore previous");
        assert_eq!(normalize("ｉｇｎｏｒｅ"), "ignore");
        assert_eq!(normalize("𝐢𝐠𝐧𝐨𝐫𝐞"), "ignore");
        assert_eq!(normalize("ïgnörè"), "ignore");
        assert_eq!(normalize("don\u{2019}t"), "dont");
        assert_eq!(normalize("a\u{202E}b\u{2066}c"), "abc");
        assert_eq!(normalize("a b"), "a b");
        assert_eq!(normalize("line one\n\n  system: x"), "line one\nsystem: x");
        assert_eq!(normalize("i_g_n_o_r_e p_r_e_v"), "ignore prev");
        assert_eq!(
            normalize("'Ignore' 'previous' Ig'nore-all"),
            "ignore previous ignore all"
        );
        assert_eq!(normalize("ＩＧ'ＮＯＲＥ-all"), "ignore all");
    }

    #[test]
    fn spans_map_back_to_the_original() {
        let text = "say: Ｉｇｎｏｒｅ\u{200B} all";
        let n = normalize_mapped(text);
        let at = n.as_str().find("ignore").unwrap_or_default();
        let (s, e) = n.original_span(text, at, at + "ignore".len());
        assert_eq!(&text[s..e], "Ｉｇｎｏｒｅ");
        let text = "x i g n o r e y";
        let n = normalize_mapped(text);
        let at = n.as_str().find("ignore").unwrap_or_default();
        let (s, e) = n.original_span(text, at, at + 6);
        assert_eq!(&text[s..e], "i g n o r e");
    }

    #[test]
    fn spaced_letters_are_seen_on_bytes() {
        assert!(has_spaced_letters(b"please i g n o r e it"));
        assert!(has_spaced_letters(b"I.G.N.O.R.E"));
        assert!(!has_spaced_letters(b"a b and c d"));
        assert!(!has_spaced_letters(b"make && make install"));
    }

    /// The first implementations, kept as the reference the table-driven ones must agree with.
    fn reference_has_leet(bytes: &[u8]) -> bool {
        let is_leet = |b: u8| {
            matches!(
                b,
                b'0' | b'1' | b'3' | b'4' | b'5' | b'7' | b'@' | b'$' | b'!' | b'|'
            )
        };
        bytes
            .windows(3)
            .any(|w| is_leet(w[1]) && w[0].is_ascii_alphabetic() && w[2].is_ascii_alphabetic())
    }

    fn reference_has_spaced_letters(bytes: &[u8]) -> bool {
        let alnum = |b: u8| b.is_ascii_alphanumeric();
        let sep = |b: u8| {
            matches!(
                b,
                b' ' | b'.' | b'-' | b'_' | b'*' | b'|' | b'/' | b'+' | b'~' | b','
            )
        };
        let mut run = 0usize;
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            let b = bytes[i];
            if alnum(b) {
                let single =
                    (i == 0 || !alnum(bytes[i - 1])) && (i + 1 >= n || !alnum(bytes[i + 1]));
                if single {
                    run += 1;
                    if run >= 3 {
                        return true;
                    }
                    if i + 1 < n && sep(bytes[i + 1]) {
                        i += 2;
                        continue;
                    }
                }
                run = 0;
                i += 1;
                while i < n && alnum(bytes[i]) {
                    i += 1;
                }
                continue;
            }
            run = 0;
            i += 1;
        }
        false
    }

    proptest! {
        #[test]
        fn fast_checks_agree_with_the_reference(text in "[a-c1-3 .|@$_x]{0,200}") {
            let b = text.as_bytes();
            prop_assert_eq!(has_leet(b), reference_has_leet(b));
            prop_assert_eq!(has_spaced_letters(b), reference_has_spaced_letters(b));
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_maps_inside(text in "\\PC{0,120}", a in 0usize..200, b in 0usize..200) {
            let n = normalize_mapped(&text);
            let (s, e) = n.original_span(&text, a.min(b), a.max(b));
            prop_assert!(s <= e && e <= text.len());
            prop_assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
            let _ = n.leet_folded();
        }
    }
}
