//! Fast path for byte-level BPE tokenizers (GPT-2 pre-tokenizer regex, no normalizer):
//! SmolLM2, GPT-2, StarCoder and their kin.
//!
//! Performance notes. The `tokenizers` crate spends most of an encode on bookkeeping
//! we do not need: a `NormalizedString` with per-byte alignments, the onig regex, the
//! byte-to-char transform with alignments again, a 10k-entry BPE cache behind a lock,
//! and an `Encoding` with token strings, words and type ids. Here:
//! - added tokens are split out with the same aho-corasick (leftmost-longest) matcher;
//! - the GPT-2 split regex is a hand-written scanner over a code-point class table that
//!   is built once from onig itself, so `\p{L}`, `\p{N}` and `\s` mean exactly what
//!   they mean to the crate;
//! - each pre-token ("word") is looked up in a per-thread word->ids cache (no locks,
//!   bounded, reset when full);
//! - a miss (on natural text, with its long tail of words, most of the cost) runs the
//!   merges here, on ids, with no allocation per token: the crate's `BPE::tokenize` builds
//!   a `String` per token and goes through its own locked cache. The rule is the crate's
//!   (`Word::merge_all`): repeatedly merge the adjacent pair of lowest rank, the leftmost
//!   on a tie; words longer than [`MAX_SCAN_WORD`] bytes, and anything unusual (a byte
//!   missing from the vocab), still go to the crate;
//! - offsets come for free: a token's byte length is its vocab string's char count.
//!
//! Equality with the crate is proven on generated corpora in the tests.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use ahash::AHashMap;
use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value as Json;
use tokenizers::models::bpe::BPE;
use tokenizers::models::ModelWrapper;
use tokenizers::{Model, Tokenizer};

use super::WithOffsets;

const L: u8 = 1;
const N: u8 = 2;
const S: u8 = 4;

/// Class bits (L, N, S) of every code point, as onig classifies them.
fn class_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![0u8; 0x110000];
        let all: String = (0u32..0x110000).filter_map(char::from_u32).collect();
        for (bit, pat) in [(L, r"\p{L}+"), (N, r"\p{N}+"), (S, r"\s+")] {
            let re = onig::Regex::new(pat).expect("valid class regex");
            for (start, end) in re.find_iter(&all) {
                for c in all[start..end].chars() {
                    table[c as usize] |= bit;
                }
            }
        }
        table
    })
}

#[inline]
fn class(table: &[u8], c: char) -> u8 {
    table[c as usize]
}

/// GPT-2's `bytes_to_unicode`: every byte as a printable char.
fn byte_chars() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

/// Splits `text` like `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// (onig, leftmost-first), calling `f` with each piece's byte range.
pub fn split_gpt2(text: &str, mut f: impl FnMut(usize, usize)) {
    let table = class_table();
    let b = text.as_bytes();
    let n = b.len();
    // Class of the char starting at byte i, and its byte length.
    let at = |i: usize| -> (u8, usize) {
        let c0 = b[i];
        if c0 < 0x80 {
            return (table[c0 as usize], 1);
        }
        let c = text[i..].chars().next().expect("char boundary");
        (class(table, c), c.len_utf8())
    };
    // End of the run of chars starting at i whose class satisfies `pred`.
    let run = |mut i: usize, pred: &dyn Fn(u8) -> bool| -> usize {
        while i < n {
            let (c, l) = at(i);
            if !pred(c) {
                break;
            }
            i += l;
        }
        i
    };
    let is_other = |c: u8| c & (L | N | S) == 0;
    let mut i = 0;
    while i < n {
        // 1. contractions
        if b[i] == b'\'' && i + 1 < n {
            let rest = &b[i + 1..];
            let len = match rest[0] {
                b's' | b't' | b'm' | b'd' => 2,
                b'r' if rest.get(1) == Some(&b'e') => 3,
                b'v' if rest.get(1) == Some(&b'e') => 3,
                b'l' if rest.get(1) == Some(&b'l') => 3,
                _ => 0,
            };
            if len > 0 {
                f(i, i + len);
                i += len;
                continue;
            }
        }
        let (c, l) = at(i);
        // 2-4. optional space, then a run of letters / numbers / other.
        let (lead, cls) = if b[i] == b' ' && i + 1 < n {
            let (c2, _) = at(i + 1);
            (1, c2)
        } else {
            (0, c)
        };
        if lead == 0 || cls & S == 0 {
            let start = i + lead;
            let end = if cls & L != 0 {
                Some(run(start, &|c| c & L != 0))
            } else if cls & N != 0 {
                Some(run(start, &|c| c & N != 0))
            } else if is_other(cls) {
                Some(run(start, &is_other))
            } else {
                None
            };
            if let Some(end) = end {
                // A lone leading space is only taken when something follows it.
                if end > start {
                    f(i, end);
                    i = end;
                    continue;
                }
            }
        }
        // Here the char at i is whitespace (a space followed by whitespace/end, or other).
        debug_assert!(c & S != 0, "unclassified char at {i}");
        let end = run(i, &|c| c & S != 0);
        let end = if end == n || end - i == l {
            end
        } else {
            // \s+(?!\S): leave the last whitespace char to prefix the next word.
            let mut last = i;
            let mut j = i;
            while j < end {
                last = j;
                j += at(j).1;
            }
            last
        };
        f(i, end);
        i = end;
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Per-thread word cache: word bytes -> (start, len) in an id arena. Words of up to 15
/// bytes (nearly all of them) are keyed by their bytes packed into a `u128`, so a hit is
/// one probe with no pointer to chase and no `memcmp`; longer words by their bytes.
#[derive(Default)]
struct WordCache {
    small: AHashMap<u128, (u32, u32)>,
    map: AHashMap<Box<[u8]>, (u32, u32)>,
    arena: Vec<u32>,
}

/// `word` packed with its length in the top byte (distinct for distinct words).
#[inline]
fn small_key(word: &[u8]) -> Option<u128> {
    if word.len() > 15 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..word.len()].copy_from_slice(word);
    buf[15] = word.len() as u8;
    Some(u128::from_le_bytes(buf))
}

impl WordCache {
    #[inline]
    fn get(&self, word: &[u8]) -> Option<(u32, u32)> {
        match small_key(word) {
            Some(k) => self.small.get(&k).copied(),
            None => self.map.get(word).copied(),
        }
    }

    fn insert(&mut self, word: &[u8], ids: &[u32]) {
        if self.small.len() + self.map.len() >= CACHE_MAX_WORDS {
            self.small.clear();
            self.map.clear();
            self.arena.clear();
        }
        let v = (self.arena.len() as u32, ids.len() as u32);
        self.arena.extend_from_slice(ids);
        match small_key(word) {
            Some(k) => self.small.insert(k, v),
            None => self.map.insert(word.into(), v),
        };
    }
}

/// Words per thread cache before it is reset: SmolLM2 on English+code hits >99% well
/// before this; the bound keeps memory at tens of MB per thread.
const CACHE_MAX_WORDS: usize = 1 << 18;
/// Tokenizers whose caches a thread keeps; older ones are dropped (the caches live in
/// thread-locals, so a dropped tokenizer's cache goes when it falls out of this window).
const CACHES_PER_THREAD: usize = 4;

thread_local! {
    static CACHES: RefCell<Vec<(usize, WordCache)>> = const { RefCell::new(Vec::new()) };
}

/// Words up to this many bytes are merged by a scan per merge (quadratic, but with no
/// heap); longer ones go through the crate's heap-based merge.
const MAX_SCAN_WORD: usize = 64;
/// Marks a byte whose char is not in the vocab.
const NO_ID: u32 = u32::MAX;

/// The merge table on ids: `(left, right) -> (rank, merged id)`, as the crate builds it
/// from `model.merges`.
struct Merges {
    pairs: AHashMap<(u32, u32), (u32, u32)>,
    /// Id of each byte's char.
    byte_ids: [u32; 256],
    /// `model.ignore_merges` (Llama-3): a word that is itself a token is that token.
    whole_words: Option<AHashMap<Vec<u8>, u32>>,
}

impl Merges {
    fn from_model(model: &Json, bytes: &[char; 256]) -> Option<Self> {
        let vocab: AHashMap<&str, u32> = model
            .get("vocab")?
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.as_str(), u32::try_from(v.as_u64()?).ok()?)))
            .collect::<Option<_>>()?;
        let mut pairs = AHashMap::new();
        for (rank, m) in model.get("merges")?.as_array()?.iter().enumerate() {
            // "a b" (older files) or ["a", "b"] (tokenizers >= 0.20)
            let (a, b) = match m {
                Json::String(s) => s.split_once(' ')?,
                Json::Array(ab) if ab.len() == 2 => (ab[0].as_str()?, ab[1].as_str()?),
                _ => return None,
            };
            let merged = vocab.get(format!("{a}{b}").as_str())?;
            let key = (*vocab.get(a)?, *vocab.get(b)?);
            // a pair listed twice keeps its last rank, as the crate's collect() does
            pairs.insert(key, (rank as u32, *merged));
        }
        let mut byte_ids = [NO_ID; 256];
        let mut buf = [0u8; 4];
        for (b, c) in bytes.iter().enumerate() {
            if let Some(&id) = vocab.get(&*c.encode_utf8(&mut buf)) {
                byte_ids[b] = id;
            }
        }
        let whole_words = if json_is(model, "ignore_merges", &true.into()) {
            let byte_of: AHashMap<char, u8> = bytes
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect();
            let words = vocab
                .iter()
                .map(|(tok, &id)| {
                    let raw: Option<Vec<u8>> =
                        tok.chars().map(|c| byte_of.get(&c).copied()).collect();
                    raw.map(|r| (r, id))
                })
                .collect::<Option<_>>()?;
            Some(words)
        } else {
            None
        };
        Some(Merges {
            pairs,
            byte_ids,
            whole_words,
        })
    }

    /// Appends the ids of `word` to `out`; false (and nothing appended) when the crate
    /// must do it.
    fn merge(&self, word: &[u8], out: &mut Vec<u32>) -> bool {
        if word.len() > MAX_SCAN_WORD {
            return false;
        }
        if let Some(id) = self.whole_words.as_ref().and_then(|w| w.get(word)) {
            out.push(*id);
            return true;
        }
        let mut syms = [0u32; MAX_SCAN_WORD];
        for (s, &b) in syms.iter_mut().zip(word) {
            *s = self.byte_ids[b as usize];
            if *s == NO_ID {
                return false;
            }
        }
        let mut n = word.len();
        while n > 1 {
            let mut best = (u32::MAX, 0usize, 0u32);
            for i in 0..n - 1 {
                if let Some(&(rank, merged)) = self.pairs.get(&(syms[i], syms[i + 1])) {
                    if rank < best.0 {
                        best = (rank, i, merged);
                    }
                }
            }
            if best.0 == u32::MAX {
                break;
            }
            let (_, i, merged) = best;
            syms[i] = merged;
            syms.copy_within(i + 2..n, i + 1);
            n -= 1;
        }
        out.extend_from_slice(&syms[..n]);
        true
    }
}

pub struct ByteLevelBpe {
    id: usize,
    bpe: BPE,
    merges: Option<Merges>,
    added: Option<(AhoCorasick, Vec<u32>)>,
    bytes: [char; 256],
    /// Byte length of each model token (its byte-level string's char count).
    tok_len: Vec<u32>,
}

fn json_is(v: &Json, key: &str, want: &Json) -> bool {
    v.get(key).unwrap_or(&Json::Null) == want
}

fn empty_or_null(v: &Json, key: &str) -> bool {
    match v.get(key) {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.is_empty(),
        _ => false,
    }
}

impl ByteLevelBpe {
    /// The fast path for `tok`, or None when its configuration is one this path does not
    /// reproduce exactly (then the crate encodes).
    pub fn from_tokenizer(tok: &Tokenizer, json: &[u8]) -> Option<Self> {
        let cfg: Json = serde_json::from_slice(json).ok()?;
        if !cfg.get("normalizer").is_none_or(Json::is_null) {
            return None;
        }
        let pre = cfg.get("pre_tokenizer")?;
        if !(json_is(pre, "type", &"ByteLevel".into())
            && json_is(pre, "add_prefix_space", &false.into())
            && json_is(pre, "use_regex", &true.into()))
        {
            return None;
        }
        match cfg.get("post_processor") {
            None | Some(Json::Null) => {}
            Some(p) if json_is(p, "type", &"TemplateProcessing".into()) => {}
            Some(p)
                if json_is(p, "type", &"ByteLevel".into())
                    && json_is(p, "trim_offsets", &false.into()) => {}
            Some(_) => return None,
        }
        let model = cfg.get("model")?;
        if !(json_is(model, "type", &"BPE".into())
            && model.get("dropout").is_none_or(Json::is_null)
            && !json_is(model, "byte_fallback", &true.into())
            && empty_or_null(model, "continuing_subword_prefix")
            && empty_or_null(model, "end_of_word_suffix"))
        {
            return None;
        }
        let ModelWrapper::BPE(bpe) = tok.get_model() else {
            return None;
        };
        let mut patterns = Vec::new();
        let mut ids = Vec::new();
        for t in cfg.get("added_tokens")?.as_array()? {
            for flag in ["lstrip", "rstrip", "single_word", "normalized"] {
                if json_is(t, flag, &true.into()) {
                    return None;
                }
            }
            let content = t.get("content")?.as_str()?;
            if content.is_empty() {
                continue;
            }
            patterns.push(content.to_string());
            ids.push(u32::try_from(t.get("id")?.as_u64()?).ok()?);
        }
        let added = if patterns.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()?;
            Some((ac, ids))
        };
        let vocab = bpe.get_vocab();
        let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
        let mut tok_len = vec![0u32; max_id + 1];
        for (s, &id) in &vocab {
            tok_len[id as usize] = s.chars().count() as u32;
        }
        let bytes = byte_chars();
        Some(ByteLevelBpe {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            merges: Merges::from_model(model, &bytes),
            bpe: bpe.clone(),
            added,
            bytes,
            tok_len,
        })
    }

    fn with_cache<R>(&self, f: impl FnOnce(&mut WordCache) -> R) -> R {
        CACHES.with(|c| {
            let mut caches = c.borrow_mut();
            let pos = match caches.iter().position(|(id, _)| *id == self.id) {
                Some(p) => p,
                None => {
                    if caches.len() >= CACHES_PER_THREAD {
                        caches.remove(0);
                    }
                    caches.push((self.id, WordCache::default()));
                    caches.len() - 1
                }
            };
            f(&mut caches[pos].1)
        })
    }

    fn bpe_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if self.merges.as_ref().is_some_and(|m| m.merge(word, out)) {
            return;
        }
        let mapped: String = word.iter().map(|&b| self.bytes[b as usize]).collect();
        // Byte-level words always map into the vocab; an error here would mean a corrupt
        // tokenizer.json, which loading already rejected.
        let toks = self
            .bpe
            .tokenize(&mapped)
            .expect("byte-level BPE cannot fail on mapped bytes");
        out.extend(toks.iter().map(|t| t.id));
    }

    fn encode_words(
        &self,
        cache: &mut WordCache,
        scratch: &mut Vec<u32>,
        piece_start: usize,
        piece: &str,
        emit: &mut impl FnMut(&[u32], usize, usize),
    ) {
        split_gpt2(piece, |s, e| {
            let w = &piece.as_bytes()[s..e];
            if let Some((a, l)) = cache.get(w) {
                emit(
                    &cache.arena[a as usize..(a + l) as usize],
                    piece_start + s,
                    piece_start + e,
                );
                return;
            }
            scratch.clear();
            self.bpe_word(w, scratch);
            emit(scratch, piece_start + s, piece_start + e);
            cache.insert(w, scratch);
        });
    }

    /// Offsets of a word's tokens when BPE dropped bytes that are not in the vocab (no
    /// unk token): tokens consume the kept bytes in order.
    fn word_offsets(&self, word: &[u8], ids: &[u32], base: usize, out: &mut Vec<(usize, usize)>) {
        let mut buf = [0u8; 4];
        let kept: Vec<usize> = (0..word.len())
            .filter(|&i| {
                let c = self.bytes[word[i] as usize].encode_utf8(&mut buf);
                self.bpe.token_to_id(c).is_some()
            })
            .collect();
        let mut k = 0;
        for &id in ids {
            let n = self.tok_len.get(id as usize).copied().unwrap_or(0) as usize;
            let first = kept.get(k).copied().unwrap_or(word.len());
            k += n;
            let last = if n == 0 {
                first
            } else {
                kept.get(k - 1).map_or(word.len(), |&i| i + 1)
            };
            out.push((base + first, base + last));
        }
    }

    /// Encodes `text`, calling `emit(ids, start, end)` for each word or added token.
    fn encode_pieces(&self, text: &str, mut emit: impl FnMut(&[u32], usize, usize)) {
        self.with_cache(|cache| {
            let mut scratch = Vec::new();
            let mut last = 0;
            if let Some((ac, ids)) = &self.added {
                for m in ac.find_iter(text) {
                    if m.start() > last {
                        self.encode_words(
                            cache,
                            &mut scratch,
                            last,
                            &text[last..m.start()],
                            &mut emit,
                        );
                    }
                    emit(&[ids[m.pattern().as_usize()]], m.start(), m.end());
                    last = m.end();
                }
            }
            if last < text.len() {
                self.encode_words(cache, &mut scratch, last, &text[last..], &mut emit);
            }
        })
    }

    /// Ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.encode_pieces(text, |w, _, _| ids.extend_from_slice(w));
        ids
    }

    /// Ids of `text` with each token's byte range.
    pub fn encode_with_offsets(&self, text: &str) -> WithOffsets {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut offsets = Vec::with_capacity(text.len() / 3);
        self.encode_pieces(text, |w, start, end| {
            let total: usize = w
                .iter()
                .map(|&id| self.tok_len.get(id as usize).copied().unwrap_or(0) as usize)
                .sum();
            if total != end - start {
                // A byte missing from the vocab was dropped by BPE (no unk token):
                // recover which bytes each token covers.
                self.word_offsets(&text.as_bytes()[start..end], w, start, &mut offsets);
            } else if w.len() == 1 {
                offsets.push((start, end));
            } else {
                let mut s = start;
                for &id in w {
                    let e = s + self.tok_len[id as usize] as usize;
                    offsets.push((s, e));
                    s = e;
                }
            }
            ids.extend_from_slice(w);
        });
        WithOffsets { ids, offsets }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tokenize::TextTokenizer;

    /// The SmolLM2 tokenizer.json from Ladle's model cache, when it has been converted.
    pub(crate) fn smollm2_tokenizer_json() -> Option<std::path::PathBuf> {
        let home = std::env::var_os("LADLE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/ladle"))
            })?;
        let dir = std::fs::read_dir(home.join("models")).ok()?;
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("smollm2"))
            .map(|e| e.path().join("tokenizer.json"))
            .find(|p| p.is_file())
    }

    /// A deterministic stream of awkward text: words, contractions, digits, unicode
    /// letters/digits/marks, emoji, whitespace runs of every kind, special tokens.
    pub(crate) fn corpus(n: usize, seed: u64) -> Vec<String> {
        const PIECES: &[&str] = &[
            "the",
            " the",
            "Hello",
            " world",
            "'s",
            "'S",
            "'ll",
            "'re",
            "'ve",
            "'m",
            "'d",
            "'t",
            "'x",
            "don't",
            "I'M",
            " 12345",
            "3.14",
            "٣٤",
            "²",
            "Ⅻ",
            "½",
            "é",
            "café",
            " naïve",
            "中文字符",
            " 日本語",
            "Ελληνικά",
            "👍",
            "🤗🤗",
            "e\u{301}",
            "\u{300}",
            "ﷺ",
            "𝔘𝔫𝔦",
            " ",
            "  ",
            "   ",
            "\n",
            "\n\n",
            " \n ",
            "\t",
            "\r\n",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "\u{85}",
            "\u{b}",
            "\u{c}",
            "\u{1c}",
            "\u{200b}",
            "\u{feff}",
            "!",
            "?!",
            "...",
            "—",
            "«»",
            "(",
            ")",
            "{",
            "}",
            "<|im_start|>",
            "<|im_end|>",
            "<|endoftext|>",
            "<|im_",
            "|>",
            "<",
            "def f(x):\n    return x**2\n",
            "    ",
            "\t\tif",
            "```python\n",
            "$x^2$",
            "@user",
            "#tag",
            "https://example.com/a?b=c",
            "\u{0}",
            "\u{7f}",
            "\u{e000}",
            "A",
            "z",
            "_",
            "__init__",
            "0x1F",
        ];
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..n)
            .map(|_| {
                let k = (next() % 24) as usize;
                (0..k)
                    .map(|_| {
                        let r = next();
                        if r % 7 == 0 {
                            // a random code point, surrogates skipped
                            char::from_u32((r >> 8) as u32 % 0x30000)
                                .map(String::from)
                                .unwrap_or_default()
                        } else {
                            PIECES[(r >> 8) as usize % PIECES.len()].to_string()
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn split_matches_the_regex_on_simple_text() {
        let mut parts = Vec::new();
        let t = "Hello world's  \n\n  x 12 ?!";
        split_gpt2(t, |s, e| parts.push(&t[s..e]));
        assert_eq!(
            parts,
            vec!["Hello", " world", "'s", "  \n\n ", " x", " 12", " ?!"]
        );
    }

    // The converted SmolLM2 exists only after the Python tests ran once (cargo runs
    // first on a clean clone), so this is opt-in (`cargo test -- --ignored`) and
    // tests/test_tokenize.py::test_fast_path_equals_crate_on_generated_conversations
    // makes the same check in every run.
    #[test]
    #[ignore = "needs SmolLM2 converted in the Ladle model cache; pytest checks the same"]
    fn fast_path_ids_and_offsets_equal_the_crate() {
        let path = smollm2_tokenizer_json()
            .expect("no SmolLM2 tokenizer.json in the Ladle model cache: run the Python tests");
        let fast = TextTokenizer::from_file(&path).unwrap();
        assert!(fast.is_fast());
        let slow = TextTokenizer::from_file(&path).unwrap().without_fast_path();
        for (i, text) in corpus(20_000, 7).iter().enumerate() {
            let a = fast.encode_with_offsets(text).unwrap();
            let b = slow.encode_with_offsets(text).unwrap();
            assert_eq!(a.ids, b.ids, "row {i}: {text:?}");
            assert_eq!(fast.encode(text).unwrap(), b.ids, "row {i}");
            // Bytes missing from the vocab are dropped by BPE (no unk token); the crate's
            // offsets then drift, ours stay on the kept bytes.
            let covered: usize = a
                .ids
                .iter()
                .map(|&id| fast.fast.as_ref().unwrap().tok_len[id as usize] as usize)
                .sum();
            let dropped = covered != text.len();
            // Offsets agree except inside a multi-byte char split across tokens, where the
            // crate gives each token the whole char; masks only compare offsets with char
            // boundaries, where both agree.
            for (t, (x, y)) in a.offsets.iter().zip(&b.offsets).enumerate() {
                let ok =
                    x == y || !text.is_char_boundary(x.0) || !text.is_char_boundary(x.1) || dropped;
                assert!(ok, "row {i} token {t}: {x:?} vs {y:?} in {text:?}");
            }
        }
    }
}
