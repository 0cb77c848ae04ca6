//! The internal `leasehold.internal.v1.Raft` service: decodes openraft
//! messages from peers and hands them to the local Raft.

use crate::proto::internal::raft_server::Raft as RaftRpc;
use crate::proto::internal::RaftPayload;
use crate::raft::types::Raft;
use tonic::{Request, Response, Status};

/// Serves peer Raft RPCs.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// A service feeding `raft`.
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }
}

fn decode<T: serde::de::DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    bincode::deserialize(&req.into_inner().data).map_err(|e| {
        Status::invalid_argument(format!(
            "undecodable raft message (peer running another version?): {e}"
        ))
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let data = bincode::serialize(v)
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
