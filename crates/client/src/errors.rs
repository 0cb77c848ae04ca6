//! Typed errors for programs built on the [`Client`](super::Client).
//!
//! The server reports every refusal as a gRPC status with a
//! `google.rpc.ErrorInfo` detail (see `api::status`). Code that acts on a
//! refusal (wait for the holder, stop acting as holder, retry later) should
//! not parse messages or compare status codes by hand: the same gRPC code
//! covers different situations (FAILED_PRECONDITION is both "held by someone
//! else" and "you lost it"). [`LeaseClientError`] turns a status into the
//! situation, with the facts the server attached.

use leasehold_proto::wire::{error_info, reason};
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What went wrong with a call, as far as a lease holder needs to know.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseClientError {
    /// Another holder holds the lease. `remaining` is how long, at the
    /// earliest, until the lease can be granted to someone else (it grows
    /// if the holder renews meanwhile).
    #[error("lease is held by {holder:?} for at least another {} ms", remaining.as_millis())]
    Held {
        /// The current holder's identity.
        holder: String,
        /// Time until the lease can be granted to another holder.
        remaining: Duration,
    },
    /// A renew or release was refused because the caller no longer holds the
    /// lease. Stop acting as holder at once.
    #[error("lease lost ({reason})")]
    Lost {
        /// The server's `lostReason` (`NO_HOLDER`, `OTHER_HOLDER`,
        /// `STALE_TOKEN`, `EXPIRED`), or its message when it gave none.
        reason: String,
    },
    /// A compare-and-swap (`Put`, `Delete` at a resourceVersion) lost a race
    /// with another change: read again and retry.
    #[error("conflict: the lease changed since it was read")]
    Conflict,
    /// The lease does not exist.
    #[error("lease not found")]
    NotFound,
    /// The request (or a client-side configuration) is malformed; retrying
    /// cannot help.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No endpoint could serve the call (no leader, no quorum, all
    /// unreachable). Nothing was written. Retry later.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The call ended before its outcome was known (a write that was not
    /// committed in time, or a deadline that expired in flight): it may or
    /// may not have been applied. Lease commands are safe to retry.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Any other status.
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),
}

impl LeaseClientError {
    /// Whether retrying the same call later can succeed without anything
    /// else changing (the cluster was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LeaseClientError::Unavailable(_) | LeaseClientError::OutcomeUnknown(_)
        )
    }
}

impl From<Status> for LeaseClientError {
    fn from(s: Status) -> Self {
        let info = error_info(&s);
        let (why, meta) = match &info {
            Some((r, m)) => (r.as_str(), Some(m)),
            None => ("", None),
        };
        let get = |k: &str| meta.and_then(|m| m.get(k)).cloned();
        match why {
            reason::LEASE_HELD => LeaseClientError::Held {
                holder: get("holder").unwrap_or_default(),
                remaining: Duration::from_millis(
                    get("remainingMillis")
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0),
                ),
            },
            reason::LEASE_LOST => LeaseClientError::Lost {
                reason: get("lostReason").unwrap_or_else(|| s.message().to_string()),
            },
            reason::CONFLICT => LeaseClientError::Conflict,
            reason::NOT_FOUND => LeaseClientError::NotFound,
            reason::INVALID_ARGUMENT => {
                let field = get("field").unwrap_or_default();
                LeaseClientError::Invalid {
                    reason: invalid_reason(&s, &field),
                    field,
                }
            }
            reason::NOT_LEADER | reason::UNAVAILABLE => {
                LeaseClientError::Unavailable(s.message().to_string())
            }
            reason::OUTCOME_UNKNOWN => LeaseClientError::OutcomeUnknown(s.message().to_string()),
            // No (or an unknown) ErrorInfo: judge by the code. These come
            // from the transport or the client's own deadline.
            _ => match s.code() {
                Code::NotFound => LeaseClientError::NotFound,
                Code::Aborted => LeaseClientError::Conflict,
                Code::Unavailable => LeaseClientError::Unavailable(s.message().to_string()),
                // The deadline expired while a call was in flight: the
                // server may have applied it.
                Code::DeadlineExceeded | Code::Cancelled => {
                    LeaseClientError::OutcomeUnknown(s.message().to_string())
                }
                Code::InvalidArgument => LeaseClientError::Invalid {
                    field: String::new(),
                    reason: s.message().to_string(),
                },
                _ => LeaseClientError::Other(s),
            },
        }
    }
}

/// Why `field` is invalid, without the `invalid FIELD: ` prefix the
/// server's message starts with (the Display of `Invalid` adds it).
fn invalid_reason(s: &Status, field: &str) -> String {
    let details = s.get_error_details();
    if let Some(v) = details
        .bad_request()
        .and_then(|b| b.field_violations.iter().find(|v| v.field == field))
    {
        return v.description.clone();
    }
    let msg = s.message();
    msg.strip_prefix(&format!("invalid {field}: "))
        .unwrap_or(msg)
        .to_string()
}
