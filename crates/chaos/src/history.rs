//! The recorded history of a chaos run: every client operation with its
//! invocation and completion time on one monotonic clock, and its outcome.
//!
//! Times are nanoseconds since the run started, read from [`RunClock`]
//! (`std::time::Instant`, i.e. `CLOCK_MONOTONIC`): every worker, the fenced
//! register and the fault scheduler share that one clock, so "A completed
//! before B was invoked" is meaningful across all of them. The servers' wall
//! clocks never enter the history.
//!
//! An outcome is *definite* when the server said what happened (granted,
//! held by X, lost because Y, the lease as read, stored by a Put, deleted,
//! a stale resourceVersion). Anything else that ends a write (a timeout, a
//! broken connection, UNAVAILABLE after the request may have reached a
//! leader) is [`Outcome::Unknown`]: the write may or may not have taken
//! effect, and the checker must allow both.
//!
//! Besides the operations, a run records the deliberate reuses of request
//! ids ([`IdReuse`]): a write sent again with the id of an answered one,
//! either unchanged (it must get the first answer again) or as another
//! command (it must be refused with INVALID_ARGUMENT naming `requestId`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Nanoseconds since the start of the run, on the run's monotonic clock.
pub type Nanos = u64;

/// The one clock of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        RunClock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `t` stands for.
    pub fn instant(&self, t: Nanos) -> Instant {
        self.start + Duration::from_nanos(t)
    }
}

/// What a client asked for. Every operation names one lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// Acquire (or re-acquire) the lease for `holder`.
    Acquire {
        /// The caller's identity.
        holder: String,
        /// Lease duration requested, seconds.
        duration_seconds: i32,
    },
    /// Renew the tenure `token` of `holder`.
    Renew {
        /// The caller's identity.
        holder: String,
        /// The tenure's fencing token.
        token: u64,
    },
    /// Release the tenure `token` of `holder`.
    Release {
        /// The caller's identity.
        holder: String,
        /// The tenure's fencing token.
        token: u64,
    },
    /// Read the lease (linearizable read).
    Get,
    /// Kubernetes-style write of the whole lease: create (`base` 0) or
    /// compare-and-swap update at resourceVersion `base`, as client-go's
    /// LeaseLock does. The server stamps the times itself; the ones the
    /// client sent (from its own, skewed clock) are recorded as `skew_ms`.
    Put {
        /// `spec.holderIdentity` sent; `None` for "" (a release, as
        /// client-go releases on cancel).
        holder: Option<String>,
        /// `metadata.resourceVersion` sent: 0 creates.
        base: u64,
        /// The tenure (fencing token) the sender believed the lease was in
        /// at `base` and held itself: what a renewal or release is of. 0
        /// when it held none (create, takeover).
        tenure: u64,
        /// The labels the sender read at `base` (what a watcher's label
        /// selector saw before this change); `None` for a create.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_labels: Option<BTreeMap<String, String>>,
        /// How far the sender's clock, which stamped the `renewTime` and
        /// `acquireTime` it sent, was ahead of real time (negative: behind),
        /// ms.
        skew_ms: i64,
    },
    /// Delete the lease, at exactly resourceVersion `base` if given.
    Delete {
        /// The resourceVersion sent, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<u64>,
    },
}

impl OpKind {
    /// Whether the operation can change the lease.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get)
    }

    /// The holder identity the operation acts for, if any.
    pub fn holder(&self) -> Option<&str> {
        match self {
            OpKind::Acquire { holder, .. }
            | OpKind::Renew { holder, .. }
            | OpKind::Release { holder, .. } => Some(holder),
            OpKind::Put { holder, .. } => holder.as_deref(),
            OpKind::Get | OpKind::Delete { .. } => None,
        }
    }

    /// A short name for counts, e.g. `acquire`, `put`.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Acquire { .. } => "acquire",
            OpKind::Renew { .. } => "renew",
            OpKind::Release { .. } => "release",
            OpKind::Get => "get",
            OpKind::Put { .. } => "put",
            OpKind::Delete { .. } => "delete",
        }
    }
}

/// A lease as a Get returned it: what the model can check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Current holder; `None` when released.
    pub holder: Option<String>,
    /// The current tenure's fencing token; 0 when there is no holder.
    pub token: u64,
    /// `status.expired`: the leader recorded that the tenure lapsed.
    pub expired: bool,
}

/// Why a renew or release was refused (the server's `lostReason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Lost {
    /// The lease has no holder.
    NoHolder,
    /// Another identity holds it.
    OtherHolder {
        /// Who, as the server said.
        holder: String,
    },
    /// Same holder, another tenure.
    StaleToken {
        /// The current tenure's token, as the server said.
        current: u64,
    },
    /// The tenure lapsed (or the leader recorded its expiry).
    Expired,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Acquire succeeded with this tenure's token. `newly` is false when the
    /// caller already held a live tenure (the acquire acted as a renewal and
    /// the token is unchanged).
    Acquired {
        /// Fencing token of the tenure.
        token: u64,
        /// A new tenure started.
        newly: bool,
    },
    /// Acquire or Put refused: `holder` holds the lease, or, for a create
    /// (an acquire of a missing lease, a Put at resourceVersion 0), held it
    /// when it was deleted and that tenure could still be live (the
    /// deleted tenure's tombstone; `holder` may then be the caller). A
    /// Delete is never refused this way: it deletes held leases too.
    Held {
        /// The holder the server named.
        holder: String,
    },
    /// Renew succeeded.
    Renewed,
    /// Release succeeded.
    Released,
    /// Renew or release refused because the caller does not hold the tenure.
    Lost(Lost),
    /// Get answered with the lease.
    Read(LeaseView),
    /// Put succeeded; the lease as stored after it. Whether it started a
    /// tenure follows from the token: a tenure's token is the revision that
    /// granted it, so the Put granted one iff the token is the Put's own
    /// revision ([`Op::revision`]).
    Put {
        /// The lease after the Put.
        view: LeaseView,
        /// The Put created the lease.
        created: bool,
    },
    /// Delete succeeded; the lease as it was when deleted.
    Deleted(LeaseView),
    /// Put or Delete refused: the resourceVersion (or uid) sent was not the
    /// current one (ABORTED, reason CONFLICT).
    Conflict,
    /// Put with resourceVersion 0 refused: the lease exists.
    AlreadyExists,
    /// The lease does not exist (Get, Renew, Release, a Put update, Delete).
    NotFound,
    /// A definite failure that changed nothing (the request was refused
    /// before it could be applied, e.g. INVALID_ARGUMENT), or a read that
    /// failed (reads have no effect, so any failure of a read is definite).
    Failed {
        /// gRPC code name.
        code: String,
        /// Server or transport message.
        message: String,
    },
    /// The write may or may not have taken effect.
    Unknown {
        /// gRPC code name.
        code: String,
        /// Server or transport message.
        message: String,
    },
}

impl Outcome {
    /// Whether the outcome is ambiguous.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }

    /// Whether the operation definitely succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Acquired { .. }
                | Outcome::Renewed
                | Outcome::Released
                | Outcome::Read(_)
                | Outcome::Put { .. }
                | Outcome::Deleted(_)
        )
    }
}

/// One operation in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Index in the history, unique within a run.
    pub id: u64,
    /// The worker (client task) that issued it.
    pub worker: u32,
    /// The lease's name (all chaos leases share one namespace).
    pub lease: String,
    /// What was asked.
    #[serde(flatten)]
    pub kind: OpKind,
    /// When the call was made.
    pub invoke: Nanos,
    /// When the final answer arrived. For an [`Outcome::Unknown`] write this
    /// is when the client gave up: the effect, if any, may land later.
    pub complete: Nanos,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Attempts made with the same request id (1 = answered first time).
    /// A write retried after an ambiguous attempt is one operation whose
    /// interval covers every attempt: the cluster applies a request id at
    /// most once and answers a retry with the first application's result.
    pub attempts: u32,
    /// For a successful write: the revision of the change it made (every
    /// successful write changes the lease, at one revision: the lease's new
    /// resourceVersion, or for a Delete the revision of the deletion). For
    /// a successful read: the resourceVersion it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// For a successful write: the lease's labels after it (for a Delete:
    /// as it was), which decide what a watcher with a label selector sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Op {
    /// The operation's interval for linearizability: an unknown write may
    /// take effect at any time after its invocation, so it never completes.
    pub fn effective_complete(&self) -> Nanos {
        if self.outcome.is_unknown() && self.kind.is_write() {
            Nanos::MAX
        } else {
            self.complete
        }
    }
}

/// One answer of the cluster, reduced to what must repeat exactly when a
/// request id is reused with the same command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// gRPC code name (`Ok` for a response).
    pub code: String,
    /// The ErrorInfo reason, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The ErrorInfo metadata, sorted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The response in a canonical text form (maps sorted), or the status
    /// message.
    pub body: String,
}

impl Answer {
    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.code == "Ok"
    }
}

/// A request id deliberately reused after its call was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdReuse {
    /// The history op whose request id was reused.
    pub op: u64,
    /// The worker.
    pub worker: u32,
    /// The lease.
    pub lease: String,
    /// `true`: the same command again (a retry: must get `first` again);
    /// `false`: another command (must be refused with INVALID_ARGUMENT
    /// naming `requestId`, and change nothing). The other command is in
    /// the history as op `other_op`.
    pub same_command: bool,
    /// For `same_command == false`: the history op recording the other
    /// command and its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_op: Option<u64>,
    /// What was sent, in words.
    pub sent: String,
    /// When the reuse was sent (run clock).
    pub invoke: Nanos,
    /// When its answer arrived.
    pub complete: Nanos,
    /// The original op's answer.
    pub first: Answer,
    /// The reuse's answer; `None` when it stayed ambiguous (no verdict).
    pub second: Option<Answer>,
}

/// Wall-time helpers for reports.
pub fn secs(t: Nanos) -> f64 {
    t as f64 / 1e9
}
