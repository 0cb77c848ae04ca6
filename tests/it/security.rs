//! Issue 14's proof: TLS on the node's port, peers authenticated by the
//! peer CA, identities from certificates and tokens, authorization rules,
//! and reloads, through real `leasehold serve` processes.
//!
//! Every certificate is made here (`leasehold::auth::pki`, the code behind
//! `leasehold certs`) into the cluster's temporary directory: a cluster CA
//! that signs the node certificate (which the nodes also present to each
//! other), a client CA for users, and an unrelated CA for a stranger.

use crate::common::{expect_err, Cluster, Deadline, Options};
use crate::kube::leader_and_follower;
use leasehold::auth::pki::{Ca, Validity};
use leasehold::client::{ClientTls, ConnectOptions};
use leasehold::proto::internal::raft_client::RaftClient;
use leasehold::proto::internal::RaftPayload;
use leasehold::proto::v1 as pb;
use leasehold::proto::v1::cluster_client::ClusterClient;
use leasehold_proto::wire::{error_info, leases_client, reason};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// Rules of every test cluster: each team in its namespace, admins
/// everywhere.
const RULES: &str = r#"
rules:
  - subjects: ["group:team-a"]
    verbs: [get, list, watch, acquire, renew, release, put, delete]
    namespaces: ["team-a"]
  - subjects: ["group:team-b"]
    verbs: [get, list, watch, acquire, renew, release, put, delete]
    namespaces: ["team-b"]
  - subjects: ["group:leasehold:admins"]
    verbs: ["*"]
    namespaces: ["*"]
"#;

/// Only admins.
const ADMINS_ONLY: &str = r#"
rules:
  - subjects: ["group:leasehold:admins"]
    verbs: ["*"]
    namespaces: ["*"]
"#;

/// The token of `carol` (group team-a) in the token file.
const CAROL_TOKEN: &str = "carol-0123456789abcdef";

/// The PKI of one test, in a directory of its own.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    client_ca: Ca,
    stranger_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let v = Validity::days(2);
        let pki = Pki {
            dir: tempfile::Builder::new()
                .prefix("leasehold-pki-")
                .tempdir()
                .expect("temp dir"),
            ca: Ca::new("leasehold-test-cluster-ca", v).expect("cluster CA"),
            client_ca: Ca::new("leasehold-test-client-ca", v).expect("client CA"),
            stranger_ca: Ca::new("stranger-ca", v).expect("stranger CA"),
        };
        pki.write("ca.crt", pki.ca.cert_pem());
        pki.write("client-ca.crt", pki.client_ca.cert_pem());
        pki.issue_node_cert("node.crt", "node.key");
        pki.write("tokens.csv", &format!("{CAROL_TOKEN},carol,carol,team-a\n"));
        for id in 1..=3 {
            pki.write(&format!("authz-{id}.yaml"), RULES);
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` atomically (a reload never sees half a file).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write pki file");
        std::fs::rename(&tmp, self.path(name)).expect("rename pki file");
    }

    /// A new node certificate (new key) from the cluster CA; returns its PEM.
    fn issue_node_cert(&self, cert: &str, key: &str) -> String {
        let pem = self
            .ca
            .issue_node("node", &["127.0.0.1".to_string()], Validity::days(2))
            .expect("node certificate");
        self.write(key, &pem.key);
        self.write(cert, &pem.cert);
        pem.cert
    }

    /// The `serve` flags of node `id`.
    fn server_args(&self, client_cert_auth: bool) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        let mut v = vec![
            "--cert-file".into(),
            p("node.crt"),
            "--key-file".into(),
            p("node.key"),
            "--trusted-ca-file".into(),
            p("client-ca.crt"),
            "--peer-trusted-ca-file".into(),
            p("ca.crt"),
            "--token-auth-file".into(),
            p("tokens.csv"),
            "--reload-interval-seconds".into(),
            "0.2".into(),
        ];
        if client_cert_auth {
            v.push("--client-cert-auth".into());
        }
        v
    }

    fn options(&self, client_cert_auth: bool) -> Options {
        Options {
            extra_args: self.server_args(client_cert_auth),
            node_args: (1..=3)
                .map(|id| {
                    let rules = self.path(&format!("authz-{id}.yaml"));
                    (
                        id,
                        vec![
                            "--authorization-file".to_string(),
                            rules.display().to_string(),
                        ],
                    )
                })
                .collect(),
            connect: self.user("admin", "leasehold:admins"),
            ..Default::default()
        }
    }

    /// TLS trusting the cluster CA, without a certificate.
    fn anonymous(&self) -> ConnectOptions {
        ConnectOptions {
            tls: Some(ClientTls::new(self.ca.cert_pem().as_bytes().to_vec())),
            token: None,
        }
    }

    fn with_cert(&self, ca: &Ca, user: &str, groups: &[&str]) -> ConnectOptions {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let pem = ca
            .issue_client(user, &groups, Validity::days(2))
            .expect("client certificate");
        ConnectOptions {
            tls: Some(
                ClientTls::new(self.ca.cert_pem().as_bytes().to_vec())
                    .with_identity(pem.cert.into_bytes(), pem.key.into_bytes()),
            ),
            token: None,
        }
    }

    /// A user with a certificate from the client CA (CN user, O group).
    fn user(&self, user: &str, group: &str) -> ConnectOptions {
        self.with_cert(&self.client_ca, user, &[group])
    }

    /// The node certificate as a client certificate: a peer.
    fn peer(&self) -> ConnectOptions {
        let read = |n: &str| std::fs::read(self.path(n)).expect("read node cert");
        ConnectOptions {
            tls: Some(
                ClientTls::new(self.ca.cert_pem().as_bytes().to_vec())
                    .with_identity(read("node.crt"), read("node.key")),
            ),
            token: None,
        }
    }

    /// carol, by bearer token.
    fn carol(&self) -> ConnectOptions {
        ConnectOptions {
            token: Some(CAROL_TOKEN.into()),
            ..self.anonymous()
        }
    }
}

/// A TLS channel to `endpoint` with `opts`'s certificate, connected now.
async fn tls_channel(opts: &ConnectOptions, endpoint: &str) -> tonic::transport::Channel {
    opts.endpoint(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// One attempt at `Leases.Acquire` on `endpoint` (no failover, no retry).
async fn acquire_once(
    endpoint: &str,
    opts: &ConnectOptions,
    ns: &str,
    name: &str,
    extra: &[(
        &'static str,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )],
) -> Result<pb::AcquireResponse, tonic::Status> {
    let channel = opts
        .endpoint(endpoint)?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let mut req = tonic::Request::new(crate::common::acquire_req(ns, name, "h", 30));
    opts.authorization()?.apply(&mut req);
    for (k, v) in extra {
        req.metadata_mut().insert(*k, v.clone());
    }
    leases_client(channel)
        .acquire(req)
        .await
        .map(tonic::Response::into_inner)
}

fn assert_forbidden(s: &tonic::Status, user: &str, verb: &str, namespace: &str) {
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let (why, meta) = error_info(s).expect("error info");
    assert_eq!(why, reason::FORBIDDEN, "{s:?}");
    assert_eq!(meta.get("user").map(String::as_str), Some(user), "{s:?}");
    assert_eq!(meta.get("verb").map(String::as_str), Some(verb), "{s:?}");
    assert_eq!(
        meta.get("namespace").map(String::as_str),
        Some(namespace),
        "{s:?}"
    );
    assert!(
        s.message().contains(user) && s.message().contains(namespace),
        "{s:?}"
    );
}

#[tokio::test]
async fn clients_need_a_certificate_from_a_trusted_ca_under_client_cert_auth() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(true)).await;
    let ep = cluster.endpoint(1);

    // Without a certificate, with one from another CA, and in plaintext:
    // no call gets through.
    let stranger = pki.with_cert(&pki.stranger_ca, "mallory", &["leasehold:admins"]);
    for (who, opts) in [
        ("no certificate", pki.anonymous()),
        ("a stranger's certificate", stranger),
        ("plaintext", ConnectOptions::default()),
    ] {
        let r = acquire_once(&ep, &opts, "team-a", "x", &[]).await;
        let s = expect_err(who, r);
        assert!(
            matches!(
                s.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
            ),
            "{who}: {s:?}"
        );
    }
    // The server's own certificate is checked by the client too: a client
    // trusting another CA refuses the node.
    let wrong_trust = ConnectOptions {
        tls: Some(ClientTls::new(
            pki.stranger_ca.cert_pem().as_bytes().to_vec(),
        )),
        token: None,
    };
    expect_err(
        "a client trusting another CA",
        acquire_once(&ep, &wrong_trust, "team-a", "x", &[]).await,
    );

    // alice's certificate from the client CA works.
    let alice = pki.user("alice", "team-a");
    let a = acquire_once(&ep, &alice, "team-a", "x", &[])
        .await
        .expect("alice acquires");
    assert!(a.fencing_token > 0);
    let got = cluster
        .client()
        .get(pb::GetRequest {
            namespace: "team-a".into(),
            name: "x".into(),
            stale: false,
        })
        .await
        .expect("admin reads");
    assert_eq!(
        got.lease
            .expect("lease")
            .spec
            .expect("spec")
            .holder_identity,
        "h"
    );
}

/// The Raft payload of a message for node `st`'s current incarnation, as a
/// peer would stamp it: everything but the certificate is right, so a
/// refusal can only come from authentication.
fn raft_payload<T: serde::Serialize>(st: &pb::StatusResponse, msg: &T) -> RaftPayload {
    RaftPayload {
        data: bincode::serialize(msg).expect("bincode"),
        cluster_id: st.cluster_id.clone(),
        to_id: st.node_id,
        to_incarnation: st.incarnation.clone(),
        format_version: leasehold::store::FORMAT_VERSION,
    }
}

async fn raft_client(
    endpoint: &str,
    opts: &ConnectOptions,
) -> RaftClient<tonic::transport::Channel> {
    let channel = opts
        .endpoint(endpoint)
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TLS connection (no client certificate is required on this cluster)");
    RaftClient::new(channel)
}

#[tokio::test]
async fn forged_vote_and_append_entries_from_outside_are_refused() {
    use leasehold::types::TypeConfig;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, Vote};

    let pki = Pki::new();
    let cluster = Cluster::start_with(3, pki.options(false)).await;
    let (leader, follower) = leader_and_follower(&cluster).await;
    let before = cluster.status(follower).await.expect("status");
    let ep = cluster.endpoint(follower);

    // A vote that would end every election for good, and entries appended
    // by a leader of a higher term.
    let forged_vote = raft_payload(
        &before,
        &VoteRequest::<u64>::new(Vote::new(u64::MAX, 99), None),
    );
    let forged_append = raft_payload(
        &before,
        &AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(before.term + 1, 99),
            prev_log_id: None,
            entries: vec![],
            leader_commit: Some(LogId::new(
                CommittedLeaderId::new(before.term + 1, 99),
                before.commit_index + 1000,
            )),
        },
    );
    let alice = pki.user("alice", "team-a");
    let admin = pki.user("admin", "leasehold:admins");
    for (who, opts, code) in [
        ("no certificate", pki.anonymous(), Code::Unauthenticated),
        ("alice's client certificate", alice, Code::PermissionDenied),
        // Even an admin client is not a peer.
        (
            "an admin's client certificate",
            admin,
            Code::PermissionDenied,
        ),
    ] {
        let mut rc = raft_client(&ep, &opts).await;
        let s = expect_err(who, rc.vote(forged_vote.clone()).await);
        assert_eq!(s.code(), code, "vote with {who}: {s:?}");
        let s = expect_err(who, rc.append_entries(forged_append.clone()).await);
        assert_eq!(s.code(), code, "append with {who}: {s:?}");
    }

    // Control: the same connection set-up with the peer certificate reaches
    // openraft, which answers a harmless vote (term 0) with a refusal in
    // its own payload: the messages above were well-formed, and only
    // authentication stopped them.
    let mut rc = raft_client(&ep, &pki.peer()).await;
    let harmless = raft_payload(&before, &VoteRequest::<u64>::new(Vote::new(0, 99), None));
    let reply = rc
        .vote(harmless)
        .await
        .expect("a peer's vote reaches openraft");
    type VoteReply = Result<
        openraft::raft::VoteResponse<u64>,
        openraft::error::RaftError<u64, openraft::error::Infallible>,
    >;
    let answer: VoteReply = bincode::deserialize(&reply.into_inner().data).expect("vote reply");
    assert!(!answer.expect("no raft error").vote_granted);

    // A few heartbeats later every node still follows the same leader in the
    // same term.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in cluster.ids() {
        let st = cluster.status(id).await.expect("status");
        assert_eq!(st.leader_id, leader, "node {id}: {st:?}");
        assert_eq!(st.term, before.term, "node {id}: {st:?}");
    }
}

#[tokio::test]
async fn identities_are_authorized_per_namespace_and_refusals_change_nothing() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(false)).await;
    let ep = cluster.endpoint(1);
    let alice = pki.user("alice", "team-a");

    // alice (certificate, group team-a) may acquire in team-a...
    acquire_once(&ep, &alice, "team-a", "x", &[])
        .await
        .expect("alice in team-a");
    // ...and not in team-b: PERMISSION_DENIED naming verb, namespace and
    // user, and nothing written.
    let rev = cluster.status(1).await.expect("status").revision;
    let s = expect_err(
        "alice in team-b",
        acquire_once(&ep, &alice, "team-b", "x", &[]).await,
    );
    assert_forbidden(&s, "alice", "acquire", "team-b");
    // The Rust client's typed error says the same.
    match leasehold::client::errors::LeaseClientError::from(s.clone()) {
        leasehold::client::errors::LeaseClientError::Denied {
            user,
            verb,
            namespace,
            ..
        } => {
            assert_eq!(
                (user.as_str(), verb.as_str(), namespace.as_str()),
                ("alice", "acquire", "team-b")
            )
        }
        e => panic!("not Denied: {e:?}"),
    }
    assert_eq!(cluster.status(1).await.expect("status").revision, rev);
    let s = expect_err(
        "admin reads team-b/x",
        cluster
            .client()
            .get(pb::GetRequest {
                namespace: "team-b".into(),
                name: "x".into(),
                stale: false,
            })
            .await,
    );
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    // carol (bearer token, group team-a): the same rules.
    let carol = pki.carol();
    acquire_once(&ep, &carol, "team-a", "y", &[])
        .await
        .expect("carol in team-a");
    let s = expect_err(
        "carol in team-b",
        acquire_once(&ep, &carol, "team-b", "y", &[]).await,
    );
    assert_forbidden(&s, "carol", "acquire", "team-b");

    // A wrong token and no credential at all are UNAUTHENTICATED.
    let wrong = ConnectOptions {
        token: Some("not-a-token".into()),
        ..pki.anonymous()
    };
    let s = expect_err(
        "a wrong token",
        acquire_once(&ep, &wrong, "team-a", "z", &[]).await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert_eq!(error_info(&s).expect("info").0, reason::UNAUTHENTICATED);
    let s = expect_err(
        "anonymous",
        acquire_once(&ep, &pki.anonymous(), "team-a", "z", &[]).await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Membership changes need the admin verb.
    let channel = tls_channel(&alice, &ep).await;
    let s = expect_err(
        "alice adds a member",
        ClusterClient::new(channel.clone())
            .add_member(pb::AddMemberRequest {
                id: 7,
                address: "127.0.0.1:1".into(),
            })
            .await,
    );
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // So do backups (the whole state, every namespace).
    let s = expect_err(
        "alice saves a backup",
        ClusterClient::new(channel.clone())
            .snapshot(pb::SnapshotRequest {})
            .await
            .map(|_| ()),
    );
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut backup = cluster
        .client()
        .snapshot_on(&ep)
        .await
        .expect("an admin saves a backup");
    let first = backup
        .message()
        .await
        .expect("first part")
        .expect("first part");
    assert!(
        matches!(first.part, Some(pb::snapshot_chunk::Part::Info(_))),
        "{first:?}"
    );
    drop(backup);
    // Status is open to any authenticated caller.
    ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .expect("alice may read Status");

    // The Kubernetes API: 403 Forbidden in upstream's shape, 401 without a
    // credential, 200 with a token over HTTP/1.1.
    let (code, body) = https_get(
        &pki,
        &ep,
        &alice,
        "/apis/coordination.k8s.io/v1/namespaces/team-b/leases",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["reason"], "Forbidden", "{body}");
    assert_eq!(
        v["message"],
        "leases.coordination.k8s.io is forbidden: User \"alice\" cannot list resource \"leases\" \
         in API group \"coordination.k8s.io\" in the namespace \"team-b\"",
    );
    let (code, body) = https_get(
        &pki,
        &ep,
        &pki.anonymous(),
        "/apis/coordination.k8s.io/v1/namespaces/team-a/leases",
    )
    .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = https_get(
        &pki,
        &ep,
        &carol,
        "/apis/coordination.k8s.io/v1/namespaces/team-a/leases",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"name\":\"x\"") && body.contains("\"name\":\"y\""),
        "{body}"
    );
}

/// GET `path` over HTTPS with HTTP/1.1 (ALPN `http/1.1`, as the Python
/// client offers), with `opts`'s certificate or token.
async fn https_get(pki: &Pki, endpoint: &str, opts: &ConnectOptions, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.ca.cert_der().clone())
        .expect("CA certificate");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut config = match opts.tls.as_ref().and_then(|t| t.identity.clone()) {
        Some((cert, key)) => {
            use rustls_pki_types::pem::PemObject;
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .expect("cert pem");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", endpoint);
    if let Some(t) = &opts.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send
        .send_request(
            req.body(http_body_util::Empty::<axum::body::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until node `id` has logged `needle`.
async fn wait_logged(cluster: &Cluster, id: u64, needle: &str) {
    let d = Deadline::new(
        format!("node {id} to log {needle:?}"),
        Duration::from_secs(10),
    );
    loop {
        let tail = cluster.log_tail(id, 200);
        if tail.contains(needle) {
            return;
        }
        d.check(tail.lines().last().unwrap_or("").to_string()).await;
    }
}

#[tokio::test]
async fn watches_are_authorized_and_end_when_a_reload_revokes_them() {
    use futures::StreamExt;
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(false)).await;
    let ep = cluster.endpoint(1);
    let alice = pki.user("alice", "team-a");
    let channel = tls_channel(&alice, &ep).await;
    let watch = |ns: &str| pb::WatchRequest {
        namespace: ns.into(),
        ..Default::default()
    };

    // A watch of team-b by alice is refused before any event, over gRPC and
    // over HTTP (403 before any body).
    let s = expect_err(
        "alice watches team-b",
        leases_client(channel.clone()).watch(watch("team-b")).await,
    );
    assert_forbidden(&s, "alice", "watch", "team-b");
    let (code, body) = https_get(
        &pki,
        &ep,
        &alice,
        "/apis/coordination.k8s.io/v1/namespaces/team-b/leases?watch=1",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    // So is a watch of every namespace.
    let s = expect_err(
        "alice watches everything",
        leases_client(channel.clone()).watch(watch("")).await,
    );
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // A watch of team-a delivers team-a's events.
    let mut events = leases_client(channel)
        .watch(watch("team-a"))
        .await
        .expect("alice watches team-a")
        .into_inner();
    let admin = cluster.client();
    admin
        .acquire(crate::common::acquire_req("team-a", "w1", "h", 30))
        .await
        .expect("acquire w1");
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("an event");
    assert!(format!("{first:?}").contains("w1"), "{first:?}");

    // A broken rules file is refused by the reload: the old rules stay.
    pki.write("authz-1.yaml", "rules: [ {subjects: }");
    wait_logged(&cluster, 1, "reload failed").await;
    acquire_once(&ep, &alice, "team-a", "w0", &[])
        .await
        .expect("the old rules still allow alice");

    // The rules drop alice's team: the next event ends her watch with
    // PERMISSION_DENIED instead of delivering it.
    pki.write("authz-1.yaml", ADMINS_ONLY);
    wait_logged(&cluster, 1, "authorization rules reloaded").await;
    admin
        .acquire(crate::common::acquire_req("team-a", "w2", "h", 30))
        .await
        .expect("acquire w2");
    let d = Deadline::new("alice's watch to be revoked", Duration::from_secs(10));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Ok(ev))) => {
                assert!(
                    !format!("{ev:?}").contains("w2"),
                    "a revoked watch delivered {ev:?}"
                );
            }
            Ok(Some(Err(s))) => {
                assert_forbidden(&s, "alice", "watch", "team-a");
                break;
            }
            Ok(None) => panic!("the watch ended without a status"),
            Err(_) => {}
        }
        d.check("no refusal yet").await;
    }
}

#[tokio::test]
async fn a_forwarded_write_is_authorized_as_its_client_and_headers_cannot_claim_an_identity() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(3, pki.options(false)).await;
    let (leader, follower) = leader_and_follower(&cluster).await;
    let (lep, fep) = (cluster.endpoint(leader), cluster.endpoint(follower));
    let alice = pki.user("alice", "team-a");
    let bob = pki.user("bob", "team-b");

    // Through the follower (forwarded to the leader) alice's write works.
    acquire_once(&fep, &alice, "team-a", "f1", &[])
        .await
        .expect("alice through a follower");

    // The leader alone stops trusting alice; the follower still would.
    pki.write(&format!("authz-{leader}.yaml"), ADMINS_ONLY);
    wait_logged(&cluster, leader, "authorization rules reloaded").await;
    let s = expect_err(
        "alice at the leader",
        acquire_once(&lep, &alice, "team-a", "f2", &[]).await,
    );
    assert_forbidden(&s, "alice", "acquire", "team-a");
    // Through the follower, the leader still sees alice (not the follower,
    // a peer that may do anything) and refuses.
    let s = expect_err(
        "alice through the follower",
        acquire_once(&fep, &alice, "team-a", "f2", &[]).await,
    );
    assert_forbidden(&s, "alice", "acquire", "team-a");

    // Back to the shared rules: the same call works again, so the refusal
    // above was the leader's rules applied to alice.
    pki.write(&format!("authz-{leader}.yaml"), RULES);
    let d = Deadline::new("the leader to allow alice again", Duration::from_secs(10));
    loop {
        match acquire_once(&fep, &alice, "team-a", "f2", &[]).await {
            Ok(_) => break,
            Err(s) => d.check(s).await,
        }
    }

    // bob claims alice's identity and a forwarded call in headers: both
    // nodes strip them (his connection is no peer's) and judge bob.
    let claimed = leasehold::auth::identity::Identity::user("alice", ["team-a".to_string()]);
    let claim = |mut req: tonic::Request<pb::AcquireRequest>| {
        req.metadata_mut().insert_bin(
            leasehold::auth::IDENTITY_HEADER,
            tonic::metadata::MetadataValue::from_bytes(&claimed.encode()),
        );
        req.metadata_mut().insert(
            leasehold::api::leases::FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        req
    };
    for ep in [&fep, &lep] {
        let channel = tls_channel(&bob, ep).await;
        let req = claim(tonic::Request::new(crate::common::acquire_req(
            "team-a", "f3", "h", 30,
        )));
        let s = expect_err(
            "bob claiming to be alice",
            leases_client(channel).acquire(req).await,
        );
        assert_forbidden(&s, "bob", "acquire", "team-a");
    }
}

/// The certificate node `endpoint` serves to a new connection.
async fn served_certificate(pki: &Pki, endpoint: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone()).expect("CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn certificates_rotate_under_load_without_an_election() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(3, pki.options(false)).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let term = cluster.status(leader).await.expect("status").term;
    let old = std::fs::read_to_string(pki.path("node.crt")).expect("node cert");

    // Load: one lease renewed back to back through every node.
    let admin = Arc::new(cluster.client());
    let a = admin
        .acquire(crate::common::acquire_req("team-a", "rot", "h", 30))
        .await
        .expect("acquire");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (admin, stop) = (admin.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match admin
                    .renew(crate::common::renew_req(
                        "team-a",
                        "rot",
                        "h",
                        a.fencing_token,
                    ))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(s) => failed.push(s),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A key that does not belong to the certificate is refused by the
    // reload: the old pair stays in use.
    let other = pki
        .ca
        .issue_node("node", &[], Validity::days(2))
        .expect("cert");
    pki.write("node.crt", &other.cert);
    for id in cluster.ids() {
        wait_logged(&cluster, id, "reload failed").await;
        assert_eq!(
            served_certificate(&pki, &cluster.endpoint(id)).await,
            der_of(&old),
            "node {id}"
        );
    }

    // The rotation proper: a new key and certificate, then SIGHUP.
    let new = pki.issue_node_cert("node.crt", "node.key");
    for id in cluster.ids() {
        cluster.signal(id, "HUP");
    }
    for id in cluster.ids() {
        let d = Deadline::new(
            format!("node {id} to serve the new certificate"),
            Duration::from_secs(10),
        );
        loop {
            if served_certificate(&pki, &cluster.endpoint(id)).await == der_of(&new) {
                break;
            }
            d.check("the old one").await;
        }
    }
    // Keep the load on while the peers reconnect with the new certificate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load task");
    assert!(
        failed.is_empty(),
        "renewals failed during the rotation: {failed:?}"
    );
    assert!(ok > 20, "only {ok} renewals");
    for id in cluster.ids() {
        let st = cluster.status(id).await.expect("status");
        assert_eq!((st.leader_id, st.term), (leader, term), "node {id}: {st:?}");
    }
    // And a write still commits (the peers talk with the new certificate).
    admin
        .acquire(crate::common::acquire_req("team-a", "after", "h", 30))
        .await
        .expect("a write after the rotation");
    cluster.assert_no_crashes();
}

#[test]
fn the_build_has_one_tls_provider_ring() {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("Cargo.lock");
    assert!(lock.contains("name = \"ring\""), "ring is the TLS provider");
    assert!(
        !lock.contains("name = \"aws-lc-sys\"") && !lock.contains("name = \"aws-lc-rs\""),
        "aws-lc entered the build: some crate enables rustls's default features; \
         two providers make rustls panic without an explicit one (see src/auth/tls.rs)"
    );
}

#[tokio::test]
async fn a_client_ca_removed_by_a_reload_stops_working_on_open_connections() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(false)).await;
    let ep = cluster.endpoint(1);
    let alice = pki.user("alice", "team-a");
    // One HTTP/2 connection, kept open across the reload.
    let channel = tls_channel(&alice, &ep).await;
    let get = || pb::ListRequest {
        namespace: "team-a".into(),
        ..Default::default()
    };
    leases_client(channel.clone())
        .list(get())
        .await
        .expect("alice lists team-a");

    // The client CA is replaced by another one: alice's certificate no
    // longer proves anything, even on the connection verified before.
    pki.write("client-ca.crt", pki.stranger_ca.cert_pem());
    wait_logged(&cluster, 1, "TLS certificates and CAs reloaded").await;
    let s = expect_err(
        "alice on her old connection",
        leases_client(channel).list(get()).await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // A new connection with her certificate fails its handshake; the
    // nodes' own certificates (the peer CA) still work.
    expect_err(
        "alice on a new connection",
        acquire_once(&ep, &alice, "team-a", "x", &[]).await,
    );
    let channel = tls_channel(&pki.peer(), &ep).await;
    ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .expect("a peer reads Status");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_authenticates_with_a_token_or_a_certificate_from_its_kubeconfig() {
    use crate::kube::{kubectl, Kubectl};
    let Some(bin) = kubectl() else {
        eprintln!("SKIPPED: kubectl not on PATH");
        return;
    };
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(false)).await;
    let server = format!("https://{}", cluster.endpoint(1));
    let alice = pki
        .client_ca
        .issue_client("alice", &["team-a".to_string()], Validity::days(2))
        .expect("cert");
    pki.write("alice.crt", &alice.cert);
    pki.write("alice.key", &alice.key);
    // Relative paths are read from the kubeconfig's directory, as
    // `leasehold certs init` writes them.
    let kubeconfig = |name: &str, user: &str| {
        let path = pki.path(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lh\n  cluster:\n    server: {server}\n    certificate-authority: ca.crt\n\
             users:\n- name: u\n  user:\n{user}\ncontexts:\n- name: lh\n  context:\n    cluster: lh\n    user: u\ncurrent-context: lh\n"
        );
        std::fs::write(&path, text).expect("kubeconfig");
        Kubectl {
            bin: bin.clone(),
            config: path,
            cache: pki.path(&format!("cache-{name}")),
        }
    };
    let carol = kubeconfig("carol.yaml", &format!("    token: {CAROL_TOKEN}"));
    let alice = kubeconfig(
        "alice.yaml",
        "    client-certificate: alice.crt\n    client-key: alice.key",
    );

    for (who, k) in [("carol", &carol), ("alice", &alice)] {
        let name = format!("by-{who}");
        let manifest = pki.path(&format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: team-a\n\
                 spec:\n  holderIdentity: {who}\n  leaseDurationSeconds: 30\n"
            ),
        )
        .expect("manifest");
        let out = k
            .ok(&["apply", "-f", &manifest.display().to_string()])
            .await;
        assert!(out.contains("created"), "{who}: {out}");
        let out = k.ok(&["get", "leases", "-n", "team-a"]).await;
        assert!(out.contains(&name), "{who}: {out}");
        let (ok, stdout, stderr) = k.run(&["get", "leases", "-n", "team-b"]).await;
        assert!(!ok, "{who} listed team-b: {stdout}");
        assert!(
            stderr.contains("Error from server (Forbidden)")
                && stderr.contains(&format!("User \"{who}\" cannot list resource \"leases\"")),
            "{who}: {stderr}"
        );
    }
    // A token the node does not know: Unauthorized. (A kubeconfig user
    // without any credential makes kubectl prompt for a password instead.)
    let stranger = kubeconfig("stranger.yaml", "    token: not-a-token");
    let (ok, _, stderr) = stranger.run(&["get", "leases", "-n", "team-a"]).await;
    assert!(
        !ok && stderr.contains("You must be logged in to the server"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_authenticates_with_a_token_over_http1_and_tls() {
    use crate::kube::python::{crud_watch, python, SKIPPED};
    let Some(py) = python().await else {
        eprintln!("{SKIPPED}");
        return;
    };
    let pki = Pki::new();
    let cluster = Cluster::start_with(3, pki.options(false)).await;
    let (_, follower) = leader_and_follower(&cluster).await;
    // carol's token; the CA by a path relative to the kubeconfig, as
    // `leasehold certs init` writes it. The client offers ALPN http/1.1
    // only (urllib3).
    let config = pki.path("python.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lh\n  cluster:\n    server: https://{}\n    certificate-authority: ca.crt\n\
             users:\n- name: carol\n  user:\n    token: {CAROL_TOKEN}\ncontexts:\n- name: lh\n  context:\n    cluster: lh\n    user: carol\n\
             current-context: lh\n",
            cluster.endpoint(follower)
        ),
    )
    .expect("kubeconfig");
    crud_watch(
        &py,
        &cluster,
        &config,
        "team-a",
        "a TLS follower with carol's token",
    )
    .await;
}

/// The `/ui` cluster view is authorized as `Status` is: with rules on, an
/// anonymous caller gets a 401 `Status` and no cluster data, any
/// authenticated one the view. The page's static files carry no data and
/// need no credential (the page then asks for a token).
#[tokio::test]
async fn the_ui_cluster_view_needs_a_credential_under_rules() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(1, pki.options(false)).await;
    let ep = cluster.endpoint(1);
    cluster.wait_for_leader(Duration::from_secs(15)).await;

    let (code, body) = https_get(&pki, &ep, &pki.anonymous(), "/ui/api/cluster").await;
    assert_eq!(code, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        (v["kind"].as_str(), v["code"].as_u64()),
        (Some("Status"), Some(401)),
        "{v}"
    );
    assert!(!body.contains("members"), "{body}");

    for who in [pki.carol(), pki.user("alice", "team-a")] {
        let (code, body) = https_get(&pki, &ep, &who, "/ui/api/cluster").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["node_id"], 1, "{v}");
    }

    let (code, page) = https_get(&pki, &ep, &pki.anonymous(), "/ui").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("/ui/app.js"), "{page}");
}
