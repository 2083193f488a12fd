//! The MinHash permutation kernels: `sig[k] = min(sig[k], perm_k(h))` for every
//! shingle hash `h` and permutation `k`.
//!
//! Performance notes: the loop is contiguous and branch-free, so it vectorises; it is
//! compiled three times (baseline, AVX2, AVX-512) and picked at run time, because the
//! default x86-64 target lacks the 32-bit vector multiply and unsigned min. The affine
//! kernel keeps a block of 16 permutations in registers while the shingles stream past.

pub const MERSENNE: u64 = (1 << 61) - 1;

/// MurmurHash3's 32-bit finalizer, as datasketch's `_fmix(hv, 32)`.
#[inline]
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Permutations per register block: 16 u32 lanes fill one AVX-512 register (two AVX2).
const BLOCK: usize = 16;

#[inline(always)]
fn affine32_generic(hs: &[u32], a: &[u32], b: &[u32], sig: &mut [u32]) {
    // Loop order: a block of permutations stays in registers while every shingle
    // streams past it, so the inner loop is one broadcast, multiply, add and min.
    let n = sig.len();
    let full = n / BLOCK * BLOCK;
    for k0 in (0..full).step_by(BLOCK) {
        let a_blk: [u32; BLOCK] = a[k0..k0 + BLOCK].try_into().expect("block");
        let b_blk: [u32; BLOCK] = b[k0..k0 + BLOCK].try_into().expect("block");
        let mut s: [u32; BLOCK] = sig[k0..k0 + BLOCK].try_into().expect("block");
        for &h in hs {
            for j in 0..BLOCK {
                s[j] = s[j].min(a_blk[j].wrapping_mul(h).wrapping_add(b_blk[j]));
            }
        }
        sig[k0..k0 + BLOCK].copy_from_slice(&s);
    }
    for &h in hs {
        for k in full..n {
            sig[k] = sig[k].min(a[k].wrapping_mul(h).wrapping_add(b[k]));
        }
    }
}

#[inline(always)]
fn legacy_generic(hs: &[u32], a: &[u64], b: &[u64], sig: &mut [u64]) {
    let n = sig.len();
    let (a, b) = (&a[..n], &b[..n]);
    for &h in hs {
        let h = h as u64;
        for k in 0..n {
            let x = a[k].wrapping_mul(h).wrapping_add(b[k]);
            // x mod (2**61 - 1) without division: 2**61 is 1 modulo the prime.
            let y = (x & MERSENNE) + (x >> 61);
            let y = if y >= MERSENNE { y - MERSENNE } else { y };
            sig[k] = sig[k].min(y & 0xffff_ffff);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn affine32_avx2(hs: &[u32], a: &[u32], b: &[u32], sig: &mut [u32]) {
    affine32_generic(hs, a, b, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn legacy_avx2(hs: &[u32], a: &[u64], b: &[u64], sig: &mut [u64]) {
    legacy_generic(hs, a, b, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn affine32_avx512(hs: &[u32], a: &[u32], b: &[u32], sig: &mut [u32]) {
    affine32_generic(hs, a, b, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn legacy_avx512(hs: &[u32], a: &[u64], b: &[u64], sig: &mut [u64]) {
    legacy_generic(hs, a, b, sig)
}

pub fn affine32(hs: &[u32], a: &[u32], b: &[u32], sig: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { affine32_avx512(hs, a, b, sig) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { affine32_avx2(hs, a, b, sig) };
    }
    affine32_generic(hs, a, b, sig)
}

pub fn legacy(hs: &[u32], a: &[u64], b: &[u64], sig: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the CPU supports AVX-512F/DQ (checked just above).
        return unsafe { legacy_avx512(hs, a, b, sig) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { legacy_avx2(hs, a, b, sig) };
    }
    legacy_generic(hs, a, b, sig)
}
