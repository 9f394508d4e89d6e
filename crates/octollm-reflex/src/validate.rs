//! Validators that turn a pattern match into a finding or refuse it: checksums (Luhn,
//! IBAN mod-97), number rules (SSN), parsers (IPv4, IPv6), and shape checks (phone digit
//! counts, dates, secret entropy). Each takes the whole original text and the matched span,
//! and returns the span to report (possibly narrowed) with a confidence.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A validator's answer: the span to report and the confidence.
pub type Verdict = Option<(usize, usize, f32)>;

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// Up to `n` bytes of `text` before `at`, on a char boundary.
fn before(text: &str, at: usize, n: usize) -> &str {
    let mut from = at.saturating_sub(n);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..at]
}

fn byte_before(text: &str, start: usize) -> Option<u8> {
    start
        .checked_sub(1)
        .and_then(|i| text.as_bytes().get(i).copied())
}

fn byte_after(text: &str, end: usize) -> Option<u8> {
    text.as_bytes().get(end).copied()
}

/// Not glued to a longer run of digit groups (`1.2.3.4.5`, `12-345-6789-0`).
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let glued_before = match (
        byte_before(text, start),
        start.checked_sub(2).and_then(|i| text.as_bytes().get(i)),
    ) {
        (Some(b), _) if b.is_ascii_alphanumeric() => true,
        (Some(b'.' | b'-' | b'/'), Some(d)) if d.is_ascii_digit() => true,
        _ => false,
    };
    let glued_after = match (byte_after(text, end), text.as_bytes().get(end + 1)) {
        (Some(b), _) if b.is_ascii_alphanumeric() => true,
        (Some(b'.' | b'-' | b'/'), Some(d)) if d.is_ascii_digit() => true,
        _ => false,
    };
    !glued_before && !glued_after
}

pub fn always(_: &str, start: usize, end: usize) -> Verdict {
    Some((start, end, 0.95))
}

pub fn luhn_ok(s: &str) -> bool {
    let ds: Vec<u32> = digits(s).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Luhn, a known issuer prefix, one kind of separator, not all one digit.
pub fn credit_card(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let ds: String = s.chars().filter(char::is_ascii_digit).collect();
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    let one_sep = seps.windows(2).all(|w| w[0] == w[1]);
    let prefix_ok = [
        "4", "51", "52", "53", "54", "55", "22", "23", "24", "25", "26", "27", "34", "37", "6",
        "30", "36", "38", "39", "35",
    ]
    .iter()
    .any(|p| ds.starts_with(p));
    let same = ds.bytes().all(|b| Some(b) == ds.bytes().next());
    // Grouped numbers are grouped like cards: fours (the last group may be shorter) or 4-6-5/4-6-4.
    let groups: Vec<usize> = s.split([' ', '-']).map(str::len).collect();
    let grouped = groups.len() == 1
        || groups[..groups.len() - 1].iter().all(|&g| g == 4)
        || groups == [4, 6, 5]
        || groups == [4, 6, 4];
    // A `+` makes it a phone number; `IMEI`, an account or an IBAN head before it, not a card.
    let lead = before(text, start, 24).trim_end().to_ascii_lowercase();
    let last_word = lead
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("");
    // Bytes, not string slices: the word may hold multi-byte chars.
    let head = last_word.as_bytes();
    let iban_head = head.len() == 4
        && head[..2].iter().all(u8::is_ascii_alphabetic)
        && head[2..].iter().all(u8::is_ascii_digit);
    let not_card = byte_before(text, start) == Some(b'+')
        || iban_head
        || ["imei", "iban", "account", "acct", "order", "tracking"]
            .iter()
            .any(|w| lead.ends_with(w) || lead.trim_end_matches([':', '#', ' ']).ends_with(w));
    (luhn_ok(&ds)
        && prefix_ok
        && one_sep
        && grouped
        && !same
        && !not_card
        && isolated(text, start, end))
    .then_some((start, end, 0.95))
}

/// US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn_ok(ds: &str) -> bool {
    if ds.len() != 9 || !ds.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (area, group, serial) = (&ds[0..3], &ds[3..5], &ds[5..9]);
    !(area == "000" || area == "666" || area.starts_with('9') || group == "00" || serial == "0000")
}

pub fn ssn(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let ds: String = s.chars().filter(char::is_ascii_digit).collect();
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    let one_sep = seps.windows(2).all(|w| w[0] == w[1]);
    (ssn_ok(&ds) && one_sep && isolated(text, start, end)).then_some((start, end, 0.9))
}

/// Digit counts of E.164 (8–15 with a `+`) and national numbers (9–11), not a date, not
/// glued to other digit groups.
pub fn phone(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let n = digits(s).count();
    let plus = s.starts_with('+');
    let ok = if plus {
        (8..=15).contains(&n) && !s[1..].starts_with('0')
    } else {
        (9..=11).contains(&n)
    };
    let all_same = {
        let ds: Vec<u32> = digits(s).collect();
        ds.windows(2).all(|w| w[0] == w[1])
    };
    // A `+` must not be glued to a word or a digit before it (`a+1 …`, `1+2`).
    let lead_ok = !plus || !byte_before(text, start).is_some_and(|b| b.is_ascii_alphanumeric());
    (ok && !all_same && lead_ok && isolated(text, start, end)).then_some((start, end, 0.85))
}

const VERSION_WORDS: &[&str] = &[
    "version", "ver", "release", "build", "firmware", "v", "rev", "revision", "oid",
];

/// A parsed IPv4 address written canonically, not a version string.
pub fn ipv4(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    s.parse::<Ipv4Addr>().ok()?;
    let glued = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.');
    let dotted_on = |i: usize| text.as_bytes().get(i).is_some_and(u8::is_ascii_digit);
    if !s.split('.').all(|o| o == "0" || !o.starts_with('0'))
        || glued(byte_before(text, start))
            && (byte_before(text, start) != Some(b'.') || start >= 2 && dotted_on(start - 2))
        || glued(byte_after(text, end))
            && (byte_after(text, end) != Some(b'.') || dotted_on(end + 1))
    {
        return None;
    }
    // "upgraded from 1.2.3.4 to 1.2.4.0": version talk shortly before.
    let from = start.saturating_sub(40);
    let window = text.get(from..start).unwrap_or("").to_ascii_lowercase();
    if [
        "version", "upgrad", "downgrad", "releas", "firmware", "bump",
    ]
    .iter()
    .any(|w| window.contains(w))
    {
        return None;
    }
    // "version 1.2.3.4", "v1.2.3.4", "release: 10.0.0.1" are versions, not addresses.
    let before = before(text, start, 24)
        .trim_end_matches([' ', ':', '=', '\t'])
        .to_ascii_lowercase();
    let word_before = before
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    if VERSION_WORDS.contains(&word_before) {
        return None;
    }
    Some((start, end, 0.85))
}

/// A parsed IPv6 address, not glued to words, with a digit or at least three groups.
pub fn ipv6(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let addr_part = s.split(['%', '/']).next().unwrap_or(s);
    addr_part.parse::<Ipv6Addr>().ok()?;
    let glued =
        |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'_');
    if glued(byte_before(text, start)) || glued(byte_after(text, end)) {
        return None;
    }
    let groups = addr_part.split(':').filter(|g| !g.is_empty()).count();
    let has_digit = addr_part.bytes().any(|b| b.is_ascii_digit());
    (has_digit && (groups >= 3 || addr_part.contains("::"))).then_some((start, end, 0.85))
}

pub fn mac(text: &str, start: usize, end: usize) -> Verdict {
    let glued =
        |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'-');
    (!glued(byte_before(text, start)) && !glued(byte_after(text, end))).then_some((start, end, 0.9))
}

/// Known IBAN lengths by country; others must be 15–34 characters.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        _ => return None,
    })
}

pub fn iban_ok(compact: &str) -> bool {
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Mod-97 over the country's IBAN length (the match may run into following words).
pub fn iban(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let country = s.get(..2)?;
    // Offsets (in `s`) just after each alphanumeric character.
    let mut compact = String::new();
    let mut ends = Vec::new();
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphanumeric() {
            compact.push(c);
            ends.push(i + 1);
        }
    }
    let lengths: Vec<usize> = match iban_length(country) {
        Some(n) => vec![n],
        None => (15..=34).rev().collect(),
    };
    for n in lengths {
        if n <= compact.len() && iban_ok(&compact[..n]) {
            let e = start + ends[n - 1];
            if byte_after(text, e).is_some_and(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            return Some((start, e, 0.95));
        }
    }
    None
}

fn month_of(word: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let w = word.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| w.starts_with(m))
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// A plausible calendar date: month 1–12, day 1–31 (either order for numeric dates).
pub fn date(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let nums: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect();
    let word_month = s
        .split(|c: char| !c.is_ascii_alphabetic())
        .find_map(month_of);
    let ok = match (word_month, nums.as_slice()) {
        (Some(_), [d, y]) | (Some(_), [y, d]) if *y >= 1900 => (1..=31).contains(d),
        (None, [y, m, d]) if *y >= 1000 => (1..=12).contains(m) && (1..=31).contains(d),
        (None, [a, b, _]) => {
            ((1..=12).contains(a) && (1..=31).contains(b))
                || ((1..=31).contains(a) && (1..=12).contains(b))
        }
        _ => false,
    };
    ok.then_some((start, end, 0.85))
}

/// An identity-document number: at least two digits, not a date or a plain word.
pub fn document_number(text: &str, start: usize, end: usize) -> Verdict {
    let s = &text[start..end];
    let n = s.bytes().filter(u8::is_ascii_digit).count();
    (n >= 2 && s.len() >= 5).then_some((start, end, 0.8))
}

/// Shannon entropy in bits per character.
pub fn entropy(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

const PLACEHOLDERS: &[&str] = &[
    "xxx",
    "***",
    "...",
    "your",
    "changeme",
    "redacted",
    "placeholder",
    "env",
    "getenv",
    "environ",
    "secret_",
    "password",
    "token",
    "none",
    "null",
    "undefined",
    "<",
    "{{",
    "${",
    "$(",
    "(",
    "todo",
];

/// A value after `password=`/`token=`/…: long enough, mixed character classes, random-looking,
/// and not a placeholder, an environment lookup or a dotted identifier.
pub fn credential(text: &str, start: usize, end: usize) -> Verdict {
    let v = text[start..end].trim_end_matches(['.', ',', ')', ']', '}']);
    let end = start + v.len();
    if v.len() < 8 {
        return None;
    }
    let lower = v.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return None;
    }
    let identifier_path = v.split('.').count() > 1
        && v.split('.').all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !p.bytes().all(|b| b.is_ascii_digit())
        });
    if identifier_path && !v.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let classes = [
        v.bytes().any(|b| b.is_ascii_lowercase()),
        v.bytes().any(|b| b.is_ascii_uppercase()),
        v.bytes().any(|b| b.is_ascii_digit()),
        v.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|&&x| x)
    .count();
    let e = entropy(v);
    let ok = (classes >= 3 && e >= 2.5) || (classes >= 2 && v.len() >= 16 && e >= 3.0);
    ok.then_some((start, end, 0.85))
}

/// A password in a connection string (`postgres://user:PASS@host`): not a placeholder.
pub fn url_password(text: &str, start: usize, end: usize) -> Verdict {
    let lower = text[start..end].to_ascii_lowercase();
    (!PLACEHOLDERS.iter().any(|p| lower.contains(p)) && end - start >= 4)
        .then_some((start, end, 0.85))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: fn(&str, usize, usize) -> Verdict, s: &str) -> bool {
        f(s, 0, s.len()).is_some()
    }

    #[test]
    fn checksums() {
        assert!(ok(credit_card, "4111 1111 1111 1111"));
        assert!(ok(credit_card, "378282246310005"));
        assert!(!ok(credit_card, "4111 1111 1111 1112"), "Luhn");
        assert!(!ok(credit_card, "4111-1111 1111-1111"), "mixed separators");
        assert!(!ok(credit_card, "0000 0000 0000 0000"));
        assert!(ok(iban, "DE89 3704 0044 0532 0130 00"));
        assert!(ok(iban, "GB82WEST12345698765432"));
        assert!(!ok(iban, "DE89 3704 0044 0532 0130 01"), "mod-97");
        assert_eq!(
            iban("GB82 WEST 1234 5698 7654 32 OK", 0, 30).map(|v| v.1),
            Some(27)
        );
    }

    #[test]
    fn number_rules() {
        assert!(ok(ssn, "123-45-6789"));
        assert!(ok(ssn, "123 45 6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45 6789",
        ] {
            assert!(!ok(ssn, bad), "{bad}");
        }
        assert!(ok(phone, "+14155552671"));
        assert!(ok(phone, "(415) 555-2671"));
        assert!(!ok(phone, "+0 123 456"));
        assert!(!ok(phone, "555-5555"));
    }

    #[test]
    fn parsers() {
        assert!(ok(ipv4, "192.168.1.20"));
        assert!(!ok(ipv4, "256.1.1.1"));
        assert!(!ok(ipv4, "1.02.3.4"));
        let t = "version 1.2.3.4";
        assert!(ipv4(t, 8, t.len()).is_none());
        let t = "v1.2.3.4";
        assert!(ipv4(t, 1, t.len()).is_none());
        assert!(ok(ipv6, "2001:db8::8a2e:370:7334"));
        assert!(ok(ipv6, "::1"));
        assert!(!ok(ipv6, "12:30:45"));
        assert!(ok(mac, "00:1A:2B:3C:4D:5E"));
    }

    #[test]
    fn dates_documents_and_secrets() {
        assert!(ok(date, "1985-03-14"));
        assert!(ok(date, "03/14/1985"));
        assert!(ok(date, "March 14, 1985"));
        assert!(!ok(date, "13/13/1985"));
        assert!(ok(document_number, "X1234567"));
        assert!(!ok(document_number, "number"));
        assert!(ok(credential, "Xk9#mQ2$vL7pR4"));
        assert!(!ok(credential, "aaaaaaaaaaaa"));
        assert!(!ok(credential, "self.password"));
        assert!(!ok(credential, "os.environ['KEY']"));
        assert!(!ok(credential, "4096"));
    }
}
