//! The key spaces of the sled database, and their value encodings.
//!
//! One sled `Db` per node, in `<data-dir>/db`, holding the Raft log and what
//! Raft must remember; the lease state is in memory and in snapshot files
//! (`store::snapshot`), not here.
//!
//! | tree        | Key                                   | Value                                   |
//! |-------------|---------------------------------------|-----------------------------------------|
//! | (default)   | `format_version`                      | u32, big-endian: [`super::FORMAT_VERSION`] |
//! | `raft_log`  | log index, u64 big-endian             | bincode `Entry<TypeConfig>`             |
//! | `raft_meta` | `vote`                                | bincode `Vote`                          |
//! | `raft_meta` | `committed`                           | bincode `Option<LogId>`                 |
//! | `raft_meta` | `last_purged`                         | bincode `LogId`                         |
//!
//! Big-endian indexes make sled's byte order the log order.

use serde::de::DeserializeOwned;
use serde::Serialize;

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
    fn log_keys_sort_numerically() {
        assert!(log_key(9) < log_key(10));
        assert!(log_key(255) < log_key(256));
        assert_eq!(log_index(&log_key(12345)), Some(12345));
        assert_eq!(log_index(b"short"), None);
    }
}
