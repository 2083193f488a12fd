//! Decontamination: training rows whose text is an exact or near copy of an eval row.
//! Eval sets are small, so they go into hash maps (exact hash, one per band) and each
//! training row probes them; candidates are ranked by true Jaccard.

use std::collections::HashMap;

use rayon::prelude::*;

use super::minhash::{jaccard, Scratch};
use super::types::{Ctx, DedupConfig, Pair, Progress, Sketch};

/// Training rows that are exact or near copies of an eval row, each with the most
/// similar eval row.
pub(super) fn decontaminate(
    ctx: &Ctx,
    config: &DedupConfig,
    train: &[&str],
    train_sk: &Sketch,
    eval: &[&str],
    eval_sk: &Sketch,
    progress: &Progress,
) -> Vec<Pair> {
    let bands = ctx.bands;
    let mut exact: HashMap<u128, u32> = HashMap::new();
    let mut buckets: Vec<HashMap<u64, Vec<u32>>> =
        vec![HashMap::new(); if ctx.near { bands } else { 0 }];
    for e in (0..eval.len()).rev() {
        if !eval_sk.nonempty[e] {
            continue;
        }
        exact.insert(eval_sk.exact[e], e as u32); // reverse order: the first eval row wins
        for (band, map) in buckets.iter_mut().enumerate() {
            map.entry(eval_sk.keys[e * bands + band])
                .or_default()
                .push(e as u32);
        }
    }
    let eval_sets: Vec<Option<Vec<u64>>> = if ctx.near {
        eval.par_iter()
            .map_init(Scratch::default, |s, t| Some(ctx.hasher.shingle_set(t, s)))
            .collect()
    } else {
        vec![]
    };
    (0..train.len())
        .into_par_iter()
        .with_min_len(256)
        .map_init(Scratch::default, |scratch, i| {
            if i % 1024 == 0 {
                progress.add(1024);
            }
            if !train_sk.nonempty[i] {
                return None;
            }
            if let Some(&e) = exact.get(&train_sk.exact[i]) {
                return Some(Pair {
                    removed: i as u32,
                    kept: e,
                    similarity: 1.0,
                });
            }
            if !ctx.near {
                return None;
            }
            let mut cands: Vec<u32> = buckets
                .iter()
                .enumerate()
                .filter_map(|(band, map)| map.get(&train_sk.keys[i * bands + band]))
                .flatten()
                .copied()
                .collect();
            if cands.is_empty() {
                return None;
            }
            cands.sort_unstable();
            cands.dedup();
            let mine = ctx.hasher.shingle_set(train[i], scratch);
            let mut best: Option<Pair> = None;
            for e in cands {
                let sim = jaccard(&mine, eval_sets[e as usize].as_deref().unwrap_or(&[]));
                if best.is_none_or(|b| sim > b.similarity) {
                    best = Some(Pair {
                        removed: i as u32,
                        kept: e,
                        similarity: sim,
                    });
                }
            }
            best.filter(|b| !config.verify || b.similarity >= config.threshold)
        })
        .flatten()
        .collect()
}
