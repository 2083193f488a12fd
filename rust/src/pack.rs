//! Sequence packing: assign documents (by token length) to rows of at most `capacity`
//! tokens, so a batch wastes as little compute on padding as possible.
//!
//! Design notes:
//! - Both heuristics run over the WHOLE dataset, not per batch of 1000 rows as TRL's
//!   `pack_dataset` does: bins never stop at a batch edge, so the last bins of each
//!   batch are not left half empty.
//! - Best-fit decreasing keeps the bins in a `BTreeMap` from remaining capacity to the
//!   bins with that much room; "smallest room that still fits" is one `range(len..)`
//!   lookup, so the whole pass is O(n log n). First-fit decreasing needs "leftmost bin
//!   with enough room", which a max segment tree over the bins answers in O(log n).
//! - Items are sorted by length descending, ties by index, and bins are shuffled with a
//!   seeded SplitMix64 Fisher-Yates: the same lengths and seed give the same rows on
//!   every machine, with no dependency on a random-number crate's version.
//!   Without the shuffle, rows would come out longest-documents-first, which biases
//!   the first training steps.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{bad_choice, LadleError, Result};

/// Packing heuristic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Best-fit decreasing: each document goes to the fullest bin it fits in.
    BestFit,
    /// First-fit decreasing: each document goes to the oldest bin it fits in.
    FirstFit,
}

impl std::str::FromStr for Strategy {
    type Err = LadleError;
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "bfd" => Ok(Strategy::BestFit),
            "ffd" => Ok(Strategy::FirstFit),
            other => Err(bad_choice("packing strategy", other, &["bfd", "ffd"])),
        }
    }
}

/// Pack `lengths` into bins of at most `capacity` tokens. Returns the item indices of
/// each bin (in placement order), bins shuffled by `seed`.
///
/// Every index appears exactly once. A length of 0 or above `capacity` is an error:
/// the caller decides what to do with empty and over-long documents before packing.
pub fn pack(
    lengths: &[u64],
    capacity: u64,
    strategy: Strategy,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if capacity == 0 {
        return Err(LadleError::Value(
            "packing capacity must be positive".into(),
        ));
    }
    if let Some((i, &len)) = lengths
        .iter()
        .enumerate()
        .find(|(_, &l)| l == 0 || l > capacity)
    {
        return Err(LadleError::Value(format!(
            "item {i} has length {len}; lengths must be in 1..={capacity} (drop, truncate or \
             split before packing)"
        )));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep index order, so the result is deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut bins = match strategy {
        Strategy::BestFit => best_fit(&order, lengths, capacity),
        Strategy::FirstFit => first_fit(&order, lengths, capacity),
    };
    shuffle(&mut bins, seed);
    Ok(bins)
}

fn best_fit(order: &[usize], lengths: &[u64], capacity: u64) -> Vec<Vec<usize>> {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    // remaining capacity -> bins with exactly that much room (a multiset of bins).
    let mut by_room: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for &item in order {
        let len = lengths[item];
        let found = by_room.range_mut(len..).next().map(|(&room, ids)| {
            let bin = ids.pop().expect("empty room lists are removed");
            (room, bin, ids.is_empty())
        });
        let (bin, room) = match found {
            Some((room, bin, now_empty)) => {
                if now_empty {
                    by_room.remove(&room);
                }
                (bin, room)
            }
            None => {
                bins.push(Vec::new());
                (bins.len() - 1, capacity)
            }
        };
        bins[bin].push(item);
        let left = room - len;
        if left > 0 {
            by_room.entry(left).or_default().push(bin);
        }
    }
    bins
}

fn first_fit(order: &[usize], lengths: &[u64], capacity: u64) -> Vec<Vec<usize>> {
    // Segment tree over at most n bins; a bin not yet opened has room `capacity`, so
    // the leftmost leaf with enough room is either an open bin or the next new one.
    let n = order.len().max(1);
    let size = n.next_power_of_two();
    let mut tree = vec![capacity; 2 * size];
    let mut bins: Vec<Vec<usize>> = Vec::new();
    for &item in order {
        let len = lengths[item];
        let mut node = 1;
        while node < size {
            node = if tree[2 * node] >= len {
                2 * node
            } else {
                2 * node + 1
            };
        }
        let bin = node - size;
        if bin == bins.len() {
            bins.push(Vec::new());
        }
        bins[bin].push(item);
        tree[node] -= len;
        let mut up = node / 2;
        while up >= 1 {
            tree[up] = tree[2 * up].max(tree[2 * up + 1]);
            up /= 2;
        }
    }
    bins
}

/// Packed rows in flat (Arrow-style) layout: row `r` spans
/// `row_offsets[r]..row_offsets[r + 1]` of `input_ids`, `labels` and `position_ids`, and
/// its document lengths are `seq_lengths[seq_offsets[r]..seq_offsets[r + 1]]`.
#[derive(Debug, Default, PartialEq)]
pub struct Packed {
    pub input_ids: Vec<i32>,
    pub labels: Vec<i32>,
    pub position_ids: Vec<i32>,
    pub row_offsets: Vec<i64>,
    pub seq_lengths: Vec<i32>,
    pub seq_offsets: Vec<i64>,
}

/// Document offsets come from Python (numpy arrays anyone can build), so every way
/// they can point outside `ids` is an error here rather than a slice panic later.
fn check_offsets(n_ids: usize, n_labels: usize, offsets: &[i64]) -> Result<()> {
    if n_ids != n_labels {
        return Err(LadleError::Value(format!(
            "ids has {n_ids} entries but labels has {n_labels}"
        )));
    }
    if let Some(&first) = offsets.first() {
        if first < 0 {
            return Err(LadleError::Value(format!(
                "offsets[0] is {first}; offsets must be non-negative"
            )));
        }
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(LadleError::Value(format!(
            "offsets must not decrease, but offsets[{}] = {} > offsets[{}] = {}",
            i,
            offsets[i],
            i + 1,
            offsets[i + 1]
        )));
    }
    match offsets.last() {
        Some(&last) if last as u64 > n_ids as u64 => Err(LadleError::Value(format!(
            "the last offset is {last} but there are only {n_ids} ids"
        ))),
        _ => Ok(()),
    }
}

/// Concatenate the documents of each bin into one row, the layout transformers'
/// padding-free path expects: `position_ids` restart at 0 for every document (that is
/// how attention is kept inside a document), and the label of each document's first
/// token is `IGNORE`, because the loss at that position would be the previous
/// document's last token predicting an unrelated next document.
///
/// Document `d` is `ids[offsets[d]..offsets[d + 1]]` (same for `labels`).
pub fn assemble(
    ids: &[i32],
    labels: &[i32],
    offsets: &[i64],
    bins: &[Vec<usize>],
) -> Result<Packed> {
    check_offsets(ids.len(), labels.len(), offsets)?;
    gather(offsets, bins, |a, b, out_ids, out_labels| {
        out_ids.extend_from_slice(&ids[a..b]);
        out_labels.extend_from_slice(&labels[a..b]);
        Ok(())
    })
}

/// [`assemble`] with the tokens in two files of native-endian `i32` (token `t` at byte
/// `4 t`), read document by document with `pread`: what `ladle prep` spilled while
/// encoding. A shard's documents lie all over the files, so a memory map of them would
/// bring nearly every page into the process's RSS (the kernel maps up to 16 cached
/// pages around each fault): at 1M chat rows, 2.1 GB per shard in flight. Read this
/// way, the process holds only the shard it builds; the files stay in the page cache.
pub fn assemble_files(
    ids: &Path,
    labels: &Path,
    offsets: &[i64],
    bins: &[Vec<usize>],
) -> Result<Packed> {
    let open = |p: &Path| -> Result<(File, usize)> {
        let f = File::open(p).map_err(|e| LadleError::io(p, e))?;
        let len = f.metadata().map_err(|e| LadleError::io(p, e))?.len();
        if len % 4 != 0 {
            return Err(LadleError::Value(format!(
                "{}: {len} bytes is not a whole number of int32 tokens",
                p.display()
            )));
        }
        Ok((f, (len / 4) as usize))
    };
    let (ids_file, n_ids) = open(ids)?;
    let (labels_file, n_labels) = open(labels)?;
    check_offsets(n_ids, n_labels, offsets)?;
    let mut buf = Vec::new();
    gather(offsets, bins, |a, b, out_ids, out_labels| {
        read_i32s(&ids_file, ids, a, b, &mut buf, out_ids)?;
        read_i32s(&labels_file, labels, a, b, &mut buf, out_labels)
    })
}

/// Appends tokens `a..b` of `file` to `out` (`buf`: the bytes, reused between calls).
fn read_i32s(
    file: &File,
    path: &Path,
    a: usize,
    b: usize,
    buf: &mut Vec<u8>,
    out: &mut Vec<i32>,
) -> Result<()> {
    buf.resize((b - a) * 4, 0);
    file.read_exact_at(buf, a as u64 * 4)
        .map_err(|e| LadleError::io(path, e))?;
    out.extend(
        buf.chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// The packed rows of `bins`; `append(a, b, ids, labels)` appends tokens `a..b` of
/// the ids and of the labels (offsets already checked against the tokens).
fn gather(
    offsets: &[i64],
    bins: &[Vec<usize>],
    mut append: impl FnMut(usize, usize, &mut Vec<i32>, &mut Vec<i32>) -> Result<()>,
) -> Result<Packed> {
    let docs = offsets.len().saturating_sub(1);
    let total: usize = bins
        .iter()
        .flatten()
        .map(|&d| {
            if d >= docs {
                Err(LadleError::Value(format!(
                    "document {d} out of range (have {docs})"
                )))
            } else {
                Ok((offsets[d + 1] - offsets[d]) as usize)
            }
        })
        .sum::<Result<usize>>()?;
    let mut out = Packed {
        input_ids: Vec::with_capacity(total),
        labels: Vec::with_capacity(total),
        position_ids: Vec::with_capacity(total),
        row_offsets: Vec::with_capacity(bins.len() + 1),
        seq_lengths: Vec::new(),
        seq_offsets: Vec::with_capacity(bins.len() + 1),
    };
    out.row_offsets.push(0);
    out.seq_offsets.push(0);
    for bin in bins {
        for &d in bin {
            let (a, b) = (offsets[d] as usize, offsets[d + 1] as usize);
            let start = out.labels.len();
            append(a, b, &mut out.input_ids, &mut out.labels)?;
            if b > a {
                out.labels[start] = crate::tokenize::mask::IGNORE;
            }
            out.position_ids.extend(0..(b - a) as i32);
            out.seq_lengths.push((b - a) as i32);
        }
        out.row_offsets.push(out.input_ids.len() as i64);
        out.seq_offsets.push(out.seq_lengths.len() as i64);
    }
    Ok(out)
}

/// SplitMix64: tiny, well-mixed, and stable across platforms and crate versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..bound (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// bin counts we see, which is irrelevant for shuffling training rows).
    fn below(&mut self, bound: usize) -> usize {
        ((self.next() as u128 * bound as u128) >> 64) as usize
    }
}

/// Seeded Fisher-Yates shuffle.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};

    fn check(lengths: &[u64], cap: u64, bins: &[Vec<usize>]) {
        let mut seen = vec![0u32; lengths.len()];
        for bin in bins {
            assert!(!bin.is_empty());
            let total: u64 = bin.iter().map(|&i| lengths[i]).sum();
            assert!(total <= cap, "bin over capacity: {total} > {cap}");
            for &i in bin {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "every item exactly once");
    }

    #[test]
    fn best_fit_prefers_tightest_bin() {
        // 6 opens bin A (room 4), 5 opens bin B (room 5); 4 fits A exactly (best fit)
        // whereas first fit would also pick A; 3 then must go to B.
        let lengths = [6, 5, 4, 3];
        let bins = pack(&lengths, 10, Strategy::BestFit, 0).unwrap();
        check(&lengths, 10, &bins);
        let mut sorted: Vec<Vec<usize>> = bins.clone();
        sorted.sort();
        assert_eq!(sorted, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn first_fit_fills_oldest_bin() {
        let lengths = [4, 4, 4, 2, 2];
        let bins = pack(&lengths, 8, Strategy::FirstFit, 3).unwrap();
        check(&lengths, 8, &bins);
        let mut sorted = bins.clone();
        sorted.sort();
        assert_eq!(sorted, vec![vec![0, 1], vec![2, 3, 4]]);
    }

    #[test]
    fn assemble_restarts_positions_and_masks_starts() {
        let ids = [1, 2, 3, 4, 5, 6];
        let labels = [-100, 2, 3, -100, 5, 6];
        let offsets = [0, 3, 6];
        let p = assemble(&ids, &labels, &offsets, &[vec![1, 0]]).unwrap();
        assert_eq!(p.input_ids, vec![4, 5, 6, 1, 2, 3]);
        assert_eq!(p.labels, vec![-100, 5, 6, -100, 2, 3]);
        assert_eq!(p.position_ids, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(p.row_offsets, vec![0, 6]);
        assert_eq!(p.seq_lengths, vec![3, 3]);
        assert!(assemble(&ids, &labels, &offsets, &[vec![2]]).is_err());
    }

    #[test]
    fn assemble_files_reads_what_assemble_gets_in_memory() {
        let dir = std::env::temp_dir().join(format!("ladle-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ids_path, labels_path) = (dir.join("ids.bin"), dir.join("labels.bin"));
        let ids: Vec<i32> = (0..40).map(|i| i * 7 - 3).collect();
        let labels: Vec<i32> = ids
            .iter()
            .map(|&i| if i % 3 == 0 { -100 } else { i })
            .collect();
        let bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        std::fs::write(&ids_path, bytes(&ids)).unwrap();
        std::fs::write(&labels_path, bytes(&labels)).unwrap();
        let offsets = [0, 5, 5, 17, 30, 40];
        let bins = vec![vec![3, 0], vec![1, 4, 2]];
        let want = assemble(&ids, &labels, &offsets, &bins).unwrap();
        let got = assemble_files(&ids_path, &labels_path, &offsets, &bins).unwrap();
        assert_eq!(got, want);
        // offsets past the end of the files, and a file that is not whole int32s
        let e = assemble_files(&ids_path, &labels_path, &[0, 41], &[vec![0]]).unwrap_err();
        assert!(matches!(e, LadleError::Value(_)), "{e}");
        std::fs::write(&labels_path, [0u8; 5]).unwrap();
        let e = assemble_files(&ids_path, &labels_path, &offsets, &bins).unwrap_err();
        assert!(e.to_string().contains("labels.bin"), "{e}");
        let e = assemble_files(&dir.join("none"), &labels_path, &offsets, &bins).unwrap_err();
        assert!(matches!(e, LadleError::Io { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(pack(&[0], 10, Strategy::BestFit, 0).is_err());
        assert!(pack(&[11], 10, Strategy::FirstFit, 0).is_err());
        assert!(pack(&[1], 0, Strategy::BestFit, 0).is_err());
        assert!("nope".parse::<Strategy>().is_err());
        assert!(pack(&[], 10, Strategy::BestFit, 0).unwrap().is_empty());
    }

    #[test]
    fn assemble_refuses_offsets_outside_the_ids() {
        let ids = [1, 2, 3, 4];
        for offsets in [&[0, 3, 1][..], &[-1, 2], &[0, 9], &[2, 1, 4]] {
            let e = assemble(&ids, &ids, offsets, &[vec![0]]).unwrap_err();
            assert!(matches!(e, LadleError::Value(_)), "{offsets:?}: {e}");
        }
        assert!(assemble(&ids, &ids[..3], &[0, 4], &[vec![0]]).is_err());
    }

    proptest! {
        // Any offsets and bins: a result or a Value error, never a panic; a result
        // holds exactly the tokens of the documents named.
        #[test]
        fn assemble_never_panics(
            n in 0usize..30,
            offsets in prop::collection::vec(-5i64..40, 0..6),
            bins in prop::collection::vec(prop::collection::vec(0usize..8, 0..4), 0..4),
        ) {
            let ids: Vec<i32> = (0..n as i32).collect();
            match assemble(&ids, &ids, &offsets, &bins) {
                Ok(p) => {
                    let want: i64 = bins.iter().flatten().map(|&d| offsets[d + 1] - offsets[d]).sum();
                    prop_assert_eq!(p.input_ids.len() as i64, want);
                    prop_assert_eq!(p.row_offsets.len(), bins.len() + 1);
                }
                Err(e) => prop_assert!(matches!(e, LadleError::Value(_))),
            }
        }

        #[test]
        fn invariants(lengths in prop::collection::vec(1u64..=64, 0..300), seed in any::<u64>()) {
            for strategy in [Strategy::BestFit, Strategy::FirstFit] {
                let bins = pack(&lengths, 64, strategy, seed).unwrap();
                check(&lengths, 64, &bins);
                let total: u64 = lengths.iter().sum();
                // Any-fit packings leave at most one bin half empty or worse, so they
                // never use more than 2 * ceil(total / cap) + 1 bins.
                let lower = total.div_ceil(64) as usize;
                prop_assert!(bins.len() >= lower);
                prop_assert!(bins.len() <= 2 * lower + 1);
                prop_assert_eq!(&bins, &pack(&lengths, 64, strategy, seed).unwrap());
            }
        }
    }
}
