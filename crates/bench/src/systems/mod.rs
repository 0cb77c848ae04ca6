//! The operations a workload issues, for each system under load.
//!
//! Both systems get the same calls with the same meaning, so a workload is
//! written once:
//!
//! | operation | Leasehold | etcd (as Kubernetes stores a Lease) |
//! |---|---|---|
//! | acquire | `Acquire` | txn: create if absent (create_revision = 0), else read; if free or expired, txn: mod_revision unchanged → put |
//! | renew | `Renew` with the fencing token | txn: mod_revision unchanged → put the new value (~300 B) |
//! | release | `Release` | txn: mod_revision unchanged → put with an empty holder |
//! | get | `Get` (linearizable) | range on the key (linearizable) |
//! | list | `List`, first page of 500 | range on the prefix, limit 500 |
//! | watch | `Watch` on the namespace | watch on the prefix |
//!
//! A lease's *version* is what the next write must present: the fencing
//! token for Leasehold, the key's mod_revision for etcd.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod leasehold;

use super::config::{LoadConfig, TargetKind};
use super::BenchError;
use std::time::Instant;
use tonic::Code;

/// Page size of the `list` operation (what Kubernetes' paginated lists use).
pub const LIST_PAGE: u32 = 500;

/// A failed operation. `kind` is what reports count errors by:
/// `CODE/REASON` for gRPC statuses (`UNAVAILABLE/NOT_LEADER`,
/// `FAILED_PRECONDITION/LEASE_LOST`), `CONFLICT` for a failed etcd compare.
#[derive(Debug, Clone)]
pub struct OpError {
    /// Short, stable kind, used as the key in the error counts.
    pub kind: String,
    /// The server's or client's message.
    pub message: String,
}

impl OpError {
    /// An error of `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The result of an acquire that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The caller holds the lease; `version` is needed to renew or release.
    Granted {
        /// Fencing token (Leasehold) or mod_revision (etcd).
        version: u64,
    },
    /// Someone else holds it: a correct answer, not an error.
    Held,
}

/// The result of a renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// What the next renew must present.
    pub version: u64,
    /// The cluster revision of this change: the revision a watcher sees in
    /// the event it causes.
    pub revision: u64,
}

/// The upper-case gRPC code name, as README's error table writes it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A connected system under load.
pub enum Target {
    /// A Leasehold cluster.
    Leasehold(leasehold::LeaseholdTarget),
    /// An etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdTarget),
}

/// Calls the same method on whichever target this is.
macro_rules! dispatch {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Target::Leasehold($t) => $e,
            #[cfg(feature = "etcd")]
            Target::Etcd($t) => $e,
        }
    };
}

impl Target {
    /// Connects to the system `cfg.target` names.
    pub async fn connect(cfg: &LoadConfig) -> Result<Target, BenchError> {
        match cfg.target {
            TargetKind::Leasehold => Ok(Target::Leasehold(leasehold::LeaseholdTarget::new(cfg)?)),
            #[cfg(feature = "etcd")]
            TargetKind::Etcd => Ok(Target::Etcd(etcd::EtcdTarget::connect(cfg).await?)),
            #[cfg(not(feature = "etcd"))]
            TargetKind::Etcd => Err(BenchError::Invalid(
                "--target etcd needs a binary built with the `etcd` feature: \
                 cargo build --release --features etcd (its build needs protoc: \
                 apt-get install protobuf-compiler)"
                    .into(),
            )),
        }
    }

    /// Which system this is.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Leasehold(_) => TargetKind::Leasehold,
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => TargetKind::Etcd,
        }
    }

    /// The Leasehold connections, if this is Leasehold (for the steps that
    /// use Leasehold's own Status, such as scale's restart).
    pub fn leasehold(&self) -> Option<&leasehold::LeaseholdTarget> {
        match self {
            Target::Leasehold(t) => Some(t),
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => None,
        }
    }

    /// Acquires `name` for `holder` (or renews it, if `holder` holds it).
    pub async fn acquire(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        seconds: i32,
    ) -> Result<Acquired, OpError> {
        dispatch!(self, t => t.acquire(conn, name, holder, seconds).await)
    }

    /// Renews `holder`'s tenure of `name`.
    pub async fn renew(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        seconds: i32,
        version: u64,
    ) -> Result<Renewed, OpError> {
        dispatch!(self, t => t.renew(conn, name, holder, seconds, version).await)
    }

    /// Releases `holder`'s tenure of `name`.
    pub async fn release(
        &self,
        conn: usize,
        name: &str,
        holder: &str,
        version: u64,
    ) -> Result<(), OpError> {
        dispatch!(self, t => t.release(conn, name, holder, version).await)
    }

    /// Reads one lease (linearizable).
    pub async fn get(&self, conn: usize, name: &str) -> Result<(), OpError> {
        dispatch!(self, t => t.get(conn, name).await)
    }

    /// Lists the first page ([`LIST_PAGE`] items) of the namespace; returns
    /// the number of items.
    pub async fn list(&self, conn: usize) -> Result<usize, OpError> {
        dispatch!(self, t => t.list(conn).await)
    }

    /// One full scan of every lease with `selector` (Leasehold only); calls
    /// `page` with each page's latency and returns the number of pages.
    pub async fn scan(
        &self,
        conn: usize,
        selector: &str,
        page: impl FnMut(std::time::Duration),
    ) -> Result<usize, OpError> {
        match self {
            Target::Leasehold(t) => t.scan(conn, selector, page).await,
            #[cfg(feature = "etcd")]
            Target::Etcd(_) => Err(OpError {
                kind: "UNSUPPORTED".into(),
                message: "background scans are implemented for Leasehold only".into(),
            }),
        }
    }

    /// The untimed setup of `keepalive`: Leasehold acquires the leases
    /// (owned, as `renew` does); etcd grants as many leases of
    /// `--lease-seconds`. Then opens each client's streams.
    pub async fn keepalive_setup(
        &self,
        cfg: &LoadConfig,
    ) -> Result<(Vec<KeepAlive>, super::report::Setup), BenchError> {
        match self {
            Target::Leasehold(t) => {
                let (owned, setup) = super::workload::renewal_setup(self, cfg).await?;
                let mut out = Vec::with_capacity(cfg.clients);
                for (c, leases) in owned.into_iter().enumerate() {
                    let s = t.keepalive_open(c).await.map_err(|e| {
                        BenchError::Unavailable(format!("cannot open a renew stream: {e}"))
                    })?;
                    out.push(KeepAlive::Leasehold(Box::new(s), leases));
                }
                Ok((out, setup))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(t) => {
                let t0 = Instant::now();
                let mut out = Vec::with_capacity(cfg.clients);
                for c in 0..cfg.clients {
                    let mine = super::workload::owned_by(c, cfg.clients, cfg.leases);
                    let mut ids = Vec::with_capacity(mine.len());
                    for _ in &mine {
                        ids.push(
                            t.grant(c, i64::from(cfg.lease_seconds))
                                .await
                                .map_err(|e| {
                                    BenchError::Unavailable(format!(
                                        "cannot grant an etcd lease: {e}"
                                    ))
                                })?,
                        );
                    }
                    let s = t.keepalive_open(c, &ids).await.map_err(|e| {
                        BenchError::Unavailable(format!("cannot open keepalive streams: {e}"))
                    })?;
                    out.push(KeepAlive::Etcd(s));
                }
                Ok((
                    out,
                    super::report::Setup {
                        leases: cfg.leases,
                        seconds: t0.elapsed().as_secs_f64(),
                    },
                ))
            }
        }
    }

    /// Opens watch stream number `index` on the namespace, from now.
    pub async fn watch(&self, index: usize) -> Result<WatchStream, OpError> {
        dispatch!(self, t => t.watch(index).await)
    }

    /// The id (see [`super::ServerPid`]) of the current leader.
    pub async fn leader(&self) -> Result<u64, OpError> {
        dispatch!(self, t => t.leader().await)
    }
}

/// One client's renewal streams (the `keepalive` workload).
pub enum KeepAlive {
    /// A Leasehold `RenewStream`, and the client's leases (name, token).
    Leasehold(Box<leasehold::LeaseholdKeepAlive>, Vec<(String, u64)>),
    /// etcd keepalive streams, one per lease.
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdKeepAlive),
}

impl KeepAlive {
    /// Renews the client's lease `k` (round robin) and waits for the answer.
    pub async fn renew(&mut self, k: usize) -> Result<(), OpError> {
        match self {
            KeepAlive::Leasehold(s, leases) => {
                let n = leases.len().max(1);
                let (name, token) = &leases[k % n];
                s.renew(name, *token).await
            }
            #[cfg(feature = "etcd")]
            KeepAlive::Etcd(s) => s.renew(k).await,
        }
    }
}

/// A stream of change events on the namespace.
pub enum WatchStream {
    /// Leasehold's Watch stream.
    Leasehold(tonic::Streaming<leasehold_proto::v1::WatchEvent>),
    /// etcd's watch stream.
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::WatchStream),
}

impl WatchStream {
    /// Waits for the next message and returns the revisions of the changes
    /// it carries (empty for progress notifications) with the instant it
    /// arrived; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<(Instant, Vec<u64>)>, OpError> {
        match self {
            WatchStream::Leasehold(s) => leasehold::next_event(s).await,
            #[cfg(feature = "etcd")]
            WatchStream::Etcd(s) => etcd::next_event(s).await,
        }
    }
}
