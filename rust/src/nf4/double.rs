//! Double quantization of the absmax statistics (`compress_statistics=True`).
//!
//! bitsandbytes computes `offset = absmax.mean()` with torch, then runs its C++ CPU
//! `quantize_blockwise` (blocksize 256, signed dynamic map) over `absmax - offset`;
//! the behaviour reproduced here was checked value by value against the installed
//! library (tests/test_quant.py).
//!
//! The uint8 codes depend on the offset down to the last bit, so the mean is computed the
//! way torch's CPU `sum` does it (ATen `cascade_sum`: a vectorised multi-level pairwise sum,
//! split over threads past 32768 elements), then divided by n in float32. `lanes` is
//! torch's float vector width (16 with AVX-512, 8 with AVX2) and `threads` torch's thread
//! count; the Python layer passes both. A different width or thread count moves the
//! offset by at most an ulp or so, which is the tolerance the tests allow.

use super::tables::DYNAMIC_MAP_BITS;

/// Block size bitsandbytes uses for the nested quantization.
pub const NESTED_BLOCKSIZE: usize = 256;

/// The signed dynamic map as float32 (`nested_quant_map`).
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// Result of double-quantizing one tensor's absmax.
#[derive(Clone, Debug, PartialEq)]
pub struct Nested {
    /// uint8 code per 4-bit block (the checkpoint's `absmax`).
    pub codes: Vec<u8>,
    /// float32 absmax per 256 codes (`nested_absmax`).
    pub absmax2: Vec<f32>,
    /// `mean(absmax)` (`nested_offset`).
    pub offset: f32,
}

/// Double-quantize `absmax` as `quantize_4bit(..., compress_statistics=True)` does.
pub fn double_quantize(absmax: &[f32], lanes: usize, threads: usize) -> Nested {
    let offset = torch_mean(absmax, lanes, threads);
    let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let (codes, absmax2) = quantize_blockwise_8bit(&centred, NESTED_BLOCKSIZE);
    Nested {
        codes,
        absmax2,
        offset,
    }
}

/// bitsandbytes' C++ CPU `quantize_blockwise` (0.50.x). It does not search the code
/// table per value: it maps `x / absmax` onto 65536 evenly spaced bins of [-1, 1] and
/// looks the bin up in a table of nearest codes built once from the midpoints. The bin
/// rounding makes a value within ~1.5e-5 of a midpoint land on either side, so only
/// this exact sequence of float32 operations reproduces its codes:
///
/// - `absmax` = max |x| from 0 (NaN ignored); an all-zero block gets codes 0;
/// - `v = clamp(x * (1 / absmax), -1, 1)`;
/// - `bin = trunc(((v + 1) * 0.5) * 65535 + 0.5)`, `code = lut[bin]`.
pub fn quantize_blockwise_8bit(xs: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let lut = quantize_lut();
    let mut out = vec![0u8; xs.len()];
    let mut absmax = Vec::with_capacity(xs.len().div_ceil(blocksize));
    for (block, o) in xs.chunks(blocksize).zip(out.chunks_mut(blocksize)) {
        let am = block.iter().fold(0f32, |m, &v| m.max(v.abs()));
        absmax.push(am);
        if am == 0.0 {
            continue; // codes stay 0
        }
        let inv = 1.0f32 / am;
        for (q, &v) in o.iter_mut().zip(block) {
            // max-then-min, not clamp: bnb's `_mm256_max_ps` sends NaN to -1 (code 0).
            #[allow(clippy::manual_clamp)]
            let v = (v * inv).max(-1.0).min(1.0);
            let t = ((v + 1.0) * 0.5) * LUT_BINS_MINUS_ONE + 0.5;
            *q = lut[t as usize];
        }
    }
    (out, absmax)
}

const LUT_BINS: usize = 65536;
const LUT_BINS_MINUS_ONE: f32 = (LUT_BINS - 1) as f32;

/// bin -> nearest code: bin i stands for `-1 + 2i / 65535`; its code is the number of
/// code midpoints `0.5 * (c[k] + c[k+1])` strictly below that value.
fn quantize_lut() -> &'static [u8; LUT_BINS] {
    static LUT: std::sync::OnceLock<Box<[u8; LUT_BINS]>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let code = dynamic_map();
        let mid: Vec<f32> = code.windows(2).map(|w| 0.5f32 * (w[0] + w[1])).collect();
        let mut lut = Box::new([0u8; LUT_BINS]);
        let mut k = 0usize;
        for (i, slot) in lut.iter_mut().enumerate() {
            let val = -1.0f32 + (2.0f32 * i as f32) / LUT_BINS_MINUS_ONE;
            while k < mid.len() && mid[k] < val {
                k += 1;
            }
            *slot = k as u8;
        }
        lut
    })
}

/// `torch.mean` of a contiguous float32 vector on CPU: `sum(x) / n` in float32.
pub fn torch_mean(xs: &[f32], lanes: usize, threads: usize) -> f32 {
    torch_sum(xs, lanes, threads) / xs.len() as f32
}

const GRAIN_SIZE: usize = 32768;

/// `torch.sum` of a contiguous float32 vector on CPU (TensorIterator `parallel_reduce`).
pub fn torch_sum(xs: &[f32], lanes: usize, threads: usize) -> f32 {
    let n = xs.len();
    if n < GRAIN_SIZE || threads <= 1 {
        return 0.0 + cascade_sum(xs, lanes);
    }
    // two_pass_reduction: at::parallel_for splits [0, n) into equal chunks, one per task,
    // each summed into its thread's slot; then the slots are summed the same way.
    let tasks = threads.min(n.div_ceil(GRAIN_SIZE));
    let chunk = n.div_ceil(tasks);
    let mut buffer = vec![0f32; threads];
    for (t, slot) in buffer.iter_mut().enumerate().take(tasks) {
        let begin = t * chunk;
        if begin < n {
            *slot += cascade_sum(&xs[begin..(begin + chunk).min(n)], lanes);
        }
    }
    0.0 + cascade_sum(&buffer, lanes)
}

/// ATen `cascade_sum` over one contiguous row of float32.
fn cascade_sum(xs: &[f32], lanes: usize) -> f32 {
    let n = xs.len();
    if n < lanes {
        return row_sum(xs, 1, n)[0];
    }
    // vectorized_inner_sum: sum whole vectors lane-wise, add the scalar tail, then lanes.
    let vec_size = n / lanes;
    let partials = row_sum(xs, lanes, vec_size);
    let mut acc = 0f32;
    for &x in &xs[vec_size * lanes..] {
        acc += x;
    }
    for p in partials {
        acc += p;
    }
    acc
}

// The emulation below mirrors ATen's index arithmetic on purpose, loop for loop.
/// ATen `row_sum` over `size` items of `width` lanes each: 4 interleaved rows
/// (ilp_factor) through `multi_row_sum`, the leftovers into row 0, then rows folded.
#[allow(clippy::needless_range_loop)]
fn row_sum(xs: &[f32], width: usize, size: usize) -> Vec<f32> {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    let mut partial = multi_row_sum(xs, width, size_ilp);
    for i in size_ilp * ILP..size {
        for l in 0..width {
            partial[0][l] += xs[i * width + l];
        }
    }
    let mut out = partial[0].clone();
    for row in &partial[1..] {
        for l in 0..width {
            out[l] += row[l];
        }
    }
    out
}

/// ATen `multi_row_sum` with nrows = 4 and 4 levels: item (i, k) is the `width`-lane
/// vector at index `i * 4 + k`.
#[allow(clippy::needless_range_loop)]
fn multi_row_sum(xs: &[f32], width: usize, size: usize) -> Vec<Vec<f32>> {
    const LEVELS: usize = 4;
    const NROWS: usize = 4;
    let level_power = 4usize.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = vec![vec![vec![0f32; width]; NROWS]; LEVELS];
    let load = |i: usize, k: usize, l: usize| xs[(i * NROWS + k) * width + l];
    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for k in 0..NROWS {
                for l in 0..width {
                    acc[0][k][l] += load(i, k, l);
                }
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..NROWS {
                for l in 0..width {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0;
                }
            }
            let mask = level_mask << (j * level_power);
            if i & mask != 0 {
                break;
            }
        }
    }
    while i < size {
        for k in 0..NROWS {
            for l in 0..width {
                acc[0][k][l] += load(i, k, l);
            }
        }
        i += 1;
    }
    for j in 1..LEVELS {
        for k in 0..NROWS {
            for l in 0..width {
                acc[0][k][l] += acc[j][k][l];
            }
        }
    }
    acc.swap_remove(0)
}

/// ATen `utils::CeilLog2`.
fn ceil_log2(x: usize) -> usize {
    if x <= 2 {
        1
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_map_is_sorted_and_spans_minus_one_to_one() {
        let m = dynamic_map();
        assert!(m.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(m[255], 1.0);
        assert!(m[0] > -1.0 && m[0] < -0.99);
    }

    #[test]
    fn codes_follow_the_bin_table_and_zero_blocks_are_zero() {
        let m = dynamic_map();
        let (q, am) = quantize_blockwise_8bit(&[1.0, -1.0, m[37], 0.0], 256);
        assert_eq!(am, vec![1.0]);
        assert_eq!(&q[..2], &[255, 0]);
        assert_eq!(q[2], 37);
        // Not 127 (the code of 0.0): 0 falls in the bin of -1 + 2 * 32768 / 65535 = 1.5e-5,
        // whose nearest code is 131. bitsandbytes 0.50.2 gives 131 too.
        assert_eq!(q[3], 131);
        let (q, am) = quantize_blockwise_8bit(&[0.0; 300], 256);
        assert_eq!(am, vec![0.0, 0.0]);
        assert!(q.iter().all(|&c| c == 0));
    }

    #[test]
    fn torch_sum_is_close_to_exact() {
        let xs: Vec<f32> = (0..100_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let exact: f64 = xs.iter().map(|&x| x as f64).sum();
        for threads in [1, 2, 8] {
            let s = torch_sum(&xs, 16, threads) as f64;
            assert!((s - exact).abs() / exact < 1e-6, "{s} vs {exact}");
        }
    }

    #[test]
    fn ceil_log2_matches_aten() {
        assert_eq!(ceil_log2(0), 1);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(4), 2);
        assert_eq!(ceil_log2(5), 3);
    }
}
