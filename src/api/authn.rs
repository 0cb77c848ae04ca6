//! Authentication: the one layer in front of every route (gRPC and the
//! Kubernetes API alike) that decides who a request acts for and attaches
//! it as an [`auth::identity::Caller`] extension.
//!
//! In order:
//! 1. Under TLS, the forwarding headers (`x-leasehold-forwarded`,
//!    `x-leasehold-identity-bin`) are removed unless the connection is a
//!    peer's: a client can neither claim an identity nor keep its call
//!    from being forwarded by setting a header.
//! 2. Under TLS, the peer Raft service (`/leasehold.internal.*`) answers
//!    only peers, before openraft or even the body decoder sees the
//!    request: UNAUTHENTICATED without a certificate, PERMISSION_DENIED
//!    for a client's.
//! 3. The identity: on a peer's connection, the forwarded identity if
//!    there is one, else the peer itself; else the client certificate's;
//!    else a bearer token's (an unknown token is refused here, 401 /
//!    UNAUTHENTICATED); else anonymous. A certificate wins over a token,
//!    as in kube-apiserver.
//!
//! What each identity may do is checked later, per call, in the services
//! (`api::leases`, `api::cluster`), so that forwarded and in-process calls
//! share the check.

use super::leases::FORWARDED_HEADER;
use super::status::from_refusal;
use crate::auth::identity::{Caller, Identity};
use crate::auth::tls::ConnInfo;
use crate::auth::{Auth, Refusal, IDENTITY_HEADER};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::Arc;

/// Path prefix of the peer-only services.
const PEER_SERVICES: &str = "/leasehold.internal.";

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A refusal in the caller's protocol: a gRPC status, or a Kubernetes
/// `Status` (401 Unauthorized, 403 Forbidden) with upstream's shape.
fn refuse(grpc: bool, r: &Refusal) -> Response {
    if grpc {
        return from_refusal(r).into_http::<Body>();
    }
    let (code, reason, message) = match r {
        Refusal::Unauthenticated(_) => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".to_string(),
        ),
        Refusal::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden", r.to_string()),
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    if code == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"leasehold\""),
        );
    }
    resp
}

/// The forwarded identity of a peer's request, if it carries one.
fn forwarded_identity(req: &Request) -> Option<Identity> {
    let v = req.headers().get(IDENTITY_HEADER)?.to_str().ok()?;
    // gRPC binary metadata is base64, padded or not.
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(v.trim_end_matches('='))
        .ok()?;
    Identity::decode(&bytes)
}

/// The layer (axum `from_fn_with_state`).
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let grpc = is_grpc(&req);
    let remote = req.extensions().get::<ConnInfo>().map(|c| c.remote);
    // The connection's certificate, verified again if the CAs changed or
    // the verdict is old (`TlsState::verdict`).
    let (cert_identity, peer) = match (&auth.tls, req.extensions().get::<ConnInfo>()) {
        (Some(tls), Some(conn)) => tls.verdict(conn),
        _ => (None, false),
    };
    let tls = auth.tls.is_some();
    if tls && !peer {
        req.headers_mut().remove(FORWARDED_HEADER);
        req.headers_mut().remove(IDENTITY_HEADER);
    }
    if tls && !peer && req.uri().path().starts_with(PEER_SERVICES) {
        let r = match cert_identity {
            None => {
                Refusal::Unauthenticated("peer RPCs need a certificate from the peer CA".into())
            }
            Some(id) => Refusal::Forbidden {
                user: id.user,
                verb: crate::auth::rules::Verb::Admin,
                namespace: None,
                name: None,
            },
        };
        tracing::warn!(?remote, path = req.uri().path(), "peer RPC refused: {r}");
        return refuse(true, &r);
    }
    let identity = if peer {
        forwarded_identity(&req).or(cert_identity)
    } else if let Some(id) = cert_identity {
        Some(id)
    } else if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        match auth.token_identity(v) {
            Ok(id) => id,
            Err(r) => return refuse(grpc, &r),
        }
    } else {
        None
    };
    req.extensions_mut().insert(Caller {
        identity: identity.unwrap_or_else(Identity::anonymous),
        peer,
    });
    next.run(req).await
}
