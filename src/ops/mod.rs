//! Operating a node over HTTP on its port: `/metrics` (Prometheus text),
//! `/healthz` (the process and its Raft core run) and `/readyz` (it can
//! serve current data: it knows a leader and has applied what the leader
//! had committed when asked).
//!
//! Layout:
//! - `mod.rs`: the routes and the two probes;
//! - `scrape.rs`: the gauges read from the node right before each scrape;
//! - `requests.rs`: the layer that counts and times every request;
//! - `process.rs`: memory and file descriptors from `/proc/self`;
//! - `listener.rs`: `--metrics-listen`, the same three routes on a second,
//!   plaintext port;
//! - `ui.rs` (and `ui/`): the `/ui` live view.
//!
//! The probes and `/metrics` need no credential (a scraper or a kubelet
//! has none) and say nothing about any lease beyond counts per namespace.

pub mod listener;
pub mod process;
pub mod requests;
pub mod scrape;
pub mod ui;

use crate::api::leases::LeasesService;
use crate::raft::node::Node;
use crate::telemetry::metrics;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for this node to apply what was committed.
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// What the routes read.
pub struct Ops {
    node: Arc<Node>,
    leases: Arc<LeasesService>,
    /// True once the server is stopping: not ready any more.
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// The ops routes (merged into the node's one router).
pub fn router(
    node: Arc<Node>,
    leases: Arc<LeasesService>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let ui = ui::router(node.clone(), leases.auth());
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(Ops {
            node,
            leases,
            stopping,
        }))
        .merge(ui)
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /metrics`: every series, current gauges included.
async fn metrics_text(State(ops): State<Arc<Ops>>) -> Response {
    let ready = readiness(&ops).await.is_ok();
    scrape::gauges(&ops.node, &ops.leases, ready).await;
    let families = metrics().registry.gather();
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            out,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

/// `GET /healthz`: 200 while the Raft core runs. It never depends on the
/// peers, so a partition does not get healthy nodes restarted.
async fn healthz(State(ops): State<Arc<Ops>>) -> Response {
    let m = ops.node.raft.metrics().borrow().clone();
    match &m.running_state {
        Ok(()) if m.state != ServerState::Shutdown => text(StatusCode::OK, "ok\n".into()),
        Ok(()) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "raft is shut down\n".into(),
        ),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

/// `GET /readyz`: 200 if this node knows a leader and, within a second,
/// has applied everything the cluster had committed when the probe came;
/// 503 with the reason otherwise. `?verbose` adds the figures either way.
async fn readyz(State(ops): State<Arc<Ops>>, RawQuery(q): RawQuery) -> Response {
    let verbose = q.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p == "verbose=1" || p == "verbose=true")
    });
    match readiness(&ops).await {
        Ok(why) => text(
            StatusCode::OK,
            if verbose {
                format!("ok: {why}\n")
            } else {
                "ok\n".into()
            },
        ),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Whether the node is ready, and why (or why not).
///
/// The commit index C to reach is taken when the probe comes: on the
/// leader, its own, if a quorum acknowledged it within an election
/// timeout; on a follower, the leader's as of its last heartbeat, if that
/// heartbeat is that recent (a follower cut off from the leader is not
/// ready). Then it waits up to [`APPLY_WAIT`] for applied ≥ C: a literal
/// "applied = commit" would flap under load, where applying always trails
/// committing by a few entries.
pub async fn readiness(ops: &Ops) -> Result<String, String> {
    if *ops.stopping.borrow() || ops.node.is_draining() {
        return Err("the node is shutting down".into());
    }
    let node = &ops.node;
    let m = node.raft.metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return Err(format!("raft stopped: {e}"));
    }
    let Some(leader) = m.current_leader else {
        return Err("no leader known".into());
    };
    let fresh = Duration::from_millis(node.raft.config().election_timeout_max);
    let (commit, heard) = node
        .raft
        .with_raft_state(|s| {
            (
                s.committed.map(|l| l.index).unwrap_or(0),
                s.vote_last_modified().map(|t| t.elapsed()),
            )
        })
        .await
        .map_err(|e| format!("raft stopped: {e}"))?;
    if m.state == ServerState::Leader {
        let acked = m.millis_since_quorum_ack.map(Duration::from_millis);
        if acked.is_none_or(|a| a > fresh) {
            return Err(format!(
                "leader without a recent quorum acknowledgement ({acked:?} ago)"
            ));
        }
    } else if heard.is_none_or(|h| h > fresh) {
        return Err(format!(
            "no heartbeat from leader {leader} within {fresh:?} ({heard:?} ago)"
        ));
    }
    if tokio::time::timeout(APPLY_WAIT, node.sm.wait_applied(commit))
        .await
        .is_err()
    {
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        return Err(format!(
            "applied {applied} < commit {commit} after {APPLY_WAIT:?}"
        ));
    }
    Ok(format!("leader {leader}, applied ≥ commit {commit}"))
}
