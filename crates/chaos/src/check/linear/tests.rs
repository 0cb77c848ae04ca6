//! Tests of the linearizability checker: hand-built histories that must
//! pass or fail, and random histories recorded from a simulated server
//! (every operation applied at an instant inside its interval), which must
//! pass.

use super::explain::describe;
use super::model::{step, Effect, State};
use super::prepare::{Names, Role};
use super::*;
use crate::history::{LeaseView, Lost, Nanos, OpKind, Outcome};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

const BUDGET: u64 = 1_000_000;

/// Builds a history with ids in insertion order.
#[derive(Default)]
struct History {
    ops: Vec<Op>,
}

impl History {
    fn add(
        &mut self,
        worker: u32,
        kind: OpKind,
        invoke: Nanos,
        complete: Nanos,
        outcome: Outcome,
    ) -> u64 {
        let id = self.ops.len() as u64;
        self.ops.push(Op {
            id,
            worker,
            lease: "l".to_string(),
            kind,
            invoke,
            complete,
            outcome,
            attempts: 1,
            revision: None,
            labels: None,
        });
        id
    }

    /// Adds an op with the revision its answer carried.
    fn add_rev(
        &mut self,
        worker: u32,
        kind: OpKind,
        invoke: Nanos,
        complete: Nanos,
        outcome: Outcome,
        revision: u64,
    ) -> u64 {
        let id = self.add(worker, kind, invoke, complete, outcome);
        self.ops[id as usize].revision = Some(revision);
        id
    }
}

fn acquire(h: &str) -> OpKind {
    OpKind::Acquire {
        holder: h.to_string(),
        duration_seconds: 5,
    }
}
fn renew(h: &str, token: u64) -> OpKind {
    OpKind::Renew {
        holder: h.to_string(),
        token,
    }
}
fn release(h: &str, token: u64) -> OpKind {
    OpKind::Release {
        holder: h.to_string(),
        token,
    }
}
fn acquired(token: u64, newly: bool) -> Outcome {
    Outcome::Acquired { token, newly }
}
fn held(h: &str) -> Outcome {
    Outcome::Held {
        holder: h.to_string(),
    }
}
fn read(holder: Option<&str>, token: u64, expired: bool) -> Outcome {
    Outcome::Read(LeaseView {
        holder: holder.map(str::to_string),
        token,
        expired,
    })
}
fn unknown() -> Outcome {
    Outcome::Unknown {
        code: "UNAVAILABLE".to_string(),
        message: "timeout".to_string(),
    }
}
fn failed() -> Outcome {
    Outcome::Failed {
        code: "UNAVAILABLE".to_string(),
        message: "no leader".to_string(),
    }
}

fn assert_linearizable(ops: &[Op]) -> u64 {
    match check_lease(ops, BUDGET) {
        Verdict::Linearizable { steps } => steps,
        other => panic!("expected linearizable, got {other}"),
    }
}

fn assert_violation(ops: &[Op]) -> (String, Vec<u64>) {
    match check_lease(ops, BUDGET) {
        Verdict::Violation { explanation, ops } => {
            eprintln!("{explanation}");
            (explanation, ops)
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check_lease(&[], 10), Verdict::Linearizable { steps: 0 });
}

#[test]
fn sequential_history_is_linearizable() {
    let mut h = History::default();
    h.add(0, OpKind::Get, 0, 1, Outcome::NotFound);
    h.add(0, renew("a", 1), 2, 3, Outcome::NotFound);
    h.add(0, acquire("a"), 4, 5, acquired(3, true));
    h.add(0, acquire("a"), 6, 7, acquired(3, false));
    h.add(0, renew("a", 3), 8, 9, Outcome::Renewed);
    h.add(1, acquire("b"), 10, 11, held("a"));
    h.add(
        1,
        renew("b", 3),
        12,
        13,
        Outcome::Lost(Lost::OtherHolder {
            holder: "a".to_string(),
        }),
    );
    h.add(0, OpKind::Get, 14, 15, read(Some("a"), 3, false));
    h.add(0, release("a", 3), 16, 17, Outcome::Released);
    h.add(0, OpKind::Get, 18, 19, read(None, 0, false));
    h.add(0, renew("a", 3), 20, 21, Outcome::Lost(Lost::NoHolder));
    h.add(1, acquire("b"), 22, 23, acquired(9, true));
    h.add(
        0,
        release("a", 3),
        24,
        25,
        Outcome::Lost(Lost::OtherHolder {
            holder: "b".to_string(),
        }),
    );
    h.add(1, acquire("b"), 26, 27, acquired(12, true));
    h.add(
        1,
        renew("b", 9),
        28,
        29,
        Outcome::Lost(Lost::StaleToken { current: 12 }),
    );
    assert_linearizable(&h.ops);
}

#[test]
fn real_time_order_is_enforced() {
    // The renew completed before the acquire that granted token 3 was
    // invoked: nothing was held when it was applied.
    let mut h = History::default();
    h.add(0, renew("a", 3), 0, 1, Outcome::Renewed);
    h.add(0, acquire("a"), 2, 3, acquired(3, true));
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("0 of 2 required"), "{text}");
    assert!(text.contains("refused: the lease does not exist"), "{text}");
    assert_eq!(ids, vec![0]);
    // Overlapping, the same two ops are fine.
    h.ops[0].complete = 10;
    assert_linearizable(&h.ops);
}

#[test]
fn concurrent_acquires_one_wins() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 10, acquired(5, true));
    h.add(1, acquire("b"), 1, 9, held("a"));
    h.add(2, acquire("c"), 2, 8, held("a"));
    h.add(1, OpKind::Get, 11, 12, read(Some("a"), 5, false));
    assert_linearizable(&h.ops);

    // "held by a" answered before a's acquire was even invoked.
    let mut h = History::default();
    h.add(1, acquire("b"), 0, 1, held("a"));
    h.add(0, acquire("a"), 2, 10, acquired(5, true));
    assert_violation(&h.ops);
}

#[test]
fn overlapping_new_tenures_order_follows_tokens() {
    // Two new tenures whose intervals overlap: only the order a (5) then
    // b (7) gives increasing tokens, and the later read agrees with it.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 10, acquired(5, true));
    h.add(1, acquire("b"), 2, 12, acquired(7, true));
    h.add(2, OpKind::Get, 13, 14, read(Some("b"), 7, false));
    assert_linearizable(&h.ops);

    // The same with the tokens swapped: b then a, and the read says a.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 10, acquired(7, true));
    h.add(1, acquire("b"), 2, 12, acquired(5, true));
    h.add(2, OpKind::Get, 13, 14, read(Some("a"), 7, false));
    assert_linearizable(&h.ops);

    // Tokens force a then b, but the read after both says a is current.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 10, acquired(5, true));
    h.add(1, acquire("b"), 2, 12, acquired(7, true));
    h.add(2, OpKind::Get, 13, 14, read(Some("a"), 5, false));
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("2 of 3 required"), "{text}");
    assert!(text.contains("lease is held by b with token 7"), "{text}");
    assert!(ids.contains(&2), "{ids:?}");
}

#[test]
fn token_going_backwards_is_a_violation() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(9, true));
    h.add(0, release("a", 9), 2, 3, Outcome::Released);
    h.add(1, acquire("b"), 4, 5, acquired(4, true));
    let (text, ids) = assert_violation(&h.ops);
    assert!(
        text.contains("must exceed every token granted before"),
        "{text}"
    );
    assert!(ids.contains(&2), "{ids:?}");
}

#[test]
fn stale_read_after_release_is_a_violation() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(0, release("a", 3), 2, 3, Outcome::Released);
    h.add(1, OpKind::Get, 4, 5, read(Some("a"), 3, false));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("model state there: no holder"), "{text}");
    // Concurrent with the release, the same read is fine.
    h.ops[2].invoke = 2;
    assert_linearizable(&h.ops);
}

#[test]
fn renew_after_read_showed_expired_is_a_violation() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(1, OpKind::Get, 2, 3, read(Some("a"), 3, true));
    h.add(0, renew("a", 3), 4, 5, Outcome::Renewed);
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("recorded expired"), "{text}");

    // A read that is not expired after one that is: also a violation.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(1, OpKind::Get, 2, 3, read(Some("a"), 3, true));
    h.add(1, OpKind::Get, 4, 5, read(Some("a"), 3, false));
    assert_violation(&h.ops);

    // A new tenure, or a release, clears the mark.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(1, OpKind::Get, 2, 3, read(Some("a"), 3, true));
    h.add(0, renew("a", 3), 4, 5, Outcome::Lost(Lost::Expired));
    h.add(0, acquire("a"), 6, 7, acquired(8, true));
    h.add(0, renew("a", 8), 8, 9, Outcome::Renewed);
    h.add(1, OpKind::Get, 10, 11, read(Some("a"), 8, false));
    assert_linearizable(&h.ops);
}

#[test]
fn renew_after_lost_expired_is_linearizable() {
    // Expiry is time-based and a leader change can extend a tenure
    // again: Lost(Expired) does not mark the tenure.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(0, renew("a", 3), 2, 3, Outcome::Lost(Lost::Expired));
    h.add(0, renew("a", 3), 4, 5, Outcome::Renewed);
    h.add(0, acquire("a"), 6, 7, acquired(3, false));
    assert_linearizable(&h.ops);
}

#[test]
fn unknown_acquire_explains_a_later_read() {
    let mut h = History::default();
    h.add(0, acquire("b"), 0, 1, acquired(10, true));
    h.add(0, release("b", 10), 2, 3, Outcome::Released);
    h.add(1, acquire("a"), 4, 5, unknown());
    h.add(2, OpKind::Get, 100, 101, read(Some("a"), 42, false));
    h.add(1, renew("a", 42), 102, 103, Outcome::Renewed);
    assert_linearizable(&h.ops);

    // Without the unknown acquire nobody granted token 42.
    let mut without = h.ops.clone();
    without.remove(2);
    assert_violation(&without);
}

#[test]
fn unknown_acquire_with_conflicting_effect_is_a_violation() {
    // Invoked after token 10 was granted, the unknown acquire's token
    // must exceed 10: a read of token 8 cannot be explained by it.
    let mut h = History::default();
    h.add(0, acquire("b"), 0, 1, acquired(10, true));
    h.add(1, acquire("a"), 2, 3, unknown());
    h.add(2, OpKind::Get, 5, 6, read(Some("a"), 8, false));
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("(optional)"), "{text}");
    assert!(ids.contains(&1), "{ids:?}");

    // Nor can a read that completed before the acquire was invoked.
    let mut h = History::default();
    h.add(1, acquire("a"), 20, 21, unknown());
    h.add(2, OpKind::Get, 10, 11, read(Some("a"), 42, false));
    assert_violation(&h.ops);

    // Once an answer names the unknown token, it is known.
    let mut h = History::default();
    h.add(1, acquire("a"), 0, 1, unknown());
    h.add(2, OpKind::Get, 10, 11, read(Some("a"), 42, false));
    h.add(2, OpKind::Get, 12, 13, read(Some("a"), 43, false));
    assert_violation(&h.ops);
}

#[test]
fn unknown_release_explains_a_later_no_holder() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(0, release("a", 3), 2, 3, unknown());
    h.add(0, renew("a", 3), 50, 51, Outcome::Lost(Lost::NoHolder));
    assert_linearizable(&h.ops);

    // A release of another token cannot explain it.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(0, release("a", 2), 2, 3, unknown());
    h.add(0, renew("a", 3), 50, 51, Outcome::Lost(Lost::NoHolder));
    assert_violation(&h.ops);
}

#[test]
fn failed_ops_and_unknown_renews_are_ignored() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(1, acquire("b"), 2, 3, failed());
    h.add(1, OpKind::Get, 4, 5, failed());
    h.add(0, renew("a", 99), 6, 7, unknown());
    h.add(1, OpKind::Get, 8, 9, read(Some("a"), 3, false));
    assert_linearizable(&h.ops);
}

#[test]
fn impossible_answer_is_a_violation() {
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, Outcome::NotFound);
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("cannot give this answer"), "{text}");
    assert_eq!(ids, vec![0]);
}

#[test]
fn instant_and_identical_intervals() {
    // Zero-length intervals and ops sharing an instant are concurrent.
    let mut h = History::default();
    h.add(0, acquire("a"), 5, 5, acquired(3, true));
    h.add(1, OpKind::Get, 5, 5, read(Some("a"), 3, false));
    h.add(2, OpKind::Get, 5, 5, read(None, 0, false));
    h.add(0, release("a", 3), 5, 5, Outcome::Released);
    assert_linearizable(&h.ops);
}

#[test]
fn search_backtracks_through_concurrent_reads() {
    // Greedy (by invocation) takes the acquire first, which the first
    // read cannot follow: the search must put the read first.
    let mut h = History::default();
    h.add(0, acquire("a"), 0, 1, acquired(3, true));
    h.add(0, acquire("a"), 10, 20, acquired(7, true));
    h.add(1, OpKind::Get, 11, 21, read(Some("a"), 3, false));
    h.add(2, OpKind::Get, 12, 22, read(Some("a"), 7, false));
    h.add(3, OpKind::Get, 13, 23, read(Some("a"), 3, false));
    h.add(1, OpKind::Get, 24, 25, read(Some("a"), 7, false));
    assert_linearizable(&h.ops);
    // The third read cannot see 3 after the second saw 7 if it started
    // after the second completed.
    h.ops[4].invoke = 23;
    h.ops[4].complete = 23;
    assert_violation(&h.ops);
}

// -- Randomized histories ------------------------------------------------

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The lease as the server keeps it, with time reduced to flags set by a
/// ticking clock: `lapsed` (the tenure's time ran out) and `marked` (the
/// leader recorded it), its resourceVersion `rv`, and the tombstone `tomb`
/// (the holder of a deleted lease whose tenure had not lapsed, until it
/// does).
#[derive(Default)]
struct Server {
    exists: bool,
    holder: Option<String>,
    token: u64,
    lapsed: bool,
    marked: bool,
    revision: u64,
    rv: u64,
    /// Recording an expiry is a change with its own revision (as the
    /// leader's Expire command is); off for the histories of the tests
    /// written before Put and Delete, to keep them as they were.
    expire_is_a_change: bool,
    /// While the lease is missing: the deleted lease's holder, whose
    /// tenure may still be live. Every create is refused as held by it.
    tomb: Option<String>,
}

impl Server {
    fn view(&self) -> LeaseView {
        LeaseView {
            holder: self.holder.clone(),
            token: self.token,
            expired: self.marked,
        }
    }

    /// A new tenure of `holder` at `rev`.
    fn grant(&mut self, holder: &str, rev: u64) {
        self.exists = true;
        self.holder = Some(holder.to_string());
        self.token = rev;
        self.lapsed = false;
        self.marked = false;
        self.rv = rev;
    }

    /// Applies `kind`; the outcome and, for a change, its revision.
    fn apply(&mut self, kind: &OpKind) -> (Outcome, Option<u64>) {
        self.revision += 1;
        let rev = self.revision;
        if let (false, Some(t), OpKind::Acquire { .. } | OpKind::Put { base: 0, .. }) =
            (self.exists, &self.tomb, kind)
        {
            // A create while the tombstone lives, whoever it names.
            return (held(t), None);
        }
        let outcome = match kind {
            OpKind::Acquire { holder, .. } => {
                let grant = match &self.holder {
                    None => true,
                    Some(h) if h == holder => self.lapsed || self.marked,
                    Some(_) if self.lapsed => true,
                    Some(h) => return (held(h), None),
                };
                if !grant {
                    self.rv = rev;
                    return (acquired(self.token, false), Some(rev));
                }
                self.grant(holder, rev);
                acquired(rev, true)
            }
            OpKind::Renew { holder, token } => {
                if let Err(lost) = self.check_tenure(holder, *token) {
                    return (lost, None);
                }
                if self.lapsed || self.marked {
                    return (Outcome::Lost(Lost::Expired), None);
                }
                self.rv = rev;
                Outcome::Renewed
            }
            OpKind::Release { holder, token } => {
                if let Err(lost) = self.check_tenure(holder, *token) {
                    return (lost, None);
                }
                self.release(rev);
                Outcome::Released
            }
            OpKind::Get if !self.exists => return (Outcome::NotFound, None),
            OpKind::Get => {
                return (
                    read(self.holder.as_deref(), self.token, self.marked),
                    Some(self.rv),
                )
            }
            OpKind::Put { holder, base, .. } => {
                if !self.exists {
                    if *base != 0 {
                        return (Outcome::NotFound, None);
                    }
                    match holder {
                        Some(h) => self.grant(h, rev),
                        None => {
                            self.exists = true;
                            self.release(rev);
                        }
                    }
                    return (
                        Outcome::Put {
                            view: self.view(),
                            created: true,
                        },
                        Some(rev),
                    );
                }
                if *base == 0 {
                    return (Outcome::AlreadyExists, None);
                }
                if *base != self.rv {
                    return (Outcome::Conflict, None);
                }
                let live = !(self.lapsed || self.marked);
                match (&self.holder, holder) {
                    (_, None) => self.release(rev),
                    (Some(c), Some(h)) if c == h && live => self.rv = rev,
                    (Some(c), Some(h)) if c != h && !self.lapsed => {
                        return (held(c), None);
                    }
                    (_, Some(h)) => self.grant(h, rev),
                }
                Outcome::Put {
                    view: self.view(),
                    created: false,
                }
            }
            OpKind::Delete { base } => {
                if !self.exists {
                    return (Outcome::NotFound, None);
                }
                if base.is_some_and(|b| b != self.rv) {
                    return (Outcome::Conflict, None);
                }
                // A held lease is deleted too; a tenure that may still be
                // live leaves a tombstone.
                let tomb = self.holder.clone().filter(|_| !self.lapsed);
                let was = self.view();
                *self = Server {
                    revision: self.revision,
                    expire_is_a_change: self.expire_is_a_change,
                    tomb,
                    ..Server::default()
                };
                Outcome::Deleted(was)
            }
        };
        (outcome, Some(rev))
    }

    fn release(&mut self, rev: u64) {
        self.holder = None;
        self.token = 0;
        self.lapsed = false;
        self.marked = false;
        self.rv = rev;
    }

    fn check_tenure(&self, holder: &str, token: u64) -> Result<(), Outcome> {
        match &self.holder {
            _ if !self.exists => Err(Outcome::NotFound),
            None => Err(Outcome::Lost(Lost::NoHolder)),
            Some(h) if h != holder => Err(Outcome::Lost(Lost::OtherHolder { holder: h.clone() })),
            Some(_) if self.token != token => Err(Outcome::Lost(Lost::StaleToken {
                current: self.token,
            })),
            Some(_) => Ok(()),
        }
    }

    fn tick(&mut self, rng: &mut Rng) {
        if self.tomb.is_some() && rng.chance(20) {
            self.tomb = None;
        }
        if self.holder.is_some() {
            if rng.chance(20) {
                self.lapsed = true;
            }
            if self.lapsed && !self.marked && rng.chance(30) {
                self.marked = true;
                if self.expire_is_a_change {
                    self.revision += 1;
                    self.rv = self.revision;
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Invoke(usize),
    Apply(usize),
    Tick,
}

fn put(h: Option<&str>, base: u64) -> OpKind {
    OpKind::Put {
        holder: h.map(str::to_string),
        base,
        tenure: 0,
        base_labels: None,
        skew_ms: 0,
    }
}

/// A history of `n` ops by `workers` concurrent workers, produced by
/// applying each op to [`Server`] at a random instant inside its
/// interval: linearizable by construction. After the first third of the
/// run `unknown_percent` of the writes end Unknown (at most `max_unknown`
/// acquires, releases, puts and deletes; their effect lands, or not, at
/// a random time possibly after the client gave up) and a few reads
/// fail. `put_percent` of the ops are Kubernetes-style Puts (creates,
/// compare-and-swap updates at the resourceVersion current when they
/// are invoked, which may be stale by the time they apply, releases)
/// and Deletes; with 0 the history is as it was before they existed.
fn random_history(
    seed: u64,
    n: usize,
    workers: usize,
    max_unknown: usize,
    unknown_percent: u64,
) -> Vec<Op> {
    random_history_with_puts(seed, n, workers, max_unknown, unknown_percent, 0)
}

fn random_history_with_puts(
    seed: u64,
    n: usize,
    workers: usize,
    max_unknown: usize,
    unknown_percent: u64,
    put_percent: u64,
) -> Vec<Op> {
    const MS: u64 = 1_000_000;
    let mut rng = Rng(seed);
    let mut server = Server {
        expire_is_a_change: put_percent > 0,
        ..Server::default()
    };
    let mut ops: Vec<Op> = Vec::new();
    // Workers 0 and `workers - 1` share an identity.
    let holders: Vec<String> = (0..workers)
        .map(|w| format!("w{}-0", w % (workers - 1).max(1)))
        .collect();
    let mut tokens: Vec<Option<u64>> = vec![None; workers];
    let mut last_token: Vec<u64> = vec![1; workers];
    let mut unknowns = 0;
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |q: &mut BinaryHeap<_>, t: Nanos, e: Event| {
        seq += 1;
        q.push(Reverse((t, seq, e)));
    };
    for w in 0..workers {
        let t = rng.range(0, MS);
        schedule(&mut queue, t, Event::Invoke(w));
    }
    schedule(&mut queue, 3 * MS, Event::Tick);
    while let Some(Reverse((now, _, event))) = queue.pop() {
        match event {
            Event::Tick => {
                server.tick(&mut rng);
                if ops.len() < n {
                    schedule(&mut queue, now + rng.range(MS, 5 * MS), Event::Tick);
                }
            }
            Event::Invoke(w) => {
                if ops.len() >= n {
                    continue;
                }
                let h = holders[w].as_str();
                let kind = if put_percent > 0 && rng.chance(put_percent) {
                    let rv = server.rv;
                    match rng.below(100) {
                        0..40 => put(Some(h), rv),
                        40..55 => put(None, rv),
                        55..70 => put(Some(h), 0),
                        70..75 => put(None, 0),
                        75..88 => OpKind::Delete { base: Some(rv) },
                        _ => OpKind::Delete { base: None },
                    }
                } else {
                    match tokens[w] {
                        Some(t) => match rng.below(100) {
                            0..40 => renew(h, t),
                            40..55 => release(h, t),
                            55..70 => acquire(h),
                            _ => OpKind::Get,
                        },
                        None => match rng.below(100) {
                            0..45 => acquire(h),
                            45..75 => OpKind::Get,
                            75..90 => renew(h, last_token[w]),
                            _ => release(h, last_token[w]),
                        },
                    }
                };
                let id = ops.len();
                let late = id > n / 3;
                let mut op = Op {
                    id: id as u64,
                    worker: w as u32,
                    lease: "l".to_string(),
                    invoke: now,
                    complete: 0,
                    outcome: unknown(),
                    attempts: 1,
                    kind,
                    revision: None,
                    labels: None,
                };
                let is_get = op.kind == OpKind::Get;
                let optional = !matches!(op.kind, OpKind::Get | OpKind::Renew { .. });
                if late && is_get && rng.chance(2) {
                    op.outcome = failed();
                    op.complete = now + rng.range(1, 2 * MS);
                    schedule(
                        &mut queue,
                        op.complete + rng.below(MS / 2),
                        Event::Invoke(w),
                    );
                } else if late
                    && !is_get
                    && rng.chance(unknown_percent)
                    && (!optional || unknowns < max_unknown)
                {
                    unknowns += usize::from(optional);
                    op.complete = now + rng.range(2 * MS, 6 * MS);
                    tokens[w] = None;
                    schedule(
                        &mut queue,
                        op.complete + rng.below(MS / 2),
                        Event::Invoke(w),
                    );
                    if rng.chance(50) {
                        schedule(&mut queue, now + rng.range(1, 10 * MS), Event::Apply(id));
                    }
                } else {
                    schedule(&mut queue, now + rng.range(1, 2 * MS), Event::Apply(id));
                }
                ops.push(op);
            }
            Event::Apply(id) => {
                let (outcome, revision) = server.apply(&ops[id].kind);
                let op = &mut ops[id];
                if op.outcome.is_unknown() && op.complete != 0 {
                    // The effect of a write whose client gave up.
                    continue;
                }
                let w = op.worker as usize;
                match &outcome {
                    Outcome::Acquired { token, .. } => {
                        tokens[w] = Some(*token);
                        last_token[w] = *token;
                    }
                    Outcome::Put { view, .. } if view.holder.is_some() => {
                        tokens[w] = Some(view.token);
                        last_token[w] = view.token;
                    }
                    Outcome::Renewed
                    | Outcome::Read(_)
                    | Outcome::Conflict
                    | Outcome::AlreadyExists => {}
                    _ => tokens[w] = None,
                }
                op.outcome = outcome;
                op.revision = revision;
                op.complete = now + rng.range(1, 2 * MS);
                schedule(
                    &mut queue,
                    op.complete + rng.below(MS / 2),
                    Event::Invoke(w),
                );
            }
        }
    }
    ops
}

fn count(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
    ops.iter().filter(|op| f(op)).count()
}

#[test]
fn random_valid_history_is_linearizable_and_corruption_is_caught() {
    let n = 5_000;
    let mut ops = random_history(7, n, 6, 30, 1);
    // The history exercises what it should.
    assert_eq!(ops.len(), n);
    let optional = count(&ops, |op| {
        op.outcome.is_unknown()
            && matches!(op.kind, OpKind::Acquire { .. } | OpKind::Release { .. })
    });
    assert!(optional >= 5, "only {optional} unknown acquires/releases");
    assert!(
        count(&ops, |op| matches!(
            op.outcome,
            Outcome::Read(LeaseView { expired: true, .. })
        )) > 0
    );
    assert!(count(&ops, |op| op.outcome == Outcome::Lost(Lost::Expired)) > 0);
    assert!(count(&ops, |op| matches!(op.outcome, Outcome::Held { .. })) > 0);
    assert!(
        count(&ops, |op| matches!(
            op.outcome,
            Outcome::Acquired { newly: false, .. }
        )) > 0
    );
    // Shuffle: the checker must not rely on the order it is given.
    let mut rng = Rng(99);
    for i in (1..ops.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ops.swap(i, j);
    }

    let started = Instant::now();
    let verdict = check_lease(&ops, 200_000);
    eprintln!(
        "random history: {} ops ({optional} optional): {verdict} in {:?}",
        ops.len(),
        started.elapsed()
    );
    assert!(verdict.is_linearizable(), "{verdict}");

    // Corrupt one read that completed before any unknown write was
    // invoked (so only known tokens can be current) to show a token
    // nobody was granted.
    let first_unknown = ops
        .iter()
        .filter(|op| op.outcome.is_unknown())
        .map(|op| op.invoke)
        .min()
        .unwrap_or(Nanos::MAX);
    let max_token = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Acquired { token, .. } => Some(token),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut reads: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            ops[i].complete < first_unknown
                && matches!(&ops[i].outcome, Outcome::Read(v) if v.holder.is_some())
        })
        .collect();
    reads.sort_by_key(|&i| ops[i].invoke);
    let victim = reads[reads.len() / 2];
    let victim_id = ops[victim].id;
    if let Outcome::Read(view) = &mut ops[victim].outcome {
        view.token = max_token + 1000;
    }
    let started = Instant::now();
    let verdict = check_lease(&ops, 200_000);
    eprintln!(
        "corrupted history: {:?} in {:?}",
        verdict_kind(&verdict),
        started.elapsed()
    );
    match verdict {
        Verdict::Violation { explanation, ops } => {
            assert!(ops.contains(&victim_id), "{explanation}");
            assert!(
                explanation.contains(&format!("token={}", max_token + 1000)),
                "{explanation}"
            );
        }
        other => panic!("expected a violation, got {other}"),
    }
}

fn verdict_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Linearizable { .. } => "linearizable",
        Verdict::Violation { .. } => "violation",
        Verdict::Undecided { .. } => "undecided",
    }
}

#[test]
fn random_histories_with_many_seeds_are_linearizable() {
    for seed in 0..40 {
        let ops = random_history(seed, 600, 2 + (seed as usize % 9), 10, 1);
        let verdict = check_lease(&ops, 200_000);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

#[test]
fn large_history_at_full_concurrency() {
    let ops = random_history(11, 30_000, 10, 30, 1);
    let started = Instant::now();
    let verdict = check_lease(&ops, 2_000_000);
    eprintln!(
        "30k-op history, 10 workers: {verdict} in {:?}",
        started.elapsed()
    );
    assert!(verdict.is_linearizable(), "{verdict}");
}

#[test]
fn widened_intervals_stay_linearizable() {
    // Widening an interval only adds possible orders. Ops whose
    // intervals span thousands of others (a write retried through a
    // leader election) must not make the search or its keys blow up.
    for seed in 0..3u64 {
        let mut ops = random_history(seed, 10_000, 8, 30, 1);
        let mut rng = Rng(seed);
        for _ in 0..5 {
            let i = rng.range(3_000, 9_000) as usize;
            let earlier = ops[i - rng.range(500, 3_000) as usize].invoke;
            let later = ops[(i + rng.range(0, 1_000) as usize).min(ops.len() - 1)].complete;
            ops[i].invoke = earlier;
            ops[i].complete = ops[i].complete.max(later);
        }
        let verdict = check_lease(&ops, 1_000_000);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

#[test]
fn large_history_with_a_late_violation() {
    // Every unknown write is a candidate until the end: the search must
    // still refute the whole history quickly.
    let mut ops = random_history(12, 30_000, 10, 30, 1);
    let victim = (ops.len() * 9 / 10..ops.len())
        .find(|&i| matches!(ops[i].outcome, Outcome::Read(ref v) if v.holder.is_some()))
        .expect("a read near the end");
    let victim_id = ops[victim].id;
    if let Outcome::Read(view) = &mut ops[victim].outcome {
        view.holder = Some("nobody".to_string());
    }
    let started = Instant::now();
    let verdict = check_lease(&ops, 2_000_000);
    eprintln!(
        "30k-op history with a late bad read: {:?} in {:?}",
        verdict_kind(&verdict),
        started.elapsed()
    );
    match verdict {
        Verdict::Violation { explanation, ops } => {
            assert!(ops.contains(&victim_id), "{explanation}");
            assert!(explanation.contains("holder=nobody"), "{explanation}");
        }
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn budget_of_one_step_is_undecided() {
    let ops = random_history(3, 200, 4, 0, 1);
    assert_eq!(check_lease(&ops, 1), Verdict::Undecided { steps: 1 });
}

// -- Differential test against an exhaustive search -----------------------

/// Whether a linearization exists, by trying every order the interval
/// rule allows, remembering only failed (linearized sets, state): no
/// pruning, no symmetry, no frontier. For small histories only. Shares
/// only the model (`step`) with the checker.
fn brute_force(ops: &[Op]) -> bool {
    let mut names = Names {
        ids: HashMap::new(),
        names: Vec::new(),
    };
    let mut req = Vec::new();
    let mut opt = Vec::new();
    for op in ops {
        match names.role(op) {
            Role::Ignored => {}
            Role::Required(e) => req.push((op.invoke, op.complete.max(op.invoke), e)),
            Role::Optional(e) => opt.push((op.invoke, e)),
        }
    }
    type Failed = HashSet<(Vec<bool>, Vec<bool>, State)>;
    fn go(
        s: State,
        req: &[(Nanos, Nanos, Effect)],
        opt: &[(Nanos, Effect)],
        lin_req: &mut Vec<bool>,
        lin_opt: &mut Vec<bool>,
        failed: &mut Failed,
    ) -> bool {
        if failed.contains(&(lin_req.clone(), lin_opt.clone(), s)) {
            return false;
        }
        let Some(bound) = req
            .iter()
            .zip(lin_req.iter())
            .filter(|(_, l)| !**l)
            .map(|(r, _)| r.1)
            .min()
        else {
            return true;
        };
        for i in 0..req.len() {
            if lin_req[i] || req[i].0 > bound {
                continue;
            }
            if let Ok(n) = step(&s, &req[i].2) {
                lin_req[i] = true;
                let ok = go(n, req, opt, lin_req, lin_opt, failed);
                lin_req[i] = false;
                if ok {
                    return true;
                }
            }
        }
        for i in 0..opt.len() {
            if lin_opt[i] || opt[i].0 > bound {
                continue;
            }
            if let Ok(n) = step(&s, &opt[i].1) {
                lin_opt[i] = true;
                let ok = go(n, req, opt, lin_req, lin_opt, failed);
                lin_opt[i] = false;
                if ok {
                    return true;
                }
            }
        }
        failed.insert((lin_req.clone(), lin_opt.clone(), s));
        false
    }
    go(
        State::INITIAL,
        &req,
        &opt,
        &mut vec![false; req.len()],
        &mut vec![false; opt.len()],
        &mut HashSet::new(),
    )
}

/// Changes one op's answer to a nearby plausible one.
fn mutate(op: &mut Op, rng: &mut Rng) {
    let other = |rng: &mut Rng| format!("w{}-0", rng.below(3));
    let tok = |rng: &mut Rng| rng.below(12);
    op.outcome = match (&op.kind, rng.below(4)) {
        (_, 0) => Outcome::NotFound,
        (_, 1) if op.kind.is_write() => unknown(),
        (OpKind::Acquire { .. }, 1) => acquired(tok(rng), rng.chance(50)),
        (OpKind::Acquire { .. }, _) => match &op.outcome {
            Outcome::Acquired { token, newly } => match rng.below(3) {
                0 => acquired(*token, !newly),
                1 => acquired(token.saturating_sub(1), *newly),
                _ => held(&other(rng)),
            },
            _ => acquired(tok(rng), rng.chance(50)),
        },
        (OpKind::Renew { .. } | OpKind::Release { .. }, 2) => match rng.below(4) {
            0 => Outcome::Lost(Lost::NoHolder),
            1 => Outcome::Lost(Lost::OtherHolder { holder: other(rng) }),
            2 => Outcome::Lost(Lost::StaleToken { current: tok(rng) }),
            _ => Outcome::Lost(Lost::Expired),
        },
        (OpKind::Renew { .. }, _) => Outcome::Renewed,
        (OpKind::Release { .. }, _) => Outcome::Released,
        (OpKind::Get, _) => match &op.outcome {
            Outcome::Read(v) => match rng.below(3) {
                0 => read(v.holder.as_deref(), v.token, !v.expired),
                1 => read(v.holder.as_deref(), tok(rng), v.expired),
                _ => read(None, 0, false),
            },
            _ => read(Some(&other(rng)), tok(rng), rng.chance(30)),
        },
        (OpKind::Put { holder, .. }, _) => match (&op.outcome, rng.below(6)) {
            (Outcome::Put { view, created }, 0) => Outcome::Put {
                view: view.clone(),
                created: !created,
            },
            (Outcome::Put { view, created }, 1) => {
                // Turn a renewal into a grant or the other way round.
                op.revision = Some(if op.revision == Some(view.token) {
                    view.token + 1
                } else {
                    view.token
                });
                Outcome::Put {
                    view: view.clone(),
                    created: *created,
                }
            }
            (_, 2) => Outcome::Conflict,
            (_, 3) => Outcome::AlreadyExists,
            (_, 4) => held(&other(rng)),
            _ => {
                let token = if holder.is_some() { tok(rng) } else { 0 };
                if rng.chance(50) {
                    op.revision = Some(token);
                }
                Outcome::Put {
                    view: LeaseView {
                        holder: holder.clone(),
                        token,
                        expired: false,
                    },
                    created: rng.chance(50),
                }
            }
        },
        (OpKind::Delete { .. }, _) => match rng.below(3) {
            0 => Outcome::Conflict,
            1 => held(&other(rng)),
            _ => Outcome::Deleted(LeaseView {
                holder: rng.chance(70).then(|| other(rng)),
                token: tok(rng),
                expired: rng.chance(30),
            }),
        },
    };
}

#[test]
fn agrees_with_exhaustive_search_on_small_histories() {
    let mut rng = Rng(2024);
    let (mut valid, mut invalid) = (0, 0);
    for seed in 0..20_000 {
        let n = 3 + (seed % 12) as usize;
        let workers = 2 + (seed % 5) as usize;
        let mut ops = random_history(seed, n, workers, 4, 25);
        // Unknown writes anywhere, not only late.
        for op in &mut ops {
            if op.kind.is_write() && rng.chance(20) {
                op.outcome = unknown();
            }
        }
        if rng.chance(60) {
            let i = rng.below(ops.len() as u64) as usize;
            mutate(&mut ops[i], &mut rng);
        }
        let expected = brute_force(&ops);
        let verdict = check_lease(&ops, 1_000_000);
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "seed {seed}: checker says {verdict}, exhaustive search says {expected}\n{}",
            ops.iter().map(describe).collect::<Vec<_>>().join("\n")
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    eprintln!("differential test: {valid} valid, {invalid} invalid histories");
    assert!(
        valid > 5_000 && invalid > 2_500,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn agrees_with_exhaustive_search_on_small_histories_with_puts_and_deletes() {
    let mut rng = Rng(2025);
    let (mut valid, mut invalid) = (0, 0);
    for seed in 0..20_000 {
        let n = 3 + (seed % 12) as usize;
        let workers = 2 + (seed % 5) as usize;
        let mut ops = random_history_with_puts(seed, n, workers, 4, 25, 50);
        for op in &mut ops {
            if op.kind.is_write() && rng.chance(20) {
                op.outcome = unknown();
            }
        }
        if rng.chance(60) {
            let i = rng.below(ops.len() as u64) as usize;
            mutate(&mut ops[i], &mut rng);
        }
        let expected = brute_force(&ops);
        let verdict = check_lease(&ops, 1_000_000);
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "seed {seed}: checker says {verdict}, exhaustive search says {expected}\n{}",
            ops.iter().map(describe).collect::<Vec<_>>().join("\n")
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    eprintln!("differential test with puts: {valid} valid, {invalid} invalid histories");
    assert!(
        valid > 5_000 && invalid > 2_500,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn random_histories_with_puts_and_deletes_are_linearizable() {
    let mut puts = 0;
    let mut deletes = 0;
    let mut optional = 0;
    for seed in 0..40 {
        let ops = random_history_with_puts(seed, 1_500, 2 + (seed as usize % 9), 10, 2, 35);
        puts += count(&ops, |op| matches!(op.outcome, Outcome::Put { .. }));
        deletes += count(&ops, |op| matches!(op.outcome, Outcome::Deleted(_)));
        optional += count(&ops, |op| {
            op.outcome.is_unknown() && matches!(op.kind, OpKind::Put { .. } | OpKind::Delete { .. })
        });
        let verdict = check_lease(&ops, 1_000_000);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
    assert!(
        puts > 1_000 && deletes > 100 && optional > 20,
        "{puts} puts, {deletes} deletes, {optional} unknown puts/deletes"
    );
}

fn put_ok(holder: Option<&str>, token: u64, created: bool) -> Outcome {
    Outcome::Put {
        view: LeaseView {
            holder: holder.map(str::to_string),
            token,
            expired: false,
        },
        created,
    }
}

fn put_as(h: &str, base: u64, tenure: u64) -> OpKind {
    OpKind::Put {
        holder: Some(h.to_string()),
        base,
        tenure,
        base_labels: None,
        skew_ms: -3_000,
    }
}

#[test]
fn kubernetes_style_history_is_linearizable() {
    // client-go: create, renew by compare-and-swap, another candidate
    // is refused, the holder releases by clearing the holder, the other
    // takes over; a deleter removes the released lease and an acquire
    // re-creates it with a higher token.
    let mut h = History::default();
    h.add(0, OpKind::Get, 0, 1, Outcome::NotFound);
    h.add_rev(
        0,
        put_as("k1", 0, 0),
        2,
        3,
        put_ok(Some("k1"), 10, true),
        10,
    );
    h.add_rev(
        0,
        put_as("k1", 10, 10),
        4,
        5,
        put_ok(Some("k1"), 10, false),
        12,
    );
    h.add(1, put_as("k2", 10, 0), 6, 7, Outcome::Conflict);
    h.add(1, put_as("k2", 12, 0), 8, 9, held("k1"));
    h.add(1, acquire("w"), 10, 11, held("k1"));
    h.add(
        2,
        OpKind::Delete { base: Some(10) },
        12,
        13,
        Outcome::Conflict,
    );
    h.add_rev(0, put(None, 12), 14, 15, put_ok(None, 0, false), 15);
    h.add_rev(
        1,
        put_as("k2", 15, 0),
        16,
        17,
        put_ok(Some("k2"), 17, false),
        17,
    );
    h.add_rev(1, put(None, 17), 18, 19, put_ok(None, 0, false), 19);
    h.add_rev(
        2,
        OpKind::Delete { base: Some(19) },
        20,
        21,
        Outcome::Deleted(LeaseView {
            holder: None,
            token: 0,
            expired: false,
        }),
        20,
    );
    h.add(0, renew("k1", 10), 22, 23, Outcome::NotFound);
    h.add(1, put_as("k2", 19, 0), 24, 25, Outcome::NotFound);
    h.add(0, acquire("w"), 26, 27, acquired(30, true));
    h.add(1, put_as("k2", 0, 0), 28, 29, Outcome::AlreadyExists);
    h.add(2, OpKind::Get, 30, 31, read(Some("w"), 30, false));
    assert_linearizable(&h.ops);
}

#[test]
fn kubernetes_style_violations_are_caught() {
    // A Put renewal of a tenure that another holder's grant replaced.
    let mut h = History::default();
    h.add_rev(
        0,
        put_as("k1", 0, 0),
        0,
        1,
        put_ok(Some("k1"), 10, true),
        10,
    );
    h.add(1, acquire("w"), 2, 3, acquired(12, true));
    h.add_rev(
        0,
        put_as("k1", 10, 10),
        4,
        5,
        put_ok(Some("k1"), 10, false),
        14,
    );
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("lease is held by w with token 12"), "{text}");
    assert!(ids.contains(&2), "{ids:?}");

    // A re-created lease must not reuse (or go below) an earlier token.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(0, release("w", 10), 2, 3, Outcome::Released);
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        4,
        5,
        Outcome::Deleted(LeaseView {
            holder: None,
            token: 0,
            expired: false,
        }),
        13,
    );
    h.add_rev(
        2,
        put_as("k1", 0, 0),
        6,
        7,
        put_ok(Some("k1"), 10, true),
        10,
    );
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("must exceed every token"), "{text}");

    // A deleted lease cannot be read back.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        Outcome::Deleted(LeaseView {
            holder: Some("w".into()),
            token: 10,
            expired: true,
        }),
        13,
    );
    h.add(2, OpKind::Get, 4, 5, read(Some("w"), 10, true));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("the lease does not exist"), "{text}");

    // A create that succeeded while the lease existed.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        put_as("k1", 0, 0),
        2,
        3,
        put_ok(Some("k1"), 12, true),
        12,
    );
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("the lease exists"), "{text}");

    // A Put storing another holder than it sent cannot happen.
    let mut h = History::default();
    h.add_rev(
        1,
        put_as("k1", 0, 0),
        0,
        1,
        put_ok(Some("k2"), 12, true),
        12,
    );
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("cannot give this answer"), "{text}");

    // A Put that cleared the holder leaves nothing to renew.
    let mut h = History::default();
    h.add_rev(
        0,
        put_as("k1", 0, 0),
        0,
        1,
        put_ok(Some("k1"), 10, true),
        10,
    );
    h.add_rev(1, put(None, 10), 2, 3, put_ok(None, 0, false), 11);
    h.add_rev(
        0,
        put_as("k1", 11, 10),
        4,
        5,
        put_ok(Some("k1"), 10, false),
        12,
    );
    assert_violation(&h.ops);
}

#[test]
fn unknown_puts_and_deletes_may_explain_later_answers() {
    // An unknown takeover explains a later read of a token nobody saw.
    let mut h = History::default();
    h.add_rev(
        0,
        put_as("k1", 0, 0),
        0,
        1,
        put_ok(Some("k1"), 10, true),
        10,
    );
    h.add(1, put_as("k2", 10, 0), 2, 3, unknown());
    h.add(2, OpKind::Get, 50, 51, read(Some("k2"), 44, false));
    assert_linearizable(&h.ops);
    // An unknown delete explains a later not-found; an unknown release
    // Put a later no-holder read.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, OpKind::Delete { base: None }, 2, 3, unknown());
    h.add(2, OpKind::Get, 50, 51, Outcome::NotFound);
    assert_linearizable(&h.ops);
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, put(None, 10), 2, 3, unknown());
    h.add(2, OpKind::Get, 50, 51, read(None, 0, false));
    assert_linearizable(&h.ops);
    // An unknown create cannot explain a holder on a lease that existed
    // already.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, put_as("k1", 0, 0), 2, 3, unknown());
    h.add(2, OpKind::Get, 50, 51, read(Some("k1"), 44, false));
    assert_violation(&h.ops);
}

#[test]
fn a_release_put_on_a_released_lease_is_not_taken_as_an_observer() {
    // In the released state the release Put changes nothing, but it
    // must still be free to go after the concurrent grant (pruning
    // rule 1 must not put it first).
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(3, true));
    h.add(0, release("w", 3), 2, 3, Outcome::Released);
    h.add(1, acquire("v"), 10, 20, acquired(7, true));
    h.add_rev(2, put(None, 5), 11, 19, put_ok(None, 0, false), 9);
    h.add(3, OpKind::Get, 21, 22, read(None, 0, false));
    assert_linearizable(&h.ops);
}

// -- Deleting a held lease: the tombstone ---------------------------------

fn deleted(holder: Option<&str>, token: u64) -> Outcome {
    Outcome::Deleted(LeaseView {
        holder: holder.map(str::to_string),
        token,
        expired: false,
    })
}

#[test]
fn a_held_lease_may_be_deleted_and_its_tombstone_refuses_creates() {
    // w holds the lease; a deleter deletes it. Until w's tenure could have
    // lapsed every create is refused as held by w: another holder's
    // acquire, a Put create, and w's own acquire (it names itself). Then a
    // create succeeds with a higher token.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        deleted(Some("w"), 10),
        12,
    );
    h.add(0, renew("w", 10), 4, 5, Outcome::NotFound);
    h.add(2, acquire("v"), 6, 7, held("w"));
    h.add(3, put_as("k1", 0, 0), 8, 9, held("w"));
    h.add(0, acquire("w"), 10, 11, held("w"));
    h.add(2, OpKind::Get, 12, 13, Outcome::NotFound);
    h.add(2, acquire("v"), 14, 15, acquired(20, true));
    h.add(3, put_as("k1", 0, 0), 16, 17, Outcome::AlreadyExists);
    h.add(0, OpKind::Get, 18, 19, read(Some("v"), 20, false));
    assert_linearizable(&h.ops);
    // A tombstone is possible whether or not the tenure was recorded
    // expired (a new leader's term can extend a tenure), and a Put create
    // may be the one that re-creates the lease.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, OpKind::Get, 2, 3, read(Some("w"), 10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: Some(11) },
        4,
        5,
        Outcome::Deleted(LeaseView {
            holder: Some("w".into()),
            token: 10,
            expired: true,
        }),
        12,
    );
    h.add(2, put_as("k1", 0, 0), 6, 7, held("w"));
    h.add_rev(
        2,
        put_as("k1", 0, 0),
        8,
        9,
        put_ok(Some("k1"), 14, true),
        14,
    );
    assert_linearizable(&h.ops);
}

#[test]
fn a_create_refused_as_held_must_name_the_tombstone() {
    // The tombstone is w's: a refusal naming v, who neither holds the
    // lease nor held it when it was deleted, is not explained.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        deleted(Some("w"), 10),
        12,
    );
    h.add(2, acquire("x"), 4, 5, held("v"));
    let (text, ids) = assert_violation(&h.ops);
    assert!(text.contains("only w (whose deleted tenure"), "{text}");
    assert!(ids.contains(&2), "{ids:?}");
    // The same for a Put create.
    h.ops[2].kind = put_as("k1", 0, 0);
    assert_violation(&h.ops);
    // A lease deleted without a holder leaves no tombstone.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(0, release("w", 10), 2, 3, Outcome::Released);
    h.add_rev(1, OpKind::Delete { base: None }, 4, 5, deleted(None, 0), 12);
    h.add(2, acquire("x"), 6, 7, held("w"));
    let (text, _) = assert_violation(&h.ops);
    assert!(
        text.contains("no delete of a held lease left a tombstone"),
        "{text}"
    );
    // Naming itself is only possible for the tombstone of its own tenure:
    // not while the lease exists.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(0, acquire("w"), 2, 3, held("w"));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("names the caller itself"), "{text}");
}

#[test]
fn an_unknown_delete_of_a_held_lease_may_explain_a_refused_create() {
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, OpKind::Delete { base: None }, 2, 3, unknown());
    h.add(2, acquire("v"), 50, 51, held("w"));
    h.add(3, put_as("k1", 0, 0), 52, 53, held("w"));
    h.add(0, acquire("w"), 54, 55, held("w"));
    h.add(2, OpKind::Get, 56, 57, Outcome::NotFound);
    assert_linearizable(&h.ops);
    // Without the delete, the lease exists: a create is AlreadyExists,
    // never held.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(3, put_as("k1", 0, 0), 52, 53, held("w"));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("the lease exists"), "{text}");
    // An unknown delete of a lease with no holder leaves no tombstone.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(0, release("w", 10), 2, 3, Outcome::Released);
    h.add(1, OpKind::Delete { base: None }, 4, 5, unknown());
    h.add(2, acquire("v"), 50, 51, held("w"));
    assert_violation(&h.ops);
}

#[test]
fn a_re_create_clears_the_tombstone() {
    // w's tenure was deleted; after its tombstone lapsed, a Put created
    // the lease without a holder and a delete removed it again: nothing
    // can be refused as held by w any more.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        deleted(Some("w"), 10),
        11,
    );
    h.add(2, acquire("v"), 4, 5, held("w"));
    h.add_rev(3, put(None, 0), 6, 7, put_ok(None, 0, true), 20);
    h.add_rev(
        1,
        OpKind::Delete { base: Some(20) },
        8,
        9,
        deleted(None, 0),
        21,
    );
    h.add(2, OpKind::Get, 10, 11, Outcome::NotFound);
    assert_linearizable(&h.ops);
    h.add(2, acquire("v"), 12, 13, held("w"));
    let (text, ids) = assert_violation(&h.ops);
    assert!(
        text.contains("no delete of a held lease left a tombstone"),
        "{text}"
    );
    assert!(ids.contains(&6), "{ids:?}");
    // The same when an acquire re-created it and a release emptied it.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        deleted(Some("w"), 10),
        11,
    );
    h.add(2, acquire("v"), 4, 5, acquired(20, true));
    h.add(2, release("v", 20), 6, 7, Outcome::Released);
    h.add_rev(1, OpKind::Delete { base: None }, 8, 9, deleted(None, 0), 23);
    h.add(3, put_as("k1", 0, 0), 10, 11, held("w"));
    assert_violation(&h.ops);
}

#[test]
fn a_delete_never_answers_held() {
    // A Delete of a held lease deletes it now; `Held` is not an answer a
    // Delete can give.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add(1, OpKind::Delete { base: None }, 2, 3, held("w"));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("cannot give this answer"), "{text}");
    // An update of a missing lease is answered NotFound, not held.
    let mut h = History::default();
    h.add(0, acquire("w"), 0, 1, acquired(10, true));
    h.add_rev(
        1,
        OpKind::Delete { base: None },
        2,
        3,
        deleted(Some("w"), 10),
        11,
    );
    h.add(2, put_as("k1", 10, 0), 4, 5, held("w"));
    let (text, _) = assert_violation(&h.ops);
    assert!(text.contains("refused: the lease does not exist"), "{text}");
}

#[test]
fn random_histories_exercise_the_tombstone() {
    // The simulated server deletes held leases and refuses creates while
    // their tombstones live: both happen in the random histories the
    // tests above rely on.
    let (mut held_deletes, mut tomb_refusals) = (0, 0);
    for seed in 0..40 {
        let ops = random_history_with_puts(seed, 1_500, 2 + (seed as usize % 9), 10, 2, 35);
        held_deletes += count(
            &ops,
            |op| matches!(&op.outcome, Outcome::Deleted(v) if v.holder.is_some()),
        );
        tomb_refusals += count(&ops, |op| {
            matches!(
                (&op.kind, &op.outcome),
                (OpKind::Put { base: 0, .. }, Outcome::Held { .. })
            )
        });
    }
    assert!(
        held_deletes > 50 && tomb_refusals > 20,
        "{held_deletes} deletes of held leases, {tomb_refusals} creates refused by a tombstone"
    );
}
