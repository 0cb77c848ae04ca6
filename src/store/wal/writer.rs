//! The WAL's writer thread: group commit.
//!
//! Requests queue on a channel. The thread takes the first one, then every
//! other one already waiting (up to [`MAX_BATCH_BYTES`]), encodes them as
//! records into one buffer, writes it to the newest segment with one
//! `write`, calls `fdatasync` once, and only then completes every request
//! in the batch (openraft's append callback, a waiting `save_vote` or
//! `truncate`). Entries appended together, or while the previous batch was
//! syncing, share one sync: under load the cost of a sync is spread over
//! every write that arrived meanwhile.
//!
//! A failed write or sync stops the WAL for good: the batch's requests and
//! every later one fail, and openraft stops the node (an `fsync` that failed
//! may have dropped the data it was asked to flush; retrying it would
//! report success for data that is gone).

use super::record::{self, Kind};
use super::{lock, segment, Loc, SegmentInfo, Shared, CACHE_BYTES};
use crate::types::TypeConfig;
use openraft::storage::LogFlushed;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

/// A batch is closed once its records reach this size (a single larger
/// request still goes alone).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Who to tell when a request is durable.
pub enum Done {
    /// openraft's append callback.
    Flushed(LogFlushed<TypeConfig>),
    /// A waiting caller.
    Notify(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// Nobody.
    Nothing,
}

impl Done {
    fn complete(self, result: &io::Result<()>) {
        let r = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Flushed(cb) => cb.log_io_completed(r),
            Done::Notify(tx) => {
                let _ = tx.send(r);
            }
            Done::Nothing => {}
        }
    }
}

/// A request to the writer.
pub enum Op {
    /// Entries: (index, append generation, bincode).
    Append {
        /// The entries.
        entries: Vec<(u64, u64, Vec<u8>)>,
        /// Completion.
        done: Done,
    },
    /// Nothing to write but what is pending (the committed id): written
    /// without a sync if nothing else in the batch needs one.
    Wake,
    /// Any other record.
    Record {
        /// Its kind.
        kind: Kind,
        /// Its payload.
        bytes: Vec<u8>,
        /// Completion.
        done: Done,
    },
}

struct Active {
    seq: u64,
    file: Arc<File>,
    /// Where the next write goes.
    offset: u64,
}

/// Starts the writer thread.
pub fn spawn(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Op>,
    seq: u64,
    file: Arc<File>,
    offset: u64,
) -> io::Result<()> {
    let active = Active { seq, file, offset };
    std::thread::Builder::new()
        .name("leasehold-wal".into())
        .spawn(move || run(shared, rx, active))?;
    Ok(())
}

fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Op>, mut active: Active) {
    let mut buf = Vec::with_capacity(1 << 20);
    // Stops when every sender (every `Wal` clone) is gone.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut size = op_size(&batch[0]);
        while size < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    size += op_size(&op);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        if let Some(why) = lock(&shared.failed).clone() {
            let err = Err(io::Error::other(format!(
                "the WAL stopped after an I/O error: {why}"
            )));
            for op in batch {
                done_of(op).complete(&err);
            }
            continue;
        }
        let result = write_batch(&shared, &mut active, &mut buf, &mut batch);
        if let Err(e) = &result {
            tracing::error!("WAL write failed, the node stops: {e}");
            *lock(&shared.failed) = Some(e.to_string());
        }
        for op in batch {
            done_of(op).complete(&result);
        }
    }
}

fn op_size(op: &Op) -> usize {
    match op {
        Op::Append { entries, .. } => entries
            .iter()
            .map(|(_, _, b)| b.len() + record::HEADER_LEN)
            .sum(),
        Op::Record { bytes, .. } => bytes.len() + record::HEADER_LEN,
        Op::Wake => 0,
    }
}

fn done_of(op: Op) -> Done {
    match op {
        Op::Append { done, .. } | Op::Record { done, .. } => done,
        Op::Wake => Done::Nothing,
    }
}

/// Writes one batch and syncs it; records where each entry went.
fn write_batch(
    shared: &Shared,
    active: &mut Active,
    buf: &mut Vec<u8>,
    batch: &mut [Op],
) -> io::Result<()> {
    buf.clear();
    let committed = {
        let mut ix = shared.index.write().unwrap_or_else(|p| p.into_inner());
        let c = ix.committed_dirty.then_some(ix.committed);
        ix.committed_dirty = false;
        c
    };
    let mut size = batch.iter().map(op_size).sum::<usize>();
    if let Some(c) = &committed {
        size += record::HEADER_LEN + bincode::serialized_size(c).unwrap_or(0) as usize;
    }
    if active.offset > segment::HEADER_LEN && active.offset + size as u64 > shared.segment_bytes {
        rotate(shared, active)?;
    }
    // Entry locations (index, generation, loc) to publish after the sync.
    let mut placed = Vec::new();
    let mut purged = false;
    for op in batch.iter() {
        match op {
            Op::Append { entries, .. } => {
                for (index, generation, bytes) in entries {
                    let at = active.offset + buf.len() as u64;
                    record::write(buf, Kind::Entry, bytes);
                    placed.push((
                        *index,
                        *generation,
                        Loc {
                            segment: active.seq,
                            offset: at + record::HEADER_LEN as u64,
                            len: bytes.len() as u32,
                        },
                    ));
                }
            }
            Op::Record { kind, bytes, .. } => {
                purged |= *kind == Kind::Purge;
                record::write(buf, *kind, bytes);
            }
            Op::Wake => {}
        }
    }
    if buf.is_empty() && committed.is_none() {
        return Ok(());
    }
    // Only the committed id (or nothing durable) in this batch: no sync.
    let needs_sync = batch.iter().any(|op| !matches!(op, Op::Wake));
    if let Some(c) = committed {
        record::write(buf, Kind::Committed, &enc(&c)?);
    }
    (&*active.file).write_all(buf)?;
    if needs_sync && !skip_sync(shared) {
        let started = std::time::Instant::now();
        active.file.sync_data()?;
        crate::telemetry::metrics()
            .wal_fsync
            .observe(started.elapsed().as_secs_f64());
        shared.syncs.fetch_add(1, Ordering::SeqCst);
    }
    active.offset += buf.len() as u64;
    publish(shared, active.seq, &placed);
    if purged {
        remove_purged_segments(shared, active.seq)?;
    }
    Ok(())
}

/// Whether the power-loss negative control switched the sync off (never in
/// release builds).
fn skip_sync(shared: &Shared) -> bool {
    #[cfg(debug_assertions)]
    {
        shared.fault_skip_sync.load(Ordering::SeqCst)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = shared;
        false
    }
}

/// Records where the entries went, and drops the cached copies of the
/// oldest written entries past the cache budget.
fn publish(shared: &Shared, seq: u64, placed: &[(u64, u64, Loc)]) {
    let mut ix = shared.index.write().unwrap_or_else(|p| p.into_inner());
    for (index, generation, loc) in placed {
        if let Some(slot) = ix.entries.get_mut(index) {
            if slot.generation == *generation {
                slot.loc = Some(*loc);
            }
        }
    }
    if let (Some(max), Some(info)) = (
        placed.iter().map(|(i, _, _)| *i).max(),
        ix.segments.get_mut(&seq),
    ) {
        info.max_index = Some(info.max_index.map_or(max, |m| m.max(max)));
    }
    if ix.cached_bytes > CACHE_BYTES {
        let mut freed = 0;
        let over = ix.cached_bytes - CACHE_BYTES;
        let from = ix.evict_from;
        let mut next = from;
        for (i, slot) in ix.entries.range_mut(from..) {
            if freed >= over {
                break;
            }
            if slot.loc.is_none() {
                // Not written yet: neither it nor anything after it can go.
                break;
            }
            if slot.cached.take().is_some() {
                freed += slot.bytes;
            }
            next = i + 1;
        }
        ix.cached_bytes -= freed;
        ix.evict_from = next;
    }
}

fn enc<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| io::Error::other(e.to_string()))
}

/// Creates segment `seq` whose first records restate the vote, the purge
/// point and the committed id, so that every older segment can be deleted
/// as soon as its entries are purged. Returns the file and its length.
pub(super) fn create_segment(
    dir: &std::path::Path,
    seq: u64,
    ix: &super::Index,
) -> io::Result<(File, u64)> {
    let mut f = segment::create(dir, seq)?;
    let mut pre = Vec::new();
    if let Some(v) = &ix.vote {
        record::write(&mut pre, Kind::Vote, &enc(v)?);
    }
    if let Some(p) = &ix.last_purged {
        record::write(&mut pre, Kind::Purge, &enc(p)?);
    }
    record::write(&mut pre, Kind::Committed, &enc(&ix.committed)?);
    f.write_all(&pre)?;
    f.sync_data()?;
    Ok((f, segment::HEADER_LEN + pre.len() as u64))
}

/// Starts a new segment (see [`create_segment`]).
fn rotate(shared: &Shared, active: &mut Active) -> io::Result<()> {
    let seq = active.seq + 1;
    let (f, offset) = {
        let ix = shared.index.read().unwrap_or_else(|p| p.into_inner());
        create_segment(&shared.dir, seq, &ix)?
    };
    let file = Arc::new(f);
    shared
        .index
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .segments
        .insert(
            seq,
            SegmentInfo {
                file: file.clone(),
                max_index: None,
            },
        );
    *active = Active { seq, file, offset };
    Ok(())
}

/// Deletes the segments (not the newest) whose entries are all purged.
fn remove_purged_segments(shared: &Shared, newest: u64) -> io::Result<()> {
    let doomed: Vec<u64> = {
        let ix = shared.index.read().unwrap_or_else(|p| p.into_inner());
        let purged = ix.last_purged.map(|p| p.index);
        ix.segments
            .iter()
            .filter(|(seq, info)| {
                **seq < newest
                    && match (info.max_index, purged) {
                        (None, _) => true,
                        (Some(m), Some(p)) => m <= p,
                        (Some(_), None) => false,
                    }
            })
            .map(|(seq, _)| *seq)
            .collect()
    };
    if doomed.is_empty() {
        return Ok(());
    }
    for seq in &doomed {
        std::fs::remove_file(shared.dir.join(segment::file_name(*seq)))?;
    }
    File::open(&shared.dir)?.sync_all()?;
    let mut ix = shared.index.write().unwrap_or_else(|p| p.into_inner());
    for seq in doomed {
        ix.segments.remove(&seq);
    }
    Ok(())
}
