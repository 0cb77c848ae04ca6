//! A Leasehold node: storage, Raft and the operations the API needs.
//!
//! The node is where the leader stamps time into proposals. Everything the
//! gRPC layer does that touches Raft goes through here, so the API handlers
//! stay thin and this is the one place that turns openraft's errors into
//! [`NodeError`]s.

use super::network::{Network, Retry};
use super::proposer::Proposer;
use crate::client::Channels;
use crate::lease::validate::validate_command;
use crate::lease::{Applied, Command, CommandResponse, LeaseError, Op, Timestamp};
use crate::store::node_meta::{derive_cluster_id, NodeMeta};
use crate::store::{self, StateMachineStore};
use crate::types::{Member, NodeId, Raft};
use anyhow::bail;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
            // Failover within a second (a follower waits the leader lease,
            // the maximum election timeout, plus its own random timeout),
            // with no spurious election in five minutes of full load on a
            // 2-core machine (docs/BENCHMARKS.md).
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
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
    /// means a single-node cluster of this node (in state `New`).
    pub peers: BTreeMap<NodeId, String>,
    /// What an empty data directory means (etcd's
    /// `--initial-cluster-state`).
    pub initial_state: InitialClusterState,
    /// Raft timing.
    pub timing: RaftTiming,
    /// State machine options (watch history, garbage collection).
    pub store: store::StoreOptions,
    /// TLS of the peer channels (Raft, forwarding): the peer CA and this
    /// node's peer certificate. `None`: plaintext.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
    /// The format version stamped on peer messages and required of them:
    /// [`store::FORMAT_VERSION`], unless a debug build plays another build
    /// (`--fault-format-version`).
    pub format_version: u32,
}

/// What a node with an empty data directory does (etcd's
/// `--initial-cluster-state`). Ignored once the directory holds a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialClusterState {
    /// Bootstrap a new cluster of `peers` (or of this node alone). Every
    /// initial member must answer first, so that the membership records
    /// each one's data-directory incarnation; if the peers already form a
    /// cluster that does not list this incarnation, the node refuses to
    /// start (its data was lost: it must be put back with `member replace`).
    #[default]
    New,
    /// Join an existing cluster: start empty and wait until the leader adds
    /// this node (`leasehold member add` or `member replace`). The node
    /// never bootstraps and never votes before that.
    Existing,
}

/// Why a node-level operation failed. Mapped to gRPC in `api::status`.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// This data directory's identity (incarnation, cluster id).
    pub meta: NodeMeta,
    /// Where writes are batched into proposals.
    pub(super) proposer: Proposer,
    /// The peer network (for `TimeoutNow`; openraft has its own copy).
    pub(super) network: Network,
    /// Set once the node is stopping: `/readyz` answers 503 from then on.
    draining: AtomicBool,
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
    /// [`Proposal::clock_id`](crate::lease::Proposal::clock_id) carries.
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
    /// Opens storage and starts Raft. Bootstrapping a new cluster is a
    /// separate step ([`Node::bootstrap`]), run once the node serves, since
    /// it needs the other initial members to answer.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data directory {}: {e}",
                cfg.data_dir.display()
            )
        })?;
        let meta = NodeMeta::load_or_create(&cfg.data_dir, cfg.id)?;
        let (log, sm) = store::open_with(&cfg.data_dir, cfg.store.clone())?;
        let log = log.start_as_follower();
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
        let channels = Channels::with_tls(cfg.peer_tls.clone());
        let network = Network::new(channels.clone(), meta.clone())
            .with_format_version(cfg.format_version)
            .with_retry(Retry::for_timing(t.heartbeat_ms, t.election_timeout_min_ms));
        let raft = Raft::new(cfg.id, config, network.clone(), log, sm.clone()).await?;
        let clock = StampClock::new();
        Ok(Arc::new(Node {
            id: cfg.id,
            advertise: cfg.advertise.clone(),
            proposer: Proposer::start(raft.clone(), clock),
            raft,
            sm,
            channels,
            clock,
            meta,
            network,
            draining: AtomicBool::new(false),
        }))
    }

    /// Bootstraps a new cluster if this data directory holds none and
    /// `cfg.initial_state` is `New` (see [`InitialClusterState`]); returns
    /// once the node is initialised, is known to belong to the cluster its
    /// peers formed, or (state `Existing`) at once. Fails when the peers
    /// already form a cluster that does not know this data directory.
    pub async fn bootstrap(&self, cfg: &NodeConfig) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        if cfg.initial_state == InitialClusterState::Existing {
            match self.meta.cluster_id() {
                Some(c) => {
                    tracing::info!(cluster_id = %c, "waiting for the leader to replicate to this node")
                }
                None => tracing::warn!(
                    id = self.id,
                    incarnation = %self.meta.incarnation(),
                    "empty node waiting to be added to a cluster: run `leasehold member add {} {}` \
                     (or `leasehold member replace {}` if it replaces a member whose data was lost)",
                    self.id,
                    self.advertise,
                    self.id
                ),
            }
            return Ok(());
        }
        let me = Member::new(&cfg.advertise, self.meta.incarnation());
        if cfg.peers.is_empty() {
            let members = BTreeMap::from([(cfg.id, me)]);
            return self.initialize(members).await;
        }
        anyhow::ensure!(
            cfg.peers.contains_key(&cfg.id),
            "--peers must include this node's id {}",
            cfg.id
        );
        let mut attempts = 0u64;
        loop {
            let mut members = BTreeMap::from([(cfg.id, me.clone())]);
            let mut silent = Vec::new();
            for (id, addr) in cfg.peers.iter().filter(|(id, _)| **id != cfg.id) {
                let Some(s) = self.peer_status(addr).await else {
                    silent.push(*id);
                    continue;
                };
                if s.node_id != *id {
                    bail!(
                        "--peers names node {id} at {addr}, but node {} answers there",
                        s.node_id
                    );
                }
                if !s.cluster_id.is_empty() && !s.members.is_empty() {
                    return self.adopt_existing(&s, addr);
                }
                if !s.cluster_id.is_empty() {
                    // It is initialising right now: ask again.
                    silent.push(*id);
                    continue;
                }
                members.insert(*id, Member::new(addr, s.incarnation));
            }
            if silent.is_empty() {
                return self.initialize(members).await;
            }
            if attempts.is_multiple_of(20) {
                tracing::info!(
                    waiting_for = ?silent,
                    "bootstrapping a new cluster (--initial-cluster-state new): waiting for \
                     every initial member to answer"
                );
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A peer already belongs to a cluster: this node joins it if that
    /// cluster's membership lists this very data directory, and otherwise
    /// refuses (the directory is new: the node's data was lost).
    fn adopt_existing(
        &self,
        s: &crate::proto::v1::StatusResponse,
        addr: &str,
    ) -> anyhow::Result<()> {
        let incarnation = self.meta.incarnation();
        let listed = s
            .members
            .iter()
            .find(|m| m.id == self.id)
            .map(|m| m.incarnation.clone());
        match listed {
            Some(inc) if inc == incarnation => {
                self.meta.set_cluster_id(&s.cluster_id)?;
                tracing::info!(cluster_id = %s.cluster_id, "the initial members bootstrapped; joining");
                Ok(())
            }
            Some(inc) => bail!(
                "the cluster already exists (cluster {}, reported by {addr}) and lists node {} \
                 with data directory incarnation {inc}, but this data directory is new \
                 (incarnation {incarnation}): the node's data was lost. Start it with \
                 --initial-cluster-state existing and run `leasehold member replace {}` against \
                 the cluster",
                s.cluster_id,
                self.id,
                self.id
            ),
            None => bail!(
                "the cluster already exists (cluster {}, reported by {addr}) and node {} is not a \
                 member: start it with --initial-cluster-state existing and run `leasehold member \
                 add {} {}` against the cluster",
                s.cluster_id,
                self.id,
                self.id,
                self.advertise
            ),
        }
    }

    async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> anyhow::Result<()> {
        let cluster_id = derive_cluster_id(
            members
                .iter()
                .map(|(id, m)| (*id, m.addr.as_str(), m.incarnation.as_str())),
        );
        // Recorded before Raft is initialised: a crash in between leaves a
        // node that bootstraps the same members again.
        self.meta.set_cluster_id(&cluster_id)?;
        tracing::info!(%cluster_id, ?members, "bootstrapping a new cluster");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another node's identical initialisation reached us first.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The Status of the node at `addr`, if it answers within a second.
    async fn peer_status(&self, addr: &str) -> Option<crate::proto::v1::StatusResponse> {
        use crate::proto::v1::cluster_client::ClusterClient;
        let channel = self.channels.get(addr).ok()?;
        let mut req = tonic::Request::new(crate::proto::v1::StatusRequest {});
        req.set_timeout(Duration::from_secs(1));
        ClusterClient::new(channel)
            .status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
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
        let response = self
            .proposer
            .submit(Op {
                command,
                request_id,
            })
            .await?;
        match response {
            CommandResponse::Applied(a) => Ok(a),
            CommandResponse::Refused(e) => Err(NodeError::Lease(e)),
        }
    }

    /// Waits until a read on this node's state machine is linearizable: this
    /// node is the leader, a quorum confirmed it, and everything committed
    /// before the call is applied (openraft's ReadIndex). The read index is
    /// at least the blank entry that opened this leader's term, which covers
    /// everything an earlier leader acknowledged; that holds because no
    /// process ever resumes a leadership without an election
    /// ([`store::LogStore::start_as_follower`]).
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

    fn not_leader(&self, id: Option<NodeId>, node: Option<Member>) -> NodeError {
        let leader = match (id, node) {
            (Some(id), Some(n)) => Some((id, n.addr)),
            (Some(id), None) => self.leader().filter(|(lid, _)| *lid == id),
            _ => None,
        };
        NodeError::NotLeader { leader }
    }

    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, Member>>,
    ) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(f.leader_id, f.leader_node)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::Membership(e.to_string())
            }
            RaftError::Fatal(f) => NodeError::Unavailable(format!("raft stopped: {f}")),
        }
    }

    /// Who serves at `addr` (node id, incarnation), checking that it is node
    /// `id` and not a member of another cluster.
    async fn candidate(&self, id: NodeId, addr: &str) -> Result<Member, NodeError> {
        let s = self.peer_status(addr).await.ok_or_else(|| {
            NodeError::Membership(format!(
                "node {id} does not answer at {addr}: start it (with --initial-cluster-state \
                 existing) before adding it"
            ))
        })?;
        if s.node_id != id {
            return Err(NodeError::Membership(format!(
                "the node at {addr} is node {}, not node {id}",
                s.node_id
            )));
        }
        let ours = self.meta.cluster_id().unwrap_or_default();
        if !s.cluster_id.is_empty() && s.cluster_id != ours {
            return Err(NodeError::Membership(format!(
                "the node at {addr} belongs to another cluster ({}); start it with an empty \
                 data directory",
                s.cluster_id
            )));
        }
        Ok(Member::new(addr, s.incarnation))
    }

    fn members(&self) -> (BTreeMap<NodeId, Member>, BTreeSet<NodeId>) {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let nodes = m
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        (nodes, m.voter_ids().collect())
    }

    /// Adds `member` as a learner, waits until it has caught up, then makes
    /// it a voter.
    async fn add_and_promote(&self, id: NodeId, member: Member) -> Result<(), NodeError> {
        self.raft
            .add_learner(id, member, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Adds a node: first as a learner, waiting until it has caught up, then
    /// as a voter. The node must be running (started with
    /// `--initial-cluster-state existing`): its data-directory incarnation is
    /// what the membership records. Leader only.
    pub async fn add_member(&self, id: NodeId, addr: String) -> Result<(), NodeError> {
        if !self.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.leader(),
            });
        }
        let (nodes, voters) = self.members();
        let member = self.candidate(id, &addr).await?;
        if let Some(existing) = nodes.get(&id) {
            if voters.contains(&id) || existing.incarnation != member.incarnation {
                return Err(NodeError::Membership(format!(
                    "node {id} is already a member (at {}); if its data directory was lost or \
                     replaced, use `leasehold member replace {id}`",
                    existing.addr
                )));
            }
        }
        self.add_and_promote(id, member).await
    }

    /// Puts back member `id` whose data directory was lost or replaced: the
    /// old incarnation leaves the voters (so the cluster never counts it
    /// again), the node now serving at `addr` (default: the recorded
    /// address) joins as a learner, catches up, and becomes a voter. Leader
    /// only.
    pub async fn replace_member(&self, id: NodeId, addr: Option<String>) -> Result<(), NodeError> {
        if !self.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.leader(),
            });
        }
        let (nodes, _) = self.members();
        let Some(old) = nodes.get(&id) else {
            return Err(NodeError::Membership(format!(
                "node {id} is not a member: use `leasehold member add`"
            )));
        };
        if id == self.id {
            return Err(NodeError::Membership(format!(
                "node {id} is the leader and still has its data: nothing to replace"
            )));
        }
        let addr = addr.unwrap_or_else(|| old.addr.clone());
        let member = self.candidate(id, &addr).await?;
        if member.incarnation == old.incarnation {
            return Err(NodeError::Membership(format!(
                "node {id} at {addr} still has the data directory the cluster knows \
                 (incarnation {}): nothing to replace",
                old.incarnation
            )));
        }
        tracing::info!(id, old = %old, new = %member, "replacing a member");
        self.remove_member(id).await?;
        self.add_and_promote(id, member).await
    }

    /// Removes a node from the voters and forgets it. Leader only.
    ///
    /// A leader asked to remove itself hands leadership over first (Raft
    /// dissertation §4.2.2) and answers `NOT_LEADER` naming its successor,
    /// which `route` forwards the call to: the successor removes it as it
    /// removes any follower. Without this, openraft 0.9's leader commits
    /// the configuration without itself and steps down, and the others
    /// elect a leader only after an election timeout: writes stall for
    /// that long (1.1-1.3 s in the chaos suite's test timing). If the
    /// hand-over fails, the leader removes itself the slow way.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        use super::handoff::{HandOver, HAND_OVER_DEADLINE};
        if id == self.id && self.is_leader() {
            match self.hand_over(HAND_OVER_DEADLINE).await {
                HandOver::Done { target, took } => {
                    // This node keeps running until it is removed.
                    self.elections_on();
                    tracing::info!(
                        target,
                        ?took,
                        "handed leadership over before removing this node"
                    );
                    return Err(NodeError::NotLeader {
                        leader: self.leader(),
                    });
                }
                HandOver::NotNeeded(why) => {
                    tracing::debug!(why, "no hand-over before removing this node")
                }
                HandOver::Failed { result, why } => tracing::warn!(
                    result,
                    "could not hand leadership over before removing this node ({why}): it \
                     steps down once its removal commits, and the others elect a leader after \
                     an election timeout"
                ),
            }
        }
        let (_, voters) = self.members();
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// The committed log index as this node knows it.
    pub async fn committed_index(&self) -> u64 {
        self.raft
            .with_raft_state(|s| s.committed.map(|l| l.index).unwrap_or(0))
            .await
            .unwrap_or(0)
    }

    /// Marks the node as stopping: not ready from now on (`/readyz`).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the node is stopping.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
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
