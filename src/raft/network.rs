//! The peer transport: openraft's RPCs carried over gRPC.
//!
//! Each openraft request is encoded with bincode into a `RaftPayload` and
//! sent to the peer's `leasehold.internal.v1.Raft` service on the same port as
//! the client API. The reply payload is bincode of `Result<Response,
//! RaftError>`, so a remote Raft error travels back as itself. One lazily
//! connected channel per peer address is shared by every call.
//!
//! Every request carries this node's cluster id and the id and incarnation
//! the membership records for the target (`types::Member`); the
//! target refuses a request meant for another cluster or another
//! incarnation of itself (`api::raft_service`).

use crate::client::Channels;
use crate::proto::internal::raft_client::RaftClient;
use crate::proto::internal::RaftPayload;
use crate::store::node_meta::NodeMeta;
use crate::types::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
    meta: NodeMeta,
}

impl Network {
    /// A factory sharing `channels`, stamping requests with `meta`'s
    /// cluster id.
    pub fn new(channels: Channels, meta: NodeMeta) -> Self {
        Network { channels, meta }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            member: node.clone(),
            channels: self.channels.clone(),
            meta: self.meta.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    member: Member,
    channels: Channels,
    meta: NodeMeta,
}

type RpcErr<E> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .channels
            .get(&self.member.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(RaftPayload {
            data,
            cluster_id: self.meta.cluster_id().unwrap_or_default(),
            to_id: self.target,
            to_incarnation: self.member.incarnation.clone(),
        });
        request.set_timeout(timeout);
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Largest AppendEntries payload sent in one call.
const MAX_APPEND_BYTES: u64 = 1024 * 1024;

/// How many leading entries fit in `budget` bytes; at least one.
fn prefix_within(entries: &[crate::types::Entry], budget: u64) -> usize {
    let mut total = 0u64;
    for (i, e) in entries.iter().enumerate() {
        total = total.saturating_add(bincode::serialized_size(e).unwrap_or(u64::MAX));
        if total > budget && i > 0 {
            return i;
        }
    }
    entries.len()
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        // openraft gives each AppendEntries one heartbeat interval and sends
        // up to `max_payload_entries` entries whatever their size; a lagging
        // follower of large leases would time out on every retry. Send a
        // prefix of at most MAX_APPEND_BYTES (at least one entry) and report
        // a partial success, so replication always makes progress.
        let cut = prefix_within(&rpc.entries, MAX_APPEND_BYTES);
        if cut < rpc.entries.len() {
            rpc.entries.truncate(cut);
            let last_sent = rpc.entries.last().map(|e| e.log_id);
            // Never let the follower commit past what it was sent.
            rpc.leader_commit = rpc.leader_commit.min(last_sent);
            let resp = self.call(Method::Append, &rpc, option.hard_ttl()).await?;
            return Ok(match resp {
                AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last_sent),
                other => other,
            });
        }
        self.call(Method::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Method::Vote, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Command, LeaseKey, Proposal, Timestamp};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64, holder_len: usize) -> crate::types::Entry {
        crate::types::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::single(
                Timestamp::from_micros(0),
                0,
                Command::Renew {
                    key: LeaseKey::new("ns", "a"),
                    holder: "h".repeat(holder_len),
                    fencing_token: 1,
                },
                None,
            )),
        }
    }

    #[test]
    fn append_prefix_respects_the_budget_and_always_sends_one() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 10)).collect();
        assert_eq!(prefix_within(&small, 1024 * 1024), 10);
        let big: Vec<_> = (1..=10).map(|i| entry(i, 400_000)).collect();
        assert_eq!(
            prefix_within(&big, 1024 * 1024),
            2,
            "two 400 kB entries fit in 1 MiB, three do not"
        );
        let huge = vec![entry(1, 2_000_000), entry(2, 10)];
        assert_eq!(
            prefix_within(&huge, 1024 * 1024),
            1,
            "an oversized first entry still goes alone"
        );
        assert_eq!(prefix_within(&[], 1024), 0);
    }
}
