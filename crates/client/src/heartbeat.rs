//! Node heartbeats: a [`Heartbeat`] keeps one lease per node alive, and a
//! [`NodeMonitor`] tells which nodes are alive.
//!
//! This is Kubernetes' node-lease scheme (kubelet and node controller):
//! every node holds a lease in `kube-node-lease` named after itself, with a
//! 40 s duration, renewed about every 10 s. A node whose lease lapsed is
//! gone. In Leasehold the cluster itself records the lapse: a lease whose
//! holder stopped renewing gets an `EXPIRED` watch event and
//! `status.expired = true` within about a second of `expireTime`, decided
//! with the leader's clock. The monitor therefore needs no clock of its own:
//! it lists the namespace once and then follows the watch.

use super::elector::jittered;
use super::errors::LeaseClientError;
use super::fence::validity_deadline;
use super::tenure::Holder;
use super::Client;
use chrono::{DateTime, Utc};
use leasehold_proto::v1 as pb;
use leasehold_proto::wire::{error_info, reason};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::{Code, Status};

/// Kubernetes' namespace for node leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How a node heartbeats.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Namespace of the node leases. Default `kube-node-lease`.
    pub namespace: String,
    /// The node's name: the lease name and (by default) the holder.
    pub node: String,
    /// Holder identity. Default: the node name (as the kubelet does), so a
    /// restarted heartbeat for the same node continues the same lease.
    pub holder: String,
    /// Lease duration, whole seconds. Default 40 s.
    pub duration: Duration,
    /// Time between renewals. Default 10 s (a quarter of the duration, so
    /// three renewals can fail before the node is considered gone).
    pub renew_interval: Duration,
    /// Renewals wait `renew_interval × (1 + r × (jitter_factor − 1))`.
    /// Default 1.04, like the kubelet's 4 %.
    pub jitter_factor: f64,
    /// Release the lease when the heartbeat stops, so monitors see the node
    /// leave at once instead of after the duration. Default false: a node
    /// that stops is judged by expiry, as in Kubernetes.
    pub release_on_stop: bool,
}

impl HeartbeatConfig {
    /// Kubelet defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        let node = node.into();
        HeartbeatConfig {
            namespace: NODE_LEASE_NAMESPACE.into(),
            holder: node.clone(),
            node,
            duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            jitter_factor: 1.04,
            release_on_stop: false,
        }
    }

    /// Checks the configuration: names set, a whole number of seconds for
    /// the lease, and renewals frequent enough to keep it.
    pub fn validate(&self) -> Result<(), LeaseClientError> {
        let invalid = |field: &str, reason: String| {
            Err(LeaseClientError::Invalid {
                field: field.into(),
                reason,
            })
        };
        if self.namespace.is_empty() {
            return invalid("namespace", "must not be empty".into());
        }
        if self.node.is_empty() {
            return invalid("node", "must not be empty".into());
        }
        if self.holder.is_empty() {
            return invalid("holder", "must not be empty".into());
        }
        if self.duration.is_zero()
            || self.duration.subsec_nanos() != 0
            || self.duration.as_secs() > i32::MAX as u64
        {
            return invalid(
                "duration",
                format!(
                    "{:?} must be a positive whole number of seconds",
                    self.duration
                ),
            );
        }
        if !self.jitter_factor.is_finite() || self.jitter_factor < 1.0 {
            return invalid(
                "jitterFactor",
                format!("{} must be a number >= 1.0", self.jitter_factor),
            );
        }
        let longest = self.renew_interval.mul_f64(self.jitter_factor);
        if self.renew_interval.is_zero() || longest * 2 > self.duration {
            return invalid(
                "renewInterval",
                format!(
                    "{:?} (up to {longest:?} with jitter) must be positive and at most half the duration ({:?}), so that one failed renewal does not lose the lease",
                    self.renew_interval, self.duration
                ),
            );
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What a heartbeat knows about its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatStatus {
    /// The current tenure's fencing token, if the lease is held.
    pub fencing_token: Option<u64>,
    /// When the last successful acquire or renew was sent.
    pub last_renewed: Option<Instant>,
    /// Until when the node may consider its lease held.
    pub valid_until: Option<Instant>,
    /// Renewals that failed since the last success.
    pub consecutive_failures: u32,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A cloneable view of a running heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatHandle {
    status: Arc<Mutex<HeartbeatStatus>>,
}

impl HeartbeatHandle {
    /// A copy of the current status.
    pub fn status(&self) -> HeartbeatStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the lease is held and within its validity deadline.
    pub fn is_alive(&self) -> bool {
        self.status()
            .valid_until
            .is_some_and(|v| Instant::now() < v)
    }
}

/// Keeps a node's lease alive. See the module documentation.
pub struct Heartbeat {
    client: Arc<Client>,
    config: HeartbeatConfig,
    /// The node lease and holder of `config`, which sends the requests.
    holder: Holder,
    status: Arc<Mutex<HeartbeatStatus>>,
    token: Option<u64>,
}

/// First retry delay after a failed renewal; doubles up to the renew
/// interval. Retrying sooner than the interval matters: with the defaults
/// only three intervals fit in the lease.
const FIRST_RETRY: Duration = Duration::from_millis(200);

impl Heartbeat {
    /// A heartbeat with `config` (validated).
    pub fn new(client: Arc<Client>, config: HeartbeatConfig) -> Result<Self, LeaseClientError> {
        config.validate()?;
        let holder = Holder::new(&config.namespace, &config.node, &config.holder);
        Ok(Heartbeat {
            client,
            config,
            holder,
            status: Arc::default(),
            token: None,
        })
    }

    /// A handle to the heartbeat's status.
    pub fn handle(&self) -> HeartbeatHandle {
        HeartbeatHandle {
            status: self.status.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HeartbeatStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews (or acquires) once. A lost lease is re-acquired in the same
    /// call. Returns the fencing token held afterwards.
    pub async fn beat_once(&mut self) -> Result<u64, LeaseClientError> {
        let result = self.beat().await;
        let mut st = self.lock();
        match &result {
            Ok((token, sent)) => {
                st.fencing_token = Some(*token);
                st.last_renewed = Some(*sent);
                st.valid_until = Some(validity_deadline(*sent, self.config.duration));
                st.consecutive_failures = 0;
                st.last_error = None;
            }
            Err(e) => {
                st.fencing_token = self.token;
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                st.last_error = Some(e.to_string());
            }
        }
        result.map(|(t, _)| t)
    }

    async fn beat(&mut self) -> Result<(u64, Instant), LeaseClientError> {
        if let Some(token) = self.token {
            let sent = Instant::now();
            let r = self.client.renew(self.holder.renew_request(token)).await;
            match r.map_err(LeaseClientError::from) {
                Ok(_) => return Ok((token, sent)),
                Err(LeaseClientError::Lost { reason }) => {
                    tracing::warn!(lease = %self.holder, %reason, "node lease lost; acquiring it again");
                    self.token = None;
                }
                Err(LeaseClientError::NotFound) => {
                    tracing::warn!(lease = %self.holder, "node lease was deleted; creating it again");
                    self.token = None;
                }
                Err(e) => return Err(e),
            }
        }
        let sent = Instant::now();
        let r = self
            .client
            .acquire(self.holder.acquire_request(self.config.duration_seconds()))
            .await
            .map_err(LeaseClientError::from)?;
        if r.newly_acquired {
            tracing::info!(lease = %self.holder, token = r.fencing_token, "node lease acquired");
        }
        self.token = Some(r.fencing_token);
        Ok((r.fencing_token, sent))
    }

    /// Heartbeats until `cancel` resolves. Failed renewals are retried with
    /// backoff (200 ms doubling up to the renew interval); if the lease is
    /// held by another holder, the heartbeat waits for it. Returns an error
    /// only for what retrying cannot fix (an invalid node name, say).
    pub async fn run<F>(mut self, cancel: F) -> Result<(), LeaseClientError>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(cancel);
        let mut backoff = FIRST_RETRY;
        let result = loop {
            let wait = tokio::select! {
                biased;
                _ = &mut cancel => break Ok(()),
                r = self.beat_once() => match r {
                    Ok(_) => {
                        backoff = FIRST_RETRY;
                        jittered(self.config.renew_interval, self.config.jitter_factor, &self.config.node)
                    }
                    Err(e @ LeaseClientError::Invalid { .. }) => break Err(e),
                    Err(LeaseClientError::Held { holder, remaining }) => {
                        tracing::warn!(lease = %self.holder, %holder, "node lease is held by another holder; waiting {remaining:?}");
                        remaining.clamp(FIRST_RETRY, self.config.renew_interval)
                    }
                    Err(e) => {
                        tracing::warn!(lease = %self.holder, "heartbeat failed, retrying in {backoff:?}: {e}");
                        let w = backoff;
                        backoff = (backoff * 2).min(self.config.renew_interval);
                        w
                    }
                },
            };
            tokio::select! {
                biased;
                _ = &mut cancel => break Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        };
        if self.config.release_on_stop {
            self.release().await;
        }
        result
    }

    async fn release(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let release = self.holder.release(&self.client, token);
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.holder, "node lease released"),
            Ok(Ok(false)) => {
                tracing::info!(lease = %self.holder, "node lease was no longer held; nothing to release")
            }
            Ok(Err(e)) => tracing::warn!(lease = %self.holder, "release failed: {e}"),
            Err(_) => tracing::warn!(lease = %self.holder, "release timed out"),
        }
        let mut st = self.lock();
        st.fencing_token = None;
        st.valid_until = None;
    }
}

/// One node as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The lease's holder (empty once released).
    pub holder: String,
    /// The last renewal, as stamped by the cluster.
    pub renew_time: Option<DateTime<Utc>>,
    /// The cluster recorded that the holder stopped renewing.
    pub expired: bool,
    /// The tenure's fencing token (0 without a holder).
    pub fencing_token: u64,
    /// The lease duration.
    pub lease_duration_seconds: i32,
}

impl NodeState {
    /// Whether the node is alive: its lease has a holder that has not
    /// expired.
    pub fn alive(&self) -> bool {
        !self.holder.is_empty() && !self.expired
    }

    fn from_lease(l: &pb::Lease) -> Option<(String, NodeState)> {
        let meta = l.metadata.as_ref()?;
        let spec = l.spec.clone().unwrap_or_default();
        let status = l.status.clone().unwrap_or_default();
        let renew_time = DateTime::parse_from_rfc3339(&spec.renew_time)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Some((
            meta.name.clone(),
            NodeState {
                holder: spec.holder_identity,
                renew_time,
                expired: status.expired,
                fencing_token: status.fencing_token,
                lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            },
        ))
    }
}

/// The monitor's view of every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// The cluster revision the view reflects.
    pub revision: u64,
    /// False until the initial list arrived, and while the monitor is
    /// re-listing after losing its place in the history.
    pub synced: bool,
    /// Node name -> state.
    pub nodes: BTreeMap<String, NodeState>,
}

impl NodeSnapshot {
    /// Names of the alive nodes.
    pub fn alive(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Names of the nodes that are not alive (expired or released).
    pub fn gone(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.alive())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// How long a watch may stay silent (it gets a progress notification every
/// second) before the monitor resumes on another endpoint.
const WATCH_STALL: Duration = Duration::from_secs(5);

/// Follows the node leases of a namespace. See the module documentation.
///
/// Lists the namespace once for the initial state, then watches from the
/// list's revision + 1. When the watched node goes away it resumes on the
/// next endpoint from the last revision it saw + 1 (progress notifications
/// keep that current even when nothing changes), so no change is missed or
/// applied twice; if that revision left the retained history it lists
/// again.
pub struct NodeMonitor {
    client: Arc<Client>,
    namespace: String,
    tx: watch::Sender<NodeSnapshot>,
}

impl NodeMonitor {
    /// A monitor of the node leases in `namespace`.
    pub fn new(client: Arc<Client>, namespace: impl Into<String>) -> Self {
        NodeMonitor {
            client,
            namespace: namespace.into(),
            tx: watch::Sender::new(NodeSnapshot::default()),
        }
    }

    /// A receiver that sees every new snapshot (`changed().await`), so
    /// callers need not poll.
    pub fn subscribe(&self) -> watch::Receiver<NodeSnapshot> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.tx.borrow().clone()
    }

    /// Follows the namespace until `cancel` resolves. Returns an error only
    /// for what retrying cannot fix (an invalid namespace).
    pub async fn run<F>(self, cancel: F) -> Result<(), LeaseClientError>
    where
        F: Future<Output = ()>,
    {
        tokio::select! {
            biased;
            _ = cancel => Ok(()),
            r = self.follow() => r,
        }
    }

    async fn list_all(&self) -> Result<(BTreeMap<String, NodeState>, u64), LeaseClientError> {
        let mut nodes = BTreeMap::new();
        let mut token = String::new();
        let mut revision = 0;
        loop {
            let r = self
                .client
                .list(pb::ListRequest {
                    namespace: self.namespace.clone(),
                    limit: 1000,
                    continue_token: token,
                    ..Default::default()
                })
                .await?;
            // Pages may come from different revisions; resuming the watch
            // from the first page's revision + 1 replays whatever changed
            // after it, so the later pages' differences are corrected.
            if revision == 0 {
                revision = r.revision;
            }
            nodes.extend(r.items.iter().filter_map(NodeState::from_lease));
            token = r.continue_token;
            if token.is_empty() {
                return Ok((nodes, revision));
            }
        }
    }

    async fn follow(&self) -> Result<(), LeaseClientError> {
        let n = self.client.endpoints().len().max(1);
        let mut endpoint = 0usize;
        let mut failures = 0u32;
        'relist: loop {
            self.tx.send_modify(|s| s.synced = false);
            let (nodes, revision) = match self.list_all().await {
                Ok(r) => r,
                Err(e @ LeaseClientError::Invalid { .. }) => return Err(e),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(namespace = %self.namespace, "node list failed: {e}");
                    pause(failures, n).await;
                    continue;
                }
            };
            self.tx.send_replace(NodeSnapshot {
                revision,
                synced: true,
                nodes,
            });
            let mut last = revision;
            loop {
                let req = pb::WatchRequest {
                    namespace: self.namespace.clone(),
                    start_revision: last + 1,
                    progress_notify: true,
                    progress_interval_ms: 1_000,
                    ..Default::default()
                };
                let opened =
                    tokio::time::timeout(WATCH_STALL, self.client.watch_on(endpoint, req)).await;
                let status = match opened {
                    Ok(Ok(mut stream)) => loop {
                        // Progress notifications arrive every second; a
                        // silent stream means a stalled (paused, cut off)
                        // node: resume elsewhere.
                        match tokio::time::timeout(WATCH_STALL, stream.message()).await {
                            Ok(Ok(Some(e))) => {
                                failures = 0;
                                last = last.max(e.revision);
                                self.apply(&e);
                            }
                            Ok(Ok(None)) => {
                                break Status::unavailable("watch stream ended");
                            }
                            Ok(Err(s)) => break s,
                            Err(_) => {
                                break Status::unavailable(format!(
                                    "no progress notification for {WATCH_STALL:?}"
                                ))
                            }
                        }
                    },
                    Ok(Err(s)) => s,
                    Err(_) => {
                        Status::unavailable(format!("watch not opened within {WATCH_STALL:?}"))
                    }
                };
                match status.code() {
                    Code::InvalidArgument => return Err(status.into()),
                    Code::OutOfRange => {
                        tracing::warn!(namespace = %self.namespace, "watch history trimmed past revision {}; listing again", last + 1);
                        continue 'relist;
                    }
                    _ => {}
                }
                if let Some((r, meta)) = error_info(&status) {
                    if r == reason::WATCHER_TOO_SLOW {
                        if let Some(resume) = meta
                            .get("resumeRevision")
                            .and_then(|v| v.parse::<u64>().ok())
                        {
                            last = resume.saturating_sub(1);
                        }
                    }
                }
                tracing::debug!(namespace = %self.namespace, endpoint = %self.client.endpoints().get(endpoint).map(String::as_str).unwrap_or("?"), "watch interrupted, resuming from {}: {}", last + 1, status.message());
                failures += 1;
                endpoint = (endpoint + 1) % n;
                pause(failures, n).await;
            }
        }
    }

    fn apply(&self, e: &pb::WatchEvent) {
        use pb::watch_event::Type;
        let kind = Type::try_from(e.r#type).unwrap_or(Type::Unspecified);
        self.tx.send_modify(|s| {
            s.revision = s.revision.max(e.revision);
            let Some((name, state)) = e.lease.as_ref().and_then(NodeState::from_lease) else {
                return;
            };
            match kind {
                Type::Added | Type::Modified | Type::Expired => {
                    s.nodes.insert(name, state);
                }
                Type::Deleted => {
                    s.nodes.remove(&name);
                }
                Type::Progress | Type::Unspecified => {}
            }
        });
    }
}

/// No wait while other endpoints are untried; then 50 ms doubling to 1 s.
async fn pause(failures: u32, endpoints: usize) {
    if (failures as usize) < endpoints {
        return;
    }
    let ms = 50u64.saturating_mul(1 << failures.min(5)).min(1_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_defaults_are_valid() {
        let c = HeartbeatConfig::new("node-1");
        assert_eq!(c.namespace, "kube-node-lease");
        assert_eq!(c.holder, "node-1");
        assert_eq!(c.duration, Duration::from_secs(40));
        assert_eq!(c.renew_interval, Duration::from_secs(10));
        c.validate().unwrap();
    }

    #[test]
    fn renewals_must_fit_twice_in_the_lease() {
        let mut c = HeartbeatConfig::new("node-1");
        c.renew_interval = Duration::from_secs(30);
        assert!(matches!(
            c.validate(),
            Err(LeaseClientError::Invalid { field, .. }) if field == "renewInterval"
        ));
        let mut c = HeartbeatConfig::new("node-1");
        c.duration = Duration::from_millis(40_500);
        assert!(c.validate().is_err());
        let mut c = HeartbeatConfig::new("");
        c.holder = "x".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn node_state_from_lease_and_liveness() {
        let lease = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "kube-node-lease".into(),
                name: "n1".into(),
                ..Default::default()
            }),
            spec: Some(pb::LeaseSpec {
                holder_identity: "n1".into(),
                renew_time: "2024-05-01T12:00:00.123456Z".into(),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
            status: Some(pb::LeaseStatus {
                fencing_token: 5,
                expired: false,
                ..Default::default()
            }),
        };
        let (name, st) = NodeState::from_lease(&lease).unwrap();
        assert_eq!(name, "n1");
        assert!(st.alive());
        assert_eq!(
            st.renew_time.map(|t| t.timestamp_micros()),
            Some(1_714_564_800_123_456)
        );
        let expired = NodeState {
            expired: true,
            ..st.clone()
        };
        assert!(!expired.alive());
        let released = NodeState {
            holder: String::new(),
            ..st
        };
        assert!(!released.alive());
    }
}
