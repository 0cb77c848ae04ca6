//! A Leasehold node: storage, Raft and the operations the API needs.
//!
//! The node is where the leader stamps time into proposals. Everything the
//! gRPC layer does that touches Raft goes through here, so the API handlers
//! stay thin and this is the one place that turns openraft's errors into
//! [`NodeError`]s.

use super::network::{Channels, Network};
use super::types::{NodeId, Raft};
use crate::lease::validate::validate_command;
use crate::lease::{Applied, Command, CommandResponse, LeaseError, Proposal, Timestamp};
use crate::store::{self, StateMachineStore};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Raft timing, in milliseconds.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log) after this many applied entries.
    pub snapshot_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs: 10_000,
        }
    }
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The address peers and forwarded clients reach this node at.
    pub advertise: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The initial cluster; used once, when the data directory is new. Empty
    /// means a single-node cluster of this node (unless `join`).
    pub peers: BTreeMap<NodeId, String>,
    /// Start empty and wait to be added with `member add` instead of
    /// bootstrapping a cluster.
    pub join: bool,
    /// Raft timing.
    pub timing: RaftTiming,
    /// State machine options (watch history, garbage collection).
    pub store: store::StoreOptions,
}

/// Why a node-level operation failed. Mapped to gRPC in `api::status`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The lease domain refused the command.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// This node is not the leader; the leader is given when known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The cluster cannot serve the call now (no quorum, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A local storage failure.
    #[error("storage: {0}")]
    Storage(String),
    /// A write was proposed but its fate is unknown (timed out).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// How long a write may wait to commit, or a read for its ReadIndex round,
/// before the caller is told (an isolated leader would otherwise wait until
/// the partition heals).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// The address others reach this node at.
    pub advertise: String,
    /// The Raft handle.
    pub raft: Raft,
    /// The lease state machine (read side).
    pub sm: StateMachineStore,
    /// Channels to peers, shared with the Raft network and forwarding.
    pub channels: Channels,
    /// What proposals are stamped with.
    pub clock: StampClock,
}

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

fn validate_request_id(id: &str) -> Result<(), LeaseError> {
    if id.len() > MAX_REQUEST_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LeaseError::invalid(
            "requestId",
            format!(
                "must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

/// The clock a leader stamps proposals with: the wall clock read once, when
/// the process starts, advanced by the monotonic clock.
///
/// Within one leader's epoch the state machine's time advances by the
/// difference between stamps, so stamps must measure elapsed time faithfully:
/// a wall clock stepped forward by NTP or by hand while this node leads
/// would otherwise hand out leases early. `CLOCK_MONOTONIC` cannot be
/// stepped. The wall-clock reading at start only places the epoch on the
/// calendar; an epoch whose first stamp is ahead of the state machine's time
/// moves time forward (tenures are then extended, never shortened), one that
/// is behind leaves it where it is. A wall clock corrected after start takes
/// effect on the next restart. Each process's clock has its own id, so a
/// restarted leader (whose new anchor may disagree with the old one) starts
/// a new epoch even in its old term.
#[derive(Debug, Clone, Copy)]
pub struct StampClock {
    wall: Timestamp,
    at: std::time::Instant,
    id: u64,
}

impl StampClock {
    /// Anchors on the wall clock now.
    pub fn new() -> Self {
        StampClock {
            wall: Timestamp::from_datetime(chrono::Utc::now()),
            at: std::time::Instant::now(),
            id: uuid::Uuid::new_v4().as_u64_pair().0,
        }
    }

    /// This clock's identity (random, chosen at start): what
    /// [`Proposal::clock_id`] carries.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The anchor's wall time plus the monotonic time elapsed since.
    pub fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.at.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.wall.plus_micros(elapsed)
    }
}

impl Default for StampClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// Opens storage, starts Raft and bootstraps the cluster if the data
    /// directory is new.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Arc<Node>> {
        let (log, sm) = store::open_with(&cfg.data_dir, cfg.store.clone())?;
        let t = &cfg.timing;
        anyhow::ensure!(
            t.heartbeat_ms > 0 && t.heartbeat_ms < t.election_timeout_min_ms,
            "heartbeat interval ({} ms) must be positive and below the minimum election timeout ({} ms)",
            t.heartbeat_ms,
            t.election_timeout_min_ms
        );
        anyhow::ensure!(
            t.election_timeout_min_ms < t.election_timeout_max_ms,
            "minimum election timeout ({} ms) must be below the maximum ({} ms)",
            t.election_timeout_min_ms,
            t.election_timeout_max_ms
        );
        let config = openraft::Config {
            cluster_name: "leasehold".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: 30_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_logs.max(1)),
            max_in_snapshot_log_to_keep: 1_000,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        let channels = Channels::default();
        let raft = Raft::new(
            cfg.id,
            config,
            Network::new(channels.clone()),
            log,
            sm.clone(),
        )
        .await?;
        let node = Arc::new(Node {
            id: cfg.id,
            advertise: cfg.advertise.clone(),
            raft,
            sm,
            channels,
            clock: StampClock::new(),
        });
        if !cfg.join {
            node.bootstrap(&cfg).await?;
        }
        Ok(node)
    }

    async fn bootstrap(&self, cfg: &NodeConfig) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = if cfg.peers.is_empty() {
            BTreeMap::from([(cfg.id, BasicNode::new(&cfg.advertise))])
        } else {
            anyhow::ensure!(
                cfg.peers.contains_key(&cfg.id),
                "--peers must include this node's id {}",
                cfg.id
            );
            cfg.peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect()
        };
        if let Some((peer, addr)) = self.existing_cluster(cfg).await {
            // A peer already belongs to an initialised cluster: this node is
            // a member whose data directory is new (wiped or replaced). It
            // must not start a cluster of its own; the leader brings it up to
            // date by snapshot.
            tracing::warn!(
                peer,
                %addr,
                "data directory is empty but the cluster already exists: not bootstrapping, \
                 waiting for the leader to replicate to this node"
            );
            return Ok(());
        }
        tracing::info!(?members, "bootstrapping a new cluster");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another node's identical initialisation reached us first.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A peer (id, address) that reports an initialised cluster, if any
    /// answers. Peers that are down or not initialised yet do not count: all
    /// nodes of a new cluster then initialise the same membership, which
    /// openraft allows.
    async fn existing_cluster(&self, cfg: &NodeConfig) -> Option<(NodeId, String)> {
        use crate::proto::v1::cluster_client::ClusterClient;
        for (id, addr) in cfg.peers.iter().filter(|(id, _)| **id != cfg.id) {
            let Ok(channel) = self.channels.get(addr) else {
                continue;
            };
            let mut req = tonic::Request::new(crate::proto::v1::StatusRequest {});
            req.set_timeout(Duration::from_millis(500));
            if let Ok(s) = ClusterClient::new(channel).status(req).await {
                if !s.get_ref().members.is_empty() {
                    return Some((*id, addr.clone()));
                }
            }
        }
        None
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Whether this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// Proposes `command`, stamped with this node's clock, and waits until it
    /// is committed and applied here. Only the leader can propose: on a
    /// follower this returns [`NodeError::NotLeader`] without having written
    /// anything, so the caller may safely forward the request.
    pub async fn propose(&self, command: Command) -> Result<Applied, NodeError> {
        self.propose_once(command, None).await
    }

    /// Like [`Node::propose`], with the client's idempotency key: a retry
    /// with the same key gets the first attempt's result.
    pub async fn propose_once(
        &self,
        command: Command,
        request_id: Option<String>,
    ) -> Result<Applied, NodeError> {
        validate_command(&command)?;
        if let Some(id) = &request_id {
            validate_request_id(id)?;
        }
        // Stamp only as the leader: a node that is not (yet) the leader must
        // not carry a time from before its election into its first entry.
        if !self.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.leader(),
            });
        }
        let proposal = Proposal {
            time: self.clock.now(),
            clock_id: self.clock.id(),
            command,
            request_id,
        };
        let written = tokio::time::timeout(REQUEST_TIMEOUT, self.raft.client_write(proposal)).await;
        let Ok(written) = written else {
            return Err(NodeError::OutcomeUnknown(format!(
                "not committed within {} s (lost quorum?); the write may or may not take effect",
                REQUEST_TIMEOUT.as_secs()
            )));
        };
        match written {
            Ok(resp) => match resp.data {
                CommandResponse::Applied(a) => Ok(a),
                CommandResponse::Refused(e) => Err(NodeError::Lease(e)),
                CommandResponse::None => Err(NodeError::Storage(
                    "command entry produced no response".into(),
                )),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(NodeError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(NodeError::Unavailable(format!("raft stopped: {f}"))),
        }
    }

    /// Waits until a read on this node's state machine is linearizable: this
    /// node is the leader, a quorum confirmed it, and everything committed
    /// before the call is applied (openraft's ReadIndex).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let confirmed =
            tokio::time::timeout(REQUEST_TIMEOUT, self.raft.ensure_linearizable()).await;
        let Ok(confirmed) = confirmed else {
            return Err(NodeError::Unavailable(format!(
                "leadership not confirmed by a quorum within {} s",
                REQUEST_TIMEOUT.as_secs()
            )));
        };
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                Err(NodeError::Unavailable(format!("no quorum: {q}")))
            }
            Err(RaftError::Fatal(f)) => Err(NodeError::Unavailable(format!("raft stopped: {f}"))),
        }
    }

    fn not_leader(&self, id: Option<NodeId>, node: Option<BasicNode>) -> NodeError {
        let leader = match (id, node) {
            (Some(id), Some(n)) => Some((id, n.addr)),
            (Some(id), None) => self.leader().filter(|(lid, _)| *lid == id),
            _ => None,
        };
        NodeError::NotLeader { leader }
    }

    /// Adds a node: first as a learner, waiting until it has caught up, then
    /// as a voter. Leader only.
    pub async fn add_member(&self, id: NodeId, addr: String) -> Result<(), NodeError> {
        let map_err = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(f.leader_id, f.leader_node)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::Membership(e.to_string())
            }
            RaftError::Fatal(f) => NodeError::Unavailable(format!("raft stopped: {f}")),
        };
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(map_err)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Removes a node from the voters and forgets it. Leader only.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        let voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(NodeError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(NodeError::Unavailable(format!("raft stopped: {f}"))),
        }
    }

    /// The committed log index as this node knows it.
    pub async fn committed_index(&self) -> u64 {
        self.raft
            .with_raft_state(|s| s.committed.map(|l| l.index).unwrap_or(0))
            .await
            .unwrap_or(0)
    }

    /// Whether Raft has stopped (shut down or failed).
    pub fn is_shut_down(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Shutdown || m.running_state.is_err()
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }

    /// Waits up to `timeout` for a leader to be known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let r = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .ok()?;
        r.current_leader
    }
}
