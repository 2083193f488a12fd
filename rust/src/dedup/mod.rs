//! Exact and near-duplicate detection, and decontamination against an eval set.
//!
//! - [`normalize`]: NFKC, lowercase, punctuation, whitespace, optional digit folding.
//! - [`minhash`]: word n-gram shingles and MinHash signatures (a fast scheme, and two
//!   schemes equal to datasketch's bit for bit).
//! - [`mt19937`]: numpy's `RandomState`, for datasketch's permutation draws.
//! - [`lsh`]: datasketch's choice of (bands, rows) and band keys.
//! - [`cluster`]: union-find over row indices.
//! - `kernels`: the vectorised permutation loops; `decontam`: eval-set matching.
//! - [`types`]: settings, counters and results the stages share.
//! - [`pipeline`]: the whole pass, one function per [`Stage`], parallel with rayon.

pub mod cluster;
mod decontam;
mod kernels;
pub mod lsh;
pub mod minhash;
pub mod mt19937;
pub mod normalize;
pub mod pipeline;
pub mod types;

pub use lsh::optimal_params;
pub use minhash::{jaccard, signatures, MinHashParams, MinHasher, Scheme, Signatures};
pub use normalize::{normalize, NormalizeOptions};
pub use pipeline::deduplicate;
pub use types::{
    DedupConfig, DedupOutput, DedupStats, Keep, Pair, Progress, Stage, DATASKETCH_WEIGHTS,
    VERIFIED_WEIGHTS,
};
