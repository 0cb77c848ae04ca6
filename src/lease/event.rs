//! Change events: what watchers receive, and what the history keeps.

use super::model::Lease;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The lease was created.
    Added,
    /// The lease changed (acquired, renewed, released, updated).
    Modified,
    /// The lease was deleted; the event carries its last state.
    Deleted,
    /// The leader recorded that the holder's claim lapsed.
    Expired,
}

/// One change, at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the change (its log index).
    pub revision: u64,
    /// The state machine time of the change.
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The lease after the change (for `Deleted`: as it was).
    pub lease: Lease,
}
