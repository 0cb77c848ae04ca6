use super::*;
use crate::api::status::from_lease_error;
use crate::lease::{LeaseError, LeaseKey, Timestamp};

fn key() -> LeaseKey {
    LeaseKey::new("default", "x")
}

#[test]
fn refusals_map_to_the_apiservers_answers() {
    let cases = [
        (
            LeaseError::invalid("spec.leaseDurationSeconds", "must be greater than 0"),
            422,
            "Invalid",
            "Lease.coordination.k8s.io \"x\" is invalid: spec.leaseDurationSeconds: Invalid \
             value: must be greater than 0",
        ),
        (
            LeaseError::Conflict {
                key: key(),
                expected: 3,
                actual: 4,
            },
            409,
            "Conflict",
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"x\": the object has \
             been modified; please apply your changes to the latest version and try again",
        ),
        (
            LeaseError::UidMismatch {
                key: key(),
                expected: "a".into(),
                actual: "b".into(),
            },
            409,
            "Conflict",
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"x\": Precondition \
             failed: UID in precondition: a, UID in object meta: b",
        ),
        (
            LeaseError::AlreadyExists { key: key() },
            409,
            "AlreadyExists",
            "leases.coordination.k8s.io \"x\" already exists",
        ),
        (
            LeaseError::NotFound { key: key() },
            404,
            "NotFound",
            "leases.coordination.k8s.io \"x\" not found",
        ),
    ];
    for (err, code, reason, message) in cases {
        let e = write_error(&from_lease_error(&err), "x");
        assert_eq!(
            (e.status.code, e.status.reason, e.status.message.as_str()),
            (code, reason, message),
            "{err:?}"
        );
    }
    // A takeover refused by the lease rules, or a create over a
    // tombstone: a Conflict, never a retryable 5xx (client-go would spin).
    for err in [
        LeaseError::Held {
            key: key(),
            holder: "a".into(),
            expire_time: Timestamp::from_micros(0),
            remaining_millis: 900,
        },
        LeaseError::Tombstoned {
            key: key(),
            holder: "a".into(),
            expire_time: Timestamp::from_micros(0),
            remaining_millis: 900,
        },
    ] {
        let e = write_error(&from_lease_error(&err), "x");
        assert_eq!((e.status.code, e.status.reason), (409, "Conflict"));
        assert!(e.status.message.contains("\"a\""), "{}", e.status.message);
        assert!(e.status.details.unwrap().retry_after_seconds.is_none());
    }
    let e = write_error(&from_lease_error(&LeaseError::invalid("uid", "bad")), "x");
    assert_eq!(e.status.details.unwrap().causes[0].field, "uid");
}

#[test]
fn generated_names_follow_the_apiserver() {
    let n = generate_name("job-");
    assert_eq!(n.len(), 4 + SUFFIX_LEN);
    assert!(n.starts_with("job-"));
    assert!(n[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
    let long = generate_name(&"a".repeat(300));
    assert_eq!(long.len(), 63);
    assert_ne!(generate_name("x-"), generate_name("x-"));
}

#[test]
fn a_json_patch_that_names_the_resource_version_is_a_precondition() {
    let yes = br#"[{"op":"test","path":"/metadata/resourceVersion","value":"5"},
                  {"op":"replace","path":"/spec/holderIdentity","value":"b"}]"#;
    assert!(json_patch_sets_resource_version(yes));
    let no = br#"[{"op":"replace","path":"/spec/holderIdentity","value":"b"}]"#;
    assert!(!json_patch_sets_resource_version(no));
    assert!(!json_patch_sets_resource_version(b"not json"));
}

#[test]
fn dry_run_and_field_manager_are_checked() {
    let q = |s: &str| Query::parse(Some(s), WRITE_PARAMS).unwrap();
    assert!(refuse_dry_run(&q("")).is_ok());
    let e = refuse_dry_run(&q("dryRun=All")).unwrap_err();
    assert_eq!(e.status.code, 400);
    assert!(e.status.message.contains("dryRun"));
    assert_eq!(
        field_manager(&q("fieldManager=kubectl")).unwrap(),
        "kubectl"
    );
    let long = format!("fieldManager={}", "m".repeat(MAX_FIELD_MANAGER_LEN + 1));
    assert!(field_manager(&q(&long)).is_err());
    assert!(field_manager(&q("fieldManager=a%0Ab")).is_err());
}
