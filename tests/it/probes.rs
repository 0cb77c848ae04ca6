//! `--metrics-listen`: the plaintext listener for probes and scrapes.
//!
//! - A TLS node with `--client-cert-auth` (certificates made here with
//!   `leasehold::auth::pki`, as `tests/it/security.rs` does): its port
//!   answers nothing without a client certificate, while the metrics
//!   listener serves `/metrics`, `/healthz` and `/readyz` in plaintext, and
//!   nothing else (404, and UNIMPLEMENTED for gRPC).
//! - In process (`serve_on`): the listener closes when the server returns,
//!   an idle keep-alive connection does not hold the shutdown, and a taken
//!   address fails the start naming the flag.

use crate::common::{free_ports, Cluster, Deadline, Options};
use crate::kube::Http;
use leasehold::auth::pki::{Ca, Validity};
use leasehold::client::{ClientTls, ConnectOptions};
use leasehold::proto::v1 as pb;
use leasehold::proto::v1::cluster_client::ClusterClient;
use leasehold::server::{serve_on, ServeConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

/// Paths the metrics listener must not serve: the lease API, discovery,
/// the live view, gRPC, and near-misses of its own routes.
const NOT_SERVED: &[&str] = &[
    "/",
    "/metricsx",
    "/healthz/x",
    "/readyz/",
    "/version",
    "/api",
    "/apis/coordination.k8s.io/v1/leases",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/x",
    "/ui",
    "/leasehold.v1.Cluster/Status",
];

/// GET `path` on a new plaintext HTTP/1.1 connection: (status, body).
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut http = Http::open(addr).await;
    let r = http.request("GET", path, None).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Polls `/readyz` on `addr` until it answers 200 (the listener may not
/// be bound yet when the server was just spawned).
async fn wait_ready(addr: &str) {
    let d = Deadline::new(
        format!("/readyz on {addr} to answer 200"),
        Duration::from_secs(20),
    );
    loop {
        let last = match TcpStream::connect(addr).await {
            Err(e) => format!("connect: {e}"),
            Ok(_) => {
                let (code, body) = get(addr, "/readyz?verbose").await;
                if code == 200 {
                    assert!(body.starts_with("ok: leader 1"), "{body}");
                    return;
                }
                format!("{code} {body}")
            }
        };
        d.check(last).await;
    }
}

/// The first bytes a plaintext HTTP/1.1 request to `addr` gets back
/// (empty if the connection is closed or nothing comes within 5 s).
async fn plaintext_reply(addr: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_listener_serves_probes_in_plaintext_under_client_cert_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Validity::days(2);
    let ca = Ca::new("probes-cluster-ca", v).expect("cluster CA");
    let client_ca = Ca::new("probes-client-ca", v).expect("client CA");
    let node = ca
        .issue_node("node", &["127.0.0.1".to_string()], v)
        .expect("node certificate");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write pki file");
        p.display().to_string()
    };
    let metrics_addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let admin = client_ca
        .issue_client("admin", &["leasehold:admins".to_string()], v)
        .expect("client certificate");
    let opts = Options {
        extra_args: vec![
            "--cert-file".into(),
            write("node.crt", &node.cert),
            "--key-file".into(),
            write("node.key", &node.key),
            "--peer-trusted-ca-file".into(),
            write("ca.crt", ca.cert_pem()),
            "--trusted-ca-file".into(),
            write("client-ca.crt", client_ca.cert_pem()),
            "--client-cert-auth".into(),
            "--metrics-listen".into(),
            metrics_addr.clone(),
        ],
        connect: ConnectOptions {
            tls: Some(
                ClientTls::new(ca.cert_pem().as_bytes().to_vec())
                    .with_identity(admin.cert.into_bytes(), admin.key.into_bytes()),
            ),
            token: None,
        },
        ..Default::default()
    };
    let cluster = Cluster::start_with(1, opts).await;
    let main = cluster.endpoint(1);

    // The node's port: nothing without a client certificate. A plaintext
    // request gets no HTTP answer, and a TLS client without a certificate
    // fails the handshake; the harness' client, with one, is served.
    let reply = plaintext_reply(&main).await;
    assert!(
        !reply.starts_with(b"HTTP/1.1 200"),
        "plaintext on the TLS port: {:?}",
        String::from_utf8_lossy(&reply)
    );
    let anonymous = ConnectOptions {
        tls: Some(ClientTls::new(ca.cert_pem().as_bytes().to_vec())),
        token: None,
    };
    let status = async {
        let channel: tonic::transport::Channel = anonymous
            .endpoint(&main)?
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
        ClusterClient::new(channel)
            .status(pb::StatusRequest::default())
            .await
            .map(tonic::Response::into_inner)
    };
    let s = status
        .await
        .expect_err("Status without a client certificate");
    assert!(
        matches!(
            s.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
        ),
        "{s:?}"
    );
    cluster
        .status(1)
        .await
        .expect("Status with a client certificate");

    // The metrics listener: the three routes, in plaintext, no credential.
    wait_ready(&metrics_addr).await;
    assert_eq!(
        get(&metrics_addr, "/healthz").await,
        (200, "ok\n".to_string())
    );
    let mut http = Http::open(&metrics_addr).await;
    let r = http.request("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap_or("");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(r.body).expect("UTF-8 metrics");
    for line in [
        "leasehold_raft_is_leader 1",
        "leasehold_raft_leader_id 1",
        "leasehold_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // Same connection again: kept alive like the node's port.
    let r = http.request("GET", "/readyz", None).await;
    assert_eq!(r.status, 200);

    // Nothing else: every other path is a plain 404 naming what is served.
    for path in NOT_SERVED {
        let (code, body) = get(&metrics_addr, path).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(
            body.contains("serves only /metrics, /healthz and /readyz"),
            "{path}: {body}"
        );
    }
    let r = Http::open(&metrics_addr)
        .await
        .request("POST", "/metrics", None)
        .await;
    assert_eq!(r.status, 405, "POST /metrics");
    // And no gRPC: a Status call in cleartext HTTP/2 is UNIMPLEMENTED.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{metrics_addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over h2c");
    let s = ClusterClient::new(channel)
        .status(pb::StatusRequest::default())
        .await
        .expect_err("Status on the metrics listener");
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
    cluster.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_listener_stops_with_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = ServeConfig {
        data_dir: dir.path().join("data"),
        metrics_listen: Some(metrics_addr.clone()),
        identity: None,
        ..Default::default()
    };
    let mut server = tokio::spawn(serve_on(cfg, listener, async {
        let _ = rx.await;
    }));
    wait_ready(&metrics_addr).await;
    // An idle keep-alive connection must not hold the shutdown.
    let mut idle = Http::open(&metrics_addr).await;
    assert_eq!(idle.request("GET", "/healthz", None).await.status, 200);

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(15), &mut server)
        .await
        .expect("serve_on returns within 15 s of shutdown")
        .expect("server task joins")
        .expect("a requested shutdown returns Ok");
    // Still in this process, the listener is closed.
    let e = TcpStream::connect(&metrics_addr)
        .await
        .expect_err("the metrics listener is closed once serve_on returned");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_metrics_address_fails_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = ServeConfig {
        data_dir: dir.path().join("data"),
        metrics_listen: Some(taken_addr.clone()),
        identity: None,
        ..Default::default()
    };
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        serve_on(cfg, listener, std::future::pending()),
    )
    .await
    .expect("the start fails at once");
    let e = format!("{:#}", r.expect_err("a taken --metrics-listen address"));
    assert!(
        e.contains("--metrics-listen") && e.contains(&taken_addr),
        "{e}"
    );
    // Refused before the node opened its data directory.
    assert!(!dir.path().join("data").exists(), "{e}");
}
