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
    /// The server did not accept the caller's identity: no token or client
    /// certificate where one is required, an unknown or expired token, or a
    /// certificate from a CA it does not trust for clients. Retrying the
    /// same call cannot help.
    #[error(
        "not authenticated: {0} (check the bearer token (--token, --token-file) or the \
         client certificate (--cert, --key) and that the server trusts the CA that issued it)"
    )]
    Unauthenticated(String),
    /// The caller is authenticated but no authorization rule lets it make
    /// this call. Retrying cannot help until a rule changes.
    #[error("{}", denied_text(.user, .verb, .namespace, .name, .message))]
    Denied {
        /// Who the server took the caller for.
        user: String,
        /// The refused verb (`get`, `list`, `watch`, `create`, `update`,
        /// `delete`, ...).
        verb: String,
        /// The namespace of the call.
        namespace: String,
        /// The lease's name (empty for a list or watch).
        name: String,
        /// The server's message.
        message: String,
    },
    /// Any other status.
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),
}

/// The text of [`LeaseClientError::Denied`]: who may not do what, and where
/// to look. Falls back to the server's message when it named nothing.
fn denied_text(user: &str, verb: &str, namespace: &str, name: &str, message: &str) -> String {
    if user.is_empty() && verb.is_empty() {
        return format!(
            "permission denied: {message} (check the server's authorization rules for \
             this user and its groups)"
        );
    }
    let what = match (namespace.is_empty(), name.is_empty()) {
        (true, _) => "leases in every namespace".to_string(),
        (false, true) => format!("leases in namespace {namespace:?}"),
        (false, false) => format!("lease {namespace}/{name}"),
    };
    format!(
        "permission denied: user {user:?} may not {verb} {what} (check the server's \
         authorization rules for this user and its groups)"
    )
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
            reason::UNAUTHENTICATED => LeaseClientError::Unauthenticated(s.message().to_string()),
            reason::FORBIDDEN => LeaseClientError::Denied {
                user: get("user").unwrap_or_default(),
                verb: get("verb").unwrap_or_default(),
                namespace: get("namespace").unwrap_or_default(),
                name: get("name").unwrap_or_default(),
                message: s.message().to_string(),
            },
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
                // From a proxy, or a server that attached no ErrorInfo.
                Code::Unauthenticated => LeaseClientError::Unauthenticated(s.message().to_string()),
                Code::PermissionDenied => LeaseClientError::Denied {
                    user: String::new(),
                    verb: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    message: s.message().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_proto::wire::error_status;

    #[test]
    fn unauthenticated_is_typed_and_not_transient() {
        let s = error_status(
            Code::Unauthenticated,
            "no identity: present a client certificate or a bearer token".into(),
            reason::UNAUTHENTICATED,
            &[],
            None,
        );
        let e = LeaseClientError::from(s);
        assert!(
            matches!(e, LeaseClientError::Unauthenticated(ref m) if m.starts_with("no identity"))
        );
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains("--token") && text.contains("--cert"),
            "{text}"
        );
        // Without ErrorInfo (a proxy), by the code.
        let e = LeaseClientError::from(Status::unauthenticated("bad token"));
        assert!(matches!(e, LeaseClientError::Unauthenticated(ref m) if m == "bad token"));
    }

    #[test]
    fn forbidden_names_who_may_not_do_what() {
        let s = error_status(
            Code::PermissionDenied,
            "alice may not delete leases in ns".into(),
            reason::FORBIDDEN,
            &[
                ("verb", "delete".into()),
                ("namespace", "ns".into()),
                ("name", "a".into()),
                ("user", "alice".into()),
            ],
            None,
        );
        let e = LeaseClientError::from(s);
        match &e {
            LeaseClientError::Denied {
                user,
                verb,
                namespace,
                name,
                ..
            } => {
                assert_eq!(
                    (
                        user.as_str(),
                        verb.as_str(),
                        namespace.as_str(),
                        name.as_str()
                    ),
                    ("alice", "delete", "ns", "a")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains("\"alice\" may not delete lease ns/a"),
            "{text}"
        );
        assert!(text.contains("authorization rules"), "{text}");

        let list = error_status(
            Code::PermissionDenied,
            "no".into(),
            reason::FORBIDDEN,
            &[("verb", "list".into()), ("user", "bob".into())],
            None,
        );
        assert!(LeaseClientError::from(list)
            .to_string()
            .contains("may not list leases in every namespace"));

        let bare = LeaseClientError::from(Status::permission_denied("nope"));
        assert!(matches!(bare, LeaseClientError::Denied { .. }));
        assert!(bare.to_string().contains("permission denied: nope"));
    }
}
