//! Idempotent retries: the answers to recent requests that carried a
//! request id.
//!
//! A client that retries a write after an ambiguous failure (the connection
//! broke, the leader changed) sends the same request id again. The state
//! machine applies a request id at most once: a repeat within the retention
//! gets the first attempt's answer, whatever happened since.
//!
//! Every decision here is a function of the log alone, never of how
//! entries were grouped into apply batches (which differs between the
//! leader, followers and a replay after restart):
//! - a record is absent once its log time is more than [`DEDUP_TTL_MICROS`]
//!   older than the entry being applied ([`Dedup::expire`] runs before every
//!   command entry);
//! - beyond [`DEDUP_MAX_RECORDS`], the oldest record (lowest log index) is
//!   evicted, right after each insert;
//! - a record remembers a fingerprint of the command it answered: the same
//!   id with another command is refused ([`Seen::Reused`]) rather than
//!   answered with somebody else's result.
//!
//! The records are replicated state: they travel in snapshots. The maps are
//! persistent (`imbl`), so a snapshot or a reader's view costs no copy.

use crate::lease::{Command, CommandResponse, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How long a request id is remembered, in state machine time.
pub const DEDUP_TTL_MICROS: i64 = 120 * 1_000_000;
/// How many request ids are remembered at most.
pub const DEDUP_MAX_RECORDS: usize = 100_000;

/// A digest of the command a request id answered: the first 16 bytes of
/// SHA-256 over the command's log encoding (which is fixed by the on-disk
/// format version).
pub type Fingerprint = [u8; 16];

/// The fingerprint of `command`.
pub fn fingerprint(command: &Command) -> Fingerprint {
    let mut h = Sha256::new();
    // Encoding a command into memory cannot fail (bincode only fails on
    // I/O, or on maps with unknown length, neither of which occurs here);
    // an impossible failure degrades to an empty encoding, which every
    // replica computes alike.
    h.update(bincode::serialize(command).unwrap_or_default());
    let d = h.finalize();
    let mut fp = [0u8; 16];
    fp.copy_from_slice(&d[..16]);
    fp
}

/// What was answered the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The request id.
    pub id: String,
    /// Log index of the first attempt.
    pub index: u64,
    /// State machine time of the first attempt.
    pub time: Timestamp,
    /// Which command it was.
    pub fingerprint: Fingerprint,
    /// Its result.
    pub response: CommandResponse,
}

/// What the table knows about a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the retention: apply the command.
    New,
    /// Seen with the same command: answer this.
    Repeat(Box<CommandResponse>),
    /// Seen with a different command, at this log index.
    Reused {
        /// Where the first use was applied.
        first_index: u64,
    },
}

/// The records, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    /// Keyed by shared strings: a node copied when the map changes after a
    /// snapshot took a copy costs reference counts, not allocations.
    by_id: imbl::HashMap<Arc<str>, Arc<Record>>,
    order: imbl::Vector<Arc<Record>>,
}

impl Dedup {
    /// Rebuilds the table from records in log order (a snapshot).
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Self {
        let mut d = Dedup::default();
        for r in records {
            d.push(Arc::new(r));
        }
        d
    }

    /// The records, oldest first (what a snapshot stores).
    pub fn records(&self) -> impl ExactSizeIterator<Item = &Record> + '_ {
        self.order.iter().map(|r| r.as_ref())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Drops the records older than the retention at `now`. Call before
    /// looking up the ids of a command applied at `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let cutoff = now.plus_micros(-DEDUP_TTL_MICROS);
        while self.order.front().is_some_and(|r| r.time < cutoff) {
            self.pop_oldest();
        }
    }

    /// What is known about `id` for a command with `fp`.
    pub fn check(&self, id: &str, fp: &Fingerprint) -> Seen {
        match self.by_id.get(id) {
            None => Seen::New,
            Some(r) if &r.fingerprint == fp => Seen::Repeat(Box::new(r.response.clone())),
            Some(r) => Seen::Reused {
                first_index: r.index,
            },
        }
    }

    /// Remembers a first answer, evicting the oldest records beyond
    /// [`DEDUP_MAX_RECORDS`].
    pub fn insert(&mut self, record: Record) {
        self.push(Arc::new(record));
        while self.by_id.len() > DEDUP_MAX_RECORDS {
            self.pop_oldest();
        }
    }

    fn push(&mut self, r: Arc<Record>) {
        if let Some(old) = self.by_id.insert(Arc::from(r.id.as_str()), r.clone()) {
            // Only reachable through `from_records` with duplicate ids (a
            // corrupt snapshot): keep the newer record, forget the older.
            self.order.retain(|o| !Arc::ptr_eq(o, &old));
        }
        self.order.push_back(r);
    }

    fn pop_oldest(&mut self) {
        if let Some(r) = self.order.pop_front() {
            if self
                .by_id
                .get(r.id.as_str())
                .is_some_and(|current| Arc::ptr_eq(current, &r))
            {
                self.by_id.remove(r.id.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseKey;

    fn cmd(holder: &str) -> Command {
        Command::Renew {
            key: LeaseKey::new("ns", "a"),
            holder: holder.into(),
            fencing_token: 1,
        }
    }

    fn none() -> CommandResponse {
        CommandResponse::Refused(crate::lease::LeaseError::NotFound {
            key: LeaseKey::new("ns", "a"),
        })
    }

    fn record(id: &str, index: u64, secs: i64, c: &Command) -> Record {
        Record {
            id: id.into(),
            index,
            time: Timestamp::from_micros(secs * 1_000_000),
            fingerprint: fingerprint(c),
            response: none(),
        }
    }

    #[test]
    fn repeats_answer_reuses_are_detected_and_records_expire_by_log_time() {
        let (a, b) = (cmd("a"), cmd("b"));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let mut d = Dedup::default();
        d.insert(record("r1", 1, 0, &a));
        d.insert(record("r2", 2, 60, &b));
        assert_eq!(
            d.check("r1", &fingerprint(&a)),
            Seen::Repeat(Box::new(none()))
        );
        assert_eq!(
            d.check("r1", &fingerprint(&b)),
            Seen::Reused { first_index: 1 }
        );
        assert_eq!(d.check("r3", &fingerprint(&a)), Seen::New);
        // At exactly the retention the record is still there; a microsecond
        // later it is gone; the later one stays.
        d.expire(Timestamp::from_micros(DEDUP_TTL_MICROS));
        assert_ne!(d.check("r1", &fingerprint(&a)), Seen::New);
        d.expire(Timestamp::from_micros(DEDUP_TTL_MICROS + 1));
        assert_eq!(d.check("r1", &fingerprint(&a)), Seen::New);
        assert_ne!(d.check("r2", &fingerprint(&b)), Seen::New);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_count_bound_evicts_the_oldest_first() {
        let c = cmd("a");
        let mut d = Dedup::default();
        for i in 0..(DEDUP_MAX_RECORDS as u64 + 3) {
            d.insert(record(&format!("r{i}"), i + 1, 0, &c));
        }
        assert_eq!(d.len(), DEDUP_MAX_RECORDS);
        for gone in 0..3 {
            assert_eq!(d.check(&format!("r{gone}"), &fingerprint(&c)), Seen::New);
        }
        assert_ne!(d.check("r3", &fingerprint(&c)), Seen::New);
        let order: Vec<u64> = d.records().take(2).map(|r| r.index).collect();
        assert_eq!(order, vec![4, 5]);
        // A snapshot round trip keeps the order and the answers.
        let copy = Dedup::from_records(d.records().cloned());
        assert_eq!(copy.len(), d.len());
        assert!(copy
            .records()
            .map(|r| r.index)
            .eq(d.records().map(|r| r.index)));
    }
}
