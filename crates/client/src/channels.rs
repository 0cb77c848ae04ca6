//! One lazily connected gRPC channel per `host:port`, shared by every call to
//! that address: the Rust client's endpoints, and on a node the Raft peer
//! traffic and the forwarding of client calls to the leader. Here, below
//! the server's modules, because both sides use it and the client must not
//! depend on the server.
//!
//! With TLS, every channel uses the same [`ClientTlsConfig`]. tonic builds
//! the TLS connector once per endpoint, so a new certificate or CA needs new
//! channels: [`Channels::reset_tls`] swaps the configuration and forgets the
//! cached channels in one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The endpoint of `addr` (`host:port`) with the settings every Leasehold
/// channel uses: `https://` and `tls` when TLS is on, `http://` otherwise.
/// Lazily connecting callers use [`Channels`]; this is for a one-off
/// channel with its own timeouts (`connect_timeout`, `timeout` can be set
/// again on the result).
pub fn endpoint(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let e = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    match tls {
        Some(cfg) => e.tls_config(cfg.clone()),
        None => Ok(e),
    }
}

/// Shared cache of gRPC channels, keyed by `host:port`. Used for peer Raft
/// traffic and for forwarding client calls to the leader.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<Inner>>,
}

/// The TLS configuration and the channels built with it, under one lock so
/// that no channel built with an old configuration is cached after a reset.
#[derive(Default)]
struct Inner {
    tls: Option<ClientTlsConfig>,
    map: HashMap<String, Channel>,
}

impl Channels {
    /// Channels using `tls` (`None`: plaintext).
    pub fn with_tls(tls: Option<ClientTlsConfig>) -> Self {
        Channels {
            inner: Arc::new(Mutex::new(Inner {
                tls,
                map: HashMap::new(),
            })),
        }
    }

    /// Uses `tls` from now on: the cached channels are dropped, so the next
    /// call to each address connects anew with it. Calls in flight finish
    /// on the channels they hold (a tonic channel lives as long as a clone
    /// of it).
    pub fn reset_tls(&self, tls: Option<ClientTlsConfig>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tls = tls;
        inner.map.clear();
    }

    /// Whether the channels use TLS.
    pub fn is_tls(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tls
            .is_some()
    }

    /// The channel to `addr`, created (lazily connected) on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.map.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr, inner.tls.as_ref())?.connect_lazy();
        inner.map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::tests::pki;
    use crate::ClientTls;

    #[tokio::test]
    async fn reset_tls_swaps_the_configuration_and_forgets_the_channels() {
        let c = Channels::default();
        assert!(!c.is_tls());
        c.get("127.0.0.1:1").unwrap();
        assert_eq!(c.inner.lock().unwrap().map.len(), 1);
        let p = pki();
        c.reset_tls(Some(ClientTls::new(p.ca.into()).config()));
        assert!(c.is_tls());
        assert!(c.inner.lock().unwrap().map.is_empty());
        c.get("127.0.0.1:1").unwrap();
        c.reset_tls(None);
        assert!(!c.is_tls());
        assert!(c.inner.lock().unwrap().map.is_empty());
    }
}
