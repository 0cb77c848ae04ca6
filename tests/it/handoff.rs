//! Stopping a leader on purpose (SIGTERM): it hands leadership to a
//! caught-up follower first, so clients wait for no election timeout;
//! rolling restarts of every node under renew load, with and without the
//! hand-over; and the format version every peer message carries, which a
//! node of another version refuses.
//!
//! Gaps are measured and printed, never asserted tightly: this machine's
//! two cores are shared with other test binaries, so only a loose bound
//! (well above a hand-over, below what a stuck cluster would show) is
//! checked. What is asserted exactly is what must hold on any machine: the
//! hand-over's target leads after one term, no renewal a client saw
//! acknowledged is lost, and every renewal a client sent succeeded (the
//! client retried NOT_LEADER and the stopped node's refused connections).

use crate::common::{
    acquire_req, client, renew_req, rv_holder_token, sample, Cluster, Deadline, Options,
    ELECTION_MAX_MS, ELECTION_MIN_MS, HEARTBEAT_MS,
};
use crate::kube::Http;
use leasehold::client::Client;
use leasehold::proto::internal::raft_client::RaftClient;
use leasehold::proto::internal::RaftPayload;
use leasehold::proto::v1 as pb;
use leasehold::proto::v1::cluster_client::ClusterClient;
use leasehold::raft::node::RaftTiming;
use leasehold::server::{serve_on, ServeConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

/// Clients renewing at once, each its own lease.
const WORKERS: usize = 4;

/// The loose bound on a gap (see the module documentation): a hand-over
/// takes tens of milliseconds; an election after a plain stop about one
/// election timeout (300–600 ms in tests) plus the leader lease.
const GAP_BOUND: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Renew load
// ---------------------------------------------------------------------------

/// One acknowledged renewal.
struct Ack {
    sent: Instant,
    acked: Instant,
    /// The lease's resourceVersion after it.
    rv: u64,
}

/// What one renewing client did.
struct Worker {
    name: String,
    token: u64,
    acks: Vec<Ack>,
    /// Renewals that failed (after the client's own retries).
    errors: Vec<String>,
}

/// Renew load: [`WORKERS`] clients, each renewing its own lease in a
/// closed loop with a short pause, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Worker>>,
}

impl Load {
    async fn start(client: Arc<Client>, ns: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let name = format!("l{i}");
            let a = client
                .acquire(acquire_req(ns, &name, &name, 30))
                .await
                .expect("acquire before the load");
            let (client, stop, ns) = (client.clone(), stop.clone(), ns.to_string());
            workers.push(tokio::spawn(async move {
                let mut w = Worker {
                    name,
                    token: a.fencing_token,
                    acks: Vec::new(),
                    errors: Vec::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match client
                        .renew(renew_req(&ns, &w.name, &w.name, w.token))
                        .await
                    {
                        Ok(r) => {
                            let lease = r.lease.expect("renewal carries the lease");
                            w.acks.push(Ack {
                                sent,
                                acked: Instant::now(),
                                rv: rv_holder_token(&lease).0,
                            });
                        }
                        Err(s) => w.errors.push(format!("{:?}: {}", s.code(), s.message())),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                w
            }));
        }
        Load { stop, workers }
    }

    async fn finish(self) -> Vec<Worker> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for w in self.workers {
            out.push(w.await.expect("renewing client"));
        }
        out
    }
}

/// Gaps around one stop at `at`.
#[derive(Debug)]
struct Gap {
    /// From `at` to the first acknowledgement of a renewal sent after it
    /// (a stopping node still answers what reaches it while it drains).
    first_ack: Duration,
    /// The longest time without any acknowledgement in `[at, until]`: how
    /// long nobody could write.
    longest: Duration,
}

fn gap(workers: &[Worker], at: Instant, until: Instant) -> Gap {
    let first_ack = workers
        .iter()
        .flat_map(|w| &w.acks)
        .filter(|a| a.sent >= at)
        .map(|a| a.acked)
        .min()
        .map_or(Duration::MAX, |t| t.duration_since(at));
    let mut acks: Vec<Instant> = workers
        .iter()
        .flat_map(|w| &w.acks)
        .map(|a| a.acked)
        .filter(|t| *t >= at && *t <= until)
        .collect();
    acks.push(at);
    acks.push(until);
    acks.sort();
    let longest = acks
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    Gap { first_ack, longest }
}

/// Every renewal succeeded, and each lease still shows (at least) the last
/// acknowledged renewal: none was lost with the stopped leader.
async fn assert_nothing_lost(client: &Client, ns: &str, workers: &[Worker]) {
    for w in workers {
        assert!(
            w.errors.is_empty(),
            "{}: renewals failed: {:?}",
            w.name,
            w.errors
        );
        let last = w.acks.last().expect("at least one acknowledged renewal");
        let got = client
            .get(pb::GetRequest {
                namespace: ns.into(),
                name: w.name.clone(),
                stale: false,
            })
            .await
            .expect("linearizable get");
        let (rv, holder, token) = rv_holder_token(got.lease.as_ref().expect("lease"));
        assert_eq!((holder.as_str(), token), (w.name.as_str(), w.token));
        assert!(
            rv >= last.rv,
            "{}: the last acknowledged renewal (resourceVersion {}) is lost: the lease is at {rv}",
            w.name,
            last.rv
        );
    }
}

// ---------------------------------------------------------------------------
// In process: the hand-over and its counter
// ---------------------------------------------------------------------------

/// A node served in this process; `stop` plays SIGTERM (the binary's
/// signal handler resolves the same shutdown future).
struct InProcess {
    id: u64,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

async fn start_in_process(n: u64, dir: &std::path::Path) -> Vec<InProcess> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let peers: BTreeMap<u64, String> = (1..=n)
        .zip(&listeners)
        .map(|(id, l)| (id, l.local_addr().expect("addr").to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener) in (1..=n).zip(listeners) {
        let (tx, rx) = oneshot::channel::<()>();
        let cfg = ServeConfig {
            id,
            listen: peers[&id].clone(),
            data_dir: dir.join(format!("node-{id}")),
            peers: peers.clone(),
            timing: RaftTiming {
                heartbeat_ms: HEARTBEAT_MS,
                election_timeout_min_ms: ELECTION_MIN_MS,
                election_timeout_max_ms: ELECTION_MAX_MS,
                ..Default::default()
            },
            identity: None,
            ..Default::default()
        };
        let handle = tokio::spawn(serve_on(cfg, listener, async {
            let _ = rx.await;
        }));
        nodes.push(InProcess {
            id,
            addr: peers[&id].clone(),
            stop: Some(tx),
            handle,
        });
    }
    nodes
}

async fn status_at(addr: &str) -> Result<pb::StatusResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until every one of `addrs` names the same leader, which says it
/// leads; returns its status.
async fn agreed_leader(addrs: &[&str]) -> pb::StatusResponse {
    let d = Deadline::new(
        format!("{addrs:?} to agree on a leader"),
        Duration::from_secs(20),
    );
    loop {
        let mut seen = Vec::new();
        for a in addrs {
            seen.push(status_at(a).await);
        }
        let leaders: Vec<u64> = seen
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.leader_id))
            .collect();
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            if let Some(Ok(s)) = seen
                .iter()
                .find(|s| s.as_ref().is_ok_and(|s| s.node_id == leaders[0]))
            {
                if s.state == "LEADER" {
                    return s.clone();
                }
            }
        }
        d.check(&leaders).await;
    }
}

/// The leader, stopped as by SIGTERM under renew load, hands over: a
/// follower leads one term later, `leader_transfers_total{result="ok"}`
/// counts it, no acknowledged renewal is lost and the clients saw no
/// error. In process, because the counter belongs to the node that stops:
/// the nodes of one process share one registry, so a surviving node's
/// `/metrics` shows what the stopped one counted (no other test of this
/// binary runs a multi-node cluster in process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_to_a_caught_up_follower() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_in_process(3, dir.path()).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let before = agreed_leader(&all).await;
    let client = Arc::new(client(addrs.clone()));
    let load = Load::start(client.clone(), "handoff-a").await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let leader = nodes
        .iter_mut()
        .find(|n| n.id == before.leader_id)
        .expect("the leader is one of the nodes");
    let at = Instant::now();
    let _ = leader.stop.take().expect("running").send(());
    let stopped = tokio::time::timeout(Duration::from_secs(15), &mut leader.handle)
        .await
        .expect("the leader stops within 15 s")
        .expect("serve task");
    stopped.expect("a requested stop is a clean exit");
    let exited = at.elapsed();
    let rest: Vec<&str> = nodes
        .iter()
        .filter(|n| n.id != before.leader_id)
        .map(|n| n.addr.as_str())
        .collect();
    let after = agreed_leader(&rest).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let workers = load.finish().await;
    let g = gap(&workers, at, Instant::now());
    eprintln!(
        "hand-over: node {} -> node {} (term {} -> {}); exited after {exited:?}; first \
         acknowledged renewal sent after the stop {:?} later, longest gap {:?}; {} renewals",
        before.leader_id,
        after.node_id,
        before.term,
        after.term,
        g.first_ack,
        g.longest,
        workers.iter().map(|w| w.acks.len()).sum::<usize>()
    );
    assert_ne!(after.node_id, before.leader_id);
    assert_eq!(
        after.term,
        before.term + 1,
        "one election, the one the hand-over asked for"
    );
    assert_nothing_lost(&client, "handoff-a", &workers).await;
    assert!(g.longest < GAP_BOUND, "gap {g:?} (bound {GAP_BOUND:?})");

    let mut http = Http::open(rest[0]).await;
    let r = http.request("GET", "/metrics", None).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let count = |result: &str| {
        sample(
            &text,
            &format!("leasehold_leader_transfers_total{{result=\"{result}\"}}"),
        )
        .unwrap_or_else(|| panic!("no transfers series for {result} in:\n{text}"))
    };
    assert_eq!(count("ok"), 1.0, "{text}");
    for other in ["no_target", "not_caught_up", "refused", "timeout"] {
        assert_eq!(count(other), 0.0, "{other}");
    }

    for n in &mut nodes {
        if let Some(stop) = n.stop.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(15), &mut n.handle).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Processes: SIGTERM, rolling restarts
// ---------------------------------------------------------------------------

/// Waits until node `id` answers `/readyz` with 200.
async fn wait_ready(cluster: &Cluster, id: u64) {
    let d = Deadline::new(format!("node {id} to be ready"), Duration::from_secs(20));
    loop {
        let mut http = Http::open(&cluster.endpoint(id)).await;
        let r = http.request("GET", "/readyz", None).await;
        if r.status == 200 {
            return;
        }
        d.check(String::from_utf8_lossy(&r.body)).await;
    }
}

/// One restart of a rolling restart.
#[derive(Debug)]
struct Restart {
    id: u64,
    was_leader: bool,
    /// SIGTERM to exit.
    exit: Duration,
    /// SIGTERM to ready again.
    ready: Duration,
    /// The term before the SIGTERM, and the leader and term once the
    /// others agreed on one (before the restart).
    term_before: u64,
    leader_after: u64,
    term_after: u64,
    at: Instant,
    until: Instant,
}

/// Restarts every node of `cluster` (followers first, the leader last)
/// under renew load: SIGTERM, wait for the exit, start again, wait until
/// ready. Returns what each restart took and the load's record.
async fn rolling_restart(cluster: &mut Cluster, ns: &str) -> (Vec<Restart>, Vec<Worker>) {
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut order: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    order.push(leader);
    let client = Arc::new(cluster.client());
    let load = Load::start(client.clone(), ns).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut restarts = Vec::new();
    for id in order {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        let term_before = cluster.status(leader).await.expect("leader status").term;
        let at = Instant::now();
        let status = cluster.terminate(id, Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM"
        );
        let exit = at.elapsed();
        let leader_after = cluster.wait_for_leader(Duration::from_secs(20)).await;
        let term_after = cluster
            .status(leader_after)
            .await
            .expect("leader status")
            .term;
        cluster.restart(id).await;
        wait_ready(cluster, id).await;
        restarts.push(Restart {
            id,
            was_leader: leader == id,
            exit,
            ready: at.elapsed(),
            term_before,
            leader_after,
            term_after,
            at,
            until: Instant::now(),
        });
        // Let the load run on the whole cluster for a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let workers = load.finish().await;
    assert_nothing_lost(&client, ns, &workers).await;
    (restarts, workers)
}

fn report(what: &str, restarts: &[Restart], workers: &[Worker]) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for r in restarts {
        let g = gap(workers, r.at, r.until);
        eprintln!(
            "{what}: node {} ({}) exited after {:?}, ready again after {:?}; leader then \
             node {} (term {} -> {}); first acknowledged renewal sent after SIGTERM {:?} \
             later, longest gap {:?}",
            r.id,
            if r.was_leader { "leader" } else { "follower" },
            r.exit,
            r.ready,
            r.leader_after,
            r.term_before,
            r.term_after,
            g.first_ack,
            g.longest
        );
        gaps.push(g);
    }
    eprintln!(
        "{what}: {} renewals acknowledged, none lost",
        workers.iter().map(|w| w.acks.len()).sum::<usize>()
    );
    gaps
}

/// A rolling restart of all three nodes under renew load, with the
/// hand-over (the default): the leader's log names the follower it handed
/// over to, that follower campaigned on request and leads; no renewal
/// failed or was lost.
#[tokio::test]
async fn rolling_restart_with_hand_over() {
    let mut cluster = Cluster::start(3).await;
    let (restarts, workers) = rolling_restart(&mut cluster, "handoff-roll").await;
    let gaps = report("with hand-over", &restarts, &workers);
    let last = restarts.last().expect("three restarts");
    assert!(last.was_leader, "the leader is restarted last");
    let log = cluster.log_tail(last.id, 400);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("handed leadership over before stopping"))
        .unwrap_or_else(|| panic!("node {} did not hand over:\n{log}", last.id));
    let target: u64 = line
        .split("target=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no target in {line:?}"));
    assert!(
        cluster
            .log_tail(target, 400)
            .contains("campaigning at once: the leader is handing over to this node"),
        "node {target} should have campaigned on request"
    );
    // The target won the one election the hand-over asked for.
    assert_eq!(last.leader_after, target, "{last:?}");
    assert_eq!(last.term_after, last.term_before + 1, "{last:?}");
    for g in &gaps {
        assert!(g.longest < GAP_BOUND, "gap {g:?} (bound {GAP_BOUND:?})");
    }
    cluster.assert_no_crashes();
}

/// The same with `--transfer-on-shutdown false`: the stopped leader says
/// so, nobody campaigns on request, and the others elect a leader after an
/// election timeout; still no renewal failed or was lost.
#[tokio::test]
async fn rolling_restart_without_hand_over() {
    let mut cluster = Cluster::start_with(
        3,
        Options {
            extra_args: vec!["--transfer-on-shutdown".into(), "false".into()],
            ..Default::default()
        },
    )
    .await;
    let (restarts, workers) = rolling_restart(&mut cluster, "handoff-plain").await;
    let gaps = report("without hand-over", &restarts, &workers);
    let last = restarts.last().expect("three restarts");
    assert!(last.was_leader);
    assert!(
        cluster
            .log_tail(last.id, 400)
            .contains("stopping without handing leadership over"),
        "{}",
        cluster.log_tail(last.id, 50)
    );
    for id in cluster.ids() {
        assert!(
            !cluster.log_tail(id, 400).contains("campaigning at once"),
            "node {id} campaigned on request with the hand-over off"
        );
    }
    assert_ne!(last.leader_after, last.id, "{last:?}");
    assert!(last.term_after > last.term_before, "an election: {last:?}");
    for g in &gaps {
        assert!(
            g.longest < 2 * GAP_BOUND,
            "gap {g:?} (bound {:?})",
            2 * GAP_BOUND
        );
    }
    cluster.assert_no_crashes();
}

/// A hand-over that cannot finish (both followers paused with SIGSTOP, so
/// the target never answers `TimeoutNow`) gives up at its deadline. All
/// along the node answers `/readyz` 503 "shutting down" and gRPC health
/// NOT_SERVING. The leader logs why it gave up and stops cleanly anyway, and once the followers resume
/// they elect a leader among themselves, as after a stop without the
/// hand-over. (The followers are resumed before the leader can exit: a
/// graceful stop waits for its open connections to close, and a paused
/// peer never closes its own.)
#[tokio::test]
async fn a_failed_hand_over_falls_back_to_an_ordinary_stop() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let term = cluster.status(leader).await.expect("leader status").term;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        cluster.signal(*f, "STOP");
    }
    // Connected before the SIGTERM: the node stops accepting connections
    // only once the hand-over is over.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoint(leader)))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    let mut http = Http::open(&cluster.endpoint(leader)).await;
    let at = Instant::now();
    cluster.signal(leader, "TERM");
    // While it tries, it is not ready and gRPC health says NOT_SERVING.
    let d = Deadline::new(
        "the stopping leader to say it is not ready",
        Duration::from_secs(3),
    );
    loop {
        let r = http.request("GET", "/readyz", None).await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if r.status == 503 && body.contains("shutting down") {
            break;
        }
        d.check((r.status, body)).await;
    }
    let mut health = HealthClient::new(channel);
    for service in ["", "leasehold.v1.Leases"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check while handing over")
            .into_inner();
        assert_eq!(r.status, ServingStatus::NotServing as i32, "{service:?}");
    }
    let d = Deadline::new(
        "the leader to give the hand-over up",
        Duration::from_secs(15),
    );
    let gave_up = loop {
        let log = cluster.log_tail(leader, 200);
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("could not hand leadership over"))
        {
            break line.to_string();
        }
        d.check("not yet").await;
    };
    let took = at.elapsed();
    for f in &followers {
        cluster.signal(*f, "CONT");
    }
    let status = cluster.wait_exit(leader, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "a failed hand-over is still a clean stop: {status}"
    );
    assert!(
        gave_up.contains("result=\"timeout\"") && gave_up.contains("stopping anyway"),
        "{gave_up}"
    );
    assert!(!cluster
        .log_tail(leader, 200)
        .contains("handed leadership over before stopping"));
    eprintln!("failed hand-over: given up {took:?} after SIGTERM: {gave_up}");
    let new = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert!(followers.contains(&new));
    let now = cluster.status(new).await.expect("leader status").term;
    assert!(now > term, "an election: term {term} -> {now}");
    cluster.assert_no_crashes();
}

/// The figures of docs/BENCHMARKS.md, "Rolling restarts": rounds of rolling
/// restarts with and without the hand-over (`LEASEHOLD_ROLLING_ROUNDS`,
/// default 3), each on a new cluster, summarised per role. Ignored by
/// default: it is a measurement (about 10 s a round), run with
/// `cargo test -p leasehold --test it handoff::rolling_restart_figures --
/// --ignored --nocapture`. The assertions are the other tests' (nothing
/// lost, every renewal answered).
#[tokio::test]
#[ignore]
async fn rolling_restart_figures() {
    let rounds: usize = std::env::var("LEASEHOLD_ROLLING_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut table = Vec::new();
    for (what, args) in [
        ("hand-over", vec![]),
        (
            "no hand-over",
            vec!["--transfer-on-shutdown".to_string(), "false".to_string()],
        ),
    ] {
        let (mut leader, mut follower, mut renewals) = (Vec::new(), Vec::new(), 0);
        for round in 0..rounds {
            let mut cluster = Cluster::start_with(
                3,
                Options {
                    extra_args: args.clone(),
                    ..Default::default()
                },
            )
            .await;
            let ns = format!("figures-{round}");
            let (restarts, workers) = rolling_restart(&mut cluster, &ns).await;
            let gaps = report(what, &restarts, &workers);
            renewals += workers.iter().map(|w| w.acks.len()).sum::<usize>();
            for (r, g) in restarts.iter().zip(gaps) {
                let row = (ms(g.longest), ms(r.exit), r.term_after - r.term_before);
                if r.was_leader {
                    leader.push(row);
                } else {
                    follower.push(row);
                }
            }
            cluster.assert_no_crashes();
        }
        table.push((what, leader, follower, renewals));
    }
    let summary = |rows: &[(f64, f64, u64)]| {
        let mut gaps: Vec<f64> = rows.iter().map(|r| r.0).collect();
        gaps.sort_by(f64::total_cmp);
        let exits: f64 = rows.iter().map(|r| r.1).sum::<f64>() / rows.len().max(1) as f64;
        let elections: u64 = rows.iter().map(|r| r.2).sum();
        format!(
            "longest gap min {:.0} / median {:.0} / max {:.0} ms; exit {:.0} ms on average; \
             {elections} term changes in {} restarts",
            gaps.first().copied().unwrap_or(0.0),
            gaps.get(gaps.len() / 2).copied().unwrap_or(0.0),
            gaps.last().copied().unwrap_or(0.0),
            exits,
            rows.len()
        )
    };
    eprintln!("\nrolling restarts, {rounds} rounds of 3 nodes, {WORKERS} renewing clients:");
    for (what, leader, follower, renewals) in &table {
        eprintln!("{what:>13}  leader:   {}", summary(leader));
        eprintln!("{what:>13}  follower: {}", summary(follower));
        eprintln!("{what:>13}  {renewals} renewals acknowledged, none lost, none failed");
    }
}

// ---------------------------------------------------------------------------
// Format version on the wire
// ---------------------------------------------------------------------------

/// A Vote to node `id` stamped with `version`, addressed correctly
/// otherwise (its id, incarnation and cluster), carrying nothing openraft
/// could decode: admission is all it can pass.
async fn vote_with_version(
    cluster: &Cluster,
    id: u64,
    version: u32,
) -> Result<RaftPayload, tonic::Status> {
    let s = cluster.status(id).await.expect("status");
    let incarnation = s
        .members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.incarnation.clone())
        .expect("member listed");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoint(id)))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    RaftClient::new(channel)
        .vote(RaftPayload {
            data: Vec::new(),
            cluster_id: s.cluster_id,
            to_id: id,
            to_incarnation: incarnation,
            format_version: version,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A node refuses peer messages of another format version, naming both,
/// and accepts its own and (format 6 only) the unstamped 0 of older
/// builds. A follower restarted as a build of another format version (the
/// debug-only `--fault-format-version`) takes no part: it refuses the
/// leader's appends and the others refuse its votes, both logged with the
/// two versions; the cluster goes on with two of three, and the node
/// catches up once rolled back.
#[tokio::test]
async fn peers_of_another_format_version_are_refused() {
    let ours = leasehold::store::FORMAT_VERSION;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");

    let other = ours + 1;
    let refused = vote_with_version(&cluster, follower, other)
        .await
        .expect_err("another format version is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let msg = refused.message();
    assert!(
        msg.contains(&format!("format version {other}"))
            && msg.contains(&format!("runs format version {ours}")),
        "the refusal names both versions: {msg}"
    );
    // Our own version and the unstamped 0 pass admission and reach the
    // decoder (which cannot decode an empty message).
    let mut passing = vec![ours];
    if ours == 6 {
        passing.push(0);
    }
    for v in passing {
        let s = vote_with_version(&cluster, follower, v)
            .await
            .expect_err("empty data does not decode");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "version {v}: {s:?}");
        assert!(s.message().contains("undecodable"), "version {v}: {s:?}");
    }

    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: --fault-format-version exists in debug builds only");
        return;
    }
    // "Upgrade" the follower to a build of another format version.
    let status = cluster.terminate(follower, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let other_s = other.to_string();
    cluster
        .restart_with(follower, &["--fault-format-version", &other_s])
        .await;
    let client = cluster.client();
    let a = client
        .acquire(acquire_req("format", "after-upgrade", "h", 30))
        .await
        .expect("two of three still take writes");
    let target = cluster
        .status(leader)
        .await
        .expect("leader status")
        .applied_index;
    let d = Deadline::new(
        "both sides to log the refusal, naming both versions",
        Duration::from_secs(20),
    );
    // The follower refuses the leader's appends (both logs say so); the
    // leader refuses the follower's votes.
    let refused_append = format!(
        "raft message of format version {ours}, but node {follower} runs format version {other}"
    );
    let refused_vote = format!(
        "raft message of format version {other}, but node {leader} runs format version {ours}"
    );
    loop {
        // Whole logs: the refusals are logged once per 10 s, and a loaded
        // machine's other lines (unreachable-peer retries) can push them
        // out of a short tail.
        let (f, l) = (
            cluster.log_tail(follower, usize::MAX),
            cluster.log_tail(leader, usize::MAX),
        );
        let seen_f = f.contains(&refused_append);
        let seen_l = l
            .lines()
            .any(|x| x.contains("peer refused a raft message") && x.contains(&refused_append))
            && l.contains(&refused_vote);
        if seen_f && seen_l {
            break;
        }
        d.check((seen_f, seen_l)).await;
    }
    // Refusing the leader's appends, it never applies the new write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = cluster.status(follower).await.expect("follower status");
    assert!(
        s.applied_index < target,
        "node {follower} of another format version applied {} ≥ {target}",
        s.applied_index
    );

    // Rolled back, it catches up.
    let status = cluster.terminate(follower, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    cluster.restart(follower).await;
    cluster
        .wait_applied(follower, target, Duration::from_secs(20))
        .await;
    let got = client
        .get(pb::GetRequest {
            namespace: "format".into(),
            name: "after-upgrade".into(),
            stale: false,
        })
        .await
        .expect("get");
    assert_eq!(
        rv_holder_token(got.lease.as_ref().expect("lease")).2,
        a.fencing_token
    );
    cluster.assert_no_crashes();
}
