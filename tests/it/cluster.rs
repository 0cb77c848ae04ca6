//! End-to-end tests of a real multi-process cluster through the Rust client.
//!
//! Every test starts its own cluster (see `common`), on free ports, so the
//! tests can run in parallel.

use crate::common;
use crate::kube::Http;
use common::{
    acquire_req, assert_status, expect_err, lease_of, meta, put_req, release_req, renew_req,
    rv_holder_token, sample, Cluster, Deadline, Options, ELECTION_MAX_MS,
};
use leasehold::api::status::reason;
use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);

fn get_req(ns: &str, name: &str, stale: bool) -> pb::GetRequest {
    pb::GetRequest {
        namespace: ns.into(),
        name: name.into(),
        stale,
    }
}

fn transitions(l: &pb::Lease) -> i32 {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .expect("leaseTransitions is set")
}

/// Some running node other than `leader`.
fn follower_of(c: &Cluster, leader: u64) -> u64 {
    *c.live_ids()
        .iter()
        .find(|id| **id != leader)
        .expect("a running follower")
}

/// Every lease (all namespaces, paging through List), by `namespace/name`,
/// and the revision the first page observed. `stale` reads the answering
/// node's own state instead of the leader's.
async fn list_all(client: &Client, stale: bool) -> (BTreeMap<String, pb::Lease>, u64) {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    let mut revision = None;
    loop {
        let r = client
            .list(pb::ListRequest {
                namespace: String::new(),
                label_selector: String::new(),
                limit: 17,
                continue_token: token,
                stale,
            })
            .await
            .expect("list");
        revision.get_or_insert(r.revision);
        for l in r.items {
            let m = l.metadata.clone().expect("metadata");
            // The nodes' own identity leases change on their own schedule.
            if m.namespace == leasehold::identity::NAMESPACE {
                continue;
            }
            out.insert(format!("{}/{}", m.namespace, m.name), l);
        }
        token = r.continue_token;
        if token.is_empty() {
            break;
        }
    }
    (out, revision.unwrap_or(0))
}

/// 1. Every node serves every call: acquire, renew, read and release through
/// different nodes, then a new holder takes over at once.
#[tokio::test(flavor = "multi_thread")]
async fn lease_lifecycle_across_nodes() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let (a, b, cc) = (c.client_for(&[1]), c.client_for(&[2]), c.client_for(&[3]));

    let acq = a
        .acquire(acquire_req("team", "lock", "alice", 30))
        .await
        .expect("acquire via node 1");
    assert!(acq.created && acq.newly_acquired, "{acq:?}");
    let first = lease_of(acq.lease);
    let (rv0, holder, token) = rv_holder_token(&first);
    assert_eq!(holder, "alice");
    assert!(token > 0, "a tenure has a positive fencing token");
    assert_eq!(acq.fencing_token, token);
    assert_eq!(transitions(&first), 0);

    let renewed = lease_of(
        b.renew(renew_req("team", "lock", "alice", token))
            .await
            .expect("renew via node 2")
            .lease,
    );
    let (rv1, holder, token1) = rv_holder_token(&renewed);
    assert_eq!(
        (holder.as_str(), token1),
        ("alice", token),
        "renewal keeps the tenure"
    );
    assert!(rv1 > rv0, "renewal is a new revision: {rv1} > {rv0}");
    let spec = renewed.spec.clone().unwrap();
    assert!(spec.renew_time >= first.spec.clone().unwrap().renew_time);

    let got = cc
        .get(get_req("team", "lock", false))
        .await
        .expect("linearizable get via node 3");
    assert!(got.revision >= rv1);
    assert_eq!(
        rv_holder_token(&lease_of(got.lease)),
        (rv1, "alice".into(), token)
    );

    let f = follower_of(&c, leader);
    c.wait_applied(f, rv1, APPLY_TIMEOUT).await;
    let stale = c
        .client_for(&[f])
        .get(get_req("team", "lock", true))
        .await
        .expect("stale get from a follower");
    assert_eq!(
        rv_holder_token(&lease_of(stale.lease)),
        (rv1, "alice".into(), token),
        "stale read from follower {f} after it applied {rv1}"
    );

    // Release through a node other than the one that acquired.
    let released = lease_of(
        cc.release(release_req("team", "lock", "alice", token))
            .await
            .expect("release via node 3")
            .lease,
    );
    let (_, holder, t) = rv_holder_token(&released);
    assert_eq!(
        (holder.as_str(), t),
        ("", 0),
        "released lease has no holder"
    );

    // Nobody has to wait for the duration after a release.
    let bob = b
        .acquire(acquire_req("team", "lock", "bob", 30))
        .await
        .expect("bob acquires right after the release");
    assert!(bob.newly_acquired && !bob.created);
    let bl = lease_of(bob.lease);
    let (_, holder, bob_token) = rv_holder_token(&bl);
    assert_eq!(holder, "bob");
    assert!(
        bob_token > token,
        "new tenure has a greater token: {bob_token} > {token}"
    );
    assert_eq!(transitions(&bl), transitions(&first) + 1);
    c.assert_no_crashes();
}

/// 2. Twenty distinct holders race for one lease through all three nodes:
/// exactly one wins; everyone else is told who holds it.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_acquirers_exactly_one_wins() {
    let c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let clients: Vec<Arc<Client>> = (1..=3).map(|i| Arc::new(c.client_for(&[i]))).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = clients[i % 3].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let holder = format!("racer-{i}");
            barrier.wait().await;
            let r = client
                .acquire(acquire_req("race", "prize", &holder, 30))
                .await;
            (holder, r)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for t in tasks {
        let (holder, r) = t.await.expect("task");
        match r {
            Ok(resp) => winners.push((holder, resp)),
            Err(s) => losers.push((holder, s)),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one winner; winners: {:?}",
        winners.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let (winner, resp) = &winners[0];
    assert!(resp.newly_acquired);
    assert_eq!(rv_holder_token(&lease_of(resp.lease.clone())).1, *winner);
    assert_eq!(losers.len(), 19);
    for (holder, s) in &losers {
        let meta = assert_status(holder, s, Code::FailedPrecondition, reason::LEASE_HELD);
        assert_eq!(
            meta.get("holder"),
            Some(winner),
            "{holder} is told the winner"
        );
    }
    let got = c
        .client()
        .get(get_req("race", "prize", false))
        .await
        .expect("get");
    let (_, holder, token) = rv_holder_token(&lease_of(got.lease));
    assert_eq!((holder, token), (winner.clone(), resp.fencing_token));
    c.assert_no_crashes();
}

/// 3. SIGKILL the leader while a lease is held: a new leader takes over and
/// the lease, its holder and its fencing token survive.
#[tokio::test(flavor = "multi_thread")]
async fn leader_crash_keeps_held_lease() {
    let mut c = Cluster::start(3).await;
    let old = c.wait_for_leader(LEADER_TIMEOUT).await;
    let old_term = c.status(old).await.expect("leader status").term;
    let acq = c
        .client()
        .acquire(acquire_req("crash", "lock", "alice", 60))
        .await
        .expect("acquire");
    let token = acq.fencing_token;
    let (rv, _, _) = rv_holder_token(&lease_of(acq.lease));

    c.kill(old);
    let new = c.wait_for_leader(LEADER_TIMEOUT).await;
    assert_ne!(new, old, "a surviving node leads");
    let st = c.status(new).await.expect("new leader status");
    assert!(st.term > old_term, "term {} > {old_term}", st.term);

    let survivor = follower_of(&c, new);
    let got = c
        .client_for(&[survivor])
        .get(get_req("crash", "lock", false))
        .await
        .expect("linearizable get through a survivor");
    assert_eq!(
        rv_holder_token(&lease_of(got.lease)),
        (rv, "alice".into(), token)
    );

    let renewed = c
        .client_for(&[new])
        .renew(renew_req("crash", "lock", "alice", token))
        .await
        .expect("holder renews through the new leader");
    let (rv2, holder, t) = rv_holder_token(&lease_of(renewed.lease));
    assert_eq!((holder.as_str(), t), ("alice", token));
    assert!(rv2 > rv);

    let s = expect_err(
        "mallory acquires a held lease",
        c.client_for(&[survivor])
            .acquire(acquire_req("crash", "lock", "mallory", 60))
            .await,
    );
    let meta = assert_status("mallory", &s, Code::FailedPrecondition, reason::LEASE_HELD);
    assert_eq!(meta.get("holder").map(String::as_str), Some("alice"));
    c.assert_no_crashes();
}

/// 4. Kill and restart every node: all leases come back exactly as they were,
/// the revision does not go back, and new tokens stay greater.
#[tokio::test(flavor = "multi_thread")]
async fn full_restart_preserves_everything() {
    let mut c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    let mut tokens = BTreeMap::new();
    for i in 0..50 {
        let r = client
            .acquire(acquire_req(
                "restart",
                &format!("l-{i}"),
                &format!("h-{i}"),
                300,
            ))
            .await
            .unwrap_or_else(|e| panic!("acquire l-{i}: {e:?}"));
        tokens.insert(i, r.fencing_token);
    }
    for i in (0..50).step_by(3) {
        client
            .renew(renew_req(
                "restart",
                &format!("l-{i}"),
                &format!("h-{i}"),
                tokens[&i],
            ))
            .await
            .unwrap_or_else(|e| panic!("renew l-{i}: {e:?}"));
    }
    for i in (0..50).step_by(5) {
        client
            .release(release_req(
                "restart",
                &format!("l-{i}"),
                &format!("h-{i}"),
                tokens[&i],
            ))
            .await
            .unwrap_or_else(|e| panic!("release l-{i}: {e:?}"));
    }
    let (before, rev_before) = list_all(&client, false).await;
    assert_eq!(before.len(), 50);
    let max_token = *tokens.values().max().unwrap();
    let status_rev_before = c.status(1).await.expect("status").revision;

    c.kill_all();
    for id in c.ids() {
        c.restart(id).await;
    }
    c.wait_for_leader(LEADER_TIMEOUT).await;

    let client = c.client();
    let (after, rev_after) = list_all(&client, false).await;
    assert!(
        rev_after >= rev_before,
        "revision went back: {rev_after} < {rev_before}"
    );
    assert_eq!(after.len(), before.len());
    for (key, l) in &before {
        let a = after
            .get(key)
            .unwrap_or_else(|| panic!("{key} lost in the restart"));
        assert_eq!(rv_holder_token(a), rv_holder_token(l), "{key}");
        assert_eq!(a, l, "{key} is identical after the restart");
    }
    for id in c.ids() {
        let s = c.status(id).await.expect("status");
        assert!(
            s.revision >= status_rev_before,
            "node {id} revision went back"
        );
    }
    let fresh = client
        .acquire(acquire_req("restart", "fresh", "newcomer", 30))
        .await
        .expect("acquire after restart");
    assert!(
        fresh.fencing_token > max_token && fresh.fencing_token > rev_before,
        "token {} after restart must exceed every earlier token ({max_token}) and revision {rev_before}",
        fresh.fencing_token
    );
    c.assert_no_crashes();
}

/// 5. A follower that lost its data directory rejoins from a snapshot and
/// catches up.
#[tokio::test(flavor = "multi_thread")]
async fn wiped_follower_catches_up_from_snapshot() {
    let mut c = Cluster::start_with(
        3,
        Options {
            snapshot_logs: Some(20),
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = Arc::new(c.client_for(&[leader]));

    // openraft keeps `max_in_snapshot_log_to_keep` (1000, set in
    // src/raft/node.rs) entries behind the last snapshot, so the log is
    // purged past its start only once the snapshot index exceeds that.
    // Ten holders renewing concurrently get there (their renewals share
    // entries, so how many it takes depends on the batching): they renew
    // until the leader's snapshot is far enough.
    const WRITERS: usize = 10;
    let far_enough = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let stop = far_enough.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("w-{w}");
            let holder = format!("writer-{w}");
            let token = client
                .acquire(acquire_req("snap", &name, &holder, 300))
                .await
                .expect("acquire")
                .fencing_token;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .renew(renew_req("snap", &name, &holder, token))
                    .await
                    .expect("renew");
            }
        }));
    }
    let d = Deadline::new(
        "the leader's snapshot to pass the 1000 kept entries",
        Duration::from_secs(60),
    );
    loop {
        let st = c.status(leader).await.expect("leader status");
        if st.snapshot_index > 1000 + 20 {
            break;
        }
        d.check(st.snapshot_index).await;
    }
    far_enough.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }

    let f = follower_of(&c, leader);
    c.kill(f);
    c.wipe(f);
    // Restarted empty in the bootstrap mode it was first started with, the
    // node finds the cluster that lists its old data directory and refuses
    // to start, naming what to do.
    let (status, log) = c.start_expecting_exit(f, Duration::from_secs(20)).await;
    assert!(!status.success(), "{status}");
    assert!(
        log.contains("member replace") && log.contains("initial-cluster-state existing"),
        "{log}"
    );
    c.wipe(f);
    // The documented procedure: start it empty as an existing member, then
    // replace the member.
    c.restart_wiped(f).await;
    c.replace(f).await.expect("member replace");

    // A write after the wipe, so the lease the rejoined node must serve is
    // newer than anything it could have had. Retried within a deadline: the
    // cluster may be electing (see the bug check at the end).
    let all = c.client();
    let d = Deadline::new(
        "a renewal to succeed after the wipe",
        Duration::from_secs(15),
    );
    let current = loop {
        let r = async {
            let g = all.get(get_req("snap", "w-0", false)).await?;
            let token = rv_holder_token(&lease_of(g.lease)).2;
            all.renew(renew_req("snap", "w-0", "writer-0", token)).await
        }
        .await;
        match r {
            Ok(r) => break lease_of(r.lease),
            Err(e) => d.check(e).await,
        }
    };
    let leader_now = c.wait_for_leader(LEADER_TIMEOUT).await;
    let target = c
        .status(leader_now)
        .await
        .expect("leader status")
        .applied_index;
    let fs = c.wait_applied(f, target, Duration::from_secs(30)).await;
    assert!(
        fs.snapshot_index > 0,
        "rejoined node has a snapshot: {fs:?}"
    );

    let stale = c
        .client_for(&[f])
        .get(get_req("snap", "w-0", true))
        .await
        .expect("stale get from the rejoined node");
    assert_eq!(lease_of(stale.lease), current);
    let (listed, _) = list_all(&c.client_for(&[f]), true).await;
    assert_eq!(listed.len(), WRITERS);
    let (on_leader, _) = list_all(&all, false).await;
    assert_eq!(
        listed, on_leader,
        "the rejoined node holds exactly the cluster's leases"
    );

    // Regression: the wiped follower comes back with an empty log and the
    // leader sees its matched index go backwards. Without openraft's
    // `loosen-follower-log-revert` feature the leader's Raft core panicked
    // (and the process then exited with status 0, hiding the crash).
    let crashed = c.crashed();
    let exit_0 = if crashed.values().any(|st| st.success()) {
        "; and a node whose Raft core died exited with status 0, which hides the crash \
         (second bug: src/server.rs watch_fatal)"
    } else {
        ""
    };
    assert!(
        crashed.is_empty(),
        "rejoining wiped follower {f} crashed other nodes: {crashed:?} \
         (old leader {leader}, leader now {leader_now}){exit_0}"
    );
}

/// Regression (issue 10): a voter whose data directory was wiped used to
/// rejoin with `--peers` and vote at once with an empty log and no memory of
/// its vote, so it could help elect a leader that lacks acknowledged
/// entries. Now it cannot answer as the member the cluster knows (every Raft
/// message is addressed to the old incarnation) until it is put back with
/// `member replace`: with the leader down, the remaining follower cannot be
/// elected with the wiped node's vote.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_voter_does_not_vote_until_it_is_replaced() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    let granted = client
        .acquire(acquire_req("wipe", "l", "holder", 300))
        .await
        .expect("acquire");
    let f1 = follower_of(&c, leader);
    let f2 = c
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != f1)
        .unwrap();
    c.kill(f1);
    c.wipe(f1);
    c.restart_wiped(f1).await;
    let s1 = c.status(f1).await.expect("status of the wiped node");
    assert!(s1.cluster_id.is_empty(), "{s1:?}");

    c.kill(leader);
    // Several election rounds: f2 campaigns, f1 must refuse its votes.
    let window = Deadline::new(
        "the leaderless window",
        Duration::from_millis(4 * ELECTION_MAX_MS + 1000),
    );
    while !window.expired() {
        let s2 = c.status(f2).await.expect("status of f2");
        assert_ne!(
            s2.state, "LEADER",
            "node {f2} was elected with the vote of wiped node {f1}: {s2:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old leader comes back: a leader is elected among the nodes that
    // kept their data, with everything acknowledged.
    c.restart(leader).await;
    let elected = Deadline::new(
        "a leader among the nodes that kept their data",
        LEADER_TIMEOUT,
    );
    let now = loop {
        let mut found = None;
        for id in [leader, f2] {
            if let Ok(s) = c.status(id).await {
                if s.state == "LEADER" {
                    found = Some(id);
                }
            }
        }
        match found {
            Some(id) => break id,
            None => elected.check("no leader yet").await,
        }
    };
    let read = client
        .get(get_req("wipe", "l", false))
        .await
        .expect("read after the election");
    assert_eq!(
        rv_holder_token(&lease_of(read.lease)).2,
        granted.fencing_token
    );

    // Replaced, it catches up and votes again as a new member.
    let members = c.replace(f1).await.expect("member replace").members;
    let new_inc = c.status(f1).await.expect("status").incarnation;
    let m = members.iter().find(|m| m.id == f1).expect("f1 listed");
    assert_eq!(m.incarnation, new_inc);
    assert_eq!(m.role, pb::member::Role::Voter as i32);
    let target = c.status(now).await.expect("leader status").applied_index;
    c.wait_applied(f1, target, Duration::from_secs(30)).await;
    let again = expect_err("replacing a node that kept its data", c.replace(f1).await);
    assert!(again.message().contains("nothing to replace"), "{again:?}");
    c.assert_no_crashes();
}

/// 6. Membership: a fourth node joins as a voter through a follower, serves
/// reads, and is removed again.
#[tokio::test(flavor = "multi_thread")]
async fn add_and_remove_member() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let acq = c
        .client()
        .acquire(acquire_req("members", "lock", "alice", 60))
        .await
        .expect("acquire");
    let existing = lease_of(acq.lease);

    let addr = c.spawn_joiner(4).await;
    let f = follower_of(&c, leader);
    let fc = c.client_for(&[f]);
    let added = fc
        .add_member(pb::AddMemberRequest {
            id: 4,
            address: addr.clone(),
        })
        .await
        .expect("add member 4 through a follower");
    let voters = |ms: &[pb::Member]| -> Vec<u64> {
        ms.iter()
            .filter(|m| m.role == pb::member::Role::Voter as i32)
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(voters(&added.members), vec![1, 2, 3, 4], "{added:?}");
    assert!(added.members.iter().any(|m| m.id == 4 && m.address == addr));

    let d = Deadline::new("every node to list 4 voters", Duration::from_secs(10));
    loop {
        let mut views = BTreeMap::new();
        for id in 1..=4 {
            views.insert(id, c.status(id).await.map(|s| voters(&s.members)).ok());
        }
        if views
            .values()
            .all(|v| v.as_deref() == Some(&[1, 2, 3, 4][..]))
        {
            break;
        }
        d.check(&views).await;
    }

    let target = c.status(leader).await.expect("status").applied_index;
    c.wait_applied(4, target, APPLY_TIMEOUT).await;
    let got = c
        .client_for(&[4])
        .get(get_req("members", "lock", true))
        .await
        .expect("stale read from the new node");
    assert_eq!(lease_of(got.lease), existing);

    let removed = fc
        .remove_member(pb::RemoveMemberRequest { id: 4 })
        .await
        .expect("remove member 4");
    assert_eq!(
        removed.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{removed:?}"
    );
    assert_eq!(voters(&removed.members), vec![1, 2, 3]);
    let d = Deadline::new(
        "nodes 1-3 to list exactly 3 voters",
        Duration::from_secs(10),
    );
    loop {
        let mut views = BTreeMap::new();
        for id in 1..=3 {
            views.insert(
                id,
                c.status(id)
                    .await
                    .map(|s| s.members.iter().map(|m| (m.id, m.role)).collect::<Vec<_>>())
                    .ok(),
            );
        }
        let voter = pb::member::Role::Voter as i32;
        if views
            .values()
            .all(|v| v.as_deref() == Some(&[(1, voter), (2, voter), (3, voter)][..]))
        {
            break;
        }
        d.check(&views).await;
    }
    c.kill(4);
    // The cluster still works with its three members.
    c.client()
        .renew(renew_req("members", "lock", "alice", acq.fencing_token))
        .await
        .expect("renew after removal");
    c.assert_no_crashes();
}

/// 6b. Membership: removing the leader itself. It hands leadership over
/// to one of the others first (counted on its `/metrics`), the successor
/// removes it, both remaining voters list only the two of them, the lease
/// and its fencing token are intact, and writes go on.
#[tokio::test(flavor = "multi_thread")]
async fn removing_the_leader_hands_the_cluster_to_the_others() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    // A leader elected less than an election timeout ago still holds its
    // own vote fresh and refuses the successor's campaign; the hand-over
    // then retries until that runs out, each try a term. Past it, one try
    // and one term.
    tokio::time::sleep(Duration::from_millis(ELECTION_MAX_MS)).await;
    let term_before = c.status(leader).await.expect("leader status").term;
    let acq = c
        .client()
        .acquire(acquire_req("members", "lock", "alice", 60))
        .await
        .expect("acquire");
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();

    // Through a follower: it forwards the call to the leader, which hands
    // over and answers NOT_LEADER naming its successor; the client retries
    // there.
    let removed = c
        .client_for(&[others[0]])
        .remove_member(pb::RemoveMemberRequest { id: leader })
        .await
        .expect("member remove of the leader, through a follower");
    assert_eq!(
        removed.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        others,
        "{removed:?}"
    );

    // One of the others leads, and both list only the two of them.
    let d = Deadline::new(
        "a new leader among the remaining two",
        Duration::from_secs(15),
    );
    let new_leader = loop {
        let mut views = BTreeMap::new();
        for &id in &others {
            views.insert(
                id,
                c.status(id)
                    .await
                    .map(|s| {
                        (
                            s.state,
                            s.leader_id,
                            s.members.iter().map(|m| m.id).collect::<Vec<_>>(),
                        )
                    })
                    .ok(),
            );
        }
        let leaders: Vec<u64> = views
            .iter()
            .filter_map(|(id, v)| match v {
                Some((state, _, members)) if state == "LEADER" && *members == others => Some(*id),
                _ => None,
            })
            .collect();
        let agree = views.values().all(
            |v| matches!(v, Some((_, l, members)) if others.contains(l) && *members == others),
        );
        if leaders.len() == 1 && agree {
            break leaders[0];
        }
        d.check(&views).await;
    };
    assert_ne!(new_leader, leader);
    assert_eq!(
        c.status(new_leader).await.expect("status").term,
        term_before + 1,
        "one election, the one the hand-over asked for"
    );
    let mut http = Http::open(&c.endpoint(leader)).await;
    let scrape = http.request("GET", "/metrics", None).await;
    let text = String::from_utf8_lossy(&scrape.body);
    assert_eq!(
        sample(&text, "leasehold_leader_transfers_total{result=\"ok\"}"),
        Some(1.0),
        "the removed leader handed over once:\n{text}"
    );

    // The removed node is stopped, as the README says to do; the two
    // remaining voters carry on and the tenure survived.
    c.kill(leader);
    let client = c.client_for(&others);
    let renewed = client
        .renew(renew_req("members", "lock", "alice", acq.fencing_token))
        .await
        .expect("renew on the two remaining voters");
    assert_eq!(
        rv_holder_token(&lease_of(renewed.lease)).2,
        acq.fencing_token
    );
    let taken = client
        .acquire(acquire_req("members", "other", "bob", 60))
        .await
        .expect("a new acquire on the two remaining voters");
    assert!(
        taken.fencing_token > acq.fencing_token,
        "tokens still rise: {} then {}",
        acq.fencing_token,
        taken.fencing_token
    );
    c.assert_no_crashes();
}

fn assert_invalid(what: &str, s: &tonic::Status, field: &str) {
    let meta = assert_status(what, s, Code::InvalidArgument, reason::INVALID_ARGUMENT);
    assert!(
        s.message().contains(field),
        "{what}: message {:?} should name {field}",
        s.message()
    );
    assert_eq!(
        meta.get("field").map(String::as_str),
        Some(field),
        "{what}: ErrorInfo field"
    );
    use tonic_types::StatusExt;
    let details = s.get_error_details();
    let br = details
        .bad_request()
        .unwrap_or_else(|| panic!("{what}: no BadRequest detail"));
    assert!(
        br.field_violations.iter().any(|v| v.field == field),
        "{what}: BadRequest {br:?} should name {field}"
    );
}

/// 7. The error model: bad input names the field; domain refusals have their
/// documented code and reason. Sent through a follower, so the refusals the
/// leader makes also cross the forwarding path.
#[tokio::test(flavor = "multi_thread")]
async fn errors_follow_the_documented_model() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let cl = c.client_for(&[follower_of(&c, leader)]);

    let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
    assert_eq!(long_name.len(), 254);
    let bad_acquires: Vec<(&str, pb::AcquireRequest, &str)> = vec![
        (
            "empty namespace",
            acquire_req("", "a", "h", 10),
            "metadata.namespace",
        ),
        (
            "namespace Bad_NS",
            acquire_req("Bad_NS", "a", "h", 10),
            "metadata.namespace",
        ),
        (
            "name UPPER",
            acquire_req("ns", "UPPER", "h", 10),
            "metadata.name",
        ),
        (
            "name a..b",
            acquire_req("ns", "a..b", "h", 10),
            "metadata.name",
        ),
        (
            "254-char name",
            acquire_req("ns", &long_name, "h", 10),
            "metadata.name",
        ),
        ("empty holder", acquire_req("ns", "a", "", 10), "holder"),
        (
            "duration 0",
            acquire_req("ns", "a", "h", 0),
            "leaseDurationSeconds",
        ),
        (
            "duration -5",
            acquire_req("ns", "a", "h", -5),
            "leaseDurationSeconds",
        ),
        (
            "label key -x",
            pb::AcquireRequest {
                labels: HashMap::from([("-x".to_string(), "v".to_string())]),
                ..acquire_req("ns", "a", "h", 10)
            },
            "labels[\"-x\"]",
        ),
        (
            "label value 'v v'",
            pb::AcquireRequest {
                labels: HashMap::from([("k".to_string(), "v v".to_string())]),
                ..acquire_req("ns", "a", "h", 10)
            },
            "labels[\"k\"]",
        ),
    ];
    for (what, req, field) in bad_acquires {
        let s = expect_err(what, cl.acquire(req).await);
        assert_invalid(what, &s, field);
    }

    let s = expect_err(
        "renew token 0",
        cl.renew(renew_req("ns", "a", "h", 0)).await,
    );
    assert_invalid("renew token 0", &s, "fencingToken");

    let list = |selector: &str, token: &str| pb::ListRequest {
        namespace: "ns".into(),
        label_selector: selector.into(),
        limit: 0,
        continue_token: token.into(),
        stale: false,
    };
    let s = expect_err("selector 'a in (x'", cl.list(list("a in (x", "")).await);
    assert_invalid("selector 'a in (x'", &s, "labelSelector");
    let s = expect_err("continue garbage", cl.list(list("", "garbage")).await);
    assert_invalid("continue garbage", &s, "continueToken");

    let bad_puts: Vec<(&str, pb::PutRequest, &str)> = vec![
        (
            "put duration Some(0)",
            put_req(
                meta("ns", "p", 0),
                pb::LeaseSpec {
                    lease_duration_seconds: Some(0),
                    ..Default::default()
                },
            ),
            "spec.leaseDurationSeconds",
        ),
        (
            "put transitions Some(-1)",
            put_req(
                meta("ns", "p", 0),
                pb::LeaseSpec {
                    lease_transitions: Some(-1),
                    ..Default::default()
                },
            ),
            "spec.leaseTransitions",
        ),
        (
            "put preferredHolder without strategy",
            put_req(
                meta("ns", "p", 0),
                pb::LeaseSpec {
                    preferred_holder: "h2".into(),
                    ..Default::default()
                },
            ),
            "spec.preferredHolder",
        ),
        (
            "put renewTime yesterday",
            put_req(
                meta("ns", "p", 0),
                pb::LeaseSpec {
                    renew_time: "yesterday".into(),
                    ..Default::default()
                },
            ),
            "spec.renewTime",
        ),
        (
            "put without metadata",
            put_req(None, pb::LeaseSpec::default()),
            "metadata",
        ),
    ];
    for (what, req, field) in bad_puts {
        let s = expect_err(what, cl.put(req).await);
        assert_invalid(what, &s, field);
    }

    // Missing lease.
    let s = expect_err("get missing", cl.get(get_req("ns", "missing", false)).await);
    assert_status("get missing", &s, Code::NotFound, reason::NOT_FOUND);
    let s = expect_err(
        "renew missing",
        cl.renew(renew_req("ns", "missing", "h", 1)).await,
    );
    assert_status("renew missing", &s, Code::NotFound, reason::NOT_FOUND);
    let s = expect_err(
        "delete missing",
        cl.delete(pb::DeleteRequest {
            namespace: "ns".into(),
            name: "missing".into(),
            resource_version: None,
            request_id: String::new(),
            uid: String::new(),
        })
        .await,
    );
    assert_status("delete missing", &s, Code::NotFound, reason::NOT_FOUND);

    // Conflicts.
    let created = cl
        .put(put_req(
            meta("ns", "cas", 0),
            pb::LeaseSpec {
                holder_identity: "h".into(),
                lease_duration_seconds: Some(30),
                ..Default::default()
            },
        ))
        .await
        .expect("create via put");
    assert!(created.created);
    let rv = rv_holder_token(&lease_of(created.lease.clone())).0;
    cl.put(put_req(
        meta("ns", "cas", rv),
        pb::LeaseSpec {
            holder_identity: "h".into(),
            lease_duration_seconds: Some(40),
            ..Default::default()
        },
    ))
    .await
    .expect("update with the current resourceVersion");
    let s = expect_err(
        "put with a stale resourceVersion",
        cl.put(put_req(meta("ns", "cas", rv), pb::LeaseSpec::default()))
            .await,
    );
    assert_status("put stale rv", &s, Code::Aborted, reason::CONFLICT);
    let s = expect_err(
        "delete with a wrong resourceVersion",
        cl.delete(pb::DeleteRequest {
            namespace: "ns".into(),
            name: "cas".into(),
            resource_version: Some(rv),
            request_id: String::new(),
            uid: String::new(),
        })
        .await,
    );
    assert_status("delete wrong rv", &s, Code::Aborted, reason::CONFLICT);
    let s = expect_err(
        "put rv 0 on an existing lease",
        cl.put(put_req(meta("ns", "cas", 0), pb::LeaseSpec::default()))
            .await,
    );
    assert_status(
        "put create existing",
        &s,
        Code::AlreadyExists,
        reason::ALREADY_EXISTS,
    );

    // Lost tenure: a stale token, and a renewal after release.
    let t1 = cl
        .acquire(acquire_req("ns", "tenure", "alice", 30))
        .await
        .expect("acquire")
        .fencing_token;
    cl.release(release_req("ns", "tenure", "alice", t1))
        .await
        .expect("release");
    let s = expect_err(
        "renew after release",
        cl.renew(renew_req("ns", "tenure", "alice", t1)).await,
    );
    assert_status(
        "renew after release",
        &s,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );
    let t2 = cl
        .acquire(acquire_req("ns", "tenure", "alice", 30))
        .await
        .expect("acquire again")
        .fencing_token;
    assert!(t2 > t1);
    let s = expect_err(
        "renew with the previous tenure's token",
        cl.renew(renew_req("ns", "tenure", "alice", t1)).await,
    );
    let meta = assert_status(
        "renew stale token",
        &s,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );
    assert_eq!(meta.get("currentFencingToken"), Some(&t2.to_string()));
    let s = expect_err(
        "release with a stale token",
        cl.release(release_req("ns", "tenure", "alice", t1)).await,
    );
    assert_status(
        "release stale token",
        &s,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );
    c.assert_no_crashes();
}

/// A client that reaches the leader through a follower sends its next calls
/// to the leader directly (the follower names it in the forwarded reply).
#[tokio::test(flavor = "multi_thread")]
async fn clients_learn_the_leader_from_a_forwarded_reply() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let f = follower_of(&c, leader);
    let client = c.client_for(&[f, leader]);
    assert_eq!(client.preferred_endpoint(), c.endpoint(f));
    client
        .acquire(acquire_req("route", "a", "h", 30))
        .await
        .expect("acquire through the follower");
    assert_eq!(client.preferred_endpoint(), c.endpoint(leader));
    c.assert_no_crashes();
}

/// 8. Kubernetes-style compare-and-swap with Put.
#[tokio::test(flavor = "multi_thread")]
async fn put_is_compare_and_swap() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let cl = c.client();
    let spec = |holder: &str, secs: i32| pb::LeaseSpec {
        holder_identity: holder.into(),
        lease_duration_seconds: Some(secs),
        lease_transitions: Some(0),
        ..Default::default()
    };
    let created = cl
        .put(put_req(
            meta("kube-system", "controller", 0),
            spec("node-a", 15),
        ))
        .await
        .expect("create");
    assert!(created.created);
    let (rv0, holder, token0) = rv_holder_token(&lease_of(created.lease));
    assert_eq!(holder, "node-a");
    assert!(token0 > 0);

    let read = lease_of(
        cl.get(get_req("kube-system", "controller", false))
            .await
            .expect("get")
            .lease,
    );
    let read_rv = rv_holder_token(&read).0;
    assert_eq!(read_rv, rv0);

    let mut update = read.clone();
    update.spec.as_mut().unwrap().lease_duration_seconds = Some(20);
    update.metadata.as_mut().unwrap().labels = HashMap::from([("app".into(), "ctl".into())]);
    let updated = lease_of(
        cl.put(pb::PutRequest {
            lease: Some(update.clone()),
            request_id: String::new(),
        })
        .await
        .expect("update with the read resourceVersion")
        .lease,
    );
    let (rv1, holder, token1) = rv_holder_token(&updated);
    assert!(rv1 > read_rv, "{rv1} > {read_rv}");
    assert_eq!(
        (holder.as_str(), token1),
        ("node-a", token0),
        "same holder keeps its token"
    );
    assert_eq!(
        updated.spec.as_ref().unwrap().lease_duration_seconds,
        Some(20)
    );
    assert_eq!(
        updated
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .get("app")
            .map(String::as_str),
        Some("ctl")
    );

    let s = expect_err(
        "second update with the old resourceVersion",
        cl.put(pb::PutRequest {
            lease: Some(update),
            request_id: String::new(),
        })
        .await,
    );
    let m = assert_status("stale put", &s, Code::Aborted, reason::CONFLICT);
    assert_eq!(m.get("resourceVersion"), Some(&rv1.to_string()));

    // Naming another holder while node-a's tenure is live is refused like
    // an Acquire would be, with the holder and the time left.
    let mut takeover = updated.clone();
    let sp = takeover.spec.as_mut().unwrap();
    sp.holder_identity = "node-b".into();
    sp.lease_transitions = Some(1);
    let s = expect_err(
        "takeover via put while held",
        cl.put(pb::PutRequest {
            lease: Some(takeover),
            request_id: String::new(),
        })
        .await,
    );
    let m = assert_status("held put", &s, Code::FailedPrecondition, reason::LEASE_HELD);
    assert_eq!(m.get("holder").map(String::as_str), Some("node-a"));

    // client-go releases by writing an empty holder: allowed at once.
    let mut release = updated.clone();
    release.spec.as_mut().unwrap().holder_identity = String::new();
    let released = lease_of(
        cl.put(pb::PutRequest {
            lease: Some(release),
            request_id: String::new(),
        })
        .await
        .expect("release via put")
        .lease,
    );
    assert_eq!(rv_holder_token(&released).2, 0);

    let mut takeover = released.clone();
    let sp = takeover.spec.as_mut().unwrap();
    sp.holder_identity = "node-b".into();
    sp.lease_transitions = Some(1);
    let taken = lease_of(
        cl.put(pb::PutRequest {
            lease: Some(takeover),
            request_id: String::new(),
        })
        .await
        .expect("holder change via put after the release")
        .lease,
    );
    let (rv2, holder, token2) = rv_holder_token(&taken);
    assert_eq!(holder, "node-b");
    assert!(rv2 > rv1);
    assert!(
        token2 > token1,
        "a new holder gets a new fencing token: {token2} > {token1}"
    );
    assert_eq!(token2, rv2, "the token is the revision of the takeover");
    c.assert_no_crashes();
}

/// 9. When every endpoint keeps answering UNAVAILABLE until the call's
/// deadline, the client returns the last error it got (code UNAVAILABLE,
/// naming the endpoint and the cause), not a placeholder (regression test).
#[tokio::test(flavor = "multi_thread")]
async fn client_reports_the_last_error_when_it_gives_up() {
    let dead = format!("127.0.0.1:{}", common::free_ports(1)[0]);
    let client = Client::new(vec![dead.clone()])
        .expect("client")
        .with_timeout(Duration::from_millis(500));
    let s = expect_err("status of a dead endpoint", client.status().await);
    assert!(
        s.code() == Code::Unavailable && s.message().contains(&dead),
        "the client hides the last error: got {:?} {:?}, expected UNAVAILABLE naming {dead}",
        s.code(),
        s.message()
    );
}

/// 10. A retried write carrying the same request id is applied once: the
/// retry, even through another node, gets the first attempt's answer.
#[tokio::test(flavor = "multi_thread")]
async fn retries_with_the_same_request_id_apply_once() {
    let c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let (a, b) = (c.client_for(&[1]), c.client_for(&[2]));
    let mut acq = acquire_req("idem", "job", "alice", 30);
    acq.request_id = "acquire-alice-1".into();
    let first = a.acquire(acq.clone()).await.expect("acquire");
    let mut rel = release_req("idem", "job", "alice", first.fencing_token);
    rel.request_id = "release-alice-1".into();
    let released = a.release(rel.clone()).await.expect("release");
    let again = b
        .release(rel)
        .await
        .expect("retried release answers like the first");
    assert_eq!(again, released);
    // bob takes the lease; alice's retried acquire must not take it back.
    let bob = b
        .acquire(acquire_req("idem", "job", "bob", 30))
        .await
        .expect("bob acquires after the release");
    let retry = b
        .acquire(acq)
        .await
        .expect("retried acquire answers like the first");
    assert_eq!(retry, first);
    let now = a
        .get(pb::GetRequest {
            namespace: "idem".into(),
            name: "job".into(),
            stale: false,
        })
        .await
        .expect("get");
    let (_, holder, token) = rv_holder_token(&lease_of(now.lease));
    assert_eq!((holder.as_str(), token), ("bob", bob.fencing_token));
    // Without the same id, a second release is refused as usual.
    let e = expect_err(
        "second release without the id",
        a.release(release_req("idem", "job", "alice", first.fencing_token))
            .await,
    );
    assert_status(
        "second release",
        &e,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );
    c.assert_no_crashes();
}

/// A lease near the size limit: labels and annotations filling most of 512
/// KiB.
fn big_lease(ns: &str, name: &str) -> pb::PutRequest {
    let labels: HashMap<String, String> = (0..2_000)
        .map(|i| (format!("big.example.com/label-{i}"), "v".repeat(60)))
        .collect();
    let annotations: HashMap<String, String> = (0..2)
        .map(|i| (format!("note-{i}"), "a".repeat(120 * 1024)))
        .collect();
    let mut m = meta(ns, name, 0).expect("meta");
    m.labels = labels;
    m.annotations = annotations;
    put_req(
        Some(m),
        pb::LeaseSpec {
            holder_identity: format!("holder-of-{name}"),
            lease_duration_seconds: Some(60),
            ..Default::default()
        },
    )
}

fn encoded_len(l: &pb::Lease) -> usize {
    use prost::Message;
    l.encoded_len()
}

/// Regression (issue 10): a lease with about 4 MiB of labels was accepted and
/// could then never be read back (replies are bounded by the message limit).
/// Now a lease over 512 KiB is refused naming the field, and every lease that
/// is accepted can be read, listed (pages bounded by bytes), watched, and
/// forwarded through a follower.
#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_lease_can_be_read_listed_watched_and_forwarded() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let f = follower_of(&c, leader);
    let via_follower = c.client_for(&[f]);

    // Too big: refused, naming the largest part, through the follower.
    let mut too_big = big_lease("big", "too-big");
    let m = too_big.lease.as_mut().unwrap().metadata.as_mut().unwrap();
    m.labels
        .extend((0..4_000).map(|i| (format!("more.example.com/label-{i}"), "v".repeat(60))));
    let s = expect_err("a lease over the limit", via_follower.put(too_big).await);
    assert_invalid("too big", &s, "metadata.labels");
    assert!(s.message().len() < 1024, "{} bytes", s.message().len());

    let mut watch = via_follower
        .watch_on(
            0,
            pb::WatchRequest {
                namespace: "big".into(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");

    const N: usize = 9;
    for i in 0..N {
        let r = via_follower
            .put(big_lease("big", &format!("l{i}")))
            .await
            .unwrap_or_else(|e| panic!("put of a large lease through a follower: {e:?}"));
        let l = lease_of(r.lease);
        assert!(encoded_len(&l) > 400 * 1024, "{} bytes", encoded_len(&l));
    }
    // Read back, linearizable through the follower (forwarded) and stale.
    for stale in [false, true] {
        let g = via_follower
            .get(get_req("big", "l0", stale))
            .await
            .expect("get a large lease");
        assert_eq!(lease_of(g.lease).metadata.unwrap().labels.len(), 2_000);
    }
    // Listed in pages bounded by bytes: more than one page, every lease once.
    let mut names = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = via_follower
            .list(pb::ListRequest {
                namespace: "big".into(),
                continue_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list large leases");
        pages += 1;
        let bytes: usize = page.items.iter().map(encoded_len).sum();
        assert!(bytes <= 3 * 1024 * 1024, "page of {bytes} bytes");
        names.extend(page.items.iter().map(|l| l.metadata.clone().unwrap().name));
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    assert!(pages > 1, "{pages} pages");
    let expected: Vec<String> = (0..N).map(|i| format!("l{i}")).collect();
    assert_eq!(names, expected);
    // Watched: every one arrives.
    let mut seen = Vec::new();
    while seen.len() < N {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("watch event in time")
            .expect("watch stream")
            .expect("watch open");
        if let Some(l) = e.lease {
            seen.push(l.metadata.unwrap().name);
        }
    }
    assert_eq!(seen, expected);
    c.assert_no_crashes();
}

/// `RenewStream`: one stream to the leader renews many leases, answers come
/// in order, and a failed renewal is an answer (the same error a `Renew`
/// call gets), not the end of the stream. A follower refuses the stream,
/// naming the leader, and the client opens it there.
#[tokio::test(flavor = "multi_thread")]
async fn a_renew_stream_renews_many_leases_in_order() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let f = follower_of(&c, leader);
    let client = c.client_for(&[f, leader]);
    let mut tokens = Vec::new();
    for i in 0..5 {
        let r = client
            .acquire(acquire_req("stream", &format!("l{i}"), "agent", 30))
            .await
            .expect("acquire");
        tokens.push(r.fencing_token);
    }

    // Straight to the follower: refused with the leader's address.
    let raw = leasehold::api::limits::leases_client(
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.endpoint(f)))
            .unwrap()
            .connect()
            .await
            .expect("connect"),
    )
    .renew_stream(tokio_stream::iter(Vec::<pb::RenewRequest>::new()))
    .await;
    let s = expect_err("a renew stream on a follower", raw.map(|_| ()));
    let m = assert_status(
        "stream on a follower",
        &s,
        Code::Unavailable,
        reason::NOT_LEADER,
    );
    assert_eq!(m.get("leaderAddress"), Some(&c.endpoint(leader)));

    let mut stream = client.renew_stream().await.expect("open the stream");
    for (i, t) in tokens.iter().enumerate() {
        stream
            .send(renew_req("stream", &format!("l{i}"), "agent", *t))
            .await
            .expect("send");
    }
    stream
        .send(renew_req("stream", "l0", "agent", tokens[0] + 1000))
        .await
        .expect("send");
    stream
        .send(renew_req("stream", "Bad_Name", "agent", 1))
        .await
        .expect("send");
    for (i, t) in tokens.iter().enumerate() {
        let r = stream.next().await.expect("an answer").expect("renewed");
        assert_eq!(r.fencing_token, *t, "answer {i} in order");
        let read = client
            .get(get_req("stream", &format!("l{i}"), false))
            .await
            .expect("get");
        assert_eq!(rv_holder_token(&lease_of(read.lease)).0, r.resource_version);
        assert!(r.expire_time_micros > 0);
    }
    let lost = stream.next().await.expect("an answer").unwrap_err();
    assert_status(
        "stale token in a stream",
        &lost,
        Code::FailedPrecondition,
        reason::LEASE_LOST,
    );
    let bad = stream.next().await.expect("an answer").unwrap_err();
    assert_invalid("bad name in a stream", &bad, "metadata.name");
    // The stream is still usable.
    let again = stream
        .renew(renew_req("stream", "l1", "agent", tokens[1]))
        .await
        .expect("renew after errors");
    assert_eq!(again.fencing_token, tokens[1]);
    c.assert_no_crashes();
}

/// A held lease can be deleted (as `kubectl delete lease` can), but nobody
/// gets it again before the deleted tenure could have lapsed: a create in
/// the meantime is refused like an acquire of a held lease, the deleted
/// holder's next renewal finds nothing, and the lease created afterwards
/// has a higher token. A uid precondition guards against deleting another
/// incarnation.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_lease_can_be_deleted_and_is_not_granted_again_early() {
    let c = Cluster::start(3).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let (cl, other) = (c.client_for(&[1, 2, 3]), c.client_for(&[2]));
    let sent = std::time::Instant::now();
    let acq = cl
        .acquire(acquire_req("ns", "held", "alice", 2))
        .await
        .expect("acquire");
    let lease = lease_of(acq.lease);
    let uid = lease.metadata.clone().unwrap_or_default().uid;
    let del = |uid: &str| pb::DeleteRequest {
        namespace: "ns".into(),
        name: "held".into(),
        uid: uid.into(),
        ..Default::default()
    };
    let s = expect_err(
        "delete another incarnation",
        cl.delete(del("not-this-one")).await,
    );
    let meta = assert_status("uid mismatch", &s, Code::Aborted, reason::CONFLICT);
    assert_eq!(meta.get("uid"), Some(&uid));
    let deleted = cl.delete(del(&uid)).await.expect("delete of a held lease");
    assert_eq!(rv_holder_token(&lease_of(deleted.lease)).1, "alice");

    // Nobody creates it again while alice's tenure could be live: not
    // bob, not alice, not a Put without a holder.
    let s = expect_err(
        "acquire over a tombstone",
        other.acquire(acquire_req("ns", "held", "bob", 2)).await,
    );
    let meta = assert_status(
        "tombstone",
        &s,
        Code::FailedPrecondition,
        reason::LEASE_HELD,
    );
    assert_eq!(meta.get("holder").map(String::as_str), Some("alice"));
    assert!(
        s.message().contains("deleted while held"),
        "{}",
        s.message()
    );
    let remaining: u64 = meta
        .get("remainingMillis")
        .and_then(|m| m.parse().ok())
        .expect("remainingMillis");
    assert!(remaining <= 2_020, "{remaining} ms");
    expect_err(
        "alice re-acquires over her own tombstone",
        cl.acquire(acquire_req("ns", "held", "alice", 2)).await,
    );
    expect_err(
        "put create over a tombstone",
        cl.put(put_req(meta_of("ns", "held"), pb::LeaseSpec::default()))
            .await,
    );
    let s = expect_err(
        "alice renews a deleted lease",
        cl.renew(renew_req("ns", "held", "alice", acq.fencing_token))
            .await,
    );
    assert_status("renew deleted", &s, Code::NotFound, reason::NOT_FOUND);

    // Once it could have lapsed, bob gets it with a higher token.
    let d = Deadline::new("bob to get the re-created lease", Duration::from_secs(10));
    let got = loop {
        match other.acquire(acquire_req("ns", "held", "bob", 2)).await {
            Ok(a) => break a,
            Err(e) if e.code() == Code::FailedPrecondition => d.check(e).await,
            Err(e) => panic!("acquire after the tombstone: {e:?}"),
        }
    };
    // alice's tenure began after `sent` and ran 2 s, plus the 1 % margin.
    assert!(
        sent.elapsed() >= Duration::from_millis(2_020),
        "granted {:?} after alice's 2 s acquire was sent",
        sent.elapsed()
    );
    assert!(
        got.created && got.fencing_token > acq.fencing_token,
        "{got:?}"
    );
    c.assert_no_crashes();
}

fn meta_of(ns: &str, name: &str) -> Option<pb::ObjectMeta> {
    meta(ns, name, 0)
}
