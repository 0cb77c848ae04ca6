//! The write-ahead log: the Raft log, the vote and the committed index, in
//! append-only segment files that are `fdatasync`ed before anything they
//! hold is acknowledged.
//!
//! # Layout
//! - `record.rs`: one record's bytes (length, CRC-32, kind, payload).
//! - `segment.rs`: segment files (`wal/<seq>.wal`), their header, scanning.
//! - `writer.rs`: the one thread that writes: it takes every request queued
//!   since its last write (group commit), writes them with one `write`, runs
//!   one `fdatasync`, and only then reports them done.
//! - this file: [`Wal`], the handle: recovery on open, the in-memory index of
//!   entries (recent ones cached, older ones read back from their segment),
//!   and the operations openraft needs.
//!
//! # Durability
//! An append's completion (openraft's `LogFlushed` callback) and
//! `save_vote`'s return happen strictly after the `fdatasync` of the
//! segment holding them returned (`writer.rs`); [`Wal::syncs`] counts them,
//! and `tests/it/durability.rs` traces the system calls of a node to show it.
//! A new segment's header is synced and its directory entry synced before
//! any record goes into it. `fdatasync` flushes the file's data and the
//! metadata needed to read it back (its size), and the device's write cache
//! (Linux issues a cache flush for it): the guarantee `sync_file_range`,
//! which sled 0.34 relies on, does not give.
//!
//! # Recovery
//! On open every segment is read in order and replayed: entries, then
//! truncations, purges, votes and committed indexes as they were written.
//! The newest segment may end in a batch that was being written when the
//! process or the machine stopped: a record there that is cut short or
//! fails its checksum, and everything after it, is dropped (it was never
//! acknowledged: the batch's sync had not returned) and the file is
//! truncated to the last whole record, with a warning. Damage anywhere
//! else (an older segment, or more than one batch at the end of the newest)
//! is refused with the file, the offset and what to do.

mod record;
mod segment;
mod writer;

use crate::types::{Entry, LogId, Vote};
use anyhow::{bail, Context};
use record::Kind;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
pub use writer::Done;
use writer::Op;

pub use writer::MAX_BATCH_BYTES;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Recent entries are kept in memory up to this many bytes (encoded), so
/// that replication and apply, which read what was just appended, never go
/// to disk; older entries are read back from their segment.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Where an entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    /// Offset of the payload in the file.
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Slot {
    log_id: LogId,
    /// Which append wrote it (a truncated and re-appended index is another).
    generation: u64,
    loc: Option<Loc>,
    cached: Option<Arc<Entry>>,
    bytes: usize,
}

#[derive(Debug)]
struct SegmentInfo {
    file: Arc<File>,
    /// Highest entry index written into it.
    max_index: Option<u64>,
}

/// Everything the WAL knows, in memory.
#[derive(Debug, Default)]
struct Index {
    entries: BTreeMap<u64, Slot>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Set when `committed` changed and is not yet written.
    committed_dirty: bool,
    next_generation: u64,
    cached_bytes: usize,
    /// Entries below this index hold no cached copy (where eviction
    /// resumes, so it never rescans what it already dropped).
    evict_from: u64,
    segments: BTreeMap<u64, SegmentInfo>,
}

struct Shared {
    dir: PathBuf,
    /// Target size of a segment ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    index: RwLock<Index>,
    /// Why the WAL stopped accepting writes (a failed write or sync: an
    /// fsync that failed must never be retried as if nothing happened).
    failed: Mutex<Option<String>>,
    syncs: AtomicU64,
    /// Fault injection for the power-loss negative control (debug builds
    /// only): the writer skips its `fdatasync` and completes requests after
    /// the `write` alone, as a store relying on the page cache would.
    #[cfg(debug_assertions)]
    fault_skip_sync: std::sync::atomic::AtomicBool,
    /// Held for the life of the WAL: `flock` of `<data-dir>/LOCK`.
    _lock: File,
}

/// The WAL. Cheap to clone; the writer thread stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    tx: Arc<Mutex<mpsc::Sender<Op>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// How long to wait for another holder of the data directory's lock (an
/// earlier node in the same process still shutting down) before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn lock_dir(data_dir: &Path) -> anyhow::Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "data directory {} is in use by another leasehold process",
                data_dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL of data directory `data_dir`,
    /// recovers it, and starts its writer thread.
    pub fn open(data_dir: &Path) -> anyhow::Result<Wal> {
        Self::open_with(data_dir, SEGMENT_BYTES)
    }

    /// [`Wal::open`] with another segment size target.
    pub fn open_with(data_dir: &Path, segment_bytes: u64) -> anyhow::Result<Wal> {
        let lock_file = lock_dir(data_dir)?;
        let dir = data_dir.join("wal");
        crate::store::create_dir_durably(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut index = Index::default();
        let mut active = None;
        let segments = segment::list(&dir)?;
        let newest = segments.last().map(|(seq, _)| *seq);
        for (seq, path) in &segments {
            let last = Some(*seq) == newest;
            if let Some(f) = recover_segment(&mut index, *seq, path, last)? {
                active = Some((*seq, f));
            }
        }
        let (seq, file, offset) = match active {
            Some((seq, f)) => {
                let offset = f.metadata()?.len();
                (seq, f, offset)
            }
            None => {
                let seq = newest.map(|s| s + 1).unwrap_or(1);
                let (f, offset) = writer::create_segment(&dir, seq, &index)
                    .with_context(|| format!("cannot create a WAL segment in {}", dir.display()))?;
                (seq, f, offset)
            }
        };
        let file = Arc::new(file);
        index.segments.entry(seq).or_insert(SegmentInfo {
            file: file.clone(),
            max_index: None,
        });
        check_contiguous(&index)?;
        let shared = Arc::new(Shared {
            dir,
            segment_bytes,
            index: RwLock::new(index),
            failed: Mutex::new(None),
            syncs: AtomicU64::new(0),
            #[cfg(debug_assertions)]
            fault_skip_sync: std::sync::atomic::AtomicBool::new(false),
            _lock: lock_file,
        });
        let (tx, rx) = mpsc::channel();
        writer::spawn(shared.clone(), rx, seq, file, offset)?;
        Ok(Wal {
            shared,
            tx: Arc::new(Mutex::new(tx)),
        })
    }

    fn send(&self, op: Op) -> io::Result<()> {
        if let Some(why) = lock(&self.shared.failed).clone() {
            return Err(other(format!("the WAL stopped after an I/O error: {why}")));
        }
        lock(&self.tx)
            .send(op)
            .map_err(|_| other("the WAL writer has stopped"))
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.shared.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many `fdatasync`s the writer completed. Every completion the WAL
    /// reports (an append's callback, a saved vote) comes after one.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// Fault injection (debug builds only; the chaos suite's power-loss
    /// negative control): from now on the writer acknowledges appends and
    /// votes after `write` without `fdatasync`. Never use it otherwise: an
    /// acknowledged write then lives only in the page cache.
    #[cfg(debug_assertions)]
    pub fn fault_skip_sync(&self) {
        tracing::warn!(
            "FAULT INJECTION: the WAL acknowledges writes without fdatasync \
             (--fault-skip-wal-sync); acknowledged writes are lost on power loss"
        );
        self.shared.fault_skip_sync.store(true, Ordering::SeqCst);
    }

    /// Appends `entries`: readable at once, durable when `done` is called.
    pub(crate) fn append(&self, entries: Vec<Entry>, done: Done) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(entries.len());
        {
            let mut ix = self.write_index();
            for e in entries {
                let bytes = bincode::serialize(&e).map_err(|e| other(e.to_string()))?;
                let generation = ix.next_generation;
                ix.next_generation += 1;
                let index = e.log_id.index;
                ix.cached_bytes += bytes.len();
                if let Some(old) = ix.entries.insert(
                    index,
                    Slot {
                        log_id: e.log_id,
                        generation,
                        loc: None,
                        bytes: bytes.len(),
                        cached: Some(Arc::new(e)),
                    },
                ) {
                    if old.cached.is_some() {
                        ix.cached_bytes -= old.bytes;
                    }
                }
                encoded.push((index, generation, bytes));
            }
        }
        self.send(Op::Append {
            entries: encoded,
            done,
        })
    }

    /// Saves the vote; returns once it is durable.
    pub async fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        let bytes = bincode::serialize(vote).map_err(|e| other(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Record {
            kind: Kind::Vote,
            bytes,
            done: Done::Notify(tx),
        })?;
        rx.await
            .map_err(|_| other("the WAL writer has stopped"))??;
        self.write_index().vote = Some(*vote);
        Ok(())
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote> {
        self.read_index().vote
    }

    /// Records the committed log id. It is written with the next batch, or
    /// by itself without a sync when nothing else is being written: it then
    /// survives a crash of the process, and losing it to a power cut only
    /// means learning the commit index again from the leader.
    pub fn save_committed(&self, committed: Option<LogId>) {
        let wake = {
            let mut ix = self.write_index();
            if ix.committed == committed {
                return;
            }
            ix.committed = committed;
            let wake = !ix.committed_dirty;
            ix.committed_dirty = true;
            wake
        };
        if wake {
            // One wake-up per pending value: the writer picks up the latest.
            let _ = self.send(Op::Wake);
        }
    }

    /// The committed log id as last saved.
    pub fn committed(&self) -> Option<LogId> {
        self.read_index().committed
    }

    /// Removes entries at and after `index`; returns once that is durable.
    pub async fn truncate(&self, index: u64) -> io::Result<()> {
        {
            let mut ix = self.write_index();
            let removed = ix.entries.split_off(&index);
            for s in removed.values() {
                if s.cached.is_some() {
                    ix.cached_bytes -= s.bytes;
                }
            }
            ix.evict_from = ix.evict_from.min(index);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Record {
            kind: Kind::Truncate,
            bytes: index.to_le_bytes().to_vec(),
            done: Done::Notify(tx),
        })?;
        rx.await.map_err(|_| other("the WAL writer has stopped"))?
    }

    /// Purges entries up to and including `log_id`. The record is written
    /// with the next batch; segments holding only purged entries are
    /// deleted once it is durable.
    pub fn purge(&self, log_id: LogId) -> io::Result<()> {
        let bytes = bincode::serialize(&log_id).map_err(|e| other(e.to_string()))?;
        {
            let mut ix = self.write_index();
            if ix.last_purged >= Some(log_id) {
                return Ok(());
            }
            ix.last_purged = Some(log_id);
            let keep = ix.entries.split_off(&(log_id.index + 1));
            let removed = std::mem::replace(&mut ix.entries, keep);
            for s in removed.values() {
                if s.cached.is_some() {
                    ix.cached_bytes -= s.bytes;
                }
            }
        }
        self.send(Op::Record {
            kind: Kind::Purge,
            bytes,
            done: Done::Nothing,
        })
    }

    /// The last purged log id and the last log id.
    pub fn log_state(&self) -> (Option<LogId>, Option<LogId>) {
        let ix = self.read_index();
        let last = ix
            .entries
            .values()
            .next_back()
            .map(|s| s.log_id)
            .or(ix.last_purged);
        (ix.last_purged, last)
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.read_index().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.read_index().entries.is_empty()
    }

    /// The entries in `range` that are held, in order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        // Cached entries are cloned under the lock; the others are read
        // from their segment after it is released.
        enum Got {
            Cached(Arc<Entry>),
            Disk(Loc, Arc<File>),
        }
        let got: Vec<Got> = {
            let ix = self.read_index();
            let mut out = Vec::new();
            for (i, s) in ix.entries.range(range) {
                out.push(match (&s.cached, s.loc) {
                    (Some(e), _) => Got::Cached(e.clone()),
                    (None, Some(loc)) => {
                        let f = ix
                            .segments
                            .get(&loc.segment)
                            .ok_or_else(|| other(format!("segment of entry {i} is gone")))?;
                        Got::Disk(loc, f.file.clone())
                    }
                    (None, None) => {
                        return Err(other(format!("entry {i} is neither cached nor written")))
                    }
                });
            }
            out
        };
        got.into_iter()
            .map(|g| match g {
                Got::Cached(e) => Ok(Entry::clone(&e)),
                Got::Disk(loc, f) => {
                    let mut buf = vec![0u8; loc.len as usize];
                    f.read_exact_at(&mut buf, loc.offset)?;
                    bincode::deserialize(&buf).map_err(|e| other(e.to_string()))
                }
            })
            .collect()
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// Replays one segment into `index`. Returns the file open for appending
/// if it is the newest segment.
fn recover_segment(
    index: &mut Index,
    seq: u64,
    path: &Path,
    last: bool,
) -> anyhow::Result<Option<File>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (found, tail) = segment::scan(&data, seq)
        .map_err(|e| anyhow::anyhow!("WAL segment {}: {e}", path.display()))?;
    let mut max_index = None;
    for r in &found {
        apply_record(index, seq, r, &mut max_index).with_context(|| {
            format!(
                "WAL segment {} holds an unreadable record at offset {}",
                path.display(),
                r.offset
            )
        })?;
    }
    if let segment::Tail::Damaged { at, why } = tail {
        let dropped = data.len() as u64 - at;
        if !last || dropped > writer::MAX_BATCH_BYTES as u64 + segment::HEADER_LEN {
            bail!(
                "WAL segment {} is damaged at offset {at} ({why}) with {dropped} bytes after \
                 it: this is not an interrupted write but lost or corrupted data. The node \
                 cannot trust its log: move its data directory away, start it empty with \
                 --initial-cluster-state existing, and run `leasehold member replace`",
                path.display()
            );
        }
        tracing::warn!(
            segment = %path.display(),
            offset = at,
            bytes = dropped,
            "dropping the unfinished end of the WAL ({why}): a write that was never acknowledged"
        );
        if at < segment::HEADER_LEN {
            // Created but its header never made it: the segment is empty.
            std::fs::remove_file(path)?;
            File::open(path.parent().context("segment without a directory")?)?.sync_all()?;
            return Ok(None);
        }
        let f = segment::open_append(path)?;
        f.set_len(at)?;
        f.sync_all()?;
        index.segments.insert(
            seq,
            SegmentInfo {
                file: Arc::new(f.try_clone()?),
                max_index,
            },
        );
        return Ok(Some(f));
    }
    let f = segment::open_append(path)?;
    index.segments.insert(
        seq,
        SegmentInfo {
            file: Arc::new(f.try_clone()?),
            max_index,
        },
    );
    Ok(last.then_some(f))
}

fn apply_record(
    index: &mut Index,
    seq: u64,
    r: &segment::Found<'_>,
    max_index: &mut Option<u64>,
) -> anyhow::Result<()> {
    match r.kind {
        Kind::Entry => {
            let e: Entry = bincode::deserialize(r.payload)?;
            let i = e.log_id.index;
            *max_index = Some(max_index.map_or(i, |m| m.max(i)));
            if index.last_purged.is_some_and(|p| i <= p.index) {
                return Ok(());
            }
            let generation = index.next_generation;
            index.next_generation += 1;
            index.entries.insert(
                i,
                Slot {
                    log_id: e.log_id,
                    generation,
                    loc: Some(Loc {
                        segment: seq,
                        offset: r.offset + record::HEADER_LEN as u64,
                        len: r.payload.len() as u32,
                    }),
                    cached: None,
                    bytes: r.payload.len(),
                },
            );
        }
        Kind::Vote => index.vote = Some(bincode::deserialize(r.payload)?),
        Kind::Committed => index.committed = bincode::deserialize(r.payload)?,
        Kind::Truncate => {
            let b: [u8; 8] = r.payload.try_into().context("truncate record length")?;
            index.entries.split_off(&u64::from_le_bytes(b));
        }
        Kind::Purge => {
            let id: LogId = bincode::deserialize(r.payload)?;
            if index.last_purged < Some(id) {
                index.last_purged = Some(id);
                index.entries = index.entries.split_off(&(id.index + 1));
            }
        }
    }
    Ok(())
}

/// The entries held must be one run with no hole, starting right after the
/// purge point.
fn check_contiguous(index: &Index) -> anyhow::Result<()> {
    let mut expect = index.last_purged.map(|p| p.index + 1);
    for i in index.entries.keys() {
        if let Some(e) = expect {
            if *i != e {
                bail!(
                    "the WAL has a hole: entry {e} is missing before entry {i}; the log cannot \
                     be trusted: move the data directory away, start the node empty with \
                     --initial-cluster-state existing, and run `leasehold member replace`"
                );
            }
        }
        expect = Some(i + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
