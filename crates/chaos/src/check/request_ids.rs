//! Property 10: request ids. The cluster applies a request id at most
//! once: a write sent again with the id of an answered one gets the first
//! answer again, exactly (same code, reason, metadata, response), and the
//! same id with another command is refused with INVALID_ARGUMENT naming
//! `requestId`. That the refused command changed nothing is checked by the
//! other properties: it is in the history as a failed op, which the model
//! treats as having had no effect, so any effect it had shows up as an
//! answer the model cannot explain.
//!
//! A reuse whose answer stayed ambiguous (the cluster could not be reached
//! within the resolve window) gives no verdict; it is counted.

use super::Anomaly;
use crate::history::IdReuse;
use serde::{Deserialize, Serialize};

/// Counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdStats {
    /// Same command sent again.
    pub repeated: usize,
    /// Of those, answered exactly as the first time.
    pub repeated_identical: usize,
    /// Another command sent with a used id.
    pub reused: usize,
    /// Of those, refused naming `requestId`.
    pub reused_refused: usize,
    /// Reuses without a definite answer.
    pub inconclusive: usize,
}

/// Checks every deliberate request-id reuse.
pub fn check(reuses: &[IdReuse]) -> (Vec<Anomaly>, IdStats) {
    let mut out = Vec::new();
    let mut st = IdStats::default();
    for r in reuses {
        if r.same_command {
            st.repeated += 1;
        } else {
            st.reused += 1;
        }
        let Some(second) = &r.second else {
            st.inconclusive += 1;
            continue;
        };
        let mut ops = vec![r.op];
        ops.extend(r.other_op);
        if r.same_command {
            if *second == r.first {
                st.repeated_identical += 1;
            } else {
                out.push(Anomaly::new(
                    "request-ids",
                    Some(&r.lease),
                    format!(
                        "op {} sent again with its request id ({}) at {:.3} s got another \
                         answer: first {:?}, then {:?}",
                        r.op,
                        r.sent,
                        r.invoke as f64 / 1e9,
                        r.first,
                        second
                    ),
                    ops,
                ));
            }
        } else if second.code == "InvalidArgument"
            && second.metadata.get("field").map(String::as_str) == Some("requestId")
        {
            st.reused_refused += 1;
        } else {
            out.push(Anomaly::new(
                "request-ids",
                Some(&r.lease),
                format!(
                    "the request id of op {} was reused for another command ({}) at {:.3} s and \
                     not refused with INVALID_ARGUMENT naming requestId: got {:?}",
                    r.op,
                    r.sent,
                    r.invoke as f64 / 1e9,
                    second
                ),
                ops,
            ));
        }
    }
    (out, st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Answer;
    use std::collections::BTreeMap;

    fn answer(code: &str, field: Option<&str>, body: &str) -> Answer {
        Answer {
            code: code.into(),
            reason: String::new(),
            metadata: field
                .map(|f| BTreeMap::from([("field".to_string(), f.to_string())]))
                .unwrap_or_default(),
            body: body.into(),
        }
    }

    fn reuse(same: bool, first: Answer, second: Option<Answer>) -> IdReuse {
        IdReuse {
            op: 1,
            worker: 2,
            lease: "a".into(),
            same_command: same,
            other_op: (!same).then_some(3),
            sent: "test".into(),
            invoke: 0,
            complete: 1,
            first,
            second,
        }
    }

    #[test]
    fn identical_repeats_and_refused_reuses_pass() {
        let ok = answer("Ok", None, "renew rv=5");
        let (a, st) = check(&[
            reuse(true, ok.clone(), Some(ok.clone())),
            reuse(
                false,
                ok.clone(),
                Some(answer("InvalidArgument", Some("requestId"), "x")),
            ),
            reuse(true, ok, None),
        ]);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(
            (st.repeated_identical, st.reused_refused, st.inconclusive),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_second_application_or_an_accepted_reuse_is_caught() {
        let ok = answer("Ok", None, "renew rv=5");
        let (a, _) = check(&[
            reuse(true, ok.clone(), Some(answer("Ok", None, "renew rv=8"))),
            reuse(false, ok.clone(), Some(answer("Ok", None, "release rv=9"))),
            reuse(
                false,
                ok,
                Some(answer("InvalidArgument", Some("holder"), "x")),
            ),
        ]);
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(a[0].explanation.contains("another answer"), "{a:?}");
        assert_eq!(a[1].ops, vec![1, 3]);
    }
}
