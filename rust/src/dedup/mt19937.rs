//! numpy's legacy `RandomState` (MT19937) and the `randint` draws datasketch makes.
//!
//! datasketch derives its permutation parameters from `np.random.RandomState(seed)`.
//! Rather than ask Python for them, the core replays numpy's generator exactly, so the
//! `datasketch` schemes work from plain Rust and the Python tests check the draws
//! against numpy itself. Only the code paths datasketch uses are reproduced: integer
//! seeding (`init_genrand`), 32-bit output, numpy's 64-bit composition (high word
//! first) and masked rejection sampling (`use_masked=True`, the legacy default).

const N: usize = 624;
const M: usize = 397;

pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (pos, slot) in key.iter_mut().enumerate() {
            *slot = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(pos as u32 + 1);
        }
        RandomState { key, pos: N }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        let mix = |hi: u32, lo: u32, far: u32| {
            let y = (hi & UPPER) | (lo & LOWER);
            far ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N - M {
            self.key[i] = mix(self.key[i], self.key[i + 1], self.key[i + M]);
        }
        for i in N - M..N - 1 {
            self.key[i] = mix(self.key[i], self.key[i + 1], self.key[i + M - N]);
        }
        self.key[N - 1] = mix(self.key[N - 1], self.key[0], self.key[M - 1]);
        self.pos = 0;
    }

    /// One tempered 32-bit output (`mt19937_next32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `mt19937_next64`: the first 32-bit draw is the high word.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// `randint(low, high, dtype=np.uint64)` (high exclusive), legacy masked path.
    pub fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        assert!(high > low, "empty randint range");
        let rng = high - 1 - low;
        if rng == 0 {
            return low;
        }
        let mask = gen_mask(rng);
        if rng <= 0xffff_ffff {
            if rng == 0xffff_ffff {
                return low + self.next_u32() as u64;
            }
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= rng {
                    return low + v;
                }
            }
        }
        if rng == u64::MAX {
            return low.wrapping_add(self.next_u64());
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= rng {
                return low + v;
            }
        }
    }

    /// `randint(low, high, dtype=np.uint32)` (high exclusive, at most 2**32).
    pub fn randint_u32(&mut self, low: u64, high: u64) -> u32 {
        assert!(high > low && high <= 1 << 32, "bad uint32 randint range");
        let rng = (high - 1 - low) as u32;
        if rng == 0 {
            return low as u32;
        }
        if rng == u32::MAX {
            return (low as u32).wrapping_add(self.next_u32());
        }
        let mask = gen_mask(rng as u64) as u32;
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return low as u32 + v;
            }
        }
    }
}

/// Smallest all-ones mask covering `max` (numpy's `gen_mask`).
fn gen_mask(max: u64) -> u64 {
    let mut m = max;
    m |= m >> 1;
    m |= m >> 2;
    m |= m >> 4;
    m |= m >> 8;
    m |= m >> 16;
    m |= m >> 32;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_mt19937() {
        // First outputs of the reference MT19937 for init_genrand(5489).
        let mut r = RandomState::new(5489);
        let first: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(first, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn numpy_seed_one() {
        // np.random.RandomState(1).randint(0, 2**32, 3, dtype=np.uint32)
        let mut r = RandomState::new(1);
        let got: Vec<u32> = (0..3).map(|_| r.randint_u32(0, 1 << 32)).collect();
        assert_eq!(got, vec![1_791_095_845, 4_282_876_139, 3_093_770_124]);
        // [RandomState(1).randint(1, 2**61 - 1, dtype=np.uint64) for _ in range(2)]
        let mut r = RandomState::new(1);
        let p = (1u64 << 61) - 1;
        assert_eq!(r.randint_u64(1, p), 775_169_054_918_279_404);
        assert_eq!(r.randint_u64(1, p), 1_758_426_461_858_698_313);
    }
}
