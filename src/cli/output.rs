//! How the CLI prints leases and cluster status: kubectl-like tables, and
//! Kubernetes-shaped JSON/YAML (apiVersion, kind, metadata, spec in
//! camelCase; Leasehold's additions under `status`).

use crate::kube::duration;
use crate::kube::types::{Lease, LeaseList};
use crate::lease::Timestamp;
use crate::proto::v1 as pb;
use serde_json::{json, Value};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable table or line.
    Table,
    /// Kubernetes-shaped JSON.
    Json,
    /// Kubernetes-shaped YAML.
    Yaml,
}

/// A lease as a Kubernetes object: exactly what the HTTP API
/// (`kube::types`) answers for it, Leasehold's additions under `status`.
pub fn lease_json(l: &pb::Lease) -> Value {
    serde_json::to_value(Lease::from_proto(l)).unwrap_or(Value::Null)
}

/// A page of leases as a Kubernetes LeaseList.
pub fn list_json(items: &[pb::Lease], revision: u64, continue_token: &str) -> Value {
    let list = LeaseList::new(
        items.iter().map(Lease::from_proto).collect(),
        revision,
        (!continue_token.is_empty()).then(|| continue_token.to_string()),
    );
    serde_json::to_value(list).unwrap_or(Value::Null)
}

/// Cluster status as JSON.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "nodeId": s.node_id,
        "leaderId": s.leader_id,
        "leaderAddress": s.leader_address,
        "state": s.state,
        "term": s.term,
        "commitIndex": s.commit_index,
        "appliedIndex": s.applied_index,
        "lastLogIndex": s.last_log_index,
        "snapshotIndex": s.snapshot_index,
        "revision": s.revision,
        "clusterId": s.cluster_id,
        "version": s.version,
        "formatVersion": s.format_version,
        "members": members_json(&s.members),
    })
}

/// Members as JSON.
pub fn members_json(members: &[pb::Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "address": m.address,
                    "role": role(m),
                    "matchedIndex": m.matched_index,
                })
            })
            .collect(),
    )
}

/// A member's role as text.
pub fn role(m: &pb::Member) -> &'static str {
    match pb::member::Role::try_from(m.role) {
        Ok(pb::member::Role::Voter) => "voter",
        Ok(pb::member::Role::Learner) => "learner",
        _ => "unknown",
    }
}

/// Renders a value as JSON or YAML text.
pub fn render(v: &Value, format: Format) -> String {
    match format {
        Format::Yaml => {
            serde_yaml::to_string(v).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
        }
        _ => {
            serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("cannot render JSON: {e}"))
                + "\n"
        }
    }
}

/// kubectl's AGE column, as an API server prints it (apimachinery's
/// `HumanDuration`, shared with the HTTP API's tables): `45s`, `5m30s`,
/// `30m`, `3h15m`, `12h`, `2d4h`, `300d`, `3y10d`.
pub fn age(created_rfc3339: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    duration::age(
        Timestamp::parse_rfc3339(created_rfc3339).ok(),
        Timestamp::from_datetime(now),
    )
}

/// kubectl-style table of leases.
pub fn lease_table(
    items: &[pb::Lease],
    with_namespace: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["NAME", "HOLDER", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(String::from).collect());
    for l in items {
        let meta = l.metadata.clone().unwrap_or_default();
        let spec = l.spec.clone().unwrap_or_default();
        let mut row = vec![
            meta.name,
            spec.holder_identity,
            age(&meta.creation_timestamp, now),
        ];
        if with_namespace {
            row.insert(0, meta.namespace);
        }
        rows.push(row);
    }
    table(&rows)
}

/// Left-aligned columns separated by three spaces, like kubectl.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn age_uses_kubectl_units() {
        let now = chrono::Utc.with_ymd_and_hms(2024, 5, 3, 12, 0, 0).unwrap();
        assert_eq!(age("2024-05-03T11:59:15Z", now), "45s");
        assert_eq!(age("2024-05-03T11:30:00Z", now), "30m");
        assert_eq!(age("2024-05-03T07:00:00Z", now), "5h");
        assert_eq!(age("2024-05-01T12:00:00Z", now), "2d");
        // HumanDuration's finer steps, as kubectl prints them.
        assert_eq!(age("2024-05-03T11:54:30Z", now), "5m30s");
        assert_eq!(age("2024-05-03T08:45:00Z", now), "3h15m");
        assert_eq!(age("2024-05-01T08:00:00Z", now), "2d4h");
        assert_eq!(age("garbage", now), "<unknown>");
    }

    #[test]
    fn lease_json_is_kubernetes_shaped() {
        let l = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "kube-node-lease".into(),
                name: "node-1".into(),
                resource_version: 42,
                ..Default::default()
            }),
            spec: Some(pb::LeaseSpec {
                holder_identity: "node-1".into(),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
            status: Some(pb::LeaseStatus {
                fencing_token: 7,
                expire_time: String::new(),
                expired: false,
            }),
        };
        let v = lease_json(&l);
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(v["kind"], "Lease");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["spec"]["holderIdentity"], "node-1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["status"]["fencingToken"], 7);
        assert!(
            v["spec"].get("acquireTime").is_none(),
            "unset fields are omitted"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            vec!["NAME".into(), "HOLDER".into(), "AGE".into()],
            vec!["a-long-name".into(), "h".into(), "5s".into()],
        ]);
        assert_eq!(t, "NAME          HOLDER   AGE\na-long-name   h        5s\n");
    }
}
