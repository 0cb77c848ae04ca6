//! The bodies of PATCH, in the four types the apiserver takes, applied to a
//! lease as JSON. Pure functions: no I/O, no clock, no validation of Lease
//! fields (the caller decodes and validates the whole result, with strict
//! field validation and the Lease rules, as it does a PUT body).
//!
//! The apiserver read for every behaviour here is
//! `k8s.io/apiserver@v0.32.4` `pkg/endpoints/handlers/patch.go` (cited
//! below as `patch.go:LINE`), with apimachinery v0.32.4
//! (`pkg/util/strategicpatch/patch.go`, `pkg/util/mergepatch/errors.go`,
//! `pkg/util/managedfields/internal/*.go`, `pkg/api/errors/errors.go`) and
//! `gopkg.in/evanphx/json-patch.v4` v4.12.0, the versions kubectl 1.32 is
//! paired with.
//!
//! # Types
//! [`PatchType::from_content_type`] reads `Content-Type`; parameters after
//! `;` are ignored, and so is case (RFC 9110; upstream compares exactly).
//! Anything else, or no header, is a 415 naming the four (`patch.go:78-88`;
//! a missing type is not JSON here, unlike POST and PUT). In a real
//! apiserver go-restful's route matching (`Consumes`) usually refuses
//! first, with the same code and reason and the message `415: Unsupported
//! Media Type` (406 for an empty body with `Content-Length: 0`).
//! - [`PatchType::Json`] (`application/json-patch+json`): RFC 6902, at
//!   most [`MAX_JSON_PATCH_OPERATIONS`] operations.
//! - [`PatchType::Merge`] (`application/merge-patch+json`): RFC 7386; the
//!   body must be an object.
//! - [`PatchType::StrategicMerge`] (`application/strategic-merge-patch+json`):
//!   what kubectl's client-side `apply` and `edit` send; see
//!   [`strategic`] for the Lease's schema and the directives.
//! - [`PatchType::Apply`] (`application/apply-patch+yaml`): server-side
//!   apply, in the subset below.
//!
//! # The contract of [`apply_patch`]
//! `current` is the live lease as the API shows it, `None` when there is
//! none. Without one, JSON, merge and strategic merge patches answer the
//! apiserver's 404 (`patch.go:376-378`, `:470-472`) without reading the
//! body; apply creates. Every result then passes upstream's checks on the
//! object's identity (`patch.go:597-618`): `metadata.namespace` missing or
//! empty becomes the request's, another one is a 400;
//! `metadata.name` must equal the URL's (400 otherwise). Whatever
//! `metadata.resourceVersion` the result carries (the live one, or the one
//! a patch set) is the caller's precondition, as upstream's.
//!
//! # Server-side apply: the subset served
//! Leasehold keeps no `managedFields`, so apply is a merge, not a field
//! ownership protocol:
//! - the body is YAML or JSON (JSON is tried first, as kubectl sends it);
//!   it must be an object with `apiVersion: coordination.k8s.io/v1` and
//!   `kind: Lease` (400 `invalid object type: <group>/<version>,
//!   Kind=<kind>` otherwise, from `versioncheck.go:47-50`) and without
//!   `metadata.managedFields` (400 `metadata.managedFields must be nil`, as
//!   upstream, `structuredmerge.go:135-137`);
//! - the applied object is merged onto the live one (onto `{}` to create)
//!   by RFC 7386: maps merge key by key, lists and scalars are replaced
//!   whole, and a `null` removes the field or map entry (upstream keeps the
//!   null and lets Go decoding clear the field, which removes optional
//!   fields alike but leaves a label with an empty value);
//! - no conflict detection, so `force` changes nothing and apply never
//!   answers 409 for a conflict; no removal of fields an earlier apply of
//!   the same manager set and this one omits (upstream removes them; here,
//!   set them to `null` or use another patch type); lists such as
//!   `metadata.finalizers` are not merged item by item with other managers'
//!   items;
//! - a create whose body carries `metadata.uid` is upstream's 409
//!   (`patch.go:601-607`); the kubectl last-applied annotation is not
//!   synchronised (upstream's `lastappliedupdater.go` does it for the
//!   manager `kubectl` only);
//! - the result has no `metadata.managedFields`.
//!
//! # Failures, as the apiserver answers them
//! | case | code, reason | message | source |
//! |---|---|---|---|
//! | body above [`MAX_PATCH_BYTES`] | 413 `RequestEntityTooLarge` | `Request entity too large: limit is N` | `rest.go:373-389` |
//! | unknown or missing `Content-Type` | 415 `UnsupportedMediaType` | `the body of the request was in an unknown format - accepted media types include: …` | `patch.go:86-88`, `negotiation/errors.go:83-99` |
//! | JSON patch not JSON, not an array of objects | 400 `BadRequest` | `error decoding patch: …` | `patch.go:395-396` |
//! | more than 10,000 operations | 413 `RequestEntityTooLarge` | `Request entity too large: The allowed maximum operations in a JSON patch is 10000, got N` | `patch.go:407-411` |
//! | an operation fails (`test`, missing path, unknown `op`) | 422 `Invalid` | `the server rejected our request due to an error in our request` | `patch.go:412-415`, `errors.go:475-477` |
//! | merge patch not JSON, not an object | 400 `BadRequest` | `error decoding patch: …`; `null`: `Invalid JSON Patch` | `patch.go:421-430` |
//! | strategic merge patch not JSON, not an object | 400 `BadRequest` | Go's decoding message | `patch.go:562-569` |
//! | bad `$retainKeys`, `$setElementOrder`, `$deleteFromPrimitiveList` | 400 `BadRequest` | `invalid patch format of …` | `patch.go:790-798`, `mergepatch/errors.go:25-33` |
//! | a list of lists | 422 `Invalid` | `the server rejected our request due to an error in our request` | `patch.go:794-795` |
//! | apply body not an object | 400 `BadRequest` | `error decoding YAML: …` | `patch.go:509-512` |
//! | apply with a uid onto no lease | 409 `Conflict` | `Operation cannot be fulfilled on leases.coordination.k8s.io "x": uid mismatch: …` | `patch.go:601-607` |
//! | namespace differs | 400 `BadRequest` | `the namespace of the provided object does not match the namespace sent on the request` | `registry/rest/meta.go:44-64` |
//! | name differs | 400 `BadRequest` | `the name of the object (a) does not match the name on the URL (b)` | `rest.go:274-292` |
//!
//! Leasehold adds the failing operation's own error to the 422s as
//! `details.causes[0]` (field `patch`), which upstream drops. Where
//! upstream's strategic merge answers 500 for a malformed patch (an unknown
//! `$patch` value, a missing merge key, a `$setElementOrder` that is not a
//! list: plain Go errors that `interpretStrategicMergePatchError` does not
//! map), Leasehold answers 400 with the same words.
//!
//! Not reproduced: under strict field validation upstream also refuses
//! duplicate keys in a patch body and unknown members of JSON patch
//! operations (422); here the last duplicate wins and extra members are
//! ignored. An `add` without `value` is a 422 here (upstream adds `null`).
//!
//! # Bounds
//! Bodies are at most [`MAX_PATCH_BYTES`] (the handler enforces it before
//! reading; [`apply_patch`] checks again). JSON nests at most 128 levels
//! (serde_json's recursion limit; Go's decoder allows 10,000), and a body
//! deeper than that is a 400. YAML nests as deep; its aliases may expand
//! a document at most to [`yaml::BUDGET`] (upstream's YAML reader refuses
//! excessive aliasing too), and a YAML body's size times its count of `[`
//! and `{` is at most [`yaml::MAX_FLOW_COST`], because libyaml's time grows
//! with both (such a body is welcome as JSON). A JSON patch may place
//! nothing deeper than 128 levels and copy at most
//! [`MAX_JSON_PATCH_COPY_BYTES`] (upstream: `--json-patch-max-copy-bytes`,
//! 3 MiB by default). No input panics.

pub mod strategic;
pub mod yaml;

#[cfg(test)]
mod tests;

use super::status::{KubeError, StatusCause, StatusDetails};
use super::{GROUP, KIND, RESOURCE, VERSION};
use crate::lease::validate::MAX_LEASE_BYTES;
use axum::http::StatusCode;
use json_patch::PatchOperation;
use serde_json::{Map, Value};

/// Bound on a patch body, bytes: twice the largest lease (512 KiB), so that
/// any body that can yield a valid lease fits with room for escaping (a
/// client-side apply carries the object again in the last-applied
/// annotation) and directives. The apiserver's bound is 3 MiB, for
/// objects of up to etcd's 1.5 MiB.
pub const MAX_PATCH_BYTES: usize = 2 * MAX_LEASE_BYTES;

/// Most operations in one JSON patch (upstream's `maxJSONPatchOperations`,
/// `patch.go:64`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes the `copy` operations of one JSON patch may add in all
/// (upstream's `AccumulatedCopySizeLimit`): without a bound, copying a
/// value into itself doubles the document with each operation.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = MAX_PATCH_BYTES;

/// Deepest nesting a JSON patch may produce: serde_json's own recursion
/// limit, so that the result parses again and no recursive walk of it
/// (including dropping it) can exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// The patch types the apiserver accepts, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`, RFC 6902.
    Json,
    /// `application/merge-patch+json`, RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// All four, in upstream's order (which the 415 message lists).
    pub const ALL: [PatchType; 4] = [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
    ];

    /// The media types of [`PatchType::ALL`], for the 415 message and the
    /// OpenAPI document.
    pub const MEDIA_TYPES: [&'static str; 4] = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];

    /// The type a `Content-Type` header names; parameters (`;
    /// charset=utf-8`) and case do not matter. Missing or unknown: 415.
    pub fn from_content_type(ct: Option<&str>) -> Result<PatchType, KubeError> {
        let essence = ct.map(|ct| ct.split(';').next().unwrap_or_default().trim());
        PatchType::ALL
            .into_iter()
            .find(|t| essence.is_some_and(|e| e.eq_ignore_ascii_case(t.media_type())))
            .ok_or_else(|| KubeError::unsupported_media_type(&PatchType::MEDIA_TYPES))
    }

    /// The media type, as a `Content-Type` names it.
    pub fn media_type(&self) -> &'static str {
        match self {
            PatchType::Json => PatchType::MEDIA_TYPES[0],
            PatchType::Merge => PatchType::MEDIA_TYPES[1],
            PatchType::StrategicMerge => PatchType::MEDIA_TYPES[2],
            PatchType::Apply => PatchType::MEDIA_TYPES[3],
        }
    }
}

/// The lease a PATCH request names in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The namespace of the path.
    pub namespace: &'a str,
    /// The name of the path.
    pub name: &'a str,
}

/// Applies `body` to `current` (the live Lease as JSON, or None when it
/// does not exist) and checks the result's namespace and name against
/// `target`, as the module documentation says. Without `current`, every
/// type but [`PatchType::Apply`] is the apiserver's 404 for
/// `target.name`.
pub fn apply_patch(
    kind: PatchType,
    target: Target<'_>,
    current: Option<&Value>,
    body: &[u8],
) -> Result<Value, KubeError> {
    if body.len() > MAX_PATCH_BYTES {
        return Err(KubeError::request_entity_too_large(format!(
            "limit is {MAX_PATCH_BYTES}"
        )));
    }
    let mut patched = match (kind, current) {
        (PatchType::Apply, current) => server_side_apply(current, body)?,
        (_, None) => return Err(KubeError::lease_not_found(target.name)),
        (PatchType::Json, Some(current)) => json_patch(current, body)?,
        (PatchType::Merge, Some(current)) => merge_patch(current, body)?,
        (PatchType::StrategicMerge, Some(current)) => strategic_merge_patch(current, body)?,
    };
    if current.is_none() {
        refuse_uid_on_create(&patched, target)?;
    }
    check_identity(&mut patched, target)?;
    Ok(patched)
}

/// 400 BadRequest with `message`.
fn bad_request(message: impl Into<String>) -> KubeError {
    KubeError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// 422 as upstream's `NewGenericServerResponse(422, …)` words it, with the
/// actual error as the one cause (upstream drops it).
fn rejected(cause: impl std::fmt::Display) -> KubeError {
    KubeError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        "the server rejected our request due to an error in our request",
    )
    .with_details(patch_cause(cause.to_string()))
}

/// 422 for a result that cannot be a lease at all (upstream: decoding the
/// patched JSON fails, `patch.go:345-348`).
fn undecodable(what: impl std::fmt::Display) -> KubeError {
    let message = format!("Invalid value: {what}");
    KubeError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("the patched object is invalid: patch: {message}"),
    )
    .with_details(patch_cause(message))
}

fn patch_cause(message: String) -> StatusDetails {
    StatusDetails {
        causes: vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message,
            field: "patch".into(),
        }],
        ..Default::default()
    }
}

/// The JSON type of `v`, as Go's decoder names it in its errors.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's words for a body of the wrong JSON type.
fn cannot_unmarshal(v: &Value, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        json_kind(v)
    )
}

/// Whether `v` nests deeper than `max` levels (a scalar is 0 deep, a
/// container one more than its deepest element). Recurses at most `max + 1`
/// levels.
fn deeper_than(v: &Value, max: usize) -> bool {
    match v {
        Value::Array(a) => max == 0 || a.iter().any(|x| deeper_than(x, max - 1)),
        Value::Object(m) => max == 0 || m.values().any(|x| deeper_than(x, max - 1)),
        _ => false,
    }
}

/// About the size of `v` as JSON, bytes (for the copy bound).
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().fold(2, |n, x| n.saturating_add(json_size(x) + 1)),
        Value::Object(m) => m.iter().fold(2, |n, (k, x)| {
            n.saturating_add(k.len() + 4).saturating_add(json_size(x))
        }),
    }
}

/// RFC 6902, as `patch.go:392-416`.
fn json_patch(current: &Value, body: &[u8]) -> Result<Value, KubeError> {
    let decoded: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("error decoding patch: {e}")))?;
    let ops = match decoded {
        Value::Array(ops) => ops,
        // Go decodes `null` as an empty patch.
        Value::Null => Vec::new(),
        other => {
            let why = cannot_unmarshal(&other, "[]handlers.jsonPatchOp");
            return Err(bad_request(format!("error decoding patch: {why}")));
        }
    };
    for op in &ops {
        check_operation_shape(op)?;
    }
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(KubeError::request_entity_too_large(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut doc = current.clone();
    let mut copied = 0usize;
    for (i, op) in ops.into_iter().enumerate() {
        let op: PatchOperation =
            serde_json::from_value(op).map_err(|e| rejected(format!("operation {i}: {e}")))?;
        let placed = match &op {
            PatchOperation::Add(o) => Some((o.path.count(), Some(&o.value))),
            PatchOperation::Replace(o) => Some((o.path.count(), Some(&o.value))),
            PatchOperation::Move(o) => Some((o.path.count(), doc.pointer(o.from.as_str()))),
            PatchOperation::Copy(o) => {
                if let Some(source) = doc.pointer(o.from.as_str()) {
                    copied = copied.saturating_add(json_size(source));
                    if copied > MAX_JSON_PATCH_COPY_BYTES {
                        return Err(rejected(format!(
                            "operation {i}: Unable to complete the copy, the accumulated size \
                             increase of copy is {copied}, exceeding the limit \
                             {MAX_JSON_PATCH_COPY_BYTES}"
                        )));
                    }
                }
                Some((o.path.count(), doc.pointer(o.from.as_str())))
            }
            PatchOperation::Remove(_) | PatchOperation::Test(_) => None,
        };
        if let Some((levels, value)) = placed {
            let too_deep =
                levels > MAX_DEPTH || value.is_some_and(|v| deeper_than(v, MAX_DEPTH - levels));
            if too_deep {
                return Err(rejected(format!(
                    "operation {i}: the result would nest deeper than {MAX_DEPTH} levels"
                )));
            }
        }
        // One operation at a time on our own copy: nothing to undo on
        // failure, and `json_patch::patch`'s undo (which may panic) is
        // never needed.
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(&op)).map_err(|e| {
            rejected(format!(
                "operation {i} ({}) at path '{}': {}",
                op_name(&op),
                e.path,
                e.kind
            ))
        })?;
    }
    Ok(doc)
}

fn op_name(op: &PatchOperation) -> &'static str {
    match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}

/// Upstream first decodes the body strictly into `[]jsonPatchOp` (`op`,
/// `path` and `from` strings, any `value`): what fails there is a 400;
/// what passes but is not a valid operation fails when applied (422).
fn check_operation_shape(op: &Value) -> Result<(), KubeError> {
    let Value::Object(fields) = op else {
        let why = cannot_unmarshal(op, "handlers.jsonPatchOp");
        return Err(bad_request(format!("error decoding patch: {why}")));
    };
    for field in ["op", "path", "from"] {
        match fields.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(bad_request(format!(
                    "error decoding patch: json: cannot unmarshal {} into Go struct field \
                     jsonPatchOp.{field} of type string",
                    json_kind(other)
                )))
            }
        }
    }
    Ok(())
}

/// RFC 7386, as `patch.go:418-431` with strict field validation (kubectl
/// always asks for it): the body must decode into an object.
fn merge_patch(current: &Value, body: &[u8]) -> Result<Value, KubeError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("error decoding patch: {e}")))?;
    match &patch {
        Value::Object(_) => {}
        // evanphx/json-patch's ErrBadJSONPatch.
        Value::Null => return Err(bad_request("Invalid JSON Patch")),
        other => {
            let why = cannot_unmarshal(other, "map[string]interface {}");
            return Err(bad_request(format!("error decoding patch: {why}")));
        }
    }
    let mut doc = current.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Strategic merge, as `patch.go:553-575`: the body must be an object (or
/// `null`, which changes nothing).
fn strategic_merge_patch(current: &Value, body: &[u8]) -> Result<Value, KubeError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| bad_request(e.to_string()))?;
    let patch = match patch {
        Value::Object(patch) => patch,
        Value::Null => return Ok(current.clone()),
        other => {
            return Err(bad_request(cannot_unmarshal(
                &other,
                "map[string]interface {}",
            )))
        }
    };
    let Value::Object(live) = current.clone() else {
        return Err(KubeError::internal("the live lease is not a JSON object"));
    };
    Ok(Value::Object(strategic::merge(live, patch)?))
}

/// Server-side apply, in the subset the module documentation describes.
fn server_side_apply(current: Option<&Value>, body: &[u8]) -> Result<Value, KubeError> {
    let applied = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        // An empty document (which serde_yaml calls an error).
        Err(_) if body.trim_ascii().is_empty() => Value::Null,
        Err(_) => {
            yaml::from_slice(body).map_err(|e| bad_request(format!("error decoding YAML: {e}")))?
        }
    };
    let mut applied = match applied {
        Value::Object(applied) => applied,
        // Go decodes an empty document or `null` into an empty map.
        Value::Null => Map::new(),
        other => {
            let why = cannot_unmarshal(&other, "map[string]interface {}");
            return Err(bad_request(format!("error decoding YAML: {why}")));
        }
    };
    let (group, version, kind) = group_version_kind(&applied);
    if (group, version, kind) != (GROUP, VERSION, KIND) {
        return Err(bad_request(format!(
            "invalid object type: {group}/{version}, Kind={kind}"
        )));
    }
    if let Some(Value::Object(meta)) = applied.get_mut("metadata") {
        if meta.get("managedFields").is_some_and(Value::is_array) {
            return Err(bad_request("metadata.managedFields must be nil"));
        }
        meta.remove("managedFields");
    }
    let mut merged = current
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    json_patch::merge(&mut merged, &Value::Object(applied));
    if let Some(Value::Object(meta)) = merged.get_mut("metadata") {
        meta.remove("managedFields");
    }
    Ok(merged)
}

/// The group, version and kind an unstructured object names, as
/// `Unstructured.GroupVersionKind` reads them: non-strings are empty, and
/// an `apiVersion` with more than one `/` empties all three.
fn group_version_kind(obj: &Map<String, Value>) -> (&str, &str, &str) {
    let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match api_version.split_once('/') {
        _ if api_version.is_empty() || api_version == "/" => ("", "", kind),
        None => ("", api_version, kind),
        Some((_, rest)) if rest.contains('/') => ("", "", ""),
        Some((group, version)) => (group, version, kind),
    }
}

/// Apply onto no lease with a uid in the body: `patch.go:597-607`.
fn refuse_uid_on_create(obj: &Value, target: Target<'_>) -> Result<(), KubeError> {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if uid.is_empty() {
        return Ok(());
    }
    Err(KubeError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {RESOURCE}.{GROUP} \"{}\": uid mismatch: the \
             provided object specified uid {uid}, and no existing object was found",
            target.name
        ),
    )
    .with_details(StatusDetails {
        name: Some(target.name.into()),
        group: Some(GROUP.into()),
        kind: Some(RESOURCE.into()),
        ..Default::default()
    }))
}

/// Upstream's namespace defaulting and name check on every patched object
/// (`patch.go:609-618`).
fn check_identity(obj: &mut Value, target: Target<'_>) -> Result<(), KubeError> {
    let Value::Object(obj) = obj else {
        return Err(undecodable(format!(
            "the patched document is a JSON {}, not an object",
            json_kind(obj)
        )));
    };
    let meta = obj
        .entry("metadata")
        .and_modify(|m| {
            if m.is_null() {
                *m = Value::Object(Map::new());
            }
        })
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(undecodable(format!(
            "metadata is a JSON {}, not an object",
            json_kind(meta)
        )));
    };
    let text = |meta: &Map<String, Value>, field: &str| match meta.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(undecodable(format!(
            "metadata.{field} is a JSON {}, not a string",
            json_kind(other)
        ))),
    };
    let namespace = text(meta, "namespace")?;
    if namespace.is_empty() {
        meta.insert("namespace".into(), Value::String(target.namespace.into()));
    } else if namespace != target.namespace {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let name = text(meta, "name")?;
    if name != target.name {
        return Err(bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            target.name
        )));
    }
    Ok(())
}
