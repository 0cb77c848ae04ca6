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
//! incarnation of itself (`api::raft_service`), and the sender's format
//! version, which the target refuses unless it is its own. A refusal for
//! another reason than the network (FAILED_PRECONDITION: another cluster,
//! incarnation or format version) is logged here too, at most every 10 s,
//! since openraft only retries it.
//!
//! An unreachable peer is retried at the heartbeat's pace for a few
//! seconds, then every half minimum election timeout ([`Retry`]), instead
//! of openraft's 500 ms: a restarted follower must hear from the leader
//! before its own election timer fires.

use crate::client::Channels;
use crate::proto::internal::raft_client::RaftClient;
use crate::proto::internal::RaftPayload;
use crate::store::node_meta::NodeMeta;
use crate::types::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
    meta: NodeMeta,
    format_version: u32,
    retry: Retry,
}

impl Network {
    /// A factory sharing `channels`, stamping requests with `meta`'s
    /// cluster id and [`crate::store::FORMAT_VERSION`].
    pub fn new(channels: Channels, meta: NodeMeta) -> Self {
        Network {
            channels,
            meta,
            format_version: crate::store::FORMAT_VERSION,
            retry: Retry::default(),
        }
    }

    /// Retries unreachable peers at `retry`'s pace.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Stamps format version `v` instead (the debug-only
    /// `--fault-format-version`, which plays another build).
    pub fn with_format_version(mut self, v: u32) -> Self {
        self.format_version = v;
        self
    }

    /// Asks member `target` to campaign at once (`TimeoutNow`), waiting at
    /// most `timeout` for its answer. A peer built before the call existed
    /// answers UNIMPLEMENTED.
    pub async fn timeout_now(
        &self,
        target: NodeId,
        member: &Member,
        timeout: Duration,
    ) -> Result<(), tonic::Status> {
        let channel = self
            .channels
            .get(&member.addr)
            .map_err(|e| tonic::Status::unavailable(format!("{e}")))?;
        let mut request = tonic::Request::new(payload(
            &self.meta,
            self.format_version,
            target,
            member,
            Vec::new(),
        ));
        request.set_timeout(timeout);
        RaftClient::new(channel).timeout_now(request).await?;
        Ok(())
    }
}

/// A request to member `target`, stamped with who it is for and who sends.
fn payload(
    meta: &NodeMeta,
    format_version: u32,
    target: NodeId,
    member: &Member,
    data: Vec<u8>,
) -> RaftPayload {
    RaftPayload {
        data,
        cluster_id: meta.cluster_id().unwrap_or_default(),
        to_id: target,
        to_incarnation: member.incarnation.clone(),
        format_version,
    }
}

/// Lets a repeated warning through at most once per interval: a refusing
/// peer is retried on every heartbeat, and one line in ten seconds says as
/// much as two hundred.
pub struct Throttle {
    every_ms: u64,
    /// When a warning last went through, ms since the Unix epoch.
    last_ms: AtomicU64,
}

impl Throttle {
    /// At most once per `every_ms` milliseconds.
    pub const fn new(every_ms: u64) -> Throttle {
        Throttle {
            every_ms,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether a warning may go through now (and then not again for the
    /// interval).
    pub fn ready(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Logs a peer's refusal, at most every 10 s.
fn warn_refused(target: NodeId, status: &tonic::Status) {
    static REFUSALS: Throttle = Throttle::new(10_000);
    if REFUSALS.ready() {
        tracing::warn!(
            peer = target,
            "peer refused a raft message: {}",
            status.message()
        );
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
            format_version: self.format_version,
            retry: self.retry,
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    member: Member,
    channels: Channels,
    meta: NodeMeta,
    format_version: u32,
    retry: Retry,
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
        let mut request = tonic::Request::new(payload(
            &self.meta,
            self.format_version,
            self.target,
            &self.member,
            data,
        ));
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
            code => {
                if code == tonic::Code::FailedPrecondition {
                    warn_refused(self.target, &status);
                }
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// For how long after a peer became unreachable the leader retries it at
/// the fast pace (see [`Retry`]).
const FAST_RETRIES_FOR: Duration = Duration::from_secs(5);

/// How long the leader waits before trying an unreachable peer again.
///
/// openraft's default is 500 ms, longer than an election timeout: a
/// follower being restarted (a rolling restart) would then hear nothing for
/// up to 500 ms after it listens again, time out, campaign in a higher term
/// and depose the leader, which costs an election per follower restart.
/// So the leader retries every heartbeat interval for the first
/// [`FAST_RETRIES_FOR`] (a restart), then every half minimum election
/// timeout: a node back after a longer outage still hears from the leader
/// before its timer fires, and a dead peer costs openraft's warnings at
/// that pace rather than at the heartbeat's.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The interval at first.
    pub fast: Duration,
    /// The interval after [`FAST_RETRIES_FOR`].
    pub slow: Duration,
}

impl Retry {
    /// The intervals for a heartbeat of `heartbeat_ms` and a minimum
    /// election timeout of `election_min_ms`.
    pub fn for_timing(heartbeat_ms: u64, election_min_ms: u64) -> Retry {
        let fast = Duration::from_millis(heartbeat_ms.max(1));
        Retry {
            fast,
            slow: Duration::from_millis(election_min_ms / 2).max(fast),
        }
    }

    fn backoff(self) -> Backoff {
        let fast_tries = (FAST_RETRIES_FOR.as_millis() / self.fast.as_millis().max(1)) as usize;
        Backoff::new(std::iter::repeat_n(self.fast, fast_tries).chain(std::iter::repeat(self.slow)))
    }
}

impl Default for Retry {
    fn default() -> Self {
        let t = super::node::RaftTiming::default();
        Retry::for_timing(t.heartbeat_ms, t.election_timeout_min_ms)
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

    fn backoff(&self) -> Backoff {
        self.retry.backoff()
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
    fn unreachable_peers_are_retried_fast_then_within_half_an_election_timeout() {
        let r = Retry::for_timing(50, 200);
        let waits: Vec<Duration> = r.backoff().take(102).collect();
        assert!(waits[..100].iter().all(|d| *d == Duration::from_millis(50)));
        assert_eq!(waits[100..], [Duration::from_millis(100); 2]);
        // Never slower than the heartbeat, whatever the timing.
        let r = Retry::for_timing(50, 60);
        assert_eq!(r.slow, Duration::from_millis(50));
    }

    #[test]
    fn a_throttled_warning_goes_through_once_per_interval() {
        let t = Throttle::new(60_000);
        assert!(t.ready(), "the first one goes through");
        assert!(!t.ready(), "the next within the interval does not");
        let t = Throttle::new(0);
        assert!(t.ready() && t.ready(), "no interval: every one");
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
