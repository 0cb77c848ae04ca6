//! Applying one command entry (a [`Proposal`] of one or more ops) to the
//! [`State`].
//!
//! The order of steps is the contract every replica follows, entry by
//! entry, so that the same log gives the same state and the same answers
//! however the entries were grouped into apply batches:
//!
//! 1. advance the clock with the entry's stamp ([`SmClock::advance`]);
//! 2. drop request-id records and history events older than their
//!    retention at the new time, and tombstones that lapsed;
//! 3. then for each op, in order:
//!    1. if it carries a request id seen within the retention: answer with
//!       the first answer (same command) or refuse (another command);
//!    2. apply the command to the stored lease with the pure `lease::apply`,
//!       at the next revision (the cluster revision plus one; a refusal
//!       does not use it up);
//!    3. store the effect, move the lease in the indexes, keep a deleted
//!       lease's tombstone (or forget one when the lease is created again),
//!       add the event to the history, and remember the answer under the
//!       request id (evicting the oldest record past the count bound).
//!
//! [`SmClock::advance`]: super::clock::SmClock::advance

use super::clock::EpochLeader;
use super::dedup::{fingerprint, Record, Seen};
use super::history::HistoryLimits;
use super::State;
use crate::lease::apply::{apply, ApplyContext, Effect};
use crate::lease::{Applied, CommandResponse, Event, EventKind, LeaseError, Op, Proposal};
use std::sync::Arc;

/// A node's own settings that shape what it keeps (never what it answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// Watch history bounds.
    pub history: HistoryLimits,
    /// Fault injection, debug builds only: a `Put` stores the client's
    /// `renewTime` and `acquireTime` instead of the stamp, as before issue
    /// 10. The chaos suite's negative control turns it on, on every node,
    /// to show that its checker catches what this breaks (a holder whose
    /// clock runs behind loses its lease early). Never in a release build.
    #[cfg(debug_assertions)]
    pub fault_put_trusts_client_times: bool,
}

/// Where a command entry sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPosition {
    /// Its log index.
    pub index: u64,
    /// The leader that appended it.
    pub leader: EpochLeader,
}

impl State {
    /// Applies one command entry; returns one answer per op and the change
    /// events, in revision order.
    pub fn apply_proposal(
        &mut self,
        at: EntryPosition,
        proposal: &Proposal,
        opts: &ApplyOptions,
    ) -> (Vec<CommandResponse>, Vec<Arc<Event>>) {
        self.clock
            .advance(proposal.time, proposal.clock_id, at.leader);
        let now = self.clock.now;
        self.dedup.expire(now);
        self.history.expire(now, &opts.history);
        self.tombstones.expire(
            now,
            self.clock.epoch_start,
            super::tombstones::EXAMINED_PER_ENTRY,
        );
        let mut responses = Vec::with_capacity(proposal.ops.len());
        let mut events = Vec::new();
        for op in &proposal.ops {
            let (r, e) = self.apply_op(at, op, opts);
            responses.push(r);
            events.extend(e);
        }
        (responses, events)
    }

    fn apply_op(
        &mut self,
        at: EntryPosition,
        op: &Op,
        opts: &ApplyOptions,
    ) -> (CommandResponse, Option<Arc<Event>>) {
        let now = self.clock.now;
        let fp = op.request_id.as_ref().map(|id| {
            let fp = fingerprint(&op.command);
            (id, fp)
        });
        if let Some((id, fp)) = &fp {
            match self.dedup.check(id, fp) {
                Seen::New => {}
                Seen::Repeat(first) => return (*first, None),
                Seen::Reused { first_index } => {
                    return (
                        CommandResponse::Refused(LeaseError::invalid(
                            "requestId",
                            format!(
                                "was already used for a different command (applied at log \
                                 index {first_index}) within the last {} s; a request id \
                                 identifies one call and its retries: use a new one for \
                                 each distinct call",
                                super::dedup::DEDUP_TTL_MICROS / 1_000_000
                            ),
                        )),
                        None,
                    )
                }
            }
        }

        let revision = self.revision + 1;
        let ctx = ApplyContext {
            revision,
            now,
            epoch_start: self.clock.epoch_start,
        };
        let key = op.command.key();
        let current = self
            .leases
            .get_key_value(key)
            .map(|(k, v)| (k.clone(), v.clone()));
        let result = apply(
            &op.command,
            current.as_ref().map(|(_, l)| l.as_ref()),
            self.tombstones.get(key).map(|l| l.as_ref()),
            &ctx,
        );
        #[cfg(debug_assertions)]
        let result = fault_put_client_times(opts, &op.command, result);
        let (response, event) = match result {
            Err(e) => (CommandResponse::Refused(e), None),
            Ok(effect) => {
                let kind = effect.kind();
                let stored_key = current
                    .as_ref()
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| Arc::new(key.clone()));
                let prev = current.map(|(_, l)| l);
                if let Some(old) = &prev {
                    self.indexes.remove(&stored_key, old);
                }
                let (lease, created, newly_acquired) = match effect {
                    Effect::Write {
                        lease,
                        created,
                        newly_acquired,
                        ..
                    } => {
                        let lease = Arc::new(lease);
                        self.indexes.insert(&stored_key, &lease);
                        if created {
                            // A create is refused while a live tombstone
                            // is kept: any left is a lapsed one.
                            self.tombstones.remove(key);
                        }
                        self.leases.insert(stored_key.clone(), lease.clone());
                        (lease, created, newly_acquired)
                    }
                    Effect::Delete { lease, tombstone } => {
                        self.leases.remove(key);
                        // The event carries the lease as it was (the stored
                        // one, shared rather than copied).
                        let was = prev.clone().unwrap_or_else(|| Arc::new(lease));
                        if tombstone {
                            self.tombstones
                                .insert(stored_key, was.clone(), ctx.epoch_start);
                        }
                        (was, false, false)
                    }
                };
                self.revision = revision;
                let labels_changed = kind != EventKind::Deleted
                    && prev.as_ref().is_some_and(|p| p.labels != lease.labels);
                let event = Arc::new(Event {
                    revision,
                    time: now,
                    kind,
                    lease: lease.clone(),
                    prev: if labels_changed { prev } else { None },
                });
                self.history.push(event.clone(), &opts.history);
                let applied = Applied {
                    lease: lease.clone(),
                    revision,
                    created,
                    newly_acquired,
                };
                (CommandResponse::Applied(applied), Some(event))
            }
        };
        if let Some((id, fp)) = fp {
            self.dedup.insert(Record {
                id: id.clone(),
                index: at.index,
                time: now,
                fingerprint: fp,
                response: response.clone(),
            });
        }
        (response, event)
    }
}

/// The negative control's fault (see
/// [`ApplyOptions::fault_put_trusts_client_times`]).
#[cfg(debug_assertions)]
fn fault_put_client_times(
    opts: &ApplyOptions,
    command: &crate::lease::Command,
    result: Result<Effect, LeaseError>,
) -> Result<Effect, LeaseError> {
    let (true, crate::lease::Command::Put { draft }) =
        (opts.fault_put_trusts_client_times, command)
    else {
        return result;
    };
    result.map(|mut effect| {
        if let Effect::Write { lease, .. } = &mut effect {
            if draft.spec.renew_time.is_some() {
                lease.spec.renew_time = draft.spec.renew_time;
            }
            if draft.spec.acquire_time.is_some() {
                lease.spec.acquire_time = draft.spec.acquire_time;
            }
        }
        effect
    })
}
