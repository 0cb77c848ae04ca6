//! Backups over gRPC (`Cluster.Snapshot`): the leader's state, after a
//! read barrier, encoded in the snapshot format on a blocking thread and
//! streamed in chunks as it is encoded, with a sha256 at the end.
//!
//! The copy is O(1) (`StateMachineStore::backup_copy`, persistent maps)
//! and includes the request-id records, so writes go on while a backup of
//! any size streams. A reader that goes away or stops reading for
//! [`BACKUP_STALL`] ends the encoder, which frees its thread and its copy.

use crate::proto::v1 as pb;
use crate::raft::node::{Node, NodeError};
use tonic::Status;

/// Size of the data chunks of a backup stream.
const BACKUP_CHUNK: usize = 64 * 1024;
/// Chunks buffered ahead of a slow reader (the encoder then waits).
const BACKUP_AHEAD: usize = 16;
/// How long the encoder waits for a reader that stopped reading before it
/// gives the backup up (and frees its thread and its copy of the state).
const BACKUP_STALL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a backup call waits for a leader to be elected.
const BACKUP_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The stream of a backup.
pub type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

fn chunk(part: pb::snapshot_chunk::Part) -> pb::SnapshotChunk {
    pb::SnapshotChunk { part: Some(part) }
}

/// Sends what the snapshot encoder writes as `data` chunks, hashing them.
/// A reader that went away turns into a write error, which stops the
/// encoder.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<pb::SnapshotChunk, Status>>,
    rt: tokio::runtime::Handle,
    buf: Vec<u8>,
    hash: sha2::Sha256,
    /// [`BACKUP_STALL`] (shorter in tests).
    stall: std::time::Duration,
}

impl ChunkSender {
    fn send_buf(&mut self) -> std::io::Result<()> {
        use sha2::Digest;
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BACKUP_CHUNK));
        self.hash.update(&data);
        self.send(Ok(chunk(pb::snapshot_chunk::Part::Data(data))))
    }

    /// Sends one message from the encoder's blocking thread; fails if the
    /// reader went away or read nothing for `stall` ([`BACKUP_STALL`]).
    fn send(&self, m: Result<pb::SnapshotChunk, Status>) -> std::io::Result<()> {
        use tokio::sync::mpsc::error::SendTimeoutError;
        match self.rt.block_on(self.tx.send_timeout(m, self.stall)) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the backup's reader went away",
            )),
            Err(SendTimeoutError::Timeout(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the backup's reader read nothing for {} ms",
                    self.stall.as_millis()
                ),
            )),
        }
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(BACKUP_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() >= BACKUP_CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A backup of `node`'s state, which must be the leader: after a read
/// barrier (so every write acknowledged before the call is in it), an O(1)
/// copy of the state with its request-id records, encoded on a blocking
/// thread as the snapshot format, streamed as it is encoded.
pub async fn stream(
    node: &Node,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<SnapshotStream, Status> {
    let mut waited = false;
    loop {
        match node.read_barrier().await {
            Ok(()) => break,
            Err(NodeError::NotLeader { leader: None }) if !waited => {
                waited = true;
                node.wait_for_leader(BACKUP_LEADER_WAIT).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (state, applied, membership) = node.sm.backup_copy();
    let applied = applied.ok_or_else(|| {
        Status::unavailable("nothing is applied yet: the cluster has not started")
    })?;
    let info = pb::SnapshotInfo {
        revision: state.revision(),
        applied_index: applied.index,
        applied_term: applied.leader_id.term,
        cluster_id: node.meta.cluster_id().unwrap_or_default(),
        node_id: node.id,
        format_version: crate::store::FORMAT_VERSION,
        sm_time_micros: state.clock().now.as_micros(),
        leases: state.lease_count() as u64,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let meta = crate::types::SnapshotMeta {
        last_log_id: Some(applied),
        last_membership: membership,
        snapshot_id: format!("backup-{}", applied.index),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(BACKUP_AHEAD);
    tx.send(Ok(chunk(pb::snapshot_chunk::Part::Info(info))))
        .await
        .map_err(|_| Status::cancelled("the caller went away"))?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let _permit = permit;
        let mut w = ChunkSender {
            tx,
            rt,
            buf: Vec::with_capacity(BACKUP_CHUNK),
            hash: sha2::Sha256::new(),
            stall: BACKUP_STALL,
        };
        let started = std::time::Instant::now();
        let done = crate::store::snapshot::encode_into(&state, &meta, &mut w)
            .map_err(|e| e.to_string())
            .and_then(|()| w.send_buf().map_err(|e| e.to_string()));
        match done {
            Ok(()) => {
                let digest = w.hash.clone().finalize().to_vec();
                if let Err(e) = w.send(Ok(chunk(pb::snapshot_chunk::Part::Sha256(digest)))) {
                    tracing::warn!("backup stream stopped: {e}");
                    return;
                }
                crate::telemetry::metrics()
                    .snapshots
                    .with_label_values(&["backup"])
                    .inc();
                tracing::info!(
                    index = applied.index,
                    revision = state.revision(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup streamed"
                );
            }
            Err(e) => {
                tracing::warn!("backup stream stopped: {e}");
                let _ = w.send(Err(Status::internal(format!("backup failed: {e}"))));
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    /// A sender on a channel of `ahead` slots, with a short stall, on its
    /// own runtime (the encoder runs on a blocking thread, outside it, as
    /// the test's own thread is).
    fn sender(
        ahead: usize,
        stall: Duration,
    ) -> (
        tokio::runtime::Runtime,
        ChunkSender,
        tokio::sync::mpsc::Receiver<Result<pb::SnapshotChunk, Status>>,
    ) {
        use sha2::Digest;
        // Multi-threaded, as the server's: `Handle::block_on` on a
        // current-thread runtime would not drive the timer.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::mpsc::channel(ahead);
        let w = ChunkSender {
            tx,
            rt: rt.handle().clone(),
            buf: Vec::new(),
            hash: sha2::Sha256::new(),
            stall,
        };
        (rt, w, rx)
    }

    /// A reader that stops reading ends the encoder after the stall time
    /// (not before), with an error naming it: the backup then frees its
    /// thread, its copy of the state and its slot.
    #[test]
    fn a_reader_that_stops_reading_ends_the_encoder_after_the_stall() {
        let stall = Duration::from_millis(200);
        let (_rt, mut w, _rx) = sender(2, stall);
        let chunk = vec![7u8; BACKUP_CHUNK];
        // Two chunks fill the channel; nobody reads.
        w.write_all(&chunk).expect("first chunk");
        w.write_all(&chunk).expect("second chunk");
        let t = Instant::now();
        let e = w
            .write_all(&chunk)
            .expect_err("the third chunk waits, then fails");
        assert!(t.elapsed() >= stall, "gave up after {:?}", t.elapsed());
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("read nothing for 200 ms"), "{e}");
    }

    /// A reader that went away ends the encoder at its next chunk.
    #[test]
    fn a_reader_that_went_away_ends_the_encoder_at_once() {
        let (_rt, mut w, rx) = sender(2, Duration::from_secs(60));
        drop(rx);
        let t = Instant::now();
        let e = w
            .write_all(&vec![1u8; BACKUP_CHUNK])
            .expect_err("nobody reads any more");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }
}
