//! Property 9: revisions and compare-and-swap.
//!
//! The revision of a change is the Raft log index of the entry that made
//! it, and a lease's resourceVersion is the revision of its last change.
//! From the answers alone:
//! - every acknowledged change has its own revision (no two share one,
//!   on any lease);
//! - revisions follow real time: a change acknowledged before another was
//!   sent has the lower revision, on any lease;
//! - reads follow real time too: a read sent after a change to its lease
//!   was acknowledged sees that revision or a later one, and a read
//!   answered before a change was sent sees an earlier one;
//! - compare-and-swap: a Put or Delete at resourceVersion `B` that
//!   succeeded with revision `R` has `B < R`, and nothing the run saw of
//!   that lease (an acknowledged change, a read) has a revision strictly
//!   between them: the lease did not change in between;
//! - a new tenure's token is the revision that granted it (an acquire that
//!   says "newly" has token = revision); a renewal keeps an older token.
//!
//! Ambiguous writes are left out: their revision is not known.

use super::Anomaly;
use crate::history::{Nanos, Op, OpKind, Outcome};
use std::collections::{BTreeMap, HashMap};

/// How many examples of one kind of failure are reported.
const EXAMPLES: usize = 10;

/// An op and the revision it made or read.
type Rev<'a> = (&'a Op, u64);

/// Counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CasStats {
    /// Successful Puts and Deletes at a resourceVersion checked.
    pub checked: usize,
    /// Refused as stale (CONFLICT).
    pub conflicts: usize,
}

/// Checks the revisions in `ops`.
pub fn check(ops: &[Op]) -> (Vec<Anomaly>, CasStats) {
    let mut out = Vec::new();
    let mut stats = CasStats::default();
    let writes: Vec<Rev> = ops
        .iter()
        .filter(|o| o.kind.is_write() && o.outcome.is_ok())
        .filter_map(|o| o.revision.map(|r| (o, r)))
        .collect();
    let reads: Vec<Rev> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Read(_)))
        .filter_map(|o| o.revision.map(|r| (o, r)))
        .collect();
    stats.conflicts = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Conflict)
        .count();

    // Unique.
    let mut seen: HashMap<u64, &Op> = HashMap::new();
    for &(op, rev) in &writes {
        if let Some(prev) = seen.insert(rev, op) {
            out.push(Anomaly::new(
                "revisions",
                Some(&op.lease),
                format!(
                    "revision {rev} was acknowledged twice: op {} ({} of {}) and op {} ({} of {})",
                    prev.id,
                    prev.kind.name(),
                    prev.lease,
                    op.id,
                    op.kind.name(),
                    op.lease
                ),
                vec![prev.id, op.id],
            ));
        }
    }

    // Real time, across leases.
    let late: Vec<String> = real_time(&writes, &writes, |later, earlier| later > earlier)
        .into_iter()
        .take(EXAMPLES)
        .map(|(b, a)| {
            format!(
                "op {} ({} of {}, sent at {:.3} s) made revision {}, not above revision {} of \
                 op {} ({} of {}), acknowledged at {:.3} s",
                b.0.id,
                b.0.kind.name(),
                b.0.lease,
                secs(b.0.invoke),
                b.1,
                a.1,
                a.0.id,
                a.0.kind.name(),
                a.0.lease,
                secs(a.0.complete)
            )
        })
        .collect();
    for text in late {
        out.push(Anomaly::new("revisions", None, text, vec![]));
    }

    // Reads, per lease.
    let mut by_lease: BTreeMap<&str, (Vec<Rev>, Vec<Rev>)> = BTreeMap::new();
    for &(op, rev) in &writes {
        by_lease
            .entry(op.lease.as_str())
            .or_default()
            .0
            .push((op, rev));
    }
    for &(op, rev) in &reads {
        by_lease
            .entry(op.lease.as_str())
            .or_default()
            .1
            .push((op, rev));
    }
    for (lease, (w, r)) in &by_lease {
        // A read after a change sees it (or later).
        for (read, write) in real_time(r, w, |read, write| read >= write)
            .into_iter()
            .take(EXAMPLES)
        {
            out.push(Anomaly::new(
                "revisions",
                Some(lease),
                format!(
                    "op {} (get, sent at {:.3} s) read resourceVersion {}, older than revision \
                     {} of op {} ({}), acknowledged at {:.3} s",
                    read.0.id,
                    secs(read.0.invoke),
                    read.1,
                    write.1,
                    write.0.id,
                    write.0.kind.name(),
                    secs(write.0.complete)
                ),
                vec![write.0.id, read.0.id],
            ));
        }
        // A change after a read is newer than what it read.
        for (write, read) in real_time(w, r, |write, read| write > read)
            .into_iter()
            .take(EXAMPLES)
        {
            out.push(Anomaly::new(
                "revisions",
                Some(lease),
                format!(
                    "op {} ({}, sent at {:.3} s) made revision {}, not above resourceVersion {} \
                     read by op {}, answered at {:.3} s",
                    write.0.id,
                    write.0.kind.name(),
                    secs(write.0.invoke),
                    write.1,
                    read.1,
                    read.0.id,
                    secs(read.0.complete)
                ),
                vec![read.0.id, write.0.id],
            ));
        }
        // Compare-and-swap.
        let mut known: Vec<(u64, &Op)> = w.iter().chain(r.iter()).map(|&(o, v)| (v, o)).collect();
        known.sort_by_key(|(v, o)| (*v, o.id));
        for &(op, rev) in w {
            let base = match &op.kind {
                OpKind::Put { base, .. } if *base > 0 => *base,
                OpKind::Delete { base: Some(b) } => *b,
                _ => continue,
            };
            stats.checked += 1;
            if base >= rev {
                out.push(Anomaly::new(
                    "revisions",
                    Some(lease),
                    format!(
                        "op {} ({} at resourceVersion {base}) succeeded with revision {rev}, \
                         not above it",
                        op.id,
                        op.kind.name()
                    ),
                    vec![op.id],
                ));
                continue;
            }
            let lo = known.partition_point(|(v, _)| *v <= base);
            if let Some((v, between)) = known[lo..].iter().find(|(v, o)| *v < rev && o.id != op.id)
            {
                out.push(Anomaly::new(
                    "revisions",
                    Some(lease),
                    format!(
                        "compare-and-swap broken: op {} ({} at resourceVersion {base}) succeeded \
                         with revision {rev}, but op {} ({}) saw the lease at revision {v} in \
                         between",
                        op.id,
                        op.kind.name(),
                        between.id,
                        between.kind.name()
                    ),
                    vec![between.id, op.id],
                ));
            }
        }
    }

    // Tokens are granting revisions.
    for &(op, rev) in &writes {
        let bad = match (&op.kind, &op.outcome) {
            (OpKind::Acquire { .. }, Outcome::Acquired { token, newly: true }) => *token != rev,
            (
                OpKind::Acquire { .. },
                Outcome::Acquired {
                    token,
                    newly: false,
                },
            ) => *token >= rev,
            (OpKind::Put { .. }, Outcome::Put { view, .. }) if view.holder.is_some() => {
                view.token > rev
            }
            _ => false,
        };
        if bad {
            out.push(Anomaly::new(
                "revisions",
                Some(&op.lease),
                format!(
                    "op {} ({}) answered {:?} at revision {rev}: a new tenure's token must be \
                     its revision, a renewal's an earlier one",
                    op.id,
                    op.kind.name(),
                    op.outcome
                ),
                vec![op.id],
            ));
        }
    }
    (out, stats)
}

fn secs(t: Nanos) -> f64 {
    t as f64 / 1e9
}

/// Pairs (b, a) with `a` completed before `b` was invoked and
/// `!ok(b.rev, a.rev)`, comparing each `b` against the `a` with the highest
/// (for `>`/`>=` checks) revision among those completed before it; at most
/// one pair per `b`.
fn real_time<'a>(
    bs: &[Rev<'a>],
    as_: &[Rev<'a>],
    ok: impl Fn(u64, u64) -> bool,
) -> Vec<(Rev<'a>, Rev<'a>)> {
    let mut bs: Vec<Rev> = bs.to_vec();
    bs.sort_by_key(|(o, _)| o.invoke);
    let mut as_: Vec<Rev> = as_.to_vec();
    as_.sort_by_key(|(o, _)| o.complete);
    let mut out = Vec::new();
    let mut j = 0;
    let mut best: Option<Rev> = None;
    for &(b, rb) in &bs {
        while j < as_.len() && as_[j].0.complete < b.invoke {
            if best.is_none_or(|(_, r)| as_[j].1 > r) {
                best = Some(as_[j]);
            }
            j += 1;
        }
        if let Some((a, ra)) = best {
            if a.id != b.id && !ok(rb, ra) {
                out.push(((b, rb), (a, ra)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::LeaseView;

    fn op(id: u64, lease: &str, kind: OpKind, outcome: Outcome, at: u64, rev: u64) -> Op {
        Op {
            id,
            worker: 1,
            lease: lease.into(),
            kind,
            invoke: at,
            complete: at + 5,
            outcome,
            attempts: 1,
            revision: Some(rev),
            labels: None,
        }
    }

    fn put(id: u64, base: u64, at: u64, rev: u64, token: u64) -> Op {
        op(
            id,
            "a",
            OpKind::Put {
                holder: Some("k".into()),
                base,
                tenure: 0,
                base_labels: None,
                skew_ms: 0,
            },
            Outcome::Put {
                view: LeaseView {
                    holder: Some("k".into()),
                    token,
                    expired: false,
                },
                created: base == 0,
            },
            at,
            rev,
        )
    }

    fn get(id: u64, at: u64, rv: u64) -> Op {
        op(
            id,
            "a",
            OpKind::Get,
            Outcome::Read(LeaseView {
                holder: Some("k".into()),
                token: 3,
                expired: false,
            }),
            at,
            rv,
        )
    }

    #[test]
    fn a_compare_and_swap_chain_passes() {
        let ops = vec![
            put(0, 0, 0, 3, 3),
            get(1, 10, 3),
            put(2, 3, 20, 7, 3),
            put(3, 7, 30, 9, 3),
            get(4, 40, 9),
        ];
        let (a, st) = check(&ops);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(st.checked, 2);
    }

    #[test]
    fn two_puts_on_one_base_are_caught() {
        // Both based on revision 3: the second must have conflicted.
        let ops = vec![put(0, 0, 0, 3, 3), put(1, 3, 20, 7, 3), put(2, 3, 21, 9, 3)];
        let (a, _) = check(&ops);
        assert!(
            a.iter()
                .any(|a| a.explanation.contains("compare-and-swap broken")),
            "{a:?}"
        );
    }

    #[test]
    fn revisions_going_back_in_real_time_are_caught() {
        let ops = vec![put(0, 0, 0, 9, 9), get(1, 10, 5), put(2, 0, 20, 7, 7)];
        let (a, _) = check(&ops);
        assert!(
            a.iter()
                .any(|a| a.explanation.contains("not above revision 9")),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|a| a.explanation.contains("older than revision 9")),
            "{a:?}"
        );
        let dup = vec![put(0, 0, 0, 9, 9), put(1, 0, 20, 9, 9)];
        let (a, _) = check(&dup);
        assert!(a.iter().any(|a| a.explanation.contains("twice")), "{a:?}");
    }

    #[test]
    fn a_grant_whose_token_is_not_its_revision_is_caught() {
        let ops = vec![op(
            0,
            "a",
            OpKind::Acquire {
                holder: "w".into(),
                duration_seconds: 2,
            },
            Outcome::Acquired {
                token: 4,
                newly: true,
            },
            0,
            5,
        )];
        let (a, _) = check(&ops);
        assert_eq!(a.len(), 1, "{a:?}");
    }
}
