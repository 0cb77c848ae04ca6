//! The Kubernetes `coordination.k8s.io/v1` Lease API over HTTP/1.1, on the
//! gRPC port, so that kubectl and Kubernetes client libraries can use a
//! kubeconfig pointing at any Leasehold node.
//!
//! # Layout
//! - `mod.rs`: the [`router`] of every Kubernetes path, the [`fallback`]
//!   that tells gRPC clients from HTTP ones for unknown paths, and the
//!   group, version and kind names.
//! - [`discovery`]: `/version`, `/api` (404, but for the namespaces
//!   kubectl asks about), `/apis`, the group and its resource list; the
//!   verbs served.
//! - [`leases`]: the lease read handlers (GET one, LIST), thin calls of
//!   the gRPC `Leases` service in process; `resourceVersion` semantics,
//!   paging.
//! - [`write`]: the write handlers (POST, PUT, PATCH, DELETE), thin calls
//!   of the gRPC `Put` and `Delete`; how update semantics map onto them.
//! - [`watch`]: WATCH (`?watch=1`): framing, starting points, bookmarks,
//!   how Leasehold's events map onto Kubernetes' and how a watch ends.
//! - [`input`]: request bodies: media types, bounds, field validation,
//!   the Lease and DeleteOptions they hold.
//! - [`patch`]: the four patch types, as pure functions.
//! - [`types`]: the JSON shapes of Lease, LeaseList and
//!   PartialObjectMetadata, made from the gRPC messages.
//! - [`table`]: the Table representation (`kubectl get` columns).
//! - [`duration`]: the AGE column's `HumanDuration`.
//! - [`negotiate`]: which representation `Accept` asks for.
//! - [`protobuf`]: client-go's protobuf bodies, decoded to their JSON.
//! - [`openapi`]: the OpenAPI v3 index and document (`openapi_v3.json`)
//!   that kubectl reads before `apply`, and `explain` uses.
//! - [`query`]: bounded, typed query parameters.
//! - [`fields`]: field selectors (`metadata.name`, `metadata.namespace`).
//! - [`status`]: Kubernetes `Status` errors and the one map from gRPC
//!   statuses to them.
//! - [`response`]: successful JSON answers.
//!
//! # Why on the gRPC port
//! One address per node: a kubeconfig's `server:` is the node's
//! `--listen` address. The server accepts HTTP/1.1 next to HTTP/2 (tonic's
//! `accept_http1`: each connection is sniffed, gRPC clients and peers
//! speak HTTP/2 with prior knowledge as before), and the paths do not
//! overlap (`/leasehold.v1.Leases/...` against `/api`, `/apis`,
//! `/version`). Only unknown paths need telling apart, by content type:
//! gRPC gets UNIMPLEMENTED, anything else a Kubernetes 404 `Status`.
//!
//! # What is served
//! Discovery, the OpenAPI v3 document, GET of a lease and LIST (JSON or
//! Table), and the writes: POST, PUT, PATCH (JSON patch, merge patch,
//! strategic merge patch, server-side apply) and DELETE, with JSON, YAML
//! or protobuf bodies, and WATCH. Each verb is in [`discovery::VERBS`];
//! `deletecollection` is not served. Other methods on these paths are
//! 405.

pub mod discovery;
pub mod duration;
pub mod fields;
pub mod input;
pub mod leases;
pub mod negotiate;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod query;
pub mod response;
pub mod status;
pub mod table;
pub mod types;
pub mod watch;
pub mod write;

use crate::api::leases::LeasesService;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, MethodRouter};
use axum::Router;
use status::KubeError;
use std::sync::Arc;

/// The API group.
pub const GROUP: &str = "coordination.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1";
/// `group/version`, the `apiVersion` of leases.
pub const GROUP_VERSION: &str = "coordination.k8s.io/v1";
/// The resource (plural, in paths).
pub const RESOURCE: &str = "leases";
/// The kind.
pub const KIND: &str = "Lease";
/// The list kind.
pub const LIST_KIND: &str = "LeaseList";

/// What the handlers share: the gRPC lease service they call in process,
/// and the server's stop signal (watches end on it, so that a graceful
/// shutdown does not wait for them).
pub struct Kube {
    leases: Arc<LeasesService>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Whom the request acts for (from `api::authn`); every in-process
    /// gRPC call carries it, so the Leases service authorizes both
    /// surfaces in one place.
    caller: crate::auth::identity::Caller,
}

impl Kube {
    /// A gRPC request to the in-process Leases service, as this caller.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.extensions_mut().insert(self.caller.clone());
        req
    }
}

/// The handlers' state for one request: the shared [`Kube`] with the
/// request's caller in it (anonymous if no layer set one: fails closed).
pub struct Authed(pub Arc<Kube>);

impl axum::extract::FromRequestParts<Arc<Kube>> for Authed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<Kube>,
    ) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<crate::auth::identity::Caller>()
            .cloned()
            .unwrap_or_else(crate::auth::identity::Caller::anonymous);
        Ok(Authed(Arc::new(Kube {
            leases: state.leases.clone(),
            stop: state.stop.clone(),
            caller,
        })))
    }
}

/// A route answering GET (and HEAD) with `handler`, and any other method
/// with a 405 `Status`.
fn get_only<H, T>(handler: H) -> MethodRouter<Arc<Kube>>
where
    H: axum::handler::Handler<T, Arc<Kube>>,
    T: 'static,
{
    get(handler).fallback(method_not_allowed)
}

async fn method_not_allowed() -> KubeError {
    KubeError::method_not_allowed()
}

/// Every Kubernetes path, answered from `leases`; watches end when `stop`
/// becomes true. It has no fallback of its own: the server merges it with
/// the gRPC routes and then sets [`fallback`] on the whole.
pub fn router(leases: Arc<LeasesService>, stop: tokio::sync::watch::Receiver<bool>) -> Router {
    const V1: &str = "/apis/coordination.k8s.io/v1";
    Router::new()
        .route("/version", get_only(discovery::version))
        .route("/api", any(discovery::no_core_group))
        .route("/api/{*rest}", any(discovery::no_core_group))
        .route("/api/v1/namespaces/{name}", get_only(discovery::namespace))
        .route("/apis", get_only(discovery::apis))
        .route("/apis/coordination.k8s.io", get_only(discovery::api_group))
        .route(V1, get_only(discovery::resources))
        .route(openapi::INDEX_PATH, get_only(openapi::index))
        .route(openapi::DOCUMENT_PATH, get_only(openapi::document))
        .route(&format!("{V1}/leases"), get_only(leases::list_all))
        .route(
            &format!("{V1}/namespaces/{{namespace}}/leases"),
            get(leases::list_namespaced)
                .post(write::create)
                .fallback(method_not_allowed),
        )
        .route(
            &format!("{V1}/namespaces/{{namespace}}/leases/{{name}}"),
            get(leases::get)
                .put(write::update)
                .patch(write::patch)
                .delete(write::delete)
                .fallback(method_not_allowed),
        )
        .with_state(Arc::new(Kube {
            leases,
            stop,
            caller: crate::auth::identity::Caller::anonymous(),
        }))
}

/// What answers a path no route knows: gRPC UNIMPLEMENTED to a gRPC
/// client (an unknown service, as tonic's own fallback answers), a
/// Kubernetes 404 `Status` to anyone else.
pub async fn fallback(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented("").into_http::<Body>()
    } else {
        KubeError::unknown_path().into_response()
    }
}
