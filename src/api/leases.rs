//! The `leasehold.v1.Leases` service: thin handlers over [`Node`].
//!
//! Each handler converts its request into a domain command or read and hands
//! it to [`route`], which runs it on this node and, when this node is not
//! the leader, forwards the original request to the leader once. A request
//! that was itself forwarded is never forwarded again (no loops); if it lands
//! on a node that lost leadership meanwhile, the caller gets UNAVAILABLE with
//! the leader's address and may retry.

use super::convert::{decode_continue, draft_from_proto, encode_continue, lease_to_proto};
use crate::lease::selector;
use crate::lease::validate::{validate_dns_label, validate_key};
use crate::lease::{Command, LeaseError, LeaseKey};
use crate::proto::v1 as pb;
use crate::proto::v1::leases_client::LeasesClient;
use crate::raft::node::{Node, NodeError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Request metadata marking a call forwarded by another node.
pub const FORWARDED_HEADER: &str = "x-leasehold-forwarded";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node without a known leader waits for an election before
/// answering UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// The Leases service.
pub struct LeasesService {
    node: Arc<Node>,
}

impl LeasesService {
    /// A service answering from `node`.
    pub fn new(node: Arc<Node>) -> Self {
        LeasesService { node }
    }
}

/// Runs `local` on this node; forwards to the leader with `remote` when this
/// node is not the leader. `local` must not have changed anything when it
/// returns `NotLeader` (true of `Node::propose` and `Node::read_barrier`).
pub(crate) async fn route<T, R, L, LF, F, FF>(
    node: &Node,
    req: Request<T>,
    local: L,
    remote: F,
) -> Result<Response<R>, Status>
where
    T: Clone,
    L: Fn(T) -> LF,
    LF: Future<Output = Result<R, NodeError>>,
    F: FnOnce(Channel, Request<T>) -> FF,
    FF: Future<Output = Result<Response<R>, Status>>,
{
    let forwarded = req.metadata().contains_key(FORWARDED_HEADER);
    let msg = req.into_inner();
    let mut waited = false;
    loop {
        match local(msg.clone()).await {
            Ok(r) => return Ok(Response::new(r)),
            Err(NodeError::NotLeader {
                leader: Some((id, addr)),
            }) if !forwarded && id != node.id => {
                let channel = node.channels.get(&addr).map_err(|e| {
                    Status::unavailable(format!("cannot reach leader {id} at {addr}: {e}"))
                })?;
                let mut fwd = Request::new(msg);
                fwd.metadata_mut()
                    .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
                fwd.set_timeout(FORWARD_TIMEOUT);
                tracing::debug!(leader = id, %addr, "forwarding to leader");
                return remote(channel, fwd).await;
            }
            Err(NodeError::NotLeader { leader: None }) if !waited => {
                waited = true;
                node.wait_for_leader(LEADER_WAIT).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// List page size when the request gives none.
pub const DEFAULT_PAGE: usize = 1_000;
/// Largest page a List returns, whatever the request asks for: keeps replies
/// far below gRPC's default 4 MiB message limit.
pub const MAX_PAGE: usize = 10_000;

fn page_size(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn key(namespace: &str, name: &str) -> Result<LeaseKey, NodeError> {
    let key = LeaseKey::new(namespace, name);
    validate_key(&key)?;
    Ok(key)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn storage(e: anyhow::Error) -> NodeError {
    NodeError::Storage(format!("{e:#}"))
}

#[tonic::async_trait]
impl pb::leases_server::Leases for LeasesService {
    async fn acquire(
        &self,
        req: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::AcquireRequest| async move {
                let request_id = non_empty(&m.request_id);
                let a = node
                    .propose_once(
                        Command::Acquire {
                            key: LeaseKey::new(m.namespace, m.name),
                            holder: m.holder,
                            duration_seconds: m.lease_duration_seconds,
                            labels: m.labels.into_iter().collect(),
                        },
                        request_id,
                    )
                    .await?;
                Ok(pb::AcquireResponse {
                    fencing_token: a.lease.fencing_token,
                    lease: Some(lease_to_proto(&a.lease)),
                    newly_acquired: a.newly_acquired,
                    created: a.created,
                })
            },
            |c, r| async move { LeasesClient::new(c).acquire(r).await },
        )
        .await
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::RenewRequest| async move {
                let request_id = non_empty(&m.request_id);
                let a = node
                    .propose_once(
                        Command::Renew {
                            key: LeaseKey::new(m.namespace, m.name),
                            holder: m.holder,
                            fencing_token: m.fencing_token,
                        },
                        request_id,
                    )
                    .await?;
                Ok(pb::RenewResponse {
                    lease: Some(lease_to_proto(&a.lease)),
                })
            },
            |c, r| async move { LeasesClient::new(c).renew(r).await },
        )
        .await
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::ReleaseRequest| async move {
                let request_id = non_empty(&m.request_id);
                let a = node
                    .propose_once(
                        Command::Release {
                            key: LeaseKey::new(m.namespace, m.name),
                            holder: m.holder,
                            fencing_token: m.fencing_token,
                        },
                        request_id,
                    )
                    .await?;
                Ok(pb::ReleaseResponse {
                    lease: Some(lease_to_proto(&a.lease)),
                })
            },
            |c, r| async move { LeasesClient::new(c).release(r).await },
        )
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::GetRequest| async move {
                let key = key(&m.namespace, &m.name)?;
                if !m.stale {
                    node.read_barrier().await?;
                }
                let (lease, revision) = node.sm.get(&key).map_err(storage)?;
                let lease = lease.ok_or(LeaseError::NotFound { key })?;
                Ok(pb::GetResponse {
                    lease: Some(lease_to_proto(&lease)),
                    revision,
                })
            },
            |c, r| async move { LeasesClient::new(c).get(r).await },
        )
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::ListRequest| async move {
                if !m.namespace.is_empty() {
                    validate_dns_label("namespace", &m.namespace)?;
                }
                let sel = selector::parse(&m.label_selector)?;
                let after = decode_continue(&m.continue_token)?;
                if let Some(a) = &after {
                    if !m.namespace.is_empty() && a.namespace != m.namespace {
                        return Err(LeaseError::invalid(
                            "continueToken",
                            "belongs to a listing of another namespace",
                        )
                        .into());
                    }
                }
                if !m.stale {
                    node.read_barrier().await?;
                }
                let page = node
                    .sm
                    .list(&m.namespace, &sel, after.as_ref(), page_size(m.limit))
                    .map_err(storage)?;
                Ok(pb::ListResponse {
                    items: page.items.iter().map(lease_to_proto).collect(),
                    continue_token: page.next.as_ref().map(encode_continue).unwrap_or_default(),
                    revision: page.revision,
                })
            },
            |c, r| async move { LeasesClient::new(c).list(r).await },
        )
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::DeleteRequest| async move {
                let request_id = non_empty(&m.request_id);
                let a = node
                    .propose_once(
                        Command::Delete {
                            key: LeaseKey::new(m.namespace, m.name),
                            resource_version: m.resource_version,
                        },
                        request_id,
                    )
                    .await?;
                Ok(pb::DeleteResponse {
                    lease: Some(lease_to_proto(&a.lease)),
                    revision: a.revision,
                })
            },
            |c, r| async move { LeasesClient::new(c).delete(r).await },
        )
        .await
    }

    type WatchStream = super::watch::WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let spec = super::watch::WatchSpec::from_request(req.get_ref())?;
        Ok(Response::new(super::watch::start(
            self.node.sm.clone(),
            spec,
        )))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::PutRequest| async move {
                let Some(lease) = m.lease else {
                    return Err(LeaseError::invalid("lease", "is required").into());
                };
                let draft = draft_from_proto(lease)?;
                let a = node
                    .propose_once(Command::Put { draft }, non_empty(&m.request_id))
                    .await?;
                Ok(pb::PutResponse {
                    lease: Some(lease_to_proto(&a.lease)),
                    created: a.created,
                })
            },
            |c, r| async move { LeasesClient::new(c).put(r).await },
        )
        .await
    }
}
