//! The lease model: one lease as a single copy would hold it, the effects
//! (an operation together with its answer) it must explain, and [`step`],
//! the one function that accepts or refuses an effect in a state. Nothing
//! here knows about time or the search; the module docs of `linear` say
//! what the model checks and why (and how the tombstone a Delete of a held
//! lease leaves fits in).

/// A holder identity, interned: the search compares and hashes it often.
pub(super) type HolderId = u32;

/// The current tenure's fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Tok {
    /// Known exactly.
    Known(u64),
    /// Granted by an acquire whose answer was lost: the real token is
    /// greater than `gt`.
    Unknown { gt: u64 },
}

/// One lease, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub(super) exists: bool,
    pub(super) holder: Option<HolderId>,
    pub(super) token: Tok,
    /// The leader recorded that the tenure expired (`status.expired`). Set
    /// lazily, when a read shows it: the Expire command is not in the
    /// history.
    pub(super) marked: bool,
    /// The highest token granted so far (tokens of new tenures grow).
    pub(super) max_token: u64,
    /// While the lease is missing: the holder of the deleted lease, whose
    /// tenure may still be live. The cluster remembers such a tenure (a
    /// tombstone) and refuses every create, naming that holder, until the
    /// tenure could have lapsed; the model knows nothing of time, so the
    /// tombstone stays possible until something creates the lease again.
    /// Always `None` while the lease exists (every create clears it), so
    /// states that differ only in a tombstone nobody can observe do not
    /// multiply in the memo.
    pub(super) tomb: Option<HolderId>,
}

impl State {
    pub(super) const INITIAL: State = State {
        exists: false,
        holder: None,
        token: Tok::Known(0),
        marked: false,
        max_token: 0,
        tomb: None,
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
pub(super) enum LostWhy {
    NoHolder,
    Other(HolderId),
    Stale(u64),
    Expired,
}

/// An operation together with its answer: what the model must explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Effect {
    /// Acquire answered `Acquired`.
    Acquired {
        holder: HolderId,
        token: u64,
        newly: bool,
    },
    /// Acquire answered `Held { holder: by }`: `by` holds the lease, or
    /// the lease is missing and `by` held it when it was deleted (then `by`
    /// may be the caller itself).
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
    /// Put answered `Held { holder: by }`. An update (`create` false):
    /// `by` holds the lease (no caller identity: a Put naming the current
    /// holder is refused too when it would shorten that holder's live
    /// tenure). A create: the lease is missing and `by` held it when it was
    /// deleted (a Delete never answers `Held`).
    HeldBy { by: HolderId, create: bool },
    /// Put or Delete answered `Conflict` (stale resourceVersion or uid), or a
    /// create answered `AlreadyExists`: the lease exists. (The model does
    /// not track resourceVersions; `check::revisions` checks the
    /// compare-and-swap itself.)
    Exists,
    /// Delete succeeded; the lease as it was. A held lease may be deleted:
    /// its holder is then remembered (a tombstone) until a create.
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
    /// Delete whose outcome is unknown (optional); it leaves a tombstone
    /// of the holder the lease had, if any.
    DeleteMaybe,
    /// An answer this operation cannot give (e.g. acquire -> renewed).
    Impossible,
}

impl Effect {
    /// Whether the effect changes nothing wherever the model accepts it
    /// without a change (pruning rule 1 relies on it). True of every
    /// effect but `PutReleased`, which is a no-op on a lease that has no
    /// holder and a release anywhere else.
    pub(super) fn observer_when_unchanged(&self) -> bool {
        !matches!(self, Effect::PutReleased { .. })
    }
}

/// Why the model refused a step. Rendered against the state it was refused
/// in (see [`Names::refusal`](super::prepare::Names::refusal)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Impossible,
    Missing,
    Exists,
    /// The holder is not the one the answer needs.
    Holder,
    /// An answer naming the caller as "another" holder.
    NamesSelf,
    /// A create refused as held on a missing lease, naming a holder no
    /// tombstone may name.
    NoTombstone,
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
pub(super) fn step(s: &State, effect: &Effect) -> Result<State, Refusal> {
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
                tomb: None,
            })
        }
        Effect::Held { holder, by } => {
            if !s.exists {
                // A create refused by the tombstone: it names the deleted
                // tenure's holder, who may be the caller itself.
                return refused_create(s, by);
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
                tomb: None,
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
                tomb: None,
            })
        }
        Effect::HeldBy { by, create: true } => {
            // A create of an existing lease is answered `AlreadyExists`.
            if s.exists {
                return Err(Refusal::Exists);
            }
            refused_create(s, by)
        }
        Effect::HeldBy { by, create: false } => {
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
            // Whether the tenure could still be live is a matter of time
            // (even one recorded expired: a new leader's term can extend
            // it), so the holder may have left a tombstone.
            Ok(State {
                exists: false,
                holder: None,
                token: Tok::Known(0),
                marked: false,
                max_token: seen.max_token,
                tomb: holder,
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
                tomb: s.holder,
            })
        }
        Effect::Impossible => Err(Refusal::Impossible),
    }
}

/// A create of the missing lease refused as held by `by`: only a tombstone
/// of `by`'s deleted tenure explains it. Changes nothing (the tombstone
/// stays possible: its time is not in the model).
fn refused_create(s: &State, by: HolderId) -> Result<State, Refusal> {
    if s.tomb != Some(by) {
        return Err(Refusal::NoTombstone);
    }
    Ok(*s)
}

/// A create needs a missing lease, an update an existing one.
fn ensure_existence(s: &State, create: bool) -> Result<(), Refusal> {
    match (create, s.exists) {
        (true, true) => Err(Refusal::Exists),
        (false, false) => Err(Refusal::Missing),
        _ => Ok(()),
    }
}
