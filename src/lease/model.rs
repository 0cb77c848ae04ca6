//! The Lease object as the store keeps it.
//!
//! These types are the state machine's value format (encoded with bincode in
//! `store::keys`): changing a field here is an on-disk format change and must
//! bump `store::FORMAT_VERSION`. They are independent of the protobuf types,
//! which are converted at the API edge (`api::convert`).

use super::time::{Timestamp, MICROS_PER_SEC};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Namespace and name: the identity of a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseKey {
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Name (a DNS subdomain).
    pub name: String,
}

impl LeaseKey {
    /// A key from its parts; not validated.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        LeaseKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes' LeaseSpec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseSpec {
    /// Current holder; `None` when nobody holds the lease.
    pub holder_identity: Option<String>,
    /// How long a holder keeps the lease after its last renewal.
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired the lease.
    pub acquire_time: Option<Timestamp>,
    /// When the current holder last renewed the lease.
    pub renew_time: Option<Timestamp>,
    /// How many times the holder changed.
    pub lease_transitions: Option<i32>,
    /// Coordinated leader election strategy (opaque to Leasehold).
    pub strategy: Option<String>,
    /// Preferred holder under `strategy` (opaque to Leasehold).
    pub preferred_holder: Option<String>,
}

/// A stored lease: Kubernetes metadata and spec plus Leasehold's fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Namespace and name.
    pub key: LeaseKey,
    /// Unique id of this incarnation of the lease (a deleted and re-created
    /// lease gets a new one).
    pub uid: String,
    /// Revision of the last change to this lease.
    pub resource_version: u64,
    /// When the lease object was created.
    pub creation_timestamp: Timestamp,
    /// Labels (validated by Kubernetes' rules).
    pub labels: BTreeMap<String, String>,
    /// Annotations (validated by Kubernetes' rules).
    pub annotations: BTreeMap<String, String>,
    /// The spec.
    pub spec: LeaseSpec,
    /// Revision at which the current holder acquired the lease; 0 when there
    /// is no holder. See ARCHITECTURE.md, "Fencing".
    pub fencing_token: u64,
    /// The holder's claim lapsed and the leader recorded it (a replicated
    /// `Expire` command). The holder stays visible; the next renewal,
    /// acquisition or put clears the flag.
    pub expired: bool,
}

impl Lease {
    /// The holder, if any (an empty string counts as none).
    pub fn holder(&self) -> Option<&str> {
        self.spec
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }

    /// Lease duration in microseconds (0 when unset).
    pub fn duration_micros(&self) -> i64 {
        i64::from(self.spec.lease_duration_seconds.unwrap_or(0).max(0)) * MICROS_PER_SEC
    }

    /// When the lease was last renewed: `renewTime`, else `acquireTime`, else
    /// its creation (a lease written by `Put` may carry neither time).
    pub fn last_renewal(&self) -> Timestamp {
        self.spec
            .renew_time
            .or(self.spec.acquire_time)
            .unwrap_or(self.creation_timestamp)
    }

    /// `renewTime + leaseDurationSeconds`: when the holder's claim lapses, as
    /// Kubernetes clients compute it. `None` when there is no holder.
    pub fn expire_time(&self) -> Option<Timestamp> {
        self.holder()?;
        Some(self.last_renewal().plus_micros(self.duration_micros()))
    }
}
