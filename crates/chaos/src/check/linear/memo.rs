//! The memo of visited configurations: 128-bit fingerprints of their keys,
//! the fast hasher of the memo's table, and [`Search::visit`], which also
//! applies pruning rule 4 (fewer optional ops dominate). Separate from the
//! search because its correctness argument (no false "already visited") is
//! its own.

use super::model::State;
use super::search::Search;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A 128-bit fingerprint of a configuration without its linearized
/// optional ops (see [`Search::visit`]): two independent 64-bit SipHashes
/// of the exact key. Storing whole keys would cost several times the memory
/// per entry, and the memo holds up to one entry per step of a budget of
/// millions. A false "already visited" needs two keys to collide on all 128
/// bits: with 10^8 entries the chance is below 10^-22.
struct Fingerprinter {
    a: DefaultHasher,
    b: DefaultHasher,
}

impl Fingerprinter {
    fn new() -> Self {
        let a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        // Domain separation: the second hash is of a different message.
        b.write_u64(0x243f_6a88_85a3_08d3);
        Fingerprinter { a, b }
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.a.finish()) << 64) | u128::from(self.b.finish())
    }
}

impl Hasher for Fingerprinter {
    fn write(&mut self, bytes: &[u8]) {
        self.a.write(bytes);
        self.b.write(bytes);
    }
    fn finish(&self) -> u64 {
        self.a.finish()
    }
}

/// Whether every op in bitset `a` is in bitset `b`.
fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// FxHash-style hasher: the memo hashes short keys of small integers
/// millions of times, and it needs no DoS resistance.
#[derive(Default)]
pub(super) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Search<'_> {
    /// Records the current configuration as visited; false if it, or a
    /// configuration that dominates it, was visited before.
    ///
    /// Dominance (pruning rule 4): the same configuration with fewer
    /// optional ops linearized can do everything this one can (the unused
    /// optional ops stay available, and unknown writes never have to take
    /// effect), so if that one was visited, this one need not be. Each key
    /// keeps only its minimal sets.
    pub(super) fn visit(&mut self, before_optional: Option<State>) -> bool {
        let mut h = Fingerprinter::new();
        // `before_optional` is part of the key: what may follow an optional
        // op depends on the state before it (pruning rule 2).
        (self.frontier, self.state, before_optional).hash(&mut h);
        self.above.len().hash(&mut h);
        for &i in &self.above {
            (i - self.frontier).hash(&mut h);
        }
        let fingerprint = h.finish128();
        let current = &self.opt_bits;
        let width = current.len();
        let Some(seen) = self.memo.get_mut(&fingerprint) else {
            self.memo.insert(fingerprint, current.as_slice().into());
            return true;
        };
        if width == 0 || seen.chunks_exact(width).any(|s| subset(s, current)) {
            return false;
        }
        let kept: Vec<u64> = seen
            .chunks_exact(width)
            .filter(|s| !subset(current, s))
            .flatten()
            .chain(current)
            .copied()
            .collect();
        *seen = kept.into_boxed_slice();
        true
    }
}
