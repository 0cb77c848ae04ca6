//! The contract between the server's one error map (`api::status`) and the
//! Rust client's typed errors (`client::errors`): every domain error the
//! server reports arrives at the client as the error it stands for, with
//! the facts it carries (holder, time left, lost reason, field). Here and
//! not beside the client, because the client knows only the wire.

use leasehold::api::status::from_lease_error;
use leasehold::client::errors::LeaseClientError;
use leasehold::lease::{LeaseError, LeaseKey, LostReason, Timestamp};
use std::time::Duration;
use tonic::Status;

#[test]
fn held_carries_holder_and_remaining_time() {
    let s = from_lease_error(&LeaseError::Held {
        key: LeaseKey::new("ns", "a"),
        holder: "alice".into(),
        expire_time: Timestamp::from_micros(0),
        remaining_millis: 1500,
    });
    match LeaseClientError::from(s) {
        LeaseClientError::Held { holder, remaining } => {
            assert_eq!(holder, "alice");
            assert_eq!(remaining, Duration::from_millis(1500));
        }
        other => panic!("expected Held, got {other:?}"),
    }
}

#[test]
fn lost_names_the_lost_reason() {
    let s = from_lease_error(&LeaseError::Lost {
        key: LeaseKey::new("ns", "a"),
        reason: LostReason::StaleToken {
            sent: 1,
            current: 2,
        },
    });
    match LeaseClientError::from(s) {
        LeaseClientError::Lost { reason } => assert_eq!(reason, "STALE_TOKEN"),
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn conflict_not_found_and_invalid() {
    let c = from_lease_error(&LeaseError::Conflict {
        key: LeaseKey::new("ns", "a"),
        expected: 1,
        actual: 2,
    });
    assert!(matches!(
        LeaseClientError::from(c),
        LeaseClientError::Conflict
    ));
    let n = from_lease_error(&LeaseError::NotFound {
        key: LeaseKey::new("ns", "a"),
    });
    assert!(matches!(
        LeaseClientError::from(n),
        LeaseClientError::NotFound
    ));
    let i = from_lease_error(&LeaseError::invalid("metadata.name", "must be lowercase"));
    match LeaseClientError::from(i) {
        LeaseClientError::Invalid { field, reason } => {
            assert_eq!(field, "metadata.name");
            assert_eq!(reason, "must be lowercase");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn transport_failures_are_transient() {
    let u = LeaseClientError::from(Status::unavailable("connection refused"));
    assert!(matches!(u, LeaseClientError::Unavailable(_)));
    assert!(u.is_transient());
    let d = LeaseClientError::from(Status::deadline_exceeded("timeout"));
    assert!(matches!(d, LeaseClientError::OutcomeUnknown(_)));
    assert!(d.is_transient());
    let o = LeaseClientError::from(Status::internal("boom"));
    assert!(matches!(o, LeaseClientError::Other(_)));
    assert!(!o.is_transient());
}
