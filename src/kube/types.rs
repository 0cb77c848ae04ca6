//! The JSON shapes of `coordination.k8s.io/v1` objects, and their making
//! from the gRPC API's messages.
//!
//! Our own serde structs rather than `k8s-openapi`'s (ARCHITECTURE.md,
//! "Kubernetes API over HTTP", says why): they carry Leasehold's `status`
//! on the Lease itself, use the project's time type, and serialize exactly
//! the fields Leasehold keeps, in the apiserver's form:
//! - `apiVersion` and `kind` on every object (also inside lists, where the
//!   apiserver's JSON has them as well);
//! - `metadata.resourceVersion` as a decimal string; `creationTimestamp`
//!   in seconds (`Time`); spec times with six fractional digits
//!   (`MicroTime`, `%Y-%m-%dT%H:%M:%S%.6fZ`);
//! - absent (not `null`, not `""`) for what is unset, as Go's `omitempty`
//!   writes it; a lease without a holder has no `holderIdentity`;
//! - `status` holds Leasehold's extras, which Kubernetes clients ignore:
//!   `fencingToken` (always), `expireTime` (when there is a holder) and
//!   `expired: true` (only once the leader recorded the lapse). The CLI's
//!   `-o json` prints the same shape.

use crate::proto::v1 as pb;
use serde::Serialize;
use std::collections::BTreeMap;

use super::{GROUP_VERSION, KIND, LIST_KIND};

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn sorted(m: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `metav1.ObjectMeta`, reduced to what a Lease keeps.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The name.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// Unique per incarnation of the lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The revision of the lease's last change, in decimal.
    pub resource_version: String,
    /// When the lease was created (RFC 3339, seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Labels, sorted by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations, sorted by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `coordinationv1.LeaseSpec`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// The current holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long a holder keeps the lease after its last renewal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current tenure began (MicroTime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the holder last renewed (MicroTime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times the holder changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    /// Coordinated leader election strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Preferred holder under `strategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_holder: Option<String>,
}

/// Leasehold's extras; not part of upstream's Lease (which has no status),
/// so Kubernetes clients skip it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// The revision at which the current tenure began; 0 without a holder.
    pub fencing_token: u64,
    /// `renewTime + leaseDurationSeconds` (MicroTime), when held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    /// The leader recorded that the holder's claim lapsed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// A `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `coordination.k8s.io/v1`.
    pub api_version: &'static str,
    /// `Lease`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: LeaseSpec,
    /// Leasehold's extras.
    pub status: LeaseStatus,
}

impl Lease {
    /// The lease a gRPC answer carries.
    pub fn from_proto(l: &pb::Lease) -> Lease {
        let meta = l.metadata.clone().unwrap_or_default();
        let spec = l.spec.clone().unwrap_or_default();
        let status = l.status.clone().unwrap_or_default();
        Lease {
            api_version: GROUP_VERSION,
            kind: KIND,
            metadata: ObjectMeta {
                uid: non_empty(&meta.uid),
                resource_version: meta.resource_version.to_string(),
                creation_timestamp: non_empty(&meta.creation_timestamp),
                labels: sorted(&meta.labels),
                annotations: sorted(&meta.annotations),
                name: meta.name,
                namespace: meta.namespace,
            },
            spec: LeaseSpec {
                holder_identity: non_empty(&spec.holder_identity),
                lease_duration_seconds: spec.lease_duration_seconds,
                acquire_time: non_empty(&spec.acquire_time),
                renew_time: non_empty(&spec.renew_time),
                lease_transitions: spec.lease_transitions,
                strategy: non_empty(&spec.strategy),
                preferred_holder: non_empty(&spec.preferred_holder),
            },
            status: LeaseStatus {
                fencing_token: status.fencing_token,
                expire_time: non_empty(&status.expire_time),
                expired: status.expired,
            },
        }
    }
}

/// `metav1.ListMeta`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// The revision the listing was read at, in decimal.
    pub resource_version: String,
    /// Where the next page starts; absent on the last page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// A `coordination.k8s.io/v1` LeaseList.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseList {
    /// `coordination.k8s.io/v1`.
    pub api_version: &'static str,
    /// `LeaseList`.
    pub kind: &'static str,
    /// Revision and continue token.
    pub metadata: ListMeta,
    /// The leases, in namespace and name order.
    pub items: Vec<Lease>,
}

impl LeaseList {
    /// A list of `items` read at `revision`.
    pub fn new(items: Vec<Lease>, revision: u64, continue_token: Option<String>) -> LeaseList {
        LeaseList {
            api_version: GROUP_VERSION,
            kind: LIST_KIND,
            metadata: ListMeta {
                resource_version: revision.to_string(),
                continue_token,
            },
            items,
        }
    }
}

/// `metav1.PartialObjectMetadata`: an object's metadata alone (what a
/// Table row carries by default, and where kubectl finds the namespace for
/// `-A`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartialObjectMetadata {
    /// `meta.k8s.io/v1` (or `v1beta1`, as the Table).
    pub api_version: &'static str,
    /// `PartialObjectMetadata`.
    pub kind: &'static str,
    /// The object's metadata.
    pub metadata: ObjectMeta,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// A held lease as the gRPC API returns it (also used by `table`).
    pub(crate) fn sample() -> pb::Lease {
        pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "default".into(),
                name: "my-job".into(),
                uid: "u-1".into(),
                resource_version: 17,
                creation_timestamp: "2026-12-01T10:00:00Z".into(),
                labels: [("app".to_string(), "a".to_string())].into(),
                annotations: Default::default(),
            }),
            spec: Some(pb::LeaseSpec {
                holder_identity: "worker-a".into(),
                lease_duration_seconds: Some(15),
                acquire_time: "2026-12-01T10:00:00.000001Z".into(),
                renew_time: "2026-12-01T10:00:05.250000Z".into(),
                lease_transitions: Some(0),
                strategy: String::new(),
                preferred_holder: String::new(),
            }),
            status: Some(pb::LeaseStatus {
                fencing_token: 9,
                expire_time: "2026-12-01T10:00:20.250000Z".into(),
                expired: false,
            }),
        }
    }

    #[test]
    fn a_lease_is_kubernetes_shaped_with_extras_under_status() {
        let v = serde_json::to_value(Lease::from_proto(&sample())).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": "my-job", "namespace": "default", "uid": "u-1",
                    "resourceVersion": "17", "creationTimestamp": "2026-12-01T10:00:00Z",
                    "labels": {"app": "a"}
                },
                "spec": {
                    "holderIdentity": "worker-a", "leaseDurationSeconds": 15,
                    "acquireTime": "2026-12-01T10:00:00.000001Z",
                    "renewTime": "2026-12-01T10:00:05.250000Z", "leaseTransitions": 0
                },
                "status": {"fencingToken": 9, "expireTime": "2026-12-01T10:00:20.250000Z"}
            })
        );
    }

    #[test]
    fn unset_fields_are_absent() {
        let mut l = sample();
        l.spec = Some(pb::LeaseSpec::default());
        l.status = Some(pb::LeaseStatus {
            fencing_token: 0,
            expire_time: String::new(),
            expired: true,
        });
        let v = serde_json::to_value(Lease::from_proto(&l)).unwrap();
        assert_eq!(v["spec"], json!({}));
        assert_eq!(v["status"], json!({"fencingToken": 0, "expired": true}));
        // A message without metadata still serializes (empty name).
        let v = serde_json::to_value(Lease::from_proto(&pb::Lease::default())).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "0");
    }

    #[test]
    fn a_list_carries_revision_and_continue() {
        let list = LeaseList::new(vec![Lease::from_proto(&sample())], 42, Some("c".into()));
        let v = serde_json::to_value(list).unwrap();
        assert_eq!(v["kind"], "LeaseList");
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(
            v["metadata"],
            json!({"resourceVersion": "42", "continue": "c"})
        );
        assert_eq!(v["items"][0]["kind"], "Lease");
        let last = serde_json::to_value(LeaseList::new(vec![], 1, None)).unwrap();
        assert_eq!(last["metadata"], json!({"resourceVersion": "1"}));
        assert_eq!(last["items"], json!([]));
    }
}
