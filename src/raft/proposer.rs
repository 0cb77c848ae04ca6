//! The leader's write batching: concurrent client writes become one log
//! entry.
//!
//! Every write handler submits its command here and waits for its own
//! answer. One task takes the first waiting write, waits for a free slot
//! (at most [`IN_FLIGHT`] proposals are being committed at once), then
//! takes every other write already waiting, up to [`MAX_OPS`] or
//! [`MAX_BYTES`], and proposes them as one [`Proposal`]: one append, one
//! sync and one replication round carry all of them, and the state machine
//! applies them in order, each with its own revision and answer. A write
//! that finds a free slot goes out alone at once, so a single client waits
//! for nothing but its own commit; under load, writes queue while slots are
//! busy and the batches grow with the load.
//!
//! Stamping stays as before: the proposal is stamped with the leader's clock
//! when it is proposed, and only if this node believes it is the leader
//! (a node that is not must not carry a time from before its election into
//! its first entry); otherwise every write of the batch gets `NotLeader`
//! without anything written, so they may be forwarded.
//!
//! A leader handing over on shutdown ([`Proposer::pause`]) takes every
//! slot: the proposals in flight finish, and new writes wait in the queue,
//! refused by nobody and proposed by nobody, until the guard is dropped.
//! By then this node is usually a follower, so they get `NotLeader` naming
//! the new leader and are forwarded there: they were never proposed here,
//! so forwarding them cannot apply them twice.

use super::node::{NodeError, StampClock, REQUEST_TIMEOUT};
use crate::lease::{CommandResponse, Op, Proposal};
use crate::types::{Member, NodeId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Proposals being committed at once. Two lets one batch be appended and
/// synced while the previous one is replicated; more would only make
/// batches smaller.
pub const IN_FLIGHT: usize = 2;
/// Ops in one proposal at most.
pub const MAX_OPS: usize = 512;
/// Encoded ops in one proposal at most (a larger single op goes alone).
pub const MAX_BYTES: usize = 1024 * 1024;

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<CommandResponse, NodeError>>,
}

/// The handle write handlers submit to.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    /// The [`IN_FLIGHT`] proposal slots, shared with the batching task.
    slots: Arc<Semaphore>,
}

/// While held, nothing is proposed (see [`Proposer::pause`]).
pub struct Paused {
    _slots: OwnedSemaphorePermit,
}

impl Proposer {
    /// Starts the batching task for `raft`, stamping with `clock`. It ends
    /// when every handle is dropped.
    pub fn start(raft: Raft, clock: StampClock) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(run(raft, clock, rx, slots.clone()));
        Proposer { tx, slots }
    }

    /// Stops proposing: waits (at most `timeout`) until the proposals in
    /// flight have finished, and from then on until the guard is dropped
    /// new writes only queue. `None` if they did not finish in time (a
    /// leader without quorum); nothing is paused then.
    pub async fn pause(&self, timeout: Duration) -> Option<Paused> {
        let all = self.slots.clone().acquire_many_owned(IN_FLIGHT as u32);
        match tokio::time::timeout(timeout, all).await {
            Ok(Ok(permit)) => Some(Paused { _slots: permit }),
            _ => None,
        }
    }

    /// Proposes `op` (in a batch) and waits for its answer.
    pub async fn submit(&self, op: Op) -> Result<CommandResponse, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { op, reply })
            .map_err(|_| NodeError::Unavailable("the node is shutting down".into()))?;
        rx.await
            .map_err(|_| NodeError::Unavailable("the node is shutting down".into()))?
    }
}

async fn run(
    raft: Raft,
    clock: StampClock,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = op_bytes(&first.op);
        let mut batch = vec![first];
        while batch.len() < MAX_OPS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += op_bytes(&p.op);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        crate::telemetry::metrics()
            .proposal_ops
            .observe(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (ops, replies): (Vec<Op>, Vec<_>) =
                batch.into_iter().map(|p| (p.op, p.reply)).unzip();
            match propose(&raft, clock, ops).await {
                Ok(responses) if responses.len() == replies.len() => {
                    for (reply, r) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Ok(responses) => {
                    let e = NodeError::Storage(format!(
                        "an entry of {} ops produced {} answers",
                        replies.len(),
                        responses.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

fn op_bytes(op: &Op) -> usize {
    bincode::serialized_size(op).map_or(MAX_BYTES, |n| n as usize)
}

/// The leader's id and address as this node knows them.
fn leader_of(raft: &Raft) -> Option<(NodeId, String)> {
    let m = raft.metrics();
    let m = m.borrow();
    let id = m.current_leader?;
    let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
    Some((id, addr))
}

fn not_leader(raft: &Raft, id: Option<NodeId>, node: Option<Member>) -> NodeError {
    let leader = match (id, node) {
        (Some(id), Some(n)) => Some((id, n.addr)),
        (Some(id), None) => leader_of(raft).filter(|(lid, _)| *lid == id),
        _ => None,
    };
    NodeError::NotLeader { leader }
}

async fn propose(
    raft: &Raft,
    clock: StampClock,
    ops: Vec<Op>,
) -> Result<Vec<CommandResponse>, NodeError> {
    if raft.metrics().borrow().state != ServerState::Leader {
        return Err(NodeError::NotLeader {
            leader: leader_of(raft),
        });
    }
    let proposal = Proposal {
        time: clock.now(),
        clock_id: clock.id(),
        ops,
    };
    let written = tokio::time::timeout(REQUEST_TIMEOUT, raft.client_write(proposal)).await;
    let Ok(written) = written else {
        return Err(NodeError::OutcomeUnknown(format!(
            "not committed within {} s (lost quorum?); the write may or may not take effect",
            REQUEST_TIMEOUT.as_secs()
        )));
    };
    match written {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(not_leader(raft, f.leader_id, f.leader_node))
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(NodeError::Membership(e.to_string()))
        }
        Err(RaftError::Fatal(f)) => Err(NodeError::Unavailable(format!("raft stopped: {f}"))),
    }
}
