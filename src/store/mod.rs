//! Durable storage: the Raft log, vote and committed index in a
//! write-ahead log, and snapshots of the in-memory state machine.
//!
//! `wal` is the write-ahead log (segment files, group commit, recovery);
//! `log_store` implements openraft's `RaftLogStorage` over it;
//! `state_machine` implements `RaftStateMachine` as a thin adapter over
//! `state::State`; `snapshot` is the snapshot file format; `node_meta` is
//! the data directory's identity; `backup` is the backup file format and
//! restoring a data directory from one.
//!
//! A data directory holds `node.json`, `LOCK` (held by the running node),
//! `wal/` (the log segments) and `snapshots/` (the latest snapshot file).
//! Everything here treats a disk error as fatal for the node: openraft stops
//! the Raft core on any storage error, and the server exits (see `server`).

// openraft's trait signatures fix the error type at `StorageError` (224
// bytes); our helpers return it too rather than convert at every call.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod log_store;
pub mod node_meta;
pub mod snapshot;
pub mod state_machine;
pub mod wal;

pub use crate::state::SmClock;
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

use anyhow::{bail, Context};
use std::path::Path;
use wal::Wal;

/// Version of everything this module writes. A node refuses to open a data
/// directory written with another version rather than misread it.
///
/// - 5: the log moved from sled into the WAL and the state machine into
///   memory plus snapshot files; request-id records carry the command's
///   fingerprint; events carry the previous lease when labels changed;
///   membership records each member's incarnation; the apply path no
///   longer re-validates. Each WAL segment and snapshot file carries the
///   version; a directory of version 4 or earlier (`db/`) is refused.
///
/// - 6: a Delete of a held lease succeeds and leaves a tombstone, which
///   snapshots carry; Put and Delete carry a uid precondition; refusals
///   gained `Tombstoned` and `UidMismatch`. A directory of version 5 is
///   refused (its log would replay Deletes under the old rule).
pub const FORMAT_VERSION: u32 = 6;

/// Tunables of the state machine.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keep at most this many watch events (0 keeps none).
    pub history_max_events: u64,
    /// Drop watch events older than this, in microseconds of state machine
    /// time (0 = no age limit).
    pub history_max_age_micros: i64,
    /// Delete server identity leases this long after they expired.
    pub identity_gc_age_micros: i64,
    /// Fault injection (debug builds only, for the chaos suite's negative
    /// control): see [`crate::state::ApplyOptions::fault_put_trusts_client_times`].
    #[cfg(debug_assertions)]
    pub fault_put_trusts_client_times: bool,
    /// Fault injection (debug builds only, for the power-loss negative
    /// control): see [`Wal::fault_skip_sync`].
    #[cfg(debug_assertions)]
    pub fault_skip_wal_sync: bool,
}

impl StoreOptions {
    /// What the applier needs of these options.
    pub fn apply_options(&self) -> crate::state::ApplyOptions {
        crate::state::ApplyOptions {
            history: crate::state::HistoryLimits {
                max_events: self.history_max_events,
                max_age_micros: self.history_max_age_micros,
            },
            #[cfg(debug_assertions)]
            fault_put_trusts_client_times: self.fault_put_trusts_client_times,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history_max_events: 10_000,
            history_max_age_micros: 3600 * crate::lease::time::MICROS_PER_SEC,
            identity_gc_age_micros: 3600 * crate::lease::time::MICROS_PER_SEC,
            #[cfg(debug_assertions)]
            fault_put_trusts_client_times: false,
            #[cfg(debug_assertions)]
            fault_skip_wal_sync: false,
        }
    }
}

/// Opens (creating if needed) the store in data directory `dir` with
/// default options and returns its log store and state machine.
pub fn open(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore)> {
    open_with(dir, StoreOptions::default())
}

/// Opens (creating if needed) the store in data directory `dir`: the WAL
/// (recovered) and the state machine (its latest snapshot loaded).
pub fn open_with(
    dir: &Path,
    options: StoreOptions,
) -> anyhow::Result<(LogStore, StateMachineStore)> {
    create_dir_durably(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    if dir.join("db").join("conf").exists() || dir.join("db").join("db").exists() {
        bail!(
            "data directory {} was written by an older Leasehold (on-disk format version 4 or \
             earlier, a sled database in db/); this binary reads version {FORMAT_VERSION} and \
             cannot convert it. Replace the node: move the directory away, start it empty with \
             --initial-cluster-state existing, and run `leasehold member replace`",
            dir.display()
        );
    }
    let wal = Wal::open(dir)?;
    #[cfg(debug_assertions)]
    if options.fault_skip_wal_sync {
        wal.fault_skip_sync();
    }
    let sm = StateMachineStore::open(dir, &options)?;
    Ok((LogStore::new(wal), sm))
}

/// Creates directory `dir` (and missing parents) so that it survives a power
/// loss: a directory entry is durable only once the directory holding it is
/// synced, and a file synced inside a directory whose own entry was never
/// synced is lost with it. Syncs `dir` and its parent every time, not only
/// when it creates `dir`: a process killed between the `mkdir` and the
/// sync leaves a directory that exists but is not yet durable.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    snapshot::sync_dir(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => snapshot::sync_dir(parent),
        _ => snapshot::sync_dir(Path::new(".")),
    }
}

/// An I/O or encoding error as openraft's storage error for `subject`.
pub(crate) fn io_err<E: std::error::Error + 'static>(
    verb: openraft::ErrorVerb,
    subject: openraft::ErrorSubject<crate::types::NodeId>,
    e: &E,
) -> crate::types::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(e)).into()
}
