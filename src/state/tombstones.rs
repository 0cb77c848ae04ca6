//! Tombstones: leases deleted while their tenure could still be live.
//!
//! A Delete of a held lease succeeds (as `kubectl delete lease` does
//! against Kubernetes), but the lease must not be created again, for
//! anyone, before the deleted tenure could have lapsed (`lease::apply`,
//! "Tombstones"). This keeps the deleted lease, as it was, until then.
//!
//! Tombstones are replicated state: every replica adds and drops them at
//! the same log positions, from the entry's stamped time alone, and
//! snapshots carry them. A tombstone is dropped at the first entry whose
//! time is at or past its [`grantable_at`], checked against the epoch of
//! that entry (a leader change extends every tenure to a full duration of
//! the new epoch, tombstones too). Until then it is found by key; after,
//! it would answer nothing a missing lease does not, so dropping it
//! changes no answer. The `due` index orders tombstones by the time they
//! were last found not yet due, so dropping costs a bounded amount of work
//! per entry rather than a scan.

use crate::lease::apply::grantable_at;
use crate::lease::{Lease, LeaseKey, Timestamp};
use imbl::{OrdMap, OrdSet};
use std::sync::Arc;

/// Tombstones examined at most per applied entry. Each entry adds at most
/// one tombstone per op, and an entry examines this many: the set cannot
/// run ahead of the entries that drain it.
pub const EXAMINED_PER_ENTRY: usize = 64;

/// The tombstones, by key and by when to look at them again.
#[derive(Debug, Clone, Default)]
pub struct Tombstones {
    by_key: OrdMap<Arc<LeaseKey>, (Arc<Lease>, Timestamp)>,
    due: OrdSet<(Timestamp, Arc<LeaseKey>)>,
}

impl Tombstones {
    /// The tombstone of `key`, if one is kept.
    pub fn get(&self, key: &LeaseKey) -> Option<&Arc<Lease>> {
        self.by_key.get(key).map(|(lease, _)| lease)
    }

    /// Keeps `lease`, deleted at a time in the epoch that started at
    /// `epoch_start`. A lease without a holder leaves no tombstone.
    pub fn insert(&mut self, key: Arc<LeaseKey>, lease: Arc<Lease>, epoch_start: Timestamp) {
        self.remove(&key);
        let Some(at) = grantable_at(&lease, epoch_start) else {
            return;
        };
        self.due.insert((at, key.clone()));
        self.by_key.insert(key, (lease, at));
    }

    /// Forgets the tombstone of `key` (the lease was created again).
    pub fn remove(&mut self, key: &LeaseKey) {
        if let Some((k, (_, at))) = self.by_key.remove_with_key(key) {
            self.due.remove(&(at, k));
        }
    }

    /// Drops the tombstones that lapsed at `now` in the epoch that started
    /// at `epoch_start`, looking at no more than `max` of them. One found
    /// not yet due (its epoch moved on) is looked at again when it is.
    pub fn expire(&mut self, now: Timestamp, epoch_start: Timestamp, max: usize) {
        for _ in 0..max {
            let Some((at, key)) = self.due.get_min().cloned() else {
                return;
            };
            if at > now {
                return;
            }
            self.due.remove(&(at, key.clone()));
            let Some((lease, _)) = self.by_key.get(&key).cloned() else {
                continue;
            };
            match grantable_at(&lease, epoch_start) {
                Some(later) if later > now => {
                    self.due.insert((later, key.clone()));
                    self.by_key.insert(key, (lease, later));
                }
                _ => {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The deleted leases, in key order (what a snapshot stores).
    pub fn leases(&self) -> impl ExactSizeIterator<Item = &Arc<Lease>> + '_ {
        self.by_key.values().map(|(lease, _)| lease)
    }

    /// Tombstones rebuilt from a snapshot's leases, in the epoch that
    /// started at `epoch_start`.
    pub fn from_leases(
        leases: impl IntoIterator<Item = Arc<Lease>>,
        epoch_start: Timestamp,
    ) -> Self {
        let mut t = Tombstones::default();
        for lease in leases {
            t.insert(Arc::new(lease.key.clone()), lease, epoch_start);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseSpec;

    const SEC: i64 = 1_000_000;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_micros(1_700_000_000 * SEC + s * SEC)
    }

    fn held(name: &str, renewed: i64, duration: i32) -> Arc<Lease> {
        Arc::new(Lease {
            key: LeaseKey::new("ns", name),
            uid: format!("uid-{name}"),
            resource_version: 1,
            creation_timestamp: t(0),
            labels: Default::default(),
            annotations: Default::default(),
            spec: LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(t(renewed)),
                renew_time: Some(t(renewed)),
                ..LeaseSpec::default()
            },
            fencing_token: 1,
            expired: false,
        })
    }

    fn key(name: &str) -> Arc<LeaseKey> {
        Arc::new(LeaseKey::new("ns", name))
    }

    #[test]
    fn a_tombstone_is_kept_until_its_tenure_could_have_lapsed() {
        let mut ts = Tombstones::default();
        // 10 s from 0: grantable at 10.1 s (ρ = 1 %).
        ts.insert(key("x"), held("x", 0, 10), t(0));
        ts.expire(t(10), t(0), EXAMINED_PER_ENTRY);
        assert!(ts.get(&key("x")).is_some(), "kept at 10 s");
        ts.expire(t(11), t(0), EXAMINED_PER_ENTRY);
        assert!(ts.get(&key("x")).is_none(), "dropped at 11 s");
        assert!(ts.is_empty());
    }

    #[test]
    fn a_new_epoch_extends_a_tombstone_as_it_extends_a_tenure() {
        let mut ts = Tombstones::default();
        ts.insert(key("x"), held("x", 0, 10), t(0));
        // A leader change at 5 s: the tenure runs to 15 s, grantable 15.1.
        ts.expire(t(11), t(5), EXAMINED_PER_ENTRY);
        assert!(ts.get(&key("x")).is_some(), "extended by the new epoch");
        ts.expire(t(15), t(5), EXAMINED_PER_ENTRY);
        assert!(ts.get(&key("x")).is_some());
        ts.expire(t(16), t(5), EXAMINED_PER_ENTRY);
        assert!(ts.is_empty());
    }

    #[test]
    fn expiry_examines_a_bounded_number_and_keeps_order() {
        let mut ts = Tombstones::default();
        for i in 0..10 {
            ts.insert(key(&format!("l{i}")), held(&format!("l{i}"), i, 1), t(0));
        }
        ts.expire(t(100), t(0), 3);
        assert_eq!(ts.len(), 7, "three examined, three dropped");
        assert!(ts.get(&key("l0")).is_none() && ts.get(&key("l3")).is_some());
        ts.expire(t(100), t(0), 100);
        assert!(ts.is_empty());
    }

    #[test]
    fn removing_and_replacing_keep_the_index_consistent() {
        let mut ts = Tombstones::default();
        ts.insert(key("x"), held("x", 0, 10), t(0));
        ts.insert(key("x"), held("x", 5, 10), t(0));
        assert_eq!(ts.len(), 1);
        assert_eq!(ts.due.len(), 1);
        ts.remove(&key("x"));
        assert!(ts.is_empty() && ts.due.is_empty());
        // A lease without a holder leaves none.
        let mut free = (*held("y", 0, 10)).clone();
        free.spec.holder_identity = None;
        ts.insert(key("y"), Arc::new(free), t(0));
        assert!(ts.is_empty());
        let back = Tombstones::from_leases([held("z", 0, 10)], t(0));
        assert!(back.get(&key("z")).is_some());
        assert_eq!(back.leases().count(), 1);
    }
}
