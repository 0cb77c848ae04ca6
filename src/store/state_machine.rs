//! openraft's `RaftStateMachine` over sled: a thin adapter onto
//! `lease::apply`.
//!
//! For each log entry this module derives the [`ApplyContext`] (revision =
//! log index; time = the leader's stamp made monotonic; the epoch start of
//! the current leader), calls the pure `apply`, and writes the result. All
//! entries of one `apply` call are written with one atomic sled batch together
//! with the last-applied log id, so the lease records and the applied index
//! can never disagree after a crash.
//!
//! Every change also becomes an [`Event`]: events are kept in the `sm` tree
//! (so they travel in snapshots and are trimmed in the same batches) and
//! published to watchers after the batch is written, through a broadcast
//! channel that never blocks the state machine.
//!
//! The state machine is not flushed on its own: the log is, and a crash only
//! loses applied-but-unflushed state that is re-applied from the log on
//! restart. Snapshots are flushed before openraft may purge the log they
//! replace.

use super::dedup;
use super::index::Indexes;
use super::keys::{self, decode, encode};
use super::{io_err, snapshot, StoreOptions};
use crate::lease::apply::{apply, ApplyContext, Effect};
use crate::lease::selector::Selector;
use crate::lease::{
    Applied, Command, CommandResponse, Event, EventKind, Lease, LeaseKey, Timestamp,
};
use crate::raft::types::{
    Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{broadcast, watch};

/// How many applied batches a watcher may fall behind before it is cut off.
pub const WATCH_BUFFER_BATCHES: usize = 1024;
/// At most this many history events are trimmed per applied batch, so
/// trimming never makes one batch slow; the rest goes with later batches.
const TRIM_PER_BATCH: usize = 1024;

/// The state machine's notion of time, persisted with the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmClock {
    /// The state machine time of the last command; never decreases.
    pub now: Timestamp,
    /// State machine time of the first command of the current leader.
    pub epoch_start: Timestamp,
    /// The raw stamp (leader's wall clock) of that first command.
    pub epoch_first_stamp: Timestamp,
    /// The leader whose commands are being applied.
    pub epoch_leader: Option<CommittedLeaderId<NodeId>>,
    /// The clock that leader stamps with ([`Proposal::clock_id`]).
    pub epoch_clock: u64,
}

impl SmClock {
    /// The state machine time a command stamped `stamp` by the epoch's
    /// leader would get: the epoch start plus the leader's elapsed time.
    pub fn project(&self, stamp: Timestamp) -> Timestamp {
        self.now.max(
            self.epoch_start
                .plus_micros(stamp.micros_since(self.epoch_first_stamp)),
        )
    }
}

/// The bounds of the watch history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMeta {
    /// Every event at or below this revision has been dropped (0: none).
    pub compacted: u64,
    /// Events kept.
    pub len: u64,
}

/// Everything but the leases, cached in memory and persisted under `m:*`.
#[derive(Debug, Clone, Default)]
struct SmMeta {
    applied: Option<LogId>,
    membership: StoredMembership,
    clock: SmClock,
    revision: u64,
    history: HistoryMeta,
    dedup: dedup::DedupMeta,
}

/// What the state machine tells watchers.
#[derive(Debug, Clone)]
pub enum Notice {
    /// The events of one applied batch, in revision order.
    Events(Arc<Vec<Event>>),
    /// A snapshot replaced the state: watchers must resume from the history.
    Reset,
}

/// Why history could not be read from a revision.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The revision was trimmed.
    #[error("revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        /// What was asked for.
        requested: u64,
        /// The oldest revision that can still be watched from.
        oldest: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

struct Inner {
    db: sled::Db,
    sm: sled::Tree,
    snap: sled::Tree,
    meta: Mutex<SmMeta>,
    /// Held for writing while a batch is applied, for reading by multi-key
    /// reads (List), so a List sees a state that existed at one revision.
    apply_lock: RwLock<()>,
    /// The last applied log index, for waiters (reads after a write).
    applied_tx: watch::Sender<u64>,
    snapshot_seq: std::sync::atomic::AtomicU64,
    events_tx: broadcast::Sender<Notice>,
    indexes: Mutex<Indexes>,
    opts: StoreOptions,
    /// Serialises storing snapshots (built and installed ones race).
    snapshot_lock: tokio::sync::Mutex<()>,
}

/// The lease state machine. Cheap to clone; clones share state, which is how
/// the API layer reads it while openraft owns a copy.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn sm_err(verb: ErrorVerb, e: &(impl std::error::Error + 'static)) -> StorageError {
    io_err(verb, ErrorSubject::StateMachine, e)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data is a plain
    // cache that is rewritten whole, so continuing is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One page of a List.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Matching leases in key order.
    pub items: Vec<Lease>,
    /// Key of the last item when more may follow.
    pub next: Option<LeaseKey>,
    /// The revision the page was read at.
    pub revision: u64,
}

impl StateMachineStore {
    pub(crate) fn open(db: sled::Db, opts: StoreOptions) -> anyhow::Result<Self> {
        let sm = db.open_tree("sm")?;
        let snap = db.open_tree("snapshot")?;
        let meta = load_meta(&sm)?;
        let (applied_tx, _) = watch::channel(meta.applied.map(|l| l.index).unwrap_or(0));
        let (events_tx, _) = broadcast::channel(WATCH_BUFFER_BATCHES);
        let indexes = build_indexes(&sm, opts.identity_gc_age_micros)?;
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                db,
                sm,
                snap,
                meta: Mutex::new(meta),
                apply_lock: RwLock::new(()),
                applied_tx,
                snapshot_seq: Default::default(),
                events_tx,
                indexes: Mutex::new(indexes),
                opts,
                snapshot_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Subscribes to applied changes. Subscribe before reading history so
    /// nothing falls between the two; drop events already seen by revision.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.events_tx.subscribe()
    }

    /// The history bounds.
    pub fn history_meta(&self) -> HistoryMeta {
        lock(&self.inner.meta).history
    }

    /// The events with revision >= `from`, oldest first, at most `limit`,
    /// and the revision the read saw. Fails with `Compacted` when events at
    /// or after `from` may have been dropped.
    pub fn history_from(&self, from: u64, limit: usize) -> Result<(Vec<Event>, u64), HistoryError> {
        let _g = self
            .inner
            .apply_lock
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let (history, revision) = {
            let m = lock(&self.inner.meta);
            (m.history, m.revision)
        };
        if from <= history.compacted {
            return Err(HistoryError::Compacted {
                requested: from,
                oldest: history.compacted + 1,
            });
        }
        let mut out = Vec::new();
        for item in self
            .inner
            .sm
            .range(keys::history_key(from)..=keys::history_key(u64::MAX))
        {
            let (_, v) = item.map_err(anyhow::Error::from)?;
            out.push(decode::<Event>(&v).map_err(anyhow::Error::from)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok((out, revision))
    }

    /// Leases whose tenure lapsed at or before `now` (per the index).
    pub fn due_expiries(&self, now: Timestamp, limit: usize) -> Vec<LeaseKey> {
        lock(&self.inner.indexes).due_expiries(now, limit)
    }

    /// Leases that became garbage at or before `now` (per the index).
    pub fn due_gc(&self, now: Timestamp, limit: usize) -> Vec<LeaseKey> {
        lock(&self.inner.indexes).due_gc(now, limit)
    }

    /// The current revision: the log index of the last change to any lease.
    pub fn revision(&self) -> u64 {
        lock(&self.inner.meta).revision
    }

    /// The state machine clock.
    pub fn clock(&self) -> SmClock {
        lock(&self.inner.meta).clock
    }

    /// The last applied log index (0 before anything was applied).
    pub fn applied_index(&self) -> u64 {
        *self.inner.applied_tx.borrow()
    }

    /// Waits until the state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.inner.applied_tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    /// Reads one lease.
    pub fn get(&self, key: &LeaseKey) -> anyhow::Result<(Option<Lease>, u64)> {
        let _g = self
            .inner
            .apply_lock
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let lease = match self.inner.sm.get(keys::lease_key(key))? {
            Some(bytes) => Some(decode::<Lease>(&bytes)?),
            None => None,
        };
        Ok((lease, self.revision()))
    }

    /// Lists leases in `namespace` (all when empty) matching `selector`, in
    /// key order, starting after `after`, at most `limit` (0 = no limit).
    pub fn list(
        &self,
        namespace: &str,
        selector: &Selector,
        after: Option<&LeaseKey>,
        limit: usize,
    ) -> anyhow::Result<ListPage> {
        let _g = self
            .inner
            .apply_lock
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let prefix = keys::namespace_prefix(namespace);
        let start = match after {
            Some(k) => {
                let mut s = keys::lease_key(k);
                s.push(0); // strictly after
                s.max(prefix.clone())
            }
            None => prefix.clone(),
        };
        let mut page = ListPage {
            revision: self.revision(),
            ..Default::default()
        };
        for item in self.inner.sm.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let lease: Lease = decode(&v)?;
            if !selector.matches(&lease.labels) {
                continue;
            }
            if limit > 0 && page.items.len() == limit {
                page.next = page.items.last().map(|l| l.key.clone());
                break;
            }
            page.items.push(lease);
        }
        Ok(page)
    }

    /// Number of leases stored.
    pub fn lease_count(&self) -> usize {
        self.inner.sm.scan_prefix([keys::LEASE_PREFIX]).count()
    }

    fn read_lease(&self, key: &[u8]) -> Result<Option<Lease>, StorageError> {
        match self
            .inner
            .sm
            .get(key)
            .map_err(|e| sm_err(ErrorVerb::Read, &e))?
        {
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|e| sm_err(ErrorVerb::Read, &e)),
            None => Ok(None),
        }
    }

    fn export(&self) -> Result<(snapshot::Records, SmMeta), StorageError> {
        let _g = self
            .inner
            .apply_lock
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let meta = lock(&self.inner.meta).clone();
        let mut records = Vec::new();
        for item in self.inner.sm.iter() {
            let (k, v) = item.map_err(|e| sm_err(ErrorVerb::Read, &e))?;
            records.push((k.to_vec(), v.to_vec()));
        }
        Ok((records, meta))
    }
}

fn load_meta(sm: &sled::Tree) -> anyhow::Result<SmMeta> {
    fn get<T: serde::de::DeserializeOwned + Default>(
        sm: &sled::Tree,
        k: &[u8],
    ) -> anyhow::Result<T> {
        Ok(match sm.get(k)? {
            Some(b) => decode(&b)?,
            None => T::default(),
        })
    }
    Ok(SmMeta {
        applied: get(sm, keys::SM_APPLIED)?,
        membership: get(sm, keys::SM_MEMBERSHIP)?,
        clock: get(sm, keys::SM_CLOCK)?,
        revision: get(sm, keys::SM_REVISION)?,
        history: get(sm, keys::SM_HISTORY)?,
        dedup: get(sm, keys::SM_DEDUP)?,
    })
}

fn build_indexes(sm: &sled::Tree, identity_gc_age_micros: i64) -> anyhow::Result<Indexes> {
    let mut ix = Indexes::new(identity_gc_age_micros);
    for item in sm.scan_prefix([keys::LEASE_PREFIX]) {
        let (_, v) = item?;
        ix.insert(&decode::<Lease>(&v)?);
    }
    Ok(ix)
}

/// Adds to `batch` the removal of history events that exceed the count or
/// age limit, at most [`TRIM_PER_BATCH`] of them, and updates `history`.
/// Only events already in the tree are considered; this batch's new events
/// are trimmed by later batches if needed.
fn trim_history(
    sm: &sled::Tree,
    opts: &StoreOptions,
    now: Timestamp,
    history: &mut HistoryMeta,
    batch: &mut sled::Batch,
) -> Result<(), StorageError> {
    let over = history.len.saturating_sub(opts.history_max_events);
    let cutoff =
        (opts.history_max_age_micros > 0).then(|| now.plus_micros(-opts.history_max_age_micros));
    if over == 0 && cutoff.is_none() {
        return Ok(());
    }
    let start = keys::history_key(0);
    let end = keys::history_key(u64::MAX);
    let mut removed = 0u64;
    for item in sm.range(start..=end).take(TRIM_PER_BATCH) {
        let (k, v) = item.map_err(|e| sm_err(ErrorVerb::Read, &e))?;
        let Some(rev) = keys::history_revision(&k) else {
            break;
        };
        let too_many = removed < over;
        let too_old = match cutoff {
            Some(c) => {
                decode::<Event>(&v)
                    .map_err(|e| sm_err(ErrorVerb::Read, &e))?
                    .time
                    < c
            }
            None => false,
        };
        if !too_many && !too_old {
            break;
        }
        batch.remove(k);
        removed += 1;
        history.compacted = history.compacted.max(rev);
    }
    history.len = history.len.saturating_sub(removed);
    Ok(())
}

fn put_meta(batch: &mut sled::Batch, meta: &SmMeta) -> Result<(), bincode::Error> {
    batch.insert(keys::SM_APPLIED, encode(&meta.applied)?);
    batch.insert(keys::SM_MEMBERSHIP, encode(&meta.membership)?);
    batch.insert(keys::SM_CLOCK, encode(&meta.clock)?);
    batch.insert(keys::SM_REVISION, encode(&meta.revision)?);
    batch.insert(keys::SM_HISTORY, encode(&meta.history)?);
    batch.insert(keys::SM_DEDUP, encode(&meta.dedup)?);
    Ok(())
}

/// Advances the clock for a command entry.
///
/// The first command of a new leader starts an epoch at `max(now, stamp)`:
/// time never goes back, and it catches up with a leader whose clock is
/// ahead (safe: nothing held can be granted before a full duration of the
/// new epoch has passed, see `lease::apply`). Within an epoch, time advances
/// by the leader's elapsed time since the epoch's first stamp, so only the
/// leader's clock *rate* matters: a leader whose clock is behind does not
/// freeze time until its clock catches up. An epoch is one leader's term
/// *and* one clock ([`Proposal::clock_id`]): a leader that restarts and
/// resumes its term reads a new wall-clock anchor, which may disagree with
/// the old one by anything (a clock stepped while it was down); projecting
/// its stamps against the old anchor would freeze time or, worse, jump it
/// forward and hand out leases early.
pub fn advance_clock(
    clock: &mut SmClock,
    stamped: Timestamp,
    clock_id: u64,
    leader: CommittedLeaderId<NodeId>,
) {
    if clock.epoch_leader != Some(leader) || clock.epoch_clock != clock_id {
        clock.epoch_leader = Some(leader);
        clock.epoch_clock = clock_id;
        clock.epoch_start = clock.now.max(stamped);
        clock.epoch_first_stamp = stamped;
        clock.now = clock.epoch_start;
    } else {
        clock.now = clock.project(stamped);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = lock(&self.inner.meta);
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut meta = lock(&self.inner.meta).clone();
        // Leases touched by this batch: their state before the batch (for the
        // indexes) and after each entry (so later entries see earlier ones).
        let mut before: HashMap<Vec<u8>, Option<Lease>> = HashMap::new();
        let mut overlay: HashMap<Vec<u8>, Option<Lease>> = HashMap::new();
        let mut events: Vec<Event> = Vec::new();
        let mut dedup_batch: HashMap<String, dedup::Record> = HashMap::new();
        let mut responses = Vec::new();
        for entry in entries {
            meta.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::None
                }
                EntryPayload::Normal(proposal) => {
                    advance_clock(
                        &mut meta.clock,
                        proposal.time,
                        proposal.clock_id,
                        entry.log_id.leader_id,
                    );
                    let ctx = ApplyContext {
                        revision: entry.log_id.index,
                        now: meta.clock.now,
                        epoch_start: meta.clock.epoch_start,
                    };
                    let first = match &proposal.request_id {
                        Some(id) => match dedup_batch.get(id) {
                            Some(r) => Some(r.response.clone()),
                            None => dedup::lookup(&self.inner.sm, id)
                                .map_err(|e| {
                                    sm_err(ErrorVerb::Read, &std::io::Error::other(e.to_string()))
                                })?
                                .map(|r| r.response),
                        },
                        None => None,
                    };
                    if let Some(response) = first {
                        // A retry of an applied request: its first result.
                        response
                    } else {
                        let response = {
                            let k = keys::lease_key(proposal.command.key());
                            let current = match overlay.get(&k) {
                                Some(l) => l.clone(),
                                None => {
                                    let l = self.read_lease(&k)?;
                                    before.insert(k.clone(), l.clone());
                                    l
                                }
                            };
                            match apply(&proposal.command, current.as_ref(), &ctx) {
                                Ok(effect) => {
                                    let (kind, lease, created, newly_acquired) = match effect {
                                        Effect::Write {
                                            lease,
                                            created,
                                            newly_acquired,
                                        } => {
                                            let kind = if created {
                                                EventKind::Added
                                            } else if matches!(
                                                proposal.command,
                                                Command::Expire { .. }
                                            ) {
                                                EventKind::Expired
                                            } else {
                                                EventKind::Modified
                                            };
                                            overlay.insert(k, Some(lease.clone()));
                                            (kind, lease, created, newly_acquired)
                                        }
                                        Effect::Delete { lease } => {
                                            overlay.insert(k, None);
                                            (EventKind::Deleted, lease, false, false)
                                        }
                                    };
                                    meta.revision = ctx.revision;
                                    events.push(Event {
                                        revision: ctx.revision,
                                        time: ctx.now,
                                        kind,
                                        lease: lease.clone(),
                                    });
                                    CommandResponse::Applied(Applied {
                                        lease,
                                        revision: ctx.revision,
                                        created,
                                        newly_acquired,
                                    })
                                }
                                Err(e) => CommandResponse::Refused(e),
                            }
                        };
                        if let Some(id) = proposal.request_id {
                            dedup_batch.insert(
                                id,
                                dedup::Record {
                                    time: ctx.now,
                                    response: response.clone(),
                                },
                            );
                        }
                        response
                    }
                }
            };
            responses.push(response);
        }
        let werr = |e: bincode::Error| sm_err(ErrorVerb::Write, &e);
        let mut batch = sled::Batch::default();
        for (k, v) in &overlay {
            match v {
                Some(lease) => batch.insert(k.as_slice(), encode(lease).map_err(werr)?),
                None => batch.remove(k.as_slice()),
            }
        }
        trim_history(
            &self.inner.sm,
            &self.inner.opts,
            meta.clock.now,
            &mut meta.history,
            &mut batch,
        )?;
        if self.inner.opts.history_max_events > 0 {
            for e in &events {
                batch.insert(&keys::history_key(e.revision), encode(e).map_err(werr)?);
            }
            meta.history.len += events.len() as u64;
        } else if let Some(last) = events.last() {
            meta.history.compacted = last.revision;
        }
        let derr =
            |e: anyhow::Error| sm_err(ErrorVerb::Write, &std::io::Error::other(e.to_string()));
        dedup::trim(&self.inner.sm, &mut meta.dedup, meta.clock.now, &mut batch).map_err(derr)?;
        for (id, record) in &dedup_batch {
            dedup::store(&mut batch, &mut meta.dedup, id, record).map_err(derr)?;
        }
        put_meta(&mut batch, &meta).map_err(werr)?;
        {
            let _g = self
                .inner
                .apply_lock
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.inner
                .sm
                .apply_batch(batch)
                .map_err(|e| sm_err(ErrorVerb::Write, &e))?;
            *lock(&self.inner.meta) = meta.clone();
            let mut ix = lock(&self.inner.indexes);
            // Only changed leases move in the indexes: a lease read for a
            // refused command stays as it was.
            for (k, new) in &overlay {
                if let Some(Some(old)) = before.get(k) {
                    ix.remove(old);
                }
                if let Some(new) = new {
                    ix.insert(new);
                }
            }
        }
        if let Some(applied) = meta.applied {
            self.inner.applied_tx.send_replace(applied.index);
        }
        if !events.is_empty() {
            // No receivers is fine; a full buffer cuts off the slowest
            // watchers (they see `Lagged`), never this call.
            let _ = self.inner.events_tx.send(Notice::Events(Arc::new(events)));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Export now, while openraft holds off applying, so the copy is of one
        // exact applied index; encoding and storing happen in the builder.
        SnapshotBuilder {
            store: self.clone(),
            exported: self.export(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        let records = snapshot::decode(&data)
            .map_err(|e| io_err(ErrorVerb::Read, ErrorSubject::Snapshot(sig.clone()), &e))?;
        let mut batch = sled::Batch::default();
        for item in self.inner.sm.iter() {
            let (k, _) = item.map_err(|e| sm_err(ErrorVerb::Read, &e))?;
            batch.remove(k);
        }
        for (k, v) in &records {
            batch.insert(k.as_slice(), v.as_slice());
        }
        let mut new_meta = SmMeta::default();
        for (k, v) in &records {
            let bad = |e: bincode::Error| {
                io_err(ErrorVerb::Read, ErrorSubject::Snapshot(sig.clone()), &e)
            };
            match k.as_slice() {
                keys::SM_CLOCK => new_meta.clock = decode(v).map_err(bad)?,
                keys::SM_REVISION => new_meta.revision = decode(v).map_err(bad)?,
                keys::SM_HISTORY => new_meta.history = decode(v).map_err(bad)?,
                keys::SM_DEDUP => new_meta.dedup = decode(v).map_err(bad)?,
                _ => {}
            }
        }
        // The snapshot's own metadata is authoritative for these two.
        new_meta.applied = meta.last_log_id;
        new_meta.membership = meta.last_membership.clone();
        put_meta(&mut batch, &new_meta).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        {
            let _g = self
                .inner
                .apply_lock
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.inner
                .sm
                .apply_batch(batch)
                .map_err(|e| sm_err(ErrorVerb::Write, &e))?;
            *lock(&self.inner.meta) = new_meta.clone();
            let rebuilt = build_indexes(&self.inner.sm, self.inner.opts.identity_gc_age_micros)
                .map_err(|e| {
                    io_err(
                        ErrorVerb::Read,
                        ErrorSubject::Snapshot(sig.clone()),
                        &std::io::Error::other(e.to_string()),
                    )
                })?;
            *lock(&self.inner.indexes) = rebuilt;
        }
        let _ = self.inner.events_tx.send(Notice::Reset);
        store_snapshot(&self.inner, meta, &data).await?;
        if let Some(applied) = new_meta.applied {
            self.inner.applied_tx.send_replace(applied.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let read_err = |e: &dyn std::fmt::Display| {
            io_err(
                ErrorVerb::Read,
                ErrorSubject::Snapshot(None),
                &std::io::Error::other(e.to_string()),
            )
        };
        let Some(bytes) = self
            .inner
            .snap
            .get(SNAPSHOT_KEY)
            .map_err(|e| read_err(&e))?
        else {
            return Ok(None);
        };
        let (meta, data) = split_snapshot(&bytes).map_err(|e| read_err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

/// `snapshot` tree key of the current snapshot: u32 big-endian length of
/// the bincode `SnapshotMeta`, the meta, then the snapshot file. One key, so
/// a reader never pairs one snapshot's meta with another's data.
const SNAPSHOT_KEY: &[u8] = b"current";

fn split_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("stored snapshot truncated")?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let meta_bytes = bytes.get(4..4 + len).ok_or("stored snapshot truncated")?;
    let meta = decode(meta_bytes).map_err(|e| format!("stored snapshot meta: {e}"))?;
    Ok((meta, &bytes[4 + len..]))
}

/// Stores `meta`/`data` as the current snapshot unless the stored one is
/// newer (a slow build finishing after a newer snapshot was installed must
/// not replace it), then flushes.
async fn store_snapshot(
    inner: &Inner,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    let sig = Some(meta.signature());
    let werr = |e: &dyn std::fmt::Display| {
        io_err(
            ErrorVerb::Write,
            ErrorSubject::Snapshot(sig.clone()),
            &std::io::Error::other(e.to_string()),
        )
    };
    let _g = inner.snapshot_lock.lock().await;
    if let Some(existing) = inner.snap.get(SNAPSHOT_KEY).map_err(|e| werr(&e))? {
        if let Ok((old, _)) = split_snapshot(&existing) {
            if old.last_log_id > meta.last_log_id {
                tracing::debug!(kept = ?old.last_log_id, dropped = ?meta.last_log_id, "kept the newer stored snapshot");
                return Ok(());
            }
        }
    }
    let meta_bytes = encode(meta).map_err(|e| werr(&e))?;
    let len = u32::try_from(meta_bytes.len()).map_err(|e| werr(&e))?;
    let mut value = Vec::with_capacity(4 + meta_bytes.len() + data.len());
    value.extend_from_slice(&len.to_be_bytes());
    value.extend_from_slice(&meta_bytes);
    value.extend_from_slice(data);
    inner
        .snap
        .insert(SNAPSHOT_KEY, value)
        .map_err(|e| werr(&e))?;
    // Flush before openraft may purge the log entries this snapshot covers.
    inner.db.flush_async().await.map_err(|e| werr(&e))?;
    Ok(())
}

/// Builds a snapshot from a state exported by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    exported: Result<(snapshot::Records, SmMeta), StorageError>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (records, meta) =
            std::mem::replace(&mut self.exported, Ok((Vec::new(), SmMeta::default())))?;
        let seq = self
            .store
            .inner
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match meta.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let snap_meta = SnapshotMeta {
            last_log_id: meta.applied,
            last_membership: meta.membership.clone(),
            snapshot_id,
        };
        let data = snapshot::encode(&records).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        store_snapshot(&self.store.inner, &snap_meta, &data).await?;
        Ok(Snapshot {
            meta: snap_meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
