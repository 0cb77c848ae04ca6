//! Domain errors: why a command was refused.
//!
//! These travel inside Raft responses (so they are serde types) and are mapped
//! to gRPC statuses in exactly one place, `api::status`.

use super::model::LeaseKey;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a lease command was refused. Nothing was changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaseError {
    /// A field is malformed. `field` is the Kubernetes-style path, e.g.
    /// `spec.leaseDurationSeconds` or `metadata.labels["a/b"]`.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The lease does not exist.
    #[error("lease {key} not found")]
    NotFound {
        /// The missing lease.
        key: LeaseKey,
    },
    /// A create found the lease already there.
    #[error("lease {key} already exists")]
    AlreadyExists {
        /// The existing lease.
        key: LeaseKey,
    },
    /// Somebody else holds the lease.
    #[error("lease {key} is held by {holder:?} for another {remaining_millis} ms")]
    Held {
        /// The lease.
        key: LeaseKey,
        /// The current holder.
        holder: String,
        /// When the holder's claim lapses (renewTime + duration).
        expire_time: Timestamp,
        /// Milliseconds until another holder can be granted the lease (this can
        /// exceed `expire_time` after a leader change; see ARCHITECTURE.md).
        remaining_millis: i64,
    },
    /// The caller no longer holds the lease (renew or release by a non-holder,
    /// with a stale token, or after expiry).
    #[error("lease {key} lost: {reason}")]
    Lost {
        /// The lease.
        key: LeaseKey,
        /// Why.
        reason: LostReason,
    },
    /// An `Expire` found the tenure still live (renewed meanwhile) or
    /// already marked expired. Internal: clients never send `Expire`.
    #[error("lease {key} has not expired")]
    NotExpired {
        /// The lease.
        key: LeaseKey,
    },
    /// The lease was deleted while held, and its tenure could still be
    /// live: it cannot be created again, by anyone, before that tenure
    /// could have lapsed (see `apply`, "Tombstones"). Clients treat it as
    /// `Held`: wait `remaining_millis` and try again.
    #[error(
        "lease {key} was deleted while held by {holder:?}; it can be created again in \
         {remaining_millis} ms, once that tenure could have lapsed"
    )]
    Tombstoned {
        /// The lease.
        key: LeaseKey,
        /// The holder when it was deleted.
        holder: String,
        /// When that holder's claim lapses (renewTime + duration).
        expire_time: Timestamp,
        /// Milliseconds until the lease can be created again.
        remaining_millis: i64,
    },
    /// A uid precondition failed: the caller named another incarnation of
    /// the lease (deleted and created again since), or a uid for a lease
    /// that does not exist.
    #[error(
        "conflict on lease {key}: precondition failed: uid in precondition: {expected}, \
         uid in object meta: {actual}"
    )]
    UidMismatch {
        /// The lease.
        key: LeaseKey,
        /// The uid the caller sent.
        expected: String,
        /// The stored lease's uid (empty when there is none).
        actual: String,
    },
    /// An optimistic-concurrency precondition failed.
    #[error("conflict on lease {key}: expected resourceVersion {expected}, found {actual}")]
    Conflict {
        /// The lease.
        key: LeaseKey,
        /// The resourceVersion the caller sent.
        expected: u64,
        /// The stored resourceVersion.
        actual: u64,
    },
}

/// Why a Renew or Release was refused as "lease lost".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LostReason {
    /// The lease has no holder (released, or never acquired).
    NoHolder,
    /// Another identity holds it.
    OtherHolder {
        /// The current holder.
        holder: String,
    },
    /// Same holder, but the caller's token is not the current one (the caller
    /// is acting on an earlier tenure).
    StaleToken {
        /// The token the caller sent.
        sent: u64,
        /// The current token.
        current: u64,
    },
    /// The caller's claim lapsed before the renewal.
    Expired {
        /// When it lapsed.
        expired_at: Timestamp,
    },
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::NoHolder => write!(f, "the lease has no holder"),
            LostReason::OtherHolder { holder } => write!(f, "it is now held by {holder:?}"),
            LostReason::StaleToken { sent, current } => {
                write!(
                    f,
                    "fencing token {sent} is stale (current tenure has {current})"
                )
            }
            LostReason::Expired { expired_at } => write!(f, "it expired at {expired_at}"),
        }
    }
}

impl LeaseError {
    /// Shorthand for [`LeaseError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        LeaseError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
