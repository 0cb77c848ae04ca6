//! Applying one command to one lease: the whole of Leasehold's lease semantics.
//!
//! `apply` is a pure function of the command, the lease as stored (if any) and
//! an [`ApplyContext`] that the state machine derives from the log entry. It
//! reads no clock, no disk and no network, so every replica computes the same
//! result from the same log, and every rule here is unit-tested directly.
//!
//! # Time
//! `ctx.now` is the time the leader stamped into the entry, made monotonic by
//! the state machine. `ctx.epoch_start` is the stamped time of the first entry
//! of the current leader's term. A lease held by X can be granted to Y only
//! once `now >= max(renewTime, epoch_start) + d·(1 + ρ)` where `d` is the lease
//! duration and ρ is [`CLOCK_RATE_BOUND_PPM`]. The `epoch_start` term is what
//! makes a new leader wait a full duration on its own clock after taking over
//! before it hands out a lease that was held at its takeover; ρ absorbs clock
//! rate error. ARCHITECTURE.md derives the guarantee this gives.
//!
//! # Tombstones
//! A held lease may be deleted (`kubectl delete lease` succeeds against
//! Kubernetes, and one rule serves both APIs). Deleting it must not hand
//! it to someone else early: the next create would otherwise start a new
//! tenure at once while the deleted holder still acts on its own. So a
//! Delete of a lease whose tenure could still be live ([`needs_tombstone`])
//! leaves the deleted lease behind as a tombstone, and until
//! [`grantable_at`] of that tenure no command creates the lease again, for
//! any holder or none ([`LeaseError::Tombstoned`]). The deleted holder
//! learns of the delete at its next renewal (`NotFound`), and the new
//! tenure's token is its creating revision, above every token before.
//! The state machine stores tombstones and drops them once they lapse.

use super::command::{Command, LeaseDraft};
use super::error::{LeaseError, LostReason};
use super::event::EventKind;
use super::model::{Lease, LeaseKey, LeaseSpec};
use super::time::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Bound on the rate error between any two clocks involved (leaders and
/// clients), in parts per million: 10,000 ppm = 1 %. A lease of duration `d`
/// is handed to another holder only after `d·(1 + ρ)` has passed on the
/// leader's clock. Clients rely on the same value, so it is part of the wire
/// contract and defined there.
pub use leasehold_proto::CLOCK_RATE_BOUND_PPM;

/// What the state machine knows about the entry being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// The revision this entry would create: its Raft log index.
    pub revision: u64,
    /// The entry's stamped time, never less than any earlier entry's.
    pub now: Timestamp,
    /// Stamped time of the first command of the current leader's term.
    pub epoch_start: Timestamp,
}

/// The change a command makes to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store this lease (created or updated).
    Write {
        /// The lease after the command.
        lease: Lease,
        /// The lease did not exist before.
        created: bool,
        /// A new tenure started: the fencing token is `ctx.revision`.
        newly_acquired: bool,
        /// The watch event this change is (`Added`, `Modified` or
        /// `Expired`).
        kind: EventKind,
    },
    /// Remove the lease; this is how it looked.
    Delete {
        /// The lease as it was.
        lease: Lease,
        /// Keep it as a tombstone: its tenure could still be live.
        tombstone: bool,
    },
}

impl Effect {
    fn created(lease: Lease) -> Self {
        let newly_acquired = lease.fencing_token > 0;
        Effect::Write {
            lease,
            created: true,
            newly_acquired,
            kind: EventKind::Added,
        }
    }

    fn modified(lease: Lease) -> Self {
        Effect::Write {
            lease,
            created: false,
            newly_acquired: false,
            kind: EventKind::Modified,
        }
    }

    fn acquired(lease: Lease) -> Self {
        Effect::Write {
            lease,
            created: false,
            newly_acquired: true,
            kind: EventKind::Modified,
        }
    }

    /// The watch event kind of this effect.
    pub fn kind(&self) -> EventKind {
        match self {
            Effect::Write { kind, .. } => *kind,
            Effect::Delete { .. } => EventKind::Deleted,
        }
    }
}

/// The earliest time at which a lease held by someone can be granted to
/// someone else: [`lapses_at`] plus the clock-rate margin `d·ρ`. `None` when
/// the lease has no holder.
pub fn grantable_at(lease: &Lease, epoch_start: Timestamp) -> Option<Timestamp> {
    let margin = lease.duration_micros().saturating_mul(CLOCK_RATE_BOUND_PPM) / 1_000_000;
    lapses_at(lease, epoch_start).map(|t| t.plus_micros(margin))
}

/// When the current tenure lapses for its holder: `max(renewTime,
/// epoch_start) + d`. Usually `expireTime` (`renewTime + d`); after a leader
/// change it is extended to a full duration from the new epoch, so that a new
/// leader whose clock is ahead does not cut tenures short. Safe because
/// nobody else can be granted the lease before [`grantable_at`], which is
/// later. `None` when there is no holder.
pub fn lapses_at(lease: &Lease, epoch_start: Timestamp) -> Option<Timestamp> {
    lease.holder()?;
    Some(
        lease
            .last_renewal()
            .max(epoch_start)
            .plus_micros(lease.duration_micros()),
    )
}

/// Refuses with `Held` while someone holds `lease` and it cannot yet be
/// handed to anyone else.
fn ensure_not_held(key: &LeaseKey, lease: &Lease, ctx: &ApplyContext) -> Result<(), LeaseError> {
    let (Some(holder), Some(free_at)) = (lease.holder(), grantable_at(lease, ctx.epoch_start))
    else {
        return Ok(());
    };
    if ctx.now < free_at {
        return Err(LeaseError::Held {
            key: key.clone(),
            holder: holder.to_string(),
            expire_time: lease.expire_time().unwrap_or(free_at),
            remaining_millis: (free_at.micros_since(ctx.now) + 999) / 1000,
        });
    }
    Ok(())
}

/// Whether deleting `lease` at `ctx` must leave a tombstone: it has a
/// holder and could not yet be granted to anyone else.
pub fn needs_tombstone(lease: &Lease, ctx: &ApplyContext) -> bool {
    grantable_at(lease, ctx.epoch_start).is_some_and(|free_at| ctx.now < free_at)
}

/// Refuses to create `key` while `tombstone` (the lease as it was deleted)
/// holds a tenure that could still be live.
fn ensure_no_live_tombstone(
    key: &LeaseKey,
    tombstone: Option<&Lease>,
    ctx: &ApplyContext,
) -> Result<(), LeaseError> {
    let Some(dead) = tombstone else {
        return Ok(());
    };
    let (Some(holder), Some(free_at)) = (dead.holder(), grantable_at(dead, ctx.epoch_start)) else {
        return Ok(());
    };
    if ctx.now < free_at {
        return Err(LeaseError::Tombstoned {
            key: key.clone(),
            holder: holder.to_string(),
            expire_time: dead.expire_time().unwrap_or(free_at),
            remaining_millis: (free_at.micros_since(ctx.now) + 999) / 1000,
        });
    }
    Ok(())
}

/// Refuses unless the stored lease's uid is `expected` (when one is
/// given; an empty uid is no precondition). A missing lease has no uid.
fn ensure_uid(
    key: &LeaseKey,
    expected: Option<&str>,
    current: Option<&Lease>,
) -> Result<(), LeaseError> {
    let Some(expected) = expected.filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    let actual = current.map_or("", |l| l.uid.as_str());
    if expected != actual {
        return Err(LeaseError::UidMismatch {
            key: key.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// A lease's uid: derived from its key and the revision that created it, so
/// every replica computes the same value and a re-created lease gets a new one.
pub fn derive_uid(key: &LeaseKey, revision: u64) -> String {
    let mut h = Sha256::new();
    h.update((key.namespace.len() as u64).to_be_bytes());
    h.update(key.namespace.as_bytes());
    h.update((key.name.len() as u64).to_be_bytes());
    h.update(key.name.as_bytes());
    h.update(revision.to_be_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Applies `cmd` to `current` (the stored lease with the command's key)
/// and `tombstone` (the lease as it was deleted, if the state machine
/// still keeps its tombstone; see "Tombstones" above).
///
/// Returns the effect to store, or the reason the command is refused; a
/// refusal changes nothing.
///
/// Validation is not repeated here: the API edge validates every command
/// before it is proposed (`lease::validate`), so the log only holds
/// validated commands. Re-validating while applying would make the meaning
/// of an old log depend on the binary that replays it: a rule tightened in
/// a later version would refuse, on a replica replaying the log, a command
/// that every other replica accepted. `apply` is total instead: any
/// command, however odd its fields, gets a deterministic answer without
/// panicking (all time arithmetic saturates).
pub fn apply(
    cmd: &Command,
    current: Option<&Lease>,
    tombstone: Option<&Lease>,
    ctx: &ApplyContext,
) -> Result<Effect, LeaseError> {
    match cmd {
        Command::Acquire {
            key,
            holder,
            duration_seconds,
            labels,
        } => acquire(
            key,
            holder,
            *duration_seconds,
            labels,
            current,
            tombstone,
            ctx,
        ),
        Command::Renew {
            key,
            holder,
            fencing_token,
        } => {
            let lease = check_tenure(key, holder, *fencing_token, current)?;
            if let Some(lapsed) = lapses_at(lease, ctx.epoch_start) {
                if ctx.now >= lapsed || lease.expired {
                    return Err(LeaseError::Lost {
                        key: key.clone(),
                        reason: LostReason::Expired { expired_at: lapsed },
                    });
                }
            }
            let mut next = lease.clone();
            next.spec.renew_time = Some(ctx.now);
            next.resource_version = ctx.revision;
            Ok(Effect::modified(next))
        }
        Command::Release {
            key,
            holder,
            fencing_token,
        } => {
            // Release is allowed after expiry as long as nobody else took the
            // lease: it only gives up what the caller had.
            let lease = check_tenure(key, holder, *fencing_token, current)?;
            let mut next = lease.clone();
            clear_holder(&mut next, ctx);
            Ok(Effect::modified(next))
        }
        Command::Expire {
            key,
            holder,
            fencing_token,
        } => {
            // Recorded by the leader's expiry sweep. Deterministic: the
            // tenure must still be the one the sweep saw, and lapsed at the
            // stamped time; otherwise (renewed meanwhile, released, already
            // marked) it is refused and nothing changes.
            let lease = check_tenure(key, holder, *fencing_token, current)?;
            let lapsed = lapses_at(lease, ctx.epoch_start).is_some_and(|at| ctx.now >= at);
            if !lapsed || lease.expired {
                return Err(LeaseError::NotExpired { key: key.clone() });
            }
            let mut next = lease.clone();
            next.expired = true;
            next.resource_version = ctx.revision;
            Ok(Effect::Write {
                lease: next,
                created: false,
                newly_acquired: false,
                kind: EventKind::Expired,
            })
        }
        Command::Put { draft } => put(draft, current, tombstone, ctx),
        Command::Delete {
            key,
            resource_version,
            uid,
        } => {
            let lease = current.ok_or_else(|| LeaseError::NotFound { key: key.clone() })?;
            ensure_uid(key, uid.as_deref(), current)?;
            if let Some(expected) = resource_version {
                if *expected != lease.resource_version {
                    return Err(LeaseError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        actual: lease.resource_version,
                    });
                }
            }
            // A held lease is deleted too; its tenure is kept as a
            // tombstone so that nobody gets the lease before it could
            // have lapsed (see "Tombstones").
            Ok(Effect::Delete {
                lease: lease.clone(),
                tombstone: needs_tombstone(lease, ctx),
            })
        }
    }
}

/// Whether `lease`'s current tenure is live at `ctx`: held, with a token,
/// not recorded as expired, and not lapsed. A live tenure's holder renews;
/// anyone else waits; once it is not live, even its own holder starts a new
/// tenure (with a new token) rather than revive the old one.
fn tenure_live(lease: &Lease, ctx: &ApplyContext) -> bool {
    lease.fencing_token > 0
        && !lease.expired
        && lapses_at(lease, ctx.epoch_start).is_some_and(|at| ctx.now < at)
}

/// Refuses a renewal of `lease`'s live tenure that would let the lease be
/// granted to someone else earlier than the tenure already promises:
/// renewing now for `duration_seconds` must not move [`grantable_at`]
/// back. A holder that wants a shorter lease releases it and acquires it
/// again. Without this, a renewal (by Acquire or Put, neither of which
/// carries the tenure's token) with a short duration would cut short the
/// guarantee an earlier acknowledged renewal gave.
fn ensure_not_shortened(
    key: &LeaseKey,
    lease: &Lease,
    duration_seconds: Option<i32>,
    ctx: &ApplyContext,
) -> Result<(), LeaseError> {
    let mut renewed = lease.clone();
    renewed.spec.renew_time = Some(ctx.now);
    renewed.spec.lease_duration_seconds = duration_seconds;
    let (Some(now_free), Some(after_free)) = (
        grantable_at(lease, ctx.epoch_start),
        grantable_at(&renewed, ctx.epoch_start),
    ) else {
        return Ok(());
    };
    if after_free < now_free {
        return Err(LeaseError::Held {
            key: key.clone(),
            holder: lease.holder().unwrap_or_default().to_string(),
            expire_time: lease.expire_time().unwrap_or(now_free),
            remaining_millis: (now_free.micros_since(ctx.now) + 999) / 1000,
        });
    }
    Ok(())
}

fn acquire(
    key: &LeaseKey,
    holder: &str,
    duration_seconds: i32,
    labels: &BTreeMap<String, String>,
    current: Option<&Lease>,
    tombstone: Option<&Lease>,
    ctx: &ApplyContext,
) -> Result<Effect, LeaseError> {
    let Some(lease) = current else {
        ensure_no_live_tombstone(key, tombstone, ctx)?;
        let spec = LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(duration_seconds),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        return Ok(Effect::created(new_lease(
            key,
            labels.clone(),
            BTreeMap::new(),
            spec,
            ctx,
        )));
    };

    let mut next = lease.clone();
    next.resource_version = ctx.revision;
    next.spec.lease_duration_seconds = Some(duration_seconds);
    next.spec.renew_time = Some(ctx.now);
    next.expired = false;

    match lease.holder() {
        Some(h) if h == holder => {
            if tenure_live(lease, ctx) {
                // The caller already holds it: a renewal, same tenure.
                ensure_not_shortened(key, lease, Some(duration_seconds), ctx)?;
                return Ok(Effect::modified(next));
            }
            // The caller's own tenure lapsed. Nobody else took the lease, but
            // the old token must not be revived: start a new tenure. The
            // holder did not change, so leaseTransitions stays.
            start_tenure(&mut next, ctx);
        }
        Some(_) => {
            ensure_not_held(key, lease, ctx)?;
            grant_new_holder(&mut next, holder, ctx);
        }
        None => grant_new_holder(&mut next, holder, ctx),
    }
    Ok(Effect::acquired(next))
}

/// A lease created at `ctx`. With a holder it starts a tenure whose token
/// is the creating revision and whose times are the stamp; without one it
/// has no token and no times.
fn new_lease(
    key: &LeaseKey,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    mut spec: LeaseSpec,
    ctx: &ApplyContext,
) -> Lease {
    let mut lease = Lease {
        key: key.clone(),
        uid: derive_uid(key, ctx.revision),
        resource_version: ctx.revision,
        creation_timestamp: ctx.now,
        labels,
        annotations,
        spec: LeaseSpec::default(),
        fencing_token: 0,
        expired: false,
    };
    spec.acquire_time = None;
    spec.renew_time = None;
    lease.spec = spec;
    if lease.holder().is_some() {
        start_tenure(&mut lease, ctx);
    } else {
        lease.spec.holder_identity = None;
    }
    lease
}

/// Starts a new tenure for the holder already in `next.spec`: the token is
/// this revision (greater than any token issued before), and both times
/// are the stamp.
fn start_tenure(next: &mut Lease, ctx: &ApplyContext) {
    next.spec.acquire_time = Some(ctx.now);
    next.spec.renew_time = Some(ctx.now);
    next.fencing_token = ctx.revision;
    next.expired = false;
    next.resource_version = ctx.revision;
}

fn grant_new_holder(next: &mut Lease, holder: &str, ctx: &ApplyContext) {
    next.spec.holder_identity = Some(holder.to_string());
    next.spec.lease_transitions = Some(next.spec.lease_transitions.unwrap_or(0).saturating_add(1));
    start_tenure(next, ctx);
}

/// Ends the current tenure: no holder, no token. `renewTime` records when.
fn clear_holder(next: &mut Lease, ctx: &ApplyContext) {
    next.spec.holder_identity = None;
    next.spec.renew_time = Some(ctx.now);
    next.fencing_token = 0;
    next.expired = false;
    next.resource_version = ctx.revision;
}

/// The stored lease, if `holder` holds it with `token`; otherwise why not.
fn check_tenure<'a>(
    key: &LeaseKey,
    holder: &str,
    token: u64,
    current: Option<&'a Lease>,
) -> Result<&'a Lease, LeaseError> {
    let lease = current.ok_or_else(|| LeaseError::NotFound { key: key.clone() })?;
    let lost = |reason| LeaseError::Lost {
        key: key.clone(),
        reason,
    };
    match lease.holder() {
        None => Err(lost(LostReason::NoHolder)),
        Some(h) if h != holder => Err(lost(LostReason::OtherHolder {
            holder: h.to_string(),
        })),
        Some(_) if lease.fencing_token != token => Err(lost(LostReason::StaleToken {
            sent: token,
            current: lease.fencing_token,
        })),
        Some(_) => Ok(lease),
    }
}

/// Kubernetes-style create or compare-and-swap update, under the same lease
/// rules as Acquire, Renew and Release:
///
/// - a create is refused while a tombstone of the same key holds a tenure
///   that could still be live; a uid, when given, must be the stored
///   lease's (a create with a uid is refused: nothing has it);
/// - `acquireTime` and `renewTime` are never taken from the request: a
///   Put that keeps the holder's live tenure renews it (`renewTime` = the
///   stamp), a Put that starts a tenure sets both to the stamp. Clients
///   (client-go, the Python client) send their own clock's times; what is
///   stored is the leader's.
/// - naming another holder while the lease is held is granted only when an
///   Acquire by that holder would be (the same takeover and new-epoch
///   waits), otherwise `Held`;
/// - a renewal may not shorten the live tenure ([`ensure_not_shortened`]);
/// - a new tenure, also of the same holder after its tenure lapsed or was
///   recorded as expired, gets a new token (this revision);
/// - clearing the holder is a release and is always allowed (client-go
///   releases this way on cancel); the compare-and-swap guards it.
///
/// Labels, annotations, the duration, `leaseTransitions`, `strategy` and
/// `preferredHolder` are the client's to set.
fn put(
    draft: &LeaseDraft,
    current: Option<&Lease>,
    tombstone: Option<&Lease>,
    ctx: &ApplyContext,
) -> Result<Effect, LeaseError> {
    let key = &draft.key;
    let Some(lease) = current else {
        if draft.resource_version != 0 {
            return Err(LeaseError::NotFound { key: key.clone() });
        }
        ensure_uid(key, draft.uid.as_deref(), None)?;
        ensure_no_live_tombstone(key, tombstone, ctx)?;
        let created = new_lease(
            key,
            draft.labels.clone(),
            draft.annotations.clone(),
            draft.spec.clone(),
            ctx,
        );
        return Ok(Effect::created(created));
    };
    if draft.resource_version == 0 {
        return Err(LeaseError::AlreadyExists { key: key.clone() });
    }
    if draft.resource_version != lease.resource_version {
        return Err(LeaseError::Conflict {
            key: key.clone(),
            expected: draft.resource_version,
            actual: lease.resource_version,
        });
    }
    ensure_uid(key, draft.uid.as_deref(), current)?;
    let new_holder = draft
        .spec
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty());
    let mut next = lease.clone();
    next.labels = draft.labels.clone();
    next.annotations = draft.annotations.clone();
    next.spec = LeaseSpec {
        holder_identity: new_holder.map(str::to_string),
        lease_duration_seconds: draft.spec.lease_duration_seconds,
        acquire_time: lease.spec.acquire_time,
        renew_time: lease.spec.renew_time,
        lease_transitions: draft.spec.lease_transitions,
        strategy: draft.spec.strategy.clone(),
        preferred_holder: draft.spec.preferred_holder.clone(),
    };
    next.resource_version = ctx.revision;
    match (lease.holder(), new_holder) {
        (_, None) => {
            clear_holder(&mut next, ctx);
            Ok(Effect::modified(next))
        }
        (Some(h), Some(n)) if h == n && tenure_live(lease, ctx) => {
            ensure_not_shortened(key, lease, draft.spec.lease_duration_seconds, ctx)?;
            next.spec.renew_time = Some(ctx.now);
            Ok(Effect::modified(next))
        }
        (Some(h), Some(n)) if h == n => {
            // The same holder after its tenure lapsed: nobody else took the
            // lease, but its old token must not come back.
            start_tenure(&mut next, ctx);
            Ok(Effect::acquired(next))
        }
        (Some(_), Some(_)) => {
            ensure_not_held(key, lease, ctx)?;
            start_tenure(&mut next, ctx);
            Ok(Effect::acquired(next))
        }
        (None, Some(_)) => {
            start_tenure(&mut next, ctx);
            Ok(Effect::acquired(next))
        }
    }
}

#[cfg(test)]
mod tests;
