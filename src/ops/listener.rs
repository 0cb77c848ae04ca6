//! `--metrics-listen`: a second, plaintext HTTP listener that serves only
//! `/metrics`, `/healthz` and `/readyz`, with the same handlers as the
//! node's port.
//!
//! Why a second port: under `--client-cert-auth` the node's port refuses
//! every TLS handshake without a client certificate, and neither a kubelet
//! probe nor a typical Prometheus scrape has one (etcd has
//! `--listen-metrics-urls` for the same reason). What it serves is
//! read-only and needs no credential on the main port either; it never
//! reaches a lease, the Raft service or the Kubernetes API: any other path
//! is a plain 404. It is still information about the cluster (namespaces
//! by lease count, member ids), so it belongs on a private interface.
//!
//! It lives exactly as long as the node's port: started once the node runs,
//! stopped after the main port stopped (during the main port's drain it
//! keeps answering, `/readyz` with 503 "shutting down"), so
//! `server::serve_on` never returns with it still open.

use super::{healthz, metrics_text, readyz, text, Ops};
use crate::api::leases::LeasesService;
use crate::raft::node::Node;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stop waits for requests in flight (a `/readyz` waits up to
/// a second for the apply) before the listener is dropped anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The three routes, and a 404 for anything else.
pub fn router(
    node: Arc<Node>,
    leases: Arc<LeasesService>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(Arc::new(Ops {
            node,
            leases,
            stopping,
        }))
}

/// Any other path: this listener serves nothing else. A gRPC client gets
/// UNIMPLEMENTED (an unknown service, as on the node's port), anyone else a
/// plain 404 saying what is served.
async fn not_found(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(
            "this listener (--metrics-listen) serves only /metrics, /healthz and /readyz",
        )
        .into_http::<Body>();
    }
    text(
        StatusCode::NOT_FOUND,
        "not found: this listener (--metrics-listen) serves only /metrics, /healthz and /readyz\n"
            .into(),
    )
}

/// A running metrics listener.
pub struct MetricsListener {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves `router` on `listener` (HTTP/1.1 and cleartext HTTP/2) until
/// [`MetricsListener::stop`].
pub fn spawn(listener: TcpListener, router: Router) -> MetricsListener {
    let (stop, stopped) = oneshot::channel::<()>();
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        "metrics listener (plaintext, read-only): /metrics, /healthz, /readyz"
    );
    let task = tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router));
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = async {
            let _ = stopped.await;
        };
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, signal).await {
            // Probes then fail and the orchestrator restarts the node: the
            // node's own port is not affected.
            tracing::error!(?addr, "metrics listener failed: {e}");
        }
    });
    MetricsListener { stop, task }
}

impl MetricsListener {
    /// Stops accepting, lets requests in flight finish for at most
    /// [`STOP_GRACE`], and returns once the socket is closed.
    pub async fn stop(self) {
        let MetricsListener { stop, mut task } = self;
        let _ = stop.send(());
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}
