//! Counting and timing every request, in one layer in front of the whole
//! router (so refusals by authentication count too).
//!
//! Labels are bounded: a gRPC method is its full name only if our
//! services define it (read from the descriptor sets at start), else
//! `unknown`; an HTTP route is one of a fixed set of path patterns, else
//! `other`. A random path therefore cannot create series.
//!
//! A gRPC call's code is read from its response headers: errors are
//! answered "trailers-only" (the status in the headers); a call whose
//! status comes after a first message (a stream) counts as `OK` at its
//! start. Streams are counted, not timed.

use crate::telemetry::metrics;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use prost::Message;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

/// Every gRPC method we serve: full name -> whether it streams.
static METHODS: LazyLock<HashMap<String, bool>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for set in [
        crate::proto::FILE_DESCRIPTOR_SET,
        crate::proto::INTERNAL_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for m in service.method {
                    let name = format!("/{package}.{service_name}/{}", m.name.unwrap_or_default());
                    let streams =
                        m.client_streaming.unwrap_or(false) || m.server_streaming.unwrap_or(false);
                    out.insert(name, streams);
                }
            }
        }
    }
    out
});

/// The route label of an HTTP path.
pub fn route(path: &str) -> &'static str {
    const V1: &str = "/apis/coordination.k8s.io/v1";
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match path {
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/version" => "/version",
        "/api" | "/apis" | "/apis/coordination.k8s.io" | V1 => "discovery",
        p if p.starts_with("/openapi/") => "openapi",
        p if p == "/ui" || p.starts_with("/ui/") => "ui",
        p if p == format!("{V1}/leases") => "leases (all namespaces)",
        p if p.starts_with(V1) => match parts.len() {
            7 if parts[4] == "namespaces" && parts[6] == "leases" => "leases (namespace)",
            8 if parts[4] == "namespaces" && parts[6] == "leases" => "lease",
            _ => "other",
        },
        _ => "other",
    }
}

/// The name of a gRPC status code, without allocating.
fn code_name(code: i32) -> &'static str {
    use tonic::Code::*;
    match tonic::Code::from_i32(code) {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The layer (axum `from_fn`). The labels are chosen before the call
/// (static strings: nothing is allocated per request).
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let label: (&'static str, bool) = if grpc {
        match METHODS.get_key_value(req.uri().path()) {
            Some((name, streams)) => (name.as_str(), *streams),
            None => ("unknown", false),
        }
    } else {
        (route(req.uri().path()), false)
    };
    let resp = next.run(req).await;
    let m = metrics();
    let elapsed = start.elapsed().as_secs_f64();
    if grpc {
        let (method, streams) = label;
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or("Ok", code_name);
        m.grpc_requests.with_label_values(&[method, code]).inc();
        if !streams {
            m.grpc_duration
                .with_label_values(&[method])
                .observe(elapsed);
        }
    } else {
        let route = label.0;
        m.http_requests
            .with_label_values(&[route, resp.status().as_str()])
            .inc();
        m.http_duration.with_label_values(&[route]).observe(elapsed);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_our_descriptors() {
        assert_eq!(METHODS.get("/leasehold.v1.Leases/Acquire"), Some(&false));
        assert_eq!(METHODS.get("/leasehold.v1.Leases/Watch"), Some(&true));
        assert!(METHODS.contains_key("/leasehold.internal.v1.Raft/AppendEntries"));
        assert!(METHODS.contains_key("/grpc.health.v1.Health/Check"));
        assert!(!METHODS.contains_key("/x.Y/Z"));
    }

    #[test]
    fn routes_are_a_fixed_set() {
        let v1 = "/apis/coordination.k8s.io/v1";
        assert_eq!(
            route(&format!("{v1}/namespaces/a/leases")),
            "leases (namespace)"
        );
        assert_eq!(route(&format!("{v1}/namespaces/a/leases/b")), "lease");
        assert_eq!(route(&format!("{v1}/leases")), "leases (all namespaces)");
        assert_eq!(route("/random/path/12345"), "other");
        assert_eq!(route("/metrics"), "/metrics");
        assert_eq!(route("/ui"), "ui");
        assert_eq!(route("/ui/api/cluster"), "ui");
        assert_eq!(route("/uix"), "other");
    }
}
