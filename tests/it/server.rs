//! In-process server tests: the server is started with `serve_on` on
//! 127.0.0.1:0 and stopped through its shutdown future; plus the real binary's
//! reaction to SIGTERM.

use crate::common;

use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use leasehold::server::{serve_on, ServeConfig};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

struct InProcess {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &std::path::Path) -> InProcess {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = ServeConfig {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let handle = tokio::spawn(serve_on(cfg, listener, async {
        let _ = rx.await;
    }));
    InProcess {
        addr,
        stop: Some(tx),
        handle,
    }
}

impl InProcess {
    fn client(&self) -> Client {
        Client::new(vec![self.addr.clone()])
            .expect("client")
            .with_timeout(Duration::from_secs(10))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("server stops within 10 s of shutdown")
            .expect("server task joins");
        r.expect("server returns Ok on a requested shutdown");
    }
}

async fn acquire(c: &Client, name: &str, holder: &str) -> pb::AcquireResponse {
    c.acquire(pb::AcquireRequest {
        namespace: "default".into(),
        name: name.into(),
        holder: holder.into(),
        lease_duration_seconds: 60,
        labels: Default::default(),
        request_id: String::new(),
    })
    .await
    .expect("acquire")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    // Wait for the single node to elect itself (writes need a leader).
    acquire(&s.client(), "warm-up", "h").await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "leasehold.v1.Leases"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection reply: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "leasehold.v1.Leases",
        "leasehold.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_then_restart_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let c = s.client();
    let first = acquire(&c, "job", "alice").await;
    s.stop().await;

    // Same data directory, new port: everything is still there and the next
    // tenure's token is greater.
    let s = start(dir.path()).await;
    let c = s.client();
    let got = c
        .get(pb::GetRequest {
            namespace: "default".into(),
            name: "job".into(),
            stale: false,
        })
        .await
        .expect("get after restart");
    let lease = got.lease.expect("lease");
    assert_eq!(
        lease.spec.as_ref().map(|s| s.holder_identity.as_str()),
        Some("alice")
    );
    assert_eq!(
        lease.status.as_ref().map(|s| s.fencing_token),
        Some(first.fencing_token)
    );
    let other = acquire(&c, "other", "bob").await;
    assert!(other.fencing_token > first.fencing_token);
    s.stop().await;
}

/// The Kubernetes API shares the port over HTTP/1.1: a kept-alive, idle
/// connection (what kubectl and urllib3 leave open) must not hold up a
/// graceful shutdown, which waits for every connection.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http1_keep_alive_connection_does_not_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    acquire(&s.client(), "warm-up", "h").await;
    let mut conn = tokio::net::TcpStream::connect(&s.addr)
        .await
        .expect("connect");
    // Two requests on one connection: it is kept alive.
    let mut seen = Vec::new();
    for _ in 0..2 {
        conn.write_all(b"GET /version HTTP/1.1\r\nHost: leasehold\r\n\r\n")
            .await
            .expect("send");
        // The answer is a small JSON object: read until its closing brace.
        let mut answer = Vec::new();
        while !answer.ends_with(b"}") {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .expect("read");
            assert!(n > 0, "connection closed after {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("\"minor\":\"32\""), "{text}");
        seen.push(text);
    }
    // The connection is idle and open; stop() requires the server to stop
    // within 10 s.
    s.stop().await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .expect("the server closes the idle connection")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "nothing more after shutdown: {rest:?} (seen {seen:?})"
    );
}

/// An open Kubernetes watch (a streaming HTTP/1.1 answer that never ends
/// by itself) must not hold up a graceful shutdown either: the stream ends
/// with its terminating chunk when the server stops.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_kubernetes_watch_ends_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    acquire(&s.client(), "watched", "h").await;
    let mut conn = tokio::net::TcpStream::connect(&s.addr)
        .await
        .expect("connect");
    conn.write_all(
        b"GET /apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1 HTTP/1.1\r\nHost: leasehold\r\n\r\n",
    )
    .await
    .expect("send");
    // The head, then the synthetic ADDED of the lease.
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"ADDED\"") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the watch's first event within 10 s")
            .expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    // stop() requires the server to stop within 10 s.
    s.stop().await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .expect("the server ends the watch")
        .expect("read");
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "the stream ends with the terminating chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Open gRPC streams must not hold up a graceful shutdown either: a
/// `Watch` and a `RenewStream` never end by themselves, so the server ends
/// both with `UNAVAILABLE` when it stops (the chaos suite's
/// graceful-restart fault found a leader held up by its watches). A
/// renewal sent before the stop is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn open_grpc_streams_end_with_unavailable_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let c = s.client();
    let held = acquire(&c, "streamed", "h").await;
    let mut watch = c
        .watch_on(
            0,
            pb::WatchRequest {
                namespace: "default".into(),
                start_revision: 1,
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the acquire's event within 10 s")
        .expect("an event")
        .expect("not the end");
    assert_eq!(
        first.lease.and_then(|l| l.metadata).map(|m| m.name),
        Some("streamed".to_string())
    );
    let mut renewals = c.renew_stream().await.expect("renew stream");
    let renewed = renewals
        .renew(pb::RenewRequest {
            namespace: "default".into(),
            name: "streamed".into(),
            holder: "h".into(),
            fencing_token: held.fencing_token,
            request_id: String::new(),
        })
        .await
        .expect("renewed through the stream");
    assert_eq!(renewed.fencing_token, held.fencing_token);

    // Both streams stay open; stop() requires the server to stop within
    // 10 s, which it cannot while it waits for them.
    s.stop().await;
    // The renewal's MODIFIED may come first; then the end.
    let status = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the watch ends");
        match next {
            Ok(Some(e)) => assert_ne!(e.revision, 0, "an event, not the end: {e:?}"),
            Ok(None) => panic!("the watch ended quietly, without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down")
            && status.message().contains("resume from revision"),
        "{status:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), renewals.next())
        .await
        .expect("the renew stream ends");
    let status = end
        .expect("a final status")
        .expect_err("the renew stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
}

/// Waits until the node answers `status` as leader; returns the status.
async fn wait_leader(c: &Client) -> pb::StatusResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = c.status().await {
            if s.state == "LEADER" && s.commit_index >= s.last_log_index {
                return s;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A process never resumes the leadership its previous process held: it
/// starts as a follower and is elected into a new term, whose blank entry
/// every read waits for. (openraft would otherwise restore it as leader of
/// its old term, and after a power cut its log may lack an entry a quorum
/// of followers synced; see `LogStore::start_as_follower`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_leader_is_elected_into_a_new_term() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let c = s.client();
    acquire(&c, "job", "alice").await;
    let before = wait_leader(&c).await;
    s.stop().await;

    let s = start(dir.path()).await;
    let c = s.client();
    let after = wait_leader(&c).await;
    assert!(
        after.term > before.term,
        "restarted into term {} (was {}): the old leadership was resumed",
        after.term,
        before.term
    );
    assert!(
        after.last_log_index > before.last_log_index,
        "the new term opened with a blank entry (last log {} then {})",
        before.last_log_index,
        after.last_log_index
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_binary_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log file"))
        .spawn()
        .expect("spawn leasehold serve");
    let c = Client::new(vec![addr.clone()])
        .expect("client")
        .with_timeout(Duration::from_secs(15));
    let r = acquire(&c, "job", "alice").await;
    assert!(r.newly_acquired);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("leasehold did not exit within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        status.success(),
        "exit status {status:?} after SIGTERM; log:\n{log}"
    );
    assert!(log.contains("shutdown requested"), "log:\n{log}");
}
