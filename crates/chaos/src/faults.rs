//! The faults a chaos run injects, and the record of what happened.

use super::history::Nanos;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the Raft leader, restart it later.
    KillLeader,
    /// SIGKILL one follower, restart it later.
    KillFollower,
    /// SIGKILL two nodes (the cluster loses quorum), restart them.
    KillTwo,
    /// SIGKILL all three nodes, restart them; acknowledged state must survive.
    KillAll,
    /// SIGSTOP / `docker pause` the leader for longer than a lease.
    PauseLeader,
    /// Suspend a lease-holding client between reading and writing the
    /// fenced register, for longer than its lease.
    PauseClient,
    /// Drop all packets between the leader and both followers.
    IsolateLeader,
    /// Drop all packets between one follower and the other nodes.
    IsolateFollower,
    /// Drop packets on one node-to-node link only.
    CutLink,
    /// Drop a fraction of packets on one node's peer links.
    PeerLoss,
    /// Delay packets on one node's peer links.
    PeerDelay,
    /// Shift one node's wall clock by more than a lease duration.
    ClockOffset,
    /// Kill a node, delete its data, and bring it back as a new member.
    WipeNode,
    /// Power loss of one follower: SIGKILL it, drop every write its
    /// filesystem had not synced (the lazy filesystem's `lose-unsynced`),
    /// restart it.
    PowerLossFollower,
    /// Power loss of the leader, as [`FaultKind::PowerLossFollower`].
    PowerLossLeader,
    /// Power loss of every node at once: all three lose their unsynced
    /// writes together; every acknowledged write must survive.
    PowerLossAll,
    /// SIGTERM a node as an operator's restart does (every other time the
    /// leader, which hands leadership over before it exits), wait for its
    /// clean exit, start it again.
    GracefulRestart,
    /// Membership change under load: remove a node from the cluster (every
    /// other time the leader, which hands leadership over first), kill it,
    /// delete its data, start it empty and add it back as a new member
    /// (learner, caught up, then voter).
    MemberCycle,
}

impl FaultKind {
    /// Every kind, in the order a run cycles through them.
    pub const ALL: [FaultKind; 18] = [
        FaultKind::KillLeader,
        FaultKind::PauseClient,
        FaultKind::IsolateLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::CutLink,
        FaultKind::ClockOffset,
        FaultKind::KillTwo,
        FaultKind::PeerLoss,
        FaultKind::IsolateFollower,
        FaultKind::PeerDelay,
        FaultKind::WipeNode,
        FaultKind::KillAll,
        FaultKind::PowerLossFollower,
        FaultKind::PowerLossLeader,
        FaultKind::PowerLossAll,
        FaultKind::GracefulRestart,
        FaultKind::MemberCycle,
    ];

    /// The power-loss kinds (they need the nodes' data on the lazy
    /// filesystem).
    pub const POWER_LOSS: [FaultKind; 3] = [
        FaultKind::PowerLossFollower,
        FaultKind::PowerLossLeader,
        FaultKind::PowerLossAll,
    ];

    /// Whether this kind drops unsynced writes (see [`FaultKind::POWER_LOSS`]).
    pub fn is_power_loss(self) -> bool {
        Self::POWER_LOSS.contains(&self)
    }

    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillTwo => "kill-two",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseClient => "pause-client",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateFollower => "isolate-follower",
            FaultKind::CutLink => "cut-link",
            FaultKind::PeerLoss => "peer-loss",
            FaultKind::PeerDelay => "peer-delay",
            FaultKind::ClockOffset => "clock-offset",
            FaultKind::WipeNode => "wipe-node",
            FaultKind::PowerLossFollower => "power-loss-follower",
            FaultKind::PowerLossLeader => "power-loss-leader",
            FaultKind::PowerLossAll => "power-loss-all",
            FaultKind::GracefulRestart => "graceful-restart",
            FaultKind::MemberCycle => "member-cycle",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {s:?}; known: {}", names.join(", "))
            })
    }
}

/// What became of one planned fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The kind.
    pub kind: FaultKind,
    /// The nodes or client it hit, e.g. `node 2` or `worker 3`.
    pub target: String,
    /// When it was injected (run clock).
    pub start: Nanos,
    /// When it was healed.
    pub end: Nanos,
    /// `Ok` if it was injected and verified; otherwise what went wrong.
    pub result: FaultResult,
    /// Details: the term before and after, the leader elected meanwhile...
    pub detail: String,
}

/// The result of one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", content = "why", rename_all = "snake_case")]
pub enum FaultResult {
    /// Injected, verified, healed.
    Ok,
    /// The backend cannot inject this kind (the reason says why, e.g. the
    /// kernel has no netem). Not counted as planned.
    Unsupported(String),
    /// Planned but not carried out (or not verified): a checker failure.
    Failed(String),
}
