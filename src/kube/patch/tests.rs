use super::*;
use serde_json::json;

const T: Target<'static> = Target {
    namespace: "default",
    name: "my-job",
};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A live lease as the API shows it.
fn live() -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "my-job",
            "namespace": "default",
            "uid": "u-1",
            "resourceVersion": "7",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app": "a", "tier": "x"},
            "annotations": {LAST_APPLIED: "{\"old\":1}\n", "note": "n"}
        },
        "spec": {"holderIdentity": "worker-a", "leaseDurationSeconds": 15},
        "status": {"fencingToken": "3"}
    })
}

/// `live()` with `metadata` members added or replaced.
fn live_with(meta: Value) -> Value {
    let mut v = live();
    for (k, x) in meta.as_object().unwrap() {
        v["metadata"][k] = x.clone();
    }
    v
}

fn run(kind: PatchType, current: &Value, body: &Value) -> Result<Value, KubeError> {
    apply_patch(kind, T, Some(current), body.to_string().as_bytes())
}

fn run_raw(kind: PatchType, current: Option<&Value>, body: &str) -> Result<Value, KubeError> {
    apply_patch(kind, T, current, body.as_bytes())
}

fn smp(current: &Value, body: Value) -> Value {
    run(PatchType::StrategicMerge, current, &body).expect("strategic merge patch applies")
}

fn err(r: Result<Value, KubeError>) -> (u16, &'static str, String) {
    let Err(e) = r else {
        panic!("the patch applied");
    };
    assert_eq!(e.http.as_u16(), e.status.code);
    (e.status.code, e.status.reason, e.status.message.clone())
}

fn finalizers(v: &Value) -> Vec<&str> {
    v["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

fn owner_uids(v: &Value) -> Vec<&str> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .expect("ownerReferences")
        .iter()
        .map(|f| f["uid"].as_str().unwrap())
        .collect()
}

// ----- Content-Type -------------------------------------------------------

#[test]
fn content_types_with_parameters_and_any_case() {
    let cases = [
        ("application/json-patch+json", PatchType::Json),
        ("application/merge-patch+json", PatchType::Merge),
        (
            "application/strategic-merge-patch+json",
            PatchType::StrategicMerge,
        ),
        ("application/apply-patch+yaml", PatchType::Apply),
        (
            "application/merge-patch+json; charset=utf-8",
            PatchType::Merge,
        ),
        (
            "application/merge-patch+json ;charset=UTF-8",
            PatchType::Merge,
        ),
        (
            "Application/Strategic-Merge-Patch+JSON",
            PatchType::StrategicMerge,
        ),
        (" application/apply-patch+yaml ", PatchType::Apply),
    ];
    for (ct, want) in cases {
        assert_eq!(PatchType::from_content_type(Some(ct)), Ok(want), "{ct}");
    }
    for t in PatchType::ALL {
        assert_eq!(PatchType::from_content_type(Some(t.media_type())), Ok(t));
    }
}

#[test]
fn other_or_missing_content_types_are_415_listing_the_four() {
    for ct in [
        None,
        Some(""),
        Some("application/json"),
        Some("application/yaml"),
        Some("text/plain"),
        Some("application/apply-patch+cbor"),
        Some("application/merge-patch+json-ish"),
        Some(";application/merge-patch+json"),
    ] {
        let e = PatchType::from_content_type(ct).expect_err("refused");
        assert_eq!(e.http, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(e.status.reason, "UnsupportedMediaType");
        assert_eq!(
            e.status.message,
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/strategic-merge-patch+json, application/apply-patch+yaml"
        );
        assert!(e.status.details.is_none());
    }
}

// ----- What kubectl sends (design §9) ---------------------------------------

#[test]
fn kubectl_client_side_apply_label_change() {
    let body = json!({"metadata": {
        "annotations": {LAST_APPLIED: "{\"new\":2}\n"},
        "labels": {"app": "b"}
    }});
    let out = smp(&live(), body);
    let mut want = live();
    want["metadata"]["labels"]["app"] = json!("b");
    want["metadata"]["annotations"][LAST_APPLIED] = json!("{\"new\":2}\n");
    assert_eq!(out, want);
}

#[test]
fn kubectl_edit_changes_only_what_was_edited() {
    let body = json!({"spec": {"holderIdentity": "worker-b", "leaseDurationSeconds": 30}});
    let out = smp(&live(), body);
    let mut want = live();
    want["spec"] = json!({"holderIdentity": "worker-b", "leaseDurationSeconds": 30});
    assert_eq!(out, want);
}

#[test]
fn kubectl_label_and_unlabel_are_merge_patches() {
    let out = run(
        PatchType::Merge,
        &live(),
        &json!({"metadata": {"labels": {"env": "prod"}}}),
    )
    .unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "a", "tier": "x", "env": "prod"})
    );
    // `kubectl label lease my-job tier-`
    let out = run(
        PatchType::Merge,
        &live(),
        &json!({"metadata": {"labels": {"tier": null}}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "a"}));
    assert_eq!(out["spec"], live()["spec"]);
}

#[test]
fn kubectl_annotate_overwrite() {
    let out = run(
        PatchType::Merge,
        &live(),
        &json!({"metadata": {"annotations": {"note": "m", "new": "v"}}}),
    )
    .unwrap();
    assert_eq!(out["metadata"]["annotations"]["note"], "m");
    assert_eq!(out["metadata"]["annotations"]["new"], "v");
    assert_eq!(
        out["metadata"]["annotations"][LAST_APPLIED],
        "{\"old\":1}\n"
    );
}

#[test]
fn kubectl_server_side_apply_creates_from_its_json_manifest() {
    let manifest = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "my-job", "namespace": "default", "labels": {"app": "a"}},
        "spec": {"holderIdentity": "worker-a", "leaseDurationSeconds": 15}
    });
    let out = apply_patch(PatchType::Apply, T, None, manifest.to_string().as_bytes()).unwrap();
    assert_eq!(out, manifest);
}

// ----- JSON patch -----------------------------------------------------------

#[test]
fn json_patch_add_replace_remove_and_test() {
    let body = json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "worker-a"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "worker-b"},
        {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["a"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
        {"op": "move", "from": "/metadata/annotations/note", "path": "/metadata/annotations/moved"}
    ]);
    let out = run(PatchType::Json, &live(), &body).unwrap();
    assert_eq!(out["spec"]["holderIdentity"], "worker-b");
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "a", "env": "prod", "copy": "a"})
    );
    assert_eq!(finalizers(&out), ["a", "b"]);
    assert_eq!(out["metadata"]["annotations"]["moved"], "n");
    assert!(out["metadata"]["annotations"].get("note").is_none());
}

#[test]
fn json_patch_operation_failures_are_upstreams_generic_422() {
    let generic = "the server rejected our request due to an error in our request";
    for body in [
        json!([{"op": "test", "path": "/spec/holderIdentity", "value": "someone-else"}]),
        json!([{"op": "remove", "path": "/spec/nothing"}]),
        json!([{"op": "replace", "path": "/nothing/here", "value": 1}]),
        json!([{"op": "add", "path": "/a/b/c", "value": 1}]),
        json!([{"op": "frobnicate", "path": "/spec"}]),
        json!([{"path": "/spec"}]),
        json!([{"op": "add", "value": 1}]),
        json!([{"op": "add", "path": "no-slash", "value": 1}]),
        json!([{"op": "move", "from": "/metadata", "path": "/metadata/x"}]),
    ] {
        let e = run(PatchType::Json, &live(), &body).expect_err("fails");
        assert_eq!(e.http, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(e.status.reason, "Invalid");
        assert_eq!(e.status.message, generic);
        let cause = &e.status.details.as_ref().unwrap().causes[0];
        assert_eq!(cause.field, "patch");
        assert!(
            cause.message.starts_with("operation 0"),
            "{}",
            cause.message
        );
    }
    // A failing test stops the patch: nothing of it applies (the caller
    // gets an error, never a half-patched object).
    let body = json!([
        {"op": "replace", "path": "/spec/holderIdentity", "value": "worker-b"},
        {"op": "test", "path": "/spec/holderIdentity", "value": "worker-a"}
    ]);
    let e = run(PatchType::Json, &live(), &body).expect_err("test fails");
    assert!(e.status.details.unwrap().causes[0]
        .message
        .contains("operation 1 (test)"));
}

#[test]
fn json_patch_bodies_that_do_not_decode_are_400() {
    for (body, want) in [
        ("{\"op\": \"add\"}", "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"),
        ("\"x\"", "error decoding patch: json: cannot unmarshal string into Go value of type []handlers.jsonPatchOp"),
        ("[1]", "error decoding patch: json: cannot unmarshal number into Go value of type handlers.jsonPatchOp"),
        ("[{\"op\": 1, \"path\": \"/a\"}]", "error decoding patch: json: cannot unmarshal number into Go struct field jsonPatchOp.op of type string"),
        ("[{\"op\": \"add\", \"path\": [\"a\"]}]", "error decoding patch: json: cannot unmarshal array into Go struct field jsonPatchOp.path of type string"),
    ] {
        assert_eq!(
            err(run_raw(PatchType::Json, Some(&live()), body)),
            (400, "BadRequest", want.to_string()),
            "{body}"
        );
    }
    for body in ["", "[", "[{\"op\":\"add\",}]", "nul"] {
        let (code, reason, message) = err(run_raw(PatchType::Json, Some(&live()), body));
        assert_eq!((code, reason), (400, "BadRequest"), "{body}");
        assert!(message.starts_with("error decoding patch: "), "{message}");
    }
    // `null` and `[]` are empty patches.
    assert_eq!(run_raw(PatchType::Json, Some(&live()), "null"), Ok(live()));
    assert_eq!(run_raw(PatchType::Json, Some(&live()), "[]"), Ok(live()));
}

#[test]
fn json_patch_operation_count_is_bounded_with_a_413() {
    let op = json!({"op": "test", "path": "/kind", "value": "Lease"});
    let at_limit = Value::Array(vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]);
    assert_eq!(run(PatchType::Json, &live(), &at_limit), Ok(live()));
    let over = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
    assert_eq!(
        err(run(PatchType::Json, &live(), &over)),
        (
            413,
            "RequestEntityTooLarge",
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, \
             got 10001"
                .to_string()
        )
    );
}

#[test]
fn json_patch_copies_cannot_blow_up_the_document() {
    // Each copy doubles /spec/x: 30 of them would make a gigabyte.
    let mut ops = vec![json!({"op": "add", "path": "/spec/x", "value": ["0123456789abcdef"]})];
    for _ in 0..30 {
        ops.push(json!({"op": "copy", "from": "/spec/x", "path": "/spec/x/-"}));
    }
    let e = run(PatchType::Json, &live(), &Value::Array(ops)).expect_err("bounded");
    assert_eq!(e.http, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.status.details.unwrap().causes[0]
        .message
        .contains("accumulated size increase of copy"));
}

#[test]
fn json_patch_cannot_nest_deeper_than_the_bound() {
    // Copying /spec/x into its own deepest point doubles its depth: x is
    // a chain of `levels` maps under "y" keys, and the copy goes in as
    // the innermost map's "y".
    let mut ops = vec![json!({"op": "add", "path": "/spec/x", "value": {"y": {}}})];
    let mut levels = 1;
    for _ in 0..12 {
        let path = format!("/spec/x{}", "/y".repeat(levels + 1));
        ops.push(json!({"op": "copy", "from": "/spec/x", "path": path}));
        levels = 2 * levels + 1;
    }
    let e = run(PatchType::Json, &live(), &Value::Array(ops)).expect_err("too deep");
    assert_eq!(e.http, StatusCode::UNPROCESSABLE_ENTITY);
    let message = &e.status.details.unwrap().causes[0].message;
    assert!(message.contains("deeper than 128"), "{message}");

    // One deep add: the value fits, the place does not.
    let deep_path = "/x".repeat(MAX_DEPTH + 1);
    let body = json!([{"op": "add", "path": deep_path, "value": 1}]);
    let e = run(PatchType::Json, &live(), &body).expect_err("too deep");
    assert_eq!(e.http, StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn json_patch_that_leaves_no_object_is_422() {
    for body in [
        json!([{"op": "replace", "path": "", "value": 1}]),
        json!([{"op": "replace", "path": "/metadata", "value": "x"}]),
        json!([{"op": "replace", "path": "/metadata/name", "value": 7}]),
    ] {
        let (code, reason, _) = err(run(PatchType::Json, &live(), &body));
        assert_eq!((code, reason), (422, "Invalid"), "{body}");
    }
}

// ----- Merge patch ----------------------------------------------------------

#[test]
fn merge_patch_bodies_must_be_objects() {
    assert_eq!(
        err(run_raw(PatchType::Merge, Some(&live()), "null")),
        (400, "BadRequest", "Invalid JSON Patch".to_string())
    );
    for (body, kind) in [
        ("[]", "array"),
        ("\"x\"", "string"),
        ("1", "number"),
        ("true", "bool"),
    ] {
        assert_eq!(
            err(run_raw(PatchType::Merge, Some(&live()), body)),
            (
                400,
                "BadRequest",
                format!(
                    "error decoding patch: json: cannot unmarshal {kind} into Go value of type \
                     map[string]interface {{}}"
                )
            )
        );
    }
    let (code, _, message) = err(run_raw(PatchType::Merge, Some(&live()), "{"));
    assert_eq!(code, 400);
    assert!(message.starts_with("error decoding patch: "));
}

#[test]
fn merge_patch_replaces_lists_and_deletes_nulls() {
    let current = live_with(json!({"finalizers": ["a", "b"]}));
    let out = run(
        PatchType::Merge,
        &current,
        &json!({"metadata": {"finalizers": ["c"]}, "spec": {"leaseDurationSeconds": null}}),
    )
    .unwrap();
    assert_eq!(finalizers(&out), ["c"]);
    assert_eq!(out["spec"], json!({"holderIdentity": "worker-a"}));
}

// ----- Strategic merge patch ------------------------------------------------

#[test]
fn smp_null_deletes_and_nulls_inside_new_values_are_dropped() {
    let mut current = live();
    current["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let out = smp(
        &current,
        json!({
            "spec": {"holderIdentity": null, "nothing": null},
            "metadata": {"labels": {"a": "1", "b": null}}
        }),
    );
    assert_eq!(out["spec"], json!({"leaseDurationSeconds": 15}));
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
}

#[test]
fn smp_patch_delete_and_replace_on_maps() {
    let out = smp(
        &live(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    // On a map the live object lacks, delete adds nothing.
    let out = smp(&live(), json!({"spec": {"strategy": {"$patch": "delete"}}}));
    assert!(out["spec"].get("strategy").is_none());

    let out = smp(
        &live(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
    let out = smp(
        &live(),
        json!({"spec": {"$patch": "replace", "holderIdentity": "w"}}),
    );
    assert_eq!(out["spec"], json!({"holderIdentity": "w"}));
}

#[test]
fn smp_unknown_patch_directives_are_400() {
    for directive in [json!("merge"), json!("bogus"), json!(1)] {
        let body = json!({"metadata": {"labels": {"$patch": directive.clone()}}});
        let (code, reason, message) = err(run(PatchType::StrategicMerge, &live(), &body));
        assert_eq!((code, reason), (400, "BadRequest"), "{directive}");
        assert!(message.starts_with("unknown patch type: "), "{message}");
    }
    let body = json!({"metadata": {"ownerReferences": [{"uid": "u1", "$patch": "merge"}]}});
    let current = live_with(json!({"ownerReferences": [{"uid": "u1"}]}));
    assert_eq!(
        err(run(PatchType::StrategicMerge, &current, &body)),
        (
            400,
            "BadRequest",
            "merging lists cannot yet be specified in the patch".to_string()
        )
    );
    // Messages quote at most a little of the patch.
    let body = json!({"metadata": {"labels": {"$patch": "x", "big": "y".repeat(100_000)}}});
    let (_, _, message) = err(run(PatchType::StrategicMerge, &live(), &body));
    assert!(message.len() < 400, "{}", message.len());
    // Other `$` keys are ordinary (unknown) fields, left for validation.
    let out = smp(&live(), json!({"spec": {"$foo": 1}}));
    assert_eq!(out["spec"]["$foo"], 1);
}

#[test]
fn smp_retain_keys() {
    let out = smp(
        &live(),
        json!({"spec": {"$retainKeys": ["holderIdentity", "renewTime"], "renewTime": "t"}}),
    );
    assert_eq!(
        out["spec"],
        json!({"holderIdentity": "worker-a", "renewTime": "t"})
    );
    for retain in [json!("holderIdentity"), json!(["holderIdentity"])] {
        let body = json!({"spec": {"$retainKeys": retain, "renewTime": "t"}});
        assert_eq!(
            err(run(PatchType::StrategicMerge, &live(), &body)),
            (
                400,
                "BadRequest",
                "invalid patch format of retainKeys".to_string()
            )
        );
    }
}

#[test]
fn smp_finalizers_merge_as_a_set() {
    let current = live_with(json!({"finalizers": ["a", "b"]}));
    let out = smp(&current, json!({"metadata": {"finalizers": ["c", "a"]}}));
    // Upstream's order: patch items in patch order, live-only items where
    // the live order puts them relative to patch items.
    assert_eq!(finalizers(&out), ["c", "a", "b"]);
    let out = smp(&current, json!({"metadata": {"finalizers": ["b"]}}));
    assert_eq!(finalizers(&out), ["a", "b"]);
}

#[test]
fn smp_delete_from_primitive_list_finalizers() {
    let current = live_with(json!({"finalizers": ["a", "b", "c"]}));
    let out = smp(
        &current,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}),
    );
    assert_eq!(finalizers(&out), ["a", "c"]);
    // No live list: nothing to delete from, nothing added.
    let out = smp(
        &live(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
    );
    assert!(out["metadata"].get("finalizers").is_none());
    assert_eq!(
        err(run(
            PatchType::StrategicMerge,
            &current,
            &json!({"metadata": {"$deleteFromPrimitiveList": ["b"]}})
        )),
        (
            400,
            "BadRequest",
            "invalid patch format of primitive list".to_string()
        )
    );
}

#[test]
fn smp_set_element_order_orders_only() {
    let current = live_with(json!({"finalizers": ["a", "b", "c"]}));
    let out = smp(
        &current,
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b", "x"]}}),
    );
    assert_eq!(finalizers(&out), ["c", "a", "b"]);
    // What kubectl sends to replace b by d in [a, b, c].
    let out = smp(
        &current,
        json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["b"],
            "$setElementOrder/finalizers": ["a", "d", "c"],
            "finalizers": ["d"]
        }}),
    );
    assert_eq!(finalizers(&out), ["a", "d", "c"]);
    // A patch list out of the directive's order.
    let body = json!({"metadata": {
        "$setElementOrder/finalizers": ["a", "d"],
        "finalizers": ["d", "a"]
    }});
    let (code, _, message) = err(run(PatchType::StrategicMerge, &current, &body));
    assert_eq!(code, 400);
    assert!(message.starts_with("The order in patch list"), "{message}");
    for body in [
        json!({"metadata": {"$setElementOrder": ["a"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
    ] {
        assert_eq!(
            err(run(PatchType::StrategicMerge, &current, &body)),
            (
                400,
                "BadRequest",
                "invalid patch format of setElementOrder list".to_string()
            )
        );
    }
}

#[test]
fn smp_owner_references_merge_by_uid() {
    let current = live_with(json!({"ownerReferences": [
        {"uid": "u1", "name": "a", "kind": "Pod", "apiVersion": "v1"},
        {"uid": "u2", "name": "b", "kind": "Pod", "apiVersion": "v1"}
    ]}));
    let out = smp(
        &current,
        json!({"metadata": {"ownerReferences": [
            {"uid": "u2", "name": "b2", "controller": true},
            {"uid": "u3", "name": "c", "kind": "Pod", "apiVersion": "v1"}
        ]}}),
    );
    assert_eq!(owner_uids(&out), ["u1", "u2", "u3"]);
    assert_eq!(
        out["metadata"]["ownerReferences"][1],
        json!({"uid": "u2", "name": "b2", "kind": "Pod", "apiVersion": "v1", "controller": true})
    );

    let out = smp(
        &current,
        json!({"metadata": {"ownerReferences": [{"uid": "u1", "$patch": "delete"}]}}),
    );
    assert_eq!(owner_uids(&out), ["u2"]);

    let out = smp(
        &current,
        json!({"metadata": {"ownerReferences": [{"$patch": "replace"}, {"uid": "u9", "name": "z"}]}}),
    );
    assert_eq!(owner_uids(&out), ["u9"]);

    let out = smp(
        &current,
        json!({"metadata": {
            "$setElementOrder/ownerReferences": [{"uid": "u2"}, {"uid": "u1"}]
        }}),
    );
    assert_eq!(owner_uids(&out), ["u2", "u1"]);

    let (code, _, message) = err(run(
        PatchType::StrategicMerge,
        &current,
        &json!({"metadata": {"ownerReferences": [{"name": "no-uid"}]}}),
    ));
    assert_eq!(code, 400);
    assert!(message.contains("does not contain declared merge key: uid"));
}

#[test]
fn smp_other_lists_are_replaced_and_lists_of_lists_are_422() {
    let current = live_with(json!({"managedFields": [{"manager": "a"}, {"manager": "b"}]}));
    let out = smp(
        &current,
        json!({"metadata": {"managedFields": [{"manager": "c"}]}}),
    );
    assert_eq!(out["metadata"]["managedFields"], json!([{"manager": "c"}]));

    let current = live_with(json!({"finalizers": []}));
    let (code, reason, _) = err(run(
        PatchType::StrategicMerge,
        &current,
        &json!({"metadata": {"finalizers": [["a"]]}}),
    ));
    assert_eq!((code, reason), (422, "Invalid"));
    let current = live_with(json!({"finalizers": ["a"]}));
    let (code, _, message) = err(run(
        PatchType::StrategicMerge,
        &current,
        &json!({"metadata": {"finalizers": [1]}}),
    ));
    assert_eq!(code, 400);
    assert!(message.starts_with("list element types are not identical"));
}

#[test]
fn smp_bodies_must_be_objects() {
    for (body, kind) in [("[]", "array"), ("\"x\"", "string"), ("2", "number")] {
        assert_eq!(
            err(run_raw(PatchType::StrategicMerge, Some(&live()), body)),
            (
                400,
                "BadRequest",
                format!(
                    "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
                )
            )
        );
    }
    assert_eq!(
        run_raw(PatchType::StrategicMerge, Some(&live()), "null"),
        Ok(live())
    );
    let (code, _, _) = err(run_raw(PatchType::StrategicMerge, Some(&live()), "{]"));
    assert_eq!(code, 400);
}

// ----- Server-side apply ----------------------------------------------------

fn applied(meta: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": spec
    })
}

#[test]
fn apply_creates_from_yaml_and_fills_the_namespace() {
    let yaml = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: my-job\n  \
                labels:\n    app: a\n    nothing: null\nspec:\n  holderIdentity: worker-a\n  \
                leaseDurationSeconds: 15\n";
    let out = run_raw(PatchType::Apply, None, yaml).unwrap();
    assert_eq!(
        out,
        applied(
            json!({"name": "my-job", "namespace": "default", "labels": {"app": "a"}}),
            json!({"holderIdentity": "worker-a", "leaseDurationSeconds": 15})
        )
    );
}

#[test]
fn apply_updates_the_live_lease() {
    let body = applied(
        json!({"name": "my-job", "labels": {"app": "b"}}),
        json!({"holderIdentity": "worker-b", "leaseDurationSeconds": null}),
    );
    let out = run(PatchType::Apply, &live(), &body).unwrap();
    let mut want = live();
    want["metadata"]["labels"]["app"] = json!("b");
    want["spec"] = json!({"holderIdentity": "worker-b"});
    assert_eq!(out, want);
    // `force` makes no difference: there are no conflicts to force.
}

#[test]
fn apply_refuses_other_kinds_and_versions() {
    let mk = |api_version: Value, kind: Value| {
        let mut b = applied(json!({"name": "my-job"}), json!({}));
        b["apiVersion"] = api_version;
        b["kind"] = kind;
        b
    };
    for (body, want) in [
        (
            mk(json!("coordination.k8s.io/v1"), json!("Foo")),
            "coordination.k8s.io/v1, Kind=Foo",
        ),
        (mk(json!("v1"), json!("Lease")), "/v1, Kind=Lease"),
        (
            mk(json!("coordination.k8s.io/v1beta1"), json!("Lease")),
            "coordination.k8s.io/v1beta1, Kind=Lease",
        ),
        (mk(json!("a/b/c"), json!("Lease")), "/, Kind="),
        (mk(json!(1), json!(null)), "/, Kind="),
        (json!({"metadata": {"name": "my-job"}}), "/, Kind="),
    ] {
        for current in [None, Some(&live())] {
            assert_eq!(
                err(apply_patch(
                    PatchType::Apply,
                    T,
                    current,
                    body.to_string().as_bytes()
                )),
                (400, "BadRequest", format!("invalid object type: {want}")),
                "{body}"
            );
        }
    }
    // An empty body is an empty object: no kind.
    assert_eq!(
        err(run_raw(PatchType::Apply, None, "")),
        (
            400,
            "BadRequest",
            "invalid object type: /, Kind=".to_string()
        )
    );
}

#[test]
fn apply_checks_name_and_namespace_against_the_url() {
    let body = applied(json!({"name": "other"}), json!({}));
    assert_eq!(
        err(run(PatchType::Apply, &live(), &body)),
        (
            400,
            "BadRequest",
            "the name of the object (other) does not match the name on the URL (my-job)"
                .to_string()
        )
    );
    let body = applied(json!({"labels": {"a": "b"}}), json!({}));
    assert_eq!(
        err(apply_patch(
            PatchType::Apply,
            T,
            None,
            body.to_string().as_bytes()
        )),
        (
            400,
            "BadRequest",
            "the name of the object () does not match the name on the URL (my-job)".to_string()
        )
    );
    let body = applied(
        json!({"name": "my-job", "namespace": "kube-system"}),
        json!({}),
    );
    assert_eq!(
        err(run(PatchType::Apply, &live(), &body)),
        (
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the \
             request"
                .to_string()
        )
    );
    // The same checks hold for every type.
    let (code, _, message) = err(run(
        PatchType::Merge,
        &live(),
        &json!({"metadata": {"name": "renamed"}}),
    ));
    assert_eq!(code, 400);
    assert!(message.contains("does not match the name on the URL"));
    let out = run(
        PatchType::Json,
        &live(),
        &json!([{"op": "remove", "path": "/metadata/namespace"}]),
    )
    .unwrap();
    assert_eq!(out["metadata"]["namespace"], "default");
}

#[test]
fn apply_refuses_managed_fields_and_a_uid_on_create() {
    let body = applied(
        json!({"name": "my-job", "managedFields": [{"manager": "kubectl"}]}),
        json!({}),
    );
    assert_eq!(
        err(run(PatchType::Apply, &live(), &body)),
        (
            400,
            "BadRequest",
            "metadata.managedFields must be nil".to_string()
        )
    );
    let body = applied(json!({"name": "my-job", "uid": "u-9"}), json!({}));
    let e =
        apply_patch(PatchType::Apply, T, None, body.to_string().as_bytes()).expect_err("conflict");
    assert_eq!(e.http, StatusCode::CONFLICT);
    assert_eq!(e.status.reason, "Conflict");
    assert_eq!(
        e.status.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"my-job\": uid mismatch: \
         the provided object specified uid u-9, and no existing object was found"
    );
    let details = e.status.details.unwrap();
    assert_eq!(details.name.as_deref(), Some("my-job"));
    assert_eq!(details.kind.as_deref(), Some("leases"));
}

#[test]
fn apply_bodies_that_are_not_objects_are_400() {
    for body in ["- a\n- b\n", "just a string", "[1, 2]", "42"] {
        let (code, reason, message) = err(run_raw(PatchType::Apply, None, body));
        assert_eq!((code, reason), (400, "BadRequest"), "{body}");
        assert!(message.starts_with("error decoding YAML: "), "{message}");
    }
    for body in ["a: [", "a: b: c", "{\"a\": 1", "x: !tag 1", "a: .inf"] {
        let (code, _, message) = err(run_raw(PatchType::Apply, None, body));
        assert_eq!(code, 400, "{body}");
        assert!(message.starts_with("error decoding YAML: "), "{message}");
    }
}

#[test]
fn apply_yaml_aliases_cannot_expand_without_bound() {
    // A billion laughs: ten levels of ten aliases each.
    let mut doc = String::from("a0: &a0 [\"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let (code, _, message) = err(run_raw(PatchType::Apply, None, &doc));
    assert_eq!(code, 400);
    assert!(message.starts_with("error decoding YAML: "), "{message}");
    // Few aliases of a large anchor: within serde_yaml's repetition limit,
    // beyond the budget.
    let item = "x".repeat(100);
    let mut doc = format!(
        "big: &big [{}]\nmany: [",
        vec![item.as_str(); 1000].join(", ")
    );
    doc.push_str(&vec!["*big"; 2000].join(", "));
    doc.push_str("]\n");
    let (code, _, message) = err(run_raw(PatchType::Apply, None, &doc));
    assert_eq!(code, 400);
    assert!(message.contains("too many aliases"), "{message}");
    // Aliases within the budget are fine.
    let doc = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: my-job\n  \
               labels: &l {app: a}\n  annotations: *l\n";
    let out = run_raw(PatchType::Apply, None, doc).unwrap();
    assert_eq!(out["metadata"]["annotations"], json!({"app": "a"}));
}

#[test]
fn yaml_bodies_with_many_flow_collections_are_refused_cheaply() {
    let mut labels = String::new();
    let mut json_labels = Map::new();
    for i in 0..300 {
        labels.push_str(&format!("    l{i}: \"{}\"\n", "v".repeat(2000)));
        json_labels.insert(format!("l{i}"), json!("v".repeat(2000)));
    }
    let flows = "[1], ".repeat(300);
    let yaml = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: my-job\n  \
         labels:\n{labels}spec:\n  x: [{flows}]\n"
    );
    let (code, _, message) = err(run_raw(PatchType::Apply, None, &yaml));
    assert_eq!(code, 400);
    assert!(message.contains("send it as JSON"), "{message}");
    // The same as JSON is read.
    let json = applied(
        json!({"name": "my-job", "labels": json_labels}),
        json!({"x": vec![json!([1]); 300]}),
    );
    let out = apply_patch(PatchType::Apply, T, None, json.to_string().as_bytes()).unwrap();
    assert_eq!(out["spec"]["x"].as_array().unwrap().len(), 300);
}

#[test]
fn yaml_keys_become_strings_and_the_budget_counts() {
    assert_eq!(
        yaml::from_slice(b"1: a\ntrue: b\n").unwrap(),
        json!({"1": "a", "true": "b"})
    );
    assert!(yaml::from_slice_within(b"[1, 2, 3]", 4 * yaml::NODE_COST).is_ok());
    assert!(yaml::from_slice_within(b"[1, 2, 3]", 4 * yaml::NODE_COST - 1).is_err());
}

// ----- Missing lease, bounds ------------------------------------------------

#[test]
fn only_apply_patches_a_missing_lease() {
    for kind in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
        // The body is not even read.
        let e = run_raw(kind, None, "not json").expect_err("404");
        assert_eq!(e, KubeError::lease_not_found("my-job"));
    }
}

#[test]
fn oversized_bodies_are_413() {
    let big = format!(
        "{{\"metadata\":{{\"annotations\":{{\"a\":\"{}\"}}}}}}",
        "x".repeat(MAX_PATCH_BYTES)
    );
    for kind in PatchType::ALL {
        for current in [None, Some(&live())] {
            assert_eq!(
                err(apply_patch(kind, T, current, big.as_bytes())),
                (
                    413,
                    "RequestEntityTooLarge",
                    "Request entity too large: limit is 1048576".to_string()
                )
            );
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep_json = format!("{}{}", "[".repeat(2_000), "]".repeat(2_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(2_000), "}".repeat(2_000));
    let deep_yaml = format!("{}1{}", "[".repeat(2_000), "]".repeat(2_000));
    for kind in PatchType::ALL {
        for body in [&deep_json, &deep_obj, &deep_yaml] {
            let (code, _, _) = err(run_raw(kind, Some(&live()), body));
            assert_eq!(code, 400, "{kind:?}");
        }
    }
    // 100 levels is fine (as data; validation is the caller's).
    let ok = format!("{{\"spec\":{}1{}}}", "{\"a\":".repeat(100), "}".repeat(100));
    for kind in [PatchType::Merge, PatchType::StrategicMerge] {
        assert!(run_raw(kind, Some(&live()), &ok).is_ok(), "{kind:?}");
    }
}

#[test]
fn no_input_panics() {
    // Fragments recombined: each body is tried with every type, with and
    // without a live lease. Only the absence of a panic is checked.
    let fragments = [
        "",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "1",
        "\"s\"",
        "{}",
        "[]",
        "{\"$patch\":\"delete\"}",
        "{\"$patch\":\"replace\"}",
        "{\"$patch\":1}",
        "{\"$retainKeys\":[1]}",
        "{\"$setElementOrder/finalizers\":[{}]}",
        "{\"$deleteFromPrimitiveList/ownerReferences\":[{\"uid\":1}]}",
        "{\"metadata\":{\"finalizers\":[null,{}]}}",
        "{\"metadata\":{\"ownerReferences\":[{\"uid\":{}},{\"uid\":[]},1]}}",
        "{\"metadata\":{\"$setElementOrder/ownerReferences\":[1,{\"uid\":\"u1\"}]}}",
        "{\"metadata\":{\"ownerReferences\":[{\"$patch\":\"delete\"}]}}",
        "[{\"op\":\"copy\",\"from\":\"\",\"path\":\"/spec/x\"}]",
        "[{\"op\":\"move\",\"from\":\"/spec\",\"path\":\"\"}]",
        "[{\"op\":\"remove\",\"path\":\"\"}]",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: my-job, uid: \"\"}\n",
        "&a [*a]",
        "? [a]\n: b\n",
        "--- a\n--- b\n",
        "\u{0}",
        "\"\\ud800\"",
    ];
    let currents = [
        live_with(json!({
            "finalizers": ["a", "b"],
            "ownerReferences": [{"uid": "u1"}, {"uid": "u2"}]
        })),
        json!("not an object"),
        json!({"metadata": 1}),
    ];
    let mut bodies: Vec<String> = fragments.iter().map(|s| s.to_string()).collect();
    for a in fragments {
        for b in ["{\"metadata\":", "[", "{\"spec\":"] {
            bodies.push(format!("{b}{a}"));
            bodies.push(format!("{b}{a}}}"));
        }
    }
    for body in &bodies {
        for kind in PatchType::ALL {
            let _ = apply_patch(kind, T, None, body.as_bytes());
            for current in &currents {
                let _ = apply_patch(kind, T, Some(current), body.as_bytes());
            }
        }
    }
}
