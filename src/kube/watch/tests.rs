use super::*;
use crate::kube::types::tests::sample;
use axum::http::HeaderMap;

const PARAMS: &[&str] = &[
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "allowWatchBookmarks",
    "timeoutSeconds",
    "labelSelector",
    "fieldSelector",
    "continue",
];

fn q(s: &str) -> Query {
    Query::parse(Some(s), PARAMS).unwrap()
}

fn field_of(e: &KubeError) -> (u16, String) {
    (
        e.status.code,
        e.status
            .details
            .as_ref()
            .and_then(|d| d.causes.first())
            .map(|c| c.field.clone())
            .unwrap_or_default(),
    )
}

fn list(stale: bool, at_least: u64, end_bookmark: bool) -> Start {
    Start::List {
        stale,
        at_least,
        end_bookmark,
    }
}

#[test]
fn where_a_watch_starts() {
    assert_eq!(start_of(&q("")).unwrap(), list(false, 0, false));
    assert_eq!(
        start_of(&q("resourceVersion=0")).unwrap(),
        list(true, 0, false)
    );
    assert_eq!(
        start_of(&q("resourceVersion=12")).unwrap(),
        Start::After(12)
    );
    let wl = "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    assert_eq!(start_of(&q(wl)).unwrap(), list(false, 0, true));
    assert_eq!(
        start_of(&q(&format!("{wl}&resourceVersion=7"))).unwrap(),
        list(false, 7, true)
    );
    assert_eq!(
        start_of(&q(&format!("{wl}&resourceVersion=0"))).unwrap(),
        list(true, 0, true)
    );
    assert_eq!(
        start_of(&q(
            "sendInitialEvents=false&resourceVersionMatch=NotOlderThan&resourceVersion=9"
        ))
        .unwrap(),
        Start::After(9)
    );
}

#[test]
fn the_apiservers_watch_option_rules() {
    for (query, code, field) in [
        (
            "resourceVersionMatch=NotOlderThan&resourceVersion=1",
            422,
            "resourceVersionMatch",
        ),
        (
            "sendInitialEvents=true&allowWatchBookmarks=true",
            422,
            "resourceVersionMatch",
        ),
        (
            "sendInitialEvents=true&resourceVersionMatch=Exact&allowWatchBookmarks=true",
            422,
            "resourceVersionMatch",
        ),
        (
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            422,
            "allowWatchBookmarks",
        ),
        ("resourceVersion=x", 400, "resourceVersion"),
        ("sendInitialEvents=maybe", 400, "sendInitialEvents"),
        ("continue=abc", 400, "continue"),
    ] {
        let e = start_of(&q(query)).expect_err(query);
        assert_eq!(field_of(&e), (code, field.to_string()), "{query}");
    }
}

fn opts(query: &str) -> WatchOptions {
    WatchOptions::parse(&q(query), &HeaderMap::new(), Some("default".into()), None).unwrap()
}

fn event(t: pb::watch_event::Type, revision: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        r#type: t as i32,
        lease: (t != pb::watch_event::Type::Progress).then(sample),
        revision,
    }
}

fn parsed(b: Bytes) -> Value {
    assert_eq!(b.last(), Some(&b'\n'), "one event per line");
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn events_map_onto_kubernetes_types() {
    use pb::watch_event::Type;
    let o = opts("");
    let added = parsed(event_line(&o, &event(Type::Added, 17)).unwrap());
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["kind"], "Lease");
    assert_eq!(added["object"]["apiVersion"], "coordination.k8s.io/v1");
    let expired = parsed(event_line(&o, &event(Type::Expired, 18)).unwrap());
    assert_eq!(
        expired["type"], "MODIFIED",
        "EXPIRED is a change clients know"
    );
    let deleted = parsed(event_line(&o, &event(Type::Deleted, 30)).unwrap());
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(
        deleted["object"]["metadata"]["resourceVersion"], "30",
        "a deletion carries its own revision"
    );
    // Progress is a bookmark only for clients that allow bookmarks.
    assert!(event_line(&o, &event(Type::Progress, 40)).is_none());
    let b = opts("allowWatchBookmarks=true");
    let bm = parsed(event_line(&b, &event(Type::Progress, 40)).unwrap());
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(
        bm["object"]["kind"], "Lease",
        "client-go decodes it by kind"
    );
    assert_eq!(bm["object"]["metadata"]["resourceVersion"], "40");
    let end = parsed(bookmark(41, true));
    assert_eq!(
        end["object"]["metadata"]["annotations"][INITIAL_EVENTS_END],
        "true"
    );
    // A field selector on the name filters events too.
    let other = opts("fieldSelector=metadata.name%3Dsomething-else");
    assert_eq!(other.name, "something-else");
    assert!(event_line(&other, &event(Type::Added, 17)).is_none());
    let not = opts("fieldSelector=metadata.name!%3Dmy-job");
    assert!(not.name.is_empty());
    assert!(event_line(&not, &event(Type::Added, 17)).is_none());
}

#[test]
fn table_watches_send_one_row_tables() {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
    );
    let o = WatchOptions::parse(&q(""), &h, Some("default".into()), None).unwrap();
    let e = parsed(event_line(&o, &event(pb::watch_event::Type::Modified, 19)).unwrap());
    assert_eq!(e["object"]["kind"], "Table");
    assert_eq!(e["object"]["rows"].as_array().unwrap().len(), 1);
    assert_eq!(e["object"]["rows"][0]["cells"][1], "worker-a");
}

#[test]
fn watch_timeouts() {
    assert_eq!(opts("timeoutSeconds=5").timeout, Duration::from_secs(5));
    let d = opts("").timeout;
    assert!(
        d >= DEFAULT_TIMEOUT_MIN && d <= DEFAULT_TIMEOUT_MIN * 2,
        "{d:?}"
    );
    let e = WatchOptions::parse(&q("timeoutSeconds=-1"), &HeaderMap::new(), None, None)
        .err()
        .unwrap();
    assert_eq!(field_of(&e), (400, "timeoutSeconds".into()));
}

#[test]
fn compaction_and_slow_watchers_end_with_410() {
    let e = expired(&crate::api::status::compacted(6, 120)).unwrap();
    assert_eq!(e.status.code, 410);
    assert_eq!(e.status.message, "too old resource version: 5 (120)");
    let line = parsed(error_line(&e.status));
    assert_eq!(line["type"], "ERROR");
    assert_eq!(line["object"]["kind"], "Status");
    assert_eq!(line["object"]["reason"], "Expired");
    assert_eq!(line["object"]["code"], 410);
    assert!(expired(&crate::api::status::watcher_too_slow(9)).is_some());
    assert!(expired(&tonic::Status::unavailable("gone")).is_none());
}
