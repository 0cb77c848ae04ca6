//! OpenAPI v3: the index at `/openapi/v3` and the one document it lists,
//! `coordination.k8s.io/v1` (`openapi_v3.json`, embedded as it is).
//!
//! kubectl 1.32 reads both before a write such as `apply` (design brief
//! §0.2, §2). What it depends on, pinned by the tests below:
//! - the index maps `apis/coordination.k8s.io/v1` (no leading slash) to a
//!   `serverRelativeURL` under `/openapi/v3` carrying `?hash=`;
//! - the document has a PATCH operation on
//!   `/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`
//!   whose `x-kubernetes-group-version-kind` is the Lease GVK as an
//!   *object*, with an inline `fieldValidation` query parameter: then
//!   kubectl sends `fieldValidation=Strict` and leaves validation to the
//!   server. Without it, kubectl turns to `/openapi/v2` (404 here) and
//!   fails. The patch content types include strategic merge, which
//!   kubectl's apply checks for;
//! - `kubectl explain lease[.spec|.status]` finds the Lease schema by its
//!   `x-kubernetes-group-version-kind` *array* and follows `allOf` refs.
//!
//! The document describes the whole Lease API, writes included, and
//! Leasehold's `status` (`io.leasehold.v1.LeaseStatus`, read-only); it is
//! served whichever verbs [`super::discovery::VERBS`] lists so far.
//!
//! Caching follows kube-openapi's `pkg/handler3` and the apiserver's
//! `WithCacheControl` filter:
//! - the hash is the uppercase hex SHA-512 of the document, computed once;
//!   every answer carries `ETag: "<hash>"` (the index: the SHA-512 of the
//!   index), and an `If-None-Match` naming it (or `*`) gets 304 without a
//!   body, as Go's `http.ServeContent` answers;
//! - the document asked for with `?hash=` equal to its hash:
//!   `Cache-Control: public, immutable` and `Expires` a year ahead, so
//!   kubectl's HTTP disk cache (which judges freshness by `Expires`) skips
//!   the request next time; `Vary: Accept` on every document answer;
//! - without `hash`, and on the index: `Cache-Control: no-cache, private`
//!   (the apiserver's default for every answer);
//! - a `hash` that is not the current one: upstream redirects (301) to the
//!   current URL; here the current document is answered, `no-cache,
//!   private`. A client only sends a stale hash after the server changed,
//!   and with nodes of two versions behind one address, redirects could
//!   bounce between them (Go's client gives up after 10).
//!
//! The document is JSON only: an `Accept` without JSON (kube-openapi's
//! protobuf form) is a 406. Query parameters other than `hash` and
//! `timeout` are ignored, as on every endpoint ([`Query`]); a bad
//! `timeout` is a 400. Any other path under `/openapi` (`/openapi/v2`,
//! another group) is not routed: [`super::fallback`] answers it with the
//! 404 Status (UNIMPLEMENTED to a gRPC client).
//!
//! NOTICE: the schema and parameter descriptions in `openapi_v3.json`
//! follow, shortened and adapted, the Kubernetes API documentation
//! (kubernetes/api and kubernetes/apimachinery v0.32.4), Copyright The
//! Kubernetes Authors, licensed under the Apache License, Version 2.0.

use super::negotiate::negotiate;
use super::query::Query;
use super::status::KubeError;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha512};
use std::sync::LazyLock;

/// The index's path.
pub const INDEX_PATH: &str = "/openapi/v3";
/// The document's key in the index (`apis/<group>/<version>`, as
/// client-go's `gvToAPIPath` computes it).
pub const INDEX_KEY: &str = "apis/coordination.k8s.io/v1";
/// The document's path: [`INDEX_PATH`]`/`[`INDEX_KEY`].
pub const DOCUMENT_PATH: &str = "/openapi/v3/apis/coordination.k8s.io/v1";
/// The document.
pub const DOCUMENT: &str = include_str!("openapi_v3.json");

/// Parameters the index knows.
const INDEX_PARAMS: &[&str] = &["timeout"];
/// Parameters the document knows.
const DOCUMENT_PARAMS: &[&str] = &["hash", "timeout"];

/// Uppercase hex SHA-512, kube-openapi's `computeETag`.
fn sha512_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digest = Sha512::digest(bytes);
    let mut s = String::with_capacity(2 * digest.len());
    for b in digest {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0x0f)] as char);
    }
    s
}

static DOCUMENT_HASH: LazyLock<String> = LazyLock::new(|| sha512_hex(DOCUMENT.as_bytes()));

/// The index's body and its hash.
static INDEX: LazyLock<(Vec<u8>, String)> = LazyLock::new(|| {
    let index = serde_json::json!({
        "paths": {INDEX_KEY: {"serverRelativeURL": document_url()}}
    });
    let body = serde_json::to_vec(&index).expect("a JSON value serializes");
    let hash = sha512_hex(&body);
    (body, hash)
});

/// The document's hash: uppercase hex SHA-512 of [`DOCUMENT`].
pub fn document_hash() -> &'static str {
    &DOCUMENT_HASH
}

/// The URL the index gives for the document.
pub fn document_url() -> String {
    format!("{DOCUMENT_PATH}?hash={}", document_hash())
}

/// How an answer may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Named by its hash: never changes.
    Immutable,
    /// Revalidate every time (with the `ETag`).
    Revalidate,
}

/// Whether `If-None-Match` names the quoted `etag` or is `*` (Go's
/// `checkIfNoneMatch`: weak comparison, so `W/"..."` matches too).
fn matches_if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `Expires` a year from now, in the HTTP date format.
fn a_year_from_now() -> String {
    let now = chrono::Utc::now();
    now.checked_add_months(chrono::Months::new(12))
        .unwrap_or(now)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// `body` as JSON with its `ETag` and caching headers, or 304 when the
/// client holds it already.
fn answer(headers: &HeaderMap, body: &'static [u8], hash: &str, caching: Caching) -> Response {
    let etag = format!("\"{hash}\"");
    let mut resp = if matches_if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut resp = (StatusCode::OK, Body::from(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    };
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a hex digest in quotes is a header value"),
    );
    match caching {
        Caching::Immutable => {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            if let Ok(v) = HeaderValue::from_str(&a_year_from_now()) {
                h.insert(header::EXPIRES, v);
            }
        }
        Caching::Revalidate => {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
        }
    }
    resp
}

/// `GET /openapi/v3`: the index.
pub async fn index(headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Response, KubeError> {
    index_answer(&headers, raw.as_deref())
}

fn index_answer(headers: &HeaderMap, raw: Option<&str>) -> Result<Response, KubeError> {
    let q = Query::parse(raw, INDEX_PARAMS)?;
    q.duration("timeout")?;
    let (body, hash) = LazyLock::force(&INDEX);
    Ok(answer(headers, body, hash, Caching::Revalidate))
}

/// `GET /openapi/v3/apis/coordination.k8s.io/v1`: the document.
pub async fn document(headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Response, KubeError> {
    document_answer(&headers, raw.as_deref())
}

fn document_answer(headers: &HeaderMap, raw: Option<&str>) -> Result<Response, KubeError> {
    let q = Query::parse(raw, DOCUMENT_PARAMS)?;
    q.duration("timeout")?;
    negotiate(headers, false)?;
    let hash = document_hash();
    let caching = if q.get("hash") == Some(hash) {
        Caching::Immutable
    } else {
        Caching::Revalidate
    };
    let mut resp = answer(headers, DOCUMENT.as_bytes(), hash, caching);
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::super::GROUP_VERSION;
    use super::*;
    use serde_json::{json, Value};
    use std::collections::BTreeSet;

    const ITEM: &str = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}";
    const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases";
    const ALL: &str = "/apis/coordination.k8s.io/v1/leases";
    const SCHEMAS: &str = "#/components/schemas/";

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi_v3.json is valid JSON")
    }

    fn schema(name: &str) -> Value {
        doc()["components"]["schemas"][name].clone()
    }

    fn lease_gvk() -> Value {
        json!({"group": "coordination.k8s.io", "kind": "Lease", "version": "v1"})
    }

    fn param_names(op: &Value) -> BTreeSet<String> {
        op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                assert_eq!(p["in"], "query", "{p}");
                p["name"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_document_is_compact_openapi_3_json() {
        let d = doc();
        assert_eq!(d["openapi"], "3.0.0");
        assert!(d["info"]["description"]
            .as_str()
            .unwrap()
            .contains("Apache License 2.0"));
        assert!(
            (15_000..40_000).contains(&DOCUMENT.len()),
            "{} bytes",
            DOCUMENT.len()
        );
        assert_eq!(DOCUMENT_PATH, format!("{INDEX_PATH}/{INDEX_KEY}"));
        assert_eq!(INDEX_KEY, format!("apis/{GROUP_VERSION}"));
    }

    #[test]
    fn the_patch_operation_is_what_kubectl_apply_looks_for() {
        let patch = &doc()["paths"][ITEM]["patch"];
        // An object on operations (kubectl unmarshals a map[string]string).
        assert_eq!(patch["x-kubernetes-group-version-kind"], lease_gvk());
        assert_eq!(patch["x-kubernetes-action"], "patch");
        // Inline (kubectl does not follow #/components/parameters refs).
        let fv = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "fieldValidation")
            .expect("fieldValidation");
        assert_eq!(fv["in"], "query");
        assert_eq!(fv["schema"], json!({"type": "string", "uniqueItems": true}));
        assert_eq!(
            param_names(patch),
            set(&["dryRun", "fieldManager", "fieldValidation", "force"])
        );
        let content = patch["requestBody"]["content"].as_object().unwrap();
        let types: BTreeSet<_> = content.keys().map(String::as_str).collect();
        assert_eq!(
            types,
            BTreeSet::from([
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ])
        );
        for v in content.values() {
            assert_eq!(
                v["schema"]["$ref"],
                format!("{SCHEMAS}io.k8s.apimachinery.pkg.apis.meta.v1.Patch")
            );
        }
        assert_eq!(patch["requestBody"]["required"], true);
        for code in ["200", "201"] {
            assert_eq!(
                patch["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                format!("{SCHEMAS}io.k8s.api.coordination.v1.Lease")
            );
        }
    }

    #[test]
    fn every_operation_has_its_action_gvk_parameters_and_responses() {
        let d = doc();
        let list = set(&[
            "allowWatchBookmarks",
            "continue",
            "fieldSelector",
            "labelSelector",
            "limit",
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
            "timeoutSeconds",
            "watch",
        ]);
        let write = set(&["dryRun", "fieldManager", "fieldValidation"]);
        let lease = format!("{SCHEMAS}io.k8s.api.coordination.v1.Lease");
        let lease_list = format!("{SCHEMAS}io.k8s.api.coordination.v1.LeaseList");
        let status = format!("{SCHEMAS}io.k8s.apimachinery.pkg.apis.meta.v1.Status");
        let expected: &[(&str, &str, &str, BTreeSet<String>, &str)] = &[
            (ALL, "get", "list", list.clone(), &lease_list),
            (COLLECTION, "get", "list", list, &lease_list),
            (COLLECTION, "post", "post", write.clone(), &lease),
            (ITEM, "get", "get", set(&["resourceVersion"]), &lease),
            (ITEM, "put", "put", write, &lease),
            (
                ITEM,
                "patch",
                "patch",
                set(&["dryRun", "fieldManager", "fieldValidation", "force"]),
                &lease,
            ),
            (
                ITEM,
                "delete",
                "delete",
                set(&["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
                &status,
            ),
        ];
        let mut seen = BTreeSet::new();
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                seen.insert((path.as_str(), method.as_str()));
                let (_, _, action, params, response) = expected
                    .iter()
                    .find(|e| e.0 == path && e.1 == method)
                    .unwrap_or_else(|| panic!("unexpected {method} {path}"));
                assert_eq!(op["x-kubernetes-action"], *action, "{method} {path}");
                assert_eq!(
                    op["x-kubernetes-group-version-kind"],
                    lease_gvk(),
                    "{method} {path}"
                );
                assert_eq!(&param_names(op), params, "{method} {path}");
                assert_eq!(
                    op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
                    *response,
                    "{method} {path}"
                );
                assert!(op["operationId"].is_string());
            }
        }
        let want: BTreeSet<_> = expected.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(seen, want);
        assert_eq!(
            d["paths"][ITEM]["delete"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            format!("{SCHEMAS}io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        );
    }

    #[test]
    fn kinds_carry_gvk_arrays() {
        let gvks = |name: &str| schema(name)["x-kubernetes-group-version-kind"].clone();
        assert_eq!(
            gvks("io.k8s.api.coordination.v1.Lease"),
            json!([lease_gvk()])
        );
        assert_eq!(
            gvks("io.k8s.api.coordination.v1.LeaseList"),
            json!([{"group": "coordination.k8s.io", "kind": "LeaseList", "version": "v1"}])
        );
        assert_eq!(
            gvks("io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
            json!([{"group": "", "kind": "Status", "version": "v1"}])
        );
        let delete = gvks("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions");
        let delete = delete.as_array().expect("an array");
        for (group, version) in [("", "v1"), ("coordination.k8s.io", "v1")] {
            let gvk = json!({"group": group, "kind": "DeleteOptions", "version": version});
            assert!(delete.contains(&gvk), "{gvk}");
        }
    }

    /// Every `$ref` in `v`, with where it is.
    fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push((at.to_string(), x.as_str().unwrap().to_string()));
                    } else {
                        refs(x, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    refs(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_and_embedded_objects_use_all_of() {
        let d = doc();
        let mut found = Vec::new();
        refs(&d, "", &mut found);
        assert!(found.len() > 30);
        let schemas = d["components"]["schemas"].as_object().unwrap();
        for (at, r) in &found {
            let name = r
                .strip_prefix(SCHEMAS)
                .unwrap_or_else(|| panic!("{at}: {r} is not a schema ref"));
            assert!(schemas.contains_key(name), "{at}: {r} does not resolve");
        }
        // Properties refer through allOf, never with a bare $ref beside
        // other keys (upstream's style since 1.27).
        for (name, s) in schemas {
            for (prop, p) in s["properties"].as_object().into_iter().flatten() {
                assert!(p.get("$ref").is_none(), "{name}.{prop}");
            }
        }
        assert_eq!(
            schema("io.k8s.api.coordination.v1.Lease")["properties"]["spec"],
            json!({
                "allOf": [{"$ref": format!("{SCHEMAS}io.k8s.api.coordination.v1.LeaseSpec")}],
                "default": {},
                "description": "spec contains the specification of the Lease."
            })
        );
    }

    #[test]
    fn explain_finds_spec_status_and_all_of_object_meta() {
        let props = |name: &str| -> BTreeSet<String> {
            schema(name)["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}"))
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(
            props("io.k8s.api.coordination.v1.Lease"),
            set(&["apiVersion", "kind", "metadata", "spec", "status"])
        );
        assert_eq!(
            schema("io.k8s.api.coordination.v1.Lease")["properties"]["status"]["allOf"][0]["$ref"],
            format!("{SCHEMAS}io.leasehold.v1.LeaseStatus")
        );
        assert_eq!(
            props("io.k8s.api.coordination.v1.LeaseSpec"),
            set(&[
                "acquireTime",
                "holderIdentity",
                "leaseDurationSeconds",
                "leaseTransitions",
                "preferredHolder",
                "renewTime",
                "strategy",
            ])
        );
        let spec = schema("io.k8s.api.coordination.v1.LeaseSpec")["properties"].clone();
        assert_eq!(spec["leaseDurationSeconds"]["format"], "int32");
        assert_eq!(spec["leaseTransitions"]["format"], "int32");
        let status = schema("io.leasehold.v1.LeaseStatus");
        assert_eq!(
            props("io.leasehold.v1.LeaseStatus"),
            set(&["expireTime", "expired", "fencingToken"])
        );
        assert_eq!(status["properties"]["fencingToken"]["format"], "int64");
        assert_eq!(status["properties"]["expired"]["type"], "boolean");
        assert!(status["description"]
            .as_str()
            .unwrap()
            .contains("read-only"));
        assert_eq!(
            props("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            set(&[
                "annotations",
                "creationTimestamp",
                "deletionGracePeriodSeconds",
                "deletionTimestamp",
                "finalizers",
                "generateName",
                "generation",
                "labels",
                "managedFields",
                "name",
                "namespace",
                "ownerReferences",
                "resourceVersion",
                "selfLink",
                "uid",
            ])
        );
        for name in [
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry",
            "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
            "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
            "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails",
            "io.k8s.apimachinery.pkg.apis.meta.v1.StatusCause",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Preconditions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            "io.k8s.apimachinery.pkg.runtime.RawExtension",
        ] {
            assert_eq!(schema(name)["type"], "object", "{name}");
        }
        for name in ["Time", "MicroTime"] {
            let t = schema(&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{name}"));
            assert_eq!(
                (t["type"].as_str(), t["format"].as_str()),
                (Some("string"), Some("date-time"))
            );
        }
    }

    #[test]
    fn the_hash_is_the_uppercase_sha512_of_the_document() {
        let h = document_hash();
        assert_eq!(h.len(), 128);
        assert!(h
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!(h, sha512_hex(DOCUMENT.as_bytes()));
        // A known vector: SHA-512 of "abc".
        assert!(sha512_hex(b"abc").starts_with("DDAF35A193617ABA"));
    }

    async fn body(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a body")
            .to_vec()
    }

    fn header(resp: &Response, name: header::HeaderName) -> Option<&str> {
        resp.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[tokio::test]
    async fn the_index_points_at_the_document_by_its_hash() {
        let resp = index(HeaderMap::new(), RawQuery(Some("timeout=32s".into())))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(&resp, header::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(
            header(&resp, header::CACHE_CONTROL),
            Some("no-cache, private")
        );
        let etag = header(&resp, header::ETAG).unwrap().to_string();
        let b = body(resp).await;
        assert_eq!(etag, format!("\"{}\"", sha512_hex(&b)));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"paths": {"apis/coordination.k8s.io/v1": {
                "serverRelativeURL": format!(
                    "/openapi/v3/apis/coordination.k8s.io/v1?hash={}",
                    sha512_hex(DOCUMENT.as_bytes())
                )
            }}})
        );
        // Revalidation.
        let resp = index_answer(&with(header::IF_NONE_MATCH, &etag), None).unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&resp, header::ETAG), Some(etag.as_str()));
        assert!(body(resp).await.is_empty());
    }

    #[tokio::test]
    async fn the_document_by_its_hash_is_immutable() {
        let query = format!("hash={}&timeout=32s", document_hash());
        let resp = document(
            with(header::ACCEPT, "application/json"),
            RawQuery(Some(query)),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(&resp, header::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(
            header(&resp, header::CACHE_CONTROL),
            Some("public, immutable")
        );
        let etag = format!("\"{}\"", document_hash());
        assert_eq!(header(&resp, header::ETAG), Some(etag.as_str()));
        assert_eq!(header(&resp, header::VARY), Some("Accept"));
        let expires = header(&resp, header::EXPIRES).unwrap();
        let year = chrono::DateTime::parse_from_rfc2822(expires).expect("an HTTP date");
        assert!(year > chrono::Utc::now() + chrono::Duration::days(360));
        assert_eq!(body(resp).await, DOCUMENT.as_bytes());
    }

    #[tokio::test]
    async fn without_the_current_hash_the_document_must_be_revalidated() {
        for query in [
            None,
            Some("hash="),
            Some("hash=0123ABC"),
            Some("pretty=1&x"),
        ] {
            let resp = document_answer(&HeaderMap::new(), query).unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{query:?}");
            assert_eq!(
                header(&resp, header::CACHE_CONTROL),
                Some("no-cache, private"),
                "{query:?}"
            );
            assert!(header(&resp, header::EXPIRES).is_none());
            assert!(header(&resp, header::ETAG).is_some());
            assert_eq!(body(resp).await, DOCUMENT.as_bytes());
        }
    }

    #[tokio::test]
    async fn if_none_match_gets_304_without_a_body() {
        let etag = format!("\"{}\"", document_hash());
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".to_string(),
        ] {
            let query = format!("hash={}", document_hash());
            let resp = document_answer(&with(header::IF_NONE_MATCH, &inm), Some(&query)).unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{inm}");
            assert_eq!(header(&resp, header::ETAG), Some(etag.as_str()));
            assert_eq!(
                header(&resp, header::CACHE_CONTROL),
                Some("public, immutable")
            );
            assert!(header(&resp, header::CONTENT_TYPE).is_none());
            assert!(body(resp).await.is_empty());
        }
        let resp = document_answer(&with(header::IF_NONE_MATCH, "\"stale\""), None).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn bad_parameters_and_accept_are_refused() {
        let field = |e: KubeError| {
            let v = serde_json::to_value(&e.status).unwrap();
            (
                e.http,
                v["details"]["causes"][0]["field"]
                    .as_str()
                    .map(str::to_string),
            )
        };
        let e = document_answer(&HeaderMap::new(), Some("timeout=soon")).unwrap_err();
        assert_eq!(field(e), (StatusCode::BAD_REQUEST, Some("timeout".into())));
        let e = document_answer(&HeaderMap::new(), Some("hash=a&hash=b")).unwrap_err();
        assert_eq!(field(e), (StatusCode::BAD_REQUEST, Some("hash".into())));
        let e = index_answer(&HeaderMap::new(), Some("timeout=-1s")).unwrap_err();
        assert_eq!(field(e), (StatusCode::BAD_REQUEST, Some("timeout".into())));
        // kube-openapi's protobuf form is not served.
        let pb = with(
            header::ACCEPT,
            "application/com.github.proto-openapi.spec.v3.v1.0+protobuf",
        );
        let e = document_answer(&pb, None).unwrap_err();
        assert_eq!(e.http, StatusCode::NOT_ACCEPTABLE);
    }
}
