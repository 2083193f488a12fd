//! Q4_K and Q6_K, bit for bit as llama.cpp's `quantize_row_q4_K_ref` and
//! `quantize_row_q6_K_ref` (ggml/src/ggml-quants.c) compute them.
//!
//! A k-quant super-block holds 256 values cut into sub-blocks (8 of 32 for Q4_K, 16 of
//! 16 for Q6_K). Each sub-block gets its own scale (and Q4_K a minimum) found by a small
//! search for the least weighted error, and the sub-block scales are themselves
//! quantized against one float16 super-scale. `llama-quantize` without an importance
//! matrix calls exactly these `_ref` rows, so matching them gives llama.cpp's bytes.
//!
//! The port keeps the C code's float32 operations in their order, without fused
//! multiply-adds (x86 builds of ggml-base have none), and its integer casts: `as u8` /
//! `as i8` truncate modulo 256 as C's conversions of an in-range `int` do.

use half::f16;

use super::quant::fp16;

/// Values per super-block.
pub const QK_K: usize = 256;

/// ggml's `GROUP_MAX_EPS`: below this largest magnitude a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even by adding 1.5 * 2^23 and reading the low
/// mantissa bits. (The C asserts |v| <= 4194303 only in debug builds; release builds,
/// which `llama-quantize` is, return these same wrapped bits beyond it.)
#[inline]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

#[inline]
fn from_fp16(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// ggml's `make_qkx2_quants`: codes `l` in 0..=nmax, scale and minimum (returned as
/// (scale, -min)) for one sub-block, trying `nstep + 1` candidate scales around
/// nmax / (max - min) and keeping the least weighted squared (or absolute) error.
#[allow(clippy::too_many_arguments)] // the C signature, kept for a line-by-line check
#[inline]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (l_out, laux, weights) = (&mut l_out[..n], &mut laux[..n], &weights[..n]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &w) in x.iter().zip(weights).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut best_error = 0.0f32;
    for ((&xi, &w), lo) in x.iter().zip(weights).zip(l_out.iter_mut()) {
        let l = nearest_int(iscale * (xi - min)).clamp(0, nmax);
        *lo = l as u8;
        let diff = scale * l as f32 + min - xi;
        best_error += w * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&xi, &w), la) in x.iter().zip(weights).zip(laux.iter_mut()) {
            let l = nearest_int(iscale * (xi - min)).clamp(0, nmax);
            *la = l as u8;
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * xi;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&xi, &w), &la) in x.iter().zip(weights).zip(laux.iter()) {
                let diff = this_scale * la as f32 + this_min - xi;
                cur_error += w * err(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights (the only call
/// Q6_K makes): symmetric codes `l + nmax` in 0..2*nmax, weights x², 19 candidate
/// scales around -nmax / max.
#[inline]
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..x.len()].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nmaxf / max;
    for (o, &v) in l_out.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// One Q4_K super-block: f16 d, f16 dmin, 12 bytes of 6-bit scales and minimums, then
/// 128 bytes of 4-bit codes (`block_q4_K`).
pub(crate) fn q4_k_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let l_j = &mut l[32 * j..32 * j + 32];
        (scales[j], mins[j]) =
            make_qkx2_quants(15, xs, &weights, l_j, &mut laux, -1.0, 0.1, 20, false);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut [0u8; 12];
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d16 = fp16(max_scale / 63.0);
    let dmin16 = fp16(max_min / 63.0);
    for j in 0..QK_K / 32 {
        // get_scale_min_k4
        let (s, m) = if j < 4 {
            (sc[j] & 63, sc[j + 4] & 63)
        } else {
            (
                (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4),
                (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
            )
        };
        let d = from_fp16(d16) * s as f32;
        if d == 0.0 {
            continue; // the codes make_qkx2_quants chose stay
        }
        let dm = from_fp16(dmin16) * m as f32;
        for (lo, &v) in l[32 * j..32 * j + 32]
            .iter_mut()
            .zip(&x[32 * j..32 * j + 32])
        {
            *lo = nearest_int((v + dm) / d).clamp(0, 15) as u8;
        }
    }
    out[0..2].copy_from_slice(&d16);
    out[2..4].copy_from_slice(&dmin16);
    out[4..16].copy_from_slice(sc);
    let qs = &mut out[16..16 + QK_K / 2];
    for (c, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            qs[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// One Q6_K super-block: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8
/// sub-block scales, then the f16 super-scale (`block_q6_K`).
pub(crate) fn q6_k_block(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    let (ql_end, qh_end, sc_end) = (QK_K / 2, QK_K / 2 + QK_K / 4, QK_K / 2 + QK_K / 4 + 16);
    if max_abs_scale < GROUP_MAX_EPS {
        out.fill(0); // memset, and fp16(0.0) is 0 too
        return;
    }
    let iscale = -128.0 / max_scale;
    let d16 = fp16(1.0 / iscale);
    let mut sc = [0i8; QK_K / 16];
    for (s, &v) in sc.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = from_fp16(d16) * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for (lo, &v) in l[16 * j..16 * j + 16]
            .iter_mut()
            .zip(&x[16 * j..16 * j + 16])
        {
            *lo = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let lu = l.map(|v| v as u8);
    let (ql, rest) = out.split_at_mut(ql_end);
    let (qh, rest) = rest.split_at_mut(qh_end - ql_end);
    for (c, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (&mut ql[64 * c..64 * c + 64], &mut qh[32 * c..32 * c + 32]);
        for i in 0..32 {
            let (a, b, e, f) = (lu[j + i], lu[j + i + 32], lu[j + i + 64], lu[j + i + 96]);
            ql[i] = (a & 0xf) | ((e & 0xf) << 4);
            ql[i + 32] = (b & 0xf) | ((f & 0xf) << 4);
            qh[i] = (a >> 4) | ((b >> 4) << 2) | ((e >> 4) << 4) | ((f >> 4) << 6);
        }
    }
    for (o, &s) in rest[..sc_end - qh_end].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    rest[sc_end - qh_end..].copy_from_slice(&d16);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{quantize, GgmlType};

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, r) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ] {
            assert_eq!(nearest_int(v), r, "{v}");
        }
    }

    #[test]
    fn zero_blocks_are_all_zero_bytes() {
        for ty in [GgmlType::Q4K, GgmlType::Q6K] {
            let q = quantize(&[0.0; QK_K], ty).unwrap();
            assert_eq!(q.len(), ty.block_bytes());
            assert!(q.iter().all(|&b| b == 0), "{ty:?}");
        }
    }

    /// Dequantize with ggml's `dequantize_row_q4_K` / `_q6_K` layout and check the
    /// values come back within a fraction of the value range: this catches a packing
    /// mistake the byte-identity tests (run in Python against llama.cpp) would only
    /// report as "different".
    fn dequant_q4_k(b: &[u8]) -> Vec<f32> {
        let (d, dmin) = (from_fp16([b[0], b[1]]), from_fp16([b[2], b[3]]));
        let sc = &b[4..16];
        let qs = &b[16..];
        let mut y = vec![0.0; QK_K];
        for j in 0..8 {
            let (s, m) = if j < 4 {
                (sc[j] & 63, sc[j + 4] & 63)
            } else {
                (
                    (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4),
                    (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
                )
            };
            for i in 0..32 {
                let byte = qs[32 * (j / 2) + i];
                let q = if j % 2 == 0 { byte & 0xf } else { byte >> 4 };
                y[32 * j + i] = d * s as f32 * q as f32 - dmin * m as f32;
            }
        }
        y
    }

    fn dequant_q6_k(b: &[u8]) -> Vec<f32> {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let d = from_fp16([b[208], b[209]]);
        let mut y = vec![0.0; QK_K];
        for n in 0..2 {
            for l in 0..32 {
                let (lo, hi) = (&ql[64 * n..], &qh[32 * n..]);
                let q = [
                    (lo[l] & 0xf) | (hi[l] & 3) << 4,
                    (lo[l + 32] & 0xf) | ((hi[l] >> 2) & 3) << 4,
                    (lo[l] >> 4) | ((hi[l] >> 4) & 3) << 4,
                    (lo[l + 32] >> 4) | ((hi[l] >> 6) & 3) << 4,
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let s = sc[8 * n + l / 16 + 2 * k] as i8;
                    y[128 * n + 32 * k + l] = d * s as f32 * (qk as i32 - 32) as f32;
                }
            }
        }
        y
    }

    #[test]
    fn round_trips_stay_close() {
        let x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / 32) as f32))
            .collect();
        let q4 = quantize(&x, GgmlType::Q4K).unwrap();
        let q6 = quantize(&x, GgmlType::Q6K).unwrap();
        for (i, (a, b)) in x.iter().zip(dequant_q4_k(&q4)).enumerate() {
            let range = 2.0 * (1.0 + (i / 32) as f32);
            assert!((a - b).abs() <= range / 15.0, "q4_k {i}: {a} vs {b}");
        }
        for (i, (a, b)) in x.iter().zip(dequant_q6_k(&q6)).enumerate() {
            let range = 2.0 * (1.0 + (i / 32) as f32);
            assert!((a - b).abs() <= range / 40.0, "q6_k {i}: {a} vs {b}");
        }
    }
}
