//! openraft's type configuration for Leasehold.

use crate::lease::{EntryResponse, Proposal};
use std::io::Cursor;

/// A node id. Operators choose them (`--id`); they must be unique and never
/// reused for a different data directory.
pub type NodeId = u64;

/// What the Raft membership records of a member: where to reach it, and
/// which life of its data directory (`store::node_meta`) the membership
/// means. Every Raft message is addressed to that incarnation, and a node
/// refuses messages for another one, so a wiped node can never vote or
/// acknowledge as the member it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// `host:port` for peers and forwarded clients.
    pub addr: String,
    /// The incarnation of the member's data directory.
    pub incarnation: String,
}

impl Member {
    /// A member at `addr` with data directory incarnation `incarnation`.
    pub fn new(addr: impl Into<String>, incarnation: impl Into<String>) -> Self {
        Member {
            addr: addr.into(),
            incarnation: incarnation.into(),
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.addr, self.incarnation)
    }
}

openraft::declare_raft_types!(
    /// The Raft types: log entries carry a leader-stamped [`Proposal`] and
    /// applying one yields one response per op ([`EntryResponse`]).
    pub TypeConfig:
        D = Proposal,
        R = EntryResponse,
        NodeId = NodeId,
        Node = Member,
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
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// A membership configuration.
pub type Membership = openraft::Membership<NodeId, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
