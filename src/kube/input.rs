//! Request bodies: their media type, their size, and the Lease or
//! DeleteOptions they hold, checked field by field.
//!
//! A body is first turned into a JSON value whatever its encoding (JSON,
//! YAML, or client-go's Kubernetes protobuf via [`super::protobuf`]), so
//! that one walk over one shape does the rest:
//! - **field validation** (`?fieldValidation=`): a field the Lease schema
//!   does not have is refused with 400 (`Strict`, what kubectl sends),
//!   reported in a `Warning` header (`Warn`, the apiserver's default) or
//!   dropped (`Ignore`). `status` is Leasehold's output and is accepted
//!   and ignored on input, whatever it holds: `kubectl get -o yaml |
//!   kubectl replace -f -` sends back what it was shown. Duplicate JSON
//!   keys are not detected (the last one wins), a documented difference
//!   from the apiserver's strict mode.
//! - **types**: a field of the wrong JSON type is a 400 naming its path
//!   (`spec.leaseDurationSeconds: must be an integer`); `null` is the
//!   field's absence, as Go's decoder makes it.
//! - **what Leasehold does not keep**: `ownerReferences` and `finalizers`
//!   are refused (422) rather than dropped, because a client that sets
//!   them expects garbage collection or a deletion hold that Leasehold
//!   does not do; `managedFields`, `generation`, `selfLink`,
//!   `creationTimestamp`, `deletionTimestamp` and
//!   `deletionGracePeriodSeconds` are server-owned and ignored.
//!
//! The lease rules themselves (names, labels, durations, sizes) are the
//! gRPC API's: the handlers send the result through the `Leases` service,
//! whose validation answers name the field.

use super::protobuf;
use super::query::Query;
use super::status::{KubeError, StatusCause, StatusDetails};
use super::{GROUP, GROUP_VERSION, KIND};
use crate::proto::v1 as pb;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest request body read, bytes. A Lease is at most 512 KiB
/// (`lease::validate::MAX_LEASE_BYTES`); its JSON or YAML can be larger
/// than its stored form (escapes, indentation), and the apiserver reads up
/// to 3 MiB. Anything larger is a 413 before it is parsed.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Most warnings sent back in `Warning` headers; the rest are counted in
/// the last one.
pub const MAX_WARNINGS: usize = 20;

/// How to treat fields the schema does not have (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (the default).
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    /// The request's choice; `Warn` when absent, as the apiserver.
    pub fn parse(q: &Query) -> Result<FieldValidation, KubeError> {
        match q.get("fieldValidation").unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(KubeError::bad_param(
                "fieldValidation",
                format!(
                    "{:?} is not one of \"Ignore\", \"Warn\", \"Strict\"",
                    other.chars().take(32).collect::<String>()
                ),
            )),
        }
    }
}

/// A body's encoding, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`, or no `Content-Type` at all (the Python client
    /// sends none; the apiserver reads that as its first type, JSON).
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf` (client-go's default for
    /// typed writes since v0.32).
    Protobuf,
}

/// The media types a Lease or DeleteOptions body may be in.
pub const BODY_TYPES: [&str; 3] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

impl BodyFormat {
    /// The format `headers` declare.
    pub fn of(headers: &HeaderMap) -> Result<BodyFormat, KubeError> {
        let Some(ct) = headers.get(header::CONTENT_TYPE) else {
            return Ok(BodyFormat::Json);
        };
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "" | "application/json" => Ok(BodyFormat::Json),
            "application/yaml" => Ok(BodyFormat::Yaml),
            "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
            _ => Err(unsupported_media_type()),
        }
    }
}

/// 415 for a body in a type this endpoint does not read.
pub fn unsupported_media_type() -> KubeError {
    KubeError::unsupported_media_type(&BODY_TYPES)
}

/// Reads at most `max` bytes of `body`: 413 beyond.
pub async fn read_body(body: Body, max: usize) -> Result<Bytes, KubeError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            KubeError::request_entity_too_large(format!("limit is {max}"))
        } else {
            KubeError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

/// 400 for a body that is not a Lease (upstream's wording).
fn not_a_lease(detail: impl std::fmt::Display) -> KubeError {
    KubeError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("{KIND} in version \"v1\" cannot be handled as a {KIND}: {detail}"),
    )
}

/// 400 naming the field at `path`.
fn bad_field(path: &str, what: &str) -> KubeError {
    not_a_lease(format!("{path}: {what}")).with_details(StatusDetails {
        group: Some(GROUP.into()),
        kind: Some(KIND.into()),
        causes: vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: what.into(),
            field: path.into(),
        }],
        ..Default::default()
    })
}

/// A body as a JSON value, whatever its format. `what` is the kind for
/// messages; `protobuf` decodes the protobuf form.
fn decode(
    format: BodyFormat,
    body: &[u8],
    what: &str,
    protobuf: fn(&[u8]) -> Result<Value, protobuf::ProtobufError>,
) -> Result<Value, KubeError> {
    let bad = |e: String| {
        KubeError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{what} in version \"v1\" cannot be handled as a {what}: {e}"),
        )
    };
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| bad(e.to_string())),
        BodyFormat::Yaml => {
            let text =
                std::str::from_utf8(body).map_err(|_| bad("the YAML is not UTF-8".into()))?;
            serde_yaml::from_str::<Value>(text).map_err(|e| bad(e.to_string()))
        }
        BodyFormat::Protobuf => protobuf(body).map_err(|e| bad(e.to_string())),
    }
}

/// A Lease body as a JSON value.
pub fn decode_lease(format: BodyFormat, body: &[u8]) -> Result<Value, KubeError> {
    decode(format, body, KIND, protobuf::lease_json)
}

/// A DeleteOptions body as a JSON value.
pub fn decode_delete_options(format: BodyFormat, body: &[u8]) -> Result<Value, KubeError> {
    decode(format, body, "DeleteOptions", protobuf::delete_options_json)
}

/// The fields of a Lease that clients send: the object's metadata and its
/// spec, in the gRPC API's form, plus what the handlers check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseInput {
    /// `metadata.name` (may be empty: POST with `generateName`).
    pub name: String,
    /// `metadata.generateName`.
    pub generate_name: String,
    /// `metadata.namespace` (may be empty: taken from the URL).
    pub namespace: String,
    /// `metadata.uid`: a precondition on updates.
    pub uid: String,
    /// `metadata.resourceVersion`: the compare-and-swap base, if given.
    pub resource_version: Option<u64>,
    /// `metadata.labels`.
    pub labels: HashMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: HashMap<String, String>,
    /// `spec`, times as sent (the server stamps its own).
    pub spec: pb::LeaseSpec,
}

impl LeaseInput {
    /// The lease to send to the gRPC `Put`, in `namespace` at base
    /// `resource_version` (0 creates).
    pub fn to_proto(&self, namespace: &str, resource_version: u64, uid: &str) -> pb::Lease {
        pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: namespace.to_string(),
                name: self.name.clone(),
                uid: uid.to_string(),
                resource_version,
                creation_timestamp: String::new(),
                labels: self.labels.clone(),
                annotations: self.annotations.clone(),
            }),
            spec: Some(self.spec.clone()),
            status: None,
        }
    }
}

/// The fields of each object of a Lease, for field validation. Maps
/// (`labels`, `annotations`) and what is ignored whole (`status`,
/// `managedFields`) are not walked.
const LEASE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const SPEC_FIELDS: &[&str] = &[
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "strategy",
    "preferredHolder",
];

fn unknown_in(obj: &Map<String, Value>, known: &[&str], prefix: &str, out: &mut Vec<String>) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            out.push(format!("{prefix}{k}"));
        }
    }
}

/// Paths of the fields in `v` that a Lease does not have.
fn unknown_fields(v: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    unknown_in(v, LEASE_FIELDS, "", &mut out);
    if let Some(Value::Object(m)) = v.get("metadata") {
        unknown_in(m, META_FIELDS, "metadata.", &mut out);
    }
    if let Some(Value::Object(s)) = v.get("spec") {
        unknown_in(s, SPEC_FIELDS, "spec.", &mut out);
    }
    out
}

/// The `Warning` header values for `warnings` (at most [`MAX_WARNINGS`]).
pub fn warning_headers(warnings: &[String]) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    for (i, w) in warnings.iter().enumerate() {
        let text = if i + 1 == MAX_WARNINGS && warnings.len() > MAX_WARNINGS {
            format!("{} more warnings", warnings.len() - i)
        } else {
            w.clone()
        };
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            out.push(v);
        }
        if i + 1 == MAX_WARNINGS {
            break;
        }
    }
    out
}

fn object<'a>(v: &'a Value, path: &str) -> Result<Option<&'a Map<String, Value>>, KubeError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(bad_field(path, "must be an object")),
    }
}

fn string(m: &Map<String, Value>, key: &str, path: &str) -> Result<String, KubeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad_field(&format!("{path}{key}"), "must be a string")),
    }
}

fn int32(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i32>, KubeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| bad_field(&format!("{path}{key}"), "must be a 32-bit integer")),
        Some(_) => Err(bad_field(&format!("{path}{key}"), "must be an integer")),
    }
}

fn string_map(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<HashMap<String, String>, KubeError> {
    let Some(v) = m.get(key) else {
        return Ok(HashMap::new());
    };
    let Some(obj) = object(v, &format!("{path}{key}"))? else {
        return Ok(HashMap::new());
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            // Go decodes null into "" for a map[string]string value.
            Value::Null => Ok((k.clone(), String::new())),
            _ => Err(bad_field(
                &format!("{path}{key}[{k:?}]"),
                "must be a string",
            )),
        })
        .collect()
}

/// 422 Invalid for a field Leasehold refuses on a Lease, as the
/// apiserver words a forbidden field.
pub fn forbidden_field(name: &str, field: &str, why: &str) -> KubeError {
    let message = format!("Forbidden: {why}");
    KubeError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{KIND}.{GROUP} \"{name}\" is invalid: {field}: {message}"),
    )
    .with_details(StatusDetails {
        name: Some(name.into()),
        group: Some(GROUP.into()),
        kind: Some(KIND.into()),
        causes: vec![StatusCause {
            reason: "FieldValueForbidden".into(),
            message,
            field: field.into(),
        }],
        ..Default::default()
    })
}

fn non_empty_list(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// The Lease in `v`, with the warnings field validation produced.
pub fn lease_input(
    v: &Value,
    validation: FieldValidation,
) -> Result<(LeaseInput, Vec<String>), KubeError> {
    let Some(top) = object(v, "the body")? else {
        return Err(not_a_lease("the body is null, not a Lease object"));
    };
    let mut warnings = Vec::new();
    let unknown = unknown_fields(top);
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect();
                return Err(
                    not_a_lease(format!("strict decoding error: {}", list.join(", ")))
                        .with_details(StatusDetails {
                            group: Some(GROUP.into()),
                            kind: Some(KIND.into()),
                            causes: unknown
                                .iter()
                                .map(|f| StatusCause {
                                    reason: "FieldValueInvalid".into(),
                                    message: "unknown field".into(),
                                    field: f.clone(),
                                })
                                .collect(),
                            ..Default::default()
                        }),
                );
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field {f:?}")));
            }
            FieldValidation::Ignore => {}
        }
    }
    let api_version = string(top, "apiVersion", "")?;
    if !api_version.is_empty() && api_version != GROUP_VERSION {
        return Err(not_a_lease(format!(
            "the API version in the data ({api_version}) does not match the expected API \
             version ({GROUP_VERSION})"
        )));
    }
    let kind = string(top, "kind", "")?;
    if !kind.is_empty() && kind != KIND {
        return Err(not_a_lease(format!(
            "the kind in the data ({kind}) is not {KIND}"
        )));
    }
    let empty = Map::new();
    let meta = match top.get("metadata") {
        Some(m) => object(m, "metadata")?.unwrap_or(&empty),
        None => &empty,
    };
    let spec = match top.get("spec") {
        Some(s) => object(s, "spec")?.unwrap_or(&empty),
        None => &empty,
    };
    let name = string(meta, "name", "metadata.")?;
    let resource_version = match string(meta, "resourceVersion", "metadata.")?.as_str() {
        "" => None,
        rv => Some(rv.parse::<u64>().map_err(|_| {
            bad_field(
                "metadata.resourceVersion",
                "must be a resourceVersion this server returned (a decimal revision)",
            )
        })?),
    };
    // Types of the ignored server-owned fields are still checked: a
    // client that sends garbage there has a bug worth hearing about.
    for key in ["selfLink", "creationTimestamp", "deletionTimestamp"] {
        string(meta, key, "metadata.")?;
    }
    for key in ["generation", "deletionGracePeriodSeconds"] {
        if let Some(v) = meta.get(key) {
            if !(v.is_null() || v.is_i64()) {
                return Err(bad_field(&format!("metadata.{key}"), "must be an integer"));
            }
        }
    }
    for (key, why) in [
        (
            "ownerReferences",
            "Leasehold does not keep owner references: it has no garbage collector to act on \
             them",
        ),
        (
            "finalizers",
            "Leasehold does not keep finalizers: a delete is never held back",
        ),
    ] {
        if non_empty_list(meta, key) {
            return Err(forbidden_field(&name, &format!("metadata.{key}"), why));
        }
    }
    let input = LeaseInput {
        generate_name: string(meta, "generateName", "metadata.")?,
        namespace: string(meta, "namespace", "metadata.")?,
        uid: string(meta, "uid", "metadata.")?,
        resource_version,
        labels: string_map(meta, "labels", "metadata.")?,
        annotations: string_map(meta, "annotations", "metadata.")?,
        spec: pb::LeaseSpec {
            holder_identity: string(spec, "holderIdentity", "spec.")?,
            lease_duration_seconds: int32(spec, "leaseDurationSeconds", "spec.")?,
            acquire_time: string(spec, "acquireTime", "spec.")?,
            renew_time: string(spec, "renewTime", "spec.")?,
            lease_transitions: int32(spec, "leaseTransitions", "spec.")?,
            strategy: string(spec, "strategy", "spec.")?,
            preferred_holder: string(spec, "preferredHolder", "spec.")?,
        },
        name,
    };
    Ok((input, warnings))
}

/// What a DeleteOptions body asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: String,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<u64>,
    /// `dryRun`, which Leasehold refuses.
    pub dry_run: Vec<String>,
    /// `propagationPolicy`, checked and otherwise meaningless for leases
    /// (nothing is owned by a lease).
    pub propagation_policy: String,
}

fn delete_options_error(detail: impl std::fmt::Display) -> KubeError {
    KubeError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("DeleteOptions in version \"v1\" cannot be handled as a DeleteOptions: {detail}"),
    )
}

/// The DeleteOptions in `v` (unknown fields are ignored: the apiserver
/// decodes DeleteOptions leniently).
pub fn delete_options(v: &Value) -> Result<DeleteOptions, KubeError> {
    let Some(top) = v.as_object() else {
        if v.is_null() {
            return Ok(DeleteOptions::default());
        }
        return Err(delete_options_error("the body is not an object"));
    };
    let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != "DeleteOptions" {
        return Err(delete_options_error(format!(
            "the kind in the data ({kind}) is not DeleteOptions"
        )));
    }
    let field = |path: &str, what: &str| delete_options_error(format!("{path}: {what}"));
    let mut out = DeleteOptions::default();
    if let Some(p) = top.get("preconditions").filter(|p| !p.is_null()) {
        let p = p
            .as_object()
            .ok_or_else(|| field("preconditions", "must be an object"))?;
        out.uid = match p.get("uid") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(field("preconditions.uid", "must be a string")),
        };
        out.resource_version = match p.get("resourceVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.parse::<u64>().map_err(|_| {
                field(
                    "preconditions.resourceVersion",
                    "must be a resourceVersion this server returned (a decimal revision)",
                )
            })?),
            Some(_) => return Err(field("preconditions.resourceVersion", "must be a string")),
        };
    }
    match top.get("dryRun") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for d in a {
                let d = d
                    .as_str()
                    .ok_or_else(|| field("dryRun", "must be a list of strings"))?;
                out.dry_run.push(d.to_string());
            }
        }
        Some(_) => return Err(field("dryRun", "must be a list of strings")),
    }
    out.propagation_policy = match top.get("propagationPolicy") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(field("propagationPolicy", "must be a string")),
    };
    if let Some(g) = top.get("gracePeriodSeconds") {
        if !(g.is_null() || g.is_i64()) {
            return Err(field("gracePeriodSeconds", "must be an integer"));
        }
    }
    for key in [
        "orphanDependents",
        "ignoreStoreReadErrorWithClusterBreakingPotential",
    ] {
        if let Some(b) = top.get(key) {
            if !(b.is_null() || b.is_boolean()) {
                return Err(field(key, "must be a boolean"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
