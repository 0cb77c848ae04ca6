//! Leader election against a real three-node cluster: one leader at a time
//! (judged by validity deadlines), fast handover on cancel thanks to the
//! release, handover after about a lease duration when a leader vanishes
//! without releasing, stepping down before the validity deadline when the
//! cluster is unreachable, and a fenced write by a paused former leader.

use crate::common;

use common::*;
use leasehold::client::elector::{
    ElectorConfig, ElectorHandle, LeaderElector, LeaderEvent, StopReason,
};
use leasehold::client::fence::Fence;
use leasehold::client::heartbeat::{Heartbeat, HeartbeatConfig, NodeMonitor};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Lease 3 s, renew deadline 2 s, retry 0.5 s: short enough for tests,
/// valid by the elector's rules (2 s < 3 s × 0.99; 2 s > 0.5 s × 1.2).
fn config(lease: &str, identity: &str) -> ElectorConfig {
    let mut c = ElectorConfig::new("election", lease, identity);
    c.lease_duration = Duration::from_secs(3);
    c.renew_deadline = Duration::from_secs(2);
    c.retry_period = Duration::from_millis(500);
    c
}

/// Every event of every candidate, in the order they were received.
type Log = Arc<Mutex<Vec<(String, LeaderEvent)>>>;

struct Candidate {
    identity: String,
    handle: ElectorHandle,
    task: JoinHandle<Result<(), leasehold::client::errors::LeaseClientError>>,
    cancel: Option<oneshot::Sender<()>>,
}

impl Candidate {
    fn start(cluster: &Cluster, order: &[u64], lease: &str, identity: &str, log: &Log) -> Self {
        let client = Arc::new(cluster.client_for(order));
        let (elector, mut events) =
            LeaderElector::new(client, config(lease, identity)).expect("valid config");
        let handle = elector.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async {
            let _ = rx.await;
        }));
        let (log, id) = (log.clone(), identity.to_string());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                log.lock().unwrap().push((id.clone(), e));
            }
        });
        Candidate {
            identity: identity.to_string(),
            handle,
            task,
            cancel: Some(tx),
        }
    }

    /// Cancels the elector (it steps down and releases) and waits for it.
    async fn cancel(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("elector ends within 10 s of its cancellation");
        r.expect("elector task did not panic")
            .expect("elector ended without error");
    }

    /// Stops the elector's task without letting it step down or release
    /// (a crash, or a pause as far as the lease is concerned). Returns the
    /// validity deadline it had reached.
    async fn abort(&mut self) -> Option<Instant> {
        self.task.abort();
        let _ = (&mut self.task).await;
        // The task is gone, so the handle no longer changes.
        self.handle.valid_until()
    }
}

/// Waits until exactly one of `cands` leads; panics if two ever do.
async fn wait_single_leader(cands: &[&Candidate], what: &str, timeout: Duration) -> usize {
    let d = Deadline::new(what, timeout);
    loop {
        let leading: Vec<usize> = (0..cands.len())
            .filter(|i| cands[*i].handle.is_leader())
            .collect();
        assert!(
            leading.len() <= 1,
            "two candidates lead at once: {:?}",
            leading
                .iter()
                .map(|i| &cands[*i].identity)
                .collect::<Vec<_>>()
        );
        if let [one] = leading[..] {
            return one;
        }
        let views: Vec<(String, Option<String>)> = cands
            .iter()
            .map(|c| (c.identity.clone(), c.handle.leader()))
            .collect();
        d.check(views).await;
    }
}

/// Leadership intervals from the event log: (identity, token, start, end).
/// An interval without StoppedLeading ends at `open_end(identity)`.
fn intervals(
    log: &Log,
    open_end: impl Fn(&str) -> Instant,
) -> Vec<(String, u64, Instant, Instant)> {
    let log = log.lock().unwrap();
    let mut open: Vec<(String, u64, Instant)> = Vec::new();
    let mut done = Vec::new();
    for (id, e) in log.iter() {
        match e {
            LeaderEvent::StartedLeading {
                fencing_token, at, ..
            } => {
                assert!(
                    !open.iter().any(|(o, _, _)| o == id),
                    "{id} started leading twice without stopping"
                );
                open.push((id.clone(), *fencing_token, *at));
            }
            LeaderEvent::StoppedLeading { at, .. } => {
                let i = open
                    .iter()
                    .position(|(o, _, _)| o == id)
                    .unwrap_or_else(|| panic!("{id} stopped leading without having started"));
                let (id, token, start) = open.remove(i);
                done.push((id, token, start, *at));
            }
            LeaderEvent::NewLeader { .. } => {}
        }
    }
    for (id, token, start) in open {
        let end = open_end(&id);
        done.push((id, token, start, end));
    }
    done.sort_by_key(|(_, _, start, _)| *start);
    done
}

fn assert_no_overlap(iv: &[(String, u64, Instant, Instant)]) {
    for w in iv.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            a.3 <= b.2,
            "leadership overlaps: {} (token {}) led until {:?} after {} (token {}) started",
            a.0,
            a.1,
            a.3.duration_since(b.2),
            b.0,
            b.1
        );
        assert!(
            a.1 < b.1,
            "tokens must increase with each new leader: {iv:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_fast_handover_on_cancel_slow_on_crash() {
    let cluster = Cluster::start(3).await;
    let log: Log = Arc::default();
    let mut a = Candidate::start(&cluster, &[1, 2, 3], "lead", "cand-a", &log);
    let mut b = Candidate::start(&cluster, &[3, 2, 1], "lead", "cand-b", &log);

    let first = wait_single_leader(&[&a, &b], "a first leader", Duration::from_secs(10)).await;
    // Watch both for a while: still exactly one leader, and it keeps
    // leading across several renewals.
    let watch_until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < watch_until {
        let now_leading =
            wait_single_leader(&[&a, &b], "a stable leader", Duration::from_secs(3)).await;
        assert_eq!(now_leading, first, "leadership moved without a reason");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, other) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // Cancel the leader: it releases, so the other takes over at its next
    // attempt (every 0.5–0.6 s) instead of after the lease duration.
    let t0 = Instant::now();
    leader.cancel().await;
    assert!(!leader.handle.is_leader());
    let d = Deadline::new(
        "the other candidate to lead after a cancel",
        Duration::from_secs(5),
    );
    while !other.handle.is_leader() {
        d.check(other.handle.leader()).await;
    }
    let fast = t0.elapsed();
    assert!(
        fast < Duration::from_millis(2_000),
        "handover after a cancel took {fast:?}; the release should make it immediate"
    );

    // A third candidate joins; then the leader vanishes without releasing.
    let mut c = Candidate::start(&cluster, &[2, 3, 1], "lead", "cand-c", &log);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !c.handle.is_leader(),
        "the newcomer must not take a held lease"
    );
    let t1 = Instant::now();
    let crashed_valid_until = other
        .abort()
        .await
        .expect("the crashed leader was within its validity deadline");
    let crashed_identity = other.identity.clone();
    let d = Deadline::new(
        "the newcomer to lead after the leader crashed",
        Duration::from_secs(8),
    );
    while !c.handle.is_leader() {
        d.check(c.handle.leader()).await;
    }
    let slow = t1.elapsed();
    let started = c.handle.tenure().expect("leading").since;
    assert!(
        started >= crashed_valid_until,
        "the newcomer led {:?} before the crashed leader's validity deadline",
        crashed_valid_until.duration_since(started)
    );
    assert!(
        slow >= Duration::from_millis(1_000) && slow < Duration::from_millis(6_000),
        "handover after a crash took {slow:?}; expected about the lease duration (3 s)"
    );

    let end_now = Instant::now();
    let iv = intervals(&log, |id| {
        if id == crashed_identity {
            crashed_valid_until
        } else {
            end_now
        }
    });
    assert_eq!(iv.len(), 3, "three leaderships expected: {iv:?}");
    assert_no_overlap(&iv);
    assert_eq!(iv[2].0, "cand-c");

    // The cancelled candidate reported why it stopped.
    let reasons: Vec<StopReason> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            LeaderEvent::StoppedLeading { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![StopReason::Cancelled]);
    c.cancel().await;
    cluster.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_former_leader_is_fenced_and_leaders_step_down_in_time() {
    let mut cluster = Cluster::start(3).await;
    let log: Log = Arc::default();
    let fence = Fence::new();

    let mut a = Candidate::start(&cluster, &[1, 2, 3], "fenced", "worker-a", &log);
    wait_single_leader(&[&a], "worker-a to lead", Duration::from_secs(10)).await;
    let old_token = a.handle.fencing_token().expect("leading");
    fence
        .check(old_token)
        .expect("the leader's write is admitted");

    // worker-b waits; worker-a pauses (stops renewing, keeps its token).
    let b = Candidate::start(&cluster, &[3, 1, 2], "fenced", "worker-b", &log);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!b.handle.is_leader());
    a.abort().await;
    let d = Deadline::new("worker-b to take over", Duration::from_secs(8));
    while !b.handle.is_leader() {
        d.check(b.handle.leader()).await;
    }
    let new_token = b.handle.fencing_token().expect("leading");
    assert!(new_token > old_token, "{new_token} > {old_token}");
    fence
        .check(new_token)
        .expect("the new leader's write is admitted");

    // worker-a wakes up and writes with its old token: refused. Its own
    // handle also knows it no longer leads (the validity deadline passed).
    assert!(!a.handle.is_leader());
    let stale = fence
        .check(old_token)
        .expect_err("a former leader's write must be refused");
    assert_eq!(stale.token, old_token);
    assert_eq!(stale.highest, new_token);

    // The cluster becomes unreachable: the leader steps down at its renew
    // deadline, before its validity deadline.
    let mut last_valid = b.handle.valid_until().expect("leading");
    cluster.kill_all();
    let d = Deadline::new(
        "worker-b to step down with the cluster gone",
        Duration::from_secs(5),
    );
    let stopped_at = loop {
        if let Some(v) = b.handle.valid_until() {
            last_valid = last_valid.max(v);
        }
        let stopped = log.lock().unwrap().iter().find_map(|(id, e)| match e {
            LeaderEvent::StoppedLeading { reason, at } if id == "worker-b" => {
                Some((reason.clone(), *at))
            }
            _ => None,
        });
        if let Some((reason, at)) = stopped {
            assert_eq!(reason, StopReason::RenewDeadline);
            break at;
        }
        d.check("no StoppedLeading yet").await;
    };
    assert!(
        stopped_at < last_valid,
        "worker-b stopped leading {:?} after its validity deadline",
        stopped_at.duration_since(last_valid)
    );
    assert!(!b.handle.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_monitor_follows_heartbeats_and_expiry_across_a_killed_node() {
    let mut cluster = Cluster::start(3).await;
    // The monitor watches node 1 first; the heartbeats talk to the others.
    let monitor = NodeMonitor::new(Arc::new(cluster.client_for(&[1, 2, 3])), "kube-node-lease");
    let view = monitor.subscribe();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let monitor_task = tokio::spawn(monitor.run(async {
        let _ = stop_rx.await;
    }));
    let hb_endpoints: Vec<String> = [2, 3, 1].iter().map(|i| cluster.endpoint(*i)).collect();
    let beat = |node: &str| {
        let mut c = HeartbeatConfig::new(node);
        c.duration = Duration::from_secs(2);
        c.renew_interval = Duration::from_millis(500);
        let hb = Heartbeat::new(Arc::new(client(hb_endpoints.clone())), c).expect("valid");
        let handle = hb.handle();
        (tokio::spawn(hb.run(std::future::pending())), handle)
    };
    let (a, a_handle) = beat("node-a");
    let (b, _) = beat("node-b");

    let wait_for = |alive: &'static [&'static str], gone: &'static [&'static str], what: &str| {
        let view = view.clone();
        let what = what.to_string();
        async move {
            let d = Deadline::new(what, Duration::from_secs(12));
            loop {
                let s = view.borrow().clone();
                if s.synced && s.alive() == alive && s.gone() == gone {
                    return s;
                }
                d.check(&s).await;
            }
        }
    };
    wait_for(&["node-a", "node-b"], &[], "node-a and node-b alive").await;
    // The heartbeat records its success when the reply arrives, which may
    // be after the monitor saw the change.
    let d = Deadline::new(
        "node-a's heartbeat to report its lease",
        Duration::from_secs(5),
    );
    while !a_handle.is_alive() {
        d.check(a_handle.status()).await;
    }
    assert!(a_handle.status().fencing_token.is_some());

    // The monitor's node dies (it resumes on another one); node-c starts;
    // node-b stops renewing and must be reported expired, not deleted.
    cluster.kill(1);
    let (c, _) = beat("node-c");
    b.abort();
    let s = wait_for(
        &["node-a", "node-c"],
        &["node-b"],
        "node-b expired, node-a and node-c alive",
    )
    .await;
    let nb = &s.nodes["node-b"];
    assert!(nb.expired, "{nb:?}");
    assert_eq!(nb.holder, "node-b");
    assert!(nb.renew_time.is_some());

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), monitor_task)
        .await
        .expect("the monitor stops when cancelled")
        .expect("monitor task")
        .expect("monitor ended without error");
    a.abort();
    c.abort();
}
