//! The state machine's clock: leader stamps turned into one monotonic time.
//!
//! Every command entry carries its leader's stamp ([`Proposal::time`]) and
//! the id of the clock that produced it ([`Proposal::clock_id`]). Replicas
//! never read their own clock; they derive `now` from the stamps alone, so
//! every replica computes the same time for the same entry.
//!
//! [`Proposal::time`]: crate::lease::Proposal::time
//! [`Proposal::clock_id`]: crate::lease::Proposal::clock_id

use crate::lease::Timestamp;
use serde::{Deserialize, Serialize};

/// The leader (term and node) whose entries are being applied. Two leaders
/// of the same node in different terms are different epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochLeader {
    /// The leader's term.
    pub term: u64,
    /// The leader's node id.
    pub node: u64,
}

/// The state machine's notion of time, part of the replicated state (it
/// travels in snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmClock {
    /// The state machine time of the last command; never decreases.
    pub now: Timestamp,
    /// State machine time of the first command of the current epoch.
    pub epoch_start: Timestamp,
    /// The raw stamp (leader's wall clock) of that first command.
    pub epoch_first_stamp: Timestamp,
    /// The leader whose commands are being applied.
    pub epoch_leader: Option<EpochLeader>,
    /// The clock that leader stamps with (`Proposal::clock_id`).
    pub epoch_clock: u64,
}

impl SmClock {
    /// The state machine time a command stamped `stamp` by the epoch's
    /// leader would get: the epoch start plus the leader's elapsed time.
    pub fn project(&self, stamp: Timestamp) -> Timestamp {
        self.now.max(
            self.epoch_start
                .plus_micros(stamp.micros_since(self.epoch_first_stamp)),
        )
    }

    /// Advances the clock for a command entry.
    ///
    /// The first command of a new leader starts an epoch at `max(now,
    /// stamp)`: time never goes back, and it catches up with a leader whose
    /// clock is ahead (safe: nothing held can be granted before a full
    /// duration of the new epoch has passed, see `lease::apply`). Within an
    /// epoch, time advances by the leader's elapsed time since the epoch's
    /// first stamp, so only the leader's clock *rate* matters: a leader whose
    /// clock is behind does not freeze time until its clock catches up. An
    /// epoch is one leader's term *and* one clock: a leader that restarts
    /// and resumes its term reads a new wall-clock anchor, which may disagree
    /// with the old one by anything (a clock stepped while it was down);
    /// projecting its stamps against the old anchor would freeze time or,
    /// worse, jump it forward and hand out leases early.
    pub fn advance(&mut self, stamped: Timestamp, clock_id: u64, leader: EpochLeader) {
        if self.epoch_leader != Some(leader) || self.epoch_clock != clock_id {
            self.epoch_leader = Some(leader);
            self.epoch_clock = clock_id;
            self.epoch_start = self.now.max(stamped);
            self.epoch_first_stamp = stamped;
            self.now = self.epoch_start;
        } else {
            self.now = self.project(stamped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: EpochLeader = EpochLeader { term: 1, node: 1 };
    const L2: EpochLeader = EpochLeader { term: 2, node: 2 };

    fn t(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    #[test]
    fn an_epoch_advances_by_elapsed_time_and_never_goes_back() {
        let mut c = SmClock::default();
        c.advance(t(100), 7, L1);
        assert_eq!((c.now, c.epoch_start), (t(100), t(100)));
        c.advance(t(103), 7, L1);
        assert_eq!(c.now, t(103));
        // A leader whose clock is 50 s behind: time continues from 103 by
        // its elapsed time, it neither freezes nor goes back.
        c.advance(t(50), 8, L2);
        assert_eq!((c.now, c.epoch_start), (t(103), t(103)));
        c.advance(t(52), 8, L2);
        assert_eq!(c.now, t(105));
        // The same leader with a new clock (restarted in its term) starts a
        // new epoch.
        c.advance(t(500), 9, L2);
        assert_eq!((c.now, c.epoch_start), (t(500), t(500)));
    }
}
