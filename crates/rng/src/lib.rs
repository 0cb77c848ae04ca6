//! `leasehold-rng`: a small deterministic random number generator
//! (SplitMix64) for the chaos suite, the load generator and the lazy
//! filesystem's torn cuts: their choices follow from a seed, so a run can be
//! repeated, and drawing a number costs nothing next to the request it
//! picks. Not for anything secret.
//!
//! Its own crate because its users depend on neither each other nor a
//! common crate that would fit it: the load generator must not link the
//! server, the lazy filesystem links nothing of ours, and the wire contract
//! (`leasehold-proto`) is no place for it.

use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0. Multiply-shift, so there is no
    /// modulo bias worth mentioning for `n` far below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform index in `0..n`; 0 when `n` is 0.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform duration in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_in_range_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = a.index(10);
            assert_eq!(x, b.index(10));
            seen[x] += 1;
            let d = a.millis(20, 30);
            b.millis(20, 30);
            assert!((20..=30).contains(&(d.as_millis() as u64)));
        }
        assert!(seen.iter().all(|c| *c > 800), "{seen:?}");
        assert_eq!(a.below(0), 0);
        let heads = (0..10_000).filter(|_| a.chance(0.25)).count();
        assert!((2_000..3_000).contains(&heads), "{heads}");
    }
}
