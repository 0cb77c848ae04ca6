//! Property 3: the fenced register saw no lost and no stale update.
//!
//! Replays the register's own log, counter by counter, in the order it
//! handled operations:
//! - stale update: an accepted operation carried a lower token than one the
//!   counter had already accepted (a holder acted after its successor);
//! - lost update: an accepted write did not set the counter to one more than
//!   the value the same worker read with the same token just before, which
//!   means another write landed between that read and this write.
//!
//! With fencing on, the register refuses both, so anomalies here mean the
//! lease service let two holders act with tokens out of order. With fencing
//! off (the negative control) a paused ex-holder's write must show up here.

use super::Anomaly;
use crate::register::{RegOp, RegOpKind};
use std::collections::HashMap;

/// Checks the register log.
pub fn check(log: &[RegOp]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    // Per counter: highest accepted token, and per (worker, token) the
    // value last read.
    let mut max_token: HashMap<&str, (u64, usize)> = HashMap::new();
    let mut last_read: HashMap<(&str, u32, u64), (u64, usize)> = HashMap::new();
    for (i, op) in log.iter().enumerate() {
        if !op.accepted {
            continue;
        }
        let lease = op.lease.as_str();
        let (max, at) = max_token.get(lease).copied().unwrap_or((0, usize::MAX));
        if op.token < max {
            out.push(Anomaly::new(
                "register",
                Some(lease),
                format!(
                    "stale update: register op #{i} by worker {} with token {} accepted after \
                     op #{at} with token {max}",
                    op.worker, op.token
                ),
                vec![i as u64, at as u64],
            ));
        } else {
            max_token.insert(lease, (op.token, i));
        }
        match op.kind {
            RegOpKind::Read => {
                last_read.insert((lease, op.worker, op.token), (op.value, i));
            }
            RegOpKind::Write => {
                if let Some((read, r)) = last_read.remove(&(lease, op.worker, op.token)) {
                    if op.before != read {
                        out.push(Anomaly::new(
                            "register",
                            Some(lease),
                            format!(
                                "lost update: worker {} (token {}) read {read} at #{r} and wrote \
                                 {} at #{i}, but the counter was {} by then: the write(s) between \
                                 were overwritten",
                                op.worker, op.token, op.value, op.before
                            ),
                            vec![r as u64, i as u64],
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RunClock;
    use crate::register::FencedRegister;

    #[test]
    fn serial_increments_pass() {
        let r = FencedRegister::new(RunClock::start(), true);
        for (w, t) in [(1, 5), (2, 9), (1, 12)] {
            let v = r.read(w, "a", t).expect("read");
            r.write(w, "a", t, v + 1).expect("write");
        }
        assert!(check(&r.log()).is_empty());
    }

    #[test]
    fn a_paused_holder_without_fencing_is_caught() {
        let r = FencedRegister::new(RunClock::start(), false);
        let v_old = r.read(1, "a", 5).expect("read");
        // Worker 1 pauses; worker 2 takes over and increments.
        let v = r.read(2, "a", 9).expect("read");
        r.write(2, "a", 9, v + 1).expect("write");
        // Worker 1 wakes up and writes its stale increment.
        r.write(1, "a", 5, v_old + 1).expect("unfenced write");
        let a = check(&r.log());
        assert!(
            a.iter().any(|a| a.explanation.starts_with("stale update")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|a| a.explanation.starts_with("lost update")),
            "{a:?}"
        );
    }

    #[test]
    fn with_fencing_the_same_schedule_is_refused_and_clean() {
        let r = FencedRegister::new(RunClock::start(), true);
        let v_old = r.read(1, "a", 5).expect("read");
        let v = r.read(2, "a", 9).expect("read");
        r.write(2, "a", 9, v + 1).expect("write");
        assert!(r.write(1, "a", 5, v_old + 1).is_err());
        assert!(check(&r.log()).is_empty());
    }
}
