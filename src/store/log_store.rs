//! openraft's `RaftLogStorage` over the [`Wal`]: a thin adapter.
//!
//! Durability rule: `append` reports completion through openraft's callback
//! only after the WAL's `fdatasync` of the entries returned; `save_vote` and
//! `truncate` return only after theirs (see `store::wal`).

use super::io_err;
use super::wal::Wal;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::ops::RangeBounds;

/// The Raft log, vote and committed index. Cheap to clone (the WAL is
/// shared), which is how openraft gets its separate log readers.
#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    /// See [`LogStore::start_as_follower`].
    as_follower: bool,
}

fn err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: std::io::Error) -> StorageError {
    io_err(verb, subject, &e)
}

impl LogStore {
    pub(crate) fn new(wal: Wal) -> Self {
        LogStore {
            wal,
            as_follower: false,
        }
    }

    /// Makes `read_vote` report a committed vote as not committed, so that
    /// a restarted process starts as a follower and never resumes the
    /// leadership its previous process held.
    ///
    /// openraft restores a node whose stored vote is its own and committed
    /// as leader of the same term, without an election and without a blank
    /// entry of its own. That is unsafe after a power cut: a leader counts
    /// an entry as committed once a quorum of *followers* has synced it,
    /// before its own fdatasync returns, so its restarted process may lack
    /// an acknowledged entry that two followers hold, and would then write
    /// a different entry under the same log id (same term, leader, index),
    /// which the followers take for the one they have: the logs diverge and
    /// an acknowledged write is lost. It also made reads unsafe: the
    /// restored leader's read index is its persisted commit index, behind
    /// what it acknowledged. As a follower, the node waits for an election;
    /// the winner (itself or another) opens a new term with a blank entry,
    /// which truncates any divergent suffix and which every read waits for.
    ///
    /// Reporting the vote as uncommitted only lowers it within the same
    /// leader id: the node still refuses every vote request that is not
    /// above the leader id it voted for, and the leader of that id, if it is
    /// another node, commits it again with its first append. The stored
    /// vote is not changed.
    pub fn start_as_follower(mut self) -> Self {
        self.as_follower = true;
        self
    }

    /// The WAL (for tests and status).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Appends `entries` and waits until they are durable: what `append`
    /// does before it reports completion to openraft; public so tests can
    /// build a log without openraft's callback (which only openraft can
    /// create).
    pub async fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal
            .append(entries.into_iter().collect(), super::wal::Done::Notify(tx))
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        rx.await
            .map_err(|_| {
                err(
                    ErrorSubject::Logs,
                    ErrorVerb::Write,
                    std::io::Error::other("the WAL writer has stopped"),
                )
            })?
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Number of entries currently stored (for status and tests).
    pub fn len(&self) -> usize {
        self.wal.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.wal.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.wal
            .entries(range)
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self.wal.log_state();
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.wal
            .save_vote(vote)
            .await
            .map_err(|e| err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = self.wal.vote();
        if self.as_follower {
            return Ok(vote.map(|mut v| {
                v.committed = false;
                v
            }));
        }
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Written with the next batch; losing it only means re-learning the
        // commit index from the leader.
        self.wal.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal.committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.wal
            .append(
                entries.into_iter().collect(),
                super::wal::Done::Flushed(callback),
            )
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .truncate(log_id.index)
            .await
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .purge(log_id)
            .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
