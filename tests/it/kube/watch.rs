//! WATCH over HTTP against a real cluster: the head arrives before any
//! event, synthetic ADDED events, changes written through gRPC (acquire,
//! renew, release, delete) and the recorded expiry, resuming from a list's
//! resourceVersion, `sendInitialEvents`, bookmarks, a too old
//! resourceVersion (ERROR 410) and `timeoutSeconds`.

use super::{leader_and_follower, Http, V1};
use crate::common::{acquire_req, release_req, Cluster, Options};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use leasehold::proto::v1 as pb;
use serde_json::Value;
use std::time::Duration;

/// The lines of a watch's body.
struct Events {
    body: Incoming,
    buf: Vec<u8>,
    ended: bool,
}

impl Events {
    async fn open(h: &mut Http, path: &str, accept: Option<&str>) -> Events {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        // `start` returns at the head: it must come before any event.
        let resp = h.start("GET", path, &headers, Vec::new()).await;
        assert_eq!(resp.status(), 200, "watch {path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        Events {
            body: resp.into_body(),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next event, or `None` when the stream ended; panics if none
    /// comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "not a JSON line ({e}): {:?}",
                        String::from_utf8_lossy(&line)
                    )
                }));
            }
            if self.ended {
                assert!(
                    self.buf.is_empty(),
                    "a partial line at the end: {:?}",
                    self.buf
                );
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => panic!("no event within {within:?}"),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => panic!("watch body: {e}"),
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event that is not a bookmark.
    async fn change(&mut self, within: Duration) -> Value {
        loop {
            let e = self.next(within).await.expect("the watch ended");
            if e["type"] != "BOOKMARK" {
                return e;
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn summary(e: &Value) -> (String, String, String) {
    let o = &e["object"];
    (
        e["type"].as_str().unwrap_or("").to_string(),
        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        o["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

fn s(t: &str, n: &str, h: &str) -> (String, String, String) {
    (t.to_string(), n.to_string(), h.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sees_every_change_in_order_from_a_follower() {
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let ns = "kube-watch";
    let client = c.client();
    client
        .acquire(acquire_req(ns, "before", "alice", 60))
        .await
        .expect("acquire");
    let mut h = Http::open(&c.endpoint(follower)).await;
    let mut w = Events::open(
        &mut h,
        &format!("{V1}/namespaces/{ns}/leases?watch=1"),
        None,
    )
    .await;
    // Without a resourceVersion: the current state first.
    assert_eq!(
        summary(&w.change(WAIT).await),
        s("ADDED", "before", "alice")
    );

    let a = client
        .acquire(acquire_req(ns, "l", "bob", 1))
        .await
        .expect("acquire");
    let added = w.change(WAIT).await;
    assert_eq!(summary(&added), s("ADDED", "l", "bob"));
    assert_eq!(added["object"]["kind"], "Lease");
    assert_eq!(added["object"]["apiVersion"], "coordination.k8s.io/v1");
    // bob does not renew: the leader records the expiry, a MODIFIED with
    // status.expired.
    let expired = w.change(WAIT).await;
    assert_eq!(summary(&expired), s("MODIFIED", "l", "bob"));
    assert_eq!(expired["object"]["status"]["expired"], true, "{expired}");
    client
        .release(release_req(ns, "l", "bob", a.fencing_token))
        .await
        .expect("release after expiry");
    assert_eq!(summary(&w.change(WAIT).await), s("MODIFIED", "l", ""));
    let d = client
        .delete(pb::DeleteRequest {
            namespace: ns.into(),
            name: "l".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let deleted = w.change(WAIT).await;
    assert_eq!(summary(&deleted), s("DELETED", "l", ""));
    assert_eq!(
        deleted["object"]["metadata"]["resourceVersion"],
        d.revision.to_string(),
        "a deletion carries its revision"
    );

    // From a list's resourceVersion: no replay, only what follows.
    // (`h` carries the watch above: another connection.)
    let mut h2 = Http::open(&c.endpoint(follower)).await;
    let list = h2.ok(&format!("{V1}/namespaces/{ns}/leases"), None).await;
    let at = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut w2 = Events::open(
        &mut h2,
        &format!(
            "{V1}/namespaces/{ns}/leases?watch=true&resourceVersion={at}&allowWatchBookmarks=true"
        ),
        None,
    )
    .await;
    client
        .acquire(acquire_req(ns, "after", "carol", 60))
        .await
        .expect("acquire");
    assert_eq!(
        summary(&w2.change(WAIT).await),
        s("ADDED", "after", "carol")
    );
    assert_eq!(summary(&w.change(WAIT).await), s("ADDED", "after", "carol"));
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_events_bookmarks_timeouts_and_a_too_old_resource_version() {
    // A history of a few events, so that an old resourceVersion is gone.
    let c = Cluster::start_with(
        1,
        Options {
            extra_args: vec!["--history-revisions".into(), "5".into()],
            ..Options::default()
        },
    )
    .await;
    c.wait_for_leader(WAIT).await;
    let ns = "kube-watch2";
    let client = c.client();
    for i in 0..10 {
        client
            .acquire(acquire_req(ns, &format!("l{i}"), "h", 60))
            .await
            .expect("acquire");
    }
    let mut h = Http::open(&c.endpoints()[0]).await;

    // A head with no events behind it still arrives (clients return from
    // Watch() only once they have it), and timeoutSeconds ends it cleanly.
    let mut quiet = Events::open(
        &mut h,
        &format!("{V1}/namespaces/empty/leases?watch=1&timeoutSeconds=1"),
        None,
    )
    .await;
    assert_eq!(quiet.next(WAIT).await, None, "ended after timeoutSeconds");

    // sendInitialEvents (client-go's WatchList): ADDED per lease, then the
    // bookmark that ends them.
    let mut h2 = Http::open(&c.endpoints()[0]).await;
    let mut w = Events::open(
        &mut h2,
        &format!(
            "{V1}/namespaces/{ns}/leases?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector="
        ),
        None,
    )
    .await;
    for _ in 0..10 {
        assert_eq!(w.next(WAIT).await.expect("event")["type"], "ADDED");
    }
    let end = w.next(WAIT).await.expect("bookmark");
    assert_eq!(end["type"], "BOOKMARK", "{end}");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(end["object"]["kind"], "Lease");
    // Without bookmarks allowed, sendInitialEvents is refused as upstream.
    let mut h3 = Http::open(&c.endpoints()[0]).await;
    let r = h3
        .get(&format!(
            "{V1}/namespaces/{ns}/leases?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    r.status_object(422, "Invalid");

    // A resourceVersion the history no longer holds: 200, one ERROR 410
    // event, the end (client-go relists).
    let mut old = Events::open(
        &mut h3,
        &format!("{V1}/namespaces/{ns}/leases?watch=1&resourceVersion=1"),
        None,
    )
    .await;
    let e = old.next(WAIT).await.expect("an ERROR event");
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert_eq!(old.next(WAIT).await, None, "and the end");
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_watch_is_what_kubectl_get_w_reads() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(WAIT).await;
    let ns = "kube-watch3";
    let mut h = Http::open(&c.endpoints()[0]).await;
    let list = h
        .ok(
            &format!("{V1}/namespaces/{ns}/leases?limit=500"),
            Some(super::TABLE_ACCEPT),
        )
        .await;
    let at = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut h2 = Http::open(&c.endpoints()[0]).await;
    let mut w = Events::open(
        &mut h2,
        &format!("{V1}/namespaces/{ns}/leases?resourceVersion={at}&watch=true"),
        Some(super::TABLE_ACCEPT),
    )
    .await;
    c.client()
        .acquire(acquire_req(ns, "t", "worker", 60))
        .await
        .expect("acquire");
    let e = w.change(WAIT).await;
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["kind"], "Table", "{e}");
    assert_eq!(e["object"]["rows"][0]["cells"][0], "t");
    assert_eq!(e["object"]["rows"][0]["cells"][1], "worker");
    c.assert_no_crashes();
}

/// Watches are bounded per node (`--max-watches`), HTTP and gRPC together:
/// one more is a 429 with `Retry-After` (RESOURCE_EXHAUSTED over gRPC), and
/// a closed watch gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn watches_are_bounded_per_node() {
    let c = Cluster::start_with(
        1,
        Options {
            extra_args: vec!["--max-watches".into(), "2".into()],
            ..Options::default()
        },
    )
    .await;
    c.wait_for_leader(WAIT).await;
    let path = format!("{V1}/namespaces/bounded/leases?watch=1&resourceVersion=0");
    let mut h1 = Http::open(&c.endpoints()[0]).await;
    let w1 = Events::open(&mut h1, &path, None).await;
    let mut h2 = Http::open(&c.endpoints()[0]).await;
    let _w2 = Events::open(&mut h2, &path, None).await;
    let mut h3 = Http::open(&c.endpoints()[0]).await;
    let r = h3.get(&path).await;
    let v = r.status_object(429, "TooManyRequests");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("--max-watches"),
        "{v}"
    );
    assert_eq!(r.headers["retry-after"], "1");
    let s = c
        .client()
        .watch_on(
            0,
            pb::WatchRequest {
                namespace: "bounded".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a third watch over gRPC is refused");
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    let (why, meta) = leasehold::api::status::error_info(&s).expect("an ErrorInfo");
    assert_eq!(why, leasehold::api::status::reason::TOO_MANY, "{s:?}");
    assert_eq!(meta.get("what").map(String::as_str), Some("watches"));
    assert_eq!(meta.get("limit").map(String::as_str), Some("2"));
    // Closing one gives its place back (the server notices the closed
    // connection asynchronously).
    drop(w1);
    drop(h1);
    let d = crate::common::Deadline::new("a watch place to free up", WAIT);
    loop {
        let mut h = Http::open(&c.endpoints()[0]).await;
        let resp = h.start("GET", &path, &[], Vec::new()).await;
        if resp.status() == 200 {
            break;
        }
        d.check(resp.status()).await;
    }
    c.assert_no_crashes();
}
