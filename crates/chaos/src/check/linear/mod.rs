//! Per-lease linearizability: is there one order of a lease's operations,
//! consistent with real time, in which a single copy of the lease (the model
//! below) gives every recorded answer?
//!
//! # Why a search, and why per lease
//! Raft promises that every command is applied in one log order and that a
//! client's answer reflects the state at its log position. From the outside
//! we only see intervals (invocation, completion) and answers, so the check
//! is the classic one of Wing & Gong, with Lowe's memoization (the approach
//! porcupine and Knossos take): depth-first search over the operations that
//! may come next, backtracking when the model refuses an answer, and never
//! visiting the same configuration (set of linearized operations + model
//! state) twice. Leases are independent in the state machine, so the history
//! is checked one lease at a time (linearizability is compositional), which
//! keeps every search small.
//!
//! # The model
//! One lease: whether it exists, its holder, its fencing token, whether the
//! leader recorded the tenure as expired (`marked`), the highest token
//! seen so far (which survives a Delete: a re-created lease gets a new,
//! higher token), and, while it is missing, the tombstone a Delete may
//! have left. Time never enters it: whether a tenure had lapsed when
//! another holder was granted the lease, or when a renew answered
//! `Lost(Expired)`, is judged by other properties with the run's clock. The
//! model only checks what must hold in any log order: tokens of new tenures
//! grow, answers name the holder and token that were current, a renew never
//! succeeds after a read showed the tenure marked expired, a create needs a
//! missing lease and an update an existing one, a deleted lease is gone
//! until something creates it, and so on.
//!
//! A Delete succeeds on a held lease too (as `kubectl delete lease` does
//! against Kubernetes), but the cluster remembers the deleted tenure (a
//! tombstone) and refuses every create of the lease, Acquire or Put,
//! whoever it names, as `Held` by the deleted holder until that tenure
//! could have lapsed. So a create answered `Held { by }` on a missing lease
//! is valid iff the last Delete removed a lease held by `by` (the caller
//! itself included, re-acquiring after its lease was deleted). When the
//! tombstone lapses is a matter of time: the model keeps it possible until
//! a create succeeds (which clears it), and a successful create is never
//! refused for it (`check::timing` judges the new tenure against the
//! deleted one, like any other hand-over).
//!
//! Kubernetes-style Puts count exactly like the lease calls: a Put that
//! stored the holder it named with a token equal to its own revision
//! started a tenure (a grant, like a new acquire); one that kept an older
//! token renewed that tenure (like an acquire by the holder, so it is
//! refused after a read showed the tenure expired); one that cleared the
//! holder released whatever tenure there was. Resource versions are not
//! in the model: a `Conflict` only says the lease exists, and
//! `check::revisions` checks the compare-and-swap itself.
//!
//! An acquire (or Put) whose outcome is unknown may have started a tenure
//! whose token nobody saw: the model then carries the token as
//! `Unknown { gt }` (it is a log index, so greater than every token
//! granted before) until an answer names it.
//!
//! # Which operations the search sees
//! - Failed operations changed nothing: dropped (this includes a request id
//!   reused for another command and refused). So are unknown reads (reads
//!   have no effect) and unknown renews (a renew only moves `renewTime`,
//!   which the model does not track).
//! - Unknown acquires, releases, Puts and Deletes are *optional*: they may
//!   be linearized at any point after their invocation, or never.
//! - Everything else is *required*: linearized exactly once, inside its
//!   interval.
//!
//! # Representation
//! Required operations are sorted by invocation. A configuration is the
//! frontier (every required op below it is linearized), the small sorted set
//! of linearized required ops above it, the set of linearized optional ops
//! and the model state. Every op linearized above the frontier was invoked
//! before the frontier op completed, so that set stays as small as the
//! history's concurrency and a memo key is not O(history) bits. The memo
//! stores a 128-bit fingerprint of each key, not a 64-bit hash: a collision
//! taken for "already visited" would report a violation that is not there,
//! and at 128 bits that cannot happen in practice (see `Fingerprinter`).
//! The search is an explicit stack (a valid history of 30,000 ops is a
//! 30,000-deep path); each level keeps how to undo its step, so the
//! configuration is one mutable value.
//!
//! # Candidates
//! A required op may come next iff no unlinearized required op completed
//! before it was invoked. Equal times count as concurrent (a zero-length
//! interval must still be able to go first), so the rule is `invoke <=`
//! the earliest completion among the unlinearized required ops. An optional
//! op may come next iff it was invoked by then. A *step* is one candidate
//! evaluated by the model in one configuration; the budget counts steps.
//!
//! # Pruning, and why each rule loses no linearization
//! Plain WGL is exponential in the concurrency, and unknown writes that may
//! take effect at any later time make it worse. Four rules keep the search
//! near-linear on valid histories and let it refute invalid ones quickly.
//! The differential tests (in `tests.rs`) check the result against an
//! exhaustive search without any of them on thousands of small histories,
//! with and without Puts and Deletes.
//!
//! 1. *Observers go first, alone.* If a required candidate is accepted
//!    without changing the state (a read, `Held`, a `Lost` answer, a renew
//!    of the current known token, a `Conflict`...), it is taken and no
//!    sibling is tried. Any linearization from here that puts it later can
//!    put it first: its real-time constraints allow it now, and it changes
//!    the state nowhere it is accepted later either (a token it matches is
//!    known here, so it cannot be an unknown one later: unknown tokens are
//!    above every token granted before). The one effect for which that last
//!    point fails is a Put that clears the holder: a no-op on a lease that
//!    has none, a release anywhere else; it is never taken as an observer
//!    (`Effect::observer_when_unchanged`). A create refused by a tombstone
//!    is an observer like any other `Held`: it never changes the state.
//! 2. *An optional op only right before an op that needs it.* Take a
//!    linearization with the fewest optional ops and, among those, with the
//!    optional ops as late as possible. If optional `O` is followed by an
//!    op `P` that the state before `O` accepts too, checking every case of
//!    the model shows that either `O` can be dropped (`P` erases or
//!    reproduces its effect) or `O` and `P` can be swapped with the same
//!    resulting state, contradicting the choice; with one exception, below.
//!    (The tombstone keeps this true elsewhere: every effect that makes the
//!    lease exist clears it, a Delete takes it from its own answer, and a
//!    `P` that changes nothing, like a create refused by a tombstone, can
//!    always go first.) So an optional op is tried only if it lets another
//!    candidate step that cannot step now, and right after it only
//!    required ops refused before it may follow. An optional op that
//!    changes nothing is never tried. (Since what may follow depends on the
//!    state before the optional op, that state is part of the key.)
//!
//!    The exception: an unknown Delete keeps the holder right before it as
//!    the tombstone, so after an optional `O` that changed the holder it
//!    leaves another tombstone than without `O`. The answer that needs
//!    that tombstone (a create refused as held by `O`'s holder) may come
//!    long after the Delete, which an op needing the lease gone (a
//!    `NotFound`) can force early, so it need not be a candidate yet. So
//!    an optional op is also tried when the unknown Delete that is a
//!    candidate would then leave a tombstone of a holder that a `Held`
//!    answer not yet linearized names (and would not leave it now). Only a
//!    tombstone of someone is ever needed, and only by such an answer; no
//!    other optional effect keeps anything of the state before it that
//!    another optional op can change in a way a later answer may need. The
//!    differential tests cover this case too (unknown acquires and Puts
//!    right before unknown Deletes, creates refused by tombstones).
//!    (`Held` answers named by the other rule's ops are over-approximated:
//!    any required `Held` naming the holder at or after the frontier,
//!    which costs search, never a linearization.)
//! 3. *Interchangeable unknown writes.* Two unknown writes with the same
//!    effect (retried acquires of one holder) are the same op once both are
//!    invoked, so only the earliest unlinearized one is a candidate.
//! 4. *Fewer optional ops dominate.* A configuration that equals a visited
//!    one but has more optional ops linearized can do nothing the visited
//!    one could not, so it is not explored. Without this, an old unknown
//!    acquire that can be slipped in before any later change of holder
//!    (whose new tenure erases its effect) multiplies the work by the number
//!    of places to do so.
//!
//! # Explanations
//! The search remembers the deepest configuration it reached (most required
//! ops linearized). When it is exhausted, the report shows that prefix, the
//! model state there, the last ops linearized on the way, and every
//! candidate at that point with the model's reason for refusing it.
//!
//! # Layout
//! - `model`: the lease model (`State`, the answers it must explain and
//!   `step`); the whole of the semantics.
//! - `prepare`: what the search makes of each recorded op (ignored, required
//!   or optional, and which model effect), with holder names interned.
//! - `search`: the depth-first search itself, its candidates and the pruning
//!   rules.
//! - `memo`: the visited configurations (128-bit fingerprints, the fast
//!   hasher, dominance by fewer optional ops).
//! - `explain`: the text of a violation, from the deepest configuration
//!   reached.
//! - `tests`: hand-built and random histories, and the differential tests.

mod explain;
mod memo;
mod model;
mod prepare;
mod search;

use crate::history::Op;
use search::Search;
use std::fmt;

/// What the checker concluded about one lease's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists. `steps` = search steps used.
    Linearizable {
        /// Model steps attempted.
        steps: u64,
    },
    /// No linearization exists. `explanation` is a human-readable multi-line
    /// text: the longest linearizable prefix found (how many ops), the model
    /// state at that deepest point, and the ops that were candidates next
    /// and why the model refused each. `ops` = ids of the ops involved in the
    /// explanation.
    Violation {
        /// Multi-line text for the report.
        explanation: String,
        /// Ids of the ops the explanation names.
        ops: Vec<u64>,
    },
    /// The search used up its budget without deciding. Counts as a failure
    /// for the caller.
    Undecided {
        /// Model steps attempted (the budget).
        steps: u64,
    },
}

impl Verdict {
    /// Whether a linearization was found.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable { .. })
    }
}

/// Checks one lease's operations (in any order) for linearizability against
/// the lease model, attempting at most `budget_steps` model steps.
pub fn check_lease(ops: &[Op], budget_steps: u64) -> Verdict {
    Search::new(ops, budget_steps).run()
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable { steps } => write!(f, "linearizable ({steps} search steps)"),
            Verdict::Violation { explanation, .. } => {
                write!(f, "not linearizable:\n{explanation}")
            }
            Verdict::Undecided { steps } => {
                write!(f, "undecided: search budget of {steps} steps used up")
            }
        }
    }
}

#[cfg(test)]
mod tests;
