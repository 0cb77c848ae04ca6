//! Watchers: clients of `Leases.Watch` that run through the whole chaos
//! run and record everything they receive, for `check::watch`.
//!
//! Each watcher has a filter (the namespace, optionally one lease name or
//! one `key=value` label selector) and starts on its own node. It asks for
//! progress notifications, so the first message of a stream opened "from
//! now" (start revision 0) says from which revision on it sees every
//! change: its *covered interval* starts there. When a stream ends for any
//! reason (the node was killed, paused, wiped, or an error), the watcher
//! resumes on the next endpoint from the last revision it handled + 1
//! (events and progress notifications both count), so its coverage goes on
//! without a gap. A stream that sends nothing for [`STALL`] (progress comes
//! every [`PROGRESS_INTERVAL_MS`]) is taken as broken: that is how a paused
//! node looks; so is one whose revision does not advance for [`STALE`] (a
//! node cut off from the cluster, or wiped and not yet caught up, still
//! sends progress notifications, for the revision it is stuck at).
//!
//! Two errors break coverage, and both are recorded for the checker:
//! `OUT_OF_RANGE` (reason `COMPACTED`: the resume revision is no longer in
//! the node's history; the watcher starts again from now) and
//! `RESOURCE_EXHAUSTED` (reason `WATCHER_TOO_SLOW`: it resumes from the
//! `resumeRevision` the server gave, a gap if that is beyond its last
//! revision + 1).

use super::history::{Nanos, RunClock};
use leasehold_client::{Client, ConnectOptions};
use leasehold_proto::v1 as pb;
use leasehold_proto::wire::{error_info, reason};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;

/// Progress notification interval the watchers ask for, ms.
pub const PROGRESS_INTERVAL_MS: u32 = 300;
/// A stream silent for this long is abandoned for another endpoint.
pub const STALL: Duration = Duration::from_secs(3);
/// A stream whose revision has not advanced for this long is abandoned for
/// another endpoint: its node may be cut off from the cluster, or a
/// member no more, and still send progress notifications for the revision
/// it is stuck at. (When nothing changes in the cluster this only moves the
/// watcher, without a gap.)
pub const STALE: Duration = Duration::from_secs(5);
/// How long opening a stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);

/// Which leases a watcher follows, within the run's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFilter {
    /// Only this lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only leases with this label (`key`, `value`): a label selector
    /// `key=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<(String, String)>,
}

impl WatchFilter {
    /// Every lease of the namespace.
    pub fn all() -> Self {
        WatchFilter {
            name: None,
            label: None,
        }
    }

    /// The label selector sent to the server.
    pub fn selector(&self) -> String {
        self.label
            .as_ref()
            .map(|(k, v)| format!("{k}={v}"))
            .unwrap_or_default()
    }

    /// Whether a lease named `lease` with `labels` matches.
    pub fn matches(&self, lease: &str, labels: &BTreeMap<String, String>) -> bool {
        self.name.as_deref().is_none_or(|n| n == lease)
            && self
                .label
                .as_ref()
                .is_none_or(|(k, v)| labels.get(k) == Some(v))
    }

    /// In words, e.g. `name=l0` or `selector chaos-kind=kube`.
    pub fn describe(&self) -> String {
        match (&self.name, &self.label) {
            (None, None) => "whole namespace".to_string(),
            (Some(n), None) => format!("name={n}"),
            (None, Some(_)) => format!("selector {}", self.selector()),
            (Some(n), Some(_)) => format!("name={n}, selector {}", self.selector()),
        }
    }
}

/// One event a watcher received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The event's revision.
    pub revision: u64,
    /// ADDED, MODIFIED, DELETED, EXPIRED (or what the server sent).
    pub kind: String,
    /// The lease's name.
    pub lease: String,
    /// The lease's resourceVersion in the event.
    pub rv: u64,
    /// When it arrived (run clock).
    pub at: Nanos,
    /// Index of the stream (segment) it came on.
    pub segment: u32,
}

/// One stream, from opening to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Endpoint it was opened on.
    pub endpoint: String,
    /// The start revision asked for (0: from now).
    pub start_revision: u64,
    /// When it was opened and when it ended (run clock).
    pub opened: Nanos,
    /// When it ended.
    pub closed: Nanos,
    /// Events received on it (progress notifications not counted).
    pub events: u64,
    /// Why it ended.
    pub ended: String,
}

/// An error status a stream ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamError {
    /// When (run clock).
    pub at: Nanos,
    /// Endpoint.
    pub endpoint: String,
    /// gRPC code name.
    pub code: String,
    /// ErrorInfo reason, if any.
    pub reason: String,
    /// ErrorInfo metadata.
    pub metadata: BTreeMap<String, String>,
    /// Message.
    pub message: String,
    /// The watcher's last handled revision then.
    pub last: Option<u64>,
}

/// A revision interval (inclusive) in which the watcher saw every change
/// its filter covers, if the server kept its promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covered {
    /// First revision.
    pub from: u64,
    /// Last revision.
    pub to: u64,
}

/// Everything one watcher recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    /// Watcher number.
    pub watcher: u32,
    /// Its filter.
    pub filter: WatchFilter,
    /// Events, in the order received.
    pub events: Vec<Delivered>,
    /// Progress notifications received.
    pub progress: u64,
    /// Streams, in order.
    pub segments: Vec<Segment>,
    /// Error statuses streams ended with (transport errors included).
    pub errors: Vec<StreamError>,
    /// Covered intervals, in order.
    pub covered: Vec<Covered>,
    /// The last revision handled (every change up to it was delivered).
    pub last: Option<u64>,
}

/// What a run needs to start one watcher.
#[derive(Debug, Clone)]
pub struct WatcherSpec {
    /// Watcher number.
    pub id: u32,
    /// Its filter.
    pub filter: WatchFilter,
    /// Index of the endpoint it starts on.
    pub first_endpoint: usize,
}

/// A running watcher.
pub struct Watcher {
    log: Arc<Mutex<WatchLog>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Starts a watcher of `namespace` on `endpoints`, connecting as
    /// `connect` says.
    pub fn start(
        spec: WatcherSpec,
        endpoints: Vec<String>,
        connect: ConnectOptions,
        namespace: String,
        clock: RunClock,
    ) -> Result<Self, Status> {
        let client = Client::with_options(endpoints, connect)?;
        let log = Arc::new(Mutex::new(WatchLog {
            watcher: spec.id,
            filter: spec.filter.clone(),
            events: Vec::new(),
            progress: 0,
            segments: Vec::new(),
            errors: Vec::new(),
            covered: Vec::new(),
            last: None,
        }));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(spec, client, namespace, clock, log.clone(), stopped));
        Ok(Watcher { log, stop, task })
    }

    /// The last revision handled so far.
    pub fn last(&self) -> Option<u64> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).last
    }

    /// Stops the watcher and returns its log.
    pub async fn finish(self) -> WatchLog {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            tracing::warn!("a watcher did not stop within 10 s");
        }
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The watcher's state between streams.
struct Cursor {
    /// Every change at or below this was handled (in the current interval).
    last: Option<u64>,
    /// Start of the current covered interval.
    from: Option<u64>,
}

impl Cursor {
    /// Closes the current covered interval into `log`.
    fn close(&mut self, log: &mut WatchLog) {
        if let (Some(from), Some(to)) = (self.from, self.last) {
            if to >= from {
                log.covered.push(Covered { from, to });
            }
        }
        self.from = None;
    }

    fn handled(&mut self, revision: u64, first_covered: u64) {
        if self.from.is_none() {
            self.from = Some(first_covered);
        }
        self.last = Some(self.last.map_or(revision, |l| l.max(revision)));
    }
}

fn type_name(t: i32) -> String {
    match pb::watch_event::Type::try_from(t) {
        Ok(pb::watch_event::Type::Added) => "ADDED".into(),
        Ok(pb::watch_event::Type::Modified) => "MODIFIED".into(),
        Ok(pb::watch_event::Type::Deleted) => "DELETED".into(),
        Ok(pb::watch_event::Type::Expired) => "EXPIRED".into(),
        Ok(pb::watch_event::Type::Progress) => "PROGRESS".into(),
        _ => format!("TYPE_{t}"),
    }
}

async fn run(
    spec: WatcherSpec,
    client: Client,
    namespace: String,
    clock: RunClock,
    log: Arc<Mutex<WatchLog>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
    let n = client.endpoints().len().max(1);
    let mut endpoint = spec.first_endpoint % n;
    let mut cursor = Cursor {
        last: None,
        from: None,
    };
    let mut failures = 0u32;
    'streams: loop {
        if *stopped.borrow() {
            break;
        }
        let start_revision = cursor.last.map_or(0, |l| l + 1);
        let req = pb::WatchRequest {
            namespace: namespace.clone(),
            name: spec.filter.name.clone().unwrap_or_default(),
            label_selector: spec.filter.selector(),
            start_revision,
            progress_notify: true,
            progress_interval_ms: PROGRESS_INTERVAL_MS,
        };
        let addr = client
            .endpoints()
            .get(endpoint)
            .cloned()
            .unwrap_or_default();
        let opened = clock.now();
        let open = tokio::select! {
            r = tokio::time::timeout(OPEN_TIMEOUT, client.watch_on(endpoint, req)) => r,
            _ = stopped.changed() => break 'streams,
        };
        let mut stream = match open {
            Ok(Ok(s)) => s,
            Ok(Err(status)) => {
                record_error(&mut lock(), &status, clock.now(), &addr, cursor.last);
                failures += 1;
                endpoint = (endpoint + 1) % n;
                backoff(failures, n).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                endpoint = (endpoint + 1) % n;
                backoff(failures, n).await;
                continue;
            }
        };
        let segment = u32::try_from(lock().segments.len()).unwrap_or(u32::MAX);
        let mut events = 0u64;
        let mut advanced = (cursor.last, tokio::time::Instant::now());
        let ended = loop {
            if cursor.last != advanced.0 {
                advanced = (cursor.last, tokio::time::Instant::now());
            } else if advanced.1.elapsed() >= STALE {
                break format!(
                    "revision stuck at {:?} for {} s",
                    cursor.last,
                    STALE.as_secs()
                );
            }
            let msg = tokio::select! {
                m = tokio::time::timeout(STALL, stream.message()) => m,
                _ = stopped.changed() => {
                    let mut l = lock();
                    l.segments.push(Segment {
                        endpoint: addr.clone(),
                        start_revision,
                        opened,
                        closed: clock.now(),
                        events,
                        ended: "stopped".into(),
                    });
                    break 'streams;
                }
            };
            match msg {
                Err(_) => break format!("nothing received for {} s", STALL.as_secs()),
                Ok(Ok(Some(e))) => {
                    failures = 0;
                    let mut l = lock();
                    if e.r#type == pb::watch_event::Type::Progress as i32 {
                        l.progress += 1;
                        cursor.handled(e.revision, e.revision + 1);
                    } else {
                        events += 1;
                        let meta = e
                            .lease
                            .as_ref()
                            .and_then(|x| x.metadata.clone())
                            .unwrap_or_default();
                        l.events.push(Delivered {
                            revision: e.revision,
                            kind: type_name(e.r#type),
                            lease: meta.name,
                            rv: meta.resource_version,
                            at: clock.now(),
                            segment,
                        });
                        cursor.handled(e.revision, e.revision);
                    }
                    l.last = cursor.last;
                }
                Ok(Ok(None)) => break "the stream ended".to_string(),
                Ok(Err(status)) => {
                    let mut l = lock();
                    record_error(&mut l, &status, clock.now(), &addr, cursor.last);
                    if let Some((r, meta)) = error_info(&status) {
                        if r == reason::COMPACTED {
                            // Start again from now: a gap.
                            cursor.close(&mut l);
                            cursor.last = None;
                        } else if r == reason::WATCHER_TOO_SLOW {
                            let resume = meta
                                .get("resumeRevision")
                                .and_then(|v| v.parse::<u64>().ok());
                            if let (Some(resume), Some(last)) = (resume, cursor.last) {
                                if resume > last + 1 {
                                    cursor.close(&mut l);
                                    cursor.last = Some(resume - 1);
                                    cursor.from = Some(resume);
                                }
                            }
                        }
                    }
                    break format!("{:?}: {}", status.code(), status.message());
                }
            }
        };
        lock().segments.push(Segment {
            endpoint: addr,
            start_revision,
            opened,
            closed: clock.now(),
            events,
            ended,
        });
        failures += 1;
        endpoint = (endpoint + 1) % n;
        tokio::select! {
            _ = backoff(failures, n) => {}
            _ = stopped.changed() => break,
        }
    }
    let mut l = lock();
    cursor.close(&mut l);
    l.last = cursor.last;
}

fn record_error(log: &mut WatchLog, s: &Status, at: Nanos, endpoint: &str, last: Option<u64>) {
    let (reason, metadata) = match error_info(s) {
        Some((r, m)) => (r, m.into_iter().collect()),
        None => (String::new(), BTreeMap::new()),
    };
    log.errors.push(StreamError {
        at,
        endpoint: endpoint.to_string(),
        code: format!("{:?}", s.code()),
        reason,
        metadata,
        message: s.message().to_string(),
        last,
    });
}

/// No wait while other endpoints are untried; then up to 1 s.
async fn backoff(failures: u32, endpoints: usize) {
    if (failures as usize) < endpoints {
        return;
    }
    let ms = 50u64.saturating_mul(1 << failures.min(5)).min(1_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_names_and_labels() {
        let labels = BTreeMap::from([("chaos-kind".to_string(), "kube".to_string())]);
        assert!(WatchFilter::all().matches("a", &BTreeMap::new()));
        let by_name = WatchFilter {
            name: Some("a".into()),
            label: None,
        };
        assert!(by_name.matches("a", &labels) && !by_name.matches("b", &labels));
        let by_label = WatchFilter {
            name: None,
            label: Some(("chaos-kind".into(), "kube".into())),
        };
        assert_eq!(by_label.selector(), "chaos-kind=kube");
        assert!(by_label.matches("a", &labels) && !by_label.matches("a", &BTreeMap::new()));
    }

    #[test]
    fn a_cursor_covers_from_the_first_progress_and_closes_on_a_gap() {
        let mut log = WatchLog {
            watcher: 1,
            filter: WatchFilter::all(),
            events: vec![],
            progress: 0,
            segments: vec![],
            errors: vec![],
            covered: vec![],
            last: None,
        };
        let mut c = Cursor {
            last: None,
            from: None,
        };
        c.handled(10, 11); // first progress: everything up to 10 was before
        c.handled(12, 12);
        c.handled(15, 16);
        c.close(&mut log);
        c.last = None;
        c.handled(30, 30); // an event first, after a restart from now
        c.close(&mut log);
        assert_eq!(
            log.covered,
            vec![Covered { from: 11, to: 15 }, Covered { from: 30, to: 30 }]
        );
    }
}
