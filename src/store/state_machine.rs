//! openraft's `RaftStateMachine`: a thin adapter over the in-memory
//! [`State`].
//!
//! The state lives in memory and is applied entry by entry by
//! `State::apply_command` (see `state::applier`); this module feeds it the
//! log, publishes a consistent view for readers after every batch,
//! notifies watchers, and persists the state only as snapshot files
//! (`store::snapshot`). After a restart the node loads its latest snapshot
//! and openraft re-applies the committed log after it, so nothing applied
//! needs its own write: the log is the durable record.
//!
//! Readers never take a lock for the length of a read: [`StateMachineStore::view`]
//! hands out the state as of the last applied batch (persistent maps, so
//! the clone is a few reference counts), and a scan of any size runs on
//! that view while entries keep being applied.

use super::{io_err, snapshot, StoreOptions};
use crate::lease::selector::Selector;
use crate::lease::{EntryResponse, Event, Lease, LeaseKey};
use crate::state::applier::EntryPosition;
use crate::state::{ApplyOptions, Compacted, EpochLeader, ListPage, PageLimits, SmClock, State};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{broadcast, watch};

/// How many applied batches a watcher may fall behind before it is cut off.
pub const WATCH_BUFFER_BATCHES: usize = 1024;

/// What the state machine tells watchers.
#[derive(Debug, Clone)]
pub enum Notice {
    /// The events of one applied batch, in revision order.
    Events(Arc<Vec<Arc<Event>>>),
    /// A snapshot replaced the state: watchers must resume from the history.
    Reset,
}

/// The state and what openraft needs besides it.
struct Writer {
    state: State,
    applied: Option<LogId>,
    membership: StoredMembership,
}

/// The snapshot the node holds now.
#[derive(Clone)]
struct Current {
    meta: SnapshotMeta,
    path: PathBuf,
}

struct Inner {
    snapshot_dir: PathBuf,
    /// Only the apply path and snapshot install change it.
    writer: Mutex<Writer>,
    /// The state as of the last applied batch, for readers.
    view: RwLock<Arc<State>>,
    /// The last applied log index, for waiters (reads after a write).
    applied_tx: watch::Sender<u64>,
    events_tx: broadcast::Sender<Notice>,
    apply_opts: ApplyOptions,
    identity_gc_age_micros: i64,
    current: Mutex<Option<Current>>,
    snapshot_seq: std::sync::atomic::AtomicU64,
    /// A snapshot file is being written.
    snapshot_building: std::sync::atomic::AtomicBool,
    /// Serialises storing snapshots (built and installed ones race).
    snapshot_lock: tokio::sync::Mutex<()>,
}

/// The lease state machine. Cheap to clone; clones share state, which is how
/// the API layer reads it while openraft owns a copy.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; every update here
    // replaces whole values, so continuing is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts the `Expired` events of one applied entry and how late each was
/// recorded past the moment its tenure lapsed in the current epoch. Every
/// node records the same figures (it applies the same entries); a restart
/// that replays the log counts its entries again.
fn record_expiries(changes: &[Arc<Event>], epoch_start: crate::lease::Timestamp) {
    let t = crate::telemetry::metrics();
    for e in changes {
        if e.kind != crate::lease::EventKind::Expired {
            continue;
        }
        t.lease_expirations.inc();
        if let Some(lapsed) = crate::lease::apply::lapses_at(&e.lease, epoch_start) {
            let late_us = e.time.micros_since(lapsed).max(0);
            t.expiry_delay.observe(late_us as f64 / 1e6);
        }
    }
}

fn snap_err(
    verb: ErrorVerb,
    meta: Option<&SnapshotMeta>,
    e: impl std::fmt::Display,
) -> StorageError {
    io_err(
        verb,
        ErrorSubject::Snapshot(meta.map(|m| m.signature())),
        &std::io::Error::other(e.to_string()),
    )
}

impl StateMachineStore {
    /// Opens the state machine of the data directory `data_dir`: loads its
    /// latest snapshot, if any.
    pub(crate) fn open(data_dir: &Path, opts: &StoreOptions) -> anyhow::Result<Self> {
        let snapshot_dir = snapshot::dir_of(data_dir);
        let identity_gc_age_micros = opts.identity_gc_age_micros;
        let mut writer = Writer {
            state: State::new(identity_gc_age_micros),
            applied: None,
            membership: StoredMembership::default(),
        };
        let mut current = None;
        if let Some(path) = snapshot::latest(&snapshot_dir)? {
            let (meta, state) = snapshot::load(&path, identity_gc_age_micros).map_err(|e| {
                anyhow::anyhow!(
                    "snapshot {} cannot be loaded: {e}. The node cannot rebuild its state \
                     without it (the log before it may be purged): move the data directory \
                     away, start the node empty with --initial-cluster-state existing, and \
                     run `leasehold member replace` so it catches up from the leader",
                    path.display()
                )
            })?;
            writer = Writer {
                state,
                applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            current = Some(Current { meta, path });
        }
        let (applied_tx, _) = watch::channel(writer.applied.map(|l| l.index).unwrap_or(0));
        let (events_tx, _) = broadcast::channel(WATCH_BUFFER_BATCHES);
        let view = Arc::new(writer.state.reader_view());
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                snapshot_dir,
                writer: Mutex::new(writer),
                view: RwLock::new(view),
                applied_tx,
                events_tx,
                apply_opts: opts.apply_options(),
                identity_gc_age_micros,
                current: Mutex::new(current),
                snapshot_seq: Default::default(),
                snapshot_building: Default::default(),
                snapshot_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The state as of the last applied batch. Holding it holds no lock:
    /// scan it as long as needed.
    pub fn view(&self) -> Arc<State> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Request ids remembered for retries. Read from the writer's state:
    /// the published view leaves the records out.
    pub fn dedup_records(&self) -> usize {
        lock(&self.inner.writer).state.dedup_len()
    }

    fn publish(&self, state: &State) {
        let view = Arc::new(state.reader_view());
        *self.inner.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Subscribes to applied changes. Subscribe before reading history so
    /// nothing falls between the two; drop events already seen by revision.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.events_tx.subscribe()
    }

    /// The events with revision >= `from`, oldest first, at most `limit`,
    /// and the revision the read saw.
    pub fn history_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<Arc<Event>>, u64), Compacted> {
        let view = self.view();
        Ok((view.history_since(from, limit)?, view.revision()))
    }

    /// The current revision: the log index of the last change to any lease.
    pub fn revision(&self) -> u64 {
        self.view().revision()
    }

    /// The state machine clock.
    pub fn clock(&self) -> SmClock {
        self.view().clock()
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

    /// Reads one lease, with the revision of the view it was read from.
    pub fn get(&self, key: &LeaseKey) -> (Option<Arc<Lease>>, u64) {
        let view = self.view();
        (view.get(key).cloned(), view.revision())
    }

    /// Lists leases in `namespace` (all when empty) matching `selector`, in
    /// key order, starting after `after`, within `limits`. Runs on the
    /// caller's thread: callers on the async runtime with large scans use
    /// [`StateMachineStore::list_blocking`].
    pub fn list(
        &self,
        namespace: &str,
        selector: &Selector,
        after: Option<&LeaseKey>,
        limits: PageLimits,
    ) -> ListPage {
        self.view().list(namespace, selector, after, limits)
    }

    /// [`StateMachineStore::list`] on a blocking thread, so that a long scan
    /// never occupies one of the runtime's few worker threads (which serve
    /// renewals).
    pub async fn list_blocking(
        &self,
        namespace: String,
        selector: Selector,
        after: Option<LeaseKey>,
        limits: PageLimits,
    ) -> anyhow::Result<ListPage> {
        let view = self.view();
        Ok(tokio::task::spawn_blocking(move || {
            view.list(&namespace, &selector, after.as_ref(), limits)
        })
        .await?)
    }

    /// Whether a snapshot file is being written now.
    pub fn snapshot_in_progress(&self) -> bool {
        self.inner
            .snapshot_building
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of leases stored.
    pub fn lease_count(&self) -> usize {
        self.view().lease_count()
    }

    /// A copy of the state for a backup, with the log id it was applied up
    /// to and the membership at that point: taken under the writer lock,
    /// so all three describe one exact applied index. O(1) (persistent
    /// maps), so writes wait only for a few reference counts.
    ///
    /// Unlike [`StateMachineStore::view`] it includes the request-id
    /// records: a restored cluster must still answer a retried request
    /// with its first outcome rather than apply it twice.
    pub fn backup_copy(&self) -> (State, Option<LogId>, StoredMembership) {
        let w = lock(&self.inner.writer);
        (w.state.clone(), w.applied, w.membership.clone())
    }

    fn store_current(&self, meta: &SnapshotMeta, path: PathBuf) {
        let mut current = lock(&self.inner.current);
        let newer = current
            .as_ref()
            .is_none_or(|c| c.meta.last_log_id <= meta.last_log_id);
        if newer {
            *current = Some(Current {
                meta: meta.clone(),
                path,
            });
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let w = lock(&self.inner.writer);
        Ok((w.applied, w.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut events = Vec::new();
        let mut responses = Vec::new();
        let applied = {
            let mut w = lock(&self.inner.writer);
            for entry in entries {
                w.applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        w.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                    EntryPayload::Normal(proposal) => {
                        let at = EntryPosition {
                            index: entry.log_id.index,
                            leader: EpochLeader {
                                term: entry.log_id.leader_id.term,
                                node: entry.log_id.leader_id.node_id,
                            },
                        };
                        let (response, changes) =
                            w.state
                                .apply_proposal(at, &proposal, &self.inner.apply_opts);
                        record_expiries(&changes, w.state.clock().epoch_start);
                        events.extend(changes);
                        response
                    }
                };
                responses.push(response);
            }
            self.publish(&w.state);
            w.applied
        };
        if let Some(applied) = applied {
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
        // A consistent copy of one exact applied index, taken while
        // openraft holds off applying; cheap (persistent maps). Encoding
        // and writing happen in the builder, off the apply path.
        let w = lock(&self.inner.writer);
        SnapshotBuilder {
            store: self.clone(),
            state: w.state.clone(),
            applied: w.applied,
            membership: w.membership.clone(),
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
        let t = crate::telemetry::metrics();
        t.snapshots.with_label_values(&["installed"]).inc();
        t.snapshot_bytes
            .set(i64::try_from(data.len()).unwrap_or(i64::MAX));
        let inner = self.inner.clone();
        let m = meta.clone();
        // Decode (which checks the checksum and version) before anything
        // changes; then make the file durable before the state moves, so
        // a crash in between leaves the old state and log, never a state
        // without the snapshot that explains it.
        let _g = self.inner.snapshot_lock.lock().await;
        let (decoded, path) = {
            tokio::task::spawn_blocking(move || {
                let (_, state) = snapshot::decode(&data, inner.identity_gc_age_micros)
                    .map_err(|e| snap_err(ErrorVerb::Read, Some(&m), e))?;
                let path = snapshot::write_bytes(&inner.snapshot_dir, &m, &data)
                    .map_err(|e| snap_err(ErrorVerb::Write, Some(&m), e))?;
                Ok::<_, StorageError>((state, path))
            })
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, Some(meta), e))??
        };
        {
            let mut w = lock(&self.inner.writer);
            w.state = decoded;
            w.applied = meta.last_log_id;
            w.membership = meta.last_membership.clone();
            self.publish(&w.state);
        }
        self.store_current(meta, path);
        drop(_g);
        let _ = self.inner.events_tx.send(Notice::Reset);
        if let Some(applied) = meta.last_log_id {
            self.inner.applied_tx.send_replace(applied.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Held while reading, so a newer snapshot cannot remove the file.
        let _g = self.inner.snapshot_lock.lock().await;
        let Some(current) = lock(&self.inner.current).clone() else {
            return Ok(None);
        };
        let path = current.path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, Some(&current.meta), e))?
            .map_err(|e| snap_err(ErrorVerb::Read, Some(&current.meta), e))?;
        Ok(Some(Snapshot {
            meta: current.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Builds a snapshot file from a copy of the state taken by
/// `get_snapshot_builder`.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    state: State,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Writes the snapshot file. The returned `Snapshot` carries the meta
    /// and no data: openraft 0.9 uses only the meta of a built snapshot
    /// (`core::sm::worker`), and serves followers through
    /// `get_current_snapshot`, which reads the file; keeping a second copy
    /// of a large state in memory here would only cost RSS.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let seq = self
            .store
            .inner
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let inner = self.store.inner.clone();
        let state = std::mem::take(&mut self.state);
        let m = meta.clone();
        let _g = inner.snapshot_lock.lock().await;
        // A slower build finishing after a newer snapshot was installed
        // must not replace it.
        let newer_exists = lock(&inner.current)
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > meta.last_log_id);
        if !newer_exists {
            inner
                .snapshot_building
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let dir = inner.snapshot_dir.clone();
            let started = std::time::Instant::now();
            let written =
                tokio::task::spawn_blocking(move || snapshot::write_file(&dir, &state, &m)).await;
            inner
                .snapshot_building
                .store(false, std::sync::atomic::Ordering::Relaxed);
            let path = written
                .map_err(|e| snap_err(ErrorVerb::Write, Some(&meta), e))?
                .map_err(|e| snap_err(ErrorVerb::Write, Some(&meta), e))?;
            let t = crate::telemetry::metrics();
            t.snapshot_duration.observe(started.elapsed().as_secs_f64());
            t.snapshots.with_label_values(&["built"]).inc();
            if let Ok(md) = std::fs::metadata(&path) {
                t.snapshot_bytes
                    .set(i64::try_from(md.len()).unwrap_or(i64::MAX));
            }
            self.store.store_current(&meta, path);
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}
