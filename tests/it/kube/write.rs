//! Writes through the Kubernetes API on a follower of a three-node
//! cluster (which forwards to the leader): POST, PUT, the four PATCH
//! types, DELETE, field validation, protobuf bodies, and client-go's
//! `LeaseLock` sequence replayed request by request.

use super::{leader_and_follower, Http, Reply, V1};
use crate::common::Cluster;
use serde_json::{json, Value};

const JSON: (&str, &str) = ("content-type", "application/json");

fn item(ns: &str, name: &str) -> String {
    format!("{V1}/namespaces/{ns}/leases/{name}")
}

fn collection(ns: &str) -> String {
    format!("{V1}/namespaces/{ns}/leases")
}

impl Http {
    async fn write(&mut self, method: &str, path: &str, ct: &str, body: &Value) -> Reply {
        self.send_body(
            method,
            path,
            &[("content-type", ct)],
            serde_json::to_vec(body).expect("encode"),
        )
        .await
    }
}

fn ok(r: &Reply, code: u16, what: &str) -> Value {
    assert_eq!(
        r.status,
        code,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_update_patch_and_delete_through_a_follower() {
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let mut h = Http::open(&c.endpoint(follower)).await;
    let ns = "kube-write";

    // POST without a Content-Type (the Python client sends none): JSON.
    let body = json!({"metadata": {"name": "a", "labels": {"app": "x"}},
                      "spec": {"holderIdentity": "alice", "leaseDurationSeconds": 30,
                               "acquireTime": "2000-01-01T00:00:00+00:00",
                               "renewTime": "2000-01-01T00:00:00.000000Z"}});
    let r = h
        .send_body(
            "POST",
            &collection(ns),
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    let created = ok(&r, 201, "create");
    assert_eq!(created["kind"], "Lease");
    assert_eq!(created["metadata"]["namespace"], ns, "from the URL");
    assert_eq!(created["spec"]["holderIdentity"], "alice");
    assert!(created["status"]["fencingToken"].as_u64().unwrap_or(0) > 0);
    let renew = created["spec"]["renewTime"].as_str().unwrap_or("");
    assert!(
        renew > "2026",
        "times are the server's, not the client's: {renew}"
    );
    let uid = created["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!uid.is_empty());

    let again = h.write("POST", &collection(ns), JSON.1, &body).await;
    let v = again.status_object(409, "AlreadyExists");
    assert_eq!(
        v["message"],
        "leases.coordination.k8s.io \"a\" already exists"
    );

    // PUT: the holder renews with the resourceVersion it read.
    let mut put = created.clone();
    put["spec"]["renewTime"] = json!("2000-01-01T00:00:00.000000Z");
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &put).await;
    let renewed = ok(&r, 200, "renew by PUT");
    assert_eq!(
        renewed["status"]["fencingToken"],
        created["status"]["fencingToken"]
    );
    assert!(rv(&renewed).parse::<u64>().unwrap() > rv(&created).parse::<u64>().unwrap());

    // A stale resourceVersion: the apiserver's Conflict.
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &put).await;
    let v = r.status_object(409, "Conflict");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("the object has been modified; please apply your changes to the latest version and try again"),
        "{v}"
    );
    // Another holder may not take a held lease: Conflict, not a 5xx.
    let mut takeover = renewed.clone();
    takeover["spec"]["holderIdentity"] = json!("bob");
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &takeover).await;
    let v = r.status_object(409, "Conflict");
    assert!(v["message"].as_str().unwrap_or("").contains("alice"), "{v}");
    assert!(r.headers.get("retry-after").is_none());
    // Another incarnation's uid.
    let mut wrong_uid = renewed.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &wrong_uid).await;
    let v = r.status_object(409, "Conflict");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("Precondition failed: UID"),
        "{v}"
    );
    // No resourceVersion on an existing lease: upstream's 422.
    let mut no_rv = renewed.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &no_rv).await;
    let v = r.status_object(422, "Invalid");
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );
    // The name in the body must be the URL's.
    let r = h.write("PUT", &item(ns, "other"), JSON.1, &renewed).await;
    r.status_object(400, "BadRequest");
    // Validation names the field (422 Invalid).
    let mut bad = renewed.clone();
    bad["spec"]["leaseDurationSeconds"] = json!(0);
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &bad).await;
    let v = r.status_object(422, "Invalid");
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "spec.leaseDurationSeconds"
    );

    // Field validation: Strict refuses, Warn warns, both name the field.
    let mut unknown = renewed.clone();
    unknown["spec"]["holder"] = json!("typo");
    let path = format!("{}?fieldValidation=Strict", item(ns, "a"));
    let r = h.write("PUT", &path, JSON.1, &unknown).await;
    let v = r.status_object(400, "BadRequest");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field \"spec.holder\""),
        "{v}"
    );
    let r = h.write("PUT", &item(ns, "a"), JSON.1, &unknown).await;
    let warned = ok(&r, 200, "Warn is the default");
    assert_eq!(
        r.headers["warning"], "299 - \"unknown field \\\"spec.holder\\\"\"",
        "{:?}",
        r.headers
    );

    // PUT of a missing lease without a uid creates it (create on update).
    let r = h
        .write(
            "PUT",
            &item(ns, "b"),
            JSON.1,
            &json!({"metadata": {"name": "b", "resourceVersion": "12345"},
                    "spec": {"leaseDurationSeconds": 10}}),
        )
        .await;
    ok(&r, 201, "create on update");

    // PATCH: merge (kubectl label), strategic merge (kubectl apply, edit),
    // JSON patch, each at the read revision.
    let r = h
        .write(
            "PATCH",
            &item(ns, "a"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"tier": "db"}}}),
        )
        .await;
    let merged = ok(&r, 200, "merge patch");
    assert_eq!(
        merged["metadata"]["labels"],
        json!({"app": "x", "tier": "db"})
    );
    assert_eq!(
        merged["spec"]["holderIdentity"], "alice",
        "the holder is kept"
    );
    let r = h
        .write(
            "PATCH",
            &item(ns, "a"),
            "application/strategic-merge-patch+json",
            &json!({"metadata": {"labels": {"app": null}}}),
        )
        .await;
    let smp = ok(&r, 200, "strategic merge patch");
    assert_eq!(smp["metadata"]["labels"], json!({"tier": "db"}));
    let r = h
        .write(
            "PATCH",
            &item(ns, "a"),
            "application/json-patch+json",
            &json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv(&warned)},
                {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}
            ]),
        )
        .await;
    assert_eq!(
        r.status / 100,
        4,
        "a JSON patch testing a stale resourceVersion fails: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = h
        .write(
            "PATCH",
            &item(ns, "a"),
            "application/json-patch+json",
            &json!([
                {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}
            ]),
        )
        .await;
    let jp = ok(&r, 200, "json patch");
    assert_eq!(jp["metadata"]["annotations"], json!({"note": "x"}));
    let r = h
        .write(
            "PATCH",
            &item(ns, "missing"),
            "application/merge-patch+json",
            &json!({}),
        )
        .await;
    r.status_object(404, "NotFound");
    // Server-side apply creates, then updates.
    let applied = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "ssa", "labels": {"v": "1"}},
                         "spec": {"leaseDurationSeconds": 20}});
    let ssa = format!(
        "{}?fieldManager=kubectl&fieldValidation=Strict&force=false",
        item(ns, "ssa")
    );
    let r = h
        .write("PATCH", &ssa, "application/apply-patch+yaml", &applied)
        .await;
    ok(&r, 201, "apply creates");
    let mut applied2 = applied.clone();
    applied2["metadata"]["labels"]["v"] = json!("2");
    let r = h
        .write("PATCH", &ssa, "application/apply-patch+yaml", &applied2)
        .await;
    let v = ok(&r, 200, "apply updates");
    assert_eq!(v["metadata"]["labels"]["v"], "2");
    let r = h
        .write("PATCH", &item(ns, "a"), "text/plain", &json!({}))
        .await;
    r.status_object(415, "UnsupportedMediaType");

    // dryRun is refused, not ignored.
    let r = h
        .write(
            "DELETE",
            &format!("{}?dryRun=All", item(ns, "a")),
            JSON.1,
            &json!({}),
        )
        .await;
    r.bad_param("dryRun");

    // DELETE of a held lease, with kubectl's body; preconditions first.
    let r = h
        .write(
            "DELETE",
            &item(ns, "a"),
            JSON.1,
            &json!({"preconditions": {"resourceVersion": "1"}}),
        )
        .await;
    r.status_object(409, "Conflict");
    let r = h
        .write(
            "DELETE",
            &item(ns, "a"),
            JSON.1,
            &json!({"propagationPolicy": "Background", "preconditions": {"uid": uid}}),
        )
        .await;
    let done = ok(&r, 200, "delete");
    assert_eq!(done["kind"], "Status");
    assert_eq!(done["status"], "Success");
    assert_eq!(
        done["details"],
        json!({"name": "a", "group": "coordination.k8s.io", "kind": "leases", "uid": uid})
    );
    // Gone at once (kubectl --wait polls for the 404)...
    h.get(&item(ns, "a")).await.status_object(404, "NotFound");
    // ...but nobody gets it before alice's tenure could have lapsed.
    let r = h
        .write("POST", &collection(ns), JSON.1, &json!({"metadata": {"name": "a"}, "spec": {"holderIdentity": "bob", "leaseDurationSeconds": 5}}))
        .await;
    let v = r.status_object(409, "Conflict");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("deleted while held"),
        "{v}"
    );
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_bodies_are_decoded() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(std::time::Duration::from_secs(15)).await;
    let mut h = Http::open(&c.endpoints()[0]).await;
    let pb = include_bytes!("../../fixtures/k8s/coordination.k8s.io.v1.Lease.pb");
    let ct = ("content-type", "application/vnd.kubernetes.protobuf");
    let accept = (
        "accept",
        "application/vnd.kubernetes.protobuf,application/json",
    );
    // The golden Lease (every field set, with placeholder values): decoded,
    // and its resourceVersion refused by name.
    let r = h
        .send_body("POST", &collection("kube-pb"), &[ct, accept], pb.to_vec())
        .await;
    let v = r.status_object(400, "BadRequest");
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );
    // What client-go's LeaseLock sends: created, then renewed with the
    // resourceVersion of the answer, both as protobuf.
    let r = h
        .send_body(
            "POST",
            &collection("kube-pb"),
            &[ct, accept],
            lease_pb("lock", "kube-pb", "", "pod-a", 15),
        )
        .await;
    let created = ok(&r, 201, "protobuf create");
    assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    assert_eq!(created["spec"]["leaseTransitions"], 0);
    let r = h
        .send_body(
            "PUT",
            &item("kube-pb", "lock"),
            &[ct, accept],
            lease_pb("lock", "kube-pb", &rv(&created), "pod-a", 15),
        )
        .await;
    let renewed = ok(&r, 200, "protobuf update");
    assert_eq!(
        renewed["status"]["fencingToken"],
        created["status"]["fencingToken"]
    );
    // The golden DeleteOptions: decoded, its placeholder resourceVersion
    // refused by name.
    let del = include_bytes!("../../fixtures/k8s/core.v1.DeleteOptions.pb");
    let r = h
        .send_body("DELETE", &item("kube-pb", "x"), &[ct, accept], del.to_vec())
        .await;
    let v = r.status_object(400, "BadRequest");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("preconditions.resourceVersion"),
        "{v}"
    );
    // Garbage is a 400, not a crash.
    let r = h
        .send_body(
            "POST",
            &collection("kube-pb"),
            &[ct],
            b"k8s\0\xff\xff".to_vec(),
        )
        .await;
    r.status_object(400, "BadRequest");
    c.assert_no_crashes();
}

/// client-go's `LeaseLock` (tools/leaderelection) as it talks to an
/// apiserver, request by request: GET, POST on 404, PUT with the cached
/// object to renew, a second candidate's GET and refused PUT, and the
/// release (empty holder, duration 1) after which the second gets in.
#[tokio::test(flavor = "multi_thread")]
async fn client_go_lease_lock_sequence() {
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let mut a = Http::open(&c.endpoint(follower)).await;
    let mut b = Http::open(&c.endpoints()[0]).await;
    let ns = "kube-system";
    let path = item(ns, "controller");
    let accept = (
        "accept",
        "application/vnd.kubernetes.protobuf,application/json",
    );

    let r = a.send_body("GET", &path, &[accept], Vec::new()).await;
    r.status_object(404, "NotFound");
    let now = "2026-12-02T10:00:00.000000Z";
    let record = |holder: &str, duration: i32, transitions: i32| {
        json!({"holderIdentity": holder, "leaseDurationSeconds": duration,
               "acquireTime": now, "renewTime": now, "leaseTransitions": transitions})
    };
    let r = a
        .write("POST", &collection(ns), JSON.1, &json!({"metadata": {"name": "controller", "namespace": ns}, "spec": record("pod-a", 15, 0)}))
        .await;
    let mut cached = ok(&r, 201, "POST on 404");
    for _ in 0..3 {
        let mut next = cached.clone();
        next["spec"] = record("pod-a", 15, 0);
        let r = a.write("PUT", &path, JSON.1, &next).await;
        cached = ok(&r, 200, "renew with the cached resourceVersion");
        assert_eq!(cached["spec"]["holderIdentity"], "pod-a");
    }
    // The other candidate reads a valid record and, if it tried, would be
    // refused with a Conflict.
    let seen = ok(
        &b.send_body("GET", &path, &[accept], Vec::new()).await,
        200,
        "GET by b",
    );
    let mut grab = seen.clone();
    grab["spec"] = record("pod-b", 15, 1);
    let r = b.write("PUT", &path, JSON.1, &grab).await;
    r.status_object(409, "Conflict");
    // Release on cancel: empty holder, duration 1, transitions kept.
    let mut release = cached.clone();
    release["spec"] = record("", 1, 0);
    let released = ok(
        &a.write("PUT", &path, JSON.1, &release).await,
        200,
        "release",
    );
    assert!(
        released["spec"].get("holderIdentity").is_none(),
        "{released}"
    );
    assert_eq!(released["status"]["fencingToken"], 0);
    // b takes over at once, with a new token.
    let seen = ok(
        &b.send_body("GET", &path, &[accept], Vec::new()).await,
        200,
        "GET by b",
    );
    let mut grab = seen.clone();
    grab["spec"] = record("pod-b", 15, 1);
    let taken = ok(
        &b.write("PUT", &path, JSON.1, &grab).await,
        200,
        "takeover after release",
    );
    assert_eq!(taken["spec"]["holderIdentity"], "pod-b");
    assert_eq!(taken["spec"]["leaseTransitions"], 1);
    assert!(
        taken["status"]["fencingToken"].as_u64() > cached["status"]["fencingToken"].as_u64(),
        "{taken}"
    );
    // a's cached object is stale now: its renewal is a Conflict.
    let mut late = cached.clone();
    late["spec"] = record("pod-a", 15, 0);
    a.write("PUT", &path, JSON.1, &late)
        .await
        .status_object(409, "Conflict");
    c.assert_no_crashes();
}

/// A Lease in the Kubernetes protobuf envelope, as client-go's LeaseLock
/// sends it (written by hand: the wire format is small).
fn lease_pb(name: &str, ns: &str, rv: &str, holder: &str, seconds: i64) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn int(tag: u32, v: i64, out: &mut Vec<u8>) {
        varint(u64::from(tag << 3), out);
        varint(v as u64, out);
    }
    let mut time = Vec::new();
    int(1, 1_764_669_600, &mut time);
    let mut meta = Vec::new();
    bytes(1, name.as_bytes(), &mut meta);
    bytes(3, ns.as_bytes(), &mut meta);
    if !rv.is_empty() {
        bytes(6, rv.as_bytes(), &mut meta);
    }
    let mut spec = Vec::new();
    bytes(1, holder.as_bytes(), &mut spec);
    int(2, seconds, &mut spec);
    bytes(3, &time, &mut spec);
    bytes(4, &time, &mut spec);
    int(5, 0, &mut spec);
    let mut lease = Vec::new();
    bytes(1, &meta, &mut lease);
    bytes(2, &spec, &mut lease);
    let mut type_meta = Vec::new();
    bytes(1, b"coordination.k8s.io/v1", &mut type_meta);
    bytes(2, b"Lease", &mut type_meta);
    let mut out = b"k8s\0".to_vec();
    bytes(1, &type_meta, &mut out);
    bytes(2, &lease, &mut out);
    bytes(3, b"", &mut out);
    bytes(4, b"", &mut out);
    out
}
