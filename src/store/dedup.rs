//! Idempotent retries: the results of recent requests that carried a
//! request id.
//!
//! A client that retries a write after an ambiguous failure (the connection
//! broke, the leader changed) sends the same request id again. The state
//! machine applies a request id at most once: a repeat within the retention
//! window gets the first attempt's result, whatever happened since. Records
//! are replicated state (they live in the `sm` tree, so they travel in
//! snapshots), kept for [`DEDUP_TTL_MICROS`] of state machine time and at most
//! [`DEDUP_MAX_RECORDS`] of them, trimmed oldest first inside apply batches.
//!
//! Key spaces (see `keys.rs`): `d` + request id -> [`Record`]; `e` + time
//! (u64 big-endian micros) + request id -> empty, the age index.

use super::keys::{decode, encode};
use crate::lease::{CommandResponse, Timestamp};
use serde::{Deserialize, Serialize};

/// How long a request id is remembered, in state machine time.
pub const DEDUP_TTL_MICROS: i64 = 120 * 1_000_000;
/// How many request ids are remembered at most.
pub const DEDUP_MAX_RECORDS: u64 = 100_000;
/// At most this many records are trimmed per applied batch.
const TRIM_PER_BATCH: usize = 1024;

const RECORD_PREFIX: u8 = b'd';
const AGE_PREFIX: u8 = b'e';

/// What was returned the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// State machine time of the first attempt.
    pub time: Timestamp,
    /// Its result.
    pub response: CommandResponse,
}

/// Bounds of the records, persisted under `m:dedup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupMeta {
    /// Records kept.
    pub len: u64,
}

fn record_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(RECORD_PREFIX);
    k.extend_from_slice(id.as_bytes());
    k
}

fn age_key(time: Timestamp, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(AGE_PREFIX);
    k.extend_from_slice(&(time.as_micros().max(0) as u64).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The stored record of `id`, if any.
pub fn lookup(sm: &sled::Tree, id: &str) -> anyhow::Result<Option<Record>> {
    Ok(match sm.get(record_key(id))? {
        Some(v) => Some(decode(&v)?),
        None => None,
    })
}

/// Adds the record of `id` to `batch`.
pub fn store(
    batch: &mut sled::Batch,
    meta: &mut DedupMeta,
    id: &str,
    record: &Record,
) -> anyhow::Result<()> {
    batch.insert(record_key(id), encode(record)?);
    batch.insert(age_key(record.time, id), Vec::new());
    meta.len += 1;
    Ok(())
}

/// Adds to `batch` the removal of records older than the TTL or beyond the
/// count limit (oldest first, bounded per batch). Only records already in
/// the tree are considered.
pub fn trim(
    sm: &sled::Tree,
    meta: &mut DedupMeta,
    now: Timestamp,
    batch: &mut sled::Batch,
) -> anyhow::Result<()> {
    let over = meta.len.saturating_sub(DEDUP_MAX_RECORDS);
    let cutoff = now.plus_micros(-DEDUP_TTL_MICROS);
    let mut removed = 0u64;
    for item in sm.scan_prefix([AGE_PREFIX]).take(TRIM_PER_BATCH) {
        let (k, _) = item?;
        let Some(time_bytes) = k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            break;
        };
        let time = Timestamp::from_micros(u64::from_be_bytes(time_bytes) as i64);
        if removed >= over && time >= cutoff {
            break;
        }
        let id = &k[9..];
        let mut rk = vec![RECORD_PREFIX];
        rk.extend_from_slice(id);
        batch.remove(rk);
        batch.remove(k);
        removed += 1;
    }
    meta.len = meta.len.saturating_sub(removed);
    Ok(())
}
