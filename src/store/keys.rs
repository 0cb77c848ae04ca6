//! The key spaces over sled, and their value encodings.
//!
//! One sled `Db` per node, in `<data-dir>/db`, with these trees:
//!
//! | tree        | Key                                   | Value                                   |
//! |-------------|---------------------------------------|-----------------------------------------|
//! | (default)   | `format_version`                      | u32, big-endian: [`super::FORMAT_VERSION`] |
//! | `raft_log`  | log index, u64 big-endian             | bincode `Entry<TypeConfig>`             |
//! | `raft_meta` | `vote`                                | bincode `Vote`                          |
//! | `raft_meta` | `committed`                           | bincode `Option<LogId>`                 |
//! | `raft_meta` | `last_purged`                         | bincode `LogId`                         |
//! | `sm`        | `l` + namespace + `\0` + name         | bincode `lease::Lease`                  |
//! | `sm`        | `m:applied`                           | bincode `Option<LogId>`                 |
//! | `sm`        | `m:membership`                        | bincode `StoredMembership`              |
//! | `sm`        | `m:clock`                             | bincode [`super::state_machine::SmClock`] |
//! | `sm`        | `m:revision`                          | bincode u64                             |
//! | `sm`        | `m:history`                           | bincode [`super::state_machine::HistoryMeta`] |
//! | `sm`        | `h` + revision, u64 big-endian        | bincode `lease::Event` (watch history)  |
//! | `sm`        | `m:dedup`                             | bincode [`super::dedup::DedupMeta`]     |
//! | `sm`        | `d` + request id                      | bincode [`super::dedup::Record`]        |
//! | `sm`        | `e` + time (u64 BE micros) + request id | empty: age index of `d` records       |
//! | `snapshot`  | `current`                             | u32 BE meta length, bincode `SnapshotMeta`, snapshot file |
//!
//! Big-endian indexes make sled's byte order the log order. Lease keys sort
//! by namespace, then name, so a namespace is one prefix scan. Namespaces and
//! names are validated DNS labels/subdomains and can never contain `\0`.

use crate::lease::LeaseKey;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `sm` key prefix of lease records.
pub const LEASE_PREFIX: u8 = b'l';
/// `sm` key prefix of history events.
pub const HISTORY_PREFIX: u8 = b'h';
/// `sm` key of the request-id records' bounds.
pub const SM_DEDUP: &[u8] = b"m:dedup";
/// `sm` key of the history bounds.
pub const SM_HISTORY: &[u8] = b"m:history";

/// The `sm` key of the history event at `revision`.
pub fn history_key(revision: u64) -> [u8; 9] {
    let mut k = [HISTORY_PREFIX; 9];
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

/// The revision of a history key; `None` if it is not one.
pub fn history_revision(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&HISTORY_PREFIX, rest)) => log_index(rest),
        _ => None,
    }
}

/// `sm` key of the last applied log id.
pub const SM_APPLIED: &[u8] = b"m:applied";
/// `sm` key of the last applied membership.
pub const SM_MEMBERSHIP: &[u8] = b"m:membership";
/// `sm` key of the state machine clock.
pub const SM_CLOCK: &[u8] = b"m:clock";
/// `sm` key of the current revision.
pub const SM_REVISION: &[u8] = b"m:revision";

/// The `sm` key of a lease.
pub fn lease_key(key: &LeaseKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.namespace.len() + key.name.len());
    k.push(LEASE_PREFIX);
    k.extend_from_slice(key.namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.name.as_bytes());
    k
}

/// The `sm` key prefix of every lease in `namespace`, or of every lease when
/// `namespace` is empty.
pub fn namespace_prefix(namespace: &str) -> Vec<u8> {
    let mut k = vec![LEASE_PREFIX];
    if !namespace.is_empty() {
        k.extend_from_slice(namespace.as_bytes());
        k.push(0);
    }
    k
}

/// The log key of an index.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index of a log key; `None` if the key is not 8 bytes.
pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Encodes a value.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(v)
}

/// Decodes a value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_sort_by_namespace_then_name_and_prefix_scan_works() {
        let a = lease_key(&LeaseKey::new("a", "z"));
        let b = lease_key(&LeaseKey::new("ab", "a"));
        assert!(a < b, "namespace a sorts before ab regardless of names");
        assert!(a.starts_with(&namespace_prefix("a")));
        assert!(!b.starts_with(&namespace_prefix("a")));
        assert!(b.starts_with(&namespace_prefix("")));
    }

    #[test]
    fn log_keys_sort_numerically() {
        assert!(log_key(9) < log_key(10));
        assert!(log_key(255) < log_key(256));
        assert_eq!(log_index(&log_key(12345)), Some(12345));
        assert_eq!(log_index(b"short"), None);
    }
}
