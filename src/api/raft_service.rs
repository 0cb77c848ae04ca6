//! The internal `leasehold.internal.v1.Raft` service: checks who a peer
//! message is for, decodes it and hands it to the local Raft.
//!
//! Admission, before openraft sees anything:
//! - a message of another format version (`store::FORMAT_VERSION`, stamped
//!   by the sender) is refused: the bincode of the two builds' entries may
//!   not decode the same, and a node must never apply entries it reads
//!   differently from its peers. A version of 0 is a sender built before
//!   the field existed, which was format version 6, so it is accepted only
//!   while ours is 6;
//! - a message addressed to another node id, or to another incarnation of
//!   this node's data directory, is refused: the sender's membership means
//!   a member whose data this node no longer has (it was wiped or replaced),
//!   and answering as that member could vote twice in a term or count
//!   entries it lost towards a commit;
//! - a message from another cluster is refused;
//! - a node that does not know its cluster yet (it started empty, waiting
//!   to be added) never votes; the first append or snapshot its leader
//!   sends it, addressed to its incarnation, tells it the cluster id, which
//!   it records.
//!
//! `TimeoutNow` is admitted like `Vote` and makes this node campaign at
//! once (`raft::handoff`): a leader that is shutting down sends it to the
//! follower it hands over to.

use crate::proto::internal::raft_server::Raft as RaftRpc;
use crate::proto::internal::RaftPayload;
use crate::raft::network::Throttle;
use crate::store::node_meta::NodeMeta;
use crate::store::FORMAT_VERSION;
use crate::types::Raft;
use tonic::{Request, Response, Status};

/// The format version of the builds that sent no version (the field came
/// with it): a version of 0 means this one.
const UNSTAMPED_FORMAT_VERSION: u32 = 6;

/// Serves peer Raft RPCs.
pub struct RaftService {
    raft: Raft,
    meta: NodeMeta,
    /// The format version this node speaks ([`FORMAT_VERSION`] unless a
    /// debug build plays another build).
    format_version: u32,
    /// Version refusals are logged at most every 10 s.
    version_warnings: Throttle,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftService {
    /// A service feeding `raft`, admitting messages for the node `meta`
    /// describes.
    pub fn new(raft: Raft, meta: NodeMeta) -> Self {
        RaftService {
            raft,
            meta,
            format_version: FORMAT_VERSION,
            version_warnings: Throttle::new(10_000),
        }
    }

    /// Speaks format version `v` instead of [`FORMAT_VERSION`] (the
    /// debug-only `--fault-format-version`, which plays another build).
    pub fn with_format_version(mut self, v: u32) -> Self {
        self.format_version = v;
        self
    }

    /// Refuses a message of another format version, naming both.
    fn check_version(&self, p: &RaftPayload) -> Result<(), Status> {
        let ours = self.format_version;
        let theirs = p.format_version;
        if theirs == ours || (theirs == 0 && ours == UNSTAMPED_FORMAT_VERSION) {
            return Ok(());
        }
        let shown = if theirs == 0 {
            format!("0 (a build older than the version stamp, format {UNSTAMPED_FORMAT_VERSION})")
        } else {
            theirs.to_string()
        };
        let msg = format!(
            "raft message of format version {shown}, but node {} runs format version {ours}: \
             builds of different format versions cannot form one cluster; run one format \
             version on every member (roll the odd node back), or move across with a backup \
             and restore (README \"Rolling restarts and upgrades\")",
            self.meta.node_id()
        );
        if self.version_warnings.ready() {
            tracing::warn!("refused a peer: {msg}");
        }
        Err(Status::failed_precondition(msg))
    }

    fn admit(&self, p: &RaftPayload, kind: Kind) -> Result<(), Status> {
        self.check_version(p)?;
        let me = self.meta.node_id();
        if p.to_id != me {
            return Err(Status::failed_precondition(format!(
                "raft message for node {} reached node {me}: check the members' addresses",
                p.to_id
            )));
        }
        let incarnation = self.meta.incarnation();
        if p.to_incarnation != incarnation {
            return Err(Status::failed_precondition(format!(
                "raft message for incarnation {} of node {me}, but this data directory is \
                 incarnation {incarnation}: the node's data was wiped or replaced, so it must \
                 not act as the member the cluster knows; run `leasehold member replace {me}`",
                p.to_incarnation
            )));
        }
        match self.meta.cluster_id() {
            Some(mine) if p.cluster_id != mine => Err(Status::failed_precondition(format!(
                "raft message from cluster {:?}, but this node belongs to cluster {mine}",
                p.cluster_id
            ))),
            Some(_) => Ok(()),
            None if kind == Kind::Vote => Err(Status::failed_precondition(
                "this node has not joined a cluster yet and does not vote",
            )),
            None if p.cluster_id.is_empty() => Err(Status::failed_precondition(
                "raft message without a cluster id",
            )),
            None => {
                self.meta.set_cluster_id(&p.cluster_id).map_err(|e| {
                    Status::internal(format!("cannot record the cluster id: {e:#}"))
                })?;
                tracing::info!(cluster_id = %p.cluster_id, "joined the cluster");
                Ok(())
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(p: &RaftPayload) -> Result<T, Status> {
    bincode::deserialize(&p.data).map_err(|e| {
        Status::invalid_argument(format!(
            "undecodable raft message (peer running another version?): {e}"
        ))
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let data = bincode::serialize(v)
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload {
        data,
        ..Default::default()
    }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let p = req.into_inner();
        self.admit(&p, Kind::Append)?;
        encode(&self.raft.append_entries(decode(&p)?).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let p = req.into_inner();
        self.admit(&p, Kind::Vote)?;
        encode(&self.raft.vote(decode(&p)?).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let p = req.into_inner();
        self.admit(&p, Kind::Snapshot)?;
        encode(&self.raft.install_snapshot(decode(&p)?).await)
    }

    /// Campaigns at once (the sender is a leader handing over to us).
    /// openraft's `elect` works whatever the runtime `elect` switch says,
    /// and is a no-op on a leader.
    async fn timeout_now(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let p = req.into_inner();
        self.admit(&p, Kind::Vote)?;
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        tracing::info!("campaigning at once: the leader is handing over to this node");
        Ok(Response::new(RaftPayload::default()))
    }
}
