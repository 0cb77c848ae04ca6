//! The Table representation (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! which is what makes `kubectl get leases` print `NAME HOLDER AGE`.
//!
//! kubectl prints a server-side Table as it comes: the columns, and one
//! row of cells per lease. The columns and cells are upstream's
//! (kubernetes `pkg/printers/internalversion/printers.go`, `printLease`):
//! Name, Holder (empty without a holder) and Age (creation to now, as
//! [`super::duration::human_duration`] prints it), with the 1.32 API
//! documentation as their descriptions. For `-A` kubectl adds the
//! NAMESPACE column itself, from each row's `object`, which is therefore
//! there by default:
//!
//! | `includeObject` | row `object`                                    |
//! |-----------------|-------------------------------------------------|
//! | absent, `Metadata` | `PartialObjectMetadata` (apiVersion as the Table) |
//! | `Object`        | the whole Lease                                 |
//! | `None`          | absent                                          |
//!
//! Any other value is a 400 naming `includeObject`. A list's Table copies
//! the list's `resourceVersion` and `continue`; a single lease's Table has
//! the lease's `resourceVersion` and one row.

use super::duration::age;
use super::negotiate::TableVersion;
use super::status::KubeError;
use super::types::{Lease, ListMeta, PartialObjectMetadata};
use crate::lease::Timestamp;
use serde::Serialize;

/// The query parameter choosing each row's `object`.
pub const INCLUDE_OBJECT: &str = "includeObject";

/// What each row carries besides its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// The object's metadata (the default).
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

impl IncludeObject {
    /// The parameter's value (absent or empty: the default).
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, KubeError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            "None" => Ok(IncludeObject::None),
            other => Err(KubeError::bad_param(
                INCLUDE_OBJECT,
                format!(
                    "unrecognized value {:?}; use None, Object or Metadata",
                    other.chars().take(32).collect::<String>()
                ),
            )),
        }
    }
}

/// `metav1.TableColumnDefinition`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Column {
    /// The header kubectl prints (upper-cased).
    pub name: &'static str,
    /// OpenAPI type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// OpenAPI format.
    pub format: &'static str,
    /// What the column means.
    pub description: &'static str,
    /// 0: shown by default.
    pub priority: i32,
}

/// The row's `object`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RowObject {
    /// `PartialObjectMetadata`.
    Metadata(PartialObjectMetadata),
    /// The Lease.
    Object(Box<Lease>),
}

/// `metav1.TableRow`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// Name, holder, age.
    pub cells: Vec<String>,
    /// Per `includeObject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<RowObject>,
}

/// `metav1.Table`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// `Table`.
    pub kind: &'static str,
    /// `meta.k8s.io/v1` or `v1beta1`.
    pub api_version: &'static str,
    /// The listing's (or the lease's) resourceVersion, and `continue`.
    pub metadata: ListMeta,
    /// Name, Holder, Age.
    pub column_definitions: Vec<Column>,
    /// One per lease.
    pub rows: Vec<Row>,
}

/// `ObjectMeta.name`'s documentation (apimachinery v0.32).
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// `LeaseSpec.holderIdentity`'s documentation (api v0.32).
const HOLDER_DOC: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
/// `ObjectMeta.creationTimestamp`'s documentation (apimachinery v0.32).
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The lease columns.
pub fn columns() -> Vec<Column> {
    vec![
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            description: NAME_DOC,
            priority: 0,
        },
        Column {
            name: "Holder",
            kind: "string",
            format: "",
            description: HOLDER_DOC,
            priority: 0,
        },
        Column {
            name: "Age",
            kind: "string",
            format: "",
            description: AGE_DOC,
            priority: 0,
        },
    ]
}

fn row(lease: Lease, version: TableVersion, include: IncludeObject, now: Timestamp) -> Row {
    let created = lease
        .metadata
        .creation_timestamp
        .as_deref()
        .and_then(|t| Timestamp::parse_rfc3339(t).ok());
    let cells = vec![
        lease.metadata.name.clone(),
        lease.spec.holder_identity.clone().unwrap_or_default(),
        age(created, now),
    ];
    let object = match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(RowObject::Object(Box::new(lease))),
        IncludeObject::Metadata => Some(RowObject::Metadata(PartialObjectMetadata {
            api_version: version.api_version(),
            kind: "PartialObjectMetadata",
            metadata: lease.metadata,
        })),
    };
    Row { cells, object }
}

/// The Table of `leases`, with the list metadata `metadata`, at `now`.
pub fn table(
    leases: Vec<Lease>,
    metadata: ListMeta,
    version: TableVersion,
    include: IncludeObject,
    now: Timestamp,
) -> Table {
    Table {
        kind: "Table",
        api_version: version.api_version(),
        metadata,
        column_definitions: columns(),
        rows: leases
            .into_iter()
            .map(|l| row(l, version, include, now))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::types::tests::sample;
    use serde_json::json;

    fn now() -> Timestamp {
        // sample() was created at 2026-12-01T10:00:00Z; 5m30s later.
        Timestamp::parse_rfc3339("2026-12-01T10:05:30.900000Z").unwrap()
    }

    fn meta(rv: &str) -> ListMeta {
        ListMeta {
            resource_version: rv.into(),
            continue_token: None,
        }
    }

    #[test]
    fn rows_have_name_holder_age_and_metadata_by_default() {
        let l = Lease::from_proto(&sample());
        let t = table(
            vec![l],
            meta("42"),
            TableVersion::V1,
            IncludeObject::Metadata,
            now(),
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(v["metadata"], json!({"resourceVersion": "42"}));
        let names: Vec<&str> = v["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Holder", "Age"]);
        assert_eq!(v["columnDefinitions"][0]["format"], "name");
        assert_eq!(v["columnDefinitions"][1]["type"], "string");
        assert!(v["columnDefinitions"][1]["description"]
            .as_str()
            .unwrap()
            .starts_with("holderIdentity contains"));
        assert_eq!(
            v["rows"][0]["cells"],
            json!(["my-job", "worker-a", "5m30s"])
        );
        assert_eq!(
            v["rows"][0]["object"],
            json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": {
                    "name": "my-job", "namespace": "default", "uid": "u-1",
                    "resourceVersion": "17", "creationTimestamp": "2026-12-01T10:00:00Z",
                    "labels": {"app": "a"}
                }
            })
        );
    }

    #[test]
    fn include_object_and_v1beta1() {
        let l = Lease::from_proto(&sample());
        let t = table(
            vec![l.clone()],
            meta("1"),
            TableVersion::V1beta1,
            IncludeObject::Object,
            now(),
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(v["rows"][0]["object"]["kind"], "Lease");
        assert_eq!(v["rows"][0]["object"]["status"]["fencingToken"], 9);
        let t = table(
            vec![l.clone()],
            meta("1"),
            TableVersion::V1beta1,
            IncludeObject::Metadata,
            now(),
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["rows"][0]["object"]["apiVersion"], "meta.k8s.io/v1beta1");
        let t = table(
            vec![l],
            meta("1"),
            TableVersion::V1,
            IncludeObject::None,
            now(),
        );
        let v = serde_json::to_value(&t).unwrap();
        assert!(v["rows"][0].get("object").is_none());
    }

    #[test]
    fn no_holder_is_an_empty_cell_and_ages_follow_human_duration() {
        let mut p = sample();
        p.spec = None;
        let l = Lease::from_proto(&p);
        let later = Timestamp::parse_rfc3339("2026-12-04T13:00:00Z").unwrap();
        let t = table(
            vec![l],
            meta("1"),
            TableVersion::V1,
            IncludeObject::None,
            later,
        );
        assert_eq!(t.rows[0].cells, ["my-job", "", "3d3h"]);
        let mut p = sample();
        if let Some(m) = p.metadata.as_mut() {
            m.creation_timestamp.clear();
        }
        let t = table(
            vec![Lease::from_proto(&p)],
            meta("1"),
            TableVersion::V1,
            IncludeObject::None,
            later,
        );
        assert_eq!(t.rows[0].cells[2], "<unknown>");
    }

    #[test]
    fn include_object_values() {
        assert_eq!(IncludeObject::parse(None).unwrap(), IncludeObject::Metadata);
        assert_eq!(
            IncludeObject::parse(Some("")).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::parse(Some("Object")).unwrap(),
            IncludeObject::Object
        );
        assert_eq!(
            IncludeObject::parse(Some("None")).unwrap(),
            IncludeObject::None
        );
        let e = IncludeObject::parse(Some("object")).unwrap_err();
        assert_eq!(e.status.code, 400);
        assert!(e.status.message.contains(INCLUDE_OBJECT));
    }
}
