//! The fault scheduler ("nemesis"): injects the planned faults one after
//! another while the workload runs, heals each, waits for the cluster to
//! recover, and records what happened.
//!
//! Faults are chosen round-robin from the plan, with random gaps and hold
//! times from the run's seed. Each fault ends healed (processes restarted
//! and thawed, network faults removed, clocks restored) and the scheduler
//! then waits until every node serves, agrees on one leader and has applied
//! what that leader had committed; a cluster that does not recover within
//! [`RECOVERY_TIMEOUT`] is recorded as a failure of the fault.

use super::backend::{Backend, NodeId};
use super::faults::{FaultKind, FaultRecord, FaultResult};
use super::history::{Nanos, RunClock};
use super::workload::{PauseControl, Rng};
use leasehold_client::{Client, ConnectOptions};
use leasehold_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the cluster may take to recover after a fault is healed.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(45);

/// How long a SIGTERMed node may take to exit (a hand-over takes at most
/// 3 s, then the listeners drain).
pub const GRACEFUL_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the scheduler needs.
pub struct Nemesis {
    /// The nodes.
    pub backend: Arc<dyn Backend>,
    /// The run clock.
    pub clock: RunClock,
    /// Client pauses.
    pub pauses: Arc<PauseControl>,
    /// Lease duration of the workload, seconds.
    pub lease_seconds: u64,
    /// Namespace for the durability probes.
    pub namespace: String,
    /// Random choices.
    pub rng: Rng,
    /// Kill-all faults done so far (names the durability probe leases).
    kills_all: u32,
    /// Clock offsets done so far (alternates the sign).
    offsets: u32,
    /// Power losses of a node's disk so far (every other one tears the
    /// last unsynced write of each file instead of dropping it whole).
    power_cuts: u64,
    /// Graceful restarts so far (they alternate between the leader and a
    /// follower).
    graceful: u32,
    /// Member cycles so far (they alternate between the leader, which
    /// removes itself, and a follower).
    member_cycles: u32,
    /// Durability probes: acknowledged before a kill of every node,
    /// read back after.
    pub durability: Vec<DurabilityProbe>,
    /// How its own clients (status, probes, membership) reach the nodes.
    connect: ConnectOptions,
}

/// A lease acquired before every node was killed (or lost power), and what
/// a read after the restart returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DurabilityProbe {
    /// The fault between the acquire and the read (`kill-all`,
    /// `power-loss-all`).
    pub fault: FaultKind,
    /// The probe lease.
    pub lease: String,
    /// Its holder and token as acknowledged before the kill.
    pub holder: String,
    /// Token acknowledged.
    pub token: u64,
    /// When the acquire was acknowledged (run clock).
    pub acknowledged_at: Nanos,
    /// What was read after the restart: `holder/token`, or the error.
    pub read_back: String,
    /// Whether the read matched.
    pub intact: bool,
}

/// A node's status, or why there is none.
type Statuses = BTreeMap<NodeId, Result<pb::StatusResponse, String>>;

impl Nemesis {
    /// A scheduler for `backend`.
    pub fn new(
        backend: Arc<dyn Backend>,
        clock: RunClock,
        pauses: Arc<PauseControl>,
        lease_seconds: u64,
        namespace: String,
        seed: u64,
        connect: ConnectOptions,
    ) -> Self {
        Nemesis {
            backend,
            clock,
            pauses,
            lease_seconds,
            namespace,
            rng: Rng::new(seed ^ 0xFA17),
            kills_all: 0,
            offsets: 0,
            power_cuts: 0,
            graceful: 0,
            member_cycles: 0,
            durability: Vec::new(),
            connect,
        }
    }

    fn client(&self, id: NodeId) -> Result<Client, String> {
        Client::with_options(vec![self.backend.client_endpoint(id)], self.connect.clone())
            .map(|c| c.with_timeout(Duration::from_millis(800)))
            .map_err(|e| e.message().to_string())
    }

    fn cluster_client(&self) -> Result<Client, String> {
        let eps = self
            .backend
            .node_ids()
            .into_iter()
            .map(|id| self.backend.client_endpoint(id))
            .collect();
        Client::with_options(eps, self.connect.clone())
            .map(|c| c.with_timeout(Duration::from_secs(5)))
            .map_err(|e| e.message().to_string())
    }

    /// Every node's Status.
    pub async fn statuses(&self) -> Statuses {
        let mut out = BTreeMap::new();
        for id in self.backend.node_ids() {
            let r = match self.client(id) {
                Ok(c) => c.status().await.map_err(|e| e.message().to_string()),
                Err(e) => Err(e),
            };
            out.insert(id, r);
        }
        out
    }

    /// The leader of the highest term any node reports leading, if any.
    pub async fn leader(&self) -> Option<(NodeId, u64)> {
        leader_of(&self.statuses().await)
    }

    /// Waits for a leader.
    async fn wait_leader(&self, timeout: Duration) -> Result<(NodeId, u64), String> {
        self.wait_leader_other_than(None, timeout).await
    }

    /// Waits for a leader other than `not` (a node that was just removed
    /// or stopped), polling every 20 ms so that the time it took is a
    /// figure worth reporting.
    async fn wait_leader_other_than(
        &self,
        not: Option<NodeId>,
        timeout: Duration,
    ) -> Result<(NodeId, u64), String> {
        let until = Instant::now() + timeout;
        loop {
            match self.leader().await {
                Some((l, term)) if Some(l) != not => return Ok((l, term)),
                _ if Instant::now() >= until => {
                    return Err(match not {
                        Some(id) => {
                            format!("no leader other than {id} within {} s", timeout.as_secs())
                        }
                        None => format!("no leader within {} s", timeout.as_secs()),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until every node serves, all agree on one leader, and every
    /// node has applied what the leader had committed when the wait began.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        let mut target: Option<u64> = None;
        loop {
            let st = self.statuses().await;
            let verdict = healthy(&st, &mut target);
            match verdict {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() >= until => {
                    return Err(format!(
                        "cluster not healthy after {} s: {why}",
                        timeout.as_secs()
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Injects faults from `plan` round-robin until `until` (run clock) and
    /// until every supported kind has happened at least once (but not past
    /// three times the planned span), then heals everything. Returns the
    /// records.
    pub async fn run(&mut self, plan: &[FaultKind], until: Nanos) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        let mut i = 0usize;
        let supported: Vec<FaultKind> = plan
            .iter()
            .copied()
            .filter(|k| self.backend.supports(*k).is_ok())
            .collect();
        for k in plan {
            if let Err(why) = self.backend.supports(*k) {
                let now = self.clock.now();
                records.push(FaultRecord {
                    kind: *k,
                    target: "-".into(),
                    start: now,
                    end: now,
                    result: FaultResult::Unsupported(why),
                    detail: String::new(),
                });
            }
        }
        if supported.is_empty() {
            return records;
        }
        // Every supported kind must happen at least once, however short the
        // run: the hard stop allows three times the run's span plus 20 s per
        // kind (the slowest faults, member-cycle and clock-offset, take
        // 10-20 s each with recovery).
        let begin = self.clock.now();
        let per_kind = 20_000_000_000u64.saturating_mul(supported.len() as u64);
        let hard_stop = begin
            .saturating_add(until.saturating_sub(begin).saturating_mul(3))
            .saturating_add(per_kind);
        loop {
            let gap = self.rng.millis(1000, 2500);
            tokio::time::sleep(gap).await;
            let now = self.clock.now();
            let all_done = i >= supported.len();
            if (now >= until && all_done) || now >= hard_stop {
                break;
            }
            let kind = supported[i % supported.len()];
            i += 1;
            let start = self.clock.now();
            tracing::info!(fault = %kind, "injecting");
            let (target, result, detail) = match self.inject(kind).await {
                Ok((target, detail)) => (target, FaultResult::Ok, detail),
                Err((target, why)) => (target, FaultResult::Failed(why), String::new()),
            };
            // Whatever happened, put everything back.
            let healed = self.heal_all().await;
            let recovered = self.wait_healthy(RECOVERY_TIMEOUT).await;
            let result = match (result, healed, recovered) {
                (FaultResult::Ok, Err(e), _) => FaultResult::Failed(format!("heal failed: {e}")),
                (FaultResult::Ok, _, Err(e)) => FaultResult::Failed(e),
                (r, _, _) => r,
            };
            tracing::info!(fault = %kind, ?result, "healed");
            records.push(FaultRecord {
                kind,
                target,
                start,
                end: self.clock.now(),
                result,
                detail,
            });
        }
        records
    }

    /// Thaws, restarts, reconnects and restores every node.
    pub async fn heal_all(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for id in self.backend.node_ids() {
            if self.backend.running(id).await {
                // Resuming a running process is harmless.
                let _ = self.backend.resume(id).await;
            } else if let Err(e) = self.backend.start(id).await {
                errors.push(format!("start node {id}: {e}"));
            }
        }
        if let Err(e) = self.backend.heal_network().await {
            errors.push(format!("heal network: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn hold(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        self.rng.millis(lo_ms, hi_ms)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    /// Injects one fault and heals what only it can heal. `Ok((target,
    /// detail))` when it happened as planned.
    async fn inject(&mut self, kind: FaultKind) -> Result<(String, String), (String, String)> {
        let b = self.backend.clone();
        let (leader, term) = self
            .wait_leader(Duration::from_secs(10))
            .await
            .map_err(|e| ("-".to_string(), e))?;
        let others: Vec<NodeId> = b.node_ids().into_iter().filter(|n| *n != leader).collect();
        let pick = |rng: &mut Rng, v: &[NodeId]| v[rng.below(v.len() as u64) as usize];
        let node = |id: NodeId| format!("node {id}");
        let fail = |t: String| move |e: String| (t.clone(), e);
        match kind {
            FaultKind::KillLeader
            | FaultKind::KillFollower
            | FaultKind::PowerLossLeader
            | FaultKind::PowerLossFollower => {
                let id = if matches!(kind, FaultKind::KillLeader | FaultKind::PowerLossLeader) {
                    leader
                } else {
                    pick(&mut self.rng, &others)
                };
                let t = node(id);
                b.kill(id).await.map_err(fail(t.clone()))?;
                let lost = if kind.is_power_loss() {
                    let d = self.cut_power(id).await.map_err(fail(t.clone()))?;
                    format!("; {d}")
                } else {
                    String::new()
                };
                let hold = self.hold(1500, 4000);
                tokio::time::sleep(hold).await;
                let after = self.leader().await;
                b.start(id).await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "leader was {leader} (term {term}){lost}; down {} ms; leader meanwhile {}",
                        hold.as_millis(),
                        fmt_leader(after)
                    ),
                ))
            }
            FaultKind::KillTwo => {
                let mut ids = b.node_ids();
                let spare = pick(&mut self.rng, &ids.clone());
                ids.retain(|n| *n != spare);
                let t = format!("nodes {:?}", ids);
                for id in &ids {
                    b.kill(*id).await.map_err(fail(t.clone()))?;
                }
                let hold = self.hold(1500, 3500);
                tokio::time::sleep(hold).await;
                for id in &ids {
                    b.start(*id).await.map_err(fail(t.clone()))?;
                }
                Ok((
                    t,
                    format!(
                        "leader was {leader}; quorum lost for {} ms",
                        hold.as_millis()
                    ),
                ))
            }
            FaultKind::KillAll | FaultKind::PowerLossAll => {
                let t = "all nodes".to_string();
                let probe = self
                    .durability_acquire(kind)
                    .await
                    .map_err(fail(t.clone()))?;
                // As one power cut: every process dies before any disk
                // forgets, so no node sees another's loss while running.
                for id in b.node_ids() {
                    b.kill(id).await.map_err(fail(t.clone()))?;
                }
                let mut lost = Vec::new();
                if kind.is_power_loss() {
                    for id in b.node_ids() {
                        let d = self.cut_power(id).await.map_err(fail(t.clone()))?;
                        lost.push(format!("node {id}: {d}; "));
                    }
                }
                let hold = self.hold(1000, 2500);
                tokio::time::sleep(hold).await;
                for id in b.node_ids() {
                    b.start(id).await.map_err(fail(t.clone()))?;
                }
                self.wait_healthy(RECOVERY_TIMEOUT)
                    .await
                    .map_err(fail(t.clone()))?;
                let probe = self.durability_check(probe).await;
                let detail = format!(
                    "{}down {} ms; probe {} token {}: {}",
                    lost.concat(),
                    hold.as_millis(),
                    probe.lease,
                    probe.token,
                    probe.read_back
                );
                self.durability.push(probe);
                Ok((t, detail))
            }
            FaultKind::PauseLeader => {
                let t = node(leader);
                b.pause(leader).await.map_err(fail(t.clone()))?;
                let hold = self.lease() + self.hold(1000, 2000);
                tokio::time::sleep(hold).await;
                let during = self.leader().await;
                b.resume(leader).await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "paused {} ms (lease {} s); leader meanwhile {}",
                        hold.as_millis(),
                        self.lease_seconds,
                        fmt_leader(during)
                    ),
                ))
            }
            FaultKind::PauseClient => self.pause_client().await,
            FaultKind::IsolateLeader | FaultKind::IsolateFollower | FaultKind::CutLink => {
                let (t, links): (String, Vec<(NodeId, NodeId)>) = match kind {
                    FaultKind::CutLink => {
                        let other = pick(&mut self.rng, &others);
                        (format!("link {leader}-{other}"), vec![(leader, other)])
                    }
                    _ => {
                        let id = if kind == FaultKind::IsolateLeader {
                            leader
                        } else {
                            pick(&mut self.rng, &others)
                        };
                        let links = b
                            .node_ids()
                            .into_iter()
                            .filter(|n| *n != id)
                            .map(|n| (id, n))
                            .collect();
                        (node(id), links)
                    }
                };
                for (x, y) in links {
                    b.cut(x, y).await.map_err(fail(t.clone()))?;
                }
                let hold = self.hold(3000, 5000);
                tokio::time::sleep(hold).await;
                let during = self.leader().await;
                b.heal_network().await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "leader was {leader} (term {term}); cut off {} ms; leader meanwhile {}",
                        hold.as_millis(),
                        fmt_leader(during)
                    ),
                ))
            }
            FaultKind::PeerLoss => {
                let t = node(leader);
                b.loss(leader, 0.3).await.map_err(fail(t.clone()))?;
                let hold = self.hold(4000, 6000);
                tokio::time::sleep(hold).await;
                b.heal_network().await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "30% loss on the leader's peer links for {} ms",
                        hold.as_millis()
                    ),
                ))
            }
            FaultKind::PeerDelay => {
                let t = node(leader);
                b.delay(leader, Duration::from_millis(100))
                    .await
                    .map_err(fail(t.clone()))?;
                let hold = self.hold(4000, 6000);
                tokio::time::sleep(hold).await;
                b.heal_network().await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "100 ms delay on the leader's peer links for {} ms",
                        hold.as_millis()
                    ),
                ))
            }
            FaultKind::ClockOffset => self.clock_offset(&others).await,
            FaultKind::WipeNode => {
                let id = pick(&mut self.rng, &others);
                let t = node(id);
                self.wipe_and_rejoin(id).await.map_err(fail(t.clone()))?;
                Ok((t, "wiped, started empty, replaced".into()))
            }
            FaultKind::GracefulRestart => {
                self.graceful += 1;
                let id = self.leader_or_follower(self.graceful, leader, &others);
                let t = node(id);
                let took = b
                    .stop(id, GRACEFUL_STOP_TIMEOUT)
                    .await
                    .map_err(fail(t.clone()))?;
                // Right after the exit: a stopped leader hands over first,
                // so a successor is usually in place already.
                let after = self.leader().await;
                let hold = self.hold(500, 2000);
                tokio::time::sleep(hold).await;
                b.start(id).await.map_err(fail(t.clone()))?;
                Ok((
                    t,
                    format!(
                        "leader was {leader} (term {term}); SIGTERM, clean exit in {} ms; \
                         leader right after the exit {}; down {} ms",
                        took.as_millis(),
                        fmt_leader(after),
                        hold.as_millis()
                    ),
                ))
            }
            FaultKind::MemberCycle => {
                self.member_cycles += 1;
                let id = self.leader_or_follower(self.member_cycles, leader, &others);
                let t = node(id);
                let detail = self
                    .member_cycle(id, id == leader)
                    .await
                    .map_err(fail(t.clone()))?;
                Ok((t, detail))
            }
        }
    }

    /// The target of the `nth` fault of a kind that alternates: the leader
    /// on odd ones (the first included), a random follower on even ones.
    fn leader_or_follower(&mut self, nth: u32, leader: NodeId, others: &[NodeId]) -> NodeId {
        if nth % 2 == 1 {
            leader
        } else {
            let i = self.rng.below(others.len().max(1) as u64) as usize;
            others.get(i).copied().unwrap_or(leader)
        }
    }

    /// Takes node `id` out of the cluster and puts it back as a new
    /// member, as an operator moves a node to a new machine: `member
    /// remove`, the process stopped and its data deleted, the node started
    /// empty with `--initial-cluster-state existing`, `member add` at the
    /// address the membership had recorded. Each step is checked on the
    /// leader's Status: two voters without `id`, then three with `id` and
    /// a new incarnation. While `id` is out the cluster runs on two voters,
    /// both needed for a quorum. When `id` leads (`was_leader`), it hands
    /// leadership over and its successor removes it: one of the others must
    /// lead before `id` is stopped.
    async fn member_cycle(&mut self, id: NodeId, was_leader: bool) -> Result<String, String> {
        let b = self.backend.clone();
        let c = self.cluster_client()?;
        let before = c
            .status()
            .await
            .map_err(|e| format!("status: {}", e.message()))?;
        let old = before
            .members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| format!("node {id} is not a member: {:?}", before.members))?;
        let address = if old.address.is_empty() {
            b.peer_address(id)
        } else {
            old.address.clone()
        };
        retry(Duration::from_secs(30), || async {
            // An earlier attempt whose answer was lost may have done it.
            if !self.leader_members().await?.iter().any(|m| m.id == id) {
                return Ok(());
            }
            c.remove_member(pb::RemoveMemberRequest { id })
                .await
                .map(|_| ())
                .map_err(|e| format!("member remove {id}: {}", e.message()))
        })
        .await?;
        let removed_at = Instant::now();
        let successor = if was_leader {
            Some(
                self.wait_leader_other_than(Some(id), Duration::from_secs(15))
                    .await?,
            )
        } else {
            None
        };
        let successor_after = removed_at.elapsed();
        let two = self.leader_members().await?;
        if two.len() + 1 != before.members.len() || two.iter().any(|m| m.id == id) {
            return Err(format!(
                "after member remove {id} the leader lists {two:?}, not the others"
            ));
        }
        b.kill(id).await?;
        b.wipe(id).await?;
        b.start_empty(id).await?;
        let removed_for = Instant::now();
        retry(Duration::from_secs(30), || async {
            // Done by an earlier attempt whose answer was lost? (A learner
            // of the new incarnation is added again, which promotes it.)
            if let Some(m) = self.leader_members().await?.iter().find(|m| m.id == id) {
                if m.incarnation != old.incarnation && m.role == pb::member::Role::Voter as i32 {
                    return Ok(());
                }
            }
            c.add_member(pb::AddMemberRequest {
                id,
                address: address.clone(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("member add {id} {address}: {}", e.message()))
        })
        .await?;
        let rejoined = removed_for.elapsed();
        let three = self.leader_members().await?;
        let new = three
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| format!("after member add {id} the leader lists {three:?}"))?;
        if three.len() != before.members.len()
            || new.role != pb::member::Role::Voter as i32
            || new.incarnation == old.incarnation
        {
            return Err(format!(
                "after member add {id} the leader lists {three:?}: expected {} members with \
                 {id} a voter of a new incarnation (old {})",
                before.members.len(),
                old.incarnation
            ));
        }
        let handed = match successor {
            Some((l, term)) => format!(
                "removed while leading; node {l} led (term {term}) {} ms after the call; ",
                successor_after.as_millis()
            ),
            None => String::new(),
        };
        Ok(format!(
            "{handed}removed, wiped, started empty, added back at {address} as a voter in {} ms \
             (incarnation {} -> {})",
            rejoined.as_millis(),
            old.incarnation,
            new.incarnation
        ))
    }

    /// The members the current leader lists.
    async fn leader_members(&self) -> Result<Vec<pb::Member>, String> {
        let (leader, _) = self.wait_leader(Duration::from_secs(10)).await?;
        let c = self.client(leader)?;
        let s = c
            .status()
            .await
            .map_err(|e| format!("status of node {leader}: {}", e.message()))?;
        Ok(s.members)
    }

    /// Drops node `id`'s unsynced writes (it is already killed); every
    /// other cut tears the last unsynced write of each file. Returns what
    /// was dropped, as the filesystem reports it.
    async fn cut_power(&mut self, id: NodeId) -> Result<String, String> {
        self.power_cuts += 1;
        let torn = self
            .power_cuts
            .is_multiple_of(2)
            .then(|| self.rng.next_u64());
        let dropped = self.backend.lose_unsynced(id, torn).await?;
        Ok(match torn {
            Some(seed) => format!("lost unsynced writes, torn (seed {seed}): {dropped}"),
            None => format!("lost unsynced writes: {dropped}"),
        })
    }

    async fn pause_client(&mut self) -> Result<(String, String), (String, String)> {
        let pause_for = self.lease() * 2 + Duration::from_secs(1);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let holders = self.pauses.holders();
            if !holders.is_empty() {
                let (w, h) = holders[self.rng.below(holders.len() as u64) as usize].clone();
                let t = format!("worker {w} (holding {} token {})", h.lease, h.token);
                self.pauses.arm(w, pause_for);
                // The worker reaches its pause point within a round.
                match self
                    .pauses
                    .wait_done(w, pause_for + Duration::from_secs(4))
                    .await
                {
                    Some(e) => {
                        return Ok((
                            format!(
                                "worker {w} (holding {} token {})",
                                e.holding.lease, e.holding.token
                            ),
                            format!(
                                "paused {} ms between its validity check and its write",
                                (e.end - e.start) / 1_000_000
                            ),
                        ))
                    }
                    None => {
                        // It lost the lease before its pause point; try another.
                        self.pauses.disarm(w);
                        if Instant::now() >= until {
                            return Err((t, "no worker reached its pause point".into()));
                        }
                    }
                }
            } else if Instant::now() >= until {
                return Err(("-".into(), "no worker held a lease for 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn clock_offset(
        &mut self,
        others: &[NodeId],
    ) -> Result<(String, String), (String, String)> {
        let b = self.backend.clone();
        let id = others[self.rng.below(others.len() as u64) as usize];
        let t = format!("node {id}");
        let fail = |e: String| (t.clone(), e);
        // More than a lease duration either way; alternate the sign.
        let secs = (3 * self.lease_seconds + 7) as i64;
        let offset = if self.offsets.is_multiple_of(2) {
            secs
        } else {
            -secs
        };
        self.offsets += 1;
        b.clock_offset(id, offset).await.map_err(fail)?;
        // The node reads its wall clock when it starts (stamps then follow
        // the monotonic clock), so restart it to take the offset.
        b.kill(id).await.map_err(fail)?;
        b.start(id).await.map_err(fail)?;
        self.wait_healthy(RECOVERY_TIMEOUT).await.map_err(fail)?;
        // Try to make the skewed node the leader (up to five times): kill
        // the leader while the third node is paused, so that the skewed
        // node's election timer fires first; its vote request waits in the
        // paused node's socket and is granted when that node resumes.
        let mut led = false;
        let mut current = self
            .wait_leader(Duration::from_secs(10))
            .await
            .map_err(fail)?
            .0;
        let mut winners = Vec::new();
        for _ in 0..5 {
            if current == id {
                led = true;
                break;
            }
            let third = b.node_ids().into_iter().find(|n| *n != id && *n != current);
            if let Some(t) = third {
                b.pause(t).await.map_err(fail)?;
            }
            let killed = b.kill(current).await;
            tokio::time::sleep(Duration::from_millis(900)).await;
            if let Some(t) = third {
                b.resume(t).await.map_err(fail)?;
            }
            killed.map_err(fail)?;
            let new = self
                .wait_leader(Duration::from_secs(10))
                .await
                .map_err(fail)?;
            b.start(current).await.map_err(fail)?;
            self.wait_healthy(RECOVERY_TIMEOUT).await.map_err(fail)?;
            current = new.0;
            winners.push(current);
        }
        led |= current == id;
        // Let it lead (or follow) under load with its skewed clock.
        tokio::time::sleep(self.lease() * 2).await;
        b.clock_offset(id, 0).await.map_err(fail)?;
        b.kill(id).await.map_err(fail)?;
        b.start(id).await.map_err(fail)?;
        Ok((
            t.clone(),
            format!(
                "wall clock {offset:+} s; {}; leaders elected while trying: {:?}",
                if led {
                    "it led the cluster with the skewed clock"
                } else {
                    "it was not elected leader (it followed with the skewed clock)"
                },
                winners
            ),
        ))
    }

    /// A node loses its data and is put back the documented way: killed,
    /// wiped, started empty with `--initial-cluster-state existing`, then
    /// `member replace` (the old incarnation leaves the voters, the new one
    /// joins as a learner, catches up, and is promoted). Until the replace,
    /// the empty node answers no Raft message meant for the old member.
    async fn wipe_and_rejoin(&mut self, id: NodeId) -> Result<(), String> {
        let b = self.backend.clone();
        let c = self.cluster_client()?;
        b.kill(id).await?;
        b.wipe(id).await?;
        b.start_empty(id).await?;
        retry(Duration::from_secs(30), || async {
            match c
                .replace_member(pb::ReplaceMemberRequest {
                    id,
                    address: String::new(),
                })
                .await
            {
                Ok(_) => Ok(()),
                // An earlier attempt whose answer was lost did it already.
                Err(e) if e.message().contains("nothing to replace") => Ok(()),
                Err(e) => Err(format!("member replace {id}: {}", e.message())),
            }
        })
        .await?;
        Ok(())
    }

    /// Acquires a probe lease whose state must survive a kill of all nodes.
    async fn durability_acquire(&mut self, fault: FaultKind) -> Result<DurabilityProbe, String> {
        self.kills_all += 1;
        let lease = format!("durable-{}", self.kills_all);
        let c = self.cluster_client()?;
        let holder = "durability-probe".to_string();
        let req = pb::AcquireRequest {
            namespace: self.namespace.clone(),
            name: lease.clone(),
            holder: holder.clone(),
            lease_duration_seconds: 3600,
            labels: Default::default(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let r = retry(Duration::from_secs(20), || async {
            c.acquire(req.clone())
                .await
                .map_err(|e| format!("probe acquire: {}", e.message()))
        })
        .await?;
        Ok(DurabilityProbe {
            fault,
            lease,
            holder,
            token: r.fencing_token,
            acknowledged_at: self.clock.now(),
            read_back: String::new(),
            intact: false,
        })
    }

    async fn durability_check(&self, mut p: DurabilityProbe) -> DurabilityProbe {
        let c = match self.cluster_client() {
            Ok(c) => c,
            Err(e) => {
                p.read_back = e;
                return p;
            }
        };
        let req = pb::GetRequest {
            namespace: self.namespace.clone(),
            name: p.lease.clone(),
            stale: false,
        };
        let r = retry(Duration::from_secs(20), || async {
            c.get(req.clone())
                .await
                .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
        })
        .await;
        match r {
            Ok(resp) => match resp.lease {
                Some(l) => {
                    let v = super::workload::view_of(&l);
                    p.read_back = format!("{}/{}", v.holder.clone().unwrap_or_default(), v.token);
                    p.intact = v.holder.as_deref() == Some(p.holder.as_str()) && v.token == p.token;
                }
                None => p.read_back = "no lease in the response".into(),
            },
            Err(e) => p.read_back = e,
        }
        p
    }
}

/// Retries `f` every 200 ms until it succeeds or `for_` has passed.
async fn retry<T, F, Fut>(for_: Duration, f: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + for_;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn fmt_leader(l: Option<(NodeId, u64)>) -> String {
    match l {
        Some((id, term)) => format!("{id} (term {term})"),
        None => "none".into(),
    }
}

/// The leader of the highest term among nodes that report leading.
/// A restarted ex-leader may claim its old term for a moment; the term
/// decides.
pub fn leader_of(st: &Statuses) -> Option<(NodeId, u64)> {
    st.iter()
        .filter_map(|(id, s)| s.as_ref().ok().map(|s| (*id, s)))
        .filter(|(_, s)| s.state == "LEADER")
        .map(|(id, s)| (id, s.term))
        .max_by_key(|(_, term)| *term)
}

/// Whether the statuses show a healthy cluster; `target` remembers the
/// leader's commit index from the first look with a leader.
fn healthy(st: &Statuses, target: &mut Option<u64>) -> Result<(), String> {
    let mut down = Vec::new();
    for (id, s) in st {
        if let Err(e) = s {
            down.push(format!("node {id}: {e}"));
        }
    }
    if !down.is_empty() {
        return Err(down.join("; "));
    }
    let Some((leader, term)) = leader_of(st) else {
        return Err("no leader".into());
    };
    let ok: Vec<&pb::StatusResponse> = st.values().filter_map(|s| s.as_ref().ok()).collect();
    if let Some(s) = ok.iter().find(|s| s.leader_id != leader || s.term != term) {
        return Err(format!(
            "node {} sees leader {} term {}, not {leader} term {term}",
            s.node_id, s.leader_id, s.term
        ));
    }
    let leader_commit = ok
        .iter()
        .find(|s| s.node_id == leader)
        .map(|s| s.commit_index)
        .unwrap_or(0);
    let want = *target.get_or_insert(leader_commit);
    if let Some(s) = ok.iter().find(|s| s.applied_index < want) {
        return Err(format!(
            "node {} applied {} < leader's commit {want}",
            s.node_id, s.applied_index
        ));
    }
    if let Some(s) = ok.iter().find(|s| s.members.len() != st.len()) {
        return Err(format!(
            "node {} lists {} members, expected {}",
            s.node_id,
            s.members.len(),
            st.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, state: &str, term: u64, leader: u64, applied: u64) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: id,
            leader_id: leader,
            state: state.into(),
            term,
            commit_index: applied,
            applied_index: applied,
            members: (1..=3)
                .map(|i| pb::Member {
                    id: i,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_highest_term_decides_the_leader() {
        let mut s: Statuses = BTreeMap::new();
        s.insert(1, Ok(st(1, "LEADER", 3, 1, 10)));
        s.insert(2, Ok(st(2, "LEADER", 4, 2, 10)));
        s.insert(3, Err("down".into()));
        assert_eq!(leader_of(&s), Some((2, 4)));
        s.clear();
        s.insert(1, Ok(st(1, "FOLLOWER", 3, 0, 1)));
        assert_eq!(leader_of(&s), None);
    }

    #[test]
    fn healthy_needs_all_nodes_one_leader_and_applied_commit() {
        let mut s: Statuses = BTreeMap::new();
        s.insert(1, Ok(st(1, "LEADER", 4, 1, 10)));
        s.insert(2, Ok(st(2, "FOLLOWER", 4, 1, 10)));
        s.insert(3, Ok(st(3, "FOLLOWER", 4, 1, 7)));
        let mut target = None;
        assert!(healthy(&s, &mut target)
            .unwrap_err()
            .contains("node 3 applied 7"));
        assert_eq!(target, Some(10));
        s.insert(3, Ok(st(3, "FOLLOWER", 4, 1, 12)));
        assert_eq!(healthy(&s, &mut target), Ok(()));
        s.insert(3, Ok(st(3, "FOLLOWER", 3, 2, 12)));
        assert!(healthy(&s, &mut target).is_err());
        s.insert(3, Err("connection refused".into()));
        assert!(healthy(&s, &mut target).is_err());
    }
}
