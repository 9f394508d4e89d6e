//! BERT's uncased WordPiece tokenization, written for speed: the `tokenizers` crate spends
//! about 280 µs on 500 bytes here (normaliser, pre-tokenizer and offsets, each allocating),
//! which would be most of the injection classifier's cost; this does the same steps in one
//! pass over the text.
//!
//! Steps, as `tokenizer.json` of all-MiniLM-L6-v2 configures them (`BertNormalizer` with
//! lowercase and accent stripping, `BertPreTokenizer`, `WordPiece` with `##` and 100 chars per
//! word): control chars dropped, whitespace splits, every punctuation char and every CJK
//! ideograph is a word of its own, letters lowercased and stripped of combining marks, then
//! each word split greedily into the longest vocabulary pieces (`[UNK]` for a word that does not
//! split). The ids equal those of the `tokenizers` crate on ASCII text (a test checks it);
//! elsewhere the punctuation set is a close approximation of Unicode's.

use std::collections::HashMap;

use unicode_normalization::char::{decompose_canonical, is_combining_mark};

const MAX_WORD_CHARS: usize = 100;

pub struct WordPiece {
    /// Pieces that start a word.
    first: HashMap<Box<str>, u32>,
    /// Pieces that continue one, without their `##`.
    rest: HashMap<Box<str>, u32>,
    unk: u32,
}

fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(c as u32,
        0x00A1..=0x00BF | 0x2010..=0x2027 | 0x2030..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011
        | 0x3014..=0x301F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65
        | 0x055A..=0x055F | 0x0589 | 0x05BE | 0x05C0 | 0x05C3 | 0x05F3 | 0x05F4 | 0x060C | 0x061B
        | 0x061F | 0x066A..=0x066D | 0x06D4 | 0x0964 | 0x0965 | 0x0E4F | 0x0E5A | 0x0E5B)
        && !matches!(c as u32, 0x00A2..=0x00A9 | 0x00AC..=0x00B5 | 0x00B8..=0x00BA | 0x00BC..=0x00BE)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    c.is_control()
        || matches!(c as u32, 0x00AD | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0xFEFF)
}

impl WordPiece {
    /// From `tokenizer.json`'s `model.vocab`.
    pub fn from_tokenizer_json(json: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let vocab = value["model"]["vocab"]
            .as_object()
            .ok_or("tokenizer.json: no model.vocab")?;
        let mut first = HashMap::with_capacity(vocab.len());
        let mut rest = HashMap::new();
        for (piece, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("tokenizer.json: bad id for {piece:?}"))?;
            match piece.strip_prefix("##") {
                Some(tail) if !tail.is_empty() => rest.insert(tail.into(), id),
                _ => first.insert(piece.as_str().into(), id),
            };
        }
        let unk = *first.get("[UNK]").ok_or("tokenizer.json: no [UNK]")?;
        Ok(Self { first, rest, unk })
    }

    /// The token ids of `text` (no `[CLS]`/`[SEP]`), appended to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut word = String::with_capacity(32);
        for c in text.chars() {
            if c.is_whitespace() {
                self.flush(&mut word, out);
            } else if is_control(c) || c == '\u{FFFD}' || c == '\0' {
                continue;
            } else if is_punctuation(c) || is_cjk(c) {
                self.flush(&mut word, out);
                let mut one = [0u8; 4];
                self.piece(c.encode_utf8(&mut one), out);
            } else if c.is_ascii() {
                word.push(c.to_ascii_lowercase());
            } else {
                for lower in c.to_lowercase() {
                    decompose_canonical(lower, |d| {
                        if !is_combining_mark(d) {
                            word.push(d);
                        }
                    });
                }
            }
        }
        self.flush(&mut word, out);
    }

    fn flush(&self, word: &mut String, out: &mut Vec<u32>) {
        if !word.is_empty() {
            self.piece(word, out);
            word.clear();
        }
    }

    /// Greedy longest-match-first split of one word.
    fn piece(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 { &self.first } else { &self.rest };
            let mut end = word.len();
            let found = loop {
                if let Some(&id) = table.get(&word[start..end]) {
                    break Some(id);
                }
                end -= 1;
                while end > start && !word.is_char_boundary(end) {
                    end -= 1;
                }
                if end <= start {
                    break None;
                }
            };
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{default_model_dir, embedding_path};

    fn both() -> (WordPiece, tokenizers::Tokenizer) {
        let path = embedding_path(&default_model_dir()).join("tokenizer.json");
        let json = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `octollm model pull`", path.display()));
        let mut reference = tokenizers::Tokenizer::from_file(&path).unwrap();
        reference.with_padding(None);
        reference.with_truncation(None).unwrap();
        (WordPiece::from_tokenizer_json(&json).unwrap(), reference)
    }

    fn ids(w: &WordPiece, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        w.encode(text, &mut out);
        out
    }

    /// Every ASCII text of the reflex corpus, and some made-up ones, tokenize as the
    /// `tokenizers` crate does.
    #[test]
    fn ascii_text_tokenizes_as_the_reference_does() {
        let (w, reference) = both();
        let corpus = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../octollm-reflex/tests/corpus"
        );
        let mut texts: Vec<String> = vec![
            "Hello, world! It's 3:45pm -- don't panic.".into(),
            "supercalifragilisticexpialidocious antidisestablishmentarianism".into(),
            "x".repeat(150),
            "fn main() { println!(\"{}\", a[0] + b.c); } // ok?".into(),
            "tabs\tand\nnewlines\r\nand   spaces".into(),
        ];
        for entry in std::fs::read_dir(corpus).unwrap() {
            let content = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in content.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                texts.push(v["text"].as_str().unwrap().to_owned());
            }
        }
        let mut compared = 0;
        for text in texts.iter().filter(|t| t.is_ascii()) {
            let expected = reference
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(ids(&w, text), expected, "{text:?}");
            compared += 1;
        }
        assert!(compared > 400, "{compared}");
    }

    #[test]
    fn accents_cjk_and_controls_follow_bert() {
        let (w, reference) = both();
        for text in [
            "Café déjà vu",
            "naïve façade",
            "東京は大きい",
            "a\u{200B}b\u{0007}c",
        ] {
            let expected = reference.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(ids(&w, text), expected, "{text:?}");
        }
    }
}
