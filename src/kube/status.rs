//! Kubernetes `Status` errors, and the one map from gRPC statuses to them.
//!
//! Every failure of the HTTP surface is a [`KubeError`]: the body is a
//! `Status` object (`kind: Status`, `apiVersion: v1`) whose `code` equals
//! the HTTP status, with the apiserver's `reason`, because clients decide
//! on `reason` and `code` (client-go's `IsNotFound`, the Python client's
//! `exc.status == 404`), and retry only what the apiserver marks
//! retryable. Handlers call the gRPC service in process, so nearly every
//! error arrives as a `tonic::Status` with Leasehold's `ErrorInfo`;
//! [`from_grpc`] is the only place that turns one into the other:
//!
//! | gRPC code / ErrorInfo reason              | HTTP | reason               |
//! |-------------------------------------------|------|----------------------|
//! | NOT_FOUND                                 | 404  | `NotFound` (details name, group, kind = resource) |
//! | INVALID_ARGUMENT                          | 400  | `BadRequest` (the field in `details.causes`) |
//! | ALREADY_EXISTS                            | 409  | `AlreadyExists`      |
//! | ABORTED / CONFLICT, FAILED_PRECONDITION   | 409  | `Conflict`           |
//! | OUT_OF_RANGE / COMPACTED, WATCHER_TOO_SLOW| 410  | `Expired`            |
//! | UNAVAILABLE (no leader, no quorum, leader unreachable) | 503 | `ServiceUnavailable`, `Retry-After: 1` |
//! | RESOURCE_EXHAUSTED (other)                | 429  | `TooManyRequests`, `Retry-After: 1` |
//! | DEADLINE_EXCEEDED (OUTCOME_UNKNOWN or not) | 504 | `Timeout`            |
//! | anything else                             | 500  | `InternalError`      |
//!
//! `Retry-After` goes only on answers where nothing was proposed (503 from
//! the not-leader and no-quorum paths, 429): client-go re-sends any request,
//! writes included, that gets a 429 or 5xx *with* that header, so a 504
//! after a write whose outcome is unknown must not carry it.

use crate::api::status::{error_info, reason};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

use super::{GROUP, RESOURCE};

/// Seconds a client is told to wait before retrying a 503 or 429.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// `metav1.Status` as the apiserver writes it for a failure.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `Status`.
    pub kind: &'static str,
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always empty (`{}`).
    pub metadata: EmptyMeta,
    /// `Failure`.
    pub status: &'static str,
    /// A human-readable description.
    pub message: String,
    /// The machine-readable reason (`NotFound`, `BadRequest`, ...).
    pub reason: &'static str,
    /// Facts about the object or the cause; `{}` when there are none, as
    /// upstream writes it for an unknown path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code, repeated.
    pub code: u16,
}

/// An empty `metadata: {}`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct EmptyMeta {}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The *resource* (`leases`), as upstream fills it for NotFound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What went wrong, field by field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Mirrors the `Retry-After` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// `FieldValueInvalid`, `FieldValueForbidden`, ...
    pub reason: String,
    /// What is wrong with the field.
    pub message: String,
    /// The field (or query parameter) at fault; absent when the cause is
    /// about no field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// A failed request: its HTTP status and the `Status` body (boxed: errors
/// travel through every `Result` of the handlers, and the body is large).
#[derive(Debug, Clone, PartialEq)]
pub struct KubeError {
    /// The HTTP status (also `status.code`).
    pub http: StatusCode,
    /// The body.
    pub status: Box<Status>,
}

impl KubeError {
    /// An error with `code`, `reason` and `message` and no details.
    pub fn new(http: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        KubeError {
            http,
            status: Box::new(Status {
                kind: "Status",
                api_version: "v1",
                metadata: EmptyMeta {},
                status: "Failure",
                message: message.into(),
                reason,
                details: None,
                code: http.as_u16(),
            }),
        }
    }

    /// With these details.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.status.details = Some(details);
        self
    }

    /// 400 BadRequest about query parameter (or header) `param`, naming it
    /// in the message and in `details.causes`.
    pub fn bad_param(param: &str, what: impl std::fmt::Display) -> Self {
        let message = format!("invalid {param}: {what}");
        KubeError::new(StatusCode::BAD_REQUEST, "BadRequest", message.clone()).with_details(
            StatusDetails {
                causes: vec![StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message,
                    field: param.into(),
                }],
                ..Default::default()
            },
        )
    }

    /// 422 Invalid of a `ListOptions` (the apiserver's answer to a
    /// combination of list parameters it refuses), naming the parameter.
    pub fn invalid_list_options(param: &str, cause: &str, what: &str) -> Self {
        KubeError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {param}: {what}"),
        )
        .with_details(StatusDetails {
            group: Some("meta.k8s.io".into()),
            kind: Some("ListOptions".into()),
            causes: vec![StatusCause {
                reason: cause.into(),
                message: what.into(),
                field: param.into(),
            }],
            ..Default::default()
        })
    }

    /// 404 for a path this server does not serve (upstream's words, `{}`
    /// details).
    pub fn unknown_path() -> Self {
        KubeError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(StatusDetails::default())
    }

    /// 404 for a missing lease.
    pub fn lease_not_found(name: &str) -> Self {
        KubeError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{RESOURCE}.{GROUP} \"{name}\" not found"),
        )
        .with_details(lease_details(name))
    }

    /// 405 for a method a path does not take.
    pub fn method_not_allowed() -> Self {
        KubeError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(StatusDetails::default())
    }

    /// 405 for a verb the resource does not support (yet), as the
    /// apiserver's `NewMethodNotSupported`.
    pub fn verb_not_supported(verb: &str, why: &str) -> Self {
        KubeError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{RESOURCE}.{GROUP}\": {why}"),
        )
        .with_details(StatusDetails {
            group: Some(GROUP.into()),
            kind: Some(RESOURCE.into()),
            ..Default::default()
        })
    }

    /// 406 when nothing in `Accept` can be produced.
    pub fn not_acceptable(offered: &[&str]) -> Self {
        KubeError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                offered.join(", ")
            ),
        )
    }

    /// 410 Expired (a resourceVersion or continue token the server can no
    /// longer serve).
    pub fn expired(message: impl Into<String>) -> Self {
        KubeError::new(StatusCode::GONE, "Expired", message)
    }

    /// 504 for a resourceVersion newer than anything this cluster has
    /// committed (upstream's `NewTooLargeResourceVersionError`, which
    /// client-go retries after `Retry-After`).
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        KubeError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(StatusDetails {
            causes: vec![StatusCause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            retry_after_seconds: Some(RETRY_AFTER_SECONDS),
            ..Default::default()
        })
    }

    /// 504 when the request's own deadline (`timeout`) passed.
    pub fn timeout(after: std::time::Duration) -> Self {
        KubeError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!(
                "request did not complete within the allowed duration ({} ms)",
                after.as_millis()
            ),
        )
    }

    /// 500 for a failure of this server (serialization cannot fail on our
    /// types, but is not unwrapped).
    pub fn internal(message: impl Into<String>) -> Self {
        KubeError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 413 for a body above a bound (upstream's
    /// `NewRequestEntityTooLargeError`: `message` is `limit is N` for the
    /// body's size).
    pub fn request_entity_too_large(message: impl std::fmt::Display) -> Self {
        KubeError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: {message}"),
        )
    }

    /// 415 for a body whose media type is none of `accepted` (upstream's
    /// `NewUnsupportedMediaTypeError`, no details).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        KubeError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }
}

/// The details of a Status about lease `name` (`kind` holds the
/// resource, as the apiserver writes it).
pub fn lease_details(name: &str) -> StatusDetails {
    StatusDetails {
        name: Some(name.into()),
        group: Some(GROUP.into()),
        kind: Some(RESOURCE.into()),
        ..Default::default()
    }
}

/// The Kubernetes error for a gRPC status from the Leases service; `name`
/// is the lease the request was about, if it named one.
pub fn from_grpc(s: &tonic::Status, name: Option<&str>) -> KubeError {
    let (why, meta) = error_info(s).unwrap_or_default();
    let message = s.message().to_string();
    let object = || name.map(lease_details).unwrap_or_default();
    match s.code() {
        Code::NotFound => match name {
            Some(n) => KubeError::lease_not_found(n),
            None => KubeError::new(StatusCode::NOT_FOUND, "NotFound", message),
        },
        Code::InvalidArgument => {
            let field = meta.get("field").cloned().unwrap_or_default();
            KubeError::new(StatusCode::BAD_REQUEST, "BadRequest", message.clone()).with_details(
                StatusDetails {
                    causes: vec![StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message,
                        field,
                    }],
                    ..object()
                },
            )
        }
        Code::AlreadyExists => {
            KubeError::new(StatusCode::CONFLICT, "AlreadyExists", message).with_details(object())
        }
        Code::Aborted | Code::FailedPrecondition => {
            KubeError::new(StatusCode::CONFLICT, "Conflict", message).with_details(object())
        }
        Code::OutOfRange if why == reason::COMPACTED => KubeError::expired(message),
        Code::ResourceExhausted if why == reason::WATCHER_TOO_SLOW => KubeError::expired(message),
        Code::ResourceExhausted => {
            KubeError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message).with_details(
                StatusDetails {
                    retry_after_seconds: Some(RETRY_AFTER_SECONDS),
                    ..Default::default()
                },
            )
        }
        Code::Unavailable => KubeError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
        .with_details(StatusDetails {
            retry_after_seconds: Some(RETRY_AFTER_SECONDS),
            ..Default::default()
        }),
        Code::DeadlineExceeded => KubeError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message),
        // Upstream's NewUnauthorized: the message says no more.
        Code::Unauthenticated => {
            KubeError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
        }
        // Upstream's NewForbidden wording, with Leasehold's verb.
        Code::PermissionDenied => {
            let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
            let (user, verb, namespace) = (get("user"), get("verb"), get("namespace"));
            let lease = get("name");
            let subject = if lease.is_empty() {
                format!("leases.{GROUP} is forbidden")
            } else {
                format!("leases.{GROUP} {lease:?} is forbidden")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            KubeError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{subject}: User {user:?} cannot {verb} resource \"leases\" in API group \"{GROUP}\" {scope}"
                ),
            )
            .with_details(StatusDetails {
                name: (!lease.is_empty()).then_some(lease),
                group: Some(GROUP.into()),
                kind: Some(RESOURCE.into()),
                ..Default::default()
            })
        }
        _ => KubeError::internal(message),
    }
}

impl IntoResponse for KubeError {
    fn into_response(self) -> Response {
        let retry_after = self
            .status
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds);
        // Serializing these types cannot fail (string keys, no maps of
        // other keys); the fallback keeps the promise of never panicking.
        let body = serde_json::to_vec(&self.status).unwrap_or_else(|_| {
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"InternalError","code":500}"#
                .to_vec()
        });
        let mut resp = (self.http, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::{from_lease_error, from_node_error};
    use crate::lease::{LeaseError, LeaseKey, Timestamp};
    use crate::raft::node::NodeError;
    use serde_json::{json, Value};

    fn body(e: &KubeError) -> Value {
        serde_json::to_value(&e.status).expect("status serializes")
    }

    #[test]
    fn not_found_names_the_lease_with_the_resource_as_kind() {
        let s = from_lease_error(&LeaseError::NotFound {
            key: LeaseKey::new("ns", "x"),
        });
        let e = from_grpc(&s, Some("x"));
        assert_eq!(e.http, StatusCode::NOT_FOUND);
        assert_eq!(
            body(&e),
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "leases.coordination.k8s.io \"x\" not found", "reason": "NotFound",
                "details": {"name": "x", "group": "coordination.k8s.io", "kind": "leases"},
                "code": 404
            })
        );
    }

    #[test]
    fn unknown_path_has_empty_details() {
        let v = body(&KubeError::unknown_path());
        assert_eq!(v["details"], json!({}));
        assert_eq!(v["code"], 404);
    }

    #[test]
    fn invalid_argument_is_a_bad_request_naming_the_field() {
        let s = from_lease_error(&LeaseError::invalid("labelSelector", "bad"));
        let e = from_grpc(&s, None);
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
        let v = body(&e);
        assert_eq!(v["reason"], "BadRequest");
        assert_eq!(v["details"]["causes"][0]["field"], "labelSelector");
        assert!(v["message"].as_str().unwrap().contains("labelSelector"));
    }

    #[test]
    fn no_leader_is_retryable_503_and_outcome_unknown_is_a_504_without_retry() {
        let s = from_node_error(&NodeError::NotLeader { leader: None });
        let e = from_grpc(&s, None);
        assert_eq!(e.http, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(&e)["details"]["retryAfterSeconds"], 1);
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");

        let s = from_node_error(&NodeError::Unavailable("no quorum".into()));
        assert_eq!(from_grpc(&s, None).http, StatusCode::SERVICE_UNAVAILABLE);
        // The forwarding path's own failure carries no ErrorInfo.
        let s = tonic::Status::unavailable("cannot reach leader 2");
        assert_eq!(from_grpc(&s, None).http, StatusCode::SERVICE_UNAVAILABLE);

        let s = from_node_error(&NodeError::OutcomeUnknown("timed out".into()));
        let e = from_grpc(&s, Some("x"));
        assert_eq!(e.http, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body(&e)["reason"], "Timeout");
        assert!(e
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }

    #[test]
    fn conflicts_compaction_and_the_rest() {
        let held = from_lease_error(&LeaseError::Held {
            key: LeaseKey::new("ns", "x"),
            holder: "a".into(),
            expire_time: Timestamp::from_micros(0),
            remaining_millis: 10,
        });
        let e = from_grpc(&held, Some("x"));
        assert_eq!(
            (e.http, e.status.reason),
            (StatusCode::CONFLICT, "Conflict")
        );
        let exists = from_lease_error(&LeaseError::AlreadyExists {
            key: LeaseKey::new("ns", "x"),
        });
        assert_eq!(from_grpc(&exists, Some("x")).status.reason, "AlreadyExists");
        let compacted = crate::api::status::compacted(3, 10);
        let e = from_grpc(&compacted, None);
        assert_eq!((e.http, e.status.reason), (StatusCode::GONE, "Expired"));
        let slow = crate::api::status::watcher_too_slow(7);
        assert_eq!(from_grpc(&slow, None).http, StatusCode::GONE);
        let busy = tonic::Status::resource_exhausted("busy");
        assert_eq!(from_grpc(&busy, None).http, StatusCode::TOO_MANY_REQUESTS);
        let storage = from_node_error(&NodeError::Storage("disk".into()));
        let e = from_grpc(&storage, None);
        assert_eq!(
            (e.http, e.status.reason),
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        );
        assert_eq!(
            from_grpc(&tonic::Status::cancelled("x"), None).status.code,
            500
        );
    }

    #[test]
    fn list_options_refusals_are_422_naming_the_parameter() {
        let e = KubeError::invalid_list_options(
            "resourceVersionMatch",
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        );
        let v = body(&e);
        assert_eq!(v["code"], 422);
        assert_eq!(v["details"]["kind"], "ListOptions");
        assert_eq!(v["details"]["causes"][0]["field"], "resourceVersionMatch");
    }
}
