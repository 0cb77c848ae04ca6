//! Durable storage: the Raft log (in a sled database per node) and the
//! snapshots of the in-memory state machine (files).
//!
//! `log_store` implements openraft's `RaftLogStorage`; `state_machine`
//! implements `RaftStateMachine` as a thin adapter over `state::State`;
//! `snapshot` is the snapshot file format; `keys` documents every key space
//! of the database.
//!
//! A data directory holds `db/` (sled: the log, the vote, the format
//! version) and `snapshots/` (the latest snapshot file).
//! Everything here treats a disk error as fatal for the node: openraft stops
//! the Raft core on any storage error, and the server exits (see `server`).

// openraft's trait signatures fix the error type at `StorageError` (224
// bytes); our helpers return it too rather than convert at every call.
#![allow(clippy::result_large_err)]

pub mod keys;
pub mod log_store;
pub mod node_meta;
pub mod snapshot;
pub mod state_machine;

pub use crate::state::SmClock;
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

use anyhow::{bail, Context};
use std::path::Path;

/// Version of everything this module writes. A node refuses to open a data
/// directory written with another version rather than misread it.
///
/// - 5: the state machine moved out of sled into memory plus snapshot
///   files; request-id records carry the command's fingerprint; events
///   carry the previous lease when labels changed; the apply path no longer
///   re-validates.
pub const FORMAT_VERSION: u32 = 5;

const FORMAT_KEY: &[u8] = b"format_version";

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
        }
    }
}

/// Opens (creating if needed) the database in `dir` with default options and
/// returns its log store and state machine.
pub fn open(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore)> {
    open_with(dir, StoreOptions::default())
}

/// Opens (creating if needed) the database in `dir` and returns its log store
/// and state machine.
pub fn open_with(
    dir: &Path,
    options: StoreOptions,
) -> anyhow::Result<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let db = open_db(dir)?;
    check_format(&db)?;
    let log = LogStore::open(db)?;
    let sm = StateMachineStore::open(dir, &options)?;
    Ok((log, sm))
}

/// How long to wait for another holder of the database lock (an earlier
/// node in the same process still shutting down) before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn open_db(dir: &Path) -> anyhow::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(dir.join("db"))
            // Raft needs explicit flushes before acknowledging; sled's
            // timer-based flush would only add background I/O.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if is_lock_error(&e) => {
                bail!(
                    "data directory {} is in use by another leasehold process",
                    dir.display()
                )
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot open database in {}", dir.display())))
            }
        }
    }
}

/// sled reports a held lock as an `Other` I/O error with this message.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn check_format(db: &sled::Db) -> anyhow::Result<()> {
    match db.get(FORMAT_KEY)? {
        None => {
            let empty = db
                .tree_names()
                .iter()
                .all(|name| db.open_tree(name).map(|t| t.is_empty()).unwrap_or(false));
            if !empty {
                bail!("data directory has data but no format version: not a Leasehold directory?");
            }
            db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
            db.flush()?;
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .context("corrupt format version")?;
            if found != FORMAT_VERSION {
                bail!(
                    "data directory has on-disk format version {found}, this binary reads version {FORMAT_VERSION}"
                );
            }
        }
    }
    Ok(())
}

/// A sled or encoding error as openraft's storage error for `subject`.
pub(crate) fn io_err<E: std::error::Error + 'static>(
    verb: openraft::ErrorVerb,
    subject: openraft::ErrorSubject<crate::raft::types::NodeId>,
    e: &E,
) -> crate::raft::types::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(e)).into()
}
