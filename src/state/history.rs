//! The watch history: the most recent change events, oldest first.
//!
//! Bounded by count and by age in state machine time. Trimming happens per
//! command entry ([`History::expire`] before it is applied, the count bound
//! right after an event is added), never per apply batch, so the history a
//! replica keeps depends on the log and its own limits only, not on how
//! entries were grouped when they were applied.
//!
//! The limits are each node's own configuration (`--history-revisions`,
//! `--history-age-seconds`): history decides only how far back a watch can
//! resume on that node, never the answer to a command. The history travels
//! in snapshots, so a node that installs one keeps serving resumes.

use crate::lease::{Event, Timestamp};
use std::sync::Arc;

/// How much history a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Keep at most this many events (0 keeps none).
    pub max_events: u64,
    /// Drop events older than this, in microseconds of state machine time
    /// (0 = no age limit).
    pub max_age_micros: i64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_events: 10_000,
            max_age_micros: 3600 * crate::lease::time::MICROS_PER_SEC,
        }
    }
}

/// A watch start revision older than the retained history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} is compacted; the oldest available is {oldest}")]
pub struct Compacted {
    /// What was asked for.
    pub requested: u64,
    /// The oldest revision that can still be watched from.
    pub oldest: u64,
}

/// The retained events.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: imbl::Vector<Arc<Event>>,
    /// Every event at or below this revision has been dropped (0: none).
    compacted: u64,
}

impl History {
    /// A history holding `events` (in revision order) after `compacted`.
    pub fn from_parts(compacted: u64, events: impl IntoIterator<Item = Event>) -> Self {
        History {
            events: events.into_iter().map(Arc::new).collect(),
            compacted,
        }
    }

    /// The revision at or below which events were dropped.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// The retained events, oldest first.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &Arc<Event>> + '_ {
        self.events.iter()
    }

    /// Number of events kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn pop_oldest(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.compacted = self.compacted.max(e.revision);
        }
    }

    /// Drops events older than the age limit at `now`.
    pub fn expire(&mut self, now: Timestamp, limits: &HistoryLimits) {
        if limits.max_age_micros <= 0 {
            return;
        }
        let cutoff = now.plus_micros(-limits.max_age_micros);
        while self.events.front().is_some_and(|e| e.time < cutoff) {
            self.pop_oldest();
        }
    }

    /// Adds an event (revisions only increase) and enforces the count limit.
    pub fn push(&mut self, event: Arc<Event>, limits: &HistoryLimits) {
        if limits.max_events == 0 {
            self.compacted = self.compacted.max(event.revision);
            return;
        }
        self.events.push_back(event);
        while self.events.len() as u64 > limits.max_events {
            self.pop_oldest();
        }
    }

    /// Up to `limit` events with revision >= `from`, oldest first. Fails
    /// when events at or after `from` may have been dropped.
    pub fn since(&self, from: u64, limit: usize) -> Result<Vec<Arc<Event>>, Compacted> {
        if from <= self.compacted {
            return Err(Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        }
        let start = self.events.binary_search_by(|e| e.revision.cmp(&from));
        let start = match start {
            Ok(i) | Err(i) => i,
        };
        Ok(self
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{EventKind, Lease, LeaseKey, LeaseSpec};
    use std::collections::BTreeMap;

    fn event(revision: u64, secs: i64) -> Arc<Event> {
        Arc::new(Event {
            revision,
            time: Timestamp::from_micros(secs * 1_000_000),
            kind: EventKind::Modified,
            lease: Arc::new(Lease {
                key: LeaseKey::new("ns", "a"),
                uid: String::new(),
                resource_version: revision,
                creation_timestamp: Timestamp::default(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                spec: LeaseSpec::default(),
                fencing_token: 0,
                expired: false,
            }),
            prev: None,
        })
    }

    fn revs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn bounded_by_count_and_age_with_the_compacted_point_following() {
        let limits = HistoryLimits {
            max_events: 3,
            max_age_micros: 10_000_000,
        };
        let mut h = History::default();
        for (rev, secs) in [(2, 0), (5, 1), (6, 2), (9, 3)] {
            h.push(event(rev, secs), &limits);
        }
        assert_eq!(h.compacted(), 2, "the count bound dropped revision 2");
        assert_eq!(revs(&h.since(3, 10).unwrap()), vec![5, 6, 9]);
        assert_eq!(revs(&h.since(6, 1).unwrap()), vec![6]);
        assert_eq!(revs(&h.since(7, 10).unwrap()), vec![9]);
        assert!(h.since(10, 10).unwrap().is_empty());
        assert_eq!(
            h.since(2, 10),
            Err(Compacted {
                requested: 2,
                oldest: 3
            })
        );
        // Age: at 12 s everything before 2 s goes.
        h.expire(Timestamp::from_micros(12_000_000), &limits);
        assert_eq!(h.compacted(), 5);
        assert_eq!(revs(&h.since(6, 10).unwrap()), vec![6, 9]);
    }

    #[test]
    fn keeping_nothing_still_moves_the_compacted_point() {
        let none = HistoryLimits {
            max_events: 0,
            max_age_micros: 0,
        };
        let mut h = History::default();
        h.push(event(4, 0), &none);
        assert!(h.is_empty());
        assert!(h.since(4, 1).is_err());
        assert!(h.since(5, 1).unwrap().is_empty());
    }
}
