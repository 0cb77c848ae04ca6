//! Commands: the Raft log's payload, and what applying one returns.
//!
//! A [`Proposal`] is what the leader appends to the log. It carries the
//! leader's wall-clock time at proposal, so every replica applies the command
//! with the same notion of "now" (see `apply`). This is the log format, not the
//! client API: it is versioned with the store (`store::FORMAT_VERSION`).

use super::error::LeaseError;
use super::model::{Lease, LeaseKey, LeaseSpec};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Commands stamped by the leader that proposed them: one Raft log entry.
///
/// A leader groups the writes that arrive together into one proposal
/// (`raft::proposer`), so that one append, one sync and one replication
/// round carry all of them. They are applied in order, each as if it were
/// alone, all at the entry's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposing leader's clock when it proposed the commands. Replicas
    /// never substitute their own clock; the state machine keeps its time
    /// monotonic (see `state::clock`).
    pub time: Timestamp,
    /// Which clock stamped `time`: a random number the proposing process
    /// chose when it started. Stamps with the same clock id were read from
    /// one monotonic clock, so their differences are elapsed time; a leader
    /// that restarts and resumes its old term (openraft lets it) stamps with
    /// a new clock id, which starts a new epoch (see `state::clock`).
    pub clock_id: u64,
    /// What to do, in order.
    pub ops: Vec<Op>,
}

/// One client write in a [`Proposal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// What to do.
    pub command: Command,
    /// The client's idempotency key, if it sent one: a command with a key
    /// already applied within the retention window is not applied again (see
    /// `state::dedup`).
    pub request_id: Option<String>,
}

impl Proposal {
    /// A proposal of one command.
    pub fn single(
        time: Timestamp,
        clock_id: u64,
        command: Command,
        request_id: Option<String>,
    ) -> Self {
        Proposal {
            time,
            clock_id,
            ops: vec![Op {
                command,
                request_id,
            }],
        }
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ops @{}", self.ops.len(), self.time)
    }
}

/// A change to one lease. Every command touches exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create the lease if missing and grant it to `holder`, or renew it if
    /// `holder` already holds it.
    Acquire {
        /// The lease.
        key: LeaseKey,
        /// Who wants it.
        holder: String,
        /// Duration to set, seconds (> 0).
        duration_seconds: i32,
        /// Labels for a lease created by this command.
        labels: BTreeMap<String, String>,
    },
    /// Extend the current tenure.
    Renew {
        /// The lease.
        key: LeaseKey,
        /// Who claims to hold it.
        holder: String,
        /// The token of the claimed tenure.
        fencing_token: u64,
    },
    /// End the current tenure; anyone may acquire at once.
    Release {
        /// The lease.
        key: LeaseKey,
        /// Who claims to hold it.
        holder: String,
        /// The token of the claimed tenure.
        fencing_token: u64,
    },
    /// Record that the given tenure lapsed (proposed by the leader's expiry
    /// sweep, never by clients).
    Expire {
        /// The lease.
        key: LeaseKey,
        /// The holder whose claim lapsed.
        holder: String,
        /// The tenure that lapsed.
        fencing_token: u64,
    },
    /// Kubernetes-style create (resource_version 0) or compare-and-swap update.
    Put {
        /// The desired object.
        draft: LeaseDraft,
    },
    /// Delete, optionally only at an exact resourceVersion or uid. A held
    /// lease may be deleted: its tenure is remembered (a tombstone) and the
    /// lease cannot be created again before that tenure could have lapsed.
    Delete {
        /// The lease.
        key: LeaseKey,
        /// Required current resourceVersion, if any.
        resource_version: Option<u64>,
        /// Required uid (the incarnation of the lease), if any.
        uid: Option<String>,
    },
}

impl Command {
    /// The one lease this command touches.
    pub fn key(&self) -> &LeaseKey {
        match self {
            Command::Acquire { key, .. }
            | Command::Renew { key, .. }
            | Command::Release { key, .. }
            | Command::Expire { key, .. }
            | Command::Delete { key, .. } => key,
            Command::Put { draft } => &draft.key,
        }
    }
}

/// The client-writable parts of a lease, as sent in a Put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDraft {
    /// Namespace and name.
    pub key: LeaseKey,
    /// 0 to create; otherwise the resourceVersion the update is based on.
    pub resource_version: u64,
    /// When set, the stored lease's uid must be this (Kubernetes' uid
    /// precondition: an update of one incarnation never lands on a lease
    /// deleted and created again under the same name).
    pub uid: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The whole spec, as Kubernetes clients send it.
    pub spec: LeaseSpec,
}

/// What a successfully applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The lease after the command (for Delete: as it was when deleted);
    /// shared with the state, not copied.
    pub lease: std::sync::Arc<Lease>,
    /// The revision of this change (the cluster revision after it).
    pub revision: u64,
    /// The lease object was created by this command.
    pub created: bool,
    /// A new tenure began (new fencing token).
    pub newly_acquired: bool,
}

/// The state machine's reply to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// The command was applied.
    Applied(Applied),
    /// The command was refused; nothing changed.
    Refused(LeaseError),
}

/// The state machine's reply to one log entry (openraft's `R`): one
/// response per op of a proposal, none for a Raft-internal entry.
pub type EntryResponse = Vec<CommandResponse>;
