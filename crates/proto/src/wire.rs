//! The error details of the wire contract: every Leasehold status carries a
//! `google.rpc.ErrorInfo` in domain [`DOMAIN`] whose reason is one of
//! [`reason`] and whose metadata holds the facts a client acts on (holder,
//! remainingMillis, field, ...); INVALID_ARGUMENT also carries a
//! `google.rpc.BadRequest` naming the field. The server builds statuses with
//! [`error_status`]; clients read them with [`error_info`]. Inside a stream
//! (`RenewStream`), an error travels as a [`v1::StreamError`] message that
//! [`to_stream_error`] and [`from_stream_error`] convert losslessly.

use crate::v1;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Largest gRPC message of the client API, either direction: the server, a
/// node forwarding to the leader and every client use it (a lease is at most
/// 512 KiB, and a reply carries at most two leases or one List page).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Response metadata naming the leader (`host:port`) that served a call the
/// node it was sent to forwarded: clients that can reach it send their next
/// calls there directly, saving the hop.
pub const LEADER_HEADER: &str = "x-leasehold-leader";

/// A `Leases` client with the API's message limits.
pub fn leases_client(
    channel: tonic::transport::Channel,
) -> v1::leases_client::LeasesClient<tonic::transport::Channel> {
    v1::leases_client::LeasesClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// ErrorInfo domain of every Leasehold error.
pub const DOMAIN: &str = "leasehold.io";

/// ErrorInfo reasons.
pub mod reason {
    /// A field is invalid.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// No such lease.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The lease exists already.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// Another holder holds the lease.
    pub const LEASE_HELD: &str = "LEASE_HELD";
    /// The caller no longer holds the lease.
    pub const LEASE_LOST: &str = "LEASE_LOST";
    /// An internal expiry record found the tenure live.
    pub const NOT_EXPIRED: &str = "NOT_EXPIRED";
    /// A watch start revision is older than the retained history.
    pub const COMPACTED: &str = "COMPACTED";
    /// A watcher fell too far behind and was cut off.
    pub const WATCHER_TOO_SLOW: &str = "WATCHER_TOO_SLOW";
    /// Optimistic concurrency conflict.
    pub const CONFLICT: &str = "CONFLICT";
    /// This node is not the leader and could not forward.
    pub const NOT_LEADER: &str = "NOT_LEADER";
    /// No quorum or shutting down.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// A membership change was refused.
    pub const MEMBERSHIP: &str = "MEMBERSHIP";
    /// A write timed out after it was proposed: it may or may not apply.
    pub const OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";
    /// Local storage failed.
    pub const STORAGE: &str = "STORAGE";
    /// The caller presented no identity, or one the server does not accept
    /// (code UNAUTHENTICATED).
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller is known but no rule allows the call (code
    /// PERMISSION_DENIED; metadata `verb`, `namespace`, `name`, `user`).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// A per-node limit on concurrent streams is reached (code
    /// RESOURCE_EXHAUSTED; metadata `limit`, `what`: `watches` or
    /// `backups`). Retry later, or on another node.
    pub const TOO_MANY: &str = "TOO_MANY";
}

/// A status with Leasehold's `ErrorInfo` (`reason`, `meta`) and, when
/// `field` is given, a `BadRequest` violation (field, description).
pub fn error_status(
    code: Code,
    message: String,
    reason: &str,
    meta: &[(&str, String)],
    field: Option<(&str, &str)>,
) -> Status {
    let metadata: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    if let Some((f, d)) = field {
        details.add_bad_request_violation(f, d);
    }
    Status::with_error_details(code, message, details)
}

/// The ErrorInfo of a status (reason and metadata), if it has one from
/// Leasehold.
pub fn error_info(s: &Status) -> Option<(String, HashMap<String, String>)> {
    let d = s.get_error_details();
    let info = d.error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    Some((info.reason.clone(), info.metadata.clone()))
}

/// A status as an error inside a stream (`RenewStream`).
pub fn to_stream_error(s: &Status) -> v1::StreamError {
    let (reason, metadata) = error_info(s).unwrap_or_default();
    v1::StreamError {
        code: s.code() as i32,
        message: s.message().to_string(),
        reason,
        metadata: metadata.into_iter().collect(),
    }
}

/// The status an error inside a stream stands for, with its ErrorInfo, so
/// that clients handle it exactly as a unary call's status.
pub fn from_stream_error(e: &v1::StreamError) -> Status {
    let meta: Vec<(&str, String)> = e
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let field = e.metadata.get("field").map(String::as_str);
    error_status(
        Code::from_i32(e.code),
        e.message.clone(),
        &e.reason,
        &meta,
        field.map(|f| (f, e.message.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_round_trips_through_a_stream_error() {
        let s = error_status(
            Code::InvalidArgument,
            "spec.holderIdentity: must not be empty".into(),
            reason::INVALID_ARGUMENT,
            &[("field", "spec.holderIdentity".into())],
            Some(("spec.holderIdentity", "must not be empty")),
        );
        let back = from_stream_error(&to_stream_error(&s));
        assert_eq!(back.code(), Code::InvalidArgument);
        assert_eq!(back.message(), s.message());
        let (r, meta) = error_info(&back).expect("error info");
        assert_eq!(r, reason::INVALID_ARGUMENT);
        assert_eq!(meta["field"], "spec.holderIdentity");
        let violations = back.get_error_details();
        let bad = violations.bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "spec.holderIdentity");
    }

    #[test]
    fn a_status_from_elsewhere_has_no_leasehold_error_info() {
        let other = Status::with_error_details(
            Code::Internal,
            "x",
            ErrorDetails::with_error_info("R", "example.com", HashMap::new()),
        );
        assert!(error_info(&other).is_none());
        assert!(error_info(&Status::internal("plain")).is_none());
    }
}
