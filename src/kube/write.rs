//! The lease write endpoints: POST (create), PUT (update, or create on
//! update), PATCH (four patch types) and DELETE.
//!
//! Thin, as the read handlers: each checks the query and the body
//! ([`super::input`]), then calls the gRPC `Leases` service in process —
//! `Put` and `Delete`, so every write through this API obeys exactly the
//! gRPC API's lease rules (server-stamped times, takeover waits, a new
//! token per tenure, tombstones after deleting a held lease), goes through
//! Raft like every other write, and is forwarded to the leader by a
//! follower. Nothing here touches the node.
//!
//! How the apiserver's update semantics map onto `Put`:
//!
//! | request | Put |
//! |---------|-----|
//! | POST | `resourceVersion` 0 (create); a body with a resourceVersion is refused |
//! | PUT with `metadata.resourceVersion` N | compare-and-swap at N, with `metadata.uid` as a precondition when given |
//! | PUT without a resourceVersion | a create (upstream's create-on-update); on an existing lease: 422, as upstream (a Lease cannot be updated unconditionally) |
//! | PUT at N of a lease that does not exist | a create when the body carries no uid; 409 with one (the object it was read from is gone) |
//! | PATCH | read (linearizable), patch, then compare-and-swap at the read revision; on a conflict it reads and patches again (at most [`PATCH_ATTEMPTS`] times), unless the patch itself set a resourceVersion, which then is a precondition |
//! | PATCH `application/apply-patch+yaml` of a missing lease | a create |
//! | DELETE | `Delete` with `preconditions.resourceVersion` and `.uid`; a held lease is deleted and leaves a tombstone |
//!
//! `dryRun` is refused (400) rather than ignored: a client asking for a
//! dry run must not get a real write. No request id is sent with these
//! writes: a client that retries a PUT after an unknown outcome gets 409
//! (the compare-and-swap moved on), and a retried POST 409 AlreadyExists,
//! which is what the apiserver answers too and what client-go's
//! `LeaseLock` and the Python client recover from on their next round.

use super::input::{
    decode_delete_options, decode_lease, delete_options, lease_input, read_body, warning_headers,
    BodyFormat, FieldValidation, LeaseInput, MAX_BODY_BYTES,
};
use super::leases::{deadline, path, within};
use super::negotiate::{negotiate, Representation};
use super::patch::{self, PatchType, Target};
use super::query::Query;
use super::status::{from_grpc, lease_details, KubeError, StatusCause, StatusDetails};
use super::types::Lease;
use super::{Authed, Kube, GROUP, KIND, RESOURCE};
use crate::api::status::{error_info, reason};
use crate::proto::v1 as pb;
use crate::proto::v1::leases_server::Leases;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tonic::Code;

/// Parameters of POST and PUT.
const WRITE_PARAMS: &[&str] = &[
    "pretty",
    "timeout",
    "dryRun",
    "fieldManager",
    "fieldValidation",
];

/// Parameters of PATCH.
const PATCH_PARAMS: &[&str] = &[
    "pretty",
    "timeout",
    "dryRun",
    "fieldManager",
    "fieldValidation",
    "force",
];

/// Parameters of DELETE.
const DELETE_PARAMS: &[&str] = &[
    "pretty",
    "timeout",
    "dryRun",
    "gracePeriodSeconds",
    "propagationPolicy",
    "orphanDependents",
];

/// How many times a PATCH reads, patches and writes when its
/// compare-and-swap keeps losing to other writers (the apiserver retries
/// patches on conflict too).
pub const PATCH_ATTEMPTS: usize = 5;

/// Longest `fieldManager`, as the apiserver's validation.
pub const MAX_FIELD_MANAGER_LEN: usize = 128;

/// Characters of a `generateName` suffix (upstream's alphabet, without
/// vowels and look-alikes) and its length.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: usize = 5;
/// A generated name is at most this long before its suffix.
const MAX_GENERATE_BASE: usize = 63 - SUFFIX_LEN;

/// Refuses `dryRun` (any value): Leasehold does not do dry runs.
fn refuse_dry_run(q: &Query) -> Result<(), KubeError> {
    match q.get("dryRun") {
        None | Some("") => Ok(()),
        Some(_) => Err(dry_run_refused()),
    }
}

fn dry_run_refused() -> KubeError {
    KubeError::bad_param(
        "dryRun",
        "Leasehold does not do dry runs; nothing was changed (send the request without \
         dryRun to make the change)",
    )
}

/// Checks `fieldManager` (recorded nowhere: Leasehold keeps no
/// managedFields) and returns it.
fn field_manager(q: &Query) -> Result<&str, KubeError> {
    let m = q.string("fieldManager", MAX_FIELD_MANAGER_LEN)?;
    if !m.chars().all(|c| !c.is_control()) {
        return Err(KubeError::bad_param(
            "fieldManager",
            "must not contain control characters",
        ));
    }
    Ok(m)
}

/// What every write checks in its query and headers first.
struct Common<'q> {
    manager: &'q str,
    validation: FieldValidation,
    pretty: bool,
    limit: std::time::Duration,
}

fn common<'q>(q: &'q Query, headers: &HeaderMap) -> Result<Common<'q>, KubeError> {
    refuse_dry_run(q)?;
    let manager = field_manager(q)?;
    let validation = FieldValidation::parse(q)?;
    let pretty = q.bool("pretty")?.unwrap_or(false);
    let limit = deadline(q)?;
    json_only(headers)?;
    Ok(Common {
        manager,
        validation,
        pretty,
        limit,
    })
}

/// Only JSON answers: writes have no Table.
fn json_only(headers: &HeaderMap) -> Result<(), KubeError> {
    match negotiate(headers, false)? {
        Representation::Json => Ok(()),
        Representation::Table(_) => Err(KubeError::internal(
            "a Table was negotiated for an endpoint that offers none",
        )),
    }
}

/// The answer to a successful write: the lease, 201 when created.
fn written(
    lease: Option<&pb::Lease>,
    created: bool,
    warnings: &[String],
    pretty: bool,
) -> Result<Response, KubeError> {
    let lease = lease.ok_or_else(|| KubeError::internal("the Put answer carries no lease"))?;
    let body = Lease::from_proto(lease);
    let mut resp = super::response::json(&body, pretty)?;
    if created {
        *resp.status_mut() = StatusCode::CREATED;
    }
    for w in warning_headers(warnings) {
        resp.headers_mut().append(header::WARNING, w);
    }
    Ok(resp)
}

fn conflict(name: &str, why: impl std::fmt::Display) -> KubeError {
    KubeError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Operation cannot be fulfilled on {RESOURCE}.{GROUP} \"{name}\": {why}"),
    )
    .with_details(lease_details(name))
}

/// The apiserver's optimistic-lock message.
const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// 422 Invalid about `field` of lease `name`.
fn invalid(name: &str, field: &str, what: &str) -> KubeError {
    KubeError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{KIND}.{GROUP} \"{name}\" is invalid: {field}: Invalid value: {what}"),
    )
    .with_details(StatusDetails {
        name: Some(name.into()),
        group: Some(GROUP.into()),
        kind: Some(KIND.into()),
        causes: vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {what}"),
            field: field.into(),
        }],
        ..Default::default()
    })
}

/// The Kubernetes error for a refused write of lease `name`: validation
/// is 422 Invalid naming the field; a lost compare-and-swap, a failed uid
/// precondition and a lease that is held (or deleted while held) are 409
/// Conflict in the apiserver's words; the rest as every other call.
fn write_error(s: &tonic::Status, name: &str) -> KubeError {
    let (why, meta) = error_info(s).unwrap_or_default();
    match s.code() {
        Code::InvalidArgument => {
            let field = meta.get("field").cloned().unwrap_or_default();
            let prefix = format!("invalid {field}: ");
            let what = s.message().strip_prefix(&prefix).unwrap_or(s.message());
            invalid(name, &field, what)
        }
        Code::AlreadyExists => KubeError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{RESOURCE}.{GROUP} \"{name}\" already exists"),
        )
        .with_details(lease_details(name)),
        Code::Aborted if why == reason::CONFLICT => match meta.get("expectedUid") {
            Some(expected) => conflict(
                name,
                format!(
                    "Precondition failed: UID in precondition: {expected}, UID in object meta: {}",
                    meta.get("uid").map_or("", String::as_str)
                ),
            ),
            None => conflict(name, MODIFIED),
        },
        Code::FailedPrecondition if why == reason::LEASE_HELD => conflict(name, s.message()),
        _ => from_grpc(s, Some(name)),
    }
}

/// The namespace a body may name: the URL's, or none.
fn check_namespace(input: &LeaseInput, namespace: &str) -> Result<(), KubeError> {
    if !input.namespace.is_empty() && input.namespace != namespace {
        return Err(KubeError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        ));
    }
    Ok(())
}

/// `generateName` plus a random suffix, as the apiserver makes names.
fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(MAX_GENERATE_BASE).collect();
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..SUFFIX_LEN]
        .iter()
        .map(|b| SUFFIX_ALPHABET[usize::from(*b) % SUFFIX_ALPHABET.len()] as char)
        .collect();
    format!("{base}{suffix}")
}

async fn put(kube: &Kube, lease: pb::Lease) -> Result<pb::PutResponse, tonic::Status> {
    kube.leases
        .put(kube.request(pb::PutRequest {
            lease: Some(lease),
            request_id: String::new(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// A Lease body's checked content.
async fn lease_body(
    headers: &HeaderMap,
    body: Body,
    validation: FieldValidation,
) -> Result<(LeaseInput, Vec<String>), KubeError> {
    let format = BodyFormat::of(headers)?;
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    lease_input(&decode_lease(format, &bytes)?, validation)
}

/// `POST /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases`.
pub async fn create(
    Authed(kube): Authed,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, KubeError> {
    let namespace = path(p)?;
    let q = Query::parse(raw.as_deref(), WRITE_PARAMS)?;
    let Common {
        validation,
        pretty,
        limit,
        ..
    } = common(&q, &headers)?;
    let (mut input, warnings) = lease_body(&headers, body, validation).await?;
    check_namespace(&input, &namespace)?;
    if input.name.is_empty() {
        if input.generate_name.is_empty() {
            return Err(KubeError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "{KIND}.{GROUP} \"\" is invalid: metadata.name: Required value: name or \
                     generateName is required"
                ),
            )
            .with_details(StatusDetails {
                group: Some(GROUP.into()),
                kind: Some(KIND.into()),
                causes: vec![StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
                ..Default::default()
            }));
        }
        input.name = generate_name(&input.generate_name);
    }
    if input.resource_version.is_some() {
        return Err(KubeError::bad_param(
            "metadata.resourceVersion",
            "must not be set on an object to be created",
        ));
    }
    let name = input.name.clone();
    // The uid of a created lease is the server's; one in the body is
    // ignored, as the apiserver ignores it.
    let answer = within(limit, async {
        put(&kube, input.to_proto(&namespace, 0, ""))
            .await
            .map_err(|s| write_error(&s, &name))
    })
    .await?;
    written(answer.lease.as_ref(), true, &warnings, pretty)
}

/// `PUT /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`.
pub async fn update(
    Authed(kube): Authed,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, KubeError> {
    let (namespace, name) = path(p)?;
    let q = Query::parse(raw.as_deref(), WRITE_PARAMS)?;
    let Common {
        validation,
        pretty,
        limit,
        ..
    } = common(&q, &headers)?;
    let (input, warnings) = lease_body(&headers, body, validation).await?;
    check_namespace(&input, &namespace)?;
    if input.name != name {
        return Err(KubeError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                input.name.chars().take(253).collect::<String>()
            ),
        ));
    }
    let answer = within(limit, update_or_create(&kube, &namespace, &name, &input)).await?;
    written(answer.lease.as_ref(), answer.created, &warnings, pretty)
}

/// PUT's compare-and-swap, or its create on update (see the module
/// documentation's table).
async fn update_or_create(
    kube: &Kube,
    namespace: &str,
    name: &str,
    input: &LeaseInput,
) -> Result<pb::PutResponse, KubeError> {
    let Some(rv) = input.resource_version else {
        return match put(kube, input.to_proto(namespace, 0, "")).await {
            Err(s) if s.code() == Code::AlreadyExists => Err(KubeError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "{RESOURCE}.{GROUP} \"{name}\" is invalid: metadata.resourceVersion: Invalid \
                     value: 0x0: must be specified for an update"
                ),
            )
            .with_details(StatusDetails {
                name: Some(name.into()),
                group: Some(GROUP.into()),
                kind: Some(RESOURCE.into()),
                causes: vec![StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                    field: "metadata.resourceVersion".into(),
                }],
                ..Default::default()
            })),
            other => other.map_err(|s| write_error(&s, name)),
        };
    };
    match put(kube, input.to_proto(namespace, rv, &input.uid)).await {
        Err(s) if s.code() == Code::NotFound && rv != 0 => {
            if !input.uid.is_empty() {
                // The object the body was read from is gone.
                return Err(conflict(
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: ",
                        input.uid
                    ),
                ));
            }
            put(kube, input.to_proto(namespace, 0, ""))
                .await
                .map_err(|s| match s.code() {
                    // Created by someone else meanwhile.
                    Code::AlreadyExists => conflict(name, MODIFIED),
                    _ => write_error(&s, name),
                })
        }
        other => other.map_err(|s| write_error(&s, name)),
    }
}

/// Whether a JSON patch touches `metadata.resourceVersion` (then it is the
/// caller's precondition, and a conflict is not retried).
fn json_patch_sets_resource_version(body: &[u8]) -> bool {
    let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    ops.iter().any(|op| {
        op.get("path")
            .and_then(Value::as_str)
            .is_some_and(|p| p == "/metadata" || p.starts_with("/metadata/resourceVersion"))
    })
}

/// `PATCH /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`.
pub async fn patch(
    Authed(kube): Authed,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, KubeError> {
    let (namespace, name) = path(p)?;
    let q = Query::parse(raw.as_deref(), PATCH_PARAMS)?;
    let Common {
        manager,
        validation,
        pretty,
        limit,
    } = common(&q, &headers)?;
    let force = q.bool("force")?;
    let kind = PatchType::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    if kind == PatchType::Apply && manager.is_empty() {
        return Err(KubeError::bad_param(
            "fieldManager",
            "is required for apply patch",
        ));
    }
    if kind != PatchType::Apply && force.is_some() {
        return Err(KubeError::bad_param(
            "force",
            "may not be specified for non-apply patch",
        ));
    }
    let body = read_body(body, patch::MAX_PATCH_BYTES).await?;
    let caller_rv = kind == PatchType::Json && json_patch_sets_resource_version(&body);
    let target = Target {
        namespace: &namespace,
        name: &name,
    };
    within(limit, async {
        for attempt in 1..=PATCH_ATTEMPTS {
            let current = read_current(&kube, &namespace, &name).await?;
            let current_rv = current
                .as_ref()
                .and_then(|l| l.metadata.as_ref())
                .map(|m| m.resource_version);
            let mut live = current
                .as_ref()
                .map(|l| serde_json::to_value(Lease::from_proto(l)))
                .transpose()
                .map_err(|e| KubeError::internal(format!("cannot encode the lease: {e}")))?;
            // The read revision is the compare-and-swap base unless the
            // patch sets one itself: take it out of what is patched, and
            // see whether the patch put one back.
            if !caller_rv {
                if let Some(Value::Object(m)) = live.as_mut().and_then(|l| l.get_mut("metadata")) {
                    m.remove("resourceVersion");
                }
            }
            let patched = patch::apply_patch(kind, target, live.as_ref(), &body)?;
            let (input, warnings) = lease_input(&patched, validation)?;
            let precondition = caller_rv || input.resource_version.is_some();
            let answer = match (current_rv, input.resource_version) {
                (None, Some(_)) => Err(KubeError::lease_not_found(&name)),
                (None, None) => put(&kube, input.to_proto(&namespace, 0, ""))
                    .await
                    .map_err(|s| match s.code() {
                        Code::AlreadyExists => conflict(&name, MODIFIED),
                        _ => write_error(&s, &name),
                    }),
                (Some(read), asked) => {
                    let rv = asked.unwrap_or(read);
                    put(&kube, input.to_proto(&namespace, rv, &input.uid))
                        .await
                        .map_err(|s| write_error(&s, &name))
                }
            };
            match answer {
                Ok(a) => return written(a.lease.as_ref(), a.created, &warnings, pretty),
                Err(e)
                    if !precondition
                        && e.status.reason == "Conflict"
                        && e.status.message.ends_with(MODIFIED)
                        && attempt < PATCH_ATTEMPTS =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(conflict(&name, MODIFIED))
    })
    .await
}

/// The lease as it is now (a linearizable read), or `None`.
async fn read_current(
    kube: &Kube,
    namespace: &str,
    name: &str,
) -> Result<Option<pb::Lease>, KubeError> {
    let req = kube.request(pb::GetRequest {
        namespace: namespace.to_string(),
        name: name.to_string(),
        stale: false,
    });
    match kube.leases.get(req).await {
        Ok(r) => Ok(r.into_inner().lease),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(from_grpc(&s, Some(name))),
    }
}

/// `DELETE /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`.
pub async fn delete(
    Authed(kube): Authed,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, KubeError> {
    let (namespace, name) = path(p)?;
    let q = Query::parse(raw.as_deref(), DELETE_PARAMS)?;
    refuse_dry_run(&q)?;
    let pretty = q.bool("pretty")?.unwrap_or(false);
    let limit = deadline(&q)?;
    json_only(&headers)?;
    q.int("gracePeriodSeconds")?;
    q.bool("orphanDependents")?;
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    let opts = if bytes.iter().all(u8::is_ascii_whitespace) {
        super::input::DeleteOptions::default()
    } else {
        delete_options(&decode_delete_options(BodyFormat::of(&headers)?, &bytes)?)?
    };
    if !opts.dry_run.is_empty() {
        return Err(dry_run_refused());
    }
    for policy in [
        q.get("propagationPolicy").unwrap_or(""),
        opts.propagation_policy.as_str(),
    ] {
        if !matches!(policy, "" | "Orphan" | "Background" | "Foreground") {
            return Err(KubeError::bad_param(
                "propagationPolicy",
                format!(
                    "{:?} is not one of \"Orphan\", \"Background\", \"Foreground\"",
                    policy.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    let answer = within(limit, async {
        kube.leases
            .delete(kube.request(pb::DeleteRequest {
                namespace,
                name: name.clone(),
                resource_version: opts.resource_version,
                request_id: String::new(),
                uid: opts.uid.clone(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match (s.code(), error_info(&s)) {
                (Code::Aborted, Some((why, meta)))
                    if why == reason::CONFLICT && !meta.contains_key("expectedUid") =>
                {
                    conflict(
                        &name,
                        format!(
                            "the ResourceVersion in the precondition ({}) does not match the \
                             ResourceVersion in record ({}). The object might have been \
                             modified",
                            meta.get("expectedResourceVersion")
                                .map_or("", String::as_str),
                            meta.get("resourceVersion").map_or("", String::as_str)
                        ),
                    )
                }
                _ => write_error(&s, &name),
            })
    })
    .await?;
    let uid = answer
        .lease
        .as_ref()
        .and_then(|l| l.metadata.as_ref())
        .map(|m| m.uid.clone())
        .unwrap_or_default();
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": GROUP, "kind": RESOURCE, "uid": uid},
    });
    super::response::json(&status, pretty)
}

#[cfg(test)]
mod tests;
