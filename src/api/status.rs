//! The one map from Leasehold errors to gRPC statuses.
//!
//! | error                       | code               | ErrorInfo reason  |
//! |-----------------------------|--------------------|-------------------|
//! | invalid field               | INVALID_ARGUMENT   | INVALID_ARGUMENT  |
//! | lease missing               | NOT_FOUND          | NOT_FOUND         |
//! | create of an existing lease | ALREADY_EXISTS     | ALREADY_EXISTS    |
//! | held by another holder      | FAILED_PRECONDITION| LEASE_HELD        |
//! | renew/release not holding   | FAILED_PRECONDITION| LEASE_LOST        |
//! | stale resourceVersion       | ABORTED            | CONFLICT          |
//! | no leader / no quorum       | UNAVAILABLE        | NOT_LEADER / UNAVAILABLE |
//! | membership change refused   | FAILED_PRECONDITION| MEMBERSHIP        |
//! | local storage failure       | INTERNAL           | STORAGE           |
//! | write not committed in time | DEADLINE_EXCEEDED  | OUTCOME_UNKNOWN   |
//! | no credential, bad token    | UNAUTHENTICATED    | UNAUTHENTICATED   |
//! | no rule allows the call     | PERMISSION_DENIED  | FORBIDDEN         |
//! | watch or backup cap reached | RESOURCE_EXHAUSTED | TOO_MANY          |
//! | watcher fell behind         | RESOURCE_EXHAUSTED | WATCHER_TOO_SLOW  |
//!
//! The wire side (the domain, the reasons, reading them back, statuses inside
//! streams) is `leasehold_proto::wire`, re-exported here; this module maps
//! the server's errors onto it.
//!
//! Every status carries a `google.rpc.ErrorInfo` (domain `leasehold.io`)
//! whose metadata holds the facts a client acts on (holder, remainingMillis,
//! field, ...); INVALID_ARGUMENT also carries a `google.rpc.BadRequest` naming
//! the field.

use crate::lease::{LeaseError, LostReason};
use crate::raft::node::NodeError;
use tonic::{Code, Status};

use leasehold_proto::wire::error_status as status;
pub use leasehold_proto::wire::{error_info, from_stream_error, reason, to_stream_error, DOMAIN};

/// The status of an authentication or authorization refusal: never
/// retried by clients, and raised before anything is proposed.
pub fn from_refusal(r: &crate::auth::Refusal) -> Status {
    use crate::auth::Refusal;
    match r {
        Refusal::Unauthenticated(m) => status(
            Code::Unauthenticated,
            m.clone(),
            reason::UNAUTHENTICATED,
            &[],
            None,
        ),
        Refusal::Forbidden {
            user,
            verb,
            namespace,
            name,
        } => status(
            Code::PermissionDenied,
            r.to_string(),
            reason::FORBIDDEN,
            &[
                ("user", user.clone()),
                ("verb", verb.to_string()),
                ("namespace", namespace.clone().unwrap_or_default()),
                ("name", name.clone().unwrap_or_default()),
            ],
            None,
        ),
    }
}

/// An InvalidArgument status for `field`.
pub fn invalid(field: &str, reason_text: &str) -> Status {
    status(
        Code::InvalidArgument,
        format!("invalid {field}: {reason_text}"),
        reason::INVALID_ARGUMENT,
        &[("field", field.to_string())],
        Some((field, reason_text)),
    )
}

/// OUT_OF_RANGE for a watch from a compacted revision.
pub fn compacted(requested: u64, oldest: u64) -> Status {
    status(
        Code::OutOfRange,
        format!(
            "revision {requested} is older than the retained history (oldest available: {oldest}); \
             list again and watch from the list's revision + 1"
        ),
        reason::COMPACTED,
        &[
            ("requestedRevision", requested.to_string()),
            ("oldestRevision", oldest.to_string()),
        ],
        None,
    )
}

/// RESOURCE_EXHAUSTED when a per-node cap on concurrent streams (`what`:
/// `watches`, `backups`) of `limit` is reached; `message` says what to do.
pub fn too_many(what: &str, limit: usize, message: String) -> Status {
    status(
        Code::ResourceExhausted,
        message,
        reason::TOO_MANY,
        &[("what", what.to_string()), ("limit", limit.to_string())],
        None,
    )
}

/// RESOURCE_EXHAUSTED for a watcher cut off because it fell behind.
pub fn watcher_too_slow(resume_from: u64) -> Status {
    status(
        Code::ResourceExhausted,
        format!(
            "watcher too slow: it did not keep up with the changes (buffer full for {} s, or more than {} \
             batches behind); resume from revision {resume_from}",
            crate::api::limits::SLOW_WATCHER_GRACE.as_secs(),
            crate::store::state_machine::WATCH_BUFFER_BATCHES
        ),
        reason::WATCHER_TOO_SLOW,
        &[("resumeRevision", resume_from.to_string())],
        None,
    )
}

/// The status for a domain error.
pub fn from_lease_error(e: &LeaseError) -> Status {
    let msg = e.to_string();
    match e {
        LeaseError::Invalid { field, reason } => invalid(field, reason),
        LeaseError::NotFound { key } => status(
            Code::NotFound,
            msg,
            reason::NOT_FOUND,
            &[
                ("namespace", key.namespace.clone()),
                ("name", key.name.clone()),
            ],
            None,
        ),
        LeaseError::AlreadyExists { key } => status(
            Code::AlreadyExists,
            format!("{msg}; to update it, send its metadata.resourceVersion"),
            reason::ALREADY_EXISTS,
            &[
                ("namespace", key.namespace.clone()),
                ("name", key.name.clone()),
            ],
            None,
        ),
        LeaseError::Held {
            holder,
            expire_time,
            remaining_millis,
            ..
        }
        | LeaseError::Tombstoned {
            holder,
            expire_time,
            remaining_millis,
            ..
        } => status(
            Code::FailedPrecondition,
            msg,
            reason::LEASE_HELD,
            &[
                ("holder", holder.clone()),
                ("remainingMillis", remaining_millis.to_string()),
                ("expireTime", expire_time.to_micro_time()),
            ],
            None,
        ),
        LeaseError::Lost { reason: why, .. } => {
            let mut meta = vec![(
                "lostReason",
                match why {
                    LostReason::NoHolder => "NO_HOLDER",
                    LostReason::OtherHolder { .. } => "OTHER_HOLDER",
                    LostReason::StaleToken { .. } => "STALE_TOKEN",
                    LostReason::Expired { .. } => "EXPIRED",
                }
                .to_string(),
            )];
            match why {
                LostReason::OtherHolder { holder } => meta.push(("holder", holder.clone())),
                LostReason::StaleToken { current, .. } => {
                    meta.push(("currentFencingToken", current.to_string()))
                }
                LostReason::Expired { expired_at } => {
                    meta.push(("expireTime", expired_at.to_micro_time()))
                }
                LostReason::NoHolder => {}
            }
            status(
                Code::FailedPrecondition,
                msg,
                reason::LEASE_LOST,
                &meta,
                None,
            )
        }
        LeaseError::NotExpired { .. } => status(
            Code::FailedPrecondition,
            msg,
            reason::NOT_EXPIRED,
            &[],
            None,
        ),
        LeaseError::UidMismatch {
            expected, actual, ..
        } => status(
            Code::Aborted,
            msg,
            reason::CONFLICT,
            &[("expectedUid", expected.clone()), ("uid", actual.clone())],
            None,
        ),
        LeaseError::Conflict {
            expected, actual, ..
        } => status(
            Code::Aborted,
            msg,
            reason::CONFLICT,
            &[
                ("expectedResourceVersion", expected.to_string()),
                ("resourceVersion", actual.to_string()),
            ],
            None,
        ),
    }
}

/// The status for a node error.
pub fn from_node_error(e: &NodeError) -> Status {
    match e {
        NodeError::Lease(l) => from_lease_error(l),
        NodeError::NotLeader { leader } => {
            let mut meta = Vec::new();
            if let Some((id, addr)) = leader {
                meta.push(("leaderId", id.to_string()));
                meta.push(("leaderAddress", addr.clone()));
            }
            let msg = match leader {
                Some((id, addr)) => {
                    format!("this node is not the leader; the leader is node {id} at {addr}")
                }
                None => {
                    "no leader is known at the moment (election in progress or no quorum); retry"
                        .to_string()
                }
            };
            status(Code::Unavailable, msg, reason::NOT_LEADER, &meta, None)
        }
        NodeError::Unavailable(m) => {
            status(Code::Unavailable, m.clone(), reason::UNAVAILABLE, &[], None)
        }
        NodeError::Membership(m) => status(
            Code::FailedPrecondition,
            m.clone(),
            reason::MEMBERSHIP,
            &[],
            None,
        ),
        NodeError::Storage(m) => status(Code::Internal, m.clone(), reason::STORAGE, &[], None),
        NodeError::OutcomeUnknown(m) => status(
            Code::DeadlineExceeded,
            m.clone(),
            reason::OUTCOME_UNKNOWN,
            &[],
            None,
        ),
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        from_node_error(&e)
    }
}

impl From<LeaseError> for Status {
    fn from(e: LeaseError) -> Status {
        from_lease_error(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{LeaseKey, Timestamp};
    use tonic_types::StatusExt;

    #[test]
    fn held_maps_to_failed_precondition_with_holder_and_time_left() {
        let s = from_lease_error(&LeaseError::Held {
            key: LeaseKey::new("ns", "a"),
            holder: "alice".into(),
            expire_time: Timestamp::from_micros(0),
            remaining_millis: 1500,
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        let (reason, meta) = error_info(&s).expect("error info");
        assert_eq!(reason, reason::LEASE_HELD);
        assert_eq!(meta["holder"], "alice");
        assert_eq!(meta["remainingMillis"], "1500");
    }

    #[test]
    fn invalid_names_the_field_in_message_and_details() {
        let s = from_lease_error(&LeaseError::invalid("metadata.name", "must be lowercase"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("metadata.name"));
        let d = s.get_error_details();
        let br = d.bad_request().expect("bad request");
        assert_eq!(br.field_violations[0].field, "metadata.name");
    }

    #[test]
    fn lost_and_conflict_are_distinct() {
        let lost = from_lease_error(&LeaseError::Lost {
            key: LeaseKey::new("ns", "a"),
            reason: LostReason::StaleToken {
                sent: 1,
                current: 2,
            },
        });
        assert_eq!(lost.code(), Code::FailedPrecondition);
        assert_eq!(error_info(&lost).unwrap().0, reason::LEASE_LOST);
        let conflict = from_lease_error(&LeaseError::Conflict {
            key: LeaseKey::new("ns", "a"),
            expected: 1,
            actual: 2,
        });
        assert_eq!(conflict.code(), Code::Aborted);
        assert_eq!(error_info(&conflict).unwrap().0, reason::CONFLICT);
    }
}
