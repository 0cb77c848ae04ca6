//! The bench's operations on a Leasehold cluster, through the same Rust
//! client the CLI uses (endpoint failover, one request id per write, retries
//! of UNAVAILABLE within the call's deadline), so that the numbers are what
//! an application would see.

use super::{code_name, Acquired, OpError, Renewed, WatchStream, LIST_PAGE};
use crate::config::LoadConfig;
use crate::BenchError;
use leasehold_client::Client;
use leasehold_proto::v1 as pb;
use leasehold_proto::wire::{error_info, reason};
use std::time::Instant;
use tonic::Code;

/// Connections to a Leasehold cluster.
pub struct LeaseholdTarget {
    /// One client (so one TCP connection per endpoint) per connection slot.
    /// Slot `i` prefers endpoint `i % n`, so the slots spread over the
    /// nodes as independent applications would.
    clients: Vec<Client>,
    namespace: String,
}

/// One client's renew stream.
pub struct LeaseholdKeepAlive {
    stream: leasehold_client::RenewStream,
    namespace: String,
}

impl LeaseholdKeepAlive {
    /// Renews `name` (held by a holder of the same name) with `token` over
    /// the stream and waits for the answer.
    pub async fn renew(&mut self, name: &str, token: u64) -> Result<(), OpError> {
        self.stream
            .renew(pb::RenewRequest {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                holder: name.to_string(),
                fencing_token: token,
                request_id: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| status_error(&s))
    }
}

/// `CODE/REASON` of a status.
pub fn status_error(s: &tonic::Status) -> OpError {
    let kind = match error_info(s) {
        Some((r, _)) => format!("{}/{}", code_name(s.code()), r),
        None => code_name(s.code()).to_string(),
    };
    OpError::new(kind, s.message())
}

fn is_held(s: &tonic::Status) -> bool {
    s.code() == Code::FailedPrecondition
        && error_info(s).is_some_and(|(r, _)| r == reason::LEASE_HELD)
}

impl LeaseholdTarget {
    /// Clients of `cfg.endpoints`, `cfg.connections` of them.
    pub fn new(cfg: &LoadConfig) -> Result<Self, BenchError> {
        let n = cfg.endpoints.len();
        let clients = (0..cfg.connections)
            .map(|i| {
                let mut eps = cfg.endpoints.clone();
                eps.rotate_left(i % n.max(1));
                Client::with_options(eps, cfg.connect.clone())
                    .map(|c| c.with_timeout(cfg.timeout))
                    .map_err(|s| BenchError::Invalid(s.message().to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LeaseholdTarget {
            clients,
            namespace: cfg.namespace.clone(),
        })
    }

    fn client(&self, conn: usize) -> &Client {
        &self.clients[conn % self.clients.len()]
    }

    /// See [`super::Target::acquire`].
    pub async fn acquire(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        seconds: i32,
    ) -> Result<Acquired, OpError> {
        let r = self
            .client(conn)
            .acquire(pb::AcquireRequest {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                holder: holder.to_string(),
                lease_duration_seconds: seconds,
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => Ok(Acquired::Granted {
                version: r.fencing_token,
            }),
            Err(s) if is_held(&s) => Ok(Acquired::Held),
            Err(s) => Err(status_error(&s)),
        }
    }

    /// See [`super::Target::renew`].
    pub async fn renew(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        _seconds: i32,
        version: u64,
    ) -> Result<Renewed, OpError> {
        let r = self
            .client(conn)
            .renew(pb::RenewRequest {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                holder: holder.to_string(),
                fencing_token: version,
                request_id: String::new(),
            })
            .await
            .map_err(|s| status_error(&s))?;
        let revision = r
            .lease
            .and_then(|l| l.metadata)
            .map(|m| m.resource_version)
            .unwrap_or(0);
        Ok(Renewed { version, revision })
    }

    /// See [`super::Target::release`].
    pub async fn release(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        version: u64,
    ) -> Result<(), OpError> {
        self.client(conn)
            .release(pb::ReleaseRequest {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                holder: holder.to_string(),
                fencing_token: version,
                request_id: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| status_error(&s))
    }

    /// See [`super::Target::get`].
    pub async fn get(&self, conn: usize, name: &str) -> Result<(), OpError> {
        self.client(conn)
            .get(pb::GetRequest {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                stale: false,
            })
            .await
            .map(|_| ())
            .map_err(|s| status_error(&s))
    }

    /// Opens a renew stream on connection `conn` (to the leader).
    pub async fn keepalive_open(&self, conn: usize) -> Result<LeaseholdKeepAlive, OpError> {
        let stream = self
            .client(conn)
            .renew_stream()
            .await
            .map_err(|s| status_error(&s))?;
        Ok(LeaseholdKeepAlive {
            stream,
            namespace: self.namespace.clone(),
        })
    }

    /// See [`super::Target::list`].
    pub async fn list(&self, conn: usize) -> Result<usize, OpError> {
        self.client(conn)
            .list(pb::ListRequest {
                namespace: self.namespace.clone(),
                limit: LIST_PAGE,
                ..Default::default()
            })
            .await
            .map(|r| r.items.len())
            .map_err(|s| status_error(&s))
    }

    /// Lists every lease of every namespace matching `selector`, following
    /// continue tokens to the end; calls `page` with each page's latency.
    pub async fn scan(
        &self,
        conn: usize,
        selector: &str,
        mut page: impl FnMut(std::time::Duration),
    ) -> Result<usize, OpError> {
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let t0 = std::time::Instant::now();
            let r = self
                .client(conn)
                .list(pb::ListRequest {
                    namespace: String::new(),
                    label_selector: selector.to_string(),
                    continue_token: token,
                    ..Default::default()
                })
                .await
                .map_err(|s| status_error(&s))?;
            page(t0.elapsed());
            pages += 1;
            if r.continue_token.is_empty() {
                return Ok(pages);
            }
            token = r.continue_token;
        }
    }

    /// See [`super::Target::watch`]: stream `index` goes to endpoint
    /// `index % n`, so watchers spread over the nodes.
    pub async fn watch(&self, index: usize) -> Result<WatchStream, OpError> {
        let client = self.client(0);
        let endpoint = index % client.endpoints().len().max(1);
        client
            .watch_on(
                endpoint,
                pb::WatchRequest {
                    namespace: self.namespace.clone(),
                    ..Default::default()
                },
            )
            .await
            .map(WatchStream::Leasehold)
            .map_err(|s| status_error(&s))
    }

    /// See [`super::Target::leader`]: the node id Status names.
    pub async fn leader(&self) -> Result<u64, OpError> {
        let s = self
            .client(0)
            .status()
            .await
            .map_err(|s| status_error(&s))?;
        if s.leader_id == 0 {
            return Err(OpError::new("NO_LEADER", "no leader is known"));
        }
        Ok(s.leader_id)
    }

    /// The address of node `id`, from the cluster's membership.
    pub async fn address_of(&self, id: u64) -> Result<String, OpError> {
        let s = self
            .client(0)
            .status()
            .await
            .map_err(|s| status_error(&s))?;
        s.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.address.clone())
            .ok_or_else(|| OpError::new("NOT_A_MEMBER", format!("node {id} is not a member")))
    }

    /// The cluster's status, from the first endpoint that answers.
    pub async fn status(&self) -> Result<pb::StatusResponse, OpError> {
        self.client(0).status().await.map_err(|s| status_error(&s))
    }
}

/// See [`WatchStream::next`].
pub async fn next_event(
    s: &mut tonic::Streaming<pb::WatchEvent>,
) -> Result<Option<(Instant, Vec<u64>)>, OpError> {
    match s.message().await {
        Ok(Some(e)) => {
            let at = Instant::now();
            let progress = e.r#type == pb::watch_event::Type::Progress as i32;
            Ok(Some((
                at,
                if progress {
                    Vec::new()
                } else {
                    vec![e.revision]
                },
            )))
        }
        Ok(None) => Ok(None),
        Err(s) => Err(status_error(&s)),
    }
}
