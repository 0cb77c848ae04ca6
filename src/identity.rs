//! Server identity leases: each node publishes that it is alive.
//!
//! As Kubernetes' API servers do, every node keeps a lease in namespace
//! [`NAMESPACE`] named `leasehold-` + 26 characters: lowercase base32
//! (no padding) of the first 16 bytes of sha256 over the length-prefixed
//! hostname and the length-prefixed string `leasehold` (each prefix a u64,
//! big-endian). The holder identity is `<lease name>_<incarnation>`, where
//! the incarnation is the node's data-directory id (`store::node_meta`);
//! labels name the hostname and the node id. The lease lasts
//! [`IdentityConfig::lease_seconds`] (default 3600) and is renewed every
//! [`IdentityConfig::renew_every`] (default 10 s).
//!
//! Deliberate difference from Kubernetes, whose API servers take the lease
//! over with a new holder on every start: an identity lease is a lease like
//! any other here, and nobody, not even a new process on the same host, is
//! granted a lease while another holder's tenure runs. So the holder is tied
//! to the data directory, not the process: a restarted node renews its own
//! tenure at once; a node whose data directory was replaced (a new
//! incarnation) takes the lease over when the old tenure lapses. Two nodes
//! that share a hostname cannot both hold it: the second logs a warning;
//! give them distinct `--hostname`s. Leases of servers that stopped are
//! deleted by the leader's garbage collection (`lease::gc`).
//!
//! The publisher goes through the node's own client API, so it works the
//! same on followers (forwarded) and on the leader.

use crate::api::status::{error_info, reason};
use crate::client::Client;
use crate::lease::gc::IDENTITY_LABEL;
use crate::proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;

/// Namespace of identity leases.
pub const NAMESPACE: &str = "leasehold-system";
/// Value of the identity label.
pub const IDENTITY_VALUE: &str = "leasehold";
/// Label naming the host.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Label naming the node id.
pub const NODE_ID_LABEL: &str = "leasehold.io/node-id";

/// How a node publishes its identity.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Hostname to publish (default: the system's).
    pub hostname: String,
    /// Lease duration, seconds.
    pub lease_seconds: i32,
    /// Renewal period.
    pub renew_every: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            hostname: system_hostname(),
            lease_seconds: 3600,
            renew_every: Duration::from_secs(10),
        }
    }
}

/// The system's hostname, lowercased; `localhost` if it cannot be read.
pub fn system_hostname() -> String {
    let h = gethostname::gethostname()
        .to_string_lossy()
        .trim()
        .to_lowercase();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// Lowercase RFC 4648 base32 without padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The identity lease name for `hostname`.
pub fn lease_name(hostname: &str) -> String {
    let mut h = Sha256::new();
    for part in [hostname.as_bytes(), b"leasehold".as_slice()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    format!("leasehold-{}", base32_lower(&digest[..16]))
}

/// Publishes this node's identity lease until the task is dropped.
pub struct Publisher {
    client: Client,
    config: IdentityConfig,
    node_id: u64,
    name: String,
    holder: String,
    token: Option<u64>,
    /// A LEASE_HELD warning was logged for the current wait.
    warned: bool,
}

impl Publisher {
    /// A publisher for node `node_id` whose data directory is `incarnation`,
    /// talking to `endpoint` (the node itself) over `channels`: the node's
    /// peer channels, so that under TLS it presents the node's peer
    /// certificate (a member may write its own identity lease whatever the
    /// rules say) and follows certificate reloads.
    pub fn new(
        endpoint: String,
        node_id: u64,
        incarnation: &str,
        config: IdentityConfig,
        channels: crate::client::Channels,
    ) -> Result<Self, tonic::Status> {
        let name = lease_name(&config.hostname);
        let holder = format!("{name}_{incarnation}");
        Ok(Publisher {
            client: Client::with_channels(vec![endpoint], channels, None)?
                .with_timeout(Duration::from_secs(5)),
            config,
            node_id,
            name,
            holder,
            token: None,
            warned: false,
        })
    }

    /// The holder identity of this node.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Renews forever, every `renew_every`; errors are logged and retried.
    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.publish_once().await {
                tracing::debug!(lease = %self.name, "identity lease not published yet: {}", e.message());
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (IDENTITY_LABEL.to_string(), IDENTITY_VALUE.to_string()),
            (HOSTNAME_LABEL.to_string(), self.config.hostname.clone()),
            (NODE_ID_LABEL.to_string(), self.node_id.to_string()),
        ])
    }

    /// Renews the tenure, or acquires the lease (creating it if missing; a
    /// restart with the same data directory renews its own tenure).
    pub async fn publish_once(&mut self) -> Result<(), tonic::Status> {
        if let Some(token) = self.token {
            let r = self
                .client
                .renew(pb::RenewRequest {
                    namespace: NAMESPACE.into(),
                    name: self.name.clone(),
                    holder: self.holder.clone(),
                    fencing_token: token,
                    request_id: String::new(),
                })
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(s)
                    if is_reason(&s, reason::LEASE_LOST) || s.code() == tonic::Code::NotFound =>
                {
                    self.token = None;
                }
                Err(s) => return Err(s),
            }
        }
        let r = self
            .client
            .acquire(pb::AcquireRequest {
                namespace: NAMESPACE.into(),
                name: self.name.clone(),
                holder: self.holder.clone(),
                lease_duration_seconds: self.config.lease_seconds,
                labels: self.labels(),
                request_id: String::new(),
            })
            .await;
        match r {
            Ok(r) => {
                self.token = Some(r.fencing_token);
                self.warned = false;
                if r.newly_acquired {
                    tracing::info!(lease = %self.name, holder = %self.holder, token = r.fencing_token, "published identity lease");
                }
                Ok(())
            }
            Err(s) if is_reason(&s, reason::LEASE_HELD) => {
                if !self.warned {
                    self.warned = true;
                    let other = error_info(&s)
                        .and_then(|(_, m)| m.get("holder").cloned())
                        .unwrap_or_default();
                    tracing::warn!(
                        lease = %self.name,
                        holder = %other,
                        "identity lease held by another holder (this node's previous data \
                         directory, or another node with the same --hostname); taking it over \
                         when that tenure lapses: {}",
                        s.message()
                    );
                }
                Err(s)
            }
            Err(s) => Err(s),
        }
    }
}

fn is_reason(s: &tonic::Status, want: &str) -> bool {
    error_info(s).is_some_and(|(r, _)| r == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10, lowercased, without padding.
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foo"), "mzxw6");
        assert_eq!(base32_lower(b"foob"), "mzxw6yq");
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn lease_name_is_leasehold_dash_26_base32_chars_and_stable() {
        let n = lease_name("node-a.example.com");
        assert!(n.starts_with("leasehold-"));
        let suffix = &n["leasehold-".len()..];
        assert_eq!(suffix.len(), 26);
        assert!(suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(n, lease_name("node-a.example.com"));
        assert_ne!(n, lease_name("node-b.example.com"));
        // A valid lease name (DNS subdomain).
        crate::lease::validate::validate_dns_subdomain("name", &n).unwrap();
    }

    #[test]
    fn lease_name_hashes_length_prefixed_parts() {
        // Independent computation of the documented scheme.
        let mut h = Sha256::new();
        h.update(4u64.to_be_bytes());
        h.update(b"host");
        h.update(9u64.to_be_bytes());
        h.update(b"leasehold");
        let d = h.finalize();
        assert_eq!(
            lease_name("host"),
            format!("leasehold-{}", base32_lower(&d[..16]))
        );
    }
}
