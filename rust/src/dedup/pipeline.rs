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

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use super::cluster::UnionFind;
use super::decontam::decontaminate;
use super::lsh::{band_keys, optimal_params};
use super::minhash::{jaccard, MinHasher, Scratch};
use super::types::{
    Ctx, DedupConfig, DedupOutput, DedupStats, Keep, Pair, Progress, Sketch, Stage,
    DATASKETCH_WEIGHTS, VERIFIED_WEIGHTS,
};
use crate::error::{LadleError, Result};

const CHUNK: usize = 2048;
/// Buckets up to this size get every pair as a candidate; larger ones a star plus a
/// chain, so one huge bucket cannot make the candidate list quadratic.
const ALL_PAIRS_MAX: usize = 8;

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
///
/// Each stage below is one function; `Progress` reports which [`Stage`] is running.
pub fn deduplicate(
    texts: &[&str],
    config: &DedupConfig,
    against: Option<(Option<&[&str]>, &[&str])>,
    lengths: Option<&[u64]>,
    progress: &Progress,
) -> Result<DedupOutput> {
    let n = texts.len();
    check_inputs(n, config, against, lengths)?;
    let (bands, rows) = choose_bands(config)?;
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
        Stage::Sketch,
        n + against.map_or(0, |(t, e)| e.len() + t.map_or(0, |t| t.len())),
    );
    let sk = ctx.sketch(texts, progress);
    stats.empty_rows = sk.nonempty.iter().filter(|&&x| !x).count();

    let contaminated = match against {
        Some((keys, eval)) => decontaminate_stage(&ctx, config, texts, &sk, keys, eval, progress),
        None => vec![],
    };
    stats.decontaminated = contaminated.len();
    let mut removed_by_eval = vec![false; n];
    for p in &contaminated {
        removed_by_eval[p.removed as usize] = true;
    }
    let active: Vec<bool> = (0..n)
        .map(|i| sk.nonempty[i] && !removed_by_eval[i])
        .collect();

    let mut uf = UnionFind::new(n);
    let reps = if config.exact {
        let (reps, removed) = exact_groups(&sk, &active, &mut uf);
        stats.exact_removed = removed;
        reps
    } else {
        (0..n).filter(|&i| active[i]).map(|i| i as u32).collect()
    };

    let mut set_cache: HashMap<u32, Vec<u64>> = HashMap::new();
    if config.near {
        progress.start(Stage::Candidates, bands);
        let mut edges = candidates(&sk, &reps, bands, progress);
        stats.candidate_pairs = edges.len();
        if config.verify {
            progress.start(Stage::Verify, edges.len());
            (edges, set_cache) = verify(&ctx, texts, edges, config.threshold);
        }
        stats.verified_pairs = edges.len();
        progress.start(Stage::Cluster, n);
        stats.near_clusters = cluster(&mut uf, &edges);
    }

    progress.start(Stage::Cluster, n);
    let len_of = |i: usize| lengths.map_or(texts[i].len() as u64, |l| l[i]);
    let (keep, cluster, removed) =
        keep_one(&mut uf, &active, &removed_by_eval, config.keep, len_of);
    let pairs = removal_pairs(&ctx, texts, &sk, &removed, &set_cache);
    stats.near_removed = pairs.len() - stats.exact_removed.min(pairs.len());
    stats.rows_out = keep.iter().filter(|&&k| k).count();
    progress.start(Stage::Done, 0);
    Ok(DedupOutput {
        keep,
        cluster,
        pairs,
        contaminated,
        stats,
    })
}

/// Arguments that would otherwise fail deep inside a stage (or index out of range).
fn check_inputs(
    n: usize,
    config: &DedupConfig,
    against: Option<(Option<&[&str]>, &[&str])>,
    lengths: Option<&[u64]>,
) -> Result<()> {
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
    if let Some((Some(keys), _)) = against {
        if keys.len() != n {
            return Err(LadleError::Value(format!(
                "{} decontamination texts for {n} rows",
                keys.len()
            )));
        }
    }
    if !(config.threshold > 0.0 && config.threshold <= 1.0) {
        return Err(LadleError::Value(format!(
            "threshold must be in (0, 1], got {}",
            config.threshold
        )));
    }
    Ok(())
}

/// `(bands, rows per band)` of the LSH index.
fn choose_bands(config: &DedupConfig) -> Result<(usize, usize)> {
    let num_perm = config.minhash.num_perm;
    Ok(match config.bands {
        Some((b, r)) if b >= 1 && r >= 1 && b.checked_mul(r).is_some_and(|p| p <= num_perm) => {
            (b, r)
        }
        Some((b, r)) => {
            return Err(LadleError::Value(format!(
                "bands x rows = {b} x {r} must be positive and fit in num_perm = {num_perm}"
            )))
        }
        // Without near-duplicate search the bands are never used.
        None if !config.near => (1, num_perm),
        // Jaccard 1 means identical shingle sets, hence identical signatures: one band
        // of every row finds them all and nothing else.
        None if config.threshold >= 1.0 => (1, num_perm),
        None => {
            let default = if config.verify {
                VERIFIED_WEIGHTS
            } else {
                DATASKETCH_WEIGHTS
            };
            let (fp, fn_) = config.weights.unwrap_or(default);
            optimal_params(config.threshold, num_perm, fp, fn_)?
        }
    })
}

/// Sketch the decontamination texts and find the training rows that copy an eval row.
fn decontaminate_stage(
    ctx: &Ctx,
    config: &DedupConfig,
    texts: &[&str],
    sk: &Sketch,
    keys: Option<&[&str]>,
    eval: &[&str],
    progress: &Progress,
) -> Vec<Pair> {
    let keys_sk;
    let (train_texts, train_sk) = match keys {
        Some(t) => {
            keys_sk = ctx.sketch(t, progress);
            (t, &keys_sk)
        }
        None => (texts, sk),
    };
    let eval_sk = ctx.sketch(eval, progress);
    progress.start(Stage::Decontaminate, texts.len());
    decontaminate(ctx, config, train_texts, train_sk, eval, &eval_sk, progress)
}

/// Union rows with equal normalised text; returns one representative per group (sorted)
/// and how many rows the groups make redundant.
fn exact_groups(sk: &Sketch, active: &[bool], uf: &mut UnionFind) -> (Vec<u32>, usize) {
    let mut order: Vec<(u128, u32)> = (0..active.len())
        .filter(|&i| active[i])
        .map(|i| (sk.exact[i], i as u32))
        .collect();
    order.par_sort_unstable();
    let mut reps = vec![];
    let mut removed = 0;
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        reps.push(group[0].1);
        for m in &group[1..] {
            uf.union(group[0].1, m.1);
        }
        removed += group.len() - 1;
    }
    reps.sort_unstable();
    (reps, removed)
}

/// Candidate pairs: representatives that share a band key in any band.
fn candidates(sk: &Sketch, reps: &[u32], bands: usize, progress: &Progress) -> Vec<(u32, u32)> {
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
    edges
}

type SetCache = HashMap<u32, Vec<u64>>;

/// Keep the candidate pairs whose true shingle Jaccard reaches the threshold; the
/// shingle sets built on the way are returned for the report.
fn verify(
    ctx: &Ctx,
    texts: &[&str],
    edges: Vec<(u32, u32)>,
    threshold: f64,
) -> (Vec<(u32, u32)>, SetCache) {
    let mut ids: Vec<u32> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
    ids.par_sort_unstable();
    ids.dedup();
    let sets = ctx.sets(texts, &ids);
    let set_of = |i: u32| match ids.binary_search(&i) {
        Ok(p) => &sets[p][..],
        Err(_) => &[][..], // unreachable: every endpoint is in `ids`
    };
    let edges = edges
        .into_par_iter()
        .filter(|&(a, b)| jaccard(set_of(a), set_of(b)) >= threshold)
        .collect();
    (edges, ids.into_iter().zip(sets).collect())
}

/// Union the verified pairs; returns the number of clusters they form.
fn cluster(uf: &mut UnionFind, edges: &[(u32, u32)]) -> usize {
    for &(a, b) in edges {
        uf.union(a, b);
    }
    let mut roots: Vec<u32> = edges.iter().map(|&(a, _)| uf.find(a)).collect();
    roots.sort_unstable();
    roots.dedup();
    roots.len()
}

/// One surviving row per cluster. Returns the keep mask, each row's cluster (its kept
/// row, -1 when decontaminated) and the (removed, kept) duplicates.
fn keep_one(
    uf: &mut UnionFind,
    active: &[bool],
    removed_by_eval: &[bool],
    policy: Keep,
    len_of: impl Fn(usize) -> u64,
) -> (Vec<bool>, Vec<i64>, Vec<(u32, u32)>) {
    let n = active.len();
    let mut best = vec![u32::MAX; n];
    for i in (0..n).filter(|&i| active[i]) {
        let r = uf.find(i as u32) as usize;
        let cur = best[r];
        let better = cur == u32::MAX
            || match policy {
                Keep::First => false, // rows arrive in index order
                Keep::Longest => len_of(i) > len_of(cur as usize),
            };
        if better {
            best[r] = i as u32;
        }
    }
    let mut keep = vec![true; n];
    let mut cluster: Vec<i64> = (0..n as i64).collect();
    let mut removed = vec![];
    for i in 0..n {
        if removed_by_eval[i] {
            keep[i] = false;
            cluster[i] = -1;
        } else if active[i] {
            let k = best[uf.find(i as u32) as usize];
            cluster[i] = k as i64;
            if k != i as u32 {
                keep[i] = false;
                removed.push((i as u32, k));
            }
        }
    }
    (keep, cluster, removed)
}

/// The similarity of each removed row to the row kept in its place.
fn removal_pairs(
    ctx: &Ctx,
    texts: &[&str],
    sk: &Sketch,
    removed: &[(u32, u32)],
    set_cache: &SetCache,
) -> Vec<Pair> {
    removed
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{MinHashParams, NormalizeOptions, Scheme};

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
