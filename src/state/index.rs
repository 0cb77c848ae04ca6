//! In-memory indexes over the leases, for the leader's sweeps.
//!
//! `expiry` orders live tenures (a holder, not yet marked expired) by
//! `expireTime`, so the expiry sweep finds lapsed leases without scanning
//! the store. `gc` orders collectable leases (see `lease::gc`) by the time
//! they become garbage. Both are derived data: rebuilt when a snapshot is
//! loaded or installed, and updated with every applied change. They never
//! decide anything by themselves: the sweeps propose commands that the
//! state machine checks again. Persistent sets, so a reader's view of the
//! state shares them without a copy.

use crate::lease::gc::collect_at;
use crate::lease::{Lease, LeaseKey, Timestamp};
use imbl::OrdSet;
use std::sync::Arc;

type Entry = (Timestamp, Arc<LeaseKey>);

/// The indexes.
#[derive(Debug, Clone, Default)]
pub struct Indexes {
    expiry: OrdSet<Entry>,
    gc: OrdSet<Entry>,
    identity_gc_age_micros: i64,
}

impl Indexes {
    /// Empty indexes; identity leases are collected `identity_gc_age_micros`
    /// after they expired.
    pub fn new(identity_gc_age_micros: i64) -> Self {
        Indexes {
            identity_gc_age_micros,
            ..Default::default()
        }
    }

    fn expiry_entry(key: &Arc<LeaseKey>, l: &Lease) -> Option<Entry> {
        if l.expired {
            return None;
        }
        Some((l.expire_time()?, key.clone()))
    }

    fn gc_entry(&self, key: &Arc<LeaseKey>, l: &Lease) -> Option<Entry> {
        Some((collect_at(l, self.identity_gc_age_micros)?, key.clone()))
    }

    /// Forgets `lease`, stored under `key` (its state before a change).
    pub fn remove(&mut self, key: &Arc<LeaseKey>, lease: &Lease) {
        if let Some(e) = Self::expiry_entry(key, lease) {
            self.expiry.remove(&e);
        }
        if let Some(g) = self.gc_entry(key, lease) {
            self.gc.remove(&g);
        }
    }

    /// Indexes `lease`, stored under `key` (its state after a change).
    pub fn insert(&mut self, key: &Arc<LeaseKey>, lease: &Lease) {
        if let Some(e) = Self::expiry_entry(key, lease) {
            self.expiry.insert(e);
        }
        if let Some(g) = self.gc_entry(key, lease) {
            self.gc.insert(g);
        }
    }

    /// The age after expiry at which identity leases are collected.
    pub fn identity_gc_age_micros(&self) -> i64 {
        self.identity_gc_age_micros
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.expiry.clear();
        self.gc.clear();
    }

    /// Up to `limit` leases whose tenure lapsed at or before `now`, oldest first.
    pub fn due_expiries(&self, now: Timestamp, limit: usize) -> Vec<LeaseKey> {
        Self::due(&self.expiry, now, limit)
    }

    /// Up to `limit` leases that became garbage at or before `now`.
    pub fn due_gc(&self, now: Timestamp, limit: usize) -> Vec<LeaseKey> {
        Self::due(&self.gc, now, limit)
    }

    /// Number of live tenures indexed.
    pub fn live_tenures(&self) -> usize {
        self.expiry.len()
    }

    /// Number of collectable leases indexed.
    pub fn collectable(&self) -> usize {
        self.gc.len()
    }

    fn due(set: &OrdSet<Entry>, now: Timestamp, limit: usize) -> Vec<LeaseKey> {
        set.iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, k)| k.as_ref().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::gc::IDENTITY_LABEL;
    use crate::lease::time::MICROS_PER_SEC;
    use crate::lease::LeaseSpec;

    fn k(l: &Lease) -> Arc<LeaseKey> {
        Arc::new(l.key.clone())
    }

    fn lease(name: &str, renew_s: i64, holder: Option<&str>, identity: bool) -> Lease {
        Lease {
            key: LeaseKey::new("ns", name),
            uid: String::new(),
            resource_version: 1,
            creation_timestamp: Timestamp::from_micros(0),
            labels: if identity {
                [(IDENTITY_LABEL.to_string(), "leasehold".to_string())].into()
            } else {
                Default::default()
            },
            annotations: Default::default(),
            spec: LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(10),
                renew_time: Some(Timestamp::from_micros(renew_s * MICROS_PER_SEC)),
                ..Default::default()
            },
            fencing_token: 1,
            expired: false,
        }
    }

    #[test]
    fn expiry_index_tracks_live_tenures_only() {
        let mut ix = Indexes::new(60 * MICROS_PER_SEC);
        let a = lease("a", 0, Some("h"), false); // expires at 10 s
        let b = lease("b", 5, Some("h"), false); // expires at 15 s
        let free = lease("c", 0, None, false);
        ix.insert(&k(&a), &a);
        ix.insert(&k(&b), &b);
        ix.insert(&k(&free), &free);
        let at = |s: i64| Timestamp::from_micros(s * MICROS_PER_SEC);
        assert!(ix.due_expiries(at(9), 10).is_empty());
        assert_eq!(ix.due_expiries(at(10), 10), vec![a.key.clone()]);
        assert_eq!(
            ix.due_expiries(at(20), 10),
            vec![a.key.clone(), b.key.clone()]
        );
        assert_eq!(ix.due_expiries(at(20), 1).len(), 1, "limit respected");
        // Renewal moves the entry; marking expired removes it.
        ix.remove(&k(&a), &a);
        let mut renewed = lease("a", 12, Some("h"), false);
        ix.insert(&k(&renewed), &renewed);
        assert_eq!(ix.due_expiries(at(20), 10), vec![b.key.clone()]);
        ix.remove(&k(&renewed), &renewed);
        renewed.expired = true;
        ix.insert(&k(&renewed), &renewed);
        assert_eq!(ix.live_tenures(), 1);
    }

    #[test]
    fn gc_index_holds_collectable_leases() {
        let mut ix = Indexes::new(60 * MICROS_PER_SEC);
        let id = lease("id", 0, Some("h"), true); // expires 10 s, garbage at 70 s
        ix.insert(&k(&id), &id);
        let plain = lease("plain", 0, Some("h"), false);
        ix.insert(&k(&plain), &plain);
        let at = |s: i64| Timestamp::from_micros(s * MICROS_PER_SEC);
        assert!(ix.due_gc(at(69), 10).is_empty());
        assert_eq!(ix.due_gc(at(70), 10), vec![id.key.clone()]);
        ix.remove(&k(&id), &id);
        assert!(ix.due_gc(at(100), 10).is_empty());
    }
}
