//! The `leasehold.v1.Cluster` service: status, membership and backups
//! (`Snapshot`; the streaming itself is `api::backup`).

use super::leases::route;
use crate::proto::v1 as pb;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::raft::node::{Node, NodeError};
use openraft::ServerState;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Cluster service.
pub struct ClusterService {
    node: Arc<Node>,
    auth: Arc<crate::auth::Auth>,
    /// Backups streaming now, at most [`MAX_BACKUPS`]: each holds a
    /// blocking thread and a copy of the state that writes diverge from.
    backups: Arc<tokio::sync::Semaphore>,
}

impl ClusterService {
    /// A service answering from `node`, checking calls against `auth`:
    /// `Status` needs any authenticated caller, membership changes and
    /// backups the `admin` verb.
    pub fn new(node: Arc<Node>, auth: Arc<crate::auth::Auth>) -> Self {
        ClusterService {
            node,
            auth,
            backups: Arc::new(tokio::sync::Semaphore::new(MAX_BACKUPS)),
        }
    }

    fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        super::authz::check_request(&self.auth, req, crate::auth::rules::Verb::Admin, "", "")
    }
}

/// This node's view of the cluster.
pub async fn status(node: &Node) -> pb::StatusResponse {
    let committed = node.committed_index().await;
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, n)| pb::Member {
            id: *id,
            address: n.addr.clone(),
            role: if voters.contains(id) {
                pb::member::Role::Voter as i32
            } else {
                pb::member::Role::Learner as i32
            },
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .unwrap_or(0),
            incarnation: n.incarnation.clone(),
        })
        .collect();
    let leader_address = m
        .current_leader
        .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()))
        .unwrap_or_default();
    let state = match m.state {
        ServerState::Leader => "LEADER",
        ServerState::Follower => "FOLLOWER",
        ServerState::Candidate => "CANDIDATE",
        ServerState::Learner => "LEARNER",
        ServerState::Shutdown => "SHUTDOWN",
    };
    pb::StatusResponse {
        node_id: node.id,
        leader_id: m.current_leader.unwrap_or(0),
        leader_address,
        state: state.to_string(),
        term: m.current_term,
        commit_index: committed,
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        revision: node.sm.revision(),
        members,
        incarnation: node.meta.incarnation(),
        cluster_id: node.meta.cluster_id().unwrap_or_default(),
        snapshot_in_progress: node.sm.snapshot_in_progress(),
        format_version: crate::store::FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Backups one node streams at once.
const MAX_BACKUPS: usize = 2;

fn validate_address(addr: &str) -> Result<(), Status> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(super::status::invalid(
            "address",
            &format!("{addr:?} is not HOST:PORT"),
        ))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    type SnapshotStream = super::backup::SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admin(&req)?;
        let permit = self.backups.clone().try_acquire_owned().map_err(|_| {
            super::status::too_many(
                "backups",
                MAX_BACKUPS,
                format!(
                    "{MAX_BACKUPS} backups are already streaming from this node; retry when one ends"
                ),
            )
        })?;
        Ok(Response::new(
            super::backup::stream(&self.node, permit).await?,
        ))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        super::authz::authenticated(&self.auth, &req)?;
        Ok(Response::new(status(&self.node).await))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.admin(&req)?;
        let m = req.get_ref();
        if m.id == 0 {
            return Err(super::status::invalid("id", "must be a positive node id"));
        }
        validate_address(&m.address)?;
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::AddMemberRequest| async move {
                node.add_member(m.id, m.address).await?;
                Ok::<_, NodeError>(pb::AddMemberResponse {
                    members: status(node).await.members,
                })
            },
            |c, r| async move { ClusterClient::new(c).add_member(r).await },
        )
        .await
    }

    async fn replace_member(
        &self,
        req: Request<pb::ReplaceMemberRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        self.admin(&req)?;
        let m = req.get_ref();
        if m.id == 0 {
            return Err(super::status::invalid("id", "must be a positive node id"));
        }
        if !m.address.is_empty() {
            validate_address(&m.address)?;
        }
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::ReplaceMemberRequest| async move {
                let addr = (!m.address.is_empty()).then_some(m.address);
                node.replace_member(m.id, addr).await?;
                Ok::<_, NodeError>(pb::ReplaceMemberResponse {
                    members: status(node).await.members,
                })
            },
            |c, r| async move { ClusterClient::new(c).replace_member(r).await },
        )
        .await
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.admin(&req)?;
        if req.get_ref().id == 0 {
            return Err(super::status::invalid("id", "must be a positive node id"));
        }
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::RemoveMemberRequest| async move {
                node.remove_member(m.id).await?;
                Ok::<_, NodeError>(pb::RemoveMemberResponse {
                    members: status(node).await.members,
                })
            },
            |c, r| async move { ClusterClient::new(c).remove_member(r).await },
        )
        .await
    }
}
