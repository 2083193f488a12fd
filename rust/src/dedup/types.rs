//! The types the dedup stages share: settings, progress counters, per-row sketches and
//! results. They live apart from `pipeline` (which runs the stages) so that `decontam`,
//! a stage of its own, depends on them and not on the pipeline that calls it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::minhash::{MinHashParams, MinHasher};
use crate::error::{bad_choice, LadleError, Result};

/// Which member of a duplicate cluster survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The earliest row (stable, reproducible across runs and shards).
    First,
    /// The longest row (by the caller's lengths, else the text's bytes); ties go to
    /// the earliest.
    Longest,
}

impl std::str::FromStr for Keep {
    type Err = LadleError;
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "first" => Ok(Keep::First),
            "longest" => Ok(Keep::Longest),
            other => Err(bad_choice("keep policy", other, &["first", "longest"])),
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

/// The stages of a dedup pass, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Sketch,
    Decontaminate,
    Candidates,
    Verify,
    Cluster,
    Done,
}

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Sketch,
        Stage::Decontaminate,
        Stage::Candidates,
        Stage::Verify,
        Stage::Cluster,
        Stage::Done,
    ];

    /// The name a progress bar shows.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Sketch => "sketch",
            Stage::Decontaminate => "decontaminate",
            Stage::Candidates => "candidates",
            Stage::Verify => "verify",
            Stage::Cluster => "cluster",
            Stage::Done => "done",
        }
    }
}

/// Shared counters a caller may poll from another thread while the pipeline runs.
#[derive(Default)]
pub struct Progress {
    /// Index of the current [`Stage`] (an atomic cannot hold the enum itself).
    stage: AtomicUsize,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub(super) fn start(&self, stage: Stage, total: usize) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total as u64, Ordering::Relaxed);
        self.stage.store(stage as usize, Ordering::Relaxed);
    }

    pub(super) fn add(&self, n: usize) {
        self.done.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `(stage, done, total)` as of now.
    pub fn snapshot(&self) -> (Stage, u64, u64) {
        let i = self.stage.load(Ordering::Relaxed);
        (
            Stage::ALL[i.min(Stage::ALL.len() - 1)],
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
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

/// Counters of one pass. With the `python` feature this struct is itself the Python
/// class `ladle._core.DedupStats` (read-only attributes), so the field list exists once.
#[cfg_attr(
    feature = "python",
    pyo3::pyclass(get_all, frozen, eq, module = "ladle._core")
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// `bands` keys per row (empty without near-duplicate search).
    pub keys: Vec<u64>,
    pub nonempty: Vec<bool>,
}

/// What every stage needs to know about the pass.
pub(super) struct Ctx {
    pub hasher: MinHasher,
    pub bands: usize,
    pub rows: usize,
    pub near: bool,
}
