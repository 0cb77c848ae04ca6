//! The bench's operations on etcd, done the way Kubernetes keeps a Lease in
//! etcd: one key `/registry/leases/<namespace>/<name>` whose value is the
//! whole object (about 300 bytes), changed only by transactions that compare
//! the key's mod_revision (Kubernetes' optimistic concurrency on
//! resourceVersion).
//!
//! Client policy: the same as Leasehold's Rust client, so that both systems
//! are reached the same way and the comparison measures the servers. Each
//! connection slot holds one single-endpoint etcd client per member and
//! prefers member `slot % n`; a call that finds its member unreachable or
//! UNAVAILABLE moves on to the next member (which then stays preferred), and
//! after a full round of failures backs off (50 ms doubling to 1 s) until
//! the call's deadline. (etcd-client's own balanced channel keeps sending a
//! share of requests to a dead member; Kubernetes' Go client skips it, as
//! this policy does.)

use super::{code_name, Acquired, OpError, Renewed, WatchStream, LIST_PAGE};
use crate::config::LoadConfig;
use crate::BenchError;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// One connection slot: a client per member, and the member that answered
/// last.
struct Slot {
    members: Vec<Client>,
    preferred: AtomicUsize,
}

/// One client's keepalive streams: etcd-client ties a keeper to one lease
/// id, so there is one stream per lease (with one lease per client, the
/// default of `bench keepalive`, one stream per client as on Leasehold).
pub struct EtcdKeepAlive {
    streams: Vec<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
}

impl EtcdKeepAlive {
    /// Sends a keepalive for lease `k` of this client and waits for its
    /// answer; a TTL of 0 means the lease is gone.
    pub async fn renew(&mut self, k: usize) -> Result<(), OpError> {
        let n = self.streams.len().max(1);
        let (keeper, stream) = &mut self.streams[k % n];
        keeper.keep_alive().await.map_err(|e| etcd_error(&e))?;
        match stream.message().await.map_err(|e| etcd_error(&e))? {
            Some(r) if r.ttl() > 0 => Ok(()),
            Some(_) => Err(OpError::new("LEASE_LOST", "the etcd lease expired")),
            None => Err(OpError::new("UNAVAILABLE", "the keepalive stream ended")),
        }
    }
}

/// Connections to an etcd cluster.
pub struct EtcdTarget {
    slots: Vec<Slot>,
    endpoints: Vec<String>,
    namespace: String,
    /// `/registry/leases/<namespace>/`.
    prefix: String,
    timeout: Duration,
}

fn etcd_error(e: &etcd_client::Error) -> OpError {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            // etcd's messages are stable identifiers ("etcdserver: leader
            // changed"): keep them in the kind so reports tell them apart.
            let msg = s.message().trim_start_matches("etcdserver: ");
            OpError::new(format!("{}/{msg}", code_name(s.code())), s.message())
        }
        etcd_client::Error::TransportError(t) => OpError::new("TRANSPORT", t.to_string()),
        other => OpError::new("CLIENT", other.to_string()),
    }
}

/// Errors after which the request did not reach a leader, or may be tried
/// again: the same class Leasehold's client retries.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Connection options. `require_leader` makes a member without a leader
/// answer at once ("etcdserver: no leader", UNAVAILABLE, which the policy
/// retries) instead of accepting a write that the election will drop, which
/// stalls the caller until etcd's request timeout (5 to 7 s, seen in our
/// failover runs without it). Kubernetes sets it for watches only; setting
/// it here measures etcd at its best.
fn options(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_require_leader(true)
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_millis(500))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
}

/// RFC 3339 with six fractional digits, as Kubernetes' MicroTime.
fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// What is stored under a lease key: a Lease object as JSON, shaped like a
/// kubelet's node lease (holder, duration, renewTime), about 300 bytes, the
/// size of what Kubernetes writes.
fn lease_value(namespace: &str, name: &str, holder: &str, seconds: i32) -> String {
    let now = micro_time(chrono::Utc::now());
    serde_json::json!({
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now[..19].to_string() + "Z",
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "renewTime": now,
        }
    })
    .to_string()
}

/// The stored holder, and whether its tenure has run out (judged on this
/// machine's clock from renewTime + leaseDurationSeconds, as client-go's
/// leader election judges it on its own clock).
fn holder_of(value: &[u8]) -> (String, bool) {
    let v: serde_json::Value = match serde_json::from_slice(value) {
        Ok(v) => v,
        Err(_) => return (String::new(), true),
    };
    let spec = &v["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
    let seconds = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
    let expired = spec["renewTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_none_or(|t| {
            t.with_timezone(&chrono::Utc) + chrono::Duration::seconds(seconds) < chrono::Utc::now()
        });
    (holder, expired)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl EtcdTarget {
    /// Connects `cfg.connections` slots (connections are made lazily, on
    /// first use).
    pub async fn connect(cfg: &LoadConfig) -> Result<Self, BenchError> {
        let n = cfg.endpoints.len().max(1);
        let mut slots = Vec::with_capacity(cfg.connections);
        for i in 0..cfg.connections {
            let mut members = Vec::with_capacity(n);
            for e in &cfg.endpoints {
                let url = format!("http://{}", e.trim_start_matches("http://"));
                let c = Client::connect([url], Some(options(cfg.timeout)))
                    .await
                    .map_err(|e| BenchError::Unavailable(format!("cannot connect to etcd: {e}")))?;
                members.push(c);
            }
            slots.push(Slot {
                members,
                preferred: AtomicUsize::new(i % n),
            });
        }
        Ok(EtcdTarget {
            slots,
            endpoints: cfg.endpoints.clone(),
            namespace: cfg.namespace.clone(),
            prefix: format!("/registry/leases/{}/", cfg.namespace),
            timeout: cfg.timeout,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `f` on connection slot `conn` with the client policy described
    /// above.
    async fn call<T, F, Fut>(&self, conn: usize, f: F) -> Result<T, OpError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let slot = &self.slots[conn % self.slots.len()];
        let n = slot.members.len();
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let start = slot.preferred.load(Ordering::Relaxed);
            for k in 0..n {
                let idx = (start + k) % n;
                match f(slot.members[idx].clone()).await {
                    Ok(v) => {
                        slot.preferred.store(idx, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(e) if retryable(&e) => {
                        if Instant::now() >= deadline {
                            return Err(etcd_error(&e));
                        }
                    }
                    Err(e) => return Err(etcd_error(&e)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OpError::new(
                    "DEADLINE_EXCEEDED",
                    "no member answered in time",
                ));
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Puts `value` if the key's mod_revision is still `rev` (0: if the key
    /// does not exist). Returns the new revision, or `None` if the compare
    /// failed.
    async fn put_if(
        &self,
        conn: usize,
        key: &str,
        rev: u64,
        value: String,
    ) -> Result<Option<u64>, OpError> {
        let cmp = if rev == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, as_i64(rev))
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, None)]);
        let r = self
            .call(conn, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(r.succeeded()
            .then(|| r.header().map(|h| as_u64(h.revision())).unwrap_or(0)))
    }

    /// Grants an etcd lease of `ttl` seconds; returns its id.
    pub async fn grant(&self, conn: usize, ttl: i64) -> Result<i64, OpError> {
        self.call(conn, |mut c| async move { c.lease_grant(ttl, None).await })
            .await
            .map(|r| r.id())
    }

    /// Opens one keepalive stream per lease id on connection `conn`'s
    /// preferred member.
    pub async fn keepalive_open(&self, conn: usize, ids: &[i64]) -> Result<EtcdKeepAlive, OpError> {
        let mut streams = Vec::with_capacity(ids.len());
        for id in ids {
            let id = *id;
            streams.push(
                self.call(conn, |mut c| async move { c.lease_keep_alive(id).await })
                    .await?,
            );
        }
        Ok(EtcdKeepAlive { streams })
    }

    /// See [`super::Target::acquire`].
    pub async fn acquire(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        seconds: i32,
    ) -> Result<Acquired, OpError> {
        let key = self.key(name);
        let value = lease_value(&self.namespace, name, holder, seconds);
        // Create if absent, else read what is there: one round trip.
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let r = self
            .call(conn, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if r.succeeded() {
            return Ok(Acquired::Granted {
                version: r.header().map(|h| as_u64(h.revision())).unwrap_or(0),
            });
        }
        let current = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let Some(kv) = current else {
            // Deleted between the compare and the read: try again next time.
            return Ok(Acquired::Held);
        };
        let (current_holder, expired) = holder_of(kv.value());
        if !(current_holder.is_empty() || current_holder == holder || expired) {
            return Ok(Acquired::Held);
        }
        // Free, ours, or expired: take it with a compare on mod_revision.
        match self
            .put_if(conn, &key, as_u64(kv.mod_revision()), value)
            .await?
        {
            Some(rev) => Ok(Acquired::Granted { version: rev }),
            None => Ok(Acquired::Held),
        }
    }

    /// See [`super::Target::renew`].
    pub async fn renew(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        seconds: i32,
        version: u64,
    ) -> Result<Renewed, OpError> {
        let key = self.key(name);
        let value = lease_value(&self.namespace, name, holder, seconds);
        match self.put_if(conn, &key, version.max(1), value).await? {
            Some(rev) => Ok(Renewed {
                version: rev,
                revision: rev,
            }),
            None => Err(OpError::new(
                "CONFLICT",
                format!("{key} changed since revision {version}"),
            )),
        }
    }

    /// See [`super::Target::release`].
    pub async fn release(
        &self,
        conn: usize,
        name: &str,
        _holder: &str,
        version: u64,
    ) -> Result<(), OpError> {
        let key = self.key(name);
        // client-go releases by writing an empty holder with a 1 s duration.
        let value = lease_value(&self.namespace, name, "", 1);
        match self.put_if(conn, &key, version.max(1), value).await? {
            Some(_) => Ok(()),
            None => Err(OpError::new(
                "CONFLICT",
                format!("{key} changed since revision {version}"),
            )),
        }
    }

    /// See [`super::Target::get`].
    pub async fn get(&self, conn: usize, name: &str) -> Result<(), OpError> {
        let key = self.key(name);
        self.call(conn, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await
        .map(|_| ())
    }

    /// See [`super::Target::list`].
    pub async fn list(&self, conn: usize) -> Result<usize, OpError> {
        let prefix = self.prefix.clone();
        self.call(conn, |mut c| {
            let prefix = prefix.clone();
            async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_limit(LIST_PAGE.into())),
                )
                .await
            }
        })
        .await
        .map(|r| r.kvs().len())
    }

    /// See [`super::Target::watch`]: stream `index` goes to member
    /// `index % n`, as Leasehold's watchers do.
    pub async fn watch(&self, index: usize) -> Result<WatchStream, OpError> {
        let slot = &self.slots[index % self.slots.len()];
        let mut c = slot.members[index % slot.members.len()].clone();
        c.watch(self.prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .map(WatchStream::Etcd)
            .map_err(|e| etcd_error(&e))
    }

    /// See [`super::Target::leader`]: the 1-based position in `--endpoints`
    /// of the member whose status names itself leader.
    pub async fn leader(&self) -> Result<u64, OpError> {
        let mut last = OpError::new("NO_LEADER", "no endpoint reports itself leader");
        for (i, ep) in self.endpoints.iter().enumerate() {
            let url = format!("http://{}", ep.trim_start_matches("http://"));
            let status = async {
                let mut c = Client::connect([url], Some(options(Duration::from_secs(2)))).await?;
                c.status().await
            }
            .await;
            match status {
                Ok(s) if s.header().is_some_and(|h| h.member_id() == s.leader()) => {
                    return Ok(i as u64 + 1)
                }
                Ok(_) => {}
                Err(e) => last = etcd_error(&e),
            }
        }
        Err(last)
    }
}

/// See [`WatchStream::next`].
pub async fn next_event(
    s: &mut etcd_client::WatchStream,
) -> Result<Option<(Instant, Vec<u64>)>, OpError> {
    match s.message().await {
        Ok(Some(r)) => {
            let at = Instant::now();
            Ok(Some((
                at,
                r.events()
                    .iter()
                    .filter_map(|e| e.kv().map(|kv| as_u64(kv.mod_revision())))
                    .collect(),
            )))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(etcd_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_are_about_300_bytes_and_parse_back() {
        let v = lease_value("kube-node-lease", "node-000123", "node-000123", 40);
        assert!((270..340).contains(&v.len()), "{} bytes: {v}", v.len());
        let (holder, expired) = holder_of(v.as_bytes());
        assert_eq!(holder, "node-000123");
        assert!(!expired);
        let (holder, expired) = holder_of(lease_value("ns", "a", "", 0).as_bytes());
        assert_eq!(holder, "");
        assert!(expired || holder.is_empty());
    }
}
