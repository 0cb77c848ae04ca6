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
//! The state machine is not flushed on its own: the log is, and a crash only
//! loses applied-but-unflushed state that is re-applied from the log on
//! restart. Snapshots are flushed before openraft may purge the log they
//! replace.

use super::keys::{self, decode, encode};
use super::{io_err, snapshot};
use crate::lease::apply::{apply, ApplyContext, Effect};
use crate::lease::selector::Selector;
use crate::lease::{Applied, CommandResponse, Lease, LeaseKey, Timestamp};
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
use tokio::sync::watch;

/// The state machine's notion of time, persisted with the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmClock {
    /// The latest stamped time applied; never decreases.
    pub now: Timestamp,
    /// Stamped time of the first command applied from the current leader.
    pub epoch_start: Timestamp,
    /// The leader whose commands are being applied.
    pub epoch_leader: Option<CommittedLeaderId<NodeId>>,
}

/// Everything but the leases, cached in memory and persisted under `m:*`.
#[derive(Debug, Clone, Default)]
struct SmMeta {
    applied: Option<LogId>,
    membership: StoredMembership,
    clock: SmClock,
    revision: u64,
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
    pub(crate) fn open(db: sled::Db) -> anyhow::Result<Self> {
        let sm = db.open_tree("sm")?;
        let snap = db.open_tree("snapshot")?;
        let meta = load_meta(&sm)?;
        let (applied_tx, _) = watch::channel(meta.applied.map(|l| l.index).unwrap_or(0));
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                db,
                sm,
                snap,
                meta: Mutex::new(meta),
                apply_lock: RwLock::new(()),
                applied_tx,
                snapshot_seq: Default::default(),
            }),
        })
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
    })
}

fn put_meta(batch: &mut sled::Batch, meta: &SmMeta) -> Result<(), bincode::Error> {
    batch.insert(keys::SM_APPLIED, encode(&meta.applied)?);
    batch.insert(keys::SM_MEMBERSHIP, encode(&meta.membership)?);
    batch.insert(keys::SM_CLOCK, encode(&meta.clock)?);
    batch.insert(keys::SM_REVISION, encode(&meta.revision)?);
    Ok(())
}

/// Advances the clock for a command entry: time never goes back, and the
/// first command of a new leader starts a new epoch.
pub fn advance_clock(clock: &mut SmClock, stamped: Timestamp, leader: CommittedLeaderId<NodeId>) {
    clock.now = clock.now.max(stamped);
    if clock.epoch_leader != Some(leader) {
        clock.epoch_leader = Some(leader);
        clock.epoch_start = clock.now;
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
        let mut overlay: HashMap<Vec<u8>, Option<Lease>> = HashMap::new();
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
                    advance_clock(&mut meta.clock, proposal.time, entry.log_id.leader_id);
                    let ctx = ApplyContext {
                        revision: entry.log_id.index,
                        now: meta.clock.now,
                        epoch_start: meta.clock.epoch_start,
                    };
                    let k = keys::lease_key(proposal.command.key());
                    let current = match overlay.get(&k) {
                        Some(l) => l.clone(),
                        None => self.read_lease(&k)?,
                    };
                    match apply(&proposal.command, current.as_ref(), &ctx) {
                        Ok(Effect::Write {
                            lease,
                            created,
                            newly_acquired,
                        }) => {
                            meta.revision = ctx.revision;
                            overlay.insert(k, Some(lease.clone()));
                            CommandResponse::Applied(Applied {
                                lease,
                                revision: ctx.revision,
                                created,
                                newly_acquired,
                            })
                        }
                        Ok(Effect::Delete { lease }) => {
                            meta.revision = ctx.revision;
                            overlay.insert(k, None);
                            CommandResponse::Applied(Applied {
                                lease,
                                revision: ctx.revision,
                                created: false,
                                newly_acquired: false,
                            })
                        }
                        Err(e) => CommandResponse::Refused(e),
                    }
                }
            };
            responses.push(response);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in overlay {
            match v {
                Some(lease) => {
                    batch.insert(k, encode(&lease).map_err(|e| sm_err(ErrorVerb::Write, &e))?)
                }
                None => batch.remove(k),
            }
        }
        put_meta(&mut batch, &meta).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
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
        }
        if let Some(applied) = meta.applied {
            self.inner.applied_tx.send_replace(applied.index);
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
        }
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
        let Some(meta_bytes) = self.inner.snap.get(b"meta").map_err(|e| read_err(&e))? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = decode(&meta_bytes).map_err(|e| read_err(&e))?;
        let data = self
            .inner
            .snap
            .get(b"data")
            .map_err(|e| read_err(&e))?
            .ok_or_else(|| read_err(&"snapshot data missing"))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

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
    let meta_bytes = encode(meta).map_err(|e| werr(&e))?;
    let mut batch = sled::Batch::default();
    batch.insert(b"meta".as_slice(), meta_bytes);
    batch.insert(b"data".as_slice(), data);
    inner.snap.apply_batch(batch).map_err(|e| werr(&e))?;
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
