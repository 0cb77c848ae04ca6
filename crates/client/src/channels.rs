//! One lazily connected gRPC channel per `host:port`, shared by every call to
//! that address: the Rust client's endpoints, and on a node the Raft peer
//! traffic and the forwarding of client calls to the leader. Here, below
//! the server's modules, because both sides use it and the client must not
//! depend on the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Shared cache of gRPC channels, keyed by `host:port`. Used for peer Raft
/// traffic and for forwarding client calls to the leader.
#[derive(Clone, Default)]
pub struct Channels {
    map: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Arc<Mutex<Option<tonic::transport::ClientTlsConfig>>>,
}

impl Channels {
    /// Channels speaking TLS with `tls` (plaintext with `None`).
    pub fn with_tls(tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        Channels {
            map: Default::default(),
            tls: Arc::new(Mutex::new(tls)),
        }
    }

    /// Replaces the TLS configuration; the next call to each address
    /// connects anew with it (calls in flight finish on the old channels).
    pub fn reset_tls(&self, tls: Option<tonic::transport::ClientTlsConfig>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
        map.clear();
    }

    /// The channel to `addr`, created (lazily connected) on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
