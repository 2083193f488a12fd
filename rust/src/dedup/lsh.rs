//! LSH banding: choosing (bands, rows) for a threshold, and band keys.
//!
//! The parameters are chosen exactly as datasketch's `_optimal_param`: over every
//! `b` in 1..=num_perm and `r` in 1..=num_perm/b, minimise
//! `fp_weight * FP(b, r) + fn_weight * FN(b, r)`, where FP is the area under the
//! candidate probability `1-(1-s^r)^b` below the threshold and FN the area above it
//! under its complement; the first minimum in that loop order wins. datasketch uses
//! scipy's adaptive quadrature; the integrands are polynomials of degree at most
//! num_perm, so composite Gauss-Legendre gives the same areas to ~1e-15, far below
//! the gaps between candidates.

use crate::error::{LadleError, Result};

/// 16-point Gauss-Legendre nodes and weights on [-1, 1], computed by Newton's method.
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0f64, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
            let dx = p1 / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        out.push((x, 2.0 / ((1.0 - x * x) * dp * dp)));
    }
    out
}

fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64, rule: &[(f64, f64)]) -> f64 {
    const PIECES: usize = 16;
    let h = (hi - lo) / PIECES as f64;
    let mut total = 0.0;
    for piece in 0..PIECES {
        let (a, b) = (lo + piece as f64 * h, lo + (piece + 1) as f64 * h);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        total += half
            * rule
                .iter()
                .map(|&(x, w)| w * f(mid + half * x))
                .sum::<f64>();
    }
    total
}

/// `(bands, rows)` minimising the weighted false-positive and false-negative areas.
pub fn optimal_params(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> Result<(usize, usize)> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(LadleError::Value(format!(
            "threshold must be in (0, 1), got {threshold}"
        )));
    }
    if !(2..=super::minhash::MAX_NUM_PERM).contains(&num_perm) {
        return Err(LadleError::Value(format!(
            "num_perm must be in 2..={} for LSH, got {num_perm}",
            super::minhash::MAX_NUM_PERM
        )));
    }
    let weight_ok = |w: f64| w.is_finite() && w >= 0.0;
    if !(weight_ok(fp_weight) && weight_ok(fn_weight) && fp_weight + fn_weight > 0.0) {
        return Err(LadleError::Value(format!(
            "LSH weights must be finite, non-negative and not both 0, got ({fp_weight}, {fn_weight})"
        )));
    }
    let rule = gauss_legendre(16);
    let mut best = (f64::INFINITY, (0, 0));
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let (bi, ri) = (b as i32, r as i32);
            let fp = integrate(|s| 1.0 - (1.0 - s.powi(ri)).powi(bi), 0.0, threshold, &rule);
            let fnn = integrate(|s| (1.0 - s.powi(ri)).powi(bi), threshold, 1.0, &rule);
            let err = fp * fp_weight + fnn * fn_weight;
            if err < best.0 {
                best = (err, (b, r));
            }
        }
    }
    Ok(best.1)
}

/// Probability that a pair of true Jaccard `s` becomes a candidate.
pub fn candidate_probability(s: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32)
}

/// One 64-bit key per band of a signature, written to `out` (`bands` long).
pub fn band_keys<T: Copy + Into<u64>>(sig: &[T], bands: usize, rows: usize, out: &mut [u64]) {
    for (band, slot) in out.iter_mut().enumerate().take(bands) {
        let mut h = 0x243f_6a88_85a3_08d3u64 ^ band as u64;
        for &v in &sig[band * rows..(band + 1) * rows] {
            h = (h ^ v.into()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        }
        *slot = h ^ (h >> 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasketch_examples() {
        // From datasketch 2.0's _optimal_param(t, 128, 0.5, 0.5).
        assert_eq!(optimal_params(0.8, 128, 0.5, 0.5).unwrap(), (9, 13));
        assert_eq!(optimal_params(0.9, 128, 0.5, 0.5).unwrap(), (5, 25));
        assert_eq!(optimal_params(0.7, 128, 0.5, 0.5).unwrap(), (14, 9));
    }

    #[test]
    fn gauss_legendre_integrates_polynomials() {
        let rule = gauss_legendre(16);
        let v = integrate(|x| x.powi(40), 0.0, 1.0, &rule);
        assert!((v - 1.0 / 41.0).abs() < 1e-15);
    }

    #[test]
    fn bad_threshold() {
        assert!(optimal_params(1.0, 128, 0.5, 0.5).is_err());
        assert!(optimal_params(0.0, 128, 0.5, 0.5).is_err());
    }

    #[test]
    fn keys_differ_by_band_content() {
        let sig: Vec<u32> = (0..8).collect();
        let mut k = [0u64; 2];
        band_keys(&sig, 2, 4, &mut k);
        let mut sig2 = sig.clone();
        sig2[5] = 99;
        let mut k2 = [0u64; 2];
        band_keys(&sig2, 2, 4, &mut k2);
        assert_eq!(k[0], k2[0]);
        assert_ne!(k[1], k2[1]);
    }
}
