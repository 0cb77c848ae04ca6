//! Preparing the history: what the search makes of each recorded op
//! (ignored, required or optional) and which model effect its answer is,
//! with holder names interned. This is where the module docs' "Which
//! operations the search sees" is implemented, apart from the model itself.

use super::model::{Effect, HolderId, LostWhy};
use crate::history::{LeaseView, Lost, Nanos, Op, OpKind, Outcome};
use std::collections::HashMap;

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Index into the caller's slice (for reports).
    pub(super) op: usize,
    pub(super) invoke: Nanos,
    /// `Nanos::MAX` for optional ops; never before `invoke`.
    pub(super) complete: Nanos,
    pub(super) effect: Effect,
}

/// What the search makes of one recorded op.
pub(super) enum Role {
    Ignored,
    Required(Effect),
    Optional(Effect),
}

/// Holder names, interned.
pub(super) struct Names<'a> {
    pub(super) ids: HashMap<&'a str, HolderId>,
    pub(super) names: Vec<&'a str>,
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

    pub(super) fn name(&self, id: HolderId) -> &str {
        self.names.get(id as usize).copied().unwrap_or("?")
    }

    pub(super) fn role(&mut self, op: &'a Op) -> Role {
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
            // A Put create refused by the tombstone of a deleted tenure,
            // or an update refused by the current holder. A Delete never
            // answers `Held` (it deletes a held lease too): that falls
            // through to `Impossible`.
            (OpKind::Put { base, .. }, Outcome::Held { holder: by }) => Effect::HeldBy {
                by: self.id(by),
                create: *base == 0,
            },
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
}
