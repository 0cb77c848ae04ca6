//! Handing leadership to a caught-up follower before a leader stops
//! (SIGTERM, ctrl-c), so that a rolling restart costs a short pause instead
//! of an election timeout.
//!
//! openraft 0.9 has no `transfer_leader`, so the hand-over is built from
//! what it has (docs/design/operations.md §2):
//! 1. the proposer stops proposing ([`Proposer::pause`]): the proposals in
//!    flight finish, new writes queue and nothing is refused;
//! 2. the target is the voter with the highest matched index; the leader
//!    waits until it has matched the last log index;
//! 3. the leader turns off its heartbeats and its own elections
//!    (`runtime_config`), so it neither renews the other followers' leases
//!    nor campaigns back;
//! 4. the target is sent `TimeoutNow` and campaigns at once. The old
//!    leader grants it its vote: a leader's vote time is set once, when it
//!    is elected, so its leader lease has run out (a follower's has not,
//!    which is why the target needs the old leader's vote); with the
//!    target's own that is a majority of three;
//! 5. once the target leads, the proposer resumes: the queued writes find
//!    this node a follower and are forwarded to the new leader (they were
//!    never proposed here, so they cannot apply twice).
//!
//! Any failure (no caught-up voter, a peer that does not know `TimeoutNow`
//! and answers UNIMPLEMENTED, a refusal, the deadline) turns heartbeats and
//! elections back on and resumes the proposer: the node then stops as it
//! did before, and the cluster elects a leader after an election timeout.
//! A leader elected less than an election timeout ago still has a fresh
//! lease and refuses the vote; `TimeoutNow` is repeated until the deadline.
//! Each attempt is counted in `leasehold_leader_transfers_total{result}`.

use super::node::Node;
use crate::types::NodeId;
use openraft::{RaftMetrics, ServerState};
use std::time::{Duration, Instant};

/// How long a hand-over may take in all before the node stops anyway.
pub const HAND_OVER_DEADLINE: Duration = Duration::from_secs(3);

/// How long the target may take to match the leader's last log index.
const CATCH_UP: Duration = Duration::from_secs(1);

/// How long to wait for the target to lead before asking it again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How a hand-over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOver {
    /// Nothing to hand over: this node is not the leader, or is the only
    /// voter. Not counted.
    NotNeeded(&'static str),
    /// `target` leads now.
    Done {
        /// The new leader.
        target: NodeId,
        /// From the start of the hand-over to the target leading.
        took: Duration,
    },
    /// The hand-over failed; the node stops without it.
    Failed {
        /// The `result` label (one of
        /// [`crate::telemetry::LEADER_TRANSFER_RESULTS`] other than `ok`).
        result: &'static str,
        /// What happened.
        why: String,
    },
}

impl HandOver {
    /// The `result` label of `leasehold_leader_transfers_total`, if counted.
    pub fn result(&self) -> Option<&'static str> {
        match self {
            HandOver::NotNeeded(_) => None,
            HandOver::Done { .. } => Some("ok"),
            HandOver::Failed { result, .. } => Some(result),
        }
    }
}

type Failure = (&'static str, String);

/// The index `id` has matched, on the leader (0 if unknown).
fn matched(m: &RaftMetrics<NodeId, crate::types::Member>, id: NodeId) -> u64 {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).copied().flatten())
        .map_or(0, |l| l.index)
}

fn left(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}

impl Node {
    /// Hands leadership to the most caught-up voter, within `deadline`
    /// (see the module documentation). Returns at once if this node is not
    /// the leader.
    pub async fn hand_over(&self, deadline: Duration) -> HandOver {
        let started = Instant::now();
        let until = started + deadline;
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return HandOver::NotNeeded("not the leader");
        }
        let voters: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .collect();
        if voters.is_empty() {
            return HandOver::NotNeeded("the only voter");
        }
        let outcome = match self.proposer.pause(left(until)).await {
            None => Err((
                "timeout",
                "the proposals in flight did not commit in time".to_string(),
            )),
            Some(paused) => {
                let r = self.transfer(&voters, until).await;
                if r.is_err() {
                    // Before resuming: the queued writes may then be
                    // proposed by this node, still leading as before.
                    self.elections_on();
                }
                drop(paused);
                r
            }
        };
        let out = match outcome {
            Ok(target) => HandOver::Done {
                target,
                took: started.elapsed(),
            },
            Err((result, why)) => HandOver::Failed { result, why },
        };
        if let Some(result) = out.result() {
            crate::telemetry::metrics()
                .leader_transfers
                .with_label_values(&[result])
                .inc();
        }
        out
    }

    /// Turns this node's heartbeats and elections back on. A successful
    /// hand-over leaves them off (step 3), which is what a stopping node
    /// wants; a node that keeps running afterwards (one that handed over
    /// before its own removal) turns them on again.
    pub fn elections_on(&self) {
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
    }

    /// Steps 2 to 4; `Ok` once `target` leads.
    async fn transfer(&self, voters: &[NodeId], until: Instant) -> Result<NodeId, Failure> {
        let m = self.raft.metrics().borrow().clone();
        // Most caught up first; the lowest id breaks ties, so the choice is
        // predictable.
        let target = voters
            .iter()
            .copied()
            .max_by_key(|v| (matched(&m, *v), std::cmp::Reverse(*v)))
            .ok_or(("no_target", "no other voter".to_string()))?;
        let member = m
            .membership_config
            .membership()
            .get_node(&target)
            .cloned()
            .ok_or_else(|| ("no_target", format!("voter {target} has no address")))?;
        self.raft
            .wait(Some(CATCH_UP.min(left(until))))
            .metrics(
                |m| m.last_log_index.is_some_and(|l| matched(m, target) >= l),
                "the target to match the last log index",
            )
            .await
            .map_err(|_| {
                let m = self.raft.metrics().borrow().clone();
                (
                    "not_caught_up",
                    format!(
                        "node {target} matched {} of {} within {CATCH_UP:?}",
                        matched(&m, target),
                        m.last_log_index.unwrap_or(0)
                    ),
                )
            })?;
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let mut asked = String::from("never answered");
        while !left(until).is_zero() {
            match self
                .network
                .timeout_now(target, &member, RETRY_EVERY.min(left(until)))
                .await
            {
                Ok(()) => asked = "accepted".into(),
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unimplemented | tonic::Code::FailedPrecondition
                    ) =>
                {
                    return Err((
                        "refused",
                        format!(
                            "node {target} refused TimeoutNow ({:?}): {}",
                            s.code(),
                            s.message()
                        ),
                    ));
                }
                // Unreachable for a moment: ask again.
                Err(s) => asked = format!("{:?}: {}", s.code(), s.message()),
            }
            let led = self
                .raft
                .wait(Some(RETRY_EVERY.min(left(until))))
                .metrics(|m| m.current_leader == Some(target), "the target to lead")
                .await;
            if led.is_ok() {
                return Ok(target);
            }
        }
        let m = self.raft.metrics().borrow().clone();
        Err((
            "timeout",
            format!(
                "node {target} did not lead in time (TimeoutNow: {asked}; here: leader {:?}, \
                 term {}, {:?})",
                m.current_leader, m.current_term, m.state
            ),
        ))
    }
}
