//! Fencing: what a resource protected by a lease does with fencing tokens,
//! and how long a holder may use its token.
//!
//! A lease alone cannot guarantee mutual exclusion: a holder that pauses (GC,
//! SIGSTOP, a slow disk) past its lease wakes up believing it still holds it,
//! while a new holder is already writing. Leasehold gives every tenure a
//! fencing token that is strictly greater for every later holder. The
//! protected resource remembers the highest token it has seen and refuses
//! anything lower, so the paused holder's late writes are rejected instead of
//! interleaving with the new holder's. [`Fence`] is that check.
//!
//! [`validity_deadline`] is the holder's side: the instant until which it may
//! treat the lease as its own (ARCHITECTURE.md, "The timing guarantee").

use leasehold_proto::CLOCK_RATE_BOUND_PPM;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The instant until which a holder may act on a lease of duration `d`
/// whose last successful acquire or renew was *sent* at `sent`:
/// `sent + d·(1 − ρ)`, ρ = 1 %.
///
/// Measured on the caller's monotonic clock from the send time, not the
/// reply time: the server may have stamped the renewal any time after the
/// request left, and no other holder is granted the lease before
/// `sent + d` (real time) unless the holder released it. The `1 − ρ` factor
/// absorbs the caller's clock running up to 1 % fast.
pub fn validity_deadline(sent: Instant, d: Duration) -> Instant {
    let ppm = u128::try_from(CLOCK_RATE_BOUND_PPM)
        .unwrap_or(0)
        .min(1_000_000);
    let nanos = d.as_nanos() * (1_000_000 - ppm) / 1_000_000;
    sent + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A write carried a fencing token lower than one the resource has already
/// accepted: it comes from a former holder and must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stale fencing token {token}: the resource has accepted token {highest} from a later holder"
)]
pub struct Stale {
    /// The token that was refused.
    pub token: u64,
    /// The highest token accepted so far.
    pub highest: u64,
}

/// The highest fencing token a protected resource has accepted.
///
/// Thread-safe; share it with an `Arc`. A resource calls [`Fence::check`]
/// with the token that came with each write and refuses the write on
/// `Err(Stale)`. Equal tokens pass: a holder writes many times within one
/// tenure. Token 0 never passes: it is what a lease without a holder
/// carries, so it never authorises anything.
///
/// If the check and the write can interleave with another writer's, use
/// [`Fence::enter`], which keeps the fence locked until the write is done:
/// otherwise an old holder could pass the check, a new holder could check
/// and write, and the old holder's write would then land on top.
#[derive(Debug, Default)]
pub struct Fence {
    highest: Mutex<u64>,
}

/// Proof that a token passed the fence; while it lives no other token can
/// be checked. Drop it when the protected write is complete.
#[derive(Debug)]
pub struct FenceGuard<'a> {
    token: u64,
    _lock: MutexGuard<'a, u64>,
}

impl FenceGuard<'_> {
    /// The token that was admitted.
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl Fence {
    /// A fence that has seen no token yet.
    pub fn new() -> Self {
        Fence::default()
    }

    /// A fence that starts from `highest` (e.g. persisted with the resource,
    /// so that a restart does not forget which holders are stale).
    pub fn starting_at(highest: u64) -> Self {
        Fence {
            highest: Mutex::new(highest),
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // The guarded value is a plain integer that is always valid, so a
        // panic elsewhere while it was locked does not invalidate it.
        self.highest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `token` if it is at least the highest seen (and not 0), and
    /// records it as the highest.
    pub fn check(&self, token: u64) -> Result<(), Stale> {
        self.enter(token).map(drop)
    }

    /// Like [`Fence::check`], but keeps the fence locked until the returned
    /// guard is dropped, so the caller's write cannot be overtaken by a
    /// newer holder's check-and-write.
    pub fn enter(&self, token: u64) -> Result<FenceGuard<'_>, Stale> {
        let mut highest = self.lock();
        if token == 0 || token < *highest {
            return Err(Stale {
                token,
                highest: *highest,
            });
        }
        *highest = token;
        Ok(FenceGuard {
            token,
            _lock: highest,
        })
    }

    /// The highest token admitted so far (0 if none).
    pub fn highest(&self) -> u64 {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lower_tokens_are_rejected_equal_and_higher_admitted() {
        let f = Fence::new();
        assert_eq!(f.highest(), 0);
        assert_eq!(f.check(5), Ok(()));
        assert_eq!(f.check(5), Ok(()), "same tenure writes again");
        assert_eq!(f.check(9), Ok(()));
        assert_eq!(f.highest(), 9);
        assert_eq!(
            f.check(5),
            Err(Stale {
                token: 5,
                highest: 9
            })
        );
        // A rejected token does not lower the mark.
        assert_eq!(f.highest(), 9);
    }

    #[test]
    fn token_zero_never_passes() {
        let f = Fence::new();
        assert_eq!(
            f.check(0),
            Err(Stale {
                token: 0,
                highest: 0
            })
        );
        let f = Fence::starting_at(7);
        assert!(f.check(6).is_err());
        assert!(f.check(7).is_ok());
    }

    #[test]
    fn stale_message_names_both_tokens() {
        let e = Stale {
            token: 3,
            highest: 8,
        };
        let m = e.to_string();
        assert!(m.contains('3') && m.contains('8'), "{m}");
    }

    #[test]
    fn guard_serialises_check_and_write() {
        let f = Arc::new(Fence::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let g = f.enter(4).expect("first holder admitted");
        // A newer holder on another thread must wait for the older write.
        let (f2, log2) = (f.clone(), log.clone());
        let t = std::thread::spawn(move || {
            let g = f2.enter(10).expect("newer holder admitted");
            log2.lock().unwrap().push(g.token());
        });
        std::thread::sleep(Duration::from_millis(50));
        log.lock().unwrap().push(g.token());
        drop(g);
        t.join().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![4, 10]);
        assert!(f.check(4).is_err());
    }

    #[test]
    fn concurrent_checks_keep_the_maximum() {
        let f = Arc::new(Fence::new());
        let threads: Vec<_> = (1..=8u64)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for t in 0..1000u64 {
                        let _ = f.check(t * 8 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(f.highest(), 999 * 8 + 8);
    }

    #[test]
    fn validity_is_one_percent_short_of_the_duration() {
        let s = Instant::now();
        assert_eq!(
            validity_deadline(s, Duration::from_secs(15)) - s,
            Duration::from_millis(14_850)
        );
        assert_eq!(
            validity_deadline(s, Duration::from_secs(3)) - s,
            Duration::from_millis(2_970)
        );
    }
}
