//! `/ui`: a read-only live view of the cluster and its leases, served by
//! every node from files compiled into the binary (no build step, no
//! external assets).
//!
//! Routes:
//! - `/ui` (`index.html`), `/ui/app.js`, `/ui/style.css`: the page, its
//!   script and its style, all static;
//! - `/ui/api/cluster`: this node's view of the cluster (the Cluster
//!   service's `Status`) plus `sm_now`, the state machine time the page
//!   counts lease expiries down against.
//!
//! The leases themselves come from the Kubernetes API the node already
//! serves (LIST, then WATCH with bookmarks; a 410 relists), so the page
//! needs no lease endpoint of its own and is authorized lease by lease as
//! any Kubernetes client is. `/ui/api/cluster` is authorized as `Status`
//! is: any authenticated caller once rules are on. The static files carry
//! no data and need no credential.
//!
//! Every answer has `Content-Security-Policy: default-src 'self'` (no
//! inline script or style, no other origin, so a holder string that looks
//! like markup can do nothing even if it reached the DOM as HTML, which
//! the script never does: it writes text with `textContent` only) and
//! `Cache-Control: no-store` (a page from the previous build never runs
//! against a new API).

use crate::api::status::from_refusal;
use crate::auth::identity::Caller;
use crate::auth::Auth;
use crate::kube::status::from_grpc;
use crate::raft::node::Node;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::sync::Arc;

/// The page.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// Its script.
const APP_JS: &str = include_str!("ui/app.js");
/// Its style (a file of its own: the policy allows no inline style).
const STYLE_CSS: &str = include_str!("ui/style.css");

/// The policy on every `/ui` answer: same-origin scripts, styles and
/// fetches only; never framed; no `<base>` or form posts.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the `/ui` routes read.
struct Ui {
    node: Arc<Node>,
    auth: Arc<Auth>,
}

/// The `/ui` routes (merged into the ops router).
pub fn router(node: Arc<Node>, auth: Arc<Auth>) -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/ui/api/cluster", get(cluster))
        .with_state(Arc::new(Ui { node, auth }))
}

/// The headers every `/ui` answer carries.
fn guarded(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    guarded(body.into_response(), content_type)
}

/// `GET /ui/api/cluster`: members, leader, term, indexes, and `sm_now`.
///
/// `sm_now` is the time this node would stamp an entry with now, in the
/// state machine's time (`raft::sweeper::next_entry_time`): on the leader
/// the projection of its clock into the current epoch, elsewhere the
/// later of the last applied time and this node's clock. Expiry times are
/// in state machine time, so the page counts down against this, not the
/// browser's clock; it is for display only (expiry is decided by the
/// leader's sweeps, which the page shows when they land).
async fn cluster(State(ui): State<Arc<Ui>>, req: Request<axum::body::Body>) -> Response {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous);
    if let Err(r) = ui.auth.require_authenticated(&caller) {
        let resp = from_grpc(&from_refusal(&r), None).into_response();
        return guarded(resp, "application/json");
    }
    let s = crate::api::cluster::status(&ui.node).await;
    let (sm_now, _) = crate::raft::sweeper::next_entry_time(&ui.node);
    let members: Vec<_> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "address": m.address,
                "role": if m.role == crate::proto::v1::member::Role::Learner as i32 {
                    "learner"
                } else {
                    "voter"
                },
                "matched_index": m.matched_index,
            })
        })
        .collect();
    let body = json!({
        "node_id": s.node_id,
        "state": s.state,
        "leader_id": s.leader_id,
        "leader_address": s.leader_address,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_log_index": s.last_log_index,
        "snapshot_index": s.snapshot_index,
        "revision": s.revision,
        "cluster_id": s.cluster_id,
        "members": members,
        "sm_now": sm_now.to_micro_time(),
    });
    guarded(
        (StatusCode::OK, body.to_string()).into_response(),
        "application/json",
    )
}
