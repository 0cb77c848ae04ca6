//! The replicated state, in memory: what every replica computes from the
//! Raft log, and nothing else.
//!
//! # Layout
//! - [`State`] (this file): the leases, the state machine clock, the
//!   revision, the watch history, the request-id records and the sweep
//!   indexes, with the read side (get, list, history).
//! - [`applier`]: applies one command entry: advances the clock, trims,
//!   deduplicates, calls the pure `lease::apply` and records the effects.
//!   Per entry, never per batch, so a replica's state is a function of the
//!   log alone.
//! - [`clock`]: leader stamps into one monotonic time.
//! - [`dedup`]: request ids answered at most once.
//! - [`history`]: the bounded window of change events watchers resume from.
//! - [`index`]: leases by expiry and by collection time, for the sweeps.
//! - [`tombstones`]: leases deleted while their tenure could still be
//!   live, kept until it could have lapsed.
//!
//! Pure: no disk, no network, no clock, no Raft types. `store` persists it
//! (snapshots, plus the log it replays) and adapts it to openraft.
//!
//! Every collection is persistent (`imbl`): cloning a `State` costs a few
//! reference counts, and later changes copy only the paths they touch. That
//! is how readers get a consistent view without holding any lock while they
//! scan (`store::StateMachineStore::view`), and how a snapshot of a million
//! leases is taken without stopping writes.

pub mod applier;
pub mod clock;
pub mod dedup;
pub mod history;
pub mod index;
pub mod tombstones;

pub use applier::ApplyOptions;
pub use clock::{EpochLeader, SmClock};
pub use history::{Compacted, HistoryLimits};

use crate::lease::apply::lapses_at;
use crate::lease::gc::deletable_at;
use crate::lease::selector::Selector;
use crate::lease::{Command, Event, Lease, LeaseKey, Timestamp};
use dedup::Dedup;
use history::History;
use imbl::OrdMap;
use index::Indexes;
use std::ops::Bound;
use std::sync::Arc;
use tombstones::Tombstones;

/// How many index entries a sweep examines per command it may propose.
const SWEEP_SCAN_FACTOR: usize = 8;

/// The leases by key.
pub type LeaseMap = OrdMap<Arc<LeaseKey>, Arc<Lease>>;

/// The replicated state.
#[derive(Debug, Clone, Default)]
pub struct State {
    leases: LeaseMap,
    clock: SmClock,
    revision: u64,
    history: History,
    dedup: Dedup,
    indexes: Indexes,
    tombstones: Tombstones,
}

/// What a snapshot holds of a [`State`] (the indexes are derived, so they
/// are not in it).
#[derive(Debug, Clone)]
pub struct Parts<L, E, R> {
    /// The state machine clock.
    pub clock: SmClock,
    /// The cluster revision.
    pub revision: u64,
    /// Every history event at or below this revision was dropped.
    pub history_compacted: u64,
    /// The leases, in key order.
    pub leases: L,
    /// The retained history, oldest first.
    pub events: E,
    /// The request-id records, oldest first.
    pub dedup: R,
    /// The tombstones (leases deleted while their tenure could still be
    /// live), in key order. Few: each lapses within its lease duration.
    pub tombstones: Vec<Arc<Lease>>,
}

/// How much one List page may hold and scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Items returned at most.
    pub max_items: usize,
    /// Leases examined at most: a selector that matches few leases cannot
    /// make one request scan the whole store. A page that ran out of this
    /// budget returns what it found, possibly nothing, and where to continue.
    pub max_scanned: usize,
}

/// One page of a List.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Matching leases in key order.
    pub items: Vec<Arc<Lease>>,
    /// Where to continue when more may follow: the last key examined.
    pub next: Option<LeaseKey>,
    /// The revision the page was read at.
    pub revision: u64,
}

impl State {
    /// An empty state; identity leases are collected
    /// `identity_gc_age_micros` after they expired.
    pub fn new(identity_gc_age_micros: i64) -> Self {
        State {
            indexes: Indexes::new(identity_gc_age_micros),
            ..Default::default()
        }
    }

    /// A state rebuilt from a snapshot's parts.
    pub fn from_parts(
        identity_gc_age_micros: i64,
        parts: Parts<
            impl IntoIterator<Item = Lease>,
            impl IntoIterator<Item = Event>,
            impl IntoIterator<Item = dedup::Record>,
        >,
    ) -> Self {
        let mut indexes = Indexes::new(identity_gc_age_micros);
        let mut leases = OrdMap::new();
        for lease in parts.leases {
            let key = Arc::new(lease.key.clone());
            indexes.insert(&key, &lease);
            leases.insert(key, Arc::new(lease));
        }
        State {
            leases,
            clock: parts.clock,
            revision: parts.revision,
            history: History::from_parts(parts.history_compacted, parts.events),
            dedup: Dedup::from_records(parts.dedup),
            indexes,
            tombstones: Tombstones::from_leases(parts.tombstones, parts.clock.epoch_start),
        }
    }

    /// A state rebuilt from a snapshot whose leases were already put in a
    /// map while it was read.
    pub fn from_map(
        identity_gc_age_micros: i64,
        parts: Parts<
            LeaseMap,
            impl IntoIterator<Item = Event>,
            impl IntoIterator<Item = dedup::Record>,
        >,
    ) -> Self {
        let mut indexes = Indexes::new(identity_gc_age_micros);
        for (key, lease) in parts.leases.iter() {
            indexes.insert(key, lease);
        }
        State {
            leases: parts.leases,
            clock: parts.clock,
            revision: parts.revision,
            history: History::from_parts(parts.history_compacted, parts.events),
            dedup: Dedup::from_records(parts.dedup),
            indexes,
            tombstones: Tombstones::from_leases(parts.tombstones, parts.clock.epoch_start),
        }
    }

    /// The parts a snapshot stores, borrowed.
    #[allow(clippy::type_complexity)]
    pub fn parts(
        &self,
    ) -> Parts<
        impl ExactSizeIterator<Item = &Lease> + '_,
        impl ExactSizeIterator<Item = &Event> + '_,
        impl ExactSizeIterator<Item = &dedup::Record> + '_,
    > {
        Parts {
            clock: self.clock,
            revision: self.revision,
            history_compacted: self.history.compacted(),
            leases: self.leases.values().map(|l| l.as_ref()),
            events: self.history.events().map(|e| e.as_ref()),
            dedup: self.dedup.records(),
            tombstones: self.tombstones.leases().cloned().collect(),
        }
    }

    /// A copy for readers: everything but the request-id records, which
    /// only the applier and snapshots use. (A reader's copy of them would
    /// make the applier's next inserts copy the paths they touch.)
    pub fn reader_view(&self) -> State {
        State {
            leases: self.leases.clone(),
            clock: self.clock,
            revision: self.revision,
            history: self.history.clone(),
            dedup: Dedup::default(),
            indexes: self.indexes.clone(),
            tombstones: self.tombstones.clone(),
        }
    }

    /// This state as a restored backup starts from it: the revision raised
    /// to `floor` (never lowered), and the watch history emptied and
    /// compacted at that revision. Everything else is kept: the leases
    /// with their fencing tokens, resourceVersions and uids, the
    /// tombstones, the request-id records and the clock.
    ///
    /// Why: fencing tokens and resourceVersions are revisions, so every
    /// later grant gets at least `floor + 1`, above every token issued
    /// before the backup and (given a large enough floor) every token the
    /// old cluster issued after it. The history is dropped because it
    /// stops at the backup while the revision jumps: a watch from any
    /// revision up to `floor` must be told COMPACTED and relist rather than
    /// miss the changes the old cluster made after the backup.
    pub fn restored(&self, floor: u64) -> State {
        let revision = self.revision.max(floor);
        State {
            leases: self.leases.clone(),
            clock: self.clock,
            revision,
            history: History::from_parts(revision, std::iter::empty()),
            dedup: self.dedup.clone(),
            indexes: self.indexes.clone(),
            tombstones: self.tombstones.clone(),
        }
    }

    /// The lease with `key`.
    pub fn get(&self, key: &LeaseKey) -> Option<&Arc<Lease>> {
        self.leases.get(key)
    }

    /// The current revision: the log index of the last change to any lease.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The state machine clock.
    pub fn clock(&self) -> SmClock {
        self.clock
    }

    /// Every lease, in key order.
    pub fn leases(&self) -> impl Iterator<Item = &Arc<Lease>> {
        self.leases.values()
    }

    /// Number of leases.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Number of tombstones kept.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Number of request ids remembered.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// The watch history's compacted point and length.
    pub fn history_bounds(&self) -> (u64, usize) {
        (self.history.compacted(), self.history.len())
    }

    /// Up to `limit` events with revision >= `from`, oldest first.
    pub fn history_since(&self, from: u64, limit: usize) -> Result<Vec<Arc<Event>>, Compacted> {
        self.history.since(from, limit)
    }

    /// What the leader's sweep should propose if its commands are applied
    /// at `now` in the epoch that started at `epoch_start`: `Expire` for
    /// tenures that lapsed (and are not yet marked), `Delete` at the exact
    /// resourceVersion for garbage that the state machine will accept to
    /// delete. At most `limit` of each. Commands that would be refused are
    /// not proposed: after a leader change every held lease runs a full
    /// duration from the new epoch, and proposing before that only fills the
    /// log with refusals. Both kinds are checked again when applied.
    pub fn sweep(&self, now: Timestamp, epoch_start: Timestamp, limit: usize) -> Vec<Command> {
        // The indexes order by times that ignore the epoch; entries that
        // are due by the index but not yet by the epoch are skipped, within
        // a bounded scan.
        let scan = limit.saturating_mul(SWEEP_SCAN_FACTOR);
        let mut out = Vec::new();
        let mut expiring = 0;
        for key in self.indexes.due_expiries(now, scan) {
            let Some(lease) = self.leases.get(&key) else {
                continue;
            };
            let (Some(holder), Some(lapsed)) = (lease.holder(), lapses_at(lease, epoch_start))
            else {
                continue;
            };
            if lapsed <= now && !lease.expired {
                out.push(Command::Expire {
                    key,
                    holder: holder.to_string(),
                    fencing_token: lease.fencing_token,
                });
                expiring += 1;
                if expiring >= limit {
                    break;
                }
            }
        }
        let mut deleting = 0;
        let age = self.indexes.identity_gc_age_micros();
        for key in self.indexes.due_gc(now, scan) {
            let Some(lease) = self.leases.get(&key) else {
                continue;
            };
            if deletable_at(lease, age, epoch_start).is_some_and(|at| at <= now) {
                out.push(Command::Delete {
                    key,
                    resource_version: Some(lease.resource_version),
                    uid: None,
                });
                deleting += 1;
                if deleting >= limit {
                    break;
                }
            }
        }
        out
    }

    /// Leases in `namespace` (all when empty) matching `selector`, in key
    /// order, strictly after `after`, within `limits`.
    pub fn list(
        &self,
        namespace: &str,
        selector: &Selector,
        after: Option<&LeaseKey>,
        limits: PageLimits,
    ) -> ListPage {
        let start = LeaseKey::new(namespace, "");
        let lower = match after {
            Some(a) if *a >= start => Bound::Excluded(a.clone()),
            _ => Bound::Included(start),
        };
        let mut page = ListPage {
            revision: self.revision,
            ..Default::default()
        };
        let mut last: Option<&Arc<LeaseKey>> = None;
        let range = self.leases.range::<_, LeaseKey>((lower, Bound::Unbounded));
        for (scanned, (key, lease)) in range.enumerate() {
            if !namespace.is_empty() && key.namespace != namespace {
                return page;
            }
            if page.items.len() >= limits.max_items || scanned >= limits.max_scanned {
                // More may follow: continue after the last key examined
                // (every item so far is at or before it).
                page.next = last.map(|k| k.as_ref().clone());
                return page;
            }
            last = Some(key);
            if selector.matches(&lease.labels) {
                page.items.push(lease.clone());
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::applier::EntryPosition;
    use super::*;
    use crate::lease::gc::GC_AFTER_EXPIRY_LABEL;
    use crate::lease::{CommandResponse, Proposal};

    const SEC: i64 = 1_000_000;

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_micros(1_700_000_000 * SEC + micros)
    }

    fn run(s: &mut State, index: u64, leader: u64, at: i64, command: Command) -> CommandResponse {
        let p = Proposal::single(t(at), leader, command, None);
        let at = EntryPosition {
            index,
            leader: EpochLeader {
                term: leader,
                node: leader,
            },
        };
        s.apply_proposal(at, &p, &ApplyOptions::default())
            .0
            .remove(0)
    }

    /// Regression (issue 10): after a leader change the collector proposed
    /// a `Delete` of a held, collectable lease every sweep (up to ~1,000
    /// refused log entries per second), because a held lease cannot be
    /// deleted before a full duration of the new epoch has passed. The
    /// sweep now proposes only what the state machine will accept.
    #[test]
    fn the_sweep_proposes_only_commands_that_will_be_applied() {
        let mut s = State::new(3600 * SEC);
        let key = LeaseKey::new("ns", "gc");
        let labels = [(GC_AFTER_EXPIRY_LABEL.to_string(), "1s".to_string())].into();
        let acquire = Command::Acquire {
            key: key.clone(),
            holder: "a".into(),
            duration_seconds: 10,
            labels,
        };
        assert!(matches!(
            run(&mut s, 1, 1, 0, acquire),
            CommandResponse::Applied(_)
        ));
        // A new leader's epoch starts at 20 s: the tenure runs to 30 s and
        // the lease may change hands (or be deleted) at 30.1 s.
        run(
            &mut s,
            2,
            2,
            20 * SEC,
            Command::Acquire {
                key: LeaseKey::new("ns", "other"),
                holder: "b".into(),
                duration_seconds: 100,
                labels: Default::default(),
            },
        );
        let epoch = s.clock().epoch_start;
        assert_eq!(epoch, t(20 * SEC));
        for at in [11 * SEC, 25 * SEC, 29 * SEC] {
            assert!(
                s.sweep(t(at), epoch, 10).is_empty(),
                "nothing is due at {at} µs: {:?}",
                s.sweep(t(at), epoch, 10)
            );
        }
        let at_30 = s.sweep(t(30 * SEC), epoch, 10);
        assert!(
            matches!(at_30.as_slice(), [Command::Expire { key: k, .. }] if *k == key),
            "{at_30:?}"
        );
        let due = s.sweep(t(30 * SEC + SEC / 10), epoch, 10);
        let delete = due
            .iter()
            .find(|c| matches!(c, Command::Delete { .. }))
            .cloned()
            .expect("the delete is due");
        // Proposed at that time, it is applied (not refused).
        assert!(matches!(
            run(&mut s, 3, 2, 30 * SEC + SEC / 10, delete),
            CommandResponse::Applied(_)
        ));
        assert!(s.get(&key).is_none());
    }

    /// A restored state keeps every lease as it was (token,
    /// resourceVersion, uid), the request-id records and the clock; its
    /// revision is the floor and its history is compacted there, so the
    /// next grant's token is above the floor and a watch from before it
    /// is told COMPACTED.
    #[test]
    fn restored_raises_the_revision_to_the_floor_and_keeps_the_rest() {
        let mut s = State::new(0);
        let key = LeaseKey::new("ns", "a");
        let acquire = |holder: &str| Command::Acquire {
            key: key.clone(),
            holder: holder.into(),
            duration_seconds: 10,
            labels: Default::default(),
        };
        run(&mut s, 1, 1, 0, acquire("alice"));
        let p = Proposal::single(t(SEC), 1, acquire("alice"), Some("req-1".into()));
        let pos = |index| EntryPosition {
            index,
            leader: EpochLeader { term: 1, node: 1 },
        };
        s.apply_proposal(pos(2), &p, &ApplyOptions::default());
        run(
            &mut s,
            3,
            1,
            2 * SEC,
            Command::Acquire {
                key: LeaseKey::new("ns", "b"),
                holder: "bob".into(),
                duration_seconds: 10,
                labels: Default::default(),
            },
        );
        let before = s.get(&key).cloned().expect("lease a");
        let revision = s.revision();
        assert!(revision >= 2);
        assert!(s.history_since(1, 10).is_ok_and(|e| !e.is_empty()));
        assert_eq!(s.dedup_len(), 1);

        let floor = 1_000_000;
        let r = s.restored(floor);
        assert_eq!(r.revision(), floor);
        assert_eq!(r.history_bounds(), (floor, 0));
        assert_eq!(
            r.history_since(revision, 10),
            Err(Compacted {
                requested: revision,
                oldest: floor + 1
            })
        );
        assert!(r.history_since(floor + 1, 10).is_ok_and(|e| e.is_empty()));
        let after = r.get(&key).cloned().expect("lease a kept");
        assert_eq!(after, before, "token, resourceVersion and uid are kept");
        assert_eq!(r.lease_count(), 2);
        assert_eq!(r.dedup_len(), 1, "request-id records are kept");
        assert_eq!(r.clock(), s.clock());
        // The original is untouched (the restore works on a copy).
        assert_eq!(s.revision(), revision);

        // The next grant is above the floor.
        let mut r = r;
        let granted = run(
            &mut r,
            4,
            2,
            3 * SEC,
            Command::Acquire {
                key: LeaseKey::new("ns", "c"),
                holder: "carol".into(),
                duration_seconds: 10,
                labels: Default::default(),
            },
        );
        match granted {
            CommandResponse::Applied(a) => {
                let lease = a.lease;
                assert_eq!(lease.fencing_token, floor + 1);
                assert_eq!(lease.resource_version, floor + 1);
            }
            other => panic!("acquire after restore: {other:?}"),
        }
        assert_eq!(r.revision(), floor + 1);

        // A floor below the revision never lowers it.
        assert_eq!(s.restored(0).revision(), revision);
    }

    #[test]
    fn list_pages_stop_at_the_scan_budget_and_resume_after_the_last_key() {
        let mut s = State::new(0);
        for i in 0..10u64 {
            let labels = if i == 7 {
                [("pick".to_string(), "me".to_string())].into()
            } else {
                Default::default()
            };
            run(
                &mut s,
                i + 1,
                1,
                i as i64,
                Command::Acquire {
                    key: LeaseKey::new("ns", format!("l{i}")),
                    holder: "h".into(),
                    duration_seconds: 10,
                    labels,
                },
            );
        }
        let sel: Selector = "pick=me".parse().unwrap();
        let limits = PageLimits {
            max_items: 100,
            max_scanned: 4,
        };
        let p1 = s.list("ns", &sel, None, limits);
        assert!(p1.items.is_empty());
        assert_eq!(p1.next, Some(LeaseKey::new("ns", "l3")));
        let p2 = s.list("ns", &sel, p1.next.as_ref(), limits);
        assert_eq!(p2.items.len(), 1);
        assert_eq!(p2.items[0].key.name, "l7");
        let p3 = s.list("ns", &sel, p2.next.as_ref(), limits);
        assert!(p3.items.is_empty());
        assert_eq!(p3.next, None, "the end");
    }
}
