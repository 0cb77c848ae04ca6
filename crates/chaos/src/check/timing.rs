//! Property 4: lease timing.
//!
//! A holder that was told "granted" or "renewed" for a request it sent at
//! time s may act as holder until s + d on its own clock. So no other holder
//! may be granted the lease (the grant's completion is when it could start
//! acting) before s + d, unless the first holder released it (or may have:
//! an ambiguous release counts, it may have taken effect).
//!
//! Grants and renewals are the same whichever call made them: an acquire
//! (new tenure or renewal), a renew, or a Kubernetes-style Put that stored
//! the holder it named (a new tenure when the stored token is the Put's own
//! revision, otherwise a renewal of that token's tenure). Releases are a
//! release of the token, or a Put that cleared the holder, of the tenure
//! its sender held (the compare-and-swap made sure the lease was still in
//! that tenure). A Delete is not a release: the cluster may delete a held
//! lease, but it remembers the deleted tenure (a tombstone) and refuses
//! every create of the lease until that tenure could have lapsed. So a
//! grant after a Delete (a create, by an acquire or a Put) is judged
//! against the tenure the Delete removed like any other hand-over, and
//! Deletes play no part here.
//!
//! Tenures are identified by token; the previous tenure of a grant is the
//! one with the highest known token below it on the same lease (tokens are
//! never reused and grow also across a Delete and re-create, so the tenure
//! a Delete removed is the one right before the re-creating grant). A new
//! tenure of the same holder (re-acquired after its own lapsed, or after
//! the tombstone of its deleted tenure lapsed) is not a hand-over and is
//! not judged.

use super::Anomaly;
#[cfg(test)]
use crate::history::LeaseView;
use crate::history::{Nanos, Op, OpKind, Outcome};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
struct Tenure {
    holder: String,
    /// Latest invocation of an acknowledged acquire or renew, and its op.
    last_ack: Option<(Nanos, u64)>,
    /// Earliest invocation of a release of it that succeeded or may have.
    released: Option<Nanos>,
    /// Grant op id and completion.
    grant: Option<(u64, Nanos)>,
}

/// Checks one lease's ops.
pub fn check(lease: &str, ops: &[Op], d: Duration) -> Vec<Anomaly> {
    let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut tenures: BTreeMap<u64, Tenure> = BTreeMap::new();
    let mut ack = |token: u64, holder: &str, newly: bool, op: &Op| {
        let t = tenures.entry(token).or_default();
        t.holder = holder.to_string();
        if newly && t.grant.is_none_or(|(_, c)| op.complete < c) {
            t.grant = Some((op.id, op.complete));
        }
        if t.last_ack.is_none_or(|(s, _)| op.invoke > s) {
            t.last_ack = Some((op.invoke, op.id));
        }
    };
    let mut released: Vec<(u64, Nanos)> = Vec::new();
    for op in ops {
        match (&op.kind, &op.outcome) {
            (OpKind::Acquire { holder, .. }, Outcome::Acquired { token, newly }) => {
                ack(*token, holder, *newly, op);
            }
            (OpKind::Renew { holder, token }, Outcome::Renewed) => {
                ack(*token, holder, false, op);
            }
            (
                OpKind::Put {
                    holder: Some(holder),
                    ..
                },
                Outcome::Put { view, .. },
            ) if view.holder.as_deref() == Some(holder.as_str()) => {
                ack(view.token, holder, op.revision == Some(view.token), op);
            }
            (OpKind::Release { token, .. }, Outcome::Released | Outcome::Unknown { .. }) => {
                released.push((*token, op.invoke));
            }
            (
                OpKind::Put {
                    holder: None,
                    tenure,
                    ..
                },
                Outcome::Put { .. } | Outcome::Unknown { .. },
            ) if *tenure > 0 => {
                released.push((*tenure, op.invoke));
            }
            _ => {}
        }
    }
    for (token, at) in released {
        let t = tenures.entry(token).or_default();
        if t.released.is_none_or(|r| at < r) {
            t.released = Some(at);
        }
    }
    let mut out = Vec::new();
    let mut prev: Option<(&u64, &Tenure)> = None;
    for (token, t) in &tenures {
        if let (Some((p_token, p)), Some((grant_op, granted_at))) = (prev, t.grant) {
            let released_before = p.released.is_some_and(|r| r < granted_at);
            if !released_before && !p.holder.is_empty() && p.holder != t.holder {
                if let Some((sent, ack_op)) = p.last_ack {
                    let free_at = sent.saturating_add(d);
                    if granted_at < free_at {
                        out.push(Anomaly::new(
                            "lease-timing",
                            Some(lease),
                            format!(
                                "{} was granted token {token} (op {grant_op}, completed at \
                                 {:.3} s) while {} still held token {p_token}: its acknowledged \
                                 op {ack_op} was sent at {:.3} s, valid until {:.3} s ({} ms \
                                 too early)",
                                t.holder,
                                granted_at as f64 / 1e9,
                                p.holder,
                                sent as f64 / 1e9,
                                free_at as f64 / 1e9,
                                (free_at - granted_at) / 1_000_000
                            ),
                            vec![ack_op, grant_op],
                        ));
                    }
                }
            }
        }
        // Only tenures we saw granted or acknowledged can be "previous".
        if t.grant.is_some() || t.last_ack.is_some() {
            prev = Some((token, t));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn op(id: u64, kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            id,
            worker: 1,
            lease: "a".into(),
            kind,
            invoke,
            complete,
            outcome,
            attempts: 1,
            revision: None,
            labels: None,
        }
    }

    fn put(id: u64, h: Option<&str>, at: u64, token: u64, rev: u64, tenure: u64) -> Op {
        let mut o = op(
            id,
            OpKind::Put {
                holder: h.map(str::to_string),
                base: 1,
                tenure,
                base_labels: None,
                skew_ms: -4_000,
            },
            at,
            at + S / 100,
            Outcome::Put {
                view: LeaseView {
                    holder: h.map(str::to_string),
                    token,
                    expired: false,
                },
                created: false,
            },
        );
        o.revision = Some(rev);
        o
    }

    fn acquire(id: u64, h: &str, at: u64, token: u64) -> Op {
        op(
            id,
            OpKind::Acquire {
                holder: h.into(),
                duration_seconds: 2,
            },
            at,
            at + S / 100,
            Outcome::Acquired { token, newly: true },
        )
    }

    fn renew(id: u64, h: &str, at: u64, token: u64) -> Op {
        op(
            id,
            OpKind::Renew {
                holder: h.into(),
                token,
            },
            at,
            at + S / 100,
            Outcome::Renewed,
        )
    }

    #[test]
    fn a_takeover_after_the_last_renewal_plus_d_passes() {
        let ops = vec![
            acquire(0, "x", 0, 5),
            renew(1, "x", S, 5),
            acquire(2, "y", 3 * S + S / 10, 9),
        ];
        assert!(check("a", &ops, Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn a_takeover_before_the_last_renewal_plus_d_is_caught() {
        let ops = vec![
            acquire(0, "x", 0, 5),
            renew(1, "x", S, 5),
            acquire(2, "y", 2 * S, 9),
        ];
        let a = check("a", &ops, Duration::from_secs(2));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![1, 2]);
    }

    #[test]
    fn a_release_allows_an_immediate_takeover() {
        let rel = op(
            2,
            OpKind::Release {
                holder: "x".into(),
                token: 5,
            },
            S + S / 10,
            S + S / 5,
            Outcome::Released,
        );
        let ops = vec![
            acquire(0, "x", 0, 5),
            renew(1, "x", S, 5),
            rel,
            acquire(3, "y", S + S / 2, 9),
        ];
        assert!(check("a", &ops, Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn a_create_after_deleting_a_held_lease_is_judged_against_the_deleted_tenure() {
        // x acquired token 5 at 0 and never renewed; a deleter deleted the
        // held lease at 0.5 s (revision 7). A create by y must wait for x's
        // tenure: granted before 2 s it is too early, after 2 s it is fine.
        let delete = |id| {
            let mut o = op(
                id,
                OpKind::Delete { base: None },
                S / 2,
                S / 2 + S / 100,
                Outcome::Deleted(LeaseView {
                    holder: Some("x".into()),
                    token: 5,
                    expired: false,
                }),
            );
            o.revision = Some(7);
            o
        };
        let ops = vec![acquire(0, "x", 0, 5), delete(1), acquire(2, "y", S, 9)];
        let a = check("a", &ops, Duration::from_secs(2));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![0, 2]);
        // The same with a Put create as the grant.
        let mut create = put(2, Some("k"), S + S / 2, 9, 9, 0);
        if let OpKind::Put { base, .. } = &mut create.kind {
            *base = 0;
        }
        if let Outcome::Put { created, .. } = &mut create.outcome {
            *created = true;
        }
        let a = check(
            "a",
            &[acquire(0, "x", 0, 5), delete(1), create],
            Duration::from_secs(2),
        );
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![0, 2]);
        // Granted after 2 s: no anomaly.
        let ops = vec![
            acquire(0, "x", 0, 5),
            delete(1),
            acquire(2, "y", 2 * S + S / 10, 9),
        ];
        assert!(check("a", &ops, Duration::from_secs(2)).is_empty());
        // x itself re-acquiring after the delete is not a hand-over.
        let ops = vec![acquire(0, "x", 0, 5), delete(1), acquire(2, "x", S, 9)];
        assert!(check("a", &ops, Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn put_grants_and_renewals_count_like_acquire_and_renew() {
        // A Kubernetes-style holder took the lease with a Put (token 5 at
        // revision 5) and renewed it with a Put at 1 s: an acquire by
        // another holder completing at 2.5 s is too early.
        let ops = vec![
            put(0, Some("k"), 0, 5, 5, 0),
            put(1, Some("k"), S, 5, 7, 5),
            acquire(2, "w", 2 * S + S / 2, 9),
        ];
        let a = check("a", &ops, Duration::from_secs(2));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![1, 2]);
        // The same with a Put takeover as the grant.
        let ops = vec![
            acquire(0, "w", 0, 5),
            renew(1, "w", S, 5),
            put(2, Some("k"), 2 * S, 9, 9, 0),
        ];
        let a = check("a", &ops, Duration::from_secs(2));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![1, 2]);
        // A release Put of the tenure allows an immediate takeover.
        let ops = vec![
            put(0, Some("k"), 0, 5, 5, 0),
            put(1, None, S, 0, 7, 5),
            acquire(2, "w", S + S / 2, 9),
        ];
        assert!(check("a", &ops, Duration::from_secs(2)).is_empty());
    }
}
