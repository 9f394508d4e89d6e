//! Normalisation for injection matching. PII detection runs on the original text (offsets
//! must point into it); injection detection runs on this normalised form, where evasions
//! such as homoglyphs, zero-width splits and letter spacing are undone.

use unicode_normalization::UnicodeNormalization;

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// Cyrillic and Greek letters that render like Latin ones.
fn fold_confusable(c: char) -> char {
    match c {
        'а' => 'a',
        'е' => 'e',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'у' => 'y',
        'х' => 'x',
        'і' => 'i',
        'ј' => 'j',
        'ѕ' => 's',
        'ԁ' => 'd',
        'ɡ' => 'g',
        'һ' => 'h',
        'ӏ' => 'l',
        'А' => 'a',
        'В' => 'b',
        'Е' => 'e',
        'К' => 'k',
        'М' => 'm',
        'Н' => 'h',
        'О' => 'o',
        'Р' => 'p',
        'С' => 'c',
        'Т' => 't',
        'Х' => 'x',
        'І' => 'i',
        'α' => 'a',
        'ο' => 'o',
        'ρ' => 'p',
        'ν' => 'v',
        'ι' => 'i',
        'κ' => 'k',
        'τ' => 't',
        'Α' => 'a',
        'Β' => 'b',
        'Ε' => 'e',
        'Ι' => 'i',
        'Κ' => 'k',
        'Μ' => 'm',
        'Ν' => 'n',
        'Ο' => 'o',
        'Ρ' => 'p',
        'Τ' => 't',
        'Χ' => 'x',
        'Υ' => 'y',
        'Ζ' => 'z',
        other => other,
    }
}

/// Lower-cased, NFKC-normalised text with invisible characters removed, confusables folded
/// to ASCII, runs of whitespace collapsed, and letter-spaced words (`i g n o r e`) joined.
pub fn normalize(text: &str) -> String {
    let folded: String = text
        .nfkc()
        .filter(|c| !is_invisible(*c))
        .map(fold_confusable)
        .flat_map(char::to_lowercase)
        .collect();
    let mut collapsed = String::with_capacity(folded.len());
    let mut last_space = false;
    for c in folded.chars() {
        if c.is_whitespace() {
            if !last_space {
                collapsed.push(' ');
            }
            last_space = true;
        } else {
            collapsed.push(c);
            last_space = false;
        }
    }
    join_spaced_letters(collapsed.trim())
}

/// `i g n o r e  a l l` → `ignore all`: three or more single letters separated by single
/// spaces are joined; a double gap (collapsed earlier, so use a separator heuristic) cannot be
/// seen, so word boundaries inside such runs are lost, which the patterns tolerate (`\s*`).
fn join_spaced_letters(text: &str) -> String {
    let tokens: Vec<&str> = text.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let single = |t: &str| t.chars().count() == 1 && t.chars().all(char::is_alphanumeric);
        if single(tokens[i]) {
            let start = i;
            while i < tokens.len() && single(tokens[i]) {
                i += 1;
            }
            if i - start >= 3 {
                out.push(tokens[start..i].concat());
            } else {
                out.extend(tokens[start..i].iter().map(|t| (*t).to_owned()));
            }
        } else {
            out.push(tokens[i].to_owned());
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_evasions() {
        assert_eq!(normalize("Ign\u{200B}ore  PREVIOUS"), "ignore previous");
        assert_eq!(normalize("іgnоrе"), "ignore");
        assert_eq!(normalize("i g n o r e all"), "ignore all");
        assert_eq!(normalize("ｉｇｎｏｒｅ"), "ignore");
        assert_eq!(normalize("a b"), "a b");
    }
}
