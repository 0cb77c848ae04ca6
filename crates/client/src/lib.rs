//! A Rust client for Leasehold with endpoint failover.
//!
//! Holds one lazily connected channel per endpoint. A call goes to the
//! endpoint that answered last, or to the leader once a node that forwarded
//! a call named it (`x-leasehold-leader`) and it is one of the endpoints:
//! writes then skip the extra hop through a follower. When it is unreachable or answers
//! UNAVAILABLE (no leader known, leader unreachable, node shutting down), the
//! call is retried on the next endpoint; after a round of failures it backs
//! off (50 ms doubling to 1 s) and goes round again. Every call has one
//! deadline covering all attempts (default 10 s).
//!
//! Every write but a renewal carries a request id (a UUID chosen once per
//! call, unless the caller set one), so retrying after an ambiguous failure
//! (the connection broke after the leader got the request) is safe: the
//! cluster applies a request id at most once and answers a retry with the
//! first attempt's result. A renewal needs none: applied twice it renews the
//! same tenure twice, and once the tenure ended a retry is refused
//! `LEASE_LOST`, which is the truth (callers may still set one).

use leasehold_proto::v1 as pb;
use leasehold_proto::v1::cluster_client::ClusterClient;
use leasehold_proto::wire::{leases_client, LEADER_HEADER};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Gives a write its idempotency key, unless the caller chose one: every
/// retry of this call then carries the same key, and the cluster applies it
/// at most once.
fn with_request_id(id: &mut String) {
    if id.is_empty() {
        *id = uuid::Uuid::new_v4().to_string();
    }
}

/// Default deadline of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a Leasehold cluster.
pub struct Client {
    endpoints: Vec<String>,
    channels: Channels,
    preferred: AtomicUsize,
    timeout: Duration,
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (`host:port` each).
    pub fn new(endpoints: Vec<String>) -> Result<Self, Status> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().trim_start_matches("http://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Status::invalid_argument(
                "invalid endpoints: at least one HOST:PORT is required",
            ));
        }
        Ok(Client {
            endpoints,
            channels: Channels::default(),
            preferred: AtomicUsize::new(0),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the deadline of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint the next call goes to first: the one that answered
    /// last, or the leader a forwarding node named.
    pub fn preferred_endpoint(&self) -> &str {
        &self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    async fn call<T, R, F, Fut>(&self, msg: T, f: F) -> Result<R, Status>
    where
        T: Clone,
        F: Fn(Channel, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let n = self.endpoints.len();
        let mut backoff = Duration::from_millis(50);
        let mut last = Status::deadline_exceeded("deadline exceeded before any endpoint answered");
        loop {
            let start = self.preferred.load(Ordering::Relaxed) % n;
            for i in 0..n {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if remaining.is_zero() {
                    return Err(last);
                }
                let idx = (start + i) % n;
                let endpoint = &self.endpoints[idx];
                let channel = match self.channels.get(endpoint) {
                    Ok(c) => c,
                    Err(e) => {
                        return Err(Status::invalid_argument(format!(
                            "invalid endpoint {endpoint:?}: {e}"
                        )))
                    }
                };
                let mut req = Request::new(msg.clone());
                req.set_timeout(remaining);
                match f(channel, req).await {
                    Ok(r) => {
                        let leader = r
                            .metadata()
                            .get(LEADER_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|addr| self.endpoints.iter().position(|e| e == addr));
                        self.preferred
                            .store(leader.unwrap_or(idx), Ordering::Relaxed);
                        return Ok(r.into_inner());
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        tracing::debug!(%endpoint, "unavailable: {}", s.message());
                        last = Status::with_details(
                            Code::Unavailable,
                            format!("{endpoint}: {}", s.message()),
                            s.details().to_vec().into(),
                        );
                    }
                    Err(s) => return Err(s),
                }
            }
            // Every endpoint was unavailable (typically: an election is in
            // progress). Back off and go round again until the deadline.
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(last);
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Acquires (or renews, if already held by the same holder) a lease.
    pub async fn acquire(
        &self,
        mut req: pb::AcquireRequest,
    ) -> Result<pb::AcquireResponse, Status> {
        with_request_id(&mut req.request_id);
        self.call(req, |c, r| async move { leases_client(c).acquire(r).await })
            .await
    }

    /// Renews the caller's tenure.
    pub async fn renew(&self, req: pb::RenewRequest) -> Result<pb::RenewResponse, Status> {
        self.call(req, |c, r| async move { leases_client(c).renew(r).await })
            .await
    }

    /// Opens a stream of renewals to the leader (`RenewStream`): one stream
    /// renews any number of leases, each renewal replicated and durable like
    /// [`Client::renew`]. Tries the endpoints from the preferred one; a node
    /// that is not the leader names it, and the stream is opened there.
    pub async fn renew_stream(&self) -> Result<RenewStream, Status> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let n = self.endpoints.len();
        let mut idx = self.preferred.load(Ordering::Relaxed) % n;
        let mut backoff = Duration::from_millis(50);
        let mut tried = 0usize;
        loop {
            let endpoint = &self.endpoints[idx];
            let channel = self.channels.get(endpoint).map_err(|e| {
                Status::invalid_argument(format!("invalid endpoint {endpoint:?}: {e}"))
            })?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            // No deadline on the call: it would end the stream.
            let req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            match leases_client(channel).renew_stream(req).await {
                Ok(r) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(RenewStream {
                        tx,
                        rx: r.into_inner(),
                    });
                }
                Err(s) if s.code() == Code::Unavailable => {
                    let named = leasehold_proto::wire::error_info(&s)
                        .and_then(|(_, m)| m.get("leaderAddress").cloned())
                        .and_then(|a| self.endpoints.iter().position(|e| *e == a));
                    tried += 1;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(s);
                    }
                    idx = match named {
                        Some(l) if l != idx => l,
                        _ => (idx + 1) % n,
                    };
                    if tried.is_multiple_of(n) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// Releases the caller's tenure.
    pub async fn release(
        &self,
        mut req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, Status> {
        with_request_id(&mut req.request_id);
        self.call(req, |c, r| async move { leases_client(c).release(r).await })
            .await
    }

    /// Reads one lease.
    pub async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        self.call(req, |c, r| async move { leases_client(c).get(r).await })
            .await
    }

    /// Lists leases (one page).
    pub async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse, Status> {
        self.call(req, |c, r| async move { leases_client(c).list(r).await })
            .await
    }

    /// Deletes a lease.
    pub async fn delete(&self, mut req: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        with_request_id(&mut req.request_id);
        self.call(req, |c, r| async move { leases_client(c).delete(r).await })
            .await
    }

    /// Creates or compare-and-swap updates a lease.
    pub async fn put(&self, mut req: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        with_request_id(&mut req.request_id);
        self.call(req, |c, r| async move { leases_client(c).put(r).await })
            .await
    }

    /// Opens a watch stream on the endpoint with index `endpoint` (no
    /// failover: a watcher resumes on another endpoint itself, from the last
    /// revision it saw + 1).
    pub async fn watch_on(
        &self,
        endpoint: usize,
        req: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, Status> {
        let addr = self
            .endpoints
            .get(endpoint)
            .ok_or_else(|| Status::invalid_argument(format!("no endpoint #{endpoint}")))?;
        let channel = self
            .channels
            .get(addr)
            .map_err(|e| Status::invalid_argument(format!("invalid endpoint {addr:?}: {e}")))?;
        // No deadline: a watch lasts until the caller drops it.
        Ok(leases_client(channel).watch(req).await?.into_inner())
    }

    /// The status of the first reachable endpoint's node.
    pub async fn status(&self) -> Result<pb::StatusResponse, Status> {
        self.call(pb::StatusRequest {}, |c, r| async move {
            ClusterClient::new(c).status(r).await
        })
        .await
    }

    /// Adds a member (learner, then voter).
    pub async fn add_member(
        &self,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberResponse, Status> {
        self.call(req, |c, r| async move {
            ClusterClient::new(c).add_member(r).await
        })
        .await
    }

    /// Puts back a member whose data directory was lost or replaced.
    pub async fn replace_member(
        &self,
        req: pb::ReplaceMemberRequest,
    ) -> Result<pb::ReplaceMemberResponse, Status> {
        self.call(req, |c, r| async move {
            ClusterClient::new(c).replace_member(r).await
        })
        .await
    }

    /// Removes a member.
    pub async fn remove_member(
        &self,
        req: pb::RemoveMemberRequest,
    ) -> Result<pb::RemoveMemberResponse, Status> {
        self.call(req, |c, r| async move {
            ClusterClient::new(c).remove_member(r).await
        })
        .await
    }
}

/// A stream of renewals to the leader ([`Client::renew_stream`]). Answers
/// come in the order the renewals were sent.
pub struct RenewStream {
    tx: tokio::sync::mpsc::Sender<pb::RenewRequest>,
    rx: tonic::Streaming<pb::RenewStreamResponse>,
}

impl RenewStream {
    /// Sends a renewal; its answer comes from [`RenewStream::next`], in
    /// order. (No request id is added: see the module doc.)
    pub async fn send(&self, req: pb::RenewRequest) -> Result<(), Status> {
        self.tx
            .send(req)
            .await
            .map_err(|_| Status::unavailable("the renew stream is closed"))
    }

    /// The next answer: the renewal's result, or the error a `Renew` call
    /// would have returned (typed errors work on it). `None` when the stream
    /// ended.
    pub async fn next(&mut self) -> Option<Result<pb::RenewStreamResult, Status>> {
        match self.rx.message().await {
            Ok(Some(a)) => Some(match (a.renewed, a.error) {
                (Some(r), _) => Ok(r),
                (None, Some(e)) => Err(leasehold_proto::wire::from_stream_error(&e)),
                (None, None) => Err(Status::internal("an empty renew stream answer")),
            }),
            Ok(None) => None,
            Err(s) => Some(Err(s)),
        }
    }

    /// Sends one renewal and waits for its answer.
    pub async fn renew(&mut self, req: pb::RenewRequest) -> Result<pb::RenewStreamResult, Status> {
        self.send(req).await?;
        self.next()
            .await
            .unwrap_or_else(|| Err(Status::unavailable("the renew stream ended")))
    }
}

mod channels;
pub mod elector;
pub mod errors;
pub mod fence;
pub mod heartbeat;
pub mod lock;
mod tenure;

pub use channels::Channels;
