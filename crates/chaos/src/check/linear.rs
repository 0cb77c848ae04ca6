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
//! leader recorded the tenure as expired (`marked`), and the highest token
//! seen so far (which survives a Delete: a re-created lease gets a new,
//! higher token). Time never enters it: whether a tenure had lapsed when
//! another holder was granted the lease, or when a renew answered
//! `Lost(Expired)`, is judged by other properties with the run's clock. The
//! model only checks what must hold in any log order: tokens of new tenures
//! grow, answers name the holder and token that were current, a renew never
//! succeeds after a read showed the tenure marked expired, a create needs a
//! missing lease and an update an existing one, a deleted lease is gone
//! until something creates it, and so on.
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
//! The differential tests at the bottom check the result against an
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
//!    (`Effect::observer_when_unchanged`).
//! 2. *An optional op only right before an op that needs it.* Take a
//!    linearization with the fewest optional ops and, among those, with the
//!    optional ops as late as possible. If optional `O` is followed by a
//!    required `P` that the state before `O` accepts too, checking every
//!    case of the model shows that either `O` can be dropped (`P` erases or
//!    reproduces its effect) or `O` and `P` can be swapped with the same
//!    resulting state, contradicting the choice. So an optional op is tried
//!    only if it lets another candidate step that cannot step now, and right
//!    after it only required ops refused before it may follow. An optional
//!    op that changes nothing is never tried. (Since what may follow depends
//!    on the state before the optional op, that state is part of the key.)
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

use crate::history::{secs, LeaseView, Lost, Nanos, Op, OpKind, Outcome};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

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

/// How many recently linearized ops a violation report shows.
const RECENT_OPS: usize = 8;

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A holder identity, interned: the search compares and hashes it often.
type HolderId = u32;

/// The current tenure's fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tok {
    /// Known exactly.
    Known(u64),
    /// Granted by an acquire whose answer was lost: the real token is
    /// greater than `gt`.
    Unknown { gt: u64 },
}

/// One lease, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    exists: bool,
    holder: Option<HolderId>,
    token: Tok,
    /// The leader recorded that the tenure expired (`status.expired`). Set
    /// lazily, when a read shows it: the Expire command is not in the
    /// history.
    marked: bool,
    /// The highest token granted so far (tokens of new tenures grow).
    max_token: u64,
}

impl State {
    const INITIAL: State = State {
        exists: false,
        holder: None,
        token: Tok::Known(0),
        marked: false,
        max_token: 0,
    };

    /// Whether the current token can be `t`. An unknown token that can be
    /// `t` becomes known: every later answer must agree with this one.
    fn match_token(&mut self, t: u64) -> bool {
        match self.token {
            Tok::Known(k) => k == t,
            Tok::Unknown { gt } => {
                if t > gt {
                    self.token = Tok::Known(t);
                    self.max_token = self.max_token.max(t);
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// Why a renew or release was refused, in the model's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LostWhy {
    NoHolder,
    Other(HolderId),
    Stale(u64),
    Expired,
}

/// An operation together with its answer: what the model must explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Effect {
    /// Acquire answered `Acquired`.
    Acquired {
        holder: HolderId,
        token: u64,
        newly: bool,
    },
    /// Acquire answered `Held { holder: by }`.
    Held { holder: HolderId, by: HolderId },
    /// Acquire whose outcome is unknown (optional).
    AcquireMaybe { holder: HolderId },
    /// Renew answered `Renewed`.
    Renewed { holder: HolderId, token: u64 },
    /// Release answered `Released`, or its outcome is unknown (optional).
    Released { holder: HolderId, token: u64 },
    /// Renew or release answered `Lost`.
    Lost {
        holder: HolderId,
        token: u64,
        why: LostWhy,
    },
    /// Renew, release or get answered `NotFound`.
    NotFound,
    /// Get answered with the lease.
    Read {
        holder: Option<HolderId>,
        token: u64,
        expired: bool,
    },
    /// Put answered with a new tenure of `holder`: the stored token is the
    /// Put's own revision. `created`: the Put created the lease.
    PutGranted {
        holder: HolderId,
        token: u64,
        created: bool,
    },
    /// Put that cleared the holder (a release, allowed whoever holds the
    /// lease; the compare-and-swap guards it), or created the lease
    /// without one.
    PutReleased { created: bool },
    /// Put or Delete answered `Held { holder: by }`. No caller identity: a
    /// Put naming the current holder is refused too when it would shorten
    /// that holder's live tenure.
    HeldBy { by: HolderId },
    /// Put or Delete answered `Conflict` (stale resourceVersion), or a
    /// create answered `AlreadyExists`: the lease exists. (The model does
    /// not track resourceVersions; `check::revisions` checks the
    /// compare-and-swap itself.)
    Exists,
    /// Delete succeeded; the lease as it was.
    Deleted {
        holder: Option<HolderId>,
        token: u64,
        expired: bool,
    },
    /// Put whose outcome is unknown (optional): a create (`create`) or an
    /// update that set the holder to `holder` (a new tenure with a token
    /// nobody saw, or a renewal, which the model cannot tell from not
    /// linearizing it) or cleared it.
    PutMaybe {
        holder: Option<HolderId>,
        create: bool,
    },
    /// Delete whose outcome is unknown (optional).
    DeleteMaybe,
    /// An answer this operation cannot give (e.g. acquire -> renewed).
    Impossible,
}

impl Effect {
    /// Whether the effect changes nothing wherever the model accepts it
    /// without a change (pruning rule 1 relies on it). True of every
    /// effect but `PutReleased`, which is a no-op on a lease that has no
    /// holder and a release anywhere else.
    fn observer_when_unchanged(&self) -> bool {
        !matches!(self, Effect::PutReleased { .. })
    }
}

/// Why the model refused a step. Rendered against the state it was refused
/// in (see [`Names::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Impossible,
    Missing,
    Exists,
    /// The holder is not the one the answer needs.
    Holder,
    /// An answer naming the caller as "another" holder.
    NamesSelf,
    /// The token is not the one the answer needs.
    Token(u64),
    /// A new tenure's token does not exceed the tokens granted before.
    NotNewer(u64),
    /// The leader recorded the tenure as expired.
    Marked,
    /// A stale-token answer naming the caller's own token.
    StaleIsOwn,
    /// A lease with no holder reads token 0 and not expired.
    ReleasedView,
}

/// One model step: the state after `effect`, or why it cannot happen in
/// state `s`. The whole of the model is in this function.
fn step(s: &State, effect: &Effect) -> Result<State, Refusal> {
    let mut n = *s;
    match *effect {
        Effect::Acquired {
            holder,
            token,
            newly: false,
        } => {
            // The caller held a live tenure: acquire acted as a renewal.
            if !s.exists {
                return Err(Refusal::Missing);
            }
            if s.holder != Some(holder) {
                return Err(Refusal::Holder);
            }
            if s.marked {
                return Err(Refusal::Marked);
            }
            if !n.match_token(token) {
                return Err(Refusal::Token(token));
            }
            Ok(n)
        }
        Effect::Acquired {
            holder,
            token,
            newly: true,
        } => {
            // Whether the previous tenure had lapsed is a matter of time,
            // checked elsewhere; here only the token order matters.
            let above_unknown = match s.token {
                Tok::Unknown { gt } => token > gt,
                Tok::Known(_) => true,
            };
            if token <= s.max_token || !above_unknown {
                return Err(Refusal::NotNewer(token));
            }
            Ok(State {
                exists: true,
                holder: Some(holder),
                token: Tok::Known(token),
                marked: false,
                max_token: token,
            })
        }
        Effect::Held { holder, by } => {
            if !s.exists {
                return Err(Refusal::Missing);
            }
            if by == holder {
                return Err(Refusal::NamesSelf);
            }
            if s.holder != Some(by) {
                return Err(Refusal::Holder);
            }
            Ok(n)
        }
        Effect::AcquireMaybe { holder } => {
            // A new tenure whose token nobody saw. (A same-tenure renewal
            // changes nothing in the model: the same as not linearizing.)
            Ok(State {
                exists: true,
                holder: Some(holder),
                token: Tok::Unknown { gt: s.max_token },
                marked: false,
                max_token: s.max_token,
            })
        }
        Effect::Renewed { holder, token } => {
            if s.holder != Some(holder) {
                return Err(Refusal::Holder);
            }
            if !n.match_token(token) {
                return Err(Refusal::Token(token));
            }
            if s.marked {
                return Err(Refusal::Marked);
            }
            Ok(n)
        }
        Effect::Released { holder, token } => {
            // Release is allowed after expiry: it gives up only the caller's
            // own tenure.
            if s.holder != Some(holder) {
                return Err(Refusal::Holder);
            }
            if !n.match_token(token) {
                return Err(Refusal::Token(token));
            }
            n.holder = None;
            n.token = Tok::Known(0);
            n.marked = false;
            Ok(n)
        }
        Effect::Lost { holder, token, why } => match why {
            LostWhy::NoHolder => {
                if !s.exists {
                    return Err(Refusal::Missing);
                }
                if s.holder.is_some() {
                    return Err(Refusal::Holder);
                }
                Ok(n)
            }
            LostWhy::Other(by) => {
                if by == holder {
                    return Err(Refusal::NamesSelf);
                }
                if s.holder != Some(by) {
                    return Err(Refusal::Holder);
                }
                Ok(n)
            }
            LostWhy::Stale(current) => {
                if s.holder != Some(holder) {
                    return Err(Refusal::Holder);
                }
                if current == token {
                    return Err(Refusal::StaleIsOwn);
                }
                if !n.match_token(current) {
                    return Err(Refusal::Token(current));
                }
                Ok(n)
            }
            LostWhy::Expired => {
                // Expiry is time-based: it can be answered before the leader
                // marks the tenure, and a leader change can even extend the
                // tenure again, so this sets nothing.
                if s.holder != Some(holder) {
                    return Err(Refusal::Holder);
                }
                if !n.match_token(token) {
                    return Err(Refusal::Token(token));
                }
                Ok(n)
            }
        },
        Effect::NotFound => {
            if s.exists {
                return Err(Refusal::Exists);
            }
            Ok(n)
        }
        Effect::Read {
            holder,
            token,
            expired,
        } => {
            if !s.exists {
                return Err(Refusal::Missing);
            }
            if s.holder != holder {
                return Err(Refusal::Holder);
            }
            if holder.is_none() {
                if token != 0 || expired {
                    return Err(Refusal::ReleasedView);
                }
                return Ok(n);
            }
            if !n.match_token(token) {
                return Err(Refusal::Token(token));
            }
            if expired {
                n.marked = true;
            } else if s.marked {
                return Err(Refusal::Marked);
            }
            Ok(n)
        }
        Effect::PutGranted {
            holder,
            token,
            created,
        } => {
            ensure_existence(s, created)?;
            step(
                s,
                &Effect::Acquired {
                    holder,
                    token,
                    newly: true,
                },
            )
        }
        Effect::PutReleased { created } => {
            ensure_existence(s, created)?;
            Ok(State {
                exists: true,
                holder: None,
                token: Tok::Known(0),
                marked: false,
                max_token: s.max_token,
            })
        }
        Effect::HeldBy { by } => {
            if !s.exists {
                return Err(Refusal::Missing);
            }
            if s.holder != Some(by) {
                return Err(Refusal::Holder);
            }
            Ok(n)
        }
        Effect::Exists => {
            if !s.exists {
                return Err(Refusal::Missing);
            }
            Ok(n)
        }
        Effect::Deleted {
            holder,
            token,
            expired,
        } => {
            // The lease as it was must be one a read could have returned.
            let seen = step(
                s,
                &Effect::Read {
                    holder,
                    token,
                    expired,
                },
            )?;
            Ok(State {
                exists: false,
                holder: None,
                token: Tok::Known(0),
                marked: false,
                max_token: seen.max_token,
            })
        }
        Effect::PutMaybe { holder, create } => {
            ensure_existence(s, create)?;
            match holder {
                Some(holder) => step(s, &Effect::AcquireMaybe { holder }),
                None => step(s, &Effect::PutReleased { created: create }),
            }
        }
        Effect::DeleteMaybe => {
            if !s.exists {
                return Err(Refusal::Missing);
            }
            Ok(State {
                exists: false,
                holder: None,
                token: Tok::Known(0),
                marked: false,
                max_token: s.max_token,
            })
        }
        Effect::Impossible => Err(Refusal::Impossible),
    }
}

/// A create needs a missing lease, an update an existing one.
fn ensure_existence(s: &State, create: bool) -> Result<(), Refusal> {
    match (create, s.exists) {
        (true, true) => Err(Refusal::Exists),
        (false, false) => Err(Refusal::Missing),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Preparing the history
// ---------------------------------------------------------------------------

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index into the caller's slice (for reports).
    op: usize,
    invoke: Nanos,
    /// `Nanos::MAX` for optional ops; never before `invoke`.
    complete: Nanos,
    effect: Effect,
}

/// What the search makes of one recorded op.
enum Role {
    Ignored,
    Required(Effect),
    Optional(Effect),
}

/// Holder names, interned.
struct Names<'a> {
    ids: HashMap<&'a str, HolderId>,
    names: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn id(&mut self, name: &'a str) -> HolderId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        // More than 2^32 distinct holders cannot occur in one history; if
        // it did, ids would merely collide into "?" in reports.
        let id = HolderId::try_from(self.names.len()).unwrap_or(HolderId::MAX);
        self.names.push(name);
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: HolderId) -> &str {
        self.names.get(id as usize).copied().unwrap_or("?")
    }

    fn role(&mut self, op: &'a Op) -> Role {
        if matches!(op.outcome, Outcome::Failed { .. }) {
            return Role::Ignored;
        }
        let effect = match (&op.kind, &op.outcome) {
            (OpKind::Get, Outcome::Unknown { .. }) => return Role::Ignored,
            (OpKind::Renew { .. }, Outcome::Unknown { .. }) => return Role::Ignored,
            (OpKind::Acquire { holder, .. }, Outcome::Unknown { .. }) => {
                return Role::Optional(Effect::AcquireMaybe {
                    holder: self.id(holder),
                })
            }
            (OpKind::Release { holder, token }, Outcome::Unknown { .. }) => {
                return Role::Optional(Effect::Released {
                    holder: self.id(holder),
                    token: *token,
                })
            }
            (OpKind::Put { holder, base, .. }, Outcome::Unknown { .. }) => {
                return Role::Optional(Effect::PutMaybe {
                    holder: holder.as_deref().map(|h| self.id(h)),
                    create: *base == 0,
                })
            }
            (OpKind::Delete { .. }, Outcome::Unknown { .. }) => {
                return Role::Optional(Effect::DeleteMaybe)
            }
            (
                OpKind::Put {
                    holder: sent, base, ..
                },
                Outcome::Put { view, created },
            ) => self.put_effect(sent.as_deref(), *base, view, *created, op.revision),
            (OpKind::Put { .. } | OpKind::Delete { .. }, Outcome::Held { holder: by }) => {
                Effect::HeldBy { by: self.id(by) }
            }
            (OpKind::Put { base, .. }, Outcome::Conflict) if *base != 0 => Effect::Exists,
            (OpKind::Delete { base: Some(_) }, Outcome::Conflict) => Effect::Exists,
            (OpKind::Put { base: 0, .. }, Outcome::AlreadyExists) => Effect::Exists,
            (OpKind::Put { base, .. }, Outcome::NotFound) if *base != 0 => Effect::NotFound,
            (OpKind::Delete { .. }, Outcome::NotFound) => Effect::NotFound,
            (OpKind::Delete { .. }, Outcome::Deleted(view)) => Effect::Deleted {
                holder: view.holder.as_deref().map(|h| self.id(h)),
                token: view.token,
                expired: view.expired,
            },
            (OpKind::Acquire { holder, .. }, Outcome::Acquired { token, newly }) => {
                Effect::Acquired {
                    holder: self.id(holder),
                    token: *token,
                    newly: *newly,
                }
            }
            (OpKind::Acquire { holder: h, .. }, Outcome::Held { holder: by }) => Effect::Held {
                holder: self.id(h),
                by: self.id(by),
            },
            (OpKind::Renew { holder, token }, Outcome::Renewed) => Effect::Renewed {
                holder: self.id(holder),
                token: *token,
            },
            (OpKind::Release { holder, token }, Outcome::Released) => Effect::Released {
                holder: self.id(holder),
                token: *token,
            },
            (
                OpKind::Renew { holder, token } | OpKind::Release { holder, token },
                Outcome::Lost(lost),
            ) => Effect::Lost {
                holder: self.id(holder),
                token: *token,
                why: match lost {
                    Lost::NoHolder => LostWhy::NoHolder,
                    Lost::OtherHolder { holder: by } => LostWhy::Other(self.id(by)),
                    Lost::StaleToken { current } => LostWhy::Stale(*current),
                    Lost::Expired => LostWhy::Expired,
                },
            },
            (OpKind::Renew { .. } | OpKind::Release { .. } | OpKind::Get, Outcome::NotFound) => {
                Effect::NotFound
            }
            (OpKind::Get, Outcome::Read(view)) => Effect::Read {
                holder: view.holder.as_deref().map(|h| self.id(h)),
                token: view.token,
                expired: view.expired,
            },
            _ => Effect::Impossible,
        };
        Role::Required(effect)
    }

    /// The effect of a successful Put of `sent` at `base` that stored
    /// `view` at `revision`. A Put stores the holder it names, never a
    /// lease recorded expired, and a tenure's token is the revision that
    /// granted it: so the Put granted a tenure iff the token is its own
    /// revision, and otherwise renewed the holder's live one.
    fn put_effect(
        &mut self,
        sent: Option<&'a str>,
        base: u64,
        view: &'a LeaseView,
        created: bool,
        revision: Option<u64>,
    ) -> Effect {
        if view.expired || created != (base == 0) {
            return Effect::Impossible;
        }
        match (sent, view.holder.as_deref()) {
            (None, None) if view.token == 0 => Effect::PutReleased { created },
            (Some(s), Some(v)) if s == v => {
                let holder = self.id(v);
                if revision == Some(view.token) {
                    Effect::PutGranted {
                        holder,
                        token: view.token,
                        created,
                    }
                } else if created {
                    // A created lease's tenure starts at its creation.
                    Effect::Impossible
                } else {
                    Effect::Acquired {
                        holder,
                        token: view.token,
                        newly: false,
                    }
                }
            }
            _ => Effect::Impossible,
        }
    }

    fn token(&self, t: Tok) -> String {
        match t {
            Tok::Known(k) => k.to_string(),
            Tok::Unknown { gt } => format!("unknown (> {gt})"),
        }
    }

    fn state(&self, s: &State) -> String {
        if !s.exists {
            return "the lease does not exist".to_string();
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
fn describe(op: &Op) -> String {
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

// ---------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------

/// An op the search may linearize next: an index into the required or the
/// optional ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
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

/// A 128-bit fingerprint of a configuration without its linearized
/// optional ops (see [`Search::visit`]): two independent 64-bit SipHashes
/// of the exact key. Storing whole keys would cost several times the memory
/// per entry, and the memo holds up to one entry per step of a budget of
/// millions. A false "already visited" needs two keys to collide on all 128
/// bits: with 10^8 entries the chance is below 10^-22.
struct Fingerprinter {
    a: DefaultHasher,
    b: DefaultHasher,
}

impl Fingerprinter {
    fn new() -> Self {
        let a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        // Domain separation: the second hash is of a different message.
        b.write_u64(0x243f_6a88_85a3_08d3);
        Fingerprinter { a, b }
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.a.finish()) << 64) | u128::from(self.b.finish())
    }
}

impl Hasher for Fingerprinter {
    fn write(&mut self, bytes: &[u8]) {
        self.a.write(bytes);
        self.b.write(bytes);
    }
    fn finish(&self) -> u64 {
        self.a.finish()
    }
}

/// Whether every op in bitset `a` is in bitset `b`.
fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// The deepest configuration reached: where a violation is explained.
#[derive(Debug, Clone)]
struct Deepest {
    count: usize,
    at_step: u64,
    state: State,
    frontier: usize,
    above: Vec<usize>,
    opt_bits: Vec<u64>,
    recent: Vec<Cand>,
}

/// FxHash-style hasher: the memo hashes short keys of small integers
/// millions of times, and it needs no DoS resistance.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

struct Search<'a> {
    ops: &'a [Op],
    names: Names<'a>,
    /// Required ops, by invocation.
    req: Vec<Entry>,
    /// Optional ops, by invocation.
    opt: Vec<Entry>,
    /// For each optional op, the previous optional op with the same effect:
    /// only the earliest unlinearized one of each class is a candidate
    /// (pruning rule 3).
    opt_class_prev: Vec<Option<usize>>,
    ignored: usize,

    // The current configuration.
    state: State,
    frontier: usize,
    /// Linearized required ops at or above the frontier, ascending.
    above: Vec<usize>,
    lin_req: Vec<bool>,
    opt_bits: Vec<u64>,

    /// Visited configurations: for each fingerprint, the minimal sets of
    /// linearized optional ops it was visited with, concatenated (each set
    /// is `opt_bits.len()` words; with no optional ops, presence is enough).
    memo: HashMap<u128, Box<[u64]>, BuildHasherDefault<FastHasher>>,
    frames: Vec<Frame>,
    cands: Vec<Cand>,
    /// Scratch buffers of [`Search::push_frame`], kept to avoid allocating.
    raw: Vec<Cand>,
    refused: Vec<Cand>,
    steps: u64,
    budget: u64,
    deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op], budget: u64) -> Self {
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
        let n_req = req.len();
        let opt_words = opt.len().div_ceil(64);
        Search {
            ops,
            names,
            req,
            opt,
            opt_class_prev,
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

    fn run(mut self) -> Verdict {
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

    fn entry(&self, cand: Cand) -> &Entry {
        match cand {
            Cand::Req(i) => &self.req[i],
            Cand::Opt(i) => &self.opt[i],
        }
    }

    fn opt_linearized(&self, i: usize) -> bool {
        self.opt_bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Records the current configuration as visited; false if it, or a
    /// configuration that dominates it, was visited before.
    ///
    /// Dominance (pruning rule 4): the same configuration with fewer
    /// optional ops linearized can do everything this one can (the unused
    /// optional ops stay available, and unknown writes never have to take
    /// effect), so if that one was visited, this one need not be. Each key
    /// keeps only its minimal sets.
    fn visit(&mut self, before_optional: Option<State>) -> bool {
        let mut h = Fingerprinter::new();
        // `before_optional` is part of the key: what may follow an optional
        // op depends on the state before it (pruning rule 2).
        (self.frontier, self.state, before_optional).hash(&mut h);
        self.above.len().hash(&mut h);
        for &i in &self.above {
            (i - self.frontier).hash(&mut h);
        }
        let fingerprint = h.finish128();
        let current = &self.opt_bits;
        let width = current.len();
        let Some(seen) = self.memo.get_mut(&fingerprint) else {
            self.memo.insert(fingerprint, current.as_slice().into());
            return true;
        };
        if width == 0 || seen.chunks_exact(width).any(|s| subset(s, current)) {
            return false;
        }
        let kept: Vec<u64> = seen
            .chunks_exact(width)
            .filter(|s| !subset(current, s))
            .flatten()
            .chain(current)
            .copied()
            .collect();
        *seen = kept.into_boxed_slice();
        true
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
    fn collect_candidates(&self, out: &mut Vec<Cand>) -> Option<usize> {
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
        // Keep an optional op only if it enables a refused candidate.
        let mut kept = opt_start;
        for i in opt_start..out.len() {
            let c = out[i];
            let Ok(next) = step(&self.state, &self.entry(c).effect) else {
                continue;
            };
            if refused
                .iter()
                .any(|&r| r != c && step(&next, &self.entry(r).effect).is_ok())
            {
                out[kept] = c;
                kept += 1;
            }
        }
        out.truncate(kept);
        Ok(())
    }

    /// Explains the violation from the deepest configuration reached: the
    /// search is exhausted, so every candidate there led nowhere.
    fn violation(mut self) -> Verdict {
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
