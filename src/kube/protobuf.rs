//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! turned into the JSON a client would have sent instead.
//!
//! client-go, from v0.32 on, writes typed Lease objects (POST, PUT) and
//! `DeleteOptions` (DELETE bodies) in protobuf. Rather than a second
//! validation and conversion path, this module decodes such a body into the
//! `serde_json::Value` of the same object as Go's `encoding/json` writes it,
//! and the handlers go on exactly as for a JSON body: unknown and refused
//! fields (`ownerReferences`, `managedFields`, ...) are found by name there.
//!
//! # The format
//! apimachinery's protobuf serializer (`pkg/runtime/serializer/protobuf`,
//! v0.32) writes the four bytes [`MAGIC`], then a `runtime.Unknown`:
//! `typeMeta` (`apiVersion`, `kind`), `raw` (the object's own protobuf
//! message), `contentEncoding` and `contentType`. The object messages are
//! proto2 (`k8s.io/api/coordination/v1/generated.proto`,
//! `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto`), mirrored here by
//! hand-written `prost` structs with the same field numbers; fields the
//! structs do not know are skipped, as upstream skips them.
//!
//! # What the JSON looks like
//! Each field is rendered the way its Go type marshals:
//! - pointer fields (all of `LeaseSpec`, most of `DeleteOptions`,
//!   `deletionTimestamp`, `deletionGracePeriodSeconds`, an owner
//!   reference's `controller`) keep proto2 presence: absent stays absent,
//!   and a present zero is written (`leaseTransitions: 0`);
//! - plain strings and integers of `ObjectMeta` and `ManagedFieldsEntry`
//!   are `omitempty`: gogo-protobuf writes them even when empty, Go's JSON
//!   leaves them out when empty, and so does this module;
//! - `MicroTime` is `%Y-%m-%dT%H:%M:%S%.6fZ` (nanoseconds truncated), `Time`
//!   whole seconds (upstream drops a `Time`'s nanoseconds when decoding);
//!   an empty time message, or Go's zero time, is JSON `null`, which is
//!   what a Go client's JSON says for the `creationTimestamp` it always
//!   sends;
//! - `apiVersion` and `kind` come from `typeMeta`; a Lease's default to
//!   `coordination.k8s.io/v1` and `Lease` when empty (upstream fills them
//!   from the request path), a `DeleteOptions`' are left out when empty.
//!
//! # Refusals
//! Every body is hostile until decoded: a missing prefix, a truncated
//! message, a wrong wire type, strings that are not UTF-8, another kind or
//! apiVersion, a `contentEncoding` (upstream has never written one), times
//! outside the years 0000 to 9999 or with nanoseconds outside
//! `0..=999_999_999`, and `fieldsV1` that is not JSON are all errors that
//! name what is wrong. What is decoded is at most proportional to the
//! body, whose size the caller bounds; none of the messages nest.

use chrono::{DateTime, Datelike};
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{GROUP_VERSION, KIND};

/// The `k8s\0` envelope's magic bytes.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The kind of a DELETE body.
pub const DELETE_OPTIONS_KIND: &str = "DeleteOptions";

/// The `apiVersion`s a `DeleteOptions` body may carry: `meta.k8s.io/v1`,
/// the legacy core `v1` (what apimachinery's own round-trip data holds),
/// and the Lease group's version, in which the group's clients encode it.
pub const DELETE_OPTIONS_API_VERSIONS: [&str; 3] = ["meta.k8s.io/v1", "v1", GROUP_VERSION];

/// What is expected, for [`ProtobufError::WrongKind`].
const EXPECTED_LEASE: &str = "Lease in coordination.k8s.io/v1";
const EXPECTED_DELETE_OPTIONS: &str =
    "DeleteOptions in meta.k8s.io/v1, v1 or coordination.k8s.io/v1";

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds; its JSON
/// is `null`.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// Why a protobuf body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with [`MAGIC`].
    #[error("not a Kubernetes protobuf body (missing the k8s\\0 prefix)")]
    MissingMagic,
    /// The body is [`MAGIC`] and nothing else.
    #[error("empty Kubernetes protobuf body (nothing after the k8s\\0 prefix)")]
    Empty,
    /// The `runtime.Unknown` envelope after the prefix does not decode.
    #[error("Kubernetes protobuf body has a bad runtime.Unknown envelope: {0}")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope says its object is compressed or otherwise encoded.
    #[error("protobuf body has contentEncoding {0:?}; only unencoded bodies are accepted")]
    ContentEncoding(String),
    /// The envelope's `typeMeta` names another object.
    #[error(
        "protobuf body holds kind {kind:?} in apiVersion {api_version:?}, expected {expected}"
    )]
    WrongKind {
        /// The `kind` the body holds.
        kind: String,
        /// The `apiVersion` the body holds.
        api_version: String,
        /// The kind and apiVersion(s) expected.
        expected: &'static str,
    },
    /// The object inside the envelope does not decode.
    #[error("protobuf body is not a valid {message}: {source}")]
    Decode {
        /// The message expected (`Lease`, `DeleteOptions`).
        message: &'static str,
        /// prost's error, naming the message and field where it failed.
        #[source]
        source: prost::DecodeError,
    },
    /// A field decoded but holds a value with no JSON form.
    #[error("protobuf field {field}: {problem}")]
    Field {
        /// The field's JSON path, e.g. `spec.renewTime`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// `runtime.Unknown`, less `contentType` (ignored, as upstream ignores it).
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
    #[prost(string, tag = "3")]
    content_encoding: String,
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

/// `coordination.v1.Lease`.
#[derive(Clone, PartialEq, Message)]
struct Lease {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<LeaseSpec>,
}

/// `coordination.v1.LeaseSpec`; every field is a pointer in Go.
#[derive(Clone, PartialEq, Message)]
struct LeaseSpec {
    #[prost(string, optional, tag = "1")]
    holder_identity: Option<String>,
    #[prost(int32, optional, tag = "2")]
    lease_duration_seconds: Option<i32>,
    #[prost(message, optional, tag = "3")]
    acquire_time: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    renew_time: Option<Timestamp>,
    #[prost(int32, optional, tag = "5")]
    lease_transitions: Option<i32>,
    #[prost(string, optional, tag = "6")]
    strategy: Option<String>,
    #[prost(string, optional, tag = "7")]
    preferred_holder: Option<String>,
}

/// `meta.v1.Time` and `meta.v1.MicroTime`, which share their wire form.
#[derive(Clone, PartialEq, Message)]
struct Timestamp {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

/// `meta.v1.ObjectMeta` (field 15, `clusterName`, and 16 are retired).
#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(string, tag = "4")]
    self_link: String,
    #[prost(string, tag = "5")]
    uid: String,
    #[prost(string, tag = "6")]
    resource_version: String,
    #[prost(int64, tag = "7")]
    generation: i64,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "9")]
    deletion_timestamp: Option<Timestamp>,
    #[prost(int64, optional, tag = "10")]
    deletion_grace_period_seconds: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
    #[prost(message, repeated, tag = "17")]
    managed_fields: Vec<ManagedFieldsEntry>,
}

/// `meta.v1.OwnerReference`.
#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(string, tag = "5")]
    api_version: String,
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    uid: String,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

/// `meta.v1.ManagedFieldsEntry` (field 5, `fields`, is retired).
#[derive(Clone, PartialEq, Message)]
struct ManagedFieldsEntry {
    #[prost(string, tag = "1")]
    manager: String,
    #[prost(string, tag = "2")]
    operation: String,
    #[prost(string, tag = "3")]
    api_version: String,
    #[prost(message, optional, tag = "4")]
    time: Option<Timestamp>,
    #[prost(string, tag = "6")]
    fields_type: String,
    #[prost(message, optional, tag = "7")]
    fields_v1: Option<FieldsV1>,
    #[prost(string, tag = "8")]
    subresource: String,
}

/// `meta.v1.FieldsV1`: JSON held as bytes.
#[derive(Clone, PartialEq, Message)]
struct FieldsV1 {
    #[prost(bytes = "vec", optional, tag = "1")]
    raw: Option<Vec<u8>>,
}

/// `meta.v1.DeleteOptions`.
#[derive(Clone, PartialEq, Message)]
struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    preconditions: Option<Preconditions>,
    #[prost(bool, optional, tag = "3")]
    orphan_dependents: Option<bool>,
    #[prost(string, optional, tag = "4")]
    propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    dry_run: Vec<String>,
    #[prost(bool, optional, tag = "6")]
    ignore_store_read_error_with_cluster_breaking_potential: Option<bool>,
}

/// `meta.v1.Preconditions`.
#[derive(Clone, PartialEq, Message)]
struct Preconditions {
    #[prost(string, optional, tag = "1")]
    uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
}

/// The JSON of a `coordination.k8s.io/v1` Lease sent as a Kubernetes
/// protobuf body (POST, PUT).
pub fn lease_json(body: &[u8]) -> Result<Value, ProtobufError> {
    let unknown = envelope(body)?;
    let (api_version, kind) = type_meta(&unknown);
    let api_version = if api_version.is_empty() {
        GROUP_VERSION
    } else {
        api_version
    };
    let kind = if kind.is_empty() { KIND } else { kind };
    if api_version != GROUP_VERSION || kind != KIND {
        return Err(wrong_kind(&unknown, EXPECTED_LEASE));
    }
    let lease = Lease::decode(unknown.raw.as_slice()).map_err(|source| ProtobufError::Decode {
        message: "coordination.k8s.io/v1 Lease",
        source,
    })?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), GROUP_VERSION.into());
    out.insert("kind".into(), KIND.into());
    if let Some(m) = &lease.metadata {
        out.insert("metadata".into(), object_meta_json(m)?);
    }
    if let Some(s) = &lease.spec {
        out.insert("spec".into(), lease_spec_json(s)?);
    }
    Ok(Value::Object(out))
}

/// The JSON of a `DeleteOptions` sent as a Kubernetes protobuf body
/// (DELETE).
pub fn delete_options_json(body: &[u8]) -> Result<Value, ProtobufError> {
    let unknown = envelope(body)?;
    let (api_version, kind) = type_meta(&unknown);
    let version_ok = api_version.is_empty() || DELETE_OPTIONS_API_VERSIONS.contains(&api_version);
    if !version_ok || !(kind.is_empty() || kind == DELETE_OPTIONS_KIND) {
        return Err(wrong_kind(&unknown, EXPECTED_DELETE_OPTIONS));
    }
    let opts =
        DeleteOptions::decode(unknown.raw.as_slice()).map_err(|source| ProtobufError::Decode {
            message: "DeleteOptions",
            source,
        })?;
    let mut out = Map::new();
    put_non_empty(&mut out, "apiVersion", api_version);
    put_non_empty(&mut out, "kind", kind);
    if let Some(s) = opts.grace_period_seconds {
        out.insert("gracePeriodSeconds".into(), s.into());
    }
    if let Some(p) = &opts.preconditions {
        let mut pre = Map::new();
        put_some(&mut pre, "uid", &p.uid);
        put_some(&mut pre, "resourceVersion", &p.resource_version);
        out.insert("preconditions".into(), Value::Object(pre));
    }
    if let Some(b) = opts.orphan_dependents {
        out.insert("orphanDependents".into(), b.into());
    }
    put_some(&mut out, "propagationPolicy", &opts.propagation_policy);
    put_strings(&mut out, "dryRun", &opts.dry_run);
    if let Some(b) = opts.ignore_store_read_error_with_cluster_breaking_potential {
        out.insert(
            "ignoreStoreReadErrorWithClusterBreakingPotential".into(),
            b.into(),
        );
    }
    Ok(Value::Object(out))
}

/// Checks the prefix and decodes the `runtime.Unknown` after it.
fn envelope(body: &[u8]) -> Result<Unknown, ProtobufError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::MissingMagic)?;
    if rest.is_empty() {
        return Err(ProtobufError::Empty);
    }
    let unknown = Unknown::decode(rest).map_err(ProtobufError::Envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(unknown.content_encoding));
    }
    Ok(unknown)
}

/// The envelope's `apiVersion` and `kind`, empty when absent.
fn type_meta(u: &Unknown) -> (&str, &str) {
    match &u.type_meta {
        Some(t) => (&t.api_version, &t.kind),
        None => ("", ""),
    }
}

fn wrong_kind(u: &Unknown, expected: &'static str) -> ProtobufError {
    let (api_version, kind) = type_meta(u);
    ProtobufError::WrongKind {
        kind: kind.to_string(),
        api_version: api_version.to_string(),
        expected,
    }
}

fn object_meta_json(m: &ObjectMeta) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    put_non_empty(&mut out, "name", &m.name);
    put_non_empty(&mut out, "generateName", &m.generate_name);
    put_non_empty(&mut out, "namespace", &m.namespace);
    put_non_empty(&mut out, "selfLink", &m.self_link);
    put_non_empty(&mut out, "uid", &m.uid);
    put_non_empty(&mut out, "resourceVersion", &m.resource_version);
    if m.generation != 0 {
        out.insert("generation".into(), m.generation.into());
    }
    if let Some(t) = &m.creation_timestamp {
        let v = time_json(t, Precision::Seconds, || {
            "metadata.creationTimestamp".into()
        })?;
        out.insert("creationTimestamp".into(), v);
    }
    if let Some(t) = &m.deletion_timestamp {
        let v = time_json(t, Precision::Seconds, || {
            "metadata.deletionTimestamp".into()
        })?;
        out.insert("deletionTimestamp".into(), v);
    }
    if let Some(s) = m.deletion_grace_period_seconds {
        out.insert("deletionGracePeriodSeconds".into(), s.into());
    }
    put_map(&mut out, "labels", &m.labels);
    put_map(&mut out, "annotations", &m.annotations);
    if !m.owner_references.is_empty() {
        let refs = m
            .owner_references
            .iter()
            .map(owner_reference_json)
            .collect();
        out.insert("ownerReferences".into(), Value::Array(refs));
    }
    put_strings(&mut out, "finalizers", &m.finalizers);
    if !m.managed_fields.is_empty() {
        let entries = m
            .managed_fields
            .iter()
            .enumerate()
            .map(|(i, e)| managed_fields_entry_json(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert("managedFields".into(), Value::Array(entries));
    }
    Ok(Value::Object(out))
}

/// An owner reference: its four strings are not `omitempty` in Go.
fn owner_reference_json(r: &OwnerReference) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), r.api_version.clone().into());
    out.insert("kind".into(), r.kind.clone().into());
    out.insert("name".into(), r.name.clone().into());
    out.insert("uid".into(), r.uid.clone().into());
    if let Some(b) = r.controller {
        out.insert("controller".into(), b.into());
    }
    if let Some(b) = r.block_owner_deletion {
        out.insert("blockOwnerDeletion".into(), b.into());
    }
    Value::Object(out)
}

fn managed_fields_entry_json(i: usize, e: &ManagedFieldsEntry) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    put_non_empty(&mut out, "manager", &e.manager);
    put_non_empty(&mut out, "operation", &e.operation);
    put_non_empty(&mut out, "apiVersion", &e.api_version);
    if let Some(t) = &e.time {
        let v = time_json(t, Precision::Seconds, || {
            format!("metadata.managedFields[{i}].time")
        })?;
        out.insert("time".into(), v);
    }
    put_non_empty(&mut out, "fieldsType", &e.fields_type);
    if let Some(f) = &e.fields_v1 {
        // Go's FieldsV1.MarshalJSON writes the bytes as they are (`null`
        // when there are none); bytes that are not JSON fail there too.
        let v = match &f.raw {
            None => Value::Null,
            Some(raw) => serde_json::from_slice(raw).map_err(|err| ProtobufError::Field {
                field: format!("metadata.managedFields[{i}].fieldsV1"),
                problem: format!("is not JSON ({err})"),
            })?,
        };
        out.insert("fieldsV1".into(), v);
    }
    put_non_empty(&mut out, "subresource", &e.subresource);
    Ok(Value::Object(out))
}

fn lease_spec_json(s: &LeaseSpec) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    put_some(&mut out, "holderIdentity", &s.holder_identity);
    if let Some(n) = s.lease_duration_seconds {
        out.insert("leaseDurationSeconds".into(), n.into());
    }
    if let Some(t) = &s.acquire_time {
        let v = time_json(t, Precision::Micros, || "spec.acquireTime".into())?;
        out.insert("acquireTime".into(), v);
    }
    if let Some(t) = &s.renew_time {
        let v = time_json(t, Precision::Micros, || "spec.renewTime".into())?;
        out.insert("renewTime".into(), v);
    }
    if let Some(n) = s.lease_transitions {
        out.insert("leaseTransitions".into(), n.into());
    }
    put_some(&mut out, "strategy", &s.strategy);
    put_some(&mut out, "preferredHolder", &s.preferred_holder);
    Ok(Value::Object(out))
}

/// Which Go time type a timestamp message is.
#[derive(Clone, Copy)]
enum Precision {
    /// `metav1.Time`: upstream keeps whole seconds, JSON has no fraction.
    Seconds,
    /// `metav1.MicroTime`: nanoseconds truncated to microseconds, six
    /// fractional digits.
    Micros,
}

/// A time message as Go's JSON writes it. `field` names it in errors.
fn time_json(
    t: &Timestamp,
    precision: Precision,
    field: impl Fn() -> String,
) -> Result<Value, ProtobufError> {
    // Upstream reads an empty message as the zero time.
    if t.seconds.is_none() && t.nanos.is_none() {
        return Ok(Value::Null);
    }
    let seconds = t.seconds.unwrap_or(0);
    let nanos = t.nanos.unwrap_or(0);
    let bad = |problem: String| ProtobufError::Field {
        field: field(),
        problem,
    };
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| bad(format!("nanos {nanos} is outside 0..=999999999")))?;
    let nanos = match precision {
        Precision::Seconds => 0,
        Precision::Micros => nanos - nanos % 1_000,
    };
    if seconds == GO_ZERO_TIME_UNIX && nanos == 0 {
        return Ok(Value::Null);
    }
    let time = DateTime::from_timestamp(seconds, nanos)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| {
            bad(format!(
                "{seconds} seconds since the epoch is outside the years 0000 to 9999"
            ))
        })?;
    let format = match precision {
        Precision::Seconds => "%Y-%m-%dT%H:%M:%SZ",
        Precision::Micros => "%Y-%m-%dT%H:%M:%S%.6fZ",
    };
    Ok(Value::String(time.format(format).to_string()))
}

/// Sets `key` to `value` unless it is empty (Go's `omitempty` string).
fn put_non_empty(out: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        out.insert(key.into(), value.into());
    }
}

/// Sets `key` to `value` when present, even if empty (a Go `*string`).
fn put_some(out: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        out.insert(key.into(), v.clone().into());
    }
}

/// Sets `key` to the strings unless there are none (`omitempty` slice).
fn put_strings(out: &mut Map<String, Value>, key: &str, values: &[String]) {
    if !values.is_empty() {
        out.insert(key.into(), values.iter().cloned().collect());
    }
}

/// Sets `key` to the map unless it is empty (`omitempty` map).
fn put_map(out: &mut Map<String, Value>, key: &str, map: &BTreeMap<String, String>) {
    if !map.is_empty() {
        let obj = map
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out.insert(key.into(), Value::Object(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Fixtures from kubernetes/api's round-trip test data (v0.32.4); see
    // tests/fixtures/k8s/NOTICE.
    const LEASE_PB: &[u8] =
        include_bytes!("../../tests/fixtures/k8s/coordination.k8s.io.v1.Lease.pb");
    const LEASE_JSON: &str =
        include_str!("../../tests/fixtures/k8s/coordination.k8s.io.v1.Lease.json");
    const DELETE_OPTIONS_PB: &[u8] =
        include_bytes!("../../tests/fixtures/k8s/core.v1.DeleteOptions.pb");
    const DELETE_OPTIONS_JSON: &str =
        include_str!("../../tests/fixtures/k8s/core.v1.DeleteOptions.json");

    // A tiny protobuf writer that, like gogo-protobuf, writes every field
    // it is given (empty strings and zeros included).
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(tag: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from((tag << 3) | 2), &mut out);
        varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    fn varint_field(tag: u32, value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(tag << 3), &mut out);
        varint(value as u64, &mut out);
        out
    }

    fn time_msg(seconds: i64, nanos: i64) -> Vec<u8> {
        [varint_field(1, seconds), varint_field(2, nanos)].concat()
    }

    /// A whole body: prefix, envelope with typeMeta, raw, and the empty
    /// contentEncoding and contentType gogo writes.
    fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [
            bytes_field(1, api_version.as_bytes()),
            bytes_field(2, kind.as_bytes()),
        ]
        .concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, raw),
            bytes_field(3, b""),
            bytes_field(4, b""),
        ]
        .concat()
    }

    fn lease_body(raw: &[u8]) -> Vec<u8> {
        body(GROUP_VERSION, KIND, raw)
    }

    fn spec_with(field: Vec<u8>) -> Vec<u8> {
        bytes_field(2, &field)
    }

    fn field_error(r: Result<Value, ProtobufError>) -> (String, String) {
        match r {
            Err(ProtobufError::Field { field, problem }) => (field, problem),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn golden_lease_decodes_to_its_json() {
        // Exact: the upstream JSON's times are already in our form
        // (`Time` in seconds, `MicroTime` with six digits).
        let want: Value = serde_json::from_str(LEASE_JSON).expect("fixture is JSON");
        assert_eq!(lease_json(LEASE_PB).expect("golden lease decodes"), want);
    }

    #[test]
    fn golden_delete_options_decode_to_their_json() {
        // Upstream's DeleteOptions round-trip data is registered in the
        // legacy core group: its typeMeta is apiVersion "v1".
        let want: Value = serde_json::from_str(DELETE_OPTIONS_JSON).expect("fixture is JSON");
        assert_eq!(want["apiVersion"], "v1");
        assert_eq!(
            delete_options_json(DELETE_OPTIONS_PB).expect("golden options decode"),
            want
        );
    }

    #[test]
    fn leaselock_lease_keeps_zero_transitions() {
        // What client-go's LeaseLock creates, field for field as gogo
        // writes it: every ObjectMeta string (empty ones too), generation
        // 0 and an empty creationTimestamp; the spec's pointers it set.
        let metadata = [
            bytes_field(1, b"controller"),
            bytes_field(2, b""),
            bytes_field(3, b"kube-system"),
            bytes_field(4, b""),
            bytes_field(5, b""),
            bytes_field(6, b""),
            varint_field(7, 0),
            bytes_field(8, b""),
        ]
        .concat();
        let spec = [
            bytes_field(1, b"node-a_1234"),
            varint_field(2, 15),
            bytes_field(3, &time_msg(1_735_689_600, 123_456_789)),
            bytes_field(4, &time_msg(1_735_689_605, 0)),
            varint_field(5, 0),
        ]
        .concat();
        let raw = [bytes_field(1, &metadata), bytes_field(2, &spec)].concat();
        let got = lease_json(&lease_body(&raw)).expect("decodes");
        assert_eq!(
            got,
            json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": "controller",
                    "namespace": "kube-system",
                    "creationTimestamp": null
                },
                "spec": {
                    "holderIdentity": "node-a_1234",
                    "leaseDurationSeconds": 15,
                    "acquireTime": "2025-01-01T00:00:00.123456Z",
                    "renewTime": "2025-01-01T00:00:05.000000Z",
                    "leaseTransitions": 0
                }
            })
        );
    }

    #[test]
    fn absent_spec_fields_stay_absent_and_empty_ones_are_kept() {
        let spec = [bytes_field(1, b""), bytes_field(6, b"")].concat();
        let raw = spec_with(spec);
        let got = lease_json(&lease_body(&raw)).expect("decodes");
        assert_eq!(got["spec"], json!({"holderIdentity": "", "strategy": ""}));
        assert!(got.get("metadata").is_none());
    }

    #[test]
    fn empty_type_meta_defaults_to_lease() {
        let raw = spec_with(varint_field(5, 3));
        let want = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "spec": {"leaseTransitions": 3}
        });
        assert_eq!(lease_json(&body("", "", &raw)).expect("decodes"), want);
        // No typeMeta field at all.
        let bare = [MAGIC.to_vec(), bytes_field(2, &raw)].concat();
        assert_eq!(lease_json(&bare).expect("decodes"), want);
        // One of the two given.
        assert_eq!(lease_json(&body("", "Lease", &raw)).expect("decodes"), want);
    }

    #[test]
    fn missing_magic_is_refused() {
        for b in [
            &b""[..],
            b"k8s",
            b"{\"kind\":\"Lease\"}",
            b"k8s\x01\x0a\x00",
        ] {
            let err = lease_json(b).expect_err("no prefix");
            assert!(matches!(err, ProtobufError::MissingMagic), "{err:?}");
            assert_eq!(
                err.to_string(),
                "not a Kubernetes protobuf body (missing the k8s\\0 prefix)"
            );
            assert!(matches!(
                delete_options_json(b),
                Err(ProtobufError::MissingMagic)
            ));
        }
    }

    #[test]
    fn only_the_magic_is_refused() {
        assert!(matches!(lease_json(&MAGIC), Err(ProtobufError::Empty)));
        assert!(matches!(
            delete_options_json(&MAGIC),
            Err(ProtobufError::Empty)
        ));
    }

    #[test]
    fn truncated_bodies_are_refused() {
        // The envelope is typeMeta (ends at byte 37), raw (to len - 4),
        // then the empty contentEncoding and contentType (two bytes each).
        // Cutting at a field boundary leaves a valid, shorter message, as
        // it would for upstream; every other cut must fail, and none may
        // panic.
        let raw_end = LEASE_PB.len() - 4;
        for cut in 0..LEASE_PB.len() {
            let r = lease_json(&LEASE_PB[..cut]);
            let boundary = cut == 37 || cut == raw_end || cut == raw_end + 2;
            if boundary {
                assert!(r.is_ok(), "cut {cut}: {r:?}");
            } else {
                assert!(r.is_err(), "cut {cut} decoded");
            }
        }
        assert!(matches!(
            lease_json(&LEASE_PB[..200]),
            Err(ProtobufError::Envelope(_))
        ));
        for cut in 0..DELETE_OPTIONS_PB.len() {
            let _ = delete_options_json(&DELETE_OPTIONS_PB[..cut]);
        }
    }

    #[test]
    fn wrong_kind_is_refused() {
        let err = lease_json(&body("v1", "ConfigMap", b"")).expect_err("a ConfigMap");
        assert_eq!(
            err.to_string(),
            "protobuf body holds kind \"ConfigMap\" in apiVersion \"v1\", \
             expected Lease in coordination.k8s.io/v1"
        );
        let err = lease_json(&body(GROUP_VERSION, "LeaseList", b"")).expect_err("a list");
        assert!(matches!(err, ProtobufError::WrongKind { .. }), "{err:?}");
        let err = delete_options_json(&body("v1", "Lease", b"")).expect_err("a Lease");
        assert!(
            err.to_string().ends_with(
                "expected DeleteOptions in meta.k8s.io/v1, v1 or coordination.k8s.io/v1"
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_api_version_is_refused() {
        let err =
            lease_json(&body("coordination.k8s.io/v1beta1", "Lease", b"")).expect_err("v1beta1");
        assert_eq!(
            err.to_string(),
            "protobuf body holds kind \"Lease\" in apiVersion \"coordination.k8s.io/v1beta1\", \
             expected Lease in coordination.k8s.io/v1"
        );
        let err = delete_options_json(&body("apps/v1", "DeleteOptions", b"")).expect_err("apps");
        assert!(matches!(err, ProtobufError::WrongKind { .. }), "{err:?}");
    }

    #[test]
    fn delete_options_accept_each_version_and_an_empty_type_meta() {
        let raw = bytes_field(4, b"Background");
        for v in DELETE_OPTIONS_API_VERSIONS {
            assert_eq!(
                delete_options_json(&body(v, "DeleteOptions", &raw)).expect("decodes"),
                json!({"apiVersion": v, "kind": "DeleteOptions", "propagationPolicy": "Background"})
            );
        }
        assert_eq!(
            delete_options_json(&body("", "", &raw)).expect("decodes"),
            json!({"propagationPolicy": "Background"})
        );
        // Present pointers stay present, even when zero or empty.
        let raw = [
            varint_field(1, 0),
            bytes_field(2, &bytes_field(2, b"")),
            varint_field(3, 0),
        ]
        .concat();
        assert_eq!(
            delete_options_json(&body("", "", &raw)).expect("decodes"),
            json!({
                "gracePeriodSeconds": 0,
                "preconditions": {"resourceVersion": ""},
                "orphanDependents": false
            })
        );
    }

    #[test]
    fn content_encoding_is_refused() {
        let mut b = body(GROUP_VERSION, KIND, b"");
        b.extend(bytes_field(3, b"gzip"));
        let err = lease_json(&b).expect_err("encoded");
        assert!(matches!(err, ProtobufError::ContentEncoding(ref e) if e == "gzip"));
        assert!(
            err.to_string().contains("contentEncoding \"gzip\""),
            "{err}"
        );
    }

    #[test]
    fn garbage_raw_bytes_are_refused() {
        for raw in [
            &[0xff; 12][..],         // a varint that never ends
            b"\x0a\x05ab",           // metadata longer than what follows
            b"\x12\x02\x08\x01",     // spec.holderIdentity as a varint
            b"\x0f",                 // wire type 7
            b"\x0a\x03\x0a\x01\xff", // metadata.name not UTF-8
        ] {
            let err = lease_json(&lease_body(raw)).expect_err("garbage");
            assert!(matches!(err, ProtobufError::Decode { .. }), "{err:?}");
            assert!(err
                .to_string()
                .starts_with("protobuf body is not a valid coordination.k8s.io/v1 Lease: "));
            let err = delete_options_json(&body("", "", raw)).expect_err("garbage");
            assert!(matches!(err, ProtobufError::Decode { .. }), "{err:?}");
        }
        // The decode error names where it failed.
        let err = lease_json(&lease_body(b"\x12\x02\x08\x01")).expect_err("garbage");
        assert!(
            err.to_string().contains("LeaseSpec.holder_identity"),
            "{err}"
        );
    }

    #[test]
    fn bad_nanos_are_refused_naming_the_field() {
        for nanos in [-1, 1_000_000_000, i64::from(i32::MIN)] {
            let raw = spec_with(bytes_field(4, &time_msg(1_700_000_000, nanos)));
            let (field, problem) = field_error(lease_json(&lease_body(&raw)));
            assert_eq!(field, "spec.renewTime");
            assert!(problem.contains(&nanos.to_string()), "{problem}");
        }
        let meta = bytes_field(9, &time_msg(1_700_000_000, 1_000_000_000));
        let (field, _) = field_error(lease_json(&lease_body(&bytes_field(1, &meta))));
        assert_eq!(field, "metadata.deletionTimestamp");
    }

    #[test]
    fn out_of_range_seconds_are_refused_naming_the_field() {
        // Past chrono's range, and past year 9999 (RFC 3339 has four-digit
        // years), and before year 0.
        for seconds in [i64::MAX, i64::MIN, 253_402_300_800, -62_167_219_201] {
            let raw = spec_with(bytes_field(3, &time_msg(seconds, 0)));
            let (field, problem) = field_error(lease_json(&lease_body(&raw)));
            assert_eq!(field, "spec.acquireTime");
            assert!(problem.contains("outside the years"), "{problem}");
        }
        let meta = bytes_field(8, &time_msg(i64::MAX, 0));
        let (field, _) = field_error(lease_json(&lease_body(&bytes_field(1, &meta))));
        assert_eq!(field, "metadata.creationTimestamp");
        // The edges themselves are fine.
        let raw = spec_with(bytes_field(3, &time_msg(253_402_300_799, 999_999_999)));
        let got = lease_json(&lease_body(&raw)).expect("year 9999");
        assert_eq!(got["spec"]["acquireTime"], "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn times_render_as_go_marshals_them() {
        // Time drops its nanoseconds; MicroTime truncates to microseconds;
        // an empty message and Go's zero time are null; the epoch is not.
        let meta = [
            bytes_field(8, &time_msg(1_199_149_261, 999_999_999)),
            bytes_field(9, &time_msg(GO_ZERO_TIME_UNIX, 0)),
        ]
        .concat();
        let spec = [bytes_field(3, &time_msg(0, 1_999)), bytes_field(4, b"")].concat();
        let raw = [bytes_field(1, &meta), bytes_field(2, &spec)].concat();
        let got = lease_json(&lease_body(&raw)).expect("decodes");
        assert_eq!(got["metadata"]["creationTimestamp"], "2008-01-01T01:01:01Z");
        assert_eq!(got["metadata"]["deletionTimestamp"], Value::Null);
        assert_eq!(got["spec"]["acquireTime"], "1970-01-01T00:00:00.000001Z");
        assert_eq!(got["spec"]["renewTime"], Value::Null);
        let zero_micro = spec_with(bytes_field(4, &time_msg(GO_ZERO_TIME_UNIX, 999)));
        let got = lease_json(&lease_body(&zero_micro)).expect("decodes");
        assert_eq!(got["spec"]["renewTime"], Value::Null);
    }

    #[test]
    fn fields_v1_must_be_json() {
        let entry = [
            bytes_field(1, b"kubectl"),
            bytes_field(7, &bytes_field(1, b"{")),
        ]
        .concat();
        let meta = [bytes_field(17, b""), bytes_field(17, &entry)].concat();
        let (field, problem) = field_error(lease_json(&lease_body(&bytes_field(1, &meta))));
        assert_eq!(field, "metadata.managedFields[1].fieldsV1");
        assert!(problem.starts_with("is not JSON"), "{problem}");
        // Without bytes it is null, as Go writes it.
        let entry = bytes_field(7, b"");
        let raw = bytes_field(1, &bytes_field(17, &entry));
        let got = lease_json(&lease_body(&raw)).expect("decodes");
        assert_eq!(
            got["metadata"]["managedFields"],
            json!([{"fieldsV1": null}])
        );
    }

    #[test]
    fn owner_references_keep_their_required_strings() {
        let raw = bytes_field(1, &bytes_field(13, &bytes_field(3, b"owner")));
        let got = lease_json(&lease_body(&raw)).expect("decodes");
        assert_eq!(
            got["metadata"]["ownerReferences"],
            json!([{"apiVersion": "", "kind": "", "name": "owner", "uid": ""}])
        );
    }
}
