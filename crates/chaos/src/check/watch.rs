//! Property 8: watchers saw every acknowledged change exactly once, in
//! revision order, across the faults.
//!
//! Every change to a lease is one event at one revision, and a successful
//! write's revision is in its answer ([`Op::revision`]), so the history
//! says which events each watcher must have received. Per watcher:
//! - the revisions it received strictly increase (no duplicate, nothing
//!   out of order), across every stream it resumed on;
//! - every acknowledged change inside one of its covered intervals (see
//!   `chaos::watcher`) whose lease its filter covers was delivered exactly
//!   once, as an event of that lease (with the lease's resourceVersion
//!   equal to the revision, except for DELETED, which carries the lease as
//!   it was; a Delete as DELETED). A change is covered by a label filter
//!   when the lease matches after it, or, for a Put that changed its
//!   labels, matched before it (the watcher then sees DELETED);
//! - it caught up: its last revision reached the highest acknowledged one
//!   before it was stopped;
//! - no stream ended with COMPACTED or WATCHER_TOO_SLOW, unless explained:
//!   a COMPACTED is explained when the run acknowledged at least the
//!   history's size of changes after the revision it asked for (the node
//!   may legitimately have trimmed it).
//!
//! Unknown writes may or may not have made an event, so they are not
//! required; events nobody acknowledged (expiry records, the probes'
//! leases, unknown writes that landed) are allowed.

use super::Anomaly;
use crate::history::{Op, OpKind, Outcome};
use crate::watcher::WatchLog;
use leasehold_proto::wire::reason;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How many examples of one kind of failure an anomaly lists.
const EXAMPLES: usize = 5;

/// What one watcher did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherStats {
    /// Watcher number.
    pub watcher: u32,
    /// Its filter, in words.
    pub filter: String,
    /// Events received.
    pub events: usize,
    /// Progress notifications received.
    pub progress: u64,
    /// Streams opened (1 + resumes).
    pub streams: usize,
    /// Error statuses, by reason (or code).
    pub errors: HashMap<String, usize>,
    /// Revisions inside covered intervals.
    pub covered_revisions: u64,
    /// Covered intervals (more than one means a gap).
    pub intervals: usize,
    /// Acknowledged changes it had to deliver.
    pub required: usize,
    /// Of those, delivered exactly once.
    pub delivered: usize,
    /// The last revision it handled.
    pub last: Option<u64>,
}

/// Whether `op`, an acknowledged change, is one `log`'s filter covers.
fn covered_by(log: &WatchLog, op: &Op) -> bool {
    let f = &log.filter;
    if f.name.as_deref().is_some_and(|n| n != op.lease) {
        return false;
    }
    let Some((key, value)) = &f.label else {
        return true;
    };
    let matches =
        |labels: &std::collections::BTreeMap<String, String>| labels.get(key) == Some(value);
    let after = op.labels.as_ref().is_some_and(matches);
    let before = match (&op.kind, &op.outcome) {
        (
            OpKind::Put {
                base_labels: Some(b),
                ..
            },
            Outcome::Put { created: false, .. },
        ) => matches(b),
        _ => false,
    };
    after || before
}

/// Checks every watcher against the acknowledged changes in `ops`; `target`
/// is the highest acknowledged revision, `history_revisions` the size of a
/// node's watch history.
pub fn check(
    logs: &[WatchLog],
    ops: &[Op],
    target: u64,
    history_revisions: u64,
) -> (Vec<Anomaly>, Vec<WatcherStats>) {
    let mut out = Vec::new();
    let mut stats = Vec::new();
    let mut changes: Vec<&Op> = ops
        .iter()
        .filter(|o| o.kind.is_write() && o.outcome.is_ok() && o.revision.is_some())
        .collect();
    changes.sort_by_key(|o| o.revision);
    for log in logs {
        let name = format!("watcher {} ({})", log.watcher, log.filter.describe());
        let mut st = WatcherStats {
            watcher: log.watcher,
            filter: log.filter.describe(),
            events: log.events.len(),
            progress: log.progress,
            streams: log.segments.len(),
            intervals: log.covered.len(),
            covered_revisions: log.covered.iter().map(|c| c.to - c.from + 1).sum(),
            last: log.last,
            ..WatcherStats::default()
        };
        // Order: strictly increasing revisions across every stream.
        let mut bad_order = Vec::new();
        for pair in log.events.windows(2) {
            if pair[1].revision <= pair[0].revision {
                bad_order.push(format!(
                    "revision {} ({} of {}, stream {}) after revision {} ({} of {}, stream {})",
                    pair[1].revision,
                    pair[1].kind,
                    pair[1].lease,
                    pair[1].segment,
                    pair[0].revision,
                    pair[0].kind,
                    pair[0].lease,
                    pair[0].segment
                ));
            }
        }
        if !bad_order.is_empty() {
            out.push(Anomaly::new(
                "watch",
                None,
                format!(
                    "{name}: {} events not in strictly increasing revision order (duplicates \
                     or out of order), e.g. {}",
                    bad_order.len(),
                    bad_order
                        .iter()
                        .take(EXAMPLES)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                vec![],
            ));
        }
        // Exactly once, inside the covered intervals.
        let mut by_rev: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, e) in log.events.iter().enumerate() {
            by_rev.entry(e.revision).or_default().push(i);
        }
        let mut missing = Vec::new();
        let mut twice = Vec::new();
        let mut wrong = Vec::new();
        for op in &changes {
            let Some(rev) = op.revision else { continue };
            if !log.covered.iter().any(|c| c.from <= rev && rev <= c.to) {
                continue;
            }
            if !covered_by(log, op) {
                continue;
            }
            st.required += 1;
            let got = by_rev.get(&rev).map(Vec::as_slice).unwrap_or(&[]);
            match got {
                [] => missing.push(op),
                [i] => {
                    let e = &log.events[*i];
                    let is_delete = matches!(op.kind, OpKind::Delete { .. });
                    let deleted = e.kind == "DELETED";
                    let kind_ok = if is_delete {
                        deleted
                    } else {
                        // DELETED for a change that is not a Delete only
                        // when the lease left a label selection.
                        !deleted || log.filter.label.is_some()
                    };
                    let rv_ok = deleted || e.rv == rev;
                    if e.lease != op.lease || !kind_ok || !rv_ok {
                        wrong.push(format!(
                            "revision {rev}: op {} ({} of {}) delivered as {} of {} with \
                             resourceVersion {}",
                            op.id,
                            op.kind.name(),
                            op.lease,
                            e.kind,
                            e.lease,
                            e.rv
                        ));
                    } else {
                        st.delivered += 1;
                    }
                }
                _ => twice.push(op),
            }
        }
        if !missing.is_empty() {
            out.push(Anomaly::new(
                "watch",
                None,
                format!(
                    "{name}: {} acknowledged changes inside its covered revisions were never \
                     delivered, e.g. {}",
                    missing.len(),
                    missing
                        .iter()
                        .take(EXAMPLES)
                        .map(|o| format!(
                            "op {} ({} of {} at revision {})",
                            o.id,
                            o.kind.name(),
                            o.lease,
                            o.revision.unwrap_or(0)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                missing.iter().take(EXAMPLES).map(|o| o.id).collect(),
            ));
        }
        if !twice.is_empty() {
            out.push(Anomaly::new(
                "watch",
                None,
                format!(
                    "{name}: {} acknowledged changes were delivered more than once, e.g. \
                     revisions {}",
                    twice.len(),
                    twice
                        .iter()
                        .take(EXAMPLES)
                        .map(|o| o.revision.unwrap_or(0).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                twice.iter().take(EXAMPLES).map(|o| o.id).collect(),
            ));
        }
        if !wrong.is_empty() {
            out.push(Anomaly::new(
                "watch",
                None,
                format!(
                    "{name}: {} events do not match the acknowledged change at their \
                     revision, e.g. {}",
                    wrong.len(),
                    wrong
                        .iter()
                        .take(EXAMPLES)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                vec![],
            ));
        }
        // Caught up.
        if log.last.is_none_or(|l| l < target) {
            out.push(Anomaly::new(
                "watch",
                None,
                format!(
                    "{name}: stopped at revision {} without reaching {target}, the highest \
                     revision the run acknowledged",
                    log.last.map_or("none".to_string(), |l| l.to_string())
                ),
                vec![],
            ));
        }
        // Gaps the server reported.
        for e in &log.errors {
            let key = if e.reason.is_empty() {
                e.code.clone()
            } else {
                e.reason.clone()
            };
            *st.errors.entry(key).or_default() += 1;
            if e.reason != reason::COMPACTED && e.reason != reason::WATCHER_TOO_SLOW {
                continue;
            }
            let requested = e
                .metadata
                .get("requestedRevision")
                .and_then(|v| v.parse::<u64>().ok());
            let explained = e.reason == reason::COMPACTED
                && requested.is_some_and(|r| {
                    let after = changes
                        .iter()
                        .filter(|o| o.revision.is_some_and(|x| x >= r) && o.complete <= e.at)
                        .count();
                    after as u64 >= history_revisions
                });
            if !explained {
                out.push(Anomaly::new(
                    "watch",
                    None,
                    format!(
                        "{name}: stream on {} ended with {} at {:.3} s (last revision handled \
                         {:?}; {:?}): {}",
                        e.endpoint,
                        e.reason,
                        e.at as f64 / 1e9,
                        e.last,
                        e.metadata,
                        e.message
                    ),
                    vec![],
                ));
            }
        }
        stats.push(st);
    }
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::LeaseView;
    use crate::watcher::{Covered, Delivered, StreamError, WatchFilter};
    use std::collections::BTreeMap;

    fn labels(kind: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("chaos-kind".to_string(), kind.to_string())])
    }

    fn write(id: u64, lease: &str, rev: u64, kind: OpKind, outcome: Outcome, l: &str) -> Op {
        Op {
            id,
            worker: 1,
            lease: lease.into(),
            kind,
            invoke: id * 10,
            complete: id * 10 + 5,
            outcome,
            attempts: 1,
            revision: Some(rev),
            labels: Some(labels(l)),
        }
    }

    fn renew(id: u64, lease: &str, rev: u64) -> Op {
        write(
            id,
            lease,
            rev,
            OpKind::Renew {
                holder: "w".into(),
                token: 1,
            },
            Outcome::Renewed,
            "kube",
        )
    }

    fn ev(revision: u64, kind: &str, lease: &str, rv: u64) -> Delivered {
        Delivered {
            revision,
            kind: kind.into(),
            lease: lease.into(),
            rv,
            at: 0,
            segment: 0,
        }
    }

    fn log(filter: WatchFilter, events: Vec<Delivered>, covered: Vec<Covered>) -> WatchLog {
        let last = covered.last().map(|c| c.to);
        WatchLog {
            watcher: 1,
            filter,
            events,
            progress: 3,
            segments: vec![],
            errors: vec![],
            covered,
            last,
        }
    }

    #[test]
    fn every_covered_change_once_in_order_passes() {
        let ops = vec![renew(0, "a", 5), renew(1, "b", 7), renew(2, "a", 9)];
        let l = log(
            WatchFilter::all(),
            vec![
                ev(7, "MODIFIED", "b", 7),
                ev(8, "EXPIRED", "a", 8),
                ev(9, "MODIFIED", "a", 9),
            ],
            vec![Covered { from: 6, to: 12 }],
        );
        let (a, st) = check(&[l], &ops, 9, 10_000);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!((st[0].required, st[0].delivered), (2, 2));
    }

    #[test]
    fn missing_duplicate_and_out_of_order_events_are_caught() {
        let ops = vec![renew(0, "a", 5), renew(1, "b", 7), renew(2, "a", 9)];
        let l = log(
            WatchFilter::all(),
            vec![ev(7, "MODIFIED", "b", 7), ev(7, "MODIFIED", "b", 7)],
            vec![Covered { from: 1, to: 12 }],
        );
        let (a, _) = check(&[l], &ops, 9, 10_000);
        let text: Vec<&str> = a.iter().map(|a| a.explanation.as_str()).collect();
        assert!(
            text.iter().any(|t| t.contains("never delivered")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("more than once")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("strictly increasing")),
            "{text:?}"
        );
        // The wrong lease at a revision.
        let l = log(
            WatchFilter::all(),
            vec![ev(5, "MODIFIED", "b", 5)],
            vec![Covered { from: 5, to: 5 }],
        );
        let (a, _) = check(&[l], &ops[..1], 5, 10_000);
        assert!(a[0].explanation.contains("do not match"), "{a:?}");
    }

    #[test]
    fn label_selection_transitions_and_gaps() {
        // A release Put takes the lease out of `chaos-kind=kube`: the
        // watcher must see it (as DELETED). A change outside every covered
        // interval is not required; a watcher that did not catch up is.
        let release = write(
            1,
            "a",
            7,
            OpKind::Put {
                holder: None,
                base: 5,
                tenure: 3,
                base_labels: Some(labels("kube")),
                skew_ms: 0,
            },
            Outcome::Put {
                view: LeaseView {
                    holder: None,
                    token: 0,
                    expired: false,
                },
                created: false,
            },
            "released",
        );
        let ops = vec![renew(0, "a", 3), release];
        let filter = WatchFilter {
            name: None,
            label: Some(("chaos-kind".into(), "kube".into())),
        };
        let ok = log(
            filter.clone(),
            vec![ev(7, "DELETED", "a", 5)],
            vec![Covered { from: 4, to: 8 }],
        );
        let (a, st) = check(&[ok], &ops, 7, 10_000);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(st[0].required, 1);
        let missed = log(filter.clone(), vec![], vec![Covered { from: 4, to: 8 }]);
        assert!(!check(&[missed], &ops, 7, 10_000).0.is_empty());
        let behind = log(filter, vec![], vec![Covered { from: 1, to: 2 }]);
        let (a, _) = check(&[behind], &ops, 7, 10_000);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].explanation.contains("without reaching 7"), "{a:?}");
    }

    #[test]
    fn compaction_is_a_failure_unless_the_history_overflowed() {
        let ops: Vec<Op> = (0..20).map(|i| renew(i, "a", 100 + i)).collect();
        let mut l = log(WatchFilter::all(), vec![], vec![]);
        l.last = Some(200);
        l.errors.push(StreamError {
            at: 1_000_000,
            endpoint: "n1".into(),
            code: "OutOfRange".into(),
            reason: reason::COMPACTED.into(),
            metadata: BTreeMap::from([("requestedRevision".to_string(), "100".to_string())]),
            message: "compacted".into(),
            last: Some(99),
        });
        let (a, _) = check(std::slice::from_ref(&l), &ops, 119, 10_000);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].explanation.contains("COMPACTED"), "{a:?}");
        // Twenty changes after revision 100 overflow a history of ten.
        let (a, _) = check(&[l], &ops, 119, 10);
        assert!(a.is_empty(), "{a:?}");
    }
}
