//! The client against a tiny in-process TLS server on 127.0.0.1:0 that
//! serves `Leases` and `Cluster` and records the `authorization` metadata
//! of every call it gets: the token reaches the server on every kind of
//! call (unary with failover, renew stream, watch), and the refusals a
//! misconfigured client meets at TLS set-up are what the CLI's hint
//! expects.

use crate::connect::tests::{pki, Pki};
use crate::{Client, ClientTls, ConnectOptions, AUTHORIZATION};
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::cluster_server::{Cluster, ClusterServer};
use leasehold_proto::v1::leases_server::{Leases, LeasesServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

/// What the server saw: (method, authorization metadata).
type Seen = Arc<Mutex<Vec<(&'static str, Option<String>)>>>;

#[derive(Clone, Default)]
struct Recorder {
    seen: Seen,
}

impl Recorder {
    fn note<T>(&self, method: &'static str, req: &Request<T>) {
        let auth = req
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((method, auth));
    }
}

type Empty<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl Leases for Recorder {
    async fn acquire(
        &self,
        r: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        self.note("acquire", &r);
        Err(Status::unimplemented("test"))
    }
    async fn renew(
        &self,
        r: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        self.note("renew", &r);
        Err(Status::unimplemented("test"))
    }
    type RenewStreamStream = Empty<pb::RenewStreamResponse>;
    async fn renew_stream(
        &self,
        r: Request<tonic::Streaming<pb::RenewRequest>>,
    ) -> Result<Response<Self::RenewStreamStream>, Status> {
        self.note("renew_stream", &r);
        Ok(Response::new(tokio_stream::empty()))
    }
    async fn release(
        &self,
        r: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.note("release", &r);
        Err(Status::unimplemented("test"))
    }
    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.note("get", &r);
        Ok(Response::new(pb::GetResponse::default()))
    }
    async fn list(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.note("list", &r);
        Err(Status::unimplemented("test"))
    }
    async fn delete(
        &self,
        r: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.note("delete", &r);
        Err(Status::unimplemented("test"))
    }
    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.note("put", &r);
        Err(Status::unimplemented("test"))
    }
    type WatchStream = Empty<pb::WatchEvent>;
    async fn watch(
        &self,
        r: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.note("watch", &r);
        Ok(Response::new(tokio_stream::empty()))
    }
}

#[tonic::async_trait]
impl Cluster for Recorder {
    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.note("status", &r);
        Ok(Response::new(pb::StatusResponse::default()))
    }
    async fn add_member(
        &self,
        r: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        self.note("add_member", &r);
        Err(Status::unimplemented("test"))
    }
    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.note("remove_member", &r);
        Err(Status::unimplemented("test"))
    }
    async fn replace_member(
        &self,
        r: Request<pb::ReplaceMemberRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        self.note("replace_member", &r);
        Err(Status::unimplemented("test"))
    }
    type SnapshotStream = Empty<pb::SnapshotChunk>;
    async fn snapshot(
        &self,
        r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.note("snapshot", &r);
        Ok(Response::new(tokio_stream::empty()))
    }
}

/// Serves on 127.0.0.1:0 with `pki`'s server certificate; requires a
/// client certificate from `pki`'s CA when `mtls`. Returns the address.
async fn serve(pki: &Pki, mtls: bool, rec: Recorder) -> String {
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        pki.server_cert.as_bytes(),
        pki.server_key.as_bytes(),
    ));
    if mtls {
        tls = tls.client_ca_root(Certificate::from_pem(pki.ca.as_bytes()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let router = Server::builder()
        .tls_config(tls)
        .expect("server tls")
        .add_service(LeasesServer::new(rec.clone()))
        .add_service(ClusterServer::new(rec));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = router.serve_with_incoming(incoming).await;
    });
    addr
}

fn options(pki: &Pki, identity: bool, token: Option<&str>) -> ConnectOptions {
    let mut tls = ClientTls::new(pki.ca.clone().into_bytes());
    if identity {
        tls = tls.with_identity(
            pki.client_cert.clone().into_bytes(),
            pki.client_key.clone().into_bytes(),
        );
    }
    ConnectOptions {
        tls: Some(tls),
        token: token.map(str::to_string),
    }
}

#[tokio::test]
async fn the_token_goes_with_every_kind_of_call() {
    let pki = pki();
    let rec = Recorder::default();
    let addr = serve(&pki, true, rec.clone()).await;
    // A dead endpoint first: the unary call fails over to the live one and
    // still carries the token there.
    let client = Client::with_options(
        vec!["127.0.0.1:1".into(), format!("https://{addr}")],
        options(&pki, true, Some("s3cret")),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    client.get(pb::GetRequest::default()).await.unwrap();
    client.status().await.unwrap();
    let mut stream = client.renew_stream().await.unwrap();
    assert!(stream.next().await.is_none());
    let mut watch = client
        .watch_on(1, pb::WatchRequest::default())
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().is_none());
    let seen = rec.seen.lock().unwrap().clone();
    let methods: Vec<_> = seen.iter().map(|(m, _)| *m).collect();
    assert_eq!(methods, ["get", "status", "renew_stream", "watch"]);
    for (m, auth) in &seen {
        assert_eq!(auth.as_deref(), Some("Bearer s3cret"), "{m}");
    }

    // Without a token, no authorization metadata at all.
    let rec2 = Recorder::default();
    let addr2 = serve(&pki, false, rec2.clone()).await;
    let client = Client::with_options(vec![addr2], options(&pki, false, None)).unwrap();
    client.status().await.unwrap();
    assert_eq!(rec2.seen.lock().unwrap()[0], ("status", None));
}

#[tokio::test]
async fn a_token_without_tls_is_refused_before_any_call() {
    let opts = ConnectOptions {
        tls: None,
        token: Some("s3cret".into()),
    };
    let Err(e) = Client::with_options(vec!["127.0.0.1:1".into()], opts) else {
        panic!("a token without TLS was accepted");
    };
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("--token"), "{}", e.message());
    let Err(e) = Client::new(vec!["https://127.0.0.1:1".into()]) else {
        panic!("an https endpoint without a CA was accepted");
    };
    assert!(e.message().contains("--cacert"), "{}", e.message());
}

/// The refusals of a misconfigured client, as the CLI's hint
/// (`src/cli/mod.rs`) sees them: a server certificate from another CA, a
/// missing client certificate, a plaintext client.
#[tokio::test]
async fn refusals_at_tls_set_up_are_recognisable() {
    let pki = pki();
    let other = crate::connect::tests::pki();
    let addr = serve(&pki, true, Recorder::default()).await;
    let call = |opts: ConnectOptions| {
        let addr = addr.clone();
        async move {
            Client::with_options(vec![addr], opts)
                .unwrap()
                .with_timeout(Duration::from_secs(2))
                .status()
                .await
                .unwrap_err()
        }
    };
    // We do not trust the server's certificate: refused at once, not
    // retried until the deadline.
    let t0 = std::time::Instant::now();
    let e = call(options(&other, false, None)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(crate::is_tls_refusal(&e), "{:?}: {}", e.code(), e.message());
    assert!(
        e.message().contains("invalid peer certificate"),
        "{}",
        e.message()
    );
    // The server does not take us without a client certificate.
    let e = call(options(&pki, false, None)).await;
    assert!(crate::status_text(&e).contains("CertificateRequired"));
    assert!(crate::is_tls_refusal(&e), "{:?}: {}", e.code(), e.message());
    // A client certificate from a CA the server does not trust.
    let mut foreign = options(&pki, false, None);
    if let Some(tls) = foreign.tls.as_mut() {
        tls.identity = Some((
            other.client_cert.clone().into_bytes(),
            other.client_key.clone().into_bytes(),
        ));
    }
    let e = call(foreign).await;
    assert!(crate::is_tls_refusal(&e), "{:?}: {}", e.code(), e.message());
    // A plaintext client of a TLS server, and a node that is down: not
    // TLS refusals.
    let e = call(ConnectOptions::default()).await;
    assert!(
        !crate::is_tls_refusal(&e),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    let e = Client::new(vec!["127.0.0.1:1".into()])
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .status()
        .await
        .unwrap_err();
    assert!(
        !crate::is_tls_refusal(&e),
        "{:?}: {}",
        e.code(),
        e.message()
    );
}
