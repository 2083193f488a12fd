//! Blockwise 4-bit quantization, bit-exact with bitsandbytes 0.50.2 on CPU.
//!
//! bitsandbytes has no CPU kernel for `quantize_4bit`; its "default" backend runs plain
//! torch ops, and this module reproduces them operation by operation in float32:
//!
//! - `absmax` = max |x| over the block (NaN propagates, like `torch.max`).
//! - Full blocks: `y = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)`; the stored absmax is
//!   the unclamped max, so an all-zero block stores 0 and emits code 7 (0x77).
//! - The partial last block: `y = clamp(x / max(absmax, 1e-38), -1, 1)` (a division, not a
//!   reciprocal multiply) and the stored absmax IS the clamped value (1e-38 when all zero).
//! - The code is `torch.bucketize(y, midpoints)`: the number of midpoints strictly below
//!   `y` (a value on a midpoint takes the lower code; NaN takes the last code).
//! - Two codes per byte, even element in the high nibble; an odd tail is padded with the
//!   code of 0.0.
//!
//! Performance notes: the bucket search is 15 branch-free compares per element, which
//! LLVM vectorizes well; the kernel is compiled three times (baseline, AVX2, AVX-512) and
//! chosen at run time, so one wheel runs everywhere. Work is split over rayon in chunks
//! of whole blocks that map to disjoint output bytes, so there is no synchronisation.

use half::{bf16, f16};
use rayon::prelude::*;

use super::tables::{FP4_BOUNDS_BITS, FP4_ORDER, NF4_BOUNDS_BITS, NF4_ORDER};
use crate::error::{bad_choice, LadleError, Result};

/// The 4-bit data types bitsandbytes knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Nf4,
    Fp4,
}

impl std::str::FromStr for QuantType {
    type Err = LadleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nf4" => Ok(QuantType::Nf4),
            "fp4" => Ok(QuantType::Fp4),
            other => Err(bad_choice("quant_type", other, &["nf4", "fp4"])),
        }
    }
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
        }
    }

    fn bounds(self) -> [f32; 15] {
        let bits = match self {
            QuantType::Nf4 => NF4_BOUNDS_BITS,
            QuantType::Fp4 => FP4_BOUNDS_BITS,
        };
        bits.map(f32::from_bits)
    }

    fn order(self) -> [u8; 16] {
        match self {
            QuantType::Nf4 => NF4_ORDER,
            QuantType::Fp4 => FP4_ORDER,
        }
    }
}

/// Floating-point element types a checkpoint may store (little-endian bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatDtype {
    F32,
    BF16,
    F16,
}

/// From a safetensors dtype tag (`F32`, `BF16`, `F16`) or a torch name. A bad name from
/// the caller is a bad option; a checkpoint's own tag goes through [`FloatDtype::of_tensor`].
impl std::str::FromStr for FloatDtype {
    type Err = LadleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "F32" | "float32" => Ok(FloatDtype::F32),
            "BF16" | "bfloat16" => Ok(FloatDtype::BF16),
            "F16" | "float16" => Ok(FloatDtype::F16),
            other => Err(bad_choice(
                "dtype",
                other,
                &["float32", "bfloat16", "float16"],
            )),
        }
    }
}

impl FloatDtype {
    /// The dtype of a checkpoint tensor to quantize: anything but a float the
    /// quantizer reads is a problem of the checkpoint, hence a `Quant` error.
    pub fn of_tensor(tag: &str) -> Result<Self> {
        tag.parse().map_err(|_| {
            LadleError::Quant(format!(
                "unsupported dtype {tag}: NF4 quantizes float32, bfloat16 or float16 weights"
            ))
        })
    }

    pub fn size(self) -> usize {
        match self {
            FloatDtype::F32 => 4,
            FloatDtype::BF16 | FloatDtype::F16 => 2,
        }
    }

    /// The name torch gives the dtype (what bitsandbytes writes into the quant_state).
    pub fn torch_name(self) -> &'static str {
        match self {
            FloatDtype::F32 => "float32",
            FloatDtype::BF16 => "bfloat16",
            FloatDtype::F16 => "float16",
        }
    }

    pub fn safetensors_name(self) -> &'static str {
        match self {
            FloatDtype::F32 => "F32",
            FloatDtype::BF16 => "BF16",
            FloatDtype::F16 => "F16",
        }
    }
}

/// Allowed block sizes, as `quantize_4bit` checks them.
pub const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

pub fn check_blocksize(blocksize: usize) -> Result<()> {
    if BLOCKSIZES.contains(&blocksize) {
        Ok(())
    } else {
        Err(LadleError::Quant(format!(
            "invalid blocksize {blocksize}: expected one of {BLOCKSIZES:?}"
        )))
    }
}

/// Number of blocks (= absmax entries) for `n` elements.
pub fn num_blocks(n: usize, blocksize: usize) -> usize {
    n.div_ceil(blocksize)
}

/// Decode `bytes` (little-endian, `dtype`) into `out` as float32 (exact for every input).
pub fn decode_into(dtype: FloatDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        FloatDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        FloatDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        FloatDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
    }
}

/// Round float32 values to `dtype` and back, as `tensor.to(dtype)` does (round to nearest
/// even): the weight bitsandbytes sees is the one cast to the model dtype.
pub fn round_to(dtype: FloatDtype, xs: &mut [f32]) {
    match dtype {
        FloatDtype::F32 => {}
        FloatDtype::BF16 => xs.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        FloatDtype::F16 => xs.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
    }
}

/// Packed length in bytes of `n` 4-bit codes.
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// Quantize `n = bytes.len() / dtype.size()` elements to 4-bit codes.
///
/// `packed` must hold `packed_len(n)` bytes and `absmax` `num_blocks(n, blocksize)` floats.
pub fn quantize_4bit(
    dtype: FloatDtype,
    bytes: &[u8],
    blocksize: usize,
    qt: QuantType,
    packed: &mut [u8],
    absmax: &mut [f32],
) -> Result<()> {
    check_blocksize(blocksize)?;
    let n = bytes.len() / dtype.size();
    if bytes.len() % dtype.size() != 0 {
        return Err(LadleError::Quant(format!(
            "tensor byte length {} is not a multiple of the {} element size",
            bytes.len(),
            dtype.torch_name()
        )));
    }
    if packed.len() != packed_len(n) || absmax.len() != num_blocks(n, blocksize) {
        return Err(LadleError::Value(format!(
            "output buffers have the wrong size for {n} elements: packed {} (want {}), absmax {} (want {})",
            packed.len(),
            packed_len(n),
            absmax.len(),
            num_blocks(n, blocksize)
        )));
    }
    let ctx = Ctx {
        bounds: qt.bounds(),
        order: qt.order(),
        dtype,
        blocksize,
    };
    // Chunks of whole blocks: big enough to amortise rayon, small enough to balance.
    let blocks_per_task = (1 << 16) / blocksize;
    let elems_per_task = blocks_per_task * blocksize;
    let esize = dtype.size();
    packed
        .par_chunks_mut(elems_per_task / 2)
        .zip(absmax.par_chunks_mut(blocks_per_task))
        .enumerate()
        .for_each(|(task, (out, am))| {
            let start = task * elems_per_task;
            let end = (start + elems_per_task).min(n);
            let src = &bytes[start * esize..end * esize];
            let last_is_partial = end == n && n % blocksize != 0;
            quantize_chunk(&ctx, src, out, am, last_is_partial);
        });
    Ok(())
}

struct Ctx {
    bounds: [f32; 15],
    order: [u8; 16],
    dtype: FloatDtype,
    blocksize: usize,
}

fn quantize_chunk(ctx: &Ctx, src: &[u8], out: &mut [u8], absmax: &mut [f32], partial: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { quantize_chunk_avx512(ctx, src, out, absmax, partial) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { quantize_chunk_avx2(ctx, src, out, absmax, partial) };
        }
    }
    quantize_chunk_generic(ctx, src, out, absmax, partial)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn quantize_chunk_avx512(
    ctx: &Ctx,
    src: &[u8],
    out: &mut [u8],
    absmax: &mut [f32],
    partial: bool,
) {
    quantize_chunk_generic(ctx, src, out, absmax, partial)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_chunk_avx2(
    ctx: &Ctx,
    src: &[u8],
    out: &mut [u8],
    absmax: &mut [f32],
    partial: bool,
) {
    quantize_chunk_generic(ctx, src, out, absmax, partial)
}

/// Elements per step of the full-block loop: 32 codes make 16 whole bytes, and 32 f32
/// lanes are two AVX-512 (four AVX2) registers, so every loop below has a fixed trip
/// count that LLVM turns into straight vector code (compares, blends, a byte shuffle)
/// with no remainder handling per 64-element block.
const STEP: usize = 32;

#[inline(always)]
fn quantize_chunk_generic(
    ctx: &Ctx,
    src: &[u8],
    out: &mut [u8],
    absmax: &mut [f32],
    partial: bool,
) {
    let bs = ctx.blocksize;
    let esize = ctx.dtype.size();
    let n = src.len() / esize;
    let mut vals = [0f32; 4096];
    let nblocks = absmax.len();
    for (b, absmax_b) in absmax.iter_mut().enumerate() {
        let start = b * bs;
        let len = bs.min(n - start);
        let x = &mut vals[..len];
        decode_into(ctx.dtype, &src[start * esize..(start + len) * esize], x);
        let am = block_absmax(x);
        let o = &mut out[start / 2..(start + len).div_ceil(2)];
        if partial && b == nblocks - 1 {
            // Partial last block: torch divides by the clamped absmax and stores it.
            let am = clamp_min(am, 1e-38);
            *absmax_b = am;
            quantize_tail(ctx, x, am, o);
            continue;
        }
        *absmax_b = am;
        // Every allowed blocksize is a multiple of STEP, so a full block has no tail.
        let scale = 1.0f32 / clamp_min(am, 1e-38);
        for (xs, os) in x.chunks_exact(STEP).zip(o.chunks_exact_mut(STEP / 2)) {
            let mut codes = [0u32; STEP];
            for (c, &v) in codes.iter_mut().zip(xs) {
                *c = bucket(&ctx.bounds, clamp1(v * scale));
            }
            if ctx.order != NF4_ORDER {
                for c in codes.iter_mut() {
                    *c = ctx.order[*c as usize] as u32;
                }
            }
            for (j, byte) in os.iter_mut().enumerate() {
                *byte = ((codes[2 * j] << 4) | codes[2 * j + 1]) as u8;
            }
        }
    }
}

/// The partial last block (a division, not a reciprocal multiply, as torch does it),
/// an odd tail padded with the code of 0.0.
fn quantize_tail(ctx: &Ctx, x: &[f32], am: f32, o: &mut [u8]) {
    let code = |v: f32| ctx.order[bucket(&ctx.bounds, clamp1(v / am)) as usize];
    let pad = ctx.order[bucket(&ctx.bounds, 0.0) as usize];
    for (j, byte) in o.iter_mut().enumerate() {
        let hi = code(x[2 * j]);
        let lo = x.get(2 * j + 1).map_or(pad, |&v| code(v));
        *byte = (hi << 4) | lo;
    }
}

/// Max |x|, propagating NaN like `torch.max` (which bitsandbytes' torch path uses).
/// Sixteen running maxima by a plain compare-and-select (one `vmaxps`; `f32::max`'s NaN
/// rule would cost a blend per step and kept LLVM scalar), folded in halves so the fold
/// is vector code too; NaN is counted in a separate, also vectorized, pass.
#[inline(always)]
fn block_absmax(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut m = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            let a = ch[i].abs();
            m[i] = if a > m[i] { a } else { m[i] };
        }
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            m[i] = if m[i + w] > m[i] { m[i + w] } else { m[i] };
        }
    }
    let mut best = m[0];
    for &v in rest {
        let a = v.abs();
        best = if a > best { a } else { best };
    }
    let nans: u32 = x.iter().map(|v| u32::from(v.is_nan())).sum();
    if nans > 0 {
        f32::NAN
    } else {
        best
    }
}

/// `torch.clamp(x, min=lo)`: NaN stays NaN.
#[inline(always)]
fn clamp_min(x: f32, lo: f32) -> f32 {
    if x < lo {
        lo
    } else {
        x
    }
}

/// `torch.clamp(y, -1, 1)`: NaN stays NaN.
#[inline(always)]
fn clamp1(y: f32) -> f32 {
    y.clamp(-1.0, 1.0)
}

/// `torch.bucketize(y, bounds)` (right=False): the count of bounds strictly below `y`;
/// NaN lands past the last bound, as torch's binary search puts it.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(y <= b)` is true for NaN on purpose
fn bucket(bounds: &[f32; 15], y: f32) -> u32 {
    // u32 lanes as wide as the f32 lanes, so the compares vectorize without repacking.
    let mut c = 0u32;
    for &b in bounds {
        c += u32::from(!(y <= b));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(xs: &[f32], bs: usize) -> (Vec<u8>, Vec<f32>) {
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut p = vec![0; packed_len(xs.len())];
        let mut a = vec![0.0; num_blocks(xs.len(), bs)];
        quantize_4bit(FloatDtype::F32, &bytes, bs, QuantType::Nf4, &mut p, &mut a).unwrap();
        (p, a)
    }

    #[test]
    fn extremes_map_to_end_codes_and_high_nibble_first() {
        let mut xs = vec![0.0f32; 64];
        xs[0] = -2.0;
        xs[1] = 2.0;
        let (p, a) = q(&xs, 64);
        assert_eq!(a, vec![2.0]);
        assert_eq!(p[0], 0x0F);
        assert!(p[1..].iter().all(|&b| b == 0x77));
    }

    #[test]
    fn all_zero_blocks_match_cpu_path() {
        // Full block: absmax 0, codes 7. Partial last block: absmax clamped to 1e-38.
        let (p, a) = q(&[0.0; 64 + 33], 64);
        assert_eq!(a, vec![0.0, 1e-38]);
        assert!(p.iter().all(|&b| b == 0x77));
        assert_eq!(p.len(), 49);
    }

    #[test]
    fn value_on_a_midpoint_takes_the_lower_code() {
        let mid = f32::from_bits(NF4_BOUNDS_BITS[8]);
        let mut xs = vec![0.0f32; 32];
        xs[0] = 1.0;
        xs[1] = mid;
        let (p, _) = q(&xs, 32);
        assert_eq!(p[0], 0xF8);
    }

    /// The vector kernel against the rule written out one element at a time, on every
    /// blocksize, both code tables, with NaN, infinities, zeros and a partial last block.
    #[test]
    fn kernel_equals_the_scalar_rule() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            for &bs in &BLOCKSIZES {
                let n = bs * 5 + 7;
                let mut xs: Vec<f32> = (0..n)
                    .map(|_| ((next() % 2_000_001) as f32 / 1e6 - 1.0) * 3.0)
                    .collect();
                xs[3] = f32::NAN;
                xs[bs + 1] = f32::INFINITY;
                xs[2 * bs..3 * bs].fill(0.0);
                let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
                let mut p = vec![0; packed_len(n)];
                let mut a = vec![0.0; num_blocks(n, bs)];
                quantize_4bit(FloatDtype::F32, &bytes, bs, qt, &mut p, &mut a).unwrap();
                let (bounds, order) = (qt.bounds(), qt.order());
                let mut codes = Vec::with_capacity(n + 1);
                for (b, block) in xs.chunks(bs).enumerate() {
                    let mut am = 0f32;
                    for &v in block {
                        am = if v.is_nan() || am.is_nan() {
                            f32::NAN
                        } else {
                            am.max(v.abs())
                        };
                    }
                    let last_partial = block.len() < bs;
                    let want_am = if last_partial {
                        clamp_min(am, 1e-38)
                    } else {
                        am
                    };
                    assert_eq!(
                        a[b].to_bits(),
                        want_am.to_bits(),
                        "{qt:?} bs {bs} block {b}"
                    );
                    for &v in block {
                        let y = if last_partial {
                            v / clamp_min(am, 1e-38)
                        } else {
                            v * (1.0 / clamp_min(am, 1e-38))
                        };
                        codes.push(order[bucket(&bounds, clamp1(y)) as usize]);
                    }
                }
                codes.push(order[bucket(&bounds, 0.0) as usize]);
                let want: Vec<u8> = codes.chunks_exact(2).map(|c| (c[0] << 4) | c[1]).collect();
                assert_eq!(p, want, "{qt:?} bs {bs}");
            }
        }
    }

    #[test]
    fn bad_blocksize_is_an_error() {
        let mut p = vec![0; 8];
        let mut a = vec![0.0; 1];
        let err = quantize_4bit(
            FloatDtype::F32,
            &[0; 64],
            48,
            QuantType::Nf4,
            &mut p,
            &mut a,
        );
        assert!(err.is_err());
    }
}
