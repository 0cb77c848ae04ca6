//! The search: Wing & Gong's depth-first search over the operations that
//! may come next, as an explicit stack of frames with one mutable
//! configuration, and the candidates and pruning rules (1 to 3) that keep
//! it small. The memo and the explanation of a violation are in `memo` and
//! `explain`.

use super::explain::{Deepest, RECENT_OPS};
use super::memo::FastHasher;
use super::model::{step, Effect, HolderId, State};
use super::prepare::{Entry, Names, Role};
use super::Verdict;
use crate::history::{Nanos, Op};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// An op the search may linearize next: an index into the required or the
/// optional ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cand {
    Req(usize),
    Opt(usize),
}

/// How to undo the step that produced a frame's configuration.
#[derive(Debug, Clone, Copy)]
struct Undo {
    cand: Cand,
    prev_state: State,
    prev_frontier: usize,
}

impl Undo {
    /// The state before the step, if the step was an optional op.
    fn before_optional(self) -> Option<State> {
        matches!(self.cand, Cand::Opt(_)).then_some(self.prev_state)
    }
}

/// One level of the explicit DFS stack: the configuration reached by
/// `undo` (none for the root), and its candidates `cands[start..end]`, of
/// which those before `cursor` were tried.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    cursor: usize,
    end: usize,
    undo: Option<Undo>,
}

pub(super) struct Search<'a> {
    pub(super) ops: &'a [Op],
    pub(super) names: Names<'a>,
    /// Required ops, by invocation.
    pub(super) req: Vec<Entry>,
    /// Optional ops, by invocation.
    pub(super) opt: Vec<Entry>,
    /// For each optional op, the previous optional op with the same effect:
    /// only the earliest unlinearized one of each class is a candidate
    /// (pruning rule 3).
    opt_class_prev: Vec<Option<usize>>,
    /// For each holder that a required `Held` answer names, the last
    /// required op (index) to do so: while that op may be unlinearized, a
    /// tombstone of that holder may be needed (see
    /// [`Search::changes_needed_tombstone`]).
    tomb_named: HashMap<HolderId, usize>,
    pub(super) ignored: usize,

    // The current configuration.
    pub(super) state: State,
    pub(super) frontier: usize,
    /// Linearized required ops at or above the frontier, ascending.
    pub(super) above: Vec<usize>,
    pub(super) lin_req: Vec<bool>,
    pub(super) opt_bits: Vec<u64>,

    /// Visited configurations: for each fingerprint, the minimal sets of
    /// linearized optional ops it was visited with, concatenated (each set
    /// is `opt_bits.len()` words; with no optional ops, presence is enough).
    pub(super) memo: HashMap<u128, Box<[u64]>, BuildHasherDefault<FastHasher>>,
    frames: Vec<Frame>,
    cands: Vec<Cand>,
    /// Scratch buffers of [`Search::push_frame`], kept to avoid allocating.
    raw: Vec<Cand>,
    refused: Vec<Cand>,
    pub(super) steps: u64,
    budget: u64,
    pub(super) deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    pub(super) fn new(ops: &'a [Op], budget: u64) -> Self {
        let mut names = Names {
            ids: HashMap::new(),
            names: Vec::new(),
        };
        let mut req = Vec::new();
        let mut opt = Vec::new();
        let mut ignored = 0;
        for (i, op) in ops.iter().enumerate() {
            match names.role(op) {
                Role::Ignored => ignored += 1,
                Role::Required(effect) => req.push(Entry {
                    op: i,
                    invoke: op.invoke,
                    // A clock cannot run backwards; if a record says so,
                    // read it as an instant op rather than an empty interval.
                    complete: op.complete.max(op.invoke),
                    effect,
                }),
                Role::Optional(effect) => opt.push(Entry {
                    op: i,
                    invoke: op.invoke,
                    complete: Nanos::MAX,
                    effect,
                }),
            }
        }
        let order = |e: &Entry| (e.invoke, e.complete, ops[e.op].id, e.op);
        req.sort_by_key(order);
        opt.sort_by_key(order);
        let mut last_of_class: HashMap<Effect, usize> = HashMap::new();
        let opt_class_prev = opt
            .iter()
            .enumerate()
            .map(|(i, e)| last_of_class.insert(e.effect, i))
            .collect();
        let mut tomb_named = HashMap::new();
        for (i, e) in req.iter().enumerate() {
            if let Effect::Held { by, .. } | Effect::HeldBy { by, create: true } = e.effect {
                tomb_named.insert(by, i);
            }
        }
        let n_req = req.len();
        let opt_words = opt.len().div_ceil(64);
        Search {
            ops,
            names,
            req,
            opt,
            opt_class_prev,
            tomb_named,
            ignored,
            state: State::INITIAL,
            frontier: 0,
            above: Vec::new(),
            lin_req: vec![false; n_req],
            opt_bits: vec![0; opt_words],
            memo: HashMap::default(),
            frames: Vec::new(),
            cands: Vec::new(),
            raw: Vec::new(),
            refused: Vec::new(),
            steps: 0,
            budget,
            deepest: None,
        }
    }

    pub(super) fn run(mut self) -> Verdict {
        if self.req.is_empty() {
            return Verdict::Linearizable { steps: 0 };
        }
        self.visit(None);
        if let Err(undecided) = self.push_frame(None) {
            return undecided;
        }
        loop {
            let Some(top) = self.frames.last_mut() else {
                return self.violation();
            };
            if top.cursor == top.end {
                let frame = *top;
                self.frames.pop();
                self.cands.truncate(frame.start);
                if let Some(undo) = frame.undo {
                    self.undo(undo);
                }
                continue;
            }
            let cand = self.cands[top.cursor];
            top.cursor += 1;
            // The frame kept only candidates the model accepts here.
            let Ok(next) = step(&self.state, &self.entry(cand).effect) else {
                continue;
            };
            let undo = self.apply(cand, next);
            if self.frontier == self.req.len() {
                return Verdict::Linearizable { steps: self.steps };
            }
            if !self.visit(undo.before_optional()) {
                self.undo(undo);
                continue;
            }
            if let Err(undecided) = self.push_frame(Some(undo)) {
                return undecided;
            }
        }
    }

    pub(super) fn entry(&self, cand: Cand) -> &Entry {
        match cand {
            Cand::Req(i) => &self.req[i],
            Cand::Opt(i) => &self.opt[i],
        }
    }

    fn opt_linearized(&self, i: usize) -> bool {
        self.opt_bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Linearizes `cand` with the resulting state `next`.
    fn apply(&mut self, cand: Cand, next: State) -> Undo {
        let undo = Undo {
            cand,
            prev_state: self.state,
            prev_frontier: self.frontier,
        };
        self.state = next;
        match cand {
            Cand::Req(i) => {
                self.lin_req[i] = true;
                if i == self.frontier {
                    let n = self.req.len();
                    while self.frontier < n && self.lin_req[self.frontier] {
                        self.frontier += 1;
                    }
                    let passed = self.above.partition_point(|&j| j < self.frontier);
                    self.above.drain(..passed);
                } else {
                    let pos = self.above.partition_point(|&j| j < i);
                    self.above.insert(pos, i);
                }
            }
            Cand::Opt(i) => self.opt_bits[i / 64] |= 1 << (i % 64),
        }
        undo
    }

    fn undo(&mut self, undo: Undo) {
        self.state = undo.prev_state;
        match undo.cand {
            Cand::Req(i) => {
                self.lin_req[i] = false;
                if i == undo.prev_frontier {
                    // The frontier moved past `i` and past the ops above it
                    // that were linearized: they go back into `above`.
                    let passed = undo.prev_frontier + 1..self.frontier;
                    self.above.splice(0..0, passed);
                    self.frontier = undo.prev_frontier;
                } else if let Ok(pos) = self.above.binary_search(&i) {
                    self.above.remove(pos);
                }
            }
            Cand::Opt(i) => self.opt_bits[i / 64] &= !(1 << (i % 64)),
        }
    }

    /// Appends the candidates of the current configuration to `out`:
    /// required ops invoked no later than the earliest completion among the
    /// unlinearized required ops (nothing that must precede them is left),
    /// then the optional ops invoked by then. Returns the required op that
    /// completes first (the one bounding the candidates).
    pub(super) fn collect_candidates(&self, out: &mut Vec<Cand>) -> Option<usize> {
        // Scanning in invocation order: the bound only falls, and an op
        // invoked after it cannot complete before it, so the scan can stop.
        let mut bound = Nanos::MAX;
        let mut first = None;
        let mut end = self.frontier;
        while end < self.req.len() && self.req[end].invoke <= bound {
            if !self.lin_req[end] && self.req[end].complete < bound {
                bound = self.req[end].complete;
                first = Some(end);
            }
            end += 1;
        }
        for i in self.frontier..end {
            if !self.lin_req[i] && self.req[i].invoke <= bound {
                out.push(Cand::Req(i));
            }
        }
        for (i, e) in self.opt.iter().enumerate() {
            if e.invoke > bound {
                break;
            }
            let class_ready = self.opt_class_prev[i].is_none_or(|p| self.opt_linearized(p));
            if class_ready && !self.opt_linearized(i) {
                out.push(Cand::Opt(i));
            }
        }
        first
    }

    /// Counts one step, or says the budget is used up.
    fn tick(&mut self) -> Result<(), Verdict> {
        if self.steps >= self.budget {
            return Err(Verdict::Undecided { steps: self.steps });
        }
        self.steps += 1;
        Ok(())
    }

    /// Pushes the frame of the current configuration (reached by `undo`):
    /// evaluates every candidate once (one step each) and keeps those worth
    /// descending into, in the order to try them.
    fn push_frame(&mut self, undo: Option<Undo>) -> Result<(), Verdict> {
        let start = self.cands.len();
        let mut raw = std::mem::take(&mut self.raw);
        let mut refused = std::mem::take(&mut self.refused);
        let mut out = std::mem::take(&mut self.cands);
        raw.clear();
        refused.clear();
        self.collect_candidates(&mut raw);
        let before_optional = undo.and_then(Undo::before_optional);
        let result = self.select(&raw, before_optional, &mut refused, &mut out);
        self.raw = raw;
        self.refused = refused;
        self.cands = out;
        result?;
        self.frames.push(Frame {
            start,
            cursor: start,
            end: self.cands.len(),
            undo,
        });
        let count = self.frontier + self.above.len();
        if self.deepest.as_ref().is_none_or(|d| count > d.count) {
            let mut recent: Vec<Cand> = self
                .frames
                .iter()
                .rev()
                .filter_map(|f| f.undo.map(|u| u.cand))
                .take(RECENT_OPS)
                .collect();
            recent.reverse();
            self.deepest = Some(Deepest {
                count,
                at_step: self.steps,
                state: self.state,
                frontier: self.frontier,
                above: self.above.clone(),
                opt_bits: self.opt_bits.clone(),
                recent,
            });
        }
        Ok(())
    }

    /// Appends to `out` the candidates in `raw` worth trying here (the
    /// pruning rules are argued in the module docs):
    /// - required ops the model accepts, in invocation order; but only the
    ///   first accepted op that leaves the state unchanged, if there is one
    ///   (rule 1), and right after an optional op only those that need it
    ///   (rule 2);
    /// - then optional ops whose effect lets another candidate step that
    ///   cannot step now (rule 2).
    fn select(
        &mut self,
        raw: &[Cand],
        before_optional: Option<State>,
        refused: &mut Vec<Cand>,
        out: &mut Vec<Cand>,
    ) -> Result<(), Verdict> {
        let start = out.len();
        for &c in raw {
            if matches!(c, Cand::Opt(_)) {
                continue;
            }
            self.tick()?;
            let effect = self.entry(c).effect;
            match step(&self.state, &effect) {
                Err(_) => refused.push(c),
                Ok(_) if before_optional.is_some_and(|b| step(&b, &effect).is_ok()) => {}
                Ok(next) if next == self.state && effect.observer_when_unchanged() => {
                    out.truncate(start);
                    out.push(c);
                    return Ok(());
                }
                Ok(_) => out.push(c),
            }
        }
        let opt_start = out.len();
        for &c in raw {
            if matches!(c, Cand::Req(_)) {
                continue;
            }
            self.tick()?;
            match step(&self.state, &self.entry(c).effect) {
                Err(_) => refused.push(c),
                Ok(next) if next == self.state => {}
                Ok(_) => out.push(c),
            }
        }
        // Keep an optional op only if it enables a refused candidate, or
        // changes the tombstone the unknown Delete after it would leave to
        // one an answer may need (rule 2; only one unknown Delete is a
        // candidate at a time, rule 3).
        let delete = raw
            .iter()
            .copied()
            .find(|&c| matches!(c, Cand::Opt(_)) && self.entry(c).effect == Effect::DeleteMaybe);
        let mut kept = opt_start;
        for i in opt_start..out.len() {
            let c = out[i];
            let Ok(next) = step(&self.state, &self.entry(c).effect) else {
                continue;
            };
            let enables = refused
                .iter()
                .any(|&r| r != c && step(&next, &self.entry(r).effect).is_ok());
            if enables || (delete.is_some_and(|d| d != c) && self.changes_needed_tombstone(&next)) {
                out[kept] = c;
                kept += 1;
            }
        }
        out.truncate(kept);
        Ok(())
    }

    /// Whether an unknown Delete right after an optional op that led to
    /// `next` leaves a tombstone it would not leave now, of a holder that a
    /// required `Held` answer not yet linearized may name. The one case
    /// where an optional op may be needed only for another optional op
    /// that the state before it accepts too: an unknown Delete keeps the
    /// holder before it as the tombstone, so an op that changes the holder
    /// changes what the Delete leaves, and the create refused as held by
    /// that holder may come much later (after ops that need the Delete
    /// first, such as a `NotFound`), so it need not be a candidate now.
    /// Every other pair of optional ops commutes or the second erases the
    /// first (module docs, rule 2). Only a tombstone of someone is ever
    /// needed (a create succeeds whatever the tombstone), and only by a
    /// `Held` answer naming that holder: `tomb_named` over-approximates
    /// which of those may be left, which only costs search.
    fn changes_needed_tombstone(&self, next: &State) -> bool {
        let Ok(after) = step(next, &Effect::DeleteMaybe) else {
            return false;
        };
        let Some(h) = after.tomb else {
            return false;
        };
        let now = step(&self.state, &Effect::DeleteMaybe)
            .ok()
            .and_then(|s| s.tomb);
        now != Some(h) && self.tomb_named.get(&h).is_some_and(|&i| i >= self.frontier)
    }
}
