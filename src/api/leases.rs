//! The `leasehold.v1.Leases` service: thin handlers over [`Node`].
//!
//! Each handler converts its request into a domain command or read and hands
//! it to `route`, which runs it on this node and, when this node is not
//! the leader, forwards the original request to the leader once. A request
//! that was itself forwarded is never forwarded again (no loops); if it lands
//! on a node that lost leadership meanwhile, the caller gets UNAVAILABLE with
//! the leader's address and may retry.

use super::authz::{caller, check, check_request};
use super::convert::{decode_continue, draft_from_proto, encode_continue, lease_to_proto};
use super::limits::{leases_client, DEFAULT_PAGE, LIST_PAGE_BYTES, MAX_PAGE, MAX_SCANNED_PER_PAGE};
use super::stopping::Stopping;
use crate::auth::identity::Caller;
use crate::auth::rules::Verb;
use crate::auth::{Auth, IDENTITY_HEADER};
use crate::lease::selector;
use crate::lease::validate::{validate_dns_label, validate_key};
use crate::lease::{Command, LeaseError, LeaseKey};
use crate::proto::v1 as pb;
use crate::raft::node::{Node, NodeError};
use crate::state::PageLimits;
use prost::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Request metadata marking a call forwarded by another node.
pub const FORWARDED_HEADER: &str = "x-leasehold-forwarded";
/// Response metadata naming the leader that served a forwarded call.
pub use leasehold_proto::wire::LEADER_HEADER;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node without a known leader waits for an election before
/// answering UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// The Leases service.
pub struct LeasesService {
    node: Arc<Node>,
    /// Who may do what (authorization off by default).
    auth: Arc<Auth>,
    /// One permit per open watch (see `limits::DEFAULT_MAX_WATCHES`).
    watches: Arc<tokio::sync::Semaphore>,
    max_watches: usize,
    /// Ends the open watches and renew streams when the server stops.
    stopping: Stopping,
}

impl LeasesService {
    /// A service answering from `node`, with authorization off.
    pub fn new(node: Arc<Node>) -> Self {
        Self::with_node_and_limit(node, crate::api::limits::DEFAULT_MAX_WATCHES)
    }

    /// The same, serving at most `max` watches at once.
    pub fn with_max_watches(self, max: usize) -> Self {
        let (auth, stopping) = (self.auth.clone(), self.stopping.clone());
        Self::with_node_and_limit(self.node, max)
            .with_auth(auth)
            .with_stopping(stopping)
    }

    /// Ends open `Watch` and `RenewStream` calls with `UNAVAILABLE` once
    /// `stopping` is raised (see [`Stopping`]).
    pub fn with_stopping(mut self, stopping: Stopping) -> Self {
        self.stopping = stopping;
        self
    }

    /// Watches open on this node now.
    pub fn open_watches(&self) -> usize {
        self.max_watches
            .saturating_sub(self.watches.available_permits())
    }

    /// The same, checking every call against `auth`.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// What this service checks calls against (the `/ui` cluster view
    /// authorizes with the same rules).
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    fn with_node_and_limit(node: Arc<Node>, max: usize) -> Self {
        LeasesService {
            node,
            auth: Arc::new(Auth::disabled()),
            watches: Arc::new(tokio::sync::Semaphore::new(max)),
            max_watches: max,
            stopping: Stopping::never(),
        }
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
    // The leader authorizes the forwarded call again, as the original
    // caller: the identity travels with it (honoured there only because
    // this node's connection is a peer's).
    let identity = caller(&req).identity;
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
                fwd.metadata_mut().insert_bin(
                    IDENTITY_HEADER,
                    tonic::metadata::MetadataValue::from_bytes(&identity.encode()),
                );
                fwd.set_timeout(FORWARD_TIMEOUT);
                tracing::debug!(leader = id, %addr, "forwarding to leader");
                let mut resp = remote(channel, fwd).await.map_err(|s| {
                    // A transport failure (the leader crashed, or is
                    // unreachable) carries no ErrorInfo and says only
                    // "tcp connect error": name the leader it was for. A
                    // call the connection dropped before the leader took
                    // it (CANCELLED: the leader is stopping) is the same
                    // and as safe to retry (writes carry request ids).
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
                        && super::status::error_info(&s).is_none()
                    {
                        Status::unavailable(format!(
                            "cannot reach leader {id} at {addr}: {}",
                            s.message()
                        ))
                    } else {
                        s
                    }
                })?;
                if let Ok(v) = MetadataValue::try_from(addr.as_str()) {
                    resp.metadata_mut().insert(LEADER_HEADER, v);
                }
                return Ok(resp);
            }
            Err(NodeError::NotLeader { leader: None }) if !waited => {
                waited = true;
                node.wait_for_leader(LEADER_WAIT).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

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

/// The answers of a `RenewStream`.
pub type RenewStreamOut =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RenewStreamResponse, Status>> + Send>>;

/// Renewals a stream may have in flight at once; past this the server stops
/// reading the stream until answers are taken (back-pressure).
const STREAM_IN_FLIGHT: usize = 1024;

/// Runs the renewals of one stream: each request is proposed like a Renew
/// (so renewals of all streams and calls share log entries), and answered
/// in request order.
fn renew_stream(
    node: Arc<Node>,
    mut inbound: tonic::Streaming<pb::RenewRequest>,
    auth: Arc<Auth>,
    who: Caller,
    mut stopping: Stopping,
) -> RenewStreamOut {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
    tokio::spawn(async move {
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut open = true;
        let mut stopped = false;
        loop {
            tokio::select! {
                // The server stops: read no more; the renewals already
                // read are answered below, then the stream ends.
                _ = stopping.wait(), if !stopped => {
                    stopped = true;
                    open = false;
                }
                m = inbound.message(), if open && pending.len() < STREAM_IN_FLIGHT => match m {
                    Ok(Some(r)) => {
                        let allowed = check(&auth, &who, Verb::Renew, &r.namespace, &r.name);
                        pending.push_back(renew_in_stream(node.clone(), r, allowed))
                    }
                    Ok(None) => open = false,
                    // The client went away or broke the stream.
                    Err(_) => return,
                },
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                else => {
                    if stopped {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the node is shutting down; renew through another node",
                            )))
                            .await;
                    }
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn renew_in_stream(
    node: Arc<Node>,
    m: pb::RenewRequest,
    allowed: Result<(), Status>,
) -> pb::RenewStreamResponse {
    let mut answer = pb::RenewStreamResponse {
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        request_id: m.request_id.clone(),
        ..Default::default()
    };
    if let Err(s) = allowed {
        answer.error = Some(super::status::to_stream_error(&s));
        return answer;
    }
    let result = node
        .propose_once(
            Command::Renew {
                key: LeaseKey::new(m.namespace, m.name),
                holder: m.holder,
                fencing_token: m.fencing_token,
            },
            non_empty(&m.request_id),
        )
        .await;
    match result {
        Ok(a) => {
            answer.renewed = Some(pb::RenewStreamResult {
                resource_version: a.lease.resource_version,
                fencing_token: a.lease.fencing_token,
                expire_time_micros: a.lease.expire_time().map_or(0, |t| t.as_micros()),
            })
        }
        Err(e) => answer.error = Some(super::status::to_stream_error(&Status::from(e))),
    }
    answer
}

/// A watch delivers only what its caller may read *now*: when the rules
/// or tokens are reloaded, the scope is checked again before the next
/// event, and a scope no longer allowed ends the stream with the refusal.
fn recheck_on_reload(
    events: super::watch::WatchStream,
    auth: Arc<Auth>,
    who: Caller,
    namespace: String,
    name: String,
) -> super::watch::WatchStream {
    use futures::StreamExt;
    struct St {
        events: super::watch::WatchStream,
        auth: Arc<Auth>,
        who: Caller,
        namespace: String,
        name: String,
        generation: u64,
        done: bool,
    }
    let generation = auth.generation();
    let st = St {
        events,
        auth,
        who,
        namespace,
        name,
        generation,
        done: false,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let item = st.events.next().await?;
        let now = st.auth.generation();
        if now != st.generation {
            st.generation = now;
            if let Err(s) = check(&st.auth, &st.who, Verb::Watch, &st.namespace, &st.name) {
                st.done = true;
                return Some((Err(s), st));
            }
        }
        Some((item, st))
    }))
}

/// Converts a page's leases until the encoded items reach
/// [`LIST_PAGE_BYTES`] (at least one item); returns the items and where the
/// listing continues.
fn page_to_proto(page: &crate::state::ListPage) -> (Vec<pb::Lease>, Option<LeaseKey>) {
    let mut items = Vec::with_capacity(page.items.len());
    let mut bytes = 0usize;
    for (i, lease) in page.items.iter().enumerate() {
        let p = lease_to_proto(lease);
        let len = p.encoded_len();
        if i > 0 && bytes + len > LIST_PAGE_BYTES {
            return (items, Some(page.items[i - 1].key.clone()));
        }
        bytes += len;
        items.push(p);
    }
    (items, page.next.clone())
}

#[tonic::async_trait]
impl pb::leases_server::Leases for LeasesService {
    async fn acquire(
        &self,
        req: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let m = req.get_ref();
        check_request(&self.auth, &req, Verb::Acquire, &m.namespace, &m.name)?;
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
            |c, r| async move { leases_client(c).acquire(r).await },
        )
        .await
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let m = req.get_ref();
        check_request(&self.auth, &req, Verb::Renew, &m.namespace, &m.name)?;
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
            |c, r| async move { leases_client(c).renew(r).await },
        )
        .await
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let m = req.get_ref();
        check_request(&self.auth, &req, Verb::Release, &m.namespace, &m.name)?;
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
            |c, r| async move { leases_client(c).release(r).await },
        )
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let m = req.get_ref();
        check_request(&self.auth, &req, Verb::Get, &m.namespace, &m.name)?;
        let node = &self.node;
        route(
            node,
            req,
            |m: pb::GetRequest| async move {
                let key = key(&m.namespace, &m.name)?;
                if !m.stale {
                    node.read_barrier().await?;
                }
                let (lease, revision) = node.sm.get(&key);
                let lease = lease.ok_or(LeaseError::NotFound { key })?;
                Ok(pb::GetResponse {
                    lease: Some(lease_to_proto(&lease)),
                    revision,
                })
            },
            |c, r| async move { leases_client(c).get(r).await },
        )
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        check_request(&self.auth, &req, Verb::List, &req.get_ref().namespace, "")?;
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
                let limits = PageLimits {
                    max_items: page_size(m.limit),
                    max_scanned: MAX_SCANNED_PER_PAGE,
                };
                let page = node
                    .sm
                    .list_blocking(m.namespace.clone(), sel, after, limits)
                    .await
                    .map_err(storage)?;
                let (items, next) = page_to_proto(&page);
                Ok(pb::ListResponse {
                    items,
                    continue_token: next.as_ref().map(encode_continue).unwrap_or_default(),
                    revision: page.revision,
                })
            },
            |c, r| async move { leases_client(c).list(r).await },
        )
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let m = req.get_ref();
        check_request(&self.auth, &req, Verb::Delete, &m.namespace, &m.name)?;
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
                            uid: non_empty(&m.uid),
                        },
                        request_id,
                    )
                    .await?;
                Ok(pb::DeleteResponse {
                    lease: Some(lease_to_proto(&a.lease)),
                    revision: a.revision,
                })
            },
            |c, r| async move { leases_client(c).delete(r).await },
        )
        .await
    }

    type RenewStreamStream = RenewStreamOut;

    async fn renew_stream(
        &self,
        req: Request<tonic::Streaming<pb::RenewRequest>>,
    ) -> Result<Response<Self::RenewStreamStream>, Status> {
        let node = self.node.clone();
        if !node.is_leader() {
            // Served by the leader only; give a starting cluster a moment.
            if node.leader().is_none() {
                node.wait_for_leader(LEADER_WAIT).await;
            }
            if !node.is_leader() {
                return Err(NodeError::NotLeader {
                    leader: node.leader(),
                }
                .into());
            }
        }
        // Authorized per message: each names its own lease.
        let (auth, who) = (self.auth.clone(), caller(&req));
        Ok(Response::new(renew_stream(
            node,
            req.into_inner(),
            auth,
            who,
            self.stopping.clone(),
        )))
    }

    type WatchStream = super::watch::WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let spec = super::watch::WatchSpec::from_request(req.get_ref())?;
        let (who, ns, name) = (
            caller(&req),
            req.get_ref().namespace.clone(),
            req.get_ref().name.clone(),
        );
        check(&self.auth, &who, Verb::Watch, &ns, &name)?;
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            super::status::too_many(
                "watches",
                self.max_watches,
                format!(
                    "this node serves at most {} watches at once (--max-watches); close one, \
                     or watch through another node",
                    self.max_watches
                ),
            )
        })?;
        let events = super::watch::start(self.node.sm.clone(), spec, permit, self.stopping.clone());
        Ok(Response::new(recheck_on_reload(
            events,
            self.auth.clone(),
            who,
            ns,
            name,
        )))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        if let Some(l) = req.get_ref().lease.as_ref() {
            let (ns, name) = l
                .metadata
                .as_ref()
                .map(|m| (m.namespace.as_str(), m.name.as_str()))
                .unwrap_or_default();
            // An empty name or namespace asks for the collection or every
            // namespace, which only a broader rule allows; validation
            // refuses such a Put anyway.
            check_request(&self.auth, &req, Verb::Put, ns, name)?;
        }
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
            |c, r| async move { leases_client(c).put(r).await },
        )
        .await
    }
}
