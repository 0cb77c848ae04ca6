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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{LeaseKey, LeaseSpec};

    fn lease(app: &str) -> Arc<Lease> {
        Arc::new(Lease {
            key: LeaseKey::new("ns", "a"),
            uid: String::new(),
            resource_version: 1,
            creation_timestamp: Timestamp::default(),
            labels: [("app".to_string(), app.to_string())].into(),
            annotations: Default::default(),
            spec: LeaseSpec::default(),
            fencing_token: 0,
            expired: false,
        })
    }

    fn kind_through(e: &Event, app: &str) -> Option<(EventKind, String)> {
        match e.seen_through(|l| l.labels.get("app").map(String::as_str) == Some(app)) {
            Visible::No => None,
            Visible::As(k, l) => Some((k, l.labels["app"].clone())),
        }
    }

    #[test]
    fn a_lease_leaving_or_entering_a_selection_is_deleted_or_added_for_that_watcher() {
        let moved = Event {
            revision: 5,
            time: Timestamp::default(),
            kind: EventKind::Modified,
            lease: lease("db"),
            prev: Some(lease("web")),
        };
        assert_eq!(
            kind_through(&moved, "web"),
            Some((EventKind::Deleted, "web".into())),
            "leaves the selection: DELETED carrying the lease as it was"
        );
        assert_eq!(
            kind_through(&moved, "db"),
            Some((EventKind::Added, "db".into()))
        );
        assert_eq!(kind_through(&moved, "cache"), None);
        let same = Event {
            prev: None,
            ..moved.clone()
        };
        assert_eq!(
            kind_through(&same, "db"),
            Some((EventKind::Modified, "db".into()))
        );
        assert_eq!(kind_through(&same, "web"), None);
        let deleted = Event {
            kind: EventKind::Deleted,
            prev: None,
            ..moved
        };
        assert_eq!(
            kind_through(&deleted, "db"),
            Some((EventKind::Deleted, "db".into()))
        );
    }
}
