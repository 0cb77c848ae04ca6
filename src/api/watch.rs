//! The `Watch` stream.
//!
//! Each watcher is one task that first replays the retained history from
//! `start_revision`, then follows the state machine's broadcast of applied
//! batches. It subscribes before reading history and drops anything at or
//! below the last revision it handled, so events arrive in revision order,
//! with no gaps and no duplicates. A watcher reads only this node's state
//! machine: a follower delivers an event once it has applied it, and the
//! stream does not care about leader changes.
//!
//! The task sends into a bounded channel drained by gRPC. A watcher is cut
//! off with RESOURCE_EXHAUSTED and the revision to resume from when its
//! client leaves the channel full for [`SLOW_WATCHER_GRACE`], or when the
//! task fell so far behind that the state machine's broadcast overwrote
//! batches it had not read. The final status is queued behind the events
//! already buffered. The state machine never waits for a watcher.

use super::convert::lease_to_proto;
use super::status;
use super::stopping::Stopping;
use crate::api::limits::SLOW_WATCHER_GRACE;
use crate::lease::selector::{self, Selector};
use crate::lease::validate::{validate_dns_label, validate_dns_subdomain};
use crate::lease::{Event, EventKind, Lease, LeaseError, Visible};
use crate::proto::v1 as pb;
use crate::store::state_machine::Notice;
use crate::store::StateMachineStore;
use futures::StreamExt;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Events buffered per watcher between the task and gRPC.
const CHANNEL_EVENTS: usize = 256;
/// History events read per chunk during replay.
const HISTORY_CHUNK: usize = 1_000;
/// Default and minimum progress intervals.
const DEFAULT_PROGRESS: Duration = Duration::from_millis(5_000);
const MIN_PROGRESS: Duration = Duration::from_millis(100);

/// The stream handed to tonic.
pub type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// A validated watch request.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    namespace: String,
    name: String,
    selector: Selector,
    start_revision: u64,
    progress: Option<Duration>,
}

impl WatchSpec {
    /// Validates a request.
    pub fn from_request(r: &pb::WatchRequest) -> Result<Self, LeaseError> {
        if !r.namespace.is_empty() {
            validate_dns_label("namespace", &r.namespace)?;
        }
        if !r.name.is_empty() {
            if r.namespace.is_empty() {
                return Err(LeaseError::invalid(
                    "namespace",
                    "is required when name is set",
                ));
            }
            validate_dns_subdomain("name", &r.name)?;
        }
        let progress = r.progress_notify.then(|| match r.progress_interval_ms {
            0 => DEFAULT_PROGRESS,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_PROGRESS),
        });
        Ok(WatchSpec {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            selector: selector::parse(&r.label_selector)?,
            start_revision: r.start_revision,
            progress,
        })
    }

    fn matches(&self, lease: &Lease) -> bool {
        let key = &lease.key;
        (self.namespace.is_empty() || key.namespace == self.namespace)
            && (self.name.is_empty() || key.name == self.name)
            && self.selector.matches(&lease.labels)
    }

    /// The event as this watcher sees it, if at all: a lease that leaves
    /// the selection through a change is `DELETED` for this watcher, one
    /// that enters it `ADDED` (Kubernetes' watch semantics).
    fn view(&self, e: &Event) -> Option<pb::WatchEvent> {
        match e.seen_through(|l| self.matches(l)) {
            Visible::No => None,
            Visible::As(kind, lease) => Some(to_proto(e.revision, kind, lease)),
        }
    }
}

fn to_proto(revision: u64, kind: EventKind, lease: &Lease) -> pb::WatchEvent {
    let t = match kind {
        EventKind::Added => pb::watch_event::Type::Added,
        EventKind::Modified => pb::watch_event::Type::Modified,
        EventKind::Deleted => pb::watch_event::Type::Deleted,
        EventKind::Expired => pb::watch_event::Type::Expired,
    };
    pb::WatchEvent {
        r#type: t as i32,
        lease: Some(lease_to_proto(lease)),
        revision,
    }
}

/// Starts a watcher task and returns its stream; `permit` (this watch's
/// place under the node's watch limit) is held until the task ends.
pub fn start(
    sm: StateMachineStore,
    spec: WatchSpec,
    permit: tokio::sync::OwnedSemaphorePermit,
    stopping: Stopping,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
    let (final_tx, final_rx) = oneshot::channel::<Status>();
    tokio::spawn(async move {
        let _permit = permit;
        let mut w = Watcher {
            sm,
            spec,
            tx,
            last: 0,
            stopping,
        };
        if let Err(status) = w.run().await {
            // Ends the event stream, then delivers the status after the
            // events already buffered. The client may be gone; then nobody
            // receives it.
            drop(w);
            let _ = final_tx.send(status);
        }
    });
    let tail = futures::stream::once(final_rx).filter_map(|r| async move { r.ok().map(Err) });
    Box::pin(ReceiverStream::new(rx).chain(tail))
}

struct Watcher {
    sm: StateMachineStore,
    spec: WatchSpec,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    /// Every change at or below this revision has been handled.
    last: u64,
    /// The server's stop signal: the watch ends with `UNAVAILABLE`.
    stopping: Stopping,
}

/// The watcher ends quietly: the client went away.
struct Gone;

impl Watcher {
    async fn run(&mut self) -> Result<(), Status> {
        let mut rx = self.sm.subscribe();
        if self.spec.start_revision == 0 {
            self.last = self.sm.revision();
        } else {
            self.last = self.spec.start_revision - 1;
            if self.replay().await?.is_err() {
                return Ok(());
            }
        }
        // Tell a progress-aware client at once where it stands, so it can
        // resume from here even if nothing changes before it reconnects.
        if self.spec.progress.is_some() && self.send(self.progress()).await?.is_err() {
            return Ok(());
        }
        let mut since_send = tokio::time::Instant::now();
        loop {
            let tick = async {
                match self.spec.progress {
                    Some(p) => tokio::time::sleep_until(since_send + p).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                notice = rx.recv() => match notice {
                    Ok(Notice::Events(batch)) => {
                        for e in batch.iter() {
                            if e.revision <= self.last {
                                continue;
                            }
                            self.last = e.revision;
                            if let Some(shown) = self.spec.view(e) {
                                if self.send(shown).await?.is_err() {
                                    return Ok(());
                                }
                                since_send = tokio::time::Instant::now();
                            }
                        }
                    }
                    Ok(Notice::Reset) => {
                        // A snapshot replaced the state; it carries the
                        // history, so continue from there.
                        if self.replay().await?.is_err() {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        cutoff("lagged");
                        return Err(status::watcher_too_slow(self.last + 1));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Status::unavailable("the node is shutting down; resume on another node"));
                    }
                },
                _ = tick => {
                    if self.send(self.progress()).await?.is_err() {
                        return Ok(());
                    }
                    since_send = tokio::time::Instant::now();
                }
                _ = self.tx.closed() => return Ok(()),
                _ = self.stopping.wait() => {
                    return Err(Status::unavailable(format!(
                        "the node is shutting down; resume from revision {} on another node",
                        self.last + 1
                    )));
                }
            }
        }
    }

    fn progress(&self) -> pb::WatchEvent {
        pb::WatchEvent {
            r#type: pb::watch_event::Type::Progress as i32,
            lease: None,
            revision: self.last,
        }
    }

    /// Sends the retained history after `self.last`.
    async fn replay(&mut self) -> Result<Result<(), Gone>, Status> {
        loop {
            let from = self.last + 1;
            let (events, seen) = match self.sm.history_from(from, HISTORY_CHUNK) {
                Ok(r) => r,
                Err(c) => {
                    cutoff("compacted");
                    return Err(status::compacted(c.requested, c.oldest));
                }
            };
            let full = events.len() == HISTORY_CHUNK;
            for e in &events {
                self.last = e.revision;
                if let Some(shown) = self.spec.view(e) {
                    if self.send(shown).await?.is_err() {
                        return Ok(Err(Gone));
                    }
                }
            }
            if !full {
                self.last = self.last.max(seen);
                return Ok(Ok(()));
            }
        }
    }

    /// Queues an event; `Ok(Err(Gone))` when the client went away, `Err`
    /// when it left the buffer full for too long.
    async fn send(&self, e: pb::WatchEvent) -> Result<Result<(), Gone>, Status> {
        let resume = if e.r#type == pb::watch_event::Type::Progress as i32 {
            self.last + 1
        } else {
            e.revision
        };
        let progress = e.r#type == pb::watch_event::Type::Progress as i32;
        match tokio::time::timeout(SLOW_WATCHER_GRACE, self.tx.send(Ok(e))).await {
            Ok(Ok(())) => {
                if !progress {
                    crate::telemetry::metrics().watch_events.inc();
                }
                Ok(Ok(()))
            }
            Ok(Err(_)) => Ok(Err(Gone)),
            Err(_) => {
                cutoff("buffer_full");
                Err(status::watcher_too_slow(resume))
            }
        }
    }
}

/// Counts a watch the server ended, by reason.
fn cutoff(reason: &str) {
    crate::telemetry::metrics()
        .watch_cutoffs
        .with_label_values(&[reason])
        .inc();
}
