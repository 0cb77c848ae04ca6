//! Explaining a violation: the deepest configuration the search reached,
//! rendered with the model state there, the last ops linearized on the way
//! and every candidate with the model's reason for refusing it. Only
//! reports use this; nothing here changes a verdict.

use super::model::{step, Refusal, State, Tok};
use super::prepare::Names;
use super::search::{Cand, Search};
use super::Verdict;
use crate::history::{secs, Lost, Nanos, Op, OpKind, Outcome};
use std::collections::HashSet;
use std::fmt::Write as _;

/// How many recently linearized ops a violation report shows.
pub(super) const RECENT_OPS: usize = 8;

/// The deepest configuration reached: where a violation is explained.
#[derive(Debug, Clone)]
pub(super) struct Deepest {
    pub(super) count: usize,
    pub(super) at_step: u64,
    pub(super) state: State,
    pub(super) frontier: usize,
    pub(super) above: Vec<usize>,
    pub(super) opt_bits: Vec<u64>,
    pub(super) recent: Vec<Cand>,
}

impl Names<'_> {
    fn token(&self, t: Tok) -> String {
        match t {
            Tok::Known(k) => k.to_string(),
            Tok::Unknown { gt } => format!("unknown (> {gt})"),
        }
    }

    fn state(&self, s: &State) -> String {
        if !s.exists {
            return match s.tomb {
                Some(h) => format!(
                    "the lease does not exist; a delete may have left a tombstone of {}'s \
                     tenure (creates may be refused as held by {}); highest token granted so \
                     far {}",
                    self.name(h),
                    self.name(h),
                    s.max_token
                ),
                None => format!(
                    "the lease does not exist, with no tombstone; highest token granted so far {}",
                    s.max_token
                ),
            };
        }
        let holder = match s.holder {
            Some(h) => format!(
                "held by {} with token {}",
                self.name(h),
                self.token(s.token)
            ),
            None => "no holder".to_string(),
        };
        let marked = if s.marked { ", recorded expired" } else { "" };
        format!(
            "{holder}{marked}; highest token granted so far {}",
            s.max_token
        )
    }

    fn refusal(&self, s: &State, r: Refusal) -> String {
        let current = match s.holder {
            Some(h) => format!(
                "lease is held by {} with token {}",
                self.name(h),
                self.token(s.token)
            ),
            None if s.exists => "lease has no holder".to_string(),
            None => "the lease does not exist".to_string(),
        };
        match r {
            Refusal::Impossible => "this operation cannot give this answer".to_string(),
            Refusal::Missing => "the lease does not exist".to_string(),
            Refusal::Exists => "the lease exists".to_string(),
            Refusal::Holder => current,
            Refusal::NamesSelf => "the answer names the caller itself as the other holder".to_string(),
            Refusal::NoTombstone => match s.tomb {
                Some(h) => format!(
                    "the lease does not exist, and only {} (whose deleted tenure may have left a \
                     tombstone) can be named as holder by a refused create",
                    self.name(h)
                ),
                None => "the lease does not exist, and no delete of a held lease left a \
                         tombstone that could refuse a create"
                    .to_string(),
            },
            Refusal::Token(t) => format!("{current}, not {t}"),
            Refusal::NotNewer(t) => format!(
                "a new tenure's token {t} must exceed every token granted before (highest {}, current {})",
                s.max_token,
                self.token(s.token)
            ),
            Refusal::Marked => format!("{current}, and that tenure was recorded expired"),
            Refusal::StaleIsOwn => "a stale-token answer names the caller's own token".to_string(),
            Refusal::ReleasedView => {
                "a lease with no holder reads token 0 and not expired".to_string()
            }
        }
    }
}

/// Formats a recorded op for reports, e.g. `op 12 worker 3
/// renew(holder=w3-0, token=57) -> renewed [1.000000s, 1.002000s]`.
pub(super) fn describe(op: &Op) -> String {
    let call = match &op.kind {
        OpKind::Acquire { holder, .. } => format!("acquire(holder={holder})"),
        OpKind::Renew { holder, token } => format!("renew(holder={holder}, token={token})"),
        OpKind::Release { holder, token } => format!("release(holder={holder}, token={token})"),
        OpKind::Get => "get()".to_string(),
        OpKind::Put {
            holder,
            base,
            tenure,
            ..
        } => format!(
            "put(holder={}, resourceVersion={base}, tenure={tenure})",
            holder.as_deref().unwrap_or("\"\"")
        ),
        OpKind::Delete { base } => match base {
            Some(rv) => format!("delete(resourceVersion={rv})"),
            None => "delete()".to_string(),
        },
    };
    let answer = match &op.outcome {
        Outcome::Acquired { token, newly } => {
            format!("acquired(token={token}, newly={newly})")
        }
        Outcome::Held { holder } => format!("held(by={holder})"),
        Outcome::Renewed => "renewed".to_string(),
        Outcome::Released => "released".to_string(),
        Outcome::Lost(Lost::NoHolder) => "lost(no holder)".to_string(),
        Outcome::Lost(Lost::OtherHolder { holder }) => format!("lost(other holder {holder})"),
        Outcome::Lost(Lost::StaleToken { current }) => {
            format!("lost(stale token, current {current})")
        }
        Outcome::Lost(Lost::Expired) => "lost(expired)".to_string(),
        Outcome::Read(v) => format!(
            "read(holder={}, token={}, expired={})",
            v.holder.as_deref().unwrap_or("none"),
            v.token,
            v.expired
        ),
        Outcome::Put { view, created } => format!(
            "put(holder={}, token={}, revision={}{})",
            view.holder.as_deref().unwrap_or("none"),
            view.token,
            op.revision.map_or("?".to_string(), |r| r.to_string()),
            if *created { ", created" } else { "" }
        ),
        Outcome::Deleted(v) => format!(
            "deleted(was holder={}, token={}, expired={})",
            v.holder.as_deref().unwrap_or("none"),
            v.token,
            v.expired
        ),
        Outcome::Conflict => "conflict".to_string(),
        Outcome::AlreadyExists => "already exists".to_string(),
        Outcome::NotFound => "not found".to_string(),
        Outcome::Failed { code, .. } => format!("failed({code})"),
        Outcome::Unknown { code, .. } => format!("unknown({code})"),
    };
    let complete = match op.effective_complete() {
        Nanos::MAX => "never".to_string(),
        t => format!("{:.6}s", secs(t)),
    };
    format!(
        "op {} worker {} {call} -> {answer} [{:.6}s, {complete}]",
        op.id,
        op.worker,
        secs(op.invoke)
    )
}

impl Search<'_> {
    /// Explains the violation from the deepest configuration reached: the
    /// search is exhausted, so every candidate there led nowhere.
    pub(super) fn violation(mut self) -> Verdict {
        let Some(d) = self.deepest.take() else {
            // Unreachable: the root frame always records a deepest point.
            return Verdict::Violation {
                explanation: "no linearization exists".to_string(),
                ops: Vec::new(),
            };
        };
        // Restore the deepest configuration to list its candidates.
        self.lin_req.iter_mut().for_each(|l| *l = false);
        for &i in &d.above {
            self.lin_req[i] = true;
        }
        self.state = d.state;
        self.frontier = d.frontier;
        self.above = d.above.clone();
        self.opt_bits = d.opt_bits.clone();
        let mut cands = Vec::new();
        let first = self.collect_candidates(&mut cands);

        let mut ids = Vec::new();
        let mut text = String::new();
        let lease = self.ops.first().map_or("?", |op| op.lease.as_str());
        let optional_done: u32 = d.opt_bits.iter().map(|w| w.count_ones()).sum();
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "lease {lease:?}: no linearization of {} ops ({} required, {} optional unknown \
             writes, {} ignored: failed ops, unknown reads and unknown renews)",
            self.ops.len(),
            self.req.len(),
            self.opt.len(),
            self.ignored
        );
        let _ = writeln!(
            text,
            "longest linearizable prefix: {} of {} required ops (and {optional_done} optional), \
             first reached at search step {} of {}",
            d.count,
            self.req.len(),
            d.at_step,
            self.steps
        );
        let _ = writeln!(text, "model state there: {}", self.names.state(&d.state));
        if !d.recent.is_empty() {
            let _ = writeln!(text, "last ops linearized on the way there (oldest first):");
            for &c in &d.recent {
                let op = &self.ops[self.entry(c).op];
                ids.push(op.id);
                let _ = writeln!(text, "  {}", describe(op));
            }
        }
        match first {
            Some(f) => {
                let op = &self.ops[self.req[f].op];
                let _ = writeln!(
                    text,
                    "candidates next (ops invoked by the time op {} completed at {:.6}s), none of \
                     which leads to a linearization:",
                    op.id,
                    secs(self.req[f].complete)
                );
            }
            None => {
                let _ = writeln!(text, "candidates next:");
            }
        }
        for &c in &cands {
            let e = self.entry(c);
            let op = &self.ops[e.op];
            ids.push(op.id);
            let optional = if matches!(c, Cand::Opt(_)) {
                " (optional)"
            } else {
                ""
            };
            let verdict = match step(&d.state, &e.effect) {
                Err(r) => format!("refused: {}", self.names.refusal(&d.state, r)),
                Ok(next) if next == d.state => "allowed, but changes nothing here".to_string(),
                Ok(next) => format!(
                    "allowed (then {}), but no linearization follows",
                    self.names.state(&next)
                ),
            };
            let _ = writeln!(text, "  {}{optional}: {verdict}", describe(op));
        }
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(*id));
        Verdict::Violation {
            explanation: text,
            ops: ids,
        }
    }
}
