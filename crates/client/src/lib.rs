//! A Rust client for Leasehold with endpoint failover.
//!
//! Holds one lazily connected channel per endpoint. A call goes to the
//! endpoint that answered last, or to the leader once a node that forwarded
//! a call named it (`x-leasehold-leader`) and it is one of the endpoints:
//! writes then skip the extra hop through a follower. When it is unreachable or answers
//! UNAVAILABLE (no leader known, leader unreachable, node shutting down), or
//! its connection drops the call (CANCELLED, a node stopping), the
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
//!
//! [`Client::with_options`] adds TLS ([`ClientTls`]: the CA that signed the
//! nodes' certificates, optionally a client certificate) and a bearer token,
//! sent as `authorization: Bearer <token>` on every request, unary or
//! stream. A token is refused without TLS. A certificate problem is not
//! retried until the deadline: when every endpoint fails it, the call ends
//! ([`is_tls_refusal`] tells such failures apart).

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

/// A status's message followed by the errors beneath it that the message
/// does not already include: tonic's status for a failed connection says
/// "transport error" or "error trying to connect", and what went wrong (a
/// refused connection, a certificate the client does not trust) is in its
/// source chain.
pub fn status_text(s: &Status) -> String {
    let mut out = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            if out.is_empty() || out == "transport error" {
                out = text;
            } else if text != "transport error" {
                out.push_str(": ");
                out.push_str(&text);
            }
        }
        source = e.source();
    }
    out
}

/// Whether `s` is what a client gets when a TLS connection could not be set
/// up: the server's certificate is not trusted here (UNAVAILABLE, "invalid
/// peer certificate"), or the server refused this client's certificate. In
/// TLS 1.3 the client finishes its side of the handshake before the server
/// checks the certificate, so that refusal reaches the call later, as a
/// fatal alert on the connection (UNKNOWN, "received fatal alert:
/// CertificateRequired") or as a cancelled call. Retrying cannot help until
/// a certificate, a key or a CA changes. A CANCELLED call counts whatever
/// its message: tonic gives no more than "operation was canceled".
pub fn is_tls_refusal(s: &Status) -> bool {
    match s.code() {
        Code::Cancelled => true,
        Code::Unavailable | Code::Unknown => {
            let m = status_text(s).to_ascii_lowercase();
            ["tls", "certificate", "handshake", "fatal alert"]
                .iter()
                .any(|w| m.contains(w))
        }
        _ => false,
    }
}

/// Whether an UNAVAILABLE answer says the TLS handshake failed on a
/// certificate: ours refused by the server (a fatal alert) or the
/// server's refused by us. Unlike a node that is down or electing, that does not heal by
/// itself, so a round of endpoints that all fail this way ends the call at
/// once instead of backing off until the deadline. Broken or timed-out
/// handshakes (a node killed or paused mid-handshake) are not in it.
fn is_certificate_failure(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("received fatal alert")
}

/// Default deadline of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a Leasehold cluster.
pub struct Client {
    endpoints: Vec<String>,
    channels: Channels,
    /// The bearer token, put on every request this client builds.
    auth: Authorization,
    preferred: AtomicUsize,
    timeout: Duration,
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (`host:port` each),
    /// in plaintext and without a token.
    pub fn new(endpoints: Vec<String>) -> Result<Self, Status> {
        Self::with_options(endpoints, ConnectOptions::default())
    }

    /// A client of the cluster reachable at `endpoints`, with TLS and a
    /// bearer token as `opts` say. The TLS files are checked here (a wrong
    /// or empty PEM, a key that is not the certificate's), so a mistake is
    /// an `INVALID_ARGUMENT` now rather than a failed handshake on every
    /// call; a token without TLS is refused.
    pub fn with_options(endpoints: Vec<String>, opts: ConnectOptions) -> Result<Self, Status> {
        if let Some(tls) = &opts.tls {
            tls.validate().map_err(Status::invalid_argument)?;
        }
        let channels = Channels::with_tls(opts.tls_config());
        Self::with_channels(endpoints, channels, opts.token)
    }

    /// A client that calls `endpoints` through `channels`, shared with
    /// whoever else uses them (a node's own client shares its peer channels,
    /// so it presents the node's certificate and follows its reloads), with
    /// `token` on every request. A token is refused unless the channels use
    /// TLS.
    pub fn with_channels(
        endpoints: Vec<String>,
        channels: Channels,
        token: Option<String>,
    ) -> Result<Self, Status> {
        let tls = channels.is_tls();
        if let Some(e) = endpoints
            .iter()
            .find(|e| !tls && e.trim().starts_with("https://"))
        {
            return Err(Status::invalid_argument(format!(
                "endpoint {e:?} asks for TLS, but no CA to verify the server with was given \
                 (--cacert)"
            )));
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| connect::strip_scheme(e).to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Status::invalid_argument(
                "invalid endpoints: at least one HOST:PORT is required",
            ));
        }
        let auth = Authorization::new(token.as_deref(), tls)?;
        Ok(Client {
            endpoints,
            channels,
            auth,
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
            let mut all_certificate_failures = true;
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
                            "invalid endpoint {endpoint:?}: {}",
                            error_chain(&e)
                        )))
                    }
                };
                let mut req = Request::new(msg.clone());
                req.set_timeout(remaining);
                self.auth.apply(&mut req);
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
                    // A call the connection dropped (CANCELLED from the
                    // transport, no server detail) is what a node that is
                    // stopping gives the calls it did not take: the next
                    // endpoint is tried. Retrying is as safe as after
                    // UNAVAILABLE: writes carry request ids and a renewal
                    // may apply twice. With TLS it is also how a refused
                    // client certificate shows, so a round of nothing else
                    // ends the call as certificate failures do.
                    Err(s) if s.code() == Code::Cancelled && s.details().is_empty() => {
                        tracing::debug!(%endpoint, "cancelled: {}", status_text(&s));
                        last = s;
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        let text = status_text(&s);
                        tracing::debug!(%endpoint, "unavailable: {text}");
                        all_certificate_failures &= is_certificate_failure(&text);
                        last = Status::with_details(
                            Code::Unavailable,
                            format!("{endpoint}: {text}"),
                            s.details().to_vec().into(),
                        );
                    }
                    Err(s) => return Err(s),
                }
            }
            if all_certificate_failures {
                return Err(last);
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
        // Consecutive certificate failures: as many as endpoints means
        // every endpoint refused, which waiting does not heal (see `call`).
        let mut certificate_failures = 0usize;
        loop {
            let endpoint = &self.endpoints[idx];
            let channel = self.channels.get(endpoint).map_err(|e| {
                Status::invalid_argument(format!(
                    "invalid endpoint {endpoint:?}: {}",
                    error_chain(&e)
                ))
            })?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            // No deadline on the call: it would end the stream.
            let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            self.auth.apply(&mut req);
            match leases_client(channel).renew_stream(req).await {
                Ok(r) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(RenewStream {
                        tx,
                        rx: r.into_inner(),
                    });
                }
                Err(s) if s.code() == Code::Unavailable => {
                    if is_certificate_failure(&status_text(&s)) {
                        certificate_failures += 1;
                        if certificate_failures >= n {
                            return Err(s);
                        }
                    } else {
                        certificate_failures = 0;
                    }
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
        let channel = self.channels.get(addr).map_err(|e| {
            Status::invalid_argument(format!("invalid endpoint {addr:?}: {}", error_chain(&e)))
        })?;
        // No deadline: a watch lasts until the caller drops it.
        let mut req = Request::new(req);
        self.auth.apply(&mut req);
        Ok(leases_client(channel).watch(req).await?.into_inner())
    }

    /// Opens a backup stream (`Cluster.Snapshot`) on the node at `addr`:
    /// one of the endpoints, or the leader a follower named in its
    /// NOT_LEADER answer. No deadline on the call (a large backup takes as
    /// long as it takes); the caller bounds each wait for a message.
    pub async fn snapshot_on(
        &self,
        addr: &str,
    ) -> Result<tonic::Streaming<pb::SnapshotChunk>, Status> {
        let channel = self.channels.get(addr).map_err(|e| {
            Status::invalid_argument(format!("invalid endpoint {addr:?}: {}", error_chain(&e)))
        })?;
        let mut req = Request::new(pb::SnapshotRequest {});
        self.auth.apply(&mut req);
        Ok(ClusterClient::new(channel)
            .snapshot(req)
            .await?
            .into_inner())
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

#[cfg(feature = "clap")]
mod args;
mod channels;
mod connect;
pub mod elector;
pub mod errors;
pub mod fence;
pub mod heartbeat;
pub mod lock;
mod tenure;
#[cfg(test)]
mod tls_tests;

#[cfg(feature = "clap")]
pub use args::ConnectArgs;
pub use channels::{endpoint, Channels};
pub use connect::{
    error_chain, Authorization, ClientTls, ConnectOptions, AUTHORIZATION, TLS_HANDSHAKE_TIMEOUT,
};
