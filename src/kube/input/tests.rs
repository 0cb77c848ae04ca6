use super::*;
use serde_json::json;

fn field_of(e: &KubeError) -> String {
    e.status
        .details
        .as_ref()
        .and_then(|d| d.causes.first())
        .map(|c| c.field.clone())
        .unwrap_or_default()
}

fn q(s: &str) -> Query {
    Query::parse(Some(s), &["fieldValidation"]).unwrap()
}

/// What client-go's LeaseLock sends on a takeover (after a GET).
fn lease_lock_body() -> Value {
    json!({
        "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "ctrl", "namespace": "default", "uid": "u-1",
                     "resourceVersion": "42", "creationTimestamp": null},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15,
                 "acquireTime": "2026-12-02T10:00:00.000000Z",
                 "renewTime": "2026-12-02T10:00:00.000000Z", "leaseTransitions": 1},
        "status": {"fencingToken": 40, "expired": true, "whatever": [1, 2]}
    })
}

#[test]
fn a_lease_lock_update_is_read_whole() {
    let (l, warnings) = lease_input(&lease_lock_body(), FieldValidation::Strict).unwrap();
    assert!(warnings.is_empty(), "status is accepted and ignored");
    assert_eq!(l.name, "ctrl");
    assert_eq!(l.namespace, "default");
    assert_eq!(l.uid, "u-1");
    assert_eq!(l.resource_version, Some(42));
    assert_eq!(l.spec.holder_identity, "pod-b");
    assert_eq!(l.spec.lease_duration_seconds, Some(15));
    assert_eq!(l.spec.lease_transitions, Some(1));
    let p = l.to_proto("default", 42, "u-1");
    let m = p.metadata.unwrap();
    assert_eq!((m.resource_version, m.uid.as_str()), (42, "u-1"));
}

#[test]
fn field_validation_strict_warn_and_ignore() {
    let mut body = lease_lock_body();
    body["spec"]["holderIdentty"] = json!("typo");
    body["extra"] = json!(1);
    let e = lease_input(&body, FieldValidation::Strict).unwrap_err();
    assert_eq!(e.status.code, 400);
    assert!(
        e.status.message.contains(
            r#"strict decoding error: unknown field "extra", unknown field "spec.holderIdentty""#
        ),
        "{}",
        e.status.message
    );
    let (_, w) = lease_input(&body, FieldValidation::Warn).unwrap();
    assert_eq!(
        w,
        vec![
            r#"unknown field "extra""#.to_string(),
            r#"unknown field "spec.holderIdentty""#.to_string()
        ]
    );
    let (_, w) = lease_input(&body, FieldValidation::Ignore).unwrap();
    assert!(w.is_empty());
    assert_eq!(
        FieldValidation::parse(&q("")).unwrap(),
        FieldValidation::Warn
    );
    assert_eq!(
        FieldValidation::parse(&q("fieldValidation=Strict")).unwrap(),
        FieldValidation::Strict
    );
    let e = FieldValidation::parse(&q("fieldValidation=strict")).unwrap_err();
    assert_eq!(field_of(&e), "fieldValidation");
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        (
            json!({"spec": {"leaseDurationSeconds": "15"}}),
            "spec.leaseDurationSeconds",
        ),
        (
            json!({"spec": {"leaseDurationSeconds": 1.5}}),
            "spec.leaseDurationSeconds",
        ),
        (
            json!({"spec": {"leaseTransitions": 4_294_967_296i64}}),
            "spec.leaseTransitions",
        ),
        (
            json!({"spec": {"holderIdentity": 7}}),
            "spec.holderIdentity",
        ),
        (json!({"spec": []}), "spec"),
        (json!({"metadata": "x"}), "metadata"),
        (
            json!({"metadata": {"labels": {"a": 1}}}),
            "metadata.labels[\"a\"]",
        ),
        (json!({"metadata": {"labels": ["a"]}}), "metadata.labels"),
        (
            json!({"metadata": {"resourceVersion": "abc"}}),
            "metadata.resourceVersion",
        ),
        (
            json!({"metadata": {"resourceVersion": 5}}),
            "metadata.resourceVersion",
        ),
        (
            json!({"metadata": {"generation": "1"}}),
            "metadata.generation",
        ),
    ];
    for (body, field) in cases {
        let e = lease_input(&body, FieldValidation::Strict).expect_err(field);
        assert_eq!(e.status.code, 400, "{field}");
        assert_eq!(field_of(&e), field, "{body}");
    }
    // null is absence, also for map values (as Go decodes it).
    let (l, _) = lease_input(
        &json!({"metadata": {"name": "x", "labels": {"a": null}, "uid": null},
                "spec": {"leaseDurationSeconds": null}}),
        FieldValidation::Strict,
    )
    .unwrap();
    assert_eq!(l.labels.get("a").map(String::as_str), Some(""));
    assert_eq!(l.spec.lease_duration_seconds, None);
}

#[test]
fn kind_and_api_version_must_be_a_lease_when_given() {
    let e = lease_input(&json!({"kind": "ConfigMap"}), FieldValidation::Strict).unwrap_err();
    assert_eq!(e.status.code, 400);
    let e = lease_input(
        &json!({"apiVersion": "coordination.k8s.io/v1beta1"}),
        FieldValidation::Strict,
    )
    .unwrap_err();
    assert!(e
        .status
        .message
        .contains("does not match the expected API version"));
    assert!(lease_input(&json!({}), FieldValidation::Strict).is_ok());
    assert!(lease_input(&json!(null), FieldValidation::Strict).is_err());
    assert!(lease_input(&json!([1]), FieldValidation::Strict).is_err());
}

#[test]
fn owner_references_and_finalizers_are_refused_not_dropped() {
    for key in ["ownerReferences", "finalizers"] {
        let body = json!({"metadata": {"name": "x", key: [{"uid": "a"}]}});
        let e = lease_input(&body, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.status.code, 422, "{key}");
        assert_eq!(field_of(&e), format!("metadata.{key}"));
        // Empty lists are fine (kubectl round trips may carry them).
        let body = json!({"metadata": {"name": "x", key: []}});
        assert!(lease_input(&body, FieldValidation::Strict).is_ok());
    }
    // Server-owned fields are ignored.
    let body = json!({"metadata": {"name": "x", "managedFields": [{"manager": "kubectl"}],
                                  "generation": 3, "selfLink": "/x",
                                  "creationTimestamp": "2026-01-01T00:00:00Z"}});
    assert!(lease_input(&body, FieldValidation::Strict).is_ok());
}

#[test]
fn body_formats_by_content_type() {
    let with = |ct: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        BodyFormat::of(&h)
    };
    assert_eq!(BodyFormat::of(&HeaderMap::new()).unwrap(), BodyFormat::Json);
    assert_eq!(with("application/json").unwrap(), BodyFormat::Json);
    assert_eq!(
        with("application/json; charset=utf-8").unwrap(),
        BodyFormat::Json
    );
    assert_eq!(with("Application/YAML").unwrap(), BodyFormat::Yaml);
    assert_eq!(
        with("application/vnd.kubernetes.protobuf").unwrap(),
        BodyFormat::Protobuf
    );
    let e = with("text/plain").unwrap_err();
    assert_eq!(e.status.code, 415);
    assert_eq!(e.status.reason, "UnsupportedMediaType");
}

#[test]
fn bodies_decode_from_every_format() {
    let v = decode_lease(
        BodyFormat::Yaml,
        b"metadata:\n  name: x\nspec:\n  leaseDurationSeconds: 5\n",
    )
    .unwrap();
    assert_eq!(v["spec"]["leaseDurationSeconds"], 5);
    let e = decode_lease(BodyFormat::Json, b"{not json").unwrap_err();
    assert_eq!(e.status.code, 400);
    assert!(e
        .status
        .message
        .starts_with("Lease in version \"v1\" cannot be handled as a Lease"));
    let e = decode_lease(BodyFormat::Protobuf, b"{}").unwrap_err();
    assert_eq!(e.status.code, 400);
    let pb = include_bytes!("../../../tests/fixtures/k8s/coordination.k8s.io.v1.Lease.pb");
    let mut v = decode_lease(BodyFormat::Protobuf, pb).unwrap();
    // The golden object's placeholder resourceVersion is not ours...
    let e = lease_input(&v, FieldValidation::Strict).unwrap_err();
    assert_eq!(field_of(&e), "metadata.resourceVersion");
    // ...and it sets ownerReferences and finalizers: refused by name.
    v["metadata"]["resourceVersion"] = json!("3");
    let e = lease_input(&v, FieldValidation::Strict).unwrap_err();
    assert_eq!(e.status.code, 422);
    assert_eq!(field_of(&e), "metadata.ownerReferences");
}

#[tokio::test]
async fn bodies_are_bounded() {
    let big = Body::from(vec![b' '; 1025]);
    let e = read_body(big, 1024).await.unwrap_err();
    assert_eq!(e.status.code, 413);
    let ok = read_body(Body::from("{}"), 1024).await.unwrap();
    assert_eq!(&ok[..], b"{}");
}

#[test]
fn delete_options_preconditions_and_checks() {
    let o = delete_options(&json!({
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
        "preconditions": {"uid": "u", "resourceVersion": "7"}, "gracePeriodSeconds": 0
    }))
    .unwrap();
    assert_eq!(o.uid, "u");
    assert_eq!(o.resource_version, Some(7));
    assert_eq!(o.propagation_policy, "Background");
    assert_eq!(
        delete_options(&json!(null)).unwrap(),
        DeleteOptions::default()
    );
    assert_eq!(
        delete_options(&json!({"dryRun": ["All"]})).unwrap().dry_run,
        vec!["All".to_string()]
    );
    for bad in [
        json!({"kind": "Lease"}),
        json!({"preconditions": "x"}),
        json!({"preconditions": {"resourceVersion": "x"}}),
        json!({"preconditions": {"uid": 1}}),
        json!({"dryRun": "All"}),
        json!({"gracePeriodSeconds": "0"}),
        json!({"orphanDependents": "yes"}),
        json!([]),
    ] {
        let e = delete_options(&bad).expect_err(&bad.to_string());
        assert_eq!(e.status.code, 400, "{bad}");
    }
    let pb = include_bytes!("../../../tests/fixtures/k8s/core.v1.DeleteOptions.pb");
    let mut v = decode_delete_options(BodyFormat::Protobuf, pb).unwrap();
    // Its placeholder resourceVersion is not one of ours.
    let e = delete_options(&v).unwrap_err();
    assert!(
        e.status.message.contains("preconditions.resourceVersion"),
        "{}",
        e.status.message
    );
    v["preconditions"]["resourceVersion"] = json!("12");
    let o = delete_options(&v).unwrap();
    assert_eq!((o.uid.as_str(), o.resource_version), ("uidValue", Some(12)));
    assert_eq!(o.dry_run, vec!["dryRunValue".to_string()]);
}

#[test]
fn warnings_are_quoted_and_bounded() {
    let h = warning_headers(&[r#"unknown field "a""#.to_string()]);
    assert_eq!(h[0].to_str().unwrap(), r#"299 - "unknown field \"a\"""#);
    let many: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    let h = warning_headers(&many);
    assert_eq!(h.len(), MAX_WARNINGS);
    assert_eq!(
        h[MAX_WARNINGS - 1].to_str().unwrap(),
        "299 - \"31 more warnings\""
    );
}
