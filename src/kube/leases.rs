//! The lease read endpoints: GET of one lease, LIST of a namespace or of
//! every namespace (and, with `watch=true`, WATCH: [`super::watch`]).
//!
//! Handlers are thin: they check the query, call the gRPC `Leases`
//! service in process (through its tonic trait, exactly as a remote call
//! would arrive), and turn the answer into the asked representation. So a
//! follower forwards to the leader, reads are linearizable, and errors are
//! mapped, all as for gRPC clients; nothing here touches the node.
//!
//! `resourceVersion` on a read maps onto Leasehold's revision:
//!
//! | `resourceVersion` (`resourceVersionMatch`) | read |
//! |--------------------------------------------|------|
//! | absent or `""`                             | linearizable (ReadIndex on the leader) |
//! | `"0"` (also with `NotOlderThan`)           | this node's state, possibly stale |
//! | `"N"` (or `NotOlderThan`)                  | linearizable; a revision below N means N was never committed: 504 `Too large resource version`, `Retry-After: 1` |
//! | `"N"` with `Exact`                         | served only when the cluster revision is N; older: 410 Expired; newer: 504 as above |
//!
//! The apiserver's `ListOptions` rules are kept, with its 422 Invalid
//! answers naming the parameter: `resourceVersionMatch` needs a
//! `resourceVersion`, not with `continue`, is `Exact` or `NotOlderThan`,
//! and `Exact` not with `"0"`; `sendInitialEvents` is forbidden for a
//! list. `resourceVersion="N"` with `continue` is a 400, as upstream.
//! `watch=true` hands the request to [`super::watch`].
//!
//! Paging: `limit` asks for at most that many leases per page (capped at
//! [`MAX_PAGE`]); a page may hold fewer, even none, and still carry
//! `continue` (a selector that matches few leases), which Kubernetes
//! clients follow. Without `limit`, pages are gathered up to [`MAX_PAGE`]
//! leases, [`UNLIMITED_LIST_BYTES`] of them or [`UNLIMITED_LIST_PAGES`]
//! pages, then the answer carries `continue`: a Kubernetes server would
//! return everything, which is unbounded work. The continue token records
//! the revision of the listing's first page, and every page reports that
//! revision as its `resourceVersion`: pages are read at their own
//! (increasing) revisions, so a client that watches from the listing's
//! `resourceVersion` may see a change again that a later page already
//! showed, never miss one.

use super::fields::{self, FieldSelector};
use super::negotiate::{negotiate, Representation};
use super::query::Query;
use super::response::json;
use super::status::{from_grpc, KubeError};
use super::table::{table, IncludeObject, INCLUDE_OBJECT};
use super::types::{Lease, LeaseList, ListMeta};
use super::{Authed, Kube};
use crate::api::convert::decode_continue;
use crate::api::limits::MAX_PAGE;
use crate::lease::selector::MAX_SELECTOR_LEN;
use crate::lease::Timestamp;
use crate::proto::v1 as pb;
use crate::proto::v1::leases_server::Leases;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Parameters a GET of one lease knows.
const GET_PARAMS: &[&str] = &[
    "pretty",
    "timeout",
    "resourceVersion",
    INCLUDE_OBJECT,
    "watch",
];

/// Parameters a LIST knows.
const LIST_PARAMS: &[&str] = &[
    "pretty",
    "timeout",
    "timeoutSeconds",
    "labelSelector",
    fields::PARAM,
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    INCLUDE_OBJECT,
];

/// A request's deadline when it names none, and the longest it may name
/// (the apiserver's default request timeout).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `continue` token accepted, in bytes (ours are under 600).
pub const MAX_CONTINUE_BYTES: usize = 2 * 1024;

/// Encoded bytes of leases a list without `limit` gathers before it
/// answers with `continue`.
pub const UNLIMITED_LIST_BYTES: usize = 8 * 1024 * 1024;

/// Pages a list without `limit` reads before it answers with `continue`
/// (each examines at most `api::limits::MAX_SCANNED_PER_PAGE` leases).
pub const UNLIMITED_LIST_PAGES: usize = 10;

/// Which state a read must reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadAt {
    /// The latest committed state (linearizable).
    Latest,
    /// Anything this node has (stale allowed).
    Any,
    /// A state at revision N or later.
    NotOlderThan(u64),
    /// The state at exactly revision N.
    Exact(u64),
}

impl ReadAt {
    fn stale(self) -> bool {
        self == ReadAt::Any
    }
}

/// A `resourceVersion` value: Leasehold's revision in decimal.
pub(super) fn parse_revision(v: &str) -> Result<u64, KubeError> {
    v.parse::<u64>().map_err(|_| {
        KubeError::bad_param(
            "resourceVersion",
            format!(
                "{:?} is not a resourceVersion (a decimal revision)",
                v.chars().take(32).collect::<String>()
            ),
        )
    })
}

/// `resourceVersion` of a GET.
fn get_read_at(q: &Query) -> Result<ReadAt, KubeError> {
    match q.get("resourceVersion").unwrap_or("") {
        "" => Ok(ReadAt::Latest),
        "0" => Ok(ReadAt::Any),
        v => parse_revision(v).map(ReadAt::NotOlderThan),
    }
}

/// `resourceVersion` and `resourceVersionMatch` of a LIST, with the
/// apiserver's validation.
fn list_read_at(q: &Query, has_continue: bool) -> Result<ReadAt, KubeError> {
    let rv = q.get("resourceVersion").unwrap_or("");
    let rvm = q.get("resourceVersionMatch").unwrap_or("");
    const RVM: &str = "resourceVersionMatch";
    if rvm.is_empty() {
        return match rv {
            "" => Ok(ReadAt::Latest),
            "0" => Ok(ReadAt::Any),
            _ if has_continue => Err(KubeError::bad_param(
                "resourceVersion",
                "specifying resource version is not allowed when using continue",
            )),
            v => parse_revision(v).map(ReadAt::NotOlderThan),
        };
    }
    if rv.is_empty() {
        return Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if has_continue {
        return Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden when continue is provided",
        ));
    }
    match rvm {
        "NotOlderThan" if rv == "0" => Ok(ReadAt::Any),
        "NotOlderThan" => parse_revision(rv).map(ReadAt::NotOlderThan),
        "Exact" if rv == "0" => Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        )),
        "Exact" => parse_revision(rv).map(ReadAt::Exact),
        other => Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueNotSupported",
            &format!(
                "Unsupported value: {:?}: supported values: \"Exact\", \"NotOlderThan\"",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

/// The request's deadline: `timeout` (and, for lists, `timeoutSeconds`),
/// at most [`MAX_REQUEST_TIMEOUT`]; zero means the default.
pub(super) fn deadline(q: &Query) -> Result<Duration, KubeError> {
    let mut d = MAX_REQUEST_TIMEOUT;
    if let Some(t) = q.duration("timeout")? {
        if !t.is_zero() {
            d = d.min(t);
        }
    }
    if let Some(s) = q.int("timeoutSeconds")? {
        if s < 0 {
            return Err(KubeError::bad_param(
                "timeoutSeconds",
                "must not be negative",
            ));
        }
        if s > 0 {
            d = d.min(Duration::from_secs(s.unsigned_abs()));
        }
    }
    Ok(d)
}

/// Runs `f` within `limit`; a 504 Timeout once it passes.
pub(super) async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(KubeError::timeout(limit)))
}

/// The path's parameters, or a 400 naming the path.
pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, KubeError> {
    p.map(|Path(v)| v)
        .map_err(|e| KubeError::bad_param("path", e.body_text()))
}

/// The continue token of a page: the listing's first revision and the
/// gRPC listing's own token, so every page reports the first revision.
fn encode_continue(revision: u64, inner: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{revision}:{inner}"))
}

fn decode_kube_continue(token: &str) -> Result<(u64, String), KubeError> {
    let bad = || KubeError::bad_param("continue", "not a continue token returned by a list");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rv, inner) = text.split_once(':').ok_or_else(bad)?;
    let rv = rv.parse::<u64>().map_err(|_| bad())?;
    if inner.is_empty() {
        return Err(bad());
    }
    Ok((rv, inner.to_string()))
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// `GET /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}`.
pub async fn get(
    Authed(kube): Authed,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, KubeError> {
    let (namespace, name) = path(p)?;
    let q = Query::parse(raw.as_deref(), GET_PARAMS)?;
    if q.bool("watch")? == Some(true) {
        // The old style of watching one object: by its path.
        let q = Query::parse(raw.as_deref(), LIST_PARAMS)?;
        return super::watch::watch(&kube, Some(namespace), Some(name), &headers, &q).await;
    }
    let repr = negotiate(&headers, true)?;
    let include = IncludeObject::parse(q.get(INCLUDE_OBJECT))?;
    let pretty = q.bool("pretty")?.unwrap_or(false);
    let read_at = get_read_at(&q)?;
    let limit = deadline(&q)?;
    let answer = within(limit, async {
        let req = kube.request(pb::GetRequest {
            namespace,
            name: name.clone(),
            stale: read_at.stale(),
        });
        kube.leases
            .get(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| from_grpc(&s, Some(&name)))
    })
    .await?;
    if let ReadAt::NotOlderThan(n) = read_at {
        if answer.revision < n {
            return Err(KubeError::too_large_resource_version(n, answer.revision));
        }
    }
    let Some(lease) = answer.lease.as_ref() else {
        return Err(KubeError::internal("the Get answer carries no lease"));
    };
    let lease = Lease::from_proto(lease);
    match repr {
        Representation::Json => json(&lease, pretty),
        Representation::Table(v) => {
            let meta = ListMeta {
                resource_version: lease.metadata.resource_version.clone(),
                continue_token: None,
            };
            json(&table(vec![lease], meta, v, include, now()), pretty)
        }
    }
}

/// `GET /apis/coordination.k8s.io/v1/leases` (every namespace).
pub async fn list_all(
    Authed(kube): Authed,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, KubeError> {
    list(&kube, None, &headers, raw.as_deref()).await
}

/// `GET /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases`.
pub async fn list_namespaced(
    Authed(kube): Authed,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, KubeError> {
    let namespace = path(p)?;
    list(&kube, Some(namespace), &headers, raw.as_deref()).await
}

/// A LIST's checked options.
struct ListOptions {
    namespace: String,
    label_selector: String,
    fields: FieldSelector,
    limit: Option<u32>,
    start: Option<(u64, String)>,
    read_at: ReadAt,
}

impl ListOptions {
    fn parse(q: &Query, path_namespace: Option<String>) -> Result<ListOptions, KubeError> {
        let label_selector = q.string("labelSelector", MAX_SELECTOR_LEN)?.to_string();
        let fields = FieldSelector::parse(q.string(fields::PARAM, usize::MAX)?)?;
        let limit = match q.int("limit")? {
            // Kubernetes: zero or negative means no limit.
            Some(n) if n > 0 => Some(u32::try_from(n.min(MAX_PAGE as i64)).unwrap_or(u32::MAX)),
            _ => None,
        };
        let token = q.string("continue", MAX_CONTINUE_BYTES)?;
        let start = if token.is_empty() {
            None
        } else {
            Some(decode_kube_continue(token)?)
        };
        let read_at = list_read_at(q, start.is_some())?;
        if q.bool("sendInitialEvents")?.is_some() {
            return Err(KubeError::invalid_list_options(
                "sendInitialEvents",
                "FieldValueForbidden",
                "Forbidden: sendInitialEvents is forbidden for list",
            ));
        }
        // Checked for its syntax; bookmarks belong to watches.
        q.bool("allowWatchBookmarks")?;
        // A listing of every namespace that a field selector pins to one
        // namespace scans that namespace alone.
        let namespace = match path_namespace {
            Some(ns) => ns,
            None => fields.namespace().unwrap_or("").to_string(),
        };
        if let Some((_, inner)) = &start {
            let bad =
                || KubeError::bad_param("continue", "not a continue token returned by a list");
            let after = decode_continue(inner).map_err(|_| bad())?.ok_or_else(bad)?;
            if !namespace.is_empty() && after.namespace != namespace {
                return Err(KubeError::bad_param(
                    "continue",
                    "it belongs to a listing of another namespace",
                ));
            }
        }
        Ok(ListOptions {
            namespace,
            label_selector,
            fields,
            limit,
            start,
            read_at,
        })
    }
}

async fn list(
    kube: &Arc<Kube>,
    path_namespace: Option<String>,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<Response, KubeError> {
    let q = Query::parse(raw, LIST_PARAMS)?;
    if q.bool("watch")? == Some(true) {
        return super::watch::watch(kube, path_namespace, None, headers, &q).await;
    }
    let repr = negotiate(headers, true)?;
    let include = IncludeObject::parse(q.get(INCLUDE_OBJECT))?;
    let pretty = q.bool("pretty")?.unwrap_or(false);
    let opts = ListOptions::parse(&q, path_namespace)?;
    let limit = deadline(&q)?;
    let list = within(limit, read_list(kube, opts)).await?;
    match repr {
        Representation::Json => json(&list, pretty),
        Representation::Table(v) => {
            json(&table(list.items, list.metadata, v, include, now()), pretty)
        }
    }
}

/// Reads the pages of one answer (see the module documentation).
async fn read_list(kube: &Kube, opts: ListOptions) -> Result<LeaseList, KubeError> {
    let (first_revision, mut token) = match opts.start {
        Some((rv, inner)) => (Some(rv), inner),
        None => (None, String::new()),
    };
    let page_limit = opts.limit.unwrap_or(MAX_PAGE as u32);
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut revision = None;
    for page in 1.. {
        let req = kube.request(pb::ListRequest {
            namespace: opts.namespace.clone(),
            label_selector: opts.label_selector.clone(),
            limit: page_limit,
            continue_token: std::mem::take(&mut token),
            stale: opts.read_at.stale(),
        });
        let answer = kube
            .leases
            .list(req)
            .await
            .map_err(|s| from_grpc(&s, None))?
            .into_inner();
        if let ReadAt::Exact(n) = opts.read_at {
            if answer.revision > n {
                return Err(KubeError::expired(format!(
                    "too old resource version: {n} ({})",
                    answer.revision
                )));
            }
            if answer.revision < n {
                return Err(KubeError::too_large_resource_version(n, answer.revision));
            }
        }
        revision.get_or_insert(answer.revision);
        for l in &answer.items {
            bytes += l.encoded_len();
            let (ns, name) = l
                .metadata
                .as_ref()
                .map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()));
            if opts.fields.matches(ns, name) {
                items.push(Lease::from_proto(l));
            }
        }
        token = answer.continue_token;
        if opts.limit.is_some()
            || token.is_empty()
            || items.len() >= MAX_PAGE
            || bytes >= UNLIMITED_LIST_BYTES
            || page >= UNLIMITED_LIST_PAGES
        {
            break;
        }
    }
    let revision = revision.unwrap_or_default();
    if let ReadAt::NotOlderThan(n) = opts.read_at {
        if revision < n {
            return Err(KubeError::too_large_resource_version(n, revision));
        }
    }
    let listing_revision = first_revision.unwrap_or(revision);
    let next = (!token.is_empty()).then(|| encode_continue(listing_revision, &token));
    Ok(LeaseList::new(items, listing_revision, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s), LIST_PARAMS).unwrap()
    }

    fn code_and_field(e: KubeError) -> (u16, String) {
        let v = serde_json::to_value(&e.status).unwrap();
        (
            e.status.code,
            v["details"]["causes"][0]["field"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    #[test]
    fn resource_versions_of_a_get() {
        let g = |s: &str| get_read_at(&Query::parse(Some(s), GET_PARAMS).unwrap());
        assert_eq!(g("").unwrap(), ReadAt::Latest);
        assert_eq!(g("resourceVersion=").unwrap(), ReadAt::Latest);
        assert_eq!(g("resourceVersion=0").unwrap(), ReadAt::Any);
        assert_eq!(g("resourceVersion=17").unwrap(), ReadAt::NotOlderThan(17));
        assert_eq!(
            code_and_field(g("resourceVersion=abc").unwrap_err()),
            (400, "resourceVersion".into())
        );
    }

    #[test]
    fn resource_versions_of_a_list() {
        let l = |s: &str, cont: bool| list_read_at(&q(s), cont);
        assert_eq!(l("", false).unwrap(), ReadAt::Latest);
        assert_eq!(l("resourceVersion=0", false).unwrap(), ReadAt::Any);
        assert_eq!(l("resourceVersion=0", true).unwrap(), ReadAt::Any);
        assert_eq!(
            l("resourceVersion=5", false).unwrap(),
            ReadAt::NotOlderThan(5)
        );
        assert_eq!(
            l("resourceVersion=5&resourceVersionMatch=NotOlderThan", false).unwrap(),
            ReadAt::NotOlderThan(5)
        );
        assert_eq!(
            l("resourceVersion=0&resourceVersionMatch=NotOlderThan", false).unwrap(),
            ReadAt::Any
        );
        assert_eq!(
            l("resourceVersion=5&resourceVersionMatch=Exact", false).unwrap(),
            ReadAt::Exact(5)
        );
        let refused = [
            ("resourceVersion=5", true, 400, "resourceVersion"),
            ("resourceVersion=x", false, 400, "resourceVersion"),
            (
                "resourceVersionMatch=Exact",
                false,
                422,
                "resourceVersionMatch",
            ),
            (
                "resourceVersion=5&resourceVersionMatch=Exact",
                true,
                422,
                "resourceVersionMatch",
            ),
            (
                "resourceVersion=0&resourceVersionMatch=Exact",
                false,
                422,
                "resourceVersionMatch",
            ),
            (
                "resourceVersion=5&resourceVersionMatch=exact",
                false,
                422,
                "resourceVersionMatch",
            ),
            (
                "resourceVersion=x&resourceVersionMatch=Exact",
                false,
                400,
                "resourceVersion",
            ),
        ];
        for (query, cont, code, field) in refused {
            let e = l(query, cont).expect_err(query);
            assert_eq!(code_and_field(e), (code, field.to_string()), "{query}");
        }
    }

    #[test]
    fn list_options_checks() {
        let parse = |s: &str, ns: Option<&str>| ListOptions::parse(&q(s), ns.map(String::from));
        let o = parse("limit=0", Some("ns")).unwrap();
        assert_eq!(o.limit, None);
        let o = parse("limit=-3", Some("ns")).unwrap();
        assert_eq!(o.limit, None);
        let o = parse("limit=99999999999", Some("ns")).unwrap();
        assert_eq!(o.limit, Some(MAX_PAGE as u32));
        let o = parse("fieldSelector=metadata.namespace%3Dkube-system", None).unwrap();
        assert_eq!(o.namespace, "kube-system");
        let o = parse("fieldSelector=metadata.namespace%3Dkube-system", Some("a")).unwrap();
        assert_eq!(o.namespace, "a");
        for (query, code, field) in [
            ("limit=ten", 400, "limit"),
            ("continue=%21%21", 400, "continue"),
            ("sendInitialEvents=true", 422, "sendInitialEvents"),
            ("sendInitialEvents=maybe", 400, "sendInitialEvents"),
            ("allowWatchBookmarks=2", 400, "allowWatchBookmarks"),
            (
                "fieldSelector=spec.holderIdentity%3Da",
                400,
                "fieldSelector",
            ),
        ] {
            let e = parse(query, Some("ns")).err().expect(query);
            assert_eq!(code_and_field(e), (code, field.to_string()), "{query}");
        }
        let long = format!("labelSelector={}", "a".repeat(MAX_SELECTOR_LEN + 1));
        let e = parse(&long, None).err().expect("long selector");
        assert_eq!(code_and_field(e), (400, "labelSelector".into()));
    }

    #[test]
    fn continue_tokens_carry_the_first_revision_and_their_namespace() {
        let inner = crate::api::convert::encode_continue(&crate::lease::LeaseKey::new("ns", "b"));
        let token = encode_continue(42, &inner);
        assert_eq!(decode_kube_continue(&token).unwrap(), (42, inner.clone()));
        let o = ListOptions::parse(&q(&format!("continue={token}")), Some("ns".into())).unwrap();
        assert_eq!(o.start, Some((42, inner.clone())));
        let e = ListOptions::parse(&q(&format!("continue={token}")), Some("other".into()))
            .err()
            .expect("another namespace");
        assert_eq!(code_and_field(e), (400, "continue".into()));
        // Listing every namespace may continue any namespace's token.
        assert!(ListOptions::parse(&q(&format!("continue={token}")), None).is_ok());
        for bad in [
            "",
            "Zm9v",
            &URL_SAFE_NO_PAD.encode("x:abc"),
            &URL_SAFE_NO_PAD.encode("1:"),
        ] {
            assert!(decode_kube_continue(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deadlines() {
        assert_eq!(deadline(&q("")).unwrap(), MAX_REQUEST_TIMEOUT);
        assert_eq!(
            deadline(&q("timeout=32s")).unwrap(),
            Duration::from_secs(32)
        );
        assert_eq!(deadline(&q("timeout=10m")).unwrap(), MAX_REQUEST_TIMEOUT);
        assert_eq!(deadline(&q("timeout=0")).unwrap(), MAX_REQUEST_TIMEOUT);
        assert_eq!(
            deadline(&q("timeoutSeconds=5&timeout=8s")).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            code_and_field(deadline(&q("timeout=soon")).unwrap_err()).1,
            "timeout"
        );
        assert_eq!(
            code_and_field(deadline(&q("timeoutSeconds=-1")).unwrap_err()).1,
            "timeoutSeconds"
        );
    }
}
