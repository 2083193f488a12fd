//! Text normalisation before hashing, so that copies differing only in case,
//! spacing, punctuation, Unicode compatibility forms (or, optionally, numbers)
//! hash the same.
//!
//! Order: NFKC, lowercase, then one pass that turns punctuation into spaces, digit
//! runs into `0` and whitespace runs into one space. Punctuation becomes a space
//! (not nothing) so `end.Start` still splits into two words, as in datatrove.

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// Which normalisation steps run. The default is every step except digit folding,
/// which would merge "page 3" and "page 4" and so is opt-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeOptions {
    pub nfkc: bool,
    pub lowercase: bool,
    pub strip_punctuation: bool,
    pub collapse_whitespace: bool,
    pub digits_to_zero: bool,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            nfkc: true,
            lowercase: true,
            strip_punctuation: true,
            collapse_whitespace: true,
            digits_to_zero: false,
        }
    }
}

/// Whitespace as Python's `str.split()` sees it: Unicode White_Space plus the
/// ASCII information separators U+001C..U+001F, which Python also splits on.
/// Matching Python matters for the datasketch scheme, whose shingles are defined
/// by `text.split()`.
#[inline]
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[inline]
fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        c.is_punctuation()
    }
}

/// Normalise `text` into `out` (cleared first).
pub fn normalize_into(text: &str, opts: &NormalizeOptions, out: &mut String) {
    out.clear();
    out.reserve(text.len());
    if text.is_ascii() {
        // ASCII is already NFKC: a byte loop, the common case, several times faster
        // than decoding chars.
        let mut bytes = std::mem::take(out).into_bytes();
        push_ascii(text.as_bytes(), opts, &mut bytes, None);
        *out = String::from_utf8(bytes).expect("ASCII in, ASCII out");
    } else if opts.nfkc {
        push_chars(text.nfkc(), opts, out);
    } else {
        push_chars(text.chars(), opts, out);
    }
    if opts.collapse_whitespace && out.ends_with(' ') {
        out.pop();
    }
}

/// [`normalize_into`] that also fills `spans` with the byte spans of the words of
/// `out` when it can do so in the same pass (ASCII text, whitespace collapsed);
/// returns whether it did.
pub fn normalize_words_into(
    text: &str,
    opts: &NormalizeOptions,
    out: &mut String,
    spans: &mut Vec<(usize, usize)>,
) -> bool {
    spans.clear();
    if !(opts.collapse_whitespace && text.is_ascii()) {
        normalize_into(text, opts, out);
        return false;
    }
    out.clear();
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.reserve(text.len());
    push_ascii(text.as_bytes(), opts, &mut bytes, Some(spans));
    *out = String::from_utf8(bytes).expect("ASCII in, ASCII out");
    true
}

/// Convenience wrapper returning a new string.
pub fn normalize(text: &str, opts: &NormalizeOptions) -> String {
    let mut out = String::new();
    normalize_into(text, opts, &mut out);
    out
}

const KEEP: u8 = 0;
const UPPER: u8 = 1;
const PUNCT: u8 = 2;
const SPACE: u8 = 3;
const DIGIT: u8 = 4;

/// Byte classes for the ASCII path. Whitespace is Python's: `\t\n\v\f\r`, space
/// and the separators U+001C..U+001F.
const ASCII_CLASS: [u8; 128] = {
    let mut t = [KEEP; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_uppercase() {
            UPPER
        } else if c.is_ascii_punctuation() {
            PUNCT
        } else if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_whitespace() || c == 0x0b || (c >= 0x1c && c <= 0x1f) {
            SPACE
        } else {
            KEEP
        };
        b += 1;
    }
    t
};

/// `push_chars` for ASCII input, byte by byte (same rules, same output). Every output
/// byte stands for a distinct input byte, so the output is written in place into a
/// buffer of the input's length and truncated at the end: no per-byte growth checks.
fn push_ascii(
    text: &[u8],
    opts: &NormalizeOptions,
    out: &mut Vec<u8>,
    mut spans: Option<&mut Vec<(usize, usize)>>,
) {
    // With `spans` (collapse mode only), each flushed space ends a word, so the words
    // come out of this pass and need no second split.
    let base = out.len();
    out.resize(base + text.len(), 0);
    let buf = &mut out[..];
    let mut w = base;
    let mut word_start = base;
    let mut pending_space = false;
    let mut in_digits = false;
    for &b in text {
        let mut class = ASCII_CLASS[(b & 0x7f) as usize];
        let mut c = b;
        // Letters, and digits unless folded, pass unchanged: the common case.
        let passes = class == KEEP || (class == DIGIT && !opts.digits_to_zero);
        if !passes {
            if class == UPPER {
                class = KEEP;
                if opts.lowercase {
                    c = b.to_ascii_lowercase();
                }
            } else if class == PUNCT {
                if opts.strip_punctuation {
                    class = SPACE;
                    c = b' ';
                } else {
                    class = KEEP;
                }
            }
            match class {
                SPACE if opts.collapse_whitespace => {
                    pending_space = w > base;
                    in_digits = false;
                    continue;
                }
                DIGIT if opts.digits_to_zero => {
                    if in_digits {
                        continue;
                    }
                    in_digits = true;
                    c = b'0';
                }
                _ => in_digits = false,
            }
        } else {
            in_digits = false;
        }
        if pending_space {
            if let Some(sp) = spans.as_deref_mut() {
                sp.push((word_start, w));
            }
            buf[w] = b' ';
            w += 1;
            word_start = w;
            pending_space = false;
        }
        buf[w] = c;
        w += 1;
    }
    if let Some(sp) = spans {
        if word_start < w {
            sp.push((word_start, w));
        }
    }
    out.truncate(w);
}

fn push_chars(chars: impl Iterator<Item = char>, opts: &NormalizeOptions, out: &mut String) {
    // `pending_space`: a space is owed before the next visible char (collapse mode);
    // `in_digits`: inside a digit run already written as `0`.
    let mut pending_space = false;
    let mut in_digits = false;
    let mut emit = |c: char, out: &mut String| {
        let c = if opts.strip_punctuation && is_punct(c) {
            ' '
        } else {
            c
        };
        if opts.collapse_whitespace && is_space(c) {
            pending_space = !out.is_empty();
            in_digits = false;
            return;
        }
        if opts.digits_to_zero && c.is_number_decimal_digit() {
            if in_digits && !pending_space {
                return;
            }
            in_digits = true;
        } else {
            in_digits = false;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(if in_digits { '0' } else { c });
    };
    for c in chars {
        if opts.lowercase && !c.is_lowercase() {
            if c.is_ascii() {
                emit(c.to_ascii_lowercase(), out);
            } else {
                for l in c.to_lowercase() {
                    emit(l, out);
                }
            }
        } else {
            emit(c, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s, &NormalizeOptions::default())
    }

    #[test]
    fn case_space_punct() {
        assert_eq!(
            n("  Hello,   WORLD!\n\tHow are\u{a0}you? "),
            "hello world how are you"
        );
        assert_eq!(n("end.Start"), "end start");
        assert_eq!(n(""), "");
        assert_eq!(n(" ... "), "");
    }

    #[test]
    fn nfkc_folds_compatibility_forms() {
        // Fullwidth letters and the "fi" ligature fold to ASCII.
        assert_eq!(n("\u{ff28}\u{ff45}llo \u{fb01}ne"), "hello fine");
    }

    #[test]
    fn digits_optional() {
        let mut o = NormalizeOptions::default();
        assert_eq!(normalize("page 12 of 345", &o), "page 12 of 345");
        o.digits_to_zero = true;
        assert_eq!(normalize("page 12 of 345, v2.10", &o), "page 0 of 0 v0 0");
    }

    #[test]
    fn ascii_path_matches_char_path() {
        let texts = [
            "  Hello,\tWORLD!! v2.10 \x0b\x1c end  ",
            "",
            "...",
            "a1b22c333 \r\n X",
        ];
        for digits in [false, true] {
            for punct in [false, true] {
                let o = NormalizeOptions {
                    digits_to_zero: digits,
                    strip_punctuation: punct,
                    ..Default::default()
                };
                for t in texts {
                    let mut chars = String::new();
                    push_chars(t.chars(), &o, &mut chars);
                    if chars.ends_with(' ') {
                        chars.pop();
                    }
                    assert_eq!(normalize(t, &o), chars, "{t:?}");
                }
            }
        }
    }

    #[test]
    fn fused_word_spans() {
        let mut out = String::new();
        let mut spans = vec![];
        let o = NormalizeOptions::default();
        assert!(normalize_words_into(
            "  Hi, there!  big   World ",
            &o,
            &mut out,
            &mut spans
        ));
        assert_eq!(out, "hi there big world");
        let words: Vec<&str> = spans.iter().map(|&(a, b)| &out[a..b]).collect();
        assert_eq!(words, vec!["hi", "there", "big", "world"]);
        assert!(normalize_words_into(" ... ", &o, &mut out, &mut spans));
        assert!(spans.is_empty() && out.is_empty());
        assert!(!normalize_words_into(
            "café au lait",
            &o,
            &mut out,
            &mut spans
        ));
    }

    #[test]
    fn all_off_is_identity() {
        let o = NormalizeOptions {
            nfkc: false,
            lowercase: false,
            strip_punctuation: false,
            collapse_whitespace: false,
            digits_to_zero: false,
        };
        let s = "  Mixed\tCASE, text!\u{ff28} ";
        assert_eq!(normalize(s, &o), s);
    }
}
