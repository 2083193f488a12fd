//! The dedup pipeline: sketch every row once, decontaminate against an eval set,
//! group exact copies, find near-duplicate candidates by LSH banding, verify them by
//! true Jaccard, cluster with union-find and keep one row per cluster.
//!
//! Memory: per row only a 128-bit exact hash and one 64-bit key per band are kept
//! (9 x 8 bytes at the default threshold); signatures are dropped as soon as their
//! band keys exist. Shingle sets are rebuilt from the borrowed texts only for rows
//! that appear in a candidate pair or a report line.
//!
//! Exact copies are collapsed before LSH so a row copied a thousand times makes one
//! LSH entry, not a thousand-member bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use super::cluster::UnionFind;
use super::decontam::decontaminate;
use super::lsh::{band_keys, optimal_params};
use super::minhash::{jaccard, MinHashParams, MinHasher, Scratch};
use crate::error::{LadleError, Result};

/// Which member of a duplicate cluster survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The earliest row (stable, reproducible across runs and shards).
    First,
    /// The longest row (by the caller's lengths, else the text's bytes); ties go to
    /// the earliest.
    Longest,
}

impl Keep {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "first" => Ok(Keep::First),
            "longest" => Ok(Keep::Longest),
            other => Err(LadleError::Value(format!(
                "unknown keep policy {other:?}: expected 'first' or 'longest'"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DedupConfig {
    pub threshold: f64,
    pub minhash: MinHashParams,
    pub exact: bool,
    pub near: bool,
    /// Drop LSH candidates whose true shingle Jaccard is below the threshold.
    pub verify: bool,
    pub keep: Keep,
    /// Explicit (bands, rows); `None` chooses them like datasketch.
    pub bands: Option<(usize, usize)>,
    /// (false-positive, false-negative) weights for choosing bands; `None`:
    /// [`VERIFIED_WEIGHTS`] when verifying, datasketch's (0.5, 0.5) otherwise.
    pub weights: Option<(f64, f64)>,
}

/// Band weights when candidates are verified. A false positive then costs one Jaccard
/// check and a false negative a duplicate left in the data, so the same optimiser is
/// asked to weigh misses nine times more: at 128 permutations and threshold 0.8 this
/// picks 14 bands x 9 rows (candidate probability 0.975 at Jaccard 0.85) instead of
/// datasketch's 9 x 13 (0.69 at 0.85).
pub const VERIFIED_WEIGHTS: (f64, f64) = (0.1, 0.9);
/// datasketch's `MinHashLSH` default weights.
pub const DATASKETCH_WEIGHTS: (f64, f64) = (0.5, 0.5);

/// Stage names, indexed by `Progress::stage`.
pub const STAGES: [&str; 6] = [
    "sketch",
    "decontaminate",
    "candidates",
    "verify",
    "cluster",
    "done",
];

/// Shared counters a caller may poll from another thread while the pipeline runs.
#[derive(Default)]
pub struct Progress {
    pub stage: AtomicUsize,
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl Progress {
    pub(super) fn start(&self, stage: usize, total: usize) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total as u64, Ordering::Relaxed);
        self.stage.store(stage, Ordering::Relaxed);
    }
    pub(super) fn add(&self, n: usize) {
        self.done.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A removed row and the row that explains its removal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    pub removed: u32,
    /// A kept training row, or (for contamination) an eval row.
    pub kept: u32,
    /// True shingle Jaccard (1.0 for exact copies after normalisation).
    pub similarity: f64,
}

#[derive(Clone, Debug, Default)]
pub struct DedupStats {
    pub rows_in: usize,
    pub rows_out: usize,
    /// Rows with no words after normalisation: never matched, always kept.
    pub empty_rows: usize,
    pub exact_removed: usize,
    pub near_clusters: usize,
    pub near_removed: usize,
    pub decontaminated: usize,
    pub candidate_pairs: usize,
    pub verified_pairs: usize,
    pub bands: usize,
    pub rows_per_band: usize,
}

pub struct DedupOutput {
    pub keep: Vec<bool>,
    /// Index of the kept row of each row's cluster (itself when unique); -1 for rows
    /// removed by decontamination.
    pub cluster: Vec<i64>,
    pub pairs: Vec<Pair>,
    pub contaminated: Vec<Pair>,
    pub stats: DedupStats,
}

/// Per-row hashes: all that is kept of a row between stages.
pub(super) struct Sketch {
    pub exact: Vec<u128>,
    pub keys: Vec<u64>,
    pub nonempty: Vec<bool>,
}

const CHUNK: usize = 2048;
/// Buckets up to this size get every pair as a candidate; larger ones a star plus a
/// chain, so one huge bucket cannot make the candidate list quadratic.
const ALL_PAIRS_MAX: usize = 8;

pub(super) struct Ctx {
    pub hasher: MinHasher,
    pub bands: usize,
    pub rows: usize,
    pub near: bool,
}

impl Ctx {
    fn sketch(&self, texts: &[&str], progress: &Progress) -> Sketch {
        let (p, bands, rows) = (self.hasher.params.num_perm, self.bands, self.rows);
        let parts: Vec<(Vec<u128>, Vec<u64>, Vec<bool>)> = texts
            .par_chunks(CHUNK)
            .map_init(
                || {
                    (
                        Scratch::default(),
                        String::new(),
                        vec![0u32; p],
                        vec![0u64; p],
                    )
                },
                |(scratch, norm, s32, s64), chunk| {
                    let mut exact = Vec::with_capacity(chunk.len());
                    let mut keys =
                        Vec::with_capacity(if self.near { chunk.len() * bands } else { 0 });
                    let mut nonempty = Vec::with_capacity(chunk.len());
                    let mut k = vec![0u64; bands];
                    for text in chunk {
                        let s = self.hasher.prepare_words(text, norm, scratch);
                        exact.push(xxh3_128(s.as_bytes()));
                        nonempty.push(s.split(super::normalize::is_space).any(|w| !w.is_empty()));
                        if self.near {
                            if self.hasher.is_u64() {
                                self.hasher.signature_prepared(s, scratch, &mut [], s64);
                                band_keys(s64, bands, rows, &mut k);
                            } else {
                                self.hasher.signature_prepared(s, scratch, s32, &mut []);
                                band_keys(s32, bands, rows, &mut k);
                            }
                            keys.extend_from_slice(&k);
                        }
                    }
                    progress.add(chunk.len());
                    (exact, keys, nonempty)
                },
            )
            .collect();
        let mut out = Sketch {
            exact: vec![],
            keys: vec![],
            nonempty: vec![],
        };
        for (e, k, n) in parts {
            out.exact.extend(e);
            out.keys.extend(k);
            out.nonempty.extend(n);
        }
        out
    }

    fn sets(&self, texts: &[&str], ids: &[u32]) -> Vec<Vec<u64>> {
        ids.par_iter()
            .map_init(Scratch::default, |scratch, &i| {
                self.hasher.shingle_set(texts[i as usize], scratch)
            })
            .collect()
    }
}

/// Deduplicate `texts`; with `against = Some((train_keys, eval))`, first remove rows
/// whose `train_keys` text (the prompt, say; `None` reuses `texts`) is an exact or
/// near duplicate of any `eval` text. `lengths` feeds `Keep::Longest`.
pub fn deduplicate(
    texts: &[&str],
    config: &DedupConfig,
    against: Option<(Option<&[&str]>, &[&str])>,
    lengths: Option<&[u64]>,
    progress: &Progress,
) -> Result<DedupOutput> {
    let n = texts.len();
    if n > u32::MAX as usize {
        return Err(LadleError::Value("at most 2**32 - 1 rows per call".into()));
    }
    if let Some(l) = lengths {
        if l.len() != n {
            return Err(LadleError::Value(format!(
                "lengths has {} entries for {n} rows",
                l.len()
            )));
        }
    }
    if !(config.threshold > 0.0 && config.threshold <= 1.0) {
        return Err(LadleError::Value(format!(
            "threshold must be in (0, 1], got {}",
            config.threshold
        )));
    }
    let (bands, rows) = match config.bands {
        Some((b, r)) if b >= 1 && r >= 1 && b * r <= config.minhash.num_perm => (b, r),
        Some((b, r)) => {
            return Err(LadleError::Value(format!(
                "bands x rows = {b} x {r} must be positive and fit in num_perm = {}",
                config.minhash.num_perm
            )))
        }
        // Without near-duplicate search the bands are never used.
        None if !config.near => (1, config.minhash.num_perm),
        // Jaccard 1 means identical shingle sets, hence identical signatures: one band
        // of every row finds them all and nothing else.
        None if config.threshold >= 1.0 => (1, config.minhash.num_perm),
        None => {
            let default = if config.verify {
                VERIFIED_WEIGHTS
            } else {
                DATASKETCH_WEIGHTS
            };
            let (fp, fn_) = config.weights.unwrap_or(default);
            optimal_params(config.threshold, config.minhash.num_perm, fp, fn_)?
        }
    };
    let ctx = Ctx {
        hasher: MinHasher::new(config.minhash.clone())?,
        bands,
        rows,
        near: config.near,
    };
    let mut stats = DedupStats {
        rows_in: n,
        bands,
        rows_per_band: rows,
        ..Default::default()
    };

    progress.start(
        0,
        n + against.map_or(0, |(t, e)| e.len() + t.map_or(0, |t| t.len())),
    );
    let sk = ctx.sketch(texts, progress);
    stats.empty_rows = sk.nonempty.iter().filter(|&&x| !x).count();

    // ---- decontamination
    let mut contaminated: Vec<Pair> = vec![];
    let mut removed_by_eval = vec![false; n];
    if let Some((train_texts, eval)) = against {
        let train_sk;
        let (train_texts, train_sk) = match train_texts {
            Some(t) if t.len() != n => {
                return Err(LadleError::Value(format!(
                    "{} decontamination texts for {n} rows",
                    t.len()
                )))
            }
            Some(t) => {
                train_sk = ctx.sketch(t, progress);
                (t, &train_sk)
            }
            None => (texts, &sk),
        };
        let eval_sk = ctx.sketch(eval, progress);
        progress.start(1, n);
        contaminated = decontaminate(
            &ctx,
            config,
            train_texts,
            train_sk,
            eval,
            &eval_sk,
            progress,
        );
        for p in &contaminated {
            removed_by_eval[p.removed as usize] = true;
        }
        stats.decontaminated = contaminated.len();
    }
    let active = |i: usize| sk.nonempty[i] && !removed_by_eval[i];

    // ---- exact groups
    let mut uf = UnionFind::new(n);
    let mut reps: Vec<u32> = vec![];
    if config.exact {
        let mut order: Vec<(u128, u32)> = (0..n)
            .filter(|&i| active(i))
            .map(|i| (sk.exact[i], i as u32))
            .collect();
        order.par_sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            reps.push(group[0].1);
            for m in &group[1..] {
                uf.union(group[0].1, m.1);
            }
            stats.exact_removed += group.len() - 1;
        }
        reps.sort_unstable();
    } else {
        reps = (0..n).filter(|&i| active(i)).map(|i| i as u32).collect();
    }

    // ---- near duplicates
    let mut set_cache: HashMap<u32, Vec<u64>> = HashMap::new();
    if config.near {
        progress.start(2, bands);
        let mut edges: Vec<(u32, u32)> = (0..bands)
            .into_par_iter()
            .flat_map_iter(|band| {
                let mut v: Vec<(u64, u32)> = reps
                    .iter()
                    .map(|&i| (sk.keys[i as usize * bands + band], i))
                    .collect();
                v.sort_unstable();
                let mut e = vec![];
                for g in v.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
                    if g.len() <= ALL_PAIRS_MAX {
                        for x in 0..g.len() {
                            for y in x + 1..g.len() {
                                e.push((g[x].1, g[y].1));
                            }
                        }
                    } else {
                        for y in 1..g.len() {
                            e.push((g[0].1, g[y].1));
                            if y > 1 {
                                e.push((g[y - 1].1, g[y].1));
                            }
                        }
                    }
                }
                progress.add(1);
                e
            })
            .collect();
        edges.par_sort_unstable();
        edges.dedup();
        stats.candidate_pairs = edges.len();

        if config.verify {
            let mut ids: Vec<u32> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
            ids.par_sort_unstable();
            ids.dedup();
            progress.start(3, edges.len());
            let sets = ctx.sets(texts, &ids);
            let pos = |i: u32| ids.binary_search(&i).expect("endpoint has a set");
            edges = edges
                .into_par_iter()
                .filter(|&(a, b)| jaccard(&sets[pos(a)], &sets[pos(b)]) >= config.threshold)
                .collect();
            set_cache = ids.into_iter().zip(sets).collect();
        }
        stats.verified_pairs = edges.len();
        progress.start(4, n);
        for &(a, b) in &edges {
            uf.union(a, b);
        }
        let mut roots: Vec<u32> = edges.iter().map(|&(a, _)| uf.find(a)).collect();
        roots.sort_unstable();
        roots.dedup();
        stats.near_clusters = roots.len();
    }

    // ---- keep one row per cluster
    progress.start(4, n);
    let len_of = |i: usize| lengths.map_or(texts[i].len() as u64, |l| l[i]);
    let mut best = vec![u32::MAX; n];
    for i in 0..n {
        if !active(i) {
            continue;
        }
        let r = uf.find(i as u32) as usize;
        let cur = best[r];
        let better = cur == u32::MAX
            || match config.keep {
                Keep::First => false, // rows arrive in index order
                Keep::Longest => len_of(i) > len_of(cur as usize),
            };
        if better {
            best[r] = i as u32;
        }
    }
    let mut keep = vec![true; n];
    let mut cluster: Vec<i64> = (0..n as i64).collect();
    let mut removed: Vec<(u32, u32)> = vec![];
    for i in 0..n {
        if removed_by_eval[i] {
            keep[i] = false;
            cluster[i] = -1;
        } else if active(i) {
            let k = best[uf.find(i as u32) as usize];
            cluster[i] = k as i64;
            if k != i as u32 {
                keep[i] = false;
                removed.push((i as u32, k));
            }
        }
    }
    let pairs: Vec<Pair> = removed
        .par_iter()
        .map_init(Scratch::default, |scratch, &(r, k)| {
            let similarity = if sk.exact[r as usize] == sk.exact[k as usize] {
                1.0
            } else {
                let get = |i: u32, scratch: &mut Scratch| match set_cache.get(&i) {
                    Some(s) => s.clone(),
                    None => ctx.hasher.shingle_set(texts[i as usize], scratch),
                };
                jaccard(&get(r, scratch), &get(k, scratch))
            };
            Pair {
                removed: r,
                kept: k,
                similarity,
            }
        })
        .collect();
    let removed_dups = pairs.len();
    stats.near_removed = removed_dups - stats.exact_removed.min(removed_dups);
    stats.rows_out = keep.iter().filter(|&&k| k).count();
    progress.start(5, 0);
    Ok(DedupOutput {
        keep,
        cluster,
        pairs,
        contaminated,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{NormalizeOptions, Scheme};

    fn config() -> DedupConfig {
        DedupConfig {
            threshold: 0.8,
            minhash: MinHashParams {
                scheme: Scheme::Fast,
                num_perm: 128,
                ngram: 5,
                seed: 1,
                normalize: Some(NormalizeOptions::default()),
            },
            exact: true,
            near: true,
            verify: true,
            keep: Keep::First,
            bands: Some((128, 1)),
            weights: None,
        }
    }

    fn words(seed: u64, n: usize) -> Vec<String> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("w{}", x % 100_000)
            })
            .collect()
    }

    #[test]
    fn exact_near_and_decontamination() {
        let a = words(1, 80);
        let mut near = a.clone();
        near[40] = "edited".into();
        let texts: Vec<String> = vec![
            a.join(" "),
            words(2, 80).join(" "),
            a.join("  ").to_uppercase(),
            near.join(" "),
            words(3, 80).join(" "),
            String::new(),
        ];
        let views: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let eval = [texts[4].as_str()];
        let out = deduplicate(
            &views,
            &config(),
            Some((None, &eval)),
            None,
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(out.keep, vec![true, true, false, false, false, true]);
        assert_eq!(out.cluster, vec![0, 1, 0, 0, -1, 5]);
        assert_eq!(out.stats.exact_removed, 1);
        assert_eq!(out.stats.near_removed, 1);
        assert_eq!(out.stats.decontaminated, 1);
        assert_eq!(out.stats.empty_rows, 1);
        assert_eq!(
            out.contaminated,
            vec![Pair {
                removed: 4,
                kept: 0,
                similarity: 1.0
            }]
        );
        let sims: Vec<f64> = out.pairs.iter().map(|p| p.similarity).collect();
        assert_eq!(sims[0], 1.0);
        assert!(sims[1] > 0.85 && sims[1] < 1.0);
    }

    #[test]
    fn longest_policy() {
        let a = words(4, 60);
        let mut longer = a.clone();
        longer.push("more".into());
        let texts = [a.join(" "), longer.join(" ")];
        let views: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let mut cfg = config();
        cfg.keep = Keep::Longest;
        let out = deduplicate(&views, &cfg, None, None, &Progress::default()).unwrap();
        assert_eq!(out.keep, vec![false, true]);
        assert_eq!(out.cluster, vec![1, 1]);
    }
}
