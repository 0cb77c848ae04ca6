//! WATCH over HTTP: `?watch=1` on a lease list (or, as older clients do,
//! on one lease), framed as the apiserver frames it.
//!
//! # Framing
//! `200` with `Content-Type: application/json` and a chunked body whose
//! head goes out at once (clients return from `Watch()` only once they
//! have it); then one `{"type": ..., "object": ...}` per line. Types:
//! `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` and `ERROR`; every object has
//! `apiVersion` and `kind`. Under a Table `Accept` (`kubectl get -w`)
//! each object is a Table of one row.
//!
//! # Where a watch starts
//! | request | events |
//! |---------|--------|
//! | no `resourceVersion` | a synthetic `ADDED` per matching lease (linearizable list), then every change after that list |
//! | `resourceVersion=0` | the same from this node's state (possibly stale) |
//! | `resourceVersion=N` | every change after N; N older than the retained history: one `ERROR` 410 Expired, then the end |
//! | `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan`, `allowWatchBookmarks=true`) | `ADDED` per lease from a list at N or later, then a `BOOKMARK` annotated `k8s.io/initial-events-end: "true"` at the list's revision, then the changes after it |
//! | `sendInitialEvents=false` (with `NotOlderThan`) | as `resourceVersion=N` |
//!
//! The gRPC Watch underneath delivers every change exactly once in
//! revision order from where it starts; initial lists that take several
//! pages are read at increasing revisions, and the changes replayed from
//! the first page's revision may repeat what a later page showed (never
//! miss one), as with paged lists.
//!
//! # Mapping of Leasehold's events
//! - `EXPIRED` (the leader recorded the lapse) is sent as `MODIFIED`, with
//!   `status.expired: true`: it is a change at a new resourceVersion, and
//!   a client that does not know the type would drop it or fail.
//! - `DELETED` carries the lease as it was, with the deletion's revision
//!   as its resourceVersion (as the apiserver does).
//! - `PROGRESS` becomes `BOOKMARK` when the client allows bookmarks: a
//!   Lease shell with only `metadata.resourceVersion`.
//! - A history that no longer holds the start (`COMPACTED`) and a watcher
//!   cut off for falling behind (`WATCHER_TOO_SLOW`) end with an `ERROR`
//!   event holding a 410 Expired Status: the client lists again.
//!
//! # How a watch ends
//! After `timeoutSeconds` (or, without it, a random 30–60 minutes, as the
//! apiserver spreads reconnections), when the node shuts down (a watch
//! must not hold up a graceful shutdown), when the client goes away, or
//! after an `ERROR`. Each ends with the terminating chunk.

use super::fields::{Field, FieldSelector};
use super::leases::parse_revision;
use super::negotiate::{negotiate, Representation};
use super::query::Query;
use super::status::{from_grpc, KubeError, Status};
use super::table::{table, IncludeObject, INCLUDE_OBJECT};
use super::types::{Lease, ListMeta};
use super::{Kube, GROUP_VERSION, KIND};
use crate::api::limits::MAX_PAGE;
use crate::api::status::{error_info, reason};
use crate::lease::selector::MAX_SELECTOR_LEN;
use crate::lease::Timestamp;
use crate::proto::v1 as pb;
use crate::proto::v1::leases_server::Leases;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Lines buffered between the watch task and the connection.
const CHANNEL_LINES: usize = 64;

/// How often a watch that allows bookmarks gets one when nothing else
/// happened.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Shortest and longest default watch duration (without `timeoutSeconds`).
const DEFAULT_TIMEOUT_MIN: Duration = Duration::from_secs(30 * 60);
const DEFAULT_TIMEOUT_SPREAD_SECS: u64 = 30 * 60;

/// The annotation of the bookmark that ends the initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Where the events start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Synthetic ADDED events from a list (`stale`: this node's state),
    /// at a revision of at least `at_least`; `end_bookmark`: then the
    /// initial-events-end bookmark.
    List {
        stale: bool,
        at_least: u64,
        end_bookmark: bool,
    },
    /// Changes after this revision.
    After(u64),
}

/// A watch request's checked options.
#[derive(Debug, Clone)]
struct WatchOptions {
    namespace: String,
    name: String,
    label_selector: String,
    fields: FieldSelector,
    start: Start,
    bookmarks: bool,
    timeout: Duration,
    table: Option<super::negotiate::TableVersion>,
    include: IncludeObject,
}

/// The apiserver's watch option rules (`validateWatchOptions`), with its
/// 422 answers naming the parameter.
fn start_of(q: &Query) -> Result<Start, KubeError> {
    let rv = q.get("resourceVersion").unwrap_or("");
    let rvm = q.get("resourceVersionMatch").unwrap_or("");
    let initial = q.bool("sendInitialEvents")?;
    let bookmarks = q.bool("allowWatchBookmarks")?.unwrap_or(false);
    const RVM: &str = "resourceVersionMatch";
    if !rvm.is_empty() && initial.is_none() {
        return Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is \
             provided",
        ));
    }
    if !rvm.is_empty() && rvm != "NotOlderThan" {
        return Err(KubeError::invalid_list_options(
            RVM,
            "FieldValueNotSupported",
            &format!(
                "Unsupported value: {:?}: supported values: \"NotOlderThan\"",
                rvm.chars().take(32).collect::<String>()
            ),
        ));
    }
    if q.get("continue").is_some_and(|c| !c.is_empty()) {
        return Err(KubeError::bad_param(
            "continue",
            "a watch cannot continue a list; watch from the list's resourceVersion",
        ));
    }
    match initial {
        Some(send) => {
            if rvm != "NotOlderThan" {
                return Err(KubeError::invalid_list_options(
                    RVM,
                    "FieldValueForbidden",
                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to \
                     NotOlderThan",
                ));
            }
            if send && !bookmarks {
                return Err(KubeError::invalid_list_options(
                    "allowWatchBookmarks",
                    "FieldValueForbidden",
                    "Forbidden: allowWatchBookmarks must be set to true when sendInitialEvents \
                     is true (the end of the initial events is a bookmark)",
                ));
            }
            match (send, rv) {
                (true, "") => Ok(Start::List {
                    stale: false,
                    at_least: 0,
                    end_bookmark: true,
                }),
                (true, "0") => Ok(Start::List {
                    stale: true,
                    at_least: 0,
                    end_bookmark: true,
                }),
                (true, v) => Ok(Start::List {
                    stale: false,
                    at_least: parse_revision(v)?,
                    end_bookmark: true,
                }),
                (false, "" | "0") => Ok(Start::After(0)),
                (false, v) => Ok(Start::After(parse_revision(v)?)),
            }
        }
        None => match rv {
            "" => Ok(Start::List {
                stale: false,
                at_least: 0,
                end_bookmark: false,
            }),
            "0" => Ok(Start::List {
                stale: true,
                at_least: 0,
                end_bookmark: false,
            }),
            v => Ok(Start::After(parse_revision(v)?)),
        },
    }
}

impl WatchOptions {
    fn parse(
        q: &Query,
        headers: &axum::http::HeaderMap,
        path_namespace: Option<String>,
        path_name: Option<String>,
    ) -> Result<WatchOptions, KubeError> {
        let table = match negotiate(headers, true)? {
            Representation::Json => None,
            Representation::Table(v) => Some(v),
        };
        let include = IncludeObject::parse(q.get(INCLUDE_OBJECT))?;
        let label_selector = q.string("labelSelector", MAX_SELECTOR_LEN)?.to_string();
        let mut fields = FieldSelector::parse(q.string(super::fields::PARAM, usize::MAX)?)?;
        let namespace = match path_namespace {
            Some(ns) => ns,
            None => fields.namespace().unwrap_or("").to_string(),
        };
        // A watch of one lease: by its path, or by a field selector that
        // pins the name within a namespace.
        let pinned = fields
            .requirements
            .iter()
            .find(|r| r.field == Field::Name && r.equals)
            .map(|r| r.value.clone());
        let name = match (path_name, pinned) {
            (Some(n), _) => {
                fields.requirements.push(super::fields::Requirement {
                    field: Field::Name,
                    equals: true,
                    value: n.clone(),
                });
                n
            }
            (None, Some(n)) if !namespace.is_empty() => n,
            _ => String::new(),
        };
        let timeout = match q.int("timeoutSeconds")? {
            Some(s) if s < 0 => {
                return Err(KubeError::bad_param(
                    "timeoutSeconds",
                    "must not be negative",
                ))
            }
            Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()),
            _ => {
                let spread = u64::from(uuid::Uuid::new_v4().as_bytes()[0])
                    * DEFAULT_TIMEOUT_SPREAD_SECS
                    / 255;
                DEFAULT_TIMEOUT_MIN + Duration::from_secs(spread)
            }
        };
        Ok(WatchOptions {
            namespace,
            name,
            label_selector,
            fields,
            start: start_of(q)?,
            bookmarks: q.bool("allowWatchBookmarks")?.unwrap_or(false),
            timeout,
            table,
            include,
        })
    }

    fn selects(&self, l: &pb::Lease) -> bool {
        let (ns, name) = l
            .metadata
            .as_ref()
            .map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()));
        self.fields.matches(ns, name)
    }

    /// The JSON of `lease` in an event, as the request asked for it.
    fn object(&self, lease: &pb::Lease, resource_version: u64) -> Value {
        let mut lease = Lease::from_proto(lease);
        lease.metadata.resource_version = resource_version.to_string();
        let encoded = match self.table {
            None => serde_json::to_value(&lease),
            Some(v) => {
                let meta = ListMeta {
                    resource_version: resource_version.to_string(),
                    continue_token: None,
                };
                serde_json::to_value(table(vec![lease], meta, v, self.include, now()))
            }
        };
        encoded.unwrap_or(Value::Null)
    }
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// One line of the stream.
fn line(kind: &str, object: Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    Bytes::from(out)
}

/// A bookmark at `revision` (a Lease shell, as the apiserver sends it).
fn bookmark(revision: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    line(
        "BOOKMARK",
        json!({"kind": KIND, "apiVersion": GROUP_VERSION, "metadata": metadata, "spec": {}}),
    )
}

/// An ERROR event holding `status`.
fn error_line(status: &Status) -> Bytes {
    line("ERROR", serde_json::to_value(status).unwrap_or(Value::Null))
}

/// `?watch=true` on a list (`name` None) or on one lease.
pub(super) async fn watch(
    kube: &Arc<Kube>,
    namespace: Option<String>,
    name: Option<String>,
    headers: &axum::http::HeaderMap,
    q: &Query,
) -> Result<Response, KubeError> {
    let opts = WatchOptions::parse(q, headers, namespace, name)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_LINES);
    // The first page is read before answering, so that a bad request is a
    // plain error status rather than an ERROR event.
    let first = match opts.start {
        Start::List {
            stale, at_least, ..
        } => {
            let page = list_page(kube, &opts, stale, String::new()).await?;
            if page.revision < at_least {
                return Err(KubeError::too_large_resource_version(
                    at_least,
                    page.revision,
                ));
            }
            Some(page)
        }
        Start::After(_) => None,
    };
    let from = match (&first, opts.start) {
        (Some(p), _) => p.revision + 1,
        (None, Start::After(n)) => n.saturating_add(1),
        (None, _) => 0,
    };
    let events = kube
        .leases
        .watch(kube.request(pb::WatchRequest {
            namespace: opts.namespace.clone(),
            name: opts.name.clone(),
            label_selector: opts.label_selector.clone(),
            start_revision: from,
            progress_notify: opts.bookmarks,
            progress_interval_ms: u32::try_from(BOOKMARK_INTERVAL.as_millis()).unwrap_or(u32::MAX),
        }))
        .await
        .map_err(|s| from_grpc(&s, None))?
        .into_inner();
    let mut stop = kube.stop.clone();
    let task_kube = kube.clone();
    tokio::spawn(async move {
        let run = run(&task_kube, &opts, first, events, &tx);
        tokio::select! {
            _ = run => {}
            _ = tokio::time::sleep(opts.timeout) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
            _ = tx.closed() => {}
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// One page of the initial list.
async fn list_page(
    kube: &Kube,
    opts: &WatchOptions,
    stale: bool,
    continue_token: String,
) -> Result<pb::ListResponse, KubeError> {
    kube.leases
        .list(kube.request(pb::ListRequest {
            namespace: opts.namespace.clone(),
            label_selector: opts.label_selector.clone(),
            limit: MAX_PAGE as u32,
            continue_token,
            stale,
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| from_grpc(&s, None))
}

type Lines = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends the initial events, then the changes, until the stream ends or
/// the client goes away.
async fn run(
    kube: &Kube,
    opts: &WatchOptions,
    first: Option<pb::ListResponse>,
    mut events: <super::super::api::leases::LeasesService as Leases>::WatchStream,
    tx: &Lines,
) {
    if let Some(mut page) = first {
        let listed_at = page.revision;
        loop {
            for l in page.items.iter().filter(|l| opts.selects(l)) {
                let rv = l.metadata.as_ref().map_or(0, |m| m.resource_version);
                if tx
                    .send(Ok(line("ADDED", opts.object(l, rv))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if page.continue_token.is_empty() {
                break;
            }
            let stale = matches!(opts.start, Start::List { stale: true, .. });
            match list_page(kube, opts, stale, std::mem::take(&mut page.continue_token)).await {
                Ok(next) => page = next,
                Err(e) => {
                    let _ = tx.send(Ok(error_line(&e.status))).await;
                    return;
                }
            }
        }
        if matches!(
            opts.start,
            Start::List {
                end_bookmark: true,
                ..
            }
        ) && tx.send(Ok(bookmark(listed_at, true))).await.is_err()
        {
            return;
        }
    }
    while let Some(item) = events.next().await {
        let out = match item {
            Ok(e) => match event_line(opts, &e) {
                Some(l) => l,
                None => continue,
            },
            Err(s) => {
                if let Some(e) = expired(&s) {
                    let _ = tx.send(Ok(error_line(&e.status))).await;
                }
                return;
            }
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

/// The line for one gRPC watch event, if this watch shows it.
fn event_line(opts: &WatchOptions, e: &pb::WatchEvent) -> Option<Bytes> {
    use pb::watch_event::Type;
    let t = Type::try_from(e.r#type).unwrap_or(Type::Unspecified);
    let kind = match t {
        Type::Progress => {
            return opts.bookmarks.then(|| bookmark(e.revision, false));
        }
        Type::Added => "ADDED",
        Type::Modified | Type::Expired => "MODIFIED",
        Type::Deleted => "DELETED",
        Type::Unspecified => return None,
    };
    let lease = e.lease.as_ref()?;
    if !opts.selects(lease) {
        return None;
    }
    Some(line(kind, opts.object(lease, e.revision)))
}

/// The 410 Expired an ended gRPC watch means, if it means one: its start
/// left the retained history, or the watcher fell behind.
fn expired(s: &tonic::Status) -> Option<KubeError> {
    let (why, meta) = error_info(s)?;
    if why == reason::COMPACTED {
        // The gRPC watch was asked to start after the client's
        // resourceVersion: name that one, as the apiserver does.
        let asked = meta
            .get("requestedRevision")
            .and_then(|r| r.parse::<u64>().ok())
            .map_or(0, |r| r.saturating_sub(1));
        let oldest = meta.get("oldestRevision").map_or("?", String::as_str);
        return Some(KubeError::expired(format!(
            "too old resource version: {asked} ({oldest})"
        )));
    }
    if why == reason::WATCHER_TOO_SLOW {
        return Some(KubeError::expired(s.message().to_string()));
    }
    None
}

#[cfg(test)]
mod tests;
