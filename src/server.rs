//! `leasehold serve`: one node's server.
//!
//! One port serves everything: the client services (`Leases`, `Cluster`),
//! the peer Raft service, `grpc.health.v1` and server reflection over
//! HTTP/2, and the Kubernetes Lease API (`crate::kube`) over HTTP/1.1. Each
//! connection is sniffed (HTTP/2 prior knowledge or HTTP/1.1); the gRPC
//! routes and the Kubernetes routes share one router, whose fallback
//! answers gRPC clients with UNIMPLEMENTED and others with a Kubernetes
//! 404. (`--metrics-listen` adds a second, plaintext port serving only the
//! three ops routes, `ops::listener`, for probes that have no client
//! certificate.) The caller passes shutdown in as a future (SIGTERM/ctrl-c in
//! `main`, a oneshot in tests); on shutdown the server stops accepting
//! connections, closes idle ones (HTTP/1.1 keep-alive included), drains
//! in-flight calls, then stops Raft. A requested shutdown first marks the
//! node not ready and, on a leader, hands leadership over while
//! connections are still accepted (`raft::handoff`). A fatal storage error
//! stops the node with an error.

use crate::api::authn;
use crate::api::cluster::ClusterService;
use crate::api::leases::LeasesService;
use crate::api::limits::MAX_MESSAGE_BYTES;
use crate::api::raft_service::RaftService;
use crate::auth::{Auth, AuthConfig};
use crate::identity::{IdentityConfig, Publisher};
use crate::kube;
use crate::proto::internal::raft_server::RaftServer;
use crate::proto::v1::cluster_server::ClusterServer;
use crate::proto::v1::leases_server::LeasesServer;
use crate::raft::handoff::{HandOver, HAND_OVER_DEADLINE};
use crate::raft::node::{InitialClusterState, Node, NodeConfig, RaftTiming};
use crate::raft::sweeper;
use crate::store::StoreOptions;
use crate::types::NodeId;
use anyhow::Context;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest peer message accepted (snapshot chunks are 4 MiB).
const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// Configuration of one server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Node id (positive).
    pub id: NodeId,
    /// Address to listen on.
    pub listen: String,
    /// Address others reach this node at; defaults to the bound address.
    pub advertise: Option<String>,
    /// A second, plaintext listener serving only `/metrics`, `/healthz`
    /// and `/readyz` (`crate::ops::listener`); `None`: none.
    pub metrics_listen: Option<String>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Initial cluster (`id -> address`), used on first start only.
    pub peers: BTreeMap<NodeId, String>,
    /// What an empty data directory means: bootstrap a new cluster, or wait
    /// to be added to an existing one.
    pub initial_state: InitialClusterState,
    /// Raft timing.
    pub timing: RaftTiming,
    /// State machine options (watch history, identity garbage collection).
    pub store: StoreOptions,
    /// How to publish this node's identity lease; `None` publishes none.
    pub identity: Option<IdentityConfig>,
    /// Concurrent watches served at most (gRPC and Kubernetes together).
    pub max_watches: usize,
    /// TLS, tokens and authorization rules (all off by default).
    pub auth: AuthConfig,
    /// How often the TLS, token and rules files are checked for changes
    /// (SIGHUP checks at once).
    pub reload_interval: std::time::Duration,
    /// On a requested shutdown, a leader first hands leadership to a
    /// caught-up follower (`raft::handoff`).
    pub transfer_on_shutdown: bool,
    /// The format version spoken to peers: `store::FORMAT_VERSION`, unless
    /// a debug build plays another build (`--fault-format-version`).
    pub format_version: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            id: 1,
            listen: "127.0.0.1:7070".into(),
            advertise: None,
            metrics_listen: None,
            data_dir: PathBuf::from("leasehold-data"),
            peers: BTreeMap::new(),
            initial_state: InitialClusterState::New,
            timing: RaftTiming::default(),
            store: StoreOptions::default(),
            identity: Some(IdentityConfig::default()),
            max_watches: crate::api::limits::DEFAULT_MAX_WATCHES,
            auth: AuthConfig::default(),
            reload_interval: crate::auth::reload::DEFAULT_INTERVAL,
            transfer_on_shutdown: true,
            format_version: crate::store::FORMAT_VERSION,
        }
    }
}

/// Binds `cfg.listen` and serves until `shutdown` resolves.
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve_on(cfg, listener, shutdown).await
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn serve_on(
    cfg: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.id > 0, "--id must be a positive integer");
    let local: SocketAddr = listener.local_addr()?;
    // Bound before the node starts, so that a taken or wrong address fails
    // at once instead of after the data directory was opened.
    let metrics_listener = match &cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());
    crate::auth::tls::install_default_provider();
    let auth = Arc::new(Auth::new(cfg.auth.clone()).map_err(|e| anyhow::anyhow!(e))?);
    log_security(&auth, &advertise);
    let node_cfg = NodeConfig {
        id: cfg.id,
        advertise: advertise.clone(),
        data_dir: cfg.data_dir.clone(),
        peers: cfg.peers.clone(),
        initial_state: cfg.initial_state,
        timing: cfg.timing.clone(),
        store: cfg.store.clone(),
        peer_tls: auth
            .tls
            .as_ref()
            .map(|t| t.current().peer_client.to_tonic()),
        format_version: cfg.format_version,
    };
    let node = Node::start(node_cfg.clone()).await?;
    tracing::info!(id = cfg.id, %local, %advertise, data_dir = %cfg.data_dir.display(), "leasehold node serving");

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LeasesServer<LeasesService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::proto::INTERNAL_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let (bootstrap_tx, bootstrap_rx) = tokio::sync::oneshot::channel::<String>();
    let fatal_watch = tokio::spawn(watch_fatal(node.clone(), fatal_tx));
    // Bootstrapping needs the other initial members to answer Status, so it
    // runs while this node serves; a node that must not join (its data was
    // lost) stops with the reason.
    let bootstrap = {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.bootstrap(&node_cfg).await {
                tracing::error!("{e:#}");
                let _ = bootstrap_tx.send(format!("{e:#}"));
            }
        })
    };
    // Background work that lives exactly as long as the server.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(sweeper::run(node.clone()));
    background.spawn(count_leader_changes(node.clone()));
    {
        // New peer certificates go to the peer channels: the next call to
        // each peer connects with them (open connections are not touched).
        let channels = node.channels.clone();
        background.spawn(crate::auth::reload::run(
            auth.clone(),
            cfg.reload_interval,
            Box::new(move |loaded| channels.reset_tls(Some(loaded.peer_client.to_tonic()))),
        ));
    }
    if let Some(identity) = cfg.identity.clone() {
        let publisher = Publisher::new(
            advertise.clone(),
            cfg.id,
            &node.meta.incarnation(),
            identity,
            node.channels.clone(),
        )?;
        tracing::info!(holder = publisher.holder(), "publishing identity lease");
        background.spawn(publisher.run());
    }
    let stop = async move {
        let bootstrap_failed = async {
            match bootstrap_rx.await {
                Ok(why) => why,
                // Bootstrap finished without error: never resolve.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => None,
            r = fatal_rx => r.ok(),
            why = bootstrap_failed => Some(why),
        }
    };
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    // Long-lived responses end on this (Kubernetes watches with their
    // terminating chunk, gRPC watches and renew streams with UNAVAILABLE),
    // so that the graceful shutdown below does not wait for them.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let signal = {
        let (node, health) = (node.clone(), health_reporter.clone());
        let transfer = cfg.transfer_on_shutdown;
        async move {
            let why = stop.await;
            if why.is_none() {
                // Requested: still accepting connections, so that writes
                // queued during the hand-over can be answered (forwarded).
                drain(&node, &health, transfer).await;
            }
            let _ = stopping_tx.send(true);
            let _ = stopped_tx.send(why);
        }
    };

    // One Leases service for both surfaces: the Kubernetes handlers call
    // it in process, so forwarding, linearizable reads and the error map
    // are the gRPC ones.
    let leases = Arc::new(
        LeasesService::new(node.clone())
            .with_max_watches(cfg.max_watches)
            .with_auth(auth.clone())
            .with_stopping(crate::api::stopping::Stopping::new(stopping_rx.clone())),
    );
    let mut grpc = tonic::service::Routes::builder();
    grpc.add_service(health_service)
        .add_service(reflection)
        .add_service(
            LeasesServer::from_arc(leases.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ClusterServer::new(ClusterService::new(
            node.clone(),
            auth.clone(),
        )))
        .add_service(
            RaftServer::new(
                RaftService::new(node.raft.clone(), node.meta.clone())
                    .with_format_version(cfg.format_version),
            )
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE),
        );
    // Started here, after the last early return: it is stopped below on
    // every path, after the main port (it answers 503 "shutting down" on
    // /readyz while the main port drains).
    let metrics = metrics_listener.map(|l| {
        crate::ops::listener::spawn(
            l,
            crate::ops::listener::router(node.clone(), leases.clone(), stopping_rx.clone()),
        )
    });
    // The gRPC routes bring tonic's UNIMPLEMENTED fallback, the Kubernetes
    // router none (axum refuses to merge two); `kube::fallback` then
    // replaces it for the whole.
    let app = kube::router(leases.clone(), stopping_rx.clone())
        .merge(crate::ops::router(node.clone(), leases, stopping_rx))
        .merge(grpc.routes().into_axum_router())
        .fallback(kube::fallback);
    // Who each request acts for, before any route (gRPC, Raft and the
    // Kubernetes API alike). Without TLS there is nobody to tell apart
    // (tokens and rules need TLS, `Auth::new`): every caller is anonymous
    // and may do anything, which the services' checks see from the
    // missing `Caller`, so the layer is left out of the hot path.
    let app = if auth.tls.is_some() {
        app.layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            authn::authenticate,
        ))
    } else {
        app
    };
    // Outermost: every request is counted and timed, refusals included.
    let app = app.layer(axum::middleware::from_fn(crate::ops::requests::track));

    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // HTTP/1.1 for the Kubernetes API (kubectl and the Python client
        // speak nothing else over plain http); HTTP/2 stays as it was.
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app).prepare());
    let result = match auth.tls.clone() {
        // Our own TLS accept loop (ALPN h2 and http/1.1, reloadable); see
        // `auth::tls`.
        Some(tls) => {
            server
                .serve_with_incoming_shutdown(crate::auth::tls::incoming(listener, tls), signal)
                .await
        }
        // Accepted sockets get TCP_NODELAY here: the builder's
        // `tcp_nodelay` applies only to listeners tonic binds itself, and
        // without it a small reply can wait for the peer's delayed ACK
        // (about 40 ms; it showed as the p99 of single-client writes).
        None => {
            server
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    signal,
                )
                .await
        }
    };
    if let Some(m) = metrics {
        m.stop().await;
    }
    bootstrap.abort();
    background.shutdown().await;
    node.shutdown().await;
    // Nothing of this node may outlive the call (it holds the data
    // directory's lock).
    fatal_watch.abort();
    let _ = fatal_watch.await;
    result.context("server failed")?;
    if let Ok(Some(fatal)) = stopped_rx.await {
        anyhow::bail!("node stopped: {fatal}");
    }
    tracing::info!(id = cfg.id, "leasehold node stopped");
    Ok(())
}

/// The start of a requested shutdown: not ready any more (`/readyz` 503,
/// gRPC health NOT_SERVING), and a leader hands over to a caught-up
/// follower first if `transfer` (`raft::handoff`).
async fn drain(node: &Node, health: &tonic_health::server::HealthReporter, transfer: bool) {
    node.set_draining();
    health
        .set_not_serving::<LeasesServer<LeasesService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if !transfer {
        if node.is_leader() {
            tracing::info!(
                "stopping without handing leadership over (--transfer-on-shutdown false)"
            );
        }
        return;
    }
    match node.hand_over(HAND_OVER_DEADLINE).await {
        HandOver::NotNeeded(why) => tracing::debug!(why, "no hand-over"),
        HandOver::Done { target, took } => {
            tracing::info!(target, ?took, "handed leadership over before stopping")
        }
        HandOver::Failed { result, why } => tracing::warn!(
            result,
            "could not hand leadership over ({why}); stopping anyway: the cluster elects a \
             leader after an election timeout"
        ),
    }
}

/// Counts each new leader this node sees (`leasehold_raft_leader_changes_total`).
async fn count_leader_changes(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut last = rx.borrow().current_leader;
    while rx.changed().await.is_ok() {
        let now = rx.borrow().current_leader;
        if now.is_some() && now != last {
            crate::telemetry::metrics().leader_changes.inc();
        }
        if now.is_some() {
            last = now;
        }
    }
}

/// Says loudly what is not protected: the quick start runs without TLS or
/// authorization, and an operator must not mistake it for a secured node.
fn log_security(auth: &Auth, advertise: &str) {
    match &auth.tls {
        None => tracing::warn!(
            "TLS is off: peer RPCs are unauthenticated; anyone who can reach {advertise} can \
             rewrite the Raft log, and every client may do anything (see README, \"Securing a cluster\")"
        ),
        Some(t) => tracing::info!(
            client_ca = ?t.files.client_ca,
            peer_ca = %t.files.peer_ca.display(),
            client_cert_auth = t.files.client_cert_auth,
            "TLS on; peer RPCs need a certificate from the peer CA"
        ),
    }
    match auth.rule_count() {
        None => tracing::warn!(
            "authorization is off: every client may do anything in every namespace \
             (--authorization-file turns it on)"
        ),
        Some(n) => tracing::info!(rules = n, "authorization on (default deny)"),
    }
}

/// Resolves `tx` with a description if Raft stops on its own (a storage error
/// or another fatal condition): the node must not keep answering clients.
async fn watch_fatal(node: Arc<Node>, tx: tokio::sync::oneshot::Sender<String>) {
    let mut rx = node.raft.metrics();
    loop {
        if let Err(fatal) = &rx.borrow().running_state {
            if matches!(fatal, openraft::error::Fatal::Stopped) {
                // Our own shutdown (`Node::shutdown`), not a failure.
                return;
            }
            tracing::error!("raft stopped: {fatal}");
            let _ = tx.send(fatal.to_string());
            return;
        }
        if rx.changed().await.is_err() {
            // The Raft core is gone without a recorded fatal error (a panic
            // in openraft). On a requested shutdown nobody listens any more,
            // so sending is harmless there.
            let _ = tx.send("raft core exited unexpectedly".into());
            return;
        }
    }
}
