//! The leader's sweeps: recording expiries and collecting garbage.
//!
//! Every [`SWEEP_INTERVAL`] the node, if it believes it is the leader, asks
//! its state which `Expire` and `Delete` commands are due
//! (`state::State::sweep`), estimating the time and epoch its own entries
//! will be applied in. Before proposing anything it confirms its leadership
//! with a quorum (a ReadIndex round): a deposed leader must never act on
//! expiry. Both commands are checked again when applied, with the time
//! stamped in the entry: a lease renewed meanwhile is not marked, a lease
//! changed meanwhile is not deleted.

use super::node::{Node, NodeError};
use crate::lease::{LeaseError, Timestamp};
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

/// The state machine time and epoch start our next entry will be applied
/// with. In our own epoch: the projection of our clock, and the epoch's
/// start. Before our first command is applied, that command starts a new
/// epoch at least at our clock's reading, so both are estimated as it.
pub fn next_entry_time(node: &Node) -> (Timestamp, Timestamp) {
    let clock = node.sm.clock();
    let wall = node.clock.now();
    match clock.epoch_leader {
        Some(l) if l.node == node.id && clock.epoch_clock == node.clock.id() => {
            (clock.project(wall), clock.epoch_start)
        }
        _ => {
            let start = clock.now.max(wall);
            (start, start)
        }
    }
}

/// One sweep; returns how many commands were applied.
pub async fn sweep(node: &Node) -> Result<usize, NodeError> {
    let (now, epoch_start) = next_entry_time(node);
    let commands = node.sm.view().sweep(now, epoch_start, SWEEP_BATCH);
    if commands.is_empty() {
        return Ok(0);
    }
    tracing::debug!(commands = commands.len(), %now, "sweeping");
    node.read_barrier().await?;
    let results = join_all(commands.into_iter().map(|c| node.propose(c))).await;
    let mut applied = 0;
    for r in results {
        match r {
            Ok(a) => {
                applied += 1;
                tracing::debug!(lease = %a.lease.key, revision = a.revision, "sweep applied");
            }
            // Renewed, released or changed since the view was read.
            Err(NodeError::Lease(
                LeaseError::NotExpired { .. }
                | LeaseError::Lost { .. }
                | LeaseError::Conflict { .. }
                | LeaseError::NotFound { .. }
                | LeaseError::Held { .. },
            )) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}
