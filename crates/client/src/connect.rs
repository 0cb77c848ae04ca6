//! How a client reaches the cluster: TLS ([`ClientTls`]) and a bearer
//! token ([`ConnectOptions::token`]), and the [`Authorization`] that puts
//! the token on every request.
//!
//! Plaintext without a token stays the default, so an existing cluster and
//! its scripts keep working. A token is refused without TLS: it is a
//! password, and over plaintext anyone on the path could read and replay
//! it.

use crate::channels::endpoint;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

/// The metadata key a bearer token travels in: the HTTP `Authorization`
/// header, as Kubernetes and gRPC's own call credentials send it, so the
/// server reads gRPC and HTTP callers the same way.
pub const AUTHORIZATION: &str = "authorization";

/// Longest a TLS handshake may take. The TCP connect has its own timeout,
/// but a node that accepts connections without running (a paused process
/// or container: the kernel completes the TCP handshake) would otherwise
/// hold the connection attempt until it runs again.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS towards the cluster: the CA that signed the nodes' certificates,
/// and optionally a client certificate (the caller's identity).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM: the CA certificate(s) trusted to sign the servers' certificates.
    pub ca_pem: Vec<u8>,
    /// PEM certificate (chain) and private key presented to the server.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, when it is not the
    /// endpoint's host (e.g. a DNS name while the endpoint is an IP).
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    /// Leaves out the PEM: the identity holds a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// TLS trusting the CA(s) in `ca_pem`, with no client certificate.
    pub fn new(ca_pem: Vec<u8>) -> Self {
        ClientTls {
            ca_pem,
            identity: None,
            server_name: None,
        }
    }

    /// The same, presenting `cert_pem` (with its key `key_pem`).
    pub fn with_identity(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.identity = Some((cert_pem, key_pem));
        self
    }

    /// The same, verifying the server's certificate against `name`.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// tonic's TLS configuration for these settings.
    pub fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        c
    }

    /// Checks the PEM now, so that a wrong file is reported as such and not,
    /// later, as a failed handshake: tonic skips what it cannot parse, and a
    /// trust store left empty only shows up as "UnknownIssuer" on every
    /// connection. Also checks that the key belongs to the certificate.
    pub fn validate(&self) -> Result<(), String> {
        let cas = certificates(&self.ca_pem).map_err(|e| format!("the CA certificate: {e}"))?;
        if cas == 0 {
            return Err("the CA certificate: no PEM CERTIFICATE block".into());
        }
        if let Some((cert, key)) = &self.identity {
            if certificates(cert).map_err(|e| format!("the client certificate: {e}"))? == 0 {
                return Err("the client certificate: no PEM CERTIFICATE block".into());
            }
            PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "the client key: no PEM PRIVATE KEY block".to_string()
                }
                e => format!("the client key: {e}"),
            })?;
        }
        if let Some(name) = &self.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(format!(
                    "the TLS server name {name:?} is neither a DNS name nor an IP address"
                ));
            }
        }
        // Building a connector is what parses the key and matches it
        // against the certificate.
        endpoint("localhost:1", Some(&self.config()))
            .map(|_| ())
            .map_err(|e| format!("invalid TLS configuration: {}", error_chain(&e)))
    }
}

/// Counts the certificates in `pem`.
fn certificates(pem: &[u8]) -> Result<usize, rustls_pki_types::pem::Error> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c?;
        n += 1;
    }
    Ok(n)
}

/// An error and its sources, `a: b: c`: tonic's transport errors say only
/// "transport error" at the top, and the reason is below.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How a [`Client`](crate::Client) connects. [`Default`]: plaintext, no
/// token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// TLS, or `None` for plaintext.
    pub tls: Option<ClientTls>,
    /// A bearer token sent with every request (needs TLS).
    pub token: Option<String>,
}

impl fmt::Debug for ConnectOptions {
    /// Leaves out the token: options end up in logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ConnectOptions {
    /// tonic's TLS configuration, if TLS is on.
    pub fn tls_config(&self) -> Option<ClientTlsConfig> {
        self.tls.as_ref().map(ClientTls::config)
    }

    /// One endpoint (`host:port`, `http://` or `https://` in front is
    /// ignored) with these TLS settings and the client's connection
    /// settings, for callers that need a raw channel (a probe of one node,
    /// with its own timeouts). Pair it with [`ConnectOptions::authorization`].
    pub fn endpoint(&self, addr: &str) -> Result<tonic::transport::Endpoint, Status> {
        let addr = strip_scheme(addr);
        endpoint(addr, self.tls_config().as_ref()).map_err(|e| {
            Status::invalid_argument(format!("invalid endpoint {addr:?}: {}", error_chain(&e)))
        })
    }

    /// What puts the token on requests; an error if there is a token
    /// without TLS, or one that cannot be sent.
    pub fn authorization(&self) -> Result<Authorization, Status> {
        Authorization::new(self.token.as_deref(), self.tls.is_some())
    }
}

/// `addr` without `http://` or `https://`: the scheme is the client's
/// choice (TLS or not), not the address's.
pub(crate) fn strip_scheme(addr: &str) -> &str {
    let addr = addr.trim();
    addr.strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
}

/// Puts `authorization: Bearer <token>` on requests, marked sensitive so
/// that tonic's and hyper's logging and HPACK leave the value out (a
/// sensitive header is never added to the HTTP/2 compression table, where a
/// compression side channel could guess it). Without a token it does
/// nothing. Also an [`Interceptor`](tonic::service::Interceptor), for raw
/// channels.
#[derive(Clone, Default)]
pub struct Authorization {
    value: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.value.is_some() {
            "Authorization(Bearer <redacted>)"
        } else {
            "Authorization(none)"
        })
    }
}

impl Authorization {
    /// For `token`, over TLS or not. Refuses a token without TLS: it would
    /// be sent in clear to whoever is on the path.
    pub fn new(token: Option<&str>, tls: bool) -> Result<Self, Status> {
        let Some(token) = token else {
            return Ok(Authorization { value: None });
        };
        if !tls {
            return Err(Status::invalid_argument(
                "a bearer token (--token) needs TLS (--cacert): without it the token \
                 would be sent in clear",
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(Status::invalid_argument(
                "the bearer token (--token) is empty",
            ));
        }
        // The message never repeats the token: it is a secret.
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Status::invalid_argument(
                "the bearer token (--token) must be printable ASCII without line breaks",
            )
        })?;
        value.set_sensitive(true);
        Ok(Authorization { value: Some(value) })
    }

    /// Whether a token is attached.
    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }

    /// Adds the token to `req` (replacing any it had).
    pub fn apply<T>(&self, req: &mut Request<T>) {
        if let Some(v) = &self.value {
            req.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
    }
}

impl tonic::service::Interceptor for Authorization {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.apply(&mut req);
        Ok(req)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA, a server certificate for 127.0.0.1 and localhost signed by it,
    /// and a client certificate (CN `alice`), all PEM.
    pub struct Pki {
        pub ca: String,
        pub server_cert: String,
        pub server_key: String,
        pub client_cert: String,
        pub client_key: String,
    }

    pub fn pki() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "node-1",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(vec![], "alice", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    #[test]
    fn a_token_needs_tls_and_is_never_echoed() {
        let e = Authorization::new(Some("s3cret"), false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("--token"), "{}", e.message());
        assert!(e.message().contains("in clear"), "{}", e.message());
        assert!(!e.message().contains("s3cret"));
        let e = Authorization::new(Some("bad\ntoken"), true).unwrap_err();
        assert!(!e.message().contains("token\n"));
        assert!(Authorization::new(Some("  "), true).is_err());
        assert!(!Authorization::new(None, false).unwrap().is_set());
        let a = Authorization::new(Some(" s3cret\n"), true).unwrap();
        assert!(!format!("{a:?}").contains("s3cret"));
        let opts = ConnectOptions {
            tls: None,
            token: Some("s3cret".into()),
        };
        assert!(!format!("{opts:?}").contains("s3cret"));
        assert!(opts.authorization().is_err());
    }

    #[test]
    fn the_token_goes_in_a_sensitive_authorization_header() {
        let a = Authorization::new(Some("s3cret"), true).unwrap();
        let mut req = Request::new(());
        a.apply(&mut req);
        let v = req.metadata().get(AUTHORIZATION).unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret");
        assert!(v.is_sensitive());
        let mut i = a.clone();
        let req = tonic::service::Interceptor::call(&mut i, Request::new(())).unwrap();
        assert!(req.metadata().get(AUTHORIZATION).unwrap().is_sensitive());
    }

    #[test]
    fn tls_settings_are_checked_before_any_connection() {
        let p = pki();
        let ok = ClientTls::new(p.ca.clone().into_bytes())
            .with_identity(p.client_cert.clone().into(), p.client_key.clone().into())
            .with_server_name("localhost");
        ok.validate().unwrap();
        assert!(!format!("{ok:?}").contains("PRIVATE"));

        let e = ClientTls::new(b"not a certificate".to_vec())
            .validate()
            .unwrap_err();
        assert!(e.contains("CA certificate"), "{e}");
        // A key PEM where the CA should be: no certificate in it.
        let e = ClientTls::new(p.client_key.clone().into())
            .validate()
            .unwrap_err();
        assert!(e.contains("CA certificate"), "{e}");
        let e = ClientTls::new(p.ca.clone().into())
            .with_identity(p.client_cert.clone().into(), b"nope".to_vec())
            .validate()
            .unwrap_err();
        assert!(e.contains("client key"), "{e}");
        // The server's key with the client's certificate.
        let e = ClientTls::new(p.ca.clone().into())
            .with_identity(p.client_cert.clone().into(), p.server_key.clone().into())
            .validate()
            .unwrap_err();
        assert!(e.contains("invalid TLS configuration"), "{e}");
        let e = ClientTls::new(p.ca.clone().into())
            .with_server_name("not a name!")
            .validate()
            .unwrap_err();
        assert!(e.contains("server name"), "{e}");
    }

    #[test]
    fn endpoints_take_the_scheme_from_the_options() {
        let plain = ConnectOptions::default();
        assert_eq!(
            plain.endpoint("http://h:1").unwrap().uri().to_string(),
            "http://h:1/"
        );
        let p = pki();
        let tls = ConnectOptions {
            tls: Some(ClientTls::new(p.ca.into())),
            token: None,
        };
        assert_eq!(
            tls.endpoint("h:1").unwrap().uri().to_string(),
            "https://h:1/"
        );
        assert_eq!(strip_scheme(" https://h:1"), "h:1");
        assert_eq!(strip_scheme("http://h:1"), "h:1");
    }
}
