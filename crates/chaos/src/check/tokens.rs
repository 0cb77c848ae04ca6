//! Property 2: fencing tokens.
//!
//! A token is the revision that granted a tenure, so across the whole run
//! (which spans restarts of every node, and leases deleted and created
//! again) no two tenures may share one, and if a grant completed before
//! another was invoked, on any lease, the later grant's token must be
//! higher. Only definite grants count: an acquire that started a tenure
//! (`newly`), and a Put that stored the holder it named with a token equal
//! to its own revision. A grant of the same tenure again (a renewal)
//! repeats its token.

use super::Anomaly;
use crate::history::{Op, OpKind, Outcome};
use std::collections::BTreeMap;

/// A definite new tenure.
struct Grant<'a> {
    op: &'a Op,
    token: u64,
    holder: &'a str,
}

/// Checks every definite grant in `ops`.
pub fn check(ops: &[Op]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut grants: Vec<Grant> = ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Acquire { holder, .. }, Outcome::Acquired { token, newly: true }) => {
                Some(Grant {
                    op,
                    token: *token,
                    holder,
                })
            }
            (
                OpKind::Put {
                    holder: Some(holder),
                    ..
                },
                Outcome::Put { view, .. },
            ) if view.holder.as_deref() == Some(holder.as_str())
                && op.revision == Some(view.token) =>
            {
                Some(Grant {
                    op,
                    token: view.token,
                    holder,
                })
            }
            _ => None,
        })
        .collect();
    // Unique: one token, one (lease, holder) tenure.
    let mut seen: BTreeMap<u64, &Grant> = BTreeMap::new();
    for g in &grants {
        if g.token == 0 {
            out.push(Anomaly::new(
                "fencing-tokens",
                Some(&g.op.lease),
                format!("op {} granted token 0", g.op.id),
                vec![g.op.id],
            ));
        }
        if let Some(prev) = seen.get(&g.token) {
            if prev.op.lease != g.op.lease || prev.holder != g.holder {
                out.push(Anomaly::new(
                    "fencing-tokens",
                    Some(&g.op.lease),
                    format!(
                        "token {} granted twice: op {} ({} on {}) and op {} ({} on {})",
                        g.token,
                        prev.op.id,
                        prev.holder,
                        prev.op.lease,
                        g.op.id,
                        g.holder,
                        g.op.lease
                    ),
                    vec![prev.op.id, g.op.id],
                ));
            }
        } else {
            seen.insert(g.token, g);
        }
    }
    // Real-time order: sort by invocation; a grant must have a higher token
    // than every grant that completed before it was invoked. Sweep with
    // grants ordered by completion, keeping the highest token completed so
    // far.
    grants.sort_by_key(|g| g.op.invoke);
    let mut by_complete: Vec<&Grant> = grants.iter().collect();
    by_complete.sort_by_key(|g| g.op.complete);
    let mut j = 0;
    let mut best: Option<&Grant> = None;
    for g in &grants {
        while j < by_complete.len() && by_complete[j].op.complete < g.op.invoke {
            let c = by_complete[j];
            if best.is_none_or(|b| c.token > b.token) {
                best = Some(c);
            }
            j += 1;
        }
        if let Some(b) = best {
            if g.token <= b.token {
                out.push(Anomaly::new(
                    "fencing-tokens",
                    Some(&g.op.lease),
                    format!(
                        "op {} (invoked at {:.3} s) got token {}, but op {} on {} had completed \
                         at {:.3} s with the higher or equal token {}",
                        g.op.id,
                        g.op.invoke as f64 / 1e9,
                        g.token,
                        b.op.id,
                        b.op.lease,
                        b.op.complete as f64 / 1e9,
                        b.token
                    ),
                    vec![b.op.id, g.op.id],
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn grant(id: u64, lease: &str, holder: &str, invoke: u64, complete: u64, token: u64) -> Op {
        Op {
            id,
            worker: 1,
            lease: lease.into(),
            kind: OpKind::Acquire {
                holder: holder.into(),
                duration_seconds: 2,
            },
            invoke,
            complete,
            outcome: Outcome::Acquired { token, newly: true },
            attempts: 1,
            revision: None,
            labels: None,
        }
    }

    #[test]
    fn increasing_unique_tokens_pass() {
        let ops = vec![
            grant(0, "a", "x", 0, 10, 5),
            grant(1, "b", "y", 5, 15, 4), // concurrent with op 0: any order
            grant(2, "a", "z", 20, 30, 9),
        ];
        assert!(check(&ops).is_empty());
    }

    #[test]
    fn a_reused_token_is_caught() {
        let ops = vec![grant(0, "a", "x", 0, 10, 5), grant(1, "b", "y", 20, 30, 5)];
        let a = check(&ops);
        assert!(
            a.iter().any(|a| a.explanation.contains("granted twice")),
            "{a:?}"
        );
    }

    #[test]
    fn a_token_lower_than_an_earlier_grant_on_another_lease_is_caught() {
        let ops = vec![
            grant(0, "a", "x", 0, 10, 50),
            grant(1, "b", "y", 20, 30, 40),
        ];
        let a = check(&ops);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].ops, vec![0, 1]);
    }

    #[test]
    fn put_grants_are_grants() {
        let mut put = grant(1, "b", "k", 20, 30, 40);
        put.kind = OpKind::Put {
            holder: Some("k".into()),
            base: 0,
            tenure: 0,
            base_labels: None,
            skew_ms: 0,
        };
        put.outcome = Outcome::Put {
            view: crate::history::LeaseView {
                holder: Some("k".into()),
                token: 40,
                expired: false,
            },
            created: true,
        };
        put.revision = Some(40);
        let ops = vec![grant(0, "a", "x", 0, 10, 50), put.clone()];
        let a = check(&ops);
        assert_eq!(a.len(), 1, "{a:?}");
        // A Put that renewed (token below its revision) is not a grant.
        put.revision = Some(60);
        assert!(check(&[grant(0, "a", "x", 0, 10, 50), put]).is_empty());
    }
}
