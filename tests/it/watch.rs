//! End-to-end tests of the `Watch` stream (and `leasehold watch`) against a
//! real multi-process cluster: ordering and completeness under concurrent
//! writers, exactly-once resumption across reconnects and node crashes,
//! compacted history, expiry events, progress notifications, slow-watcher
//! cut-off, and the CLI.
//!
//! Writers record the revision of every acknowledged write from the
//! responses; a watcher must deliver exactly those changes, in order.

use crate::common;

use common::{
    acquire_req, assert_status, cli, free_ports, lease_of, release_req, renew_req, Cluster,
    Deadline, Options,
};
use leasehold::api::limits::SLOW_WATCHER_GRACE;
use leasehold::api::status::reason;
use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use pb::watch_event::Type;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Code, Streaming};

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a watcher may take to deliver what the test waits for.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One change as a watcher reports it (or as a writer expects it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    revision: u64,
    kind: &'static str,
    name: String,
    /// The holder in the event's lease ("" when none).
    holder: String,
}

fn change(revision: u64, kind: Type, name: &str, holder: &str) -> Change {
    Change {
        revision,
        kind: kind.as_str_name(),
        name: name.to_string(),
        holder: holder.to_string(),
    }
}

fn type_of(e: &pb::WatchEvent) -> Type {
    Type::try_from(e.r#type).unwrap_or(Type::Unspecified)
}

fn change_of(e: &pb::WatchEvent) -> Change {
    let lease = e.lease.clone().unwrap_or_default();
    let meta = lease.metadata.unwrap_or_default();
    let spec = lease.spec.unwrap_or_default();
    Change {
        revision: e.revision,
        kind: type_of(e).as_str_name(),
        name: meta.name,
        holder: spec.holder_identity,
    }
}

fn rv(l: &Option<pb::Lease>) -> u64 {
    l.as_ref()
        .and_then(|l| l.metadata.as_ref())
        .expect("response carries a lease with metadata")
        .resource_version
}

fn watch_req(ns: &str, start_revision: u64, progress_ms: Option<u32>) -> pb::WatchRequest {
    pb::WatchRequest {
        namespace: ns.into(),
        name: String::new(),
        label_selector: String::new(),
        start_revision,
        progress_notify: progress_ms.is_some(),
        progress_interval_ms: progress_ms.unwrap_or(0),
    }
}

/// Some running node other than `leader`.
fn follower_of(c: &Cluster, leader: u64) -> u64 {
    *c.live_ids()
        .iter()
        .find(|id| **id != leader)
        .expect("a running follower")
}

/// The next message of `s`, waiting at most `within` (panics after that).
async fn next_msg(
    s: &mut Streaming<pb::WatchEvent>,
    within: Duration,
    what: &str,
) -> Result<Option<pb::WatchEvent>, tonic::Status> {
    tokio::time::timeout(within, s.message())
        .await
        .unwrap_or_else(|_| panic!("{what}: no message within {within:?}"))
}

/// Opens a "from now" watch on endpoint `idx` of `client` and waits for the
/// PROGRESS event the server sends at once, which proves the watcher is
/// subscribed: every change acknowledged after this returns is delivered.
/// The progress interval is long, so no further PROGRESS arrives in a test.
async fn open_synced(client: &Client, idx: usize, ns: &str) -> (Streaming<pb::WatchEvent>, u64) {
    let mut s = client
        .watch_on(idx, watch_req(ns, 0, Some(600_000)))
        .await
        .expect("open watch");
    let first = next_msg(&mut s, EVENT_TIMEOUT, "initial progress event")
        .await
        .expect("initial progress event")
        .expect("stream open");
    assert_eq!(
        type_of(&first),
        Type::Progress,
        "a progress-aware watch from now starts with a PROGRESS event: {first:?}"
    );
    (s, first.revision)
}

/// Reads events (skipping PROGRESS) until one at or above `until`; panics
/// if the stream fails, ends, or stalls first.
async fn read_until(s: &mut Streaming<pb::WatchEvent>, until: u64, what: &str) -> Vec<Change> {
    let mut got: Vec<Change> = Vec::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while got.last().is_none_or(|c| c.revision < until) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, s.message()).await;
        match m {
            Err(_) => panic!(
                "{what}: revision {until} not reached within {EVENT_TIMEOUT:?}; got {} events, last {:?}",
                got.len(),
                got.last()
            ),
            Ok(Err(st)) => panic!(
                "{what}: stream failed before revision {until}: {st:?}; got {} events, last {:?}",
                got.len(),
                got.last()
            ),
            Ok(Ok(None)) => panic!(
                "{what}: stream ended before revision {until}; last {:?}",
                got.last()
            ),
            Ok(Ok(Some(e))) if type_of(&e) == Type::Progress => {}
            Ok(Ok(Some(e))) => got.push(change_of(&e)),
        }
    }
    got
}

/// Asserts `got` is in strictly increasing revision order and equals the
/// writers' `expected` changes exactly (same revisions, types, leases).
fn assert_exactly(what: &str, got: &[Change], expected: &[Change]) {
    for w in got.windows(2) {
        assert!(
            w[0].revision < w[1].revision,
            "{what}: revisions must strictly increase (no duplicates, in order): {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut want = expected.to_vec();
    want.sort();
    if got != want.as_slice() {
        let g: BTreeSet<&Change> = got.iter().collect();
        let w: BTreeSet<&Change> = want.iter().collect();
        let missing: Vec<_> = w.difference(&g).collect();
        let extra: Vec<_> = g.difference(&w).collect();
        panic!(
            "{what}: delivered {} changes, expected {}; missing {missing:?}; unexpected {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// One round of a lease's life through `client`, 8 changes: created by an
/// acquire (ADDED), renewed twice, renewed by a repeated acquire, released,
/// acquired by another holder, released, deleted (DELETED). Returns the
/// changes with the revisions the responses reported.
async fn lease_round(client: &Client, ns: &str, name: &str, round: u32) -> Vec<Change> {
    let mut out = Vec::new();
    let a = format!("{name}-a{round}");
    let b = format!("{name}-b{round}");
    let r = client
        .acquire(acquire_req(ns, name, &a, 30))
        .await
        .unwrap_or_else(|e| panic!("acquire {ns}/{name} by {a}: {e:?}"));
    assert!(
        r.created && r.newly_acquired,
        "first acquire creates: {r:?}"
    );
    out.push(change(rv(&r.lease), Type::Added, name, &a));
    let token = r.fencing_token;
    for _ in 0..2 {
        let r = client
            .renew(renew_req(ns, name, &a, token))
            .await
            .unwrap_or_else(|e| panic!("renew {ns}/{name}: {e:?}"));
        out.push(change(rv(&r.lease), Type::Modified, name, &a));
    }
    let r = client
        .acquire(acquire_req(ns, name, &a, 30))
        .await
        .unwrap_or_else(|e| panic!("re-acquire {ns}/{name}: {e:?}"));
    assert!(
        !r.created && !r.newly_acquired,
        "a repeated acquire renews: {r:?}"
    );
    assert_eq!(r.fencing_token, token);
    out.push(change(rv(&r.lease), Type::Modified, name, &a));
    let r = client
        .release(release_req(ns, name, &a, token))
        .await
        .unwrap_or_else(|e| panic!("release {ns}/{name}: {e:?}"));
    out.push(change(rv(&r.lease), Type::Modified, name, ""));
    let r = client
        .acquire(acquire_req(ns, name, &b, 30))
        .await
        .unwrap_or_else(|e| panic!("acquire {ns}/{name} by {b}: {e:?}"));
    assert!(!r.created && r.newly_acquired, "{r:?}");
    let token_b = r.fencing_token;
    out.push(change(rv(&r.lease), Type::Modified, name, &b));
    let r = client
        .release(release_req(ns, name, &b, token_b))
        .await
        .unwrap_or_else(|e| panic!("release {ns}/{name} by {b}: {e:?}"));
    out.push(change(rv(&r.lease), Type::Modified, name, ""));
    let r = client
        .delete(pb::DeleteRequest {
            namespace: ns.into(),
            name: name.into(),
            resource_version: None,
            request_id: String::new(),
            uid: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("delete {ns}/{name}: {e:?}"));
    assert!(r.revision > 0, "{r:?}");
    out.push(change(r.revision, Type::Deleted, name, ""));
    out
}

/// `rounds` rounds of [`lease_round`] on lease `name`.
async fn lease_rounds(client: Client, ns: String, name: String, rounds: u32) -> Vec<Change> {
    let mut out = Vec::new();
    for round in 0..rounds {
        out.extend(lease_round(&client, &ns, &name, round).await);
    }
    out
}

/// Runs writers concurrently, one per (client, lease name), and returns
/// every change they made.
async fn concurrent_writers(writers: Vec<(Client, String)>, ns: &str, rounds: u32) -> Vec<Change> {
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|(client, name)| tokio::spawn(lease_rounds(client, ns.to_string(), name, rounds)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    all
}

fn max_revision(changes: &[Change]) -> u64 {
    changes.iter().map(|c| c.revision).max().expect("changes")
}

// ---------------------------------------------------------------------------
// 1. Ordering and completeness
// ---------------------------------------------------------------------------

/// A namespace-scoped watcher on node 1 sees exactly the changes that
/// concurrent writers on nodes 2 and 3 made in its namespace, in strictly
/// increasing revision order, with the right types; changes in another
/// namespace are not delivered.
#[tokio::test(flavor = "multi_thread")]
async fn watch_delivers_every_change_in_order() {
    let c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let watch_client = c.client_for(&[1]);
    let (mut s, _) = open_synced(&watch_client, 0, "orders").await;

    let mut writers = Vec::new();
    for i in 0..4u64 {
        writers.push((c.client_for(&[2 + i % 2]), format!("l{i}")));
    }
    // Noise in another namespace, which the watcher must not see.
    let noise = tokio::spawn(lease_rounds(
        c.client_for(&[3]),
        "elsewhere".into(),
        "noise".into(),
        2,
    ));
    let expected = concurrent_writers(writers, "orders", 3).await;
    let noise = noise.await.expect("noise writer");
    assert_eq!(expected.len(), 4 * 3 * 8);

    let got = read_until(&mut s, max_revision(&expected), "watcher on node 1").await;
    assert_exactly("watcher on node 1", &got, &expected);
    for n in &noise {
        assert!(
            got.iter().all(|g| g.revision != n.revision),
            "a change in another namespace was delivered: {n:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Resume exactly once across a reconnect
// ---------------------------------------------------------------------------

/// A watcher reads part of the changes on node 1, goes away, more changes
/// are made, and it resumes on node 2 from the last revision it saw + 1:
/// together the two streams deliver every change exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn resume_on_another_node_is_exactly_once() {
    let c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let watcher = c.client_for(&[1, 2]);
    let writer = c.client_for(&[3]);
    let (mut s, _) = open_synced(&watcher, 0, "resume").await;

    let mut expected = lease_rounds(writer, "resume".into(), "r".into(), 2).await;
    assert_eq!(expected.len(), 16);
    // Read only some of them, then drop the stream.
    let part = read_until(&mut s, expected[5].revision, "first stream").await;
    assert_eq!(part.len(), 6, "{part:?}");
    drop(s);

    expected.extend(lease_rounds(c.client_for(&[3]), "resume".into(), "r2".into(), 1).await);
    let last = part.last().expect("events").revision;
    let mut s2 = watcher
        .watch_on(1, watch_req("resume", last + 1, None))
        .await
        .expect("resume on node 2");
    let rest = read_until(&mut s2, max_revision(&expected), "resumed stream").await;
    assert!(
        rest.first().expect("resumed events").revision > last,
        "the resumed stream starts after {last}: {rest:?}"
    );
    let mut all = part;
    all.extend(rest);
    assert_exactly("first + resumed stream", &all, &expected);
}

// ---------------------------------------------------------------------------
// 3. Resume after SIGKILL of the watcher's node
// ---------------------------------------------------------------------------

/// Watches on `victim` (the leader when `kill_leader`, else a follower),
/// SIGKILLs it with events unread, resumes on a survivor from the last
/// revision + 1 while more writes go through the survivors, and checks that
/// every acknowledged write is delivered exactly once, in order.
async fn resume_after_sigkill(kill_leader: bool) {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let victim = if kill_leader {
        leader
    } else {
        follower_of(&c, leader)
    };
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != victim).collect();
    // Endpoint 0 is the victim, endpoint 1 a survivor.
    let watcher = c.client_for(&[victim, survivors[0]]);
    let (mut s, _) = open_synced(&watcher, 0, "crash").await;

    let writers = vec![
        (c.client_for(&survivors), "k0".to_string()),
        (
            c.client_for(&[survivors[1], survivors[0]]),
            "k1".to_string(),
        ),
    ];
    let mut expected = concurrent_writers(writers, "crash", 2).await;
    assert_eq!(expected.len(), 32);
    expected.sort();
    // Read a few, leave the rest unread (buffered in the node, the
    // connection or the client), then kill the node.
    let mut got = read_until(&mut s, expected[3].revision, "stream before the kill").await;
    c.kill(victim);
    let err = loop {
        match next_msg(&mut s, Duration::from_secs(10), "stream of the killed node").await {
            Ok(Some(e)) if type_of(&e) == Type::Progress => {}
            Ok(Some(e)) => got.push(change_of(&e)),
            Ok(None) => panic!("the stream of a SIGKILLed node ended cleanly instead of failing"),
            Err(st) => break st,
        }
    };
    eprintln!("stream of killed node {victim} failed as expected: {err:?}");
    let last = got.last().expect("events before the kill").revision;

    // Resume at once on a survivor; it replays what was missed, then
    // follows the writes made during the outage.
    let mut s2 = watcher
        .watch_on(1, watch_req("crash", last + 1, None))
        .await
        .expect("resume on a survivor");
    let new_leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    assert_ne!(new_leader, victim);
    let writers = vec![
        (c.client_for(&survivors), "k2".to_string()),
        (
            c.client_for(&[survivors[1], survivors[0]]),
            "k3".to_string(),
        ),
    ];
    expected.extend(concurrent_writers(writers, "crash", 1).await);
    got.extend(read_until(&mut s2, max_revision(&expected), "resumed stream").await);
    assert_exactly("stream before the kill + resumed stream", &got, &expected);
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_follower_sigkill() {
    resume_after_sigkill(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_leader_sigkill() {
    resume_after_sigkill(true).await;
}

// ---------------------------------------------------------------------------
// 4. Out of range
// ---------------------------------------------------------------------------

/// The first failure of a watch (from opening it or its first message).
async fn watch_error(client: &Client, idx: usize, req: pb::WatchRequest) -> tonic::Status {
    match client.watch_on(idx, req).await {
        Err(st) => st,
        Ok(mut s) => match next_msg(&mut s, EVENT_TIMEOUT, "compacted watch").await {
            Err(st) => st,
            Ok(m) => panic!("expected the watch to fail, got {m:?}"),
        },
    }
}

/// With `--history-revisions 20`, a watch from revision 1 after ~100
/// changes fails with OUT_OF_RANGE/COMPACTED naming the oldest revision; a
/// watch from that revision replays the retained history (about 20 events,
/// all changes from there on) and goes on.
#[tokio::test(flavor = "multi_thread")]
async fn compacted_history_is_out_of_range() {
    const KEEP: usize = 20;
    let c = Cluster::start_with(
        3,
        Options {
            extra_args: vec!["--history-revisions".into(), KEEP.to_string()],
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let node = follower_of(&c, leader);
    let writer = c.client();
    let mut expected = Vec::new();
    let r = writer
        .acquire(acquire_req("hist", "h", "holder", 60))
        .await
        .expect("acquire");
    expected.push(change(rv(&r.lease), Type::Added, "h", "holder"));
    for _ in 0..99 {
        let r = writer
            .renew(renew_req("hist", "h", "holder", r.fencing_token))
            .await
            .expect("renew");
        expected.push(change(rv(&r.lease), Type::Modified, "h", "holder"));
    }
    let last = max_revision(&expected);
    c.wait_applied(node, last, EVENT_TIMEOUT).await;

    let watcher = c.client_for(&[node]);
    let mut attempt = 0;
    let (oldest, replay, progress) = loop {
        attempt += 1;
        let st = watch_error(&watcher, 0, watch_req("hist", 1, None)).await;
        let meta = assert_status("watch from 1", &st, Code::OutOfRange, reason::COMPACTED);
        assert_eq!(meta.get("requestedRevision").map(String::as_str), Some("1"));
        let oldest: u64 = meta
            .get("oldestRevision")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("oldestRevision metadata in {st:?}"));
        assert!(oldest > 1, "history was trimmed: oldest {oldest}");
        assert!(
            oldest + KEEP as u64 * 2 > last && oldest <= last,
            "about {KEEP} revisions are kept: oldest {oldest}, last write {last}"
        );
        // From the oldest revision, every namespace: the replay is the whole
        // retained history, ended by the first PROGRESS event.
        let mut s = match watcher
            .watch_on(0, watch_req("", oldest, Some(600_000)))
            .await
        {
            Ok(s) => s,
            Err(st) => panic!("watch from the oldest revision {oldest}: {st:?}"),
        };
        let mut replay = Vec::new();
        let outcome = loop {
            match next_msg(&mut s, EVENT_TIMEOUT, "replay from the oldest revision").await {
                Ok(Some(e)) if type_of(&e) == Type::Progress => break Ok(e.revision),
                Ok(Some(e)) => replay.push(e),
                Ok(None) => panic!("replay ended without a status"),
                Err(st) => break Err(st),
            }
        };
        match outcome {
            Ok(p) => break (oldest, replay, p),
            // An identity-lease renewal trimmed one more revision meanwhile.
            Err(st) if st.code() == Code::OutOfRange && attempt < 5 => continue,
            Err(st) => panic!("watch from the oldest revision {oldest}: {st:?}"),
        }
    };
    assert!(!replay.is_empty());
    assert!(
        replay[0].revision >= oldest,
        "replay starts at or after {oldest}: {:?}",
        replay[0].revision
    );
    assert!(
        replay.len() >= KEEP && replay.len() <= 2 * KEEP,
        "the node retains about {KEEP} events, replayed {}",
        replay.len()
    );
    assert!(
        progress >= last,
        "progress {progress} covers the last write {last}"
    );
    let ours: Vec<Change> = replay
        .iter()
        .filter(|e| {
            e.lease
                .as_ref()
                .and_then(|l| l.metadata.as_ref())
                .map(|m| m.namespace.as_str())
                == Some("hist")
        })
        .map(change_of)
        .collect();
    let want: Vec<Change> = expected
        .iter()
        .filter(|ch| ch.revision >= oldest)
        .cloned()
        .collect();
    assert_exactly("replay from the oldest revision", &ours, &want);
}

// ---------------------------------------------------------------------------
// 5. Expiry without client activity
// ---------------------------------------------------------------------------

/// A 1 s lease that is never renewed: a watcher sees ADDED then EXPIRED
/// (holder still named, status.expired) within about 3 s, Get agrees, the
/// holder's renewal is refused as lost, and another holder acquires it, not
/// before d·1.01 after the acquire.
#[tokio::test(flavor = "multi_thread")]
async fn expiry_is_an_event_without_client_activity() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let watcher = c.client_for(&[follower_of(&c, leader)]);
    let (mut s, _) = open_synced(&watcher, 0, "exp").await;
    let client = c.client();

    let sent = Instant::now();
    let r = client
        .acquire(acquire_req("exp", "short", "holder-1", 1))
        .await
        .expect("acquire");
    let acked = Instant::now();
    let token = r.fencing_token;
    let added_rev = rv(&r.lease);

    let mut events = Vec::new();
    while events.len() < 2 {
        let left = Duration::from_secs(3).saturating_sub(acked.elapsed());
        match next_msg(
            &mut s,
            left.max(Duration::from_millis(1)),
            "ADDED then EXPIRED within d + 2 s",
        )
        .await
        {
            Ok(Some(e)) if type_of(&e) == Type::Progress => {}
            Ok(Some(e)) => events.push(e),
            other => panic!("watch failed: {other:?}"),
        }
    }
    assert_eq!(
        (type_of(&events[0]), events[0].revision),
        (Type::Added, added_rev),
        "{:?}",
        events[0]
    );
    let exp = &events[1];
    assert_eq!(type_of(exp), Type::Expired, "{exp:?}");
    assert!(exp.revision > added_rev);
    let lease = exp.lease.clone().expect("EXPIRED carries the lease");
    assert_eq!(lease.spec.as_ref().unwrap().holder_identity, "holder-1");
    let st = lease.status.as_ref().unwrap();
    assert!(st.expired, "status.expired in the EXPIRED event: {lease:?}");
    assert_eq!(st.fencing_token, token, "the lapsed tenure's token is kept");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "EXPIRED before the duration passed ({:?})",
        sent.elapsed()
    );

    let got = lease_of(
        client
            .get(pb::GetRequest {
                namespace: "exp".into(),
                name: "short".into(),
                stale: false,
            })
            .await
            .expect("get")
            .lease,
    );
    assert!(
        got.status.as_ref().unwrap().expired,
        "Get shows expired: {got:?}"
    );
    assert_eq!(got.spec.as_ref().unwrap().holder_identity, "holder-1");

    let err = client
        .renew(renew_req("exp", "short", "holder-1", token))
        .await
        .expect_err("renewal of an expired tenure");
    assert_status(
        "renew after expiry",
        &err,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );

    // Another holder: refused as held until d·1.01 after the acquire was
    // stamped (which is after `sent`), granted soon after.
    let d = Deadline::new(
        "holder-2 to acquire the expired lease",
        Duration::from_secs(5),
    );
    let won = loop {
        match client
            .acquire(acquire_req("exp", "short", "holder-2", 10))
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert_status(
                    "acquire by holder-2",
                    &e,
                    Code::FailedPrecondition,
                    reason::LEASE_HELD,
                );
                d.check(e.message().to_string()).await;
            }
        }
    };
    assert!(
        sent.elapsed() >= Duration::from_millis(1010),
        "granted to another holder {:?} after the acquire, before d·1.01",
        sent.elapsed()
    );
    assert!(
        acked.elapsed() < Duration::from_secs(3),
        "granted only {:?} after the acquire",
        acked.elapsed()
    );
    assert!(won.newly_acquired && !won.created);
    assert!(won.fencing_token > token);
    let after = read_until(&mut s, rv(&won.lease), "the new tenure").await;
    let last = after.last().unwrap();
    assert_eq!(
        (last.kind, last.holder.as_str()),
        ("MODIFIED", "holder-2"),
        "{after:?}"
    );
}

// ---------------------------------------------------------------------------
// 6. Progress notifications
// ---------------------------------------------------------------------------

/// The next PROGRESS revision on `s`; panics on anything else.
async fn next_progress(s: &mut Streaming<pb::WatchEvent>) -> u64 {
    match next_msg(s, Duration::from_secs(3), "PROGRESS").await {
        Ok(Some(e)) if type_of(&e) == Type::Progress => {
            assert!(e.lease.is_none(), "PROGRESS carries no lease: {e:?}");
            e.revision
        }
        other => panic!("expected a PROGRESS event, got {other:?}"),
    }
}

/// An idle watcher with progress_notify every 200 ms gets PROGRESS events
/// carrying the node's current revision; they never go backwards and they
/// follow changes the watcher does not match (another namespace).
#[tokio::test(flavor = "multi_thread")]
async fn idle_watcher_gets_progress_at_the_current_revision() {
    // No identity leases: nothing changes unless the test writes.
    let c = Cluster::start_with(
        3,
        Options {
            extra_args: vec!["--no-identity-lease".into()],
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let node = follower_of(&c, leader);
    let client = c.client();
    let r = client
        .acquire(acquire_req("other", "x", "h", 60))
        .await
        .expect("acquire");
    let r0 = rv(&r.lease);
    let d = Deadline::new("the follower to apply the first write", EVENT_TIMEOUT);
    while c.status(node).await.map(|s| s.revision).unwrap_or(0) < r0 {
        d.check(r0).await;
    }

    let watcher = c.client_for(&[node]);
    // The first PROGRESS comes at once, not after the interval: with a 60 s
    // interval it arrives well within 5 s.
    let mut once = watcher
        .watch_on(0, watch_req("quiet", 0, Some(60_000)))
        .await
        .expect("watch");
    let p = tokio::time::timeout(Duration::from_secs(5), next_progress(&mut once))
        .await
        .expect("an immediate PROGRESS event at stream start");
    assert_eq!(p, r0, "the first PROGRESS names the current revision");
    drop(once);

    let mut s = watcher
        .watch_on(0, watch_req("quiet", 0, Some(200)))
        .await
        .expect("watch");
    let mut seen = vec![next_progress(&mut s).await];
    let started = Instant::now();
    for _ in 0..4 {
        seen.push(next_progress(&mut s).await);
    }
    let idle = started.elapsed();
    let status = c.status(node).await.expect("status").revision;
    assert_eq!(status, r0, "nothing changed meanwhile");
    assert!(
        seen.iter().all(|p| *p == status),
        "every PROGRESS names the current revision {status}: {seen:?}"
    );
    assert!(
        idle >= Duration::from_millis(700) && idle < Duration::from_secs(4),
        "4 PROGRESS events after the first took {idle:?} at a 200 ms interval"
    );

    // A change in another namespace: not delivered, but progress moves on.
    let r = client
        .renew(renew_req("other", "x", "h", r.fencing_token))
        .await
        .expect("renew");
    let r1 = rv(&r.lease);
    let d = Deadline::new(format!("PROGRESS to reach revision {r1}"), EVENT_TIMEOUT);
    loop {
        let p = next_progress(&mut s).await;
        assert!(
            p >= *seen.last().unwrap(),
            "PROGRESS went backwards: {seen:?} then {p}"
        );
        seen.push(p);
        if p == r1 {
            break;
        }
        d.check(&seen).await;
    }
    for _ in 0..2 {
        let p = next_progress(&mut s).await;
        assert_eq!(p, r1, "{seen:?}");
        assert_eq!(c.status(node).await.expect("status").revision, r1);
    }
}

// ---------------------------------------------------------------------------
// 7. Slow watcher
// ---------------------------------------------------------------------------

/// Lease changes of about [`BLOB`] bytes each, made by [`SLOW_WRITERS`] concurrent writers.
const SLOW_WRITERS: usize = 8;
const SLOW_CHANGES_PER_WRITER: usize = 50;
const BLOB: usize = 64 * 1024;

async fn blob_writer(client: Client, name: String) -> Vec<Change> {
    let blob = "x".repeat(BLOB);
    let mut out = Vec::new();
    let mut version = 0;
    for i in 0..SLOW_CHANGES_PER_WRITER {
        let lease = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "slow".into(),
                name: name.clone(),
                resource_version: version,
                annotations: HashMap::from([
                    ("blob".to_string(), blob.clone()),
                    ("i".to_string(), i.to_string()),
                ]),
                ..Default::default()
            }),
            spec: Some(pb::LeaseSpec {
                holder_identity: "writer".into(),
                lease_duration_seconds: Some(60),
                ..Default::default()
            }),
            status: None,
        };
        let r = client
            .put(pb::PutRequest {
                lease: Some(lease),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("put {name} #{i}: {e:?}"));
        assert_eq!(r.created, i == 0);
        version = rv(&r.lease);
        let kind = if i == 0 { Type::Added } else { Type::Modified };
        out.push(change(version, kind, &name, "writer"));
    }
    out
}

/// A watcher that never reads is cut off with RESOURCE_EXHAUSTED /
/// WATCHER_TOO_SLOW and a resumeRevision once its buffer stayed full for
/// SLOW_WATCHER_GRACE, after the events already buffered; resuming from that
/// revision delivers the rest without a gap. Meanwhile writers and a fast
/// watcher on the same node are not held up.
#[tokio::test(flavor = "multi_thread")]
async fn slow_watcher_is_cut_off_and_can_resume() {
    let c = Cluster::start(3).await;
    // On the leader: a follower may fall behind under this load and then
    // not catch up (see `restarted_follower_catches_up_after_large_changes`);
    // that is not what this test is about.
    let node = c.wait_for_leader(LEADER_TIMEOUT).await;
    let start = c.status(node).await.expect("status").revision + 1;
    // Separate clients: separate connections, so the slow stream's
    // unread data does not hold up the others.
    let slow_client = c.client_for(&[node]);
    let fast_client = c.client_for(&[node]);
    let mut slow = slow_client
        .watch_on(0, watch_req("slow", start, None))
        .await
        .expect("slow watch");
    let mut fast = fast_client
        .watch_on(0, watch_req("slow", start, None))
        .await
        .expect("fast watch");
    let total = SLOW_WRITERS * SLOW_CHANGES_PER_WRITER;
    let fast_task = tokio::spawn(async move {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < total {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, fast.message()).await {
                Ok(Ok(Some(e))) => got.push(change_of(&e)),
                other => panic!("fast watcher after {} events: {other:?}", got.len()),
            }
        }
        got
    });

    let began = Instant::now();
    let writers: Vec<_> = (0..SLOW_WRITERS)
        .map(|i| tokio::spawn(blob_writer(c.client(), format!("big-{i}"))))
        .collect();
    let mut expected = Vec::new();
    for w in writers {
        let done = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers complete despite the slow watcher")
            .expect("writer task");
        expected.extend(done);
    }
    let writes_done = Instant::now();
    eprintln!(
        "{total} writes of {BLOB} bytes took {:?}",
        writes_done - began
    );
    let fast_got = tokio::time::timeout(Duration::from_secs(60), fast_task)
        .await
        .expect("the fast watcher keeps up")
        .expect("fast watcher task");
    assert_exactly("fast watcher", &fast_got, &expected);

    // Keep the slow stream unread until its grace period has certainly run
    // out, checking meanwhile that the node keeps serving.
    let cut_off_by = writes_done + SLOW_WATCHER_GRACE + Duration::from_millis(1500);
    let d = Deadline::new(
        "the slow watcher's grace period to pass",
        Duration::from_secs(30),
    );
    while Instant::now() < cut_off_by {
        let st = c.status(node).await.expect("the node keeps serving");
        d.check(st.revision).await;
    }

    let mut slow_got = Vec::new();
    let err = loop {
        match next_msg(&mut slow, EVENT_TIMEOUT, "slow stream").await {
            Ok(Some(e)) => slow_got.push(change_of(&e)),
            Ok(None) => panic!(
                "the slow stream ended without an error after {} of {total} events",
                slow_got.len()
            ),
            Err(st) => break st,
        }
    };
    let meta = assert_status(
        "slow watcher",
        &err,
        Code::ResourceExhausted,
        reason::WATCHER_TOO_SLOW,
    );
    let resume: u64 = meta
        .get("resumeRevision")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("resumeRevision in {err:?}"));
    let n = slow_got.len();
    eprintln!("slow watcher got {n} events, then {err:?}");
    assert!(
        n > 0,
        "the slow watcher gets the events buffered before the cut-off"
    );
    assert!(n < total, "the slow watcher was cut off before the end");
    assert_eq!(
        slow_got,
        fast_got[..n],
        "the slow watcher's events are a prefix of all events"
    );
    assert!(
        resume > fast_got[n - 1].revision && resume <= fast_got[n].revision,
        "resumeRevision {resume} lies after the last delivered ({}) and at or before the next ({})",
        fast_got[n - 1].revision,
        fast_got[n].revision
    );
    drop(slow);

    let mut again = slow_client
        .watch_on(0, watch_req("slow", resume, None))
        .await
        .expect("resume the slow watcher");
    let rest = read_until(&mut again, max_revision(&expected), "resumed slow watcher").await;
    let mut all = slow_got;
    all.extend(rest);
    assert_exactly("slow watcher + resumed stream", &all, &expected);
    c.assert_no_crashes();
}

// ---------------------------------------------------------------------------
// 8. CLI
// ---------------------------------------------------------------------------

/// `leasehold watch -o json --max-events K` through a dead endpoint first
/// prints K JSON lines, a contiguous run of the writes being made; `--from
/// 1` on a compacted history exits 1 naming the oldest revision.
#[tokio::test(flavor = "multi_thread")]
async fn cli_watch_json_and_compacted() {
    let c = Cluster::start_with(
        3,
        Options {
            extra_args: vec!["--history-revisions".into(), "20".into()],
            ..Default::default()
        },
    )
    .await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let endpoints = format!("{dead},{}", c.endpoint(2));

    // A writer renews one lease over and over until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<Change>>> = Arc::default();
    let writer = {
        let (client, stop, written) = (c.client(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let r = client
                .acquire(acquire_req("cliw", "w", "h", 60))
                .await
                .expect("acquire");
            written
                .lock()
                .unwrap()
                .push(change(rv(&r.lease), Type::Added, "w", "h"));
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) || n < 40 {
                let rr = client
                    .renew(renew_req("cliw", "w", "h", r.fencing_token))
                    .await
                    .expect("renew");
                written
                    .lock()
                    .unwrap()
                    .push(change(rv(&rr.lease), Type::Modified, "w", "h"));
                n += 1;
                if n > 5000 {
                    panic!("the CLI watcher never finished");
                }
            }
        })
    };
    const K: usize = 5;
    let run = cli(
        &endpoints,
        &[
            "watch",
            "-n",
            "cliw",
            "-o",
            "json",
            "--max-events",
            &K.to_string(),
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), K, "{run:#?}");
    let mut printed = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("invalid JSON {line:?}: {e}"));
        let obj = &v["object"];
        assert_eq!(obj["kind"], "Lease", "{line}");
        assert_eq!(obj["metadata"]["namespace"], "cliw", "{line}");
        let revision = v["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("revision in {line}"));
        assert_eq!(
            obj["metadata"]["resourceVersion"]
                .as_str()
                .map(str::parse::<u64>),
            Some(Ok(revision)),
            "the object is the lease at that revision: {line}"
        );
        let kind = match v["type"].as_str() {
            Some("ADDED") => Type::Added,
            Some("MODIFIED") => Type::Modified,
            other => panic!("unexpected type {other:?} in {line}"),
        };
        let holder = obj["spec"]["holderIdentity"].as_str().unwrap_or("");
        printed.push(change(
            revision,
            kind,
            obj["metadata"]["name"].as_str().unwrap_or(""),
            holder,
        ));
    }
    let written = written.lock().unwrap().clone();
    let at = written
        .iter()
        .position(|w| *w == printed[0])
        .unwrap_or_else(|| panic!("printed {:?} is not a write: {written:?}", printed[0]));
    assert_eq!(
        printed,
        written[at..at + K],
        "the CLI printed a contiguous run of the writes, in order"
    );

    // From revision 1: compacted; exit code 1 naming the oldest revision.
    let run = cli(&c.endpoint(2), &["watch", "-n", "cliw", "--from", "1"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let oldest: u64 = run
        .stderr
        .split("oldest available: ")
        .nth(1)
        .and_then(|s| s.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the error names the oldest revision: {run:#?}"));
    assert!(oldest > 1, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

// ---------------------------------------------------------------------------
// 9. A follower that missed large changes
// ---------------------------------------------------------------------------

/// A follower that was down while large changes (128 KiB annotations) were
/// made catches up after a restart, and a watcher on it resumes from where
/// it left off and receives every change.
///
/// Regression: openraft bounds each AppendEntries by the heartbeat interval
/// but not by size; `PeerClient::append_entries` now sends at most ~1 MiB
/// per call and reports a partial success, so the follower catches up.
#[tokio::test(flavor = "multi_thread")]
async fn restarted_follower_catches_up_after_large_changes() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let follower = follower_of(&c, leader);
    let client = c.client_for(&[leader]);
    let blob = "y".repeat(128 * 1024);
    let r = client
        .acquire(acquire_req("catch", "first", "h", 60))
        .await
        .expect("acquire");
    let first = rv(&r.lease);
    c.wait_applied(follower, first, EVENT_TIMEOUT).await;
    c.kill(follower);

    let mut expected = vec![change(first, Type::Added, "first", "h")];
    let mut version = 0;
    for i in 0..120 {
        let lease = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "catch".into(),
                name: "big".into(),
                resource_version: version,
                annotations: HashMap::from([
                    ("blob".to_string(), blob.clone()),
                    ("i".to_string(), i.to_string()),
                ]),
                ..Default::default()
            }),
            spec: Some(pb::LeaseSpec::default()),
            status: None,
        };
        let r = client
            .put(pb::PutRequest {
                lease: Some(lease),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("put #{i} with the follower down: {e:?}"));
        version = rv(&r.lease);
        let kind = if i == 0 { Type::Added } else { Type::Modified };
        expected.push(change(version, kind, "big", ""));
    }

    c.restart(follower).await;
    let watcher = c.client_for(&[follower]);
    let mut s = watcher
        .watch_on(0, watch_req("catch", first, None))
        .await
        .expect("watch on the restarted follower");
    let got = read_until(&mut s, version, "watcher on the restarted follower").await;
    assert_exactly("watcher on the restarted follower", &got, &expected);
}

// ---------------------------------------------------------------------------
// 10. A watcher on a node that catches up by snapshot
// ---------------------------------------------------------------------------

/// `n` renewals of lease `name` (acquired first) through `client`.
async fn renewals(client: Client, ns: String, name: String, n: usize) -> Vec<Change> {
    let r = client
        .acquire(acquire_req(&ns, &name, "h", 300))
        .await
        .unwrap_or_else(|e| panic!("acquire {name}: {e:?}"));
    let mut out = vec![change(rv(&r.lease), Type::Added, &name, "h")];
    for _ in 0..n {
        let rr = client
            .renew(renew_req(&ns, &name, "h", r.fencing_token))
            .await
            .unwrap_or_else(|e| panic!("renew {name}: {e:?}"));
        out.push(change(rv(&rr.lease), Type::Modified, &name, "h"));
    }
    out
}

/// A follower that was down while the leader snapshotted and purged the log
/// catches up by installing a snapshot, which carries the watch history. A
/// watcher opened on it right after the restart, from a revision the
/// follower had applied before the crash, gets every change exactly once,
/// in order: from the follower's own history and then the snapshot's (when
/// the snapshot arrives after the watcher opened), or from the snapshot's
/// history alone, then live changes.
#[tokio::test(flavor = "multi_thread")]
async fn watcher_on_a_follower_that_installs_a_snapshot() {
    let mut c = Cluster::start_with(
        3,
        Options {
            snapshot_logs: Some(100),
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let follower = follower_of(&c, leader);
    let mut expected = renewals(c.client_for(&[leader]), "snap".into(), "pre".into(), 20).await;
    let first = expected[0].revision;
    let before_kill = max_revision(&expected);
    let applied = c.wait_applied(follower, before_kill, EVENT_TIMEOUT).await;
    c.kill(follower);

    // Enough entries that the leader purges what the follower lacks (it
    // keeps 1,000 entries behind its snapshot). Concurrent writes share log
    // entries (the proposer batches them), so how many entries a round makes
    // depends on timing: write rounds until the leader has purged enough,
    // within what the watch history keeps (10,000 changes).
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != follower).collect();
    let mut d = None;
    let mut round = 0;
    loop {
        let s = c.status(leader).await.expect("leader status");
        if s.snapshot_index > applied.last_log_index + 1_000 + 100 {
            break;
        }
        if round < 6 {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    tokio::spawn(renewals(
                        c.client_for(&survivors),
                        "snap".into(),
                        format!("w{round}-{i}"),
                        150,
                    ))
                })
                .collect();
            for t in tasks {
                expected.extend(t.await.expect("writer"));
            }
            round += 1;
            continue;
        }
        d.get_or_insert_with(|| {
            Deadline::new(
                "the leader to purge the log the follower lacks",
                EVENT_TIMEOUT,
            )
        })
        .check((s.snapshot_index, applied.last_log_index))
        .await;
    }

    c.restart(follower).await;
    let watcher = c.client_for(&[follower]);
    let mut s = watcher
        .watch_on(0, watch_req("snap", first, None))
        .await
        .expect("watch on the restarted follower");
    // Changes after the restart too.
    expected.extend(renewals(c.client_for(&survivors), "snap".into(), "post".into(), 5).await);
    let got = read_until(
        &mut s,
        max_revision(&expected),
        "watcher on the restarted follower",
    )
    .await;
    assert_exactly("watcher across a snapshot install", &got, &expected);
    let st = c.status(follower).await.expect("follower status");
    assert!(
        st.snapshot_index > applied.last_log_index,
        "the follower caught up from a snapshot: {st:?}"
    );
}

/// Regression (issue 10): a lease that stopped matching a watch's label
/// selector (through a Put that changed its labels) was never reported to
/// that watcher, which then kept a lease that no longer matched. As in
/// Kubernetes, it is DELETED for that watcher (carrying the lease as it
/// was), and ADDED when it matches again; replay from history agrees.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_leaving_a_selection_is_deleted_for_that_watcher() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    let watch = |start: u64| {
        let client = &client;
        async move {
            client
                .watch_on(
                    0,
                    pb::WatchRequest {
                        namespace: "sel".into(),
                        label_selector: "app=web".into(),
                        start_revision: start,
                        ..Default::default()
                    },
                )
                .await
                .expect("watch")
        }
    };
    let acquired = client
        .acquire(pb::AcquireRequest {
            namespace: "sel".into(),
            name: "x".into(),
            holder: "h".into(),
            lease_duration_seconds: 30,
            labels: HashMap::from([("app".into(), "web".into())]),
            request_id: String::new(),
        })
        .await
        .expect("acquire");
    let first = acquired.lease.clone().unwrap();
    let start = first.metadata.as_ref().unwrap().resource_version;
    let mut live = watch(start).await;
    let relabel = |l: &pb::Lease, app: &str| {
        let mut l = l.clone();
        l.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), app.into());
        pb::PutRequest {
            lease: Some(l),
            request_id: String::new(),
        }
    };
    let moved = lease_of(client.put(relabel(&first, "db")).await.expect("put").lease);
    let back = lease_of(client.put(relabel(&moved, "web")).await.expect("put").lease);
    let rv = |l: &pb::Lease| l.metadata.as_ref().unwrap().resource_version;
    let app = |e: &pb::WatchEvent| {
        e.lease.as_ref().unwrap().metadata.as_ref().unwrap().labels["app"].clone()
    };
    let expected = [
        (Type::Added, start, "web"),
        (Type::Deleted, rv(&moved), "web"),
        (Type::Added, rv(&back), "web"),
    ];
    for (name, stream) in [("live", &mut live), ("replayed", &mut watch(start).await)] {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let e = next_msg(stream, EVENT_TIMEOUT, name)
                .await
                .expect("stream")
                .expect("open");
            if type_of(&e) != Type::Progress {
                got.push((type_of(&e), e.revision, app(&e)));
            }
        }
        let want: Vec<_> = expected
            .iter()
            .map(|(t, r, a)| (*t, *r, a.to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    c.assert_no_crashes();
}
