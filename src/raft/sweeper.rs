//! The leader's sweeps: recording expiries and collecting garbage.
//!
//! Every [`SWEEP_INTERVAL`] the node, if it believes it is the leader, asks
//! the state machine's indexes which tenures lapsed and which leases became
//! garbage. Before proposing anything it confirms its leadership with a
//! quorum (a ReadIndex round): a deposed leader must never act on expiry. It
//! then proposes `Expire` (with the tenure's holder and token) and `Delete`
//! (at the lease's resourceVersion). Both are checked again when applied,
//! with the time stamped in the entry: a lease renewed meanwhile is not
//! marked, a lease changed meanwhile is not deleted.

use super::node::{Node, NodeError};
use crate::lease::apply::lapses_at;
use crate::lease::{Command, LeaseError, LeaseKey, Timestamp};
use futures::future::join_all;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks for expired and collectable leases. Expiry is
/// recorded within this interval plus one commit.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// At most this many commands of each kind per sweep.
const SWEEP_BATCH: usize = 256;

/// Runs the sweeps until `node` shuts down.
pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_shut_down() {
            return;
        }
        if !node.is_leader() {
            continue;
        }
        if let Err(e) = sweep(&node).await {
            tracing::debug!("sweep skipped: {e}");
        }
    }
}

/// One sweep; returns how many commands were applied.
pub async fn sweep(node: &Node) -> Result<usize, NodeError> {
    // Estimate the state machine time our entries will be applied at. In our
    // own epoch that is the projection of our clock; before our first
    // command it is at least the current state machine time.
    let clock = node.sm.clock();
    let wall = node.clock.now();
    let now = match clock.epoch_leader {
        Some(l) if l.node_id == node.id && clock.epoch_clock == node.clock.id() => {
            clock.project(wall)
        }
        _ => clock.now.max(wall),
    };
    let expiring = node.sm.due_expiries(now, SWEEP_BATCH);
    let garbage = node.sm.due_gc(now, SWEEP_BATCH);
    if expiring.is_empty() && garbage.is_empty() {
        return Ok(0);
    }
    tracing::debug!(expiring = expiring.len(), garbage = garbage.len(), %now, "sweeping");
    node.read_barrier().await?;
    let mut commands = Vec::new();
    for key in expiring {
        if let Some(c) = expire_command(node, key, now)? {
            commands.push(c);
        }
    }
    for key in garbage {
        if let Ok((Some(lease), _)) = node.sm.get(&key) {
            commands.push(Command::Delete {
                key,
                resource_version: Some(lease.resource_version),
            });
        }
    }
    let results = join_all(commands.into_iter().map(|c| node.propose(c))).await;
    let mut applied = 0;
    for r in results {
        match r {
            Ok(a) => {
                applied += 1;
                tracing::debug!(lease = %a.lease.key, revision = a.revision, "sweep applied");
            }
            // Renewed, released or changed since the index was read.
            Err(NodeError::Lease(
                LeaseError::NotExpired { .. }
                | LeaseError::Lost { .. }
                | LeaseError::Conflict { .. }
                | LeaseError::NotFound { .. },
            )) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}

/// The `Expire` for `key` if its tenure has lapsed by `now`. The index
/// orders by `expireTime`; after a leader change the tenure runs a full
/// duration from the epoch start, which only the lease and clock know.
fn expire_command(
    node: &Node,
    key: LeaseKey,
    now: Timestamp,
) -> Result<Option<Command>, NodeError> {
    let (lease, _) = node
        .sm
        .get(&key)
        .map_err(|e| NodeError::Storage(format!("{e:#}")))?;
    let epoch_start = node.sm.clock().epoch_start;
    Ok(lease.and_then(|l| {
        let holder = l.holder()?.to_string();
        let lapsed = lapses_at(&l, epoch_start).is_some_and(|at| at <= now);
        (lapsed && !l.expired).then_some(Command::Expire {
            key,
            holder,
            fencing_token: l.fencing_token,
        })
    }))
}
