//! TLS on the node's one port, accepted by us rather than by tonic.
//!
//! Why not tonic's `ServerTlsConfig`: it offers ALPN `h2` only (the Python
//! Kubernetes client offers `http/1.1` only and would be refused), and its
//! configuration is fixed at start, so a certificate rotation would need a
//! restart and cost an election. Here each accepted connection takes the
//! configuration current at that moment ([`TlsState::current`]), which the
//! reloader swaps.
//!
//! Each connection is classified once, right after the handshake
//! ([`ConnInfo`]): a certificate whose chain verifies against the **peer
//! CA alone** makes the connection a peer's (a cluster member: it may call
//! the Raft service and forward an identity); one that verifies against the
//! client CA gives the caller's identity (CN = user, O = groups). tonic
//! copies `ConnInfo` into every request's extensions, where
//! `auth::layer` reads it.
//!
//! TLS session resumption is off: a resumed TLS 1.3 session restores the
//! client certificate from the cache without verifying it again, which
//! would let a client keep an identity whose CA was removed by a reload.

use super::identity::Identity;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; the accept loop waits beyond this, so a
/// flood of slow handshakes cannot take unbounded memory.
const MAX_HANDSHAKES: usize = 256;
/// Largest certificate, key or CA file read.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The crypto provider used everywhere: ring (see Cargo.toml).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for the TLS clients
/// tonic builds (peer channels, the CLI). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the TLS material is read from (the `serve` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM), served to clients and peers.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA bundle that signs client certificates (`--trusted-ca-file`);
    /// `None`: client certificates are not accepted as identities.
    pub client_ca: Option<PathBuf>,
    /// Whether every connection must present a certificate.
    pub client_cert_auth: bool,
    /// The certificate this node presents to peers (default `cert`).
    pub peer_cert: PathBuf,
    /// Its key (default `key`).
    pub peer_key: PathBuf,
    /// CA bundle that signs the members' certificates.
    pub peer_ca: PathBuf,
}

impl TlsFiles {
    /// Every file read, for the reloader to watch.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.cert.clone(),
            self.key.clone(),
            self.peer_cert.clone(),
            self.peer_key.clone(),
            self.peer_ca.clone(),
        ];
        v.extend(self.client_ca.clone());
        v.sort();
        v.dedup();
        v
    }
}

/// Reads a file of at most [`MAX_PEM_FILE`] bytes, naming it on error.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(buf)
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path, pem)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// One generation of TLS material, validated as a whole.
pub struct Loaded {
    /// What the handshake uses.
    pub server: Arc<ServerConfig>,
    /// Verifies peer (member) certificates: the peer CA only.
    peer: Arc<dyn ClientCertVerifier>,
    /// Verifies client certificates: the client CA only.
    client: Option<Arc<dyn ClientCertVerifier>>,
    /// The peer certificate, key and CA as PEM, for the peer channels.
    pub peer_client: PeerClientTls,
    /// Digest of every file's contents, to skip reloads that change nothing.
    pub digest: [u8; 32],
    /// Which load this is (set by [`TlsState`]): a connection verified under
    /// an older one is verified again before its next request.
    pub generation: u64,
}

/// What the node's own TLS client (peer channels, forwarding, its identity
/// lease) presents and trusts.
#[derive(Clone)]
pub struct PeerClientTls {
    /// The peer CA (PEM).
    pub ca_pem: Vec<u8>,
    /// The node's peer certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Its key (PEM).
    pub key_pem: Vec<u8>,
}

impl PeerClientTls {
    /// As tonic's client configuration.
    pub fn to_tonic(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let b = if optional {
        b.allow_unauthenticated()
    } else {
        b
    };
    b.build().map_err(|e| e.to_string())
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", path.display()))
}

/// Checks that `key` belongs to `chain`'s leaf, naming the files.
fn certified_key(
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
    provider: &Arc<CryptoProvider>,
) -> Result<(), String> {
    rustls::sign::CertifiedKey::from_der(chain, key, provider)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{} and {} do not make a certificate and its key: {e}",
                cert_path.display(),
                key_path.display()
            )
        })
}

impl Loaded {
    /// Reads and validates every file. Errors name the file; nothing is
    /// half-loaded.
    pub fn load(files: &TlsFiles) -> Result<Loaded, String> {
        let provider = provider();
        let read = |p: &Path| read_bounded(p, MAX_PEM_FILE);
        let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
        let (peer_cert_pem, peer_key_pem) = (read(&files.peer_cert)?, read(&files.peer_key)?);
        let peer_ca_pem = read(&files.peer_ca)?;
        let client_ca_pem = files.client_ca.as_deref().map(read).transpose()?;

        let mut digest = Sha256::new();
        for part in [
            &cert_pem,
            &key_pem,
            &peer_cert_pem,
            &peer_key_pem,
            &peer_ca_pem,
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        if let Some(c) = &client_ca_pem {
            digest.update(c);
        }

        let (chain, serving_key) = (certs(&files.cert, &cert_pem)?, key(&files.key, &key_pem)?);
        certified_key(
            &files.cert,
            chain.clone(),
            &files.key,
            serving_key.clone_key(),
            &provider,
        )?;
        // The peer pair is validated here too, so a broken one is refused
        // at start or reload rather than at the next peer connection.
        certified_key(
            &files.peer_cert,
            certs(&files.peer_cert, &peer_cert_pem)?,
            &files.peer_key,
            key(&files.peer_key, &peer_key_pem)?,
            &provider,
        )?;
        let peer_roots = roots(&files.peer_ca, &peer_ca_pem)?;
        let client_roots = match (&files.client_ca, &client_ca_pem) {
            (Some(p), Some(pem)) => Some(roots(p, pem)?),
            _ => None,
        };
        if let (Some(p), Some(client)) = (&files.client_ca, &client_ca_pem) {
            // A root in both bundles would make every client certificate a
            // peer's: a client could then rewrite the Raft log.
            let peer: Vec<_> = certs(&files.peer_ca, &peer_ca_pem)?;
            if certs(p, client)?.iter().any(|c| peer.contains(c)) {
                return Err(format!(
                    "{} and {} share a CA certificate: every client certificate would be a \
                     peer's; sign client certificates with their own CA",
                    p.display(),
                    files.peer_ca.display()
                ));
            }
        }

        // The handshake accepts certificates from either CA; which one a
        // certificate chains to is decided after it (`classify`).
        let mut both = peer_roots.clone();
        if let Some(c) = &client_roots {
            both.roots.extend(c.roots.iter().cloned());
        }
        let handshake = verifier(both, &provider, !files.client_cert_auth)
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
        let peer = verifier(peer_roots, &provider, false)
            .map_err(|e| format!("{}: {e}", files.peer_ca.display()))?;
        let client = client_roots
            .map(|r| verifier(r, &provider, false))
            .transpose()
            .map_err(|e| format!("client CA: {e}"))?;

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(handshake)
            .with_single_cert(chain, serving_key)
            .map_err(|e| format!("{}: {e}", files.cert.display()))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(Loaded {
            server: Arc::new(server),
            peer,
            client,
            peer_client: PeerClientTls {
                ca_pem: peer_ca_pem,
                cert_pem: peer_cert_pem,
                key_pem: peer_key_pem,
            },
            digest: digest.finalize().into(),
            generation: 0,
        })
    }

    /// What a verified certificate chain makes the connection.
    pub fn classify(&self, chain: Option<&[CertificateDer<'static>]>) -> (Option<Identity>, bool) {
        let Some((ee, rest)) = chain.and_then(|c| c.split_first()) else {
            return (None, false);
        };
        let now = UnixTime::now();
        let names = super::subject::of_certificate(ee);
        let cn = names
            .as_ref()
            .and_then(|(cn, _)| cn.clone())
            .unwrap_or_default();
        if self.peer.verify_client_cert(ee, rest, now).is_ok() {
            return (Some(Identity::peer(&cn)), true);
        }
        if let Some(client) = &self.client {
            if client.verify_client_cert(ee, rest, now).is_ok() {
                // kube-apiserver: no identity without a common name.
                if let Some((Some(user), orgs)) =
                    names.filter(|(cn, _)| cn.as_ref().is_some_and(|c| !c.is_empty()))
                {
                    return (Some(Identity::user(user, orgs)), false);
                }
            }
        }
        (None, false)
    }
}

/// The TLS material in use, swapped by the reloader.
pub struct TlsState {
    /// The files it was read from.
    pub files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl TlsState {
    /// Loads `files`; an error names the file.
    pub fn new(files: TlsFiles) -> Result<TlsState, String> {
        let loaded = Loaded::load(&files)?;
        Ok(TlsState {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The material current now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the material (after it validated).
    pub fn replace(&self, mut loaded: Loaded) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        loaded.generation = current.generation + 1;
        *current = Arc::new(loaded);
    }

    /// What `conn` proves now: its handshake's verdict while the trust
    /// material is the one it was verified under and the verdict is younger
    /// than [`REVERIFY_AFTER`]; otherwise its chain is verified again with
    /// the current CAs and the current time. So a CA removed by a reload
    /// stops working on open HTTP/2 connections at their next request, and
    /// an expired certificate within [`REVERIFY_AFTER`], without paying a
    /// signature check on every request.
    pub fn verdict(&self, conn: &ConnInfo) -> (Option<Identity>, bool) {
        let current = self.current();
        let mut v = conn.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if v.generation != current.generation || v.at.elapsed() >= REVERIFY_AFTER {
            let (identity, peer) = current.classify(conn.chain.as_deref());
            if (identity.as_ref(), peer) != (v.identity.as_ref(), v.peer) {
                tracing::info!(remote = %conn.remote, ?identity, peer, "a connection's certificate was verified again and now proves less");
            }
            *v = Verdict {
                generation: current.generation,
                at: std::time::Instant::now(),
                identity,
                peer,
            };
        }
        (v.identity.clone(), v.peer)
    }
}

/// How long a connection's certificate verdict is trusted before the
/// chain is verified again (expiry on long-lived connections).
pub const REVERIFY_AFTER: Duration = Duration::from_secs(60);

/// A connection's latest certificate verdict.
#[derive(Debug)]
struct Verdict {
    generation: u64,
    at: std::time::Instant,
    identity: Option<Identity>,
    peer: bool,
}

/// What a connection presented at its handshake; every request on it
/// carries a copy in its extensions (clones share the verdict). Read it
/// through [`TlsState::verdict`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The certificate chain the client presented, if any.
    chain: Option<Arc<[CertificateDer<'static>]>>,
    verdict: Arc<std::sync::Mutex<Verdict>>,
}

/// An accepted TLS connection and what it proved.
pub struct Conn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The stream of accepted, handshaken and classified connections on
/// `listener`. Handshakes run in their own tasks (bounded in number and
/// time), so one slow client does not hold up `accept`; a failed handshake
/// is logged at debug level and dropped. The listener closes when the
/// server drops the stream (its shutdown).
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsState>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (tcp, remote) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a
                        // little instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Small replies must not wait for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let loaded = tls.current();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let acceptor = tokio_rustls::TlsAcceptor::from(loaded.server.clone());
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let chain: Option<Arc<[CertificateDer<'static>]>> =
                    tls.get_ref().1.peer_certificates().map(Arc::from);
                let (identity, peer) = loaded.classify(chain.as_deref());
                let info = ConnInfo {
                    remote,
                    chain,
                    verdict: Arc::new(std::sync::Mutex::new(Verdict {
                        generation: loaded.generation,
                        at: std::time::Instant::now(),
                        identity,
                        peer,
                    })),
                };
                let _ = tx.send(Ok(Conn { io: tls, info })).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
