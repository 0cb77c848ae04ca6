//! Discovery: what kubectl and client libraries ask before anything else.
//!
//! - `GET /version`: `major: "1"`, `minor: "32"`. The `kubectl` that gcloud
//!   installs is a dispatcher that runs `kubectl.1.<minor>` for the
//!   server's minor version (design brief §0.1), and 1.32 is the version
//!   whose requests were recorded and that the tests run. `gitVersion`
//!   says what actually answers: `v1.32.0+leasehold.<crate version>`.
//! - `/api` and below: 404 (there is no core group). client-go treats a
//!   404 there as "no legacy groups" and carries on; an empty APIVersions
//!   would make it fetch every group again. One exception:
//!   `GET /api/v1/namespaces/{name}` answers a `Namespace` for every valid
//!   name. Leasehold's namespaces are implicit (any DNS label holds
//!   leases), and kubectl asks for the namespace after a NotFound in any
//!   namespace but `default`: a 404 there made it print "the server could
//!   not find the requested resource" instead of the lease's NotFound.
//!   Discovery still finds no core group (`/api` is 404).
//! - `GET /apis`: the legacy `APIGroupList` with one group,
//!   `coordination.k8s.io`. Aggregated discovery (`as=APIGroupDiscoveryList`)
//!   is not offered: kubectl's Accept ends with plain JSON, and reads the
//!   answer by its Content-Type.
//! - `GET /apis/coordination.k8s.io`: that group (`APIGroup`).
//! - `GET /apis/coordination.k8s.io/v1`: the `APIResourceList` with
//!   `leases`, namespaced, kind `Lease`, and only the verbs this server
//!   implements ([`VERBS`]), so a client never learns of a verb that would
//!   fail.

use super::negotiate::negotiate;
use super::response::json;
use super::status::{KubeError, StatusDetails};
use super::{GROUP, GROUP_VERSION, KIND, RESOURCE, VERSION};
use crate::lease::validate::validate_dns_label;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

/// The verbs served on `leases` (grows with each verb's handler).
pub const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The Kubernetes minor version `/version` reports.
pub const KUBE_MINOR: &str = "32";

/// apimachinery's `version.Info`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `1`.
    pub major: &'static str,
    /// [`KUBE_MINOR`].
    pub minor: &'static str,
    /// `v1.32.0+leasehold.<crate version>`.
    pub git_version: String,
    /// Not known to the build.
    pub git_commit: &'static str,
    /// Not known to the build.
    pub git_tree_state: &'static str,
    /// Not known to the build.
    pub build_date: &'static str,
    /// Not Go.
    pub go_version: &'static str,
    /// `rustc`.
    pub compiler: &'static str,
    /// `linux/amd64` and the like, in Go's names.
    pub platform: String,
}

/// This server's version.
pub fn version_info() -> VersionInfo {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    VersionInfo {
        major: "1",
        minor: KUBE_MINOR,
        git_version: format!("v1.{KUBE_MINOR}.0+leasehold.{}", env!("CARGO_PKG_VERSION")),
        git_commit: "",
        git_tree_state: "",
        build_date: "",
        go_version: "",
        compiler: "rustc",
        platform: format!("{}/{arch}", std::env::consts::OS),
    }
}

/// `GroupVersionForDiscovery`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersion {
    /// `coordination.k8s.io/v1`.
    pub group_version: &'static str,
    /// `v1`.
    pub version: &'static str,
}

/// `APIGroup`, with `kind`/`apiVersion` when it stands alone.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroup {
    /// `APIGroup` alone, absent inside a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// `v1` alone, absent inside a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'static str>,
    /// `coordination.k8s.io`.
    pub name: &'static str,
    /// The one version.
    pub versions: Vec<GroupVersion>,
    /// The same version.
    pub preferred_version: GroupVersion,
}

fn group(standalone: bool) -> ApiGroup {
    let v = || GroupVersion {
        group_version: GROUP_VERSION,
        version: VERSION,
    };
    ApiGroup {
        kind: standalone.then_some("APIGroup"),
        api_version: standalone.then_some("v1"),
        name: GROUP,
        versions: vec![v()],
        preferred_version: v(),
    }
}

/// `APIGroupList`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroupList {
    /// `APIGroupList`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// The one group.
    pub groups: Vec<ApiGroup>,
}

/// `APIResource`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    /// `leases`.
    pub name: &'static str,
    /// `lease`.
    pub singular_name: &'static str,
    /// `true`.
    pub namespaced: bool,
    /// `Lease`.
    pub kind: &'static str,
    /// [`VERBS`].
    pub verbs: &'static [&'static str],
}

/// `APIResourceList`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceList {
    /// `APIResourceList`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// `coordination.k8s.io/v1`.
    pub group_version: &'static str,
    /// `leases`.
    pub resources: Vec<ApiResource>,
}

/// `GET /version`.
pub async fn version(headers: HeaderMap) -> Result<Response, KubeError> {
    negotiate(&headers, false)?;
    json(&version_info(), false)
}

/// `GET /apis`.
pub async fn apis(headers: HeaderMap) -> Result<Response, KubeError> {
    negotiate(&headers, false)?;
    let list = ApiGroupList {
        kind: "APIGroupList",
        api_version: "v1",
        groups: vec![group(false)],
    };
    json(&list, false)
}

/// `GET /apis/coordination.k8s.io`.
pub async fn api_group(headers: HeaderMap) -> Result<Response, KubeError> {
    negotiate(&headers, false)?;
    json(&group(true), false)
}

/// `GET /apis/coordination.k8s.io/v1`.
pub async fn resources(headers: HeaderMap) -> Result<Response, KubeError> {
    negotiate(&headers, false)?;
    json(&resource_list(), false)
}

/// The resource list of `coordination.k8s.io/v1`.
pub fn resource_list() -> ApiResourceList {
    ApiResourceList {
        kind: "APIResourceList",
        api_version: "v1",
        group_version: GROUP_VERSION,
        resources: vec![ApiResource {
            name: RESOURCE,
            singular_name: "lease",
            namespaced: true,
            kind: KIND,
            verbs: VERBS,
        }],
    }
}

/// `/api` and everything under it: there is no core group.
pub async fn no_core_group() -> KubeError {
    KubeError::unknown_path()
}

/// A core `v1` Namespace, as much of it as kubectl reads.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// `Namespace`.
    pub kind: &'static str,
    /// `v1`.
    pub api_version: &'static str,
    /// Its name.
    pub metadata: NamespaceMeta,
    /// Always active.
    pub status: NamespaceStatus,
}

/// A namespace's metadata.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NamespaceMeta {
    /// The namespace.
    pub name: String,
}

/// A namespace's status.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NamespaceStatus {
    /// `Active`.
    pub phase: &'static str,
}

/// `GET /api/v1/namespaces/{name}`: every valid namespace exists.
pub async fn namespace(
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, KubeError> {
    let Ok(Path(name)) = p else {
        return Err(KubeError::unknown_path());
    };
    if validate_dns_label("metadata.name", &name).is_err() {
        return Err(KubeError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "namespaces {:?} not found",
                name.chars().take(64).collect::<String>()
            ),
        )
        .with_details(StatusDetails {
            name: Some(name.chars().take(64).collect()),
            kind: Some("namespaces".into()),
            ..Default::default()
        }));
    }
    negotiate(&headers, false)?;
    json(
        &Namespace {
            kind: "Namespace",
            api_version: "v1",
            metadata: NamespaceMeta { name },
            status: NamespaceStatus { phase: "Active" },
        },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_drives_the_dispatcher_to_1_32() {
        let v = serde_json::to_value(version_info()).unwrap();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        assert_eq!(
            v["gitVersion"],
            format!("v1.32.0+leasehold.{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(v["platform"].as_str().unwrap().contains('/'));
    }

    #[test]
    fn groups_and_resources() {
        let list = ApiGroupList {
            kind: "APIGroupList",
            api_version: "v1",
            groups: vec![group(false)],
        };
        assert_eq!(
            serde_json::to_value(list).unwrap(),
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "coordination.k8s.io",
                "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}
            }]})
        );
        let g = serde_json::to_value(group(true)).unwrap();
        assert_eq!(
            (g["kind"].as_str(), g["apiVersion"].as_str()),
            (Some("APIGroup"), Some("v1"))
        );
        assert_eq!(
            serde_json::to_value(resource_list()).unwrap(),
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": "coordination.k8s.io/v1", "resources": [{
                "name": "leases", "singularName": "lease", "namespaced": true,
                "kind": "Lease",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
            }]})
        );
    }
}
