//! openraft's type configuration for Leasehold.

use crate::lease::{CommandResponse, Proposal};
use std::io::Cursor;

/// A node id. Operators choose them (`--id`); they must be unique and never
/// reused for a different data directory.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft types: log entries carry a leader-stamped [`Proposal`] and
    /// applying one yields a [`CommandResponse`].
    pub TypeConfig:
        D = Proposal,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
