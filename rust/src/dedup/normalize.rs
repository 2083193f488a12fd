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
    // ASCII text is already NFKC; skipping the decomposition is the common fast path.
    if opts.nfkc && !text.is_ascii() {
        push_chars(text.nfkc(), opts, out);
    } else {
        push_chars(text.chars(), opts, out);
    }
    if opts.collapse_whitespace && out.ends_with(' ') {
        out.pop();
    }
}

/// Convenience wrapper returning a new string.
pub fn normalize(text: &str, opts: &NormalizeOptions) -> String {
    let mut out = String::new();
    normalize_into(text, opts, &mut out);
    out
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
