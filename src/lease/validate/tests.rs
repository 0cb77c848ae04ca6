//! Unit tests of `validate`: every field rule, each refusal naming its
//! field, and the bounds on sizes.

use super::super::command::LeaseDraft;
use super::*;

/// The field of an `Invalid` error; panics on success or another error.
fn field_of(result: Result<(), LeaseError>) -> String {
    match result {
        Err(LeaseError::Invalid { field, .. }) => field,
        other => panic!("expected LeaseError::Invalid, got {other:?}"),
    }
}

fn reason_of(result: Result<(), LeaseError>) -> String {
    match result {
        Err(LeaseError::Invalid { reason, .. }) => reason,
        other => panic!("expected LeaseError::Invalid, got {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn dns_subdomain_accepts_valid_names() {
    for ok in [
        "a",
        "0",
        "a.b-c",
        "my-lease",
        "kube-controller-manager",
        "1.2.3",
        "a-1.b-2.example.com",
    ] {
        assert_eq!(validate_dns_subdomain("f", ok), Ok(()), "{ok}");
    }
    let label63 = "a".repeat(63);
    let max = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    assert_eq!(max.len(), 253);
    assert_eq!(validate_dns_subdomain("f", &max), Ok(()));
}

#[test]
fn dns_subdomain_rejects_invalid_names() {
    for bad in [
        "", "Foo", "-a", "a-", "a..b", ".a", "a.", "a_b", "a b", "a/b", "ä", "a.-b", "a.b-",
    ] {
        assert_eq!(field_of(validate_dns_subdomain("f", bad)), "f", "{bad:?}");
    }
    let long_label = "a".repeat(64);
    assert_eq!(field_of(validate_dns_subdomain("f", &long_label)), "f");
    let too_long = format!("{}.{}", "a".repeat(63), "b".repeat(190));
    assert_eq!(too_long.len(), 254);
    assert_eq!(field_of(validate_dns_subdomain("f", &too_long)), "f");
}

#[test]
fn dns_subdomain_reason_names_the_problem_and_the_rule() {
    let reason = reason_of(validate_dns_subdomain("metadata.name", "Foo"));
    assert!(reason.contains("\"Foo\""), "{reason}");
    assert!(reason.contains("'F'"), "{reason}");
    assert!(reason.contains("RFC 1123 subdomain"), "{reason}");
    let reason = reason_of(validate_dns_subdomain("metadata.name", &"a".repeat(300)));
    assert!(reason.contains("300"), "{reason}");
    assert!(reason.len() < 600, "long values are abbreviated: {reason}");
}

#[test]
fn dns_label_rules() {
    for ok in ["a", "default", "kube-system", "0-0", &"a".repeat(63)] {
        assert_eq!(validate_dns_label("f", ok), Ok(()), "{ok}");
    }
    for bad in ["", "a.b", "Default", "-a", "a-", "a_b", &"a".repeat(64)] {
        assert_eq!(field_of(validate_dns_label("f", bad)), "f", "{bad:?}");
    }
}

#[test]
fn key_rules_and_field_paths() {
    assert_eq!(validate_key(&LeaseKey::new("default", "a.b-c")), Ok(()));
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("", "x"))),
        "metadata.namespace"
    );
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("kube.system", "x"))),
        "metadata.namespace"
    );
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("default", ""))),
        "metadata.name"
    );
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("default", "Foo"))),
        "metadata.name"
    );
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("default", "-a"))),
        "metadata.name"
    );
    let name254 = format!("{}.{}", "a".repeat(63), "b".repeat(190));
    assert_eq!(
        field_of(validate_key(&LeaseKey::new("default", name254))),
        "metadata.name"
    );
}

#[test]
fn holder_rules() {
    for ok in ["node-1", "Node 1 (primary)", "ünïcode", &"x".repeat(1024)] {
        assert_eq!(validate_holder("holder", ok), Ok(()), "{ok}");
    }
    assert_eq!(field_of(validate_holder("holder", "")), "holder");
    assert_eq!(
        field_of(validate_holder("holder", &"x".repeat(1025))),
        "holder"
    );
    // Multi-byte characters count by bytes: 513 two-byte chars = 1026 bytes.
    assert_eq!(
        field_of(validate_holder("holder", &"é".repeat(513))),
        "holder"
    );
    for bad in ["a\nb", "a\tb", "\u{0}", "x\u{7f}", "x\u{85}"] {
        assert_eq!(field_of(validate_holder("h", bad)), "h", "{bad:?}");
    }
    let reason = reason_of(validate_holder("h", "a\nb"));
    assert!(reason.contains("U+000A"), "{reason}");
}

#[test]
fn duration_rules() {
    for ok in [1, 15, 3600, MAX_LEASE_DURATION_SECONDS] {
        assert_eq!(validate_duration("d", ok), Ok(()), "{ok}");
    }
    for bad in [0, -1, i32::MIN, MAX_LEASE_DURATION_SECONDS + 1, i32::MAX] {
        assert_eq!(field_of(validate_duration("d", bad)), "d", "{bad}");
    }
    assert_eq!(MAX_LEASE_DURATION_SECONDS, 31_622_400);
}

/// A 253-character subdomain of four labels.
fn max_subdomain() -> String {
    let label63 = "p".repeat(63);
    format!("{label63}.{label63}.{label63}.{}", "q".repeat(61))
}

#[test]
fn label_key_rules() {
    for ok in [
        "app",
        "example.com/app",
        "a",
        "A",
        "my_key.with-Dashes",
        "kubernetes.io/hostname",
        "app.kubernetes.io/name",
        "0",
        &"k".repeat(63),
        &format!("{}/{}", max_subdomain(), "n".repeat(63)),
    ] {
        assert_eq!(validate_label_key("f", ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "example.com/",
        "/app",
        "a/b/c",
        "-app",
        "app-",
        "_app",
        "app.",
        "a b",
        "a=b",
        "Example.com/app",
        "exa_mple.com/app",
        "ä",
        &"k".repeat(64),
        &format!("{}/n", "p".repeat(64)),
        &format!("{}x/n", max_subdomain()),
    ] {
        assert_eq!(field_of(validate_label_key("f", bad)), "f", "{bad:?}");
    }
}

#[test]
fn label_value_rules() {
    for ok in [
        "",
        "v1",
        "a",
        "my_value",
        "12.3-beta",
        "UPPER",
        &"v".repeat(63),
    ] {
        assert_eq!(validate_label_value("f", ok), Ok(()), "{ok:?}");
    }
    for bad in ["-x", "x-", ".x", "x_", "a b", "a/b", "ü", &"v".repeat(64)] {
        assert_eq!(field_of(validate_label_value("f", bad)), "f", "{bad:?}");
    }
}

#[test]
fn labels_report_the_entry_path() {
    let ok = labels(&[("app", "web"), ("example.com/tier", ""), ("v", "1.2")]);
    assert_eq!(validate_labels("metadata.labels", &ok), Ok(()));

    let bad_value = labels(&[("app/x", "-x")]);
    assert_eq!(
        field_of(validate_labels("metadata.labels", &bad_value)),
        r#"metadata.labels["app/x"]"#
    );
    let bad_key = labels(&[("good", "v"), ("example.com/", "v")]);
    assert_eq!(
        field_of(validate_labels("metadata.labels", &bad_key)),
        r#"metadata.labels["example.com/"]"#
    );
    let bad_key = labels(&[("a/b/c", "v")]);
    assert_eq!(
        field_of(validate_labels("labels", &bad_key)),
        r#"labels["a/b/c"]"#
    );
}

/// Regression (issue 10): error fields and reasons echoed whole keys and
/// values, so a 1 MiB label key came back in the status, its metadata
/// and the logs. They quote a short prefix now.
#[test]
fn errors_quote_only_a_short_prefix_of_the_input() {
    let huge = "k".repeat(1 << 20);
    let bad = labels(&[(huge.as_str(), "v")]);
    let err = validate_labels("metadata.labels", &bad).unwrap_err();
    let LeaseError::Invalid { field, reason } = &err else {
        panic!("{err:?}");
    };
    assert!(field.len() < 200, "field is {} bytes", field.len());
    assert!(field.starts_with("metadata.labels[\"kkk"), "{field}");
    assert!(reason.len() < 1024, "reason is {} bytes", reason.len());
    assert!(reason.contains("1048576 bytes"), "{reason}");
    let holder = "h".repeat(10_000);
    let e = validate_holder("holder", &holder).unwrap_err().to_string();
    assert!(e.len() < 1024, "{} bytes", e.len());
}

#[test]
fn a_lease_larger_than_the_limit_is_refused_naming_its_largest_part() {
    let key = LeaseKey::new("ns", "a");
    let many = |n: usize, tag: &str| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("{tag}.example.com/k{i}"), "v".repeat(60)))
            .collect()
    };
    // About 100 bytes per entry.
    let small = many(100, "a");
    let big = many(8_000, "b");
    assert!(validate_lease_size(&key, ("metadata.labels", &small), None, &[]).is_ok());
    let e = validate_lease_size(
        &key,
        ("metadata.labels", &small),
        Some(("metadata.annotations", &big)),
        &[Some("holder")],
    )
    .unwrap_err();
    assert_eq!(field_of(Err(e.clone())), "metadata.annotations");
    assert!(e.to_string().contains("524288"), "{e}");
    let e = validate_lease_size(
        &key,
        ("metadata.labels", &big),
        Some(("metadata.annotations", &small)),
        &[],
    )
    .unwrap_err();
    assert_eq!(field_of(Err(e)), "metadata.labels");
    // Through validate_command too: a Put with big labels.
    let draft = LeaseDraft {
        key,
        resource_version: 0,
        uid: None,
        labels: big,
        annotations: BTreeMap::new(),
        spec: LeaseSpec::default(),
    };
    assert_eq!(
        field_of(validate_command(&Command::Put { draft })),
        "metadata.labels"
    );
}

#[test]
fn annotations_rules() {
    let ok = labels(&[
        ("note", "free text, with spaces and 'quotes' !"),
        (
            "Example.COM/Thing",
            "uppercase prefixes are allowed for annotations",
        ),
        ("empty", ""),
    ]);
    assert_eq!(validate_annotations("metadata.annotations", &ok), Ok(()));

    let bad_key = labels(&[("a/b/c", "x")]);
    assert_eq!(
        field_of(validate_annotations("metadata.annotations", &bad_key)),
        r#"metadata.annotations["a/b/c"]"#
    );

    // Exactly at the limit: key "k" (1 byte) plus a value of the rest.
    let at_limit = labels(&[("k", &"v".repeat(MAX_ANNOTATIONS_TOTAL_BYTES - 1))]);
    assert_eq!(
        validate_annotations("metadata.annotations", &at_limit),
        Ok(())
    );
    let over = labels(&[
        ("k", &"v".repeat(MAX_ANNOTATIONS_TOTAL_BYTES - 1)),
        ("x", ""),
    ]);
    assert_eq!(
        field_of(validate_annotations("metadata.annotations", &over)),
        "metadata.annotations"
    );
}

fn held_spec() -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some("node-1".to_string()),
        lease_duration_seconds: Some(15),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    }
}

#[test]
fn spec_accepts_valid_specs() {
    assert_eq!(validate_spec(&LeaseSpec::default()), Ok(()));
    assert_eq!(validate_spec(&held_spec()), Ok(()));
    let released = LeaseSpec {
        holder_identity: Some(String::new()),
        ..held_spec()
    };
    assert_eq!(validate_spec(&released), Ok(()));
    let coordinated = LeaseSpec {
        strategy: Some("OldestEmulationVersion".to_string()),
        preferred_holder: Some("node-2".to_string()),
        ..held_spec()
    };
    assert_eq!(validate_spec(&coordinated), Ok(()));
    let custom = LeaseSpec {
        strategy: Some("example.com/my-strategy".to_string()),
        ..held_spec()
    };
    assert_eq!(validate_spec(&custom), Ok(()));
    let empty_preferred = LeaseSpec {
        preferred_holder: Some(String::new()),
        ..held_spec()
    };
    assert_eq!(validate_spec(&empty_preferred), Ok(()));
}

#[test]
fn spec_rejects_each_bad_field() {
    let cases: Vec<(LeaseSpec, &str)> = vec![
        (
            LeaseSpec {
                holder_identity: Some("a\nb".to_string()),
                ..held_spec()
            },
            "spec.holderIdentity",
        ),
        (
            LeaseSpec {
                lease_duration_seconds: Some(0),
                ..held_spec()
            },
            "spec.leaseDurationSeconds",
        ),
        (
            LeaseSpec {
                lease_duration_seconds: Some(-1),
                ..held_spec()
            },
            "spec.leaseDurationSeconds",
        ),
        (
            LeaseSpec {
                lease_transitions: Some(-1),
                ..held_spec()
            },
            "spec.leaseTransitions",
        ),
        (
            LeaseSpec {
                strategy: Some("a/b/c".to_string()),
                ..held_spec()
            },
            "spec.strategy",
        ),
        (
            LeaseSpec {
                strategy: Some(String::new()),
                ..held_spec()
            },
            "spec.strategy",
        ),
        (
            LeaseSpec {
                preferred_holder: Some("node-2".to_string()),
                ..held_spec()
            },
            "spec.preferredHolder",
        ),
        (
            LeaseSpec {
                strategy: Some("OldestEmulationVersion".to_string()),
                preferred_holder: Some("bad\u{1b}holder".to_string()),
                ..held_spec()
            },
            "spec.preferredHolder",
        ),
    ];
    for (spec, field) in cases {
        assert_eq!(field_of(validate_spec(&spec)), field, "{spec:?}");
    }
    let reason = reason_of(validate_spec(&LeaseSpec {
        preferred_holder: Some("node-2".to_string()),
        ..held_spec()
    }));
    assert_eq!(reason, "may only be set when spec.strategy is set");
}

fn key() -> LeaseKey {
    LeaseKey::new("default", "my-lease")
}

fn acquire() -> Command {
    Command::Acquire {
        key: key(),
        holder: "node-1".to_string(),
        duration_seconds: 15,
        labels: labels(&[("app", "web")]),
    }
}

fn draft() -> LeaseDraft {
    LeaseDraft {
        key: key(),
        resource_version: 0,
        uid: None,
        labels: labels(&[("app", "web")]),
        annotations: labels(&[("note", "anything goes")]),
        spec: held_spec(),
    }
}

#[test]
fn command_acquire() {
    assert_eq!(validate_command(&acquire()), Ok(()));
    let Command::Acquire {
        key,
        holder,
        duration_seconds,
        labels: lbls,
    } = acquire()
    else {
        unreachable!()
    };
    let bad_key = Command::Acquire {
        key: LeaseKey::new("default", "Foo"),
        holder: holder.clone(),
        duration_seconds,
        labels: lbls.clone(),
    };
    assert_eq!(field_of(validate_command(&bad_key)), "metadata.name");
    let bad_holder = Command::Acquire {
        key: key.clone(),
        holder: String::new(),
        duration_seconds,
        labels: lbls.clone(),
    };
    assert_eq!(field_of(validate_command(&bad_holder)), "holder");
    let bad_duration = Command::Acquire {
        key: key.clone(),
        holder: holder.clone(),
        duration_seconds: 0,
        labels: lbls,
    };
    assert_eq!(
        field_of(validate_command(&bad_duration)),
        "leaseDurationSeconds"
    );
    let bad_labels = Command::Acquire {
        key,
        holder,
        duration_seconds,
        labels: labels(&[("app", "-x")]),
    };
    assert_eq!(field_of(validate_command(&bad_labels)), r#"labels["app"]"#);
}

#[test]
fn command_renew_and_release() {
    type Make = fn(LeaseKey, String, u64) -> Command;
    let renew: Make = |key, holder, fencing_token| Command::Renew {
        key,
        holder,
        fencing_token,
    };
    let release: Make = |key, holder, fencing_token| Command::Release {
        key,
        holder,
        fencing_token,
    };
    for make in [renew, release] {
        assert_eq!(validate_command(&make(key(), "node-1".into(), 7)), Ok(()));
        assert_eq!(
            field_of(validate_command(&make(key(), "node-1".into(), 0))),
            "fencingToken"
        );
        assert_eq!(
            field_of(validate_command(&make(key(), String::new(), 7))),
            "holder"
        );
        assert_eq!(
            field_of(validate_command(&make(
                LeaseKey::new("", "x"),
                "node-1".into(),
                7
            ))),
            "metadata.namespace"
        );
    }
}

#[test]
fn command_put() {
    assert_eq!(validate_command(&Command::Put { draft: draft() }), Ok(()));
    let put = |d: LeaseDraft| validate_command(&Command::Put { draft: d });

    let mut d = draft();
    d.key.name = "-a".to_string();
    assert_eq!(field_of(put(d)), "metadata.name");

    let mut d = draft();
    d.labels = labels(&[("example.com/", "v")]);
    assert_eq!(field_of(put(d)), r#"metadata.labels["example.com/"]"#);

    let mut d = draft();
    d.annotations = labels(&[("a/b/c", "v")]);
    assert_eq!(field_of(put(d)), r#"metadata.annotations["a/b/c"]"#);

    let mut d = draft();
    d.spec.lease_transitions = Some(-1);
    assert_eq!(field_of(put(d)), "spec.leaseTransitions");

    let mut d = draft();
    d.spec.preferred_holder = Some("node-2".to_string());
    assert_eq!(field_of(put(d)), "spec.preferredHolder");
}

#[test]
fn command_delete() {
    let ok = Command::Delete {
        key: key(),
        resource_version: Some(3),
        uid: Some("7f0c2a9e-5b1d-4c3a-9e8f-0123456789ab".into()),
    };
    assert_eq!(validate_command(&ok), Ok(()));
    let bad = Command::Delete {
        key: LeaseKey::new("Default", "x"),
        resource_version: None,
        uid: None,
    };
    assert_eq!(field_of(validate_command(&bad)), "metadata.namespace");
    for uid in ["with space", "tab\t", &"u".repeat(129), "ünï"] {
        let bad = Command::Delete {
            key: key(),
            resource_version: None,
            uid: Some(uid.to_string()),
        };
        assert_eq!(field_of(validate_command(&bad)), "uid", "{uid:?}");
    }
    let mut d = draft();
    d.uid = Some("a b".into());
    assert_eq!(
        field_of(validate_command(&Command::Put { draft: d })),
        "metadata.uid"
    );
}
