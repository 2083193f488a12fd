//! MinHash signatures over word n-gram shingles.
//!
//! Three schemes share one shingling rule (the text, normalised unless disabled,
//! split on whitespace; each run of `ngram` consecutive words is a shingle; a text of
//! fewer words is one shingle; an empty text has none) and differ in hashing:
//!
//! - `Fast` (default): xxh3 per word, words of a window folded into 64 bits, then the
//!   affine permutation `a*h + b mod 2**32` of datasketch 2.x. Hashing words once
//!   instead of every joined shingle is most of the speed.
//! - `Datasketch`: datasketch 2.x `MinHash()` defaults (`scheme="affine32"`): SHA-1
//!   first 4 bytes little-endian, MurmurHash3 `fmix32`, then the affine permutation.
//! - `DatasketchLegacy`: datasketch `scheme="legacy"` (the only scheme before 2.0):
//!   `((a*h + b) mod 2**64) mod (2**61 - 1) & 0xFFFFFFFF`, stored as u64.
//!
//! Performance notes: words are hashed once (not every joined shingle); after
//! normalisation words are split on single spaces with a SIMD search; the permutation
//! kernels live in [`super::kernels`].

use sha1::{Digest, Sha1};
use xxhash_rust::xxh3::xxh3_64;

use super::kernels::{affine32, fmix32, legacy, MERSENNE};
use super::mt19937::RandomState;
use super::normalize::{is_space, normalize_into, normalize_words_into, NormalizeOptions};
use crate::error::{bad_choice, LadleError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Fast,
    Datasketch,
    DatasketchLegacy,
}

impl std::str::FromStr for Scheme {
    type Err = LadleError;
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "fast" => Ok(Scheme::Fast),
            "datasketch" => Ok(Scheme::Datasketch),
            "datasketch-legacy" => Ok(Scheme::DatasketchLegacy),
            other => Err(bad_choice(
                "MinHash scheme",
                other,
                &["fast", "datasketch", "datasketch-legacy"],
            )),
        }
    }
}

/// Upper bound on permutations: far above any useful value (datasketch's default is
/// 128), low enough that a typo cannot ask for terabytes or an endless band search.
pub const MAX_NUM_PERM: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct MinHashParams {
    pub scheme: Scheme,
    pub num_perm: usize,
    pub ngram: usize,
    pub seed: u32,
    /// `None`: hash the text as given (no normalisation).
    pub normalize: Option<NormalizeOptions>,
}

/// Signature values: u32 for the affine schemes, u64 for the legacy one (the dtypes
/// of datasketch's `hashvalues`).
pub enum Signatures {
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// Per-thread buffers reused across documents.
#[derive(Default)]
pub struct Scratch {
    norm: String,
    words: Vec<u64>,
    spans: Vec<(usize, usize)>,
    bytes: Vec<u8>,
    h32: Vec<u32>,
    h64: Vec<u64>,
    /// `spans` already hold the words of the prepared text (filled by normalisation).
    spans_ready: bool,
}

pub struct MinHasher {
    pub params: MinHashParams,
    a32: Vec<u32>,
    b32: Vec<u32>,
    a64: Vec<u64>,
    b64: Vec<u64>,
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> Result<Self> {
        if !(1..=MAX_NUM_PERM).contains(&params.num_perm) {
            return Err(LadleError::Value(format!(
                "num_perm must be in 1..={MAX_NUM_PERM}, got {}",
                params.num_perm
            )));
        }
        if params.ngram == 0 {
            return Err(LadleError::Value("ngram must be at least 1".into()));
        }
        let (mut a32, mut b32, mut a64, mut b64) = (vec![], vec![], vec![], vec![]);
        let mut gen = RandomState::new(params.seed);
        match params.scheme {
            Scheme::DatasketchLegacy => {
                // Interleaved a, b draws, as datasketch's list comprehension makes them.
                for _ in 0..params.num_perm {
                    a64.push(gen.randint_u64(1, MERSENNE));
                    b64.push(gen.randint_u64(0, MERSENNE));
                }
            }
            Scheme::Datasketch | Scheme::Fast => {
                // Vectorised draws: all of a (odd), then all of b.
                a32 = (0..params.num_perm)
                    .map(|_| gen.randint_u32(0, 1 << 31).wrapping_mul(2).wrapping_add(1))
                    .collect();
                b32 = (0..params.num_perm)
                    .map(|_| gen.randint_u32(0, 1 << 32))
                    .collect();
            }
        }
        Ok(MinHasher {
            params,
            a32,
            b32,
            a64,
            b64,
        })
    }

    /// The permutation parameters `(a, b)` as u64, for checking against datasketch.
    pub fn permutations(&self) -> (Vec<u64>, Vec<u64>) {
        match self.params.scheme {
            Scheme::DatasketchLegacy => (self.a64.clone(), self.b64.clone()),
            _ => (
                self.a32.iter().map(|&v| v as u64).collect(),
                self.b32.iter().map(|&v| v as u64).collect(),
            ),
        }
    }

    fn single_spaced(&self) -> bool {
        self.params.normalize.is_some_and(|o| o.collapse_whitespace)
    }

    pub fn is_u64(&self) -> bool {
        self.params.scheme == Scheme::DatasketchLegacy
    }

    /// The text the shingles come from: normalised into `norm`, or `text` itself.
    pub fn prepare<'a>(&self, text: &'a str, norm: &'a mut String) -> &'a str {
        match &self.params.normalize {
            Some(opts) => {
                normalize_into(text, opts, norm);
                norm
            }
            None => text,
        }
    }

    /// [`Self::prepare`] that also records the words in `scratch` when normalisation
    /// can find them in the same pass; follow with [`Self::signature_prepared`].
    pub fn prepare_words<'a>(
        &self,
        text: &'a str,
        norm: &'a mut String,
        scratch: &mut Scratch,
    ) -> &'a str {
        match &self.params.normalize {
            Some(opts) => {
                scratch.spans_ready = normalize_words_into(text, opts, norm, &mut scratch.spans);
                norm
            }
            None => {
                scratch.spans_ready = false;
                text
            }
        }
    }

    fn words_of(&self, s: &str, scratch: &mut Scratch) {
        if !std::mem::take(&mut scratch.spans_ready) {
            split_words(s, &mut scratch.spans, self.single_spaced());
        }
    }

    /// 64-bit hashes of the fast scheme's shingles of an already prepared text into
    /// `scratch.h64` (not deduplicated). They also identify shingles for true-Jaccard
    /// verification in every scheme: the shingle sets are the same, only the hash the
    /// signature uses differs.
    fn fast_shingles(&self, s: &str, scratch: &mut Scratch) {
        self.words_of(s, scratch);
        scratch.words.clear();
        scratch.words.extend(
            scratch
                .spans
                .iter()
                .map(|&(a, b)| xxh3_64(&s.as_bytes()[a..b])),
        );
        scratch.h64.clear();
        let (n, words) = (self.params.ngram, &scratch.words);
        if !words.is_empty() {
            let width = n.min(words.len());
            for w in 0..=words.len() - width {
                scratch.h64.push(fold(&words[w..w + width]));
            }
        }
    }

    /// Sorted, deduplicated 64-bit shingle hashes of a raw text: the set whose Jaccard
    /// similarity verification and reports use.
    pub fn shingle_set(&self, text: &str, scratch: &mut Scratch) -> Vec<u64> {
        let mut norm = std::mem::take(&mut scratch.norm);
        let s = self.prepare_words(text, &mut norm, scratch);
        self.fast_shingles(s, scratch);
        scratch.norm = norm;
        let mut v = scratch.h64.clone();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The signature of a raw text; see [`Self::signature_prepared`].
    pub fn signature(
        &self,
        text: &str,
        scratch: &mut Scratch,
        out32: &mut [u32],
        out64: &mut [u64],
    ) -> bool {
        let mut norm = std::mem::take(&mut scratch.norm);
        let s = self.prepare_words(text, &mut norm, scratch);
        let any = self.signature_prepared(s, scratch, out32, out64);
        scratch.norm = norm;
        any
    }

    /// The signature of a prepared text into `out32` or `out64` (whichever the scheme
    /// uses, `num_perm` long). Returns whether the text had any shingle.
    pub fn signature_prepared(
        &self,
        s: &str,
        scratch: &mut Scratch,
        out32: &mut [u32],
        out64: &mut [u64],
    ) -> bool {
        match self.params.scheme {
            Scheme::Fast => {
                self.fast_shingles(s, scratch);
                scratch.h32.clear();
                scratch
                    .h32
                    .extend(scratch.h64.iter().map(|&h| (h ^ (h >> 32)) as u32));
                out32.fill(u32::MAX);
                affine32(&scratch.h32, &self.a32, &self.b32, out32);
                !scratch.h32.is_empty()
            }
            Scheme::Datasketch | Scheme::DatasketchLegacy => {
                self.words_of(s, scratch);
                scratch.h32.clear();
                let (n, spans) = (self.params.ngram, &scratch.spans);
                if !spans.is_empty() {
                    let width = n.min(spans.len());
                    for w in 0..=spans.len() - width {
                        // Words of a window joined by one space, as `" ".join(words)`.
                        let bytes = &mut scratch.bytes;
                        bytes.clear();
                        for (k, &(a, b)) in spans[w..w + width].iter().enumerate() {
                            if k > 0 {
                                bytes.push(b' ');
                            }
                            bytes.extend_from_slice(&s.as_bytes()[a..b]);
                        }
                        let d = Sha1::digest(&bytes[..]);
                        scratch
                            .h32
                            .push(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
                    }
                }
                if self.params.scheme == Scheme::Datasketch {
                    for h in scratch.h32.iter_mut() {
                        *h = fmix32(*h);
                    }
                    out32.fill(u32::MAX);
                    affine32(&scratch.h32, &self.a32, &self.b32, out32);
                } else {
                    out64.fill(u32::MAX as u64);
                    legacy(&scratch.h32, &self.a64, &self.b64, out64);
                }
                !scratch.h32.is_empty()
            }
        }
    }
}

/// Byte spans of the words of `s` (split as Python's `str.split()`). `single_spaced`:
/// `s` came out of normalisation with whitespace collapsed, so words are separated by
/// exactly one ASCII space and a SIMD search for spaces finds them.
fn split_words(s: &str, spans: &mut Vec<(usize, usize)>, single_spaced: bool) {
    spans.clear();
    if single_spaced {
        let mut start = 0;
        for i in memchr::memchr_iter(b' ', s.as_bytes()) {
            spans.push((start, i));
            start = i + 1;
        }
        if start < s.len() {
            spans.push((start, s.len()));
        }
        return;
    }
    if s.is_ascii() {
        let mut start = None;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            if b.is_ascii_whitespace() || b == 0x0b || (0x1c..=0x1f).contains(&b) {
                if let Some(st) = start.take() {
                    spans.push((st, i));
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(st) = start {
            spans.push((st, s.len()));
        }
        return;
    }
    let mut start = None;
    for (i, c) in s.char_indices() {
        if is_space(c) {
            if let Some(st) = start.take() {
                spans.push((st, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        spans.push((st, s.len()));
    }
}

/// Order-sensitive fold of a window of word hashes into one 64-bit shingle hash.
#[inline]
fn fold(words: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ words.len() as u64;
    for &w in words {
        h = (h.rotate_left(23) ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    h ^ (h >> 32)
}

/// Signatures of many texts, row-major (`texts.len() x num_perm`), in parallel.
pub fn signatures(hasher: &MinHasher, texts: &[&str]) -> Signatures {
    use rayon::prelude::*;
    let p = hasher.params.num_perm;
    if hasher.is_u64() {
        let mut out = vec![0u64; texts.len() * p];
        out.par_chunks_mut(p).zip(texts.par_iter()).for_each_init(
            Scratch::default,
            |scratch, (row, text)| {
                hasher.signature(text, scratch, &mut [], row);
            },
        );
        Signatures::U64(out)
    } else {
        let mut out = vec![0u32; texts.len() * p];
        out.par_chunks_mut(p).zip(texts.par_iter()).for_each_init(
            Scratch::default,
            |scratch, (row, text)| {
                hasher.signature(text, scratch, row, &mut []);
            },
        );
        Signatures::U32(out)
    }
}

/// Jaccard similarity of two sorted, deduplicated sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(scheme: Scheme, ngram: usize) -> MinHasher {
        MinHasher::new(MinHashParams {
            scheme,
            num_perm: 16,
            ngram,
            seed: 1,
            normalize: Some(NormalizeOptions::default()),
        })
        .unwrap()
    }

    #[test]
    fn datasketch_affine32_permutations() {
        // datasketch.MinHash(num_perm=16).permutations[:, :2]
        let (a, b) = hasher(Scheme::Datasketch, 5).permutations();
        let mut gen = RandomState::new(1);
        let a0 = gen.randint_u32(0, 1 << 31) as u64 * 2 + 1;
        assert_eq!(a[0], a0);
        assert!(a.iter().all(|v| v % 2 == 1));
        assert_eq!(b.len(), 16);
    }

    #[test]
    fn empty_text_keeps_max() {
        let h = hasher(Scheme::Fast, 5);
        let mut s = Scratch::default();
        let mut sig = vec![0u32; 16];
        assert!(!h.signature("  ,, ", &mut s, &mut sig, &mut []));
        assert!(sig.iter().all(|&v| v == u32::MAX));
        let h = hasher(Scheme::DatasketchLegacy, 5);
        let mut sig = vec![0u64; 16];
        assert!(!h.signature("", &mut s, &mut [], &mut sig));
        assert!(sig.iter().all(|&v| v == u32::MAX as u64));
    }

    #[test]
    fn short_text_is_one_shingle() {
        let h = hasher(Scheme::Fast, 5);
        let mut s = Scratch::default();
        assert_eq!(h.shingle_set("two words", &mut s).len(), 1);
        assert_eq!(h.shingle_set("a b c d e f", &mut s).len(), 2);
        assert_eq!(h.shingle_set("", &mut s).len(), 0);
    }

    #[test]
    fn identical_after_normalisation_same_signature() {
        for scheme in [Scheme::Fast, Scheme::Datasketch] {
            let h = hasher(scheme, 3);
            let mut s = Scratch::default();
            let (mut x, mut y) = (vec![0u32; 16], vec![0u32; 16]);
            h.signature("The quick brown fox, jumps!", &mut s, &mut x, &mut []);
            h.signature("the  QUICK brown fox jumps", &mut s, &mut y, &mut []);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn jaccard_basics() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[1]), 0.0);
        assert_eq!(jaccard(&[5], &[5]), 1.0);
    }

    #[test]
    fn legacy_mod_is_exact() {
        for x in [
            0u64,
            MERSENNE - 1,
            MERSENNE,
            MERSENNE + 1,
            u64::MAX,
            1 << 63,
        ] {
            let y = (x & MERSENNE) + (x >> 61);
            let y = if y >= MERSENNE { y - MERSENNE } else { y };
            assert_eq!(y, x % MERSENNE);
        }
    }
}
