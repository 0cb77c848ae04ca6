//! The state machine through openraft's traits: applying entries, reading
//! leases back, the clock and epoch rules, restarts (snapshot plus log
//! replay), the format version check, snapshots, and determinism: the same
//! log gives the same state and answers however it is batched.

use leasehold::lease::apply::CLOCK_RATE_BOUND_PPM;
use leasehold::lease::selector::{self, Selector};
use leasehold::lease::{
    Applied, Command, CommandResponse, Lease, LeaseDraft, LeaseError, LeaseKey, LeaseSpec,
    LostReason, Proposal, Timestamp,
};
use leasehold::state::{EpochLeader, PageLimits};
use leasehold::store::{self, LogStore, SmClock, StateMachineStore};
use leasehold::types::{Entry, LogId, NodeId, StoredMembership};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder, StorageHelper};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tempfile::TempDir;

/// 2024-05-01T12:00:00Z.
const T0: i64 = 1_714_564_800_000_000;
const SEC: i64 = 1_000_000;
const NS: &str = "default";

fn t(micros: i64) -> Timestamp {
    Timestamp::from_micros(T0 + micros)
}

fn leader(term: u64, node: NodeId) -> CommittedLeaderId<NodeId> {
    CommittedLeaderId::new(term, node)
}

fn ep(term: u64, node: NodeId) -> EpochLeader {
    EpochLeader { term, node }
}

/// Page limits: `n` items (0: unlimited), no scan bound.
fn lim(n: usize) -> PageLimits {
    PageLimits {
        max_items: if n == 0 { usize::MAX } else { n },
        max_scanned: usize::MAX,
    }
}

fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(leader(term, node), index)
}

fn key(name: &str) -> LeaseKey {
    LeaseKey::new(NS, name)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A normal entry from the leader of `term` (node `term`), stamped
/// `T0 + at_micros`.
fn normal(term: u64, index: u64, at_micros: i64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, term, index),
        payload: EntryPayload::Normal(Proposal::single(t(at_micros), term, command, None)),
    }
}

/// Like [`normal`], stamped by the clock `clock_id` (a process of the leader).
fn normal_by(term: u64, clock_id: u64, index: u64, at_micros: i64, command: Command) -> Entry {
    let mut e = normal(term, index, at_micros, command);
    if let EntryPayload::Normal(p) = &mut e.payload {
        p.clock_id = clock_id;
    }
    e
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, term, index),
        payload: EntryPayload::Membership(members()),
    }
}

fn members() -> Membership<NodeId, leasehold::types::Member> {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], None)
}

fn acquire_in(ns: &str, name: &str, holder: &str, d: i32, lbls: &[(&str, &str)]) -> Command {
    Command::Acquire {
        key: LeaseKey::new(ns, name),
        holder: holder.to_string(),
        duration_seconds: d,
        labels: labels(lbls),
    }
}

fn acquire(name: &str, holder: &str, d: i32) -> Command {
    acquire_in(NS, name, holder, d, &[])
}

fn renew(name: &str, holder: &str, fencing_token: u64) -> Command {
    Command::Renew {
        key: key(name),
        holder: holder.to_string(),
        fencing_token,
    }
}

fn release(name: &str, holder: &str, fencing_token: u64) -> Command {
    Command::Release {
        key: key(name),
        holder: holder.to_string(),
        fencing_token,
    }
}

fn delete(name: &str, resource_version: Option<u64>) -> Command {
    Command::Delete {
        key: key(name),
        resource_version,
        uid: None,
    }
}

/// The answer to an entry's single op; `None` for a Raft-internal entry.
type Resp = Option<CommandResponse>;

fn applied(r: &Resp) -> &Applied {
    match r {
        Some(CommandResponse::Applied(a)) => a,
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn refused(r: &Resp) -> &LeaseError {
    match r {
        Some(CommandResponse::Refused(e)) => e,
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    store::open(dir).expect("open store")
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("leasehold-sm-")
        .tempdir()
        .expect("temp dir")
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) -> Vec<Resp> {
    let n = entries.len();
    let out = sm.apply(entries).await.expect("apply");
    assert_eq!(out.len(), n, "one response per entry");
    out.into_iter()
        .map(|mut r| {
            assert!(r.len() <= 1, "one op per entry in these tests");
            r.pop()
        })
        .collect()
}

async fn apply1(sm: &mut StateMachineStore, entry: Entry) -> Resp {
    apply(sm, vec![entry]).await.remove(0)
}

/// Appends `entries` to the log, marks them committed, and applies them:
/// what a node does, so that a restart can replay them.
async fn commit(log: &mut LogStore, sm: &mut StateMachineStore, entries: Vec<Entry>) -> Vec<Resp> {
    let last = entries.last().map(|e| e.log_id);
    if log.is_empty() && entries.first().is_some_and(|e| e.log_id.index == 1) {
        // openraft's logs start at index 0 (the initial membership); these
        // tests number from 1, so the log gets a blank entry 0 first.
        let zero = blank(0, 0);
        log.append_entries([zero.clone()]).await.expect("append");
        apply(sm, vec![zero]).await;
    }
    log.append_entries(entries.clone()).await.expect("append");
    log.save_committed(last).await.expect("save committed");
    apply(sm, entries).await
}

/// Opens the store after a restart the way openraft does: the state
/// machine loads its latest snapshot, then the committed log after it is
/// re-applied.
async fn reopen(dir: &Path) -> (LogStore, StateMachineStore) {
    let (mut log, mut sm) = open(dir);
    StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .expect("initial state");
    (log, sm)
}

/// The keys the leader's sweep would expire at `at` (in the current epoch).
fn due_expiries(sm: &StateMachineStore, at: Timestamp) -> Vec<LeaseKey> {
    let view = sm.view();
    view.sweep(at, view.clock().epoch_start, 10)
        .into_iter()
        .filter_map(|c| match c {
            Command::Expire { key, .. } => Some(key),
            _ => None,
        })
        .collect()
}

fn get(sm: &StateMachineStore, name: &str) -> Option<Lease> {
    sm.get(&key(name)).0.map(|l| l.as_ref().clone())
}

fn names(items: &[std::sync::Arc<Lease>]) -> Vec<String> {
    items.iter().map(|l| l.key.to_string()).collect()
}

fn margin(d: i64) -> i64 {
    d * SEC * CLOCK_RATE_BOUND_PPM / 1_000_000
}

#[tokio::test]
async fn applies_a_sequence_and_reads_it_back() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    assert_eq!(sm.revision(), 0);
    assert_eq!(sm.applied_index(), 0);
    assert_eq!(
        sm.applied_state().await.unwrap(),
        (None, StoredMembership::default())
    );

    // Raft-internal entries: no command, no revision, but applied.
    let r = apply(&mut sm, vec![membership(1, 1), blank(1, 2)]).await;
    assert_eq!(r, vec![None, None]);
    assert_eq!(sm.revision(), 0);
    assert_eq!(sm.applied_index(), 2);
    let (last, mem) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(1, 1, 2)));
    assert_eq!(mem, StoredMembership::new(Some(log_id(1, 1, 1)), members()));

    // Acquire creates: the first change is revision 1 (revisions count
    // changes; they are not log indexes).
    let r = apply1(&mut sm, normal(1, 3, 0, acquire("x", "a", 10))).await;
    let a = applied(&r);
    assert_eq!(a.revision, 1);
    assert!(a.created);
    assert!(a.newly_acquired);
    assert_eq!(a.lease.fencing_token, 1);
    assert_eq!(a.lease.resource_version, 1);
    assert_eq!(a.lease.spec.renew_time, Some(t(0)));
    assert_eq!(sm.revision(), 1);
    let (stored, rev) = sm.get(&key("x"));
    let stored = stored.map(|l| l.as_ref().clone());
    assert_eq!(stored.as_ref(), Some(a.lease.as_ref()));
    assert_eq!(rev, 1);

    // Another holder is refused: nothing changes but the applied index.
    let r = apply1(&mut sm, normal(1, 4, SEC, acquire("x", "b", 10))).await;
    assert_eq!(
        refused(&r),
        &LeaseError::Held {
            key: key("x"),
            holder: "a".to_string(),
            expire_time: t(10 * SEC),
            remaining_millis: 9_100,
        }
    );
    assert_eq!(sm.revision(), 1, "a refusal is not a revision");
    assert_eq!(sm.applied_index(), 4);
    assert_eq!(get(&sm, "x").unwrap().resource_version, 1);

    // Several entries in one call, touching the same lease: each sees the
    // one before it.
    let r = apply(
        &mut sm,
        vec![
            normal(1, 5, 2 * SEC, renew("x", "a", 1)),
            normal(1, 6, 3 * SEC, release("x", "a", 1)),
            normal(1, 7, 3 * SEC, acquire("x", "b", 10)),
            normal(1, 8, 4 * SEC, renew("x", "a", 1)),
        ],
    )
    .await;
    let renewed = applied(&r[0]);
    assert_eq!(renewed.revision, 2);
    assert!(!renewed.newly_acquired);
    assert_eq!(renewed.lease.fencing_token, 1);
    assert_eq!(renewed.lease.spec.renew_time, Some(t(2 * SEC)));
    let released = applied(&r[1]);
    assert_eq!(released.lease.holder(), None);
    assert_eq!(released.lease.fencing_token, 0);
    let taken = applied(&r[2]);
    assert!(taken.newly_acquired);
    assert_eq!(taken.lease.fencing_token, 4);
    assert_eq!(taken.lease.spec.lease_transitions, Some(1));
    assert_eq!(
        refused(&r[3]),
        &LeaseError::Lost {
            key: key("x"),
            reason: LostReason::OtherHolder {
                holder: "b".to_string()
            },
        }
    );
    assert_eq!(sm.revision(), 4);
    assert_eq!(sm.applied_index(), 8);
    assert_eq!(get(&sm, "x").as_ref(), Some(taken.lease.as_ref()));

    // Put and delete.
    let draft = LeaseDraft {
        key: key("y"),
        resource_version: 0,
        uid: None,
        labels: labels(&[("app", "web")]),
        annotations: BTreeMap::new(),
        spec: LeaseSpec {
            holder_identity: Some("c".to_string()),
            lease_duration_seconds: Some(40),
            ..LeaseSpec::default()
        },
    };
    let r = apply1(
        &mut sm,
        normal(
            1,
            9,
            5 * SEC,
            Command::Put {
                draft: draft.clone(),
            },
        ),
    )
    .await;
    let put = applied(&r);
    assert!(put.created);
    assert_eq!(put.lease.fencing_token, 5);
    let r = apply1(&mut sm, normal(1, 10, 5 * SEC, delete("y", Some(4)))).await;
    assert_eq!(
        refused(&r),
        &LeaseError::Conflict {
            key: key("y"),
            expected: 4,
            actual: 5
        }
    );
    // Deleting a held lease (created at 5 s for 40 s) after it could be
    // granted to someone else (plus the 1 % margin) leaves no tombstone.
    let r = apply1(&mut sm, normal(1, 11, 50 * SEC, delete("y", Some(5)))).await;
    let deleted = applied(&r);
    assert_eq!(deleted.revision, 6);
    assert_eq!(
        deleted.lease, put.lease,
        "Delete returns the lease as it was"
    );
    assert_eq!(get(&sm, "y"), None);
    assert_eq!(sm.revision(), 6);
    let r = apply1(&mut sm, normal(1, 12, 5 * SEC, delete("y", None))).await;
    assert_eq!(refused(&r), &LeaseError::NotFound { key: key("y") });

    // The log holds only validated commands (the leader validates before it
    // proposes); applying does not validate again, so a rule tightened in a
    // later version cannot change what an old log means on replay. A
    // command the edge would refuse is applied by the lease rules alone.
    let r = apply1(&mut sm, normal(1, 13, 50 * SEC, acquire("x", "a", 0))).await;
    assert_eq!(applied(&r).lease.spec.lease_duration_seconds, Some(0));
    assert_eq!(sm.revision(), 7);
    assert_eq!(sm.applied_index(), 13);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 13)));
    assert_eq!(sm.lease_count(), 1);
}

#[tokio::test]
async fn list_filters_by_namespace_and_selector_and_pages() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    let web = [("app", "web")];
    let db = [("app", "db")];
    let entries = vec![
        // Out of key order on purpose.
        normal(1, 1, 0, acquire_in(NS, "e", "h", 10, &web)),
        normal(1, 2, 0, acquire_in(NS, "a", "h", 10, &web)),
        normal(1, 3, 0, acquire_in(NS, "c", "h", 10, &db)),
        normal(1, 4, 0, acquire_in(NS, "b", "h", 10, &web)),
        normal(1, 5, 0, acquire_in(NS, "d", "h", 10, &[])),
        normal(1, 6, 0, acquire_in("kube-node-lease", "a", "h", 10, &web)),
        // A namespace that is a prefix of another one.
        normal(1, 7, 0, acquire_in("def", "z", "h", 10, &web)),
    ];
    apply(&mut sm, entries).await;
    let all = Selector::everything();

    let page = sm.list("", &all, None, lim(0));
    assert_eq!(
        names(&page.items),
        vec![
            "def/z",
            "default/a",
            "default/b",
            "default/c",
            "default/d",
            "default/e",
            "kube-node-lease/a"
        ]
    );
    assert_eq!(page.next, None);
    assert_eq!(page.revision, 7);

    let page = sm.list(NS, &all, None, lim(0));
    assert_eq!(
        names(&page.items),
        vec![
            "default/a",
            "default/b",
            "default/c",
            "default/d",
            "default/e"
        ]
    );
    let page = sm.list("def", &all, None, lim(0));
    assert_eq!(names(&page.items), vec!["def/z"]);
    let page = sm.list("nothing-here", &all, None, lim(0));
    assert!(page.items.is_empty());

    let sel = selector::parse("app=web").unwrap();
    let page = sm.list(NS, &sel, None, lim(0));
    assert_eq!(
        names(&page.items),
        vec!["default/a", "default/b", "default/e"]
    );
    let page = sm.list("", &sel, None, lim(0));
    assert_eq!(page.items.len(), 5);
    let sel_not = selector::parse("app!=web").unwrap();
    let page = sm.list(NS, &sel_not, None, lim(0));
    assert_eq!(names(&page.items), vec!["default/c", "default/d"]);
    let sel_in = selector::parse("app in (db,web),app notin (web)").unwrap();
    let page = sm.list(NS, &sel_in, None, lim(0));
    assert_eq!(names(&page.items), vec!["default/c"]);

    // Paging: `next` is set only when more items follow.
    let p1 = sm.list(NS, &all, None, lim(2));
    assert_eq!(names(&p1.items), vec!["default/a", "default/b"]);
    assert_eq!(p1.next, Some(key("b")));
    let p2 = sm.list(NS, &all, p1.next.as_ref(), lim(2));
    assert_eq!(names(&p2.items), vec!["default/c", "default/d"]);
    assert_eq!(p2.next, Some(key("d")));
    let p3 = sm.list(NS, &all, p2.next.as_ref(), lim(2));
    assert_eq!(names(&p3.items), vec!["default/e"]);
    assert_eq!(p3.next, None);
    // Exactly `limit` left: no next page.
    let exact = sm.list(NS, &all, Some(&key("c")), lim(2));
    assert_eq!(names(&exact.items), vec!["default/d", "default/e"]);
    assert_eq!(exact.next, None);
    // Paging with a selector skips non-matching leases.
    let p1 = sm.list(NS, &sel, None, lim(1));
    assert_eq!(names(&p1.items), vec!["default/a"]);
    assert_eq!(p1.next, Some(key("a")));
    let p2 = sm.list(NS, &sel, p1.next.as_ref(), lim(1));
    assert_eq!(names(&p2.items), vec!["default/b"]);
    assert_eq!(p2.next, Some(key("b")));
    let p3 = sm.list(NS, &sel, p2.next.as_ref(), lim(1));
    assert_eq!(names(&p3.items), vec!["default/e"]);
    assert_eq!(p3.next, None);
    // `after` a key that does not exist starts at the next one.
    let page = sm.list(NS, &all, Some(&key("bb")), lim(0));
    assert_eq!(
        names(&page.items),
        vec!["default/c", "default/d", "default/e"]
    );
    // Across namespaces.
    let page = sm.list("", &all, Some(&LeaseKey::new(NS, "e")), lim(0));
    assert_eq!(names(&page.items), vec!["kube-node-lease/a"]);
}

#[tokio::test]
async fn time_never_goes_back() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    apply1(&mut sm, normal(1, 1, 5 * SEC, acquire("x", "a", 10))).await;
    assert_eq!(sm.clock().now, t(5 * SEC));

    // Stamped earlier than the previous entry: applied at the previous time.
    let r = apply1(&mut sm, normal(1, 2, 2 * SEC, renew("x", "a", 1))).await;
    let a = applied(&r);
    assert_eq!(a.lease.spec.renew_time, Some(t(5 * SEC)));
    assert_eq!(sm.clock().now, t(5 * SEC));
    assert_eq!(get(&sm, "x").unwrap().spec.renew_time, Some(t(5 * SEC)));

    // A later stamp moves it forward again.
    let r = apply1(&mut sm, normal(1, 3, 7 * SEC, renew("x", "a", 1))).await;
    assert_eq!(applied(&r).lease.spec.renew_time, Some(t(7 * SEC)));
    assert_eq!(sm.clock().now, t(7 * SEC));

    // Expiry is judged on the monotonic time: a renew stamped before the
    // expiry but applied after a later entry is late.
    apply1(&mut sm, normal(1, 4, 20 * SEC, acquire("y", "b", 10))).await;
    let r = apply1(&mut sm, normal(1, 5, 8 * SEC, renew("x", "a", 1))).await;
    assert_eq!(
        refused(&r),
        &LeaseError::Lost {
            key: key("x"),
            reason: LostReason::Expired {
                expired_at: t(17 * SEC)
            },
        }
    );
    assert_eq!(sm.clock().now, t(20 * SEC));
}

#[tokio::test]
async fn a_new_leader_starts_an_epoch_and_waits_a_full_duration() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    apply1(&mut sm, normal(1, 1, 0, acquire("x", "a", 10))).await;
    apply1(&mut sm, normal(1, 2, SEC, renew("x", "a", 1))).await;
    assert_eq!(
        sm.clock(),
        SmClock {
            now: t(SEC),
            epoch_start: t(0),
            epoch_first_stamp: t(0),
            epoch_leader: Some(ep(1, 1)),
            epoch_clock: 1,
        }
    );

    // Term 2: the new leader's blank entry carries no time; its first command,
    // stamped E, starts the epoch.
    apply1(&mut sm, blank(2, 3)).await;
    assert_eq!(sm.clock().epoch_leader, Some(ep(1, 1)));
    let e = 8 * SEC;
    apply1(&mut sm, normal(2, 4, e, acquire("other", "z", 10))).await;
    assert_eq!(
        sm.clock(),
        SmClock {
            now: t(e),
            epoch_start: t(e),
            epoch_first_stamp: t(e),
            epoch_leader: Some(ep(2, 2)),
            epoch_clock: 2,
        }
    );

    // renewTime + d·(1+ρ) = 11.1 s has passed, E + d·(1+ρ) = 18.1 s has not.
    let free = e + 10 * SEC + margin(10);
    let r = apply1(&mut sm, normal(2, 5, 15 * SEC, acquire("x", "b", 10))).await;
    assert_eq!(
        refused(&r),
        &LeaseError::Held {
            key: key("x"),
            holder: "a".to_string(),
            expire_time: t(11 * SEC),
            remaining_millis: 3_100,
        }
    );
    // Later entries of the same leader do not move the epoch.
    assert_eq!(sm.clock().epoch_start, t(e));
    let r = apply1(&mut sm, normal(2, 6, free - 1, acquire("x", "b", 10))).await;
    assert!(matches!(refused(&r), LeaseError::Held { .. }), "{r:?}");
    let r = apply1(&mut sm, normal(2, 7, free, acquire("x", "b", 10))).await;
    let a = applied(&r);
    assert!(a.newly_acquired);
    assert_eq!(a.lease.holder(), Some("b"));
    assert_eq!(a.lease.fencing_token, 4, "the fourth change");
    assert_eq!(sm.clock().epoch_start, t(e));

    // A new leader whose clock is behind: the epoch starts at the monotonic
    // time, not at its stamp ...
    apply1(&mut sm, normal(3, 8, 5 * SEC, renew("x", "b", 4))).await;
    assert_eq!(
        sm.clock(),
        SmClock {
            now: t(free),
            epoch_start: t(free),
            epoch_first_stamp: t(5 * SEC),
            epoch_leader: Some(ep(3, 3)),
            epoch_clock: 3,
        }
    );
    // ... and time then advances by that leader's elapsed time, without
    // waiting for its clock to catch up.
    apply1(&mut sm, normal(3, 9, 7 * SEC, renew("x", "b", 4))).await;
    assert_eq!(sm.clock().now, t(free + 2 * SEC));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempdir();
    let (mut log, mut sm) = open(dir.path());
    commit(
        &mut log,
        &mut sm,
        vec![
            membership(1, 1),
            normal(1, 2, 0, acquire_in(NS, "x", "a", 10, &[("app", "web")])),
            normal(1, 3, SEC, acquire("y", "b", 10)),
            normal(1, 4, 2 * SEC, renew("x", "a", 1)),
            normal(1, 5, 2 * SEC, acquire("x", "c", 10)),
        ],
    )
    .await;
    let state = sm.applied_state().await.unwrap();
    let clock = sm.clock();
    let leases = sm.list("", &Selector::everything(), None, lim(0)).items;
    assert_eq!(leases.len(), 2);
    assert_eq!(state.0, Some(log_id(1, 1, 5)));
    drop(log);
    drop(sm);

    let (_log, mut sm) = reopen(dir.path()).await;
    assert_eq!(sm.applied_state().await.unwrap(), state);
    assert_eq!(sm.applied_index(), 5);
    assert_eq!(sm.revision(), 3);
    assert_eq!(sm.clock(), clock);
    assert_eq!(
        sm.list("", &Selector::everything(), None, lim(0)).items,
        leases
    );
    // And it carries on: the same leader's next entry stays in its epoch,
    // and the old token still renews.
    let r = apply1(&mut sm, normal(1, 6, 3 * SEC, renew("x", "a", 1))).await;
    assert_eq!(applied(&r).lease.fencing_token, 1);
    assert_eq!(sm.clock().epoch_start, t(0));
}

/// The WAL segment of a data directory (there is one in these tests).
fn wal_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

#[tokio::test]
async fn another_format_version_is_refused() {
    let dir = tempdir();
    {
        let (mut log, mut sm) = open(dir.path());
        commit(
            &mut log,
            &mut sm,
            vec![normal(1, 1, 0, acquire("x", "a", 10))],
        )
        .await;
    }
    // Reopening with the right version works.
    drop(open(dir.path()));

    // The version is in every segment's header (bytes 8..12, big-endian).
    let seg = wal_segment(dir.path());
    let mut data = std::fs::read(&seg).unwrap();
    assert_eq!(&data[8..12], &store::FORMAT_VERSION.to_be_bytes());
    data[8..12].copy_from_slice(&(store::FORMAT_VERSION + 1).to_be_bytes());
    std::fs::write(&seg, &data).unwrap();
    let err = match store::open(dir.path()) {
        Ok(_) => panic!("a log of another format version was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("version {}", store::FORMAT_VERSION + 1)),
        "{err}"
    );
    assert!(err.contains(&seg.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_data_directory_of_the_sled_format_is_refused_with_what_to_do() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    std::fs::write(dir.path().join("db").join("conf"), b"segment_size: 524288").unwrap();
    let err = match store::open(dir.path()) {
        Ok(_) => panic!("a sled data directory was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("format version 4 or earlier"), "{err}");
    assert!(err.contains("member replace"), "{err}");
}

#[tokio::test]
async fn snapshot_installs_into_a_fresh_store_and_survives_a_restart() {
    let src_dir = tempdir();
    let (_src_log, mut src) = open(src_dir.path());
    apply(
        &mut src,
        vec![
            membership(1, 1),
            normal(1, 2, 0, acquire_in(NS, "x", "a", 10, &[("app", "web")])),
            normal(
                1,
                3,
                SEC,
                acquire_in("kube-node-lease", "n1", "n1", 40, &[]),
            ),
            blank(2, 4),
            normal(2, 5, 6 * SEC, acquire("y", "b", 10)),
            normal(2, 6, 7 * SEC, acquire("x", "c", 10)), // refused: held
        ],
    )
    .await;
    let src_state = src.applied_state().await.unwrap();
    assert_eq!(src_state.0, Some(log_id(2, 2, 6)));
    let src_leases = src.list("", &Selector::everything(), None, lim(0)).items;
    assert_eq!(src_leases.len(), 3);
    assert_eq!(
        src.get_current_snapshot().await.unwrap().map(|s| s.meta),
        None
    );

    let mut builder = src.get_snapshot_builder().await;
    // Applied after the builder was taken: not part of the snapshot.
    apply1(&mut src, normal(2, 7, 8 * SEC, acquire("late", "d", 10))).await;
    let snap = builder.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, src_state.0);
    assert_eq!(snap.meta.last_membership, src_state.1);
    assert!(!snap.meta.snapshot_id.is_empty());
    let current = src.get_current_snapshot().await.unwrap().expect("stored");
    assert_eq!(current.meta, snap.meta);
    let data = current.snapshot.get_ref().clone();
    assert!(!data.is_empty());

    // A fresh store with a stale lease of its own, which the snapshot
    // replaces.
    let dst_dir = tempdir();
    let (dst_log, mut dst) = open(dst_dir.path());
    apply1(&mut dst, normal(1, 1, 0, acquire("stale", "s", 10))).await;
    let mut rx = dst.begin_receiving_snapshot().await.unwrap();
    rx.get_mut().extend_from_slice(&data);
    dst.install_snapshot(&snap.meta, rx).await.unwrap();

    let check = |sm: &StateMachineStore| {
        let leases = sm.list("", &Selector::everything(), None, lim(0)).items;
        assert_eq!(leases, src_leases);
        assert_eq!(sm.get(&key("stale")).0, None);
        assert_eq!(sm.get(&key("late")).0, None);
        assert_eq!(sm.revision(), 3);
        assert_eq!(
            sm.clock(),
            SmClock {
                now: t(7 * SEC),
                epoch_start: t(6 * SEC),
                epoch_first_stamp: t(6 * SEC),
                epoch_leader: Some(ep(2, 2)),
                epoch_clock: 2,
            }
        );
        assert_eq!(sm.applied_index(), 6);
    };
    check(&dst);
    assert_eq!(dst.applied_state().await.unwrap(), src_state);
    let cur = dst.get_current_snapshot().await.unwrap().expect("stored");
    assert_eq!(cur.meta, snap.meta);
    assert_eq!(cur.snapshot.get_ref(), &data);

    // After a restart: same state, same current snapshot.
    drop(dst_log);
    drop(dst);
    let (_dst_log, mut dst) = open(dst_dir.path());
    check(&dst);
    assert_eq!(dst.applied_state().await.unwrap(), src_state);
    let cur = dst.get_current_snapshot().await.unwrap().expect("stored");
    assert_eq!(cur.meta, snap.meta);
    assert_eq!(cur.snapshot.get_ref(), &data);

    // The installed state carries on exactly like the source: the clock and
    // epoch came along, so another holder still waits for the epoch rule.
    let r = apply1(&mut dst, normal(2, 7, 9 * SEC, acquire("x", "c", 10))).await;
    assert_eq!(
        refused(&r),
        &LeaseError::Held {
            key: key("x"),
            holder: "a".to_string(),
            expire_time: t(10 * SEC),
            remaining_millis: 7_100,
        }
    );
    let r = apply1(&mut dst, normal(2, 8, 9 * SEC, renew("x", "a", 1))).await;
    assert_eq!(applied(&r).lease.fencing_token, 1);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    apply1(&mut sm, normal(1, 1, 0, acquire("x", "a", 10))).await;
    let before = sm.list("", &Selector::everything(), None, lim(0)).items;
    let state = sm.applied_state().await.unwrap();

    let mut src = sm.clone();
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(log_id(1, 1, 100));
    let mut rx = sm.begin_receiving_snapshot().await.unwrap();
    rx.get_mut().extend_from_slice(b"not a snapshot at all");
    assert!(sm.install_snapshot(&meta, rx).await.is_err());
    assert_eq!(
        sm.list("", &Selector::everything(), None, lim(0)).items,
        before
    );
    assert_eq!(sm.applied_state().await.unwrap(), state);
    assert_eq!(sm.revision(), 1);
}

#[tokio::test]
async fn refused_commands_leave_the_expiry_index_alone() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    apply1(&mut sm, normal(1, 1, 0, acquire("x", "a", 10))).await;
    assert_eq!(due_expiries(&sm, t(10 * SEC)), vec![key("x")]);
    // Refused: another holder, a stale token, a bad expiry record.
    let r = apply1(&mut sm, normal(1, 2, SEC, acquire("x", "b", 10))).await;
    assert!(matches!(refused(&r), LeaseError::Held { .. }));
    let r = apply1(&mut sm, normal(1, 3, SEC, renew("x", "a", 99))).await;
    assert!(matches!(refused(&r), LeaseError::Lost { .. }));
    let expire = Command::Expire {
        key: key("x"),
        holder: "a".into(),
        fencing_token: 1,
    };
    let r = apply1(&mut sm, normal(1, 4, 2 * SEC, expire.clone())).await;
    assert_eq!(refused(&r), &LeaseError::NotExpired { key: key("x") });
    assert_eq!(
        due_expiries(&sm, t(10 * SEC)),
        vec![key("x")],
        "the tenure is still indexed after refusals"
    );
    // Applied: a renewal moves it, the expiry record removes it.
    apply1(&mut sm, normal(1, 5, 3 * SEC, renew("x", "a", 1))).await;
    assert!(due_expiries(&sm, t(12 * SEC)).is_empty());
    assert_eq!(due_expiries(&sm, t(13 * SEC)), vec![key("x")]);
    let r = apply1(&mut sm, normal(1, 6, 13 * SEC, expire)).await;
    assert!(applied(&r).lease.expired);
    assert!(due_expiries(&sm, t(100 * SEC)).is_empty());
}

fn with_id(mut e: Entry, id: &str) -> Entry {
    if let EntryPayload::Normal(p) = &mut e.payload {
        p.ops[0].request_id = Some(id.to_string());
    }
    e
}

#[tokio::test]
async fn a_request_id_is_applied_at_most_once() {
    let dir = tempdir();
    let (mut log, mut sm) = open(dir.path());
    let first = commit(
        &mut log,
        &mut sm,
        vec![with_id(normal(1, 1, 0, acquire("x", "a", 10)), "acq-1")],
    )
    .await
    .remove(0);
    let token = applied(&first).lease.fencing_token;
    let released = commit(
        &mut log,
        &mut sm,
        vec![with_id(
            normal(1, 2, SEC, release("x", "a", token)),
            "rel-1",
        )],
    )
    .await
    .remove(0);
    assert_eq!(applied(&released).revision, 2);
    // The retry of the release gets the first result, not "no holder", and
    // changes nothing.
    let retry = commit(
        &mut log,
        &mut sm,
        vec![with_id(
            normal(1, 3, 2 * SEC, release("x", "a", token)),
            "rel-1",
        )],
    )
    .await
    .remove(0);
    assert_eq!(retry, released);
    // A retry of the first acquire after someone else took the lease does
    // not grant it again either.
    commit(
        &mut log,
        &mut sm,
        vec![normal(1, 4, 2 * SEC, acquire("x", "b", 10))],
    )
    .await
    .remove(0);
    let retry = commit(
        &mut log,
        &mut sm,
        vec![with_id(
            normal(1, 5, 3 * SEC, acquire("x", "a", 10)),
            "acq-1",
        )],
    )
    .await
    .remove(0);
    assert_eq!(retry, first);
    assert_eq!(sm.revision(), 3);
    assert_eq!(
        get(&sm, "x")
            .and_then(|l| l.holder().map(String::from))
            .as_deref(),
        Some("b")
    );
    // Within one batch too.
    let rs = commit(
        &mut log,
        &mut sm,
        vec![
            with_id(normal(1, 6, 3 * SEC, acquire("y", "c", 10)), "acq-y"),
            with_id(normal(1, 7, 3 * SEC, acquire("y", "c", 10)), "acq-y"),
        ],
    )
    .await;
    assert_eq!(rs[0], rs[1]);
    assert_eq!(get(&sm, "y").map(|l| l.resource_version), Some(4));

    // Remembered across a restart (the records are rebuilt by replaying the
    // log) ...
    drop((log, sm));
    let (mut log, mut sm) = reopen(dir.path()).await;
    let retry = commit(
        &mut log,
        &mut sm,
        vec![with_id(
            normal(1, 8, 4 * SEC, release("x", "a", token)),
            "rel-1",
        )],
    )
    .await;
    assert_eq!(retry[0], released);
    // ... and forgotten after the retention window: then it is a new request.
    let later = 4 * SEC + leasehold::state::dedup::DEDUP_TTL_MICROS + SEC;
    let fresh = commit(
        &mut log,
        &mut sm,
        vec![with_id(
            normal(1, 9, later, release("x", "a", token)),
            "rel-1",
        )],
    )
    .await;
    assert!(
        matches!(refused(&fresh[0]), LeaseError::Lost { .. }),
        "{fresh:?}"
    );
}

/// Regression: the same request id with a different command used to get the
/// first command's answer (somebody else's grant). It is refused, and the
/// first answer stays for real retries.
#[tokio::test]
async fn a_reused_request_id_with_another_command_is_refused() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    let first = apply1(
        &mut sm,
        with_id(normal(1, 1, 0, acquire("x", "a", 10)), "id-1"),
    )
    .await;
    let other = apply1(
        &mut sm,
        with_id(normal(1, 2, SEC, acquire("x", "b", 10)), "id-1"),
    )
    .await;
    match refused(&other) {
        LeaseError::Invalid { field, reason } => {
            assert_eq!(field, "requestId");
            assert!(reason.contains("different command"), "{reason}");
        }
        e => panic!("expected an invalid requestId, got {e:?}"),
    }
    let other = apply1(
        &mut sm,
        with_id(normal(1, 3, SEC, release("y", "a", 1)), "id-1"),
    )
    .await;
    assert!(matches!(refused(&other), LeaseError::Invalid { .. }));
    let retry = apply1(
        &mut sm,
        with_id(normal(1, 4, 2 * SEC, acquire("x", "a", 10)), "id-1"),
    )
    .await;
    assert_eq!(retry, first);
    assert_eq!(sm.revision(), 1, "nothing else changed");
}

/// A log that exercises every retention boundary: request ids retried just
/// before and just after their records expire, around entries with no id
/// that move the clock, and watch history trimmed by count and age.
fn boundary_log() -> Vec<Entry> {
    let ttl = leasehold::state::dedup::DEDUP_TTL_MICROS;
    let mut log = vec![membership(1, 1)];
    let mut push = |term: u64, at: i64, c: Command, id: Option<&str>| {
        let index = log.len() as u64 + 1;
        let e = normal(term, index, at, c);
        log.push(match id {
            Some(id) => with_id(e, id),
            None => e,
        });
    };
    push(1, 0, acquire("x", "a", 10), Some("r-x")); // 2
    push(1, SEC, acquire("y", "b", 10), Some("r-y")); // 3
                                                      // Moves time past r-x's retention but not r-y's.
    push(1, ttl + SEC / 2, acquire("z", "c", 10), None); // 4
                                                         // r-x is gone: applied anew (a's tenure lapsed: a new tenure).
    push(1, ttl + SEC / 2, acquire("x", "a", 10), Some("r-x")); // 5
                                                                // r-y exactly at its retention: still remembered, twice.
    push(1, ttl + SEC, acquire("y", "b", 10), Some("r-y")); // 6
    push(1, ttl + SEC, acquire("y", "b", 10), Some("r-y")); // 7
                                                            // One microsecond later it is gone.
    push(1, ttl + SEC + 1, acquire("y", "b", 10), Some("r-y")); // 8
                                                                // A new leader's epoch, then more changes and late retries.
    log.push(blank(2, 9));
    let mut push2 = |at: i64, c: Command, id: &str| {
        let index = log.len() as u64 + 1;
        log.push(with_id(normal(2, index, at, c), id));
    };
    for i in 10..30u64 {
        let at = ttl + 2 * SEC + i as i64 * SEC / 10;
        push2(at, acquire(&format!("n{i}"), "d", 1), &format!("r-{i}"));
    }
    push2(3 * ttl, acquire("n10", "d", 1), "r-10");
    push2(3 * ttl, acquire("n11", "e", 1), "r-11");
    log
}

/// The state as a snapshot file would hold it: every replicated part,
/// byte for byte.
async fn fingerprint(sm: &mut StateMachineStore) -> Vec<u8> {
    let (applied, membership) = sm.applied_state().await.unwrap();
    let meta = leasehold::types::SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id: "fingerprint".into(),
    };
    leasehold::store::snapshot::encode(&sm.view(), &meta).unwrap()
}

/// Regression: request-id records and watch history were trimmed once per
/// applied batch, with the batch's last time, so a retry that a batch of one
/// answered from the record could be applied again in a larger batch (or
/// after a restart), and replicas disagreed. Now every decision is per
/// entry: the same log gives the same answers and the same state, byte for
/// byte, whatever the batching, with restarts in between.
#[tokio::test]
async fn the_same_log_gives_the_same_answers_and_state_however_it_is_batched() {
    let log_entries = boundary_log();
    let opts = store::StoreOptions {
        history_max_events: 12,
        history_max_age_micros: 90 * SEC,
        ..Default::default()
    };
    let mut results = Vec::new();
    for batch in [1usize, 2, 3, 7, log_entries.len()] {
        let dir = tempdir();
        let (mut log, mut sm) = store::open_with(dir.path(), opts.clone()).unwrap();
        let mut answers = Vec::new();
        for (i, chunk) in log_entries.chunks(batch).enumerate() {
            answers.extend(commit(&mut log, &mut sm, chunk.to_vec()).await);
            if i == 2 {
                // A restart in the middle: the state is rebuilt by replay.
                drop((log, sm));
                let (mut l, mut s) = store::open_with(dir.path(), opts.clone()).unwrap();
                StorageHelper::new(&mut l, &mut s)
                    .get_initial_state()
                    .await
                    .unwrap();
                (log, sm) = (l, s);
            }
        }
        results.push((batch, answers, fingerprint(&mut sm).await));
    }
    let (_, answers, state) = &results[0];
    // The boundary cases came out as intended.
    let acq = |i: usize| match &answers[i] {
        Some(CommandResponse::Applied(a)) => a.lease.fencing_token,
        other => panic!("entry {i}: {other:?}"),
    };
    assert_eq!(acq(1), 1, "r-x granted at revision 1");
    assert_eq!(acq(4), 4, "r-x expired: applied anew, a new tenure");
    assert_eq!(answers[5], answers[2], "r-y still remembered");
    assert_eq!(answers[6], answers[2], "r-y still remembered");
    assert_ne!(answers[7], answers[2], "r-y forgotten a microsecond later");
    for (batch, a, st) in &results[1..] {
        assert_eq!(a, answers, "answers with batches of {batch}");
        assert!(st == state, "state with batches of {batch} differs");
    }
}

#[test]
fn a_data_directory_in_use_is_refused_with_a_clear_error() {
    let dir = tempdir();
    let held = open(dir.path());
    let err = match store::open(dir.path()) {
        Ok(_) => panic!("opened a data directory that is in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("in use by another leasehold process"), "{err}");
    // Released: it opens again.
    drop(held);
    let _reopened = open(dir.path());
}

/// Regression (found by the chaos suite): a leader that restarts resumes its
/// old term (openraft restores it), but its new process anchors its stamps
/// on the wall clock read at start, which may disagree with the old one.
/// Projecting the new stamps against the old epoch froze time (clock now
/// behind) or would jump it ahead and grant leases early (clock now ahead).
/// A new clock id starts a new epoch instead.
#[tokio::test]
async fn a_restarted_leader_resuming_its_term_starts_a_new_epoch() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    // Process A of leader 1 stamps 13 s ahead.
    let skew = 13 * SEC;
    apply1(&mut sm, normal_by(1, 100, 1, skew, acquire("x", "a", 10))).await;
    apply1(
        &mut sm,
        normal_by(1, 100, 2, skew + SEC, renew("x", "a", 1)),
    )
    .await;
    assert_eq!(sm.clock().now, t(skew + SEC));
    // Process B of the same leader, same term, correct clock: 2 s later in
    // real time its stamps read 3 s.
    apply1(&mut sm, normal_by(1, 200, 3, 3 * SEC, renew("x", "a", 1))).await;
    let c = sm.clock();
    assert_eq!(c.epoch_clock, 200);
    assert_eq!(
        c.epoch_start,
        t(skew + SEC),
        "time neither jumps nor goes back"
    );
    // Time then advances by B's elapsed time: not frozen for 13 s.
    apply1(&mut sm, normal_by(1, 200, 4, 5 * SEC, renew("x", "a", 1))).await;
    assert_eq!(sm.clock().now, t(skew + 3 * SEC));

    // The other way round: process C stamps 30 s ahead of B. The epoch
    // starts at its stamp, and a tenure renewed just before gets a full
    // duration from there: no lease is handed over early.
    let ahead = 5 * SEC + 30 * SEC;
    let r = apply1(&mut sm, normal_by(1, 300, 5, ahead, acquire("x", "b", 10))).await;
    assert!(matches!(refused(&r), LeaseError::Held { .. }), "{r:?}");
    let r = apply1(
        &mut sm,
        normal_by(1, 300, 6, ahead + 10 * SEC - 1, acquire("x", "b", 10)),
    )
    .await;
    assert!(matches!(refused(&r), LeaseError::Held { .. }), "{r:?}");
}

/// A leader batches concurrent writes into one entry: its ops are applied
/// in order, each seeing the ones before it, each change with its own
/// revision (revisions count changes, so tokens stay unique), each request
/// id deduplicated on its own.
#[tokio::test]
async fn the_ops_of_one_entry_apply_in_order_each_with_its_own_revision() {
    let dir = tempdir();
    let (_log, mut sm) = open(dir.path());
    let op = |command: Command, id: Option<&str>| leasehold::lease::Op {
        command,
        request_id: id.map(String::from),
    };
    let entry = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Normal(Proposal {
            time: t(0),
            clock_id: 1,
            ops: vec![
                op(acquire("x", "a", 10), Some("r1")),
                op(acquire("x", "b", 10), None), // refused: held by a
                op(release("x", "a", 1), None),
                op(acquire("x", "b", 10), Some("r2")),
                op(acquire("x", "a", 10), Some("r1")), // a retry of the first
            ],
        }),
    };
    let mut out = sm.apply(vec![entry]).await.expect("apply");
    let r = out.remove(0);
    assert_eq!(r.len(), 5);
    let tokens: Vec<Option<u64>> = r
        .iter()
        .map(|x| match x {
            CommandResponse::Applied(a) => Some(a.lease.fencing_token),
            CommandResponse::Refused(_) => None,
        })
        .collect();
    assert_eq!(tokens, vec![Some(1), None, Some(0), Some(3), Some(1)]);
    assert_eq!(r[4], r[0], "the retry gets the first answer");
    assert_eq!(sm.revision(), 3, "three changes; the refusal is none");
    assert_eq!(
        get(&sm, "x")
            .and_then(|l| l.holder().map(String::from))
            .as_deref(),
        Some("b")
    );
}
