//! The Kubernetes Lease API over HTTP/1.1 (`src/kube`) against a real
//! three-node cluster: discovery and `/version`, GET and LIST of leases
//! written through gRPC (on the leader and on a follower, which forwards),
//! Tables, `Status` errors, keep-alive, the gRPC fallback, a minority
//! node's 503, and the real kubectl when it is on the PATH.
//!
//! The HTTP client is hyper's HTTP/1.1 connection (in the tree through
//! tonic): one connection per node and test, reused for every request, so
//! each test also shows that connections are kept alive.

use crate::common;

use common::{acquire_req, Cluster, Deadline};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::HeaderMap;
use hyper_util::rt::TokioIo;
use leasehold::proto::v1 as pb;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::Code;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// kubectl's Accept for `get`.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

const V1: &str = "/apis/coordination.k8s.io/v1";

// ---------------------------------------------------------------------------
// A plain HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One HTTP/1.1 connection to a node.
pub(crate) struct Http {
    addr: String,
    send: SendRequest<Full<Bytes>>,
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and that the body is a Kubernetes `Status` with
    /// the same code and `reason`; returns the body.
    fn status_object(&self, code: u16, reason: &str) -> Value {
        let v = self.json();
        assert_eq!(self.status, code, "HTTP status of {v}");
        assert_eq!(v["kind"], "Status", "{v}");
        assert_eq!(v["apiVersion"], "v1", "{v}");
        assert_eq!(v["status"], "Failure", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(
            self.headers["content-type"], "application/json",
            "content type of {v}"
        );
        v
    }

    /// Asserts a 400 naming `param` (in the message and in the cause).
    fn bad_param(&self, param: &str) {
        let v = self.status_object(400, "BadRequest");
        assert!(
            v["message"].as_str().unwrap_or("").contains(param),
            "message should name {param}: {v}"
        );
        assert_eq!(v["details"]["causes"][0]["field"], param, "{v}");
    }
}

impl Http {
    pub(crate) async fn open(addr: &str) -> Http {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Http {
            addr: addr.to_string(),
            send,
        }
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        self.send_body(method, path, &headers, Vec::new()).await
    }

    /// A request with `headers` and `body`; the whole answer.
    async fn send_body(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let resp = self.start(method, path, headers, body).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: body: {e}"))
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a request and returns once the answer's head arrived (the
    /// body streams on: watches).
    async fn start(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> hyper::Response<hyper::body::Incoming> {
        // Fails if the server closed the connection after the last answer.
        self.send
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection to {} not kept alive: {e}", self.addr));
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str())
            .header("user-agent", "leasehold-it");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        tokio::time::timeout(Duration::from_secs(30), self.send.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None).await
    }

    /// GET that must answer 200 with JSON.
    async fn ok(&mut self, path: &str, accept: Option<&str>) -> Value {
        let r = self.request("GET", path, accept).await;
        assert_eq!(
            r.status,
            200,
            "GET {path} on {}: {}",
            self.addr,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.headers["content-type"], "application/json", "GET {path}");
        r.json()
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The leader and one follower.
pub(crate) async fn leader_and_follower(c: &Cluster) -> (u64, u64) {
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    (leader, follower)
}

async fn acquire(
    c: &Cluster,
    ns: &str,
    name: &str,
    holder: &str,
    labels: &[(&str, &str)],
) -> pb::AcquireResponse {
    let mut req = acquire_req(ns, name, holder, 60);
    req.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>();
    c.client()
        .acquire(req)
        .await
        .unwrap_or_else(|e| panic!("acquire {ns}/{name}: {e:?}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn is_micro_time(v: &Value) -> bool {
    // 2026-12-02T07:43:44.123456Z
    let s = v.as_str().unwrap_or("");
    s.len() == 27
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && s.ends_with('Z')
        && s[20..26].bytes().all(|b| b.is_ascii_digit())
}

fn is_time(v: &Value) -> bool {
    // 2026-12-02T07:43:44Z
    let s = v.as_str().unwrap_or("");
    s.len() == 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

/// An age as HumanDuration prints a lease created during the test.
fn is_fresh_age(s: &str) -> bool {
    s.strip_suffix('s')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

pub(crate) mod python;
mod watch;
mod write;

#[tokio::test(flavor = "multi_thread")]
async fn discovery_version_and_fallbacks_on_leader_and_follower() {
    let c = Cluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c).await;
    for id in [leader, follower] {
        let mut h = Http::open(&c.endpoint(id)).await;

        let v = h
            .ok("/version?timeout=5s", Some("application/json, */*"))
            .await;
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("32"))
        );
        assert!(
            v["gitVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("v1.32.0+leasehold."),
            "{v}"
        );

        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let v = h.ok("/apis?timeout=32s", Some(accept)).await;
        assert_eq!(v["kind"], "APIGroupList");
        assert_eq!(v["groups"][0]["name"], "coordination.k8s.io");
        assert_eq!(
            v["groups"][0]["preferredVersion"]["groupVersion"],
            "coordination.k8s.io/v1"
        );
        let v = h.ok("/apis/coordination.k8s.io", None).await;
        assert_eq!(v["kind"], "APIGroup");
        assert_eq!(v["versions"][0]["version"], "v1");
        let v = h.ok(V1, Some("application/json, */*")).await;
        assert_eq!(v["kind"], "APIResourceList");
        assert_eq!(v["groupVersion"], "coordination.k8s.io/v1");
        let r = &v["resources"][0];
        assert_eq!(r["name"], "leases");
        assert_eq!(r["namespaced"], true);
        assert_eq!(r["kind"], "Lease");
        // Only the verbs this server implements.
        assert_eq!(
            r["verbs"],
            serde_json::json!(["create", "delete", "get", "list", "patch", "update", "watch"])
        );

        // No core group; unknown paths; wrong methods.
        for path in [
            "/api?timeout=32s",
            "/api/v1/namespaces/default/events",
            "/no/such/path",
        ] {
            let v = h.get(path).await.status_object(404, "NotFound");
            assert_eq!(v["details"], serde_json::json!({}), "{path}");
            assert_eq!(
                v["message"],
                "the server could not find the requested resource"
            );
        }
        // kubectl asks for the namespace after a NotFound outside
        // `default`: every valid namespace exists.
        let v = h.ok("/api/v1/namespaces/kube-it", None).await;
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "kube-it");
        assert_eq!(v["status"]["phase"], "Active");
        let v = h
            .get("/api/v1/namespaces/Not_Valid")
            .await
            .status_object(404, "NotFound");
        assert_eq!(v["details"]["kind"], "namespaces");
        let v = h
            .get(&format!("{V1}/namespaces/default/leases/x/status"))
            .await
            .status_object(404, "NotFound");
        assert_eq!(v["details"], serde_json::json!({}));
        for (method, path) in [
            ("POST", "/version".to_string()),
            ("PUT", format!("{V1}/namespaces/default/leases")),
            ("DELETE", format!("{V1}/namespaces/default/leases")),
            ("POST", format!("{V1}/namespaces/default/leases/x")),
            ("POST", format!("{V1}/leases")),
        ] {
            h.request(method, &path, None)
                .await
                .status_object(405, "MethodNotAllowed");
        }
        // Nothing acceptable.
        h.request("GET", "/apis", Some("application/vnd.kubernetes.protobuf"))
            .await
            .status_object(406, "NotAcceptable");

        // Every request above went over this one connection.
        h.ok("/version", None).await;
    }

    // gRPC on the same port: an unknown service gets UNIMPLEMENTED from the
    // shared fallback, an unknown method of ours from the service itself,
    // and real calls work (the harness' Status calls, this client).
    for path in [
        "/unknown.v1.Nothing/Call",
        "/leasehold.v1.Leases/NoSuchMethod",
    ] {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", c.endpoint(follower)))
                .expect("endpoint")
                .connect()
                .await
                .expect("gRPC connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let r: Result<tonic::Response<()>, tonic::Status> = grpc
            .unary(
                tonic::Request::new(()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await;
        let e = r.expect_err("an unknown gRPC method must fail");
        assert_eq!(e.code(), Code::Unimplemented, "{path}: {e:?}");
    }
    let st = c
        .client_for(&[follower])
        .status()
        .await
        .expect("gRPC status");
    assert!(st.leader_id > 0);
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn get_and_list_leases_written_through_grpc() {
    let c = Cluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c).await;
    let ns = "kube-it";
    let a = acquire(&c, ns, "job-a", "worker-a", &[("app", "x")]).await;
    acquire(&c, ns, "job-b", "worker-b", &[("app", "y")]).await;
    let last = acquire(&c, ns, "job-c", "worker-c", &[("app", "x")]).await;
    acquire(&c, "other-ns", "job-z", "worker-z", &[]).await;
    let a_lease = a.lease.clone().expect("lease");
    let a_meta = a_lease.metadata.clone().expect("metadata");
    let last_rv = last
        .lease
        .as_ref()
        .and_then(|l| l.metadata.as_ref())
        .map_or(0, |m| m.resource_version);

    for id in [follower, leader] {
        let mut h = Http::open(&c.endpoint(id)).await;
        // GET (linearizable: the follower forwards, and sees the write).
        let v = h
            .ok(
                &format!("{V1}/namespaces/{ns}/leases/job-a"),
                Some("application/json"),
            )
            .await;
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(v["kind"], "Lease");
        let m = &v["metadata"];
        assert_eq!(m["name"], "job-a");
        assert_eq!(m["namespace"], ns);
        assert_eq!(m["uid"], a_meta.uid.as_str());
        assert_eq!(m["resourceVersion"], a_meta.resource_version.to_string());
        assert!(is_time(&m["creationTimestamp"]), "{m}");
        assert_eq!(m["labels"], serde_json::json!({"app": "x"}));
        let s = &v["spec"];
        assert_eq!(s["holderIdentity"], "worker-a");
        assert_eq!(s["leaseDurationSeconds"], 60);
        assert!(is_micro_time(&s["acquireTime"]), "{s}");
        assert!(is_micro_time(&s["renewTime"]), "{s}");
        assert_eq!(s["leaseTransitions"], 0);
        assert_eq!(v["status"]["fencingToken"], a.fencing_token);
        assert!(is_micro_time(&v["status"]["expireTime"]), "{v}");
        assert!(v["status"].get("expired").is_none(), "{v}");

        // A missing lease.
        let v = h
            .get(&format!("{V1}/namespaces/{ns}/leases/nope"))
            .await
            .status_object(404, "NotFound");
        assert_eq!(
            v["message"],
            "leases.coordination.k8s.io \"nope\" not found"
        );
        assert_eq!(
            v["details"],
            serde_json::json!({"name": "nope", "group": "coordination.k8s.io", "kind": "leases"})
        );

        // A resourceVersion never committed: 504, retry after a second.
        let r = h
            .get(&format!(
                "{V1}/namespaces/{ns}/leases/job-a?resourceVersion=999999999"
            ))
            .await;
        let v = r.status_object(504, "Timeout");
        assert_eq!(r.headers["retry-after"], "1");
        assert_eq!(v["details"]["retryAfterSeconds"], 1);

        // LIST of the namespace, in name order, at a revision that covers
        // the writes.
        let v = h.ok(&format!("{V1}/namespaces/{ns}/leases"), None).await;
        assert_eq!(v["kind"], "LeaseList");
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(names(&v), ["job-a", "job-b", "job-c"]);
        assert_eq!(v["items"][0]["kind"], "Lease");
        let rv: u64 = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("list resourceVersion");
        assert!(rv >= last_rv, "list at {rv}, last write at {last_rv}");
        assert!(v["metadata"].get("continue").is_none(), "{v}");

        // Selectors.
        let list = |q: &str| format!("{V1}/namespaces/{ns}/leases?{q}");
        assert_eq!(
            names(&h.ok(&list("labelSelector=app%3Dx"), None).await),
            ["job-a", "job-c"]
        );
        assert_eq!(
            names(&h.ok(&list("labelSelector=app!%3Dx"), None).await),
            ["job-b"]
        );
        assert_eq!(
            names(
                &h.ok(&list("fieldSelector=metadata.name%3Djob-b"), None)
                    .await
            ),
            ["job-b"]
        );
        assert_eq!(
            names(
                &h.ok(
                    &list("fieldSelector=metadata.name!%3Djob-b,metadata.namespace%3D%3Dkube-it"),
                    None
                )
                .await
            ),
            ["job-a", "job-c"]
        );
        let v = h
            .ok(
                &format!("{V1}/leases?fieldSelector=metadata.namespace%3Dother-ns"),
                None,
            )
            .await;
        assert_eq!(names(&v), ["job-z"]);
        let all = h.ok(&format!("{V1}/leases"), None).await;
        let all_names = names(&all);
        for n in ["job-a", "job-b", "job-c", "job-z"] {
            assert!(
                all_names.contains(&n.to_string()),
                "{n} missing from {all_names:?}"
            );
        }

        // limit + continue, across pages; every page reports the first
        // page's resourceVersion.
        let mut seen = Vec::new();
        let mut next = String::new();
        let mut first_rv = None;
        for page in 0.. {
            assert!(page < 10, "paging does not end: {seen:?}");
            let q = if next.is_empty() {
                "limit=1".to_string()
            } else {
                format!("limit=1&continue={next}")
            };
            let v = h.ok(&list(&q), None).await;
            let page_names = names(&v);
            assert!(page_names.len() <= 1, "{v}");
            seen.extend(page_names);
            let rv = v["metadata"]["resourceVersion"].clone();
            assert_eq!(first_rv.get_or_insert(rv.clone()), &rv, "page {page}");
            match v["metadata"]["continue"].as_str() {
                Some(t) => next = t.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, ["job-a", "job-b", "job-c"]);

        // Tables: list, -A, and a single lease.
        let v = h
            .ok(
                &format!("{V1}/namespaces/{ns}/leases?limit=500"),
                Some(TABLE_ACCEPT),
            )
            .await;
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
        let cols: Vec<&str> = v["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(cols, ["Name", "Holder", "Age"]);
        assert!(v["metadata"]["resourceVersion"].is_string(), "{v}");
        let rows = v["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3, "{v}");
        assert_eq!(rows[0]["cells"][0], "job-a");
        assert_eq!(rows[0]["cells"][1], "worker-a");
        let age = rows[0]["cells"][2].as_str().unwrap_or("");
        assert!(is_fresh_age(age), "age {age:?}");
        assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(rows[0]["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(rows[0]["object"]["metadata"]["namespace"], ns);
        let v = h
            .ok(&format!("{V1}/leases?limit=500"), Some(TABLE_ACCEPT))
            .await;
        let z = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["cells"][0] == "job-z")
            .expect("job-z row");
        assert_eq!(z["object"]["metadata"]["namespace"], "other-ns");
        let v = h
            .ok(
                &format!("{V1}/namespaces/{ns}/leases/job-b"),
                Some(TABLE_ACCEPT),
            )
            .await;
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["rows"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["rows"][0]["cells"][1], "worker-b");
        assert_eq!(
            v["metadata"]["resourceVersion"],
            v["rows"][0]["object"]["metadata"]["resourceVersion"]
        );
        let v = h
            .ok(
                &format!("{V1}/namespaces/{ns}/leases/job-b?includeObject=Object"),
                Some(TABLE_ACCEPT),
            )
            .await;
        assert_eq!(v["rows"][0]["object"]["kind"], "Lease");
        assert_eq!(v["rows"][0]["object"]["spec"]["holderIdentity"], "worker-b");
        let v = h
            .ok(
                &list("includeObject=None"),
                Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            )
            .await;
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1beta1");
        assert!(v["rows"][0].get("object").is_none(), "{v}");

        // Bad parameters: 400 (or 422 for refused combinations) naming them.
        h.get(&list("limit=ten")).await.bad_param("limit");
        h.get(&list("labelSelector=app%3D%3D%3Dx"))
            .await
            .bad_param("labelSelector");
        h.get(&list("fieldSelector=spec.holderIdentity%3Dx"))
            .await
            .bad_param("fieldSelector");
        h.get(&list("continue=not-a-token"))
            .await
            .bad_param("continue");
        h.get(&list("resourceVersion=abc"))
            .await
            .bad_param("resourceVersion");
        h.get(&list("timeout=soon")).await.bad_param("timeout");
        h.get(&list("limit=1&limit=2")).await.bad_param("limit");
        h.get(&format!(
            "{V1}/namespaces/{ns}/leases/job-a?includeObject=All"
        ))
        .await
        .bad_param("includeObject");
        let v = h
            .get(&list("resourceVersionMatch=Exact"))
            .await
            .status_object(422, "Invalid");
        assert_eq!(v["details"]["causes"][0]["field"], "resourceVersionMatch");
        let v = h
            .get(&format!("{V1}/namespaces/Not_A_Namespace/leases"))
            .await
            .status_object(400, "BadRequest");
        assert_eq!(v["details"]["causes"][0]["field"], "namespace");
        // A bad watch is refused before it starts.
        let v = h
            .get(&list("watch=1&resourceVersion=abc"))
            .await
            .status_object(400, "BadRequest");
        assert_eq!(v["details"]["causes"][0]["field"], "resourceVersion");
        let long = format!("labelSelector={}", "a".repeat(20_000));
        h.get(&list(&long)).await.bad_param("query string");
    }

    // Exact: served at the current revision, 410 for an older one. The
    // identity leases renew every 10 s, so the current revision may move
    // between the two requests: try a few times.
    let mut h = Http::open(&c.endpoint(follower)).await;
    let path = format!("{V1}/namespaces/{ns}/leases");
    let mut served = false;
    for _ in 0..5 {
        let v = h.ok(&path, None).await;
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let r = h
            .get(&format!(
                "{path}?resourceVersion={rv}&resourceVersionMatch=Exact"
            ))
            .await;
        if r.status == 200 {
            assert_eq!(r.json()["metadata"]["resourceVersion"], rv.as_str());
            served = true;
            break;
        }
        r.status_object(410, "Expired");
    }
    assert!(
        served,
        "an Exact list at the current revision was never served"
    );
    acquire(&c, ns, "job-d", "worker-d", &[]).await;
    let v = h
        .get(&format!(
            "{path}?resourceVersion={}&resourceVersionMatch=Exact",
            last_rv
        ))
        .await
        .status_object(410, "Expired");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("too old resource version"),
        "{v}"
    );
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_quorum_answers_503_with_retry_after_and_serves_stale_reads() {
    let mut c = Cluster::start(3).await;
    let (leader, follower) = leader_and_follower(&c).await;
    let ns = "kube-it";
    acquire(&c, ns, "job-a", "worker-a", &[]).await;
    let mut h = Http::open(&c.endpoint(follower)).await;
    let stale = format!("{V1}/namespaces/{ns}/leases/job-a?resourceVersion=0");
    // The follower applies the write shortly after it is acknowledged.
    let d = Deadline::new("the follower to apply the acquire", Duration::from_secs(10));
    loop {
        let r = h.get(&stale).await;
        if r.status == 200 {
            break;
        }
        d.check(r.status).await;
    }
    for id in c.ids() {
        if id != follower {
            c.kill(id);
        }
    }
    assert_ne!(leader, follower);
    let r = h.get(&format!("{V1}/namespaces/{ns}/leases/job-a")).await;
    let v = r.status_object(503, "ServiceUnavailable");
    assert_eq!(r.headers["retry-after"], "1", "{v}");
    assert_eq!(v["details"]["retryAfterSeconds"], 1, "{v}");
    let r = h.get(&format!("{V1}/namespaces/{ns}/leases")).await;
    r.status_object(503, "ServiceUnavailable");
    // resourceVersion=0 reads this node's state, quorum or not.
    let v = h.ok(&stale, None).await;
    assert_eq!(v["spec"]["holderIdentity"], "worker-a");
    let v = h
        .ok(
            &format!("{V1}/namespaces/{ns}/leases?resourceVersion=0"),
            Some(TABLE_ACCEPT),
        )
        .await;
    assert_eq!(v["rows"][0]["cells"][0], "job-a");
}

// ---------------------------------------------------------------------------
// kubectl
// ---------------------------------------------------------------------------

/// `kubectl` on the PATH, if any.
pub(crate) fn kubectl() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    })
}

/// A kubeconfig for `server` (no authentication).
fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig.yaml");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: leasehold\n  cluster:\n    server: http://{server}\n\
         users:\n- name: leasehold\n  user: {{}}\ncontexts:\n- name: leasehold\n  context:\n    cluster: leasehold\n    user: leasehold\n\
         current-context: leasehold\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

pub(crate) struct Kubectl {
    pub(crate) bin: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) cache: PathBuf,
}

impl Kubectl {
    /// Runs kubectl with `args`; returns (success, stdout, stderr).
    pub(crate) async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 60 s"))
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{stderr}\n{stdout}");
        stdout
    }
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_leases_from_a_follower() {
    let Some(bin) = kubectl() else {
        eprintln!("SKIPPED: kubectl not on PATH");
        return;
    };
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let ns = "kubectl-it";
    let a = acquire(&c, ns, "job-a", "worker-a", &[("app", "x")]).await;
    acquire(&c, ns, "job-b", "worker-b", &[("app", "y")]).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        bin,
        config: write_kubeconfig(tmp.path(), &c.endpoint(follower)),
        cache: tmp.path().join("cache"),
    };

    let out = k.ok(&["get", "leases", "-n", ns]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(columns(lines[0]), ["NAME", "HOLDER", "AGE"], "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    let row = columns(lines[1]);
    assert_eq!(&row[..2], ["job-a", "worker-a"], "{out}");
    assert!(is_fresh_age(row[2]), "{out}");

    let out = k.ok(&["get", "leases", "-A"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        columns(lines[0]),
        ["NAMESPACE", "NAME", "HOLDER", "AGE"],
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| columns(l).starts_with(&[ns, "job-b", "worker-b"])),
        "{out}"
    );

    let out = k.ok(&["get", "leases", "-n", ns, "-l", "app=x"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        columns(lines[1]).starts_with(&["job-a", "worker-a"]),
        "{out}"
    );

    let out = k
        .ok(&["get", "lease", "job-a", "-n", ns, "-o", "json"])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["kind"], "Lease");
    assert_eq!(v["spec"]["holderIdentity"], "worker-a");
    let rv = a
        .lease
        .as_ref()
        .and_then(|l| l.metadata.as_ref())
        .map_or(0, |m| m.resource_version);
    assert_eq!(v["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(v["status"]["fencingToken"], a.fencing_token);

    let out = k.ok(&["get", "lease", "job-b", "-n", ns]).await;
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| columns(l).starts_with(&["job-b", "worker-b"])),
        "{out}"
    );

    let out = k.ok(&["api-resources"]).await;
    assert!(
        out.lines()
            .any(|l| columns(l) == ["leases", "coordination.k8s.io/v1", "true", "Lease"]),
        "{out}"
    );

    let (ok, _, stderr) = k.run(&["get", "lease", "missing", "-n", ns]).await;
    assert!(!ok);
    assert!(
        stderr.contains(
            "Error from server (NotFound): leases.coordination.k8s.io \"missing\" not found"
        ),
        "{stderr}"
    );
    c.assert_no_crashes();
}

/// The writes and the watch as kubectl does them: `apply` (create, then
/// a changed label: a strategic merge patch after OpenAPI v3 discovery),
/// server-side apply, `get -l`, `describe`, `replace` of a stale object
/// (Conflict), `get -w` seeing a new lease and its expiry, and `delete`
/// of a held lease.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_replaces_watches_and_deletes() {
    let Some(bin) = kubectl() else {
        eprintln!("SKIPPED: kubectl not on PATH");
        return;
    };
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let ns = "kubectl-write";
    let tmp = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        bin,
        config: write_kubeconfig(tmp.path(), &c.endpoint(follower)),
        cache: tmp.path().join("cache"),
    };
    let manifest = |label: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: my-job\n  \
             namespace: {ns}\n  labels:\n    app: {label}\nspec:\n  holderIdentity: worker-a\n  \
             leaseDurationSeconds: 15\n"
        )
    };
    let file = tmp.path().join("lease.yaml");
    let file_arg = file.to_str().expect("utf-8 path");
    std::fs::write(&file, manifest("a")).expect("write manifest");
    let out = k.ok(&["apply", "-f", file_arg]).await;
    assert_eq!(out.trim(), "lease.coordination.k8s.io/my-job created");
    std::fs::write(&file, manifest("b")).expect("write manifest");
    let out = k.ok(&["apply", "-f", file_arg]).await;
    assert_eq!(out.trim(), "lease.coordination.k8s.io/my-job configured");
    let out = k.ok(&["apply", "-f", file_arg]).await;
    assert_eq!(out.trim(), "lease.coordination.k8s.io/my-job unchanged");
    let out = k.ok(&["get", "leases", "-n", ns, "-l", "app=b"]).await;
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| columns(l).starts_with(&["my-job", "worker-a"])),
        "{out}"
    );
    let (ok, out, stderr) = k.run(&["get", "leases", "-n", ns, "-l", "app=a"]).await;
    assert!(ok && out.is_empty(), "{out}");
    assert!(stderr.contains("No resources found"), "{stderr}");
    let out = k.ok(&["describe", "lease", "my-job", "-n", ns]).await;
    assert!(out.contains("my-job") && out.contains("worker-a"), "{out}");

    // Server-side apply of another lease: created, then changed.
    let ssa = tmp.path().join("ssa.yaml");
    std::fs::write(
        &ssa,
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: ssa\n  \
             namespace: {ns}\nspec:\n  leaseDurationSeconds: 30\n"
        ),
    )
    .expect("write");
    let ssa_arg = ssa.to_str().expect("utf-8 path");
    let out = k.ok(&["apply", "--server-side", "-f", ssa_arg]).await;
    assert!(
        out.contains("lease.coordination.k8s.io/ssa serverside-applied"),
        "{out}"
    );

    // A stale object: replace is refused with a Conflict.
    let stale = k
        .ok(&["get", "lease", "my-job", "-n", ns, "-o", "yaml"])
        .await;
    let stale_file = tmp.path().join("stale.yaml");
    std::fs::write(&stale_file, &stale).expect("write");
    k.ok(&["label", "lease", "my-job", "-n", ns, "extra=1"])
        .await;
    let (ok, _, stderr) = k
        .run(&["replace", "-f", stale_file.to_str().expect("utf-8 path")])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains("Error from server (Conflict)")
            && stderr.contains("the object has been modified"),
        "{stderr}"
    );

    // get -w: a new lease and then its recorded expiry.
    let mut watch = tokio::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.config)
        .arg("--cache-dir")
        .arg(&k.cache)
        .args(["get", "leases", "-n", ns, "-w"])
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl get -w");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        watch.stdout.take().expect("stdout"),
    ));
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line from kubectl get -w within 20 s")
            .expect("read")
            .expect("kubectl get -w ended")
    };
    let header = next_line().await;
    assert_eq!(columns(&header), ["NAME", "HOLDER", "AGE"], "{header}");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next_line().await);
    }
    c.client()
        .acquire(acquire_req(ns, "short", "worker-s", 1))
        .await
        .expect("acquire");
    let added = next_line().await;
    assert!(
        columns(&added).starts_with(&["short", "worker-s"]),
        "{added}"
    );
    // The expiry is a change at a new resourceVersion: another row.
    let expired = next_line().await;
    assert!(
        columns(&expired).starts_with(&["short", "worker-s"]),
        "{expired}"
    );
    drop(watch);

    // delete of a held lease succeeds and the lease is gone at once
    // (kubectl --wait polls for the 404).
    let out = k.ok(&["delete", "lease", "my-job", "-n", ns]).await;
    assert_eq!(out.trim(), "lease.coordination.k8s.io \"my-job\" deleted");
    let (ok, _, stderr) = k.run(&["get", "lease", "my-job", "-n", ns]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
    c.assert_no_crashes();
}
