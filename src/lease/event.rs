//! Change events: what watchers receive, and what the history keeps.

use super::model::Lease;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The lease was created.
    Added,
    /// The lease changed (acquired, renewed, released, updated).
    Modified,
    /// The lease was deleted; the event carries its last state.
    Deleted,
    /// The leader recorded that the holder's claim lapsed.
    Expired,
}

/// One change, at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the change (its log index).
    pub revision: u64,
    /// The state machine time of the change.
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The lease after the change (for `Deleted`: as it was).
    pub lease: Arc<Lease>,
    /// The lease before the change, kept only when the change altered its
    /// labels (a `Put`): a watcher with a label selector must then see the
    /// lease leave its selection (`DELETED` with this object) or enter it
    /// (`ADDED`), as Kubernetes' watch does.
    pub prev: Option<Arc<Lease>>,
}

/// How one event looks to a watcher with a label selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible<'a> {
    /// Not shown.
    No,
    /// Shown as this kind, carrying this lease.
    As(EventKind, &'a Lease),
}

impl Event {
    /// How a watcher whose filter is `matches` sees this event: a lease that
    /// stops matching through this change is `Deleted` (with the lease as
    /// it was), one that starts matching is `Added`, as Kubernetes' watch
    /// cache reports them.
    pub fn seen_through<'a>(&'a self, matches: impl Fn(&Lease) -> bool) -> Visible<'a> {
        let now = matches(&self.lease);
        let before = match (&self.prev, self.kind) {
            (Some(prev), EventKind::Modified | EventKind::Expired) => matches(prev),
            _ => now,
        };
        match (before, now) {
            (true, true) => Visible::As(self.kind, &self.lease),
            (false, true) => Visible::As(EventKind::Added, &self.lease),
            (true, false) => Visible::As(
                EventKind::Deleted,
                self.prev.as_deref().unwrap_or(&self.lease),
            ),
            (false, false) => Visible::No,
        }
    }
}
