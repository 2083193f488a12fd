//! The block types, the parallel driver, and the 32-value formats Q8_0, Q4_0 and Q5_0,
//! bit for bit as `gguf.quants` (numpy) and ggml's `quantize_row_*_ref` compute them.
//!
//! These formats cut a row into blocks of 32 values and store one float16 scale per
//! block followed by the codes. Each step below mirrors one expression of the
//! reference, in float32, with no fused multiply-add: reordering or fusing a single
//! operation changes a code in a few blocks per million, which is exactly what a
//! byte-identity test exists to catch. The 256-value k-quants live in [`super::kquant`].

use half::f16;
use rayon::prelude::*;

use crate::error::{LadleError, Result};

use super::kquant::{q4_k_block, q6_k_block, QK_K};

/// Values per block of the 32-value formats.
pub const BLOCK: usize = 32;

/// The ggml block formats quantized here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    Q8_0,
    Q4_0,
    Q5_0,
    Q4K,
    Q6K,
}

const NAMES: [(&str, GgmlType); 5] = [
    ("q8_0", GgmlType::Q8_0),
    ("q4_0", GgmlType::Q4_0),
    ("q5_0", GgmlType::Q5_0),
    ("q4_k", GgmlType::Q4K),
    ("q6_k", GgmlType::Q6K),
];

impl std::str::FromStr for GgmlType {
    type Err = LadleError;
    fn from_str(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        NAMES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                crate::error::bad_choice("GGUF block type", &lower, &NAMES.map(|(n, _)| n))
            })
    }
}

impl GgmlType {
    /// Values one block holds.
    pub fn block_len(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q4_0 | Self::Q5_0 => BLOCK,
            Self::Q4K | Self::Q6K => QK_K,
        }
    }

    /// Bytes one block takes (ggml's `block_*` structs, which have no padding).
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 2 + BLOCK,
            Self::Q4_0 => 2 + BLOCK / 2,
            Self::Q5_0 => 2 + 4 + BLOCK / 2,
            Self::Q4K => 2 + 2 + 12 + QK_K / 2,
            Self::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    fn encode_block(self, x: &[f32], out: &mut [u8]) {
        match self {
            Self::Q8_0 => q8_0_block(x, out),
            Self::Q4_0 => q4_0_block(x, out),
            Self::Q5_0 => q5_0_block(x, out),
            Self::Q4K => q4_k_block(x, out),
            Self::Q6K => q6_k_block(x, out),
        }
    }
}

/// float32 -> float16 bits as ggml's `GGML_FP32_TO_FP16` computes them: round to
/// nearest even (what `half` does too), except that every NaN becomes the one quiet NaN
/// 0x7E00 with its sign, where `half` would keep the payload.
#[inline]
pub(crate) fn fp16(v: f32) -> [u8; 2] {
    if v.is_nan() {
        let sign = ((v.to_bits() >> 16) & 0x8000) as u16;
        return (sign | 0x7E00).to_le_bytes();
    }
    f16::from_f32(v).to_le_bytes()
}

/// numpy's float-to-int cast as x86 performs it: a non-finite value (a block whose
/// scale is subnormal has an infinite reciprocal, so its codes are inf or NaN) becomes
/// 0. Such a block holds values below 1e-37, so any code is harmless; 0 keeps the bytes
/// identical to the reference on x86 (ggml's C code leaves this case undefined).
#[inline]
fn x86_cast(v: f32) -> i32 {
    if v.is_finite() {
        v as i32
    } else {
        0
    }
}

/// The reciprocal the reference uses: 0 for a zero scale (an all-zero block).
#[inline]
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

fn q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d));
    if !id.is_finite() {
        // subnormal scale: every v * id is inf or NaN, which x86 casts to code 0
        out[2..].fill(0);
        return;
    }
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = (round_small(v * id) as i8) as u8;
    }
}

/// `np_roundf` of `gguf.quants` (round half away from zero, as C's `roundf`) for
/// |v| < 2^23, without its two `floor` calls (libm calls on baseline x86-64, which made
/// Q8_0 slower than numpy): truncate, and add one when the exact remainder is at least
/// a half. Same integer for every such v; the floor form is the tests' reference.
#[inline]
fn round_small(v: f32) -> i32 {
    let a = v.abs();
    let t = a as i32;
    let r = t + i32::from(a - t as f32 >= 0.5);
    if v < 0.0 {
        -r
    } else {
        r
    }
}

fn q4_0_block(x: &[f32], out: &mut [u8]) {
    // The value of largest magnitude keeps its sign; ties go to the first (argmax).
    let mut max = 0.0f32;
    let mut amax = -1.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d));
    // trunc, then the cast to uint8, then the clip to 15, in that order.
    let code = |v: f32| (x86_cast((v * id + 8.5).trunc()) as u8).min(15);
    let half = BLOCK / 2;
    for j in 0..half {
        out[2 + j] = code(x[j]) | (code(x[half + j]) << 4);
    }
}

/// ggml's `quantize_row_q5_0_ref` (gguf.quants' Q5_0 computes the same bytes): like Q4_0
/// with 32 levels, the fifth bit of each code gathered into a 32-bit mask.
fn q5_0_block(x: &[f32], out: &mut [u8]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&fp16(d));
    // C's `(int8_t)(x + 16.5f)`: truncate to int, keep the low byte. With a finite
    // reciprocal every |v * id| <= 16, so the cast is exact; an infinite one (subnormal
    // scale) makes every code inf or NaN, which x86 turns into 0 (see `x86_cast`).
    let mut codes = [0u8; BLOCK];
    if id.is_finite() {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (((v * id + 16.5) as i32) as i8).min(31) as u8;
        }
    }
    let half = BLOCK / 2;
    let mut qh = 0u32;
    for j in 0..half {
        let (lo, hi) = (codes[j], codes[half + j]);
        out[6 + j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
        qh |= u32::from((lo & 0x10) >> 4) << j;
        qh |= u32::from((hi & 0x10) >> 4) << (j + half);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Quantize `data` (a tensor flattened row-major; its last dimension must be a multiple
/// of the block length, 32 or 256, so blocks never straddle rows) into `ty`'s blocks, in
/// parallel over blocks.
///
/// Non-finite values are refused: the reference turns them into platform-dependent
/// codes, and a NaN weight is a broken checkpoint the user should hear about.
pub fn quantize(data: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    let len = ty.block_len();
    if data.len() % len != 0 {
        return Err(LadleError::Quant(format!(
            "{} values do not split into blocks of {len}",
            data.len()
        )));
    }
    let nb = ty.block_bytes();
    let mut out = vec![0u8; data.len() / len * nb];
    // 8192 values per task: big enough to amortise scheduling, small enough to balance.
    // Each task checks its values while they are in cache instead of a separate pass
    // over the whole tensor (that pass cost as much as Q5_0 itself).
    let per_task = 8192 / len;
    let finite = out
        .par_chunks_mut(nb * per_task)
        .zip(data.par_chunks(len * per_task))
        .try_for_each(|(o, x)| {
            if !x.iter().all(|v| v.is_finite()) {
                return Err(());
            }
            for (ob, xb) in o.chunks_exact_mut(nb).zip(x.chunks_exact(len)) {
                ty.encode_block(xb, ob);
            }
            Ok(())
        });
    if finite.is_err() {
        let i = data.iter().position(|v| !v.is_finite()).unwrap_or_default();
        return Err(LadleError::Quant(format!(
            "value {} at flat index {i} is not finite; the checkpoint is damaged",
            data[i]
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `np_roundf` of `gguf.quants`: round half away from zero, as C's `roundf`, written
    /// with floors so that numpy and this code take the same float32 steps.
    fn roundf(n: f32) -> f32 {
        let a = n.abs();
        let floored = a.floor();
        let b = floored + (2.0 * (a - floored)).floor();
        if n < 0.0 {
            -b
        } else if n > 0.0 {
            b
        } else {
            0.0 // numpy's sign(0) is 0, so -0.0 and 0.0 both give a zero code
        }
    }

    fn scale(block: &[u8]) -> f32 {
        f16::from_le_bytes([block[0], block[1]]).to_f32()
    }

    #[test]
    fn zeros_give_zero_scale_and_middle_codes() {
        let q8 = quantize(&[0.0; 32], GgmlType::Q8_0).unwrap();
        assert_eq!(q8, vec![0u8; 34]);
        let q4 = quantize(&[0.0; 32], GgmlType::Q4_0).unwrap();
        // 0 / -8 is -0.0 (so is numpy's); trunc(0 * 0 + 8.5) = 8 in both nibbles
        assert_eq!(&q4[..2], &[0x00, 0x80]);
        assert!(q4[2..].iter().all(|&b| b == 0x88));
    }

    #[test]
    fn q8_0_extremes_hit_plus_minus_127() {
        let mut x = [0.5f32; 32];
        x[3] = -2.0;
        x[7] = 2.0;
        let q = quantize(&x, GgmlType::Q8_0).unwrap();
        assert_eq!(q[2 + 3] as i8, -127);
        assert_eq!(q[2 + 7] as i8, 127);
        assert!((scale(&q) - 2.0 / 127.0).abs() < 1e-4);
    }

    #[test]
    fn q4_0_ties_keep_the_first_maximum_and_its_sign() {
        let mut x = [0.0f32; 32];
        x[2] = -4.0;
        x[5] = 4.0; // same magnitude, later: the scale keeps the sign of x[2]
        let q = quantize(&x, GgmlType::Q4_0).unwrap();
        assert_eq!(scale(&q), 0.5); // -4 / -8
        assert_eq!(q[2 + 2] & 0x0f, 0); // -4 * 2 + 8.5 -> 0
        assert_eq!(q[2 + 5] & 0x0f, 15); // 4 * 2 + 8.5 = 16.5 -> 16 -> clipped to 15
    }

    #[test]
    fn subnormal_scales_give_zero_codes_like_numpy_on_x86() {
        let mut x = [3.864_264e-39f32; 32];
        x[0] = -f32::from_bits(1); // the smallest subnormal
        let q4 = quantize(&x, GgmlType::Q4_0).unwrap();
        assert!(q4[2..].iter().all(|&b| b == 0));
        let q8 = quantize(&x, GgmlType::Q8_0).unwrap();
        assert!(q8[2..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_small_equals_roundf() {
        for v in [
            0.0f32, -0.0, 0.5, -0.5, 0.49999997, 1.5, -2.5, 126.5, 127.49, -127.5,
        ] {
            assert_eq!(round_small(v), roundf(v) as i32, "{v}");
        }
    }

    #[test]
    fn roundf_rounds_half_away_from_zero() {
        for (v, r) in [
            (0.5, 1.0),
            (-0.5, -1.0),
            (1.49, 1.0),
            (2.5, 3.0),
            (-2.5, -3.0),
        ] {
            assert_eq!(roundf(v), r);
        }
    }

    #[test]
    fn bad_lengths_and_non_finite_values_are_errors() {
        assert!(matches!(
            quantize(&[1.0; 31], GgmlType::Q8_0),
            Err(LadleError::Quant(_))
        ));
        let mut x = [1.0f32; 64];
        x[40] = f32::NAN;
        let err = quantize(&x, GgmlType::Q4_0).unwrap_err().to_string();
        assert!(err.contains("index 40"), "{err}");
        assert!("q5_1".parse::<GgmlType>().is_err());
    }

    proptest! {
        /// Dequantizing gives back every value within half a step of its block's scale.
        #[test]
        fn q8_0_round_trip_is_within_half_a_step(
            x in proptest::collection::vec(-1.0e4f32..1.0e4, 32..=32)
        ) {
            let q = quantize(&x, GgmlType::Q8_0).unwrap();
            let d = scale(&q);
            for (i, v) in x.iter().enumerate() {
                let back = q[2 + i] as i8 as f32 * d;
                // half a step plus the float16 rounding of the scale (127 steps of it)
                prop_assert!((back - v).abs() <= 0.5 * d + 127.0 * d * 1e-3 + 1e-6);
            }
        }

        #[test]
        fn block_count_and_parallel_split_match_one_block_at_a_time(
            x in proptest::collection::vec(-3.0f32..3.0, (256 * 40)..=(256 * 40))
        ) {
            for ty in NAMES.map(|(_, t)| t) {
                let whole = quantize(&x, ty).unwrap();
                let (len, nb) = (ty.block_len(), ty.block_bytes());
                prop_assert_eq!(whole.len(), x.len() / len * nb);
                for (b, xb) in x.chunks(len).enumerate() {
                    prop_assert_eq!(&whole[b * nb..(b + 1) * nb], &quantize(xb, ty).unwrap()[..]);
                }
            }
        }
    }
}
