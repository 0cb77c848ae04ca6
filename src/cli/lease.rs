//! The lease commands: `acquire`, `renew`, `release`, `get` (one lease or
//! a list) and `delete`. Each is one call (a list pages through) whose
//! answer is printed as a line or a table, or as Kubernetes-shaped JSON or
//! YAML.

use super::output::{self, Format};
use super::{split_lease, CliError, Scope};
use crate::client::Client;
use crate::proto::v1 as pb;
use std::collections::HashMap;

fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, String> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--label {l:?} must be KEY=VALUE"))
        })
        .collect()
}

/// The lease a write answered with: `summary` of it as a table, else the
/// whole object.
fn one_lease(
    lease: Option<pb::Lease>,
    format: Format,
    summary: impl FnOnce(&pb::Lease) -> String,
) -> String {
    let lease = lease.unwrap_or_default();
    match format {
        Format::Table => summary(&lease),
        f => output::render(&output::lease_json(&lease), f),
    }
}

fn holder_line(verb: &str, l: &pb::Lease) -> String {
    let meta = l.metadata.clone().unwrap_or_default();
    let spec = l.spec.clone().unwrap_or_default();
    let status = l.status.clone().unwrap_or_default();
    format!(
        "{verb} {}/{} holder={} token={} expires={}\n",
        meta.namespace, meta.name, spec.holder_identity, status.fencing_token, status.expire_time
    )
}

/// `leasehold acquire`.
pub async fn acquire(
    client: &Client,
    lease: &str,
    holder: String,
    duration: i32,
    labels: &[String],
    format: Format,
) -> Result<String, CliError> {
    let (namespace, name) = split_lease(lease)?;
    let r = client
        .acquire(pb::AcquireRequest {
            namespace,
            name,
            holder,
            lease_duration_seconds: duration,
            labels: parse_labels(labels)?,
            request_id: String::new(),
        })
        .await?;
    let verb = if r.newly_acquired {
        "acquired"
    } else {
        "renewed"
    };
    Ok(one_lease(r.lease, format, |l| holder_line(verb, l)))
}

/// `leasehold renew`.
pub async fn renew(
    client: &Client,
    lease: &str,
    holder: String,
    token: u64,
    format: Format,
) -> Result<String, CliError> {
    let (namespace, name) = split_lease(lease)?;
    let r = client
        .renew(pb::RenewRequest {
            namespace,
            name,
            holder,
            fencing_token: token,
            request_id: String::new(),
        })
        .await?;
    Ok(one_lease(r.lease, format, |l| holder_line("renewed", l)))
}

/// `leasehold release`.
pub async fn release(
    client: &Client,
    lease: &str,
    holder: String,
    token: u64,
    format: Format,
) -> Result<String, CliError> {
    let (namespace, name) = split_lease(lease)?;
    let r = client
        .release(pb::ReleaseRequest {
            namespace,
            name,
            holder,
            fencing_token: token,
            request_id: String::new(),
        })
        .await?;
    Ok(one_lease(r.lease, format, |l| {
        let m = l.metadata.clone().unwrap_or_default();
        format!("released {}/{}\n", m.namespace, m.name)
    }))
}

/// `leasehold get NAMESPACE/NAME`.
pub async fn get(
    client: &Client,
    lease: &str,
    stale: bool,
    format: Format,
) -> Result<String, CliError> {
    let now = chrono::Utc::now();
    let (namespace, name) = split_lease(lease)?;
    let r = client
        .get(pb::GetRequest {
            namespace,
            name,
            stale,
        })
        .await?;
    let l = r.lease.unwrap_or_default();
    Ok(match format {
        Format::Table => output::lease_table(std::slice::from_ref(&l), false, now),
        f => output::render(&output::lease_json(&l), f),
    })
}

/// `leasehold get` without a lease: every lease of the scope, paged
/// through (500 per call keeps messages small).
pub async fn list(
    client: &Client,
    scope: &Scope,
    stale: bool,
    format: Format,
) -> Result<String, CliError> {
    let now = chrono::Utc::now();
    let ns = scope.namespace();
    let mut items = Vec::new();
    let mut token = String::new();
    let mut revision = 0;
    loop {
        let r = client
            .list(pb::ListRequest {
                namespace: ns.clone(),
                label_selector: scope.selector.clone(),
                limit: 500,
                continue_token: token,
                stale,
            })
            .await?;
        if revision == 0 {
            revision = r.revision;
        }
        items.extend(r.items);
        token = r.continue_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(match format {
        Format::Table if items.is_empty() => {
            if scope.all_namespaces {
                "No resources found\n".to_string()
            } else {
                format!("No resources found in {ns} namespace.\n")
            }
        }
        Format::Table => output::lease_table(&items, scope.all_namespaces, now),
        f => output::render(&output::list_json(&items, revision, ""), f),
    })
}

/// `leasehold delete`.
pub async fn delete(
    client: &Client,
    lease: &str,
    resource_version: Option<u64>,
    uid: Option<String>,
    format: Format,
) -> Result<String, CliError> {
    let (namespace, name) = split_lease(lease)?;
    let r = client
        .delete(pb::DeleteRequest {
            namespace,
            name,
            resource_version,
            request_id: String::new(),
            uid: uid.unwrap_or_default(),
        })
        .await?;
    Ok(one_lease(r.lease, format, |l| {
        let m = l.metadata.clone().unwrap_or_default();
        format!("deleted {}/{}\n", m.namespace, m.name)
    }))
}
